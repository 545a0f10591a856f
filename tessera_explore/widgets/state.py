"""Explorer state: validated traits on a plain object (no widgets, no computation).

Views observe these traits and write user choices into them; the controller reads
them, computes off the main thread, and writes results and progress back.
"""

from __future__ import annotations

import traitlets as t

from ..classify.models import MODELS
from ..classify.suggest import STRATEGIES
from ..exceptions import ArgumentTypeError

__all__ = ["ExplorerState", "MODES", "MODELS", "PROJECTIONS", "WALKS"]

#: what the map does: ``label`` (a click adds a point label), ``draw`` (polygons and
#: rectangles drawn with the map's toolbar become labels), ``similarity``, ``change`` and
#: ``live`` (a drawn rectangle is embedded live)
MODES = ("label", "draw", "similarity", "change", "live")
#: the scatter's projection: PCA (ready at start) or UMAP (fitted in the background)
PROJECTIONS = ("pca", "umap")
#: what a guided walk steps through: suggestions to label, or a validation sample
WALKS = ("", "suggest", "validate")


class ExplorerState(t.HasTraits):
    """Everything the explorer shows or the user chose, in one place.

    Unknown keyword arguments are refused (a typo must not pass silently).
    """

    # what the user picks
    mode = t.Enum(MODES, default_value="label", help="what a click or a drawn shape on the map does")
    active_class = t.Unicode("", help="class that a click in label mode adds")
    model = t.Enum(MODELS, default_value="knn", help="few-shot classifier")
    year = t.Int(0, help="year shown on the map")
    years = t.List(t.Int(), help="years that are open")
    change_from = t.Int(0, help="earlier year of the change layer (0: the other open year)")
    class_opacity = t.Float(0.6, min=0.0, max=1.0)
    confidence_threshold = t.Float(0.0, min=0.0, max=1.0, help="hide class pixels less confident than this")
    similarity_threshold = t.Float(0.8, min=-1.0, max=1.0, help="cosine similarity above which pixels match")
    show_classes = t.Bool(True)
    show_confidence = t.Bool(False, help="show the classifier's confidence instead of the classes")
    show_false_colour = t.Bool(True)
    show_trust = t.Bool(False, help="grey, hatched pixels where the class map is not to be trusted")
    projection = t.Enum(PROJECTIONS, default_value="pca", help="projection the scatter shows")
    suggest_strategy = t.Enum(STRATEGIES, default_value="mixed",
                              help="how suggestions are picked: uncertainty, diverse or mixed (classify.suggest)")
    live_start = t.Unicode("", help="first day (YYYY-MM-DD) of a live embedding's window; empty with "
                                    "live_end: the calendar year shown")
    live_end = t.Unicode("", help="last day (YYYY-MM-DD) of a live embedding's window (at most a year after "
                                  "live_start)")

    # what the controller reports
    classes = t.List(t.Unicode(), help="class names, in order")
    colors = t.Dict(value_trait=t.Unicode(), help="class name -> #rrggbb")
    counts = t.Dict(value_trait=t.Int(), help="class name -> number of labels")
    n_labels = t.Int(0)
    status = t.Unicode("ready")
    notice = t.Unicode("", help="a lasting note about the session (where labels are saved, a shared label file)")
    busy = t.Bool(False)
    progress = t.Float(0.0, min=0.0, max=1.0)
    error = t.Unicode("", help="last error, shown next to the app; empty when none")
    accuracy = t.Unicode("", help="summary of the classifier's cross-validated quality")
    selection_size = t.Int(0, help="pixels selected in the projection scatter")
    walk = t.Enum(WALKS, default_value="", help="what the guided walk steps through ('' when none)")
    guide = t.Unicode("", help="where the guided walk stands, in words")
    area_table = t.Unicode("", help="HTML table of the error-adjusted areas and accuracies")
    learning_curve = t.List(t.Dict(), help="[{n, accuracy, low, high}]: spatially cross-validated accuracy "
                                          "of the first n labels")
    projection_status = t.Unicode("", help="where the UMAP fit stands")
    depth = t.Int(0, help="dimensions of the embeddings in use (16 while a v2 store's full depth loads)")
    depth_status = t.Unicode("", help="which depth is shown and, once both are loaded, what the 16-band prefix "
                                      "costs (empty for arrays explored as they are)")
    last_click = t.Tuple(t.Float(), t.Float(), default_value=(float("nan"), float("nan")), help="(lon, lat)")

    def __init__(self, **kwargs):
        unknown = sorted(set(kwargs) - set(self.trait_names()))
        if unknown:
            raise ArgumentTypeError(f"ExplorerState got unknown arguments {unknown}; known: {sorted(self.trait_names())}")
        super().__init__(**kwargs)

    @t.validate("active_class")
    def _check_active(self, proposal):
        name = proposal["value"]
        if name and self.classes and name not in self.classes:
            raise t.TraitError(f"unknown class {name!r}; classes are {self.classes}")
        return name

    @t.validate("year")
    def _check_year(self, proposal):
        y = proposal["value"]
        if self.years and y not in self.years:
            raise t.TraitError(f"year {y} is not open; open years are {self.years}")
        return y
