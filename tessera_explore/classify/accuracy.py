"""Design-based accuracy assessment and area estimation of a class map.

``validation_sample`` draws a stratified random sample of pixels from a class map (the
strata are the map's classes); the scientist labels each point with its *reference*
class (by looking at imagery or in the field), and ``area_estimate`` turns the sample
into error-adjusted areas with standard errors and confidence intervals, user's and
producer's accuracies and overall accuracy, following the stratified estimators of

    Olofsson, P., Foody, G. M., Herold, M., Stehman, S. V., Woodcock, C. E., Wulder, M. A.
    (2014).  Good practices for estimating area and assessing accuracy of land change.
    Remote Sensing of Environment 148, 42-57.

Notation (their eqs. 2-10): ``W_i`` the mapped proportion of stratum (map class) ``i``,
``n_i`` its sample size, ``n_ij`` the points of map class ``i`` whose reference class is
``j``.  Estimated proportion of area of class ``j``: ``p_j = sum_i W_i n_ij / n_i``;
area ``A_j = A p_j``; ``SE(p_j) = sqrt(sum_i W_i^2 q_ij (1 - q_ij) / (n_i - 1))`` with
``q_ij = n_ij / n_i``.

Confidence interval.  The usual interval ``A_j +- 1.96 SE`` collapses to a point when
no stratum's sample holds an error for class ``j`` (every ``q_ij`` is 0 or 1), which is
the common case for a good map: with 300 points the true area then lies outside the
"interval" almost every time.  ``interval="wilson"`` (the default) is the MOVER
interval (Zou & Donner 2008, "Construction of confidence limits about effect measures",
Statistics in Medicine 27:1693-1702) for the weighted sum ``sum_i W_i q_ij`` of
independent binomial proportions, built from each stratum's Wilson score interval
``(l_i, u_i)``::

    lower = p_j - sqrt(sum_i W_i^2 (q_ij - l_i)^2)
    upper = p_j + sqrt(sum_i W_i^2 (u_i - q_ij)^2)

A stratum with 0 of ``n_i`` points in class ``j`` still contributes ``u_i = z^2 / (n_i +
z^2)`` (about 3.8 / n_i, the "rule of three"), so the interval keeps a width that
reflects what a sample of that size cannot rule out, and it is asymmetric near 0 and 1.
Where every ``q_ij`` is away from 0 and 1 it is close to the Wald interval.
``interval="jeffreys"`` is the same construction from each stratum's equal-tailed
Jeffreys interval (Brown, Cai & DasGupta 2001, "Interval estimation for a binomial
proportion", Statistical Science 16:101-133): narrower, with a bound at 0 of ``n_i`` of
about 2.5 / n_i, below the exact (Clopper-Pearson) 3.7 / n_i.  ``interval="adjusted"``
(Agresti-Coull: ``z^2`` pseudo-points spread over the classes, in the variance only) is
symmetric.  ``interval="wald"`` gives ``p_j +- z SE`` as in Olofsson et al. (2014).
The default stays Wilson: on synthetic maps (``benchmarks/bench_guided.py``) all three
cover the true areas at about the nominal rate where the map has errors, and Wilson's
bound at zero errors is the one not below the exact one (``docs/design/guided.md``).

The overall accuracy ``OA = sum_i W_i x_i / n_i`` (``x_i`` the points of stratum ``i``
whose reference class is its map class) is the same kind of weighted sum, and its
interval (:attr:`AreaEstimate.overall_ci`) is built the same way from each stratum's
interval for ``x_i / n_i``: a sample without errors (30 points, all correct) gives
``(0.89, 1.00)`` with Wilson, not ``1.00-1.00``.  ``"adjusted"`` uses Agresti-Coull
per stratum; only ``"wald"`` gives ``OA +- z SE``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr

from ..exceptions import ArgumentError, LabelError

__all__ = ["validation_sample", "area_estimate", "AreaEstimate"]

_NODATA = 255
INTERVALS = ("wilson", "jeffreys", "adjusted", "wald")
_MARK = "tessera_validation"


def _class_map(pred: Any) -> tuple[xr.DataArray, list[str]]:
    """The uint8 class DataArray of a prediction, and its class names."""
    if isinstance(pred, xr.Dataset):
        if "class" not in pred.data_vars:
            raise ArgumentError(f"the map has no 'class' variable (it holds {list(pred.data_vars)}); "
                                "pass the result of predict_map")
        da = pred["class"]
    elif isinstance(pred, xr.DataArray):
        da = pred
    else:
        raise ArgumentError(f"pass a class map from predict_map (Dataset or DataArray), got {type(pred).__name__}")
    classes = da.attrs.get("classes") or (pred.attrs.get("classes") if isinstance(pred, xr.Dataset) else None)
    if not classes:
        raise ArgumentError("the class map has no 'classes' attribute naming its values; pass predict_map's result")
    if da.dims != ("y", "x"):
        raise ArgumentError(f"the class map must have dims ('y', 'x'), got {da.dims}")
    return da, [str(c) for c in classes]


def _pixel_area(da: xr.DataArray) -> float:
    """Area of one pixel in m² (the map is on a projected, metric grid such as UTM)."""
    crs = da.rio.crs
    if crs is not None and not crs.is_projected:
        raise ArgumentError(f"the map's CRS {crs} is not projected; areas need a metric grid such as UTM")
    t = da.rio.transform(recalc=True)
    return float(abs(t.a * t.e - t.b * t.d))


def _counts(values: np.ndarray, k: int) -> np.ndarray:
    return np.bincount(values[values < k].astype(np.int64), minlength=k)[:k]


def _allocate(N: np.ndarray, n: int | None, allocation: Any, classes: list[str]) -> np.ndarray:
    """Sample size per stratum (at most the stratum's pixels)."""
    present = N > 0
    if isinstance(allocation, dict):
        unknown = set(allocation) - set(classes)
        if unknown:
            raise ArgumentError(f"allocation names classes that are not in the map: {sorted(unknown)}")
        out = np.array([int(allocation.get(c, 0)) for c in classes])
        if (out < 0).any():
            raise ArgumentError("allocation counts must not be negative")
        if n is not None and int(n) != int(out.sum()):
            raise ArgumentError(f"n={n} but the allocation sums to {int(out.sum())}; pass n=None with a dict")
        return np.minimum(out, N)
    if n is None or int(n) < 1:
        raise ArgumentError(f"n must be a positive number of points, got {n!r}")
    n = int(n)
    k = int(present.sum())
    if k == 0:
        raise ArgumentError("the map has no mapped pixels to sample")
    if allocation == "equal":
        share = np.where(present, n / k, 0.0)
    elif allocation == "proportional":
        share = n * N / N.sum()
    else:
        raise ArgumentError(f"allocation must be 'proportional', 'equal' or a dict {{class: n}}, got {allocation!r}")
    out = np.floor(share).astype(np.int64)
    # largest remainders take the points left over
    rest = n - int(out.sum())
    order = np.argsort(-(share - out), kind="stable")
    out[order[:rest]] += 1
    # every mapped stratum needs two points for a variance: take them from the largest
    floor = np.minimum(N, 2)
    while True:
        short = np.flatnonzero(out < floor)
        if short.size == 0:
            break
        donor = int(np.argmax(out - floor))
        if out[donor] - floor[donor] <= 0:
            break
        out[short[0]] += 1
        out[donor] -= 1
    return np.minimum(out, N)


def validation_sample(pred: Any, n: int | None = None, *, allocation: Any = "proportional", seed: int = 0):
    """Draw a stratified random sample of pixels from a class map, for reference labelling.

    Parameters
    ----------
    pred : the result of :func:`predict_map` (or its ``class`` DataArray).
    n : total number of points (ignored with a dict ``allocation`` unless given, then
        it must match its sum).
    allocation : ``"proportional"`` (points in proportion to each class's mapped area,
        at least 2 per class so every stratum has a variance), ``"equal"`` (the same
        number per class; better user's accuracies for rare classes), or a dict
        ``{class: n_i}`` (e.g. Olofsson et al. 2014's 50-100 for rare classes and the
        rest proportional).
    seed : random seed; the same map, ``n``, allocation and seed give the same points.

    Returns a GeoDataFrame of points (EPSG:4326) at pixel centres with columns
    ``map_class``, ``reference`` (empty: fill it with what you see at each point), ``row``,
    ``col``, ``x``, ``y`` (metres, the map's CRS), ``lon``, ``lat``, and the sampling
    design in ``attrs["tessera_validation"]``.  Pass it back to :func:`area_estimate`.
    """
    import geopandas as gpd
    from pyproj import Transformer

    da, classes = _class_map(pred)
    k = len(classes)
    flat = np.asarray(da.values).ravel()
    N = _counts(flat, k)
    n_i = _allocate(N, n, allocation, classes)
    rng = np.random.default_rng(seed)
    # one stable sort groups pixels by class (faster than one full scan per class)
    order = np.argsort(flat, kind="stable")
    starts = np.concatenate([[0], np.cumsum(N)])
    picks, strata = [], []
    for i in range(k):
        if n_i[i] == 0:
            continue
        members = order[starts[i]:starts[i + 1]]
        picks.append(members[rng.choice(N[i], int(n_i[i]), replace=False)])
        strata.append(np.full(int(n_i[i]), i))
    idx = np.concatenate(picks) if picks else np.zeros(0, np.int64)
    stratum = np.concatenate(strata) if strata else np.zeros(0, np.int64)
    w = da.sizes["x"]
    row, col = idx // w, idx % w
    x = np.asarray(da.x.values)[col]
    y = np.asarray(da.y.values)[row]
    tr = Transformer.from_crs(da.rio.crs, 4326, always_xy=True)
    lon, lat = tr.transform(x, y)
    gdf = gpd.GeoDataFrame(
        {"map_class": [classes[s] for s in stratum], "reference": pd.array([None] * len(idx), dtype="object"),
         "row": row, "col": col, "x": x, "y": y, "lon": lon, "lat": lat},
        geometry=gpd.points_from_xy(lon, lat), crs="EPSG:4326")
    gdf.attrs[_MARK] = {"classes": classes, "mapped_pixels": [int(v) for v in N],
                        "sample_sizes": [int(v) for v in n_i],
                        "allocation": allocation if isinstance(allocation, str) else dict(allocation),
                        "seed": int(seed)}
    return gdf


def _refuse_training(reference: Any, pred: Any) -> None:
    from .labels import LabelStore
    from .models import LabelClassifier
    from .samples import Samples

    if isinstance(reference, (LabelStore, Samples, LabelClassifier)):
        raise LabelError(
            "training labels cannot be the reference for accuracy or area: they were chosen by hand (not a "
            "random sample) and the classifier has seen them, so the estimates would be biased and overconfident. "
            "Draw points with validation_sample(pred, n), label them, and pass those")
    label_file = (pred.attrs.get("label_file") if isinstance(pred, (xr.Dataset, xr.DataArray)) else None) or ""
    if isinstance(reference, (str, os.PathLike)) and label_file and \
            os.path.abspath(os.fspath(reference)) == os.path.abspath(label_file):
        raise LabelError(f"{reference} is the label file the classifier was trained on; training labels cannot "
                         "be the reference. Draw points with validation_sample(pred, n) and label those")


def _read_reference_file(path: str | os.PathLike):
    """A reference file as a (Geo)DataFrame: a validation sample saved by tessera_explore
    (its design kept, so the strata are checked against the map), else any vector file."""
    from ..io import labels as _io

    name = os.path.abspath(os.fspath(path))
    if not os.path.exists(name):
        raise LabelError(f"reference file not found: {name}")
    if os.path.splitext(name)[1].lower() in (".json", ".geojson"):
        try:
            with open(name, "rb") as f:
                data = f.read()
        except OSError as err:
            raise LabelError(f"cannot read reference file {name}: {err}") from err
        if f'"{_MARK}"'.encode() in data:
            return _io.read_validation_sample(name)
    import geopandas as gpd

    try:
        return gpd.read_file(name)
    except Exception as err:  # pyogrio/fiona raise many types
        raise LabelError(f"reference file {name} cannot be read as a vector file: {err}") from err


def _reference_table(reference: Any, column: str) -> tuple[np.ndarray, np.ndarray, list, dict | None]:
    """lon, lat, reference class names, and the sample design if known."""
    if isinstance(reference, (str, os.PathLike)):
        name = os.path.abspath(os.fspath(reference))
        try:
            return _reference_table(_read_reference_file(name), column)
        except ArgumentError as err:
            raise ArgumentError(f"reference file {name}: {err}") from err
    if isinstance(reference, (list, tuple)):
        try:
            lon, lat, ref = (np.asarray(v) for v in zip(*reference, strict=True)) if reference else ([], [], [])
        except (TypeError, ValueError):
            raise ArgumentError("a reference list holds (lon, lat, reference_class) triples") from None
        return np.asarray(lon, float), np.asarray(lat, float), [str(r) for r in ref], None
    if isinstance(reference, pd.DataFrame):
        if column not in reference.columns:
            raise ArgumentError(
                f"the reference table has no column {column!r} (it has {list(reference.columns)}); label each point "
                f"of validation_sample's result in {column!r}, or name the column with column=")
        vals = reference[column]
        missing = vals.isna().to_numpy()
        if missing.any():
            raise ArgumentError(f"{int(missing.sum())} reference points have no {column!r} class yet "
                                f"(rows {np.flatnonzero(missing)[:10].tolist()}...); label them or drop them")
        if "geometry" in reference.columns and hasattr(reference, "crs"):
            g = reference.to_crs(4326) if reference.crs is not None else reference
            lon, lat = g.geometry.x.to_numpy(float), g.geometry.y.to_numpy(float)
        elif {"lon", "lat"} <= set(reference.columns):
            lon, lat = reference["lon"].to_numpy(float), reference["lat"].to_numpy(float)
        else:
            raise ArgumentError("the reference table needs point geometries or lon/lat columns")
        return lon, lat, [str(v) for v in vals], reference.attrs.get(_MARK)
    raise ArgumentError(f"reference must be validation_sample's GeoDataFrame (with {column!r} filled in), a "
                        f"DataFrame with lon/lat, or a list of (lon, lat, class); got {type(reference).__name__}")


def _jeffreys(x: np.ndarray, n: np.ndarray, confidence: float) -> tuple[np.ndarray, np.ndarray]:
    """Equal-tailed Jeffreys interval (Beta(x + 1/2, n - x + 1/2) quantiles), with the
    lower bound 0 at ``x = 0`` and the upper 1 at ``x = n`` (Brown, Cai & DasGupta 2001)."""
    from scipy.stats import beta

    n = np.maximum(n, 1)
    a = (1 - confidence) / 2
    with np.errstate(invalid="ignore"):
        lo = np.where(x > 0, beta.ppf(a, x + 0.5, n - x + 0.5), 0.0)
        hi = np.where(x < n, beta.ppf(1 - a, x + 0.5, n - x + 0.5), 1.0)
    return np.clip(np.nan_to_num(lo), 0, 1), np.clip(np.nan_to_num(hi, nan=1.0), 0, 1)


def _wilson(x: np.ndarray, n: np.ndarray, z: float) -> tuple[np.ndarray, np.ndarray]:
    n = np.maximum(n, 1)
    p = x / n
    den = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / den
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / den
    return np.clip(centre - half, 0, 1), np.clip(centre + half, 0, 1)


@dataclass
class AreaEstimate:
    """Result of :func:`area_estimate`.

    ``table``: one row per class (index: class name) with ``mapped_pixels``,
    ``mapped_m2``/``mapped_ha``, ``n`` (sample points in the class's stratum),
    ``area_m2``/``area_ha`` (error-adjusted estimate), ``area_se_m2``/``area_se_ha``,
    ``area_ci_low_*``/``area_ci_high_*`` (the ``confidence`` interval),
    ``users_accuracy``/``users_se`` and ``producers_accuracy``/``producers_se``.
    ``error_matrix``: sample counts (rows map class, columns reference class);
    ``proportions``: the estimated area proportions ``p_ij`` (Olofsson et al. 2014, eq. 4).
    ``overall_ci``: the ``confidence`` interval of ``overall_accuracy``, from the same
    ``interval`` construction as the areas (it keeps a width when the sample holds no
    error, or no correct point).
    """

    table: pd.DataFrame
    overall_accuracy: float
    overall_se: float
    error_matrix: pd.DataFrame
    proportions: pd.DataFrame
    total_m2: float
    confidence: float
    interval: str
    notes: list = field(default_factory=list)
    #: (low, high) of the overall accuracy; None: ``overall_accuracy +- z overall_se``
    overall_bounds: tuple[float, float] | None = None

    @property
    def overall_ci(self) -> tuple[float, float]:
        """The ``confidence`` interval of the overall accuracy (see the module docstring)."""
        if self.overall_bounds is not None:
            return self.overall_bounds
        from scipy.stats import norm

        z = float(norm.ppf(0.5 + self.confidence / 2))
        return (max(0.0, self.overall_accuracy - z * self.overall_se),
                min(1.0, self.overall_accuracy + z * self.overall_se))

    def __repr__(self) -> str:
        cols = ["mapped_ha", "area_ha", "area_ci_low_ha", "area_ci_high_ha", "users_accuracy", "producers_accuracy"]
        return (f"AreaEstimate(overall accuracy {self.overall_accuracy:.3f} +- {self.overall_se:.3f} (SE), "
                f"{int(self.error_matrix.to_numpy().sum())} reference points, {self.interval} "
                f"{self.confidence:.0%} intervals)\n{self.table[cols].round(3).to_string()}")


def area_estimate(pred: Any, reference: Any, *, column: str = "reference", confidence: float = 0.95,
                  interval: str = "wilson") -> AreaEstimate:
    """Error-adjusted class areas and accuracies from a stratified reference sample.

    Parameters
    ----------
    pred : the class map the sample was drawn from (:func:`predict_map`'s result).
    reference : :func:`validation_sample`'s GeoDataFrame with the ``reference`` column
        filled in (or a file of it), a DataFrame with lon/lat, or a list of ``(lon, lat,
        class)``.  The points must be a stratified random sample of this map with the map
        classes as strata.  Training labels (a LabelStore, Samples, the map's label file)
        are refused: they are not a probability sample and the classifier has seen them.
    column : the reference-class column.
    confidence : level of the area intervals (0.95).
    interval : ``"wilson"`` (default; MOVER-Wilson, stays honest when strata hold no
        errors), ``"jeffreys"`` (MOVER-Jeffreys, narrower), ``"adjusted"``
        (Agresti-Coull, symmetric) or ``"wald"`` (estimate +- z SE, Olofsson et al. 2014,
        which collapses to a point when the sample holds no error for a class).

    Returns an :class:`AreaEstimate`.  Areas are in m² and hectares on the map's grid
    (pixel area from its transform: 100 m² on the 10 m UTM grid).
    """
    from scipy.stats import norm

    if interval not in INTERVALS:
        raise ArgumentError(f"interval must be one of {INTERVALS}, got {interval!r}")
    if not 0 < confidence < 1:
        raise ArgumentError(f"confidence must be between 0 and 1, got {confidence}")
    _refuse_training(reference, pred)
    da, classes = _class_map(pred)
    lon, lat, ref, design = _reference_table(reference, column)
    if len(ref) == 0:
        raise ArgumentError("the reference sample is empty")
    flat = np.asarray(da.values)
    N_map = _counts(flat.ravel(), len(classes))
    if design is not None and design.get("mapped_pixels") is not None and (
            list(design.get("classes", [])) != classes or list(design["mapped_pixels"]) != N_map.tolist()):
        raise ArgumentError("the reference sample was drawn from another map (its strata differ from this map's "
                            "classes and areas); estimate with the map it was drawn from")
    # map class at each point, read from the map itself
    from pyproj import Transformer

    tr = Transformer.from_crs(4326, da.rio.crs, always_xy=True)
    x, y = tr.transform(lon, lat)
    t = da.rio.transform(recalc=True)
    col = np.floor((np.asarray(x) - t.c) / t.a).astype(np.int64)
    row = np.floor((np.asarray(y) - t.f) / t.e).astype(np.int64)
    h, w = flat.shape
    inside = (row >= 0) & (row < h) & (col >= 0) & (col < w)
    if not inside.all():
        raise ArgumentError(f"{int((~inside).sum())} reference points lie outside the map "
                            f"(first: lon {lon[~inside][0]:.6f}, lat {lat[~inside][0]:.6f})")
    mapped = flat[row, col].astype(np.int64)
    if (mapped >= len(classes)).any():
        raise ArgumentError(f"{int((mapped >= len(classes)).sum())} reference points fall on pixels without data "
                            "in the map; they belong to no stratum")
    names = list(classes) + sorted(set(ref) - set(classes))
    K, Km = len(names), len(classes)
    ref_idx = np.array([names.index(r) for r in ref], np.int64)
    counts = np.zeros((Km, K), np.int64)
    np.add.at(counts, (mapped, ref_idx), 1)
    n_i = counts.sum(axis=1)
    strata = N_map > 0
    empty = [classes[i] for i in np.flatnonzero(strata & (n_i == 0))]
    if empty:
        raise ArgumentError(f"map classes {empty} have no reference points; every stratum needs a sample "
                            "(draw with validation_sample)")
    notes = []
    thin = [classes[i] for i in np.flatnonzero(strata & (n_i == 1))]
    if thin:
        notes.append(f"strata {thin} hold one point: their variance is unknown (SE NaN)")
    px_area = _pixel_area(da)
    A_tot = float(N_map.sum()) * px_area
    W = N_map / N_map.sum()
    ni = np.maximum(n_i, 1)[:, None].astype(float)
    q = counts / ni  # q_ij, zero rows for unmapped strata
    P = W[:, None] * q  # p_ij (eq. 4)
    p_j = P.sum(axis=0)  # eq. 9
    with np.errstate(divide="ignore", invalid="ignore"):
        dof = np.where(n_i > 1, n_i - 1, np.nan)[:, None].astype(float)
        var_terms = np.where(strata[:, None], W[:, None] ** 2 * q * (1 - q) / dof, 0.0)  # eq. 10
        se_p = np.sqrt(var_terms.sum(axis=0))
        z = float(norm.ppf(0.5 + confidence / 2))
        if interval == "wald":
            lo_p, hi_p = p_j - z * se_p, p_j + z * se_p
        elif interval == "adjusted":
            # Agresti-Coull for each stratum's multinomial row: z^2 pseudo-points spread
            # evenly over the K reference classes, in the variance only
            nt = n_i[:, None] + z * z
            qt = (counts + z * z / K) / nt
            var_t = np.where(strata[:, None], W[:, None] ** 2 * qt * (1 - qt) / nt, 0.0)
            half = z * np.sqrt(var_t.sum(axis=0))
            lo_p, hi_p = p_j - half, p_j + half
        else:
            if interval == "jeffreys":
                lo_i, hi_i = _jeffreys(counts.astype(float), n_i[:, None].astype(float), confidence)
            else:
                lo_i, hi_i = _wilson(counts.astype(float), n_i[:, None].astype(float), z)
            Wm = np.where(strata, W, 0.0)[:, None]
            lo_p = p_j - np.sqrt((Wm ** 2 * (q - lo_i) ** 2).sum(axis=0))
            hi_p = p_j + np.sqrt((Wm ** 2 * (hi_i - q) ** 2).sum(axis=0))
        lo_p, hi_p = np.clip(lo_p, 0, 1), np.clip(hi_p, 0, 1)
        # user's accuracy (eq. 2) and its variance (eq. 5), per map class
        diag = np.array([counts[i, i] for i in range(Km)], float)
        ua = np.full(K, np.nan)
        ua_se = np.full(K, np.nan)
        ua[:Km] = np.where(n_i > 0, diag / np.maximum(n_i, 1), np.nan)
        ua_se[:Km] = np.sqrt(ua[:Km] * (1 - ua[:Km]) / dof[:, 0])
        # producer's accuracy (eq. 3) and its variance (eq. 6)
        pa = np.full(K, np.nan)
        pa_se = np.full(K, np.nan)
        Nhat = (N_map[:, None] * q).sum(axis=0)  # estimated pixels of each reference class
        for j in range(K):
            if p_j[j] <= 0:
                continue
            pjj = P[j, j] if j < Km else 0.0
            pa[j] = pjj / p_j[j]
            if j < Km:
                t1 = N_map[j] ** 2 * (1 - pa[j]) ** 2 * ua[j] * (1 - ua[j]) / dof[j, 0] if n_i[j] > 0 else 0.0
            else:
                t1 = 0.0
            others = [i for i in range(Km) if i != j and strata[i]]
            t2 = pa[j] ** 2 * sum(N_map[i] ** 2 * q[i, j] * (1 - q[i, j]) / dof[i, 0] for i in others)
            pa_se[j] = np.sqrt((t1 + t2) / Nhat[j] ** 2)
        oa = float((W * np.where(n_i > 0, diag / np.maximum(n_i, 1), 0.0)).sum())  # eq. 1
        oa_se = float(np.sqrt(np.nansum(np.where(strata, W ** 2 * ua[:Km] * (1 - ua[:Km]) / dof[:, 0], 0.0))))
        oa_ci = _overall_interval(diag, n_i, W, strata, oa, oa_se, interval, confidence, z)
    mapped_px = np.zeros(K, np.int64)
    mapped_px[:Km] = N_map
    n_col = np.zeros(K, np.int64)
    n_col[:Km] = n_i
    tab = pd.DataFrame({
        "mapped_pixels": mapped_px,
        "mapped_m2": mapped_px * px_area,
        "mapped_ha": mapped_px * px_area / 1e4,
        "n": n_col,
        "area_m2": p_j * A_tot,
        "area_ha": p_j * A_tot / 1e4,
        "area_se_m2": se_p * A_tot,
        "area_se_ha": se_p * A_tot / 1e4,
        "area_ci_low_m2": lo_p * A_tot,
        "area_ci_high_m2": hi_p * A_tot,
        "area_ci_low_ha": lo_p * A_tot / 1e4,
        "area_ci_high_ha": hi_p * A_tot / 1e4,
        "users_accuracy": ua,
        "users_se": ua_se,
        "producers_accuracy": pa,
        "producers_se": pa_se,
    }, index=pd.Index(names, name="class"))
    em = pd.DataFrame(counts, index=pd.Index(classes, name="map"), columns=pd.Index(names, name="reference"))
    pr = pd.DataFrame(P, index=em.index, columns=em.columns)
    return AreaEstimate(tab, oa, oa_se, em, pr, A_tot, float(confidence), interval, notes, oa_ci)


def _overall_interval(correct: np.ndarray, n_i: np.ndarray, W: np.ndarray, strata: np.ndarray, oa: float,
                      oa_se: float, interval: str, confidence: float, z: float) -> tuple[float, float]:
    """Interval of ``OA = sum_i W_i correct_i / n_i`` by the areas' construction: MOVER
    from each stratum's Wilson or Jeffreys interval, Agresti-Coull per stratum for
    ``"adjusted"``, ``OA +- z SE`` for ``"wald"``."""
    use = strata & (n_i > 0)
    Wm = np.where(use, W, 0.0)
    n = np.maximum(n_i, 1).astype(float)
    q = np.where(use, correct / n, 0.0)
    if interval == "wald":
        lo, hi = oa - z * oa_se, oa + z * oa_se
    elif interval == "adjusted":
        nt = n + z * z
        qt = (correct + z * z / 2) / nt
        half = z * float(np.sqrt((Wm ** 2 * qt * (1 - qt) / nt).sum()))
        lo, hi = oa - half, oa + half
    else:
        if interval == "jeffreys":
            lo_i, hi_i = _jeffreys(correct.astype(float), n, confidence)
        else:
            lo_i, hi_i = _wilson(correct.astype(float), n, z)
        lo = oa - float(np.sqrt((Wm ** 2 * (q - lo_i) ** 2).sum()))
        hi = oa + float(np.sqrt((Wm ** 2 * (hi_i - q) ** 2).sum()))
    return float(np.clip(lo, 0, 1)), float(np.clip(hi, 0, 1))
