"""NDIS 6 buffer model: MDL chains, NET_BUFFER offset arithmetic and NET_BUFFER_LIST (contract §2.1).
Owns the objects every driver passes around; payload bytes are never copied (memoryviews over caller memory).

NDIS name -> Python name:

    MDL / MDL.Next / ByteOffset / ByteCount        Mdl / .next / .byte_offset / .byte_count
    NdisAdjustMdlLength                            Mdl.adjust_length
    NET_BUFFER                                     NetBuffer (.mdl_chain, .current_mdl, .current_mdl_offset,
                                                   .data_offset, .data_length, .protocol_reserved,
                                                   .miniport_reserved)
    NET_BUFFER_LIST                                NetBufferList (.first_net_buffer, .context, .scratch,
                                                   .source_handle, .status, .info, .flags)
    NET_BUFFER_LIST_INFO(nbl, id)                  nbl.info[NblInfo.<id>]
    NDIS_NET_BUFFER_LIST_INFO                      NblInfo
    NdisAdvanceNetBufferDataStart                  advance_net_buffer_data_start / NetBuffer.advance
    NdisRetreatNetBufferDataStart                  retreat_net_buffer_data_start / NetBuffer.retreat
    NdisGetDataBuffer / NdisCopyFromNetBuffer...   NetBuffer.data_views / NetBuffer.copy_data
    NET_BUFFER_FIRST_MDL / NET_BUFFER_CURRENT_MDL  nb.mdl_chain / nb.current_mdl
    NET_BUFFER_LIST_FIRST_NB / NET_BUFFER_NEXT_NB  nbl.first_net_buffer / nb.next
    NET_BUFFER_LIST_NEXT_NBL                       nbl.next
    NET_BUFFER_LIST_STATUS                         nbl.status

Position convention (used by NetBuffer.current_mdl and NetBuffer.locate): a data position is held
by the first MDL of the chain in which it lies strictly inside (offset < byte_count), so zero-length
MDLs and exhausted MDLs are skipped; a position at the very end of the chain is held by the last MDL
with offset == its byte_count. `current_mdl` is None only for an NB without an MDL chain.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Iterator
from enum import IntEnum
from typing import Any

from chimney.ndis.status import NdisStatus

# NBL.status before any driver wrote it: lets the verifier check R-NBL-01 (status written before
# completion). Not an NDIS_STATUS value; is_error() is True for it, so code that forgets to look
# at it fails safe instead of reading a stale SUCCESS.
NBL_STATUS_UNSET = 0xFFFFFFFF

NDIS_OWNER = "NDIS"

_serials = itertools.count(1)
_REPR_LIMIT = 1000


class NdisBufferError(ValueError):
    """A buffer operation that NDIS would refuse (or that would corrupt a chain)."""


class _NoSnapshot:
    __slots__ = ()

    def __repr__(self) -> str:
        return "NO_SNAPSHOT"


NO_SNAPSHOT: Any = _NoSnapshot()  # NetBufferList.nb_snapshot when no structure snapshot is pending


class OwnerToken:
    """An owner name as written by one checked hand-off (see chimney.ndis.ownership): equal to the plain
    name (==, hash, str and format are the name's), but a new object per hand-off that also carries the
    ownership history node (`history`) and SourceHandle (`sh`) of every NBL holding it. The verifier
    moves a chain that arrives as it left the last crossing by checking and rewriting only
    `NetBufferList._owner`: one identity test and one store per NBL.

    Invariant: an NBL whose `_owner` is a token has the token's history and SourceHandle (its own
    `_history`/`_sh` slots are stale); every public setter of owner, history or SourceHandle first
    copies the token's values into the NBL and leaves the plain name, so a write by anyone but the
    verifier's hot path takes the NBL out of its token group. Not a str subclass: creating one of
    those with two attributes costs several times a slotted object, once per chain crossing."""

    __slots__ = ("history", "name", "sh")

    name: str
    history: Any
    sh: Any

    def __eq__(self, other: object) -> bool:
        return self.name == (other.name if type(other) is OwnerToken else other)  # type: ignore[attr-defined]

    def __ne__(self, other: object) -> bool:
        return self.name != (other.name if type(other) is OwnerToken else other)  # type: ignore[attr-defined]

    def __hash__(self) -> int:
        return hash(self.name)

    def __str__(self) -> str:
        return self.name

    def __repr__(self) -> str:
        return repr(self.name)

    def __format__(self, spec: str) -> str:
        return format(self.name, spec)


new_token = object.__new__  # new_token(OwnerToken): a token without __init__ (fields set by the caller)


def make_token(name: str, history: Any, sh: Any) -> OwnerToken:
    t: OwnerToken = new_token(OwnerToken)
    t.name = name
    t.history = history
    t.sh = sh
    return t


def plain_owner(owner: str) -> str:
    """The plain (interned) name behind an owner token."""
    return owner.name if type(owner) is OwnerToken else owner  # type: ignore[attr-defined]


class NblInfo(IntEnum):
    """NDIS_NET_BUFFER_LIST_INFO slot indices, values as in ndis.h (NDIS 6.20 order).

    ndis.h reuses slots: TcpOffloadBytesTransferred shares slot 0 with the checksum info and
    TcpReceiveNoPush slot 2 with the LSO info (chimney NBLs never carry those). The chimney names
    are declared first so they are the canonical member names in reports; the other names are
    aliases of the same member, so setting one overwrites the other exactly as in NDIS.
    """

    TcpOffloadBytesTransferred = 0
    TcpIpChecksumNetBufferListInfo = 0
    IPsecOffloadV1NetBufferListInfo = 1
    IPsecOffloadV2NetBufferListInfo = 1
    TcpReceiveNoPush = 2
    TcpLargeSendNetBufferListInfo = 2
    ClassificationHandleNetBufferListInfo = 3
    Ieee8021QNetBufferListInfo = 4
    NetBufferListCancelId = 5
    MediaSpecificInformation = 6
    NetBufferListFrameType = 7
    NetBufferListProtocolId = 7
    NetBufferListHashValue = 8
    NetBufferListHashInfo = 9
    WfpNetBufferListInfo = 10
    IPsecOffloadV2TunnelNetBufferListInfo = 11
    IPsecOffloadV2HeaderNetBufferListInfo = 12
    NetBufferListCorrelationId = 13
    NetBufferListFilteringInfo = 14
    MediaSpecificInformationEx = 15
    NblOriginalInterfaceIfIndex = 16
    TcpReceiveBytesTransferred = 17


# --------------------------------------------------------------------------------------------- MDL


class Mdl:
    """One memory descriptor: `byte_count` bytes at `byte_offset` inside the backing `buffer`."""

    __slots__ = ("buffer", "byte_count", "byte_offset", "next", "original_byte_count", "pool")

    def __init__(
        self,
        buffer: bytes | bytearray | memoryview,
        byte_offset: int = 0,
        byte_count: int | None = None,
    ) -> None:
        mv = buffer if type(buffer) is memoryview else memoryview(buffer)
        if mv.ndim != 1 or mv.itemsize != 1:
            mv = mv.cast("B")
        size = len(mv)
        if byte_count is None:
            byte_count = size - byte_offset
        if byte_offset < 0 or byte_count < 0 or byte_offset + byte_count > size:
            raise NdisBufferError(
                f"MDL offset {byte_offset} + count {byte_count} outside a backing buffer of {size} bytes"
            )
        self.next: Mdl | None = None
        self.buffer: memoryview = mv
        self.byte_offset: int = byte_offset
        self.byte_count: int = byte_count
        self.original_byte_count: int = byte_count
        self.pool: Any = None

    def view(self) -> memoryview:
        """The described bytes (no copy)."""
        o = self.byte_offset
        return self.buffer[o : o + self.byte_count]

    def adjust_length(self, length: int) -> None:
        """NdisAdjustMdlLength: describe `length` bytes, at most what the backing buffer holds."""
        if length < 0 or self.byte_offset + length > len(self.buffer):
            raise NdisBufferError(
                f"MDL length {length} at offset {self.byte_offset} outside a backing buffer of {len(self.buffer)} bytes"
            )
        self.byte_count = length

    def __repr__(self) -> str:
        return f"<MDL off={self.byte_offset} count={self.byte_count}>"


def chain_mdls(*mdls: Mdl) -> Mdl | None:
    """Link the MDLs in order (last.next = None) and return the head."""
    if not mdls:
        return None
    seen: set[int] = set()
    prev: Mdl | None = None
    for m in mdls:
        if id(m) in seen:
            raise NdisBufferError(f"{m!r} appears twice in one MDL chain (would make a cycle)")
        seen.add(id(m))
        if prev is not None:
            prev.next = m
        prev = m
    assert prev is not None
    prev.next = None
    return mdls[0]


def iter_mdls(head: Mdl | None) -> Iterator[Mdl]:
    m = head
    while m is not None:
        yield m
        m = m.next


def mdl_chain_size(head: Mdl | None) -> int:
    """Bytes described by the whole chain starting at `head`."""
    total = 0
    m = head
    while m is not None:
        total += m.byte_count
        m = m.next
    return total


def _position(head: Mdl | None, offset: int) -> tuple[Mdl | None, int]:
    """(MDL, offset inside it) holding chain offset `offset`, per the module's position convention."""
    m = head
    if m is None:
        return None, 0
    while offset >= m.byte_count and m.next is not None:
        offset -= m.byte_count
        m = m.next
    return m, offset


# ---------------------------------------------------------------------------------------------- NB


class NetBuffer:
    """NET_BUFFER: `data_length` used bytes starting `data_offset` bytes into the MDL chain."""

    __slots__ = (
        "current_mdl",
        "current_mdl_offset",
        "data_length",
        "data_offset",
        "mdl_chain",
        "miniport_reserved",
        "next",
        "pool",
        "protocol_reserved",
    )

    def __init__(self, mdl_chain: Mdl | None = None, data_offset: int = 0, data_length: int = 0) -> None:
        if data_offset < 0 or data_length < 0:
            raise NdisBufferError(f"negative DataOffset {data_offset} / DataLength {data_length}")
        total = mdl_chain_size(mdl_chain)
        if data_offset + data_length > total:
            raise NdisBufferError(
                f"DataOffset {data_offset} + DataLength {data_length} exceed the {total} bytes of the MDL chain"
            )
        self.next: NetBuffer | None = None
        self.mdl_chain: Mdl | None = mdl_chain
        if data_offset == 0 and (mdl_chain is None or mdl_chain.byte_count):
            self.current_mdl: Mdl | None = mdl_chain
            self.current_mdl_offset: int = 0
        else:
            self.current_mdl, self.current_mdl_offset = _position(mdl_chain, data_offset)
        self.data_offset: int = data_offset
        self.data_length: int = data_length
        self.protocol_reserved: list[Any] = [None, None, None, None, None, None]
        self.miniport_reserved: list[Any] = [None, None, None, None]
        self.pool: Any = None

    # -- NdisAdvance/RetreatNetBufferDataStart --------------------------------------------------

    def advance(self, delta: int, free_mdl: Callable[[Mdl], None] | None = None) -> None:
        """NdisAdvanceNetBufferDataStart: give up `delta` bytes of used data at the front.

        Chimney completions always pass FreeMdl = None (they only report consumed/filled bytes); with
        `free_mdl`, MDLs left wholly in front of the data are unlinked and handed to it.
        """
        if delta < 0 or delta > self.data_length:
            raise NdisBufferError(f"advance by {delta} outside the {self.data_length} used bytes of {self!r}")
        self.data_offset += delta
        self.data_length -= delta
        m = self.current_mdl
        if m is None:
            return  # no chain: only delta == 0 can get here
        off = self.current_mdl_offset + delta
        while off >= m.byte_count and m.next is not None:
            off -= m.byte_count
            m = m.next
        self.current_mdl = m
        self.current_mdl_offset = off
        if free_mdl is not None:
            self._free_leading_mdls(free_mdl)

    def _free_leading_mdls(self, free_mdl: Callable[[Mdl], None]) -> None:
        head = self.mdl_chain
        cur = self.current_mdl
        while head is not None and head is not cur:
            nxt = head.next
            self.data_offset -= head.byte_count
            head.next = None
            free_mdl(head)
            head = nxt
        self.mdl_chain = head

    def retreat(self, delta: int) -> None:
        """NdisRetreatNetBufferDataStart within the existing unused space (no back-fill allocation)."""
        if delta < 0 or delta > self.data_offset:
            raise NdisBufferError(
                f"retreat by {delta} needs more than the {self.data_offset} bytes of unused space of {self!r}"
            )
        if delta == 0:
            return
        self.data_offset -= delta
        self.data_length += delta
        off = self.current_mdl_offset
        if delta <= off:
            # Still inside the current MDL; no earlier MDL can hold the new start, because the
            # current one is the first holding a position strictly inside it.
            self.current_mdl_offset = off - delta
        else:
            self.current_mdl, self.current_mdl_offset = _position(self.mdl_chain, self.data_offset)

    # -- data access ------------------------------------------------------------------------------

    def data_views(self, offset: int = 0, length: int | None = None) -> list[memoryview]:
        """The used data (or `length` bytes of it from data offset `offset`), one view per MDL piece."""
        dl = self.data_length
        if length is None:
            length = dl - offset
        if offset < 0 or length < 0 or offset + length > dl:
            raise NdisBufferError(f"range {offset}+{length} outside the {dl} used bytes of {self!r}")
        views: list[memoryview] = []
        if length == 0:
            return views
        m = self.current_mdl
        off = self.current_mdl_offset + offset
        while m is not None:
            count = m.byte_count
            if off < count:
                take = count - off
                start = m.byte_offset + off
                if take >= length:
                    views.append(m.buffer[start : start + length])
                    return views
                views.append(m.buffer[start : start + take])
                length -= take
                off = 0
            else:
                off -= count
            m = m.next
        raise NdisBufferError(f"MDL chain of {self!r} is shorter than its DataOffset + DataLength")

    def copy_data(self, offset: int = 0, length: int | None = None) -> bytes:
        """An explicit copy of used data (for tests and protocols that must copy)."""
        views = self.data_views(offset, length)
        if len(views) == 1:
            return bytes(views[0])
        return b"".join(views)

    def write(self, offset: int, data: bytes | bytearray | memoryview) -> None:
        """Copy `data` into the used data at data offset `offset` (a target filling a posted buffer)."""
        src = data if type(data) is memoryview else memoryview(data)
        if src.ndim != 1 or src.itemsize != 1:
            src = src.cast("B")
        views = self.data_views(offset, len(src))
        if any(v.readonly for v in views):  # refuse before writing anything: no half-written buffer
            raise NdisBufferError(f"{self!r} describes read-only memory; cannot write into it")
        pos = 0
        for v in views:
            k = len(v)
            v[:] = src[pos : pos + k]
            pos += k

    def locate(self, offset: int) -> tuple[Mdl, int]:
        """(MDL, offset inside it) of the byte at data offset `offset` (0 <= offset <= DataLength).

        offset == DataLength gives the position just after the used data (where the next byte would go).
        """
        if offset < 0 or offset > self.data_length:
            raise NdisBufferError(f"offset {offset} outside the {self.data_length} used bytes of {self!r}")
        m = self.current_mdl
        if m is None:
            raise NdisBufferError(f"{self!r} has no MDL chain")
        off = self.current_mdl_offset + offset
        while off >= m.byte_count and m.next is not None:
            off -= m.byte_count
            m = m.next
        return m, off

    def total_size(self) -> int:
        """Bytes described by the whole MDL chain (unused space + used data + slack)."""
        return mdl_chain_size(self.mdl_chain)

    def mdls(self) -> Iterator[Mdl]:
        return iter_mdls(self.mdl_chain)

    def __repr__(self) -> str:
        n = 0
        m = self.mdl_chain
        while m is not None and n < _REPR_LIMIT:
            n += 1
            m = m.next
        mdls = f"{n}" if m is None else f">{n}(cycle?)"
        return f"<NB off={self.data_offset} len={self.data_length} mdls={mdls}>"


def advance_net_buffer_data_start(
    nb: NetBuffer, delta: int, free_mdl: Callable[[Mdl], None] | None = None
) -> None:
    """NdisAdvanceNetBufferDataStart(NetBuffer, DataOffsetDelta, FreeMdl, FreeMdlHandler)."""
    nb.advance(delta, free_mdl)


def retreat_net_buffer_data_start(nb: NetBuffer, delta: int) -> None:
    """NdisRetreatNetBufferDataStart(NetBuffer, DataOffsetDelta, 0, NULL): unused space only."""
    nb.retreat(delta)


# --------------------------------------------------------------------------------------------- NBL


class NetBufferList:
    """NET_BUFFER_LIST: a list of NBs plus per-driver scratch, completion status and OOB info."""

    # owner, history and source_handle are properties over _owner/_history/_sh (see OwnerToken): the
    # checked hot path reads and writes the slots, everyone else the properties.
    __slots__ = (
        "_history",
        "_owner",
        "_sh",
        "context",
        "first_net_buffer",
        "flags",
        "info",
        "miniport_reserved",
        "nb_snapshot",
        "next",
        "pool",
        "protocol_reserved",
        "scratch",
        "serial",
        "status",
    )

    def __init__(self, first_net_buffer: NetBuffer | None = None, owner: str = NDIS_OWNER) -> None:
        self.next: NetBufferList | None = None
        self.first_net_buffer: NetBuffer | None = first_net_buffer
        self.context: list[Any] = []
        self.protocol_reserved: list[Any] = [None, None, None, None]
        self.miniport_reserved: list[Any] = [None, None]
        self.scratch: Any = None
        self._sh: Any = None
        self.status: int = NBL_STATUS_UNSET
        self.info: dict[NblInfo, Any] = {}
        self.flags: int = 0
        self._owner: str = plain_owner(owner)
        self.pool: Any = None
        self.serial: int = next(_serials)
        # Verifier bookkeeping kept on the NBL itself (a slot is cheaper than a tracker dict lookup):
        # the last ownership hops and the NB-list snapshot taken at hand-off (see ownership.py).
        self._history: Any = None
        self.nb_snapshot: Any = NO_SNAPSHOT

    # -- owner / history / SourceHandle (token-aware, see OwnerToken) ------------------------------------

    @property
    def owner(self) -> str:
        """The driver that owns the NBL now (verifier bookkeeping; may be an OwnerToken, equal to the name)."""
        return self._owner

    @owner.setter
    def owner(self, value: str) -> None:
        o = self._owner
        if type(o) is OwnerToken:
            self._history = o.history
            self._sh = o.sh
        self._owner = plain_owner(value)

    @property
    def history(self) -> Any:
        """The ownership history node (see chimney.ndis.ownership.history_hops)."""
        o = self._owner
        return o.history if type(o) is OwnerToken else self._history

    @history.setter
    def history(self, value: Any) -> None:
        o = self._owner
        if type(o) is OwnerToken:
            self._sh = o.sh
            self._owner = plain_owner(o)
        self._history = value

    @property
    def source_handle(self) -> Any:
        """SourceHandle: NDIS-private routing of completions, (binding, previous) per crossing."""
        o = self._owner
        return o.sh if type(o) is OwnerToken else self._sh

    @source_handle.setter
    def source_handle(self, value: Any) -> None:
        o = self._owner
        if type(o) is OwnerToken:
            self._history = o.history
            self._owner = plain_owner(o)
        self._sh = value

    def net_buffers(self) -> Iterator[NetBuffer]:
        nb = self.first_net_buffer
        while nb is not None:
            yield nb
            nb = nb.next

    def data_length(self) -> int:
        total = 0
        nb = self.first_net_buffer
        while nb is not None:
            total += nb.data_length
            nb = nb.next
        return total

    def __repr__(self) -> str:
        # Bounded walk: reprs go into violation messages, which must not hang on a corrupted NB list.
        n = length = 0
        nb = self.first_net_buffer
        while nb is not None and n < _REPR_LIMIT:
            n += 1
            length += nb.data_length
            nb = nb.next
        nbs = f"{n}" if nb is None else f">{n}(cycle?)"
        return f"<NBL#{self.serial} owner={self.owner} nb={nbs} len={length} status={status_text(self.status)}>"


def status_text(status: int) -> str:
    """Short status name for reports ("SUCCESS", "PENDING", "unset", or hex)."""
    if status == NBL_STATUS_UNSET:
        return "unset"
    try:
        return NdisStatus(status).name
    except ValueError:
        return f"0x{status:08X}"


def chain_net_buffers(*nbs: NetBuffer) -> NetBuffer | None:
    """Link NBs in order (creator only: R-NBL-03) and return the first."""
    if not nbs:
        return None
    seen: set[int] = set()
    prev: NetBuffer | None = None
    for nb in nbs:
        if id(nb) in seen:
            raise NdisBufferError(f"{nb!r} appears twice in one NB list (would make a cycle)")
        seen.add(id(nb))
        if prev is not None:
            prev.next = nb
        prev = nb
    assert prev is not None
    prev.next = None
    return nbs[0]


def iter_nbl_chain(head: NetBufferList | None) -> Iterator[NetBufferList]:
    nbl = head
    while nbl is not None:
        yield nbl
        nbl = nbl.next


def chain_nbls(nbls: Iterable[NetBufferList]) -> NetBufferList | None:
    """Link the NBLs in order (last.next = None) and return the head; None for an empty iterable."""
    head: NetBufferList | None = None
    prev: NetBufferList | None = None
    seen: set[int] = set()
    for nbl in nbls:
        if nbl.serial in seen:
            raise NdisBufferError(f"{nbl!r} appears twice in one NBL chain (would make a cycle)")
        seen.add(nbl.serial)
        if prev is None:
            head = nbl
        else:
            prev.next = nbl
        prev = nbl
    if prev is not None:
        prev.next = None
    return head


def nbl_chain_length(head: NetBufferList | None) -> int:
    n = 0
    nbl = head
    while nbl is not None:
        n += 1
        nbl = nbl.next
    return n


def nbl_chain_tail(head: NetBufferList | None) -> NetBufferList | None:
    """Last NBL of a chain (None for an empty chain)."""
    nbl = head
    if nbl is None:
        return None
    while nbl.next is not None:
        nbl = nbl.next
    return nbl


def split_nbl_chain(head: NetBufferList | None) -> list[NetBufferList]:
    """The chain as a list with every .next cleared (for completing NBLs one by one)."""
    out: list[NetBufferList] = []
    nbl = head
    while nbl is not None:
        nxt = nbl.next
        nbl.next = None
        out.append(nbl)
        nbl = nxt
    return out


def mdls_over(data: bytes | bytearray | memoryview, mdl_size: int | None = None) -> Mdl | None:
    """An MDL chain describing `data` (split every `mdl_size` bytes), no copy; None for empty data."""
    mv = data if type(data) is memoryview else memoryview(data)
    if mv.ndim != 1 or mv.itemsize != 1:
        mv = mv.cast("B")
    size = len(mv)
    if mdl_size is not None and mdl_size <= 0:
        raise NdisBufferError(f"mdl_size must be positive, not {mdl_size}")
    if mdl_size is None or mdl_size >= size:
        return Mdl(mv) if size else None
    return chain_mdls(*(Mdl(mv, o, min(mdl_size, size - o)) for o in range(0, size, mdl_size)))


def nbl_from_bytes(
    data: bytes | bytearray | memoryview,
    owner: str,
    *,
    mdl_size: int | None = None,
    data_offset: int = 0,
) -> NetBufferList:
    """One NBL, one NB over `data` (used data starts at `data_offset`), MDLs over the caller's memory."""
    head = mdls_over(data, mdl_size)
    size = mdl_chain_size(head)
    if data_offset < 0 or data_offset > size:
        raise NdisBufferError(f"data_offset {data_offset} outside {size} bytes of data")
    return NetBufferList(NetBuffer(head, data_offset, size - data_offset), owner)
