"""Each NDIS 5 receive/return rule (R-N5-01..18): one test provoking the violation, one of correct use."""

from __future__ import annotations

import pytest
from n5kit import (
    PENDING,
    RESOURCES,
    SUCCESS,
    ManualMiniport,
    NoReturnMiniport,
    ScriptedProtocol,
    bound,
    system,
)

from chimney.ndis.ndis5.packet import (
    NdisPacket,
    PacketState,
    allocate_packet,
    free_packet,
    get_packet_status,
    query_packet,
    set_packet_status,
    zero_packet_oob_data,
)
from chimney.ndis.ndis5.wrapper import (
    NDIS_ATTRIBUTE_DESERIALIZE,
    MiniportHandle,
    MiniportKind,
    Ndis5UsageError,
    Protocol5,
)
from chimney.ndis.status import NdisStatus
from chimney.ndis.verifier import ContractViolation, Mode

SER, DES, CO = MiniportKind.SERIALIZED, MiniportKind.DESERIALIZED, MiniportKind.CONNECTION_ORIENTED


def keep_once(_: NdisPacket) -> int:
    return 1


# ---- R-N5-01 -------------------------------------------------------------------------------------


def test_r_n5_01_indicating_without_return_packet_handler_is_a_violation() -> None:
    ndis = system()
    m = NoReturnMiniport("noret")
    h = ndis.m_register_miniport(m)
    ndis.open_adapter(ScriptedProtocol(), h)
    donor = ManualMiniport("donor")
    ndis.m_register_miniport(donor)
    p = donor.make()
    with pytest.raises(ContractViolation) as e:
        ndis.m_indicate_receive_packet(h, [p], 1)
    assert e.value.rule_id == "R-N5-01"


def test_r_n5_01_miniport_with_return_packet_indicates() -> None:
    ndis, m, (proto,) = bound()
    m.indicate([m.make(b"H" * 14 + b"abc")])
    assert proto.got == [b"H" * 14 + b"abc"]
    assert ndis.verifier.checks["R-N5-01"] == 1


# ---- R-N5-02 -------------------------------------------------------------------------------------


def test_r_n5_02_packet_not_from_a_pool_is_refused() -> None:
    _, m, _ = bound()
    stray = NdisPacket()
    set_packet_status(stray, SUCCESS)
    with pytest.raises(ContractViolation) as e:
        m.indicate([stray])
    assert e.value.rule_id == "R-N5-02"


def test_r_n5_02_freed_or_empty_packet_is_refused() -> None:
    ndis, m, (proto,) = bound(mode=Mode.RECORD)
    assert m.pool is not None
    _, empty = allocate_packet(m.pool)
    assert empty is not None
    set_packet_status(empty, SUCCESS)
    good = m.make(b"H" * 14 + b"ok")
    freed = m.make()
    free_packet(freed)
    assert freed.state == PacketState.FREE
    m.indicate([freed, empty, good])
    assert ndis.verifier.rule_ids() == ["R-N5-02", "R-N5-02"]
    assert [v.objects[0] for v in ndis.verifier.violations] == [freed, empty]
    assert proto.got == [b"H" * 14 + b"ok"]  # only the full, pooled packet went up


# ---- R-N5-03 -------------------------------------------------------------------------------------


def test_r_n5_03_zero_packets_is_a_violation() -> None:
    _, m, _ = bound()
    with pytest.raises(ContractViolation) as e:
        m.indicate([m.make()], n=0)
    assert e.value.rule_id == "R-N5-03"


def test_r_n5_03_number_of_packets_limits_the_indication() -> None:
    _, m, (proto,) = bound()
    a, b = m.make(b"H" * 14 + b"a"), m.make(b"H" * 14 + b"b")
    m.indicate([a, b], n=1)
    assert proto.got == [b"H" * 14 + b"a"]
    assert b.state == PacketState.OWNED


def test_number_of_packets_larger_than_the_array_is_a_usage_error() -> None:
    _, m, _ = bound()
    with pytest.raises(Ndis5UsageError):
        m.indicate([m.make()], n=2)


# ---- R-N5-04 -------------------------------------------------------------------------------------


def test_r_n5_04_status_not_set_before_indicating() -> None:
    _, m, _ = bound()
    with pytest.raises(ContractViolation) as e:
        m.indicate([m.make(status=None)])
    assert e.value.rule_id == "R-N5-04"


def test_r_n5_04_status_must_be_success_or_resources() -> None:
    _, m, _ = bound()
    with pytest.raises(ContractViolation) as e:
        m.indicate([m.make(status=PENDING)])
    assert e.value.rule_id == "R-N5-04"


def test_r_n5_04_status_must_be_set_again_for_every_indication() -> None:
    _, m, (proto,) = bound()
    p = m.make()
    m.indicate([p])
    zero_packet_oob_data(p)  # re-armed, but Status not set again
    with pytest.raises(ContractViolation) as e:
        m.indicate([p])
    assert e.value.rule_id == "R-N5-04"
    set_packet_status(p, SUCCESS)
    m.indicate([p])
    assert len(proto.got) == 2


def test_r_n5_04_protocols_see_the_status_the_miniport_set() -> None:
    _, m, (proto,) = bound()
    m.indicate([m.make(status=SUCCESS), m.make(status=RESOURCES)])
    assert proto.statuses == [SUCCESS, RESOURCES]


# ---- R-N5-05 -------------------------------------------------------------------------------------


def test_r_n5_05_serialized_miniport_touching_a_pending_packet() -> None:
    _, m, _ = bound(keep=keep_once)
    p = m.make()
    m.indicate([p])
    with m.running():
        assert get_packet_status(p) == PENDING  # the required read (R-N5-07) is allowed
        with pytest.raises(ContractViolation) as e:
            query_packet(p)
    assert e.value.rule_id == "R-N5-05"


def test_r_n5_05_reindicating_a_lent_packet() -> None:
    _, m, _ = bound(keep=keep_once)
    p = m.make()
    m.indicate([p])
    with pytest.raises(ContractViolation) as e:
        m.indicate([p])
    assert e.value.rule_id == "R-N5-05"


def test_r_n5_05_rearming_a_lent_packet() -> None:
    _, m, _ = bound(kind=DES, keep=keep_once)
    p = m.make()
    m.indicate([p])
    with m.running(), pytest.raises(ContractViolation) as e:
        set_packet_status(p, SUCCESS)
    assert e.value.rule_id == "R-N5-05"


def test_r_n5_05_packet_is_the_miniports_again_after_return_packet() -> None:
    _, m, (proto,) = bound(keep=keep_once)
    p = m.make()
    m.indicate([p])
    proto.return_packets([p])
    assert m.returned == [p]
    with m.running():
        assert query_packet(p)[1] == 1  # touching is fine now
        set_packet_status(p, SUCCESS)


def test_r_n5_05_protocol_that_kept_the_packet_may_use_it() -> None:
    _, m, (proto,) = bound(keep=keep_once)
    p = m.make(b"H" * 14 + b"kept")
    m.indicate([p])
    with proto.running():
        assert query_packet(p)[3] == 18


# ---- R-N5-06 -------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", [SER, DES, CO])
def test_r_n5_06_resources_packet_is_back_at_indicate_return_and_never_returned(kind: MiniportKind) -> None:
    _ndis, m, (proto,) = bound(kind=kind)
    p = m.make(status=RESOURCES)
    m.indicate([p])
    assert p.state == PacketState.OWNED
    assert m.returned == []
    assert proto.got  # the protocol saw (and copied) it
    h = m.handle
    assert h is not None and h.reclaimed_resources == 1 and h.returned_via_return_packet == 0


def test_r_n5_06_returning_a_resources_packet_is_refused() -> None:
    _ndis, m, (proto,) = bound()
    p = m.make(status=RESOURCES)
    m.indicate([p])
    with pytest.raises(ContractViolation) as e:
        proto.return_packets([p])
    assert e.value.rule_id == "R-N5-12"
    assert m.returned == []


# ---- R-N5-07 -------------------------------------------------------------------------------------


def test_r_n5_07_serialized_status_after_indication() -> None:
    """SUCCESS: nobody kept it, owned again; PENDING: kept; RESOURCES: owned again (§5.10)."""
    _ndis, m, (p0, _p1) = bound(protocols=2)
    keep: set[int] = set()
    p0.keep = lambda pk: 1 if id(pk) in keep else 0
    a, b, c = m.make(), m.make(), m.make(status=RESOURCES)
    keep.add(id(b))
    m.indicate([a, b, c])
    with m.running():
        assert [get_packet_status(x) for x in (a, b, c)] == [SUCCESS, PENDING, RESOURCES]
    assert (a.state, b.state, c.state) == (PacketState.OWNED, PacketState.LENT, PacketState.OWNED)
    assert m.returned == []
    p0.return_packets([b])
    assert m.returned == [b]


# ---- R-N5-08 -------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", [DES, CO])
@pytest.mark.parametrize("kept", [True, False])
def test_r_n5_08_deserialized_reading_status_after_indication(kind: MiniportKind, kept: bool) -> None:
    _, m, _ = bound(kind=kind, keep=keep_once if kept else None)
    p = m.make()
    with m.running():
        m.indicate([p])
        with pytest.raises(ContractViolation) as e:
            get_packet_status(p)
    assert e.value.rule_id == "R-N5-08"


@pytest.mark.parametrize("kind", [DES, CO])
def test_r_n5_08_deserialized_success_always_comes_back_through_return_packet(kind: MiniportKind) -> None:
    _, m, (_proto,) = bound(kind=kind)
    saved = SUCCESS
    p = m.make(status=saved)
    m.indicate([p])
    # nobody kept it, yet NDIS hands it back through MiniportReturnPacket (possibly before the
    # indication returned): the miniport decides from `saved`, never from the packet
    assert m.returned == [p]
    with m.running():
        set_packet_status(p, SUCCESS)  # re-arming ends the "do not read" window
        assert get_packet_status(p) == SUCCESS


def test_r_n5_08_serialized_miniport_may_read() -> None:
    _, m, _ = bound(kind=SER)
    p = m.make()
    with m.running():
        m.indicate([p])
        assert get_packet_status(p) == SUCCESS


# ---- R-N5-09 -------------------------------------------------------------------------------------


def test_r_n5_09_return_packet_once_after_the_last_promised_return() -> None:
    ndis, m, (p0, p1) = bound(protocols=2)
    p0.keep = lambda pk: 2
    p1.keep = lambda pk: 1
    p = m.make()
    m.indicate([p])
    p0.return_packets([p])
    p1.return_packets([p])
    assert m.returned == []
    p0.return_packets([p])
    assert m.returned == [p]
    assert ndis.verifier.checks["R-N5-09"] == 1


def test_r_n5_09_wrapper_refuses_a_second_return_packet() -> None:
    ndis, m, (proto,) = bound(keep=keep_once)
    p = m.make()
    m.indicate([p])
    proto.return_packets([p])
    with pytest.raises(ContractViolation) as e:
        ndis._give_back(p)  # the wrapper's own guard: a packet not lent any more
    assert e.value.rule_id == "R-N5-09"
    assert m.returned == [p]


# ---- R-N5-10 -------------------------------------------------------------------------------------


def test_r_n5_10_ndis_does_not_depend_on_the_miniports_array() -> None:
    """The miniport rewrites its array during and after the indication; NDIS used its own copy."""
    _, m, (proto,) = bound(keep=keep_once)
    a, b, c = m.make(b"H" * 14 + b"a"), m.make(b"H" * 14 + b"b"), m.make(b"H" * 14 + b"c")
    array = [a, b, c]

    def scribble(pk: NdisPacket) -> int:
        array[:] = [None, None, None]  # the miniport reuses its array slot storage
        return 1

    proto.keep = scribble
    m.indicate(array)
    assert [x[14:] for x in proto.got] == [b"a", b"b", b"c"]
    proto.return_packets([c, a, b])
    assert m.returned == [c, a, b]


# ---- R-N5-11 -------------------------------------------------------------------------------------


@pytest.mark.parametrize("bad", [-1, 1.0, None])
def test_r_n5_11_receive_packet_must_return_a_count(bad: object) -> None:
    _, m, _ = bound(keep=lambda pk: bad)
    with pytest.raises(ContractViolation) as e:
        m.indicate([m.make()])
    assert e.value.rule_id == "R-N5-11"


def test_r_n5_11_returning_more_often_than_promised() -> None:
    _, m, (proto,) = bound(keep=keep_once)
    p = m.make()
    m.indicate([p])
    proto.return_packets([p])
    with pytest.raises(ContractViolation) as e:
        proto.return_packets([p])
    assert e.value.rule_id == "R-N5-11"
    assert m.returned == [p]


def test_r_n5_11_returning_a_packet_never_indicated() -> None:
    _, m, (proto,) = bound()
    with pytest.raises(ContractViolation) as e:
        proto.return_packets([m.make()])
    assert e.value.rule_id == "R-N5-11"


def test_r_n5_11_a_protocol_returning_a_packet_another_protocol_kept() -> None:
    _, m, (p0, p1) = bound(protocols=2)
    p0.keep = keep_once
    p = m.make()
    m.indicate([p])
    with pytest.raises(ContractViolation) as e:
        p1.return_packets([p])
    assert e.value.rule_id == "R-N5-11"
    p0.return_packets([p])
    assert m.returned == [p]


# ---- R-N5-12 -------------------------------------------------------------------------------------


def test_r_n5_12_keeping_a_resources_packet() -> None:
    _, m, _ = bound(keep=keep_once)
    with pytest.raises(ContractViolation) as e:
        m.indicate([m.make(status=RESOURCES)])
    assert e.value.rule_id == "R-N5-12"


def test_r_n5_12_resources_protocol_copies_and_returns_zero() -> None:
    _, m, (proto,) = bound(keep=lambda pk: 0 if get_packet_status(pk) == RESOURCES else 1)
    p = m.make(b"H" * 14 + b"copy me", status=RESOURCES)
    m.indicate([p])
    # the miniport reuses the memory at once; the protocol's copy is intact
    m.memory[:21] = bytes(21)
    assert proto.got == [b"H" * 14 + b"copy me"]


# ---- R-N5-13 -------------------------------------------------------------------------------------


def test_r_n5_13_return_from_inside_receive_packet() -> None:
    ndis, m, (proto,) = bound()

    def eager(pk: NdisPacket) -> int:
        ndis.return_packets([pk])
        return 1

    proto.keep = eager
    with pytest.raises(ContractViolation) as e:
        m.indicate([m.make()])
    assert e.value.rule_id == "R-N5-13"


def test_r_n5_13_return_after_receive_packet_returned() -> None:
    ndis, m, (proto,) = bound(keep=keep_once)
    p = m.make()
    m.indicate([p])
    proto.call_later(1000, proto.return_packets, [p])
    ndis.scheduler.run_until()
    assert m.returned == [p]


# ---- R-N5-15 -------------------------------------------------------------------------------------


class KeepsViews(Protocol5):
    def __init__(self) -> None:
        super().__init__("lookahead")
        self.log: list[str] = []
        self.views: list[memoryview] = []

    def receive(self, ctx: object, header: memoryview, lookahead: memoryview, size: int) -> NdisStatus:
        self.log.append(f"receive {bytes(lookahead)!r}")
        self.views.append(lookahead)
        return NdisStatus.SUCCESS

    def receive_complete(self) -> None:
        self.log.append("complete")


def test_r_n5_15_lookahead_views_die_when_receive_returns() -> None:
    ndis = system()
    m = ManualMiniport()
    h = ndis.m_register_miniport(m)
    proto = KeepsViews()
    ndis.open_adapter(proto, h)
    m.indicate([m.make(b"H" * 14 + b"one"), m.make(b"H" * 14 + b"two")])
    # post-processing comes once, after every ProtocolReceive of the indication
    assert proto.log == ["receive b'one'", "receive b'two'", "complete"]
    with pytest.raises(ValueError):
        bytes(proto.views[0])  # a kept view is released: the data had to be copied in receive


def test_r_n5_15_packet_and_lookahead_protocols_share_one_miniport() -> None:
    ndis, m, (proto,) = bound()
    la = KeepsViews()
    assert m.handle is not None
    ndis.open_adapter(la, m.handle)
    m.indicate([m.make(b"H" * 14 + b"x")])
    assert proto.got == [b"H" * 14 + b"x"]
    assert la.log == ["receive b'x'", "complete"]


# ---- R-N5-16 -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "area", "ok"),
    [
        (SER, "miniport_reserved", True),
        (SER, "miniport_reserved_ex", False),
        (DES, "miniport_reserved_ex", True),
        (DES, "miniport_reserved", False),
        (CO, "miniport_reserved_ex", True),
        (CO, "miniport_reserved", False),
    ],
)
def test_r_n5_16_reserved_area_by_miniport_kind(kind: MiniportKind, area: str, ok: bool) -> None:
    _, m, _ = bound(kind=kind)
    p = m.make()
    if ok:
        view = getattr(m, area)(p)
        view[0] = 0x5A
        assert len(view) == (16 if area == "miniport_reserved" else 24)
        assert getattr(m, area)(p)[0] == 0x5A
    else:
        with pytest.raises(ContractViolation) as e:
            getattr(m, area)(p)
        assert e.value.rule_id == "R-N5-16"


# ---- R-N5-18 -------------------------------------------------------------------------------------


class Undeclared(ManualMiniport):
    def initialize(self, handle: MiniportHandle) -> NdisStatus:
        self.lib.m_set_attributes_ex(handle, self, 0, 0)  # forgets NDIS_ATTRIBUTE_DESERIALIZE
        return NdisStatus.SUCCESS


class OverDeclared(ManualMiniport):
    def initialize(self, handle: MiniportHandle) -> NdisStatus:
        self.lib.m_set_attributes_ex(handle, self, 0, NDIS_ATTRIBUTE_DESERIALIZE)
        return NdisStatus.SUCCESS


@pytest.mark.parametrize("kind", [DES, CO])
def test_r_n5_18_deserialized_and_co_must_declare_deserialize(kind: MiniportKind) -> None:
    ndis = system()
    with pytest.raises(ContractViolation) as e:
        ndis.m_register_miniport(Undeclared("nic", kind))
    assert e.value.rule_id == "R-N5-18"


def test_r_n5_18_serialized_miniport_declaring_deserialize() -> None:
    ndis = system()
    with pytest.raises(ContractViolation) as e:
        ndis.m_register_miniport(OverDeclared("nic", SER))
    assert e.value.rule_id == "R-N5-18"


@pytest.mark.parametrize("kind", [SER, DES, CO])
def test_r_n5_18_declared_attributes_drive_the_wrapper(kind: MiniportKind) -> None:
    ndis = system()
    h = ndis.m_register_miniport(ManualMiniport("nic", kind))
    assert h.deserialized == (kind is not SER)
    assert bool(h.attributes & NDIS_ATTRIBUTE_DESERIALIZE) == (kind is not SER)


def test_co_and_connectionless_indicate_functions_are_not_interchangeable() -> None:
    ndis, m, _ = bound(kind=CO)
    assert m.handle is not None
    with pytest.raises(Ndis5UsageError):
        ndis.m_indicate_receive_packet(m.handle, [m.make()], 1)
    ndis2, m2, _ = bound(kind=SER)
    with pytest.raises(Ndis5UsageError):
        ndis2.co_create_vc(m2.handle.bindings[0])  # type: ignore[union-attr]


def test_record_mode_collects_violations_and_keeps_the_packet_safe() -> None:
    ndis, m, (_proto,) = bound(mode=Mode.RECORD, keep=keep_once)
    p = m.make(status=RESOURCES)
    m.indicate([p])  # R-N5-12: the protocol tried to keep it; NDIS treats it as 0
    assert ndis.verifier.rule_ids() == ["R-N5-12"]
    assert p.state == PacketState.OWNED and m.returned == []


def test_r_n5_02_one_descriptor_twice_in_an_array() -> None:
    ndis, m, (proto,) = bound(mode=Mode.RECORD)
    p = m.make()
    m.indicate([p, p])
    assert ndis.verifier.rule_ids() == ["R-N5-02"]
    assert len(proto.got) == 1
