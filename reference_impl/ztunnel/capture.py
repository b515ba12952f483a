"""Capture rules of the in-pod model (the istio-cni role): one nftables table per pod netns.

Outbound TCP that the node proxy did not mark goes to 15001, inbound TCP arriving on the pod's
interface goes to 15006 except HBONE on 15008, and the pod itself may not reach the proxy's
ports (a pod calling its own 15001/15006/15008/15080 is refused, ISTIO-SEMANTICS section 1).
Deleting the table stops capture; established connections keep their NAT state, so the running
app is not disturbed.
"""
from __future__ import annotations

import subprocess
from dataclasses import dataclass

TABLE = "ztunnel"
PROXY_MARK = 0x539
OUTBOUND_PORT = 15001
INBOUND_PLAINTEXT_PORT = 15006
INBOUND_HBONE_PORT = 15008
SOCKS_PORT = 15080
PROXY_PORTS = (OUTBOUND_PORT, INBOUND_PLAINTEXT_PORT, INBOUND_HBONE_PORT, SOCKS_PORT)


class CaptureError(RuntimeError):
    pass


@dataclass(frozen=True)
class CaptureConfig:
    interface: str = "eth0"
    mark: int = PROXY_MARK


def rules_text(cfg: CaptureConfig = CaptureConfig()) -> str:
    """The whole nft batch that (re)installs capture atomically; applying it twice is harmless."""
    ports = ", ".join(str(p) for p in PROXY_PORTS)
    iface = cfg.interface
    mark = f"0x{cfg.mark:x}"
    return f"""\
table inet {TABLE}
delete table inet {TABLE}
table inet {TABLE} {{
  chain guard {{
    # Before NAT so it sees the port the app asked for, not the redirect target.
    type filter hook output priority -200; policy accept;
    meta mark {mark} return
    oifname "lo" meta l4proto tcp tcp dport {{ {ports} }} reject with tcp reset
  }}
  chain outbound {{
    type nat hook output priority -100; policy accept;
    meta mark {mark} return
    oifname "lo" return
    ip daddr 127.0.0.0/8 return
    ip6 daddr ::1 return
    meta l4proto tcp redirect to :{OUTBOUND_PORT}
  }}
  chain inbound {{
    type nat hook prerouting priority -100; policy accept;
    iifname != "{iface}" return
    meta l4proto tcp tcp dport {INBOUND_HBONE_PORT} return
    meta l4proto tcp redirect to :{INBOUND_PLAINTEXT_PORT}
  }}
}}
"""


def removal_text() -> str:
    # Declaring the table first makes the delete succeed whether or not it existed.
    return f"table inet {TABLE}\ndelete table inet {TABLE}\n"


def _nft_argv(netns: str) -> list[str]:
    return ["ip", "netns", "exec", netns, "nft", "-f", "-"]


def _run(netns: str, batch: str, what: str) -> None:
    try:
        proc = subprocess.run(_nft_argv(netns), input=batch, text=True, capture_output=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise CaptureError(f"could not {what} in netns {netns}: {exc}; check that nftables is installed and the namespace exists") from exc
    if proc.returncode != 0:
        raise CaptureError(f"could not {what} in netns {netns}: {proc.stderr.strip() or proc.stdout.strip()}")


def install(netns: str, cfg: CaptureConfig = CaptureConfig()) -> None:
    _run(netns, rules_text(cfg), "install capture rules")


def remove(netns: str) -> None:
    _run(netns, removal_text(), "remove capture rules")


def installed(netns: str) -> bool:
    proc = subprocess.run(["ip", "netns", "exec", netns, "nft", "list", "table", "inet", TABLE],
                          capture_output=True, text=True, timeout=10)
    return proc.returncode == 0


async def install_async(netns: str, cfg: CaptureConfig = CaptureConfig()) -> None:
    await _run_async(netns, rules_text(cfg), "install capture rules")


async def remove_async(netns: str) -> None:
    await _run_async(netns, removal_text(), "remove capture rules")


async def _run_async(netns: str, batch: str, what: str) -> None:
    import asyncio
    try:
        proc = await asyncio.create_subprocess_exec(
            *_nft_argv(netns), stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        out, err = await asyncio.wait_for(proc.communicate(batch.encode()), 10)
    except (OSError, TimeoutError) as exc:
        raise CaptureError(f"could not {what} in netns {netns}: {exc}; check that nftables is installed and the namespace exists") from exc
    if proc.returncode != 0:
        raise CaptureError(f"could not {what} in netns {netns}: {(err or out).decode().strip()}")
