"""Offload policy: which host connections the `OffloadManager` offloads, when, and whether it honours
an optional (discretionary) upload request from the target (§5.4).

Modes: NEVER; ESTABLISHED (as soon as the connection may be offloaded); AFTER_BYTES (once N bytes moved
either way); AFTER_TIME (N ns after the host first saw it established); EXPLICIT (only `manager.offload()`).
A connection is never offloaded outside Established/FinWait1/FinWait2/CloseWait/Closing/LastAck
(R-OFF-24, enforced by the manager), and never beyond the target's advertised capacity.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import TYPE_CHECKING

from chimney.ndis.offload_state import TcpUploadReason
from chimney.sim.scheduler import NS_PER_MS

if TYPE_CHECKING:
    from chimney.host.tcp import Tcb


class PolicyMode(Enum):
    NEVER = "never"
    ESTABLISHED = "established"
    AFTER_BYTES = "after-bytes"
    AFTER_TIME = "after-time"
    EXPLICIT = "explicit"


@dataclass
class OffloadPolicy:
    """`wants(tcb, moved_bytes, established_for_ns)` decides; `honours(reason)` for optional uploads.

    `cooldown_ns`: after a connection came back to the host (any reason) it stays there this long before
    the policy offloads it again (avoids offload/upload ping-pong). `pinned`: TCBs the user asked to keep
    in the host (`OffloadManager.upload(tcb, pin=True)`)."""

    mode: PolicyMode = PolicyMode.ESTABLISHED
    after_bytes: int = 0
    after_ns: int = 0
    cooldown_ns: int = 50 * NS_PER_MS
    honour_optional_uploads: bool = False
    scan_interval_ns: int = NS_PER_MS
    max_offloaded: int | None = None  # below the target's capacity if set
    # R-EVT-12: on NDIS_STATUS_MEDIA_DISCONNECT the host decides; default keeps connections offloaded
    # (TCP rides out short outages), True uploads every connection.
    upload_on_media_disconnect: bool = False
    pinned: set[Tcb] = field(default_factory=set)

    @classmethod
    def never(cls) -> OffloadPolicy:
        return cls(PolicyMode.NEVER)

    @classmethod
    def established(cls, **kw: object) -> OffloadPolicy:
        return cls(PolicyMode.ESTABLISHED, **kw)  # type: ignore[arg-type]

    @classmethod
    def after_bytes_moved(cls, n: int, **kw: object) -> OffloadPolicy:
        return cls(PolicyMode.AFTER_BYTES, after_bytes=n, **kw)  # type: ignore[arg-type]

    @classmethod
    def after_time(cls, ns: int, **kw: object) -> OffloadPolicy:
        return cls(PolicyMode.AFTER_TIME, after_ns=ns, **kw)  # type: ignore[arg-type]

    @classmethod
    def explicit(cls) -> OffloadPolicy:
        return cls(PolicyMode.EXPLICIT)

    @property
    def automatic(self) -> bool:
        return self.mode not in (PolicyMode.NEVER, PolicyMode.EXPLICIT)

    def wants(self, tcb: Tcb, moved_bytes: int, established_for_ns: int) -> bool:
        if tcb in self.pinned:
            return False
        m = self.mode
        if m is PolicyMode.ESTABLISHED:
            return True
        if m is PolicyMode.AFTER_BYTES:
            return moved_bytes >= self.after_bytes
        if m is PolicyMode.AFTER_TIME:
            return established_for_ns >= self.after_ns
        return False

    def honours(self, reason: int) -> bool:
        """Mandatory reasons are always honoured; optional ones as configured (§5.4, R-EVT-07)."""
        try:
            r = TcpUploadReason(reason)
        except ValueError:
            return True  # unknown reason: safest is to take the connection back
        return r.mandatory or self.honour_optional_uploads


__all__ = ["OffloadPolicy", "PolicyMode"]
