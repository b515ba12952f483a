"""Read TCP segments out of a pcap file (what `Target.capture` returns).

Only what the wire-level mTLS test needs: IPv4/IPv6 + TCP, over Ethernet, Linux cooked
capture (v1 and v2, which `tcpdump -i any` writes) or raw IP.
"""
from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass

_ETHERNET, _RAW, _RAW_ALT, _SLL, _SLL2 = 1, 101, 12, 113, 276


@dataclass(frozen=True)
class Segment:
    src: str
    dst: str
    sport: int
    dport: int
    payload: bytes


class PcapError(ValueError):
    pass


def tcp_segments(data: bytes) -> list[Segment]:
    if len(data) < 24:
        raise PcapError("capture is shorter than a pcap header; the capture produced no file")
    magic = data[:4]
    if magic in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1"):
        endian = "<"
    elif magic in (b"\xa1\xb2\xc3\xd4", b"\xa1\xb2\x3c\x4d"):
        endian = ">"
    else:
        raise PcapError("not a pcap file (pcapng is not supported); capture with `tcpdump -w`")
    linktype = struct.unpack(endian + "I", data[20:24])[0]
    segments, offset = [], 24
    while offset + 16 <= len(data):
        incl_len = struct.unpack(endian + "I", data[offset + 8:offset + 12])[0]
        frame = data[offset + 16:offset + 16 + incl_len]
        offset += 16 + incl_len
        seg = _segment(_network_layer(frame, linktype))
        if seg:
            segments.append(seg)
    return segments


def _network_layer(frame: bytes, linktype: int) -> bytes:
    if linktype == _ETHERNET:
        ethertype, start = struct.unpack("!H", frame[12:14])[0], 14
        if ethertype == 0x8100:
            ethertype, start = struct.unpack("!H", frame[16:18])[0], 18
        return frame[start:] if ethertype in (0x0800, 0x86DD) else b""
    if linktype == _SLL:
        return frame[16:] if struct.unpack("!H", frame[14:16])[0] in (0x0800, 0x86DD) else b""
    if linktype == _SLL2:
        return frame[20:] if struct.unpack("!H", frame[0:2])[0] in (0x0800, 0x86DD) else b""
    if linktype in (_RAW, _RAW_ALT):
        return frame
    raise PcapError(f"pcap link type {linktype} is not supported (use Ethernet, raw IP or Linux cooked)")


def _segment(packet: bytes) -> Segment | None:
    if not packet:
        return None
    version = packet[0] >> 4
    if version == 4 and len(packet) >= 20:
        ihl = (packet[0] & 0x0F) * 4
        total = struct.unpack("!H", packet[2:4])[0] or len(packet)
        if packet[9] != 6:
            return None
        src, dst = ipaddress.ip_address(packet[12:16]), ipaddress.ip_address(packet[16:20])
        tcp = packet[ihl:total]
    elif version == 6 and len(packet) >= 40:
        if packet[6] != 6:
            return None
        src, dst = ipaddress.ip_address(packet[8:24]), ipaddress.ip_address(packet[24:40])
        tcp = packet[40:40 + struct.unpack("!H", packet[4:6])[0]]
    else:
        return None
    if len(tcp) < 20:
        return None
    sport, dport = struct.unpack("!HH", tcp[:4])
    data_offset = (tcp[12] >> 4) * 4
    return Segment(str(src), str(dst), sport, dport, bytes(tcp[data_offset:]))
