"""NDIS_STATUS codes with their ndis.h numeric values (contract §5.1), and how to classify them.

OFFLOAD_PARTIAL_SUCCESS is informational severity: `is_error()` is False for it, which is the
pitfall §6.1 warns about: a caller must compare codes, not only test the severity bits.
"""

from __future__ import annotations

from enum import IntEnum


class NdisStatus(IntEnum):
    SUCCESS = 0x00000000
    PENDING = 0x00000103
    NOT_ACCEPTED = 0x00010003
    FAILURE = 0xC0000001
    RESOURCES = 0xC000009A
    NOT_SUPPORTED = 0xC00000BB
    INVALID_STATE = 0xC0000184
    REQUEST_ABORTED = 0xC001000C
    PAUSED = 0xC023002A  # STATUS_NDIS_PAUSED
    UPLOAD_IN_PROGRESS = 0xC0231001
    REQUEST_UPLOAD = 0xC0231002
    UPLOAD_REQUESTED = 0xC0231003
    OFFLOAD_TCP_ENTRIES = 0xC0231004
    OFFLOAD_PATH_ENTRIES = 0xC0231005
    OFFLOAD_NEIGHBOR_ENTRIES = 0xC0231006
    OFFLOAD_IP_ADDRESS_ENTRIES = 0xC0231007
    OFFLOAD_HW_ADDRESS_ENTRIES = 0xC0231008
    OFFLOAD_VLAN_ENTRIES = 0xC0231009
    OFFLOAD_TCP_XMIT_BUFFER = 0xC023100A
    OFFLOAD_TCP_RCV_BUFFER = 0xC023100B
    OFFLOAD_TCP_RCV_WINDOW = 0xC023100C
    OFFLOAD_VLAN_MISMATCH = 0xC023100D
    OFFLOAD_DATA_NOT_ACCEPTED = 0xC023100E
    OFFLOAD_POLICY = 0xC023100F
    OFFLOAD_DATA_PARTIALLY_ACCEPTED = 0xC0231010
    OFFLOAD_REQUEST_RESET = 0xC0231011
    OFFLOAD_CONNECTION_REJECTED = 0xC0231012
    # No value exists in the headers (§6.3): a private value in the customer-defined range.
    OFFLOAD_PATH_MTU = 0xE02310FF
    OFFLOAD_PAUSE = 0x40020001
    UPLOAD_ALL = 0x40020002
    OFFLOAD_RESUME = 0x40020003
    OFFLOAD_PARTIAL_SUCCESS = 0x40020004
    OFFLOAD_STATE_INVALID = 0x40020005
    TCP_CONNECTION_OFFLOAD_HARDWARE_CAPABILITIES = 0x4002000B
    MEDIA_CONNECT = 0x4001000B
    MEDIA_DISCONNECT = 0x4001000C


def severity(code: int) -> int:
    """The two NT severity bits: 0 success, 1 informational, 2 warning, 3 error."""
    return (code >> 30) & 0x3


def is_error(code: int) -> bool:
    return severity(code) == 3


def is_success_severity(code: int) -> bool:
    """True for SUCCESS *and* informational codes such as OFFLOAD_PARTIAL_SUCCESS."""
    return severity(code) in (0, 1)


def name(code: int) -> str:
    try:
        return f"NDIS_STATUS_{NdisStatus(code).name}"
    except ValueError:
        return f"0x{code:08X}"


# Statuses each initiate-offload node may carry (§3.2); the other four operations allow only these two.
INITIATE_NODE_STATUSES = frozenset(
    {
        NdisStatus.SUCCESS,
        NdisStatus.OFFLOAD_PARTIAL_SUCCESS,
        NdisStatus.FAILURE,
        NdisStatus.RESOURCES,
        NdisStatus.OFFLOAD_TCP_ENTRIES,
        NdisStatus.OFFLOAD_PATH_ENTRIES,
        NdisStatus.OFFLOAD_NEIGHBOR_ENTRIES,
        NdisStatus.OFFLOAD_HW_ADDRESS_ENTRIES,
        NdisStatus.OFFLOAD_IP_ADDRESS_ENTRIES,
        NdisStatus.OFFLOAD_TCP_XMIT_BUFFER,
        NdisStatus.OFFLOAD_TCP_RCV_BUFFER,
        NdisStatus.OFFLOAD_TCP_RCV_WINDOW,
        NdisStatus.OFFLOAD_VLAN_ENTRIES,
        NdisStatus.OFFLOAD_VLAN_MISMATCH,
        NdisStatus.OFFLOAD_PATH_MTU,
        NdisStatus.OFFLOAD_CONNECTION_REJECTED,
    }
)
OTHER_OP_NODE_STATUSES = frozenset({NdisStatus.SUCCESS, NdisStatus.FAILURE})
