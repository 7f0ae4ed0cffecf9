"""`chimney verify`: the scenario battery against the built-in offload target (every MUST rule passes, every
scenario works) and against the deliberately broken targets of examples/broken_targets.py, each of which
must be caught with the rule id it breaks."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from chimney.cli_verify import rules, verify
from chimney.conformance import SCENARIOS, VerifyReport, load_target, run_battery
from chimney.conformance.runner import FAIL, NOT_EXERCISED, PASS
from chimney.ndis.status import NdisStatus
from chimney.target import OffloadTarget

ROOT = Path(__file__).resolve().parents[2]
BROKEN_FILE = ROOT / "examples" / "broken_targets.py"


def cli() -> typer.Typer:
    app = typer.Typer()
    app.command()(verify)
    app.command()(rules)
    return app


@pytest.fixture(scope="module")
def builtin_report() -> VerifyReport:
    return run_battery(load_target(None), seed=1, quick=True)


def test_builtin_target_passes_every_must_rule_and_every_scenario(builtin_report: VerifyReport) -> None:
    r = builtin_report
    assert [s.name for s in r.scenarios] == [s.name for s in SCENARIOS]
    assert r.failed_must == [], [(x.id, x.first) for x in r.failed_must]
    assert r.functional_failures == [], [(s.name, s.failures) for s in r.functional_failures]
    assert r.failed_rules == []
    assert r.ok


def test_builtin_battery_exercises_the_rules_the_broken_targets_break(builtin_report: VerifyReport) -> None:
    """A pass means checked and never violated: the rules of the broken examples are all exercised."""
    for rid in ("R-OFF-01", "R-OFF-09", "R-SEND-03", "R-SEND-05", "R-TRM-12", "R-EVT-01", "R-IND-13"):
        assert builtin_report.rule(rid).result == PASS, rid
        assert builtin_report.rule(rid).checks >= 1
    counts = builtin_report.counts()["MUST"]
    assert counts[FAIL] == 0 and counts[PASS] >= 50
    # Every scenario drives at least one checked NDIS crossing.
    assert all(s.checked for s in builtin_report.scenarios)


def test_rule_table_lists_every_boundary_checked_rule_once(builtin_report: VerifyReport) -> None:
    from chimney.conformance.runner import checkable_rules

    ids = [x.id for x in builtin_report.rules]
    assert len(ids) == len(set(ids))
    assert checkable_rules() <= set(ids)
    assert {x.result for x in builtin_report.rules} <= {PASS, FAIL, NOT_EXERCISED}


# class -> (scenarios enough to catch it, rule ids the report must name as FAIL)
BROKEN: dict[str, tuple[list[str], tuple[str, ...]]] = {
    "OutOfOrderSendCompletion": (["upload-all"], ("R-SEND-03",)),
    "SynchronousInitiateCompletion": (["peer-fin"], ("R-OFF-01",)),
    "IndicatesBeforeInitiateCompletes": (["offload-established"], ("R-OFF-09",)),
    "ReordersSendsAtTerminate": (["offload-established"], ("R-TRM-12",)),
    "PartialSendReportedSuccess": (["offload-established"], ("R-SEND-05",)),
    "DisconnectBeforeDataConsumed": (["peer-fin-unread"], ("R-EVT-01",)),
}


@pytest.mark.parametrize("name", sorted(BROKEN))
def test_broken_target_is_caught_with_its_rule_id(name: str) -> None:
    only, want = BROKEN[name]
    report = run_battery(load_target(f"{BROKEN_FILE}:{name}"), seed=1, only=only, quick=True)
    failed = {x.id for x in report.failed_rules}
    for rid in want:
        assert rid in failed, f"{name}: {rid} not reported; failed {sorted(failed)}"
        assert report.rule(rid).first.startswith(tuple(only))  # "scenario: first violating event"
    assert not report.ok


def test_broken_targets_fail_the_full_battery_where_the_builtin_passes() -> None:
    """Caught by the whole (quick) battery as the CLI runs it, not only by a hand-picked scenario."""
    report = run_battery(load_target(f"{BROKEN_FILE}:DisconnectBeforeDataConsumed"), seed=1, quick=True)
    assert "R-EVT-01" in {x.id for x in report.failed_must}
    assert report.rule("R-EVT-01").scenarios == ["peer-fin-unread"]


def test_target_leaking_returned_indications_fails_functionally_with_the_leak_report() -> None:
    """R-IND-14 / leak: NBLs the host returned are never recycled; after halt NDIS still sees them live."""
    report = run_battery(load_target(f"{BROKEN_FILE}:LeaksReturnedIndications"), seed=1,
                         only=["offload-established"], quick=True)
    (sc,) = report.scenarios
    assert any("leak report" in f and "chimney-indications" in f for f in sc.failures), sc.failures
    assert not report.ok


class CrashingSend(OffloadTarget):
    """Raises inside MiniportTcpOffloadSend: the battery reports it, it does not crash."""

    def tcp_offload_send(self, adapter_context: Any, offload_context: Any, nbl: Any) -> NdisStatus:
        raise RuntimeError("firmware fault")


def test_a_target_raising_is_a_functional_failure_not_a_crash_of_the_battery() -> None:
    report = run_battery(CrashingSend, seed=1, only=["graceful-disconnect"], quick=True)
    (sc,) = report.scenarios
    assert any("RuntimeError: firmware fault" in f for f in sc.failures), sc.failures
    assert not report.ok


# ------------------------------------------------------------------------------------------- CLI


def test_cli_verify_builtin_exits_zero_with_json() -> None:
    res = CliRunner().invoke(cli(), ["verify", "--quick", "--json", "--only", "peer-fin", "--only", "slow-reader"])
    assert res.exit_code == 0, res.output
    data = json.loads(res.output)
    assert data["ok"] is True and data["target"] == "builtin"
    assert [s["name"] for s in data["scenarios"]] == ["peer-fin", "slow-reader"]
    assert data["counts"]["MUST"]["FAIL"] == 0


def test_cli_verify_module_class_form_catches_the_rule_and_exits_one(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)
    res = CliRunner().invoke(cli(), ["verify", "examples.broken_targets:SynchronousInitiateCompletion",
                                     "--quick", "--only", "peer-fin"])
    assert res.exit_code == 1, res.output
    assert "R-OFF-01" in res.output and "FAIL" in res.output
    assert "MUST failed: R-OFF-01" in res.output.replace("\n", " ")


def test_cli_verify_file_path_form() -> None:
    res = CliRunner().invoke(cli(), ["verify", f"{BROKEN_FILE}:ReordersSendsAtTerminate", "--quick", "--json",
                                     "--only", "offload-established"])
    assert res.exit_code == 1
    data = json.loads(res.output)
    failed = {r["id"]: r for r in data["rules"] if r["result"] == FAIL}
    assert "R-TRM-12" in failed
    assert failed["R-TRM-12"]["first"].startswith("offload-established: ")


@pytest.mark.parametrize("spec", ["nocolon", "examples/nope.py:X", f"{BROKEN_FILE}:NoSuchClass", "no_such_mod_xyz:C"])
def test_cli_verify_bad_target_exits_two(spec: str) -> None:
    res = CliRunner().invoke(cli(), ["verify", spec, "--quick"])
    assert res.exit_code == 2


def test_cli_verify_unknown_scenario_exits_two() -> None:
    res = CliRunner().invoke(cli(), ["verify", "--only", "no-such-scenario"])
    assert res.exit_code == 2
