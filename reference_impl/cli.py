"""The `ambient-conformance` command line.

    ambient-conformance cluster up [-f FILE_OR_DIR]... [--nodes N] [--virtual-nodes M] [--name NAME]
    ambient-conformance cluster apply|delete -f FILE_OR_DIR
    ambient-conformance cluster get pods|svc|nodes|deploy|ds [-n NS | -A] [-o json]
    ambient-conformance cluster exec [-n NS] POD -- CMD...
    ambient-conformance cluster logs [-n NS] POD [-c CONTAINER] [--tail N]
    ambient-conformance cluster delete pod NAME [-n NS] [--grace-period N]
    ambient-conformance cluster scale deploy NAME --replicas N [-n NS]
    ambient-conformance cluster kubeconfig        (path of the kubeconfig for kubectl)
    ambient-conformance cluster down [--all]

Every `cluster` command takes `--name` (default `ambient`, or `$AC_CLUSTER`). get, apply,
delete, exec, logs and scale are conveniences over the cluster's Kubernetes API (HTTPS with its
kubeconfig, as kubectl; reference_impl/cluster/kubeclient.py); `kubectl` does the same and more.

Adding commands (other parts of the project): a module `reference_impl/cli_<something>.py`, or
`conformance/cli.py`, defines `register(cli)`; `cli.commands` is the top-level subparsers object
(e.g. for `run`) and `cli.cluster` the `cluster` group's (e.g. for `describe`, `proxy-config`).
Give each new parser a handler with `parser.set_defaults(func=handler)`, where
`handler(args) -> int` returns the exit code; `cli.add_name(parser)` adds the usual `--name`.
Raise ClusterError or ManifestError for user errors: they are printed as one line, exit 1.
"""
from __future__ import annotations

import argparse
import importlib
import json
import os
import pkgutil
import sys
from dataclasses import dataclass

from reference_impl.api import ManifestError
from reference_impl.cluster import client as cluster_client
from reference_impl.cluster.errors import ClusterError

PLUGIN_MODULES = ("conformance.cli", "load.cli", "chaos.cli")


@dataclass
class CLI:
    parser: argparse.ArgumentParser
    commands: argparse._SubParsersAction
    cluster: argparse._SubParsersAction

    @staticmethod
    def add_name(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--name", default=os.environ.get("AC_CLUSTER", "ambient"),
                            help="cluster name (default: $AC_CLUSTER or 'ambient')")


def _connect(args) -> cluster_client.ClusterClient:
    return cluster_client.ClusterClient(args.name)


def _kube(args):
    """get/apply/delete/exec/logs/scale: a client of the cluster's Kubernetes API over HTTPS
    with its kubeconfig, as kubectl is (issue 14), not of the store's socket."""
    from reference_impl.cluster.kubeclient import KubeClient
    return KubeClient(args.name)


# -- handlers -----------------------------------------------------------------------------------

def cmd_up(args) -> int:
    c = cluster_client.up(args.name, nodes=args.nodes, manifests=args.files or (),
                          timeout=args.timeout, virtual_nodes=args.virtual_nodes,
                          waypoint=None if args.waypoint == "python" else args.waypoint)
    pods = c.list("Pod")
    c.close()
    virtual = f" (+{args.virtual_nodes} virtual)" if args.virtual_nodes else ""
    print(f"cluster {args.name!r} is up: {args.nodes} nodes{virtual}, {len(pods)} pods ready")
    print(f"export KUBECONFIG={kubeapi_kubeconfig(args.name)}")
    return 0


def kubeapi_kubeconfig(name: str) -> str:
    """The kubeconfig of cluster `name`'s Kubernetes API (kubectl, the official client)."""
    from reference_impl.cluster.kubeapi import kubeconfig_path
    return kubeconfig_path(name)


def cmd_kubeconfig(args) -> int:
    _connect(args).close()  # ClusterError in one sentence when it is not running
    path = kubeapi_kubeconfig(args.name)
    if not os.path.exists(path):
        raise ClusterError(f"cluster {args.name!r} has no kubeconfig at {path}; restart it with "
                           f"`ambient-conformance cluster down --name {args.name}` and `up`")
    print(path)
    return 0


def cmd_apply(args) -> int:
    with _kube(args) as c:
        for r in c.apply(args.files):
            _print_warnings(r)
            print(_result_line(r))
    return 0


def _print_warnings(result: dict) -> None:
    for warning in result.get("warnings", ()):
        print(f"Warning: {warning}", file=sys.stderr)


def _result_line(r: dict) -> str:
    where = f"{r['namespace']}/" if r.get("namespace") else ""
    return f"{r['kind'].lower()}/{where}{r['name']} {r['action']}"


def cmd_delete(args) -> int:
    with _kube(args) as c:
        if args.files:
            if args.resource:
                raise ClusterError("use either -f FILE or `delete pod NAME`, not both")
            for r in c.delete(args.files):
                print(_result_line(r))
            return 0
        if args.resource not in ("pod", "pods", "po") or not args.names:
            raise ClusterError("say what to delete: `cluster delete -f FILE` or "
                               "`cluster delete pod NAME [-n NS] [--grace-period N]`")
        for name in args.names:
            c.delete_pod(args.namespace, name, args.grace_period)
            print(f"pod {args.namespace}/{name} deleted")
    return 0


_KINDS = {"pods": "Pod", "pod": "Pod", "po": "Pod", "svc": "Service", "service": "Service",
          "services": "Service", "nodes": "Node", "node": "Node", "no": "Node",
          "deploy": "Deployment", "deployment": "Deployment", "deployments": "Deployment",
          "ds": "DaemonSet", "daemonset": "DaemonSet", "daemonsets": "DaemonSet",
          "ns": "Namespace", "namespace": "Namespace", "namespaces": "Namespace"}


def pod_row(pod: dict) -> list[str]:
    meta, status = pod["metadata"], pod.get("status") or {}
    statuses = status.get("containerStatuses") or []
    total = len((pod.get("spec") or {}).get("containers") or [])
    ready = sum(1 for s in statuses if s.get("ready"))
    phase = status.get("phase", "Pending")
    for s in statuses:
        waiting = (s.get("state") or {}).get("waiting")
        if waiting and waiting.get("reason") not in (None, "ContainerCreating"):
            phase = waiting["reason"]
    if "deletionTimestamp" in meta:
        phase = "Terminating"
    restarts = sum(int(s.get("restartCount", 0)) for s in statuses)
    return [meta["name"], f"{ready}/{total}", phase, str(restarts),
            (pod.get("spec") or {}).get("nodeName") or "<none>", status.get("podIP") or "<none>"]


def _rows(kind: str, obj: dict) -> list[str]:
    meta, spec, status = obj["metadata"], obj.get("spec") or {}, obj.get("status") or {}
    if kind == "Pod":
        return pod_row(obj)
    if kind == "Service":
        ports = ",".join(f"{p.get('port')}/{p.get('protocol', 'TCP')}" for p in spec.get("ports") or [])
        return [meta["name"], spec.get("type", "ClusterIP"), spec.get("clusterIP") or "<none>",
                ports or "<none>"]
    if kind == "Node":
        ip = next((a["address"] for a in status.get("addresses") or []
                   if a.get("type") == "InternalIP"), "<none>")
        return [meta["name"], "Ready", ip, spec.get("podCIDR", ""),
                (meta.get("annotations") or {}).get("ambient-conformance.io/netns", "")]
    if kind == "Deployment":
        want = spec.get("replicas", 1)
        return [meta["name"], f"{status.get('readyReplicas', 0)}/{want}",
                str(status.get("updatedReplicas", 0)), str(status.get("availableReplicas", 0))]
    if kind == "DaemonSet":
        return [meta["name"], str(status.get("desiredNumberScheduled", 0)),
                str(status.get("currentNumberScheduled", 0)), str(status.get("numberReady", 0))]
    if kind == "Namespace":
        labels = ",".join(f"{k}={v}" for k, v in (meta.get("labels") or {}).items())
        return [meta["name"], "Active", labels or "<none>"]
    return [meta["name"]]


_HEADERS = {"Pod": ["NAME", "READY", "STATUS", "RESTARTS", "NODE", "IP"],
            "Service": ["NAME", "TYPE", "CLUSTER-IP", "PORT(S)"],
            "Node": ["NAME", "STATUS", "INTERNAL-IP", "POD-CIDR", "NETNS"],
            "Deployment": ["NAME", "READY", "UP-TO-DATE", "AVAILABLE"],
            "DaemonSet": ["NAME", "DESIRED", "CURRENT", "READY"],
            "Namespace": ["NAME", "STATUS", "LABELS"]}
_CLUSTER_SCOPED = {"Node", "Namespace"}


def format_table(rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("   ".join(cell.ljust(w) for cell, w in zip(r, widths)).rstrip() for r in rows)


def cmd_get(args) -> int:
    kind = _KINDS.get(args.resource)
    if kind is None:
        raise ClusterError(f"unknown resource {args.resource!r}; use one of pods, svc, nodes, "
                           "deploy, ds, ns")
    namespace = None if (args.all_namespaces or kind in _CLUSTER_SCOPED) else args.namespace
    with _kube(args) as c:
        items = c.list(kind, namespace)
    if args.output == "json":
        print(json.dumps({"items": items}, indent=2))
        return 0
    if not items:
        where = "" if namespace is None else f" in namespace {namespace}"
        print(f"No resources found{where}.", file=sys.stderr)
        return 0
    wide = args.all_namespaces and kind not in _CLUSTER_SCOPED
    header = (["NAMESPACE"] if wide else []) + _HEADERS[kind]
    rows = [header] + [([o["metadata"].get("namespace", "")] if wide else []) + _rows(kind, o)
                       for o in items]
    print(format_table(rows))
    return 0


def cmd_exec(args) -> int:
    argv = list(args.cmd) + list(args.after_dashes or [])
    if not argv:
        raise ClusterError("give the command after `--`, e.g. `cluster exec POD -- curl -s URL`")
    with _kube(args) as c:
        return c.exec(args.namespace, args.pod, argv, container=args.container,
                      timeout=args.timeout)


def cmd_logs(args) -> int:
    with _kube(args) as c:
        sys.stdout.write(c.logs(args.namespace, args.pod, args.container, args.tail))
    return 0


def cmd_scale(args) -> int:
    if _KINDS.get(args.resource) != "Deployment":
        raise ClusterError(f"cannot scale {args.resource!r}; only `scale deploy NAME --replicas N`")
    with _kube(args) as c:
        c.scale(args.namespace, args.deploy, args.replicas)
    print(f"deployment {args.namespace}/{args.deploy} scaled to {args.replicas}")
    return 0


def cmd_down(args) -> int:
    if args.all:
        names = cluster_client.down_all()
        print(f"removed clusters: {', '.join(names)}" if names else "no clusters found")
    else:
        cluster_client.down(args.name)
        print(f"cluster {args.name!r} is down")
    return 0


# -- parser -------------------------------------------------------------------------------------

def build_parser() -> CLI:
    parser = argparse.ArgumentParser(prog="ambient-conformance",
                                     description="Conformance suite and reference mesh for ambient meshes.")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    cluster_parser = commands.add_parser("cluster", help="the local reference cluster")
    cluster = cluster_parser.add_subparsers(dest="cluster_command", metavar="CLUSTER_COMMAND")
    cluster_parser.set_defaults(func=lambda a: (cluster_parser.print_help(), 2)[1])
    cli = CLI(parser, commands, cluster)

    def sub(name: str, func, help: str, namespaced: bool = False) -> argparse.ArgumentParser:
        p = cluster.add_parser(name, help=help)
        cli.add_name(p)
        if namespaced:
            p.add_argument("-n", "--namespace", default="default")
        p.set_defaults(func=func)
        return p

    p = sub("up", cmd_up, "start a cluster, apply manifests, wait until ready")
    p.add_argument("-f", "--filename", dest="files", action="append", metavar="FILE_OR_DIR")
    p.add_argument("--nodes", type=int, default=2)
    p.add_argument("--virtual-nodes", type=int, default=0,
                   help="add nodes virtual-0.. whose pods are simulated (kwok-style, for scale)")
    p.add_argument("--timeout", type=float, default=120, help="seconds to wait for ready")
    p.add_argument("--waypoint", choices=cluster_client.WAYPOINT_IMPLEMENTATIONS, default="python",
                   help="the waypoint implementation istiod provisions (envoy: a real Envoy configured "
                        "from the same snapshot; a Gateway's annotation "
                        "ambient-conformance.io/waypoint-implementation overrides it)")
    p = sub("apply", cmd_apply, "apply manifests")
    p.add_argument("-f", "--filename", dest="files", action="append", required=True,
                   metavar="FILE_OR_DIR")
    p = sub("delete", cmd_delete, "delete manifests' objects, or a pod", namespaced=True)
    p.add_argument("resource", nargs="?", help="pod")
    p.add_argument("names", nargs="*", metavar="NAME")
    p.add_argument("-f", "--filename", dest="files", action="append", metavar="FILE_OR_DIR")
    p.add_argument("--grace-period", type=int, default=None,
                   help="seconds before SIGKILL (0 = at once)")
    p = sub("get", cmd_get, "list objects", namespaced=True)
    p.add_argument("resource", help="pods, svc, nodes, deploy, ds or ns")
    p.add_argument("-A", "--all-namespaces", action="store_true")
    p.add_argument("-o", "--output", choices=["table", "json"], default="table")
    p = sub("exec", cmd_exec, "run a command in a pod's container", namespaced=True)
    p.add_argument("pod")
    p.add_argument("-c", "--container", help="the container (default: the pod's default or first)")
    p.add_argument("--timeout", type=float, default=300)
    p.add_argument("cmd", nargs="*", metavar="-- CMD")
    p = sub("logs", cmd_logs, "print a container's log", namespaced=True)
    p.add_argument("pod")
    p.add_argument("-c", "--container")
    p.add_argument("--tail", type=int)
    p = sub("scale", cmd_scale, "set a Deployment's replicas", namespaced=True)
    p.add_argument("resource", help="deploy")
    p.add_argument("deploy", metavar="NAME")
    p.add_argument("--replicas", type=int, required=True)
    sub("kubeconfig", cmd_kubeconfig, "print the path of the cluster's kubeconfig (for kubectl)")
    p = sub("down", cmd_down, "stop a cluster and remove everything it created")
    p.add_argument("--all", action="store_true", help="every cluster found on this machine")
    _load_plugins(cli)
    return cli


def _load_plugins(cli: CLI) -> None:
    import reference_impl
    names = [f"reference_impl.{m.name}" for m in pkgutil.iter_modules(reference_impl.__path__)
             if m.name.startswith("cli_")]
    for module_name in [*sorted(names), *PLUGIN_MODULES]:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name and module_name.startswith(exc.name):
                continue  # that part of the project is not there
            raise
        register = getattr(module, "register", None)
        if register is not None:
            register(cli)


def main(argv: list[str] | None = None) -> int:
    try:
        cli = build_parser()
        argv = list(sys.argv[1:] if argv is None else argv)
        # Everything after `--` is a command to run (exec), never options of ours.
        after = argv[argv.index("--") + 1:] if "--" in argv else None
        args = cli.parser.parse_args(argv[:argv.index("--")] if "--" in argv else argv)
        args.after_dashes = after
        if not getattr(args, "func", None):
            cli.parser.print_help()
            return 2
        return int(args.func(args) or 0)
    except (ClusterError, ManifestError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
