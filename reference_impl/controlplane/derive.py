"""Pure derivation: the store's objects -> what each proxy is sent.

`derive_mesh(objects)` computes everything once per change; `ztunnel_config(mesh)` and
`waypoint_config(mesh, namespace, name)` cut it per proxy. The shapes are
`reference_impl.xds.resources` (ztunnel's Workload / Service / GatewayAddress / Authorization);
the proxies read them back with the same classes. docs/INTERNALS.md describes them.
Every ztunnel gets the whole mesh's workloads and services (it routes to remote workloads), so
the ztunnel config does not depend on the node.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from reference_impl.xds import (Authorization, BoundPolicy, Endpoint, KubeObject, MeshConfig, Service,
                                WaypointInfo, WaypointSnapshot, Workload, ZtunnelSnapshot)
from reference_impl.xds.resources import HEALTHY, UNHEALTHY
from reference_impl.policy import authz_l4

from .index import (CLUSTER_ID, NETNS_ANNOTATION, ROOT_NAMESPACE, TRUST_DOMAIN, MeshIndex,
                    dataplane_mode, labels_of, meta, ns_name, pod_host_network, pod_identity,
                    pod_ip, pod_node, pod_ready, pod_service_account, pod_workload_name,
                    workload_uid)
from .policies import ZtunnelPolicy, slim, ztunnel_policies
from .routes import service_routes
from .waypoints import (UNBOUND, WAYPOINT_CLASS, Binding, Waypoint, find_waypoints, service_binding, workload_binding)


@dataclass
class Mesh:
    """The derived state of the whole mesh at one moment."""

    index: MeshIndex
    workloads: dict[str, Workload] = field(default_factory=dict)     # uid -> Workload
    services: dict[str, Service] = field(default_factory=dict)       # ns/hostname -> Service
    waypoints: dict[tuple[str, str], Waypoint] = field(default_factory=dict)
    policies: list[ZtunnelPolicy] = field(default_factory=list)
    # Selector policies enforced by a legacy (1.18) waypoint instead of ztunnel: key -> waypoint key
    moved_to_waypoint: dict[str, str] = field(default_factory=dict)
    # What each object's use-waypoint labels bound it to, with Istio's reason when nothing
    service_bindings: dict[str, Binding] = field(default_factory=dict)   # ns/hostname -> Binding
    workload_bindings: dict[str, Binding] = field(default_factory=dict)  # uid -> Binding
    trust_bundle: list[str] = field(default_factory=list)


def mesh_config(trust_bundle: list[str]) -> MeshConfig:
    return MeshConfig(trust_domain=TRUST_DOMAIN, root_namespace=ROOT_NAMESPACE, cluster_id=CLUSTER_ID,
                      trust_bundle=list(trust_bundle))


def _workload(pod: dict, index: MeshIndex, waypoint: Waypoint | None) -> Workload:
    namespace, name = ns_name(pod)
    mode = dataplane_mode(pod, index.namespace_labels(namespace))
    workload_name, workload_type = pod_workload_name(pod)
    labels = labels_of(pod)
    return Workload(
        uid=workload_uid(pod),
        name=name,
        namespace=namespace,
        workload_ips=[pod_ip(pod)],
        node=pod_node(pod),
        service_account=pod_service_account(pod),
        trust_domain=TRUST_DOMAIN,
        identity=pod_identity(pod),
        # HBONE: the destination terminates HBONE itself (captured by ztunnel, or a sidecar).
        protocol="HBONE" if mode in ("ambient", "sidecar") else "TCP",
        dataplane_mode=mode,
        network_mode="HostNetwork" if pod_host_network(pod) else "Standard",
        host_network=pod_host_network(pod),
        status=HEALTHY if pod_ready(pod) else UNHEALTHY,
        waypoint=waypoint.gateway_address() if waypoint else None,
        workload_name=workload_name,
        workload_type=workload_type,
        canonical_name=labels.get("service.istio.io/canonical-name")
        or labels.get("app.kubernetes.io/name") or labels.get("app") or workload_name,
        canonical_revision=labels.get("service.istio.io/canonical-revision")
        or labels.get("app.kubernetes.io/version") or labels.get("version") or "latest",
        cluster_id=CLUSTER_ID,
        labels=dict(labels),
        netns=(meta(pod).get("annotations") or {}).get(NETNS_ANNOTATION),
        pod_uid=meta(pod).get("uid"),
    )


def _container_port(pod: dict, port_name: str) -> int | None:
    for container in (pod.get("spec") or {}).get("containers") or ():
        for port in container.get("ports") or ():
            if port.get("name") == port_name:
                return port.get("containerPort")
    return None


def _is_headless(spec: dict) -> bool:
    ip = spec.get("clusterIP")
    return ip is None or ip == "None"


def _service(service: dict, index: MeshIndex, workloads: dict[str, Workload], waypoints: dict,
             workload_waypoints: dict[str, Waypoint | None]) -> tuple[Service, Binding]:
    namespace, name = ns_name(service)
    spec = service.get("spec") or {}
    hostname = f"{name}.{namespace}.svc.cluster.local"
    ports, named = {}, {}
    for port in spec.get("ports") or ():
        number = port.get("port")
        target = port.get("targetPort", number)
        if isinstance(target, str) and target.isdigit():
            target = int(target)
        if isinstance(target, str):
            named[number] = target
            ports[str(number)] = 0  # resolved per endpoint, as Istio does for named targetPorts
        else:
            ports[str(number)] = target
    endpoints, endpoint_waypoints = {}, []
    selector = spec.get("selector")
    if selector:
        for pod in index.pods_by_namespace.get(namespace, ()):
            uid = workload_uid(pod)
            if uid not in workloads or not all(labels_of(pod).get(k) == v for k, v in selector.items()):
                continue
            port_map = {}
            for number_text, target in ports.items():
                number = int(number_text)
                if number in named:
                    resolved = _container_port(pod, named[number])
                    if resolved is None:
                        continue  # this pod does not expose the named port: not an endpoint for it
                    port_map[number_text] = resolved
                else:
                    port_map[number_text] = target
            workload = workloads[uid]
            endpoints[uid] = Endpoint(workload_uid=uid, port=port_map, status=workload.status)
            workload.services.append(f"{namespace}/{hostname}")
            endpoint_waypoints.append(workload_waypoints[uid])
    binding = service_binding(service, index, waypoints, endpoint_waypoints)
    waypoint = binding.waypoint
    headless = _is_headless(spec)
    return Service(
        name=name,
        namespace=namespace,
        hostname=hostname,
        vips=[] if headless else [spec["clusterIP"]],
        ports=ports,
        port_names={str(p.get("port")): p.get("name") or "" for p in spec.get("ports") or ()},
        app_protocols={str(p.get("port")): p["appProtocol"] for p in spec.get("ports") or () if p.get("appProtocol")},
        endpoints=endpoints,
        headless=headless,
        subject_alt_names=[],
        waypoint=waypoint.gateway_address() if waypoint else None,
    ), binding


def derive_mesh(objects, trust_bundle: list[str] | None = None) -> Mesh:
    index = MeshIndex.build(objects)
    mesh = Mesh(index=index, trust_bundle=list(trust_bundle or ()))
    mesh.waypoints = find_waypoints(index)
    workload_waypoints = {}
    for pod in index.kind("Pod"):
        if not pod_ip(pod):
            continue  # not scheduled/started yet: nothing can address it
        binding = workload_binding(pod, index, mesh.waypoints)
        workload = _workload(pod, index, binding.waypoint)
        mesh.workloads[workload.uid] = workload
        workload_waypoints[workload.uid] = binding.waypoint
        if binding is not UNBOUND:
            mesh.workload_bindings[workload.uid] = binding
    for service in index.kind("Service"):
        derived, binding = _service(service, index, mesh.workloads, mesh.waypoints, workload_waypoints)
        mesh.services[derived.key] = derived
        if binding is not UNBOUND:
            mesh.service_bindings[derived.key] = binding

    mesh.policies = ztunnel_policies(index.kind("AuthorizationPolicy"))
    # A selector policy can only select workloads of its own namespace (or, from the root
    # namespace, of every namespace): index by namespace so a derive is not workloads x policies.
    selector_policies_by_ns: dict[str, list] = {}
    for order, p in enumerate(mesh.policies):
        if p.compiled["scope"] == "WORKLOAD_SELECTOR":
            selector_policies_by_ns.setdefault(p.compiled["namespace"], []).append(
                (order, p, p.compiled["scope"], p.compiled["namespace"]))
    root_policies = selector_policies_by_ns.get(ROOT_NAMESPACE, [])
    selected_by: dict[str, list[Workload]] = {}
    for uid, workload in mesh.workloads.items():
        candidates = selector_policies_by_ns.get(workload.namespace, [])
        if workload.namespace != ROOT_NAMESPACE and root_policies:
            candidates = sorted(candidates + root_policies, key=lambda c: c[0])
        for _order, policy, scope, policy_ns in candidates:
            if authz_l4.binds(scope, policy_ns, policy.selector, workload.namespace, workload.labels,
                              ROOT_NAMESPACE):
                workload.authorization_policies.append(policy.key)
                selected_by.setdefault(policy.key, []).append(workload)
    # Istio 1.18: a legacy waypoint enforces the selector policies of the workloads it serves.
    for key, selected in selected_by.items():
        legacy = {w.waypoint.destination.hostname if w.waypoint else None for w in selected}
        if None in legacy or len(legacy) != 1:
            continue
        waypoint = next((wp for wp in mesh.waypoints.values() if wp.hostname in legacy), None)
        if waypoint is not None and waypoint.legacy:
            mesh.moved_to_waypoint[key] = waypoint.key
            for workload in selected:
                workload.authorization_policies.remove(key)
    return mesh


def ztunnel_config(mesh: Mesh) -> dict:
    """What every node proxy holds: the mesh's workloads and services, L4 policies, PeerAuthentication."""
    return ZtunnelSnapshot(
        mesh_config=mesh_config(mesh.trust_bundle),
        workloads=_sorted_workloads(mesh.workloads.values()),
        services=_sorted_services(mesh.services.values()),
        policies=[Authorization.model_validate(p.to_dict())
                  for p in mesh.policies if p.key not in mesh.moved_to_waypoint],
        peer_authentications=[KubeObject.model_validate(slim(pa))
                              for pa in mesh.index.kind("PeerAuthentication")],
    ).to_dict()


def _sorted_workloads(workloads) -> list[Workload]:
    return sorted(workloads, key=lambda w: w.uid)


def _sorted_services(services) -> list[Service]:
    return sorted(services, key=lambda s: (s.namespace, s.hostname))


def target_refs(policy: dict) -> list[dict]:
    spec = policy.get("spec") or {}
    refs = list(spec.get("targetRefs") or ())
    if spec.get("targetRef"):
        refs.append(spec["targetRef"])
    return refs


def _targets(policy: dict, waypoint: Waypoint,
             fronted_services: dict[tuple[str, str], Service]) -> tuple[bool, set[str] | None]:
    """(bound, service keys): whether the policy's targetRefs reach this waypoint, and if only
    through Services, those services (a Service-attached policy governs that service's traffic
    only: TestAuthorizationServiceAttached); None = all the waypoint's traffic.

    As Istio, a Service-attached policy is scoped by the service a request addresses
    (`appliesToServices`), not by its endpoints: a pod that backs two Services behind one waypoint,
    or is also addressed by its own IP, is not governed by it for those other requests.

    Istio's targetRefs name objects of the policy's own namespace (a `namespace` that differs is
    not supported and binds nothing), except GatewayClass `istio-waypoint` from the root namespace.
    """
    policy_ns, _ = ns_name(policy)
    whole, services = False, set()
    for ref in target_refs(policy):
        kind, name = ref.get("kind"), ref.get("name")
        if (ref.get("namespace") or policy_ns) != policy_ns:
            continue
        if kind == "Gateway" and (policy_ns, name) == (waypoint.namespace, waypoint.name):
            whole = True
        elif kind == "GatewayClass" and name == WAYPOINT_CLASS and policy_ns == ROOT_NAMESPACE:
            whole = True
        elif kind == "Service" and (policy_ns, name) in fronted_services:
            services.add(fronted_services[(policy_ns, name)].key)
    if whole:
        return True, None
    return bool(services), services or None


def _selected_workloads(policy: dict, workloads: list[Workload]) -> list[str]:
    spec = policy.get("spec") or {}
    policy_ns, _ = ns_name(policy)
    selector = (spec.get("selector") or {}).get("matchLabels") if spec.get("selector") else None
    out = []
    for workload in workloads:
        if policy_ns not in (workload.namespace, ROOT_NAMESPACE):
            continue
        if selector is None or all(workload.labels.get(k) == v for k, v in selector.items()):
            out.append(workload.uid)
    return out


def waypoint_config(mesh: Mesh, namespace: str, name: str) -> dict:
    """What one waypoint holds: the services/workloads it fronts and the L7 policies bound to it.

    Policies bound by targetRefs to the Gateway, or to GatewayClass `istio-waypoint` from the root
    namespace, apply to all its traffic; those bound to a fronted Service, to that service's
    endpoints only. Selector policies are ztunnel's (section 7). For a legacy (1.18) waypoint, selector policies and
    RequestAuthentications of the workloads it serves come too, with `appliesToWorkloads`.
    """
    waypoint = mesh.waypoints.get((namespace, name))
    hostname = waypoint.hostname if waypoint else None

    def bound(obj: Workload | Service) -> bool:
        return obj.waypoint is not None and obj.waypoint.destination.hostname == hostname

    fronted_services = _sorted_services(s for s in mesh.services.values() if bound(s))
    fronted_workloads = _sorted_workloads(w for w in mesh.workloads.values() if bound(w))
    fronted_keys = {(s.namespace, s.name): s for s in fronted_services}
    bound_policies = {"AuthorizationPolicy": [], "RequestAuthentication": []}
    if waypoint is not None:
        for kind, out in bound_policies.items():
            for policy in mesh.index.kind(kind):
                if target_refs(policy):
                    attached, services = _targets(policy, waypoint, fronted_keys)
                    if attached:
                        out.append(BoundPolicy(**slim(policy),
                                               appliesToServices=None if services is None else sorted(services)))
                elif waypoint.legacy:
                    uids = _selected_workloads(policy, fronted_workloads)
                    if uids:
                        out.append(BoundPolicy(**slim(policy), appliesToWorkloads=uids))
    return WaypointSnapshot(
        mesh_config=mesh_config(mesh.trust_bundle),
        waypoint=None if waypoint is None else WaypointInfo(
            namespace=waypoint.namespace, name=waypoint.name, hostname=waypoint.hostname,
            address=waypoint.address, waypoint_for=waypoint.waypoint_for, legacy=waypoint.legacy,
            for_service_account=waypoint.for_service_account,
            identity=f"spiffe://{TRUST_DOMAIN}/ns/{waypoint.namespace}/sa/{waypoint.name}"),
        services=[s.key for s in fronted_services],
        workload_uids=[w.uid for w in fronted_workloads],
        authorization_policies=bound_policies["AuthorizationPolicy"],
        request_authentications=bound_policies["RequestAuthentication"],
        # A waypoint opens new HBONE connections to any destination, so it needs the mesh too.
        workloads=_sorted_workloads(mesh.workloads.values()),
        all_services=_sorted_services(mesh.services.values()),
        jwks_by_uri={},  # istiod fills it in: the keys behind every jwksUri of the policies
        routes=service_routes(mesh.index, mesh.services, fronted_services) if waypoint else [],
    ).to_dict()
