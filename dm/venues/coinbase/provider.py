"""Coinbase provider: one websocket, either public feed (``[providers.X] feed``).

``feed = "advanced"`` (default) — Advanced Trade WebSocket (live ``ws_url`` =
``wss://advanced-trade-ws.coinbase.com``, ``rest_url`` = ``https://api.coinbase.com``):

* Reference data: REST ``GET /api/v3/brokerage/market/products`` (Advanced Trade REST, "List
  Public Products"); venue symbols are product ids (``BTC-USD`` → ``BTCUSD``,
  ``dm.venues.coinbase.symbology.CoinbaseSymbology``).
* After connecting, one ``{"type":"subscribe","product_ids":[..],"channel":C}`` per channel
  (Advanced Trade docs, "WebSocket Overview → Subscribe": one channel per message): ``level2``,
  ``market_trades``, ``ticker`` (``channels``; default all three) and ``heartbeats`` ("to keep
  all subscriptions open", "Heartbeats channel"; extra key ``heartbeats``, default true).
* ``sequence_num`` ("Sequence Numbers") numbers every message of the connection: one
  ``dm.venues.coinbase.booksync.SequenceTracker`` per connection checks it on every frame
  (heartbeats too), as the provider's ``message_seq`` (``dm._feed``, "Message sequence": the
  next number is taken in C, any other comes to ``on_message_seq``). A jump is a break: every
  book of the connection gets one gap (ledger kind ``coinbase.sequence_num``, first/last = the
  missing numbers) and its ``level2`` is resubscribed (``unsubscribe`` + ``subscribe``) for a
  fresh snapshot, asked again after ``resync_timeout_s`` (default 10 s) if none came.
* The C frame path (``dm._feed``) publishes ``market_trades`` and ``ticker`` frames and applies
  ``level2`` updates of a synced book (``FAST_ALWAYS``: a level2 book has no ids of its own,
  its continuity is the connection's ``sequence_num``, checked first); snapshots, updates of a
  book out of sync, and a message whose events name several products go to Python whole.

``feed = "exchange"`` — Exchange WebSocket feed (live ``ws_url`` =
``wss://ws-feed.exchange.coinbase.com``, ``rest_url`` = ``https://api.exchange.coinbase.com``):

* Reference data: REST ``GET /products`` ("Get all known trading pairs").
* After connecting, one ``{"type":"subscribe","product_ids":[..],"channels":[C]}`` per channel:
  ``level2`` (or ``level2_batch``, the unauthenticated batched variant: same messages),
  ``matches``, ``ticker`` (default ``level2_batch``, ``matches``, ``ticker``) and ``heartbeat``
  (extra key ``heartbeats``, default true).
* The Level2 channel has no sequence number ("Level2 channel"): a lost ``l2update`` is not
  detectable. The connection is the only detectable loss: a reconnect ledgers the window as a
  gap (``reconnect``, ns) for every instrument and the new subscription's ``snapshot`` rebuilds
  the books.

Both feeds: no frame for ``stale_after_s`` (default 30 s) → close and reconnect (the reconnect
window is a gap; books stale until the new snapshots). Output: trades → TRADE (snapshot /
``last_match`` trades flagged ``FLAG_SNAPSHOT``); ``ticker`` → BBO (with ``ticker`` subscribed the
channel's BBO source; the book publishes DEPTH only, else BBO too); books → DEPTH + BOOK_DELTA
to the persist queue. Values the codec rejects alone are dead-lettered with their text;
``error`` frames are logged and counted (``error_frames``).

Sizes: at each product's own precision, the decimals of ``base_increment`` (trades, BBO, book
deltas, and DEPTH/BBO from the book: ``dm.venues.coinbase.booksync.CoinbaseBookSync``); 1e-9 cannot
hold Coinbase's sizes (27,510,000,000 SKL at one level of the 2021 session). The precisions are
in the stats file as ``size_precisions``.
"""
from __future__ import annotations

import asyncio

import aiohttp
import orjson

from dm import log as dmlog
from dm._codec import KINDS
from dm._feed import FAST_ALWAYS
from dm.errors import ConfigError, SymbologyError
from dm.providers.base import Books, Provider, ResubscribingBooks, resolve_instruments
from dm.records import GapUnits
from dm.symbology import for_provider
from dm.venues.coinbase._codec import CoinbaseCodec
from dm.venues.coinbase.booksync import CoinbaseBookSync, SequenceTracker

log = dmlog.get("dm.worker.coinbase")

K_BOOK = KINDS["book"]
K_BOOKSNAPSHOT = KINDS["bookSnapshot"]
K_SUBSCRIPTION = KINDS["subscription"]
K_ERROR = KINDS["error"]

FEEDS = ("advanced", "exchange")
DEFAULT_CHANNELS = {"advanced": ("level2", "market_trades", "ticker"),
                    "exchange": ("level2_batch", "matches", "ticker")}
CHANNELS = {"advanced": frozenset({"level2", "market_trades", "ticker", "ticker_batch"}),
            "exchange": frozenset({"level2", "level2_batch", "matches", "ticker"})}
REFERENCE_PATHS = {"advanced": "/api/v3/brokerage/market/products", "exchange": "/products"}
EXTRA_KEYS = frozenset({"feed", "heartbeats", "quote_aliases", "stale_after_s", "ping_interval_s", "resync_timeout_s",
                        "transport"})  # transport: dm.providers.base.Provider
_ACTION_CLEAR = ord("R")


def feed_of(pcfg) -> str:
    feed = str(pcfg.extra.get("feed", "advanced")).lower()
    if feed not in FEEDS:
        raise ConfigError(f"providers.{pcfg.name}.feed must be one of {FEEDS}, got {feed!r}")
    return feed


class CoinbaseProvider(ResubscribingBooks, Provider):
    """Coinbase worker (module docstring). Config (``[providers.<name>]``): ``ws_url``,
    ``rest_url``, ``symbols`` (canonical), ``channels``; extra keys ``feed`` (``advanced`` |
    ``exchange``), ``heartbeats``, ``quote_aliases``, ``stale_after_s``, ``resync_timeout_s``."""

    stale_after_s = 30.0
    # Coinbase lists BTC-USD next to BTC-USDT and BTC-USDC: a global USDT -> USD alias would
    # merge them (both poisoned). Quote aliases come from [providers.<name>] quote_aliases only.
    global_quote_aliases = False

    def __init__(self, cfg, pcfg):
        super().__init__(cfg, pcfg)
        unknown = set(pcfg.extra) - EXTRA_KEYS
        if unknown:
            raise ConfigError(f"providers.{pcfg.name}: unknown Coinbase key(s) {sorted(unknown)}; known: {sorted(EXTRA_KEYS)}")
        self.feed = feed_of(pcfg)
        self.channel_names = tuple(pcfg.channels) or DEFAULT_CHANNELS[self.feed]
        bad = set(self.channel_names) - CHANNELS[self.feed]
        if bad:
            raise ConfigError(f"providers.{pcfg.name}.channels: unknown Coinbase {self.feed} channel(s) {sorted(bad)}; "
                              f"known: {sorted(CHANNELS[self.feed])}")
        self.book_channel = next((c for c in self.channel_names if c.startswith("level2")), None)
        self.heartbeats = bool(pcfg.extra.get("heartbeats", True))
        self.resync_timeout_s = float(pcfg.extra.get("resync_timeout_s", 10.0))
        self.seq = SequenceTracker()
        # Advanced Trade numbers every message of the connection; the Exchange feed does not
        self.message_seq = self.seq if self.feed == "advanced" else None
        self.size_precisions: dict[str, int | None] = {}
        self.error_frames = 0
        self.resubscribes = 0
        self.value_errors = 0
        self.sequence_breaks = 0
        self._product_of: dict[int, str] = {}
        self._tasks: set[asyncio.Task] = set()

    # -- set-up ---------------------------------------------------------------------------
    async def fetch_reference(self) -> bytes:
        """The products body of the configured feed, retried with backoff."""
        url = self.pcfg.rest_url.rstrip("/") + REFERENCE_PATHS[self.feed]
        delay = self.pcfg.reconnect_min_s
        while True:
            try:
                async with self.session.get(url) as resp:
                    body = await resp.read()
                    if resp.status != 200:
                        raise SymbologyError(f"GET {url}: HTTP {resp.status}: {body[:200]!r}")
                return body
            except (SymbologyError, aiohttp.ClientError, OSError, asyncio.TimeoutError) as e:
                log.warning("reference data fetch failed", provider=self.name, error=repr(e), retry_in_s=delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.pcfg.reconnect_max_s)

    async def resolve_symbols(self) -> None:
        aliases = self.pcfg.extra.get("quote_aliases", {})
        sym = for_provider(self.pcfg.kind, await self.fetch_reference(), aliases, exchange=self.exchange)
        self.venue_symbols = self.select_symbols(sym)
        self.instrument_ids = await resolve_instruments(self.cfg, self.pcfg, self.venue_symbols)
        self.venue_of = {self.instrument_ids[c]: v for c, v in self.venue_symbols.items()}
        self._product_of = dict(self.venue_of)
        for canonical, venue in self.venue_symbols.items():
            self.size_precisions[canonical] = sym.info(venue).size_precision

    def make_codec(self):
        codec = CoinbaseCodec(self.pcfg.publisher_id)
        self._sp_of: dict[int, int] = {}
        for canonical, venue in self.venue_symbols.items():
            iid = self.instrument_ids[canonical]
            sp = self.size_precisions.get(canonical)
            self._sp_of[iid] = 8 if sp is None else sp
            codec.add_symbol(venue, iid, self._sp_of[iid])
        kinds = {K_SUBSCRIPTION, K_ERROR}
        ticker = any(c.startswith("ticker") for c in self.channel_names)
        # also without a book: reconnect windows are ledgered through Books
        self.books = Books(self, publish_bbo=not ticker)
        if self.book_channel is not None:
            for iid in self.instrument_ids.values():
                self.books.syncs[iid] = CoinbaseBookSync(iid, self.pcfg.publisher_id, size_precision=self._sp_of[iid])
            kinds |= {K_BOOK, K_BOOKSNAPSHOT}
            # steady-state updates in C (dm._feed): a level2 book has no ids of its own (its
            # continuity is the connection's sequence_num, message_seq); the Exchange feed's
            # l2update has none at all ("Level2 channel")
            self.fast_book = (K_BOOK, FAST_ALWAYS)
        self.book_kinds = frozenset(kinds)
        return codec

    # -- subscriptions --------------------------------------------------------------------
    def _message(self, event: str, channel: str, products: list[str]) -> str:
        if self.feed == "advanced":
            return orjson.dumps({"type": event, "product_ids": products, "channel": channel}).decode()
        return orjson.dumps({"type": event, "product_ids": products, "channels": [channel]}).decode()

    async def on_connected(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.seq.reset()                   # sequence_num restarts on every connection
        products = list(self.venue_symbols.values())
        if self.books is not None:
            for sync in self.books.syncs.values():
                sync.awaiting_snapshot = True  # the level2 subscription brings the snapshot
        channels = list(self.channel_names)
        if self.heartbeats:
            channels.append("heartbeats" if self.feed == "advanced" else "heartbeat")
        for ch in channels:
            await ws.send_str(self._message("subscribe", ch, products))
        log.info("subscribed", provider=self.name, feed=self.feed, channels=channels, products=len(products))

    def book_symbol(self, iid: int) -> str:
        return self._product_of[iid]

    async def _resubscribe(self, ws, iid: int) -> None:
        # ResubscribingBooks sends channel "book"; Coinbase's is level2 (or level2_batch)
        symbol = self.book_symbol(iid)
        self.resubscribes += 1
        log.info("resubscribing book", provider=self.name, symbol=symbol, channel=self.book_channel)
        try:
            await ws.send_str(self._message("unsubscribe", self.book_channel, [symbol]))
            await ws.send_str(self._message("subscribe", self.book_channel, [symbol]))
        except (ConnectionError, aiohttp.ClientError) as e:
            log.warning("resubscribe failed", provider=self.name, symbol=symbol, error=repr(e))
            return
        await asyncio.sleep(self.resync_timeout_s)
        sync = self.books.syncs[iid]
        if not sync.synced and self.ws is ws and not ws.closed:
            log.warning("no snapshot after resubscribe, retrying", provider=self.name, symbol=symbol)
            act = sync.request_snapshot()
            if act.needs_snapshot:
                self.request_book(iid)

    # -- frames routed here (message_seq, book_kinds) -------------------------------------
    def on_message_seq(self, seq: int, ts_recv: int) -> None:
        """A ``sequence_num`` that is not the connection's next one (``message_seq``): the
        first, a duplicate (counted) or a break (every book gets its gap and a resync)."""
        r = self.seq.on_message(seq)
        if r is None or r == "duplicate":
            return
        first, last = r
        self.sequence_breaks += 1
        log.warning("sequence_num break", provider=self.name, first_missing=first, last_missing=last)
        books = self.books
        if not books.syncs:  # no book: the loss is still a gap for every instrument
            for iid in self.instrument_ids.values():
                self.record_gap(iid, "coinbase.sequence_num", first, last, GapUnits.SEQUENCE, "sequence_num break")
                books.gaps += 1
            return
        for iid, sync in books.syncs.items():
            books.handle(iid, sync.on_break(first, last), seq, ts_recv)

    def on_book_frame(self, kind: int, ts_recv: int) -> None:
        c = self.codec
        if kind == K_BOOK or kind == K_BOOKSNAPSHOT:
            seq = max(c.sequence_num, 0)
            if c.mixed:
                for iid, recs in _by_instrument(c.output()).items():
                    self._book(iid, recs, _has_clear(recs), seq, ts_recv)
            else:
                self._book(c.instrument_id, c.output(), kind == K_BOOKSNAPSHOT, seq, ts_recv)
        elif kind == K_ERROR:
            self.error_frames += 1
            log.error("venue error", provider=self.name, frame=_text(self.last_frame)[:300])

    def _book(self, iid: int, recs, snapshot: bool, seq: int, ts_recv: int) -> None:
        sync = self.books.syncs.get(iid)
        if sync is None:
            return
        act = sync.on_snapshot(recs) if snapshot else sync.on_update(recs)
        self.books.handle(iid, act, seq, ts_recv)

    # -- stats ------------------------------------------------------------------------------
    def stats(self) -> dict:
        d = super().stats()
        syncs = self.books.syncs.values() if self.books is not None else ()
        d.update({
            "feed": self.feed,
            "error_frames": self.error_frames,
            "value_errors": self.value_errors,
            "book_resubscribes": self.resubscribes,
            "book_snapshots": sum(s.stats.snapshots for s in syncs),
            "book_deltas_applied": sum(s.stats.applied for s in syncs),
            "sequence_breaks": self.sequence_breaks,
            "sequence_duplicates": self.seq.duplicates,
            "size_precisions": self.size_precisions,
        })
        return d


def _by_instrument(buf) -> dict[int, bytes]:
    """BOOK_DELTA records (56 B each) grouped by instrument id, order kept within each (a level2
    frame whose events name several products: ``CoinbaseCodec.mixed``)."""
    b = bytes(buf)
    out: dict[int, list[bytes]] = {}
    for i in range(0, len(b), 56):
        out.setdefault(int.from_bytes(b[i + 4:i + 8], "little"), []).append(b[i:i + 56])
    return {iid: b"".join(rs) for iid, rs in out.items()}


def _has_clear(recs: bytes) -> bool:
    """Whether the records hold a CLEAR (a snapshot event of that product)."""
    return any(recs[i + 49] == _ACTION_CLEAR for i in range(0, len(recs), 56))


def _text(frame) -> str:
    return frame if isinstance(frame, str) else bytes(frame).decode("utf-8", "replace")
