"""`chimney verify` (the conformance battery against an offload target class) and `chimney rules` (where
each catalogue rule is enforced); plain functions the main CLI registers as commands.
"""

from __future__ import annotations

import json
import sys
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from chimney.conformance.catalogue_report import MANDATORY, rule_coverage, summary, to_json
from chimney.conformance.harness import load_target
from chimney.conformance.runner import FAIL, NOT_EXERCISED, PASS, VerifyReport, run_battery
from chimney.conformance.scenarios import SCENARIOS

_STYLE = {PASS: "green", FAIL: "bold red", NOT_EXERCISED: "dim"}


def _console() -> Console:
    return Console(width=None if sys.stdout.isatty() else 160)


def verify(
    target: Annotated[str | None, typer.Argument(
        help="Offload target class as MODULE:CLASS or path/to/file.py:CLASS (same constructor as "
             "OffloadTarget(name, nic, scheduler, limits)); default: the built-in target.")] = None,
    seed: Annotated[int, typer.Option(help="Seed of the simulation (same seed, same run).")] = 1,
    only: Annotated[list[str] | None, typer.Option(
        "--only", help="Run only this scenario (repeatable); see the scenario table for names.")] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print one JSON object instead of tables.")] = False,
    quick: Annotated[bool, typer.Option("--quick", help="Smaller transfers (same scenarios, same checks).")] = False,
    ims: Annotated[int, typer.Option("--ims", min=0, max=16,
                                     help="Pass-through intermediate drivers between host and target.")] = 0,
) -> None:
    """Run the scenario battery against an offload target with the host stack and the contract verifier
    (RECORD mode) as counterpart. Exit 1 if a MUST rule fails or a scenario fails functionally, 2 on bad
    arguments."""
    try:
        factory = load_target(target)
    except (ValueError, ImportError) as e:
        typer.echo(f"chimney verify: {e}", err=True)
        raise typer.Exit(2) from None
    try:
        report = run_battery(factory, seed=seed, only=only or None, quick=quick, target_name=target or "builtin",
                             ims=ims)
    except ValueError as e:
        typer.echo(f"chimney verify: {e}", err=True)
        raise typer.Exit(2) from None
    if json_out:
        typer.echo(json.dumps(report.to_json(), indent=2))
    else:
        _print_report(report)
    raise typer.Exit(0 if report.ok else 1)


def _print_report(report: VerifyReport) -> None:
    console = _console()
    rt = Table(title=f"Rules checked at the NDIS boundary — target {report.target}, seed {report.seed}")
    rt.add_column("rule")
    rt.add_column("level")
    rt.add_column("result")
    rt.add_column("checks", justify="right")
    rt.add_column("first violating event")
    for r in report.rules:
        rt.add_row(r.id, r.level, f"[{_STYLE[r.result]}]{r.result}[/]", str(r.checks), r.first)
    console.print(rt)
    st = Table(title="Scenarios")
    st.add_column("scenario")
    st.add_column("result")
    st.add_column("violations")
    st.add_column("functional failures")
    st.add_column("s", justify="right")
    for s in report.scenarios:
        res = "[green]ok[/]" if s.ok else "[bold red]FAIL[/]"
        viol = ", ".join(s.violations)
        st.add_row(s.name, res, viol, "\n".join(s.failures[:4]), f"{s.seconds:.2f}")
    console.print(st)
    c = report.counts()
    must = c.get("MUST", {})
    console.print(
        f"MUST rules: {must.get(PASS, 0)} pass, {must.get(FAIL, 0)} FAIL, {must.get(NOT_EXERCISED, 0)} not exercised; "
        + "; ".join(f"{lv}: {d[PASS]} pass, {d[FAIL]} FAIL, {d[NOT_EXERCISED]} not exercised"
                    for lv, d in c.items() if lv != "MUST")
    )
    bad = [s.name for s in report.functional_failures]
    verdict = "[green]PASS[/]" if report.ok else "[bold red]FAIL[/]"
    console.print(f"verdict: {verdict}"
                  + (f" — MUST failed: {', '.join(r.id for r in report.failed_must)}" if report.failed_must else "")
                  + (f" — scenarios failed: {', '.join(bad)}" if bad else ""))


def rules(
    area: Annotated[str | None, typer.Option(help="Only this rule area (OFF, TRM, SEND, ...).")] = None,
    uncovered: Annotated[bool, typer.Option(
        "--uncovered", help="Only the rules neither enforced by the verifier nor shown by a test.")] = False,
    json_out: Annotated[bool, typer.Option("--json", help="Print one JSON object instead of a table.")] = False,
) -> None:
    """The rule catalogue's coverage: each rule, its level, where it is enforced (verifier check or test)
    or why it cannot be checked mechanically; the MUST rules left uncovered, by id."""
    rows = rule_coverage(area)
    if area is not None and not rows:
        typer.echo(f"chimney rules: no rules in area {area!r}", err=True)
        raise typer.Exit(2)
    summ = summary(rows)
    shown = [r for r in rows if not r.covered] if uncovered else rows
    if json_out:
        data = to_json(shown)
        data["summary"] = summ
        typer.echo(json.dumps(data, indent=2))
        return
    console = _console()
    t = Table(title="Contract rule coverage" + (f" — area {area.upper()}" if area else ""))
    t.add_column("rule")
    t.add_column("level")
    t.add_column("side")
    t.add_column("status")
    t.add_column("where / reason")
    styles = {"enforced": "green", "tested": "cyan", "uncheckable": "yellow", "uncovered": "red"}
    for r in shown:
        text = r.where if r.covered else r.reason
        t.add_row(r.id, r.level, r.side, f"[{styles[r.status]}]{r.status}[/]", text)
    console.print(t)
    counts = ", ".join(f"{k} {v}" for k, v in sorted(summ["by_status"].items()))
    console.print(f"{summ['rules']} rules: {counts}")
    rem = summ["must_not_covered"]
    console.print(f"MUST / MUST NOT rules neither enforced nor tested ({len(rem)}): "
                  + (" ".join(rem) if rem else "none"), soft_wrap=True)


def scenario_names() -> list[str]:
    return [s.name for s in SCENARIOS]


__all__ = ["MANDATORY", "rules", "scenario_names", "verify"]
