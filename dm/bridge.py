"""``dm bridge``: publishes an instance's shm channels to NATS JetStream, so readers and
persisters on other hosts get the same records (issue 12, "beyond one machine").

The bridge is an ordinary channel reader: it finds channels through the shm registry
(``dm.client.Client.channels``) and maps each ring read-only (``dm._ring.ChannelReader``, the
reader under ``dm.client``), reading from the oldest record still held. Records are published to
``dm.<instance>.<EXCHANGE>.<SYMBOL>.<schema>`` in batches (wire format: ``dm/nats_wire.py``),
into one JetStream stream with limits retention (``max_age_s``, ``max_bytes``), created or
updated at start.

Delivery (nothing lost, nothing twice, nothing silent):

- Every message is published with a JetStream ack and a ``Nats-Msg-Id`` made of the channel,
  schema, ring epoch and ring index; up to ``max_inflight`` messages await their ack. A message
  is dropped from the buffer only once acked. A publish that fails or is not acked within
  ``ack_timeout_s`` (NATS down, restarting, a JetStream leader change) stops the pipeline; once
  connected again every unacked message is re-published in order, one ack at a time, then the
  pipeline resumes. The server's duplicate window (``duplicate_window_s``) stores a message that
  had reached it before the failure only once.
- While NATS is unreachable the bridge keeps reading the rings into its buffer up to
  ``buffer_bytes``; then it stops reading. A ring that laps the bridge meanwhile loses records for
  it: the bridge publishes a GAP record (``dm.records.gap_record``, kind ``bridge.overrun``,
  ``GapUnits.NS`` window from the last record before to the first after, ring indexes in
  ``detail``) in the channel's order, so every reader and the remote persister learn the window.
- A restarted bridge resumes each channel after the last group the stream holds for it (the
  ``Dm-Group`` header of the last message on each of the channel's subjects), when the ring is
  the same incarnation; a producer that restarted (a new ring, new epoch) is read from its oldest
  record.

Progress goes to ``run_dir/<instance>/bridge.stats.json`` every second (read by ``dm top``).
"""
from __future__ import annotations

import asyncio
import json
import os
import signal
import time
import tomllib
from collections import deque
from dataclasses import dataclass, fields
from pathlib import Path

from dm import log as dmlog
from dm import nats_wire as wire
from dm._ring import ChannelReader
from dm.config import Config
from dm.errors import ConfigError, DmError, ProducerGoneError, RingError
from dm.records import LAYOUT_HASH, SIZES, GapUnits, RType, gap_record

log = dmlog.get("dm.bridge")

MAX_RECORD = max(SIZES.values())


@dataclass(frozen=True)
class BridgeConfig:
    """``[bridge]`` in the instance's TOML config (every key optional; CLI options override).

    ``channels``: ``["BTCUSD@BINANCE", ...]`` or ``["*"]`` (every channel of the instance, also
    those that appear later). ``max_age_s`` / ``max_bytes`` (-1: unlimited): the stream's
    retention. ``batch_records`` / ``linger_ms``: a channel's batch is published when it holds
    that many records or its oldest record waited that long. ``buffer_bytes``: bound on records
    held by the bridge (read, not yet acked)."""

    url: str = "nats://127.0.0.1:4222"
    stream: str = "DM"
    channels: tuple[str, ...] = ("*",)
    max_age_s: float = 86400.0
    max_bytes: int = -1
    storage: str = "file"  # file | memory
    replicas: int = 1
    duplicate_window_s: float = 120.0
    batch_records: int = 4096
    linger_ms: float = 2.0
    max_inflight: int = 64
    ack_timeout_s: float = 2.0
    buffer_bytes: int = 64 << 20
    max_message_bytes: int = 1 << 20  # capped by the server's max_payload


def load_bridge_config(path: str | os.PathLike | None, **overrides) -> BridgeConfig:
    """``[bridge]`` of the TOML file at ``path`` (None: defaults), then ``overrides`` that are
    not None. Raises ``ConfigError`` naming an unknown key or a bad value."""
    raw: dict = {}
    if path is not None:
        try:
            raw = dict(tomllib.loads(Path(path).read_text()).get("bridge", {}))
        except (OSError, tomllib.TOMLDecodeError) as e:
            raise ConfigError(f"{path}: {e}") from None
    raw.update({k: v for k, v in overrides.items() if v is not None})
    return parse_bridge_section(raw)


def parse_bridge_section(raw: dict) -> BridgeConfig:
    """Validate a ``[bridge]`` table (also called by ``dm.config`` when it loads a file).
    Raises ``ConfigError`` naming an unknown key or a bad value."""
    known = {f.name: f for f in fields(BridgeConfig)}
    unknown = set(raw) - set(known)
    if unknown:
        raise ConfigError(f"[bridge]: unknown key(s) {sorted(unknown)}; known: {sorted(known)}")
    out = {}
    for k, v in raw.items():
        default = getattr(BridgeConfig, k)
        try:
            if isinstance(default, tuple):
                v = (v,) if isinstance(v, str) else tuple(str(x) for x in v)
            elif isinstance(default, bool) or not isinstance(default, (int, float, str)):
                pass
            elif isinstance(default, float) and isinstance(v, (int, float)) and not isinstance(v, bool):
                v = float(v)
            elif type(v) is not type(default):
                raise TypeError(f"expected {type(default).__name__}, got {type(v).__name__} {v!r}")
        except TypeError as e:
            raise ConfigError(f"bridge.{k}: {e}") from None
        out[k] = v
    cfg = BridgeConfig(**out)
    if not cfg.url.startswith(("nats://", "tls://", "ws://", "wss://")):
        raise ConfigError(f"bridge.url must be nats://HOST:PORT, got {cfg.url!r}")
    if cfg.storage not in ("file", "memory"):
        raise ConfigError(f"bridge.storage must be file|memory, got {cfg.storage!r}")
    for c in cfg.channels:
        if c != "*" and (c.count("@") != 1 or not all(c.split("@"))):
            raise ConfigError(f"bridge.channels: {c!r} is not SYMBOL@EXCHANGE or '*'")
    if cfg.batch_records < 1 or cfg.max_inflight < 1 or cfg.buffer_bytes < (1 << 20):
        raise ConfigError("bridge: batch_records and max_inflight must be >= 1, buffer_bytes >= 1 MiB")
    return cfg


def safe_url(url: str) -> str:
    """``url`` without credentials (never log a password or token)."""
    if "@" in url and "://" in url:
        scheme, rest = url.split("://", 1)
        return f"{scheme}://***@{rest.rsplit('@', 1)[1]}"
    return url


class OutMsg:
    __slots__ = ("subject", "payload", "headers", "records", "fut", "sent")

    def __init__(self, subject: str, payload: bytes, headers: dict, records: int):
        self.subject, self.payload, self.headers, self.records = subject, payload, headers, records
        self.fut = None
        self.sent = 0.0


class Tap:
    """One channel ring being bridged: reads runs of records, keeps the current group (records
    of ring indexes ``[start, next_pos)`` split by schema) and turns it into messages."""

    def __init__(self, instance: str, exchange: str, symbol: str, shm_name: str, msg_limit: int):
        self.exchange, self.symbol, self.shm_name = exchange, symbol, shm_name
        self.instance = instance
        self.prefix = wire.channel_subject(instance, exchange, symbol, "")
        self.msg_limit = msg_limit
        self.reader: ChannelReader | None = None
        self.epoch = 0
        self.next_pos = 0
        self.done_epochs: set[int] = set()  # rings read to their end (closed or dead producer)
        self.last_ts = 0
        self.records = 0
        self.lost = 0
        self.overruns = 0
        self.checked = 0.0
        self._new_group()

    def _new_group(self) -> None:
        self.g_start = self.next_pos
        self.g_slots = 0
        self.g_bytes = 0
        self.g_t0 = 0.0
        self.g_parts: dict[str, list] = {}  # schema -> [chunks, count, first_pos]
        self.g_runs: list[list] = []  # [schema, slots]

    # -- ring ---------------------------------------------------------------------------------
    def open(self, resume: dict[int, int]) -> bool:
        """Map the channel's current ring if it is one not read yet. ``resume``: epoch -> ring
        index to continue at (from the stream). Returns True when a ring is open."""
        if self.reader is not None:
            return True
        try:
            r = ChannelReader(self.shm_name, LAYOUT_HASH, start="oldest")
        except (RingError, ProducerGoneError):
            return False
        epoch = r.created_ns
        if epoch in self.done_epochs or epoch < self.epoch:
            r.close()  # the old ring, still there until the producer replaces it
            return False
        if epoch != self.epoch:
            self.epoch = epoch
            self.next_pos = resume.get(epoch, 0)
            self._new_group()
        self.reader = r
        log.info("bridging channel", channel=self.shm_name, epoch=epoch, from_index=self.next_pos)
        return True

    def close_ring(self) -> None:
        if self.reader is not None:
            self.done_epochs.add(self.epoch)
            self.reader.close()
            self.reader = None

    def poll(self, budget: int) -> int:
        """Read up to ``budget`` records into the current group (stops when the group reaches
        the message size limit). Returns records read (a GAP slot counts)."""
        r = self.reader
        if r is None:
            return 0
        n = 0
        while n < budget:
            room = (self.msg_limit - self.g_bytes) // MAX_RECORD
            if room < 1:
                break
            try:
                arr = r.read_batch(min(budget - n, room))
            except ProducerGoneError:
                arr = None
            if arr is None:
                break
            k = len(arr)
            end = r.records_read
            first = end - k
            if first < self.next_pos:  # resuming inside a ring: already in the stream
                skip = min(k, self.next_pos - first)
                arr, first, k = arr[skip:], first + skip, k - skip
                if not k:
                    continue
            buf = arr.tobytes()
            if first > self.next_pos:
                self._gap(self.next_pos, first, buf)
            self._add(buf, buf[1], k, first)
            self.last_ts = int.from_bytes(buf[len(buf) - arr.itemsize + 8:len(buf) - arr.itemsize + 16], "little")
            self.next_pos = end
            self.records += k
            n += k
        r.take_overrun()  # accounted exactly through ring indexes (``_gap``)
        return n

    def _gap(self, a: int, b: int, after: bytes) -> None:
        """Ring indexes ``[a, b)`` were overwritten before the bridge read them."""
        pub, iid = int.from_bytes(after[2:4], "little"), int.from_bytes(after[4:8], "little")
        nxt = int.from_bytes(after[8:16], "little")
        first = self.last_ts + 1 if self.last_ts else 0
        last = max(first, nxt - 1)
        rec = gap_record(pub, iid, "bridge.overrun", first, last, GapUnits.NS, time.time_ns(),
                         f"ring records {a}..{b - 1} lapped the bridge")  # detail holds 64 bytes
        self._add(rec, int(RType.GAP), 1, a)
        self.lost += b - a
        self.overruns += 1
        log.warning("ring lapped the bridge: gap record published", channel=self.shm_name, lost_records=b - a, first_index=a)

    def _add(self, buf: bytes, rtype: int, k: int, first: int) -> None:
        schema = wire.schema_of(rtype)
        if not self.g_slots:
            self.g_start = first
            self.g_t0 = time.monotonic()
        p = self.g_parts.get(schema)
        if p is None:
            self.g_parts[schema] = [[buf], k, first]
        else:
            p[0].append(buf)
            p[1] += k
        if self.g_runs and self.g_runs[-1][0] == schema:
            self.g_runs[-1][1] += k
        else:
            self.g_runs.append([schema, k])
        self.g_slots += k
        self.g_bytes += len(buf)

    def take_group(self) -> list[OutMsg]:
        """The current group as one message per schema (first appearance order); starts a new group."""
        if not self.g_slots:
            return []
        schemas = list(self.g_parts)
        group = f"{self.epoch}:{self.g_start}:{self.next_pos}:{self.g_slots}:{','.join(schemas)}"
        runs: dict[str, list] = {s: [] for s in schemas}
        if len(schemas) > 1:
            slot, last_end = 0, {s: 0 for s in schemas}
            for schema, k in self.g_runs:
                runs[schema].append((slot - last_end[schema], k))
                slot += k
                last_end[schema] = slot
        out = []
        for s in schemas:
            chunks, count, first = self.g_parts[s]
            h = {
                wire.H_MSG_ID: f"{self.prefix}{s}.{self.epoch}.{self.g_start}",
                wire.H_LAYOUT: wire.LAYOUT,
                wire.H_COUNT: str(count),
                wire.H_POS: f"{self.epoch}:{first}",
                wire.H_GROUP: group,
            }
            if runs[s]:
                h[wire.H_RUNS] = wire.runs_text(runs[s])
            out.append(OutMsg(self.prefix + s, chunks[0] if len(chunks) == 1 else b"".join(chunks), h, count))
        self._new_group()
        return out


class Bridge:
    """Publishes the channels of ``cfg.instance`` selected by ``bcfg.channels`` (see module doc)."""

    def __init__(self, cfg: Config, bcfg: BridgeConfig):
        self.cfg, self.bcfg = cfg, bcfg
        wire.token(cfg.instance)
        self.taps: dict[tuple[str, str], Tap] = {}
        self.resume: dict[tuple[str, str], dict[int, int]] = {}
        self.unsent: deque[OutMsg] = deque()
        self.inflight: deque[OutMsg] = deque()
        self.nc = None
        self.js = None
        self.recovering = False
        self.stopping = False
        self.msg_limit = bcfg.max_message_bytes
        self.stats_path = cfg.run_dir / cfg.instance / "bridge.stats.json"
        self.s = {"messages": 0, "records": 0, "bytes": 0, "republished": 0, "duplicates": 0,
                  "reconnects": 0, "disconnects": 0, "publish_failures": 0, "last_seq": 0}
        self.connected = False
        self._last_error = ""
        self.stream_subjects = [f"dm.{wire.token(cfg.instance)}.>"]

    # -- NATS ---------------------------------------------------------------------------------
    async def connect(self) -> None:
        import nats

        async def disconnected():
            self.connected = False
            if self.stopping:
                return
            self.s["disconnects"] += 1
            log.warning("NATS disconnected; buffering", url=safe_url(self.bcfg.url))

        async def reconnected():
            self.connected = True
            self.s["reconnects"] += 1
            log.info("NATS reconnected", url=safe_url(self.bcfg.url))

        async def error(e):
            msg = repr(e)
            if msg != self._last_error:  # once per burst
                self._last_error = msg
                log.warning("NATS error", error=msg)

        delay = 0.1
        while not self.stopping:
            try:
                self.nc = await nats.connect(self.bcfg.url, name=f"dm-bridge-{self.cfg.instance}", max_reconnect_attempts=-1,
                                             reconnect_time_wait=0.25, connect_timeout=2, allow_reconnect=True,
                                             disconnected_cb=disconnected, reconnected_cb=reconnected, error_cb=error,
                                             pending_size=max(self.bcfg.buffer_bytes, 2 << 20))
                break
            except Exception as e:  # noqa: BLE001 - any connect failure is retried, loudly
                log.warning("NATS connect failed; retrying", url=safe_url(self.bcfg.url), error=repr(e), in_s=delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)
        if self.nc is None:
            return
        self.connected = True
        self.msg_limit = min(self.bcfg.max_message_bytes, self.nc.max_payload) - 4096
        self.js = self.nc.jetstream(timeout=self.bcfg.ack_timeout_s, publish_async_max_pending=self.bcfg.max_inflight * 2)
        log.info("NATS connected", url=safe_url(self.bcfg.url), max_payload=self.nc.max_payload)

    async def ensure_stream(self) -> None:
        """Create the stream, or update its retention and add this instance's subjects."""
        from nats.js import api
        from nats.js.errors import NotFoundError

        b = self.bcfg
        want = dict(max_age=b.max_age_s if b.max_age_s > 0 else None, max_bytes=b.max_bytes,
                    duplicate_window=b.duplicate_window_s, discard=api.DiscardPolicy.OLD)
        while True:
            try:
                try:
                    info = await self.js.stream_info(b.stream)
                except NotFoundError:
                    await self.js.add_stream(api.StreamConfig(
                        name=b.stream, subjects=self.stream_subjects, retention=api.RetentionPolicy.LIMITS,
                        storage=api.StorageType.FILE if b.storage == "file" else api.StorageType.MEMORY,
                        num_replicas=b.replicas, **want))
                    log.info("stream created", stream=b.stream, subjects=self.stream_subjects)
                    return
                c = info.config
                subjects = list(c.subjects or [])
                subjects += [s for s in self.stream_subjects if s not in subjects]
                c.subjects = subjects
                for k, v in want.items():
                    setattr(c, k, v)
                await self.js.update_stream(c)
                return
            except Exception as e:  # noqa: BLE001 - JetStream not ready yet (restart) or refused
                if self.stopping:
                    return
                log.warning("stream set-up failed; retrying", stream=b.stream, error=repr(e))
                await asyncio.sleep(0.5)

    async def load_resume(self, tap: Tap) -> dict[int, int]:
        """epoch -> next ring index, from the last message of each of the channel's subjects."""
        from nats.js.errors import NotFoundError

        out: dict[int, int] = {}
        for schema in wire.SCHEMAS:
            for _ in range(20):
                try:
                    m = await self.js.get_last_msg(self.bcfg.stream, tap.prefix + schema)
                    h = wire.parse_headers(m.headers)
                    out[h.epoch] = max(out.get(h.epoch, 0), h.end)
                    break
                except NotFoundError:
                    break
                except ValueError as e:
                    log.warning("foreign message on a dm subject", subject=tap.prefix + schema, error=str(e))
                    break
                except Exception as e:  # noqa: BLE001 - NATS restarting: retry
                    log.warning("resume lookup failed; retrying", subject=tap.prefix + schema, error=repr(e))
                    await asyncio.sleep(0.25)
        return out

    # -- channels -----------------------------------------------------------------------------
    def selected(self) -> list[tuple[str, str, str]]:
        from dm.client import Client

        with Client(instance=self.cfg.instance, registry=self.cfg.shm.registry) as c:
            chans = c.channels()
        want = self.bcfg.channels
        if "*" in want:
            return chans
        sel = {tuple(x.upper().split("@")) for x in want}
        return [(ex, sym, name) for ex, sym, name in chans if (sym.upper(), ex.upper()) in sel]

    async def discover(self) -> None:
        for ex, sym, name in self.selected():
            key = (ex, sym)
            tap = self.taps.get(key)
            if tap is None:
                tap = self.taps[key] = Tap(self.cfg.instance, ex, sym, name, self.msg_limit)
                self.resume[key] = await self.load_resume(tap)
            tap.open(self.resume[key])

    def check_producer(self, tap: Tap, now: float) -> list[OutMsg]:
        """A ring whose producer closed or died and which is read to its end is finished: its
        group goes out and the next ring of the channel is opened on discovery."""
        if tap.reader is None or now - tap.checked < 0.5:
            return []
        tap.checked = now
        try:
            state = tap.reader.producer_state()
        except RingError:
            state = "closed"
        if state in ("closed", "dead") and tap.poll(1 << 30) == 0:
            out = tap.take_group()
            log.info("channel ring ended", channel=tap.shm_name, state=state, records=tap.records)
            tap.close_ring()
            return out
        return []

    # -- publishing ---------------------------------------------------------------------------
    @property
    def buffered(self) -> int:
        return sum(len(m.payload) for m in self.unsent) + sum(len(m.payload) for m in self.inflight) + sum(t.g_bytes for t in self.taps.values())

    async def send(self) -> None:
        js = self.js
        while self.unsent and len(self.inflight) < self.bcfg.max_inflight and self.connected and not self.recovering:
            m = self.unsent[0]
            try:
                m.fut = await js.publish_async(m.subject, m.payload, headers=m.headers, wait_stall=None)
            except Exception as e:  # noqa: BLE001 - connection trouble: recover
                self.fail(repr(e))
                return
            m.sent = time.monotonic()
            self.unsent.popleft()
            self.inflight.append(m)

    def collect(self) -> None:
        """Retire acked messages from the front; a failed or overdue one starts recovery."""
        now = time.monotonic()
        while self.inflight:
            m = self.inflight[0]
            if not m.fut.done():
                if now - m.sent > self.bcfg.ack_timeout_s:
                    self.fail("ack timeout")
                return
            exc = m.fut.exception()
            if exc is not None:
                self.fail(repr(exc))
                return
            self.inflight.popleft()
            self._acked(m, m.fut.result())

    def _acked(self, m: OutMsg, ack) -> None:
        self.s["messages"] += 1
        self.s["records"] += m.records
        self.s["bytes"] += len(m.payload)
        self.s["last_seq"] = max(self.s["last_seq"], ack.seq)
        if getattr(ack, "duplicate", False):
            self.s["duplicates"] += 1

    def fail(self, why: str) -> None:
        if self.recovering:
            return
        self.recovering = True
        self.s["publish_failures"] += 1
        log.warning("JetStream publish failed; re-publishing unacked messages in order", reason=why,
                    unacked=len(self.inflight) + len(self.unsent))
        asyncio.get_running_loop().create_task(self.recover())

    async def recover(self) -> None:
        """Put in-flight messages back in front, wait for the connection, re-publish them one ack
        at a time (the duplicate window drops those the server already had), resume."""
        for m in reversed(self.inflight):
            if m.fut is not None and not m.fut.done():
                m.fut.cancel()
            if m.fut is not None and m.fut.done() and not m.fut.cancelled() and m.fut.exception() is None:
                self._acked(m, m.fut.result())  # acked after all: keep order, do not re-send
                continue
            self.unsent.appendleft(m)
        self.inflight.clear()
        redo = min(len(self.unsent), self.bcfg.max_inflight)
        i = 0
        while i < redo and not (self.stopping and not self.connected):
            if not self.connected:
                await asyncio.sleep(0.05)
                continue
            m = self.unsent[0]
            try:
                ack = await self.js.publish(m.subject, m.payload, headers=m.headers, timeout=self.bcfg.ack_timeout_s)
            except Exception as e:  # noqa: BLE001 - still down: try again
                log.debug("re-publish failed", error=repr(e))
                await asyncio.sleep(0.1)
                continue
            self.unsent.popleft()
            self.s["republished"] += 1
            self._acked(m, ack)
            i += 1
        self.recovering = False
        log.info("publishing resumed", republished=i)

    # -- main loop ----------------------------------------------------------------------------
    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stop)
        await self.connect()
        if self.nc is None:
            return 0
        await self.ensure_stream()
        b = self.bcfg
        linger = b.linger_ms / 1000.0
        last_discover = last_stats = 0.0
        idle = 0
        stop_deadline = None
        while True:
            now = time.monotonic()
            if now - last_discover > 1.0 and not self.stopping:
                await self.discover()
                last_discover = now
            moved = 0
            if not self.stopping and self.buffered < b.buffer_bytes:
                for tap in self.taps.values():
                    moved += tap.poll(b.batch_records)
            for tap in self.taps.values():
                if tap.g_slots and (tap.g_slots >= b.batch_records or tap.g_bytes + MAX_RECORD > tap.msg_limit
                                    or now - tap.g_t0 >= linger or self.stopping):
                    self.unsent.extend(tap.take_group())
                self.unsent.extend(self.check_producer(tap, now))
            await self.send()
            self.collect()
            if now - last_stats > 1.0:
                self.write_stats()
                last_stats = now
            if self.stopping:
                stop_deadline = stop_deadline or now + 10.0
                if not self.unsent and not self.inflight and not any(t.g_slots for t in self.taps.values()):
                    break
                if now > stop_deadline:
                    log.error("stopping with unacked records (NATS unreachable)", unacked=len(self.unsent) + len(self.inflight))
                    break
            if moved or (self.inflight and self.inflight[0].fut.done()):
                idle = 0
                await asyncio.sleep(0)
            else:
                idle += 1
                await asyncio.sleep(min(50e-6 * (1 << min(idle, 5)), 0.001))
        self.write_stats()
        for t in self.taps.values():
            if t.reader is not None:
                t.reader.close()
        try:
            await self.nc.drain()
        except Exception:  # noqa: BLE001
            pass
        log.info("bridge stopped", **{k: self.s[k] for k in ("messages", "records", "republished", "duplicates")})
        return 0

    def stop(self) -> None:
        self.stopping = True

    def stats(self) -> dict:
        return {
            "bridge": True, "pid": os.getpid(), "url": safe_url(self.bcfg.url), "stream": self.bcfg.stream,
            "connected": self.connected, **self.s,
            "records_read": sum(t.records for t in self.taps.values()),
            "lost_records": sum(t.lost for t in self.taps.values()),
            "overruns": sum(t.overruns for t in self.taps.values()),
            "buffered_bytes": self.buffered, "unacked": len(self.unsent) + len(self.inflight),
            "channels": {f"{t.symbol}@{t.exchange}": {"records": t.records, "lost": t.lost, "epoch": t.epoch, "next_index": t.next_pos}
                         for t in self.taps.values()},
            "ts": time.time(),
        }

    def write_stats(self) -> None:
        self.stats_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.stats_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.stats()))
        os.replace(tmp, self.stats_path)


def run_bridge(cfg: Config, bcfg: BridgeConfig) -> int:
    """Run the bridge until SIGTERM/SIGINT (then flush and wait for acks up to 10 s)."""
    import uvloop

    try:
        return uvloop.run(Bridge(cfg, bcfg).run())
    except DmError as e:
        log.error("bridge failed", error=str(e))
        return 1
