"""Kraken Futures websocket v1 on the replay server (``dm.replay``): how its websocket and REST
behave (Kraken Futures "WebSocket API v1" docs: subscribe, book, trade, ticker_lite).

* websocket ``/ws/v1``: the recorded ``info`` on connect; ``{"event":"subscribe","feed":"book",
  "product_ids":[..]}`` → the recorded ``subscribed`` frames then the feed's frames (``book``
  includes ``book_snapshot``, ``trade`` includes ``trade_snapshot``) for those products
  (case-insensitive). A ``heartbeat`` subscription is acknowledged; none was recorded.
* REST ``/derivatives/api/v3/instruments`` → recorded body (served by path).
* REST ``/api/history/v3/market/{tradeable}/executions`` (Kraken Futures "Market History" →
  "Get public execution events"; the same at ``/api/history/v2/...``, Kraken support "Market
  History - Executions"): the recorded trades of the product (``trade`` frames and the trades of
  ``trade_snapshot`` frames, once per ``uid``) as ``{"elements":[{"uid", "timestamp", "event":
  {"Execution": {"execution": {"uid", "makerOrder", "takerOrder", "timestamp", "quantity",
  "price", "markPrice", "limitFilled", "usdValue"}, "takerReducedQuantity": ""}}}], "len": N}``;
  ``since`` (ms, inclusive), ``before`` (ms, exclusive), ``sort`` ``asc``/``desc`` (default
  ``desc``), ``count`` (default 1000); more left: ``continuationToken`` in the body and the
  ``Next-Continuation-Token`` header, sent back as ``continuation_token`` (or
  ``continuationToken``). ``takerOrder.direction`` is the recorded ``side`` (the taker's,
  Kraken Futures websocket "trade"), the maker's the other; what the websocket does not carry
  (order uids, mark price, USD value) is empty; ``quantity``/``price`` are the recorded numbers'
  text as decimal strings.

Subscription key of a data frame: ``(feed without _snapshot, PRODUCT)``.
"""
from __future__ import annotations

import base64
import json
import re

import orjson
from aiohttp import web

from dm.replay import VenueReplay, json_error, loads_or_none

EXECUTIONS = re.compile(r"^/api/history/v[23]/market/([^/]+)/executions$")


def _order(tradeable: str, direction: str, t: dict) -> dict:
    return {"uid": "", "tradeable": tradeable, "direction": direction, "quantity": t["qty"], "timestamp": int(t["time"]),
            "limitPrice": t["price"], "orderType": "Limit", "reduceOnly": False, "lastUpdateTimestamp": int(t["time"])}


def execution_element(t: dict) -> dict:
    """A recorded websocket trade (numbers kept as text) as a public execution event."""
    taker = "Buy" if t["side"] == "buy" else "Sell"
    maker = "Sell" if taker == "Buy" else "Buy"
    pid = t["product_id"]
    return {"uid": t["uid"], "timestamp": int(t["time"]), "event": {"Execution": {"execution": {
        "uid": t["uid"], "makerOrder": _order(pid, maker, t), "takerOrder": _order(pid, taker, t), "timestamp": int(t["time"]),
        "quantity": t["qty"], "price": t["price"], "markPrice": "", "limitFilled": False, "usdValue": ""},
        "takerReducedQuantity": ""}}}


class KrakenFuturesReplay(VenueReplay):
    kind = "kraken_futures"
    ws_path = "/ws/v1"
    ws_exact = ("/ws/v1",)

    def __init__(self, server):
        super().__init__(server)
        self.by_key: dict[tuple, object] = {}  # (feed, PRODUCT) -> the recording that acked it
        self._trades: dict[str, list[dict]] | None = None  # PRODUCT -> recorded trades by time, built on first use

    def trades(self) -> dict[str, list[dict]]:
        if self._trades is None:
            out: dict[str, dict[str, dict]] = {}
            for rec in self.recs:
                for ev, key in zip(rec.events, rec.keys):
                    if not (isinstance(key, tuple) and key[0] == "trade"):
                        continue
                    obj = json.loads(ev.text, parse_float=str, parse_int=str)  # the numbers' text, exact
                    for t in obj.get("trades", [obj]):
                        if all(k in t for k in ("uid", "side", "time", "qty", "price", "product_id")):
                            out.setdefault(t["product_id"].upper(), {}).setdefault(t["uid"], t)
            self._trades = {p: sorted(d.values(), key=lambda t: (int(t["time"]), int(t.get("seq", 0)))) for p, d in out.items()}
        return self._trades

    def rest(self, request):
        m = EXECUTIONS.match(request.path)
        if m is None:
            return None
        q = request.query
        trades = self.trades().get(m.group(1).upper())
        if trades is None:
            return json_error(404, {"error": "not found", "result": "error"})
        try:
            since = int(q["since"]) if "since" in q else None
            before = int(q["before"]) if "before" in q else None
            count = int(q.get("count", "1000"))
            token = q.get("continuation_token") or q.get("continuationToken")
            skip = int(base64.b64decode(token)) if token else 0
        except ValueError:
            return json_error(400, {"error": "invalid argument", "result": "error"})
        sort = q.get("sort", "desc")
        if sort not in ("asc", "desc") or count < 1:
            return json_error(400, {"error": "invalid argument", "result": "error"})
        sel = [t for t in trades if (since is None or int(t["time"]) >= since) and (before is None or int(t["time"]) < before)]
        if sort == "desc":
            sel.reverse()
        page = sel[skip:skip + count]
        body = {"elements": [execution_element(t) for t in page], "len": len(page)}
        headers = {}
        if skip + count < len(sel):
            body["continuationToken"] = headers["Next-Continuation-Token"] = base64.b64encode(str(skip + count).encode()).decode()
        return web.Response(body=orjson.dumps(body), content_type="application/json", headers=headers)

    def index_frame(self, rec, ev) -> object:
        text = ev.text
        obj = loads_or_none(text)
        if isinstance(obj, dict):
            feed = obj.get("feed")
            if isinstance(feed, str) and "event" not in obj:
                base = feed[: -len("_snapshot")] if feed.endswith("_snapshot") else feed
                return (base, str(obj.get("product_id", "")).upper())
            event = obj.get("event")
            if event == "info" and rec.hello is None:
                rec.hello = text
            elif event == "subscribed":
                for p in obj.get("product_ids") or ():
                    rec.status.setdefault((obj.get("feed"), str(p).upper()), text)
        return None

    def add_recording(self, rec) -> None:
        super().add_recording(rec)
        for key in rec.status:
            self.by_key.setdefault(key, rec)

    def active(self) -> bool:
        return bool(self.by_key)

    async def on_message(self, conn, obj) -> None:
        # Kraken Futures "WebSocket API v1" docs: subscribe/unsubscribe, subscribed, error/alert.
        if not isinstance(obj, dict):
            await conn.send_text('{"event":"alert","message":"Bad websocket message"}')
            return
        event, feed, pids = obj.get("event"), obj.get("feed"), obj.get("product_ids")
        if event not in ("subscribe", "unsubscribe") or not isinstance(feed, str):
            await conn.send_text('{"event":"alert","message":"Bad websocket message"}')
            return
        if feed == "heartbeat":
            await conn.send_text(orjson.dumps({"event": event + "d", "feed": feed}).decode())
            return
        if not isinstance(pids, list) or not pids:
            await conn.send_text('{"event":"error","message":"Invalid product id"}')
            return
        groups: dict[int, tuple] = {}
        for p in pids:
            key = (feed, str(p).upper())
            rec = self.by_key.get(key)
            if rec is None:
                await conn.send_text('{"event":"error","message":"Invalid product id"}')
                continue
            groups.setdefault(id(rec), (rec, []))[1].append(key)
        for rec, keys in groups.values():
            keys.sort(key=rec.order.__getitem__)  # acks in recorded order
            if event == "subscribe":
                for key in keys:
                    await conn.send_text(rec.status[key])
                conn.add(rec, keys)
            else:
                await conn.send_text(orjson.dumps({"event": "unsubscribed", "feed": feed, "product_ids": [k[1] for k in keys]}).decode())
                conn.remove(rec, keys)
        if event == "subscribe":
            conn.subscription_known()
