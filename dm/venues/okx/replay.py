"""OKX websocket API v5 on the replay server (``dm.replay``): how its public websocket and REST
behave (OKX API v5 docs: "WebSocket → Overview" (connect, subscribe, ping), "Public Channel",
"Public Data → Get instruments").

* websocket ``/ws/v5/public``: ``{"op":"subscribe","args":[{"channel":C,"instId":I},..]}`` →
  per arg the recorded ``{"event":"subscribe","arg":..}`` then the recorded frames of
  ``(C, I)`` (a subscription recorded without data frames is acknowledged and sends nothing);
  an arg nothing recorded → ``{"event":"error","code":"60018","msg":..}`` (OKX's
  "doesn't exist" answer). ``unsubscribe`` → ``{"event":"unsubscribe","arg":..}`` and stops
  that channel (a later subscribe resumes it where it was: each recorded frame is sent once).
  The text ``ping`` → ``pong``; any other non-JSON text → ``{"event":"error","code":"60012"}``
  (invalid request).
* REST ``/api/v5/public/instruments?instType=T[&uly=U]`` → the body recorded for ``(T, U)``; a
  query nothing recorded → 404.

Subscription key of a data frame: ``(channel, INSTID)`` (read from the text when a frame is not
JSON, so a corrupted frame is sent where it was recorded).
"""
from __future__ import annotations

import re
from urllib.parse import parse_qs

import orjson

from dm.replay import VenueReplay, json_error, json_response, loads_or_none

INSTRUMENTS_PATH = "/api/v5/public/instruments"
_ARG = re.compile(r'"channel"\s*:\s*"([^"\\]+)"\s*,\s*"instId"\s*:\s*"([^"\\]+)"')


def _key(arg) -> tuple | None:
    if isinstance(arg, dict) and isinstance(arg.get("channel"), str) and isinstance(arg.get("instId"), str):
        return arg["channel"], arg["instId"].upper()
    return None


class OkxReplay(VenueReplay):
    kind = "okx"
    ws_path = "/ws/v5/public"
    ws_exact = ("/ws/v5/public",)

    def __init__(self, server):
        super().__init__(server)
        self.by_key: dict[tuple, object] = {}             # (channel, INSTID) -> the recording holding it
        self.instruments: dict[tuple[str, str], list[bytes]] = {}

    def index_frame(self, rec, ev) -> object:
        obj = loads_or_none(ev.text)
        if not isinstance(obj, dict):
            m = _ARG.search(ev.text, 0, 300)
            return (m.group(1), m.group(2).upper()) if m else None
        key = _key(obj.get("arg"))
        if key is None:
            return None
        if "event" in obj:
            if obj["event"] == "subscribe":
                rec.status.setdefault(key, ev.text)
            return None
        return key

    def add_recording(self, rec) -> None:
        super().add_recording(rec)
        for key in rec.streams:
            self.by_key.setdefault(key, rec)
        for key in rec.status:       # subscribed, acknowledged, but nothing came (no trade occurred)
            self.by_key.setdefault(key, rec)

    def active(self) -> bool:
        return bool(self.by_key)

    def loaded(self) -> bool:
        return bool(self.recs) or bool(self.instruments)

    # REST ---------------------------------------------------------------------
    def add_rest(self, url, body: bytes) -> bool:
        if url.path != INSTRUMENTS_PATH:
            return False
        q = parse_qs(url.query)
        key = ((q.get("instType") or [""])[0].upper(), (q.get("uly") or [""])[0].upper())
        self.instruments.setdefault(key, []).append(body)
        return True

    def rest(self, request):
        if request.path != INSTRUMENTS_PATH:
            return None
        key = (request.query.get("instType", "").upper(), request.query.get("uly", "").upper())
        bodies = self.instruments.get(key)
        if not bodies:
            return json_error(404, {"error": f"not recorded: {INSTRUMENTS_PATH}?{request.query_string}"})
        return json_response(self.server.next_body(("okx.instruments", key), bodies))

    # websocket ----------------------------------------------------------------
    async def on_text(self, conn, text: str) -> None:
        if text == "ping":                     # "Overview": 'ping' text -> 'pong' text
            await conn.send_text("pong")
            return
        await self.on_message(conn, loads_or_none(text))

    @staticmethod
    def _error(code: str, msg: str) -> str:
        return orjson.dumps({"event": "error", "msg": msg, "code": code}).decode()

    async def on_message(self, conn, obj) -> None:
        if not isinstance(obj, dict) or obj.get("op") not in ("subscribe", "unsubscribe") \
                or not isinstance(obj.get("args"), list) or not obj["args"]:
            await conn.send_text(self._error("60012", f"Invalid request: {str(obj)[:100]}"))
            return
        op = obj["op"]
        groups: dict[int, tuple] = {}
        for arg in obj["args"]:
            key = _key(arg)
            rec = self.by_key.get(key) if key is not None else None
            if rec is None:
                await conn.send_text(self._error(
                    "60018", f"Wrong URL or channel:{(arg or {}).get('channel') if isinstance(arg, dict) else arg},"
                             f"instId:{arg.get('instId') if isinstance(arg, dict) else ''} doesn't exist"))
                continue
            if op == "subscribe":
                await conn.send_text(rec.status.get(key) or orjson.dumps({"event": "subscribe", "arg": arg}).decode())
            else:
                await conn.send_text(orjson.dumps({"event": "unsubscribe", "arg": arg}).decode())
            groups.setdefault(id(rec), (rec, []))[1].append(key)
        for rec, keys in groups.values():
            if op == "subscribe":
                conn.add(rec, keys)
            else:
                conn.remove(rec, keys)
        if op == "subscribe":
            conn.subscription_known()
