"""Kraken Futures trade gap filler: ``GET /api/history/v3/market/{tradeable}/executions``
(Kraken Futures API, "Market History" → "Get public execution events": "Lists trades for a
market"; v2 of the same path in Kraken support "Market History - Executions").

The endpoint's rules used here: ``since`` / ``before`` (ms), ``sort=asc`` (chronological),
``count`` (at most ``page_limit`` a page), ``continuation_token`` (the ``Next-Continuation-Token``
header / ``continuationToken`` of the previous answer) until none is given. Each element's
``event.Execution.execution`` holds ``uid``, ``timestamp`` (ms), ``quantity``, ``price`` (decimal
strings) and ``takerOrder.direction`` (``Buy``/``Sell``: the taker's side, what the websocket
``trade`` feed calls ``side``). A gap's ns window ``[start_ns, end_ns)`` becomes ``since =
ceil(start_ns / 1e6)``, ``before = ceil(end_ns / 1e6)``.

Decoding: each execution goes through ``KrakenFuturesCodec`` as the websocket ``trade`` message
it would have been (Kraken Futures "WebSocket API v1" → "trade"), with ``seq`` 0: the REST
answer has no ``seq``, which the live codec stores as ``trade_id``. So a refetched trade cannot
meet its live row on the storage's unique key; instead the filler skips every execution whose
(``ts_event``, price, size, side) is already stored for the instrument in the window (counted,
so two equal fills both count), and stores the others with ``trade_id`` = a 63-bit hash of the
execution ``uid`` (``uid_trade_id``): two equal fills in one millisecond stay two rows, and a
second fill of the same window stores nothing.
"""
from __future__ import annotations

import hashlib
import time
from collections import Counter
from typing import Iterator

import numpy as np

from dm.errors import BackfillError
from dm.venues.restfill import VenueRestFiller, trade_array

PATH = "/api/history/v3/market/{}/executions"


def uid_trade_id(uid: str) -> int:
    """The stored ``trade_id`` of a refetched execution: blake2b-64 of its ``uid``, in 1..2^63-1."""
    h = int.from_bytes(hashlib.blake2b(str(uid).encode(), digest_size=8).digest(), "little") & (2**63 - 1)
    return h or 1


def _num(text) -> bytes:
    """A decimal string as a JSON number's text (refused unless plain digits and one point)."""
    s = str(text)
    body = s[1:] if s[:1] == "-" else s
    if not body or body.count(".") > 1 or not body.replace(".", "").isdigit():
        raise BackfillError(f"kraken_futures executions: not a decimal number {s!r}")
    return s.encode()


class KrakenFuturesGapFiller(VenueRestFiller):
    KIND = "kraken_futures"
    PUBLIC_REST_URL = "https://futures.kraken.com"

    def pages(self, inst, start_ns: int, end_ns: int) -> Iterator[tuple[np.ndarray, int]]:
        codec = self.codec(inst)
        pid = inst.venue_symbol
        stored = self.st.fetch("trades", inst.instrument_id)
        stored = stored[(stored["ts_event"] >= start_ns) & (stored["ts_event"] < end_ns)]
        have = Counter(zip(stored["ts_event"].tolist(), stored["price"].tolist(), stored["size"].tolist(), stored["side"].tolist()))
        params = {"since": -(-start_ns // 1_000_000), "before": -(-end_ns // 1_000_000), "sort": "asc",
                  "count": self.page_limit}
        path = PATH.format(pid.lower())
        while True:
            body, obj = self.get_json(path, params)
            if not isinstance(obj, dict) or not isinstance(obj.get("elements"), list):
                raise BackfillError(f"kraken_futures {path}: unexpected answer {body[:200]!r}")
            ts_recv = time.time_ns()
            out = []
            for el in obj["elements"]:
                try:
                    ex = el["event"]["Execution"]["execution"]
                    tid = uid_trade_id(ex["uid"])
                    side = {"Buy": b"buy", "Sell": b"sell"}[ex["takerOrder"]["direction"]]
                    frame = (b'{"feed":"trade","product_id":"%s","side":"%s","type":"fill","seq":0,"time":%d,"qty":%s,"price":%s}'
                             % (pid.encode(), side, int(ex["timestamp"]), _num(ex["quantity"]), _num(ex["price"])))
                except (KeyError, TypeError, ValueError) as e:
                    raise BackfillError(f"kraken_futures {path}: unexpected element ({e!r}): {str(el)[:200]}") from None
                codec.decode(frame, ts_recv)
                for r in trade_array([bytes(codec.output())]):
                    k = (int(r["ts_event"]), int(r["price"]), int(r["size"]), int(r["side"]))
                    if have[k] > 0:
                        have[k] -= 1  # the live feed (or an earlier fill) stored this one
                    elif start_ns <= k[0] < end_ns:
                        r["trade_id"] = tid
                        out.append(r.tobytes())
            yield trade_array(out), len(body)
            token = obj.get("continuationToken")
            if not token or not obj["elements"]:
                return
            params = {**params, "continuation_token": token}
