"""Where each of the catalogue's rules is enforced, for `chimney rules`: the verifier coverage table
(`chimney.ndis.coverage`) first, then the conformance scenarios' checks, a scan of the package for rule ids
passed to checks and of the test tree for tests naming a rule; whatever is left is listed as uncovered.

A test names a rule only in its own name or docstring (test functions and methods of test_*.py files, read
with `ast`): ids in comments, helper modules, tables or module docstrings do not make a rule "tested".
"""

from __future__ import annotations

import ast
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
# Tests name rules in docstrings (R-OFF-01, several of one area as R-NBR-04/05/06) or in function names
# (test_..._r_off_01_..., several as r_tmr_04_16_21). A name's "_r_" follows an underscore, so the start is
# "no letter or digit before", not a word boundary; ids not in the catalogue are ignored.
_MENTION_TEXT = re.compile(r"(?<![A-Za-z0-9])R-([A-Z0-9]+)-(\d\d(?:/\d\d)*)(?![0-9])")
_MENTION_NAME = re.compile(r"(?<![A-Za-z0-9])[Rr]_([A-Za-z0-9]+)((?:_\d\d)+)(?![0-9])")
_SKIP = ("ndis/coverage.py", "ndis/rules.py", "conformance/", "cli_verify.py")
_RULE_ID = re.compile(r"R-[A-Z0-9]+-\d\d")

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


def mentioned_rules(text: str) -> list[str]:
    """Catalogue rule ids a test file names, in order of first mention."""
    cat = catalogue()
    out: dict[str, None] = {}
    for m in _MENTION_TEXT.finditer(text):
        for n in m.group(2).split("/"):
            out[f"R-{m.group(1)}-{n}"] = None
    for m in _MENTION_NAME.finditer(text):
        for n in m.group(2)[1:].split("_"):
            out[f"R-{m.group(1).upper()}-{n}"] = None
    return [rid for rid in out if rid in cat]


def test_mentions(source: str) -> list[str]:
    """Catalogue rule ids named by the tests of one test module: in the name or the docstring of each test
    function (module level or a method of a test class), in order of first mention."""
    tree = ast.parse(source)
    out: dict[str, None] = {}
    todo: list[ast.AST] = list(tree.body)
    while todo:
        node = todo.pop(0)
        if isinstance(node, ast.ClassDef) and node.name.startswith("Test"):
            todo[:0] = node.body
        elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name.startswith("test"):
            for rid in mentioned_rules(node.name + "\n" + (ast.get_docstring(node) or "")):
                out[rid] = None
    return list(out)


@cache
def _scan_tests() -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    if not TESTS.is_dir():
        return found
    for path in sorted(TESTS.rglob("test_*.py")):
        rel = path.relative_to(TESTS.parent).as_posix()
        try:
            rids = test_mentions(path.read_text(encoding="utf-8", errors="replace"))
        except SyntaxError:
            continue  # a test module being edited; pytest reports it
        for rid in rids:
            where = found.setdefault(rid, [])
            if rel not in where:
                where.append(rel)
    return found


def _function_rules(tree: ast.Module) -> tuple[dict[str, set[str]], dict[str, set[str]]]:
    """Per module-level function, class or named constant (a table of rule ids): the rule ids quoted in it,
    and the module-level names it uses."""
    ids: dict[str, set[str]] = {}
    refs: dict[str, set[str]] = {}
    for node in tree.body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names = [node.name]
        elif isinstance(node, ast.Assign | ast.AnnAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names = [t.id for t in targets if isinstance(t, ast.Name)]
        else:
            continue
        quoted = {n.value for n in ast.walk(node)
                  if isinstance(n, ast.Constant) and isinstance(n.value, str) and _RULE_ID.fullmatch(n.value)}
        used = {n.id for n in ast.walk(node) if isinstance(n, ast.Name)}
        for name in names:
            ids[name] = quoted
            refs[name] = used
    return ids, refs


@cache
def _scan_scenarios() -> dict[str, list[str]]:
    """Rule id -> names of the conformance scenarios whose checks name it: a quoted id in the scenario's
    function or in a module-level helper it calls (transitively), in conformance/scenarios*.py."""
    from chimney.conformance.scenarios import SCENARIOS

    per_module: dict[str, tuple[dict[str, set[str]], dict[str, set[str]]]] = {}
    for path in sorted((PACKAGE / "conformance").glob("scenarios*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        per_module[f"chimney.conformance.{path.stem}"] = _function_rules(tree)
    found: dict[str, list[str]] = {}
    for sc in SCENARIOS:
        mod = per_module.get(getattr(sc.run, "__module__", ""))
        if mod is None:
            continue
        ids, refs = mod
        seen: set[str] = set()
        todo = [sc.run.__name__]
        while todo:
            fn = todo.pop()
            if fn in seen or fn not in ids:
                continue
            seen.add(fn)
            todo.extend(refs[fn])
            for rid in ids[fn]:
                names = found.setdefault(rid, [])
                if sc.name not in names:
                    names.append(sc.name)
    return found


def rule_coverage(area: str | None = None) -> list[RuleCoverage]:
    """Every catalogue rule (optionally one area), in catalogue order."""
    code = _scan_package()
    tests = _scan_tests()
    scenarios = _scan_scenarios()
    out: list[RuleCoverage] = []
    for rid, r in catalogue().items():
        if area is not None and r.area.upper() != area.upper():
            continue
        t = tests.get(rid, [])
        boundary = rid in COVERAGE and COVERAGE[rid][0] in (CHIMNEY, CORE)
        if rid in scenarios and not boundary:
            # `chimney verify` checks it against any target; a boundary check of the verifier still comes first.
            out.append(RuleCoverage(rid, r.area, r.level, r.side, ENFORCED,
                                    "conformance scenario " + ", ".join(scenarios[rid][:3]), t))
        elif rid in COVERAGE:
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
