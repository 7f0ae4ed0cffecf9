"""Benchmark: memory per idle connection. Host stack ends (socket + TCB + engine connection) and
offloaded target contexts, against the issue goals and against a same-run reference.

Figures:
  * host end: tracemalloc growth for N idle established connections through the in-process host stack
    (`connected_pair`, simulated time, both ends in this process), per connection end;
  * the same after each connection carried 4 KiB each way (buffers drained and released again);
  * client end / listener-accepted end: the same run split by a reachability walk (bytes of the objects
    reachable from one end's socket and from no other end of its kind, shared infrastructure excluded);
  * target context: tracemalloc growth per connection for N connections offloaded in one initiate tree
    (the `bench_target.py` measurement: TcpCtx + engine connection + NDIS-side blocks).
Reference: one bare Python object with as many slots as the idle end's objects have fields together
(the floor for holding that state as Python attributes), measured in the same run.
Goals: <= 2 KiB per idle host end (issue 4), <= 4 KiB per target context.
Run: python bench/bench_memory.py [--quick]   (or `chimney bench memory [--json]`)
"""

from __future__ import annotations

import gc
import importlib.util
import sys
import tracemalloc
from collections.abc import Iterable
from pathlib import Path
from types import BuiltinFunctionType, FunctionType, MethodType, ModuleType
from typing import Any

from chimney.host.stack import connected_pair
from chimney.sim import SimScheduler

GOAL_HOST_END = 2048
GOAL_TARGET_CTX = 4096


def _fields(obj: Any) -> int:
    """Attributes an object holds (slots set plus instance-dict entries)."""
    n = len(getattr(obj, "__dict__", ()))
    for cls in type(obj).__mro__:
        for name in getattr(cls, "__slots__", ()):
            if name not in ("__dict__", "__weakref__") and hasattr(obj, name):
                n += 1
    return n


def _reference_bytes(slots: int, n: int = 2000) -> float:
    """tracemalloc bytes per instance of one bare object with `slots` slots, all set to None."""
    cls = type(f"Bare{slots}", (), {"__slots__": tuple(f"f{i}" for i in range(slots))})
    holder: list[Any] = [None] * n
    gc.collect()
    tracemalloc.start()
    m0 = tracemalloc.get_traced_memory()[0]
    for i in range(n):
        o = cls()
        for k in range(slots):
            setattr(o, f"f{k}", None)
        holder[i] = o
    per = (tracemalloc.get_traced_memory()[0] - m0) / n
    tracemalloc.stop()
    return per


# -- reachability walk ---------------------------------------------------------------------------------

_STOP_TYPES = (type, ModuleType, FunctionType, BuiltinFunctionType)


def _stop_types() -> tuple[type, ...]:
    """Shared infrastructure a walk from one connection must not enter (it leads to every connection)."""
    from chimney.host.interface import Interface
    from chimney.host.ip import HostIp
    from chimney.host.neighbor import Neighbor
    from chimney.host.stack import HostStack
    from chimney.host.tcp import HostListener, TcpTransport
    from chimney.net.frame import TcpFrameBuilder
    from chimney.sim.scheduler import SimScheduler as Sched
    from chimney.tcp import Listener, TcpConfig

    return (*_STOP_TYPES, TcpTransport, HostStack, HostIp, Interface, Neighbor, HostListener, Listener, Sched,
            TcpConfig, TcpFrameBuilder)


def _reach(root: Any, stop: tuple[type, ...]) -> dict[int, Any]:
    seen: dict[int, Any] = {}
    todo = [root]
    while todo:
        o = todo.pop()
        if id(o) in seen or isinstance(o, stop) or o is None:
            continue
        if isinstance(o, MethodType):
            o = o.__self__  # a bound callback: the object it belongs to (if per-connection, walked)
            if id(o) in seen or isinstance(o, stop):
                continue
        seen[id(o)] = o
        todo.extend(gc.get_referents(o))
    return seen


def _unique_bytes(ends: list[Any], stop: tuple[type, ...]) -> tuple[float, dict[str, int]]:
    """Mean bytes reachable from one end only (first end against the next two), by object type."""
    per: list[float] = []
    by_type: dict[str, int] = {}
    for i in range(3):
        mine = _reach(ends[i], stop)
        other: set[int] = set()
        for j in range(3, 5):
            other.update(_reach(ends[(i + j) % len(ends)], stop))
        total = 0
        for k, o in mine.items():
            if k in other:
                continue
            size = sys.getsizeof(o)
            total += size
            if i == 0:
                by_type[type(o).__name__] = by_type.get(type(o).__name__, 0) + size
        per.append(total)
    return sum(per) / len(per), dict(sorted(by_type.items(), key=lambda kv: -kv[1]))


# -- host ends -------------------------------------------------------------------------------------------


def host_idle(n: int, exchange: int = 0) -> dict[str, Any]:
    """`n` established idle connections between two in-process hosts; bytes per end. With `exchange`,
    each connection first carries that many bytes each way (read by the other side) before going idle."""
    sched = SimScheduler(seed=5)
    a, b, _ = connected_pair(sched)
    srv = b.listen(5000, backlog=n)
    # Warm-up connection: ARP, the shared frame builder and header scratch are not per-connection costs.
    w = a.socket()
    w.connect(("198.18.0.2", 5000))
    srv.accept()
    sched.run_until(sched.now + 50_000_000)
    clients: list[Any] = [None] * n
    servers: list[Any] = [None] * n
    gc.collect()
    tracemalloc.start()
    m0 = tracemalloc.get_traced_memory()[0]
    for i in range(n):
        c = a.socket()
        c.setblocking(False)
        c.connect_ex(("198.18.0.2", 5000))
        clients[i] = c
    sched.run_until(sched.now + 100_000_000)
    for i in range(n):
        servers[i] = srv.accept()[0]
    if exchange:
        data = bytes(exchange)
        for c, s in zip(clients, servers, strict=True):
            s.setblocking(False)
            if c.send(data) != exchange:
                raise RuntimeError("send buffer too small for the exchange")
        sched.run_until(sched.now + 100_000_000)
        for s in servers:
            if len(s.recv(2 * exchange)) != exchange or s.send(data) != exchange:
                raise RuntimeError("exchange incomplete")
        sched.run_until(sched.now + 100_000_000)
        for c in clients:
            if len(c.recv(2 * exchange)) != exchange:
                raise RuntimeError("exchange incomplete")
    # Past the delayed-ACK timers and the handshake's stale retransmission timers (the host lets a timer
    # that is no longer needed fire instead of cancelling it): what is left is the steady idle state.
    sched.run_until(sched.now + 5_000_000_000)
    gc.collect()
    total = tracemalloc.get_traced_memory()[0] - m0
    tracemalloc.stop()
    est = sum(1 for s in clients + servers if s.tcb is not None and s.tcb.established and not s.tcb.closed)
    if est != 2 * n:
        raise RuntimeError(f"only {est} of {2 * n} ends established")
    stop = _stop_types()
    client_b, client_types = _unique_bytes(clients, stop)
    server_b, server_types = _unique_bytes(servers, stop)
    end = clients[0]
    objs: Iterable[Any] = (end, end.tcb, end.tcb.path, end.tcb.conn, end.tcb.conn.stats, end.tcb.conn.cc,
                           end.tcb.conn.sndbuf, end.tcb.conn.rxq)
    fields = sum(_fields(o) for o in objs)
    return {
        "connections": n,
        "bytes_per_end": total / (2 * n),
        "client_end_walk": client_b,
        "accepted_end_walk": server_b,
        "client_types": client_types,
        "accepted_types": server_types,
        "fields_per_end": fields,
    }


# -- target contexts ---------------------------------------------------------------------------------------


def _bench_target() -> ModuleType:
    path = Path(__file__).resolve().parent / "bench_target.py"
    spec = importlib.util.spec_from_file_location("chimney_bench_target_for_memory", path)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    return mod


def target_idle(n: int) -> dict[str, Any]:
    from chimney.target.context import TcpCtx
    from chimney.tcp import Connection

    per = _bench_target().many(n, True)
    # Fields of one offloaded context's own objects: the context, its three Fifo queues and the engine
    # connection with its parts.
    c = Connection()
    fields = len(TcpCtx.__slots__) + 3 + sum(_fields(o) for o in (c, c.stats, c.cc, c.sndbuf, c.rxq))
    return {"connections": n, "bytes_per_context": per, "fields_per_context": fields}


def run(quick: bool = False) -> dict[str, Any]:
    host = host_idle(300 if quick else 2000)
    after = host_idle(300 if quick else 1000, exchange=4096)
    tgt = target_idle(500 if quick else 5000)
    ref_host = _reference_bytes(host["fields_per_end"])
    ref_tgt = _reference_bytes(tgt["fields_per_context"])
    return {
        "host": host,
        "host_after_exchange": after,
        "target": tgt,
        "reference_host_bytes": ref_host,
        "reference_target_bytes": ref_tgt,
        "ratio_host_end": host["bytes_per_end"] / ref_host,
        "ratio_target_context": tgt["bytes_per_context"] / ref_tgt,
        "goal_host_end_met": host["bytes_per_end"] <= GOAL_HOST_END,
        "goal_target_context_met": tgt["bytes_per_context"] <= GOAL_TARGET_CTX,
    }


def _met(ok: bool) -> str:
    return "met" if ok else "NOT met"


def main() -> None:
    r = run("--quick" in sys.argv)
    h, t = r["host"], r["target"]
    print(f"reference: one bare object with {h['fields_per_end']} slots = {r['reference_host_bytes']:.0f} B; "
          f"with {t['fields_per_context']} slots = {r['reference_target_bytes']:.0f} B")
    print(f"idle host connection end ({h['connections']} connections, tracemalloc): {h['bytes_per_end']:.0f} B "
          f"= {r['ratio_host_end']:.2f} x reference; goal <= {GOAL_HOST_END} B: {_met(r['goal_host_end_met'])}")
    a = r["host_after_exchange"]
    print(f"  idle again after a 4 KiB exchange each way: {a['bytes_per_end']:.0f} B per end")
    print(f"  client end (walk): {h['client_end_walk']:.0f} B   listener-accepted end (walk): "
          f"{h['accepted_end_walk']:.0f} B")
    top = ", ".join(f"{k} {v}" for k, v in list(h["accepted_types"].items())[:8])
    print(f"  accepted end by type: {top}")
    print(f"offloaded target context ({t['connections']} in one initiate, tracemalloc): "
          f"{t['bytes_per_context']:.0f} B = {r['ratio_target_context']:.2f} x reference; "
          f"goal <= {GOAL_TARGET_CTX} B: {_met(r['goal_target_context_met'])}")


if __name__ == "__main__":
    main()
