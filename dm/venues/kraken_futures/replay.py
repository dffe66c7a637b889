"""Kraken Futures websocket v1 on the replay server (``dm.replay``): how its websocket and REST
behave (Kraken Futures "WebSocket API v1" docs: subscribe, book, trade, ticker_lite).

* websocket ``/ws/v1``: the recorded ``info`` on connect; ``{"event":"subscribe","feed":"book",
  "product_ids":[..]}`` → the recorded ``subscribed`` frames then the feed's frames (``book``
  includes ``book_snapshot``, ``trade`` includes ``trade_snapshot``) for those products
  (case-insensitive). A ``heartbeat`` subscription is acknowledged; none was recorded.
* REST ``/derivatives/api/v3/instruments`` → recorded body (served by path).

Subscription key of a data frame: ``(feed without _snapshot, PRODUCT)``.
"""
from __future__ import annotations

import orjson

from dm.replay import VenueReplay, loads_or_none


class KrakenFuturesReplay(VenueReplay):
    kind = "kraken_futures"
    ws_path = "/ws/v1"
    ws_exact = ("/ws/v1",)

    def __init__(self, server):
        super().__init__(server)
        self.by_key: dict[tuple, object] = {}  # (feed, PRODUCT) -> the recording that acked it

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
