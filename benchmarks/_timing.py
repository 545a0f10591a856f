"""Timing helpers shared by the benchmark scripts (run them as ``python benchmarks/bench_x.py``)."""

from __future__ import annotations

import gc
import time
import tracemalloc


def best(f, n: int = 3) -> float:
    """The shortest of ``n`` timed calls of ``f`` (seconds), garbage collected before each."""
    times = []
    for _ in range(n):
        gc.collect()
        t = time.perf_counter()
        r = f()
        times.append(time.perf_counter() - t)
        del r
    return min(times)


def peak_mb(f) -> float:
    """Peak memory traced by tracemalloc (MiB) during one call of ``f``."""
    gc.collect()
    tracemalloc.start()
    r = f()
    peak = tracemalloc.get_traced_memory()[1] / 2**20
    tracemalloc.stop()
    del r
    return peak
