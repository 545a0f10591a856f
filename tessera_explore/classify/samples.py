"""``sample_labels``: the embeddings under labels, with a report of what was left out.

Points take the pixel that contains them (or a ``kernel x kernel`` window around it);
polygons take every pixel whose centre lies inside (the pixel under the centroid when
the polygon is smaller than a pixel).  Labels are converted from lon/lat to the area's
CRS once.  Labels outside the area, on no-data pixels, or sharing a pixel with another
label are listed in :attr:`Samples.skipped` (and in a warning), never dropped silently.
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

__all__ = ["Samples", "sample_labels", "as_labels"]


@dataclass
class _Labels:
    """Labels normalised for sampling: ids, classes, lon/lat geometries, provenance."""

    ids: list
    classes: list  # class name per label
    geoms: list
    colors: dict  # class -> colour (every class, in order)
    meta: dict = field(default_factory=dict)


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
                       labels.classes, meta)
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
        return _Labels(ids, [r.cls for r in ls.records], [r.geometry for r in ls.records], ls.classes, meta)
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
    indices; ``xy`` pixel centres in the area's CRS; ``skipped`` one dict per label left out
    (``id``, ``class``, ``reason``).  Unpacks as ``X, y = sample_labels(...)``.
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


def _read(area: Any, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """Float32 embeddings (m, bands) at pixel indices, NaN rows for no data."""
    from .area import auto_prepared

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


def sample_labels(da: Any, labels: Any, *, kernel: int = 1, warn: bool = True) -> Samples:
    """Embeddings under labels: features ``X`` and class names ``y``.

    Parameters
    ----------
    da : embeddings DataArray or :class:`PreparedArea`.
    labels : a :class:`LabelStore`, a label file (GeoJSON, upstream JSON, CSV, vector),
        a GeoDataFrame, a GeoJSON dict, or a list of ``(lon, lat, class)``.
    kernel : odd window side for points: 1 takes the pixel under the point, 3 a 3 x 3
        window (9 samples of the one label; no-data pixels of the window are left out).
    warn : warn when labels are skipped (they are listed in ``Samples.skipped`` anyway).

    Raises LabelError when no label gives a sample, VersionMismatchError when the labels
    were drawn on another dataset version.
    """
    kernel = int(kernel)
    if kernel < 1 or kernel % 2 == 0:
        raise LabelError(f"kernel must be a positive odd number of pixels, got {kernel}")
    labs = as_labels(labels)
    if not labs.ids:
        raise LabelError("there are no labels to sample")
    _check_version(da, labs.meta)
    grid = grid_of(da)
    cand, skipped = _pixels_of(grid, labs, kernel)
    # read every candidate pixel at once
    if cand:
        all_r = np.concatenate([c[1] for c in cand])
        all_c = np.concatenate([c[2] for c in cand])
        X = _read(da, all_r, all_c)
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
        lab_of.append(np.full(len(sl), i))
    if conflicts:
        for j in conflicts:
            skipped.append((j, "shares its pixel with a label of another class; left out"))
        pairs = [(s, l) for s, l in zip(keep_idx, lab_of) if l[0] not in conflicts]
        keep_idx = [p[0] for p in pairs]
        lab_of = [p[1] for p in pairs]
    sk = [{"id": labs.ids[i], "class": labs.classes[i], "reason": why} for i, why in skipped]
    if not keep_idx:
        reasons = "; ".join(f"label {s['id']} ({s['class']}): {s['reason']}" for s in sk[:5])
        raise LabelError(f"none of the {len(labs.ids)} labels gives a sample: {reasons}"
                         + (" ..." if len(sk) > 5 else ""))
    idx = np.concatenate(keep_idx)
    li = np.concatenate(lab_of)
    if sk and warn:
        reasons = "; ".join(f"label {s['id']} ({s['class']}): {s['reason']}" for s in sk[:5])
        warnings.warn(f"{len(sk)} of {len(labs.ids)} labels were left out: {reasons}"
                      + (" ..." if len(sk) > 5 else "") + " (see Samples.skipped)", UserWarning, stacklevel=2)
    rows, cols = all_r[idx], all_c[idx]
    y = np.array([labs.classes[i] for i in li], dtype=object)
    used = [c for c in labs.colors if (y == c).any()]
    used += sorted(set(y.tolist()) - set(used))
    return Samples(
        X=np.ascontiguousarray(X[idx]), y=y, label_id=np.array([labs.ids[i] for i in li]),
        rows=rows, cols=cols, xy=np.column_stack([grid.x[cols], grid.y[rows]]), skipped=sk,
        classes=used, colors={c: labs.colors.get(c) for c in used}, meta=dict(labs.meta),
    )
