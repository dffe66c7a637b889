"""The remote reader: dm channels from NATS JetStream, with the API of the shm client.

    from dm.client import Client
    with Client(url="nats://host:4222", instance="prod") as client:
        sub = client.subscribe("BTCUSD", exchange="BINANCE", start="oldest")
        for rec in sub:                         # dm.records.Trade / Bbo / ... or Overrun
            ...
        # also sub.read(timeout=0.5), sub.read_batch(4096) -> numpy structured array, async for

``dm.client.Client(url=...)`` returns a ``RemoteClient``; this module is imported only then, so
``import dm.client`` never imports nats. Records are what ``dm bridge`` published (wire format:
``dm/nats_wire.py``), in the channel's order, each exactly once.

Each subscription is a JetStream push consumer of its own (ephemeral, no acks, flow control, idle
heartbeats every ``heartbeat_s``) on ``dm.<instance>.<EXCHANGE>.<SYMBOL>.*`` (or the chosen
schemas) that this module re-creates from the last stream sequence it received + 1 whenever
something is wrong: a reconnect (a restarted server forgets ephemeral consumers), a consumer
sequence that skipped, or no heartbeat for ``3 × heartbeat_s``. So a reader that disconnects
resumes from its last sequence: nothing lost, nothing twice (``nats_wire.Reassembler`` also
drops any message it already delivered). ``sub.resume_token`` passed as ``start=`` resumes
exactly after the last record returned, in this process or a new one.

Records the stream no longer holds (retention) or never received arrive as ``Overrun(lost)``,
counted in ``lost_records`` like a lapped shm reader. The NATS connection and consumers live on
one background thread (asyncio) per client; ``read`` waits on a queue fed by that thread.
"""
from __future__ import annotations

import asyncio
import queue
import threading
import time
from typing import Iterator

import numpy as np

from dm import nats_wire as wire
from dm.errors import DmError, RingError
from dm.records import DTYPES, unpack


class RemoteError(DmError):
    """The NATS server or the stream cannot be reached, or refuses a consumer."""


def _overrun(n: int):
    from dm.client import Overrun

    return Overrun(n)


class RemoteSubscription:
    """One channel from JetStream; the reading API of ``dm.client.Subscription``.

    ``start``: ``"oldest"`` (everything the stream still holds), ``"newest"`` (what is published
    from now on), a stream sequence (int), or a ``resume_token`` saved from another
    subscription (``(sequence, records to skip)``: resume exactly after its last record). ``schemas``:
    subset of ``nats_wire.SCHEMAS`` (None: every schema, in the channel's exact order)."""

    def __init__(self, client: "RemoteClient", symbol: str, exchange: str, stream: str, start, schemas=None,
                 heartbeat_s: float = 1.0, reorder_s: float = 2.0):
        self.client = client
        self.symbol, self.exchange, self.stream = symbol, exchange, stream
        self.name = wire.channel_subject(client.instance, exchange, symbol, "*")
        self.schemas = None if schemas is None else tuple(schemas)
        if self.schemas is not None:
            bad = set(self.schemas) - set(wire.SCHEMAS)
            if bad:
                raise ValueError(f"unknown schema(s) {sorted(bad)}; known: {wire.SCHEMAS}")
        self.filters = [self.name] if self.schemas is None else [wire.channel_subject(client.instance, exchange, symbol, s) for s in self.schemas]
        self._skip = 0
        if isinstance(start, tuple):
            start, self._skip = int(start[0]), int(start[1])
        self.start = start
        self._group = (start if isinstance(start, int) else 0, 0)  # (group_seq, records of it taken)
        self.heartbeat_s = heartbeat_s
        self.reasm = wire.Reassembler(self.schemas, reorder_s=reorder_s)
        self.q: queue.SimpleQueue = queue.SimpleQueue()
        self.overruns = 0
        self.lost_records = 0
        self.busy_poll = False
        self.last_sequence = 0  # stream sequence of the last message received
        self.resets = 0
        self.messages = 0
        self.closed = False
        # loop-thread state
        self._sub = None
        self._consumer: str | None = None
        self._cseq = 0
        self._activity = time.monotonic()
        self._resetting = False
        # reader-thread state: current chunk
        self._chunk: bytes = b""
        self._size = 0
        self._off = 0
        self._pending_rec: bytes | None = None

    # -- loop thread: consumer --------------------------------------------------------------
    async def _start_consumer(self) -> None:
        from nats.js import api

        nc, js = self.client.nc, self.client.js
        inbox = nc.new_inbox()
        if self.last_sequence:
            policy, seq = api.DeliverPolicy.BY_START_SEQUENCE, self.last_sequence + 1
        elif self.start == "oldest":
            policy, seq = api.DeliverPolicy.ALL, None
        elif isinstance(self.start, int):
            policy, seq = api.DeliverPolicy.BY_START_SEQUENCE, max(1, self.start)
        else:  # "newest": resolved to a sequence at subscribe time
            policy, seq = api.DeliverPolicy.BY_START_SEQUENCE, self._newest_seq
        cfg = api.ConsumerConfig(
            deliver_subject=inbox, deliver_policy=policy, opt_start_seq=seq, ack_policy=api.AckPolicy.NONE,
            flow_control=True, idle_heartbeat=self.heartbeat_s, mem_storage=True, num_replicas=1,
            inactive_threshold=max(5.0, 5 * self.heartbeat_s), max_deliver=1)
        # one filter subject (several need NATS 2.10): a subset of schemas is filtered here
        cfg.filter_subject = self.filters[0] if len(self.filters) == 1 else self.name
        self._cseq = 0
        self._sub = await nc.subscribe(inbox, cb=self._on_msg)
        try:
            info = await js.add_consumer(self.stream, cfg)
        except BaseException:
            await self._sub.unsubscribe()
            self._sub = None
            raise
        self._consumer = info.name
        self._activity = time.monotonic()

    async def _stop_consumer(self) -> None:
        sub, name = self._sub, self._consumer
        self._sub = self._consumer = None
        if sub is not None:
            try:
                await sub.unsubscribe()
            except Exception:  # noqa: BLE001 - connection gone: the server drops it anyway
                pass
        if name is not None and self.client.nc.is_connected:
            try:
                await self.client.js.delete_consumer(self.stream, name)
            except Exception:  # noqa: BLE001 - ephemeral: the server removes it when idle
                pass

    async def reset(self, why: str) -> None:
        """Re-create the consumer from ``last_sequence + 1``."""
        if self._resetting or self.closed:
            return
        self._resetting = True
        try:
            await self._stop_consumer()
            self.resets += 1
            await self._start_consumer()
            self.client.log("consumer re-created", subject=self.name, reason=why, from_seq=self.last_sequence + 1)
        except Exception as e:  # noqa: BLE001 - server still coming back: the watchdog retries
            self.client.log("consumer re-create failed; retrying", subject=self.name, reason=why, error=repr(e))
            self._activity = time.monotonic() - 2 * self.heartbeat_s
        finally:
            self._resetting = False

    async def _on_msg(self, msg) -> None:
        self._activity = time.monotonic()
        h = msg.headers
        if h and h.get("Status"):
            if msg.reply:  # flow control request
                await self.client.nc.publish(msg.reply)
            stalled = h.get("Nats-Consumer-Stalled")
            if stalled:
                await self.client.nc.publish(stalled)
            last = h.get("Nats-Last-Consumer")
            if last is not None and int(last) != self._cseq:
                asyncio.get_running_loop().create_task(self.reset(f"heartbeat: consumer at {last}, received {self._cseq}"))
            return
        try:
            md = msg.metadata
        except Exception:  # noqa: BLE001 - not a JetStream delivery
            return
        sseq, cseq = md.sequence.stream, md.sequence.consumer
        if cseq != self._cseq + 1 and self._cseq:
            asyncio.get_running_loop().create_task(self.reset(f"consumer sequence {cseq} after {self._cseq}"))
            self._cseq = cseq
            return
        self._cseq = cseq
        if sseq <= self.last_sequence:
            return  # re-delivered
        self.last_sequence = sseq
        self.messages += 1
        try:
            schema = msg.subject.rsplit(".", 1)[1]
            if self.schemas is not None and schema not in self.schemas:
                return
            hdr = wire.parse_headers(h)
        except (ValueError, KeyError, IndexError) as e:
            self.q.put(("error", RemoteError(f"{msg.subject} seq {sseq}: {e}")))
            return
        for item in self.reasm.add(schema, msg.data, hdr, sseq):
            self.q.put(item)

    async def _watch(self) -> None:
        """Consumer health and the reassembler's bounded wait (loop thread)."""
        while not self.closed:
            await asyncio.sleep(min(0.25, self.heartbeat_s))
            for item in self.reasm.poll():
                self.q.put(item)
            if self.client.nc.is_connected and time.monotonic() - self._activity > 3 * self.heartbeat_s:
                await self.reset("no heartbeat")

    @property
    def resume_token(self) -> tuple[int, int]:
        """``(stream sequence, records to skip)``: pass as ``start=`` to a new subscription (in
        this process or another) to receive exactly the records after the last one this
        subscription returned: it restarts at the group being read and skips what was taken."""
        seq, taken = self._group
        if not seq:
            return (self.last_sequence + 1 if self.last_sequence else 1, 0)
        return (seq, taken)

    # -- reader thread ------------------------------------------------------------------------
    def _next_item(self, timeout: float | None) -> bool:
        """Load the next chunk; False on timeout. Lost-record items are accounted and kept in
        ``_lost_pending`` for ``read``."""
        try:
            item = self.q.get(timeout=timeout) if timeout is None or timeout > 0 else self.q.get_nowait()
        except queue.Empty:
            return False
        kind = item[0]
        if kind == "records":
            _, self._chunk, self._size, n, gseq = item
            self._off = 0
            if gseq != self._group[0]:
                self._group = (gseq, 0)
            if self._skip:
                k = min(self._skip, n)
                self._skip -= k
                self._off = k * self._size
                self._group = (gseq, self._group[1] + k)
            return True
        if kind == "lost":
            self.overruns += 1
            self.lost_records += item[1]
            self._lost = item[1]
            return True
        if kind == "closed":
            raise RingError(f"{self.name}: subscription closed")
        raise item[1]

    _lost = 0

    def read_raw(self, timeout: float | None = 0.0) -> bytes | None:
        """Next record's bytes, waiting up to ``timeout`` s (None: forever, 0: do not wait).
        Raises ``RingError`` after ``close()``."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while self._off >= len(self._chunk):
            if self.closed:
                raise RingError(f"{self.name}: subscription closed")
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            if not self._next_item(left):
                return None
            self._lost = 0
        o = self._off
        self._off = o + self._size
        self._group = (self._group[0], self._group[1] + 1)
        return self._chunk[o:o + self._size]

    def read(self, timeout: float | None = 0.0):
        """Next record as a ``dm.records`` namedtuple, ``Overrun(lost)`` when records were lost
        just before it, or None on timeout."""
        if self._pending_rec is not None:
            rec, self._pending_rec = self._pending_rec, None
            return unpack(rec)
        deadline = None if timeout is None else time.monotonic() + timeout
        while self._off >= len(self._chunk):
            if self.closed:
                raise RingError(f"{self.name}: subscription closed")
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            if not self._next_item(left):
                return None
            if self._lost:
                n, self._lost = self._lost, 0
                return _overrun(n)
        o = self._off
        self._off = o + self._size
        self._group = (self._group[0], self._group[1] + 1)
        return unpack(self._chunk[o:o + self._size])

    def read_batch(self, max_records: int = 4096) -> np.ndarray | None:
        """Up to ``max_records`` records of one rtype as a numpy structured array
        (``dm.records.DTYPES[rtype]``), or None when nothing is new (does not wait). Losses are
        counted in ``lost_records``."""
        if max_records < 1:
            raise ValueError("max_records must be >= 1")
        while self._off >= len(self._chunk):
            if not self._next_item(0):
                return None
            self._lost = 0
        n = min(max_records, (len(self._chunk) - self._off) // self._size)
        rt = self._chunk[self._off + 1]
        dt = DTYPES.get(rt)
        if dt is None or dt.itemsize != self._size:
            dt = np.dtype((np.void, self._size))
        arr = np.frombuffer(self._chunk, dtype=dt, count=n, offset=self._off).copy()
        self._off += n * self._size
        self._group = (self._group[0], self._group[1] + n)
        return arr

    def __iter__(self) -> Iterator:
        """Records (and ``Overrun``) until ``close()`` (a remote channel has no end)."""
        while not self.closed:
            try:
                rec = self.read(timeout=0.5)
            except RingError:
                return
            if rec is not None:
                yield rec

    async def __aiter__(self):
        while not self.closed:
            rec = self.read(0)
            if rec is None:
                await asyncio.sleep(0.0005)
                continue
            yield rec

    def producer_state(self) -> str:
        """``live`` while the NATS connection is up, ``stale`` while it is down, ``closed``."""
        if self.closed:
            return "closed"
        return "live" if self.client.nc is not None and self.client.nc.is_connected else "stale"

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self.q.put(("closed",))
        if self.client.loop.is_running():
            async def stop():
                t = getattr(self, "_watch_task", None)
                if t is not None:
                    t.cancel()
                await self._stop_consumer()

            try:
                self.client.call(stop(), 5.0)
            except Exception:  # noqa: BLE001
                pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class RemoteClient:
    """``dm.client.Client(url="nats://HOST:4222", instance=...)``: channels of ``instance`` that
    a ``dm bridge`` publishes. Raises ``RemoteError`` when NATS is not reachable within
    ``connect_timeout`` s. The client then reconnects by itself, forever."""

    def __init__(self, url: str, instance: str | None, *, stream: str | None = None, connect_timeout: float = 5.0,
                 heartbeat_s: float = 1.0):
        if not instance:
            raise RemoteError("a remote dm client needs instance= (subjects are dm.<instance>.<EXCHANGE>.<SYMBOL>.<schema>)")
        self.url, self.instance, self.stream = url, instance, stream
        self.heartbeat_s = heartbeat_s
        self.subscriptions: list[RemoteSubscription] = []
        self.nc = self.js = None
        self.reconnects = 0
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name=f"dm-remote-{instance}", daemon=True)
        self.thread.start()
        try:
            self.call(self._connect(connect_timeout), connect_timeout + 5)
        except BaseException:
            self._stop_loop()
            raise

    def log(self, event: str, **kw) -> None:
        from dm import log as dmlog

        dmlog.get("dm.remote").info(event, **kw)

    def call(self, coro, timeout: float | None = None):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    async def _connect(self, timeout: float) -> None:
        import nats

        async def reconnected():
            self.reconnects += 1
            for s in list(self.subscriptions):
                asyncio.get_running_loop().create_task(s.reset("reconnected"))

        async def error(e):
            pass  # visible through reconnects/resets; a reader process must not spam its log

        try:
            self.nc = await nats.connect(self.url, name=f"dm-remote-{self.instance}", connect_timeout=timeout,
                                         max_reconnect_attempts=-1, reconnect_time_wait=0.25, allow_reconnect=True,
                                         reconnected_cb=reconnected, error_cb=error)
        except Exception as e:  # noqa: BLE001
            from dm.bridge import safe_url

            raise RemoteError(f"cannot reach NATS at {safe_url(self.url)}: {e!r}") from None
        self.js = self.nc.jetstream(timeout=timeout)

    async def _stream_for(self, subject: str) -> str:
        if self.stream:
            return self.stream
        return await self.js.find_stream_name_by_subject(subject)

    async def _subjects(self, filt: str) -> dict[str, int]:
        try:
            stream = await self._stream_for(filt)
            info = await self.js.stream_info(stream, subjects_filter=filt)
        except Exception:  # noqa: BLE001 - no stream yet
            return {}
        return dict(info.state.subjects or {})

    def channels(self) -> list[tuple[str, str, str]]:
        """Bridged channels as ``(exchange, symbol, subject)`` with subject
        ``dm.<instance>.<EXCHANGE>.<SYMBOL>.*``."""
        subs = self.call(self._subjects(f"dm.{wire.token(self.instance)}.>"), 30)
        out = set()
        for s in subs:
            try:
                _, ex, sym, _ = wire.parse_subject(s)
            except ValueError:
                continue
            out.add((ex, sym, wire.channel_subject(self.instance, ex, sym, "*")))
        return sorted(out)

    def subscribe(self, symbol: str, exchange: str, *, start="oldest", wait: float = 5.0, busy_poll: bool = False,
                  schemas=None, reorder_s: float = 2.0) -> RemoteSubscription:
        """Subscribe to a canonical symbol on an exchange, as ``dm.client.Client.subscribe``.
        Raises ``RingError`` when the stream holds no such channel within ``wait`` s (with
        ``start="newest"`` the channel need not have records yet), ``RemoteError`` when NATS
        refuses the consumer. ``busy_poll`` is accepted and ignored (the network dominates)."""
        symbol, exchange = symbol.upper(), exchange.upper()
        if start not in ("oldest", "newest") and not (isinstance(start, int) and start >= 1) and not (
                isinstance(start, tuple) and len(start) == 2 and start[0] >= 1 and start[1] >= 0):
            raise ValueError(f"start must be 'oldest', 'newest', a stream sequence >= 1 or a resume_token, not {start!r}")
        filt = wire.channel_subject(self.instance, exchange, symbol, "*")
        deadline = time.monotonic() + wait
        stream = None
        while True:
            try:
                stream = self.call(self._stream_for(filt), 30)
            except Exception:  # noqa: BLE001 - no stream (yet)
                stream = None
            if stream is not None and (start == "newest" or self.call(self._subjects(filt), 30)):
                break
            if time.monotonic() >= deadline:
                raise RingError(f"no bridged channel {symbol}@{exchange} of instance {self.instance!r} on {self._safe_url()}")
            time.sleep(0.05)
        sub = RemoteSubscription(self, symbol, exchange, stream, start, schemas, self.heartbeat_s, reorder_s)

        async def go():
            if start == "newest":
                info = await self.js.stream_info(stream)
                sub._newest_seq = info.state.last_seq + 1
            await sub._start_consumer()
            sub._watch_task = asyncio.get_running_loop().create_task(sub._watch())

        try:
            self.call(go(), 30)
        except Exception as e:  # noqa: BLE001
            raise RemoteError(f"{filt}: cannot create a JetStream consumer on {stream}: {e!r}") from None
        self.subscriptions.append(sub)
        return sub

    def _safe_url(self) -> str:
        from dm.bridge import safe_url

        return safe_url(self.url)

    def _stop_loop(self) -> None:
        if self.loop.is_running():
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(5)

    def close(self) -> None:
        for s in self.subscriptions:
            s.close()
        self.subscriptions.clear()
        if self.nc is not None and self.loop.is_running():
            try:
                self.call(self.nc.close(), 5)
            except Exception:  # noqa: BLE001
                pass
        self._stop_loop()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
