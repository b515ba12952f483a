"""DESIGN.md's layering, enforced by imports: each part may import only the parts below it, and
the suite talks to a Target, never to the reference mesh's internals."""
from __future__ import annotations

import ast
import pathlib

import pytest

REPO = pathlib.Path(__file__).resolve().parents[2]

# part -> reference_impl parts it may import (besides itself)
ALLOWED = {
    "api": set(),
    "identity": set(),
    "policy": {"api"},
    "netns": set(),
    "hbone": {"identity"},
    "xds": {"api"},
    "controlplane": {"api", "policy", "identity", "xds"},
    # the proxies' shared entry-point life (start, serve until signalled, drain)
    "process": set(),
    "ztunnel": {"hbone", "policy", "xds", "api", "identity", "netns", "process"},
    # The L7 engine shared by the waypoint and the sidecar; the two proxies import it, never
    # each other.
    "l7": {"policy", "hbone", "identity", "xds", "api"},
    "waypoint": {"l7", "hbone", "policy", "xds", "api", "identity", "netns", "process"},
    "sidecar": {"l7", "hbone", "policy", "xds", "api", "identity", "netns", "process"},
    # issue 16: the Envoy waypoint reuses the Python waypoint's config binding and status port
    "waypoint_envoy": {"waypoint", "l7", "policy", "xds", "api", "identity", "process"},
    "cluster": {"api", "apps", "netns"},
    "apps": set(),
}


def reference_impl_imports(path: pathlib.Path, package: str) -> set[str]:
    """The reference_impl parts a module imports (absolute or relative)."""
    parts = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level == 0:
                names = [node.module or ""]
            elif node.level >= 2:  # `from ..x import` inside reference_impl/<part>/
                names = [f"reference_impl.{node.module}" if node.module else "reference_impl"]
                if not node.module:
                    names = [f"reference_impl.{a.name}" for a in node.names]
        for name in names:
            bits = name.split(".")
            if bits[0] == "reference_impl" and len(bits) > 1 and bits[1] != package:
                parts.add(bits[1])
    return parts


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_reference_impl_part_imports_only_the_parts_below_it(package):
    offending = {}
    for path in (REPO / "reference_impl" / package).rglob("*.py"):
        extra = reference_impl_imports(path, package) - ALLOWED[package]
        if extra:
            offending[str(path.relative_to(REPO))] = sorted(extra)
    assert not offending, f"reference_impl/{package} imports parts above it: {offending}"


def test_suite_reaches_the_reference_mesh_only_through_the_cluster_client():
    offending = {}
    for top in ("conformance", "chaos", "load"):
        for path in (REPO / top).rglob("*.py"):
            tree = ast.parse(path.read_text(), str(path))
            for node in ast.walk(tree):
                module = node.module if isinstance(node, ast.ImportFrom) and node.level == 0 else None
                names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
                for name in names + ([module] if module else []):
                    if name.startswith("reference_impl") and not (
                            name == "reference_impl.cluster.client"
                            or (name == "reference_impl.cluster" and
                                all(a.name == "client" for a in node.names))):
                        offending.setdefault(str(path.relative_to(REPO)), []).append(name)
    assert not offending, f"the suite imports reference_impl internals: {offending}"


def test_conformance_tests_speak_only_the_scenario():
    """conformance/tests never reach around the Scenario to its Target (`.target`)."""
    offending = {}
    for path in (REPO / "conformance" / "tests").rglob("*.py"):
        tree = ast.parse(path.read_text(), str(path))
        hits = [node.lineno for node in ast.walk(tree) if isinstance(node, ast.Attribute) and node.attr == "target"]
        if hits:
            offending[str(path.relative_to(REPO))] = hits
    assert not offending, f"conformance tests call the Target directly (add the word to Scenario): {offending}"


def test_the_proxies_share_the_l7_engine_and_never_import_each_other():
    assert "l7" in ALLOWED["waypoint"] and "l7" in ALLOWED["sidecar"]
    assert "sidecar" not in ALLOWED["waypoint"] and "waypoint" not in ALLOWED["sidecar"]
    assert not ALLOWED["l7"] & {"waypoint", "sidecar", "ztunnel", "controlplane"}



def test_only_the_locustfile_imports_locust_or_gevent():
    """Locust monkey-patches with gevent at import: anything else in load/ that imported it would
    patch the CLI (or pytest) process; Locust runs only as its own process."""
    offending = {}
    for path in (REPO / "load").rglob("*.py"):
        if path.name == "locustfile.py":
            continue
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else (
                [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            hits = [n for n in names if n.split(".")[0] in ("locust", "gevent", "geventhttpclient")]
            if hits:
                offending.setdefault(str(path.relative_to(REPO)), []).extend(hits)
    assert not offending, f"load/ modules other than the locustfile import Locust or gevent: {offending}"


# -- chaos experiments (issue 12) -------------------------------------------------------------
def test_chaos_provider_reaches_the_mesh_only_through_a_target():
    """chaos/ builds a conformance Target from the experiment's configuration; it imports no
    part of reference_impl at all (not even the cluster client: the reference target does)."""
    offending = {}
    for path in (REPO / "chaos").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else (
                [node.module or ""] if isinstance(node, ast.ImportFrom) and node.level == 0 else [])
            offending.update({str(path.relative_to(REPO)): n for n in names if n.startswith("reference_impl")})
    assert not offending, f"chaos/ imports reference_impl: {offending}"
