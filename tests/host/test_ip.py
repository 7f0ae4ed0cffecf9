"""Two simulated hosts on an emulated link: ARP/ND resolution, ICMP echo, VLANs, PMTU from ICMP."""

from __future__ import annotations

import ipaddress

import pytest

from chimney.host.ip import HostIp, IcmpError
from chimney.host.neighbor import NeighborState
from chimney.links.p2p import Link
from chimney.net.frame import Frame, encode_ipv4_frame, parse_frame
from chimney.net.icmp import ICMP_ECHO_REPLY, build_icmp_echo, build_icmp_frag_needed
from chimney.net.icmpv6 import build_icmpv6_echo, build_packet_too_big
from chimney.net.ipv4 import IPPROTO_ICMP
from chimney.net.ipv6 import NH_ICMPV6
from chimney.sim import NS_PER_MS, NS_PER_S, SimScheduler

MAC_A = bytes.fromhex("02000000000a")
MAC_B = bytes.fromhex("02000000000b")


def ip(s: str) -> bytes:
    return ipaddress.ip_address(s).packed


def two_hosts(vlan_a: int = 0, vlan_b: int = 0) -> tuple[SimScheduler, HostIp, HostIp, Link]:
    s = SimScheduler(seed=7)
    link = Link(s, "ab")
    a = HostIp(s, "A")
    b = HostIp(s, "B")
    a.add_interface("eth0", MAC_A, port=link.a, vlan_id=vlan_a)
    b.add_interface("eth0", MAC_B, port=link.b, vlan_id=vlan_b)
    a.add_address("eth0", "198.18.0.1/24")
    b.add_address("eth0", "198.18.0.2/24")
    a.add_address("eth0", "2001:2::1/64")
    b.add_address("eth0", "2001:2::2/64")
    s.run_until(10 * NS_PER_MS)
    return s, a, b, link


def test_ipv4_ping_resolves_with_arp_and_gets_a_reply() -> None:
    s, a, b, link = two_hosts()
    replies: list[Frame] = []
    link.a.set_receiver(lambda fr: (replies.append(parse_frame(fr)), a.input_frame(a.interfaces["eth0"], fr)))
    assert a.send_ip(ip("198.18.0.2"), IPPROTO_ICMP, build_icmp_echo(1, 1, b"hello"))
    s.run_until(s.now + 50 * NS_PER_MS)
    echo = [f for f in replies if isinstance(f, Frame) and f.icmp and f.icmp.type == ICMP_ECHO_REPLY]
    assert len(echo) == 1 and bytes(echo[0].icmp.data) == b"hello"
    assert a.neighbors["eth0"].get(ip("198.18.0.2")).mac == MAC_B
    assert a.neighbors["eth0"].get(ip("198.18.0.2")).state is NeighborState.REACHABLE
    # B learned A from the ARP request (RFC 826 merge), without soliciting
    assert b.neighbors["eth0"].get(ip("198.18.0.1")).mac == MAC_A
    assert b.counters["echo_replies"] == 1 and b.counters["arp_replies"] == 1


def test_ipv6_ping_resolves_with_neighbor_discovery() -> None:
    s, a, b, _ = two_hosts()
    a.neighbors["eth0"].flush()  # forget what B's unsolicited announcement taught us: resolve for real
    payload = build_icmpv6_echo(ip("2001:2::1"), ip("2001:2::2"), 9, 1, b"v6")
    assert a.send_ip(ip("2001:2::2"), NH_ICMPV6, payload)
    s.run_until(s.now + 50 * NS_PER_MS)
    assert a.neighbors["eth0"].get(ip("2001:2::2")).mac == MAC_B
    assert b.counters["na_sent"] >= 1 and b.counters["echo_replies"] == 1
    assert a.counters["echo_reply_in"] == 1


def test_vlan_mismatch_drops_and_matching_vlans_talk() -> None:
    s, a, b, _ = two_hosts(vlan_a=10, vlan_b=20)
    a.send_ip(ip("198.18.0.2"), IPPROTO_ICMP, build_icmp_echo(1, 1))
    s.run_until(s.now + 5 * NS_PER_S)
    assert b.drops["vlan_mismatch"] >= 1 and b.counters["echo_replies"] == 0
    s, a, b, _ = two_hosts(vlan_a=10, vlan_b=10)
    a.send_ip(ip("198.18.0.2"), IPPROTO_ICMP, build_icmp_echo(1, 1))
    s.run_until(s.now + 50 * NS_PER_MS)
    assert b.counters["echo_replies"] == 1


def test_unresolvable_neighbor_fails_after_retries() -> None:
    s, a, _, _ = two_hosts()
    assert a.send_ip(ip("198.18.0.99"), IPPROTO_ICMP, build_icmp_echo(1, 1))
    s.run_until(s.now + 10 * NS_PER_S)
    assert a.neighbors["eth0"].get(ip("198.18.0.99")).state is NeighborState.FAILED
    assert a.counters["solicits_sent"] >= 3


def test_no_route_is_a_counted_drop() -> None:
    _, a, _, _ = two_hosts()
    assert not a.send_ip(ip("203.0.113.1"), IPPROTO_ICMP, build_icmp_echo(1, 1))
    assert a.drops["no_route"] == 1


@pytest.mark.parametrize("family", [4, 6])
def test_frag_needed_lowers_the_path_mtu_and_reaches_transports(family: int) -> None:
    s, a, b, _ = two_hosts()
    src, dst = (ip("198.18.0.1"), ip("198.18.0.2")) if family == 4 else (ip("2001:2::1"), ip("2001:2::2"))
    path = a.path(src, dst)
    assert path is not None and path.mtu == 1500
    errors: list[IcmpError] = []
    a.error_listeners.append(errors.append)
    # a TCP segment A "sent", quoted back by B as if B were a router with a 1400-byte next hop
    from chimney.net.frame import encode_tcp_frame
    from chimney.net.tcp import ACK, TcpSegment

    seg = TcpSegment(40000, 80, 1234, 1, ACK, 100, b"x" * 1460)
    orig = encode_tcp_frame(seg, eth_src=MAC_A, eth_dst=MAC_B, ip_src=src, ip_dst=dst)[14:]
    if family == 4:
        b.send_ip(src, IPPROTO_ICMP, build_icmp_frag_needed(1400, orig))
    else:
        b.send_ip(src, NH_ICMPV6, build_packet_too_big(dst, src, 1400, orig))
    s.run_until(s.now + 50 * NS_PER_MS)
    assert len(errors) == 1
    e = errors[0]
    assert e.is_pmtu and e.mtu == 1400 and e.local_port == 40000 and e.remote_port == 80 and e.seq == 1234
    assert path.mtu == 1400 and a.path(src, dst).mtu == 1400


def test_frames_for_other_macs_and_addresses_are_dropped_and_counted() -> None:
    s, _a, b, link = two_hosts()
    other_mac = bytes.fromhex("020000000077")
    link.a.send(encode_ipv4_frame(MAC_A, other_mac, ip("198.18.0.1"), ip("198.18.0.2"), IPPROTO_ICMP,
                                  build_icmp_echo(1, 1)))
    link.a.send(encode_ipv4_frame(MAC_A, MAC_B, ip("198.18.0.1"), ip("198.18.0.50"), IPPROTO_ICMP,
                                  build_icmp_echo(1, 1)))
    link.a.send(MAC_B + MAC_A + b"\x08\x00" + b"\x45\x00\x00")  # truncated IPv4 header
    s.run_until(s.now + 10 * NS_PER_MS)
    assert b.drops["not_our_mac"] == 1 and b.drops["not_our_address"] == 1
    assert b.parse_drops.total == 1 and b.counters["echo_replies"] == 0
