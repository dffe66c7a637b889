"""Binance USD-M futures provider: the spot provider (``dm.venues.binance.provider``) on
``fstream``/``fapi`` with the futures book rules.

Streams are selected in the URL (Binance USD-M Futures docs, "WebSocket Market Streams →
Connect": ``wss://fstream.binance.com/stream?streams=<symbol>@<type>/...``, symbols lower
case): ``aggTrade``, ``bookTicker``, ``depth@100ms`` (or ``depth``/``depth@250ms``/
``depth@500ms``), ``markPrice``/``markPrice@1s``, ``kline_<interval>``, ``forceOrder``. The server pings every
few minutes and aiohttp answers with a pong (the docs' keep-alive); a connection is cut after
24 h and the base class reconnects. Reference data from REST ``GET /fapi/v1/exchangeInfo``
(``BinanceFuturesSymbology``). With a depth stream the worker keeps an L2 book per symbol by
the futures procedure ("How to manage a local order book correctly": ``FuturesDepthSync``;
snapshots from ``GET /fapi/v1/depth?symbol=S&limit=N``, N in 5, 10, 20, 50, 100, 500, 1000); a
break of ``pu`` continuity is one gap in the ledger and a resync from a fresh snapshot.

Output: aggTrade → TRADE, bookTicker → BBO (the book then publishes DEPTH only), markPrice →
STATISTICS (mark, index, estimated settlement price, funding rate), forceOrder → STATISTICS
LIQUIDATION, a closed kline → BAR, the
book's BOOK_DELTA records to the persist queue. A value the codec rejects alone is dead-lettered with its text.

Sizes: each instrument's ``size_precision`` is the decimals of ``LOT_SIZE.stepSize``
(``SymbolInfo.size_precision``, in the stats file as ``size_precisions``); the codec is
registered at :data:`CODEC_SIZE_PRECISION` until books and channels are per-instrument scale
(``dm._book`` stamps 1e-9 on DEPTH/BBO today), as the Bybit worker does.
"""
from __future__ import annotations

from dm import log as dmlog
from dm._codec import KINDS
from dm._feed import FAST_PREV_LINK
from dm.providers.base import Books, resolve_instruments
from dm.symbology import for_provider
from dm.venues import venue
from dm.venues.binance.provider import BinanceProvider
from dm.venues.binance_futures.booksync import FuturesDepthSync

log = dmlog.get("dm.worker.binance_futures")

K_DEPTH = KINDS["depthUpdate"]
CODEC_SIZE_PRECISION = 9


class BinanceFuturesProvider(BinanceProvider):
    depth_path = "/fapi/v1/depth"
    sync_class = FuturesDepthSync
    venue_kind = "binance_futures"

    def __init__(self, cfg, pcfg):
        super().__init__(cfg, pcfg)
        self.size_precisions: dict[str, int | None] = {}
        self.value_errors = 0

    async def resolve_symbols(self) -> None:
        """As the spot worker, and keeps each instrument's size_precision (stats)."""
        default = self.cfg.quote_aliases if self.global_quote_aliases else {}
        aliases = self.pcfg.extra.get("quote_aliases", default)
        sym = for_provider(self.pcfg.kind, await self.fetch_reference(), aliases, exchange=self.exchange)
        self.venue_symbols = self.select_symbols(sym)
        self.instrument_ids = await resolve_instruments(self.cfg, self.pcfg, self.venue_symbols)
        self.venue_of = {self.instrument_ids[c]: v for c, v in self.venue_symbols.items()}
        self.size_precisions = {c: sym.info(v).size_precision for c, v in self.venue_symbols.items()}

    def make_codec(self):
        codec = venue(self.venue_kind).codec_class()(self.pcfg.publisher_id)
        for canonical, v in self.venue_symbols.items():
            codec.add_symbol(v, self.instrument_ids[canonical], CODEC_SIZE_PRECISION)
        if any(ch.startswith("depth") for ch in self.pcfg.channels):
            # bookTicker is Binance's own BBO: the book then publishes DEPTH only
            self.books = Books(self, publish_bbo="bookTicker" not in self.pcfg.channels)
            self.book_kinds = frozenset({K_DEPTH})
            self.fast_book = (K_DEPTH, FAST_PREV_LINK)   # steady-state diffs in C (dm._feed): pu = previous u
            self.snapshot_limit = int(self.pcfg.extra.get("snapshot_limit", 1000))
            self._snapshot_tasks = {}
            for iid in self.instrument_ids.values():
                self.books.syncs[iid] = self.sync_class(iid, self.pcfg.publisher_id)
        return codec

    def stats(self) -> dict:
        d = super().stats()
        d["value_errors"] = self.value_errors
        d["size_precisions"] = self.size_precisions
        return d

    def on_book_frame(self, kind: int, ts_recv: int) -> None:
        c = self.codec
        iid = c.instrument_id
        act = self.books.syncs[iid].on_diff(c.first_seq, c.last_seq, c.output(), c.prev_seq)
        self.books.handle(iid, act, c.last_seq, ts_recv)
