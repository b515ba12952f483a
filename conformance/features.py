"""The named features a mesh implementation can support, and the profiles that group them.

Modelled on the Gateway API conformance suite: a test declares the features it exercises with
`@pytest.mark.features(...)`; a target declares the features it supports; a profile is certified
when its core features all pass (extended ones are reported per feature).
"""
from __future__ import annotations

from dataclasses import dataclass

CORE, EXTENDED = "core", "extended"


@dataclass(frozen=True)
class Profile:
    name: str
    description: str


@dataclass(frozen=True)
class Feature:
    name: str
    description: str
    level: str            # CORE or EXTENDED
    profiles: tuple[str, ...]


PROFILES: dict[str, Profile] = {p.name: p for p in [
    Profile("AMBIENT-L4", "Sidecar-less L4: namespace enrollment, node-proxy mTLS identity, L4 "
                          "AuthorizationPolicy and PeerAuthentication enforced by ztunnel."),
    Profile("AMBIENT-L7", "Waypoint proxies: provisioning from a Gateway, L7 AuthorizationPolicy, "
                          "RequestAuthentication (JWT). Not yet populated."),
    Profile("SIDECAR-INTEROP", "Sidecar and ambient workloads calling each other over HBONE. "
                               "Not yet populated."),
    Profile("SEED-WALKTHROUGH", "The seed article's walkthrough, step by step, with its own manifests."),
]}

_L4 = ("AMBIENT-L4",)

FEATURES: dict[str, Feature] = {f.name: f for f in [
    Feature("AmbientEnrollmentByNamespaceLabel",
            "Labelling a namespace `istio.io/dataplane-mode=ambient` captures its running pods without "
            "restarting them or adding containers; removing the label releases them.", CORE, _L4),
    Feature("MeshMutualTLSIdentity",
            "Traffic between ambient pods on different nodes carries the client workload's SPIFFE "
            "identity, so an L4 policy can tell two clients apart.", CORE, _L4),
    Feature("MeshMutualTLSOnTheWire",
            "Between nodes, captured traffic is only TLS to port 15008; no request plaintext is visible "
            "on the wire. Needs a target that can capture packets.", EXTENDED, _L4),
    Feature("L4AuthorizationPrincipals",
            "AuthorizationPolicy `source.principals` / `notPrincipals` enforced at ztunnel.", CORE, _L4),
    Feature("L4AuthorizationNamespaces",
            "AuthorizationPolicy `source.namespaces` / `notNamespaces` enforced at ztunnel.", CORE, _L4),
    Feature("L4AuthorizationIPBlocks",
            "AuthorizationPolicy `source.ipBlocks` / `notIpBlocks` enforced at ztunnel.", CORE, _L4),
    Feature("L4AuthorizationPorts",
            "AuthorizationPolicy `to.operation.ports` / `notPorts` enforced at ztunnel.", CORE, _L4),
    Feature("L4AuthorizationDenyOverAllow",
            "A matching DENY policy wins over a matching ALLOW policy.", CORE, _L4),
    Feature("L4AuthorizationAllowNothing",
            "An AuthorizationPolicy with an empty spec (`spec: {}`) denies every connection.", CORE, _L4),
    Feature("L4AuthorizationL7FieldsAtZtunnel",
            "At ztunnel, an ALLOW rule holding L7 fields is dropped (so it denies) and a DENY rule holding "
            "L7 fields is reduced to its L4 part.", CORE, _L4),
    Feature("PeerAuthenticationStrict",
            "PeerAuthentication STRICT makes ztunnel drop plaintext from uncaptured clients.", CORE, _L4),
    Feature("PeerAuthenticationPermissive",
            "PeerAuthentication PERMISSIVE (and no policy) lets plaintext from uncaptured clients in.",
            CORE, _L4),
    Feature("HeadlessService",
            "A headless service's pods are reached by pod IP with mesh identity and policy.", CORE, _L4),
    Feature("ServiceLoadBalancing",
            "Connections to a service's VIP are spread over all its ready endpoints.", CORE, _L4),
    Feature("PolicyUpdateWithoutRestart",
            "A new or changed AuthorizationPolicy applies to running pods without restarting them.",
            CORE, _L4),
    Feature("LiveConnectionRevocation",
            "A policy change closes established connections that the new policy denies.", CORE, _L4),
    Feature("UncapturedInterop",
            "Ambient pods and pods outside the mesh call each other; plaintext has no identity.", CORE, _L4),
    Feature("SeedWalkthroughL4",
            "The seed article's Steps 1-2 and its L4 policy step, with fixtures/seed/ manifests as written. "
            "The article lets ztunnel drop the rogue client's connection silently, so here alone a "
            "timeout counts as the L4 deny, and only while the allowed client gets 200 in the same window.",
            CORE, ("AMBIENT-L4", "SEED-WALKTHROUGH")),
    Feature("SeedWalkthroughWaypoint",
            "The seed article's Step 3: its waypoint Gateway (fixtures/seed/waypoint.yaml, the Istio 1.18 "
            "form) is provisioned and traffic to httpbin-ambient passes an L7 proxy without an app restart.",
            CORE, ("SEED-WALKTHROUGH",)),
    Feature("SeedWalkthroughL7",
            "The seed article's L7 step at its waypoint: `jwt-policy.yaml` + `l7-authz-policy.yaml` give "
            "403 / 403 / 200, an invalid token 401, and deleting them restores 200.",
            CORE, ("SEED-WALKTHROUGH",)),
    # -- identity, trust and policy scope, tried as an attacker would (issue 10) ---------------
    Feature("HBONERejectsUntrustedPeers",
            "A captured pod's HBONE port 15008 refuses, at TLS, a client with no certificate or with one "
            "from a CA the mesh does not trust, and closes plaintext sent to it, while presenting the "
            "destination's mesh identity.", CORE, _L4),
    Feature("HBONERejectsForeignTrustDomain",
            "HBONE refuses a client certificate chained to the mesh's own CA that names another trust "
            "domain, and one that has expired. Needs a target that can have the mesh CA sign a certificate "
            "of the suite's choosing.", EXTENDED, _L4),
    Feature("HBONEConnectAuthorityChecked",
            "A mesh-authenticated CONNECT whose authority names another pod is refused 400, one naming the "
            "pod's own 15008 is refused, one naming a port with no listener is refused 503. Needs a "
            "mesh-signed certificate of the suite's choosing.", EXTENDED, _L4),
    Feature("HBONEForwardedHeaderIgnored",
            "The source address of an HBONE tunnel is its TCP peer: a `forwarded` header naming another "
            "address changes no ipBlocks decision. Needs a mesh-signed certificate of the suite's choosing.",
            EXTENDED, _L4),
    Feature("HBONEClientVerifiesServerIdentity",
            "A client's ztunnel refuses an HBONE server whose certificate (even one the mesh CA signed) "
            "names another identity than the destination's. Needs a target that can place such a server.",
            EXTENDED, _L4),
    Feature("L4SourceNotFromHeaders",
            "`X-Forwarded-For` / `Forwarded` headers sent by a captured client change no ipBlocks decision.",
            CORE, _L4),
    Feature("L4AuthorizationExactMatch",
            "A principal that is a prefix or suffix of the client's identity, or a namespace whose name is a "
            "prefix of the client's, does not match it.", CORE, _L4),
    Feature("L4PolicyScope",
            "A policy without a selector applies to its own namespace only, and a selector that matches no "
            "pod changes nothing.", CORE, _L4),
    Feature("L4PolicyRootNamespace",
            "A policy in the root namespace (`istio-system`) without a selector applies to the whole mesh.",
            CORE, _L4),
    Feature("L4PolicyTargetRefsIgnored",
            "AuthorizationPolicies that use `targetRefs` are for waypoints and are not enforced by ztunnel.",
            CORE, _L4),
    Feature("PeerAuthenticationPrecedence",
            "PeerAuthentication precedence: a workload policy beats its namespace's, which beats the mesh's "
            "(root namespace), both ways.", CORE, _L4),
    Feature("PeerAuthenticationPortLevel",
            "PeerAuthentication `portLevelMtls` sets STRICT on one port and PERMISSIVE on another, both ways.",
            CORE, _L4),
    Feature("HeadlessServiceExactPod",
            "A call to a headless service's pod IP reaches exactly that pod, with its identity and policy.",
            CORE, _L4),
    Feature("ServiceReachesEveryEndpoint",
            "Calls to a service VIP reach every ready endpoint (the server names itself).", CORE, _L4),
    Feature("ControlPlaneOutage",
            "With the control plane scaled to zero, traffic and the last policy keep being enforced, and a "
            "policy applied during the outage takes effect once it is back. Needs a target that can stop "
            "the control plane.", EXTENDED, _L4),
    Feature("CARefusesForeignIdentity",
            "The mesh CA signs a certificate request made with a node proxy's own credentials only for "
            "the identity of a workload scheduled on that proxy's node: another node's workload, an "
            "identity no pod has, and another trust domain are refused, while the proxy's own node's "
            "workload is signed. Needs a target that can ask the mesh CA as a node proxy.", EXTENDED, _L4),
    Feature("WorkloadCertificateRenewal",
            "With a short workload certificate TTL, the certificate a captured pod's 15008 serves is "
            "replaced before the old one expires, again and again, and calls between captured pods never "
            "fail across the renewals. Needs a target that can set the mesh's workload certificate TTL.",
            EXTENDED, _L4),
    # -- the node proxy's lifecycle (ztunnel's drain, Istio's TestZtunnelRestart) -------------
    Feature("ZtunnelGracefulRestart",
            "A node proxy pod deleted gracefully (a rollout or an upgrade) cuts no established connection: a "
            "stream open across the restart completes intact within ztunnel's smallest drain deadline (5 s), "
            "every new connection made during the restart succeeds, and the replacement is Ready; a crash "
            "(grace period 0) does cut such a stream.", CORE, _L4),
    # -- protocols and bad input at the waypoint (issue 9, "Protocols and failure") -----------
    Feature("WaypointHTTP2PriorKnowledge",
            "HTTP/2 with prior knowledge (h2c, as gRPC clients speak it; `curl --http2-prior-knowledge`) to a "
            "waypoint-bound service is served through the waypoint and gets the same L7 AuthorizationPolicy "
            "as HTTP/1.1 (a denied path is 403 `RBAC: access denied` over HTTP/2 too).", CORE, ("AMBIENT-L7",)),
    Feature("WaypointWebSocketUpgrade",
            "A WebSocket upgrade to a waypoint-bound service passes through the waypoint: 101, then frames "
            "both ways (the server's first, then echoes of text and a 100 KiB binary message); the upgrade "
            "request itself gets L7 policy (a denied path is 403, no upgrade).", CORE, ("AMBIENT-L7",)),
    Feature("WaypointTCPPassthrough",
            "Traffic that is not HTTP on a port of a waypoint-bound service declared TCP (by `appProtocol` or "
            "a `tcp-` name prefix, as Istio decides) is proxied byte for byte with L4 policy only: an L7-only "
            "DENY rule that is live on the HTTP port does not break it, an L4 DENY of the client still denies "
            "it.", CORE, ("AMBIENT-L7",)),
    Feature("WaypointUndeclaredPortSniffing",
            "On a port whose name and `appProtocol` declare no protocol, the waypoint tells HTTP from other "
            "TCP by the first bytes (Istio's protocol sniffing): binary is echoed as TCP, an HTTP request "
            "gets L7 policy.", EXTENDED, ("AMBIENT-L7",)),
    Feature("WaypointRejectsMalformedHTTP",
            "At the waypoint a request header block over 60 KiB (Envoy's default bound) is 431 while one of "
            "35 KiB is served, and a request with both Content-Length and Transfer-Encoding is 400 and never "
            "reaches the app, while a good client keeps getting 200 during the attack.", CORE, ("AMBIENT-L7",)),
    Feature("WaypointSlowHeadersCutOff",
            "A client that sends its request headers slower than the waypoint's bound (a slowloris: one byte "
            "every half second) is cut off within 15 s, twenty of them at once, while a good client keeps "
            "getting 200. Envoy sets no request-headers timeout by default, so Istio needs one configured.",
            EXTENDED, ("AMBIENT-L7",)),
]}


class UnknownFeature(ValueError):
    pass


def check_names(names, where: str) -> list[str]:
    """The names, or UnknownFeature naming `where` and the nearest valid names."""
    names = [n.strip() for n in names if n and n.strip()]
    unknown = [n for n in names if n not in FEATURES]
    if unknown:
        raise UnknownFeature(f"{where}: unknown feature(s) {', '.join(unknown)}; known features are "
                             f"listed in docs/CONFORMANCE.md (conformance/features.py)")
    return names


def level_of(feature_names) -> str:
    """A test is core when every feature it exercises is core, else extended."""
    return CORE if all(FEATURES[n].level == CORE for n in feature_names) else EXTENDED


def profiles_of(feature_names) -> list[str]:
    return sorted({p for n in feature_names for p in FEATURES[n].profiles})


def features_in(profile: str) -> list[Feature]:
    return [f for f in FEATURES.values() if profile in f.profiles]
