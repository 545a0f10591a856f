"""Labels, classifiers, similarity, change and clusters over TESSERA embeddings.

The scientific core behind the explorer, usable from plain Python:

* :class:`LabelStore` - classes and point/polygon labels in lon/lat, undo/redo, saved
  atomically after every change;
* :func:`sample_labels` - features and targets under labels (skipped labels reported);
* :func:`label_sample` / :func:`samples_from_labels` - a label's pixels kept in the label
  file, and training from those alone (labels anywhere, no area read);
* :func:`fit_classifier` / :func:`predict_map` - kNN, logistic regression, random forest
  or any scikit-learn classifier; class and confidence maps;
* :func:`similarity`, :func:`change`, :func:`cluster` - maps without a classifier;
* :func:`evaluate` - hold-out and spatially blocked cross-validation;
* :func:`export_map` - Cloud-Optimised GeoTIFF with provenance tags;
* :func:`prepare` - hold an area's int8 codes in memory so that repeated calls (a refit
  after every click) skip reading the tiles.  Every verb takes it in place of the
  DataArray;
* :class:`IncrementalKNNMap` - a kNN class map kept up to date label by label, exactly.
"""

from .accuracy import AreaEstimate, area_estimate, validation_sample
from .area import PreparedArea, prepare
from .change import change
from .cluster import cluster
from .evaluate import Evaluation, evaluate
from .export import export_map
from .incremental import IncrementalKNNMap
from .labels import Label, LabelStore
from .models import CosineKNN, LabelClassifier, fit_classifier
from .predict import predict_map
from .samples import Samples, label_sample, sample_labels, samples_from_labels
from .similarity import similarity
from .suggest import suggest
from .trust import trust

__all__ = [
    "LabelStore",
    "Label",
    "sample_labels",
    "samples_from_labels",
    "label_sample",
    "Samples",
    "fit_classifier",
    "LabelClassifier",
    "CosineKNN",
    "predict_map",
    "IncrementalKNNMap",
    "similarity",
    "change",
    "cluster",
    "evaluate",
    "Evaluation",
    "export_map",
    "prepare",
    "PreparedArea",
    "validation_sample",
    "area_estimate",
    "AreaEstimate",
    "suggest",
    "trust",
]
