#!/usr/bin/env bash
# Creates a kind cluster (1 control plane + 2 workers), installs Istio ambient with istioctl and
# runs the conformance suite against it with --target kubernetes.
#
#   hack/kind-ambient.sh                 # create, install, run, keep the cluster
#   CLUSTER=ac ISTIO_VERSION=1.24.2 hack/kind-ambient.sh --profile AMBIENT-L4
#   hack/kind-ambient.sh --delete        # delete the kind cluster
#
# Needs: docker, kind, curl; istioctl is downloaded into .cache/ if not on PATH. Extra arguments
# go to `ambient-conformance run` (i.e. to pytest).
set -euo pipefail
cd "$(dirname "$0")/.."

CLUSTER=${CLUSTER:-ambient-conformance}
ISTIO_VERSION=${ISTIO_VERSION:-1.24.2}
KUBECONFIG_PATH=${KUBECONFIG_PATH:-$PWD/out/kind-$CLUSTER.kubeconfig}

die() { echo "kind-ambient: $*" >&2; exit 1; }

if [ "${1:-}" = "--delete" ]; then
  kind delete cluster --name "$CLUSTER"
  exit 0
fi

command -v docker >/dev/null || die "docker is required (kind runs nodes as containers)"
command -v kind >/dev/null || die "kind is required: https://kind.sigs.k8s.io/docs/user/quick-start/#installation"

mkdir -p out .cache
if ! kind get clusters 2>/dev/null | grep -qx "$CLUSTER"; then
  cat > out/kind-config.yaml <<KIND
kind: Cluster
apiVersion: kind.x-k8s.io/v1alpha4
nodes:
- role: control-plane
- role: worker
- role: worker
KIND
  kind create cluster --name "$CLUSTER" --config out/kind-config.yaml --wait 120s
fi
kind get kubeconfig --name "$CLUSTER" > "$KUBECONFIG_PATH"
export KUBECONFIG="$KUBECONFIG_PATH"

ISTIOCTL=$(command -v istioctl || true)
if [ -z "$ISTIOCTL" ] || ! "$ISTIOCTL" version --remote=false 2>/dev/null | grep -q "$ISTIO_VERSION"; then
  if [ ! -x ".cache/istio-$ISTIO_VERSION/bin/istioctl" ]; then
    (cd .cache && curl -sSL https://istio.io/downloadIstio | ISTIO_VERSION="$ISTIO_VERSION" sh -)
  fi
  ISTIOCTL=$PWD/.cache/istio-$ISTIO_VERSION/bin/istioctl
fi

# Gateway API CRDs (waypoints and the seed's Gateway), then Istio's ambient profile.
kubectl get crd gateways.gateway.networking.k8s.io >/dev/null 2>&1 || \
  kubectl apply -f https://github.com/kubernetes-sigs/gateway-api/releases/download/v1.2.1/standard-install.yaml
"$ISTIOCTL" install --set profile=ambient --skip-confirmation
kubectl -n istio-system rollout status deploy/istiod --timeout=300s
kubectl -n istio-system rollout status ds/ztunnel --timeout=300s
kubectl -n istio-system rollout status ds/istio-cni-node --timeout=300s

# Pre-pull the suite's images so the first tests do not spend their readiness bound pulling.
for image in docker.io/kennethreitz/httpbin curlimages/curl python:3.11-slim; do
  docker pull -q "$image" >/dev/null && kind load docker-image "$image" --name "$CLUSTER" >/dev/null || true
done

# SUITE=chaos: the chaos experiments instead of the conformance suite (.github/workflows/chaos-nightly.yaml)
if [ "${SUITE:-conformance}" = chaos ]; then
  exec .venv/bin/ambient-conformance chaos --target kubernetes --kubeconfig "$KUBECONFIG_PATH" "$@"
fi

exec .venv/bin/ambient-conformance run --target kubernetes --kubeconfig "$KUBECONFIG_PATH" \
  --implementation "istio/$ISTIO_VERSION" -n 2 --report out/conformance-report-kind.yaml \
  --junitxml out/conformance-junit-kind.xml "$@"
