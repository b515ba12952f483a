#!/usr/bin/env bash
# Installs what the suite and the reference mesh need on a fresh Debian machine (run as root):
# the Debian tools the local cluster drives, the suite's Python environment (.venv), and the
# httpbin "image" environment (.venv-httpbin). Idempotent: a second run only checks.
set -euo pipefail
cd "$(dirname "$0")/.."
# The interpreter: Debian's python3.11 where there is one. Debian builds it with PGO and LTO and
# links libpython into the executable; the pyenv build that `python3` is on these machines has
# neither (a shared libpython, no --enable-optimizations), and the ztunnel's data path spends
# about a fifth more CPU per request on it (README, "Data-plane hop", round 7). PYTHON=... overrides.
if [ -n "${PYTHON:-}" ]; then
  PY=$PYTHON
elif [ -x /usr/bin/python3.11 ]; then
  PY=/usr/bin/python3.11
else
  PY=python3
fi

need_pkgs=()
for pair in ip:iproute2 nft:nftables iptables:iptables curl:curl nghttpx:nghttp2-proxy tinyproxy:tinyproxy tcpdump:tcpdump; do
  cmd=${pair%%:*}; pkg=${pair##*:}
  command -v "$cmd" >/dev/null 2>&1 || [ -x "/usr/sbin/$cmd" ] || need_pkgs+=("$pkg")
done
# Debian's python3.11 makes a venv only with ensurepip, which is its python3.11-venv package.
"$PY" -c 'import ensurepip' >/dev/null 2>&1 || need_pkgs+=("python3.11-venv")
if [ ${#need_pkgs[@]} -gt 0 ]; then
  if [ "$(id -u)" != 0 ]; then
    echo "setup: missing Debian packages ${need_pkgs[*]}; run 'make setup' as root or install them with apt-get" >&2
    exit 1
  fi
  echo "setup: installing ${need_pkgs[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need_pkgs[@]}" >/dev/null
fi

home=$("$PY" -c 'import os, sys; print(os.path.dirname(os.path.realpath(sys.executable)))')
if [ -f .venv/pyvenv.cfg ] && ! grep -qxF "home = $home" .venv/pyvenv.cfg; then
  echo "setup: .venv was made with $(sed -n 's/^home = //p' .venv/pyvenv.cfg)/python, not $PY; making it anew"
  rm -rf .venv
fi
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
stamp=.venv/.installed-$(sha1sum pyproject.toml | cut -c1-12)
if [ ! -f "$stamp" ]; then
  .venv/bin/pip install -q --disable-pip-version-check -e '.[chaos,load]' 2>&1 | grep -v '^WARNING: Location' || true
  .venv/bin/python -c 'import h2, cryptography, jwt, httpx, yaml, kubernetes, prometheus_client, xdist' 
  rm -f .venv/.installed-*; touch "$stamp"
fi

# httpbin 0.10.4 pins greenlet<3 on Python 3.11 while Locust's gevent needs greenlet>=3: in one
# environment pip quietly falls back to the broken httpbin 0.10.0. The httpbin image therefore
# gets an environment of its own, as a container image would.
if [ ! -x .venv-httpbin/bin/gunicorn ]; then
  "$PY" -m venv .venv-httpbin
  .venv-httpbin/bin/pip install -q --disable-pip-version-check 'httpbin==0.10.4' 'gunicorn>=22' 2>&1 | grep -v '^WARNING: Location' || true
fi
.venv-httpbin/bin/python -c 'import importlib.metadata as m, sys; v=m.version("httpbin"); sys.exit(0 if v=="0.10.4" else f"setup: httpbin {v} installed, 0.10.4 required")'
echo "setup: ok"
