"""NDIS 6 non-offload receive path: 1-3 bound protocols, some keeping NBLs, with and without
NDIS_RECEIVE_FLAGS_RESOURCES; every NBL returns to the miniport exactly once and none leaks; the
example receive ring recycles its NBLs (R-NBL-02 for bad returns)."""

from __future__ import annotations

import random
from collections import Counter
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from test_core_doubles import RecordingMiniport, Stack, chain, make_nbls

from chimney.ndis.core import Adapter, Ndis
from chimney.ndis.receive import NDIS_RECEIVE_FLAGS_RESOURCES, Ndis6ReceiveRing
from chimney.ndis.status import NdisStatus
from chimney.ndis.verifier import ContractViolation, Mode, Verifier
from chimney.sim.scheduler import SimScheduler


def keepers(s: Stack, pattern: list[bool]) -> None:
    for proto, keep in zip(s.protos, pattern):
        proto.keep_received = keep


@pytest.mark.parametrize(
    "pattern",
    [[False], [True], [False, False], [True, False], [True, True], [False, True, False], [True, True, True]],
)
def test_every_nbl_returns_to_the_miniport_once_after_every_protocol_returned(pattern: list[bool]) -> None:
    s = Stack(0, protocols=len(pattern))
    keepers(s, pattern)
    nbls = make_nbls("nic", 5)
    s.ndis.m_indicate_receive_net_buffer_lists(s.adapter, chain(*nbls), 0, 5, 0)
    for proto in s.protos:
        assert proto.received == nbls and proto.copies == [n.first_net_buffer.copy_data() for n in nbls]
    if any(pattern):
        assert s.mp.returned == []  # somebody still holds them
        for proto in s.protos:
            if proto.kept:
                proto.return_kept(list(reversed(proto.kept)))
    assert Counter(n.serial for n in s.mp.returned) == Counter(n.serial for n in nbls)
    assert all(n.owner == "nic" for n in nbls)
    assert s.adapter.rx_refs == {}
    assert s.verifier.violations == []


def test_partial_returns_release_only_fully_returned_nbls() -> None:
    s = Stack(0, protocols=2, keep_received=True)
    nbls = make_nbls("nic", 4)
    s.ndis.m_indicate_receive_net_buffer_lists(s.adapter, chain(*nbls), 0, 4, 0)
    s.protos[0].return_kept([nbls[0], nbls[2]])
    assert s.mp.returned == []
    s.protos[1].return_kept([nbls[2], nbls[3]])
    assert s.mp.returned == [nbls[2]]
    assert nbls[0].owner == "tcpip1" and nbls[3].owner == "tcpip"  # the one remaining holder
    s.protos[0].return_kept()
    s.protos[1].return_kept()
    assert sorted(n.serial for n in s.mp.returned) == sorted(n.serial for n in nbls)


@pytest.mark.parametrize("protocols", [1, 2, 3])
def test_resources_flag_keeps_ownership_at_the_miniport(protocols: int) -> None:
    s = Stack(0, protocols=protocols, keep_received=True)
    nbls = make_nbls("nic", 3)
    s.ndis.m_indicate_receive_net_buffer_lists(s.adapter, chain(*nbls), 0, 3, NDIS_RECEIVE_FLAGS_RESOURCES)
    for proto in s.protos:
        assert proto.received == nbls and proto.kept == [] and len(proto.copies) == 3
        assert proto.received_flags == [NDIS_RECEIVE_FLAGS_RESOURCES]
    assert s.mp.returned == [] and s.adapter.rx_refs == {}
    assert all(n.owner == "nic" for n in nbls)
    assert [n.next for n in nbls] == [nbls[1], nbls[2], None]  # chain intact for the miniport


def test_returning_an_nbl_indicated_with_resources_is_a_violation() -> None:
    s = Stack(0)
    nbls = make_nbls("nic", 1)
    s.ndis.m_indicate_receive_net_buffer_lists(s.adapter, nbls[0], 0, 1, NDIS_RECEIVE_FLAGS_RESOURCES)
    with pytest.raises(ContractViolation) as e:
        s.ndis.return_net_buffer_lists(s.binding, nbls[0])
    assert e.value.rule_id == "R-NBL-02"


def test_passing_on_an_nbl_indicated_with_resources_is_a_violation() -> None:
    s = Stack(0)
    proto = s.proto

    def greedy(binding_context: Any, nbl: Any, port: int, num: int, flags: int) -> None:
        nbl.owner = "somewhere-else"  # what a retaining protocol's later hand-off would do

    proto.receive_net_buffer_lists = greedy  # type: ignore[method-assign]
    with pytest.raises(ContractViolation) as e:
        s.ndis.m_indicate_receive_net_buffer_lists(s.adapter, make_nbls("nic", 1)[0], 0, 1, NDIS_RECEIVE_FLAGS_RESOURCES)
    assert e.value.rule_id == "R-NBL-02"


def test_return_of_an_nbl_never_indicated_and_double_return() -> None:
    s = Stack(0, keep_received=True)
    with pytest.raises(ContractViolation) as e:
        s.ndis.return_net_buffer_lists(s.binding, make_nbls("tcpip", 1)[0])
    assert e.value.rule_id == "R-NBL-02"
    n = make_nbls("nic", 1)[0]
    s.ndis.m_indicate_receive_net_buffer_lists(s.adapter, n, 0, 1, 0)
    s.ndis.return_net_buffer_lists(s.binding, n)
    with pytest.raises(ContractViolation) as e:
        s.ndis.return_net_buffer_lists(s.binding, n)
    assert e.value.rule_id == "R-NBL-02"
    assert s.mp.returned == [n]


def test_indicating_an_nbl_the_miniport_does_not_own() -> None:
    s = Stack(0)
    with pytest.raises(ContractViolation) as e:
        s.ndis.m_indicate_receive_net_buffer_lists(s.adapter, make_nbls("tcpip", 1)[0], 0, 1, 0)
    assert e.value.rule_id == "R-NBL-02"


def test_wrong_number_of_nbls_is_a_clear_error() -> None:
    s = Stack(0)
    with pytest.raises(ValueError, match="NumberOfNetBufferLists"):
        s.ndis.m_indicate_receive_net_buffer_lists(s.adapter, chain(*make_nbls("nic", 2)), 0, 3, 0)


def test_no_binding_means_immediate_return() -> None:
    ndis = Ndis(SimScheduler(1), Verifier(Mode.STRICT))
    mp = RecordingMiniport()
    adapter = ndis.add_adapter(mp, "nic0")
    nbls = make_nbls("nic", 2)
    ndis.m_indicate_receive_net_buffer_lists(adapter, chain(*nbls))
    assert mp.returned == nbls and ndis.counters["rx_no_binding"] == 2


@pytest.mark.parametrize(("depth", "protocols"), [(1, 1), (1, 2), (2, 3)])
def test_receive_through_ims_with_several_protocols_on_top(depth: int, protocols: int) -> None:
    s = Stack(depth, protocols=protocols, keep_received=True)
    nbls = make_nbls("nic", 3)
    s.ndis.m_indicate_receive_net_buffer_lists(s.adapter, chain(*nbls), 0, 3, 0)
    for proto in s.protos:
        assert proto.received == nbls
    for proto in s.protos[:-1]:
        proto.return_kept()
    assert s.mp.returned == []
    s.protos[-1].return_kept()
    assert sorted(n.serial for n in s.mp.returned) == sorted(n.serial for n in nbls)
    assert all(n.owner == "nic" for n in nbls) and s.verifier.violations == []


def test_halt_while_a_protocol_holds_received_nbls() -> None:
    s = Stack(0, keep_received=True)
    s.ndis.m_indicate_receive_net_buffer_lists(s.adapter, make_nbls("nic", 1)[0], 0, 1, 0)
    with pytest.raises(ContractViolation) as e:
        s.ndis.halt_adapter(s.adapter)
    assert e.value.rule_id == "R-NBL-02"
    assert "received NBL" in e.value.message


@given(
    n_protocols=st.integers(1, 3),
    n_nbls=st.integers(1, 6),
    seed=st.integers(0, 2**16),
)
def test_random_return_orders_return_each_nbl_exactly_once(n_protocols: int, n_nbls: int, seed: int) -> None:
    rng = random.Random(seed)
    s = Stack(0, protocols=n_protocols, keep_received=True)
    nbls = make_nbls("nic", n_nbls)
    s.ndis.m_indicate_receive_net_buffer_lists(s.adapter, chain(*nbls), 0, n_nbls, 0)
    pending = [(p, n) for p in s.protos for n in nbls]
    rng.shuffle(pending)
    while pending:
        k = rng.randint(1, min(3, len(pending)))
        batch, pending = pending[:k], pending[k:]
        for proto, n in batch:
            proto.return_kept([n])
    assert Counter(n.serial for n in s.mp.returned) == Counter({n.serial: 1 for n in nbls})
    assert s.adapter.rx_refs == {}


# ----------------------------------------------------------------------------------- receive ring


class RingMiniport(RecordingMiniport):
    """A NIC that receives into an Ndis6ReceiveRing and recycles returned NBLs."""

    def __init__(self, size: int, low_water: int) -> None:
        super().__init__("ringnic", chimney=False)
        self.size = size
        self.low_water = low_water
        self.ring: Ndis6ReceiveRing | None = None

    def initialize_ex(self, miniport_handle: Adapter, params: dict[str, Any]) -> NdisStatus:
        assert self.ndis is not None
        self.ring = Ndis6ReceiveRing(self.ndis, miniport_handle, size=self.size, buffer_size=256, low_water=self.low_water)
        return NdisStatus.SUCCESS

    def return_net_buffer_lists(self, adapter_context: Any, nbl: Any, flags: int) -> None:
        assert self.ring is not None
        self.ring.recycle(nbl)


def ring_setup(size: int = 8, low_water: int = 2, keep: bool = False) -> tuple[Ndis, RingMiniport, Any]:
    from test_core_doubles import RecordingProtocol

    ndis = Ndis(SimScheduler(1), Verifier(Mode.STRICT))
    mp = RingMiniport(size, low_water)
    adapter = ndis.add_adapter(mp, "eth0")
    proto = RecordingProtocol(keep_received=keep)
    ndis.bind(proto, adapter)
    return ndis, mp, proto


def test_ring_recycles_instead_of_allocating() -> None:
    ndis, mp, proto = ring_setup(size=8, low_water=2)
    ring = mp.ring
    assert ring is not None
    for i in range(20):
        ring.receive([bytes([i]) * 60, bytes([i + 1]) * 70])
    assert ring.pool.allocated == 8  # never more than the preallocated ring
    assert ring.counters["indicated"] == 40 and ring.counters["recycled"] == 40
    assert proto.copies[0] == bytes([0]) * 60 and proto.copies[-1] == bytes([20]) * 70
    assert ring.outstanding == 0
    ring.close()
    assert ring.pool.freed == 8 and ndis.verifier.violations == []


def test_ring_uses_resources_when_low_and_drops_when_empty() -> None:
    ndis, mp, proto = ring_setup(size=4, low_water=2, keep=True)
    ring = mp.ring
    assert ring is not None
    ring.receive([b"a" * 10])  # 3 free left: normal indication, protocol keeps it
    ring.receive([b"b" * 10])  # 2 free left: still normal
    assert ring.counters["resources_indications"] == 0 and len(proto.kept) == 2
    ring.receive([b"c" * 10, b"d" * 10])  # would leave 0 free: RESOURCES, protocol must copy
    assert ring.counters["resources_indications"] == 1 and ring.counters["resources_frames"] == 2
    assert proto.received_flags[-1] == NDIS_RECEIVE_FLAGS_RESOURCES and proto.copies[-1] == b"d" * 10
    assert len(ring.free) == 2  # RESOURCES frames came straight back
    ring.receive([b"e"] * 5)  # 2 free, 5 frames: 3 dropped
    assert ring.counters["dropped_no_buffer"] == 3
    ring.receive([b"x" * 300])
    assert ring.counters["dropped_too_big"] == 1
    with pytest.raises(RuntimeError, match="out"):
        ring.close()
    proto.return_kept()
    assert ring.outstanding == 0
    ring.close()
    assert ndis.verifier.violations == []


def test_r_init_16_indicated_nbl_with_two_net_buffers() -> None:
    from chimney.ndis.buffers import NetBuffer, NetBufferList, chain_net_buffers, mdls_over

    s = Stack(0)
    nbl = NetBufferList(chain_net_buffers(NetBuffer(mdls_over(b"ab"), 0, 2), NetBuffer(mdls_over(b"cd"), 0, 2)), "nic")
    with pytest.raises(ContractViolation) as e:
        s.ndis.m_indicate_receive_net_buffer_lists(s.adapter, nbl, 0, 1, 0)
    assert e.value.rule_id == "R-INIT-16"
