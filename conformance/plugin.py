"""The conformance suite's pytest plugin: options, feature gating, the target and scenario
fixtures, and the ConformanceReport (written by the controller process only, so it works
under pytest-xdist).

Loaded through the `pytest11` entry point (installed package) or the root conftest.py (a
checkout). It does nothing to tests that carry no `features` marker, and it starts a cluster
only when a conformance test actually needs the `target` fixture.
"""
from __future__ import annotations

import os
import time

import pytest

from conformance import features as registry
from conformance.report import ReportCollector, NOT_SUPPORTED_PREFIX, EXEMPT_PREFIX
from conformance.targets import TARGETS, target_class
from conformance.targets.base import NotSupported

PROP = "conformance."


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("ambient-conformance", "ambient mesh conformance suite")
    group.addoption("--target", choices=sorted(TARGETS), default="reference",
                    help="implementation to certify: the embedded reference cluster (default) or any "
                         "Kubernetes cluster with a mesh installed")
    group.addoption("--kubeconfig", default=None, help="kubeconfig for --target kubernetes "
                    "(default: $KUBECONFIG or ~/.kube/config)")
    group.addoption("--context", default=None, help="kubeconfig context for --target kubernetes")
    # -- the kubernetes target's opt-in to restarting the mesh (issue 14 item 5) --
    group.addoption("--allow-mesh-restart", action="store_true", default=False,
                    help="let --target kubernetes patch and roll out istiod and the ztunnel DaemonSet "
                         "(a short workload certificate TTL: WorkloadCertificateRenewal); only on a "
                         "cluster the run may disturb")
    group.addoption("--profile", action="append", default=[], metavar="PROFILE",
                    help=f"run only this profile; repeatable; default all ({', '.join(registry.PROFILES)})")
    group.addoption("--supported-features", default=None, metavar="A,B",
                    help="comma list of features the implementation supports "
                         "(default: what the target declares)")
    group.addoption("--exempt-features", default="", metavar="A,B",
                    help="comma list of features to skip (reported as skipped, never as passed)")
    group.addoption("--report", default=None, metavar="PATH",
                    help="write a YAML ConformanceReport here")
    group.addoption("--keep-cluster", action="store_true", default=False,
                    help="leave the reference cluster running after the session")
    group.addoption("--implementation", default=None, metavar="NAME/VERSION",
                    help="implementation name and version to declare in the report")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "features(*names): conformance features this test exercises "
                                       "(see docs/CONFORMANCE.md); makes it a conformance test")
    config.addinivalue_line("markers", "description(text): the MUST sentence of a conformance test "
                                       "(default: the test's docstring)")
    _check_options(config)
    if config.getoption("allow_mesh_restart"):
        # an environment variable, so the target's supported_features() (a classmethod) and the
        # xdist workers see it too
        from conformance.targets.kubernetes import KubernetesTarget
        os.environ[KubernetesTarget.MESH_RESTART_ENV] = "1"
    if not hasattr(config, "workerinput"):
        # This run's clusters are named after its controller (xdist workers inherit the variable).
        os.environ["AC_RUN_OWNER"] = str(os.getpid())
    if config.getoption("report") and not hasattr(config, "workerinput"):
        config.pluginmanager.register(ReportCollector(config, supported_features(config)),
                                      "ambient-conformance-report")


def _check_options(config: pytest.Config) -> None:
    for opt in ("supported_features", "exempt_features"):
        value = config.getoption(opt)
        if value:
            try:
                registry.check_names(value.split(","), "--" + opt.replace("_", "-"))
            except registry.UnknownFeature as e:
                raise pytest.UsageError(str(e)) from None
    unknown = [p for p in config.getoption("profile") if p not in registry.PROFILES]
    if unknown:
        raise pytest.UsageError(f"--profile: unknown profile(s) {', '.join(unknown)}; "
                                f"choose from {', '.join(registry.PROFILES)}")
    impl = config.getoption("implementation")
    if impl and "/" not in impl:
        raise pytest.UsageError(f"--implementation {impl!r}: give it as NAME/VERSION, e.g. istio/1.24.0")


def supported_features(config: pytest.Config) -> frozenset[str]:
    declared = config.getoption("supported_features")
    if declared:
        return frozenset(registry.check_names(declared.split(","), "--supported-features"))
    return target_class(config.getoption("target")).supported_features()


def description_of(item: pytest.Item) -> str:
    marker = item.get_closest_marker("description")
    if marker and marker.args:
        return " ".join(str(marker.args[0]).split())
    doc = getattr(getattr(item, "function", None), "__doc__", None) or ""
    return " ".join(doc.strip().split("\n\n")[0].split())


def conformance_features(item: pytest.Item) -> list[str] | None:
    marker = item.get_closest_marker("features")
    if marker is None:
        return None
    return registry.check_names(marker.args, f"{item.nodeid}: @pytest.mark.features")


def pytest_collection_modifyitems(session: pytest.Session, config: pytest.Config, items: list) -> None:
    wanted = set(config.getoption("profile"))
    supported = supported_features(config)
    exempt = set(filter(None, (config.getoption("exempt_features") or "").split(",")))
    target = config.getoption("target")
    keep, deselected = [], []
    for item in items:
        try:
            names = conformance_features(item)
        except registry.UnknownFeature as e:
            raise pytest.UsageError(str(e)) from None
        if names is None:
            keep.append(item)
            continue
        if not names:
            raise pytest.UsageError(f"{item.nodeid}: @pytest.mark.features needs at least one feature name")
        description = description_of(item)
        if "MUST" not in description:
            raise pytest.UsageError(f"{item.nodeid}: a conformance test needs a description with a MUST "
                                    "sentence (docstring or @pytest.mark.description)")
        profiles = registry.profiles_of(names)
        if wanted and not wanted.intersection(profiles):
            deselected.append(item)
            continue
        keep.append(item)
        item.user_properties += [
            (PROP + "features", ",".join(names)),
            (PROP + "profiles", ",".join(profiles)),
            (PROP + "level", registry.level_of(names)),
            (PROP + "description", description),
        ]
        missing = [n for n in names if n not in supported]
        if missing:
            item.add_marker(pytest.mark.skip(
                reason=f"{NOT_SUPPORTED_PREFIX} target {target} does not support {', '.join(missing)}"))
        elif exempt.intersection(names):
            item.add_marker(pytest.mark.skip(
                reason=f"{EXEMPT_PREFIX} exempted by --exempt-features: {', '.join(sorted(exempt & set(names)))}"))
    if deselected:
        config.hook.pytest_deselected(items=deselected)
        items[:] = keep


@pytest.hookimpl(wrapper=True)
def pytest_pyfunc_call(pyfuncitem: pytest.Function):
    # A target may find out only at run time that it cannot do something (e.g. capture packets).
    try:
        return (yield)
    except NotSupported as e:
        pytest.skip(f"{NOT_SUPPORTED_PREFIX} {e}")


@pytest.fixture(scope="session")
def target(pytestconfig: pytest.Config):
    """The implementation under test, started once per session (per xdist worker)."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
    cls = target_class(pytestconfig.getoption("target"))
    tgt = cls.from_options(pytestconfig, worker=worker)
    tgt.start()
    try:
        yield tgt
    finally:
        tgt.stop()


@pytest.fixture(autouse=True)
def _conformance_implementation(request: pytest.FixtureRequest):
    """Records the implementation's declared name/version on each conformance test's report,
    so the controller can put it in the ConformanceReport without starting a target itself."""
    if request.node.get_closest_marker("features") is None:
        yield
        return
    declared = request.config.getoption("implementation")
    if not declared:
        info = request.getfixturevalue("target").info()
        declared = f"{info.implementation}/{info.version}"
    request.node.user_properties.append((PROP + "implementation", declared))
    yield


@pytest.fixture
def scenario(target, request: pytest.FixtureRequest):
    """Fresh namespaces for one test, removed afterwards; see conformance/scenario.py."""
    from conformance.scenario import Scenario
    sc = Scenario(target, request.node.name)
    try:
        yield sc
    finally:
        sc.cleanup()


def pytest_sessionstart(session: pytest.Session) -> None:
    session.config._ac_started = time.monotonic()  # type: ignore[attr-defined]
