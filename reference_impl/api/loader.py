"""Reading manifests from YAML text and files, all-or-nothing.

Every document is validated; the first problem raises ManifestError and nothing is returned.
"""

from __future__ import annotations

import os
from pathlib import Path

import yaml

from .checker import Checker, describe
from .errors import ManifestError
from .kinds import object_key
from .validate import validate


class _KubernetesLoader(yaml.SafeLoader):
    """SafeLoader that keeps timestamps as strings, as Kubernetes' YAML-to-JSON does (a
    datetime in an object would not survive JSON to the store)."""


_KubernetesLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def _yaml_documents(text: str, source: str):
    """[(document number, node, data)] for every document, empty ones included."""
    loader = _KubernetesLoader(text)
    documents = []
    try:
        while loader.check_node():
            node = loader.get_node()
            number = len(documents) + 1
            if node is not None:
                _reject_duplicate_keys(node, source, number)
            data = loader.construct_document(node) if node is not None else None
            documents.append((number, node, data))
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        problem = exc.problem or exc.context or "invalid syntax"
        raise ManifestError(
            f"{source}: document {len(documents) + 1}{line}: malformed YAML: {problem}; "
            "check the indentation, the '- ' of list items and the quoting on that line "
            "(a missing line break between two documents looks like this too)",
            source=source, document=f"document {len(documents) + 1}",
            line=mark.line + 1 if mark else None) from None
    except yaml.YAMLError as exc:
        raise ManifestError(f"{source}: malformed YAML: {exc}; fix the file's syntax",
                            source=source) from None
    finally:
        loader.dispose()
    return documents


def _reject_duplicate_keys(node, source: str, number: int) -> None:
    # PyYAML keeps the last of two equal keys silently; kubectl refuses such a file.
    stack = [node]
    while stack:
        current = stack.pop()
        if current.id == "mapping":
            seen = {}
            for key_node, value_node in current.value:
                key = getattr(key_node, "value", None)
                if isinstance(key, str) and key_node.id == "scalar":
                    if key in seen:
                        raise ManifestError(
                            f"{source}: document {number} (line {key_node.start_mark.line + 1}): "
                            f"key {key!r} appears twice in the same mapping (first on line "
                            f"{seen[key]}); keep only one",
                            source=source, document=f"document {number}",
                            line=key_node.start_mark.line + 1)
                    seen[key] = key_node.start_mark.line + 1
                stack.append(value_node)
        elif current.id == "sequence":
            stack.extend(current.value)


def _list_items(data: dict, node, source: str, label: str):
    """[(label, node, item)] for a `kind: List` document."""
    check = Checker(source, label, node)
    check.kind = "List"
    items = data.get("items")
    if items is None:
        return []
    if not isinstance(items, list):
        check.fail(("items",), f"expected a list, got {describe(items)}",
                   "write the objects as a YAML list under items")
    item_nodes = []
    if node is not None and node.id == "mapping":
        for key_node, value_node in node.value:
            if key_node.value == "items" and value_node.id == "sequence":
                item_nodes = value_node.value
    return [(f"{label}, item {i + 1}", item_nodes[i] if i < len(item_nodes) else None, item)
            for i, item in enumerate(items)]


def load_text(text: str, source: str = "<stdin>") -> list[dict]:
    """Validated objects from multi-document YAML text; ManifestError on the first problem."""
    objects: list[dict] = []
    seen: dict[tuple, str] = {}
    _load_into(text, source, objects, seen)
    return objects


def _load_into(text: str, source: str, objects: list, seen: dict) -> None:
    for number, node, data in _yaml_documents(text, source):
        if data is None:
            continue
        label = f"document {number}"
        entries = [(label, node, data)]
        if isinstance(data, dict) and data.get("kind") == "List":
            entries = _list_items(data, node, source, label)
        for entry_label, entry_node, entry in entries:
            obj = validate(entry, source, entry_label, entry_node)
            key = object_key(obj)
            where = f"{source} {entry_label}"
            if key in seen:
                kind, namespace, name = key
                shown = f"{namespace}/{name}" if namespace else name
                raise ManifestError(
                    f"{where}: {kind} {shown} is defined twice (also in {seen[key]}); "
                    "keep one definition", source=source, document=entry_label, kind=kind,
                    namespace=namespace or None, name=name)
            seen[key] = where
            objects.append(obj)


def _expand(paths) -> list[Path]:
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    files = []
    for given in paths:
        path = Path(given)
        if path.is_dir():
            found = sorted(p for p in path.iterdir()
                           if p.is_file() and p.suffix in (".yaml", ".yml"))
            if not found:
                raise ManifestError(f"{path}: the directory has no .yaml or .yml files; "
                                    "point at a manifest file or a directory of them",
                                    source=str(path))
            files.extend(found)
        elif path.is_file():
            files.append(path)
        else:
            raise ManifestError(f"{path}: no such file or directory; check the path",
                                source=str(path))
    return files


def load_files(paths) -> list[dict]:
    """Validated objects from files and directories (*.yaml/*.yml, sorted, not recursive).

    All-or-nothing: the first problem raises ManifestError and no object is returned.
    """
    objects: list[dict] = []
    seen: dict[tuple, str] = {}
    for path in _expand(paths):
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            raise ManifestError(f"{path}: not UTF-8 text; save the manifest as UTF-8",
                                source=str(path)) from None
        except OSError as exc:
            raise ManifestError(f"{path}: cannot be read ({exc.strerror}); check the path and "
                                "its permissions", source=str(path)) from None
        _load_into(text, str(path), objects, seen)
    return objects
