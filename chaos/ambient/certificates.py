"""Which certificate a workload serves over time: an uncaptured observer pod (the conformance
suite's HBONE probe, conformance/adversary.py) completes a TLS handshake with a server pod's 15008
every second and notes the leaf's fingerprint and notAfter, verified against the mesh's root.
That shows rotations happen (a new fingerprint before the old one's notAfter) while the traffic
probe shows nothing failed meanwhile."""
from __future__ import annotations

import json
import time

from conformance import adversary as adv
from conformance import workloads as w
from conformance.targets.base import NotSupported, TargetError, wait_until

from . import world
from .session import failed, session

__all__ = ["served_certificates", "renewal_violations"]
OBSERVER_NAMESPACE = "chaos-observer"
OBSERVER = "cert-observer"


def observer_manifests(target, node: str) -> list[dict]:
    return [w.namespace(OBSERVER_NAMESPACE, ambient=False),
            *target.probe_manifests(OBSERVER_NAMESPACE, OBSERVER, node, adv.probe_sources())]


def served_certificates(server: str = "server-1", seconds: float = 14, configuration: dict = None) -> dict:
    """Every distinct certificate `server`'s pod served during `seconds`, with when it was first
    seen (written to certs-served.json); returns how many and how many renewals were on time."""
    s = session(configuration)
    t = s.target
    try:
        observer = next(p for p in t.pods(OBSERVER_NAMESPACE, {"app": OBSERVER}) if p.ready)
        pod = next(p for p in t.pods(world.NAMESPACE, {"app": server}) if p.ready)
        root = t.mesh_trust_anchors()
        certs, end = [], time.time() + min(float(seconds), 60)
        while time.time() < end:
            attempt = adv.tls_attempt("served", pod.ip, f"{pod.ip}:{w.HTTP_TARGET_PORT}", None, root)
            seen = adv.probe(t, observer, [attempt])["served"]
            if seen.get("server_cert_sha256") and (not certs or certs[-1]["sha256"] != seen["server_cert_sha256"]):
                certs.append({"sha256": seen["server_cert_sha256"], "not_after": seen["server_not_after"],
                              "seen_at": round(time.time(), 3)})
            time.sleep(0.5)
    except (StopIteration, TargetError, NotSupported) as e:
        raise failed(f"watch the certificate {server} serves", e if not isinstance(e, StopIteration)
                     else TargetError(f"no Ready {server} or observer pod")) from None
    (s.out / "certs-served.json").write_text(json.dumps(certs, indent=1))
    on_time = sum(1 for old, new in zip(certs, certs[1:]) if new["seen_at"] < old["not_after"])
    return {"distinct": len(certs), "renewals_before_expiry": on_time}


def renewal_violations(minimum_renewals: int = 2, configuration: dict = None) -> int:
    """0 when the method watched at least `minimum_renewals` renewals, each before the old
    certificate's expiry (and nothing was watched before the method); else how many fell short."""
    s = session(configuration)
    path = s.out / "certs-served.json"
    if not path.exists():
        return 0
    certs = json.loads(path.read_text())
    late = sum(1 for old, new in zip(certs, certs[1:]) if new["seen_at"] >= old["not_after"])
    return late + max(0, int(minimum_renewals) - (len(certs) - 1))


def deploy_observer(target, node: str) -> None:
    target.apply(observer_manifests(target, node))
    wait_until(lambda: any(p.ready for p in target.pods(OBSERVER_NAMESPACE, {"app": OBSERVER})), 60, 0.2,
               "the certificate observer pod to be Ready")
