"""Malformed input never escapes `parse_frame` as an exception: random bytes, truncations and byte flips
of valid frames all end as a Frame or a Drop with a DropReason (never the PARSER_ERROR safety net)."""

from __future__ import annotations

import ipaddress

from hypothesis import given
from hypothesis import strategies as st
from netcodec_strategies import IP4_A, IP4_B, IP6_A, IP6_B, MAC_A, MAC_B, tcp_segments, vlan_params
from scapy.layers.inet import ICMP, IP, TCP, UDP, IPOption_Router_Alert
from scapy.layers.inet6 import (
    ICMPv6EchoRequest,
    ICMPv6ND_NA,
    ICMPv6NDOptDstLLAddr,
    IPv6,
    IPv6ExtHdrFragment,
    IPv6ExtHdrHopByHop,
)
from scapy.layers.l2 import ARP, Ether

from chimney.net import Drop, DropCounters, DropReason, Frame, count_drop, encode_tcp_frame, parse_frame
from chimney.net.drops import GLOBAL_DROPS

S6, D6 = str(ipaddress.IPv6Address(IP6_A)), str(ipaddress.IPv6Address(IP6_B))
ETH = Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02")
SEEDS = [
    bytes(ETH / ARP(psrc="198.18.0.1", pdst="198.18.0.2")),
    bytes(ETH / IP(src="198.18.0.1", dst="198.18.0.2", options=[IPOption_Router_Alert()]) / TCP(
        options=[("MSS", 1460), ("SAckOK", b""), ("Timestamp", (1, 2)), ("WScale", 7)]) / b"abcdef"),
    bytes(ETH / IP(src="198.18.0.1", dst="198.18.0.2") / UDP() / b"u"),
    bytes(ETH / IP(src="198.18.0.1", dst="198.18.0.2") / ICMP(type=3, code=4) / bytes(IP() / TCP())[:28]),
    bytes(ETH / IPv6(src=S6, dst=D6) / IPv6ExtHdrHopByHop() / IPv6ExtHdrFragment() / TCP(
        options=[("SAck", (1, 2, 3, 4))]) / b"x"),
    bytes(ETH / IPv6(src=S6, dst=D6) / ICMPv6ND_NA(tgt=D6) / ICMPv6NDOptDstLLAddr()),
    bytes(ETH / IPv6(src=S6, dst=D6) / ICMPv6EchoRequest(data=b"ping")),
]


def _assert_clean(r: object) -> None:
    assert isinstance(r, Frame | Drop)
    if isinstance(r, Drop):
        assert isinstance(r.reason, DropReason) and r.reason != DropReason.PARSER_ERROR, r
        assert r.detail


@given(st.binary(max_size=200))
def test_random_bytes_never_raise(data: bytes) -> None:
    _assert_clean(parse_frame(data))


@given(st.binary(max_size=120))
def test_random_bytes_behind_plausible_ethernet_and_ip_headers_never_raise(tail: bytes) -> None:
    for prefix in (b"\x02" * 12 + b"\x08\x00\x45", b"\x02" * 12 + b"\x86\xdd\x60", b"\x02" * 12 + b"\x81\x00\x00\x05\x08\x06"):
        _assert_clean(parse_frame(prefix + tail))


@given(st.sampled_from(SEEDS), st.data())
def test_truncations_of_valid_frames_are_drops_with_reasons(seed: bytes, data: st.DataObject) -> None:
    cut = data.draw(st.integers(0, len(seed) - 1))
    r = parse_frame(seed[:cut])
    _assert_clean(r)


@given(st.sampled_from(SEEDS), st.lists(st.tuples(st.integers(0, 10_000), st.integers(1, 255)), min_size=1, max_size=4),
       st.booleans())
def test_byte_flips_of_valid_frames_never_raise(seed: bytes, flips: list[tuple[int, int]], verify: bool) -> None:
    b = bytearray(seed)
    for pos, x in flips:
        b[pos % len(b)] ^= x
    _assert_clean(parse_frame(b, verify_checksums=verify))


@given(tcp_segments(max_payload=64), st.booleans(), vlan_params, st.integers(0, 10_000), st.integers(1, 255))
def test_flipping_any_covered_byte_of_our_tcp_frames_is_caught(seg, v6, vlan, pos, x) -> None:
    src, dst = (IP6_A, IP6_B) if v6 else (IP4_A, IP4_B)
    wire = bytearray(encode_tcp_frame(seg, eth_src=MAC_A, eth_dst=MAC_B, ip_src=src, ip_dst=dst,
                                      vlan_id=vlan[0], vlan_prio=vlan[1]))
    l2 = 18 if vlan != (0, 0) else 14
    i = l2 + pos % (len(wire) - l2)
    wire[i] ^= x
    r = parse_frame(wire)
    _assert_clean(r)
    # Every IPv4 header byte and every TCP byte is checksummed, and a one-byte change can never keep a
    # one's-complement sum; only IPv6 traffic class / flow label / hop limit are unprotected, and an IPv6
    # next header turned into 59 (No Next Header, RFC 8200 §4.7) leaves nothing to checksum at all.
    if isinstance(r, Frame):
        no_next_header = v6 and i == l2 + 6 and r.l4_proto == 59
        assert v6 and (l2 <= i < l2 + 4 or i == l2 + 7 or no_next_header), (i - l2, r)


def test_drop_counters_count_per_reason() -> None:
    c = DropCounters()
    for data in (b"", b"\x00" * 13, b"\x02" * 12 + b"\x88\xb5" + b"\x00" * 50):
        r = parse_frame(data)
        assert isinstance(r, Drop)
        count_drop(r, c)
    assert c[DropReason.TRUNCATED_ETHERNET] == 2 and c[DropReason.UNKNOWN_ETHERTYPE] == 1 and c.total == 3
    before = GLOBAL_DROPS.total
    count_drop(Drop(DropReason.TRUNCATED_TCP, "x"))
    assert GLOBAL_DROPS.total == before + 1


def test_r_stat_07_short_header_is_a_header_error_but_a_valid_header_on_a_short_frame_is_truncated() -> None:
    """R-STAT-07: too short for a header -> InHeaderErrors; valid header, frame shorter -> InTruncatedPackets."""
    from chimney.net.drops import offload_stat_for

    wire = bytes(ETH / IP(src="198.18.0.1", dst="198.18.0.2") / TCP() / b"0123456789")
    short_header = parse_frame(wire[:14 + 12])
    assert isinstance(short_header, Drop) and offload_stat_for(short_header.reason) == "InHeaderErrors"
    short_frame = parse_frame(wire[:-3])
    assert isinstance(short_frame, Drop) and offload_stat_for(short_frame.reason) == "InTruncatedPackets"
    bad_tcp = bytearray(wire)
    bad_tcp[-1] ^= 1
    r = parse_frame(bad_tcp)
    assert isinstance(r, Drop) and offload_stat_for(r.reason) == "InErrors"
