"""The shapes inside a snapshot: one class per resource, one spelling per field.

The control plane builds these and sends `to_dict()`; a proxy reads them back with `from_dict`,
which is strict: a field that is unknown, missing or of the wrong type raises SnapshotError
naming it (`workloads[3].workloadIps: ...`), and the proxy NACKs the snapshot with that message.
Field names are ztunnel's (Workload, Service, GatewayAddress, Authorization: camelCase, as its
config_dump writes them); docs/INTERNALS.md, "Config shapes", lists them.

Python code builds them with keyword arguments (snake_case); defaults are for that convenience
only: on the wire every field must be present.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, ValidationError, ValidationInfo, model_validator
from pydantic.alias_generators import to_camel

HBONE_PORT = 15008
HEALTHY, UNHEALTHY = "Healthy", "Unhealthy"
_WIRE = {"wire": True}


class SnapshotError(ValueError):
    """A snapshot (or one resource in it) does not have the shape of this module's classes."""


def _path(loc: tuple) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


class Resource(BaseModel):
    model_config = ConfigDict(extra="forbid", alias_generator=to_camel, populate_by_name=True,
                              strict=True, validate_assignment=False)

    @model_validator(mode="before")
    @classmethod
    def _every_field_present(cls, data: Any, info: ValidationInfo) -> Any:
        # Only on the wire: Python callers may rely on the defaults.
        if info.context is _WIRE and isinstance(data, dict):
            for name, spec in cls.model_fields.items():
                if (spec.alias or name) not in data:
                    raise ValueError(f"missing field `{spec.alias or name}`")
        return data

    def to_dict(self) -> dict:
        return self.model_dump(by_alias=True)

    @classmethod
    def from_dict(cls, data: Any, where: str = ""):
        """`where` prefixes the field path in the error (e.g. "ztunnel snapshot version 4")."""
        try:
            return cls.model_validate(data, context=_WIRE)
        except ValidationError as exc:
            err = exc.errors(include_url=False)[0]
            path = _path(err["loc"])
            message = err["msg"]
            if err["type"] == "extra_forbidden":
                message = f"unknown field `{err['loc'][-1]}`"
                path = _path(err["loc"][:-1])
            elif err["type"] == "value_error":
                message = message.removeprefix("Value error, ")
            elif err["type"] == "missing":
                message = f"missing field `{err['loc'][-1]}`"
                path = _path(err["loc"][:-1])
            what = cls.__name__ if not path else path
            prefix = f"{where}: " if where else ""
            raise SnapshotError(f"{prefix}{what}: {message} (got {_short(err.get('input'))})"
                                if err["type"] not in ("extra_forbidden", "missing", "value_error")
                                else f"{prefix}{what}: {message}") from None


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


class MeshConfig(Resource):
    trust_domain: str = "cluster.local"
    root_namespace: str = "istio-system"
    cluster_id: str = "Kubernetes"
    trust_bundle: list[str] = []


class NamespacedHostname(Resource):
    namespace: str
    hostname: str


class GatewayAddress(Resource):
    """ztunnel's GatewayAddress: how a Workload or Service names its waypoint."""

    destination: NamespacedHostname
    address: str | None = None         # the waypoint Service's VIP (None until it has one)
    hbone_mtls_port: int = HBONE_PORT


class Workload(Resource):
    uid: str
    name: str
    namespace: str
    workload_ips: list[str]
    node: str = ""
    service_account: str = "default"
    trust_domain: str = "cluster.local"
    identity: str = ""                     # spiffe://<trust domain>/ns/<namespace>/sa/<account>
    protocol: Literal["HBONE", "TCP"] = "HBONE"   # HBONE: it terminates HBONE (ztunnel or sidecar)
    dataplane_mode: Literal["ambient", "sidecar", "none"] = "ambient"
    network_mode: Literal["Standard", "HostNetwork"] = "Standard"
    host_network: bool = False
    status: Literal["Healthy", "Unhealthy"] = HEALTHY
    waypoint: GatewayAddress | None = None
    workload_name: str = ""
    workload_type: str = "pod"
    canonical_name: str = ""
    canonical_revision: str = "latest"
    cluster_id: str = "Kubernetes"
    labels: dict[str, str] = {}
    netns: str | None = None
    pod_uid: str | None = None
    # Keys (namespace/name) of the WORKLOAD_SELECTOR policies that select it: the control plane
    # binds selectors, the proxy only looks these up (GLOBAL/NAMESPACE ones bind by scope).
    authorization_policies: list[str] = []
    services: list[str] = []               # namespace/hostname of the services it is an endpoint of


class Endpoint(Resource):
    workload_uid: str
    port: dict[str, int] = {}              # service port -> target port on this endpoint
    status: Literal["Healthy", "Unhealthy"] = HEALTHY


class Service(Resource):
    name: str
    namespace: str
    hostname: str
    vips: list[str] = []
    ports: dict[str, int] = {}             # service port -> target port (0: named, per endpoint)
    port_names: dict[str, str] = {}
    app_protocols: dict[str, str] = {}     # service port -> its `appProtocol` (ports that set one)
    endpoints: dict[str, Endpoint] = {}    # workload uid -> endpoint
    headless: bool = False
    subject_alt_names: list[str] = []
    waypoint: GatewayAddress | None = None

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.hostname}"


class Authorization(Resource):
    """An AuthorizationPolicy as ztunnel enforces it: reference_impl.policy's CompiledPolicy
    (whose `rules` and `dry_run` spellings this keeps), plus why it was replaced, if it was."""

    model_config = ConfigDict(alias_generator=None)

    name: str
    namespace: str
    scope: Literal["GLOBAL", "NAMESPACE", "WORKLOAD_SELECTOR"]
    action: Literal["ALLOW", "DENY"]
    rules: list[dict[str, Any]] = []
    dry_run: bool = False
    selector: dict[str, str] | None = None
    error: str | None = None               # set when this is the fail-closed replacement
    warnings: list[str] = []

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"


class KubeObject(Resource):
    """A Kubernetes object shipped as is (PeerAuthentication): identity, age and spec."""

    model_config = ConfigDict(alias_generator=None)

    apiVersion: str
    kind: str
    metadata: dict[str, Any]
    spec: dict[str, Any] = {}


class BoundPolicy(KubeObject):
    """An AuthorizationPolicy or RequestAuthentication sent to a waypoint, with the workloads it
    is limited to (None: all the waypoint's traffic; a legacy waypoint's selector policies) and
    the services (namespace/hostname) it is limited to (a Service-attached policy: requests
    addressed to that service, whichever endpoint serves them)."""

    appliesToWorkloads: list[str] | None = None
    appliesToServices: list[str] | None = None


class ZtunnelSnapshot(Resource):
    """What every node proxy holds: the whole mesh (it routes to remote workloads too)."""

    mesh_config: MeshConfig
    workloads: list[Workload] = []
    services: list[Service] = []
    policies: list[Authorization] = []
    peer_authentications: list[KubeObject] = []


class WaypointInfo(Resource):
    namespace: str
    name: str
    hostname: str
    address: str | None = None
    waypoint_for: str = "service"
    legacy: bool = False
    for_service_account: str | None = None
    identity: str = ""


class WaypointSnapshot(Resource):
    """What one waypoint holds: what it fronts, the L7 policies bound to it, and the mesh's
    workloads and services (it opens new HBONE connections to any destination)."""

    mesh_config: MeshConfig
    waypoint: WaypointInfo | None = None   # None: istiod knows no Gateway for this pod
    services: list[str] = []               # namespace/hostname of the fronted services
    workload_uids: list[str] = []          # the fronted workloads
    authorization_policies: list[BoundPolicy] = []
    request_authentications: list[BoundPolicy] = []
    workloads: list[Workload] = []
    all_services: list[Service] = []
    jwks_by_uri: dict[str, Any] = {}       # jwksUri -> JWKS document (text or object), by istiod
    routes: list[ServiceRoutes] = []       # HTTP routes of the fronted services (controlplane/routes.py)


# -- HTTP routes at the waypoint (HTTPRoute with a Service parent, VirtualService; issue 9, GAMMA) --
# The control plane resolves references and orders the matches (Gateway API precedence); the
# waypoint only walks `matches` in order and applies the first rule that matches.

class RouteNameValue(Resource):
    name: str
    value: str


class RouteValueMatch(Resource):
    """A header or query-parameter match: header names compare case-insensitively, query names exactly."""

    name: str
    value: str
    type: Literal["Exact", "RegularExpression", "Prefix"] = "Exact"   # Prefix: VirtualService only


class RouteMatch(Resource):
    # PathPrefix: Gateway API's, by path segment; StringPrefix: VirtualService `uri.prefix`, by character
    path_type: Literal["Exact", "PathPrefix", "RegularExpression", "StringPrefix"] = "PathPrefix"
    path: str = "/"
    headers: list[RouteValueMatch] = []
    query_params: list[RouteValueMatch] = []
    method: str | None = None


class RouteHeaderModifier(Resource):
    set: list[RouteNameValue] = []
    add: list[RouteNameValue] = []
    remove: list[str] = []


class RoutePathModifier(Resource):
    type: Literal["ReplaceFullPath", "ReplacePrefixMatch"]
    value: str


class RouteRedirect(Resource):
    scheme: str | None = None
    hostname: str | None = None
    path: RoutePathModifier | None = None
    port: int | None = None
    status_code: int = 302


class RouteRewrite(Resource):
    hostname: str | None = None
    path: RoutePathModifier | None = None


class RouteBackend(Resource):
    """One backendRef: `service` is the resolved key (namespace/hostname), or None with `error`
    saying why it could not be resolved (its share of the traffic gets 500)."""

    service: str | None
    port: int                         # 0: the port the request was sent to (a VirtualService without one)
    weight: int = 1
    request_headers: RouteHeaderModifier | None = None
    response_headers: RouteHeaderModifier | None = None
    error: str | None = None


class RouteRetry(Resource):
    attempts: int                     # retries after the first try
    codes: list[int] = []             # response codes that are retried
    backoff_seconds: float = 0.025    # base interval (Envoy's default 25 ms)
    per_try_timeout_seconds: float | None = None


class RouteFault(Resource):
    delay_seconds: float | None = None
    delay_percent: float = 100.0
    abort_status: int | None = None
    abort_percent: float = 100.0


class RouteRule(Resource):
    source: str                       # e.g. "HTTPRoute ns/name rules[0]", for logs and describe
    request_headers: RouteHeaderModifier | None = None
    response_headers: RouteHeaderModifier | None = None
    redirect: RouteRedirect | None = None
    rewrite: RouteRewrite | None = None
    backends: list[RouteBackend] = []
    timeout_seconds: float | None = None  # None or 0: no request timeout
    retry: RouteRetry | None = None
    fault: RouteFault | None = None


class RouteEntry(Resource):
    """One match of one rule, in precedence order; `ports` None: every port of the service."""

    rule: int
    ports: list[int] | None = None
    match: RouteMatch


class ServiceRoutes(Resource):
    """The routes of one fronted service (namespace/hostname), from HTTPRoutes or VirtualServices."""

    service: str
    rules: list[RouteRule] = []
    matches: list[RouteEntry] = []
    ports: list[int] | None = None    # ports some route binds (None: all); other ports are not routed


WaypointSnapshot.model_rebuild()
