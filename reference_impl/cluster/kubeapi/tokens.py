"""Service-account tokens: TokenRequest (`serviceaccounts/NAME/token`) and TokenReview
(`authentication.k8s.io/v1 tokenreviews`), as kube-apiserver serves them.

A token is a JWT signed (ES256) with the API server's own service-account key (kube-apiserver's
`--service-account-signing-key-file`), with Kubernetes' claims: `iss`, `sub`
(`system:serviceaccount:NS:NAME`), `aud`, `exp`/`iat`/`nbf`, `jti`, and `kubernetes.io` naming the
namespace, the service account and, for a token bound to a pod, the pod and its node. A review
accepts a token only while its service account and its bound pod still exist with the uids the
token names, so a token dies with its pod, as Kubernetes' bound tokens do.

The public key is written beside the private one (`sa.pub`, the `--service-account-key-file`)
for verifiers that are not API clients: the reference istiod, whose node network namespace cannot
reach the API's loopback address, checks the CA callers' tokens with it.
"""
from __future__ import annotations

import datetime as dt
import hashlib
import os
import secrets
import time

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from .status import ApiError, invalid, not_found

ISSUER = "https://kubernetes.default.svc.cluster.local"   # kind's and kubeadm's default issuer
ALGORITHM = "ES256"
DEFAULT_EXPIRATION_SECONDS = 3600
MIN_EXPIRATION_SECONDS = 600                              # Kubernetes: "at least 10 minutes"
MAX_EXPIRATION_SECONDS = 48 * 3600                        # kube-apiserver's extended-expiry cap
PRIVATE_KEY_FILE, PUBLIC_KEY_FILE = "sa.key", "sa.pub"
GROUP = "authentication.k8s.io"
PREFIX = "system:serviceaccount:"
EXTRA = "authentication.kubernetes.io/"


def _iso(seconds: float) -> str:
    return dt.datetime.fromtimestamp(int(seconds), dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


class ServiceAccountTokens:
    """Mints and reviews tokens; `lookup(kind, namespace, name)` reads the store."""

    def __init__(self, directory: str, lookup):
        self.lookup = lookup
        os.makedirs(directory, mode=0o700, exist_ok=True)
        key = ec.generate_private_key(ec.SECP256R1())
        self._key = key
        self.public_pem = key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        for name, data, mode in ((PRIVATE_KEY_FILE, key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption()), 0o600), (PUBLIC_KEY_FILE, self.public_pem, 0o644)):
            path = os.path.join(directory, name)
            fd = os.open(path + ".tmp", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            os.replace(path + ".tmp", path)

    # -- TokenRequest ---------------------------------------------------------------------------
    def request(self, namespace: str, name: str, body: dict) -> dict:
        """The TokenRequest answered (status.token, status.expirationTimestamp), or ApiError."""
        account = self.lookup("ServiceAccount", namespace, name)
        if account is None:
            raise not_found("serviceaccounts", name, "serviceaccounts")
        spec = dict(body.get("spec") or {})
        audiences = spec.get("audiences") or [ISSUER]
        seconds = spec.get("expirationSeconds")
        seconds = DEFAULT_EXPIRATION_SECONDS if seconds is None else seconds
        causes = []
        if not isinstance(audiences, list) or not all(isinstance(a, str) and a for a in audiences):
            causes.append({"reason": "FieldValueInvalid", "field": "spec.audiences",
                           "message": "Invalid value: must be a list of non-empty strings"})
        if not isinstance(seconds, int) or isinstance(seconds, bool) or seconds < MIN_EXPIRATION_SECONDS:
            causes.append({"reason": "FieldValueInvalid", "field": "spec.expirationSeconds",
                           "message": f"Invalid value: {seconds!r}: may not specify a duration "
                                      "less than 10 minutes"})
        elif seconds > 1 << 32:
            causes.append({"reason": "FieldValueInvalid", "field": "spec.expirationSeconds",
                           "message": f"Invalid value: {seconds}: may not specify a duration "
                                      "larger than 2^32 seconds"})
        if causes:
            raise invalid("TokenRequest", GROUP, name, causes)
        seconds = min(seconds, MAX_EXPIRATION_SECONDS)
        claims_k8s = {"namespace": namespace,
                      "serviceaccount": {"name": name, "uid": account["metadata"].get("uid", "")}}
        ref = spec.get("boundObjectRef")
        if ref:
            claims_k8s.update(self._bound(namespace, name, ref))
        now = int(time.time())
        claims = {"iss": ISSUER, "sub": f"{PREFIX}{namespace}:{name}", "aud": audiences,
                  "iat": now, "nbf": now, "exp": now + seconds, "jti": secrets.token_hex(16),
                  "kubernetes.io": claims_k8s}
        token = jwt.encode(claims, self._key, algorithm=ALGORITHM, headers={"kid": self.key_id})
        spec.update(audiences=audiences, expirationSeconds=seconds)
        return {"kind": "TokenRequest", "apiVersion": f"{GROUP}/v1",
                "metadata": {"name": name, "namespace": namespace,
                             "creationTimestamp": _iso(now)},
                "spec": spec, "status": {"token": token, "expirationTimestamp": _iso(now + seconds)}}

    def _bound(self, namespace: str, account: str, ref: dict) -> dict:
        kind, name = ref.get("kind"), ref.get("name")
        if kind != "Pod":
            raise invalid("TokenRequest", GROUP, account, [{
                "reason": "FieldValueNotSupported", "field": "spec.boundObjectRef.kind",
                "message": f'Unsupported value: "{kind}": supported values: "Pod"'}])
        if ref.get("apiVersion", "v1") != "v1":
            raise ApiError(400, f"cannot bind token to object of apiVersion {ref.get('apiVersion')!r}; "
                                "a Pod's is v1")
        pod = self.lookup("Pod", namespace, name or "")
        if pod is None:
            raise not_found("pods", name or "", "pods")
        uid = pod["metadata"].get("uid", "")
        if ref.get("uid") and ref["uid"] != uid:
            raise ApiError(409, f"the UID in the bound object reference ({ref['uid']}) does not match "
                                f"the UID in record ({uid}). The object might have been deleted and "
                                "then recreated", "Conflict")
        if ((pod.get("spec") or {}).get("serviceAccountName") or "default") != account:
            raise ApiError(400, f'cannot bind token for serviceaccount "{namespace}/{account}" to pod '
                                "running with different serviceaccount name.")
        out = {"pod": {"name": name, "uid": uid}}
        node_name = (pod.get("spec") or {}).get("nodeName")
        node = self.lookup("Node", "", node_name) if node_name else None
        if node is not None:
            out["node"] = {"name": node_name, "uid": node["metadata"].get("uid", "")}
        return out

    @property
    def key_id(self) -> str:
        return hashlib.sha256(self._key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)).hexdigest()[:32]

    # -- TokenReview ----------------------------------------------------------------------------
    def review(self, body: dict) -> dict:
        """The TokenReview answered: status.authenticated, user, audiences, or error."""
        spec = body.get("spec") or {}
        token, wanted = spec.get("token") or "", spec.get("audiences") or [ISSUER]
        out = {"kind": "TokenReview", "apiVersion": f"{GROUP}/v1",
               "metadata": {"creationTimestamp": None}, "spec": spec}
        try:
            status = self._authenticate(token, wanted)
        except _Refused as exc:
            status = {"authenticated": False, "user": {}, "error": str(exc)}
        out["status"] = status
        return out

    def _authenticate(self, token: str, wanted: list[str]) -> dict:
        try:
            claims = jwt.decode(token, self._key.public_key(), algorithms=[ALGORITHM], issuer=ISSUER,
                                options={"verify_aud": False, "require": ["exp", "iss", "sub"]})
        except jwt.PyJWTError as exc:
            raise _Refused(f"[invalid bearer token, {exc}]") from None
        aud = claims.get("aud") or []
        aud = [aud] if isinstance(aud, str) else list(aud)
        audiences = [a for a in wanted if a in aud]
        if not audiences:
            raise _Refused("[invalid bearer token, token audiences "
                           f"{aud} is invalid for the target audiences {wanted}]")
        info = claims.get("kubernetes.io") or {}
        namespace = info.get("namespace") or ""
        account = (info.get("serviceaccount") or {})
        if claims["sub"] != f"{PREFIX}{namespace}:{account.get('name')}":
            raise _Refused("[invalid bearer token, sub does not match the service account claims]")
        live = self.lookup("ServiceAccount", namespace, account.get("name") or "")
        if live is None or live["metadata"].get("uid") != account.get("uid"):
            raise _Refused(f"[invalid bearer token, service account {namespace}/{account.get('name')} "
                           "has been deleted or recreated]")
        extra = {f"{EXTRA}credential-id": [f"JTI={claims.get('jti', '')}"]}
        pod = info.get("pod")
        if pod:
            live_pod = self.lookup("Pod", namespace, pod.get("name") or "")
            if live_pod is None or live_pod["metadata"].get("uid") != pod.get("uid") or \
                    live_pod["metadata"].get("deletionTimestamp"):
                raise _Refused(f"[invalid bearer token, pod {namespace}/{pod.get('name')} (uid "
                               f"{pod.get('uid')}) the token is bound to no longer exists]")
            extra[f"{EXTRA}pod-name"], extra[f"{EXTRA}pod-uid"] = [pod["name"]], [pod["uid"]]
        node = info.get("node")
        if node:
            extra[f"{EXTRA}node-name"], extra[f"{EXTRA}node-uid"] = [node["name"]], [node.get("uid", "")]
        return {"authenticated": True, "audiences": audiences,
                "user": {"username": claims["sub"], "uid": account.get("uid", ""),
                         "groups": ["system:serviceaccounts", f"system:serviceaccounts:{namespace}",
                                    "system:authenticated"],
                         "extra": extra}}


class _Refused(Exception):
    pass
