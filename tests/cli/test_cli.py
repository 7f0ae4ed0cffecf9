"""The command line a new user runs first: `chimney demo` does real work and reports it."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from chimney.cli import app

runner = CliRunner()


def test_demo_json_reports_a_clean_run() -> None:
    result = runner.invoke(app, ["demo", "--json", "--seed", "2"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["ok"] is True and report["violations"] == 0 and report["leaks"] == 0
    assert len(report["ndis5_matrix"]) == 27 and len(report["ndis6"]) == 9
    statuses = {r["status"] for r in report["ndis5_matrix"]}
    assert statuses == {"SUCCESS", "PENDING", "RESOURCES"}


def test_demo_table_output_names_the_verdict() -> None:
    result = runner.invoke(app, ["demo"])
    assert result.exit_code == 0
    assert "no leaks, no violations" in result.output


def test_benchmarks_are_listed_and_unknown_ones_refused() -> None:
    listed = runner.invoke(app, ["benchmarks"])
    assert "nbl_roundtrip" in listed.output.split()
    bad = runner.invoke(app, ["bench", "no_such_thing"])
    assert bad.exit_code != 0
