"""Shared by the regional tests: a LocalCluster of 2 worker processes per test module."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="module")
def client():
    from distributed import Client, LocalCluster

    cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0")
    c = Client(cluster)
    yield c
    c.close()
    cluster.close()
