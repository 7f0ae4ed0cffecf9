"""Per-layer codecs against scapy: Ethernet/802.1Q (R-VLAN-05), ARP, IPv4 options and fragments,
IPv6 extension headers, ICMPv4, ICMPv6 neighbor discovery / echo / packet too big, UDP."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given
from hypothesis import strategies as st
from netcodec_strategies import IP4_A, IP4_B, IP6_A, IP6_B, MAC_A, MAC_B, u16
from scapy.layers.inet import ICMP, IP, TCP, UDP, IPOption_NOP, IPOption_Router_Alert, IPOption_Timestamp
from scapy.layers.inet6 import (
    ICMPv6EchoReply,
    ICMPv6EchoRequest,
    ICMPv6ND_NA,
    ICMPv6ND_NS,
    ICMPv6ND_RA,
    ICMPv6NDOptDstLLAddr,
    ICMPv6NDOptMTU,
    ICMPv6NDOptSrcLLAddr,
    ICMPv6PacketTooBig,
    IPv6,
    IPv6ExtHdrDestOpt,
    IPv6ExtHdrFragment,
    IPv6ExtHdrHopByHop,
    IPv6ExtHdrRouting,
)
from scapy.layers.ipsec import AH
from scapy.layers.l2 import ARP, Dot1Q, Ether
from scapy.packet import Raw

from chimney.net import L3_ARP, Drop, DropReason, TcpSegment, encode_arp_frame, encode_tcp_frame, parse_frame
from chimney.net import icmp as icmp4
from chimney.net import icmpv6 as icmp6
from chimney.net.arp import ARP_REPLY, ARP_REQUEST
from chimney.net.ethernet import write_ethernet
from chimney.net.frame import encode_ipv4_frame, encode_ipv6_frame
from chimney.net.tcp import ACK
from chimney.net.udp import encode_udp, parse_udp

S4, D4 = "198.18.0.1", "198.19.255.2"
S6, D6 = str(ipaddress.IPv6Address(IP6_A)), str(ipaddress.IPv6Address(IP6_B))
ETH = Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02")


def ok(wire: bytes):
    f = parse_frame(wire)
    assert not isinstance(f, Drop), f
    return f


# ------------------------------------------------------------------------------------ Ethernet / VLAN


@pytest.mark.parametrize(
    ("vid", "prio", "tag"),
    [(0, 0, None), (0, 5, (0, 5)), (100, 0, (100, 0)), (4094, 7, (4094, 7))],
)
def test_r_vlan_05_tagging_rule_on_transmit(vid: int, prio: int, tag) -> None:
    """R-VLAN-05: no tag for VlanId 0 & prio 0, priority tag VID 0, else VlanId+prio; CFI always 0."""
    buf = bytearray(18)
    n = write_ethernet(buf, 0, MAC_B, MAC_A, 0x0800, vid, prio)
    p = Ether(bytes(buf[:n]))
    if tag is None:
        assert n == 14 and Dot1Q not in p
    else:
        assert n == 18 and (p[Dot1Q].vlan, p[Dot1Q].prio, p[Dot1Q].dei) == (*tag, 0)


def test_vlan_parameters_out_of_range_are_refused() -> None:
    with pytest.raises(ValueError):
        write_ethernet(bytearray(18), 0, MAC_B, MAC_A, 0x0800, 4096, 0)
    with pytest.raises(ValueError):
        write_ethernet(bytearray(18), 0, MAC_B, MAC_A, 0x0800, 1, 8)


def test_received_dei_bit_does_not_leak_into_vlan_id_or_priority() -> None:
    f = ok(bytes(ETH / Dot1Q(vlan=33, prio=6, dei=1) / ARP(psrc=S4, pdst=D4)))
    assert (f.vlan_id, f.vlan_prio) == (33, 6)


def test_unknown_ethertype_is_a_typed_drop() -> None:
    r = parse_frame(bytes(Ether(type=0x88B5) / Raw(b"x" * 50)))
    assert isinstance(r, Drop) and r.reason == DropReason.UNKNOWN_ETHERTYPE


# ------------------------------------------------------------------------------------------------ ARP


@given(op=st.sampled_from([ARP_REQUEST, ARP_REPLY]), vlan=st.integers(0, 4094))
def test_arp_from_scapy_parses_and_ours_parses_in_scapy(op: int, vlan: int) -> None:
    l2 = ETH / Dot1Q(vlan=vlan) if vlan else ETH
    f = ok(bytes(l2 / ARP(op=op, hwsrc="02:00:00:00:00:01", psrc=S4, hwdst="02:00:00:00:00:02", pdst=D4)))
    assert f.l3 == L3_ARP and f.arp.op == op
    assert (f.arp.sender_mac, f.arp.sender_ip, f.arp.target_mac, f.arp.target_ip) == (MAC_A, IP4_A, MAC_B, IP4_B)
    wire = encode_arp_frame(op, MAC_A, IP4_A, IP4_B, target_mac=MAC_B if op == ARP_REPLY else None, vlan_id=vlan)
    p = Ether(wire)
    assert (p[ARP].op, p[ARP].hwsrc, p[ARP].psrc, p[ARP].pdst) == (op, "02:00:00:00:00:01", S4, D4)
    assert p.dst == ("ff:ff:ff:ff:ff:ff" if op == ARP_REQUEST else "02:00:00:00:00:02")
    assert bytes(p) == wire


def test_non_ethernet_ipv4_arp_is_dropped() -> None:
    r = parse_frame(bytes(ETH / ARP(ptype=0x86DD, plen=4, psrc=S4, pdst=D4)))
    assert isinstance(r, Drop) and r.reason == DropReason.BAD_ARP


# ----------------------------------------------------------------------------------------------- IPv4


def test_ipv4_options_are_recognised_and_skipped() -> None:
    pkt = ETH / IP(src=S4, dst=D4, options=[IPOption_Router_Alert(), IPOption_NOP(), IPOption_Timestamp()]) / TCP(
        sport=1, dport=2
    ) / b"abc"
    wire = bytes(pkt)
    f = ok(wire)
    assert f.has_ip_options and f.ip_header_len == Ether(wire)[IP].ihl * 4 > 20
    assert f.tcp is not None and bytes(f.tcp.payload) == b"abc"


def test_ipv4_option_length_overrun_is_dropped() -> None:
    pkt = ETH / IP(src=S4, dst=D4, options=[IPOption_NOP(), IPOption_NOP(), IPOption_NOP(), IPOption_NOP()]) / TCP()
    raw = bytearray(bytes(pkt))
    raw[34:38] = b"\x44\x09\x05\x00"  # timestamp option claiming 9 bytes in a 4-byte option area
    fixed = Ether(bytes(raw))
    del fixed[IP].chksum
    r = parse_frame(bytes(fixed))
    assert isinstance(r, Drop) and r.reason == DropReason.BAD_IPV4_OPTIONS


@pytest.mark.parametrize(("flags", "frag"), [("MF", 0), (0, 185), ("MF", 7)])
def test_ipv4_fragments_are_flagged_not_reassembled(flags, frag: int) -> None:
    f = ok(bytes(ETH / IP(src=S4, dst=D4, flags=flags, frag=frag, proto=6) / Raw(b"y" * 40)))
    assert f.is_fragment and f.mf == (flags == "MF") and f.frag_offset == frag and not f.df
    assert f.tcp is None and bytes(f.l4) == b"y" * 40


@pytest.mark.parametrize(
    ("mutate", "reason"),
    [
        (lambda b: b.__setitem__(14, 0x44), DropReason.BAD_IHL),
        (lambda b: b.__setitem__(14, 0x65), DropReason.BAD_IP_VERSION),
        (lambda b: b.__setitem__(24, b[24] ^ 0xFF), DropReason.BAD_IPV4_CHECKSUM),
        (lambda b: b.__setitem__(slice(16, 18), b"\x05\xdc"), DropReason.IP_TRUNCATED),
        (lambda b: b.__setitem__(slice(16, 18), b"\x00\x13"), DropReason.BAD_IP_TOTAL_LEN),
    ],
)
def test_bad_ipv4_headers_are_dropped_with_their_reason(mutate, reason: DropReason) -> None:
    wire = bytearray(bytes(ETH / IP(src=S4, dst=D4) / TCP() / b"payload"))
    mutate(wire)
    r = parse_frame(wire)
    assert isinstance(r, Drop) and r.reason == reason


def test_ethernet_padding_after_a_short_ip_packet_is_not_payload() -> None:
    seg = TcpSegment(1, 2, 3, 4, ACK, 5, b"")
    wire = encode_tcp_frame(seg, eth_src=MAC_A, eth_dst=MAC_B, ip_src=IP4_A, ip_dst=IP4_B) + b"\x00" * 6
    f = ok(wire)
    assert len(f.tcp.payload) == 0 and len(f.ip_packet) == 40


def test_unknown_ip_protocol_is_a_typed_drop() -> None:
    r = parse_frame(bytes(ETH / IP(src=S4, dst=D4, proto=47) / Raw(b"gre")))
    assert isinstance(r, Drop) and r.reason == DropReason.UNKNOWN_IP_PROTOCOL


# ----------------------------------------------------------------------------------------------- IPv6


@pytest.mark.parametrize(
    "exts",
    [
        [IPv6ExtHdrHopByHop()],
        [IPv6ExtHdrHopByHop(), IPv6ExtHdrDestOpt(), IPv6ExtHdrRouting(addresses=[S6])],
        [IPv6ExtHdrDestOpt(), IPv6ExtHdrFragment(m=0, offset=0, id=9)],
        [AH(nh=6, payloadlen=4, spi=1, icv=b"\x00" * 12)],
    ],
)
def test_ipv6_extension_headers_are_walked_to_tcp(exts) -> None:
    pkt = ETH / IPv6(src=S6, dst=D6)
    for e in exts:
        pkt = pkt / e
    # scapy cannot compute a checksum through AH; the pseudo-header ignores extension headers anyway
    csum = None
    if any(isinstance(e, AH) for e in exts):
        csum = IPv6(bytes(IPv6(src=S6, dst=D6) / TCP(sport=5, dport=6, flags="S") / b"hello"))[TCP].chksum
    pkt = pkt / TCP(sport=5, dport=6, flags="S", chksum=csum) / b"hello"
    f = ok(bytes(pkt))
    assert f.has_ip_options and f.l4_proto == 6 and f.tcp.src_port == 5 and bytes(f.tcp.payload) == b"hello"
    assert f.ip_header_len == len(bytes(pkt[IPv6])) - len(bytes(pkt[TCP]))


def test_ipv6_fragment_header_with_offset_is_recognised_not_parsed() -> None:
    pkt = ETH / IPv6(src=S6, dst=D6) / IPv6ExtHdrFragment(m=1, offset=100, id=0xABCDEF, nh=6) / Raw(b"z" * 16)
    f = ok(bytes(pkt))
    assert f.is_fragment and f.mf and f.frag_offset == 100 and f.ip_id == 0xABCDEF and f.tcp is None


def test_ipv6_unknown_next_header_is_a_typed_drop() -> None:
    r = parse_frame(bytes(ETH / IPv6(src=S6, dst=D6, nh=253) / Raw(b"z" * 16)))
    assert isinstance(r, Drop) and r.reason == DropReason.IPV6_UNKNOWN_EXT_HEADER


def test_ipv6_extension_header_overrunning_the_payload_is_dropped() -> None:
    wire = bytearray(bytes(ETH / IPv6(src=S6, dst=D6) / IPv6ExtHdrDestOpt() / TCP()))
    wire[54 + 1] = 20  # hdr ext len: 168 bytes
    r = parse_frame(wire)
    assert isinstance(r, Drop) and r.reason == DropReason.IPV6_EXT_TRUNCATED


# ---------------------------------------------------------------------------------------------- ICMPv4


@given(ident=u16, seq=u16, data=st.binary(max_size=100), reply=st.booleans())
def test_icmp_echo_both_directions(ident: int, seq: int, data: bytes, reply: bool) -> None:
    f = ok(bytes(ETH / IP(src=S4, dst=D4) / ICMP(type=0 if reply else 8, id=ident, seq=seq) / Raw(data)))
    assert (f.icmp.type, f.icmp.ident, f.icmp.seq, bytes(f.icmp.data)) == (0 if reply else 8, ident, seq, data)
    msg = icmp4.build_icmp_echo(ident, seq, data, reply=reply)
    p = IP(bytes(IP(src=S4, dst=D4, proto=1) / Raw(msg)))
    again = p[ICMP].copy()
    del again.chksum
    assert bytes(again) == msg and (p[ICMP].id, p[ICMP].seq) == (ident, seq)


def test_icmp_echo_reply_mirrors_a_parsed_request() -> None:
    f = ok(bytes(ETH / IP(src=S4, dst=D4) / ICMP(type=8, id=7, seq=9) / Raw(b"ping")))
    reply = ok(encode_ipv4_frame(MAC_B, MAC_A, IP4_B, IP4_A, 1, icmp4.build_icmp_echo_reply(f.icmp)))
    assert (reply.icmp.type, reply.icmp.ident, reply.icmp.seq, bytes(reply.icmp.data)) == (0, 7, 9, b"ping")


def test_icmp_frag_needed_exposes_mtu_and_the_quoted_tcp_flow() -> None:
    original = bytes(IP(src=S4, dst=D4, flags="DF") / TCP(sport=4000, dport=80, seq=123456) / (b"q" * 1400))
    f = ok(bytes(ETH / IP(src="198.18.9.9", dst=S4) / ICMP(type=3, code=4, nexthopmtu=1280) / Raw(original[:28])))
    m = f.icmp
    assert m.is_frag_needed and m.mtu == 1280
    assert (m.quoted_src, m.quoted_dst, m.quoted_proto) == (IP4_A, IP4_B, 6)
    assert (m.quoted_sport, m.quoted_dport, m.quoted_seq) == (4000, 80, 123456)
    ours = icmp4.build_icmp_frag_needed(1280, original)
    p = ICMP(ours)
    assert (p.type, p.code, p.nexthopmtu) == (3, 4, 1280) and bytes(p.payload)[:28] == original[:28]
    again = p.copy()
    del again.chksum
    assert bytes(again) == ours


def test_icmp_time_exceeded_quote_too_short_is_dropped() -> None:
    r = parse_frame(bytes(ETH / IP(src=S4, dst=D4) / ICMP(type=11, code=0) / Raw(b"\x45" + b"\x00" * 10)))
    assert isinstance(r, Drop) and r.reason == DropReason.TRUNCATED_ICMP


def test_icmp_bad_checksum_is_dropped() -> None:
    r = parse_frame(bytes(ETH / IP(src=S4, dst=D4) / ICMP(type=8, chksum=0x1234) / Raw(b"x")))
    assert isinstance(r, Drop) and r.reason == DropReason.BAD_ICMP_CHECKSUM


# ---------------------------------------------------------------------------------------------- ICMPv6


def _scapy_icmp6_checksum_ok(wire: bytes) -> None:
    p = Ether(wire)
    again = p.copy()
    icmp_layer = again[IPv6].payload
    del icmp_layer.cksum
    assert bytes(again) == wire


def test_icmpv6_neighbor_solicitation_and_advertisement_with_lladdr_options() -> None:
    f = ok(bytes(ETH / IPv6(src=S6, dst=D6, hlim=255) / ICMPv6ND_NS(tgt=D6) / ICMPv6NDOptSrcLLAddr(
        lladdr="02:00:00:00:00:01")))
    assert (f.icmp6.type, f.icmp6.target, f.icmp6.source_lladdr, f.hop_limit) == (135, IP6_B, MAC_A, 255)
    f = ok(bytes(ETH / IPv6(src=D6, dst=S6, hlim=255) / ICMPv6ND_NA(tgt=D6, R=0, S=1, O=1) / ICMPv6NDOptDstLLAddr(
        lladdr="02:00:00:00:00:02")))
    m = f.icmp6
    assert (m.type, m.target, m.target_lladdr, m.solicited, m.override, m.router) == (
        136, IP6_B, MAC_B, True, True, False)
    ns = icmp6.build_neighbor_solicit(IP6_A, icmp6.solicited_node_multicast(IP6_B), IP6_B, MAC_A)
    wire = encode_ipv6_frame(MAC_A, icmp6.multicast_mac(icmp6.solicited_node_multicast(IP6_B)), IP6_A,
                             icmp6.solicited_node_multicast(IP6_B), 58, ns, hop_limit=255)
    _scapy_icmp6_checksum_ok(wire)
    p = Ether(wire)
    assert p[IPv6].dst == "ff02::1:ff12:2" and p.dst == "33:33:ff:12:00:02"
    assert p[ICMPv6ND_NS].tgt == D6 and p[ICMPv6NDOptSrcLLAddr].lladdr == "02:00:00:00:00:01"
    na = icmp6.build_neighbor_advert(IP6_B, IP6_A, IP6_B, MAC_B, solicited=True, override=True)
    wire = encode_ipv6_frame(MAC_B, MAC_A, IP6_B, IP6_A, 58, na, hop_limit=255)
    _scapy_icmp6_checksum_ok(wire)
    p = Ether(wire)
    assert (p[ICMPv6ND_NA].S, p[ICMPv6ND_NA].O, p[ICMPv6ND_NA].R) == (1, 1, 0)
    assert p[ICMPv6NDOptDstLLAddr].lladdr == "02:00:00:00:00:02"


def test_icmpv6_router_advertisement_minimal_fields() -> None:
    f = ok(bytes(ETH / IPv6(src=S6, dst="ff02::1") / ICMPv6ND_RA(chlim=64, routerlifetime=1800) /
                 ICMPv6NDOptSrcLLAddr(lladdr="02:00:00:00:00:01") / ICMPv6NDOptMTU(mtu=9000)))
    m = f.icmp6
    assert (m.type, m.cur_hop_limit, m.router_lifetime, m.source_lladdr, m.mtu) == (134, 64, 1800, MAC_A, 9000)


def test_icmpv6_zero_length_nd_option_is_dropped() -> None:
    body = bytearray(icmp6.build_neighbor_solicit(IP6_A, IP6_B, IP6_B, MAC_A))
    body[24 + 1] = 0  # RFC 4861 §4.6: option length 0 must be discarded
    body[2:4] = b"\0\0"
    r = parse_frame(encode_ipv6_frame(MAC_A, MAC_B, IP6_A, IP6_B, 58, icmp6.finish_icmpv6(IP6_A, IP6_B, bytes(body))))
    assert isinstance(r, Drop) and r.reason == DropReason.BAD_ICMPV6_OPTION


@given(ident=u16, seq=u16, data=st.binary(max_size=64), reply=st.booleans())
def test_icmpv6_echo_both_directions(ident: int, seq: int, data: bytes, reply: bool) -> None:
    layer = ICMPv6EchoReply if reply else ICMPv6EchoRequest
    f = ok(bytes(ETH / IPv6(src=S6, dst=D6) / layer(id=ident, seq=seq, data=data)))
    assert (f.icmp6.type, f.icmp6.ident, f.icmp6.seq) == (129 if reply else 128, ident, seq)
    wire = encode_ipv6_frame(MAC_A, MAC_B, IP6_A, IP6_B, 58, icmp6.build_icmpv6_echo(IP6_A, IP6_B, ident, seq, data,
                                                                                    reply=reply))
    _scapy_icmp6_checksum_ok(wire)
    assert Ether(wire)[layer].data == data


def test_icmpv6_packet_too_big_mtu_and_quote_both_directions() -> None:
    original = bytes(IPv6(src=D6, dst=S6) / TCP(sport=443, dport=5000, seq=77) / (b"p" * 1400))
    wire = encode_ipv6_frame(MAC_B, MAC_A, IP6_B, IP6_A, 58, icmp6.build_packet_too_big(IP6_B, IP6_A, 1280, original))
    _scapy_icmp6_checksum_ok(wire)
    assert len(Ether(wire)[IPv6]) <= 1280 and Ether(wire)[ICMPv6PacketTooBig].mtu == 1280
    f = ok(bytes(ETH / IPv6(src=S6, dst=D6) / ICMPv6PacketTooBig(mtu=1400) / Raw(original[:200])))
    m = f.icmp6
    assert (m.mtu, m.quoted_src, m.quoted_dst, m.quoted_next_header) == (1400, IP6_B, IP6_A, 6)
    assert (m.quoted_sport, m.quoted_dport, m.quoted_seq) == (443, 5000, 77)


def test_icmpv6_bad_checksum_is_dropped() -> None:
    r = parse_frame(bytes(ETH / IPv6(src=S6, dst=D6) / ICMPv6EchoRequest(cksum=0x4321)))
    assert isinstance(r, Drop) and r.reason == DropReason.BAD_ICMPV6_CHECKSUM


# ------------------------------------------------------------------------------------------------- UDP


@given(sport=u16, dport=u16, data=st.binary(max_size=300), v6=st.booleans())
def test_udp_header_both_directions(sport: int, dport: int, data: bytes, v6: bool) -> None:
    l3 = IPv6(src=S6, dst=D6) if v6 else IP(src=S4, dst=D4)
    f = ok(bytes(ETH / l3 / UDP(sport=sport, dport=dport) / Raw(data)))
    assert (f.udp.src_port, f.udp.dst_port, bytes(f.udp.payload)) == (sport, dport, data)
    src, dst = (IP6_A, IP6_B) if v6 else (IP4_A, IP4_B)
    dgram = encode_udp(src, dst, sport, dport, data)
    p = (IPv6 if v6 else IP)(bytes((IPv6(src=S6, dst=D6, nh=17) if v6 else IP(src=S4, dst=D4, proto=17)) /
                                   Raw(dgram)))
    again = p[UDP].copy()
    del again.chksum
    assert bytes(again) == dgram and p[UDP].chksum != 0


def test_udp_zero_checksum_means_none_over_ipv4_but_is_dropped_over_ipv6() -> None:
    dgram = bytearray(encode_udp(IP4_A, IP4_B, 1, 2, b"abc"))
    dgram[6:8] = b"\0\0"
    assert not isinstance(parse_udp(memoryview(dgram), IP4_A, IP4_B), Drop)
    r = parse_udp(memoryview(dgram), IP6_A, IP6_B)
    assert isinstance(r, Drop) and r.reason == DropReason.BAD_UDP_CHECKSUM


def test_udp_length_beyond_the_datagram_is_dropped() -> None:
    r = parse_frame(bytes(ETH / IP(src=S4, dst=D4) / UDP(len=200) / Raw(b"x")))
    assert isinstance(r, Drop) and r.reason == DropReason.BAD_UDP_LENGTH
