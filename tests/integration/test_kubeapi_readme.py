"""The README's walkthrough with kubectl runs as written (the seed article's commands against a
reference cluster started by `cluster up`, whose printed `export KUBECONFIG=` line is eval'ed)."""
from __future__ import annotations

import json
import os
import re
import subprocess

import pytest

from conftest import REPO
from kubeapi_support import KUBECTLS
from reference_impl.cluster import client as cluster_client


def _walkthrough() -> str:
    text = (REPO / "README.md").read_text()
    section = text.split("## The Kubernetes API: the walkthrough with kubectl", 1)[1]
    return re.search(r"```\n(.*?)```", section, re.S).group(1)


@pytest.mark.skipif(not KUBECTLS, reason="no kubectl")
def test_the_readme_kubectl_walkthrough(_cluster_host, cluster_name, tmp_path):
    name = cluster_name("kreadme")
    bindir = tmp_path / "bin"
    bindir.mkdir()
    (bindir / "kubectl").symlink_to(KUBECTLS[0])
    env = {"PATH": f"{bindir}:{REPO / '.venv' / 'bin'}:/usr/bin:/bin:/usr/sbin:/sbin",
           "HOME": str(tmp_path), "AC_CLUSTER": name, "PYTHONPATH": str(REPO)}
    try:
        proc = subprocess.run(["bash", "-e", "-c", _walkthrough()], cwd=REPO, env=env,
                              capture_output=True, text=True, timeout=300,
                              stdin=subprocess.DEVNULL)
    finally:
        cluster_client.down(name)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = proc.stdout
    assert out.count('"Host": "httpbin-') == 2  # both Step-2 calls answered
    assert re.search(r"^httpbin-ambient-waypoint\s+1/1", out, re.M)
    assert "require-sleep-identity" in out and "allow-ip-path-with-jwt serverside-applied" in out
    origin = json.loads(out[out.index('{\n  "origin"'):].split("}", 1)[0] + "}")
    assert origin["origin"].startswith("10.244.")
    assert "Successfully assigned ambient-apps/sleep-ambient-" in out  # describe's events
