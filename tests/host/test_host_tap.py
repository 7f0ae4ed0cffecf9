"""The host stack's framing and path layers on a real wire: Linux pings us through a TAP device.

Runs in a fresh network namespace (198.18.0.0/15 and 2001:2::/48 only) and tears it down afterwards.
"""

from __future__ import annotations

import ipaddress
import time

import pytest

from chimney.host.ip import HostIp
from chimney.links.netns import TapTopology, kernel_supports_netns, ping_result
from chimney.links.tap import TapPort
from chimney.sim.realtime import RealTimeScheduler

pytestmark = pytest.mark.netns

_ok, _why = kernel_supports_netns()
requires_netns = pytest.mark.skipif(not _ok, reason=_why)


def _ping_while_serving(topo: TapTopology, sched: RealTimeScheduler, addr: str, count: int = 3) -> int:
    """Run Linux's ping in the namespace while our stack serves frames in this process."""
    p = topo.ns.ping_popen(addr, count=count, timeout_s=1.0, interval_s=0.2)
    deadline = time.monotonic() + count * 1.5 + 5
    while p.poll() is None and time.monotonic() < deadline:
        sched.run_until(until=sched.now + 50_000_000)
    return ping_result(p, timeout_s=5)


def _host(topo: TapTopology, sched: RealTimeScheduler) -> tuple[HostIp, TapPort]:
    host = HostIp(sched, "ours")
    port = topo.port(sched)
    host.add_interface("tap", topo.our_mac, port=port, mtu=topo.tap.mtu)
    host.add_address("tap", f"{topo.our_ip}/24")
    if topo.our_ip6:
        host.add_address("tap", f"{topo.our_ip6}/64")
    return host, port


@requires_netns
def test_linux_pings_our_ipv4_address_and_learns_our_mac() -> None:
    with TapTopology.unique() as topo:
        sched = RealTimeScheduler()
        host, _port = _host(topo, sched)
        assert _ping_while_serving(topo, sched, topo.our_ip) == 3
        assert host.counters["echo_replies"] >= 3 and host.counters["arp_replies"] >= 1
        neigh = topo.ns.exec(["ip", "neigh", "show", topo.our_ip]).stdout.lower()
        assert topo.our_mac.hex(":") in neigh
        # we learned Linux's MAC from its ARP request, without asking
        linux = ipaddress.ip_address(topo.linux_ip).packed
        assert host.neighbors["tap"].get(linux).mac == topo.linux_mac


@requires_netns
def test_linux_pings_our_ipv6_address_through_neighbor_discovery() -> None:
    with TapTopology.unique(linux_addr6="2001:2::1/64") as topo:
        sched = RealTimeScheduler()
        host, _port = _host(topo, sched)
        assert _ping_while_serving(topo, sched, "2001:2::2") == 3
        assert host.counters["na_sent"] >= 1 and host.counters["echo_replies"] >= 3
        neigh = topo.ns.exec(["ip", "-6", "neigh", "show", "2001:2::2"]).stdout.lower()
        assert topo.our_mac.hex(":") in neigh


@requires_netns
def test_loss_on_the_wire_shows_up_as_lost_pings() -> None:
    """Linux-side `tc netem` where the kernel has it; otherwise the same loss applied inside the TAP port."""
    from chimney.links.impair import Impairments
    from chimney.links.netns import ImpairmentUnsupported

    with TapTopology.unique() as topo:
        sched = RealTimeScheduler()
        _host_ip, port = _host(topo, sched)
        assert _ping_while_serving(topo, sched, topo.our_ip, count=2) == 2
        try:
            topo.set_netem(loss=100)
        except ImpairmentUnsupported:
            port.set_impairments(inbound=Impairments(loss=1.0))
        assert _ping_while_serving(topo, sched, topo.our_ip, count=3) == 0
