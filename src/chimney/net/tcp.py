"""TCP segments: the header representation shared by the wire codec and the TCP engine.

`TcpSegment` is what the engine consumes and produces; the codec functions in this module parse it
from, and build it into, wire bytes (payload kept as a memoryview, never copied).
"""

from __future__ import annotations

FIN = 0x01
SYN = 0x02
RST = 0x04
PSH = 0x08
ACK = 0x10
URG = 0x20
ECE = 0x40
CWR = 0x80

_FLAG_CHARS = ((SYN, "S"), (FIN, "F"), (RST, "R"), (PSH, "P"), (URG, "U"), (ECE, "E"), (CWR, "W"), (ACK, "."))


def flags_str(flags: int) -> str:
    """tcpdump-style flag string: S, F, R, P, U, E, W and '.' for ACK."""
    return "".join(c for bit, c in _FLAG_CHARS if flags & bit) or "none"


class TcpOptions:
    """Parsed TCP options. None/empty means "not present". `unknown` keeps (kind, data) it skipped."""

    __slots__ = ("mss", "order", "sack_blocks", "sack_permitted", "ts_ecr", "ts_val", "unknown", "wscale")

    def __init__(
        self,
        mss: int | None = None,
        wscale: int | None = None,
        sack_permitted: bool = False,
        sack_blocks: tuple[tuple[int, int], ...] = (),
        ts_val: int | None = None,
        ts_ecr: int | None = None,
        unknown: tuple[tuple[int, bytes], ...] = (),
        order: tuple[int, ...] = (),
    ) -> None:
        self.mss = mss
        self.wscale = wscale
        self.sack_permitted = sack_permitted
        self.sack_blocks = sack_blocks
        self.ts_val = ts_val
        self.ts_ecr = ts_ecr
        self.unknown = unknown
        self.order = order  # option kinds in wire order as parsed (NOP=1, EOL=0 included); informational

    @property
    def has_ts(self) -> bool:
        return self.ts_val is not None

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, TcpOptions):
            return NotImplemented
        return (
            self.mss == other.mss
            and self.wscale == other.wscale
            and self.sack_permitted == other.sack_permitted
            and tuple(self.sack_blocks) == tuple(other.sack_blocks)
            and self.ts_val == other.ts_val
            and self.ts_ecr == other.ts_ecr
            and tuple(self.unknown) == tuple(other.unknown)
        )

    def __repr__(self) -> str:
        parts = []
        if self.mss is not None:
            parts.append(f"mss {self.mss}")
        if self.sack_permitted:
            parts.append("sackOK")
        if self.sack_blocks:
            parts.append("sack " + " ".join(f"{a}:{b}" for a, b in self.sack_blocks))
        if self.ts_val is not None:
            parts.append(f"TS val {self.ts_val} ecr {self.ts_ecr}")
        if self.wscale is not None:
            parts.append(f"wscale {self.wscale}")
        for kind, data in self.unknown:
            parts.append(f"opt{kind}:{bytes(data).hex()}")
        return "<" + ",".join(parts) + ">"


class TcpSegment:
    """One TCP segment. `window` is the raw 16-bit header field (unscaled); seq/ack are u32."""

    __slots__ = ("ack", "dst_port", "flags", "options", "payload", "seq", "src_port", "urg_ptr", "window")

    def __init__(
        self,
        src_port: int,
        dst_port: int,
        seq: int,
        ack: int,
        flags: int,
        window: int,
        payload: memoryview | bytes = b"",
        options: TcpOptions | None = None,
        urg_ptr: int = 0,
    ) -> None:
        self.src_port = src_port
        self.dst_port = dst_port
        self.seq = seq
        self.ack = ack
        self.flags = flags
        self.window = window
        self.payload = payload
        self.options = options
        self.urg_ptr = urg_ptr

    @property
    def seg_len(self) -> int:
        """Sequence space consumed: payload plus one each for SYN and FIN."""
        return len(self.payload) + (1 if self.flags & SYN else 0) + (1 if self.flags & FIN else 0)

    def __repr__(self) -> str:
        opts = f" {self.options!r}" if self.options is not None else ""
        return (
            f"<TCP {self.src_port}>{self.dst_port} {flags_str(self.flags)} seq {self.seq} ack {self.ack} "
            f"win {self.window} len {len(self.payload)}{opts}>"
        )
