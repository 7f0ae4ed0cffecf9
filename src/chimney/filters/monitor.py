"""A monitoring chimney IM: the pass-through IM plus a per-connection (per offload entry) trace of every
chimney call, completion and indication, with counters, scheduler-ns timing, a query API and JSON-lines export.

Record names are the NDIS handler names the IM saw (MiniportInitiateOffload, ProtocolInitiateOffloadComplete,
MiniportTcpOffloadSend, ProtocolTcpOffloadSendComplete, ProtocolTcpOffloadReceiveIndicate, ProtocolTcpOffloadEvent,
ProtocolIndicateOffloadEvent, MiniportTcpOffloadReceiveReturn, ProtocolStatusEx, MiniportOidRequest), plus
NdisTcpOffloadSendComplete for a send the IM completed itself (R-IM-12).
"""

from __future__ import annotations

import json
from collections import Counter, deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import IO, Any

from chimney.filters.passthrough import OffloadEntry, PassThroughChimneyIm, mark_upload_requested
from chimney.ndis.blocklist import MiniportOffloadBlockList, NodeRole, ProtocolOffloadBlockList, node_role
from chimney.ndis.buffers import NblInfo, NetBufferList, status_text
from chimney.ndis.core import NdisStatusIndication, Op
from chimney.ndis.oid import OID_NAMES, NdisOidRequest
from chimney.ndis.status import NdisStatus

__all__ = ["ConnStats", "MonitoringIm", "TraceRecord"]

_BYTES_TRANSFERRED = NblInfo.TcpOffloadBytesTransferred

_OP_CALL = {
    Op.INITIATE: "MiniportInitiateOffload",
    Op.TERMINATE: "MiniportTerminateOffload",
    Op.UPDATE: "MiniportUpdateOffload",
    Op.INVALIDATE: "MiniportInvalidateOffload",
    Op.QUERY: "MiniportQueryOffload",
}
_OP_COMPLETE = {
    Op.INITIATE: "ProtocolInitiateOffloadComplete",
    Op.TERMINATE: "ProtocolTerminateOffloadComplete",
    Op.UPDATE: "ProtocolUpdateOffloadComplete",
    Op.INVALIDATE: "ProtocolInvalidateOffloadComplete",
    Op.QUERY: "ProtocolQueryOffloadComplete",
}


@dataclass(slots=True)
class TraceRecord:
    """One chimney event seen by the IM. `conn` is the offload entry id (None for adapter-wide events).

    kind: "call" (from above), "completion" (from below, or the IM's own), "indication" (from below),
    "status", "oid". `detail` carries Flags / EventType / IndicationCode / OID, `info` the event's
    specific information, `result`/`consumed` an indication's answer, `latency_ns` call-to-completion
    time of an I/O NBL (scheduler ns)."""

    seq: int
    t_ns: int
    im: str
    kind: str
    name: str
    conn: int | None = None
    nbls: int = 0
    nbytes: int = 0
    status: int | None = None
    detail: int | None = None
    info: int | None = None
    result: int | None = None
    consumed: int | None = None
    latency_ns: int | None = None

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"seq": self.seq, "t_ns": self.t_ns, "im": self.im, "kind": self.kind, "name": self.name}
        for key in ("conn", "nbls", "nbytes", "status", "detail", "info", "result", "consumed", "latency_ns"):
            value = getattr(self, key)
            if value is not None:
                d[key] = value
        if self.status is not None:
            d["status_name"] = status_text(self.status)
        return d

    def __str__(self) -> str:
        conn = "-" if self.conn is None else f"#{self.conn}"
        st = "" if self.status is None else f" {status_text(self.status)}"
        return f"{self.t_ns:>12} {self.im} {conn:>5} {self.kind:<10} {self.name} n={self.nbls} b={self.nbytes}{st}"


@dataclass(slots=True)
class ConnStats:
    """Counters of one offloaded object (one offload entry) as seen by the monitoring IM."""

    conn: int
    type: int
    calls: Counter[str] = field(default_factory=Counter)
    completions: Counter[str] = field(default_factory=Counter)
    indications: Counter[str] = field(default_factory=Counter)
    statuses: Counter[str] = field(default_factory=Counter)
    bytes: Counter[str] = field(default_factory=Counter)
    first_ns: int = -1
    last_ns: int = -1
    io_completed: int = 0
    io_latency_total_ns: int = 0
    io_latency_max_ns: int = 0

    @property
    def io_latency_avg_ns(self) -> float:
        return self.io_latency_total_ns / self.io_completed if self.io_completed else 0.0

    def line(self) -> str:
        def fmt(c: Counter[str]) -> str:
            return " ".join(f"{k}={v}" for k, v in sorted(c.items())) or "-"

        return (
            f"conn #{self.conn} type={self.type} calls[{fmt(self.calls)}] completions[{fmt(self.completions)}] "
            f"indications[{fmt(self.indications)}] statuses[{fmt(self.statuses)}] bytes[{fmt(self.bytes)}] "
            f"io={self.io_completed} lat_avg={self.io_latency_avg_ns:.0f}ns lat_max={self.io_latency_max_ns}ns"
        )


def _short(name: str) -> str:
    for prefix in ("MiniportTcpOffload", "ProtocolTcpOffload", "Miniport", "Protocol"):
        if name.startswith(prefix):
            return name[len(prefix) :]
    return name


class MonitoringIm(PassThroughChimneyIm):
    """PassThroughChimneyIm that records what crosses it. Query with `records`, `stats`, `connections`,
    `totals`; export with `export_jsonl`; `summary()` is a human-readable digest.

    `max_records` bounds the kept trace (oldest dropped, counted in `dropped_records`); counters are exact."""

    def __init__(self, name: str, *, max_records: int | None = 100_000, **kwargs: Any) -> None:
        super().__init__(name, **kwargs)
        self.trace: deque[TraceRecord] = deque(maxlen=max_records)
        self.dropped_records = 0
        self.conn_stats: dict[int, ConnStats] = {}
        self.op_counts: Counter[str] = Counter()
        self._seq = 0
        self._inflight: dict[int, tuple[int, int]] = {}  # NBL serial -> (conn, call time)
        self._indicated: dict[int, int] = {}  # NBL serial -> conn, for receive returns

    # -- recording ---------------------------------------------------------------------------------------

    def _now(self) -> int:
        return int(self.n.scheduler.now)

    def _stats(self, entry: OffloadEntry) -> ConnStats:
        st = self.conn_stats.get(entry.id)
        if st is None:
            st = self.conn_stats[entry.id] = ConnStats(entry.id, entry.type)
        return st

    def _rec(self, kind: str, name: str, conn: int | None, t: int, **fields: Any) -> TraceRecord:
        self._seq += 1
        rec = TraceRecord(self._seq, t, self.name, kind, name, conn, **fields)
        trace = self.trace
        if trace.maxlen is not None and len(trace) == trace.maxlen:
            self.dropped_records += 1
        trace.append(rec)
        self.op_counts[name] += 1
        if conn is not None:
            st = self.conn_stats.get(conn)
            if st is not None:
                if st.first_ns < 0:
                    st.first_ns = t
                st.last_ns = t
                short = _short(name)
                if kind == "call":
                    st.calls[short] += 1
                elif kind == "completion":
                    st.completions[short] += 1
                elif kind == "indication":
                    st.indications[short] += 1
                if rec.status is not None and kind == "completion":
                    st.statuses[status_text(rec.status)] += 1
        return rec

    # -- state operations -----------------------------------------------------------------------------------

    def _entry_for(self, op: Op, vm: Any, m: MiniportOffloadBlockList, ce: Any) -> tuple[Any, str | None]:
        entry, problem = super()._entry_for(op, vm, m, ce)
        if entry is not None:
            self._stats(entry)
            role = node_role(m)
            self._rec(
                "call", _OP_CALL[op], entry.id, self._now(), detail=1 if role is NodeRole.NEW_OFFLOAD else 0
            )
        return entry, problem

    def _state_up(self, op: Op, pbl: ProtocolOffloadBlockList) -> None:
        ce = pbl.im_reserved[0] if pbl is not None else None
        nodes = ce.nodes if ce is not None and self.call_entries.get(getattr(ce, "id", -1)) is ce else []
        t = self._now()
        for _m, p, entry, *_ in nodes:
            if entry is not None:
                self._rec("completion", _OP_COMPLETE[op], entry.id, t, status=p.status)
        super()._state_up(op, pbl)

    # -- chimney I/O --------------------------------------------------------------------------------------------

    def _calls(self, name: str, entry: OffloadEntry, head: NetBufferList, key: str, detail: int | None = None) -> None:
        t = self._now()
        st = self._stats(entry)
        count = size = 0
        inflight = self._inflight
        n: NetBufferList | None = head
        while n is not None:
            count += 1
            size += n.data_length()
            inflight[n.serial] = (entry.id, t)
            n = n.next
        st.bytes[key] += size
        self._rec("call", name, entry.id, t, nbls=count, nbytes=size, detail=detail)

    def _completions(self, name: str, head: NetBufferList, key: str) -> None:
        t = self._now()
        groups: dict[int | None, list[NetBufferList]] = {}
        lat: dict[int | None, list[int]] = {}
        n: NetBufferList | None = head
        while n is not None:
            conn, t0 = self._inflight.pop(n.serial, (None, t))
            groups.setdefault(conn, []).append(n)
            lat.setdefault(conn, []).append(t - t0)
            n = n.next
        for conn, nbls in groups.items():
            moved = sum(int(x.info.get(_BYTES_TRANSFERRED, 0) or 0) for x in nbls)
            st = self.conn_stats.get(conn) if conn is not None else None
            if st is not None:
                st.bytes[key] += moved
                for dt in lat[conn]:
                    st.io_completed += 1
                    st.io_latency_total_ns += dt
                    if dt > st.io_latency_max_ns:
                        st.io_latency_max_ns = dt
                for x in nbls[1:]:
                    st.statuses[status_text(x.status)] += 1
            self._rec(
                "completion", name, conn, t, nbls=len(nbls), nbytes=moved, status=nbls[0].status, latency_ns=max(lat[conn])
            )

    def tcp_offload_send(self, adapter_context: Any, offload_context: Any, nbl: NetBufferList) -> NdisStatus:
        self._calls("MiniportTcpOffloadSend", offload_context, nbl, "send_requested")
        return super().tcp_offload_send(adapter_context, offload_context, nbl)

    def _complete_send_itself(self, vm: Any, nbl: NetBufferList) -> None:
        mark_upload_requested(nbl)
        self._count("send_upload_requested")
        self._completions("NdisTcpOffloadSendComplete", nbl, "send_acked")
        self.n.tcp_offload_send_complete(vm, nbl)

    def tcp_offload_receive(self, adapter_context: Any, offload_context: Any, nbl: NetBufferList) -> NdisStatus:
        self._calls("MiniportTcpOffloadReceive", offload_context, nbl, "receive_posted")
        return super().tcp_offload_receive(adapter_context, offload_context, nbl)

    def tcp_offload_disconnect(
        self, adapter_context: Any, offload_context: Any, nbl: NetBufferList, flags: int
    ) -> NdisStatus:
        self._calls("MiniportTcpOffloadDisconnect", offload_context, nbl, "disconnect_data", flags)
        return super().tcp_offload_disconnect(adapter_context, offload_context, nbl, flags)

    def tcp_offload_forward(self, adapter_context: Any, offload_context: Any, nbl: NetBufferList) -> NdisStatus:
        self._calls("MiniportTcpOffloadForward", offload_context, nbl, "forwarded")
        return super().tcp_offload_forward(adapter_context, offload_context, nbl)

    def tcp_offload_send_complete(self, binding_context: Any, nbl: NetBufferList) -> None:
        self._completions("ProtocolTcpOffloadSendComplete", nbl, "send_acked")
        super().tcp_offload_send_complete(binding_context, nbl)

    def tcp_offload_receive_complete(self, binding_context: Any, nbl: NetBufferList) -> None:
        self._completions("ProtocolTcpOffloadReceiveComplete", nbl, "receive_filled")
        super().tcp_offload_receive_complete(binding_context, nbl)

    def tcp_offload_disconnect_complete(self, binding_context: Any, nbl: NetBufferList) -> None:
        self._completions("ProtocolTcpOffloadDisconnectComplete", nbl, "disconnect_acked")
        super().tcp_offload_disconnect_complete(binding_context, nbl)

    def tcp_offload_forward_complete(self, binding_context: Any, nbl: NetBufferList) -> None:
        self._completions("ProtocolTcpOffloadForwardComplete", nbl, "forward_completed")
        super().tcp_offload_forward_complete(binding_context, nbl)

    def tcp_offload_receive_return(self, adapter_context: Any, nbl: NetBufferList) -> NdisStatus:
        t = self._now()
        by_conn: Counter[int | None] = Counter()
        n: NetBufferList | None = nbl
        while n is not None:
            by_conn[self._indicated.pop(n.serial, None)] += 1
            n = n.next
        status = super().tcp_offload_receive_return(adapter_context, nbl)
        for conn, k in by_conn.items():
            self._rec("call", "MiniportTcpOffloadReceiveReturn", conn, t, nbls=k, status=status)
        return status

    # -- indications, status, OIDs ----------------------------------------------------------------------------------

    def tcp_offload_receive_indicate(self, offload_context: Any, nbl: NetBufferList, status: int) -> tuple[int, int]:
        entry: OffloadEntry = offload_context.owner
        t = self._now()
        size = nbl.data_length()
        ret, consumed = super().tcp_offload_receive_indicate(offload_context, nbl, status)
        st = self._stats(entry)
        st.bytes["indicated"] += size
        st.bytes["consumed"] += consumed
        if ret == NdisStatus.SUCCESS:
            self._indicated[nbl.serial] = entry.id
        self._rec(
            "indication", "ProtocolTcpOffloadReceiveIndicate", entry.id, t,
            nbls=1, nbytes=size, status=status, result=ret, consumed=consumed,
        )
        return ret, consumed

    def tcp_offload_event(self, offload_context: Any, event_type: int, event_specific_information: int) -> None:
        entry: OffloadEntry = offload_context.owner
        self._stats(entry)
        self._rec(
            "indication", "ProtocolTcpOffloadEvent", entry.id, self._now(), detail=event_type, info=event_specific_information
        )
        super().tcp_offload_event(offload_context, event_type, event_specific_information)

    def indicate_offload_event(
        self, binding_context: Any, pbl: ProtocolOffloadBlockList | None, indication_code: int
    ) -> None:
        entry = pbl.offload_handle.owner if pbl is not None and pbl.offload_handle is not None else None
        conn = entry.id if isinstance(entry, OffloadEntry) else None
        if isinstance(entry, OffloadEntry):
            self._stats(entry)
        self._rec("indication", "ProtocolIndicateOffloadEvent", conn, self._now(), detail=indication_code)
        super().indicate_offload_event(binding_context, pbl, indication_code)

    def status_ex(self, binding_context: Any, indication: NdisStatusIndication) -> None:
        self._rec("status", "ProtocolStatusEx", None, self._now(), status=indication.status_code)
        super().status_ex(binding_context, indication)

    def oid_request(self, adapter_context: Any, request: NdisOidRequest) -> NdisStatus:
        status = super().oid_request(adapter_context, request)
        self._rec("oid", "MiniportOidRequest", None, self._now(), status=int(status), detail=request.oid)
        return status

    # -- query API ----------------------------------------------------------------------------------------------------

    def records(
        self, conn: int | None = None, *, name: str | None = None, kind: str | None = None
    ) -> list[TraceRecord]:
        """Kept records, oldest first, filtered by connection (offload entry id), NDIS name and kind."""
        return [
            r
            for r in self.trace
            if (conn is None or r.conn == conn) and (name is None or r.name == name) and (kind is None or r.kind == kind)
        ]

    def connections(self) -> list[int]:
        """Ids of every offload entry this IM has seen, in creation order."""
        return sorted(self.conn_stats)

    def stats(self, conn: int) -> ConnStats:
        return self.conn_stats[conn]

    def conn_of(self, upper_handle: Any) -> int | None:
        """The connection id behind an upper driver's NDIS_OFFLOAD_HANDLE (when this IM is right below it)."""
        value = upper_handle.miniport_offload_context.value
        return value.id if isinstance(value, OffloadEntry) and value.im is self else None

    def totals(self) -> Counter[str]:
        """Records per NDIS name over the whole run (exact, not bounded by max_records)."""
        return Counter(self.op_counts)

    def iter_jsonl(self, records: Iterable[TraceRecord] | None = None) -> Iterator[str]:
        for r in self.trace if records is None else records:
            yield json.dumps(r.to_dict(), separators=(",", ":"))

    def export_jsonl(self, fp: IO[str] | None = None, records: Iterable[TraceRecord] | None = None) -> str:
        """The trace as JSON lines (one object per record); also written to `fp` when given."""
        text = "".join(line + "\n" for line in self.iter_jsonl(records))
        if fp is not None:
            fp.write(text)
        return text

    def summary(self) -> str:
        oids = [r.detail for r in self.trace if r.kind == "oid" and r.detail is not None]
        lines = [
            f"MonitoringIm {self.name}: {self._seq} records ({self.dropped_records} dropped), "
            f"{len(self.conn_stats)} offload entries, {len(self.entries)} live, "
            f"{len(self.call_entries)} state operations in flight",
            "  totals: " + " ".join(f"{_short(k)}={v}" for k, v in sorted(self.op_counts.items())),
        ]
        if oids:
            lines.append("  oids: " + " ".join(sorted({OID_NAMES.get(o, hex(o)) for o in oids})))
        lines.extend("  " + self.conn_stats[c].line() for c in self.connections())
        return "\n".join(lines)

    def clear(self) -> None:
        self.trace.clear()
        self.conn_stats.clear()
        self.op_counts.clear()
        self.dropped_records = 0
