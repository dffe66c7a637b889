"""Local venue server that replays cryptofeed recordings (``dm replay``): the venue-independent
core.

It stands in for every registered venue (``dm.venues``): a dm worker talks to it exactly as to
the venue, only the URLs in its config differ (:meth:`ReplayServer.ws_url` /
:meth:`ReplayServer.rest_url`). Every recorded frame's text is sent verbatim, one websocket text
frame per recorded frame, in recorded order, at the recorded pace divided by ``speed``
(``speed=0``: as fast as the socket takes them, from pre-encoded payloads), or at a fixed
``rate`` of frames per second per connection (benchmarks: latency at a known load).

One HTTP server serves all venues (a GET with ``Upgrade: websocket`` is a websocket). How each
venue's websocket and REST behave — which paths it answers, what a subscribe message looks like,
which recorded frames a subscription draws, venue-specific REST endpoints — is the venue's
replay handler, a :class:`VenueReplay` subclass in ``dm/venues/<venue>/replay.py`` (its module
docstring lists its endpoints). A recorded websocket connection belongs to the venue whose
``hosts`` its URL names (``dm.venues.venue_of_url``). Websocket paths: every venue's exact paths
are tried first, then path prefixes; a venue with nothing recorded answers none. Any other
recorded REST path is served by path (query ignored; several recorded bodies are served in
order, then the latest again); the rest is 404.

Timeline: a connection's clock starts when its subscription is known (URL streams at connect, or
the first subscribe message). A frame recorded at TS ``t`` is sent at
``clock_start + (t - t0) / speed`` where ``t0`` is the TS of the first data frame the connection
receives. Later subscriptions on the same connection drawing from the same recorded session share
that clock (frames already due are sent at once); every recorded frame of a subscribed
channel/stream is sent exactly once, even if subscribed late. Control replies (acks, pong,
subscriptionStatus) are sent at once. When every subscription of a connection is exhausted and no
new subscription arrives within ``linger`` seconds, the server closes it (code 1000). With
``once=True``, a venue whose replay ran to the end on a websocket path refuses further connections
to that path (HTTP 410, so a worker that reconnects does not restart the session; a venue's other
paths, e.g. Bybit's other categories, stay open) and :meth:`ReplayServer.wait_done` returns once ``expected_connections`` connections
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
from urllib.parse import SplitResult, urlsplit

import orjson
from aiohttp import WSMsgType, web

from dm import log as dmlog
from dm import venues
from dm.errors import ConfigError
from dm.recording import Event, expand_paths, read_file, ws_sessions

__all__ = ["ReplayServer", "VenueReplay", "serve", "run_replay", "HEARTBEAT_KEY", "json_error", "loads_or_none"]

_log = dmlog.get("dm.replay")

_TEXT = WSMsgType.TEXT
#: subscription key of a venue's recorded heartbeat frames (a handler's ``index_frame`` returns
#: it; the handler decides which connection draws them)
HEARTBEAT_KEY = ("heartbeat", "")
_JSON = "application/json"
_YIELD_EVERY = 256  # frames sent back to back at speed 0 before yielding to the event loop
_BATCH_BYTES = 1 << 16  # speed 0: bytes of pre-built frames per transport write
_EARLY_S = 0.0005  # a frame due within this is sent now rather than after a sleep

Mutate = Callable[[Event], "str | None"]


# ------------------------------------------------------------------ recorded connections


class _Rec:
    """One recorded websocket connection indexed for replay: per data frame its TS, pre-encoded
    payload and subscription key (from the venue handler's :meth:`VenueReplay.index_frame`;
    ``None``: not a data frame). ``status``/``hello`` are filled by the handler too."""

    __slots__ = ("venue", "handler", "url", "source", "events", "ts", "payloads", "keys", "first_ts", "last_ts",
                 "status", "order", "hello", "_raw", "_wire", "_raw_wire", "streams")

    def __init__(self, handler: "VenueReplay", url: str, source: str):
        self.venue = handler.kind
        self.handler = handler
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
        """The venue's raw form (:meth:`VenueReplay.raw_text`) of every frame, built on first use."""
        if self._raw is None:
            raw = self.handler.raw_text
            self._raw = [raw(ev.text).encode() for ev in self.events]
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


def loads_or_none(text: str):
    """The JSON value of a client message, ``None`` when it is not JSON."""
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        return None


# ------------------------------------------------------------------ per connection


def _wake(fut: asyncio.Future) -> None:
    if not fut.done():
        fut.set_result(None)


class _Track:
    """The frames one connection receives from one recorded connection, with a mutable filter."""

    __slots__ = ("conn", "rec", "filter", "seen", "pos", "pending", "waiter", "task", "wall0", "ts0", "paced")

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
        self.paced = 0  # frames sent under a fixed rate

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
        rate = conn.server.rate
        loop = asyncio.get_running_loop()
        send = conn.send_frame
        fast = (speed == 0.0 or rate > 0.0) and conn.server.mutate is None
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
                    if speed > 0.0 and rate == 0.0 and not fast:
                        # paced: time passes over frames nobody subscribed too, so a channel
                        # subscribed later starts at the recording's present, not at its end
                        # (a track whose channels have no frames would otherwise run to the end
                        # at once and send every later subscription's frames unpaced)
                        if self.wall0 is None:
                            self.wall0, self.ts0 = conn.clock_for(rec, ts[i])
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
                    continue
                if rate > 0.0:
                    # fixed rate: frame k of the connection is due at wall0 + k / rate; what is due
                    # goes out in one transport write (pre-built frames), then wait for the next
                    due = int((loop.time() - self.wall0) * rate) + 1 - self.paced
                    if due <= 0:
                        await asyncio.sleep(max(0.0, self.wall0 + self.paced / rate - loop.time()))
                        continue
                    flt, parts, j = self.filter, [], i
                    while j < n and len(parts) < due:
                        if keys[j] in flt:
                            parts.append(wire[j] if fast else j)
                        j += 1
                    self.pos = j
                    self.paced += len(parts)
                    if fast:
                        await conn.write_batch(parts)
                    else:
                        for k in parts:
                            await send(rec, k)
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

    def __init__(self, server: "ReplayServer", request: web.Request, ws: web.WebSocketResponse,
                 handler: "VenueReplay", raw: bool):
        self.server = server
        self.request = request
        self.transport = request.transport
        self.ws = ws
        self.handler = handler
        self.venue = handler.kind
        self.raw = raw  # the venue's raw form of each frame (VenueReplay.raw_text)
        self.peer = str(request.remote)
        self.tracks: dict[int, _Track] = {}
        self.clock: tuple[float, float, float, float] | None = None
        self.subscribed = False
        self.completed = False
        self.lost = False
        self.heartbeat_from: _Rec | None = None  # the recording whose heartbeats it draws (handler's choice)
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
                text = self.handler.raw_text(text)
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
    """Replays recordings as the venues that sent them (every registered venue's
    :class:`VenueReplay`) over HTTP + websocket.

    ``recordings``: recording files or folders (a folder = the cryptofeed files in it, e.g. a split
    session); every websocket connection recorded in them becomes replayable, every REST line
    servable. ``host``/``port``: where to listen (``port=0``: any free port, read :attr:`port`
    after :meth:`start`). ``speed``: pace factor (1.0 = recorded pace, 10.0 = ten times faster,
    0 = as fast as possible). ``rate``: frames per second per connection instead (> 0: a fixed
    pace whatever the recorded one; frames due together go out in one write). ``once``: :meth:`wait_done` returns after ``expected_connections``
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
        rate: float = 0.0,
    ):
        if not speed >= 0.0:
            raise ConfigError(f"replay speed must be >= 0 (0 = as fast as possible), got {speed!r}")
        if not rate >= 0.0:
            raise ConfigError(f"replay rate must be >= 0 frames/s (0 = paced by speed), got {rate!r}")
        self.rate = float(rate)
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
        #: kind -> the venue's replay handler, one per registered venue
        self.handlers: dict[str, VenueReplay] = {k: venues.venue(k).replay_class()(self) for k in venues.kinds()}
        self._hello: dict[str, str] = {}
        self._rest: dict[str, list[bytes]] = {}
        self._served: dict[object, int] = {}
        self._load()
        self._conns: set[_Conn] = set()
        self._runner: web.AppRunner | None = None
        self._done: asyncio.Event | None = None  # created in start(), inside the loop
        self.stats = {"connections": 0, "completed": 0, "frames_sent": 0, "rest_requests": 0}
        # (venue, websocket path) whose replay ran to the end (once mode): per path, because a
        # venue may open one connection per path (Bybit: /v5/public/spot, /v5/public/linear)
        self._finished: set[tuple[str, str]] = set()

    # loading ---------------------------------------------------------------
    def _load(self) -> None:
        for path in self.files:
            events = read_file(path)
            for ev in events:
                if ev.kind == "rest":
                    self._add_rest(ev)
            for s in ws_sessions(events):
                handler = self.handlers.get(s.venue) if s.venue is not None else None
                if handler is None:
                    _log.warning("replay: frames without a known venue URL skipped", source=s.source, frames=len(s.frames))
                    continue
                rec = _Rec(handler, s.url, s.source)
                index_frame = handler.index_frame
                for ev in s.frames:
                    rec.events.append(ev)
                    rec.ts.append(ev.ts)  # type: ignore[arg-type]
                    rec.payloads.append(ev.text.encode())
                    rec.keys.append(index_frame(rec, ev))
                rec.finish()
                self.recs.append(rec)
                if rec.hello is not None:
                    self._hello.setdefault(rec.venue, rec.hello)
                handler.add_recording(rec)
        if not self.recs and not self._rest and not any(h.loaded() for h in self.handlers.values()):
            raise ConfigError(f"replay: nothing to replay in {[str(f) for f in self.files]}")

    def _add_rest(self, ev: Event) -> None:
        u = urlsplit(ev.url)
        body = ev.text.encode()
        handler = self.handlers.get(venues.venue_of_url(ev.url))
        if handler is not None and handler.add_rest(u, body):
            return
        self._rest.setdefault(u.path, []).append(body)

    # lifecycle -------------------------------------------------------------
    async def start(self) -> None:
        """Bind and start serving. Raises ``OSError`` if the address is taken."""
        self._done = asyncio.Event()
        app = web.Application()
        app.router.add_route("GET", "/{tail:.*}", self._handle)
        # long request lines: a Binance URL naming a stream per symbol and channel (benches use 1,000 symbols)
        self._runner = web.AppRunner(app, handle_signals=False, access_log=None, shutdown_timeout=1.0,
                                     max_line_size=1 << 20, max_field_size=1 << 16)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self._port)
        await site.start()
        self._port = self._runner.addresses[0][1]
        _log.info("replay listening", host=self.host, port=self._port, speed=self.speed, rate=self.rate,
                  files=[str(f) for f in self.files], ws_connections=len(self.recs))

    @property
    def port(self) -> int:
        """The bound TCP port (after :meth:`start`; the requested one before)."""
        return self._port

    def ws_url(self, venue: str) -> str:
        """Websocket base URL to put in a provider config instead of the venue's (its
        handler's ``ws_path``; a venue that subscribes in the URL appends its query)."""
        return f"ws://{self.host}:{self._port}{self.handlers[venue].ws_path}"

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
        for handler in self.handlers.values():
            resp = handler.rest(request)
            if resp is not None:
                return resp
        path = request.path
        bodies = self._rest.get(path)
        if bodies:
            return json_response(self.next_body(path, bodies))
        return json_error(404, {"error": f"not recorded: {path}"})

    def next_body(self, key: object, bodies: list[bytes]) -> bytes:
        """The next of several recorded bodies served under ``key``: in recorded order, then the
        latest again."""
        k = self._served.get(key, 0)
        self._served[key] = k + 1
        return bodies[min(k, len(bodies) - 1)]

    def _ws_handler(self, path: str) -> "VenueReplay | None":
        """The venue serving websocket ``path``: exact paths of every venue first, then path
        prefixes; only venues with something recorded answer."""
        active = [h for h in self.handlers.values() if h.active()]
        for h in active:
            if path in h.ws_exact:
                return h
        for h in active:
            for pre in h.ws_prefixes:
                if path == pre or path.startswith(pre + "/"):
                    return h
        return None

    async def _ws_route(self, request: web.Request) -> web.StreamResponse:
        path = request.path
        handler = self._ws_handler(path)
        if handler is None:
            return json_error(404, {"error": f"no recorded websocket for {path}"})
        raw, streams = handler.connect(request)
        return await self._ws(request, handler, raw, streams)

    async def _ws(self, request: web.Request, handler: "VenueReplay", raw: bool, streams: list[str]) -> web.StreamResponse:
        venue = handler.kind
        if self.once and (venue, request.path) in self._finished:
            # a worker whose session ended reconnects, as it would to the venue; replaying the
            # session again would keep a once-server alive forever: refuse instead
            return json_error(410, {"error": f"replay of {venue} finished (--once)"})
        ws = web.WebSocketResponse(compress=False, autoping=True, max_msg_size=1 << 20, timeout=self.close_timeout)
        await ws.prepare(request)
        conn = _Conn(self, request, ws, handler, raw)
        self._conns.add(conn)
        self.stats["connections"] += 1
        _log.debug("replay connection", venue=venue, path=request.path_qs[:200], peer=conn.peer)
        try:
            hello = self._hello.get(venue)
            if hello is not None:
                await conn.send_text(hello)
            if streams:
                handler.subscribe_url_streams(conn, streams)
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
                self._finished.add((venue, request.path))
            _log.debug("replay connection closed", venue=venue, frames=conn.frames_sent, completed=conn.completed)
            self._check_done()
        return ws

    async def _on_message(self, conn: _Conn, data: str) -> None:
        await conn.handler.on_text(conn, data)


# ------------------------------------------------------------------ venue handlers


class VenueReplay:
    """How one venue's websocket and REST behave on the replay server: subclassed in
    ``dm/venues/<venue>/replay.py`` (found through ``dm.venues.venue(kind).replay_class()``).
    One instance per :class:`ReplayServer` and venue; ``self.server`` is the server,
    ``self.recs`` the venue's recorded websocket connections (:meth:`add_recording`).

    Class attributes: ``ws_path`` — the venue's websocket path on its host (what
    :meth:`ReplayServer.ws_url` gives); ``ws_exact`` — websocket paths this venue answers;
    ``ws_prefixes`` — path prefixes it answers (``/ws`` matches ``/ws`` and ``/ws/...``), tried
    after every venue's exact paths.

    Hooks (defaults: nothing venue-specific): :meth:`index_frame` (required),
    :meth:`add_recording`, :meth:`add_rest`, :meth:`rest`, :meth:`connect`,
    :meth:`subscribe_url_streams`, :meth:`on_message` (required), :meth:`raw_text`,
    :meth:`active`, :meth:`loaded`. Handlers subscribe a connection with ``conn.add(rec,
    keys)`` / ``conn.remove(rec, keys)``, call ``conn.subscription_known()`` once a subscribe
    request was handled, and reply with ``await conn.send_text(text)``."""

    kind = ""
    ws_path = "/"
    ws_exact: tuple[str, ...] = ()
    ws_prefixes: tuple[str, ...] = ()

    def __init__(self, server: "ReplayServer"):
        self.server = server
        self.recs: list[_Rec] = []

    # loading ---------------------------------------------------------------
    def index_frame(self, rec: _Rec, ev: Event) -> object:
        """Subscription key of one recorded frame of ``rec`` (``None``: not a data frame, never
        sent by a subscription; :data:`HEARTBEAT_KEY` for heartbeats). May record the
        connection's greeting in ``rec.hello`` (sent on connect) and subscription acks in
        ``rec.status[key]`` (first one wins; ``rec.order`` keeps their recorded order)."""
        raise NotImplementedError

    def add_recording(self, rec: _Rec) -> None:
        """A recorded connection of this venue, indexed (``rec.keys``, ``rec.status``)."""
        self.recs.append(rec)

    def add_rest(self, url: SplitResult, body: bytes) -> bool:
        """A recorded REST answer of this venue; True when the handler keeps it itself (served
        by :meth:`rest`), False to serve it by path."""
        return False

    def loaded(self) -> bool:
        """Whether anything of this venue was recorded."""
        return bool(self.recs)

    def active(self) -> bool:
        """Whether the venue's websocket paths are served (something to replay)."""
        return bool(self.recs)

    # serving ---------------------------------------------------------------
    def rest(self, request: web.Request) -> web.StreamResponse | None:
        """Answer a REST request the venue handles itself (``None``: not one of its endpoints)."""
        return None

    def connect(self, request: web.Request) -> tuple[bool, list[str]]:
        """``(raw, streams)`` of a websocket connect: ``raw`` selects :meth:`raw_text` for every
        frame sent; ``streams`` are subscriptions named in the URL (none: the client subscribes
        by message)."""
        return False, []

    def subscribe_url_streams(self, conn: _Conn, streams: list[str]) -> None:
        """Subscribe ``conn`` to the streams its URL named (see :meth:`connect`)."""

    async def on_message(self, conn: _Conn, obj) -> None:
        """A client message (parsed JSON, ``None`` when not JSON): subscribe, ping, ..."""
        raise NotImplementedError

    async def on_text(self, conn: _Conn, text: str) -> None:
        """A client text message as received; by default parsed and handed to
        :meth:`on_message`. A venue whose protocol has non-JSON messages (OKX's ``ping``)
        overrides it."""
        await self.on_message(conn, loads_or_none(text))

    def raw_text(self, text: str) -> str:
        """The frame as sent on a raw connection (``connect`` returned ``raw``)."""
        return text


def json_response(body: bytes, status: int = 200) -> web.Response:
    """A recorded JSON body as the venue sent it."""
    return web.Response(status=status, body=body, content_type=_JSON)


def json_error(status: int, obj: dict) -> web.Response:
    """A JSON error answer (``obj`` serialised)."""
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
    rate: float = 0.0,
) -> dict:
    """Run a :class:`ReplayServer` until SIGINT/SIGTERM, ``stop`` is set, or (``once``) the
    replay is done. Once listening, writes the bound port (one line) to ``ready_file``
    atomically and logs it. Returns the server's ``stats``."""
    server = ReplayServer(files, host, port, speed, once, expected_connections=expected_connections, linger=linger, rate=rate)
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
    rate: float = 0.0,
) -> dict:
    """Blocking entry point for ``dm replay FILES... --host --port --speed --rate --once``: runs
    :func:`serve` on uvloop (asyncio if uvloop is missing) and returns its stats. Raises
    ``RecordingError`` / ``ConfigError`` before listening if the recordings are unusable."""
    try:
        import uvloop

        factory = uvloop.new_event_loop
    except ImportError:  # pragma: no cover
        factory = None
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(serve(files, host, port, speed, once, ready_file, expected_connections=expected_connections, rate=rate))
