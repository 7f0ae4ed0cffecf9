"""TCP frame codec against scapy as an independent oracle, in both directions, IPv4 and IPv6, VLAN tags."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st
from netcodec_strategies import (
    IP4_A,
    IP4_B,
    IP6_A,
    IP6_B,
    MAC_A,
    MAC_B,
    scapy_option_lists,
    tcp_options,
    tcp_segments,
    u16,
    u32,
    vlan_params,
)
from scapy.layers.inet import IP, TCP
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import Dot1Q, Ether
from scapy.packet import Raw

from chimney.net import (
    Drop,
    DropReason,
    TcpFrameBuilder,
    TcpOptions,
    TcpSegment,
    encode_tcp_frame,
    parse_frame,
)
from chimney.net.checksum import checksum, reference_checksum
from chimney.net.tcp import ACK, FIN, PSH, RST, SYN, URG, parse_tcp_options, tcp_options_bytes

ips = st.sampled_from([(IP4_A, IP4_B), (IP6_A, IP6_B)])


def _scapy_l3(src: bytes, dst: bytes, ttl: int, tos: int, ident: int) -> object:
    if len(src) == 4:
        return IP(src=".".join(map(str, src)), dst=".".join(map(str, dst)), ttl=ttl, tos=tos, id=ident, flags="DF")
    import ipaddress

    return IPv6(src=str(ipaddress.IPv6Address(src)), dst=str(ipaddress.IPv6Address(dst)), hlim=ttl, tc=tos)


@given(
    opts=scapy_option_lists(),
    sport=u16, dport=u16, seq=u32, ack=u32, flags=st.integers(0, 255), win=u16, urg=u16,
    payload=st.binary(max_size=1500), addrs=ips, vlan=vlan_params,
    ttl=st.integers(1, 255), tos=st.integers(0, 255), ident=u16,
)
def test_scapy_built_tcp_frames_parse_to_the_same_fields(
    opts, sport, dport, seq, ack, flags, win, urg, payload, addrs, vlan, ttl, tos, ident
) -> None:
    scapy_opts, expected_opts = opts
    src, dst = addrs
    l2 = Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02")
    if vlan != (0, 0):
        l2 = l2 / Dot1Q(vlan=vlan[0], prio=vlan[1])
    pkt = l2 / _scapy_l3(src, dst, ttl, tos, ident) / TCP(
        sport=sport, dport=dport, seq=seq, ack=ack, flags=flags, window=win, urgptr=urg, options=scapy_opts
    ) / payload
    wire = bytes(pkt)
    f = parse_frame(wire)
    assert not isinstance(f, Drop), f
    assert (f.eth_src, f.eth_dst) == (MAC_A, MAC_B)
    assert (f.vlan_id, f.vlan_prio) == ((None, None) if vlan == (0, 0) else vlan)
    assert (f.ip_src, f.ip_dst, f.ttl, f.tos) == (src, dst, ttl, tos)
    if len(src) == 4:
        assert (f.ip_version, f.ip_id, f.df, f.mf, f.is_fragment) == (4, ident, True, False, False)
    seg = f.tcp
    assert seg is not None
    assert (seg.src_port, seg.dst_port, seg.seq, seg.ack, seg.flags, seg.window, seg.urg_ptr) == (
        sport, dport, seq, ack, flags, win, urg,
    )
    assert isinstance(seg.payload, memoryview) and bytes(seg.payload) == payload
    if scapy_opts:
        assert seg.options == expected_opts
    else:
        assert seg.options is None
    assert bytes(f.ip_packet) == wire[f.l2_len :]


def _scapy_agrees(wire: bytes) -> Ether:
    """Scapy dissects our frame, recomputes every checksum and reserialises identically."""
    p = Ether(wire)
    again = p.copy()
    l3 = IP if IP in again else IPv6
    if l3 is IP:
        del again[IP].chksum
        del again[IP].len
    else:
        del again[IPv6].plen
    del again[TCP].chksum
    assert bytes(again) == wire
    return p


@given(seg=tcp_segments(), addrs=ips, vlan=vlan_params, ident=u16, ttl=st.integers(1, 255), tos=st.integers(0, 255))
def test_our_tcp_frames_parse_in_scapy_with_identical_checksums(seg, addrs, vlan, ident, ttl, tos) -> None:
    src, dst = addrs
    wire = encode_tcp_frame(
        seg, eth_src=MAC_A, eth_dst=MAC_B, ip_src=src, ip_dst=dst, vlan_id=vlan[0], vlan_prio=vlan[1],
        ttl=ttl, tos=tos, ip_id=ident,
    )
    p = _scapy_agrees(wire)
    t = p[TCP]
    assert (t.sport, t.dport, t.seq, t.ack, int(t.flags), t.window, t.urgptr) == (
        seg.src_port, seg.dst_port, seg.seq, seg.ack, seg.flags, seg.window, seg.urg_ptr,
    )
    assert bytes(t.payload) == bytes(seg.payload)
    opts = dict((k, v) for k, v in t.options if isinstance(k, str))
    o = seg.options
    if o is not None:
        assert opts.get("MSS") == o.mss
        assert opts.get("WScale") == o.wscale
        assert ("SAckOK" in opts) == o.sack_permitted
        assert opts.get("Timestamp") == ((o.ts_val, o.ts_ecr) if o.ts_val is not None else None)
        assert tuple(opts.get("SAck", ())) == tuple(x for blk in o.sack_blocks for x in blk)
    if len(src) == 4:
        assert (p[IP].id, p[IP].ttl, p[IP].tos, int(p[IP].flags)) == (ident, ttl, tos, 2)
    else:
        assert (p[IPv6].hlim, p[IPv6].tc) == (ttl, tos)
    if vlan == (0, 0):
        assert Dot1Q not in p  # R-VLAN-05: VlanId 0 and priority 0 -> no tag
    else:
        assert (p[Dot1Q].vlan, p[Dot1Q].prio, p[Dot1Q].dei) == (vlan[0], vlan[1], 0)  # R-VLAN-05, CFI 0


@given(seg=tcp_segments(), addrs=ips, vlan=vlan_params)
def test_round_trip_build_then_parse_gives_the_segment_back(seg, addrs, vlan) -> None:
    wire = encode_tcp_frame(seg, eth_src=MAC_A, eth_dst=MAC_B, ip_src=addrs[0], ip_dst=addrs[1],
                            vlan_id=vlan[0], vlan_prio=vlan[1])
    f = parse_frame(wire)
    assert not isinstance(f, Drop), f
    got = f.tcp
    assert (got.src_port, got.dst_port, got.seq, got.ack, got.flags, got.window, got.urg_ptr) == (
        seg.src_port, seg.dst_port, seg.seq, seg.ack, seg.flags, seg.window, seg.urg_ptr,
    )
    assert bytes(got.payload) == bytes(seg.payload)
    assert (got.options or TcpOptions()) == (seg.options or TcpOptions())


@given(seg=tcp_segments(), addrs=ips, vlan=vlan_params)
def test_checksum_partial_completed_by_hardware_equals_the_full_checksum(seg, addrs, vlan) -> None:
    b = TcpFrameBuilder(MAC_A, MAC_B, addrs[0], addrs[1], vlan_id=vlan[0], vlan_prio=vlan[1])
    full = b.build_frame(seg)
    partial = bytearray(b.build_frame(seg, offload_csum=True))
    # what a virtio/vnet device does with csum_start/csum_offset
    start, off = b.csum_start, b.csum_offset
    struct.pack_into("!H", partial, start + off, checksum(partial[start:]))
    assert bytes(partial) == full


def test_checksum_partial_field_holds_the_folded_pseudo_header_sum() -> None:
    seg = TcpSegment(1, 2, 3, 4, ACK, 5, b"abc")
    b = TcpFrameBuilder(MAC_A, MAC_B, IP4_A, IP4_B)
    wire = b.build_frame(seg, offload_csum=True)
    assert b.csum_start == 34 and b.csum_offset == 16
    pseudo = IP4_A + IP4_B + bytes([0, 6]) + (20 + 3).to_bytes(2, "big")
    assert int.from_bytes(wire[34 + 16 : 34 + 18], "big") == (~checksum(pseudo)) & 0xFFFF


@given(o=tcp_options())
def test_option_encoding_round_trips_and_is_padded_to_four_bytes(o) -> None:
    enc = tcp_options_bytes(o)
    assert len(enc) % 4 == 0 and len(enc) <= 40
    if o is None:
        assert enc == b""
        return
    assert parse_tcp_options(memoryview(enc)) == o


def test_maximal_option_space_four_sack_blocks_without_timestamps() -> None:
    o = TcpOptions(sack_blocks=((1, 2), (3, 4), (5, 6), (7, 8)))
    assert len(tcp_options_bytes(o)) == 36
    o = TcpOptions(ts_val=1, ts_ecr=2, sack_blocks=((1, 2), (3, 4), (5, 6)))
    assert len(tcp_options_bytes(o)) == 40
    with pytest.raises(ValueError):
        tcp_options_bytes(TcpOptions(ts_val=1, ts_ecr=2, sack_blocks=((1, 2), (3, 4), (5, 6), (7, 8))))


def _tcp_frame_with_raw_options(opt_bytes: bytes, data_offset_words: int | None = None) -> bytes:
    """A TCP/IPv4 frame with arbitrary option bytes; TCP checksum from the reference RFC 1071 loop,
    IP header from scapy (carrying the TCP bytes as opaque Raw)."""
    doff = data_offset_words if data_offset_words is not None else 5 + len(opt_bytes) // 4
    tcp = struct.pack("!HHIIBBHHH", 20, 80, 1, 0, doff << 4, SYN, 8192, 0, 0) + opt_bytes + b"data"
    pseudo = IP4_A + IP4_B + bytes([0, 6]) + len(tcp).to_bytes(2, "big")
    csum = reference_checksum(pseudo + tcp)
    tcp = tcp[:16] + csum.to_bytes(2, "big") + tcp[18:]
    return bytes(Ether() / IP(src="198.18.0.1", dst="198.19.255.2", proto=6) / Raw(tcp))


@pytest.mark.parametrize(
    ("opts", "why"),
    [
        (b"\x01\x01\x01\x01\x01\x02\x04\x05", "MSS cut by the end of the option space"),
        (b"\x02\x03\x05\xb4", "MSS with length 3"),
        (b"\x08\x00\x00\x00", "length byte 0"),
        (b"\x01\x01\x01\x08", "timestamp kind without a length byte"),
        (b"\x05\x0b" + b"\x00" * 10, "SACK length 11 is not 2+8k"),
        (b"\x1e\x28" + b"\x00" * 2, "unknown option length beyond the header"),
    ],
)
def test_bad_option_lengths_are_dropped_with_a_reason(opts: bytes, why: str) -> None:
    padded = opts + b"\x00" * (-len(opts) % 4)
    r = parse_frame(_tcp_frame_with_raw_options(padded))
    assert isinstance(r, Drop) and r.reason == DropReason.BAD_TCP_OPTION, (why, r)


def test_unknown_options_are_kept_and_skipped_and_eol_ends_parsing() -> None:
    r = parse_frame(_tcp_frame_with_raw_options(b"\x1e\x04\xab\xcd\x02\x04\x05\xb4\x00\x02\x04\x00"))
    assert not isinstance(r, Drop)
    assert r.tcp.options.unknown == ((30, b"\xab\xcd"),)
    assert r.tcp.options.mss == 1460
    assert bytes(r.tcp.payload) == b"data"


@pytest.mark.parametrize("words", [0, 4, 15])
def test_data_offset_below_five_or_beyond_the_segment_is_dropped(words: int) -> None:
    r = parse_frame(_tcp_frame_with_raw_options(b"", data_offset_words=words))
    assert isinstance(r, Drop) and r.reason == DropReason.BAD_TCP_DATA_OFFSET


@pytest.mark.parametrize("flags", [SYN | FIN, FIN, 0, 0xFF, SYN | RST, URG | PSH | FIN])
def test_odd_but_legal_flag_combinations_are_parsed_not_rejected(flags: int) -> None:
    seg = TcpSegment(1, 2, 3, 4, flags, 5, b"x")
    r = parse_frame(encode_tcp_frame(seg, eth_src=MAC_A, eth_dst=MAC_B, ip_src=IP4_A, ip_dst=IP4_B))
    assert not isinstance(r, Drop) and r.tcp.flags == flags


def test_corrupted_payload_fails_the_tcp_checksum_unless_verification_is_off() -> None:
    seg = TcpSegment(1, 2, 3, 4, ACK, 5, b"payload!")
    wire = bytearray(encode_tcp_frame(seg, eth_src=MAC_A, eth_dst=MAC_B, ip_src=IP6_A, ip_dst=IP6_B))
    wire[-1] ^= 0x01
    r = parse_frame(wire)
    assert isinstance(r, Drop) and r.reason == DropReason.BAD_TCP_CHECKSUM
    ok = parse_frame(wire, verify_checksums=False)
    assert not isinstance(ok, Drop) and bytes(ok.tcp.payload) == b"payload"+ b"\x20"


def test_builder_writes_into_a_preallocated_buffer_and_payload_stays_outside() -> None:
    payload = memoryview(bytearray(b"z" * 1461))
    seg = TcpSegment(1000, 2000, 1, 2, ACK | PSH, 100, payload, TcpOptions(ts_val=9, ts_ecr=8))
    b = TcpFrameBuilder(MAC_A, MAC_B, IP4_A, IP4_B, vlan_id=7)
    buf = bytearray(b.header_room)
    hlen = b.build(buf, seg, ip_id=3)
    assert hlen == 18 + 20 + 32
    f = parse_frame(bytes(buf[:hlen]) + bytes(payload))
    assert not isinstance(f, Drop) and f.tcp.options.ts_val == 9 and len(f.tcp.payload) == 1461


@given(seg=tcp_segments(max_payload=300), addrs=ips)
def test_tcp_checksum_helper_matches_the_checksum_in_built_frames(seg, addrs) -> None:
    from chimney.net.tcp import tcp_checksum

    src, dst = addrs
    wire = encode_tcp_frame(seg, eth_src=MAC_A, eth_dst=MAC_B, ip_src=src, ip_dst=dst)
    tcp_start = 14 + (20 if len(src) == 4 else 40)
    segment = bytearray(wire[tcp_start:])
    stored = int.from_bytes(segment[16:18], "big")
    segment[16:18] = b"\0\0"
    assert tcp_checksum(src, dst, segment) == stored
