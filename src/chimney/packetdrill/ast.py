"""The packetdrill script AST: time specs, options, shell lines, packets, system calls, markers.

Produced by `chimney.packetdrill.parser.parse_script`, consumed by `chimney.packetdrill.interp`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(slots=True)
class TimeSpec:
    """When an event happens. `kind`: "abs", "rel" (to the previous event) or "any" (`*`).
    `upper` is the end of a `lo~hi` range; `block_end` the end of a blocking `start...end` call
    (`block_end_rel`: that end is relative to the start)."""

    kind: str
    value: float = 0.0
    upper: float | None = None
    upper_rel: bool = False
    block_end: float | None = None
    block_end_rel: bool = False

    def __str__(self) -> str:
        if self.kind == "any":
            return "*"
        s = ("+" if self.kind == "rel" else "") + f"{self.value:g}"
        if self.upper is not None:
            s += "~" + ("+" if self.upper_rel else "") + f"{self.upper:g}"
        if self.block_end is not None:
            s += "..." + ("+" if self.block_end_rel else "") + f"{self.block_end:g}"
        return s


@dataclass(slots=True)
class Event:
    """`only_mode`: the one mode ("host" / "offload") an `@host` / `@offload` statement runs in; other
    modes skip it (where the modes' wire differs by contract, e.g. the R-TMR-04 ACK flushed at offload)."""

    line: int
    time: TimeSpec | None
    only_mode: str | None = None


@dataclass(slots=True)
class OptionEvent(Event):
    """A `--name=value` line (script-level command line option)."""

    name: str = ""
    value: str = ""


@dataclass(slots=True)
class ShellEvent(Event):
    """A backtick command line."""

    command: str = ""


@dataclass(slots=True)
class UnsupportedEvent(Event):
    """A construct the interpreter cannot run (inline Python, UDP/ICMP packets...): the script reports
    `unsupported: <construct> at line N` when it reaches it."""

    construct: str = ""


@dataclass(slots=True)
class MarkerEvent(Event):
    """A chimney language extension: `chimney_offload` (offload the connection here)."""

    name: str = ""


@dataclass(slots=True)
class TcpOption:
    """One option of a packet line: kind is "nop", "eol", "mss", "wscale", "sackOK", "sack", "TS"."""

    kind: str
    value: int | None = None
    blocks: tuple[tuple[int, int], ...] = ()
    ts_val: int | None = None  # None: wildcard (`*`)
    ts_ecr: int | None = None

    def __str__(self) -> str:
        if self.kind in ("nop", "eol", "sackOK"):
            return self.kind
        if self.kind == "sack":
            return "sack " + " ".join(f"{a}:{b}" for a, b in self.blocks)
        if self.kind == "TS":
            v = "*" if self.ts_val is None else str(self.ts_val)
            e = "*" if self.ts_ecr is None else str(self.ts_ecr)
            return f"TS val {v} ecr {e}"
        return f"{self.kind} {self.value}"


@dataclass(slots=True)
class PacketEvent(Event):
    """`< flags seq:end(len) [ack N] [win N] [<options>]` (inbound) or `>` (expected outbound).
    `options` None: the packet has no options; `any_options`: `<...>` (outbound: not checked)."""

    direction: str = "<"
    flags: str = ""
    seq: int = 0
    end: int = 0
    length: int = 0
    ack: int | None = None
    win: int | None = None
    options: list[TcpOption] | None = None
    any_options: bool = False
    urg: int | None = None
    text: str = ""


@dataclass(slots=True)
class Expr:
    """A system call argument: kind "ellipsis", "int", "str", "name", "or" (names/ints or-ed), "list",
    "struct" (field -> Expr), "call" (e.g. htons(8080))."""

    kind: str
    value: Any = None
    items: list[Expr] = field(default_factory=list)
    fields: dict[str, Expr] = field(default_factory=dict)

    def __str__(self) -> str:
        k = self.kind
        if k == "ellipsis":
            return "..."
        if k == "str":
            return f'"{self.value}"'
        if k in ("int", "name"):
            return str(self.value)
        if k == "or":
            return "|".join(str(i) for i in self.items)
        if k == "list":
            return "[" + ", ".join(str(i) for i in self.items) + "]"
        if k == "struct":
            return "{" + ", ".join([*(str(i) for i in self.items), *(f"{n}={v}" for n, v in self.fields.items())]) + "}"
        return f"{self.value}(" + ", ".join(str(i) for i in self.items) + ")"


@dataclass(slots=True)
class SyscallEvent(Event):
    """`name(args) = ret [ERRNO (text)]`; `ret` None for `?` (any result)."""

    name: str = ""
    args: list[Expr] = field(default_factory=list)
    ret: int | None = 0
    errno_name: str | None = None
    errno_text: str | None = None
    text: str = ""


@dataclass(slots=True)
class Script:
    path: str
    options: dict[str, str]
    events: list[Event]
    option_lines: dict[str, int] = field(default_factory=dict)
