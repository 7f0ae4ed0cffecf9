"""`chimney demo`: two simulated hosts, connections offloaded mid-transfer, uploaded by the host, at the
target's request (TcpIndicateRetrieve) and by a hardware reset (NDIS_STATUS_UPLOAD_ALL), offloaded again and
closed; megabytes both ways with sha256 checked, no verifier violation, no NBL leak (R-NBL-02, R-IND-14)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from chimney.cli import app
from chimney.trace.capture import read_capture

runner = CliRunner()
SEED = 5


def demo_json(*args: str) -> dict[str, Any]:
    result = runner.invoke(app, ["demo", "--json", "--seed", str(SEED), *args])
    assert result.exit_code == 0, result.output
    return json.loads(result.output)  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def capture_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("demo")


@pytest.fixture(scope="module")
def report() -> dict[str, Any]:
    return demo_json()


@pytest.fixture(scope="module")
def report_with_pcap(capture_dir: Path) -> dict[str, Any]:
    return demo_json("--pcap", str(capture_dir / "demo.pcapng"))


def test_megabytes_cross_both_ways_intact(report: dict[str, Any]) -> None:
    assert report["sha256_match"] is True
    assert report["bytes_a_to_b"] >= 2_000_000 and report["bytes_b_to_a"] >= 2_000_000
    assert report["bytes_a_to_b"] == sum(c["bytes_a_to_b"] for c in report["per_connection"])
    assert all(c["sha256_match"] for c in report["per_connection"])
    assert len({c["sha256_a_to_b"] for c in report["per_connection"]}) == report["connections"]


def test_connections_are_offloaded_and_uploaded_repeatedly_for_every_cause(report: dict[str, Any]) -> None:
    assert report["offloads"] >= 2 and report["uploads"] >= 2
    assert report["offloads"] == sum(report["offloads_by_cause"].values())
    causes = report["uploads_by_cause"]
    assert causes.get("host request", 0) >= 1
    assert causes.get("target request (UploadRequested)", 0) >= 1
    assert causes.get("hardware reset (UPLOAD_ALL)", 0) >= 1
    assert any(k.startswith("policy: re-offload") for k in report["offloads_by_cause"])
    assert report["retrieves"] >= 1 and report["hardware_resets"] == 1
    assert [a["action"] for a in report["scripted"]] == ["host upload", "target request", "hardware reset"]


def test_no_violations_no_leaks_and_every_indication_returned(report: dict[str, Any]) -> None:
    assert report["verifier_violations"] == 0 and report["nbl_leaks"] == 0 and report["ok"] is True
    assert report["offloaded_at_end"] == 0  # every connection was handed back once it closed
    n = report["nbls"]
    assert n["indicated"] > 0 and n["held_by_host_at_end"] == 0
    assert n["returned"] == n["indicated"] - n["indications_refused"] + (n["allocated"] + n["recycled"] - n["indicated"])
    assert n["send_posted"] > 0 and n["send_completed"] > 0 and n["send_completed_out_of_order"] == 0


def test_goodput_is_reported_for_host_and_offloaded_phases(report: dict[str, Any]) -> None:
    g = report["goodput"]
    assert g["host"]["bytes"] > 0 and g["offloaded"]["bytes"] > 0
    assert sum(p["bytes"] for p in g.values()) == report["bytes_a_to_b"] + report["bytes_b_to_a"]
    assert g["offloaded"]["mbps_per_conn"] > 0


def test_same_seed_gives_the_same_report_and_capturing_changes_nothing(
    report: dict[str, Any], report_with_pcap: dict[str, Any]
) -> None:
    again = dict(report_with_pcap)
    again.pop("pcap")
    assert json.dumps(again, sort_keys=True) == json.dumps(report, sort_keys=True)


def test_pcap_has_every_frame_with_a_comment_naming_connection_phase_and_sender(
    report_with_pcap: dict[str, Any], capture_dir: Path
) -> None:
    path = capture_dir / "demo.pcapng"
    records = list(read_capture(path))
    assert len(records) == report_with_pcap["pcap"]["packets"] > 1000
    comments = [r.comment or "" for r in records]
    assert all(comments)
    assert any(c.startswith("conn 1, offloaded, sent by the offload target") for c in comments)
    assert any(c.endswith("sent by host A's stack") and ", host," in c for c in comments)
    assert any(c.startswith("conn 2,") and c.endswith("sent by host B") for c in comments)
    # R-SEND-12: what the target sent carries IPv4 IDs from its half of the space.
    for r, c in zip(records, comments, strict=True):
        if c.endswith("sent by the offload target"):
            assert int.from_bytes(r.data[18:20], "big") >= 0x8000


def test_pcap_reads_in_scapy_with_comments(report_with_pcap: dict[str, Any], capture_dir: Path) -> None:
    scapy_all = pytest.importorskip("scapy.all")
    path = str(capture_dir / "demo.pcapng")
    raw = list(scapy_all.RawPcapNgReader(path))
    assert len(raw) == report_with_pcap["pcap"]["packets"]
    assert all(meta.comments and b"sent by" in meta.comments[0] for _data, meta in raw[-200:])
    assert {meta.ifname for _data, meta in raw} == {b"A->B", b"B->A"}
    reader = scapy_all.PcapNgReader(path)
    first = [reader.read_packet() for _ in range(100)]  # dissecting all of them takes seconds
    reader.close()
    assert sum(1 for p in first if p.haslayer("TCP")) > 50
    assert any(p.comment and b"conn 1" in p.comment for p in first)
