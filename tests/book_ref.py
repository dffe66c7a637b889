"""Pure-Python reference L2 book (the test oracle for ``dm._book.L2Book``) and loaders that turn
the real recordings in ``data/`` into BOOK_DELTA records without ``dm._codec``.

``RefBook`` follows the same rules as ``L2Book`` (see ``dm/_book.pyx``) with the obvious Python
data structures: a dict price → size per side plus a bisect-sorted key list. It is also the
baseline of ``bench/bench_book.py``.

Loaders parse cryptofeed raw-data recordings (``data/README.md`` §1) with orjson (Kraken
Futures with the stdlib ``json`` and ``parse_float=str`` so numbers never go through float) and
build records with ``struct``.
"""
from __future__ import annotations

import json
import struct
import zlib
from bisect import bisect_left
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path

import orjson

SIDE_ASK, SIDE_BID = ord("A"), ord("B")
ACTION_ADD, ACTION_MODIFY, ACTION_CANCEL, ACTION_CLEAR = ord("A"), ord("M"), ord("C"), ord("R")
RTYPE_BOOK_DELTA = 0xE3
FLAG_SNAPSHOT = 1 << 5
FLAG_LAST = 1 << 7
MASK_BBO, MASK_TOP10, MASK_CROSSED = 1, 2, 4
UNDEF_PRICE = (1 << 63) - 1

DELTA = struct.Struct("<BBHIQQqQQBBBB4x")
assert DELTA.size == 56


def delta(
    instrument_id: int,
    side: int,
    price: int,
    size: int,
    *,
    action: int | None = None,
    sequence: int = 0,
    flags: int = 0,
    ts_event: int = 0,
    ts_recv: int = 0,
    publisher_id: int = 0,
) -> bytes:
    """One BOOK_DELTA record (56 B). ``action`` defaults to 'C' for size 0 else 'A'."""
    if action is None:
        action = ACTION_CANCEL if size == 0 else ACTION_ADD
    return DELTA.pack(
        14, RTYPE_BOOK_DELTA, publisher_id, instrument_id, ts_event, ts_recv, price, size,
        sequence, side, action, flags, 9,
    )


def clear(instrument_id: int, *, sequence: int = 0, publisher_id: int = 0) -> bytes:
    return DELTA.pack(14, RTYPE_BOOK_DELTA, publisher_id, instrument_id, 0, 0, 0, 0, sequence,
                      ord("N"), ACTION_CLEAR, FLAG_SNAPSHOT, 9)


def fixed(text) -> int:
    """Exact decimal text (or int) → fixed point 1e-9; raises ValueError when inexact."""
    if isinstance(text, int):
        return text * 1_000_000_000
    if "e" not in text and "E" not in text:
        whole, _, frac = text.partition(".")
        if len(frac) <= 9:
            neg = whole.startswith("-")
            v = int(whole or "0") * 1_000_000_000
            f = int((frac + "000000000")[:9]) if frac else 0
            return v - f if neg else v + f
    d = Decimal(text).scaleb(9)
    if d != d.to_integral_value():
        raise ValueError(f"{text!r} has more than 9 decimals")
    return int(d)


def levels_records(instrument_id: int, side: int, levels, *, sequence: int = 0,
                   flags: int = 0) -> bytes:
    """``levels`` = iterable of (price_text, size_text) → concatenated records."""
    return b"".join(
        delta(instrument_id, side, fixed(p), fixed(q), sequence=sequence, flags=flags)
        for p, q in levels
    )


def snapshot_records(instrument_id: int, bids, asks, *, sequence: int = 0) -> bytes:
    """CLEAR + one ADD per level (FLAG_SNAPSHOT), bids then asks, as a venue snapshot."""
    return (
        clear(instrument_id, sequence=sequence)
        + levels_records(instrument_id, SIDE_BID, bids, sequence=sequence, flags=FLAG_SNAPSHOT)
        + levels_records(instrument_id, SIDE_ASK, asks, sequence=sequence, flags=FLAG_SNAPSHOT)
    )


# --------------------------------------------------------------------------- reference book


class RefSide:
    """One side: dict key → size, plus ascending key list (best at the end)."""

    __slots__ = ("sizes", "keys")

    def __init__(self):
        self.sizes: dict[int, int] = {}
        self.keys: list[int] = []

    def set(self, key: int, size: int) -> int:
        keys = self.keys
        old = self.sizes.get(key)
        if old is None:
            if size == 0:
                return 0
            i = bisect_left(keys, key)
            keys.insert(i, key)
            self.sizes[key] = size
            dist = len(keys) - 1 - i
        else:
            i = bisect_left(keys, key)
            dist = len(keys) - 1 - i
            if size == 0:
                del keys[i]
                del self.sizes[key]
            elif old != size:
                self.sizes[key] = size
            else:
                return 0
        if dist == 0:
            return MASK_BBO | MASK_TOP10
        return MASK_TOP10 if dist < 10 else 0

    def top(self):
        if not self.keys:
            return None
        k = self.keys[-1]
        return (k, self.sizes[k])

    def truncate(self, depth: int) -> int:
        n = len(self.keys)
        if n <= depth:
            return 0
        for k in self.keys[: n - depth]:
            del self.sizes[k]
        del self.keys[: n - depth]
        return MASK_TOP10 if depth < 10 else 0


class RefBook:
    """Same API subset and semantics as ``L2Book``: apply, apply_level, best_bid/best_ask,
    crossed, n_bids/n_asks, levels, truncate, clear, kraken_checksum, bbo_tuple."""

    def __init__(self, instrument_id: int = 0, publisher_id: int = 0, max_depth: int = 0):
        self.instrument_id = instrument_id
        self.publisher_id = publisher_id
        self.max_depth = max_depth
        self.bids = RefSide()   # key = price
        self.asks = RefSide()   # key = -price (best = lowest price at the end)

    def _top(self):
        return (self.bids.top(), self.asks.top())

    def _finish(self, m: int, before) -> int:
        if self.max_depth:
            m |= self.bids.truncate(self.max_depth) | self.asks.truncate(self.max_depth)
        m &= ~MASK_BBO
        if self._top() != before:
            m |= MASK_BBO | MASK_TOP10
        if self.crossed:
            m |= MASK_CROSSED
        return m

    def apply(self, records) -> int:
        mv = memoryview(records).cast("B")
        if len(mv) % 56:
            raise ValueError("buffer ends inside a record")
        before = self._top()
        m = 0
        for (length, rtype, _pub, iid, _te, _tr, price, size, _seq, side, action,
             _fl, _sp) in DELTA.iter_unpack(mv):
            if rtype != RTYPE_BOOK_DELTA or length != 14 or iid != self.instrument_id:
                raise ValueError("bad record")
            if action == ACTION_CLEAR:
                if self.bids.keys or self.asks.keys:
                    m |= MASK_TOP10
                self.bids, self.asks = RefSide(), RefSide()
                continue
            if action == ACTION_CANCEL:
                size = 0
            elif action not in (ACTION_ADD, ACTION_MODIFY):
                raise ValueError("bad action")
            if side == SIDE_BID:
                m |= self.bids.set(price, size)
            elif side == SIDE_ASK:
                m |= self.asks.set(-price, size)
            else:
                raise ValueError("bad side")
        return self._finish(m, before)

    def apply_level(self, side: int, price: int, size: int) -> int:
        before = self._top()
        if side == SIDE_BID:
            m = self.bids.set(price, size)
        else:
            m = self.asks.set(-price, size)
        return self._finish(m, before)

    @property
    def best_bid(self):
        return self.bids.top()

    @property
    def best_ask(self):
        t = self.asks.top()
        return None if t is None else (-t[0], t[1])

    @property
    def crossed(self) -> bool:
        b, a = self.best_bid, self.best_ask
        return b is not None and a is not None and b[0] >= a[0]

    @property
    def n_bids(self) -> int:
        return len(self.bids.keys)

    @property
    def n_asks(self) -> int:
        return len(self.asks.keys)

    def levels(self, side: int, n: int = 0) -> list[tuple[int, int]]:
        if side == SIDE_BID:
            s, sign = self.bids, 1
        else:
            s, sign = self.asks, -1
        keys = s.keys[::-1] if n <= 0 else s.keys[: -n - 1 : -1]
        return [(sign * k, s.sizes[k]) for k in keys]

    def as_dicts(self) -> tuple[dict[int, int], dict[int, int]]:
        return dict(self.bids.sizes), {-k: v for k, v in self.asks.sizes.items()}

    def truncate(self, depth: int) -> None:
        self.bids.truncate(depth)
        self.asks.truncate(depth)

    def clear(self) -> None:
        self.bids, self.asks = RefSide(), RefSide()

    def kraken_checksum(self, price_decimals: int, size_decimals: int) -> int:
        """Kraken WebSocket API v1 "Book checksum", computed from decimal text."""
        parts = []
        for side in (SIDE_ASK, SIDE_BID):
            for price, size in self.levels(side, 10):
                for v, d in ((price, price_decimals), (size, size_decimals)):
                    text = f"{Decimal(v).scaleb(-9):.{d}f}"
                    parts.append(text.replace(".", "").lstrip("0"))
        return zlib.crc32("".join(parts).encode())


def book_state(book) -> tuple[list, list]:
    """Full state of an L2Book or RefBook, best first."""
    return book.levels(SIDE_BID), book.levels(SIDE_ASK)


# --------------------------------------------------------------------------- recordings


def recording_lines(*paths: Path):
    """Yield ``(ts, kind, text, url)`` from cryptofeed recordings (data/README.md §1), several
    files merged by the line timestamp (stable: equal timestamps keep file order). ``kind`` is
    ``"frame"`` (url "") or ``"rest"`` (text = body); config/connect/sent lines are skipped."""
    out = []
    for fi, path in enumerate(paths):
        with open(path, "rb") as fh:
            for li, raw in enumerate(fh):
                line = raw.decode().rstrip("\n")
                if not line or line.startswith("configuration: ") or line.startswith("wss://"):
                    continue
                if line.startswith("http"):
                    url, rest = line.split(" -> ", 1)
                    ts, body = rest.split(": ", 1)
                    out.append((float(ts), fi, li, "rest", body, url))
                else:
                    ts, text = line.split(": ", 1)
                    out.append((float(ts), fi, li, "frame", text, ""))
    if len(paths) > 1:
        out.sort(key=lambda t: t[0])
    for ts, _fi, _li, kind, text, url in out:
        yield ts, kind, text, url


def coinbase_l2_events(path: Path, iid_of) -> list[tuple[str, bool, bytes]]:
    """``[(product_id, is_snapshot, records)]``, one per ``l2_data`` event of a Coinbase Advanced
    Trade recording (dm's JSONL capture, zstd): the event's levels as BOOK_DELTA records of
    instrument ``iid_of(product_id)``, bids then offers (as the worker applies them), prices
    1e-9 and sizes 1e-8 fixed point; no CLEAR record (a snapshot's caller adds one)."""
    import zstandard

    text = zstandard.ZstdDecompressor().stream_reader(Path(path).read_bytes()).read().decode()
    out = []
    for line in text.split("\n"):
        if not line:
            continue
        e = json.loads(line)
        if e.get("t") != "recv":
            continue
        m = json.loads(e["data"])
        if m.get("channel") != "l2_data":
            continue
        for ev in m["events"]:
            iid = iid_of(ev["product_id"])
            recs = [delta(iid, SIDE_BID if u["side"] == "bid" else SIDE_ASK,
                          int(Decimal(u["price_level"]).scaleb(9)), int(Decimal(u["new_quantity"]).scaleb(8)))
                    for side in ("bid", "offer") for u in ev["updates"] if u["side"] == side]
            out.append((ev["product_id"], ev["type"] == "snapshot", b"".join(recs)))
    return out


@dataclass
class BinanceEvent:
    kind: str                 # "snapshot" | "diff" | "ticker"
    symbol: str
    first_id: int = 0         # diff U
    last_id: int = 0          # diff u, snapshot lastUpdateId, ticker u
    bids: list = field(default_factory=list)   # [(price_text, qty_text)]
    asks: list = field(default_factory=list)
    ticker: tuple | None = None                # (bid_px, bid_sz, ask_px, ask_sz) fixed 1e-9


def load_binance(*paths: Path) -> list[BinanceEvent]:
    """depthUpdate diffs, REST depth snapshots and bookTickers, in recorded order (split
    sessions: pass the .ws and .http files; they are merged by the line timestamp)."""
    events: list[BinanceEvent] = []
    for _ts, kind, text, url in recording_lines(*paths):
        if kind == "rest":
            if "/depth?" not in url:
                continue            # exchangeInfo
            symbol = url.split("symbol=", 1)[1].split("&", 1)[0]
            d = orjson.loads(text)
            events.append(BinanceEvent("snapshot", symbol, last_id=d["lastUpdateId"],
                                       bids=d["bids"], asks=d["asks"]))
            continue
        msg = orjson.loads(text)
        stream, data = msg["stream"], msg["data"]
        if "@depth" in stream:
            events.append(BinanceEvent("diff", data["s"], data["U"], data["u"], data["b"],
                                       data["a"]))
        elif stream.endswith("@bookTicker"):
            events.append(BinanceEvent(
                "ticker", data["s"], last_id=data["u"],
                ticker=(fixed(data["b"]), fixed(data["B"]), fixed(data["a"]), fixed(data["A"]))))
    return events


def binance_diff_records(instrument_id: int, ev: BinanceEvent) -> bytes:
    return (levels_records(instrument_id, SIDE_BID, ev.bids, sequence=ev.last_id)
            + levels_records(instrument_id, SIDE_ASK, ev.asks, sequence=ev.last_id))


def binance_snapshot_records(instrument_id: int, ev: BinanceEvent) -> bytes:
    return snapshot_records(instrument_id, ev.bids, ev.asks, sequence=ev.last_id)


@dataclass
class KrakenEvent:
    kind: str                 # "snapshot" | "update"
    pair: str
    bids: list                # [[price, volume, time, ("r")]]
    asks: list
    checksum: int | None = None


def load_kraken(path: Path) -> list[KrakenEvent]:
    """Kraken WS v1 book snapshots and updates (data/README.md §3), in recorded order."""
    events = []
    for _ts, kind, text, _url in recording_lines(path):
        if kind != "frame" or not text.startswith("["):
            continue
        msg = orjson.loads(text)
        if not str(msg[-2]).startswith("book"):
            continue
        pair = msg[-1]
        payloads = msg[1:-2]
        if "as" in payloads[0] or "bs" in payloads[0]:
            events.append(KrakenEvent("snapshot", pair, payloads[0].get("bs", []),
                                      payloads[0].get("as", [])))
            continue
        bids, asks, c = [], [], None
        for p in payloads:
            asks.extend(p.get("a", []))
            bids.extend(p.get("b", []))
            if "c" in p:
                c = int(p["c"])
        events.append(KrakenEvent("update", pair, bids, asks, c))
    return events


def kraken_update_records(instrument_id: int, ev: KrakenEvent) -> bytes:
    """Asks then bids: every v1 frame that carries both puts the ``a`` object first."""
    return (levels_records(instrument_id, SIDE_ASK, [(lv[0], lv[1]) for lv in ev.asks])
            + levels_records(instrument_id, SIDE_BID, [(lv[0], lv[1]) for lv in ev.bids]))


def kraken_snapshot_records(instrument_id: int, ev: KrakenEvent) -> bytes:
    return snapshot_records(instrument_id, [(lv[0], lv[1]) for lv in ev.bids],
                            [(lv[0], lv[1]) for lv in ev.asks])


def kraken_pair_decimals(asset_pairs_path: Path) -> dict[str, tuple[int, int]]:
    """wsname → (pair_decimals, lot_decimals) from the recorded REST AssetPairs response."""
    for _ts, kind, text, _url in recording_lines(asset_pairs_path):
        if kind == "rest":
            result = orjson.loads(text)["result"]
            return {v["wsname"]: (v["pair_decimals"], v["lot_decimals"])
                    for v in result.values() if "wsname" in v}
    raise ValueError(f"no AssetPairs response in {asset_pairs_path}")


@dataclass
class KrakenFuturesEvent:
    kind: str                 # "snapshot" | "delta" | "ticker"
    product: str
    seq: int = 0
    bids: list = field(default_factory=list)   # snapshot [(price_text, qty_text)]
    asks: list = field(default_factory=list)
    side: int = 0                               # delta
    price: int = 0                              # fixed 1e-9 (delta; ticker bid)
    qty: int = 0                                # fixed 1e-9 (delta; ticker ask in `ask`)
    ask: int = 0


def load_kraken_futures(path: Path) -> list[KrakenFuturesEvent]:
    """Kraken Futures WS v1 book_snapshot / book / ticker_lite frames (data/README.md §4)."""
    events = []
    for _ts, kind, text, _url in recording_lines(path):
        if kind != "frame":
            continue
        msg = json.loads(text, parse_float=str)
        if "event" in msg:
            continue                # info / subscribed
        feed = msg.get("feed")
        if feed == "book_snapshot":
            events.append(KrakenFuturesEvent(
                "snapshot", msg["product_id"], msg["seq"],
                bids=[(str(x["price"]), str(x["qty"])) for x in msg["bids"]],
                asks=[(str(x["price"]), str(x["qty"])) for x in msg["asks"]]))
        elif feed == "book":
            events.append(KrakenFuturesEvent(
                "delta", msg["product_id"], msg["seq"],
                side=SIDE_BID if msg["side"] == "buy" else SIDE_ASK,
                price=fixed(str(msg["price"])), qty=fixed(str(msg["qty"]))))
        elif feed == "ticker_lite":
            events.append(KrakenFuturesEvent("ticker", msg["product_id"],
                                             price=fixed(str(msg["bid"])),
                                             ask=fixed(str(msg["ask"]))))
    return events


def kf_delta_record(instrument_id: int, ev: KrakenFuturesEvent) -> bytes:
    return delta(instrument_id, ev.side, ev.price, ev.qty, sequence=ev.seq)


def kf_snapshot_records(instrument_id: int, ev: KrakenFuturesEvent) -> bytes:
    return snapshot_records(instrument_id, ev.bids, ev.asks, sequence=ev.seq)


def instrument_ids(names) -> dict[str, int]:
    """Deterministic small ids for test books (not the production registry)."""
    return {name: i + 1 for i, name in enumerate(sorted(set(names)))}


def state_snapshot_records(instrument_id: int, book, *, sequence: int = 0) -> bytes:
    """A venue-style snapshot (CLEAR + levels, best first) of a book's current state: what a
    REST snapshot / resubscribe would deliver at this moment. Used by the fault tests."""
    out = [clear(instrument_id, sequence=sequence)]
    for side in (SIDE_BID, SIDE_ASK):
        for price, size in book.levels(side):
            out.append(delta(instrument_id, side, price, size, sequence=sequence,
                             flags=FLAG_SNAPSHOT))
    return b"".join(out)
