"""Both published layouts (Cambridge: 32 px inner chunks in 4096 px shards; dclimate v1.1:
256 px in 2048 px, with quality arrays and an unfilled year) and the Icechunk v2 copy,
written by make_store / make_icechunk and read through open_embeddings, locally and over
HTTP: the scene's values, chunk sizes from metadata, quality arrays, years_complete."""

from __future__ import annotations

import numpy as np
import pytest

import tessera_explore as te
from tessera_explore.exceptions import ArgumentError, StoreError
from tessera_explore.io import layout
from tessera_explore.io.codes import codes_window

from .conftest import BBOX_NORTH, NORTH, SEED

#: 300 x 300 px tiles (about 37 m pixels): the area spans more than one 256 px chunk
SHAPE = (300, 300)
YEARS = [2023, 2024]
UNFILLED = 2023


@pytest.fixture(scope="module")
def kinds(tmp_path_factory):
    from tessera_explore.testing import make_tiles
    from tessera_explore.testing.store import make_store

    root = tmp_path_factory.mktemp("kinds")
    make_tiles(root / "tiles", tiles=NORTH, years=YEARS, shape=SHAPE, seed=SEED, version="v1.1")
    make_store(root / "cam.zarr", tiles=NORTH, years=YEARS, shape=SHAPE, seed=SEED, layout="cambridge")
    make_store(root / "dc.zarr", tiles=NORTH, years=YEARS, shape=SHAPE, seed=SEED, layout="dclimate",
               unfilled_years=[UNFILLED])
    return {"root": str(root), "tiles": str(root / "tiles"), "cambridge": str(root / "cam.zarr"),
            "dclimate": str(root / "dc.zarr")}


@pytest.fixture(scope="module")
def icechunk_v2(kinds):
    pytest.importorskip("icechunk", reason="the icechunk package is in requirements/base.txt")
    from tessera_explore.testing.store import make_icechunk

    return make_icechunk(f"{kinds['root']}/dc.icechunk", tiles=NORTH, years=YEARS, shape=SHAPE, seed=SEED,
                         unfilled_years=[UNFILLED])


@pytest.fixture
def served(kinds):
    from tessera_explore.testing.server import serve_folder

    with serve_folder(kinds["root"]) as srv:
        yield srv.url


def _grid_offsets(da, store: str):
    """(row, col) of da's first pixel on its zone grid, and the zone's group."""
    import zarr

    zone = int(str(da.rio.crs.to_epsg())[-2:])
    g = zarr.open_group(store, mode="r")[layout.zone_group(zone)]
    res, _, x0, _, _, y0 = (float(v) for v in g.attrs[layout.SPATIAL_TRANSFORM])
    return round((y0 - float(da.y[0])) / res - 0.5), round((float(da.x[0]) - x0) / res - 0.5), g


@pytest.mark.parametrize("kind", ["cambridge", "dclimate", "dclimate-http"])
def test_each_layout_gives_the_scene_values(kinds, kind, served):
    source = f"{served}/dc.zarr" if kind == "dclimate-http" else kinds[kind.split("-")[0]]
    a = te.open_embeddings(source, bbox=BBOX_NORTH, year=2024, cache=None)
    b = te.open_embeddings(kinds["tiles"], bbox=BBOX_NORTH, year=2024)
    te.validate(a)
    assert a.shape == b.shape and np.array_equal(a.x.values, b.x.values)
    va = a.values
    assert np.isfinite(va).mean() > 0.5
    assert np.array_equal(va, b.values, equal_nan=True)
    assert (a.attrs["dataset_version"], a.attrs["dataset_variant"]) == ("v1.1", "dclimate")


@pytest.mark.parametrize("kind, grid", [("cambridge", layout.CAMBRIDGE), ("dclimate", layout.DCLIMATE)])
def test_chunk_sizes_come_from_each_arrays_metadata(kinds, kind, grid):
    import dask.array as dsa

    da = te.open_embeddings(kinds[kind], bbox=BBOX_NORTH, year=2024, chunks=64)
    r0, c0, g = _grid_offsets(da, kinds[kind])
    assert layout.chunk_grid(g[layout.EMBEDDINGS]) == grid
    assert layout.chunk_grid(g[layout.SCALES]) == grid
    tile = codes_window(da).source.tiles[0]
    assert (tile.inner_chunk, tile.shard) == (grid.inner, grid.shard)
    assert isinstance(da.data, dsa.Array)
    # dask chunk edges fall on the zone grid's inner chunks (a 64 px request on 256 px
    # chunks becomes 256) and never straddle a shard
    side = max(64, grid.inner)
    for off, sizes in ((r0, da.chunks[1]), (c0, da.chunks[2])):
        edges = off + np.cumsum((0,) + sizes)
        assert all(e % side == 0 for e in edges[1:-1]) and max(sizes) <= side
        assert all(p // grid.shard == (q - 1) // grid.shard for p, q in zip(edges[:-1], edges[1:]))
    assert len(da.chunks[2]) > 1


def test_quality_arrays_are_reachable_on_the_arrays_grid(kinds, served):
    local = te.open_embeddings(kinds["dclimate"], bbox=BBOX_NORTH, year=2024)
    q = te.quality(local)
    assert set(q.data_vars) == {*layout.OBS_COUNTS, *layout.MONTH_COVERED}
    assert q["s2_obs_count"].dims == ("y", "x") and q["s2_month_covered"].dims == ("month", "y", "x")
    assert list(q.month.values) == list(range(1, 13)) and q.attrs["year_complete"] is True
    assert np.array_equal(q.x.values, local.x.values) and q.rio.crs == local.rio.crs
    assert q["s2_obs_count"].chunks is not None  # lazy, on the array's chunks
    # the values of the zone group's own arrays at the same pixels
    r0, c0, g = _grid_offsets(local, kinds["dclimate"])
    h, w = local.sizes["y"], local.sizes["x"]
    for name in (*layout.OBS_COUNTS, *layout.MONTH_COVERED):
        want = np.asarray(g[name][(1, Ellipsis, slice(r0, r0 + h), slice(c0, c0 + w))])
        assert np.array_equal(q[name].values, want), name
    # the run's rule: every embedded pixel had at least 15 optical observations
    mask = te.data_mask(local).values
    assert (q["s2_obs_count"].values[mask == 0] >= layout.MIN_S2_OBS).all()
    # eager for arrays without dask, a window of the array gives the window of the arrays
    sub = local.isel(y=slice(5, 40), x=slice(7, 90))
    qs = te.quality(sub, "s1_asc_obs_count")
    assert list(qs.data_vars) == ["s1_asc_obs_count"]
    assert np.array_equal(qs["s1_asc_obs_count"].values, q["s1_asc_obs_count"].values[5:40, 7:90])
    nodask = te.quality(te.open_embeddings(kinds["dclimate"], bbox=BBOX_NORTH, year=2024, chunks=None))
    assert nodask["s2_obs_count"].chunks is None
    assert np.array_equal(nodask["s2_month_covered"].values, q["s2_month_covered"].values)
    # over HTTP: the same
    remote = te.open_embeddings(f"{served}/dc.zarr", bbox=BBOX_NORTH, year=2024, cache=None)
    qr = te.quality(remote)
    for name in q.data_vars:
        assert np.array_equal(qr[name].values, q[name].values), name
    # a store without quality arrays gives none; tiles have no store behind them
    assert not te.quality(te.open_embeddings(kinds["cambridge"], bbox=BBOX_NORTH, year=2024)).data_vars
    with pytest.raises(StoreError, match="s2_obs_count"):
        te.quality(te.open_embeddings(kinds["cambridge"], bbox=BBOX_NORTH, year=2024), "s2_obs_count")
    with pytest.raises(ArgumentError, match="not a Zarr store"):
        te.quality(te.open_embeddings(kinds["tiles"], bbox=BBOX_NORTH, year=2024))


def test_a_year_never_filled_is_not_computed(kinds):
    import zarr

    from tessera_explore.io.store import open_store

    # the store holds data for the year (its fill stopped after a shard), but its
    # years_complete leaves the year out
    g = zarr.open_group(kinds["dclimate"], mode="r")["utm31"]
    assert g.attrs[layout.YEARS_COMPLETE] == [2024]
    assert np.isfinite(np.asarray(g[layout.SCALES][0])).any()
    st = open_store(kinds["dclimate"])
    assert list(st.incomplete_years().values()) == [[UNFILLED]] and st.check_year(UNFILLED) == UNFILLED
    da = te.open_embeddings(kinds["dclimate"], bbox=BBOX_NORTH, year=UNFILLED)
    assert np.isnan(da.values).all()
    assert (te.data_mask(da).values == 2).all()
    q = te.quality(da)
    assert q.attrs["year_complete"] is False and not q["s2_obs_count"].values.any()
    # the same area's complete year reads normally
    ok = te.open_embeddings(kinds["dclimate"], bbox=BBOX_NORTH, year=2024)
    assert (te.data_mask(ok).values == 0).mean() > 0.5
    # a Cambridge-layout store records no years_complete: every year counts
    assert not open_store(kinds["cambridge"]).incomplete_years()


def test_icechunk_v2_repository_opens_and_reads_equal_values(kinds, icechunk_v2, monkeypatch):
    import icechunk

    storage = icechunk.local_filesystem_storage(icechunk_v2)
    assert icechunk.Repository.fetch_spec_version(storage) == icechunk.SpecVersion.v2
    seen = []
    real_open = icechunk.Repository.open

    def spy(storage, config=None, **kw):
        seen.append(config)
        return real_open(storage, config=config, **kw)

    monkeypatch.setattr(icechunk.Repository, "open", spy)
    a = te.open_embeddings(icechunk_v2, bbox=BBOX_NORTH, year=2024)
    # opened with manifest preloading off
    assert seen and seen[0].manifest.preload.max_total_refs == 0
    b = te.open_embeddings(kinds["dclimate"], bbox=BBOX_NORTH, year=2024)
    assert a.rio.crs == b.rio.crs and np.array_equal(a.y.values, b.y.values)
    assert np.array_equal(a.values, b.values, equal_nan=True)
    assert (a.attrs["dataset_version"], a.attrs["dataset_variant"]) == ("v1.1", "dclimate")
    # its quality arrays (month axis last there) read as the Zarr store's
    qa, qb = te.quality(a), te.quality(b)
    for name in qb.data_vars:
        assert qa[name].dims == qb[name].dims and np.array_equal(qa[name].values, qb[name].values), name
    # the year its groups leave out of years_complete is not computed
    u = te.open_embeddings(icechunk_v2, bbox=BBOX_NORTH, year=UNFILLED)
    assert np.isnan(u.values).all() and (te.data_mask(u).values == 2).all()


def test_fetch_region_keeps_quality_arrays_and_years_complete(kinds, served, tmp_path):
    dest = tmp_path / "local.zarr"
    te.fetch_region(BBOX_NORTH, YEARS, dest=dest, source=f"{served}/dc.zarr", progress=False)
    from tessera_explore.io import store

    store._SOURCES.clear()
    a = te.open_embeddings(str(dest), bbox=BBOX_NORTH, year=2024)
    b = te.open_embeddings(kinds["dclimate"], bbox=BBOX_NORTH, year=2024)
    assert np.array_equal(a.values, b.values, equal_nan=True)
    qa, qb = te.quality(a), te.quality(b)
    assert set(qa.data_vars) == set(qb.data_vars)
    for name in qb.data_vars:
        assert np.array_equal(qa[name].values, qb[name].values), name
    assert (te.data_mask(te.open_embeddings(str(dest), bbox=BBOX_NORTH, year=UNFILLED)).values == 2).all()


def test_tile_kinds_follow_the_mosaic_protocol(kinds):
    from tessera_explore.io.mosaic import Tile
    from tessera_explore.io.store import StoreTile, UnfilledTile
    from tessera_explore.io.tiles import NpyTile, TiffTile

    for cls in (NpyTile, TiffTile, StoreTile, UnfilledTile):
        missing = [m for m in ("read", "read_bands", "read_float_into", "valid", "status", "owns", "release_pages",
                               "res", "bounds") if not hasattr(cls, m)]
        assert not missing, (cls.__name__, missing)
    for source, year in ((kinds["tiles"], 2024), (kinds["dclimate"], 2024), (kinds["dclimate"], UNFILLED)):
        tiles = codes_window(te.open_embeddings(source, bbox=BBOX_NORTH, year=year)).source.tiles
        assert tiles and all(isinstance(t, Tile) for t in tiles)


def test_one_map_of_versions_and_model_numbers():
    from tessera_explore import _schema
    from tessera_explore.testing.store import STORE_VARIANTS

    for version, number in (("v1", "1.0"), ("v1.1", "1.1"), ("v2", "2.0"), ("v1.1-cambridge", "1.1")):
        assert layout.model_url(version).endswith("/" + number)
        assert layout.version_from_model(layout.model_url(version)) == _schema.generation_of(version).replace(
            "v1.0", "v1")
    # generations (what the live writer records) name the same model numbers
    assert layout.model_url("v1.0") == layout.model_url("v1")
    assert layout.version_from_model("https://example.org/model/") == "unknown"
    assert all(STORE_VARIANTS[v] == _schema.variant_of(v) for v in STORE_VARIANTS)
    attrs = layout.root_attrs(version="v2", variant="2B-L~beta1", build_version="x", depths=(4, 16, 128))
    assert [d["array"] for d in attrs[layout.GEOEMB_DEPTHS]] == ["embeddings_d4", "embeddings_d16", "embeddings"]
    assert layout.parse_zone_group(layout.zone_group(7)) == 7 and layout.parse_zone_group("31N") is None
    assert layout.parse_hemisphere_group(layout.hemisphere_group(21, "S")) == (21, "S")


def test_the_live_writer_writes_the_published_layout(tmp_path):
    """embed_region's store (created before any tile is embedded) opens as a published
    store: zones, depth, model number and chunk grid (one shard per tile) from the layout."""
    import zarr

    from tessera_explore.io.store import open_store
    from tessera_explore.region.encode import create_store, plan_tiles

    zones = plan_tiles((5.9, 52.1, 6.1, 52.15), tile=96)
    job = {"verb": "embed_area", "bbox": [5.9, 52.1, 6.1, 52.15], "year": 2024, "start": "2024-01-01",
           "end": "2024-12-31", "tile": 96, "zones": [z.name for z in zones], "model": "ckpt", "generation": "v2",
           "depth": 64, "dataset_version": "v2-live"}
    out = str(tmp_path / "live.zarr")
    assert create_store(out, zones, job) is False
    root = zarr.open_group(out, mode="r")
    assert root.attrs[layout.GEOEMB_MODEL] == layout.model_url("v2")
    g = root["utm31"]
    assert g.attrs[layout.PROJ_CODE] == "EPSG:32631" and g.attrs["tile"] == 96
    assert layout.chunk_grid(g[layout.EMBEDDINGS]) == layout.ChunkGrid(32, 96)
    st = open_store(out)
    assert st.zones == [31, 32] and st.nbands == 64 and st.years == [2024]
    assert (st.version, st.variant) == ("v2-live", "ckpt") and not st.incomplete_years()
