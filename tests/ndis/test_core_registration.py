"""Registration rules: chimney handler tables only from SetOptions (R-INIT-03), complete tables
(R-INIT-01/02), NdisMGetOffloadHandlers from MiniportInitializeEx only (R-INIT-04), capability rules."""

from __future__ import annotations

from typing import Any

import pytest
from test_core_doubles import RecordingMiniport, RecordingProtocol

from chimney.ndis.core import Adapter, DriverHandle, Ndis, NdisUsageError
from chimney.ndis.driver import (
    ClientChimneyOffloadGenericCharacteristics,
    ProviderChimneyOffloadGenericCharacteristics,
    ProviderChimneyOffloadTcpCharacteristics,
)
from chimney.ndis.offload_state import NDIS_TCP_CHIMNEY_OFFLOAD
from chimney.ndis.oid import NdisTcpConnectionOffload
from chimney.ndis.status import NdisStatus
from chimney.ndis.verifier import ContractViolation, Mode, Verifier
from chimney.sim.scheduler import SimScheduler


def new_ndis(mode: Mode = Mode.STRICT) -> Ndis:
    return Ndis(SimScheduler(1), Verifier(mode))


def test_complete_provider_and_client_tables_register_inside_set_options() -> None:
    ndis = new_ndis()
    mp, proto = RecordingMiniport(), RecordingProtocol()
    mdh = ndis.register_miniport_driver(mp)
    pdh = ndis.register_protocol_driver(proto)
    assert mdh.chimney_provider and pdh.chimney_client
    assert mdh.provider_generic is not None and mdh.provider_generic.initiate_offload_handler == mp.initiate_offload
    assert ndis.verifier.checks["R-INIT-01"] == 1 and ndis.verifier.checks["R-INIT-02"] >= 1


def test_r_init_03_provider_handlers_registered_outside_set_options() -> None:
    ndis = new_ndis()
    mp = RecordingMiniport(chimney=False)
    dh = ndis.register_miniport_driver(mp)
    generic, _ = mp.provider_characteristics()
    with pytest.raises(ContractViolation) as e:
        ndis.set_optional_handlers(dh, generic)
    assert e.value.rule_id == "R-INIT-03"
    assert dh.provider_generic is None


def test_r_init_03_client_table_from_the_miniport_edge() -> None:
    class Confused(RecordingMiniport):
        def set_options(self, driver_handle: DriverHandle) -> NdisStatus:
            assert self.ndis is not None
            return self.ndis.set_optional_handlers(driver_handle, ClientChimneyOffloadGenericCharacteristics())

    ndis = new_ndis()
    with pytest.raises(ContractViolation) as e:
        ndis.register_miniport_driver(Confused())
    assert e.value.rule_id == "R-INIT-03"


def test_r_init_01_generic_table_missing_an_entry_point() -> None:
    class NoQuery(RecordingMiniport):
        def set_options(self, driver_handle: DriverHandle) -> NdisStatus:
            assert self.ndis is not None
            generic, tcp = self.provider_characteristics()
            generic.query_offload_handler = None
            status = self.ndis.set_optional_handlers(driver_handle, generic)
            return status if status else self.ndis.set_optional_handlers(driver_handle, tcp)

    with pytest.raises(ContractViolation) as e:
        new_ndis().register_miniport_driver(NoQuery())
    assert e.value.rule_id == "R-INIT-01"


def test_r_init_01_record_mode_refuses_the_table_and_counts_the_violation() -> None:
    ndis = new_ndis(Mode.RECORD)

    class NoInvalidate(RecordingMiniport):
        def set_options(self, driver_handle: DriverHandle) -> NdisStatus:
            assert self.ndis is not None
            generic = ProviderChimneyOffloadGenericCharacteristics(
                self.initiate_offload, self.terminate_offload, self.update_offload, None, self.query_offload
            )
            self.status = self.ndis.set_optional_handlers(driver_handle, generic)
            return NdisStatus.SUCCESS

    mp = NoInvalidate()
    dh = ndis.register_miniport_driver(mp)
    assert mp.status == NdisStatus.FAILURE and dh.provider_generic is None
    assert ndis.verifier.rule_ids() == ["R-INIT-01"]


def test_r_init_02_wrong_offload_type() -> None:
    class Ipsec(RecordingMiniport):
        def set_options(self, driver_handle: DriverHandle) -> NdisStatus:
            assert self.ndis is not None
            generic, tcp = self.provider_characteristics()
            self.ndis.set_optional_handlers(driver_handle, generic)
            bad = ProviderChimneyOffloadTcpCharacteristics(
                tcp.tcp_offload_send_handler,
                tcp.tcp_offload_receive_handler,
                tcp.tcp_offload_disconnect_handler,
                tcp.tcp_offload_forward_handler,
                tcp.tcp_offload_receive_return_handler,
                offload_type=2,
            )
            return self.ndis.set_optional_handlers(driver_handle, bad)

    with pytest.raises(ContractViolation) as e:
        new_ndis().register_miniport_driver(Ipsec())
    assert e.value.rule_id == "R-INIT-02"


def test_get_offload_handlers_returns_six_bound_entry_points() -> None:
    ndis = new_ndis()
    mp = RecordingMiniport()
    adapter = ndis.add_adapter(mp, "nic0")
    table = mp.handlers
    assert table.header.type == NDIS_TCP_CHIMNEY_OFFLOAD and table.header.revision == 1
    assert table.ndis_tcp_offload_send_complete == ndis.tcp_offload_send_complete
    assert table.ndis_tcp_offload_receive_handler == ndis.tcp_offload_receive_handler
    assert table.ndis_tcp_offload_event_handler == ndis.tcp_offload_event_handler
    assert adapter.offload_handler_types == {NDIS_TCP_CHIMNEY_OFFLOAD}


@pytest.mark.parametrize("chimney_type", [2, 3])
def test_get_offload_handlers_reserved_type_is_not_supported(chimney_type: int) -> None:
    got: list[Any] = []

    class AsksIpsec(RecordingMiniport):
        def initialize_ex(self, miniport_handle: Adapter, params: dict[str, Any]) -> NdisStatus:
            assert self.ndis is not None
            got.append(self.ndis.m_get_offload_handlers(miniport_handle, chimney_type))
            return NdisStatus.SUCCESS

    ndis = new_ndis()
    ndis.add_adapter(AsksIpsec(), "nic0")
    assert got == [(NdisStatus.NOT_SUPPORTED, None)]
    assert ndis.verifier.violations == []


def test_r_init_04_undefined_type_record_mode_returns_not_supported() -> None:
    got: list[Any] = []

    class AsksNonsense(RecordingMiniport):
        def initialize_ex(self, miniport_handle: Adapter, params: dict[str, Any]) -> NdisStatus:
            assert self.ndis is not None
            got.append(self.ndis.m_get_offload_handlers(miniport_handle, 99))
            return NdisStatus.SUCCESS

    ndis = new_ndis(Mode.RECORD)
    ndis.add_adapter(AsksNonsense(), "nic0")
    assert got == [(NdisStatus.NOT_SUPPORTED, None)]
    assert ndis.verifier.rule_ids() == ["R-INIT-04"]


def test_r_init_04_get_offload_handlers_outside_initialize() -> None:
    ndis = new_ndis()
    adapter = ndis.add_adapter(RecordingMiniport(), "nic0")
    with pytest.raises(ContractViolation) as e:
        ndis.m_get_offload_handlers(adapter, NDIS_TCP_CHIMNEY_OFFLOAD)
    assert e.value.rule_id == "R-INIT-04"


def test_r_init_04_twice_for_the_same_type() -> None:
    class Twice(RecordingMiniport):
        def initialize_ex(self, miniport_handle: Adapter, params: dict[str, Any]) -> NdisStatus:
            super().initialize_ex(miniport_handle, params)
            assert self.ndis is not None
            self.ndis.m_get_offload_handlers(miniport_handle, NDIS_TCP_CHIMNEY_OFFLOAD)
            return NdisStatus.SUCCESS

    with pytest.raises(ContractViolation) as e:
        new_ndis().add_adapter(Twice(), "nic0")
    assert e.value.rule_id == "R-INIT-04"


@pytest.mark.parametrize(
    ("caps", "rule_id"),
    [
        (NdisTcpConnectionOffload(tcp_connection_offload_capacity=0), "R-INIT-07"),
        (NdisTcpConnectionOffload(support_ipv4=False, support_ipv6=False), "R-INIT-08"),
        (NdisTcpConnectionOffload(encapsulation=0x1), "R-INIT-09"),
    ],
)
def test_capability_advertisement_rules(caps: NdisTcpConnectionOffload, rule_id: str) -> None:
    mp = RecordingMiniport()
    mp.caps = caps
    with pytest.raises(ContractViolation) as e:
        new_ndis().add_adapter(mp, "nic0")
    assert e.value.rule_id == rule_id


def test_r_init_10_capabilities_changed_after_initialize_directly() -> None:
    ndis = new_ndis()
    adapter = ndis.add_adapter(RecordingMiniport(), "nic0")
    with pytest.raises(ContractViolation) as e:
        ndis.m_set_miniport_attributes(adapter, tcp_connection_offload=NdisTcpConnectionOffload())
    assert e.value.rule_id == "R-INIT-10"


def test_capabilities_change_through_offload_resume_is_accepted_and_indicated() -> None:
    ndis = new_ndis()
    adapter = ndis.add_adapter(RecordingMiniport(), "nic0")
    proto = RecordingProtocol()
    ndis.bind(proto, adapter)
    new_caps = NdisTcpConnectionOffload(tcp_connection_offload_capacity=8)
    ndis.m_indicate_status_ex(adapter, NdisStatus.OFFLOAD_PAUSE)
    ndis.m_indicate_status_ex(adapter, NdisStatus.OFFLOAD_RESUME, new_caps)
    assert adapter.offload_caps is new_caps
    assert [s.status_code for s in proto.statuses] == [NdisStatus.OFFLOAD_PAUSE, NdisStatus.OFFLOAD_RESUME]
    assert ndis.verifier.violations == []


def test_failed_initialize_is_a_clear_error() -> None:
    class Broken(RecordingMiniport):
        def initialize_ex(self, miniport_handle: Adapter, params: dict[str, Any]) -> NdisStatus:
            return NdisStatus.RESOURCES

    with pytest.raises(NdisUsageError, match="MiniportInitializeEx"):
        new_ndis().add_adapter(Broken(), "nic0")
