"""The `kubernetes` target: any cluster reachable from a kubeconfig, with a mesh installed.

Everything goes through the official `kubernetes` client: objects (core kinds and the Istio /
Gateway API CRDs alike) through the dynamic client with server-side apply, pods and exec through
CoreV1Api and the stream API (`kubernetes.stream.stream`), ztunnel metrics through the pod proxy.
"""
from __future__ import annotations

import json
import os
import re

from conformance import features as registry
from conformance import manifests as mf
from conformance.targets.base import Capture, ExecResult, Info, NotSupported, Pod, PodRef, Target, TargetError, Usage
from conformance.targets.base import selector_matches, wait_until

FIELD_MANAGER = "ambient-conformance"
ZTUNNEL_METRICS_PORT = 15020


def _selector(labels: dict | None) -> str | None:
    return ",".join(f"{k}={v}" for k, v in (labels or {}).items()) or None


class KubernetesTarget(Target):
    name = "kubernetes"
    #: what a mesh on a real cluster is assumed to support. Override with --supported-features.
    #: Packet capture on the node link (MeshMutualTLSOnTheWire) is a hostNetwork tcpdump pod of the
    #: suite's own (kube_capture.py); the CA is asked as a ztunnel asks it, over gRPC with a token
    #: bound to the ztunnel pod (`request_certificate_as_node_proxy`). Not here: restarting istiod and
    #: every ztunnel with a new certificate TTL (WorkloadCertificateRenewal), only with
    #: --allow-mesh-restart (`supported_features`, `set_workload_certificate_ttl`). Nor
    #: L4AuthorizationServiceAccounts: the field is Istio 1.25's (the kind workflows default to 1.24),
    #: and 1.25.0-1.29.1 fail it by design (CVE-2026-39350); claim it with --supported-features
    SUPPORTED_FEATURES = frozenset(f.name for f in registry.features_in("AMBIENT-L4")
                                   if f.name not in ("WorkloadCertificateRenewal",
                                                     "L4AuthorizationServiceAccounts")) | {
        # -- waypoints: provisioning, binding, policy attachment, availability (issue 9): plain
        # Gateway API / Istio objects, pod deletes and Deployment scales, which any cluster has
        "WaypointProvisioning", "WaypointBindingLabels", "WaypointBogusUseWaypoint", "WaypointForWorkload",
        "WaypointCrossNamespace", "WaypointPolicyTargetRefsGateway", "WaypointSelectorPolicyAtZtunnel",
        "WaypointPolicyGatewayClass", "WaypointPolicyServiceAttached", "WaypointUnavailableNoFallback",
        "WaypointReplicaLoss",
        # -- protocols and bad input at the waypoint (issue 9); not WaypointSlowHeadersCutOff:
        # Istio configures no request-headers timeout on its waypoints by default --
        "WaypointHTTP2PriorKnowledge", "WaypointWebSocketUpgrade", "WaypointTCPPassthrough",
        "WaypointUndeclaredPortSniffing", "WaypointRejectsMalformedHTTP", "WaypointConnectionCloseEndsCleanly",
        "WaypointStreamsResponses", "WaypointRemovesHopByHopHeaders", "WaypointHTTP1Framing",
        # -- sidecar interop (issue 11): the seed's Step 2 reads the sidecar's Envoy metrics
        "SeedWalkthroughSidecar",
        # -- the seed's Step 3 and L7 step (issue 17): as written they end in the article's
        # error on Istio, as corrected they must pass
        "SeedWalkthroughWaypoint", "SeedWalkthroughL7"}

    def __init__(self, kubeconfig: str | None = None, context: str | None = None, api_client=None):
        self.kubeconfig = kubeconfig
        self.context = context
        self._api = api_client

    @classmethod
    def from_options(cls, config, worker: str) -> "KubernetesTarget":
        return cls(kubeconfig=config.getoption("kubeconfig"), context=config.getoption("context"))

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self) -> None:
        from kubernetes import client, config, dynamic
        from kubernetes.config.config_exception import ConfigException
        if self._api is None:
            try:
                self._api = config.new_client_from_config(config_file=self.kubeconfig, context=self.context)
            except (ConfigException, OSError) as e:
                raise TargetError(f"cannot load kubeconfig {self.kubeconfig or '(default)'}"
                                  f"{' context ' + self.context if self.context else ''}: {e}") from None
        self.core = client.CoreV1Api(self._api)
        self.apps = client.AppsV1Api(self._api)
        try:
            self.dynamic = dynamic.DynamicClient(self._api)
        except Exception as e:  # urllib3 / ApiException: the cluster is not reachable
            raise TargetError(f"the Kubernetes API server at {self._api.configuration.host} is not "
                              f"reachable ({type(e).__name__}: {str(e).splitlines()[0][:200]}); check "
                              "--kubeconfig/--context") from None

    def info(self) -> Info:
        try:
            dep = self.apps.read_namespaced_deployment("istiod", self.MESH_NAMESPACE)
            image = dep.spec.template.spec.containers[0].image
            return Info("istio", image.rsplit(":", 1)[-1] if ":" in image else "unknown")
        except Exception:  # any mesh, not necessarily Istio: the user declares it instead
            return Info("unknown", "unknown")

    # -- objects -----------------------------------------------------------------------------
    def _resource(self, obj: dict):
        from kubernetes.dynamic.exceptions import ResourceNotFoundError
        try:
            return self.dynamic.resources.get(api_version=obj["apiVersion"], kind=obj["kind"])
        except ResourceNotFoundError:
            raise TargetError(f"{obj['kind']} {obj['metadata']['name']}: the cluster does not serve "
                              f"{obj['apiVersion']} {obj['kind']}; install its CRD (is the mesh installed?)") from None

    def apply(self, manifests) -> None:
        from kubernetes.client.exceptions import ApiException
        for obj in mf.load(manifests):
            resource = self._resource(obj)
            kind, ns, name = mf.ref(obj)
            try:
                resource.server_side_apply(body=obj, name=name, namespace=ns or None,
                                           field_manager=FIELD_MANAGER, force_conflicts=True)
            except ApiException as e:
                raise TargetError(f"apply {kind} {ns + '/' if ns else ''}{name}: {_reason(e)}") from None

    def delete(self, manifests) -> None:
        from kubernetes.client.exceptions import ApiException
        for obj in mf.load(manifests):
            kind, ns, name = mf.ref(obj)
            try:
                self._resource(obj).delete(name=name, namespace=ns or None)
            except ApiException as e:
                if e.status != 404:
                    raise TargetError(f"delete {kind} {ns + '/' if ns else ''}{name}: {_reason(e)}") from None

    #: how long a deleted namespace may stay Terminating (its pods' grace periods, finalizers)
    NAMESPACE_GONE_SECONDS = 180

    def delete_namespace(self, namespace: str) -> None:
        """Delete the namespace and return once the API server no longer has it: a real cluster
        keeps it Terminating while its pods stop, and a second run that recreates the same
        namespace meanwhile (the seed's fixed `ambient-apps`) is refused with 403 "being
        terminated"."""
        from kubernetes.client.exceptions import ApiException
        try:
            self.core.delete_namespace(namespace)
        except ApiException as e:
            if e.status == 404:
                return
            raise TargetError(f"delete namespace {namespace}: {_reason(e)}") from None
        last: list = []

        def gone() -> bool:
            try:
                last[:] = [self.core.read_namespace(namespace)]
            except ApiException as e:
                if e.status == 404:
                    return True
                raise TargetError(f"delete namespace {namespace}: {_reason(e)}") from None
            return False
        try:
            wait_until(gone, self.NAMESPACE_GONE_SECONDS, 1.0, f"namespace {namespace} to be deleted")
        except TargetError:
            status = last[0].status if last else None
            why = "; ".join(f"{c.type}: {c.message}" for c in (status.conditions or []) if c.message) \
                if status else ""
            raise TargetError(f"namespace {namespace} is still {getattr(status, 'phase', None) or 'there'} "
                              f"{self.NAMESPACE_GONE_SECONDS}s after deleting it{': ' + why if why else ''}; "
                              "look for pods that do not stop or finalizers no controller removes") from None

    def get(self, kind, namespace, name):
        from kubernetes.client.exceptions import ApiException
        from kubernetes.dynamic.exceptions import ResourceNotFoundError
        from kubernetes.dynamic.resource import ResourceList
        try:
            # Any served version will do for reading (a CRD may serve v1 and v1beta1).
            found = [r for r in self.dynamic.resources.search(kind=kind) if not isinstance(r, ResourceList)]
            if not found:
                raise TargetError(f"get {kind} {name}: the cluster does not serve kind {kind}")
            return found[0].get(name=name, namespace=namespace or None).to_dict()
        except (ApiException, ResourceNotFoundError) as e:
            if getattr(e, "status", 404) == 404:
                return None
            raise TargetError(f"get {kind} {name}: {_reason(e)}") from None

    def label_namespace(self, namespace, labels) -> None:
        # A merge patch: a null value removes the label.
        self.core.patch_namespace(namespace, {"metadata": {"labels": dict(labels)}})

    def wait_ready(self, namespace=None, timeout=120) -> None:
        wait_until(lambda: self._ready(namespace), timeout, 1.0,
                   f"the Deployments and pods of namespace {namespace or '(all)'} to become Ready")

    def _ready(self, namespace) -> bool:
        deployments = (self.apps.list_namespaced_deployment(namespace) if namespace
                       else self.apps.list_deployment_for_all_namespaces()).items
        for d in deployments:
            want = d.spec.replicas if d.spec.replicas is not None else 1
            status = d.status
            if status is None:   # just created: no controller has looked at it yet
                return False
            if (status.observed_generation or 0) < (d.metadata.generation or 0):
                return False
            if (status.available_replicas or 0) < want or (status.updated_replicas or 0) < want:
                return False
        return all(p.ready or p.phase == "Succeeded" for p in (self.pods(namespace) if namespace else []))

    # -- pods and nodes ----------------------------------------------------------------------
    def pods(self, namespace, selector=None) -> list[Pod]:
        items = self.core.list_namespaced_pod(namespace, label_selector=_selector(selector)).items
        result = []
        for p in items:
            if p.metadata.deletion_timestamp or not selector_matches(p.metadata.labels or {}, selector):
                continue
            statuses = p.status.container_statuses or []
            conditions = p.status.conditions or []
            result.append(Pod(
                namespace=p.metadata.namespace, name=p.metadata.name, node=p.spec.node_name or "",
                ip=p.status.pod_ip or "", uid=p.metadata.uid or "", labels=dict(p.metadata.labels or {}),
                containers=tuple(c.name for c in p.spec.containers),
                restarts=sum(s.restart_count or 0 for s in statuses),
                ready=p.status.phase == "Running" and any(c.type == "Ready" and c.status == "True"
                                                         for c in conditions),
                phase=p.status.phase or ""))
        return sorted(result, key=lambda p: p.name)

    def nodes(self) -> list[str]:
        names = []
        for n in self.core.list_node().items:
            taints = n.spec.taints or []
            if any(t.effect == "NoSchedule" for t in taints) or n.spec.unschedulable:
                continue  # e.g. kind's control-plane node: test workloads cannot run there
            names.append(n.metadata.name)
        return sorted(names)

    def pod_node(self, pod: PodRef) -> str:
        return self.core.read_namespaced_pod(pod.name, pod.namespace).spec.node_name or ""

    def exec(self, pod: PodRef, argv, timeout=30, container: str | None = None) -> ExecResult:
        from kubernetes import client
        # Each exec on an ApiClient of its own (issues 14 and 17): `kubernetes.stream` swaps the
        # client's call_api for a WebSocket one while the handshake runs and puts back what it
        # found, so on a shared client a request from another thread (metrics, listing pods) is
        # sent as a WebSocket handshake ("Handshake status 200"), and two execs at once can leave
        # each other's WebSocket call_api in place.
        exec_api = client.ApiClient(self._api.configuration)
        try:
            return self._exec(client.CoreV1Api(exec_api), pod, argv, timeout, container)
        finally:
            exec_api.close()

    def _exec(self, exec_core, pod: PodRef, argv, timeout, container) -> ExecResult:
        from kubernetes.client.exceptions import ApiException
        from kubernetes.stream import stream
        try:
            spec = self.core.read_namespaced_pod(pod.name, pod.namespace)
            annotations = spec.metadata.annotations or {}
            container = container or annotations.get("kubectl.kubernetes.io/default-container") \
                or spec.spec.containers[0].name
            ws = stream(exec_core.connect_get_namespaced_pod_exec, pod.name, pod.namespace,
                        command=list(argv), container=container, stdin=False, stdout=True,
                        stderr=True, tty=False, _preload_content=False)
        except ApiException as e:
            raise TargetError(f"exec in pod {pod.namespace}/{pod.name}: {_reason(e)}") from None
        try:
            ws.run_forever(timeout=timeout)
            if ws.is_open():
                raise TargetError(f"exec in pod {pod.namespace}/{pod.name} took longer than {timeout:g}s: "
                                  f"{' '.join(argv)[:200]}")
            stdout, stderr = ws.read_stdout(timeout=0) or "", ws.read_stderr(timeout=0) or ""
            code = ws.returncode
        finally:
            ws.close()
        return ExecResult(code if code is not None else -1, stdout, stderr)

    # -- sidecar interop (issue 11) ----------------------------------------------------------
    #: Envoy's own Prometheus port on every Istio sidecar (containerPort `http-envoy-prom`)
    SIDECAR_METRICS_PORT = 15090

    def sidecar_metrics(self, pod: PodRef) -> str:
        # through the API server's pod proxy, as for ztunnel: no exec, no tool in the proxy's image
        from kubernetes.client.exceptions import ApiException
        try:
            return _text(self.core.connect_get_namespaced_pod_proxy_with_path(
                f"{pod.name}:{self.SIDECAR_METRICS_PORT}", pod.namespace, "stats/prometheus",
                _preload_content=False))
        except ApiException as e:
            raise TargetError(f"could not read the sidecar metrics of pod {pod.namespace}/{pod.name} "
                              f"(port {self.SIDECAR_METRICS_PORT} /stats/prometheus): {_reason(e)}") from None

    def delete_pod(self, pod: PodRef, grace_period=None) -> None:
        from kubernetes.client.exceptions import ApiException
        try:
            self.core.delete_namespaced_pod(pod.name, pod.namespace, grace_period_seconds=grace_period)
        except ApiException as e:
            if e.status != 404:
                raise TargetError(f"delete pod {pod.namespace}/{pod.name}: {_reason(e)}") from None

    def scale(self, namespace, deployment, replicas) -> None:
        self.apps.patch_namespaced_deployment_scale(deployment, namespace, {"spec": {"replicas": replicas}})

    # -- waypoints (issue 9) -------------------------------------------------------------------
    def scale_waypoint(self, namespace, gateway, replicas) -> None:
        from kubernetes.client.exceptions import ApiException
        try:
            self.scale(namespace, gateway, replicas)
        except ApiException as e:
            raise TargetError(f"scale waypoint {namespace}/{gateway}: its Deployment (named after the Gateway, as "
                              f"Istio provisions it) could not be scaled: {_reason(e)}") from None

    def label(self, kind, namespace, name, labels) -> None:
        from kubernetes.client.exceptions import ApiException
        api_version = {"Service": "v1", "Pod": "v1"}.get(kind)
        if api_version is None:
            raise NotSupported(f"the kubernetes target labels Services and Pods, not {kind}")
        resource = self._resource({"apiVersion": api_version, "kind": kind, "metadata": {"name": name}})
        try:
            # A JSON merge patch: a null value removes the label.
            resource.patch(body={"metadata": {"labels": dict(labels)}}, name=name, namespace=namespace,
                           content_type="application/merge-patch+json")
        except ApiException as e:
            raise TargetError(f"label {kind} {namespace}/{name}: {_reason(e)}") from None

    # -- the mesh ----------------------------------------------------------------------------
    def metrics(self, node: str) -> str:
        from kubernetes.client.exceptions import ApiException
        zt = self.ztunnel_pod(node)
        try:
            return _text(self.core.connect_get_namespaced_pod_proxy_with_path(
                f"{zt.name}:{ZTUNNEL_METRICS_PORT}", zt.namespace, "metrics", _preload_content=False))
        except ApiException as e:
            raise TargetError(f"ztunnel metrics of {zt.namespace}/{zt.name}: {_reason(e)}") from None

    # -- adversarial probes (issue 10) -------------------------------------------------------
    #: Istio publishes its root certificate to every namespace in this ConfigMap
    ROOT_CERT_CONFIGMAP = ("istio-ca-root-cert", "root-cert.pem")

    def mesh_trust_anchors(self) -> str:
        from kubernetes.client.exceptions import ApiException
        name, key = self.ROOT_CERT_CONFIGMAP
        try:
            data = self.core.read_namespaced_config_map(name, self.MESH_NAMESPACE).data or {}
        except ApiException as e:
            raise NotSupported(f"the mesh publishes no root certificate in ConfigMap "
                               f"{self.MESH_NAMESPACE}/{name} ({_reason(e)})") from None
        if key not in data:
            raise NotSupported(f"ConfigMap {self.MESH_NAMESPACE}/{name} has no {key}")
        return data[key]

    # -- the mesh CA's own signature (issue 14 item 5) -----------------------------------------
    def sign_workload_certificate(self, spiffe_id, public_key_pem, not_before, not_after) -> str:
        """Signed with the CA istiod keeps in its Secret (a plugged-in `cacerts` first, else the
        self-signed `istio-ca-secret`), which a suite run with cluster-admin can read."""
        from kubernetes.client.exceptions import ApiException
        from conformance.targets.mesh_ca import CA_SECRETS, MeshCA, MeshCAError
        refused = []
        for name in CA_SECRETS:
            where = f"Secret {self.MESH_NAMESPACE}/{name}"
            try:
                secret = self.core.read_namespaced_secret(name, self.MESH_NAMESPACE)
            except ApiException as e:
                if e.status not in (403, 404):
                    raise TargetError(f"read {where}: {_reason(e)}") from None
                refused.append(f"{where}: {e.status} {_reason(e)}")
                continue
            try:
                return MeshCA.from_secret_data(secret.data, where).sign(
                    spiffe_id, public_key_pem, not_before, not_after)
            except MeshCAError as e:
                raise TargetError(str(e)) from None
        raise NotSupported(
            "the mesh CA's key is not readable (" + "; ".join(refused) + "): a CA signature of the "
            "suite's choosing needs `get` on secrets in " + self.MESH_NAMESPACE + " (cluster-admin), "
            "and a mesh CA that keeps its key in one of those Secrets")

    # -- the mesh CA as a ztunnel asks it (issue 14 item 5; istio_ca_grpc.py) ------------------
    #: namespaces of the suite's own for the CA probe pod, one per call (not ambient: its calls are
    #: not captured; not shared: two workers asking at once must not delete each other's)
    CA_PROBE_NAMESPACE = "ac-ca-probe"

    def request_certificate_as_node_proxy(self, node, spiffe_ids):
        """Istio's shape: a token of the ztunnel's own service account, audience istio-ca, bound
        to the ztunnel pod on `node` (TokenRequest), sent by a probe pod inside the cluster with
        one CreateCertificate call per identity to istiod's 15012 (ImpersonatedIdentity)."""
        from kubernetes import client
        from kubernetes.client.exceptions import ApiException
        from conformance.targets import istio_ca_grpc as ca
        zt = self.ztunnel_pod(node)
        account = self.core.read_namespaced_pod(zt.name, zt.namespace).spec.service_account_name or "default"
        body = client.AuthenticationV1TokenRequest(spec=client.V1TokenRequestSpec(
            audiences=[ca.TOKEN_AUDIENCE], expiration_seconds=600,
            bound_object_ref=client.V1BoundObjectReference(kind="Pod", api_version="v1", name=zt.name, uid=zt.uid)))
        try:
            token = self.core.create_namespaced_service_account_token(account, zt.namespace, body).status.token
        except ApiException as e:
            if e.status in (403, 404, 405):
                raise NotSupported(f"the API server refused a TokenRequest for ServiceAccount {zt.namespace}/"
                                   f"{account} bound to pod {zt.name} ({e.status} {_reason(e)}): asking the CA with "
                                   "the ztunnel's own token needs `create serviceaccounts/token`") from None
            raise TargetError(f"TokenRequest for {zt.namespace}/{account}: {_reason(e)}") from None
        istiods = [p for p in self.pods(self.MESH_NAMESPACE, {"app": "istiod"}) if p.ready and p.ip]
        if not istiods:
            raise NotSupported(f"no Ready istiod pod (label app=istiod) in {self.MESH_NAMESPACE} to ask on "
                               f":{ca.PORT}")
        root = self.mesh_trust_anchors()
        import secrets
        namespace, name = f"{self.CA_PROBE_NAMESPACE}-{secrets.token_hex(3)}", "ca-probe"
        self.apply([{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}}]
                   + self.probe_manifests(namespace, name, None, ca.probe_scripts()))
        try:
            self.wait_ready(namespace, timeout=120)
            probe = self.pods(namespace, {"app": name})[0]
            result = self.run_probe(probe, ca.PROBE_SCRIPT,
                                    [ca.probe_spec(istiods[0].ip, root, token, spiffe_ids)],
                                    timeout=15 * len(spiffe_ids) + 30)
            if result.returncode != 0:
                raise TargetError(f"the CA probe in {namespace}/{probe.name} exited {result.returncode}: "
                                  f"{result.stderr.strip()[-400:]}")
            return ca.answers_from(result.stdout, spiffe_ids, f"pod {namespace}/{probe.name}")
        finally:
            self.delete_namespace(namespace)

    # -- packet capture and the workload certificate TTL (issue 14 item 5) ---------------------
    def capture(self, node: str, bpf_filter: str) -> Capture:
        # tcpdump in a hostNetwork pod of the suite's own on `node` (kube_capture.py)
        from conformance.targets.kube_capture import PodCapture
        return PodCapture(self, node, bpf_filter)

    #: the opt-in to restarting the mesh: `ambient-conformance run --allow-mesh-restart` sets it
    MESH_RESTART_ENV = "AC_ALLOW_MESH_RESTART"

    @classmethod
    def mesh_restart_allowed(cls) -> bool:
        return os.environ.get(cls.MESH_RESTART_ENV, "").lower() in ("1", "true", "yes")

    @classmethod
    def supported_features(cls) -> frozenset[str]:
        if cls.mesh_restart_allowed():
            return cls.SUPPORTED_FEATURES | {"WorkloadCertificateRenewal"}
        return cls.SUPPORTED_FEATURES

    def set_workload_certificate_ttl(self, seconds):
        """Istio's ztunnel asks for the lifetime in its SECRET_TTL, which istiod grants up to
        MAX_WORKLOAD_CERT_TTL (DEFAULT_WORKLOAD_CERT_TTL is for requests naming none): both the
        istiod Deployment's and the ztunnel DaemonSet's env are patched and rolled out
        (kube_cert_ttl.py), so only with the user's leave."""
        if not self.mesh_restart_allowed():
            raise NotSupported(
                "a short workload certificate TTL on Istio means restarting istiod (DEFAULT_WORKLOAD_CERT_TTL) "
                "and every ztunnel (SECRET_TTL, the lifetime it asks for), which this target does only when "
                f"told it may: `ambient-conformance run --allow-mesh-restart` (or {self.MESH_RESTART_ENV}=1)")
        from conformance.targets.kube_cert_ttl import CertificateTTL
        if getattr(self, "_cert_ttl", None) is None:
            self._cert_ttl = CertificateTTL(self.apps, self.core, self.MESH_NAMESPACE)
        self._cert_ttl.set(seconds)


    # -- load tests (issue 13, load/) --------------------------------------------------------
    def pod_usage(self, pods, container=None) -> dict:
        """From each node's kubelet resource metrics (through the API server's node proxy):
        container_cpu_usage_seconds_total and container_memory_working_set_bytes, summed per pod."""
        from kubernetes.client.exceptions import ApiException
        from prometheus_client.parser import text_string_to_metric_families
        wanted = {(p.namespace, p.name): p for p in pods}
        by_node: dict[str, list] = {}
        for p in pods:
            by_node.setdefault(self.pod_node(p), []).append(p)
        cpu: dict = {}
        rss: dict = {}
        for node in by_node:
            try:
                text = self.core.connect_get_node_proxy_with_path(node, "metrics/resource")
            except ApiException as e:
                raise TargetError(f"kubelet resource metrics of node {node}: {_reason(e)}") from None
            for family in text_string_to_metric_families(text):
                for sample in family.samples:
                    key = (sample.labels.get("namespace"), sample.labels.get("pod"))
                    if key not in wanted or not sample.labels.get("container") or \
                            container not in (None, sample.labels["container"]):
                        continue
                    if sample.name == "container_cpu_usage_seconds_total":
                        cpu[key] = cpu.get(key, 0.0) + sample.value
                    elif sample.name == "container_memory_working_set_bytes":
                        rss[key] = rss.get(key, 0) + int(sample.value)
        return {ref: Usage(cpu.get(key, 0.0), rss.get(key, 0)) for key, ref in wanted.items()}


def _text(response) -> str:
    """The body of a proxied answer (pods/proxy, nodes/proxy), whatever its Content-Type. The
    client deserializes only JSON and text/*, and raises ApiException(0, "Unsupported content
    type") for ztunnel's `application/openmetrics-text;charset=utf-8;version=1.0.0`, so the raw
    body is read (`_preload_content=False`) and decoded by its own charset."""
    try:
        content_type = response.headers.get("content-type") or ""
        charset = re.search(r"charset=([\w.-]+)", content_type, re.IGNORECASE)
        try:
            return response.data.decode(charset.group(1) if charset else "utf-8", errors="replace")
        except LookupError:  # a charset Python does not know
            return response.data.decode("utf-8", errors="replace")
    finally:
        response.release_conn()


def _reason(e) -> str:
    body = getattr(e, "body", None)
    if body:
        try:
            return json.loads(body).get("message") or str(body)[:300]
        except (ValueError, AttributeError):
            return str(body)[:300]
    return f"{getattr(e, 'status', '')} {getattr(e, 'reason', e)}".strip()
