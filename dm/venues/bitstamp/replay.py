"""Bitstamp websocket API v2 on the replay server (``dm.replay``): how its websocket and REST behave
(Bitstamp WebSocket API v2 docs: "Subscriptions" ``bts:subscribe`` / ``bts:unsubscribe``,
``bts:heartbeat``; REST API docs: "Order book", "Trading pairs info").

* websocket ``/bitstamp`` (the live venue answers on ``/`` of ``ws.bitstamp.net``; on the replay
  server ``/`` is Kraken v1's, so Bitstamp has its own path): ``{"event":"bts:subscribe",
  "data":{"channel":C}}`` → the recorded ``bts:subscription_succeeded`` of ``C`` (one in the
  recorded form when none was recorded) then the recorded frames of ``C``; a channel nothing
  recorded → ``bts:error``. ``bts:unsubscribe`` → ``bts:unsubscription_succeeded`` and stops
  ``C`` (a later subscribe resumes it where it was: each recorded frame is sent once).
  ``{"event":"bts:heartbeat"}`` → ``{"event":"bts:heartbeat","channel":"","data":{"status":"success"}}``.
  A recorded ``bts:request_reconnect`` (fault injection: the venue asks clients to reconnect before
  maintenance) is sent, at its recorded place, to the first connection whose subscriptions
  reach it, and to no later one: the client reconnects and the replay goes on on the new
  connection instead of asking again forever.
* REST ``/api/v2/order_book/{pair}`` and ``/api/v2/trading-pairs-info/`` → the recorded bodies,
  served by path by the core (several recorded bodies in order, then the last again).

Subscription key of a data frame: its ``channel`` (read from the text when a frame is not JSON,
so a corrupted frame is sent where it was recorded).
"""
from __future__ import annotations

import re

import orjson

from dm.replay import VenueReplay, loads_or_none

_CHANNEL = re.compile(r'"channel"\s*:\s*"([^"\\]+)"')


class BitstampReplay(VenueReplay):
    kind = "bitstamp"
    ws_path = "/bitstamp"
    ws_exact = ("/bitstamp", "/bitstamp/")

    def __init__(self, server):
        super().__init__(server)
        self.by_channel: dict[str, object] = {}   # channel -> the recording holding it
        self.reconnects: dict[int, list] = {}     # id(rec) -> keys of its bts:request_reconnect frames
        self.reconnects_sent: set = set()

    def index_frame(self, rec, ev) -> object:
        obj = loads_or_none(ev.text)
        if not isinstance(obj, dict):
            m = _CHANNEL.search(ev.text)
            return m.group(1) if m else None
        ch = obj.get("channel")
        event = obj.get("event")
        if event == "bts:subscription_succeeded" and isinstance(ch, str):
            rec.status.setdefault(ch, ev.text)
            return None
        if event == "bts:request_reconnect":
            keys = self.reconnects.setdefault(id(rec), [])
            keys.append(("bts:request_reconnect", id(rec), len(keys)))
            return keys[-1]
        if isinstance(ch, str) and ch and isinstance(event, str) and not event.startswith("bts:"):
            return ch
        return None

    def add_recording(self, rec) -> None:
        super().add_recording(rec)
        for key in list(rec.status) + list(rec.streams):
            if isinstance(key, str):
                self.by_channel.setdefault(key, rec)

    def active(self) -> bool:
        return bool(self.by_channel)

    async def on_message(self, conn, obj) -> None:
        if not isinstance(obj, dict) or not isinstance(obj.get("event"), str):
            await conn.send_text('{"event":"bts:error","channel":"","data":{"code":null,"message":"Incorrect JSON format."}}')
            return
        event = obj["event"]
        if event == "bts:heartbeat":
            await conn.send_text('{"event":"bts:heartbeat","channel":"","data":{"status":"success"}}')
            return
        data = obj.get("data") if isinstance(obj.get("data"), dict) else {}
        ch = data.get("channel")
        rec = self.by_channel.get(ch) if isinstance(ch, str) else None
        if event not in ("bts:subscribe", "bts:unsubscribe") or rec is None:
            await conn.send_text(orjson.dumps({"event": "bts:error", "channel": ch if isinstance(ch, str) else "",
                                               "data": {"code": None, "message": "Bad subscription string."}}).decode())
            if event == "bts:subscribe":
                conn.subscription_known()
            return
        if event == "bts:subscribe":
            await conn.send_text(rec.status.get(ch) or orjson.dumps(
                {"event": "bts:subscription_succeeded", "channel": ch, "data": {}}).decode())
            extra = [k for k in self.reconnects.get(id(rec), ()) if k not in self.reconnects_sent]
            self.reconnects_sent.update(extra)
            # a channel with no recorded frame (sgbeur's book in 2022-01-05) is acknowledged but
            # not added: a track whose only channel has no frame runs to the end of the recording
            # at once, and every later channel of the connection would then be sent unpaced
            keys = [ch] if ch in rec.streams else []
            if keys or extra:
                conn.add(rec, [*keys, *extra])
            conn.subscription_known()
        else:
            await conn.send_text(orjson.dumps({"event": "bts:unsubscription_succeeded", "channel": ch,
                                               "data": {}}).decode())
            conn.remove(rec, [ch])
