"""API discovery as kubectl and client-go read it: /version, /api, /apis, /apis/<g>/<v>, and the
CustomResourceDefinitions that describe the Istio and Gateway API kinds.

kubectl 1.30+ asks for aggregated discovery first (`as=APIGroupDiscoveryList`) and reads the
legacy documents when the server answers with plain `application/json`, which is what we send.
"""
from __future__ import annotations

from .resources import Resource, ResourceTable

SERVER_VERSION = {"major": "1", "minor": "32", "gitVersion": "v1.32.0-ambient-conformance",
                  "gitCommit": "", "gitTreeState": "clean", "buildDate": "2026-01-01T00:00:00Z",
                  "goVersion": "go1.23", "compiler": "gc", "platform": "linux/amd64"}


def api_versions(server_address: str) -> dict:
    return {"kind": "APIVersions", "versions": ["v1"],
            "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0",
                                            "serverAddress": server_address}]}


def _group(name: str, versions: list[str]) -> dict:
    entries = [{"groupVersion": f"{name}/{v}", "version": v} for v in versions]
    return {"name": name, "versions": entries, "preferredVersion": entries[0]}


def api_group_list(table: ResourceTable) -> dict:
    return {"kind": "APIGroupList", "apiVersion": "v1",
            "groups": [_group(g, vs) for g, vs in table.groups().items() if g]}


def api_group(table: ResourceTable, name: str) -> dict | None:
    versions = table.groups().get(name)
    if not versions or not name:
        return None
    return dict(_group(name, versions), kind="APIGroup", apiVersion="v1")


def _entries(r: Resource) -> list[dict]:
    main = {"name": r.plural, "singularName": r.singular, "namespaced": r.namespaced,
            "kind": r.kind, "verbs": r.verbs()}
    if r.short_names:
        main["shortNames"] = list(r.short_names)
    if r.categories:
        main["categories"] = list(r.categories)
    out = [main]
    for sub in r.subresources:
        entry = {"name": f"{r.plural}/{sub}", "singularName": "", "namespaced": r.namespaced,
                 "kind": r.kind, "verbs": ["get", "patch", "update"]}
        if sub == "scale":
            entry.update(group="autoscaling", version="v1", kind="Scale")
        elif sub == "exec":
            entry.update(kind="PodExecOptions", verbs=["create", "get"])
        elif sub == "log":
            entry.update(kind="Pod", verbs=["get"])
        elif sub == "token":
            entry.update(group="authentication.k8s.io", version="v1", kind="TokenRequest",
                         verbs=["create"])
        out.append(entry)
    return out


def api_resource_list(table: ResourceTable, group: str, version: str) -> dict | None:
    resources = table.in_version(group, version)
    if not resources:
        return None
    return {"kind": "APIResourceList", "apiVersion": "v1",
            "groupVersion": f"{group}/{version}" if group else version,
            "resources": [e for r in resources for e in _entries(r)]}


def crd_object(r: Resource, created: str) -> dict:
    """The CustomResourceDefinition a real install of Istio / Gateway API would have for `r`."""
    names = {"kind": r.kind, "listKind": f"{r.kind}List", "plural": r.plural,
             "singular": r.singular}
    if r.short_names:
        names["shortNames"] = list(r.short_names)
    if r.categories:
        names["categories"] = list(r.categories)
    versions = []
    for i, v in enumerate(r.versions):
        entry = {"name": v, "served": True, "storage": i == 0,
                 "schema": {"openAPIV3Schema": {"type": "object",
                                                "x-kubernetes-preserve-unknown-fields": True}}}
        if "status" in r.subresources:
            entry["subresources"] = {"status": {}}
        versions.append(entry)
    return {"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
            "metadata": {"name": f"{r.plural}.{r.group}", "uid": f"crd-{r.plural}.{r.group}",
                         "resourceVersion": "1", "creationTimestamp": created,
                         "generation": 1},
            "spec": {"group": r.group, "names": names,
                     "scope": "Namespaced" if r.namespaced else "Cluster", "versions": versions},
            "status": {"acceptedNames": names, "storedVersions": [r.versions[0]],
                       "conditions": [{"type": "Established", "status": "True",
                                       "reason": "InitialNamesAccepted",
                                       "lastTransitionTime": created}]}}
