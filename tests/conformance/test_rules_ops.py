"""The state-operation scenarios of `chimney verify` (conformance/scenarios_ops.py): the built-in target passes
every rule they check, and each deliberately broken target of examples/broken_ops_targets.py is caught with
exactly the rule id it breaks."""

from __future__ import annotations

from pathlib import Path

import pytest

from chimney.conformance import VerifyReport, load_target, run_battery
from chimney.conformance.runner import FAIL, PASS
from chimney.conformance.scenarios_ops import OPS_SCENARIOS

ROOT = Path(__file__).resolve().parents[2]
BROKEN_FILE = ROOT / "examples" / "broken_ops_targets.py"
OPS = [s.name for s in OPS_SCENARIOS]

# Every rule the ops scenarios decide, with the scenarios that must have checked it on the built-in target.
RULES: dict[str, tuple[str, ...]] = {
    "R-QRY-01": ("query-states",),
    "R-QRY-03": ("query-states",),
    "R-QRY-05": ("query-states",),
    "R-QRY-07": ("query-states", "rtt-descaling"),
    "R-QRY-09": ("hardware-failure",),
    "R-UPD-01": ("update-flags",),
    "R-UPD-06": ("update-flags",),
    "R-UPD-07": ("query-states",),
    "R-UPD-09": ("update-flags",),
    "R-UPD-10": ("update-flags",),
    "R-UPD-11": ("update-flags",),
    "R-UPD-12": ("update-flags",),
    "R-INV-01": ("invalidate-hold",),
    "R-INV-03": ("invalidate-hold",),
    "R-INV-05": ("invalidate-hold",),
    "R-INV-06": ("invalidate-hold", "hardware-failure"),
    "R-TRM-27": ("hardware-failure",),
    "R-NBR-03": ("neighbor-reachability",),
    "R-NBR-09": ("neighbor-reachability",),
    "R-STAT-03": ("offload-statistics",),
    "R-STAT-05": ("offload-statistics",),
    "R-STAT-08": ("offload-statistics",),
    "R-STAT-09": ("offload-statistics",),
    "R-INIT-05": ("refused-offload-handlers",),
    "R-INIT-14": ("rtt-descaling", "ticks-100", "ticks-10"),
    "R-OFF-25": ("rtt-descaling", "ticks-100", "ticks-10"),
    "R-TMR-22": ("rtt-descaling", "ticks-100", "ticks-10"),
    "R-TS-03": ("rtt-descaling", "ticks-100", "ticks-10"),
    "R-TS-06": ("rtt-descaling", "ticks-100", "ticks-10"),
    "R-TMR-15": ("persist-state",),
    "R-EVT-09": ("persist-state",),
    "R-TMR-01": ("update-flags", "rtt-descaling", "persist-state"),
    "R-TMR-02": ("update-flags",),
    "R-TMR-20": ("rtt-descaling",),
    "R-TRM-07": ("rtt-descaling",),
}


@pytest.fixture(scope="module")
def builtin_ops() -> VerifyReport:
    return run_battery(load_target(None), seed=1, only=OPS, quick=True)


def test_builtin_target_passes_every_ops_scenario_and_rule(builtin_ops: VerifyReport) -> None:
    r = builtin_ops
    assert [s.name for s in r.scenarios] == OPS
    assert r.functional_failures == [], [(s.name, s.failures) for s in r.functional_failures]
    assert r.failed_rules == [], [(x.id, x.first) for x in r.failed_rules]


@pytest.mark.parametrize("rule_id", sorted(RULES))
def test_builtin_target_is_checked_and_passes(builtin_ops: VerifyReport, rule_id: str) -> None:
    """Each rule is checked (not just 'not exercised') by the scenarios that own it, and holds."""
    assert builtin_ops.rule(rule_id).result == PASS
    by_name = {s.name: s for s in builtin_ops.scenarios}
    for name in RULES[rule_id]:
        assert rule_id in by_name[name].checked, (rule_id, name)


# class -> (scenarios enough to catch it, the rule id the report must name as FAIL)
BROKEN: dict[str, tuple[list[str], str]] = {
    "SynchronousQueryCompletion": (["query-states"], "R-QRY-01"),
    "BacklogSizeLeftEmpty": (["query-states"], "R-QRY-05"),
    "UnscaledQueriedRtt": (["query-states"], "R-QRY-07"),
    "SelfTuningReceiveWindow": (["query-states"], "R-UPD-07"),
    "SynchronousUpdateCompletion": (["update-flags"], "R-UPD-01"),
    "IgnoresKeepAliveRestart": (["update-flags"], "R-UPD-09"),
    "IgnoresMaxRtRestart": (["update-flags"], "R-UPD-10"),
    "KeepAliveCountNotReset": (["update-flags"], "R-UPD-11"),
    "KeepAliveNeverDisabled": (["update-flags"], "R-UPD-12"),
    "SixteenBitTimers": (["update-flags"], "R-TMR-02"),
    "IgnoresTicksPerSecond": (["ticks-10"], "R-INIT-14"),
    "UncountedEstablishedResets": (["offload-statistics"], "R-STAT-09"),
    "BacklogFollowsPostedBytes": (["persist-state"], "R-EVT-09"),
    "SendsAfterInvalidate": (["invalidate-hold"], "R-INV-03"),
    "FreesInvalidatedState": (["invalidate-hold"], "R-INV-05"),
    "HardwareFailureWithoutAbort": (["hardware-failure"], "R-QRY-09"),
    "NeverConfirmsReachability": (["neighbor-reachability"], "R-NBR-03"),
    "SkipsStalenessWithoutProgress": (["neighbor-reachability"], "R-NBR-09"),
    "SaturatingStatsCounters": (["offload-statistics"], "R-STAT-05"),
    "UncountedRetransmissions": (["offload-statistics"], "R-STAT-08"),
    "UndescaledDelegatedRtt": (["rtt-descaling"], "R-OFF-25"),
    "StaleTsRecentAtTerminate": (["rtt-descaling"], "R-TS-06"),
    "TouchesRefusedHandlers": (["refused-offload-handlers"], "R-INIT-05"),
    # R-INIT-05: the old scenario judged only MiniportInitializeEx; this one keeps the table and uses it later.
    "UsesRefusedHandlersLater": (["refused-offload-handlers"], "R-INIT-05"),
}


def _caught(name: str) -> VerifyReport:
    only, rule_id = BROKEN[name]
    report = run_battery(load_target(f"{BROKEN_FILE}:{name}"), seed=1, only=only, quick=True)
    assert report.rule(rule_id).result == FAIL, [(r.id, r.first) for r in report.failed_rules]
    assert not report.ok
    return report


@pytest.mark.parametrize("name", sorted(BROKEN), ids=lambda n: f"{BROKEN[n][1].lower().replace('-', '_')}_{n}")
def test_broken_ops_target_is_caught_with_its_rule_id(name: str) -> None:
    _caught(name)


def test_r_tmr_22_undescaled_rtt_gives_a_late_retransmission() -> None:
    """Taking SRtt/RttVar as plain ticks makes the RTO about 8x too long: RFC 2988 timing fails too."""
    report = _caught("UndescaledDelegatedRtt")
    assert report.rule("R-TMR-22").result == FAIL
    assert "first retransmission" in report.rule("R-TMR-22").first


def test_r_inv_06_hardware_failure_without_abort_breaks_the_invalidate_sequence_too() -> None:
    report = _caught("HardwareFailureWithoutAbort")
    assert report.rule("R-INV-06").result == FAIL
    assert "want ['op-failed', 'retrieve-hw', 'abort'" in report.rule("R-QRY-09").first
