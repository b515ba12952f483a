"""Fixtures of the AMBIENT-L4 tests; the workloads themselves are in l4world.py."""
import pytest

from conformance.tests.l4world import L4World, build_l4_world


@pytest.fixture
def l4(scenario) -> L4World:
    return build_l4_world(scenario)


@pytest.fixture
def l4_two_ports(scenario) -> L4World:
    return build_l4_world(scenario, alt_port=True)


# -- the MESH-HTTP tests' world (issue 9): built once per worker, shared by test_mesh_http_*.py --
@pytest.fixture(scope="session")
def mesh(target):
    from conformance.scenario import Scenario
    from conformance.tests.meshworld import build_mesh_world
    sc = Scenario(target, "mesh-http")
    try:
        yield build_mesh_world(sc)
    finally:
        sc.cleanup()


# -- the shared L7 world (issue 9): one per pytest worker, reused by every L7 test module -------
@pytest.fixture(scope="session")
def l7(target):
    from conformance.scenario import Scenario
    from conformance.tests.l7world import build_l7_world
    sc = Scenario(target, "l7-world")
    try:
        yield build_l7_world(sc)
    finally:
        sc.cleanup()
