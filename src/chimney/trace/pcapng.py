"""pcapng files: a writer (SHB, one IDB per interface with ns resolution, EPBs with comments and direction)
and a reader that follows both byte orders, several sections, any if_tsresol, and skips unknown blocks.

Owns `PcapngWriter` and `read_pcapng`.
"""

from __future__ import annotations

import platform
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from chimney.trace.pcap import LINKTYPE_ETHERNET, PacketRecord, PcapFormatError

BT_SHB = 0x0A0D0D0A
BT_IDB = 0x00000001
BT_PB = 0x00000002  # obsolete Packet Block, still read
BT_SPB = 0x00000003
BT_EPB = 0x00000006
BYTE_ORDER_MAGIC = 0x1A2B3C4D

OPT_ENDOFOPT = 0
OPT_COMMENT = 1
SHB_HARDWARE = 2
SHB_OS = 3
SHB_USERAPPL = 4
IF_NAME = 2
IF_DESCRIPTION = 3
IF_TSRESOL = 9
IF_TSOFFSET = 14
EPB_FLAGS = 2

EPB_DIR_IN = 1
EPB_DIR_OUT = 2
_DIRECTIONS = {None: 0, "in": EPB_DIR_IN, "out": EPB_DIR_OUT}

_EPB_HDR = struct.Struct("<IIIIIII")  # type, total length, if id, ts high, ts low, caplen, orig len
_PAD = b"\0\0\0"


def _option(code: int, value: bytes) -> bytes:
    return struct.pack("<HH", code, len(value)) + value + _PAD[: -len(value) % 4]


def _block(block_type: int, body: bytes) -> bytes:
    total = 12 + len(body)
    return struct.pack("<II", block_type, total) + body + struct.pack("<I", total)


class PcapngWriter:
    """Write a pcapng file with one section; interfaces are added before (or between) packets.

    Timestamps are integer ns; every interface is declared with if_tsresol = 9.
    """

    __slots__ = ("_f", "_interfaces", "_owns", "packets")

    def __init__(
        self,
        dest: str | Path | BinaryIO,
        *,
        application: str = "tcp-chimney",
        comment: str | None = None,
    ) -> None:
        if isinstance(dest, str | Path):
            self._f: BinaryIO = open(dest, "wb")  # noqa: SIM115 -- closed by close()
            self._owns = True
        else:
            self._f = dest
            self._owns = False
        self._interfaces: list[tuple[str, int, int]] = []
        self.packets = 0
        opts = b""
        if comment:
            opts += _option(OPT_COMMENT, comment.encode())
        opts += _option(SHB_OS, f"{platform.system()} {platform.release()}".encode())
        opts += _option(SHB_USERAPPL, application.encode())
        opts += _option(OPT_ENDOFOPT, b"")
        # section length -1: unknown, the file is written as a stream
        body = struct.pack("<IHHq", BYTE_ORDER_MAGIC, 1, 0, -1) + opts
        self._f.write(_block(BT_SHB, body))

    def add_interface(
        self,
        name: str,
        *,
        linktype: int = LINKTYPE_ETHERNET,
        snaplen: int = 0,
        description: str | None = None,
    ) -> int:
        """Declare an interface; returns its id for `write_packet`. snaplen 0 means no limit."""
        opts = _option(IF_NAME, name.encode())
        if description:
            opts += _option(IF_DESCRIPTION, description.encode())
        opts += _option(IF_TSRESOL, b"\x09") + _option(OPT_ENDOFOPT, b"")
        self._f.write(_block(BT_IDB, struct.pack("<HHI", linktype, 0, snaplen) + opts))
        self._interfaces.append((name, linktype, snaplen))
        return len(self._interfaces) - 1

    @property
    def interfaces(self) -> list[str]:
        return [name for name, _, _ in self._interfaces]

    def write_packet(
        self,
        interface_id: int,
        timestamp_ns: int,
        data: bytes,
        comment: str | None = None,
        *,
        direction: str | None = None,
        orig_len: int | None = None,
    ) -> None:
        """Append one Enhanced Packet Block. `direction` is "in", "out" or None."""
        if not 0 <= interface_id < len(self._interfaces):
            raise ValueError(f"pcapng: unknown interface id {interface_id}")
        if timestamp_ns < 0:
            raise ValueError(f"pcapng: negative timestamp {timestamp_ns}")
        snaplen = self._interfaces[interface_id][2]
        caplen = len(data) if snaplen == 0 else min(len(data), snaplen)
        pad = -caplen % 4
        opts = b""
        if comment:
            opts += _option(OPT_COMMENT, comment.encode())
        if direction is not None:
            opts += _option(EPB_FLAGS, struct.pack("<I", _DIRECTIONS[direction]))
        if opts:
            opts += _option(OPT_ENDOFOPT, b"")
        total = 32 + caplen + pad + len(opts)
        f = self._f
        f.write(
            _EPB_HDR.pack(
                BT_EPB,
                total,
                interface_id,
                timestamp_ns >> 32,
                timestamp_ns & 0xFFFFFFFF,
                caplen,
                len(data) if orig_len is None else orig_len,
            )
        )
        f.write(data if caplen == len(data) else memoryview(data)[:caplen])
        f.write(_PAD[:pad] + opts + struct.pack("<I", total))
        self.packets += 1

    def flush(self) -> None:
        self._f.flush()

    def close(self) -> None:
        if self._owns:
            self._f.close()
        else:
            self._f.flush()

    def __enter__(self) -> PcapngWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _parse_options(buf: bytes, off: int, end: int, endian: str) -> dict[int, list[bytes]]:
    opts: dict[int, list[bytes]] = {}
    while off + 4 <= end:
        code, length = struct.unpack_from(endian + "HH", buf, off)
        off += 4
        if code == OPT_ENDOFOPT:
            break
        if off + length > end:
            raise PcapFormatError(f"pcapng: option {code} of {length} bytes overruns its block")
        opts.setdefault(code, []).append(bytes(buf[off : off + length]))
        off += length + (-length % 4)
    return opts


def _ts_to_ns(ts: int, tsresol: int) -> int:
    if tsresol & 0x80:
        return (ts * 1_000_000_000) >> (tsresol & 0x7F)
    exp = tsresol
    if exp <= 9:
        return ts * 10 ** (9 - exp)
    return ts // 10 ** (exp - 9)


def read_pcapng(source: str | Path | bytes) -> Iterator[PacketRecord]:
    """Yield the packets of a pcapng file (path or whole-file bytes) as `PacketRecord`s.

    Interface ids restart with each section, as the format says; records carry the id within the section.
    """
    buf = source if isinstance(source, bytes) else Path(source).read_bytes()
    end = len(buf)
    off = 0
    endian = "<"
    # per interface of the current section: (name, linktype, tsresol, tsoffset seconds)
    ifaces: list[tuple[str | None, int, int, int]] = []
    while off < end:
        if off + 12 > end:
            raise PcapFormatError(f"pcapng: truncated block header at offset {off}")
        (raw_type,) = struct.unpack_from("<I", buf, off)
        if raw_type == BT_SHB:
            (bom_le,) = struct.unpack_from("<I", buf, off + 8)
            if bom_le == BYTE_ORDER_MAGIC:
                endian = "<"
            elif bom_le == 0x4D3C2B1A:
                endian = ">"
            else:
                raise PcapFormatError(f"pcapng: bad byte-order magic 0x{bom_le:08x} at offset {off}")
            ifaces = []
        elif off == 0:
            raise PcapFormatError("pcapng: file does not start with a section header block")
        block_type, total = struct.unpack_from(endian + "II", buf, off)
        if total < 12 or total % 4 or off + total > end:
            raise PcapFormatError(f"pcapng: block type 0x{block_type:x} at offset {off} has bad length {total}")
        (trailer,) = struct.unpack_from(endian + "I", buf, off + total - 4)
        if trailer != total:
            raise PcapFormatError(f"pcapng: block at offset {off}: length {total} but trailer says {trailer}")
        body = off + 8
        body_end = off + total - 4
        if block_type == BT_IDB:
            linktype, _res, _snaplen = struct.unpack_from(endian + "HHI", buf, body)
            opts = _parse_options(buf, body + 8, body_end, endian)
            name = opts[IF_NAME][0].decode("utf-8", "replace") if IF_NAME in opts else None
            tsresol = opts[IF_TSRESOL][0][0] if IF_TSRESOL in opts else 6
            tsoffset = struct.unpack(endian + "q", opts[IF_TSOFFSET][0])[0] if IF_TSOFFSET in opts else 0
            ifaces.append((name, linktype, tsresol, tsoffset))
        elif block_type in (BT_EPB, BT_PB):
            if block_type == BT_EPB:
                if_id, ts_hi, ts_lo, caplen, orig_len = struct.unpack_from(endian + "IIIII", buf, body)
            else:
                if_id, _drops, ts_hi, ts_lo, caplen, orig_len = struct.unpack_from(endian + "HHIIII", buf, body)
            data_off = body + 20
            if data_off + caplen > body_end:
                raise PcapFormatError(f"pcapng: packet at offset {off} claims {caplen} bytes beyond its block")
            if if_id >= len(ifaces):
                raise PcapFormatError(f"pcapng: packet at offset {off} refers to undeclared interface {if_id}")
            name, linktype, tsresol, tsoffset = ifaces[if_id]
            opts = _parse_options(buf, data_off + caplen + (-caplen % 4), body_end, endian)
            comment = opts[OPT_COMMENT][0].decode("utf-8", "replace") if OPT_COMMENT in opts else None
            direction = None
            if block_type == BT_EPB and EPB_FLAGS in opts and len(opts[EPB_FLAGS][0]) == 4:
                flags = struct.unpack(endian + "I", opts[EPB_FLAGS][0])[0] & 3
                direction = "in" if flags == EPB_DIR_IN else "out" if flags == EPB_DIR_OUT else None
            ts = _ts_to_ns((ts_hi << 32) | ts_lo, tsresol) + tsoffset * 1_000_000_000
            yield PacketRecord(
                if_id, name, ts, bytes(buf[data_off : data_off + caplen]), comment, orig_len, linktype, direction
            )
        elif block_type == BT_SPB:
            if not ifaces:
                raise PcapFormatError(f"pcapng: simple packet block at offset {off} before any interface")
            (orig_len,) = struct.unpack_from(endian + "I", buf, body)
            name, linktype, _, _ = ifaces[0]
            caplen = min(orig_len, body_end - body - 4)
            yield PacketRecord(0, name, 0, bytes(buf[body + 4 : body + 4 + caplen]), None, orig_len, linktype)
        off += total
