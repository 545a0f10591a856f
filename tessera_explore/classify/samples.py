"""``sample_labels``: the embeddings under labels, with a report of what was left out.

Points take the pixel that contains them (or a ``kernel x kernel`` window around it);
polygons take every pixel whose centre lies inside (the pixel under the centroid when
the polygon is smaller than a pixel).  Labels are converted from lon/lat to the area's
CRS once.  Labels outside the area, on no-data pixels, or sharing a pixel with another
label are listed in :attr:`Samples.skipped` (and in a warning), never dropped silently.

Stored vectors: a label may keep its training pixels in the label file
(:class:`~tessera_explore.io.labels.LabelSample`, taken by :func:`label_sample`).
:func:`sample_labels` uses them for labels outside the area or on no data there, and
:func:`samples_from_labels` trains from them alone, with no area.  The rules
(``docs/design/classify.md``, "Labels carry their vectors"): a stored sample of another
dataset version or variant than the embeddings is refused (VersionMismatchError, as
labels drawn on another dataset are); one of another year or depth is skipped and
reported (a classifier trains on one year's embeddings: the label year); the area's own
pixels win wherever the area has data under a label.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..exceptions import ArgumentError, LabelError, VersionMismatchError
from .area import PreparedArea, grid_of

__all__ = ["Samples", "sample_labels", "samples_from_labels", "label_sample", "as_labels", "MAX_PER_LABEL"]

#: Pixels a polygon's stored sample keeps at most (a seeded random choice), as many as
#: the explorer trains on per label.
MAX_PER_LABEL = 200


@dataclass
class _Labels:
    """Labels normalised for sampling: ids, classes, lon/lat geometries, provenance."""

    ids: list
    classes: list  # class name per label
    geoms: list
    colors: dict  # class -> colour (every class, in order)
    meta: dict = field(default_factory=dict)
    samples: list | None = None  # stored LabelSample (or None) per label


def as_labels(labels: Any) -> _Labels:
    """Accept a LabelStore, a label file path, a GeoDataFrame, GeoJSON dict, or a list
    of ``(lon, lat, class)``."""
    from ..io import labels as lio
    from .labels import LabelStore

    if isinstance(labels, _Labels):
        return labels
    if isinstance(labels, LabelStore):
        labs = labels.labels
        meta = {"dataset_version": labels.dataset_version, "dataset_variant": getattr(labels, "dataset_variant", None),
                "year": labels.year, "label_file": labels.path}
        return _Labels([l.id for l in labs], [l.cls for l in labs], [l.geometry for l in labs],
                       labels.classes, meta, [getattr(l, "sample", None) for l in labs])
    if isinstance(labels, (list, tuple)):
        import shapely.geometry

        ids, cls, geoms, colors = [], [], [], {}
        for i, item in enumerate(labels):
            try:
                lon, lat, name = item
            except (TypeError, ValueError):
                raise LabelError(f"label {i}: expected (lon, lat, class), got {item!r}") from None
            if not isinstance(name, str) or not name:
                raise LabelError(f"label {i}: class must be a non-empty string, got {name!r}")
            g = lio.check_geometry(shapely.geometry.Point(float(lon), float(lat)), f"label {i}")
            ids.append(i)
            cls.append(name)
            geoms.append(g)
            colors.setdefault(name, None)
        return _Labels(ids, cls, geoms, colors, {})
    if isinstance(labels, (str, os.PathLike, dict)) or hasattr(labels, "geometry"):
        ls = lio.read_labels(labels)
        ids = [r.id if r.id is not None else i for i, r in enumerate(ls.records)]
        meta = {k: ls.meta.get(k) for k in ("dataset_version", "dataset_variant", "year")}
        meta["label_file"] = ls.meta.get("path")
        return _Labels(ids, [r.cls for r in ls.records], [r.geometry for r in ls.records], ls.classes, meta,
                       [r.sample for r in ls.records])
    raise LabelError(
        f"cannot use {type(labels).__name__} as labels: pass a LabelStore, a label file, a GeoDataFrame, "
        "a GeoJSON dict or a list of (lon, lat, class)"
    )


@dataclass
class Samples:
    """Features and targets sampled under labels.

    ``X`` float32 ``(n, 128)`` dequantised embeddings; ``y`` class names ``(n,)``;
    ``label_id`` the label each sample came from (a polygon or a kernel window gives many
    samples of one label: keep them together when splitting); ``rows``/``cols`` pixel
    indices (-1 for samples taken from a label's stored vectors, which have no pixel in the
    area: see :attr:`in_area`); ``xy`` pixel centres in the area's CRS (for stored vectors:
    the label's point or centroid, in the area's CRS, or in ``meta["crs"]`` without an
    area); ``skipped`` one dict per label left out (``id``, ``class``, ``reason``).
    Samples come in label order.  Unpacks as ``X, y = sample_labels(...)``.
    """

    X: np.ndarray
    y: np.ndarray
    label_id: np.ndarray
    rows: np.ndarray
    cols: np.ndarray
    xy: np.ndarray
    skipped: list
    classes: list
    colors: dict
    meta: dict

    def __iter__(self) -> Iterator:
        return iter((self.X, self.y))

    @property
    def in_area(self) -> np.ndarray:
        """True for samples read from the area's pixels (``rows``/``cols`` index them);
        False for those taken from labels' stored vectors."""
        return (np.asarray(self.rows) >= 0) & (np.asarray(self.cols) >= 0)

    def thin(self, max_per_label: int, *, seed: int = 0) -> Samples:
        """At most ``max_per_label`` samples of each label (a random, seeded choice among a
        polygon's pixels; points and small windows are kept whole), in the original order."""
        import dataclasses

        n = int(max_per_label)
        if n < 1:
            raise ArgumentError(f"max_per_label must be at least 1, got {max_per_label}")
        ids, counts = np.unique(self.label_id, return_counts=True)
        if counts.size == 0 or counts.max() <= n:
            return self
        rng = np.random.default_rng(seed)
        keep = np.ones(len(self.y), bool)
        for lid in ids[counts > n]:
            idx = np.flatnonzero(self.label_id == lid)
            drop = rng.choice(idx, idx.size - n, replace=False)
            keep[drop] = False
        return dataclasses.replace(self, X=self.X[keep], y=self.y[keep], label_id=self.label_id[keep],
                                   rows=self.rows[keep], cols=self.cols[keep], xy=self.xy[keep],
                                   meta={**self.meta, "max_per_label": n})

    def __len__(self) -> int:
        return len(self.y)

    def __repr__(self) -> str:
        counts = {c: int((self.y == c).sum()) for c in self.classes}
        return f"Samples({len(self)} pixels from {len(np.unique(self.label_id))} labels; {counts}; " \
               f"{len(self.skipped)} labels skipped)"


def _check_version(area: Any, meta: dict) -> None:
    """Refuse labels drawn on another dataset (generation, and variant when recorded)."""
    from .. import _schema

    v = meta.get("dataset_version")
    attrs = area.attrs if isinstance(area, PreparedArea) else grid_of(area).attrs
    if not v or not attrs.get("dataset_version"):
        return
    drawn = {"dataset_version": str(v), "dataset_variant": meta.get("dataset_variant") or "unknown"}
    if not _schema.same_dataset(drawn, attrs):
        raise VersionMismatchError(
            f"the labels were drawn on dataset {_schema.describe_dataset(drawn)!r} but the embeddings are "
            f"{_schema.describe_dataset(attrs)!r}; embeddings of different datasets live in unrelated feature spaces"
        )


def _pixels_of(grid, labs: _Labels, kernel: int):
    """Candidate pixels per label: list of (label index, rows, cols) and skip reasons."""
    import shapely

    h, w = grid.shape
    half = kernel // 2
    out, skipped = [], []
    pts = [i for i, g in enumerate(labs.geoms) if g.geom_type == "Point"]
    if pts:
        lon = np.array([labs.geoms[i].x for i in pts])
        lat = np.array([labs.geoms[i].y for i in pts])
        r, c = grid.lonlat_to_rowcol(lon, lat)
        for i, rr, cc in zip(pts, r, c):
            if not (0 <= rr < h and 0 <= cc < w):
                skipped.append((i, "outside the area"))
                continue
            if kernel == 1:
                out.append((i, np.array([rr]), np.array([cc])))
            else:
                dr, dc = np.meshgrid(np.arange(-half, half + 1), np.arange(-half, half + 1), indexing="ij")
                wr, wc = (rr + dr).ravel(), (cc + dc).ravel()
                keep = (wr >= 0) & (wr < h) & (wc >= 0) & (wc < w)
                # the clicked pixel first: it decides whether the label is on data
                order = np.argsort((wr[keep] != rr) | (wc[keep] != cc), kind="stable")
                out.append((i, wr[keep][order], wc[keep][order]))
    for i, g in enumerate(labs.geoms):
        if g.geom_type == "Point":
            continue

        def fwd(xy, _g=grid):
            x, y = _g.lonlat_to_xy(xy[:, 0], xy[:, 1])
            return np.column_stack([x, y])

        pg = shapely.transform(g, fwd)
        x0, y0, x1, y1 = pg.bounds
        (ra, rb), (ca, cb) = grid.xy_to_rowcol(np.array([x0, x1]), np.array([y1, y0]))
        ra, rb = max(int(ra), 0), min(int(rb), h - 1)
        ca, cb = max(int(ca), 0), min(int(cb), w - 1)
        if ra > rb or ca > cb:
            skipped.append((i, "outside the area"))
            continue
        rr, cc = np.meshgrid(np.arange(ra, rb + 1), np.arange(ca, cb + 1), indexing="ij")
        rr, cc = rr.ravel(), cc.ravel()
        inside = shapely.contains_xy(pg, grid.x[cc], grid.y[rr])
        if not inside.any():
            cr, ccol = grid.xy_to_rowcol(np.array([pg.centroid.x]), np.array([pg.centroid.y]))
            if not (0 <= cr[0] < h and 0 <= ccol[0] < w):
                skipped.append((i, "outside the area"))
                continue
            out.append((i, cr, ccol))
        else:
            out.append((i, rr[inside], cc[inside]))
    return out, skipped


def _n_bands(area: Any) -> int:
    if isinstance(area, PreparedArea):
        return int(area.codes.shape[1])
    return int(area.sizes["band"])


def read_pixels(area: Any, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """Float32 embeddings (m, bands) at pixel indices, NaN rows for no data and for
    pixels outside the area (such as the -1 of samples taken from stored vectors)."""
    from .area import auto_prepared

    rows, cols = np.asarray(rows, np.int64), np.asarray(cols, np.int64)
    h, w = area.shape if isinstance(area, PreparedArea) else (area.sizes["y"], area.sizes["x"])
    inside = (rows >= 0) & (rows < h) & (cols >= 0) & (cols < w)
    if not inside.all():
        X = np.full((len(rows), _n_bands(area)), np.nan, np.float32)
        if inside.any():
            X[inside] = read_pixels(area, rows[inside], cols[inside])
        return X
    area = auto_prepared(area) or area
    if isinstance(area, PreparedArea):
        idx = rows * area.shape[1] + cols
        X = area.codes[idx].astype(np.float32) * area.scales[idx, None]
        X[~area.valid[idx]] = np.nan
        return X
    import xarray as xr

    if len(rows) == 0:
        return np.empty((0, int(area.sizes["band"])), np.float32)
    # one rectangular read when the pixels are close together, point-wise otherwise
    ra, rb, ca, cb = rows.min(), rows.max() + 1, cols.min(), cols.max() + 1
    if (rb - ra) * (cb - ca) <= max(4 * len(rows), 65536):
        win = np.asarray(area.isel(y=slice(ra, rb), x=slice(ca, cb)).values, np.float32)
        return np.ascontiguousarray(win[:, rows - ra, cols - ca].T)
    sel = area.isel(y=xr.DataArray(rows, dims="p"), x=xr.DataArray(cols, dims="p"))
    return np.ascontiguousarray(np.asarray(sel.transpose("p", "band").values, np.float32))


def _stored_features(sample: Any, *, year: int | None, bands: int | None, kernel: int | None,
                     is_point: bool) -> tuple[np.ndarray | None, str]:
    """Features from a label's stored sample, or None and why it cannot serve."""
    if sample is None:
        return None, "no stored vectors"
    if year is not None and sample.year != int(year):
        return None, f"its stored vectors are of {sample.year}, the embeddings of {int(year)}"
    if bands is not None and sample.bands != int(bands):
        return None, f"its stored vectors have {sample.bands} bands, the embeddings {int(bands)}"
    X = sample.features()
    if is_point and kernel is not None and sample.kernel != int(kernel):
        if int(kernel) != 1:
            return None, (f"its stored vectors are a {sample.kernel} x {sample.kernel} window, "
                          f"a {int(kernel)} x {int(kernel)} one is asked for")
        X = X[:1]  # a stored window starts with the pixel under the point
    return X, ""


def _refuse_other_dataset(attrs: dict, labs: _Labels, what: str) -> None:
    """VersionMismatchError when a stored sample is of another dataset than ``attrs``."""
    from .. import _schema

    if not attrs.get("dataset_version") or not labs.samples:
        return
    other = [(labs.ids[i], s) for i, s in enumerate(labs.samples)
             if s is not None and not _schema.same_dataset(s.attrs, attrs)]
    if other:
        lid, s = other[0]
        raise VersionMismatchError(
            f"{len(other)} labels keep vectors of dataset {_schema.describe_dataset(s.attrs)!r} (label {lid} first) "
            f"but {what} {_schema.describe_dataset(attrs)!r}; embeddings of different datasets live in unrelated "
            "feature spaces")


def _anchor(geom: Any) -> tuple[float, float]:
    """A label's place: the point, or a polygon's representative point."""
    g = geom if geom.geom_type == "Point" else geom.representative_point()
    return float(g.x), float(g.y)


def _report(sk: list, n: int, warn: bool) -> None:
    if sk and warn:
        reasons = "; ".join(f"label {s['id']} ({s['class']}): {s['reason']}" for s in sk[:5])
        warnings.warn(f"{len(sk)} of {n} labels were left out: {reasons}"
                      + (" ..." if len(sk) > 5 else "") + " (see Samples.skipped)", UserWarning, stacklevel=3)


def _none_left(sk: list, n: int) -> LabelError:
    reasons = "; ".join(f"label {s['id']} ({s['class']}): {s['reason']}" for s in sk[:5])
    return LabelError(f"none of the {n} labels gives a sample: {reasons}" + (" ..." if len(sk) > 5 else ""))


def _assemble(labs: _Labels, parts: list, skipped: list, meta: dict) -> Samples:
    """Samples from ``(label index, X, rows, cols, xy)`` parts, in label order."""
    parts = sorted(parts, key=lambda p: p[0])
    li = np.concatenate([np.full(len(p[1]), p[0]) for p in parts])
    y = np.array([labs.classes[i] for i in li], dtype=object)
    used = [c for c in labs.colors if (y == c).any()]
    used += sorted(set(y.tolist()) - set(used))
    sk = [{"id": labs.ids[i], "class": labs.classes[i], "reason": why} for i, why in skipped]
    return Samples(
        X=np.ascontiguousarray(np.concatenate([p[1] for p in parts]), np.float32), y=y,
        label_id=np.array([labs.ids[i] for i in li]),
        rows=np.concatenate([p[2] for p in parts]).astype(np.int64),
        cols=np.concatenate([p[3] for p in parts]).astype(np.int64),
        xy=np.concatenate([p[4] for p in parts]).astype(np.float64).reshape(-1, 2), skipped=sk,
        classes=used, colors={c: labs.colors.get(c) for c in used}, meta=meta,
    )


def sample_labels(da: Any, labels: Any, *, kernel: int = 1, warn: bool = True, stored: bool = True) -> Samples:
    """Embeddings under labels: features ``X`` and class names ``y``.

    Parameters
    ----------
    da : embeddings DataArray or :class:`PreparedArea`.
    labels : a :class:`LabelStore`, a label file (GeoJSON, upstream JSON, CSV, vector),
        a GeoDataFrame, a GeoJSON dict, or a list of ``(lon, lat, class)``.
    kernel : odd window side for points: 1 takes the pixel under the point, 3 a 3 x 3
        window (9 samples of the one label; no-data pixels of the window are left out).
    warn : warn when labels are skipped (they are listed in ``Samples.skipped`` anyway).
    stored : use a label's stored vectors (:func:`label_sample`) where the area gives it
        no sample (outside the area, or no data there); they must be of the area's year
        and depth (others are skipped and reported) and dataset (else
        VersionMismatchError).  Those samples have ``rows``/``cols`` -1.

    Raises LabelError when no label gives a sample, VersionMismatchError when the labels
    (or their stored vectors) were drawn on another dataset version.
    """
    kernel = int(kernel)
    if kernel < 1 or kernel % 2 == 0:
        raise LabelError(f"kernel must be a positive odd number of pixels, got {kernel}")
    labs = as_labels(labels)
    if not labs.ids:
        raise LabelError("there are no labels to sample")
    _check_version(da, labs.meta)
    if stored:
        attrs = da.attrs if isinstance(da, PreparedArea) else grid_of(da).attrs
        _refuse_other_dataset(attrs, labs, "the embeddings are")
    grid = grid_of(da)
    cand, skipped = _pixels_of(grid, labs, kernel)
    # read every candidate pixel at once
    if cand:
        all_r = np.concatenate([c[1] for c in cand])
        all_c = np.concatenate([c[2] for c in cand])
        X = read_pixels(da, all_r, all_c)
    else:
        all_r = all_c = np.empty(0, np.int64)
        X = np.empty((0, _n_bands(da)), np.float32)
    ok = ~np.isnan(X).any(axis=1)
    keep_idx, lab_of = [], []
    pos = 0
    owner: dict[tuple[int, int], int] = {}  # pixel -> label index (points only)
    conflicts: set[int] = set()
    for i, rr, cc in cand:
        n = len(rr)
        sl = np.arange(pos, pos + n)
        pos += n
        is_point = labs.geoms[i].geom_type == "Point"
        if is_point and not ok[sl[0]]:
            skipped.append((i, "on a no-data pixel (water or missing embedding)"))
            continue
        sl = sl[ok[sl]]
        if len(sl) == 0:
            skipped.append((i, "covers only no-data pixels"))
            continue
        if is_point:
            key = (int(rr[0]), int(cc[0]))
            j = owner.get(key)
            if j is not None:
                if labs.classes[j] == labs.classes[i]:
                    skipped.append((i, f"same pixel as label {labs.ids[j]} (duplicate)"))
                else:
                    skipped.append((i, f"same pixel as label {labs.ids[j]} of another class "
                                       f"({labs.classes[j]!r}); both left out"))
                    conflicts.add(j)
                continue
            owner[key] = i
        keep_idx.append(sl)
        lab_of.append(i)
    if conflicts:
        for j in conflicts:
            skipped.append((j, "shares its pixel with a label of another class; left out"))
        pairs = [(s, l) for s, l in zip(keep_idx, lab_of) if l not in conflicts]
        keep_idx = [p[0] for p in pairs]
        lab_of = [p[1] for p in pairs]
    parts = [(i, X[sl], all_r[sl], all_c[sl], np.column_stack([grid.x[all_c[sl]], grid.y[all_r[sl]]]))
             for sl, i in zip(keep_idx, lab_of)]
    n_stored = 0
    if stored and labs.samples:
        # labels the area gives nothing (outside it, or no data under them): their stored vectors
        rest = []
        for i, why in skipped:
            if i in conflicts or why.startswith("same pixel") or labs.samples[i] is None:
                rest.append((i, why))
                continue
            Xs, whynot = _stored_features(labs.samples[i], year=grid.year, bands=_n_bands(da), kernel=kernel,
                                          is_point=labs.geoms[i].geom_type == "Point")
            if Xs is None:
                rest.append((i, f"{why}; {whynot}"))
                continue
            x, y = grid.lonlat_to_xy(*_anchor(labs.geoms[i]))
            m = len(Xs)
            parts.append((i, Xs, np.full(m, -1), np.full(m, -1), np.tile([float(x), float(y)], (m, 1))))
            n_stored += 1
        skipped = rest
    if not parts:
        raise _none_left([{"id": labs.ids[i], "class": labs.classes[i], "reason": why} for i, why in skipped],
                         len(labs.ids))
    out = _assemble(labs, parts, skipped, dict(labs.meta))
    if n_stored:
        out.meta["stored_labels"] = n_stored
    _report(out.skipped, len(labs.ids), warn)
    return out


def samples_from_labels(labels: Any, *, year: int | None = None, dataset_version: str | None = None,
                        variant: str | None = None, depth: int | None = None, kernel: int | None = None,
                        warn: bool = True) -> Samples:
    """Training samples from the labels' stored vectors alone: no area is read.

    Parameters
    ----------
    labels : a :class:`LabelStore` or a label file (anything :func:`sample_labels` takes);
        labels without stored vectors are skipped and reported.
    year : the embeddings year to train on; default the labels' year (the year they were
        drawn on), else the one year of every stored sample.  Samples of other years are
        skipped and reported.
    dataset_version, variant : the dataset to train on (default the labels'); stored
        vectors of another dataset raise VersionMismatchError.
    depth : bands (128, or a nested-depth prefix); default the one depth of the samples.
        Samples of another depth are skipped and reported.
    kernel : for point labels: None takes each stored window as it is; 1 takes the pixel
        under each point; another size takes samples stored with that window only.
    warn : warn when labels are skipped.

    ``rows``/``cols`` are -1 (no area); ``xy`` holds each label's place in one UTM CRS
    (``meta["crs"]``, the zone of the first label used), for spatial cross-validation.
    Raises LabelError when no label has usable vectors.
    """
    from .. import _schema
    from ..io.grid import utm_epsg

    labs = as_labels(labels)
    if not labs.ids:
        raise LabelError("there are no labels to sample")
    stored = [s for s in (labs.samples or []) if s is not None]
    if not stored:
        raise LabelError(f"none of the {len(labs.ids)} labels keeps its embedding vectors; open an area under them "
                         "and use sample_labels, or store vectors with label_sample when adding labels")
    meta = dict(labs.meta)
    version = dataset_version or meta.get("dataset_version")
    if version:
        variant = variant or (meta.get("dataset_variant") if not dataset_version else None)
    else:
        version, variant = stored[0].dataset_version, variant or stored[0].dataset_variant
    attrs = {"dataset_version": str(version)}
    if variant:
        attrs["dataset_variant"] = str(variant)
    _refuse_other_dataset(attrs, labs, "training is asked for")
    if year is None:
        year = meta.get("year")
    if year is None:
        years = sorted({s.year for s in stored})
        if len(years) > 1:
            raise LabelError(f"the stored vectors are of several years {years}; pass year= (a classifier trains on "
                             "one year's embeddings)")
        year = years[0]
    if depth is None:
        depths = sorted({s.bands for s in stored})
        if len(depths) > 1:
            raise LabelError(f"the stored vectors have several depths {depths} (bands); pass depth=")
        depth = depths[0]
    if kernel is not None and (int(kernel) < 1 or int(kernel) % 2 == 0):
        raise LabelError(f"kernel must be a positive odd number of pixels, got {kernel}")
    parts, skipped, crs, to_xy = [], [], None, None
    for i, smp in enumerate(labs.samples or [None] * len(labs.ids)):
        Xs, why = _stored_features(smp, year=int(year), bands=int(depth), kernel=kernel,
                                   is_point=labs.geoms[i].geom_type == "Point")
        if Xs is None:
            skipped.append((i, why))
            continue
        lon, lat = _anchor(labs.geoms[i])
        if to_xy is None:
            from pyproj import Transformer

            crs = f"EPSG:{utm_epsg(lon, lat)}"
            to_xy = Transformer.from_crs("EPSG:4326", crs, always_xy=True)
        x, y = to_xy.transform(lon, lat)
        m = len(Xs)
        parts.append((i, Xs, np.full(m, -1), np.full(m, -1), np.tile([float(x), float(y)], (m, 1))))
    if not parts:
        raise _none_left([{"id": labs.ids[i], "class": labs.classes[i], "reason": why} for i, why in skipped],
                         len(labs.ids))
    meta.update({"dataset_version": str(version), "dataset_variant": attrs.get("dataset_variant") or
                 _schema.dataset_key(attrs)[1], "year": int(year), "bands": int(depth), "crs": crs,
                 "stored_labels": len(parts)})
    out = _assemble(labs, parts, skipped, meta)
    _report(out.skipped, len(labs.ids), warn)
    return out


def _codes_at(area: Any, rows: np.ndarray, cols: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(int8 codes (m, bands), float32 scales (m,), valid (m,)) at pixel indices: the
    area's own codes where it has them, else its values quantised as the store does."""
    from ..io.codes import codes_window
    from ..io.quant import quantize
    from .area import auto_prepared

    prepared = auto_prepared(area)
    if prepared is not None:
        idx = rows * prepared.shape[1] + cols
        return prepared.codes[idx], prepared.scales[idx], prepared.valid[idx].copy()
    cw = codes_window(area)
    if cw is not None:
        ra, rb, ca, cb = rows.min(), rows.max() + 1, cols.min(), cols.max() + 1
        q, s = cw.read(slice(int(ra), int(rb)), slice(int(ca), int(cb)))
        if np.ndim(s) == 3:
            raise LabelError("per-band scales cannot be stored with a label; open the area as float")
        codes, scales = np.asarray(q)[rows - ra, cols - ca], np.asarray(s, np.float32)[rows - ra, cols - ca]
    else:
        codes, scales = quantize(read_pixels(area, rows, cols))
    valid = np.isfinite(scales) & (scales > 0) & (np.abs(codes.astype(np.int16)).sum(axis=1) > 0)
    return codes, scales, valid


def label_sample(area: Any, geometry: Any, *, kernel: int = 1, max_pixels: int = MAX_PER_LABEL,
                 seed: int = 0) -> Any:
    """A label's training pixels from an area, to keep with the label
    (``LabelStore.add_point(lon, lat, cls, sample=label_sample(area, (lon, lat)))``).

    Parameters
    ----------
    area : :class:`PreparedArea` or embeddings DataArray (its int8 codes and scales are
        kept exactly; an array without codes behind it is quantised as the store is).
    geometry : ``(lon, lat)``, a ring of ``(lon, lat)``, a GeoJSON geometry, a shapely
        Point/Polygon, or a :class:`~tessera_explore.classify.labels.Label`.
    kernel : for points, the window side (as :func:`sample_labels`); the pixel under the
        point comes first.
    max_pixels : a polygon keeps at most this many of its pixels with data (a seeded
        random choice, the one :meth:`Samples.thin` makes), as the explorer trains on.
    seed : seed of that choice.

    Returns a :class:`~tessera_explore.io.labels.LabelSample`, or None when the label is
    outside the area or has no data under it (the label is kept without vectors).
    """
    from .. import _schema
    from ..io.labels import LabelSample
    from .labels import _as_geometry

    kernel = int(kernel)
    if kernel < 1 or kernel % 2 == 0:
        raise LabelError(f"kernel must be a positive odd number of pixels, got {kernel}")
    if int(max_pixels) < 1:
        raise ArgumentError(f"max_pixels must be at least 1, got {max_pixels}")
    geom = _as_geometry(getattr(geometry, "geometry", geometry), "label")
    grid = grid_of(area)
    cand, _ = _pixels_of(grid, _Labels([0], ["?"], [geom], {}), kernel)
    if not cand:
        return None
    _, rows, cols = cand[0]
    codes, scales, valid = _codes_at(area, np.asarray(rows, np.int64), np.asarray(cols, np.int64))
    if geom.geom_type == "Point" and not valid[0]:
        return None
    keep = np.flatnonzero(valid)
    if keep.size == 0:
        return None
    if geom.geom_type != "Point" and keep.size > int(max_pixels):
        drop = np.random.default_rng(seed).choice(keep, keep.size - int(max_pixels), replace=False)
        keep = np.setdiff1d(keep, drop)
    attrs = grid.attrs
    version = attrs.get("dataset_version")
    if not version:
        raise LabelError("the area records no dataset_version; its pixels cannot be kept with a label")
    variant = attrs.get("dataset_variant") or _schema.dataset_key(attrs)[1]
    return LabelSample(codes[keep], np.asarray(scales[keep], np.float32), year=int(grid.year),
                       dataset_version=str(version), dataset_variant=None if variant == "unknown" else str(variant),
                       kernel=kernel)
