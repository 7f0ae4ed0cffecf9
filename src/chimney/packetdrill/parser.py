"""The packetdrill script lexer/parser: script text -> `Script` (a list of AST events with line numbers).

Covers the TCP subset of the language: options, backtick shell lines, time specs, packet lines with
TCP options, system calls with packetdrill's argument expressions; other constructs become
`UnsupportedEvent`s so that running them reports `unsupported: ... at line N`. Chimney extensions: the
`chimney_offload` marker, and `@host` / `@offload` before a statement to run it in that mode only.
"""

from __future__ import annotations

import re

from chimney.packetdrill.ast import (
    Event,
    Expr,
    MarkerEvent,
    OptionEvent,
    PacketEvent,
    Script,
    ShellEvent,
    SyscallEvent,
    TcpOption,
    TimeSpec,
    UnsupportedEvent,
)


class ParseError(Exception):
    """A syntax error; `line` is the 1-based script line."""

    def __init__(self, path: str, line: int, message: str) -> None:
        super().__init__(f"{path}:{line}: parse error: {message}")
        self.path = path
        self.line = line
        self.message = message


_NUM = r"(?:\d+(?:\.(?!\.\.)\d*)?|\.\d+)"
_TIME_RE = re.compile(
    rf"^(?P<any>\*)|^(?P<plus>\+)?(?P<v>{_NUM})"
    rf"(?:~(?P<uplus>\+)?(?P<up>{_NUM}))?"
    rf"(?:\.\.\.(?P<bplus>\+)?(?P<b>{_NUM}))?"
)
_FLAGS_RE = re.compile(r"^[SFRP.EWUN]+$")
_SEQ_RE = re.compile(r"^(\d+):(\d+)\((\d+)\)$")
MARKERS = ("chimney_offload",)
MODE_PREFIXES = {"@host": "host", "@offload": "offload"}  # statement runs in that mode only


def _strip_comments(text: str, path: str) -> str:
    """Remove // and /* */ comments, keeping newlines (line numbers stay right). Strings, backtick
    commands and %{ }% blocks are copied as they are."""
    out: list[str] = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c in "\"`":
            j = text.find(c, i + 1)
            j = n - 1 if j < 0 else j
            out.append(text[i:j + 1])
            i = j + 1
        elif text.startswith("%{", i):
            j = text.find("}%", i + 2)
            j = n - 2 if j < 0 else j
            out.append(text[i:j + 2])
            i = j + 2
        elif text.startswith("//", i):
            j = text.find("\n", i)
            i = n if j < 0 else j
        elif text.startswith("/*", i):
            j = text.find("*/", i + 2)
            if j < 0:
                raise ParseError(path, text.count("\n", 0, i) + 1, "unterminated /* comment")
            out.append("\n" * text.count("\n", i, j))
            i = j + 2
        else:
            out.append(c)
            i += 1
    return "".join(out)


def _statements(text: str) -> list[tuple[int, str]]:
    """Split into logical statements: a line continues while brackets are open or a backtick / %{
    block is unterminated."""
    stmts: list[tuple[int, str]] = []
    buf: list[str] = []
    start = 0
    depth = 0
    in_tick = False
    in_py = False
    for lineno, line in enumerate(text.split("\n"), 1):
        if not buf:
            if not line.strip():
                continue
            start = lineno
        buf.append(line)
        i = 0
        while i < len(line):
            c = line[i]
            if in_py:
                if line.startswith("}%", i):
                    in_py = False
                    i += 1
            elif in_tick:
                if c == "`":
                    in_tick = False
            elif c == "`":
                in_tick = True
            elif line.startswith("%{", i):
                in_py = True
                i += 1
            elif c == '"':
                j = line.find('"', i + 1)
                i = len(line) if j < 0 else j
            elif c in "([{":
                depth += 1
            elif c in ")]}":
                depth -= 1
            i += 1
        if depth <= 0 and not in_tick and not in_py:
            stmts.append((start, "\n".join(buf).strip()))
            buf = []
            depth = 0
    if buf:
        stmts.append((start, "\n".join(buf).strip()))
    return stmts


def parse_time(s: str) -> tuple[TimeSpec | None, str]:
    """Parse a leading time spec; returns (spec or None, rest of the statement)."""
    m = _TIME_RE.match(s)
    if m is None or (m.group("any") is None and m.group("v") is None):
        return None, s
    rest = s[m.end():]
    if rest and not rest[0].isspace() and rest[0] not in "<>`%":
        return None, s  # e.g. an identifier that starts with a digit: not a time
    if m.group("any"):
        return TimeSpec("any"), rest.strip()
    spec = TimeSpec("rel" if m.group("plus") else "abs", float(m.group("v")))
    if m.group("up") is not None:
        spec.upper = float(m.group("up"))
        spec.upper_rel = bool(m.group("uplus")) or spec.kind == "rel"
    if m.group("b") is not None:
        spec.block_end = float(m.group("b"))
        spec.block_end_rel = bool(m.group("bplus")) or spec.kind == "rel"
    return spec, rest.strip()


def _int(tok: str) -> int:
    return int(tok, 16) if tok.lower().startswith("0x") else int(tok)


def _parse_options(body: str, path: str, line: int) -> tuple[list[TcpOption] | None, bool]:
    body = body.strip()
    if body == "...":
        return None, True
    opts: list[TcpOption] = []
    for part in (p.strip() for p in body.split(",")):
        if not part:
            raise ParseError(path, line, f"empty TCP option in <{body}>")
        w = part.split()
        k = w[0]
        try:
            if k in ("nop", "eol", "sackOK") and len(w) == 1:
                opts.append(TcpOption(k))
            elif k in ("mss", "wscale") and len(w) == 2:
                opts.append(TcpOption(k, _int(w[1])))
            elif k == "sack":
                blocks = []
                for b in w[1:]:
                    a, _, e = b.partition(":")
                    blocks.append((_int(a), _int(e)))
                if not blocks:
                    raise ValueError("sack without blocks")
                opts.append(TcpOption("sack", blocks=tuple(blocks)))
            elif k == "TS" and len(w) == 5 and w[1] == "val" and w[3] == "ecr":
                opts.append(TcpOption("TS", ts_val=None if w[2] == "*" else _int(w[2]),
                                      ts_ecr=None if w[4] == "*" else _int(w[4])))
            else:
                raise ValueError(f"unknown TCP option {part!r}")
        except ValueError as e:
            raise ParseError(path, line, str(e)) from None
    return opts, False


def _parse_packet(line: int, time: TimeSpec | None, direction: str, rest: str, path: str) -> Event:
    text = f"{direction} {rest}"
    opts_body: str | None = None
    lt = rest.find("<")
    if lt >= 0:
        gt = rest.rfind(">")
        if gt < lt:
            raise ParseError(path, line, "unterminated <options>")
        opts_body = rest[lt + 1:gt]
        tail = rest[gt + 1:].strip()
        if tail:
            raise ParseError(path, line, f"unexpected {tail!r} after the options")
        rest = rest[:lt]
    words = rest.split()
    if not words:
        raise ParseError(path, line, "empty packet")
    head = words[0].lower()
    if head in ("udp", "icmp", "unknown", "ipv4", "ipv6", "gre", "mpls"):
        return UnsupportedEvent(line, time, construct=f"{head} packet")
    if words[0].startswith("[") or words[0].startswith("("):
        return UnsupportedEvent(line, time, construct=f"packet prefix {words[0]}")
    ev = PacketEvent(line, time, direction=direction, text=text)
    if words[0] != "-" and not _FLAGS_RE.match(words[0]):
        raise ParseError(path, line, f"bad TCP flags {words[0]!r}")
    ev.flags = "" if words[0] == "-" else words[0]
    if len(words) < 2:
        raise ParseError(path, line, "missing seq start:end(len)")
    m = _SEQ_RE.match(words[1])
    if m is None:
        raise ParseError(path, line, f"bad sequence spec {words[1]!r} (want start:end(len))")
    ev.seq, ev.end, ev.length = int(m.group(1)), int(m.group(2)), int(m.group(3))
    if (ev.end - ev.seq) & 0xFFFFFFFF != ev.length:
        raise ParseError(path, line, f"{words[1]}: end - start != length")
    i = 2
    while i < len(words):
        w = words[i]
        if w in ("ack", "win", "urg") and i + 1 < len(words):
            try:
                v = _int(words[i + 1])
            except ValueError:
                raise ParseError(path, line, f"bad {w} value {words[i + 1]!r}") from None
            setattr(ev, w, v)
            i += 2
        elif w in ("ecr", "val", "mss"):
            raise ParseError(path, line, f"{w!r} belongs inside <options>")
        else:
            return UnsupportedEvent(line, time, construct=f"packet field {w!r}")
    if opts_body is not None:
        ev.options, ev.any_options = _parse_options(opts_body, path, line)
    return ev


# -- system call expressions ------------------------------------------------------------------------

_TOKEN_RE = re.compile(
    r"\s*(?:(?P<ell>\.\.\.)|(?P<num>-?0x[0-9a-fA-F]+|-?\d+)|(?P<str>\"[^\"]*\")"
    r"|(?P<name>[A-Za-z_][A-Za-z0-9_]*)|(?P<p>[()\[\]{},=|]))"
)


class _Tokens:
    def __init__(self, s: str, path: str, line: int) -> None:
        self.toks: list[tuple[str, str]] = []
        self.path, self.line = path, line
        pos = 0
        s = s.rstrip()
        while pos < len(s):
            m = _TOKEN_RE.match(s, pos)
            if m is None or m.end() == pos:
                raise ParseError(path, line, f"unexpected {s[pos:].strip()[:20]!r}")
            kind = m.lastgroup
            assert kind is not None
            self.toks.append((kind, m.group(kind)))
            pos = m.end()
            while pos < len(s) and s[pos].isspace():
                pos += 1
        self.i = 0

    def peek(self) -> tuple[str, str] | None:
        return self.toks[self.i] if self.i < len(self.toks) else None

    def next(self) -> tuple[str, str]:
        t = self.peek()
        if t is None:
            raise ParseError(self.path, self.line, "unexpected end of statement")
        self.i += 1
        return t

    def expect(self, p: str) -> None:
        t = self.next()
        if t != ("p", p):
            raise ParseError(self.path, self.line, f"expected {p!r}, got {t[1]!r}")


def _expr(t: _Tokens) -> Expr:
    first = _atom(t)
    if t.peek() == ("p", "|"):
        items = [first]
        while t.peek() == ("p", "|"):
            t.next()
            items.append(_atom(t))
        return Expr("or", items=items)
    return first


def _atom(t: _Tokens) -> Expr:
    kind, v = t.next()
    if kind == "ell":
        return Expr("ellipsis")
    if kind == "num":
        return Expr("int", _int(v) if not v.startswith("-") else -_int(v[1:]))
    if kind == "str":
        return Expr("str", v[1:-1])
    if kind == "name":
        if t.peek() == ("p", "("):
            t.next()
            args = _expr_list(t, ")")
            return Expr("call", v, items=args)
        return Expr("name", v)
    if v == "[":
        return Expr("list", items=_expr_list(t, "]"))
    if v == "{":
        # Named fields (`l_onoff=1`, `msg_iov(1)=[...]`: the count in parentheses is implied by the value)
        # and positional ones (an iovec `{..., 100}`), which go to `items`.
        fields: dict[str, Expr] = {}
        items: list[Expr] = []
        while t.peek() != ("p", "}"):
            if not _named_field(t, fields):
                items.append(_expr(t))
            nxt = t.peek()
            if nxt == ("p", ","):
                t.next()
            elif nxt != ("p", "}"):
                raise ParseError(t.path, t.line, "expected ',' or '}' in a struct")
        t.next()
        return Expr("struct", items=items, fields=fields)
    raise ParseError(t.path, t.line, f"unexpected {v!r}")


def _named_field(t: _Tokens, fields: dict[str, Expr]) -> bool:
    """`name=expr` or `name(count)=expr` at the cursor: parsed into `fields` (True); else the cursor is
    left where it was (False)."""
    start = t.i
    kind, name = t.peek() or ("", "")
    if kind != "name":
        return False
    t.next()
    if t.peek() == ("p", "("):
        t.next()
        _expr_list(t, ")")
    if t.peek() != ("p", "="):
        t.i = start  # a positional value such as htons(8080)
        return False
    t.next()
    fields[name] = _expr(t)
    return True


def _expr_list(t: _Tokens, close: str) -> list[Expr]:
    items: list[Expr] = []
    while t.peek() != ("p", close):
        items.append(_expr(t))
        nxt = t.peek()
        if nxt == ("p", ","):
            t.next()
        elif nxt != ("p", close):
            raise ParseError(t.path, t.line, f"expected ',' or {close!r}")
    t.next()
    return items


_RET_RE = re.compile(r"^=\s*(?P<ret>-?(?:0x[0-9a-fA-F]+|\d+)|\?)(?:\s+(?P<errno>E[A-Z0-9]+))?\s*(?:\((?P<text>.*)\))?\s*$",
                     re.S)


def _parse_syscall(line: int, time: TimeSpec | None, s: str, path: str) -> Event:
    m = re.match(r"^([A-Za-z_][A-Za-z0-9_]*)\s*\(", s)
    if m is None:
        raise ParseError(path, line, f"cannot parse {s[:40]!r}")
    name = m.group(1)
    # find the matching close paren of the argument list
    depth = 0
    end = -1
    in_str = False
    for i in range(m.end() - 1, len(s)):
        c = s[i]
        if c == '"':
            in_str = not in_str
        elif in_str:
            continue
        elif c in "([{":
            depth += 1
        elif c in ")]}":
            depth -= 1
            if depth == 0:
                end = i
                break
    if end < 0:
        raise ParseError(path, line, f"unbalanced parentheses in {name}()")
    toks = _Tokens(s[m.end():end], path, line)
    args = _expr_list_top(toks)
    rm = _RET_RE.match(s[end + 1:].strip())
    if rm is None:
        raise ParseError(path, line, f"{name}(): expected '= RESULT [ERRNO (text)]'")
    r = rm.group("ret")
    ret = None if r == "?" else (_int(r) if not r.startswith("-") else -_int(r[1:]))
    return SyscallEvent(line, time, name=name, args=args, ret=ret, errno_name=rm.group("errno"),
                        errno_text=rm.group("text"), text=" ".join(s.split()))


def _expr_list_top(t: _Tokens) -> list[Expr]:
    items: list[Expr] = []
    while t.peek() is not None:
        items.append(_expr(t))
        nxt = t.peek()
        if nxt == ("p", ","):
            t.next()
        elif nxt is not None:
            raise ParseError(t.path, t.line, f"expected ',' between arguments, got {nxt[1]!r}")
    return items


# -- statements ------------------------------------------------------------------------------------

_OPT_RE = re.compile(r"^--([A-Za-z0-9_-]+)(?:[= ](.*))?$", re.S)


def parse_script(text: str, path: str = "<script>") -> Script:
    """Parse a whole script. Raises `ParseError` (with the line) on syntax errors."""
    events: list[Event] = []
    options: dict[str, str] = {}
    option_lines: dict[str, int] = {}
    for line, stmt in _statements(_strip_comments(text, path)):
        if stmt.startswith("--"):
            for part in _split_options(stmt):
                m = _OPT_RE.match(part)
                if m is None:
                    raise ParseError(path, line, f"bad option {part!r}")
                key = m.group(1).replace("-", "_")
                options[key] = (m.group(2) or "").strip().strip('"')
                option_lines[key] = line
                events.append(OptionEvent(line, None, name=key, value=options[key]))
            continue
        only_mode = None
        if stmt.startswith("@"):
            word, _, stmt = stmt.partition(" ")
            only_mode = MODE_PREFIXES.get(word)
            if only_mode is None:
                raise ParseError(path, line, f"unknown mode prefix {word!r} (want @host or @offload)")
            stmt = stmt.strip()
            if not stmt or stmt.startswith("--"):
                raise ParseError(path, line, f"{word} needs an event after it")
        n_before = len(events)
        time, rest = parse_time(stmt)
        if not rest:
            raise ParseError(path, line, "a time with no event")
        if rest.startswith("`"):
            if not rest.endswith("`") or len(rest) < 2:
                raise ParseError(path, line, "unterminated backtick command")
            events.append(ShellEvent(line, time, command=rest[1:-1].strip()))
        elif rest.startswith("%{"):
            events.append(UnsupportedEvent(line, time, construct="inline Python %{ }%"))
        elif rest[0] in "<>":
            events.append(_parse_packet(line, time, rest[0], rest[1:].strip(), path))
        elif rest in MARKERS:
            events.append(MarkerEvent(line, time, name=rest))
        else:
            if time is None:
                raise ParseError(path, line, f"missing time before {rest[:30]!r}")
            events.append(_parse_syscall(line, time, rest, path))
        if only_mode is not None:
            events[n_before].only_mode = only_mode
    for ev in events:
        if ev.time is None and not isinstance(ev, OptionEvent | ShellEvent | UnsupportedEvent):
            raise ParseError(path, ev.line, "missing time")
    return Script(path, options, events, option_lines)


def _split_options(stmt: str) -> list[str]:
    """`--a=1 --b=2` on one line, or one option per line."""
    return [p.strip() for p in re.split(r"\s+(?=--)", stmt.strip()) if p.strip()]


def parse_file(path: str) -> Script:
    with open(path, encoding="utf-8") as f:
        return parse_script(f.read(), path)


__all__ = ["MARKERS", "MODE_PREFIXES", "ParseError", "parse_file", "parse_script", "parse_time"]
