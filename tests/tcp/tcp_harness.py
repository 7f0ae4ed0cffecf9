"""Test helpers for chimney.tcp: a deterministic two-endpoint network with seeded impairments and a
tiny tcpdump-like DSL for writing and checking single segments."""

from __future__ import annotations

import hashlib
import heapq
import random
import re
from collections.abc import Callable
from dataclasses import dataclass, field

from chimney.net.tcp import ACK, FIN, PSH, RST, SYN, URG, TcpOptions, TcpSegment
from chimney.tcp import Connection, TcpConfig

MS = 1_000_000
US = 1_000
S = 1_000_000_000

_FLAGS = {"S": SYN, "F": FIN, "R": RST, "P": PSH, "U": URG, ".": ACK}


def seg(text: str, *, sport: int = 2000, dport: int = 80, payload: bytes | None = None) -> TcpSegment:
    """Build a segment from tcpdump-ish text: 'S. 1000:1000(0) ack 5001 win 65535 urg 3 <mss 1460,sackOK,
    TS val 5 ecr 0,wscale 7,sack 10:20>'. Seq ranges are u32 wire values; payload is b'x' * len unless given."""
    m = re.fullmatch(
        r"\s*([SFRPU.]+|none)\s+(\d+):(\d+)\((\d+)\)(?:\s+ack\s+(\d+))?(?:\s+win\s+(\d+))?"
        r"(?:\s+urg\s+(\d+))?(?:\s+<(.*)>)?\s*",
        text,
    )
    if m is None:
        raise ValueError(f"cannot parse segment {text!r}")
    flag_s, start, _end, length, ack, win, urg, opts_s = m.groups()
    flags = 0
    if flag_s != "none":
        for c in flag_s:
            flags |= _FLAGS[c]
    n = int(length)
    data = payload if payload is not None else b"x" * n
    assert len(data) == n, "payload length must match (len)"
    if ack is not None:
        flags |= ACK
    opts = parse_options(opts_s) if opts_s is not None else None
    return TcpSegment(
        sport, dport, int(start), int(ack or 0), flags, int(win or 0), data, opts, int(urg or 0)
    )


def parse_options(s: str) -> TcpOptions:
    o = TcpOptions()
    blocks = []
    for part in [p.strip() for p in s.split(",") if p.strip()]:
        w = part.split()
        if w[0] == "mss":
            o.mss = int(w[1])
        elif w[0] == "wscale":
            o.wscale = int(w[1])
        elif w[0] == "sackOK":
            o.sack_permitted = True
        elif w[0] == "TS":
            o.ts_val = int(w[2])
            o.ts_ecr = int(w[4])
        elif w[0] == "sack":
            for b in w[1:]:
                a, c = b.split(":")
                blocks.append((int(a), int(c)))
        else:
            raise ValueError(f"unknown option {part!r}")
    o.sack_blocks = tuple(blocks)
    return o


def flags_of(s: TcpSegment) -> str:
    out = ""
    for c, bit in (("S", SYN), ("F", FIN), ("R", RST), ("P", PSH), ("U", URG)):
        if s.flags & bit:
            out += c
    if s.flags & ACK:
        out += "."
    return out or "none"


def describe(s: TcpSegment) -> str:
    text = f"{flags_of(s)} {s.seq}:{(s.seq + len(s.payload)) & 0xFFFFFFFF}({len(s.payload)})"
    if s.flags & ACK:
        text += f" ack {s.ack}"
    text += f" win {s.window}"
    return text


def expect(s: TcpSegment, text: str) -> None:
    """Assert `s` matches the tcpdump-ish `text`; fields not written (win, options) are not checked,
    except options that are written."""
    want = seg(text)
    got = describe(s)
    assert flags_of(s) == flags_of(want), f"flags: got {got!r}, want {text!r}"
    assert s.seq == want.seq, f"seq: got {got!r}, want {text!r}"
    assert len(s.payload) == len(want.payload), f"len: got {got!r}, want {text!r}"
    if want.flags & ACK:
        assert s.ack == want.ack, f"ack: got {got!r}, want {text!r}"
    if " win " in text:
        assert s.window == want.window, f"win: got {got!r}, want {text!r}"
    if want.options is not None:
        o, w = s.options, want.options
        assert o is not None, f"options missing: {got!r}"
        if w.mss is not None:
            assert o.mss == w.mss
        if w.wscale is not None:
            assert o.wscale == w.wscale
        if w.sack_permitted:
            assert o.sack_permitted
        if w.sack_blocks:
            assert tuple(o.sack_blocks) == tuple(w.sack_blocks), f"sack {o.sack_blocks} != {w.sack_blocks}"


class Peer:
    """Drive one Connection from a script: `peer_sends(text)` then `expect_sent(text, ...)`."""

    def __init__(self, conn: Connection, now: int = 0) -> None:
        self.conn = conn
        self.now = now
        self.sent: list[TcpSegment] = []

    def advance(self, ns: int) -> None:
        self.now += ns
        self.conn.on_timer(self.now)

    def run_timers_until(self, t: int) -> None:
        while True:
            d = self.conn.next_deadline()
            if d is None or d > t:
                break
            self.now = max(self.now, d)
            self.conn.on_timer(self.now)
        self.now = max(self.now, t)

    def peer_sends(self, text: str, payload: bytes | None = None) -> None:
        c = self.conn
        self.conn.receive(seg(text, sport=c.remote_port, dport=c.local_port, payload=payload), self.now)

    def deliver(self, s: TcpSegment) -> None:
        self.conn.receive(s, self.now)

    def out(self) -> list[TcpSegment]:
        segs = self.conn.pop_segments()
        self.sent.extend(segs)
        return segs

    def expect_sent(self, *texts: str) -> list[TcpSegment]:
        segs = self.out()
        assert len(segs) == len(texts), f"sent {[describe(s) for s in segs]}, want {list(texts)}"
        for s, t in zip(segs, texts):
            expect(s, t)
        return segs

    def expect_nothing(self) -> None:
        segs = self.out()
        assert not segs, f"unexpected {[describe(s) for s in segs]}"


@dataclass
class Impairment:
    """Per-direction network behaviour; probabilities per segment, delays in ns."""

    loss: float = 0.0
    dup: float = 0.0
    reorder: float = 0.0
    delay: int = 1 * MS
    jitter: int = 0
    rate_bps: int = 0  # 0: infinite
    burst_loss: tuple[int, int] | None = None  # drop segments number [a, b) of this direction
    drop_if: Callable[[TcpSegment], bool] | None = None


@dataclass(order=True)
class _Pkt:
    at: int
    n: int
    to: int = field(compare=False)
    seg: TcpSegment = field(compare=False)


class Net:
    """Two Connections joined by a deterministic, seeded, impaired pipe. Each side has a byte source
    (sent in chunks as space allows) and collects what it reads."""

    def __init__(
        self,
        a: Connection,
        b: Connection,
        seed: int = 0,
        ab: Impairment | None = None,
        ba: Impairment | None = None,
        reader: Callable[[int], int] | None = None,
    ) -> None:
        self.conns = [a, b]
        self.imp = [ab or Impairment(), ba or Impairment()]
        self.rng = random.Random(seed)
        self.now = 0
        self.q: list[_Pkt] = []
        self.n = 0
        self.count = [0, 0]
        self.link_free = [0, 0]
        self.to_send: list[memoryview] = [memoryview(b""), memoryview(b"")]
        self.shutdown_after = [False, False]
        self.received = [bytearray(), bytearray()]
        self.events: list[list[object]] = [[], []]
        self.wire: list[list[tuple[int, TcpSegment]]] = [[], []]
        self.read_block = [False, False]
        self.reader = reader
        self.hooks: list[Callable[[Net], None]] = []

    def send_stream(self, side: int, data: bytes, shutdown: bool = True) -> None:
        self.to_send[side] = memoryview(data)
        self.shutdown_after[side] = shutdown

    def _pump_app(self, side: int) -> None:
        c = self.conns[side]
        if c.state.name in ("Established", "CloseWait"):
            mv = self.to_send[side]
            if mv:
                k = c.send(mv[:65536], self.now)
                self.to_send[side] = mv[k:]
            if not self.to_send[side] and self.shutdown_after[side]:
                self.shutdown_after[side] = False
                c.shutdown(self.now)
        if not self.read_block[side]:
            while c.readable:
                self.received[side] += c.recv(-1, self.now)
        self.events[side].extend(c.pop_events())

    def _collect(self, side: int) -> None:
        c = self.conns[side]
        imp = self.imp[side]
        for s in c.pop_segments():
            self.wire[side].append((self.now, s))
            k = self.count[side]
            self.count[side] += 1
            if imp.burst_loss and imp.burst_loss[0] <= k < imp.burst_loss[1]:
                continue
            if imp.drop_if is not None and imp.drop_if(s):
                continue
            r = self.rng
            if imp.loss and r.random() < imp.loss:
                continue
            t = self.now
            if imp.rate_bps:
                start = max(t, self.link_free[side])
                t = start + (len(s.payload) + 52) * 8 * S // imp.rate_bps
                self.link_free[side] = t
            t += imp.delay + (r.randrange(imp.jitter) if imp.jitter else 0)
            if imp.reorder and r.random() < imp.reorder:
                t += r.randrange(1, 3 * imp.delay + 2)
            copies = 2 if imp.dup and r.random() < imp.dup else 1
            for _ in range(copies):
                self.n += 1
                heapq.heappush(self.q, _Pkt(t, self.n, 1 - side, s))

    def settle(self) -> None:
        for _ in range(4):
            for side in (0, 1):
                self._pump_app(side)
                self._collect(side)

    def step(self) -> bool:
        self.settle()
        cands = []
        if self.q:
            cands.append(self.q[0].at)
        for c in self.conns:
            d = c.next_deadline()
            if d is not None:
                cands.append(d)
        if not cands:
            return False
        t = min(cands)
        self.now = max(self.now, t)
        if self.q and self.q[0].at <= self.now:
            p = heapq.heappop(self.q)
            self.conns[p.to].receive(p.seg, self.now)
        else:
            for c in self.conns:
                d = c.next_deadline()
                if d is not None and d <= self.now:
                    c.on_timer(self.now)
        for h in self.hooks:
            h(self)
        return True

    def run(self, until: Callable[[Net], bool] | None = None, max_time: int = 600 * S, max_steps: int = 2_000_000) -> None:
        for _ in range(max_steps):
            self.settle()
            if until is not None and until(self):
                return
            if self.now > max_time or not self.step():
                return
        raise AssertionError("simulation did not finish within max_steps")


def sha(b: bytes | bytearray) -> str:
    return hashlib.sha256(b).hexdigest()


def make_pair(cfg_a: TcpConfig | None = None, cfg_b: TcpConfig | None = None, iss_a: int = 0xFFFFFF00,
              iss_b: int = 0xFFFFFFF0) -> tuple[Connection, Connection]:
    """Client a (port 40000) and server b (port 80, listening), ISS a few bytes below 2**32."""
    a = Connection(cfg_a or TcpConfig(), 40000, 80, iss_a)
    b = Connection(cfg_b or TcpConfig(), 80, 40000, iss_b)
    b.listen()
    return a, b


M32 = 0xFFFFFFFF


def w(x: int) -> int:
    """Wire (u32) value of a sequence number."""
    return x & M32


SERVER_ISS = 0xFFFFFFF0  # 15 bytes below the wrap: every data test crosses 2**32
CLIENT_ISS = 0xFFFFFFFA


def established_server(
    cfg: TcpConfig | None = None, opts: str = "mss 1460", win: int = 65535, now: int = 0
) -> Peer:
    """A server Connection (port 80) in ESTABLISHED with a scripted client (port 2000).

    Server ISS = SERVER_ISS, client ISS = CLIENT_ISS: the server's first data byte is w(SERVER_ISS + 1),
    the client's is w(CLIENT_ISS + 1)."""
    c = Connection(cfg or TcpConfig(), 80, 2000, SERVER_ISS)
    c.listen()
    p = Peer(c, now)
    p.peer_sends(f"S {CLIENT_ISS}:{CLIENT_ISS}(0) win {win} <{opts}>")
    p.out()
    # With timestamps negotiated the handshake ACK carries TSopt too (RFC 7323 3.2: else it is dropped).
    ts = re.search(r"TS val (\d+)", opts)
    ack_opts = f" <TS val {ts.group(1)} ecr 0>" if ts else ""
    p.peer_sends(f". {w(CLIENT_ISS + 1)}:{w(CLIENT_ISS + 1)}(0) ack {w(SERVER_ISS + 1)} win {win}{ack_opts}")
    assert c.state.name == "Established"
    c.pop_events()
    return p


C1 = w(CLIENT_ISS + 1)  # client's next sequence number after the handshake
S1 = w(SERVER_ISS + 1)  # server's next sequence number after the handshake
