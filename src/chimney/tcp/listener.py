"""Passive open: `Listener` (SYN queue + accept backlog) and RFC 6528 initial sequence numbers.

The caller demultiplexes by 4-tuple: segments for a known connection go to that Connection; the rest
for this port go to `Listener.receive`, which may return a new child in SYN-RCVD to register.
"""

from __future__ import annotations

import hashlib
from collections import deque

from chimney.net.tcp import ACK, RST, SYN, TcpSegment
from chimney.tcp.config import TcpConfig
from chimney.tcp.connection import Connection, rst_for

MASK = 0xFFFFFFFF


def isn_rfc6528(
    secret: bytes, local_addr: bytes, local_port: int, remote_addr: bytes, remote_port: int, now: int
) -> int:
    """ISN = M + F(localip, localport, remoteip, remoteport, secretkey), M a 4 µs clock (RFC 6528 3)."""
    h = hashlib.blake2s(key=secret[:32], digest_size=4)
    h.update(bytes(local_addr))
    h.update(local_port.to_bytes(2, "big"))
    h.update(bytes(remote_addr))
    h.update(remote_port.to_bytes(2, "big"))
    return ((now // 4000) + int.from_bytes(h.digest(), "big")) & MASK


class Listener:
    """LISTEN on one local port. `syn_backlog` bounds half-open children, `accept_backlog` bounds
    established-but-not-accepted ones (a full accept queue makes children ignore the final ACK, so the
    peer retransmits it, as Linux does)."""

    __slots__ = (
        "_accept_q",
        "_out",
        "_syn_q",
        "accept_backlog",
        "cfg",
        "drops",
        "isn_secret",
        "local_port",
        "syn_backlog",
    )

    def __init__(
        self,
        local_port: int,
        cfg: TcpConfig | None = None,
        *,
        isn_secret: bytes = b"chimney-isn-key",
        syn_backlog: int = 128,
        accept_backlog: int = 128,
    ) -> None:
        self.local_port = local_port
        self.cfg = cfg if cfg is not None else TcpConfig()
        self.isn_secret = isn_secret
        self.syn_backlog = syn_backlog
        self.accept_backlog = accept_backlog
        self._syn_q: dict[tuple[bytes, int], Connection] = {}
        self._accept_q: deque[Connection] = deque()
        self._out: list[TcpSegment] = []
        self.drops: dict[str, int] = {}

    def _drop(self, reason: str) -> None:
        self.drops[reason] = self.drops.get(reason, 0) + 1

    @property
    def syn_queue_len(self) -> int:
        return len(self._syn_q)

    @property
    def accept_queue_len(self) -> int:
        return len(self._accept_q)

    def receive(self, seg: TcpSegment, remote_addr: bytes, local_addr: bytes, now: int) -> Connection | None:
        """RFC 9293 3.10.7.2 LISTEN processing; returns a new SYN-RCVD child (its SYN-ACK is in its
        outbox) or None. A segment for a half-open child is passed to that child."""
        key = (bytes(remote_addr), seg.src_port)
        child = self._syn_q.get(key)
        if child is not None:
            child.receive(seg, now)
            return None
        flags = seg.flags
        if flags & RST:
            self._drop("rst")
            return None
        if flags & ACK:
            r = rst_for(seg)
            if r is not None:
                self._out.append(r)
            self._drop("ack_in_listen")
            return None
        if not flags & SYN:
            self._drop("no_syn")
            return None
        if len(self._syn_q) >= self.syn_backlog:
            self._drop("syn_queue_full")
            return None
        if len(self._accept_q) >= self.accept_backlog:
            self._drop("accept_queue_full")
            return None
        iss = isn_rfc6528(self.isn_secret, local_addr, self.local_port, remote_addr, seg.src_port, now)
        conn = Connection(self.cfg, self.local_port, seg.src_port, iss)
        conn._parent = self
        self._syn_q[key] = conn
        conn._parent_key = key
        conn.accept_syn(seg, now)
        return conn

    def _child_established(self, conn: Connection) -> bool:
        if len(self._accept_q) >= self.accept_backlog:
            return False
        self._syn_q.pop(conn._parent_key, None)
        self._accept_q.append(conn)
        conn._parent = None
        conn._parent_key = None  # the SYN-queue key (a tuple and an address copy) is not kept
        return True

    def _child_gone(self, conn: Connection) -> None:
        self._syn_q.pop(conn._parent_key, None)

    def accept(self) -> Connection | None:
        return self._accept_q.popleft() if self._accept_q else None

    def pop_segments(self) -> list[TcpSegment]:
        out = self._out
        self._out = []
        return out

    def on_timer(self, now: int) -> None:
        """Drive the half-open children's SYN-ACK retransmission timers."""
        for conn in list(self._syn_q.values()):
            d = conn.next_deadline()
            if d is not None and d <= now:
                conn.on_timer(now)

    def next_deadline(self) -> int | None:
        ds = [d for c in self._syn_q.values() if (d := c.next_deadline()) is not None]
        return min(ds) if ds else None

    def half_open(self) -> list[Connection]:
        return list(self._syn_q.values())
