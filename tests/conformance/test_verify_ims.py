"""`chimney verify --ims N` (issue 6): the same scenario battery through stacks of 1 and 3 pass-through
chimney IMs (§3.8): the built-in target passes it all, the IMs are invisible on the wire, and the probes
observe host A's and the target's edges once each (not again at every IM edge in between)."""

from __future__ import annotations

import contextlib
from typing import Any

import pytest

from chimney.conformance import SCENARIOS, VerifyReport, load_target, run_battery
from chimney.conformance.runner import PASS, select
from chimney.conformance.scenarios import Bench, Scenario, ScenarioAbort
from chimney.conformance.scenarios_data import DataProbe
from chimney.conformance.scenarios_ops import OpsProbe
from chimney.filters.passthrough import PassThroughChimneyIm
from chimney.ndis.verifier import Mode, Verifier

# The IM rules a pass-through IM meets on every propagation; each must be checked and hold.
IM_RULES = ("R-IM-04", "R-IM-05", "R-IM-06", "R-IM-07", "R-IM-08", "R-IM-09", "R-IM-10")
# The scenarios whose probes once counted an IM's re-issue as a second host request or target completion.
ONCE_MISCOUNTED = ("query-states", "disconnect-graceful-sends", "forward-ip-options")


@pytest.fixture(scope="module", params=[1, 3], ids=["ims1", "ims3"])
def im_report(request: pytest.FixtureRequest) -> tuple[int, VerifyReport]:
    return request.param, run_battery(load_target(None), seed=1, quick=True, ims=request.param)


def test_builtin_target_passes_every_must_and_every_scenario_through_an_im_stack(
    im_report: tuple[int, VerifyReport],
) -> None:
    _ims, r = im_report
    assert [s.name for s in r.scenarios] == [s.name for s in SCENARIOS]
    assert r.failed_must == [], [(x.id, x.first) for x in r.failed_must]
    assert r.functional_failures == [], [(s.name, s.failures) for s in r.functional_failures]
    assert {s.name: s.violations for s in r.scenarios if s.violations} == {}
    assert r.ok


def test_the_im_rules_are_checked_at_every_im_edge_and_hold(im_report: tuple[int, VerifyReport]) -> None:
    """The IMs really sit in the path: ConformanceImChecks judged their propagations in most scenarios."""
    _ims, r = im_report
    for rid in IM_RULES:
        res = r.rule(rid)
        assert res.result == PASS and res.checks >= 20, (rid, res)


def _bench(sc: Scenario, ims: int, seed: int = 1) -> tuple[Bench, list[tuple[int, str, bytes]]]:
    bench = Bench(load_target(None), seed, Verifier(Mode.RECORD), impairments=sc.impairments,
                  target_options=sc.target_options, ticks_per_second=sc.ticks_per_second, ims=ims)
    frames: list[tuple[int, str, bytes]] = []
    bench.p.link.a.add_observer(lambda d, f, _m: frames.append((bench.sched.now, d, bytes(f))))
    with contextlib.suppress(ScenarioAbort):
        sc.run(bench, True)
    return bench, frames


def test_three_ims_are_invisible_on_the_wire() -> None:
    """Every scenario puts the same frames, at the same simulated instants, on host A's wire with 0 and
    with 3 IMs between host and target: the stack adds, drops, delays and reorders nothing."""
    differ: list[tuple[str, int, int, int]] = []
    for sc in select(None):
        b0, w0 = _bench(sc, 0)
        b3, w3 = _bench(sc, 3)
        assert b0.p.ims == () and len(b3.p.ims) == 3
        assert all(type(im) is PassThroughChimneyIm for im in b3.p.ims)
        if w0 != w3:
            first = next((i for i, (x, y) in enumerate(zip(w0, w3, strict=False)) if x != y), min(len(w0), len(w3)))
            differ.append((sc.name, len(w0), len(w3), first))
    assert differ == []


@pytest.mark.parametrize("name", ONCE_MISCOUNTED)
def test_probes_see_the_same_requests_and_completions_with_and_without_ims(name: str) -> None:
    """With 3 IMs the probes record what they record with none: each NBL host A sent down once (an IM
    re-issues the same NBL on its own handle), each completed, and each state completion the target's
    only (the IMs complete it upward again)."""
    sc = next(s for s in SCENARIOS if s.name == name)
    seen: list[tuple[Any, ...]] = []
    for ims in (0, 3):
        bench, _w = _bench(sc, ims)
        assert bench.failures == [], (ims, bench.failures)
        data: Any = getattr(bench, "data_probe", None)
        ops: Any = getattr(bench, "ops_probe", None)
        assert data is not None or ops is not None
        io: tuple[Any, ...] = ()
        if data is not None:
            assert isinstance(data, DataProbe)
            ids = [id(r.nbl) for r in data.io]
            assert ids and len(ids) == len(set(ids)), ims
            assert all(r.done_at is not None for r in data.io), (ims, [r for r in data.io if r.done_at is None])
            io = tuple((r.kind, r.length, r.status, r.transferred) for r in data.io)
            io += (len(data.terminated), len(data.normal))
        if ops is not None:
            assert isinstance(ops, OpsProbe)
            io += (tuple(sorted(ops.completed.items())),)
        seen.append(io)
    assert seen[0] == seen[1]
