"""NBL ownership tracking: who owns each NET_BUFFER_LIST, hand-offs checked through the Verifier.
Owns the per-NBL owner history, NB-structure snapshots (R-NBL-03) and the live-NBL leak report.

Every NDIS call that passes NBLs (send/post/indicate/complete/return) moves ownership with
`transfer()`; a driver that passes an NBL it does not own breaks the rule id the caller names
(R-NBL-02 and the per-path rules). With the verifier OFF only the owner field is written.
"""

from __future__ import annotations

from collections import Counter, deque
from typing import Any

from chimney.ndis.buffers import NDIS_OWNER, NO_SNAPSHOT, NetBuffer, NetBufferList
from chimney.ndis.verifier import Mode, Verifier

__all__ = ["HISTORY_LEN", "NDIS_OWNER", "OwnershipTracker"]

HISTORY_LEN = 8
_MAX_NBS = 4096  # snapshot bound: a cyclic NB list must not hang the verifier

# Enum member access through the class costs ~0.3 us on Python 3.11; the hot paths compare with this.
_OFF = Mode.OFF


class OwnershipTracker:
    """Owner bookkeeping for every NBL of one simulated system (one per `Verifier`).

    The per-NBL history (`nbl.history`, a deque of (op, frm, to)) and the pending NB-list snapshot
    (`nbl.nb_snapshot`) live in slots of the NBL, so the checked path costs no dict lookups.
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
        verifier.checks[rule_id] += 1
        while nbl is not None:
            if nbl.owner != frm:
                verifier.fail(
                    rule_id,
                    f"{op}: {frm} passed {nbl!r} it does not own (owner {nbl.owner}){self.history_text(nbl)}",
                    nbl,
                )
            nbl.owner = to
            h = nbl.history
            if h is None:
                nbl.history = deque((hop,), HISTORY_LEN)
            else:
                h.append(hop)
            nbl = nbl.next

    def assert_owner(self, nbl: NetBufferList, owner: str, rule_id: str, op: str) -> bool:
        """Check that `owner` owns `nbl` right now (e.g. before it touches MiniportReserved, R-NBL-04)."""
        verifier = self.verifier
        if verifier.mode is _OFF:
            return nbl.owner == owner
        if nbl.owner == owner:
            verifier.checks[rule_id] += 1
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
    def history(nbl: NetBufferList) -> list[tuple[str, str, str]]:
        """The last hand-offs of `nbl`, oldest first, as (op, frm, to)."""
        return list(nbl.history or ())

    @staticmethod
    def history_text(nbl: NetBufferList) -> str:
        """"; history: op a->b, ..." for violation messages ("" without history)."""
        h = nbl.history
        if not h:
            return ""
        return "; history: " + ", ".join(f"{op} {frm}->{to}" for op, frm, to in h)

    _history_text = history_text  # early callers used the private name

    # -- NB structure (R-NBL-03) --------------------------------------------------------------------

    def snapshot_structure(self, nbl: NetBufferList | None, *, chain: bool = False) -> None:
        """Remember the NB list of `nbl` (of every NBL of the chain with `chain=True`) before a hand-off."""
        if self.verifier.mode is _OFF:
            return
        while nbl is not None:
            nb = nbl.first_net_buffer
            if nb is None or nb.next is None:
                nbl.nb_snapshot = nb  # the common one-NB (or empty) shape: no tuple needed
            else:
                nbs: list[NetBuffer] = []
                while nb is not None and len(nbs) <= _MAX_NBS:
                    nbs.append(nb)
                    nb = nb.next
                nbl.nb_snapshot = tuple(nbs)
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
        verifier.checks[rule_id] += 1  # one check per returned chain, as for transfer()
        ok = True
        while nbl is not None:
            snap = nbl.nb_snapshot
            if snap is not NO_SNAPSHOT:
                nbl.nb_snapshot = NO_SNAPSHOT
                nb = nbl.first_net_buffer
                if type(snap) is tuple:
                    if not self._same_list(nb, snap):
                        ok = self._structure_violation(nbl, snap, rule_id, op) and ok
                elif nb is not snap or (nb is not None and nb.next is not None):
                    ok = self._structure_violation(nbl, (snap,) if snap is not None else (), rule_id, op) and ok
            if not chain:
                break
            nbl = nbl.next
        return ok

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
        nbl.history = None
        nbl.nb_snapshot = NO_SNAPSHOT

    def outstanding(self, owner: str) -> list[NetBufferList]:
        """Registered NBLs `owner` holds right now (allocation order)."""
        return [nbl for nbl in self._live.values() if nbl.owner == owner]

    def by_owner(self) -> dict[str, int]:
        return dict(Counter(nbl.owner for nbl in self._live.values()))

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
