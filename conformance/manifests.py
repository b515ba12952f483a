"""Turn what a test hands to `Target.apply` (paths, dicts, YAML text) into a list of objects."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Iterable, Union

import yaml

Manifests = Union[str, os.PathLike, dict, Iterable[Union[str, os.PathLike, dict]]]


class ManifestError(ValueError):
    """A manifest the suite cannot use; the message names the source and what to fix."""


def load(manifests: Manifests) -> list[dict[str, Any]]:
    """Every object in `manifests`, in order; `List` kinds are flattened, empty documents dropped."""
    if isinstance(manifests, (str, os.PathLike, dict)):
        manifests = [manifests]
    objects: list[dict[str, Any]] = []
    for item in manifests:
        if isinstance(item, dict):
            objects += _flatten(item, "<dict>")
        elif isinstance(item, os.PathLike) or (isinstance(item, str) and "\n" not in item
                                               and item.endswith((".yaml", ".yml", ".json"))):
            objects += _from_file(Path(item))
        elif isinstance(item, str):
            objects += _from_text(item, "<yaml text>")
        else:
            raise ManifestError(f"manifest {item!r} is neither a path, a dict nor YAML text; pass one of those")
    return objects


def _from_file(path: Path) -> list[dict]:
    try:
        text = path.read_text()
    except OSError as e:
        raise ManifestError(f"{path}: cannot read the manifest file ({e.strerror}); check the path") from None
    return _from_text(text, str(path))


def _from_text(text: str, source: str) -> list[dict]:
    try:
        docs = list(yaml.safe_load_all(text))
    except yaml.YAMLError as e:
        raise ManifestError(f"{source}: not valid YAML ({str(e).splitlines()[0]}); fix the document") from None
    objects = []
    for i, doc in enumerate(docs):
        if doc is None:
            continue
        if not isinstance(doc, dict):
            raise ManifestError(f"{source}: document {i} is a {type(doc).__name__}, not an object; "
                                "each YAML document must be a Kubernetes object")
        objects += _flatten(doc, f"{source}:{i}")
    return objects


def _flatten(obj: dict, source: str) -> list[dict]:
    if obj.get("kind", "").endswith("List") and isinstance(obj.get("items"), list):
        return [o for item in obj["items"] for o in _flatten(item, source)]
    for field in ("apiVersion", "kind"):
        if not obj.get(field):
            raise ManifestError(f"{source}: object has no {field}; every object needs apiVersion and kind")
    if not (obj.get("metadata") or {}).get("name"):
        raise ManifestError(f"{source}: {obj['kind']} has no metadata.name; give it a name")
    return [obj]


def ref(obj: dict) -> tuple[str, str, str]:
    """(kind, namespace, name) of an object, namespace '' for cluster-scoped ones."""
    meta = obj.get("metadata") or {}
    return obj["kind"], meta.get("namespace") or "", meta["name"]
