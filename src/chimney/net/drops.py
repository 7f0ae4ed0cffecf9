"""Typed drops for the wire codecs: why a frame was rejected, and per-reason counters.
Parsers return a `Drop` instead of raising; callers count it with `DropCounters.add` or `count_drop`.
"""

from __future__ import annotations

from enum import IntEnum


class DropReason(IntEnum):
    """Why a received frame (or one layer of it) was not accepted."""

    TRUNCATED_ETHERNET = 1
    TRUNCATED_VLAN = 2
    UNKNOWN_ETHERTYPE = 3
    TRUNCATED_ARP = 10
    BAD_ARP = 11  # not Ethernet/IPv4 ARP or unknown opcode
    TRUNCATED_IPV4 = 20
    BAD_IP_VERSION = 21  # version nibble does not match the ethertype
    BAD_IHL = 22  # IHL < 5
    BAD_IP_TOTAL_LEN = 23  # total length shorter than the header
    IP_TRUNCATED = 24  # total length (IPv4) / payload length (IPv6) beyond the frame
    BAD_IPV4_CHECKSUM = 25
    BAD_IPV4_OPTIONS = 26  # option length overruns the header
    UNKNOWN_IP_PROTOCOL = 27
    TRUNCATED_IPV6 = 30
    IPV6_EXT_TRUNCATED = 31
    IPV6_UNKNOWN_EXT_HEADER = 32
    TRUNCATED_TCP = 40
    BAD_TCP_DATA_OFFSET = 41  # data offset < 5 or beyond the segment
    BAD_TCP_OPTION = 42  # option length < 2 or overrunning the option space, bad fixed-size option
    BAD_TCP_CHECKSUM = 43
    TRUNCATED_UDP = 50
    BAD_UDP_LENGTH = 51
    BAD_UDP_CHECKSUM = 52
    TRUNCATED_ICMP = 60
    BAD_ICMP_CHECKSUM = 61
    TRUNCATED_ICMPV6 = 70
    BAD_ICMPV6_CHECKSUM = 71
    BAD_ICMPV6_OPTION = 72
    PARSER_ERROR = 99  # an internal parser bug turned into a drop; tests assert it never happens


_R = DropReason
# R-STAT-07 / IP_OFFLOAD_STATS: which counter a drop feeds. Frames too short for a valid IP header are
# header errors; a valid header announcing more bytes than the frame holds is a truncated packet.
IP_HEADER_ERROR_REASONS = frozenset(
    (
        _R.TRUNCATED_IPV4,
        _R.BAD_IP_VERSION,
        _R.BAD_IHL,
        _R.BAD_IP_TOTAL_LEN,
        _R.BAD_IPV4_CHECKSUM,
        _R.BAD_IPV4_OPTIONS,
        _R.TRUNCATED_IPV6,
        _R.IPV6_EXT_TRUNCATED,
        _R.IPV6_UNKNOWN_EXT_HEADER,
    )
)
IP_TRUNCATED_REASONS = frozenset((_R.IP_TRUNCATED,))
TCP_ERROR_REASONS = frozenset((_R.TRUNCATED_TCP, _R.BAD_TCP_DATA_OFFSET, _R.BAD_TCP_OPTION, _R.BAD_TCP_CHECKSUM))


def offload_stat_for(reason: DropReason) -> str | None:
    """Name of the IP_OFFLOAD_STATS / TCP_OFFLOAD_STATS counter a drop counts in (R-STAT-07), or None."""
    if reason in IP_HEADER_ERROR_REASONS:
        return "InHeaderErrors"
    if reason in IP_TRUNCATED_REASONS:
        return "InTruncatedPackets"
    if reason in TCP_ERROR_REASONS:
        return "InErrors"  # TCP_OFFLOAD_STATS.InErrors
    return None


class Drop:
    """A rejected frame: `reason` (DropReason) and a human `detail`. Falsy, so `if not r:` also works."""

    __slots__ = ("detail", "reason")

    def __init__(self, reason: DropReason, detail: str = "") -> None:
        self.reason = reason
        self.detail = detail

    def __bool__(self) -> bool:
        return False

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Drop):
            return NotImplemented
        return self.reason == other.reason and self.detail == other.detail

    def __hash__(self) -> int:
        return hash((self.reason, self.detail))

    def __repr__(self) -> str:
        return f"<Drop {self.reason.name}: {self.detail}>"


class DropCounters:
    """Per-reason drop counts. Cheap to update on the receive path (one dict increment)."""

    __slots__ = ("counts", "last")

    def __init__(self) -> None:
        self.counts: dict[DropReason, int] = {}
        self.last: Drop | None = None

    def add(self, drop: Drop) -> None:
        self.counts[drop.reason] = self.counts.get(drop.reason, 0) + 1
        self.last = drop

    def __getitem__(self, reason: DropReason) -> int:
        return self.counts.get(reason, 0)

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def as_dict(self) -> dict[str, int]:
        return {r.name: n for r, n in sorted(self.counts.items())}

    def __repr__(self) -> str:
        return f"<DropCounters {self.as_dict()}>"


GLOBAL_DROPS = DropCounters()


def count_drop(drop: Drop, counters: DropCounters | None = None) -> Drop:
    """Count `drop` in `counters` (module-wide `GLOBAL_DROPS` by default) and return it."""
    (counters if counters is not None else GLOBAL_DROPS).add(drop)
    return drop
