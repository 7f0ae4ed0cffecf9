"""virtio_net_hdr pack/parse and checksum finishing (pure, no kernel needed)."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st
from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.l2 import Ether

from chimney.links.vnet import (
    VIRTIO_NET_HDR_F_DATA_VALID,
    VIRTIO_NET_HDR_F_NEEDS_CSUM,
    VIRTIO_NET_HDR_GSO_ECN,
    VIRTIO_NET_HDR_GSO_NONE,
    VIRTIO_NET_HDR_GSO_TCPV4,
    VIRTIO_NET_HDR_GSO_TCPV6,
    VIRTIO_NET_HDR_GSO_UDP,
    VNET_HDR_LEN,
    VNET_HDR_MRG_LEN,
    ZERO_HDR,
    VnetHdr,
    VnetHeaderError,
    complete_checksum,
    ones_complement_sum,
)

u16 = st.integers(0, 0xFFFF)
headers = st.builds(
    VnetHdr,
    flags=st.sampled_from([0, VIRTIO_NET_HDR_F_NEEDS_CSUM, VIRTIO_NET_HDR_F_DATA_VALID]),
    gso_type=st.sampled_from(
        [
            VIRTIO_NET_HDR_GSO_NONE,
            VIRTIO_NET_HDR_GSO_TCPV4,
            VIRTIO_NET_HDR_GSO_TCPV6,
            VIRTIO_NET_HDR_GSO_UDP,
            VIRTIO_NET_HDR_GSO_TCPV4 | VIRTIO_NET_HDR_GSO_ECN,
        ]
    ),
    hdr_len=u16,
    gso_size=u16,
    csum_start=u16,
    csum_offset=u16,
    num_buffers=u16,
)


def test_layout_is_little_endian_in_the_documented_field_order() -> None:
    h = VnetHdr(VIRTIO_NET_HDR_F_NEEDS_CSUM, VIRTIO_NET_HDR_GSO_TCPV4, 66, 1448, 34, 16)
    assert h.pack() == bytes([1, 1, 66, 0, 0xA8, 0x05, 34, 0, 16, 0])
    assert len(h.pack()) == VNET_HDR_LEN


def test_mergeable_variant_appends_num_buffers() -> None:
    h = VnetHdr(num_buffers=3)
    raw = h.pack(mrg=True)
    assert len(raw) == VNET_HDR_MRG_LEN and raw[10:] == b"\x03\x00"
    assert VnetHdr.parse(raw, mrg=True).num_buffers == 3
    # The 10-byte form has no field for it, so it does not survive that round trip.
    assert VnetHdr.parse(h.pack()).num_buffers == 0


@given(headers, st.booleans())
def test_pack_parse_round_trip(h: VnetHdr, mrg: bool) -> None:
    if not mrg:
        h.num_buffers = 0
    raw = h.pack(mrg)
    assert VnetHdr.parse(raw, mrg) == h
    buf = bytearray(20)
    n = h.pack_into(buf, 3, mrg)
    assert bytes(buf[3 : 3 + n]) == raw


def test_zero_header_means_nothing_to_do() -> None:
    h = VnetHdr.parse(ZERO_HDR)
    assert not h.needs_csum and not h.data_valid and not h.is_gso


def test_flag_and_gso_accessors() -> None:
    h = VnetHdr(VIRTIO_NET_HDR_F_DATA_VALID, VIRTIO_NET_HDR_GSO_TCPV6 | VIRTIO_NET_HDR_GSO_ECN, gso_size=1440)
    assert h.data_valid and not h.needs_csum
    assert h.gso == VIRTIO_NET_HDR_GSO_TCPV6 and h.ecn and h.is_gso
    assert "TCPV6|ECN" in repr(h) and "DATA_VALID" in repr(h)


@pytest.mark.parametrize(
    ("raw", "why"),
    [
        (bytes(9), "truncated"),
        (bytes([0x80]) + bytes(9), "flags"),
        (bytes([0, 2]) + bytes(8), "gso_type"),
        (bytes([0, 0x42]) + bytes(8), "gso_type"),
    ],
)
def test_parse_rejects_malformed_headers(raw: bytes, why: str) -> None:
    with pytest.raises(VnetHeaderError, match=why):
        VnetHdr.parse(raw)


def test_validate_rejects_checksum_field_beyond_the_frame() -> None:
    with pytest.raises(VnetHeaderError, match="beyond"):
        VnetHdr(VIRTIO_NET_HDR_F_NEEDS_CSUM, csum_start=50, csum_offset=16).validate(60)
    VnetHdr(VIRTIO_NET_HDR_F_NEEDS_CSUM, csum_start=34, csum_offset=16).validate(54)


def test_validate_rejects_gso_without_segment_size() -> None:
    with pytest.raises(VnetHeaderError, match="gso_size 0"):
        VnetHdr(gso_type=VIRTIO_NET_HDR_GSO_TCPV4, hdr_len=54).validate(2000)


def _naive_sum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return s


@given(st.binary(min_size=0, max_size=300))
def test_ones_complement_sum_matches_the_word_by_word_definition(data: bytes) -> None:
    assert ones_complement_sum(data) == _naive_sum(data)


def _pseudo_sum(pkt: IP, l4_len: int, proto: int) -> int:
    src = bytes(int(x) for x in pkt.src.split("."))
    dst = bytes(int(x) for x in pkt.dst.split("."))
    return ones_complement_sum(src + dst + struct.pack("!BBH", 0, proto, l4_len))


@pytest.mark.parametrize("payload_len", [0, 1, 1000, 60000])
def test_complete_checksum_does_what_a_nic_would_for_a_partial_tcp_checksum(payload_len: int) -> None:
    pkt = Ether() / IP(src="198.18.0.1", dst="198.18.0.2") / TCP(sport=40000, dport=80, flags="PA") / (
        b"\xa5" * payload_len
    )
    wire = bytes(pkt)  # scapy fills in the correct checksum
    want = Ether(wire)[TCP].chksum
    frame = bytearray(wire)
    l4 = 14 + 20
    # What Linux hands over with NEEDS_CSUM: the field holds the (uncomplemented) pseudo-header sum.
    struct.pack_into("!H", frame, l4 + 16, _pseudo_sum(pkt[IP], len(wire) - l4, 6))
    hdr = VnetHdr(VIRTIO_NET_HDR_F_NEEDS_CSUM, csum_start=l4, csum_offset=16)
    assert complete_checksum(frame, hdr)
    assert struct.unpack_from("!H", frame, l4 + 16)[0] == want


def test_complete_checksum_for_udp_and_untouched_without_needs_csum() -> None:
    pkt = Ether() / IP(src="198.18.0.1", dst="198.18.0.2") / UDP(sport=5, dport=6) / b"hello"
    wire = bytes(pkt)
    frame = bytearray(wire)
    struct.pack_into("!H", frame, 34 + 6, _pseudo_sum(pkt[IP], len(wire) - 34, 17))
    before = bytes(frame)
    assert not complete_checksum(frame, VnetHdr(VIRTIO_NET_HDR_F_DATA_VALID))
    assert bytes(frame) == before
    assert complete_checksum(frame, VnetHdr(VIRTIO_NET_HDR_F_NEEDS_CSUM, csum_start=34, csum_offset=6))
    assert bytes(frame) == wire


def test_complete_checksum_refuses_a_header_that_points_outside_the_frame() -> None:
    with pytest.raises(VnetHeaderError):
        complete_checksum(bytearray(40), VnetHdr(VIRTIO_NET_HDR_F_NEEDS_CSUM, csum_start=34, csum_offset=16))
