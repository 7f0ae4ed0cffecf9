"""Classic libpcap files: writer (microsecond or nanosecond magic) and reader (either magic, either byte order).

Owns `PacketRecord` and `PcapFormatError`, shared with the pcapng module, plus `PcapWriter` and `read_pcap`.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

LINKTYPE_ETHERNET = 1

MAGIC_US = 0xA1B2C3D4
MAGIC_NS = 0xA1B23C4D
_FILE_HDR = struct.Struct("<IHHiIII")
_REC_HDR_LE = struct.Struct("<IIII")
_REC_HDR_BE = struct.Struct(">IIII")


class PcapFormatError(ValueError):
    """The file is not a well-formed capture (bad magic, truncated record, inconsistent lengths)."""


@dataclass(frozen=True, slots=True)
class PacketRecord:
    """One captured frame as read back from pcap or pcapng.

    `timestamp_ns` is absolute (ns since the epoch of the capture clock; simulated captures start at 0).
    `direction` is "in", "out" or None (pcapng epb_flags); `orig_len` the length on the wire.
    """

    interface_id: int
    interface_name: str | None
    timestamp_ns: int
    data: bytes
    comment: str | None = None
    orig_len: int = 0
    linktype: int = LINKTYPE_ETHERNET
    direction: str | None = None


class PcapWriter:
    """Write a classic pcap file. `nanosecond=True` uses the 0xa1b23c4d magic (ns timestamps)."""

    __slots__ = ("_f", "_owns", "_rec", "linktype", "nanosecond", "packets", "snaplen")

    def __init__(
        self,
        dest: str | Path | BinaryIO,
        *,
        linktype: int = LINKTYPE_ETHERNET,
        nanosecond: bool = True,
        snaplen: int = 262144,
    ) -> None:
        if isinstance(dest, str | Path):
            self._f: BinaryIO = open(dest, "wb")  # noqa: SIM115 -- closed by close()
            self._owns = True
        else:
            self._f = dest
            self._owns = False
        self.linktype = linktype
        self.nanosecond = nanosecond
        self.snaplen = snaplen
        self.packets = 0
        self._rec = bytearray(16)
        self._f.write(_FILE_HDR.pack(MAGIC_NS if nanosecond else MAGIC_US, 2, 4, 0, 0, snaplen, linktype))

    def write_packet(self, timestamp_ns: int, data: bytes, orig_len: int | None = None) -> None:
        if timestamp_ns < 0:
            raise ValueError(f"negative timestamp {timestamp_ns}")
        sec, frac = divmod(timestamp_ns, 1_000_000_000)
        if not self.nanosecond:
            frac //= 1000
        if sec > 0xFFFFFFFF:
            raise ValueError(f"timestamp {timestamp_ns} ns does not fit a classic pcap record")
        caplen = min(len(data), self.snaplen)
        _REC_HDR_LE.pack_into(self._rec, 0, sec, frac, caplen, len(data) if orig_len is None else orig_len)
        self._f.write(self._rec)
        self._f.write(data if caplen == len(data) else memoryview(data)[:caplen])
        self.packets += 1

    def flush(self) -> None:
        self._f.flush()

    def close(self) -> None:
        if self._owns:
            self._f.close()
        else:
            self._f.flush()

    def __enter__(self) -> PcapWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def read_pcap(source: str | Path | bytes) -> Iterator[PacketRecord]:
    """Yield the records of a classic pcap file (path or whole-file bytes)."""
    buf = source if isinstance(source, bytes) else Path(source).read_bytes()
    if len(buf) < _FILE_HDR.size:
        raise PcapFormatError(f"pcap: file too short for a header ({len(buf)} bytes)")
    magic_le = struct.unpack_from("<I", buf, 0)[0]
    magic_be = struct.unpack_from(">I", buf, 0)[0]
    if magic_le in (MAGIC_US, MAGIC_NS):
        endian, magic, rec = "<", magic_le, _REC_HDR_LE
    elif magic_be in (MAGIC_US, MAGIC_NS):
        endian, magic, rec = ">", magic_be, _REC_HDR_BE
    else:
        raise PcapFormatError(f"pcap: unknown magic 0x{magic_le:08x}")
    _, _vmaj, _vmin, thiszone, _sigfigs, _snaplen, linktype = struct.unpack_from(endian + "IHHiIII", buf, 0)
    scale = 1 if magic == MAGIC_NS else 1000
    off = _FILE_HDR.size
    end = len(buf)
    while off < end:
        if off + 16 > end:
            raise PcapFormatError(f"pcap: truncated record header at offset {off}")
        sec, frac, caplen, orig_len = rec.unpack_from(buf, off)
        off += 16
        if off + caplen > end:
            raise PcapFormatError(f"pcap: record at offset {off - 16} claims {caplen} bytes, {end - off} left")
        ts = (sec + thiszone) * 1_000_000_000 + frac * scale
        yield PacketRecord(0, None, ts, bytes(buf[off : off + caplen]), None, orig_len, linktype)
        off += caplen
