"""The coverage table (chimney.ndis.coverage) is complete and honest: every TREE/OFF/TRM/SEND/IND/EVT/TMR/TS
rule is classified, every named check method exists, every named test exists, and every rule enforced by
ChimneyChecks has a test that asserts its id."""

from __future__ import annotations

import re
from pathlib import Path

from chimney.ndis.checks_chimney import ChimneyChecks
from chimney.ndis.core import BoundaryChecks
from chimney.ndis.coverage import (
    AREAS,
    CHIMNEY,
    CORE,
    COVERAGE,
    TEST,
    UNCHECKABLE,
    coverage_report,
    how,
    markdown_table,
)
from chimney.ndis.rules import catalogue

ROOT = Path(__file__).resolve().parents[2]


def test_every_rule_of_the_areas_is_classified_once() -> None:
    ids = [k for k, r in catalogue().items() if r.area in AREAS]
    assert len(ids) == 149
    assert set(ids) <= set(COVERAGE)
    assert all(rid in catalogue() for rid in COVERAGE)
    assert {kind for kind, _, _ in COVERAGE.values()} == {CHIMNEY, CORE, TEST, UNCHECKABLE}


def test_named_check_methods_exist() -> None:
    for rid, (kind, where, _) in COVERAGE.items():
        for cls_name, meth in re.findall(r"(ChimneyChecks|BoundaryChecks)\.(\w+)", where):
            cls = ChimneyChecks if cls_name == "ChimneyChecks" else BoundaryChecks
            assert callable(getattr(cls, meth, None)), f"{rid}: {cls_name}.{meth} does not exist"
        if kind in (CHIMNEY, CORE):
            assert "Checks." in where, rid


def test_named_tests_exist() -> None:
    for rid, (_, _, tests) in COVERAGE.items():
        for ref in tests:
            path, _, name = ref.partition("::")
            text = (ROOT / path).read_text(encoding="utf-8")
            if name:
                assert f"def {name}(" in text, f"{rid}: {ref} not found"


def test_every_enforced_rule_has_a_test_asserting_its_id() -> None:
    texts = {p: p.read_text(encoding="utf-8") for p in (ROOT / "tests/ndis").glob("test_checks_chimney_*.py")}
    every = "\n".join(texts.values())
    for rid, (kind, _, tests) in COVERAGE.items():
        if kind != CHIMNEY:
            continue
        assert tests, rid
        assert f'"{rid}"' in every, f"no test asserts {rid}"


def test_uncheckable_rules_give_a_reason_and_report_rows_read_well() -> None:
    rows = coverage_report()
    assert [r["id"] for r in rows].count("R-OFF-01") == 1
    for row in rows:
        assert row["how"].startswith(("boundary check in ", "test ", "not mechanically checkable: "))
        if row["kind"] == UNCHECKABLE:
            assert len(row["how"]) > len("not mechanically checkable: ") + 10
    assert how("R-OFF-01").startswith("boundary check in ChimneyChecks.state_complete")
    assert how("R-TMR-04").startswith("test tests/ndis/test_checks_chimney_trm.py::")


def test_docs_table_lists_the_same_rules_as_the_module() -> None:
    text = (ROOT / "docs/verifier-coverage.md").read_text(encoding="utf-8")
    documented = set(re.findall(r"^\| (R-[A-Z0-9]+-\d+) \|", text, flags=re.M))
    assert documented == {row["id"] for row in coverage_report()}
    assert markdown_table() in text  # the doc's table is the generated one
