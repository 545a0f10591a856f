"""Downloads never stitch two files together, never accept the wrong thing, and never
trip over each other: the builtin client against the real local HTTP server, misbehaving."""

from __future__ import annotations

import json
import os
import shutil
import struct
import subprocess
import sys
import textwrap
import threading

import numpy as np
import pytest

import tessera_explore as te
from tessera_explore.exceptions import DownloadError
from tessera_explore.io import grid
from tessera_explore.io.fetch import download, tile_urls
from tessera_explore.testing.server import FileServer, serve_folder, serve_tiles

pytestmark = pytest.mark.network_local

BBOX = (0.10, 52.00, 0.20, 52.10)


def _npy_bytes(seed: int, shape=(64, 48, 128)) -> bytes:
    import io

    buf = io.BytesIO()
    np.save(buf, np.random.default_rng(seed).integers(-128, 127, size=shape, dtype=np.int8))
    return buf.getvalue()


@pytest.fixture
def remote(tmp_path):
    d = tmp_path / "remote"
    d.mkdir()
    (d / "a.npy").write_bytes(_npy_bytes(1))
    return d


def _leftovers(folder) -> list[str]:
    return sorted(f for _, _, fs in os.walk(folder) for f in fs
                  if f.endswith((".part", ".meta", ".lock", ".tmp")))


def _interrupted(srv_root, dest, **behaviour):
    """A first download that is cut after 100 kB and gives up, leaving a .part."""
    with serve_folder(srv_root, drop_after=100_000, drop_times=1, **behaviour) as srv:
        with pytest.raises(DownloadError):
            download(srv.url + "/a.npy", dest, retries=0, progress=False)
    have = os.path.getsize(str(dest) + ".part")
    assert 0 < have <= 100_000
    return have


def _replace_same_size(path, seed):
    """Replace a remote file by another of exactly the same size (a new version)."""
    old = path.read_bytes()
    new = _npy_bytes(seed)
    assert len(new) == len(old) and new != old
    tmp = path.with_suffix(".new")
    tmp.write_bytes(new)
    os.replace(tmp, path)
    st = os.stat(path)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 5_000_000_000))  # Last-Modified moves too
    return new


@pytest.mark.parametrize("validators", [{"etag": True, "last_modified": True}, {"etag": False, "last_modified": True},
                                        {"etag": True, "last_modified": False}])
def test_a_replaced_remote_file_of_the_same_size_is_never_stitched(remote, tmp_path, validators):
    dest = tmp_path / "dl" / "a.npy"
    _interrupted(remote, dest, **validators)
    new = _replace_same_size(remote / "a.npy", seed=2)
    with serve_folder(remote, **validators) as srv:
        download(srv.url + "/a.npy", dest, progress=False)
        assert srv.headers[0].get("If-Range")  # asked to resume only if the file is the same one
        assert srv.log[0][2] == 200  # it is not: the whole new file came back
    assert dest.read_bytes() == new
    assert _leftovers(tmp_path / "dl") == []


def test_an_unchanged_remote_file_resumes_where_it_stopped(remote, tmp_path):
    dest = tmp_path / "dl" / "a.npy"
    have = _interrupted(remote, dest)
    with serve_folder(remote) as srv:
        download(srv.url + "/a.npy", dest, progress=False)
        assert srv.log == [("/a.npy", f"bytes={have}-", 206)]
    assert dest.read_bytes() == (remote / "a.npy").read_bytes()


def test_without_validators_a_partial_file_starts_again(remote, tmp_path):
    dest = tmp_path / "dl" / "a.npy"
    _interrupted(remote, dest, etag=False, last_modified=False)
    new = _replace_same_size(remote / "a.npy", seed=3)
    with serve_folder(remote, etag=False, last_modified=False) as srv:
        download(srv.url + "/a.npy", dest, progress=False)
        assert "Range" not in srv.headers[0]  # nothing proves the .part's origin: never resumed
    assert dest.read_bytes() == new


def test_a_recorded_checksum_allows_resuming_without_validators(remote, tmp_path):
    import hashlib

    dest = tmp_path / "dl" / "a.npy"
    _interrupted(remote, dest, etag=False, last_modified=False)
    good = hashlib.sha256((remote / "a.npy").read_bytes()).hexdigest()
    with serve_folder(remote, etag=False, last_modified=False) as srv:
        download(srv.url + "/a.npy", dest, progress=False, sha256=good)
        assert srv.log[0][2] == 206
    assert dest.read_bytes() == (remote / "a.npy").read_bytes()


def test_a_server_that_ignores_if_range_is_caught_by_its_etag(remote, tmp_path):
    dest = tmp_path / "dl" / "a.npy"
    _interrupted(remote, dest)
    new = _replace_same_size(remote / "a.npy", seed=4)
    with serve_folder(remote, honour_if_range=False) as srv:
        download(srv.url + "/a.npy", dest, progress=False, backoff=0.01)
        assert [e[2] for e in srv.log] == [206, 200]  # the 206 of another version was refused
    assert dest.read_bytes() == new


def test_a_206_with_the_wrong_content_range_is_refused(remote, tmp_path):
    dest = tmp_path / "dl" / "a.npy"
    _interrupted(remote, dest)
    with serve_folder(remote, wrong_content_range=True) as srv:
        download(srv.url + "/a.npy", dest, progress=False, backoff=0.01)
        assert [e[2] for e in srv.log] == [206, 200]
    assert dest.read_bytes() == (remote / "a.npy").read_bytes()


@pytest.mark.parametrize("extra", [0, 5000])
def test_a_complete_or_over_long_part_restarts_instead_of_failing_with_416(remote, tmp_path, extra):
    dest = tmp_path / "dl" / "a.npy"
    dest.parent.mkdir()
    data = (remote / "a.npy").read_bytes()
    part = str(dest) + ".part"
    with open(part, "wb") as f:
        f.write(data + b"x" * extra)
    etag, modified = FileServer.validators(str(remote / "a.npy"))
    with open(part + ".meta", "w") as f:  # as if this client had started it
        json.dump({"etag": etag, "last_modified": modified, "total": None}, f)
    with serve_folder(remote) as srv:
        for _ in range(2):  # and again: the second call finds the file
            download(srv.url + "/a.npy", dest, progress=False, backoff=0.01)
        assert 416 in [e[2] for e in srv.log]
    assert dest.read_bytes() == data
    assert _leftovers(tmp_path / "dl") == []


@pytest.mark.parametrize("html", [True, "disguised"])
@pytest.mark.parametrize("name", ["a.npy", "lm.tiff", "meta.json", "weights.pt"])
def test_an_html_page_is_never_accepted(remote, tmp_path, html, name):
    if name != "a.npy":
        shutil.copy(remote / "a.npy", remote / name)
    with serve_folder(remote, html=html) as srv:
        url = srv.url + "/" + name
        with pytest.raises(DownloadError, match="HTML|web page|not a") as err:
            download(url, tmp_path / "dl" / name, progress=False, backoff=0.01)
    assert url in str(err.value) and ".part" not in str(err.value)
    assert os.listdir(tmp_path / "dl") == []


def test_a_gzip_encoded_body_is_decoded_and_checked(remote, tmp_path):
    dest = tmp_path / "dl" / "a.npy"
    with serve_folder(remote, gzip=True) as srv:
        download(srv.url + "/a.npy", dest, progress=False)
    assert dest.read_bytes() == (remote / "a.npy").read_bytes()
    # a gzip body cut midway cannot be resumed: it starts again
    dest2 = tmp_path / "dl" / "b.npy"
    with serve_folder(remote, gzip=True, drop_after=20_000, drop_times=1) as srv:
        download(srv.url + "/a.npy", dest2, progress=False, backoff=0.01)
        assert all("Range" not in h for h in srv.headers)
        assert all(h.get("Accept-Encoding") == "identity" for h in srv.headers)
    assert dest2.read_bytes() == (remote / "a.npy").read_bytes()
    assert _leftovers(tmp_path / "dl") == []


def _broken_header(header: bytes) -> bytes:
    pad = b" " * ((64 - (10 + len(header) + 1) % 64) % 64) + b"\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header + pad)) + header + pad + b"\0" * 64


@pytest.mark.parametrize("body", [
    _broken_header(b"{'descr': '<i1', 'fortran_order': False, 'shape': (2, \""),  # TokenError in numpy
    _broken_header(b"{'descr': '<i1', 'fortran_order': False, 'shape': (99999999999999999999999, 9), }"),
    _npy_bytes(5)[:-100],  # truncated
    _npy_bytes(5) + _npy_bytes(6)[:5000],  # two downloads stitched: longer than the header says
])
def test_a_bad_npy_is_a_download_error_naming_the_url_and_leaves_nothing(remote, tmp_path, body):
    (remote / "bad.npy").write_bytes(body)
    with serve_folder(remote) as srv:
        url = srv.url + "/bad.npy"
        with pytest.raises(DownloadError) as err:
            download(url, tmp_path / "dl" / "bad.npy", progress=False)
    assert url in str(err.value) and ".part" not in str(err.value)
    assert os.listdir(tmp_path / "dl") == []


def test_a_dropped_connection_then_a_dead_server_is_a_download_error(remote, tmp_path):
    with serve_folder(remote, drop_after=1000, drop_times=100) as srv:
        url = srv.url + "/a.npy"
        with pytest.raises(DownloadError, match="failed after 2 attempts") as err:
            download(url, tmp_path / "a.npy", progress=False, retries=1, backoff=0.01)
    assert url in str(err.value)
    with pytest.raises(DownloadError, match="127.0.0.1"):
        download(url, tmp_path / "b.npy", progress=False, retries=0, timeout=2)  # nobody listens any more
    with pytest.raises(DownloadError, match="nothing://"):
        download("nothing://x/y.npy", tmp_path / "c.npy", progress=False, retries=0)


def test_two_threads_downloading_one_path_take_turns(remote, tmp_path):
    dest = tmp_path / "dl" / "a.npy"
    errors = []

    def run(url):
        try:
            download(url, dest, progress=False)
        except BaseException as err:  # collected and asserted below
            errors.append(err)

    with serve_folder(remote, throttle=0.002) as srv:
        ts = [threading.Thread(target=run, args=(srv.url + "/a.npy",)) for _ in range(3)]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        assert sum(e[2] == 200 for e in srv.log) == 1  # the others found the file there
    assert errors == []
    assert dest.read_bytes() == (remote / "a.npy").read_bytes()
    assert _leftovers(tmp_path / "dl") == []


def test_two_processes_downloading_one_path_do_not_crash_each_other(remote, tmp_path):
    dest = tmp_path / "dl" / "a.npy"
    code = textwrap.dedent("""
        import sys
        from tessera_explore.io.fetch import download
        download(sys.argv[1], sys.argv[2], progress=False, backoff=0.05)
        print("done")
    """)
    with serve_folder(remote, throttle=0.005) as srv:
        procs = [subprocess.Popen([sys.executable, "-c", code, srv.url + "/a.npy", str(dest)],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
        outs = [p.communicate(timeout=300) for p in procs]
    for p, (out, err) in zip(procs, outs):
        assert p.returncode == 0, err
        assert out.strip() == "done"
    assert dest.read_bytes() == (remote / "a.npy").read_bytes()
    assert _leftovers(tmp_path / "dl") == []


# --- fetch_tiles: the folder, the tile files -----------------------------------------------
@pytest.fixture(scope="module")
def tiles_remote(tmp_path_factory):
    d = tmp_path_factory.mktemp("tiles_remote")
    te.testing.make_tiles(d, tiles=[(0.15, 52.05), (0.25, 52.05)], years=[2024], shape=(48, 32), seed=3)
    return d


def test_an_interrupted_fetch_already_records_the_folder_version(tiles_remote, tmp_path):
    with serve_tiles(tiles_remote, fail_for=3600) as srv:  # every request: 503
        with pytest.raises(DownloadError, match="503"):
            te.fetch_tiles(BBOX, 2024, dest=tmp_path, base_url=srv.url, progress=False, retries=0)
    meta = json.loads((tmp_path / grid.METADATA_FILE).read_text())
    assert (meta["dataset_version"], meta["dataset_variant"]) == ("v1", "vultr")
    assert meta["source_url"].startswith("http://127.0.0.1")
    with serve_tiles(tiles_remote) as srv:
        with pytest.raises(DownloadError, match="versions must not be mixed"):
            te.fetch_tiles(BBOX, 2024, dest=tmp_path, base_url=srv.url, dataset="v1.1-cam", progress=False)
        assert srv.log == []  # refused before anything was asked for
        te.fetch_tiles(BBOX, 2024, dest=tmp_path, base_url=srv.url, progress=False)  # the same version goes on
    assert json.loads((tmp_path / grid.METADATA_FILE).read_text())["years"] == [2024]


def test_another_variant_in_the_folder_is_refused(tiles_remote, tmp_path):
    (tmp_path / grid.METADATA_FILE).write_text(json.dumps({"dataset_version": "v1.1-cam",
                                                           "dataset_variant": "dclimate"}))
    with serve_tiles(tiles_remote) as srv:
        with pytest.raises(DownloadError, match="variants must not be mixed"):
            te.fetch_tiles(BBOX, 2024, dest=tmp_path, base_url=srv.url, dataset="v1.1-cam", progress=False)


@pytest.mark.parametrize("content", ["[1, 2, 3]", "not json"])
def test_a_metadata_file_that_is_not_an_object_is_a_clear_error(tiles_remote, tmp_path, content):
    (tmp_path / grid.METADATA_FILE).write_text(content)
    with pytest.raises(DownloadError, match=grid.METADATA_FILE):
        te.fetch_tiles(BBOX, 2024, dest=tmp_path, base_url="http://127.0.0.1:9", progress=False)


def test_a_landmask_of_another_tile_is_refused_before_it_becomes_final(tiles_remote, tmp_path):
    remote = tmp_path / "remote"
    shutil.copytree(tiles_remote, remote)
    a = grid.tile_paths(remote, 0.15, 52.05, 2024)["landmask"]
    b = grid.tile_paths(remote, 0.25, 52.05, 2024)["landmask"]
    shutil.copy(b, a)  # the server holds the neighbour's landmask under this tile's name
    dest = tmp_path / "dest"
    with serve_tiles(remote) as srv:
        url = tile_urls(0.15, 52.05, 2024, base_url=srv.url)["landmask"]
        with pytest.raises(DownloadError, match="placed") as err:
            te.fetch_tiles(BBOX, 2024, dest=dest, base_url=srv.url, progress=False)
    assert url in str(err.value)
    assert not os.path.exists(grid.tile_paths(dest, 0.15, 52.05, 2024)["landmask"])
    assert _leftovers(dest) == []


def test_scales_that_do_not_fit_the_codes_are_refused(tiles_remote, tmp_path):
    remote = tmp_path / "remote"
    shutil.copytree(tiles_remote, remote)
    np.save(grid.tile_paths(remote, 0.15, 52.05, 2024)["scales"], np.ones((10, 10), np.float32))
    with serve_tiles(remote) as srv:
        with pytest.raises(DownloadError, match="scales"):
            te.fetch_tiles(BBOX, 2024, dest=tmp_path / "dest", base_url=srv.url, progress=False)
    assert not os.path.exists(grid.tile_paths(tmp_path / "dest", 0.15, 52.05, 2024)["scales"])


def test_fetch_leaves_no_temporary_files(tiles_remote, tmp_path):
    with serve_tiles(tiles_remote, drop_after=20_000, drop_times=1) as srv:
        te.fetch_tiles((0.1, 52.0, 0.3, 52.1), 2024, dest=tmp_path, base_url=srv.url, progress=False, backoff=0.01)
    assert _leftovers(tmp_path) == []
    for lon, lat in ((0.15, 52.05), (0.25, 52.05)):
        for key in ("codes", "scales", "landmask"):
            a, b = grid.tile_paths(tiles_remote, lon, lat, 2024)[key], grid.tile_paths(tmp_path, lon, lat, 2024)[key]
            assert open(a, "rb").read() == open(b, "rb").read()
