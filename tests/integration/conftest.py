"""Shared fixtures for integration tests that need a real local cluster.

- `cluster_factory(suffix, manifests=(), nodes=2, timeout=60)` starts a cluster named
  `tc-<xdist worker>-<suffix>` (so `pytest -n 2` runs clusters side by side) and downs every
  cluster it started at the end of the session. Pass `name=` to choose the whole name instead.
- `seed_cluster`: one 2-node cluster per worker with the seed's namespaces, httpbin (legacy and
  ambient) and sleep manifests, ready. Tests must leave it as they found it (use their own
  namespaces for extra objects and delete them).
- `cluster_name(suffix)`: the name `cluster_factory` would use.

Integration tests are skipped with the reason when the machine cannot host a cluster (not root,
no network namespaces).
"""
from __future__ import annotations

import os
import pathlib

import pytest

from reference_impl.cluster import client as cluster_client
from reference_impl.cluster.errors import ClusterError

REPO = pathlib.Path(__file__).resolve().parents[2]
SEED = REPO / "fixtures" / "seed"
SEED_MANIFESTS = [SEED / n for n in ("namespaces.yaml", "httpbin-legacy.yaml",
                                     "httpbin-ambient.yaml", "sleep-ambient.yaml")]


def pytest_collection_modifyitems(config, items):
    here = pathlib.Path(__file__).parent
    for item in items:
        if pathlib.Path(str(item.fspath)).is_relative_to(here):
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session")
def _cluster_host():
    try:
        cluster_client.check_prerequisites()
    except ClusterError as exc:
        pytest.skip(str(exc))


@pytest.fixture(scope="session")
def cluster_name(worker_id):
    def name(suffix: str) -> str:
        return cluster_client.run_scoped_name("tc", "" if worker_id == "master" else worker_id, suffix)
    return name


@pytest.fixture(scope="session")
def cluster_factory(_cluster_host, cluster_name):
    cluster_client.sweep_abandoned()  # clusters of an earlier run that was killed
    started: list[cluster_client.ClusterClient] = []

    def make(suffix: str = "", manifests=(), nodes: int = 2, timeout: float = 60,
             name: str | None = None) -> cluster_client.ClusterClient:
        full = name or cluster_name(suffix)
        c = cluster_client.up(full, nodes=nodes, manifests=[os.fspath(m) for m in manifests],
                              timeout=timeout)
        started.append(c)
        return c

    yield make
    for c in started:
        cluster_client.down(c.name)


@pytest.fixture(scope="session")
def seed_cluster(cluster_factory):
    return cluster_factory("seed", SEED_MANIFESTS)
