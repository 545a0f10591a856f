"""The TESSERA encoder: the only part of tessera_explore that imports torch.

Public verbs (torch loads on first use of the torch-backed ones)::

    load_encoder(path_or_name, *, device=None, ...)      -> torch.nn.Module, forward(s2_x, s1_x) -> (B, 128)
    embed_pixels(model, s2, s2_doy, s2_mask, s1_asc, s1_asc_doy, s1_desc, s1_desc_doy, ...)
                                                         -> float32 (N, 128), NaN without data
    embed_dpixel(folder, model, *, year=None, ...)       -> embeddings DataArray
    read_dpixel(folder) / write_dpixel(folder, ...)      the upstream prepared-data folder
    WEIGHTS, download_weights(name, ...), weights_path(name)   the published weights

    area_inputs(bbox, year, ...) / embed_area(bbox, year, *, model, ...) / compare(live, precomputed)
                                                         live areas from STAC; EmbedOptions holds their imagery options

Modules without torch: :mod:`~tessera_explore.encoder.granules` (STAC granules to the
prepared-data arrays), :mod:`~tessera_explore.encoder.preprocess` (per-pixel statistics and
time-step rules), :mod:`~tessera_explore.encoder.stac` (search and loading),
:mod:`~tessera_explore.encoder.window` (the year or window of observations).

Renamed (the old names still work, with a ``DeprecationWarning``): the module ``prepare``
is ``granules``; ``prepare_area`` is ``area_inputs``.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_LAZY: dict[str, str] = {
    "load_encoder": "weights",
    "download_weights": "weights",
    "weights_path": "weights",
    "read_checkpoint": "weights",
    "WEIGHTS": "weights",
    "WeightsEntry": "weights",
    "embed_pixels": "embed",
    "build_encoder": "model",
    "count_parameters": "model",
    "TesseraEncoder": "model",
    "embed_dpixel": "dpixel",
    "read_dpixel": "dpixel",
    "write_dpixel": "dpixel",
    "DPixel": "dpixel",
    "preprocess": "",
    "embed_area": "area",
    "area_inputs": "area",
    "EmbedOptions": "area",
    "compare": "area",
    "stac": "",
    "granules": "",
}
#: former names -> current ones (resolved with a DeprecationWarning, left out of __all__)
_RENAMED: dict[str, str] = {"prepare": "granules", "prepare_area": "area_inputs"}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _RENAMED:
        import warnings

        new = _RENAMED[name]
        warnings.warn(f"tessera_explore.encoder.{name} is renamed {new}; use that instead", DeprecationWarning,
                      stacklevel=2)
        return __getattr__(new)
    mod = _LAZY.get(name)
    if mod is None:
        raise AttributeError(f"module 'tessera_explore.encoder' has no attribute {name!r}")
    module = importlib.import_module(f"{__name__}.{mod or name}")
    value = getattr(module, name) if mod else module
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


if TYPE_CHECKING:  # pragma: no cover
    from . import granules, preprocess, stac
    from .area import EmbedOptions, area_inputs, compare, embed_area
    from .dpixel import DPixel, embed_dpixel, read_dpixel, write_dpixel
    from .embed import embed_pixels
    from .model import TesseraEncoder, build_encoder, count_parameters
    from .weights import WEIGHTS, WeightsEntry, download_weights, load_encoder, read_checkpoint, weights_path
