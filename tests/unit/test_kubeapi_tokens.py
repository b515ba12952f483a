"""TokenRequest and TokenReview through the official `kubernetes` client against the reference
API server (HTTPS on loopback, client certificates), in this process with a real Store: a token
bound to a pod carries Kubernetes' claims, a review authenticates it for its audience only, and
it stops authenticating once its pod is gone."""
from __future__ import annotations

import asyncio
import json
import threading

import jwt
import pytest
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from reference_impl.cluster.kubeapi import ApiPKI, KubeAPIServer
from reference_impl.cluster.kubeapi.tokens import ISSUER, PUBLIC_KEY_FILE
from reference_impl.cluster.store import Store

NS = "istio-system"


def _pod(name: str, node: str, sa: str) -> dict:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": NS},
            "spec": {"nodeName": node, "serviceAccountName": sa,
                     "containers": [{"name": "c", "image": "img"}]}}


@pytest.fixture(scope="module")
def api(tmp_path_factory):
    directory = tmp_path_factory.mktemp("kubeapi-tokens")
    store = Store()
    store.apply([{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}},
                 {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "ztunnel", "namespace": NS}}])
    store.create({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "node-0"}})
    store.create(_pod("ztunnel-a", "node-0", "ztunnel"))
    store.create(_pod("other", "node-0", "default"))
    pki = ApiPKI(str(directory / "pki"), "tokens")
    pki.create("127.0.0.1")
    server = KubeAPIServer("tokens", store, {"apply": store.apply, "delete": store.delete}, pki)
    loop = asyncio.new_event_loop()
    started = threading.Event()
    port = {}

    def run():
        asyncio.set_event_loop(loop)
        port["n"] = loop.run_until_complete(server.start("127.0.0.1", 0))
        started.set()
        loop.run_forever()
    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    assert started.wait(10)
    kubeconfig = directory / "kubeconfig"
    pki.write_kubeconfig(str(kubeconfig), f"https://127.0.0.1:{port['n']}")
    api_client = config.new_client_from_config(config_file=str(kubeconfig))
    yield {"core": client.CoreV1Api(api_client), "authn": client.AuthenticationV1Api(api_client),
           "store": store, "pki": pki, "loop": loop, "api_client": api_client}
    api_client.close()
    asyncio.run_coroutine_threadsafe(server.stop(), loop).result(5)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(5)


def _request(api, pod="ztunnel-a", audiences=("istio-ca",), seconds=600, account="ztunnel", uid=None):
    ref = client.V1BoundObjectReference(kind="Pod", api_version="v1", name=pod, uid=uid)
    body = client.AuthenticationV1TokenRequest(spec=client.V1TokenRequestSpec(
        audiences=list(audiences), expiration_seconds=seconds, bound_object_ref=ref))
    return api["core"].create_namespaced_service_account_token(account, NS, body)


def _review(api, token, audiences=("istio-ca",)):
    return api["authn"].create_token_review(client.V1TokenReview(
        spec=client.V1TokenReviewSpec(token=token, audiences=list(audiences)))).status


def _on_loop(api, fn):
    """Store writes happen on the API server's own loop (the store is not thread-safe)."""
    done = threading.Event()
    api["loop"].call_soon_threadsafe(lambda: (fn(), done.set()))
    assert done.wait(5)


def test_discovery_lists_tokenreviews_and_the_token_subresource(api):
    groups = {g.name for g in client.ApisApi(api["api_client"]).get_api_versions().groups}
    assert "authentication.k8s.io" in groups
    resources = {r.name: r for r in api["authn"].get_api_resources().resources}
    assert resources["tokenreviews"].verbs == ["create"]
    core = {r.name: r for r in api["core"].get_api_resources().resources}
    assert core["serviceaccounts/token"].kind == "TokenRequest"
    assert core["serviceaccounts/token"].group == "authentication.k8s.io"


def test_a_token_bound_to_a_pod_carries_kubernetes_claims(api):
    answer = _request(api)
    assert answer.status.expiration_timestamp is not None
    public = (api["pki"].directory + "/" + PUBLIC_KEY_FILE)
    with open(public, "rb") as f:
        claims = jwt.decode(answer.status.token, f.read(), algorithms=["ES256"], audience="istio-ca",
                            issuer=ISSUER)
    pod = api["store"].get("Pod", NS, "ztunnel-a")
    account = api["store"].get("ServiceAccount", NS, "ztunnel")
    assert claims["sub"] == f"system:serviceaccount:{NS}:ztunnel"
    assert claims["exp"] - claims["iat"] == 600
    assert claims["kubernetes.io"]["pod"] == {"name": "ztunnel-a", "uid": pod["metadata"]["uid"]}
    assert claims["kubernetes.io"]["serviceaccount"] == {"name": "ztunnel", "uid": account["metadata"]["uid"]}
    assert claims["kubernetes.io"]["node"]["name"] == "node-0"


def test_a_review_authenticates_the_token_for_its_audience_only(api):
    token = _request(api).status.token
    status = _review(api, token)
    pod = api["store"].get("Pod", NS, "ztunnel-a")
    assert status.authenticated is True
    assert status.audiences == ["istio-ca"]
    assert status.user.username == f"system:serviceaccount:{NS}:ztunnel"
    assert status.user.extra["authentication.kubernetes.io/pod-name"] == ["ztunnel-a"]
    assert status.user.extra["authentication.kubernetes.io/pod-uid"] == [pod["metadata"]["uid"]]
    assert "system:serviceaccounts:istio-system" in status.user.groups
    wrong = _review(api, token, audiences=("https://kubernetes.default.svc.cluster.local",))
    assert wrong.authenticated is not True and "audience" in wrong.error
    forged = _review(api, token[:-4] + ("AAAA" if not token.endswith("AAAA") else "BBBB"))
    assert forged.authenticated is not True and "invalid bearer token" in forged.error


def test_the_token_dies_with_its_pod(api):
    api["store"].create(_pod("ztunnel-b", "node-0", "ztunnel"))
    token = _request(api, pod="ztunnel-b").status.token
    assert _review(api, token).authenticated is True
    _on_loop(api, lambda: api["store"].delete([_pod("ztunnel-b", "node-0", "ztunnel")]))
    status = _review(api, token)
    assert status.authenticated is not True and "no longer exists" in status.error


@pytest.mark.parametrize("kwargs, code, text", [
    ({"seconds": 60}, 422, "spec.expirationSeconds"),
    ({"pod": "nobody"}, 404, 'pods "nobody" not found'),
    ({"pod": "other"}, 400, "different serviceaccount name"),
    ({"uid": "not-the-uid"}, 409, "does not match the UID in record"),
    ({"account": "nobody"}, 404, 'serviceaccounts "nobody" not found'),
])
def test_token_requests_the_api_refuses(api, kwargs, code, text):
    with pytest.raises(ApiException) as caught:
        _request(api, **kwargs)
    assert caught.value.status == code
    assert text in json.loads(caught.value.body)["message"]
