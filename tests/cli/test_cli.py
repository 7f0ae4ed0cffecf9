"""The command line a new user runs first: `chimney demo` does real work and reports it, the receive-path
scenarios stay reachable, benchmarks are listed, and a failing demo run turns into a failing exit status."""

from __future__ import annotations

import json
from typing import Any

import pytest
from typer.testing import CliRunner

import chimney.demo
from chimney.cli import app

runner = CliRunner()


def test_receive_paths_json_reports_a_clean_run() -> None:
    result = runner.invoke(app, ["demo", "--receive-paths", "--json", "--seed", "2"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["ok"] is True and report["violations"] == 0 and report["leaks"] == 0
    assert len(report["ndis5_matrix"]) == 27 and len(report["ndis6"]) == 9
    statuses = {r["status"] for r in report["ndis5_matrix"]}
    assert statuses == {"SUCCESS", "PENDING", "RESOURCES"}


def test_receive_paths_table_output_names_the_verdict() -> None:
    result = runner.invoke(app, ["demo", "--receive-paths"])
    assert result.exit_code == 0
    assert "no leaks, no violations" in result.output


def test_offload_demo_tables_show_transfers_causes_nbls_and_verdict() -> None:
    result = runner.invoke(app, ["demo", "--seed", "6"])
    assert result.exit_code == 0, result.output
    out = result.output
    for title in ("Transfers", "Timeline", "by cause", "Chimney NBLs", "Goodput per phase"):
        assert title in out
    assert "hardware reset (UPLOAD_ALL)" in out and "target request" in out and "host request" in out
    assert "OK: sha256 match, 0 verifier violations, 0 NBL leaks" in out


@pytest.mark.parametrize(
    "spoil",
    [
        {"sha256_match": False},
        {"verifier_violations": 1, "violation_rules": ["R-SEND-05: completed before acknowledged"]},
        {"nbl_leaks": 2, "leak_report": "2 live NBL(s)"},
        {"offloaded_at_end": 1, "offloaded_at_end_detail": ["conn 1: host sees LastAck, offload offloaded"]},
    ],
)
def test_demo_exit_status_is_nonzero_when_the_run_is_not_clean(monkeypatch: pytest.MonkeyPatch,
                                                                spoil: dict[str, Any]) -> None:
    """The exit status follows the report's verdict: a real (small) run with one finding changed."""
    real = chimney.demo.run_offload_demo

    def spoiled(seed: int, pcap: Any = None) -> dict[str, Any]:
        r = real(seed, pcap, connections=1, nbytes=200_000)
        r.update(spoil)
        r["ok"] = (r["sha256_match"] and not r["verifier_violations"] and not r["nbl_leaks"]
                   and not r["offloaded_at_end"])
        return r

    monkeypatch.setattr(chimney.demo, "run_offload_demo", spoiled)
    result = runner.invoke(app, ["demo", "--json"])
    assert result.exit_code == 1
    assert json.loads(result.output)["ok"] is False


def test_serve_rejects_bad_policy_app_and_addresses_before_touching_the_system() -> None:
    for args in (["--offload", "sometimes"], ["--app", "ftp"], ["--our-addr", "10.0.0.2"],
                 ["--linux-addr", "192.168.1.1/24"]):
        result = runner.invoke(app, ["serve", *args])
        assert result.exit_code != 0, args


def test_benchmarks_are_listed_and_unknown_ones_refused() -> None:
    listed = runner.invoke(app, ["benchmarks"])
    assert "nbl_roundtrip" in listed.output.split()
    bad = runner.invoke(app, ["bench", "no_such_thing"])
    assert bad.exit_code != 0
