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
* REST ``/0/public/Trades?pair=P[&since=S][&count=N]`` (Kraken REST API, "Get Recent Trades"):
  the recorded ``trade`` frames of pair ``P`` (its AssetPairs key, altname or wsname) as
  ``{"error":[],"result":{"<pair key>":[[price, volume, time, "b"|"s", "m"|"l", misc,
  trade_id], ...],"last":"<ns>"}}``: trades whose time is after ``since`` (ns, or seconds when
  below 1e12; exclusive), at most ``count`` (default 1000, 1..1000), in recorded order; ``time``
  is the recorded time string written as a JSON number (its digits kept), ``trade_id`` the
  trade's 1-based position among the pair's recorded trades (Kraken's v1 websocket sends none),
  ``last`` the ns time of the last trade returned (``since`` when none). An unknown pair:
  ``{"error":["EQuery:Unknown asset pair"]}``.

Subscription key of a data frame: ``(channelName, PAIR)``.
"""
from __future__ import annotations

from decimal import Decimal

import orjson

from dm.replay import HEARTBEAT_KEY, VenueReplay, json_response, loads_or_none

TRADES_PATH = "/0/public/Trades"


def time_ns(text: str) -> int:
    """Kraken's ``"1617666461.465618"`` (seconds, decimal) → ns since the UNIX epoch, exact."""
    return int(Decimal(text).scaleb(9))


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
        self.pairs: dict[str, tuple[str, str]] = {}  # key / altname / wsname (upper) -> (key, WSNAME)
        self._trades: dict[str, list[tuple[int, bytes]]] | None = None  # WSNAME -> [(time ns, REST row)]

    def add_rest(self, url, body: bytes) -> bool:
        if url.path.endswith("/AssetPairs"):
            obj = loads_or_none(body)
            res = obj.get("result") if isinstance(obj, dict) else None
            for key, p in (res or {}).items():
                ws = p.get("wsname") if isinstance(p, dict) else None
                if isinstance(ws, str):
                    for name in (key, p.get("altname"), ws, ws.replace("/", "")):
                        if isinstance(name, str):
                            self.pairs.setdefault(name.upper(), (key, ws.upper()))
        return False  # still served by path

    def trades(self) -> dict[str, list[tuple[int, bytes]]]:
        """WSNAME → its recorded trades as REST rows (bytes), in recorded order."""
        if self._trades is None:
            out: dict[str, list[tuple[int, bytes]]] = {}
            for rec in self.recs:
                for ev, key in zip(rec.events, rec.keys):
                    if not (isinstance(key, tuple) and key[0] == "trade"):
                        continue
                    rows = out.setdefault(key[1], [])
                    for tr in orjson.loads(ev.text)[1]:
                        p, v, t, side, typ, misc = (tr + [""] * 6)[:6]
                        row = b"[%s,%s,%s,%s,%s,%s,%d]" % (orjson.dumps(p), orjson.dumps(v), str(Decimal(t)).encode(),
                                                           orjson.dumps(side), orjson.dumps(typ), orjson.dumps(misc), len(rows) + 1)
                        rows.append((time_ns(t), row))
            self._trades = out
        return self._trades

    def rest(self, request):
        if request.path != TRADES_PATH:
            return None
        q = request.query
        found = self.pairs.get(q.get("pair", "").upper())
        if found is None:
            return json_response(b'{"error":["EQuery:Unknown asset pair"]}')
        key, ws = found
        try:
            since = int(q.get("since", "0") or 0)
            count = int(q.get("count", "1000"))
        except ValueError:
            return json_response(b'{"error":["EGeneral:Invalid arguments"]}')
        if since < 10**12:
            since *= 10**9
        if not 1 <= count <= 1000:
            return json_response(b'{"error":["EGeneral:Invalid arguments:count"]}')
        rows = [(t, r) for t, r in self.trades().get(ws, []) if t > since][:count]
        last = rows[-1][0] if rows else since
        body = b'{"error":[],"result":{%s:[%s],"last":"%d"}}' % (orjson.dumps(key), b",".join(r for _, r in rows), last)
        return json_response(body)

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
