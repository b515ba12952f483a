"""Targets by name. Imported lazily: choosing a target must not import the other's dependencies."""
from __future__ import annotations

import importlib

TARGETS = {
    "reference": "conformance.targets.reference:ReferenceTarget",
    "kubernetes": "conformance.targets.kubernetes:KubernetesTarget",
}


def target_class(name: str):
    try:
        module, _, cls = TARGETS[name].partition(":")
    except KeyError:
        raise ValueError(f"unknown target {name!r}; choose one of {', '.join(sorted(TARGETS))}") from None
    return getattr(importlib.import_module(module), cls)
