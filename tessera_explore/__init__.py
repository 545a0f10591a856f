"""tessera_explore: a Jupyter-first toolkit for exploring TESSERA embeddings.

The public verbs are re-exported here and resolve on first use (module
``__getattr__``), so ``import tessera_explore`` stays fast, imports no torch, umap or
leafmap, and touches no network.

Every embeddings array follows one schema (``tessera_explore._schema``): an
``xarray.DataArray`` named ``embedding`` with dims ``("band", "y", "x")``.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from . import exceptions
from .exceptions import TesseraExploreError

# public name -> "module:attribute" (attribute empty for a submodule)
_LAZY: dict[str, str] = {
    # foundation
    "open_embeddings": "tessera_explore.io.open:open_embeddings",
    "fetch_tiles": "tessera_explore.io.fetch:fetch_tiles",
    "fetch_region": "tessera_explore.io.fetch_region:fetch_region",
    "data_mask": "tessera_explore.io.open:data_mask",
    "quality": "tessera_explore.io.quality:quality",
    "config": "tessera_explore.config:",
    "validate": "tessera_explore._schema:validate",
    "io": "tessera_explore.io:",
    "testing": "tessera_explore.testing:",
    "tutorial": "tessera_explore.tutorial:",
    # projections
    "project": "tessera_explore.project:project",
    "to_rgb": "tessera_explore.project:to_rgb",
    "warm_up_umap": "tessera_explore.project:warm_up_umap",
    "overlay": "tessera_explore.widgets.overlay:overlay",
    "overlay_image": "tessera_explore.widgets.overlay:overlay_image",
    "scatter": "tessera_explore.widgets.scatter:scatter",
    # the explorer app
    "explore": "tessera_explore.widgets.app:explore",
    "load_bokeh_js": "tessera_explore.widgets.notebook_js:load_bokeh_js",
    # labelling and analysis
    "LabelStore": "tessera_explore.classify:LabelStore",
    "sample_labels": "tessera_explore.classify:sample_labels",
    "fit_classifier": "tessera_explore.classify:fit_classifier",
    "predict_map": "tessera_explore.classify:predict_map",
    "similarity": "tessera_explore.classify:similarity",
    "change": "tessera_explore.classify:change",
    "cluster": "tessera_explore.classify:cluster",
    "evaluate": "tessera_explore.classify:evaluate",
    "export_map": "tessera_explore.classify:export_map",
    "prepare": "tessera_explore.classify:prepare",
    # guided labelling
    "validation_sample": "tessera_explore.classify:validation_sample",
    "area_estimate": "tessera_explore.classify:area_estimate",
    "suggest": "tessera_explore.classify:suggest",
    "label_sample": "tessera_explore.classify:label_sample",
    "samples_from_labels": "tessera_explore.classify:samples_from_labels",
    "trust": "tessera_explore.classify:trust",
    # regions on dask.distributed
    "region": "tessera_explore.region:",
    "run_region": "tessera_explore.region:run_region",
    "estimate_region": "tessera_explore.region:estimate_region",
    "open_region": "tessera_explore.region:open_region",
    "region_to_cog": "tessera_explore.region:region_to_cog",
    "embed_region": "tessera_explore.region.encode:embed_region",
    # live encoder (torch loads only when it is used)
    "encoder": "tessera_explore.encoder:",
    "embed_area": "tessera_explore.encoder.area:embed_area",
    "compare": "tessera_explore.encoder.area:compare",
}

__all__ = ["__version__", "exceptions", "TesseraExploreError", *_LAZY]


def __getattr__(name: str) -> Any:
    if name == "__version__":  # from the package metadata: one source of truth
        from .config import version

        return version()
    target = _LAZY.get(name)
    if target is None:
        raise AttributeError(f"module 'tessera_explore' has no attribute {name!r}")
    mod_name, _, attr = target.partition(":")
    module = importlib.import_module(mod_name)
    value = getattr(module, attr) if attr else module
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


if TYPE_CHECKING:  # pragma: no cover - for type checkers and IDEs only
    from . import encoder, io, testing, tutorial
    from ._schema import validate
    from .io.fetch import fetch_tiles
    from .io.open import open_embeddings
