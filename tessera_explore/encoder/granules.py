"""From Sentinel-2 L2A and Sentinel-1 RTC granules to model input; numpy only.

The loader (:mod:`tessera_explore.encoder.stac`) hands over one array per *granule* (one
STAC item) already on the 10 m output grid: Sentinel-2 bands in the model's channel order
plus the scene classification layer (SCL), Sentinel-1 VV/VH backscatter in linear power.
This module applies the rules that make them what the model was trained on:

* Sentinel-2 channel order B04, B02, B03, B08, B8A, B05, B06, B07, B11, B12
  (:data:`S2_BANDS`); the 20 m bands are resampled bilinearly and SCL by nearest neighbour
  (:data:`S2_RESAMPLING`, applied by the loader).
* SCL classes 0, 1, 2, 3, 8, 9 are invalid (:data:`SCL_INVALID`); thin cirrus (10) and
  snow (11) count as valid.
* Planetary Computer only: granules acquired from 2022-01-25 on (processing baseline
  04.00) carry a +1000 offset; values >= 1000 lose it (:func:`remove_pc_offset`).
* Several granules on one date are mosaicked per pixel: the first granule (ordered by
  acquisition time, then item id) whose SCL is valid there (:func:`mosaic_first_valid`).
* Dates whose mosaic is valid on under 5 % of the area are dropped.
* Sentinel-1: ``x > 0`` becomes ``int16(clip((20 log10 x + 50) * 200, 0, 32767))``, anything
  else 0 = missing (:func:`s1_to_int16`); ascending and descending passes stay apart, each
  date mosaicked from its granules (first with any non-zero channel).

The result, :class:`Prepared`, has exactly the arrays of the upstream prepared-data folder
(``bands`` ``(T, H, W, 10)`` uint16, ``masks``, ``doys``, ``sar_ascending`` ...), so it can be
written with :func:`~tessera_explore.encoder.write_dpixel` or embedded directly.
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..exceptions import EncoderError

__all__ = [
    "S2_BANDS",
    "S2_BANDS_20M",
    "S2_RESAMPLING",
    "SCL_INVALID",
    "S1_BANDS",
    "PC_OFFSET_CUTOFF",
    "PC_OFFSET",
    "MIN_S2_COVER",
    "S2Granule",
    "S1Granule",
    "Prepared",
    "scl_valid",
    "needs_pc_offset",
    "remove_pc_offset",
    "s1_to_int16",
    "mosaic_first_valid",
    "prepare_s2",
    "prepare_s1",
    "day_of_year",
]

#: Sentinel-2 channel order of the model (not wavelength order).
S2_BANDS = ("B04", "B02", "B03", "B08", "B8A", "B05", "B06", "B07", "B11", "B12")
#: Bands delivered at 20 m, resampled bilinearly to 10 m.
S2_BANDS_20M = frozenset({"B8A", "B05", "B06", "B07", "B11", "B12"})
#: Resampling per band for the loader: bilinear for every band (exact for the 10 m bands,
#: whose grid lines up with the output), nearest for the categorical SCL.
S2_RESAMPLING = {**{b: "bilinear" for b in S2_BANDS}, "SCL": "nearest"}
#: SCL classes that make an observation invalid: no data, saturated, dark, cloud shadow,
#: cloud medium, cloud high.
SCL_INVALID = (0, 1, 2, 3, 8, 9)
S1_BANDS = ("vv", "vh")
#: Planetary Computer's Sentinel-2 L2A carries +1000 (processing baseline 04.00) from here on.
PC_OFFSET_CUTOFF = _dt.datetime(2022, 1, 25, tzinfo=_dt.UTC)
PC_OFFSET = 1000
#: Sentinel-2 dates valid on less than this share of the area are dropped.
MIN_S2_COVER = 0.05

_SCL_LUT = np.ones(256, dtype=bool)
_SCL_LUT[list(SCL_INVALID)] = False


def _utc(when: _dt.datetime) -> _dt.datetime:
    return when.replace(tzinfo=_dt.UTC) if when.tzinfo is None else when.astimezone(_dt.UTC)


def day_of_year(when: _dt.datetime | _dt.date) -> int:
    """Day of year (1..366) of an acquisition, in UTC."""
    if isinstance(when, _dt.datetime):
        when = _utc(when).date()
    return int(when.timetuple().tm_yday)


def scl_valid(scl: np.ndarray) -> np.ndarray:
    """Boolean mask: True where the SCL class is usable (not 0, 1, 2, 3, 8 or 9)."""
    scl = np.asarray(scl)
    if scl.dtype.kind not in "ui":
        scl = np.nan_to_num(scl, nan=0).astype(np.int64)
    return _SCL_LUT[np.clip(scl, 0, 255).astype(np.intp, copy=False)]


def needs_pc_offset(when: _dt.datetime) -> bool:
    """Whether a Planetary Computer S2 L2A acquisition carries the +1000 offset.

    True for acquisitions at or after 2022-01-25 00:00 UTC (processing baseline 04.00,
    the cut-off Planetary Computer's own harmonisation uses).
    """
    return _utc(when) >= PC_OFFSET_CUTOFF


def remove_pc_offset(bands: np.ndarray) -> np.ndarray:
    """Subtract 1000 from values >= 1000 (others, including nodata 0, unchanged); uint16."""
    bands = np.asarray(bands)
    out = bands.astype(np.uint16, copy=True)
    high = out >= PC_OFFSET
    out[high] -= PC_OFFSET
    return out


def s1_to_int16(x: np.ndarray) -> np.ndarray:
    """Sentinel-1 RTC backscatter (linear) to the model's int16: 0 = missing.

    ``x > 0``: ``clip((20 * log10(x) + 50) * 200, 0, 32767)`` truncated to int16;
    zero, negative, NaN and nodata values give 0.
    """
    x = np.asarray(x, dtype=np.float32)
    ok = np.isfinite(x) & (x > 0)
    out = np.zeros(x.shape, dtype=np.int16)
    v = (20.0 * np.log10(x[ok].astype(np.float64)) + 50.0) * 200.0
    out[ok] = np.clip(v, 0, 32767).astype(np.int16)
    return out


def mosaic_first_valid(stack: np.ndarray, valid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per pixel the first granule (axis 0) where ``valid`` holds.

    ``stack`` is ``(G, ..., H, W)``, ``valid`` ``(G, H, W)``.  Returns the mosaic
    ``(..., H, W)`` and ``(H, W)`` "any granule valid".  Where none is valid the first
    granule's values are kept (they are masked anyway).
    """
    stack = np.asarray(stack)
    valid = np.asarray(valid, dtype=bool)
    if stack.shape[0] != valid.shape[0] or stack.shape[-2:] != valid.shape[-2:]:
        raise EncoderError(f"mosaic: {stack.shape} granules do not fit masks {valid.shape}")
    if stack.shape[0] == 1:
        return stack[0], valid[0]
    first = np.argmax(valid, axis=0)  # 0 where none is valid
    idx = first.reshape((1,) * (stack.ndim - 2) + first.shape)
    idx = np.broadcast_to(idx, (1,) + stack.shape[1:])
    return np.take_along_axis(stack, idx, axis=0)[0], valid.any(axis=0)


@dataclass
class S2Granule:
    """One Sentinel-2 L2A item on the output grid: ``bands`` (10, H, W) uint16 raw, ``scl`` (H, W)."""

    id: str
    datetime: _dt.datetime
    bands: np.ndarray
    scl: np.ndarray
    pc_offset: bool = False


@dataclass
class S1Granule:
    """One Sentinel-1 RTC item on the output grid: ``bands`` (2, H, W) VV, VH linear power."""

    id: str
    datetime: _dt.datetime
    orbit_state: str
    bands: np.ndarray


def _by_date(granules: Iterable[Any]) -> dict[_dt.date, list[Any]]:
    out: dict[_dt.date, list[Any]] = {}
    for g in sorted(granules, key=lambda g: (_utc(g.datetime), g.id)):
        out.setdefault(_utc(g.datetime).date(), []).append(g)
    return out


def prepare_s2(
    granules: Sequence[S2Granule],
    shape: tuple[int, int],
    *,
    min_cover: float = MIN_S2_COVER,
    roi: np.ndarray | None = None,
) -> dict[str, Any]:
    """Offset, mask, per-date mosaic and cover filter for Sentinel-2.

    Returns ``bands`` (T, H, W, 10) uint16, ``masks`` (T, H, W) uint8 (1 = clear),
    ``doys`` (T,) uint16, ``dates`` (T,), ``cover`` (T,) and ``dropped``
    (``[(date, cover)]`` of dates under ``min_cover``).  Cover is measured over ``roi``
    (default: the whole grid).
    """
    h, w = shape
    roi = np.ones((h, w), bool) if roi is None else np.asarray(roi, bool)
    n_roi = max(int(roi.sum()), 1)
    bands_out, masks_out, dates, covers, dropped = [], [], [], [], []
    for date, group in _by_date(granules).items():
        stack = np.empty((len(group), h, w, 10), dtype=np.uint16)
        valid = np.empty((len(group), h, w), dtype=bool)
        for i, g in enumerate(group):
            b = np.asarray(g.bands)
            if b.shape != (10, h, w) or np.shape(g.scl) != (h, w):
                raise EncoderError(f"granule {g.id}: bands {b.shape} / SCL {np.shape(g.scl)} do not fit the grid {(h, w)}")
            if g.pc_offset:
                b = remove_pc_offset(b)
            stack[i] = np.moveaxis(b, 0, -1)
            valid[i] = scl_valid(g.scl)
        first = np.argmax(valid, axis=0)
        any_valid = valid.any(axis=0)
        mosaic = stack[0] if len(group) == 1 else np.take_along_axis(stack, first[None, :, :, None], axis=0)[0]
        cover = float((any_valid & roi).sum()) / n_roi
        if cover < min_cover:
            dropped.append((date, cover))
            continue
        bands_out.append(mosaic)
        masks_out.append(any_valid.astype(np.uint8))
        dates.append(date)
        covers.append(cover)
    t = len(dates)
    return {
        "bands": np.stack(bands_out) if t else np.zeros((0, h, w, 10), np.uint16),
        "masks": np.stack(masks_out) if t else np.zeros((0, h, w), np.uint8),
        "doys": np.asarray([day_of_year(d) for d in dates], dtype=np.uint16),
        "dates": np.asarray(dates, dtype="datetime64[D]"),
        "cover": np.asarray(covers, dtype=np.float32),
        "dropped": dropped,
    }


def prepare_s1(granules: Sequence[S1Granule], shape: tuple[int, int]) -> dict[str, Any]:
    """dB scaling, per-date mosaic and the ascending/descending split for Sentinel-1.

    Returns ``{"ascending": (arr (T, H, W, 2) int16, doys (T,), dates (T,)), "descending": ...}``;
    dates without a single valid pixel are left out.
    """
    h, w = shape
    out = {}
    for orbit in ("ascending", "descending"):
        arrs, dates = [], []
        mine = [g for g in granules if str(g.orbit_state).lower() == orbit]
        for date, group in _by_date(mine).items():
            stack = np.empty((len(group), h, w, 2), dtype=np.int16)
            for i, g in enumerate(group):
                b = np.asarray(g.bands)
                if b.shape != (2, h, w):
                    raise EncoderError(f"granule {g.id}: bands {b.shape} do not fit the grid {(2, h, w)}")
                stack[i] = np.moveaxis(s1_to_int16(b), 0, -1)
            valid = (stack != 0).any(axis=-1)
            if not valid.any():
                continue
            first = np.argmax(valid, axis=0)
            mosaic = stack[0] if len(group) == 1 else np.take_along_axis(stack, first[None, :, :, None], axis=0)[0]
            arrs.append(mosaic)
            dates.append(date)
        out[orbit] = (
            np.stack(arrs) if arrs else np.zeros((0, h, w, 2), np.int16),
            np.asarray([day_of_year(d) for d in dates], dtype=np.uint16),
            np.asarray(dates, dtype="datetime64[D]"),
        )
    unknown = {str(g.orbit_state) for g in granules} - {"ascending", "descending"}
    if unknown:
        raise EncoderError(f"Sentinel-1 granules with unknown sat:orbit_state {sorted(unknown)}")
    return out


@dataclass
class Prepared:
    """One area and year of model input: the upstream prepared-data arrays plus the grid.

    Arrays are time-first: ``bands`` (T, H, W, 10) uint16 raw digital numbers in
    :data:`S2_BANDS` order, ``masks`` (T, H, W) uint8 1 = clear, ``doys`` (T,) uint16;
    ``sar_ascending`` / ``sar_descending`` (T, H, W, 2) int16 (0 = missing) with their days.
    ``info`` records items, dropped dates and skipped items; ``timings`` seconds per step.
    """

    bands: np.ndarray
    masks: np.ndarray
    doys: np.ndarray
    dates: np.ndarray
    sar_ascending: np.ndarray
    sar_ascending_doy: np.ndarray
    sar_ascending_dates: np.ndarray
    sar_descending: np.ndarray
    sar_descending_doy: np.ndarray
    sar_descending_dates: np.ndarray
    crs: Any
    transform: Any
    year: int
    info: dict = field(default_factory=dict)
    timings: dict = field(default_factory=dict)

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.masks.shape[1:]) if self.masks.ndim == 3 else tuple(self.sar_ascending.shape[1:3])

    def pixel_arrays(self) -> dict[str, np.ndarray]:
        """Reshaped to pixels ``(T, H*W, ...)`` (views), keyed as ``embed_pixels``' arguments."""
        h, w = self.shape
        n = h * w
        return {
            "s2": self.bands.reshape(self.bands.shape[0], n, 10),
            "s2_doy": self.doys,
            "s2_mask": self.masks.reshape(self.masks.shape[0], n).astype(bool),
            "s1_asc": self.sar_ascending.reshape(self.sar_ascending.shape[0], n, 2),
            "s1_asc_doy": self.sar_ascending_doy,
            "s1_desc": self.sar_descending.reshape(self.sar_descending.shape[0], n, 2),
            "s1_desc_doy": self.sar_descending_doy,
        }

    def coords(self) -> tuple[np.ndarray, np.ndarray]:
        """Pixel-centre ``x`` and ``y`` coordinates of the grid."""
        h, w = self.shape
        t = self.transform
        return t.c + t.a * (np.arange(w) + 0.5), t.f + t.e * (np.arange(h) + 0.5)

    def to_dpixel(self, folder) -> Any:
        """Write the upstream prepared-data folder (``bands.npy``, ``masks.npy``, ... ``roi.tiff``)."""
        from .dpixel import write_dpixel

        return write_dpixel(
            folder, bands=self.bands, masks=self.masks, doys=self.doys, crs=self.crs, transform=self.transform,
            sar_ascending=self.sar_ascending, sar_ascending_doy=self.sar_ascending_doy,
            sar_descending=self.sar_descending, sar_descending_doy=self.sar_descending_doy, year=self.year,
        )

    def __repr__(self) -> str:
        h, w = self.shape
        return (f"Prepared({self.year}, {h}x{w} px, S2 {len(self.doys)} dates, S1 ascending "
                f"{len(self.sar_ascending_doy)} / descending {len(self.sar_descending_doy)} dates)")
