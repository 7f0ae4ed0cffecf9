"""Runs the whole packetdrill suite under tests/packetdrill/ against the host stack (and the offload
target when `--mode offload` is available). Scripts in KNOWN_FAILURES expose real deviations of our
stack from the RFC they cite: they must keep failing until the bug is fixed (then remove the entry)."""

from __future__ import annotations

from pathlib import Path

import pytest

from chimney.packetdrill.report import expand, run_file

SUITE = Path(__file__).resolve().parent / "packetdrill"
SCRIPTS = expand([SUITE])

# script (relative to tests/packetdrill) -> one-line reason: the bug it exposes
KNOWN_FAILURES: dict[str, str] = {}


# Differences of the offloaded path (chimney.host.chimney + chimney.target) from the host engine, seen by
# running the same scripts with --mode offload: script -> why the contract makes the offloaded connection
# behave differently. Strict: a listed script that passes must be removed from the list.
KNOWN_OFFLOAD_FAILURES: dict[str, str] = {
    "socket_api/poll_in_and_rdhup.pkt": "R-EVT-01 (MUST): the target indicates the peer's FIN only after "
        "the data before it was consumed; the unread 10 bytes stay at the target (hold_unread_at_target, "
        "the window they leave), so the host cannot report Linux's POLLRDHUP before they are read",
}

# Offload mode: scripts whose connection the host keeps, or takes back when the option is set
# (OffloadPolicy.baseline: a setting the chimney cannot carry was changed from what the target runs)
# -> the reason reported ("stayed on host: ...").
STAYS_ON_HOST: dict[str, str] = {
    "rfc9293_3.6_closing/fin_wait_2_timeout.pkt": "fin_wait2_timeout_ns",
    "rfc9293_3.6_closing/fin_wait_2_alive_before_timeout.pkt": "fin_wait2_timeout_ns",
    "rfc9293_3.6_closing/linger2_fin_wait_2_timeout.pkt": "fin_wait2_timeout_ns",  # offloaded, then uploaded
    "rfc5961_challenge_ack/rate_limited.pkt": "challenge_ack_limit",
    "linux_profile/maxseg_clamps_sent_segments.pkt": "TCP_MAXSEG 1000 bounds the MSS we send",
    # TCP_USER_TIMEOUT counts from the first unacknowledged transmission; MaxRT (TotalRT) from the first
    # retransmission (R-TMR-17): with a baseline the host takes the connection back rather than approximate.
    "rfc6298_rto/user_timeout.pkt": "MaxRT cannot carry TCP_USER_TIMEOUT",
    # Linux resets on data after close(); a graceful disconnect is only a half-close after which the target
    # keeps receiving (R-DISC-13): a Linux-profile close() takes the connection back to the host.
    **{
        name: "close() with rst_on_data_after_close"
        for name in (
            "linux_profile/data_after_close_resets.pkt",
            "linux_profile/time_wait_linux.pkt",
            "rfc9293_3.6_closing/time_wait_linux_60s.pkt",
        )
    },
}


# Offload mode: scripts that pass with an established connection the harness never offloaded (neither
# offloaded nor kept on the host for a setting, STAYS_ON_HOST) -> why that is right. A pass without an
# offload tests nothing of the chimney, so every such script must be named here with its reason. Empty:
# the harness offloads each connection once established, flushing an owed ACK (R-TMR-04).
NEVER_OFFLOADED: dict[str, str] = {}


def test_suite_is_large_and_organised() -> None:
    assert len(SCRIPTS) >= 150
    folders = {p.relative_to(SUITE).parts[0] for p in SCRIPTS}
    assert len(folders) >= 10
    for name in [*KNOWN_FAILURES, *KNOWN_OFFLOAD_FAILURES, *STAYS_ON_HOST, *NEVER_OFFLOADED]:
        assert (SUITE / name).exists(), f"a known-failure list names a missing script {name}"


@pytest.mark.parametrize("script", SCRIPTS, ids=[str(p.relative_to(SUITE)) for p in SCRIPTS])
def test_script_host_mode(script: Path) -> None:
    rel = str(script.relative_to(SUITE))
    r = run_file(script, mode="host")
    assert r.status != "unsupported", r.message
    if rel in KNOWN_FAILURES:
        assert r.status == "fail", f"{rel} passes now: remove it from KNOWN_FAILURES ({KNOWN_FAILURES[rel]})"
    else:
        assert r.status == "pass", r.message


@pytest.mark.parametrize("script", SCRIPTS, ids=[str(p.relative_to(SUITE)) for p in SCRIPTS])
def test_script_offload_mode(script: Path) -> None:
    """The same script with the connection offloaded to the target as soon as it is established (or at
    its `chimney_offload` markers); a pass that never offloaded an established connection fails."""
    rel = str(script.relative_to(SUITE))
    r = run_file(script, mode="offload")
    if r.status == "unsupported":
        pytest.skip(r.message)  # no offload target in this tree: reported, not passed
    if rel in KNOWN_FAILURES or rel in KNOWN_OFFLOAD_FAILURES:
        reason = KNOWN_OFFLOAD_FAILURES.get(rel) or KNOWN_FAILURES[rel]
        assert r.status == "fail", f"{rel} passes offloaded now: remove it from the known failures ({reason})"
        pytest.xfail(reason)
    assert r.status == "pass", r.message
    if rel in NEVER_OFFLOADED:
        assert r.never_offloaded, f"{rel} offloads its connection now: remove it from NEVER_OFFLOADED"
    else:
        assert not r.never_offloaded, f"{rel} passes without offloading: never offloaded: {r.never_offloaded}"
    want = STAYS_ON_HOST.get(rel)
    if want is None:
        assert not r.stayed_on_host, f"{rel}: connection unexpectedly kept on the host: {r.stayed_on_host}"
    else:
        assert r.stayed_on_host and all(want in why for why in r.stayed_on_host), r.stayed_on_host


@pytest.mark.parametrize(("generator", "attr", "subdir"), [
    ("gen_state_matrix.py", "OUT", "rfc9293_3.10.7_segment_arrives"),
    ("gen_features.py", "HERE", ""),
])
def test_generated_scripts_are_up_to_date(generator: str, attr: str, subdir: str, tmp_path: Path) -> None:
    """The committed .pkt files are exactly what the generators write (edit the generator, not the output)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(f"pd_{generator[:-3]}", SUITE / generator)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    setattr(mod, attr, tmp_path)
    mod.main()
    produced = sorted(tmp_path.rglob("*.pkt"))
    assert len(produced) > 20
    for p in produced:
        committed = SUITE / subdir / p.relative_to(tmp_path)
        assert committed.exists(), f"{committed} is not committed (run {generator})"
        assert committed.read_text() == p.read_text(), f"{committed} differs from {generator}'s output"
