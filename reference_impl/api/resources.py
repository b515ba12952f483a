"""Typed, read-only views of validated objects, with the defaults Kubernetes and Istio apply.

`parse(obj)` validates first, so building these never meets a wrong type. Sequences are
tuples; label maps are plain dicts (copies). Every object keeps its validated dict as `raw` and
the legacy-form sentences as `warnings`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .legacy import legacy_warnings
from .selectors import selector_matches
from .validate import validate


@dataclass(frozen=True)
class ObjectMeta:
    name: str
    namespace: str  # "" for cluster-scoped kinds
    labels: dict
    annotations: dict
    uid: str | None = None
    resource_version: str | None = None


@dataclass(frozen=True)
class Resource:
    api_version: str
    kind: str
    metadata: ObjectMeta
    raw: dict = field(repr=False, compare=False)
    warnings: tuple[str, ...] = ()

    @property
    def name(self) -> str:
        return self.metadata.name

    @property
    def namespace(self) -> str:
        return self.metadata.namespace

    @property
    def labels(self) -> dict:
        return self.metadata.labels

    @property
    def key(self) -> tuple[str, str, str]:
        return self.kind, self.metadata.namespace, self.metadata.name


# -- core -------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Namespace(Resource):
    pass


@dataclass(frozen=True)
class ServiceAccount(Resource):
    pass


@dataclass(frozen=True)
class Node(Resource):
    pod_cidr: str | None = None
    status: dict = field(default_factory=dict, compare=False)

    @property
    def internal_ip(self) -> str | None:
        for address in self.status.get("addresses") or ():
            if address.get("type") == "InternalIP":
                return address.get("address")
        return None


@dataclass(frozen=True)
class ServicePort:
    port: int
    target_port: int | str  # a number, or the name of a container port
    name: str = ""
    protocol: str = "TCP"
    app_protocol: str | None = None


@dataclass(frozen=True)
class Service(Resource):
    ports: tuple[ServicePort, ...] = ()
    selector: dict | None = None  # None: no selector (endpoints are managed by hand)
    cluster_ip: str | None = None  # "None" for headless; None until the store assigns one
    type: str = "ClusterIP"

    @property
    def headless(self) -> bool:
        return self.cluster_ip == "None"

    def selects(self, labels: dict) -> bool:
        return self.selector is not None and selector_matches(self.selector, labels)


@dataclass(frozen=True)
class EnvVar:
    name: str
    value: str = ""


@dataclass(frozen=True)
class ContainerPort:
    container_port: int
    name: str | None = None
    protocol: str = "TCP"


@dataclass(frozen=True)
class Container:
    name: str
    image: str
    command: tuple[str, ...] = ()
    args: tuple[str, ...] = ()
    ports: tuple[ContainerPort, ...] = ()
    env: tuple[EnvVar, ...] = ()
    image_pull_policy: str | None = None

    def port_by_name(self, name: str) -> int | None:
        for port in self.ports:
            if port.name == name:
                return port.container_port
        return None


@dataclass(frozen=True)
class PodSpec:
    containers: tuple[Container, ...]
    service_account_name: str = "default"
    node_name: str | None = None
    node_selector: dict = field(default_factory=dict)
    host_network: bool = False
    termination_grace_period_seconds: int = 30
    restart_policy: str = "Always"

    def resolve_port(self, target: int | str) -> int | None:
        """A Service targetPort as a container port number (None: no such named port)."""
        if isinstance(target, int):
            return target
        for container in self.containers:
            number = container.port_by_name(target)
            if number is not None:
                return number
        return None


@dataclass(frozen=True)
class PodTemplate:
    labels: dict
    annotations: dict
    spec: PodSpec


@dataclass(frozen=True)
class Pod(Resource):
    spec: PodSpec = None
    status: dict = field(default_factory=dict, compare=False)

    @property
    def pod_ip(self) -> str | None:
        return self.status.get("podIP")


@dataclass(frozen=True)
class Deployment(Resource):
    replicas: int = 1
    selector: dict = field(default_factory=dict)
    template: PodTemplate = None


@dataclass(frozen=True)
class DaemonSet(Resource):
    selector: dict = field(default_factory=dict)
    template: PodTemplate = None


# -- Gateway API ------------------------------------------------------------------------------

@dataclass(frozen=True)
class Listener:
    name: str
    port: int
    protocol: str
    hostname: str | None = None
    allowed_routes: dict | None = None


@dataclass(frozen=True)
class Gateway(Resource):
    gateway_class_name: str = ""
    listeners: tuple[Listener, ...] = ()
    addresses: tuple[dict, ...] = ()

    @property
    def has_hbone_listener(self) -> bool:
        return any(lst.protocol == "HBONE" for lst in self.listeners)

    @property
    def is_waypoint(self) -> bool:
        """istio-waypoint class, or the article's legacy form (class istio + HBONE listener)."""
        if self.gateway_class_name == "istio-waypoint":
            return True
        return self.gateway_class_name == "istio" and self.has_hbone_listener

    @property
    def waypoint_for(self) -> str:
        """Label istio.io/waypoint-for: service (default), workload, all or none."""
        return self.labels.get("istio.io/waypoint-for", "service")

    @property
    def for_service_account(self) -> str | None:
        """Istio 1.18's annotation scoping a waypoint to one service account."""
        return self.metadata.annotations.get("istio.io/for-service-account")


@dataclass(frozen=True)
class ParentRef:
    name: str
    group: str = "gateway.networking.k8s.io"
    kind: str = "Gateway"
    namespace: str | None = None
    section_name: str | None = None
    port: int | None = None


@dataclass(frozen=True)
class HTTPRoute(Resource):
    parent_refs: tuple[ParentRef, ...] = ()
    hostnames: tuple[str, ...] = ()
    rules: tuple[dict, ...] = ()  # matches/backendRefs/filters kept as validated data


# -- Istio security ---------------------------------------------------------------------------

@dataclass(frozen=True)
class TargetRef:
    kind: str
    name: str
    group: str = ""
    namespace: str | None = None


@dataclass(frozen=True)
class Source:
    principals: tuple[str, ...] = ()
    not_principals: tuple[str, ...] = ()
    request_principals: tuple[str, ...] = ()
    not_request_principals: tuple[str, ...] = ()
    namespaces: tuple[str, ...] = ()
    not_namespaces: tuple[str, ...] = ()
    service_accounts: tuple[str, ...] = ()
    not_service_accounts: tuple[str, ...] = ()
    ip_blocks: tuple[str, ...] = ()
    not_ip_blocks: tuple[str, ...] = ()
    remote_ip_blocks: tuple[str, ...] = ()
    not_remote_ip_blocks: tuple[str, ...] = ()


@dataclass(frozen=True)
class Operation:
    hosts: tuple[str, ...] = ()
    not_hosts: tuple[str, ...] = ()
    ports: tuple[str, ...] = ()
    not_ports: tuple[str, ...] = ()
    methods: tuple[str, ...] = ()
    not_methods: tuple[str, ...] = ()
    paths: tuple[str, ...] = ()
    not_paths: tuple[str, ...] = ()


@dataclass(frozen=True)
class Condition:
    key: str
    values: tuple[str, ...] = ()
    not_values: tuple[str, ...] = ()


@dataclass(frozen=True)
class Rule:
    sources: tuple[Source, ...] = ()  # rule.from[*].source; empty: any source
    operations: tuple[Operation, ...] = ()  # rule.to[*].operation; empty: any operation
    conditions: tuple[Condition, ...] = ()  # rule.when


@dataclass(frozen=True)
class _SelectedPolicy(Resource):
    selector: dict | None = None  # matchLabels only; None: the whole namespace
    target_refs: tuple[TargetRef, ...] = ()  # targetRef and targetRefs merged

    def selects(self, labels: dict) -> bool:
        """Whether a workload with `labels` (in this namespace) is selected by `selector`."""
        return self.selector is None or selector_matches(self.selector, labels)


@dataclass(frozen=True)
class AuthorizationPolicy(_SelectedPolicy):
    action: str = "ALLOW"
    provider: str | None = None
    rules: tuple[Rule, ...] = ()


@dataclass(frozen=True)
class FromHeader:
    name: str
    prefix: str = ""


@dataclass(frozen=True)
class ClaimToHeader:
    header: str
    claim: str


@dataclass(frozen=True)
class JWTRule:
    issuer: str
    audiences: tuple[str, ...] = ()
    jwks_uri: str | None = None
    jwks: str | None = None
    from_headers: tuple[FromHeader, ...] = ()
    from_params: tuple[str, ...] = ()
    from_cookies: tuple[str, ...] = ()
    forward_original_token: bool = False
    output_payload_to_header: str | None = None
    output_claim_to_headers: tuple[ClaimToHeader, ...] = ()
    timeout: str | None = None


@dataclass(frozen=True)
class RequestAuthentication(_SelectedPolicy):
    jwt_rules: tuple[JWTRule, ...] = ()


@dataclass(frozen=True)
class PeerAuthentication(_SelectedPolicy):
    mtls_mode: str = "UNSET"  # UNSET inherits from the parent scope
    port_level_mtls: dict = field(default_factory=dict)  # {port int: mode}


# -- building ---------------------------------------------------------------------------------

def _t(values) -> tuple:
    return tuple(values or ())


def _meta(obj: dict) -> ObjectMeta:
    meta = obj["metadata"]
    return ObjectMeta(name=meta["name"], namespace=meta.get("namespace", ""),
                      labels=dict(meta.get("labels") or {}),
                      annotations=dict(meta.get("annotations") or {}),
                      uid=meta.get("uid"), resource_version=meta.get("resourceVersion"))


def _pod_spec(spec: dict) -> PodSpec:
    containers = []
    for c in spec["containers"]:
        containers.append(Container(
            name=c["name"], image=c["image"], command=_t(c.get("command")), args=_t(c.get("args")),
            ports=tuple(ContainerPort(p["containerPort"], p.get("name"), p.get("protocol") or "TCP")
                        for p in c.get("ports") or ()),
            env=tuple(EnvVar(e["name"], e.get("value") or "") for e in c.get("env") or ()),
            image_pull_policy=c.get("imagePullPolicy")))
    grace = spec.get("terminationGracePeriodSeconds")
    return PodSpec(
        containers=tuple(containers),
        service_account_name=spec.get("serviceAccountName") or "default",
        node_name=spec.get("nodeName"), node_selector=dict(spec.get("nodeSelector") or {}),
        host_network=bool(spec.get("hostNetwork")),
        termination_grace_period_seconds=30 if grace is None else grace,
        restart_policy=spec.get("restartPolicy") or "Always")


def _template(spec: dict) -> PodTemplate:
    template = spec["template"]
    tmeta = template.get("metadata") or {}
    return PodTemplate(labels=dict(tmeta.get("labels") or {}),
                       annotations=dict(tmeta.get("annotations") or {}),
                       spec=_pod_spec(template["spec"]))


def _target_refs(spec: dict) -> tuple[TargetRef, ...]:
    refs = ([spec["targetRef"]] if spec.get("targetRef") else []) + list(spec.get("targetRefs") or ())
    return tuple(TargetRef(kind=r["kind"], name=r["name"], group=r.get("group") or "",
                           namespace=r.get("namespace")) for r in refs)


def _selector(spec: dict) -> dict | None:
    selector = spec.get("selector")
    if selector is None:
        return None
    return {"matchLabels": dict(selector.get("matchLabels") or {})}


def _snake(name: str) -> str:
    return "".join("_" + c.lower() if c.isupper() else c for c in name)


def _rule(rule: dict) -> Rule:
    sources = tuple(Source(**{_snake(k): tuple(v) for k, v in (f["source"] or {}).items() if v})
                    for f in rule.get("from") or ())
    operations = tuple(Operation(**{_snake(k): tuple(v) for k, v in (t["operation"] or {}).items()
                                    if v})
                       for t in rule.get("to") or ())
    conditions = tuple(Condition(c["key"], _t(c.get("values")), _t(c.get("notValues")))
                       for c in rule.get("when") or ())
    return Rule(sources, operations, conditions)


def _jwt_rule(r: dict) -> JWTRule:
    return JWTRule(
        issuer=r["issuer"], audiences=_t(r.get("audiences")), jwks_uri=r.get("jwksUri"),
        jwks=r.get("jwks"),
        from_headers=tuple(FromHeader(h["name"], h.get("prefix") or "")
                           for h in r.get("fromHeaders") or ()),
        from_params=_t(r.get("fromParams")), from_cookies=_t(r.get("fromCookies")),
        forward_original_token=bool(r.get("forwardOriginalToken")),
        output_payload_to_header=r.get("outputPayloadToHeader"),
        output_claim_to_headers=tuple(ClaimToHeader(o["header"], o["claim"])
                                      for o in r.get("outputClaimToHeaders") or ()),
        timeout=r.get("timeout"))


def _build(obj: dict) -> Resource:
    kind = obj["kind"]
    spec = obj.get("spec") or {}
    base = dict(api_version=obj["apiVersion"], kind=kind, metadata=_meta(obj), raw=obj,
                warnings=tuple(legacy_warnings(obj)))
    if kind == "Namespace":
        return Namespace(**base)
    if kind == "ServiceAccount":
        return ServiceAccount(**base)
    if kind == "Node":
        return Node(**base, pod_cidr=spec.get("podCIDR"), status=dict(obj.get("status") or {}))
    if kind == "Service":
        ports = tuple(ServicePort(port=p["port"],
                                  target_port=p["port"] if p.get("targetPort") is None
                                  else p["targetPort"],
                                  name=p.get("name") or "", protocol=p.get("protocol") or "TCP",
                                  app_protocol=p.get("appProtocol"))
                      for p in spec.get("ports") or ())
        selector = spec.get("selector")
        return Service(**base, ports=ports, selector=None if selector is None else dict(selector),
                       cluster_ip=spec.get("clusterIP") or None, type=spec.get("type") or "ClusterIP")
    if kind == "Pod":
        return Pod(**base, spec=_pod_spec(spec), status=dict(obj.get("status") or {}))
    if kind == "Deployment":
        replicas = spec.get("replicas")
        return Deployment(**base, replicas=1 if replicas is None else replicas,
                          selector=spec["selector"], template=_template(spec))
    if kind == "DaemonSet":
        return DaemonSet(**base, selector=spec["selector"], template=_template(spec))
    if kind == "Gateway":
        listeners = tuple(Listener(name=lst["name"], port=lst["port"], protocol=lst["protocol"],
                                   hostname=lst.get("hostname"),
                                   allowed_routes=lst.get("allowedRoutes"))
                          for lst in spec["listeners"])
        return Gateway(**base, gateway_class_name=spec["gatewayClassName"], listeners=listeners,
                       addresses=_t(spec.get("addresses")))
    if kind == "HTTPRoute":
        parents = tuple(ParentRef(name=p["name"], group=p.get("group", "gateway.networking.k8s.io"),
                                  kind=p.get("kind") or "Gateway", namespace=p.get("namespace"),
                                  section_name=p.get("sectionName"), port=p.get("port"))
                        for p in spec.get("parentRefs") or ())
        return HTTPRoute(**base, parent_refs=parents, hostnames=_t(spec.get("hostnames")),
                         rules=_t(spec.get("rules")))
    policy = dict(base, selector=_selector(spec), target_refs=_target_refs(spec))
    if kind == "AuthorizationPolicy":
        return AuthorizationPolicy(**policy, action=spec.get("action") or "ALLOW",
                                   provider=(spec.get("provider") or {}).get("name"),
                                   rules=tuple(_rule(r) for r in spec.get("rules") or ()))
    if kind == "RequestAuthentication":
        return RequestAuthentication(**policy,
                                     jwt_rules=tuple(_jwt_rule(r) for r in spec.get("jwtRules") or ()))
    if kind == "PeerAuthentication":
        mtls = spec.get("mtls") or {}
        port_level = {int(port): (setting.get("mode") or "UNSET")
                      for port, setting in (spec.get("portLevelMtls") or {}).items()}
        return PeerAuthentication(**policy, mtls_mode=mtls.get("mode") or "UNSET",
                                  port_level_mtls=port_level)
    raise AssertionError(f"no typed class for {kind}")  # validate() only lets known kinds through


def parse(obj: dict, source: str = "<api>", index: int | str = 1) -> Resource:
    """The typed object for a manifest dict (validated first; ManifestError if invalid)."""
    return _build(validate(obj, source, index))
