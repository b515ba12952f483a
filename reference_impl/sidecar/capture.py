"""The sidecar's capture rules (Istio's istio-init / istio-iptables role), one nftables table in the
pod's own namespace, installed before the proxy reports ready and so before the app starts.

- outbound: TCP the app sends goes to 15001, except loopback and the proxy's own traffic, which
  carries the mark 0x539 (Istio exempts the proxy's uid 1337; every process here runs as root, so
  the socket mark is what tells the proxy's traffic apart);
- inbound: TCP arriving on eth0 goes to 15006, except HBONE (15008) and the proxy's status and
  metrics ports (15020, 15021, 15090), as istio-iptables' default exclusions.
"""

from __future__ import annotations

import subprocess

TABLE = "istio_sidecar"
PROXY_MARK = 0x539
OUTBOUND_PORT = 15001
INBOUND_PORT = 15006
HBONE_PORT = 15008
MERGED_METRICS_PORT = 15020
READY_PORT = 15021
ENVOY_METRICS_PORT = 15090
INBOUND_EXCLUDED = (HBONE_PORT, MERGED_METRICS_PORT, READY_PORT, ENVOY_METRICS_PORT)


class CaptureError(RuntimeError):
    pass


def rules_text(interface: str = "eth0", mark: int = PROXY_MARK) -> str:
    excluded = ", ".join(str(p) for p in INBOUND_EXCLUDED)
    return f"""\
table inet {TABLE}
delete table inet {TABLE}
table inet {TABLE} {{
  chain outbound {{
    type nat hook output priority -100; policy accept;
    meta mark 0x{mark:x} return
    oifname "lo" return
    ip daddr 127.0.0.0/8 return
    meta l4proto tcp redirect to :{OUTBOUND_PORT}
  }}
  chain inbound {{
    type nat hook prerouting priority -100; policy accept;
    iifname != "{interface}" return
    meta l4proto tcp tcp dport {{ {excluded} }} return
    meta l4proto tcp redirect to :{INBOUND_PORT}
  }}
}}
"""


def install(interface: str = "eth0") -> None:
    """Install (or re-install: a restarted proxy replaces the table atomically) in this namespace."""
    try:
        proc = subprocess.run(["nft", "-f", "-"], input=rules_text(interface), text=True,
                              capture_output=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise CaptureError(f"cannot run nft to install the sidecar's capture rules: {exc}; "
                           f"install nftables") from exc
    if proc.returncode != 0:
        raise CaptureError(f"nft refused the sidecar's capture rules: {proc.stderr.strip()}")


def listing() -> str:
    """The installed table as nft prints it (for proxy-config and tests)."""
    proc = subprocess.run(["nft", "list", "table", "inet", TABLE], text=True, capture_output=True,
                          timeout=10)
    return proc.stdout if proc.returncode == 0 else ""
