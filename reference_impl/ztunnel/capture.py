"""Capture rules of the in-pod model (the istio-cni role): one nftables table per pod netns,
plus one policy-routing rule and route.

Outbound TCP that the node proxy did not mark goes to 15001, inbound TCP arriving on the pod's
interface goes to 15006 except HBONE on 15008, and the pod itself may not reach the proxy's
ports (a pod calling its own 15001/15006/15008/15080 is refused, ISTIO-SEMANTICS section 1).

Original source IP (ISTIO-SEMANTICS section 2): the proxy's socket towards the app is bound with
IP_TRANSPARENT to the client's address, which is not local to the pod. As istio-cni does
(cni/pkg/iptables), a connection whose first packet carries the proxy's mark 0x539 gets the
conntrack mark 0x111; the app's replies get it back as their packet mark, and
`ip rule fwmark 0x111/0xfff lookup 100` + `local 0.0.0.0/0 dev lo table 100` deliver them
locally to the proxy's socket instead of sending them out to the real client.

Deleting the table and the rule stops capture; established connections keep their NAT state,
so the running app is not disturbed.
"""
from __future__ import annotations

import asyncio
import subprocess
import tempfile
from dataclasses import dataclass

TABLE = "ztunnel"
PROXY_MARK = 0x539
OUTBOUND_PORT = 15001
INBOUND_PLAINTEXT_PORT = 15006
INBOUND_HBONE_PORT = 15008
SOCKS_PORT = 15080
PROXY_PORTS = (OUTBOUND_PORT, INBOUND_PLAINTEXT_PORT, INBOUND_HBONE_PORT, SOCKS_PORT)
# istio-cni's in-pod values: connmark for proxy-to-app connections and the routing table that
# sends the app's replies to them back through loopback.
TPROXY_MARK = 0x111
TPROXY_MASK = 0xfff
ROUTE_TABLE = 100
RULE_PRIORITY = 32764
COMMAND_TIMEOUT_S = 10


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
    keep = ~TPROXY_MASK & 0xffffffff
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
  chain mark_proxy_connections {{
    # The proxy's packets to the app re-enter through lo still carrying the socket mark.
    type filter hook prerouting priority -150; policy accept;
    meta mark and 0x{TPROXY_MASK:x} == {mark} ct mark set ct mark and 0x{keep:08x} or 0x{TPROXY_MARK:x}
  }}
  chain restore_mark {{
    # A route chain: the restored mark re-routes the app's reply through table {ROUTE_TABLE}.
    type route hook output priority -150; policy accept;
    ct mark and 0x{TPROXY_MASK:x} == 0x{TPROXY_MARK:x} meta mark set ct mark
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


_RULE = f"fwmark 0x{TPROXY_MARK:x}/0x{TPROXY_MASK:x} pref {RULE_PRIORITY} lookup {ROUTE_TABLE}"
_ROUTE = f"local 0.0.0.0/0 dev lo table {ROUTE_TABLE}"


def routing_add_text() -> str:
    return f"rule add {_RULE}\nroute replace {_ROUTE}\n"


def routing_del_text() -> str:
    return f"rule del {_RULE}\nroute del {_ROUTE}\n"


# What `ip -force -batch` says when the rule is already there (a restarted proxy re-installs
# capture: the rule must never be missing, even briefly, while connections use it) ...
_PRESENT = ("File exists",)
# ... and when the rule or route to delete is already gone.
_ABSENT = ("No such file or directory", "No such process", "FIB table does not exist")


@dataclass(frozen=True)
class _Step:
    argv_tail: tuple[str, ...]
    batch: str
    what: str
    tolerate: tuple[str, ...] = ()


def _install_steps(cfg: CaptureConfig) -> list[_Step]:
    # Routing first: once the nft table exists the proxy binds to client IPs and needs it.
    return [_Step(("ip", "-force", "-batch", "-"), routing_add_text(), "install the reply routing", _PRESENT),
            _Step(("nft", "-f", "-"), rules_text(cfg), "install capture rules")]


def _remove_steps() -> list[_Step]:
    return [_Step(("nft", "-f", "-"), removal_text(), "remove capture rules"),
            _Step(("ip", "-force", "-batch", "-"), routing_del_text(), "remove the reply routing", _ABSENT)]


def _check(netns: str, step: _Step, rc: int, out: str, err: str) -> None:
    if rc == 0:
        return
    problems = [line for line in (err or out).splitlines()
                if line.strip() and not (step.tolerate and (any(t in line for t in step.tolerate)
                                                            or line.startswith("Command failed")))]
    if problems:
        raise CaptureError(f"could not {step.what} in netns {netns}: {' '.join(problems)}")


def _argv(netns: str, step: _Step) -> list[str]:
    return ["ip", "netns", "exec", netns, *step.argv_tail]


def _run(netns: str, steps: list[_Step]) -> None:
    for step in steps:
        try:
            proc = subprocess.run(_argv(netns, step), input=step.batch, text=True, capture_output=True, timeout=10)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise CaptureError(f"could not {step.what} in netns {netns}: {exc}; check that nftables and "
                               f"iproute2 are installed and the namespace exists") from exc
        _check(netns, step, proc.returncode, proc.stdout, proc.stderr)


def install(netns: str, cfg: CaptureConfig = CaptureConfig()) -> None:
    _run(netns, _install_steps(cfg))


def remove(netns: str) -> None:
    _run(netns, _remove_steps())


def installed(netns: str) -> bool:
    proc = subprocess.run(["ip", "netns", "exec", netns, "nft", "list", "table", "inet", TABLE],
                          capture_output=True, text=True, timeout=10)
    return proc.returncode == 0


def reply_routing_installed(netns: str) -> bool:
    rules = subprocess.run(["ip", "-n", netns, "rule", "show", "pref", str(RULE_PRIORITY)],
                           capture_output=True, text=True, timeout=10).stdout
    routes = subprocess.run(["ip", "-n", netns, "route", "show", "table", str(ROUTE_TABLE)],
                            capture_output=True, text=True, timeout=10).stdout
    return f"lookup {ROUTE_TABLE}" in rules and "local default dev lo" in routes


async def install_async(netns: str, cfg: CaptureConfig = CaptureConfig()) -> None:
    await _run_async(netns, _install_steps(cfg))


async def remove_async(netns: str) -> None:
    await _run_async(netns, _remove_steps())


async def _run_async(netns: str, steps: list[_Step]) -> None:
    for step in steps:
        # The batch is handed over as a file, never written into a pipe: a command that exits
        # without reading its input (`ip netns exec` of a pod namespace already deleted) closes
        # that pipe, and uvloop then raises RuntimeError on the write instead of the command's
        # own error being reported; a caller that releases a vanished pod got that, not a
        # CaptureError, and the whole snapshot was NACKed.
        try:
            with tempfile.TemporaryFile() as batch:
                batch.write(step.batch.encode())
                batch.seek(0)
                proc = await asyncio.create_subprocess_exec(
                    *_argv(netns, step), stdin=batch, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        except OSError as exc:
            raise CaptureError(f"could not {step.what} in netns {netns}: {exc}; check that nftables and "
                               f"iproute2 are installed and the namespace exists") from exc
        try:
            out, err = await asyncio.wait_for(proc.communicate(), COMMAND_TIMEOUT_S)
        except TimeoutError:
            raise CaptureError(f"could not {step.what} in netns {netns}: no answer within "
                               f"{COMMAND_TIMEOUT_S:g}s") from None
        finally:
            # A command given up on must not change the rules afterwards (capture installed
            # after the proxy gave up on the pod would send its traffic to closed ports).
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
        _check(netns, step, proc.returncode, out.decode(), err.decode())
