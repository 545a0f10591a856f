"""Numpy-only preparation of model input: statistics, time-step rules, batching plans.

Nothing here imports torch, so these helpers work (and are tested) without it.  The
rules are those the published models were trained with (docs/design/encoder.md, "Time
steps"):

* standardisation ``z = (x - mean) / (std + 1e-9)`` on raw digital numbers, with the
  statistics of the model generation (and, for v1.1, of the data source);
* v2 and v1.1 use every valid observation, resampled to a *bucket* length
  (8, 16, ..., 256) by :func:`resample_indices_v2` / :func:`resample_indices_v11`;
* v1.0 draws 40 valid observations per pixel (:func:`draw_v10`), reproducibly from a
  seed, the pixel's index and the draw number, so the result never depends on batching.

Arrays are time-first, as in the upstream prepared-data folder: Sentinel-2 ``(T, N, 10)``
with a ``(T, N)`` clear mask and ``(T,)`` days of year; Sentinel-1 ascending and
descending ``(T, N, 2)`` each with ``(T,)`` days of year.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from ..exceptions import EncoderError

__all__ = [
    "GENERATIONS",
    "N_S2_BANDS",
    "N_S1_BANDS",
    "DATA_SOURCES",
    "BUCKET_STEP",
    "MAX_BUCKET",
    "V10_STEPS",
    "BandStats",
    "band_stats",
    "bucket_length",
    "resample_indices_v2",
    "resample_indices_v11",
    "resample_indices",
    "index_table",
    "distinct_steps",
    "standardise",
    "draw_v10",
    "PixelInputs",
]

GENERATIONS = ("v1.0", "v1.1", "v2")
DATA_SOURCES = ("mpc", "aws")
BUCKET_STEP = 8
MAX_BUCKET = 256
V10_STEPS = 40
#: Channels per observation (Sentinel-2 bands, Sentinel-1 VV/VH).  The band *names*, in the
#: model's order, are :data:`tessera_explore.encoder.granules.S2_BANDS` / ``S1_BANDS``.
N_S2_BANDS = 10
N_S1_BANDS = 2
DOY_MIN, DOY_MAX = 1, 366
_EPS = np.float32(1e-9)


def _f32(*values: float) -> np.ndarray:
    return np.asarray(values, dtype=np.float32)


@dataclass(frozen=True)
class BandStats:
    """Standardisation statistics of one generation (and data source)."""

    s2_mean: np.ndarray
    s2_std: np.ndarray
    s1a_mean: np.ndarray
    s1a_std: np.ndarray
    s1d_mean: np.ndarray
    s1d_std: np.ndarray


_V10_S1 = (_f32(5484.0407, 3003.7812), _f32(1871.2334, 1726.0670))
_STATS: dict[tuple[str, str | None], BandStats] = {
    ("v1.0", None): BandStats(
        _f32(1711.0938, 1308.8511, 1546.4543, 3010.1293, 3106.5083, 2068.3044, 2685.0845, 2931.5889, 2514.6928, 1899.4922),
        _f32(1926.1026, 1862.9751, 1803.1792, 1741.7837, 1677.4543, 1888.7862, 1736.3090, 1715.8104, 1514.5199, 1398.4779),
        *_V10_S1,
        *_V10_S1,
    ),
    ("v2", None): BandStats(
        _f32(1633.0042, 1341.1090, 1539.5536, 3054.8269, 3117.4658, 2004.1648, 2694.7275, 2945.1504, 2266.6079, 1657.3094),
        _f32(1999.4603, 2014.7549, 1929.2201, 1754.2493, 1649.9807, 1936.8988, 1748.6041, 1708.6991, 1207.5250, 1108.6046),
        _f32(5909.3921, 3405.0322),
        _f32(1507.1750, 1531.2615),
        _f32(5816.1382, 3277.7576),
        _f32(1554.6475, 1546.4733),
    ),
    ("v1.1", "mpc"): BandStats(
        _f32(2683.4553, 2223.3630, 2432.0950, 3633.1970, 3602.1755, 3006.4324, 3400.2710, 3515.6392, 2456.9163, 1983.8783),
        _f32(2739.5217, 2846.2993, 2690.8250, 2290.0439, 2088.8970, 2673.1106, 2381.4521, 2229.5225, 1601.0942, 1495.3545),
        _f32(5588.3291, 3025.6270),
        _f32(1713.4646, 1693.0471),
        _f32(5552.9683, 2955.0520),
        _f32(1685.5857, 1677.6414),
    ),
    ("v1.1", "aws"): BandStats(
        _f32(2793.6589, 2356.7776, 2551.0496, 3741.9229, 3713.7844, 3120.1997, 3516.3342, 3637.0342, 2501.0283, 2038.1504),
        _f32(2810.0093, 2933.8835, 2755.6360, 2344.5027, 2145.7986, 2743.9019, 2438.8601, 2286.5977, 1680.7367, 1585.5529),
        _f32(5697.0859, 2838.6687),
        _f32(1671.3737, 1789.4116),
        _f32(5759.1367, 2873.2854),
        _f32(1583.2858, 1747.8390),
    ),
}


def _check_generation(generation: str) -> str:
    if generation not in GENERATIONS:
        raise EncoderError(f"unknown model generation {generation!r}; expected one of {GENERATIONS}")
    return generation


def band_stats(generation: str, data_source: str | None = None) -> BandStats:
    """Standardisation statistics for ``generation`` (v1.1 also needs ``data_source``)."""
    _check_generation(generation)
    if generation == "v1.1":
        if data_source not in DATA_SOURCES:
            raise EncoderError(
                "v1.1 is trained per data source: pass data_source='mpc' (Planetary Computer) "
                f"or 'aws' (Earth Search), got {data_source!r}"
            )
        return _STATS[("v1.1", data_source)]
    return _STATS[(generation, None)]


def bucket_length(n) -> np.ndarray | int:
    """Sequence length for ``n`` valid observations: the smallest multiple of 8 >= n, in 8..256.

    ``n = 0`` gives 8 (a modality without observations is fed all-zero rows; with all
    rows equal its pooled vector does not depend on the length).
    """
    arr = np.asarray(n, dtype=np.int64)
    out = np.clip(-(-arr // BUCKET_STEP) * BUCKET_STEP, BUCKET_STEP, MAX_BUCKET)
    return int(out) if out.ndim == 0 else out


def resample_indices_v2(n: int, length: int) -> np.ndarray:
    """v2 rule: indices into ``0..n-1`` (the valid observations in order) of length ``length``.

    ``n >= length``: ``linspace(0, n-1, length)`` truncated to integers.  ``n < length``:
    all ``n`` then ``length - n`` more: when ``length - n <= n`` the middle element of each
    of ``length - n`` near-equal consecutive groups of ``0..n-1``, otherwise ``i mod n``.
    """
    n, length = int(n), int(length)
    if n <= 0:
        raise EncoderError("resampling needs at least one valid observation")
    if n >= length:
        return np.linspace(0, n - 1, length).astype(np.int64)
    extra = length - n
    base = np.arange(n, dtype=np.int64)
    if extra <= n:
        groups = np.array_split(base, extra)
        more = np.array([g[len(g) // 2] for g in groups], dtype=np.int64)
    else:
        more = np.arange(extra, dtype=np.int64) % n
    return np.concatenate([base, more])


def resample_indices_v11(n: int, length: int) -> np.ndarray:
    """v1.1 rule: indices into ``0..n-1`` of length ``length``.

    ``n > length``: the middle element of each of ``length`` near-equal consecutive groups
    (``array_split``); ``n == length``: all; ``n < length``: all ``n`` then
    ``rint(linspace(0, n-1, length-n+2)[1:-1])`` (evenly spaced repeats).
    """
    n, length = int(n), int(length)
    if n <= 0:
        raise EncoderError("resampling needs at least one valid observation")
    base = np.arange(n, dtype=np.int64)
    if n > length:
        return np.array([g[len(g) // 2] for g in np.array_split(base, length)], dtype=np.int64)
    if n == length:
        return base
    more = np.rint(np.linspace(0, n - 1, length - n + 2)[1:-1]).astype(np.int64)
    return np.concatenate([base, more])


def resample_indices(generation: str, n: int) -> np.ndarray:
    """Indices (into the ``n`` valid observations) that the generation feeds the model."""
    _check_generation(generation)
    if generation == "v1.0":
        raise EncoderError("v1.0 draws its time steps at random: use draw_v10")
    length = bucket_length(n)
    rule = resample_indices_v2 if generation == "v2" else resample_indices_v11
    return rule(n, length)


@lru_cache(maxsize=256)
def index_table(generation: str, length: int, n_max: int) -> np.ndarray:
    """Table ``(n_max + 1, length)``: row ``n`` holds the resampling indices for ``n`` valid
    observations (row 0 and rows whose bucket is not ``length`` are zeros).  Read-only."""
    table = np.zeros((n_max + 1, length), dtype=np.int64)
    rule = resample_indices_v2 if generation == "v2" else resample_indices_v11
    for n in range(1, n_max + 1):
        if bucket_length(n) == length:
            table[n] = rule(n, length)
    table.setflags(write=False)
    return table


@lru_cache(maxsize=512)
def distinct_steps(n: int) -> tuple[np.ndarray, np.ndarray | None]:
    """v2: the distinct positions (into the ``n`` valid observations) of the resampled
    sequence and the log of how often each occurs (``None`` when each occurs once).

    A v2 sequence of ``n < bucket`` observations repeats some of them to fill the bucket;
    attention pooling without positions makes the embedding a function of the distinct
    steps and their counts (see :meth:`~tessera_explore.encoder.model.ModalityEncoder.forward`).
    Read-only arrays.
    """
    n = int(n)
    idx = resample_indices_v2(n, bucket_length(n))
    steps, counts = np.unique(idx, return_counts=True)
    steps.setflags(write=False)
    if (counts == 1).all():
        return steps, None
    log_counts = np.log(counts).astype(np.float32)
    log_counts.setflags(write=False)
    return steps, log_counts


def standardise(x: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    """``(x - mean) / (std + 1e-9)`` in float32 (the reference's arithmetic)."""
    return (np.asarray(x, dtype=np.float32) - mean) / (std + _EPS)


# --- reproducible per-pixel randomness (counter-based, independent of batching) -------
_M1 = np.uint64(0x9E3779B97F4A7C15)
_M2 = np.uint64(0xBF58476D1CE4E5B9)
_M3 = np.uint64(0x94D049BB133111EB)


def _mix(h: np.ndarray) -> np.ndarray:
    h = (h ^ (h >> np.uint64(30))) * _M2
    h = (h ^ (h >> np.uint64(27))) * _M3
    return h ^ (h >> np.uint64(31))


def _uniform(seed: int, stream: int, pixel_ids: np.ndarray, count: int) -> np.ndarray:
    """Uniform [0, 1) numbers ``(len(pixel_ids), count)`` keyed by (seed, stream, pixel, j)."""
    with np.errstate(over="ignore"):
        key = _mix(np.uint64(seed & 0xFFFFFFFFFFFFFFFF) * _M1 + np.uint64(stream & 0xFFFFFFFF) + _M3)
        pix = _mix(np.asarray(pixel_ids, dtype=np.int64).view(np.uint64)[:, None] * _M1 ^ key)
        h = _mix(pix + np.arange(count, dtype=np.uint64)[None, :] * _M2)
    return (h >> np.uint64(11)).astype(np.float64) * (1.0 / 9007199254740992.0)


def draw_v10(
    mask: np.ndarray,
    doy: np.ndarray,
    pixel_ids: np.ndarray,
    *,
    seed: int = 0,
    stream: int = 0,
    steps: int = V10_STEPS,
) -> np.ndarray:
    """v1.0 time steps: per pixel ``steps`` time indices drawn from its valid ones, sorted by day.

    ``mask`` is ``(N, T)`` (True = valid).  With at least ``steps`` valid observations the
    draw is without replacement, with fewer it is with replacement, and a pixel with none
    valid draws from all ``T`` (as the reference does).  The draw is a pure function of
    ``(seed, stream, pixel_ids)``: the same pixel gets the same steps in any batch.
    Returns ``(N, steps)`` int64 indices into ``0..T-1`` (``T`` must be > 0).
    """
    mask = np.asarray(mask, dtype=bool)
    n_pix, t = mask.shape
    if t == 0:
        raise EncoderError("draw_v10 needs at least one time step")
    mask = mask.copy()
    n = mask.sum(axis=1)
    mask[n == 0] = True
    n = mask.sum(axis=1)
    u = _uniform(seed, 2 * stream, pixel_ids, t)
    # without replacement: the valid steps with the smallest random keys
    keys = np.where(mask, u, 2.0)
    if t >= steps:
        chosen = np.argpartition(keys, steps - 1, axis=1)[:, :steps]
    else:
        chosen = np.zeros((n_pix, steps), dtype=np.int64)
    # with replacement where fewer than `steps` are valid
    few = n < steps
    if few.any():
        order = np.argsort(~mask[few], axis=1, kind="stable")  # valid positions first, in order
        v = _uniform(seed, 2 * stream + 1, np.asarray(pixel_ids)[few], steps)
        k = np.minimum((v * n[few][:, None]).astype(np.int64), n[few][:, None] - 1)
        chosen[few] = np.take_along_axis(order, k, axis=1)
    doy = np.asarray(doy, dtype=np.int64)
    sort_key = doy[chosen] * (t + 1) + chosen
    return np.take_along_axis(chosen, np.argsort(sort_key, axis=1, kind="stable"), axis=1)


# --- inputs, checks and batches ------------------------------------------------------


def _doys(name: str, doy, length: int) -> np.ndarray:
    if doy is None:
        doy = np.zeros((0,), dtype=np.int64)
    arr = np.asarray(doy)
    if arr.ndim != 1 or arr.shape[0] != length:
        raise EncoderError(f"{name} must have shape ({length},) (one day of year per date), got {arr.shape}")
    if arr.size and not np.issubdtype(arr.dtype, np.integer):
        if not np.all(np.isfinite(arr)) or np.any(arr != np.round(arr)):
            raise EncoderError(f"{name} must hold whole days of year")
    arr = arr.astype(np.int64)
    bad = (arr < DOY_MIN) | (arr > DOY_MAX)
    if bad.any():
        raise EncoderError(
            f"{name} has days of year outside {DOY_MIN}..{DOY_MAX}: {np.unique(arr[bad])[:10].tolist()} "
            "(the model takes the raw day of year, not a date or an index)"
        )
    return arr


def _series(name: str, x, bands: int, n_pixels: int | None) -> np.ndarray:
    arr = np.asarray(x) if not isinstance(x, np.memmap) else x
    if arr.ndim != 3:
        raise EncoderError(f"{name} must be (T, N, {bands}) (time, pixel, band), got shape {arr.shape}")
    if arr.shape[-1] != bands:
        raise EncoderError(f"{name} must have {bands} bands in its last axis, got {arr.shape[-1]}")
    if n_pixels is not None and arr.shape[1] != n_pixels:
        raise EncoderError(f"{name} has {arr.shape[1]} pixels, expected {n_pixels}")
    return arr


def _runs(key: np.ndarray, idx: np.ndarray) -> list[tuple[int, np.ndarray]]:
    """``idx`` grouped by equal ``key`` (ascending keys; order kept within a group)."""
    order = np.argsort(key, kind="stable")
    key, idx = key[order], idx[order]
    starts = np.flatnonzero(np.r_[True, key[1:] != key[:-1]]) if key.size else np.zeros(0, np.int64)
    ends = np.r_[starts[1:], key.size]
    return [(int(key[a]), idx[a:b]) for a, b in zip(starts, ends)]


class PixelInputs:
    """Raw per-pixel time series, checked, with the plans and batches the encoder needs.

    Parameters follow :func:`tessera_explore.encoder.embed_pixels`.  Arrays are kept as
    given (memory maps stay memory maps); only the pixels of one batch are gathered,
    standardised and converted to float32 at a time.
    """

    def __init__(self, s2, s2_doy, s2_mask, s1_asc=None, s1_asc_doy=None, s1_desc=None, s1_desc_doy=None):
        if s2 is None:
            raise EncoderError("s2 is required (pass an array of shape (0, N, 10) for no Sentinel-2 dates)")
        self.s2 = _series("s2", s2, N_S2_BANDS, None)
        t2, n = self.s2.shape[:2]
        self.n_pixels = n
        mask = np.asarray(s2_mask)
        if mask.shape != (t2, n):
            raise EncoderError(f"s2_mask must have shape {(t2, n)} (time, pixel), got {mask.shape}")
        self.s2_mask = mask.astype(bool, copy=False)
        self.s2_doy = _doys("s2_doy", s2_doy, t2)
        empty = np.zeros((0, n, N_S1_BANDS), dtype=np.int16)
        self.s1_asc = _series("s1_asc", empty if s1_asc is None else s1_asc, N_S1_BANDS, n)
        self.s1_desc = _series("s1_desc", empty if s1_desc is None else s1_desc, N_S1_BANDS, n)
        self.s1_asc_doy = _doys("s1_asc_doy", s1_asc_doy, self.s1_asc.shape[0])
        self.s1_desc_doy = _doys("s1_desc_doy", s1_desc_doy, self.s1_desc.shape[0])
        for name, arr, valid in (("s2", self.s2, self.s2_mask), ("s1_asc", self.s1_asc, None), ("s1_desc", self.s1_desc, None)):
            if np.issubdtype(arr.dtype, np.floating) and arr.size:
                bad = ~np.isfinite(arr).all(axis=-1)
                if valid is not None:
                    bad &= valid
                if bad.any():
                    raise EncoderError(f"{name} has NaN or infinite values in observations marked valid")
        self.s1_valid = np.concatenate(
            [np.any(np.asarray(self.s1_asc) != 0, axis=-1), np.any(np.asarray(self.s1_desc) != 0, axis=-1)], axis=0
        )  # (T1, N); decided on raw values, before standardising
        self.s1_doy = np.concatenate([self.s1_asc_doy, self.s1_desc_doy])
        self.n_s2 = self.s2_mask.sum(axis=0).astype(np.int64)
        self.n_s1 = self.s1_valid.sum(axis=0).astype(np.int64)

    @property
    def t_s2(self) -> int:
        return self.s2.shape[0]

    @property
    def t_s1(self) -> int:
        return self.s1_valid.shape[0]

    def has_data(self) -> np.ndarray:
        """True for pixels with at least one valid observation in either modality."""
        return (self.n_s2 > 0) | (self.n_s1 > 0)

    def plan(self, generation: str, pixels: np.ndarray | None = None) -> list[tuple[int, int, np.ndarray]]:
        """Groups ``(s2_length, s1_length, pixel indices)`` of pixels batched together.

        Only pixels with data (and, if given, in ``pixels``) are planned; v1.0 has one group.
        """
        _check_generation(generation)
        idx = self.with_data(pixels)
        if generation == "v1.0":
            return [(V10_STEPS, V10_STEPS, idx)] if idx.size else []
        key = bucket_length(self.n_s2[idx]) * (MAX_BUCKET + 1) + bucket_length(self.n_s1[idx])
        return [(k // (MAX_BUCKET + 1), k % (MAX_BUCKET + 1), g) for k, g in _runs(key, idx)]

    def with_data(self, pixels: np.ndarray | None) -> np.ndarray:
        """Indices of the pixels with data (among ``pixels`` when given), ascending."""
        take = self.has_data()
        if pixels is not None:
            sel = np.zeros(self.n_pixels, dtype=bool)
            sel[pixels] = True
            take &= sel
        return np.flatnonzero(take)

    # -- batches --------------------------------------------------------------------
    def _gather(self, raw_by_t, mean_by_t, std_by_t, doy_by_t, tidx, pix, empty):
        """Rows ``raw[tidx[p, j], pix[p]]`` standardised, with the day of year appended."""
        nb, length = tidx.shape
        channels = mean_by_t.shape[-1]
        out = np.zeros((nb, length, channels + 1), dtype=np.float32)
        full = ~empty
        if full.any():
            ti = tidx[full]
            vals = raw_by_t(ti, pix[full])
            out[full, :, :channels] = (vals.astype(np.float32) - mean_by_t[ti]) / (std_by_t[ti] + _EPS)
            out[full, :, channels] = doy_by_t[ti]
        return out

    def _s2_raw(self, ti, pix):
        return np.asarray(self.s2[ti, pix[:, None]])

    def _s1_raw(self, ti, pix):
        ta = self.s1_asc.shape[0]
        out = np.empty(ti.shape + (N_S1_BANDS,), dtype=np.float32)
        is_a = ti < ta
        pp = np.broadcast_to(pix[:, None], ti.shape)
        if is_a.any():
            out[is_a] = self.s1_asc[ti[is_a], pp[is_a]]
        if (~is_a).any():
            out[~is_a] = self.s1_desc[ti[~is_a] - ta, pp[~is_a]]
        return out

    def _stats_by_t(self, stats: BandStats):
        ta, td = self.s1_asc.shape[0], self.s1_desc.shape[0]
        s2m = np.broadcast_to(stats.s2_mean, (max(self.t_s2, 1), N_S2_BANDS))
        s2s = np.broadcast_to(stats.s2_std, (max(self.t_s2, 1), N_S2_BANDS))
        s1m = np.concatenate([np.tile(stats.s1a_mean, (ta, 1)), np.tile(stats.s1d_mean, (td, 1))]).reshape(-1, N_S1_BANDS)
        s1s = np.concatenate([np.tile(stats.s1a_std, (ta, 1)), np.tile(stats.s1d_std, (td, 1))]).reshape(-1, N_S1_BANDS)
        return s2m, s2s, s1m, s1s

    def _resampled(self, generation, mask_nt, n, length):
        """Time indices ``(nb, length)`` from the valid steps of each pixel (bucket rules)."""
        nb = mask_nt.shape[0]
        if mask_nt.shape[1] == 0:
            return np.zeros((nb, length), dtype=np.int64)
        order = np.argsort(~mask_nt, axis=1, kind="stable")  # valid steps first, in time order
        table = index_table(generation, length, max(int(n.max()), 1))
        return np.take_along_axis(order, table[n], axis=1)

    def series_plan(self, pixels: np.ndarray | None = None) -> tuple[np.ndarray, list[tuple[str, int, np.ndarray]]]:
        """v2's plan by sensor: the pixels with data, and groups ``(sensor, n, pixels)`` of
        pixels with exactly ``n >= 1`` valid observations of ``sensor`` (``"s2"`` or ``"s1"``).

        Each sensor's series is encoded on its own, from its distinct steps
        (:func:`distinct_steps`), so pixels are grouped by their exact count rather than by
        bucket: nothing is computed twice for a repeated step.
        """
        rows = self.with_data(pixels)
        groups = []
        for sensor, counts in (("s2", self.n_s2), ("s1", self.n_s1)):
            idx = rows[counts[rows] > 0]
            groups.extend((sensor, n, g) for n, g in _runs(counts[idx], idx))
        return rows, groups

    def series_batch(self, sensor: str, pix: np.ndarray, n: int, *, data_source: str | None = None) -> np.ndarray:
        """v2 model input of one sensor for pixels ``pix`` that all have ``n`` valid
        observations of it: ``(nb, k, C + 1)`` with the ``k`` distinct steps of
        :func:`distinct_steps` (standardised bands, then the day of year)."""
        stats = band_stats("v2", data_source)
        s2m, s2s, s1m, s1s = self._stats_by_t(stats)
        pix = np.asarray(pix, dtype=np.int64)
        valid = (self.s2_mask if sensor == "s2" else self.s1_valid)[:, pix].T
        counts = (self.n_s2 if sensor == "s2" else self.n_s1)[pix]
        if n < 1 or (counts != n).any():
            raise EncoderError(f"series_batch: every pixel must have exactly n={n} >= 1 valid {sensor} observations")
        steps, _ = distinct_steps(n)
        order = np.argsort(~valid, axis=1, kind="stable")[:, :n]  # valid steps first, in time order
        tidx = order[:, steps]
        empty = np.zeros(pix.size, dtype=bool)
        if sensor == "s2":
            return self._gather(self._s2_raw, s2m, s2s, self.s2_doy, tidx, pix, empty)
        return self._gather(self._s1_raw, s1m, s1s, self.s1_doy, tidx, pix, empty)

    def batch(
        self,
        generation: str,
        pix: np.ndarray,
        s2_length: int,
        s1_length: int,
        *,
        data_source: str | None = None,
        seed: int = 0,
        draw: int = 0,
        pixel_ids: np.ndarray | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Model input for pixels ``pix``: S2 ``(nb, s2_length, 11)`` and S1 ``(nb, s1_length, 3)``.

        A modality without valid observations gets all-zero rows (day 0).  v1.0 draws
        (``seed``, ``draw``) are keyed by ``pixel_ids`` (default ``pix``).
        """
        stats = band_stats(generation, data_source)
        s2m, s2s, s1m, s1s = self._stats_by_t(stats)
        pix = np.asarray(pix, dtype=np.int64)
        mask2 = self.s2_mask[:, pix].T
        mask1 = self.s1_valid[:, pix].T
        n2, n1 = self.n_s2[pix], self.n_s1[pix]
        if generation == "v1.0":
            empty2 = np.full(pix.size, self.t_s2 == 0)
            empty1 = np.full(pix.size, self.t_s1 == 0)
            # "none valid means all count" for a modality with dates; one with no date at all is zeros
            ids = pix if pixel_ids is None else np.asarray(pixel_ids, dtype=np.int64)
            t2 = draw_v10(mask2, self.s2_doy, ids, seed=seed, stream=2 * draw) if self.t_s2 else None
            t1 = draw_v10(mask1, self.s1_doy, ids, seed=seed, stream=2 * draw + 1) if self.t_s1 else None
            t2 = np.zeros((pix.size, s2_length), np.int64) if t2 is None else t2
            t1 = np.zeros((pix.size, s1_length), np.int64) if t1 is None else t1
        else:
            empty2, empty1 = n2 == 0, n1 == 0
            t2 = self._resampled(generation, mask2, n2, s2_length)
            t1 = self._resampled(generation, mask1, n1, s1_length)
        s2_x = self._gather(self._s2_raw, s2m, s2s, self.s2_doy, t2, pix, empty2)
        s1_x = self._gather(self._s1_raw, s1m, s1s, self.s1_doy, t1, pix, empty1)
        return s2_x, s1_x


_RENAMED = {"S2_BANDS": "N_S2_BANDS", "S1_BANDS": "N_S1_BANDS"}


def __getattr__(name: str):
    """``S2_BANDS`` / ``S1_BANDS`` here were counts; they are now ``N_S2_BANDS`` /
    ``N_S1_BANDS`` (the names ``S2_BANDS`` / ``S1_BANDS`` mean band names, in
    :mod:`~tessera_explore.encoder.granules`).  The old names still work, with a warning."""
    new = _RENAMED.get(name)
    if new is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import warnings

    warnings.warn(f"encoder.preprocess.{name} is renamed {new} (S2_BANDS/S1_BANDS name the bands, in "
                  "encoder.granules)", DeprecationWarning, stacklevel=2)
    return globals()[new]
