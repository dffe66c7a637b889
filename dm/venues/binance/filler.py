"""Binance spot trade gap filler: ``GET /api/v3/aggTrades`` (Binance Spot API docs, "Market Data
endpoints" → "Compressed/Aggregate trades list").

The endpoint's rules used here: parameters ``symbol``, ``fromId`` (aggregate trade id to start
from, INCLUSIVE), ``startTime`` / ``endTime`` (ms, INCLUSIVE; "If both startTime and endTime are
sent, time between startTime and endTime must be less than 1 hour"), ``limit`` (default 500,
max 1000). Each element is ``{"a": aggTradeId, "p": price, "q": qty, "f": firstTradeId, "l":
lastTradeId, "T": ms, "m": buyerIsMaker, "M": bestMatch}``, ascending by ``a``.

A gap of aggregate trade ids (kind ``binance.agg_trade_id``, ``GapUnits.SEQUENCE``) is fetched
by ``fromId`` alone (``pages_by_id``). Paging of a time window: per window of at most 1 h (``startTime``..``endTime``, ``endTime - startTime`` ≤
3,599,999 ms), the first page by time, then by ``fromId`` = last ``a`` + 1 until a page is short
or passes ``endTime`` (aggregate ids are consecutive per symbol, so this is exact by id
continuity). A gap's ns window ``[start_ns, end_ns)`` becomes ``startTime = ceil(start_ns /
1e6)``, ``endTime = floor((end_ns - 1) / 1e6)`` (dm's TRADE ``ts_event`` is ``T`` in ns).

Decoding: each element goes through ``BinanceCodec`` as the raw ``aggTrade`` event it is the
payload of (``{"e":"aggTrade","s":SYMBOL, ...}``, Binance "WebSocket Streams" → "Aggregate Trade
Streams"), so a refetched trade is byte for byte the TRADE record the live stream gives:
``trade_id`` = ``a``, ``ts_event`` = ``T``, side from ``m``.
"""
from __future__ import annotations

import time
from typing import Iterator

import numpy as np
import orjson

from dm.errors import BackfillError
from dm.venues.restfill import VenueRestFiller, trade_array

HOUR_MS = 3_600_000
PATH = "/api/v3/aggTrades"


class BinanceGapFiller(VenueRestFiller):
    KIND = "binance"
    PUBLIC_REST_URL = "https://api.binance.com"

    def pages_by_id(self, inst, first_id: int, last_id: int) -> Iterator[tuple[np.ndarray, int]]:
        """A gap of aggregate trade ids (``binance.agg_trade_id``): ``fromId`` paging from
        ``first_id`` until ``last_id`` is passed; exact, as the ids are consecutive per symbol."""
        codec = self.codec(inst)
        sym = inst.venue_symbol.upper()
        limit = min(self.page_limit, 1000)
        nxt = first_id
        while nxt <= last_id:
            body, page = self.get_json(PATH, {"symbol": sym, "fromId": nxt, "limit": limit})
            if not isinstance(page, list):
                raise BackfillError(f"binance {PATH}: expected a JSON array, got {body[:200]!r}")
            ts_recv = time.time_ns()
            out = []
            for el in page:
                if not isinstance(el, dict) or "a" not in el or "T" not in el:
                    raise BackfillError(f"binance {PATH}: unexpected element {el!r}")
                if first_id <= int(el["a"]) <= last_id:
                    codec.decode(orjson.dumps({"e": "aggTrade", "E": el["T"], "s": sym, **el}), ts_recv)
                    out.append(bytes(codec.output()))
            yield trade_array(out), len(body)
            if len(page) < limit:
                return
            nxt = int(page[-1]["a"]) + 1

    def pages(self, inst, start_ns: int, end_ns: int) -> Iterator[tuple[np.ndarray, int]]:
        codec = self.codec(inst)
        sym = inst.venue_symbol.upper()
        lo = -(-start_ns // 1_000_000)
        hi = (end_ns - 1) // 1_000_000
        limit = min(self.page_limit, 1000)
        a = lo
        while a <= hi:
            b = min(a + HOUR_MS - 1, hi)
            params = {"symbol": sym, "startTime": a, "endTime": b, "limit": limit}
            while True:
                body, page = self.get_json(PATH, params)
                if not isinstance(page, list):
                    raise BackfillError(f"binance {PATH}: expected a JSON array, got {body[:200]!r}")
                ts_recv = time.time_ns()
                out, last_id, past = [], None, False
                for el in page:
                    if not isinstance(el, dict) or "a" not in el or "T" not in el:
                        raise BackfillError(f"binance {PATH}: unexpected element {el!r}")
                    last_id = int(el["a"])
                    if not a <= int(el["T"]) <= b:
                        past = past or int(el["T"]) > b
                        continue
                    codec.decode(orjson.dumps({"e": "aggTrade", "E": el["T"], "s": sym, **el}), ts_recv)
                    out.append(bytes(codec.output()))
                yield trade_array(out), len(body)
                if len(page) < limit or past or last_id is None:
                    break
                params = {"symbol": sym, "fromId": last_id + 1, "limit": limit}
            a = b + 1
