"""How dm channels travel over NATS JetStream: subjects, message headers, and putting a channel's
record order back together on the receiving side. Pure Python (no nats import): the bridge
(``dm/bridge.py``), the remote reader (``dm/remote.py``) and the remote persister use it, and it
is tested without a server.

**Subjects**: ``dm.<instance>.<EXCHANGE>.<SYMBOL>.<schema>``, schema from the record's rtype
(``SCHEMA_OF``: trades, bbo, depth, book_deltas, bars, mbp_events, gaps, statistics,
definitions). A NATS subject token cannot hold ``.``, ``*``, ``>`` or white space (Databento
symbols such as ``ES.FUT`` can): those characters and ``%`` are %-escaped (``token``/``untoken``).

**Messages**: the payload is dm records of ONE rtype concatenated exactly as in the shm ring (the
DBN-style fixed-size little-endian structs of ``dm/_records.pxd``, layout ``LAYOUT_VERSION``).
The bridge reads a channel in *groups*: the records of ring positions ``[start, end)`` (ring
record indexes of one ring incarnation, its *epoch* = the ring's ``created_ns``) are split by
schema into one message per schema, published one after the other. Headers:

- ``Nats-Msg-Id``: ``<instance>.<EXCHANGE>.<SYMBOL>.<schema>.<epoch>.<start>`` — JetStream's
  de-duplication key, so a message re-published after a reconnect is stored once.
- ``Dm-Layout``: ``<layout version>:<layout hash, 8 hex digits>``; a receiver refuses others.
- ``Dm-Count``: records in the payload. ``Dm-Pos``: ``<epoch>:<ring index of its first record>``.
- ``Dm-Group``: ``<epoch>:<start>:<end>:<slots>:<schema,schema...>`` — the group's ring window,
  its record count (``slots``; a GAP record the bridge adds for a lapped window takes one slot and
  stands for the whole window) and which schemas it was split into.
- ``Dm-Runs``: only when a group has several schemas: ``skip,take,skip,take...`` over the group's
  slots, saying where this message's records sit in the channel's order.

``Reassembler`` turns messages back into the channel's exact record order, drops what it has
already delivered (a re-delivery after a reconnect), waits a bounded time for a group that
arrives out of order, and reports a window it never received as lost records.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

from dm.records import LAYOUT_HASH, LAYOUT_VERSION, RType

SCHEMA_OF: dict[int, str] = {
    int(RType.TRADE): "trades",
    int(RType.BBO): "bbo",
    int(RType.DEPTH): "depth",
    int(RType.BOOK_DELTA): "book_deltas",
    int(RType.BAR): "bars",
    int(RType.MBP_EVENT): "mbp_events",
    int(RType.GAP): "gaps",
    int(RType.STATISTICS): "statistics",
    int(RType.INSTRUMENT_DEF): "definitions",
}
RTYPE_OF: dict[str, int] = {v: k for k, v in SCHEMA_OF.items()}
SCHEMAS: tuple[str, ...] = tuple(SCHEMA_OF.values())
LAYOUT = f"{LAYOUT_VERSION}:{LAYOUT_HASH:08x}"

H_MSG_ID = "Nats-Msg-Id"
H_LAYOUT = "Dm-Layout"
H_COUNT = "Dm-Count"
H_POS = "Dm-Pos"
H_GROUP = "Dm-Group"
H_RUNS = "Dm-Runs"

_ESCAPE = {c: f"%{ord(c):02X}" for c in "%.*> \t\r\n"}


def schema_of(rtype: int) -> str:
    """Subject schema of an rtype; ``rtypeXX`` for one dm does not name (never dropped)."""
    return SCHEMA_OF.get(rtype) or f"rtype{rtype:02x}"


def token(value: str) -> str:
    """A subject token for ``value`` (%-escapes ``% . * >`` and white space). Raises
    ``ValueError`` for an empty value."""
    if not value:
        raise ValueError("empty subject token")
    if not any(c in _ESCAPE for c in value):
        return value
    return "".join(_ESCAPE.get(c, c) for c in value)


def untoken(tok: str) -> str:
    """Inverse of ``token``."""
    if "%" not in tok:
        return tok
    out, i = [], 0
    while i < len(tok):
        if tok[i] == "%" and i + 3 <= len(tok):
            out.append(chr(int(tok[i + 1:i + 3], 16)))
            i += 3
        else:
            out.append(tok[i])
            i += 1
    return "".join(out)


def channel_subject(instance: str, exchange: str, symbol: str, schema: str = "*") -> str:
    """``dm.<instance>.<EXCHANGE>.<SYMBOL>.<schema>`` (schema ``*``: every schema)."""
    return f"dm.{token(instance)}.{token(exchange)}.{token(symbol)}.{schema}"


def parse_subject(subject: str) -> tuple[str, str, str, str]:
    """``(instance, exchange, symbol, schema)`` of a channel subject. Raises ``ValueError``."""
    parts = subject.split(".")
    if len(parts) != 5 or parts[0] != "dm":
        raise ValueError(f"not a dm channel subject: {subject!r}")
    return untoken(parts[1]), untoken(parts[2]), untoken(parts[3]), parts[4]


def runs_text(runs: list[tuple[int, int]]) -> str:
    return ",".join(f"{s},{t}" for s, t in runs)


@dataclass(frozen=True)
class Header:
    """The parsed dm headers of one message."""

    epoch: int
    start: int
    end: int
    slots: int
    schemas: tuple[str, ...]
    count: int
    first_pos: int
    runs: tuple[tuple[int, int], ...] | None  # (skip, take) over the group's slots


def parse_headers(h: dict | None) -> Header:
    """Parse and check a message's dm headers. Raises ``ValueError`` (missing header, another
    record layout, inconsistent counts)."""
    if not h or H_GROUP not in h:
        raise ValueError("not a dm bridge message (no Dm-Group header)")
    if h.get(H_LAYOUT) != LAYOUT:
        raise ValueError(f"record layout {h.get(H_LAYOUT)!r} != this process's {LAYOUT!r}: run the same dm version")
    e, s, en, sl, sch = h[H_GROUP].split(":", 4)
    count = int(h[H_COUNT])
    pe, pp = h.get(H_POS, f"{e}:{s}").split(":")
    runs = None
    if h.get(H_RUNS):
        v = [int(x) for x in h[H_RUNS].split(",")]
        runs = tuple(zip(v[0::2], v[1::2]))
        if sum(t for _, t in runs) != count:
            raise ValueError(f"Dm-Runs covers {sum(t for _, t in runs)} records, Dm-Count says {count}")
    return Header(int(e), int(s), int(en), int(sl), tuple(sch.split(",")), count, int(pp), runs)


# ------------------------------------------------------------------------------ reassembly

@dataclass
class _Group:
    epoch: int
    start: int
    end: int
    slots: int
    expect: int  # messages this receiver will get
    t0: float
    parts: dict = field(default_factory=dict)  # schema -> (payload, Header, stream seq)


class Reassembler:
    """Channel order from bridge messages, for one subscription.

    ``add(schema, payload, header, seq)`` takes one message (``seq``: its JetStream stream
    sequence) and returns what became deliverable, in the channel's order: ``("records",
    payload_bytes, record_size, n, group_seq)`` chunks of one rtype (``group_seq``: the smallest
    stream sequence of the group's messages, where a resumed subscription restarts the group), and ``("lost", n)`` for ring records this
    receiver will never get (retention dropped them, or they never reached the stream). ``poll()``
    releases what a bounded wait (``reorder_s`` or ``max_held`` groups) gave up on.

    ``schemas``: the subscription's schemas (None: all). With all schemas the ring windows must be
    contiguous, so a missing window is waited for, then reported lost. With a subset, groups are
    released in arrival order once complete and only re-deliveries are dropped. A fresh
    reassembler starts at the first group it receives (the stream is in order there: reordering
    only follows a bridge reconnect, see ``dm/bridge.py``)."""

    def __init__(self, schemas=None, reorder_s: float = 2.0, max_held: int = 256, clock=time.monotonic):
        self.schemas = None if schemas is None else frozenset(schemas)
        self.reorder_s = reorder_s
        self.max_held = max_held
        self.clock = clock
        self.epoch: int | None = None
        self.next_pos: int | None = None  # ring index the next group must start at
        self.held: dict[tuple[int, int], _Group] = {}
        self.duplicates = 0  # messages dropped as already delivered
        self.lost = 0

    @property
    def contiguous(self) -> bool:
        return self.schemas is None

    def oldest_held_seq(self) -> int | None:
        """Smallest stream sequence among messages received but not yet delivered (for resuming)."""
        seqs = [p[2] for g in self.held.values() for p in g.parts.values()]
        return min(seqs) if seqs else None

    def add(self, schema: str, payload: bytes, hdr: Header, seq: int = 0) -> list:
        if self.epoch is not None and (hdr.epoch < self.epoch or (hdr.epoch == self.epoch and hdr.end <= self.next_pos)):
            self.duplicates += 1
            return []
        key = (hdr.epoch, hdr.start)
        g = self.held.get(key)
        if g is None:
            mine = [s for s in hdr.schemas if self.schemas is None or s in self.schemas]
            g = self.held[key] = _Group(hdr.epoch, hdr.start, hdr.end, hdr.slots, len(mine), self.clock())
        if schema in g.parts:
            self.duplicates += 1
            return []
        g.parts[schema] = (payload, hdr, seq)
        return self._drain()

    def poll(self) -> list:
        """Deliver what waited too long (a missing window is then reported lost)."""
        return self._drain(force_old=True)

    def _ready(self, g: _Group) -> bool:
        return len(g.parts) >= g.expect

    def _drain(self, force_old: bool = False) -> list:
        out: list = []
        now = self.clock()
        while self.held:
            key = min(self.held)  # (epoch, start): ring order; a newer ring has a larger epoch
            g = self.held[key]
            ready = len(g.parts) >= g.expect
            timed_out = (force_old and now - g.t0 >= self.reorder_s) or len(self.held) > self.max_held
            expected = None
            if self.contiguous and self.epoch is not None:
                expected = 0 if g.epoch != self.epoch else self.next_pos  # a new ring starts at 0
            in_order = expected is None or g.start == expected
            if not ((in_order and ready) or timed_out):
                break
            del self.held[key]
            if expected is not None and g.start > expected:
                out.append(("lost", g.start - expected))
                self.lost += g.start - expected
            out.extend(self._release(g))
            self.epoch, self.next_pos = g.epoch, g.end
        return out

    def _release(self, g: _Group) -> list:
        parts = g.parts
        gseq = min(p[2] for p in parts.values())
        if len(parts) == 1:
            (payload, hdr, _), = parts.values()
            if hdr.runs is None or g.expect == 1:
                out = [("records", payload, payload[0] * 4, hdr.count, gseq)] if hdr.count else []
                return self._lost_parts(g, out)
        segs = []  # (slot, payload slice, record size, n)
        for payload, hdr, _ in parts.values():
            size = payload[0] * 4 if payload else 0
            if hdr.runs is None:
                segs.append((0, payload, size, hdr.count))
                continue
            slot, off = 0, 0
            for skip, take in hdr.runs:
                slot += skip
                segs.append((slot, payload[off:off + take * size], size, take))
                slot += take
                off += take * size
        segs.sort(key=lambda s: s[0])
        out = [("records", p, size, n, gseq) for _, p, size, n in segs if n]
        return self._lost_parts(g, out)

    def _lost_parts(self, g: _Group, out: list) -> list:
        """A group released without every expected message: its missing records are lost."""
        if len(g.parts) < g.expect and self.contiguous:
            got = sum(p[1].count for p in g.parts.values())
            n = g.slots - got
            if n > 0:
                out.append(("lost", n))
                self.lost += n
        return out
