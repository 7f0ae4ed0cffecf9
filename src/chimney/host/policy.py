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
    from chimney.tcp import TcpConfig


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
    # The values of UNCARRIED_SETTINGS the target is known to run with (what the host set the NIC up
    # for, e.g. its defaults at bind time); None: not checked. A connection whose settings differ stays
    # on the host with the reason (`OffloadManager.declined`).
    baseline: TcpConfig | None = None

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

    def uncarried(self, cfg: TcpConfig, peer_mss: int | None = None) -> str | None:
        """Why a connection with `cfg` (and the peer's MSS) must stay on the host (a setting the chimney
        cannot carry differs from `baseline`), or None."""
        base = self.baseline
        if base is None:
            return None
        if cfg.snd_mss_clamp and peer_mss is not None and cfg.mss < peer_mss:
            return (f"TCP_MAXSEG {cfg.mss} bounds the MSS we send (below the peer's {peer_mss}): no chimney field "
                    "for it (RemoteMss is the MSS the peer advertised, §2.4)")
        return uncarried_settings(cfg, base)

    def honours(self, reason: int) -> bool:
        """Mandatory reasons are always honoured; optional ones as configured (§5.4, R-EVT-07)."""
        try:
            r = TcpUploadReason(reason)
        except ValueError:
            return True  # unknown reason: safest is to take the connection back
        return r.mandatory or self.honour_optional_uploads


# TcpConfig settings with no (exact) field in the chimney state (contract §2.4 TCP_OFFLOAD_STATE_CONST/
# CACHED/DELEGATED) nor in the per-adapter NDIS_TCP_CONNECTION_OFFLOAD_PARAMETERS (R-INIT-12): an offloaded
# connection runs the target's own behaviour for them. name -> why it cannot be carried.
UNCARRIED_SETTINGS: dict[str, str] = {
    "fin_wait2_timeout_ns": "no chimney field for the FIN_WAIT_2 timeout (the target's timer starts at "
    "120 s, R-TMR-05)",
    "user_timeout_ns": "MaxRT cannot carry TCP_USER_TIMEOUT: it bounds only the time spent retransmitting, "
    "counted from the first retransmission (R-TMR-17)",
    "challenge_ack_limit": "no chimney field for the challenge-ACK rate limit (RFC 5961 7)",
    "oow_ack_interval_ns": "no chimney field for the out-of-window ACK rate limit",
    "rfc1337": "no chimney field for RFC 1337 TIME-WAIT RST handling",
    "zero_window_probe_octet": "no chimney field for the zero-window probe style (RFC 9293 3.8.6.1)",
    "drop_missing_tsopt": "no chimney field for segments without TSopt (RFC 7323 3.2)",
    "nagle_minshall": "no chimney field for the Nagle variant (TCP_FLAG_NAGLING_ENABLED is on/off)",
    "nodelay_pushes": "no chimney field for whether clearing Nagle sends held data",
    "rst_ack_on_abort": "no chimney field for the abortive RST's form",
    "rst_on_data_after_close": "no chimney field for close() vs shutdown() (R-DISC-13: the target keeps "
    "receiving after its FIN)",
    "rto_min_ns": "no chimney field for the minimum RTO",
    "rto_max_ns": "no chimney field for the maximum RTO",
    "persist_min_ns": "no chimney field for the minimum persist interval",
    "persist_max_ns": "no chimney field for the maximum persist interval",
    "dsack": "no chimney field for D-SACK generation (RFC 2883): TCP_FLAG_SACK_ENABLED covers SACK only",
}


def uncarried_settings(cfg: TcpConfig, baseline: TcpConfig) -> str | None:
    """The first setting of UNCARRIED_SETTINGS where `cfg` differs from `baseline`, as a reason."""
    for name, why in UNCARRIED_SETTINGS.items():
        v, b = getattr(cfg, name), getattr(baseline, name)
        if v != b:
            return f"{name}={v} differs from the target's {b}: {why}"
    return None


__all__ = ["UNCARRIED_SETTINGS", "OffloadPolicy", "PolicyMode", "uncarried_settings"]
