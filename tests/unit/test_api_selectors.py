"""selector_matches: Kubernetes LabelSelector semantics and Service's plain-map selectors."""

import pytest

from reference_impl.api import selector_matches

WEB = {"app": "web", "version": "v1", "tier": "front"}

CASES = [
    ("none-selects-nothing", None, WEB, False),
    ("empty-selects-everything", {}, WEB, True),
    ("empty-matchlabels-selects-everything", {"matchLabels": {}}, WEB, True),
    ("plain-map-subset", {"app": "web"}, WEB, True),
    ("plain-map-other-value", {"app": "db"}, WEB, False),
    ("plain-map-missing-key", {"app": "web", "zone": "a"}, WEB, False),
    ("matchlabels-subset", {"matchLabels": {"app": "web", "version": "v1"}}, WEB, True),
    ("matchlabels-mismatch", {"matchLabels": {"version": "v2"}}, WEB, False),
    ("in", {"matchExpressions": [{"key": "version", "operator": "In", "values": ["v1", "v2"]}]},
     WEB, True),
    ("in-miss", {"matchExpressions": [{"key": "version", "operator": "In", "values": ["v2"]}]},
     WEB, False),
    ("in-absent-key", {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["a"]}]},
     WEB, False),
    ("notin", {"matchExpressions": [{"key": "version", "operator": "NotIn", "values": ["v2"]}]},
     WEB, True),
    ("notin-hit", {"matchExpressions": [{"key": "version", "operator": "NotIn",
                                         "values": ["v1"]}]}, WEB, False),
    ("notin-absent-key", {"matchExpressions": [{"key": "zone", "operator": "NotIn",
                                                "values": ["a"]}]}, WEB, True),
    ("exists", {"matchExpressions": [{"key": "tier", "operator": "Exists"}]}, WEB, True),
    ("exists-miss", {"matchExpressions": [{"key": "zone", "operator": "Exists"}]}, WEB, False),
    ("doesnotexist", {"matchExpressions": [{"key": "zone", "operator": "DoesNotExist"}]}, WEB, True),
    ("doesnotexist-hit", {"matchExpressions": [{"key": "app", "operator": "DoesNotExist"}]}, WEB,
     False),
    ("labels-and-expressions-anded", {"matchLabels": {"app": "web"}, "matchExpressions": [
        {"key": "tier", "operator": "In", "values": ["back"]}]}, WEB, False),
    ("no-labels", {"app": "web"}, None, False),
    ("empty-selector-no-labels", {}, {}, True),
]


@pytest.mark.parametrize("selector, labels, expected", [c[1:] for c in CASES],
                         ids=[c[0] for c in CASES])
def test_selector_matches(selector, labels, expected):
    assert selector_matches(selector, labels) is expected


def test_unknown_operator_is_an_error_not_a_silent_miss():
    with pytest.raises(ValueError, match="unknown selector operator 'Equals'"):
        selector_matches({"matchExpressions": [{"key": "a", "operator": "Equals"}]}, WEB)
