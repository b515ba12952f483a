"""istiod's workload certificate lifetime from its pod environment (DEFAULT_WORKLOAD_CERT_TTL)."""
from __future__ import annotations

import pytest

from reference_impl.controlplane.__main__ import cert_ttl_from_env, parse_duration
from reference_impl.identity import DEFAULT_WORKLOAD_TTL


@pytest.mark.parametrize("text, seconds", [
    ("6s", 6), ("24h", 86400), ("1m30s", 90), ("1h0m0s", 3600), ("1.5h", 5400), ("500ms", 0.5),
    ("90", 90), ("2.5", 2.5),
])
def test_go_durations_and_bare_seconds(text, seconds):
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "6x", "s", "-6s", "6 s", "h1", "1d"])
def test_malformed_durations_are_rejected(text):
    with pytest.raises(ValueError):
        parse_duration(text)


def test_default_is_a_day_when_nothing_is_set():
    assert cert_ttl_from_env({}) == DEFAULT_WORKLOAD_TTL == 86400


def test_istio_variable_wins_over_the_older_name():
    assert cert_ttl_from_env({"DEFAULT_WORKLOAD_CERT_TTL": "6s", "AC_CERT_TTL_SECONDS": "600"}) == 6
    assert cert_ttl_from_env({"AC_CERT_TTL_SECONDS": "600"}) == 600
    assert cert_ttl_from_env({"DEFAULT_WORKLOAD_CERT_TTL": "1500ms"}) == 2  # whole seconds in X.509


@pytest.mark.parametrize("env, name", [
    ({"DEFAULT_WORKLOAD_CERT_TTL": "soon"}, "DEFAULT_WORKLOAD_CERT_TTL"),
    ({"DEFAULT_WORKLOAD_CERT_TTL": "100ms"}, "DEFAULT_WORKLOAD_CERT_TTL"),
    ({"DEFAULT_WORKLOAD_CERT_TTL": "0s"}, "DEFAULT_WORKLOAD_CERT_TTL"),
    ({"AC_CERT_TTL_SECONDS": "6s"}, "AC_CERT_TTL_SECONDS"),
    ({"AC_CERT_TTL_SECONDS": "0"}, "AC_CERT_TTL_SECONDS"),
])
def test_unusable_values_name_the_variable_and_where_to_fix_it(env, name):
    with pytest.raises(ValueError, match=rf"{name}=.* at least 1 s; fix the env of the istiod Deployment"):
        cert_ttl_from_env(env)
