"""NDIS 5 send side for completeness: per-packet Status from MiniportSendPackets (R-N5-19), deserialized
miniports completing asynchronously (R-N5-18)."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from n5kit import PENDING, RESOURCES, SUCCESS, ManualMiniport, ScriptedProtocol, system

from chimney.ndis.ndis5.packet import NdisPacket, PacketState, set_packet_status
from chimney.ndis.ndis5.wrapper import MiniportKind, Ndis5
from chimney.ndis.status import NdisStatus
from chimney.ndis.verifier import ContractViolation, Mode

FAILURE = NdisStatus.FAILURE


class Sender(ManualMiniport):
    """MiniportSendPackets driven by a script: `plan(packet_array)` sets statuses / completes."""

    def __init__(self, kind: MiniportKind, plan: Callable[[Sender, list[NdisPacket]], None]) -> None:
        super().__init__("tx", kind)
        self.plan = plan
        self.calls: list[list[NdisPacket]] = []

    def send_packets(self, packet_array: list[NdisPacket]) -> None:
        self.calls.append(list(packet_array))
        self.plan(self, packet_array)


class Client(ScriptedProtocol):
    def __init__(self) -> None:
        super().__init__("client")
        self.completed: list[tuple[NdisPacket, int]] = []

    def send_complete(self, packet: NdisPacket, status: int) -> None:
        self.completed.append((packet, status))


def setup(kind: MiniportKind, plan: Callable[[Sender, list[NdisPacket]], None], mode: Mode = Mode.STRICT) -> tuple[Ndis5, Sender, Client, list[NdisPacket]]:
    ndis = system(mode)
    m = Sender(kind, plan)
    h = ndis.m_register_miniport(m)
    c = Client()
    ndis.open_adapter(c, h)
    packets = [m.make(b"H" * 14 + bytes([i]), status=None) for i in range(4)]
    return ndis, m, c, packets


def statuses(*codes: int) -> Callable[[Sender, list[NdisPacket]], None]:
    it = iter(codes)

    def plan(m: Sender, arr: list[NdisPacket]) -> None:
        for p in arr:
            set_packet_status(p, next(it))

    return plan


def test_r_n5_19_serialized_per_packet_status() -> None:
    ndis, m, c, pk = setup(MiniportKind.SERIALIZED, statuses(SUCCESS, PENDING, FAILURE))
    c.send_packets(pk[:3])
    assert c.completed == [(pk[0], SUCCESS), (pk[2], FAILURE)]
    assert pk[1].state == PacketState.SENDING
    assert m.handle is not None
    ndis.m_send_complete(m.handle, pk[1], SUCCESS)
    assert c.completed[-1] == (pk[1], SUCCESS)
    assert all(p.state == PacketState.OWNED for p in pk[:3])


def test_r_n5_19_status_must_be_set_before_returning() -> None:
    _ndis, _m, c, pk = setup(MiniportKind.SERIALIZED, lambda m, arr: None)
    with pytest.raises(ContractViolation) as e:
        c.send_packets(pk[:1])
    assert e.value.rule_id == "R-N5-19"


def test_r_n5_19_resources_requeues_that_packet_and_all_later_ones() -> None:
    ndis, m, c, pk = setup(MiniportKind.SERIALIZED, statuses(SUCCESS, RESOURCES, SUCCESS, SUCCESS, SUCCESS, SUCCESS, SUCCESS))
    c.send_packets(pk)
    assert c.completed == [(pk[0], SUCCESS)]  # pk[2] said SUCCESS but is requeued behind pk[1]
    assert m.handle is not None and m.handle.sends_requeued == 3
    ndis.m_send_resources_available(m.handle)
    assert m.calls[1] == pk[1:]  # resent in the original order
    assert [p for p, _ in c.completed] == pk


def test_r_n5_19_pending_after_resources_is_a_violation() -> None:
    _ndis, _m, c, pk = setup(MiniportKind.SERIALIZED, statuses(RESOURCES, PENDING))
    with pytest.raises(ContractViolation) as e:
        c.send_packets(pk[:2])
    assert e.value.rule_id == "R-N5-19"


def test_r_n5_19_requeued_sends_retry_after_a_completion() -> None:
    ndis, m, c, pk = setup(MiniportKind.SERIALIZED, statuses(PENDING, RESOURCES, SUCCESS))
    c.send_packets(pk[:2])
    assert m.handle is not None
    ndis.m_send_complete(m.handle, pk[0], SUCCESS)
    ndis.scheduler.run_until()
    assert [p for p, _ in c.completed] == [pk[0], pk[1]]


@pytest.mark.parametrize("case", ["twice", "never sent", "not pending"])
def test_r_n5_19_send_complete_only_for_pending_packets(case: str) -> None:
    ndis, m, c, pk = setup(MiniportKind.SERIALIZED, statuses(PENDING, SUCCESS))
    assert m.handle is not None
    c.send_packets(pk[:1])
    if case == "twice":
        ndis.m_send_complete(m.handle, pk[0], SUCCESS)
        target = pk[0]
    elif case == "never sent":
        target = pk[3]
    else:
        c.send_packets(pk[1:2])  # completed at once with SUCCESS
        target = pk[1]
    with pytest.raises(ContractViolation) as e:
        ndis.m_send_complete(m.handle, target, SUCCESS)
    assert e.value.rule_id == "R-N5-19"


def test_r_n5_18_deserialized_miniport_completing_inside_send_packets() -> None:
    def sync(m: Sender, arr: list[NdisPacket]) -> None:
        assert m.handle is not None
        m.lib.m_send_complete(m.handle, arr[0], SUCCESS)

    _ndis, _m, c, pk = setup(MiniportKind.DESERIALIZED, sync)
    with pytest.raises(ContractViolation) as e:
        c.send_packets(pk[:2])
    assert e.value.rule_id == "R-N5-18"


@pytest.mark.parametrize("kind", [MiniportKind.DESERIALIZED, MiniportKind.CONNECTION_ORIENTED])
def test_r_n5_18_deserialized_miniport_queues_and_completes_later(kind: MiniportKind) -> None:
    def queue(m: Sender, arr: list[NdisPacket]) -> None:
        for i, p in enumerate(arr):
            m.call_later(1000 * (len(arr) - i), m.lib.m_send_complete, m.handle, p, SUCCESS)

    ndis, m, c, pk = setup(kind, queue)
    c.send_packets(pk)
    assert c.completed == []
    ndis.scheduler.run_until()
    assert [p for p, _ in c.completed] == list(reversed(pk))
    assert m.handle is not None and m.handle.sends_completed == 4 and not m.handle.sends_pending


def test_sending_a_packet_twice_is_refused() -> None:
    _ndis, _m, c, pk = setup(MiniportKind.SERIALIZED, statuses(PENDING))
    c.send_packets(pk[:1])
    from chimney.ndis.ndis5.wrapper import Ndis5UsageError

    with pytest.raises(Ndis5UsageError):
        c.send_packets(pk[:1])
