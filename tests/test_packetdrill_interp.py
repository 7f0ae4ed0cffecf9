"""The packetdrill interpreter against our host stack: passing scripts, precise failures (expected vs
actual, with the script line), unsupported constructs reported (never a silent pass), shell settings,
profiles, IPv6, the CLI (summary line, exit status) and JUnit output."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from chimney.cli_packetdrill import packetdrill
from chimney.packetdrill import format_suite, junit_xml, parse_script, run_suite
from chimney.packetdrill.interp import Runner, ScriptResult
from chimney.packetdrill.report import format_result

NO_OPTS = "`sysctl -q net.ipv4.tcp_timestamps=0 net.ipv4.tcp_sack=0 net.ipv4.tcp_window_scaling=0`\n"
PASSIVE = NO_OPTS + """0   socket(..., SOCK_STREAM, IPPROTO_TCP) = 3
+0  bind(3, ..., ...) = 0
+0  listen(3, 1) = 0
+0  < S 0:0(0) win 65535 <mss 1460>
+0  > S. 0:0(0) ack 1 win 65535 <mss 1460>
+.1 < . 1:1(0) ack 1 win 65535
+0  accept(3, ..., ...) = 4
"""
# PASSIVE has 8 lines (the sysctl line is line 1); the next line is 9.


def run(text: str, **kw: object) -> ScriptResult:
    return Runner(parse_script(text, "t.pkt"), **kw).run()  # type: ignore[arg-type]


def test_passive_open_data_and_close_pass() -> None:
    r = run(PASSIVE + "+0 write(4, ..., 100) = 100\n+0 > P. 1:101(100) ack 1 win 65535\n"
            "+.1 < . 1:1(0) ack 101 win 65535\n+0 close(4) = 0\n+0 > F. 101:101(0) ack 1 win 65535\n")
    assert r.status == "pass", r.message
    assert r.outbound[-1] == "0.200000 F. 101:101(0) ack 1 win 65535"


def test_wrong_outbound_expectation_names_line_expected_and_actual() -> None:
    r = run(PASSIVE + "+0 write(4, ..., 100) = 100\n+0 > P. 1:101(100) ack 1 win 4000\n")
    assert r.status == "fail" and r.line == 10
    assert r.message.startswith("line 10: outbound packet mismatch: win 65535 != 4000")
    assert "expected: > P. 1:101(100) ack 1 win 4000" in r.message
    assert "actual:   > P. 1:101(100) ack 1 win 65535  (at 0.100000)" in r.message


def test_wrong_options_are_reported() -> None:
    r = run(NO_OPTS + "0 socket(..., SOCK_STREAM, IPPROTO_TCP) = 3\n+0 bind(3, ..., ...) = 0\n"
            "+0 listen(3, 1) = 0\n+0 < S 0:0(0) win 65535 <mss 1460>\n+0 > S. 0:0(0) ack 1 win 65535 <mss 1000>\n")
    assert r.status == "fail" and r.line == 6 and "mss 1460 != 1000" in r.message


def test_packet_too_early_and_too_late() -> None:
    early = run(PASSIVE + "+0 write(4, ..., 10) = 10\n+.05 > P. 1:11(10) ack 1 win 65535\n")
    assert early.status == "fail" and "too early" in early.message and early.line == 10
    late = run(PASSIVE + "+0 < P. 1:11(10) ack 1 win 65535\n+.1 > . 1:1(0) ack 11 win 65535\n")
    assert late.status == "fail" and late.line == 10
    assert "nothing was sent" in late.message  # the delayed ACK comes at +0.2, after 0.1 + 4 ms


def test_tolerance_option_widens_the_window() -> None:
    text = PASSIVE + "+0 < P. 1:11(10) ack 1 win 65535\n+.19 > . 1:1(0) ack 11 win 65535\n"
    assert run(text).status == "fail"
    assert run("--tolerance_usecs=20000\n" + text).status == "pass"
    assert run(text, tolerance_usecs=20000).status == "pass"


def test_time_range_accepts_anything_inside() -> None:
    r = run(PASSIVE + "+0 < P. 1:11(10) ack 1 win 65535\n+.1~+.3 > . 1:1(0) ack 11 win 65535\n")
    assert r.status == "pass", r.message


def test_syscall_result_and_errno_mismatch() -> None:
    r = run(PASSIVE + "+0 read(4, ..., 10) = 10\n")
    assert r.status == "fail" and r.line == 9
    assert "blocking call never returned" in r.message
    r = run(PASSIVE + "+0 fcntl(4, F_SETFL, O_RDWR|O_NONBLOCK) = 0\n+0 read(4, ..., 10) = -1 EINTR (x)\n")
    assert r.status == "fail" and r.line == 10
    assert "returned -1 EAGAIN" in r.message and "expected -1 EINTR" in r.message


def test_blocking_call_end_time_is_checked() -> None:
    ok = PASSIVE + "+0...0.3 read(4, ..., 100) = 10\n+.3 < P. 1:11(10) ack 1 win 65535\n" \
                   "+.2 > . 1:1(0) ack 11 win 65535\n"
    assert run(ok).status == "pass"
    r = run(ok.replace("+0...0.3", "+0...0.5"))
    assert r.status == "fail" and r.line == 9 and "returned at 0.400000, expected at 0.600000" in r.message


def test_unexpected_outbound_packet_fails() -> None:
    r = run(PASSIVE + "+0 write(4, ..., 10) = 10\n+1 close(4) = 0\n")
    assert r.status == "fail" and "unexpected outbound packet P. 1:11(10)" in r.message


@pytest.mark.parametrize(
    ("line", "construct"),
    [
        ("+0 %{ assert tcpi_rto == 1 }%", "inline Python %{ }%"),
        ("+0 < udp (10)", "udp packet"),
        ("+0 setsockopt(4, IPPROTO_TCP, TCP_CONGESTION, \"reno\", 4) = 0", "TCP_CONGESTION"),
        ("+0 ioctl(4, SIOCATMARK, [0]) = 0", "constant SIOCATMARK"),
        ("+0 ioctl(4, 0x8906, [0]) = 0", "ioctl request 35078"),
        ("+0 send(4, ..., 10, MSG_ZEROCOPY) = 10", "constant MSG_ZEROCOPY"),
        ("+0 recv(4, ..., 10, 0x1) = 10", "recv() flags 1"),
        ("+0 sendmsg(4, {msg_name(...)=..., msg_iov(1)=[{..., 10}], msg_control=[1]}, 0) = 10",
         "sendmsg() msg_control"),
        ("+0 writev(4, ..., 1) = 10", "iovec ..."),
        ("+0 frobnicate(4) = 0", "system call frobnicate()"),
    ],
)
def test_unsupported_construct_reported_with_line(line: str, construct: str) -> None:
    r = run(PASSIVE + line + "\n")
    assert r.status == "unsupported"
    assert r.message.startswith("unsupported: ") and construct in r.message and r.message.endswith("at line 9")


def test_shell_lines_map_sysctls_and_report_the_rest() -> None:
    r = run("`sysctl -q net.ipv4.tcp_timestamps=0 net.ipv4.tcp_sack=0; tc qdisc add dev eth0 root fq`\n"
            "`sysctl -q net.ipv4.tcp_window_scaling=0 net.ipv4.tcp_frto=0`\n"
            "0 socket(..., SOCK_STREAM, IPPROTO_TCP) = 3\n+0 bind(3, ..., ...) = 0\n+0 listen(3, 1) = 0\n"
            "+0 < S 0:0(0) win 65535 <mss 1460,sackOK,TS val 1 ecr 0,nop,wscale 7>\n"
            "+0 > S. 0:0(0) ack 1 win 65535 <mss 1460>\n")
    assert r.status == "pass", r.message
    assert "line 1: ignored: tc qdisc add dev eth0 root fq" in r.notes
    assert "line 2: ignored: sysctl net.ipv4.tcp_frto=0" in r.notes


def test_linux_profile_uses_linux_delayed_ack() -> None:
    text = PASSIVE + "+0 < P. 1:11(10) ack 1 win 65535\n+.04 > . 1:1(0) ack 11 win 65535\n"
    assert run(text).status == "fail"  # our default profile: 200 ms
    assert run(text, profile="linux").status == "pass"
    assert run("--profile=linux\n" + text).status == "pass"


def test_ipv6_script_runs_over_ipv6() -> None:
    text = "--ip_version=ipv6\n" + PASSIVE.replace("mss 1460", "mss 1440")
    r = Runner(parse_script(text, "t.pkt"))
    res = r.run()
    assert res.status == "pass", res.message
    assert r.h is not None and r.h.local_ip == "2001:2::1" and r.h.remote_ip == "2001:2::2"


def test_relative_sequence_numbers_follow_our_isn_for_any_seed() -> None:
    for seed in (1, 2, 3):
        assert run(PASSIVE + "+0 write(4, ..., 5) = 5\n+0 > P. 1:6(5) ack 1 win 65535\n", seed=seed).status == "pass"


def write_scripts(tmp: Path) -> Path:
    d = tmp / "suite"
    d.mkdir()
    (d / "good.pkt").write_text(PASSIVE)
    (d / "bad.pkt").write_text(PASSIVE + "+0 write(4, ..., 10) = 10\n+0 > P. 1:11(10) ack 2 win 65535\n")
    (d / "unsup.pkt").write_text(PASSIVE + "+0 %{ print(1) }%\n")
    return d


def test_cli_summary_exit_status_and_junit(tmp_path: Path) -> None:
    d = write_scripts(tmp_path)
    app = typer.Typer()
    app.command()(packetdrill)
    junit = tmp_path / "out.xml"
    res = CliRunner().invoke(app, [str(d), "--junit", str(junit)])
    assert res.exit_code == 1
    lines = res.output.strip().splitlines()
    assert lines[-1] == "1 passed, 1 failed, 1 unsupported"
    assert any(x.startswith("FAIL") and "bad.pkt" in x for x in lines)
    assert any("line 10: outbound packet mismatch: ack 1 != 2" in x for x in lines)
    root = ET.parse(junit).getroot()
    suite = root.find("testsuite")
    assert suite is not None
    assert (suite.get("tests"), suite.get("failures"), suite.get("skipped")) == ("3", "1", "1")
    cases = {c.get("name"): c for c in suite.iter("testcase")}
    assert cases["bad.pkt"].find("failure") is not None and cases["bad.pkt"].get("line") == "10"
    assert "unsupported: inline Python" in cases["unsup.pkt"].find("skipped").get("message")
    assert cases["good.pkt"].find("failure") is None and cases["good.pkt"].find("skipped") is None
    ok = CliRunner().invoke(app, [str(d / "good.pkt")])
    assert ok.exit_code == 0 and ok.output.strip().splitlines()[-1] == "1 passed, 0 failed, 0 unsupported"


def test_junit_escapes_markup_in_messages(tmp_path: Path) -> None:
    d = write_scripts(tmp_path)
    text = junit_xml(run_suite([d]))
    root = ET.fromstring(text.encode())
    failure = root.find("testsuite/testcase/failure")
    assert failure is not None and "> P. 1:11(10) ack 2" in (failure.text or "")


def test_mode_both_runs_each_script_twice_and_reports_differences(tmp_path: Path) -> None:
    d = write_scripts(tmp_path)
    (d / "diff.pkt").write_text(PASSIVE + "+0 setsockopt(4, IPPROTO_TCP, TCP_NODELAY, [1], 4) = 0\n"
                                "+0 write(4, ..., 10) = 10\n+0 > P. 1:11(10) ack 1 win 65535\n"
                                "+0 write(4, ..., 10) = 10\n+0 > P. 11:21(10) ack 1 win 65535\n")
    suite = run_suite([d / "good.pkt", d / "diff.pkt"], mode="both")
    assert [r.mode for r in suite.results] == ["host", "offload", "host", "offload"]
    assert [r.status for r in suite.results[:3]] == ["pass", "pass", "pass"]
    if suite.results[3].status == "fail":  # TCP_NODELAY not applied after offload (see the suite's list)
        diff = suite.mode_diffs[str(d / "diff.pkt")]
        assert diff and diff[0].startswith("#3: host 0.100000 P. 11:21(10)")
        assert "MODE DIFF" in format_suite(suite)


def test_offload_mode_really_offloads() -> None:
    r = Runner(parse_script(PASSIVE + "+0 write(4, ..., 10) = 10\n+0 > P. 1:11(10) ack 1 win 65535\n", "t.pkt"),
               mode="offload")
    res = r.run()
    if res.status == "unsupported":
        pytest.skip(res.message)
    assert res.status == "pass", res.message
    assert r.h is not None and r.h.manager is not None
    assert [t.path.kind for t in r.h.manager.offloaded()] == ["chimney"]


def test_chimney_offload_marker_defers_offload() -> None:
    text = PASSIVE + "+0 write(4, ..., 10) = 10\n+0 > P. 1:11(10) ack 1 win 65535\n"
    r = Runner(parse_script(text + "+.1 < . 1:1(0) ack 11 win 65535\n+0 chimney_offload\n", "t.pkt"), mode="offload")
    res = r.run()
    if res.status == "unsupported":
        pytest.skip(res.message)
    assert res.status == "pass", res.message
    assert r.h is not None and r.h.manager.history[0][0] == 200_000_000  # at the marker, not at 0.1 s
    host = run(text + "+.1 < . 1:1(0) ack 11 win 65535\n+0 chimney_offload\n")
    assert host.status == "pass"  # the marker is a no-op in host mode


def test_script_addresses_must_be_in_the_test_ranges() -> None:
    text = "--ip_version=ipv6\n--local_ip=2001:2::10\n--remote_ip=2001:2::20\n" + PASSIVE.replace(
        "> S. 0:0(0) ack 1 win 65535 <mss 1460>", "> S. 0:0(0) ack 1 win 65535 <mss 1440>")
    r = Runner(parse_script(text, "t.pkt"))
    assert r.run().status == "pass"
    assert r.h is not None and (r.h.local_ip, r.h.remote_ip) == ("2001:2::10", "2001:2::20")
    bad = run("--remote_ip=192.0.2.1\n" + PASSIVE)
    assert bad.status == "unsupported" and "192.0.2.1 is outside 198.18.0.0/15" in bad.message
    assert bad.message.endswith("at line 1")


# -- TS val checking, iovec calls, ioctl, recv flags --------------------------------------------------

TS_PASSIVE = """--tcp_ts_tick_usecs=1000
`sysctl -q net.ipv4.tcp_sack=0 net.ipv4.tcp_window_scaling=0`
0   socket(..., SOCK_STREAM, IPPROTO_TCP) = 3
+0  bind(3, ..., ...) = 0
+0  listen(3, 1) = 0
+0  < S 0:0(0) win 65535 <mss 1460,nop,nop,TS val 100 ecr 0>
+0  > S. 0:0(0) ack 1 win 65535 <mss 1460,nop,nop,TS val 5000 ecr 100>
+.1 < . 1:1(0) ack 1 win 65535 <nop,nop,TS val 200 ecr 5000>
+0  accept(3, ..., ...) = 4
+0  write(4, ..., 10) = 10
"""


def test_ts_val_checked_against_the_script_clock_with_tcp_ts_tick_usecs() -> None:
    """100 ms after the SYN-ACK our TS val must be 100 ticks of 1 ms later than the SYN-ACK's."""
    ok = run(TS_PASSIVE + "+0 > P. 1:11(10) ack 1 win 65535 <nop,nop,TS val 5100 ecr 200>\n")
    assert ok.status == "pass", ok.message
    bad = run(TS_PASSIVE + "+0 > P. 1:11(10) ack 1 win 65535 <nop,nop,TS val 5300 ecr 200>\n")
    assert bad.status == "fail" and bad.line == 11
    assert "TS val advanced 100000 us since the first checked one, script says 300000 us" in bad.message
    unchecked = run(TS_PASSIVE.replace("--tcp_ts_tick_usecs=1000\n", "")
                    + "+0 > P. 1:11(10) ack 1 win 65535 <nop,nop,TS val 5300 ecr 200>\n")
    assert unchecked.status == "pass", unchecked.message
    slow = run(TS_PASSIVE.replace("=1000", "=10000") + "+0 > P. 1:11(10) ack 1 win 65535 <nop,nop,TS val 5010 ecr 200>\n")
    assert slow.status == "pass", slow.message  # 10 ticks of 10 ms = 100 ms


@pytest.mark.parametrize("mode", ["host", "offload"])
def test_writev_and_readv_move_the_sum_of_the_iovecs(mode: str) -> None:
    r = run(PASSIVE + "+0 writev(4, [{..., 10}, {iov_base=..., iov_len=20}], 2) = 30\n"
            "+0 > P. 1:31(30) ack 1 win 65535\n+.1 < P. 1:41(40) ack 31 win 65535\n"
            "+0 readv(4, [{..., 15}, {..., 15}], 2) = 30\n+0 readv(4, [{..., 100}], 1) = 10\n", mode=mode)
    assert r.status == "pass", r.message


def test_sendmsg_and_recvmsg_with_one_iovec() -> None:
    r = run(PASSIVE + "+0 sendmsg(4, {msg_name(...)=..., msg_iov(1)=[{..., 50}], msg_flags=0}, 0) = 50\n"
            "+0 > P. 1:51(50) ack 1 win 65535\n+.1 < P. 1:21(20) ack 51 win 65535\n"
            "+0 recvmsg(4, {msg_name(...)=..., msg_iov(1)=[{..., 100}], msg_flags=0}, 0) = 20\n")
    assert r.status == "pass", r.message
    flags = run(PASSIVE + "+0 < P. 1:21(20) ack 1 win 65535\n"
                "+0 recvmsg(4, {msg_iov(1)=[{..., 100}], msg_flags=MSG_TRUNC}, 0) = 20\n")
    assert flags.status == "unsupported" and "constant MSG_TRUNC" in flags.message


@pytest.mark.parametrize("mode", ["host", "offload"])
def test_ioctl_siocinq_and_siocoutq_report_queued_bytes(mode: str) -> None:
    r = run(PASSIVE + "+0 ioctl(4, SIOCINQ, [0]) = 0\n+0 < P. 1:301(300) ack 1 win 65535\n"
            "+0 ioctl(4, SIOCINQ, [300]) = 0\n+0 ioctl(4, FIONREAD, [300]) = 0\n"
            "+0 write(4, ..., 100) = 100\n+0 > P. 1:101(100) ack 301 win 65535\n"
            "+0 ioctl(4, SIOCOUTQ, [100]) = 0\n+.1 < . 301:301(0) ack 101 win 65535\n"
            "+0 ioctl(4, SIOCOUTQ, [0]) = 0\n+0 ioctl(3, SIOCINQ, [0]) = -1 EINVAL (Invalid argument)\n", mode=mode)
    assert r.status == "pass", r.message
    wrong = run(PASSIVE + "+0 < P. 1:301(300) ack 1 win 65535\n+0 ioctl(4, SIOCINQ, [200]) = 0\n", mode=mode)
    assert wrong.status == "fail" and "value 300, expected 200" in wrong.message


@pytest.mark.parametrize("mode", ["host", "offload"])
def test_msg_peek_leaves_the_data_for_the_next_read(mode: str) -> None:
    r = run(PASSIVE + "+0 < P. 1:101(100) ack 1 win 65535\n+0 recv(4, ..., 30, MSG_PEEK) = 30\n"
            "+0 recv(4, ..., 1000, MSG_PEEK) = 100\n+0 read(4, ..., 1000) = 100\n"
            "+0 recv(4, ..., 10, MSG_PEEK|MSG_DONTWAIT) = -1 EAGAIN (Resource temporarily unavailable)\n", mode=mode)
    assert r.status == "pass", r.message


def test_msg_dontwait_fails_where_a_blocking_recv_would_wait() -> None:
    r = run(PASSIVE + "+0 recv(4, ..., 10, MSG_DONTWAIT) = -1 EAGAIN (Resource temporarily unavailable)\n"
            "+0...0.1 recv(4, ..., 10, 0) = 10\n+.1 < P. 1:11(10) ack 1 win 65535\n")
    assert r.status == "pass", r.message


@pytest.mark.parametrize("mode", ["host", "offload"])
def test_msg_waitall_blocks_until_all_bytes_arrived(mode: str) -> None:
    r = run(PASSIVE + "+0...0.2 recv(4, ..., 300, MSG_WAITALL) = 300\n+.1 < P. 1:101(100) ack 1 win 65535\n"
            "+.1 < P. 101:301(200) ack 1 win 65535\n+0 > . 1:1(0) ack 301 win 65535\n", mode=mode)
    assert r.status == "pass", r.message
    eof = run(PASSIVE + "+0...0.1 recv(4, ..., 300, MSG_WAITALL) = 100\n+.1 < P. 1:101(100) ack 1 win 65535\n"
              "+0 < F. 101:101(0) ack 1 win 65535\n+0 > . 1:1(0) ack 102 win 65535\n", mode=mode)
    assert eof.status == "pass", eof.message


# -- offload mode: what stays on the host, adapter parameters, R-TMR-04 ---------------------------------


def offload_run(text: str) -> tuple[ScriptResult, Runner]:
    r = Runner(parse_script(text, "t.pkt"), mode="offload")
    res = r.run()
    if res.status == "unsupported":
        pytest.skip(res.message)
    return res, r


def test_offload_mode_keeps_a_connection_whose_settings_the_chimney_cannot_carry() -> None:
    """tcp_fin_timeout changed after the NIC was set up: no chimney field carries it, so the host keeps
    the connection and the result says why (not a failure)."""
    body = PASSIVE + "+0 write(4, ..., 10) = 10\n+0 > P. 1:11(10) ack 1 win 65535\n"
    res, r = offload_run("`sysctl -q net.ipv4.tcp_fin_timeout=5`\n" + body)
    assert res.status == "pass", res.message
    assert len(res.stayed_on_host) == 1 and res.stayed_on_host[0].startswith("fin_wait2_timeout_ns=5000000000 ")
    assert "no chimney field for the FIN_WAIT_2 timeout" in res.stayed_on_host[0]
    assert r.h is not None and r.h.manager.offloaded() == [] and r.h.manager.stats["declined_uncarried"] == 1
    assert "    stayed on host: fin_wait2_timeout_ns=5000000000" in format_result(res)
    plain, r2 = offload_run(NO_OPTS.replace("`\n", " net.ipv4.tcp_fin_timeout=120`\n") + body.split("\n", 1)[1])
    assert plain.status == "pass" and plain.stayed_on_host == []  # the target's own value: offloaded
    assert r2.h is not None and len(r2.h.manager.offloaded()) == 1


def test_offload_mode_keeps_a_connection_whose_maxseg_bounds_what_we_send() -> None:
    text = ("--profile=linux\n" + NO_OPTS + "0 socket(..., SOCK_STREAM, IPPROTO_TCP) = 3\n"
            "+0 setsockopt(3, IPPROTO_TCP, TCP_MAXSEG, [1000], 4) = 0\n+0 bind(3, ..., ...) = 0\n"
            "+0 listen(3, 1) = 0\n+0 < S 0:0(0) win 65535 <mss 1460>\n+0 > S. 0:0(0) ack 1 win 65535 <mss 1000>\n"
            "+.1 < . 1:1(0) ack 1 win 65535\n+0 accept(3, ..., ...) = 4\n")
    res, _ = offload_run(text)
    assert res.status == "pass", res.message
    assert res.stayed_on_host and "TCP_MAXSEG 1000 bounds the MSS we send" in res.stayed_on_host[0]
    r = Runner(parse_script(text.replace("[1000]", "[1460]").replace("<mss 1000>", "<mss 1460>"), "t.pkt"),
               mode="offload")
    assert r.run().stayed_on_host == []  # no lower than the peer's MSS: nothing to carry


def test_adapter_wide_sysctls_become_new_offload_parameters() -> None:
    """tcp_retries2 / tcp_reordering / delayed ACK are per adapter (R-INIT-12): the host sets the
    NDIS_TCP_CONNECTION_OFFLOAD_PARAMETERS again and the target takes them for later offloads."""
    res, r = offload_run("`sysctl -q net.ipv4.tcp_retries2=2 net.ipv4.tcp_reordering=5`\n" + PASSIVE)
    assert res.status == "pass", res.message
    assert r.h is not None
    b = r.h.manager.binding
    assert b.params_accepted and b.params.tcp_maximum_retransmissions == 2 and b.params.tcp_duplicate_ack_threshold == 5
    assert len(r.h.manager.offloaded()) == 1
    (ctx,) = r.h.manager.ndis.adapters[0].driver.tcps.values()
    assert ctx.conn.cfg.max_retransmissions == 2 and ctx.conn.cfg.dupack_threshold == 5


# The ACK owed for 50 bytes received at 0.1 s: the host alone sends it when its 200 ms delayed-ACK timer
# fires (0.3 s); offloading at the 0.15 s marker flushes it then (R-TMR-04).
OWED_ACK = PASSIVE + "+0 < P. 1:51(50) ack 1 win 65535\n+0 read(4, ..., 100) = 50\n+.05 chimney_offload\n"
OWED_ACK_BOTH = OWED_ACK + "@offload +0 > . 1:1(0) ack 51 win 65535\n@host +.15 > . 1:1(0) ack 51 win 65535\n"


def test_r_tmr_04_offload_at_a_marker_flushes_the_owed_ack() -> None:
    """R-TMR-04: delayed-ACK state does not cross the boundary: the host sends the ACK it owes for the 50
    bytes at the hand-over, not 200 ms after the data."""
    res, r = offload_run(OWED_ACK + "+0 > . 1:1(0) ack 51 win 65535\n")
    assert res.status == "pass", res.message
    assert res.outbound[-1] == "0.150000 . 1:1(0) ack 51 win 65535"
    assert r.h is not None and [t for t, kind, _, _ in r.h.manager.history if kind == "offload"] == [150_000_000]
    late, _ = offload_run(OWED_ACK.replace("+.05 chimney_offload\n", "") + "+.05 > . 1:1(0) ack 51 win 65535\n")
    assert late.status == "fail" and "nothing was sent" in late.message  # offloaded at 0.1 s, nothing owed


def test_host_mode_does_nothing_at_the_marker() -> None:
    """The host alone hands nothing over, so nothing flushes its delayed ACK: it goes out at 0.3 s."""
    flushed = run(OWED_ACK + "+0 > . 1:1(0) ack 51 win 65535\n")
    assert flushed.status == "fail" and "nothing was sent" in flushed.message
    host = run(OWED_ACK_BOTH)
    assert host.status == "pass", host.message
    assert host.outbound[-1] == "0.300000 . 1:1(0) ack 51 win 65535"
    assert host.mode_only == {1: "host mode only (line 13: 0.300000 . 1:1(0) ack 51 win 65535)"}


def test_mode_both_reports_the_flushed_ack_as_the_expected_r_tmr_04_difference(tmp_path: Path) -> None:
    (tmp_path / "owed.pkt").write_text(OWED_ACK_BOTH)
    suite = run_suite([tmp_path], mode="both")
    if suite.results[1].status == "unsupported":
        pytest.skip(suite.results[1].message)
    assert [r.status for r in suite.results] == ["pass", "pass"]
    assert suite.mode_diffs == {}  # the script states the difference: not a mismatch
    why = suite.expected_diffs[str(tmp_path / "owed.pkt")]
    assert why == ["host: host mode only (line 13: 0.300000 . 1:1(0) ack 51 win 65535)",
                   "offload: R-TMR-04: the owed delayed ACK flushed at the offload "
                   "(line 12: 0.150000 . 1:1(0) ack 51 win 65535)"]
    text = format_suite(suite)
    assert "EXPECTED DIFF" in text and "MODE DIFF" not in text
    assert text.splitlines()[-1] == "2 passed, 0 failed, 0 unsupported (1 expected mode differences)"


DATA_ON_HANDSHAKE_ACK = (NO_OPTS + "0 socket(..., SOCK_STREAM, IPPROTO_TCP) = 3\n+0 bind(3, ..., ...) = 0\n"
                         "+0 listen(3, 1) = 0\n+0 < S 0:0(0) win 65535 <mss 1460>\n"
                         "+0 > S. 0:0(0) ack 1 win 65535 <mss 1460>\n+.1 < P. 1:11(10) ack 1 win 65535\n"
                         "+0 accept(3, ..., ...) = 4\n+0 read(4, ..., 100) = 10\n"
                         "@offload +0 > . 1:1(0) ack 11 win 65535\n@host +.2 > . 1:1(0) ack 11 win 65535\n")


def test_r_tmr_04_automatic_offload_flushes_the_ack_owed_at_establishment() -> None:
    """Data on the handshake-completing ACK leaves a delayed ACK owed at establishment: the connection is
    offloaded at once all the same and the host flushes that ACK at the hand-over (R-TMR-04), where the
    host alone sends it 200 ms later."""
    res, r = offload_run(DATA_ON_HANDSHAKE_ACK)
    assert res.status == "pass", res.message
    assert r.h is not None and [t for t, kind, _, _ in r.h.manager.history if kind == "offload"] == [100_000_000]
    assert res.outbound[-1] == "0.100000 . 1:1(0) ack 11 win 65535" and res.never_offloaded == []
    host = run(DATA_ON_HANDSHAKE_ACK)
    assert host.status == "pass" and host.outbound[-1] == "0.300000 . 1:1(0) ack 11 win 65535"


def test_offload_mode_says_when_an_established_connection_was_never_offloaded() -> None:
    """A NIC in a low-power state takes no offloads: the script passes on the host engine, and the result
    says the connection was never offloaded and why (a pass must not hide it)."""
    r = Runner(parse_script(PASSIVE + "+0 write(4, ..., 10) = 10\n+0 > P. 1:11(10) ack 1 win 65535\n", "t.pkt"),
               mode="offload")
    setup = r._setup

    def low_power_setup() -> None:
        setup()
        assert r.h is not None
        r.h.manager.power_low = True

    r._setup = low_power_setup  # type: ignore[method-assign]
    res = r.run()
    if res.status == "unsupported":
        pytest.skip(res.message)
    assert res.status == "pass", res.message
    assert res.stayed_on_host == [] and len(res.never_offloaded) == 1
    assert res.never_offloaded[0].endswith(": the offload was not started (the adapter is in a low-power state)")
    assert "    never offloaded: " in format_result(res)
    assert any(n.startswith("never offloaded: ") for n in res.notes)


def test_setting_an_option_no_field_carries_takes_the_connection_back() -> None:
    """TCP_LINGER2 on an offloaded connection: the host uploads it and runs the FIN-WAIT-2 timer itself."""
    res, r = offload_run(PASSIVE + "+0 setsockopt(4, IPPROTO_TCP, TCP_LINGER2, [5], 4) = 0\n+0 close(4) = 0\n"
                         "+0 > F. 1:1(0) ack 1 win 65535\n+.1 < . 1:1(0) ack 2 win 65535\n"
                         "+5.1 < . 1:1(0) ack 2 win 65535\n+0 > R 2:2(0) win 0\n")
    assert res.status == "pass", res.message
    assert res.stayed_on_host and res.stayed_on_host[0].startswith("fin_wait2_timeout_ns=5000000000 ")
    assert r.h is not None
    m = r.h.manager
    assert [(kind, detail.split(":")[0]) for _, kind, _, detail in m.history] == [("offload", "SUCCESS"),
                                                                               ("upload", "uncarried")]
    assert m.stats["uploads_uncarried"] == 1
