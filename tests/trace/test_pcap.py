"""Classic pcap: round trips through our writer/reader and scapy, micro- and nanosecond magic, byte orders."""

from __future__ import annotations

import struct
from decimal import Decimal
from pathlib import Path

import pytest
from scapy.layers.inet import IP, UDP
from scapy.layers.l2 import Ether
from scapy.utils import rdpcap, wrpcap

from chimney.trace import PcapFormatError, PcapWriter, read_pcap

TIMES = [0, 999, 1_000_000_001, 1_700_000_000_123_456_789]


def udp_frame(i: int) -> bytes:
    return bytes(
        Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02")
        / IP(src="198.18.0.1", dst="198.18.0.2")
        / UDP(sport=1000 + i, dport=53)
        / (bytes([i]) * (i * 7 + 1))
    )


@pytest.mark.parametrize("nanosecond", [True, False], ids=["ns", "us"])
def test_round_trip_through_our_reader_and_scapy(tmp_path: Path, nanosecond: bool) -> None:
    path = tmp_path / "x.pcap"
    with PcapWriter(path, nanosecond=nanosecond) as w:
        for i, t in enumerate(TIMES):
            w.write_packet(t, udp_frame(i))
    expected = TIMES if nanosecond else [t // 1000 * 1000 for t in TIMES]
    recs = list(read_pcap(path))
    assert [r.timestamp_ns for r in recs] == expected
    assert [r.data for r in recs] == [udp_frame(i) for i in range(len(TIMES))]
    pkts = rdpcap(str(path))
    assert [p.time for p in pkts] == [Decimal(t) / Decimal(10**9) for t in expected]
    assert [bytes(p) for p in pkts] == [udp_frame(i) for i in range(len(TIMES))]


def test_scapy_written_microsecond_file_reads_back(tmp_path: Path) -> None:
    path = tmp_path / "s.pcap"
    pkts = [Ether(udp_frame(i)) for i in range(3)]
    for i, p in enumerate(pkts):
        p.time = Decimal(100 + i) + Decimal("0.000042")
    wrpcap(str(path), pkts)
    recs = list(read_pcap(path))
    assert [r.timestamp_ns for r in recs] == [(100 + i) * 10**9 + 42_000 for i in range(3)]
    assert [r.data for r in recs] == [udp_frame(i) for i in range(3)]


def test_big_endian_nanosecond_file() -> None:
    frame = udp_frame(1)
    data = struct.pack(">IHHiIII", 0xA1B23C4D, 2, 4, 0, 0, 65535, 1)
    data += struct.pack(">IIII", 7, 5, len(frame), len(frame)) + frame
    (rec,) = read_pcap(data)
    assert rec.timestamp_ns == 7_000_000_005 and rec.data == frame and rec.linktype == 1


def test_snaplen_truncation_keeps_original_length() -> None:
    import io

    buf = io.BytesIO()
    w = PcapWriter(buf, snaplen=20)
    w.write_packet(1, udp_frame(5))
    w.close()
    (rec,) = read_pcap(buf.getvalue())
    assert len(rec.data) == 20 and rec.orig_len == len(udp_frame(5))


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"\x00" * 24, "unknown magic"),
        (b"\xd4\xc3\xb2\xa1", "too short"),
        (struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1) + b"\x00" * 7, "truncated record header"),
        (struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1) + struct.pack("<IIII", 0, 0, 100, 100) + b"x", "claims 100"),
    ],
    ids=["magic", "short", "record-header", "record-body"],
)
def test_malformed_pcap_raises_clear_error(data: bytes, message: str) -> None:
    with pytest.raises(PcapFormatError, match=message):
        list(read_pcap(data))
