"""The panel's guided section: suggest, validate, the walk's answer buttons, the trust
layer toggle, the area table and the learning curve (``widget``); how suggestions are
picked and the scatter's projection (``more``, placed by the panel in its "more" section).

Widgets only: every button calls the controller (through :func:`views.guarded`), and
every text comes from the state traits.
"""

from __future__ import annotations

import functools
import html

from .quality import curve_html
from .state import ExplorerState

__all__ = ["GuidedPanel"]

#: numbered walk markers: a round badge (Leaflet's white square behind a div icon removed)
WALK_CSS = ("<style>.te-map .leaflet-div-icon{background:transparent;border:none}"
            ".te-walk-number{box-sizing:border-box;color:#fff;border-radius:50%;width:22px;height:22px;"
            "line-height:20px;text-align:center;font:bold 12px sans-serif;border:1px solid #fff;"
            "box-shadow:0 0 2px #000}</style>")


class GuidedPanel:
    """The guided part of the side panel (``widget``)."""

    def __init__(self, state: ExplorerState, controller):
        import ipywidgets as W

        from .guard import guarded, html_widget

        self.state, self.controller = state, controller
        g = functools.partial(guarded, state)
        st = state
        self.suggest_btn = W.Button(description="suggest", layout=W.Layout(width="80px"),
                                    tooltip="find pixels whose labels would help the classifier most")
        self.suggest_btn.add_class("te-suggest")
        self.n_suggest = W.BoundedIntText(value=10, min=1, max=200, layout=W.Layout(width="60px"))
        self.strategy = W.Dropdown(options=[("mixed: uncertain and unlike the labels", "mixed"),
                                            ("most uncertain", "uncertainty"),
                                            ("uncertain, spread over embedding space", "diverse")],
                                   value=st.suggest_strategy, description="pick", layout=W.Layout(width="300px"),
                                   style={"description_width": "40px"})
        self.strategy.add_class("te-strategy")
        W.link((st, "suggest_strategy"), (self.strategy, "value"))
        self.validate_btn = W.Button(description="validate", layout=W.Layout(width="80px"),
                                     tooltip="draw a stratified random sample of the class map to check it against")
        self.validate_btn.add_class("te-validate")
        self.n_validate = W.BoundedIntText(value=30, min=2, max=1000, layout=W.Layout(width="60px"))
        self.trust = W.Checkbox(value=st.show_trust, description="hatch low trust", indent=False,
                                layout=W.Layout(width="150px"))
        W.link((st, "show_trust"), (self.trust, "value"))
        self.projection = W.ToggleButtons(options=[("PCA", "pca"), ("UMAP", "umap")], value=st.projection,
                                          description="scatter", style={"button_width": "60px"},
                                          tooltips=["principal components (ready)", "UMAP (fitted in the background)"])
        W.link((st, "projection"), (self.projection, "value"))
        self.projection_status = html_widget("", "te-projection-status")
        self.guide = html_widget("", "te-guide")
        self.answers = W.HBox([], layout=W.Layout(flex_flow="row wrap", width="300px"))
        self.skip_btn = W.Button(description="skip", layout=W.Layout(width="60px"))
        self.stop_btn = W.Button(description="stop", layout=W.Layout(width="60px"))
        self.walk_box = W.VBox([self.guide, self.answers, W.HBox([self.skip_btn, self.stop_btn])],
                               layout=W.Layout(display="none"))
        self.area = html_widget("", "te-area-table")
        self.curve = html_widget("", "te-learning-curve")

        self.suggest_btn.on_click(g("suggesting pixels")(lambda _: controller.suggest(self.n_suggest.value)))
        self.validate_btn.on_click(g("drawing a validation sample")(
            lambda _: controller.validate(self.n_validate.value)))
        self.skip_btn.on_click(g("skipping the point")(lambda _: controller.guide.skip()))
        self.stop_btn.on_click(g("stopping the walk")(lambda _: controller.stop_walk()))
        self._answer = g("answering the point")(lambda cls: controller.guide.answer(cls))
        self._answer_buttons: list = []

        st.observe(lambda ch: self._walk(), names=["walk", "guide"])
        st.observe(lambda ch: self._rebuild_answers(), names=["classes", "colors"])
        st.observe(lambda ch: setattr(self.area, "value", ch["new"]), names="area_table")
        st.observe(lambda ch: setattr(self.curve, "value", curve_html(ch["new"])), names="learning_curve")
        st.observe(lambda ch: setattr(self.projection_status, "value", f"<small>{html.escape(ch['new'])}</small>"),
                   names="projection_status")
        self._rebuild_answers()
        self._walk()
        #: the rarely changed part (how suggestions are picked, the scatter's projection):
        #: the panel puts it in its closed "more" section
        self.more = W.VBox([self.strategy, self.projection, self.projection_status])
        self.widget = W.VBox([
            html_widget(WALK_CSS + "<b>guided</b>", "te-h"),
            W.HBox([self.suggest_btn, self.n_suggest, self.validate_btn, self.n_validate],
                   layout=W.Layout(flex_flow="row wrap")),
            self.walk_box, self.area, self.trust, self.curve,
        ])
        self.widget.add_class("te-guided")

    def _walk(self) -> None:
        st = self.state
        self.walk_box.layout.display = "" if st.walk else "none"
        verb = "label it as" if st.walk == "suggest" else "reference class:"
        self.guide.value = f"{html.escape(st.guide)}<br><small>{verb}</small>" if st.walk else ""

    def _rebuild_answers(self) -> None:
        """One button per class (made when the classes change, not per point)."""
        import ipywidgets as W

        names = list(self.state.classes)
        if [b.description for b in self._answer_buttons] == names:
            for b in self._answer_buttons:
                b.style.button_color = self.state.colors.get(b.description, "#eeeeee")
            return
        old = self._answer_buttons
        buttons = []
        for name in names:
            b = W.Button(description=name, layout=W.Layout(width="auto"),
                         style={"button_color": self.state.colors.get(name, "#eeeeee")})
            b.on_click(lambda _, name=name: self._answer(name))
            buttons.append(b)
        self._answer_buttons = buttons
        self.answers.children = buttons
        for b in old:
            b.close()
