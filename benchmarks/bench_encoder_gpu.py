"""GPU encoder benchmark in one call: px/s by batch size, fp32 vs bf16, with and without
``torch.compile``, peak GPU memory, and agreement with CPU float32 (cosine per pixel).

Usage::

    python benchmarks/bench_encoder_gpu.py [--device cuda] [--pixels 200000] [--models v1.0-qat,v2-small]
                                           [--batch-sizes 1024,4096,16384] [--budget 420] [--json out.json]

Random weights in the published layouts (saved and loaded through ``load_encoder``), the
synthetic pixels of ``bench_encoder.py`` (60 Sentinel-2 dates, 30 + 30 Sentinel-1 dates).
Each configuration is warmed up once (compilation included there, reported separately),
then timed over ``--pixels`` pixels through ``embed_pixels`` (CPU preparation overlapped
with GPU work, pinned host memory, non-blocking copies).  The CPU float32 reference is
computed on ``--check-pixels`` pixels and every configuration's output on the same pixels
is compared with it: cosine per pixel (min, 1st percentile) and max |difference|.
A time budget (``--budget`` seconds, default 420) stops starting new configurations so the
whole run ends inside 8 minutes; skipped ones are listed.  ``--device cpu`` runs the same
script on a CPU (small ``--pixels``), which is how it is tested; there it also measures
dynamic int8 quantisation of the transformer layers (``--int8``, ``embed_pixels(int8=True)``).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_encoder import MODELS, checkpoint, synthetic  # noqa: E402

from tessera_explore.encoder import embed_pixels, load_encoder  # noqa: E402


def cosine(a, b):
    a, b = a.astype(np.float64), b.astype(np.float64)
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def _sync(dev):
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def run(a) -> dict:
    dev = torch.device(a.device)
    cuda = dev.type == "cuda"
    t_start = time.perf_counter()
    report = {"device": torch.cuda.get_device_name(dev) if cuda else "cpu", "torch": torch.__version__,
              "pixels": a.pixels, "results": [], "skipped": []}
    data_all = synthetic(max(a.pixels, a.check_pixels), seed=1)
    sub = lambda d, n: {k: (v[:, :n] if v.ndim > 1 else v) for k, v in d.items()}  # noqa: E731
    check = sub(data_all, a.check_pixels)
    data = sub(data_all, a.pixels)
    amps = ["fp32", "bf16"] if (not cuda or torch.cuda.is_bf16_supported()) else ["fp32"]
    with tempfile.TemporaryDirectory() as tmp:
        for name in a.models.split(","):
            gen = MODELS[name]
            path = checkpoint(name, tmp, qk_norm=a.qk_norm)
            cpu_model = load_encoder(path, device="cpu", data_source="mpc" if gen == "v1.1" else None)
            ref = embed_pixels(cpu_model, **check, device="cpu", amp=False, progress=False)
            configs = [(bs, amp, comp, False) for comp in ([False, True] if a.compile else [False])
                       for amp in amps for bs in a.batch_sizes]
            if a.int8 and not cuda:
                configs.append((a.batch_sizes[0], "fp32", False, True))
            for bs, amp, comp, int8 in configs:
                label = f"{name} bs={bs} {amp}{' compile' if comp else ''}{' int8' if int8 else ''}"
                if time.perf_counter() - t_start > a.budget:
                    report["skipped"].append(label)
                    print(f"{label:40s} skipped (time budget)", flush=True)
                    continue
                model = load_encoder(path, device=str(dev), data_source="mpc" if gen == "v1.1" else None)
                kw = dict(device=str(dev), amp=(amp == "bf16") and "bf16" or False, compile=comp, batch_size=bs,
                          progress=False, **({"int8": True} if int8 else {}))
                if cuda:
                    torch.cuda.reset_peak_memory_stats(dev)
                t0 = time.perf_counter()
                got = embed_pixels(model, **check, **kw)  # warm-up (and compilation) + agreement
                _sync(dev)
                t_warm = time.perf_counter() - t0
                t0 = time.perf_counter()
                embed_pixels(model, **data, **kw)
                _sync(dev)
                t = time.perf_counter() - t0
                cos = cosine(got, ref)
                row = {"model": name, "batch_size": bs, "amp": amp, "compile": comp, "int8": int8,
                       "px_per_s": a.pixels / t, "seconds": t, "warmup_s": t_warm,
                       "peak_gpu_mib": torch.cuda.max_memory_allocated(dev) / 2**20 if cuda else None,
                       "cos_min": float(cos.min()), "cos_p01": float(np.percentile(cos, 1)),
                       "max_abs_diff": float(np.abs(got - ref).max())}
                report["results"].append(row)
                mem = f"{row['peak_gpu_mib']:8.0f} MiB" if cuda else ""
                print(f"{label:40s} {row['px_per_s']:10.1f} px/s  warm-up {t_warm:6.1f} s  {mem}  "
                      f"cos p01 {row['cos_p01']:.6f} min {row['cos_min']:.6f}  max|d| {row['max_abs_diff']:.1e}",
                      flush=True)
                del model
                if cuda:
                    torch.cuda.empty_cache()
    report["total_s"] = time.perf_counter() - t_start
    return report


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--pixels", type=int, default=200_000)
    ap.add_argument("--check-pixels", type=int, default=2_000)
    ap.add_argument("--models", default="v1.0-qat,v2-small")
    ap.add_argument("--batch-sizes", default="1024,4096,16384",
                    type=lambda s: [int(x) for x in s.split(",")])
    ap.add_argument("--no-compile", dest="compile", action="store_false")
    ap.add_argument("--qk-norm", action="store_true")
    ap.add_argument("--int8", action="store_true", help="CPU only: dynamic int8 quantisation of the linear layers")
    ap.add_argument("--budget", type=float, default=420.0)
    ap.add_argument("--json", default=None)
    a = ap.parse_args(argv)
    report = run(a)
    print(f"total {report['total_s']:.1f} s on {report['device']}", flush=True)
    if a.json:
        Path(a.json).write_text(json.dumps(report, indent=1))
    return report


if __name__ == "__main__":
    main()
