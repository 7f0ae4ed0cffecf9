"""The real wire: a Linux TAP device (`TapDevice`) and its link-end adapter (`TapPort`).
Owns /dev/net/tun ioctls, vnet-header offload negotiation, batched non-blocking I/O and TAP counters.

`TapPort` offers the same link-end interface as the emulated links (`send(frame, meta)`,
`set_receiver(cb)`, `mtu`, counters), so a host stack attaches to a TAP exactly as to a simulated
link, only on a `RealTimeScheduler` whose `add_reader` wakes the port when frames wait.

Offload metadata (IFF_VNET_HDR): with `TapDevice(vnet_hdr=True)` every frame carries a
virtio_net_hdr. `TapPort` strips it before delivery and exposes it two ways:
  * `set_vnet_receiver(cb)` where `cb(frame: bytes, hdr: VnetHdr | None)`; `hdr` is None for a
    frame whose header is all zero (no checksum work, no segmentation: the common fast case);
    `set_vnet_receiver(cb, views=True)` hands `frame` as a memoryview of the read buffer instead (no copy);
  * with a plain `set_receiver(cb)`, `port.rx_vnet` holds that same value while `cb` runs.
On transmit, `send(frame)` prepends an all-zero header (scatter write, no concatenation) and
`send_vnet(frame, hdr)` sends a caller-built one (e.g. NEEDS_CSUM or a TCPV4 super-segment that the
kernel segments: the Linux analogue of NDIS large send offload).

Receive batching (the host stack's fast path): `set_drain_end(cb)` calls `cb()` after each wake-up's
drain (the stack sends one cumulative ACK per drain); `set_csum_receiver(cb)` makes the plain fast path
read frames back to back into slabs and sum each frame's bytes after the Ethernet header for a whole
slab in one numpy call, delivering `cb(frame_view, csum)` (Linux CHECKSUM_COMPLETE) so the TCP checksum
check costs a few integer operations per frame. `vnet_offloads` says what a vnet-header TAP negotiated.

Impairments: `TapPort.set_impairments(inbound=, outbound=)` applies the emulated links' engine
(`chimney.links.impair.Impairments`) inside the port, for kernels without tc netem.

NDIS analogue (for docs/ndis-mapping.md): the TAP plays the physical NIC under the miniport;
`TapPort.send` ~ the miniport's wire transmit, the receiver callback ~ `NdisMIndicateReceiveNetBufferLists`
toward the stack (`indicate_receive_net_buffer_lists`); checksum/GSO metadata ~ the
`TcpIpChecksumNetBufferListInfo` / `TcpLargeSendNetBufferListInfo` out-of-band fields; the slab sum is
what a NIC reporting a raw receive checksum gives the stack.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import io
import os
import socket
import struct
import threading
from collections.abc import Callable, Sequence
from typing import Any, Final, TypeVar

from chimney.links.base import (
    ETH_HLEN,
    DropCause,
    FrameReceiver,
    LinkCounters,
    Port,
    PortObserver,
    as_frame,
    max_frame_len,
)
from chimney.links.impair import Channel, Impairments
from chimney.links.rxpool import RxBufferPool
from chimney.links.vnet import (
    VNET_HDR_LEN,
    VNET_HDR_MRG_LEN,
    ZERO_HDR,
    ZERO_HDR_MRG,
    VnetHdr,
    VnetHeaderError,
)

try:  # optional: one vectorised checksum per receive slab (see TapPort.set_csum_receiver)
    import numpy as _np
except ImportError:  # pragma: no cover - depends on the environment
    _np = None

# linux/if_tun.h
TUNSETIFF: Final = 0x400454CA
TUNSETPERSIST: Final = 0x400454CB
TUNSETOWNER: Final = 0x400454CC
TUNSETOFFLOAD: Final = 0x400454D0
TUNGETIFF: Final = 0x800454D2
TUNGETVNETHDRSZ: Final = 0x800454D7
TUNSETVNETHDRSZ: Final = 0x400454D8
TUNSETVNETLE: Final = 0x400454DC

IFF_TUN: Final = 0x0001
IFF_TAP: Final = 0x0002
IFF_NO_PI: Final = 0x1000
IFF_VNET_HDR: Final = 0x4000
IFF_TUN_EXCL: Final = 0x8000

TUN_F_CSUM: Final = 0x01
TUN_F_TSO4: Final = 0x02
TUN_F_TSO6: Final = 0x04
TUN_F_TSO_ECN: Final = 0x08
TUN_F_UFO: Final = 0x10
#: What a vnet-header TAP asks for by default: partial checksums and 64 KB TCP super-segments.
TUN_F_DEFAULT: Final = TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6

# linux/sockios.h
SIOCGIFMTU: Final = 0x8921
SIOCSIFMTU: Final = 0x8922
SIOCGIFHWADDR: Final = 0x8927
SIOCGIFINDEX: Final = 0x8933

CLONE_NEWNET: Final = 0x40000000
IFNAMSIZ: Final = 16
_VLAN_ROOM: Final = 4
_GSO_MAX: Final = 65536

_FATAL_RX: Final = frozenset({errno.EBADF, errno.EBADFD, errno.ENODEV, errno.ENXIO})

_write = os.write
_writev = os.writev
_HDR_CACHE_MAX = 64  # distinct received virtio_net_hdr byte strings kept decoded per port
_LITTLE = int.from_bytes(b"\x01\x00", "little") == 1
#: Frames read into one slab (one numpy call sums them all), at most SLAB_BYTES of slots (big-MTU
#: TAPs get fewer frames per slab); slabs come from the port's receive pool and are read into again
#: only once no received payload view (e.g. in the TCP receive queue) refers to them.
SLAB_FRAMES: Final = 64
SLAB_BYTES: Final = 256 * 1024
#: Receive buffers (64 KB frames on a GSO TAP, or slabs) a port keeps for reuse (`chimney.links.rxpool`).
RX_POOL_BYTES: Final = 8 << 20

TUN_PATH = "/dev/net/tun"
NETNS_RUN_DIR = "/run/netns"

_IFREQ_FLAGS = struct.Struct("16sH22x")
_IFREQ_INT = struct.Struct("16si20x")

T = TypeVar("T")


class TapError(OSError):
    """Opening or configuring the TAP failed; carries errno and what we were doing."""


def _ifname(name: str) -> bytes:
    raw = name.encode()
    if not raw or len(raw) >= IFNAMSIZ or b"/" in raw or b" " in raw:
        raise ValueError(f"invalid interface name {name!r} (1..15 bytes, no '/' or space)")
    return raw


def run_in_netns(netns: str | None, fn: Callable[[], T]) -> T:
    """Run `fn` with the calling thread's network namespace switched to `netns`.

    setns(CLONE_NEWNET) is per-thread, so a short-lived helper thread does the switch and the
    rest of the process never leaves its namespace. File descriptors and sockets created there
    keep that namespace for life: a TUN fd opened inside creates its interface inside, which is
    how a TAP appears directly in a test namespace without ever existing in the root one.
    """
    if netns is None:
        return fn()
    path = os.path.join(NETNS_RUN_DIR, netns)
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            nsfd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
            try:
                if libc.setns(nsfd, CLONE_NEWNET) != 0:
                    e = ctypes.get_errno()
                    raise TapError(e, f"setns({path}): {os.strerror(e)}")
            finally:
                os.close(nsfd)
            box["value"] = fn()
        except BaseException as exc:  # re-raised in the caller's thread
            box["error"] = exc

    th = threading.Thread(target=target, name=f"netns-{netns}", daemon=True)
    th.start()
    th.join(10.0)
    if th.is_alive():
        raise TapError(errno.ETIMEDOUT, f"operation in netns {netns} did not finish in 10 s")
    if "error" in box:
        raise box["error"]
    return box["value"]


class TapDevice:
    """An open TAP interface: non-blocking fd, name, MTU, optional virtio_net_hdr offloads.

    `netns` names a namespace under /run/netns in which to create (or attach to) the interface;
    None uses the caller's own namespace. With `vnet_hdr`, `offload` (TUN_F_* bits) is passed to
    TUNSETOFFLOAD: TUN_F_CSUM lets Linux hand us partial checksums, TUN_F_TSO4/6 64 KB super-segments.
    `vnet_hdr_sz` 12 selects the virtio_net_hdr_mrg_rxbuf layout.
    """

    __slots__ = ("_mtu", "fd", "name", "netns", "offload", "read_size", "vnet_hdr_sz")

    def __init__(
        self,
        name: str = "chimney0",
        *,
        netns: str | None = None,
        vnet_hdr: bool = False,
        vnet_hdr_sz: int = VNET_HDR_LEN,
        offload: int | None = None,
        persist: bool = False,
        mtu: int | None = None,
        exclusive: bool = False,
    ) -> None:
        raw = _ifname(name)
        if vnet_hdr and vnet_hdr_sz not in (VNET_HDR_LEN, VNET_HDR_MRG_LEN):
            raise ValueError(f"vnet_hdr_sz must be {VNET_HDR_LEN} or {VNET_HDR_MRG_LEN}, not {vnet_hdr_sz}")
        if offload and not vnet_hdr:
            raise ValueError("offloads need vnet_hdr=True: without the header the kernel cannot describe them")
        self.netns = netns
        self.fd = -1
        flags = IFF_TAP | IFF_NO_PI | (IFF_VNET_HDR if vnet_hdr else 0) | (IFF_TUN_EXCL if exclusive else 0)
        if not os.path.exists(TUN_PATH):
            raise TapError(errno.ENOENT, f"{TUN_PATH} does not exist (no TUN/TAP support)")
        fd = run_in_netns(netns, lambda: os.open(TUN_PATH, os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC))
        try:
            try:
                res = fcntl.ioctl(fd, TUNSETIFF, _IFREQ_FLAGS.pack(raw, flags))
            except OSError as e:
                raise TapError(e.errno, f"TUNSETIFF {name!r}: {e.strerror}") from e
            self.name = _IFREQ_FLAGS.unpack(res)[0].rstrip(b"\0").decode()
            self.vnet_hdr_sz = 0
            self.offload = 0
            if vnet_hdr:
                # Little-endian on every host, so VnetHdr's fixed "<" layout is always right.
                fcntl.ioctl(fd, TUNSETVNETLE, struct.pack("i", 1))
                fcntl.ioctl(fd, TUNSETVNETHDRSZ, struct.pack("i", vnet_hdr_sz))
                self.vnet_hdr_sz = vnet_hdr_sz
                off = TUN_F_DEFAULT if offload is None else offload
                fcntl.ioctl(fd, TUNSETOFFLOAD, off)
                self.offload = off
            if persist:
                fcntl.ioctl(fd, TUNSETPERSIST, 1)
        except BaseException:
            os.close(fd)
            raise
        self.fd = fd
        self._mtu = 1500
        self.read_size = 0
        try:
            if mtu is not None:
                self.set_mtu(mtu)
            else:
                self._mtu = self._ifreq_get_int(SIOCGIFMTU)
                self._size_buffers()
        except BaseException:
            self.close()
            raise

    # -- configuration ---------------------------------------------------------------------
    def _size_buffers(self) -> None:
        # One byte of slack beyond the largest legal frame lets a read that fills the buffer be
        # recognised as truncated instead of being delivered cut short.
        if self.offload & (TUN_F_TSO4 | TUN_F_TSO6 | TUN_F_UFO):
            body = _GSO_MAX + ETH_HLEN + _VLAN_ROOM
        else:
            body = self._mtu + ETH_HLEN + _VLAN_ROOM
        self.read_size = self.vnet_hdr_sz + body + 1

    def _ifreq_get_int(self, req: int) -> int:
        def op() -> int:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                res = fcntl.ioctl(s.fileno(), req, _IFREQ_INT.pack(self.name.encode(), 0))
                return _IFREQ_INT.unpack(res)[1]

        return run_in_netns(self.netns, op)

    @property
    def mtu(self) -> int:
        return self._mtu

    def set_mtu(self, mtu: int) -> None:
        """Set the interface MTU (inside its namespace) and resize the read buffer to match."""
        if not 68 <= mtu <= 65535:
            raise ValueError(f"MTU {mtu} out of range 68..65535")

        def op() -> None:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                fcntl.ioctl(s.fileno(), SIOCSIFMTU, _IFREQ_INT.pack(self.name.encode(), mtu))

        run_in_netns(self.netns, op)
        self._mtu = mtu
        self._size_buffers()

    def refresh_mtu(self) -> int:
        """Re-read the MTU after someone changed it with `ip link set ... mtu`."""
        self._mtu = self._ifreq_get_int(SIOCGIFMTU)
        self._size_buffers()
        return self._mtu

    @property
    def mac(self) -> bytes:
        """The Linux-side interface's own MAC address (6 bytes)."""

        def op() -> bytes:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                res = fcntl.ioctl(s.fileno(), SIOCGIFHWADDR, struct.pack("16s16x", self.name.encode()))
                return res[18:24]

        return run_in_netns(self.netns, op)

    @property
    def ifindex(self) -> int:
        return self._ifreq_get_int(SIOCGIFINDEX)

    def set_persist(self, persist: bool) -> None:
        """TUNSETPERSIST: a persistent TAP outlives this fd (used by `chimney netns up`)."""
        fcntl.ioctl(self.fileno(), TUNSETPERSIST, 1 if persist else 0)

    def set_offload(self, offload: int) -> None:
        if not self.vnet_hdr_sz:
            raise ValueError("offloads need a vnet-header TAP")
        fcntl.ioctl(self.fileno(), TUNSETOFFLOAD, offload)
        self.offload = offload
        self._size_buffers()

    # -- I/O -------------------------------------------------------------------------------
    def fileno(self) -> int:
        if self.fd < 0:
            raise ValueError(f"TAP {self.name} is closed")
        return self.fd

    @property
    def closed(self) -> bool:
        return self.fd < 0

    def read(self) -> bytes | None:
        """One frame (vnet header included when enabled), or None when nothing is waiting."""
        try:
            return os.read(self.fd, self.read_size)
        except BlockingIOError:
            return None

    def read_batch(self, max_frames: int = 64) -> list[bytes]:
        """Drain up to `max_frames` frames until EAGAIN. Frames keep their vnet header."""
        out: list[bytes] = []
        fd, size, read = self.fd, self.read_size, os.read
        append = out.append
        for _ in range(max_frames):
            try:
                append(read(fd, size))
            except BlockingIOError:
                break
        return out

    def write(self, frame: bytes | bytearray | memoryview) -> int:
        """Write one frame (with its vnet header when enabled). Raises BlockingIOError on EAGAIN."""
        return os.write(self.fd, frame)

    def writev(self, parts: Sequence[bytes | bytearray | memoryview]) -> int:
        """Scatter write: e.g. (header, payload memoryview) as one frame, without concatenating."""
        return os.writev(self.fd, parts)

    def close(self) -> None:
        if self.fd >= 0:
            fd, self.fd = self.fd, -1
            os.close(fd)

    def __enter__(self) -> TapDevice:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        where = f" netns={self.netns}" if self.netns else ""
        state = " closed" if self.fd < 0 else f" fd={self.fd}"
        return f"<TapDevice {self.name}{where}{state} mtu={self._mtu} vnet_hdr_sz={self.vnet_hdr_sz}>"


VnetReceiver = Callable[[bytes, VnetHdr | None], None]
CsumReceiver = Callable[[memoryview, int], None]


class TapPort(Port):
    """The link-end interface (`chimney.links.base.Port`) on a `TapDevice`, driven by a real-time scheduler.

    The scheduler must offer `add_reader(fd, cb)` / `remove_reader(fd)` (RealTimeScheduler).
    On each wake-up the port drains the fd until EAGAIN (at most `max_drain` frames, so one busy
    TAP cannot starve timers; the level-triggered reader simply fires again) and delivers every
    frame synchronously to the receiver.

    Counters: `counters` (LinkCounters) for the transmit side, as on an emulated link:
    `sent`/`bytes_sent` for every frame offered, `delivered`/`bytes_delivered` for frames the kernel
    took, drops as RUNT (< 14 bytes), MTU (longer than MTU + header, or EINVAL/EMSGSIZE),
    QUEUE_FULL (EAGAIN), LINK_DOWN (EIO: interface down);
    `rx_frames`/`rx_bytes` for frames handed to the receiver; `frames_in`/`bytes_in` for every
    frame read (`largest_in`: the longest frame, vnet header excluded, read on the vnet-header or
    general path, i.e. the evidence that GSO super-frames arrived); `eagain_out`, `errors_in`, `errors_out`, `wakeups`, and `drops` (reason -> count)
    for everything not delivered or not sent, with the reason spelled out.
    """

    __slots__ = (
        "_csum_receiver",
        "_drain_end",
        "_gen",
        "_hdr_cache",
        "_hdr_mrg",
        "_imp_in",
        "_imp_out",
        "_max_plain",
        "_mtu",
        "_reading",
        "_rx_file",
        "_rx_pool",
        "_slab_pool",
        "_tx_hdr",
        "_vnet_receiver",
        "_vnet_views",
        "_zero_hdr",
        "bytes_in",
        "dev",
        "drops",
        "eagain_out",
        "errors_in",
        "errors_out",
        "frames_in",
        "largest_in",
        "max_drain",
        "owns_device",
        "rx_pool_bytes",
        "rx_vnet",
        "scheduler",
        "wakeups",
    )

    def __init__(
        self,
        dev: TapDevice,
        scheduler: Any,
        *,
        name: str | None = None,
        mac: bytes | None = None,
        max_drain: int = 1024,
        owns_device: bool = False,
        start: bool = True,
        rx_pool_bytes: int = RX_POOL_BYTES,
    ) -> None:
        super().__init__(name or f"tap:{dev.name}", dev.mtu, mac)
        self.dev = dev
        self.scheduler = scheduler
        self.max_drain = max_drain
        self.owns_device = owns_device
        self._vnet_receiver: VnetReceiver | None = None
        self._vnet_views = False
        self._drain_end: Callable[[], None] | None = None
        self._csum_receiver: CsumReceiver | None = None
        self._hdr_mrg = dev.vnet_hdr_sz == VNET_HDR_MRG_LEN
        # Raw received header -> parsed VnetHdr (shared, never mutated): a TCP flow's GSO frames and ACKs
        # repeat a handful of headers, so each is decoded once rather than per frame.
        self._hdr_cache: dict[bytes, VnetHdr] = {}
        self.largest_in = 0
        self._tx_hdr: tuple[VnetHdr | None, bytes] = (None, b"")  # last header sent and its packed bytes
        self._zero_hdr = ZERO_HDR_MRG if self._hdr_mrg else ZERO_HDR
        self.rx_vnet: VnetHdr | None = None
        self.frames_in = 0
        self.bytes_in = 0
        self.eagain_out = 0
        self.errors_in = 0
        self.errors_out = 0
        self.wakeups = 0
        self.drops: dict[str, int] = {}
        self._reading = False
        self._gen = 0
        self._imp_in: Channel | None = None
        self._imp_out: Channel | None = None
        # Frames lent to the stack as views are read into reused buffers (0: a fresh buffer every time).
        self.rx_pool_bytes = rx_pool_bytes
        self._rx_pool: RxBufferPool | None = None
        self._rx_file: io.FileIO | None = None
        self._slab_pool: RxBufferPool | None = None
        if start:
            self.start()

    # -- Port interface --------------------------------------------------------------------
    @property  # type: ignore[override]
    def mtu(self) -> int:
        return self._mtu

    @mtu.setter
    def mtu(self, value: int) -> None:
        # Shadows Port's plain slot so the transmit path's precomputed limit can never go stale.
        self._mtu = value
        self._max_plain = value + ETH_HLEN

    @property
    def link_up(self) -> bool:
        return not self.dev.closed

    def set_mtu(self, mtu: int) -> None:
        """Change the Linux-side MTU and this port's view of it together."""
        self.dev.set_mtu(mtu)
        self.mtu = mtu

    @property
    def vnet_offloads(self) -> tuple[bool, bool] | None:
        """None without a vnet header; else what Linux may hand us: (partial checksums, GSO super-frames)."""
        if not self.dev.vnet_hdr_sz:
            return None
        off = self.dev.offload
        return bool(off & TUN_F_CSUM), bool(off & (TUN_F_TSO4 | TUN_F_TSO6))

    def set_receiver(self, callback: FrameReceiver | None) -> None:
        """Frames (vnet header stripped) go to `callback(frame)`; `rx_vnet` holds offload info meanwhile."""
        self._receiver = callback
        self._vnet_receiver = None
        self._csum_receiver = None
        self._gen += 1

    def set_csum_receiver(self, callback: CsumReceiver | None) -> bool:
        """On the plain fast path, deliver `callback(frame, csum)` instead of `receiver(frame)`: `frame` is a
        memoryview into a slab of up to SLAB_FRAMES frames (SLAB_BYTES) read back to back, `csum` the raw one's-complement
        sum of `frame[14:]` mod 0xFFFF (Linux CHECKSUM_COMPLETE), computed for the whole slab in one numpy
        call. Frames taking the general path (vnet header, observers, impairments) still go to the plain
        receiver set before. False (nothing changed) without numpy."""
        if callback is not None and _np is None:
            return False
        self._csum_receiver = callback
        self._gen += 1
        return True

    def set_vnet_receiver(self, callback: VnetReceiver | None, *, views: bool = False) -> None:
        """Frames go to `callback(frame, hdr)`; `hdr` is None when the vnet header was all zero.
        `views`: `frame` is a memoryview past the header instead of a bytes copy of the frame (no 64 KB
        copy per super-frame; the receiver may keep views of it). Parsed headers are shared objects."""
        self._vnet_receiver = callback
        self._vnet_views = views
        self._receiver = None
        self._gen += 1

    def set_drain_end(self, callback: Callable[[], None] | None) -> None:
        """`callback()` runs after each wake-up's drain that delivered at least one frame (also when a
        receiver raised): the receiver's cue to send what it batched, e.g. one ACK per drain."""
        self._drain_end = callback

    def add_observer(self, observer: PortObserver) -> None:
        super().add_observer(observer)
        self._gen += 1

    def remove_observer(self, observer: PortObserver) -> None:
        super().remove_observer(observer)
        self._gen += 1

    def send(self, frame: bytes | bytearray | memoryview, meta: str | None = None) -> bool:  # type: ignore[override]
        """Put one Ethernet frame on the wire. False (and counted) when the kernel refused it.

        Overrides `Port.send` to skip its bytes conversion (the TAP takes any buffer as is) and
        one call level; `meta` reaches the observers (captures) only.
        """
        if self._observers:
            for obs in self._observers:
                obs("tx", bytes(frame), meta)
        c = self.counters
        ln = len(frame)
        c.sent += 1
        c.bytes_sent += ln
        # One chained comparison on the common path; tagged frames (4 bytes more allowed) and
        # anything wrong take the exact check.
        if not 14 <= ln <= self._max_plain and self._refuse_length(frame, ln):
            return False
        if self._imp_out is not None:
            self._imp_out.send(as_frame(frame), meta)
            return True
        # Same as _write_now, inlined: this is the per-frame transmit path.
        dev = self.dev
        try:
            if dev.vnet_hdr_sz:
                _writev(dev.fd, (self._zero_hdr, frame))
            else:
                _write(dev.fd, frame)
        except BlockingIOError:
            self.eagain_out += 1
            c.drop(DropCause.QUEUE_FULL)
            return False
        except OSError as e:
            self._count_error_out(e)
            return False
        c.delivered += 1
        c.bytes_delivered += ln
        return True

    def send_many(self, frames: Sequence[bytes | bytearray | memoryview], meta: str | None = None) -> int:
        """`send` for a burst (e.g. one TCP window's segments): same checks and counters, one call.

        Returns how many frames the kernel took. Counters are summed locally and stored once, so
        a burst costs little more than the bare writes.
        """
        if self._observers or self._imp_out is not None or self.dev.vnet_hdr_sz:
            return sum(1 for f in frames if self.send(f, meta))
        c = self.counters
        fd = self.dev.fd
        max_plain = self._max_plain
        write = _write
        ok = ok_bytes = offered_bytes = 0
        try:
            for frame in frames:
                ln = len(frame)
                offered_bytes += ln
                if not 14 <= ln <= max_plain and self._refuse_length(frame, ln):
                    continue
                try:
                    write(fd, frame)
                except BlockingIOError:
                    self.eagain_out += 1
                    c.drop(DropCause.QUEUE_FULL)
                    continue
                except OSError as e:
                    self._count_error_out(e)
                    continue
                ok += 1
                ok_bytes += ln
        finally:
            c.sent += len(frames)
            c.bytes_sent += offered_bytes
            c.delivered += ok
            c.bytes_delivered += ok_bytes
        return ok

    def _refuse_length(self, frame: bytes | bytearray | memoryview, ln: int) -> bool:
        if ln < ETH_HLEN:
            self.counters.drop(DropCause.RUNT)
            return True
        if ln > max_frame_len(bytes(frame[:ETH_HLEN]), self._mtu):
            self.counters.drop(DropCause.MTU)
            return True
        return False

    def _transmit(self, frame: bytes | bytearray | memoryview, meta: str | None) -> bool:  # type: ignore[override]
        return self.send(frame, meta)

    def _write_now(self, frame: bytes, meta: str | None = None) -> bool:
        """Write one frame that left the outbound impairment channel (which counted and checked it)."""
        dev = self.dev
        try:
            if dev.vnet_hdr_sz:
                os.writev(dev.fd, (self._zero_hdr, frame))
            else:
                os.write(dev.fd, frame)
        except BlockingIOError:
            self.eagain_out += 1
            self.counters.drop(DropCause.QUEUE_FULL)
            return False
        except OSError as e:
            self._count_error_out(e)
            return False
        c = self.counters
        c.delivered += 1
        c.bytes_delivered += len(frame)
        return True

    # -- userspace impairments ----------------------------------------------------------------
    def set_impairments(self, inbound: Impairments | None = None, outbound: Impairments | None = None) -> None:
        """Loss, delay, jitter, reorder, rate... applied by this port itself (None: clear that direction).

        `inbound` acts on frames from Linux before the receiver sees them, `outbound` on `send`
        before the device write. Uses the emulated links' engine (`chimney.links.impair.Channel`,
        random draws from `scheduler.rng("link/<port name>/in|out")`), so it works on kernels
        without netem. Frames already in flight keep their schedule. Plain frames only: the
        channel cannot carry per-frame vnet headers.
        """
        if self.dev.vnet_hdr_sz and (inbound is not None or outbound is not None):
            raise ValueError(f"{self.name}: userspace impairments need a TAP without vnet headers")
        self._imp_in = (
            None if inbound is None else Channel(self.scheduler, self.name, "in", inbound, self._deliver_impaired)
        )
        self._imp_out = (
            None if outbound is None else Channel(self.scheduler, self.name, "out", outbound, self._write_now)
        )
        self._gen += 1

    def impairment_counters(self) -> dict[str, LinkCounters]:
        """Counters of the active impairment channels ("in", "out"): losses appear as DropCause.LOSS etc."""
        out: dict[str, LinkCounters] = {}
        if self._imp_in is not None:
            out["in"] = self._imp_in.counters
        if self._imp_out is not None:
            out["out"] = self._imp_out.counters
        return out

    def _deliver_impaired(self, frame: bytes, meta: str | None) -> bool:
        if self._observers:
            for obs in self._observers:
                obs("rx", frame, meta)
        r = self._receiver
        if r is None:
            self._drop("rx_no_receiver")
            return False
        self.rx_frames += 1
        self.rx_bytes += len(frame)
        try:
            r(frame)
        finally:
            if self._drain_end is not None:
                self._drain_end()
        return True

    def send_vnet(
        self,
        frame: bytes | bytearray | memoryview | tuple[bytes | bytearray | memoryview, ...],
        hdr: VnetHdr | bytes,
    ) -> bool:
        """Send with an explicit virtio_net_hdr (partial checksum or a GSO super-segment). `frame` may be
        a tuple of parts (headers, payload views): one writev gathers them, so a 64 KB super-segment is
        never joined into a new buffer."""
        if not self.dev.vnet_hdr_sz:
            raise ValueError(f"{self.name}: send_vnet needs a TAP opened with vnet_hdr=True")
        if type(frame) is tuple:
            size = 0
            for part in frame:
                size += len(part)
        else:
            size = len(frame)  # type: ignore[arg-type]
        if isinstance(hdr, VnetHdr):
            hdr.validate(size)
            last, raw = self._tx_hdr
            if hdr is not last:
                # The sender reuses one header object per flow (TcpTransport._send_tso): pack it once.
                raw = hdr.pack(self._hdr_mrg)
                self._tx_hdr = (hdr, raw)
        else:
            raw = hdr
            if len(raw) != self.dev.vnet_hdr_sz:
                raise VnetHeaderError(f"header of {len(raw)} bytes, device expects {self.dev.vnet_hdr_sz}")
        if self._observers:
            whole = b"".join(frame) if type(frame) is tuple else bytes(frame)  # type: ignore[arg-type]
            for obs in self._observers:
                obs("tx", whole, None)
        c = self.counters
        c.sent += 1
        c.bytes_sent += size
        try:
            n = os.writev(self.dev.fd, (raw, *frame) if type(frame) is tuple else (raw, frame)) - len(raw)
        except BlockingIOError:
            self.eagain_out += 1
            c.drop(DropCause.QUEUE_FULL)
            return False
        except OSError as e:
            self._count_error_out(e)
            return False
        c.delivered += 1
        c.bytes_delivered += n
        return True

    def _count_error_out(self, e: OSError) -> None:
        self.errors_out += 1
        if e.errno == errno.EIO:
            self.counters.drop(DropCause.LINK_DOWN)  # tun refuses writes while the interface is down
        elif e.errno in (errno.EINVAL, errno.EMSGSIZE):
            self.counters.drop(DropCause.MTU)
        reason = f"tx_{errno.errorcode.get(e.errno or 0, str(e.errno))}"
        self.drops[reason] = self.drops.get(reason, 0) + 1

    def _drop(self, reason: str) -> None:
        self.drops[reason] = self.drops.get(reason, 0) + 1

    # -- reading ---------------------------------------------------------------------------
    def start(self) -> None:
        if not self._reading:
            add_reader = getattr(self.scheduler, "add_reader", None)
            if add_reader is None:
                raise TypeError(
                    f"{self.name}: a TAP needs a scheduler with add_reader (chimney.sim.realtime.RealTimeScheduler), "
                    f"not {type(self.scheduler).__name__}"
                )
            add_reader(self.dev.fileno(), self._on_readable)
            self._reading = True

    def stop(self) -> None:
        self._gen += 1
        if self._reading:
            self._reading = False
            if not self.dev.closed:
                self.scheduler.remove_reader(self.dev.fd)

    def close(self) -> None:
        """Stop reading; closes the device too when the port owns it."""
        self.stop()
        if self.owns_device:
            self.dev.close()

    def poll(self) -> int:
        """Drain now without waiting for the scheduler (e.g. from a busy loop). Returns frames read."""
        return self._on_readable()

    def _on_readable(self) -> int:
        self.wakeups += 1
        if self.dev.vnet_hdr_sz or self._observers or self._receiver is None or self._imp_in is not None:
            return self._drain_general()
        if self._csum_receiver is not None:
            return self._drain_slabs()
        return self._drain_fast()

    def _drain_slabs(self) -> int:
        """`_drain_fast` with checksums in bulk: frames are read into a pooled slab, one after
        another at even offsets; one `numpy.add.reduceat` sums every frame's bytes after the Ethernet
        header; then each frame goes to the csum receiver with its sum. Same counters and `_gen` rule."""
        fd = self.dev.fd
        size = self.dev.read_size
        # Even (the sums read 16-bit words) and past read_size: an odd frame's pad byte, and the end word of
        # the slab's last frame, stay inside the slab (numpy.reduceat needs every index < len).
        slot = (size + 2) & ~1
        per_slab = max(1, min(SLAB_FRAMES, SLAB_BYTES // slot))
        r = self._csum_receiver
        assert r is not None
        pool = self._pool_for("_slab_pool", per_slab * slot)
        gen = self._gen
        # FileIO.readinto: one argument, and None instead of an exception when the TAP is empty.
        readinto = self._fio(fd).readinto
        reduceat = _np.add.reduceat
        u16 = _np.uint16
        u32 = _np.uint32
        n = nbytes = bad = 0
        budget = self.max_drain
        try:
            while budget > 0:
                want = per_slab if budget > per_slab else budget
                slab = pool.take() if pool is not None else bytearray(want * slot)
                mv = memoryview(slab)
                ro = mv.toreadonly()  # what receivers get: received bytes are not theirs to change
                lens: list[int] = []
                idx: list[int] = []
                k = 0
                eagain = False
                while k < want:
                    off = k * slot
                    try:
                        ln = readinto(mv[off : off + size])
                    except OSError as e:
                        self._read_error(e)
                        eagain = True
                        break
                    if ln is None:
                        eagain = True
                        break
                    budget -= 1
                    if ln < ETH_HLEN or ln >= size:
                        self._bad_length(ln, size)
                        bad += 1
                        if budget <= 0:
                            break
                        continue
                    if ln & 1:
                        slab[off + ln] = 0  # the pad byte of an odd length (the slot may hold a bad frame's bytes)
                    lens.append(ln)
                    idx.append((off + ETH_HLEN) >> 1)
                    idx.append((off + ln + 1) >> 1)
                    k += 1
                    if budget <= 0:
                        break
                if k:
                    # Only the slots read; a frame's 16-bit words sum below 2**32, so 32-bit sums suffice.
                    words = _np.frombuffer(slab, u16, count=(k * slot) >> 1)
                    sums = reduceat(words, idx, dtype=u32)[::2] % 0xFFFF
                    if _LITTLE:
                        sums = (sums << 8) % 0xFFFF  # native little-endian words: the byte-swapped sum, times 256
                    sums = sums.tolist()
                    for i in range(k):
                        ln = lens[i]
                        n += 1
                        nbytes += ln
                        off = i * slot
                        r(ro[off : off + ln], sums[i])
                        if self._gen != gen:
                            # Settings changed under us; the rest of this slab is already read: hand
                            # it over under the new settings, then stop (the reader fires again).
                            for j in range(i + 1, k):
                                ln = lens[j]
                                n += 1
                                nbytes += ln
                                self._redeliver(ro[j * slot : j * slot + ln], sums[j])
                            return n + bad
                if eagain:
                    break
        finally:
            self.frames_in += n
            self.bytes_in += nbytes
            self.rx_frames += n
            self.rx_bytes += nbytes
            if n and self._drain_end is not None:
                self._drain_end()
        return n + bad

    def _fio(self, fd: int) -> io.FileIO:
        """A FileIO on the TAP fd (not owning it), kept while the fd stays the same."""
        f = self._rx_file
        if f is None or f.fileno() != fd:
            f = self._rx_file = io.FileIO(fd, "rb", closefd=False)
        return f

    def _pool_for(self, attr: str, size: int) -> RxBufferPool | None:
        """The receive buffer pool `attr` for buffers of `size` bytes (remade when the size changed,
        e.g. after an MTU or offload change); None when pooling is off."""
        if self.rx_pool_bytes <= 0:
            return None
        pool: RxBufferPool | None = getattr(self, attr)
        if pool is None or pool.buf_size != size:
            pool = RxBufferPool(size, self.rx_pool_bytes)
            setattr(self, attr, pool)
        return pool

    def _read_error(self, e: OSError) -> None:
        self.errors_in += 1
        self._drop(f"rx_{errno.errorcode.get(e.errno or 0, str(e.errno))}")
        if e.errno in _FATAL_RX:
            # The interface went away under us (namespace deleted): a level-triggered
            # reader would report the dead fd forever, so stop watching it.
            self.stop()

    def _bad_length(self, ln: int, size: int) -> None:
        self._drop("rx_truncated" if ln >= size else "rx_runt")

    def _drain_fast(self) -> int:
        """Plain frames, a receiver, no observers: the per-frame work is read, length check, call.

        Counters are summed in locals and stored once (also when the receiver raises). A receiver,
        observer or reading-state change made from inside a callback ends this drain (`_gen`), so
        the next frame is handled under the new settings.
        """
        fd = self.dev.fd
        size = self.dev.read_size
        r = self._receiver
        assert r is not None
        gen = self._gen
        read = os.read
        n = nbytes = bad = 0
        try:
            for _ in range(self.max_drain):
                try:
                    data = read(fd, size)
                except BlockingIOError:
                    break
                except OSError as e:
                    self._read_error(e)
                    break
                ln = len(data)
                if ln < ETH_HLEN or ln >= size:
                    self._bad_length(ln, size)
                    bad += 1
                    continue
                n += 1
                nbytes += ln
                r(data)
                if self._gen != gen:
                    break
        finally:
            self.frames_in += n
            self.bytes_in += nbytes
            self.rx_frames += n
            self.rx_bytes += nbytes
            if n and self._drain_end is not None:
                self._drain_end()
        return n + bad

    def _redeliver(self, frame: memoryview, csum: int) -> None:
        if self._observers:
            for obs in self._observers:
                obs("rx", bytes(frame), None)
        cr = self._csum_receiver
        if cr is not None:
            cr(frame, csum)
        elif self._receiver is not None:
            self._receiver(bytes(frame))
        else:
            self._drop("rx_no_receiver")

    def _drain_general(self) -> int:
        fd = self.dev.fd
        size = self.dev.read_size
        hsz = self.dev.vnet_hdr_sz
        hcache = self._hdr_cache
        gen = self._gen
        read = os.read
        # Views lent to the stack may point into reused buffers; anyone else gets bytes of their own.
        pool = (self._pool_for("_rx_pool", size)
                if self._vnet_views and self._vnet_receiver is not None and self._imp_in is None else None)
        readinto = self._fio(fd).readinto if pool is not None else None
        n = 0
        try:
            for _ in range(self.max_drain):
                try:
                    if readinto is None:
                        data: bytes | bytearray = read(fd, size)
                        ln = len(data)
                    else:
                        data = pool.take()  # type: ignore[union-attr]
                        got = readinto(data)
                        if got is None:
                            break
                        ln = got
                except BlockingIOError:
                    break
                except OSError as e:
                    self._read_error(e)
                    break
                n += 1
                if ln < hsz + ETH_HLEN or ln >= size:
                    self._bad_length(ln, size)
                    continue
                if hsz:
                    if data[0] == 0 and data[1] == 0:
                        hdr = None
                    else:
                        raw = bytes(data[:hsz])
                        hdr = hcache.get(raw)
                        if hdr is None:
                            try:
                                hdr = VnetHdr.parse(raw, self._hdr_mrg)
                            except VnetHeaderError:
                                self._drop("rx_bad_vnet_hdr")
                                continue
                            if len(hcache) >= _HDR_CACHE_MAX:
                                hcache.clear()
                            hcache[raw] = hdr
                    # A view past the header: slicing the bytes would copy every 64 KB super-frame.
                    # Read-only: the receiver may keep the view, never change the received bytes.
                    frame: bytes | bytearray | memoryview = memoryview(data).toreadonly()[hsz:ln]
                    ln -= hsz
                else:
                    hdr = None
                    frame = data if pool is None else memoryview(data).toreadonly()[:ln]
                self.frames_in += 1
                self.bytes_in += ln
                if ln > self.largest_in:
                    self.largest_in = ln
                if self._imp_in is not None:
                    self._imp_in.send(bytes(frame), None)  # delivered later by _deliver_impaired
                    continue
                if self._observers:
                    fb = bytes(frame)
                    for obs in self._observers:
                        obs("rx", fb, None)
                vr = self._vnet_receiver
                if vr is not None:
                    self.rx_frames += 1
                    self.rx_bytes += ln
                    vr(frame if self._vnet_views or not hsz else bytes(frame), hdr)
                else:
                    r = self._receiver
                    if r is None:
                        self._drop("rx_no_receiver")
                        continue
                    self.rx_frames += 1
                    self.rx_bytes += ln
                    self.rx_vnet = hdr
                    r(bytes(frame) if hsz else frame)
                if self._gen != gen:
                    break
        finally:
            self.rx_vnet = None
            if n and self._drain_end is not None:
                self._drain_end()
        return n

    def counter_dict(self) -> dict[str, int]:
        """Every counter as one flat dict (for status output and benchmarks)."""
        c = self.counters
        out = {
            "frames_in": self.frames_in,
            "bytes_in": self.bytes_in,
            "rx_frames": self.rx_frames,
            "rx_bytes": self.rx_bytes,
            "frames_offered": c.sent,
            "frames_out": c.delivered,
            "bytes_out": c.bytes_delivered,
            "eagain_out": self.eagain_out,
            "errors_in": self.errors_in,
            "errors_out": self.errors_out,
            "wakeups": self.wakeups,
        }
        for label, pool in (("rx_pool", self._rx_pool), ("slab_pool", self._slab_pool)):
            if pool is not None:
                out[f"{label}_reused"] = pool.reused
                out[f"{label}_allocated"] = pool.allocated
                out[f"{label}_overflow"] = pool.overflow
        for reason, k in self.drops.items():
            out[f"drop_{reason}"] = k
        return out

    def __repr__(self) -> str:
        return (
            f"<TapPort {self.name} in={self.frames_in} out={self.counters.sent} "
            f"drops={sum(self.drops.values())}>"
        )
