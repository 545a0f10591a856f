"""Downloads: the one module of tessera_explore that talks HTTP.

:func:`download` fetches one URL to a file with retries and back-off, timeouts,
resumable partial files (``.part`` + HTTP Range), size and checksum checks and a
progress bar; a file appears under its final name only when it is whole.
:func:`fetch_tiles` computes which tile files an area and year need and downloads
them into the geotessera folder layout that :func:`~tessera_explore.open_embeddings`
reads.  URL templates live in :data:`URL_TEMPLATES` and can be overridden per call.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import time
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from ..exceptions import DownloadError
from . import grid

__all__ = ["download", "fetch_tiles", "DEFAULT_BASE_URL", "URL_TEMPLATES", "LANDMASK_VERSIONS"]

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


def _session():
    import requests

    s = requests.Session()
    s.headers["User-Agent"] = "tessera_explore"
    return s


def _check_npy(path: str) -> None:
    try:
        np.load(path, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError, EOFError) as err:
        raise DownloadError(f"downloaded file {path} is not a whole .npy: {err}") from err


def _sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(_CHUNK), b""):
            h.update(block)
    return h.hexdigest()


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
) -> str:
    """Download ``url`` to ``path`` safely; return the path.

    Bytes go to ``path + ".part"``; after a dropped connection the next attempt asks for
    the rest with an HTTP Range request.  Only a file whose size matches the server's
    (and ``expected_size``), whose SHA-256 matches ``sha256`` when given, and which is a
    whole ``.npy`` when it is one, is renamed to ``path``.  Server errors (5xx, 429) and
    network errors are retried ``retries`` times with exponential back-off; a 404 or
    another client error fails at once.  ``check_response`` is called with each HTTP
    response (status and headers, before the body is read) and may raise
    :class:`DownloadError` to refuse it, e.g. a web page where a binary file was
    expected; that is not retried.  ``file://`` URLs are copied with the same checks
    (mirrors on a shared disk, tests).  Raises :class:`DownloadError`.
    """
    path = os.fspath(path)
    if os.path.exists(path) and not overwrite:
        if sha256 is None or _sha256(path) == sha256:
            return path
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    part = path + ".part"
    if url.startswith("file:"):
        total = _copy_local(url, part, expected_size=expected_size, progress=progress, desc=os.path.basename(path))
    else:
        total = _get_http(url, part, expected_size=expected_size, retries=retries, backoff=backoff, timeout=timeout,
                          progress=progress, session=session, check_response=check_response,
                          desc=os.path.basename(path))
    _finish(url, part, path, total=total, sha256=sha256)
    return path


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
    try:
        with open(src, "rb") as fin, open(part, "wb") as fout, tqdm(
            total=total, unit="B", unit_scale=True, desc=desc, leave=False, disable=not progress
        ) as bar:
            for block in iter(lambda: fin.read(_CHUNK), b""):
                fout.write(block)
                bar.update(len(block))
    except OSError as err:
        if os.path.exists(part):
            os.remove(part)
        raise DownloadError(f"{url}: cannot copy {src}: {err}") from err
    return total


def _get_http(url: str, part: str, *, expected_size: int | None, retries: int, backoff: float,
              timeout: float | tuple[float, float], progress: bool, session,
              check_response: Callable[[Any], None] | None, desc: str) -> int | None:
    """GET ``url`` into ``part`` with retries and Range resumption; return the total size if known."""
    import requests
    from tqdm.auto import tqdm

    sess = session or _session()
    total = expected_size
    last_err: Exception | None = None
    bar = None
    try:
        for attempt in range(retries + 1):
            if attempt:
                time.sleep(backoff * 2 ** (attempt - 1))
            have = os.path.getsize(part) if os.path.exists(part) else 0
            headers = {"Range": f"bytes={have}-"} if have else {}
            try:
                with sess.get(url, stream=True, timeout=timeout, headers=headers) as r:
                    if r.status_code == 416 and have and total is not None and have >= total:
                        break  # already complete
                    if r.status_code in _RETRY_STATUS:
                        last_err = DownloadError(f"{url}: HTTP {r.status_code}")
                        continue
                    if r.status_code >= 400:
                        raise DownloadError(f"{url}: HTTP {r.status_code} {r.reason}")
                    if check_response is not None:
                        check_response(r)
                    if r.status_code == 206 and have:
                        crange = r.headers.get("Content-Range", "")
                        if crange.startswith(f"bytes {have}-") and "/" in crange and crange.rsplit("/", 1)[1].isdigit():
                            total = int(crange.rsplit("/", 1)[1])
                        mode = "ab"
                    else:  # the server ignored the Range request: start again
                        have, mode = 0, "wb"
                        if r.headers.get("Content-Length", "").isdigit():
                            total = int(r.headers["Content-Length"])
                    if expected_size is not None and total is not None and total != expected_size:
                        raise DownloadError(f"{url}: server says {total} bytes, expected {expected_size}")
                    if bar is None and progress:
                        bar = tqdm(total=total, initial=have, unit="B", unit_scale=True, desc=desc, leave=False)
                    elif bar is not None:
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
                    continue
                break
            except (requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError) as err:
                last_err = err
                continue
        else:
            raise DownloadError(f"download of {url} failed after {retries + 1} attempts: {last_err}") from last_err
    finally:
        if bar is not None:
            bar.close()
    return total


def _finish(url: str, part: str, path: str, *, total: int | None, sha256: str | None) -> None:
    """Check the whole ``part`` file (size, SHA-256, ``.npy``) and rename it to ``path``."""
    size = os.path.getsize(part)
    if total is not None and size != total:
        os.remove(part)
        raise DownloadError(f"{url}: got {size} bytes, expected {total}; the partial file was removed")
    if sha256 is not None:
        got = _sha256(part)
        if got != sha256:
            os.remove(part)
            raise DownloadError(f"{url}: SHA-256 {got} does not match the expected {sha256}")
    if path.endswith(".npy"):
        try:
            _check_npy(part)
        except DownloadError:
            os.remove(part)
            raise
    os.replace(part, path)


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
    Returns one dict of local paths per tile.  Raises :class:`DownloadError`.
    """
    from tqdm.auto import tqdm

    dest = os.fspath(dest)
    centres = grid.tiles_in_bbox(bbox)
    _check_version(dest, dataset)
    sess = _session()
    out = []
    checksums = dict(checksums or {})
    for lon, lat in tqdm(centres, desc=f"tiles {year}", unit="tile", disable=not progress or len(centres) < 2):
        urls = tile_urls(lon, lat, year, dataset=dataset, base_url=base_url, templates=templates)
        paths = grid.tile_paths(dest, lon, lat, year)
        for key in ("codes", "scales", "landmask"):
            url = patch_url(urls[key]) if patch_url else urls[key]
            download(url, paths[key], sha256=checksums.get(os.path.basename(paths[key])), retries=retries,
                     backoff=backoff, timeout=timeout, progress=progress, session=sess, overwrite=overwrite)
        out.append({k: paths[k] for k in ("codes", "scales", "landmask")})
    _write_metadata(dest, dataset, base_url or DEFAULT_BASE_URL, year)
    return out


def _read_meta(dest: str) -> dict:
    path = os.path.join(dest, grid.METADATA_FILE)
    if not os.path.exists(path):
        return {}
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, json.JSONDecodeError) as err:
        raise DownloadError(f"{path} cannot be read ({err}); fix or remove it") from err


def _check_version(dest: str, dataset: str) -> None:
    have = _read_meta(dest).get("dataset_version")
    if have not in (None, dataset):
        raise DownloadError(
            f"{dest} already holds dataset version {have}; download {dataset} into another folder "
            "(versions must not be mixed)"
        )


def _write_metadata(dest: str, dataset: str, base_url: str, year: int) -> None:
    from .._schema import variant_of

    path = os.path.join(dest, grid.METADATA_FILE)
    meta = _read_meta(dest)
    meta.update({
        "dataset_version": dataset,
        "dataset_variant": variant_of(dataset),
        "source_url": base_url,
        "years": sorted(set(meta.get("years", [])) | {int(year)}),
        "updated": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    })
    tmp = path + ".part"
    with open(tmp, "w") as f:
        json.dump(meta, f, indent=2)
    os.replace(tmp, path)
