"""Kraken Futures provider: websocket API v1 (``wss://futures.kraken.com/ws/v1``).

Venue rules (Kraken Futures "WebSocket API v1" docs, sections named in brackets):

* Reference data: REST ``GET /derivatives/api/v3/instruments`` ("Get instruments"); venue
  symbols are product ids (``PI_XBTUSD``; frames carry them upper case), canonical
  ``BTCUSD-BTC-PERP`` / ``BTCUSD-BTC-210924`` (``dm.venues.kraken_futures.symbology.KrakenFuturesSymbology``). Quote aliases come
  from ``[providers.<name>] quote_aliases`` only.
* One websocket; after connecting, one ``subscribe`` per feed with all ``product_ids`` in lower
  case as the venue's examples send them ("Subscriptions"): ``book``, ``trade``, ``ticker_lite``
  (the ``channels`` list; default these three) and the ``heartbeat`` feed ("Heartbeat"). The
  venue closes a socket without a ping for 60 s: aiohttp's websocket protocol ping runs every
  30 s. No frame for ``stale_after_s`` (default 30 s) → close and reconnect; every feed is
  subscribed again and the books rebuilt from the new ``book_snapshot``s.
* Books ("Book"): one ``dm.venues.kraken_futures.booksync.KrakenFuturesBookSync`` per product; each ``book`` delta
  must carry ``seq == previous + 1``. A jump is a gap (ledger kind ``kraken_futures.seq``,
  first/last = the missing seqs) and the product's book feed is resubscribed
  (``unsubscribe`` + ``subscribe``) for a fresh ``book_snapshot``; repeated after
  ``resync_timeout_s`` (default 10 s) if none came.

Output. ``trade`` → TRADE; ``trade_snapshot`` → TRADE with ``FLAG_SNAPSHOT`` (history sent on
subscribe: readers can tell it from live fills). ``ticker_lite`` → BBO (the venue's own top,
sizes 0, ``ts_event`` = receive time): with it subscribed the book publishes DEPTH only (the
lead's rule: a venue top-of-book stream is the channel's BBO source); without it the book also
publishes BBO. DEPTH ``sequence`` is the book ``seq``. ``error``/``alert`` events and
``subscribed_failed`` replies are logged and counted (``error_frames``).
"""
from __future__ import annotations

import asyncio

import aiohttp
import orjson

from dm import log as dmlog
from dm._codec import KINDS
from dm._feed import FAST_SEQ_NEXT
from dm.errors import ConfigError
from dm.providers.base import Books, Provider, ResubscribingBooks
from dm.venues.kraken_futures._codec import KrakenFuturesCodec
from dm.venues.kraken_futures.booksync import KrakenFuturesBookSync

log = dmlog.get("dm.worker.kraken_futures")

K_BOOK = KINDS["book"]
K_BOOKSNAPSHOT = KINDS["bookSnapshot"]
K_SUBSCRIPTION = KINDS["subscription"]
K_ERROR = KINDS["error"]

DEFAULT_FEEDS = ("book", "trade", "ticker_lite")
FEEDS = {"book", "trade", "ticker_lite", "ticker"}


class KrakenFuturesProvider(ResubscribingBooks, Provider):
    global_quote_aliases = False
    """Kraken Futures v1 worker (module docstring). Config (``[providers.<name>]``): ``symbols``
    (canonical), ``channels`` (feeds: ``book``, ``trade``, ``ticker_lite``, ``ticker``), extra
    keys ``quote_aliases``, ``heartbeat`` (subscribe the heartbeat feed, default true),
    ``stale_after_s``, ``resync_timeout_s``."""

    stale_after_s = 30.0

    def __init__(self, cfg, pcfg):
        super().__init__(cfg, pcfg)
        self.feeds = tuple(pcfg.channels) or DEFAULT_FEEDS
        unknown = set(self.feeds) - FEEDS
        if unknown:
            raise ConfigError(f"providers.{pcfg.name}.channels: unknown Kraken Futures v1 feed(s) {sorted(unknown)}")
        self.heartbeat_feed = bool(pcfg.extra.get("heartbeat", True))
        self.resync_timeout_s = float(pcfg.extra.get("resync_timeout_s", 10.0))
        self.error_frames = 0
        self.resubscribes = 0
        self._product_of: dict[int, str] = {}
        self._tasks: set[asyncio.Task] = set()

    # -- set-up ---------------------------------------------------------------------------
    async def resolve_symbols(self) -> None:
        await super().resolve_symbols()
        self._product_of = {iid: v.lower() for iid, v in self.venue_of.items()}  # subscriptions use lower case

    def make_codec(self):
        codec = KrakenFuturesCodec(self.pcfg.publisher_id)
        for c, v in self.venue_symbols.items():   # sizes at the contract's size precision
            iid = self.instrument_ids[c]
            codec.add_symbol(v, iid, self.size_precision_of.get(iid, 9))
        kinds = {K_SUBSCRIPTION, K_ERROR}
        if "book" in self.feeds:
            top_feed = "ticker_lite" in self.feeds or "ticker" in self.feeds
            self.books = Books(self, publish_bbo=not top_feed)
            for iid in self.instrument_ids.values():
                sync = self.books.syncs[iid] = KrakenFuturesBookSync(iid, self.pcfg.publisher_id)
                sync.book.size_precision = self.size_precision_of.get(iid, 9)
            kinds |= {K_BOOK, K_BOOKSNAPSHOT}
            self.fast_book = (K_BOOK, FAST_SEQ_NEXT, "seq")   # steady-state deltas in C (dm._feed)
        self.book_kinds = frozenset(kinds)
        return codec

    # -- subscriptions --------------------------------------------------------------------
    @staticmethod
    def _message(event: str, feed: str, products: list[str] | None) -> str:
        msg = {"event": event, "feed": feed}
        if products is not None:
            msg["product_ids"] = products
        return orjson.dumps(msg).decode()

    async def on_connected(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        products = [v.lower() for v in self.venue_symbols.values()]
        if self.books is not None:
            for sync in self.books.syncs.values():
                sync.awaiting_snapshot = True  # the book subscription brings the snapshot
        for feed in self.feeds:
            await ws.send_str(self._message("subscribe", feed, products))
        if self.heartbeat_feed:
            await ws.send_str(self._message("subscribe", "heartbeat", None))
        log.info("subscribed", provider=self.name, feeds=list(self.feeds), products=len(products))

    # -- frames routed here (book_kinds) -------------------------------------------------
    # runtime subscriptions (Kraken Futures WebSocket v1: "subscribe" / "unsubscribe" events)
    def new_book_sync(self, iid: int):
        sync = KrakenFuturesBookSync(iid, self.pcfg.publisher_id)
        sync.book.size_precision = self.size_precision_of.get(iid, 9)
        return sync

    def register_codec_symbol(self, canonical: str, venue_symbol: str, iid: int) -> None:
        super().register_codec_symbol(canonical, venue_symbol, iid)
        self._product_of[iid] = venue_symbol.lower()

    async def subscribe_live(self, ws, venue_symbols: list[str]) -> None:
        products = [v.lower() for v in venue_symbols]
        if self.books is not None:
            for c, v in self.venue_symbols.items():
                if v in venue_symbols and self.instrument_ids[c] in self.books.syncs:
                    self.books.syncs[self.instrument_ids[c]].awaiting_snapshot = True
        for feed in self.feeds:
            await ws.send_str(self._message("subscribe", feed, products))

    async def unsubscribe_live(self, ws, venue_symbols: list[str]) -> None:
        products = [v.lower() for v in venue_symbols]
        for feed in self.feeds:
            await ws.send_str(self._message("unsubscribe", feed, products))

    def on_book_frame(self, kind: int, ts_recv: int) -> None:
        c = self.codec
        if kind == K_BOOK:
            iid = c.instrument_id
            seq = c.first_seq
            act = self.books.syncs[iid].on_delta(seq, c.output())
            self.books.handle(iid, act, seq, ts_recv)
        elif kind == K_BOOKSNAPSHOT:
            iid = c.instrument_id
            seq = c.first_seq
            act = self.books.syncs[iid].on_snapshot(seq, c.output())
            self.books.handle(iid, act, seq, ts_recv)
        elif kind == K_SUBSCRIPTION:
            frame = self.last_frame
            if b"_failed" in (frame.encode() if isinstance(frame, str) else bytes(frame)):
                self.error_frames += 1
                log.error("subscription failed", provider=self.name, frame=_text(frame)[:300])
        elif kind == K_ERROR:
            self.error_frames += 1
            log.warning("venue error event", provider=self.name, frame=_text(self.last_frame)[:300])

    # -- book resync (ResubscribingBooks) -------------------------------------------------
    def book_symbol(self, iid: int) -> str:
        return self._product_of[iid]

    def stats(self) -> dict:
        d = super().stats()
        syncs = self.books.syncs.values() if self.books is not None else ()
        d.update({
            "error_frames": self.error_frames,
            "book_resubscribes": self.resubscribes,
            "book_snapshots": sum(s.stats.snapshots for s in syncs),
            "book_deltas_applied": sum(s.stats.applied for s in syncs),
            "book_seq_gaps": sum(s.stats.gaps for s in syncs),
        })
        return d


def _text(frame) -> str:
    return frame if isinstance(frame, str) else bytes(frame).decode("utf-8", "replace")
