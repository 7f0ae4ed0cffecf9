"""Review of session 3's receive-path speed-ups (vnet header prediction, ack_at_batch_end, rx buffer pool,
slab sums): regression tests for what the review found (all fixed)."""

from __future__ import annotations

import ipaddress
import random
import socket
from collections.abc import Iterator

import pytest
from test_host_vnet import Pair, _batched_pair

from chimney.host.interface import Interface
from chimney.links.rxpool import RxBufferPool
from chimney.links.tap import TapPort
from chimney.links.vnet import (
    VIRTIO_NET_HDR_F_NEEDS_CSUM,
    VIRTIO_NET_HDR_GSO_TCPV4,
    ones_complement_sum,
)
from chimney.net.frame import Frame, TcpFrameBuilder, parse_frame
from chimney.net.tcp import ACK, TcpOptions, TcpSegment

BUF = 1 << 20
MS = 1_000_000


# -- 1. vnet header prediction must judge a frame as the parsing path would -----------------------------

_CHANGES = ("interface moved to VLAN 7", "our address removed", "interface MAC changed", "TCP handler replaced")


def _change(p: Pair, case: str, seen: list[object]) -> None:
    """A configuration change after the flow's headers were learned; for each, the parsing path no longer
    hands the flow's next frame to TCP."""
    if case.startswith("interface moved"):
        p.ifb.vlan_id = 7  # as conformance scenario 'vlan' does on a live interface
    elif case.startswith("our address"):
        p.ifb.ipv4.remove(ipaddress.IPv4Interface("198.18.0.2/24"))
    elif case.startswith("interface MAC"):
        p.ifb.mac = bytes.fromhex("020000000099")
    else:
        # A "drop all TCP" filter put in front of the transport (the way test_tcp_transport's ICMP reject does).
        p.b.ip.protocols[6] = lambda f, iface: seen.append(f)


def _frames_after_change(case: str, predict: bool) -> tuple[bytes, list[object], Pair]:
    """The flow's first frame is parsed (headers learned), the configuration changes, two more frames of
    the flow arrive in separate drains (the second one after any re-learning the first may cause)."""
    p = _batched_pair()
    if not predict:
        p.b.ip.tcp_predicted = None
    mss = p.ta.conn.snd_mss
    first = p.a_frame(0, bytes(2 * mss), partial_csum=True, flags=ACK)
    hdr = p.vnet_hdr(first, VIRTIO_NET_HDR_F_NEEDS_CSUM, VIRTIO_NET_HDR_GSO_TCPV4, mss)
    p.b.ip.input_frame(p.ifb, memoryview(first), hdr)  # parsed; its headers are learned
    p.b.ip.drain_end()
    rng = random.Random(5)
    later = [p.a_frame((2 + 2 * i) * mss, rng.randbytes(2 * mss), partial_csum=True, flags=ACK) for i in range(2)]  # sent before the change
    seen: list[object] = []
    _change(p, case, seen)
    for f in later:
        p.b.ip.input_frame(p.ifb, memoryview(f), hdr)
        p.b.ip.drain_end()
    return p.drain_server(), seen, p


@pytest.mark.parametrize("case", _CHANGES)
def test_the_parsing_path_stops_delivering_a_flow_after_a_configuration_change(case: str) -> None:
    """Reference behaviour (prediction off): no frame after the change reaches the connection."""
    got, seen, p = _frames_after_change(case, predict=False)
    mss = p.ta.conn.snd_mss
    assert got == bytes(2 * mss)
    assert p.b.ip.counters["predicted_in"] == 0
    if case == "TCP handler replaced":
        assert len(seen) == 2
    else:
        assert sum(p.b.ip.drops.values()) == 2


@pytest.mark.parametrize("case", _CHANGES)
def test_header_prediction_stops_delivering_a_flow_after_a_configuration_change(case: str) -> None:
    """Each change makes the parsing path drop (or hand elsewhere) the flow's frames: a header prediction
    learned before the change must not deliver them either, nor re-learn and deliver the next one."""
    got, seen, p = _frames_after_change(case, predict=True)
    mss = p.ta.conn.snd_mss
    assert got == bytes(2 * mss)
    assert p.b.ip.counters["predicted_in"] == 0
    assert len(seen) == (2 if case == "TCP handler replaced" else 0)


# -- 2. ack_at_batch_end: an ACK the engine owes must not wait for a drain that never comes ----------------


_VIA = ("HostPath.input (upload replay)", "TcpTransport.input from a non-batched interface")


def _two_full_segments(p: Pair, via: str) -> None:
    """Two in-order full-sized segments outside any drain: the way OffloadManager._resume_host feeds the
    segments held during an upload (HostPath.input), or a segment that arrives on another interface
    than the batched one the connection's cfg was computed for (multi-homed host, route moved by
    Tcb.refresh_path, which does not recompute cfg)."""
    ca = p.ta.conn
    mss = ca.snd_mss
    other = Interface("eth9", bytes.fromhex("020000000009"))  # rx_batched False: a plain link
    for i in range(2):
        seg = TcpSegment(p.ta.local_port, p.ta.remote_port, (ca.snd_nxt + i * mss) & 0xFFFFFFFF,
                         ca.rcv_nxt & 0xFFFFFFFF, ACK, 4000, bytes(mss),
                         TcpOptions(None, None, False, (), 500 + i, ca.ts_recent))
        if via.startswith("HostPath"):
            p.tb.path.input(seg, None)
        else:
            b = TcpFrameBuilder(p.a.ip.interfaces["eth0"].mac, p.ifb.mac, p.ta.local, p.ta.remote)
            f = parse_frame(b.build_frame(seg))
            assert isinstance(f, Frame)
            p.b.tcp.input(f, other)


@pytest.mark.parametrize("via", _VIA)
def test_two_full_segments_outside_a_drain_are_acked_at_once_without_batching(via: str) -> None:
    """Reference: with ack_at_batch_end off the second full segment is acknowledged at once (RFC 9293
    3.8.6.3 / RFC 5681 4.2: at least every second full-sized segment)."""
    p = _batched_pair()
    p.tb.conn.cfg = p.tb.conn.cfg.replace(ack_at_batch_end=False)
    _two_full_segments(p, via)
    assert len(p.b_out) == 1


@pytest.mark.parametrize("via", _VIA)
def test_two_full_segments_outside_a_drain_are_acked_at_once_on_a_batched_connection(via: str) -> None:
    p = _batched_pair()
    assert p.tb.conn.cfg.ack_at_batch_end
    _two_full_segments(p, via)
    assert len(p.b_out) == 1


@pytest.mark.parametrize("via", _VIA)
def test_owed_ack_is_still_sent_by_the_delayed_ack_timer_when_no_drain_comes(via: str) -> None:
    """Bounded damage: the ACK is late at worst (delayed-ACK timeout), never lost, and echoes the right
    timestamp."""
    p = _batched_pair()
    _two_full_segments(p, via)
    p.sched.run_until(p.sched.now + p.tb.conn.cfg.delack_timeout_ns + MS)
    assert len(p.b_out) == 1
    f = parse_frame(p.b_out[0])
    assert isinstance(f, Frame) and f.tcp is not None and f.tcp.options is not None
    assert f.tcp.ack == (p.ta.conn.snd_nxt + 2 * p.ta.conn.snd_mss) & 0xFFFFFFFF
    assert f.tcp.options.ts_ecr == 500  # RFC 7323 4.3: the earliest unacknowledged segment's TSval


# -- 3. RxBufferPool: a buffer is reused only when nothing refers to it ---------------------------------


def test_a_pooled_buffer_is_not_handed_out_while_any_view_numpy_array_or_slice_of_it_lives() -> None:
    np = pytest.importorskip("numpy")
    pool = RxBufferPool(64, 64 * 8)
    holders: list[object] = []
    seen: set[int] = set()
    for k in range(6):
        b = pool.take()
        assert id(b) not in seen
        seen.add(id(b))
        mv = memoryview(b)[8:40]
        kind = k % 3
        holders.append(mv[4:10] if kind == 0 else np.frombuffer(mv, np.uint8)[2:] if kind == 1 else mv.cast("B"))
        del b, mv
    assert pool.in_use() == 6
    holders.clear()
    assert pool.in_use() == 0
    assert id(pool.take()) in seen and pool.reused == 1


def test_the_free_reference_count_is_measured_in_the_shape_take_uses() -> None:
    pool = RxBufferPool(16, 16 * 2)
    b = pool.take()
    # The caller's own reference keeps it lent out; dropping it frees the buffer for the next take.
    assert pool.in_use() == 1 and pool.take() is not b
    del b
    assert pool.in_use() == 0


# -- 4. Slab receive (csum receiver): a frame that ends exactly at the end of the summed words -----------


class _DgramTap:
    """Just enough of a TapDevice for TapPort's plain slab drain: a datagram socket keeps frame
    boundaries as the TAP fd does (no netns or privileges needed)."""

    def __init__(self, fd: int, mtu: int) -> None:
        self.name = "review0"
        self.mtu = mtu
        self.vnet_hdr_sz = 0
        self.fd = fd
        self.read_size = mtu + 14 + 4 + 1  # TapDevice._size_buffers: largest tagged frame + 1
        self.closed = False
        self.offload = 0

    def fileno(self) -> int:
        return self.fd


@pytest.fixture
def dgram() -> Iterator[tuple[socket.socket, socket.socket]]:
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    a.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 20)
    a.setblocking(False)
    b.setblocking(False)
    yield a, b
    a.close()
    b.close()


def _slab_receive(dgram: tuple[socket.socket, socket.socket], mtu: int, count: int) -> list[tuple[bytes, int]]:
    pytest.importorskip("numpy")
    a, b = dgram
    dev = _DgramTap(b.fileno(), mtu)
    port = TapPort(dev, None, start=False)  # type: ignore[arg-type]
    got: list[tuple[bytes, int]] = []
    port.set_receiver(lambda frame: None)
    assert port.set_csum_receiver(lambda frame, csum: got.append((bytes(frame), csum)))
    # The largest legal frame: 802.1Q-tagged, mtu + 18 bytes (links.base.max_frame_len).
    rng = random.Random(mtu)
    frames = [bytes(12) + b"\x81\x00" + rng.randbytes(mtu + 4) for _ in range(count)]
    for f in frames:
        a.send(f)
    assert port.poll() == count
    assert [f for f, _ in got] == frames
    return got


@pytest.mark.parametrize("count", [1, 29])
def test_slab_drain_sums_the_largest_tagged_frame_on_an_even_read_size(
    dgram: tuple[socket.socket, socket.socket], count: int
) -> None:
    """MTU 9000: read_size 9019 is odd, the slot has a spare byte past every frame."""
    for frame, csum in _slab_receive(dgram, 9000, count):
        assert csum == ones_complement_sum(frame[14:]) % 0xFFFF


@pytest.mark.parametrize("count", [1, 29])
def test_slab_drain_sums_the_largest_tagged_frame_on_an_odd_mtu(
    dgram: tuple[socket.socket, socket.socket], count: int
) -> None:
    """MTU 9001 (a jumbo MTU some clouds use): read_size 9020, slot 9020, the largest frame 9019 bytes."""
    for frame, csum in _slab_receive(dgram, 9001, count):
        assert csum == ones_complement_sum(frame[14:]) % 0xFFFF


def test_an_address_swapped_in_place_is_no_longer_ours() -> None:
    """Interface.has_address caches a set of packed addresses: replacing one address by another in the public
    list (same length) must refresh it."""
    iface = Interface("eth0", bytes.fromhex("020000000001"))
    iface.ipv4.append(ipaddress.IPv4Interface("198.18.0.2/24"))
    assert iface.has_address(bytes([198, 18, 0, 2]))
    iface.ipv4[0] = ipaddress.IPv4Interface("198.18.0.3/24")
    assert not iface.has_address(bytes([198, 18, 0, 2])) and iface.has_address(bytes([198, 18, 0, 3]))
