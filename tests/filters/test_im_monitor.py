"""MonitoringIm: per-connection counters, trace records, scheduler-ns timing and the JSON-lines export
match a scripted scenario, with the monitor alone or in a stack of pass-through IMs."""

from __future__ import annotations

import io
import json
from typing import Any

import pytest
from filter_doubles import DELAY_NS, Conn, HopIm, Stack, chain, make_nbls, target_obj

from chimney.filters.checks import im_checks
from chimney.filters.monitor import MonitoringIm
from chimney.ndis.blocklist import ProtocolOffloadBlockList
from chimney.ndis.offload_state import TCP_DISCONNECT_GRACEFUL_CLOSE, OffloadStateType, TcpOffloadEventType
from chimney.ndis.oid import OID_TCP_TASK_OFFLOAD, NdisOidRequest
from chimney.ndis.status import NdisStatus

S = NdisStatus
T = OffloadStateType


def monitored(depth: int, position: int, **kwargs: Any) -> tuple[Stack, MonitoringIm]:
    s = Stack(
        depth,
        im_factory=lambda i, log: MonitoringIm(f"mon{i}", **kwargs) if i == position else HopIm(f"im{i}", log),
    )
    mon = s.ims[position]
    assert isinstance(mon, MonitoringIm)
    return s, mon


def scenario(s: Stack) -> Conn:
    """Offload one connection; 2 sends of 3 NBLs, 2 indications (one partly refused), 1 receive post that
    drains the refused data, then the disconnect event (R-EVT-01: all data consumed first), a forward, a
    graceful disconnect, a TASK_OFFLOAD query, a PAUSE, then terminate TCP."""
    c = Conn()
    s.ndis.initiate_offload(s.binding, c.tree())
    s.run()
    for _ in range(2):
        s.ndis.offload_tcp_send(c.th, chain(*make_nbls("tcpip", 3, 100)))
    s.sched.call_later(1_000, lambda: None)
    s.run()
    obj = target_obj(c.th)
    (ret, _), nbl = s.target.indicate(obj, b"z" * 30)
    assert ret == S.SUCCESS
    s.ndis.offload_tcp_receive_return(s.binding, nbl)
    s.host.indicate_result = (S.OFFLOAD_DATA_PARTIALLY_ACCEPTED, 5)
    s.target.indicate(obj, b"y" * 20)
    s.ndis.offload_tcp_receive(c.th, make_nbls("tcpip", 1, 64)[0])
    s.run()
    s.target.event(obj, TcpOffloadEventType.TcpIndicateDisconnect)
    s.ndis.offload_tcp_forward(c.th, make_nbls("tcpip", 1, 40)[0])
    s.ndis.offload_tcp_disconnect(c.th, make_nbls("tcpip", 1, 0)[0], TCP_DISCONNECT_GRACEFUL_CLOSE)
    s.run()
    s.ndis.oid_request(s.binding, NdisOidRequest.query(OID_TCP_TASK_OFFLOAD))
    s.target.status(S.OFFLOAD_PAUSE)
    s.ndis.terminate_offload(s.binding, ProtocolOffloadBlockList(T.TcpOffloadDelegatedState, c.th, ["delegated"]))
    s.run()
    return c


@pytest.mark.parametrize(("depth", "position"), [(1, 0), (3, 2), (3, 1)], ids=["alone", "top", "middle"])
def test_counters_match_the_scenario(depth: int, position: int) -> None:
    s, mon = monitored(depth, position)
    scenario(s)
    assert s.verifier.violations == [] and im_checks(s.ndis).audit() == []  # type: ignore[union-attr]
    tcp = [c for c in mon.connections() if mon.stats(c).type == T.TcpOffloadState]
    assert len(mon.connections()) == 3 and len(tcp) == 1
    st = mon.stats(tcp[0])
    assert st.calls == {"InitiateOffload": 1, "Send": 2, "Receive": 1, "Forward": 1, "Disconnect": 1,
                        "ReceiveReturn": 1, "TerminateOffload": 1}
    # The target batches the 6 NBLs of both sends into one NdisTcpOffloadSendComplete.
    assert st.completions == {"InitiateOffloadComplete": 1, "SendComplete": 1, "ReceiveComplete": 1,
                              "ForwardComplete": 1, "DisconnectComplete": 1, "TerminateOffloadComplete": 1}
    assert st.indications == {"ReceiveIndicate": 2, "Event": 1}
    assert st.bytes["send_requested"] == 600 and st.bytes["send_acked"] == 600
    assert st.bytes["receive_posted"] == 64 and st.bytes["receive_filled"] == 64
    assert st.bytes["indicated"] == 50 and st.bytes["consumed"] == 35
    assert st.bytes["forwarded"] == 40
    # 6 send NBLs + 1 receive + 1 forward + 1 disconnect completed, each DELAY_NS after its call.
    assert st.io_completed == 9 and st.io_latency_max_ns == DELAY_NS and st.io_latency_avg_ns == DELAY_NS
    assert st.statuses["SUCCESS"] == 9 + 2  # I/O NBLs + initiate and terminate nodes
    assert st.first_ns == 0 and st.last_ns == s.sched.now
    totals = mon.totals()
    assert totals["ProtocolStatusEx"] == 1 and totals["MiniportOidRequest"] == 1
    assert totals["MiniportInitiateOffload"] == 3 and totals["ProtocolInitiateOffloadComplete"] == 3
    assert mon.entries.keys() == set(mon.connections()) - {tcp[0]}  # the terminated entry was freed


def test_records_for_a_connection_are_ordered_and_carry_results() -> None:
    s, mon = monitored(1, 0)
    c = scenario(s)
    conn = next(k for k in mon.connections() if mon.stats(k).type == T.TcpOffloadState)
    recs = mon.records(conn)
    assert [r.seq for r in recs] == sorted(r.seq for r in recs)
    assert recs[0].name == "MiniportInitiateOffload" and recs[0].detail == 1  # a new offload
    assert recs[-1].name == "ProtocolTerminateOffloadComplete" and recs[-1].status == S.SUCCESS
    ind = mon.records(conn, name="ProtocolTcpOffloadReceiveIndicate")
    assert [(r.result, r.consumed, r.nbytes) for r in ind] == [(S.SUCCESS, 30, 30), (S.OFFLOAD_DATA_PARTIALLY_ACCEPTED, 5, 20)]
    sends = mon.records(conn, name="MiniportTcpOffloadSend")
    assert [(r.nbls, r.nbytes) for r in sends] == [(3, 300), (3, 300)]
    disc = mon.records(conn, name="MiniportTcpOffloadDisconnect")
    assert disc[0].detail == TCP_DISCONNECT_GRACEFUL_CLOSE
    assert mon.conn_of(c.nh) in mon.connections() and mon.conn_of(c.th) == conn
    assert all(r.conn is None for r in mon.records(kind="status"))


def test_jsonl_export_and_summary() -> None:
    s, mon = monitored(1, 0)
    scenario(s)
    buf = io.StringIO()
    text = mon.export_jsonl(buf)
    assert buf.getvalue() == text
    rows = [json.loads(line) for line in text.splitlines()]
    assert len(rows) == len(mon.trace) and rows[0]["seq"] == 1
    assert {"seq", "t_ns", "im", "kind", "name"} <= rows[0].keys()
    assert any(r.get("status_name") == "OFFLOAD_PAUSE" for r in rows)
    summary = mon.summary()
    assert summary.startswith("MonitoringIm mon0:") and summary.count("conn #") == 3
    assert "OID_TCP_TASK_OFFLOAD" in summary


def test_bounded_trace_keeps_exact_counters() -> None:
    s, mon = monitored(1, 0, max_records=5)
    scenario(s)
    assert len(mon.trace) == 5 and mon.dropped_records == sum(mon.op_counts.values()) - 5
    conn = next(k for k in mon.connections() if mon.stats(k).type == T.TcpOffloadState)
    assert mon.stats(conn).calls["Send"] == 2


def test_upload_requested_self_completion_is_traced() -> None:
    s, mon = monitored(1, 0)
    c = Conn()
    s.ndis.initiate_offload(s.binding, c.tree())
    s.run()
    mon.fail_next_allocations()
    s.ndis.offload_tcp_send(c.th, chain(*make_nbls("tcpip", 2)))
    (rec,) = mon.records(name="NdisTcpOffloadSendComplete")
    assert rec.status == S.REQUEST_UPLOAD and rec.nbls == 2 and rec.latency_ns == 0
    assert mon.stats(rec.conn).statuses == {"SUCCESS": 1, "REQUEST_UPLOAD": 1, "UPLOAD_REQUESTED": 1}  # type: ignore[arg-type]
    assert s.verifier.violations == []
