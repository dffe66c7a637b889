"""Coinbase on the replay server (``dm.replay``): how its two public websocket feeds behave.

Both live feeds sit at the root path of their own host (``wss://advanced-trade-ws.coinbase.com``,
``wss://ws-feed.exchange.coinbase.com``), so the replay server gives each its own path, chosen
by the recording's host:

* ``/advanced-trade-ws`` — Advanced Trade (Advanced Trade docs, "WebSocket Overview"). Every
  message of a connection carries ``sequence_num``, numbered by the venue over everything it
  sends on that connection (all channels, heartbeats and ``subscriptions`` included). Serving
  a subset would make holes no real connection has, so the first ``{"type":"subscribe",...}``
  starts the recorded connection's whole stream, in recorded order (its own ``subscriptions``
  frames are the acks); later subscribe/unsubscribe requests change nothing (each recorded
  frame is sent once). A request that is not JSON or not subscribe/unsubscribe gets
  ``{"type":"error","message":...}``.
* ``/ws-feed`` — Exchange (Exchange docs, "WebSocket Feed → Overview → Subscribe", "Channels").
  ``{"type":"subscribe","product_ids":[..],"channels":[name | {"name","product_ids"}]}`` →
  a ``subscriptions`` message listing every channel the connection is now subscribed to, then
  the recorded frames of each (channel, product): ``level2`` (``snapshot`` + ``l2update``),
  ``matches`` (``last_match`` + ``match``), ``ticker``, ``heartbeat`` (``level2_batch`` draws
  the ``level2`` frames: the same messages, batched). ``unsubscribe`` stops
  them. A channel/product nothing recorded is still listed (the venue would stream it; the
  recording has nothing to send).
* REST (served by path, query ignored): ``/api/v3/brokerage/market/products`` and
  ``/products``, the recorded bodies.
"""
from __future__ import annotations

import re
import weakref
from urllib.parse import urlsplit

import orjson

from dm.replay import VenueReplay, loads_or_none

ADVANCED_PATH = "/advanced-trade-ws"
EXCHANGE_PATH = "/ws-feed"
STREAM_KEY = ("advanced", "")     # the one subscription key of an Advanced Trade recording
_EX_CHANNEL = {"snapshot": "level2", "l2update": "level2", "match": "matches", "last_match": "matches",
               "ticker": "ticker", "heartbeat": "heartbeat"}
_PRODUCT = re.compile(r'"product_id"\s*:\s*"([^"\\]+)"')
_TYPE = re.compile(r'"type"\s*:\s*"([^"\\]+)"')


def feed_of_url(url: str) -> str:
    """``advanced`` for a recording on the Advanced Trade host, else ``exchange``."""
    host = (urlsplit(url).hostname or "").lower()
    return "advanced" if host.startswith("advanced-trade-ws") else "exchange"


class CoinbaseReplay(VenueReplay):
    kind = "coinbase"
    ws_path = ADVANCED_PATH
    ws_exact = (ADVANCED_PATH, EXCHANGE_PATH)

    def __init__(self, server):
        super().__init__(server)
        self.advanced: list = []                       # Advanced Trade recordings
        self.exchange_keys: dict[tuple, object] = {}   # (channel, PRODUCT) -> the Exchange recording holding it
        self.subs = weakref.WeakKeyDictionary()        # conn -> channel -> products (Exchange)

    def index_frame(self, rec, ev) -> object:
        if feed_of_url(rec.url) == "advanced":
            return STREAM_KEY
        obj = loads_or_none(ev.text)
        if isinstance(obj, dict):
            typ, pid = obj.get("type"), obj.get("product_id")
        else:  # a corrupted frame (fault injection) is sent where it was recorded
            m, p = _TYPE.search(ev.text, 0, 200), _PRODUCT.search(ev.text)
            typ, pid = (m.group(1) if m else None), (p.group(1) if p else None)
        ch = _EX_CHANNEL.get(typ) if isinstance(typ, str) else None
        if ch is None or not isinstance(pid, str):
            return None
        return (ch, pid.upper())

    def add_recording(self, rec) -> None:
        super().add_recording(rec)
        if feed_of_url(rec.url) == "advanced":
            if STREAM_KEY in rec.streams:
                self.advanced.append(rec)
        else:
            for key in rec.streams:
                self.exchange_keys.setdefault(key, rec)

    def active(self) -> bool:
        return bool(self.advanced) or bool(self.exchange_keys)

    async def on_message(self, conn, obj) -> None:
        if conn.request.path == ADVANCED_PATH:
            await self._advanced(conn, obj)
        else:
            await self._exchange(conn, obj)

    # Advanced Trade ---------------------------------------------------------
    async def _advanced(self, conn, obj) -> None:
        if not isinstance(obj, dict) or obj.get("type") not in ("subscribe", "unsubscribe"):
            await conn.send_text('{"type":"error","message":"failure to subscribe"}')
            return
        if obj["type"] == "subscribe" and self.advanced:
            conn.add(self.advanced[0], [STREAM_KEY])
        conn.subscription_known()

    # Exchange -----------------------------------------------------------------
    async def _exchange(self, conn, obj) -> None:
        if not isinstance(obj, dict) or obj.get("type") not in ("subscribe", "unsubscribe"):
            await conn.send_text('{"type":"error","message":"Failed to subscribe","reason":"bad request"}')
            return
        op = obj["type"]
        top = obj.get("product_ids") or []
        wanted: list[tuple[str, list]] = []
        for ch in obj.get("channels") or ():
            if isinstance(ch, str):
                wanted.append((ch, list(top)))
            elif isinstance(ch, dict) and isinstance(ch.get("name"), str):
                wanted.append((ch["name"], list(ch.get("product_ids") or top)))
        if not wanted or not all(isinstance(p, str) for _, ps in wanted for p in ps):
            await conn.send_text('{"type":"error","message":"Failed to subscribe","reason":"No channels provided"}')
            return
        subs = self.subs.setdefault(conn, {})
        groups: dict[int, tuple] = {}
        for ch, pids in wanted:
            cur = subs.setdefault(ch, set())
            if ch == "level2_batch":          # the same messages as level2, batched
                ch = "level2"
            for p in pids:
                p = p.upper()
                if op == "subscribe":
                    cur.add(p)
                else:
                    cur.discard(p)
                rec = self.exchange_keys.get((ch, p))
                if rec is not None:
                    groups.setdefault(id(rec), (rec, []))[1].append((ch, p))
        ack = {"type": "subscriptions",
               "channels": [{"name": ch, "product_ids": sorted(ps)} for ch, ps in subs.items() if ps]}
        await conn.send_text(orjson.dumps(ack).decode())
        for rec, keys in groups.values():
            if op == "subscribe":
                conn.add(rec, keys)
            else:
                conn.remove(rec, keys)
        if op == "subscribe":
            conn.subscription_known()
