"""A seeded synthetic landscape, defined everywhere on Earth by lon/lat.

The scene is a pure function of (lon, lat, year, seed): tiles cut from it join
without seams, whichever UTM grid they are sampled on.  It looks like farmland:

* fields: Voronoi parcels (about 250 m across) with sharp edges, each one crop per
  year (cereal, maize, rapeseed) with rotation between years, or permanent grassland;
* forest: irregular blobs at the kilometre scale;
* water: lakes and a meandering river (no data in the embeddings, 0 in the landmask);
* built-up: parcels around town centres that grow a little each year.

Every class has its own distribution in the 128-d embedding space (a centroid,
per-parcel offsets, smooth texture, and pixel noise), so few-shot labels separate
them well but not trivially.
"""

from __future__ import annotations

import numpy as np

from ..exceptions import ArgumentError

__all__ = ["CLASSES", "CLASS_COLORS", "scene_classes", "scene_embeddings", "lonlat_to_metres"]

#: Land-cover classes of the synthetic scene (index -> name).
CLASSES = ("water", "built-up", "forest", "grassland", "cereal", "maize", "rapeseed")
CLASS_COLORS = ("#3b78c2", "#c24a3b", "#1f6b2e", "#8fcf5a", "#e3c75a", "#f08c2e", "#d6e34a")
WATER, BUILT, FOREST, GRASS, CEREAL, MAIZE, RAPE = range(len(CLASSES))

_R = 6_371_000.0
_PARCEL = 250.0  # metres between parcel seeds
_BASE_YEAR = 2017
_M1 = np.uint64(0x9E3779B97F4A7C15)
_M2 = np.uint64(0xBF58476D1CE4E5B9)
_M3 = np.uint64(0x94D049BB133111EB)
# difficulty (see scene_embeddings); calibrated so that at difficulty 1 a kNN on uniformly
# random labels needs more than 150 labels for 90 % accuracy on a full tile
_CROP_PULL = 0.37  # fraction of the way the crop centroids move towards their mean
_PARCEL_SPREAD = 0.24  # extra per-parcel offset (x difficulty), on top of 0.30
_NOISE_GAIN = 0.55  # extra pixel noise (x difficulty), relative
_EDGE_REACH = 12.0  # metres (x difficulty): jitter that finds a neighbouring class at edges
_EDGE_MIX = (0.15, 0.45)  # share of the neighbouring class in a mixed edge pixel


def _mix(h: np.ndarray) -> np.ndarray:
    """splitmix64 finaliser (uint64 -> uint64), vectorised."""
    with np.errstate(over="ignore"):
        h = (h ^ (h >> np.uint64(30))) * _M2
        h = (h ^ (h >> np.uint64(27))) * _M3
        return h ^ (h >> np.uint64(31))


def _hash(*keys, seed: int = 0) -> np.ndarray:
    """Hash integer arrays (broadcast together) and a seed to uint64."""
    with np.errstate(over="ignore"):
        h = np.uint64(seed & 0xFFFFFFFFFFFFFFFF) * _M1 + np.uint64(0x632BE59BD9B4E019)
        for k in keys:
            k = np.asarray(k).astype(np.int64).view(np.uint64)
            h = _mix(h ^ (k + _M1))
        return h


def _uniform(h: np.ndarray) -> np.ndarray:
    return (h >> np.uint64(11)).astype(np.float64) * (1.0 / 9007199254740992.0)


def _normal(*keys, seed: int = 0) -> np.ndarray:
    """Standard normal draws keyed by integer arrays (Box-Muller on two hashes)."""
    h = _hash(*keys, seed=seed)
    u1 = _uniform(h)
    u2 = _uniform(_mix(h ^ _M3))
    return np.sqrt(-2.0 * np.log1p(-u1)) * np.cos(2 * np.pi * u2)


def lonlat_to_metres(lon: np.ndarray, lat: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sinusoidal-projection metres: continuous everywhere, so the scene has no seams."""
    lat_r = np.radians(lat)
    return _R * np.radians(lon) * np.cos(lat_r), _R * lat_r


def _value_noise(u: np.ndarray, v: np.ndarray, scale: float, seed: int) -> np.ndarray:
    """Smooth lattice value noise in [0, 1] with feature size ``scale`` metres."""
    gu, gv = u / scale, v / scale
    i, j = np.floor(gu), np.floor(gv)
    fu, fv = gu - i, gv - j
    fu = fu * fu * (3 - 2 * fu)
    fv = fv * fv * (3 - 2 * fv)
    i, j = i.astype(np.int64), j.astype(np.int64)
    c00 = _uniform(_hash(i, j, seed=seed))
    c10 = _uniform(_hash(i + 1, j, seed=seed))
    c01 = _uniform(_hash(i, j + 1, seed=seed))
    c11 = _uniform(_hash(i + 1, j + 1, seed=seed))
    return (c00 * (1 - fu) + c10 * fu) * (1 - fv) + (c01 * (1 - fu) + c11 * fu) * fv


def _fbm(u, v, scale, seed, octaves=3):
    out = np.zeros_like(u)
    amp, tot = 1.0, 0.0
    for o in range(octaves):
        out += amp * _value_noise(u, v, scale / 2**o, seed + 101 * o)
        tot += amp
        amp *= 0.5
    return out / tot


def _parcels(u: np.ndarray, v: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Voronoi parcel of each point: (cell i, cell j, seed-point u, seed-point v)."""
    ci, cj = np.floor(u / _PARCEL).astype(np.int64), np.floor(v / _PARCEL).astype(np.int64)
    best = np.full(u.shape, np.inf)
    bi, bj = ci.copy(), cj.copy()
    bu, bv = np.zeros_like(u), np.zeros_like(v)
    for di in (-1, 0, 1):
        for dj in (-1, 0, 1):
            ii, jj = ci + di, cj + dj
            h = _hash(ii, jj, seed=seed + 7)
            su = (ii + 0.1 + 0.8 * _uniform(h)) * _PARCEL
            sv = (jj + 0.1 + 0.8 * _uniform(_mix(h ^ _M2))) * _PARCEL
            d = (u - su) ** 2 + (v - sv) ** 2
            better = d < best
            best = np.where(better, d, best)
            bi = np.where(better, ii, bi)
            bj = np.where(better, jj, bj)
            bu = np.where(better, su, bu)
            bv = np.where(better, sv, bv)
    return bi, bj, bu, bv


def _classes_uv(u, v, year, seed):
    pi, pj, pu, pv = _parcels(u, v, seed)
    cls = np.empty(u.shape, dtype=np.int8)
    # fields: permanent grassland or a crop that rotates year by year
    perm = _uniform(_hash(pi, pj, seed=seed + 11))
    crop = (_hash(pi, pj, int(year), seed=seed + 13) % np.uint64(3)).astype(np.int8) + CEREAL
    cls[:] = np.where(perm < 0.3, GRASS, crop)
    # towns grow parcel by parcel, a little each year
    town = _fbm(pu, pv, 5000.0, seed + 3, octaves=2)
    grow = 0.004 * max(0, int(year) - _BASE_YEAR)
    cls[town > 0.74 - grow] = BUILT
    # forest: irregular blobs, fine edges
    forest = _fbm(u, v, 2500.0, seed + 2, octaves=4)
    cls[forest > 0.64] = FOREST
    # water: lakes and a river
    lake = _fbm(u, v, 3000.0, seed + 1, octaves=3)
    river = np.abs(_fbm(u, v, 7000.0, seed + 5, octaves=3) - 0.5)
    cls[(lake > 0.74) | (river < 0.008)] = WATER
    return cls, pi, pj


def scene_classes(lon, lat, year: int, *, seed: int = 0) -> np.ndarray:
    """True land-cover class index (see :data:`CLASSES`) at lon/lat points."""
    u, v = lonlat_to_metres(np.asarray(lon, float), np.asarray(lat, float))
    return _classes_uv(u, v, year, seed)[0]


class _Palette:
    """Class centroids and mixing directions, fixed by the seed (not by position)."""

    def __init__(self, seed: int, n_bands: int = 128, difficulty: float = 0.0):
        rng = np.random.default_rng([seed, 20250608])
        k = len(CLASSES)
        self.centroids = rng.normal(0.0, 1.0, (k, n_bands)).astype(np.float32)
        self.centroids[CEREAL:] = 0.55 * self.centroids[CEREAL:] + 0.45 * self.centroids[GRASS]
        if difficulty:
            # crops whose distributions overlap: pull the crop centroids towards their mean
            a = np.float32(min(1.0, _CROP_PULL * difficulty))
            crops = self.centroids[CEREAL:]
            self.centroids[CEREAL:] = (1 - a) * crops + a * crops.mean(axis=0)
        self.magnitude = rng.uniform(0.8, 1.3, k).astype(np.float32)
        self.texture = (0.45 * rng.normal(0, 1, (3, n_bands))).astype(np.float32)
        self.noise = (0.35 / np.sqrt(8) * rng.normal(0, 1, (8, n_bands))).astype(np.float32)
        self.n_bands = n_bands


def _matmul_exact(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``a @ b`` for a few columns of ``a``, summed in a fixed order per row.

    BLAS may block a product differently for different row counts, which changes the
    last bit of a float32 sum; a pixel must get the same value whichever batch it is
    computed in (NPY tiles and Zarr stores of one scene are compared bit for bit).
    """
    out = a[:, :1] * b[0]
    for k in range(1, a.shape[1]):
        out += a[:, k : k + 1] * b[k]
    return out


def scene_embeddings(
    lon: np.ndarray,
    lat: np.ndarray,
    year: int,
    *,
    seed: int = 0,
    pixel_keys: tuple[np.ndarray, np.ndarray] | None = None,
    n_bands: int = 128,
    difficulty: float = 0.0,
) -> tuple[np.ndarray, np.ndarray]:
    """Embeddings (N, 128) float32 and classes (N,) at lon/lat points.

    ``pixel_keys`` (two integer arrays) key the per-pixel noise, so that the same
    grid pixel gets the same noise in every tile that holds it.  Water rows are NaN.

    ``difficulty`` (0 = the scene as it always was, bit for bit; 1 = about as hard as
    real land cover) adds, in proportion:

    * overlapping crops: the cereal, maize and rapeseed centroids move ``0.37 d`` of the
      way towards their mean;
    * within-class variation: per-parcel offsets grow from 0.30 to ``0.30 + 0.24 d`` and
      pixel noise by a factor ``1 + 0.55 d``;
    * mixed pixels along parcel and patch edges: each pixel looks ``12 d`` metres away
      (a jitter keyed by the pixel); where that point is of another land class, the pixel
      becomes a mixture with 15-45 % of that class's centroid.

    The class returned (and :func:`scene_classes`) stays the class at the pixel centre,
    which is also the majority of every mixed pixel.
    """
    lon = np.asarray(lon, float).ravel()
    lat = np.asarray(lat, float).ravel()
    u, v = lonlat_to_metres(lon, lat)
    cls, pi, pj = _classes_uv(u, v, year, seed)
    d = float(difficulty)
    if d < 0:
        raise ArgumentError(f"difficulty must be >= 0, got {difficulty}")
    pal = _Palette(seed, n_bands, d)
    emb = pal.centroids[cls]
    # per-parcel offset (fields and built-up) or per-region offset (forest)
    key_i = np.where(cls == FOREST, np.floor(u / 1500).astype(np.int64), pi)
    key_j = np.where(cls == FOREST, np.floor(v / 1500).astype(np.int64), pj)
    keys = (key_i * 1_000_003 + key_j) * 16 + cls
    uniq, inv = np.unique(keys, return_inverse=True)
    bands = np.arange(n_bands)
    off = _normal(uniq[:, None], bands[None, :], 17, seed=seed).astype(np.float32)
    yr = _normal(uniq[:, None], bands[None, :], int(year), seed=seed + 19).astype(np.float32)
    if d:
        emb = emb + np.float32(0.30 + _PARCEL_SPREAD * d) * off[inv] + 0.12 * yr[inv]
    else:
        emb = emb + 0.30 * off[inv] + 0.12 * yr[inv]
    # smooth texture within classes
    tex = np.stack([_value_noise(u, v, 120.0, seed + 31 + t) - 0.5 for t in range(3)], axis=1).astype(np.float32)
    emb += _matmul_exact(tex, pal.texture)
    # pixel noise, keyed by the grid pixel and year
    if pixel_keys is None:
        pk = (np.round(u / 10).astype(np.int64), np.round(v / 10).astype(np.int64))
    else:
        pk = (np.asarray(pixel_keys[0]).ravel(), np.asarray(pixel_keys[1]).ravel())
    z = np.stack([_normal(pk[0], pk[1], int(year), c, seed=seed + 41) for c in range(8)], axis=1).astype(np.float32)
    if d:
        z *= np.float32(1.0 + _NOISE_GAIN * d)
    emb += _matmul_exact(z, pal.noise)
    emb *= pal.magnitude[cls][:, None]
    if d:
        _mix_edges(emb, cls, u, v, pk, year, seed, d, pal)
    emb[cls == WATER] = np.nan
    return emb.astype(np.float32, copy=False), cls


def _mix_edges(emb, cls, u, v, pk, year, seed, d, pal) -> None:
    """Mixed pixels along parcel and patch edges (in place): see :func:`scene_embeddings`."""
    reach = _EDGE_REACH * d
    du = reach * _normal(pk[0], pk[1], int(year), 1, seed=seed + 53)
    dv = reach * _normal(pk[0], pk[1], int(year), 2, seed=seed + 53)
    other = _classes_uv(u + du, v + dv, year, seed)[0]
    edge = (other != cls) & (other != WATER) & (cls != WATER)
    if not edge.any():
        return
    lo, hi = _EDGE_MIX
    m = (lo + (hi - lo) * _uniform(_hash(pk[0][edge], pk[1][edge], int(year), seed=seed + 59))).astype(np.float32)
    o = other[edge]
    emb[edge] = (1 - m)[:, None] * emb[edge] + m[:, None] * (pal.centroids[o] * pal.magnitude[o][:, None])
