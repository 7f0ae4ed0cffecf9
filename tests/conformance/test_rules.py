"""`chimney rules`: every catalogue rule with its level and where it is enforced (verifier check or test) or
why not; the MUST / MUST NOT rules left uncovered are listed by id."""

from __future__ import annotations

import json

import typer
from typer.testing import CliRunner

from chimney.cli_verify import rules
from chimney.conformance.catalogue_report import ENFORCED, MANDATORY, UNCOVERED, rule_coverage, summary
from chimney.ndis.coverage import COVERAGE
from chimney.ndis.rules import catalogue


def cli() -> typer.Typer:
    app = typer.Typer()
    app.command()(rules)
    app.command("noop")(lambda: None)  # two commands: typer keeps `rules` as a subcommand name
    return app


def test_rules_json_lists_every_catalogue_rule_with_its_level() -> None:
    res = CliRunner().invoke(cli(), ["rules", "--json"])
    assert res.exit_code == 0, res.output
    data = json.loads(res.output)
    got = {r["id"]: r for r in data["rules"]}
    assert list(got) == list(catalogue())
    assert all(got[rid]["level"] == r.level for rid, r in catalogue().items())
    assert data["summary"]["rules"] == len(catalogue())


def test_uncovered_list_is_exactly_the_mandatory_rules_neither_enforced_nor_tested() -> None:
    rows = rule_coverage()
    remainder = summary(rows)["must_not_covered"]
    assert remainder == [r.id for r in rows if r.level in MANDATORY and r.status not in (ENFORCED, "tested")]
    res = CliRunner().invoke(cli(), ["rules", "--uncovered", "--json"])
    data = json.loads(res.output)
    assert data["summary"]["must_not_covered"] == remainder
    assert all(r["status"] in ("uncheckable", UNCOVERED) for r in data["rules"])
    assert all(r["reason"] for r in data["rules"])  # every uncovered rule says why


def test_boundary_checks_of_the_coverage_table_show_as_enforced() -> None:
    by_id = {r.id: r for r in rule_coverage()}
    for rid, (kind, _where, _tests) in COVERAGE.items():
        if kind in ("chimney", "core"):
            assert by_id[rid].status == ENFORCED, rid
    # R-OFF-01 is the synchronous-completion check in ChimneyChecks.state_complete
    assert "ChimneyChecks.state_complete" in by_id["R-OFF-01"].where


def test_rules_table_text_contains_every_id_and_the_remainder() -> None:
    res = CliRunner().invoke(cli(), ["rules"])
    assert res.exit_code == 0
    for rid in catalogue():
        assert rid in res.output, rid
    remainder = summary(rule_coverage())["must_not_covered"]
    flat = " ".join(res.output.split())
    assert f"neither enforced nor tested ({len(remainder)})" in flat
    assert all(rid in flat for rid in remainder)


def test_rules_area_filter_and_unknown_area() -> None:
    res = CliRunner().invoke(cli(), ["rules", "--area", "off", "--json"])
    data = json.loads(res.output)
    assert data["rules"] and {r["area"] for r in data["rules"]} == {"OFF"}
    assert CliRunner().invoke(cli(), ["rules", "--area", "NOPE"]).exit_code == 2


def test_rules_checked_by_a_conformance_scenario_show_as_enforced_by_it() -> None:
    """A quoted rule id passed to a check in conformance/scenarios*.py is enforced by `chimney verify`; the
    where names the scenario (helpers and probe classes the scenario uses count, transitively)."""
    by_id = {r.id: r for r in rule_coverage()}
    assert by_id["R-INV-03"].status == ENFORCED
    assert by_id["R-INV-03"].where == "conformance scenario invalidate-hold"
    # R-QRY-01 is checked in OpsProbe (through a table of rule ids), which query-states installs.
    assert by_id["R-QRY-01"].status == ENFORCED
    assert "query-states" in by_id["R-QRY-01"].where
    # The coverage table calls R-OFF-25 uncheckable at the NDIS boundary; the battery checks it on the wire.
    assert COVERAGE["R-OFF-25"][0] == "uncheckable"
    assert by_id["R-OFF-25"].where.startswith("conformance scenario rtt-descaling")
    # A boundary check of the verifier still takes precedence over a scenario that also names the rule.
    assert by_id["R-QRY-08"].where.startswith("boundary check in ChimneyChecks")


def test_tests_name_rules_in_function_names_and_docstrings_only_from_the_catalogue() -> None:
    from chimney.conformance.catalogue_report import mentioned_rules

    assert mentioned_rules("def test_neighbor_is_fresh_r_nbr_03() -> None:") == ["R-NBR-03"]
    assert mentioned_rules("def test_unanswered_r_nbr_04_09() -> None:") == ["R-NBR-04", "R-NBR-09"]
    assert mentioned_rules('"""Checks R-NBR-04/05/06 and R-OFF-01."""') == ["R-NBR-04", "R-NBR-05", "R-NBR-06",
                                                                           "R-OFF-01"]
    assert mentioned_rules("ERR_NBR_03 r_nope_01 R-OFF-99 r_off_1") == []
    by_id = {r.id: r for r in rule_coverage()}
    # tests/target/test_target_neighbor.py names R-NBR-09 only in a test function name.
    assert "tests/target/test_target_neighbor.py" in by_id["R-NBR-09"].tests


def test_only_test_names_and_test_docstrings_count_not_comments_helpers_or_tables() -> None:
    from chimney.conformance.catalogue_report import test_mentions

    source = '''"""Module docstring naming R-OFF-01."""
# A comment naming R-OFF-02.
TABLE = {"R-OFF-05": "scenario"}


def helper_r_off_06() -> None:
    """A helper naming R-OFF-07."""


def test_something_r_off_03() -> None:
    """Shows R-OFF-04."""
    x = 1  # and R-OFF-08 in a comment


class TestGroup:
    def test_method(self) -> None:
        """R-OFF-09 in a test method."""


class Helpers:
    def test_not_collected(self) -> None:
        """R-OFF-10 outside a Test class."""
'''
    assert sorted(test_mentions(source)) == ["R-OFF-03", "R-OFF-04", "R-OFF-09"]
    by_id = {r.id: r for r in rule_coverage()}
    # Named only in a comment of the filter test doubles: not a test of R-TREE-13; the target test is.
    assert "tests/filters/filter_doubles.py" not in by_id["R-TREE-13"].tests
    assert "tests/target/test_target_tree.py" in by_id["R-TREE-13"].tests
    assert all(t.split("/")[-1].startswith("test_") for r in by_id.values() for t in r.tests if "::" not in t)
