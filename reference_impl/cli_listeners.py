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


def listeners(cluster: str, namespace: str, name: str) -> dict:
    with ClusterClient(cluster) as c:
        pod = c.get("Pod", namespace, name)
        if pod is None:
            raise ClusterError(f"pod {namespace}/{name} not found")
        containers = [x.get("name") for x in (pod.get("spec") or {}).get("containers") or ()]
        if "istio-proxy" in containers:
            return sidecar_listeners(c, namespace, name)
        return ambient_listeners(c, namespace, pod)


def format_listeners(d: dict) -> str:
    head = f"{d['pod']}: {d['mode']} mode"
    if d["mode"] == "sidecar":
        head += f", identity {d['identity']}"
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
