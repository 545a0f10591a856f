"""fetch_tiles and download against a real HTTP server on 127.0.0.1."""

from __future__ import annotations

import hashlib
import os

import numpy as np
import pytest

import tessera_explore as te
from tessera_explore.exceptions import DownloadError
from tessera_explore.io import grid
from tessera_explore.io.fetch import download, tile_urls
from tessera_explore.testing.server import serve_tiles

BBOX = (0.10, 52.00, 0.30, 52.10)


@pytest.fixture(scope="module")
def remote(tmp_path_factory):
    d = tmp_path_factory.mktemp("remote")
    te.testing.make_tiles(d, tiles=[(0.15, 52.05), (0.25, 52.05)], years=[2024], shape=(96, 64), seed=9)
    return d


def _same_files(a, b, year=2024):
    for lon, lat in grid.tiles_in_bbox(BBOX):
        pa, pb = grid.tile_paths(a, lon, lat, year), grid.tile_paths(b, lon, lat, year)
        for k in ("codes", "scales", "landmask"):
            assert open(pa[k], "rb").read() == open(pb[k], "rb").read(), pa[k]


def test_url_templates_are_overridable():
    u = tile_urls(0.15, 52.05, 2024)
    assert u["codes"] == "https://data.source.coop/tessera/tessera/npy/v1/2024/grid_0.15_52.05/grid_0.15_52.05.npy"
    assert u["scales"].endswith("grid_0.15_52.05/grid_0.15_52.05_scales.npy")
    assert u["landmask"] == "https://data.source.coop/tessera/tessera/landmasks/v1/grid_0.15_52.05.tiff"
    u2 = tile_urls(0.15, 52.05, 2024, base_url="http://mirror", templates={"landmask": "{base}/lm/{name}.tif"})
    assert u2["landmask"] == "http://mirror/lm/grid_0.15_52.05.tif"


def test_fetch_then_open(remote, tmp_path):
    with serve_tiles(remote) as srv:
        paths = te.fetch_tiles(BBOX, 2024, dest=tmp_path, base_url=srv.url, progress=False)
        assert len(paths) == 2
        n = len(srv.log)
        # a second call finds everything on disk and asks for nothing
        te.fetch_tiles(BBOX, 2024, dest=tmp_path, base_url=srv.url, progress=False)
        assert len(srv.log) == n
    _same_files(remote, tmp_path)
    a = te.open_embeddings(tmp_path, bbox=BBOX, year=2024).values
    b = te.open_embeddings(remote, bbox=BBOX, year=2024).values
    np.testing.assert_array_equal(a, b)
    assert not any(f.endswith(".part") for _, _, fs in os.walk(tmp_path) for f in fs)


def test_dropped_connection_resumes_with_range(remote, tmp_path):
    with serve_tiles(remote, drop_after=300_000, drop_times=1) as srv:
        te.fetch_tiles(BBOX, 2024, dest=tmp_path, base_url=srv.url, progress=False, backoff=0.01)
        ranged = [entry for entry in srv.log if entry[2] == 206]
    codes = [r for r in ranged if r[0].endswith(".npy") and "scales" not in r[0]]
    assert len(codes) == 2  # each tile's codes resumed once, from where the cut left off
    assert all(0 < int(r[1][len("bytes="):-1]) <= 300_000 for r in codes)
    _same_files(remote, tmp_path)


def test_server_without_range_restarts_cleanly(remote, tmp_path):
    with serve_tiles(remote, drop_after=30_000, drop_times=1, honour_range=False) as srv:
        te.fetch_tiles(BBOX, 2024, dest=tmp_path, base_url=srv.url, progress=False, backoff=0.01)
        assert all(entry[2] == 200 for entry in srv.log)
    _same_files(remote, tmp_path)


def test_server_errors_are_retried(remote, tmp_path):
    with serve_tiles(remote, fail_times=2) as srv:
        te.fetch_tiles(BBOX, 2024, dest=tmp_path, base_url=srv.url, progress=False, backoff=0.01)
        assert sum(entry[2] == 503 for entry in srv.log) == 2 * 6
    _same_files(remote, tmp_path)


def test_persistent_drop_fails_and_never_leaves_a_whole_looking_file(remote, tmp_path):
    with serve_tiles(remote, drop_after=10_000, drop_times=100, honour_range=False) as srv:
        with pytest.raises(DownloadError, match="failed after 3 attempts"):
            te.fetch_tiles(BBOX, 2024, dest=tmp_path, base_url=srv.url, progress=False, retries=2, backoff=0.01)
    p = grid.tile_paths(tmp_path, 0.15, 52.05, 2024)
    assert not os.path.exists(p["codes"])  # only the .part file, never the final name
    assert os.path.exists(p["codes"] + ".part")
    # a later good server completes the partial file
    with serve_tiles(remote) as srv:
        te.fetch_tiles(BBOX, 2024, dest=tmp_path, base_url=srv.url, progress=False)
    _same_files(remote, tmp_path)


def test_missing_remote_file_is_a_clear_error(remote, tmp_path):
    with serve_tiles(remote) as srv:
        with pytest.raises(DownloadError, match="404"):
            te.fetch_tiles((1.0, 40.0, 1.1, 40.1), 2024, dest=tmp_path, base_url=srv.url, progress=False)
        assert len(srv.log) == 1  # a 404 is not retried


def test_checksum_mismatch_is_refused(remote, tmp_path):
    p = grid.tile_paths(remote, 0.15, 52.05, 2024)
    good = hashlib.sha256(open(p["codes"], "rb").read()).hexdigest()
    with serve_tiles(remote) as srv:
        url = tile_urls(0.15, 52.05, 2024, base_url=srv.url)["codes"]
        with pytest.raises(DownloadError, match="SHA-256"):
            download(url, tmp_path / "x.npy", sha256="0" * 64, progress=False)
        assert not (tmp_path / "x.npy").exists() and not (tmp_path / "x.npy.part").exists()
        download(url, tmp_path / "y.npy", sha256=good, progress=False)
    assert (tmp_path / "y.npy").exists()


def test_truncated_npy_from_server_is_refused(tmp_path):
    src = tmp_path / "src"
    te.testing.make_tiles(src, tiles=[(0.15, 52.05)], years=[2024], shape=(16, 12))
    p = grid.tile_paths(src, 0.15, 52.05, 2024)
    data = open(p["codes"], "rb").read()
    open(p["codes"], "wb").write(data[:-100])  # the server itself holds a short file
    with serve_tiles(src) as srv:
        url = tile_urls(0.15, 52.05, 2024, base_url=srv.url)["codes"]
        with pytest.raises(DownloadError, match="not a whole .npy"):
            download(url, tmp_path / "dl" / "t.npy", progress=False)
    assert not os.path.exists(tmp_path / "dl" / "t.npy")


def test_mixing_versions_in_one_folder_is_refused(remote, tmp_path):
    with serve_tiles(remote) as srv:
        te.fetch_tiles(BBOX, 2024, dest=tmp_path, base_url=srv.url, progress=False)
        with pytest.raises(DownloadError, match="versions must not be mixed"):
            te.fetch_tiles(BBOX, 2024, dest=tmp_path, base_url=srv.url, dataset="v1.1-cam", progress=False)


def test_patch_url_hook(remote, tmp_path):
    seen = []
    with serve_tiles(remote) as srv:
        def patch(u):
            seen.append(u)
            return u + "?sig=abc"
        te.fetch_tiles((0.1, 52.0, 0.2, 52.1), 2024, dest=tmp_path, base_url=srv.url, progress=False, patch_url=patch)
        assert all(entry[0].endswith("?sig=abc") for entry in srv.log)
    assert len(seen) == 3


def test_file_url_gets_the_same_checks(tmp_path):
    src = tmp_path / "src.bin"
    src.write_bytes(b"abc" * 1000)
    good = hashlib.sha256(src.read_bytes()).hexdigest()
    out = download(src.as_uri(), tmp_path / "d" / "out.bin", sha256=good, progress=False)
    assert open(out, "rb").read() == src.read_bytes()
    with pytest.raises(DownloadError, match="SHA-256"):
        download(src.as_uri(), tmp_path / "d" / "bad.bin", sha256="0" * 64, progress=False)
    with pytest.raises(DownloadError, match="expected 10"):
        download(src.as_uri(), tmp_path / "d" / "size.bin", expected_size=10, progress=False)
    with pytest.raises(DownloadError, match="cannot read"):
        download((tmp_path / "nope.bin").as_uri(), tmp_path / "d" / "nope.bin", progress=False)
    assert sorted(os.listdir(tmp_path / "d")) == ["out.bin"]


def test_check_response_can_refuse_without_retrying(remote, tmp_path):
    seen = []

    def refuse(response):
        seen.append(response.status_code)
        raise DownloadError("not what was asked for")

    with serve_tiles(remote) as srv:
        url = tile_urls(0.15, 52.05, 2024, base_url=srv.url)["codes"]
        with pytest.raises(DownloadError, match="not what was asked for"):
            download(url, tmp_path / "x.npy", progress=False, check_response=refuse, backoff=0.01)
        assert len(srv.log) == 1
    assert seen == [200] and not os.listdir(tmp_path)


# --- the geotessera backend, against a stand-in module that records what it is asked ------


class _FakeGeoTessera:
    """Stands in for ``geotessera.GeoTessera`` (0.10): records calls, writes synthetic tiles
    where ``download_tile`` would, returns ``False`` for tiles named in ``fail``."""

    def __init__(self, log, scratch, fail=()):
        self.log, self.scratch, self.fail = log, scratch, set(fail)

    def module(self, version="0.10.1"):
        import types

        fake = self

        class GeoTessera:
            def __init__(self, dataset_version="v1", dataset_variant=None, cache_dir=None, embeddings_dir=None,
                         registry_url=None, registry_path=None, registry_dir=None):
                fake.log.append(("init", {"dataset_version": dataset_version, "dataset_variant": dataset_variant,
                                          "embeddings_dir": os.fspath(embeddings_dir)}))
                self.embeddings_dir = os.fspath(embeddings_dir)

            def download_tile(self, lon, lat, year, progress_callback=None, refresh=False):
                import json

                with open(os.path.join(self.embeddings_dir, grid.METADATA_FILE)) as f:
                    sidecar = json.load(f)
                fake.log.append(("download_tile", (lon, lat, year, refresh), sidecar))
                if grid.tile_name(lon, lat) in fake.fail:
                    return False
                src = os.path.join(fake.scratch, grid.tile_name(lon, lat))
                te.testing.make_tiles(src, tiles=[(lon, lat)], years=[year], shape=(48, 32), seed=4)
                a, b = grid.tile_paths(src, lon, lat, year), grid.tile_paths(self.embeddings_dir, lon, lat, year)
                for key in ("codes", "scales", "landmask"):
                    os.makedirs(os.path.dirname(b[key]), exist_ok=True)
                    with open(a[key], "rb") as fin, open(b[key], "wb") as fout:
                        fout.write(fin.read())
                return True

        mod = types.ModuleType("geotessera")
        mod.__version__ = version
        mod.GeoTessera = GeoTessera
        return mod


@pytest.fixture
def fake_geotessera(monkeypatch, tmp_path):
    """``fake_geotessera(version=..., fail=...)`` installs a stand-in ``geotessera``; returns its call log."""
    import sys

    def install(version="0.10.1", fail=()):
        log = []
        monkeypatch.setitem(sys.modules, "geotessera", _FakeGeoTessera(log, tmp_path / "scratch", fail).module(version))
        return log

    return install


def _no_geotessera(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "geotessera", None)  # "import geotessera" raises ImportError


def test_geotessera_backend_calls_and_files(fake_geotessera, tmp_path):
    import json

    log = fake_geotessera()
    dest = tmp_path / "d"
    paths = te.fetch_tiles(BBOX, 2024, dest=dest, backend="geotessera", progress=False)
    assert log[0] == ("init", {"dataset_version": "v1", "dataset_variant": "vultr", "embeddings_dir": str(dest)})
    calls = [entry[1] for entry in log[1:]]
    assert calls == [(lon, lat, 2024, False) for lon, lat in grid.tiles_in_bbox(BBOX)] == [
        (0.15, 52.05, 2024, False), (0.25, 52.05, 2024, False)]
    for (lon, lat), p in zip(grid.tiles_in_bbox(BBOX), paths):
        want = grid.tile_paths(dest, lon, lat, 2024)
        assert p == {k: want[k] for k in ("codes", "scales", "landmask")}
        ref = grid.tile_paths(tmp_path / "scratch" / grid.tile_name(lon, lat), lon, lat, 2024)
        for k in p:
            assert open(p[k], "rb").read() == open(ref[k], "rb").read()
    da = te.open_embeddings(dest, bbox=(0.11, 52.01, 0.19, 52.09), year=2024)
    assert da.attrs["dataset_version"] == "v1" and np.isfinite(da.values).any()
    meta = json.loads((dest / grid.METADATA_FILE).read_text())
    assert meta["years"] == [2024] and "geotessera 0.10.1" in meta["source_url"]
    # overwrite maps onto refresh=True; the sidecar geotessera sees names its dataset
    log.clear()
    te.fetch_tiles((0.11, 52.01, 0.19, 52.09), 2024, dest=dest, backend="geotessera", progress=False, overwrite=True)
    assert log[1][1] == (0.15, 52.05, 2024, True)
    assert (log[1][2]["dataset_version_path"], log[1][2]["dataset_variant"]) == ("v1", "vultr")


def test_geotessera_backend_names_v11_as_geotessera_does(fake_geotessera, tmp_path):
    log = fake_geotessera()
    te.fetch_tiles((0.11, 52.01, 0.19, 52.09), 2024, dest=tmp_path / "d", dataset="v1.1-cam", progress=False)
    assert log[0][1]["dataset_version"] == "v1.1" and log[0][1]["dataset_variant"] == "cambridge"
    sidecar = log[1][2]  # what geotessera 0.10 validates: version path + variant -> npy dir v1.1-cam
    assert (sidecar["dataset_version_path"], sidecar["dataset_variant"], sidecar["dataset_path"]) == (
        "v1.1", "cambridge", "v1.1-cam")


def test_auto_uses_geotessera_only_when_the_call_maps(fake_geotessera, remote, tmp_path):
    log = fake_geotessera()
    te.fetch_tiles((0.11, 52.01, 0.19, 52.09), 2024, dest=tmp_path / "a", progress=False)  # backend="auto"
    assert [e[0] for e in log] == ["init", "download_tile"]
    log.clear()
    with serve_tiles(remote) as srv:  # a mirror, a URL hook, another dataset: the builtin client
        te.fetch_tiles(BBOX, 2024, dest=tmp_path / "b", base_url=srv.url, progress=False)
        default = te.io.fetch.DEFAULT_BASE_URL
        te.fetch_tiles(BBOX, 2024, dest=tmp_path / "c", patch_url=lambda u: srv.url + u[len(default):], progress=False)
        te.fetch_tiles(BBOX, 2024, dest=tmp_path / "e", base_url=srv.url, dataset="v2-2B-L~beta1", progress=False)
        assert len(srv.log) == 3 * 6
    assert log == []
    _same_files(remote, tmp_path / "b")


def test_auto_falls_back_when_geotessera_is_missing_or_old(fake_geotessera, monkeypatch, remote, tmp_path):
    from tessera_explore.io import fetch

    with serve_tiles(remote) as srv:
        monkeypatch.setattr(fetch, "DEFAULT_BASE_URL", srv.url)  # a call that would map onto geotessera
        _no_geotessera(monkeypatch)
        te.fetch_tiles(BBOX, 2024, dest=tmp_path / "a", progress=False)
        assert len(srv.log) == 6
        log = fake_geotessera(version="0.7.5")
        te.fetch_tiles(BBOX, 2024, dest=tmp_path / "b", progress=False)
        assert len(srv.log) == 12 and log == []
    _same_files(remote, tmp_path / "a")
    _same_files(remote, tmp_path / "b")


def test_geotessera_backend_without_geotessera_is_a_clear_error(monkeypatch, tmp_path):
    _no_geotessera(monkeypatch)
    with pytest.raises(DownloadError, match="geotessera is not installed.*backend='builtin'") as info:
        te.fetch_tiles(BBOX, 2024, dest=tmp_path / "d", backend="geotessera", progress=False)
    assert isinstance(info.value, te.TesseraExploreError)
    assert not (tmp_path / "d").exists()  # nothing was started


def test_geotessera_backend_refuses_what_does_not_map(fake_geotessera, tmp_path):
    fake_geotessera(version="0.7.5")
    with pytest.raises(DownloadError, match="geotessera 0.7.5 is installed, but 0.10 or later"):
        te.fetch_tiles(BBOX, 2024, dest=tmp_path, backend="geotessera", progress=False)
    log = fake_geotessera()
    with pytest.raises(DownloadError, match="base_url, checksums cannot be passed to geotessera"):
        te.fetch_tiles(BBOX, 2024, dest=tmp_path, backend="geotessera", base_url="http://mirror",
                       checksums={"grid_0.15_52.05.npy": "0" * 64}, progress=False)
    with pytest.raises(DownloadError, match="dataset 'v2-2B-L~beta1' has no equivalent"):
        te.fetch_tiles(BBOX, 2024, dest=tmp_path, backend="geotessera", dataset="v2-2B-L~beta1", progress=False)
    with pytest.raises(DownloadError, match="backend must be"):
        te.fetch_tiles(BBOX, 2024, dest=tmp_path, backend="gt", progress=False)
    assert log == []


def test_geotessera_failed_tile_is_an_error(fake_geotessera, tmp_path):
    fake_geotessera(fail={"grid_0.25_52.05"})
    with pytest.raises(DownloadError, match="could not download tile grid_0.25_52.05 for 2024"):
        te.fetch_tiles(BBOX, 2024, dest=tmp_path, backend="geotessera", progress=False)
