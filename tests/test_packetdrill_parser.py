"""The packetdrill parser: comments, options, time specs, packets with options, system call expressions,
errno forms and syntax errors that name the line."""

from __future__ import annotations

import pytest

from chimney.packetdrill.ast import (
    MarkerEvent,
    OptionEvent,
    PacketEvent,
    ShellEvent,
    SyscallEvent,
    UnsupportedEvent,
)
from chimney.packetdrill.parser import ParseError, parse_script, parse_time


def events(text: str) -> list:
    return parse_script(text, "t.pkt").events


def test_comments_line_and_block_keep_line_numbers() -> None:
    evs = events("// first\n/* a\nblock\ncomment */ 0 socket(..., SOCK_STREAM, IPPROTO_TCP) = 3 // tail\n"
                 "+0 close(3) = 0\n")
    assert [(e.line, e.name) for e in evs] == [(4, "socket"), (5, "close")]


def test_slashes_inside_backticks_are_not_comments() -> None:
    (ev,) = events("`ip route change 198.18.0.0/24 dev eth0 initcwnd 2 // not a comment`\n")
    assert isinstance(ev, ShellEvent)
    assert ev.command.endswith("// not a comment")


def test_options_one_per_line_and_several_on_a_line() -> None:
    s = parse_script("--ip_version=ipv6\n--tolerance_usecs=10000 --mss=1200\n0 close(3) = -1 EBADF (x)\n")
    assert s.options == {"ip_version": "ipv6", "tolerance_usecs": "10000", "mss": "1200"}
    assert s.option_lines["mss"] == 2
    assert isinstance(s.events[0], OptionEvent)


@pytest.mark.parametrize(
    ("text", "kind", "value", "upper", "block_end", "block_rel"),
    [
        ("0.1", "abs", 0.1, None, None, False),
        ("+.25", "rel", 0.25, None, None, False),
        ("1", "abs", 1.0, None, None, False),
        ("0.1~0.2", "abs", 0.1, 0.2, None, False),
        ("+0.1~+0.3", "rel", 0.1, 0.3, None, False),
        ("0.100...0.200", "abs", 0.1, None, 0.2, False),
        ("+0...0.5", "rel", 0.0, None, 0.5, True),
        ("0...+2", "abs", 0.0, None, 2.0, True),
        ("*", "any", 0.0, None, None, False),
    ],
)
def test_time_specs(text: str, kind: str, value: float, upper: float | None, block_end: float | None,
                    block_rel: bool) -> None:
    spec, rest = parse_time(text + " close(3) = 0")
    assert spec is not None and rest == "close(3) = 0"
    assert (spec.kind, spec.value, spec.upper, spec.block_end) == (kind, value, upper, block_end)
    assert spec.block_end_rel is block_rel


def test_packet_with_every_option_kind() -> None:
    (ev,) = events("+0 > S. 0:0(0) ack 1 win 65535 <mss 1460,sackOK,TS val 100 ecr 0,nop,wscale 7,"
                   "sack 1:2 5:9,eol>\n")
    assert isinstance(ev, PacketEvent)
    assert (ev.direction, ev.flags, ev.seq, ev.end, ev.length, ev.ack, ev.win) == (">", "S.", 0, 0, 0, 1, 65535)
    assert [str(o) for o in ev.options] == [
        "mss 1460", "sackOK", "TS val 100 ecr 0", "nop", "wscale 7", "sack 1:2 5:9", "eol"]


def test_packet_wildcards_and_hex() -> None:
    a, b = events("* > . 1:1(0) ack 0x10 <...>\n+0 > . 1:1(0) ack 1 <nop,nop,TS val * ecr 0x20>\n")
    assert a.time.kind == "any" and a.any_options and a.ack == 16
    assert b.options[2].ts_val is None and b.options[2].ts_ecr == 32


def test_packet_payload_length_must_match_sequence_range() -> None:
    with pytest.raises(ParseError) as e:
        events("0 socket(..., SOCK_STREAM, IPPROTO_TCP) = 3\n+0 < P. 1:11(5) ack 1 win 100\n")
    assert e.value.line == 2 and "end - start" in e.value.message


def test_syscall_arguments_structs_lists_or_and_errno() -> None:
    (ev,) = events("+0 setsockopt(4, SOL_SOCKET, SO_LINGER, {l_onoff=1, l_linger=0}, 8) = 0\n")
    assert ev.args[3].kind == "struct" and str(ev.args[3]) == "{l_onoff=1, l_linger=0}"
    (ev,) = events("+0 fcntl(3, F_SETFL, O_RDWR|O_NONBLOCK) = 0\n")
    assert ev.args[2].kind == "or" and [i.value for i in ev.args[2].items] == ["O_RDWR", "O_NONBLOCK"]
    (ev,) = events("+0 connect(3, ..., ...) = -1 EINPROGRESS (Operation now in progress)\n")
    assert (ev.ret, ev.errno_name, ev.errno_text) == (-1, "EINPROGRESS", "Operation now in progress")
    (ev,) = events("+0 fcntl(3, F_GETFL) = 0x802\n")
    assert ev.ret == 0x802
    (ev,) = events("+0 read(3, ..., 10) = ?\n")
    assert ev.ret is None


def test_statement_spanning_lines_inside_brackets() -> None:
    (ev,) = events("+0 poll([{fd=4,\n          events=POLLIN,\n          revents=POLLIN}], 1, 0) = 1\n+0 close(4) = 0\n")[:1]
    assert isinstance(ev, SyscallEvent) and ev.line == 1
    assert ev.args[0].items[0].fields["revents"].value == "POLLIN"


def test_unsupported_constructs_are_events_not_errors() -> None:
    evs = events("+0 %{ print(tcpi_rto) }%\n+0 < udp (10)\n+0 > icmp unreachable\n")
    assert [type(e) for e in evs] == [UnsupportedEvent] * 3
    assert [e.construct for e in evs] == ["inline Python %{ }%", "udp packet", "icmp packet"]


def test_chimney_offload_marker() -> None:
    (ev,) = events("+0 chimney_offload\n")
    assert isinstance(ev, MarkerEvent) and ev.name == "chimney_offload"


def test_mode_prefixes_limit_a_statement_to_one_mode() -> None:
    evs = events("@offload +0 > . 1:1(0) ack 11 win 65535\n@host +.2~+.21 > . 1:1(0) ack 11 win 65535\n"
                 "+0 read(4, ..., 100) = 10\n@offload +0 chimney_offload\n")
    assert [e.only_mode for e in evs] == ["offload", "host", None, "offload"]
    assert isinstance(evs[1], PacketEvent) and evs[1].time is not None and evs[1].time.upper == 0.21
    assert isinstance(evs[3], MarkerEvent)


@pytest.mark.parametrize(("text", "fragment"), [
    ("@both +0 close(3) = 0\n", "unknown mode prefix '@both'"),
    ("@offload\n", "@offload needs an event after it"),
    ("@host --mss=1000\n", "@host needs an event after it"),
])
def test_bad_mode_prefixes_are_parse_errors(text: str, fragment: str) -> None:
    with pytest.raises(ParseError, match=fragment):
        parse_script(text, "t.pkt")


@pytest.mark.parametrize(
    ("text", "line", "fragment"),
    [
        ("0 socket(..., SOCK_STREAM, IPPROTO_TCP) = 3\n\n+0 < Q 1:1(0) win 1\n", 3, "bad TCP flags"),
        ("+0 < . 1-1(0) win 1\n", 1, "bad sequence spec"),
        ("+0 < . 1:1(0) win 1 <mss>\n", 1, "unknown TCP option"),
        ("+0 close(3)\n", 1, "expected '= RESULT"),
        ("/* never closed\n0 close(3) = 0\n", 1, "unterminated /*"),
        ("close(3) = 0\n", 1, "missing time"),
        ("+0 < . 1:1(0) ack 1 win 5 ecr 4\n", 1, "inside <options>"),
    ],
)
def test_syntax_errors_name_the_line(text: str, line: int, fragment: str) -> None:
    with pytest.raises(ParseError) as e:
        parse_script(text, "bad.pkt")
    assert e.value.line == line
    assert fragment in str(e.value) and str(e.value).startswith(f"bad.pkt:{line}:")


def test_ipv6_addresses_in_options_keep_their_colons() -> None:
    s = parse_script("--ip_version=ipv6 --local_ip=2001:2::1\n--remote_ip=2001:2:0:0::2\n0 close(3) = -1 EBADF (x)\n")
    assert s.options["local_ip"] == "2001:2::1" and s.options["remote_ip"] == "2001:2:0:0::2"


def test_struct_with_positional_iovec_and_counted_fields() -> None:
    (ev,) = events("0 sendmsg(4, {msg_name(...)=..., msg_iov(1)=[{..., 100}], msg_flags=0}, 0) = 100\n")
    msg = ev.args[1]
    assert msg.kind == "struct" and set(msg.fields) == {"msg_name", "msg_iov", "msg_flags"}
    (iov,) = msg.fields["msg_iov"].items
    assert iov.kind == "struct" and [i.kind for i in iov.items] == ["ellipsis", "int"] and iov.items[1].value == 100
    assert str(msg) == "{msg_name=..., msg_iov=[{..., 100}], msg_flags=0}"


def test_struct_positional_call_is_not_taken_for_a_counted_field() -> None:
    (ev,) = events("0 f({htons(8080), x=1}) = 0\n")
    s = ev.args[0]
    assert [i.kind for i in s.items] == ["call"] and s.items[0].value == "htons" and s.fields["x"].value == 1


def test_struct_without_separator_is_a_syntax_error() -> None:
    with pytest.raises(ParseError, match=r"t.pkt:1: parse error: expected .,. or .}. in a struct"):
        events("0 writev(4, [{..., 10 20}], 1) = 30\n")
