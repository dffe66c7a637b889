"""Kraken spot provider: websocket API v1 (``wss://ws.kraken.com``), L2 books with CRC32 checks.

Venue rules (Kraken "WebSocket API v1" docs, sections named in brackets):

* Reference data: REST ``GET /0/public/AssetPairs`` ("Get Tradable Asset Pairs"); venue symbols
  are the ``wsname`` (``XBT/USD``), canonical ``BTCUSD`` (``dm.venues.kraken.symbology.KrakenSymbology``).
  Quote aliases come from ``[providers.<name>] quote_aliases`` only, never from the global
  ``[symbology]`` table: the global USDT→USD alias would map ``XBT/USD`` and ``XBT/USDT`` to one
  canonical symbol on Kraken.
* One websocket; after connecting, one ``subscribe`` per channel for all pairs ("subscribe"):
  ``book`` with ``depth`` (config ``depth``, default 1000; Kraken accepts 10, 25, 100, 500,
  1000), ``trade``, ``ticker``, ``spread`` — whichever are in ``channels`` (default ``book``,
  ``trade``, ``ticker``).
* ``{"event":"ping","reqid":N}`` every ``ping_interval_s`` (default 30 s; "ping"); the server
  sends ``{"event":"heartbeat"}`` after ~1 s without traffic ("heartbeat"), so no frame for
  ``stale_after_s`` (default 10 s) means the socket is dead: it is closed and reconnected
  (``dm.providers.base`` watchdog); every subscription is sent again on the new socket and the
  books are rebuilt from the new snapshots.
* Books ("book", "Book checksum"): one ``dm.venues.kraken.booksync.KrakenBookSync`` per pair, truncated to the
  subscribed depth, the CRC32 ``c`` verified on every update. The websocket's decimals per pair
  are read from the snapshot's first level strings (AssetPairs ``pair_decimals`` differs from
  the wire for most pairs); if the snapshot has no level the sync detects them from the first
  checksum. A mismatch is a gap (ledger kind ``kraken.checksum``, first/last = ns window since
  the last verified update) and the pair's book is resubscribed (``unsubscribe`` + ``subscribe``)
  to get a fresh snapshot; if none arrives within ``resync_timeout_s`` (default 10 s) the
  resubscribe is repeated.

Output. Trades → TRADE records on the pair's channel and the persist queue. The book publishes
BOOK_DELTA records (persist queue), DEPTH (top 10, on every top-10 change) and BBO (on every
change of the top) to the channel: **with a book subscribed the book is the channel's only BBO
source** — the v1 ``ticker`` is event-driven (sent on trades, not on every top change) and
would interleave stale tops with the book's. Ticker BBO records (``FLAG_TS_EVENT_IS_RECV``: the
v1 ticker has no event time) then go to the persist queue only, so storage keeps what the venue
said. Without a ``book`` subscription, ticker (and spread) BBOs go to the channel as they are.
``error`` events and failed ``subscriptionStatus`` replies are logged and counted
(``error_frames`` in the stats file).
"""
from __future__ import annotations

import asyncio
import re

import aiohttp
import orjson

from dm import log as dmlog
from dm._codec import KINDS, parse_price, parse_size
from dm._feed import FAST_ALWAYS
from dm.venues.kraken._checksum import CHECKSUM_DEPTH
from dm.errors import FixedPointError
from dm.providers.base import Books, Provider, ResubscribingBooks
from dm.venues.kraken._codec import KrakenCodec
from dm.venues.kraken.booksync import KrakenBookSync, decimals_of

log = dmlog.get("dm.worker.kraken")

K_BOOK = KINDS["book"]
K_BOOKSNAPSHOT = KINDS["bookSnapshot"]
K_TICKER = KINDS["ticker"]
K_SPREAD = KINDS["spread"]
K_SUBSCRIPTION = KINDS["subscription"]
K_ERROR = KINDS["error"]

DEFAULT_CHANNELS = ("book", "trade", "ticker")
BOOK_DEPTHS = (10, 25, 100, 500, 1000)

# first level of a v1 snapshot: ["price","volume","time"...]: the strings carry the pair's decimals
_FIRST_LEVEL = re.compile(rb'\[\s*"([0-9]+(?:\.[0-9]*)?)"\s*,\s*"([0-9]+(?:\.[0-9]*)?)"')


def snapshot_decimals(frame: bytes | str) -> tuple[int | None, int | None]:
    """(price decimals, volume decimals) of a Kraken v1 book snapshot frame, read from its first
    level's strings; ``(None, None)`` when it has no level."""
    data = frame.encode() if isinstance(frame, str) else bytes(frame)
    m = _FIRST_LEVEL.search(data, 0, 4096)
    if m is None:
        return None, None
    return decimals_of(m.group(1).decode()), decimals_of(m.group(2).decode())


def rejected_levels(frame: bytes | str, size_precision: int) -> list[tuple[int, str, str]]:
    """The book levels of a v1 book frame that the codec rejects alone (a price beyond i64 at
    1e-9, a volume that does not fit ``size_precision``), as ``[(side 65|66, price text, volume
    text)]`` in the codec's order (per payload asks then bids). They stay in the venue's book,
    so ``KrakenBookSync`` keeps them for the checksum (docs: "Book checksum"). Rare path: the
    frame is parsed again with orjson."""
    try:
        msg = orjson.loads(frame)
    except orjson.JSONDecodeError:
        return []
    out = []
    for pay in msg[1:-2] if isinstance(msg, list) else ():
        if not isinstance(pay, dict):
            continue
        for key, side in (("as", 65), ("bs", 66), ("a", 65), ("b", 66)):
            for lv in pay.get(key) or ():
                try:
                    parse_price(lv[0])
                    parse_size(lv[1], size_precision)
                except FixedPointError:
                    out.append((side, lv[0], lv[1]))
                except (IndexError, TypeError):
                    continue
    return out


class KrakenProvider(ResubscribingBooks, Provider):
    global_quote_aliases = False
    """Kraken spot v1 worker (module docstring). Config (``[providers.<name>]``): ``symbols``
    (canonical), ``channels`` (``book``, ``trade``, ``ticker``, ``spread``), extra keys ``depth``,
    ``quote_aliases``, ``stale_after_s``, ``ping_interval_s``, ``resync_timeout_s``."""

    stale_after_s = 10.0
    ping_interval_s = 30.0

    def __init__(self, cfg, pcfg):
        super().__init__(cfg, pcfg)
        self.channel_names = tuple(pcfg.channels) or DEFAULT_CHANNELS
        unknown = set(self.channel_names) - {"book", "trade", "ticker", "spread"}
        if unknown:
            from dm.errors import ConfigError

            raise ConfigError(f"providers.{pcfg.name}.channels: unknown Kraken v1 channel(s) {sorted(unknown)}")
        self.depth = int(pcfg.extra.get("depth", 1000))
        if self.depth not in BOOK_DEPTHS:
            from dm.errors import ConfigError

            raise ConfigError(f"providers.{pcfg.name}.depth must be one of {BOOK_DEPTHS}, got {self.depth}")
        self.resync_timeout_s = float(pcfg.extra.get("resync_timeout_s", 10.0))
        self.error_frames = 0
        self.subscription_errors = 0
        self.resubscribes = 0
        self._reqid = 0
        self._tasks: set[asyncio.Task] = set()

    # -- set-up ---------------------------------------------------------------------------
    def make_codec(self):
        codec = KrakenCodec(self.pcfg.publisher_id)
        for c, v in self.venue_symbols.items():   # sizes at AssetPairs lot_decimals
            iid = self.instrument_ids[c]
            codec.add_symbol(v, iid, self.size_precision_of.get(iid, 9))
        kinds = {K_SUBSCRIPTION, K_ERROR}
        if "book" in self.channel_names:
            self.books = Books(self, publish_bbo=True)
            for iid in self.instrument_ids.values():
                sync = self.books.syncs[iid] = KrakenBookSync(iid, self.pcfg.publisher_id, depth=self.depth)
                sync.book.size_precision = self.size_precision_of.get(iid, 9)
            kinds |= {K_BOOK, K_BOOKSNAPSHOT, K_TICKER, K_SPREAD}
            # steady-state updates in C (dm._feed): no update ids, the CRC32 of the top 10 levels
            # after each ("Book Checksum")
            self.fast_book = (K_BOOK, FAST_ALWAYS, None, CHECKSUM_DEPTH)
            self.persist_only_kinds = frozenset({K_TICKER, K_SPREAD})
        self.book_kinds = frozenset(kinds)
        return codec

    # -- subscriptions --------------------------------------------------------------------
    def _subscription(self, channel: str) -> dict:
        if channel == "book":
            return {"name": "book", "depth": self.depth}
        return {"name": channel}

    def _message(self, event: str, channel: str, pairs: list[str]) -> str:
        self._reqid += 1
        return orjson.dumps({"event": event, "reqid": self._reqid, "pair": pairs,
                             "subscription": self._subscription(channel)}).decode()

    async def on_connected(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        pairs = list(self.venue_symbols.values())
        if self.books is not None:
            for sync in self.books.syncs.values():
                sync.awaiting_snapshot = True  # the subscription below brings the snapshot
        for ch in self.channel_names:
            await ws.send_str(self._message("subscribe", ch, pairs))
        log.info("subscribed", provider=self.name, channels=list(self.channel_names), pairs=len(pairs), depth=self.depth)

    # runtime subscriptions (Kraken WebSocket API v1, "subscribe" / "unsubscribe" events)
    def new_book_sync(self, iid: int):
        sync = KrakenBookSync(iid, self.pcfg.publisher_id, depth=self.depth)
        sync.book.size_precision = self.size_precision_of.get(iid, 9)
        return sync

    async def subscribe_live(self, ws, venue_symbols: list[str]) -> None:
        if self.books is not None:
            for v in venue_symbols:
                sync = self.books.syncs.get(self.instrument_ids[self._canonical_of(v)])
                if sync is not None:
                    sync.awaiting_snapshot = True  # the book subscription brings the snapshot
        for ch in self.channel_names:
            await ws.send_str(self._message("subscribe", ch, venue_symbols))

    async def unsubscribe_live(self, ws, venue_symbols: list[str]) -> None:
        for ch in self.channel_names:
            await ws.send_str(self._message("unsubscribe", ch, venue_symbols))

    def _canonical_of(self, venue_symbol: str) -> str:
        return next(c for c, v in self.venue_symbols.items() if v == venue_symbol)

    def ping_message(self) -> str:
        self._reqid += 1
        return orjson.dumps({"event": "ping", "reqid": self._reqid}).decode()

    # -- frames routed here (book_kinds) -------------------------------------------------
    def on_book_frame(self, kind: int, ts_recv: int) -> None:
        c = self.codec
        if kind == K_BOOK:
            iid = c.instrument_id
            cs = c.checksum
            rej = rejected_levels(self.last_frame, c.size_precision) if c.value_error_count else ()
            act = self.books.syncs[iid].on_update(c.output(), cs if cs >= 0 else None, rej)
            self.books.handle(iid, act, 0, ts_recv)
        elif kind == K_BOOKSNAPSHOT:
            iid = c.instrument_id
            pd, sd = snapshot_decimals(self.last_frame)
            rej = rejected_levels(self.last_frame, c.size_precision) if c.value_error_count else ()
            act = self.books.syncs[iid].on_snapshot(c.output(), pd, sd, rej)
            self.books.handle(iid, act, 0, ts_recv)
        elif kind == K_TICKER or kind == K_SPREAD:
            # the book is the channel's BBO source: venue ticker/spread BBOs are stored only
            recs = c.output()
            if len(recs):
                self.queue.write_many(recs)
                self.records += len(recs) // 80
        elif kind == K_SUBSCRIPTION:
            self._on_status(ts_recv)
        elif kind == K_ERROR:
            self.error_frames += 1
            log.warning("venue error event", provider=self.name, frame=_text(self.last_frame)[:300])

    def _on_status(self, ts_recv: int) -> None:
        try:
            msg = orjson.loads(self.last_frame)
        except orjson.JSONDecodeError:  # the codec accepted it: cannot happen
            return
        if msg.get("status") == "error":
            self.subscription_errors += 1
            self.error_frames += 1
            log.error("subscription failed", provider=self.name, pair=msg.get("pair"),
                      subscription=msg.get("subscription"), error=msg.get("errorMessage"))

    # -- book resync (ResubscribingBooks) -------------------------------------------------
    def book_symbol(self, iid: int) -> str:
        return self.venue_of[iid]

    def stats(self) -> dict:
        d = super().stats()
        syncs = self.books.syncs.values() if self.books is not None else ()
        d.update({
            "error_frames": self.error_frames,
            "subscription_errors": self.subscription_errors,
            "book_resubscribes": self.resubscribes,
            "checksums_ok": sum(s.stats.checksums_ok for s in syncs),
            "checksum_failures": sum(s.stats.gaps for s in syncs),
            "book_snapshots": sum(s.stats.snapshots for s in syncs),
            "book_decimals": {self.venue_of[s.book.instrument_id]: [s.price_decimals, s.size_decimals] for s in syncs},
        })
        return d


def _text(frame) -> str:
    return frame if isinstance(frame, str) else bytes(frame).decode("utf-8", "replace")
