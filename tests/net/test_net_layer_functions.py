"""The per-layer parse functions (for callers that already know the layer) agree with scapy and with the
inlined fast path of `parse_frame` on the same bytes, valid or mangled."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st
from netcodec_strategies import IP4_A, IP4_B, IP6_A, IP6_B, MAC_A, MAC_B, tcp_segments, u16, vlan_params
from scapy.layers.inet import IP
from scapy.layers.l2 import Dot1Q, Ether
from scapy.packet import Raw

from chimney.net import Drop, encode_tcp_frame, parse_frame
from chimney.net.ethernet import EthernetHeader, encode_ethernet, parse_ethernet
from chimney.net.ipv4 import Ipv4Header, parse_ipv4, write_ipv4_header
from chimney.net.ipv6 import Ipv6Header, parse_ipv6
from chimney.net.tcp import parse_tcp


@given(vlan=vlan_params, et=st.sampled_from([0x0800, 0x86DD, 0x0806, 0x88B5]))
def test_parse_ethernet_reads_what_encode_ethernet_wrote(vlan, et: int) -> None:
    hdr = encode_ethernet(MAC_B, MAC_A, et, *vlan)
    e = parse_ethernet(memoryview(hdr + b"rest"))
    assert isinstance(e, EthernetHeader)
    assert (e.dst, e.src, e.ethertype, bytes(e.payload)) == (MAC_B, MAC_A, et, b"rest")
    assert (e.vlan_id, e.vlan_prio) == ((None, None) if vlan == (0, 0) else vlan)


@given(ttl=st.integers(0, 255), tos=st.integers(0, 255), ident=u16, df=st.booleans(), plen=st.integers(0, 60))
def test_write_ipv4_header_parses_in_scapy_with_the_same_checksum(ttl, tos, ident, df, plen) -> None:
    buf = bytearray(20 + plen)
    write_ipv4_header(buf, 0, IP4_A, IP4_B, 17, plen, ttl=ttl, tos=tos, ident=ident, df=df)
    p = IP(bytes(buf))
    again = p.copy()
    del again.chksum
    assert bytes(again)[:20] == bytes(buf[:20])
    assert (p.ttl, p.tos, p.id, bool(int(p.flags) & 2), p.len) == (ttl, tos, ident, df, 20 + plen)
    h = parse_ipv4(memoryview(bytes(buf)))
    assert isinstance(h, Ipv4Header) and (h.ttl, h.tos, h.ident, h.df, h.total_len) == (ttl, tos, ident, df, 20 + plen)


@given(seg=tcp_segments(max_payload=80), v6=st.booleans(), vlan=vlan_params,
       flips=st.lists(st.tuples(st.integers(0, 200), st.integers(1, 255)), max_size=2))
def test_layer_functions_and_parse_frame_agree_on_valid_and_mangled_frames(seg, v6, vlan, flips) -> None:
    src, dst = (IP6_A, IP6_B) if v6 else (IP4_A, IP4_B)
    wire = bytearray(encode_tcp_frame(seg, eth_src=MAC_A, eth_dst=MAC_B, ip_src=src, ip_dst=dst,
                                      vlan_id=vlan[0], vlan_prio=vlan[1]))
    l2 = 14 if vlan == (0, 0) else 18
    for pos, x in flips:
        i = l2 + pos % (len(wire) - l2)  # keep the Ethernet header intact: compare the IP/TCP layers
        wire[i] ^= x
    whole = parse_frame(wire)
    e = parse_ethernet(memoryview(wire))
    assert isinstance(e, EthernetHeader)
    ip = parse_ipv6(e.payload) if v6 else parse_ipv4(e.payload)
    if isinstance(ip, Drop):
        assert isinstance(whole, Drop) and whole.reason == ip.reason
        return
    assert isinstance(ip, Ipv6Header | Ipv4Header)
    if (v6 and ip.l4_proto != 6) or (not v6 and ip.proto != 6) or ip.is_fragment:
        return  # a flip changed the protocol or made a fragment: covered by the malformed-input tests
    seg2 = parse_tcp(ip.payload, ip.src, ip.dst)
    if isinstance(seg2, Drop):
        assert isinstance(whole, Drop) and whole.reason == seg2.reason
        return
    assert not isinstance(whole, Drop) and whole.tcp is not None
    assert (whole.tcp.seq, whole.tcp.flags, bytes(whole.tcp.payload)) == (seg2.seq, seg2.flags, bytes(seg2.payload))
    assert whole.tcp.options == seg2.options


def test_parse_ipv4_trims_ethernet_padding_and_exposes_the_packet() -> None:
    wire = bytes(Ether() / Dot1Q(vlan=3) / IP(src="198.18.0.1", dst="198.18.0.2", proto=17) / Raw(b"ab"))
    e = parse_ethernet(memoryview(wire + b"\x00" * 10))
    h = parse_ipv4(e.payload)
    assert isinstance(h, Ipv4Header) and len(h.packet) == 22 and bytes(h.payload) == b"ab"


def test_strip_ipv4_options_undoes_inserted_options_and_leaves_other_frames_alone() -> None:
    from chimney.conformance.scenarios_data import _with_ip_options
    from chimney.net.frame import encode_tcp_frame, parse_frame, strip_ipv4_options
    from chimney.net.tcp import ACK, TcpSegment

    seg = TcpSegment(src_port=1000, dst_port=2000, seq=7, ack=9, flags=ACK, window=100, payload=b"data")
    plain = encode_tcp_frame(seg, eth_src=b"\x02" * 6, eth_dst=b"\x04" * 6, ip_src=bytes([198, 18, 0, 1]),
                             ip_dst=bytes([198, 18, 0, 2]))
    with_opts = _with_ip_options(plain)
    assert len(with_opts) == len(plain) + 4 and parse_frame(with_opts).has_ip_options  # type: ignore[union-attr]
    assert strip_ipv4_options(with_opts) == plain
    assert strip_ipv4_options(plain) == plain
