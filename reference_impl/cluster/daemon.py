"""The cluster daemon: store + API server + controllers + scheduler + kubelet + kube-proxy/DNS.

    python -m reference_impl.cluster.daemon --name NAME --nodes N [--virtual-nodes M]

One asyncio loop on the main thread runs everything (see kubelet.py for why processes must be
forked from this thread). Every store change marks the cluster dirty; the loop then reconciles
controllers, scheduler, kubelets and service routing in one pass. It also ticks every 100 ms to
supervise processes and readiness (only the kubelet: with a thousand simulated pods a full pass
per tick would keep a core busy). `state.json` lists namespaces and pids so that a later `up`
can clean up after a daemon that was SIGKILLed.
"""
from __future__ import annotations

import argparse
import asyncio
import glob
import json
import logging
import os
import signal
import sys
import time

from reference_impl import api
from reference_impl.apps import images

from . import admission, controllers, kubeapi, naming, network, teardown, virtual
from .apiserver import APIServer, HTTPError
from .errors import ClusterError
from .kubelet import Kubelet, proc_start_time
from .services import ServiceRouting
from .store import NETNS_ANNOTATION, Store

log = logging.getLogger("ambient-conformance.cluster")
ADDONS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "addons")
SYSTEM_NAMESPACES = ("default", "kube-system", "istio-system")
TICK = 0.1


def check_images(obj: dict) -> None:
    """Admission: every container image must map to a local program (fail at apply, not later)."""
    kind = obj.get("kind")
    spec = obj.get("spec") or {}
    if kind in ("Deployment", "DaemonSet"):
        spec = ((spec.get("template") or {}).get("spec")) or {}
    elif kind != "Pod":
        return
    meta = obj.get("metadata") or {}
    for container in spec.get("containers") or []:
        image = str(container.get("image", ""))
        if images.find(image) is None:
            try:
                images.command_for(image, container, f"{meta.get('namespace', 'default')}/"
                                                     f"{meta.get('name')}")
            except images.ImageError as exc:
                raise ClusterError(str(exc)) from None


class Daemon:
    def __init__(self, name: str, node_count: int, virtual_node_count: int = 0):
        self.name = name
        self.node_count = node_count
        self.nodes = [naming.node_name(i) for i in range(node_count)]
        self.store = Store(admission=[check_images])
        self.store.add_mutating(admission.sidecar_injector(self._namespace_labels))
        self.virtual = virtual.VirtualKubelet(self.store, virtual_node_count)
        self.routing = ServiceRouting(name, self.store, node_count)
        env = {k: v for k, v in os.environ.items() if k in ("PATH", "LANG", "LC_ALL", "HOME")}
        env.update({"AC_CLUSTER": name, "AC_RUN_DIR": naming.run_dir(name),
                    "AC_API_SOCK": naming.api_sock(name),
                    "PYTHONPATH": os.pathsep.join(filter(None, [images.REPO_ROOT,
                                                               os.environ.get("PYTHONPATH")]))})
        self.kubelet = Kubelet(name, self.store, self.nodes, self.routing, env)
        self.api = APIServer(self.store, {
            "apply": self.apply, "delete": self.store.delete, "delete_pod": self.delete_pod,
            "scale": self.scale, "logs": self.logs, "shutdown": self.request_shutdown})
        self._dirty = asyncio.Event()
        self._stop = asyncio.Event()
        self._state_written = None
        # istiod's CA root (its run-dir file, reference_impl/identity/ca.py), published as ConfigMaps
        self._root_cert = os.path.join(naming.run_dir(name), "ca", "root-cert.pem")

    def _namespace_labels(self, namespace: str) -> dict:
        return ((self.store.get("Namespace", "", namespace) or {}).get("metadata") or {}).get("labels") or {}

    # -- operations behind the API --------------------------------------------------------------
    def apply(self, objects: list[dict]) -> list[dict]:
        return self.store.apply(objects, source="<api>")

    def delete_pod(self, namespace: str, name: str, grace: int | None) -> None:
        if not self.store.mark_pod_deleted(namespace, name, grace):
            raise HTTPError(404, f"pod {namespace}/{name} not found; list pods with "
                                 f"`ambient-conformance cluster get pods -n {namespace}`")

    def scale(self, kind: str, namespace: str, name: str, replicas: int) -> None:
        if kind != "Deployment":
            raise HTTPError(400, f"cannot scale kind {kind!r}; only Deployment")

        def set_replicas(d: dict) -> None:
            d["spec"]["replicas"] = replicas
            d["metadata"]["generation"] = d["metadata"].get("generation", 1) + 1
        if self.store.update("Deployment", namespace, name, set_replicas) is None:
            raise HTTPError(404, f"deployment {namespace}/{name} not found")

    def logs(self, namespace: str, pod: str, container: str | None, tail: str | None) -> str:
        obj = self.store.get("Pod", namespace, pod)
        if obj is None:
            raise HTTPError(404, f"pod {namespace}/{pod} not found")
        names = [c.get("name") for c in (obj.get("spec") or {}).get("containers") or []]
        if container is None:
            if len(names) != 1:
                raise HTTPError(400, f"pod {namespace}/{pod} has containers {', '.join(names)}; "
                                     "choose one with -c")
            container = names[0]
        elif container not in names:
            raise HTTPError(404, f"pod {namespace}/{pod} has no container {container!r}; "
                                 f"it has {', '.join(names)}")
        path = os.path.join(naming.logs_dir(self.name), f"{namespace}_{pod}_{container}.log")
        try:
            with open(path, errors="replace") as f:
                text = f.read()
        except FileNotFoundError:
            return ""
        if tail and tail.isdigit():
            text = "".join(text.splitlines(keepends=True)[-int(tail):])
        return text

    def request_shutdown(self) -> None:
        asyncio.get_running_loop().call_later(0.05, self._stop.set)

    # -- start-up -------------------------------------------------------------------------------
    def _create_cluster_objects(self) -> None:
        for i, node in enumerate(self.nodes):
            self.store.create({
                "apiVersion": "v1", "kind": "Node",
                "metadata": {"name": node, "labels": {controllers.HOSTNAME_LABEL: node},
                             "annotations": {NETNS_ANNOTATION: naming.node_netns(self.name, i)}},
                "spec": {"podCIDR": naming.pod_cidr(i)},
                "status": {"addresses": [{"type": "InternalIP", "address": naming.node_ip(i)},
                                         {"type": "Hostname", "address": node}],
                           "conditions": [{"type": "Ready", "status": "True"}]}})
        for i in range(len(self.virtual.nodes)):
            self.store.create(virtual.node_object(i))
        for ns in SYSTEM_NAMESPACES:
            self.store.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})
        addon_files = sorted(glob.glob(os.path.join(ADDONS_DIR, "*.yaml")))
        if addon_files:
            self.store.apply(api.load_files(addon_files), source="<addons>")

    def write_state(self) -> None:
        state = {"name": self.name, "daemon": [os.getpid(), proc_start_time(os.getpid())],
                 "nodes": self.node_count, "virtualNodes": len(self.virtual.nodes),
                 "netns": [naming.fabric_netns(self.name)]
                 + [naming.node_netns(self.name, i) for i in range(self.node_count)]
                 + self.kubelet.pod_namespaces(),
                 "pids": self.kubelet.process_ids()}
        if state == self._state_written:
            return
        path = naming.state_path(self.name)
        with open(path + ".tmp", "w") as f:
            json.dump(state, f)
        os.replace(path + ".tmp", path)
        self._state_written = state

    # -- the loop -------------------------------------------------------------------------------
    def reconcile(self) -> None:
        controllers.reconcile_deployments(self.store)
        all_nodes = self.nodes + self.virtual.nodes
        controllers.reconcile_daemonsets(self.store, all_nodes)
        controllers.collect_garbage(self.store)
        controllers.schedule(self.store, all_nodes)
        controllers.publish_mesh_objects(self.store, self._root_cert)
        self.virtual.sync()
        self.kubelet.sync()
        self.routing.sync()
        self.write_state()

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._stop.set)
        os.makedirs(naming.logs_dir(self.name), exist_ok=True)
        self.write_state()
        started = time.monotonic()
        network.create_nodes(self.name, self.node_count)
        for i in range(self.node_count):
            self.routing.register_netns(naming.node_netns(self.name, i), None, None)
        self.store.subscribe(lambda event, obj: self._dirty.set())
        self._create_cluster_objects()
        self.reconcile()
        # The Kubernetes REST API (kubectl, the official client): up before api.sock answers, so
        # the kubeconfig exists once `up()` returns.
        self.kubeapi = await kubeapi.start(self.name, self.store, {
            "apply": self.apply, "delete": self.store.delete, "delete_pod": self.delete_pod,
            "scale": self.scale, "logs": self.logs})
        await self.api.start(naming.api_sock(self.name))
        log.info("cluster %s: %d nodes (+%d virtual) up in %.2fs, API on %s", self.name,
                 self.node_count, len(self.virtual.nodes), time.monotonic() - started,
                 naming.api_sock(self.name))
        while not self._stop.is_set():
            try:
                await asyncio.wait_for(self._dirty.wait(), timeout=TICK)
            except asyncio.TimeoutError:
                pass
            changed = self._dirty.is_set()
            self._dirty.clear()
            try:
                if changed:
                    self.reconcile()
                else:  # nothing in the store changed: only processes and probes need a look
                    controllers.publish_mesh_objects(self.store, self._root_cert)
                    self.kubelet.sync()
                    self.write_state()
            except ClusterError as exc:  # e.g. a pod that cannot be wired; keep the rest going
                log.error("%s", exc)
        await self.api.stop()
        await self.kubeapi.stop()
        self.shutdown()

    def shutdown(self) -> None:
        log.info("cluster %s: shutting down", self.name)
        self.kubelet.shutdown()
        teardown.remove_cluster(self.name, keep_pid=os.getpid())
        log.info("cluster %s: gone", self.name)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m reference_impl.cluster.daemon")
    parser.add_argument("--name", default=naming.DEFAULT_NAME)
    parser.add_argument("--nodes", type=int, default=2)
    parser.add_argument("--virtual-nodes", type=int, default=0,
                        help="nodes whose pods are simulated (kwok role, see virtual.py)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(message)s")
    try:
        naming.check_name(args.name)
        if not 1 <= args.nodes <= 200:
            raise ClusterError(f"--nodes {args.nodes}: choose between 1 and 200 nodes")
        naming.check_virtual_nodes(args.virtual_nodes)
        daemon = Daemon(args.name, args.nodes, args.virtual_nodes)
    except ClusterError as exc:
        log.error("%s", exc)
        return 1
    try:
        asyncio.run(daemon.run())
    except (ClusterError, api.ManifestError) as exc:
        log.error("%s", exc)
        daemon.kubelet.shutdown()
        teardown.remove_cluster(args.name, keep_pid=os.getpid(), keep_run_dir=True)
        return 1
    except BaseException:
        log.exception("cluster %s: daemon crashed", args.name)
        daemon.kubelet.shutdown()
        teardown.remove_cluster(args.name, keep_pid=os.getpid(), keep_run_dir=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
