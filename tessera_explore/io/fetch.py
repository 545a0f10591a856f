"""Downloads: the one module of tessera_explore that talks HTTP.

:func:`download` fetches one URL to a file with retries and back-off, timeouts,
resumable partial files (``.part`` + HTTP Range), size and checksum checks and a
progress bar; a file appears under its final name only when it is whole.
:func:`fetch_tiles` computes which tile files an area and year need and downloads
them into the geotessera folder layout that :func:`~tessera_explore.open_embeddings`
reads, with this client or, where it is installed, through the geotessera package
(imported only inside the call).  URL templates live in :data:`URL_TEMPLATES` and can
be overridden per call.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import os
import re
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from .._atomic import sha256_file, write_json
from ..exceptions import DownloadError, TesseraExploreError
from . import grid

__all__ = ["download", "fetch_tiles", "DEFAULT_BASE_URL", "URL_TEMPLATES", "LANDMASK_VERSIONS", "GEOTESSERA_DATASETS"]

#: Anonymous HTTPS mirror of the published tiles.
DEFAULT_BASE_URL = "https://data.source.coop/tessera/tessera"

#: Where each tile file lives, relative to a base URL.
URL_TEMPLATES: dict[str, str] = {
    "codes": "{base}/npy/{dataset}/{year}/{name}/{name}.npy",
    "scales": "{base}/npy/{dataset}/{year}/{name}/{name}_scales.npy",
    "landmask": "{base}/landmasks/{landmask_version}/{name}.tiff",
}

#: Landmask folder of each dataset version.
LANDMASK_VERSIONS = {"v1": "v1", "v1.1": "v1.1", "v1.1-cam": "v1.1"}

_CHUNK = 1 << 16
_RETRY_STATUS = {408, 425, 429, 500, 502, 503, 504}
_CONTENT_RANGE = re.compile(r"^bytes (\d+)-(\d+)/(\d+)$")


def _session():
    import requests

    s = requests.Session()
    s.headers["User-Agent"] = "tessera_explore"
    return s


def _remove(*paths: str) -> None:
    for p in paths:
        try:
            os.remove(p)
        except FileNotFoundError:
            pass


# --------------------------------------------------------------- one writer per target
_THREAD_LOCKS: dict[str, threading.Lock] = {}
_THREAD_LOCKS_GUARD = threading.Lock()


@contextlib.contextmanager
def _exclusive(path: str):
    """Hold the download of ``path`` exclusively, across threads and processes.

    An advisory ``flock`` on ``path + ".part.lock"`` (released by the kernel if the
    process dies, so it never goes stale); the file is removed by its last holder.
    Without ``fcntl`` (Windows) only threads of this process are kept apart.
    """
    with _THREAD_LOCKS_GUARD:
        tlock = _THREAD_LOCKS.setdefault(path, threading.Lock())
    with tlock:
        try:
            import fcntl
        except ImportError:  # pragma: no cover - Windows
            yield
            return
        lockpath = path + ".part.lock"
        while True:
            fd = os.open(lockpath, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                held = os.fstat(fd)
                try:
                    now = os.stat(lockpath)
                except FileNotFoundError:
                    now = None
            except BaseException:
                os.close(fd)
                raise
            if now is not None and (now.st_ino, now.st_dev) == (held.st_ino, held.st_dev):
                break
            os.close(fd)  # the previous holder removed that file: lock the new one
        try:
            yield
        finally:
            _remove(lockpath)
            os.close(fd)


# --------------------------------------------------------------- what a file must be
def _looks_like_html(head: bytes) -> bool:
    h = head.lstrip().lower()
    return h.startswith((b"<!doctype html", b"<html", b"<head", b"<body")) or (h.startswith(b"<?xml") and b"<html" in h)


def _check_npy(path: str, url: str) -> tuple[tuple[int, ...], np.dtype]:
    from .tiles import read_npy_header

    try:
        shape, dtype, _, _ = read_npy_header(path, "downloaded")
    except TesseraExploreError as err:
        raise DownloadError(f"{url}: what arrived is not a whole .npy: {err}") from err
    return shape, dtype


def _check_geotiff(path: str, url: str) -> None:
    import rasterio

    try:
        with rasterio.open(path) as src:
            if src.crs is None:
                raise DownloadError(f"{url}: the GeoTIFF that arrived has no CRS")
            if src.width <= 0 or src.height <= 0:
                raise DownloadError(f"{url}: the GeoTIFF that arrived is empty")
    except rasterio.errors.RasterioIOError as err:
        raise DownloadError(f"{url}: what arrived is not a readable GeoTIFF ({err})") from err


def _check_json(path: str, url: str) -> None:
    try:
        with open(path, "rb") as f:
            json.loads(f.read().decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as err:
        raise DownloadError(f"{url}: what arrived is not valid JSON ({err})") from err


def _check_content(part: str, path: str, url: str, validate: Callable[[str], None] | None) -> None:
    """What ``part`` must be, judged by the final name's extension and ``validate``."""
    with open(part, "rb") as f:
        head = f.read(512)
    if _looks_like_html(head):
        raise DownloadError(f"{url} sent a web page (HTML), not the file {os.path.basename(path)}; "
                            "the address is wrong or the server asks for a login")
    low = path.lower()
    if low.endswith(".npy"):
        _check_npy(part, url)
    elif low.endswith((".tif", ".tiff")):
        _check_geotiff(part, url)
    elif low.endswith((".json", ".geojson")):
        _check_json(part, url)
    if validate is not None:
        try:
            validate(part)
        except DownloadError:
            raise
        except TesseraExploreError as err:
            raise DownloadError(f"{url}: {err}".replace(part, path)) from err


# --------------------------------------------------------------- the partial file's origin
class _Origin:
    """What the bytes of a ``.part`` file came from: the remote object's validators,
    recorded in ``path + ".part.meta"`` before the first byte is written."""

    def __init__(self, part: str):
        self.file = part + ".meta"
        self.etag: str | None = None
        self.last_modified: str | None = None
        self.total: int | None = None
        self.encoded = False

    def load(self) -> bool:
        try:
            with open(self.file) as f:
                d = json.load(f)
            self.etag, self.last_modified = d.get("etag"), d.get("last_modified")
            self.total = int(d["total"]) if d.get("total") is not None else None
            self.encoded = bool(d.get("encoded", False))
            return True
        except (OSError, ValueError, TypeError, KeyError, AttributeError):
            return False

    def save(self, url: str) -> None:
        write_json(self.file, {"url": url, "etag": self.etag, "last_modified": self.last_modified,
                               "total": self.total, "encoded": self.encoded}, indent=None, fsync=False)

    def from_response(self, r, total: int | None, encoded: bool) -> None:
        self.etag = r.headers.get("ETag")
        self.last_modified = r.headers.get("Last-Modified")
        self.total, self.encoded = total, encoded

    def if_range(self) -> str | None:
        """A validator the server can use in If-Range (strong ETags only, else Last-Modified)."""
        if self.etag and not self.etag.startswith("W/"):
            return self.etag
        return self.last_modified

    def differs(self, r) -> bool:
        """True when a response names another object than the recorded one."""
        etag, lm = r.headers.get("ETag"), r.headers.get("Last-Modified")
        return bool((self.etag and etag and etag != self.etag) or (self.last_modified and lm and lm != self.last_modified))


def download(
    url: str,
    path: str | os.PathLike,
    *,
    expected_size: int | None = None,
    sha256: str | None = None,
    retries: int = 4,
    backoff: float = 1.0,
    timeout: float | tuple[float, float] = (10.0, 60.0),
    progress: bool = True,
    session=None,
    overwrite: bool = False,
    check_response: Callable[[Any], None] | None = None,
    validate: Callable[[str], None] | None = None,
) -> str:
    """Download ``url`` to ``path`` safely; return the path.

    Bytes go to ``path + ".part"``.  Before the first byte arrives, the remote object's
    validators (ETag, Last-Modified, size) are recorded beside it; after a dropped
    connection the next attempt (or a later call) asks for the rest with an HTTP Range
    request *and* ``If-Range``, so bytes are only appended when the server confirms the
    object is the same one.  A ``.part`` whose origin cannot be proven (no validators;
    with ``sha256`` given the checksum proves it at the end instead) starts again, as
    does one the server answers with 416, a 206 whose Content-Range is not the range
    asked for, or a response with another ETag.

    Before ``path`` appears, the whole file is checked: its size (the server's and
    ``expected_size``), ``sha256`` when given, never an HTML page, and by extension a
    ``.npy`` header that matches the size, a GeoTIFF with a CRS, valid JSON; then
    ``validate(part_path)`` if given (raise a :class:`TesseraExploreError` to refuse).
    A file that fails is removed.  Server errors (5xx, 429) and network errors are
    retried ``retries`` times with exponential back-off; a 404 or another client error
    fails at once.  ``check_response`` is called with each HTTP response (before the
    body is read) and may raise :class:`DownloadError` to refuse it; that is not
    retried.  Two downloads of one ``path`` (threads or processes) take turns: the
    second finds the file there.  ``file://`` URLs are copied with the same checks.
    Raises :class:`DownloadError` naming the URL.
    """
    path = os.fspath(path)
    if os.path.exists(path) and not overwrite:
        if sha256 is None or sha256_file(path) == sha256:
            return path
    try:
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    except OSError as err:
        raise DownloadError(f"{url}: cannot create the folder of {path}: {err}") from err
    with _exclusive(path):
        if os.path.exists(path) and not overwrite and (sha256 is None or sha256_file(path) == sha256):
            return path  # another thread or process finished it while we waited
        part = path + ".part"
        desc = os.path.basename(path)
        for fresh_try in (False, True):
            if url.startswith("file:"):
                total, resumed = _copy_local(url, part, expected_size=expected_size, progress=progress,
                                             desc=desc), False
            else:
                total, resumed = _get_http(url, part, expected_size=expected_size, retries=retries,
                                           backoff=backoff, timeout=timeout, progress=progress, session=session,
                                           check_response=check_response, desc=desc, sha256=sha256)
            try:
                _finish(url, part, path, total=total, sha256=sha256, validate=validate)
                return path
            except DownloadError:
                # bytes kept from an earlier call may be what failed: one clean download more
                if not resumed or fresh_try:
                    raise
    return path  # pragma: no cover - the loop returns or raises


def _copy_local(url: str, part: str, *, expected_size: int | None, progress: bool, desc: str) -> int:
    """Copy a ``file://`` URL to ``part``; return the source size."""
    from urllib.parse import unquote, urlparse
    from urllib.request import url2pathname

    from tqdm.auto import tqdm

    src = url2pathname(unquote(urlparse(url).path))
    try:
        total = os.path.getsize(src)
    except OSError as err:
        raise DownloadError(f"{url}: cannot read {src}: {err}") from err
    if expected_size is not None and total != expected_size:
        raise DownloadError(f"{url}: the file has {total} bytes, expected {expected_size}")
    _remove(part + ".meta")
    try:
        with open(src, "rb") as fin, open(part, "wb") as fout, tqdm(
            total=total, unit="B", unit_scale=True, desc=desc, leave=False, disable=not progress
        ) as bar:
            for block in iter(lambda: fin.read(_CHUNK), b""):
                fout.write(block)
                bar.update(len(block))
    except OSError as err:
        _remove(part)
        raise DownloadError(f"{url}: cannot copy {src}: {err}") from err
    return total


def _get_http(url: str, part: str, *, expected_size: int | None, retries: int, backoff: float,
              timeout: float | tuple[float, float], progress: bool, session,
              check_response: Callable[[Any], None] | None, desc: str,
              sha256: str | None = None) -> tuple[int | None, bool]:
    """GET ``url`` into ``part`` with retries and validated Range resumption.

    Returns ``(total size if known, whether bytes of an earlier call were kept)``."""
    import requests
    from tqdm.auto import tqdm

    sess = session or _session()
    origin = _Origin(part)
    total = expected_size
    last_err: Exception | None = None
    bar = None
    kept_earlier = False
    first = True

    def restart(why: str | None = None) -> None:
        nonlocal last_err
        _remove(part, origin.file)
        if why:
            last_err = DownloadError(why)

    try:
        attempt = 0
        while attempt <= retries:
            if attempt and last_err is not None:
                time.sleep(backoff * 2 ** (attempt - 1))
            attempt += 1
            have = os.path.getsize(part) if os.path.exists(part) else 0
            headers = {"Accept-Encoding": "identity"}
            if have:
                known = origin.load()
                validator = origin.if_range() if known else None
                if not known or origin.encoded or (validator is None and sha256 is None):
                    restart()  # cannot prove these bytes belong to the remote file: start again
                    have = 0
                elif origin.total is not None and have > origin.total:
                    restart()
                    have = 0
                else:
                    headers["Range"] = f"bytes={have}-"
                    if validator is not None:
                        headers["If-Range"] = validator
            elif os.path.exists(origin.file):
                _remove(origin.file)
            try:
                with sess.get(url, stream=True, timeout=timeout, headers=headers) as r:
                    if r.status_code == 416:
                        # the .part is complete, over-long or of another object: start again
                        restart(f"{url}: HTTP 416 for bytes {have}- (the partial file was discarded)")
                        last_err = None  # not a failure of the server: retry at once
                        continue
                    if r.status_code in _RETRY_STATUS:
                        last_err = DownloadError(f"{url}: HTTP {r.status_code}")
                        continue
                    if r.status_code >= 400:
                        raise DownloadError(f"{url}: HTTP {r.status_code} {r.reason}")
                    if r.status_code not in (200, 206):
                        raise DownloadError(f"{url}: unexpected HTTP {r.status_code} {r.reason}")
                    if check_response is not None:
                        check_response(r)
                    if "text/html" in (r.headers.get("Content-Type") or "").lower():
                        raise DownloadError(f"{url} sent a web page (Content-Type {r.headers['Content-Type']}), "
                                            f"not the file {desc}; the address is wrong or the server asks for a login")
                    encoding = (r.headers.get("Content-Encoding") or "identity").strip().lower()
                    encoded = encoding not in ("", "identity")
                    if r.status_code == 206:
                        m = _CONTENT_RANGE.match((r.headers.get("Content-Range") or "").strip())
                        ok = (have and not encoded and m is not None and int(m.group(1)) == have
                              and int(m.group(1)) <= int(m.group(2)) < int(m.group(3))
                              and (origin.total is None or int(m.group(3)) == origin.total)
                              and not origin.differs(r))
                        if not ok:
                            restart(f"{url}: HTTP 206 with Content-Range {r.headers.get('Content-Range')!r} "
                                    f"{'and another ETag ' if origin.differs(r) else ''}does not answer the "
                                    f"request for bytes {have}- of the same file; refused, the download "
                                    "starts again")
                            continue
                        total = int(m.group(3))
                        mode = "ab"
                        kept_earlier = kept_earlier or first
                    else:  # 200: the whole object (the server ignored Range, or If-Range failed)
                        have, mode = 0, "wb"
                        length = r.headers.get("Content-Length", "")
                        total = int(length) if length.isdigit() and not encoded else None
                        origin.from_response(r, total, encoded)
                        origin.save(url)  # what these bytes are, before the first one is written
                        kept_earlier = False
                    first = False
                    if expected_size is not None and total is not None and total != expected_size:
                        restart()
                        raise DownloadError(f"{url}: server says {total} bytes, expected {expected_size}")
                    if progress:
                        if bar is None:
                            bar = tqdm(total=total, initial=have, unit="B", unit_scale=True, desc=desc, leave=False)
                        else:
                            bar.reset(total=total)
                            bar.update(have)
                    with open(part, mode) as f:
                        for block in r.iter_content(_CHUNK):
                            f.write(block)
                            if bar is not None:
                                bar.update(len(block))
                size = os.path.getsize(part)
                if total is not None and size < total:
                    last_err = DownloadError(f"{url}: connection closed after {size} of {total} bytes")
                    if encoded:
                        restart()
                    continue
                if total is not None and size > total:
                    restart(f"{url}: got {size} bytes, more than the {total} the server announced")
                    continue
                return total, kept_earlier
            except (requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError,
                    requests.exceptions.ContentDecodingError) as err:
                last_err = err
                if origin.encoded:
                    restart()
                continue
            except requests.RequestException as err:  # bad URL, too many redirects...
                raise DownloadError(f"{url}: {type(err).__name__}: {err}") from err
        raise DownloadError(f"download of {url} failed after {retries + 1} attempts: {last_err}") from last_err
    except OSError as err:
        if isinstance(err, DownloadError):
            raise
        raise DownloadError(f"{url}: cannot write {part[:-len('.part')]}: {err}") from err
    finally:
        if bar is not None:
            bar.close()


def _finish(url: str, part: str, path: str, *, total: int | None, sha256: str | None,
            validate: Callable[[str], None] | None = None) -> None:
    """Check the whole ``part`` file (size, SHA-256, content) and rename it to ``path``;
    a file that fails is removed with its origin record."""
    meta = part + ".meta"
    try:
        size = os.path.getsize(part)
        if total is not None and size != total:
            raise DownloadError(f"{url}: got {size} bytes, expected {total}; the partial file was removed")
        if sha256 is not None:
            got = sha256_file(part)
            if got != sha256:
                raise DownloadError(f"{url}: SHA-256 {got} does not match the expected {sha256}")
        _check_content(part, path, url, validate)
    except DownloadError as err:
        _remove(part, meta)
        if part in str(err):  # name the file the user asked for, never the temporary one
            raise DownloadError(str(err).replace(part, path)) from err
        raise
    except BaseException:
        _remove(part, meta)
        raise
    os.replace(part, path)
    _remove(meta)


def tile_urls(lon: float, lat: float, year: int, *, dataset: str = "v1", base_url: str | None = None,
              templates: Mapping[str, str] | None = None) -> dict[str, str]:
    """URLs of one tile's codes, scales and landmask."""
    tmpl = {**URL_TEMPLATES, **(templates or {})}
    fields = {
        "base": (base_url or DEFAULT_BASE_URL).rstrip("/"),
        "dataset": dataset,
        "year": int(year),
        "name": grid.tile_name(lon, lat),
        "landmask_version": LANDMASK_VERSIONS.get(dataset, "v2" if dataset.startswith("v2") else dataset),
    }
    return {k: v.format(**fields) for k, v in tmpl.items()}


def fetch_tiles(
    bbox: Sequence[float],
    year: int,
    *,
    dest: str | os.PathLike,
    dataset: str = "v1",
    backend: str = "auto",
    base_url: str | None = None,
    templates: Mapping[str, str] | None = None,
    patch_url: Callable[[str], str] | None = None,
    checksums: Mapping[str, str] | None = None,
    retries: int = 4,
    backoff: float = 1.0,
    timeout: float | tuple[float, float] = (10.0, 60.0),
    progress: bool = True,
    overwrite: bool = False,
) -> list[dict[str, str]]:
    """Download the tiles that ``open_embeddings(dest, bbox=bbox, year=year)`` needs.

    Files land in the geotessera layout under ``dest``; tiles already there are kept
    (pass ``overwrite=True`` to fetch them again).  ``patch_url`` rewrites every URL
    (for signing or a mirror); ``templates`` overrides entries of :data:`URL_TEMPLATES`;
    ``checksums`` maps a file name (``grid_X_Y.npy``) to its SHA-256.
    Returns one dict of local paths (``codes``, ``scales``, ``landmask``) per tile.
    Raises :class:`DownloadError`.

    ``backend`` chooses who downloads:

    * ``"builtin"``: this module's client (:func:`download`), never importing geotessera.
    * ``"geotessera"``: the geotessera package, 0.10 or later (it needs Python 3.12+).
      A :class:`DownloadError` says so when it is not installed, is older (releases
      before 0.10 download from a retired host), or the call does not map onto it.
    * ``"auto"`` (default): geotessera where it is installed and the call maps onto it
      cleanly, else the builtin client.  A call maps cleanly when ``dataset`` is one that
      geotessera names with the same variant (:data:`GEOTESSERA_DATASETS`: ``"v1"``,
      ``"v1.1-cam"``) and none of ``base_url`` (other than :data:`DEFAULT_BASE_URL`),
      ``templates``, ``patch_url`` or ``checksums`` is given: geotessera has no such hooks.

    With geotessera, per tile (read from the geotessera 0.10.x sources, ucam-eo/geotessera
    ``geotessera/core.py`` ``GeoTessera.download_tile`` and ``geotessera/registry.py``
    ``Registry.fetch``/``fetch_landmask``)::

        gt = geotessera.GeoTessera(dataset_version="v1.1", dataset_variant="cambridge",
                                   embeddings_dir=dest)
        ok = gt.download_tile(lon, lat, year, refresh=overwrite)   # True / False

    which writes ``dest/global_0.1_degree_representation/{year}/grid_X_Y/grid_X_Y.npy``,
    ``..._scales.npy`` and ``dest/global_0.1_degree_tiff_all/grid_X_Y.tiff`` from
    ``https://data.source.coop/tessera/tessera``, checking Content-Length and the MD5
    ETag and retrying through its own urllib3 pool (``retries``, ``backoff`` and
    ``timeout`` here apply to the builtin client only).  The constructor first fetches
    the dataset's ``manifest.parquet`` and ``landmasks.parquet`` into geotessera's own
    cache.  ``download_tile`` logs a failure and returns ``False``; that becomes a
    :class:`DownloadError` naming the tile.  geotessera refuses a folder whose
    ``tessera_metadata.json`` records another dataset (fields ``dataset_version_path``
    and ``dataset_variant``); this function writes those fields too, so one folder can
    be filled by either backend.
    """
    from tqdm.auto import tqdm

    from ..exceptions import ArgumentError

    if backend not in ("auto", "geotessera", "builtin"):
        raise DownloadError(f"backend must be 'auto', 'geotessera' or 'builtin', not {backend!r}")
    if not isinstance(dataset, str) or not dataset:
        raise ArgumentError(f"dataset must be a dataset version such as 'v1', not {dataset!r}")
    dest = os.fspath(dest)
    try:
        centres = grid.tiles_in_bbox(bbox)
    except ValueError as err:
        raise ArgumentError(f"bbox: {err}") from err
    _check_version(dest, dataset)
    gt_module = None
    if backend != "builtin":
        unmapped = [name for name, value in (("base_url", base_url not in (None, DEFAULT_BASE_URL)),
                                             ("templates", templates), ("patch_url", patch_url),
                                             ("checksums", checksums)) if value]
        gt_module, why_not = _geotessera(dataset, unmapped)
        if gt_module is None and backend == "geotessera":
            raise DownloadError(f"fetch_tiles(backend='geotessera'): {why_not}")
    tiles = tqdm(centres, desc=f"tiles {year}", unit="tile", disable=not progress or len(centres) < 2)
    if gt_module is not None:
        out = _fetch_with_geotessera(gt_module, tiles, year, dest=dest, dataset=dataset, overwrite=overwrite)
        source = f"{DEFAULT_BASE_URL} (geotessera {_version_string(gt_module)})"
    else:
        source = base_url or DEFAULT_BASE_URL
        # the folder says what it holds before the first byte arrives, so an interrupted
        # fetch can never be continued with another version or variant
        _write_metadata(dest, dataset, source, [])
        sess = _session()
        out = []
        checksums = dict(checksums or {})
        for lon, lat in tiles:
            urls = tile_urls(lon, lat, year, dataset=dataset, base_url=base_url, templates=templates)
            paths = grid.tile_paths(dest, lon, lat, year)
            checks = _tile_checks(lon, lat, paths)
            for key in ("codes", "scales", "landmask"):
                url = patch_url(urls[key]) if patch_url else urls[key]
                download(url, paths[key], sha256=checksums.get(os.path.basename(paths[key])), retries=retries,
                         backoff=backoff, timeout=timeout, progress=progress, session=sess, overwrite=overwrite,
                         validate=checks[key])
            out.append({k: paths[k] for k in ("codes", "scales", "landmask")})
    _write_metadata(dest, dataset, source, [year])
    return out


def _tile_checks(lon: float, lat: float, paths: Mapping[str, str]) -> dict[str, Callable[[str], None]]:
    """What each file of tile (lon, lat) must be before it becomes final: int8
    (H, W, 128) codes, float scales of the codes' (H, W) and a landmask of that size
    whose georeferencing places it on this tile."""
    from ..exceptions import CorruptTileError
    from .tiles import check_georeference, read_npy_header

    name = grid.tile_name(lon, lat)

    def codes_shape() -> tuple[int, ...] | None:
        if not os.path.exists(paths["codes"]):
            return None
        return read_npy_header(paths["codes"], "codes")[0]

    def codes(part: str) -> None:
        shape, dtype, _, _ = read_npy_header(part, "codes")
        if dtype != np.int8 or len(shape) != 3 or shape[-1] != 128:
            raise CorruptTileError(f"codes of {name} hold {dtype} {shape}; expected int8 (H, W, 128)")

    def scales(part: str) -> None:
        shape, dtype, _, _ = read_npy_header(part, "scales")
        cs = codes_shape()
        if not np.issubdtype(dtype, np.floating) or (cs is not None and shape not in (cs[:2], cs)):
            raise CorruptTileError(f"scales of {name} hold {dtype} {shape}; expected float scales of the codes' "
                                   f"shape {cs[:2] if cs else '(H, W)'}")

    def landmask(part: str) -> None:
        import rasterio

        with rasterio.open(part) as src:
            crs, transform, shape = src.crs, src.transform, (src.height, src.width)
        cs = codes_shape()
        if cs is not None and shape != tuple(cs[:2]):
            raise CorruptTileError(f"landmask of {name} is {shape[0]} x {shape[1]} but its codes are "
                                   f"{cs[0]} x {cs[1]}")
        check_georeference(part, crs, transform, shape, lon, lat)

    return {"codes": codes, "scales": scales, "landmask": landmask}


#: Dataset versions that geotessera (0.10+) names with the same variant as
#: tessera_explore: ours -> (geotessera ``dataset_version``, ``dataset_variant``).
#: geotessera's ``npy/`` directory for each is the key itself.
GEOTESSERA_DATASETS: dict[str, tuple[str, str]] = {
    "v1": ("v1", "vultr"),
    "v1.1-cam": ("v1.1", "cambridge"),
}

_GEOTESSERA_MIN = (0, 10)


def _version_string(module) -> str:
    version = getattr(module, "__version__", None)
    if not version or version == "unknown":
        from importlib import metadata

        try:
            version = metadata.version("geotessera")
        except metadata.PackageNotFoundError:
            version = "unknown"
    return str(version)


def _version_tuple(version: str) -> tuple[int, int] | None:
    m = re.match(r"(\d+)\.(\d+)", version)
    return (int(m.group(1)), int(m.group(2))) if m else None


def _geotessera(dataset: str, unmapped: list[str]):
    """``(module, None)`` when geotessera can do this call, else ``(None, why not)``."""
    if dataset not in GEOTESSERA_DATASETS:
        return None, (f"dataset {dataset!r} has no equivalent in geotessera under the same variant name "
                      f"(known: {', '.join(GEOTESSERA_DATASETS)}); use backend='builtin'")
    if unmapped:
        return None, (f"{', '.join(unmapped)} cannot be passed to geotessera (it has no such hooks); "
                      "use backend='builtin'")
    try:
        import geotessera
    except ImportError as err:
        return None, (f"geotessera is not installed or cannot be imported ({err}). Install geotessera>=0.10 "
                      "(Python 3.12+) or use backend='builtin', the package's own client")
    version = _version_string(geotessera)
    parsed = _version_tuple(version)  # None: a development install, taken as current
    if parsed is not None and parsed < _GEOTESSERA_MIN:
        return None, (f"geotessera {version} is installed, but 0.10 or later is needed (older releases "
                      "download from a retired host); upgrade it or use backend='builtin'")
    return geotessera, None


def _fetch_with_geotessera(module, tiles, year: int, *, dest: str, dataset: str, overwrite: bool) -> list[dict[str, str]]:
    version, variant = GEOTESSERA_DATASETS[dataset]
    # geotessera checks the folder's sidecar before every file: record this dataset in
    # the fields it reads (a folder filled by the builtin client may lack them).
    _write_metadata(dest, dataset, DEFAULT_BASE_URL, [])
    try:
        gt = module.GeoTessera(dataset_version=version, dataset_variant=variant, embeddings_dir=dest)
    except (OSError, RuntimeError, ValueError) as err:
        raise DownloadError(f"geotessera could not open dataset {dataset} ({version}, {variant}): {err}") from err
    out = []
    for lon, lat in tiles:
        name = grid.tile_name(lon, lat)
        try:
            ok = gt.download_tile(lon, lat, int(year), refresh=overwrite)
        except OSError as err:  # geotessera lets an unwritable destination through
            raise DownloadError(f"geotessera could not write tile {name} into {dest}: {err}") from err
        if not ok:
            raise DownloadError(
                f"geotessera could not download tile {name} for {year} (dataset {dataset}); its log says why "
                "(the tile may not exist). backend='builtin' gives the HTTP error itself"
            )
        paths = grid.tile_paths(dest, lon, lat, year)
        missing = [paths[k] for k in ("codes", "scales", "landmask") if not os.path.exists(paths[k])]
        if missing:
            raise DownloadError(f"geotessera reported tile {name} downloaded, but these files are not there: "
                                f"{', '.join(missing)}")
        out.append({k: paths[k] for k in ("codes", "scales", "landmask")})
    return out


def _check_version(dest: str, dataset: str) -> None:
    """Refuse to fetch ``dataset`` into a folder that records another version or variant."""
    from .._schema import variant_of
    from .tiles import _same_version

    meta = grid.read_metadata(dest, error=DownloadError, advice="; fix or remove it")
    # "dataset_path" is geotessera's name of the dataset (its npy/ directory, the same
    # string as ours); its "dataset_version" is a bare number such as "1.0"
    have = meta.get("dataset_path") or meta.get("dataset_version")
    if have is not None and not _same_version(str(have), dataset):
        raise DownloadError(
            f"{dest} already holds dataset version {have} (recorded in {grid.METADATA_FILE}); download "
            f"{dataset} into another folder (versions must not be mixed)"
        )
    variant, want = meta.get("dataset_variant"), variant_of(dataset)
    if variant not in (None, "unknown") and want != "unknown" and variant != want:
        raise DownloadError(
            f"{dest} already holds the {variant} variant (recorded in {grid.METADATA_FILE}); download {dataset} "
            f"({want}) into another folder (variants must not be mixed)"
        )


def _write_metadata(dest: str, dataset: str, source_url: str, years: Sequence[int]) -> None:
    """Record the dataset (and add ``years``) in ``tessera_metadata.json``, keeping other keys."""
    from .._schema import variant_of

    try:
        os.makedirs(dest, exist_ok=True)
    except OSError as err:
        raise DownloadError(f"cannot create the folder {dest}: {err}") from err
    path = os.path.join(dest, grid.METADATA_FILE)
    meta = grid.read_metadata(dest, error=DownloadError, advice="; fix or remove it")
    sources = list(meta.get("sources", []))
    if source_url not in sources:
        sources.append(source_url)
    meta.update({
        "dataset_version": dataset,
        "dataset_variant": variant_of(dataset),
        "dataset_path": dataset,
        "source_url": source_url,
        "sources": sources,
        "years": sorted(set(meta.get("years", [])) | {int(y) for y in years}),
        "updated": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
    })
    if dataset in GEOTESSERA_DATASETS:  # with dataset_variant, what geotessera reads to check the folder
        meta["dataset_version_path"] = GEOTESSERA_DATASETS[dataset][0]
    try:
        write_json(path, meta, indent=2, fsync=False)
    except OSError as err:
        raise DownloadError(f"cannot write {path}: {err}") from err
