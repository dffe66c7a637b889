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

Subscription key of a frame: its stream name, lower case.
"""
from __future__ import annotations

from urllib.parse import SplitResult, parse_qs

import orjson

from dm.replay import VenueReplay, json_error, json_response, loads_or_none

DEPTH_PATHS = ("/api/v1/depth", "/api/v3/depth")


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

    def rest(self, request):
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
