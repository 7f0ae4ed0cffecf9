"""The demo applications on two simulated hosts: echo, discard, seeded bulk transfer both ways (sha256),
the HTTP/1.1 server with our client, the asyncio-style streams, and a blocking echo in real time."""

from __future__ import annotations

import hashlib
from pathlib import Path

from chimney.host.apps import (
    HttpServer,
    StreamReader,
    StreamWriter,
    bulk_client,
    bulk_digest,
    bulk_server,
    discard_server,
    echo_server,
    http_bytes,
    http_get,
    open_connection,
    run,
    start_server,
)
from chimney.host.stack import connected_pair
from chimney.links.impair import Impairments
from chimney.sim import NS_PER_S, SimScheduler
from chimney.sim.realtime import RealTimeScheduler

B_IP = "198.18.0.2"


def fast_link() -> Impairments:
    return Impairments(rate_bps=1_000_000_000, delay_ns=100_000)


def test_echo_and_discard_servers() -> None:
    s = SimScheduler(seed=11)
    a, b, _ = connected_pair(s, fast_link(), fast_link())
    echo = echo_server(b, 7)
    discard = discard_server(b, 9)

    async def client() -> tuple[bytes, int]:
        r, w = await open_connection(a, B_IP, 7)
        w.write(b"line one\n")
        w.write(b"line two\n")
        await w.drain()
        first = await r.readline()
        rest = await r.readexactly(9)
        w.close()
        d = a.socket()
        await d.aconnect((B_IP, 9))
        await d.asendall(b"\0" * 100_000)
        d.close()
        return first + rest, 100_000

    echoed, n = run(a, client())
    assert echoed == b"line one\nline two\n"
    s.run_until(s.now + NS_PER_S)
    assert echo.results == [18] and discard.results == [n]


def test_bulk_transfer_of_megabytes_both_ways_matches_sha256() -> None:
    s = SimScheduler(seed=12)
    a, b, _ = connected_pair(s, fast_link(), fast_link())
    up, down = 3_000_000, 2_000_000
    server = bulk_server(b, 9000, down, seed=2)
    res = run(a, bulk_client(a, B_IP, 9000, up, seed=1))
    s.run_until(s.now + NS_PER_S, predicate=lambda: bool(server.results))
    assert res.received == down and res.received_sha256 == bulk_digest(down, 2)
    (srv,) = server.results
    assert srv.received == up and srv.received_sha256 == bulk_digest(up, 1) == res.sent_sha256
    assert srv.sent_sha256 == res.received_sha256


def test_http_get_of_generated_bytes() -> None:
    s = SimScheduler(seed=13)
    a, b, _ = connected_pair(s, fast_link(), fast_link())
    server = HttpServer(b, 80).start()
    (resp,) = run(a, http_get(a, B_IP, 80, "/bytes/100000"))
    assert resp.status == 200 and resp.headers["content-length"] == "100000"
    assert resp.body == http_bytes(100000)
    assert hashlib.sha256(resp.body).hexdigest() == hashlib.sha256(bytes(range(256)) * 390 + bytes(range(160))).hexdigest()
    assert server.requests == 1 and server.responses == {200: 1}


def test_http_files_keepalive_404_and_traversal(tmp_path: Path) -> None:
    s = SimScheduler(seed=14)
    a, b, _ = connected_pair(s, fast_link(), fast_link())
    root = tmp_path / "www"
    root.mkdir()
    (root / "index.html").write_bytes(b"<h1>chimney</h1>\n")
    (root / "data.txt").write_bytes(b"some text\n" * 500)
    (tmp_path / "secret").write_bytes(b"not served")
    server = HttpServer(b, 8080, root).start()
    three = run(a, http_get(a, B_IP, 8080, "/data.txt", keep_alive_requests=3))
    assert [r.status for r in three] == [200, 200, 200]
    assert all(r.body == b"some text\n" * 500 and r.headers["content-type"] == "text/plain" for r in three)
    assert server.accepted == 1 and server.requests == 3  # one connection, three requests
    (index,) = run(a, http_get(a, B_IP, 8080, "/"))
    assert index.body == b"<h1>chimney</h1>\n"
    (missing,) = run(a, http_get(a, B_IP, 8080, "/nope.txt"))
    (escape,) = run(a, http_get(a, B_IP, 8080, "/../secret"))
    assert missing.status == 404 and escape.status == 404


def test_http_head_and_bad_method_over_raw_streams() -> None:
    s = SimScheduler(seed=15)
    a, b, _ = connected_pair(s, fast_link(), fast_link())
    HttpServer(b, 80).start()

    async def client() -> tuple[bytes, bytes]:
        r, w = await open_connection(a, B_IP, 80)
        w.write(b"HEAD /bytes/5000 HTTP/1.1\r\nHost: b\r\n\r\n")
        await w.drain()
        head = await r.readuntil(b"\r\n\r\n")
        w.write(b"DELETE /x HTTP/1.1\r\nHost: b\r\nConnection: close\r\n\r\n")
        await w.drain()
        rest = await r.read()
        return head, rest

    head, rest = run(a, client())
    assert head.startswith(b"HTTP/1.1 200 OK\r\n") and b"Content-Length: 5000\r\n" in head
    assert rest.startswith(b"HTTP/1.1 405 ") and rest.endswith(b"only GET and HEAD\n")  # no HEAD body before it


def test_streams_start_server_adapter() -> None:
    s = SimScheduler(seed=16)
    a, b, _ = connected_pair(s, fast_link(), fast_link())

    async def upper(reader: StreamReader, writer: StreamWriter) -> None:
        line = await reader.readline()
        writer.write(line.upper())
        await writer.drain()

    async def main() -> bytes:
        await start_server(b, upper, 1234)
        r, w = await open_connection(a, B_IP, 1234)
        w.write(b"shout this\n")
        await w.drain()
        out = await r.read()
        w.close()
        return out

    assert run(a, main()) == b"SHOUT THIS\n"


def test_blocking_echo_in_real_time() -> None:
    with RealTimeScheduler(seed=1) as rt:
        a, b, _ = connected_pair(rt, Impairments(delay_ns=200_000), Impairments(delay_ns=200_000), settle_ns=0)
        echo_server(b, 7)
        c = a.socket()
        c.settimeout(5.0)
        c.connect((B_IP, 7))
        c.sendall(b"real time")
        got = b""
        while len(got) < 9:
            got += c.recv(100)
        assert got == b"real time"
        c.close()
