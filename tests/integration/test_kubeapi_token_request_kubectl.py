"""`kubectl create token` and a TokenReview with the real kubectl (both versions) against the
reference cluster: a token of the ztunnel's service account bound to its pod, audience istio-ca,
which the API server then authenticates for that audience only, as a kube-apiserver does."""
from __future__ import annotations

import json
import os

import jwt
import pytest

from kubeapi_support import KUBECTLS, Kubectl

pytestmark = pytest.mark.skipif(not KUBECTLS, reason="no kubectl")


@pytest.fixture(scope="module")
def cluster(cluster_factory):
    return cluster_factory("ktok", nodes=1)


def _review(k, token: str, audience: str) -> dict:
    review = {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview",
              "spec": {"token": token, "audiences": [audience]}}
    return json.loads(k("create", "-f", "-", "-o", "json", input=json.dumps(review)).stdout)["status"]


@pytest.mark.parametrize("binary", KUBECTLS, ids=os.path.basename)
def test_kubectl_creates_a_pod_bound_token_the_api_then_reviews(cluster, tmp_path, binary):
    k = Kubectl(binary, cluster.name, tmp_path)
    pod = k("get", "pod", "-n", "istio-system", "-l", "app=ztunnel", "-o", "jsonpath={.items[0].metadata.name}").stdout
    uid = k("get", "pod", pod, "-n", "istio-system", "-o", "jsonpath={.metadata.uid}").stdout
    token = k("create", "token", "ztunnel", "-n", "istio-system", "--audience", "istio-ca",
              "--bound-object-kind", "Pod", "--bound-object-name", pod, "--duration", "10m").stdout.strip()
    claims = jwt.decode(token, options={"verify_signature": False})
    assert claims["aud"] == ["istio-ca"] and claims["sub"] == "system:serviceaccount:istio-system:ztunnel"
    assert claims["kubernetes.io"]["pod"] == {"name": pod, "uid": uid}
    assert claims["exp"] - claims["iat"] == 600
    status = _review(k, token, "istio-ca")
    assert status["authenticated"] is True
    assert status["user"]["extra"]["authentication.kubernetes.io/pod-name"] == [pod]
    assert _review(k, token, "kubernetes").get("authenticated") is not True
    refused = k("create", "token", "ztunnel", "-n", "istio-system", "--duration", "1m", check=False)
    assert refused.returncode != 0 and "spec.expirationSeconds" in refused.stderr
