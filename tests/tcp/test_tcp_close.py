"""Connection termination (RFC 9293 3.6): active/passive/simultaneous close, half-close, TIME-WAIT,
FIN_WAIT_2 timeout (R-TMR-05/06/23/24), close with unread data, abort."""

from __future__ import annotations

import pytest
from tcp_harness import C1, MS, S1, S, established_server, w

from chimney.tcp import (
    Closed,
    DataReadable,
    EnteredTimeWait,
    FinWait2Timeout,
    PeerClosed,
    TcpConfig,
    TcpStateError,
)

ACK1 = f"ack {S1} win 65535"
F1 = w(S1 + 1)  # server sequence after its FIN


def test_active_close_through_time_wait() -> None:
    p = established_server(TcpConfig(msl_ns=1 * S))
    p.conn.shutdown(0)
    p.expect_sent(f"F. {S1}:{S1}(0) ack {C1}")
    assert p.conn.state.name == "FinWait1"
    p.peer_sends(f". {C1}:{C1}(0) ack {F1} win 65535")
    assert p.conn.state.name == "FinWait2" and p.conn.next_deadline() is None  # half-close: no timer
    p.peer_sends(f"F. {C1}:{C1}(0) ack {F1} win 65535")
    p.expect_sent(f". {F1}:{F1}(0) ack {w(C1 + 1)}")
    assert p.conn.state.name == "TimeWait"
    assert p.conn.pop_events() == [EnteredTimeWait(), PeerClosed()]
    assert p.conn.next_deadline() == 2 * S
    p.run_timers_until(2 * S)
    assert p.conn.state.name == "Closed" and p.conn.pop_events() == [Closed("time_wait_done")]


def test_passive_close_through_last_ack() -> None:
    p = established_server()
    p.peer_sends(f"F. {C1}:{C1}(0) {ACK1}")
    p.expect_sent(f". {S1}:{S1}(0) ack {w(C1 + 1)}")
    assert p.conn.state.name == "CloseWait" and p.conn.pop_events() == [PeerClosed()]
    p.conn.send(b"bye", 0)
    p.conn.shutdown(0)
    p.expect_sent(f"P. {S1}:{w(S1 + 3)}(3) ack {w(C1 + 1)}", f"F. {w(S1 + 3)}:{w(S1 + 3)}(0) ack {w(C1 + 1)}")
    assert p.conn.state.name == "LastAck"
    p.peer_sends(f". {w(C1 + 1)}:{w(C1 + 1)}(0) ack {w(S1 + 4)} win 65535")
    assert p.conn.state.name == "Closed" and p.conn.pop_events() == [Closed("normal")]


def test_simultaneous_close_via_closing() -> None:
    p = established_server(TcpConfig(msl_ns=1 * S))
    p.conn.shutdown(0)
    p.out()
    p.peer_sends(f"F. {C1}:{C1}(0) {ACK1}")  # peer's FIN does not ack ours
    p.expect_sent(f". {F1}:{F1}(0) ack {w(C1 + 1)}")
    assert p.conn.state.name == "Closing"
    p.peer_sends(f". {w(C1 + 1)}:{w(C1 + 1)}(0) ack {F1} win 65535")
    assert p.conn.state.name == "TimeWait"


def test_fin_acking_our_fin_goes_straight_to_time_wait() -> None:
    p = established_server()
    p.conn.shutdown(0)
    p.out()
    p.peer_sends(f"F. {C1}:{C1}(0) ack {F1} win 65535")
    assert p.conn.state.name == "TimeWait"


def test_peer_closed_only_after_earlier_data_is_read() -> None:
    p = established_server()
    p.peer_sends(f"FP. {C1}:{w(C1 + 4)}(4) {ACK1}", payload=b"data")
    assert p.conn.pop_events() == [DataReadable(4, True)]
    assert bytes(p.conn.recv(2)) == b"da" and p.conn.pop_events() == []
    assert bytes(p.conn.recv(10)) == b"ta" and p.conn.pop_events() == [PeerClosed()]


def test_out_of_order_fin_waits_for_the_gap() -> None:
    p = established_server()
    p.peer_sends(f"F. {w(C1 + 5)}:{w(C1 + 10)}(5) {ACK1}")
    assert p.conn.state.name == "Established"
    p.peer_sends(f". {C1}:{w(C1 + 5)}(5) {ACK1}")
    assert p.conn.state.name == "CloseWait" and p.conn.rcv_nxt & 0xFFFFFFFF == w(C1 + 11)


def test_half_close_still_receives() -> None:
    p = established_server()
    p.conn.shutdown(0)
    p.out()
    p.peer_sends(f". {C1}:{w(C1 + 100)}(100) ack {F1} win 65535")
    assert p.conn.state.name == "FinWait2" and p.conn.readable == 100


def test_send_after_shutdown_is_an_error() -> None:
    p = established_server()
    p.conn.shutdown(0)
    with pytest.raises(TcpStateError):
        p.conn.send(b"x", 0)


def test_fin_is_retransmitted_on_timeout() -> None:
    p = established_server()
    p.conn.shutdown(0)
    p.out()
    assert p.conn.next_deadline() == 200 * MS  # handshake RTT ~0: RTO clamps to rto_min
    p.run_timers_until(200 * MS)
    p.expect_sent(f"F. {S1}:{S1}(0) ack {C1}")
    assert p.conn.next_deadline() == 600 * MS


def test_time_wait_reacks_retransmitted_fin_and_restarts_2msl() -> None:
    p = established_server(TcpConfig(msl_ns=1 * S))
    p.conn.shutdown(0)
    p.out()
    p.peer_sends(f"F. {C1}:{C1}(0) ack {F1} win 65535")
    p.out()
    p.now = 1 * S
    p.peer_sends(f"F. {C1}:{C1}(0) ack {F1} win 65535")
    p.expect_sent(f". {F1}:{F1}(0) ack {w(C1 + 1)}")
    assert p.conn.next_deadline() == 3 * S


@pytest.mark.parametrize("rfc1337", [False, True])
def test_rst_in_time_wait(rfc1337: bool) -> None:
    p = established_server(TcpConfig(rfc1337=rfc1337))
    p.conn.shutdown(0)
    p.out()
    p.peer_sends(f"F. {C1}:{C1}(0) ack {F1} win 65535")
    p.peer_sends(f"R {w(C1 + 1)}:{w(C1 + 1)}(0)")
    assert p.conn.state.name == ("TimeWait" if rfc1337 else "Closed")


def test_fin_wait_2_timer_after_close_r_tmr_05_06_24() -> None:
    p = established_server(TcpConfig(fin_wait2_timeout_ns=120 * S))
    p.conn.close(0)
    p.out()
    p.peer_sends(f". {C1}:{C1}(0) ack {F1} win 65535")
    assert p.conn.state.name == "FinWait2" and p.conn.next_deadline() == 120 * S
    p.now = 100 * S
    p.peer_sends(f". {C1}:{C1}(0) ack {F1} win 65000")  # R-TMR-23: an acceptable segment restarts it
    assert p.conn.next_deadline() == 220 * S
    p.run_timers_until(220 * S)
    assert p.conn.state.name == "Closed"
    ev = p.conn.pop_events()
    assert ev[-2:] == [FinWait2Timeout(), Closed("fin_wait2_timeout")]


def test_close_with_unread_data_sends_rst() -> None:
    p = established_server()
    p.peer_sends(f". {C1}:{w(C1 + 10)}(10) {ACK1}")
    p.out()
    p.conn.close(0)
    p.expect_sent(f"R {S1}:{S1}(0)")
    assert p.conn.state.name == "Closed"


def test_abort_sends_rst_at_snd_max() -> None:
    p = established_server(TcpConfig(nagle=False))
    p.conn.send(b"x" * 10, 0)
    p.out()
    p.conn.abort(0)
    p.expect_sent(f"R {w(S1 + 10)}:{w(S1 + 10)}(0)")
    assert p.conn.pop_events() == [Closed("abort")]


def test_rst_in_close_wait_and_last_ack() -> None:
    p = established_server()
    p.peer_sends(f"F. {C1}:{C1}(0) {ACK1}")
    p.conn.shutdown(0)
    assert p.conn.state.name == "LastAck"
    p.peer_sends(f"R {w(C1 + 1)}:{w(C1 + 1)}(0)")
    assert p.conn.state.name == "Closed"


def test_data_after_peer_fin_is_dropped() -> None:
    p = established_server()
    p.peer_sends(f"F. {C1}:{C1}(0) {ACK1}")
    p.now = 5 * MS
    p.peer_sends(f". {w(C1 + 1)}:{w(C1 + 6)}(5) {ACK1}")
    assert p.conn.readable == 0 and p.conn.stats.drops["data_after_fin"] == 1


def to_state(name: str):
    p = established_server()
    if name in ("FinWait1", "FinWait2", "Closing"):
        p.conn.shutdown(0)
    if name == "FinWait2":
        p.peer_sends(f". {C1}:{C1}(0) ack {F1} win 65535")
    if name == "Closing":
        p.peer_sends(f"F. {C1}:{C1}(0) {ACK1}")
    if name == "CloseWait":
        p.peer_sends(f"F. {C1}:{C1}(0) {ACK1}")
    p.out()
    p.conn.pop_events()
    assert p.conn.state.name == name
    return p


@pytest.mark.parametrize("state", ["Established", "FinWait1", "FinWait2", "CloseWait", "Closing"])
def test_rst_processing_in_every_synchronized_state(state: str) -> None:
    p = to_state(state)
    rcv = w(p.conn.rcv_nxt)
    p.peer_sends(f"R {w(rcv + 1)}:{w(rcv + 1)}(0)")  # in window, not exact: challenge ACK (RFC 5961)
    assert p.conn.state.name == state and len(p.out()) == 1
    p.peer_sends(f"R {rcv}:{rcv}(0)")
    assert p.conn.state.name == "Closed" and p.out() == []


def test_fin_only_segment_out_of_order_then_in_order_data() -> None:
    p = established_server()
    p.peer_sends(f"F. {w(C1 + 5)}:{w(C1 + 5)}(0) {ACK1}")
    p.peer_sends(f". {C1}:{w(C1 + 5)}(5) {ACK1}")
    assert p.conn.state.name == "CloseWait"


def test_passive_child_rst_in_syn_rcvd_goes_away_quietly() -> None:
    from tcp_harness import CLIENT_ISS, Peer

    from chimney.tcp import Connection

    c = Connection(TcpConfig(), 80, 2000, 0xFFFFFFF0)
    c.listen()
    p = Peer(c)
    p.peer_sends(f"S {CLIENT_ISS}:{CLIENT_ISS}(0) win 100")
    p.out()
    p.peer_sends(f"R {C1}:{C1}(0)")
    assert c.state.name == "Closed"
