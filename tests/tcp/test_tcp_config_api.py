"""Configuration, user-call errors, cached-state updates (UpdateOffload: R-TMR-08/09/17 flags) and
recovery state carried through a move."""

from __future__ import annotations

import pytest
from tcp_harness import C1, MS, S1, Peer, S, established_server, w

from chimney.ndis.offload_state import MAX_RT_UNLIMITED, TcpCachedFlags, TcpOffloadStateCached
from chimney.tcp import Connection, TcpConfig, TcpStateError, linux_profile
from chimney.tcp.offload import update_cached


def test_linux_profile_defaults() -> None:
    cfg = linux_profile()
    assert cfg.congestion_control == "cubic" and cfg.rto_min_ns == 200 * MS and cfg.rto_max_ns == 120 * S
    assert cfg.delack_timeout_ns == 40 * MS and cfg.time_wait_ns == 60 * S and cfg.rcv_wscale == 7
    assert linux_profile(nagle=False).nagle is False


@pytest.mark.parametrize(
    "bad",
    [{"mss": 10}, {"congestion_control": "vegas"}, {"rcv_wscale": 15}, {"rto_min_ns": 5 * S}, {"rcv_buf": 0}],
)
def test_bad_config_is_rejected(bad: dict) -> None:
    with pytest.raises(ValueError):
        Connection(TcpConfig(**bad))


def test_user_call_errors() -> None:
    c = Connection(TcpConfig(), 1, 2, 3)
    with pytest.raises(TcpStateError):
        c.send(b"x", 0)
    c.connect(0)
    with pytest.raises(TcpStateError):
        c.connect(0)
    with pytest.raises(ValueError):
        c.set_path_mtu(40)


def test_send_buffer_limit_and_send_space_event() -> None:
    p = established_server(TcpConfig(snd_buf=3000, nagle=False))
    assert p.conn.send(b"a" * 5000, 0) == 3000
    p.out()
    p.peer_sends(f". {C1}:{C1}(0) ack {w(S1 + 2920)} win 65535")
    ev = p.conn.pop_events()
    assert ev and ev[-1].__class__.__name__ == "SendSpace" and ev[-1].n == 2920


def test_window_update_from_recv_carries_current_timestamp() -> None:
    p = established_server(TcpConfig(rcv_buf=2000, mss=1000), opts="mss 1000,TS val 1 ecr 0")
    p.now = 3 * S
    p.peer_sends(f". {C1}:{w(C1 + 1000)}(1000) ack {S1} win 65535 <TS val 2 ecr 0>")
    p.peer_sends(f". {w(C1 + 1000)}:{w(C1 + 2000)}(1000) ack {S1} win 65535 <TS val 2 ecr 0>")
    p.out()
    p.conn.recv(-1)  # no `now`: uses the last time the connection saw
    (upd,) = p.out()
    assert upd.window == 2000 and upd.options is not None and upd.options.ts_val == 3000


def cached(flags: int, **kw: int) -> TcpOffloadStateCached:
    return TcpOffloadStateCached(flags=flags, **kw)


def test_update_cached_keepalive_restart_and_max_rt() -> None:
    p = established_server()
    c = p.conn
    on = TcpCachedFlags.KEEP_ALIVE_ENABLED | TcpCachedFlags.NAGLING_ENABLED
    update_cached(c, cached(on, ka_timeout=5000, ka_interval=1000, ka_probe_count=2, max_rt=MAX_RT_UNLIMITED), 0, 1000)
    assert c.cfg.keepalive and c.next_deadline() == 5 * S and c.cfg.max_rt_ns == -1
    p.run_timers_until(6 * S)
    assert c.keepalive_probes == 2
    update_cached(c, cached(on | TcpCachedFlags.KEEP_ALIVE_RESTART, ka_timeout=5000, ka_interval=1000,
                            ka_probe_count=2, max_rt=3000), 6 * S, 1000)
    assert c.keepalive_probes == 0 and c.next_deadline() == 11 * S and c.cfg.max_rt_ns == 3 * S
    update_cached(c, cached(0, max_rt=0), 6 * S, 1000)
    assert not c.cfg.keepalive and c.next_deadline() is None and c.cfg.max_rt_ns == 0


def test_update_cached_max_rt_restart_resets_total_rt() -> None:
    p = established_server(TcpConfig(max_rt_ns=1 * S))
    p.conn.send(b"a", 0)
    p.run_timers_until(600 * MS)
    assert p.conn.export_state(600 * MS, 1000, flush_delayed_ack=False)[2].total_rt == 400
    update_cached(p.conn, cached(TcpCachedFlags.MAX_RT_RESTART, max_rt=1000), 600 * MS, 1000)
    assert p.conn.export_state(600 * MS, 1000, flush_delayed_ack=False)[2].total_rt == 0
    p.run_timers_until(1400 * MS)
    assert p.conn.state.name == "Established"  # the restart bought another second


def test_update_cached_rcv_window_advertises_new_window() -> None:
    p = established_server(TcpConfig(rcv_buf=4000))
    update_cached(p.conn, cached(TcpCachedFlags.UPDATE_RCV_WND, initial_rcv_wnd=30000), 0, 1000)
    (upd,) = p.out()
    assert upd.window == 30000


def test_move_during_newreno_recovery_keeps_recovering() -> None:
    p = established_server(TcpConfig(nagle=False), opts="mss 1000")
    p.conn.send(b"d" * 20_000, 0)
    p.out()
    for _ in range(3):
        p.peer_sends(f". {C1}:{C1}(0) ack {S1} win 65535")
    p.out()
    assert p.conn.in_recovery
    st = p.conn.export_state(1 * MS, 1000)
    assert st[2].dup_ack_count == 3
    q = Peer(Connection.import_state(*st, 1 * MS, 1000, cfg=p.conn.cfg), 1 * MS)
    assert q.conn.in_recovery
    q.peer_sends(f". {C1}:{C1}(0) ack {w(S1 + 2000)} win 65535")  # partial ACK
    segs = q.out()
    assert segs and segs[0].seq == w(S1 + 2000)  # RFC 6582: next hole retransmitted at once
