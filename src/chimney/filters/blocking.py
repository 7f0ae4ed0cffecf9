"""An intermediate driver without chimney handlers (contract §3.8 last paragraph, R-IM-13): it relays the
lower adapter's chimney capability advertisement but registers no chimney handlers, so NDIS blocks chimney.

NDIS name -> Python name: MiniportSetOptions / ProtocolSetOptions -> miniport_set_options /
protocol_set_options (no NdisSetOptionalHandlers call), MiniportInitializeEx -> initialize_ex
(NdisMSetMiniportAttributes relaying the lower NDIS_TCP_CONNECTION_OFFLOAD).
"""

from __future__ import annotations

from typing import Any

from chimney.filters.passthrough import ImUsageError, NormalPathIm
from chimney.ndis.core import Adapter, DriverHandle
from chimney.ndis.status import NdisStatus

__all__ = ["NonChimneyIm"]


class NonChimneyIm(NormalPathIm):
    """Passes the normal send/receive path, OIDs and status through; knows nothing about chimney.

    It copies the lower adapter's offload attributes onto its virtual miniport (the "relayed
    advertisement"); NDIS must still refuse chimney for it and for everything below it (R-IM-13):
    capability queries answer NOT_SUPPORTED and state operations fail in NDIS without reaching a driver.
    """

    def miniport_set_options(self, driver_handle: DriverHandle) -> NdisStatus:
        return NdisStatus.SUCCESS  # deliberately no provider chimney handlers

    def protocol_set_options(self, driver_handle: DriverHandle) -> NdisStatus:
        return NdisStatus.SUCCESS  # deliberately no client chimney handlers

    def initialize_ex(self, miniport_handle: Adapter, params: dict[str, Any]) -> NdisStatus:
        lower = miniport_handle.lower_binding
        if lower is None:
            raise ImUsageError(f"{miniport_handle.name} is not an IM virtual miniport")
        self.vms.append(miniport_handle)
        caps = lower.adapter.offload_caps
        if caps is not None:
            self.n.m_set_miniport_attributes(miniport_handle, tcp_connection_offload=caps)
        return NdisStatus.SUCCESS
