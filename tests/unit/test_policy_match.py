"""Istio string patterns, SPIFFE identities, IP blocks and ports."""

import ipaddress

import pytest

from reference_impl.policy import PolicyError
from reference_impl.policy.match import (
    StringMatch, ip_in, parse_cidr, parse_identity, parse_port, strip_spiffe)


@pytest.mark.parametrize("pattern, value, matches", [
    ("*", "anything", True),
    ("*", "", False),
    ("*", None, False),
    ("*.json", "a/b.json", True),
    ("*.json", "a/b.jsonx", False),
    ("/api/*", "/api/", True),
    ("/api/*", "/ap", False),
    ("exact", "exact", True),
    ("exact", "exact2", False),
    ("exact", None, False),
], ids=["presence", "presence-empty", "presence-missing", "suffix", "suffix-miss", "prefix",
        "prefix-miss", "exact", "exact-miss", "exact-missing"])
def test_string_patterns(pattern, value, matches):
    assert StringMatch.parse(pattern).matches(value) is matches


@pytest.mark.parametrize("pattern, kind", [("*", "presence"), ("*x", "suffix"), ("x*", "prefix"),
                                           ("x", "exact")], ids=["presence", "suffix", "prefix", "exact"])
def test_wire_form_round_trip(pattern, kind):
    m = StringMatch.parse(pattern)
    assert m.kind == kind and StringMatch.from_dict(m.to_dict()) == m and str(m) == pattern


def test_ignore_case():
    assert StringMatch.parse("Example.COM").matches("example.com", ignore_case=True)
    assert not StringMatch.parse("Example.COM").matches("example.com")


@pytest.mark.parametrize("principal, bare", [
    ("spiffe://cluster.local/ns/a/sa/b", "cluster.local/ns/a/sa/b"),
    ("cluster.local/ns/a/sa/b", "cluster.local/ns/a/sa/b"),
    (None, None), ("", None)], ids=["with-scheme", "without-scheme", "none", "empty"])
def test_strip_spiffe(principal, bare):
    assert strip_spiffe(principal) == bare


def test_parse_identity():
    ident = parse_identity("spiffe://td/ns/apps/sa/sleep")
    assert (ident.trust_domain, ident.namespace, ident.service_account) == ("td", "apps", "sleep")
    assert parse_identity("td/ns/apps/sa/sleep") == ident
    assert parse_identity("spiffe://td/apps/sleep") is None
    assert parse_identity(None) is None


def test_cidr_and_ports():
    net = parse_cidr("10.1.2.3/8", "f")   # host bits ignored, as Istio's netip parsing does
    assert ip_in(net, ipaddress.ip_address("10.200.0.1"))
    assert not ip_in(net, ipaddress.ip_address("::1"))
    assert not ip_in(net, None)
    assert parse_cidr("fd00::1", "f").prefixlen == 128
    assert parse_port("8000", "f") == 8000 and parse_port(8000, "f") == 8000
    for bad in ("x", -1, 65536, True, None):
        with pytest.raises(PolicyError):
            parse_port(bad, "f")
