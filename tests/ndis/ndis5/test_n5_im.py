"""An NDIS 5 IM between a ring miniport and upper protocols: re-indication and prompt returns (R-N5-13/14)."""

from __future__ import annotations

import random

import pytest
from n5kit import ScriptedProtocol

from chimney.ndis.ndis5.im import ImReturnMode, Ndis5IntermediateDriver
from chimney.ndis.ndis5.packet import NdisPacket, get_packet_status
from chimney.ndis.ndis5.protocols import CopyingProtocol, make_frame
from chimney.ndis.ndis5.rings import RING_CLASSES, RingMiniport
from chimney.ndis.ndis5.wrapper import MiniportKind, Ndis5
from chimney.ndis.status import NdisStatus
from chimney.ndis.verifier import Mode, Verifier
from chimney.sim.scheduler import SimScheduler


class TimedReturns(RingMiniport):
    """A deserialized ring that notes when each descriptor came back."""

    kind = MiniportKind.DESERIALIZED

    def __init__(self) -> None:
        super().__init__("lower", size=8, low_water=0)
        self.return_times: list[int] = []

    def return_packet(self, packet: NdisPacket) -> None:
        self.return_times.append(self.lib.scheduler.now)
        super().return_packet(packet)


def stack(
    mode: ImReturnMode, uppers: int, lower_kind: MiniportKind = MiniportKind.SERIALIZED
) -> tuple[Ndis5, RingMiniport, Ndis5IntermediateDriver]:
    ndis = Ndis5(SimScheduler(2), Verifier(Mode.STRICT))
    lower = RING_CLASSES[lower_kind]("lower", size=8, low_water=0)
    lh = ndis.m_register_miniport(lower)
    im = Ndis5IntermediateDriver(ndis, "im", upper_edges=uppers, mode=mode)
    im.bind_below(lh)
    return ndis, lower, im


def frame(i: int) -> bytes:
    return make_frame(i, 100, random.Random(i))


@pytest.mark.parametrize("mode", list(ImReturnMode))
def test_im_returns_the_lower_packet_when_the_last_upper_protocol_returns(mode: ImReturnMode) -> None:
    ndis, lower, im = stack(mode, uppers=2)
    ups = [ScriptedProtocol(f"up{i}", lambda pk: 1) for i in range(2)]
    for up, h in zip(ups, im.edge_handles):
        ndis.open_adapter(up, h)
    lower.receive_frames([frame(1)])
    assert [u.got for u in ups] == [[frame(1)], [frame(1)]]
    assert lower.free_count == 7  # the lower packet is still lent (through the IM)
    ups[0].return_packets(ups[0].packets)
    assert lower.free_count == 7
    assert im.lower_returns == (1 if mode is ImReturnMode.COUNT else 0)
    ups[1].return_packets(ups[1].packets)
    assert lower.free_count == 8
    assert lower.counters.returned_via_return_packet == 1
    assert im.pool.in_use == 0


def test_r_n5_14_im_returns_at_the_moment_the_upper_protocol_does() -> None:
    ndis = Ndis5(SimScheduler(4), Verifier(Mode.STRICT))
    lower = TimedReturns()
    im = Ndis5IntermediateDriver(ndis, "im", upper_edges=1)
    im.bind_below(ndis.m_register_miniport(lower))
    up = ScriptedProtocol("up", lambda pk: 1)
    ndis.open_adapter(up, im.edge_handles[0])
    lower.receive_frames([frame(1), frame(2)])
    up.call_later(70_000, up.return_packets, [up.packets[0]])
    up.call_later(90_000, up.return_packets, [up.packets[1]])
    ndis.scheduler.run_until()
    assert lower.return_times == [70_000, 90_000]


@pytest.mark.parametrize("mode", list(ImReturnMode))
def test_r_n5_13_im_never_returns_inside_its_receive_packet(mode: ImReturnMode) -> None:
    """Upper protocols that copy give the IM's packet back inside the re-indication; the IM then
    returns 0 instead of calling NdisReturnPackets from within ProtocolReceivePacket."""
    ndis, lower, im = stack(mode, uppers=3, lower_kind=MiniportKind.DESERIALIZED)
    ups = [CopyingProtocol(f"up{i}") for i in range(3)]
    for up, h in zip(ups, im.edge_handles):
        ndis.open_adapter(up, h)
    lower.receive_frames([frame(i) for i in range(4)])  # strict verifier: R-N5-13 would raise
    assert [len(u.seen) for u in ups] == [4, 4, 4]
    assert im.lower_returns == 0
    assert lower.counters.returned_via_return_packet == 4  # NDIS returned them (deserialized)
    assert lower.free_count == 8


def test_im_passes_resources_up_and_returns_zero() -> None:
    ndis, lower, im = stack(ImReturnMode.TRACK, uppers=1)
    lower.low_water = 8  # every packet goes up with RESOURCES
    seen: list[int] = []
    up = ScriptedProtocol("up", lambda pk: seen.append(get_packet_status(pk)) or 0)
    ndis.open_adapter(up, im.edge_handles[0])
    lower.receive_frames([frame(1)])
    assert seen == [NdisStatus.RESOURCES]
    assert lower.counters.reclaimed_resources == 1 and lower.free_count == 8
    assert im.pool.in_use == 0


def test_im_in_count_mode_promises_one_return_per_upper_protocol_that_kept_it() -> None:
    ndis, lower, im = stack(ImReturnMode.COUNT, uppers=3, lower_kind=MiniportKind.DESERIALIZED)
    ups = [ScriptedProtocol(f"up{i}", (lambda pk: 1) if i != 1 else None) for i in range(3)]
    for up, h in zip(ups, im.edge_handles):
        ndis.open_adapter(up, h)
    lower.receive_frames([frame(7)])
    lp = lower._slots[0].packet
    assert lp._refs == 2  # up0 and up2 kept it; up1 copied and gave it back at once
    ups[2].return_packets(ups[2].packets)
    ups[0].return_packets(ups[0].packets)
    assert im.lower_returns == 2 and lower.free_count == 8
