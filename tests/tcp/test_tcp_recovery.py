"""Loss recovery and congestion control: fast retransmit / NewReno partial ACKs (RFC 5681, RFC 6582),
limited transmit (RFC 3042), SACK scoreboard recovery (RFC 6675), slow start / CA, CUBIC (RFC 9438)."""

from __future__ import annotations

from tcp_harness import C1, S1, Peer, established_server, w

from chimney.tcp import TcpConfig
from chimney.tcp.cc import LOSS_FAST, LOSS_RTO, Cubic, NewReno

MSS = 1000


def sender(sack: bool, cwnd_segments: int = 10) -> Peer:
    opts = "mss 1000,sackOK" if sack else "mss 1000"
    p = established_server(TcpConfig(initial_window=cwnd_segments, nagle=False), opts=opts)
    p.conn.send(b"d" * 20 * MSS, 0)
    segs = p.out()
    assert len(segs) == cwnd_segments
    return p


def dupack(p: Peer, sack: str = "") -> list:
    opt = f" <sack {sack}>" if sack else ""
    p.peer_sends(f". {C1}:{C1}(0) ack {S1} win 65535{opt}")
    return p.out()


def test_limited_transmit_then_fast_retransmit_newreno() -> None:
    p = sender(sack=False)
    assert [len(s.payload) for s in dupack(p)] == [MSS]  # RFC 3042: new data on 1st and 2nd dupack
    assert p.sent[-1].seq == w(S1 + 10 * MSS)
    assert [s.seq for s in dupack(p)] == [w(S1 + 11 * MSS)]
    third = dupack(p)
    assert third[0].seq == S1 and len(third[0].payload) == MSS  # fast retransmit of SND.UNA
    c = p.conn
    assert c.in_recovery and c.cc.ssthresh == 6 * MSS  # FlightSize 12 segments / 2
    assert c.cc.cwnd == 9 * MSS  # ssthresh + 3*SMSS
    assert c.stats.fast_retransmits == 1


def test_newreno_partial_ack_retransmits_next_hole_and_full_ack_exits() -> None:
    p = sender(sack=False)
    for _ in range(3):
        dupack(p)
    recover = p.conn.snd_max
    p.peer_sends(f". {C1}:{C1}(0) ack {w(S1 + 3 * MSS)} win 65535")  # partial ACK
    segs = p.out()
    assert segs[0].seq == w(S1 + 3 * MSS) and p.conn.in_recovery  # RFC 6582 step 5
    p.peer_sends(f". {C1}:{C1}(0) ack {w(recover)} win 65535")
    assert not p.conn.in_recovery
    assert p.conn.cc.cwnd <= p.conn.cc.ssthresh  # deflated on exit


def test_no_second_fast_retransmit_before_recover_is_covered() -> None:
    p = sender(sack=False)
    for _ in range(3):
        dupack(p)
    p.run_timers_until(p.conn.next_deadline() or 0)  # RTO: recover = SND.MAX
    p.out()
    assert not p.conn.in_recovery
    for _ in range(4):
        dupack(p)
    assert not p.conn.in_recovery  # RFC 6582 3.2 step 2: dupacks for pre-RTO data


def test_sack_recovery_retransmits_only_holes_rfc6675() -> None:
    p = sender(sack=True)
    # Segments 1 and 4 (0-based) lost; the receiver SACKs the rest as they arrive.
    blocks = [
        f"{w(S1 + 2 * MSS)}:{w(S1 + 3 * MSS)}",
        f"{w(S1 + 2 * MSS)}:{w(S1 + 4 * MSS)}",
        f"{w(S1 + 5 * MSS)}:{w(S1 + 6 * MSS)} {w(S1 + 2 * MSS)}:{w(S1 + 4 * MSS)}",
    ]
    p.peer_sends(f". {C1}:{C1}(0) ack {w(S1 + MSS)} win 65535")
    p.out()
    out = []
    for b in blocks:
        out += dupack_at(p, w(S1 + MSS), b)
    assert p.conn.in_recovery
    rexmit = [s.seq for s in out if (s.seq - S1) % 2**32 < 10 * MSS]
    assert rexmit[0] == w(S1 + MSS)  # first hole first
    assert w(S1 + 2 * MSS) not in rexmit and w(S1 + 3 * MSS) not in rexmit  # SACKed: never resent


def dupack_at(p: Peer, ack: int, sack: str) -> list:
    p.peer_sends(f". {C1}:{C1}(0) ack {ack} win 65535 <sack {sack.replace(' ', ',sack ')}>")
    return p.out()


def test_sack_scoreboard_pipe_accounting() -> None:
    p = sender(sack=True)
    dupack_at(p, S1, f"{w(S1 + MSS)}:{w(S1 + 4 * MSS)}")
    c = p.conn
    assert c.in_recovery  # > (DupThresh-1)*SMSS bytes SACKed above SND.UNA (RFC 6675 IsLost)
    lost_edge = c._lost_edge()
    assert lost_edge == S1 + MSS + 2**32 * (c.snd_una >= 2**32) or c._pipe(lost_edge) >= 0
    # 10 outstanding - 3 SACKed - 1 lost + 1 retransmitted = 7 segments in the pipe
    assert c._pipe(c._lost_edge()) == 7 * MSS


def test_slow_start_then_congestion_avoidance() -> None:
    cc = NewReno(MSS, 10)
    cc.on_ack(MSS, 0, 0, 10 * MSS)
    assert cc.cwnd == 11 * MSS
    cc.ssthresh = 11 * MSS
    for _ in range(11):
        cc.on_ack(MSS, 0, 0, 11 * MSS)
    assert cc.cwnd == 12 * MSS  # one SMSS per window in CA
    cc.on_loss(LOSS_RTO, 12 * MSS, 0)
    assert cc.cwnd == MSS and cc.ssthresh == 6 * MSS


def test_cubic_reduces_by_beta_and_regrows_past_wmax() -> None:
    cc = Cubic(MSS, 10)
    cc.cwnd = 1000 * MSS
    cc.ssthresh = 500 * MSS
    cc.on_loss(LOSS_FAST, 1000 * MSS, 0)
    assert cc.cwnd == 700 * MSS and cc.ssthresh == 700 * MSS
    cc.on_recovery_end(0, 700 * MSS)
    t = 0
    rtt = 50_000_000
    while cc.cwnd < 1000 * MSS and t < 60 * 10**9:
        cc.on_ack(cc.cwnd, rtt, t, cc.cwnd)  # one window acknowledged per RTT
        t += rtt
    k = ((1000 - 700) / 0.4) ** (1 / 3)  # RFC 9438 eq. 2, in segments: 9.1 s
    assert abs(t / 1e9 - k) < 0.5  # concave region: reaches W_max about K seconds after the cut
    for _ in range(40):
        cc.on_ack(cc.cwnd, rtt, t, cc.cwnd)
        t += rtt
    assert cc.cwnd > 1000 * MSS  # convex region beyond W_max


def test_cubic_reno_friendly_region_at_small_windows() -> None:
    cc = Cubic(MSS, 10)
    cc.cwnd = 20 * MSS
    cc.on_loss(LOSS_FAST, 20 * MSS, 0)
    cc.on_recovery_end(0, 14 * MSS)
    start = cc.cwnd
    t = 0
    for _ in range(10):
        cc.on_ack(cc.cwnd, 10_000_000, t, cc.cwnd)
        t += 10_000_000
    # Reno-friendly growth (alpha = 3(1-beta)/(1+beta) ~ 0.53 segment/RTT) beats the flat cubic start.
    assert cc.cwnd - start >= 4 * MSS


def test_cubic_fast_convergence() -> None:
    cc = Cubic(MSS, 10)
    cc.cwnd = 100 * MSS
    cc.on_loss(LOSS_FAST, 100 * MSS, 0)
    cc.cwnd = 80 * MSS
    cc.on_loss(LOSS_FAST, 80 * MSS, 0)
    assert abs(cc.w_max - 80 * (1 + 0.7) / 2) < 1e-9
