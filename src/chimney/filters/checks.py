"""Contract checks for intermediate drivers (R-IM-02..12) that the NDIS core does not make itself: the full
chimney verifier (`ChimneyChecks`) plus the IM rules, on the core's crossing methods and edge hooks; used as
`Ndis(..., checks=ImChecks)`.

What each check watches (an "IM" is a driver whose virtual miniport sits on a binding of its own):
  R-IM-04  the IM's lower block lists use the IM's own NDIS_OFFLOAD_HANDLE, for the same object, for life
  R-IM-05  a state operation an IM issues overlays a tree handed to it, same operation, call entry in ImReserved
  R-IM-06  ImReserved and SourceHandle hold what NDIS handed to the IM when it completes upward
  R-IM-07  I/O re-issued with the same function, own handle, identical NBL pointers and Flags
  R-IM-08  I/O completions re-issued with the same completion function and identical NBL pointers
  R-IM-09  receive returns propagated synchronously with identical NBL pointers
  R-IM-10  indications re-issued with the upper handle and unchanged arguments; upper result returned down
  R-IM-11  with several upper interfaces, completions reach the interface the NBL came from
  R-IM-12  a send the IM completes itself: first NBL REQUEST_UPLOAD, the rest UPLOAD_REQUESTED
  R-IM-02/03  OID_TCP_TASK_OFFLOAD queries / chimney sets at a chimney IM
"""

from __future__ import annotations

from typing import Any

from chimney.ndis.blocklist import NdisOffloadHandle, NdisOffloadHandleRef, iter_tree
from chimney.ndis.buffers import NetBufferList
from chimney.ndis.checks_chimney import ChimneyChecks
from chimney.ndis.core import Adapter, Binding, Ndis, Op
from chimney.ndis.oid import (
    CONFIGURATION_SETS,
    NDIS_ANSWERED_QUERIES,
    OID_TCP_CONNECTION_OFFLOAD_PARAMETERS,
    OID_TCP_TASK_OFFLOAD,
    NdisOidRequest,
    NdisRequestType,
)
from chimney.ndis.status import NdisStatus

__all__ = ["ImChecks", "NdisSourceStamp", "im_checks"]

_IO_CALLS = frozenset({"NdisOffloadTcpSend", "NdisOffloadTcpReceive", "NdisOffloadTcpDisconnect", "NdisOffloadTcpForward"})
_IO_COMPLETIONS = frozenset(
    {
        "NdisTcpOffloadSendComplete",
        "NdisTcpOffloadReceiveComplete",
        "NdisTcpOffloadDisconnectComplete",
        "NdisTcpOffloadForwardComplete",
    }
)
_SEND = "NdisOffloadTcpSend"
_SEND_COMPLETE = "NdisTcpOffloadSendComplete"


class NdisSourceStamp:
    """What NDIS keeps in a protocol block list's SourceHandle while it owns it (the real NDIS uses the
    field for its own routing, which is why an IM must save and restore it: R-IM-05/06)."""

    __slots__ = ("binding",)

    def __init__(self, binding: Binding) -> None:
        self.binding = binding

    def __repr__(self) -> str:
        return f"<NdisSourceStamp {self.binding.name}>"


class _Frame:
    """An indication delivered to IM protocol edges, waiting for them to re-indicate it upward."""

    __slots__ = ("args", "done", "ims", "kind", "payload", "result")

    def __init__(self, kind: str, ims: dict[Any, Any], payload: Any, args: tuple[Any, ...]) -> None:
        self.kind = kind
        self.ims = ims  # IM driver -> the upper NdisOffloadHandleRef it must indicate with (or None)
        self.payload = payload  # the NBL / block list passed to the IM
        self.args = args  # the other arguments that must be passed on unchanged
        self.done: set[int] = set()
        self.result: Any = None


class _ImToken:
    """Marks a hook token ImChecks wrapped around its base's token (frames of an IM relay)."""


def _is_vm(adapter: Adapter) -> bool:
    return adapter.lower_binding is not None


def _same_ref(a: Any, b: Any) -> bool:
    return (
        isinstance(a, NdisOffloadHandleRef)
        and isinstance(b, NdisOffloadHandleRef)
        and a.binding is b.binding
        and a.upper is b.upper
    )


class ImChecks(ChimneyChecks):
    """ChimneyChecks plus the IM rules. Exists only while the verifier is on, like its base."""

    # send/complete/delivered add checks only for chimney I/O (_IO_CALLS / _IO_COMPLETIONS).
    NORMAL_NBL_PASSTHROUGH = ("send", "complete", "delivered")

    def __init__(self, ndis: Ndis) -> None:
        super().__init__(ndis)
        # id(IM own handle) -> (own handle, upper NdisOffloadHandleRef) for every object offloaded via an IM.
        self.handle_map: dict[int, tuple[NdisOffloadHandle, NdisOffloadHandleRef]] = {}
        self._snap: dict[int, tuple[Any, Any, Any, Any]] = {}  # id(pnode) -> (pnode, im0, im1, SourceHandle)
        self._at_im: dict[int, tuple[Adapter, str, Any, Any, int]] = {}  # serial -> (vm, what, handle, flags, index)
        self._owed: dict[int, str] = {}  # serial -> completion delivered to an IM's lower edge, not yet re-issued
        self._ret_pending: dict[int, Adapter] = {}
        self._ret_stack: list[list[int] | None] = []
        self._frames: list[_Frame] = []
        self._oid_down: set[tuple[int, int]] = set()
        self._cur_handle: Any = None  # NDIS_OFFLOAD_HANDLE / Flags of the chimney I/O call being routed
        self._cur_flags: Any = None

    # -- chimney I/O entry: the handle and Flags `send` compares a re-issue with (R-IM-07) ----------------------

    def io_enter(
        self, kind: str, handle: NdisOffloadHandle, nbl: NetBufferList, extra: tuple[int, ...]
    ) -> Any:
        self._cur_handle = handle
        self._cur_flags = extra[0] if extra else None  # only NdisOffloadTcpDisconnect has Flags
        return super().io_enter(kind, handle, nbl, extra)

    # -- state operations (R-IM-04/05/06) --------------------------------------------------------------------

    def state_op(self, op: Op, binding: Binding, pbl: Any) -> None:
        to_im = _is_vm(binding.adapter)
        for p in iter_tree(pbl):
            p.source_handle = NdisSourceStamp(binding)
            if to_im:
                imr = p.im_reserved
                self._snap[id(p)] = (p, imr[0], imr[1], p.source_handle)
        if binding.upper_adapter is not None:
            self._check_state_reissue(op, binding, pbl)
        super().state_op(op, binding, pbl)

    def _check_state_reissue(self, op: Op, binding: Binding, pbl: Any) -> None:
        v = self.v
        im = binding.protocol
        pnodes = list(iter_tree(pbl))
        match: tuple[Op, list[Any]] | None = None
        for vm in self.ndis.adapters:
            if vm.driver is not im or not _is_vm(vm):
                continue
            for uop, root in vm.outstanding_roots.values():
                mnodes = list(iter_tree(root))
                if len(mnodes) == len(pnodes) and all(m.im_reserved is p.im_reserved for m, p in zip(mnodes, pnodes)):
                    match = (uop, mnodes)
                    break
            if match is not None:
                break
        if not v.check(
            match is not None,
            "R-IM-05",
            f"{im.name} issued Ndis{op.value.title()}Offload with a tree that overlays no block list handed to it",
            pbl,
        ):
            return
        assert match is not None
        uop, mnodes = match
        v.check(uop is op, "R-IM-05", f"{im.name} propagated a {uop.value} operation as {op.value}", pbl)
        for m, p in zip(mnodes, pnodes):
            snap = self._snap.get(id(m.ndis_reserved[0]))
            if snap is not None:
                v.check(
                    p.im_reserved[0] is not None and p.im_reserved[0] is not snap[1],
                    "R-IM-05",
                    f"{im.name} did not store its call entry in ImReserved of {m!r}",
                    m,
                )
            self._check_node_handle(op, im, m, p)

    def _check_node_handle(self, op: Op, im: Any, m: Any, p: Any) -> None:
        v = self.v
        mslot = m.miniport_offload_context
        h = p.offload_handle
        if mslot is None:
            v.check(h is None, "R-IM-05", f"{im.name} turned a placeholder into a referencing node", m)
            return
        upper = m.ndis_offload_handle
        if not v.check(
            isinstance(h, NdisOffloadHandle) and isinstance(upper, NdisOffloadHandleRef) and h is not upper.upper,
            "R-IM-04",
            f"{im.name} passed down {h!r} instead of its own NDIS_OFFLOAD_HANDLE for {m!r}",
            m,
        ):
            return
        if op is Op.INITIATE and mslot.value is None:
            v.check(
                h.miniport_offload_context.value is None,
                "R-IM-04",
                f"{im.name} offloads a new object with a handle already in use ({h!r})",
                m,
            )
            self.handle_map[id(h)] = (h, upper)
            return
        e = self.handle_map.get(id(h))
        v.check(
            e is not None and e[0] is h and e[1].upper is upper.upper,
            "R-IM-04",
            f"{im.name} lost the offload entry of {m!r}: {h!r} is not its handle for that object",
            m,
        )

    def state_complete(self, op: Op, adapter: Adapter, mbl: Any) -> bool:
        v = self.v
        if _is_vm(adapter):
            name = adapter.driver.name
            for node in iter_tree(mbl):
                pnode = node.ndis_reserved[0]
                snap = self._snap.pop(id(pnode), None)
                if snap is None or snap[0] is not pnode:
                    continue
                _, im0, im1, sh = snap
                v.check(
                    node.im_reserved[0] is im0 and node.im_reserved[1] is im1,
                    "R-IM-06",
                    f"{name} completed {op.value} without restoring ImReserved "
                    f"({node.im_reserved!r}, handed over as {[im0, im1]!r})",
                    node,
                )
                v.check(
                    node.source_handle is sh,
                    "R-IM-06",
                    f"{name} completed {op.value} without restoring SourceHandle ({node.source_handle!r}, not {sh!r})",
                    node,
                )
        route = mbl.ndis_reserved[1]
        if type(route) is tuple and route[0] is op and route[1].upper_adapter is not None:
            for node in iter_tree(mbl):
                h = getattr(node.ndis_reserved[0], "offload_handle", None)
                e = self.handle_map.get(id(h)) if h is not None else None
                if e is None or e[0] is not h:
                    continue
                ended = (op is Op.TERMINATE and node.status == NdisStatus.SUCCESS) or (
                    op is Op.INITIATE and h.miniport_offload_context.value is None
                )
                if ended:
                    del self.handle_map[id(h)]
        return super().state_complete(op, adapter, mbl)

    # -- chimney I/O (R-IM-07/08/11/12) ----------------------------------------------------------------------------

    def send(self, binding: Binding, head: NetBufferList | None, what: str) -> None:
        if what in _IO_CALLS and head is not None:
            if binding.upper_adapter is not None:
                self._check_io_reissue(binding, head, what)
            adapter = binding.adapter
            if _is_vm(adapter):
                handle = self._cur_handle
                flags = self._cur_flags
                at_im = self._at_im
                i = 0
                n: NetBufferList | None = head
                while n is not None:
                    at_im[n.serial] = (adapter, what, handle, flags, i)
                    i += 1
                    n = n.next
        super().send(binding, head, what)

    def _check_io_reissue(self, binding: Binding, head: NetBufferList, what: str) -> None:
        v = self.v
        v.check(True, "R-IM-07", "")  # coverage: one count per propagated chain
        handle = self._cur_handle
        flags_now = self._cur_flags
        e = self.handle_map.get(id(handle))
        own_upper = e[1].upper if e is not None and e[0] is handle else None
        at_im = self._at_im
        n: NetBufferList | None = head
        while n is not None:
            rec = at_im.pop(n.serial, None)
            if rec is None:
                v.fail("R-IM-07", f"{binding.protocol.name} issued {what} with {n!r}, an NBL it was not given (a copy?)", n)
            elif rec[1] != what or rec[3] != flags_now or rec[2] is not own_upper:
                im = binding.protocol.name
                if rec[1] != what:
                    v.fail("R-IM-07", f"{im} propagated {rec[1]} as {what}", n)
                elif rec[3] != flags_now:
                    v.fail("R-IM-07", f"{im} changed the disconnect Flags {rec[3]!r} to {flags_now!r}", n)
                else:
                    v.fail("R-IM-07", f"{im} propagated {what} with {handle!r}, not its own handle for that connection", n)
            n = n.next

    def io_return(self, status: int, rule_id: str, what: str, nbl: NetBufferList) -> None:
        rec = self._at_im.get(nbl.serial)
        if rec is not None:
            self.v.fail(
                "R-IM-07",
                f"{rec[0].driver.name} neither propagated {what} of {nbl!r} nor completed it",
                nbl,
            )
        super().io_return(status, rule_id, what, nbl)

    def complete(self, adapter: Adapter, head: NetBufferList, what: str) -> list[tuple[Binding, NetBufferList, int]]:
        if what in _IO_COMPLETIONS and _is_vm(adapter):
            self._check_io_complete_up(adapter, head, what)
        return super().complete(adapter, head, what)

    def _check_io_complete_up(self, adapter: Adapter, head: NetBufferList, what: str) -> None:
        v = self.v
        v.check(True, "R-IM-08", "")  # coverage: one count per propagated completion
        im = adapter.driver
        multi = sum(1 for a in self.ndis.adapters if a.driver is im and _is_vm(a)) > 1
        if multi:
            v.check(True, "R-IM-11", "")
        owed_map = self._owed
        n: NetBufferList | None = head
        while n is not None:
            owed = owed_map.pop(n.serial, None)
            if owed is None:
                self._self_completed(im, n, what)
            elif owed != what:
                v.fail("R-IM-08", f"{im.name} propagated {owed} as {what}", n)
            if multi:
                sh = n.source_handle
                if not (type(sh) is tuple and sh[0].adapter is adapter):
                    v.fail(
                        "R-IM-11",
                        f"{im.name} routed {what} of {n!r} to {adapter.name}, not the upper interface it came from",
                        n,
                    )
            n = n.next

    def _self_completed(self, im: Any, n: NetBufferList, what: str) -> None:
        """An NBL completed upward that no completion brought to the IM: R-IM-12 or a broken IM."""
        v = self.v
        held = self._at_im.pop(n.serial, None)
        if held is None:
            v.fail("R-IM-08", f"{im.name} completed {n!r} with {what}, an NBL it was never handed (a copy?)", n)
        elif what == _SEND_COMPLETE and held[1] == _SEND:
            expected = NdisStatus.REQUEST_UPLOAD if held[4] == 0 else NdisStatus.UPLOAD_REQUESTED
            v.check(
                n.status == expected,
                "R-IM-12",
                f"{im.name} completed send NBL #{held[4]} itself with 0x{n.status:08X}, not {expected.name}",
                n,
            )
        else:
            v.fail("R-IM-07", f"{im.name} completed a {held[1]} itself instead of propagating it", n)

    def delivered(self, binding: Binding, head: NetBufferList, n: int, what: str) -> None:
        if binding.upper_adapter is not None and what in _IO_COMPLETIONS:
            owed = self._owed
            nbl: NetBufferList | None = head
            while nbl is not None:
                owed[nbl.serial] = what
                nbl = nbl.next
        super().delivered(binding, head, n, what)

    # -- receive return (R-IM-09) ------------------------------------------------------------------------------

    def receive_return(self, binding: Binding, head: NetBufferList) -> None:
        v = self.v
        if binding.upper_adapter is not None:
            n: NetBufferList | None = head
            pending = self._ret_pending
            while n is not None:
                if pending.pop(n.serial, None) is None:
                    v.fail("R-IM-09", f"{binding.protocol.name} returned {n!r}, which was not returned to it (a copy?)", n)
                n = n.next
            v.count("R-IM-09")
        if _is_vm(binding.adapter):
            serials: list[int] = []
            n = head
            while n is not None:
                self._ret_pending[n.serial] = binding.adapter
                serials.append(n.serial)
                n = n.next
            self._ret_stack.append(serials)
        else:
            self._ret_stack.append(None)
        super().receive_return(binding, head)

    def receive_return_status(self, status: int, head: NetBufferList) -> None:
        serials = self._ret_stack.pop() if self._ret_stack else None
        if serials:
            left = [s for s in serials if s in self._ret_pending]
            for s in left:
                del self._ret_pending[s]
            if left:
                self.v.fail("R-IM-09", f"receive return of {len(left)} NBL(s) not propagated synchronously by the IM", head)
            else:
                self.v.count("R-IM-09")
        super().receive_return_status(status, head)

    # -- indications (R-IM-10) ------------------------------------------------------------------------------------

    def _match(self, kind: str, vm: Adapter) -> _Frame | None:
        im = vm.driver
        for f in reversed(self._frames):
            if f.kind == kind and im in f.ims:
                return f
        return None

    def _reissue(self, kind: str, vm: Adapter, handle: Any, payload: Any, args: tuple[Any, ...]) -> _Frame | None:
        """Per indication and IM: messages are built only when a check fails."""
        v = self.v
        f = self._match(kind, vm)
        im = vm.driver
        if f is None:
            v.fail("R-IM-10", f"{im.name} indicated a {kind} it never received", payload)
            return None
        expected = f.ims[im]
        f.done.add(id(im))
        if kind == "offload event":
            same_payload = (payload is None) == (f.payload is None) and (
                payload is None
                or (len(payload.state) == len(f.payload.state) and all(a is b for a, b in zip(payload.state, f.payload.state)))
            )
        else:
            same_payload = payload is f.payload
        if not same_payload:
            v.fail("R-IM-10", f"{im.name} re-indicated a {kind} with different data ({payload!r})", payload)
        if args != f.args:
            v.fail("R-IM-10", f"{im.name} changed the {kind} arguments {f.args!r} to {args!r}", payload)
        if expected is not None and not _same_ref(handle, expected):
            v.fail(
                "R-IM-10",
                f"{im.name} re-indicated a {kind} with {handle!r}, not the upper handle of its offload entry",
                payload,
            )
        v.count("R-IM-10")
        return f

    def _expected(self, handle: Any) -> Any:
        e = self.handle_map.get(id(handle.upper)) if isinstance(handle, NdisOffloadHandleRef) else None
        return e[1] if e is not None and e[0] is handle.upper else None

    def _finish(self, f: _Frame, kind: str) -> None:
        v = self.v
        for im in f.ims:
            if id(im) in f.done:
                v.count("R-IM-10")
            else:
                v.fail("R-IM-10", f"{im.name} did not re-indicate a {kind}", f.payload)

    def indication_enter(self, ref: NdisOffloadHandleRef, nbl: NetBufferList, status: int) -> Any:
        binding = ref.binding
        parent = None
        if _is_vm(binding.adapter):
            parent = self._reissue("receive indication", binding.adapter, ref, nbl, (status,))
        sup = super().indication_enter(ref, nbl, status)
        frame = None
        if binding.upper_adapter is not None:
            frame = _Frame("receive indication", {binding.protocol: self._expected(ref)}, nbl, (status,))
            self._frames.append(frame)
        return sup if parent is None and frame is None else (_ImToken, sup, frame, parent)

    def indication_exit(self, ref: NdisOffloadHandleRef, token: Any, result: tuple[int, int] | None) -> None:
        if type(token) is not tuple or token[0] is not _ImToken:
            super().indication_exit(ref, token, result)
            return
        _, sup, frame, parent = token
        super().indication_exit(ref, sup, result)
        if frame is not None:
            self._frames.remove(frame)
            if result is not None:
                self._finish(frame, "receive indication")
                if frame.result is not None and tuple(result) != frame.result:
                    self.v.fail(
                        "R-IM-10",
                        f"{ref.binding.protocol.name} returned {tuple(result)!r} downward; the upper driver "
                        f"answered {frame.result!r}",
                        frame.payload,
                    )
        if parent is not None and result is not None:
            parent.result = tuple(result)

    def event_enter(self, ref: NdisOffloadHandleRef, event_type: int, info: int) -> Any:
        binding = ref.binding
        args = (event_type, info)
        if _is_vm(binding.adapter):
            self._reissue("TCP event", binding.adapter, ref, None, args)
        sup = super().event_enter(ref, event_type, info)
        if binding.upper_adapter is None:
            return sup
        frame = _Frame("TCP event", {binding.protocol: self._expected(ref)}, None, args)
        self._frames.append(frame)
        return (_ImToken, sup, frame)

    def event_exit(self, ref: NdisOffloadHandleRef, token: Any, completed: bool) -> None:
        if type(token) is not tuple or token[0] is not _ImToken:
            super().event_exit(ref, token, completed)
            return
        _, sup, frame = token
        super().event_exit(ref, sup, completed)
        self._frames.remove(frame)
        if completed:
            self._finish(frame, "TCP event")

    def offload_event_enter(self, adapter: Adapter, mbl: Any, code: int) -> Any:
        ref = mbl.ndis_offload_handle if mbl is not None else None
        if _is_vm(adapter):
            self._reissue("offload event", adapter, ref, mbl, (code,))
        if isinstance(ref, NdisOffloadHandleRef):
            targets = [ref.binding]
        else:
            targets = [b for b in adapter.bindings if b.dh.client_generic is not None]
        ims = {b.protocol: self._expected(ref) for b in targets if b.upper_adapter is not None}
        sup = super().offload_event_enter(adapter, mbl, code)
        if not ims:
            return sup
        frame = _Frame("offload event", ims, mbl, (code,))
        self._frames.append(frame)  # pushed last: nothing between here and the exit hook can skip it
        return (_ImToken, sup, frame)

    def offload_event_exit(self, adapter: Adapter, token: Any, completed: bool) -> None:
        if type(token) is not tuple or token[0] is not _ImToken:
            super().offload_event_exit(adapter, token, completed)
            return
        _, sup, frame = token
        super().offload_event_exit(adapter, sup, completed)
        self._frames.remove(frame)
        if completed:
            self._finish(frame, "offload event")

    # -- OIDs (R-IM-02, R-IM-03) ----------------------------------------------------------------------------------

    def oid_enter(self, binding: Binding, request: NdisOidRequest) -> Any:
        adapter = binding.adapter
        if binding.upper_adapter is not None:
            self._oid_down.add((request.request_id, id(binding.upper_adapter)))
        oid = request.oid
        query = request.type is NdisRequestType.QUERY
        watched = (
            _is_vm(adapter)
            and adapter.dh.chimney_provider
            and (
                (query and oid == OID_TCP_TASK_OFFLOAD)
                or (not query and (oid in CONFIGURATION_SETS or oid == OID_TCP_CONNECTION_OFFLOAD_PARAMETERS))
            )
            and oid not in NDIS_ANSWERED_QUERIES
        )
        return watched

    def oid_exit(self, binding: Binding, request: NdisOidRequest, token: Any, status: int | None) -> None:
        if not token:
            return
        adapter = binding.adapter
        key = (request.request_id, id(adapter))
        passed = key in self._oid_down
        self._oid_down.discard(key)
        if status is None:
            return  # the request raised: nothing to judge
        name = adapter.driver.name
        if request.type is not NdisRequestType.QUERY:
            self.v.check(passed, "R-IM-03", f"{name} did not pass a chimney OID set down", request)
        elif adapter.chimney_capable and adapter.offload_caps is not None:
            self.v.check(passed, "R-IM-02", f"{name} offers chimney but answered {request!r} itself", request)
        else:
            self.v.check(
                not passed and status == NdisStatus.NOT_SUPPORTED,
                "R-IM-02",
                f"{name} offers no chimney but did not answer {request!r} NOT_SUPPORTED",
                request,
            )

    # -- end of a scenario --------------------------------------------------------------------------------------------

    def audit(self) -> list[str]:
        """Completions an IM received and never passed up (R-IM-08), returns it never passed down (R-IM-09).
        Reports through the verifier; returns the messages."""
        msgs: list[str] = []
        if self._owed:
            msgs.append(f"{len(self._owed)} chimney I/O completion(s) delivered to an IM were never re-issued upward")
            self.v.fail("R-IM-08", msgs[-1])
        if self._ret_pending:
            msgs.append(f"{len(self._ret_pending)} receive return(s) handed to an IM were never propagated")
            self.v.fail("R-IM-09", msgs[-1])
        return msgs


def im_checks(ndis: Ndis) -> ImChecks | None:
    """The ImChecks instance of `ndis` (None with the verifier off or other checks)."""
    chk = getattr(ndis, "_chk", None)
    return chk if isinstance(chk, ImChecks) else None
