"""benchmarks/bench_remote.py runs end to end on a tiny store: every contender reads the
same window, their values agree, and the table has the rows it should.  No timing is
asserted."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

import bench_remote  # noqa: E402


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A published-layout store with 40 m pixels, 128 px shards: a 128 px area on a shard corner."""
    return bench_remote.build_store(tmp_path_factory.mktemp("bench-remote"), size=128, shard=128, shape=(32, 32),
                                    log=lambda *_: None)


def test_the_window_is_the_area_asked_for_on_a_shard_corner(tiny):
    w = bench_remote.window_bbox(tiny, 128)
    assert (w["row0"], w["col0"], w["height"], w["width"]) == (64, 64, 128, 128)


def test_smallest_configuration_runs_and_every_contender_agrees(tiny):
    # through the latency proxy at full depth (the command-line test below reads depth 16 directly)
    records = bench_remote.run_benchmark(tiny, rtts=(20,), sizes=(128,), depths=(128,), repeat=1,
                                         log=lambda *_: None)
    assert not [r for r in records if "error" in r]
    contenders = ["ours", "zarr", "floor"] + (["geotessera"] if bench_remote._has_geotessera() else [])
    for rtt in (20,):
        for depth in (128,):
            cfg = [r for r in records if (r["rtt"], r["depth"]) == (rtt, depth)]
            assert sorted(r["contender"] for r in cfg if r["phase"] == "cold") == sorted(contenders)
            decoded = [r for r in cfg if r["contender"] != "floor"]
            assert {r["values"] for r in decoded} == {"equal"}
            assert {r["sha256"] for r in decoded} == {next(r for r in cfg if r["contender"] == "zarr")["sha256"]}
            assert all(r["shape"] == [depth, 128, 128] and r["requests"] > 0 for r in decoded if r["phase"] == "cold")
            warm = {r["contender"]: r for r in cfg if r["phase"] == "warm"}
            cold = {r["contender"]: r for r in cfg if r["phase"] == "cold"}
            # our cache answers a second read (the root zarr.json is revalidated once per process)
            assert warm["ours"]["requests"] <= 1 < cold["ours"]["requests"]
            floor = next(r for r in cfg if r["contender"] == "floor")
            assert 0 < floor["result_bytes"] <= floor["bytes"]

    rows = bench_remote.summarize(records)
    assert len(rows) == len(contenders)
    table = bench_remote.format_table(rows)
    assert table.count("\n") == 1 + len(rows)
    assert all(f"| {c} " in table for c in contenders)
    verdict = "\n".join(bench_remote.targets(rows))
    assert "Targets at 20 ms, 128² px, depth 128" in verdict and "requests:" in verdict and "warm:" in verdict


def test_the_command_line_smoke_run(tiny, capsys, tmp_path):
    code = bench_remote.main(["--shard", "128", "--tile-shape", "32", "--sizes", "128", "--rtt", "0", "--depths", "16",
                              "--repeat", "1", "--store-dir", str(Path(tiny["root"]).parent),
                              "--store-size", "128", "--contenders", "ours,zarr,floor",
                              "--json", str(tmp_path / "r.json")])
    out = capsys.readouterr().out
    assert code == 0
    assert "| 0 ms | 128² | 16 | ours |" in out and "| 0 ms | 128² | 16 | floor |" in out
    assert (tmp_path / "r.json").exists()
