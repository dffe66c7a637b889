"""Kraken spot trade gap filler: ``GET /0/public/Trades`` (Kraken REST API, "Market Data" →
"Get Recent Trades").

The endpoint's rules used here: ``pair`` (the pair's altname is accepted: dm sends the v1
websocket name without its slash, ``XBT/USD`` → ``XBTUSD``), ``since`` ("Return trade data since
given timestamp": ns), ``count`` (1..1000). The answer is ``{"error": [...], "result": {"<pair
key>": [[price, volume, time, buy/sell, market/limit, miscellaneous, trade_id], ...], "last":
"<ns>"}}`` where ``last`` is the ``since`` of the next page.

Paging: ``since = start_ns - 1`` (trades strictly after it), then ``since = last - 1`` while a
page is full and has not passed ``end_ns``: the next page starts again at the last page's final
timestamp, so trades sharing it are never skipped (the ones fetched twice are the same TRADE
record and the storage keeps one); a page whose trades all share one timestamp moves on with
``since = last``.

Decoding: ``time`` is read as its decimal text (never as a float: Kraken gives up to 7 decimals
of seconds, which a float cannot hold), and each page goes through ``KrakenCodec`` as the v1
websocket ``trade`` frame it would have been (``[0, [[price, volume, "time", side, type, misc],
...], "trade", WSNAME]``, Kraken "WebSocket API v1" → "trade"), so a refetched trade is the same
TRADE record as the live one: ``ts_event`` = ``time``, side, price, size; ``trade_id`` 0 (the v1
websocket has no id; the REST id is not stored so that the live and the refetched trade are one
row).
"""
from __future__ import annotations

import time
from decimal import Decimal
from typing import Iterator

import numpy as np
import orjson

from dm.errors import BackfillError
from dm.venues.restfill import VenueRestFiller, trade_array

PATH = "/0/public/Trades"


class KrakenGapFiller(VenueRestFiller):
    KIND = "kraken"
    PUBLIC_REST_URL = "https://api.kraken.com"

    def pages(self, inst, start_ns: int, end_ns: int) -> Iterator[tuple[np.ndarray, int]]:
        codec = self.codec(inst)
        ws = inst.venue_symbol
        pair = ws.replace("/", "")
        limit = min(self.page_limit, 1000)
        since = start_ns - 1
        while True:
            body, obj = self.get_json(PATH, {"pair": pair, "since": since, "count": limit}, parse_float=str)
            if not isinstance(obj, dict) or obj.get("error") or not isinstance(obj.get("result"), dict):
                raise BackfillError(f"kraken {PATH}: {(obj.get('error') if isinstance(obj, dict) else None) or body[:200]!r}")
            res = obj["result"]
            rows = next((v for k, v in res.items() if k != "last"), [])
            ts_recv = time.time_ns()
            keep, past = [], False
            for r in rows:
                if not isinstance(r, list) or len(r) < 4:
                    raise BackfillError(f"kraken {PATH}: unexpected trade {r!r}")
                t = str(r[2])
                t_ns = int(Decimal(t).scaleb(9))
                if t_ns >= end_ns:
                    past = True
                    continue
                if t_ns >= start_ns:
                    keep.append([r[0], r[1], t, *r[3:6]])
            out = []
            if keep:
                codec.decode(orjson.dumps([0, keep, "trade", ws]), ts_recv)
                out.append(bytes(codec.output()))
            yield trade_array(out), len(body)
            last = int(res.get("last", since))
            if len(rows) < limit or past or not rows:
                return
            since = last - 1 if last - 1 > since else last
