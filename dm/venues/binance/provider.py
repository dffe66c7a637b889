"""Binance spot provider: combined streams over one websocket, L2 books by the diff-depth rule.

Streams are selected in the URL (Binance Spot API, "WebSocket Streams" → "Combined streams":
``/stream?streams=<symbol>@<type>/...``, symbols lower case). Reference data (base/quote assets
for symbology) comes from REST ``GET /api/v3/exchangeInfo``. With a ``depth@100ms`` (or
``depth``) stream the worker keeps an L2 book per symbol synchronised by the documented
procedure ("How to manage a local order book correctly"): buffer diffs, fetch the REST snapshot
``GET /api/v3/depth?symbol=S&limit=N``, drop diffs with ``u <= lastUpdateId``, then require
``U <= lastUpdateId+1 <= u`` and ``U == previous u + 1`` (``dm.venues.binance.booksync.BinanceDepthSync``); a
break records a gap and resyncs from a fresh snapshot.
"""
from __future__ import annotations

import asyncio
from collections import Counter

import aiohttp
import orjson

from dm import log as dmlog
from dm._codec import KINDS
from dm._feed import FAST_ID_RANGE
from dm._ring import now_ns
from dm.errors import CodecError
from dm.providers.base import Books, Provider
from dm.venues.binance._codec import BinanceCodec
from dm.venues.binance.booksync import BinanceDepthSync

log = dmlog.get("dm.worker.binance")

K_DEPTH = KINDS["depthUpdate"]


class BinanceProvider(Provider):
    depth_path = "/api/v3/depth"        # REST depth snapshot (futures: /fapi/v1/depth, /dapi/v1/depth)
    sync_class = BinanceDepthSync       # the venue's diff-depth rules
    fast_book_rule = FAST_ID_RANGE      # its shape, for the steady state in C (dm._feed): U..u ids

    def __init__(self, cfg, pcfg):
        super().__init__(cfg, pcfg)
        self._past = Counter()        # book sync stats of the connections before this one

    def make_codec(self):
        codec = BinanceCodec(self.pcfg.publisher_id)
        for c, v in self.venue_symbols.items():   # sizes at LOT_SIZE stepSize's decimals
            iid = self.instrument_ids[c]
            codec.add_symbol(v, iid, self.size_precision_of.get(iid, 9))
        if any(ch.startswith("depth") for ch in self.pcfg.channels):
            # bookTicker is Binance's own BBO: the book then publishes DEPTH only
            self.books = Books(self, publish_bbo="bookTicker" not in self.pcfg.channels)
            self.book_kinds = frozenset({K_DEPTH})
            self.fast_book = (K_DEPTH, self.fast_book_rule)   # steady-state diffs in C (dm._feed)
            self.snapshot_limit = int(self.pcfg.extra.get("snapshot_limit", 1000))
            self._snapshot_tasks: dict[int, asyncio.Task] = {}
            for iid in self.instrument_ids.values():
                self.books.syncs[iid] = self._new_sync(iid)
        return codec

    def _new_sync(self, iid: int) -> BinanceDepthSync:
        sync = self.sync_class(iid, self.pcfg.publisher_id)
        sync.book.size_precision = self.size_precision_of.get(iid, 9)
        return sync

    def stream_url(self) -> str:
        streams = [f"{v.lower()}@{ch}" for v in self.venue_symbols.values() for ch in self.pcfg.channels]
        return f"{self.pcfg.ws_url}?streams=" + "/".join(streams)

    # -- runtime subscriptions (Binance Spot "WebSocket Streams" → "Live Subscribing/Unsubscribing
    # to streams": {"method": "SUBSCRIBE"|"UNSUBSCRIBE", "params": [streams], "id": n}) ----------
    def new_book_sync(self, iid: int):
        return self._new_sync(iid)

    async def _streams_request(self, ws, method: str, venue_symbols: list[str]) -> None:
        self._request_id = getattr(self, "_request_id", 0) + 1
        streams = [f"{v.lower()}@{ch}" for v in venue_symbols for ch in self.pcfg.channels]
        await ws.send_str(orjson.dumps({"method": method, "params": streams, "id": self._request_id}).decode())

    async def subscribe_live(self, ws, venue_symbols: list[str]) -> None:
        await self._streams_request(ws, "SUBSCRIBE", venue_symbols)

    async def unsubscribe_live(self, ws, venue_symbols: list[str]) -> None:
        await self._streams_request(ws, "UNSUBSCRIBE", venue_symbols)

    # -- books ------------------------------------------------------------------------------
    def on_disconnected(self) -> None:
        """A new connection is a new diff stream: every book starts over (buffer diffs, fresh
        REST snapshot), as the Binance docs' local-book procedure requires; their sync stats so
        far are kept for the stats file. The reconnect window itself is recorded in the gap
        ledger by the base class."""
        if self.books is not None:
            for iid, sy in self.books.syncs.items():
                self._past.update(snapshots=sy.stats.snapshots, applied=sy.stats.applied,
                                  dropped=sy.stats.dropped, stale=sy.stats.stale_snapshots)
                self.books.syncs[iid] = self._new_sync(iid)

    def stats(self) -> dict:
        d = super().stats()
        if self.books is not None:
            syncs = list(self.books.syncs.values())
            d["book_snapshots"] = self._past["snapshots"] + sum(s.stats.snapshots for s in syncs)
            d["book_deltas_applied"] = self._past["applied"] + sum(s.stats.applied for s in syncs)
            d["book_deltas_dropped"] = self._past["dropped"] + sum(s.stats.dropped for s in syncs)
            d["book_stale_snapshots"] = self._past["stale"] + sum(s.stats.stale_snapshots for s in syncs)
        return d

    def on_book_frame(self, kind: int, ts_recv: int) -> None:
        c = self.codec
        iid = c.instrument_id
        act = self.books.syncs[iid].on_diff(c.first_seq, c.last_seq, c.output())
        self.books.handle(iid, act, c.last_seq, ts_recv)

    def request_book(self, iid: int) -> None:
        t = self._snapshot_tasks.get(iid)
        if t is None or t.done():
            self._snapshot_tasks[iid] = asyncio.get_running_loop().create_task(self.fetch_snapshot(iid))

    async def fetch_snapshot(self, iid: int) -> None:
        """REST depth snapshot → BOOK_DELTA records → the sync (retries with backoff)."""
        venue = self.venue_of[iid]
        url = f"{self.pcfg.rest_url}{self.depth_path}"
        delay = self.pcfg.reconnect_min_s
        while not self._stop.is_set():
            try:
                async with self.session.get(url, params={"symbol": venue, "limit": str(self.snapshot_limit)}) as resp:
                    body = await resp.read()
                    if resp.status != 200:
                        raise aiohttp.ClientResponseError(resp.request_info, (), status=resp.status, message=body[:200].decode(errors="replace"))
                ts_recv = now_ns()
                c = self.codec
                c.decode_snapshot(body, venue, ts_recv)
                sync = self.books.syncs[iid]
                act = sync.on_snapshot(c.last_seq, bytes(c.output()))
                # the book may already include buffered diffs applied after the snapshot
                self.books.handle(iid, act, sync.last_update_id if sync.synced else c.last_seq, ts_recv)
                if not sync.awaiting_snapshot:
                    return
                # the snapshot is older than the buffered diffs (the venue's REST lags its
                # stream): the sync asked for another; this task is the one to fetch it
                log.info("depth snapshot stale, fetching another", symbol=venue, last_update_id=c.last_seq, retry_in_s=delay)
            except (aiohttp.ClientError, OSError, asyncio.TimeoutError, CodecError) as e:
                log.warning("depth snapshot failed", symbol=venue, error=repr(e), retry_in_s=delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, self.pcfg.reconnect_max_s)
