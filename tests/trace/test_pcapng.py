"""pcapng writer/reader: blocks readable by scapy, ns timestamps, comments, directions, both byte orders."""

from __future__ import annotations

import io
import struct
from decimal import Decimal
from pathlib import Path

import pytest
from scapy.layers.inet import IP, TCP
from scapy.layers.l2 import Ether
from scapy.utils import PcapNgReader
from scapy.utils import PcapNgWriter as ScapyPcapNgWriter

from chimney.trace import PcapFormatError, PcapngWriter, read_pcapng


def tcp_frame(i: int, payload: bytes = b"hello") -> bytes:
    return bytes(
        Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02")
        / IP(src="198.18.0.1", dst="198.18.0.2")
        / TCP(sport=40000 + i, dport=80, flags="PA", seq=i)
        / payload
    )


def test_written_file_reads_back_in_scapy_with_ns_timestamps_comments_and_interfaces(tmp_path: Path) -> None:
    path = tmp_path / "t.pcapng"
    ts = [0, 1, 1_000_000_007, (5 << 32) + 123_456_789_123]  # the last one needs the high timestamp word
    with PcapngWriter(path) as w:
        i0 = w.add_interface("wan a_to_b")
        i1 = w.add_interface("wan b_to_a", description="second")
        for k, t in enumerate(ts):
            comment = f"conn {k}, offloaded" if k != 2 else None
            w.write_packet(i1 if k % 2 else i0, t, tcp_frame(k), comment, direction="out" if k % 2 else "in")
    pkts = list(PcapNgReader(str(path)))
    assert len(pkts) == 4
    assert [p.time for p in pkts] == [Decimal(t) / Decimal(10**9) for t in ts]
    assert [p.comments for p in pkts] == [[b"conn 0, offloaded"], [b"conn 1, offloaded"], None, [b"conn 3, offloaded"]]
    assert [p.sniffed_on for p in pkts] == ["wan a_to_b", "wan b_to_a", "wan a_to_b", "wan b_to_a"]
    assert [p.direction for p in pkts] == [1, 2, 1, 2]
    assert all(p.haslayer(TCP) for p in pkts)
    assert [bytes(p) for p in pkts] == [tcp_frame(k) for k in range(4)]

    ours = list(read_pcapng(path))
    assert [r.timestamp_ns for r in ours] == ts
    assert [r.interface_id for r in ours] == [0, 1, 0, 1]
    assert [r.comment for r in ours] == ["conn 0, offloaded", "conn 1, offloaded", None, "conn 3, offloaded"]
    assert [r.direction for r in ours] == ["in", "out", "in", "out"]
    assert all(r.orig_len == len(r.data) for r in ours)


def test_every_block_is_32_bit_aligned_for_odd_sizes() -> None:
    buf = io.BytesIO()
    w = PcapngWriter(buf)
    w.add_interface("x")
    for n in range(60, 68):
        w.write_packet(0, n, bytes(n), "c" * (n - 59))
    w.close()
    data = buf.getvalue()
    assert len(data) % 4 == 0
    assert [len(r.data) for r in read_pcapng(data)] == list(range(60, 68))
    assert [r.comment for r in read_pcapng(data)] == ["c" * k for k in range(1, 9)]


def test_snaplen_truncates_but_keeps_original_length() -> None:
    buf = io.BytesIO()
    w = PcapngWriter(buf)
    w.add_interface("short", snaplen=54)
    w.write_packet(0, 10, tcp_frame(1, b"x" * 500))
    w.close()
    (rec,) = read_pcapng(buf.getvalue())
    assert len(rec.data) == 54 and rec.orig_len == len(tcp_frame(1, b"x" * 500))


def test_scapy_written_file_is_read_by_our_reader(tmp_path: Path) -> None:
    path = tmp_path / "s.pcapng"
    pkts = []
    for k in range(3):
        p = Ether(tcp_frame(k))
        p.time = Decimal(10 + k) + Decimal("0.000250")
        p.comments = [f"from scapy {k}".encode()]
        pkts.append(p)
    with ScapyPcapNgWriter(str(path)) as w:
        for p in pkts:
            w.write(p)
    recs = list(read_pcapng(path))
    assert [r.data for r in recs] == [tcp_frame(k) for k in range(3)]
    assert [r.timestamp_ns for r in recs] == [(10 + k) * 10**9 + 250_000 for k in range(3)]
    assert [r.comment for r in recs] == [f"from scapy {k}" for k in range(3)]


def opt(e: str, code: int, value: bytes) -> bytes:
    return struct.pack(e + "HH", code, len(value)) + value + bytes(-len(value) % 4)


def block(e: str, btype: int, body: bytes) -> bytes:
    return struct.pack(e + "II", btype, 12 + len(body)) + body + struct.pack(e + "I", 12 + len(body))


def handmade(e: str) -> bytes:
    """Two sections in byte order `e`: microsecond and binary (2^-10 s) resolutions, unknown blocks between."""
    frame = tcp_frame(7)
    shb = block(e, 0x0A0D0D0A, struct.pack(e + "IHHq", 0x1A2B3C4D, 1, 0, -1) + opt(e, 0, b""))
    idb_us = block(e, 1, struct.pack(e + "HHI", 1, 0, 0) + opt(e, 2, b"eth-us") + opt(e, 0, b""))
    idb_bin = block(
        e, 1, struct.pack(e + "HHI", 1, 0, 0) + opt(e, 2, b"eth-bin") + opt(e, 9, bytes([0x8A])) + opt(e, 0, b"")
    )
    pad = bytes(-len(frame) % 4)

    def epb(if_id: int, ts: int, comment: bytes | None) -> bytes:
        opts = (opt(e, 1, comment) + opt(e, 0, b"")) if comment else b""
        return block(
            e, 6, struct.pack(e + "IIIII", if_id, ts >> 32, ts & 0xFFFFFFFF, len(frame), len(frame)) + frame + pad + opts
        )

    unknown = block(e, 0x0BADC0DE, b"\x01\x02\x03\x04")
    nrb = block(e, 4, struct.pack(e + "HH", 0, 0))  # name resolution block: skipped
    return (
        shb + idb_us + unknown + epb(0, 1_500_000, b"first") + nrb
        + shb + idb_bin + epb(0, 3 * 1024 + 512, None)
    )


@pytest.mark.parametrize("endian", ["<", ">"], ids=["little", "big"])
def test_reader_handles_both_byte_orders_sections_resolutions_and_unknown_blocks(endian: str, tmp_path: Path) -> None:
    recs = list(read_pcapng(handmade(endian)))
    assert [(r.interface_name, r.timestamp_ns, r.comment) for r in recs] == [
        ("eth-us", 1_500_000_000, "first"),
        ("eth-bin", 3_500_000_000, None),
    ]
    assert all(r.data == tcp_frame(7) for r in recs)
    # scapy agrees on the first section (it does not restart interface ids at a new section, so the
    # second packet would be attributed to the first section's microsecond interface)
    path = tmp_path / ("le.pcapng" if endian == "<" else "be.pcapng")
    path.write_bytes(handmade(endian))
    first = next(iter(PcapNgReader(str(path))))
    assert first.time == Decimal("1.5") and bytes(first) == tcp_frame(7) and first.comments == [b"first"]


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda b: b[:-3], "truncated|bad length"),
        (lambda b: b[:8] + b"\x00\x00\x00\x00" + b[12:], "byte-order"),
        (lambda b: b[:-4] + b"\x00\x00\x00\x00", "trailer"),
        (lambda b: b"\x01\x00\x00\x00" + b[4:], "section header"),
    ],
    ids=["truncated", "bad-bom", "bad-trailer", "no-shb"],
)
def test_malformed_files_raise_clear_errors(damage, message: str) -> None:
    good = handmade("<")
    with pytest.raises(PcapFormatError, match=message):
        list(read_pcapng(damage(good)))


def test_writer_rejects_bad_arguments() -> None:
    w = PcapngWriter(io.BytesIO())
    with pytest.raises(ValueError, match="interface"):
        w.write_packet(0, 0, b"x" * 60)
    w.add_interface("i")
    with pytest.raises(ValueError, match="negative"):
        w.write_packet(0, -1, b"x" * 60)
