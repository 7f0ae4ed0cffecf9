"""Small servers and clients on the host sockets API for demos and tests: echo, discard, seeded bulk
transfer with sha256 on both ends, a minimal HTTP/1.1 server/client, and asyncio-style streams.

Everything is a `chimney.sim.tasks` coroutine, so it runs on the simulated and the real-time scheduler:
`HttpServer(stack, 80, root).start()` then `stack.scheduler.run_until(...)`.
"""

from __future__ import annotations

import hashlib
import os
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from chimney.host.socket import SHUT_WR, Socket
from chimney.host.stack import HostStack
from chimney.sim.tasks import CancelledError, SimFuture, Task, spawn

CHUNK = 65536

# -- asyncio-streams-style adapter ------------------------------------------------------------------


class IncompleteReadError(EOFError):
    """readexactly/readuntil hit EOF first; `partial` holds what was read (as asyncio's)."""

    def __init__(self, partial: bytes, expected: int | None) -> None:
        super().__init__(f"{len(partial)} bytes read, {expected if expected is not None else 'more'} expected")
        self.partial = partial
        self.expected = expected


class LimitOverrunError(Exception):
    def __init__(self, message: str, consumed: int) -> None:
        super().__init__(message)
        self.consumed = consumed


class StreamReader:
    """Buffered reads on a socket inside a task: `read`, `readexactly`, `readuntil`, `readline`."""

    def __init__(self, sock: Socket, limit: int = 1 << 16, timeout_ns: int | None = None) -> None:
        self.sock = sock
        self.limit = limit
        self.timeout_ns = timeout_ns
        self._buf = bytearray()
        self._eof = False

    def at_eof(self) -> bool:
        return self._eof and not self._buf

    async def _fill(self) -> bool:
        if self._eof:
            return False
        data = await self.sock.arecv_view(max(self.limit, CHUNK), self.timeout_ns)
        if not data:
            self._eof = True
            return False
        self._buf += data
        return True

    async def read(self, n: int = -1) -> bytes:
        if n == 0:
            return b""
        if n < 0:
            while await self._fill():
                pass
            out = bytes(self._buf)
            self._buf.clear()
            return out
        if not self._buf:
            await self._fill()
        out = bytes(self._buf[:n])
        del self._buf[:n]
        return out

    async def readexactly(self, n: int) -> bytes:
        while len(self._buf) < n:
            if not await self._fill():
                partial = bytes(self._buf)
                self._buf.clear()
                raise IncompleteReadError(partial, n)
        out = bytes(self._buf[:n])
        del self._buf[:n]
        return out

    async def readuntil(self, separator: bytes = b"\n") -> bytes:
        start = 0
        while True:
            i = self._buf.find(separator, start)
            if i >= 0:
                end = i + len(separator)
                out = bytes(self._buf[:end])
                del self._buf[:end]
                return out
            if len(self._buf) > self.limit:
                raise LimitOverrunError("separator not found within the limit", len(self._buf))
            start = max(0, len(self._buf) - len(separator) + 1)
            if not await self._fill():
                partial = bytes(self._buf)
                self._buf.clear()
                raise IncompleteReadError(partial, None)

    async def readline(self) -> bytes:
        try:
            return await self.readuntil(b"\n")
        except IncompleteReadError as e:
            return e.partial


class StreamWriter:
    """Buffered writes: `write` queues, `drain` sends everything queued, `close` closes the socket."""

    def __init__(self, sock: Socket, timeout_ns: int | None = None) -> None:
        self.sock = sock
        self.timeout_ns = timeout_ns
        self._pending: list[bytes] = []

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self._pending.append(bytes(data))

    def writelines(self, lines: list[bytes]) -> None:
        for line in lines:
            self.write(line)

    async def drain(self) -> None:
        pending, self._pending = self._pending, []
        for data in pending:
            await self.sock.asendall(data, self.timeout_ns)

    def write_eof(self) -> None:
        self.sock.shutdown(SHUT_WR)

    def can_write_eof(self) -> bool:
        return True

    def close(self) -> None:
        self.sock.close()

    async def wait_closed(self) -> None:
        return None

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        if name == "peername":
            return self.sock.getpeername()
        if name == "sockname":
            return self.sock.getsockname()
        if name == "socket":
            return self.sock
        return default


async def open_connection(
    stack: HostStack, host: str, port: int, *, timeout_ns: int | None = None
) -> tuple[StreamReader, StreamWriter]:
    sock = stack.socket()
    await sock.aconnect((host, port), timeout_ns)
    return StreamReader(sock, timeout_ns=timeout_ns), StreamWriter(sock, timeout_ns)


Handler = Callable[[Socket], Awaitable[Any]]


class Server:
    """A listening socket and an accept loop spawning one task per connection running `handler`."""

    def __init__(self, stack: HostStack, port: int, handler: Handler, *, backlog: int = 128, address: str = "") -> None:
        self.stack = stack
        self.port = port
        self.handler = handler
        self.backlog = backlog
        self.address = address
        self.sock: Socket | None = None
        self.task: Task[None] | None = None
        self.accepted = 0
        self.finished = 0
        self.errors: list[BaseException] = []
        self.results: list[Any] = []
        self.tasks: list[Task[Any]] = []

    def start(self) -> Server:
        self.sock = self.stack.listen(self.port, self.backlog, address=self.address)
        self.port = self.sock.getsockname()[1]
        self.task = spawn(self.stack.scheduler, self._serve(), name=f"server:{self.port}")
        return self

    async def _serve(self) -> None:
        assert self.sock is not None
        while True:
            try:
                conn, _ = await self.sock.aaccept()
            except CancelledError:
                return
            except OSError:
                return  # listener closed
            self.accepted += 1
            t = spawn(self.stack.scheduler, self._run(conn), name=f"conn:{self.port}")
            self.tasks.append(t)

    async def _run(self, conn: Socket) -> None:
        try:
            self.results.append(await self.handler(conn))
        except Exception as e:  # a handler failing ends its connection, never the server
            self.errors.append(e)
            conn.abort()
        else:
            conn.close()
        finally:
            self.finished += 1

    def close(self) -> None:
        if self.task is not None:
            self.task.cancel()
        if self.sock is not None:
            self.sock.close()


async def start_server(
    stack: HostStack, client_connected_cb: Callable[[StreamReader, StreamWriter], Awaitable[Any]], port: int,
    *, backlog: int = 128,
) -> Server:
    """asyncio.start_server look-alike: `cb(reader, writer)` per connection."""

    async def handler(sock: Socket) -> Any:
        return await client_connected_cb(StreamReader(sock), StreamWriter(sock))

    return Server(stack, port, handler, backlog=backlog).start()


# -- echo / discard -----------------------------------------------------------------------------------


async def echo_handler(sock: Socket) -> int:
    """Echo until EOF; returns the number of bytes echoed."""
    total = 0
    while True:
        data = await sock.arecv_view(CHUNK)
        if not data:
            return total
        await sock.asendall(bytes(data))
        total += len(data)


async def discard_handler(sock: Socket) -> int:
    total = 0
    while True:
        data = await sock.arecv_view(1 << 20)
        if not data:
            return total
        total += len(data)


def echo_server(stack: HostStack, port: int = 7, backlog: int = 128) -> Server:
    return Server(stack, port, echo_handler, backlog=backlog).start()


def discard_server(stack: HostStack, port: int = 9, backlog: int = 128) -> Server:
    return Server(stack, port, discard_handler, backlog=backlog).start()


# -- seeded bulk transfer -----------------------------------------------------------------------------


def bulk_chunks(nbytes: int, seed: int, chunk: int = CHUNK) -> list[bytes]:
    """The deterministic byte stream of a bulk transfer, as chunks (seeded `random.Random`)."""
    rng = random.Random(seed)
    out = []
    left = nbytes
    while left > 0:
        k = chunk if chunk < left else left
        out.append(rng.randbytes(k))
        left -= k
    return out


def bulk_digest(nbytes: int, seed: int) -> str:
    h = hashlib.sha256()
    for c in bulk_chunks(nbytes, seed):
        h.update(c)
    return h.hexdigest()


@dataclass
class BulkResult:
    sent: int = 0
    sent_sha256: str = ""
    received: int = 0
    received_sha256: str = ""
    errors: list[str] = field(default_factory=list)


async def bulk_send(sock: Socket, nbytes: int, seed: int, *, shutdown: bool = True) -> str:
    """Send `nbytes` of the seeded stream, then half-close; returns the sha256 of what was sent."""
    h = hashlib.sha256()
    rng = random.Random(seed)
    left = nbytes
    while left > 0:
        k = CHUNK if left > CHUNK else left
        c = rng.randbytes(k)  # generated as sent: memory stays flat for large transfers
        h.update(c)
        await sock.asendall(c)
        left -= k
    if shutdown:
        sock.shutdown(SHUT_WR)
    return h.hexdigest()


async def bulk_receive(sock: Socket) -> tuple[int, str]:
    """Read to EOF; returns (bytes, sha256)."""
    h = hashlib.sha256()
    n = 0
    while True:
        data = await sock.arecv_view(1 << 20)
        if not data:
            return n, h.hexdigest()
        h.update(data)
        n += len(data)


async def bulk_exchange(sock: Socket, send_bytes: int, seed: int) -> BulkResult:
    """Send `send_bytes` (seeded) while receiving to EOF, both at once; sha256 on both streams."""
    res = BulkResult(sent=send_bytes)
    sender = spawn(sock.scheduler, bulk_send(sock, send_bytes, seed), name="bulk-send")
    res.received, res.received_sha256 = await bulk_receive(sock)
    res.sent_sha256 = await sender
    return res


def bulk_server(stack: HostStack, port: int, send_bytes: int, seed: int, backlog: int = 128) -> Server:
    """Per connection: exchange `send_bytes` seeded bytes each way; `server.results` holds BulkResults."""

    async def handler(sock: Socket) -> BulkResult:
        return await bulk_exchange(sock, send_bytes, seed)

    return Server(stack, port, handler, backlog=backlog).start()


async def bulk_client(stack: HostStack, host: str, port: int, send_bytes: int, seed: int) -> BulkResult:
    sock = stack.socket()
    await sock.aconnect((host, port))
    try:
        return await bulk_exchange(sock, send_bytes, seed)
    finally:
        sock.close()


# -- minimal HTTP/1.1 ---------------------------------------------------------------------------------

_REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed",
            413: "Payload Too Large", 431: "Request Header Fields Too Large", 505: "HTTP Version Not Supported"}
_TYPES = {".html": "text/html", ".txt": "text/plain", ".json": "application/json", ".css": "text/css",
          ".js": "application/javascript", ".png": "image/png", ".jpg": "image/jpeg"}
_PATTERN = bytes(range(256)) * 256  # 64 KiB; /bytes/N serves this pattern, cut to N bytes
MAX_GENERATED = 1 << 34


def http_bytes(n: int) -> bytes:
    """The body of GET /bytes/N (the repeating 0..255 pattern)."""
    full, rest = divmod(n, len(_PATTERN))
    return _PATTERN * full + _PATTERN[:rest]


class HttpServer(Server):
    """GET/HEAD of files under `root` and of `/bytes/N` (N generated bytes), HTTP/1.1 keep-alive,
    exact Content-Length. Enough for curl and wrk; not a general web server."""

    def __init__(self, stack: HostStack, port: int = 80, root: str | os.PathLike[str] | None = None,
                 *, keep_alive: bool = True, backlog: int = 128) -> None:
        super().__init__(stack, port, self._handle, backlog=backlog)
        self.root = os.path.realpath(root) if root is not None else None
        self.keep_alive = keep_alive
        self.requests = 0
        self.responses: dict[int, int] = {}

    async def _handle(self, sock: Socket) -> int:
        reader = StreamReader(sock, limit=16384)
        writer = StreamWriter(sock)
        served = 0
        while True:
            try:
                head = await reader.readuntil(b"\r\n\r\n")
            except IncompleteReadError:
                return served  # client closed between requests
            except LimitOverrunError:
                await self._respond(writer, 431, b"", close=True)
                return served
            self.requests += 1
            served += 1
            lines = head.decode("latin-1").split("\r\n")
            parts = lines[0].split(" ")
            if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
                await self._respond(writer, 400 if len(parts) != 3 else 505, b"bad request\n", close=True)
                return served
            method, target, version = parts
            headers: dict[str, str] = {}
            for line in lines[1:]:
                if line:
                    k, _, v = line.partition(":")
                    headers[k.strip().lower()] = v.strip()
            conn_hdr = headers.get("connection", "").lower()
            keep = self.keep_alive and (
                conn_hdr == "keep-alive" if version == "HTTP/1.0" else conn_hdr != "close"
            )
            length = headers.get("content-length")
            if length is not None:
                if not length.isdigit() or int(length) > (1 << 20):
                    await self._respond(writer, 413, b"", close=True)
                    return served
                await reader.readexactly(int(length))  # request bodies are read and ignored
            if method not in ("GET", "HEAD"):
                await self._respond(writer, 405, b"only GET and HEAD\n", close=not keep, extra=["Allow: GET, HEAD"])
            else:
                await self._get(writer, target.split("?", 1)[0], head_only=method == "HEAD", close=not keep)
            if not keep:
                return served

    async def _get(self, writer: StreamWriter, path: str, *, head_only: bool, close: bool) -> None:
        if path.startswith("/bytes/"):
            arg = path[len("/bytes/"):]
            if not arg.isdigit() or int(arg) > MAX_GENERATED:
                await self._respond(writer, 400, b"bad length\n", close=close)
                return
            n = int(arg)
            await self._respond(writer, 200, None, close=close, length=n, ctype="application/octet-stream")
            if not head_only:
                sock = writer.sock
                left = n
                while left > 0:
                    k = min(left, len(_PATTERN))
                    await sock.asendall(_PATTERN[:k] if k < len(_PATTERN) else _PATTERN)
                    left -= k
            return
        body = self._file(path)
        if body is None:
            await self._respond(writer, 404, b"not found\n", close=close)
            return
        ext = os.path.splitext(path)[1].lower()
        await self._respond(writer, 200, b"" if head_only else body, close=close, length=len(body),
                            ctype=_TYPES.get(ext, "application/octet-stream"))

    def _file(self, path: str) -> bytes | None:
        if self.root is None:
            return None
        rel = path.lstrip("/")
        full = os.path.realpath(os.path.join(self.root, rel))
        if full != self.root and not full.startswith(self.root + os.sep):
            return None  # outside the served directory
        if os.path.isdir(full):
            full = os.path.join(full, "index.html")
        if not os.path.isfile(full):
            return None
        with open(full, "rb") as f:
            return f.read()

    async def _respond(self, writer: StreamWriter, status: int, body: bytes | None, *, close: bool,
                       length: int | None = None, ctype: str = "text/plain", extra: list[str] | None = None) -> None:
        self.responses[status] = self.responses.get(status, 0) + 1
        n = length if length is not None else len(body or b"")
        hdr = [f"HTTP/1.1 {status} {_REASONS.get(status, 'Error')}", "Server: chimney",
               f"Content-Type: {ctype}", f"Content-Length: {n}"]
        hdr.append("Connection: close" if close else "Connection: keep-alive")
        hdr.extend(extra or [])
        writer.write(("\r\n".join(hdr) + "\r\n\r\n").encode("latin-1"))
        if body:
            writer.write(body)
        await writer.drain()


@dataclass
class HttpResponse:
    status: int
    reason: str
    headers: dict[str, str]
    body: bytes


async def http_get(stack: HostStack, host: str, port: int, path: str, *, timeout_ns: int | None = None,
                   keep_alive_requests: int = 1) -> list[HttpResponse]:
    """GET `path` `keep_alive_requests` times on one connection; checks Content-Length framing."""
    reader, writer = await open_connection(stack, host, port, timeout_ns=timeout_ns)
    out = []
    try:
        for i in range(keep_alive_requests):
            last = i == keep_alive_requests - 1
            writer.write(f"GET {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: chimney\r\n"
                         f"Connection: {'close' if last else 'keep-alive'}\r\n\r\n".encode())
            await writer.drain()
            head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
            _, status, reason = head[0].split(" ", 2)
            headers = {}
            for line in head[1:]:
                if line:
                    k, _, v = line.partition(":")
                    headers[k.strip().lower()] = v.strip()
            body = await reader.readexactly(int(headers.get("content-length", "0")))
            out.append(HttpResponse(int(status), reason, headers, body))
    finally:
        writer.close()
    return out


def run(stack: HostStack, aw: Awaitable[Any] | SimFuture[Any], until_ns: int | None = None) -> Any:
    """Run the stack's scheduler until `aw` (a coroutine or future) is done; return its result."""
    fut = aw if isinstance(aw, SimFuture) else spawn(stack.scheduler, aw)  # type: ignore[arg-type]
    why = stack.scheduler.run_until(until=until_ns, predicate=fut.done)
    if not fut.done():
        raise TimeoutError(f"not done: scheduler stopped ({why})")
    return fut.result()


__all__ = [
    "BulkResult",
    "HttpResponse",
    "HttpServer",
    "IncompleteReadError",
    "LimitOverrunError",
    "Server",
    "StreamReader",
    "StreamWriter",
    "bulk_chunks",
    "bulk_client",
    "bulk_digest",
    "bulk_exchange",
    "bulk_receive",
    "bulk_send",
    "bulk_server",
    "discard_handler",
    "discard_server",
    "echo_handler",
    "echo_server",
    "http_bytes",
    "http_get",
    "open_connection",
    "run",
    "start_server",
]
