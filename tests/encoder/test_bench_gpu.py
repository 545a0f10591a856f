"""benchmarks/bench_encoder_gpu.py runs end to end (on CPU here; on CUDA where there is one)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_encoder_gpu.py"


def _load():
    spec = importlib.util.spec_from_file_location("bench_encoder_gpu", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_runs_on_cpu_and_reports(tmp_path):
    out = tmp_path / "r.json"
    report = _load().main(["--device", "cpu", "--pixels", "24", "--check-pixels", "24", "--models", "v2-small",
                           "--batch-sizes", "8,16", "--no-compile", "--int8", "--json", str(out)])
    rows = report["results"]
    assert [(r["batch_size"], r["amp"], r["int8"]) for r in rows] == [
        (8, "fp32", False), (16, "fp32", False), (8, "bf16", False), (16, "bf16", False), (8, "fp32", True)]
    for r in rows:
        assert r["px_per_s"] > 0 and r["peak_gpu_mib"] is None
    assert rows[0]["cos_min"] > 0.99999 and rows[0]["max_abs_diff"] < 1e-5  # fp32 is the reference itself
    assert all(r["cos_p01"] > 0.99 for r in rows)
    assert json.loads(out.read_text())["results"] == rows


def test_budget_skips_configurations():
    report = _load().main(["--device", "cpu", "--pixels", "8", "--check-pixels", "8", "--models", "v2-small",
                           "--batch-sizes", "8", "--no-compile", "--budget", "0"])
    assert report["results"] == [] and len(report["skipped"]) == 2


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_runs_on_cuda():
    report = _load().main(["--device", "cuda", "--pixels", "4096", "--check-pixels", "512", "--models",
                           "v1.0-qat,v2-small", "--batch-sizes", "1024", "--no-compile"])
    assert all(r["peak_gpu_mib"] > 0 and r["cos_p01"] > 0.999 for r in report["results"])
