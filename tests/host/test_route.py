"""Routing table lookups and path MTU learning from ICMP."""

from __future__ import annotations

import ipaddress

import pytest

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
    assert seen == [(d, 1400), (d, 576)]
    assert c.get(d, 1500, 601 * NS_PER_S) == 1500  # aged out: back to the link MTU
    assert c.expire(601 * NS_PER_S) == [d]
    assert seen[-1] == (d, None)  # told as an increase, by expire()


def test_a_lookup_never_calls_the_pmtu_listeners_expire_tells_of_the_aged_estimate() -> None:
    """A listener (the chimney's OffloadManager) looks paths up and issues NdisUpdateOffload itself:
    `get`, called from inside every host path lookup, must not call it back. An aged estimate no longer
    counts for `get`; `expire` (at `deadline`) drops it and tells the listeners, once."""
    c = PathMtuCache(aging=10 * NS_PER_S)
    seen: list[tuple[bytes, int | None]] = []
    c.listeners.append(lambda d, m: seen.append((d, m)))
    d = ip("198.18.0.1")
    c.learn(d, 1400, 1500, 0)
    assert c.get(d, 1500, 10 * NS_PER_S) == 1500 and c.get(d, 1500, 11 * NS_PER_S) == 1500
    assert seen == [(d, 1400)]
    assert c.deadline(d) == 10 * NS_PER_S  # still there for the holder's timer
    assert c.expire(11 * NS_PER_S) == [d] and seen == [(d, 1400), (d, None)]
    assert c.expire(12 * NS_PER_S) == [] and len(seen) == 2


def test_a_new_report_drops_the_aged_estimates_of_other_destinations() -> None:
    """Without anyone running `expire`, aged estimates do not pile up: the next learned report drops them
    (and tells the listeners)."""
    c = PathMtuCache(aging=10 * NS_PER_S)
    seen: list[tuple[bytes, int | None]] = []
    c.listeners.append(lambda d, m: seen.append((d, m)))
    d1, d2 = ip("198.18.0.1"), ip("198.18.0.2")
    c.learn(d1, 1400, 1500, 0)
    c.learn(d2, 1300, 1500, 20 * NS_PER_S)
    assert c.entries() == {d2: 1300}
    assert seen == [(d1, 1400), (d1, None), (d2, 1300)]


def test_frag_needed_without_next_hop_mtu_uses_the_plateau_table() -> None:
    c = PathMtuCache()
    assert c.learn(ip("198.18.0.1"), 0, 1500, 0) == 1492


def test_ipv6_floor_is_1280() -> None:
    c = PathMtuCache()
    assert c.learn(ip("2001:2::1"), 1000, 1500, 0) == 1280


def test_route_listeners_hear_add_remove_and_replace_after_the_table_changed() -> None:
    rt = RouteTable()
    heard: list[tuple[str, str, bytes | None]] = []
    rt.listeners.append(lambda what, r: heard.append((what, str(r.network), rt.next_hop(ip("198.18.1.2"))[1]
                                                      if rt.lookup(ip("198.18.1.2")) else None)))
    rt.add("198.18.0.0/24", "eth0")
    onlink = rt.add("198.18.1.2/32", "eth0", mtu=1400)
    assert heard == [("add", "198.18.0.0/24", None), ("add", "198.18.1.2/32", ip("198.18.1.2"))]
    via = rt.replace(onlink, gateway="198.18.0.2")
    # One step: the lookup never misses the prefix; the fields not given are kept.
    assert heard[2:] == [("remove", "198.18.1.2/32", ip("198.18.0.2")), ("add", "198.18.1.2/32", ip("198.18.0.2"))]
    assert via.gateway == ip("198.18.0.2") and via.mtu == 1400 and via.interface == "eth0"
    assert rt.routes().count(via) == 1 and onlink not in rt.routes()
    back = rt.replace(via, gateway=None, mtu=None)
    assert back.gateway is None and back.mtu is None
    rt.remove(back)
    assert heard[-1] == ("remove", "198.18.1.2/32", None) and len(heard) == 7


def test_route_replace_rejects_a_gateway_of_the_other_family() -> None:
    rt = RouteTable()
    r = rt.add("198.18.1.0/24", "eth0")
    with pytest.raises(ValueError):
        rt.replace(r, gateway="2001:2::1")
    assert rt.routes() == [r]


def test_pmtu_aging_and_flush_tell_the_listeners_the_learned_value_is_gone() -> None:
    """An increase (the estimate ages out, RFC 1191 §6.3 / RFC 8201 §4, or is flushed) is told as None:
    the PMTU is back to the route MTU, which the cache does not know."""
    c = PathMtuCache(aging=10 * NS_PER_S)
    seen: list[tuple[bytes, int | None]] = []
    c.listeners.append(lambda d, m: seen.append((d, m)))
    d1, d2 = ip("198.18.0.1"), ip("198.18.0.2")
    c.learn(d1, 1400, 1500, 0)
    c.learn(d2, 1300, 1500, 5 * NS_PER_S)
    assert c.deadline(d1) == 10 * NS_PER_S and c.deadline(d2) == 15 * NS_PER_S
    assert c.expire(9 * NS_PER_S) == [] and seen == [(d1, 1400), (d2, 1300)]
    assert c.expire(10 * NS_PER_S) == [d1]
    assert seen[-1] == (d1, None) and c.deadline(d1) is None and c.get(d1, 1500, 10 * NS_PER_S) == 1500
    assert c.forget(d2) and not c.forget(d2)
    assert seen[-1] == (d2, None) and c.entries() == {}
