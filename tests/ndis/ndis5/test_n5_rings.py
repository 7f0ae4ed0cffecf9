"""Example receive rings: descriptors are recycled (not freed), lengths restored, OOB zeroed, RESOURCES when low."""

from __future__ import annotations

import random
import zlib

import pytest
from n5kit import ScriptedProtocol

from chimney.ndis.ndis5.packet import (
    get_packet_media_specific_info,
    get_packet_status,
    oob_data_from_packet,
    packet_buffers,
)
from chimney.ndis.ndis5.protocols import RetainingProtocol, make_frame
from chimney.ndis.ndis5.rings import ETH_HEADER, FREE, RING_CLASSES, RingError, RingMiniport
from chimney.ndis.ndis5.wrapper import MiniportKind, Ndis5
from chimney.ndis.status import NdisStatus
from chimney.ndis.verifier import Mode, Verifier
from chimney.sim.scheduler import SimScheduler

KINDS = list(MiniportKind)


def ring_system(
    kind: MiniportKind, size: int = 8, low_water: int = 0, protocols: int = 1, keep: bool = True
) -> tuple[Ndis5, RingMiniport, list[ScriptedProtocol]]:
    ndis = Ndis5(SimScheduler(3), Verifier(Mode.STRICT))
    ring = RING_CLASSES[kind]("nic", size=size, low_water=low_water)
    h = ndis.m_register_miniport(ring)
    protos = []
    for i in range(protocols):
        proto = ScriptedProtocol(f"p{i}", (lambda pk: 0 if get_packet_status(pk) == NdisStatus.RESOURCES else 1) if keep else None)
        b = ndis.open_adapter(proto, h)
        if kind is MiniportKind.CONNECTION_ORIENTED:
            ndis.co_create_vc(b)
        protos.append(proto)
    return ndis, ring, protos


def frames(n: int, size: int = 200, seed: int = 0) -> list[bytes]:
    rng = random.Random(seed)
    return [make_frame(i, size, rng) for i in range(n)]


@pytest.mark.parametrize("kind", KINDS)
def test_return_packet_restores_lengths_zeroes_oob_and_rechains(kind: MiniportKind) -> None:
    _ndis, ring, (proto,) = ring_system(kind)
    slot = ring._slots[0]
    originals = [b.byte_count for b in slot.buffers]
    ring.receive_frames([b"\x02" * 12 + b"\x81\x00" + b"\xa0\x05" + b"vlan-tagged payload"])
    p = proto.packets[0]
    assert p is slot.packet
    with proto.running():
        # indicated: data buffer shortened to the frame, OOB carries header size and 802.1p priority
        assert [b.byte_count for b in packet_buffers(p)] == [ETH_HEADER, 21]
        assert get_packet_media_specific_info(p) == (5, 4)
    proto.return_packets([p])
    assert ring.counters.returned_via_return_packet == 1
    with ring.running():
        assert packet_buffers(p) == list(slot.buffers)  # same descriptors, same order
        assert [b.byte_count for b in slot.buffers] == originals
        assert oob_data_from_packet(p).is_zero()
    assert ring.counters.lengths_restored == 1
    assert slot.state == FREE and ring.free_count == ring.size


@pytest.mark.parametrize("kind", KINDS)
def test_descriptors_are_reused_not_reallocated(kind: MiniportKind) -> None:
    _ndis, ring, protos = ring_system(kind, size=4, protocols=2)
    for round_ in range(10):
        ring.receive_frames(frames(3, seed=round_))
        for proto in protos:
            with proto.running():
                held = [p for p in proto.packets]
            proto.packets.clear()
            if held:
                proto.return_packets(held)
    c = ring.counters
    assert c.packets_indicated == 30
    assert c.recycled == 30
    assert c.pool_allocations == 4  # only at MiniportInitialize
    assert ring.packet_pool.allocations == 4
    assert ring.free_count == 4


@pytest.mark.parametrize("kind", [MiniportKind.SERIALIZED, MiniportKind.DESERIALIZED])
def test_below_low_water_the_rest_of_the_array_goes_up_with_resources(kind: MiniportKind) -> None:
    """§6.28: once the ring runs low mid-array, every remaining packet is marked RESOURCES."""
    _ndis, ring, (proto,) = ring_system(kind, size=8, low_water=4)
    ring.receive_frames(frames(6))
    S, R = NdisStatus.SUCCESS, NdisStatus.RESOURCES
    assert proto.statuses == [S, S, S, S, R, R]
    c = ring.counters
    assert (c.resources_indications, c.reclaimed_resources) == (2, 2)
    # RESOURCES descriptors were taken back at once; the 4 kept ones are still out
    assert ring.free_count == 4
    assert proto.got[4][ETH_HEADER:ETH_HEADER + 4] == (4).to_bytes(4, "big")
    proto.return_packets(proto.packets[:4])
    assert ring.free_count == 8 and c.returned_via_return_packet == 4


def test_co_ring_spreads_frames_over_vcs() -> None:
    _ndis, ring, protos = ring_system(MiniportKind.CONNECTION_ORIENTED, size=8, protocols=2, keep=False)
    ring.receive_frames(frames(4))
    assert [len(p.got) for p in protos] == [2, 2]
    assert ring.counters.indications == 2
    assert ring.free_count == 8


def test_frames_that_do_not_fit_and_an_empty_ring_are_counted_drops() -> None:
    _ndis, ring, (_proto,) = ring_system(MiniportKind.SERIALIZED, size=2)
    assert ring.receive_frames([b"short", b"x" * 2000]) == 0
    assert ring.receive_frames(frames(3)) == 2
    assert ring.drop_reasons == {"bad frame length": 2, "ring empty": 1}
    assert ring.counters.frames_dropped == 3


def test_a_descriptor_that_was_not_lent_cannot_come_back() -> None:
    _ndis, ring, _ = ring_system(MiniportKind.DESERIALIZED)
    with pytest.raises(RingError):
        ring.return_packet(ring._slots[0].packet)
    assert ring.counters.duplicates == 1


@pytest.mark.parametrize("kind", KINDS)
def test_retained_data_is_intact_until_returned(kind: MiniportKind) -> None:
    """A protocol reading kept packets much later sees its own frames: nothing was recycled early."""
    sched = SimScheduler(11)
    ndis = Ndis5(sched, Verifier(Mode.STRICT))
    ring = RING_CLASSES[kind]("nic", size=6, low_water=2)
    h = ndis.m_register_miniport(ring)
    proto = RetainingProtocol("keeper", random.Random(5), 0.8, (50_000, 900_000), max_promise=2)
    b = ndis.open_adapter(proto, h)
    if kind is MiniportKind.CONNECTION_ORIENTED:
        ndis.co_create_vc(b)
    sent = frames(60, size=300, seed=9)

    for i in range(0, 60, 3):
        sched.call_at(i * 30_000, ring.receive_frames, sent[i : i + 3])
    sched.run_until()
    delivered = dict(proto.seen)
    # every indicated frame is seen once, with its own bytes: an early recycle would overwrite a kept
    # frame with a later one, showing up as a repeat and a missing sequence number
    assert proto.repeats == 0
    assert len(delivered) == ring.counters.packets_indicated == 60 - ring.counters.frames_dropped
    assert all(zlib.crc32(sent[s]) == c for s, c in delivered.items())
    assert ring.free_count == ring.size and ring.counters.recycled == ring.counters.packets_indicated
    assert proto.retained > 0 and ring.counters.resources_indications > 0
