"""The nine offload state structures (contract §2.4) and the chimney enumerations (§5.3-5.8).

Field names are the C names in snake_case. Tick-valued fields are in host ticks (TicksPerSecond).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum, IntFlag
from typing import Any

TIMER_NOT_RUNNING = 0xFFFFFFFF  # KeepAlive/Retransmit TimeoutDelta "-1"
BACKLOG_UNSUPPORTED = 0xFFFFFFFF
MAX_RT_UNLIMITED = 0xFFFFFFFF
NULL_DL_ADDRESS = bytes(32)


class OffloadStateType(IntEnum):
    """OFFLOAD_STATE_TYPE: Header.Type of a block list node (§5.6)."""

    NeighborOffloadConstState = 1
    NeighborOffloadCachedState = 2
    NeighborOffloadDelegatedState = 3
    NeighborOffloadState = 4
    Ip4OffloadConstState = 5
    Ip4OffloadCachedState = 6
    Ip4OffloadDelegatedState = 7
    Ip4OffloadState = 8
    Ip6OffloadConstState = 9
    Ip6OffloadCachedState = 10
    Ip6OffloadDelegatedState = 11
    Ip6OffloadState = 12
    TcpOffloadConstState = 13
    TcpOffloadCachedState = 14
    TcpOffloadDelegatedState = 15
    TcpOffloadResourceState = 16
    TcpOffloadState = 17
    FilterReservedOffloadState = 0xFE


class Layer(IntEnum):
    NEIGHBOR = 0
    PATH = 1
    TCP = 2


def layer_of(t: OffloadStateType) -> Layer | None:
    if 1 <= t <= 4:
        return Layer.NEIGHBOR
    if 5 <= t <= 12:
        return Layer.PATH
    if 13 <= t <= 17:
        return Layer.TCP
    return None


class TcpConnectionState(IntEnum):
    """TCP_OFFLOAD_CONNECTION_STATE (§5.7)."""

    Closed = 0
    Listen = 1
    SynSent = 2
    SynRcvd = 3
    Established = 4
    FinWait1 = 5
    FinWait2 = 6
    CloseWait = 7
    Closing = 8
    LastAck = 9
    TimeWait = 10
    MaxState = 11


OFFLOADABLE_STATES = frozenset(
    {
        TcpConnectionState.Established,
        TcpConnectionState.FinWait1,
        TcpConnectionState.FinWait2,
        TcpConnectionState.CloseWait,
        TcpConnectionState.Closing,
        TcpConnectionState.LastAck,
    }
)


class TcpOffloadEventType(IntEnum):
    """TCP_OFFLOAD_EVENT_TYPE for NdisTcpOffloadEventHandler (§5.3)."""

    TcpIndicateSendBacklogChange = 1
    TcpIndicateDisconnect = 2
    TcpIndicateRetrieve = 3
    TcpIndicateAbort = 4


class TcpUploadReason(IntEnum):
    """TCP_UPLOAD_REASON (§5.4)."""

    LowActivity = 1
    HighDropRate = 2
    SmallIO = 3
    NoBufferPreposting = 4
    ReceivedUrgentData = 5
    HighFragmentation = 6
    HighOutOfOrderPackets = 7
    TimeoutExpiration = 8
    InvalidState = 9
    UploadRequested = 10
    HardwareFailure = 11

    @property
    def mandatory(self) -> bool:
        return self >= TcpUploadReason.ReceivedUrgentData and self not in (
            TcpUploadReason.HighFragmentation,
            TcpUploadReason.HighOutOfOrderPackets,
        )


class IndicateOffloadEvent(IntEnum):
    """INDICATE_OFFLOAD_EVENT for NdisMOffloadEventIndicate (§5.5)."""

    NeighborReachabilityInDoubt = 1
    NeighborReachabilityQuery = 2


class TcpConstFlags(IntFlag):
    TIMESTAMP_ENABLED = 0x01
    SACK_ENABLED = 0x02
    WINDOW_SCALING_ENABLED = 0x04


class TcpCachedFlags(IntFlag):
    KEEP_ALIVE_ENABLED = 0x01
    NAGLING_ENABLED = 0x02
    KEEP_ALIVE_RESTART = 0x04
    MAX_RT_RESTART = 0x08
    UPDATE_RCV_WND = 0x10


TCP_DISCONNECT_GRACEFUL_CLOSE = 0x01
TCP_DISCONNECT_ABORTIVE_CLOSE = 0x02
NDIS_TCP_CHIMNEY_OFFLOAD = 1  # NDIS_CHIMNEY_OFFLOAD_TYPE NdisTcpChimneyOffload


@dataclass(slots=True)
class OffloadStateHeader:
    """OFFLOAD_STATE_HEADER: Length is set by NDIS; RecognizedOptions is reserved."""

    length: int = 0
    recognized_options: int = 0


# ---- neighbor ------------------------------------------------------------------------------------


@dataclass(slots=True)
class NeighborOffloadStateConst:
    header: OffloadStateHeader = field(default_factory=OffloadStateHeader)
    dl_source_address: bytes = NULL_DL_ADDRESS  # all-zero = use the interface MAC
    vlan_id: int = 0  # 12 bits; 0 = not significant


@dataclass(slots=True)
class NeighborOffloadStateCached:
    header: OffloadStateHeader = field(default_factory=OffloadStateHeader)
    dl_destination_address: bytes = NULL_DL_ADDRESS
    host_reachability_delta: int = 0  # HRD, host ticks


@dataclass(slots=True)
class NeighborOffloadStateDelegated:
    header: OffloadStateHeader = field(default_factory=OffloadStateHeader)
    nic_reachability_delta: int = 0  # NRD, host ticks


# ---- path ----------------------------------------------------------------------------------------


@dataclass(slots=True)
class PathOffloadStateConst:
    header: OffloadStateHeader = field(default_factory=OffloadStateHeader)
    source_address: bytes = b""  # 4 or 16 bytes, network order
    destination_address: bytes = b""


@dataclass(slots=True)
class PathOffloadStateCached:
    header: OffloadStateHeader = field(default_factory=OffloadStateHeader)
    path_mtu: int = 1500


@dataclass(slots=True)
class PathOffloadStateDelegated:
    """No delegated path variables exist (header only)."""

    header: OffloadStateHeader = field(default_factory=OffloadStateHeader)


# ---- TCP -----------------------------------------------------------------------------------------


@dataclass(slots=True)
class TcpOffloadStateConst:
    header: OffloadStateHeader = field(default_factory=OffloadStateHeader)
    flags: int = 0  # TcpConstFlags
    remote_port: int = 0
    local_port: int = 0
    snd_wind_scale: int = 0  # 4 bits
    rcv_wind_scale: int = 0  # 4 bits
    remote_mss: int = 536
    hash_value: int = 0


@dataclass(slots=True)
class TcpOffloadStateCached:
    header: OffloadStateHeader = field(default_factory=OffloadStateHeader)
    flags: int = 0  # TcpCachedFlags
    initial_rcv_wnd: int = 65535
    rcv_indication_size: int = 0
    ka_probe_count: int = 0
    ka_timeout: int = 0  # ticks
    ka_interval: int = 0  # ticks
    max_rt: int = 0  # ticks; 0 = use TcpMaximumRetransmissions; 0xFFFFFFFF unlimited
    flow_label: int = 0  # 20 bits, IPv6 only
    ttl_or_hop_limit: int = 64
    tos_or_traffic_class: int = 0
    user_priority: int = 0  # 3 bits


@dataclass(slots=True)
class KeepAliveState:
    probe_count: int = 0
    timeout_delta: int = TIMER_NOT_RUNNING


@dataclass(slots=True)
class RetransmitState:
    count: int = 0
    timeout_delta: int = TIMER_NOT_RUNNING


@dataclass(slots=True)
class TcpOffloadStateDelegated:
    """TCP_OFFLOAD_STATE_DELEGATED. The C unions are explicit optional fields (§2.4 modelling note):
    initiate/terminate use send_data_head/tail + buffered_data, query uses the two backlog sizes."""

    header: OffloadStateHeader = field(default_factory=OffloadStateHeader)
    state: TcpConnectionState = TcpConnectionState.Established
    flags: int = 0
    rcv_nxt: int = 0
    rcv_wnd: int = 0
    snd_una: int = 0
    snd_nxt: int = 0
    snd_max: int = 0
    snd_wnd: int = 0
    max_snd_wnd: int = 0
    send_wl1: int = 0
    cwnd: int = 0
    ss_thresh: int = 0
    srtt: int = 0  # ticks x 8 (R-OFF-25, R-QRY-07), saturating at 0xFFFF (§6.12)
    rtt_var: int = 0  # ticks x 4
    ts_recent: int = 0
    ts_recent_age: int = 0  # ticks
    ts_time: int = 0
    total_rt: int = 0  # ticks
    dup_ack_count: int = 0
    snd_wnd_probe_count: int = 0
    keep_alive: KeepAliveState = field(default_factory=KeepAliveState)
    retransmit: RetransmitState = field(default_factory=RetransmitState)
    # union A
    send_data_head: Any = None  # NetBufferList | None
    send_data_tail: Any = None
    send_backlog_size: int | None = None
    # union B
    buffered_data: Any = None  # NetBufferList chain | None
    receive_backlog_size: int | None = None
    dwnd: int = 0  # NDIS 6.1, opaque pass-through (§6.13)


StateStruct = (
    NeighborOffloadStateConst
    | NeighborOffloadStateCached
    | NeighborOffloadStateDelegated
    | PathOffloadStateConst
    | PathOffloadStateCached
    | PathOffloadStateDelegated
    | TcpOffloadStateConst
    | TcpOffloadStateCached
    | TcpOffloadStateDelegated
)


def scale_srtt(ticks: float) -> int:
    """Delegated SRtt is exchanged as 8 x SRTT ticks, saturating at USHORT (R-OFF-25, §6.12)."""
    return min(0xFFFF, max(0, round(ticks * 8)))


def scale_rttvar(ticks: float) -> int:
    return min(0xFFFF, max(0, round(ticks * 4)))
