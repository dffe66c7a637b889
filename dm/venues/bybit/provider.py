"""Bybit provider: websocket API v5 public streams, one connection per category
(``<ws_url>/spot``, ``/linear``, ``/inverse``; live ``ws_url`` = ``wss://stream.bybit.com/v5/public``).

Venue rules (Bybit API v5 docs, sections named in brackets):

* Reference data: REST ``GET /v5/market/instruments-info?category=<c>&limit=1000`` ("Market →
  Get Instruments Info"), every page (``cursor`` = the previous ``nextPageCursor``) of every
  category the configured symbols need; venue symbols are ``<category>:<SYMBOL>``
  (``dm.venues.bybit.symbology.BybitSymbology``: spot ``BTCUSDT``, linear ``BTCUSDT-USDT-PERP``,
  inverse ``BTCUSD-BTC-PERP``, dated futures with their expiry). Quote aliases come from
  ``[providers.<name>] quote_aliases`` only (``{ USDT = "USD" }`` gives ``BTCUSD-USD-PERP``),
  never from the global table: Bybit spot lists ``BTCUSD`` next to ``BTCUSDT``. The category of
  a configured symbol follows from its canonical form (spot; settled in the quote: linear; in
  the base: inverse), or from ``categories`` in the config.
* One websocket per category ("Connect"); after connecting, ``{"op":"subscribe","req_id":..,
  "args":[topics]}`` with at most 10 topics per request (the spot limit) for
  ``orderbook.{depth}.{symbol}`` (config ``depth``: 1, 50, 200, 500, 1000; default 200),
  ``publicTrade.{symbol}``, ``tickers.{symbol}`` (config ``channels``: ``orderbook``,
  ``publicTrade``, ``tickers``; default all three). Each ack ``{"success":..,"op":"subscribe"}``
  is checked: a failure is logged (with the request's topics) and counted
  (``subscription_errors``). ``{"op":"ping"}`` every ``ping_interval_s`` (default 20 s: "we
  recommend sending the ping heartbeat packet every 20 seconds"); no frame for
  ``stale_after_s`` (default 30 s) → close and reconnect that category; every topic is
  subscribed again and its books rebuilt from the new snapshots; the reconnect window is a
  gap (``reconnect``) for that category's instruments.
* Books ("Orderbook", "Process snapshot/delta"): one
  ``dm.venues.bybit.booksync.BybitBookSync`` per instrument; a snapshot replaces the book, each
  delta must carry ``u == previous + 1``. A jump is ONE gap (ledger kind ``bybit.update_id``,
  first/last = the missing update ids) and the topic is resubscribed (``unsubscribe`` +
  ``subscribe``) for a fresh snapshot, repeated after ``resync_timeout_s`` (default 10 s) if
  none came.

Output. ``publicTrade`` → TRADE. ``tickers`` → BBO (linear/inverse: the venue's top-of-book
stream, so with it subscribed the channel's BBO source — the book publishes DEPTH only; spot
tickers carry no bid1/ask1, so spot books publish BBO too) and STATISTICS (mark/index price,
funding rate, open interest, predicted delivery price). The book publishes DEPTH (sequence =
``u``) and its BOOK_DELTA records go to the persist queue. A value the codec rejects alone is
dead-lettered with its text (``value_errors``).

Sizes: each instrument's ``size_precision`` comes from ``basePrecision``/``qtyStep``
(``SymbolInfo.size_precision``, in the stats file as ``size_precisions``): the codec, the book
(DEPTH/BBO) and the channel header use it (:data:`CODEC_SIZE_PRECISION` only when the venue
states none).
"""
from __future__ import annotations

import asyncio
import functools
import random
import time

import aiohttp
import orjson

from dm import log as dmlog
from dm._codec import KINDS
from dm._feed import FAST_SEQ_NEXT
from dm._ring import now_ns
from dm.errors import CodecError, ConfigError, SymbologyError
from dm.providers.base import Books, Provider, _picows_connection, dead_letter_values, resolve_instruments
from dm.symbology import for_provider, parse_canonical
from dm.records import GapUnits
from dm.venues.bybit._codec import BybitCodec
from dm.venues.bybit.booksync import BybitBookSync
from dm.venues.bybit.symbology import CATEGORIES, split_venue_symbol
from dm._book import BookError

log = dmlog.get("dm.worker.bybit")

K_BOOK = KINDS["book"]
K_BOOKSNAPSHOT = KINDS["bookSnapshot"]
K_SUBSCRIPTION = KINDS["subscription"]
K_ERROR = KINDS["error"]

DEFAULT_CHANNELS = ("orderbook", "publicTrade", "tickers")
CHANNELS = frozenset(DEFAULT_CHANNELS)
DEPTHS = (1, 50, 200, 500, 1000)
MAX_ARGS = 10  # "For spot, you can input up to 10 args for each subscription request"
INSTRUMENTS_PATH = "/v5/market/instruments-info"
#: size scale of an instrument whose reference data states none (module docstring)
CODEC_SIZE_PRECISION = 9
EXTRA_KEYS = frozenset({"depth", "categories", "quote_aliases", "stale_after_s", "ping_interval_s",
                        "resync_timeout_s", "transport"})


def category_of(canonical: str) -> str:
    """The Bybit category of a canonical symbol: ``spot`` for a spot pair, ``linear`` for a
    contract settled in its quote asset, ``inverse`` for one settled in its base asset. Raises
    ``ConfigError`` for a form Bybit has no category for."""
    try:
        parts = parse_canonical(canonical.strip().upper())
    except SymbologyError as e:
        raise ConfigError(f"bybit: {e}") from None
    if parts.klass == "spot":
        return "spot"
    if parts.klass in ("perpetual", "future"):
        if parts.pair.endswith(parts.settle):
            return "linear"
        if parts.pair.startswith(parts.settle):
            return "inverse"
    raise ConfigError(f"bybit: no Bybit category for {canonical!r} (spot, linear or inverse contracts only)")


def categories(pcfg) -> list[str]:
    """The categories a provider config connects to: ``categories`` when given (it must hold
    every configured symbol's), else those of its symbols (:func:`category_of`), in
    ``CATEGORIES`` order. Raises ``ConfigError``."""
    derived = {category_of(s) for s in pcfg.symbols}
    cats = pcfg.extra.get("categories")
    if cats is None:
        return [c for c in CATEGORIES if c in derived]
    if not isinstance(cats, list) or not set(cats) <= set(CATEGORIES) or not derived <= set(cats):
        raise ConfigError(f"providers.{pcfg.name}.categories must list categories of {CATEGORIES} "
                          f"holding every configured symbol (they need {sorted(derived)}), got {cats!r}")
    return [c for c in CATEGORIES if c in cats]


class _Books(Books):
    """Books whose BBO publishing is per instrument: the instruments in ``bbo_iids`` publish a
    BBO from the book (no venue top-of-book stream for them), the others DEPTH only."""

    def __init__(self, provider, bbo_iids: set[int]):
        super().__init__(provider, publish_bbo=False)
        self.bbo_iids = bbo_iids

    def handle(self, iid: int, act, sequence: int, ts_recv: int) -> None:
        self.publish_bbo = iid in self.bbo_iids
        super().handle(iid, act, sequence, ts_recv)


class _Category:
    """One category's websocket: its codec (the symbol table of its own symbols), instruments,
    connection state and counters."""

    def __init__(self, name: str):
        self.name = name
        self.symbols: dict[str, int] = {}   # bare venue symbol -> instrument id
        self.codec: BybitCodec | None = None
        self.ws: aiohttp.ClientWebSocketResponse | None = None
        self.frames = 0
        self.connects = 0
        self.disconnected_ns = 0
        self.stale_disconnects = 0
        self.feed = None            # picows: this connection's dm._feed.FeedListener (Provider.fold_feed)
        self.feed_seen = (0, 0, 0, 0, 0)


class BybitProvider(Provider):
    """Bybit v5 worker (module docstring). Config (``[providers.<name>]``): ``ws_url`` (the
    public base, the category is appended), ``rest_url``, ``symbols`` (canonical),
    ``channels`` (``orderbook``, ``publicTrade``, ``tickers``), extra keys ``depth``,
    ``categories``, ``quote_aliases``, ``stale_after_s``, ``ping_interval_s``,
    ``resync_timeout_s``."""

    stale_after_s = 30.0
    ping_interval_s = 20.0
    # Bybit spot lists USD pairs next to USDT pairs (BTCUSD and BTCUSDT, ETHUSD and ETHUSDT,
    # USDTUSD in the recorded instruments): the global USDT -> USD alias would merge them (both
    # poisoned). Quote aliases come from [providers.<name>] quote_aliases only.
    global_quote_aliases = False

    def __init__(self, cfg, pcfg):
        super().__init__(cfg, pcfg)
        ex = pcfg.extra
        unknown = set(ex) - EXTRA_KEYS
        if unknown:
            raise ConfigError(f"providers.{pcfg.name}: unknown Bybit key(s) {sorted(unknown)}; known: {sorted(EXTRA_KEYS)}")
        self.channel_names = tuple(pcfg.channels) or DEFAULT_CHANNELS
        bad = set(self.channel_names) - CHANNELS
        if bad:
            raise ConfigError(f"providers.{pcfg.name}.channels: unknown Bybit v5 topic(s) {sorted(bad)}; known: {sorted(CHANNELS)}")
        self.depth = int(ex.get("depth", 200))
        if self.depth not in DEPTHS:
            raise ConfigError(f"providers.{pcfg.name}.depth must be one of {DEPTHS}, got {self.depth}")
        self.resync_timeout_s = float(ex.get("resync_timeout_s", 10.0))
        self.cats: dict[str, _Category] = {c: _Category(c) for c in categories(pcfg)}
        self.cat_of: dict[int, _Category] = {}          # instrument id -> its category
        self.bare_of: dict[int, str] = {}               # instrument id -> bare venue symbol
        self.size_precisions: dict[str, int | None] = {}
        self.error_frames = 0
        self.subscription_errors = 0
        self.acks = 0
        self.resubscribes = 0
        self.value_errors = 0
        self._req = 0
        self._req_args: dict[str, list[str]] = {}
        self._tasks: set[asyncio.Task] = set()

    @classmethod
    def websocket_connections(cls, pcfg) -> int:
        """One websocket per category."""
        try:
            return max(1, len(categories(pcfg)))
        except ConfigError:
            return 1

    # -- set-up ---------------------------------------------------------------------------
    async def fetch_reference(self) -> bytes:
        """Every page of ``/v5/market/instruments-info`` of every category in use, as one JSON
        array of the bodies (``BybitSymbology.from_reference``), retried with backoff."""
        delay = self.pcfg.reconnect_min_s
        while True:
            try:
                bodies = []
                for cat in self.cats:
                    cursor = ""
                    for _page in range(100):
                        url = f"{self.pcfg.rest_url.rstrip('/')}{INSTRUMENTS_PATH}?category={cat}&limit=1000"
                        if cursor:
                            url += f"&cursor={cursor}"
                        async with self.session.get(url) as resp:
                            body = await resp.read()
                            if resp.status != 200:
                                raise SymbologyError(f"GET {url}: HTTP {resp.status}: {body[:200]!r}")
                        doc = orjson.loads(body)
                        if not isinstance(doc, dict) or doc.get("retCode") != 0:
                            raise SymbologyError(f"GET {url}: {str(doc)[:200]}")
                        bodies.append(body)
                        cursor = (doc.get("result") or {}).get("nextPageCursor") or ""
                        if not cursor:
                            break
                return b"[" + b",".join(bodies) + b"]"
            except (SymbologyError, aiohttp.ClientError, OSError, asyncio.TimeoutError, orjson.JSONDecodeError) as e:
                log.warning("reference data fetch failed", provider=self.name, error=repr(e), retry_in_s=delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.pcfg.reconnect_max_s)

    async def resolve_symbols(self) -> None:
        default = self.cfg.quote_aliases if self.global_quote_aliases else {}
        aliases = self.pcfg.extra.get("quote_aliases", default)
        sym = for_provider(self.pcfg.kind, await self.fetch_reference(), aliases, exchange=self.exchange)
        self.venue_symbols = self.select_symbols(sym)
        self.instrument_ids = await resolve_instruments(self.cfg, self.pcfg, self.venue_symbols)
        self.venue_of = {self.instrument_ids[c]: v for c, v in self.venue_symbols.items()}
        for canonical, venue in self.venue_symbols.items():
            cat, bare = split_venue_symbol(venue)
            iid = self.instrument_ids[canonical]
            self.cats[cat].symbols[bare] = iid
            self.cat_of[iid] = self.cats[cat]
            self.bare_of[iid] = bare
            self.size_precisions[canonical] = sym.info(venue).size_precision
            self.size_precision_of[iid] = sym.info(venue).resolved_size_precision()

    def make_codec(self):
        book = "orderbook" in self.channel_names
        ticker_bbo = "tickers" in self.channel_names
        bbo_iids = {iid for iid, c in self.cat_of.items() if c.name == "spot" or not ticker_bbo}
        self.books = _Books(self, bbo_iids)   # also when no book: reconnect windows are ledgered
        for c in self.cats.values():
            c.codec = BybitCodec(self.pcfg.publisher_id)
            for bare, iid in c.symbols.items():
                c.codec.add_symbol(bare, iid, self.size_precision_of.get(iid, CODEC_SIZE_PRECISION))
        kinds = {K_SUBSCRIPTION, K_ERROR}
        if book:
            for iid in self.instrument_ids.values():
                sync = self.books.syncs[iid] = BybitBookSync(iid, self.pcfg.publisher_id)
                sync.book.size_precision = self.size_precision_of.get(iid, CODEC_SIZE_PRECISION)
            kinds |= {K_BOOK, K_BOOKSNAPSHOT}
            self.fast_book = (K_BOOK, FAST_SEQ_NEXT, "u")   # steady-state deltas in C (dm._feed)
        self.book_kinds = frozenset(kinds)
        return next(iter(self.cats.values())).codec

    # -- subscriptions --------------------------------------------------------------------
    def topics(self, bare: str) -> list[str]:
        """The v5 topics of one symbol (Orderbook, Trade, Ticker)."""
        out = []
        for ch in self.channel_names:
            out.append(f"orderbook.{self.depth}.{bare}" if ch == "orderbook" else f"{ch}.{bare}")
        return out

    def _message(self, op: str, args: list[str]) -> str:
        self._req += 1
        rid = f"{self._req}"
        self._req_args[rid] = args          # to name the topics of a failed ack
        if len(self._req_args) > 4096:      # resubscriptions and reconnects add requests: keep the last
            self._req_args.pop(next(iter(self._req_args)))
        return orjson.dumps({"op": op, "req_id": rid, "args": args}).decode()

    async def _subscribe(self, c: _Category, ws) -> None:
        topics = [t for bare in c.symbols for t in self.topics(bare)]
        for i in range(0, len(topics), MAX_ARGS):
            await ws.send_str(self._message("subscribe", topics[i:i + MAX_ARGS]))
        log.info("subscribed", provider=self.name, category=c.name, topics=len(topics), depth=self.depth)

    def ping_message(self) -> str:
        self._req += 1
        return orjson.dumps({"op": "ping", "req_id": f"{self._req}"}).decode()

    # -- connections: one per category ----------------------------------------------------
    async def connection_loop(self) -> None:
        await asyncio.gather(*(self._category_loop(c) for c in self.cats.values()))

    async def _category_loop(self, c: _Category) -> None:
        """Reconnect one category forever with exponential backoff and full jitter."""
        delay = self.pcfg.reconnect_min_s
        while not self._stop.is_set():
            started = time.monotonic()
            try:
                await self._run_category(c)
            except (aiohttp.ClientError, OSError, asyncio.TimeoutError) as e:
                log.warning("connection failed", provider=self.name, category=c.name, error=repr(e))
            if self._stop.is_set():
                break
            if time.monotonic() - started > 10 * self.pcfg.reconnect_min_s:
                delay = self.pcfg.reconnect_min_s
            sleep = random.uniform(0, delay)
            log.info("reconnecting", provider=self.name, category=c.name, in_s=round(sleep, 3))
            try:
                await asyncio.wait_for(self._stop.wait(), sleep)
            except asyncio.TimeoutError:
                pass
            delay = min(delay * 2, self.pcfg.reconnect_max_s)

    def fold_feed(self) -> None:
        for c in self.cats.values():
            self._fold(c)

    def _fold(self, c: _Category) -> None:
        """Add what category ``c``'s C frame path counted since the last fold to the provider's
        and the category's counters."""
        if c.feed is not None:
            seen = c.feed_seen
            c.feed_seen = self.fold_counters(c.feed, seen)
            c.frames += c.feed_seen[0] - seen[0]

    async def _run_category(self, c: _Category) -> None:
        if self.transport == "picows":
            return await self._run_category_picows(c)
        url = f"{self.pcfg.ws_url.rstrip('/')}/{c.name}"
        async with self.session.ws_connect(url, heartbeat=30.0, max_msg_size=0, autoping=True,
                                           timeout=aiohttp.ClientWSTimeout(ws_close=1.0)) as ws:
            c.connects += 1
            self.connects += 1
            log.info("connected", provider=self.name, category=c.name, url=url)
            if c.disconnected_ns:
                t = now_ns()
                for iid in c.symbols.values():  # the reconnect window is a gap (ns)
                    self.record_gap(iid, "reconnect", c.disconnected_ns, t, GapUnits.NS, "websocket reconnect")
                    self.books.gaps += 1
            c.ws = ws
            watchdog = None
            try:
                for iid in c.symbols.values():
                    sync = self.books.syncs.get(iid)
                    if sync is not None:
                        sync.awaiting_snapshot = True   # the subscription brings the snapshot
                await self._subscribe(c, ws)
                if self.stale_after_s or self.ping_interval_s:
                    watchdog = asyncio.get_running_loop().create_task(self._watchdog(c, ws))
                on_frame = self._on_frame
                async for msg in ws:
                    if msg.type == aiohttp.WSMsgType.TEXT or msg.type == aiohttp.WSMsgType.BINARY:
                        on_frame(c, msg.data, now_ns())
                    elif msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.ERROR):
                        break
                    if self._stop.is_set():
                        break
            finally:
                c.ws = None
                if watchdog is not None:
                    watchdog.cancel()
                c.disconnected_ns = now_ns()
                for iid in c.symbols.values():   # stale until the next subscription's snapshot
                    sync = self.books.syncs.get(iid)
                    if sync is not None:
                        sync.synced = False
                        sync.awaiting_snapshot = True
            log.info("disconnected", provider=self.name, category=c.name, code=ws.close_code)

    async def _run_category_picows(self, c: _Category) -> None:
        """One category's connection over picows, frames decoded and published in C
        (``dm._feed.FeedListener`` with the category's codec); the rest as ``_run_category``."""
        import picows

        url = f"{self.pcfg.ws_url.rstrip('/')}/{c.name}"
        cls = _picows_connection(True)
        on_decoded = functools.partial(self._on_decoded, c)
        on_frame = functools.partial(self._on_frame, c)
        try:
            transport, conn = await picows.ws_connect(
                lambda: cls(self, url, codec=c.codec, on_decoded=on_decoded, on_frame=on_frame), url,
                websocket_handshake_timeout=10, max_frame_size=1 << 30)
        except picows.WSError as e:
            raise aiohttp.ClientError(f"picows: {e}") from e
        c.feed, c.feed_seen = conn, (0, 0, 0, 0, 0)   # frames may have come with the upgrade answer
        try:
            if transport.is_disconnected:
                raise ConnectionError("picows: peer closed the connection during the websocket upgrade")
            c.connects += 1
            log.info("connected", provider=self.name, category=c.name, url=url, transport="picows")
            if c.disconnected_ns:
                t = now_ns()
                for iid in c.symbols.values():  # the reconnect window is a gap (ns)
                    self.record_gap(iid, "reconnect", c.disconnected_ns, t, GapUnits.NS, "websocket reconnect")
                    self.books.gaps += 1
            c.ws = conn
            watchdog = None
            stop = asyncio.get_running_loop().create_task(self._stop.wait())
            try:
                for iid in c.symbols.values():
                    sync = self.books.syncs.get(iid)
                    if sync is not None:
                        sync.awaiting_snapshot = True   # the subscription brings the snapshot
                await self._subscribe(c, conn)
                if self.stale_after_s or self.ping_interval_s:
                    watchdog = asyncio.get_running_loop().create_task(self._watchdog(c, conn))
                await asyncio.wait([stop, asyncio.ensure_future(transport.wait_disconnected())],
                                   return_when=asyncio.FIRST_COMPLETED)
            finally:
                stop.cancel()
                c.ws = None
                if watchdog is not None:
                    watchdog.cancel()
                if not transport.is_disconnected:
                    transport.send_close(picows.WSCloseCode.GOING_AWAY)
                    transport.disconnect()
                c.disconnected_ns = now_ns()
                for iid in c.symbols.values():   # stale until the next subscription's snapshot
                    sync = self.books.syncs.get(iid)
                    if sync is not None:
                        sync.synced = False
                        sync.awaiting_snapshot = True
            log.info("disconnected", provider=self.name, category=c.name, code=conn.close_code, transport="picows")
        finally:
            self._fold(c)
            c.feed = None

    async def _watchdog(self, c: _Category, ws) -> None:
        """Per connection: ``{"op":"ping"}`` every ``ping_interval_s``; closes the socket when no
        frame arrived on it for ``stale_after_s`` (its loop then reconnects)."""
        stale, ping = self.stale_after_s, self.ping_interval_s
        tick = min(x for x in (1.0, (stale or 4.0) / 4, ping or 1.0) if x > 0)
        t0 = time.monotonic()
        self._fold(c)
        seen, changed, pinged = c.frames, t0, t0
        while not ws.closed:
            await asyncio.sleep(tick)
            now = time.monotonic()
            self._fold(c)
            if c.frames != seen:
                seen, changed = c.frames, now
            elif stale and now - changed >= stale:
                c.stale_disconnects += 1
                self.stale_disconnects += 1
                log.warning("connection silent, reconnecting", provider=self.name, category=c.name,
                            silent_s=round(now - changed, 3))
                await ws.close(code=aiohttp.WSCloseCode.GOING_AWAY, message=b"no data")
                return
            if ping and now - pinged >= ping and not ws.closed:
                pinged = now
                try:
                    await ws.send_str(self.ping_message())
                except (ConnectionError, aiohttp.ClientError) as e:
                    log.warning("ping failed", provider=self.name, category=c.name, error=repr(e))

    # -- the hot loop -------------------------------------------------------------------
    def _on_frame(self, c: _Category, data, ts_recv: int) -> None:
        """Decode one frame of category ``c`` and publish its records (bad frames and values
        rejected alone go to the dead-letter file)."""
        self.frames += 1
        c.frames += 1
        if self.frames == 1:
            self.on_first_frame(ts_recv)
        self.last_frame_ns = ts_recv
        try:
            n = c.codec.decode(data, ts_recv)
        except CodecError as e:
            self.dead.add(ts_recv, data, e)
            return
        self._on_decoded(c, data, ts_recv, n)

    def _on_decoded(self, c: _Category, data, ts_recv: int, n: int) -> None:
        """``Provider.on_decoded`` for category ``c``'s codec (the C frame path calls it too)."""
        codec = c.codec
        try:
            if codec.value_error_count:
                dead_letter_values(self, codec, data, ts_recv)
            if codec.last_kind in self.book_kinds:
                self.last_frame = data
                self._on_book_frame(c, codec.last_kind, ts_recv)
                return
        except (CodecError, BookError) as e:
            self.dead.add(ts_recv, data, e)
            return
        if n:
            self.publish(codec.output(), n)

    def _on_book_frame(self, c: _Category, kind: int, ts_recv: int) -> None:
        codec = c.codec
        if kind == K_BOOK or kind == K_BOOKSNAPSHOT:
            iid = codec.instrument_id
            u = codec.first_seq
            sync = self.books.syncs[iid]
            act = sync.on_snapshot(u, codec.output()) if kind == K_BOOKSNAPSHOT else sync.on_delta(u, codec.output())
            self.books.handle(iid, act, u, ts_recv)
        elif kind == K_SUBSCRIPTION:
            self.acks += 1
        elif kind == K_ERROR:
            self.subscription_errors += 1
            self.error_frames += 1
            frame = self.last_frame
            try:
                msg = orjson.loads(frame)
            except orjson.JSONDecodeError:  # the codec accepted it: cannot happen
                msg = {}
            log.error("subscription failed", provider=self.name, category=c.name, op=msg.get("op"),
                      error=msg.get("ret_msg"), topics=self._req_args.get(str(msg.get("req_id")), "?"))

    # -- book resync: unsubscribe + subscribe the one topic -----------------------------
    def request_book(self, iid: int) -> None:
        c = self.cat_of[iid]
        ws = c.ws
        if ws is None or ws.closed:
            return  # the reconnect subscribes everything again
        t = asyncio.get_running_loop().create_task(self._resubscribe(c, ws, iid))
        self._tasks.add(t)
        t.add_done_callback(self._tasks.discard)

    async def _resubscribe(self, c: _Category, ws, iid: int) -> None:
        topic = f"orderbook.{self.depth}.{self.bare_of[iid]}"
        self.resubscribes += 1
        log.info("resubscribing book", provider=self.name, category=c.name, topic=topic)
        try:
            await ws.send_str(self._message("unsubscribe", [topic]))
            await ws.send_str(self._message("subscribe", [topic]))
        except (ConnectionError, aiohttp.ClientError) as e:
            log.warning("resubscribe failed", provider=self.name, topic=topic, error=repr(e))
            return
        await asyncio.sleep(self.resync_timeout_s)
        sync = self.books.syncs[iid]
        if not sync.synced and c.ws is ws and not ws.closed:
            log.warning("no snapshot after resubscribe, retrying", provider=self.name, topic=topic)
            act = sync.request_snapshot()
            if act.needs_snapshot:
                self.request_book(iid)

    # -- stats ------------------------------------------------------------------------------
    def stats(self) -> dict:
        d = super().stats()
        counts: dict[str, int] = {}
        for c in self.cats.values():
            if c.codec is not None:
                for k, v in c.codec.counts().items():
                    counts[k] = counts.get(k, 0) + v
        syncs = self.books.syncs.values() if self.books is not None else ()
        d.update({
            "frames_by_kind": counts,
            "reconnects": sum(max(0, c.connects - 1) for c in self.cats.values()),
            "connected": bool(self.cats) and all(c.ws is not None and not c.ws.closed for c in self.cats.values()),
            "categories": {c.name: {"connected": c.ws is not None and not c.ws.closed, "connects": c.connects,
                                    "frames": c.frames, "stale_disconnects": c.stale_disconnects}
                           for c in self.cats.values()},
            "error_frames": self.error_frames,
            "subscription_errors": self.subscription_errors,
            "subscription_acks": self.acks,
            "value_errors": self.value_errors,
            "book_resubscribes": self.resubscribes,
            "book_snapshots": sum(s.stats.snapshots for s in syncs),
            "book_deltas_applied": sum(s.stats.applied for s in syncs),
            "book_update_id_gaps": sum(s.stats.gaps for s in syncs),
            "size_precisions": self.size_precisions,
        })
        return d
