"""Deribit provider: JSON-RPC websocket API v2 (live ``ws_url`` = ``wss://www.deribit.com/ws/api/v2``,
``rest_url`` = ``https://www.deribit.com``).

Venue rules (Deribit API v2 docs, https://docs.deribit.com/, sections named in brackets):

* Reference data: REST ``GET /api/v2/public/get_instruments?currency=<C>&expired=false``
  ("Market data → public/get_instruments"), one request per currency the configured symbols
  need (the settlement asset of each canonical symbol, or ``currencies`` in the config); venue
  symbols are instrument names (``BTC-24SEP21-40000-C`` → ``BTCUSD-BTC-210924-40000-C``,
  ``dm.venues.deribit.symbology.DeribitSymbology``).
* One websocket. After connecting: ``public/set_heartbeat`` ``{"interval": heartbeat_s}``
  ("Session management → public/set_heartbeat"; default 30 s, the venue's minimum is 10): the
  venue then sends ``heartbeat`` notifications, and a ``test_request`` that must be answered
  with ``public/test`` (answered at once; counted in ``test_requests``); then one
  ``public/subscribe`` with ``book.{instrument}.{interval}``, ``ticker.{instrument}.{interval}``,
  ``trades.{instrument}.{interval}`` (config ``channels``: ``book``, ``ticker``, ``trades``;
  ``interval``: ``raw`` (the venue requires an authorised connection for it live), ``100ms``
  (default) or ``agg2``). The subscribe result (the list of channels subscribed) is checked: a
  channel left out, or a JSON-RPC ``error``, is logged and counted (``subscription_errors``).
  No frame for ``stale_after_s`` (default 70 s: more than two heartbeat intervals; off when
  ``heartbeat_s`` is 0 unless set) → close and reconnect; every channel is subscribed again and the books rebuilt from the new snapshots;
  the reconnect window is a gap (``reconnect``) for every instrument.
* Books ("Subscriptions → book.{instrument_name}.{interval}"): one
  ``dm.venues.deribit.booksync.DeribitBookSync`` per instrument; each change's
  ``prev_change_id`` must equal the previous ``change_id``. A break is ONE gap (ledger kind
  ``deribit.change_id``) and the book channel is resubscribed (``public/unsubscribe`` +
  ``public/subscribe``) for a fresh snapshot, repeated after ``resync_timeout_s`` (default 10 s)
  if none came.

Runtime subscriptions (``dm.control``): ``public/subscribe`` / ``public/unsubscribe`` of the
symbol's channels on the open socket; the symbol must be of a currency fetched at start
(``currencies`` in the config lists more than the configured symbols need).

Output. ``trades`` → TRADE. ``ticker`` → BBO (with it subscribed the ticker is the channel's
BBO source: the book publishes DEPTH only) and STATISTICS (mark, index, underlying price,
implied volatility, open interest, estimated delivery price, funding). The book publishes DEPTH
(sequence = ``change_id``) and its BOOK_DELTA records go to the persist queue. A value the codec
rejects alone is dead-lettered with its text (``value_errors``).

Sizes: each instrument's ``size_precision`` comes from ``min_trade_amount``
(``SymbolInfo.size_precision``, in the stats file as ``size_precisions``); the codec is
registered at :data:`CODEC_SIZE_PRECISION` until the worker-side change makes books and
channels per-instrument (``dm._book`` stamps 1e-9 on DEPTH/BBO today), as for Bybit.
"""
from __future__ import annotations

import asyncio

import aiohttp
import orjson

from dm import log as dmlog
from dm._codec import KINDS
from dm._feed import FAST_PREV_ID
from dm.errors import ConfigError, SymbologyError
from dm.providers.base import Books, Provider, ResubscribingBooks, resolve_instruments
from dm.symbology import for_provider, parse_canonical
from dm.venues.deribit._codec import DeribitCodec
from dm.venues.deribit.booksync import DeribitBookSync

log = dmlog.get("dm.worker.deribit")

K_BOOK = KINDS["book"]
K_BOOKSNAPSHOT = KINDS["bookSnapshot"]
K_SUBSCRIPTION = KINDS["subscription"]
K_ERROR = KINDS["error"]
K_HEARTBEAT = KINDS["heartbeat"]
K_PONG = KINDS["pong"]

DEFAULT_CHANNELS = ("book", "ticker", "trades")
CHANNELS = frozenset(DEFAULT_CHANNELS)
INTERVALS = ("raw", "100ms", "agg2")
INSTRUMENTS_PATH = "/api/v2/public/get_instruments"
#: size scale the codec is given until books/channels are per-instrument (module docstring)
CODEC_SIZE_PRECISION = 9
EXTRA_KEYS = frozenset({"interval", "currencies", "heartbeat_s", "quote_aliases", "stale_after_s", "ping_interval_s",
                        "resync_timeout_s"})


def currency_of(canonical: str) -> str:
    """The ``get_instruments`` currency of a canonical symbol: its settlement asset. Raises
    ``ConfigError`` for a spot symbol (name ``currencies`` in the config for those)."""
    try:
        parts = parse_canonical(canonical.strip().upper())
    except SymbologyError as e:
        raise ConfigError(f"deribit: {e}") from None
    if parts.settle is None:
        raise ConfigError(f"deribit: cannot tell the currency of {canonical!r}; list it in 'currencies'")
    return parts.settle


class DeribitProvider(ResubscribingBooks, Provider):
    """Deribit v2 worker (module docstring). Config (``[providers.<name>]``): ``ws_url``,
    ``rest_url``, ``symbols`` (canonical), ``channels`` (``book``, ``ticker``, ``trades``), extra
    keys ``interval``, ``currencies``, ``heartbeat_s``, ``quote_aliases``, ``stale_after_s``,
    ``resync_timeout_s``."""

    stale_after_s = 70.0
    global_quote_aliases = False

    def __init__(self, cfg, pcfg):
        super().__init__(cfg, pcfg)
        ex = pcfg.extra
        unknown = set(ex) - EXTRA_KEYS
        if unknown:
            raise ConfigError(f"providers.{pcfg.name}: unknown Deribit key(s) {sorted(unknown)}; known: {sorted(EXTRA_KEYS)}")
        self.channel_names = tuple(pcfg.channels) or DEFAULT_CHANNELS
        bad = set(self.channel_names) - CHANNELS
        if bad:
            raise ConfigError(f"providers.{pcfg.name}.channels: unknown Deribit channel(s) {sorted(bad)}; known: {sorted(CHANNELS)}")
        self.interval = str(ex.get("interval", "100ms"))
        if self.interval not in INTERVALS:
            raise ConfigError(f"providers.{pcfg.name}.interval must be one of {INTERVALS}, got {self.interval!r}")
        self.heartbeat_s = int(ex.get("heartbeat_s", 30))
        if self.heartbeat_s and self.heartbeat_s < 10:
            raise ConfigError(f"providers.{pcfg.name}.heartbeat_s must be 0 (off) or >= 10 (public/set_heartbeat)")
        if not self.heartbeat_s and "stale_after_s" not in ex:
            self.stale_after_s = None   # no venue heartbeat: a quiet market sends nothing for minutes
        cur = ex.get("currencies")
        if cur is not None and (not isinstance(cur, list) or not all(isinstance(c, str) for c in cur)):
            raise ConfigError(f"providers.{pcfg.name}.currencies must be a list of currency codes")
        self.currencies = [c.upper() for c in cur] if cur else sorted({currency_of(s) for s in pcfg.symbols})
        self.resync_timeout_s = float(ex.get("resync_timeout_s", 10.0))
        self.size_precisions: dict[str, int | None] = {}
        self.error_frames = 0
        self.subscription_errors = 0
        self.acks = 0
        self.pongs = 0
        self.heartbeats = 0
        self.test_requests = 0
        self.resubscribes = 0
        self.value_errors = 0
        self._req = 0
        self._req_channels: dict[int, tuple[str, list[str]]] = {}   # request id -> (method, channels)
        self._name_of: dict[int, str] = {}
        self._tasks: set[asyncio.Task] = set()

    # -- set-up ---------------------------------------------------------------------------
    async def fetch_reference(self) -> bytes:
        """``public/get_instruments`` of every currency in use, as one JSON array of the bodies
        (``DeribitSymbology.from_reference``), retried with backoff."""
        delay = self.pcfg.reconnect_min_s
        while True:
            try:
                bodies = []
                for cur in self.currencies:
                    url = f"{self.pcfg.rest_url.rstrip('/')}{INSTRUMENTS_PATH}?currency={cur}&expired=false"
                    async with self.session.get(url) as resp:
                        body = await resp.read()
                        if resp.status != 200:
                            raise SymbologyError(f"GET {url}: HTTP {resp.status}: {body[:200]!r}")
                    doc = orjson.loads(body)
                    if not isinstance(doc, dict) or not isinstance(doc.get("result"), list):
                        raise SymbologyError(f"GET {url}: {str(doc)[:200]}")
                    bodies.append(body)
                return b"[" + b",".join(bodies) + b"]"
            except (SymbologyError, aiohttp.ClientError, OSError, asyncio.TimeoutError, orjson.JSONDecodeError) as e:
                log.warning("reference data fetch failed", provider=self.name, error=repr(e), retry_in_s=delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.pcfg.reconnect_max_s)

    async def resolve_symbols(self) -> None:
        aliases = self.pcfg.extra.get("quote_aliases", {})
        sym = for_provider(self.pcfg.kind, await self.fetch_reference(), aliases, exchange=self.exchange)
        self.venue_symbols = self.select_symbols(sym)
        self.instrument_ids = await resolve_instruments(self.cfg, self.pcfg, self.venue_symbols)
        self.venue_of = {self.instrument_ids[c]: v for c, v in self.venue_symbols.items()}
        self.symbology = sym  # symbols added at runtime (dm.control) are resolved with it
        self._name_of = dict(self.venue_of)
        for canonical, venue in self.venue_symbols.items():
            self.size_precisions[canonical] = sym.info(venue).size_precision

    def make_codec(self):
        codec = DeribitCodec(self.pcfg.publisher_id)
        for canonical, venue in self.venue_symbols.items():
            codec.add_symbol(venue, self.instrument_ids[canonical], CODEC_SIZE_PRECISION)
        kinds = {K_SUBSCRIPTION, K_ERROR, K_HEARTBEAT, K_PONG}
        # also without a book: reconnect windows are ledgered through Books
        self.books = Books(self, publish_bbo="ticker" not in self.channel_names)
        if "book" in self.channel_names:
            for iid in self.instrument_ids.values():
                self.books.syncs[iid] = DeribitBookSync(iid, self.pcfg.publisher_id)
            kinds |= {K_BOOK, K_BOOKSNAPSHOT}
            self.fast_book = (K_BOOK, FAST_PREV_ID, "change_id")   # steady-state changes in C (dm._feed)
        self.book_kinds = frozenset(kinds)
        return codec

    # -- JSON-RPC requests ------------------------------------------------------------------
    def _request(self, method: str, params: dict) -> str:
        self._req += 1
        if "channels" in params:
            self._req_channels[self._req] = (method, list(params["channels"]))
            if len(self._req_channels) > 4096:   # resubscriptions add requests: keep the last
                self._req_channels.pop(next(iter(self._req_channels)))
        return orjson.dumps({"jsonrpc": "2.0", "id": self._req, "method": method, "params": params}).decode()

    def _message(self, event: str, channel: str, names: list[str]) -> str:
        """``public/subscribe`` / ``public/unsubscribe`` of ``channel`` for instruments ``names``
        (ResubscribingBooks)."""
        return self._request(f"public/{event}", {"channels": [f"{channel}.{n}.{self.interval}" for n in names]})

    def book_symbol(self, iid: int) -> str:
        return self._name_of[iid]

    async def on_connected(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        if self.heartbeat_s:
            await ws.send_str(self._request("public/set_heartbeat", {"interval": self.heartbeat_s}))
        for sync in self.books.syncs.values():
            sync.awaiting_snapshot = True  # the book subscription brings the snapshot
        names = list(self.venue_symbols.values())
        channels = [f"{ch}.{n}.{self.interval}" for n in names for ch in self.channel_names]
        await ws.send_str(self._request("public/subscribe", {"channels": channels}))
        log.info("subscribed", provider=self.name, channels=len(channels), interval=self.interval)

    # -- frames routed here (book_kinds) from the base frame path ---------------------------
    def on_book_frame(self, kind: int, ts_recv: int) -> None:
        c = self.codec
        if kind == K_BOOK:
            iid = c.instrument_id
            act = self.books.syncs[iid].on_change(c.first_seq, c.last_seq, c.output())
            self.books.handle(iid, act, c.last_seq, ts_recv)
        elif kind == K_BOOKSNAPSHOT:
            iid = c.instrument_id
            act = self.books.syncs[iid].on_snapshot(c.last_seq, c.output())
            self.books.handle(iid, act, c.last_seq, ts_recv)
        elif kind == K_HEARTBEAT:
            self.heartbeats += 1
            if c.first_seq == 1:            # test_request: answer public/test
                self.test_requests += 1
                self._send_soon(self._request("public/test", {}))
        elif kind == K_PONG:
            self.pongs += 1
        elif kind == K_SUBSCRIPTION:
            self.acks += 1
            method, asked = self._req_channels.get(c.first_seq, ("", []))
            if method == "public/subscribe":
                try:
                    got = orjson.loads(self.last_frame).get("result") or []
                except (orjson.JSONDecodeError, AttributeError):
                    got = []
                missing = set(asked) - set(got)
                if missing:
                    self.subscription_errors += len(missing)
                    log.error("channels not subscribed", provider=self.name, channels=sorted(missing)[:20],
                              count=len(missing))
        elif kind == K_ERROR:
            self.error_frames += 1
            self.subscription_errors += 1 if c.first_seq in self._req_channels else 0
            log.error("venue error response", provider=self.name, frame=_text(self.last_frame)[:300],
                      request=self._req_channels.get(c.first_seq, "?"))

    def _send_soon(self, text: str) -> None:
        ws = self.ws
        if ws is None or ws.closed:
            return

        async def send():
            try:
                await ws.send_str(text)
            except (ConnectionError, aiohttp.ClientError) as e:
                log.warning("send failed", provider=self.name, error=repr(e))

        t = asyncio.get_running_loop().create_task(send())
        self._tasks.add(t)
        t.add_done_callback(self._tasks.discard)

    # -- runtime subscriptions (dm.control): public/subscribe / public/unsubscribe -------------
    def new_book_sync(self, iid: int):
        return DeribitBookSync(iid, self.pcfg.publisher_id) if "book" in self.channel_names else None

    def register_codec_symbol(self, canonical: str, venue_symbol: str, iid: int) -> None:
        self.codec.add_symbol(venue_symbol, iid, CODEC_SIZE_PRECISION)   # as the configured ones
        self._name_of[iid] = venue_symbol
        self.size_precisions[canonical] = self.symbol_size_precision(canonical)

    async def subscribe_live(self, ws, venue_symbols: list[str]) -> None:
        for c, v in self.venue_symbols.items():
            sync = self.books.syncs.get(self.instrument_ids[c]) if v in venue_symbols else None
            if sync is not None:
                sync.awaiting_snapshot = True   # the subscription brings the snapshot
        channels = [f"{ch}.{n}.{self.interval}" for n in venue_symbols for ch in self.channel_names]
        await ws.send_str(self._request("public/subscribe", {"channels": channels}))

    async def unsubscribe_live(self, ws, venue_symbols: list[str]) -> None:
        channels = [f"{ch}.{n}.{self.interval}" for n in venue_symbols for ch in self.channel_names]
        await ws.send_str(self._request("public/unsubscribe", {"channels": channels}))

    # -- stats ------------------------------------------------------------------------------
    def stats(self) -> dict:
        d = super().stats()
        syncs = self.books.syncs.values() if self.books is not None else ()
        d.update({
            "error_frames": self.error_frames,
            "subscription_errors": self.subscription_errors,
            "subscription_acks": self.acks,
            "heartbeats": self.heartbeats,
            "test_requests": self.test_requests,
            "pongs": self.pongs,
            "value_errors": self.value_errors,
            "book_resubscribes": self.resubscribes,
            "book_snapshots": sum(s.stats.snapshots for s in syncs),
            "book_deltas_applied": sum(s.stats.applied for s in syncs),
            "book_change_id_gaps": sum(s.stats.gaps for s in syncs),
            "size_precisions": self.size_precisions,
        })
        return d


def _text(frame) -> str:
    return frame if isinstance(frame, str) else bytes(frame).decode("utf-8", "replace")
