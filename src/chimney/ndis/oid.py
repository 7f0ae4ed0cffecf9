"""Chimney OIDs (contract §3.5) with their ntddndis.h values, the configuration / capability / statistics
structures (§2.6, §2.7) and the NDIS_OID_REQUEST object routed by `Ndis.oid_request`.

NDIS name -> Python name: NDIS_OID_REQUEST -> NdisOidRequest, NDIS_TCP_CONNECTION_OFFLOAD ->
NdisTcpConnectionOffload, NDIS_TCP_CONNECTION_OFFLOAD_PARAMETERS -> NdisTcpConnectionOffloadParameters,
TCP_OFFLOAD_STATS -> TcpOffloadStats, IP_OFFLOAD_STATS -> IpOffloadStats.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from enum import IntEnum
from typing import Any

from chimney.ndis.status import NdisStatus

# ntddndis.h values.
OID_TCP_TASK_OFFLOAD = 0xFC010201
OID_TCP4_OFFLOAD_STATS = 0xFC010207
OID_TCP6_OFFLOAD_STATS = 0xFC010208
OID_IP4_OFFLOAD_STATS = 0xFC010209
OID_IP6_OFFLOAD_STATS = 0xFC01020A
OID_TCP_OFFLOAD_CURRENT_CONFIG = 0xFC01020B
OID_TCP_OFFLOAD_PARAMETERS = 0xFC01020C
OID_TCP_OFFLOAD_HARDWARE_CAPABILITIES = 0xFC01020D
OID_TCP_CONNECTION_OFFLOAD_CURRENT_CONFIG = 0xFC01020E
OID_TCP_CONNECTION_OFFLOAD_HARDWARE_CAPABILITIES = 0xFC01020F
OID_TCP_CONNECTION_OFFLOAD_PARAMETERS = 0xFC030201
OID_PNP_SET_POWER = 0xFD010101

OID_NAMES: dict[int, str] = {
    v: k for k, v in list(globals().items()) if k.startswith("OID_") and isinstance(v, int)
}

# OIDs NDIS answers itself from the miniport's registered attributes (§3.5); sets are not supported.
NDIS_ANSWERED_QUERIES = frozenset(
    {OID_TCP_CONNECTION_OFFLOAD_CURRENT_CONFIG, OID_TCP_CONNECTION_OFFLOAD_HARDWARE_CAPABILITIES}
)
# Either name is accepted as the configuration set (§6.19).
CONFIGURATION_SETS = frozenset({OID_TCP_CONNECTION_OFFLOAD_PARAMETERS, OID_TCP_TASK_OFFLOAD})

NDIS_ENCAPSULATION_IEEE_802_3 = 0x00000002
NDIS_ENCAPSULATION_IEEE_LLC_SNAP_ROUTED = 0x00000004
NDIS_OBJECT_TYPE_DEFAULT = 0x80


class NdisRequestType(IntEnum):
    """NDIS_REQUEST_TYPE values used here."""

    QUERY = 0  # NdisRequestQueryInformation
    SET = 1  # NdisRequestSetInformation
    QUERY_STATISTICS = 2  # NdisRequestQueryStatistics


class NdisDevicePowerState(IntEnum):
    D0 = 1
    D1 = 2
    D2 = 3
    D3 = 4


class NdisOidRequest:
    """NDIS_OID_REQUEST, reduced to what the chimney needs: the buffer is a Python object.

    `status` is written by whoever completes the request; `bytes_written` mirrors
    DATA.QUERY_INFORMATION.BytesWritten for queries. `ndis_reserved` is NDIS's routing stack
    (so a request re-issued by an IM completes back to the IM, then to the original caller).
    """

    __slots__ = ("buffer", "bytes_written", "ndis_reserved", "oid", "port_number", "request_id", "status", "type")

    _next_id = 0

    def __init__(self, type: NdisRequestType, oid: int, buffer: Any = None, port_number: int = 0) -> None:
        self.type = type
        self.oid = oid
        self.buffer = buffer
        self.port_number = port_number
        self.status: int = NdisStatus.PENDING
        self.bytes_written = 0
        self.ndis_reserved: list[Any] = []
        NdisOidRequest._next_id += 1
        self.request_id = NdisOidRequest._next_id

    @classmethod
    def query(cls, oid: int, buffer: Any = None) -> NdisOidRequest:
        return cls(NdisRequestType.QUERY, oid, buffer)

    @classmethod
    def set(cls, oid: int, buffer: Any = None) -> NdisOidRequest:
        return cls(NdisRequestType.SET, oid, buffer)

    def __repr__(self) -> str:
        name = OID_NAMES.get(self.oid, f"0x{self.oid:08X}")
        return f"<NdisOidRequest #{self.request_id} {self.type.name} {name} status=0x{self.status:08X}>"


def _u(value: int, bits: int, name: str) -> None:
    if not 0 <= value < (1 << bits):
        raise ValueError(f"{name}={value} does not fit in u{bits}")


@dataclass(slots=True)
class NdisTcpConnectionOffloadEncapsulation:
    """NDIS_TCP_CONNECTION_OFFLOAD_ENCAPSULATION-like settings (per IP version: enabled, type, header size)."""

    v4_enabled: bool = True
    v4_encapsulation_type: int = NDIS_ENCAPSULATION_IEEE_802_3
    v4_header_size: int = 14
    v6_enabled: bool = True
    v6_encapsulation_type: int = NDIS_ENCAPSULATION_IEEE_802_3
    v6_header_size: int = 14


@dataclass(slots=True)
class NdisTcpConnectionOffload:
    """NDIS_TCP_CONNECTION_OFFLOAD: capabilities / current configuration (§2.6)."""

    encapsulation: int = NDIS_ENCAPSULATION_IEEE_802_3
    support_ipv4: bool = True
    support_ipv6: bool = True
    support_ipv6_extension_headers: bool = False
    support_sack: bool = True
    congestion_algorithm: int = 0
    tcp_connection_offload_capacity: int = 1024
    flags: int = 0
    revision: int = 1

    def problems(self) -> list[tuple[str, str]]:
        """(rule id, message) for each capability rule this advertisement breaks (R-INIT-07..09)."""
        out: list[tuple[str, str]] = []
        if self.tcp_connection_offload_capacity <= 0:
            out.append(("R-INIT-07", "TcpConnectionOffloadCapacity must be reported (> 0)"))
        if not (self.support_ipv4 or self.support_ipv6):
            out.append(("R-INIT-08", "neither IPv4 nor IPv6 is supported"))
        if not self.encapsulation & (NDIS_ENCAPSULATION_IEEE_802_3 | NDIS_ENCAPSULATION_IEEE_LLC_SNAP_ROUTED):
            out.append(("R-INIT-09", f"Encapsulation 0x{self.encapsulation:x} has neither IEEE_802_3 nor LLC_SNAP_ROUTED"))
        return out


@dataclass(slots=True)
class NdisTcpConnectionOffloadParameters:
    """NDIS_TCP_CONNECTION_OFFLOAD_PARAMETERS (§2.6): the host's operating parameters for offloads."""

    encapsulation: NdisTcpConnectionOffloadEncapsulation = field(default_factory=NdisTcpConnectionOffloadEncapsulation)
    ticks_per_second: int = 1000
    tcp_ack_frequency: int = 2
    tcp_delayed_ack_ticks: int = 200
    tcp_maximum_retransmissions: int = 5
    tcp_doubt_reachability_retransmissions: int = 3
    tcp_sws_prevention_ticks: int = 1000
    tcp_duplicate_ack_threshold: int = 3
    tcp_push_ticks: int = 500
    nce_stale_ticks: int = 30000
    congestion_algorithm: int = 0
    revision: int = 1

    def __post_init__(self) -> None:
        for name in ("tcp_ack_frequency", "tcp_delayed_ack_ticks", "tcp_maximum_retransmissions",
                     "tcp_doubt_reachability_retransmissions"):
            _u(getattr(self, name), 8, name)
        for name in ("ticks_per_second", "tcp_sws_prevention_ticks", "tcp_duplicate_ack_threshold",
                     "tcp_push_ticks", "nce_stale_ticks"):
            _u(getattr(self, name), 32, name)
        if self.ticks_per_second == 0:
            raise ValueError("TicksPerSecond must be non-zero")


def _wrap(value: int, bits: int) -> int:
    return value & ((1 << bits) - 1)


class _Stats:
    """Counters that wrap to zero at their maximum (§2.7); `add` wraps, `reset` zeroes (a stats OID set)."""

    __slots__ = ()
    _bits: dict[str, int] = {}

    def add(self, name: str, n: int = 1) -> None:
        setattr(self, name, _wrap(getattr(self, name) + n, self._bits[name]))

    def reset(self) -> None:
        for f in fields(self):  # type: ignore[arg-type]
            setattr(self, f.name, 0)


@dataclass(slots=True)
class TcpOffloadStats(_Stats):
    """TCP_OFFLOAD_STATS (OID_TCP4/6_OFFLOAD_STATS): offloaded connections only."""

    in_segments: int = 0
    out_segments: int = 0
    currently_established: int = 0
    reset_established: int = 0
    retransmitted_segments: int = 0
    in_errors: int = 0
    out_resets: int = 0

    _bits = {
        "in_segments": 64,
        "out_segments": 64,
        "currently_established": 32,
        "reset_established": 32,
        "retransmitted_segments": 32,
        "in_errors": 32,
        "out_resets": 32,
    }


@dataclass(slots=True)
class IpOffloadStats(_Stats):
    """IP_OFFLOAD_STATS (OID_IP4/6_OFFLOAD_STATS)."""

    in_receives: int = 0
    in_octets: int = 0
    in_delivers: int = 0
    out_requests: int = 0
    out_octets: int = 0
    in_header_errors: int = 0
    in_truncated_packets: int = 0
    in_discards: int = 0
    out_discards: int = 0
    out_no_routes: int = 0

    _bits = {
        "in_receives": 64,
        "in_octets": 64,
        "in_delivers": 64,
        "out_requests": 64,
        "out_octets": 64,
        "in_header_errors": 32,
        "in_truncated_packets": 32,
        "in_discards": 32,
        "out_discards": 32,
        "out_no_routes": 32,
    }
