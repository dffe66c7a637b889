"""Kraken spot websocket v1 on the replay server (``dm.replay``): how its websocket and REST
behave (Kraken "WebSocket API v1" docs: subscribe, subscriptionStatus, ping, heartbeat).

* websocket ``/``: the recorded ``systemStatus`` on connect; ``{"event":"subscribe","pair":[..],
  "subscription":{"name":"book","depth":1000}}`` → the recorded ``subscriptionStatus`` frames of
  those pairs (with the request's ``reqid``), then the recorded data frames of that channel
  (``book-1000``, ``ticker``, ``trade``, ...) and pairs. Heartbeats of the first recording a
  connection draws from are included. Each subscription draws from whichever loaded recording
  holds that channel/pair. ``{"event":"ping","reqid":N}`` → ``{"event":"pong","reqid":N}``;
  ``unsubscribe``.
* REST ``/0/public/AssetPairs`` → recorded body (served by path).

Subscription key of a data frame: ``(channelName, PAIR)``.
"""
from __future__ import annotations

import orjson

from dm.replay import HEARTBEAT_KEY, VenueReplay, loads_or_none


def with_reqid(ack: str, reqid: dict) -> str:
    """A recorded Kraken subscriptionStatus with the client's ``reqid`` added where Kraken puts
    it (keys sorted: after ``pair``, before ``status``); verbatim when the request had none."""
    if not reqid or '"reqid":' in ack:
        return ack
    j = ack.find(',"status":')
    if j < 0:
        return ack
    return ack[:j] + ',"reqid":' + orjson.dumps(reqid["reqid"]).decode() + ack[j:]


def channel_name(sub: dict) -> str | None:
    """Kraken v1 channelName for a subscription object: ``book-<depth>`` (default 10),
    ``ohlc-<interval>`` (default 1), else the name."""
    name = sub.get("name")
    if not isinstance(name, str):
        return None
    if name == "book":
        return f"book-{sub.get('depth', 10)}"
    if name == "ohlc":
        return f"ohlc-{sub.get('interval', 1)}"
    return name


class KrakenReplay(VenueReplay):
    kind = "kraken"
    ws_path = "/"
    ws_exact = ("/",)

    def __init__(self, server):
        super().__init__(server)
        self.by_key: dict[tuple, object] = {}  # (channelName, PAIR) -> the recording that acked it

    def index_frame(self, rec, ev) -> object:
        text = ev.text
        obj = loads_or_none(text)
        if isinstance(obj, list) and len(obj) >= 4 and isinstance(obj[-1], str) and isinstance(obj[-2], str):
            return (obj[-2], obj[-1].upper())
        if isinstance(obj, dict):
            event = obj.get("event")
            if event == "heartbeat":
                return HEARTBEAT_KEY
            if event == "systemStatus" and rec.hello is None:
                rec.hello = text
            elif event == "subscriptionStatus" and obj.get("status") == "subscribed":
                rec.status.setdefault((obj.get("channelName"), str(obj.get("pair", "")).upper()), text)
        return None

    def add_recording(self, rec) -> None:
        super().add_recording(rec)
        for key in rec.status:
            self.by_key.setdefault(key, rec)

    def active(self) -> bool:
        return bool(self.by_key)

    async def on_message(self, conn, obj) -> None:
        # Kraken "WebSocket API v1" docs: ping/pong, subscribe/unsubscribe, subscriptionStatus.
        event = obj.get("event") if isinstance(obj, dict) else None
        reqid = {"reqid": obj["reqid"]} if isinstance(obj, dict) and "reqid" in obj else {}
        if event == "ping":
            await conn.send_text(orjson.dumps({"event": "pong", **reqid}).decode())
            return
        if event not in ("subscribe", "unsubscribe"):
            await conn.send_text(orjson.dumps({"errorMessage": "Unsupported event", "event": "error", **reqid}).decode())
            return
        sub = obj.get("subscription")
        pairs = obj.get("pair")
        chan = channel_name(sub) if isinstance(sub, dict) else None
        if chan is None or not isinstance(pairs, list) or not pairs:
            await conn.send_text(orjson.dumps({"errorMessage": "Subscription name or pair missing", "event": "subscriptionStatus",
                                               "status": "error", "subscription": sub, **reqid}).decode())
            return
        groups: dict[int, tuple] = {}
        for p in pairs:
            key = (chan, str(p).upper())
            rec = self.by_key.get(key)
            if rec is None:
                await conn.send_text(orjson.dumps({"errorMessage": f"Currency pair not supported {p}", "event": "subscriptionStatus",
                                                   "pair": p, "status": "error", "subscription": sub, **reqid}).decode())
                continue
            groups.setdefault(id(rec), (rec, []))[1].append(key)
        for rec, keys in groups.values():
            keys.sort(key=rec.order.__getitem__)  # acks in recorded order
            for key in keys:
                if event == "subscribe":
                    await conn.send_text(with_reqid(rec.status[key], reqid))
                else:
                    st = orjson.loads(rec.status[key])
                    st["status"] = "unsubscribed"
                    await conn.send_text(orjson.dumps({**st, **reqid}).decode())
        for rec, keys in groups.values():
            if event == "subscribe":
                if conn.heartbeat_from is None:
                    conn.heartbeat_from = rec
                    keys = keys + [HEARTBEAT_KEY]
                conn.add(rec, keys)
            else:
                conn.remove(rec, keys)
        if event == "subscribe":
            conn.subscription_known()
