"""The TESSERA encoder: the only part of tessera_explore that imports torch.

Public verbs (torch loads on first use of the torch-backed ones)::

    load_encoder(path_or_name, *, device=None, ...)      -> torch.nn.Module, forward(s2_x, s1_x) -> (B, 128)
    embed_pixels(model, s2, s2_doy, s2_mask, s1_asc, s1_asc_doy, s1_desc, s1_desc_doy, ...)
                                                         -> float32 (N, 128), NaN without data
    embed_dpixel(folder, model, *, year=None, ...)       -> embeddings DataArray
    read_dpixel(folder) / write_dpixel(folder, ...)      the upstream prepared-data folder
    WEIGHTS, download_weights(name, ...), weights_path(name)   the published weights

:mod:`tessera_explore.encoder.preprocess` (statistics, time-step rules) is numpy-only.
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
    "prepare_area": "area",
    "compare": "area",
    "stac": "",
    "prepare": "",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
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
    from . import prepare, preprocess, stac
    from .area import compare, embed_area, prepare_area
    from .dpixel import DPixel, embed_dpixel, read_dpixel, write_dpixel
    from .embed import embed_pixels
    from .model import TesseraEncoder, build_encoder, count_parameters
    from .weights import WEIGHTS, WeightsEntry, download_weights, load_encoder, read_checkpoint, weights_path
