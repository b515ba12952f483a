PY := .venv/bin/python
PYTEST := .venv/bin/pytest
N ?= 2

.PHONY: setup test unit certify certify-kubernetes mutants bench load chaos clean

setup:
	@bash scripts/setup.sh

# The project's own tests: unit tables, then integration tests on real local clusters.
test: setup
	$(PYTEST) -n $(N) -q tests

unit: setup
	$(PYTEST) -q tests/unit

# The conformance suite against the embedded reference cluster; prints the report.
certify: setup
	.venv/bin/ambient-conformance run -n $(N) --report out/conformance-report.yaml

# The same suite through the `kubernetes` target (the official client) against a reference cluster's
# own Kubernetes API; its verdicts must match `certify`'s (serial: the seed uses fixed namespaces).
certify-kubernetes: setup
	bash scripts/certify-kubernetes-target.sh -q

# The suite's kill rate: each realistic bug of scripts/mutants/catalog.py against `certify` (~15 min).
mutants: setup
	bash scripts/mutation-check.sh

# Hop latency and proxy cost per path with Locust (direct, ztunnel L4, waypoint L7, the Envoy
# HBONE peer), interleaved, on a fresh reference cluster; out/load/<run>/ (< 2 min on 2 cores).
load: setup
	.venv/bin/ambient-conformance load

# chaos experiments (issue 12): every chaos/experiments/*.yaml on one reference cluster (chaos run
# per experiment) and the table; journals, reports and timelines in out/chaos/<run>/.
chaos: setup
	.venv/bin/ambient-conformance chaos

bench: setup
	$(PY) bench/cluster_up.py

clean:
	.venv/bin/ambient-conformance cluster down --all || true
	rm -rf out
