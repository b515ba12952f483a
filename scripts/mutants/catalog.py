"""The mutation catalog: one realistic bug per feature, each a single exact edit to the reference
mesh. `run.py` puts each into a scratch clone and runs the conformance suite against it; a mutant
the suite certifies anyway is a hole in the suite. `critical` marks the bugs that would let an
attacker in (a survivor fails the run). tests/unit/test_mutation_catalog.py checks that every
anchor is still found exactly once, so a refactor cannot silently turn a mutant into a no-op.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Mutant:
    name: str
    area: str
    critical: bool
    file: str   # relative to the repository
    old: str    # found exactly once in `file`
    new: str
    suite_env: tuple[tuple[str, str], ...] = ()   # environment of the suite run (issue 16: AC_WAYPOINT)


class AnchorError(Exception):
    pass


def mutated_text(repo: Path, m: Mutant) -> str:
    text = (repo / m.file).read_text()
    count = text.count(m.old)
    if count != 1:
        raise AnchorError(f"mutant {m.name!r}: its anchor occurs {count} times in {m.file} (must be "
                          "once); update scripts/mutants/catalog.py")
    return text.replace(m.old, m.new, 1)


def apply_to(repo: Path, m: Mutant) -> None:
    (repo / m.file).write_text(mutated_text(repo, m))


MUTANTS: list[Mutant] = [
    # --- HBONE and identity --------------------------------------------------------------------
    Mutant("HBONE server accepts a client of another trust domain", "hbone-identity", True,
           "reference_impl/identity/tls.py",
           "        if identity.trust_domain == trust_domain:\n",
           "        if True:\n"),
    Mutant("HBONE client does not check the server's SPIFFE identity", "hbone-identity", True,
           "reference_impl/identity/tls.py",
           "        if identity in expected:\n",
           "        if True:\n"),
    # --- L4 authorization matching -------------------------------------------------------------
    Mutant("principals and namespaces match by prefix or suffix", "l4-authz", True,
           "reference_impl/policy/match.py",
           "        return candidate == value\n",
           "        return candidate.startswith(value) or candidate.endswith(value)\n"),
    # --- ztunnel inbound (HBONE 15008) ----------------------------------------------------------
    Mutant("inbound takes the source address from `forwarded for=`", "ztunnel-source", True,
           "reference_impl/ztunnel/inbound.py",
           "        source_ip = req.peer_address[0]\n",
           # the client's word, as the bug would take it: `for="10.0.0.1:4242"` or `for="[::1]:4242"`
           "        source_ip = (forwarded.get(\"for\") or req.peer_address[0]).rsplit(\":\", 1)[0].strip(\"[]\")\n"),
    Mutant("inbound accepts a CONNECT whose authority names another pod", "ztunnel-authority", True,
           "reference_impl/ztunnel/inbound.py",
           "            if ip not in dest.ips:\n",
           "            if False:\n"),
    Mutant("inbound tunnels to the proxy's own ports", "ztunnel-authority", True,
           "reference_impl/ztunnel/inbound.py",
           "            if port in PROXY_PORTS:\n                raise Refusal(\"denied\", f\"port {port} is a proxy port\", status=400,",
           "            if False:\n                raise Refusal(\"denied\", f\"port {port} is a proxy port\", status=400,"),
    Mutant("live connections never re-checked after a policy change", "l4-authz", True,
           "reference_impl/ztunnel/connection_manager.py",
           "        return state.authorize(w, self.source_ip, self.dest_ip, self.port, self.principal).allowed\n",
           "        return True\n"),
    Mutant("denied HBONE connections stall instead of being refused", "l4-authz", True,
           "reference_impl/ztunnel/inbound.py",
           '                raise Refusal("denied", decision.reason, status=401)\n',
           '                await asyncio.sleep(30)\n                raise Refusal("denied", decision.reason, status=401)\n'),
    # --- drain -----------------------------------------------------------------------------------
    Mutant("drain resets live connections at once", "drain", False,
           "reference_impl/ztunnel/proxy.py",
           "        while (self.connections or self._opening()) and time.monotonic() < end:\n",
           "        while False:\n"),
    # --- L4 authorization and its scope (ztunnel state, control-plane binding) -------------------
    Mutant("L4 authorization switched off", "l4-authz", True,
           "reference_impl/ztunnel/state.py",
           "        policies = self.policies_for(dest)\n",
           "        policies = []\n"),
    Mutant("a namespace's policy applies mesh-wide", "scope", True,
           "reference_impl/ztunnel/state.py",
           '(p.scope == "NAMESPACE" and p.namespace == dest.namespace)',
           '(p.scope == "NAMESPACE")'),
    Mutant("policies in the root namespace are ignored", "scope", True,
           "reference_impl/ztunnel/state.py",
           '                if p.scope == "GLOBAL" or (p.scope == "NAMESPACE"',
           '                if False or (p.scope == "NAMESPACE"'),
    Mutant("a selector that matches no pod binds its whole namespace", "scope", True,
           "reference_impl/policy/authz_model.py",
           "    return all(labels.get(k) == v for k, v in (selector or {}).items())\n",
           "    return True\n"),
    Mutant("ztunnel enforces targetRefs (waypoint) policies", "scope", False,
           "reference_impl/policy/authz_l4.py",
           "    if pol.target_refs:\n",
           "    if False:\n"),
    Mutant("PeerAuthentication ignored", "peerauth", True,
           "reference_impl/ztunnel/state.py",
           "        return plaintext_allowed(self.peer_authentications, dest.namespace, dest.labels, port, self.root_namespace)\n",
           "        return True\n"),
    Mutant("plaintext instead of HBONE between captured pods", "hbone-identity", True,
           "reference_impl/ztunnel/state.py",
           "        if workload.hbone:\n",
           "        if False:\n"),
    # --- routing ---------------------------------------------------------------------------------
    Mutant("a service VIP always picks its first endpoint", "routing", False,
           "reference_impl/ztunnel/state.py",
           "            endpoint, workload = rng.choice(ready)\n",
           "            endpoint, workload = ready[0]\n"),
    Mutant("a call to a pod IP is balanced across its service's pods", "routing", True,
           "reference_impl/ztunnel/state.py",
           "            return self._to_workload(workload, port, None)\n",
           "            peers = [w for s in self.services if any(e.workload_uid == workload.uid for e in s.endpoints)\n"
           "                     for e in s.endpoints for w in [self.by_uid.get(e.workload_uid)] if w]\n"
           "            return self._to_workload(rng.choice(peers or [workload]), port, None)\n"),
    Mutant("ztunnel sends service traffic around its waypoint", "waypoint", True,
           "reference_impl/ztunnel/state.py",
           "            if service.waypoint and not self._is_waypoint_itself(source, service.waypoint):\n",
           "            if False:\n"),
    # --- xDS ---------------------------------------------------------------------------------------
    Mutant("ztunnel drops its policies when istiod goes away", "xds", True,
           "reference_impl/xds/client.py",
           '                log.info("keeping config version %d while istiod is away", self.version)\n',
           '                log.info("keeping config version %d while istiod is away", self.version)\n'
           '                if self.config is not None and "policies" in self.config and self.on_snapshot:\n'
           '                    dropped = self.on_snapshot(dict(self.config, policies=[]), self.version)\n'
           '                    if asyncio.iscoroutine(dropped):\n'
           '                        await dropped\n'),
    # --- PeerAuthentication -------------------------------------------------------------------
    Mutant("PeerAuthentication portLevelMtls ignored", "peerauth", True,
           "reference_impl/policy/peerauth.py",
           '        if port_mode != "UNSET":\n',
           "        if False:\n"),
    Mutant("namespace PeerAuthentication beats the workload's", "peerauth", True,
           "reference_impl/policy/peerauth.py",
           '    return [("mesh", _oldest(mesh)), ("namespace", _oldest(namespace)),\n            ("workload", _oldest(workload))]\n',
           '    return [("mesh", _oldest(mesh)), ("workload", _oldest(workload)),\n            ("namespace", _oldest(namespace))]\n'),
    # --- CA ------------------------------------------------------------------------------------
    # the node rule is shared by the config stream's CA and the gRPC CA (ca_policy.identity_on_node,
    # issue 14 item 5): the reference target's stream and the kubernetes target's gRPC call both see it
    Mutant("CA signs a node proxy's request for a workload on another node", "ca", True,
           "reference_impl/controlplane/ca_policy.py",
           "    return any(pod_node(pod) == node and not pod_terminating(pod) and pod_identity(pod) == identity_uri\n",
           "    return any(pod_identity(pod) == identity_uri\n"),
    # --- JWT at the waypoint -------------------------------------------------------------------
    Mutant("waypoint skips JWT signatures", "jwt", True,
           "reference_impl/policy/jwt_authn.py",
           'options={"verify_aud": False, "verify_iss": False,',
           'options={"verify_signature": False, "verify_aud": False, "verify_iss": False,'),
    Mutant("JWT of an issuer the rule does not name is verified against the rule anyway", "jwt", True,
           "reference_impl/policy/jwt_authn.py",
           '    matching = [r for r in loc_rules if r.issuer == unverified.get("iss")]\n',
           "    matching = list(loc_rules)\n"),
    Mutant("the waypoint ignores L7 AuthorizationPolicies", "waypoint", True,
           "reference_impl/l7/pipeline.py",
           "    policies = config.policies_for(workload_uid, service_key)\n",
           "    policies = []\n"),
    Mutant("a JWT of an unknown issuer is treated as no token", "jwt", True,
           "reference_impl/policy/jwt_authn.py",
           '            except _Invalid as exc:\n                return AuthnResult("invalid", str(exc))\n',
           '            except _Invalid as exc:\n                if "issuer is not configured" in str(exc):\n'
           '                    continue\n                return AuthnResult("invalid", str(exc))\n'),
    # --- L7 authorization and JWT at the waypoint (issue 9) -------------------------------------
    Mutant("the waypoint authorizes with its own identity instead of the original client's", "waypoint", True,
           "reference_impl/l7/pipeline.py",
           "source_principal=peer.uri if peer else None,",
           "source_principal=config.identity.uri if config.identity else None,"),
    Mutant("a prefix match admits its parent (the path without the trailing slash)", "waypoint", True,
           "reference_impl/policy/match.py",
           "            return candidate.startswith(value)\n",
           '            return candidate.startswith(value) or candidate + "/" == value\n'),
    Mutant("a request with several JWTs is judged by the first valid one only", "jwt", True,
           "reference_impl/policy/jwt_authn.py",
           "            verified.append((token, loc, rule, claims))\n",
           "            verified.append((token, loc, rule, claims))\n            return _success(verified)\n"),
    # --- waypoint binding and policy attachment (issue 9) --------------------------------------
    Mutant("the namespace's use-waypoint label beats the Service's own", "waypoint-binding", False,
           "reference_impl/controlplane/waypoints.py",
           "    labelled, ref = _requested(own_labels, namespace)\n    if labelled:\n",
           "    labelled, ref = _requested(own_labels, namespace)\n"
           "    if labelled and not _requested(namespace_labels, namespace)[0]:\n"),
    Mutant("a use-waypoint naming no Gateway binds anyway (traffic blackholed)", "waypoint-binding", False,
           "reference_impl/controlplane/waypoints.py",
           "        return Binding(None, NOT_READY, f'waypoint \"{key}\" is not ready', via)\n",
           "        return Binding(Waypoint(ref[0], ref[1], \"all\", False, None, None), NOT_READY, \"\", via)\n"),
    Mutant("waypoints enforce the selector policies of the services they front", "waypoint-policy", True,
           "reference_impl/controlplane/derive.py",
           "                elif waypoint.legacy:\n"
           "                    uids = _selected_workloads(policy, fronted_workloads)\n",
           "                else:\n"
           "                    uids = _selected_workloads(policy, fronted_workloads + [\n"
           "                        mesh.workloads[u] for s in fronted_services for u in s.endpoints])\n"),
    Mutant("a Service-attached policy applies to every service of the waypoint", "waypoint-policy", True,
           "reference_impl/controlplane/derive.py",
           "            services.add(fronted_services[(policy_ns, name)].key)\n",
           "            whole = True\n"),
    # --- protocols and bad input at the waypoint (issue 9) ------------------------------------------
    Mutant("the waypoint has no request-header size limit", "waypoint-protocols", False,
           "reference_impl/l7/limits.py",
           "MAX_REQUEST_HEADERS_BYTES = 60 * 1024\n",
           "MAX_REQUEST_HEADERS_BYTES = 64 * 1024 * 1024\n"),
    Mutant("a waypoint-bound service's TCP port is sniffed and parsed as HTTP", "waypoint-protocols", False,
           "reference_impl/l7/front.py",
           "    if declared == TCP:\n        return b\"\", TCP\n",
           "    if False:\n        return b\"\", TCP\n"),
    # --- certificates ------------------------------------------------------------------------------
    Mutant("workload certificate TTL ignored (a year instead)", "ca", False,
           "reference_impl/controlplane/istiod.py",
           "        ttl = min(ttl_seconds or self.cert_ttl_seconds, self.cert_ttl_seconds)\n",
           "        ttl = 365 * 86400\n"),
    # --- HTTP routing at the waypoint (issue 9, GAMMA) ------------------------------------------
    Mutant("PathPrefix matches by string prefix, not by path segment", "mesh-http", False,
           "reference_impl/l7/httproute.py",
           '        return not prefix or path == prefix or path.startswith(prefix + "/")\n',
           "        return path.startswith(prefix)\n"),
    Mutant("retries also retry 503, which the route does not list", "mesh-http", False,
           "reference_impl/l7/retry.py",
           "    codes = frozenset(retry.codes) if retry else frozenset()\n",
           "    codes = frozenset(retry.codes) | {503} if retry else frozenset()\n"),
    Mutant("backendRef weights ignored (backends picked evenly)", "mesh-http", False,
           "reference_impl/l7/httproute.py",
           "    return rng.choices(backends, weights=weights)[0]\n",
           "    return rng.choice([b for b in backends if b.weight])\n"),
    Mutant("the route's request timeout is never armed", "mesh-http", False,
           "reference_impl/l7/retry.py",
           "        if action.timeout:\n",
           "        if False:\n"),
    # a hunt for holes in the mesh HTTPRoute area (2026-12-02, wt-meshhttp): each survived the
    # MESH-HTTP profile until the test its docs/MUTANTS.md row names
    Mutant("a backendRef of weight 0 is given the default weight 1", "mesh-http", False,
           "reference_impl/controlplane/routes.py",
           '    name, port, weight = ref["name"], ref.get("port") or 0, ref.get("weight", 1)\n',
           '    name, port, weight = ref["name"], ref.get("port") or 0, ref.get("weight") or 1\n'),
    Mutant("the header matches of one HTTPRoute match are OR'ed (any one admits the request)", "mesh-http", False,
           "reference_impl/l7/httproute.py",
           "    for h in match.headers:\n"
           "        if not _value_matches(h.type, h.value, header_value(headers, h.name), "
           "entry.value_regexes.get(\"h:\" + h.name)):\n"
           "            return False\n",
           "    if match.headers and not any(_value_matches(h.type, h.value, header_value(headers, h.name),\n"
           "                                                entry.value_regexes.get(\"h:\" + h.name))\n"
           "                                 for h in match.headers):\n"
           "        return False\n"),
    Mutant("route precedence ranks the number of header matches above a method match", "mesh-http", False,
           "reference_impl/controlplane/routes.py",
           "    return (kind_rank, -length, match.method is None, -len(match.headers), -len(match.query_params))\n",
           "    return (kind_rank, -length, -len(match.headers), match.method is None, -len(match.query_params))\n"),
    Mutant("ReplacePrefixMatch keeps a PathPrefix's trailing '/' (/trailing-slash/two -> /onetwo)", "mesh-http",
           False, "reference_impl/l7/httproute.py",
           '    prefix = match.path.rstrip("/") if match.path_type in ("PathPrefix", "StringPrefix") else ""\n',
           '    prefix = match.path if match.path_type in ("PathPrefix", "StringPrefix") else ""\n'),
    Mutant("a RegularExpression header or query match admits a value the pattern matches only part of",
           "mesh-http", False, "reference_impl/l7/httproute.py",
           "    return regex.fullmatch(actual) is not None\n",
           "    return regex.search(actual) is not None\n"),
    Mutant("tied routes of one Service are ordered by name, not by creationTimestamp", "mesh-http", False,
           "reference_impl/controlplane/routes.py",
           "    for route_order, (route, ports) in enumerate(sorted(bound, key=lambda b: _age(b[0]))):\n",
           "    for route_order, (route, ports) in enumerate(sorted(bound, key=lambda b: ns_name(b[0]))):\n"),
    Mutant("URLRewrite hostname adds a second Host instead of replacing the client's", "mesh-http", False,
           "reference_impl/l7/httproute.py",
           '            headers = [(n, v) for n, v in headers if n != "host"] + [("host", rule.rewrite.hostname)]\n',
           '            headers = headers + [("host", rule.rewrite.hostname)]\n'),
    Mutant("timeouts.backendRequest is applied only in a rule that also has retry", "mesh-http", False,
           "reference_impl/controlplane/routes.py",
           "    elif per_try:\n",
           "    elif False:\n"),
    Mutant("a backendRef's ResponseHeaderModifier is accepted but never applied", "mesh-http", False,
           "reference_impl/l7/httproute.py",
           "    action.backend_response_headers = backend.response_headers\n",
           ""),
    Mutant("the waypoint picks a request's routes by its Host header, not by the Service it was sent to "
           "(what Istio does, istio/istio#44702)", "mesh-http", True,
           "reference_impl/l7/httproute.py",
           "    routed = route(config.routes, service.key if service else None, destination.port, method, target,\n",
           "    host = (header_value(headers, \"host\") or \"\").partition(\":\")[0]\n"
           "    routed = route(config.routes, f\"{service.key.partition('/')[0]}/{host}\" if service else None,\n"
           "                   destination.port, method, target,\n"),
    Mutant("an HTTPRoute of another namespace (a consumer route) routes every client's calls", "mesh-http", True,
           "reference_impl/controlplane/routes.py",
           "        if route_ns != service.namespace:\n"
           "            continue  # a consumer route: not applied by this mesh\n",
           ""),
    # --- sidecar (issue 11) ---------------------------------------------------------------------
    Mutant("the sidecar accepts plaintext under PeerAuthentication STRICT", "sidecar", True,
           "reference_impl/sidecar/inbound.py",
           "        if config is None or config.own is None or not config.plaintext_allowed(port):\n",
           "        if config is None or config.own is None:\n"),
    Mutant("the sidecar reports its own identity as the source of HBONE calls", "sidecar", True,
           "reference_impl/sidecar/inbound.py",
           "        self.proxy.spawn(self.serve(our_reader, our_writer, request.peer_identity, request.peer_address[0],\n",
           "        self.proxy.spawn(self.serve(our_reader, our_writer, self.proxy.identity, request.peer_address[0],\n"),
    # --- the seed walkthrough as corrected (issue 17) ---------------------------------------------
    Mutant("a RequestAuthentication attached by targetRefs never reaches the waypoint", "waypoint-policy", True,
           "reference_impl/controlplane/derive.py",
           "                if target_refs(policy):\n",
           "                if target_refs(policy) and kind == \"AuthorizationPolicy\":\n"),
    # --- HBONE DATA fast paths (issue 15, data-plane speed) -------------------------------------
    Mutant("the HBONE DATA writer does not charge the stream's send window", "hbone-flow-control", False,
           "reference_impl/hbone/session.py",
           "        stream.outbound_flow_control_window -= size\n",
           "        pass\n"),
    Mutant("the HBONE DATA reader does not charge the connection's receive window", "hbone-flow-control", False,
           "reference_impl/hbone/session.py",
           "                conn._inbound_flow_control_window_manager.window_consumed(size)\n",
           "                pass\n"),
    Mutant("the HBONE window return forgets the connection's share when no WINDOW_UPDATE is due", "hbone-flow-control", False,
           "reference_impl/hbone/session.py",
           "                conn_window._bytes_processed += size\n",
           "                pass\n"),
    # --- the Envoy waypoint's translation (issue 16); the suite runs with --waypoint envoy --------
    Mutant("the Envoy waypoint's RBAC sees the waypoint's own identity as every request's source",
           "envoy-waypoint", True, "reference_impl/waypoint_envoy/translate.py",
           '"format_string": {"text_format_source": {"inline_string": "%DOWNSTREAM_PEER_URI_SAN%"}},',
           '"format_string": {"text_format_source": {"inline_string": "%DOWNSTREAM_LOCAL_URI_SAN%"}},',
           suite_env=(("AC_WAYPOINT", "envoy"),)),
    Mutant("the Envoy waypoint drops an ALLOW policy without rules (allow-nothing admits everything)",
           "envoy-waypoint", True, "reference_impl/waypoint_envoy/translate.py",
           "        if allows_present:\n", "        if allows:\n", suite_env=(("AC_WAYPOINT", "envoy"),)),
    # --- the ztunnel's socket-to-stream splice (issue 15, round 2) --------------------------------
    Mutant("a spliced stream returns DATA to the peer's window while the TCP reader is stalled", "hbone-flow-control", False,
           "reference_impl/hbone/splice.py",
           "        if self._writing_paused:\n            self._owed += flow_length\n        elif flow_length:\n",
           "        if flow_length:\n"),
    Mutant("a spliced socket's FIN is not passed on as END_STREAM", "hbone-half-close", False,
           "reference_impl/hbone/splice.py",
           "            self.stream.write_eof()\n",
           "            pass\n"),
    # --- the waypoint's stream hand-off (issue 15, round 3) ---------------------------------------
    Mutant("a handled stream's close() resets it instead of half-closing", "hbone-half-close", False,
           "reference_impl/hbone/stream.py",
           "        elif self.close_stops_reading:\n",
           "        elif False:\n"),
    # Envoy's waypoint ends a `Connection: close` tunnel with END_STREAM, then RST_STREAM: a ztunnel
    # that treats that reset as an abort throws away the response's unsent tail
    Mutant("a stream reset after the peer's END_STREAM discards the answer its reader has not read yet",
           "hbone-half-close", False, "reference_impl/hbone/stream.py",
           "        if not self._recv_eof:\n            # After END_STREAM what arrived",
           "        if True:\n            # After END_STREAM what arrived"),
    Mutant("a stream reset after the peer's END_STREAM aborts the spliced socket, dropping what it still holds",
           "hbone-half-close", False, "reference_impl/hbone/splice.py",
           "        if self._stream_eof:\n            # The peer's END_STREAM came first",
           "        if False:\n            # The peer's END_STREAM came first", suite_env=(("AC_WAYPOINT", "envoy"),)),
    # What Envoy does to a slow reader: its CONNECT termination resets a tunnel whose upstream ended
    # while the answer still waited for the client's window (WaypointConnectionCloseWaitsForSlowReader)
    Mutant("a handled stream's close() resets it while its answer still waits for the peer's window",
           "hbone-half-close", False, "reference_impl/hbone/stream.py",
           "        elif self.close_stops_reading:\n",
           "        elif self.close_stops_reading and self._send_bytes:\n            self.reset()\n"
           "        elif self.close_stops_reading:\n"),
    # --- the L7 engine's per-request steps (issue 15, round 4: wt-wp) ----------------------------
    Mutant("the waypoint's policy lookup cache ignores which service a request is for", "waypoint", True,
           "reference_impl/l7/config.py",
           '        key = ("authz", workload_uid, service_key, len(self.authorization))\n',
           '        key = ("authz", workload_uid, len(self.authorization))\n'),
    # --- the L7 engine's outbox (issue 15, round 5: wt-waypoint) ---------------------------------
    Mutant("the waypoint holds a response head until its body ends (no release at the loop turn's end)",
           "waypoint", False, "reference_impl/l7/http.py",
           "            self._loop.call_soon(self._release_at_turn_end)\n",
           "            pass\n"),
    # --- thin areas of the catalog, one bug each (mutation work, wt-mutants) ---------------------
    Mutant("PeerAuthentication PERMISSIVE treated as STRICT (only DISABLE lets plaintext in)", "peerauth", False,
           "reference_impl/policy/peerauth.py",
           '            result = EffectiveMode("STRICT" if chosen.mode == "STRICT" else "PERMISSIVE",\n',
           '            result = EffectiveMode("STRICT" if chosen.mode != "DISABLE" else "PERMISSIVE",\n'),
    Mutant("at ztunnel a matching ALLOW policy beats a matching DENY (ALLOW evaluated first)", "l4-authz", True,
           "reference_impl/policy/authz_l4.py",
           '        if p.action == "DENY" and p.matches(conn):\n',
           '        if p.action == "DENY" and p.matches(conn) and not any(\n'
           '                a.action == "ALLOW" and a.matches(conn) for a in compiled):\n'),
    Mutant("at the waypoint a matching ALLOW policy beats a matching DENY (ALLOW evaluated first)", "waypoint", True,
           "reference_impl/policy/authz_l7.py",
           '        if p.action == "DENY" and policy_matches(p, request):\n',
           '        if p.action == "DENY" and policy_matches(p, request) and not any(\n'
           '                a.action == "ALLOW" and policy_matches(a, request) for a in parsed):\n'),
    Mutant("RequestAuthentication fromHeaders ignored (tokens read from Authorization only)", "jwt", False,
           "reference_impl/api/security.py",
           '        locations.append(TokenLocation("header", name.lower(), prefix))\n',
           "        pass\n"),
    Mutant("the waypoint matches a policy's request.headers[NAME] case-sensitively", "waypoint", True,
           "reference_impl/policy/authz_l7.py",
           "    def header(self, name: str) -> str | None:\n        name = name.lower()\n",
           "    def header(self, name: str) -> str | None:\n"),
    # --- a service endpoint that refuses (its app gone) during a rollout (wt-flake) -------------
    Mutant("a sidecar whose every endpoint refused resets at once instead of waiting for a newer config",
           "sidecar", False, "reference_impl/sidecar/outbound.py",
           '            if how == "no_endpoint" and tried:\n',
           "            if False:\n"),
    Mutant("ztunnel resets a connection a service endpoint refused instead of trying another endpoint",
           "ztunnel-outbound", False, "reference_impl/ztunnel/outbound.py",
           "                raise _Refused(refusal) from None\n",
           "                raise refusal from None\n"),
    # --- selector policies and a running pod's labels (PolicySelectorFollowsPodLabels) ------------
    Mutant("istiod keeps a workload's selector-policy bindings from the first time it computed them "
           "(a relabelled pod keeps its old policies)", "scope", True, "reference_impl/controlplane/derive.py",
           "            if authz_l4.binds(scope, policy_ns, policy.selector, workload.namespace, workload.labels,\n"
           "                              ROOT_NAMESPACE):\n",
           '            if globals().setdefault("_BOUND", {}).setdefault((uid, policy.key), authz_l4.binds(\n'
           "                    scope, policy_ns, policy.selector, workload.namespace, workload.labels, ROOT_NAMESPACE)):\n"),
    Mutant("the waypoint ends a request body at its first chunk (the rest never reaches the app)",
           "waypoint-protocols", False, "reference_impl/l7/http.py",
           "                await up.send(h11.Data(data=event.data))\n",
           "                await up.send(h11.Data(data=event.data))\n"
           "                await up.send(h11.EndOfMessage())\n                return\n"),
    Mutant("the waypoint forwards the headers a client's Connection header names (hop-by-hop)",
           "waypoint-protocols", False, "reference_impl/l7/pipeline.py",
           '            names.update(token.strip().lower() for token in value.split(",") if token.strip())\n',
           "            pass\n"),
    # --- source addresses (L7AuthorizationSourceAddress, L4AuthorizationIPBlocks) ----------------
    Mutant("the waypoint trusts the client's X-Forwarded-For for remoteIpBlocks", "waypoint", True,
           "reference_impl/l7/pipeline.py",
           "source_ip=tunnel.client_address, dest_ip=tunnel.destination_address, auth=authn)",
           "source_ip=tunnel.client_address, dest_ip=tunnel.destination_address, auth=authn,\n"
           "                            remote_ip=next((v.split(',')[0].strip() for k, v in headers\n"
           "                                            if k == 'x-forwarded-for'), None))"),
    Mutant("the waypoint takes a request's source address from the client's X-Forwarded-For", "waypoint", True,
           "reference_impl/l7/pipeline.py",
           "source_ip=tunnel.client_address, dest_ip",
           "source_ip=next((parse_ip(v.split(',')[0].strip()) for k, v in headers if k == 'x-forwarded-for'),\n"
           "                                          tunnel.client_address), dest_ip"),
    # --- how ztunnel combines policies, rules, clauses and entries --------------------------------
    Mutant("ztunnel denies a connection only if every DENY policy matches it (DENY policies AND'ed)",
           "l4-authz", True, "reference_impl/policy/authz_l4.py",
           '        if p.action == "DENY" and p.matches(conn):\n',
           '        if p.action == "DENY" and all(q.matches(conn) for q in compiled if q.action == "DENY"):\n'),
    Mutant("ztunnel requires every rule of a policy to match (rules AND'ed)", "l4-authz", True,
           "reference_impl/policy/authz_l4.py",
           "        return any(r.matches_conn(conn) for r in self.rules)\n",
           "        return all(r.matches_conn(conn) for r in self.rules)\n"),
    Mutant("ztunnel matches a rule when any of its from, to and when parts matches (parts OR'ed)", "l4-authz", True,
           "reference_impl/policy/authz_l4.py",
           "        return all(c.matches_conn(conn) for c in self.clauses)\n",
           "        return any(c.matches_conn(conn) for c in self.clauses)\n"),
    Mutant("ztunnel requires every entry of a rule's from (or to) to match (entries AND'ed)", "l4-authz", True,
           "reference_impl/policy/authz_l4.py",
           "        return any(m.matches(conn) for m in self.matches if not m.is_empty())\n",
           "        return all(m.matches(conn) for m in self.matches if not m.is_empty())\n"),
    Mutant("ztunnel admits a connection only if every ALLOW policy matches it (ALLOW policies AND'ed)",
           "l4-authz", False, "reference_impl/policy/authz_l4.py",
           "    for p in allows:\n        if p.matches(conn):\n",
           "    for p in allows:\n        if all(q.matches(conn) for q in allows):\n"),
    # --- how the waypoint combines policies, rules, entries and conditions ------------------------
    Mutant("the waypoint denies a request only if every DENY policy matches it (DENY policies AND'ed)",
           "waypoint", True, "reference_impl/policy/authz_l7.py",
           '        if p.action == "DENY" and policy_matches(p, request):\n',
           '        if p.action == "DENY" and all(policy_matches(q, request) for q in parsed if q.action == "DENY"):\n'),
    Mutant("the waypoint requires every rule of a policy to match (rules AND'ed)", "waypoint", True,
           "reference_impl/policy/authz_l7.py",
           "    return any(rule_matches(r, req) for r in policy.rules)\n",
           "    return all(rule_matches(r, req) for r in policy.rules)\n"),
    Mutant("the waypoint requires every entry of a rule's from to match (entries AND'ed)", "waypoint", True,
           "reference_impl/policy/authz_l7.py",
           "    if rule.sources and not any(_source_matches(s, req) for s in rule.sources):\n",
           "    if rule.sources and not all(_source_matches(s, req) for s in rule.sources):\n"),
    Mutant("the waypoint matches a rule when any one of its when conditions holds (conditions OR'ed)", "waypoint",
           True, "reference_impl/policy/authz_l7.py",
           "    return all(_condition_matches(c, req) for c in rule.conditions)\n",
           "    return not rule.conditions or any(_condition_matches(c, req) for c in rule.conditions)\n"),
    Mutant("the waypoint serves a request only if every ALLOW policy matches it (ALLOW policies AND'ed)",
           "waypoint", False, "reference_impl/policy/authz_l7.py",
           "    for p in allows:\n        if policy_matches(p, request):\n",
           "    for p in allows:\n        if all(policy_matches(q, request) for q in allows):\n"),
    Mutant("the waypoint reads `when: request.auth.presenter` from the token's sub instead of azp", "jwt", False,
           "reference_impl/policy/authz_l7.py",
           '"request.auth.presenter": ("str", (req.claims or {}).get("azp")),',
           '"request.auth.presenter": ("str", (req.claims or {}).get("sub")),'),
    Mutant("the waypoint matches `when: request.auth.audiences` against a token's first aud only", "jwt", False,
           "reference_impl/policy/authz_l7.py",
           '        return "str", _claim_values(req.claims, ["aud"])\n',
           '        return "str", _claim_values(req.claims, ["aud"])[:1]\n'),
    Mutant("the waypoint reads a `when: source.principal` condition as the client's namespace", "waypoint", True,
           "reference_impl/policy/authz_l7.py",
           '"source.namespace": ("str", req.namespace), "source.principal": ("str", req.principal),',
           '"source.namespace": ("str", req.namespace), "source.principal": ("str", req.namespace),'),
    Mutant("the waypoint matches serviceAccounts by name in any namespace", "waypoint", True,
           "reference_impl/policy/authz_l7.py",
           "                   lambda sa: ident is not None and (sa.namespace, sa.name)\n"
           "                   == (ident.namespace, ident.service_account)))",
           "                   lambda sa: ident is not None and sa.name == ident.service_account))"),
    Mutant("ztunnel ignores a `when` condition's notValues", "l4-authz", True, "reference_impl/policy/authz_l4.py",
           "    for values, negate in ((cond.values, False), (cond.not_values, True)):\n",
           "    for values, negate in ((cond.values, False),):\n"),
    Mutant("ztunnel reads a `when: source.principal` condition as a namespace", "l4-authz", True,
           "reference_impl/policy/authz_l4.py",
           '            setattr(m, prefix + "principals", [StringMatch.parse(v) for v in values])\n',
           '            setattr(m, prefix + "namespaces", [StringMatch.parse(v) for v in values])\n'),
    Mutant("ztunnel matches a `when: source.ip` condition against the destination address", "l4-authz", True,
           "reference_impl/policy/authz_l4.py",
           '            setattr(m, prefix + "source_ips", [parse_cidr(v, cond.key) for v in values])\n',
           '            setattr(m, prefix + "destination_ips", [parse_cidr(v, cond.key) for v in values])\n'),
    Mutant("ztunnel matches a serviceAccounts name as a regular expression (a dot admits any character, "
           "CVE-2026-39350)", "l4-authz", True, "reference_impl/policy/authz_l4.py",
           "                                  and sa.name == ident.service_account)",
           "                                  and __import__('re').fullmatch(sa.name, ident.service_account) is not None)"),
    Mutant("ztunnel matches serviceAccounts by name in any namespace (a bare name is not the policy's namespace)",
           "l4-authz", True, "reference_impl/policy/authz_l4.py",
           "lambda sa: ident is not None and sa.namespace == ident.namespace\n",
           "lambda sa: ident is not None\n"),
    Mutant("an ipBlocks CIDR matches only its network address (a block read as one address)", "l4-authz", True,
           "reference_impl/policy/match.py",
           "    return ip is not None and ip.version == network.version and ip in network\n",
           "    return ip is not None and ip.version == network.version and ip == network.network_address\n"),
    # --- services, PeerAuthentication and enrolment: the thin AMBIENT-L4 areas (wt-l4svc) --------
    Mutant("ztunnel reads a named targetPort as the service port's number (a pod without that port name still "
           "gets connections)", "routing", False, "reference_impl/ztunnel/state.py",
           "{int(k): int(v or 0) for k, v in resource.ports.items()}",
           "{int(k): int(v or k) for k, v in resource.ports.items()}"),
    Mutant("istiod counts a running pod as Ready whatever its Ready condition says (an unready pod gets "
           "service connections)", "routing", False, "reference_impl/controlplane/index.py",
           '        if condition.get("type") == "Ready":\n            return str(condition.get("status")) == "True"\n',
           '        if condition.get("type") == "Ready":\n            return True\n'),
    Mutant("a pod's own istio.io/dataplane-mode=none is ignored in an ambient namespace (the pod is captured)",
           "enrollment", False, "reference_impl/controlplane/index.py",
           '    if own == "none":\n        return "none"\n',
           ""),
    Mutant("a pod's own istio.io/dataplane-mode=ambient is ignored outside an ambient namespace (the pod stays "
           "out of the mesh, its policies unenforced)", "enrollment", True, "reference_impl/controlplane/index.py",
           '    if own == "ambient" or namespace_labels.get(DATAPLANE_MODE_LABEL) == "ambient":\n',
           '    if namespace_labels.get(DATAPLANE_MODE_LABEL) == "ambient":\n'),
    Mutant("ztunnel looks portLevelMtls up by the service port a plaintext connection came through, not the "
           "pod's port", "peerauth", True, "reference_impl/ztunnel/inbound_passthrough.py",
           "            if not state.plaintext_allowed(dest, dst_port):\n",
           "            if not state.plaintext_allowed(dest, next((sp for sp, tp in service.ports.items()\n"
           "                                                       if tp == dst_port), dst_port) if service else dst_port):\n"),
    Mutant("a PeerAuthentication mode UNSET is read as PERMISSIVE (it does not inherit a STRICT parent)",
           "peerauth", True, "reference_impl/policy/peerauth.py",
           '        if chosen.mode != "UNSET":\n',
           "        if True:\n"),
    Mutant("when PeerAuthentications compete at one level the newest wins, not the oldest", "peerauth", True,
           "reference_impl/policy/peerauth.py",
           "    return min(objs, key=lambda pa: (pa.created, pa.name)) if objs else None\n",
           "    return max(objs, key=lambda pa: (pa.created, pa.name)) if objs else None\n"),
    Mutant("a workload PeerAuthentication's selector is not matched (it governs every workload of its namespace)",
           "peerauth", True, "reference_impl/policy/peerauth.py",
           "all(\n                labels.get(k) == v for k, v in pa.selector.items()):",
           "True:"),
    Mutant("the CA signs a node proxy's request for its workload's service account name in any namespace",
           "ca", True, "reference_impl/controlplane/ca_policy.py",
           "    return any(pod_node(pod) == node and not pod_terminating(pod) and pod_identity(pod) == identity_uri\n"
           "               for pod in index.pods_by_namespace.get(identity.namespace, ()))\n",
           "    return any(pod_node(pod) == node and not pod_terminating(pod)\n"
           '               and pod_identity(pod).rsplit("/sa/", 1)[-1] == identity.service_account\n'
           "               for pods in index.pods_by_namespace.values() for pod in pods)\n"),
    # --- sidecar injection and waypoint binding (hunt for holes, wt-sidecar) ----------------------
    Mutant("a pod labelled sidecar.istio.io/inject=false in an injection namespace gets a sidecar anyway",
           "sidecar", False, "reference_impl/cluster/admission.py",
           '    if own == "false":\n        return False\n',
           ""),
    Mutant("a waypoint whose mesh listener has no allowedRoutes admits Services of every namespace",
           "waypoint-binding", False, "reference_impl/controlplane/waypoints.py",
           "        return namespace == self.namespace\n",
           "        return True\n"),
    Mutant("a waypoint-for: all waypoint serves Services only (pod-addressed traffic skips it)",
           "waypoint-binding", True, "reference_impl/controlplane/waypoints.py",
           '        return self.waypoint_for in ("workload", "all")\n',
           '        return self.waypoint_for == "workload"\n'),
]
