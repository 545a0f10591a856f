"""Spatially stratified pixel samples, read from the int8 codes.

The area is cut into a regular grid of small cells (about ``area / n`` pixels each) and
one pixel *with data* is drawn at random from every cell.  The sample therefore covers
the whole area evenly (no clumps, no holes), and water or other gaps do not waste
draws.  Cells never straddle a reading block, so each block is read once, and the
draw in a cell depends only on ``random_state`` and the block's position: the same
seed gives the same sample whatever else happens.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import xarray as xr

from ..exceptions import ArgumentError, ArgumentTypeError

__all__ = ["PixelSample", "stratified_sample", "cell_shape", "seed_of"]

#: Reading block side (pixels) aimed for; the real one is a multiple of the cell shape.
_BLOCK = 512


@dataclass
class PixelSample:
    """Pixels drawn from an embeddings array, kept quantised.

    ``codes`` int8 ``(n, 128)``, ``scales`` float32 ``(n,)`` (all valid), and the
    pixels' ``rows``/``cols`` in the array.  For arrays that do not come from tiles
    (float embeddings) ``floats`` holds the exact values and the codes are their
    quantisation.
    """

    codes: np.ndarray
    scales: np.ndarray
    rows: np.ndarray
    cols: np.ndarray
    floats: np.ndarray | None = None

    def __len__(self) -> int:
        return int(self.scales.shape[0])

    def values(self) -> np.ndarray:
        """Float32 embeddings ``(n, 128)`` (dequantised codes, or the exact floats)."""
        if self.floats is not None:
            return self.floats.copy()
        out = self.codes.astype(np.float32)
        out *= self.scales[:, None]
        return out


def seed_of(random_state) -> int:
    """A concrete integer seed from ``None`` / int / ``numpy.random.Generator``."""
    if random_state is None:
        return int(np.random.SeedSequence().entropy % (2**63))
    if isinstance(random_state, (int, np.integer)):
        return int(random_state)
    if isinstance(random_state, np.random.Generator):
        return int(random_state.integers(0, 2**63))
    if isinstance(random_state, np.random.RandomState):
        return int(random_state.randint(0, 2**31 - 1))
    raise ArgumentTypeError(f"random_state must be None, an int or a numpy Generator, got {type(random_state).__name__}")


def cell_shape(height: int, width: int, n: int) -> tuple[int, int]:
    """Integer cell (rows, cols) so that the area holds about ``n`` cells."""
    if n <= 0:
        raise ArgumentError(f"sample size must be positive, got {n}")
    a = height * width / n
    if a <= 1:
        return 1, 1
    cy = max(1, int(round(math.sqrt(a))))
    cx = max(1, int(round(a / cy)))
    if math.lcm(cy, cx) > 2 * _BLOCK:
        cx = cy
    return cy, cx


def _block_side(cy: int, cx: int) -> int:
    step = math.lcm(cy, cx)
    return step * max(1, _BLOCK // step)


def _draw_in_cells(valid: np.ndarray, cy: int, cx: int, rng: np.random.Generator):
    """(rows, cols) within a block of one random valid pixel per cell."""
    h, w = valid.shape
    nh, nw = -(-h // cy), -(-w // cx)
    keys = np.full((nh * cy, nw * cx), -1.0, dtype=np.float32)
    k = rng.random((h, w), dtype=np.float32)
    k[~valid] = -1.0
    keys[:h, :w] = k
    cells = keys.reshape(nh, cy, nw, cx).transpose(0, 2, 1, 3).reshape(nh, nw, cy * cx)
    best = cells.argmax(axis=2)
    ok = np.take_along_axis(cells, best[..., None], axis=2)[..., 0] >= 0
    ii, jj = np.nonzero(ok)
    b = best[ii, jj]
    return ii * cy + b // cx, jj * cx + b % cx


def stratified_sample(da: xr.DataArray, n: int, *, random_state=None) -> PixelSample:
    """Draw about ``n`` valid pixels of ``da``, one per grid cell, as int8 codes.

    Areas with fewer than ``n`` pixels give every valid pixel.  Where part of the area
    has no data the sample is smaller than ``n`` (the cells there are empty).
    """
    from ..io.codes import codes_window, iter_blocks
    from ..io.quant import quantize

    seed = seed_of(random_state)
    H, W = da.sizes["y"], da.sizes["x"]
    cy, cx = cell_shape(H, W, int(n))
    quantized = codes_window(da) is not None
    codes, scales, rows, cols, floats = [], [], [], [], []
    for rs, cs, q, s in iter_blocks(da, block=_block_side(cy, cx), quantized=quantized):
        valid = (np.isfinite(s) & (s != 0)) if quantized else np.isfinite(q).all(axis=-1)
        if not valid.any():
            continue
        if cy == cx == 1:
            r, c = np.nonzero(valid)
        else:
            rng = np.random.default_rng([seed, rs.start, cs.start])
            r, c = _draw_in_cells(valid, cy, cx, rng)
        if quantized:
            codes.append(q[r, c])
            scales.append(s[r, c].astype(np.float32))
        else:
            f = q[r, c].astype(np.float32)
            qq, ss = quantize(f)
            floats.append(f)
            codes.append(qq)
            scales.append(ss)
        rows.append(r + rs.start)
        cols.append(c + cs.start)
    if not codes:
        return PixelSample(np.empty((0, 128), np.int8), np.empty(0, np.float32),
                           np.empty(0, np.int64), np.empty(0, np.int64))
    return PixelSample(np.concatenate(codes), np.concatenate(scales),
                       np.concatenate(rows).astype(np.int64), np.concatenate(cols).astype(np.int64),
                       np.concatenate(floats) if floats else None)
