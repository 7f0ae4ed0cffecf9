"""TCP segments: the header representation shared by the wire codec and the TCP engine.

`TcpSegment` is what the engine consumes and produces; the codec functions in this module parse it
from, and build it into, wire bytes (payload kept as a memoryview, never copied).
"""

from __future__ import annotations

import struct

from chimney.net.checksum import finish, raw_sum, verify_raw
from chimney.net.drops import Drop, DropReason

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


# ---------------------------------------------------------------------------------------------------
# Wire codec. Parse: `parse_tcp(mv, src_ip, dst_ip, verify=True) -> TcpSegment | Drop` with the payload
# a memoryview slice of `mv`; `options` is None when the header carries no option bytes. Build:
# `write_tcp_header(buf, off, seg) -> header length` (checksum field left 0, options padded to 4 bytes
# with EOL) and `tcp_options_bytes(opts)`. Full-frame builders live in `chimney.net.frame`.
# ---------------------------------------------------------------------------------------------------

TCP_HLEN = 20
TCP_MAX_OPTLEN = 40
TCP_CSUM_OFFSET = 16  # checksum field offset inside the TCP header (vnet csum_offset)
IPPROTO_TCP = 6

OPT_EOL = 0
OPT_NOP = 1
OPT_MSS = 2
OPT_WSCALE = 3
OPT_SACK_PERM = 4
OPT_SACK = 5
OPT_TS = 8

_HDR = struct.Struct("!HHIIBBHHH")
_TS_FAST = struct.Struct("!III")  # NOP NOP TS(10) val ecr, the usual data-segment option block
_TS_FAST_PREFIX = 0x0101080A
_TS_FAST_ORDER = (OPT_NOP, OPT_NOP, OPT_TS)
_FIXED_LEN = {OPT_MSS: 4, OPT_WSCALE: 3, OPT_SACK_PERM: 2, OPT_TS: 10}


def parse_tcp_options(opts: memoryview) -> TcpOptions | Drop:
    """Parse the option bytes of a TCP header (RFC 9293 §3.2, RFC 7323, RFC 2018).

    Unknown kinds with a sane length are kept in `unknown` and skipped. A length byte < 2, an option
    running past the option space, a wrong length for a fixed-size option or a SACK length that is not
    2 + 8k (k >= 1) is a BAD_TCP_OPTION drop. EOL ends parsing (the rest is padding).
    """
    n = len(opts)
    if n == 12:
        head, tsv, tse = _TS_FAST.unpack_from(opts)
        if head == _TS_FAST_PREFIX:
            return TcpOptions(None, None, False, (), tsv, tse, (), _TS_FAST_ORDER)
    o = TcpOptions()
    order: list[int] = []
    unknown: list[tuple[int, bytes]] = []
    i = 0
    while i < n:
        kind = opts[i]
        order.append(kind)
        if kind == OPT_EOL:
            break
        if kind == OPT_NOP:
            i += 1
            continue
        if i + 1 >= n:
            return Drop(DropReason.BAD_TCP_OPTION, f"option {kind} at {i} has no length byte")
        olen = opts[i + 1]
        if olen < 2 or i + olen > n:
            return Drop(DropReason.BAD_TCP_OPTION, f"option {kind} length {olen} overruns {n} option bytes")
        want = _FIXED_LEN.get(kind)
        if want is not None and olen != want:
            return Drop(DropReason.BAD_TCP_OPTION, f"option {kind} length {olen}, expected {want}")
        if kind == OPT_MSS:
            o.mss = (opts[i + 2] << 8) | opts[i + 3]
        elif kind == OPT_WSCALE:
            o.wscale = opts[i + 2]
        elif kind == OPT_SACK_PERM:
            o.sack_permitted = True
        elif kind == OPT_TS:
            o.ts_val, o.ts_ecr = struct.unpack_from("!II", opts, i + 2)
        elif kind == OPT_SACK:
            if olen < 10 or (olen - 2) % 8:
                return Drop(DropReason.BAD_TCP_OPTION, f"SACK length {olen}")
            vals = struct.unpack_from(f"!{(olen - 2) // 4}I", opts, i + 2)
            o.sack_blocks = tuple(zip(vals[0::2], vals[1::2]))
        else:
            unknown.append((kind, bytes(opts[i + 2 : i + olen])))
        i += olen
    o.order = tuple(order)
    if unknown:
        o.unknown = tuple(unknown)
    return o


def parse_tcp(mv: memoryview, src_ip: bytes, dst_ip: bytes, verify: bool = True) -> TcpSegment | Drop:
    """Parse one TCP segment (`mv` is exactly the IP payload). Verifies the checksum over the IPv4 or
    IPv6 pseudo-header (the family follows from the address length) unless `verify` is False."""
    n = len(mv)
    if n < TCP_HLEN:
        return Drop(DropReason.TRUNCATED_TCP, f"{n} bytes")
    sport, dport, seq, ack, doff, flags, win, csum, urg = _HDR.unpack_from(mv)
    hl = (doff >> 4) << 2
    if hl < TCP_HLEN or hl > n:
        return Drop(DropReason.BAD_TCP_DATA_OFFSET, f"data offset {hl >> 2} words, segment {n} bytes")
    if verify:
        s = int.from_bytes(src_ip, "big") + int.from_bytes(dst_ip, "big") + IPPROTO_TCP + n + raw_sum(mv)
        if not verify_raw(s):
            return Drop(DropReason.BAD_TCP_CHECKSUM, f"checksum {csum:#06x}")
    if hl == TCP_HLEN:
        return TcpSegment(sport, dport, seq, ack, flags, win, mv[TCP_HLEN:], None, urg)
    opts = parse_tcp_options(mv[TCP_HLEN:hl])
    if type(opts) is Drop:
        return opts
    return TcpSegment(sport, dport, seq, ack, flags, win, mv[hl:], opts, urg)  # type: ignore[arg-type]


def tcp_options_len(opts: TcpOptions | None) -> int:
    """Length of the encoded (padded) option block for `opts`."""
    return len(tcp_options_bytes(opts)) if opts is not None else 0


def tcp_options_bytes(opts: TcpOptions | None) -> bytes:
    """Encode options in a fixed, alignment-friendly layout (Linux-like): MSS; SACK-permitted+TS or
    NOP NOP TS or NOP NOP SACK-permitted; NOP WS; NOP NOP SACK blocks; unknown options verbatim;
    padded with EOL to a multiple of 4. Raises ValueError beyond the 40-byte option space."""
    if opts is None:
        return b""
    out = bytearray()
    if opts.mss is not None:
        out += struct.pack("!BBH", OPT_MSS, 4, opts.mss)
    if opts.ts_val is not None:
        head = b"\x04\x02\x08\x0a" if opts.sack_permitted else b"\x01\x01\x08\x0a"
        out += head + struct.pack("!II", opts.ts_val, opts.ts_ecr or 0)
    elif opts.sack_permitted:
        out += b"\x01\x01\x04\x02"
    if opts.wscale is not None:
        out += bytes((OPT_NOP, OPT_WSCALE, 3, opts.wscale))
    if opts.sack_blocks:
        out += bytes((OPT_NOP, OPT_NOP, OPT_SACK, 2 + 8 * len(opts.sack_blocks)))
        for left, right in opts.sack_blocks:
            out += struct.pack("!II", left, right)
    for kind, data in opts.unknown:
        if len(data) > 38:
            raise ValueError(f"unknown option {kind} data too long ({len(data)})")
        out += bytes((kind, len(data) + 2)) + bytes(data)
    pad = -len(out) & 3
    out += b"\x00" * pad
    if len(out) > TCP_MAX_OPTLEN:
        raise ValueError(f"TCP options need {len(out)} bytes > {TCP_MAX_OPTLEN}: {opts!r}")
    return bytes(out)


def write_tcp_header(buf: bytearray | memoryview, off: int, seg: TcpSegment, csum: int = 0) -> int:
    """Write the TCP header (with options) of `seg` at `off` with checksum field `csum`; returns its length."""
    opts = seg.options
    if opts is None:
        _HDR.pack_into(
            buf, off, seg.src_port, seg.dst_port, seg.seq, seg.ack, 0x50, seg.flags, seg.window, csum, seg.urg_ptr
        )
        return TCP_HLEN
    if (
        opts.ts_val is not None
        and opts.mss is None
        and opts.wscale is None
        and not opts.sack_permitted
        and not opts.sack_blocks
        and not opts.unknown
    ):
        _HDR.pack_into(
            buf, off, seg.src_port, seg.dst_port, seg.seq, seg.ack, 0x80, seg.flags, seg.window, csum, seg.urg_ptr
        )
        _TS_FAST.pack_into(buf, off + TCP_HLEN, _TS_FAST_PREFIX, opts.ts_val, opts.ts_ecr or 0)
        return TCP_HLEN + 12
    ob = tcp_options_bytes(opts)
    hl = TCP_HLEN + len(ob)
    _HDR.pack_into(
        buf, off, seg.src_port, seg.dst_port, seg.seq, seg.ack, hl << 2, seg.flags, seg.window, csum, seg.urg_ptr
    )
    buf[off + TCP_HLEN : off + hl] = ob
    return hl


def tcp_checksum(src_ip: bytes, dst_ip: bytes, segment: bytes | bytearray | memoryview) -> int:
    """Checksum field value for a whole TCP segment whose checksum field is 0."""
    return finish(
        int.from_bytes(src_ip, "big") + int.from_bytes(dst_ip, "big") + IPPROTO_TCP + len(segment) + raw_sum(segment)
    )
