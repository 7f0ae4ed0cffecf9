"""Generates the feature families of the packetdrill suite (committed output; rerun to refresh).

`python tests/packetdrill/gen_features.py` writes one folder per RFC area. Each script states the
behaviour and the RFC section it checks; all start from the same small set of setups.
"""

from __future__ import annotations

from pathlib import Path

HERE = Path(__file__).resolve().parent
NO_OPTS = "`sysctl -q net.ipv4.tcp_timestamps=0 net.ipv4.tcp_sack=0 net.ipv4.tcp_window_scaling=0`\n"
SACK_ONLY = "`sysctl -q net.ipv4.tcp_timestamps=0 net.ipv4.tcp_window_scaling=0`\n"


def passive(syn_opts: str = "<mss 1460>", synack_opts: str = "<mss 1460>", win: int = 65535,
            pre: str = "", synack_win: int = 65535) -> str:
    """LISTEN on fd 3, handshake at 0 / 0.1, accept() = 4. `pre`: socket options set before listen."""
    return (
        "0   socket(..., SOCK_STREAM, IPPROTO_TCP) = 3\n"
        + pre
        + "+0  bind(3, ..., ...) = 0\n+0  listen(3, 1) = 0\n"
        f"+0  < S 0:0(0) win {win} {syn_opts}\n"
        f"+0  > S. 0:0(0) ack 1 win {synack_win} {synack_opts}\n"
        f"+.1 < . 1:1(0) ack 1 win {win}\n"
        "+0  accept(3, ..., ...) = 4\n"
    )


P = passive()  # plain: no TS/SACK/WS (with NO_OPTS), RTT sample 100 ms -> RTO 300 ms
P_SACK = passive("<mss 1460,sackOK>", "<mss 1460,nop,nop,sackOK>")
P1000 = passive("<mss 1000>")  # the peer's MSS 1000 makes segment sizes round
P_SACK1000 = passive("<mss 1000,sackOK>", "<mss 1460,nop,nop,sackOK>")

SCRIPTS: dict[str, dict[str, tuple[str, str]]] = {}


def add(folder: str, name: str, doc: str, body: str) -> None:
    SCRIPTS.setdefault(folder, {})[name] = (doc, body)


# -- RFC 7323 window scaling -------------------------------------------------------------------------
WS = "rfc7323_2_window_scaling"
WS_SYSCTL = "`sysctl -q net.ipv4.tcp_timestamps=0 net.ipv4.tcp_sack=0`\n"
add(WS, "peer_scale_applied", "The peer's window field is shifted by its scale (RFC 7323 2.3): win 1 << 2 = 4 "
    "bytes... here win 100 with wscale 2 lets us send 400 bytes", WS_SYSCTL + passive(
        "<mss 1460,nop,wscale 2>", "<mss 1460,nop,wscale 3>", win=100, synack_win=65535)
    + "+0  write(4, ..., 1000) = 1000\n+0  > . 1:401(400) ack 1 win 32768\n"
    "+.1 < . 1:1(0) ack 401 win 1000\n+0  > P. 401:1001(600) ack 1 win 32768\n")
add(WS, "not_offered_by_peer", "Without the peer's wscale we send none and never scale (RFC 7323 1.3, 2.2)",
    WS_SYSCTL + passive() + "+0  < P. 1:101(100) ack 1 win 65535\n+.2 > . 1:1(0) ack 101 win 65535\n")
add(WS, "our_window_scaled", "Our window field is shifted right by our scale 3 after the handshake "
    "(RFC 7323 2.3): 262144 >> 3 = 32768", WS_SYSCTL + passive("<mss 1460,nop,wscale 0>", "<mss 1460,nop,wscale 3>")
    + "+0  < P. 1:101(100) ack 1 win 65535\n+.2 > . 1:1(0) ack 101 win 32755\n")
add(WS, "syn_window_not_scaled", "The window of a SYN|ACK is never scaled (RFC 7323 2.2): 300 bytes, "
    "then the scaled window of the next ACK (10 << 7 = 1280)", WS_SYSCTL
    + "0   socket(..., SOCK_STREAM, IPPROTO_TCP) = 3\n+0  fcntl(3, F_SETFL, O_RDWR|O_NONBLOCK) = 0\n"
    "+0  connect(3, ..., ...) = -1 EINPROGRESS (Operation now in progress)\n"
    "+0  > S 0:0(0) win 65535 <mss 1460,nop,wscale 3>\n"
    "+.1 < S. 0:0(0) ack 1 win 300 <mss 1460,nop,wscale 7>\n+0  > . 1:1(0) ack 1 win 32768\n"
    "+0  write(3, ..., 1000) = 1000\n+0  > . 1:301(300) ack 1 win 32768\n"
    "+.1 < . 1:1(0) ack 301 win 10\n+0  > P. 301:1001(700) ack 1 win 32768\n")
add(WS, "scale_15_clamped", "A shift above 14 is used as 14 (RFC 7323 2.3): win 1 means 16384 bytes",
    WS_SYSCTL + passive("<mss 1000,nop,wscale 15>", "<mss 1460,nop,wscale 3>", win=1)
    + "+0  write(4, ..., 3000) = 3000\n+0  > . 1:1001(1000) ack 1 win 32768\n"
    "+0  > . 1001:2001(1000) ack 1 win 32768\n+0  > P. 2001:3001(1000) ack 1 win 32768\n")
add(WS, "zero_scale", "wscale 0 from the peer: scaling is on, shift 0; we still announce ours",
    WS_SYSCTL + passive("<mss 1460,nop,wscale 0>", "<mss 1460,nop,wscale 3>", win=500)
    + "+0  write(4, ..., 1000) = 1000\n+0  > . 1:501(500) ack 1 win 32768\n")

# -- RFC 7323 timestamps and PAWS ------------------------------------------------------------------------
TS = "rfc7323_3-5_timestamps_paws"
TS_SYSCTL = "`sysctl -q net.ipv4.tcp_sack=0 net.ipv4.tcp_window_scaling=0`\n"
TS_P = passive("<mss 1460,nop,nop,TS val 100 ecr 0>", "<mss 1460,nop,nop,TS val 5000 ecr 100>") .replace(
    "+.1 < . 1:1(0) ack 1 win 65535\n", "+.1 < . 1:1(0) ack 1 win 65535 <nop,nop,TS val 200 ecr 5000>\n")
add(TS, "echo_ts_recent", "Every segment we send echoes TS.Recent, the peer's latest in-order TSval "
    "(RFC 7323 3.2/4.3); the MSS for data is 1460 - 12 (RFC 7323 / RFC 6691)", TS_SYSCTL + TS_P
    + "+0  write(4, ..., 2000) = 2000\n+0  > . 1:1449(1448) ack 1 win 65535 <nop,nop,TS val 5100 ecr 200>\n"
    "+.1 < . 1:1(0) ack 1449 win 65535 <nop,nop,TS val 300 ecr 5100>\n"
    "+0  > P. 1449:2001(552) ack 1 win 65535 <nop,nop,TS val 5200 ecr 300>\n")
add(TS, "paws_old_data_dropped", "PAWS: data whose TSval is older than TS.Recent is dropped and "
    "acknowledged (RFC 7323 5.3 R1); the user sees nothing", TS_SYSCTL + TS_P
    + "+0  fcntl(4, F_SETFL, O_RDWR|O_NONBLOCK) = 0\n"
    "+.1 < P. 1:101(100) ack 1 win 65535 <nop,nop,TS val 150 ecr 5000>\n"
    "+0  > . 1:1(0) ack 1 win 65535 <nop,nop,TS val 5200 ecr 200>\n"
    "+0  read(4, ..., 1000) = -1 EAGAIN (Resource temporarily unavailable)\n")
add(TS, "paws_accepts_equal_ts", "A TSval equal to TS.Recent passes PAWS (RFC 7323 5.3 R1 uses "
    "'less than'); the data is delivered", TS_SYSCTL + TS_P
    + "+.1 < P. 1:101(100) ack 1 win 65535 <nop,nop,TS val 200 ecr 5000>\n+0  read(4, ..., 1000) = 100\n"
    "+.2 > . 1:1(0) ack 101 win 65535 <nop,nop,TS val 5400 ecr 200>\n")
add(TS, "paws_rst_exempt", "RST segments are acceptable regardless of their timestamp (RFC 7323 5.3 "
    "recommendation): an exact RST with an old TSval still resets", TS_SYSCTL + TS_P
    + "+.1 < R. 1:1(0) ack 1 win 0 <nop,nop,TS val 1 ecr 5000>\n"
    "+0  read(4, ..., 100) = -1 ECONNRESET (Connection reset by peer)\n")
add(TS, "not_negotiated", "Timestamps off when the peer's SYN has none: no TSopt in the SYN|ACK nor "
    "later (RFC 7323 3.2)", TS_SYSCTL + passive()
    + "+0  write(4, ..., 10) = 10\n+0  > P. 1:11(10) ack 1 win 65535\n")
add(TS, "ooo_does_not_update_recent", "An out-of-order segment does not update TS.Recent (RFC 7323 4.3): "
    "the immediate duplicate ACK echoes the older value", TS_SYSCTL + TS_P
    + "+.1 < P. 101:201(100) ack 1 win 65535 <nop,nop,TS val 300 ecr 5000>\n"
    "+0  > . 1:1(0) ack 1 win 65535 <nop,nop,TS val 5200 ecr 200>\n"
    "+.01 < P. 1:101(100) ack 1 win 65535 <nop,nop,TS val 310 ecr 5000>\n"
    "+0  > . 1:1(0) ack 201 win 65535 <nop,nop,TS val 5210 ecr 310>\n")
add(TS, "missing_tsopt_dropped", "After negotiation a non-RST segment without TSopt is dropped "
    "(RFC 7323 3.2 SHOULD): its data never reaches the user", TS_SYSCTL + TS_P
    + "+0  fcntl(4, F_SETFL, O_RDWR|O_NONBLOCK) = 0\n+.1 < P. 1:101(100) ack 1 win 65535\n"
    "+.3 read(4, ..., 1000) = -1 EAGAIN (Resource temporarily unavailable)\n")

# -- RFC 2018 SACK -----------------------------------------------------------------------------------------
SK = "rfc2018_sack"
add(SK, "one_block", "Out-of-order data: an immediate duplicate ACK with one SACK block (RFC 2018 4, "
    "RFC 5681 4.2)", SACK_ONLY + P_SACK
    + "+.1 < P. 1001:2001(1000) ack 1 win 65535\n+0  > . 1:1(0) ack 1 win 65535 <nop,nop,sack 1001:2001>\n")
add(SK, "two_blocks_recent_first", "The block of the most recent segment comes first (RFC 2018 4)",
    SACK_ONLY + P_SACK
    + "+.1 < P. 1001:2001(1000) ack 1 win 65535\n+0  > . 1:1(0) ack 1 win 65535 <nop,nop,sack 1001:2001>\n"
    "+.01 < P. 3001:4001(1000) ack 1 win 65535\n"
    "+0  > . 1:1(0) ack 1 win 65535 <nop,nop,sack 3001:4001 1001:2001>\n")
add(SK, "adjacent_blocks_merge", "Adjacent out-of-order segments are reported as one block (RFC 2018 4)",
    SACK_ONLY + P_SACK
    + "+.1 < P. 1001:2001(1000) ack 1 win 65535\n+0  > . 1:1(0) ack 1 win 65535 <nop,nop,sack 1001:2001>\n"
    "+.01 < P. 2001:3001(1000) ack 1 win 65535\n+0  > . 1:1(0) ack 1 win 65535 <nop,nop,sack 1001:3001>\n")
add(SK, "hole_filled", "Filling the first hole: the cumulative ACK jumps, the remaining block is still "
    "reported (RFC 2018 4) and the ACK is immediate (RFC 5681 4.2)", SACK_ONLY + P_SACK
    + "+.1 < P. 1001:2001(1000) ack 1 win 65535\n+0  > . 1:1(0) ack 1 win 65535 <nop,nop,sack 1001:2001>\n"
    "+.01 < P. 3001:4001(1000) ack 1 win 65535\n"
    "+0  > . 1:1(0) ack 1 win 65535 <nop,nop,sack 3001:4001 1001:2001>\n"
    "+.01 < P. 1:1001(1000) ack 1 win 65535\n+0  > . 1:1(0) ack 2001 win 65535 <nop,nop,sack 3001:4001>\n"
    "+.01 < P. 2001:3001(1000) ack 1 win 65535\n+0  > . 1:1(0) ack 4001 win 65535\n")
add(SK, "not_permitted", "Without SACK-permitted from the peer, duplicate ACKs carry no SACK blocks "
    "(RFC 2018 2)", SACK_ONLY + P + "+.1 < P. 1001:2001(1000) ack 1 win 65535\n+0  > . 1:1(0) ack 1 win 65535\n")
add(SK, "four_blocks_max_without_ts", "Without timestamps up to four blocks fit (RFC 2018 3); the "
    "fifth out-of-order range is left out", SACK_ONLY + P_SACK
    + "".join(f"+.01 < P. {a}:{a + 100}(100) ack 1 win 65535\n+0  > . 1:1(0) ack 1 win 65535 <nop,nop,sack "
              + " ".join(f"{b}:{b + 100}" for b in range(a, 0, -200) if b > 100) + ">\n"
              for a in (201, 401, 601, 801))
    + "+.01 < P. 1001:1101(100) ack 1 win 65535\n"
    "+0  > . 1:1(0) ack 1 win 65535 <nop,nop,sack 1001:1101 801:901 601:701 401:501>\n")
add(SK, "sender_uses_sack", "SACK-based loss recovery: three duplicate ACKs with SACK blocks "
    "retransmit the first hole (RFC 6675 5)", SACK_ONLY + P_SACK1000
    + "+0  write(4, ..., 5000) = 5000\n+0  > . 1:1001(1000) ack 1 win 65535\n"
    "+0  > . 1001:2001(1000) ack 1 win 65535\n+0  > . 2001:3001(1000) ack 1 win 65535\n"
    "+0  > . 3001:4001(1000) ack 1 win 65535\n+0  > P. 4001:5001(1000) ack 1 win 65535\n"
    "+.1 < . 1:1(0) ack 1 win 65535 <sack 1001:2001,nop,nop>\n"
    "+0  < . 1:1(0) ack 1 win 65535 <sack 1001:3001,nop,nop>\n"
    "+0  < . 1:1(0) ack 1 win 65535 <sack 1001:4001,nop,nop>\n"
    "+0  > . 1:1001(1000) ack 1 win 65535\n"
    "+.1 < . 1:1(0) ack 5001 win 65535\n")

# -- RFC 5681 / 6582 / 3042 fast retransmit and recovery ---------------------------------------------------
FR = "rfc5681_3.2_fast_retransmit"
FIVE = ("+0  write(4, ..., 5000) = 5000\n+0  > . 1:1001(1000) ack 1 win 65535\n"
        "+0  > . 1001:2001(1000) ack 1 win 65535\n+0  > . 2001:3001(1000) ack 1 win 65535\n"
        "+0  > . 3001:4001(1000) ack 1 win 65535\n+0  > P. 4001:5001(1000) ack 1 win 65535\n")
DUP = "+0  < . 1:1(0) ack 1 win 65535\n"
add(FR, "three_dupacks", "The third duplicate ACK retransmits the first unacknowledged segment at once "
    "(RFC 5681 3.2 step 2)", NO_OPTS + P1000 + FIVE + "+.1 < . 1:1(0) ack 1 win 65535\n" + DUP + DUP
    + "+0  > . 1:1001(1000) ack 1 win 65535\n+.1 < . 1:1(0) ack 5001 win 65535\n")
add(FR, "two_dupacks_no_retransmit", "Two duplicate ACKs are not enough (RFC 5681 3.2): the loss is "
    "repaired by the retransmission timer instead", NO_OPTS + P1000 + FIVE
    + "+.1 < . 1:1(0) ack 1 win 65535\n" + DUP + "0.400 > . 1:1001(1000) ack 1 win 65535\n"
    "+.1 < . 1:1(0) ack 5001 win 65535\n")
add(FR, "limited_transmit", "Limited transmit: each of the first two duplicate ACKs releases one new "
    "segment (RFC 3042 2)", NO_OPTS + "`ip route change 198.18.0.0/24 dev eth0 initcwnd 5`\n" + P1000
    + "+0  write(4, ..., 7000) = 7000\n"
    + "".join(f"+0  > . {1 + 1000 * i}:{1001 + 1000 * i}(1000) ack 1 win 65535\n" for i in range(5))
    + "+0  setsockopt(4, IPPROTO_TCP, TCP_NODELAY, [1], 4) = 0\n"
    "+.1 < . 1:1(0) ack 1 win 65535\n+0  > . 5001:6001(1000) ack 1 win 65535\n"
    "+0  < . 1:1(0) ack 1 win 65535\n+0  > P. 6001:7001(1000) ack 1 win 65535\n"
    "+0  < . 1:1(0) ack 1 win 65535\n+0  > . 1:1001(1000) ack 1 win 65535\n")
add(FR, "newreno_partial_ack", "NewReno: a partial ACK during recovery retransmits the next hole at once "
    "(RFC 6582 3.2 step 5)", NO_OPTS + P1000 + FIVE + "+.1 < . 1:1(0) ack 1 win 65535\n" + DUP + DUP
    + "+0  > . 1:1001(1000) ack 1 win 65535\n+.1 < . 1:1(0) ack 2001 win 65535\n"
    "+0  > . 2001:3001(1000) ack 1 win 65535\n+.1 < . 1:1(0) ack 5001 win 65535\n")
add(FR, "dupack_with_data_not_counted", "An ACK carrying data is not a duplicate ACK (RFC 5681 2 "
    "definition): three of them trigger no fast retransmit", NO_OPTS + P1000 + FIVE
    + "+.1 < P. 1:11(10) ack 1 win 65535\n+0  < P. 11:21(10) ack 1 win 65535\n"
    "+0  > . 5001:5001(0) ack 21 win 65535\n+0  < P. 21:31(10) ack 1 win 65535\n"
    "+.2 > . 5001:5001(0) ack 31 win 65535\n+0  > . 1:1001(1000) ack 31 win 65535\n"
    "+.1 < . 31:31(0) ack 5001 win 65535\n")
add(FR, "window_update_not_dupack", "A segment that changes the window is not a duplicate ACK "
    "(RFC 5681 2): no fast retransmit after three window updates", NO_OPTS + P1000 + FIVE
    + "+.1 < . 1:1(0) ack 1 win 60000\n+0  < . 1:1(0) ack 1 win 50000\n+0  < . 1:1(0) ack 1 win 40000\n"
    "0.400 > . 1:1001(1000) ack 1 win 65535\n+.1 < . 1:1(0) ack 5001 win 65535\n")

# -- RFC 6298 retransmission timer ------------------------------------------------------------------------
RT = "rfc6298_rto"
add(RT, "first_retransmit", "Unacknowledged data is retransmitted when the RTO expires: RTT 100 ms from "
    "the handshake gives RTO = SRTT + 4 RTTVAR = 300 ms (RFC 6298 2.2, 5.4)", NO_OPTS + P
    + "+0  write(4, ..., 100) = 100\n+0  > P. 1:101(100) ack 1 win 65535\n"
    "+.3 > P. 1:101(100) ack 1 win 65535\n+.1 < . 1:1(0) ack 101 win 65535\n")
add(RT, "exponential_backoff", "Each expiry doubles the RTO (RFC 6298 5.5): 0.3, 0.6, 1.2, 2.4 s",
    NO_OPTS + P + "+0  write(4, ..., 100) = 100\n+0  > P. 1:101(100) ack 1 win 65535\n"
    "+.3 > P. 1:101(100) ack 1 win 65535\n+.6 > P. 1:101(100) ack 1 win 65535\n"
    "+1.2 > P. 1:101(100) ack 1 win 65535\n+2.4 > P. 1:101(100) ack 1 win 65535\n"
    "+.1 < . 1:1(0) ack 101 win 65535\n")
add(RT, "min_rto", "A tiny RTT still gives the 200 ms minimum RTO (RFC 6298 2.4, our rto_min)",
    NO_OPTS + passive().replace("+.1 < . 1:1(0) ack 1", "+.001 < . 1:1(0) ack 1")
    + "+0  write(4, ..., 100) = 100\n+0  > P. 1:101(100) ack 1 win 65535\n"
    "+.2 > P. 1:101(100) ack 1 win 65535\n+.01 < . 1:1(0) ack 101 win 65535\n")
add(RT, "retries_exhausted", "After tcp_retries2 retransmissions the connection is aborted with ETIMEDOUT "
    "(RFC 9293 3.8.3 R2, RFC 1122 4.2.3.5)",
    "`sysctl -q net.ipv4.tcp_timestamps=0 net.ipv4.tcp_sack=0 net.ipv4.tcp_window_scaling=0 "
    "net.ipv4.tcp_retries2=2`\n" + P
    + "+0  write(4, ..., 100) = 100\n+0  > P. 1:101(100) ack 1 win 65535\n"
    "+.3 > P. 1:101(100) ack 1 win 65535\n+.6 > P. 1:101(100) ack 1 win 65535\n"
    "+1.2 read(4, ..., 100) = -1 ETIMEDOUT (Connection timed out)\n")
add(RT, "ack_restarts_timer", "An ACK of new data restarts the timer for what is left (RFC 6298 5.3); the "
    "200 ms sample gives SRTT 112.5 ms, RTTVAR 62.5 ms, RTO 362.5 ms (RFC 6298 2.3): retransmit at 0.6625",
    NO_OPTS + P1000 + "+0  write(4, ..., 2000) = 2000\n+0  > . 1:1001(1000) ack 1 win 65535\n"
    "+0  > P. 1001:2001(1000) ack 1 win 65535\n+.2 < . 1:1(0) ack 1001 win 65535\n"
    "0.6625 > P. 1001:2001(1000) ack 1 win 65535\n+.1 < . 1:1(0) ack 2001 win 65535\n")
add(RT, "user_timeout", "TCP_USER_TIMEOUT 1000 ms: the connection is aborted once data stays "
    "unacknowledged that long (RFC 5482, RFC 9293 3.8.3)", NO_OPTS + P
    + "+0  setsockopt(4, IPPROTO_TCP, TCP_USER_TIMEOUT, [1000], 4) = 0\n"
    "+0  write(4, ..., 100) = 100\n+0  > P. 1:101(100) ack 1 win 65535\n"
    "+.3 > P. 1:101(100) ack 1 win 65535\n+.6 > P. 1:101(100) ack 1 win 65535\n"
    "1.15 read(4, ..., 100) = -1 ETIMEDOUT (Connection timed out)\n")

# -- zero window and persist -------------------------------------------------------------------------------
ZW = "rfc9293_3.8.6.1_zero_window"
ZW_P = passive(win=0).replace("+.1 < . 1:1(0) ack 1 win 0\n", "+.1 < . 1:1(0) ack 1 win 0\n")
add(ZW, "persist_probe_rfc_octet", "A zero window from the peer: when the persist timer fires the probe "
    "carries one octet of new data (RFC 9293 3.8.6.1 'at least one octet of new data (if available)')",
    NO_OPTS + ZW_P + "+0  write(4, ..., 1000) = 1000\n+.3 > . 1:2(1) ack 1 win 65535\n"
    "+0  < . 1:1(0) ack 1 win 0\n+.6 > . 1:2(1) ack 1 win 65535\n")
add(ZW, "persist_probe_backoff", "Zero-window probes (Linux style: SEG.SEQ = SND.UNA - 1, no data) back off "
    "exponentially from the RTO (RFC 1122 4.2.2.17)", "--profile=linux\n" + NO_OPTS + ZW_P
    + "+0  write(4, ..., 1000) = 1000\n+.3 > . 0:0(0) ack 1 win 65535\n"
    "+0  < . 1:1(0) ack 1 win 0\n+.6 > . 0:0(0) ack 1 win 65535\n+0  < . 1:1(0) ack 1 win 0\n"
    "+1.2 > . 0:0(0) ack 1 win 65535\n")
add(ZW, "window_opens", "A window update opens the window: the data is sent at once", NO_OPTS + ZW_P
    + "+0  write(4, ..., 1000) = 1000\n+.1 < . 1:1(0) ack 1 win 2000\n+0  > P. 1:1001(1000) ack 1 win 65535\n")
add(ZW, "probe_acked_window_opens", "The probe's ACK opens the window: the rest follows (RFC 9293 3.8.6.1)",
    "--profile=linux\n" + NO_OPTS + ZW_P + "+0  write(4, ..., 1000) = 1000\n+.3 > . 0:0(0) ack 1 win 65535\n"
    "+0  < . 1:1(0) ack 1 win 5000\n+0  > P. 1:1001(1000) ack 1 win 65535\n")
add(ZW, "probes_never_time_out", "A peer that keeps answering probes with a zero window keeps the "
    "connection open indefinitely (RFC 9293 3.8.6.1 MUST NOT close)", "--profile=linux\n" + NO_OPTS + ZW_P
    + "+0  write(4, ..., 1000) = 1000\n"
    + "".join(f"+{d} > . 0:0(0) ack 1 win 65535\n+0  < . 1:1(0) ack 1 win 0\n"
              for d in (".3", ".6", "1.2", "2.4", "4.8", "9.6", "19.2", "38.4", "60", "60"))
    + "+.1 < . 1:1(0) ack 1 win 2000\n+0  > P. 1:1001(1000) ack 1 win 65535\n")
add(ZW, "we_advertise_zero", "Our receive buffer full: we advertise a zero window, and reopen it with a "
    "window update after the user reads (RFC 9293 3.8.6.2.2)", NO_OPTS
    + passive(pre="+0  setsockopt(3, SOL_SOCKET, SO_RCVBUF, [2000], 4) = 0\n", synack_win=2000)
    + "+0  < . 1:1001(1000) ack 1 win 65535\n+0  < . 1001:2001(1000) ack 1 win 65535\n"
    "+0  > . 1:1(0) ack 2001 win 0\n+.1 read(4, ..., 2000) = 2000\n+0  > . 1:1(0) ack 2001 win 2000\n")

# -- keepalive (RFC 1122 4.2.3.6) --------------------------------------------------------------------------
KA = "rfc1122_4.2.3.6_keepalive"
KA_OPTS = ("+0  setsockopt(4, SOL_SOCKET, SO_KEEPALIVE, [1], 4) = 0\n"
           "+0  setsockopt(4, IPPROTO_TCP, TCP_KEEPIDLE, [10], 4) = 0\n"
           "+0  setsockopt(4, IPPROTO_TCP, TCP_KEEPINTVL, [5], 4) = 0\n"
           "+0  setsockopt(4, IPPROTO_TCP, TCP_KEEPCNT, [2], 4) = 0\n")
add(KA, "probes_then_reset", "Idle 10 s: a keepalive probe (SEG.SEQ = SND.NXT - 1, no data), every 5 s; "
    "after 2 unanswered probes the connection is dropped with ETIMEDOUT", NO_OPTS + P + KA_OPTS
    + "+10 > . 0:0(0) ack 1 win 65535\n+5 > . 0:0(0) ack 1 win 65535\n"
    "+5 > R 1:1(0) win 0\n+0  read(4, ..., 100) = -1 ETIMEDOUT (Connection timed out)\n")
add(KA, "answered_probe", "An answered probe restarts the idle period (RFC 1122 4.2.3.6)", NO_OPTS + P + KA_OPTS
    + "+10 > . 0:0(0) ack 1 win 65535\n+.1 < . 1:1(0) ack 1 win 65535\n+10 > . 0:0(0) ack 1 win 65535\n"
    "+.1 < . 1:1(0) ack 1 win 65535\n")
add(KA, "off_by_default", "Without SO_KEEPALIVE an idle connection sends nothing (RFC 1122 4.2.3.6 "
    "default off)", NO_OPTS + P + "+100 write(4, ..., 10) = 10\n+0  > P. 1:11(10) ack 1 win 65535\n")
add(KA, "getsockopt_values", "The keepalive options read back as set", NO_OPTS + P + KA_OPTS
    + "+0  getsockopt(4, SOL_SOCKET, SO_KEEPALIVE, [1], [4]) = 0\n"
    "+0  getsockopt(4, IPPROTO_TCP, TCP_KEEPIDLE, [10], [4]) = 0\n"
    "+0  getsockopt(4, IPPROTO_TCP, TCP_KEEPINTVL, [5], [4]) = 0\n"
    "+0  getsockopt(4, IPPROTO_TCP, TCP_KEEPCNT, [2], [4]) = 0\n")
add(KA, "traffic_defers_probe", "Data exchanged during the idle period pushes the first probe back",
    NO_OPTS + P + KA_OPTS + "+8 < P. 1:11(10) ack 1 win 65535\n+.2 > . 1:1(0) ack 11 win 65535\n"
    "+9.8 > . 0:0(0) ack 11 win 65535\n+.1 < . 11:11(0) ack 1 win 65535\n")

# -- delayed ACK (RFC 1122 4.2.3.2, RFC 9293 3.8.6.3, RFC 5681 4.2) -------------------------------------------
DA = "rfc1122_4.2.3.2_delayed_ack"
add(DA, "single_segment_200ms", "One segment: the ACK waits for the 200 ms delayed-ACK timer",
    NO_OPTS + P + "+0  < P. 1:101(100) ack 1 win 65535\n+.2 > . 1:1(0) ack 101 win 65535\n")
add(DA, "every_second_full_segment", "At least every second full-sized segment is acknowledged at once "
    "(RFC 5681 4.2)", NO_OPTS + P + "+0  < . 1:1461(1460) ack 1 win 65535\n+0  < . 1461:2921(1460) ack 1 win 65535\n"
    "+0  > . 1:1(0) ack 2921 win 65535\n")
add(DA, "out_of_order_immediate", "An out-of-order segment is acknowledged at once (RFC 5681 4.2 SHOULD)",
    NO_OPTS + P + "+0  < P. 101:201(100) ack 1 win 65535\n+0  > . 1:1(0) ack 1 win 65535\n")
add(DA, "gap_fill_immediate", "A segment that fills a gap is acknowledged at once (RFC 5681 4.2)",
    NO_OPTS + P + "+0  < P. 101:201(100) ack 1 win 65535\n+0  > . 1:1(0) ack 1 win 65535\n"
    "+.05 < P. 1:101(100) ack 1 win 65535\n+0  > . 1:1(0) ack 201 win 65535\n")
add(DA, "piggyback_on_data", "Data sent before the timer fires carries the ACK: no separate ACK",
    NO_OPTS + P + "+0  < P. 1:101(100) ack 1 win 65535\n+.05 write(4, ..., 10) = 10\n"
    "+0  > P. 1:11(10) ack 101 win 65535\n+.1 < . 101:101(0) ack 11 win 65535\n")
add(DA, "linux_profile_40ms", "With --profile=linux the delayed ACK fires after 40 ms (linux_profile())",
    "--profile=linux\n" + NO_OPTS + P + "+0  < P. 1:101(100) ack 1 win 65535\n+.04 > . 1:1(0) ack 101 win 65535\n")
add(DA, "freebsd_delayed_ack_off", "net.inet.tcp.delayed_ack=0: every segment is acknowledged at once",
    NO_OPTS + "`sysctl -q net.inet.tcp.delayed_ack=0`\n" + P
    + "+0  < P. 1:101(100) ack 1 win 65535\n+0  > . 1:1(0) ack 101 win 65535\n")

# -- Nagle (RFC 896, RFC 1122 4.2.3.4) ---------------------------------------------------------------------
NG = "rfc1122_4.2.3.4_nagle"
add(NG, "second_small_write_held", "A small segment is held while earlier data is unacknowledged",
    NO_OPTS + P + "+0  write(4, ..., 10) = 10\n+0  > P. 1:11(10) ack 1 win 65535\n+0  write(4, ..., 10) = 10\n"
    "+.1 < . 1:1(0) ack 11 win 65535\n+0  > P. 11:21(10) ack 1 win 65535\n")
add(NG, "coalesced_after_ack", "Small writes held by Nagle leave as one segment when the ACK comes",
    NO_OPTS + P + "+0  write(4, ..., 10) = 10\n+0  > P. 1:11(10) ack 1 win 65535\n"
    "+0  write(4, ..., 10) = 10\n+0  write(4, ..., 10) = 10\n+0  write(4, ..., 10) = 10\n"
    "+.1 < . 1:1(0) ack 11 win 65535\n+0  > P. 11:41(30) ack 1 win 65535\n")
add(NG, "nodelay_sends_at_once", "TCP_NODELAY turns Nagle off: each small write leaves at once",
    NO_OPTS + P + "+0  setsockopt(4, IPPROTO_TCP, TCP_NODELAY, [1], 4) = 0\n"
    "+0  getsockopt(4, IPPROTO_TCP, TCP_NODELAY, [1], [4]) = 0\n"
    "+0  write(4, ..., 10) = 10\n+0  > P. 1:11(10) ack 1 win 65535\n"
    "+0  write(4, ..., 10) = 10\n+0  > P. 11:21(10) ack 1 win 65535\n")
add(NG, "full_segment_not_held", "A full-sized segment is never held by Nagle (RFC 1122 4.2.3.4)",
    NO_OPTS + P1000 + "+0  write(4, ..., 10) = 10\n+0  > P. 1:11(10) ack 1 win 65535\n"
    "+0  write(4, ..., 1000) = 1000\n+0  > P. 11:1011(1000) ack 1 win 65535\n"
    "+.1 < . 1:1(0) ack 1011 win 65535\n")
add(NG, "nodelay_next_write_flushes", "After TCP_NODELAY is set the next write sends what Nagle held "
    "together with the new data (setting the option alone does not push, unlike Linux)",
    NO_OPTS + P + "+0  write(4, ..., 10) = 10\n+0  > P. 1:11(10) ack 1 win 65535\n+0  write(4, ..., 10) = 10\n"
    "+.05 setsockopt(4, IPPROTO_TCP, TCP_NODELAY, [1], 4) = 0\n+0  write(4, ..., 10) = 10\n"
    "+0  > P. 11:31(20) ack 1 win 65535\n")

# -- FIN_WAIT_2 and TIME_WAIT ------------------------------------------------------------------------------
FW = "rfc9293_3.6_closing"
CLOSE_ACKED = "+0  close(4) = 0\n+0  > F. 1:1(0) ack 1 win 65535\n+.1 < . 1:1(0) ack 2 win 65535\n"
TW = CLOSE_ACKED + "+.1 < F. 1:1(0) ack 2 win 65535\n+0  > . 2:2(0) ack 2 win 65535\n"
add(FW, "fin_wait_2_timeout", "An orphaned FIN-WAIT-2 connection is dropped after tcp_fin_timeout "
    "(RFC 9293 3.6 permits, Linux default); later segments meet no connection: RST",
    NO_OPTS + "`sysctl -q net.ipv4.tcp_fin_timeout=5`\n" + P + CLOSE_ACKED
    + "+5.1 < . 1:1(0) ack 2 win 65535\n+0  > R 2:2(0) win 0\n")
add(FW, "fin_wait_2_alive_before_timeout", "Before tcp_fin_timeout the FIN-WAIT-2 connection is still "
    "there: the peer's FIN is acknowledged", NO_OPTS + "`sysctl -q net.ipv4.tcp_fin_timeout=5`\n" + P + CLOSE_ACKED
    + "+4.8 < F. 1:1(0) ack 2 win 65535\n+0  > . 2:2(0) ack 2 win 65535\n")
add(FW, "half_close_receive", "shutdown(SHUT_WR): FIN sent, we still receive data in FIN-WAIT-2 "
    "(RFC 9293 3.6 half-close)", NO_OPTS + P + "+0  shutdown(4, SHUT_WR) = 0\n+0  > F. 1:1(0) ack 1 win 65535\n"
    "+.1 < . 1:1(0) ack 2 win 65535\n+0  < P. 1:101(100) ack 2 win 65535\n+0  read(4, ..., 1000) = 100\n"
    "+.2 > . 2:2(0) ack 101 win 65535\n+0  write(4, ..., 10) = -1 EPIPE (Broken pipe)\n")
add(FW, "time_wait_lasts_2msl", "TIME-WAIT lasts 2 MSL = 120 s (RFC 9293 3.6, MSL 60 s in our RFC "
    "profile): a segment at 119 s is acknowledged, at 121 s answered with RST", NO_OPTS + P + TW
    + "+119 < . 1:1(0) ack 2 win 65535\n+0  > . 2:2(0) ack 2 win 65535\n"
    "+2 < . 2:2(0) ack 2 win 65535\n+0  > R 2:2(0) win 0\n")
add(FW, "time_wait_fin_retransmit", "A retransmitted FIN in TIME-WAIT is acknowledged and restarts "
    "the 2 MSL timeout (RFC 9293 3.10.7.4 eighth check)", NO_OPTS + P + TW
    + "+100 < F. 1:1(0) ack 2 win 65535\n+0  > . 2:2(0) ack 2 win 65535\n"
    "+110 < . 1:1(0) ack 2 win 65535\n+0  > . 2:2(0) ack 2 win 65535\n")
add(FW, "time_wait_linux_60s", "With --profile=linux TIME-WAIT lasts 60 s (linux_profile(), Linux "
    "TCP_TIMEWAIT_LEN)", "--profile=linux\n" + NO_OPTS + P.replace("win 65535 <mss 1460>\n+.1", "win 65535 <mss 1460>\n+.1")
    .replace("> S. 0:0(0) ack 1 win 65535 <mss 1460>", "> S. 0:0(0) ack 1 win 65535 <mss 1460>") + TW.replace(
        "win 65535\n+.1 < F", "win 65535\n+.1 < F")
    + "+61 < . 2:2(0) ack 2 win 65535\n+0  > R 2:2(0) win 0\n")
add(FW, "last_ack_to_closed", "LAST-ACK: the ACK of our FIN closes the connection; later segments get RST",
    NO_OPTS + P + "+0  < F. 1:1(0) ack 1 win 65535\n+0  > . 1:1(0) ack 2 win 65535\n+0  close(4) = 0\n"
    "+0  > F. 1:1(0) ack 2 win 65535\n+.1 < . 2:2(0) ack 2 win 65535\n+.1 < . 2:2(0) ack 2 win 65535\n"
    "+0  > R 2:2(0) win 0\n")
add(FW, "fin_retransmitted", "An unacknowledged FIN is retransmitted by the RTO (RFC 9293 3.10.4)",
    NO_OPTS + P + "+0  close(4) = 0\n+0  > F. 1:1(0) ack 1 win 65535\n+.3 > F. 1:1(0) ack 1 win 65535\n"
    "+.1 < . 1:1(0) ack 2 win 65535\n")
add(FW, "data_then_fin", "close() after write: the FIN follows the data (RFC 9293 3.10.4)",
    NO_OPTS + P + "+0  write(4, ..., 100) = 100\n+0  > P. 1:101(100) ack 1 win 65535\n+0  close(4) = 0\n"
    "+0  > F. 101:101(0) ack 1 win 65535\n+.1 < . 1:1(0) ack 102 win 65535\n")

# -- MSS (RFC 9293 3.7.1, RFC 6691) ---------------------------------------------------------------------
MS = "rfc9293_3.7.1_mss"
add(MS, "peer_mss_limits_segments", "The peer's MSS bounds our segments (RFC 9293 3.7.1)",
    NO_OPTS + passive("<mss 500>") + "+0  write(4, ..., 1200) = 1200\n+0  > . 1:501(500) ack 1 win 65535\n"
    "+0  > . 501:1001(500) ack 1 win 65535\n+.1 < . 1:1(0) ack 1001 win 65535\n"
    "+0  > P. 1001:1201(200) ack 1 win 65535\n")
add(MS, "maxseg_clamps_advertised", "TCP_MAXSEG before listen lowers the MSS we announce; segments we "
    "send follow the peer's MSS (our documented semantics; Linux also clamps the send MSS)",
    NO_OPTS + passive(synack_opts="<mss 1000>", pre="+0  setsockopt(3, IPPROTO_TCP, TCP_MAXSEG, [1000], 4) = 0\n")
    + "+0  write(4, ..., 1500) = 1500\n+0  > . 1:1461(1460) ack 1 win 65535\n+.1 < . 1:1(0) ack 1461 win 65535\n"
    "+0  > P. 1461:1501(40) ack 1 win 65535\n")
add(MS, "script_mss_option", "--mss=1200 (a 1240-byte MTU): we announce 1200", "--mss=1200\n" + NO_OPTS
    + passive(synack_opts="<mss 1200>") + "+0  write(4, ..., 1500) = 1500\n"
    "+0  > . 1:1201(1200) ack 1 win 65535\n")
add(MS, "maxseg_active", "TCP_MAXSEG before connect: our SYN announces it", NO_OPTS
    + "0   socket(..., SOCK_STREAM, IPPROTO_TCP) = 3\n+0  setsockopt(3, IPPROTO_TCP, TCP_MAXSEG, [536], 4) = 0\n"
    "+0  fcntl(3, F_SETFL, O_RDWR|O_NONBLOCK) = 0\n"
    "+0  connect(3, ..., ...) = -1 EINPROGRESS (Operation now in progress)\n+0  > S 0:0(0) win 65535 <mss 536>\n")
add(MS, "getsockopt_maxseg", "TCP_MAXSEG on a connection reads the effective send MSS", NO_OPTS
    + passive("<mss 700>") + "+0  getsockopt(4, IPPROTO_TCP, TCP_MAXSEG, [700], [4]) = 0\n")
add(MS, "small_peer_mss", "A tiny peer MSS (100) is honoured: segments of 100 bytes", NO_OPTS
    + passive("<mss 100>") + "+0  setsockopt(4, IPPROTO_TCP, TCP_NODELAY, [1], 4) = 0\n"
    "+0  write(4, ..., 250) = 250\n+0  > . 1:101(100) ack 1 win 65535\n+0  > . 101:201(100) ack 1 win 65535\n"
    "+0  > P. 201:251(50) ack 1 win 65535\n")

# -- sequence acceptability at the window edges (RFC 9293 3.10.7.4 table) -----------------------------------
WE = "rfc9293_3.10.7.4_window_edges"
SMALL = passive(pre="+0  setsockopt(3, SOL_SOCKET, SO_RCVBUF, [4000], 4) = 0\n", synack_win=4000)
add(WE, "last_byte_in_window", "A byte at RCV.NXT+RCV.WND-1 is acceptable: kept out of order, "
    "delivered when the gap fills", NO_OPTS + SMALL + "+0  < P. 4000:4001(1) ack 1 win 65535\n"
    "+0  > . 1:1(0) ack 1 win 4000\n+.01 < P. 1:4000(3999) ack 1 win 65535\n+0  > . 1:1(0) ack 4001 win 0\n")
add(WE, "first_byte_beyond_window", "A byte at RCV.NXT+RCV.WND is not acceptable: ACK, drop",
    NO_OPTS + SMALL + "+0  < P. 4001:4002(1) ack 1 win 65535\n"
    "+0  > . 1:1(0) ack 1 win 4000\n+.01 < P. 1:4001(4000) ack 1 win 65535\n+.2 > . 1:1(0) ack 4001 win 0\n")
add(WE, "overlap_left_edge", "A segment starting before RCV.NXT that reaches past it is acceptable; "
    "only the new part is kept", NO_OPTS + P + "+0  < P. 1:101(100) ack 1 win 65535\n"
    "+0  < P. 51:201(150) ack 1 win 65535\n+0  > . 1:1(0) ack 201 win 65535\n+0  read(4, ..., 1000) = 200\n")
add(WE, "overlap_right_edge", "A segment crossing the right window edge is trimmed to the window",
    NO_OPTS + SMALL + "+0  < P. 1:5001(5000) ack 1 win 65535\n+0  > . 1:1(0) ack 4001 win 0\n"
    "+0  read(4, ..., 10000) = 4000\n+0  > . 1:1(0) ack 4001 win 4000\n")
add(WE, "zero_window_empty_acceptable", "With a zero receive window an empty segment at RCV.NXT is "
    "acceptable (its ACK is processed)", NO_OPTS + SMALL + "+0  < P. 1:4001(4000) ack 1 win 65535\n"
    "+.2 > . 1:1(0) ack 4001 win 0\n+0  write(4, ..., 10) = 10\n+0  > P. 1:11(10) ack 4001 win 0\n"
    "+.1 < . 4001:4001(0) ack 11 win 65535\n+0  read(4, ..., 10000) = 4000\n+0  > . 11:11(0) ack 4001 win 4000\n")
add(WE, "zero_window_data_refused", "With a zero receive window data is not acceptable: ACK and drop",
    NO_OPTS + SMALL + "+0  < P. 1:4001(4000) ack 1 win 65535\n+.2 > . 1:1(0) ack 4001 win 0\n"
    "+.1 < P. 4001:4101(100) ack 1 win 65535\n+0  > . 1:1(0) ack 4001 win 0\n")
add(WE, "seq_wraparound", "Sequence numbers wrap modulo 2^32 (RFC 9293 3.4): data across the wrap is "
    "accepted", NO_OPTS + passive().replace("< S 0:0(0)", "< S 4294967000:4294967000(0)")
    .replace("ack 1 win 65535 <mss 1460>", "ack 4294967001 win 65535 <mss 1460>")
    .replace("+.1 < . 1:1(0) ack 1", "+.1 < . 4294967001:4294967001(0) ack 1")
    + "+0  < P. 4294967001:705(1000) ack 1 win 65535\n+.2 > . 1:1(0) ack 705 win 65535\n"
    "+0  read(4, ..., 2000) = 1000\n")

# -- RFC 5961 extras -----------------------------------------------------------------------------------------
CA = "rfc5961_challenge_ack"
add(CA, "rate_limited", "Challenge ACKs are rate limited (RFC 5961 7): with a limit of 2 per second the "
    "third in-window RST in the same second draws nothing", NO_OPTS
    + "`sysctl -q net.ipv4.tcp_challenge_ack_limit=2`\n" + P
    + "+.1 < R 1001:1001(0) win 0\n+0  > . 1:1(0) ack 1 win 65535\n"
    "+0  < R 2001:2001(0) win 0\n+0  > . 1:1(0) ack 1 win 65535\n+0  < R 3001:3001(0) win 0\n"
    "+1 < R 4001:4001(0) win 0\n+0  > . 1:1(0) ack 1 win 65535\n")
add(CA, "old_ack_acceptable", "An ACK below SND.UNA but within MAX.SND.WND of it is acceptable (RFC 5961 "
    "5.2): the segment's data is delivered", NO_OPTS + P1000
    + "+0  write(4, ..., 1000) = 1000\n+0  > P. 1:1001(1000) ack 1 win 65535\n+.1 < . 1:1(0) ack 1001 win 65535\n"
    "+0  < P. 1:11(10) ack 1 win 65535\n+0  read(4, ..., 100) = 10\n+.2 > . 1001:1001(0) ack 11 win 65535\n")
add(CA, "ack_too_old", "An ACK below SND.UNA - MAX.SND.WND is discarded with a challenge ACK (RFC 5961 5.2): "
    "the data it carries is not delivered", NO_OPTS + P1000
    + "+0  write(4, ..., 1000) = 1000\n+0  > P. 1:1001(1000) ack 1 win 65535\n+.1 < . 1:1(0) ack 1001 win 65535\n"
    "+0  fcntl(4, F_SETFL, O_RDWR|O_NONBLOCK) = 0\n"
    f"+0  < P. 1:11(10) ack {(1001 - 70000) % 2**32} win 65535\n+0  > . 1001:1001(0) ack 1 win 65535\n"
    "+0  read(4, ..., 100) = -1 EAGAIN (Resource temporarily unavailable)\n")
add(CA, "syn_after_reset_new_connection", "After a RST ends the connection a new SYN opens a new one",
    NO_OPTS + P + "+0  < R 1:1(0) win 0\n+0  close(4) = 0\n+.1 < S 1000:1000(0) win 65535 <mss 1460>\n"
    "+0  > S. 0:0(0) ack 1001 win 65535 <mss 1460>\n")

# -- socket API (Linux errno semantics) ----------------------------------------------------------------------
SA = "socket_api"
add(SA, "linger_zero_resets", "SO_LINGER {1, 0} then close(): the connection is reset (RFC 9293 3.10.4 "
    "ABORT)", NO_OPTS + P + "+0  setsockopt(4, SOL_SOCKET, SO_LINGER, {l_onoff=1, l_linger=0}, 8) = 0\n"
    "+0  getsockopt(4, SOL_SOCKET, SO_LINGER, {l_onoff=1, l_linger=0}, [8]) = 0\n"
    "+0  close(4) = 0\n+0  > R 1:1(0) win 0\n")
add(SA, "write_after_reset", "After a RST the next write fails with ECONNRESET, then EPIPE",
    NO_OPTS + P + "+0  < R 1:1(0) win 0\n+0  write(4, ..., 10) = -1 ECONNRESET (Connection reset by peer)\n"
    "+0  write(4, ..., 10) = -1 EPIPE (Broken pipe)\n")
add(SA, "connect_refused_blocking", "A blocking connect() answered by RST|ACK fails with ECONNREFUSED",
    NO_OPTS + "0   socket(..., SOCK_STREAM, IPPROTO_TCP) = 3\n+0...0.1 connect(3, ..., ...) = -1 ECONNREFUSED "
    "(Connection refused)\n+0  > S 0:0(0) win 65535 <mss 1460>\n+.1 < R. 0:0(0) ack 1 win 0\n")
add(SA, "poll_in_and_rdhup", "poll(): POLLIN for data, POLLIN|POLLRDHUP after the peer's FIN",
    NO_OPTS + P + "+0  poll([{fd=4, events=POLLIN, revents=0}], 1, 0) = 0\n"
    "+0  < P. 1:11(10) ack 1 win 65535\n+0  poll([{fd=4, events=POLLIN, revents=POLLIN}], 1, 0) = 1\n"
    "+0  < F. 11:11(0) ack 1 win 65535\n+0  > . 1:1(0) ack 12 win 65535\n"
    "+0  poll([{fd=4, events=POLLIN|POLLRDHUP, revents=POLLIN|POLLRDHUP}], 1, 0) = 1\n")
add(SA, "poll_blocks_until_data", "A blocking poll() returns when data arrives 200 ms later",
    NO_OPTS + P + "+0...0.2 poll([{fd=4, events=POLLIN, revents=POLLIN}], 1, 1000) = 1\n"
    "+.2 < P. 1:11(10) ack 1 win 65535\n+0  read(4, ..., 100) = 10\n+.2 > . 1:1(0) ack 11 win 65535\n")
add(SA, "poll_timeout", "poll() with a 500 ms timeout and nothing happening returns 0 after 500 ms",
    NO_OPTS + P + "+0...0.5 poll([{fd=4, events=POLLIN, revents=0}], 1, 500) = 0\n")
add(SA, "blocking_read", "A blocking read() returns when data arrives", NO_OPTS + P
    + "+0...0.3 read(4, ..., 1000) = 100\n+.3 < P. 1:101(100) ack 1 win 65535\n+.2 > . 1:1(0) ack 101 win 65535\n")
add(SA, "nonblocking_read_eagain", "A non-blocking read() with nothing queued fails with EAGAIN",
    NO_OPTS + P + "+0  fcntl(4, F_SETFL, O_RDWR|O_NONBLOCK) = 0\n+0  fcntl(4, F_GETFL) = 0x802\n"
    "+0  read(4, ..., 1000) = -1 EAGAIN (Resource temporarily unavailable)\n")
add(SA, "nonblocking_accept_eagain", "A non-blocking accept() with no connection fails with EAGAIN",
    NO_OPTS + "0   socket(..., SOCK_STREAM, IPPROTO_TCP) = 3\n+0  bind(3, ..., ...) = 0\n+0  listen(3, 1) = 0\n"
    "+0  fcntl(3, F_SETFL, O_RDWR|O_NONBLOCK) = 0\n"
    "+0  accept(3, ..., ...) = -1 EAGAIN (Resource temporarily unavailable)\n")
add(SA, "blocking_accept", "A blocking accept() returns when the handshake completes", NO_OPTS
    + "0   socket(..., SOCK_STREAM, IPPROTO_TCP) = 3\n+0  bind(3, ..., ...) = 0\n+0  listen(3, 1) = 0\n"
    "+0...0.2 accept(3, ..., ...) = 4\n+.1 < S 0:0(0) win 65535 <mss 1460>\n"
    "+0  > S. 0:0(0) ack 1 win 65535 <mss 1460>\n+.1 < . 1:1(0) ack 1 win 65535\n")
add(SA, "close_bad_fd", "close() of an unknown descriptor fails with EBADF", NO_OPTS
    + "0   close(9) = -1 EBADF (Bad file descriptor)\n")
add(SA, "read_unconnected", "read() on a socket that never connected fails with ENOTCONN", NO_OPTS
    + "0   socket(..., SOCK_STREAM, IPPROTO_TCP) = 3\n+0  read(3, ..., 10) = -1 ENOTCONN "
    "(Transport endpoint is not connected)\n")
add(SA, "accept_not_listening", "accept() on a socket that is not listening fails with EINVAL", NO_OPTS
    + "0   socket(..., SOCK_STREAM, IPPROTO_TCP) = 3\n+0  accept(3, ..., ...) = -1 EINVAL (Invalid argument)\n")
add(SA, "connect_twice_nonblocking", "A second non-blocking connect() while connecting gives EALREADY, "
    "after the handshake EISCONN", NO_OPTS + "0   socket(..., SOCK_STREAM, IPPROTO_TCP) = 3\n"
    "+0  fcntl(3, F_SETFL, O_RDWR|O_NONBLOCK) = 0\n"
    "+0  connect(3, ..., ...) = -1 EINPROGRESS (Operation now in progress)\n+0  > S 0:0(0) win 65535 <mss 1460>\n"
    "+0  connect(3, ..., ...) = -1 EALREADY (Operation already in progress)\n"
    "+.1 < S. 0:0(0) ack 1 win 65535 <mss 1460>\n+0  > . 1:1(0) ack 1 win 65535\n"
    "+0  connect(3, ..., ...) = -1 EISCONN (Transport endpoint is already connected)\n")
add(SA, "shutdown_rd_then_read", "After shutdown(SHUT_RD) read() returns 0", NO_OPTS + P
    + "+0  shutdown(4, SHUT_RD) = 0\n+0  read(4, ..., 10) = 0\n")
add(SA, "sndbuf_rcvbuf_roundtrip", "SO_SNDBUF/SO_RCVBUF read back as set (not doubled, unlike Linux)",
    NO_OPTS + "0   socket(..., SOCK_STREAM, IPPROTO_TCP) = 3\n"
    "+0  setsockopt(3, SOL_SOCKET, SO_SNDBUF, [50000], 4) = 0\n"
    "+0  getsockopt(3, SOL_SOCKET, SO_SNDBUF, [50000], [4]) = 0\n"
    "+0  setsockopt(3, SOL_SOCKET, SO_RCVBUF, [40000], 4) = 0\n"
    "+0  getsockopt(3, SOL_SOCKET, SO_RCVBUF, [40000], [4]) = 0\n")
add(SA, "blocking_write_waits_for_space", "A blocking write larger than the send buffer returns when "
    "the peer's ACKs free the space", NO_OPTS
    + passive("<mss 1000>", pre="+0  setsockopt(3, SOL_SOCKET, SO_SNDBUF, [3000], 4) = 0\n")
    + "+0...0.1 write(4, ..., 4000) = 4000\n+0  > . 1:1001(1000) ack 1 win 65535\n"
    "+0  > . 1001:2001(1000) ack 1 win 65535\n+0  > P. 2001:3001(1000) ack 1 win 65535\n"
    "+.1 < . 1:1(0) ack 3001 win 65535\n+0  > P. 3001:4001(1000) ack 1 win 65535\n")

# -- congestion window (RFC 5681 3.1, RFC 6928) -----------------------------------------------------------
CW = "rfc5681_3.1_slow_start"
add(CW, "initial_window_10", "The initial window is 10 segments (RFC 6928): the eleventh waits for an ACK",
    NO_OPTS + P1000 + "+0  write(4, ..., 11000) = 11000\n"
    + "".join(f"+0  > . {1 + 1000 * i}:{1001 + 1000 * i}(1000) ack 1 win 65535\n" for i in range(10))
    + "+.1 < . 1:1(0) ack 1001 win 65535\n+0  > P. 10001:11001(1000) ack 1 win 65535\n")
add(CW, "initcwnd_route", "ip route ... initcwnd 2 lowers the initial window to 2 segments",
    NO_OPTS + "`ip route change 198.18.0.0/24 dev eth0 initcwnd 2`\n" + P1000 + "+0  write(4, ..., 3000) = 3000\n"
    "+0  > . 1:1001(1000) ack 1 win 65535\n+0  > . 1001:2001(1000) ack 1 win 65535\n"
    "+.1 < . 1:1(0) ack 1001 win 65535\n+0  > P. 2001:3001(1000) ack 1 win 65535\n")
add(CW, "slow_start_growth", "Slow start: each ACK of a full segment grows cwnd by one segment "
    "(RFC 5681 3.1): an ACK of 2 segments releases 4", NO_OPTS
    + "`ip route change 198.18.0.0/24 dev eth0 initcwnd 2`\n" + P1000 + "+0  write(4, ..., 6000) = 6000\n"
    "+0  > . 1:1001(1000) ack 1 win 65535\n+0  > . 1001:2001(1000) ack 1 win 65535\n"
    "+.1 < . 1:1(0) ack 2001 win 65535\n+0  > . 2001:3001(1000) ack 1 win 65535\n"
    "+0  > . 3001:4001(1000) ack 1 win 65535\n+0  > . 4001:5001(1000) ack 1 win 65535\n"
    "+0  > P. 5001:6001(1000) ack 1 win 65535\n")
add(CW, "rto_collapses_cwnd", "After an RTO only one segment is sent until ACKs come back "
    "(RFC 5681 3.1 LW = 1)", NO_OPTS + P1000 + "+0  write(4, ..., 3000) = 3000\n"
    "+0  > . 1:1001(1000) ack 1 win 65535\n+0  > . 1001:2001(1000) ack 1 win 65535\n"
    "+0  > P. 2001:3001(1000) ack 1 win 65535\n+.3 > . 1:1001(1000) ack 1 win 65535\n"
    "+.1 < . 1:1(0) ack 1001 win 65535\n+0  > . 1001:2001(1000) ack 1 win 65535\n"
    "+0  > P. 2001:3001(1000) ack 1 win 65535\n")


# -- offload at a chosen point (chimney_offload marker; a no-op in host mode, @offload: offload mode only) ---------------------------------
OF = "chimney_offload"
add(OF, "after_data_exchange", "Offload after data both ways: sequence state carries over, the next "
    "segments continue the numbering; the ACK owed for the 50 bytes goes out at the hand-over (R-TMR-04; "
    "offload mode only: the host alone piggybacks it on the next data)",
    NO_OPTS + P + "+0  write(4, ..., 100) = 100\n+0  > P. 1:101(100) ack 1 win 65535\n"
    "+.1 < P. 1:51(50) ack 101 win 65535\n+0  read(4, ..., 100) = 50\n+0  chimney_offload\n"
    "@offload +0  > . 101:101(0) ack 51 win 65535\n"
    "+0  write(4, ..., 100) = 100\n+0  > P. 101:201(100) ack 51 win 65535\n+.1 < . 51:51(0) ack 201 win 65535\n")
add(OF, "with_data_in_flight", "Offload with unacknowledged data: the retransmission timer keeps running "
    "(RTO 300 ms from the 100 ms handshake RTT)", NO_OPTS + P + "+0  write(4, ..., 100) = 100\n"
    "+0  > P. 1:101(100) ack 1 win 65535\n+0  chimney_offload\n+.3 > P. 1:101(100) ack 1 win 65535\n"
    "+.1 < . 1:1(0) ack 101 win 65535\n")
add(OF, "then_peer_fin", "Offloaded, the peer's FIN is acknowledged at once and read() sees EOF",
    NO_OPTS + P + "+0  chimney_offload\n+.1 < F. 1:1(0) ack 1 win 65535\n+0  > . 1:1(0) ack 2 win 65535\n"
    "+0  read(4, ..., 100) = 0\n")
add(OF, "then_close", "Offloaded, close() sends FIN; the peer's FIN|ACK leads to TIME-WAIT's ACK",
    NO_OPTS + P + "+0  chimney_offload\n+0  close(4) = 0\n+0  > F. 1:1(0) ack 1 win 65535\n"
    "+.1 < F. 1:1(0) ack 2 win 65535\n+0  > . 2:2(0) ack 2 win 65535\n")
add(OF, "then_rst", "Offloaded, an exact RST resets the connection: read() fails with ECONNRESET",
    NO_OPTS + P + "+0  chimney_offload\n+.1 < R 1:1(0) win 0\n"
    "+0  read(4, ..., 100) = -1 ECONNRESET (Connection reset by peer)\n")
add(OF, "then_challenge_ack", "Offloaded, an in-window RST draws a challenge ACK (RFC 5961 3.2)",
    NO_OPTS + P + "+0  chimney_offload\n+.1 < R 1001:1001(0) win 0\n+0  > . 1:1(0) ack 1 win 65535\n")
add(OF, "then_ooo_data", "Offloaded, out-of-order data draws an immediate duplicate ACK; the gap fill "
    "delivers all", NO_OPTS + P + "+0  chimney_offload\n+.1 < P. 101:201(100) ack 1 win 65535\n"
    "+0  > . 1:1(0) ack 1 win 65535\n+.01 < P. 1:101(100) ack 1 win 65535\n+0  > . 1:1(0) ack 201 win 65535\n"
    "+0  read(4, ..., 1000) = 200\n")
add(OF, "with_timestamps", "Offload with timestamps negotiated: TSecr keeps echoing the peer's TSval",
    TS_SYSCTL + TS_P + "+0  chimney_offload\n+0  write(4, ..., 10) = 10\n"
    "+0  > P. 1:11(10) ack 1 win 65535 <nop,nop,TS val 5100 ecr 200>\n"
    "+.1 < . 1:1(0) ack 11 win 65535 <nop,nop,TS val 300 ecr 5100>\n")


# -- RFC 1122 4.2.2.13 closing with data, and other SYN corner cases --------------------------------------
CL = "rfc1122_4.2.2.13_close_with_data"
add(CL, "close_with_unread_data_resets", "close() with received data still unread sends a RST to show data "
    "was lost (RFC 1122 4.2.2.13 SHOULD, RFC 2525 2.17); RST <SEQ=SND.NXT> as for ABORT (RFC 9293 3.10.4)",
    NO_OPTS + P + "+0  < P. 1:101(100) ack 1 win 65535\n+0  close(4) = 0\n+0  > R 1:1(0) win 0\n")
add(CL, "close_after_reading_all_sends_fin", "close() after every byte was read is a graceful close: FIN",
    NO_OPTS + P + "+0  < P. 1:101(100) ack 1 win 65535\n+0  read(4, ..., 1000) = 100\n+0  close(4) = 0\n"
    "+0  > F. 1:1(0) ack 101 win 65535\n")
add(CL, "data_after_close_acked", "Data arriving in FIN-WAIT-2 after close() is processed as RFC 9293 3.10.7.4 "
    "says (acknowledged, delayed ACK) although nobody can read it (Linux answers with RST instead, RFC 2525 2.17)",
    NO_OPTS + P + "+0  close(4) = 0\n+0  > F. 1:1(0) ack 1 win 65535\n+.1 < P. 1:101(100) ack 2 win 65535\n"
    "+.2 > . 2:2(0) ack 101 win 65535\n")
add(CL, "shutdown_wr_then_read_eof", "shutdown(SHUT_WR) then the peer's FIN: both directions closed, read() "
    "sees EOF, close() sends nothing more and the connection goes to TIME-WAIT", NO_OPTS + P
    + "+0  shutdown(4, SHUT_WR) = 0\n+0  > F. 1:1(0) ack 1 win 65535\n+.1 < F. 1:1(0) ack 2 win 65535\n"
    "+0  > . 2:2(0) ack 2 win 65535\n+0  read(4, ..., 100) = 0\n+0  close(4) = 0\n")
SY = "rfc9293_3.10.7_syn_corner_cases"
add(SY, "old_syn_in_established", "A SYN below RCV.NXT in ESTABLISHED draws a challenge ACK (RFC 5961 4.2 "
    "'regardless of the sequence number')", NO_OPTS + P + "+.1 < S 0:0(0) win 65535 <mss 1460>\n"
    "+0  > . 1:1(0) ack 1 win 65535\n")
add(SY, "syn_data_not_acknowledged", "Data on a SYN to a listener is not acknowledged (RFC 9293 3.10.7.2 lets "
    "it be queued; we drop it, as Linux without TFO): the peer resends it after the handshake; offloaded at "
    "once, the host flushes the ACK it owes for it (R-TMR-04), the host alone delays it past the script's end", NO_OPTS
    + "0   socket(..., SOCK_STREAM, IPPROTO_TCP) = 3\n+0  bind(3, ..., ...) = 0\n+0  listen(3, 1) = 0\n"
    "+0  < S 0:10(10) win 65535 <mss 1460>\n+0  > S. 0:0(0) ack 1 win 65535 <mss 1460>\n"
    "+.1 < P. 1:11(10) ack 1 win 65535\n+0  accept(3, ..., ...) = 4\n+0  read(4, ..., 100) = 10\n"
    "@offload +0  > . 1:1(0) ack 11 win 65535\n")
add(SY, "syn_in_time_wait_challenged", "A SYN with a higher sequence number in TIME-WAIT draws a challenge "
    "ACK (RFC 5961 4.2); reopening from TIME-WAIT is only a MAY (RFC 1122 4.2.2.13)", NO_OPTS + P + TW
    + "+1 < S 100000:100000(0) win 65535 <mss 1460>\n+0  > . 2:2(0) ack 2 win 65535\n")
add(SY, "syn_retransmit_in_syn_sent_ignored_rst", "A RST|ACK whose ACK is not our ISS+1 in SYN-SENT is "
    "ignored; the SYN is retransmitted at the RTO (RFC 9293 3.10.7.3)", NO_OPTS
    + "0   socket(..., SOCK_STREAM, IPPROTO_TCP) = 3\n+0  fcntl(3, F_SETFL, O_RDWR|O_NONBLOCK) = 0\n"
    "+0  connect(3, ..., ...) = -1 EINPROGRESS (Operation now in progress)\n+0  > S 0:0(0) win 65535 <mss 1460>\n"
    "+.1 < R. 0:0(0) ack 0 win 0\n1 > S 0:0(0) win 65535 <mss 1460>\n")


def main() -> None:
    for folder, scripts in SCRIPTS.items():
        d = HERE / folder
        d.mkdir(exist_ok=True)
        for name, (doc, body) in scripts.items():
            head = f"// {doc}\n// generated by gen_features.py: edit the generator, not this file\n"
            (d / f"{name}.pkt").write_text(head + body, encoding="utf-8")


if __name__ == "__main__":
    main()
