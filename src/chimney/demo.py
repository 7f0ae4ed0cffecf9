"""What `chimney demo` runs and reports: the offload demo (`run_offload_demo`) and the receive-path
scenarios (`run_receive_paths`). Returns plain dictionaries so the CLI can print tables or JSON.

The offload demo: host A (bound through NDIS to the software offload target) serves, host B (a plain
stack) runs clients, over an emulated lossy link. Connections start in A's host stack, the policy
offloads them mid-transfer, they are uploaded by the host, at the target's request (TcpIndicateRetrieve)
and all at once by a NIC hardware reset (NDIS_STATUS_UPLOAD_ALL), offloaded again, and closed. Every
NDIS call is checked by the contract verifier (RECORD mode: violations are counted, not raised).
"""

from __future__ import annotations

import dataclasses
import hashlib
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from chimney.host import apps
from chimney.host.chimney import OffloadPair, build_offload_pair
from chimney.host.netstat import list_connections_async
from chimney.host.policy import OffloadPolicy
from chimney.host.socket import Socket
from chimney.host.stack import HostStack
from chimney.host.tcp import Tcb
from chimney.links.impair import Impairments
from chimney.ndis.ndis5.scenarios import run_matrix
from chimney.ndis.offload_state import TcpUploadReason
from chimney.ndis.scenarios6 import run_ndis6_matrix
from chimney.ndis.verifier import Mode, Verifier
from chimney.sim.scheduler import NS_PER_MS, NS_PER_S, SimScheduler
from chimney.sim.tasks import spawn
from chimney.trace.pcapng import PcapngWriter

A_ADDR = "198.18.0.1"  # host A: bound to the offload target (build_offload_pair)
PORT = 5001
CLIENT_PORT0 = 40000
CONNECTIONS = 3
BYTES_PER_CONN = 1_250_000  # each way: 3.75 MB A->B and 3.75 MB B->A in all
OFFLOAD_AFTER_BYTES = 128 * 1024
COOLDOWN_NS = 8 * NS_PER_MS
WIRE = Impairments(rate_bps=100_000_000, delay_ns=250_000, queue_limit_frames=300, loss=0.005)
STEP_NS = NS_PER_MS
TRANSFER_LIMIT_NS = 60 * NS_PER_S  # simulated; the transfers take well under a second
# Scripted uploads, at these fractions of all bytes delivered.
HOST_UPLOAD_AT = 0.25
TARGET_REQUEST_AT = 0.45
HW_RESET_AT = 0.65
NETSTAT_AT = 0.15  # a `netstat` of host A (offloaded rows queried from the target) once this much moved

PHASES = ("host", "offloaded", "switching")


@dataclass
class Flow:
    """One demo connection seen from both ends; `rx_a`/`rx_b` count bytes delivered to each application."""

    index: int
    seed_b: int  # B's byte stream seed (B -> A)
    client_port: int
    rx_a: int = 0
    rx_b: int = 0
    sha_a: str = ""  # sha256 of what A received
    sha_b: str = ""
    sent_sha_a: str = ""
    sent_sha_b: str = ""
    done_a: bool = False
    done_b: bool = False
    errors: list[str] = field(default_factory=list)

    @property
    def seed_a(self) -> int:
        return 100_000 + self.client_port  # the server only knows its peer's port


async def _exchange(sock: Socket, nbytes: int, seed: int, on_rx: Callable[[int, memoryview | bytes], None]) -> str:
    """Send `nbytes` of the seeded stream while receiving to EOF; returns the sha256 of what was sent."""
    sender = spawn(sock.scheduler, apps.bulk_send(sock, nbytes, seed), name="demo-send")
    while True:
        data = await sock.arecv_view(1 << 20)
        if not data:
            break
        on_rx(len(data), data)
    return await sender


class _Demo:
    """The scenario: builds the pair, runs servers/clients, samples phases and drives the scripted uploads."""

    def __init__(self, seed: int, conns: int, nbytes: int) -> None:
        self.seed = seed
        self.nbytes = nbytes
        self.sched = SimScheduler(seed)
        self.verifier = Verifier(Mode.RECORD)
        policy = OffloadPolicy.after_bytes_moved(OFFLOAD_AFTER_BYTES, cooldown_ns=COOLDOWN_NS)
        self.pair: OffloadPair = build_offload_pair(self.sched, seed, WIRE, policy=policy, verifier=self.verifier)
        self.flows = [Flow(i + 1, seed * 1000 + i + 1, CLIENT_PORT0 + i + 1) for i in range(conns)]
        self.by_port: dict[int, Flow] = {f.client_port: f for f in self.flows}
        self.tcbs: dict[int, Tcb] = {}  # client port -> A's TCB
        self.phase_bytes = dict.fromkeys(PHASES, 0)
        self.phase_ns = dict.fromkeys(PHASES, 0)  # connection-time spent in each phase
        self.actions: list[dict[str, Any]] = []
        self.start_ns = self.end_ns = 0
        self._last_rx: dict[int, int] = {}
        self._finished: set[int] = set()
        self.server = apps.Server(self.pair.host_a, PORT, self._serve).start()
        self.netstat: dict[str, Any] | None = None
        self._netstat_fut: Any = None
        self._netstat_at = 0

    # ------------------------------------------------------------------ applications

    async def _serve(self, sock: Socket) -> None:
        port = sock.getpeername()[1]
        flow = self.by_port.get(port)
        if flow is None:
            return  # not one of ours
        sha = hashlib.sha256()

        def rx(n: int, data: memoryview | bytes) -> None:
            flow.rx_a += n
            sha.update(data)

        try:
            flow.sent_sha_a = await _exchange(sock, self.nbytes, flow.seed_a, rx)
        except OSError as e:  # reported (and the run fails on the digests), never hidden
            flow.errors.append(f"server: {e!r}")
        flow.sha_a = sha.hexdigest()
        flow.done_a = True

    async def _client(self, flow: Flow, host: HostStack) -> None:
        sock = host.socket()
        # A fixed port per flow: the server tells the flows apart by their peer port.
        sock.bind(("", flow.client_port))
        try:
            await sock.aconnect((A_ADDR, PORT))
        except OSError as e:
            flow.errors.append(f"connect: {e!r}")
            flow.done_a = flow.done_b = True
            sock.close()
            return
        sha = hashlib.sha256()

        def rx(n: int, data: memoryview | bytes) -> None:
            flow.rx_b += n
            sha.update(data)

        try:
            flow.sent_sha_b = await _exchange(sock, self.nbytes, flow.seed_b, rx)
        except OSError as e:
            flow.errors.append(f"client: {e!r}")
        finally:
            sock.close()
        flow.sha_b = sha.hexdigest()
        flow.done_b = True

    # ------------------------------------------------------------------ scenario

    def tcb(self, flow: Flow) -> Tcb | None:
        t = self.tcbs.get(flow.client_port)
        if t is None and flow.client_port:
            for c in self.pair.host_a.tcp.connections():
                if c.remote_port == flow.client_port and c.local_port == PORT:
                    t = self.tcbs[flow.client_port] = c
        return t

    def phase(self, flow: Flow) -> str:
        t = self.tcb(flow)
        if t is None:
            return "host"
        if self.pair.manager.is_offloaded(t):
            return "offloaded"
        return "host" if t.path.kind == "host" else "switching"

    def delivered(self) -> int:
        return sum(f.rx_a + f.rx_b for f in self.flows)

    def _sample(self) -> None:
        """Bytes delivered during the last step go to the phase each connection is in now (steps are
        short next to the phases); time counts from connection setup until both ends finished."""
        for f in self.flows:
            got = f.rx_a + f.rx_b
            delta = got - self._last_rx.get(f.index, 0)
            if not delta and f.index in self._finished:
                continue
            ph = self.phase(f)
            self.phase_bytes[ph] += delta
            self._last_rx[f.index] = got
            if self.tcb(f) is not None:
                self.phase_ns[ph] += STEP_NS
            if f.done_a and f.done_b:
                self._finished.add(f.index)

    def _offloaded_flows(self) -> list[Flow]:
        return [f for f in self.flows if self.phase(f) == "offloaded"]

    def _script(self, fraction: float) -> None:
        done = {a["action"] for a in self.actions}
        m = self.pair.manager
        if "host upload" not in done and fraction >= HOST_UPLOAD_AT:
            fl = self._offloaded_flows()
            if fl:
                t = self.tcb(fl[0])
                assert t is not None
                m.upload(t, reason="host request")
                self._note("host upload", fl[0].index, "OffloadManager.upload -> NdisTerminateOffload")
        elif "target request" not in done and "host upload" in done and fraction >= TARGET_REQUEST_AT:
            fl = self._offloaded_flows()
            if fl:
                f = fl[-1]
                t = self.tcb(f)
                assert t is not None
                ctx = self.pair.target.tcps.get((t.local, t.remote, t.local_port, t.remote_port))
                if ctx is not None:
                    self.pair.target.request_upload(ctx, TcpUploadReason.UploadRequested)
                    self._note("target request", f.index, "TcpIndicateRetrieve(UploadRequested)")
        elif ("hardware reset" not in done and "target request" in done and fraction >= HW_RESET_AT
              and self._offloaded_flows()):
            self.pair.target.hardware_reset()
            self._note("hardware reset", 0, "NDIS_STATUS_UPLOAD_ALL")

    def _netstat(self, fraction: float) -> None:
        """Once, mid-transfer with a connection offloaded: host A's connection list, offloaded rows with
        the target's live values (NdisQueryOffloadState), resolved a step or two later."""
        if self.netstat is not None or fraction < NETSTAT_AT:
            return
        fut = self._netstat_fut
        if fut is None:
            if self._offloaded_flows():
                self._netstat_fut = list_connections_async(self.pair.manager)
                self._netstat_at = self.sched.now
            return
        if fut.done():
            self.netstat = {"t_ms": round(self._netstat_at / NS_PER_MS, 3),
                            "rows": [dataclasses.asdict(r) for r in fut.result()]}

    def _note(self, action: str, conn: int, how: str) -> None:
        self.actions.append({"t_ms": round(self.sched.now / NS_PER_MS, 3), "action": action, "conn": conn,
                             "how": how})

    def run(self) -> None:
        sched = self.sched
        b = self.pair.host_b
        for i, f in enumerate(self.flows):
            # Staggered starts: the connections reach their offload points at different times.
            sched.call_later(i * 3 * NS_PER_MS, lambda f=f: spawn(sched, self._client(f, b), name=f"client{f.index}"))
        total = 2 * self.nbytes * len(self.flows)
        self.start_ns = sched.now
        deadline = sched.now + TRANSFER_LIMIT_NS
        while sched.now < deadline and not all(f.done_a and f.done_b for f in self.flows):
            sched.run_until(sched.now + STEP_NS)
            self._sample()
            self._script(self.delivered() / total)
            self._netstat(self.delivered() / total)
        self.end_ns = sched.now
        self.server.close()
        # Let the closes finish: every connection back in the host, every NBL home.
        m = self.pair.manager
        sched.run_until(sched.now + 30 * NS_PER_S,
                        predicate=lambda: not m.busy() and not m.paths and not self.pair.binding.tx_outstanding)


# ---------------------------------------------------------------------------------------------- report


def _upload_cause(reason: str, state: str) -> str:
    why = reason.split(":")
    if why[0] == "retrieve":
        if state == "TimeWait":
            return "target request: connection entered TimeWait (R-TMR-03)"
        return f"target request ({why[1] if len(why) > 1 else '?'})"
    return {"host request": "host request", "upload_all": "hardware reset (UPLOAD_ALL)",
            "closed": "connection closed", "abort": "connection aborted"}.get(why[0], why[0])


def _mbps(nbytes: int, ns: int) -> float:
    return round(nbytes * 8 / (ns / NS_PER_S) / 1e6, 2) if ns else 0.0


def _report(d: _Demo) -> dict[str, Any]:
    p = d.pair
    m = p.manager
    tc = p.target.counters
    offloads: dict[str, int] = {}
    uploads: dict[str, int] = {}
    seen: set[Tcb] = set()
    events = []
    port_of = {t: port for port, t in d.tcbs.items()}
    for t_ns, kind, tcb, detail in list(m.history):
        flow = d.by_port.get(port_of.get(tcb, -1))
        if kind == "offload":
            cause = "policy: re-offload after cooldown" if tcb in seen else f"policy: after {OFFLOAD_AFTER_BYTES} bytes"
            seen.add(tcb)
            offloads[cause] = offloads.get(cause, 0) + 1
        else:
            reason, _, state = detail.rpartition(":")
            cause = _upload_cause(reason, state)
            uploads[cause] = uploads.get(cause, 0) + 1
        events.append({"t_ms": round(t_ns / NS_PER_MS, 3), "conn": flow.index if flow else 0, "event": kind,
                       "detail": detail})
    # Indication NBLs: every NBL the host returns (and every refused one) goes back to the target's free
    # list; the free list also feeds reuse, so returns = free now + reused - refused.
    pool = p.target.ind_pool
    held = p.target.indicated_outstanding() if pool is not None else 0
    free_now = (pool.outstanding - held) if pool is not None else 0
    returned = tc.get("ind_nbl_returned", free_now + tc["ind_nbl_recycled"] - tc["ind_refused"])
    host_leaks = m.leaks()
    # Every connection is over by now: one still offloaded was never handed back (the target keeps its
    # context until the adapter halts).
    stuck = [f"conn {d.by_port[t.remote_port].index if t.remote_port in d.by_port else '?'}: host sees "
             f"{cp.tcp_state.name}, offload {cp.phase.value}" for t, cp in m.paths.items()]
    ndis = p.ndis
    ndis.halt_adapter(ndis.adapters[0])
    live = sum(ndis.tracker.by_owner().values())
    leak_text = p.leak_report()
    nbl_leaks = live + len(host_leaks) + held
    expected_a = [apps.bulk_digest(d.nbytes, f.seed_b) for f in d.flows]
    expected_b = [apps.bulk_digest(d.nbytes, f.seed_a) for f in d.flows]
    conns = []
    for f, ea, eb in zip(d.flows, expected_a, expected_b, strict=True):
        conns.append({
            "conn": f.index, "client_port": f.client_port, "bytes_a_to_b": f.rx_b, "bytes_b_to_a": f.rx_a,
            "sha256_a_to_b": f.sha_b, "sha256_b_to_a": f.sha_a, "errors": f.errors,
            "sha256_match": f.done_a and f.done_b and f.sha_a == ea == f.sent_sha_b and f.sha_b == eb == f.sent_sha_a
            and f.rx_a == f.rx_b == d.nbytes,
        })
    duration = d.end_ns - d.start_ns
    violations = [f"{v.rule_id}: {v}" for v in d.verifier.violations]
    out: dict[str, Any] = {
        "scenario": "offload",
        "seed": d.seed,
        "connections": len(d.flows),
        "wire": {"rate_mbps": WIRE.rate_bps / 1e6, "delay_us": WIRE.delay_ns / 1000, "loss": WIRE.loss},
        "bytes_a_to_b": sum(f.rx_b for f in d.flows),
        "bytes_b_to_a": sum(f.rx_a for f in d.flows),
        "sha256_match": all(c["sha256_match"] for c in conns),
        "per_connection": conns,
        "offloads": sum(offloads.values()),
        "uploads": sum(uploads.values()),
        "offloads_by_cause": offloads,
        "uploads_by_cause": uploads,
        "initiate_failed": m.stats["initiate_tcp_failed"],
        "initiate_results": dict(sorted(m.initiate_results.items())),
        "scripted": d.actions,
        "events": events,
        "nbls": {
            "send_posted": m.stats["sends"],
            "send_completed": tc["send_completed"],
            "send_completed_upload_in_progress": tc["send_failed"],
            "send_completed_out_of_order": m.stats["send_completed_out_of_order"],
            "indicated": tc["ind_calls"],
            "indications_refused": tc["ind_refused"],
            "returned": returned,
            "allocated": tc["ind_nbl_allocated"],
            "recycled": tc["ind_nbl_recycled"],
            "held_by_host_at_end": held,
        },
        "forwarded_segments": m.stats["forwarded"],
        "netstat": d.netstat,
        "retrieves": tc["retrieves"],
        "hardware_resets": tc["hw_resets"],
        "goodput": {
            ph: {"bytes": d.phase_bytes[ph], "conn_ms": d.phase_ns[ph] // NS_PER_MS,
                 "mbps_per_conn": _mbps(d.phase_bytes[ph], d.phase_ns[ph])}
            for ph in PHASES
        },
        "transfer_ms": round(duration / NS_PER_MS, 3),
        "aggregate_mbps": _mbps(sum(f.rx_a + f.rx_b for f in d.flows), duration),
        "link_drops": {
            d_: {str(c): n for c, n in port.counters.dropped.items() if n}
            for d_, port in (("a_to_b", p.link.a), ("b_to_a", p.link.b))
        },
        "verifier_violations": len(violations),
        "violation_rules": violations[:20],
        "nbl_leaks": nbl_leaks,
        "leak_report": leak_text if nbl_leaks else "",
        "offloaded_at_end": len(stuck),
        "offloaded_at_end_detail": stuck,
    }
    out["ok"] = bool(out["sha256_match"] and not violations and not nbl_leaks and not stuck)
    return out


def run_offload_demo(seed: int = 1, pcap: str | Path | None = None, *, connections: int = CONNECTIONS,
                     nbytes: int = BYTES_PER_CONN) -> dict[str, Any]:
    """Run the offload demo; `pcap` writes an annotated pcapng of the wire (both directions)."""
    # The file first: a path that cannot be written fails before anything runs.
    writer = PcapngWriter(Path(pcap), comment=f"tcp-chimney offload demo, seed {seed}") if pcap is not None else None
    d = _Demo(seed, connections, nbytes)
    cap = _AnnotatedCapture(writer, d) if writer is not None else None
    try:
        d.run()
    finally:
        if cap is not None:
            cap.close()
    report = _report(d)
    if cap is not None:
        report["pcap"] = {"path": str(pcap), "packets": cap.packets}
    return report


# ---------------------------------------------------------------------------------------------- capture

_ETH_IP4 = 0x0800
_ETH_ARP = 0x0806


class _AnnotatedCapture:
    """pcapng of both link directions with a comment per frame: which connection, the connection's
    phase at that moment, and who sent it (host A's stack or the offload target, told apart by the IPv4
    ID half each owns, R-SEND-12; or host B)."""

    def __init__(self, writer: PcapngWriter, demo: _Demo) -> None:
        self.demo = demo
        self.sched = demo.sched
        self.w = writer
        link = demo.pair.link
        self.if_a = self.w.add_interface("A->B", description="host A / offload target transmit")
        self.if_b = self.w.add_interface("B->A", description="host B transmit")
        self._hooks = [(link.a, self._observer(self.if_a, True)), (link.b, self._observer(self.if_b, False))]
        for port, obs in self._hooks:
            port.add_observer(obs)

    @property
    def packets(self) -> int:
        return self.w.packets

    def _observer(self, if_id: int, from_a: bool) -> Callable[[str, bytes, str | None], None]:
        def observe(direction: str, frame: bytes, meta: str | None) -> None:
            if direction == "tx":
                self.w.write_packet(if_id, self.sched.now, frame, self._comment(frame, from_a), direction="out")

        return observe

    def _comment(self, frame: bytes, from_a: bool) -> str:
        if len(frame) < 14:
            return "runt"
        etype = struct.unpack_from("!H", frame, 12)[0]
        if etype == _ETH_ARP:
            return "ARP, sent by host A's stack" if from_a else "ARP, sent by host B"
        if etype != _ETH_IP4 or len(frame) < 34:
            return f"ethertype 0x{etype:04x}"
        ihl = (frame[14] & 0x0F) * 4
        ip_id = struct.unpack_from("!H", frame, 18)[0]
        if frame[23] != 6 or len(frame) < 14 + ihl + 4:
            return f"IP proto {frame[23]}"
        sport, dport = struct.unpack_from("!HH", frame, 14 + ihl)
        flow = self.demo.by_port.get(dport if from_a else sport)
        if flow is None:
            who = "the offload target" if from_a and ip_id >= 0x8000 else ("host A's stack" if from_a else "host B")
            return f"TCP, sent by {who}"
        phase = self.demo.phase(flow)
        if not from_a:
            who = "host B"
        elif ip_id >= 0x8000:
            who = "the offload target"
        else:
            who = "host A's stack"
        return f"conn {flow.index}, {phase}, sent by {who}"

    def close(self) -> None:
        for port, obs in self._hooks:
            port.remove_observer(obs)
        self._hooks.clear()
        self.w.close()


# ---------------------------------------------------------------------------------------------- receive paths


def run_receive_paths(seed: int) -> dict[str, Any]:
    """NDIS 5.x packet-return matrix and NDIS 6 NBL-return scenarios, both under the verifier."""
    n5 = run_matrix(seed)
    n6 = run_ndis6_matrix(seed)
    violations = sum(r.violations for r in n5) + sum(r.violations for r in n6)
    leaks = sum(r.leaked for r in n5) + sum(r.leaked for r in n6)
    return {
        "seed": seed,
        "ndis5_matrix": [r.as_row() for r in n5],
        "ndis6": [r.as_row() for r in n6],
        "violations": violations,
        "leaks": leaks,
        "ok": all(r.ok for r in n5) and all(r.ok for r in n6),
    }


__all__ = ["Flow", "run_offload_demo", "run_receive_paths"]
