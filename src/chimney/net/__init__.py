"""chimney.net: wire codecs (Ethernet/802.1Q, ARP, IPv4, IPv6, ICMP, ICMPv6, UDP header, TCP) and checksums.
Parsing works on memoryviews without copying payloads; builders write into preallocated buffers.

Entry points: `parse_frame(buf) -> Frame | Drop`, `TcpFrameBuilder(...).build(buf, seg)`,
`encode_tcp_frame(seg, ...)`, per-layer `parse_*`/`write_*` in the submodules, `DropReason`/`DropCounters`.
"""

from chimney.net.drops import GLOBAL_DROPS, Drop, DropCounters, DropReason, count_drop
from chimney.net.frame import (
    L3_ARP,
    L3_IPV4,
    L3_IPV6,
    Frame,
    TcpFrameBuilder,
    encode_arp_frame,
    encode_ipv4_frame,
    encode_ipv6_frame,
    encode_tcp_frame,
    parse_frame,
)
from chimney.net.tcp import TcpOptions, TcpSegment, parse_tcp, parse_tcp_options

__all__ = [
    "GLOBAL_DROPS",
    "L3_ARP",
    "L3_IPV4",
    "L3_IPV6",
    "Drop",
    "DropCounters",
    "DropReason",
    "Frame",
    "TcpFrameBuilder",
    "TcpOptions",
    "TcpSegment",
    "count_drop",
    "encode_arp_frame",
    "encode_ipv4_frame",
    "encode_ipv6_frame",
    "encode_tcp_frame",
    "parse_frame",
    "parse_tcp",
    "parse_tcp_options",
]
