#!/usr/bin/env bash
# The whole conformance suite through the `kubernetes` target (the official Python client, server-
# side apply, exec over WebSocket, the pod proxy) against a reference cluster's Kubernetes API and
# the real mesh behind it, claiming the reference target's features, so its verdicts can be
# compared with `make certify`'s. Starts its own cluster and tears it down even on failure, so it
# passes --allow-mesh-restart (the certificate TTL test restarts istiod and every ztunnel).
# Arguments go to pytest (e.g. -n 2, --profile AMBIENT-L4, -k waypoint). Run as root.
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
bin=.venv/bin
name="ktarget-$$"
trap '"$bin/python" -m reference_impl.cli cluster down --name "$name" >/dev/null 2>&1 || true' EXIT
"$bin/python" -m reference_impl.cli cluster up --name "$name" --nodes 2 >/dev/null
kubeconfig=$("$bin/python" -m reference_impl.cli cluster kubeconfig --name "$name")
features=$("$bin/python" -c 'from conformance.targets.reference import ReferenceTarget as T
print(",".join(sorted(T.SUPPORTED_FEATURES)))')
"$bin/ambient-conformance" run --target kubernetes --kubeconfig "$kubeconfig" --allow-mesh-restart \
    --supported-features "$features" --report out/conformance-report-kubernetes-target.yaml "$@"
