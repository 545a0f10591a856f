"""embed_area end to end from local servers: time split (search, load, prepare, encode) and peak memory.

Usage::

    python benchmarks/bench_embed_area.py [--size 100] [--s2-dates 73] [--s1-dates 61]
                                          [--device cpu|cuda] [--threads N] [--no-encode]

A 1 km x 1 km area (100 x 100 px at 10 m) and one year: synthetic Sentinel-2 L2A
(``--s2-dates`` dates, every third with two granules) and Sentinel-1 RTC (``--s1-dates``,
ascending and descending) written as COGs, served by the Range-serving COG server and a
real stac-fastapi-pgstac on 127.0.0.1 (:class:`tessera_explore.testing.stac_server.LocalStac`).
The model is the v2 small student's architecture (7.1 M parameters) with random weights
saved in the published layout and loaded through ``load_encoder`` (the published weights
cannot be downloaded here; the arithmetic is the same).  Peak memory is the process's
resident high-water mark (VmHWM) during ``embed_area``, reset just before it; the
servers' PostgreSQL and uvicorn run in other processes, the COG server in this one.
A second, cached run shows what the cache saves.
"""

from __future__ import annotations

import argparse
import tempfile
import time
import warnings
from pathlib import Path


def _reset_peak() -> None:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass


def _peak_mib() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=100, help="area side in 10 m pixels")
    ap.add_argument("--s2-dates", type=int, default=73)
    ap.add_argument("--s1-dates", type=int, default=61)
    ap.add_argument("--device", default=None)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--no-encode", action="store_true", help="search, load and prepare only")
    ap.add_argument("--bucketed", action="store_true",
                    help="encode v2 with the bucketed sequences (the path before distinct steps), for a before/after")
    args = ap.parse_args()
    if args.bucketed:
        from tessera_explore.encoder import embed as _embed

        _embed._padded_only = lambda model: True
    warnings.simplefilter("ignore")

    import torch

    from tessera_explore.encoder import load_encoder
    from tessera_explore.encoder.area import area_inputs, embed_area
    from tessera_explore.encoder.model import build_encoder, count_parameters
    from tessera_explore.testing.stac_server import LocalStac, unavailable_reason

    reason = unavailable_reason()
    if reason:
        raise SystemExit(f"cannot run: {reason}")
    tmp = Path(tempfile.mkdtemp(prefix="bench-embed-area-"))
    torch.manual_seed(0)
    model = build_encoder("v2")
    cfg = model.config
    ckpt = tmp / "student_small_random.pt"
    torch.save({"args": {"latent_dim": cfg["latent_dim"], "num_layers": cfg["num_layers"], "nhead": cfg["nhead"],
                         "dim_feedforward": cfg["dim_feedforward"], "repr_dim": 128}, "model": model.state_dict()}, ckpt)
    model = load_encoder(ckpt, device=args.device)
    print(f"model: v2 small architecture, {count_parameters(model):,} parameters, device {args.device or 'cpu'}, "
          f"torch threads {args.threads or torch.get_num_threads()}")

    t0 = time.perf_counter()
    scene = {"year": 2022, "shape": (args.size, args.size), "n_s2_dates": args.s2_dates,
             "n_s1_dates": args.s1_dates, "seed": 1}
    with LocalStac([scene], workdir=tmp / "stac") as ls:
        cat = ls.catalogs[0]
        n_s2 = len(cat.items_of("sentinel-2-l2a"))
        n_s1 = len(cat.items_of("sentinel-1-rtc"))
        print(f"servers up with {n_s2} S2 + {n_s1} S1 items in {time.perf_counter() - t0:.1f} s")
        stac = ls.config()
        cache = tmp / "cache"
        _reset_peak()
        t0 = time.perf_counter()
        if args.no_encode:
            prep = area_inputs(ls.bbox, 2022, stac=stac, cache=cache, progress=False)
        else:
            da, prep = embed_area(ls.bbox, 2022, model=model, stac=stac, cache=cache, device=args.device,
                                  num_threads=args.threads, progress=False, return_prepared=True)
        total = time.perf_counter() - t0
        peak = _peak_mib()
        h, w = prep.shape
        t = prep.timings
        print(f"area {h} x {w} = {h * w:,} px; S2 {len(prep.doys)} dates kept of {prep.info['s2_items']} items "
              f"({len(prep.info['s2_dropped_dates'])} dropped under 5 %), S1 {len(prep.sar_ascending_doy)} ascending + "
              f"{len(prep.sar_descending_doy)} descending dates; COG requests {len(ls.cogs.log)}")
        print("| step | s |\n|---|---|")
        for k in ("search", "load", "prepare", "encode"):
            if k in t:
                print(f"| {k} | {t[k]:.2f} |")
        rest = total - t.get("encode", 0.0)
        print(f"| everything but encoding | {rest:.2f} |\n| whole | {total:.2f} |")
        print(f"peak resident memory during the call: {peak:,.0f} MiB")
        if "encode" in t:
            print(f"encoding: {h * w / t['encode']:.1f} px/s")
        n = len(ls.cogs.log)
        t0 = time.perf_counter()
        prep2 = area_inputs(ls.bbox, 2022, stac=stac, cache=cache, progress=False)
        print(f"second run (cached) search+load+prepare: {time.perf_counter() - t0:.2f} s, "
              f"{len(ls.cogs.log) - n} COG requests")
        del prep2
    import shutil

    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
