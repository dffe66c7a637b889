"""Reader for cryptofeed raw-data recordings (of any registered venue, ``dm.venues``), and a helper
that writes modified copies of a recording for fault-injection tests.

The grammar (``data/README.md`` section 1, from cryptofeed's ``AsyncFileCallback``)::

    line    := config | connect | sent | rest | frame | ""     ("" only at the end of a file)
    config  := "configuration: " JSON
    connect := WS_URL " <-> " TS
    sent    := WS_URL " <- " TS ": " TEXT
    rest    := HTTP_URL " -> " TS ": " BODY
    frame   := TS ": " TEXT
    TS      := Python str(time.time()): UNIX seconds, e.g. 1617647603.4249449

Format 2 (data/README.md section 8b, cryptofeed's JSONL recorder, ``*.jsonl`` or ``*.jsonl.zst``)
is read into the same events: one JSON object per line, ``{"t": "header"|"http"|"connect"|"send"|
"recv", "conn": C, "ts": TS, "addr"|"url": URL, "data": TEXT}`` → config / rest / connect / sent /
frame, with ``Event.conn`` naming the connection (several interleave in one file).

Format 2 (data/README.md section 8b, cryptofeed's JSONL recorder, ``*.jsonl`` or ``*.jsonl.zst``)
is read into the same events: one JSON object per line, ``{"t": "header"|"http"|"connect"|"send"|
"recv", "conn": C, "ts": TS, "addr"|"url": URL, "data": TEXT}`` becomes config / rest / connect /
sent / frame, with ``Event.conn`` naming the connection (several interleave in one file).

Lines are split on ``\\n`` only (a frame's JSON may legally hold U+2028 and friends). The frame
text is kept exactly as recorded, never parsed: it is what the venue sent, so a replay can send it
verbatim, and a corrupted frame (fault injection) still reads.

Typical use::

    events = read_recording(["data/binance/2021-08-14"])   # a folder = a split session, merged
    for ts, text in frames("data/binance/BINANCE-b38f7c.0"):
        ...

Every error is a :class:`dm.errors.RecordingError` whose message starts with ``file:line:``.

The recordings were made with cryptofeed (Bryant Moscon, http://www.bryantmoscon.com/).
"""
from __future__ import annotations

import heapq
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Iterator, Sequence, Union
import orjson

from dm import venues
from dm.errors import RecordingError

__all__ = [
    "Event",
    "WsSession",
    "KINDS",
    "read_recording",
    "iter_recording",
    "read_file",
    "iter_file",
    "is_jsonl",
    "parse_jsonl_line",
    "frames",
    "expand_paths",
    "venue_of_url",
    "detect_venue",
    "ws_sessions",
    "format_event",
    "find_lines",
    "Drop",
    "Insert",
    "Replace",
    "Swap",
    "Move",
    "Corrupt",
    "write_modified_recording",
]

KINDS = ("config", "connect", "sent", "rest", "frame")

PathLike = Union[str, "os.PathLike[str]"]

_CONFIG = "configuration: "
_TS_RE = re.compile(r"[0-9]+(?:\.[0-9]+)?\Z")
# A folder is expanded to the cryptofeed files in it: names ending in ".<rotation number>".
_ROTATION_RE = re.compile(r".*\.[0-9]+\Z")


@dataclass(frozen=True, slots=True)
class Event:
    """One line of a recording.

    ``kind``: ``"config" | "connect" | "sent" | "rest" | "frame"``.
    ``ts``: recorder receive/send time, float seconds since the UNIX epoch (``None`` for config
    lines, which carry no TS); ``ts_text``: the TS exactly as written (``""`` for config).
    ``url``: websocket URL (connect, sent) or REST URL (rest), ``""`` otherwise.
    ``text``: frame text / sent text / REST body / config JSON exactly as recorded, ``""`` for
    connect. ``source``: file path as given; ``line``: 1-based line number in that file;
    ``conn``: the connection id of a format-2 (JSONL) recording, ``""`` in format 1 (where each
    file holds one connection at a time).
    """

    kind: str
    ts: float | None
    ts_text: str
    url: str
    text: str
    source: str = ""
    line: int = 0
    conn: str = ""  # format 2: the connection a connect/sent/frame belongs to ("" in format 1)

    @property
    def ts_ns(self) -> int | None:
        """``ts`` as integer ns since the UNIX epoch, computed from the exact text (no float)."""
        if not self.ts_text:
            return None
        whole, _, frac = self.ts_text.partition(".")
        return int(whole) * 1_000_000_000 + int((frac + "000000000")[:9])


@dataclass(slots=True)
class WsSession:
    """One recorded websocket connection: its connect line, the frames we sent on it and the
    frames received on it, in recorded order. ``venue`` is from the URL (``None`` if unknown)."""

    url: str
    venue: str | None
    connect: Event | None
    sent: list[Event] = field(default_factory=list)
    frames: list[Event] = field(default_factory=list)

    @property
    def source(self) -> str:
        return self.connect.source if self.connect is not None else (self.frames[0].source if self.frames else "")


def _err(source: str, line: int, msg: str, raw: str) -> RecordingError:
    shown = raw if len(raw) <= 120 else raw[:117] + "..."
    return RecordingError(f"{source}:{line}: {msg}: {shown!r}")


def _ts(source: str, lineno: int, ts_text: str, raw: str) -> float:
    if not _TS_RE.match(ts_text):
        raise _err(source, lineno, f"bad TS {ts_text!r}", raw)
    return float(ts_text)


def parse_line(raw: str, source: str = "<string>", lineno: int = 0) -> Event:
    """Parse one line (without its ``\\n``) per the grammar. Raises ``RecordingError``
    (``source:lineno: ...``) if it fits no rule. A blank line is not an event: callers handle it."""
    if raw.startswith(_CONFIG):
        body = raw[len(_CONFIG):]
        try:
            orjson.loads(body)
        except orjson.JSONDecodeError as e:
            raise _err(source, lineno, f"configuration is not JSON ({e})", raw) from None
        return Event("config", None, "", "", body, source, lineno)
    if raw.startswith(("wss://", "ws://")):
        url, sp, rest = raw.partition(" ")
        if sp and rest.startswith("<-> "):
            ts_text = rest[4:]
            return Event("connect", _ts(source, lineno, ts_text, raw), ts_text, url, "", source, lineno)
        if sp and rest.startswith("<- "):
            ts_text, sep, text = rest[3:].partition(": ")
            if not sep:
                raise _err(source, lineno, "sent line without ': '", raw)
            return Event("sent", _ts(source, lineno, ts_text, raw), ts_text, url, text, source, lineno)
        raise _err(source, lineno, "websocket line is neither connect (' <-> ') nor sent (' <- ')", raw)
    if raw.startswith("http"):
        url, sep, rest = raw.partition(" -> ")
        if not sep or " " in url:
            raise _err(source, lineno, "REST line without ' -> '", raw)
        ts_text, sep, body = rest.partition(": ")
        if not sep:
            raise _err(source, lineno, "REST line without ': ' after TS", raw)
        return Event("rest", _ts(source, lineno, ts_text, raw), ts_text, url, body, source, lineno)
    ts_text, sep, text = raw.partition(": ")
    if not sep:
        raise _err(source, lineno, "line fits no rule (config/connect/sent/rest/frame)", raw)
    if not _TS_RE.match(ts_text):
        raise _err(source, lineno, "line fits no rule (frame TS is not a number)", raw)
    return Event("frame", float(ts_text), ts_text, "", text, source, lineno)


def is_jsonl(path: PathLike) -> bool:
    """A format-2 recording (cryptofeed's JSONL recorder): ``*.jsonl`` or ``*.jsonl.zst``."""
    name = os.fspath(path)
    return name.endswith((".jsonl", ".jsonl.zst"))


def _jsonl_lines(source: str) -> list[str]:
    try:
        with open(source, "rb") as f:
            raw = f.read()
    except FileNotFoundError:
        raise RecordingError(f"{source}: no such recording file") from None
    if source.endswith(".zst"):
        import zstandard

        try:
            # a capture ends a zstd frame every second: read every frame of the file
            raw = zstandard.ZstdDecompressor().stream_reader(raw, read_across_frames=True).read()
        except zstandard.ZstdError as e:
            raise RecordingError(f"{source}: not zstd ({e})") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise RecordingError(f"{source}: not UTF-8 ({e})") from None
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return lines


_JSONL_KIND = {"header": "config", "http": "rest", "connect": "connect", "send": "sent", "recv": "frame"}


def parse_jsonl_line(raw: str, source: str = "<string>", lineno: int = 0) -> Event:
    """One line of a format-2 recording → Event. Raises ``RecordingError``."""
    try:
        d = orjson.loads(raw)
    except orjson.JSONDecodeError as e:
        raise _err(source, lineno, f"not JSON ({e})", raw) from None
    kind = _JSONL_KIND.get(d.get("t")) if isinstance(d, dict) else None
    if kind is None:
        raise _err(source, lineno, "JSONL line without a known \"t\" (header/http/connect/send/recv)", raw)
    if kind == "config":
        return Event("config", None, "", "", raw, source, lineno)
    ts = d.get("ts")
    if not isinstance(ts, (int, float)) or isinstance(ts, bool):
        raise _err(source, lineno, "JSONL line without a numeric \"ts\"", raw)
    ts_text = repr(float(ts))
    url = d.get("url") or d.get("addr") or ""
    text = d.get("data", "")
    if not isinstance(text, str):  # a REST body recorded as a JSON value
        text = orjson.dumps(text).decode()
    return Event(kind, float(ts), ts_text, url, "" if kind == "connect" else text, source, lineno, str(d.get("conn", "")))


def iter_file(path: PathLike) -> Iterator[Event]:
    """Events of one file in file order. Blank lines are allowed only at the end of the file.
    Raises ``RecordingError`` (``file:line: ...``), also for a file that is not UTF-8."""
    source = os.fspath(path)
    if is_jsonl(source):
        for lineno, raw in enumerate(_jsonl_lines(source), 1):
            if raw:
                yield parse_jsonl_line(raw, source, lineno)
        return
    blank_at = 0
    try:
        with open(source, encoding="utf-8", newline="\n") as f:
            for lineno, raw in enumerate(f, 1):
                if raw.endswith("\n"):
                    raw = raw[:-1]
                if not raw:
                    blank_at = blank_at or lineno
                    continue
                if blank_at:
                    raise _err(source, blank_at, "blank line inside the file (allowed only at its end)", "")
                yield parse_line(raw, source, lineno)
    except UnicodeDecodeError as e:
        raise RecordingError(f"{source}: not UTF-8 ({e})") from None
    except FileNotFoundError:
        raise RecordingError(f"{source}: no such recording file") from None


def read_file(path: PathLike) -> list[Event]:
    """All events of one file, in file order (see :func:`iter_file`)."""
    return list(iter_file(path))


def expand_paths(paths: PathLike | Iterable[PathLike]) -> list[Path]:
    """Files named by ``paths`` (one path or several). A folder stands for the cryptofeed files
    directly in it (names ending in ``.<N>``, sorted), e.g. a split session folder."""
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    out: list[Path] = []
    for p in paths:
        p = Path(p)
        if p.is_dir():
            found = sorted(c for c in p.iterdir() if c.is_file() and (_ROTATION_RE.match(c.name) or is_jsonl(c))
                           and not c.name.startswith("."))
            if not found:
                raise RecordingError(f"{p}: folder holds no recording files (*.N, *.jsonl.zst)")
            out.extend(found)
        else:
            out.append(p)
    return out


def _keyed(events: Iterator[Event]) -> Iterator[tuple[float, Event]]:
    last = float("-inf")
    for ev in events:
        if ev.ts is not None:
            last = ev.ts
        yield last, ev


def iter_recording(paths: PathLike | Iterable[PathLike]) -> Iterator[Event]:
    """Events of one or several files merged by TS (stable: ties keep the order the files were
    given; each file keeps its own line order; a config line sorts with the line before it).
    This is how a split session (``X.ws.N.0`` + ``X.http.N.0`` + ``X.0``) is put back in
    receive order. Raises ``RecordingError``."""
    files = expand_paths(paths)
    if len(files) == 1:
        yield from iter_file(files[0])
        return
    for _key, ev in heapq.merge(*(_keyed(iter_file(f)) for f in files), key=lambda kv: kv[0]):
        yield ev


def read_recording(paths: PathLike | Iterable[PathLike]) -> list[Event]:
    """List form of :func:`iter_recording`."""
    return list(iter_recording(paths))


def frames(path: PathLike | Iterable[PathLike]) -> Iterator[tuple[float, str]]:
    """``(ts, text)`` of every received websocket frame, in receive order."""
    for ev in iter_recording(path):
        if ev.kind == "frame":
            yield ev.ts, ev.text  # type: ignore[misc]


def venue_of_url(url: str) -> str | None:
    """The kind of the venue a URL belongs to, by its host (each venue descriptor's ``hosts``,
    e.g. ``stream.binance.com`` → ``binance``, ``futures.kraken.com`` → ``kraken_futures``), or
    ``None``."""
    return venues.venue_of_url(url)


def detect_venue(events: Iterable[Event]) -> str:
    """The venue of a recording, from its connect/sent/rest URLs. Raises ``RecordingError`` if
    no URL names a known venue or two venues are mixed."""
    found: set[str] = set()
    first: Event | None = None
    for ev in events:
        first = first or ev
        if ev.url:
            v = venue_of_url(ev.url)
            if v:
                found.add(v)
    where = first.source if first else "<empty>"
    if not found:
        raise RecordingError(f"{where}: no URL of a known venue ({', '.join(venues.kinds())})")
    if len(found) > 1:
        raise RecordingError(f"{where}: URLs of several venues: {sorted(found)}")
    return found.pop()


def ws_sessions(events: Iterable[Event]) -> list[WsSession]:
    """Group frames and sent lines by websocket connection: each goes to the latest connect line
    of its own file (format 2: of its own ``conn``). Frames before any connect line of their
    file form a session with ``connect=None`` and ``url=""``."""
    sessions: list[WsSession] = []
    current: dict[tuple[str, str], WsSession] = {}
    for ev in events:
        key = (ev.source, ev.conn)
        if ev.kind == "connect":
            s = WsSession(ev.url, venue_of_url(ev.url), ev)
            sessions.append(s)
            current[key] = s
        elif ev.kind in ("frame", "sent"):
            s = current.get(key)
            if s is None:
                s = WsSession(ev.url, venue_of_url(ev.url) if ev.url else None, None)
                sessions.append(s)
                current[key] = s
            (s.frames if ev.kind == "frame" else s.sent).append(ev)
    return sessions


def format_event(ev: Event) -> str:
    """The recording line (without ``\\n``) for an event: ``parse_line(format_event(e))`` gives
    back ``e``'s kind, TS text, URL and text."""
    if ev.kind == "config":
        return _CONFIG + ev.text
    if ev.kind == "connect":
        return f"{ev.url} <-> {ev.ts_text}"
    if ev.kind == "sent":
        return f"{ev.url} <- {ev.ts_text}: {ev.text}"
    if ev.kind == "rest":
        return f"{ev.url} -> {ev.ts_text}: {ev.text}"
    if ev.kind == "frame":
        return f"{ev.ts_text}: {ev.text}"
    raise ValueError(f"unknown event kind {ev.kind!r}")


def find_lines(path: PathLike, match: str | Callable[[Event], bool], kind: str | None = "frame") -> list[int]:
    """1-based line numbers in one file of events of ``kind`` (``None``: any kind) whose text
    contains ``match`` (a string) or for which ``match(event)`` is true. Use it to aim edits."""
    test = (lambda ev: match in ev.text) if isinstance(match, str) else match
    return [ev.line for ev in iter_file(path) if (kind is None or ev.kind == kind) and test(ev)]


# ---------------------------------------------------------------- fault injection


@dataclass(frozen=True)
class Drop:
    """Remove line ``line``."""

    line: int


@dataclass(frozen=True)
class Insert:
    """Insert the raw line ``text`` (no ``\\n``) before line ``line``; ``line`` = last line + 1
    appends after the last line."""

    line: int
    text: str


@dataclass(frozen=True)
class Replace:
    """Replace line ``line`` with the raw line ``text``."""

    line: int
    text: str


@dataclass(frozen=True)
class Swap:
    """Exchange lines ``a`` and ``b`` (reorder)."""

    a: int
    b: int


@dataclass(frozen=True)
class Move:
    """Move line ``line`` to just before line ``to`` (reorder; a frame delivered late/early)."""

    line: int
    to: int


@dataclass(frozen=True)
class Corrupt:
    """Truncate the TEXT/BODY of a frame, sent or rest line to ``keep`` of its length (at least
    one character removed). The line still fits the grammar; its JSON does not parse."""

    line: int
    keep: float = 0.5


Edit = Union[Drop, Insert, Replace, Swap, Move, Corrupt, tuple]

_TUPLE_EDITS = {"drop": Drop, "insert": Insert, "replace": Replace, "swap": Swap, "move": Move, "corrupt": Corrupt}


def _as_edit(e: Edit):
    if isinstance(e, tuple):
        try:
            return _TUPLE_EDITS[e[0]](*e[1:])
        except (KeyError, IndexError, TypeError):
            raise ValueError(f"bad edit {e!r}; use Drop/Insert/Replace/Swap/Move/Corrupt or ('drop', n), ...") from None
    if not isinstance(e, (Drop, Insert, Replace, Swap, Move, Corrupt)):
        raise ValueError(f"bad edit {e!r}")
    return e


def _corrupt(raw: str, keep: float, where: str) -> str:
    if raw.startswith("{"):  # format 2: truncate "data", the line stays JSON
        d = orjson.loads(raw)
        if d.get("t") not in ("recv", "send", "http") or not isinstance(d.get("data"), str) or not d["data"]:
            raise ValueError(f"{where}: only a recv, send or http line with data can be corrupted")
        d["data"] = d["data"][: min(len(d["data"]) - 1, max(0, int(len(d["data"]) * keep)))]
        return orjson.dumps(d).decode()
    ev = parse_line(raw, where)
    if ev.kind not in ("frame", "sent", "rest") or not ev.text:
        raise ValueError(f"{where}: only a frame, sent or rest line with text can be corrupted")
    prefix = raw[: len(raw) - len(ev.text)]
    n = min(len(ev.text) - 1, max(0, int(len(ev.text) * keep)))
    return prefix + ev.text[:n]


def write_modified_recording(src: PathLike, dst: PathLike, edits: Sequence[Edit]) -> Path:
    """Write a copy of recording file ``src`` to ``dst`` with ``edits`` applied; returns ``dst``.

    Edits are :class:`Drop`, :class:`Insert`, :class:`Replace`, :class:`Swap`, :class:`Move`,
    :class:`Corrupt` or the tuples ``("drop", n)``, ``("insert", n, text)``,
    ``("replace", n, text)``, ``("swap", a, b)``, ``("move", n, to)``, ``("corrupt", n[, keep])``.
    Line numbers are 1-based positions in ``src`` (not in the partly edited copy), so inserts and
    drops do not shift later edits; edits are applied in the order given, and an edit naming a
    position acts on what that position holds by then (after ``Swap(3, 9)``, ``Drop(3)`` drops
    the original line 9). Lines not edited are copied
    byte for byte. ``dst`` is not validated: inserting a line that fits no rule is how a grammar
    error is injected. Raises ``ValueError`` for a line number outside the file.
    """
    src_s = os.fspath(src)
    if is_jsonl(src_s):
        lines, trailing_nl = _jsonl_lines(src_s), True
    else:
        with open(src_s, encoding="utf-8", newline="\n") as f:
            lines = f.read().split("\n")
        trailing_nl = len(lines) > 1 and lines[-1] == ""
        if trailing_nl:
            lines.pop()
    n = len(lines)
    slots: list[list[str]] = [[ln] for ln in lines]
    before: list[list[str]] = [[] for _ in range(n + 1)]

    def idx(line: int, allow_end: bool = False) -> int:
        hi = n + 1 if allow_end else n
        if not 1 <= line <= hi:
            raise ValueError(f"{src_s}: line {line} outside 1..{hi}")
        return line - 1

    for e in map(_as_edit, edits):
        if isinstance(e, Drop):
            slots[idx(e.line)] = []
        elif isinstance(e, Insert):
            before[idx(e.line, True)].append(e.text)
        elif isinstance(e, Replace):
            slots[idx(e.line)] = [e.text]
        elif isinstance(e, Swap):
            a, b = idx(e.a), idx(e.b)
            slots[a], slots[b] = slots[b], slots[a]
        elif isinstance(e, Move):
            a, t = idx(e.line), idx(e.to, True)
            before[t].extend(slots[a])
            slots[a] = []
        elif isinstance(e, Corrupt):
            i = idx(e.line)
            slots[i] = [_corrupt(ln, e.keep, f"{src_s}:{e.line}") for ln in slots[i]]
    out: list[str] = []
    for i in range(n):
        out.extend(before[i])
        out.extend(slots[i])
    out.extend(before[n])
    dst_p = Path(dst)
    data = ("\n".join(out) + ("\n" if trailing_nl and out else "")).encode()
    if dst_p.name.endswith(".zst"):
        import zstandard

        data = zstandard.ZstdCompressor().compress(data)
    dst_p.write_bytes(data)
    return dst_p
