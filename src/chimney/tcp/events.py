"""Events a `Connection` reports to its user (drained with `pop_events()`).

Frozen slotted dataclasses; compare by value so tests can `assert Connected() in events`.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Connected:
    """The three-way handshake completed (ESTABLISHED)."""


@dataclass(frozen=True, slots=True)
class DataReadable:
    """`n` more in-order bytes can be read; `push` is True when the data carried PSH (RFC 9293 3.9.1.2)."""

    n: int
    push: bool


@dataclass(frozen=True, slots=True)
class SendSpace:
    """A send() that was short can now accept `n` bytes."""

    n: int


@dataclass(frozen=True, slots=True)
class PeerClosed:
    """The peer's FIN arrived and every byte before it has been read."""


@dataclass(frozen=True, slots=True)
class Reset:
    """The connection was reset by the peer (`reason` "reset") or refused in SYN-SENT ("refused")."""

    reason: str = "reset"


@dataclass(frozen=True, slots=True)
class Closed:
    """The connection reached CLOSED; `reason` says how ("normal", "reset", "timeout", "abort",
    "fin_wait2_timeout", "time_wait_done")."""

    reason: str = "normal"


@dataclass(frozen=True, slots=True)
class TimedOut:
    """The connection gave up: `what` is "retransmit", "syn", "persist", "keepalive" or "user_timeout"."""

    what: str


@dataclass(frozen=True, slots=True)
class UrgentData:
    """The peer signalled urgent data; `mark` is the stream offset (bytes from stream start) just past it."""

    mark: int


@dataclass(frozen=True, slots=True)
class SoftError:
    """An ICMP soft error (RFC 1122 4.2.3.9) was reported; the connection continues."""

    kind: str
    mtu: int = 0


@dataclass(frozen=True, slots=True)
class EnteredTimeWait:
    """The connection entered TIME-WAIT (R-TMR-03: an offload target asks for upload here)."""


@dataclass(frozen=True, slots=True)
class FinWait2Timeout:
    """The FIN_WAIT_2 timer expired (R-TMR-06); the connection moved to CLOSED (R-TMR-24)."""


Event = (
    Connected
    | DataReadable
    | SendSpace
    | PeerClosed
    | Reset
    | Closed
    | TimedOut
    | UrgentData
    | SoftError
    | EnteredTimeWait
    | FinWait2Timeout
)
