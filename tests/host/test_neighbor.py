"""Neighbor cache scenarios: resolution, queueing while resolving, NUD states, address changes."""

from __future__ import annotations

from chimney.host.neighbor import NeighborCache, NeighborChange, NeighborConfig, NeighborState
from chimney.sim import NS_PER_S, SimScheduler

IP = bytes([198, 18, 0, 1])
MAC = bytes.fromhex("020000000001")
MAC2 = bytes.fromhex("020000000099")


def make_cache(**cfg: int) -> tuple[SimScheduler, NeighborCache, list[tuple[bytes, bool]], list]:
    s = SimScheduler(seed=1)
    solicits: list[tuple[bytes, bool]] = []
    changes: list = []
    cache = NeighborCache(
        s,
        lambda n, unicast: solicits.append((n.ip, unicast)),
        NeighborConfig(**cfg),
        on_change=lambda n, old: changes.append((n.ip, old, n.mac)),
    )
    return s, cache, solicits, changes


def test_first_packet_solicits_and_is_sent_when_the_reply_arrives() -> None:
    _, cache, solicits, _ = make_cache()
    sent: list[bytes] = []
    assert cache.resolve(IP, sent.append)
    assert solicits == [(IP, False)] and sent == []
    assert cache.get(IP).state is NeighborState.INCOMPLETE
    cache.learn(IP, MAC, solicited=True)
    assert sent == [MAC]
    assert cache.get(IP).state is NeighborState.REACHABLE


def test_queue_while_resolving_is_bounded_and_drops_the_oldest() -> None:
    _, cache, _, _ = make_cache(queue_limit=2)
    sent: list[str] = []
    for i in range(4):
        cache.resolve(IP, lambda mac, i=i: sent.append(f"p{i}"))
    cache.learn(IP, MAC, solicited=True)
    assert sent == ["p2", "p3"]
    assert cache.counters.queue_dropped == 2


def test_unanswered_resolution_retries_then_fails_and_drops_queued_packets() -> None:
    s, cache, solicits, _ = make_cache(max_multicast_solicit=3)
    cache.resolve(IP, lambda mac: None)
    s.run_until(10 * NS_PER_S)
    assert len(solicits) == 3
    assert cache.get(IP).state is NeighborState.FAILED
    assert cache.counters.failed == 1
    assert not cache.resolve(IP, lambda mac: None)  # FAILED entries refuse for a while


def test_reachable_goes_stale_then_delay_then_probe_and_confirmation_restores_reachable() -> None:
    s, cache, solicits, _ = make_cache()
    cache.resolve(IP, lambda mac: None)
    cache.learn(IP, MAC, solicited=True)
    s.run_until(31 * NS_PER_S)
    assert cache.get(IP).state is NeighborState.STALE
    sent: list[bytes] = []
    cache.resolve(IP, sent.append)  # a STALE entry is still used, and starts DELAY
    assert sent == [MAC] and cache.get(IP).state is NeighborState.DELAY
    s.run_until(s.now + 5 * NS_PER_S)
    assert cache.get(IP).state is NeighborState.PROBE
    assert solicits[-1] == (IP, True)  # unicast probe
    cache.confirm(IP)  # TCP forward progress
    assert cache.get(IP).state is NeighborState.REACHABLE


def test_probe_without_answer_fails_the_entry() -> None:
    s, cache, solicits, _ = make_cache()
    cache.resolve(IP, lambda mac: None)
    cache.learn(IP, MAC, solicited=True)
    s.run_until(31 * NS_PER_S)
    cache.resolve(IP, lambda mac: None)
    s.run_until(s.now + 20 * NS_PER_S)
    assert cache.get(IP).state is NeighborState.FAILED
    assert sum(1 for _, uni in solicits if uni) == 3


def test_gratuitous_arp_with_new_mac_updates_the_entry_and_notifies() -> None:
    _, cache, _, changes = make_cache()
    cache.resolve(IP, lambda mac: None)
    cache.learn(IP, MAC, solicited=True)
    cache.learn(IP, MAC2, solicited=False)
    n = cache.get(IP)
    assert n.mac == MAC2 and n.state is NeighborState.STALE
    assert changes == [(IP, MAC, MAC2)]
    assert cache.counters.mac_changes == 1


def test_unsolicited_announcement_creates_a_stale_entry_and_solicited_reply_without_request_is_ignored() -> None:
    _, cache, _, _ = make_cache()
    assert cache.learn(IP, MAC, solicited=True) is None
    n = cache.learn(IP, MAC, solicited=False)
    assert n is not None and n.state is NeighborState.STALE


def test_advertisement_without_override_does_not_replace_a_known_address() -> None:
    _, cache, _, changes = make_cache()
    cache.resolve(IP, lambda mac: None)
    cache.learn(IP, MAC, solicited=True)
    cache.learn(IP, MAC2, solicited=True, override=False)
    n = cache.get(IP)
    assert n.mac == MAC and n.state is NeighborState.STALE and changes == []


def test_listeners_hear_a_new_mac_a_failure_and_a_removal_as_they_happen() -> None:
    """NeighborCache.listeners: the chimney's real causes (update on a new MAC, invalidate on FAILED or
    removed), each told once, at the moment the cache changes."""
    s, cache, _, _ = make_cache(max_unicast_solicit=2)
    heard: list[tuple[NeighborChange, bytes | None, int]] = []
    cache.listeners.append(lambda n, change, old: heard.append((change, old, s.now)))
    cache.resolve(IP, lambda mac: None)
    cache.learn(IP, MAC, solicited=True)
    assert heard == []  # first resolution: nothing to follow
    cache.learn(IP, MAC2, solicited=False)
    assert heard == [(NeighborChange.MAC, MAC, 0)]
    cache.resolve(IP, lambda mac: None)  # STALE -> DELAY -> PROBE, unanswered
    s.run_until(s.now + 20 * NS_PER_S)
    n = cache.get(IP)
    assert n.state is NeighborState.FAILED
    assert heard[1] == (NeighborChange.FAILED, MAC2, n.failed_at) and len(heard) == 2
    cache.remove(IP)
    assert heard[2][:2] == (NeighborChange.REMOVED, MAC2) and len(heard) == 3
    cache.remove(IP)  # nothing left: no event
    assert len(heard) == 3
