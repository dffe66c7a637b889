"""A venue session N times as long, generated from its recording by tiling it in time (for the
worker benchmark: some shipped recordings are so short that start-up dominates them).

Tile 0 is the recording itself, its lines as recorded: connection, subscription acks, REST and
websocket snapshots, then its stream. Tiles 1..N-1 repeat only the steady-state stream of tile 0 (book
diffs/changes/updates, trades, tickers, heartbeats) in recorded order, every continuity field
shifted so that each tile continues the previous one under the venue's documented book rule,
and every time (the recorder's TS and the venue's own times) shifted forward by the tile stride
``S`` (whole seconds, longer than the recording), so times stay monotonic. What is not
repeated: connects, subscribe requests and acks, REST and websocket snapshots (a book is
synced once, in tile 0; a Bybit linear ticker's snapshot is the exception, see ``bybit``), the
book diffs tile 0's book drops before its snapshot, and bucket-aligned candles (Binance and
Bybit ``kline``, Coinbase ``candles``: a window's open time cannot move by ``S``).

**Book resets.** Book diffs set absolute levels, so tile k+1's diffs, replayed onto the book
tile k left, would mix two moments of the book (a level set early in the recording next to one
set late: crossed books). At each tile boundary the generator therefore inserts ONE generated
diff per book, in the venue's own message form and continuity chain, that sets every level
which differs from the book tile 0's diffs started from (its snapshot) back to it. Every tile's
diffs then meet the book they met in the recording and leave it as they left it (without the
resets, 3 tiles of the COIN-M recording give the worker 1,064 crossed books, of Coinbase 472). A
boundary costs ``resets_per_tile`` extra frames (one per book with diffs).

Continuity, per venue (venue API docs, sections named):

* ``binance`` spot ("WebSocket Streams → How to manage a local order book correctly", as dm's
  ``BinanceDepthSync`` applies it: the book applies the diffs with ``u > lastUpdateId``, the
  first one with ``U <= lastUpdateId + 1 <= u``, each next one with ``U == previous u + 1``;
  no ``pu``): the futures shifts below with the spot rule: per symbol ``U``/``u`` of diffs and
  ``u`` of ``bookTicker`` of tile k + ``k*D``, ``D`` = (last ``u`` - first ``U`` of the diffs
  the book applied) + 2, or the bookTicker ``u`` span + 1 if larger; the reset diff has ``U``
  = the tile's last ``u`` + 1 and ``u`` = the next tile's first ``U`` - 1 (one id unless the
  bookTicker span set ``D``). ``aggTrade`` as futures; ``E`` (diffs, trades), ``T`` (trades)
  + ``S``. The REST depth snapshots (in the websocket file, one per symbol) are served as
  recorded, once: whenever the worker's request lands, ``lastUpdateId`` is tile 0's, which
  tile 0's first applied diff straddles as recorded and every later diff continues. The worker
  buffers the diffs meanwhile, at most 10,000 per symbol (``BinanceDepthSync.max_buffer``): a
  snapshot landing after that many of one symbol (DENTUSDT: ~1,000 a tile) would find the
  diff it needs dropped and stay stale (seen as extra resyncs, not as gaps).
* ``binance_futures`` / ``binance_delivery`` (USD-M / COIN-M Futures "WebSocket Market Streams
  → How to manage a local order book correctly": each event's ``pu`` must equal the previous
  event's ``u``): per symbol, every update id (``U``/``u``/``pu`` of diffs, ``u`` of
  ``bookTicker``) of tile k is shifted by ``k*D``; the reset diff has ``pu`` = the tile's last
  ``u`` and ``u`` = the next tile's first ``pu``, so ``D`` = (last ``u`` - first ``pu`` of the
  diffs the book applied) + 1, or the bookTicker ``u`` span + 1 if larger (bookTicker ``u``
  then keeps increasing too). ``aggTrade`` ``a`` shifted by its count (contiguous across tiles),
  ``f``/``l`` by the span of trade ids; ``E``/``T`` by ``S``. The REST depth snapshot is served
  once (tile 0's).
* ``bybit`` (API v5 "WebSocket Stream → Public → Orderbook", "Process snapshot/delta", as
  dm's ``BybitBookSync`` applies it: a ``snapshot`` replaces the book, each ``delta`` carries
  ``u`` == previous ``u`` + 1, a delta with ``u`` = 1 is a snapshot too (service restart);
  ``seq``, the cross sequence, is not a continuity counter): the 2026 recording is one JSONL
  file holding the linear then the spot connection; every repeated frame goes back on its own
  connection, the reset delta on its book's. Books are per category and symbol (dm's
  ``<category>:<symbol>``): ``u`` of tile k + ``k*D``, ``D`` = last ``u`` - snapshot ``u`` + 1
  (one id for the reset delta, a ``delta`` with ``u`` = the tile's last ``u`` + 1, levels as
  Bybit writes them: bids best first, size ``"0"`` deletes). ``seq`` of book deltas and trades
  and ``cs`` of tickers (one cross sequence per symbol and category) + ``k*`` (their span + 2;
  the reset delta takes the value after the span). "Ticker": a delta carries only the fields
  that changed, merged into the state the subscribe-time ``snapshot`` set, so a linear
  ticker's snapshot repeats in every tile, before its deltas as recorded (each tile's deltas
  meet the ticker they met, as the book reset does for books); spot tickers are all
  snapshots. "Trade": ``i`` decimal (spot) + ``k*`` its span + 1, a UUID (linear) replaced by
  the name-based UUID (``uuid5``) of the recorded one and ``k``. ``ts``, ``cts``, trades' ``T``
  + ``S``; ``nextFundingTime`` (a funding-interval boundary, like a kline window) as recorded.
  The replay answers subscribe requests itself (the recorded acks are not sent: ``served``
  counts neither them nor kline, which the bench does not subscribe to).
* ``deribit`` (API v2 "Subscriptions → book.{instrument_name}.{interval}": a change's
  ``prev_change_id`` is the previous notification's ``change_id``): per instrument,
  ``change_id``/``prev_change_id`` of tile k + ``k*D``, ``D`` = last ``change_id`` - snapshot
  ``change_id`` + 1 (one id for the reset change); trades' ``trade_seq`` per instrument and
  ``trade_id`` by their spans + 1 (the 2021-07-22 recording has no trade); ``timestamp`` + ``S``.
* ``coinbase`` Advanced Trade ("WebSocket Overview → Sequence Numbers": ``sequence_num`` is
  incremented by one for each message on the connection): later tiles' messages (resets
  included) are numbered on from tile 0's last; level2 ``update`` events only (the
  ``snapshot`` stays in tile 0); ``trade_id`` per product by its span + 1; ``timestamp``,
  ``time``, ``event_time``, the heartbeats' ``current_time`` (and its ``m=+`` clock) and
  ``heartbeat_counter`` (one a second) + ``S``.
* ``bitstamp`` (WebSocket API v2 "diff_order_book": no sequence number; dm orders diffs by
  ``microtimestamp`` against the REST "Order book" snapshot's): ``microtimestamp`` /
  ``timestamp`` + ``S`` keep every pair's diffs monotonic; trade ``id`` by its span + 1.
* ``okx`` (API v5 "WebSocket → Public Channel → Order book channel" with its "Sequence ID" and
  "Checksum" sections): an update's ``prevSeqId`` is the previous message's ``seqId`` (an update
  without change may repeat it), and after every message the book's top 25 levels must give
  its ``checksum`` (CRC32, signed 32-bit). Per instrument, ``seqId``/``prevSeqId`` of tile k +
  ``k*D``, ``D`` = last ``seqId`` - snapshot ``seqId`` + 1 (one id for the reset update); the
  2022-02-27 recording has no ``seqId`` (dm's ``OkxBookSync``: OKX sent none before 2022-11)
  and is chained by the checksum alone, ``D`` = 0. Repeated updates keep their ``checksum``:
  tile k's update meets the book the recorded one met, so the top 25 are the recorded ones.
  The reset update carries the snapshot's own ``checksum`` (it brings the book back to the
  snapshot), levels as OKX writes them (``[px, sz, "0", orders]``, size ``"0"`` deletes).
  "Trades channel" ``tradeId`` per instrument by its span + 1; ``ts`` (ms) of book updates,
  trades and tickers + ``S``. The trade the channel pushes on subscribe (older than the
  subscribe request: hours old on an illiquid option) is start-up, tile 0 only, as are the
  snapshots (two per book in the recording: it subscribed twice). ELON-USDT, which the bench
  does not subscribe to (its tick does not fit dm's 1e-9 prices), is tiled as recorded;
  ``served`` leaves it out of the counts.
* ``kraken`` (spot WebSocket API v1 "book" and "Book checksum": no sequence; every update's
  ``c`` is the CRC32 of the top 10 asks and bids as sent, and the venue keeps the subscribed
  ``depth`` of levels per side without deleting those that fall out): the recording is three
  connections (book, ticker, trade files), each file tiled on its own with one stride; the
  generator's book is truncated to the depth after each update as the venue's is (checked: it
  gives the recording's last ``c``). Repeated updates keep their ``c``; the reset update's
  ``c`` is the snapshot state's, computed here per "Book checksum". Level and trade times (the
  third string, seconds) + ``S``; the stride ignores republished levels (``"r"``: they keep
  their original time, years old for some). v1 tickers carry no time; heartbeats are repeated
  (the replay sends one connection's: ``served`` counts the book file's).

Files are written in the recording's own format (split session folder with the websocket file
tiled and the REST/reference files copied; or cryptofeed JSONL + zstd), so ``dm replay OUT``
serves them unchanged. The recordings were made with cryptofeed (Bryant Moscon,
http://www.bryantmoscon.com/).

    python bench/gen_sessions.py VENUE TILES OUT_DIR     # prints the folder and the frame counts
"""
from __future__ import annotations

import math
import re
import shutil
import sys
import uuid
import zlib
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path

import orjson

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from dm.recording import Event, expand_paths, is_jsonl, read_recording  # noqa: E402

SOURCES = {
    # the websocket file (REST depth snapshots inside), then the REST exchangeInfo file
    "binance": [ROOT / "data/binance/BINANCE-b38f7c.0", ROOT / "data/binance/2021-10-12/BINANCE.0"],
    "binance_futures": ROOT / "data/binance_futures/2021-07-22",
    "binance_delivery": ROOT / "data/binance_delivery/2021-07-22",
    "bybit": ROOT / "data/bybit/2026-08-09/BYBIT.jsonl.zst",
    "deribit": ROOT / "data/deribit/2021-07-22",
    "coinbase": ROOT / "data/coinbase/2026-08-09",
    "bitstamp": ROOT / "data/bitstamp/2022-01-05",
    "okx": ROOT / "data/okx/2022-02-27",
    # websocket files of the book, ticker and trade connections, then the REST AssetPairs file
    "kraken": [ROOT / "data/kraken/KRAKEN-c197c0.0", ROOT / "data/kraken/KRAKEN-4b7396.0",
               ROOT / "data/kraken/KRAKEN-82ac16.0", ROOT / "data/kraken/KRAKEN.0"],
}


@dataclass
class Tiling:
    """What :func:`generate` wrote. ``path``: the folder to replay; websocket frames: tile 0
    ``frames_first`` (the recording's), each later tile ``frames_per_tile`` (of which
    ``resets_per_tile`` generated book resets, sent before the tile's own frames)."""

    venue: str
    tiles: int
    path: Path
    stride_s: int
    frames_first: int
    frames_per_tile: int
    resets_per_tile: int
    #: per book key: (diffs of a later tile, the update-id shift per tile or 0)
    books: dict = field(default_factory=dict)
    #: of ``frames_per_tile``, those a client subscribed to ``served`` (default: everything)
    #: receives: the replay sends a connection the streams it subscribed to, and of Kraken's
    #: three connection recordings the heartbeats of one
    served_per_tile: int = 0

    @property
    def frames(self) -> int:
        return self.frames_first + (self.tiles - 1) * self.frames_per_tile


# ------------------------------------------------------------------------------- helpers


def _ts_add(ts_text: str, seconds: int, micros: int = 0) -> str:
    """A recorder TS text moved by whole seconds (+ micros), the fraction kept as written."""
    d = Decimal(ts_text) + seconds
    return str(d + Decimal(micros).scaleb(-6) if micros else d)


_ISO_HEAD = 19  # "YYYY-MM-DDTHH:MM:SS"


def _iso_add(s: str, seconds: int, _cache: dict = {}) -> str:
    """An ISO-8601 time (``T`` or space separated) moved by whole seconds, the fraction and
    suffix kept as written."""
    head = s[:_ISO_HEAD]
    key = (head, seconds)
    out = _cache.get(key)
    if out is None:
        sep = head[10]
        t = datetime.strptime(head, f"%Y-%m-%d{sep}%H:%M:%S") + timedelta(seconds=seconds)
        out = _cache[key] = t.strftime(f"%Y-%m-%d{sep}%H:%M:%S")
    return out + s[_ISO_HEAD:]


def _iso_seconds(s: str, _cache: dict = {}) -> float:
    head = s[:_ISO_HEAD]
    t = _cache.get(head)
    if t is None:
        t = _cache[head] = datetime.strptime(head, f"%Y-%m-%d{head[10]}%H:%M:%S").replace(tzinfo=timezone.utc).timestamp()
    frac = re.match(r"\.(\d+)", s[_ISO_HEAD:])
    return t + (int(frac.group(1)) / 10 ** len(frac.group(1)) if frac else 0.0)


def _zero_like(size: str) -> str:
    """A zero size in the form of ``size`` (same decimals): ``"0.00000"`` for ``"12.50000"``."""
    return "0." + "0" * len(size.split(".", 1)[1]) if "." in size else "0"


def _num(x: float) -> str:
    """A JSON number as a venue writes it: no exponent (``5e-05`` → ``0.00005``)."""
    r = repr(float(x))
    return format(Decimal(r), "f") if "e" in r or "E" in r else r


class _Book:
    """Levels per side: key (Decimal or float price) → (price as written, size as written)."""

    def __init__(self):
        self.sides: dict[str, dict] = {"b": {}, "a": {}}

    def set(self, side: str, key, price, size, zero: bool) -> None:
        if zero:
            self.sides[side].pop(key, None)
        else:
            self.sides[side][key] = (price, size)

    def copy(self) -> "_Book":
        b = _Book()
        b.sides = {s: dict(lv) for s, lv in self.sides.items()}
        return b

    @classmethod
    def start_end(cls, snapshot: dict, diffs) -> tuple["_Book", "_Book"]:
        """The book of a snapshot (``{"b": levels, "a": levels}``, ``[price, size]`` as written)
        and the same book after ``diffs`` (each ``{"b": levels, "a": levels}``; size 0 deletes)."""
        book = cls()
        for side in ("b", "a"):
            for p, q in snapshot[side]:
                book.set(side, Decimal(p), p, q, Decimal(q) == 0)
        start = book.copy()
        for d in diffs:
            for side in ("b", "a"):
                for p, q in d[side]:
                    book.set(side, Decimal(p), p, q, Decimal(q) == 0)
        return start, book

    def back_to(self, start: "_Book") -> dict[str, list[tuple]]:
        """Per side, sorted by price: ``(price, size or None = delete, present now)`` for every
        level that differs from ``start``: the levels a diff must set to get ``start`` back."""
        out = {}
        for s in ("b", "a"):
            now, then = self.sides[s], start.sides[s]
            lv = []
            for k in sorted(set(now) | set(then)):
                a, b = now.get(k), then.get(k)
                if a == b:
                    continue
                if b is None:
                    lv.append((a[0], None, a[1]))
                else:
                    lv.append((b[0], b[1], a[1] if a else None))
            out[s] = lv
        return out


# ------------------------------------------------------------------------------- generic


class _Tiler:
    """One venue: which frames of the recording repeat, how tile k changes them, the reset
    frames of a boundary. :meth:`analyse` fills ``steady`` (indexes into ``self.frames``),
    ``start`` / ``end`` (per book with diffs: the book its first repeated diff applies to, and
    the book after the last) and the venue's shifts."""

    venue = ""
    #: the recording is one websocket connection per file (Kraken v1: book, ticker, trade), each
    #: file tiled on its own with the same stride; else all frames must be in one file
    several_files = False

    def __init__(self, src, skew: int = 0, served=None):
        self.src = src
        self.skew = skew
        self.served = set(served) if served is not None else None
        self.files = expand_paths(self.src)
        self.events = read_recording(self.files)
        self.frames: list[Event] = [e for e in self.events if e.kind == "frame"]
        self.ws_files = list(dict.fromkeys(e.source for e in self.frames))
        self.ws_file = self.ws_files[0]         # the file of the book resets (see reset_file)
        if len(self.ws_files) > 1 and not self.several_files:
            raise ValueError(f"{self.src}: frames in several files; one websocket file is tiled")
        self.objs = [orjson.loads(e.text) for e in self.frames]
        self.steady: list[int] = []
        self.books: dict[str, tuple[int, int]] = {}
        self.start: dict[str, _Book] = {}
        self.end: dict[str, _Book] = {}
        self.analyse()
        self.stride = self._stride()

    # to be filled by a venue -----------------------------------------------------------
    def analyse(self) -> None:
        raise NotImplementedError

    def venue_seconds(self, i: int) -> list[float]:
        """The venue's own times in steady frame ``i`` (seconds), for the stride."""
        raise NotImplementedError

    def tile_text(self, i: int, k: int) -> str:
        """Steady frame ``i`` in tile ``k`` >= 1."""
        raise NotImplementedError

    def resets(self, k: int) -> list:
        """Frames between tile ``k`` and tile ``k + 1``: texts, sent on the connection of the
        reset file's first frame, or ``(conn, text)`` where one JSONL file holds several
        connections (Bybit: one per category)."""
        raise NotImplementedError

    def begin(self) -> None:
        """Before the tiles are written (state of a numbering)."""

    def symbol(self, i: int) -> str | None:
        """The venue symbol of frame ``i`` (``None``: not told apart; a venue whose recording
        holds symbols the bench does not subscribe to tells them apart)."""
        return None

    def _serves(self, i: int) -> bool:
        sym = self.symbol(i)
        return self.served is None or sym is None or sym in self.served

    def _served_per_tile(self) -> int:
        return sum(map(self._serves, self.steady)) + sum(self.served is None or b in self.served for b in self.end)

    # common ----------------------------------------------------------------------------
    def _stride(self) -> int:
        ts = [e.ts for e in self.events if e.ts is not None and e.source in self.ws_files]
        span = max(ts) - min(ts)
        vt = [t for i in self.steady for t in self.venue_seconds(i)]
        if vt:
            span = max(span, max(vt) - min(vt))
        return math.ceil(span) + 1

    def tiles_for(self, frames: int) -> int:
        """The tile count whose session is nearest to ``frames`` websocket frames."""
        per_tile = self._served_per_tile()              # one reset per book with diffs
        first = sum(map(self._serves, range(len(self.frames))))
        return max(1, 1 + round((frames - first) / per_tile)) if per_tile else 1

    def write(self, tiles: int, out_dir: Path) -> Tiling:
        if tiles < 1:
            raise ValueError("tiles must be >= 1")
        out = Path(out_dir) / self.venue
        if out.exists():
            shutil.rmtree(out)
        out.mkdir(parents=True)
        # the latest frame: a file holding several connections one after the other (Bybit's JSONL)
        # does not end with it
        last_ts = max(self.frames, key=lambda e: e.ts).ts_text
        # per websocket file: (ts text, frame text, connection) after the recording
        extra: dict[str, list[tuple[str, str, str]]] = {f: [] for f in self.ws_files}
        n_resets = 0
        self.begin()
        for k in range(1, tiles):
            rs = [r if isinstance(r, tuple) else (None, r) for r in self.resets(k - 1)]
            n_resets = len(rs)
            rts = _ts_add(last_ts, (k - 1) * self.stride, 1)
            extra[self.ws_file] += [(rts, r, c) for c, r in rs]
            S = k * self.stride
            for i in self.steady:
                e = self.frames[i]
                extra[e.source].append((_ts_add(e.ts_text, S), self.tile_text(i, k), e.conn))
        for f in self.files:
            dst = out / f.name
            if str(f) not in extra:
                shutil.copy2(f, dst)
            elif is_jsonl(f):
                self._write_jsonl(f, dst, extra[str(f)])
            else:
                text = f.read_text(encoding="utf-8").rstrip("\n") + "\n"   # a blank line may only end a file
                with open(dst, "w", encoding="utf-8", newline="\n") as fh:
                    fh.write(text)
                    fh.writelines(f"{ts}: {t}\n" for ts, t, _conn in extra[str(f)])
        per_tile = len(self.steady) + n_resets
        return Tiling(self.venue, tiles, out, self.stride, len(self.frames), per_tile if tiles > 1 else 0,
                      n_resets if tiles > 1 else 0, dict(self.books), self._served_per_tile() if tiles > 1 else 0)

    def _write_jsonl(self, src: Path, dst: Path, extra) -> None:
        import zstandard

        conn = next(e.conn for e in self.frames if e.source == str(src))
        raw = src.read_bytes()
        if src.name.endswith(".zst"):
            raw = zstandard.ZstdDecompressor().stream_reader(raw, read_across_frames=True).read()
        if raw and not raw.endswith(b"\n"):
            raw += b"\n"
        lines = [raw] + [orjson.dumps({"t": "recv", "conn": c or conn, "ts": float(ts), "data": t}) + b"\n"
                         for ts, t, c in extra]
        data = b"".join(lines)
        if dst.name.endswith(".zst"):
            data = zstandard.ZstdCompressor(level=3).compress(data)
        dst.write_bytes(data)


# ------------------------------------------------------------------------------- Binance futures

_BN_INT = re.compile(r'"(E|T|U|u|pu|a|f|l)":(-?\d+)')


class _BinanceFutures(_Tiler):
    venue = "binance_futures"

    # the venue's diff-depth rule (spot: _Binance) ------------------------------------------
    @staticmethod
    def _applies(d: dict, last_update_id: int) -> bool:
        """Whether the book applies diff ``d`` after its REST snapshot (futures: ``u >=
        lastUpdateId``)."""
        return d["u"] >= last_update_id

    @staticmethod
    def _prev_id(d: dict) -> int:
        """The update id diff ``d`` continues (futures: ``pu``, the previous diff's ``u``)."""
        return d["pu"]

    def _reset_ids(self, d: dict, prev: int, last: int) -> None:
        """Set reset diff ``d``'s ids: it continues ``prev`` and ends at ``last`` (the id the
        next tile's first diff continues); its times are set by the caller."""
        d.update({"U": prev + 1, "u": last + self.skew, "pu": prev})

    def analyse(self) -> None:
        snaps = {}
        for e in self.events:
            if e.kind == "rest" and "/depth?" in e.url:
                sym = e.url.split("symbol=", 1)[1].split("&", 1)[0].upper()
                if sym in snaps:
                    raise ValueError(f"{sym}: several REST snapshots; tiling assumes one")
                snaps[sym] = orjson.loads(e.text)
        self.kind: dict[int, tuple[str, str]] = {}
        diffs: dict[str, list[int]] = {}
        bts: dict[str, list[int]] = {}
        aggs: dict[str, list[int]] = {}
        for i, m in enumerate(self.objs):
            stream, d = m["stream"], m["data"]
            e = d.get("e") or ("bookTicker" if stream.endswith("@bookTicker") else "")
            s = d["s"]
            self.kind[i] = (e, s)
            if e == "depthUpdate":
                if s not in snaps:
                    raise ValueError(f"{s}: depth diffs but no REST snapshot")
                if self._applies(d, snaps[s]["lastUpdateId"]):
                    diffs.setdefault(s, []).append(i)
                    self.steady.append(i)
            elif e == "bookTicker":
                bts.setdefault(s, []).append(i)
                self.steady.append(i)
            elif e == "aggTrade":
                aggs.setdefault(s, []).append(i)
                self.steady.append(i)
            # kline: tile 0 only (minute windows)
        self.D: dict[str, int] = {}
        self.Da: dict[str, tuple[int, int]] = {}
        self.last_diff: dict[str, int] = {}
        self.first_pu: dict[str, int] = {}
        for s, idx in diffs.items():
            ds = [self.objs[i]["data"] for i in idx]
            for a, b in zip(ds, ds[1:]):
                if self._prev_id(b) != a["u"]:
                    raise ValueError(f"{s}: the recording itself breaks the update id chain at u={a['u']}")
            span = ds[-1]["u"] - self._prev_id(ds[0]) + 1
            bu = [self.objs[i]["data"]["u"] for i in bts.get(s, ())]
            if bu:
                span = max(span, max(bu) - min(bu) + 1)
            self.D[s] = span
            self.books[s] = (len(idx), span)
            self.start[s], self.end[s] = _Book.start_end({"b": snaps[s]["bids"], "a": snaps[s]["asks"]}, ds)
            self.last_diff[s] = idx[-1]
            self.first_pu[s] = self._prev_id(ds[0])
        for s, idx in bts.items():
            if s not in self.D:
                self.D[s] = max(self.objs[i]["data"]["u"] for i in idx) - min(self.objs[i]["data"]["u"] for i in idx) + 1
        for s, idx in aggs.items():
            ds = [self.objs[i]["data"] for i in idx]
            self.Da[s] = (max(d["a"] for d in ds) - min(d["a"] for d in ds) + 1,
                          max(d["l"] for d in ds) - min(d["f"] for d in ds) + 1)

    def venue_seconds(self, i: int) -> list[float]:
        d = self.objs[i]["data"]
        return [d[k] / 1000 for k in ("E", "T") if k in d]

    def tile_text(self, i: int, k: int) -> str:
        e, s = self.kind[i]
        ms = k * self.stride * 1000
        if e == "aggTrade":
            da, dt = self.Da[s]
            deltas = {"E": ms, "T": ms, "a": k * da, "f": k * dt, "l": k * dt}
        else:   # depthUpdate, bookTicker: update ids
            D = k * self.D[s]
            deltas = {"E": ms, "T": ms, "U": D, "u": D, "pu": D}
        return _BN_INT.sub(lambda m: f'"{m[1]}":{int(m[2]) + deltas.get(m[1], 0)}', self.frames[i].text)

    def resets(self, k: int) -> list[str]:
        out = []
        for s in self.end:
            last = self.objs[self.last_diff[s]]
            lv = self.end[s].back_to(self.start[s])
            d = dict(last["data"])
            ms = k * self.stride * 1000
            self._reset_ids(d, d["u"] + k * self.D[s], self.first_pu[s] + (k + 1) * self.D[s])
            d.update({k_: d[k_] + ms for k_ in ("E", "T") if k_ in d})
            d.update({"b": [[p, q if q is not None else _zero_like(now)] for p, q, now in lv["b"]],
                      "a": [[p, q if q is not None else _zero_like(now)] for p, q, now in lv["a"]]})
            out.append(orjson.dumps({"stream": last["stream"], "data": d}).decode())
        return out


class _BinanceDelivery(_BinanceFutures):
    venue = "binance_delivery"


class _Binance(_BinanceFutures):
    """Binance spot: the futures tiling with the spot diff-depth rule (``BinanceDepthSync``):
    the book applies the diffs with ``u > lastUpdateId``, and a diff continues the previous one
    by ``U == previous u + 1`` (no ``pu``). The id a diff continues is therefore ``U - 1``, so
    ``D`` = last ``u`` - first ``U`` + 2 and the reset diff is ``U == u`` = the tile's last
    ``u`` + 1 (more ids when the bookTicker span sets ``D``). Spot diffs carry ``E`` but no
    ``T``; bookTicker no time at all."""

    venue = "binance"

    @staticmethod
    def _applies(d: dict, last_update_id: int) -> bool:
        return d["u"] > last_update_id

    @staticmethod
    def _prev_id(d: dict) -> int:
        return d["U"] - 1

    def _reset_ids(self, d: dict, prev: int, last: int) -> None:
        # ``skew`` on both ids: the reset then skips ``skew`` ids after ``prev`` (a gap; spot
        # accepts a diff that overlaps the previous one, so a skewed ``u`` alone would pass)
        d.update({"U": prev + 1 + self.skew, "u": last + self.skew})


# ------------------------------------------------------------------------------- Deribit

_DR_INT = re.compile(r'"(timestamp|change_id|prev_change_id|trade_seq)":(-?\d+)')
_DR_TID = re.compile(r'"trade_id":"([^"]*?)(\d+)"')


class _Deribit(_Tiler):
    venue = "deribit"

    def analyse(self) -> None:
        self.inst: dict[int, tuple[str, str]] = {}
        changes: dict[str, list[int]] = {}
        snap: dict[str, dict] = {}
        seqs: dict[str, list[int]] = {}
        tids: list[int] = []
        for i, m in enumerate(self.objs):
            if m.get("method") != "subscription":
                continue                        # acks, heartbeats, test replies: start-up
            ch = m["params"]["channel"]
            kind, name = ch.split(".")[:2]
            data = m["params"]["data"]
            self.inst[i] = (kind, name)
            if kind == "book":
                if data.get("type") == "snapshot":
                    if name in snap:
                        raise ValueError(f"{name}: several book snapshots; tiling assumes one")
                    snap[name] = data
                    continue
                if name not in snap:
                    continue                    # dropped by the book before its snapshot
                changes.setdefault(name, []).append(i)
            elif kind == "trades":
                for t in data:
                    seqs.setdefault(name, []).append(t["trade_seq"])
                    tids.append(int(re.search(r"(\d+)$", t["trade_id"]).group(1)))
            self.steady.append(i)
        self.D: dict[str, int] = {}
        self.Dseq = {n: max(v) - min(v) + 1 for n, v in seqs.items()}
        self.Dtid = max(tids) - min(tids) + 1 if tids else 0
        self.last_change: dict[str, int] = {}
        for name, idx in changes.items():
            ds = [self.objs[i]["params"]["data"] for i in idx]
            prev = snap[name]["change_id"]
            for d in ds:
                if d["prev_change_id"] != prev:
                    raise ValueError(f"{name}: the recording itself breaks prev_change_id at {d['change_id']}")
                prev = d["change_id"]
            self.D[name] = ds[-1]["change_id"] - snap[name]["change_id"] + 1
            self.books[name] = (len(idx), self.D[name])
            book = _Book()
            for side, key in (("b", "bids"), ("a", "asks")):
                for _act, p, q in snap[name][key]:
                    book.set(side, float(p), p, q, False)
            self.start[name] = book.copy()
            for d in ds:
                for side, key in (("b", "bids"), ("a", "asks")):
                    for act, p, q in d[key]:
                        book.set(side, float(p), p, q, act == "delete")
            self.end[name] = book
            self.last_change[name] = idx[-1]

    def venue_seconds(self, i: int) -> list[float]:
        data = self.objs[i]["params"]["data"]
        if isinstance(data, list):
            return [t["timestamp"] / 1000 for t in data]
        return [data["timestamp"] / 1000]

    def tile_text(self, i: int, k: int) -> str:
        kind, name = self.inst[i]
        deltas = {"timestamp": k * self.stride * 1000}
        text = self.frames[i].text
        if kind == "book":
            deltas["change_id"] = deltas["prev_change_id"] = k * self.D[name]
        elif kind == "trades":
            deltas["trade_seq"] = k * self.Dseq[name]
            dt = k * self.Dtid
            text = _DR_TID.sub(lambda m: f'"trade_id":"{m[1]}{int(m[2]) + dt}"', text)
        return _DR_INT.sub(lambda m: f'"{m[1]}":{int(m[2]) + deltas.get(m[1], 0)}', text)

    def resets(self, k: int) -> list[str]:
        out = []
        for name in self.end:
            last = self.objs[self.last_change[name]]
            lv = self.end[name].back_to(self.start[name])
            d = dict(last["params"]["data"])
            cid = d["change_id"] + k * self.D[name]

            d.update({"timestamp": d["timestamp"] + k * self.stride * 1000, "prev_change_id": cid,
                      "change_id": cid + 1 + self.skew, "bids": _deribit_levels(lv["b"]),
                      "asks": _deribit_levels(lv["a"])})
            params = dict(last["params"], data=d)
            out.append(orjson.dumps(dict(last, params=params)).decode())
        return out


def _deribit_levels(levels) -> orjson.Fragment:
    """``[[action, price, amount], ...]`` of a change, numbers written as Deribit does."""
    def one(p, q, now) -> str:
        if q is None:
            return f'["delete",{_num(p)},0.0]'
        return f'["{"change" if now is not None else "new"}",{_num(p)},{_num(q)}]'
    return orjson.Fragment(("[" + ",".join(one(*lv) for lv in levels) + "]").encode())


# ------------------------------------------------------------------------------- Coinbase

_CB_ISO = re.compile(r'"(timestamp|time|event_time)":"([^"]+)"')
_CB_HB = re.compile(r'"current_time":"([^"]+)"')
_CB_HBM = re.compile(r"m=\+(\d+)")
_CB_TRADE = re.compile(r'"product_id":"([^"]+)","trade_id":"(\d+)"')
_CB_SEQ = re.compile(r'"sequence_num":(\d+)')
_CB_HBC = re.compile(r'"heartbeat_counter":(\d+)')


class _Coinbase(_Tiler):
    venue = "coinbase"

    def analyse(self) -> None:
        if not all(isinstance(m.get("sequence_num"), int) for m in self.objs):
            raise ValueError("an Advanced Trade recording is tiled (sequence_num on every message)")
        snap_levels: dict[str, list] = {}
        updates: dict[str, list[int]] = {}
        tids: dict[str, list[int]] = {}
        self.kind: dict[int, str] = {}
        for i, m in enumerate(self.objs):
            ch = m["channel"]
            evs = m.get("events") or []
            types = {e.get("type") for e in evs}
            if ch == "l2_data":
                if "snapshot" in types:
                    if len(evs) != 1:
                        raise ValueError("a level2 snapshot frame with other events")
                    snap_levels[evs[0]["product_id"]] = evs[0]["updates"]
                    continue
                pids = {e["product_id"] for e in evs}
                if not pids <= set(snap_levels):
                    continue                    # dropped by the book before its snapshot
                for p in pids:
                    updates.setdefault(p, []).append(i)
            elif ch == "market_trades" and types == {"update"}:
                n = 0
                for e in evs:
                    for t in e["trades"]:
                        tids.setdefault(t["product_id"], []).append(int(t["trade_id"]))
                        n += 1
                if len(_CB_TRADE.findall(self.frames[i].text)) != n:
                    raise ValueError("a trade whose product_id does not come right before its trade_id")
            elif ch == "ticker" and types == {"update"}:
                pass
            elif ch == "heartbeats":
                pass
            else:
                continue                        # subscriptions, snapshots, candles: tile 0 only
            self.kind[i] = ch
            self.steady.append(i)
        self.Dtid = {p: max(v) - min(v) + 1 for p, v in tids.items()}
        self.seq0 = self.objs[-1]["sequence_num"]   # tile 0's last
        self.last_update: dict[str, int] = {}
        for p, lv in snap_levels.items():
            if not updates.get(p):
                continue
            book = _Book()
            for u in lv:
                book.set("b" if u["side"] == "bid" else "a", Decimal(u["price_level"]), u["price_level"],
                         u["new_quantity"], Decimal(u["new_quantity"]) == 0)
            self.start[p] = book.copy()
            for i in updates.get(p, ()):
                for e in self.objs[i]["events"]:
                    if e["product_id"] != p:
                        continue
                    for u in e["updates"]:
                        book.set("b" if u["side"] == "bid" else "a", Decimal(u["price_level"]), u["price_level"],
                                 u["new_quantity"], Decimal(u["new_quantity"]) == 0)
            self.end[p] = book
            self.last_update[p] = updates[p][-1]
            self.books[p] = (len(updates[p]), 0)

    def venue_seconds(self, i: int) -> list[float]:
        return [_iso_seconds(m[2]) for m in _CB_ISO.finditer(self.frames[i].text)]

    def begin(self) -> None:
        self.next_seq = self.seq0 + 1

    def _seq(self) -> int:
        n = self.next_seq
        self.next_seq += 1
        return n

    def tile_text(self, i: int, k: int) -> str:
        S = k * self.stride
        text = _CB_SEQ.sub(lambda m: f'"sequence_num":{self._seq()}', self.frames[i].text, 1)
        text = _CB_ISO.sub(lambda m: f'"{m[1]}":"{_iso_add(m[2], S)}"', text)
        ch = self.kind[i]
        if ch == "market_trades":
            text = _CB_TRADE.sub(lambda m: f'"product_id":"{m[1]}","trade_id":"{int(m[2]) + k * self.Dtid[m[1]]}"', text)
        elif ch == "heartbeats":
            text = _CB_HB.sub(lambda m: '"current_time":"' + _CB_HBM.sub(
                lambda c: f"m=+{int(c[1]) + S}", _iso_add(m[1], S)) + '"', text)
            text = _CB_HBC.sub(lambda m: f'"heartbeat_counter":{int(m[1]) + S}', text)
        return text

    def resets(self, k: int) -> list[str]:
        out = []
        for p in self.end:
            last = self.objs[self.last_update[p]]
            lv = self.end[p].back_to(self.start[p])
            when = _iso_add(last["timestamp"], k * self.stride)
            ups = [{"side": "bid" if s == "b" else "offer", "event_time": when, "price_level": px,
                    "new_quantity": q if q is not None else _zero_like(now)} for s in ("b", "a") for px, q, now in lv[s]]
            self.next_seq += self.skew
            out.append(orjson.dumps({"channel": "l2_data", "timestamp": when,
                                     "sequence_num": self._seq(),
                                     "events": [{"type": "update", "product_id": p, "updates": ups}]}).decode())
        return out


# ------------------------------------------------------------------------------- Bitstamp

_BS_T = re.compile(r'"(timestamp|microtimestamp)":"(\d+)"')
_BS_ID = re.compile(r'"id":(\d+)')


class _Bitstamp(_Tiler):
    venue = "bitstamp"

    def analyse(self) -> None:
        snaps = {}
        for e in self.events:
            if e.kind == "rest" and "/order_book/" in e.url:
                pair = e.url.rstrip("/").rsplit("/", 1)[1]
                if pair in snaps:
                    raise ValueError(f"{pair}: several REST snapshots; tiling assumes one")
                snaps[pair] = orjson.loads(e.text)
        diffs: dict[str, list[int]] = {}
        ids: list[int] = []
        self.kind: dict[int, str] = {}
        for i, m in enumerate(self.objs):
            ev, ch = m.get("event"), m.get("channel", "")
            if ev == "data" and ch.startswith("diff_order_book_"):
                pair = ch[len("diff_order_book_"):]
                if pair not in snaps or int(m["data"]["microtimestamp"]) <= int(snaps[pair]["microtimestamp"]):
                    continue                    # dropped by the book against its snapshot
                diffs.setdefault(pair, []).append(i)
            elif ev == "trade":
                ids.append(m["data"]["id"])
            else:
                continue                        # bts:subscription_succeeded and other control: tile 0 only
            self.kind[i] = ev
            self.steady.append(i)
        self.Did = max(ids) - min(ids) + 1 if ids else 0
        self.last_diff: dict[str, int] = {}
        for pair, idx in diffs.items():
            book = _Book()
            for side, key in (("b", "bids"), ("a", "asks")):
                for lv in snaps[pair][key]:
                    book.set(side, Decimal(lv[0]), lv[0], lv[1], Decimal(lv[1]) == 0)
            self.start[pair] = book.copy()
            for i in idx:
                d = self.objs[i]["data"]
                for side, key in (("b", "bids"), ("a", "asks")):
                    for p, q in d[key]:
                        book.set(side, Decimal(p), p, q, Decimal(q) == 0)
            self.end[pair] = book
            self.last_diff[pair] = idx[-1]
            self.books[pair] = (len(idx), 0)

    def venue_seconds(self, i: int) -> list[float]:
        return [int(self.objs[i]["data"]["microtimestamp"]) / 1e6]

    def tile_text(self, i: int, k: int) -> str:
        S = k * self.stride
        deltas = {"timestamp": S, "microtimestamp": S * 1_000_000}
        text = _BS_T.sub(lambda m: f'"{m[1]}":"{int(m[2]) + deltas[m[1]]}"', self.frames[i].text)
        if self.kind[i] == "trade":
            text = _BS_ID.sub(lambda m: f'"id":{int(m[1]) + k * self.Did}', text, 1)
        return text

    def resets(self, k: int) -> list[str]:
        out = []
        for pair in self.end:
            last = self.objs[self.last_diff[pair]]
            lv = self.end[pair].back_to(self.start[pair])
            us = int(last["data"]["microtimestamp"]) + k * self.stride * 1_000_000 + 1 + self.skew
            d = {"timestamp": str(us // 1_000_000), "microtimestamp": str(us),
                 "bids": [[p, q if q is not None else _zero_like(now)] for p, q, now in lv["b"]],
                 "asks": [[p, q if q is not None else _zero_like(now)] for p, q, now in lv["a"]]}
            out.append(orjson.dumps({"data": d, "channel": last["channel"], "event": "data"}).decode())
        return out


# ------------------------------------------------------------------------------- OKX

_OK_TS = re.compile(r'"ts":"(\d+)"')
_OK_SEQ = re.compile(r'"(seqId|prevSeqId)":(-?\d+)')
_OK_TID = re.compile(r'"tradeId":"(\d+)"')
_OK_BOOKS = ("books", "books-l2-tbt", "books50-l2-tbt")


def _okx_signed(c: int) -> int:
    """A CRC32 as OKX writes it: a signed 32-bit integer."""
    c &= 0xFFFFFFFF
    return c - (1 << 32) if c >= 1 << 31 else c


class _Okx(_Tiler):
    venue = "okx"

    def analyse(self) -> None:
        self.inst: dict[int, tuple[str, str]] = {}      # frame -> (channel, instId), data frames only
        snap: dict[str, dict] = {}
        updates: dict[str, list[int]] = {}
        tids: dict[str, list[int]] = {}
        # a trade older than the first subscribe request is the channel's push of the last trade
        # on subscribe (hours old on an illiquid option): start-up, tile 0 only
        subscribed_ms = min(e.ts for e in self.events if e.kind == "sent") * 1000
        for i, m in enumerate(self.objs):
            arg = m.get("arg") or {}
            ch, inst = arg.get("channel"), arg.get("instId")
            if inst is None or "event" in m:
                continue                        # subscribe/unsubscribe/error events: start-up
            self.inst[i] = (ch, inst)
            if ch in _OK_BOOKS:
                if len(m["data"]) != 1:
                    raise ValueError(f"{inst}: a book frame with {len(m['data'])} data entries")
                if m.get("action") == "snapshot":
                    if updates.get(inst):
                        raise ValueError(f"{inst}: a snapshot after its updates; tiling assumes one sync")
                    snap[inst] = m["data"][0]   # the last one before the updates is the book they meet
                    continue
                if inst not in snap:
                    continue                    # dropped by the book before its snapshot
                updates.setdefault(inst, []).append(i)
            elif ch == "trades":
                if all(int(t["ts"]) < subscribed_ms for t in m["data"]):
                    continue
                for t in m["data"]:
                    if not t["tradeId"].isdigit():
                        raise ValueError(f"{inst}: tradeId {t['tradeId']!r} is not a decimal integer")
                    tids.setdefault(inst, []).append(int(t["tradeId"]))
            elif ch != "tickers":
                continue                        # mark-price, funding-rate, ...: tile 0 only
            self.steady.append(i)
        self.Dtid = {n: max(v) - min(v) + 1 for n, v in tids.items()}
        self.D: dict[str, int] = {}
        self.snap = snap
        self.last_update: dict[str, int] = {}
        for inst, idx in updates.items():
            ds = [self.objs[i]["data"][0] for i in idx]
            seqs = {"seqId" in d for d in (snap[inst], *ds)}
            if seqs == {True}:                  # "prevSeqId: sequence ID of the last sent message"
                prev = snap[inst]["seqId"]
                for d in ds:
                    if d["prevSeqId"] != prev:
                        raise ValueError(f"{inst}: the recording itself breaks prevSeqId at seqId {d['seqId']}")
                    prev = d["seqId"]
                self.D[inst] = ds[-1]["seqId"] - snap[inst]["seqId"] + 1
            elif seqs == {False}:
                self.D[inst] = 0                # OKX before 2022-11: no seqId, chained by the checksum
            else:
                raise ValueError(f"{inst}: seqId on some book frames only")
            self.books[inst] = (len(idx), self.D[inst])
            book = _Book()
            for side, key in (("b", "bids"), ("a", "asks")):
                for lv in snap[inst][key]:
                    book.set(side, Decimal(lv[0]), lv[0], tuple(lv[1:]), Decimal(lv[1]) == 0)
            self.start[inst] = book.copy()
            for d in ds:
                for side, key in (("b", "bids"), ("a", "asks")):
                    for lv in d[key]:
                        book.set(side, Decimal(lv[0]), lv[0], tuple(lv[1:]), Decimal(lv[1]) == 0)
            self.end[inst] = book
            self.last_update[inst] = idx[-1]

    def symbol(self, i: int) -> str | None:
        return self.inst[i][1] if i in self.inst else None

    def venue_seconds(self, i: int) -> list[float]:
        return [int(d["ts"]) / 1000 for d in self.objs[i]["data"]]

    def tile_text(self, i: int, k: int) -> str:
        ch, inst = self.inst[i]
        ms = k * self.stride * 1000
        text = _OK_TS.sub(lambda m: f'"ts":"{int(m[1]) + ms}"', self.frames[i].text)
        if ch == "trades":
            dt = k * self.Dtid[inst]
            text = _OK_TID.sub(lambda m: f'"tradeId":"{int(m[1]) + dt}"', text)
        elif ch in _OK_BOOKS and self.D[inst]:
            D = k * self.D[inst]
            text = _OK_SEQ.sub(lambda m: f'"{m[1]}":{int(m[2]) + D}', text)
        return text

    def resets(self, k: int) -> list[str]:
        out = []
        for inst in self.end:
            last = self.objs[self.last_update[inst]]
            lv = self.end[inst].back_to(self.start[inst])
            snap = self.snap[inst]

            def levels(side):
                rows = [[p, *(q if q is not None else ("0",) * len(now))] for p, q, now in lv[side]]
                return rows[::-1] if side == "b" else rows      # bids best (highest) first, as OKX
            d = dict(last["data"][0])
            d.update({"asks": levels("a"), "bids": levels("b"), "ts": str(int(d["ts"]) + k * self.stride * 1000),
                      "checksum": snap["checksum"]})   # the book is the snapshot's again: its checksum
            if self.D[inst]:
                prev = d["seqId"] + k * self.D[inst]
                d.update({"prevSeqId": prev, "seqId": prev + 1 + self.skew})
            elif self.skew:
                d["checksum"] = _okx_signed(d["checksum"] + self.skew)
            out.append(orjson.dumps({"arg": last["arg"], "action": "update", "data": [d]}).decode())
        return out


# ------------------------------------------------------------------------------- Kraken v1

_KR_TIME = re.compile(r'(\["[^"]*","[^"]*",")(\d+)(\.\d+")')   # a book level's / trade's time (3rd string)


def _kraken_checksum(book: _Book) -> int:
    """Kraken v1 "Book checksum": CRC32 of the top 10 asks (low to high) then the top 10 bids
    (high to low), each level its price then its volume as sent with the '.' and the leading
    zeros removed."""
    asks = sorted(book.sides["a"].items())[:10]
    bids = sorted(book.sides["b"].items(), reverse=True)[:10]
    text = "".join(p.replace(".", "").lstrip("0") + q.replace(".", "").lstrip("0") for _, (p, q) in asks + bids)
    return zlib.crc32(text.encode())


class _Kraken(_Tiler):
    venue = "kraken"
    several_files = True

    def analyse(self) -> None:
        self.kind: dict[int, str] = {}
        snap: dict[str, dict] = {}
        updates: dict[str, list[int]] = {}
        self.depth: dict[str, int] = {}
        for i, m in enumerate(self.objs):
            if isinstance(m, dict):
                if m.get("event") == "heartbeat":
                    self.kind[i] = "heartbeat"
                    self.steady.append(i)
                continue                        # systemStatus, subscriptionStatus: start-up
            name, pair = m[-2], m[-1]
            if name.startswith("book-"):
                if "as" in m[1] or "bs" in m[1]:
                    if updates.get(pair):
                        raise ValueError(f"{pair}: a snapshot after its updates; tiling assumes one sync")
                    snap[pair] = m[1]
                    self.depth[pair] = int(name.split("-", 1)[1])
                    continue
                if pair not in snap:
                    continue                    # dropped by the book before its snapshot
                updates.setdefault(pair, []).append(i)
                self.kind[i] = "book"
            elif name in ("trade", "ticker"):
                self.kind[i] = name
            else:
                continue                        # spread, ohlc: not in the bench's recording, tile 0 only
            self.steady.append(i)
        book_files = {self.frames[i].source for idx in updates.values() for i in idx}
        if len(book_files) > 1:
            raise ValueError("book updates in several files; the resets go to one")
        if book_files:
            self.ws_file = book_files.pop()
        self.last_update: dict[str, int] = {}
        for pair, idx in updates.items():
            book = _Book()
            for side, key in (("a", "as"), ("b", "bs")):
                for lv in snap[pair].get(key, ()):
                    book.set(side, Decimal(lv[0]), lv[0], lv[1], Decimal(lv[1]) == 0)
            self.start[pair] = book.copy()
            depth = self.depth[pair]
            for i in idx:
                for d in self.objs[i][1:-2]:
                    for side in ("a", "b"):
                        for lv in d.get(side, ()):
                            book.set(side, Decimal(lv[0]), lv[0], lv[1], Decimal(lv[1]) == 0)
                for side, worst in (("a", max), ("b", min)):   # "book": the venue keeps `depth` levels
                    lv = book.sides[side]
                    while len(lv) > depth:
                        del lv[worst(lv)]
            c = int(self.objs[idx[-1]][-3]["c"])
            if _kraken_checksum(book) != c:     # the generator's book is the venue's
                raise ValueError(f"{pair}: the book after the recording's updates does not give its last c")
            self.end[pair] = book
            self.last_update[pair] = idx[-1]
            self.books[pair] = (len(idx), 0)

    def _serves(self, i: int) -> bool:
        # the replay sends a connection the heartbeats of one recording (the first it draws
        # from: the worker subscribes the book first)
        return self.kind.get(i) != "heartbeat" or self.frames[i].source == self.ws_file

    def venue_seconds(self, i: int) -> list[float]:
        m = self.objs[i]
        if self.kind[i] == "trade":
            return [float(t[2]) for t in m[1]]
        if self.kind[i] == "book":      # a republished level ("r") keeps its time, maybe years old
            return [float(lv[2]) for d in m[1:-2] for side in ("a", "b") for lv in d.get(side, ()) if lv[3:] != ["r"]]
        return []

    def tile_text(self, i: int, k: int) -> str:
        text = self.frames[i].text
        if self.kind[i] not in ("book", "trade"):
            return text                         # ticker (no time in v1), heartbeat
        S = k * self.stride
        return _KR_TIME.sub(lambda m: f"{m[1]}{int(m[2]) + S}{m[3]}", text)

    def resets(self, k: int) -> list[str]:
        out = []
        for pair in self.end:
            last = self.objs[self.last_update[pair]]
            lv = self.end[pair].back_to(self.start[pair])
            t = max(Decimal(m[2] + m[3][:-1]) for m in _KR_TIME.finditer(self.frames[self.last_update[pair]].text))
            when = f"{t + k * self.stride:.6f}"
            parts = []
            for side in ("a", "b"):
                rows = [[p, q if q is not None else _zero_like(now), when] for p, q, now in lv[side]]
                if rows:
                    parts.append({side: rows[::-1] if side == "b" else rows})     # best first, as Kraken
            if not parts:                       # the book is its snapshot already: set its best ask as it is
                p, q = min(self.start[pair].sides["a"].items())[1]
                parts.append({"a": [[p, q, when]]})
            c = (_kraken_checksum(self.start[pair]) + self.skew) & 0xFFFFFFFF
            parts[-1]["c"] = str(c)             # the book is the snapshot's again: its checksum
            out.append(orjson.dumps([last[0], *parts, last[-2], pair]).decode())
        return out


# ------------------------------------------------------------------------------- Bybit v5

_BY_INT = re.compile(r'"(ts|cts|T|u|seq|cs)":(\d+)')
_BY_TID = re.compile(r'"i":"([^"]*)"')


class _Bybit(_Tiler):
    """Bybit v5 public streams, one connection per category in one JSONL file (the 2026
    recording: the linear connection's lines, then the spot one's). Books, trades and tickers
    are keyed ``<category>:<symbol>`` (dm's Bybit venue symbol): the same symbol on two
    categories is two books with their own ids."""

    venue = "bybit"

    def analyse(self) -> None:
        category = {e.conn: e.url.rstrip("/").rsplit("/", 1)[1] for e in self.events if e.kind == "connect"}
        self.key: dict[int, tuple[str, str]] = {}       # frame -> (topic kind, "<category>:<symbol>")
        snap: dict[str, dict] = {}
        deltas: dict[str, list[int]] = {}
        seqs: dict[str, list[int]] = {}
        tids: dict[str, list[str]] = {}
        for i, m in enumerate(self.objs):
            topic = m.get("topic")
            if not isinstance(topic, str):
                continue                        # subscribe acks, pongs: start-up
            kind, sym = topic.split(".", 1)[0], topic.rsplit(".", 1)[1]
            key = f"{category[self.frames[i].conn]}:{sym}"
            if kind == "orderbook":
                d = m["data"]
                if m["type"] == "snapshot" or d["u"] == 1:     # u == 1: a snapshot too (service restart)
                    if deltas.get(key):
                        raise ValueError(f"{key}: a snapshot after its deltas; tiling assumes one sync")
                    snap[key] = m
                    continue
                if key not in snap:
                    continue                    # dropped by the book before its snapshot
                deltas.setdefault(key, []).append(i)
                seqs.setdefault(key, []).append(d["seq"])
            elif kind == "publicTrade":
                for t in m["data"]:
                    tids.setdefault(key, []).append(t["i"])
                    if "seq" in t:
                        seqs.setdefault(key, []).append(t["seq"])
            elif kind == "tickers":
                if "cs" in m:
                    seqs.setdefault(key, []).append(m["cs"])
            else:
                continue                        # kline: tile 0 only (minute windows)
            self.key[i] = (kind, key)
            self.steady.append(i)
        # the cross sequence (book seq, trade seq, ticker cs share it per symbol and category):
        # its span + one value for the reset delta
        self.seq_max = {k: max(v) for k, v in seqs.items()}
        self.Dseq = {k: max(v) - min(v) + 2 for k, v in seqs.items()}
        self.Dtid: dict[str, int] = {}
        for key, ids in tids.items():
            if all(t.isdigit() for t in ids):   # spot: decimal ids, shifted by their span
                self.Dtid[key] = max(map(int, ids)) - min(map(int, ids)) + 1
            else:                               # linear: UUIDs (a new one per tile, see _tid)
                for t in ids:
                    uuid.UUID(t)                # raises on an id neither decimal nor a UUID
        self.D: dict[str, int] = {}
        self.last_delta: dict[str, int] = {}
        for key, idx in deltas.items():
            ds = [self.objs[i]["data"] for i in idx]
            prev = snap[key]["data"]["u"]
            for d in ds:
                if d["u"] != prev + 1:
                    raise ValueError(f"{key}: the recording itself breaks u at {d['u']} after {prev}")
                prev = d["u"]
            self.D[key] = ds[-1]["u"] - snap[key]["data"]["u"] + 1     # + one id for the reset delta
            self.books[key] = (len(idx), self.D[key])
            self.start[key], self.end[key] = _Book.start_end(snap[key]["data"], ds)
            self.last_delta[key] = idx[-1]

    def _serves(self, i: int) -> bool:
        # the replay answers subscribe requests itself (recorded acks are not sent); kline: the
        # bench does not subscribe to it
        t = self.objs[i].get("topic")
        return isinstance(t, str) and not t.startswith("kline.")

    def venue_seconds(self, i: int) -> list[float]:
        m = self.objs[i]
        out = [m[k] / 1000 for k in ("ts", "cts") if k in m]
        if self.key[i][0] == "publicTrade":
            out += [t["T"] / 1000 for t in m["data"]]
        return out

    def _tid(self, tid: str, key: str, k: int) -> str:
        if tid.isdigit():
            return str(int(tid) + k * self.Dtid[key])
        return str(uuid.uuid5(uuid.UUID(tid), str(k)))  # same form, a different id per tile

    def tile_text(self, i: int, k: int) -> str:
        kind, key = self.key[i]
        ms = k * self.stride * 1000
        dseq = k * self.Dseq.get(key, 0)
        deltas = {"ts": ms, "cts": ms, "T": ms, "seq": dseq, "cs": dseq}
        if kind == "orderbook":
            deltas["u"] = k * self.D[key]
        text = _BY_INT.sub(lambda m: f'"{m[1]}":{int(m[2]) + deltas[m[1]]}', self.frames[i].text)
        if kind == "publicTrade":
            text = _BY_TID.sub(lambda m: f'"i":"{self._tid(m[1], key, k)}"', text)
        return text

    def resets(self, k: int) -> list:
        out = []
        for key in self.end:
            j = self.last_delta[key]
            last = self.objs[j]
            lv = self.end[key].back_to(self.start[key])
            d = dict(last["data"])
            d.update({"b": [[p, q if q is not None else "0"] for p, q, _now in reversed(lv["b"])],   # best first
                      "a": [[p, q if q is not None else "0"] for p, q, _now in lv["a"]],
                      "u": d["u"] + k * self.D[key] + 1 + self.skew,
                      "seq": self.seq_max[key] + 1 + k * self.Dseq[key]})
            m = dict(last, data=d)
            ms = k * self.stride * 1000
            for t in ("ts", "cts"):
                if t in m:
                    m[t] += ms
            out.append((self.frames[j].conn, orjson.dumps(m).decode()))
        return out


TILERS = {t.venue: t for t in (_Binance, _BinanceFutures, _BinanceDelivery, _Bybit, _Deribit, _Coinbase, _Bitstamp,
                               _Okx, _Kraken)}


def generate(venue: str, tiles: int | None, out_dir: Path, src: Path | None = None, skew: int = 0,
             target_frames: int = 0, served=None) -> Tiling:
    """Write ``venue``'s recording (``src``, default :data:`SOURCES`) tiled ``tiles`` times into
    ``out_dir/<venue>/`` (replaced if present); ``tiles=None``: as many as bring the session
    nearest to ``target_frames`` websocket frames (at least 1) a client subscribed to the venue
    symbols ``served`` receives (default: all the recording's). ``skew`` (tests only) is added
    to each reset frame's continuity field (Binance futures ``u``, Binance spot ``U`` and ``u``,
    Bybit ``u``, Deribit ``change_id``, Coinbase ``sequence_num``, Bitstamp ``microtimestamp``,
    OKX ``seqId`` or, in a recording without it, ``checksum``, Kraken ``c``): a broken boundary
    the worker must see."""
    if venue not in TILERS:
        raise ValueError(f"no tiling for {venue!r} (have {', '.join(TILERS)})")
    tiler = TILERS[venue](src or SOURCES[venue], skew, served)
    if tiles is None:
        tiles = tiler.tiles_for(target_frames)
    return tiler.write(tiles, out_dir)


if __name__ == "__main__":
    t = generate(sys.argv[1], int(sys.argv[2]), Path(sys.argv[3]))
    print(t.path, f"tiles={t.tiles} stride_s={t.stride_s} frames={t.frames} (first {t.frames_first}, "
          f"then {t.frames_per_tile} per tile incl. {t.resets_per_tile} book resets)")
