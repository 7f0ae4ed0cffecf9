"""Runs the scenario battery against one target factory and folds the outcome into a `VerifyReport`:
per scenario (violations with the first violating event, functional failures) and per rule (pass / FAIL /
not exercised) over every rule the verifier checks at the NDIS boundary.
"""

from __future__ import annotations

import time
import traceback
from dataclasses import asdict, dataclass, field
from typing import Any

from chimney.conformance.harness import TargetFactory
from chimney.conformance.scenarios import SCENARIOS, Bench, Scenario, ScenarioAbort
from chimney.ndis.coverage import CHIMNEY, CORE, coverage_report
from chimney.ndis.rules import catalogue
from chimney.ndis.verifier import Mode, Verifier

PASS = "pass"
FAIL = "FAIL"
NOT_EXERCISED = "not exercised"
MANDATORY = ("MUST", "MUST NOT")


@dataclass
class ScenarioResult:
    name: str
    doc: str
    violations: dict[str, str] = field(default_factory=dict)  # rule id -> first violating event
    violation_count: int = 0
    failures: list[str] = field(default_factory=list)  # functional
    checked: list[str] = field(default_factory=list)  # rule ids the verifier checked in this scenario
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.failures and not self.violations


@dataclass
class RuleResult:
    id: str
    level: str
    area: str
    result: str  # PASS / FAIL / NOT_EXERCISED
    checks: int = 0
    first: str = ""  # "scenario: event" of the first violation
    scenarios: list[str] = field(default_factory=list)  # scenarios that broke it


@dataclass
class VerifyReport:
    target: str
    seed: int
    scenarios: list[ScenarioResult]
    rules: list[RuleResult]

    def rule(self, rule_id: str) -> RuleResult:
        for r in self.rules:
            if r.id == rule_id:
                return r
        raise KeyError(rule_id)

    @property
    def failed_rules(self) -> list[RuleResult]:
        return [r for r in self.rules if r.result == FAIL]

    @property
    def failed_must(self) -> list[RuleResult]:
        return [r for r in self.failed_rules if r.level in MANDATORY]

    @property
    def functional_failures(self) -> list[ScenarioResult]:
        return [s for s in self.scenarios if s.failures]

    @property
    def ok(self) -> bool:
        """The exit verdict: no MUST/MUST NOT rule broken and no scenario failed functionally."""
        return not self.failed_must and not self.functional_failures

    def counts(self) -> dict[str, dict[str, int]]:
        """{"MUST": {"pass": n, "FAIL": n, "not exercised": n}, "SHOULD": ...} (MUST NOT folded into MUST)."""
        out: dict[str, dict[str, int]] = {}
        for r in self.rules:
            lvl = "MUST" if r.level in MANDATORY else r.level
            d = out.setdefault(lvl, {PASS: 0, FAIL: 0, NOT_EXERCISED: 0})
            d[r.result] += 1
        return out

    def to_json(self) -> dict[str, Any]:
        return {
            "target": self.target,
            "seed": self.seed,
            "ok": self.ok,
            "counts": self.counts(),
            "scenarios": [asdict(s) | {"ok": s.ok} for s in self.scenarios],
            "rules": [asdict(r) for r in self.rules],
        }


def _event_text(v: Any) -> str:
    objs = "; ".join(repr(o) for o in v.objects[:2])
    text = v.message + (f" [{objs}]" if objs else "")
    return text if len(text) <= 300 else text[:297] + "..."


def run_scenario(factory: TargetFactory, sc: Scenario, seed: int, quick: bool, ims: int = 0) -> ScenarioResult:
    """One scenario on a fresh pair and verifier; a crash of the target or the scenario is a functional
    failure with its last frame, never an exception out of the battery."""
    verifier = Verifier(Mode.RECORD)
    res = ScenarioResult(sc.name, sc.doc)
    t0 = time.perf_counter()
    bench: Bench | None = None
    try:
        bench = Bench(factory, seed, verifier, impairments=sc.impairments, target_options=sc.target_options,
                      ticks_per_second=sc.ticks_per_second, ims=ims)
        sc.run(bench, quick)
    except ScenarioAbort:
        pass
    except Exception as e:
        res.failures.append(f"crashed: {type(e).__name__}: {e} ({_where(e)})")
    if bench is not None:
        try:
            bench.finish()
        except ScenarioAbort:
            pass
        except Exception as e:
            res.failures.append(f"crashed while finishing: {type(e).__name__}: {e} ({_where(e)})")
        res.failures[:0] = bench.failures
    for v in verifier.violations:
        res.violation_count += 1
        res.violations.setdefault(v.rule_id, _event_text(v))
    res.checked = sorted(verifier.checks)
    res.seconds = time.perf_counter() - t0
    return res


def _where(e: BaseException) -> str:
    tb = traceback.extract_tb(e.__traceback__)
    if not tb:
        return "?"
    f = tb[-1]
    return f"{f.filename.rsplit('/', 1)[-1]}:{f.lineno} in {f.name}"


def select(only: list[str] | None) -> list[Scenario]:
    if not only:
        return list(SCENARIOS)
    names = {s.name for s in SCENARIOS}
    unknown = [n for n in only if n not in names]
    if unknown:
        raise ValueError(f"unknown scenario(s) {', '.join(unknown)}; known: {', '.join(sorted(names))}")
    return [s for s in SCENARIOS if s.name in only]


def checkable_rules() -> set[str]:
    """Rules the verifier checks at the NDIS boundary (coverage table: core or chimney checks)."""
    return {row["id"] for row in coverage_report() if row["kind"] in (CHIMNEY, CORE)}


def run_battery(factory: TargetFactory, *, seed: int = 1, only: list[str] | None = None, quick: bool = False,
                target_name: str = "builtin", ims: int = 0) -> VerifyReport:
    """Every selected scenario on a fresh pair; `ims` pass-through IMs in host A's binding (the same
    battery must pass through any stack of chimney-capable IMs, §3.8)."""
    scenarios = [run_scenario(factory, sc, seed, quick, ims) for sc in select(only)]
    checks: dict[str, int] = {}
    for s in scenarios:
        for rid in s.checked:
            checks[rid] = checks.get(rid, 0) + 1
    broken: dict[str, list[ScenarioResult]] = {}
    for s in scenarios:
        for rid in s.violations:
            broken.setdefault(rid, []).append(s)
    cat = catalogue()
    ids = checkable_rules() | set(checks) | set(broken)
    rules: list[RuleResult] = []
    for rid, r in cat.items():  # catalogue order
        if rid not in ids:
            continue
        if rid in broken:
            first = broken[rid][0]
            rules.append(RuleResult(rid, r.level, r.area, FAIL, checks.get(rid, 0),
                                    f"{first.name}: {first.violations[rid]}", [s.name for s in broken[rid]]))
        else:
            rules.append(RuleResult(rid, r.level, r.area, PASS if rid in checks else NOT_EXERCISED, checks.get(rid, 0)))
    return VerifyReport(target_name, seed, scenarios, rules)
