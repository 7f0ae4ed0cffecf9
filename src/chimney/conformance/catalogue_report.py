"""Where each of the catalogue's rules is enforced, for `chimney rules`: the verifier coverage table
(`chimney.ndis.coverage`) first, then a scan of the package for rule ids passed to checks and of the test
tree for tests naming a rule; whatever is left is listed as uncovered, with the table's reason if any.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

from chimney.ndis.coverage import CHIMNEY, CORE, COVERAGE, TEST, UNCHECKABLE, how
from chimney.ndis.rules import catalogue

PACKAGE = Path(__file__).resolve().parents[1]
TESTS = PACKAGE.parents[1] / "tests"  # the source checkout's test tree (absent in an installed wheel)
MANDATORY = ("MUST", "MUST NOT")

# A rule id in quotes in package code is an argument to a verifier check (check/fail/transfer rule_id=);
# ids in comments are unquoted and do not count.
_QUOTED = re.compile(r"""["'](R-[A-Z0-9]+-\d\d)["']""")
# Tests name rules in docstrings (R-OFF-01) or function names (test_r_off_01_...).
_MENTION = re.compile(r"\b[Rr][-_]([A-Za-z0-9]+)[-_](\d\d)\b")
_SKIP = ("ndis/coverage.py", "ndis/rules.py", "conformance/", "cli_verify.py")

ENFORCED = "enforced"  # a verifier check at the NDIS boundary
TESTED = "tested"  # a test shows it
UNCHECKED = "uncheckable"  # not mechanically checkable (reason given)
UNCOVERED = "uncovered"  # none of the above


@dataclass
class RuleCoverage:
    id: str
    area: str
    level: str
    side: str
    status: str  # ENFORCED / TESTED / UNCHECKED / UNCOVERED
    where: str
    tests: list[str] = field(default_factory=list)
    reason: str = ""

    @property
    def covered(self) -> bool:
        return self.status in (ENFORCED, TESTED)


@cache
def _scan_package() -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE).as_posix()
        if any(rel.startswith(s) or rel == s for s in _SKIP):
            continue
        text = path.read_text(encoding="utf-8", errors="replace")
        for m in _QUOTED.finditer(text):
            where = found.setdefault(m.group(1), [])
            if rel not in where:
                where.append(rel)
    return found


@cache
def _scan_tests() -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    if not TESTS.is_dir():
        return found
    for path in sorted(TESTS.rglob("*.py")):
        rel = path.relative_to(TESTS.parent).as_posix()
        text = path.read_text(encoding="utf-8", errors="replace")
        for m in _MENTION.finditer(text):
            rid = f"R-{m.group(1).upper()}-{m.group(2)}"
            where = found.setdefault(rid, [])
            if rel not in where:
                where.append(rel)
    return found


def rule_coverage(area: str | None = None) -> list[RuleCoverage]:
    """Every catalogue rule (optionally one area), in catalogue order."""
    code = _scan_package()
    tests = _scan_tests()
    out: list[RuleCoverage] = []
    for rid, r in catalogue().items():
        if area is not None and r.area.upper() != area.upper():
            continue
        t = tests.get(rid, [])
        if rid in COVERAGE:
            kind, where, ctests = COVERAGE[rid]
            all_tests = list(ctests) + [x for x in t if x not in ctests]
            if kind in (CHIMNEY, CORE):
                out.append(RuleCoverage(rid, r.area, r.level, r.side, ENFORCED, how(rid), all_tests))
            elif kind == TEST or all_tests:
                w = how(rid) if kind == TEST else f"test {all_tests[0]}"
                out.append(RuleCoverage(rid, r.area, r.level, r.side, TESTED, w, all_tests,
                                        where if kind == UNCHECKABLE else ""))
            else:
                out.append(RuleCoverage(rid, r.area, r.level, r.side, UNCHECKED, "", [], where))
        elif rid in code:
            out.append(RuleCoverage(rid, r.area, r.level, r.side, ENFORCED,
                                    "verifier check in " + ", ".join(code[rid][:3]), t))
        elif t:
            out.append(RuleCoverage(rid, r.area, r.level, r.side, TESTED, f"test {t[0]}", t))
        else:
            out.append(RuleCoverage(rid, r.area, r.level, r.side, UNCOVERED, "", [],
                                    "no verifier check and no test names this rule yet"))
    return out


def summary(rows: list[RuleCoverage]) -> dict[str, Any]:
    """Counts by status and level, and the mandatory rules neither enforced nor tested (by id)."""
    by_status: dict[str, int] = {}
    by_level: dict[str, dict[str, int]] = {}
    for r in rows:
        by_status[r.status] = by_status.get(r.status, 0) + 1
        lv = by_level.setdefault(r.level, {})
        lv[r.status] = lv.get(r.status, 0) + 1
    remainder = [r.id for r in rows if r.level in MANDATORY and not r.covered]
    return {"rules": len(rows), "by_status": by_status, "by_level": by_level, "must_not_covered": remainder}


def to_json(rows: list[RuleCoverage]) -> dict[str, Any]:
    return {"summary": summary(rows), "rules": [asdict(r) for r in rows]}
