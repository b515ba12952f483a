"""The chaos experiments are Chaos Toolkit's own format and validate as written, for either
target (kubernetes cannot run here: no API server; loading and validating it is what we can show),
and the chaostoolkit-kubernetes activities the provider calls on that target take the arguments
it passes."""
from __future__ import annotations

import inspect
import os
import pathlib
import subprocess
import sys

import pytest
import yaml

REPO = pathlib.Path(__file__).resolve().parents[2]
EXPERIMENTS = sorted((REPO / "chaos" / "experiments").glob("*.yaml"))
NAMES = {"ztunnel-kill", "ztunnel-restart", "waypoint-kill", "waypoint-ha", "istiod-down", "cert-rotation",
         "ca-unreachable", "node-partition"}


def test_every_experiment_of_the_issue_exists():
    assert {p.stem for p in EXPERIMENTS} == NAMES


@pytest.mark.parametrize("path", EXPERIMENTS, ids=lambda p: p.stem)
def test_experiment_is_in_chaos_toolkits_format_and_validates(path, monkeypatch):
    from chaoslib.experiment import ensure_experiment_is_valid
    experiment = yaml.safe_load(path.read_text())
    for key in ("title", "description", "tags", "configuration", "steady-state-hypothesis", "method", "rollbacks"):
        assert key in experiment, f"{path.name}: no {key}"
    assert experiment["configuration"]["ambient_experiment"] == path.stem
    assert all("tolerance" in p for p in experiment["steady-state-hypothesis"]["probes"])
    monkeypatch.setenv("AMBIENT_TARGET", "kubernetes")
    ensure_experiment_is_valid(experiment)   # imports every provider and checks its arguments


def test_chaos_validate_accepts_the_kubernetes_configuration(tmp_path):
    env = dict(os.environ, AMBIENT_TARGET="kubernetes", AMBIENT_KUBECONFIG="/nonexistent/kubeconfig",
               PYTHONPATH=str(REPO))
    done = subprocess.run([sys.executable, "-m", "chaostoolkit", "--log-file", str(tmp_path / "chaos.log"),
                           "validate", str(EXPERIMENTS[0])],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and "look valid" in done.stdout + done.stderr, done.stdout + done.stderr


def test_chaostoolkit_kubernetes_activities_take_the_arguments_the_provider_passes():
    from chaosk8s.daemonset.probes import daemon_set_fully_available
    from chaosk8s.deployment.actions import scale_deployment
    from chaosk8s.pod.actions import terminate_pods
    from chaosk8s.pod.probes import pods_in_phase
    calls = {terminate_pods: ("label_selector", "name_pattern", "ns", "grace_period", "all"),
             scale_deployment: ("name", "replicas", "ns"), daemon_set_fully_available: ("name", "ns"),
             pods_in_phase: ("label_selector", "phase", "ns")}
    for fn, names in calls.items():
        assert set(names) <= set(inspect.signature(fn).parameters), fn.__name__
