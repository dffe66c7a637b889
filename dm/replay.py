"""Local venue server that replays cryptofeed recordings (``dm replay``).

It stands in for Binance spot, Kraken spot (websocket v1) and Kraken Futures (websocket v1): a
dm worker talks to it exactly as to the venue, only the URLs in its config differ
(:meth:`ReplayServer.ws_url` / :meth:`ReplayServer.rest_url`). Every recorded frame's text is
sent verbatim, one websocket text frame per recorded frame, in recorded order, at the recorded
pace divided by ``speed`` (``speed=0``: as fast as the socket takes them, from pre-encoded
payloads).

Endpoints (one HTTP server for all venues; a GET with ``Upgrade: websocket`` is a websocket):

Binance spot (Binance "WebSocket Streams" and REST "Market Data endpoints" docs)
  * ``/stream?streams=a@b/c@d`` combined streams: frames ``{"stream":..,"data":..}`` whose
    ``stream`` is in the requested set (case-insensitive); ``/ws/<stream>[/<stream>...]`` and
    ``/ws`` raw streams: the ``data`` object only, cut verbatim from the recorded frame.
  * live subscription messages: ``{"method":"SUBSCRIBE","params":[..],"id":N}`` →
    ``{"result":null,"id":N}`` then the streams' frames; ``UNSUBSCRIBE``; ``LIST_SUBSCRIPTIONS``.
  * REST ``/api/v1/depth`` and ``/api/v3/depth?symbol=S&limit=N`` → the recorded snapshot body
    for ``S`` (several recorded: served in order, then the latest again; ``limit`` is ignored),
    HTTP 400 ``{"code":-1121,"msg":"Invalid symbol."}`` for a symbol never recorded;
    ``/api/v3/exchangeInfo`` → recorded body.
Kraken spot v1 (Kraken "WebSocket API v1" docs: subscribe, subscriptionStatus, ping, heartbeat)
  * websocket ``/``: the recorded ``systemStatus`` on connect; ``{"event":"subscribe","pair":[..],
    "subscription":{"name":"book","depth":1000}}`` → the recorded ``subscriptionStatus`` frames of
    those pairs, then the recorded data frames of that channel (``book-1000``, ``ticker``,
    ``trade``, ...) and pairs. Heartbeats of the first recording a connection draws from are
    included. Each subscription draws from whichever loaded recording holds that channel/pair.
    ``{"event":"ping","reqid":N}`` → ``{"event":"pong","reqid":N}``; ``unsubscribe``.
  * REST ``/0/public/AssetPairs`` → recorded body.
Kraken Futures v1 (Kraken Futures "WebSocket API v1" docs: subscribe, book, trade, ticker_lite)
  * websocket ``/ws/v1``: the recorded ``info`` on connect; ``{"event":"subscribe","feed":"book",
    "product_ids":[..]}`` → the recorded ``subscribed`` frames then the feed's frames (``book``
    includes ``book_snapshot``, ``trade`` includes ``trade_snapshot``) for those products
    (case-insensitive). A ``heartbeat`` subscription is acknowledged; none was recorded.
  * REST ``/derivatives/api/v3/instruments`` → recorded body.
Any other recorded REST path is served by path (query ignored); the rest is 404.

Timeline: a connection's clock starts when its subscription is known (URL streams at connect, or
the first subscribe message). A frame recorded at TS ``t`` is sent at
``clock_start + (t - t0) / speed`` where ``t0`` is the TS of the first data frame the connection
receives. Later subscriptions on the same connection drawing from the same recorded session share
that clock (frames already due are sent at once); every recorded frame of a subscribed
channel/stream is sent exactly once, even if subscribed late. Control replies (acks, pong,
subscriptionStatus) are sent at once. When every subscription of a connection is exhausted and no
new subscription arrives within ``linger`` seconds, the server closes it (code 1000). With
``once=True``, a venue whose replay ran to the end refuses further connections (HTTP 410, so a
worker that reconnects does not restart the session) and :meth:`ReplayServer.wait_done` returns once ``expected_connections`` connections
were replayed to the end and no subscribed connection is still open. REST stays up until
:meth:`ReplayServer.stop`.

Fault injection: ``mutate(event) -> str | None`` is applied to every data frame sent (``None``
drops it); :func:`dm.recording.write_modified_recording` edits the files themselves.
"""
from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path
from typing import Callable, Iterable, Sequence

import orjson
from aiohttp import WSMsgType, web

from dm import log as dmlog
from dm.errors import ConfigError
from dm.recording import Event, expand_paths, read_file, venue_of_url, ws_sessions

__all__ = ["ReplayServer", "serve", "run_replay", "WS_PATHS"]

_log = dmlog.get("dm.replay")

#: websocket path per venue (the venue's own path on its host)
WS_PATHS = {"binance": "/stream", "kraken": "/", "kraken_futures": "/ws/v1"}

_TEXT = WSMsgType.TEXT
_HEARTBEAT = ("heartbeat", "")
_JSON = "application/json"
_YIELD_EVERY = 256  # frames sent back to back at speed 0 before yielding to the event loop
_BATCH_BYTES = 1 << 16  # speed 0: bytes of pre-built frames per transport write
_EARLY_S = 0.0005  # a frame due within this is sent now rather than after a sleep

Mutate = Callable[[Event], "str | None"]


# ------------------------------------------------------------------ recorded connections


class _Rec:
    """One recorded websocket connection indexed for replay: per data frame its TS, pre-encoded
    payload and subscription key (Binance: stream name lower case; Kraken: (channelName, PAIR);
    Kraken Futures: (feed without ``_snapshot``, PRODUCT); ``None``: not a data frame)."""

    __slots__ = ("venue", "url", "source", "events", "ts", "payloads", "keys", "first_ts", "last_ts",
                 "status", "order", "hello", "_raw", "_wire", "_raw_wire", "streams")

    def __init__(self, venue: str, url: str, source: str):
        self.venue = venue
        self.url = url
        self.source = source
        self.events: list[Event] = []
        self.ts: list[float] = []
        self.payloads: list[bytes] = []
        self.keys: list[object] = []
        self.status: dict[object, str] = {}  # key -> recorded subscription ack text
        self.order: dict[object, int] = {}  # key -> rank of its ack in the recording
        self.hello: str | None = None  # systemStatus / info frame
        self._raw: list[bytes] | None = None
        self._wire: list[bytes] | None = None
        self._raw_wire: list[bytes] | None = None
        self.streams: set = set()
        self.first_ts = 0.0
        self.last_ts = 0.0

    def finish(self) -> None:
        data_ts = [t for t, k in zip(self.ts, self.keys) if k is not None]
        self.first_ts = data_ts[0] if data_ts else 0.0
        self.last_ts = data_ts[-1] if data_ts else 0.0
        self.streams = {k for k in self.keys if k is not None}
        self.order = {k: i for i, k in enumerate(self.status)}

    @property
    def raw_payloads(self) -> list[bytes]:
        """Binance raw-stream form (the ``data`` object only) of every frame, built on first use."""
        if self._raw is None:
            self._raw = [_binance_data(ev.text).encode() for ev in self.events]
        return self._raw


    def wire(self, raw: bool) -> list[bytes]:
        """Every frame as a complete unmasked websocket text frame (RFC 6455 section 5.2:
        FIN+opcode byte, payload length, payload), built on first use, for batched writes."""
        if raw:
            if self._raw_wire is None:
                self._raw_wire = [_ws_text_frame(p) for p in self.raw_payloads]
            return self._raw_wire
        if self._wire is None:
            self._wire = [_ws_text_frame(p) for p in self.payloads]
        return self._wire


def _ws_text_frame(payload: bytes) -> bytes:
    n = len(payload)
    if n < 126:
        return bytes((0x81, n)) + payload
    if n < 65536:
        return bytes((0x81, 126)) + n.to_bytes(2, "big") + payload
    return bytes((0x81, 127)) + n.to_bytes(8, "big") + payload


def _binance_data(text: str) -> str:
    """The ``data`` value of a combined-stream frame, cut verbatim (no re-serialisation)."""
    if text.startswith('{"stream":"') and text.endswith("}"):
        j = text.find('","data":', 11)
        if j > 0:
            return text[j + 9 : -1]
    return text


def _loads(text: str):
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        return None


def _index_frame(rec: _Rec, ev: Event) -> object:
    text = ev.text
    if rec.venue == "binance":
        if text.startswith('{"stream":"'):
            j = text.find('"', 11)
            return text[11:j].lower() if j > 0 else None
        obj = _loads(text)
        stream = obj.get("stream") if isinstance(obj, dict) else None
        return stream.lower() if isinstance(stream, str) and stream else None
    obj = _loads(text)
    if rec.venue == "kraken":
        if isinstance(obj, list) and len(obj) >= 4 and isinstance(obj[-1], str) and isinstance(obj[-2], str):
            return (obj[-2], obj[-1].upper())
        if isinstance(obj, dict):
            event = obj.get("event")
            if event == "heartbeat":
                return _HEARTBEAT
            if event == "systemStatus" and rec.hello is None:
                rec.hello = text
            elif event == "subscriptionStatus" and obj.get("status") == "subscribed":
                rec.status.setdefault((obj.get("channelName"), str(obj.get("pair", "")).upper()), text)
        return None
    # kraken_futures
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


def _with_reqid(ack: str, reqid: dict) -> str:
    """A recorded Kraken subscriptionStatus with the client's ``reqid`` added where Kraken puts
    it (keys sorted: after ``pair``, before ``status``); verbatim when the request had none."""
    if not reqid or '"reqid":' in ack:
        return ack
    j = ack.find(',"status":')
    if j < 0:
        return ack
    return ack[:j] + ',"reqid":' + orjson.dumps(reqid["reqid"]).decode() + ack[j:]


def _kraken_channel(sub: dict) -> str | None:
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


# ------------------------------------------------------------------ per connection


def _wake(fut: asyncio.Future) -> None:
    if not fut.done():
        fut.set_result(None)


class _Track:
    """The frames one connection receives from one recorded connection, with a mutable filter."""

    __slots__ = ("conn", "rec", "filter", "seen", "pos", "pending", "waiter", "task", "wall0", "ts0")

    def __init__(self, conn: "_Conn", rec: _Rec):
        self.conn = conn
        self.rec = rec
        self.filter: set = set()
        self.seen: set = set()
        self.pos = 0  # index of the next frame not yet considered
        self.pending: list[int] = []  # late-subscribed frames before pos, sent first
        self.waiter: asyncio.Future | None = None
        self.task: asyncio.Task | None = None
        self.wall0: float | None = None
        self.ts0 = 0.0

    @property
    def exhausted(self) -> bool:
        return not self.pending and (self.pos >= len(self.rec.keys) or not self.filter)

    def add(self, keys: Iterable) -> None:
        new = set(keys) - self.filter
        if not new:
            return
        fresh = new - self.seen
        self.filter |= new
        self.seen |= new
        rk = self.rec.keys
        if fresh and self.pos:
            self.pending.extend(i for i in range(self.pos) if rk[i] in fresh)
            self.pending.sort()
        if self.wall0 is None:
            first = next((i for i, k in enumerate(rk) if k in self.filter), None)
            if first is not None:
                self.wall0, self.ts0 = self.conn.clock_for(self.rec, self.rec.ts[first])
        if self.waiter is not None:
            _wake(self.waiter)

    def remove(self, keys: Iterable) -> None:
        self.filter -= set(keys)

    async def run(self) -> None:
        conn, rec = self.conn, self.rec
        keys, ts, n = rec.keys, rec.ts, len(rec.keys)
        speed = conn.server.speed
        loop = asyncio.get_running_loop()
        send = conn.send_frame
        fast = speed == 0.0 and conn.server.mutate is None
        wire = rec.wire(conn.raw) if fast else None
        burst = 0
        try:
            while True:
                if self.pending:
                    batch, self.pending = self.pending, []
                    for i in batch:
                        await send(rec, i)
                    continue
                i = self.pos
                if i >= n or not self.filter:
                    break
                if keys[i] not in self.filter:
                    self.pos = i + 1
                    continue
                if fast:
                    # speed 0: whole pre-built websocket frames, many per transport write
                    flt, parts, size, j = self.filter, [], 0, i
                    while j < n and size < _BATCH_BYTES:
                        if keys[j] in flt:
                            w = wire[j]
                            parts.append(w)
                            size += len(w)
                        j += 1
                    self.pos = j
                    await conn.write_batch(parts)
                    continue
                if speed > 0.0:
                    delay = self.wall0 + (ts[i] - self.ts0) / speed - loop.time()
                    if delay > _EARLY_S:
                        fut = loop.create_future()
                        self.waiter = fut
                        h = loop.call_later(delay, _wake, fut)
                        try:
                            await fut
                        finally:
                            h.cancel()
                            self.waiter = None
                        continue
                self.pos = i + 1
                await send(rec, i)
                burst += 1
                if burst >= _YIELD_EVERY:
                    burst = 0
                    await asyncio.sleep(0)
        except ConnectionError:
            conn.lost = True
        finally:
            conn.track_finished()


class _Conn:
    """One client websocket."""

    def __init__(self, server: "ReplayServer", request: web.Request, ws: web.WebSocketResponse, venue: str, raw: bool):
        self.server = server
        self.request = request
        self.transport = request.transport
        self.ws = ws
        self.venue = venue
        self.raw = raw  # Binance raw stream (data object only)
        self.peer = str(request.remote)
        self.tracks: dict[int, _Track] = {}
        self.clock: tuple[float, float, float, float] | None = None
        self.subscribed = False
        self.completed = False
        self.lost = False
        self.heartbeat_from: _Rec | None = None
        self.frames_sent = 0
        self._linger: asyncio.TimerHandle | None = None
        loop = asyncio.get_running_loop()
        self.close_req: asyncio.Future = loop.create_future()  # close code, set to end the connection
        self.ended: asyncio.Future = loop.create_future()  # set when the handler has returned

    # clock ---------------------------------------------------------------
    def clock_for(self, rec: _Rec, first_ts: float) -> tuple[float, float]:
        now = asyncio.get_running_loop().time()
        if self.clock is None:
            self.clock = (now, first_ts, rec.first_ts, rec.last_ts)
            return now, first_ts
        wall0, ts0, lo, hi = self.clock
        if rec.first_ts <= hi and rec.last_ts >= lo:  # same recorded session: one clock
            return wall0, ts0
        return now, first_ts

    # subscriptions -------------------------------------------------------
    def add(self, rec: _Rec, keys: Iterable) -> None:
        self.subscribed = True
        self._cancel_linger()
        tr = self.tracks.get(id(rec))
        if tr is None:
            tr = self.tracks[id(rec)] = _Track(self, rec)
        tr.add(keys)
        if not tr.exhausted and (tr.task is None or tr.task.done()):
            tr.task = asyncio.get_running_loop().create_task(tr.run())

    def remove(self, rec: _Rec, keys: Iterable) -> None:
        tr = self.tracks.get(id(rec))
        if tr is not None:
            tr.remove(keys)

    def subscription_known(self) -> None:
        """A subscription request was handled (even one matching nothing): start the end check."""
        self.subscribed = True
        self.track_finished()

    # sending -------------------------------------------------------------
    async def send_text(self, text: str) -> None:
        await self.ws.send_frame(text.encode(), _TEXT)

    async def send_frame(self, rec: _Rec, i: int) -> None:
        mutate = self.server.mutate
        if mutate is not None:
            text = mutate(rec.events[i])
            if text is None:
                return
            if self.raw:
                text = _binance_data(text)
            payload = text.encode()
        else:
            payload = rec.raw_payloads[i] if self.raw else rec.payloads[i]
        if self.ws.closed:
            raise ConnectionResetError("websocket closed")
        await self.ws.send_frame(payload, _TEXT)
        self.frames_sent += 1

    async def write_batch(self, parts: list[bytes]) -> None:
        """Write whole websocket frames in one transport write (speed 0), then yield; waits for
        the socket to drain when the transport paused writing (aiohttp flow control)."""
        if parts:
            tr = self.transport
            if self.ws.closed or tr is None or tr.is_closing():
                raise ConnectionResetError("websocket closed")
            tr.write(b"".join(parts))
            self.frames_sent += len(parts)
            if self.request.protocol.writing_paused:
                await self.request.writer.drain()
        await asyncio.sleep(0)

    # end of recording ----------------------------------------------------
    def track_finished(self) -> None:
        if self.lost or self.ws.closed or not self.subscribed:
            return
        if all(t.exhausted and (t.task is None or t.task.done() or t.task is asyncio.current_task())
               for t in self.tracks.values()):
            self._cancel_linger()
            loop = asyncio.get_running_loop()
            self._linger = loop.call_later(self.server.linger, self._start_close)

    def _cancel_linger(self) -> None:
        if self._linger is not None:
            self._linger.cancel()
            self._linger = None

    def _start_close(self) -> None:
        self._linger = None
        if all(t.exhausted for t in self.tracks.values()) and not self.ws.closed:
            self.completed = True
            self.request_close(1000)

    def request_close(self, code: int) -> None:
        """Ask the connection's handler to close with ``code`` (it waits for the client's reply)."""
        if not self.close_req.done():
            self.close_req.set_result(code)

    def cancel(self) -> None:
        self._cancel_linger()
        for t in self.tracks.values():
            if t.task is not None and not t.task.done():
                t.task.cancel()


# ------------------------------------------------------------------ the server


class ReplayServer:
    """Replays recordings as Binance / Kraken / Kraken Futures over HTTP + websocket.

    ``recordings``: recording files or folders (a folder = the cryptofeed files in it, e.g. a split
    session); every websocket connection recorded in them becomes replayable, every REST line
    servable. ``host``/``port``: where to listen (``port=0``: any free port, read :attr:`port`
    after :meth:`start`). ``speed``: pace factor (1.0 = recorded pace, 10.0 = ten times faster,
    0 = as fast as possible). ``once``: :meth:`wait_done` returns after ``expected_connections``
    connections were replayed to the end. ``linger``: seconds an exhausted connection waits for
    another subscription before the close (code 1000). ``close_timeout``: seconds a close waits
    for the client's close reply. ``mutate``: see the module doc.

    Raises ``RecordingError`` (file:line) at construction if a file does not parse, and
    ``ConfigError`` for a negative speed or an empty recording set.
    """

    def __init__(
        self,
        recordings: Sequence[str | os.PathLike] | str | os.PathLike,
        host: str = "127.0.0.1",
        port: int = 0,
        speed: float = 0.0,
        once: bool = False,
        *,
        expected_connections: int = 1,
        linger: float = 0.3,
        mutate: Mutate | None = None,
        close_timeout: float = 2.0,
    ):
        if not speed >= 0.0:
            raise ConfigError(f"replay speed must be >= 0 (0 = as fast as possible), got {speed!r}")
        self.files = expand_paths(recordings)
        self.host = host
        self._port = port
        self.speed = float(speed)
        self.once = once
        self.expected_connections = int(expected_connections)
        self.linger = float(linger)
        self.mutate = mutate
        self.close_timeout = float(close_timeout)
        self.recs: list[_Rec] = []
        self._binance: list[_Rec] = []
        self._kraken: dict[tuple, _Rec] = {}
        self._futures: dict[tuple, _Rec] = {}
        self._hello: dict[str, str] = {}
        self._depth: dict[str, list[bytes]] = {}
        self._rest: dict[str, list[bytes]] = {}
        self._served: dict[object, int] = {}
        self._load()
        self._conns: set[_Conn] = set()
        self._runner: web.AppRunner | None = None
        self._done: asyncio.Event | None = None  # created in start(), inside the loop
        self.stats = {"connections": 0, "completed": 0, "frames_sent": 0, "rest_requests": 0}
        self._finished: set[str] = set()  # venues whose replay ran to the end (once mode)

    # loading ---------------------------------------------------------------
    def _load(self) -> None:
        for path in self.files:
            events = read_file(path)
            for ev in events:
                if ev.kind == "rest":
                    self._add_rest(ev)
            for s in ws_sessions(events):
                if s.venue is None:
                    _log.warning("replay: frames without a known venue URL skipped", source=s.source, frames=len(s.frames))
                    continue
                rec = _Rec(s.venue, s.url, s.source)
                for ev in s.frames:
                    rec.events.append(ev)
                    rec.ts.append(ev.ts)  # type: ignore[arg-type]
                    rec.payloads.append(ev.text.encode())
                    rec.keys.append(_index_frame(rec, ev))
                rec.finish()
                self.recs.append(rec)
                if rec.hello is not None:
                    self._hello.setdefault(rec.venue, rec.hello)
                if rec.venue == "binance":
                    self._binance.append(rec)
                else:
                    index = self._kraken if rec.venue == "kraken" else self._futures
                    for key in rec.status:
                        index.setdefault(key, rec)
        if not self.recs and not self._rest and not self._depth:
            raise ConfigError(f"replay: nothing to replay in {[str(f) for f in self.files]}")

    def _add_rest(self, ev: Event) -> None:
        from urllib.parse import parse_qs, urlsplit

        u = urlsplit(ev.url)
        body = ev.text.encode()
        if u.path.endswith("/depth") and venue_of_url(ev.url) == "binance":
            sym = (parse_qs(u.query).get("symbol") or [""])[0].upper()
            if sym:
                self._depth.setdefault(sym, []).append(body)
                return
        self._rest.setdefault(u.path, []).append(body)

    # lifecycle -------------------------------------------------------------
    async def start(self) -> None:
        """Bind and start serving. Raises ``OSError`` if the address is taken."""
        self._done = asyncio.Event()
        app = web.Application()
        app.router.add_route("GET", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, handle_signals=False, access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self._port)
        await site.start()
        self._port = self._runner.addresses[0][1]
        _log.info("replay listening", host=self.host, port=self._port, speed=self.speed,
                  files=[str(f) for f in self.files], ws_connections=len(self.recs))

    @property
    def port(self) -> int:
        """The bound TCP port (after :meth:`start`; the requested one before)."""
        return self._port

    def ws_url(self, venue: str) -> str:
        """Websocket base URL to put in a provider config instead of the venue's
        (Binance: append ``?streams=...``)."""
        return f"ws://{self.host}:{self._port}{WS_PATHS[venue]}"

    def rest_url(self, venue: str | None = None) -> str:
        """REST base URL (all venues share it): ``http://host:port``."""
        return f"http://{self.host}:{self._port}"

    @property
    def done(self) -> bool:
        """True once :meth:`wait_done` would return."""
        return self._done is not None and self._done.is_set()

    async def wait_done(self) -> None:
        """With ``once``: return when ``expected_connections`` connections have been replayed to
        the end and every subscribed connection is closed. Without: return after :meth:`stop`."""
        if self._done is None:
            raise RuntimeError("ReplayServer.start() was not called")
        await self._done.wait()

    async def stop(self) -> None:
        """Close every websocket (code 1001, waiting up to ``close_timeout`` for the clients'
        replies) and stop listening."""
        conns = list(self._conns)
        for c in conns:
            c.cancel()
            c.request_close(1001)
        if conns:
            await asyncio.wait([c.ended for c in conns], timeout=self.close_timeout)
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        if self._done is not None:
            self._done.set()

    async def __aenter__(self) -> "ReplayServer":
        await self.start()
        return self

    async def __aexit__(self, *exc) -> None:
        await self.stop()

    def _check_done(self) -> None:
        if (self.once and self._done is not None and self.stats["completed"] >= self.expected_connections
                and not any(c.subscribed for c in self._conns)):
            self._done.set()

    # HTTP ------------------------------------------------------------------
    async def _handle(self, request: web.Request) -> web.StreamResponse:
        if request.headers.get("Upgrade", "").lower() == "websocket":
            return await self._ws_route(request)
        self.stats["rest_requests"] += 1
        path = request.path
        if path in ("/api/v1/depth", "/api/v3/depth"):
            sym = request.query.get("symbol", "").upper()
            if not sym:
                return _json_error(400, {"code": -1102, "msg": "Mandatory parameter 'symbol' was not sent, was empty/null, or malformed."})
            bodies = self._depth.get(sym)
            if not bodies:
                return _json_error(400, {"code": -1121, "msg": "Invalid symbol."})
            return web.Response(body=self._next(("depth", sym), bodies), content_type=_JSON)
        bodies = self._rest.get(path)
        if bodies:
            return web.Response(body=self._next(path, bodies), content_type=_JSON)
        return _json_error(404, {"error": f"not recorded: {path}"})

    def _next(self, key: object, bodies: list[bytes]) -> bytes:
        k = self._served.get(key, 0)
        self._served[key] = k + 1
        return bodies[min(k, len(bodies) - 1)]

    async def _ws_route(self, request: web.Request) -> web.StreamResponse:
        path = request.path
        if path == "/stream" and self._binance:
            streams = request.query.get("streams", "")
            return await self._ws(request, "binance", False, streams.split("/") if streams else [])
        if path == "/ws/v1" and self._futures:
            return await self._ws(request, "kraken_futures", False, [])
        if (path == "/ws" or path.startswith("/ws/")) and self._binance:
            return await self._ws(request, "binance", True, [s for s in path[4:].split("/") if s])
        if path == "/" and self._kraken:
            return await self._ws(request, "kraken", False, [])
        return _json_error(404, {"error": f"no recorded websocket for {path}"})

    async def _ws(self, request: web.Request, venue: str, raw: bool, streams: list[str]) -> web.StreamResponse:
        if self.once and venue in self._finished:
            # a worker whose session ended reconnects, as it would to the venue; replaying the
            # session again would keep a once-server alive forever: refuse instead
            return _json_error(410, {"error": f"replay of {venue} finished (--once)"})
        ws = web.WebSocketResponse(compress=False, autoping=True, max_msg_size=1 << 20, timeout=self.close_timeout)
        await ws.prepare(request)
        conn = _Conn(self, request, ws, venue, raw)
        self._conns.add(conn)
        self.stats["connections"] += 1
        _log.debug("replay connection", venue=venue, path=request.path_qs[:200], peer=conn.peer)
        try:
            hello = self._hello.get(venue)
            if hello is not None:
                await conn.send_text(hello)
            if streams:
                self._binance_add(conn, streams)
                conn.subscription_known()
            # Closing from this task (not from the track's) lets aiohttp wait for the client's close
            # reply, so the client sees a clean 1000, as from the venue.
            while True:
                recv = asyncio.ensure_future(ws.receive())
                await asyncio.wait((recv, conn.close_req), return_when=asyncio.FIRST_COMPLETED)
                if not recv.done():
                    recv.cancel()
                    try:
                        await recv
                    except asyncio.CancelledError:
                        pass
                    conn.cancel()
                    await ws.close(code=conn.close_req.result(), message=b"end of recording" if conn.completed else b"replay stopped")
                    break
                msg = recv.result()
                if msg.type == _TEXT:
                    await self._on_message(conn, msg.data)
                elif msg.type in (WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED, WSMsgType.ERROR):
                    break
        except ConnectionError:
            pass
        finally:
            conn.cancel()
            if not conn.ended.done():
                conn.ended.set_result(None)
            self._conns.discard(conn)
            self.stats["frames_sent"] += conn.frames_sent
            if conn.completed:
                self.stats["completed"] += 1
                self._finished.add(venue)
            _log.debug("replay connection closed", venue=venue, frames=conn.frames_sent, completed=conn.completed)
            self._check_done()
        return ws

    async def _on_message(self, conn: _Conn, data: str) -> None:
        obj = _loads(data)
        if conn.venue == "binance":
            await self._binance_msg(conn, obj)
        elif conn.venue == "kraken":
            await self._kraken_msg(conn, obj)
        else:
            await self._futures_msg(conn, obj)

    # Binance ---------------------------------------------------------------
    def _binance_add(self, conn: _Conn, streams: Iterable[str]) -> None:
        want = {s.lower() for s in streams}
        for rec in self._binance:
            keys = want & rec.streams
            if keys:
                conn.add(rec, keys)

    async def _binance_msg(self, conn: _Conn, obj) -> None:
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
                self._binance_add(conn, params)
                conn.subscription_known()
            else:
                for rec in self._binance:
                    conn.remove(rec, {p.lower() for p in params})
        elif method == "LIST_SUBSCRIPTIONS":
            subs = sorted(set().union(*(t.filter for t in conn.tracks.values())))
            await conn.send_text(orjson.dumps({"result": subs, "id": rid}).decode())
        else:
            await conn.send_text(orjson.dumps({"code": 2, "msg": f"Invalid request: unknown method {method!r}", "id": rid}).decode())

    # Kraken v1 ---------------------------------------------------------------
    async def _kraken_msg(self, conn: _Conn, obj) -> None:
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
        chan = _kraken_channel(sub) if isinstance(sub, dict) else None
        if chan is None or not isinstance(pairs, list) or not pairs:
            await conn.send_text(orjson.dumps({"errorMessage": "Subscription name or pair missing", "event": "subscriptionStatus",
                                               "status": "error", "subscription": sub, **reqid}).decode())
            return
        groups: dict[int, tuple[_Rec, list]] = {}
        for p in pairs:
            key = (chan, str(p).upper())
            rec = self._kraken.get(key)
            if rec is None:
                await conn.send_text(orjson.dumps({"errorMessage": f"Currency pair not supported {p}", "event": "subscriptionStatus",
                                                   "pair": p, "status": "error", "subscription": sub, **reqid}).decode())
                continue
            groups.setdefault(id(rec), (rec, []))[1].append(key)
        for rec, keys in groups.values():
            keys.sort(key=rec.order.__getitem__)  # acks in recorded order
            for key in keys:
                if event == "subscribe":
                    await conn.send_text(_with_reqid(rec.status[key], reqid))
                else:
                    st = orjson.loads(rec.status[key])
                    st["status"] = "unsubscribed"
                    await conn.send_text(orjson.dumps({**st, **reqid}).decode())
        for rec, keys in groups.values():
            if event == "subscribe":
                if conn.heartbeat_from is None:
                    conn.heartbeat_from = rec
                    keys = keys + [_HEARTBEAT]
                conn.add(rec, keys)
            else:
                conn.remove(rec, keys)
        if event == "subscribe":
            conn.subscription_known()

    # Kraken Futures v1 -------------------------------------------------------
    async def _futures_msg(self, conn: _Conn, obj) -> None:
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
        groups: dict[int, tuple[_Rec, list]] = {}
        for p in pids:
            key = (feed, str(p).upper())
            rec = self._futures.get(key)
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


def _json_error(status: int, obj: dict) -> web.Response:
    return web.Response(status=status, body=orjson.dumps(obj), content_type=_JSON)


# ------------------------------------------------------------------ entry points


def _write_ready(path: str | os.PathLike, port: int) -> None:
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_name(p.name + ".tmp")
    tmp.write_text(f"{port}\n")
    os.replace(tmp, p)


async def serve(
    files: Sequence[str | os.PathLike],
    host: str = "127.0.0.1",
    port: int = 0,
    speed: float = 0.0,
    once: bool = False,
    ready_file: str | os.PathLike | None = None,
    *,
    expected_connections: int = 1,
    linger: float = 0.3,
    stop: asyncio.Event | None = None,
) -> dict:
    """Run a :class:`ReplayServer` until SIGINT/SIGTERM, ``stop`` is set, or (``once``) the
    replay is done. Once listening, writes the bound port (one line) to ``ready_file``
    atomically and logs it. Returns the server's ``stats``."""
    server = ReplayServer(files, host, port, speed, once, expected_connections=expected_connections, linger=linger)
    await server.start()
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    installed = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, stop.set)
            installed.append(sig)
        except (NotImplementedError, RuntimeError, ValueError):
            pass
    try:
        if ready_file is not None:
            _write_ready(ready_file, server.port)
        _log.info("replay ready", port=server.port, ready_file=str(ready_file) if ready_file else None)
        waits = [loop.create_task(stop.wait())]
        if once:
            waits.append(loop.create_task(server.wait_done()))
        done, pending = await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        for t in pending:
            t.cancel()
    finally:
        for sig in installed:
            loop.remove_signal_handler(sig)
        await server.stop()
    _log.info("replay finished", **server.stats)
    return server.stats


def run_replay(
    files: Sequence[str | os.PathLike],
    host: str = "127.0.0.1",
    port: int = 0,
    speed: float = 0.0,
    once: bool = False,
    ready_file: str | os.PathLike | None = None,
    expected_connections: int = 1,
) -> dict:
    """Blocking entry point for ``dm replay FILES... --host --port --speed --once``: runs
    :func:`serve` on uvloop (asyncio if uvloop is missing) and returns its stats. Raises
    ``RecordingError`` / ``ConfigError`` before listening if the recordings are unusable."""
    try:
        import uvloop

        factory = uvloop.new_event_loop
    except ImportError:  # pragma: no cover
        factory = None
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(serve(files, host, port, speed, once, ready_file, expected_connections=expected_connections))
