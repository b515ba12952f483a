#!/usr/bin/env bash
# Does the conformance suite catch a broken mesh? Breaks the reference ztunnel in one way at a
# time, in a scratch clone, runs the suite against it, and prints which tests caught each break.
# Exits 1 if a mutant survives (every test passed). Takes a few minutes; run as root.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d /tmp/ac-mutants.XXXXXX)
trap 'rm -rf "$work"' EXIT
git clone -q "$repo" "$work/repo"
cd "$work/repo"
bash scripts/setup.sh >/dev/null

mutate() {  # FILE OLD NEW: replace one exact snippet
  python3 - "$@" <<'PY'
import sys
path, old, new = sys.argv[1:]
text = open(path).read()
assert old in text, f"mutation anchor not found in {path}; update scripts/mutation-check.sh"
open(path, "w").write(text.replace(old, new, 1))
PY
}

survivors=0
run_mutant() {  # NAME FILE OLD NEW
  git checkout -q -- .
  mutate "$2" "$3" "$4"
  echo "=== mutant: $1"
  out=$(.venv/bin/ambient-conformance run -n 2 -q 2>&1 || true)
  caught=$(grep -E "^FAILED" <<<"$out" | sed 's/ - .*//; s/^FAILED /  caught by /' || true)
  if [ -z "$caught" ]; then
    echo "  SURVIVED: no test failed"; survivors=$((survivors + 1))
  else
    echo "$caught"
  fi
}

run_mutant "L4 authorization switched off" reference_impl/ztunnel/state.py \
  "        policies = self.policies_for(dest)" \
  "        policies = []"
run_mutant "live connections never re-checked after a policy change" reference_impl/ztunnel/proxy.py \
  "            return w is not None and state.authorize(w, source_ip, ip, port, principal).allowed" \
  "            return True"
run_mutant "PeerAuthentication ignored" reference_impl/ztunnel/state.py \
  "        return plaintext_allowed(self.peer_authentications, dest.namespace, dest.labels, port, self.root_namespace)" \
  "        return True"
run_mutant "plaintext instead of HBONE between captured pods" reference_impl/ztunnel/state.py \
  "        if workload.hbone:" \
  "        if False:"
git checkout -q -- .
echo "survivors: $survivors"
[ "$survivors" -eq 0 ]
