"""SimScheduler: timers, cancellation, same-time FIFO order, run_until stop reasons, RNG streams and
the deterministic event log."""

from __future__ import annotations

import functools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chimney.sim import NS_PER_MS, NS_PER_US, SimScheduler


def test_timers_fire_at_their_virtual_time_in_time_order() -> None:
    s = SimScheduler()
    fired: list[tuple[int, str]] = []
    s.call_later(3 * NS_PER_MS, lambda: fired.append((s.now, "c")))
    s.call_at(1 * NS_PER_MS, lambda: fired.append((s.now, "a")))
    s.call_later(2 * NS_PER_MS, lambda: fired.append((s.now, "b")))
    assert s.run_until() == "idle"
    assert fired == [(1 * NS_PER_MS, "a"), (2 * NS_PER_MS, "b"), (3 * NS_PER_MS, "c")]
    assert s.now == 3 * NS_PER_MS
    assert s.events_run == 3


def test_cancelled_timer_never_runs_and_is_not_pending() -> None:
    s = SimScheduler()
    fired: list[str] = []
    keep = s.call_later(10, fired.append, "keep")
    drop = s.call_later(5, fired.append, "drop")
    assert s.pending() == 2
    drop.cancel()
    assert s.pending() == 1
    assert s.next_time() == 10
    s.run_until()
    assert fired == ["keep"]
    keep.cancel()  # cancelling after it ran is harmless
    assert s.events_run == 1


def test_timer_cancelled_by_an_earlier_event_at_the_same_time() -> None:
    s = SimScheduler()
    fired: list[str] = []
    victim = s.call_at(100, fired.append, "victim")
    s.call_at(50, victim.cancel)
    s.run_until()
    assert fired == []


@given(st.lists(st.integers(min_value=0, max_value=5), min_size=1, max_size=40))
@settings(max_examples=60, deadline=None)
def test_same_time_events_run_fifo_by_insertion(times: list[int]) -> None:
    s = SimScheduler()
    order: list[int] = []
    for i, t in enumerate(times):
        s.call_at(t, order.append, i)
    s.run_until()
    # Stable sort by time == FIFO among equal times.
    assert order == sorted(range(len(times)), key=lambda i: times[i])


def test_call_soon_from_a_callback_runs_after_events_already_due_now() -> None:
    s = SimScheduler()
    order: list[str] = []

    def first() -> None:
        order.append("first")
        s.call_soon(order.append, "soon-from-first")

    s.call_at(10, first)
    s.call_at(10, order.append, "second")
    s.run_until()
    assert order == ["first", "second", "soon-from-first"]


def test_bad_times_are_rejected_clearly() -> None:
    s = SimScheduler(start_ns=1000)
    with pytest.raises(ValueError, match="past"):
        s.call_at(999, print)
    with pytest.raises(ValueError, match="negative"):
        s.call_later(-1, print)
    with pytest.raises(TypeError, match="int"):
        s.call_at(1000.5, print)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="past"):
        s.run_until(until=10)
    with pytest.raises(ValueError, match="max_events"):
        s.run_until(max_events=-1)


def test_run_until_time_runs_events_at_until_and_parks_the_clock_there() -> None:
    s = SimScheduler()
    fired: list[int] = []
    for t in (10, 20, 30):
        s.call_at(t, fired.append, t)
    assert s.run_until(until=20) == "time"
    assert fired == [10, 20]
    assert s.now == 20
    assert s.run_until(until=25) == "time"
    assert s.now == 25 and fired == [10, 20]
    assert s.run_until(until=1000) == "time"  # heap drained before `until`: clock still moves there
    assert fired == [10, 20, 30] and s.now == 1000


def test_run_until_predicate_is_checked_before_and_after_each_event() -> None:
    s = SimScheduler()
    box = {"n": 0}

    def bump() -> None:
        box["n"] += 1
        s.call_later(1, bump)

    s.call_soon(bump)
    assert s.run_until(predicate=lambda: box["n"] == 5) == "predicate"
    assert box["n"] == 5
    assert s.run_until(predicate=lambda: True) == "predicate"  # true up front: nothing runs
    assert box["n"] == 5


def test_run_until_max_events_and_idle() -> None:
    s = SimScheduler()
    fired: list[int] = []
    for i in range(5):
        s.call_later(i, fired.append, i)
    assert s.run_until(max_events=3) == "max_events"
    assert fired == [0, 1, 2]
    assert s.run_until(max_events=0) == "max_events"
    assert s.run_until() == "idle"
    assert fired == [0, 1, 2, 3, 4]
    assert s.run_until() == "idle"


def test_stop_from_a_callback_returns_stopped_after_that_event() -> None:
    s = SimScheduler()
    fired: list[int] = []
    s.call_at(1, fired.append, 1)
    s.call_at(2, s.stop)
    s.call_at(3, fired.append, 3)
    assert s.run_until() == "stopped"
    assert fired == [1] and s.now == 2
    assert s.run_until() == "idle"
    assert fired == [1, 3]


def test_step_runs_one_event_at_a_time() -> None:
    s = SimScheduler()
    fired: list[int] = []
    s.call_at(7, fired.append, 7)
    s.call_at(3, fired.append, 3).cancel()
    assert s.step() is True
    assert fired == [7] and s.now == 7
    assert s.step() is False


def test_rng_streams_are_independent_per_name_and_reproducible() -> None:
    a = SimScheduler(seed=42)
    b = SimScheduler(seed=42)
    # Drawing heavily from another stream first must not perturb "link".
    for _ in range(100):
        a.rng("cpus").random()
    assert [a.rng("link").random() for _ in range(10)] == [b.rng("link").random() for _ in range(10)]
    assert a.rng("link") is a.rng("link")
    c = SimScheduler(seed=42)
    assert c.rng("link").random() != c.rng("tcp").random()
    assert SimScheduler(seed=1).rng("link").random() != SimScheduler(seed=2).rng("link").random()


class _Conn:
    def __init__(self, s: SimScheduler, name: str) -> None:
        self.s = s
        self.name = name
        self.sent = 0

    def on_segment(self, seq: int) -> None:
        self.sent += 1
        if seq < 20:
            jitter = self.s.rng(f"link-{self.name}").randrange(1, 5 * NS_PER_US)
            self.s.call_later(jitter, self.on_segment, seq + 1)


def _traced_run(seed: int) -> str:
    s = SimScheduler(seed=seed, trace=True)
    conns = [_Conn(s, n) for n in ("a", "b", "c")]
    for c in conns:
        s.call_soon(c.on_segment, 0)
    rto = s.call_later(10 * NS_PER_MS, conns[0].on_segment, 99, label="rto")
    s.call_later(50 * NS_PER_US, rto.cancel, label="ack-cancels-rto")
    s.call_later(60 * NS_PER_US, functools.partial(conns[1].on_segment, 99))
    s.note("setup done")
    s.run_until()
    return s.trace_text()


def test_event_log_is_byte_identical_for_the_same_seed_and_free_of_addresses() -> None:
    first = _traced_run(7)
    assert first == _traced_run(7)
    assert first != _traced_run(8)
    assert "0x" not in first and " at " not in first
    lines = first.splitlines()
    assert lines[0] == "0 - setup done"
    assert "_Conn.on_segment" in lines[1]  # label defaults to the callable's __qualname__
    assert any(line.endswith(" ack-cancels-rto") for line in lines)
    assert not any(line.endswith(" rto") for line in lines)  # cancelled: never logged
    assert any(line.endswith(" partial(_Conn.on_segment)") for line in lines)


def test_trace_is_off_by_default() -> None:
    s = SimScheduler()
    s.call_soon(print)
    assert s.trace is None and s.trace_text() == ""


def test_simulated_scheduler_has_no_file_descriptors() -> None:
    with pytest.raises(NotImplementedError, match="simulated scheduler has no file descriptors"):
        SimScheduler().add_reader(0, print)
    with pytest.raises(NotImplementedError, match="simulated scheduler has no file descriptors"):
        SimScheduler().add_writer(1, print)
