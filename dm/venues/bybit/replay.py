"""Bybit websocket API v5 on the replay server (``dm.replay``): how its websockets and REST
behave (Bybit API v5 docs: "Connect", "WebSocket Stream → Public", "Market → Get Instruments
Info").

* websockets ``/v5/public/spot``, ``/v5/public/linear``, ``/v5/public/inverse``,
  ``/v5/public/option``: each path is served from the connections recorded on that URL (one
  recording may hold several: cryptofeed's JSONL format interleaves them, told apart by
  ``conn``). ``{"op":"subscribe","req_id":R,"args":[topics]}`` → one ack in the form that
  connection recorded (``{"success":true,"ret_msg":..,"conn_id":..,"req_id":R,"op":"subscribe"}``)
  then the recorded frames of those topics; a topic nothing recorded on that path makes the ack
  ``"success":false`` naming it (the recorded topics of the request are still served — a
  simplification: Bybit's own answer for a mixed request is not recorded). ``unsubscribe``
  stops topics (a later subscribe resumes them where they were: each recorded frame is sent
  once). ``{"op":"ping"}`` → ``{"success":true,"ret_msg":"pong",..,"op":"ping"}``.
* REST ``/v5/market/instruments-info?category=C`` → the body recorded for category ``C`` (several
  recorded pages are served in order, then the last again); a category nothing recorded → 404.

Subscription key of a data frame: its ``topic`` (read from the text when a frame is not JSON, so
a corrupted frame is sent where it was recorded).
"""
from __future__ import annotations

import re
from urllib.parse import parse_qs, urlsplit

import orjson

from dm.replay import VenueReplay, json_error, json_response, loads_or_none

INSTRUMENTS_PATH = "/v5/market/instruments-info"
_TOPIC = re.compile(r'"topic"\s*:\s*"([^"\\]+)"')
_DEFAULT_ACK = {"success": True, "ret_msg": "", "conn_id": "dm-replay", "req_id": "", "op": "subscribe"}


class BybitReplay(VenueReplay):
    kind = "bybit"
    ws_path = "/v5/public"
    ws_exact = ("/v5/public/spot", "/v5/public/linear", "/v5/public/inverse", "/v5/public/option")

    def __init__(self, server):
        super().__init__(server)
        self.by_path: dict[str, dict[str, object]] = {}   # ws path -> topic -> the recording holding it
        self.ack_of: dict[int, dict] = {}                  # id(rec) -> its first recorded ack (parsed)
        self.instruments: dict[str, list[bytes]] = {}      # category -> recorded bodies

    def index_frame(self, rec, ev) -> object:
        obj = loads_or_none(ev.text)
        if not isinstance(obj, dict):
            # not JSON (a corrupted frame, fault injection): still sent with its topic's frames
            m = _TOPIC.search(ev.text, 0, 200)
            return m.group(1) if m else None
        topic = obj.get("topic")
        if isinstance(topic, str):
            return topic
        if obj.get("op") == "subscribe" and obj.get("success") is True:
            self.ack_of.setdefault(id(rec), obj)
        return None

    def add_recording(self, rec) -> None:
        super().add_recording(rec)
        topics = self.by_path.setdefault(urlsplit(rec.url).path, {})
        for key in rec.streams:
            topics.setdefault(key, rec)

    def active(self) -> bool:
        return any(self.by_path.values())

    def loaded(self) -> bool:
        return bool(self.recs) or bool(self.instruments)

    # REST ---------------------------------------------------------------------
    def add_rest(self, url, body: bytes) -> bool:
        if url.path != INSTRUMENTS_PATH:
            return False
        cat = (parse_qs(url.query).get("category") or [""])[0]
        self.instruments.setdefault(cat, []).append(body)
        return True

    def rest(self, request):
        if request.path != INSTRUMENTS_PATH:
            return None
        cat = request.query.get("category", "")
        bodies = self.instruments.get(cat)
        if not bodies:
            return json_error(404, {"error": f"not recorded: {INSTRUMENTS_PATH}?category={cat}"})
        return json_response(self.server.next_body(("bybit.instruments", cat), bodies))

    # websocket ----------------------------------------------------------------
    def _ack(self, rec, op: str, req_id, ok: bool, msg: str) -> str:
        base = self.ack_of.get(id(rec)) if rec is not None else None
        d = dict(base or _DEFAULT_ACK)
        d["success"] = ok
        if not ok or op != "subscribe":
            d["ret_msg"] = msg
        if req_id is not None:
            d["req_id"] = req_id
        d["op"] = op
        return orjson.dumps(d).decode()

    async def on_message(self, conn, obj) -> None:
        topics = self.by_path.get(conn.request.path, {})
        any_rec = next(iter(topics.values()), None)
        if not isinstance(obj, dict) or not isinstance(obj.get("op"), str):
            await conn.send_text(self._ack(any_rec, "", None, False, "error:request not json or no op"))
            return
        op, req_id = obj["op"], obj.get("req_id")
        if op == "ping":
            d = {"success": True, "ret_msg": "pong",
                 "conn_id": (self.ack_of.get(id(any_rec)) or _DEFAULT_ACK).get("conn_id", "")}
            if req_id is not None:
                d["req_id"] = req_id
            d["op"] = "ping"
            await conn.send_text(orjson.dumps(d).decode())
            return
        args = obj.get("args")
        if op not in ("subscribe", "unsubscribe") or not isinstance(args, list) or not args:
            await conn.send_text(self._ack(any_rec, op, req_id, False, f"error:unsupported request {op!r}"))
            return
        groups: dict[int, tuple] = {}
        missing = []
        for t in args:
            rec = topics.get(t) if isinstance(t, str) else None
            if rec is None:
                missing.append(str(t))
                continue
            groups.setdefault(id(rec), (rec, []))[1].append(t)
        first = next(iter(groups.values()))[0] if groups else any_rec
        await conn.send_text(self._ack(first, op, req_id, not missing,
                                       f"error:handler not found,topic:{','.join(missing)}" if missing else ""))
        for rec, keys in groups.values():
            if op == "subscribe":
                conn.add(rec, keys)
            else:
                conn.remove(rec, keys)
        if op == "subscribe":
            conn.subscription_known()
