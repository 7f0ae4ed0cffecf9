"""The host stack's offload path: frames that carry a virtio_net_hdr (checksum offload, GSO super-frames
on receive, TSO super-segments on send) and one ACK per receive drain instead of one per two segments.

In-process tests inject frames into `HostIp.input_frame(iface, frame, hdr)` of an established
connection (`connected_pair`, simulated time); the netns test moves 20 MB each way through a vnet TAP
with every offload on against a Linux socket, sha256 checked on both ends.
"""

from __future__ import annotations

import contextlib
import json
import random
import time
from dataclasses import dataclass

import pytest
from scapy.layers.inet import IP, TCP
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import Ether
from scapy.packet import Raw

from chimney.host.apps import BulkResult, bulk_digest, bulk_exchange
from chimney.host.interface import Interface
from chimney.host.socket import Socket
from chimney.host.stack import HostStack, connected_pair
from chimney.host.tcp import Tcb
from chimney.links.netns import TapTopology, kernel_supports_netns
from chimney.links.tap import TUN_F_DEFAULT
from chimney.links.vnet import (
    VIRTIO_NET_HDR_F_DATA_VALID,
    VIRTIO_NET_HDR_F_NEEDS_CSUM,
    VIRTIO_NET_HDR_GSO_TCPV4,
    VIRTIO_NET_HDR_GSO_TCPV6,
    VnetHdr,
    complete_checksum,
)
from chimney.net.drops import DropReason
from chimney.net.frame import Frame, TcpFrameBuilder, parse_frame
from chimney.net.tcp import ACK, FIN, PSH, TcpOptions, TcpSegment
from chimney.sim import SimScheduler
from chimney.sim.realtime import RealTimeScheduler
from chimney.sim.tasks import spawn
from chimney.tcp import TcpConfig, linux_profile
from chimney.tcp.cc import make_cc
from linux_peer import PEER

BUF = 1 << 20
MS = 1_000_000


@dataclass
class Pair:
    """A established A -> B connection; frames B sends are captured in `b_out` (not delivered)."""

    sched: SimScheduler
    a: HostStack
    b: HostStack
    client: Socket
    server: Socket
    ta: Tcb
    tb: Tcb
    ifb: Interface
    b_out: list[bytes]

    def a_frame(self, offset: int, payload: bytes, *, partial_csum: bool, flags: int = ACK | PSH) -> bytes:
        """A frame A could have sent: `payload` at `offset` bytes past A's SND.NXT, timestamps on."""
        ca = self.ta.conn
        b = TcpFrameBuilder(self.a.ip.interfaces["eth0"].mac, self.ifb.mac, self.ta.local, self.ta.remote)
        seg = TcpSegment(self.ta.local_port, self.ta.remote_port, (ca.snd_nxt + offset) & 0xFFFFFFFF,
                         ca.rcv_nxt & 0xFFFFFFFF, flags, 4000, payload,
                         TcpOptions(None, None, False, (), ca.ts_now(self.sched.now), ca.ts_recent))
        return b.build_frame(seg, offload_csum=partial_csum)

    def vnet_hdr(self, frame: bytes, flags: int, gso: int = 0, gso_size: int = 0) -> VnetHdr:
        f = parse_frame(frame, verify_checksums=False)
        assert isinstance(f, Frame) and f.tcp is not None
        hdr_len = len(frame) - len(f.tcp.payload)
        start = 14 + (20 if self.ta.family == 4 else 40)
        return VnetHdr(flags, gso, hdr_len, gso_size, start, 16)

    def drain_server(self) -> bytes:
        got = bytearray()
        while True:
            try:
                d = self.server._try_recv_view(1 << 20)
            except BlockingIOError:
                return bytes(got)
            if not d:
                return bytes(got)
            got += d


def _pair(ipv6: bool = False) -> Pair:
    sched = SimScheduler(seed=4)
    a, b, _ = connected_pair(sched, tcp_config=linux_profile(snd_buf=BUF, rcv_buf=BUF), ipv6=ipv6)
    dst = "2001:2::2" if ipv6 else "198.18.0.2"
    lsock = b.listen(5000)
    client = a.socket()
    client.connect((dst, 5000))
    server, _ = lsock.accept()
    sched.run_until(sched.now + 50 * MS)  # past the delayed ACKs of the handshake
    ta = next(iter(a.tcp.conns.values()))
    tb = next(iter(b.tcp.conns.values()))
    ifb = b.ip.interfaces["eth0"]
    out: list[bytes] = []
    ifb.transmit = lambda frame, meta: out.append(bytes(frame))
    return Pair(sched, a, b, client, server, ta, tb, ifb, out)


def _acks(frames: list[bytes]) -> list[int]:
    acks = []
    for fr in frames:
        f = parse_frame(fr)
        assert isinstance(f, Frame) and f.tcp is not None
        acks.append(f.tcp.ack)
    return acks


# -- receive -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("ipv6", [False, True], ids=["ipv4", "ipv6"])
def test_gso_super_frame_longer_than_the_mtu_delivers_every_byte(ipv6: bool) -> None:
    p = _pair(ipv6)
    p.ifb.set_offloads(rx_gso=True, rx_csum=True)
    mss = p.ta.conn.snd_mss
    data = random.Random(1).randbytes(40 * mss)
    frame = p.a_frame(0, data, partial_csum=True)
    assert len(frame) > p.ifb.mtu + 14
    gso = VIRTIO_NET_HDR_GSO_TCPV6 if ipv6 else VIRTIO_NET_HDR_GSO_TCPV4
    p.b.ip.input_frame(p.ifb, frame, p.vnet_hdr(frame, VIRTIO_NET_HDR_F_NEEDS_CSUM, gso, mss))
    p.sched.run_until(p.sched.now + 100 * MS)
    assert p.drain_server() == data
    assert p.b.ip.counters["gso_frames_in"] == 1 and p.b.ip.counters["csum_offloaded_in"] == 1
    assert _acks(p.b_out)[-1] == (p.ta.conn.snd_nxt + len(data)) & 0xFFFFFFFF


def test_gso_super_frame_is_dropped_and_counted_without_the_capability() -> None:
    p = _pair()
    p.ifb.set_offloads(rx_gso=False, rx_csum=True)
    mss = p.ta.conn.snd_mss
    frame = p.a_frame(0, bytes(10 * mss), partial_csum=True)
    p.b.ip.input_frame(p.ifb, frame, p.vnet_hdr(frame, VIRTIO_NET_HDR_F_NEEDS_CSUM, VIRTIO_NET_HDR_GSO_TCPV4, mss))
    p.sched.run_until(p.sched.now + 100 * MS)
    assert p.drain_server() == b""
    assert p.b.ip.drops["vnet_gso_not_enabled"] == 1
    assert p.tb.conn.rcv_nxt == p.ta.conn.snd_nxt


def test_a_gso_header_on_a_frame_that_is_not_tcp_of_that_family_is_dropped() -> None:
    p = _pair()
    p.ifb.set_offloads(rx_gso=True, rx_csum=True)
    mss = p.ta.conn.snd_mss
    frame = p.a_frame(0, bytes(3 * mss), partial_csum=True)
    p.b.ip.input_frame(p.ifb, frame, p.vnet_hdr(frame, VIRTIO_NET_HDR_F_NEEDS_CSUM, VIRTIO_NET_HDR_GSO_TCPV6, mss))
    assert p.b.ip.drops["vnet_gso_not_tcp"] == 1 and p.drain_server() == b""


def _corrupt_tcp_checksum(frame: bytes) -> bytes:
    b = bytearray(frame)
    b[14 + 20 + 16] ^= 0x5A
    return bytes(b)


def _corrupt_ip_checksum(frame: bytes) -> bytes:
    b = bytearray(frame)
    b[14 + 10] ^= 0x5A
    return bytes(b)


@pytest.mark.parametrize(
    ("case", "flags", "rx_csum", "make", "delivered", "drop"),
    [
        ("partial sum vouched by NEEDS_CSUM", VIRTIO_NET_HDR_F_NEEDS_CSUM, True, "partial", True, None),
        ("NEEDS_CSUM without the capability", VIRTIO_NET_HDR_F_NEEDS_CSUM, False, "partial", False,
         "vnet_csum_offload_not_enabled"),
        ("partial sum with no offload header", None, True, "partial", False, DropReason.BAD_TCP_CHECKSUM),
        ("bad checksum vouched by DATA_VALID", VIRTIO_NET_HDR_F_DATA_VALID, True, "bad_tcp", True, None),
        ("DATA_VALID without the capability is verified", VIRTIO_NET_HDR_F_DATA_VALID, False, "bad_tcp", False,
         DropReason.BAD_TCP_CHECKSUM),
        ("bad checksum, header without checksum flags", 0, True, "bad_tcp", False, DropReason.BAD_TCP_CHECKSUM),
        ("NEEDS_CSUM never excuses a bad IPv4 header", VIRTIO_NET_HDR_F_NEEDS_CSUM, True, "bad_ip", False,
         DropReason.BAD_IPV4_CHECKSUM),
    ],
    ids=lambda v: v if isinstance(v, str) and " " in v else "",
)
def test_transport_checksum_is_skipped_only_when_the_header_vouches_and_the_interface_allows(
    case: str, flags: int | None, rx_csum: bool, make: str, delivered: bool, drop: str | DropReason | None
) -> None:
    p = _pair()
    p.ifb.set_offloads(rx_csum=rx_csum)
    data = random.Random(2).randbytes(1000)
    frame = p.a_frame(0, data, partial_csum=make == "partial")
    if make == "bad_tcp":
        frame = _corrupt_tcp_checksum(frame)
    elif make == "bad_ip":
        frame = p.a_frame(0, data, partial_csum=True)
        frame = _corrupt_ip_checksum(frame)
    hdr = None if flags is None else p.vnet_hdr(frame, flags)
    p.b.ip.input_frame(p.ifb, frame, hdr)
    p.sched.run_until(p.sched.now + 100 * MS)
    assert p.drain_server() == (data if delivered else b"")
    if isinstance(drop, DropReason):
        assert p.b.ip.parse_drops.counts.get(drop) == 1, p.b.ip.parse_drops.counts
    elif drop is not None:
        assert p.b.ip.drops[drop] == 1


def test_a_plain_frame_longer_than_the_mtu_is_dropped_even_with_offload_header() -> None:
    p = _pair()
    p.ifb.set_offloads(rx_gso=True, rx_csum=True)
    frame = p.a_frame(0, bytes(3000), partial_csum=True)
    p.b.ip.input_frame(p.ifb, frame, p.vnet_hdr(frame, VIRTIO_NET_HDR_F_NEEDS_CSUM))
    assert p.b.ip.drops["vnet_oversize"] == 1 and p.drain_server() == b""


# -- one ACK per receive drain -----------------------------------------------------------------------


def test_a_drain_of_in_order_segments_gets_one_cumulative_ack() -> None:
    p = _pair()
    p.ifb.rx_batched = True
    mss = p.ta.conn.snd_mss
    data = random.Random(3).randbytes(10 * mss)
    for i in range(10):
        p.b.ip.input_frame(p.ifb, p.a_frame(i * mss, data[i * mss : (i + 1) * mss], partial_csum=False))
    assert p.b_out == []  # nothing leaves before the link says the drain is over
    p.b.ip.drain_end()
    assert _acks(p.b_out) == [(p.ta.conn.snd_nxt + len(data)) & 0xFFFFFFFF]
    assert p.b.tcp.counters.acks_coalesced == 4  # the engine queued five (one per two segments)
    assert p.drain_server() == data


def test_a_drain_holding_more_than_a_full_segment_is_acked_at_its_end_not_after_the_delayed_ack() -> None:
    """One GSO super-frame is one segment to the engine, which would wait for a second one (delayed ACK);
    like Linux after GRO, more than a full segment since the last ACK is acknowledged at once."""
    p = _pair()
    p.ifb.rx_batched = True
    p.ifb.set_offloads(rx_gso=True, rx_csum=True)
    mss = p.ta.conn.snd_mss
    frame = p.a_frame(0, bytes(20 * mss), partial_csum=True)
    p.b.ip.input_frame(p.ifb, frame, p.vnet_hdr(frame, VIRTIO_NET_HDR_F_NEEDS_CSUM, VIRTIO_NET_HDR_GSO_TCPV4, mss))
    p.b.ip.drain_end()
    assert _acks(p.b_out) == [(p.ta.conn.snd_nxt + 20 * mss) & 0xFFFFFFFF]
    # A drain with less than a full segment keeps the ordinary delayed ACK.
    p.b.ip.input_frame(p.ifb, p.a_frame(20 * mss, bytes(100), partial_csum=False))
    p.b.ip.drain_end()
    assert len(p.b_out) == 1 and p.tb.conn.ack_pending


def test_duplicate_acks_in_a_drain_are_never_coalesced() -> None:
    p = _pair()
    p.ifb.rx_batched = True
    mss = p.ta.conn.snd_mss
    # Segment 0, then 2, 3 and 4 with 1 missing: the three duplicate ACKs carry the loss news (and SACK).
    for i in (0, 2, 3, 4):
        p.b.ip.input_frame(p.ifb, p.a_frame(i * mss, bytes(mss), partial_csum=False))
    p.b.ip.drain_end()
    acks = _acks(p.b_out)
    una = (p.ta.conn.snd_nxt + mss) & 0xFFFFFFFF
    assert acks[-3:] == [una, una, una]
    assert acks.count(una) == len(acks) >= 3


def test_the_batch_is_flushed_every_rx_batch_segments_within_one_long_drain() -> None:
    p = _pair()
    p.ifb.rx_batched = True
    p.b.tcp.rx_batch = 8
    mss = p.ta.conn.snd_mss
    for i in range(20):
        p.b.ip.input_frame(p.ifb, p.a_frame(i * mss, bytes(mss), partial_csum=False))
    base = p.ta.conn.snd_nxt
    assert _acks(p.b_out) == [(base + 8 * mss) & 0xFFFFFFFF, (base + 16 * mss) & 0xFFFFFFFF]


def _gro_frames(p: Pair, count: int, *, ts_change_at: int | None = None, psh_at: int | None = None,
                order: list[int] | None = None) -> tuple[bytes, list[bytes]]:
    """`count` MSS-sized in-order frames from A with flags ACK (PSH only at `psh_at`) and one timestamp
    value (a new one from `ts_change_at` on), in `order` if given."""
    ca = p.ta.conn
    mss = ca.snd_mss
    data = random.Random(6).randbytes(count * mss)
    b = TcpFrameBuilder(p.a.ip.interfaces["eth0"].mac, p.ifb.mac, p.ta.local, p.ta.remote)
    frames = []
    for i in range(count):
        tsv = ca.ts_now(p.sched.now) + (1 if ts_change_at is not None and i >= ts_change_at else 0)
        seg = TcpSegment(p.ta.local_port, p.ta.remote_port, (ca.snd_nxt + i * mss) & 0xFFFFFFFF,
                         ca.rcv_nxt & 0xFFFFFFFF, ACK | (PSH if i == psh_at else 0), 4000,
                         data[i * mss : (i + 1) * mss], TcpOptions(None, None, False, (), tsv, ca.ts_recent))
        frames.append(b.build_frame(seg))
    if order is not None:
        frames = [frames[i] for i in order]
    return data, frames


def test_gro_hands_a_burst_to_the_engine_as_two_segments_and_acks_it_once() -> None:
    p = _pair()
    p.ifb.rx_batched = True
    data, frames = _gro_frames(p, 20)
    before = p.tb.conn.stats.segs_in
    for f in frames:
        p.b.ip.input_frame(p.ifb, f)
    p.b.ip.drain_end()
    assert p.b.tcp.counters.gro_merged == 18
    assert p.tb.conn.stats.segs_in - before == 2  # the engine saw 19 MSS merged, then the last one
    assert _acks(p.b_out) == [(p.ta.conn.snd_nxt + len(data)) & 0xFFFFFFFF]
    assert p.drain_server() == data


@pytest.mark.parametrize(("case", "kw", "merged"), [
    ("a new timestamp starts a new run", {"ts_change_at": 6}, (6 - 2) + (14 - 2)),
    ("PSH ends a run", {"psh_at": 9}, (10 - 2) + (10 - 2)),
    # 0-3 | 5-7 (beyond the gap: merged too, as GRO does per flow) | 4 | 8-9
    ("a gap ends a run", {"order": [0, 1, 2, 3, 5, 6, 7, 4, 8, 9]}, 2 + 1),
], ids=lambda v: v if isinstance(v, str) else "")
def test_gro_merges_only_what_linux_gro_would(case: str, kw: dict[str, object], merged: int) -> None:
    p = _pair()
    p.ifb.rx_batched = True
    count = 10 if "order" in kw else 20
    data, frames = _gro_frames(p, count, **kw)  # type: ignore[arg-type]
    for f in frames:
        p.b.ip.input_frame(p.ifb, f)
    p.b.ip.drain_end()
    p.sched.run_until(p.sched.now + 100 * MS)
    assert p.b.tcp.counters.gro_merged == merged
    assert p.drain_server() == data
    assert _acks(p.b_out)[-1] == (p.ta.conn.snd_nxt + len(data)) & 0xFFFFFFFF


def test_the_batch_is_also_flushed_every_rx_batch_bytes() -> None:
    p = _pair()
    p.ifb.rx_batched = True
    mss = p.ta.conn.snd_mss
    p.b.tcp.rx_batch_bytes = 4 * mss
    for i in range(9):
        p.b.ip.input_frame(p.ifb, p.a_frame(i * mss, bytes(mss), partial_csum=False))
    base = p.ta.conn.snd_nxt
    assert _acks(p.b_out) == [(base + 4 * mss) & 0xFFFFFFFF, (base + 8 * mss) & 0xFFFFFFFF]


def _count_parses(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    import chimney.host.ip as host_ip

    parsed = [0]
    real = host_ip.parse_frame

    def counting(*a: object, **kw: object) -> object:
        parsed[0] += 1
        return real(*a, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(host_ip, "parse_frame", counting)
    return parsed


def _complete_sum(frame: bytes) -> int:
    """What TapPort's slab path reports: the one's-complement sum of frame[14:] mod 0xFFFF."""
    body = frame[14:] + (b"\0" if len(frame) & 1 else b"")
    return int.from_bytes(body, "big") % 0xFFFF


def test_header_prediction_hands_a_run_to_gro_without_parsing_and_still_checks_checksums(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    p = _pair()
    p.ifb.rx_batched = True
    data, frames = _gro_frames(p, 20)
    parsed = _count_parses(monkeypatch)
    for f in frames:
        p.b.ip.input_frame_csum(p.ifb, memoryview(f), _complete_sum(f))
    p.b.ip.drain_end()
    assert parsed[0] == 1  # only the first frame of the run was parsed
    assert p.b.tcp.counters.gro_merged == 18 and p.b.tcp.counters.segs_in >= 20
    assert p.drain_server() == data
    assert _acks(p.b_out) == [(p.ta.conn.snd_nxt + len(data)) & 0xFFFFFFFF]


def test_header_prediction_never_passes_a_corrupted_frame() -> None:
    p = _pair()
    p.ifb.rx_batched = True
    mss = p.ta.conn.snd_mss
    data, frames = _gro_frames(p, 10)
    bad = bytearray(frames[5])
    bad[-1] ^= 0xFF  # payload corrupted on the wire: the port's complete sum no longer matches
    frames[5] = bytes(bad)
    for f in frames:
        p.b.ip.input_frame_csum(p.ifb, memoryview(f), _complete_sum(f))
    p.b.ip.drain_end()
    assert p.b.ip.parse_drops.counts.get(DropReason.BAD_TCP_CHECKSUM) == 1
    assert p.drain_server() == data[: 5 * mss]  # 6..9 wait out of order for the retransmission
    assert _acks(p.b_out)[-1] == (p.ta.conn.snd_nxt + 5 * mss) & 0xFFFFFFFF


# -- send: TSO -----------------------------------------------------------------------------------------


def _software_gso(frame: bytes, hdr: VnetHdr) -> list[bytes]:
    """What the kernel does with a TSO super-frame, done independently with scapy: cut the payload into
    gso_size pieces, advance seq (and the IPv4 ID), PSH/FIN on the last piece only, checksum each."""
    pkt = Ether(frame)
    v6 = IPv6 in pkt
    payload = bytes(pkt[TCP].payload)
    out = []
    n = hdr.gso_size
    pieces = [payload[i : i + n] for i in range(0, len(payload), n)]
    for i, piece in enumerate(pieces):
        q = pkt.copy()
        t = q[TCP]
        t.remove_payload()
        t.seq = (pkt[TCP].seq + i * n) & 0xFFFFFFFF
        if i < len(pieces) - 1:
            t.flags = int(t.flags) & ~0x09
        del t.chksum
        if v6:
            del q[IPv6].plen
        else:
            q[IP].id = (pkt[IP].id + i) & 0xFFFF
            del q[IP].len
            del q[IP].chksum
        out.append(bytes(q / Raw(piece)))
    return out


def _wire_segments(tso: bool, ipv6: bool, nbytes: int) -> tuple[list[tuple[int, int, int, int, bytes]], list[VnetHdr],
                                                                   list[bytes], bytes]:
    """A sends `nbytes` to B over the emulated link; returns A's data segments as B receives them
    (seq, ack, flags, window, payload), the TSO headers used, the super-frames and what B read."""
    sched = SimScheduler(seed=9)
    a, b, link = connected_pair(sched, tcp_config=linux_profile(snd_buf=BUF, rcv_buf=BUF), ipv6=ipv6)
    ifa = a.ip.interfaces["eth0"]
    hdrs: list[VnetHdr] = []
    supers: list[bytes] = []
    if tso:
        def transmit_vnet(frame: tuple[bytes | memoryview, ...], hdr: VnetHdr) -> bool:
            # The TSO path hands the link its parts (headers, payload view) for one gathering writev.
            assert type(frame) is tuple, type(frame)
            whole = b"".join(frame)
            hdrs.append(hdr)
            supers.append(whole)
            for piece in _software_gso(whole, hdr):
                link.a.send(piece)
            return True

        ifa.transmit_vnet = transmit_vnet
        ifa.set_offloads(tso=True)
    segs: list[tuple[int, int, int, int, bytes]] = []

    def watch(direction: str, frame: bytes, meta: str | None) -> None:
        f = parse_frame(frame)
        assert isinstance(f, Frame), f  # every frame on the wire has valid checksums
        if direction == "rx" and f.tcp is not None and f.tcp.payload:
            s = f.tcp
            segs.append((s.seq, s.ack, s.flags, s.window, bytes(s.payload)))

    link.b.add_observer(watch)
    lsock = b.listen(5000)
    c = a.socket()
    c.connect(("2001:2::2" if ipv6 else "198.18.0.2", 5000))
    srv, _ = lsock.accept()
    data = random.Random(5).randbytes(nbytes)
    c.setblocking(False)
    sent = 0
    got = bytearray()
    srv.setblocking(False)
    for _ in range(2000):
        if sent < nbytes:
            with contextlib.suppress(BlockingIOError):
                sent += c.send(data[sent:])
        with contextlib.suppress(BlockingIOError):
            got += srv.recv(1 << 20)
        if len(got) == nbytes:
            break
        sched.run_until(sched.now + MS)
    return segs, hdrs, supers, bytes(got)


@pytest.mark.parametrize("ipv6", [False, True], ids=["ipv4", "ipv6"])
def test_tso_super_segments_cut_per_gso_size_equal_what_the_plain_path_sends(ipv6: bool) -> None:
    nbytes = 600_000
    plain, no_hdrs, _, got_plain = _wire_segments(False, ipv6, nbytes)
    tso, hdrs, supers, got_tso = _wire_segments(True, ipv6, nbytes)
    assert no_hdrs == []
    assert got_plain == got_tso and len(got_tso) == nbytes
    assert len(hdrs) >= 5  # slow start grows the flight past two MSS quickly: TSO was really used
    # Same sequence numbers, flags, windows and bytes, segment for segment.
    assert [s[0] for s in tso] == [s[0] for s in plain]
    assert tso == plain
    mss = plain[0][4].__len__()
    l3 = 40 if ipv6 else 20
    for hdr, frame in zip(hdrs, supers, strict=True):
        assert hdr.flags == VIRTIO_NET_HDR_F_NEEDS_CSUM
        assert hdr.gso_type == (VIRTIO_NET_HDR_GSO_TCPV6 if ipv6 else VIRTIO_NET_HDR_GSO_TCPV4)
        assert hdr.gso_size == mss
        assert (hdr.csum_start, hdr.csum_offset) == (14 + l3, 16)
        tcp_hlen = (frame[14 + l3 + 12] >> 4) * 4
        assert hdr.hdr_len == 14 + l3 + tcp_hlen == 14 + l3 + 32  # timestamps only, no SACK blocks
        payload_len = len(frame) - hdr.hdr_len
        assert payload_len > mss and payload_len % mss == 0
        assert parse_frame(frame).reason is DropReason.BAD_TCP_CHECKSUM  # type: ignore[union-attr]
        done = bytearray(frame)
        assert complete_checksum(done, hdr)  # the pseudo-header sum left in place finishes correctly
        assert isinstance(parse_frame(done), Frame)


def test_tso_needs_a_link_that_takes_offload_headers() -> None:
    sched = SimScheduler(seed=1)
    a, _, _ = connected_pair(sched)
    with pytest.raises(ValueError, match="TSO needs"):
        a.ip.interfaces["eth0"].set_offloads(tso=True)


def test_tso_ip_id_runs_stay_in_the_host_half_of_the_id_space() -> None:
    """R-SEND-12: the lower half of the IPv4 ID space is the host's. A TSO frame of 45 segments takes 45
    consecutive IDs (the link numbers the pieces); a run that would cross 0x7FFF restarts at 1."""
    sched = SimScheduler(seed=1)
    a, _, _ = connected_pair(sched)
    ip = a.ip
    ip._ip_id = 0x7FF0
    first = ip.next_ip_ids(45)
    assert first == 1 and ip.next_ip_id() == 46
    ip._ip_id = 100
    assert ip.next_ip_ids(45) == 101 and ip.next_ip_id() == 146


# -- over a real TAP -------------------------------------------------------------------------------------

_ok, _why = kernel_supports_netns()


@pytest.mark.netns
@pytest.mark.skipif(not _ok, reason=_why)
@pytest.mark.timeout(120)
def test_twenty_megabytes_each_way_through_a_vnet_tap_with_every_offload_on() -> None:
    nbytes = 20 << 20
    seed = 21
    timeout_s = 60.0
    with TapTopology.unique("chimney-vn", vnet_hdr=True, offload=TUN_F_DEFAULT) as topo, RealTimeScheduler() as sched:
        stack = HostStack(sched, "ours", tcp_config=linux_profile(snd_buf=4 << 20, rcv_buf=4 << 20))
        port = topo.port(sched)
        iface = stack.attach(port, mac=topo.our_mac, addresses=[f"{topo.our_ip}/24"], name="tap", tso=True)
        assert iface.tso_max > 60000 and iface.rx_csum_offload and iface.rx_gso and iface.rx_batched
        lsock = stack.listen(5002)
        p = topo.ns.python(PEER, "client", topo.our_ip, "5002", str(nbytes), str(seed + 1), "65536", str(timeout_s))
        try:
            async def ours() -> BulkResult:
                s, _ = await lsock.aaccept()
                try:
                    return await bulk_exchange(s, nbytes, seed)
                finally:
                    s.close()

            task = spawn(sched, ours(), name="vnet-bulk")
            sched.run_until(until=sched.now + int(timeout_s * 1e9), predicate=task.done)
            assert task.done(), f"our side did not finish; port {port.counter_dict()}"
            res = task.result()
            deadline = time.monotonic() + 20
            while p.poll() is None and time.monotonic() < deadline:
                sched.run_until(until=sched.now + 20 * MS)
            out, err = p.communicate(timeout=5)
        finally:
            if p.poll() is None:
                p.kill()
                p.wait(5)
        assert p.returncode == 0, err.decode(errors="replace")
        linux = json.loads(out.decode().splitlines()[-1])
        tso_out = stack.tcp.counters.tso_frames_out
        gso_in = stack.ip.counters["gso_frames_in"]
        lsock.close()
    assert (res.sent, res.received, linux["sent"], linux["received"]) == (nbytes,) * 4
    assert res.sent_sha256 == linux["received_sha256"] == bulk_digest(nbytes, seed)
    assert linux["sent_sha256"] == res.received_sha256 == bulk_digest(nbytes, seed + 1)
    assert linux["end"] == "eof"
    # The bytes really went the offload way in both directions.
    assert tso_out > 50 and gso_in > 50, (tso_out, gso_in)


# -- the bulk-transfer costs around the offload path: slow start, send buffering, zero-copy reads -------


def test_linux_slow_start_counts_every_segment_a_stretch_ack_covers() -> None:
    """One ACK for a 45-segment TSO super-segment: Linux (tcp_slow_start) grows cwnd by all 45 segments,
    up to ssthresh with the rest going to congestion avoidance; RFC 3465's L=2 limit grows it by 2."""
    mss = 1448
    linux = make_cc("cubic", mss, 10, linux_profile().abc_limit)
    linux.on_ack(45 * mss, 1_000_000, 0, 45 * mss)
    assert linux.cwnd == 55 * mss
    rfc = make_cc("newreno", mss, 10, TcpConfig().abc_limit)
    rfc.on_ack(45 * mss, 1_000_000, 0, 45 * mss)
    assert rfc.cwnd == 12 * mss
    capped = make_cc("newreno", mss, 10, 0)
    capped.ssthresh = 20 * mss
    capped.on_ack(45 * mss, 1_000_000, 0, 45 * mss)
    # Slow start stops at ssthresh; the 35 segments past it count in avoidance: one cwnd's worth (20) of
    # them grows cwnd by one segment, 15 stay counted towards the next.
    assert capped.cwnd == 21 * mss and capped.bytes_acked == 15 * mss
    with pytest.raises(ValueError):
        TcpConfig(abc_limit=-1).validate()


def _established(sched: SimScheduler) -> tuple[Socket, Socket]:
    a, b, _ = connected_pair(sched, tcp_config=linux_profile(snd_buf=BUF, rcv_buf=BUF))
    lst = b.listen(5300)
    c = a.socket()
    c.setblocking(False)
    c.connect_ex(("198.18.0.2", 5300))
    sched.run_until(sched.now + 100 * MS)
    s, _ = lst.accept()
    return c, s


def test_send_keeps_immutable_bytes_by_reference_and_copies_a_reusable_buffer() -> None:
    """A view of immutable bytes is queued as it is (no copy); a bytearray is copied at send time, so
    what the peer receives is what it held then, whatever the caller writes into it afterwards."""
    sched = SimScheduler(seed=4)
    c, s = _established(sched)
    frozen = bytes(range(256)) * 64
    c.setblocking(True)
    c.sendall(frozen)
    assert c.tcb is not None
    held = c.tcb.conn.sndbuf.views()
    assert held and all(v.obj is frozen for v in held)
    reused = bytearray(b"a" * 5000)
    assert c.send(memoryview(reused)) == 5000
    reused[:] = b"b" * 5000
    assert not any(v.obj is reused for v in c.tcb.conn.sndbuf.views())
    sched.run_until(sched.now + 200 * MS)
    got = bytearray()
    while len(got) < len(frozen) + 5000:
        got += s.recv(1 << 20)
    assert bytes(got) == frozen + b"a" * 5000


def test_recv_view_hands_one_received_segment_at_a_time_and_recv_into_gathers_them() -> None:
    """recv_view never joins: with several segments queued it returns a view of the first alone (a short
    read); recv_into copies segment after segment straight into the caller's buffer."""
    sched = SimScheduler(seed=6)
    c, s = _established(sched)
    c.setblocking(True)
    for i in range(3):
        c.sendall(bytes([65 + i]) * 1000)
        c.setsockopt(6, 1, 1)  # TCP_NODELAY: three separate segments
        sched.run_until(sched.now + 5 * MS)
    sched.run_until(sched.now + 100 * MS)
    first = s.recv_view(1 << 20)
    assert isinstance(first, memoryview) and bytes(first) == b"A" * 1000
    buf = bytearray(4000)
    assert s.recv_into(buf) == 2000
    assert bytes(buf[:2000]) == b"B" * 1000 + b"C" * 1000


# -- header prediction for frames with offload metadata ------------------------------------------------


def _batched_pair() -> Pair:
    """`_pair` whose B interface reports receive drains before the connection exists (as a TAP does), so
    the connection's config owes ACKs to the drain end."""
    sched = SimScheduler(seed=4)
    a, b, _ = connected_pair(sched, tcp_config=linux_profile(snd_buf=BUF, rcv_buf=BUF))
    ifb = b.ip.interfaces["eth0"]
    ifb.rx_batched = True
    ifb.set_offloads(rx_gso=True, rx_csum=True)
    lsock = b.listen(5000)
    client = a.socket()
    client.connect(("198.18.0.2", 5000))
    server, _ = lsock.accept()
    sched.run_until(sched.now + 50 * MS)
    b.ip.drain_end()
    ta = next(iter(a.tcp.conns.values()))
    tb = next(iter(b.tcp.conns.values()))
    out: list[bytes] = []
    ifb.transmit = lambda frame, meta: out.append(bytes(frame))
    return Pair(sched, a, b, client, server, ta, tb, ifb, out)


def test_gso_frames_of_a_known_flow_skip_parsing_and_reach_the_engine_as_parsed_ones(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The first super-frame is parsed and its headers learned; the next ones (same virtio_net_hdr, only
    seq/ID/checksums/TS differing) go straight to the connection. What leaves B is byte for byte what
    the parsing path sends for the same input."""
    wires = []
    for predict in (True, False):
        p = _batched_pair()
        if not predict:
            p.b.ip.tcp_predicted = None
        parsed = _count_parses(monkeypatch)
        mss = p.ta.conn.snd_mss
        data = random.Random(8).randbytes(10 * 4 * mss)
        frames = [p.a_frame(i * 4 * mss, data[i * 4 * mss : (i + 1) * 4 * mss], partial_csum=True, flags=ACK)
                  for i in range(10)]
        hdr = p.vnet_hdr(frames[0], VIRTIO_NET_HDR_F_NEEDS_CSUM, VIRTIO_NET_HDR_GSO_TCPV4, mss)
        for i, f in enumerate(frames):
            p.b.ip.input_frame(p.ifb, memoryview(f), hdr)
            if i % 4 == 3:
                p.b.ip.drain_end()
        p.b.ip.drain_end()
        assert p.drain_server() == data
        c = p.b.ip.counters
        assert (c["gso_frames_in"], c["csum_offloaded_in"]) == (10, 10)
        assert (parsed[0], c["predicted_in"]) == ((1, 9) if predict else (10, 0))
        wires.append(p.b_out)
    assert wires[0] == wires[1] and len(wires[0]) == 3  # one ACK per drain


@pytest.mark.parametrize(
    ("case", "drop"),
    [
        ("IPv4 header checksum wrong", DropReason.BAD_IPV4_CHECKSUM),
        ("checksum offload turned off since", "vnet_csum_offload_not_enabled"),
        ("GSO turned off since", "vnet_gso_not_enabled"),
        ("padded past the IP total length", None),
        ("FIN", None),
        ("another port", None),
    ],
)
def test_a_frame_unlike_the_learned_headers_is_parsed_and_judged_as_usual(
    monkeypatch: pytest.MonkeyPatch, case: str, drop: str | DropReason | None
) -> None:
    p = _batched_pair()
    parsed = _count_parses(monkeypatch)
    mss = p.ta.conn.snd_mss
    first = p.a_frame(0, bytes(2 * mss), partial_csum=True, flags=ACK)
    hdr = p.vnet_hdr(first, VIRTIO_NET_HDR_F_NEEDS_CSUM, VIRTIO_NET_HDR_GSO_TCPV4, mss)
    p.b.ip.input_frame(p.ifb, first, hdr)
    body = random.Random(9).randbytes(2 * mss)
    frame = p.a_frame(2 * mss, body, partial_csum=True, flags=ACK | PSH)
    if case.startswith("IPv4"):
        frame = _corrupt_ip_checksum(frame)
    elif case.startswith("checksum offload"):
        p.ifb.set_offloads(rx_csum=False)
    elif case.startswith("GSO"):
        p.ifb.set_offloads(rx_gso=False)
    elif case.startswith("padded"):
        frame += bytes(4)
    elif case == "FIN":
        frame = p.a_frame(2 * mss, body, partial_csum=True, flags=ACK | FIN)
    else:
        b = bytearray(frame)
        b[36] ^= 0x01  # destination port 5000 -> 5001: nobody listens there
        frame = bytes(b)
    p.b.ip.input_frame(p.ifb, frame, hdr)
    p.b.ip.drain_end()
    assert p.b.ip.counters["predicted_in"] == 0
    # Offload refusals are judged on the header alone, before any parsing.
    assert parsed[0] == (1 if isinstance(drop, str) else 2)
    got = p.drain_server()
    if isinstance(drop, DropReason):
        assert p.b.ip.parse_drops.counts.get(drop) == 1 and got == bytes(2 * mss)
    elif drop is not None:
        assert p.b.ip.drops[drop] == 1 and got == bytes(2 * mss)
    elif case == "another port":
        assert got == bytes(2 * mss) and p.b.tcp.drops["no_socket"] == 1
    else:
        assert got == bytes(2 * mss) + body  # accepted by the ordinary path (padding trimmed, FIN seen)
        assert (case != "FIN") or p.tb.conn.state.name == "CloseWait"


def test_a_connection_on_a_batched_link_owes_its_ack_to_the_drain_end_and_echoes_the_first_timestamp() -> None:
    """Ten segments in one drain: the engine queues no ACK along the way (nothing to coalesce), the drain
    end sends one, and its TSecr is the first unacknowledged segment's TSval (RFC 7323 4.3)."""
    p = _batched_pair()
    assert p.tb.conn.cfg.ack_at_batch_end
    mss = p.ta.conn.snd_mss
    data = random.Random(10).randbytes(10 * mss)
    ca = p.ta.conn
    b = TcpFrameBuilder(p.a.ip.interfaces["eth0"].mac, p.ifb.mac, p.ta.local, p.ta.remote)
    for i in range(10):
        seg = TcpSegment(p.ta.local_port, p.ta.remote_port, (ca.snd_nxt + i * mss) & 0xFFFFFFFF,
                         ca.rcv_nxt & 0xFFFFFFFF, ACK, 4000, data[i * mss : (i + 1) * mss],
                         TcpOptions(None, None, False, (), 1000 + i, ca.ts_recent))
        p.b.ip.input_frame(p.ifb, b.build_frame(seg))
        assert not p.tb.conn._out  # no ACK queued mid-drain
    p.b.ip.drain_end()
    assert len(p.b_out) == 1 and p.b.tcp.counters.acks_coalesced == 0
    f = parse_frame(p.b_out[0])
    assert isinstance(f, Frame) and f.tcp is not None and f.tcp.options is not None
    assert f.tcp.ack == (ca.snd_nxt + len(data)) & 0xFFFFFFFF and f.tcp.options.ts_ecr == 1000
    assert p.drain_server() == data
