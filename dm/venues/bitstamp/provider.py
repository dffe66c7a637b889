"""Bitstamp provider: websocket API v2 (live ``ws_url`` = ``wss://ws.bitstamp.net``, ``rest_url`` =
``https://www.bitstamp.net``).

Venue rules (Bitstamp WebSocket API v2 docs, https://www.bitstamp.net/websocket/v2/, and REST API
docs, https://www.bitstamp.net/api/, sections named in brackets):

* Reference data: REST ``GET /api/v2/trading-pairs-info/`` ("Trading pairs info"); venue symbols
  are ``url_symbol`` (``ethusd``; ``dm.venues.bitstamp.symbology.BitstampSymbology``). Quote
  aliases come from ``[providers.<name>] quote_aliases`` only (Bitstamp lists ``ethusd`` and
  ``ethusdt``).
* One websocket; after connecting, one ``{"event":"bts:subscribe","data":{"channel":C}}`` per
  channel ("Subscriptions"): ``diff_order_book_{pair}``, ``live_trades_{pair}`` (config
  ``channels``: ``diff_order_book``, ``live_trades``; default both). ``{"event":"bts:heartbeat"}``
  every ``ping_interval_s`` (default 10 s; answered with ``bts:heartbeat``); no frame for
  ``stale_after_s`` (default 30 s) → close and reconnect. ``bts:request_reconnect`` ("the
  client should reconnect within a few seconds", sent before maintenance) → the worker closes
  and reconnects at once (counted in ``reconnect_requests``). A reconnect is a gap: the window
  is ledgered (kind ``reconnect``) for every instrument and every book is rebuilt.
* Books ("diff_order_book"; REST "Order book"): Bitstamp's diffs carry no sequence number. After
  ``bts:subscription_succeeded`` of a pair's ``diff_order_book`` channel its diffs are buffered
  and the REST snapshot ``GET /api/v2/order_book/{pair}`` fetched; diffs with ``microtimestamp``
  <= the snapshot's are dropped, the later ones applied (``BitstampBookSync``). A diff lost
  inside a connection cannot be detected (the venue gives nothing to detect it with).

Runtime subscriptions (``dm.control``): ``bts:subscribe`` / ``bts:unsubscribe`` of the pair's
channels on the open socket; the book's ack fetches its REST snapshot as at start.

Output. ``live_trades`` → TRADE. The book publishes DEPTH and BBO (Bitstamp has no top-of-book
channel) with sequence = the diff's ``microtimestamp`` (µs); its BOOK_DELTA records go to the
persist queue. A value the codec rejects alone is dead-lettered with its text (``value_errors``).

Sizes: each pair's ``size_precision`` is ``base_decimals`` (``SymbolInfo.size_precision``, in the
stats file as ``size_precisions``); the codec is registered at :data:`CODEC_SIZE_PRECISION`
until the worker-side change makes books and channels per-instrument (``dm._book`` stamps 1e-9
on DEPTH/BBO today), as for Bybit.
"""
from __future__ import annotations

import asyncio

import aiohttp
import orjson

from dm import log as dmlog
from dm._codec import KINDS
from dm._feed import FAST_MONOTONIC
from dm._ring import now_ns
from dm.errors import CodecError, ConfigError
from dm.providers.base import Books, Provider, dead_letter_values
from dm.symbology import for_provider
from dm.venues.bitstamp._codec import BitstampCodec
from dm.venues.bitstamp.booksync import BitstampBookSync

log = dmlog.get("dm.worker.bitstamp")

K_BOOK = KINDS["book"]
K_SUBSCRIPTION = KINDS["subscription"]
K_STATUS = KINDS["status"]
K_ERROR = KINDS["error"]
K_PONG = KINDS["pong"]

DEFAULT_CHANNELS = ("diff_order_book", "live_trades")
CHANNELS = frozenset(DEFAULT_CHANNELS)
BOOK_PREFIX = "diff_order_book_"
ORDER_BOOK_PATH = "/api/v2/order_book/"
#: size scale the codec is given until books/channels are per-instrument (module docstring)
CODEC_SIZE_PRECISION = 9
EXTRA_KEYS = frozenset({"quote_aliases", "stale_after_s", "ping_interval_s"})


class BitstampProvider(Provider):
    """Bitstamp v2 worker (module docstring). Config (``[providers.<name>]``): ``ws_url``,
    ``rest_url``, ``symbols`` (canonical), ``channels`` (``diff_order_book``, ``live_trades``),
    extra keys ``quote_aliases``, ``stale_after_s``, ``ping_interval_s``."""

    stale_after_s = 30.0
    ping_interval_s = 10.0
    global_quote_aliases = False

    def __init__(self, cfg, pcfg):
        super().__init__(cfg, pcfg)
        unknown = set(pcfg.extra) - EXTRA_KEYS
        if unknown:
            raise ConfigError(f"providers.{pcfg.name}: unknown Bitstamp key(s) {sorted(unknown)}; known: {sorted(EXTRA_KEYS)}")
        self.channel_names = tuple(pcfg.channels) or DEFAULT_CHANNELS
        bad = set(self.channel_names) - CHANNELS
        if bad:
            raise ConfigError(f"providers.{pcfg.name}.channels: unknown Bitstamp channel(s) {sorted(bad)}; known: {sorted(CHANNELS)}")
        self.size_precisions: dict[str, int | None] = {}
        self.iid_of_pair: dict[str, int] = {}
        self.error_frames = 0
        self.subscription_acks = 0
        self.pongs = 0
        self.reconnect_requests = 0
        self.snapshots_fetched = 0
        self.value_errors = 0
        self._snapshot_tasks: dict[int, asyncio.Task] = {}
        self._tasks: set[asyncio.Task] = set()

    # -- set-up ---------------------------------------------------------------------------
    async def resolve_symbols(self) -> None:
        aliases = self.pcfg.extra.get("quote_aliases", {})
        sym = for_provider(self.pcfg.kind, await self.fetch_reference(), aliases, exchange=self.exchange)
        self.venue_symbols = self.select_symbols(sym)
        from dm.providers.base import resolve_instruments

        self.instrument_ids = await resolve_instruments(self.cfg, self.pcfg, self.venue_symbols)
        self.venue_of = {self.instrument_ids[c]: v for c, v in self.venue_symbols.items()}
        self.iid_of_pair = {v: iid for iid, v in self.venue_of.items()}
        self.symbology = sym  # symbols added at runtime (dm.control) are resolved with it
        for canonical, venue in self.venue_symbols.items():
            self.size_precisions[canonical] = sym.info(venue).size_precision

    def make_codec(self):
        codec = BitstampCodec(self.pcfg.publisher_id)
        for canonical, pair in self.venue_symbols.items():
            codec.add_symbol(pair, self.instrument_ids[canonical], CODEC_SIZE_PRECISION)
        self.books = Books(self, publish_bbo=True)   # also without a book: reconnect windows are ledgered
        kinds = {K_SUBSCRIPTION, K_STATUS, K_ERROR, K_PONG}
        if "diff_order_book" in self.channel_names:
            for iid in self.instrument_ids.values():
                self.books.syncs[iid] = BitstampBookSync(iid, self.pcfg.publisher_id)
            kinds.add(K_BOOK)
            self.fast_book = (K_BOOK, FAST_MONOTONIC, "last_us")    # steady-state diffs in C (dm._feed)
        self.book_kinds = frozenset(kinds)
        return codec

    # -- connection -----------------------------------------------------------------------
    async def on_connected(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        for sync in self.books.syncs.values():
            sync.reset()
        n = 0
        for pair in self.venue_symbols.values():
            for ch in self.channel_names:
                await ws.send_str(orjson.dumps({"event": "bts:subscribe", "data": {"channel": f"{ch}_{pair}"}}).decode())
                n += 1
        log.info("subscribed", provider=self.name, channels=n)

    def ping_message(self) -> str:
        return '{"event":"bts:heartbeat"}'

    def on_disconnected(self) -> None:
        """Books are stale until the next subscription's snapshot; pending snapshot fetches of
        the old connection are cancelled (their diffs are gone)."""
        for t in self._snapshot_tasks.values():
            t.cancel()
        self._snapshot_tasks.clear()
        for sync in self.books.syncs.values():
            sync.reset()

    # -- books (frames of book_kinds come here from the base frame path) ----------------------
    def on_book_frame(self, kind: int, ts_recv: int) -> None:
        c = self.codec
        if kind == K_BOOK:
            iid = c.instrument_id
            act = self.books.syncs[iid].on_diff(c.last_seq, c.output())
            self.books.handle(iid, act, c.last_seq, ts_recv)
        elif kind == K_SUBSCRIPTION:
            self.subscription_acks += 1
            msg = _json(self.last_frame)
            ch = msg.get("channel") if msg.get("event") == "bts:subscription_succeeded" else None
            if isinstance(ch, str) and ch.startswith(BOOK_PREFIX):
                iid = self.iid_of_pair.get(ch[len(BOOK_PREFIX):].lower())
                if iid is not None and iid in self.books.syncs:
                    # "diff_order_book": diffs flow from now on (buffered); fetch the snapshot
                    act = self.books.syncs[iid].request_snapshot()
                    self.books.handle(iid, act, 0, ts_recv)
        elif kind == K_PONG:
            self.pongs += 1
        elif kind == K_STATUS:
            self.reconnect_requests += 1
            log.warning("venue requested a reconnect", provider=self.name)
            ws = self.ws
            if ws is not None and not ws.closed:
                self._spawn(ws.close(code=aiohttp.WSCloseCode.GOING_AWAY, message=b"bts:request_reconnect"))
        elif kind == K_ERROR:
            self.error_frames += 1
            log.error("venue error event", provider=self.name, frame=_text(self.last_frame)[:300])

    def _spawn(self, coro) -> asyncio.Task:
        t = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(t)
        t.add_done_callback(self._tasks.discard)
        return t

    # -- REST snapshots -------------------------------------------------------------------
    def request_book(self, iid: int) -> None:
        t = self._snapshot_tasks.get(iid)
        if t is None or t.done():
            self._snapshot_tasks[iid] = asyncio.get_running_loop().create_task(self.fetch_snapshot(iid))

    async def fetch_snapshot(self, iid: int) -> None:
        """REST ``order_book/{pair}`` → BOOK_DELTA records → the sync (retries with backoff)."""
        pair = self.venue_of[iid]
        url = f"{self.pcfg.rest_url.rstrip('/')}{ORDER_BOOK_PATH}{pair}"
        delay = self.pcfg.reconnect_min_s
        while not self._stop.is_set():
            try:
                async with self.session.get(url) as resp:
                    body = await resp.read()
                    if resp.status != 200:
                        raise aiohttp.ClientResponseError(resp.request_info, (), status=resp.status,
                                                          message=body[:200].decode(errors="replace"))
                ts_recv = now_ns()
                c = self.codec
                c.decode_snapshot(body, pair, ts_recv)
                if c.value_error_count:   # e.g. an ask at 9999999999.00 (> i64 at 1e-9): that level alone
                    dead_letter_values(self, c, body, ts_recv)
                self.snapshots_fetched += 1
                sync = self.books.syncs[iid]
                act = sync.on_snapshot(c.last_seq, bytes(c.output()))
                self.books.handle(iid, act, sync.last_us, ts_recv)
                return
            except (aiohttp.ClientError, OSError, asyncio.TimeoutError, CodecError) as e:
                log.warning("order book snapshot failed", pair=pair, error=repr(e), retry_in_s=delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, self.pcfg.reconnect_max_s)

    # -- runtime subscriptions (dm.control): bts:subscribe / bts:unsubscribe -------------------
    def new_book_sync(self, iid: int):
        return BitstampBookSync(iid, self.pcfg.publisher_id) if "diff_order_book" in self.channel_names else None

    def register_codec_symbol(self, canonical: str, venue_symbol: str, iid: int) -> None:
        self.codec.add_symbol(venue_symbol, iid, CODEC_SIZE_PRECISION)   # as the configured ones
        self.iid_of_pair[venue_symbol] = iid
        self.size_precisions[canonical] = self.symbol_size_precision(canonical)

    async def _events(self, ws, event: str, pairs: list[str]) -> None:
        for pair in pairs:
            for ch in self.channel_names:
                await ws.send_str(orjson.dumps({"event": event, "data": {"channel": f"{ch}_{pair}"}}).decode())

    async def subscribe_live(self, ws, venue_symbols: list[str]) -> None:
        await self._events(ws, "bts:subscribe", venue_symbols)   # each book ack fetches its snapshot

    async def unsubscribe_live(self, ws, venue_symbols: list[str]) -> None:
        await self._events(ws, "bts:unsubscribe", venue_symbols)

    # -- stats ------------------------------------------------------------------------------
    def stats(self) -> dict:
        d = super().stats()
        syncs = self.books.syncs.values() if self.books is not None else ()
        d.update({
            "error_frames": self.error_frames,
            "subscription_acks": self.subscription_acks,
            "pongs": self.pongs,
            "reconnect_requests": self.reconnect_requests,
            "value_errors": self.value_errors,
            "book_snapshots": sum(s.stats.snapshots for s in syncs),
            "book_deltas_applied": sum(s.stats.applied for s in syncs),
            "book_deltas_dropped": sum(s.stats.dropped for s in syncs),
            "size_precisions": self.size_precisions,
        })
        return d


def _json(frame) -> dict:
    try:
        v = orjson.loads(frame)
    except orjson.JSONDecodeError:
        return {}
    return v if isinstance(v, dict) else {}


def _text(frame) -> str:
    return frame if isinstance(frame, str) else bytes(frame).decode("utf-8", "replace")
