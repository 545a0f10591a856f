"""The explorer's side panel: mode, classes, classifier, year, thresholds, actions and
status lines, linked to the state; its buttons call the controller."""

from __future__ import annotations

import functools
import html
import threading

from .controller import ExplorerController
from .guard import guarded, html_widget
from .state import MODELS, ExplorerState

__all__ = ["PanelView", "PANEL_MIN", "PANEL_MAX"]

#: the panel's width range in px: every control fits at the least (300 px controls and
#: the margins), and more than the most only spreads the same controls thinner
PANEL_MIN, PANEL_MAX = 320, 420


class PanelView:
    """The side panel: mode, classes, classifier, year, thresholds, actions, status."""

    def __init__(self, state: ExplorerState, controller: ExplorerController):
        self.state, self.controller = state, controller
        self._build_mode()
        self._build_classes()
        self._build_view()
        self._build_actions()
        self._build_status()
        self._wire()
        self.widget = self._layout()

    def _build_mode(self) -> None:
        """What the map does (a toggle per mode; live only with a live model)."""
        import ipywidgets as W

        modes = [("click", "label"), ("draw", "draw"), ("similar", "similarity"), ("change", "change")]
        tips = ["a click adds a point label of the active class",
                "a polygon or rectangle drawn with the map's toolbar labels every pixel inside it",
                "a click finds the pixels similar to the clicked one",
                "show the change between two years"]
        if self.controller.live_model is not None:
            modes.append(("live", "live"))
            tips.append("a rectangle drawn with the map's toolbar is embedded live from STAC imagery")
        self.mode = W.ToggleButtons(options=modes, value=self.state.mode, layout=W.Layout(width="310px"),
                                    style={"button_width": "56px" if len(modes) > 4 else "70px"}, tooltips=tips)
        self.mode.add_class("te-mode")
        W.link((self.state, "mode"), (self.mode, "value"))
        self.live_box = self._build_live_window() if self.controller.live_model is not None else None

    def _build_live_window(self):
        """Live mode's observation window: two dates (both empty: the year shown), shown in
        live mode only."""
        import ipywidgets as W

        st = self.state
        tip = "empty: the calendar year shown; else a window of at most one year"
        self.live_start = W.Text(value=st.live_start, placeholder="YYYY-MM-DD", description="live from",
                                 tooltip=tip, layout=W.Layout(width="300px"), style={"description_width": "110px"})
        self.live_end = W.Text(value=st.live_end, placeholder="YYYY-MM-DD", description="to", tooltip=tip,
                               layout=W.Layout(width="300px"), style={"description_width": "110px"})
        self.live_start.add_class("te-live-start")
        self.live_end.add_class("te-live-end")
        W.link((st, "live_start"), (self.live_start, "value"))
        W.link((st, "live_end"), (self.live_end, "value"))
        box = W.VBox([self.live_start, self.live_end, html_widget(f"<small>{tip}</small>", "te-live-note")])

        def show(_change=None):
            box.layout.display = "" if st.mode == "live" else "none"

        st.observe(show, names="mode")
        show()
        return box

    def _build_classes(self) -> None:
        """The classes: the active one, counts, add / rename / recolour / remove, the model."""
        import ipywidgets as W

        st = self.state
        self.active = W.ToggleButtons(options=list(st.classes), value=st.active_class or None,
                                      layout=W.Layout(width="300px"), style={"button_width": "140px"})
        self.active.add_class("te-classes")
        self.counts = html_widget("", "te-counts")
        self.new_name = W.Text(placeholder="class name", layout=W.Layout(width="150px"))
        self.new_name.add_class("te-new-class")
        self.add_btn = W.Button(description="add class", layout=W.Layout(width="90px"))
        self.add_btn.add_class("te-add-class")
        self.rename_btn = W.Button(description="rename", layout=W.Layout(width="70px"),
                                   tooltip="rename the active class to the name typed")
        self.color = W.ColorPicker(concise=True, value="#888888", layout=W.Layout(width="40px"),
                                   tooltip="colour of the active class")
        self.remove_btn = W.Button(description="remove class", layout=W.Layout(width="110px"))
        self.model = W.Dropdown(options=list(MODELS), value=st.model, description="classifier",
                                layout=W.Layout(width="300px"), style={"description_width": "110px"})
        W.link((st, "model"), (self.model, "value"))

    def _build_view(self) -> None:
        """Year, change year, opacity, thresholds and what is shown, linked to the state."""
        import ipywidgets as W

        st = self.state
        lay = W.Layout(width="300px")
        wide = {"description_width": "110px"}
        self.year = W.Dropdown(options=list(st.years), value=st.year, description="year", layout=lay, style=wide)
        self.year.add_class("te-year")
        self.change_from = W.Dropdown(options=[("other year", 0)] + [(str(y), y) for y in st.years],
                                      value=0, description="change from", layout=lay, style=wide)
        self.opacity = W.FloatSlider(value=st.class_opacity, min=0, max=1, step=0.05, description="class opacity",
                                     layout=lay, style=wide)
        self.confidence = W.FloatSlider(value=st.confidence_threshold, min=0, max=1, step=0.05,
                                        description="min confidence", layout=lay, style=wide,
                                        continuous_update=False)
        self.sim_thr = W.FloatSlider(value=st.similarity_threshold, min=-1, max=1, step=0.01,
                                     description="similarity ≥", layout=lay, style=wide, continuous_update=False)
        self.show_classes = W.Checkbox(value=st.show_classes, description="show classes", indent=False,
                                       layout=W.Layout(width="140px"))
        self.show_conf = W.Checkbox(value=st.show_confidence, description="show confidence", indent=False,
                                    layout=W.Layout(width="150px"))
        self.show_colour = W.Checkbox(value=st.show_false_colour, description="show false colour", indent=False,
                                      layout=W.Layout(width="150px"))
        for a, b in ((self.year, "year"), (self.change_from, "change_from"), (self.opacity, "class_opacity"),
                     (self.confidence, "confidence_threshold"), (self.sim_thr, "similarity_threshold"),
                     (self.show_classes, "show_classes"), (self.show_colour, "show_false_colour"),
                     (self.show_conf, "show_confidence")):
            W.link((st, b), (a, "value"))

    def _build_actions(self) -> None:
        """Undo, redo, clear, save, export; the guided walks."""
        import ipywidgets as W

        from .guided_panel import GuidedPanel

        self.undo_btn = W.Button(description="undo", layout=W.Layout(width="70px"))
        self.redo_btn = W.Button(description="redo", layout=W.Layout(width="70px"))
        self.clear_btn = W.Button(description="clear", layout=W.Layout(width="70px"))
        self.save_btn = W.Button(description="save", layout=W.Layout(width="70px"))
        self.export_btn = W.Button(description="export maps", layout=W.Layout(width="110px"))
        self.export_btn.add_class("te-export")
        self.guided = GuidedPanel(self.state, self.controller)

    def _build_status(self) -> None:
        """Progress, status, accuracy, the error line and the session's notice."""
        import ipywidgets as W

        self.status = html_widget("", "te-status")
        self.accuracy = html_widget("", "te-accuracy")
        self.notice = html_widget("", "te-notice")
        self.depth = html_widget("", "te-depth")  # which depth is shown, what the prefix costs (depth.py)
        self.progress = W.FloatProgress(value=0, min=0, max=1, layout=W.Layout(width="300px", height="12px"))
        self.error = html_widget("", "te-error")
        self.dismiss = W.Button(description="dismiss", layout=W.Layout(width="80px", display="none"))

    def _wire(self) -> None:
        """Buttons call the controller; state changes update the status widgets."""
        st, controller = self.state, self.controller
        g = functools.partial(guarded, st)
        self.add_btn.on_click(g("adding a class")(lambda _: self._add()))
        self.rename_btn.on_click(g("renaming the class")(lambda _: self._rename()))
        self.remove_btn.on_click(g("removing the class")(
            lambda _: controller.remove_class(st.active_class) if st.active_class else None))
        self.color.observe(g("recolouring")(self._recolour), names="value")
        self.active.observe(g("picking a class")(self._pick), names="value")
        self.undo_btn.on_click(g("undo")(lambda _: controller.undo()))
        self.redo_btn.on_click(g("redo")(lambda _: controller.redo()))
        self.clear_btn.on_click(g("clear")(lambda _: controller.clear()))
        self.save_btn.on_click(g("save")(lambda _: controller.save()))
        self.export_btn.on_click(g("export")(lambda _: controller.export()))
        self.dismiss.on_click(lambda _: setattr(st, "error", ""))

        st.observe(self._classes_changed, names=["classes", "colors", "counts", "active_class"])
        st.observe(lambda ch: setattr(self.status, "value", html.escape(ch["new"])), names="status")
        st.observe(lambda ch: setattr(self.accuracy, "value", html.escape(ch["new"])), names="accuracy")
        st.observe(lambda ch: setattr(self.notice, "value", f"<small>{html.escape(ch['new'])}</small>"),
                   names="notice")
        st.observe(lambda ch: setattr(self.progress, "value", ch["new"]), names="progress")
        st.observe(lambda ch: setattr(self.depth, "value", html.escape(ch["new"])), names="depth_status")
        self.depth.value = html.escape(st.depth_status)
        st.observe(self._busy, names="busy")
        st.observe(self._error, names="error")
        self._classes_changed(None)
        self.status.value = html.escape(st.status)

    def _layout(self):
        """The panel: what is used on every click on top, the rest in a closed "more"
        section; its width flexes between :data:`PANEL_MIN` and :data:`PANEL_MAX` (the app's
        CSS puts it beside the map, or under it where the two do not fit side by side)."""
        import ipywidgets as W

        row = W.HBox
        more = W.VBox([
            self.model, self.change_from, self.opacity, self.confidence, self.sim_thr, self.show_colour,
            row([self.rename_btn, self.color]), self.export_btn, self.guided.more,
        ])
        self.more = W.Accordion(children=[more], selected_index=None, layout=W.Layout(width="auto"))
        self.more.set_title(0, "more: classifier, thresholds, export")
        self.more.add_class("te-more")
        panel = W.VBox([
            html_widget("<b>on the map</b>", "te-h"), self.mode, *([self.live_box] if self.live_box is not None else []),
            html_widget("<b>classes</b>", "te-h"), self.active, self.counts,
            row([self.new_name, self.add_btn], layout=W.Layout(flex_flow="row wrap")),
            row([self.remove_btn, self.undo_btn, self.redo_btn], layout=W.Layout(flex_flow="row wrap")),
            row([self.clear_btn, self.save_btn], layout=W.Layout(flex_flow="row wrap")),
            html_widget("<b>view</b>", "te-h"), self.year, row([self.show_classes, self.show_conf]),
            self.guided.widget, self.more,
            self.progress, self.status, self.depth, self.accuracy, row([self.error, self.dismiss]), self.notice,
        ], layout=W.Layout(width="auto", flex=f"1 1 {PANEL_MIN}px", min_width=f"{PANEL_MIN}px",
                           max_width=f"{PANEL_MAX}px", overflow="hidden"))
        panel.add_class("te-panel")
        panel.add_class("te-busy" if self.state.busy else "te-idle")  # the app's idle signal (see _busy)
        return panel

    def _add(self) -> None:
        name = self.new_name.value.strip()
        if not name:
            self.state.status = "type a class name first"
            return
        from .colours import class_colour

        # its colour by name (woods green, water blue, ...), else one far from the others
        self.controller.add_class(name, class_colour(name, self.state.colors.values()))
        self.new_name.value = ""

    def _rename(self) -> None:
        new = self.new_name.value.strip()
        if not self.state.active_class or not new:
            self.state.status = "pick a class and type its new name first"
            return
        self.controller.rename_class(self.state.active_class, new)
        self.new_name.value = ""

    def _recolour(self, change) -> None:
        name = self.state.active_class
        if name and self.state.colors.get(name) != change["new"]:
            self.controller.recolour(name, change["new"])

    def _pick(self, change) -> None:
        if change["new"] is not None and change["new"] != self.state.active_class:
            self.state.active_class = change["new"]

    def _classes_changed(self, _change) -> None:
        st = self.state
        if tuple(self.active.options) != tuple(st.classes):
            self.active.options = list(st.classes)
        if st.active_class and self.active.value != st.active_class:
            self.active.value = st.active_class
        if st.active_class:
            self.color.value = st.colors.get(st.active_class, "#888888")
        rows = "".join(
            f"<span style='display:inline-block;width:10px;height:10px;background:{html.escape(st.colors.get(c, ''))};"
            f"margin-right:4px'></span>{html.escape(c)}: {st.counts.get(c, 0)}<br>" for c in st.classes)
        self.counts.value = rows or "<i>no classes yet: type a name and press 'add class'</i>"

    _busy_lock = threading.Lock()

    def _busy(self, change) -> None:
        # the value now, not the one notified: the main and the worker thread may set it in turn;
        # the panel's class te-busy / te-idle (no job queued or running) is what browser tests wait on
        with self._busy_lock:
            busy = bool(self.state.busy)
            self.progress.bar_style = "info" if busy else "success"
            if hasattr(self, "widget"):  # the old class goes first: never both at once
                self.widget.remove_class("te-idle" if busy else "te-busy")
                self.widget.add_class("te-busy" if busy else "te-idle")

    def _error(self, change) -> None:
        msg = change["new"]
        self.error.value = f"<span style='color:#b00020'>{html.escape(msg)}</span>" if msg else ""
        self.dismiss.layout.display = "" if msg else "none"

