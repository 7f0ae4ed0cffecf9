"""Learning switch: flooding of unknown/broadcast/multicast, learning, filtering, ageing, impaired ports."""

from __future__ import annotations

import pytest

from chimney.links import DropCause, Impairments, Link, Port, Switch
from chimney.sim import NS_PER_MS, NS_PER_S, NS_PER_US, SimScheduler

BROADCAST = b"\xff" * 6
MULTICAST = bytes.fromhex("01005e000001")


def mac(n: int) -> bytes:
    return bytes([2, 0, 0, 0, 0, n])


def frame(dst: bytes, src: bytes, tag: int = 0) -> bytes:
    return dst + src + b"\x88\xb5" + bytes([tag]) * 46


class Host:
    """A host with one MAC that records what reaches it."""

    def __init__(self, sched: SimScheduler, port: Port, n: int) -> None:
        self.sched = sched
        self.port = port
        self.mac = mac(n)
        self.got: list[tuple[int, bytes]] = []
        port.set_receiver(lambda f: self.got.append((sched.now, f)))

    def send(self, dst: bytes, tag: int = 0) -> bytes:
        f = frame(dst, self.mac, tag)
        self.port.send(f)
        return f

    def tags(self) -> list[int]:
        return [f[14] for _, f in self.got]


def build(n_hosts: int, **kw: int) -> tuple[SimScheduler, Switch, list[Host]]:
    sched = SimScheduler(seed=1)
    sw = Switch(sched, "sw", **kw)
    hosts = [Host(sched, sw.add_port(), i + 1) for i in range(n_hosts)]
    return sched, sw, hosts


def test_unknown_unicast_is_flooded_then_learned_destination_gets_it_alone() -> None:
    sched, sw, (h1, h2, h3) = build(3)
    h1.send(h2.mac, tag=1)  # h2 unknown: flooded to h2 and h3, never back to h1
    sched.run()
    assert (h1.tags(), h2.tags(), h3.tags()) == ([], [1], [1])
    h2.send(h1.mac, tag=2)  # h1 was learned from frame 1: only h1 gets it
    sched.run()
    assert (h1.tags(), h2.tags(), h3.tags()) == ([2], [1], [1])
    h1.send(h2.mac, tag=3)  # both learned now
    sched.run()
    assert (h1.tags(), h2.tags(), h3.tags()) == ([2], [1, 3], [1])
    assert sw.table() == {"02:00:00:00:00:01": 0, "02:00:00:00:00:02": 1}
    assert sw.counters.flooded == 1 and sw.counters.forwarded == 2 and sw.counters.learned == 2


@pytest.mark.parametrize("dst", [BROADCAST, MULTICAST], ids=["broadcast", "multicast"])
def test_group_destinations_always_flood(dst: bytes) -> None:
    sched, _sw, (h1, h2, h3, h4) = build(4)
    for h in (h1, h2, h3, h4):
        h.send(BROADCAST, tag=9)  # everybody learned
    sched.run()
    for h in (h1, h2, h3, h4):
        h.got.clear()
    h3.send(dst, tag=5)
    sched.run()
    assert [h.tags() for h in (h1, h2, h3, h4)] == [[5], [5], [], [5]]


def test_group_source_address_is_never_learned() -> None:
    sched, sw, (h1, _h2) = build(2)
    h1.port.send(frame(mac(2), MULTICAST))
    sched.run()
    assert sw.table() == {}


def test_frame_to_a_host_on_the_ingress_port_is_filtered() -> None:
    sched, sw, (h1, h2) = build(2)
    h1.send(BROADCAST)
    sched.run()
    # h2 sends a frame addressed to its own MAC: the switch knows h2 is on the ingress port
    h2.send(BROADCAST)
    sched.run()
    h2.got.clear()
    h2.send(h2.mac)
    sched.run()
    assert h2.got == [] and h1.tags() == [0]  # h1 has only the first broadcast of h2
    assert sw.counters.filtered == 1


def test_entries_age_out_and_unknown_destination_floods_again() -> None:
    sched, sw, (h1, h2, h3) = build(3, ageing_ns=2 * NS_PER_S)
    h2.send(BROADCAST)
    sched.run()
    h1.send(h2.mac, tag=1)
    sched.run()
    assert h3.tags() == [0]  # only the broadcast
    sched.run_until(sched.now + 3 * NS_PER_S)
    assert sw.lookup(h2.mac) is None
    h1.send(h2.mac, tag=2)
    sched.run()
    assert h3.tags() == [0, 2]  # flooded again after ageing
    assert sw.counters.aged_out == 1


def test_refreshed_entry_does_not_age_and_expire_sweeps_old_ones() -> None:
    sched, sw, (h1, h2, _h3) = build(3, ageing_ns=2 * NS_PER_S)
    h1.send(BROADCAST)
    h2.send(BROADCAST)
    for t in (1, 2, 3):
        sched.run_until(t * NS_PER_S)
        h1.send(BROADCAST)  # h1 keeps talking, h2 is silent
    sched.run()
    assert sw.expire() == 1
    assert sw.table() == {"02:00:00:00:00:01": 0}


def test_station_move_is_relearned() -> None:
    sched, sw, (h1, h2, h3) = build(3)
    h1.send(BROADCAST)
    sched.run()
    h3.port.send(frame(BROADCAST, h1.mac))  # h1's MAC now appears behind port 2
    sched.run()
    assert sw.lookup(h1.mac) is sw.ports[2]
    assert sw.counters.moved == 1
    h2.send(h1.mac, tag=4)
    sched.run()
    assert 4 in h3.tags() and 4 not in h1.tags()


def test_table_limit_counts_unlearned_sources() -> None:
    sched, sw, (h1, h2) = build(2, max_entries=1)
    h1.send(BROADCAST)
    h2.send(BROADCAST)
    sched.run()
    assert len(sw.table()) == 1 and sw.counters.table_full == 1


def test_hosts_behind_links_with_delays_and_impaired_switch_port() -> None:
    sched = SimScheduler(seed=2)
    sw = Switch(sched, "core")
    l1 = Link(sched, "h1-sw", Impairments(delay_ns=10 * NS_PER_US), Impairments(delay_ns=10 * NS_PER_US))
    l2 = Link(sched, "h2-sw", Impairments(delay_ns=20 * NS_PER_US), Impairments(delay_ns=20 * NS_PER_US))
    sw.add_port(peer=l1.b)
    # port toward h2 forwards at 10 Mbit/s with 1 ms extra latency
    p2 = sw.add_port(peer=l2.b, impairments=Impairments(rate_bps=10_000_000, delay_ns=NS_PER_MS))
    h1, h2 = Host(sched, l1.a, 1), Host(sched, l2.a, 2)
    f = h1.send(BROADCAST)
    sched.run()
    # 10 us to the switch, 60 B * 800 ns serialization + 1 ms at the egress port, 20 us to h2
    assert h2.got == [(10_000 + 48_000 + 1_000_000 + 20_000, f)]
    h2.send(h1.mac, tag=7)
    sched.run()
    assert h1.tags() == [7] and h1.got[0][0] - 1_078_000 == 20_000 + 10_000
    assert p2.egress.counters.delivered == 1


def test_switch_port_mtu_and_runt_drops() -> None:
    sched = SimScheduler()
    sw = Switch(sched, "sw")
    p0 = sw.add_port(impairments=Impairments(mtu=1000))
    sw.add_port()
    p0.send(frame(BROADCAST, mac(1)) + bytes(1000))
    p0.send(b"\x00" * 10)
    sched.run()
    assert p0.counters.dropped[DropCause.MTU] == 1
    assert p0.counters.dropped[DropCause.RUNT] == 1
    assert sw.counters.frames_in == 0


def test_impaired_switch_port_is_deterministic_per_seed() -> None:
    def run(seed: int) -> list[int]:
        sched = SimScheduler(seed=seed)
        sw = Switch(sched, "lossy")
        src = Host(sched, sw.add_port(), 1)
        dst = Host(sched, sw.add_port(impairments=Impairments(loss=0.3)), 2)
        for i in range(200):
            src.send(BROADCAST, tag=i)
        sched.run()
        return dst.tags()

    assert run(1) == run(1)
    assert run(1) != run(2)
    assert 100 < len(run(1)) < 180


def test_invalid_ageing_rejected() -> None:
    with pytest.raises(ValueError):
        Switch(SimScheduler(), "bad", ageing_ns=0)
