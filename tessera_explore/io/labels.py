"""Label files: our GeoJSON, the upstream TESSERA notebook's JSON, CSV, vector files.

Everything here is lon/lat (EPSG:4326, GeoJSON order).  The one exception is the
upstream interactive-map notebook's JSON, which stores ``[lat, lon]``; it is swapped
on reading and writing, here and nowhere else.

:func:`read_labels` returns a :class:`LabelSet` or raises
:class:`~tessera_explore.exceptions.LabelError` naming the file and the feature; it
never returns half a file, and never another exception for a hand-edited file (not
JSON, nested too deeply, a list, a missing or mistyped member).  A UTF-8 byte-order mark
is accepted.  :func:`write_json_atomic` writes to a temporary file in the same folder,
flushes it to disk and renames it over the target (through symlinks: the file a link
points to is replaced, never the link), so a crash leaves either the old file or the new
one.

Validation samples (:func:`read_validation_sample`, :class:`ValidationFile`): the
reference answers of :func:`~tessera_explore.validation_sample`'s points, saved as
GeoJSON with a ``tessera_validation`` member that marks the file as ours.  A file that
is not ours, or not readable, is never overwritten: it is moved aside under a new name
(:func:`keep_aside`), and every earlier sample keeps its own file.
"""

from __future__ import annotations

import base64
import binascii
import csv
import datetime as _dt
import hashlib
import json
import math
import numbers
import os
import reprlib
from dataclasses import dataclass, field
from typing import Any

from ..exceptions import LabelError

__all__ = [
    "LabelRecord",
    "LabelSample",
    "SAMPLE_KEY",
    "SAMPLE_FORMAT",
    "same_sample_dataset",
    "LabelSet",
    "FORMAT",
    "PALETTE",
    "read_labels",
    "read_json_object",
    "to_geojson",
    "to_upstream_json",
    "write_json_atomic",
    "check_color",
    "check_geometry",
    "from_geodataframe",
    "now",
    "parse_json",
    "real_path",
    "keep_aside",
    "VALIDATION_FORMAT",
    "read_validation_sample",
    "validation_doc",
    "ValidationFile",
]

#: Marker of our own label files (collection property ``format``).
FORMAT = "tessera_explore.labels/1"

#: Colours given to classes that come without one (colour-blind-safe first).
PALETTE = (
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2",
    "#7f7f7f", "#bcbd22", "#17becf", "#393b79", "#637939", "#8c6d31", "#843c39",
)


def _short(value: Any) -> str:
    """A bounded repr for messages (safe on deeply nested or huge values)."""
    r = reprlib.Repr()
    r.maxlevel, r.maxstring, r.maxother, r.maxlist, r.maxdict = 3, 60, 60, 6, 6
    return r.repr(value)


def real_path(path: str | os.PathLike) -> str:
    """The absolute path of the file ``path`` names, symlinks resolved: the one to write
    (an atomic rename over a link would replace the link, not the shared file) and to
    lock (two links to one file must take one lock)."""
    return os.path.realpath(os.path.abspath(os.fspath(path)))


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
    sample: LabelSample | None = None


@dataclass
class LabelSet:
    """What a label file holds: records, classes (name -> colour) and provenance."""

    records: list
    classes: dict
    meta: dict = field(default_factory=dict)


#: Feature property that holds a label's stored embedding vectors (namespaced, so
#: readers that do not know it, GeoPandas and QGIS included, keep it as an opaque value).
SAMPLE_KEY = "tessera_explore:sample"
#: Marker of that object's layout (its ``format`` member).
SAMPLE_FORMAT = "tessera_explore.sample/1"
#: At most this many pixels in one stored sample (a polygon's sample is capped far lower
#: by :func:`~tessera_explore.classify.samples.label_sample`).
MAX_SAMPLE_PIXELS = 100_000


class LabelSample:
    """A label's training pixels as the published store holds them: int8 ``codes``
    ``(n, bands)`` and float32 per-pixel ``scales`` ``(n,)`` (embedding = codes * scale),
    with the ``year``, ``dataset_version``, ``dataset_variant`` and ``kernel`` they were
    taken with.

    Exact: the store's own quantisation is kept, so training from a stored sample gives
    the same features as reading the pixels again.  A point's first pixel is the one under
    the point (a ``kernel x kernel`` window follows it).  Immutable; every pixel has data
    (finite, positive scale).  Raises LabelError on anything else.
    """

    __slots__ = ("codes", "scales", "year", "dataset_version", "dataset_variant", "kernel")

    def __init__(self, codes: Any, scales: Any, *, year: int, dataset_version: str,
                 dataset_variant: str | None = None, kernel: int = 1, where: str = "label sample"):
        import numpy as np

        codes = np.array(codes, copy=True)
        scales = np.array(scales, copy=True)
        if codes.dtype != np.int8 or codes.ndim != 2 or not 1 <= codes.shape[1] <= 128 or codes.shape[0] < 1:
            raise LabelError(f"{where}: codes must be int8 (pixels, bands) with 1-128 bands, got "
                             f"{codes.dtype} {codes.shape}")
        if codes.shape[0] > MAX_SAMPLE_PIXELS:
            raise LabelError(f"{where}: {codes.shape[0]} pixels; a stored sample holds at most {MAX_SAMPLE_PIXELS}")
        if scales.dtype != np.float32:
            raise LabelError(f"{where}: scales must be float32 (the store's own), got {scales.dtype}")
        if scales.shape != (codes.shape[0],):
            raise LabelError(f"{where}: {scales.shape} scales for {codes.shape[0]} pixels (one scale a pixel)")
        bad = ~(np.isfinite(scales) & (scales > 0))
        if bad.any():
            raise LabelError(f"{where}: {int(bad.sum())} scales are not finite positive numbers (e.g. "
                             f"{scales[bad][0]!r}); a stored sample holds pixels with data only")
        if not (np.abs(codes.astype(np.int16)).sum(axis=1) > 0).all():
            raise LabelError(f"{where}: a pixel's codes are all zero (no embedding)")
        if not isinstance(dataset_version, str) or not dataset_version:
            raise LabelError(f"{where}: dataset_version must be a non-empty string, got {dataset_version!r}")
        if dataset_variant is not None and (not isinstance(dataset_variant, str) or not dataset_variant):
            raise LabelError(f"{where}: dataset_variant must be a non-empty string or None, got {dataset_variant!r}")
        if not (_whole(year) and 1900 <= int(year) <= 2200):
            raise LabelError(f"{where}: year must be a whole number, got {year!r}")
        if not (_whole(kernel) and int(kernel) >= 1 and int(kernel) % 2 == 1):
            raise LabelError(f"{where}: kernel must be a positive odd whole number, got {kernel!r}")
        codes.setflags(write=False)
        scales.setflags(write=False)
        for k, v in (("codes", codes), ("scales", scales), ("year", int(year)),
                     ("dataset_version", dataset_version), ("dataset_variant", dataset_variant),
                     ("kernel", int(kernel))):
            object.__setattr__(self, k, v)

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("a LabelSample is immutable")

    @property
    def n(self) -> int:
        """Number of pixels."""
        return int(self.codes.shape[0])

    @property
    def bands(self) -> int:
        """Embedding depth (128, or a nested-depth prefix such as 16)."""
        return int(self.codes.shape[1])

    @property
    def attrs(self) -> dict:
        """Provenance in the attrs form of an embeddings array (for dataset comparisons)."""
        out = {"dataset_version": self.dataset_version}
        if self.dataset_variant is not None:
            out["dataset_variant"] = self.dataset_variant
        return out

    def features(self):
        """Float32 ``(n, bands)`` embeddings: ``codes * scales`` (as every reader dequantises)."""
        import numpy as np

        return self.codes.astype(np.float32) * self.scales[:, None]

    def _key(self) -> tuple:
        return (self.codes.shape, self.codes.tobytes(), self.scales.tobytes(), self.year, self.dataset_version,
                self.dataset_variant, self.kernel)

    def __eq__(self, other: Any) -> bool:
        return isinstance(other, LabelSample) and self._key() == other._key()

    def __hash__(self) -> int:
        return hash(hashlib.sha256(repr(self._key()).encode()).digest())

    def __reduce__(self):
        return (_rebuild_sample, (self.codes, self.scales, self.year, self.dataset_version, self.dataset_variant,
                                  self.kernel))

    def __repr__(self) -> str:
        variant = f"/{self.dataset_variant}" if self.dataset_variant else ""
        return (f"LabelSample({self.n} px x {self.bands} bands, {self.dataset_version}{variant} {self.year}, "
                f"kernel {self.kernel})")

    def to_json(self) -> dict:
        """The JSON object stored under :data:`SAMPLE_KEY` (codes and scales as base64 of
        int8 row-major and little-endian float32 bytes: compact and bit-exact)."""
        out = {"format": SAMPLE_FORMAT, "year": self.year, "dataset_version": self.dataset_version}
        if self.dataset_variant is not None:
            out["dataset_variant"] = self.dataset_variant
        out.update({"kernel": self.kernel, "pixels": self.n, "bands": self.bands,
                    "codes": base64.b64encode(self.codes.tobytes()).decode("ascii"),
                    "scales": base64.b64encode(self.scales.astype("<f4").tobytes()).decode("ascii")})
        return out

    @classmethod
    def from_json(cls, obj: Any, where: str = "label sample") -> LabelSample:
        """Read :meth:`to_json`'s object back; LabelError naming ``where`` for anything
        damaged (not an object, unknown format, bad base64, wrong length, bad scales)."""
        import numpy as np

        if not isinstance(obj, dict):
            raise LabelError(f"{where}: '{SAMPLE_KEY}' must be an object, got {_short(obj)}")
        fmt = obj.get("format")
        if fmt != SAMPLE_FORMAT:
            raise LabelError(f"{where}: '{SAMPLE_KEY}' format {_short(fmt)} is not {SAMPLE_FORMAT!r} "
                             "(written by another version of tessera_explore?)")
        n, bands = obj.get("pixels"), obj.get("bands")
        if not (_whole(n) and _whole(bands) and 1 <= n <= MAX_SAMPLE_PIXELS and 1 <= bands <= 128):
            raise LabelError(f"{where}: '{SAMPLE_KEY}' pixels and bands must be whole numbers (1-{MAX_SAMPLE_PIXELS}, "
                             f"1-128), got {_short(n)} and {_short(bands)}")
        raw = {}
        for key, size in (("codes", n * bands), ("scales", 4 * n)):
            text = obj.get(key)
            if not isinstance(text, str):
                raise LabelError(f"{where}: '{SAMPLE_KEY}.{key}' must be a base64 string, got {_short(text)}")
            try:
                raw[key] = base64.b64decode(text.encode("ascii"), validate=True)
            except (binascii.Error, ValueError, UnicodeEncodeError) as err:
                raise LabelError(f"{where}: '{SAMPLE_KEY}.{key}' is not valid base64 ({err})") from None
            if len(raw[key]) != size:
                raise LabelError(f"{where}: '{SAMPLE_KEY}.{key}' holds {len(raw[key])} bytes; {n} pixels x "
                                 f"{bands} bands need {size} (damaged or truncated?)")
        codes = np.frombuffer(raw["codes"], np.int8).reshape(n, bands)
        scales = np.frombuffer(raw["scales"], "<f4").astype(np.float32)
        return cls(codes, scales, year=obj.get("year"), dataset_version=obj.get("dataset_version"),
                   dataset_variant=obj.get("dataset_variant"), kernel=obj.get("kernel", 1),
                   where=f"{where}: '{SAMPLE_KEY}'")


def _rebuild_sample(codes, scales, year, version, variant, kernel) -> LabelSample:
    return LabelSample(codes, scales, year=year, dataset_version=version, dataset_variant=variant, kernel=kernel)


def same_sample_dataset(sample: LabelSample, version: Any, variant: Any) -> bool:
    """Whether ``sample`` was taken from the dataset ``version`` (and ``variant``, where
    both say); an unknown version matches anything."""
    from .. import _schema

    if version is None:
        return True
    other = {"dataset_version": str(version)}
    if variant is not None:
        other["dataset_variant"] = str(variant)
    return _schema.same_dataset(sample.attrs, other)


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


def parse_json(data: bytes, src: str, *, what: str = "label file") -> Any:
    """The JSON value in ``data`` (the bytes of file ``src``), or a LabelError naming
    ``src`` and what is wrong: empty, not UTF-8 text, not JSON, nested too deeply.  A
    UTF-8 byte-order mark (as some editors write) is accepted."""
    if not data.strip():
        raise LabelError(f"{what} {src} is empty (corrupt or truncated?)")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise LabelError(f"{what} {src} is not a UTF-8 text file ({err})") from err
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise LabelError(f"{what} {src} is not valid JSON (corrupt, truncated or mistyped?): {err}") from err
    except RecursionError:
        raise LabelError(f"{what} {src} nests JSON arrays or objects too deeply to be read (thousands of levels); "
                         "it is not a label file") from None


def _read_bytes(path: str, what: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except FileNotFoundError:
        raise LabelError(f"{what} not found: {path}") from None
    except OSError as err:
        raise LabelError(f"cannot read {what} {path}: {err}") from err


def _load_json(path: str) -> Any:
    return parse_json(_read_bytes(path, "label file"), path)


def _from_geojson(obj: dict, src: str) -> LabelSet:
    import shapely.geometry

    if obj.get("type") != "FeatureCollection" or not isinstance(obj.get("features"), list):
        raise LabelError(f"{src}: not a GeoJSON FeatureCollection")
    props = obj.get("properties") or {}
    if not isinstance(props, dict):
        raise LabelError(f"{src}: collection properties must be an object")
    crs = obj.get("crs")
    if crs:
        cprops = (crs.get("properties") or {}) if isinstance(crs, dict) else None
        if isinstance(crs, dict) and not isinstance(cprops, dict):
            raise LabelError(f"{src}: the 'crs' member cannot be read ({_short(crs)}); labels must be lon/lat "
                             "(EPSG:4326): remove it, or name EPSG:4326 in its properties")
        name = str(cprops.get("name", "")) if isinstance(crs, dict) else str(crs)
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
    samples_of = None  # the first stored sample: every other one must be of its dataset
    for i, feat in enumerate(obj["features"]):
        where = f"{src}: feature {i}"
        if not isinstance(feat, dict) or feat.get("type") != "Feature":
            raise LabelError(f"{where} is not a GeoJSON Feature")
        fp = feat.get("properties") or {}
        if not isinstance(fp, dict):
            raise LabelError(f"{where}: properties must be an object, got {_short(fp)}")
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
        except (TypeError, ValueError, OverflowError):
            fid = None
        color = fp.get("color")
        if name not in classes or classes[name] is None:
            classes[name] = check_color(color, where=f"{where}: ") if color else classes.get(name)
        created = fp.get("created")
        sample = None
        if fp.get(SAMPLE_KEY) is not None:
            label = f"{where} (label {fid}, {name!r})" if fid is not None else f"{where} ({name!r})"
            sample = LabelSample.from_json(fp[SAMPLE_KEY], label)
            if not same_sample_dataset(sample, props.get("dataset_version"), props.get("dataset_variant")):
                raise LabelError(
                    f"{label}: its stored vectors are of dataset {sample.dataset_version!r} (variant "
                    f"{sample.dataset_variant!r}) but the file's labels were drawn on {props.get('dataset_version')!r} "
                    f"(variant {props.get('dataset_variant')!r}); versions and variants never mix in one label file")
            if samples_of is None:
                samples_of = sample
            elif not same_sample_dataset(sample, samples_of.dataset_version, samples_of.dataset_variant):
                raise LabelError(
                    f"{label}: its stored vectors are of dataset {sample.dataset_version!r} (variant "
                    f"{sample.dataset_variant!r}), an earlier label's of {samples_of.dataset_version!r} (variant "
                    f"{samples_of.dataset_variant!r}); versions and variants never mix in one label file")
        records.append(LabelRecord(geom, name, fid, None if created is None else str(created), sample))
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
            raise LabelError(f"{where} is not [[lat, lon], class]: {_short(item)}")
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


def read_json_object(obj: dict, src: str, *, format: str | None = None) -> LabelSet:
    """Labels from a parsed GeoJSON or upstream-JSON object; errors name ``src``."""
    kind = format or ("upstream" if "training_points" in obj else "geojson")
    return _from_upstream(obj, src) if kind == "upstream" else _from_geojson(obj, src)


def read_labels(source: Any, *, format: str | None = None) -> LabelSet:
    """Read labels from a path (GeoJSON, upstream JSON, CSV, any GeoPandas format),
    a parsed GeoJSON / upstream dict, or a GeoDataFrame.

    ``format`` forces ``"geojson"``, ``"upstream"``, ``"csv"`` or ``"vector"``; by default
    it is told from the content (JSON) or the file extension.
    """
    if isinstance(source, dict):
        return read_json_object(source, "labels", format=format)
    if hasattr(source, "geometry") and hasattr(source, "columns"):
        return from_geodataframe(source)
    path = os.fspath(source)
    if not os.path.exists(path):
        raise LabelError(f"label file not found: {path}")
    ext = os.path.splitext(path)[1].lower()
    kind = format or {".csv": "csv", ".geojson": "json", ".json": "json"}.get(ext, "vector")
    if kind in ("json", "geojson", "upstream"):
        obj = _load_json(path)
        if not isinstance(obj, dict):
            raise LabelError(f"{path}: expected a JSON object (GeoJSON FeatureCollection or training_points), "
                             f"found a JSON {type(obj).__name__}")
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
        if getattr(r, "sample", None) is not None:
            props[SAMPLE_KEY] = r.sample.to_json()
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
    """Write JSON to ``path`` through a temporary file in the same folder and a rename
    (to the file a symlink points to, never over the link)."""
    from .._atomic import write_json

    return write_json(real_path(path), obj)


# ---------------------------------------------------------------------------------- moving aside


def keep_aside(path: str | os.PathLike, tag: str = "previous") -> str:
    """Move the file ``path`` to ``<stem>.<tag><ext>`` (``<stem>.<tag>-2<ext>``, ``-3``...
    when that name is taken), never over an existing file; returns the new path.  Raises
    LabelError naming both paths when it cannot be moved."""
    path = os.fspath(path)
    stem, ext = os.path.splitext(path)
    for k in range(1, 100_000):
        dest = f"{stem}.{tag}{'' if k == 1 else f'-{k}'}{ext}"
        if os.path.lexists(dest):
            continue
        try:
            os.link(path, dest)  # fails on an existing name: nothing is ever replaced
        except FileExistsError:
            continue
        except FileNotFoundError:
            raise LabelError(f"cannot move {path} aside: it is gone") from None
        except OSError:  # no hard links here (or not a file): a rename, after the check above
            try:
                os.rename(path, dest)
            except OSError as err:
                raise LabelError(f"cannot move {path} aside to {dest}: {err}; move or rename it yourself") from err
            return dest
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
        except OSError as err:
            raise LabelError(f"copied {path} to {dest} but cannot remove it: {err}; remove it yourself") from err
        return dest
    raise LabelError(f"cannot move {path} aside: every name {stem}.{tag}-N{ext} is taken")


# ---------------------------------------------------------------------------------- validation samples

#: Marker of our validation sample files (``tessera_validation.format``).  Files written
#: before it carry the ``tessera_validation`` member alone; they are ours too.
VALIDATION_FORMAT = "tessera_explore.validation/1"
_VALIDATION = "tessera_validation"
_DESIGN = ("classes", "mapped_pixels", "sample_sizes", "allocation", "seed", "year")


def _whole(v: Any) -> bool:
    return isinstance(v, numbers.Integral) and not isinstance(v, bool)


def _real(v: Any) -> bool:
    return isinstance(v, numbers.Real) and not isinstance(v, bool)


def _json_kind(v: Any) -> str:
    return {dict: "object", list: "array", str: "string", bool: "boolean", type(None): "null"}.get(
        type(v), "number")


def _check_design(design: Any, src: str) -> dict:
    if not isinstance(design, dict):
        raise LabelError(f"{src} is not a validation sample written by tessera_explore (it has no "
                         f"'{_VALIDATION}' object with the sampling design); it is not read as one")
    fmt = design.get("format")
    if fmt is not None and fmt != VALIDATION_FORMAT:
        raise LabelError(f"{src}: validation sample format {_short(fmt)} is not {VALIDATION_FORMAT!r} "
                         "(written by another version of tessera_explore?)")
    classes = design.get("classes")
    if not (isinstance(classes, list) and classes and all(isinstance(c, str) and c.strip() for c in classes)):
        raise LabelError(f"{src}: '{_VALIDATION}.classes' must be a list of the map's class names, "
                         f"got {_short(classes)}")
    for key in ("mapped_pixels", "sample_sizes"):
        v = design.get(key)
        if key == "sample_sizes" and v is None:
            continue
        if not (isinstance(v, list) and len(v) == len(classes) and all(_whole(x) and x >= 0 for x in v)):
            raise LabelError(f"{src}: '{_VALIDATION}.{key}' must be {len(classes)} whole numbers (one per class), "
                             f"got {_short(v)}")
    for key in ("year", "seed"):
        if design.get(key) is not None and not _whole(design[key]):
            raise LabelError(f"{src}: '{_VALIDATION}.{key}' must be a whole number, got {_short(design[key])}")
    return {k: design[k] for k in _DESIGN if k in design}


def _check_point(feat: Any, classes: list, where: str) -> dict:
    if not isinstance(feat, dict) or feat.get("type", "Feature") != "Feature":
        raise LabelError(f"{where} is not a GeoJSON Feature object (found a JSON {_json_kind(feat)})")
    geom = feat.get("geometry")
    kind = geom.get("type") if isinstance(geom, dict) else None
    if kind != "Point":
        found = f"a {_short(kind)} geometry" if isinstance(geom, dict) else f"geometry {_short(geom)}"
        raise LabelError(f"{where}: validation points are Point geometries (one pixel each), found {found}")
    xy = geom.get("coordinates")
    if not (isinstance(xy, list) and len(xy) in (2, 3) and all(_real(v) for v in xy)):
        raise LabelError(f"{where}: coordinates must be [lon, lat], got {_short(xy)}")
    lon, lat = _check_lonlat(xy[0], xy[1], where)
    props = feat.get("properties")
    if not isinstance(props, dict):
        raise LabelError(f"{where}: properties must be an object with map_class, reference, row and col, "
                         f"got {_short(props)}")
    missing = [k for k in ("map_class", "reference", "row", "col") if k not in props]
    if missing:
        raise LabelError(f"{where}: properties lack {', '.join(missing)} (each point needs map_class, reference "
                         "(null until answered), row and col)")
    mc = props["map_class"]
    if mc not in classes:
        raise LabelError(f"{where}: map_class {_short(mc)} is not one of the sample's classes {classes}")
    ref = props["reference"]
    if ref is None or (isinstance(ref, float) and math.isnan(ref)):
        ref = None
    elif isinstance(ref, str) and ref.strip():
        ref = ref.strip()
    else:
        raise LabelError(f"{where}: reference must be a class name, or null while unanswered; got {_short(ref)}")
    for key in ("row", "col"):
        if not (_whole(props[key]) and props[key] >= 0):
            raise LabelError(f"{where}: {key} must be a pixel index (a whole number >= 0), got {_short(props[key])}")
    return {"map_class": mc, "reference": ref, "row": int(props["row"]), "col": int(props["col"]),
            "lon": lon, "lat": lat}


def _validation_frame(obj: Any, src: str):
    """validation_sample's GeoDataFrame from the parsed file ``src``, or LabelError."""
    import geopandas as gpd
    import pandas as pd

    if not isinstance(obj, dict):
        raise LabelError(f"validation sample {src}: expected a JSON object (a GeoJSON FeatureCollection), "
                         f"found a JSON {_json_kind(obj)}")
    design = _check_design(obj.get(_VALIDATION), src)
    feats = obj.get("features")
    if obj.get("type") != "FeatureCollection" or not isinstance(feats, list):
        raise LabelError(f"validation sample {src}: not a GeoJSON FeatureCollection with a 'features' list")
    rows = [_check_point(f, design["classes"], f"{src}: point {i + 1}") for i, f in enumerate(feats)]
    cols = ("map_class", "reference", "row", "col", "lon", "lat")
    data = {c: [r[c] for r in rows] for c in cols}
    data["reference"] = pd.array(data["reference"], dtype="object")
    gdf = gpd.GeoDataFrame(data, geometry=gpd.points_from_xy(data["lon"], data["lat"]), crs="EPSG:4326")
    gdf["reference"] = gdf["reference"].astype(object).where(gdf["reference"].notna(), None)
    gdf.attrs[_VALIDATION] = design
    return gdf


def read_validation_sample(path: str | os.PathLike):
    """A validation sample saved by :class:`ValidationFile` (or the explorer's
    ``<labels>_reference.geojson``) as :func:`~tessera_explore.validation_sample`'s
    GeoDataFrame, its ``reference`` column holding the answers (None while unanswered).

    Raises LabelError naming the file and what is wrong with it (not JSON, not an object,
    not ours, a point that is not a Point, a missing property...)."""
    name = os.path.abspath(os.fspath(path))
    data = _read_bytes(name, "validation sample")
    return _validation_frame(parse_json(data, name, what="validation sample"), name)


def _plain(v: Any) -> Any:
    if v is None:
        return None
    if hasattr(v, "item"):
        v = v.item()
    return None if isinstance(v, float) and math.isnan(v) else v


def validation_doc(sample, *, year: int | None = None) -> dict:
    """The GeoJSON of a validation sample (points, answers, design, our mark)."""
    feats = []
    for r in sample.itertuples(index=False):
        ref = _plain(r.reference)
        feats.append({"type": "Feature", "geometry": {"type": "Point", "coordinates": [float(r.lon), float(r.lat)]},
                      "properties": {"map_class": str(r.map_class), "reference": None if ref is None else str(ref),
                                     "row": int(r.row), "col": int(r.col)}})
    design = {k: v for k, v in dict(sample.attrs.get(_VALIDATION) or {}).items() if k in _DESIGN}
    if year is not None:
        design["year"] = int(year)
    return {"type": "FeatureCollection", "features": feats,
            _VALIDATION: {"format": VALIDATION_FORMAT, **design,
                          "note": "reference classes of a stratified random sample of the class map; "
                                  "not training labels"}}


def _is_ours(data: bytes) -> bool:
    try:
        obj = parse_json(data, "")
    except LabelError:
        return False
    return isinstance(obj, dict) and isinstance(obj.get(_VALIDATION), dict)


class ValidationFile:
    """The file of one validation sample's answers (the explorer keeps
    ``<labels>_reference.geojson`` beside the label file).

    :meth:`read` returns the sample (None when there is no file) or raises LabelError
    naming the file.  :meth:`save` rewrites the file only while it holds exactly what this
    object last read or wrote there: anything else (another sample, a file someone edited,
    a file tessera_explore did not write) is first moved aside with :func:`keep_aside`, so
    no sample's answers and no foreign file are ever overwritten.  :meth:`set_aside` moves
    the file to the next free ``<stem>.previous[-N].geojson``.  Symlinks are followed: the
    file a link points to is the one read, written and moved.
    """

    def __init__(self, path: str | os.PathLike):
        self.name = os.path.abspath(os.fspath(path))
        self._digest: str | None = None  # SHA-256 of what this object last read or wrote there

    @property
    def path(self) -> str:
        """The file itself (symlinks resolved)."""
        return real_path(self.name)

    def _bytes(self) -> bytes | None:
        try:
            with open(self.path, "rb") as f:
                return f.read()
        except FileNotFoundError:
            return None
        except OSError as err:
            raise LabelError(f"cannot read validation sample {self.name}: {err}") from err

    def read(self):
        """The saved sample (a GeoDataFrame, see :func:`read_validation_sample`), or None."""
        data = self._bytes()
        if data is None:
            return None
        gdf = _validation_frame(parse_json(data, self.name, what="validation sample"), self.name)
        self._digest = hashlib.sha256(data).hexdigest()
        return gdf

    def set_aside(self, tag: str = "previous") -> str | None:
        """Move the file to the next free ``<stem>.<tag>[-N]<ext>``; its new path, or None
        when there is no file."""
        if not os.path.lexists(self.path):
            return None
        kept = keep_aside(self.path, tag)
        self._digest = None
        return kept

    def save(self, sample, *, year: int | None = None, replace_ours: bool = False) -> str | None:
        """Write ``sample`` (with its answers) atomically and durably.  A file there that
        this object did not last read or write is moved aside first (with
        ``replace_ours``, a validation sample of tessera_explore's is replaced instead);
        returns a note saying where it went, else None."""
        from .._atomic import write_bytes

        note = None
        current = self._bytes()
        if current is not None and hashlib.sha256(current).hexdigest() != self._digest:
            ours = _is_ours(current)
            if not (replace_ours and ours):
                kept = self.set_aside("previous" if ours else "unreadable")
                what = ("a validation sample this session did not write" if ours
                        else "a file that is not a validation sample of tessera_explore")
                note = f"{self.name} held {what}; it is kept as {kept}"
        data = json.dumps(validation_doc(sample, year=year)).encode("utf-8")
        try:
            write_bytes(self.path, data)
        except OSError as err:
            raise LabelError(f"could not save the validation answers to {self.name}: {err}") from err
        self._digest = hashlib.sha256(data).hexdigest()
        return note
