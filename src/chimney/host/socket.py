"""The host stack's sockets API: `Socket` over the TCP transport, with explicit errno semantics.

Three ways to wait: non-blocking (`BlockingIOError`/EAGAIN, EINPROGRESS), blocking with a timeout
(drives the scheduler until ready: real time or, outside tasks, the simulation) and `await sock.aXxx()`
inside `chimney.sim.tasks` coroutines. Every error is an `OSError` whose `.errno` a syscall-level
runner can map directly (EAGAIN, ECONNRESET, ECONNREFUSED, ETIMEDOUT, EPIPE, ENOTCONN, EINPROGRESS,
EALREADY, EISCONN, EADDRINUSE, EBADF, EINVAL); option and poll constants use Linux's numbers.

Syscall -> method (for a packetdrill-style runner; errors are `OSError.errno`):
    socket()            stack.socket()             bind/listen      bind((ip, port)) / listen(backlog)
    accept()            accept() -> (Socket, addr) connect()        connect(addr) / connect_ex(addr) -> errno
    write/send          send(data) -> n            read/recv        recv(n) / recv_into(buf)
    shutdown(how)       shutdown(SHUT_RD|WR|RDWR)  close()          close()
    setsockopt          setsockopt(level, opt, v)  getsockopt       getsockopt(level, opt) (SO_ERROR clears)
    fcntl O_NONBLOCK    setblocking(False)         poll()           poll(events) -> revents (Linux tcp_poll)
Differences from Linux (unless TcpConfig.linux_sockopts, e.g. linux_profile(linux_sockopts=True)):
SO_RCVBUF/SO_SNDBUF are not doubled; TCP_MAXSEG reads our MSS before a connection exists. SO_LINGER only
distinguishes {1, 0} (reset on close) from the default; TCP_MAXSEG bounds the MSS we advertise (and send
with, if snd_mss_clamp). With nodelay_pushes, setting TCP_NODELAY sends what Nagle held at once (Linux
tcp_push_pending_frames).
"""

from __future__ import annotations

import errno
import ipaddress
import os
from collections.abc import Callable
from typing import Any, TypeVar

from chimney.host.tcp import HostListener, Tcb, TcpTransport
from chimney.ndis.offload_state import TcpConnectionState
from chimney.sim.scheduler import NS_PER_MS, NS_PER_S
from chimney.sim.tasks import SimFuture
from chimney.tcp import TcpConfig
from chimney.tcp.events import Event

T = TypeVar("T")

# Linux <sys/socket.h>, <netinet/tcp.h>, <poll.h> values, so a syscall runner can pass them through.
SOL_SOCKET = 1
SO_REUSEADDR = 2
SO_ERROR = 4
SO_SNDBUF = 7
SO_RCVBUF = 8
SO_KEEPALIVE = 9
SO_LINGER = 13
IPPROTO_TCP = 6
TCP_NODELAY = 1
LINUX_BUF_MAX = 212_992  # net.core.rmem_max / wmem_max defaults
LINUX_MIN_RCVBUF = 2304  # SOCK_MIN_RCVBUF (2048 + struct sk_buff), as a 64-bit Linux reports it
LINUX_MIN_SNDBUF = 2 * LINUX_MIN_RCVBUF
LINUX_MSS_DEFAULT = 536  # TCP_MSS_DEFAULT: getsockopt(TCP_MAXSEG) before a connection exists
TCP_MAXSEG = 2
TCP_KEEPIDLE = 4
TCP_KEEPINTVL = 5
TCP_KEEPCNT = 6
TCP_USER_TIMEOUT = 18
TCP_LINGER2 = 8  # FIN_WAIT_2 timeout of this socket, seconds (0: the system's tcp_fin_timeout)
SHUT_RD = 0
SHUT_WR = 1
SHUT_RDWR = 2
POLLIN = 0x001
POLLPRI = 0x002
POLLOUT = 0x004
POLLERR = 0x008
POLLHUP = 0x010
POLLNVAL = 0x020
POLLRDHUP = 0x2000
POLL_ALL = POLLIN | POLLPRI | POLLOUT | POLLERR | POLLHUP | POLLNVAL | POLLRDHUP

_SEND_STATES = (TcpConnectionState.Established, TcpConnectionState.CloseWait)
# States entered by processing the peer's FIN (RFC 9293 3.10.7.4 eighth step).
_PEER_FIN_STATES = (
    TcpConnectionState.CloseWait,
    TcpConnectionState.LastAck,
    TcpConnectionState.Closing,
    TcpConnectionState.TimeWait,
)
Address = tuple[str, int]


def oserror(code: int, what: str = "") -> OSError:
    """`OSError(code)`; Python picks the subclass (ConnectionResetError, BlockingIOError, ...)."""
    msg = os.strerror(code)
    return OSError(code, f"{msg} ({what})" if what else msg)


_EAGAIN_MSG = os.strerror(errno.EAGAIN)


def _would_block() -> BlockingIOError:
    return BlockingIOError(errno.EAGAIN, _EAGAIN_MSG)


def _ip(addr: str | bytes | None) -> bytes | None:
    if addr is None or addr in ("", "0.0.0.0", "::", b""):
        return None
    if isinstance(addr, bytes):
        if len(addr) not in (4, 16):
            raise oserror(errno.EINVAL, f"bad address {addr!r}")
        return addr
    try:
        return ipaddress.ip_address(addr).packed
    except ValueError:
        raise oserror(errno.EINVAL, f"bad address {addr!r}") from None


def _fmt(ip: bytes) -> str:
    return str(ipaddress.ip_address(ip))


class Socket:
    """A TCP socket on a `TcpTransport`. Blocking by default (`settimeout(None)`); `setblocking(False)`
    makes calls raise `BlockingIOError` instead of waiting. The `a*` coroutines always wait."""

    # One per connection end: slots keep an idle socket at ~150 B (an instance dict costs ~65 B more).
    # A new attribute needs its name here.
    __slots__ = (
        "_bound",
        "_cfg_changes",
        "_closed",
        "_err_reported",
        "_linger",
        "_listener",
        "_maxseg",
        "_reuseaddr",
        "_shut_rd",
        "_shut_wr",
        "_tcb",
        "_timeout",
        "_version",
        "_waiters",
        "scheduler",
        "transport",
    )

    def __init__(self, transport: TcpTransport) -> None:
        self.transport = transport
        self.scheduler = transport.scheduler
        self._tcb: Tcb | None = None
        self._listener: HostListener | None = None
        self._bound: tuple[bytes | None, int] | None = None
        self._cfg_changes: dict[str, Any] | None = None  # a dict from the first config option (memory)
        self._maxseg: int | None = None
        self._linger: tuple[int, int] = (0, 0)
        self._reuseaddr = 0
        self._timeout: float | None = None
        self._waiters: list[SimFuture[None]] | None = None  # a list while a call waits (memory)
        self._version = 0
        self._shut_rd = False
        self._shut_wr = False
        self._closed = False
        self._err_reported = False

    @classmethod
    def _adopt(cls, transport: TcpTransport, tcb: Tcb) -> Socket:
        s = cls(transport)
        s._tcb = tcb
        tcb.owner = s
        return s

    def __repr__(self) -> str:
        if self._listener is not None:
            return f"<Socket listening :{self._listener.port}>"
        if self._tcb is not None:
            return f"<Socket {self._tcb!r}>"
        return "<Socket closed>" if self._closed else "<Socket unconnected>"

    # -- the TCB (the chimney's handle on this connection) ----------------------------------------

    @property
    def tcb(self) -> Tcb | None:
        return self._tcb

    @property
    def listener(self) -> HostListener | None:
        return self._listener

    # -- wake-ups from the transport --------------------------------------------------------------

    def on_tcb_events(self, tcb: Tcb, events: list[Event]) -> None:
        self._wake()

    def on_listener_ready(self, listener: HostListener) -> None:
        self._wake()

    def _wake(self) -> None:
        self._version += 1
        if self._waiters:
            ws, self._waiters = self._waiters, None
            for f in ws:
                if not f.done():
                    f.set_result(None)

    # -- blocking mode ----------------------------------------------------------------------------

    def setblocking(self, flag: bool) -> None:
        self._timeout = None if flag else 0.0

    def getblocking(self) -> bool:
        return self._timeout != 0.0

    def settimeout(self, seconds: float | None) -> None:
        if seconds is not None and seconds < 0:
            raise ValueError("timeout must be non-negative or None")
        self._timeout = seconds

    def gettimeout(self) -> float | None:
        return self._timeout

    def _block(self, attempt: Callable[[], T]) -> T:
        """Try; if it would block and we are blocking, drive the scheduler until it can proceed."""
        try:
            return attempt()
        except BlockingIOError:
            if self._timeout == 0.0:
                raise
        sched = self.scheduler
        deadline = None if self._timeout is None else sched.now + int(self._timeout * NS_PER_S)
        while True:
            v = self._version
            if deadline is not None and sched.now >= deadline:
                raise TimeoutError(errno.ETIMEDOUT, "timed out")
            why = sched.run_until(until=deadline, predicate=lambda v=v: self._version != v)  # type: ignore[misc]
            try:
                return attempt()
            except BlockingIOError:
                if why == "predicate":
                    continue
                if why == "time":
                    raise TimeoutError(errno.ETIMEDOUT, "timed out") from None
                raise TimeoutError(errno.ETIMEDOUT, f"would block forever (scheduler {why})") from None

    async def _async(self, attempt: Callable[[], T], timeout_ns: int | None) -> T:
        sched = self.scheduler
        deadline = None if timeout_ns is None else sched.now + timeout_ns
        while True:
            try:
                return attempt()
            except BlockingIOError:
                pass
            if deadline is not None and sched.now >= deadline:
                raise TimeoutError(errno.ETIMEDOUT, "timed out")
            fut: SimFuture[None] = SimFuture()
            if self._waiters is None:
                self._waiters = []
            self._waiters.append(fut)
            timer = None if deadline is None else sched.call_at(deadline, _resolve, fut, label="socket timeout")
            try:
                await fut
            finally:
                if timer is not None:
                    timer.cancel()

    # -- addresses --------------------------------------------------------------------------------

    def bind(self, addr: Address | tuple[str | bytes, int]) -> None:
        self._check_open()
        if self._bound is not None or self._tcb is not None:
            raise oserror(errno.EINVAL, "already bound")
        ip, port = addr
        local = _ip(ip)
        if local is not None and not self.transport.ip.is_local(local):
            raise oserror(errno.EADDRNOTAVAIL, f"{ip} is not a local address")
        if not 0 <= port < 65536:
            raise oserror(errno.EINVAL, f"bad port {port}")
        if port and ((local, port) in self.transport.listeners or (None, port) in self.transport.listeners):
            raise oserror(errno.EADDRINUSE, f"port {port}")
        self._bound = (local, port)

    def getsockname(self) -> Address:
        if self._tcb is not None:
            return (_fmt(self._tcb.local), self._tcb.local_port)
        if self._listener is not None:
            lst = self._listener
            return (_fmt(lst.local) if lst.local else "0.0.0.0", lst.port)
        if self._bound is not None:
            ip, port = self._bound
            return (_fmt(ip) if ip else "0.0.0.0", port)
        return ("0.0.0.0", 0)

    def getpeername(self) -> Address:
        tcb = self._tcb
        if tcb is None or (tcb.closed and not tcb.established):
            raise oserror(errno.ENOTCONN)
        return (_fmt(tcb.remote), tcb.remote_port)

    # -- passive open -----------------------------------------------------------------------------

    def _cfg(self) -> TcpConfig:
        base = self.transport.config
        return base.replace(**self._cfg_changes) if self._cfg_changes else base

    def listen(self, backlog: int = 128) -> None:
        """LISTEN on the bound port (bind first, or the transport picks an ephemeral port)."""
        self._check_open()
        if self._tcb is not None:
            raise oserror(errno.EINVAL, "connected socket cannot listen")
        if self._listener is not None:
            self._listener.backlog = backlog
            return
        local, port = self._bound if self._bound is not None else (None, 0)
        self._listener = self.transport.listen(port, backlog, local=local, cfg=self._cfg(), maxseg=self._maxseg,
                                               owner=self)

    def _try_accept(self) -> tuple[Socket, Address]:
        self._check_open()
        lst = self._listener
        if lst is None:
            raise oserror(errno.EINVAL, "not listening")
        tcb = lst.accept()
        if tcb is None:
            raise _would_block()
        s = Socket._adopt(self.transport, tcb)
        s._cfg_changes = self._cfg_changes  # options set on the listener are the child's (Linux inherits them)
        return s, (_fmt(tcb.remote), tcb.remote_port)

    def accept(self) -> tuple[Socket, Address]:
        return self._block(self._try_accept)

    async def aaccept(self, timeout_ns: int | None = None) -> tuple[Socket, Address]:
        return await self._async(self._try_accept, timeout_ns)

    # -- active open ------------------------------------------------------------------------------

    def _start_connect(self, addr: tuple[str | bytes, int]) -> bool:
        """Send the SYN; False when a connect is already under way (or done) on this socket."""
        self._check_open()
        if self._listener is not None:
            raise oserror(errno.EINVAL, "listening socket cannot connect")
        if self._tcb is not None:
            return False
        ip, port = addr
        remote = _ip(ip)
        if remote is None:
            raise oserror(errno.EINVAL, f"bad address {ip!r}")
        local, lport = self._bound if self._bound is not None else (None, 0)
        self._tcb = self.transport.connect(remote, port, local=local, local_port=lport, cfg=self._cfg(),
                                           maxseg=self._maxseg, owner=self)
        return True

    def _connect_done(self) -> None:
        tcb = self._tcb
        assert tcb is not None
        err = self._take_error()
        if err:
            raise oserror(err, "connect")
        if tcb.established:
            return
        if tcb.closed:
            raise oserror(errno.ECONNABORTED, "connect")
        raise _would_block()

    def connect(self, addr: tuple[str | bytes, int]) -> None:
        started = self._start_connect(addr)
        tcb = self._tcb
        assert tcb is not None
        if not started:
            if tcb.established and not self._take_error():
                raise oserror(errno.EISCONN)
            if not tcb.established and not tcb.closed and self._timeout == 0.0:
                raise oserror(errno.EALREADY)
        elif self._timeout == 0.0:
            raise BlockingIOError(errno.EINPROGRESS, os.strerror(errno.EINPROGRESS))
        self._block(self._connect_done)

    def connect_ex(self, addr: tuple[str | bytes, int]) -> int:
        """connect() returning the errno instead of raising (0 on success, EINPROGRESS non-blocking)."""
        try:
            self.connect(addr)
        except OSError as e:
            return e.errno if e.errno is not None else errno.ETIMEDOUT
        return 0

    async def aconnect(self, addr: tuple[str | bytes, int], timeout_ns: int | None = None) -> None:
        self._start_connect(addr)
        await self._async(self._connect_done, timeout_ns)

    # -- data -------------------------------------------------------------------------------------

    def _take_error(self) -> int:
        """The pending fatal error, reported once (like Linux sk_err / SO_ERROR)."""
        tcb = self._tcb
        if tcb is not None and tcb.error and not self._err_reported:
            self._err_reported = True
            return tcb.error
        return 0

    def _connected_tcb(self) -> Tcb:
        self._check_open()
        tcb = self._tcb
        if tcb is None:
            raise oserror(errno.ENOTCONN)
        return tcb

    def _try_send(self, data: bytes | bytearray | memoryview) -> int:
        tcb = self._connected_tcb()
        err = self._take_error()
        if err:
            raise oserror(err, "send")
        if self._shut_wr or tcb.closed or tcb.error:
            raise oserror(errno.EPIPE)
        if not tcb.established:
            raise _would_block()  # still connecting: Linux waits for the handshake
        path = tcb.path
        if path.state not in _SEND_STATES:
            raise oserror(errno.EPIPE)
        space = path.send_space
        if space <= 0:
            path.want_send_space()  # type: ignore[attr-defined]
            raise _would_block()
        if type(data) is not bytes:
            # The engine keeps views of what it is given until acknowledged: a view of immutable bytes is
            # kept as it is; a mutable buffer is copied, since the caller may reuse it after send returns.
            mv = data if type(data) is memoryview else memoryview(data)
            if mv.ndim != 1 or mv.itemsize != 1:
                mv = mv.cast("B")
            if type(mv.obj) is not bytes:
                data = bytes(mv[:space])
            elif len(mv) > space:
                data = mv[:space]
            else:
                data = mv
        n = path.send(data)
        if n == 0:
            raise _would_block()
        return n

    def send(self, data: bytes | bytearray | memoryview) -> int:
        return self._block(lambda: self._try_send(data))

    def sendall(self, data: bytes | bytearray | memoryview) -> None:
        mv = memoryview(data if type(data) is bytes else bytes(data)).cast("B")
        off = 0
        total = len(mv)
        while off < total:
            chunk = mv[off:]
            off += self._block(lambda c=chunk: self._try_send(c))  # type: ignore[misc]

    async def asend(self, data: bytes | bytearray | memoryview, timeout_ns: int | None = None) -> int:
        return await self._async(lambda: self._try_send(data), timeout_ns)

    async def asendall(self, data: bytes | bytearray | memoryview, timeout_ns: int | None = None) -> None:
        mv = memoryview(data if type(data) is bytes else bytes(data)).cast("B")
        off = 0
        total = len(mv)
        while off < total:
            chunk = mv[off:]
            off += await self._async(lambda c=chunk: self._try_send(c), timeout_ns)  # type: ignore[misc]

    def _try_recv_view(self, n: int, view: bool = False) -> memoryview | bytes:
        tcb = self._connected_tcb()
        path = tcb.path
        if n < 0:
            raise oserror(errno.EINVAL, "negative length")
        if path.readable:
            if not n:
                return b""
            # view: a short read of one received segment/run rather than a join of several (no copy).
            data = path.recv_view(n) if view else path.recv(n)
            if data:
                return data
            # An offloaded path may count data still buffered at the target that it could not fetch
            # synchronously: that is "no data yet", never EOF.
        if self._shut_rd:
            return b""
        err = self._take_error()
        if err:
            raise oserror(err, "recv")
        if tcb.peer_closed or tcb.closed or tcb.error:
            return b""
        raise _would_block()

    def recv(self, n: int) -> bytes:
        return bytes(self._block(lambda: self._try_recv_view(n)))

    def recv_view(self, n: int) -> memoryview | bytes:
        """Like recv, without copying: a view of received frame bytes (valid while you hold it). It may
        hold fewer than `n` bytes while more are buffered (one received segment or merged run at a time)."""
        return self._block(lambda: self._try_recv_view(n, True))

    def recv_into(self, buffer: bytearray | memoryview, nbytes: int = 0) -> int:
        out = memoryview(buffer).cast("B")
        want = nbytes or len(out)
        data = self._block(lambda: self._try_recv_view(want, True))
        k = len(data)
        out[:k] = data
        # Copy segment by segment straight into the caller's buffer (one copy, as a kernel's recv does)
        # rather than joining them into a new buffer first.
        path = self._tcb.path if self._tcb is not None else None
        while k < want and k and path is not None and path.readable and not self._shut_rd:
            data = path.recv_view(want - k)
            n = len(data)
            if not n:
                break
            out[k : k + n] = data
            k += n
        return k

    async def arecv(self, n: int, timeout_ns: int | None = None) -> bytes:
        return bytes(await self._async(lambda: self._try_recv_view(n), timeout_ns))

    async def arecv_view(self, n: int, timeout_ns: int | None = None) -> memoryview | bytes:
        return await self._async(lambda: self._try_recv_view(n, True), timeout_ns)

    # -- teardown ---------------------------------------------------------------------------------

    def shutdown(self, how: int) -> None:
        tcb = self._connected_tcb()
        if how not in (SHUT_RD, SHUT_WR, SHUT_RDWR):
            raise oserror(errno.EINVAL, f"bad shutdown mode {how}")
        if not tcb.established and tcb.closed:
            raise oserror(errno.ENOTCONN)
        if how in (SHUT_RD, SHUT_RDWR):
            self._shut_rd = True
        if how in (SHUT_WR, SHUT_RDWR) and not self._shut_wr:
            self._shut_wr = True
            if not tcb.closed:
                tcb.path.shutdown()
        self._wake()

    def close(self) -> None:
        """Release the socket. The connection finishes in the background (FIN, TIME-WAIT); with
        SO_LINGER on and a zero timeout it is reset instead (RFC 9293 ABORT)."""
        if self._closed:
            return
        self._closed = True
        if self._listener is not None:
            self._listener.owner = None
            self._listener.close()
        tcb = self._tcb
        # The TCB keeps waking this socket: await_closed() still works after close().
        if tcb is not None and not tcb.closed:
            if self._linger[0] and self._linger[1] == 0:
                tcb.path.abort()
            else:
                tcb.path.close()
        self._wake()

    def abort(self) -> None:
        """Reset the connection now (SO_LINGER {1, 0} + close)."""
        self._linger = (1, 0)
        self.close()

    def _check_open(self) -> None:
        if self._closed:
            raise oserror(errno.EBADF)

    def __enter__(self) -> Socket:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- options ----------------------------------------------------------------------------------

    def setsockopt(self, level: int, option: int, value: Any) -> None:
        self._check_open()
        changes: dict[str, Any]
        if level == IPPROTO_TCP and option == TCP_NODELAY:
            changes = {"nagle": not value}
        elif level == SOL_SOCKET and option == SO_KEEPALIVE:
            changes = {"keepalive": bool(value)}
        elif level == IPPROTO_TCP and option == TCP_KEEPIDLE:
            changes = {"keepalive_idle_ns": _positive(value) * NS_PER_S}
        elif level == IPPROTO_TCP and option == TCP_KEEPINTVL:
            changes = {"keepalive_interval_ns": _positive(value) * NS_PER_S}
        elif level == IPPROTO_TCP and option == TCP_KEEPCNT:
            changes = {"keepalive_count": _positive(value)}
        elif level == IPPROTO_TCP and option == TCP_LINGER2:
            if value < 0:  # Linux: orphaned FIN_WAIT_2 sockets close at once; not modelled
                raise oserror(errno.EINVAL, "negative TCP_LINGER2 is not supported")
            changes = {"fin_wait2_timeout_ns": int(value) * NS_PER_S or self.transport.config.fin_wait2_timeout_ns}
        elif level == IPPROTO_TCP and option == TCP_USER_TIMEOUT:
            if value < 0:
                raise oserror(errno.EINVAL, "negative user timeout")
            changes = {"user_timeout_ns": int(value) * NS_PER_MS}
        elif level == SOL_SOCKET and option in (SO_RCVBUF, SO_SNDBUF):
            name = "rcv_buf" if option == SO_RCVBUF else "snd_buf"
            if self.transport.config.linux_sockopts:
                # Linux sock_setsockopt: min(value, rmem_max/wmem_max), stored doubled (at least the
                # minimum); the engine's buffer is the half the doubling accounts for.
                v = min(max(int(value), 0), LINUX_BUF_MAX)
                floor = LINUX_MIN_RCVBUF if option == SO_RCVBUF else LINUX_MIN_SNDBUF
                changes = {name: max(2 * v, floor) // 2}
            else:
                changes = {name: _positive(value)}
        elif level == IPPROTO_TCP and option == TCP_MAXSEG:
            linux = self.transport.config.linux_sockopts
            if not ((linux and (value == 0 or 88 <= value <= 32767)) or (not linux and 88 <= value <= 65495)):
                raise oserror(errno.EINVAL, f"maxseg {value}")
            self._maxseg = int(value) or None  # applied to the MSS we advertise at connect/listen
            return
        elif level == SOL_SOCKET and option == SO_LINGER:
            onoff, secs = value
            self._linger = (int(bool(onoff)), int(secs))
            return
        elif level == SOL_SOCKET and option == SO_REUSEADDR:
            self._reuseaddr = int(bool(value))  # accepted; ports are never held by TIME-WAIT here
            return
        else:
            raise oserror(errno.ENOPROTOOPT, f"option ({level}, {option})")
        self._cfg_changes = {**(self._cfg_changes or {}), **changes}
        if self._tcb is not None and not self._tcb.closed:
            path = self._tcb.path
            path.configure(**changes)
            conn = self._tcb.conn
            if changes.get("nagle") is False and path.kind == "host" and conn.cfg.nodelay_pushes:
                # Linux tcp_push_pending_frames: what Nagle held goes out now, not with the next write.
                conn.push(self.scheduler.now)
                path.flush()  # type: ignore[attr-defined]
        if self._listener is not None:
            self._listener.cfg = self._cfg()

    def getsockopt(self, level: int, option: int) -> Any:
        self._check_open()
        if level == SOL_SOCKET and option == SO_ERROR:
            return self._take_error()
        if level == SOL_SOCKET and option == SO_LINGER:
            return self._linger
        if level == SOL_SOCKET and option == SO_REUSEADDR:
            return self._reuseaddr
        if level == IPPROTO_TCP and option == TCP_MAXSEG:
            tcb = self._tcb
            if tcb is not None and tcb.established:
                return tcb.conn.snd_mss
            if self._maxseg:
                return self._maxseg
            return LINUX_MSS_DEFAULT if self.transport.config.linux_sockopts else self.transport.config.mss
        cfg = self._tcb.conn.cfg if self._tcb is not None else self._cfg()
        if option in (SO_RCVBUF, SO_SNDBUF) and level == SOL_SOCKET and cfg.linux_sockopts:
            name = "rcv_buf" if option == SO_RCVBUF else "snd_buf"
            v = getattr(cfg, name)
            return 2 * v if name in (self._cfg_changes or {}) else v
        table: dict[tuple[int, int], Any] = {
            (IPPROTO_TCP, TCP_NODELAY): int(not cfg.nagle),
            (SOL_SOCKET, SO_KEEPALIVE): int(cfg.keepalive),
            (IPPROTO_TCP, TCP_KEEPIDLE): cfg.keepalive_idle_ns // NS_PER_S,
            (IPPROTO_TCP, TCP_KEEPINTVL): cfg.keepalive_interval_ns // NS_PER_S,
            (IPPROTO_TCP, TCP_KEEPCNT): cfg.keepalive_count,
            (IPPROTO_TCP, TCP_USER_TIMEOUT): cfg.user_timeout_ns // NS_PER_MS,
            (IPPROTO_TCP, TCP_LINGER2): cfg.fin_wait2_timeout_ns // NS_PER_S,
            (SOL_SOCKET, SO_RCVBUF): cfg.rcv_buf,
            (SOL_SOCKET, SO_SNDBUF): cfg.snd_buf,
        }
        try:
            return table[(level, option)]
        except KeyError:
            raise oserror(errno.ENOPROTOOPT, f"option ({level}, {option})") from None

    def set_options(
        self,
        *,
        nodelay: bool | None = None,
        keepalive: bool | None = None,
        keepidle_s: int | None = None,
        keepintvl_s: int | None = None,
        keepcnt: int | None = None,
        user_timeout_ms: int | None = None,
        rcvbuf: int | None = None,
        sndbuf: int | None = None,
        maxseg: int | None = None,
        linger: tuple[int, int] | None = None,
    ) -> None:
        """Keyword form of setsockopt for the common options."""
        pairs = (
            (nodelay, IPPROTO_TCP, TCP_NODELAY),
            (keepidle_s, IPPROTO_TCP, TCP_KEEPIDLE),
            (keepintvl_s, IPPROTO_TCP, TCP_KEEPINTVL),
            (keepcnt, IPPROTO_TCP, TCP_KEEPCNT),
            (keepalive, SOL_SOCKET, SO_KEEPALIVE),
            (user_timeout_ms, IPPROTO_TCP, TCP_USER_TIMEOUT),
            (rcvbuf, SOL_SOCKET, SO_RCVBUF),
            (sndbuf, SOL_SOCKET, SO_SNDBUF),
            (maxseg, IPPROTO_TCP, TCP_MAXSEG),
            (linger, SOL_SOCKET, SO_LINGER),
        )
        for value, level, opt in pairs:
            if value is not None:
                self.setsockopt(level, opt, value)

    # -- readiness --------------------------------------------------------------------------------

    def poll(self, events: int = POLL_ALL) -> int:
        """Current readiness (Linux tcp_poll semantics), masked by `events` (POLLERR/POLLHUP/POLLNVAL
        are always reported)."""
        return self._revents() & (events | POLLERR | POLLHUP | POLLNVAL)

    def _revents(self) -> int:
        if self._closed:
            return POLLNVAL
        lst = self._listener
        if lst is not None:
            return POLLIN if lst.ready > 0 else 0
        tcb = self._tcb
        if tcb is None:
            return POLLOUT | POLLHUP
        m = 0
        if tcb.error and not self._err_reported:
            m |= POLLERR
        path = tcb.path
        if tcb.closed or tcb.error:
            # Everything shut down: reads return EOF/error, writes fail at once.
            return m | POLLIN | POLLRDHUP | POLLOUT | POLLHUP
        if not tcb.established:
            return m
        if path.readable or self._shut_rd:
            m |= POLLIN
        # Linux tcp_poll: RCV_SHUTDOWN (set when the FIN is processed, data may still be queued before it)
        # gives POLLIN|POLLRDHUP at once; the PeerClosed event only comes once that data has been read.
        if tcb.peer_closed or path.state in _PEER_FIN_STATES:
            m |= POLLIN | POLLRDHUP
            if self._shut_wr:
                m |= POLLHUP
        if self._shut_wr:
            m |= POLLOUT
        elif path.state in _SEND_STATES:
            # Linux sk_stream_is_writeable: free space at least half of what is queued
            space = path.send_space
            if space > 0 and 2 * space >= path.send_queued:
                m |= POLLOUT
        return m

    def _try_poll(self, events: int) -> int:
        r = self.poll(events)
        if r:
            return r
        tcb = self._tcb
        if events & POLLOUT and tcb is not None and tcb.established and not tcb.closed:
            tcb.path.want_send_space()  # type: ignore[attr-defined]
        raise _would_block()

    def wait(self, events: int = POLLIN, timeout: float | None = None) -> int:
        """Block (driving the scheduler) until one of `events` is ready; 0 on timeout."""
        saved = self._timeout
        self._timeout = timeout
        try:
            return self._block(lambda: self._try_poll(events))
        except TimeoutError:
            return 0
        finally:
            self._timeout = saved

    async def await_poll(self, events: int = POLLIN, timeout_ns: int | None = None) -> int:
        """Wait in a task until one of `events` is ready; 0 on timeout."""
        try:
            return await self._async(lambda: self._try_poll(events), timeout_ns)
        except TimeoutError:
            return 0

    async def await_closed(self, timeout_ns: int | None = None) -> str:
        """Wait until the connection reached CLOSED; returns the engine's close reason."""
        tcb = self._tcb
        if tcb is None:
            raise oserror(errno.ENOTCONN)

        def check() -> str:
            if tcb.close_reason is None:
                raise _would_block()
            return tcb.close_reason

        return await self._async(check, timeout_ns)


def poll_sockets(entries: list[tuple[Socket, int]], timeout: float | None = None) -> list[tuple[Socket, int]]:
    """poll(2) over several sockets: drives their scheduler until one is ready or `timeout` seconds
    pass; returns [(socket, revents)] of the ready ones (empty on timeout). Not for use inside tasks."""
    if not entries:
        return []
    sched = entries[0][0].scheduler

    def ready() -> list[tuple[Socket, int]]:
        out = []
        for sock, ev in entries:
            r = sock.poll(ev)
            if r:
                out.append((sock, r))
            elif ev & POLLOUT and sock._tcb is not None and sock._tcb.established and not sock._tcb.closed:
                sock._tcb.path.want_send_space()  # type: ignore[attr-defined]
        return out

    r = ready()
    if r or timeout == 0:
        return r
    until = None if timeout is None else sched.now + int(timeout * NS_PER_S)
    sched.run_until(until=until, predicate=lambda: any(sock.poll(ev) for sock, ev in entries))
    return ready()


def _positive(value: Any) -> int:
    v = int(value)
    if v <= 0:
        raise oserror(errno.EINVAL, f"value {value!r} must be positive")
    return v


def _resolve(fut: SimFuture[None]) -> None:
    if not fut.done():
        fut.set_result(None)


__all__ = [
    "IPPROTO_TCP",
    "POLLERR",
    "POLLHUP",
    "POLLIN",
    "POLLNVAL",
    "POLLOUT",
    "POLLPRI",
    "POLLRDHUP",
    "POLL_ALL",
    "SHUT_RD",
    "SHUT_RDWR",
    "SHUT_WR",
    "SOL_SOCKET",
    "SO_ERROR",
    "SO_KEEPALIVE",
    "SO_LINGER",
    "SO_RCVBUF",
    "SO_REUSEADDR",
    "SO_SNDBUF",
    "TCP_KEEPCNT",
    "TCP_KEEPIDLE",
    "TCP_KEEPINTVL",
    "TCP_LINGER2",
    "TCP_MAXSEG",
    "TCP_NODELAY",
    "TCP_USER_TIMEOUT",
    "Socket",
    "oserror",
    "poll_sockets",
]
