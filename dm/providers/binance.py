"""Binance spot provider: combined streams over one websocket.

Streams are selected in the URL (Binance Spot API, "WebSocket Streams" → "Combined streams":
``/stream?streams=<symbol>@<type>/...``, symbols lower case). Reference data (base/quote assets
for symbology) comes from REST ``GET /api/v3/exchangeInfo``.
"""
from __future__ import annotations

import asyncio

import aiohttp

from dm import log as dmlog
from dm._codec import BinanceCodec
from dm.errors import SymbologyError
from dm.providers.base import Provider, resolve_instruments
from dm.symbology import fetch_reference, for_provider

log = dmlog.get("dm.worker.binance")


class BinanceProvider(Provider):
    async def fetch_reference(self) -> bytes:
        """exchangeInfo with retries: the worker cannot map symbols without it."""
        delay = self.pcfg.reconnect_min_s
        while True:
            try:
                return await fetch_reference("binance", self.pcfg.rest_url, self.session)
            except (SymbologyError, aiohttp.ClientError, OSError, asyncio.TimeoutError) as e:
                log.warning("exchangeInfo fetch failed", error=repr(e), retry_in_s=delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.pcfg.reconnect_max_s)

    async def resolve_symbols(self) -> None:
        sym = for_provider("binance", await self.fetch_reference(), self.cfg.quote_aliases, exchange=self.exchange)
        self.venue_symbols = sym.select(self.pcfg.symbols)
        self.instrument_ids = await resolve_instruments(self.cfg, self.pcfg, self.venue_symbols)

    def make_codec(self):
        return BinanceCodec(self.pcfg.publisher_id, {v: self.instrument_ids[c] for c, v in self.venue_symbols.items()})

    def stream_url(self) -> str:
        streams = [f"{v.lower()}@{ch}" for v in self.venue_symbols.values() for ch in self.pcfg.channels]
        return f"{self.pcfg.ws_url}?streams=" + "/".join(streams)
