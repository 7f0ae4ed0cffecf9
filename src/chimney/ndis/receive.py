"""The NDIS 6 non-offload receive path (NdisMIndicateReceiveNetBufferLists / NdisReturnNetBufferLists with a
per-NBL reference count over every bound protocol) and an example NIC receive ring that recycles its NBLs.

NDIS name -> Python name: NdisMIndicateReceiveNetBufferLists -> Ndis.m_indicate_receive_net_buffer_lists,
NdisReturnNetBufferLists -> Ndis.return_net_buffer_lists, NDIS_RECEIVE_FLAGS_RESOURCES ->
NDIS_RECEIVE_FLAGS_RESOURCES. `ReceivePath` is a mixin of `chimney.ndis.core.Ndis`.
"""

from __future__ import annotations

import itertools
from collections import deque
from typing import TYPE_CHECKING, Any

from chimney.ndis.buffers import NDIS_OWNER, NetBufferList
from chimney.ndis.pool import NblPool

if TYPE_CHECKING:
    from chimney.ndis.core import Adapter, Binding

NDIS_RECEIVE_FLAGS_DISPATCH_LEVEL = 0x00000001
NDIS_RECEIVE_FLAGS_RESOURCES = 0x00000002
NDIS_RETURN_FLAGS_DISPATCH_LEVEL = 0x00000001


class ReceivePath:
    """Mixin of `Ndis`: the non-offload receive path.

    Without RESOURCES every running binding gets the chain; each protocol owns the NBLs it was given
    until it returns them, and NDIS calls MiniportReturnNetBufferLists exactly once per NBL after every
    protocol returned it. With RESOURCES the miniport keeps ownership: protocols must copy what they
    need before returning from ProtocolReceiveNetBufferLists, and may not return (or keep) those NBLs.
    """

    # Provided by Ndis.
    _chk: Any
    verifier: Any
    tracker: Any
    counters: dict[str, int]

    def m_indicate_receive_net_buffer_lists(
        self,
        miniport_handle: Adapter,
        nbl_chain: NetBufferList,
        port: int = 0,
        num: int | None = None,
        receive_flags: int = 0,
    ) -> None:
        """NdisMIndicateReceiveNetBufferLists (`num` = NumberOfNetBufferLists, counted when None)."""
        adapter = miniport_handle
        running = _binding_running()
        bindings = [b for b in adapter.bindings if b.state is running]
        nbls: list[NetBufferList] = []
        nbl: NetBufferList | None = nbl_chain
        while nbl is not None:
            nbls.append(nbl)
            nbl = nbl.next
        if num is None:
            num = len(nbls)
        elif num != len(nbls):
            raise ValueError(f"NumberOfNetBufferLists {num} but the chain holds {len(nbls)} NBLs")
        chk = self._chk
        if chk is not None:
            chk.rx_indicate(adapter, nbls)
        if receive_flags & NDIS_RECEIVE_FLAGS_RESOURCES:
            self._indicate_resources(adapter, bindings, nbls, port, num, receive_flags)
            return
        if not bindings:
            # Nobody to indicate to: NDIS hands the NBLs straight back.
            self.counters["rx_no_binding"] = self.counters.get("rx_no_binding", 0) + len(nbls)
            if chk is not None:
                for n in nbls:
                    n.owner = adapter.owner
            adapter.driver.return_net_buffer_lists(adapter.context, nbl_chain, 0)
            return
        refs = adapter.rx_refs
        count = len(bindings)
        for n in nbls:
            refs[n.serial] = [n, count, set(bindings) if chk is not None else None]
        if chk is not None:
            to = bindings[0].protocol.name if count == 1 else NDIS_OWNER
            for n in nbls:
                n.owner = to
        multi = count > 1
        for b in bindings:
            if multi:
                _relink(nbls)
            b.protocol.receive_net_buffer_lists(b.context, nbls[0], port, num, receive_flags)

    def _indicate_resources(
        self,
        adapter: Adapter,
        bindings: list[Binding],
        nbls: list[NetBufferList],
        port: int,
        num: int,
        receive_flags: int,
    ) -> None:
        chk = self._chk
        self.counters["rx_resources_indications"] = self.counters.get("rx_resources_indications", 0) + 1
        original_owner = nbls[0].owner if nbls else adapter.owner
        for b in bindings:
            _relink(nbls)
            if chk is not None:
                for n in nbls:
                    n.owner = b.protocol.name
            b.protocol.receive_net_buffer_lists(b.context, nbls[0], port, num, receive_flags)
            if chk is not None:
                chk.rx_resources_returned(b, nbls, original_owner)
        _relink(nbls)

    def return_net_buffer_lists(self, binding: Binding, nbl_chain: NetBufferList, return_flags: int = 0) -> None:
        """NdisReturnNetBufferLists: drop this binding's reference; NBLs nobody holds any more go back to
        the miniport in one MiniportReturnNetBufferLists call."""
        adapter = binding.adapter
        refs = adapter.rx_refs
        chk = self._chk
        back: list[NetBufferList] = []
        nbl: NetBufferList | None = nbl_chain
        while nbl is not None:
            nxt = nbl.next
            e = refs.get(nbl.serial)
            if chk is not None:
                if not chk.rx_return(binding, nbl, e):
                    self.counters["rx_bad_returns"] = self.counters.get("rx_bad_returns", 0) + 1
                    nbl = nxt
                    continue
            elif e is None:
                self.counters["rx_bad_returns"] = self.counters.get("rx_bad_returns", 0) + 1
                nbl = nxt
                continue
            assert e is not None
            e[1] -= 1
            if e[1] == 0:
                del refs[nbl.serial]
                back.append(nbl)
            nbl = nxt
        if not back:
            return
        _relink(back)
        if chk is not None:
            for n in back:
                n.owner = adapter.owner
        adapter.driver.return_net_buffer_lists(adapter.context, back[0], return_flags)


_RUNNING: Any = None


def _binding_running() -> Any:
    """BindingState.RUNNING, imported on first use (core imports this module)."""
    global _RUNNING
    if _RUNNING is None:
        from chimney.ndis.core import BindingState

        _RUNNING = BindingState.RUNNING
    return _RUNNING


def _relink(nbls: list[NetBufferList]) -> None:
    """Restore the chain order NDIS indicated (a protocol may have re-linked the NBLs it held)."""
    for a, b in itertools.pairwise(nbls):
        a.next = b
    if nbls:
        nbls[-1].next = None


class Ndis6ReceiveRing:
    """An example NIC receive ring for a miniport: `size` NBLs (one NB, `buffer_size` bytes each) allocated
    once from an NblPool and recycled when NDIS returns them instead of being freed.

    When fewer than `low_water` NBLs would remain free after a receive, the frames are indicated with
    NDIS_RECEIVE_FLAGS_RESOURCES (protocols copy, the ring keeps the NBLs); with no free NBL a frame is
    dropped and counted."""

    def __init__(
        self,
        ndis: Any,
        adapter: Adapter,
        *,
        size: int = 64,
        buffer_size: int = 2048,
        low_water: int = 4,
    ) -> None:
        if size <= 0 or buffer_size <= 0 or not 0 <= low_water < size:
            raise ValueError(f"bad ring geometry size={size} buffer_size={buffer_size} low_water={low_water}")
        self.ndis = ndis
        self.adapter = adapter
        self.low_water = low_water
        self.buffer_size = buffer_size
        self.pool = NblPool(
            f"{adapter.name}-rx", adapter.owner, data_size=buffer_size, capacity=size, tracker=ndis.tracker
        )
        self.free: deque[NetBufferList] = deque()
        for _ in range(size):
            nbl = self.pool.allocate()
            assert nbl is not None
            self.free.append(nbl)
        self.counters = {
            "allocated": size,
            "indicated": 0,
            "recycled": 0,
            "resources_indications": 0,
            "resources_frames": 0,
            "dropped_no_buffer": 0,
            "dropped_too_big": 0,
        }

    def receive(self, frames: list[bytes] | list[bytearray] | list[memoryview], port: int = 0) -> int:
        """DMA `frames` into free ring NBLs and indicate them as one chain; returns frames indicated."""
        taken: list[NetBufferList] = []
        counters = self.counters
        for frame in frames:
            if len(frame) > self.buffer_size:
                counters["dropped_too_big"] += 1
                continue
            if not self.free:
                counters["dropped_no_buffer"] += 1
                continue
            nbl = self.free.popleft()
            nb = nbl.first_net_buffer
            assert nb is not None and nb.mdl_chain is not None
            mdl = nb.mdl_chain
            n = len(frame)
            mdl.buffer[mdl.byte_offset : mdl.byte_offset + n] = frame
            nb.data_offset = 0
            nb.current_mdl = mdl
            nb.current_mdl_offset = 0
            nb.data_length = n
            nbl.status = 0
            nbl.next = None
            taken.append(nbl)
        if not taken:
            return 0
        _relink(taken)
        low = len(self.free) < self.low_water
        flags = NDIS_RECEIVE_FLAGS_RESOURCES if low else 0
        counters["indicated"] += len(taken)
        self.ndis.m_indicate_receive_net_buffer_lists(self.adapter, taken[0], port, len(taken), flags)
        if low:
            counters["resources_indications"] += 1
            counters["resources_frames"] += len(taken)
            self.free.extend(taken)
        return len(taken)

    def recycle(self, nbl_chain: NetBufferList | None) -> int:
        """MiniportReturnNetBufferLists body: put the returned NBLs back on the free list."""
        n = 0
        nbl = nbl_chain
        while nbl is not None:
            nxt = nbl.next
            nbl.next = None
            nbl.info.clear()
            self.free.append(nbl)
            n += 1
            nbl = nxt
        self.counters["recycled"] += n
        return n

    @property
    def outstanding(self) -> int:
        """NBLs lent to NDIS/protocols right now."""
        return self.pool.allocated - self.pool.freed - len(self.free)

    def close(self) -> None:
        """Free every NBL back to the pool (all must be home, else the leak report says which)."""
        if self.outstanding:
            raise RuntimeError(f"ring {self.pool.name} closed with {self.outstanding} NBL(s) out\n{self.pool.leak_report()}")
        while self.free:
            self.pool.free(self.free.popleft())
