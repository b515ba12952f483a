"""The Chaos Toolkit control around one experiment run: before it, the target (starting a
reference cluster when none is named) and the experiment's workloads (world.py); after it, the
journal, report and timeline in the run's directory, the workloads removed, a cluster it started
stopped. Declared in each experiment's `controls`; `arguments`: waypoint (bool), waypoint_replicas, cert_ttl (seconds:
the workload certificate TTL the world's pods get; restored after), cert_observer (bool: an
uncaptured pod that watches the certificate a server serves, certificates.py), remote_servers
(bool: servers for cross-node streams only, world.py)."""
from __future__ import annotations

import logging

from chaoslib.exceptions import InterruptExecution

from conformance.targets.base import NotSupported, TargetError, wait_until

from . import certificates, report, world
from .session import close_session, open_session, session

log = logging.getLogger("chaostoolkit")


def before_experiment_control(context: dict, configuration: dict = None, waypoint: bool = False,
                              waypoint_replicas: int = 1, cert_ttl: int | None = None,
                              cert_observer: bool = False, remote_servers: bool = False, **_) -> None:
    s = open_session(configuration)
    t = s.target
    try:
        if cert_ttl:
            # before the workloads exist, so every certificate they get has this lifetime
            t.set_workload_certificate_ttl(int(cert_ttl))
            s.event("cert-ttl", seconds=int(cert_ttl))
        t.delete_namespace(world.NAMESPACE)
        wait_until(lambda: not t.pods(world.NAMESPACE), 60, 0.2, f"the old {world.NAMESPACE} pods to go")
        image = t.PROBE_IMAGE
        t.apply(world.manifests(t.nodes(), image, waypoint=waypoint, remote_servers=remote_servers))
        if waypoint:
            wait_until(lambda: t.get("Deployment", world.NAMESPACE, world.WAYPOINT), 60, 0.2,
                       "the waypoint's Deployment to be provisioned")
            if waypoint_replicas != 1:
                t.scale(world.NAMESPACE, world.WAYPOINT, int(waypoint_replicas))
        t.wait_ready(world.NAMESPACE, timeout=120)
        if cert_observer:
            certificates.deploy_observer(t, t.nodes()[0])
        if waypoint:
            wait_until(lambda: len([p for p in t.pods(world.NAMESPACE, {world.GATEWAY_NAME_LABEL: world.WAYPOINT})
                                    if p.ready]) == int(waypoint_replicas), 60, 0.2,
                       f"{waypoint_replicas} Ready waypoint pods")
    except NotSupported as e:
        close_session()
        raise InterruptExecution(f"the experiment's setup is not supported on the {s.kind} target: {e}") from None
    except (TargetError, ValueError) as e:
        close_session()
        raise InterruptExecution(f"the experiment's workloads did not come up: {e}") from None
    s.event("world-ready")


def after_experiment_control(context: dict, state: dict, configuration: dict = None,
                             cert_ttl: int | None = None, **_) -> None:
    s = session(configuration)
    try:
        nums = report.write(state, s.out)
        log.info("ambient chaos report: %s (blast radius %s, recovery %ss, %s failed requests)",
                 s.out / "report.md", nums["blast_radius"], nums["recovery_seconds"], nums["failed_requests"])
    finally:
        for namespace in (world.NAMESPACE, certificates.OBSERVER_NAMESPACE):
            try:
                if s.target.get("Namespace", None, namespace):
                    s.target.delete_namespace(namespace)
            except TargetError as e:
                log.warning("could not remove namespace %s: %s", namespace, e)
        if cert_ttl:
            try:
                s.target.set_workload_certificate_ttl(None)
            except TargetError as e:
                log.warning("could not restore the mesh's certificate TTL: %s", e)
        close_session()
