"""The scenario battery of `chimney verify`: each scenario drives one offload situation (states, bulk under
loss, churn, capacity, peer RST/FIN, TIME_WAIT, upload-all, slow reader, disconnects, forwarding) and
records functional failures on a `Bench`; contract violations are collected by the verifier meanwhile.
"""

from __future__ import annotations

import contextlib
import errno
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from chimney.conformance.harness import TargetFactory, build_pair
from chimney.host import apps
from chimney.host.chimney import OffloadPair
from chimney.host.policy import OffloadPolicy
from chimney.host.socket import Socket
from chimney.host.tcp import Tcb
from chimney.links.impair import Impairments
from chimney.ndis.offload_state import TcpConnectionState
from chimney.ndis.status import NdisStatus
from chimney.ndis.verifier import Verifier
from chimney.sim.scheduler import NS_PER_MS, NS_PER_S, SimScheduler
from chimney.sim.tasks import spawn

S = TcpConnectionState
PORT = 5001
A_ADDR = "198.18.0.1"
B_ADDR = "198.18.0.2"
WIRE = Impairments(rate_bps=100_000_000, delay_ns=200_000, queue_limit_frames=300)
LOSSY = Impairments(rate_bps=100_000_000, delay_ns=300_000, queue_limit_frames=300, loss=0.01,
                    duplicate=0.01, reorder=0.02, reorder_delay_ns=400_000)


class ScenarioAbort(Exception):
    """A functional failure after which the scenario cannot go on (already recorded on the bench)."""


class Bench:
    """One offload pair for one scenario plus the helpers scenarios share; `failures` collects functional
    failures (data mismatch, missed event, leak) as readable lines."""

    def __init__(self, factory: TargetFactory, seed: int, verifier: Verifier, *, impairments: Any = WIRE,
                 policy: OffloadPolicy | None = None, target_options: dict[str, Any] | None = None,
                 ticks_per_second: int = 1000, ims: int = 0) -> None:
        self.sched = SimScheduler(seed)
        self.factory = factory
        self.p: OffloadPair = build_pair(self.sched, factory, seed=seed, impairments=impairments,
                                         target_options=target_options, policy=policy, verifier=verifier,
                                         ticks_per_second=ticks_per_second, ims=ims)
        self.failures: list[str] = []
        self.verifier = verifier

    # ---------------------------------------------------------------- time

    def run(self, ms: float) -> None:
        self.sched.run_until(self.sched.now + int(ms * NS_PER_MS))

    def until(self, pred: Callable[[], bool], limit_s: float, what: str) -> bool:
        self.sched.run_until(self.sched.now + int(limit_s * NS_PER_S), predicate=pred)
        if not pred():
            self.fail(f"timed out after {limit_s} s waiting for: {what}")
            return False
        return True

    def must(self, pred: Callable[[], bool], limit_s: float, what: str) -> None:
        if not self.until(pred, limit_s, what):
            raise ScenarioAbort(what)

    # ---------------------------------------------------------------- verdicts

    def fail(self, text: str) -> None:
        self.failures.append(text)

    def expect(self, ok: bool, text: str) -> bool:
        if not ok:
            self.fail(text)
        return ok

    # ---------------------------------------------------------------- connections

    def a_conns(self, port: int = PORT) -> list[Tcb]:
        return [t for t in self.p.host_a.tcp.connections() if port in (t.remote_port, t.local_port)]

    def offload(self, tcbs: Tcb | list[Tcb], *, force: bool = False) -> int:
        m = self.p.manager
        n = m.offload(tcbs, force=force)
        self.until(lambda: not m.busy(), 5, "the initiate offload to complete")
        return n

    def offload_one(self, tcb: Tcb) -> bool:
        """Offload and expect the target to take it (the built-in target always does)."""
        if self.offload(tcb) != 1:
            self.fail(f"host could not start an offload of {tcb!r}")
            return False
        return self.expect(self.p.manager.is_offloaded(tcb),
                           f"target did not offload the connection: {self.p.manager.initiate_results}")

    def upload(self, tcb: Tcb) -> None:
        m = self.p.manager
        if m.upload(tcb):
            self.until(lambda: tcb.path.kind == "host", 5, "the terminate offload to complete")

    def warm(self) -> None:
        """ARP both ways first so simultaneous SYNs are not held behind resolution."""
        srv = apps.discard_server(self.p.host_b, 9)
        w = spawn(self.sched, apps.bulk_client(self.p.host_a, B_ADDR, 9, 100, 1))
        self.until(w.done, 5, "ARP warm-up")
        srv.close()

    def start_bulk(self, nbytes: int, clients: int = 1) -> tuple[Any, list[Any]]:
        self.warm()
        srv = apps.bulk_server(self.p.host_b, PORT, nbytes, 7)
        futs = [spawn(self.sched, apps.bulk_client(self.p.host_a, B_ADDR, PORT, nbytes, 11 + i))
                for i in range(clients)]
        return srv, futs

    def check_bulk(self, srv: Any, futs: list[Any], nbytes: int, limit_s: float = 120) -> None:
        """sha256 of both directions of every bulk exchange."""
        if not self.until(lambda: all(f.done() for f in futs) and len(srv.results) >= len(futs), limit_s,
                          "bulk transfers to finish"):
            return
        want_a = apps.bulk_digest(nbytes, 7)
        got_b = sorted(getattr(r, "received_sha256", "") for r in srv.results)
        for i, f in enumerate(futs):
            try:
                r = f.result()
            except Exception as e:
                self.fail(f"bulk client {i}: {type(e).__name__}: {e}")
                continue
            self.expect(not r.errors, f"bulk client {i}: errors {r.errors}")
            self.expect(r.received == nbytes and r.received_sha256 == want_a,
                        f"bulk client {i}: received {r.received} bytes, sha256 mismatch B->A")
        want_b = sorted(apps.bulk_digest(nbytes, 11 + i) for i in range(len(futs)))
        self.expect(got_b == want_b, "sha256 mismatch A->B (what host B received)")

    def socket_pair(self, port: int = PORT) -> tuple[Socket, Socket, Tcb]:
        """A connected non-blocking socket pair A -> B and A's Tcb."""
        lst = self.p.host_b.listen(port)
        lst.setblocking(False)
        sa = self.p.host_a.socket()
        sa.setblocking(False)
        with contextlib.suppress(BlockingIOError):
            sa.connect((B_ADDR, port))
        self.must(lambda: any(t.state is S.Established for t in self.a_conns(port)), 5, "connection established")
        self.run(2)
        sb, _ = lst.accept()
        sb.setblocking(False)
        lst.close()
        (tcb,) = self.a_conns(port)
        return sa, sb, tcb

    def push(self, sock: Socket, data: bytes, sinks: list[tuple[Socket, bytearray]]) -> None:
        view = memoryview(data)
        deadline = self.sched.now + 30 * NS_PER_S
        while view:
            try:
                view = view[sock.send(view):]
            except BlockingIOError:
                if self.sched.now > deadline:
                    self.fail("send blocked for 30 s")
                    raise ScenarioAbort("send stuck") from None
                self.run(1)
                drain(sinks)

    # ---------------------------------------------------------------- end of scenario

    def finish(self) -> None:
        """Everything handed back, nothing held; then halt the adapter and ask NDIS for leaks."""
        m = self.p.manager
        m.policy = OffloadPolicy.explicit()
        for t in list(m.offloaded()):
            m.upload(t)
        self.until(lambda: not m.busy() and not m.paths and not self.p.binding.tx_outstanding, 30,
                   "every connection back in the host with no I/O outstanding")
        for key in ("send_completed_out_of_order", "send_completed_unknown", "trm_chain_mismatch",
                    "trm_sends_outstanding", "upload_failed"):
            self.expect(m.stats[key] == 0, f"host saw {key} = {m.stats[key]}")
        leaks = m.leaks()
        self.expect(not leaks, "host leak report: " + "; ".join(leaks))
        self.p.ndis.halt_adapter(self.p.ndis.adapters[0])
        report = self.p.ndis.leak_report().strip()
        self.expect(report == "no live NBLs (all owners)", "NDIS leak report after halt: " + report.replace("\n", "; "))


def drain(sinks: list[tuple[Socket, bytearray]]) -> bool:
    """Read what is readable into the buffers; True when every socket reached EOF."""
    eof = True
    for sock, buf in sinks:
        while True:
            try:
                chunk = sock.recv(1 << 20)
            except BlockingIOError:
                eof = False
                break
            except OSError:
                break
            if not chunk:
                break
            buf += chunk
    return eof


def read_error(sock: Socket) -> int | None:
    """Read past any data to the socket's error: its errno, or None at a clean EOF / nothing yet."""
    while True:
        try:
            if not sock.recv(1 << 20):
                return None
        except BlockingIOError:
            return None
        except OSError as e:
            return e.errno


def pattern(n: int, k: int) -> bytes:
    return bytes((i * k + 7) & 0xFF for i in range(256)) * (n // 256)


# ==================================================================================== scenarios


def offload_established(b: Bench, quick: bool) -> None:
    """Bidirectional bulk; offload mid-transfer, run offloaded, upload, finish in the host."""
    n = 400_000 if quick else 2_000_000
    srv, futs = b.start_bulk(n)
    b.run(10)
    (tcb,) = b.a_conns()
    b.offload_one(tcb)
    b.run(20)
    b.upload(tcb)
    b.check_bulk(srv, futs, n)


def offload_in_states(b: Bench, quick: bool) -> None:
    """Offload in FIN_WAIT_2 and CLOSE_WAIT (and ESTABLISHED with data both ways), upload, close cleanly."""
    data_a, data_b = pattern(60_000, 3), pattern(40_000, 5)
    for port, state in ((PORT, S.CloseWait), (PORT + 1, S.FinWait2), (PORT + 2, S.Established)):
        sa, sb, tcb = b.socket_pair(port)
        got_a, got_b = bytearray(), bytearray()
        sinks = [(sa, got_a), (sb, got_b)]
        b.push(sa, data_a, sinks)
        b.push(sb, data_b, sinks)
        b.run(5)
        drain(sinks)
        if state is S.CloseWait:
            sb.shutdown(1)
        elif state is S.FinWait2:
            sa.shutdown(1)
        b.until(lambda t=tcb, s=state: t.state is s, 5, f"connection in {state.name}")
        if b.offload_one(tcb):
            b.run(5)
            if state is not S.FinWait2:
                b.push(sa, data_a, sinks)
            if state is not S.CloseWait:
                b.push(sb, data_b, sinks)
            b.run(5)
            b.upload(tcb)
            b.expect(tcb.path.kind == "host", f"{state.name}: not back in the host after the upload")
        if state is not S.FinWait2:
            sa.shutdown(1)
        if state is not S.CloseWait:
            sb.shutdown(1)
        b.until(lambda s=sinks: drain(s), 20, f"{state.name}: both sides read to EOF")
        want_a = data_a if state is S.FinWait2 else data_a + data_a
        want_b = data_b if state is S.CloseWait else data_b + data_b
        b.expect(bytes(got_b) == want_a, f"{state.name}: B received {len(got_b)} bytes, wrong data A->B")
        b.expect(bytes(got_a) == want_b, f"{state.name}: A received {len(got_a)} bytes, wrong data B->A")
        sa.close()
        sb.close()


def bulk_loss_reorder(b: Bench, quick: bool) -> None:
    """Bidirectional bulk over a lossy, reordering, duplicating wire while offloaded by policy."""
    n = 300_000 if quick else 1_500_000
    b.p.manager.policy = OffloadPolicy.established(cooldown_ns=3 * NS_PER_MS)
    srv, futs = b.start_bulk(n)
    b.check_bulk(srv, futs, n, 300)
    b.expect(b.p.manager.stats["initiate_tcp_ok"] >= 1, "the connection was never offloaded")


def offload_churn(b: Bench, quick: bool) -> None:
    """Repeated offload / upload (host-initiated and, where the target offers it, target-requested)."""
    n = 500_000 if quick else 3_000_000
    m = b.p.manager
    m.policy = OffloadPolicy.established(cooldown_ns=3 * NS_PER_MS)
    srv, futs = b.start_bulk(n)
    rounds = 0
    target_req = getattr(b.p.target, "request_upload", None)
    tcps = getattr(b.p.target, "tcps", None)
    for i in range(40):
        b.run(4)
        if futs[0].done():
            break
        for t in m.offloaded():
            rounds += 1
            if i % 2 and target_req is not None and isinstance(tcps, dict):
                ctx = tcps.get((t.local, t.remote, t.local_port, t.remote_port))
                if ctx is not None:
                    target_req(ctx)
                    continue
            m.upload(t)
    b.check_bulk(srv, futs, n)
    b.expect(m.stats["initiate_tcp_ok"] >= 2, f"only {m.stats['initiate_tcp_ok']} offload(s) in the churn")


def capacity_limits(b: Bench, quick: bool) -> None:
    """Four connections in one initiate tree with room for two: two TCP nodes fail with a specific status,
    the shared path reports OFFLOAD_PARTIAL_SUCCESS (R-OFF-05), the failed ones go on in the host."""
    n = 200_000 if quick else 600_000
    srv, futs = b.start_bulk(n, clients=4)
    b.must(lambda: len(b.a_conns()) == 4 and all(t.state is S.Established for t in b.a_conns()), 10,
           "four connections established")
    conns = b.a_conns()
    b.offload(conns, force=True)
    res = b.p.manager.initiate_results
    ok = res.get("SUCCESS", 0)
    b.expect(ok <= 2, f"target offloaded {ok} connections past a capacity of 2: {res}")
    b.expect(sum(res.values()) == 4, f"initiate results do not cover the four nodes: {res}")
    b.check_bulk(srv, futs, n)


def shared_path_linkers(b: Bench, quick: bool) -> None:
    """A second connection on the same path and neighbor: its tree links to the offloaded objects (linker
    nodes, R-TREE-06); they are terminated only after the last connection above them (R-TRM-04)."""
    n = 200_000 if quick else 800_000
    srv, futs = b.start_bulk(n, clients=2)
    b.must(lambda: len(b.a_conns()) == 2 and all(t.state is S.Established for t in b.a_conns()), 10,
           "two connections established")
    c1, c2 = b.a_conns()
    b.offload_one(c1)
    b.offload_one(c2)
    b.run(5)
    b.upload(c1)
    b.run(2)
    b.upload(c2)
    b.check_bulk(srv, futs, n)


def root_failure(b: Bench, quick: bool) -> None:
    """No neighbor entry left (max_neighbors 0): the root of the tree fails, traversal stops (R-OFF-04),
    every node fails and the connection carries on in the host."""
    n = 150_000 if quick else 500_000
    srv, futs = b.start_bulk(n)
    b.run(5)
    (tcb,) = b.a_conns()
    b.offload(tcb)
    b.expect(not b.p.manager.is_offloaded(tcb), "offloaded although the target has no neighbor entry")
    b.expect(tcb.path.kind == "host", "connection not running in the host after a failed offload")
    b.check_bulk(srv, futs, n)


def _offloaded_pair(b: Bench) -> tuple[Socket, Socket, Tcb]:
    sa, sb, tcb = b.socket_pair()
    if not b.offload_one(tcb):
        raise ScenarioAbort("no offload")
    return sa, sb, tcb


def peer_reset(b: Bench, quick: bool) -> None:
    """RST from the peer: TcpIndicateAbort, pending sends aborted, the socket sees ECONNRESET."""
    sa, sb, tcb = _offloaded_pair(b)
    with contextlib.suppress(BlockingIOError):
        sa.send(pattern(200_000, 9))  # leave sends in flight so the abort has something to fail
    b.run(0.3)
    sb.abort()
    b.until(lambda: tcb.closed, 5, "the connection to close after the peer's RST")
    b.expect(b.p.manager.stats["aborts_indicated"] == 1,
             f"TcpIndicateAbort indicated {b.p.manager.stats['aborts_indicated']} times (want 1)")
    err = read_error(sa)
    b.expect(err == errno.ECONNRESET, f"recv after the peer's RST gave errno {err}, want ECONNRESET")
    sa.close()


def peer_fin(b: Bench, quick: bool) -> None:
    """FIN from the peer after data: every byte is read before EOF (R-EVT-01 ordering); then we close."""
    sa, sb, _tcb = _offloaded_pair(b)
    data = pattern(300_000 if not quick else 120_000, 11)
    got = bytearray()
    b.push(sb, data, [])
    sb.shutdown(1)
    b.run(5)
    b.until(lambda: drain([(sa, got)]), 20, "A to read to EOF")
    b.expect(bytes(got) == data, f"A read {len(got)} of {len(data)} bytes before EOF, or wrong data")
    b.expect(b.p.manager.stats["disconnects_indicated"] == 1,
             f"TcpIndicateDisconnect indicated {b.p.manager.stats['disconnects_indicated']} times (want 1)")
    sa.shutdown(1)
    rest = bytearray()
    b.until(lambda: drain([(sb, rest)]), 10, "B to see our FIN")
    sa.close()
    sb.close()


def peer_fin_unread(b: Bench, quick: bool) -> None:
    """Peer sends more than the host's socket buffer, then FIN, while nobody reads: the FIN arrives with
    refused data still in the target; the disconnect is indicated only after it is drained (R-EVT-01)."""
    sa, sb, tcb = _offloaded_pair(b)
    rcv_buf = tcb.conn.cfg.rcv_buf
    data = pattern(rcv_buf + rcv_buf // 2, 23)

    async def writer() -> None:
        await sb.asendall(data)
        sb.shutdown(1)

    spawn(b.sched, writer())
    b.run(100)
    st = b.p.manager.stats
    b.expect(st["ind_refused"] + st["ind_partial"] >= 1, "no indication was refused with a full socket buffer")
    got = bytearray()
    b.until(lambda: drain([(sa, got)]), 20, "A to read to EOF")
    b.expect(bytes(got) == data, f"A read {len(got)} of {len(data)} bytes before EOF, or wrong data")
    sa.shutdown(1)
    b.until(lambda: drain([(sb, bytearray())]), 10, "B to see our FIN")
    sa.close()
    sb.close()


def time_wait_retrieve(b: Bench, quick: bool) -> None:
    """We close first while offloaded, the peer closes: the connection reaches TIME_WAIT in the target,
    which hands it back (TcpIndicateRetrieve); TIME_WAIT runs in the host."""
    sa, sb, tcb = _offloaded_pair(b)
    rest = bytearray()
    sa.shutdown(1)
    b.until(lambda: drain([(sb, rest)]), 5, "B to see our FIN")
    sb.shutdown(1)
    b.until(lambda: tcb.path.kind == "host", 10, "the TIME_WAIT connection to be handed back to the host")
    b.expect(tcb.state in (S.TimeWait, S.Closed), f"connection back in {tcb.state.name}, want TimeWait")
    b.expect(b.p.manager.stats["retrieves"] >= 1 or b.p.manager.stats["uploads_done"] >= 1,
             "the target never asked for the TIME_WAIT connection to be uploaded")
    sa.close()
    sb.close()


def upload_all(b: Bench, quick: bool) -> None:
    """Hardware reset (NDIS_STATUS_UPLOAD_ALL) during transfers: every object comes back, nothing is lost."""
    n = 400_000 if quick else 1_500_000
    b.p.manager.policy = OffloadPolicy.established(cooldown_ns=20 * NS_PER_MS)
    srv, futs = b.start_bulk(n, clients=3)
    b.run(15)
    b.expect(len(b.p.manager.offloaded()) >= 1, "nothing offloaded before the reset")
    reset = getattr(b.p.target, "hardware_reset", None)
    if reset is not None:
        reset()
    else:  # a target without the helper: indicate UPLOAD_ALL on its behalf, as its reset path would
        b.p.ndis.m_indicate_status_ex(b.p.ndis.adapters[0], NdisStatus.UPLOAD_ALL)
    b.until(lambda: not b.p.manager.paths, 5, "every connection uploaded after UPLOAD_ALL")
    b.check_bulk(srv, futs, n)


def slow_reader(b: Bench, quick: bool) -> None:
    """Nobody reads on A: indications are refused (R-IND-05/06); reading re-enables them through a
    zero-byte receive (R-IND-08/10); the stream arrives intact."""
    sa, sb, _tcb = _offloaded_pair(b)
    data = pattern(600_000 if quick else 1_000_000, 13)

    async def writer() -> None:
        await sb.asendall(data)
        sb.shutdown(1)

    spawn(b.sched, writer())
    b.run(200)
    st = b.p.manager.stats
    b.expect(st["ind_refused"] + st["ind_partial"] >= 1, "no indication was refused with a full socket buffer")
    got = bytearray()
    b.until(lambda: drain([(sa, got)]), 30, "A to read the whole stream")
    b.expect(bytes(got) == data, f"A read {len(got)} of {len(data)} bytes, or wrong data")
    b.expect(st["zero_posts"] >= 1, "no zero-byte receive was posted to re-enable indications")
    sa.close()
    sb.close()


def graceful_disconnect(b: Bench, quick: bool) -> None:
    """Data then NdisOffloadTcpDisconnect(GRACEFUL) from the host: the peer reads everything, then EOF."""
    sa, sb, tcb = _offloaded_pair(b)
    data = pattern(250_000, 17)
    got = bytearray()
    b.push(sa, data, [(sb, got)])
    sa.shutdown(1)
    b.until(lambda: drain([(sb, got)]), 20, "B to read to EOF")
    b.expect(bytes(got) == data, f"B read {len(got)} of {len(data)} bytes before EOF, or wrong data")
    sb.shutdown(1)
    b.until(lambda: tcb.state in (S.TimeWait, S.Closed), 10, "A to reach TIME_WAIT")
    sa.close()
    sb.close()


def abortive_disconnect(b: Bench, quick: bool) -> None:
    """NdisOffloadTcpDisconnect(ABORTIVE): the peer sees a reset."""
    sa, sb, tcb = _offloaded_pair(b)
    with contextlib.suppress(BlockingIOError):
        sa.send(pattern(100_000, 19))
    b.run(0.5)
    sa.abort()
    b.until(lambda: tcb.closed, 5, "A's connection to close after the abort")
    b.run(2)
    err = read_error(sb)
    b.expect(err == errno.ECONNRESET, f"the peer's recv gave errno {err} after an abortive disconnect, want ECONNRESET")
    sb.close()


def forward_during_offload(b: Bench, quick: bool) -> None:
    """A slow bus (MiniportInitiateOffload/Terminate reach the target 3 ms late): segments the host gets
    meanwhile are forwarded with NdisOffloadTcpForward after the offload (R-FWD-02/03)."""
    adapter = b.p.ndis.adapters[0]
    gen = adapter.dh.provider_generic
    for name in ("initiate_offload_handler", "terminate_offload_handler"):
        orig = getattr(gen, name)

        def late(ctx: Any, mbl: Any, orig: Any = orig) -> None:
            b.sched.call_later(3 * NS_PER_MS, orig, ctx, mbl, label="slow bus")

        setattr(gen, name, late)
    n = 300_000 if quick else 1_500_000
    srv, futs = b.start_bulk(n)
    b.run(10)
    (tcb,) = b.a_conns()
    b.p.manager.offload(tcb)
    b.run(10)
    b.expect(b.p.manager.is_offloaded(tcb), "not offloaded after the slow initiate")
    b.expect(b.p.manager.stats["forwarded"] > 0, "no segment was forwarded")
    b.p.manager.upload(tcb)
    b.run(10)
    b.check_bulk(srv, futs, n)


@dataclass(frozen=True)
class Scenario:
    name: str
    run: Callable[[Bench, bool], None]
    impairments: Any = WIRE
    target_options: dict[str, Any] | None = None
    ticks_per_second: int = 1000  # the host's TicksPerSecond (R-INIT-14)

    @property
    def doc(self) -> str:
        return (self.run.__doc__ or "").strip().splitlines()[0]


# After Scenario and Bench exist: scenarios_data / scenarios_ops import them (the package imports this first).
from chimney.conformance.scenarios_data import DATA_SCENARIOS  # noqa: E402
from chimney.conformance.scenarios_ops import OPS_SCENARIOS  # noqa: E402
from chimney.conformance.scenarios_sec import SEC_SCENARIOS  # noqa: E402

SCENARIOS: tuple[Scenario, ...] = (
    Scenario("offload-established", offload_established),
    Scenario("offload-in-states", offload_in_states, Impairments(rate_bps=1_000_000_000, delay_ns=400_000)),
    Scenario("bulk-loss-reorder", bulk_loss_reorder, LOSSY),
    Scenario("offload-churn", offload_churn),
    Scenario("capacity-limits", capacity_limits, WIRE, {"max_tcp": 2}),
    Scenario("shared-path-linkers", shared_path_linkers),
    Scenario("root-failure", root_failure, WIRE, {"max_neighbors": 0}),
    Scenario("peer-reset", peer_reset),
    Scenario("peer-fin", peer_fin),
    Scenario("peer-fin-unread", peer_fin_unread),
    Scenario("time-wait-retrieve", time_wait_retrieve),
    Scenario("upload-all", upload_all),
    Scenario("slow-reader", slow_reader),
    Scenario("graceful-disconnect", graceful_disconnect),
    Scenario("abortive-disconnect", abortive_disconnect),
    Scenario("forward-during-offload", forward_during_offload),
    *OPS_SCENARIOS,  # query / update / invalidate / statistics / timers (scenarios_ops.py)
    *DATA_SCENARIOS,  # posted receives, disconnects, forwarding, special receives (scenarios_data.py)
    *SEC_SCENARIOS,  # blind in-window attack mitigation, recommended data-path behaviour (scenarios_sec.py)
)
