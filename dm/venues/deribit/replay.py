"""Deribit JSON-RPC websocket API v2 on the replay server (``dm.replay``): how its websocket and
REST behave (Deribit API v2 docs: "Subscriptions", "public/subscribe", "public/unsubscribe",
"public/set_heartbeat", "public/test", "public/get_instruments").

* websocket ``/ws/api/v2``: JSON-RPC requests answered with the request's ``id``:
  ``public/subscribe`` ``{"channels":[..]}`` → ``{"result":[the channels known]}`` (recorded
  data channels and the channels the recorded ack listed — Deribit's ``trades`` channels were
  subscribed but silent —; unknown ones are left out of the result as Deribit does for channels
  it cannot subscribe), then the recorded notifications of those channels;
  ``public/unsubscribe`` stops channels (a later subscribe resumes them where they were: each
  recorded frame is sent once); ``public/set_heartbeat`` → ``"ok"`` and then, at once, one
  ``{"method":"heartbeat","params":{"type":"test_request"}}`` (Deribit sends it every
  ``interval`` seconds; one is enough to check the client answers ``public/test``);
  ``public/test`` → ``{"version": ..}``; any other method → JSON-RPC error -32601.
* REST ``/api/v2/public/get_instruments?currency=C`` → the body recorded for currency ``C``
  (several recorded bodies are served in order, then the last again); a currency nothing
  recorded → HTTP 400 with a JSON-RPC error.

Subscription key of a data frame: its ``params.channel`` (read from the text when a frame is not
JSON, so a corrupted frame is sent where it was recorded).
"""
from __future__ import annotations

import re
from urllib.parse import parse_qs

import orjson

from dm.replay import VenueReplay, json_error, json_response, loads_or_none

INSTRUMENTS_PATH = "/api/v2/public/get_instruments"
_CHANNEL = re.compile(r'"channel"\s*:\s*"([^"\\]+)"')
VERSION = "dm-replay"


class DeribitReplay(VenueReplay):
    kind = "deribit"
    ws_path = "/ws/api/v2"
    ws_exact = ("/ws/api/v2", "/ws/api/v2/")

    def __init__(self, server):
        super().__init__(server)
        self.by_channel: dict[str, object] = {}       # channel -> the recording holding it
        self.instruments: dict[str, list[bytes]] = {}  # currency -> recorded bodies

    def index_frame(self, rec, ev) -> object:
        obj = loads_or_none(ev.text)
        if not isinstance(obj, dict):
            m = _CHANNEL.search(ev.text, 0, 300)
            return m.group(1) if m else None
        if obj.get("method") == "subscription":
            ch = (obj.get("params") or {}).get("channel")
            return ch if isinstance(ch, str) else None
        res = obj.get("result")
        if isinstance(res, list):
            for ch in res:
                if isinstance(ch, str):
                    rec.status.setdefault(ch, "")
        return None

    def add_recording(self, rec) -> None:
        super().add_recording(rec)
        for key in list(rec.streams) + list(rec.status):
            self.by_channel.setdefault(key, rec)

    def active(self) -> bool:
        return bool(self.by_channel)

    def loaded(self) -> bool:
        return bool(self.recs) or bool(self.instruments)

    # REST ---------------------------------------------------------------------
    def add_rest(self, url, body: bytes) -> bool:
        if url.path != INSTRUMENTS_PATH:
            return False
        cur = (parse_qs(url.query).get("currency") or [""])[0].upper()
        self.instruments.setdefault(cur, []).append(body)
        return True

    def rest(self, request):
        if request.path != INSTRUMENTS_PATH:
            return None
        cur = request.query.get("currency", "").upper()
        bodies = self.instruments.get(cur)
        if not bodies:
            return json_error(400, {"jsonrpc": "2.0", "error": {"code": 10012, "message": "not recorded",
                                                                "data": {"param": "currency", "value": cur}}})
        return json_response(self.server.next_body(("deribit.instruments", cur), bodies))

    # websocket ----------------------------------------------------------------
    @staticmethod
    def _reply(rid, result) -> str:
        return orjson.dumps({"jsonrpc": "2.0", "id": rid, "result": result, "usIn": 0, "usOut": 0, "usDiff": 0,
                             "testnet": False}).decode()

    async def on_message(self, conn, obj) -> None:
        if not isinstance(obj, dict) or not isinstance(obj.get("method"), str):
            await conn.send_text(orjson.dumps({"jsonrpc": "2.0", "id": None, "error": {
                "code": -32600, "message": "Invalid Request"}}).decode())
            return
        method, rid = obj["method"], obj.get("id")
        params = obj.get("params") if isinstance(obj.get("params"), dict) else {}
        if method == "public/set_heartbeat":
            await conn.send_text(self._reply(rid, "ok"))
            await conn.send_text('{"jsonrpc":"2.0","method":"heartbeat","params":{"type":"test_request"}}')
            return
        if method == "public/test":
            await conn.send_text(self._reply(rid, {"version": VERSION}))
            return
        if method not in ("public/subscribe", "public/unsubscribe"):
            await conn.send_text(orjson.dumps({"jsonrpc": "2.0", "id": rid, "error": {
                "code": -32601, "message": "Method not found"}}).decode())
            return
        chans = params.get("channels")
        chans = [c for c in chans if isinstance(c, str)] if isinstance(chans, list) else []
        groups: dict[int, tuple] = {}
        known = []
        for ch in chans:
            rec = self.by_channel.get(ch)
            if rec is None:
                continue
            known.append(ch)
            groups.setdefault(id(rec), (rec, []))[1].append(ch)
        await conn.send_text(self._reply(rid, known))
        for rec, keys in groups.values():
            if method == "public/subscribe":
                # channels with no recorded frame (the silent trades channels) are acknowledged
                # but not added: a track of frame-less channels runs to the end of the recording
                # at once, and later channels of the connection would be sent unpaced
                keys = [k for k in keys if k in rec.streams]
                if keys:
                    conn.add(rec, keys)
            else:
                conn.remove(rec, keys)
        if method == "public/subscribe":
            conn.subscription_known()
