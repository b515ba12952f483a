"""The conformance plugin end to end: options, feature gating, NOT_SUPPORTED, the report (also
under pytest-xdist, where only the controller writes it), usage errors. Each case runs a real
pytest process over small synthetic conformance tests that need no cluster."""
from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]

SUITE = '''
import pytest
from conformance.targets.base import NotSupported

@pytest.mark.features("L4AuthorizationPrincipals")
def test_passes():
    """The implementation MUST pass this."""

@pytest.mark.features("L4AuthorizationNamespaces")
def test_unsupported():
    """The implementation MUST never get here when the feature is unsupported."""
    raise AssertionError("ran although not supported")

@pytest.mark.features("L4AuthorizationPorts")
def test_fails():
    """The implementation MUST fail this one."""
    assert 1 == 2, "ports broke"

@pytest.mark.features("L4AuthorizationIPBlocks")
def test_exempt():
    """The implementation MUST be exempted from this."""
    raise AssertionError("ran although exempt")

@pytest.mark.features("HeadlessService")
def test_runtime_not_supported():
    """The implementation MUST report what it cannot do."""
    raise NotSupported("the target cannot capture packets")

@pytest.mark.features("SeedWalkthroughL4")
@pytest.mark.description("The seed MUST work.")
def test_seed():
    pass

def test_plain_unit_test():
    pass
'''

SUPPORTED = "L4AuthorizationPrincipals,L4AuthorizationPorts,L4AuthorizationIPBlocks,HeadlessService,SeedWalkthroughL4"


def run(tmp_path: Path, *args: str, suite: str = SUITE) -> subprocess.CompletedProcess:
    (tmp_path / "test_synthetic.py").write_text(textwrap.dedent(suite))
    return subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", str(tmp_path),
                           "--implementation", "acme-mesh/1.2.3", *args],
                          cwd=tmp_path, capture_output=True, text=True, timeout=120)


def test_help_lists_the_options_without_a_cluster():
    out = subprocess.run([sys.executable, "-m", "pytest", "--help"], cwd=REPO, capture_output=True,
                         text=True, timeout=60).stdout
    for option in ("--target", "--kubeconfig", "--context", "--profile", "--supported-features",
                   "--exempt-features", "--report", "--keep-cluster", "--implementation"):
        assert option in out


@pytest.mark.parametrize("xdist", [[], ["-n", "2"]], ids=["single", "xdist"])
def test_report_counts_not_supported_skipped_and_failed_never_as_passed(tmp_path, xdist):
    report = tmp_path / "out" / "report.yaml"
    junit = tmp_path / "junit.xml"
    done = run(tmp_path, "--supported-features", SUPPORTED, "--exempt-features", "L4AuthorizationIPBlocks",
               "--report", str(report), "--junitxml", str(junit), *xdist)
    assert done.returncode == 1, done.stdout[-2000:]
    doc = yaml.safe_load(report.read_text())
    assert doc["apiVersion"].startswith("conformance.") and doc["kind"] == "ConformanceReport"
    assert doc["implementation"] == {"name": "acme-mesh", "version": "1.2.3"}
    assert doc["target"] == "reference" and doc["suiteVersion"]
    assert doc["statistics"] == {"passed": 2, "failed": 1, "skipped": 1, "notSupported": 2}
    [l4] = [p for p in doc["profiles"] if p["name"] == "AMBIENT-L4"]
    assert l4["core"]["result"] == "failure"
    [failed] = l4["core"]["failedTests"]
    assert failed["name"].endswith("test_fails") and "ports broke" in failed["reason"]
    assert {t["name"].split("::")[1] for t in l4["core"]["notSupportedTests"]} == {"test_unsupported", "test_runtime_not_supported"}
    assert [t["name"].split("::")[1] for t in l4["core"]["skippedTests"]] == ["test_exempt"]
    [seed] = [p for p in doc["profiles"] if p["name"] == "SEED-WALKTHROUGH"]
    assert seed["core"]["result"] == "success"
    assert "ran although" not in done.stdout
    assert junit.exists() and "test_fails" in junit.read_text()
    assert "AMBIENT-L4: core failure" in done.stdout


def test_all_passing_profile_is_success_and_profile_filter_deselects(tmp_path):
    report = tmp_path / "report.yaml"
    done = run(tmp_path, "--profile", "SEED-WALKTHROUGH", "--report", str(report))
    assert done.returncode == 0, done.stdout[-2000:]
    doc = yaml.safe_load(report.read_text())
    assert [p["name"] for p in doc["profiles"]] == ["SEED-WALKTHROUGH"]
    assert doc["profiles"][0]["core"]["result"] == "success"
    assert doc["statistics"] == {"passed": 1, "failed": 0, "skipped": 0, "notSupported": 0}
    assert "2 passed, 5 deselected" in done.stdout  # the plain unit test is never deselected


def test_unsupported_core_feature_makes_the_profile_partial(tmp_path):
    suite = '''
import pytest
@pytest.mark.features("L4AuthorizationPrincipals")
def test_a():
    """It MUST pass."""
@pytest.mark.features("L4AuthorizationNamespaces")
def test_b():
    """It MUST pass."""
'''
    report = tmp_path / "report.yaml"
    done = run(tmp_path, "--supported-features", "L4AuthorizationPrincipals", "--report", str(report), suite=suite)
    assert done.returncode == 0
    [l4] = yaml.safe_load(report.read_text())["profiles"]
    assert l4["core"]["result"] == "partial"
    assert l4["core"]["statistics"] == {"passed": 1, "failed": 0, "skipped": 0, "notSupported": 1}


@pytest.mark.parametrize("suite, message", [
    ('import pytest\n@pytest.mark.features("NoSuchFeature")\ndef test_x():\n    """It MUST."""\n',
     "unknown feature(s) NoSuchFeature"),
    ('import pytest\n@pytest.mark.features("HeadlessService")\ndef test_x():\n    """It should."""\n',
     "needs a description with a MUST sentence"),
])
def test_bad_test_declarations_are_usage_errors(tmp_path, suite, message):
    done = run(tmp_path, suite=suite)
    assert done.returncode == 4 and message in done.stderr


def test_bad_options_are_usage_errors(tmp_path):
    assert "unknown profile(s) L9" in run(tmp_path, "--profile", "L9").stderr
    assert "unknown feature(s) Nope" in run(tmp_path, "--supported-features", "Nope").stderr
