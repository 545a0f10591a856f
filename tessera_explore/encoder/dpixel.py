"""The upstream prepared-data folder ("d-pixel"), read, written and embedded.

A folder holds one area::

    bands.npy               uint16 (T, H, W, 10)   Sentinel-2 raw digital numbers
    masks.npy               uint8  (T, H, W)       1 = clear
    doys.npy                uint16 (T,)            day of year of each S2 date
    sar_ascending.npy       int16  (Ta, H, W, 2)   VV, VH (dB-scaled, 0 = missing)
    sar_ascending_doy.npy          (Ta,)
    sar_descending.npy      int16  (Td, H, W, 2)
    sar_descending_doy.npy         (Td,)
    roi.tiff                the grid (CRS, transform); non-zero = inside the area

Upstream also uses ``s2/`` and ``s1/`` sub-folders with the same file names; both are
read.  :func:`write_dpixel` writes the flat layout (and the year as a ``TESSERA_YEAR``
tag of ``roi.tiff``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..exceptions import EncoderError

__all__ = ["DPixel", "read_dpixel", "write_dpixel", "embed_dpixel"]

_S2 = ("bands.npy", "masks.npy", "doys.npy")
_S1 = ("sar_ascending.npy", "sar_ascending_doy.npy", "sar_descending.npy", "sar_descending_doy.npy")


@dataclass
class DPixel:
    """Arrays and grid of one prepared-data folder (arrays may be memory maps)."""

    bands: np.ndarray
    masks: np.ndarray
    doys: np.ndarray
    sar_ascending: np.ndarray
    sar_ascending_doy: np.ndarray
    sar_descending: np.ndarray
    sar_descending_doy: np.ndarray
    crs: Any
    transform: Any
    roi: np.ndarray
    year: int | None
    path: Path

    @property
    def shape(self) -> tuple[int, int]:
        """``(H, W)`` of the grid."""
        return tuple(self.roi.shape)

    def pixel_arrays(self) -> dict[str, np.ndarray]:
        """The arrays reshaped to pixels ``(T, H*W, ...)`` (views), keyed as embed_pixels' arguments."""
        h, w = self.shape
        return {
            "s2": self.bands.reshape(self.bands.shape[0], h * w, 10),
            "s2_doy": self.doys,
            "s2_mask": self.masks.reshape(self.masks.shape[0], h * w),
            "s1_asc": self.sar_ascending.reshape(self.sar_ascending.shape[0], h * w, 2),
            "s1_asc_doy": self.sar_ascending_doy,
            "s1_desc": self.sar_descending.reshape(self.sar_descending.shape[0], h * w, 2),
            "s1_desc_doy": self.sar_descending_doy,
        }


def _load(path: Path, mmap: bool) -> np.ndarray:
    if not path.is_file():
        raise EncoderError(f"prepared-data folder is missing {path.name} ({path})")
    try:
        return np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
    except ValueError:  # an empty array cannot be memory-mapped
        return np.load(path, allow_pickle=False)


def read_dpixel(folder: str | os.PathLike, *, mmap: bool = True) -> DPixel:
    """Read a prepared-data folder (flat, or with ``s2/`` and ``s1/`` sub-folders).

    Big arrays are memory-mapped unless ``mmap=False``.  Shapes are checked against each
    other and against ``roi.tiff``.
    """
    import rasterio

    root = Path(folder)
    if not root.is_dir():
        raise EncoderError(f"{root} is not a folder")
    s2_dir = root / "s2" if (root / "s2" / "bands.npy").is_file() else root
    s1_dir = root / "s1" if (root / "s1" / "sar_ascending.npy").is_file() else root
    bands, masks, doys = (_load(s2_dir / f, mmap) for f in _S2)
    asc, asc_doy, desc, desc_doy = (_load(s1_dir / f, mmap) for f in _S1)
    roi_path = root / "roi.tiff"
    if not roi_path.is_file():
        raise EncoderError(f"prepared-data folder {root} has no roi.tiff (it carries the grid)")
    with rasterio.open(roi_path) as src:
        roi = src.read(1)
        crs, transform = src.crs, src.transform
        tag = src.tags().get("TESSERA_YEAR")
    if bands.ndim != 4 or bands.shape[-1] != 10:
        raise EncoderError(f"bands.npy must be (T, H, W, 10), got {bands.shape}")
    t, h, w = bands.shape[:3]
    if roi.shape != (h, w):
        raise EncoderError(f"roi.tiff is {roi.shape} but bands.npy is {h} x {w}")
    if masks.shape != (t, h, w):
        raise EncoderError(f"masks.npy must be {(t, h, w)}, got {masks.shape}")
    for name, arr, d in (("sar_ascending", asc, asc_doy), ("sar_descending", desc, desc_doy)):
        if arr.ndim != 4 or arr.shape[1:] != (h, w, 2):
            raise EncoderError(f"{name}.npy must be (T, {h}, {w}, 2), got {arr.shape}")
        if d.shape != (arr.shape[0],):
            raise EncoderError(f"{name}_doy.npy must be ({arr.shape[0]},), got {d.shape}")
    if doys.shape != (t,):
        raise EncoderError(f"doys.npy must be ({t},), got {doys.shape}")
    return DPixel(bands, masks, doys, asc, asc_doy, desc, desc_doy, crs, transform, roi,
                  int(tag) if tag else None, root)


def write_dpixel(
    folder: str | os.PathLike,
    *,
    bands: np.ndarray,
    masks: np.ndarray,
    doys: np.ndarray,
    crs: Any,
    transform: Any,
    sar_ascending: np.ndarray | None = None,
    sar_ascending_doy: np.ndarray | None = None,
    sar_descending: np.ndarray | None = None,
    sar_descending_doy: np.ndarray | None = None,
    roi: np.ndarray | None = None,
    year: int | None = None,
) -> Path:
    """Write a prepared-data folder in the upstream layout; returns the folder.

    ``bands`` ``(T, H, W, 10)`` are stored as uint16, ``masks`` as uint8, SAR as int16
    ``(T, H, W, 2)`` (``None`` for none), days of year as uint16.  ``roi`` defaults to the
    whole grid; ``crs`` and ``transform`` (an ``affine.Affine``) place it.
    """
    import rasterio

    bands = np.asarray(bands)
    if bands.ndim != 4 or bands.shape[-1] != 10:
        raise EncoderError(f"bands must be (T, H, W, 10), got {bands.shape}")
    t, h, w = bands.shape[:3]
    masks = np.asarray(masks)
    if masks.shape != (t, h, w):
        raise EncoderError(f"masks must be {(t, h, w)}, got {masks.shape}")
    doys = np.asarray(doys)
    if doys.shape != (t,):
        raise EncoderError(f"doys must be ({t},), got {doys.shape}")

    def sar(x, d, name):
        x = np.zeros((0, h, w, 2), np.int16) if x is None else np.asarray(x)
        d = np.zeros((0,), np.uint16) if d is None else np.asarray(d)
        if x.ndim != 4 or x.shape[1:] != (h, w, 2) or d.shape != (x.shape[0],):
            raise EncoderError(f"{name} must be (T, {h}, {w}, 2) with ({x.shape[0]},) days, got {x.shape} and {d.shape}")
        return x.astype(np.int16), d.astype(np.uint16)

    asc, asc_doy = sar(sar_ascending, sar_ascending_doy, "sar_ascending")
    desc, desc_doy = sar(sar_descending, sar_descending_doy, "sar_descending")
    root = Path(folder)
    root.mkdir(parents=True, exist_ok=True)
    arrays = {
        "bands.npy": bands.astype(np.uint16),
        "masks.npy": masks.astype(np.uint8),
        "doys.npy": doys.astype(np.uint16),
        "sar_ascending.npy": asc,
        "sar_ascending_doy.npy": asc_doy,
        "sar_descending.npy": desc,
        "sar_descending_doy.npy": desc_doy,
    }
    for name, arr in arrays.items():
        np.save(root / name, arr, allow_pickle=False)
    roi_arr = np.ones((h, w), np.uint8) if roi is None else (np.asarray(roi) != 0).astype(np.uint8)
    if roi_arr.shape != (h, w):
        raise EncoderError(f"roi must be {(h, w)}, got {roi_arr.shape}")
    profile = dict(driver="GTiff", height=h, width=w, count=1, dtype="uint8", crs=crs, transform=transform)
    with rasterio.open(root / "roi.tiff", "w", **profile) as dst:
        dst.write(roi_arr, 1)
        if year is not None:
            dst.update_tags(TESSERA_YEAR=str(int(year)))
    return root


def embed_dpixel(
    folder: str | os.PathLike,
    model: Any,
    *,
    year: int | None = None,
    dims: int | None = None,
    dataset_version: str | None = None,
    roi_only: bool = True,
    **embed_kwargs: Any,
):
    """Embed a prepared-data folder; returns the embeddings DataArray (``("band", "y", "x")``).

    ``model`` is a loaded encoder, a checkpoint path or a registry name.  ``year`` defaults
    to the folder's ``TESSERA_YEAR`` tag.  Pixels outside the ROI (``roi_only``) or without
    any valid observation are NaN.  ``dataset_version`` defaults to ``"live-{generation}"``;
    ``model_generation`` is the model's generation and ``source`` the folder.  Other keyword
    arguments go to :func:`~tessera_explore.encoder.embed_pixels`.  ``dims`` keeps the first
    ``dims`` values (v2 Matryoshka prefixes 16, 32, 64, 128): the result has ``dims`` bands
    and ``attrs["depth"] = dims``.
    """
    from .._schema import make_embedding_array
    from .embed import check_dims, embed_pixels
    from .weights import load_encoder

    if not hasattr(model, "generation"):
        model = load_encoder(model)
    if embed_kwargs.get("quantize"):
        raise EncoderError("embed_dpixel returns the float32 embeddings schema; use embed_pixels for int8 codes")
    depth = check_dims(model, dims)
    dp = read_dpixel(folder)
    year = year if year is not None else dp.year
    if year is None:
        raise EncoderError(f"{dp.path} does not record its year; pass year=")
    h, w = dp.shape
    pixels = (dp.roi.reshape(-1) != 0) if roi_only else None
    emb = embed_pixels(model, **dp.pixel_arrays(), pixels=pixels, dims=depth, **embed_kwargs)
    data = np.ascontiguousarray(emb.reshape(h, w, -1).transpose(2, 0, 1))
    tr = dp.transform
    x = tr.c + tr.a * (np.arange(w) + 0.5)
    y = tr.f + tr.e * (np.arange(h) + 0.5)
    gen = model.generation
    extra = {"checkpoint": getattr(model, "name", ""), "depth": int(depth)}
    if getattr(model, "data_source", None):
        extra["data_source"] = model.data_source
    return make_embedding_array(
        data,
        x=x,
        y=y,
        crs=dp.crs,
        year=int(year),
        dataset_version=dataset_version or f"live-{gen}",
        dataset_variant=getattr(model, "name", None) or "live",
        model_generation=gen,
        source=str(dp.path),
        extra_attrs=extra,
    )
