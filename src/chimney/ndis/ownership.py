"""NBL ownership tracking: who owns each NET_BUFFER_LIST, hand-offs checked through the Verifier.
Owns the per-NBL owner history, NB-structure snapshots (R-NBL-03) and the live-NBL leak report.

Every NDIS call that passes NBLs (send/post/indicate/complete/return) moves ownership with
`transfer()`; a driver that passes an NBL it does not own breaks the rule id the caller names
(R-NBL-02 and the per-path rules). With the verifier OFF only the owner field is written.

Cost model of the checked path (it runs per NBL per crossing, so it is built from what can be
shared per chain):
- History: `nbl.history` is an immutable node (parent, hop, depth); a hand-off builds one node for
  the chain and every NBL takes it. Nodes are read (`history_hops`) only for reports and tests.
- Owner tokens: a checked hand-off writes an `OwnerToken` (equal to the owner's name, a new object
  per hand-off, carrying the shared history node and SourceHandle, see chimney.ndis.buffers) into
  every NBL it moves. The next hand-off of the chain then proves "owned by frm, history node h0,
  SourceHandle sh0" with one identity test per NBL and moves it with one store.
- Coverage counts once per chain hand-off; strings are only built when a check fails.
`chimney.ndis.core` fuses the same steps with SourceHandle stamping into one pass per crossing.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from chimney.ndis.buffers import (
    NDIS_OWNER,
    NO_SNAPSHOT,
    NetBuffer,
    NetBufferList,
    OwnerToken,
    make_token,
    plain_owner,
)
from chimney.ndis.verifier import Mode, Verifier

__all__ = [
    "HISTORY_LEN",
    "NDIS_OWNER",
    "OwnerToken",
    "OwnershipTracker",
    "history_hops",
    "nb_snapshot_of",
    "plain_owner",
    "push_history",
]

HISTORY_LEN = 8
# A node chain this deep is cut back to HISTORY_LEN hops. The cut walks and rebuilds the chain, so it
# is made rarely (every MAX_HISTORY_DEPTH - HISTORY_LEN + 1 hops); nodes are shared per chain crossing.
MAX_HISTORY_DEPTH = 4 * HISTORY_LEN
_MAX_NBS = 4096  # snapshot bound: a cyclic NB list must not hang the verifier

# Enum member access through the class costs ~0.3 us on Python 3.11; the hot paths compare with this.
_OFF = Mode.OFF

Hop = tuple[str, str, str]  # (op, frm, to)
HistoryNode = tuple[Any, Hop, int]  # (parent node or None, hop, depth)


def push_history(node: HistoryNode | None, hop: Hop) -> HistoryNode:
    """The history `node` plus `hop`. One small tuple; every MAX_HISTORY_DEPTH hops the chain of
    nodes is rebuilt from its last HISTORY_LEN - 1 hops so memory stays bounded."""
    if node is None:
        return (None, hop, 1)
    if node[2] < MAX_HISTORY_DEPTH:
        return (node, hop, node[2] + 1)
    fresh: HistoryNode | None = None
    for depth, old in enumerate(history_hops(node)[1:], 1):
        fresh = (fresh, old, depth)
    return (fresh, hop, HISTORY_LEN)


def history_hops(node: HistoryNode | None) -> list[Hop]:
    """The last HISTORY_LEN hops of a history node, oldest first."""
    hops: list[Hop] = []
    while node is not None and len(hops) < HISTORY_LEN:
        hops.append(node[1])
        node = node[0]
    hops.reverse()
    return hops


def nb_snapshot_of(nb: NetBuffer | None) -> Any:
    """The R-NBL-03 snapshot of an NB list starting at `nb`: the NB itself for the common one-NB
    shape, else a tuple of the NBs (`()` for none; bounded: a cyclic NB list must not hang the verifier)."""
    if nb is None:
        return ()
    if nb.next is None:
        return nb
    nbs: list[NetBuffer] = []
    while nb is not None and len(nbs) <= _MAX_NBS:
        nbs.append(nb)
        nb = nb.next
    return tuple(nbs)


class OwnershipTracker:
    """Owner bookkeeping for every NBL of one simulated system (one per `Verifier`).

    The per-NBL history (`nbl.history`, a shared node, see the module docstring) and the pending
    NB-list snapshot (`nbl.nb_snapshot`) live in slots of the NBL, so the checked path costs no dict
    lookups.
    """

    __slots__ = ("_live", "verifier")

    def __init__(self, verifier: Verifier) -> None:
        self.verifier = verifier
        self._live: dict[int, NetBufferList] = {}  # serial -> registered (pool-allocated) NBL

    # -- hand-offs ------------------------------------------------------------------------------

    def transfer(self, head: NetBufferList | None, *, frm: str, to: str, rule_id: str, op: str) -> None:
        """Move every NBL of the chain from `frm` to `to`, checking `frm` owned each one (`rule_id`)."""
        nbl = head
        verifier = self.verifier
        if verifier.mode is _OFF:
            while nbl is not None:
                nbl.owner = to
                nbl = nbl.next
            return
        if nbl is None:
            return
        hop = (op, frm, to)
        # Coverage counts one check per hand-off (not per NBL): a per-NBL counter costs ~15% here.
        verifier.count(rule_id)
        t0 = nbl._owner
        tok = type(t0) is OwnerToken
        h0 = t0.history if tok else nbl._history
        sh0 = t0.sh if tok else nbl._sh
        t1 = make_token(to, push_history(h0, hop), sh0)
        if tok and t0.name == frm:
            # Every holder of t0 is owned by `frm` with history h0 and SourceHandle sh0.
            while nbl is not None and nbl._owner is t0:
                nbl._owner = t1
                nbl = nbl.next
        while nbl is not None:
            o = nbl._owner
            if o != frm:
                self.not_owned(nbl, frm, rule_id, op)
            if type(o) is OwnerToken:
                h, sh = o.history, o.sh
            else:
                h, sh = nbl._history, nbl._sh
            if h is h0 and sh is sh0:
                nbl._owner = t1
            else:
                nbl._owner = to
                nbl._history = push_history(h, hop)
                nbl._sh = sh
            nbl = nbl.next

    def not_owned(self, nbl: NetBufferList, frm: str, rule_id: str, op: str) -> None:
        """Report that `frm` passed `nbl` without owning it (called before its history moves on)."""
        self.verifier.fail(
            rule_id,
            f"{op}: {frm} passed {nbl!r} it does not own (owner {nbl.owner}){self.history_text(nbl)}",
            nbl,
        )

    def assert_owner(self, nbl: NetBufferList, owner: str, rule_id: str, op: str) -> bool:
        """Check that `owner` owns `nbl` right now (e.g. before it touches MiniportReserved, R-NBL-04)."""
        verifier = self.verifier
        if verifier.mode is _OFF:
            return nbl.owner == owner
        if nbl.owner == owner:
            verifier.count(rule_id)
            return True
        return verifier.check(
            False,
            rule_id,
            f"{op}: {owner} used {nbl!r} it does not own (owner {nbl.owner}){self.history_text(nbl)}",
            nbl,
        )

    def assert_chain_owner(self, head: NetBufferList | None, owner: str, rule_id: str, op: str) -> bool:
        ok = True
        nbl = head
        while nbl is not None:
            ok = self.assert_owner(nbl, owner, rule_id, op) and ok
            nbl = nbl.next
        return ok

    @staticmethod
    def history(nbl: NetBufferList) -> list[Hop]:
        """The last hand-offs of `nbl`, oldest first, as (op, frm, to)."""
        return history_hops(nbl.history)

    @staticmethod
    def history_text(nbl: NetBufferList) -> str:
        """"; history: op a->b, ..." for violation messages ("" without history)."""
        hops = history_hops(nbl.history)
        if not hops:
            return ""
        return "; history: " + ", ".join(f"{op} {frm}->{to}" for op, frm, to in hops)

    _history_text = history_text  # early callers used the private name

    # -- NB structure (R-NBL-03) --------------------------------------------------------------------

    def snapshot_structure(self, nbl: NetBufferList | None, *, chain: bool = False) -> None:
        """Remember the NB list of `nbl` (of every NBL of the chain with `chain=True`) before a hand-off."""
        if self.verifier.mode is _OFF:
            return
        while nbl is not None:
            nbl.nb_snapshot = nb_snapshot_of(nbl.first_net_buffer)
            if not chain:
                return
            nbl = nbl.next

    def verify_structure(
        self, nbl: NetBufferList | None, rule_id: str, op: str, *, chain: bool = False
    ) -> bool:
        """Check the NB list (identities and NB.next links) is as snapshotted; forget the snapshot.

        NBLs without a snapshot pass (nothing to compare).
        """
        verifier = self.verifier
        if verifier.mode is _OFF:
            return True
        if nbl is None:
            return True
        verifier.count(rule_id)  # one check per returned chain, as for transfer()
        ok = True
        no_snap = NO_SNAPSHOT
        while nbl is not None:
            snap = nbl.nb_snapshot
            nbl.nb_snapshot = no_snap
            nb = nbl.first_net_buffer
            if nb is not snap or nb.next is not None:  # the one-NB shape matches with two compares
                ok = self.check_snapshot(nbl, snap, rule_id, op) and ok
            if not chain:
                break
            nbl = nbl.next
        return ok

    def check_snapshot(self, nbl: NetBufferList, snap: Any, rule_id: str, op: str) -> bool:
        """Compare the NB list of `nbl` with `snap` (as taken by `nb_snapshot_of`); report a mismatch.

        The full comparison behind the two-compare fast test of the one-NB shape."""
        if snap is NO_SNAPSHOT:
            return True
        if type(snap) is not tuple:
            snap = (snap,)
        if self._same_list(nbl.first_net_buffer, snap):
            return True
        return self._structure_violation(nbl, snap, rule_id, op)

    @staticmethod
    def _same_list(nb: NetBuffer | None, before: tuple[NetBuffer, ...]) -> bool:
        for expected in before:
            if nb is not expected:
                return False
            nb = nb.next  # type: ignore[union-attr]
        return nb is None

    def _structure_violation(
        self, nbl: NetBufferList, before: tuple[NetBuffer, ...], rule_id: str, op: str
    ) -> bool:
        n = len(before)
        after: list[NetBuffer] = []
        nb = nbl.first_net_buffer
        while nb is not None and len(after) <= n + 4:  # bounded: the list may now be a cycle
            after.append(nb)
            nb = nb.next
        label = {id(b): f"NB{k}" for k, b in enumerate(before)}
        was = ", ".join(label[id(b)] for b in before) or "none"
        now = ", ".join(label.get(id(b), f"foreign {b!r}") for b in after) or "none"
        if nb is not None:
            now += ", ..."
        self.verifier.fail(
            rule_id,
            f"{op}: the NB list of {nbl!r} changed while it was away: was [{was}], now [{now}]"
            f"{self.history_text(nbl)}",
            nbl,
        )
        return False

    # -- convenience: hand-off with structure bookkeeping -------------------------------------------

    def hand_off(
        self, head: NetBufferList | None, *, frm: str, to: str, rule_id: str, op: str
    ) -> None:
        """transfer() plus a structure snapshot of every NBL (the creator lends NBLs to another driver)."""
        self.transfer(head, frm=frm, to=to, rule_id=rule_id, op=op)
        self.snapshot_structure(head, chain=True)

    def take_back(
        self,
        head: NetBufferList | None,
        *,
        frm: str,
        to: str,
        rule_id: str,
        op: str,
        structure_rule_id: str = "R-NBL-03",
    ) -> None:
        """transfer() back to the creator plus verify_structure() of every NBL (R-NBL-03)."""
        self.transfer(head, frm=frm, to=to, rule_id=rule_id, op=op)
        self.verify_structure(head, structure_rule_id, op, chain=True)

    # -- live NBLs (pools) --------------------------------------------------------------------------

    def register(self, nbl: NetBufferList, owner: str) -> None:
        nbl.owner = owner
        self._live[nbl.serial] = nbl

    def forget(self, nbl: NetBufferList) -> None:
        self._live.pop(nbl.serial, None)
        nbl.history = None  # (the setter also takes it out of its token group)
        nbl.nb_snapshot = NO_SNAPSHOT

    def outstanding(self, owner: str) -> list[NetBufferList]:
        """Registered NBLs `owner` holds right now (allocation order)."""
        return [nbl for nbl in self._live.values() if nbl.owner == owner]

    def by_owner(self) -> dict[str, int]:
        return dict(Counter(plain_owner(nbl.owner) for nbl in self._live.values()))

    def leak_report(self, owner: str | None = None) -> str:
        """Readable list of the registered NBLs still alive (only `owner`'s with an owner)."""
        live = list(self._live.values()) if owner is None else self.outstanding(owner)
        who = "all owners" if owner is None else owner
        if not live:
            return f"no live NBLs ({who})"
        lines = [f"{len(live)} live NBL(s) ({who}):"]
        for nbl in live:
            pool: Any = nbl.pool
            where = f" pool={pool.name}" if pool is not None and hasattr(pool, "name") else ""
            lines.append(f"  {nbl!r}{where}{self.history_text(nbl)}")
        return "\n".join(lines)
