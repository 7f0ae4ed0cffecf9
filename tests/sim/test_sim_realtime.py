"""RealTimeScheduler: monotonic timers, pipe readers/writers, stop reasons, no busy-spinning.
Every test is bounded to a few tens of milliseconds."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator

import pytest

from chimney.sim import NS_PER_MS, RealTimeScheduler, run_task, sleep


@pytest.fixture
def rt() -> Iterator[RealTimeScheduler]:
    with RealTimeScheduler() as sched:
        yield sched


@pytest.fixture
def pipe() -> Iterator[tuple[int, int]]:
    r, w = os.pipe()
    yield r, w
    os.close(r)
    os.close(w)


def test_timers_fire_in_order_and_not_early(rt: RealTimeScheduler) -> None:
    start = rt.now
    fired: list[tuple[str, int]] = []
    rt.call_later(6 * NS_PER_MS, lambda: fired.append(("b", rt.now)))
    rt.call_later(2 * NS_PER_MS, lambda: fired.append(("a", rt.now)))
    rt.call_at(start + 4 * NS_PER_MS, lambda: fired.append(("c", rt.now)))
    cancelled = rt.call_later(1 * NS_PER_MS, lambda: fired.append(("x", rt.now)))
    cancelled.cancel()
    assert rt.run_until() == "idle"
    assert [name for name, _ in fired] == ["a", "c", "b"]
    assert fired[0][1] - start >= 2 * NS_PER_MS
    assert fired[1][1] - start >= 4 * NS_PER_MS
    assert fired[2][1] - start >= 6 * NS_PER_MS


def test_pipe_reader_gets_data_written_by_a_timer(rt: RealTimeScheduler, pipe: tuple[int, int]) -> None:
    r, w = pipe
    received: list[bytes] = []
    rt.add_reader(r, lambda: received.append(os.read(r, 100)))
    rt.call_later(3 * NS_PER_MS, os.write, w, b"segment")
    why = rt.run_until(until=rt.now + 500 * NS_PER_MS, predicate=lambda: bool(received))
    assert why == "predicate"
    assert received == [b"segment"]
    assert rt.remove_reader(r) is True
    assert rt.remove_reader(r) is False
    assert rt.run_until() == "idle"  # no fds and no timers left


def test_until_with_nothing_to_do_sleeps_without_spinning(rt: RealTimeScheduler, pipe: tuple[int, int]) -> None:
    r, _ = pipe
    rt.add_reader(r, lambda: os.read(r, 100))
    selects = 0
    real_select = rt._selector.select

    def counting_select(timeout: float | None = None) -> list:  # type: ignore[type-arg]
        nonlocal selects
        selects += 1
        return real_select(timeout)

    rt._selector.select = counting_select  # type: ignore[method-assign]
    t0 = time.monotonic_ns()
    assert rt.run_until(until=t0 + 30 * NS_PER_MS) == "time"
    assert time.monotonic_ns() - t0 >= 30 * NS_PER_MS
    assert selects <= 3  # blocked in select, not polling


def test_writer_callback_fires_when_writable(rt: RealTimeScheduler, pipe: tuple[int, int]) -> None:
    _, w = pipe
    calls: list[int] = []
    rt.add_writer(w, calls.append, w)
    assert rt.run_until(until=rt.now + 200 * NS_PER_MS, max_events=2) == "max_events"
    assert calls == [w, w]
    assert rt.remove_writer(w) is True
    assert rt.run_until() == "idle"


def test_call_soon_chain_does_not_starve_the_reader(rt: RealTimeScheduler, pipe: tuple[int, int]) -> None:
    r, w = pipe
    got: list[bytes] = []
    spins = 0

    def busy() -> None:
        nonlocal spins
        spins += 1
        rt.call_soon(busy)

    rt.add_reader(r, lambda: got.append(os.read(r, 10)))
    os.write(w, b"x")
    rt.call_soon(busy)
    assert rt.run_until(until=rt.now + 500 * NS_PER_MS, predicate=lambda: bool(got)) == "predicate"
    assert got == [b"x"] and spins <= 2


def test_stop_from_another_thread_wakes_a_blocked_loop(rt: RealTimeScheduler, pipe: tuple[int, int]) -> None:
    r, _ = pipe
    rt.add_reader(r, lambda: os.read(r, 100))  # keeps the loop from being idle
    stopper = threading.Timer(0.01, rt.stop)
    stopper.start()
    t0 = time.monotonic()
    assert rt.run_until(until=rt.now + 800 * NS_PER_MS) == "stopped"
    assert time.monotonic() - t0 < 0.5
    stopper.join()


def test_keyboard_interrupt_propagates_and_the_scheduler_stays_usable(rt: RealTimeScheduler) -> None:
    def interrupt() -> None:
        raise KeyboardInterrupt

    rt.call_soon(interrupt)
    with pytest.raises(KeyboardInterrupt):
        rt.run_until()
    fired: list[int] = []
    rt.call_soon(fired.append, 1)
    assert rt.run_until() == "idle" and fired == [1]


def test_tasks_run_on_the_real_time_scheduler(rt: RealTimeScheduler) -> None:
    async def nap() -> int:
        t0 = rt.now
        await sleep(rt, 2 * NS_PER_MS)
        return rt.now - t0

    assert run_task(rt, nap(), until=rt.now + 500 * NS_PER_MS) >= 2 * NS_PER_MS


def test_bad_fds_are_rejected(rt: RealTimeScheduler) -> None:
    with pytest.raises(ValueError):
        rt.add_reader(-1, print)
    with pytest.raises(TypeError):
        rt.add_reader("not an fd", print)
    rt.close()
    with pytest.raises(RuntimeError, match="closed"):
        rt.run_until()
