"""The host side of TCP chimney: `OffloadManager` (decides and performs initiate / terminate offload, keeps
the shared neighbor and path offload objects) and `ChimneyPath`, the TcbPath of an offloaded connection.

Logical switch (§1.2): a TCB's I/O goes through `tcb.path`; `HostPath` runs the host engine, `ChimneyPath`
carries the same socket calls over NdisOffloadTcpSend / Disconnect / Receive(zero-byte) / ReceiveReturn and
turns completions, receive indications and TCP events back into socket state.

NDIS name -> Python name:
  NdisInitiateOffload / NdisTerminateOffload -> Ndis.initiate_offload / terminate_offload (called by
      OffloadManager._initiate_call (R-NBR-08 checked) / upload, _terminate_objects); ProtocolInitiateOffloadComplete -> initiate_offload_complete;
      ProtocolTerminateOffloadComplete -> terminate_offload_complete
  NdisOffloadTcpSend -> ChimneyPath._issue_send; ProtocolTcpOffloadSendComplete -> OffloadManager.send_complete
  NdisOffloadTcpDisconnect -> ChimneyPath._disconnect; ProtocolTcpOffloadDisconnectComplete -> disconnect_complete
  NdisOffloadTcpForward -> OffloadManager.forward (R-FWD-03 checked; from ChimneyPath._forward_held);
      ProtocolTcpOffloadForwardComplete -> forward_complete
  NdisOffloadTcpReceive (zero-byte re-enable) -> ChimneyPath._post_zero_receive; ..ReceiveComplete -> receive_complete
  ProtocolTcpOffloadReceiveIndicate -> receive_indicate; NdisOffloadTcpReceiveReturn -> ChimneyPath._flush_returns
  ProtocolTcpOffloadEvent -> tcp_event; ProtocolIndicateOffloadEvent -> indicate_offload_event
  NdisUpdateOffload -> OffloadManager.update_tcp / _pump_update / _pump_relinks, all through _update_call
      (R-UPD-04 checked; socket options, neighbor MAC, PMTU down and up, route change re-link / route MTU);
      ProtocolUpdateOffloadComplete -> update_offload_complete
  NdisInvalidateOffload -> OffloadManager.invalidate (route removed, neighbor FAILED or removed);
      ProtocolInvalidateOffloadComplete -> invalidate_offload_complete
  NdisQueryOffloadState -> OffloadManager.query (and chimney.host.netstat); ProtocolQueryOffloadComplete ->
      query_offload_complete
  NdisOidRequest(OID_PNP_SET_POWER) -> OffloadManager.set_power; OID_TCP4/6_OFFLOAD_STATS,
      OID_IP4/6_OFFLOAD_STATS -> offload_stats / reset_offload_stats
  ProtocolStatusEx (via NdisHostBinding.status_ex) -> OffloadManager.status_indication

Segments the host receives for a connection while its offload is in progress are kept and forwarded with
NdisOffloadTcpForward once the offload completed (R-FWD-03: never during the operation); segments received
while it is being terminated are kept and fed to the resumed host engine after the upload.

Causes of updates and invalidates arrive as events, never by polling: the interface's NeighborCache tells
of a new MAC (update, R-UPD-13) and of a FAILED / removed entry (invalidate); RouteTable edits schedule
`route_changed` (re-link with an update tree rooted at the new neighbor, R-UPD-03, or invalidate); the
PathMtuCache tells of a lower PMTU (ICMP) and of a learned value aging out (the PMTU rises back to the
route MTU): either way the offloaded path's cached PathMtu is updated.

Host invariants are checked where the host makes the call, through the NDIS verifier (a host bug raises
ContractViolation with the rule id): R-NBR-08 (HRD == NRD in every neighbor the host offloads) at
NdisInitiateOffload, R-UPD-04 (an update tree never re-links a TCP node) at NdisUpdateOffload, R-FWD-03 (no
NdisOffloadTcpForward while the connection's offload or termination is in progress) at the forward, and
R-INIT-17 (one protocol enables a NIC's TCP offload) in NdisHostBinding.enable_offload.
"""

from __future__ import annotations

import copy
import errno
import itertools
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Any

from chimney.host.ip import IcmpError
from chimney.host.ndis_binding import NdisHostBinding, offload_parameters
from chimney.host.neighbor import Neighbor, NeighborChange, NeighborState
from chimney.host.policy import OffloadPolicy
from chimney.host.stack import HostStack
from chimney.host.tcp import HostPath, Tcb, TcbPath
from chimney.links.impair import Impairments
from chimney.links.p2p import Link
from chimney.ndis.blocklist import (
    NdisOffloadHandle,
    NodeRole,
    ProtocolOffloadBlockList,
    iter_tree,
    iter_tree_depth,
    node_role,
)
from chimney.ndis.buffers import Mdl, NblInfo, NetBuffer, NetBufferList, chain_nbls, split_nbl_chain
from chimney.ndis.checks_chimney import ChimneyChecks
from chimney.ndis.core import Binding, BoundaryChecks, Ndis
from chimney.ndis.offload_state import (
    OFFLOADABLE_STATES,
    TCP_DISCONNECT_ABORTIVE_CLOSE,
    TCP_DISCONNECT_GRACEFUL_CLOSE,
    IndicateOffloadEvent,
    Layer,
    NeighborOffloadStateCached,
    NeighborOffloadStateConst,
    NeighborOffloadStateDelegated,
    OffloadStateType,
    PathOffloadStateCached,
    PathOffloadStateConst,
    PathOffloadStateDelegated,
    TcpCachedFlags,
    TcpConnectionState,
    TcpOffloadEventType,
    TcpOffloadStateCached,
    TcpOffloadStateConst,
    TcpOffloadStateDelegated,
    TcpUploadReason,
)
from chimney.ndis.oid import (
    OID_IP4_OFFLOAD_STATS,
    OID_IP6_OFFLOAD_STATS,
    OID_PNP_SET_POWER,
    OID_TCP4_OFFLOAD_STATS,
    OID_TCP6_OFFLOAD_STATS,
    IpOffloadStats,
    NdisDevicePowerState,
    NdisOidRequest,
    TcpOffloadStats,
)
from chimney.ndis.status import NdisStatus
from chimney.ndis.verifier import Mode, Verifier
from chimney.net.frame import Frame
from chimney.net.tcp import TcpSegment
from chimney.sim.scheduler import NS_PER_MS, NS_PER_S
from chimney.sim.tasks import SimFuture
from chimney.tcp import Closed, Connection, DataReadable, PeerClosed, Reset, SendSpace, TcpStateError
from chimney.tcp.buffers import ReceiveQueue
from chimney.tcp.events import Event
from chimney.tcp.offload import EXPORTABLE_STATES

_SUCCESS = NdisStatus.SUCCESS
_PARTIAL = NdisStatus.OFFLOAD_PARTIAL_SUCCESS
_OK = (NdisStatus.SUCCESS, NdisStatus.OFFLOAD_PARTIAL_SUCCESS)
_BYTES = NblInfo.TcpOffloadBytesTransferred
_UIP = NdisStatus.UPLOAD_IN_PROGRESS
S = TcpConnectionState
MASK = 0xFFFFFFFF
CACHED_OPTIONS = frozenset(
    {"nagle", "keepalive", "keepalive_idle_ns", "keepalive_interval_ns", "keepalive_count", "rcv_buf", "max_rt_ns",
     "user_timeout_ns"}
)
KEEPALIVE_OPTIONS = frozenset({"keepalive", "keepalive_idle_ns", "keepalive_interval_ns", "keepalive_count"})
_ONE_SHOT = TcpCachedFlags.KEEP_ALIVE_RESTART | TcpCachedFlags.MAX_RT_RESTART | TcpCachedFlags.UPDATE_RCV_WND
HISTORY_LEN = 4096
CHIMNEY_SEND_BACKLOG = 1 << 20  # bytes kept posted on an offloaded connection without a backlog hint
_HALF_CLOSED = frozenset({TcpConnectionState.FinWait1, TcpConnectionState.FinWait2, TcpConnectionState.CloseWait})
SEND_NBL_BYTES = 64 * 1024  # send data handed over at offload: one NBL per this many bytes (MDLs chained)


class Phase(Enum):
    OFFLOADING = "offloading"
    OFFLOADED = "offloaded"
    TERMINATING = "terminating"
    DONE = "done"


class OffloadedObject:
    """A neighbor or path the host offloaded (shared by every connection above it, §1.4). `refs` counts
    dependents offloaded or being offloaded; it is terminated only at 0 (R-TRM-04)."""

    __slots__ = ("handle", "host", "invalid", "key", "kind", "mtu", "next_update", "ops", "parent", "phase", "refs",
                 "updating", "v6")

    def __init__(self, kind: str, key: tuple[Any, ...], host: Any, parent: OffloadedObject | None, v6: bool) -> None:
        self.kind = kind
        # State operations on this object (R-UPD-05, R-TRM-05): query/update/invalidate in flight, one
        # update at a time with the next one queued (latest CACHED wins), no new work once invalidated.
        self.ops = 0
        self.updating = False
        self.next_update: Any = None
        self.invalid = False
        self.key = key
        self.host = host  # the host's Neighbor / route.Path
        self.parent = parent
        self.handle = NdisOffloadHandle(self)
        self.phase = Phase.OFFLOADING
        self.refs = 0
        self.v6 = v6
        self.mtu = 0  # path: the PathMtu the target has, or will have once the queued update is done

    def __repr__(self) -> str:
        return f"<Offloaded {self.kind} {self.key!r} {self.phase.value} refs={self.refs}>"


# The shim this name stood for (NetBufferListChain stamp at NdisInitiateOffload, hand-back at failed initiates
# and terminates) is what core.BoundaryChecks.chain_down / chains_back do now; the host runs the full
# verifier. The name stays for its importers (serve, packetdrill.harness).
HostChimneyChecks = ChimneyChecks


# ====================================================================================== ChimneyPath


class ChimneyPath(TcbPath):
    """The I/O path of an offloaded (or being offloaded / uploaded) connection."""

    __slots__ = (
        "aborted",
        "at_target",
        "cached",
        "cfg_changes",
        "const",
        "failed_bytes",
        "failed_sends",
        "handle",
        "held_bytes",
        "held_segs",
        "held_sends",
        "in_send",
        "invalid",
        "manager",
        "next_update",
        "ops",
        "out_bytes",
        "path_obj",
        "pending_abort",
        "pending_close",
        "pending_shutdown",
        "phase",
        "posts_out",
        "rd_want",
        "refused",
        "returns",
        "rx_refs",
        "rx_size",
        "rxq",
        "send_backlog",
        "send_backlog_hint",
        "sendq",
        "shut_sent",
        "tcp_state",
        "updating",
        "upload_reason",
        "upload_wait",
        "want_space",
        "zero_post_pending",
    )

    kind = "chimney"

    def __init__(self, manager: OffloadManager, tcb: Tcb, state: TcpConnectionState) -> None:
        super().__init__(tcb)
        self.manager = manager
        self.handle = NdisOffloadHandle(self)
        self.phase = Phase.OFFLOADING
        self.tcp_state = state
        self.const: TcpOffloadStateConst | None = None
        self.cached: TcpOffloadStateCached | None = None
        self.path_obj: OffloadedObject | None = None
        self.sendq: deque[NetBufferList] = deque()  # NBLs at the target, in issue order
        self.send_backlog: list[NetBufferList] = []
        self.in_send = False
        self.out_bytes = 0
        self.held_sends: list[memoryview | bytes] = []  # accepted from the user, not given to the target
        self.held_bytes = 0
        # Sends the target completed with UPLOAD_IN_PROGRESS: unacknowledged, re-sent by the host after the
        # upload, before anything held later (issue order is completion order: the target's FIFO).
        self.failed_sends: list[bytes] = []
        self.failed_bytes = 0
        self.held_segs: list[tuple[TcpSegment, Frame | None]] = []
        self.rxq: deque[list[Any]] = deque()  # [view, nbl | None]
        self.rx_size = 0
        self.rx_refs: dict[int, list[Any]] = {}  # nbl serial -> [nbl, views left]
        self.returns: list[NetBufferList] = []
        self.refused = False
        # Receive window through the chimney: the target's window is SO_RCVBUF minus what it buffers, so the
        # socket keeps no data the application has not asked for. Indications are refused (R-IND-05/06)
        # except while recv() is taking `rd_want` bytes; `at_target` is what the last refusal offered
        # (buffered at the target, readable), and recv() re-enables indications with a zero-byte
        # receive request (R-IND-08/10) to take it.
        self.at_target = 0
        self.rd_want = 0
        self.zero_post_pending = False
        self.posts_out = 0
        # The socket may have been waiting on the host path when it was frozen: wake it at the first
        # completion rather than lose that wake-up.
        self.want_space = True
        self.shut_sent = False
        self.pending_shutdown = False
        self.pending_abort = False
        self.pending_close = False  # close() while being uploaded for it: the host engine closes
        self.aborted = False
        self.upload_reason: str | None = None
        self.send_backlog_hint = 0xFFFFFFFF
        self.cfg_changes: dict[str, Any] = {}
        self.ops = 0  # query/update/invalidate in flight (R-TRM-05: no terminate before they complete)
        self.updating = False
        self.next_update: TcpOffloadStateCached | None = None
        self.invalid = False
        self.upload_wait: str | None = None  # an upload asked for while ops were in flight

    def __repr__(self) -> str:
        return f"<ChimneyPath {self.phase.value} {self.tcp_state.name} out={self.out_bytes} rx={self.rx_size}>"

    # ------------------------------------------------------------------ socket side

    @property
    def readable(self) -> int:
        # Refused data is readable only while recv() can fetch it (`at_target` stays 0 unless the manager
        # holds unread data at the target); during an upload it comes back to the host engine with the
        # terminate's BufferedData (the socket is woken then).
        return self.rx_size + self.at_target if self.phase is Phase.OFFLOADED else self.rx_size

    @property
    def send_space(self) -> int:
        tcb = self.tcb
        limit = tcb.conn.cfg.snd_buf
        if limit == tcb.transport.config.snd_buf:
            # A send NBL completes only once all of it is acknowledged: with just the default send buffer
            # posted the connection would run stop-and-wait per buffer. Unless the user sized SO_SNDBUF,
            # keep the target's optimum backlog (TcpIndicateSendBacklogChange) or CHIMNEY_SEND_BACKLOG
            # posted, as Windows does.
            hint = self.send_backlog_hint
            backlog = hint if hint != 0xFFFFFFFF else CHIMNEY_SEND_BACKLOG
            if backlog > limit:
                limit = backlog
        return max(0, limit - self.out_bytes - self.held_bytes - self.failed_bytes)

    @property
    def send_queued(self) -> int:
        return self.out_bytes + self.held_bytes + self.failed_bytes

    @property
    def state(self) -> TcpConnectionState:
        return self.tcp_state

    def send(self, data: memoryview | bytes) -> int:
        n = min(len(data), self.send_space)
        if n <= 0 or self.shut_sent or self.pending_shutdown:
            return 0
        chunk = data[:n] if n < len(data) else data
        if self.phase is Phase.OFFLOADED and not self.held_sends:
            self._issue_send(chunk)
        else:
            self.held_sends.append(chunk)  # frozen (R-OFF-11) or being uploaded (R-TRM-22)
            self.held_bytes += n
        return n

    def recv(self, max_bytes: int) -> memoryview | bytes:
        if max_bytes == 0:
            return b""
        hold = self.manager.hold_unread_at_target
        if hold and self.refused and self.rd_want == 0 and self.phase is Phase.OFFLOADED:
            want = max_bytes if max_bytes > 0 else self.rcv_limit
            if want > self.rx_size:
                # The target indicates again inside NdisOffloadTcpReceive (R-IND-10): accept up to `want`.
                self.rd_want = want
                try:
                    self._do_zero_post()
                finally:
                    self.rd_want = 0
        q = self.rxq
        if not q:
            return b""
        if max_bytes < 0 or max_bytes > self.rx_size:
            max_bytes = self.rx_size
        parts: list[memoryview | bytes] = []
        got = 0
        while got < max_bytes:
            ent = q[0]
            v = ent[0]
            take = min(len(v), max_bytes - got)
            if take == len(v):
                q.popleft()
                parts.append(v)
                if ent[1] is not None:
                    self._view_consumed(ent[1])
            else:
                parts.append(v[:take])
                ent[0] = v[take:]
            got += take
        self.rx_size -= got
        # The NBL memory is lent by the target: the user gets a copy (as a real recv() would).
        out = bytes(parts[0]) if len(parts) == 1 else b"".join(parts)
        if not hold and self.refused and self.phase is Phase.OFFLOADED and self.rx_size * 2 <= self.rcv_limit:
            self._post_zero_receive()
        return out

    @property
    def rcv_limit(self) -> int:
        return self.tcb.conn.cfg.rcv_buf

    def shutdown(self) -> None:
        # After the target reported the peer's RST (TcpIndicateAbort) there is no connection to half-close:
        # a graceful disconnect would only come back REQUEST_ABORTED.
        if self.shut_sent or self.pending_shutdown or self.aborted:
            return
        if self.phase is Phase.OFFLOADED and not self.held_sends:
            self._disconnect(TCP_DISCONNECT_GRACEFUL_CLOSE)
        else:
            self.pending_shutdown = True

    def close(self) -> None:
        # RFC 1122 4.2.2.13 (RFC 2525 2.17): closing with received data unread loses it, which the peer
        # learns from a RST: TCP_DISCONNECT_ABORTIVE_CLOSE, as the host engine's close() does. `refused`
        # means the target still buffers data the socket never took (R-IND-05/06).
        if self.rx_size > 0 or self.refused or self.at_target > 0:
            if not self.aborted:
                self.abort()
            return
        # Whatever the phase, the user closed: once the path settles (the offload completed, failed or
        # the upload is back) the host engine runs close(), not a half-close (FIN_WAIT_2 timer, data after
        # close).
        self.pending_close = True
        m = self.manager
        if self._close_needs_host():
            # Data after close() must reset the connection, but a graceful disconnect is a half-close after
            # which the target keeps receiving (R-DISC-13): the host engine closes it instead.
            if self.phase is not Phase.TERMINATING and self.tcb not in m.declined:
                m.stats["uploads_uncarried"] += 1
            m._decline(self.tcb, "close() with rst_on_data_after_close: no chimney form of close() vs "
                                 "shutdown() (R-DISC-13: the target keeps receiving after its FIN)")
            if self.phase is Phase.OFFLOADED:
                m.upload(self.tcb, reason="uncarried")
            return  # OFFLOADING: _start_io uploads; TERMINATING: the host engine closes after the upload
        if self.phase is Phase.TERMINATING:
            return  # the host engine closes once the upload is back (_resume_host)
        self.shutdown()

    def _close_needs_host(self) -> bool:
        """close() has no chimney form for this connection: only the host engine can run it."""
        return bool(self.pending_close and self.tcb.conn.cfg.rst_on_data_after_close
                    and self.manager.policy.baseline is not None)

    def abort(self) -> None:
        if self.phase is Phase.OFFLOADED:
            self._disconnect(TCP_DISCONNECT_ABORTIVE_CLOSE)
        else:
            self.pending_abort = True

    def configure(self, **changes: Any) -> None:
        """Socket options: those that map to cached TCP variables (CACHED_OPTIONS) go to the target with
        NdisUpdateOffload (R-UPD-02), never by uploading; the host engine gets all of them back at upload
        (`cfg_changes`, since the import restores the cached state the target held)."""
        conn = self.tcb.conn
        conn.cfg = conn.cfg.replace(**changes)
        self.cfg_changes.update(changes)
        m = self.manager
        why = m.policy.uncarried(conn.cfg, conn.peer_mss)
        if why is not None:
            # No chimney field carries it (e.g. TCP_LINGER2): the host engine must run the connection.
            m._decline(self.tcb, why)
            m.stats["uploads_uncarried"] += 1
            m.upload(self.tcb, reason="uncarried")  # while being offloaded: once that completed (_start_io)
            return
        if set(changes) & CACHED_OPTIONS:
            m.update_tcp(self.tcb, changes)

    def want_send_space(self) -> None:
        self.want_space = True

    # ------------------------------------------------------------------ network side (host demux)

    def input(self, seg: TcpSegment, frame: Frame | None) -> None:
        if self.phase is Phase.OFFLOADED and frame is not None:
            self.held_segs.append((seg, frame))
            self.manager._soon(self._forward_held)
        else:
            self.held_segs.append((seg, frame))  # R-FWD-03: forwarded after the offload, fed after upload

    def icmp_error(self, err: IcmpError) -> None:
        # A PMTU report already became a path update (OffloadManager._pmtu_changed): the connection stays
        # offloaded. Other errors are the host's to act on: take the connection back.
        if err.is_pmtu:
            self.manager.stats["icmp_pmtu_kept"] += 1
            return
        self.manager.stats["icmp_uploads"] += 1
        if self.phase is Phase.OFFLOADED:
            self.manager.upload(self.tcb, reason="icmp")

    def detach(self) -> None:
        self.phase = Phase.DONE

    # ------------------------------------------------------------------ chimney I/O

    def _issue_send(self, data: memoryview | bytes) -> None:
        """NdisOffloadTcpSend; R-SEND-11: never re-entered for one connection (completions may call back
        into send() from the socket's wake-up; those NBLs wait in `send_backlog`)."""
        m = self.manager
        nbl = NetBufferList(NetBuffer(Mdl(data), 0, len(data)), m.binding.name)
        nbl.protocol_reserved[0] = self
        nbl.protocol_reserved[1] = len(data)
        self.sendq.append(nbl)
        self.out_bytes += len(data)
        m.stats["sends"] += 1
        if self.in_send:
            self.send_backlog.append(nbl)
            return
        self.in_send = True
        try:
            m.calls += 1
            m.ndis.offload_tcp_send(self.handle, nbl)
            while self.send_backlog and self.phase is Phase.OFFLOADED:
                m.calls += 1
                m.ndis.offload_tcp_send(self.handle, self.send_backlog.pop(0))
        finally:
            self.in_send = False

    def _disconnect(self, flags: int) -> None:
        m = self.manager
        nbl = NetBufferList(NetBuffer(None, 0, 0), m.binding.name)  # R-DISC-02: one NB, no data
        nbl.protocol_reserved[0] = self
        self.shut_sent = True
        if flags == TCP_DISCONNECT_ABORTIVE_CLOSE:
            self.aborted = True
        else:
            st = self.tcp_state
            self.tcp_state = {S.Established: S.FinWait1, S.CloseWait: S.LastAck}.get(st, st)
        m.disc_out += 1
        m.ndis.offload_tcp_disconnect(self.handle, nbl, flags)

    def _post_zero_receive(self) -> None:
        """A zero-byte receive request re-enables indications after a refusal (R-IND-08/10)."""
        if self.zero_post_pending:
            return
        self.zero_post_pending = True
        self.manager._soon(self._do_zero_post)

    def _do_zero_post(self) -> None:
        self.zero_post_pending = False
        if self.phase is not Phase.OFFLOADED or not self.refused:
            return
        m = self.manager
        self.refused = False
        self.at_target = 0  # the target indicates it again (the socket is woken then)
        nbl = NetBufferList(NetBuffer(None, 0, 0), m.binding.name)
        nbl.protocol_reserved[0] = self
        self.posts_out += 1
        m.stats["zero_posts"] += 1
        m.ndis.offload_tcp_receive(self.handle, nbl)

    def _forward_held(self) -> None:
        """NdisOffloadTcpForward of segments the host got but did not ACK (R-FWD-02: one segment per NBL,
        starting at the TCP header)."""
        if self.phase is not Phase.OFFLOADED or not self.held_segs:
            return
        m = self.manager
        nbls = []
        for _seg, frame in self.held_segs:
            if frame is None or frame.l4 is None:
                continue
            nbl = NetBufferList(NetBuffer(Mdl(bytes(frame.l4)), 0, len(frame.l4)), m.binding.name)
            nbl.protocol_reserved[0] = self
            nbls.append(nbl)
        self.held_segs.clear()
        head = chain_nbls(nbls)
        if head is not None:
            m.forward(self, head)

    def _start_io(self) -> None:
        """After the initiate completion returned: forward, then the sends the user made meanwhile."""
        if self.phase is not Phase.OFFLOADED:
            return
        if self.tcb in self.manager.declined or self._close_needs_host():
            # A setting no chimney field carries, or a close() only the host engine can run, came meanwhile.
            self.manager.upload(self.tcb, reason="uncarried")
            return
        self._forward_held()
        held, self.held_sends = self.held_sends, []
        self.held_bytes = 0
        for d in held:
            if self.phase is not Phase.OFFLOADED:
                self.held_sends.append(d)
                self.held_bytes += len(d)
                continue
            self._issue_send(d)
        if self.pending_abort:
            self.pending_abort = False
            self._disconnect(TCP_DISCONNECT_ABORTIVE_CLOSE)
        elif self.pending_shutdown and not self.held_sends:
            self.pending_shutdown = False
            self._disconnect(TCP_DISCONNECT_GRACEFUL_CLOSE)

    def _view_consumed(self, nbl: NetBufferList) -> None:
        ref = self.rx_refs.get(nbl.serial)
        if ref is None:
            return
        ref[1] -= 1
        if ref[1] == 0:
            del self.rx_refs[nbl.serial]
            self.returns.append(nbl)
            if len(self.returns) == 1:
                self.manager._soon(self._flush_returns)

    def _flush_returns(self) -> None:
        """NdisOffloadTcpReceiveReturn of fully consumed indications, batched; never from inside the
        indication that delivered them."""
        if not self.returns:
            return
        r, self.returns = self.returns, []
        self.manager.rx_held -= len(r)
        self.manager.calls += 1
        head = chain_nbls(r)
        assert head is not None
        self.manager.ndis.offload_tcp_receive_return(self.manager.binding_handle, head)

    # ------------------------------------------------------------------ indications and completions

    def indicate(self, nbl: NetBufferList) -> tuple[int, int]:
        """ProtocolTcpOffloadReceiveIndicate: keep the NBL (zero copy) for a recv() in progress, up to what
        it asked for; refuse (NOT_ACCEPTED / PARTIALLY_ACCEPTED) the rest (R-IND-05/06), so unread data
        stays at the target and closes its receive window as unread data closes the host engine's."""
        n = nbl.data_length()
        m = self.manager
        hold = m.hold_unread_at_target
        space = (self.rd_want if hold else self.rcv_limit) - self.rx_size
        if self.phase is not Phase.OFFLOADED:
            m.stats["indications_not_offloaded"] += 1
        if space <= 0:
            self.refused = True
            m.stats["ind_refused"] += 1
            if hold:
                self.at_target = n
                self._wake([DataReadable(n, False)])
            return NdisStatus.OFFLOAD_DATA_NOT_ACCEPTED, 0
        nb = nbl.first_net_buffer
        assert nb is not None
        if n <= space:
            views = nb.data_views()
            for v in views:
                self.rxq.append([v, nbl])
            self.rx_refs[nbl.serial] = [nbl, len(views)]
            m.rx_held += 1
            self.rx_size += n
            m.stats["ind_bytes"] += n
            self._wake([DataReadable(n, False)])
            return _SUCCESS, n
        self.rxq.append([nb.copy_data(0, space), None])
        self.rx_size += space
        self.refused = True
        if hold:
            self.at_target = n - space
        m.stats["ind_partial"] += 1
        m.stats["ind_bytes"] += space
        self._wake([DataReadable(space, False)])
        return NdisStatus.OFFLOAD_DATA_PARTIALLY_ACCEPTED, space

    def send_done(self, nbl: NetBufferList) -> None:
        """One completed send NBL: must be the oldest outstanding one (in order, exactly once)."""
        m = self.manager
        q = self.sendq
        if q and q[0] is nbl:
            q.popleft()
        elif nbl in q:
            m.stats["send_completed_out_of_order"] += 1
            q.remove(nbl)
        else:
            m.stats["send_completed_unknown"] += 1
            return
        size = nbl.protocol_reserved[1]
        nbl.protocol_reserved[0] = None
        self.out_bytes -= size
        if nbl.status == _SUCCESS:
            m.stats["send_bytes_acked"] += size
        else:
            m.stats["send_failed"] += 1
            if not self.aborted and nbl.status == _UIP:
                # Not acknowledged and never sent by the target: re-sent by the host after the upload.
                rest = b"".join(bytes(v) for nb in nbl.net_buffers() for v in nb.data_views())
                if rest:
                    self.failed_sends.append(rest)
                    self.failed_bytes += len(rest)
        if self.want_space and self.send_space > 0:
            self.want_space = False
            self._wake([SendSpace(self.send_space)])

    def _wake(self, events: list[Event]) -> None:
        if self.phase is not Phase.DONE:
            self.tcb.deliver(events)


# ====================================================================================== manager


class OffloadManager:
    """Offloads host connections to the target below `binding` and takes them back.

        mgr = OffloadManager(stack, binding, OffloadPolicy.established())
        mgr.offload(tcb); mgr.upload(tcb); mgr.upload_all()

    `stats` counts everything the tests check (completions in order, refused indications, per-status
    initiate results in `initiate_results`).

    `hold_unread_at_target`: how receive indications are taken (ChimneyPath.indicate). False (default):
    accepted up to the socket's free receive space (SO_RCVBUF minus unread), refused beyond it
    (R-IND-05/06), a zero-byte receive re-enables them once the user has read half of it (R-IND-08/10);
    the target's window then covers only what it buffers itself. True: the socket keeps nothing the
    user has not asked for (indications are refused except inside recv(), which re-enables them with a
    zero-byte receive and takes what it asked for), so unread data stays at the target and closes its
    window exactly as unread data closes the host engine's (the packetdrill window scripts); the peer's
    FIN is then learnt (TcpIndicateDisconnect) only once that data is read (R-EVT-01). Not the default:
    every recv() then costs a refused indication plus a zero-byte receive (about 1.5x the chimney
    crossings of a bulk transfer), and a FIN behind unread data reaches the socket late (no early
    POLLRDHUP, and a TIME_WAIT upload can overtake it); `chimney.packetdrill` turns it on."""

    path_class: type[ChimneyPath] = ChimneyPath  # the TcbPath of offloaded connections (test doubles override)

    def __init__(
        self,
        stack: HostStack,
        binding: NdisHostBinding,
        policy: OffloadPolicy | None = None,
        *,
        hold_unread_at_target: bool = False,
    ) -> None:
        self.stack = stack
        self.hold_unread_at_target = hold_unread_at_target
        self.binding = binding
        binding.manager = self
        ndis = binding.ndis
        if ndis is None or binding.binding is None:
            raise ValueError("attach the NdisHostBinding to an adapter first")
        self.ndis: Ndis = ndis
        self.binding_handle: Binding = binding.binding
        self.scheduler = stack.scheduler
        self.transport = stack.tcp
        self.policy = policy if policy is not None else OffloadPolicy.explicit()
        self.paths: dict[Tcb, ChimneyPath] = {}
        self.neighbor_objs: dict[tuple[Any, ...], OffloadedObject] = {}
        self.path_objs: dict[tuple[Any, ...], OffloadedObject] = {}
        self.first_seen: dict[Tcb, int] = {}
        self.back_at: dict[Tcb, int] = {}
        self.upload_all_active = False
        self._batch_new: set[OffloadedObject] = set()
        self.disc_out = 0
        self.fwd_out = 0
        self.ops_out = 0
        self.rx_held = 0  # accepted indication / BufferedData NBLs not yet returned
        self.calls = 0  # chimney I/O crossings (requests, completions, indications, returns) for the bench
        self.initiate_results: dict[str, int] = {}
        # Connections the policy keeps on the host (a setting the chimney cannot carry) -> the reason.
        self.declined: dict[Tcb, str] = {}
        # (time, "offload"/"upload", tcb, detail), the most recent HISTORY_LEN hand-overs
        self.history: deque[tuple[int, str, Tcb, str]] = deque(maxlen=HISTORY_LEN)
        self.stats: dict[str, int] = dict.fromkeys(
            (
                "initiates", "initiate_tcp_ok", "initiate_tcp_failed", "terminates", "uploads_done",
                "sends", "send_bytes_acked", "send_failed", "send_completed_out_of_order",
                "send_completed_unknown", "ind_bytes", "ind_refused", "ind_partial", "indications_not_offloaded",
                "zero_posts", "forwarded", "retrieves", "retrieves_ignored", "aborts_indicated",
                "disconnects_indicated", "icmp_uploads", "trm_chain_mismatch", "trm_sends_outstanding",
                "reachability_queries", "upload_failed", "sends_after_fin_dropped", "held_segments_fed",
                "updates", "update_nodes", "update_failed", "relinks", "invalidates", "invalidate_host_uploads",
                "queries", "query_failed", "icmp_pmtu_kept", "neighbor_mac_updates", "pmtu_updates",
                "pmtu_increases", "neighbor_failures", "neighbor_removals", "retrieves_half_closed",
                "status_pause", "status_resume", "status_upload_all", "media_disconnects", "power_transitions",
                "declined_uncarried", "uploads_uncarried",
            ),
            0,
        )
        self._scan_timer: Any = None
        # id(root PBL) -> (operation, root, objects, extra) of every query/update/invalidate in flight
        self._op_recs: dict[int, tuple[str, ProtocolOffloadBlockList, list[Any], Any]] = {}
        self._relink_wait: dict[OffloadedObject, OffloadedObject] = {}  # path -> neighbor it moves to
        self._route_pending = False  # a route_changed pass is scheduled
        self._route_dirty = False  # the routes changed while a path was being offloaded: look again after
        self._pmtu_timer: Any = None
        self._pmtu_timer_at = 0
        self.power_low = False
        self._power_reqs: dict[int, SimFuture[int]] = {}
        self._idle_waiters: list[Any] = []
        self.closed = False  # close(): the binding went away (unbind) or the manager was replaced
        iface = binding.iface
        assert iface is not None
        # Real causes, no polling: the interface's neighbor cache, the route table and the PMTU cache call us.
        stack.ip.neighbors[iface.name].listeners.append(self._neighbor_event)
        stack.ip.routes.listeners.append(self._route_event)
        stack.ip.pmtu.listeners.append(self._pmtu_changed)
        self.wake()

    def close(self) -> None:
        """Stop listening to the host's neighbor cache, route table and PMTU cache and stop the policy scan
        and PMTU aging timers (the manager is being replaced, or NdisHostBinding.unbind_adapter_ex: the
        binding goes away). A closed manager starts no offload, update or invalidate any more."""
        self.closed = True
        if self._scan_timer is not None:
            self._scan_timer.cancel()
            self._scan_timer = None
        self._route_pending = False
        ip = self.stack.ip
        iface = self.binding.iface
        for lst, cb in ((ip.routes.listeners, self._route_event), (ip.pmtu.listeners, self._pmtu_changed),
                        (ip.neighbors[iface.name].listeners if iface is not None else [], self._neighbor_event)):
            if cb in lst:
                lst.remove(cb)
        if self._pmtu_timer is not None:
            self._pmtu_timer.cancel()
            self._pmtu_timer = None

    # ------------------------------------------------------------------ helpers

    @property
    def tps(self) -> int:
        return self.binding.params.ticks_per_second

    def _soon(self, fn: Any) -> None:
        self.scheduler.call_soon(fn, label="chimney host")

    def is_offloaded(self, tcb: Tcb) -> bool:
        cp = self.paths.get(tcb)
        return cp is not None and cp.phase is Phase.OFFLOADED

    def offloaded(self) -> list[Tcb]:
        return [t for t, cp in self.paths.items() if cp.phase is Phase.OFFLOADED]

    @property
    def capacity(self) -> int:
        caps = self.binding.caps
        cap = caps.tcp_connection_offload_capacity if caps is not None else 0
        if self.policy.max_offloaded is not None:
            cap = min(cap, self.policy.max_offloaded)
        return cap

    def busy(self) -> bool:
        """Any state operation, connection hand-over or NBL return in flight."""
        return self.ops_out > 0 or self.rx_held > 0 or any(cp.phase in (Phase.OFFLOADING, Phase.TERMINATING) for cp in self.paths.values())

    # ------------------------------------------------------------------ policy scanner

    def wake(self) -> None:
        """(Re)start the policy scan; called on received frames so a quiet host runs no timers."""
        if self._scan_timer is None and self.policy.automatic and not self.closed:
            self._scan_timer = self.scheduler.call_later(self.policy.scan_interval_ns, self._scan, label="chimney scan")

    def _scan(self) -> None:
        self._scan_timer = None
        self._prune_declined()
        conns = list(self.transport.connections())
        if not conns:
            return
        now = self.scheduler.now
        if len(self.first_seen) + len(self.back_at) > 4 * len(conns) + 64:
            live = set(conns)
            self.first_seen = {t: v for t, v in self.first_seen.items() if t in live}
            self.back_at = {t: v for t, v in self.back_at.items() if t in live}
        want: list[Tcb] = []
        for tcb in conns:
            if not isinstance(tcb.path, HostPath):
                continue
            st = tcb.path.state
            if st not in OFFLOADABLE_STATES:
                continue
            t0 = self.first_seen.setdefault(tcb, now)
            back = self.back_at.get(tcb)
            if back is not None and now - back < self.policy.cooldown_ns:
                continue
            conn = tcb.conn
            moved = max(0, conn.snd_una - conn.iss - 1) + max(0, conn.rcv_nxt - conn._irs - 1)
            if self.policy.wants(tcb, moved, now - t0):
                want.append(tcb)
        if want:
            self.offload(want)
        self.wake()

    # ------------------------------------------------------------------ initiate offload

    def offload(self, tcbs: Tcb | Iterable[Tcb], *, force: bool = False) -> int:
        """Start offloading these connections in one NdisInitiateOffload tree; returns how many TCP nodes
        went into it. Skipped: not offloadable now (state R-OFF-24, already in flight R-OFF-11, neighbor
        unresolved, other interface, paused); beyond capacity unless `force` (the target then fails the
        node with OFFLOAD_TCP_ENTRIES)."""
        if isinstance(tcbs, Tcb):
            tcbs = [tcbs]
        b = self.binding
        if not b.chimney_ready or self.upload_all_active or self.power_low or self.closed:
            return 0
        room = self.capacity - sum(1 for cp in self.paths.values() if cp.phase in (Phase.OFFLOADING, Phase.OFFLOADED))
        roots: dict[OffloadedObject, ProtocolOffloadBlockList] = {}
        path_nodes: dict[OffloadedObject, ProtocolOffloadBlockList] = {}
        order: list[ProtocolOffloadBlockList] = []
        count = 0
        self._batch_new = set()  # objects created by this tree: its own TCP nodes may link under them
        for tcb in tcbs:
            if not force and count >= room:
                break
            node = self._prepare_tcp(tcb)
            if node is None:
                continue
            cp, tcp_node = node
            pobj = cp.path_obj
            assert pobj is not None and pobj.parent is not None
            nobj = pobj.parent
            root = roots.get(nobj)
            if root is None:
                root = roots[nobj] = self._object_node(nobj)
                order.append(root)
            pnode = path_nodes.get(pobj)
            if pnode is None:
                pnode = path_nodes[pobj] = self._object_node(pobj)
                root.add_dependent(pnode)
            pnode.add_dependent(tcp_node)
            count += 1
        if not order:
            return 0
        for a, c in itertools.pairwise(order):
            a.next_block = c
        self._initiate_call(order[0])
        return count

    # ------------------------------------------------------------------ the host's NDIS calls (host invariants)

    def _initiate_call(self, root: ProtocolOffloadBlockList) -> None:
        """NdisInitiateOffload. R-NBR-08: every neighbor the host offloads carries HRD == NRD (the target
        starts from the host's own reachability view)."""
        v = self.ndis.verifier
        for node in iter_tree(root):
            if node.layer is not Layer.NEIGHBOR or node_role(node) is not NodeRole.NEW_OFFLOAD:
                continue
            cached = next((x for x in node.state if isinstance(x, NeighborOffloadStateCached)), None)
            dlg = next((x for x in node.state if isinstance(x, NeighborOffloadStateDelegated)), None)
            if cached is not None and dlg is not None:
                v.check(cached.host_reachability_delta == dlg.nic_reachability_delta, "R-NBR-08",
                        f"neighbor offloaded with HostReachabilityDelta {cached.host_reachability_delta} != "
                        f"NicReachabilityDelta {dlg.nic_reachability_delta}", node)
        self.stats["initiates"] += 1
        self.ops_out += 1
        self.ndis.initiate_offload(self.binding_handle, root)

    def _update_call(self, root: ProtocolOffloadBlockList) -> None:
        """NdisUpdateOffload. R-UPD-04: TCP -> path links are never updated: a TCP node only ever heads an
        update tree row (its CACHED variables), never hangs under a path (a re-link carries paths only)."""
        linked = [node for node, depth in iter_tree_depth(root) if depth and node.layer is Layer.TCP]
        self.ndis.verifier.check(not linked, "R-UPD-04",
                                 f"update tree re-links {len(linked)} TCP node(s) under a path", root, *linked)
        self.ndis.update_offload(self.binding_handle, root)

    def forward(self, cp: ChimneyPath, head: NetBufferList) -> None:
        """NdisOffloadTcpForward of `head` (one segment per NBL) for `cp`. R-FWD-03: never while the
        connection's offload or termination is in progress."""
        self.ndis.verifier.check(cp.phase is Phase.OFFLOADED, "R-FWD-03",
                                 f"NdisOffloadTcpForward while the connection is {cp.phase.value}", cp)
        n = 0
        nbl: NetBufferList | None = head
        while nbl is not None:
            n += 1
            nbl = nbl.next
        self.stats["forwarded"] += n
        self.fwd_out += n
        self.ndis.offload_tcp_forward(cp.handle, head)

    def _object_node(self, obj: OffloadedObject) -> ProtocolOffloadBlockList:
        """A linker for an object already offloaded, else a new-offload node with its full state."""
        if obj.phase is Phase.OFFLOADED:
            t = OffloadStateType.NeighborOffloadState if obj.kind == "neighbor" else (
                OffloadStateType.Ip6OffloadState if obj.v6 else OffloadStateType.Ip4OffloadState)
            return ProtocolOffloadBlockList(t, obj.handle)
        if obj.kind == "neighbor":
            n = obj.host
            iface = self.binding.iface
            assert iface is not None
            hrd = self._hrd(n)
            state = [
                NeighborOffloadStateConst(vlan_id=iface.vlan_id),
                NeighborOffloadStateCached(dl_destination_address=bytes(n.mac).ljust(32, b"\0"),
                                           host_reachability_delta=hrd),
                NeighborOffloadStateDelegated(nic_reachability_delta=hrd),  # R-NBR-08: HRD == NRD
            ]
            return ProtocolOffloadBlockList(OffloadStateType.NeighborOffloadState, obj.handle, state)
        p = obj.host
        obj.mtu = p.mtu
        state = [PathOffloadStateConst(source_address=p.source, destination_address=p.destination),
                 PathOffloadStateCached(path_mtu=p.mtu), PathOffloadStateDelegated()]
        t = OffloadStateType.Ip6OffloadState if obj.v6 else OffloadStateType.Ip4OffloadState
        return ProtocolOffloadBlockList(t, obj.handle, state)

    def _decline(self, tcb: Tcb, why: str) -> None:
        """Keep `tcb` on the host for `why` (reported by `declined`); entries go when their Tcb closed."""
        if tcb not in self.declined:
            self._prune_declined()
        self.declined[tcb] = why

    def _prune_declined(self) -> None:
        """Forget declined connections that are over, so a long-running host does not keep their Tcbs."""
        gone = [t for t in self.declined if t.closed]
        for t in gone:
            del self.declined[t]

    def _hrd(self, n: Any) -> int:
        return min((self.scheduler.now - n.confirmed_at) * self.tps // NS_PER_S, MASK)

    def _prepare_tcp(self, tcb: Tcb) -> tuple[ChimneyPath, ProtocolOffloadBlockList] | None:
        """Freeze the connection, export its state, build its TCP node (new offload)."""
        if not isinstance(tcb.path, HostPath) or tcb.closed or tcb.transport is not self.transport:
            return None
        conn = tcb.conn
        if conn.state not in OFFLOADABLE_STATES:  # R-OFF-24
            return None
        why = self.policy.uncarried(conn.cfg, conn.peer_mss)
        if why is not None:
            if tcb not in self.declined:
                self.stats["declined_uncarried"] += 1
            self._decline(tcb, why)
            return None
        self.declined.pop(tcb, None)
        if tcb.iface is not self.binding.iface:
            return None
        n = tcb.neighbor
        if n is None or n.mac is None:
            return None
        p = tcb.ip_path
        nkey = (p.interface, p.next_hop)
        batch = self._batch_new
        nobj = self.neighbor_objs.get(nkey)
        if nobj is not None and nobj.phase is not Phase.OFFLOADED and nobj not in batch:
            return None  # R-OFF-11: never link to (or re-offload) an object whose operation is in flight
        if nobj is not None and (nobj.invalid or nobj.ops):
            return None  # invalidated (waits for its terminate) or being updated/re-linked
        pkey = (p.source, p.destination)
        pobj = self.path_objs.get(pkey)
        if pobj is not None and pobj.phase is not Phase.OFFLOADED and pobj not in batch:
            return None
        if pobj is not None and (pobj.invalid or pobj.ops or pobj in self._relink_wait or pobj.parent is not nobj):
            return None
        now = self.scheduler.now
        # R-OFF-11: from here on no I/O reaches the engine; HostPath's timer stops with detach().
        const, cached, dlg, send_views, buffered = conn.export_state(now, self.tps)
        for seg in conn.pop_segments():  # the delayed ACK export flushed (R-TMR-04)
            self.transport.emit(tcb, seg)
        evs = conn.pop_events()
        if evs:
            tcb.deliver(evs)
        if nobj is None:
            nobj = self.neighbor_objs[nkey] = OffloadedObject("neighbor", nkey, n, None, len(p.next_hop) == 16)
            batch.add(nobj)
        if pobj is None:
            pobj = self.path_objs[pkey] = OffloadedObject("path", pkey, p, nobj, p.family == 6)
            batch.add(pobj)
            nobj.refs += 1
        pobj.refs += 1
        cp = self.path_class(self, tcb, conn.state)
        cp.const, cp.cached, cp.path_obj = const, cached, pobj
        tcb.set_path(cp)
        self.paths[tcb] = cp
        # R-OFF-17..21: the send data from SndUna, chained in order; SendDataHead is the chain head.
        nbls = self._send_nbls(cp, send_views)
        head = chain_nbls(nbls)
        dlg.send_data_head = head
        dlg.send_data_tail = nbls[-1] if nbls else None
        if buffered:
            bnb = NetBuffer(_mdl_chain(buffered), 0, sum(len(v) for v in buffered))
            dlg.buffered_data = NetBufferList(bnb, self.binding.name)
        node = ProtocolOffloadBlockList(OffloadStateType.TcpOffloadState, cp.handle, [const, cached, dlg])
        node.net_buffer_list_chain = head
        return cp, node

    def _send_nbls(self, cp: ChimneyPath, views: list[memoryview]) -> list[NetBufferList]:
        nbls: list[NetBufferList] = []
        group: list[memoryview] = []
        size = 0
        for v in views:
            group.append(v)
            size += len(v)
            if size >= SEND_NBL_BYTES:
                nbls.append(self._send_nbl(cp, group, size))
                group, size = [], 0
        if group:
            nbls.append(self._send_nbl(cp, group, size))
        return nbls

    def _send_nbl(self, cp: ChimneyPath, views: list[memoryview], size: int) -> NetBufferList:
        nbl = NetBufferList(NetBuffer(_mdl_chain(views), 0, size), self.binding.name)
        nbl.protocol_reserved[0] = cp
        nbl.protocol_reserved[1] = size
        cp.sendq.append(nbl)
        cp.out_bytes += size
        return nbl

    def initiate_offload_complete(self, pbl: ProtocolOffloadBlockList) -> None:
        """ProtocolInitiateOffloadComplete: per node (§5.2). Every failed TCP node carries on in the host."""
        self.ops_out -= 1
        start: list[ChimneyPath] = []
        objs_done: list[OffloadedObject] = []
        for node in iter_tree(pbl):
            h = node.offload_handle
            owner = h.owner if h is not None else None
            st = node.status
            if isinstance(owner, OffloadedObject):
                if owner.phase is Phase.OFFLOADING:
                    if st in _OK and h.miniport_offload_context.value is not None:
                        owner.phase = Phase.OFFLOADED
                        objs_done.append(owner)
                    else:
                        owner.phase = Phase.DONE  # not offloaded: forget it (its dependents failed too)
                        self._forget(owner)
            elif isinstance(owner, ChimneyPath):
                name = _status_name(st)
                self.initiate_results[name] = self.initiate_results.get(name, 0) + 1
                if st in _OK and h.miniport_offload_context.value is not None:
                    self.stats["initiate_tcp_ok"] += 1
                    owner.phase = Phase.OFFLOADED
                    old = owner.tcb.conn
                    old.detach()  # the target owns the delegated state now
                    old.rxq = ReceiveQueue()  # handed over as BufferedData: never readable twice
                    self.history.append((self.scheduler.now, "offload", owner.tcb, name))
                    start.append(owner)
                else:
                    self.stats["initiate_tcp_failed"] += 1
                    self._revert(owner, node)
        for cp in start:
            self._soon(cp._start_io)  # R-OFF-11: no I/O until the completion call has returned
            if cp.next_update is not None:
                self._soon(lambda cp=cp: self._pump_update(cp))  # options set while it was being offloaded
        for obj in objs_done:
            if obj.invalid:
                obj.invalid = False
                self._soon(lambda obj=obj: self.invalidate([obj]))  # became unreachable while offloading
            elif obj.next_update is not None:
                self._soon(lambda obj=obj: self._pump_update(obj))
        if self._relink_wait:
            self._soon(self._pump_relinks)
        if objs_done:
            self._arm_pmtu_aging()
            if self._route_dirty:
                self._route_dirty = False
                self._soon(self.route_changed)  # the routes changed while these were being offloaded
        if self.upload_all_active:
            self._soon(lambda: self.upload_all("upload_all"))
        self._soon(self._gc)

    def _forget(self, obj: OffloadedObject) -> None:
        table = self.neighbor_objs if obj.kind == "neighbor" else self.path_objs
        if table.get(obj.key) is obj:
            del table[obj.key]
        if obj.kind == "path" and obj.parent is not None and obj.parent.refs > 0:
            obj.parent.refs -= 1

    def _revert(self, cp: ChimneyPath, node: ProtocolOffloadBlockList) -> None:
        """A failed offload: the connection continues in the host from where it was frozen."""
        tcb = cp.tcb
        # The chain NBLs only described the engine's own send buffer, which still holds the data; the
        # target did not touch them (R-OFF-23), so they are simply dropped.
        cp.sendq.clear()
        cp.out_bytes = 0
        pobj = cp.path_obj
        if pobj is not None and pobj.refs > 0:
            pobj.refs -= 1
        self.paths.pop(tcb, None)
        self.back_at[tcb] = self.scheduler.now
        self._resume_host(cp, tcb.conn)

    def _resume_host(self, cp: ChimneyPath, conn: Connection) -> None:
        """Hand the TCB back to a HostPath over `conn` and replay what the chimney path held."""
        tcb = cp.tcb
        tcb.conn = conn
        hp = HostPath(self.transport, tcb)
        tcb.set_path(hp)
        hp.kick()
        # Options set while offloaded: the import restored the cached ones the target held, so replay only
        # what differs; replaying an equal keepalive setting would re-arm keepalive from zero and lose the
        # deadline the target handed back in the delegated state (R-TMR-09, R-TRM-25).
        cfg = conn.cfg
        missing = object()
        changes = {k: v for k, v in cp.cfg_changes.items() if getattr(cfg, k, missing) != v}
        if changes:
            hp.configure(**changes)
        now = self.scheduler.now
        for d in cp.held_sends:
            conn.send(d, now)
        cp.held_sends.clear()
        cp.held_bytes = 0
        hp.flush()
        self.stats["held_segments_fed"] += len(cp.held_segs)
        for seg, frame in cp.held_segs:
            if tcb.path is hp:
                hp.input(seg, frame)
        cp.held_segs.clear()
        if tcb.path is hp and conn.state not in (S.Closed,):
            if cp.pending_abort:
                hp.abort()
            elif cp.pending_close:
                hp.close()
            elif cp.pending_shutdown:
                hp.shutdown()
        tcb.deliver([SendSpace(hp.send_space)] if hp.send_space else [DataReadable(conn.readable, False)])

    # ------------------------------------------------------------------ terminate (upload)

    def upload(self, tcbs: Tcb | Iterable[Tcb], *, reason: str = "explicit", pin: bool = False) -> int:
        """NdisTerminateOffload for these offloaded connections (TCP nodes only; paths and neighbors
        follow when nothing depends on them any more, R-TRM-04). Returns how many were started."""
        if isinstance(tcbs, Tcb):
            tcbs = [tcbs]
        nodes: list[ProtocolOffloadBlockList] = []
        for tcb in tcbs:
            if pin:
                self.policy.pinned.add(tcb)
            cp = self.paths.get(tcb)
            if cp is None or cp.phase is not Phase.OFFLOADED:
                continue  # R-OFF-11 / already terminating
            if cp.ops:
                cp.upload_wait = reason  # R-TRM-05: after its query/update/invalidate completed
                continue
            # R-TRM-05: every post/disconnect call has returned here (they are synchronous calls).
            cp.phase = Phase.TERMINATING  # R-TRM-22: no more sends or receive posts from here on
            cp.upload_reason = reason
            if cp.returns:
                cp._flush_returns()  # R-TRM-10 is the target's; returning early keeps its pool full
            node = ProtocolOffloadBlockList(OffloadStateType.TcpOffloadDelegatedState, cp.handle,
                                            [TcpOffloadStateDelegated()])
            nodes.append(node)
        if not nodes:
            return 0
        for a, c in itertools.pairwise(nodes):
            a.next_block = c
        self.stats["terminates"] += 1
        self.ops_out += 1
        self.ndis.terminate_offload(self.binding_handle, nodes[0])
        return len(nodes)

    def upload_all(self, reason: str = "upload_all") -> None:
        """NDIS_STATUS_UPLOAD_ALL (hardware reset): every connection, then every path and neighbor (R-TRM-04);
        no new offloads until all are back."""
        self.upload_all_active = True
        self._relink_wait.clear()
        self.upload(list(self.paths), reason=reason)
        self._soon(self._gc)

    def terminate_offload_complete(self, pbl: ProtocolOffloadBlockList) -> None:
        self.ops_out -= 1
        done: list[tuple[ChimneyPath, ProtocolOffloadBlockList]] = []
        for node in iter_tree(pbl):
            h = node.offload_handle
            owner = h.owner if h is not None else None
            if isinstance(owner, ChimneyPath):
                done.append((owner, node))
            elif isinstance(owner, OffloadedObject):
                owner.phase = Phase.DONE
                self._forget(owner)
        for cp, node in done:
            self._resume_from_target(cp, node)
        self._soon(self._gc)

    def _resume_from_target(self, cp: ChimneyPath, node: ProtocolOffloadBlockList) -> None:
        """Continue the connection in the host from the returned delegated state, send NBLs and
        BufferedData (R-TMR-07/08/15/19 via import_state, R-TS-04: TsTime continues)."""
        tcb = cp.tcb
        now = self.scheduler.now
        self.paths.pop(tcb, None)
        self.back_at[tcb] = now
        pobj = cp.path_obj
        if pobj is not None and pobj.refs > 0:
            pobj.refs -= 1
        dlg = next((s for s in node.state if isinstance(s, TcpOffloadStateDelegated)), None)
        # Returned send data: our own NBLs, in the order we gave them (R-TRM-12).
        chain = split_nbl_chain(node.net_buffer_list_chain)
        outstanding = list(cp.sendq)
        if chain != outstanding[: len(chain)]:
            self.stats["trm_chain_mismatch"] += 1
        for n in chain:
            if n in cp.sendq:
                cp.sendq.remove(n)
            n.protocol_reserved[0] = None
        if cp.sendq:
            self.stats["trm_sends_outstanding"] += len(cp.sendq)  # R-TRM-09 broken by the target
            cp.sendq.clear()
        cp.out_bytes = 0
        send_views: list[memoryview] = [v for n in chain for nb in n.net_buffers() for v in nb.data_views()]
        # Received data: what the socket has not read yet, then the target's BufferedData (both end at RcvNxt).
        rx: list[bytes] = [bytes(e[0]) for e in cp.rxq]
        cp.rxq.clear()
        cp.rx_size = 0
        for ref in cp.rx_refs.values():
            cp.returns.append(ref[0])
        cp.rx_refs.clear()
        if dlg is not None and dlg.buffered_data is not None:
            bd = dlg.buffered_data
            b: NetBufferList | None = bd
            while b is not None:
                for nb in b.net_buffers():
                    rx.append(nb.copy_data())
                b = b.next
            for n in split_nbl_chain(bd):
                self.rx_held += 1
                cp.returns.append(n)  # R-TRM-16: back through NdisOffloadTcpReceiveReturn
        if cp.returns:
            self._soon(cp._flush_returns)
        self.stats["uploads_done"] += 1
        ok = node.status == _SUCCESS and dlg is not None
        st = TcpConnectionState(dlg.state) if dlg is not None else S.Closed
        self.history.append((now, "upload", tcb, f"{cp.upload_reason}:{st.name}"))
        old = tcb.conn
        if not ok or st not in EXPORTABLE_STATES:
            if not ok:
                self.stats["upload_failed"] += 1
            self._finish_closed(cp, old, "reset" if cp.aborted or not ok else "normal", rx)
            return
        assert dlg is not None and cp.const is not None and cp.cached is not None
        extra = cp.failed_sends + cp.held_sends
        fin_queued = st in (S.FinWait1, S.Closing, S.LastAck)
        if fin_queued and extra:
            self.stats["sends_after_fin_dropped"] += 1  # cannot happen: no send follows our disconnect
        data = send_views + ([] if fin_queued else [memoryview(d) for d in extra])
        try:
            conn = Connection.import_state(cp.const, cp.cached, dlg, data, rx, now, self.tps, cfg=old.cfg,
                                           path_mtu=tcb.ip_path.mtu)
        except (TcpStateError, ValueError):
            self.stats["upload_failed"] += 1
            self._finish_closed(cp, old, "reset", rx)
            return
        cp.failed_sends = []
        cp.failed_bytes = 0
        cp.held_sends = []
        cp.held_bytes = 0
        if st in (S.Established, S.CloseWait):
            # A disconnect the target did not carry out (refused with UPLOAD_IN_PROGRESS, or asked for
            # while frozen) is redone by the host engine.
            cp.pending_shutdown = cp.pending_shutdown or cp.shut_sent
        else:
            cp.pending_shutdown = False  # our FIN is part of the returned state
        self._resume_host(cp, conn)

    def _finish_closed(self, cp: ChimneyPath, old: Connection, reason: str, rx: list[bytes]) -> None:
        """The target returned a connection that is over (Closed): the socket still reads what was
        received before the end, then sees the close."""
        tcb = cp.tcb
        old.rxq = ReceiveQueue()
        for d in rx:
            old.rxq.append(d)
        hp = HostPath(self.transport, tcb)
        tcb.conn = old  # detached: state Closed
        tcb.set_path(hp)
        cp.held_segs.clear()
        evs: list[Event] = []
        if reason == "reset" and not tcb.error:
            evs.append(Reset())
        evs.append(Closed(reason))
        tcb.deliver(evs)

    def _gc(self) -> None:
        """Terminate offloaded paths (then neighbors) nothing depends on any more (R-TRM-04), once their
        state operations completed (R-TRM-05 by analogy); a neighbor waiting for paths to re-link to it
        stays."""
        self._prune_declined()
        paths = [o for o in self.path_objs.values() if o.phase is Phase.OFFLOADED and o.refs == 0 and not o.ops
                 and o not in self._relink_wait]
        if paths:
            self._terminate_objects(paths)
            return
        keep = set(self._relink_wait.values())
        nbrs = [o for o in self.neighbor_objs.values() if o.phase is Phase.OFFLOADED and o.refs == 0 and not o.ops
                and o not in keep]
        if nbrs:
            self._terminate_objects(nbrs)
            return
        if not self.paths and not self.path_objs and not self.neighbor_objs and not self._op_recs:
            if self.upload_all_active:
                self.upload_all_active = False
                self.wake()
            waiters, self._idle_waiters = self._idle_waiters, []
            for fn in waiters:
                fn()

    def _terminate_objects(self, objs: list[OffloadedObject]) -> None:
        nodes = []
        for o in objs:
            o.phase = Phase.TERMINATING
            if o.kind == "neighbor":
                t, st = OffloadStateType.NeighborOffloadDelegatedState, NeighborOffloadStateDelegated()
            else:
                t = OffloadStateType.Ip6OffloadDelegatedState if o.v6 else OffloadStateType.Ip4OffloadDelegatedState
                st = PathOffloadStateDelegated()
            nodes.append(ProtocolOffloadBlockList(t, o.handle, [st]))
        for a, c in itertools.pairwise(nodes):
            a.next_block = c
        self.stats["terminates"] += 1
        self.ops_out += 1
        self.ndis.terminate_offload(self.binding_handle, nodes[0])

    # ------------------------------------------------------------------ update (R-UPD-*)

    def _tcp_cached(self, cp: ChimneyPath, changes: dict[str, Any]) -> TcpOffloadStateCached:
        """The connection's CACHED struct after `changes` (TcpConfig fields, plus `ttl` / `tos`), with the
        one-shot flags that make the target apply them (R-UPD-08..12)."""
        base = cp.next_update if cp.next_update is not None else cp.cached
        assert base is not None
        c = copy.deepcopy(base)
        cfg = cp.tcb.conn.cfg
        tps = self.tps
        flags = c.flags & _ONE_SHOT  # one-shots of a queued, not yet sent update still apply
        if cfg.keepalive:
            flags |= TcpCachedFlags.KEEP_ALIVE_ENABLED
        if cfg.nagle:
            flags |= TcpCachedFlags.NAGLING_ENABLED
        if set(changes) & KEEPALIVE_OPTIONS:
            c.ka_probe_count = min(cfg.keepalive_count, 255)
            c.ka_timeout = min(cfg.keepalive_idle_ns * tps // NS_PER_S, MASK)
            c.ka_interval = min(cfg.keepalive_interval_ns * tps // NS_PER_S, MASK)
            # R-UPD-09: restart the idle timer; R-UPD-11: MAX_RT_RESTART makes the target reset the probe
            # count and the keepalive timeout along with the new KaProbeCount / KaTimeout / KaInterval.
            flags |= TcpCachedFlags.KEEP_ALIVE_RESTART | TcpCachedFlags.MAX_RT_RESTART
        if "rcv_buf" in changes:
            c.initial_rcv_wnd = cfg.rcv_buf
            flags |= TcpCachedFlags.UPDATE_RCV_WND  # R-UPD-08
        if "max_rt_ns" in changes or "user_timeout_ns" in changes:
            c.max_rt = self._max_rt_ticks(cfg)
            flags |= TcpCachedFlags.MAX_RT_RESTART  # R-UPD-10
        if "ttl" in changes:
            c.ttl_or_hop_limit = int(changes["ttl"]) & 0xFF
        if "tos" in changes:
            c.tos_or_traffic_class = int(changes["tos"]) & 0xFF
        c.flags = int(flags)
        return c

    def _max_rt_ticks(self, cfg: Any) -> int:
        """MaxRT from the socket: a user timeout (TCP_USER_TIMEOUT) bounds the retransmission time;
        otherwise the engine's max_rt_ns (0: count limit, -1: unlimited), as export_state encodes it."""
        ns = cfg.user_timeout_ns if cfg.user_timeout_ns > 0 else cfg.max_rt_ns
        if ns == 0:
            return 0
        if ns < 0:
            return MASK
        return max(1, min(ns * self.tps // NS_PER_S, MASK - 1))

    def update_tcp(self, tcb: Tcb, changes: dict[str, Any]) -> bool:
        """NdisUpdateOffload of the connection's CACHED variables after a socket option changed (instead of
        an upload). Queued while the connection is being offloaded or another update is in flight
        (R-UPD-05); nothing to do once it is being uploaded (the host engine gets `cfg_changes`)."""
        cp = self.paths.get(tcb)
        if cp is None or cp.phase not in (Phase.OFFLOADING, Phase.OFFLOADED) or cp.invalid or cp.cached is None:
            return False
        pobj = cp.path_obj
        if pobj is not None and (pobj.invalid or (pobj.parent is not None and pobj.parent.invalid)):
            return False  # the target is about to hand it back (R-INV-03/04): the host engine applies it
        if "user_timeout_ns" in changes and "max_rt_ns" not in cp.cfg_changes:
            # import_state takes MaxRT back from the cached struct: keep the engine's own max_rt_ns.
            cp.cfg_changes["max_rt_ns"] = tcb.conn.cfg.max_rt_ns
        cp.next_update = self._tcp_cached(cp, changes)
        self._pump_update(cp)
        return True

    def set_ip_options(self, tcb: Tcb, *, ttl: int | None = None, tos: int | None = None) -> bool:
        """IP_TTL / IP_TOS (IPV6_UNICAST_HOPS / IPV6_TCLASS) of an offloaded connection: TtlOrHopLimit /
        TosOrTrafficClass are cached TCP variables, changed by an update."""
        changes: dict[str, Any] = {}
        if ttl is not None:
            changes["ttl"] = ttl
        if tos is not None:
            changes["tos"] = tos
        return bool(changes) and self.update_tcp(tcb, changes)

    def _pump_update(self, obj: ChimneyPath | OffloadedObject) -> None:
        """Issue the queued update of one object. R-UPD-05: never while it is being offloaded, updated,
        invalidated or terminated; one in flight per object."""
        if obj.updating or obj.invalid or obj.phase is not Phase.OFFLOADED or obj.next_update is None:
            return
        if isinstance(obj, OffloadedObject) and obj.kind == "path" and obj in self._relink_wait:
            return  # the re-link update carries the path's latest CACHED state
        st, obj.next_update = obj.next_update, None
        node = ProtocolOffloadBlockList(_cached_type(obj), obj.handle, [st])
        self._start_op("update", node, [obj], None)

    def _start_op(self, what: str, root: ProtocolOffloadBlockList, objs: list[Any], extra: Any) -> None:
        for o in objs:
            o.ops += 1
            if what == "update":
                o.updating = True
        self._op_recs[id(root)] = (what, root, objs, extra)
        self.ops_out += 1
        if what == "update":
            self.stats["updates"] += 1
            self.stats["update_nodes"] += len(objs)
            self._update_call(root)
        elif what == "invalidate":
            self.stats["invalidates"] += 1
            self.ndis.invalidate_offload(self.binding_handle, root)
        else:
            self.stats["queries"] += 1
            self.ndis.query_offload_state(self.binding_handle, root)

    def _finish_op(self, what: str, pbl: ProtocolOffloadBlockList) -> tuple[list[Any], Any]:
        rec = self._op_recs.pop(id(pbl), None)
        self.ops_out -= 1
        if rec is None or rec[0] != what or rec[1] is not pbl:
            self.stats[f"{what}_unknown_completion"] = self.stats.get(f"{what}_unknown_completion", 0) + 1
            return [], None
        for o in rec[2]:
            o.ops -= 1
            if what == "update":
                o.updating = False
        return rec[2], rec[3]

    def update_offload_complete(self, pbl: ProtocolOffloadBlockList) -> None:
        """ProtocolUpdateOffloadComplete: record what the target now holds; a FAILURE node's object is
        terminated (R-UPD-14: the target keeps running it until then)."""
        objs, relink_from = self._finish_op("update", pbl)
        failed: list[Any] = []
        for node in iter_tree(pbl):
            h = node.offload_handle
            obj = h.owner if h is not None else None
            if obj is None:
                continue
            if node.status != _SUCCESS:
                failed.append(obj)
                continue
            if isinstance(obj, ChimneyPath):
                c = next((x for x in node.state if isinstance(x, TcpOffloadStateCached)), None)
                if c is not None:
                    c = copy.deepcopy(c)
                    c.flags &= ~int(_ONE_SHOT)  # applied: the upload's import sees the plain values
                    obj.cached = c
            elif relink_from is not None and obj.kind == "path" and obj.parent is not relink_from:
                old, new = obj.parent, relink_from
                if old is not None and old.refs > 0:
                    old.refs -= 1
                new.refs += 1
                obj.parent = new  # R-UPD-03: the path now hangs under the new neighbor
                self.stats["relinks"] += 1
        for obj in failed:
            self.stats["update_failed"] += 1
            self._retire(obj, "update_failed")
        for obj in objs:
            if obj not in failed:
                self._after_op(obj)
        if self._relink_wait:
            self._pump_relinks()
        self._soon(self._gc)

    def _after_op(self, obj: Any) -> None:
        if isinstance(obj, ChimneyPath) and obj.ops == 0 and obj.upload_wait is not None:
            why, obj.upload_wait = obj.upload_wait, None
            self.upload(obj.tcb, reason=why)
            return
        self._pump_update(obj)

    def _dependents(self, obj: Any) -> list[ChimneyPath]:
        if isinstance(obj, ChimneyPath):
            return [obj]
        if obj.kind == "path":
            return [cp for cp in self.paths.values() if cp.path_obj is obj]
        return [cp for cp in self.paths.values() if cp.path_obj is not None and cp.path_obj.parent is obj]

    def _retire(self, obj: Any, reason: str) -> None:
        """Take back everything on `obj` (the object itself follows at refcount 0, R-TRM-04); no new
        offload links to it meanwhile."""
        obj.invalid = True
        obj.next_update = None
        tcbs = [cp.tcb for cp in self._dependents(obj)]
        for tcb in tcbs:
            cp = self.paths[tcb]
            if cp.phase is Phase.OFFLOADED:
                cp.next_update = None
                self.upload(tcb, reason=reason)

    # ------------------------------------------------------------------ causes of updates

    def _neighbor_event(self, n: Neighbor, change: NeighborChange, old: bytes | None) -> None:
        """NeighborCache listener of the binding's interface: a new MAC becomes an update of the offloaded
        neighbor's DlDestinationAddress (R-UPD-13: paths stay where they are); an entry that failed or
        left the cache invalidates the offloaded neighbor (its connections come back to the host)."""
        iface = self.binding.iface
        if iface is None:
            return
        nobj = self.neighbor_objs.get((iface.name, n.ip))
        if nobj is None or nobj.invalid or nobj.phase not in (Phase.OFFLOADING, Phase.OFFLOADED):
            return
        if change is NeighborChange.MAC:
            if nobj.host is not n or n.mac is None:
                return
            self.stats["neighbor_mac_updates"] += 1
            nobj.next_update = NeighborOffloadStateCached(dl_destination_address=bytes(n.mac).ljust(32, b"\0"),
                                                          host_reachability_delta=self._hrd(n))
            self._pump_update(nobj)
        elif nobj.host is n:
            self.stats["neighbor_failures" if change is NeighborChange.FAILED else "neighbor_removals"] += 1
            self.invalidate([nobj])

    def _set_path_mtu(self, pobj: OffloadedObject, mtu: int) -> None:
        """Queue an update of the path's cached PathMtu, if the target does not have `mtu` already."""
        if mtu == pobj.mtu or pobj.invalid or pobj.phase not in (Phase.OFFLOADING, Phase.OFFLOADED):
            return
        self.stats["pmtu_updates" if mtu < pobj.mtu else "pmtu_increases"] += 1
        pobj.mtu = mtu
        pobj.next_update = PathOffloadStateCached(path_mtu=mtu)
        self._pump_update(pobj)

    def _pmtu_changed(self, dst: bytes, mtu: int | None) -> None:
        """PathMtuCache listener. A report (ICMP fragmentation needed / packet too big) lowered the PMTU to
        `mtu`; None: the learned value aged out or was flushed, the PMTU rises back to the route / link MTU.
        PathMtu of every offloaded path to `dst` is a cached variable: update it, either way."""
        ip = self.stack.ip
        for pobj in list(self.path_objs.values()):
            if pobj.key[1] != dst or pobj.invalid or pobj.phase not in (Phase.OFFLOADING, Phase.OFFLOADED):
                continue
            p = pobj.host
            if mtu is None:
                fresh = ip.path(pobj.key[0], dst)  # refreshes the shared Path's MTU in place
                if fresh is None:
                    continue  # no route any more: route_changed invalidates it
                new = fresh.mtu
            else:
                if p.mtu > mtu:
                    p.mtu = mtu  # HostIp applies the report to the shared path after telling the listeners
                new = min(p.mtu, mtu)
            self._set_path_mtu(pobj, new)
        if mtu is not None:
            self._arm_pmtu_aging()

    def _arm_pmtu_aging(self) -> None:
        """One timer at the earliest aging deadline of a learned PMTU an offloaded path uses: the target
        holds a copy and never asks the cache, so the increase is told to it when it happens."""
        if self.closed:
            return
        cache = self.stack.ip.pmtu
        when = min((d for d in (cache.deadline(o.key[1]) for o in self.path_objs.values()
                                if o.phase in (Phase.OFFLOADING, Phase.OFFLOADED)) if d is not None), default=None)
        if when is None:
            return
        if self._pmtu_timer is not None:
            if self._pmtu_timer_at <= when:
                return
            self._pmtu_timer.cancel()
        self._pmtu_timer_at = when
        self._pmtu_timer = self.scheduler.call_at(max(when, self.scheduler.now), self._pmtu_aging,
                                                  label="chimney pmtu aging")

    def _pmtu_aging(self) -> None:
        self._pmtu_timer = None
        self.stack.ip.pmtu.expire(self.scheduler.now)  # calls _pmtu_changed(dst, None) for each aged entry
        self._arm_pmtu_aging()

    def _route_event(self, what: str, route: Any) -> None:
        """RouteTable listener: one `route_changed` pass after the current batch of table edits (a replace
        is a remove and an add; `ip route` scripts change several routes at once)."""
        if not self._route_pending and not self.closed and (self.path_objs or self.neighbor_objs):
            self._route_pending = True
            self._soon(self._route_pass)

    def _route_pass(self) -> None:
        if not self._route_pending:
            return  # close() came in between
        self._route_pending = False
        self.route_changed()

    def route_changed(self) -> None:
        """The route table changed (RouteTable notifies; may also be called directly): paths with no route
        are invalidated; paths whose next hop moved are re-linked to the new next hop's neighbor with an
        update tree rooted at it (R-UPD-03), the neighbor offloaded first if needed; a path whose route MTU
        changed gets its PathMtu updated. Paths still being offloaded are looked at once they are."""
        ip = self.stack.ip
        iface = self.binding.iface
        for pobj in list(self.path_objs.values()):
            if pobj.invalid:
                continue
            if pobj.phase is Phase.OFFLOADING:
                self._route_dirty = True
                continue
            if pobj.phase is not Phase.OFFLOADED:
                continue
            src, dst = pobj.key
            p = ip.path(src, dst)  # refreshes the shared Path's next hop / interface / MTU in place
            for cp in self._dependents(pobj):
                cp.tcb.refresh_path()
            if p is None or iface is None or p.interface != iface.name:
                self.invalidate([pobj])
                continue
            nkey = (p.interface, p.next_hop)
            cur = self._relink_wait.get(pobj, pobj.parent)
            if cur is not None and cur.key == nkey:
                if pobj not in self._relink_wait:
                    self._set_path_mtu(pobj, p.mtu)  # same neighbor: at most the route MTU changed
                continue
            n = ip.neighbors[p.interface].get(p.next_hop)
            if n is None or n.mac is None or n.state is NeighborState.FAILED:
                ip.neighbor_for(p)  # start resolving; the connections continue in the host meanwhile
                self.invalidate([pobj])
                continue
            nobj = self.neighbor_objs.get(nkey)
            if nobj is not None and nobj.invalid:
                self.invalidate([pobj])
                continue
            if nobj is None:
                nobj = self.neighbor_objs[nkey] = OffloadedObject("neighbor", nkey, n, None, len(p.next_hop) == 16)
                self._initiate_call(self._object_node(nobj))
            self._relink_wait[pobj] = nobj
        self._pump_relinks()

    def _pump_relinks(self) -> None:
        """Issue the re-link updates whose objects are free (R-UPD-05), one tree per new neighbor."""
        groups: dict[OffloadedObject, list[OffloadedObject]] = {}
        for pobj, nobj in list(self._relink_wait.items()):
            if nobj.phase is Phase.DONE or nobj.invalid or pobj.invalid or pobj.phase is not Phase.OFFLOADED:
                del self._relink_wait[pobj]  # the new neighbor could not be offloaded: take the path back
                if pobj.phase is Phase.OFFLOADED and not pobj.invalid:
                    self.invalidate([pobj])
                continue
            if nobj.phase is not Phase.OFFLOADED or nobj.updating or pobj.updating:
                continue
            groups.setdefault(nobj, []).append(pobj)
        for nobj, pobjs in groups.items():
            n = nobj.host
            nobj.next_update = None  # the root carries the neighbor's current CACHED state
            root = ProtocolOffloadBlockList(OffloadStateType.NeighborOffloadCachedState, nobj.handle, [
                NeighborOffloadStateCached(dl_destination_address=bytes(n.mac or b"").ljust(32, b"\0"),
                                           host_reachability_delta=self._hrd(n))])
            for pobj in pobjs:
                del self._relink_wait[pobj]
                pobj.next_update = None
                pobj.mtu = pobj.host.mtu
                # R-UPD-04: only the path -> neighbor link moves; TCP nodes never appear here.
                root.add_dependent(ProtocolOffloadBlockList(_cached_type(pobj), pobj.handle,
                                                            [PathOffloadStateCached(path_mtu=pobj.host.mtu)]))
            self._start_op("update", root, [nobj, *pobjs], nobj)

    # ------------------------------------------------------------------ invalidate (R-INV-*)

    def invalidate(self, objs: Iterable[OffloadedObject]) -> int:
        """NdisInvalidateOffload: the neighbor / path is no longer valid (unreachable, no route). The
        target stops sending on everything above it and asks for their upload (InvalidState); the host
        terminates those connections, then the objects (R-TRM-04). One request per object."""
        count = 0
        for obj in objs:
            if obj.invalid:
                continue
            obj.invalid = True  # R-UPD-05: no update of it from now on
            obj.next_update = None
            self._relink_wait.pop(obj, None)
            if obj.phase is Phase.OFFLOADING:
                continue  # done by initiate_offload_complete once it is offloaded
            if obj.phase is not Phase.OFFLOADED:
                continue
            t = OffloadStateType.NeighborOffloadState if obj.kind == "neighbor" else (
                OffloadStateType.Ip6OffloadState if obj.v6 else OffloadStateType.Ip4OffloadState)
            self._start_op("invalidate", ProtocolOffloadBlockList(t, obj.handle), [obj], None)
            count += 1
        return count

    def invalidate_offload_complete(self, pbl: ProtocolOffloadBlockList) -> None:
        objs, _ = self._finish_op("invalidate", pbl)
        for obj in objs:
            # The target asks for each affected connection (TcpIndicateRetrieve/InvalidState, R-INV-04);
            # whatever it did not ask for is taken back by the host shortly after.
            self.scheduler.call_later(5 * NS_PER_MS, self._invalidate_fallback, obj, label="chimney invalidate")
        self._soon(self._gc)

    def _invalidate_fallback(self, obj: OffloadedObject) -> None:
        for cp in self._dependents(obj):
            if cp.phase is Phase.OFFLOADED:
                self.stats["invalidate_host_uploads"] += 1
                self.upload(cp.tcb, reason="invalidated")

    def check_neighbors(self) -> int:
        """Invalidate offloaded neighbors the host's cache has as FAILED (or no longer has): a full sweep,
        for callers that changed the cache behind its back; the cache's own changes arrive as events."""
        bad = []
        for nobj in self.neighbor_objs.values():
            if nobj.invalid or nobj.phase not in (Phase.OFFLOADING, Phase.OFFLOADED):
                continue
            ifname, ip = nobj.key
            cache = self.stack.ip.neighbors.get(ifname)
            n = cache.get(ip) if cache is not None else None
            if n is None or n is not nobj.host or n.state is NeighborState.FAILED:
                bad.append(nobj)
        return self.invalidate(bad)

    def _probe_neighbor(self, nobj: OffloadedObject) -> None:
        """NUD probe of an offloaded neighbor (RFC 4861 7.3.3) after a reachability query found it
        unconfirmed on both sides; a failed probe turns the entry FAILED, which invalidates the neighbor
        (`_neighbor_event`)."""
        if nobj.invalid or nobj.phase is not Phase.OFFLOADED:
            return
        ifname, ip = nobj.key
        cache = self.stack.ip.neighbors[ifname]
        n = cache.get(ip)
        if n is not None and n.state is NeighborState.STALE:
            cache.resolve(ip, lambda mac: None)

    # ------------------------------------------------------------------ query (R-QRY-*)

    def query(self, tcb: Tcb) -> SimFuture[TcpOffloadStateDelegated | None]:
        """NdisQueryOffloadState of an offloaded connection's live delegated state (SRtt still x8, RttVar
        x4 as exchanged). Resolves None when the connection is not offloaded or the query failed. Several
        queries of one connection may be outstanding (R-QRY-04)."""
        fut: SimFuture[TcpOffloadStateDelegated | None] = SimFuture()
        cp = self.paths.get(tcb)
        if cp is None or cp.phase is not Phase.OFFLOADED:
            fut.set_result(None)
            return fut
        node = ProtocolOffloadBlockList(OffloadStateType.TcpOffloadState, cp.handle,
                                        [TcpOffloadStateConst(), TcpOffloadStateCached(), TcpOffloadStateDelegated()])
        self._start_op("query", node, [cp], fut)
        return fut

    def query_offload_complete(self, pbl: ProtocolOffloadBlockList) -> None:
        objs, fut = self._finish_op("query", pbl)
        dlg = None
        if pbl.status == _SUCCESS:
            dlg = next((x for x in pbl.state if isinstance(x, TcpOffloadStateDelegated)), None)
            dlg = copy.copy(dlg)  # the tree's state is valid only until this call returns
        else:
            self.stats["query_failed"] += 1
        for obj in objs:
            self._after_op(obj)
        if fut is not None and not fut.done():
            fut.set_result(dlg)
        self._soon(self._gc)

    # ------------------------------------------------------------------ status indications, power, stats

    def status_indication(self, code: int) -> None:
        """ProtocolStatusEx, after the binding recorded the state (paused / media)."""
        if code == NdisStatus.OFFLOAD_PAUSE:
            self.stats["status_pause"] += 1
        elif code == NdisStatus.OFFLOAD_RESUME:
            self.stats["status_resume"] += 1
            self.wake()  # offload again, within the capacity just re-queried
        elif code == NdisStatus.UPLOAD_ALL:
            self.stats["status_upload_all"] += 1
            self.upload_all("upload_all")
        elif code == NdisStatus.MEDIA_DISCONNECT:
            self.stats["media_disconnects"] += 1
            if self.policy.upload_on_media_disconnect:
                self.upload(list(self.paths), reason="media_disconnect")
        elif code == NdisStatus.MEDIA_CONNECT:
            self.wake()

    def set_power(self, low: bool) -> SimFuture[int]:
        """Low power: no new offloads, terminate every offloaded object and wait for the completions
        (R-PM-01), then OID_PNP_SET_POWER D3 (the target may pend it, R-PM-02). Back to D0: the OID, then
        offload again per policy. Resolves with the OID's final status."""
        fut: SimFuture[int] = SimFuture()
        self.stats["power_transitions"] += 1
        if low:
            self.power_low = True
            self._idle_waiters.append(lambda: self._set_power_oid(NdisDevicePowerState.D3, fut))
            self.upload_all("power")
        else:
            self._set_power_oid(NdisDevicePowerState.D0, fut)
        return fut

    def _set_power_oid(self, state: NdisDevicePowerState, fut: SimFuture[int]) -> None:
        req = NdisOidRequest.set(OID_PNP_SET_POWER, state)
        self._power_reqs[req.request_id] = fut
        st = self.ndis.oid_request(self.binding_handle, req)
        if st != NdisStatus.PENDING:
            self._power_done(req, st)

    def _power_done(self, req: NdisOidRequest, status: int) -> None:
        fut = self._power_reqs.pop(req.request_id, None)
        if req.buffer == NdisDevicePowerState.D0:
            self.power_low = False
            self.wake()
        if isinstance(fut, SimFuture) and not fut.done():
            fut.set_result(status)

    def oid_request_complete(self, req: NdisOidRequest, status: int) -> None:
        if req.oid == OID_PNP_SET_POWER:
            self._power_done(req, status)

    def offload_stats(self, version: int = 4) -> tuple[TcpOffloadStats, IpOffloadStats]:
        """OID_TCP4/6_OFFLOAD_STATS and OID_IP4/6_OFFLOAD_STATS queries: the target's counters of offloaded
        traffic only (R-STAT-02/03)."""
        tcp_oid, ip_oid = _stats_oids(version)
        out: list[Any] = []
        for oid in (tcp_oid, ip_oid):
            req = NdisOidRequest.query(oid)
            st = self.ndis.oid_request(self.binding_handle, req)
            if st != NdisStatus.SUCCESS:
                raise OSError(f"{req!r} failed with {_status_name(st)}")
            out.append(req.buffer)
        tcp, ipst = out
        if not isinstance(tcp, TcpOffloadStats) or not isinstance(ipst, IpOffloadStats):
            raise TypeError(f"stats OIDs returned {type(tcp).__name__} / {type(ipst).__name__}")
        return tcp, ipst

    def reset_offload_stats(self, version: int = 4) -> None:
        """A set of the stats OIDs resets them (R-STAT-04; the buffer is ignored)."""
        for oid in _stats_oids(version):
            st = self.ndis.oid_request(self.binding_handle, NdisOidRequest.set(oid, None))
            if st != NdisStatus.SUCCESS:
                raise OSError(f"reset of OID 0x{oid:08X} failed with {_status_name(st)}")


    # ------------------------------------------------------------------ I/O completions

    def send_complete(self, nbl: NetBufferList) -> None:
        self.calls += 1
        for n in split_nbl_chain(nbl):
            cp = n.protocol_reserved[0]
            if isinstance(cp, ChimneyPath):
                cp.send_done(n)
            else:
                self.stats["send_completed_unknown"] += 1

    def receive_complete(self, nbl: NetBufferList) -> None:
        for n in split_nbl_chain(nbl):
            cp = n.protocol_reserved[0]
            if isinstance(cp, ChimneyPath):
                cp.posts_out -= 1

    def disconnect_complete(self, nbl: NetBufferList) -> None:
        self.disc_out -= 1
        cp = nbl.protocol_reserved[0]
        if not isinstance(cp, ChimneyPath):
            return
        st = nbl.status
        if st == _SUCCESS and not cp.aborted:
            # Our FIN is acknowledged.
            cp.tcp_state = {S.FinWait1: S.FinWait2, S.Closing: S.TimeWait, S.LastAck: S.Closed}.get(
                cp.tcp_state, cp.tcp_state)
            if cp.tcp_state is S.Closed and cp.phase is Phase.OFFLOADED:
                self._soon(lambda: self.upload(cp.tcb, reason="closed"))
        elif st == _UIP:
            cp.shut_sent = False
            cp.pending_shutdown = True
        if cp.aborted and cp.phase is Phase.OFFLOADED:
            self._soon(lambda: self.upload(cp.tcb, reason="abort"))  # R-DISC-14: resources until terminate
        cp._wake([])

    def forward_complete(self, nbl: NetBufferList) -> None:
        for _n in split_nbl_chain(nbl):
            self.fwd_out -= 1

    # ------------------------------------------------------------------ indications and events

    def receive_indicate(self, handle: Any, nbl: NetBufferList, status: int) -> tuple[int, int]:
        self.calls += 1
        cp = handle.owner if isinstance(handle, NdisOffloadHandle) else None
        if not isinstance(cp, ChimneyPath):
            return NdisStatus.OFFLOAD_DATA_NOT_ACCEPTED, 0
        return cp.indicate(nbl)

    def tcp_event(self, handle: Any, event_type: int, info: int) -> None:
        cp = handle.owner if isinstance(handle, NdisOffloadHandle) else None
        if not isinstance(cp, ChimneyPath):
            return
        if event_type == TcpOffloadEventType.TcpIndicateDisconnect:
            self.stats["disconnects_indicated"] += 1
            cp.tcp_state = {S.Established: S.CloseWait, S.FinWait1: S.Closing, S.FinWait2: S.TimeWait}.get(
                cp.tcp_state, cp.tcp_state)
            cp._wake([PeerClosed()])
        elif event_type == TcpOffloadEventType.TcpIndicateAbort:
            self.stats["aborts_indicated"] += 1
            cp.aborted = True
            cp.tcp_state = S.Closed
            cp.tcb.error = errno.ECONNRESET
            cp._wake([Reset()])
            self._soon(lambda: self.upload(cp.tcb, reason="abort"))  # R-EVT-04: resources until terminate
        elif event_type == TcpOffloadEventType.TcpIndicateRetrieve:
            self.stats["retrieves"] += 1
            if cp.tcp_state in _HALF_CLOSED and not _mandatory(info):
                # R-EVT-08 forbids this request (the verifier reports the target): the host does not act
                # on it either; the connection finishes its close offloaded.
                self.stats["retrieves_half_closed"] += 1
                self.stats["retrieves_ignored"] += 1
            elif self.policy.honours(info):
                try:
                    why = TcpUploadReason(info).name
                except ValueError:
                    why = str(info)
                self._soon(lambda: self.upload(cp.tcb, reason=f"retrieve:{why}"))
            else:
                self.stats["retrieves_ignored"] += 1
        elif event_type == TcpOffloadEventType.TcpIndicateSendBacklogChange:
            cp.send_backlog_hint = info

    def indicate_offload_event(self, pbl: ProtocolOffloadBlockList | None, code: int) -> None:
        """NeighborReachabilityQuery: write the host's HRD into the CACHED struct before returning (§6.10)."""
        if code != IndicateOffloadEvent.NeighborReachabilityQuery or pbl is None:
            return
        self.stats["reachability_queries"] += 1
        h = pbl.offload_handle
        obj = h.owner if h is not None else None
        if not isinstance(obj, OffloadedObject) or obj.kind != "neighbor":
            return
        n = obj.host
        for s in pbl.state:
            if isinstance(s, NeighborOffloadStateCached):
                # R-NBR-06: the host's last confirmation, in TicksPerSecond units.
                s.host_reachability_delta = self._hrd(n)
        # Neither side confirmed the neighbor lately: the host verifies it (NUD probe) and invalidates
        # the neighbor if the probe fails (checked once the probe had its time).
        stale_ns = self.binding.params.nce_stale_ticks * NS_PER_S // self.tps
        if self.scheduler.now - n.confirmed_at > stale_ns:
            self._soon(lambda: self._probe_neighbor(obj))

    # ------------------------------------------------------------------ checks for tests

    def leaks(self) -> list[str]:
        """Host-side things still out: held indications, sends, posts, disconnects, forwards, ops."""
        out = []
        for tcb, cp in self.paths.items():
            if cp.rx_refs or cp.returns:
                out.append(f"{tcb!r}: {len(cp.rx_refs) + len(cp.returns)} indicated NBL(s) held")
            if cp.posts_out:
                out.append(f"{tcb!r}: {cp.posts_out} receive post(s) not completed")
        if self._op_recs:
            out.append(f"{len(self._op_recs)} query/update/invalidate request(s) not completed")
        for name in ("disc_out", "fwd_out", "ops_out", "rx_held"):
            if getattr(self, name):
                out.append(f"{name}={getattr(self, name)}")
        return out


def _mdl_chain(views: list[memoryview]) -> Mdl | None:
    head: Mdl | None = None
    prev: Mdl | None = None
    for v in views:
        if not len(v):
            continue
        m = Mdl(v)
        if prev is None:
            head = m
        else:
            prev.next = m
        prev = m
    return head


def _cached_type(obj: Any) -> OffloadStateType:
    """Header.Type of an update node carrying the object's CACHED struct."""
    if isinstance(obj, ChimneyPath):
        return OffloadStateType.TcpOffloadCachedState
    if obj.kind == "neighbor":
        return OffloadStateType.NeighborOffloadCachedState
    return OffloadStateType.Ip6OffloadCachedState if obj.v6 else OffloadStateType.Ip4OffloadCachedState


def _stats_oids(version: int) -> tuple[int, int]:
    if version == 4:
        return OID_TCP4_OFFLOAD_STATS, OID_IP4_OFFLOAD_STATS
    if version == 6:
        return OID_TCP6_OFFLOAD_STATS, OID_IP6_OFFLOAD_STATS
    raise ValueError(f"IP version {version!r}: 4 or 6")


def _mandatory(reason: int) -> bool:
    """A TCP_UPLOAD_REASON the host must honour (§5.4); unknown values count as mandatory."""
    try:
        return TcpUploadReason(reason).mandatory
    except ValueError:
        return True


def _status_name(st: int) -> str:
    try:
        return NdisStatus(st).name
    except ValueError:
        return f"0x{st:08X}"


# ====================================================================================== setup helper


@dataclass
class OffloadPair:
    """`build_offload_pair` result; unpacks as (host_a, host_b, link, ndis, target)."""

    host_a: HostStack
    host_b: HostStack
    link: Link
    ndis: Ndis
    target: Any
    binding: NdisHostBinding
    manager: OffloadManager
    ims: tuple[Any, ...] = ()  # intermediate drivers between host A and the target, bottom-up

    def __iter__(self) -> Any:
        return iter((self.host_a, self.host_b, self.link, self.ndis, self.target))

    def leak_report(self) -> str:
        """NDIS's report plus the host's own outstanding items; empty lines trimmed."""
        text = "\n".join(x for x in [self.ndis.leak_report().strip(), *self.manager.leaks()] if x)
        return text


def build_offload_pair(
    scheduler: Any,
    seed: int = 0,
    impairments: Impairments | tuple[Impairments | None, Impairments | None] | None = None,
    target_options: dict[str, Any] | None = None,
    *,
    policy: OffloadPolicy | None = None,
    verifier: Verifier | None = None,
    ticks_per_second: int = 1000,
    settle_ns: int = 10 * NS_PER_MS,
    target_factory: Callable[..., Any] | None = None,
    checks: type[BoundaryChecks] | None = None,
    ims: Sequence[Callable[[str], Any]] | int = (),
    manager_class: type[OffloadManager] = OffloadManager,
) -> OffloadPair:
    """Host A (198.18.0.1) bound through NDIS to an offload target whose emulated NIC sits on `link.a`;
    host B (198.18.0.2) a plain HostStack on `link.b`. `impairments`: one for both directions or an
    (a_to_b, b_to_a) pair. `target_options`: TargetLimits fields. `seed` names the target adapter (the
    scheduler's own seed drives randomness). `target_factory(name, nic, scheduler, limits)` builds the
    target (default: the built-in `OffloadTarget`; `chimney verify` passes a user's class). `ims`: factories
    `f(name) -> IntermediateDriver` stacked bottom-up between the target and host A's binding, or a count of
    `PassThroughChimneyIm` drivers. `manager_class`: an OffloadManager subclass (host test doubles)."""
    from chimney.target import EmulatedNic, OffloadTarget, TargetLimits

    if isinstance(impairments, tuple):
        a_to_b, b_to_a = impairments
    else:
        a_to_b = b_to_a = impairments
    link = Link(scheduler, "ab", a_to_b, b_to_a, mac_a=bytes.fromhex("02000000000a"),
                mac_b=bytes.fromhex("02000000000b"))
    if checks is None and ims:
        from chimney.filters.checks import ImChecks

        checks = ImChecks  # the full verifier plus the IM rules (R-IM-04..12) at every IM edge
    # checks None: the full verifier (ChimneyChecks, the Ndis default)
    ndis = Ndis(scheduler, verifier if verifier is not None else Verifier(Mode.STRICT), checks=checks)
    nic = EmulatedNic(link.a)
    limits = TargetLimits(**(target_options or {}))
    target = (target_factory or OffloadTarget)(f"toe{seed}", nic, scheduler, limits)
    ndis.register_miniport_driver(target)
    adapter = ndis.add_adapter(target, f"nic{seed}")
    if isinstance(ims, int):
        from chimney.filters.passthrough import PassThroughChimneyIm

        ims = [PassThroughChimneyIm] * ims
    stacked: list[Any] = []
    for i, make_im in enumerate(ims):
        im = make_im(f"im{i}")
        stacked.append(im)
        adapter = ndis.add_im(im, adapter, f"im{i}-vm")
    host_a = HostStack(scheduler, "A")
    binding = NdisHostBinding(host_a, params=offload_parameters(host_a.tcp.config, ticks_per_second))
    binding.attach(ndis, adapter, mac=nic.mac, addresses=["198.18.0.1/24"], mtu=link.a.mtu)
    manager = manager_class(host_a, binding, policy)
    host_b = HostStack(scheduler, "B")
    host_b.attach(link.b, addresses=["198.18.0.2/24"])
    if settle_ns:
        scheduler.run_until(scheduler.now + settle_ns)
    return OffloadPair(host_a, host_b, link, ndis, target, binding, manager, tuple(stacked))


__all__ = [
    "ChimneyPath",
    "HostChimneyChecks",
    "OffloadManager",
    "OffloadPair",
    "OffloadedObject",
    "Phase",
    "build_offload_pair",
]
