"""AMBIENT-L7: a policy's `request.headers[NAME]` names a header case-insensitively at the waypoint.

HTTP header names are case-insensitive (RFC 9110 section 5.1; HTTP/2 and Envoy carry them in lower
case), so a policy that writes `X-Team` means the header a client sends as `x-team` or `X-TEAM`. A
waypoint that compares the names as written misses them all: its ALLOW admits nobody and, worse,
its DENY stops nobody. The values stay exact. The policies are conformance/tests/l7/
match-header-names.yaml, attached to the shared L7 world's waypoint.
"""
from __future__ import annotations

import pytest

from conformance.tests.l7world import Row

OK, DENY = 200, 403
ALLOW_PATH, DENY_PATH = "/anything/header-case/allow", "/anything/header-case/deny"

ROWS = [
    Row("a", ALLOW_PATH, OK, "ALLOW request.headers[X-Team] blue: sent as x-team", headers=(("x-team", "blue"),)),
    Row("a", ALLOW_PATH, OK, "ALLOW request.headers[X-Team] blue: sent as X-TEAM", headers=(("X-TEAM", "blue"),)),
    Row("a", ALLOW_PATH, DENY, "the value stays exact: Blue is not blue", headers=(("x-team", "Blue"),)),
    Row("a", ALLOW_PATH, DENY, "ALLOW request.headers[X-Team]: absent header"),
    Row("a", DENY_PATH, DENY, "DENY request.headers[X-Conformance-Deny] yes: sent as x-conformance-deny",
        headers=(("x-conformance-deny", "yes"),)),
    Row("a", DENY_PATH, DENY, "DENY request.headers[X-Conformance-Deny] yes: sent as X-CONFORMANCE-DENY",
        headers=(("X-CONFORMANCE-DENY", "yes"),)),
    Row("a", DENY_PATH, OK, "DENY request.headers[X-Conformance-Deny]: absent header"),
    Row("a", DENY_PATH, OK, "DENY request.headers[X-Conformance-Deny]: another value",
        headers=(("x-conformance-deny", "no"),)),
]


@pytest.mark.features("L7AuthorizationHeaderNamesCaseInsensitive")
def test_policy_header_names_match_whatever_case_the_client_sends(l7):
    """At the waypoint, `when: request.headers[X-Team]` MUST match the header the client sends as
    `x-team` or `X-TEAM` (an ALLOW admits it, a DENY refuses it 403), and MUST still compare its
    value exactly; without the header, the ALLOW MUST deny and the DENY MUST admit."""
    l7.converge_unrestricted(ROWS, "before the header-name policies")
    with l7.applied("match-header-names"):
        l7.converge(ROWS, "header names in another case at the waypoint")
