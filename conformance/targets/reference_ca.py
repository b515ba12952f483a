"""The reference target's way to the mesh CA: istiod's NDJSON protocol over `<run dir>/istiod.sock`
(docs/INTERNALS.md "Control plane ↔ data plane"), spoken with the standard library and
`cryptography` only, never the mesh's own code.

A certificate request with a node proxy's own credentials goes over that proxy's OWN config
stream: the reference CA knows a ztunnel by the SO_PEERCRED pid of its stream and refuses a second
stream for the same pod, just as Istio's istiod knows a ztunnel by its own service-account token.
The stream is borrowed from the ztunnel's process (pidfd_getfd) while that process is stopped, so
the ztunnel reads none of the answers; it resumes on the same stream afterwards.
"""
from __future__ import annotations

import contextlib
import copy
import ctypes
import json
import os
import secrets
import signal
import socket
import time

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from conformance.targets.base import CertificateAnswer, TargetError

TTL_ENV = "DEFAULT_WORKLOAD_CERT_TTL"   # Istio's own name; the reference istiod reads it too
SYS_PIDFD_GETFD = 438                   # the generic syscall table entry (x86_64 and aarch64)
ANSWER_SECONDS = 10


# -- istiod's debug view --------------------------------------------------------------------------
def _debug(istiod_sock: str, what: str) -> dict:
    request_id = f"cf-debug-{secrets.token_hex(3)}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(5)
        try:
            s.connect(istiod_sock)
        except OSError:
            return {}
        s.sendall((json.dumps({"type": "debug", "id": request_id, "what": what}) + "\n").encode())
        for message in _lines(s, time.monotonic() + 5):
            if message.get("id") == request_id:
                return message.get("result") or {}
    return {}


def _ztunnel_streams(istiod_sock: str) -> list[dict]:
    result = _debug(istiod_sock, "proxies")
    proxies = result.get("proxies", []) if isinstance(result, dict) else result
    return [p for p in proxies or () if p.get("proxy") == "ztunnel"]


def in_sync(istiod_sock: str, ztunnel_pod: str) -> bool:
    """The ztunnel pod's stream is up and has acknowledged the last config istiod sent it, so no
    config is in flight on it while it is borrowed."""
    return any(p["pod"] == ztunnel_pod and p.get("sentVersion") and p["sentVersion"] == p.get("ackedVersion")
               for p in _ztunnel_streams(istiod_sock))


def ztunnel_streams_summary(istiod_sock: str) -> str:
    """What istiod says of its ztunnel streams, for a timeout message: who is connected, in sync."""
    try:
        streams = _ztunnel_streams(istiod_sock)
    except Exception as exc:  # the debug call itself failing is the finding then
        return f"istiod's debug answer failed: {type(exc).__name__}: {exc}"
    return "; ".join(f"{p.get('pod')} on {p.get('node')}: sent {p.get('sentVersion')}, acked {p.get('ackedVersion')}"
                     + (f", nacked {p['nack']}" if p.get("nack") else "") for p in streams) or "no ztunnel stream"


def ztunnels_connected(istiod_sock: str, nodes: int) -> bool:
    return len({p["node"] for p in _ztunnel_streams(istiod_sock)
                if p.get("sentVersion") and p["sentVersion"] == p.get("ackedVersion")}) >= nodes


# -- a request over the ztunnel's own stream ------------------------------------------------------
def _lines(sock: socket.socket, deadline: float):
    buffered = b""
    while time.monotonic() < deadline:
        try:
            data = sock.recv(65536)
        except (BlockingIOError, socket.timeout):
            continue
        if not data:
            return
        buffered += data
        while b"\n" in buffered:
            line, buffered = buffered.split(b"\n", 1)
            with contextlib.suppress(ValueError):
                yield json.loads(line)


def _csr(spiffe_id: str) -> str:
    key = ec.generate_private_key(ec.SECP256R1())
    csr = (x509.CertificateSigningRequestBuilder().subject_name(x509.Name([]))
           .add_extension(x509.SubjectAlternativeName([x509.UniformResourceIdentifier(spiffe_id)]), critical=True)
           .sign(key, hashes.SHA256()))
    return csr.public_bytes(serialization.Encoding.PEM).decode()


def _uri_sans(chain: list[str]) -> tuple[str, ...]:
    leaf = x509.load_pem_x509_certificate(chain[0].encode())
    sans = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return tuple(sans.get_values_for_type(x509.UniformResourceIdentifier))


def borrow_fd(pid: int, fd: int) -> int:
    libc = ctypes.CDLL(None, use_errno=True)
    pidfd = os.pidfd_open(pid)
    try:
        ours = libc.syscall(SYS_PIDFD_GETFD, pidfd, fd, 0)
        if ours < 0:
            err = ctypes.get_errno()
            raise OSError(err, f"pidfd_getfd({pid}, {fd}): {os.strerror(err)}")
        return ours
    finally:
        os.close(pidfd)


def config_stream_of(pid: int, istiod_sock: str) -> socket.socket:
    """A duplicate of process `pid`'s connected socket to istiod (same connection, same peer)."""
    want = os.path.realpath(istiod_sock)
    for name in sorted(os.listdir(f"/proc/{pid}/fd"), key=int):
        with contextlib.suppress(OSError):
            if not os.readlink(f"/proc/{pid}/fd/{name}").startswith("socket:"):
                continue
            sock = socket.socket(fileno=borrow_fd(pid, int(name)))
            with contextlib.suppress(OSError):
                peer = sock.getpeername()
                if sock.family == socket.AF_UNIX and peer and os.path.realpath(peer) == want:
                    return sock
            sock.close()  # only our duplicate: the process keeps its own descriptor
    raise TargetError(f"process {pid} (a ztunnel) holds no connection to {istiod_sock}")


@contextlib.contextmanager
def stopped(pid: int):
    """The process is stopped meanwhile, so it neither reads the answers nor reconnects."""
    os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(pid, signal.SIGCONT)


def ask_over_stream_of(pid: int, istiod_sock: str, spiffe_ids: list[str]) -> list[CertificateAnswer]:
    if not hasattr(os, "pidfd_open") or os.uname().machine not in ("x86_64", "aarch64"):
        raise TargetError("borrowing the ztunnel's config stream needs pidfd_getfd (Linux x86_64/aarch64)")
    answers = []
    with stopped(pid):
        sock = config_stream_of(pid, istiod_sock)
        try:
            # settimeout keeps the shared descriptor non-blocking, as the ztunnel's event loop wants
            sock.settimeout(0.2)
            for spiffe_id in spiffe_ids:
                request_id = f"cf-csr-{secrets.token_hex(4)}"
                sock.sendall((json.dumps({"type": "csr", "id": request_id, "identity": spiffe_id,
                                          "csr": _csr(spiffe_id)}) + "\n").encode())
                reply = next((m for m in _lines(sock, time.monotonic() + ANSWER_SECONDS)
                              if m.get("id") == request_id), None)
                if reply is None:
                    raise TargetError(f"istiod gave no answer within {ANSWER_SECONDS}s to a certificate "
                                      f"request for {spiffe_id} on the ztunnel's stream")
                if reply.get("type") == "cert" and reply.get("chain"):
                    answers.append(CertificateAnswer(True, tuple(reply["chain"]), _uri_sans(reply["chain"])))
                else:
                    answers.append(CertificateAnswer(False, refusal=str(reply.get("message", reply))))
        finally:
            sock.close()
    return answers


# -- the workload certificate TTL -----------------------------------------------------------------
def with_cert_ttl(deployment: dict, seconds: int | None) -> dict:
    """The istiod Deployment to apply: its own spec, with `DEFAULT_WORKLOAD_CERT_TTL` set to
    `seconds` (or removed for None) on every container."""
    meta = deployment.get("metadata") or {}
    out = {"apiVersion": deployment.get("apiVersion", "apps/v1"), "kind": "Deployment",
           "metadata": {k: meta[k] for k in ("name", "namespace", "labels", "annotations") if k in meta},
           "spec": copy.deepcopy(deployment.get("spec") or {})}
    for container in out["spec"]["template"]["spec"]["containers"]:
        env = [e for e in container.get("env") or () if e.get("name") != TTL_ENV]
        if seconds is not None:
            env.append({"name": TTL_ENV, "value": f"{int(seconds)}s"})
        if env:
            container["env"] = env
        else:
            container.pop("env", None)
    return out


def runs_ttl(pod: dict, seconds: int | None) -> bool:
    want = None if seconds is None else f"{int(seconds)}s"
    return all(next((e.get("value") for e in c.get("env") or () if e.get("name") == TTL_ENV), None) == want
               for c in (pod.get("spec") or {}).get("containers") or ())
