"""Memory per idle connection, as structure: an idle connection allocates no queue, reassembly, SACK or
outbox storage, containers are released when they drain, and connections share configs, header scratch
and frame builders. (Byte figures are in bench/bench_memory.py, not here.)"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tcp_harness import Impairment, Net, make_pair

from chimney.host.stack import connected_pair
from chimney.net.tcp import TcpSegment
from chimney.sim import SimScheduler
from chimney.target.context import Fifo
from chimney.tcp import Connection, TcpConfig
from chimney.tcp.buffers import EMPTY, NO_DROPS, Reassembly, ReceiveQueue, SendBuffer, shared_int

MS = 1_000_000


def assert_idle_storage_free(c: Connection, *, fresh: bool = True) -> None:
    """Nothing but the fixed objects: no queue, reassembly, scoreboard or outbox storage (and, on a
    connection that never dropped anything, no drop-count dict)."""
    assert c.ooo is None or not c.ooo.allocated
    assert c._sack_board is EMPTY
    assert not c.rxq.allocated and not c.sndbuf.allocated
    assert c._out is EMPTY and c._events is EMPTY
    if fresh:
        assert c.stats.drops is NO_DROPS


def established_net(**kw: object) -> Net:
    a, b = make_pair(TcpConfig(), TcpConfig())
    net = Net(a, b, **kw)  # type: ignore[arg-type]
    a.connect(0)
    net.run(until=lambda n: a.state.name == "Established" and b.state.name == "Established")
    net.run()  # the handshake's last ACK and any delayed ACK
    return net


def test_idle_established_engine_connection_allocates_no_containers() -> None:
    net = established_net()
    for c in net.conns:
        assert_idle_storage_free(c)


def test_connections_share_their_config_and_per_connection_constants() -> None:
    net = established_net()
    a, b = net.conns
    a2, b2 = make_pair(a.cfg, b.cfg)
    net2 = Net(a2, b2)
    a2.connect(0)
    net2.run()
    assert a2.cfg is a.cfg and b2.cfg is b.cfg
    # The MSS and initial window are the same int object in every connection (interned, not copied).
    assert a2.snd_mss is a.snd_mss and a2.cc.cwnd is a.cc.cwnd and a2._ts_div is a._ts_div


def test_containers_are_released_after_loss_recovery_and_reads() -> None:
    # Data segments 5..7 of a 200 kB transfer are lost: the receiver queues out-of-order data and
    # SACKs it, the sender keeps a scoreboard; once everything is repaired, acknowledged and read,
    # every one of those containers is released again.
    data = bytes(range(256)) * 800
    net = established_net(ab=Impairment(burst_loss=(5, 8)))
    a, b = net.conns
    net.send_stream(0, data, shutdown=False)
    net.run()
    assert bytes(net.received[1]) == data
    assert a.stats.retransmitted_segments > 0 and b.ooo is not None  # recovery really happened
    for c in (a, b):
        assert_idle_storage_free(c, fresh=False)
    # Counting a drop allocates the dict (reads of the shared empty mapping never do).
    assert a.stats.drops is NO_DROPS
    a.stats.drop("test")
    assert a.stats.drops == {"test": 1} and NO_DROPS == {}


def test_the_shared_empty_drops_mapping_cannot_be_written() -> None:
    with pytest.raises(TypeError):
        NO_DROPS["x"] = 1  # type: ignore[index]


def test_fin_discards_the_reassembly_queue() -> None:
    net = established_net(ab=Impairment(burst_loss=(3, 4)))
    b = net.conns[1]
    had_ooo: list[bool] = []
    net.hooks.append(lambda n: had_ooo.append(n.conns[1].ooo is not None))
    net.send_stream(0, b"z" * 20_000, shutdown=True)
    net.run()
    assert any(had_ooo)  # the loss made the receiver queue out-of-order data
    assert bytes(net.received[1]) == b"z" * 20_000 and b.ooo is None


# -- buffers: allocation only while holding data -------------------------------------------------------


@settings(max_examples=60)
@given(st.lists(st.tuples(st.booleans(), st.integers(0, 3000)), max_size=40))
def test_receive_queue_holds_a_list_exactly_while_it_has_bytes(ops: list[tuple[bool, int]]) -> None:
    q = ReceiveQueue()
    model = bytearray()
    k = 0
    for is_append, n in ops:
        if is_append:
            chunk = bytes((k + i) & 0xFF for i in range(n))
            k += n
            q.append(memoryview(chunk))
            model += chunk
        else:
            got = bytes(q.read(n))
            assert got == bytes(model[:n])
            del model[:n]
        assert q.size == len(model) and q.allocated == bool(model)
    assert bytes(q.read(-1)) == bytes(model)
    assert not q.allocated


@settings(max_examples=60)
@given(st.lists(st.tuples(st.booleans(), st.integers(1, 3000)), max_size=40))
def test_send_buffer_releases_its_lists_when_everything_is_acknowledged(ops: list[tuple[bool, int]]) -> None:
    base = 1 << 32
    buf = SendBuffer(base)
    model = bytearray()
    start = base
    k = 0
    for is_append, n in ops:
        if is_append:
            chunk = bytes((k + i) & 0xFF for i in range(n))
            k += n
            buf.append(memoryview(chunk))
            model += chunk
        else:
            n = min(n, len(model))
            buf.consume_to(start + n)
            del model[:n]
            start += n
        assert len(buf) == len(model)
        assert buf.allocated == bool(model)
        if model:
            assert bytes(buf.slice(start, len(model))) == bytes(model)
    assert bytes(buf.slice(start, 0)) == b""


@settings(max_examples=60)
@given(st.lists(st.tuples(st.integers(0, 40), st.integers(0, 12), st.booleans()), max_size=30))
def test_reassembly_holds_lists_exactly_while_it_holds_pieces(ops: list[tuple[int, int, bool]]) -> None:
    r = Reassembly(max_pieces=8)
    rcv_nxt = 0
    for off, n, pop in ops:
        if pop:
            rcv_nxt, _ = r.pop_ready(rcv_nxt + off)
        else:
            r.add(rcv_nxt + 1 + off, bytes(n))
        assert r.allocated == bool(r)
    r.drop_beyond(0)
    assert not r and not r.allocated and r.bytes == 0 and r.sack_blocks(4) == []


def test_reassembly_with_no_room_allocates_nothing() -> None:
    r = Reassembly(max_pieces=0)
    assert r.add(10, b"abc") is False
    assert not r.allocated


def test_shared_int_returns_one_object_per_value() -> None:
    x = int("123456789")
    y = int("123456789")
    assert x is not y
    assert shared_int(x) is shared_int(y)


# -- configs ------------------------------------------------------------------------------------------


def test_config_is_immutable_and_replace_hands_out_one_object_per_change() -> None:
    cfg = TcpConfig()
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.mss = 1000  # type: ignore[misc]
    assert cfg.replace() is cfg
    one = cfg.replace(mss=1000, nagle=False)
    assert one is cfg.replace(nagle=False, mss=1000)
    assert one is TcpConfig().replace(mss=1000, nagle=False)  # an equal base gives the same result
    assert one.mss == 1000 and not one.nagle and cfg.mss == 1460


def test_imported_connections_share_one_config() -> None:
    net = established_net()
    a = net.conns[0]
    state = a.export_state(0, 1000)
    c1 = Connection.import_state(*state, 0, 1000, cfg=TcpConfig())
    c2 = Connection.import_state(*state, 0, 1000, cfg=TcpConfig())
    assert c1.cfg is c2.cfg
    assert c1.snd_nxt is c1.snd_una and c1.snd_max is c1.snd_una  # idle: one int object for all three
    assert_idle_storage_free(c1)


# -- host stack ----------------------------------------------------------------------------------------


def test_idle_host_connections_share_config_header_scratch_and_frame_builder() -> None:
    sched = SimScheduler(seed=3)
    a, b, _ = connected_pair(sched)
    srv = b.listen(5000)
    clients = []
    for _ in range(2):
        c = a.socket()
        c.connect(("198.18.0.2", 5000))
        clients.append(c)
    servers = [srv.accept()[0] for _ in range(2)]
    sched.run_until(sched.now + 5_000 * MS)
    for side, stack in ((clients, a), (servers, b)):
        t1, t2 = (s.tcb for s in side)
        assert t1.established and t2.established
        assert t1.conn.cfg is t2.conn.cfg
        assert t1.hdr is t2.hdr is stack.tcp.hdr and t1.hdr_mv is stack.tcp.hdr_mv
        assert t1.builder is not None and t1.builder is t2.builder
        for s in side:
            assert not hasattr(s, "__dict__")  # slotted socket
            assert s._waiters is None and s._cfg_changes is None
            assert_idle_storage_free(s.tcb.conn)
    # A child handed to accept() keeps no SYN-queue key.
    assert all(s.tcb.conn._parent_key is None for s in servers)


def test_a_socket_option_gives_that_socket_alone_a_config_change() -> None:
    sched = SimScheduler(seed=4)
    a, b, _ = connected_pair(sched)
    b.listen(5000)
    s1, s2 = a.socket(), a.socket()
    s1.set_options(nodelay=True)
    s1.connect(("198.18.0.2", 5000))
    s2.connect(("198.18.0.2", 5000))
    assert s1._cfg_changes is not None and s2._cfg_changes is None
    assert not s1.tcb.conn.cfg.nagle and s2.tcb.conn.cfg.nagle


# -- offload target --------------------------------------------------------------------------------------


def test_fifo_holds_storage_only_while_not_empty() -> None:
    q: Fifo[int] = Fifo()
    assert not q and len(q) == 0 and list(q) == [] and not q.allocated
    with pytest.raises(IndexError):
        q.popleft()
    with pytest.raises(IndexError):
        q[0]
    for i in range(5):
        q.append(i)
    assert q and len(q) == 5 and q[0] == 0 and q[-1] == 4 and list(q) == [0, 1, 2, 3, 4]
    assert [q.popleft() for _ in range(5)] == [0, 1, 2, 3, 4]
    assert not q and not q.allocated
    q.append(7)
    q.clear()
    assert not q and not q.allocated


def test_idle_offloaded_context_holds_no_queue_storage() -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "target"))
    try:
        from target_harness import Rig, pattern
    finally:
        sys.path.pop(0)
    rig = Rig()
    rig.connect()
    rig.offload()
    data = pattern(30_000, 2)
    rig.send(data, pieces=3)
    rig.run(until=lambda: len(rig.host.send_done) == 3)
    rig.run(ms=500)
    assert bytes(rig.peer.received) == data
    (ctx,) = rig.target.tcps.values()
    assert not ctx.send_q.allocated and not ctx.urgent_frames.allocated
    assert_idle_storage_free(ctx.conn)


def test_outbox_is_allocated_by_the_first_segment_and_released_by_pop() -> None:
    c = Connection(TcpConfig(), 40000, 80, 7)
    assert c._out is EMPTY
    c.connect(0)
    segs = c.pop_segments()
    assert len(segs) == 1 and isinstance(segs[0], TcpSegment) and c._out is EMPTY
    assert c.pop_segments() == [] and c.pop_events() == []


def test_replace_shares_only_between_equal_changes_of_the_same_type() -> None:
    """`replace(x=1)` and `replace(x=True)` compare equal but are different settings: no shared result."""
    from chimney.tcp.config import TcpConfig

    c = TcpConfig()
    assert c.replace(keepalive=True) is c.replace(keepalive=True)
    one, true = c.replace(keepalive=1), c.replace(keepalive=True)
    assert one is not true and type(one.keepalive) is int and type(true.keepalive) is bool
