"""Interop over TAP through pass-through IMs (issue 6): a Linux client reaches our host stack, whose binding
to the offload target runs through 1 (or 3) `PassThroughChimneyIm` drivers and a `MonitoringIm` on top; the
connection is offloaded, moves data both ways (sha256 on both ends), then closes gracefully or abortively,
from Linux or from us.

Each close is judged from a capture of the TAP: ours (the port's frames through our pcapng writer) and,
where tshark is installed (1-IM runs), Linux's own view of its interface inside the namespace, which must
show the same segments. The IM contract checks (ImChecks, STRICT verifier) run throughout. Run by hand
with `chimney serve --ims 1 --monitor --pcap FILE` (docs/interop.md).
"""

from __future__ import annotations

import os
import select
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from chimney_linux_rig import (
    CLOSE_MODES,
    CloseRun,
    Rig,
    Seg,
    build_rig,
    close_exchange,
    one_connection,
    tcp_segments,
)

from chimney.host.apps import bulk_digest
from chimney.host.policy import OffloadPolicy
from chimney.links.netns import TapTopology, kernel_supports_netns
from chimney.ndis.offload_state import (
    TCP_DISCONNECT_ABORTIVE_CLOSE,
    TCP_DISCONNECT_GRACEFUL_CLOSE,
    OffloadStateType,
    TcpOffloadEventType,
)
from chimney.ndis.status import NdisStatus
from chimney.sim.realtime import RealTimeScheduler
from chimney.trace import PcapFormatError, read_capture

pytestmark = pytest.mark.netns

_ok, _why = kernel_supports_netns()
requires_netns = pytest.mark.skipif(not _ok, reason=_why)

NBYTES = 300_000
SEED = 61
TIMEOUT_S = 20.0
TSHARK = shutil.which("tshark")
DIGEST = 64  # our sha256 hex of what Linux sent, the last thing we send before the close
EV = TcpOffloadEventType


class LinuxCapture:
    """tshark on the TAP inside the namespace, writing classic pcap. Started before the client connects
    (ready once dumpcap says "Capture started"); `stop(expect)` first waits (bounded) until the file holds
    `expect` TCP frames, since dumpcap drops what its kernel ring has not handed over yet when stopped."""

    def __init__(self, topo: TapTopology, path: Path) -> None:
        self.path = path
        self.our_ip = topo.our_ip
        self.p = topo.ns.popen(["tshark", "-n", "-q", "-i", topo.tap_name, "-F", "pcap", "-w", str(path)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, bufsize=0)
        assert self.p.stderr is not None
        self.log = b""
        deadline = time.monotonic() + 15.0
        while b"Capture started" not in self.log:  # bounded by the deadline (and tshark exiting)
            left = deadline - time.monotonic()
            ready, _, _ = select.select([self.p.stderr], [], [], max(0.0, left))
            chunk = os.read(self.p.stderr.fileno(), 4096) if ready else b""
            if not chunk:
                self.stop(0)
                raise AssertionError(f"tshark did not start capturing: {self.log.decode(errors='replace')}")
            self.log += chunk

    def segments(self) -> list[Seg]:
        try:
            return tcp_segments(read_capture(self.path), self.our_ip)
        except (PcapFormatError, OSError):  # not written yet, or a record half-written
            return []

    def stop(self, expect: int) -> None:
        deadline = time.monotonic() + 3.0
        while self.p.poll() is None and time.monotonic() < deadline and len(self.segments()) < expect:
            time.sleep(0.05)
        if self.p.poll() is None:
            self.p.send_signal(signal.SIGINT)
            try:
                self.p.wait(10)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait(5)


@dataclass
class Outcome:
    rig: Rig
    run: CloseRun
    ours: list[Seg]  # from our capture of the port
    linux: list[Seg] | None  # from tshark in the namespace
    im_problems: list[str]
    leaks: str


def close_through_ims(tmp_path: Path, mode: str, ims: int, *, with_tshark: bool) -> Outcome:
    with TapTopology.unique("chimney-im") as topo, RealTimeScheduler() as sched:
        rig = build_rig(topo, sched, OffloadPolicy.established(), ims=ims, monitor=True,
                        capture=tmp_path / "tap.pcapng")
        tshark = LinuxCapture(topo, tmp_path / "linux.pcap") if with_tshark else None
        assert rig.capture is not None
        try:
            run = close_exchange(rig, mode, nbytes=NBYTES, seed=SEED, timeout_s=TIMEOUT_S)
        finally:
            rig.capture.flush()
            if tshark is not None:
                tshark.stop(len(tcp_segments(read_capture(rig.capture.path), topo.our_ip)))
        problems = rig.node.im_audit()
        leaks = rig.wind_down()
        rig.capture.close()
    ours = tcp_segments(read_capture(tmp_path / "tap.pcapng"), topo.our_ip)
    return Outcome(rig, run, ours, tshark.segments() if tshark is not None else None, problems, leaks)


def check_exchange(o: Outcome, mode: str, ims: int) -> None:
    """Both streams intact, offloaded before the first byte, through every IM, and nothing left over."""
    ours, linux = o.run.ours, o.run.linux
    assert ours["offloaded_before_data"], "the connection was not offloaded before the data moved"
    assert ours["sent_sha256"] == linux["received_sha256"] == bulk_digest(NBYTES, SEED), (ours, linux)
    assert (ours["received"], linux["sent"]) == (NBYTES, NBYTES)
    assert ours["received_sha256"] == linux["sent_sha256"] == linux["ours_received_sha256"] == bulk_digest(
        NBYTES, SEED + 1)
    # Every IM (the pass-through ones, then the monitor) held the connection's offload entry meanwhile.
    assert len(o.rig.node.ims) == ims + 1 and o.rig.node.ims[-1] is o.rig.node.monitor
    assert o.run.entries_while_offloaded == [1] * (ims + 1)
    offs, ups = o.rig.hand_overs(o.run.tcb)
    assert len(offs) == 1 and len(ups) == 1, (offs, ups)
    assert o.rig.node.verifier.violations == []  # STRICT would have raised; nothing recorded either
    assert o.im_problems == []  # R-IM-08/09: every completion and receive return passed on
    assert o.leaks == "", o.leaks  # R-NBL-02 after halting the adapter (and every IM above it)
    assert all(not im.entries and not im.call_entries for im in o.rig.node.ims)


def monitored_tcp(o: Outcome) -> int:
    mon = o.rig.node.monitor
    assert mon is not None
    (conn,) = [c for c in mon.connections() if mon.stats(c).type == OffloadStateType.TcpOffloadState]
    return conn


def check_monitor(o: Outcome, mode: str) -> None:
    """The monitoring IM saw the offload, the I/O and the close calls the mode implies."""
    mon = o.rig.node.monitor
    assert mon is not None
    conn = monitored_tcp(o)
    st = mon.stats(conn)
    assert st.calls["InitiateOffload"] == 1 and st.calls["TerminateOffload"] == 1, st.line()
    assert st.calls["Send"] >= 1 and st.bytes["send_requested"] == NBYTES + DIGEST, st.line()
    assert st.indications["ReceiveIndicate"] >= 1 and st.bytes["consumed"] >= NBYTES, st.line()
    disc = [(r.detail, r.status) for r in mon.records(conn, name="MiniportTcpOffloadDisconnect")]
    disc_done = [r.status for r in mon.records(conn, name="ProtocolTcpOffloadDisconnectComplete")]
    events = [r.detail for r in mon.records(conn, name="ProtocolTcpOffloadEvent")]
    if mode in ("linux-graceful", "ours-graceful"):
        # Our FIN is an offloaded graceful disconnect, completed once the FIN is acknowledged (R-DISC-09);
        # Linux's FIN reaches the host as TcpIndicateDisconnect.
        assert [d for d, _ in disc] == [TCP_DISCONNECT_GRACEFUL_CLOSE], disc
        assert disc_done == [0], disc_done
        assert EV.TcpIndicateDisconnect in events and EV.TcpIndicateAbort not in events, events
        assert st.bytes["send_acked"] == NBYTES + DIGEST, st.line()
    elif mode == "ours-abort":
        assert [d for d, _ in disc] == [TCP_DISCONNECT_ABORTIVE_CLOSE], disc
        assert disc_done == [0], disc_done  # R-DISC-06: SUCCESS means the RST was sent
        assert events == [], events
    else:
        # Linux's RST: TcpIndicateAbort; what was outstanding, and a disconnect the host's close() still
        # issues before the upload, completes REQUEST_ABORTED.
        assert events == [EV.TcpIndicateAbort], events
        assert len(disc) <= 1 and disc_done == [NdisStatus.REQUEST_ABORTED] * len(disc), (disc, disc_done)
        assert set(st.statuses) <= {"SUCCESS", "REQUEST_ABORTED"}, st.line()


def check_capture(segs: list[Seg], mode: str) -> None:
    """The close as the wire shows it: FIN/ACK with no RST, or exactly the one expected RST; no data after
    FIN; every byte acknowledged."""
    views = one_connection(segs)
    o, lx = views["ours"], views["linux"]
    assert sum(s.syn for s in segs) == 2 and o.segments[0].syn and lx.segments[0].syn
    ours_end = 1 + NBYTES + DIGEST
    linux_end = 1 + NBYTES + (1 if mode == "ours-graceful" else 0)  # the "C" (go ahead) byte
    assert (o.data_end, lx.data_end) == (ours_end, linux_end)
    last = segs[-1]
    if mode.endswith("graceful"):
        initiator, responder = (lx, o) if mode.startswith("linux") else (o, lx)
        assert o.rsts == [] and lx.rsts == [], [str(s) for s in o.rsts + lx.rsts]
        # One FIN each way, right after the data (retransmissions would repeat the same sequence number).
        assert {f.rseq for f in o.fins} == {ours_end} and {f.rseq for f in lx.fins} == {linux_end}
        assert segs.index(initiator.fins[0]) < segs.index(responder.fins[0])
        assert responder.fins[0].rack == initiator.fins[0].rseq + 1  # the responder had the first FIN
        for side, fin in ((o, o.fins[0]), (lx, lx.fins[0])):
            assert side.payload_at_or_after(fin.rseq) == 0
            assert not [str(s) for s in side.segments if s.length and segs.index(s) > segs.index(fin)]
        assert o.max_ack == linux_end + 1 and lx.max_ack == ours_end + 1  # both FINs acknowledged
        assert last.side != responder.segments[0].side and not last.length and last.flags == 0x10, str(last)
    else:
        aborter, other = (lx, o) if mode.startswith("linux") else (o, lx)
        assert o.fins == [] and lx.fins == []
        assert len(aborter.rsts) == 1 and other.rsts == [], [str(s) for s in o.rsts + lx.rsts]
        rst = aborter.rsts[0]
        assert rst is last, f"segments after the RST: {[str(s) for s in segs[segs.index(rst) + 1:]]}"
        assert rst.rseq == aborter.data_end and rst.length == 0  # at SND.NXT, no data on it
        assert o.max_ack == linux_end and lx.max_ack == ours_end  # every byte acknowledged before the RST


@requires_netns
@pytest.mark.timeout(60)
@pytest.mark.parametrize("ims", [1, 3])
@pytest.mark.parametrize("mode", CLOSE_MODES)
def test_linux_client_through_pass_through_ims_closes_cleanly(tmp_path: Path, mode: str, ims: int) -> None:
    """Linux client, our server, `ims` pass-through IMs + the monitor: offloaded two-way transfer, then the
    close `mode`; the capture shows exactly the close that was asked for."""
    # tshark takes a second to start: Linux's view is compared in the 1-IM runs only (the wire is the same).
    o = close_through_ims(tmp_path, mode, ims, with_tshark=TSHARK is not None and ims == 1)
    ours, linux = o.run.ours, o.run.linux
    check_exchange(o, mode, ims)
    _offs, (upload,) = o.rig.hand_overs(o.run.tcb)
    if mode == "linux-graceful":
        assert linux["end"] == "eof" and ours["after"] == b""
        assert (ours["state_after"], ours["close_reason"]) == ("Closed", "normal")
    elif mode == "ours-graceful":
        assert ours["go"] == b"C" and ours["after"] == b"" and linux["end"] == "eof"
        # The target hands the connection back on entering TIME-WAIT (R-TMR-03).
        assert ours["state_after"] == "TimeWait" and upload.endswith(":TimeWait"), (ours, upload)
    elif mode == "linux-abort":
        assert linux["end"] == "rst sent" and ours.get("error") == "ECONNRESET", ours
        assert ours["close_reason"] == "reset" and upload.startswith("abort"), (ours, upload)
    else:
        assert ours["unacked_at_abort"] == 0 and linux["end"] == "reset"
        assert ours["close_reason"] == "reset" and upload.startswith("abort"), (ours, upload)
    check_monitor(o, mode)
    check_capture(o.ours, mode)
    if o.linux is not None:
        check_capture(o.linux, mode)
        # Linux's own capture of its interface shows the same segments, in the same order per direction.
        for side in ("ours", "linux"):
            assert [s.key() for s in o.linux if s.side == side] == [s.key() for s in o.ours if s.side == side]
