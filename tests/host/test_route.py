"""Routing table lookups and path MTU learning from ICMP."""

from __future__ import annotations

import ipaddress

from chimney.host.route import PathMtuCache, RouteTable
from chimney.sim import NS_PER_S


def ip(s: str) -> bytes:
    return ipaddress.ip_address(s).packed


def test_longest_prefix_wins_and_metric_breaks_ties() -> None:
    rt = RouteTable()
    rt.add("0.0.0.0/0", "eth0", gateway="198.18.0.1", metric=10)
    rt.add("198.18.0.0/24", "eth0")
    rt.add("198.18.0.0/24", "eth1", metric=5)
    rt.add("2001:2::/48", "eth0")
    route, hop = rt.next_hop(ip("198.18.0.7"))
    assert route.interface == "eth0" and hop == ip("198.18.0.7")  # on-link: next hop is the destination
    route, hop = rt.next_hop(ip("198.19.5.5"))
    assert hop == ip("198.18.0.1")
    assert rt.lookup(ip("2001:2::9")).interface == "eth0"
    assert rt.lookup(ip("2001:3::1")) is None


def test_pmtu_only_decreases_has_a_floor_and_ages_out() -> None:
    c = PathMtuCache(aging=600 * NS_PER_S)
    seen: list[tuple[bytes, int]] = []
    c.listeners.append(lambda d, m: seen.append((d, m)))
    d = ip("198.18.0.1")
    assert c.get(d, 1500, 0) == 1500
    assert c.learn(d, 1400, 1500, 0) == 1400
    assert c.learn(d, 1450, 1400, 1) is None  # never raised by ICMP
    assert c.learn(d, 100, 1400, 2) == 576  # RFC 1122 floor
    assert c.get(d, 1500, 3) == 576
    assert c.get(d, 1500, 601 * NS_PER_S) == 1500
    assert seen == [(d, 1400), (d, 576)]


def test_frag_needed_without_next_hop_mtu_uses_the_plateau_table() -> None:
    c = PathMtuCache()
    assert c.learn(ip("198.18.0.1"), 0, 1500, 0) == 1492


def test_ipv6_floor_is_1280() -> None:
    c = PathMtuCache()
    assert c.learn(ip("2001:2::1"), 1000, 1500, 0) == 1280
