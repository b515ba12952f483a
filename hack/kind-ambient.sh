#!/usr/bin/env bash
# Creates a kind cluster (1 control plane + 2 workers), installs Istio ambient with istioctl and
# runs the conformance suite against it with --target kubernetes.
#
#   hack/kind-ambient.sh                 # create, install, run, keep the cluster
#   CLUSTER=ac hack/kind-ambient.sh --profile AMBIENT-L4
#   hack/kind-ambient.sh --delete        # delete the kind cluster
#   hack/kind-ambient.sh --diagnostics   # kind logs and istioctl bug-report into out/diagnostics/
#
# Versions (Istio, kind node image, Gateway API CRDs) come from hack/versions.env, which the
# workflow reads too; an environment variable of the same name overrides one for a local try.
# Needs: docker, kind, kubectl, curl; istioctl is downloaded into .cache/ if the one on PATH is
# another version. Extra arguments go to `ambient-conformance run` (i.e. to pytest).
set -euo pipefail
cd "$(dirname "$0")/.."

die() { echo "kind-ambient: $*" >&2; exit 1; }

# hack/versions.env, without letting it override what the caller exported
while IFS='=' read -r key value; do
  case "$key" in ''|\#*) continue ;; esac
  [ -n "${!key:-}" ] || export "$key=$value"
done < hack/versions.env

CLUSTER=${CLUSTER:-ambient-conformance}
KUBECONFIG_PATH=${KUBECONFIG_PATH:-$PWD/out/kind-$CLUSTER.kubeconfig}
DIAGNOSTICS=${DIAGNOSTICS:-$PWD/out/diagnostics}

if [ "${1:-}" = "--delete" ]; then
  kind delete cluster --name "$CLUSTER"
  exit 0
fi

istioctl_path() {
  local found
  found=$(command -v istioctl || true)
  if [ -n "$found" ] && "$found" version --remote=false 2>/dev/null | grep -qx "client version: $ISTIO_VERSION\|$ISTIO_VERSION"; then
    echo "$found"
  else
    echo "$PWD/.cache/istio-$ISTIO_VERSION/bin/istioctl"
  fi
}

if [ "${1:-}" = "--diagnostics" ]; then
  # Best effort, every part: this runs after a failure, and each piece helps on its own.
  mkdir -p "$DIAGNOSTICS"
  kind export logs "$DIAGNOSTICS/kind-logs" --name "$CLUSTER" || echo "kind-ambient: kind export logs failed" >&2
  ISTIOCTL=$(istioctl_path)
  if [ -x "$ISTIOCTL" ]; then
    (cd "$DIAGNOSTICS" && KUBECONFIG="$KUBECONFIG_PATH" "$ISTIOCTL" bug-report --full-secrets=false \
      --timeout 5m --output-dir "$DIAGNOSTICS") || echo "kind-ambient: istioctl bug-report failed" >&2
  fi
  KUBECONFIG="$KUBECONFIG_PATH" kubectl get pods -A -o wide > "$DIAGNOSTICS/pods.txt" 2>&1 || true
  KUBECONFIG="$KUBECONFIG_PATH" kubectl get events -A --sort-by=.lastTimestamp > "$DIAGNOSTICS/events.txt" 2>&1 || true
  exit 0
fi

for tool in docker kind kubectl curl; do
  command -v "$tool" >/dev/null || die "$tool is required and not on PATH (kind: https://kind.sigs.k8s.io/docs/user/quick-start/#installation, kubectl: https://kubernetes.io/docs/tasks/tools/)"
done

mkdir -p out .cache
if ! kind get clusters 2>/dev/null | grep -qx "$CLUSTER"; then
  cat > out/kind-config.yaml <<KIND
kind: Cluster
apiVersion: kind.x-k8s.io/v1alpha4
nodes:
- role: control-plane
  image: $KIND_NODE_IMAGE
- role: worker
  image: $KIND_NODE_IMAGE
- role: worker
  image: $KIND_NODE_IMAGE
KIND
  kind create cluster --name "$CLUSTER" --config out/kind-config.yaml --wait 120s
fi
kind get kubeconfig --name "$CLUSTER" > "$KUBECONFIG_PATH"
export KUBECONFIG="$KUBECONFIG_PATH"

ISTIOCTL=$(istioctl_path)
if [ ! -x "$ISTIOCTL" ]; then
  (cd .cache && curl -fsSL https://istio.io/downloadIstio | ISTIO_VERSION="$ISTIO_VERSION" sh -)
fi
[ -x "$ISTIOCTL" ] || die "istioctl $ISTIO_VERSION is not at $ISTIOCTL after the download"
"$ISTIOCTL" version --remote=false

# Gateway API CRDs (waypoints, the seed's Gateway, the MESH-HTTP routes), then Istio's ambient profile.
kubectl apply --server-side -f \
  "https://github.com/kubernetes-sigs/gateway-api/releases/download/$GATEWAY_API_VERSION/$GATEWAY_API_CHANNEL-install.yaml"
"$ISTIOCTL" install --set profile=ambient --skip-confirmation
kubectl -n istio-system rollout status deploy/istiod --timeout=300s
kubectl -n istio-system rollout status ds/ztunnel --timeout=300s
kubectl -n istio-system rollout status ds/istio-cni-node --timeout=300s

# Preload the images the tests run, so no pod start waits on (or is rate-limited by) a registry:
# the suite's own (pinned, IfNotPresent: python -m conformance.workloads, the packet-capture pod's
# netshoot among them), the load test's locust,
# and the seed article's as written. Each is saved for the node's one platform and loaded as an
# archive: `kind load docker-image` of a multi-arch image fails with "content digest not found"
# under Docker's containerd image store (kind issue 3795, workaround in kind's known issues).
# A failed pull or load stops here, naming the image.
images="$(.venv/bin/python -m conformance.workloads)
$(.venv/bin/python -c 'from conformance.targets.base import Target; print(Target.LOCUST_IMAGE)')
$(sed -n 's/^ *\(- \)\{0,1\}image: *\([^ #]*\).*/\2/p' fixtures/seed/*.yaml | sort -u)"
platform="linux/$(docker version -f '{{.Server.Arch}}')"
save_platform=()
docker image save --help 2>/dev/null | grep -q -- '--platform' && save_platform=(--platform "$platform")
archive=$(mktemp -d)/image.tar
for image in $images; do
  docker pull -q --platform "$platform" "$image" >/dev/null || \
    die "could not pull $image for $platform (a registry rate limit? docker login, or pull it by hand and rerun)"
  docker image save "${save_platform[@]}" -o "$archive" "$image" || die "could not save $image"
  kind load image-archive "$archive" --name "$CLUSTER" || die "could not load $image into kind cluster $CLUSTER"
done
rm -f "$archive"

# SUITE=chaos: the chaos experiments instead of the conformance suite (.github/workflows/chaos-nightly.yaml)
if [ "${SUITE:-conformance}" = chaos ]; then
  exec .venv/bin/ambient-conformance chaos --target kubernetes --kubeconfig "$KUBECONFIG_PATH" "$@"
fi

# --allow-mesh-restart: this script made the cluster, so the certificate TTL test may restart
# istiod and every ztunnel (with SECRET_TTL); ALLOW_MESH_RESTART=0 for a cluster others use too.
mesh_restart=(--allow-mesh-restart)
[ "${ALLOW_MESH_RESTART:-1}" = 1 ] || mesh_restart=()
exec .venv/bin/ambient-conformance run --target kubernetes --kubeconfig "$KUBECONFIG_PATH" "${mesh_restart[@]}" \
  --implementation "istio/$ISTIO_VERSION" -n 2 --report out/conformance-report-kind.yaml \
  --junitxml out/conformance-junit-kind.xml "$@"
