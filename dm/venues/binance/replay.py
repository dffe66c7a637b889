"""Binance spot on the replay server (``dm.replay``): how its websocket and REST behave
(Binance Spot API docs, "WebSocket Streams" and REST "Market Data endpoints").

* ``/stream?streams=a@b/c@d`` combined streams: frames ``{"stream":..,"data":..}`` whose
  ``stream`` is in the requested set (case-insensitive); ``/ws/<stream>[/<stream>...]`` and
  ``/ws`` raw streams: the ``data`` object only, cut verbatim from the recorded frame.
* live subscription messages ("Live Subscribing/Unsubscribing to streams"):
  ``{"method":"SUBSCRIBE","params":[..],"id":N}`` → ``{"result":null,"id":N}`` then the
  streams' frames; ``UNSUBSCRIBE``; ``LIST_SUBSCRIPTIONS``.
* REST ``/api/v1/depth`` and ``/api/v3/depth?symbol=S&limit=N`` → the recorded snapshot body
  for ``S`` (several recorded: served in order, then the latest again; ``limit`` is ignored),
  HTTP 400 ``{"code":-1121,"msg":"Invalid symbol."}`` for a symbol never recorded (-1102 when
  ``symbol`` is missing); ``/api/v3/exchangeInfo`` → recorded body (served by path).
* REST ``/api/v3/aggTrades?symbol=S[&fromId=A][&startTime=T0][&endTime=T1][&limit=N]`` (Binance
  Spot API docs, "Compressed/Aggregate trades list"): the recorded ``aggTrade`` frames of ``S``
  as ``[{"a","p","q","f","l","T","m","M"}, ...]`` ascending by ``a`` (values as recorded);
  ``fromId`` inclusive, ``startTime``/``endTime`` ms inclusive (more than 1 hour apart: HTTP 400
  ``-1127``), ``limit`` default 500, 1..1000 (else ``-1130``); none of the three: the most recent
  ``limit`` trades; ``fromId`` with a time bound is refused (``-1128``), as the venue does.

Subscription key of a frame: its stream name, lower case.
"""
from __future__ import annotations

from urllib.parse import SplitResult, parse_qs

import orjson

from dm.replay import VenueReplay, json_error, json_response, loads_or_none

DEPTH_PATHS = ("/api/v1/depth", "/api/v3/depth")
AGG_TRADES_PATH = "/api/v3/aggTrades"
AGG_KEYS = ("a", "p", "q", "f", "l", "T", "m", "M")


def combined_data(text: str) -> str:
    """The ``data`` value of a combined-stream frame, cut verbatim (no re-serialisation)."""
    if text.startswith('{"stream":"') and text.endswith("}"):
        j = text.find('","data":', 11)
        if j > 0:
            return text[j + 9 : -1]
    return text


class BinanceReplay(VenueReplay):
    kind = "binance"
    ws_path = "/stream"
    ws_exact = ("/stream",)
    ws_prefixes = ("/ws",)
    raw_prefix = "/ws"              # raw streams: <raw_prefix>[/<stream>...]
    depth_paths = DEPTH_PATHS       # REST depth snapshot paths

    def __init__(self, server):
        super().__init__(server)
        self.depth: dict[str, list[bytes]] = {}  # symbol (upper case) -> recorded snapshot bodies
        self._agg: dict[str, list[dict]] | None = None  # symbol -> recorded aggTrades by id, built on first use

    def index_frame(self, rec, ev) -> object:
        text = ev.text
        if text.startswith('{"stream":"'):
            j = text.find('"', 11)
            return text[11:j].lower() if j > 0 else None
        obj = loads_or_none(text)
        stream = obj.get("stream") if isinstance(obj, dict) else None
        return stream.lower() if isinstance(stream, str) and stream else None

    def add_rest(self, url: SplitResult, body: bytes) -> bool:
        if url.path.endswith("/depth"):
            sym = (parse_qs(url.query).get("symbol") or [""])[0].upper()
            if sym:
                self.depth.setdefault(sym, []).append(body)
                return True
        return False

    def loaded(self) -> bool:
        return bool(self.recs or self.depth)

    def agg_trades(self) -> dict[str, list[dict]]:
        """Symbol (upper case) → its recorded aggregate trades, REST shape, ascending by ``a``
        (a trade recorded twice, e.g. by two connections, once)."""
        if self._agg is None:
            agg: dict[str, dict[int, dict]] = {}
            for rec in self.recs:
                for ev, key in zip(rec.events, rec.keys):
                    if not isinstance(key, str) or not key.endswith("@aggtrade"):
                        continue
                    obj = loads_or_none(ev.text)
                    d = obj.get("data") if isinstance(obj, dict) else None
                    if isinstance(d, dict) and isinstance(d.get("s"), str) and all(k in d for k in AGG_KEYS):
                        agg.setdefault(d["s"].upper(), {}).setdefault(int(d["a"]), {k: d[k] for k in AGG_KEYS})
            self._agg = {s: [t[a] for a in sorted(t)] for s, t in agg.items()}
        return self._agg

    def rest_agg_trades(self, request):
        q = request.query
        sym = q.get("symbol", "").upper()
        if not sym:
            return json_error(400, {"code": -1102, "msg": "Mandatory parameter 'symbol' was not sent, was empty/null, or malformed."})
        trades = self.agg_trades().get(sym)
        if trades is None and sym not in self.depth:
            return json_error(400, {"code": -1121, "msg": "Invalid symbol."})
        trades = trades or []
        try:
            limit = int(q.get("limit", "500"))
            from_id = int(q["fromId"]) if "fromId" in q else None
            t0 = int(q["startTime"]) if "startTime" in q else None
            t1 = int(q["endTime"]) if "endTime" in q else None
        except ValueError:
            return json_error(400, {"code": -1100, "msg": "Illegal characters found in a parameter."})
        if not 1 <= limit <= 1000:
            return json_error(400, {"code": -1130, "msg": "Data sent for parameter 'limit' is not valid."})
        if from_id is not None and (t0 is not None or t1 is not None):
            return json_error(400, {"code": -1128, "msg": "Combination of optional parameters invalid."})
        if t0 is not None and t1 is not None and t1 - t0 >= 3_600_000:
            return json_error(400, {"code": -1127, "msg": "More than 1 hours between startTime and endTime."})
        if from_id is not None:
            out = [t for t in trades if t["a"] >= from_id][:limit]
        elif t0 is not None or t1 is not None:
            out = [t for t in trades if (t0 is None or t["T"] >= t0) and (t1 is None or t["T"] <= t1)][:limit]
        else:
            out = trades[-limit:]
        return json_response(orjson.dumps(out))

    def rest(self, request):
        if request.path == AGG_TRADES_PATH:
            return self.rest_agg_trades(request)
        if request.path not in self.depth_paths:
            return None
        sym = request.query.get("symbol", "").upper()
        if not sym:
            return json_error(400, {"code": -1102, "msg": "Mandatory parameter 'symbol' was not sent, was empty/null, or malformed."})
        bodies = self.depth.get(sym)
        if not bodies:
            return json_error(400, {"code": -1121, "msg": "Invalid symbol."})
        return json_response(self.server.next_body(("depth", sym), bodies))

    def connect(self, request) -> tuple[bool, list[str]]:
        path = request.path
        if path == self.ws_path:
            streams = request.query.get("streams", "")
            return False, streams.split("/") if streams else []
        return True, [s for s in path[len(self.raw_prefix):].split("/") if s]      # /ws[/<stream>...]: raw streams

    def subscribe_url_streams(self, conn, streams) -> None:
        want = {s.lower() for s in streams}
        for rec in self.recs:
            keys = want & rec.streams
            if keys:
                conn.add(rec, keys)

    async def on_message(self, conn, obj) -> None:
        # Binance "WebSocket Streams" docs, "Live Subscribing/Unsubscribing to streams".
        if not isinstance(obj, dict):
            await conn.send_text('{"code":3,"msg":"Invalid JSON"}')
            return
        method, params, rid = obj.get("method"), obj.get("params"), obj.get("id")
        if method in ("SUBSCRIBE", "UNSUBSCRIBE"):
            if not isinstance(params, list) or not all(isinstance(p, str) for p in params):
                await conn.send_text(orjson.dumps({"code": 2, "msg": "Invalid request: params must be a list of stream names", "id": rid}).decode())
                return
            await conn.send_text(orjson.dumps({"result": None, "id": rid}).decode())
            if method == "SUBSCRIBE":
                self.subscribe_url_streams(conn, params)
                conn.subscription_known()
            else:
                for rec in self.recs:
                    conn.remove(rec, {p.lower() for p in params})
        elif method == "LIST_SUBSCRIPTIONS":
            subs = sorted(set().union(*(t.filter for t in conn.tracks.values())))
            await conn.send_text(orjson.dumps({"result": subs, "id": rid}).decode())
        else:
            await conn.send_text(orjson.dumps({"code": 2, "msg": f"Invalid request: unknown method {method!r}", "id": rid}).decode())

    def raw_text(self, text: str) -> str:
        return combined_data(text)
