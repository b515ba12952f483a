"""The seed article's manifests load, validate, and carry the article's legacy forms."""

import json
from pathlib import Path

import jwt
import pytest

from reference_impl.api import legacy_warnings, load_files, object_key, security

SEED = Path(__file__).resolve().parents[2] / "fixtures" / "seed"
FILES = ["namespaces.yaml", "httpbin-legacy.yaml", "httpbin-ambient.yaml", "sleep-ambient.yaml",
         "waypoint.yaml", "l4-policy.yaml", "rogue-client.yaml", "jwt-policy.yaml",
         "l7-authz-policy.yaml"]
ISSUER = "testing@secure.istio.io"


@pytest.mark.parametrize("name", FILES)
def test_every_seed_file_loads_and_parses(name):
    objects = load_files([SEED / name])
    assert objects
    for obj in objects:
        if obj["kind"] in security.PARSERS:
            security.parse(obj["kind"], obj)


def test_the_directory_holds_exactly_the_article_objects():
    keys = {object_key(o) for o in load_files(SEED)}
    assert keys == {
        ("Namespace", "", "legacy-apps"), ("Namespace", "", "ambient-apps"),
        ("ServiceAccount", "legacy-apps", "httpbin-legacy"),
        ("Service", "legacy-apps", "httpbin-legacy"),
        ("Deployment", "legacy-apps", "httpbin-legacy"),
        ("ServiceAccount", "ambient-apps", "httpbin-ambient"),
        ("Service", "ambient-apps", "httpbin-ambient"),
        ("Deployment", "ambient-apps", "httpbin-ambient"),
        ("ServiceAccount", "ambient-apps", "sleep-ambient"),
        ("Service", "ambient-apps", "sleep-ambient"),
        ("Deployment", "ambient-apps", "sleep-ambient"),
        ("Gateway", "ambient-apps", "httpbin-ambient-waypoint"),
        ("AuthorizationPolicy", "ambient-apps", "require-sleep-identity"),
        ("ServiceAccount", "ambient-apps", "rogue-sa"),
        ("Deployment", "ambient-apps", "rogue-client"),
        ("RequestAuthentication", "ambient-apps", "require-jwt-for-billing"),
        ("AuthorizationPolicy", "ambient-apps", "allow-ip-path-with-jwt"),
    }


def test_namespace_labels_select_the_data_plane_mode():
    namespaces = {o["metadata"]["name"]: o for o in load_files([SEED / "namespaces.yaml"])}
    assert namespaces["legacy-apps"]["metadata"]["labels"] == {"istio-injection": "enabled"}
    assert namespaces["ambient-apps"]["metadata"]["labels"] == {"istio.io/dataplane-mode": "ambient"}


def test_the_seed_waypoint_is_the_legacy_form_and_says_so():
    [obj] = load_files([SEED / "waypoint.yaml"])
    assert [(lst["name"], lst["port"], lst["protocol"]) for lst in obj["spec"]["listeners"]] == [
        ("mesh", 15008, "HBONE")]
    assert any("gatewayClassName 'istio' with an HBONE listener" in w and "istio-waypoint" in w
               and "ambient-apps/httpbin-ambient-waypoint" in w for w in legacy_warnings(obj))


def test_the_issuer_is_restored_and_matches_the_sample_token():
    [authn] = [security.parse(o["kind"], o) for o in load_files([SEED / "jwt-policy.yaml"])]
    [authz] = [security.parse(o["kind"], o) for o in load_files([SEED / "l7-authz-policy.yaml"])]
    assert [r.issuer for r in authn.jwt_rules] == [ISSUER]
    [condition] = authz.rules[0].conditions
    assert (condition.key, condition.values) == ("request.auth.claims[iss]", (ISSUER,))
    assert authz.rules[0].operations[0].get("paths") == ("/ip",)
    assert authz.rules[0].sources[0].get("principals") == (
        "cluster.local/ns/ambient-apps/sa/sleep-ambient",)


def test_demo_jwt_is_signed_by_the_key_in_jwks_json():
    keys = jwt.PyJWKSet.from_dict(json.loads((SEED / "jwks.json").read_text()))
    token = (SEED / "demo.jwt").read_text().strip()
    header = jwt.get_unverified_header(token)
    key = next(k for k in keys.keys if k.key_id == header["kid"])
    claims = jwt.decode(token, key.key, algorithms=["RS256"])
    assert claims["iss"] == claims["sub"] == ISSUER


def test_command_line_check_lists_objects_and_warnings(capsys):
    from reference_impl.api.__main__ import main

    assert main([str(SEED / "waypoint.yaml")]) == 0
    out = capsys.readouterr().out
    assert "ok  Gateway ambient-apps/httpbin-ambient-waypoint" in out
    assert "warning: Gateway ambient-apps/httpbin-ambient-waypoint uses gatewayClassName 'istio'" in out


def test_command_line_check_reports_the_error(tmp_path, capsys):
    from reference_impl.api.__main__ import main

    bad = tmp_path / "bad.yaml"
    bad.write_text("apiVersion: v1\nkind: Service\nmetadata: {name: s}\nspec: {ports: 8000}\n")
    assert main([str(bad)]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"error: {bad}: document 1 (Service default/s, line 4): spec.ports: ")
