"""The local cluster's pure parts: store semantics, controllers, scheduler, DNS and nftables text."""
from __future__ import annotations

import re

import os

import pytest

from reference_impl.api import ManifestError
from reference_impl.cluster import controllers, dns, kubeproxy, naming
from reference_impl.cluster.errors import ClusterError
from reference_impl.cluster.store import Store

NODES = ["node-0", "node-1"]


def ns(name):
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}


def deployment(name, replicas=2, namespace="apps", labels=None, node_selector=None):
    labels = labels or {"app": name}
    spec = {"containers": [{"name": "c", "image": "sleep"}]}
    if node_selector:
        spec["nodeSelector"] = node_selector
    return {"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {"replicas": replicas, "selector": {"matchLabels": labels},
                     "template": {"metadata": {"labels": labels}, "spec": spec}}}


def service(name, namespace="apps", **spec):
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": namespace},
            "spec": {"selector": {"app": name}, "ports": [{"port": 80}], **spec}}


@pytest.fixture
def store():
    s = Store()
    s.apply([ns("apps")])
    return s


def live_pods(store, namespace="apps"):
    return [p for p in store.list("Pod", namespace) if not controllers.is_terminating(p)]


def test_apply_reports_created_unchanged_configured(store):
    assert [r["action"] for r in store.apply([deployment("web")])] == ["created"]
    assert [r["action"] for r in store.apply([deployment("web")])] == ["unchanged"]
    assert [r["action"] for r in store.apply([deployment("web", replicas=3)])] == ["configured"]
    assert store.get("Deployment", "apps", "web")["metadata"]["generation"] == 2


def test_apply_passes_on_legacy_form_warnings_and_stays_quiet_for_current_forms(store):
    legacy = {"apiVersion": "gateway.networking.k8s.io/v1beta1", "kind": "Gateway",
              "metadata": {"name": "wp", "namespace": "apps"},
              "spec": {"gatewayClassName": "istio",
                       "listeners": [{"name": "mesh", "port": 15008, "protocol": "HBONE"}]}}
    [result] = store.apply([legacy])
    assert any("istio-waypoint" in w for w in result["warnings"]), result
    current = dict(legacy, apiVersion="gateway.networking.k8s.io/v1",
                   spec=dict(legacy["spec"], gatewayClassName="istio-waypoint"))
    [result] = store.apply([current])
    assert "warnings" not in result, result


def test_apply_is_all_or_nothing(store):
    bad = deployment("broken")
    bad["spec"]["replicas"] = "three"
    with pytest.raises(ManifestError, match="document 2.*replicas"):
        store.apply([service("first"), bad])
    assert store.get("Service", "apps", "first") is None


def test_namespaced_objects_need_their_namespace(store):
    with pytest.raises(ManifestError, match="namespace 'elsewhere' does not exist"):
        store.apply([service("s", namespace="elsewhere")])
    store.apply([ns("elsewhere"), service("s", namespace="elsewhere")])  # same batch is fine


def test_a_new_pod_is_pending_at_once(store):
    """As the API server's pod strategy: status.phase is Pending from the create on, before any
    kubelet writes it (clients read the phase of the pod they just made)."""
    store.apply([{"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "namespace": "apps"},
                  "spec": {"containers": [{"name": "c", "image": "sleep"}]}}])
    assert store.get("Pod", "apps", "p")["status"] == {"phase": "Pending"}


def test_services_get_stable_cluster_ips_and_headless_stays_none(store):
    store.apply([service("a"), service("b"), service("h", clusterIP="None")])
    a = store.get("Service", "apps", "a")["spec"]["clusterIP"]
    b = store.get("Service", "apps", "b")["spec"]["clusterIP"]
    assert a != b and a.startswith("10.96.") and "10.96.0.1" not in (a, b)
    assert store.get("Service", "apps", "h")["spec"]["clusterIP"] == "None"
    store.apply([service("a", ports=[{"port": 81}])])
    assert store.get("Service", "apps", "a")["spec"]["clusterIP"] == a


def test_resource_versions_grow_and_listeners_see_every_change(store):
    events = []
    store.subscribe(lambda kind, obj: events.append((kind, obj["metadata"]["name"],
                                                     int(obj["metadata"]["resourceVersion"]))))
    store.apply([service("a")])
    store.delete([service("a")])
    assert [e[:2] for e in events] == [("ADDED", "a"), ("DELETED", "a")]
    assert events[1][2] > events[0][2]


def test_deployment_pods_are_named_labelled_and_spread(store):
    store.apply([deployment("web", replicas=4)])
    controllers.reconcile_deployments(store)
    controllers.schedule(store, NODES)
    pods = live_pods(store)
    assert len(pods) == 4
    for pod in pods:
        name, phash = pod["metadata"]["name"], pod["metadata"]["labels"]["pod-template-hash"]
        assert re.fullmatch(rf"web-{phash}-[bcdfghjklmnpqrstvwxz2456789]{{5}}", name)
        assert len(phash) == 10
        assert controllers.owner_of(pod) == ("Deployment", "web")
    assert sorted(p["spec"]["nodeName"] for p in pods) == ["node-0", "node-0", "node-1", "node-1"]


def test_a_deleted_pod_is_replaced_at_once_and_scale_down_marks_pods(store):
    store.apply([deployment("web", replicas=2)])
    controllers.reconcile_deployments(store)
    victim = live_pods(store)[0]["metadata"]["name"]
    store.mark_pod_deleted("apps", victim, 0)
    controllers.reconcile_deployments(store)
    names = {p["metadata"]["name"] for p in live_pods(store)}
    assert len(names) == 2 and victim not in names
    assert store.get("Pod", "apps", victim)["metadata"]["deletionGracePeriodSeconds"] == 0
    store.apply([deployment("web", replicas=1)])
    controllers.reconcile_deployments(store)
    assert len(live_pods(store)) == 1


def test_pods_of_a_deleted_deployment_are_collected(store):
    store.apply([deployment("web", replicas=2), deployment("keep", replicas=1)])
    controllers.reconcile_deployments(store)
    store.delete([deployment("web")])
    controllers.collect_garbage(store)
    assert [p["metadata"]["name"].split("-")[0] for p in live_pods(store)] == ["keep"]


def test_node_selector_pins_and_an_impossible_one_stays_pending(store):
    store.apply([deployment("pinned", 2, node_selector={"kubernetes.io/hostname": "node-1"}),
                 deployment("lost", 1, node_selector={"kubernetes.io/hostname": "node-7"})])
    controllers.reconcile_deployments(store)
    controllers.schedule(store, NODES)
    pinned = [p for p in live_pods(store) if p["metadata"]["name"].startswith("pinned-")]
    assert [p["spec"]["nodeName"] for p in pinned] == ["node-1", "node-1"]
    (lost,) = [p for p in live_pods(store) if p["metadata"]["name"].startswith("lost-")]
    assert "nodeName" not in lost["spec"]
    assert lost["status"]["conditions"][0]["reason"] == "Unschedulable"


def test_daemonset_gets_one_pod_per_node(store):
    ds = deployment("agent")
    ds["kind"] = "DaemonSet"
    del ds["spec"]["replicas"]
    store.apply([ds])
    for _ in range(2):  # idempotent
        controllers.reconcile_daemonsets(store, NODES)
    assert sorted(p["spec"]["nodeName"] for p in live_pods(store)) == NODES


def test_hosts_file_lists_every_name_form_and_short_names_only_locally():
    text = dns.render_hosts([("web", "apps", ["10.96.0.5"]), ("db", "other", ["10.244.1.7",
                                                                             "10.244.0.9"])],
                            "apps", ("10.244.0.3", "me"))
    lines = text.splitlines()
    assert "10.96.0.5\tweb.apps.svc.cluster.local web.apps.svc web.apps web" in lines
    assert "10.244.1.7\tdb.other.svc.cluster.local db.other.svc db.other" in lines
    assert "10.244.0.9\tdb.other.svc.cluster.local db.other.svc db.other" in lines
    assert "10.244.0.3\tme" in lines
    assert "search apps.svc.cluster.local svc.cluster.local cluster.local" in dns.render_resolv("apps")


def test_dns_files_are_rewritten_in_place(tmp_path):
    path = tmp_path / "hosts"
    assert dns.write_in_place(str(path), "a\n")
    inode = path.stat().st_ino
    assert not dns.write_in_place(str(path), "a\n")
    assert dns.write_in_place(str(path), "b\n")
    assert path.stat().st_ino == inode and path.read_text() == "b\n"


def test_kube_proxy_rules_spread_over_endpoints_and_reject_empty_services():
    text = kubeproxy.render([
        kubeproxy.ServicePort("10.96.0.5", 8000, "tcp", (("10.244.0.2", 80), ("10.244.1.2", 80))),
        kubeproxy.ServicePort("10.96.0.6", 80, "tcp", ()),
    ])
    assert "ip daddr 10.96.0.5 tcp dport 8000 jump svc0" in text
    assert "numgen random mod 2 vmap { 0 : jump svc0ep0, 1 : jump svc0ep1 }" in text
    assert "meta l4proto tcp dnat ip to 10.244.1.2:80" in text
    assert "ip daddr 10.96.0.6 tcp dport 80 reject with tcp reset" in text
    assert text.startswith(f"table ip {kubeproxy.TABLE} {{}}\ndelete table ip {kubeproxy.TABLE}\n")


def test_cluster_names_and_namespace_patterns():
    assert naming.check_name("tc-gw0-seed") == "tc-gw0-seed"
    for bad in ("", "Upper", "9lives", "x" * 33, "a_b"):
        with pytest.raises(ClusterError):
            naming.check_name(bad)
    pattern = naming.netns_pattern("a")
    assert pattern.match("ac-a-node-0") and pattern.match("ac-a-p12") and pattern.match("ac-a-fabric")
    assert not pattern.match("ac-a-b-node-0")  # cluster "a-b" is someone else
    assert naming.ANY_CLUSTER_NETNS.match("ac-tc-gw0-seed-p3").group(1) == "tc-gw0-seed"


def test_run_scoped_names_carry_their_owner_so_two_runs_never_share_a_cluster(monkeypatch):
    monkeypatch.setenv(naming.RUN_OWNER_ENV, "4194303")
    first = naming.run_scoped_name("cf", "gw0")
    monkeypatch.setenv(naming.RUN_OWNER_ENV, "4194302")
    second = naming.run_scoped_name("cf", "gw0")
    assert first == "cf-2hwcf-gw0" and second != first
    assert naming.run_owner_of(first) == 4194303 and naming.run_owner_of("ambient") is None
    assert naming.run_scoped_name("tc", "", "seed") == "tc-2hwce-seed"
    with pytest.raises(ClusterError, match="1-32 characters"):
        naming.run_scoped_name("tm", "gw1", "x" * 30)


def test_sweep_downs_only_clusters_whose_owner_is_gone_and_not_kept(monkeypatch, tmp_path):
    from reference_impl.cluster import client, teardown
    monkeypatch.setattr(naming, "RUN_ROOT", str(tmp_path))
    monkeypatch.setenv(naming.RUN_OWNER_ENV, str(os.getpid()))
    dead = 4194303  # above any pid this kernel hands out by default
    names = {"mine": naming.run_scoped_name("cf", "gw0"), "alive": f"tc-{naming._base36(1)}-gw0-seed",
             "dead": f"cf-{naming._base36(dead)}-gw1", "kept": f"tm-{naming._base36(dead)}-gw0-ca",
             "other": "ambient"}
    monkeypatch.setattr(teardown, "known_clusters", lambda: sorted(names.values()))
    downed = []
    monkeypatch.setattr(client, "down", lambda name, timeout=20: downed.append(name))
    os.makedirs(naming.run_dir(names["kept"]))
    client.keep(names["kept"])
    assert client.sweep_abandoned() == [names["dead"]] == downed


def test_httpbin_image_without_its_environment_says_how_to_install_it(monkeypatch, tmp_path):
    from reference_impl.apps import images
    monkeypatch.setenv("AC_HTTPBIN_VENV", str(tmp_path / "missing"))
    with pytest.raises(images.ImageError, match=r"missing/bin/gunicorn; run `make setup`"):
        images.command_for("docker.io/kennethreitz/httpbin", {"ports": [{"containerPort": 80}]}, "ns/p")


def test_unknown_image_lists_the_known_ones_and_where_to_add_one():
    from reference_impl.apps import images
    with pytest.raises(images.ImageError, match=r"known images: .*add a mapping in reference_impl/apps/images.py"):
        images.command_for("example.com/nope:1", {}, "ns/p")
