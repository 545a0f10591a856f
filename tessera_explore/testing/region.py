"""Test support for regional jobs: an operation that takes a known time per chunk.

``Slowed(op, seconds)`` computes exactly what ``op`` computes and then sleeps, so tests
can interrupt a job, or kill a worker, while chunks are still running.
"""

from __future__ import annotations

import time

from ..region.ops import RegionOp

__all__ = ["Slowed"]


class Slowed(RegionOp):
    """``op``'s result, ``seconds`` later (per chunk)."""

    def __init__(self, op: RegionOp, seconds: float):
        self.op, self.seconds = op, float(seconds)
        self.name = op.name
        self.extra_years = op.extra_years

    def resolve(self, open_point) -> None:
        self.op.resolve(open_point)

    def describe(self) -> dict:
        return self.op.describe()

    def __call__(self, areas):
        out = self.op(areas)
        time.sleep(self.seconds)
        return out
