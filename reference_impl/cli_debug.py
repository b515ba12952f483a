"""`cluster describe pod|service NAME -n NS` and `cluster proxy-config NODE`, in the spirit of istioctl.

Both ask istiod over its socket (`{"type": "debug"}` requests, reference_impl.xds): what it
derived for a pod, and what it last sent to / had acknowledged by a node's ztunnel.
"""

from __future__ import annotations

import json
import os

from reference_impl.cluster import naming
from reference_impl.cluster.client import ClusterClient
from reference_impl.cluster.errors import ClusterError
from reference_impl.xds import XdsUnavailable, debug_query


def _ask(cluster: str, what: str, **params) -> dict:
    # Attaching first gives the cluster's own "no such cluster" sentence.
    ClusterClient(cluster).close()
    sock = os.path.join(naming.run_dir(cluster), "istiod.sock")
    try:
        return debug_query(sock, what, timeout=10, **params)
    except XdsUnavailable as exc:
        raise ClusterError(f"cluster {cluster!r}: {exc}") from None
    except LookupError as exc:
        raise ClusterError(str(exc.args[0] if exc.args else exc)) from None


def format_describe(d: dict) -> str:
    lines = [f"Pod:             {d['pod']}",
             f"Node:            {d['node'] or '(not scheduled)'}",
             f"Data-plane mode: {d['dataplaneMode']}"
             + (f" (protocol {d['protocol']})" if d.get("protocol") else ""),
             f"Identity:        {d.get('identity') or '-'}",
             f"Status:          {d.get('status') or '-'}",
             f"ztunnel:         {('istio-system/' + d['ztunnel']) if d.get('ztunnel') else '(none on this node)'}"]
    waypoint = d.get("waypoint")
    lines.append(f"Waypoint:        {waypoint['namespace'] + '/' + waypoint['hostname'] if waypoint else '(none)'}"
                 + _why_unbound(d.get("waypointBinding")))
    for binding in d.get("serviceWaypoints") or ():
        lines.append(f"  service waypoint: {binding}")
    lines.append(f"Services:        {', '.join(d.get('services') or ()) or '(none)'}")
    if d.get("policies"):
        lines.append("Policies:")
        for p in d["policies"]:
            note = f"  FAIL-CLOSED: {p['error']}" if p.get("error") else ""
            lines.append(f"  {p['name']:<40} {p['action']:<6} {p['scope']:<18} enforced by {p['enforcedBy']}{note}")
    else:
        lines.append("Policies:        (none: all traffic allowed at L4)")
    return "\n".join(lines)


def _why_unbound(binding: dict | None) -> str:
    """ `  (use-waypoint on the Service: WaypointIsNotReady: waypoint "ns/x" is not ready)` or ''."""
    if not binding or not binding.get("reason"):
        return ""
    return f"  (use-waypoint on the {binding['via']}: {binding['reason']}: {binding['message']})"


def format_describe_service(d: dict) -> str:
    waypoint = d.get("waypoint")
    labels = ", ".join(f"{k}={v}" for k, v in sorted((d.get("useWaypoint") or {}).items()))
    return "\n".join([
        f"Service:         {d['service']} ({d.get('hostname') or '-'})",
        f"VIPs:            {', '.join(d.get('vips') or ()) or '(headless)'}",
        f"Endpoints:       {', '.join(d.get('endpoints') or ()) or '(none)'}",
        f"Labels:          {labels or '(no use-waypoint label)'}",
        f"Waypoint:        {waypoint['namespace'] + '/' + waypoint['hostname'] if waypoint else '(none: L4 only)'}"
        + _why_unbound(d.get("waypointBinding")),
        f"Policies:        {', '.join(d.get('attachedPolicies') or ()) or '(none attached with targetRefs)'}"])


def format_proxy_config(d: dict) -> str:
    head = [f"ztunnel {d['namespace']}/{d['pod']} on node {d['node']}",
            f"sent version {d['sentVersion']}, acknowledged version {d['ackedVersion']}"
            + (f", REJECTED {d['nack']}" if d.get("nack") else "")]
    return "\n".join(head) + "\n" + json.dumps(d.get("config"), indent=2, sort_keys=True)


def cmd_describe_pod(args) -> int:
    result = _ask(args.name, "describe_pod", namespace=args.namespace, name=args.pod)
    envoy = _envoy_waypoint_dump(args)
    if args.output == "json":
        if envoy is not None:
            result = {**result, "envoyConfigDump": envoy}
        print(json.dumps(result, indent=2, sort_keys=True))
    else:
        print(format_describe(result) + ("" if envoy is None else "\n" + format_envoy_summary(envoy)))
    return 0


# -- the Envoy waypoint (issue 16): its config as Envoy holds it, from Envoy's admin /config_dump --
def _envoy_waypoint_dump(args) -> dict | None:
    from reference_impl.cli_listeners import envoy_config_dump, is_envoy_waypoint
    with ClusterClient(args.name) as c:
        pod = c.get("Pod", args.namespace, args.pod)
    return envoy_config_dump(args.name, args.namespace, args.pod) if pod and is_envoy_waypoint(pod) else None


def format_envoy_summary(dump: dict) -> str:
    lines = ["Envoy waypoint config (Envoy's /config_dump; `proxy-config config_dump POD` prints it all):"]
    for section in dump.get("configs") or ():
        kind = section.get("@type", "").rsplit(".", 1)[-1]
        if kind == "ListenersConfigDump":
            for item in section.get("dynamic_listeners") or ():
                state = item.get("active_state") or item.get("warming_state") or {}
                lines.append(f"  listener {item.get('name')}  version {state.get('version_info', '?')}")
        elif kind == "ClustersConfigDump":
            count = len(section.get("dynamic_active_clusters") or ())
            lines.append(f"  {count} dynamic cluster(s)")
        elif kind == "SecretsConfigDump":
            for item in section.get("dynamic_active_secrets") or ():
                lines.append(f"  secret {item.get('name')}  version {item.get('version_info', '?')}")
    return "\n".join(lines)


def cmd_describe_service(args) -> int:
    result = _ask(args.name, "describe_service", namespace=args.namespace, name=args.service)
    print(json.dumps(result, indent=2, sort_keys=True) if args.output == "json" else format_describe_service(result))
    return 0


def cmd_proxy_config(args) -> int:
    if args.node == "config_dump":  # `proxy-config config_dump POD`: an Envoy waypoint's own config (issue 16)
        if not args.pod:
            raise ClusterError("give the pod: `cluster proxy-config config_dump POD -n NS`")
        from reference_impl.cli_listeners import envoy_config_dump
        print(json.dumps(envoy_config_dump(args.name, args.namespace, args.pod), indent=2, sort_keys=True))
        return 0
    if args.node == "listeners":  # `proxy-config listeners POD`: the sidecar's, or the ambient pod's ztunnel's
        if not args.pod:
            raise ClusterError("give the pod: `cluster proxy-config listeners POD -n NS`")
        from reference_impl.cli_listeners import cmd_listeners
        return cmd_listeners(args, args.pod)
    result = _ask(args.name, "proxy_config", node=args.node)
    print(json.dumps(result, indent=2, sort_keys=True) if args.output == "json" else format_proxy_config(result))
    return 0


def register(cli) -> None:
    describe = cli.cluster.add_parser("describe", help="describe a pod or service as the mesh sees it")
    kinds = describe.add_subparsers(dest="describe_kind", required=True)
    for kind, dest, help_text, func in (
            ("pod", "pod", "data-plane mode, node, ztunnel, waypoint and policies of a pod", cmd_describe_pod),
            ("service", "service", "VIPs, endpoints, waypoint binding (or why none) and attached policies",
             cmd_describe_service)):
        parser = kinds.add_parser(kind, help=help_text)
        parser.add_argument(dest, metavar="NAME")
        parser.add_argument("-n", "--namespace", default="default")
        parser.add_argument("-o", "--output", choices=("text", "json"), default="text")
        cli.add_name(parser)
        parser.set_defaults(func=func)

    proxy = cli.cluster.add_parser("proxy-config", help="a node proxy's current config version and content")
    proxy.add_argument("node", metavar="NODE", help="a node, or `listeners` / `config_dump` followed by a pod")
    proxy.add_argument("pod", metavar="POD", nargs="?", help="with `listeners` / `config_dump`: the pod")
    proxy.add_argument("-n", "--namespace", default="default", help="with `listeners`: the pod's namespace")
    proxy.add_argument("-o", "--output", choices=("text", "json"), default="text")
    cli.add_name(proxy)
    proxy.set_defaults(func=cmd_proxy_config)
