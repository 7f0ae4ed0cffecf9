"""chimney.ndis: the NDIS 6 model (buffers, drivers, the `Ndis` library, block lists, OIDs, verifier).
Exports are resolved lazily so importing one submodule never drags in (or cycles through) the rest.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS: dict[str, str] = {
    # core
    "Ndis": "chimney.ndis.core",
    "Adapter": "chimney.ndis.core",
    "Binding": "chimney.ndis.core",
    "DriverHandle": "chimney.ndis.core",
    "AdapterState": "chimney.ndis.core",
    "BindingState": "chimney.ndis.core",
    "BoundaryChecks": "chimney.ndis.core",
    "NdisStatusIndication": "chimney.ndis.core",
    "NdisUsageError": "chimney.ndis.core",
    "Op": "chimney.ndis.core",
    # drivers
    "MiniportDriver": "chimney.ndis.driver",
    "ProtocolDriver": "chimney.ndis.driver",
    "IntermediateDriver": "chimney.ndis.driver",
    "ProviderChimneyOffloadGenericCharacteristics": "chimney.ndis.driver",
    "ProviderChimneyOffloadTcpCharacteristics": "chimney.ndis.driver",
    "ClientChimneyOffloadGenericCharacteristics": "chimney.ndis.driver",
    "ClientChimneyOffloadTcpCharacteristics": "chimney.ndis.driver",
    "NdisTcpOffloadEventHandlers": "chimney.ndis.driver",
    # block lists
    "Slot": "chimney.ndis.blocklist",
    "NdisObjectHeader": "chimney.ndis.blocklist",
    "NdisOffloadHandle": "chimney.ndis.blocklist",
    "NdisOffloadHandleRef": "chimney.ndis.blocklist",
    "MiniportOffloadBlockList": "chimney.ndis.blocklist",
    "ProtocolOffloadBlockList": "chimney.ndis.blocklist",
    "STATUS_UNSET": "chimney.ndis.blocklist",
    "NodeRole": "chimney.ndis.blocklist",
    "iter_tree": "chimney.ndis.blocklist",
    "node_role": "chimney.ndis.blocklist",
    "pbl_to_mbl": "chimney.ndis.blocklist",
    "mbl_to_pbl": "chimney.ndis.blocklist",
    "mbl_results_to_pbl": "chimney.ndis.blocklist",
    "pbl_results_to_mbl": "chimney.ndis.blocklist",
    # OIDs
    "NdisOidRequest": "chimney.ndis.oid",
    "NdisRequestType": "chimney.ndis.oid",
    "NdisTcpConnectionOffload": "chimney.ndis.oid",
    "NdisTcpConnectionOffloadParameters": "chimney.ndis.oid",
    "TcpOffloadStats": "chimney.ndis.oid",
    "IpOffloadStats": "chimney.ndis.oid",
    # receive
    "Ndis6ReceiveRing": "chimney.ndis.receive",
    "NDIS_RECEIVE_FLAGS_RESOURCES": "chimney.ndis.receive",
    # status / verifier
    "NdisStatus": "chimney.ndis.status",
    "Verifier": "chimney.ndis.verifier",
    "Mode": "chimney.ndis.verifier",
    "ContractViolation": "chimney.ndis.verifier",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'chimney.ndis' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
