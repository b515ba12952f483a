"""The resource table: which kinds the API serves, under which group, version and plural.

Every kind the store understands (`reference_impl.api.KINDS`) is served under its real group
and versions; the Istio and Gateway API kinds appear as CustomResourceDefinitions of those groups
(`kubectl get crd`, `kubectl api-resources`), as they would on a cluster with Istio installed.
Events are the API's own (derived from what the cluster does, see events.py).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from reference_impl import api

CORE_GROUPS = ("", "apps")

# Short names and categories as the real API server / the real CRDs declare them.
_SHORT_NAMES = {
    "Pod": ["po"], "Service": ["svc"], "Namespace": ["ns"], "Node": ["no"],
    "ServiceAccount": ["sa"], "ConfigMap": ["cm"], "Deployment": ["deploy"], "ReplicaSet": ["rs"], "DaemonSet": ["ds"], "Event": ["ev"],
    "Gateway": ["gtw"], "GatewayClass": ["gc"], "PeerAuthentication": ["pa"],
    "RequestAuthentication": ["ra"], "CustomResourceDefinition": ["crd", "crds"],
}
_CATEGORIES = {
    "Pod": ["all"], "Service": ["all"], "Deployment": ["all"], "DaemonSet": ["all"],
    "ReplicaSet": ["all"],
    "Gateway": ["gateway-api"], "HTTPRoute": ["gateway-api"], "GatewayClass": ["gateway-api"],
    "AuthorizationPolicy": ["istio-io", "security-istio-io"],
    "PeerAuthentication": ["istio-io", "security-istio-io"],
    "RequestAuthentication": ["istio-io", "security-istio-io"],
}
# Subresources per kind (beyond the object itself).
_SUBRESOURCES = {
    "Pod": ("status", "log", "exec", "proxy"), "Deployment": ("status", "scale"),
    "DaemonSet": ("status",), "Namespace": ("status",), "Node": ("status",),
    "Gateway": ("status",), "HTTPRoute": ("status",), "GatewayClass": ("status",),
    "ServiceAccount": ("token",),
}
# built-in groups that are not the store's (never served as CustomResourceDefinitions)
API_OWN_GROUPS = ("apiextensions.k8s.io", "authentication.k8s.io")
ALL_VERBS = ["create", "delete", "get", "list", "patch", "update", "watch"]
READ_VERBS = ["get", "list", "watch"]


def plural_of(kind: str) -> str:
    lower = kind.lower()
    if lower.endswith("y") and lower[-2:-1] not in "aeiou":
        return lower[:-1] + "ies"
    if lower.endswith("s"):
        return lower + "es"
    return lower + "s"


@dataclass(frozen=True)
class Resource:
    kind: str
    group: str
    versions: tuple[str, ...]  # the first is the preferred (storage) version
    namespaced: bool
    writable: bool = True
    plural: str = ""
    short_names: tuple[str, ...] = ()
    categories: tuple[str, ...] = ()
    subresources: tuple[str, ...] = ()
    crd: bool = False
    stored: bool = True  # False: not in the store (Events, CRDs: the API's own views)
    only_verbs: tuple[str, ...] = ()  # e.g. ("create",): TokenReview is never read back

    @property
    def singular(self) -> str:
        return self.kind.lower()

    @property
    def group_resource(self) -> str:
        """`deployments.apps`, `pods`: how Status messages name a resource."""
        return f"{self.plural}.{self.group}" if self.group else self.plural

    def api_version(self, version: str | None = None) -> str:
        version = version or self.versions[0]
        return f"{self.group}/{version}" if self.group else version

    def verbs(self) -> list[str]:
        if self.only_verbs:
            return list(self.only_verbs)
        return ALL_VERBS if self.writable else READ_VERBS


@dataclass
class ResourceTable:
    resources: list[Resource] = field(default_factory=list)

    @classmethod
    def build(cls) -> "ResourceTable":
        table = cls()
        for info in api.KINDS.values():
            groups: dict[str, list[str]] = {}
            for av in info.api_versions:
                group, _, version = av.rpartition("/")
                groups.setdefault(group, []).append(version)
            for group, versions in groups.items():
                table.resources.append(_resource(info.kind, group, tuple(versions),
                                                 info.namespaced, info.writable))
        table.resources.append(_resource("Event", "", ("v1",), True, False, stored=False))
        # the Deployment controller's ReplicaSets, derived (controllers.replicasets), read-only
        table.resources.append(_resource("ReplicaSet", "apps", ("v1",), True, False, stored=False))
        table.resources.append(_resource("CustomResourceDefinition", "apiextensions.k8s.io",
                                         ("v1",), False, False, stored=False))
        # service-account tokens (tokens.py): `kubectl create token` and TokenReview
        table.resources.append(dataclasses.replace(
            _resource("TokenReview", "authentication.k8s.io", ("v1",), False, True, stored=False),
            only_verbs=("create",)))
        return table

    def groups(self) -> dict[str, list[str]]:
        """group -> versions (preferred first), in a stable order: core, apps, then the rest."""
        out: dict[str, list[str]] = {}
        for r in sorted(self.resources, key=lambda r: (r.group not in CORE_GROUPS, r.group)):
            versions = out.setdefault(r.group, [])
            for v in r.versions:
                if v not in versions:
                    versions.append(v)
        return out

    def find(self, group: str, version: str, plural: str) -> Resource | None:
        for r in self.resources:
            if r.group == group and r.plural == plural and version in r.versions:
                return r
        return None

    def for_kind(self, kind: str) -> Resource | None:
        return next((r for r in self.resources if r.kind == kind), None)

    def in_version(self, group: str, version: str) -> list[Resource]:
        return [r for r in self.resources if r.group == group and version in r.versions]

    def crds(self) -> list[Resource]:
        return [r for r in self.resources if r.crd]


def _resource(kind: str, group: str, versions: tuple[str, ...], namespaced: bool,
              writable: bool, stored: bool = True) -> Resource:
    return Resource(kind=kind, group=group, versions=versions, namespaced=namespaced,
                    writable=writable, plural=plural_of(kind),
                    short_names=tuple(_SHORT_NAMES.get(kind, ())),
                    categories=tuple(_CATEGORIES.get(kind, ())),
                    subresources=_SUBRESOURCES.get(kind, ()),
                    crd=group not in CORE_GROUPS and group not in API_OWN_GROUPS,
                    stored=stored)
