"""The coroutine layer on the simulated clock: futures, spawn, sleep, wait_for timeouts, cancellation."""

from __future__ import annotations

import pytest

from chimney.sim import (
    NS_PER_MS,
    CancelledError,
    InvalidStateError,
    SimFuture,
    SimScheduler,
    gather,
    run_task,
    sleep,
    spawn,
    wait_for,
)


def test_future_resolves_once_and_runs_callbacks_in_order() -> None:
    fut: SimFuture[int] = SimFuture()
    seen: list[str] = []
    fut.add_done_callback(lambda f: seen.append(f"a{f.result()}"))
    fut.add_done_callback(lambda f: seen.append(f"b{f.result()}"))
    assert not fut.done()
    with pytest.raises(InvalidStateError):
        fut.result()
    fut.set_result(4)
    assert fut.done() and fut.result() == 4 and fut.exception() is None
    assert seen == ["a4", "b4"]
    fut.add_done_callback(lambda f: seen.append("late"))  # already done: runs at once
    assert seen == ["a4", "b4", "late"]
    with pytest.raises(InvalidStateError):
        fut.set_result(5)


def test_future_exception_and_cancel() -> None:
    bad: SimFuture[int] = SimFuture()
    bad.set_exception(ValueError("nope"))
    with pytest.raises(ValueError, match="nope"):
        bad.result()
    gone: SimFuture[int] = SimFuture()
    assert gone.cancel() and gone.cancelled()
    assert not gone.cancel()
    with pytest.raises(CancelledError):
        gone.result()


def test_tasks_sleep_on_the_virtual_clock_and_return_results() -> None:
    s = SimScheduler()
    log: list[tuple[int, str]] = []

    async def worker(name: str, delay: int) -> str:
        log.append((s.now, f"{name} start"))
        await sleep(s, delay)
        log.append((s.now, f"{name} woke"))
        return name.upper()

    a = spawn(s, worker("a", 3 * NS_PER_MS))
    b = spawn(s, worker("b", 1 * NS_PER_MS))
    assert s.run_until() == "idle"
    assert a.result() == "A" and b.result() == "B"
    assert log == [(0, "a start"), (0, "b start"), (NS_PER_MS, "b woke"), (3 * NS_PER_MS, "a woke")]


def test_task_awaits_a_future_resolved_by_a_timer_event() -> None:
    s = SimScheduler()
    completion: SimFuture[str] = SimFuture()
    s.call_later(5 * NS_PER_MS, completion.set_result, "send complete")

    async def waiter() -> tuple[int, str]:
        value = await completion
        return s.now, value

    assert run_task(s, waiter()) == (5 * NS_PER_MS, "send complete")


def test_task_exception_is_stored_in_the_task() -> None:
    s = SimScheduler()

    async def fails() -> None:
        await sleep(s, 10)
        raise KeyError("lost")

    t = spawn(s, fails())
    s.run_until()
    assert isinstance(t.exception(), KeyError)
    with pytest.raises(KeyError):
        t.result()


def test_wait_for_times_out_and_cancels_the_inner_task() -> None:
    s = SimScheduler()
    cleaned_up: list[int] = []

    async def slow() -> str:
        try:
            await sleep(s, 10 * NS_PER_MS)
            return "late"
        finally:
            cleaned_up.append(s.now)

    async def caller() -> str:
        try:
            return await wait_for(s, slow(), 2 * NS_PER_MS)
        except TimeoutError:
            return f"timeout at {s.now}"

    assert run_task(s, caller()) == f"timeout at {2 * NS_PER_MS}"
    s.run_until()
    assert cleaned_up == [2 * NS_PER_MS]  # cancelled at the timeout, its sleep timer withdrawn
    assert s.now == 2 * NS_PER_MS


def test_wait_for_returns_the_result_when_in_time() -> None:
    s = SimScheduler()

    async def quick() -> int:
        await sleep(s, NS_PER_MS)
        return 42

    async def caller() -> int:
        return await wait_for(s, quick(), 5 * NS_PER_MS)

    assert run_task(s, caller()) == 42
    assert s.now == NS_PER_MS
    assert s.run_until() == "idle" and s.now == NS_PER_MS  # the timeout timer was cancelled


def test_wait_for_on_a_plain_future_leaves_it_to_its_producer() -> None:
    s = SimScheduler()
    fut: SimFuture[int] = SimFuture()

    async def caller() -> None:
        await wait_for(s, fut, NS_PER_MS)

    with pytest.raises(TimeoutError):
        run_task(s, caller())
    assert not fut.done()
    fut.set_result(1)  # the producer can still complete it


def test_cancelling_a_task_throws_into_its_await() -> None:
    s = SimScheduler()
    steps: list[str] = []

    async def victim() -> None:
        try:
            await sleep(s, NS_PER_MS)
        except CancelledError:
            steps.append(f"cancelled at {s.now}")
            raise

    t = spawn(s, victim())
    s.call_later(100, t.cancel)
    s.run_until()
    assert t.cancelled() and steps == ["cancelled at 100"]
    assert s.now == 100


def test_awaiting_something_else_is_a_clear_error() -> None:
    s = SimScheduler()

    class NotAFuture:
        def __await__(self):  # type: ignore[no-untyped-def]
            yield "bogus"

    async def confused() -> None:
        await NotAFuture()

    t = spawn(s, confused())
    s.run_until()
    with pytest.raises(TypeError, match="only SimFuture"):
        t.result()


def test_run_task_reports_a_deadlock_instead_of_hanging() -> None:
    s = SimScheduler()
    never: SimFuture[None] = SimFuture()

    async def stuck() -> None:
        await never

    with pytest.raises(TimeoutError, match="idle"):
        run_task(s, stuck())


def test_task_steps_are_labelled_deterministically_in_the_trace() -> None:
    def run() -> str:
        s = SimScheduler(seed=5, trace=True)

        async def ping(n: int) -> None:
            for _ in range(n):
                await sleep(s, s.rng("ping").randrange(1, 100))

        spawn(s, ping(3))
        spawn(s, ping(2))
        s.run_until()
        return s.trace_text()

    text = run()
    assert text == run()
    assert "task test_task_steps_are_labelled_deterministically_in_the_trace.<locals>.run.<locals>.ping" in text
    assert "0x" not in text


def test_gather_collects_results_in_argument_order() -> None:
    s = SimScheduler()
    done_later: SimFuture[str] = SimFuture()
    s.call_later(3 * NS_PER_MS, done_later.set_result, "future")

    async def after(ns: int, value: int) -> int:
        await sleep(s, ns)
        return value

    async def main() -> list[object]:
        return await gather(s, after(2 * NS_PER_MS, 1), done_later, after(1 * NS_PER_MS, 2))

    assert run_task(s, main()) == [1, "future", 2]
    assert s.now == 3 * NS_PER_MS


def test_gather_fails_with_the_first_exception() -> None:
    s = SimScheduler()

    async def boom() -> None:
        await sleep(s, 5)
        raise ConnectionResetError("peer reset")

    async def fine() -> int:
        await sleep(s, 50)
        return 1

    async def main() -> list[object]:
        return await gather(s, fine(), boom())

    with pytest.raises(ConnectionResetError):
        run_task(s, main())
    assert s.now == 5
