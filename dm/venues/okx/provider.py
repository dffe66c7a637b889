"""OKX provider: websocket API v5 public channels on one connection (live ``ws_url`` =
``wss://ws.okx.com:8443/ws/v5/public``, ``rest_url`` = ``https://www.okx.com``).

Venue rules (OKX API v5 docs, https://www.okx.com/docs-v5/en/, sections named in brackets):

* Reference data: REST ``GET /api/v5/public/instruments?instType=T`` ("Public Data → Get
  instruments") for SPOT, SWAP and FUTURES (so symbols added at runtime can be of any of them)
  and OPTION once per configured underlying (``&uly=BASE-QUOTE``: options need it; options of
  another underlying cannot be added at runtime), joined into one JSON array
  for ``dm.venues.okx.symbology.OkxSymbology``. Venue symbols are ``instId``s. Quote aliases
  come from ``[providers.<name>] quote_aliases`` only (OKX lists BTC-USD next to BTC-USDT
  contracts: the global USDT → USD alias would merge them).
* Instruments whose ``tickSz`` has more than 9 decimals (ELON-USDT ticks at 1e-11) cannot be
  represented in dm's 1e-9 prices: configuring one is a ``ConfigError`` at start.
* One websocket ("WebSocket → Overview → Connect"); after connecting,
  ``{"op":"subscribe","args":[{"channel":C,"instId":I},..]}`` in requests of at most
  :data:`MAX_ARGS` args for the configured channels (``channels``: one order book channel of
  ``books``, ``books-l2-tbt``, ``books50-l2-tbt`` — the tick-by-tick ones need a login on
  today's OKX —, ``trades``, ``tickers``, ``mark-price``, ``open-interest``,
  ``funding-rate``; default ``books``, ``trades``, ``tickers``). An ``error`` event is logged
  and counted (``subscription_errors``). Heartbeat ("Overview": "if there's no message
  received after N seconds (N < 30), send the string 'ping' and expect 'pong'; if no 'pong' is
  received within N seconds, reconnect"): the text ``ping`` after ``ping_interval_s`` (default
  20 s) of silence, and close + reconnect after ``stale_after_s`` (default 30 s) of silence.
  The reconnect window is a gap (``reconnect``) for every instrument; every channel is
  subscribed again and each book rebuilt from its new snapshot.
* Books ("Order book channel", "Checksum"): one ``dm.venues.okx.booksync.OkxBookSync`` per
  instrument: a snapshot replaces the book, each update must carry ``prevSeqId`` == the last
  ``seqId`` and the book's top 25 must give the frame's ``checksum``. A break is ONE gap
  (``okx.seq_id`` or ``okx.checksum``) and the book channel of that instrument is resubscribed
  (``unsubscribe`` + ``subscribe``) for a fresh snapshot, again after ``resync_timeout_s``
  (default 10 s) if none came.

Output. ``trades`` → TRADE. ``tickers`` → BBO: with ``tickers`` subscribed it is the channel's
BBO source and the book publishes DEPTH only; without it the book publishes BBO too.
``mark-price``/``open-interest``/``funding-rate`` → STATISTICS. The book publishes DEPTH
(sequence = ``seqId``) and its BOOK_DELTA records go to the persist queue. A value the codec
rejects alone is dead-lettered with its text (``value_errors``).

Sizes: each instrument's ``size_precision`` is the decimals of its ``lotSz``
(``SymbolInfo.size_precision``, in the stats file as ``size_precisions``); the codec is
registered at :data:`CODEC_SIZE_PRECISION` until books and channels are per-instrument
(``dm._book`` stamps 1e-9 on DEPTH/BBO today), as the Bybit worker does.
"""
from __future__ import annotations

import asyncio
import time

import aiohttp
import orjson

from dm import log as dmlog
from dm._codec import KINDS
from dm._feed import FAST_CHAINED
from dm.venues.okx._checksum import CHECKSUM_DEPTH
from dm.errors import ConfigError, SymbologyError
from dm.providers.base import Books, Provider, ResubscribingBooks, resolve_instruments
from dm.symbology import for_provider, parse_canonical
from dm.venues.okx._codec import OkxCodec
from dm.venues.okx.booksync import OkxBookSync

log = dmlog.get("dm.worker.okx")

K_BOOK = KINDS["book"]
K_BOOKSNAPSHOT = KINDS["bookSnapshot"]
K_SUBSCRIPTION = KINDS["subscription"]
K_ERROR = KINDS["error"]
K_INFO = KINDS["info"]

BOOK_CHANNELS = ("books", "books-l2-tbt", "books50-l2-tbt")
CHANNELS = frozenset(BOOK_CHANNELS + ("trades", "tickers", "mark-price", "open-interest", "funding-rate"))
DEFAULT_CHANNELS = ("books", "trades", "tickers")
_DERIVATIVE_CHANNELS = {"funding-rate": ("SWAP",), "mark-price": ("SWAP", "FUTURES", "OPTION"),
                        "open-interest": ("SWAP", "FUTURES", "OPTION")}
MAX_ARGS = 100   # args per subscribe request (the request must stay under OKX's 64 KB limit)
INSTRUMENTS_PATH = "/api/v5/public/instruments"
CODEC_SIZE_PRECISION = 9
EXTRA_KEYS = frozenset({"quote_aliases", "stale_after_s", "ping_interval_s", "resync_timeout_s", "transport"})


def inst_type_of(canonical: str) -> tuple[str, str]:
    """``(instType, uly)`` of a canonical symbol: ``("SPOT", "")``, ``("SWAP", "")``,
    ``("FUTURES", "")`` or ``("OPTION", "BTC-USD")`` (the underlying: OKX lists options per
    underlying; quote USD, the underlying of every OKX option). Raises ``ConfigError``."""
    try:
        parts = parse_canonical(canonical.strip().upper())
    except SymbologyError as e:
        raise ConfigError(f"okx: {e}") from None
    if parts.klass == "spot":
        return "SPOT", ""
    if parts.klass == "perpetual":
        return "SWAP", ""
    if parts.klass == "future":
        return "FUTURES", ""
    if parts.klass == "option":
        base = parts.pair[: -len("USD")] if parts.pair.endswith("USD") else parts.settle
        return "OPTION", f"{base}-USD"
    raise ConfigError(f"okx: no OKX instrument type for {canonical!r}")


def representable(info) -> bool:
    """Whether an instrument's prices fit dm's 1e-9 fixed point: its ``tickSz`` has at most 9
    decimals (every price OKX sends is a multiple of it)."""
    tick = info.tick_size
    return tick is None or tick <= 0 or -tick.normalize().as_tuple().exponent <= 9


class OkxProvider(ResubscribingBooks, Provider):
    """OKX v5 worker (module docstring). Config (``[providers.<name>]``): ``ws_url``,
    ``rest_url``, ``symbols`` (canonical), ``channels``; extra keys ``quote_aliases``,
    ``stale_after_s``, ``ping_interval_s``, ``resync_timeout_s``."""

    stale_after_s = 30.0
    ping_interval_s = 20.0
    global_quote_aliases = False

    def __init__(self, cfg, pcfg):
        super().__init__(cfg, pcfg)
        ex = pcfg.extra
        unknown = set(ex) - EXTRA_KEYS
        if unknown:
            raise ConfigError(f"providers.{pcfg.name}: unknown OKX key(s) {sorted(unknown)}; known: {sorted(EXTRA_KEYS)}")
        self.channel_names = tuple(pcfg.channels) or DEFAULT_CHANNELS
        bad = set(self.channel_names) - CHANNELS
        if bad:
            raise ConfigError(f"providers.{pcfg.name}.channels: unknown OKX v5 channel(s) {sorted(bad)}; known: {sorted(CHANNELS)}")
        books = [c for c in self.channel_names if c in BOOK_CHANNELS]
        if len(books) > 1:
            raise ConfigError(f"providers.{pcfg.name}.channels: one order book channel at most, got {books}")
        self.book_channel = books[0] if books else None
        self.resync_timeout_s = float(ex.get("resync_timeout_s", 10.0))
        # every non-option type (symbols added at runtime may be of any), options per configured underlying
        self.types = sorted({("SPOT", ""), ("SWAP", ""), ("FUTURES", "")} | {inst_type_of(s) for s in pcfg.symbols})
        self.size_precisions: dict[str, int | None] = {}
        self.error_frames = 0
        self.subscription_errors = 0
        self.acks = 0
        self.infos = 0
        self.resubscribes = 0
        self.value_errors = 0
        self.pongs = 0
        self._tasks: set[asyncio.Task] = set()

    # -- set-up ---------------------------------------------------------------------------
    async def fetch_reference(self) -> bytes:
        """``/api/v5/public/instruments`` of every instrument type (and option underlying) in
        use, as one JSON array of the bodies, retried with backoff."""
        delay = self.pcfg.reconnect_min_s
        while True:
            try:
                bodies = []
                for itype, uly in self.types:
                    url = f"{self.pcfg.rest_url.rstrip('/')}{INSTRUMENTS_PATH}?instType={itype}"
                    if uly:
                        url += f"&uly={uly}"
                    async with self.session.get(url) as resp:
                        body = await resp.read()
                        if resp.status != 200:
                            raise SymbologyError(f"GET {url}: HTTP {resp.status}: {body[:200]!r}")
                    doc = orjson.loads(body)
                    if not isinstance(doc, dict) or str(doc.get("code")) != "0":
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
        self.symbology = sym  # kept for symbols added at runtime (dm.control)
        venue_symbols = self.select_symbols(sym)
        for canonical, inst in venue_symbols.items():
            info = sym.info(inst)
            if not representable(info):
                raise ConfigError(f"providers.{self.name}: {canonical} ({inst}) ticks at {info.tick_size}: its "
                                  f"prices have more decimals than dm's 1e-9 fixed point")
            self.size_precisions[canonical] = info.size_precision
        self.venue_symbols = venue_symbols
        self.instrument_ids = await resolve_instruments(self.cfg, self.pcfg, self.venue_symbols)
        self.venue_of = {self.instrument_ids[c]: v for c, v in self.venue_symbols.items()}

    def make_codec(self):
        self.books = Books(self, publish_bbo="tickers" not in self.channel_names)
        codec = OkxCodec(self.pcfg.publisher_id)
        for canonical, inst in self.venue_symbols.items():
            codec.add_symbol(inst, self.instrument_ids[canonical], CODEC_SIZE_PRECISION)
        kinds = {K_SUBSCRIPTION, K_ERROR, K_INFO}
        if self.book_channel:
            for iid in self.instrument_ids.values():
                self.books.syncs[iid] = OkxBookSync(iid, self.pcfg.publisher_id, CODEC_SIZE_PRECISION)
            kinds |= {K_BOOK, K_BOOKSNAPSHOT}
            # steady-state updates in C (dm._feed): prevSeqId = the previous seqId, then the CRC32
            # of the top 25 levels
            self.fast_book = (K_BOOK, FAST_CHAINED, "seq", CHECKSUM_DEPTH)
        self.book_kinds = frozenset(kinds)
        return codec

    # -- subscriptions --------------------------------------------------------------------
    def _message(self, op: str, channel: str, symbols: list[str]) -> str:
        ch = self.book_channel if channel == "book" else channel
        return orjson.dumps({"op": op, "args": [{"channel": ch, "instId": s} for s in symbols]}).decode()

    def book_symbol(self, iid: int) -> str:
        return self.venue_of[iid]

    def subscriptions(self, venue_symbols: list[str] | None = None) -> list[dict]:
        """The ``{"channel", "instId"}`` args of every configured channel and symbol (or of
        ``venue_symbols``); the derivative channels only for the instrument types OKX has them
        for ("Public Channel": ``funding-rate`` for SWAP, ``mark-price`` and ``open-interest``
        for SWAP, FUTURES and OPTION)."""
        out = []
        wanted = None if venue_symbols is None else set(venue_symbols)
        for canonical, inst in self.venue_symbols.items():
            if wanted is not None and inst not in wanted:
                continue
            itype = inst_type_of(canonical)[0]
            for ch in self.channel_names:
                if ch in _DERIVATIVE_CHANNELS and itype not in _DERIVATIVE_CHANNELS[ch]:
                    continue
                out.append({"channel": ch, "instId": inst})
        return out

    async def on_connected(self, ws) -> None:
        for sync in self.books.syncs.values():
            sync.awaiting_snapshot = True          # the subscription brings the snapshot
        args = self.subscriptions()
        for i in range(0, len(args), MAX_ARGS):
            await ws.send_str(orjson.dumps({"op": "subscribe", "args": args[i:i + MAX_ARGS]}).decode())
        log.info("subscribed", provider=self.name, args=len(args))

    # -- runtime subscriptions (dm.control; OKX "Overview": subscribe / unsubscribe) --------------
    def new_book_sync(self, iid: int):
        if not self.book_channel:
            return None
        return OkxBookSync(iid, self.pcfg.publisher_id, CODEC_SIZE_PRECISION)

    def register_codec_symbol(self, canonical: str, venue_symbol: str, iid: int) -> None:
        info = self.symbology.info(venue_symbol)
        if not representable(info):
            raise SymbologyError(f"{canonical} ({venue_symbol}) ticks at {info.tick_size}: its prices have more "
                                 f"decimals than dm's 1e-9 fixed point")
        self.size_precisions[canonical] = info.size_precision
        self.codec.add_symbol(venue_symbol, iid, CODEC_SIZE_PRECISION)   # as make_codec (module docstring)

    async def _live(self, ws, op: str, venue_symbols: list[str]) -> None:
        args = self.subscriptions(venue_symbols)
        for i in range(0, len(args), MAX_ARGS):
            await ws.send_str(orjson.dumps({"op": op, "args": args[i:i + MAX_ARGS]}).decode())

    async def subscribe_live(self, ws, venue_symbols: list[str]) -> None:
        if self.books is not None:
            for c, v in self.venue_symbols.items():
                sync = self.books.syncs.get(self.instrument_ids[c]) if v in venue_symbols else None
                if sync is not None:
                    sync.awaiting_snapshot = True      # the book subscription brings the snapshot
        await self._live(ws, "subscribe", venue_symbols)

    async def unsubscribe_live(self, ws, venue_symbols: list[str]) -> None:
        await self._live(ws, "unsubscribe", venue_symbols)

    def ping_message(self) -> str:
        return "ping"

    async def watchdog(self, ws) -> None:
        """"Overview": the text ``ping`` once no frame came for ``ping_interval_s`` (OKX: N <
        30 s), close the socket when none came for ``stale_after_s`` (its loop reconnects)."""
        stale, ping = self.stale_after_s, self.ping_interval_s
        tick = min(x for x in (1.0, (stale or 4.0) / 4, (ping or 4.0) / 4) if x > 0)
        self.fold_feed()  # frames counted by the C frame path (dm._feed)
        seen, changed, pinged = self.frames, time.monotonic(), False
        while not ws.closed:
            await asyncio.sleep(tick)
            now = time.monotonic()
            self.fold_feed()
            if self.frames != seen:
                seen, changed, pinged = self.frames, now, False
                continue
            if stale and now - changed >= stale:
                self.stale_disconnects += 1
                log.warning("connection silent, reconnecting", provider=self.name, silent_s=round(now - changed, 3))
                await ws.close(code=aiohttp.WSCloseCode.GOING_AWAY, message=b"no data")
                return
            if ping and not pinged and now - changed >= ping and not ws.closed:
                pinged = True
                try:
                    await ws.send_str("ping")
                except (ConnectionError, aiohttp.ClientError) as e:
                    log.warning("ping failed", provider=self.name, error=repr(e))

    # -- frames -----------------------------------------------------------------------------
    def on_book_frame(self, kind: int, ts_recv: int) -> None:
        codec = self.codec
        if kind == K_BOOK or kind == K_BOOKSNAPSHOT:
            iid = codec.instrument_id
            sync = self.books.syncs[iid]
            seq = codec.last_seq or None
            cs = codec.checksum
            cs = None if cs < 0 else cs
            if kind == K_BOOKSNAPSHOT:
                act = sync.on_snapshot(codec.output(), cs, seq)
            else:
                act = sync.on_update(codec.output(), cs, seq, codec.first_seq - 1 if seq is not None else None)
            self.books.handle(iid, act, seq or 0, ts_recv)
        elif kind == K_SUBSCRIPTION:
            self.acks += 1
        elif kind == K_INFO:
            self.infos += 1
            log.info("venue notice", provider=self.name, frame=str(self.last_frame)[:300])
        elif kind == K_ERROR:
            self.subscription_errors += 1
            self.error_frames += 1
            try:
                msg = orjson.loads(self.last_frame)
            except orjson.JSONDecodeError:  # the codec accepted it: cannot happen
                msg = {}
            log.error("venue error", provider=self.name, code=msg.get("code"), error=msg.get("msg"))

    # -- stats ------------------------------------------------------------------------------
    def stats(self) -> dict:
        d = super().stats()
        syncs = self.books.syncs.values() if self.books is not None else ()
        d.update({
            "frames_by_kind": self.codec.counts() if self.codec is not None else {},
            "connected": self.ws is not None and not self.ws.closed,
            "reconnects": max(0, self.connects - 1),
            "error_frames": self.error_frames,
            "subscription_errors": self.subscription_errors,
            "subscription_acks": self.acks,
            "notices": self.infos,
            "value_errors": self.value_errors,
            "book_resubscribes": self.resubscribes,
            "book_snapshots": sum(s.stats.snapshots for s in syncs),
            "book_updates_applied": sum(s.stats.applied for s in syncs),
            "checksums_ok": sum(s.stats.checksums_ok for s in syncs),
            "book_gaps": sum(s.stats.gaps for s in syncs),
            "size_precisions": self.size_precisions,
        })
        return d
