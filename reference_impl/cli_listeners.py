"""`cluster proxy-config listeners POD -n NS`, after `istioctl proxy-config listeners`.

For a sidecar pod: the istio-proxy's own listeners (virtual outbound 15001, virtual inbound 15006,
HBONE 15008, one outbound entry per service port, the inbound app), read from its admin port
(127.0.0.1:15000 inside the pod). For an ambient pod, which has no proxy of its own: what its
node's ztunnel holds for it (captured or not, its workload entry, the listeners ztunnel opened in
its namespace). Anything else: a sentence saying the pod is not in the mesh.
"""

from __future__ import annotations

import json

from reference_impl.cluster.client import ClusterClient
from reference_impl.cluster.errors import ClusterError

SIDECAR_ADMIN = "http://127.0.0.1:15000/listeners"
ZTUNNEL_ADMIN = "http://127.0.0.1:15000/config_dump"
ZTUNNEL_PORTS = (("15001", "outbound capture"), ("15006", "inbound plaintext"), ("15008", "inbound HBONE"))


def _get_json(c: ClusterClient, namespace: str, pod: str, url: str) -> dict:
    done = c.exec(namespace, pod, ["curl", "-s", "--max-time", "5", url], timeout=10)
    if done.returncode != 0:
        raise ClusterError(f"pod {namespace}/{pod}: could not read {url} (curl exit {done.returncode})")
    try:
        return json.loads(done.stdout)
    except ValueError:
        raise ClusterError(f"pod {namespace}/{pod}: {url} did not answer JSON") from None


def _table(rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("   ".join(cell.ljust(w) for cell, w in zip(r, widths)).rstrip() for r in rows)


def sidecar_listeners(c: ClusterClient, namespace: str, pod: str) -> dict:
    return _get_json(c, namespace, pod, SIDECAR_ADMIN)


def ambient_listeners(c: ClusterClient, namespace: str, pod: dict) -> dict:
    node = (pod.get("spec") or {}).get("nodeName")
    ip = (pod.get("status") or {}).get("podIP")
    ztunnels = [z for z in c.list("Pod", "istio-system", {"app": "ztunnel"})
                if (z.get("spec") or {}).get("nodeName") == node and "deletionTimestamp" not in z["metadata"]]
    if not ztunnels:
        raise ClusterError(f"pod {namespace}/{pod['metadata']['name']}: no ztunnel runs on its node {node}")
    zt = ztunnels[0]["metadata"]["name"]
    dump = _get_json(c, "istio-system", zt, ZTUNNEL_ADMIN)
    workload = next((w for w in dump.get("workloads") or () if ip in (w.get("workloadIps") or ())), None)
    captured = any(p.get("ip") == ip for p in dump.get("capturedPods") or ())
    return {"pod": f"{namespace}/{pod['metadata']['name']}", "mode": "ambient", "ztunnel": f"istio-system/{zt}",
            "captured": captured, "workload": workload,
            "listeners": [{"name": name, "address": f"{ip}:{port}" if port == "15008" else f"0.0.0.0:{port}",
                           "match": "ALL", "destination": f"ztunnel {zt} ({name})"}
                          for port, name in ZTUNNEL_PORTS] if captured else []}


# -- the Envoy waypoint (issue 16): Envoy's own admin interface on 127.0.0.1:15000 in its pod --
ENVOY_WAYPOINT_IMAGE = "ambient-conformance/waypoint-envoy"
ENVOY_CONFIG_DUMP = "http://127.0.0.1:15000/config_dump"
ENVOY_LISTENERS = "http://127.0.0.1:15000/listeners?format=json"


def is_envoy_waypoint(pod: dict) -> bool:
    return any(ENVOY_WAYPOINT_IMAGE in (x.get("image") or "") for x in (pod.get("spec") or {}).get("containers") or ())


def envoy_config_dump(cluster: str, namespace: str, name: str) -> dict:
    """Envoy's /config_dump of an Envoy waypoint pod; ClusterError for any other pod."""
    with ClusterClient(cluster) as c:
        pod = c.get("Pod", namespace, name)
        if pod is None:
            raise ClusterError(f"pod {namespace}/{name} not found")
        if not is_envoy_waypoint(pod):
            raise ClusterError(f"pod {namespace}/{name} is not an Envoy waypoint (image {ENVOY_WAYPOINT_IMAGE}); "
                               "`proxy-config config_dump` reads Envoy's admin interface")
        return _get_json(c, namespace, name, ENVOY_CONFIG_DUMP)


def envoy_waypoint_listeners(c: ClusterClient, namespace: str, pod: str) -> dict:
    found = _get_json(c, namespace, pod, ENVOY_LISTENERS)
    rows = []
    for entry in found.get("listener_statuses") or ():
        address = (entry.get("local_address") or {}).get("socket_address") or {}
        where = f"{address.get('address')}:{address.get('port_value')}" if address else "(internal)"
        rows.append({"name": entry.get("name"), "address": where, "match": "ALL", "destination": entry.get("name")})
    return {"pod": f"{namespace}/{pod}", "mode": "envoy waypoint", "listeners": rows}


def listeners(cluster: str, namespace: str, name: str) -> dict:
    with ClusterClient(cluster) as c:
        pod = c.get("Pod", namespace, name)
        if pod is None:
            raise ClusterError(f"pod {namespace}/{name} not found")
        if is_envoy_waypoint(pod):
            return envoy_waypoint_listeners(c, namespace, name)
        containers = [x.get("name") for x in (pod.get("spec") or {}).get("containers") or ()]
        if "istio-proxy" in containers:
            return sidecar_listeners(c, namespace, name)
        return ambient_listeners(c, namespace, pod)


def format_listeners(d: dict) -> str:
    head = f"{d['pod']}: {d['mode']} mode"
    if d["mode"] == "sidecar":
        head += f", identity {d['identity']}"
    elif d["mode"] == "envoy waypoint":
        head += " (Envoy's own listeners; `proxy-config config_dump POD` for all of its config)"
    else:
        head += f", {d['ztunnel']} holds it ({'captured' if d['captured'] else 'NOT captured'})"
        if d.get("workload"):
            w = d["workload"]
            head += f"\nworkload {w.get('uid')} identity {w.get('identity')} protocol {w.get('protocol')}"
    rows = [["ADDRESSES", "MATCH", "DESTINATION"]] + [[r["address"], r["match"], r["destination"]]
                                                      for r in d["listeners"]]
    return head + "\n" + (_table(rows) if len(rows) > 1 else "(no listeners)")


def cmd_listeners(args, pod: str) -> int:
    result = listeners(args.name, args.namespace, pod)
    print(json.dumps(result, indent=2, sort_keys=True) if args.output == "json" else format_listeners(result))
    return 0
