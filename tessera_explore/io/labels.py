"""Label files: our GeoJSON, the upstream TESSERA notebook's JSON, CSV, vector files.

Everything here is lon/lat (EPSG:4326, GeoJSON order).  The one exception is the
upstream interactive-map notebook's JSON, which stores ``[lat, lon]``; it is swapped
on reading and writing, here and nowhere else.

:func:`read_labels` returns a :class:`LabelSet` or raises
:class:`~tessera_explore.exceptions.LabelError` naming the file and the feature; it
never returns half a file.  :func:`write_json_atomic` writes to a temporary file in the
same folder, flushes it to disk and renames it over the target, so a crash leaves
either the old file or the new one.
"""

from __future__ import annotations

import csv
import datetime as _dt
import json
import math
import os
from dataclasses import dataclass, field
from typing import Any

from ..exceptions import LabelError

__all__ = [
    "LabelRecord",
    "LabelSet",
    "FORMAT",
    "PALETTE",
    "read_labels",
    "to_geojson",
    "to_upstream_json",
    "write_json_atomic",
    "check_color",
    "check_geometry",
    "from_geodataframe",
    "now",
]

#: Marker of our own label files (collection property ``format``).
FORMAT = "tessera_explore.labels/1"

#: Colours given to classes that come without one (colour-blind-safe first).
PALETTE = (
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2",
    "#7f7f7f", "#bcbd22", "#17becf", "#393b79", "#637939", "#8c6d31", "#843c39",
)


def now() -> str:
    """Current UTC time, ISO 8601 to the second."""
    return _dt.datetime.now(_dt.UTC).replace(microsecond=0).isoformat()


@dataclass(frozen=True)
class LabelRecord:
    """One label as read from a file: a shapely geometry in lon/lat and a class name."""

    geometry: Any
    cls: str
    id: int | None = None
    created: str | None = None


@dataclass
class LabelSet:
    """What a label file holds: records, classes (name -> colour) and provenance."""

    records: list
    classes: dict
    meta: dict = field(default_factory=dict)


def check_color(color: Any, *, where: str = "") -> str:
    """A ``#rrggbb`` colour string, or LabelError."""
    if isinstance(color, str):
        c = color.strip()
        if len(c) == 7 and c[0] == "#":
            try:
                int(c[1:], 16)
                return c.lower()
            except ValueError:
                pass
        if len(c) == 4 and c[0] == "#":
            try:
                int(c[1:], 16)
                return ("#" + "".join(ch * 2 for ch in c[1:])).lower()
            except ValueError:
                pass
    raise LabelError(f"{where}colour {color!r} is not a '#rrggbb' string")


def _check_class(name: Any, where: str) -> str:
    if not isinstance(name, str) or not name.strip():
        raise LabelError(f"{where}: class must be a non-empty string, got {name!r}")
    return name.strip()


def _check_lonlat(lon: Any, lat: Any, where: str) -> tuple[float, float]:
    try:
        lon, lat = float(lon), float(lat)
    except (TypeError, ValueError):
        raise LabelError(f"{where}: coordinates ({lon!r}, {lat!r}) are not numbers") from None
    if not (math.isfinite(lon) and math.isfinite(lat)):
        raise LabelError(f"{where}: coordinates ({lon}, {lat}) are not finite")
    if not (-180.0 <= lon <= 180.0 and -90.0 <= lat <= 90.0):
        raise LabelError(
            f"{where}: ({lon}, {lat}) is not a lon/lat position (lon in -180..180, lat in -90..90); "
            "labels are stored in EPSG:4326, lon first"
        )
    return lon, lat


def check_geometry(geom: Any, where: str):
    """Validate a shapely geometry in lon/lat: Point, Polygon or MultiPolygon."""
    import shapely

    if geom is None or geom.is_empty:
        raise LabelError(f"{where}: empty geometry")
    kind = geom.geom_type
    if kind not in ("Point", "Polygon", "MultiPolygon"):
        raise LabelError(f"{where}: {kind} geometries are not labels (use Point, Polygon or MultiPolygon)")
    xy = shapely.get_coordinates(geom)
    for lon, lat in xy:
        _check_lonlat(lon, lat, where)
    if kind != "Point" and not geom.is_valid:
        raise LabelError(f"{where}: the polygon is not valid ({shapely.is_valid_reason(geom)})")
    return geom


# ---------------------------------------------------------------------------------- readers


def _load_json(path: str) -> Any:
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except json.JSONDecodeError as err:
        raise LabelError(f"label file {path} is not valid JSON (corrupt or truncated?): {err}") from err
    except UnicodeDecodeError as err:
        raise LabelError(f"label file {path} is not a text file: {err}") from err


def _from_geojson(obj: dict, src: str) -> LabelSet:
    import shapely.geometry

    if obj.get("type") != "FeatureCollection" or not isinstance(obj.get("features"), list):
        raise LabelError(f"{src}: not a GeoJSON FeatureCollection")
    props = obj.get("properties") or {}
    if not isinstance(props, dict):
        raise LabelError(f"{src}: collection properties must be an object")
    crs = obj.get("crs")
    if crs:
        name = str((crs.get("properties") or {}).get("name", "")) if isinstance(crs, dict) else str(crs)
        if name and not any(t in name.upper() for t in ("4326", "CRS84")):
            raise LabelError(f"{src}: coordinates are in {name}; labels must be lon/lat (EPSG:4326)")
    classes: dict[str, str | None] = {}
    raw_classes = props.get("classes") or {}
    if not isinstance(raw_classes, dict):
        raise LabelError(f"{src}: 'classes' must map class names to colours")
    for name, color in raw_classes.items():
        name = _check_class(name, f"{src}: classes")
        classes[name] = check_color(color, where=f"{src}: class {name!r}: ") if color else None
    records = []
    for i, feat in enumerate(obj["features"]):
        where = f"{src}: feature {i}"
        if not isinstance(feat, dict) or feat.get("type") != "Feature":
            raise LabelError(f"{where} is not a GeoJSON Feature")
        fp = feat.get("properties") or {}
        name = fp.get("class", fp.get("label"))
        name = _check_class(name, where)
        try:
            geom = shapely.geometry.shape(feat.get("geometry"))
        except Exception as err:  # shapely raises several types for bad geometry
            raise LabelError(f"{where}: unreadable geometry: {err}") from err
        check_geometry(geom, where)
        fid = fp.get("id", feat.get("id"))
        try:
            fid = int(fid) if fid is not None else None
        except (TypeError, ValueError):
            fid = None
        color = fp.get("color")
        if name not in classes or classes[name] is None:
            classes[name] = check_color(color, where=f"{where}: ") if color else classes.get(name)
        records.append(LabelRecord(geom, name, fid, fp.get("created")))
    meta = {k: props[k] for k in ("dataset_version", "dataset_variant", "year", "created", "updated", "format")
            if k in props}
    meta["kind"] = "geojson"
    return LabelSet(records, classes, meta)


def _from_upstream(obj: dict, src: str) -> LabelSet:
    import shapely.geometry

    pts = obj.get("training_points")
    if not isinstance(pts, list):
        raise LabelError(f"{src}: 'training_points' must be a list of [[lat, lon], class]")
    cmap = obj.get("class_color_map") or {}
    if not isinstance(cmap, dict):
        raise LabelError(f"{src}: 'class_color_map' must map class names to colours")
    classes: dict[str, str | None] = {}
    for name, color in cmap.items():
        name = _check_class(name, f"{src}: class_color_map")
        classes[name] = check_color(color, where=f"{src}: class {name!r}: ") if color else None
    records = []
    for i, item in enumerate(pts):
        where = f"{src}: training point {i}"
        if not (isinstance(item, (list, tuple)) and len(item) == 2 and isinstance(item[0], (list, tuple))
                and len(item[0]) == 2):
            raise LabelError(f"{where} is not [[lat, lon], class]: {item!r}")
        (lat, lon), name = item
        name = _check_class(name, where)
        lon, lat = _check_lonlat(lon, lat, where)
        classes.setdefault(name, None)
        records.append(LabelRecord(shapely.geometry.Point(lon, lat), name))
    return LabelSet(records, classes, {"kind": "upstream-json"})


_LON = ("lon", "longitude", "long", "lng", "x")
_LAT = ("lat", "latitude", "y")
_CLS = ("class", "label", "class_name", "classname")


def _from_csv(path: str) -> LabelSet:
    import shapely.geometry

    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            fields = {(h or "").strip().lower(): h for h in (reader.fieldnames or [])}
            cols = []
            for names, what in ((_LON, "lon"), (_LAT, "lat"), (_CLS, "class")):
                hit = next((fields[n] for n in names if n in fields), None)
                if hit is None:
                    raise LabelError(
                        f"{path}: no {what} column (columns: {list(fields.values())}); expected lon, lat, class"
                    )
                cols.append(hit)
            records, classes = [], {}
            for i, row in enumerate(reader):
                where = f"{path}: row {i + 2}"
                lon, lat = _check_lonlat(row.get(cols[0]), row.get(cols[1]), where)
                name = _check_class(row.get(cols[2]), where)
                classes.setdefault(name, None)
                records.append(LabelRecord(shapely.geometry.Point(lon, lat), name))
    except UnicodeDecodeError as err:
        raise LabelError(f"{path} is not a text CSV file: {err}") from err
    except csv.Error as err:
        raise LabelError(f"{path}: malformed CSV: {err}") from err
    return LabelSet(records, classes, {"kind": "csv"})


def _from_vector(path: str) -> LabelSet:
    try:
        import geopandas as gpd
    except ImportError:
        raise LabelError(f"{path}: reading this format needs GeoPandas (pip install geopandas)") from None
    try:
        gdf = gpd.read_file(path)
    except Exception as err:  # pyogrio/fiona raise many types
        raise LabelError(f"{path}: GeoPandas cannot read it: {err}") from err
    return from_geodataframe(gdf, src=path)


def from_geodataframe(gdf, *, src: str = "GeoDataFrame", class_column: str | None = None) -> LabelSet:
    """Labels from a GeoDataFrame with a class column (``class`` or ``label``)."""
    if class_column is None:
        lower = {str(c).lower(): c for c in gdf.columns}
        class_column = next((lower[c] for c in _CLS if c in lower), None)
        if class_column is None:
            raise LabelError(f"{src}: no 'class' column (columns: {list(gdf.columns)})")
    if gdf.crs is not None and not gdf.crs.equals("EPSG:4326"):
        gdf = gdf.to_crs(4326)
    records, classes = [], {}
    for i, (geom, name) in enumerate(zip(gdf.geometry, gdf[class_column])):
        where = f"{src}: row {i}"
        name = _check_class(name, where)
        check_geometry(geom, where)
        classes.setdefault(name, None)
        records.append(LabelRecord(geom, name))
    return LabelSet(records, classes, {"kind": "vector"})


def read_labels(source: Any, *, format: str | None = None) -> LabelSet:
    """Read labels from a path (GeoJSON, upstream JSON, CSV, any GeoPandas format),
    a parsed GeoJSON / upstream dict, or a GeoDataFrame.

    ``format`` forces ``"geojson"``, ``"upstream"``, ``"csv"`` or ``"vector"``; by default
    it is told from the content (JSON) or the file extension.
    """
    if isinstance(source, dict):
        kind = format or ("upstream" if "training_points" in source else "geojson")
        return _from_upstream(source, "labels") if kind == "upstream" else _from_geojson(source, "labels")
    if hasattr(source, "geometry") and hasattr(source, "columns"):
        return from_geodataframe(source)
    path = os.fspath(source)
    if not os.path.exists(path):
        raise LabelError(f"label file not found: {path}")
    ext = os.path.splitext(path)[1].lower()
    kind = format or {".csv": "csv", ".geojson": "json", ".json": "json"}.get(ext, "vector")
    if kind in ("json", "geojson", "upstream"):
        if os.path.getsize(path) == 0:
            raise LabelError(f"label file {path} is empty (corrupt or truncated?)")
        obj = _load_json(path)
        if not isinstance(obj, dict):
            raise LabelError(f"{path}: expected a JSON object (GeoJSON FeatureCollection or training_points)")
        if kind == "upstream" or (kind == "json" and "training_points" in obj):
            out = _from_upstream(obj, path)
        else:
            out = _from_geojson(obj, path)
    elif kind == "csv":
        out = _from_csv(path)
    elif kind == "vector":
        out = _from_vector(path)
    else:
        raise LabelError(f"unknown label format {format!r}; use geojson, upstream, csv or vector")
    out.meta["path"] = os.path.abspath(path)
    return out


# ---------------------------------------------------------------------------------- writers


def to_geojson(records, classes: dict, meta: dict) -> dict:
    """Our GeoJSON FeatureCollection (lon/lat) with provenance in its properties."""
    import shapely.geometry

    feats = []
    for r in records:
        props = {"class": r.cls, "color": classes.get(r.cls)}
        if r.id is not None:
            props["id"] = int(r.id)
        if r.created:
            props["created"] = r.created
        f = {"type": "Feature", "geometry": shapely.geometry.mapping(r.geometry), "properties": props}
        if r.id is not None:
            f["id"] = int(r.id)
        feats.append(f)
    props = {"format": FORMAT, **{k: v for k, v in meta.items() if v is not None}, "classes": dict(classes)}
    return {"type": "FeatureCollection", "properties": props, "features": feats}


def to_upstream_json(records, classes: dict) -> dict:
    """The upstream notebook's JSON (points only; ``[lat, lon]`` order)."""
    pts = []
    for r in records:
        if r.geometry.geom_type != "Point":
            raise LabelError("the upstream notebook's JSON holds points only; export polygons as GeoJSON")
        pts.append([[r.geometry.y, r.geometry.x], r.cls])
    return {"training_points": pts, "class_color_map": {k: v for k, v in classes.items()}}


def write_json_atomic(path: str, obj: Any) -> str:
    """Write JSON to ``path`` through a temporary file in the same folder and a rename."""
    from .._atomic import write_json

    return write_json(path, obj)
