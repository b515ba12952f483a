"""Label selectors: Kubernetes LabelSelector (matchLabels + matchExpressions) and plain maps."""

from __future__ import annotations

OPERATORS = ("In", "NotIn", "Exists", "DoesNotExist")
_SELECTOR_KEYS = {"matchLabels", "matchExpressions"}


def is_label_selector(selector: dict) -> bool:
    """True for the {matchLabels, matchExpressions} form, False for a plain label map."""
    return bool(selector) and set(selector) <= _SELECTOR_KEYS


def selector_matches(selector: dict | None, labels: dict | None) -> bool:
    """Whether `labels` satisfy `selector`.

    Follows Kubernetes: a missing (None) selector selects nothing, an empty one selects
    everything. Both the LabelSelector form and Service's plain map are accepted. Callers with
    other defaults (an Istio policy without selector applies namespace-wide) decide before calling.
    """
    if selector is None:
        return False
    labels = labels or {}
    if not is_label_selector(selector):
        return all(labels.get(k) == v for k, v in selector.items())
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    for expr in selector.get("matchExpressions") or ():
        key, op, values = expr.get("key"), expr.get("operator"), expr.get("values") or ()
        if op == "In":
            ok = key in labels and labels[key] in values
        elif op == "NotIn":
            ok = key not in labels or labels[key] not in values
        elif op == "Exists":
            ok = key in labels
        elif op == "DoesNotExist":
            ok = key not in labels
        else:
            raise ValueError(f"unknown selector operator {op!r}; use one of {', '.join(OPERATORS)}")
        if not ok:
            return False
    return True
