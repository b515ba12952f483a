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
                          "RequestAuthentication (JWT), each feature tested both ways with exact status "
                          "codes through a current-Istio waypoint (class istio-waypoint)."),
    Profile("SIDECAR-INTEROP", "Sidecar and ambient workloads calling each other over HBONE: "
                               "injection, each data path both ways, policy at the sidecar."),
    Profile("SEED-WALKTHROUGH", "The seed article's walkthrough, step by step, with its own manifests."),
    # -- HTTP routing at the waypoint (issue 9, GAMMA) --
    Profile("MESH-HTTP", "The Gateway API mesh profile (GAMMA) at the waypoint: HTTPRoutes whose parentRef is a "
                         "Service (matching, filters, weights, redirects, rewrites, timeouts, retries), and Istio "
                         "VirtualService fault injection."),
]}

_L4 = ("AMBIENT-L4",)
_MESH = ("MESH-HTTP",)
_L7 = ("AMBIENT-L7",)
_SIDECAR = ("SIDECAR-INTEROP",)

FEATURES: dict[str, Feature] = {f.name: f for f in [
    Feature("AmbientEnrollmentByNamespaceLabel",
            "Labelling a namespace `istio.io/dataplane-mode=ambient` captures its running pods without "
            "restarting them or adding containers; removing the label releases them.", CORE, _L4),
    Feature("AmbientEnrollmentByPodLabel",
            "A pod's own `istio.io/dataplane-mode` label beats its namespace's: `none` keeps a pod of an ambient "
            "namespace out of the mesh, `ambient` brings a pod of another namespace in, and relabelling a running "
            "pod moves it without a restart.", CORE, _L4),
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
    Feature("L4AuthorizationConditions",
            "AuthorizationPolicy `when` conditions on `source.principal`, `source.namespace`, `source.ip` and "
            "`destination.port` (`values` and `notValues`) enforced at ztunnel.", CORE, _L4),
    Feature("L4AuthorizationServiceAccounts",
            "AuthorizationPolicy `source.serviceAccounts` / `notServiceAccounts` (Istio 1.25 and later) enforced "
            "at ztunnel: `namespace/name`, or a bare name in the policy's namespace, matched exactly (a dot "
            "is a dot: `build.bot` does not admit `build-bot`, CVE-2026-39350).", EXTENDED, _L4),
    Feature("L4AuthorizationDenyOverAllow",
            "A matching DENY policy wins over a matching ALLOW policy.", CORE, _L4),
    Feature("L4AuthorizationRuleParts",
            "Within a rule `from` and `to` must both match, the entries of a `from` are alternatives, and so "
            "are the rules of a policy (ztunnel).", CORE, _L4),
    Feature("L4AuthorizationAnyAllowPolicy",
            "With several ALLOW policies on a workload, a connection any one of them matches is admitted.",
            CORE, _L4),
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
    Feature("PolicySelectorFollowsPodLabels",
            "A policy's workload selector follows a running pod's labels: labelling the pod brings the policy "
            "into force, removing the label lifts it, without a restart.", CORE, _L4),
    Feature("LiveConnectionRevocation",
            "A policy change closes established connections that the new policy denies.", CORE, _L4),
    Feature("UncapturedInterop",
            "Ambient pods and pods outside the mesh call each other; plaintext has no identity.", CORE, _L4),
    Feature("SeedWalkthroughL4",
            "The seed article's Steps 1-2 and its L4 policy step, with fixtures/seed/ manifests as written. "
            "The article lets ztunnel drop the rogue client's connection silently, so here alone a "
            "timeout counts as the L4 deny, and only while the allowed client gets 200 in the same window.",
            CORE, ("AMBIENT-L4", "SEED-WALKTHROUGH")),
    # -- the seed's Step 3 and L7 step, as written and as corrected (issue 17) --
    Feature("SeedWalkthroughWaypoint",
            "The seed article's Step 3, in two variants: as written (fixtures/seed/waypoint.yaml, class "
            "`istio`, Istio's ingress class: on a mesh whose waypoint class is `istio-waypoint` the outcome is "
            "the article's error, with the reason) and as corrected (class `istio-waypoint`, the Service "
            "labelled `istio.io/use-waypoint`): the waypoint is provisioned and traffic to httpbin-ambient "
            "passes an L7 proxy without an app restart.",
            CORE, ("SEED-WALKTHROUGH",)),
    Feature("SeedWalkthroughL7",
            "The seed article's L7 step at its waypoint, as written (`selector` policies) and as corrected "
            "(`targetRefs` to the Service): `jwt-policy.yaml` + `l7-authz-policy.yaml` give 403 / 403 / 200, "
            "an invalid token 401, and deleting them restores 200.",
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
    Feature("ServiceNamedTargetPort",
            "A Service port whose `targetPort` is a name reaches each pod on the container port that pod gives "
            "the name (two pods, two numbers), and no pod that has no port of that name.", CORE, _L4),
    Feature("ServiceExcludesUnreadyEndpoints",
            "A pod a Service selects that runs but is not Ready gets no connections made to the service's "
            "VIP, while its ready pods answer them all.", CORE, _L4),
    Feature("ControlPlaneOutage",
            "With the control plane scaled to zero, traffic and the last policy keep being enforced, and a "
            "policy applied during the outage takes effect once it is back. Needs a target that can stop "
            "the control plane.", EXTENDED, _L4),
    Feature("CARefusesForeignIdentity",
            "The mesh CA signs a certificate request made with a node proxy's own credentials only for "
            "the identity of a workload scheduled on that proxy's node: another node's workload, an "
            "identity no pod has, the same service account name in another namespace, and another trust "
            "domain are refused, while the proxy's own node's workload is signed. Needs a target that can "
            "ask the mesh CA as a node proxy.", EXTENDED, _L4),
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
    # -- what the mutation catalog's survivors showed missing: long TCP streams (flow control, half-close,
    # back-pressure) and header names at the waypoint (mutation work) --
    Feature("TCPStreamsBeyondFlowControlWindows",
            "A captured pod's TCP stream carries far more than HTTP/2's flow-control windows hold in flight "
            "(128 MiB each way through both node proxies, with a reader that starts late) intact and in "
            "order, compared by SHA-256 at both ends.", CORE, _L4),
    Feature("TCPHalfClose",
            "A client that shuts down its write side (a FIN) still gets the whole answer the server sends "
            "after seeing its EOF, then the server's close; from a captured and from an uncaptured client.",
            CORE, _L4),
    Feature("TCPBackPressure",
            "A reader that stops reading holds its sender back: writes to it block after a bounded amount "
            "(at most 96 MiB on the way, both directions of an echo), not after whatever the sender sends; "
            "once it reads again every byte arrives intact.", CORE, _L4),
    Feature("L7AuthorizationHeaderNamesCaseInsensitive",
            "At the waypoint, `request.headers[X-Team]` names the header whatever case the client sends it in "
            "(`x-team`, `X-TEAM`): an ALLOW admits it and a DENY refuses it; the value stays exact.",
            CORE, _L7),
    # -- HTTP routing at the waypoint: the Gateway API mesh profile (issue 9, GAMMA) -----------
    Feature("MeshBasic",
            "A client's call to a Service bound to a waypoint is answered by one of its endpoints, through the "
            "waypoint (Gateway API MeshBasic).", CORE, _MESH),
    Feature("MeshHTTPRouteSimpleSameNamespace",
            "An HTTPRoute whose parentRef is a Service sends that Service's traffic to the route's backend "
            "only; deleting it restores the Service's own endpoints.", CORE, _MESH),
    Feature("MeshHTTPRouteMatching",
            "HTTPRoute path (Exact, PathPrefix by path segment) and header matches (names case-insensitive, "
            "values exact; the headers of one match AND'ed, a rule's matches OR'ed), with Gateway API's "
            "precedence between rules.", CORE, _MESH),
    Feature("MeshHTTPRouteMethodMatching",
            "HTTPRoute `method` matches; a method match outranks header matches.", EXTENDED, _MESH),
    Feature("MeshHTTPRouteQueryParamMatching",
            "HTTPRoute `queryParams` matches (names and values exact); header matches outrank them.",
            EXTENDED, _MESH),
    Feature("MeshHTTPRoutePrecedenceAcrossRoutes",
            "Of two HTTPRoutes of one Service whose matches tie, the older (creationTimestamp) takes the "
            "request, whatever their names.", CORE, _MESH),
    Feature("MeshHTTPRouteConsumerRouteScope",
            "An HTTPRoute in another namespace than its parent Service (a consumer route) leaves the calls "
            "of clients in other namespaces alone; the same route in the Service's namespace changes them.",
            CORE, _MESH),
    Feature("MeshHTTPRouteRegularExpressionMatching",
            "HTTPRoute RegularExpression path, header and query matches match the whole path or value "
            "(RE2 full match, as Istio's Envoy), not a part of it.", EXTENDED, _MESH),
    Feature("MeshHTTPRouteRequestHeaderModifier",
            "The RequestHeaderModifier filter sets, adds and removes request headers (names case-insensitive).",
            CORE, _MESH),
    Feature("MeshHTTPRouteResponseHeaderModifier",
            "The ResponseHeaderModifier filter sets, adds and removes response headers.", EXTENDED, _MESH),
    Feature("MeshHTTPRouteBackendRequestHeaderModifier",
            "A RequestHeaderModifier on a backendRef applies to the requests sent to that backend only.",
            EXTENDED, _MESH),
    Feature("MeshHTTPRouteBackendResponseHeaderModifier",
            "A ResponseHeaderModifier on a backendRef applies to the answers of that backend only.",
            EXTENDED, _MESH),
    Feature("MeshHTTPRouteWeight",
            "Weighted backendRefs split requests by weight (500 requests within 5 points of 70/30), a "
            "backendRef of weight 0 gets none and a rule whose every backendRef weighs 0 answers 500, and "
            "rules split a Service's traffic by path (MeshTrafficSplit).", CORE, _MESH),
    Feature("MeshHTTPRouteRedirectHostAndStatus",
            "RequestRedirect answers locally with a Location naming the new host, 302 by default, or the "
            "status given (301, 303, 307, 308).", CORE, _MESH),
    Feature("MeshHTTPRouteRedirectPath",
            "RequestRedirect ReplaceFullPath and ReplacePrefixMatch (by path segment) rewrite the Location's "
            "path, keeping the query.", EXTENDED, _MESH),
    Feature("MeshHTTPRouteRedirectPort", "RequestRedirect `port` sets the Location's port.", EXTENDED, _MESH),
    Feature("MeshHTTPRouteSchemeRedirect",
            "RequestRedirect `scheme` sets the Location's scheme, and its well-known port is left out.",
            EXTENDED, _MESH),
    Feature("MeshHTTPRouteRewritePath",
            "URLRewrite ReplaceFullPath and ReplacePrefixMatch change the path the backend receives "
            "(a PathPrefix's trailing '/' ignored).",
            EXTENDED, _MESH),
    Feature("MeshHTTPRouteHostRewrite",
            "URLRewrite `hostname` replaces the Host the backend receives.", EXTENDED, _MESH),
    Feature("MeshHTTPRouteBackendNotFound",
            "Requests a rule would send to a backendRef naming a Service that does not exist get HTTP 500; "
            "the route's other rules keep serving.", CORE, _MESH),
    Feature("MeshPorts",
            "An HTTPRoute parentRef with a port applies to calls to that Service port only; one without a port "
            "applies to every port.", EXTENDED, _MESH),
    Feature("MeshFrontend",
            "A route bound to a Service applies to calls addressed to the Service, not to calls addressed to "
            "one of its pods by IP.", EXTENDED, _MESH),
    Feature("MeshClusterIPMatching",
            "A route bound to a Service applies to calls to that Service's address whatever Host they carry, "
            "not to calls to another Service that name it in Host (Gateway API MeshFrontendHostname; Istio "
            "skips that test, istio/istio#44702).", EXTENDED, _MESH),
    Feature("MeshHTTPRouteRequestTimeout",
            "`timeouts.request` answers 504 once the bound passes without a response; `0s` disables it.",
            EXTENDED, _MESH),
    Feature("MeshHTTPRouteBackendRequestTimeout",
            "`timeouts.backendRequest` answers 504 once a request to the backend outlasts it, in a rule "
            "without `retry` too.", EXTENDED, _MESH),
    Feature("MeshHTTPRouteRetry",
            "`retry` retries the listed status codes up to `attempts` times (with backoff) and relays any "
            "other status, 503 included, after one try.", EXTENDED, _MESH),
    Feature("MeshFaultInjection",
            "An Istio VirtualService `fault.delay` delays and `fault.abort` aborts the requests its match "
            "selects, at the waypoint; other requests are untouched.", EXTENDED, _MESH),
    # -- L7 authorization and RequestAuthentication at the waypoint (issue 9) -----------------
    Feature("L7AuthorizationAllowNothing",
            "An ALLOW policy without rules attached to a waypoint (`targetRefs`) answers every request "
            "through it with 403 `RBAC: access denied`.", CORE, _L7),
    Feature("L7AuthorizationPaths",
            "At the waypoint, `paths` match exactly, as a prefix `x*` and a suffix `*x`, each against its "
            "near misses (an exact `/ip` admits neither `/ip/`, `/ipx` nor `/IP`; a prefix not its "
            "parent); a request no ALLOW rule admits gets 403.", CORE, _L7),
    Feature("L7AuthorizationPathTemplates",
            "At the waypoint, Istio's path templates: `{*}` matches one path segment, `{**}` any rest "
            "(Istio 1.22 and later).", EXTENDED, _L7),
    Feature("L7AuthorizationDenyOverAllow",
            "At the waypoint, a matching DENY policy wins over a matching ALLOW policy.", CORE, _L7),
    Feature("L7AuthorizationRequestFields",
            "At the waypoint, `methods`, `hosts` (case-insensitive, the Host header's port included), "
            "`ports` and `when: request.headers[...]` admit and deny exactly as written.", CORE, _L7),
    Feature("L7AuthorizationNotForms",
            "At the waypoint, `notPaths`, `notMethods`, `notPorts`, `notHosts`, `notPrincipals`, "
            "`notNamespaces`, `notRequestPrincipals` and `notValues` exclude exactly what they name.",
            CORE, _L7),
    Feature("L7AuthorizationSource",
            "At the waypoint, `source.principals` and `namespaces` match the original client's identity, "
            "never the waypoint's own or a node proxy's.", CORE, _L7),
    Feature("L7AuthorizationConditions",
            "At the waypoint, `when` conditions on `source.principal` and `source.namespace` match the original "
            "client (values and notValues) and `destination.port` the port the client called.", CORE, _L7),
    Feature("L7AuthorizationRuleParts",
            "At the waypoint the entries of a rule's `from` (or `to`) are alternatives, while `from`, `to` and "
            "every `when` condition must all hold.", CORE, _L7),
    Feature("L7AuthorizationAnyAllowPolicy",
            "At the waypoint, with several ALLOW policies, a request any one of them matches is served; one "
            "none matches is 403.", CORE, _L7),
    Feature("L7AuthorizationServiceAccounts",
            "At the waypoint, `source.serviceAccounts` / `notServiceAccounts` (Istio 1.25 and later) match the "
            "original client's service account, `namespace/name` or a bare name in the policy's namespace.",
            EXTENDED, _L7),
    Feature("L7AuthorizationSourceAddress",
            "At the waypoint, `ipBlocks`, `notIpBlocks` and `remoteIpBlocks` match the original client's pod "
            "address (a /32 tells two clients apart, a CIDR holds both), and so do `when` conditions on "
            "`source.ip` and `remote.ip`; an `X-Forwarded-For` header the client writes changes none of them "
            "(no trusted proxy hops, Istio's default).", EXTENDED, _L7),
    Feature("L7WaypointIdentityAtDestination",
            "Behind a waypoint the destination's node proxy sees the waypoint's identity: a selector "
            "policy allowing only the client refuses waypoint traffic, one allowing the waypoint admits "
            "it.", CORE, _L7),
    Feature("L7AuthorizationUnsupportedActions",
            "AUDIT changes no decision, and CUSTOM naming an extension provider the mesh does not define "
            "denies (403): neither is ever treated as an ALLOW.", CORE, _L7),
    Feature("L7RequestAuthentication",
            "RequestAuthentication at the waypoint, Istio's TestL7JWT: no token 403 (the policy), a valid "
            "token 200, another `sub` 403, expired 401, an issuer no RequestAuthentication names 401; a "
            "401 carries `www-authenticate: Bearer realm=..., error=\"invalid_token\"`.", CORE, _L7),
    Feature("L7AuthorizationRequestPrincipals",
            "At the waypoint, `requestPrincipals` (`iss/sub`, with `*` forms) and `notRequestPrincipals` "
            "match the verified JWT.", CORE, _L7),
    Feature("L7AuthorizationClaims",
            "At the waypoint, `when: request.auth.claims[...]` matches nested claims and any element of "
            "a list claim, and `request.auth.principal`, `request.auth.audiences` and "
            "`request.auth.presenter` match the verified token's `iss/sub`, any `aud` and `azp`.", CORE, _L7),
    Feature("L7JWTForgedTokens",
            "Every forged or malformed JWT gets 401: alg none, unknown kid, another key's signature, HS256 "
            "keyed with the RSA public key, tampered header or payload, truncated or empty signature, "
            "garbage, wrong JSON types (alg, aud, exp, nbf); a request carrying several tokens (header and "
            "`?access_token=`, two Authorization headers) passes only if every one verifies.", CORE, _L7),
    Feature("L7JWTAlgorithms",
            "JWTs signed with RS256, RS384, RS512, PS256, ES256, ES384 and EdDSA verify; `exp` and `nbf` "
            "are judged with 60 s of clock skew.", CORE, _L7),
    Feature("L7JWTTokenLocations",
            "`fromHeaders` (name and prefix) and `fromParams` move where the token is read, and the "
            "default places are then not read; `audiences` admit only tokens for them.", CORE, _L7),
    Feature("L7JWTForwarding",
            "By default the token header is removed before the app; `forwardOriginalToken` keeps it; "
            "`outputPayloadToHeader` and `outputClaimToHeaders` add what they name.", CORE, _L7),
    Feature("L7JWTJwksUri",
            "A `jwksUri` is fetched by the control plane and its keys verify tokens; a URI that fails "
            "leaves that issuer's tokens rejected with 401, never accepted.", CORE, _L7),
    # -- waypoints: provisioning, binding, policy attachment, availability (issue 9) -----------
    Feature("WaypointProvisioning",
            "A Gateway of class `istio-waypoint` with the `mesh`/15008/HBONE listener gets a Deployment and a "
            "Service named after it and Ready proxy pods without any app pod restarting; its status carries "
            "Gateway API's `Accepted` and `Programmed` conditions (True, with reason, observedGeneration and "
            "lastTransitionTime); a Gateway of another class gets nothing.", CORE, _L7),
    Feature("WaypointBindingLabels",
            "`istio.io/use-waypoint` on a Service or its Namespace moves its traffic to the waypoint (L4 before, "
            "L7 after, seen by the `x-request-id` the waypoint adds) and removing it moves it back, no pod "
            "restarted; the Service's own label wins over its namespace's and `none` opts out; a bound Service "
            "has `istio.io/WaypointBound` True (reason WaypointAccepted).", CORE, _L7),
    Feature("WaypointBogusUseWaypoint",
            "`istio.io/use-waypoint` naming a Gateway that does not exist (yet) leaves the traffic on L4, never "
            "blackholed, and the Service's `istio.io/WaypointBound` is False with reason WaypointIsNotReady "
            "naming it (Istio's TestBogusUseWaypoint).", CORE, _L7),
    Feature("WaypointForWorkload",
            "A waypoint labelled `istio.io/waypoint-for: workload` serves the pods labelled for it (traffic to "
            "the pod's IP passes it) and refuses a Service (WaypointBound False, UnsupportedTrafficType; its "
            "traffic stays L4); one labelled `all` serves both the pods and the Services labelled for it.", EXTENDED, _L7),
    Feature("WaypointCrossNamespace",
            "`istio.io/use-waypoint-namespace` binds a Service to a waypoint in another namespace whose mesh "
            "listener allows it (`allowedRoutes.namespaces.from: All`); without that label the name is looked "
            "up in the Service's own namespace. A mesh listener without allowedRoutes admits only its own "
            "namespace: a Service of another one stays on L4 with WaypointBound False (AttachmentDenied).",
            EXTENDED, _L7),
    Feature("WaypointPolicyTargetRefsGateway",
            "An AuthorizationPolicy attached with `targetRefs` to the waypoint Gateway is enforced by the "
            "waypoint: a request it does not allow gets HTTP 403 `RBAC: access denied`, one it allows 200.",
            CORE, _L7),
    Feature("WaypointSelectorPolicyAtZtunnel",
            "A `selector` AuthorizationPolicy is not enforced by the waypoint but by the destination's ztunnel, "
            "where an ALLOW rule holding L7 fields is dropped (fail closed): even the request the rule names is "
            "refused, never answered 403 by the waypoint nor let through.", CORE, _L7),
    Feature("WaypointPolicyGatewayClass",
            "An AuthorizationPolicy in the root namespace attached to GatewayClass `istio-waypoint` applies at "
            "every waypoint of the class, and not to traffic that passes no waypoint.", CORE, _L7),
    Feature("WaypointPolicyServiceAttached",
            "An AuthorizationPolicy attached with `targetRefs` to a Service applies to that Service only: "
            "another Service behind the same waypoint is unaffected (Istio's TestAuthorizationServiceAttached).",
            CORE, _L7),
    Feature("WaypointUnavailableNoFallback",
            "While a waypoint has no ready endpoints, the traffic bound to it fails (no fallback to L4) and "
            "L4-only traffic to other Services keeps flowing; it recovers when the waypoint is back.", CORE, _L7),
    Feature("WaypointReplicaLoss",
            "With two waypoint replicas, new requests keep succeeding through the waypoint when one replica is "
            "killed, before its replacement is Ready.", CORE, _L7),
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
    Feature("WaypointConnectionCloseEndsCleanly",
            "A client that asks for `Connection: close` gets the whole response through the waypoint and then a "
            "clean end of the connection (FIN), not a reset that throws away what it has not read yet: a 4 MiB "
            "body, and the 403 of a denied path.", CORE, ("AMBIENT-L7",)),
    # --- a slow reader behind Connection: close (issue 15 session, found with the Envoy waypoint) ---
    Feature("WaypointConnectionCloseWaitsForSlowReader",
            "A client that asks for `Connection: close` and starts reading only after 1.5 s still gets the "
            "whole 4 MiB response and then a FIN, though the response waited meanwhile for the client's "
            "HBONE flow-control window after the server's side of the tunnel had ended.", EXTENDED,
            ("AMBIENT-L7",)),
    Feature("WaypointHTTP1Framing",
            "Through the waypoint a chunked request body reaches the app whole, and a request pipelined behind "
            "it on the same HTTP/1.1 connection is answered after it, in order.", CORE, ("AMBIENT-L7",)),
    Feature("WaypointRemovesHopByHopHeaders",
            "The waypoint does not forward hop-by-hop headers (RFC 9110 7.6.1): those the client's `Connection` "
            "header names, `Keep-Alive`, `Proxy-Connection`; an end-to-end header beside them arrives.",
            CORE, ("AMBIENT-L7",)),
    Feature("WaypointStreamsResponses",
            "The waypoint passes a response on as it comes: a head and the first KiB of a body that the "
            "server sends at once reach the client while the server is still pausing 2.5 s before the rest, "
            "as server-sent events, long polls and gRPC server streams need (Envoy streams by default); a "
            "waypoint that holds a message until its end delivers both at once.", CORE, ("AMBIENT-L7",)),
    Feature("WaypointSlowHeadersCutOff",
            "A client that sends its request headers slower than the waypoint's bound (a slowloris: one byte "
            "every half second) is cut off within 15 s, twenty of them at once, while a good client keeps "
            "getting 200. Envoy sets no request-headers timeout by default, so Istio needs one configured.",
            EXTENDED, ("AMBIENT-L7",)),
    # -- sidecar mode and sidecar <-> ambient interop (issue 11) --------------------------------
    Feature("SidecarInjection",
            "A pod created in a namespace labelled `istio-injection=enabled` gets an `istio-proxy` container "
            "and becomes Ready with it; a pod in an ambient namespace gets none.", CORE, _SIDECAR),
    Feature("SidecarInteropAmbientToSidecar",
            "An ambient client's call to a sidecar pod arrives over mutual TLS with the client's SPIFFE "
            "identity: a policy at the sidecar naming the client admits it, one naming another identity "
            "refuses it.", CORE, _SIDECAR),
    Feature("SidecarInteropSidecarToAmbient",
            "A sidecar client's call to an ambient pod arrives at the destination ztunnel over HBONE with "
            "the sidecar pod's own identity, so an L4 policy there can admit or refuse it.", CORE, _SIDECAR),
    Feature("SidecarInteropSidecarToSidecar",
            "Between two sidecar pods, mutual TLS carries both identities: the server's policy tells the "
            "client's identity apart.", CORE, _SIDECAR),
    Feature("SidecarInteropSidecarToUncaptured",
            "A sidecar client reaches a pod outside the mesh in plaintext, from its own pod address.",
            CORE, _SIDECAR),
    Feature("SidecarInteropUncapturedToSidecar",
            "A pod outside the mesh reaches a sidecar pod in plaintext under PERMISSIVE (no identity), and is "
            "refused under PeerAuthentication STRICT while mesh clients still get in.", CORE, _SIDECAR),
    Feature("SidecarPolicyL7",
            "At the sidecar itself, a selector AuthorizationPolicy's L7 fields give 403 and "
            "RequestAuthentication an invalid token 401, as at a waypoint.", CORE, _SIDECAR),
    Feature("SidecarMigration",
            "A namespace moved from sidecar to ambient (relabel, rollout) under traffic every 500 ms from "
            "sidecar and ambient clients loses no request.", EXTENDED, _SIDECAR),
    Feature("SeedWalkthroughSidecar",
            "The seed article's Step 2 for `legacy-apps`: httpbin-legacy runs with the injected proxy and "
            "sleep-ambient's call to it arrives over HBONE with sleep-ambient's identity, not as plaintext.",
            CORE, ("SIDECAR-INTEROP", "SEED-WALKTHROUGH")),
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
