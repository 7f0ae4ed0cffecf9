"""chimney.tcp: the sans-I/O TCP engine shared by the host stack and the offload target.

Public API: Connection, Listener, TcpConfig, linux_profile, the event classes and seq helpers.
"""

from chimney.tcp.cc import CongestionControl, Cubic, NewReno, make_cc
from chimney.tcp.config import MAX_RT_COUNT, MAX_RT_UNLIMITED, TcpConfig, linux_profile
from chimney.tcp.connection import Connection, TcpStateError, TcpStats, rst_for
from chimney.tcp.events import (
    Closed,
    Connected,
    DataReadable,
    EnteredTimeWait,
    Event,
    FinWait2Timeout,
    PeerClosed,
    Reset,
    SendSpace,
    SoftError,
    TimedOut,
    UrgentData,
)
from chimney.tcp.listener import Listener, isn_rfc6528
from chimney.tcp.offload import detach, export_state, import_state, update_cached
from chimney.tcp.seq import Seq, seq_add, seq_diff, seq_ge, seq_gt, seq_le, seq_lt

__all__ = [
    "MAX_RT_COUNT",
    "MAX_RT_UNLIMITED",
    "Closed",
    "CongestionControl",
    "Connected",
    "Connection",
    "Cubic",
    "DataReadable",
    "EnteredTimeWait",
    "Event",
    "FinWait2Timeout",
    "Listener",
    "NewReno",
    "PeerClosed",
    "Reset",
    "SendSpace",
    "Seq",
    "SoftError",
    "TcpConfig",
    "TcpStateError",
    "TcpStats",
    "TimedOut",
    "UrgentData",
    "detach",
    "export_state",
    "import_state",
    "isn_rfc6528",
    "linux_profile",
    "make_cc",
    "rst_for",
    "seq_add",
    "seq_diff",
    "seq_ge",
    "seq_gt",
    "seq_le",
    "seq_lt",
    "update_cached",
]
