"""The worker's connection loop, shared by every venue provider.

A worker process owns one provider: it resolves the configured canonical symbols to venue
symbols and instrument ids, creates one channel ring per symbol and its persist queue, registers
in the shm service registry, then reads the venue websocket (aiohttp on uvloop), decodes each
frame with the provider's Cython codec and fans the records out to the rings. It never blocks on
a consumer: channel rings overwrite, the persist queue spills to disk.

Bad input never kills a worker: a frame the codec rejects is counted, logged once per burst and
appended to the provider's dead-letter file (JSON lines: ts_recv ns, error, frame text).

No database. A worker never opens storage: instrument ids come from the instance's local
instrument cache (``dm.instruments.InstrumentCache``), and each instrument's registration goes
to the persister as an INSTRUMENT_DEF record (``ts_event`` = the registration's time, so a
restart re-sends the same record and storage keeps one row), so a worker starts and publishes
while PostgreSQL is down.

Gaps. Every lost window becomes a GAP record (``dm.records.gap_record``) written to the persist
queue, so the persister is the only writer of the gap ledger (``Provider.record_gap``):

* ``reconnect`` (ns window, every instrument): from the websocket's loss to the new connection;
  also on the instrument's channel, so readers see it;
* book gaps of the venue sync (``<venue>.update_id`` in update ids, ``kraken.checksum`` as an ns
  window): also on the channel;
* ``restart`` (ns window, every instrument): a worker whose predecessor did not stop cleanly
  (killed, crashed, or stopped because its supervisor died) records one per instrument when its
  own first frame arrives, from just after the last record its predecessor wrote to just before
  that frame (``predecessor_window``). A stop that was asked for (SIGTERM/SIGINT from the
  supervisor or a user) is not a gap. Not on the channel: a following reader gets its own
  restart marker from ``dm.client``.

Unknown symbols. A configured symbol the venue's reference data does not know is refused with
one log line (``symbols refused``, listing them all) and ``refused_symbols`` in the stats file;
the worker runs the rest (it fails only when nothing is left).
"""
from __future__ import annotations

import asyncio
import functools
import gc
import json
import os
import random
import signal
import time
from collections import Counter
from pathlib import Path

import struct

import aiohttp
import orjson

from dm import log as dmlog
from dm._book import MASK_BBO, MASK_TOP10, BookError
from dm.bars import live_plan
from dm._ring import ChannelReader, ChannelWriter, Fanout, PersistQueue, now_ns, segment_info, unlink_segment
from dm.config import Config, ProviderConfig
from dm._codec import _Codec, value_text
from dm.errors import CodecError, ConfigError, FixedPointError, RingError, SymbologyError
from dm.records import LAYOUT_HASH, GapUnits, gap_record
from dm.registry import Registry
from dm.symbology import fetch_reference, for_provider

_TS_EVENT = struct.Struct("<Q")

log = dmlog.get("dm.worker")


class DeadLetters:
    """Append-only dead-letter file plus burst-limited logging.

    The first error of a burst is logged with its reason; later errors are only counted until
    ``quiet_s`` passes without one, then a single line reports how many the burst held."""

    def __init__(self, path: Path, provider: str, quiet_s: float = 1.0):
        self.path = path
        self.provider = provider
        self.quiet_s = quiet_s
        self.count = 0
        self.by_reason: Counter[str] = Counter()
        self._burst = 0
        self._last = 0.0
        path.parent.mkdir(parents=True, exist_ok=True)
        self._fh = open(path, "ab", buffering=0)

    def add(self, ts_recv: int, frame: bytes | str, err: Exception, extra: dict | None = None) -> None:
        """One dead letter: the error, the frame text and ``extra`` keys (e.g. the instrument,
        field, text and reason of a value rejected alone, ``dead_letter_values``)."""
        self.count += 1
        self.by_reason[type(err).__name__] += 1
        text = frame if isinstance(frame, str) else bytes(frame).decode("utf-8", "backslashreplace")
        entry = {"ts_recv": ts_recv, "provider": self.provider, "error": str(err), "kind": type(err).__name__, "frame": text}
        if extra:
            entry.update(extra)
        self._fh.write(orjson.dumps(entry) + b"\n")
        now = time.monotonic()
        if self._burst == 0:
            log.warning("bad frame (dead-lettered)", provider=self.provider, error=str(err), file=str(self.path))
        self._burst += 1
        self._last = now

    def tick(self) -> None:
        """Called periodically: closes a burst that has gone quiet with one summary line."""
        if self._burst and time.monotonic() - self._last >= self.quiet_s:
            if self._burst > 1:
                log.warning("bad frame burst ended", provider=self.provider, frames=self._burst)
            self._burst = 0

    def close(self) -> None:
        self.tick()
        if self._burst > 1:
            log.warning("bad frame burst ended", provider=self.provider, frames=self._burst)
        self._fh.close()


def dead_letter_values(p: "Provider", codec, frame, ts_recv: int) -> int:
    """Dead-letter the values ``codec``'s last decode rejected alone (``codec.value_errors``:
    out of range, more digits than the instrument's scale, a negative size — the rest of the
    frame was decoded and published). Each becomes one dead letter (``FixedPointError``; keys
    ``instrument_id``, ``symbol``, ``field``, ``text``, ``reason``; logged once per burst by
    ``DeadLetters``) and counts in ``p.value_errors`` (those beyond the codec's kept list are
    counted only). Returns how many the decode rejected. Every venue provider calls this."""
    n = codec.value_error_count
    if not n:
        return 0
    sym = getattr(p, "_iid_to_symbol", None) or {}
    for iid, field, reason, off in codec.value_errors:
        text = value_text(frame, off)
        symbol = sym.get(iid, "")
        err = FixedPointError(p.exchange, f"{reason}: {text} (instrument {iid} {symbol}; value dropped alone, "
                                          "rest of the frame kept)", field, off)
        p.dead.add(ts_recv, frame, err, {"instrument_id": iid, "symbol": symbol, "field": field,
                                         "text": text, "reason": reason})
    p.value_errors += n
    return n


class Books:
    """The order books of one provider: one venue sync (``dm.booksync``) per instrument.

    ``handle`` turns a sync's ``Actions`` into output: every applied BOOK_DELTA (snapshot
    records included) goes to the persist queue; once the book is synced, a DEPTH record (top
    10) when the top 10 changed and a BBO record when the top changed (``publish_bbo``: off
    when the venue sends its own BBO stream, e.g. Binance bookTicker) go to the symbol's
    channel and the persist queue; a gap becomes a GAP record (``Provider.record_gap``: persist
    queue and channel) and the provider is asked to resync (REST snapshot or resubscribe)."""

    def __init__(self, provider: "Provider", publish_bbo: bool):
        self.p = provider
        self.publish_bbo = publish_bbo
        self.syncs: dict[int, object] = {}
        self.out = bytearray()
        self.gaps = 0
        self.crossed = 0
        self.resyncs = 0
        self._crossed_logged: set[int] = set()
        self.last_ok_ns: dict[int, int] = {}  # iid -> ts_recv of the last frame applied without a gap
        # iid -> (ts_recv ns, the provider's frames, the worker's CPU s) when its book first
        # stood synced: the last of them ends the start-up (snapshots, diffs buffered for them)
        self.first_synced: dict[int, tuple[int, int, float]] = {}

    def handle(self, iid: int, act, sequence: int, ts_recv: int) -> None:
        p = self.p
        q = p.queue
        for recs in act.applied:
            q.write_many(recs)
        if act.gap is not None:
            g = act.gap
            self.gaps += 1
            first, last = g.first_missing, g.last_missing
            units = GapUnits.SEQUENCE
            if first is None or last is None:
                # the venue has no update ids (Kraken v1 checksum): the ledger gets the window,
                # in ns since the epoch, between the last good frame and the one that failed
                # (the C frame path's last good frames folded in first)
                p.fold_feed()
                first, last, units = self.last_ok_ns.get(iid, ts_recv), ts_recv, GapUnits.NS
            p.record_gap(iid, g.kind, first, last, units, g.detail)
            log.warning("book gap", provider=p.name, instrument_id=iid, kind=g.kind, first=g.first_missing, last=g.last_missing, detail=g.detail)
        if act.needs_snapshot:
            self.resyncs += 1
            p.request_book(iid)
        if act.crossed:
            self.on_crossed(iid)
        sync = self.syncs[iid]
        if act.snapshot_applied and iid not in self.first_synced:
            p.fold_feed()
            self.first_synced[iid] = (ts_recv, p.frames, time.process_time())
        if not act.applied or not sync.synced:
            return
        self.last_ok_ns[iid] = ts_recv
        mask = act.mask
        if not mask & (MASK_TOP10 | MASK_BBO):
            return
        last = act.applied[-1]
        ts_event = _TS_EVENT.unpack_from(last, len(last) - 48)[0]  # last delta's ts_event
        out = self.out
        del out[:]
        book = sync.book
        if mask & MASK_TOP10:
            book.write_depth(out, ts_event, ts_recv, sequence)
        if mask & MASK_BBO and self.publish_bbo:
            book.write_bbo(out, ts_event, ts_recv, sequence)
        ch = p.channel_by_iid.get(iid)
        if ch is not None:
            ch.write_many(out)
        p.records += q.write_many(out)


    def on_crossed(self, iid: int) -> None:
        """A book left crossed by an update: counted, logged once per instrument."""
        self.crossed += 1
        if iid not in self._crossed_logged:
            self._crossed_logged.add(iid)
            log.error("crossed book", provider=self.p.name, instrument_id=iid)


class ResubscribingBooks:
    """Book resync for venues whose fresh snapshot comes from a new subscription (e.g. Kraken v1
    and Kraken Futures v1 ``book``): unsubscribe + subscribe the one symbol's book, and
    ask again if no snapshot arrived within ``resync_timeout_s``. Mixed into a Provider that
    defines ``_message(event, channel, symbols) -> str``, ``book_symbol(iid) -> str`` (the venue
    form), ``_tasks`` (a set) and ``resubscribes`` (a counter)."""

    resync_timeout_s = 10.0

    def on_disconnected(self) -> None:
        """Books are stale from now on; the next connection's subscription brings snapshots."""
        if self.books is not None:
            for sync in self.books.syncs.values():
                sync.synced = False
                sync.awaiting_snapshot = True

    def request_book(self, iid: int) -> None:
        ws = self.ws
        if ws is None or ws.closed:
            return  # the reconnect subscribes everything again
        t = asyncio.get_running_loop().create_task(self._resubscribe(ws, iid))
        self._tasks.add(t)
        t.add_done_callback(self._tasks.discard)

    async def _resubscribe(self, ws: aiohttp.ClientWebSocketResponse, iid: int) -> None:
        symbol = self.book_symbol(iid)
        self.resubscribes += 1
        log.info("resubscribing book", provider=self.name, symbol=symbol)
        try:
            await ws.send_str(self._message("unsubscribe", "book", [symbol]))
            await ws.send_str(self._message("subscribe", "book", [symbol]))
        except (ConnectionError, aiohttp.ClientError) as e:
            log.warning("resubscribe failed", provider=self.name, symbol=symbol, error=repr(e))
            return
        await asyncio.sleep(self.resync_timeout_s)
        sync = self.books.syncs[iid]
        if not sync.synced and self.ws is ws and not ws.closed:
            log.warning("no snapshot after resubscribe, retrying", provider=self.name, symbol=symbol)
            act = sync.request_snapshot()
            if act.needs_snapshot:
                self.request_book(iid)


class _PicowsSocket:
    """The small socket API providers use on a picows connection (``send_str``, ``close``,
    ``closed``, ``close_code``) and the frames that are not a whole data message: messages split
    over continuation frames are joined (RFC 6455 §5.4) and go to ``provider.on_frame``; a close
    frame is answered and the connection dropped. Mixed into a picows listener by
    :func:`_picows_connection` (picows is imported only when a provider uses it)."""

    def __init__(self, provider, url: str = "", on_frame=None, **kw):
        import picows

        self.p = provider
        self.url = url
        self.on_frame = on_frame if on_frame is not None else provider.on_frame
        self.transport = None
        self.close_code = None
        self._parts: list[bytes] | None = None
        self._T = picows.WSMsgType

    def on_ws_connected(self, transport) -> None:
        self.transport = transport
        # before any frame of this connection reaches on_frame (a venue's greeting can come in
        # the same read as the upgrade answer): count the connection, open its capture
        self.p.on_transport_connected(self.url)

    def on_other_frame(self, transport, frame) -> None:
        T = self._T
        t = frame.msg_type
        if t == T.TEXT or t == T.BINARY:
            if frame.fin:
                self.on_frame(frame.get_payload_as_bytes(), now_ns())
            else:
                self._parts = [frame.get_payload_as_bytes()]
        elif t == T.CONTINUATION and self._parts is not None:
            self._parts.append(frame.get_payload_as_bytes())
            if frame.fin:
                data, self._parts = b"".join(self._parts), None
                self.on_frame(data, now_ns())
        elif t == T.CLOSE:
            self.close_code = frame.get_close_code()
            transport.send_close(self.close_code)
            transport.disconnect()

    def on_ws_disconnected(self, transport) -> None:
        pass

    @property
    def closed(self) -> bool:
        return self.transport is None or self.transport.is_disconnected

    async def send_str(self, text: str) -> None:
        if self.closed:
            raise ConnectionError("websocket is closed")
        self.transport.send(self._T.TEXT, text.encode())

    async def close(self, code: int = 1000, message: bytes = b"") -> None:
        import picows

        if not self.closed:
            self.transport.send_close(picows.WSCloseCode(int(code)), message)
            self.transport.disconnect()


class _PicowsConnectionBase(_PicowsSocket):
    """Every frame through ``provider.on_frame`` in Python (raw capture on, or a provider that
    overrides ``on_frame``)."""

    def on_ws_frame(self, transport, frame) -> None:
        if frame.fin and self._parts is None and (frame.msg_type == self._T.TEXT or frame.msg_type == self._T.BINARY):
            self.on_frame(frame.get_payload_as_bytes(), now_ns())
        else:
            self.on_other_frame(transport, frame)


@functools.cache
def _picows_connection(fast: bool = False) -> type:
    """The picows connection class: ``fast``: decode and publish in C (``dm._feed.FeedListener``),
    else every frame through ``provider.on_frame``."""
    import picows

    if fast:
        from dm._feed import FeedListener

        return type("PicowsFeedConnection", (_PicowsSocket, FeedListener), {})
    return type("PicowsConnection", (_PicowsConnectionBase, picows.WSListener), {})


class Provider:
    """Base class of a venue provider. Subclasses set ``codec``, ``symbols`` (canonical →
    venue) and implement ``resolve_symbols``, ``stream_url`` and ``on_connected``; the base class
    owns rings, registry, dead letters, stats and the reconnect loop.

    Frames whose codec kind is in ``book_kinds`` are handed to ``on_book_frame(kind, ts_recv)``
    instead of being published (``self.last_frame`` holds the frame text during that call);
    providers route any kind that needs venue logic there (book messages, error events...).

    Connection watchdog (per provider, from ``[providers.X]``, class defaults below):
    ``stale_after_s`` — no frame at all (data, heartbeat, pong) for that long means the socket
    is dead: close it and reconnect (0/None: off; Binance sends no app-level heartbeat, so off);
    ``ping_interval_s`` — send ``ping_message()`` (an app-level ping, e.g. Kraken v1
    ``{"event":"ping"}``) that often (0/None: off). Websocket protocol pings run regardless
    (aiohttp ``heartbeat``)."""

    publisher_name = ""
    #: (codec kind, dm._feed rule shape, the sync's id attribute or None, checksum?) of the book
    #: updates whose steady state the C frame path applies (dm._feed's docstring)
    fast_book: tuple | None = None
    #: codec kinds the C frame path writes to the persist queue only (no channel)
    persist_only_kinds: frozenset = frozenset()
    #: venues that number every message of a connection (the codec's ``msg_seq``): the
    #: connection's sequence state, an object whose ``last`` is the last number taken (None
    #: before the connection's first); numbers that are not ``last + 1`` go to
    #: ``on_message_seq`` (dm._feed's docstring, "Message sequence"). None: not checked
    message_seq = None
    stale_after_s: float | None = None
    ping_interval_s: float | None = None

    def __init__(self, cfg: Config, pcfg: ProviderConfig):
        self.cfg = cfg
        self.pcfg = pcfg
        self.name = pcfg.name
        self.exchange = pcfg.exchange
        self.codec = None
        self.venue_symbols: dict[str, str] = {}  # canonical -> venue
        self.instrument_ids: dict[str, int] = {}  # canonical -> instrument_id
        self.channels: dict[str, ChannelWriter] = {}
        self.queue: PersistQueue | None = None
        self.fanout: Fanout | None = None
        self.slot = None
        self.dead = DeadLetters(pcfg.dead_letter, pcfg.name)
        self.value_errors = 0   # values rejected alone (dead_letter_values)
        self.size_precision_of: dict[int, int] = {}  # instrument_id -> size_precision (resolve_symbols)
        self.frames = 0
        self.records = 0
        self.records_by_channel: Counter[str] = Counter()
        self.connects = 0
        self.books: Books | None = None
        self.book_kinds: frozenset[int] = frozenset()
        self.channel_by_iid: dict[int, ChannelWriter] = {}
        self._disconnected_ns = 0
        self._stop = asyncio.Event()
        self.session: aiohttp.ClientSession | None = None
        self.stats_path = cfg.run_dir / cfg.instance / f"{self.name}.stats.json"
        # what the next worker of this provider needs to know (predecessor_window); not a
        # *.stats.json: the supervisor deletes those of an earlier run when it starts
        self.state_path = cfg.run_dir / cfg.instance / f"{self.name}.worker-state.json"
        self.first_frame_ns = 0  # ts_recv of the first / last frame (ns since the epoch)
        self.last_frame_ns = 0
        self.cpu_at_first_frame = 0.0
        self._feed = None  # dm._feed.FeedListener of the current picows connection (fold_feed)
        self._feed_seen = (0, 0, 0, 0, 0)
        self.fast_book_frames = 0  # book diffs applied by the C frame path (steady state)
        self.fast_buffered_frames = 0  # ... and buffered by it for books awaiting a snapshot
        self.checksums_unchanged = 0  # of their checksums, those matched without rendering the book
        self.last_frame: bytes | str = b""
        self.stale_disconnects = 0
        self.ws: aiohttp.ClientWebSocketResponse | None = None
        self.gaps_recorded = 0  # GAP records written (book, reconnect, restart)
        self.refused_symbols: dict[str, str] = {}  # configured symbols the venue does not know -> why
        self.restart_from_ns = 0  # a restart window to record at the first frame starts after this
        self.restart_detail = ""
        self.restart_gaps = 0
        self.clean_stop = False
        self.capture = None  # dm.capture.Capture when [capture] is enabled
        self.persist_only: set[str] = set()  # symbols added at runtime without a channel
        self.open_done = False  # restore_runtime_symbols finished: changes are saved from then on
        self._control_tasks: set[asyncio.Task] = set()
        ex = pcfg.extra
        if "stale_after_s" in ex:
            self.stale_after_s = float(ex["stale_after_s"]) or None
        if "ping_interval_s" in ex:
            self.ping_interval_s = float(ex["ping_interval_s"]) or None
        #: websocket client: "picows" (default) or "aiohttp" (``[providers.X] transport``)
        self.transport = str(ex.get("transport", "picows"))
        if self.transport not in ("aiohttp", "picows"):
            raise ConfigError(f"providers.{self.name}.transport must be \"aiohttp\" or \"picows\", got {self.transport!r}")

    @classmethod
    def websocket_connections(cls, pcfg: ProviderConfig) -> int:
        """How many websocket connections a worker with this config keeps open at once: one,
        unless the venue needs several (Bybit: one per category). The supervisor tells a
        ``--once`` replay server to wait for that many."""
        return 1

    # -- set-up ---------------------------------------------------------------------------
    # Whether the global [symbology] quote aliases apply to this venue (a venue that lists both
    # XBT/USD and XBT/USDT sets False: USDT -> USD would merge them; it then takes only its own).
    global_quote_aliases = True

    async def fetch_reference(self) -> bytes:
        """The venue's REST reference data (exchangeInfo / AssetPairs / instruments), retried
        with backoff: the worker cannot map symbols without it."""
        delay = self.pcfg.reconnect_min_s
        while True:
            try:
                return await fetch_reference(self.pcfg.kind, self.pcfg.rest_url, self.session)
            except (SymbologyError, aiohttp.ClientError, OSError, asyncio.TimeoutError) as e:
                log.warning("reference data fetch failed", provider=self.name, error=repr(e), retry_in_s=delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.pcfg.reconnect_max_s)

    async def resolve_symbols(self) -> None:
        """Configured canonical symbols → ``venue_symbols`` (canonical → venue form, from the
        venue's reference data), ``instrument_ids`` (persistent registry) and ``venue_of``
        (instrument_id → venue form). Raises ``SymbologyError`` for unknown/ambiguous symbols."""
        default = self.cfg.quote_aliases if self.global_quote_aliases else {}
        aliases = self.pcfg.extra.get("quote_aliases", default)
        sym = for_provider(self.pcfg.kind, await self.fetch_reference(), aliases, exchange=self.exchange)
        self.symbology = sym  # kept for symbols added at runtime (dm.control)
        self.venue_symbols = self.select_symbols(sym)
        self.instrument_ids = await resolve_instruments(self.cfg, self.pcfg, self.venue_symbols)
        self.venue_of = {self.instrument_ids[c]: v for c, v in self.venue_symbols.items()}
        self.size_precision_of = {self.instrument_ids[c]: sym.info(v).resolved_size_precision()
                                  for c, v in self.venue_symbols.items()}

    def select_symbols(self, sym) -> dict[str, str]:
        """The configured canonical symbols the venue knows, ``{canonical: venue symbol}`` (via
        ``sym.select``, one symbol at a time). Unknown or ambiguous ones are refused with ONE log
        line naming them all and kept in ``refused_symbols`` (stats file); the worker runs the
        rest. Raises ``SymbologyError`` only when no configured symbol is left."""
        out: dict[str, str] = {}
        refused: dict[str, str] = {}
        for c in self.pcfg.symbols:
            try:
                out.update(sym.select([c]))
            except SymbologyError as e:
                refused[c] = str(e)
        self.refused_symbols = refused
        if refused:
            log.error("symbols refused (unknown to the venue); the worker runs the rest", provider=self.name,
                      refused=sorted(refused), running=len(out), reasons="; ".join(refused[c] for c in sorted(refused)))
        if not out:
            raise SymbologyError(f"providers.{self.name}: no configured symbol is known to the venue: "
                                 + "; ".join(refused.values()))
        return out


    def make_codec(self):  # pragma: no cover - abstract
        raise NotImplementedError

    def stream_url(self) -> str:
        return self.pcfg.ws_url

    async def on_connected(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        """Send subscribe messages (venues that subscribe in the URL need none)."""

    def on_book_frame(self, kind: int, ts_recv: int) -> None:  # pragma: no cover - per venue
        """A decoded book frame (``kind`` in ``book_kinds``): feed the instrument's sync."""
        raise NotImplementedError

    def request_book(self, iid: int) -> None:  # pragma: no cover - per venue
        """Resync one instrument's book: REST snapshot (Binance) or resubscribe (Kraken)."""
        raise NotImplementedError

    def ping_message(self) -> str | None:
        """App-level ping text sent every ``ping_interval_s`` (None: nothing to send)."""
        return None

    def on_disconnected(self) -> None:
        """The websocket is gone (called once per connection, before the reconnect): e.g. mark
        books stale until the next subscription's snapshot."""

    def open_rings(self) -> None:
        spool = self.cfg.spool_dir_for(self.name)
        spool.mkdir(parents=True, exist_ok=True)
        self.queue = PersistQueue(self.cfg.persist_name(self.name), self.cfg.shm.persist_bytes, LAYOUT_HASH, str(spool), fsync=self.cfg.shm.spool_fsync)
        self.fanout = Fanout(self.queue)
        self.fanout.set_bar_intervals(*live_plan(self.cfg, self.exchange))  # live bars ([bars], dm.bars)
        self._iid_to_symbol = {}
        for canonical, iid in self.instrument_ids.items():
            w = self.new_channel(canonical, iid, self.cfg.shm.channel_bytes_for(canonical))
            self.channels[canonical] = w
            self.fanout.add_channel(iid, w)
            self.channel_by_iid[iid] = w
            self._iid_to_symbol[iid] = canonical
        self.write_definitions()
        self.slot = Registry(self.cfg.shm.registry).register(
            self.cfg.instance, self.name, self.exchange, f"/dm.{self.cfg.instance}.{self.exchange}.", sorted(self.channels)
        )

    def close_rings(self) -> None:
        for w in self.channels.values():
            w.close(unlink=True)
        self.channels.clear()
        if self.queue is not None:
            self.queue.flush()
            self.queue.close()
        if self.slot is not None:
            self.slot.release()
            self.slot = None

    # -- runtime subscriptions (dm.control) -------------------------------------------------
    def new_book_sync(self, iid: int):
        """The venue's book sync for an instrument added at runtime (None: no books)."""
        return None

    def symbol_size_precision(self, canonical: str) -> int:
        """The instrument's size scale (decimals of its lot size): what ``resolve_symbols``
        recorded in ``size_precision_of``, else the symbology's; 9 when the venue's reference
        data does not tell."""
        iid = self.instrument_ids.get(canonical)
        if iid in self.size_precision_of:
            return self.size_precision_of[iid]
        sym = getattr(self, "symbology", None)
        if sym is not None:
            try:
                return sym.info_canonical(canonical).resolved_size_precision(9)
            except Exception:  # noqa: BLE001 - the default scale still represents the symbol
                pass
        return 9

    def new_channel(self, canonical: str, iid: int, capacity: int) -> ChannelWriter:
        """The channel ring of one instrument, its header naming the instrument."""
        return ChannelWriter(self.cfg.channel_name(self.exchange, canonical), capacity, LAYOUT_HASH,
                             instrument_id=iid, publisher_id=self.pcfg.publisher_id,
                             size_precision=self.size_precision_of.get(iid, 9))

    def register_codec_symbol(self, canonical: str, venue_symbol: str, iid: int) -> None:
        """Teach the codec a venue symbol added at runtime (at the instrument's size precision
        when the symbology knows it)."""
        self.codec.add_symbol(venue_symbol, iid, self.symbol_size_precision(canonical))

    async def subscribe_live(self, ws: aiohttp.ClientWebSocketResponse, venue_symbols: list[str]) -> None:
        """Subscribe ``venue_symbols`` on the open websocket without reconnecting (the venue's
        subscribe message). Raises ``NotImplementedError`` where the venue has none."""
        raise NotImplementedError(f"{self.pcfg.kind}: runtime subscription is not supported")

    async def unsubscribe_live(self, ws: aiohttp.ClientWebSocketResponse, venue_symbols: list[str]) -> None:
        """Stop the feed of ``venue_symbols`` on the open websocket."""
        raise NotImplementedError(f"{self.pcfg.kind}: runtime unsubscription is not supported")

    async def add_symbol(self, canonical: str, persist_only: bool = False) -> dict:
        """Start carrying ``canonical`` at runtime: venue form from the symbology, instrument id
        from the registry, codec entry, book sync, channel ring (unless ``persist_only``: its
        records then go to the persist queue only and cost no shm), registry entry, then the
        venue's subscribe message on the live socket (no reconnect). Returns a summary dict.
        Raises ``SymbologyError`` (unknown symbol), ``ValueError`` (already carried),
        ``NotImplementedError`` (venue without runtime subscription)."""
        canonical = canonical.strip().upper()
        if canonical in self.instrument_ids:
            raise ValueError(f"{canonical} is already carried by provider {self.name}")
        if type(self).subscribe_live is Provider.subscribe_live:
            raise NotImplementedError(f"{self.pcfg.kind}: runtime subscription is not supported")
        sym = getattr(self, "symbology", None)
        if sym is None:
            raise SymbologyError(f"provider {self.name}: no symbology loaded yet")
        venue_symbol = sym.select([canonical])[canonical]
        iid = (await resolve_instruments(self.cfg, self.pcfg, {canonical: venue_symbol}))[canonical]
        self.venue_symbols[canonical] = venue_symbol
        self.instrument_ids[canonical] = iid
        self.venue_of[iid] = venue_symbol
        self.size_precision_of[iid] = self.symbol_size_precision(canonical)
        self.write_definitions([iid])  # the registration reaches storage through the persister
        self.register_codec_symbol(canonical, venue_symbol, iid)
        if self.books is not None:
            sync = self.new_book_sync(iid)
            if sync is not None:
                self.books.syncs[iid] = sync
        channel = None
        if not persist_only:
            channel = self.cfg.channel_name(self.exchange, canonical)
            w = self.new_channel(canonical, iid, self.cfg.shm.channel_bytes_for(canonical))
            self.channels[canonical] = w
            self.channel_by_iid[iid] = w
            self._iid_to_symbol[iid] = canonical
            self.fanout.add_channel(iid, w)
            if self.slot is not None:
                self.slot.update_symbols(sorted(self.channels))
        else:
            self.persist_only.add(canonical)
        ws = self.ws
        if ws is not None and not ws.closed:
            await self.subscribe_live(ws, [venue_symbol])
        # else: the next connection subscribes every carried symbol (stream_url / on_connected)
        if self.open_done:
            self.save_runtime_symbols()
        log.info("symbol added at runtime", provider=self.name, symbol=canonical, venue_symbol=venue_symbol,
                 instrument_id=iid, persist_only=persist_only)
        return {"provider": self.name, "symbol": canonical, "exchange": self.exchange, "venue_symbol": venue_symbol,
                "instrument_id": iid, "channel": channel, "persist_only": persist_only}

    async def remove_symbol(self, canonical: str, grace_s: float = 5.0) -> dict:
        """Stop carrying ``canonical``: the venue's unsubscribe message, then the channel leaves
        the registry at once (no new reader finds it), is closed (readers get ``ClosedError``
        once they have read what it holds) and unlinked after ``grace_s``. Raises ``ValueError``
        when the symbol is not carried."""
        canonical = canonical.strip().upper()
        iid = self.instrument_ids.get(canonical)
        if iid is None:
            raise ValueError(f"{canonical} is not carried by provider {self.name}")
        if type(self).unsubscribe_live is Provider.unsubscribe_live:
            raise NotImplementedError(f"{self.pcfg.kind}: runtime unsubscription is not supported")
        venue_symbol = self.venue_symbols[canonical]
        ws = self.ws
        if ws is not None and not ws.closed:
            await self.unsubscribe_live(ws, [venue_symbol])
        del self.venue_symbols[canonical], self.instrument_ids[canonical]
        self.persist_only.discard(canonical)
        if self.books is not None:
            self.books.syncs.pop(iid, None)
        self.fanout.remove_channel(iid)
        w = self.channels.pop(canonical, None)
        self.channel_by_iid.pop(iid, None)
        if w is not None:
            if self.slot is not None:
                self.slot.update_symbols(sorted(self.channels))
            w.close(unlink=False)  # readers drain what it holds, then see the producer closed

            async def unlink_later(name=self.cfg.channel_name(self.exchange, canonical)):
                await asyncio.sleep(grace_s)
                if canonical not in self.channels:  # not subscribed again meanwhile
                    unlink_segment(name)

            t = asyncio.get_running_loop().create_task(unlink_later())
            self._control_tasks.add(t)
            t.add_done_callback(self._control_tasks.discard)
        if self.open_done:
            self.save_runtime_symbols()
        log.info("symbol removed at runtime", provider=self.name, symbol=canonical, instrument_id=iid)
        return {"provider": self.name, "symbol": canonical, "exchange": self.exchange, "instrument_id": iid}

    @property
    def runtime_path(self) -> Path:
        """Symbols added/removed at runtime, kept across a restart of this worker (the
        supervisor clears it at its own start: the config is the source of truth then)."""
        return self.cfg.instance_dir / f"{self.name}.runtime.json"

    def save_runtime_symbols(self) -> None:
        configured = {c.strip().upper() for c in self.pcfg.symbols}
        doc = {"added": {c: (c in self.persist_only) for c in self.instrument_ids if c not in configured},
               "removed": sorted(configured - set(self.instrument_ids))}
        tmp = self.runtime_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(doc))
        os.replace(tmp, self.runtime_path)

    async def restore_runtime_symbols(self) -> None:
        """After a restart: carry again what was subscribed at runtime (and not what was
        unsubscribed); the connection about to open subscribes them."""
        try:
            doc = json.loads(self.runtime_path.read_text())
        except FileNotFoundError:
            return
        except ValueError as e:
            log.error("runtime subscriptions unreadable; config symbols only", path=str(self.runtime_path), error=str(e))
            return
        for c, persist_only in doc.get("added", {}).items():
            try:
                await self.add_symbol(c, persist_only=bool(persist_only))
            except Exception as e:  # noqa: BLE001 - one symbol must not stop the worker
                log.error("runtime subscription not restored", provider=self.name, symbol=c, error=str(e))
        for c in doc.get("removed", []):
            try:
                await self.remove_symbol(c, grace_s=0.0)
            except Exception as e:  # noqa: BLE001
                log.error("runtime unsubscription not restored", provider=self.name, symbol=c, error=str(e))

    async def start_control(self):
        """This worker's control endpoint (``dm.control``); None when control is off."""
        from dm import control

        st = control.settings(self.cfg)
        if not st["enabled"]:
            return None
        wc = control.WorkerControl(self, float(st["unsubscribe_grace_s"]))
        try:
            await wc.start()
        except (OSError, control.ControlError) as e:
            log.error("worker control socket not started; runtime subscriptions unavailable", provider=self.name, error=str(e))
            return None
        return wc

    def carried(self) -> list[dict]:
        """What this worker carries now: ``[{symbol, venue_symbol, instrument_id, channel|None}]``."""
        return [{"symbol": c, "exchange": self.exchange, "venue_symbol": self.venue_symbols.get(c), "instrument_id": iid,
                 "channel": None if c in self.persist_only else self.cfg.channel_name(self.exchange, c),
                 "records": self.channels[c].records_written if c in self.channels else None}
                for c, iid in sorted(self.instrument_ids.items())]

    def write_definitions(self, instrument_ids=None) -> None:
        """One INSTRUMENT_DEF record per instrument (``instrument_ids``, default: all carried)
        to the persist queue: the persister registers it in storage (and in the cache).
        ``ts_event`` is the registration's time in the cache, so the same registration re-sent
        by every start is one row in storage."""
        from dm.instruments import InstrumentCache, cache_path, definition_record

        ts = now_ns()
        with InstrumentCache(cache_path(self.cfg.run_dir, self.cfg.instance)) as cache:
            regs = cache.registrations(self.instrument_ids.values() if instrument_ids is None else instrument_ids)
        known = getattr(self, "size_precision_of", None) or {}
        for inst, created_ns in regs:
            if inst.instrument_id in known:  # the scale this worker writes its records at
                inst = inst._replace(size_precision=int(known[inst.instrument_id]))
            self.queue.write(definition_record(inst, created_ns, ts))

    # -- gaps -----------------------------------------------------------------------------
    def record_gap(self, iid: int, kind: str, first_missing: int, last_missing: int, units: int,
                   detail: str = "", channel: bool = True) -> None:
        """A lost window of instrument ``iid``: one GAP record (``dm.records.gap_record``,
        ``first_missing``..``last_missing`` inclusive in ``units`` (``GapUnits``), detected now)
        to the persist queue, whence the persister stores it in the gap ledger, and with
        ``channel`` to the instrument's channel for its readers. A gap that cannot be encoded
        (kind too long, negative bound) is logged, never raised."""
        try:
            rec = gap_record(self.pcfg.publisher_id, iid, kind, first_missing, last_missing, units, now_ns(), detail)
        except (ValueError, OverflowError) as e:
            log.error("gap not recordable", provider=self.name, instrument_id=iid, kind=kind, error=str(e))
            return
        self.gaps_recorded += 1
        if channel:
            ch = self.channel_by_iid.get(iid)
            if ch is not None:
                ch.write(rec)
        self.queue.write(rec)

    def predecessor_window(self) -> tuple[int, str] | None:
        """Where the window lost to a restart starts: ``(ns since the epoch, detail)``, or None
        (first start, or the predecessor stopped cleanly). Call before ``open_rings``.

        The predecessor is the worker whose state file (``run_dir/<instance>/<name>.worker-state.json``:
        ``pid``, ``last_frame_ns``, ``clean_stop``, ``restart_from_ns``, ``restart_detail``,
        rewritten every second and at exit, ``write_state``) is found. A predecessor that
        inherited a window and received no frame before it ended passes that window on (even
        through a clean stop). Otherwise, unless it stopped cleanly, the window starts at the
        latest of its ``last_frame_ns`` (exact after a crash that ran its ``finally``, up to 1 s
        old after kill -9) and the ts_recv of the last record of each channel it left behind
        (exact: the channels of a killed worker stay until this one replaces them). The
        predecessor handled every frame it read up to that moment, so that start holds for each
        of its instruments."""
        try:
            doc = json.loads(self.state_path.read_text())
        except (OSError, ValueError):
            return None
        if not isinstance(doc, dict):
            return None
        pid = doc.get("pid")
        inherited = int(doc.get("restart_from_ns") or 0)
        if inherited:
            return inherited, str(doc.get("restart_detail") or "")
        if doc.get("clean_stop") or pid == os.getpid():
            return None
        start = int(doc.get("last_frame_ns") or 0)
        for canonical in self.instrument_ids:
            name = self.cfg.channel_name(self.exchange, canonical)
            try:
                info = segment_info(name)
                if info is None or info["kind"] != "channel" or info["state"] == "live" or info["producer_pid"] != pid:
                    continue
                r = ChannelReader(name, LAYOUT_HASH, start="oldest")
                try:
                    last = r.last_record()
                finally:
                    r.close()
            except RingError:
                continue
            if last is not None:
                start = max(start, _record_ts(last))
        if not start:
            return None  # it never read a frame: nothing of its own to lose
        return start, f"worker pid {pid} ended without a clean stop"

    def on_first_frame(self, ts_recv: int) -> None:
        """The first frame of this worker (ts_recv, ns): closes an inherited restart window
        with one ``restart`` GAP record per instrument, ``first_missing`` = just after the
        predecessor's last record, ``last_missing`` = just before this frame (persist queue only:
        a following reader gets its own restart marker from ``dm.client``)."""
        self.first_frame_ns = ts_recv
        self.cpu_at_first_frame = time.process_time()
        start = self.restart_from_ns
        if not start:
            return
        first, last = start + 1, max(ts_recv - 1, start + 1)
        for iid in self.instrument_ids.values():
            self.record_gap(iid, "restart", first, last, GapUnits.NS, self.restart_detail, channel=False)
        self.restart_gaps += len(self.instrument_ids)
        self.restart_from_ns = 0
        log.warning("restart gap recorded", provider=self.name, instruments=len(self.instrument_ids),
                    first_missing=first, last_missing=last, lost_s=round((ts_recv - start) / 1e9, 3),
                    detail=self.restart_detail)

    # -- the hot loop -------------------------------------------------------------------
    def on_frame(self, data: bytes, ts_recv: int) -> None:
        """Decode one frame (``bytes``/``str``, received at ``ts_recv`` ns since the epoch) and
        publish its records. A frame the codec refuses goes to the dead-letter file. (The picows
        transport does the same in C: ``dm._feed.FeedListener``.)"""
        self.frames += 1
        if self.frames == 1:
            self.on_first_frame(ts_recv)
        self.last_frame_ns = ts_recv
        try:
            n = self.codec.decode(data, ts_recv)
        except CodecError as e:
            if self.message_seq is not None:  # a number read before the error: the frame arrived
                self.check_message_seq(ts_recv)
            self.dead.add(ts_recv, data, e)
            return
        if self.message_seq is not None:
            self.check_message_seq(ts_recv)
        self.on_decoded(data, ts_recv, n)

    def check_message_seq(self, ts_recv: int) -> None:
        """The last decoded frame's number in the connection's message sequence (``message_seq``;
        the C frame path does the same in ``dm._feed``): the next one is taken, any other goes
        to ``on_message_seq``; a frame without one is not checked."""
        seq = self.codec.msg_seq
        if seq < 0:
            return
        ms = self.message_seq
        last = ms.last
        if last is not None and seq == last + 1:
            ms.last = seq
        else:
            self.on_message_seq(seq, ts_recv)

    def on_message_seq(self, seq: int, ts_recv: int) -> None:  # pragma: no cover - per venue
        """``seq`` (``message_seq``) is not the connection's next number: the connection's first,
        a break, a duplicate; the venue decides (gaps, resyncs) and advances ``message_seq.last``."""
        raise NotImplementedError

    def on_decoded(self, data, ts_recv: int, n: int) -> None:
        """The codec decoded ``data`` into ``n`` records (``self.codec.output()``): values it
        rejected alone are dead-lettered, kinds in ``book_kinds`` go to ``on_book_frame``
        (``self.last_frame`` holds the frame), the rest is published. A ``BookError`` or
        ``CodecError`` raised by the book logic dead-letters the frame."""
        codec = self.codec
        try:
            if codec.value_error_count:
                dead_letter_values(self, codec, data, ts_recv)
            if codec.last_kind in self.book_kinds:
                self.last_frame = data
                self.on_book_frame(codec.last_kind, ts_recv)
                return
        except (CodecError, BookError) as e:
            self.dead.add(ts_recv, data, e)
            return
        if n:
            self.publish(codec.output(), n)

    def fast_feed(self) -> bool:
        """Whether a picows connection decodes and publishes in C (``dm._feed``): yes unless raw
        capture wraps ``on_frame`` or the provider overrides ``on_frame``/``publish``."""
        cls = type(self)
        return ("on_frame" not in self.__dict__ and cls.on_frame is Provider.on_frame
                and cls.publish is Provider.publish and isinstance(self.codec, _Codec) and self.fanout is not None)

    def fold_feed(self) -> None:
        """Add what the C frame path (``dm._feed.FeedListener`` of the current picows
        connection) counted since the last fold to ``frames``/``records``/``last_frame_ns``."""
        if self._feed is not None:
            self._feed_seen = self.fold_counters(self._feed, self._feed_seen)

    def fold_counters(self, f, seen: tuple[int, ...]) -> tuple[int, ...]:
        """Add ``f``'s (a ``FeedListener``) counts beyond ``seen`` (its counts at the last fold)
        to this provider's; returns its counts now."""
        f.fold_last_ok()
        now = (f.frames, f.records, f.fast_book_frames, f.checksums_unchanged, f.fast_buffered_frames)
        self.frames += now[0] - seen[0]
        self.records += now[1] - seen[1]
        self.fast_book_frames += now[2] - seen[2]
        self.checksums_unchanged += now[3] - seen[3]
        self.fast_buffered_frames += now[4] - seen[4]
        if f.last_frame_ns > self.last_frame_ns:
            self.last_frame_ns = f.last_frame_ns
        return now

    def publish(self, buf, n: int) -> None:
        self.fanout.publish(buf)
        self.records += n

    def record_reconnect_gaps(self) -> None:
        """The window since the websocket was lost is a gap for every instrument (ns)."""
        t = now_ns()
        for iid in self.instrument_ids.values():
            self.record_gap(iid, "reconnect", self._disconnected_ns, t, GapUnits.NS, "websocket reconnect")
            if self.books is not None:
                self.books.gaps += 1

    async def run_connection(self) -> None:
        """One websocket connection: connect, subscribe, read until closed (``transport =
        "picows"`` in the provider's config: the picows Cython client, else aiohttp)."""
        if self.transport == "picows":
            return await self.run_connection_picows()
        url = self.stream_url()
        # ws_close: a dead peer (watchdog close) must not hold the reconnect for long
        async with self.session.ws_connect(url, heartbeat=30.0, max_msg_size=0, autoping=True,
                                           timeout=aiohttp.ClientWSTimeout(ws_close=1.0)) as ws:
            self.connects += 1
            log.info("connected", provider=self.name, url=url)
            if self._disconnected_ns:
                self.record_reconnect_gaps()
            self.ws = sock = self.captured_socket(ws, url)
            watchdog = None
            try:
                await self.on_connected(sock)
                if self.stale_after_s or self.ping_interval_s:
                    watchdog = asyncio.get_running_loop().create_task(self.watchdog(ws))
                on_frame = self.on_frame
                async for msg in ws:
                    if msg.type == aiohttp.WSMsgType.TEXT:
                        on_frame(msg.data, now_ns())  # the codec reads str without a copy
                    elif msg.type == aiohttp.WSMsgType.BINARY:
                        on_frame(msg.data, now_ns())
                    elif msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.ERROR):
                        break
                    if self._stop.is_set():
                        break
            finally:
                self.ws = None
                if watchdog is not None:
                    watchdog.cancel()
                self._disconnected_ns = now_ns()
                self.on_disconnected()
            log.info("disconnected", provider=self.name, code=ws.close_code)

    # -- raw capture (dm.capture) --------------------------------------------------------------
    def open_capture(self):
        """``[capture] enabled``: this worker's capture files, with ``on_frame`` capturing every
        frame before decoding it; else None."""
        from dm import venues
        from dm.capture import Capture

        if not self.cfg.sections.get("capture", {}).get("enabled"):
            return None
        host = venues.venue(self.pcfg.kind).hosts[0] if self.pcfg.kind in venues.kinds() else ""
        cap = Capture.from_config(self.cfg, self.pcfg, host)
        if cap is None:
            return None
        decode = self.on_frame

        def on_frame(data, ts_recv: int) -> None:
            cap.frame(self.connects, data, ts_recv)
            decode(data, ts_recv)

        self.on_frame = on_frame  # the connection loops bind self.on_frame when they start
        log.info("capturing raw frames", provider=self.name, dir=str(cap.dir))
        return cap

    def on_transport_connected(self, url: str) -> None:
        """picows: the websocket upgrade completed (called before its first frame)."""
        self.connects += 1
        if self.capture is not None:
            self.capture.connect(self.connects, url, now_ns())

    def captured_socket(self, ws, url: str, connect_line: bool = True):
        """The socket venue code gets: ``ws`` itself, or with capture on a wrapper recording what is sent."""
        if self.capture is None:
            return ws
        from dm.capture import CapturingSocket

        if connect_line:
            self.capture.connect(self.connects, url, now_ns())
        return CapturingSocket(ws, self.capture, self.connects, url)

    async def run_connection_picows(self) -> None:
        """One connection over picows (a Cython websocket client: frames reach ``on_frame``
        from its parser without an async iteration per frame; it answers pings itself, speaks
        TLS and proxies). Same contract as the aiohttp path: reconnect gaps, ``on_connected``
        with a socket offering ``send_str``/``close``/``closed``, the watchdog, ``on_disconnected``."""
        import picows

        url = self.stream_url()
        try:
            fast = self.fast_feed()
            transport, conn = await picows.ws_connect(lambda: _picows_connection(fast)(self, url), url, websocket_handshake_timeout=10, max_frame_size=1 << 30)
        except picows.WSError as e:
            raise aiohttp.ClientError(f"picows: {e}") from e
        if fast:  # frames may have arrived with the upgrade answer: fold_feed counts them too
            self._feed, self._feed_seen = conn, (0, 0, 0, 0, 0)
        if transport.is_disconnected:  # the peer closed during the upgrade: no connection at all
            self.fold_feed()
            self._feed = None
            if conn.transport is not None:  # on_ws_connected had counted it
                self.connects -= 1
            raise ConnectionError("picows: peer closed the connection during the websocket upgrade")
        log.info("connected", provider=self.name, url=url, transport="picows")
        if self._disconnected_ns:
            self.record_reconnect_gaps()
        self.ws = sock = self.captured_socket(conn, url, connect_line=False)
        watchdog = None
        stop = asyncio.get_running_loop().create_task(self._stop.wait())
        try:
            await self.on_connected(sock)
            if self.stale_after_s or self.ping_interval_s:
                watchdog = asyncio.get_running_loop().create_task(self.watchdog(conn))
            await asyncio.wait([stop, asyncio.ensure_future(transport.wait_disconnected())], return_when=asyncio.FIRST_COMPLETED)
        finally:
            stop.cancel()
            self.ws = None
            if watchdog is not None:
                watchdog.cancel()
            if not transport.is_disconnected:
                transport.send_close(picows.WSCloseCode.GOING_AWAY)
                transport.disconnect()
            self.fold_feed()
            self._feed = None
            self._disconnected_ns = now_ns()
            self.on_disconnected()
        log.info("disconnected", provider=self.name, code=conn.close_code, transport="picows")

    async def watchdog(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        """Per connection: app-level pings every ``ping_interval_s``; closes a socket on which
        no frame arrived for ``stale_after_s`` (the read loop then ends and the connection loop
        reconnects). Costs nothing per frame: it watches the frame counter."""
        stale, ping = self.stale_after_s, self.ping_interval_s
        tick = min(x for x in (1.0, (stale or 4.0) / 4, ping or 1.0) if x > 0)
        t0 = time.monotonic()
        self.fold_feed()
        seen, changed, pinged = self.frames, t0, t0
        while not ws.closed:
            await asyncio.sleep(tick)
            now = time.monotonic()
            self.fold_feed()
            if self.frames != seen:
                seen, changed = self.frames, now
            elif stale and now - changed >= stale:
                self.stale_disconnects += 1
                log.warning("connection silent, reconnecting", provider=self.name, silent_s=round(now - changed, 3))
                await ws.close(code=aiohttp.WSCloseCode.GOING_AWAY, message=b"no data")
                return
            if ping and now - pinged >= ping:
                pinged = now
                text = self.ping_message()
                if text is not None and not ws.closed:
                    try:
                        await ws.send_str(text)
                    except (ConnectionError, aiohttp.ClientError) as e:
                        log.warning("ping failed", provider=self.name, error=repr(e))

    async def connection_loop(self) -> None:
        """Reconnect forever with exponential backoff and full jitter (reset after a good session)."""
        delay = self.pcfg.reconnect_min_s
        while not self._stop.is_set():
            started = time.monotonic()
            try:
                await self.run_connection()
            except (aiohttp.ClientError, OSError, asyncio.TimeoutError) as e:
                log.warning("connection failed", provider=self.name, error=repr(e))
            if self._stop.is_set():
                break
            if time.monotonic() - started > 10 * self.pcfg.reconnect_min_s:
                delay = self.pcfg.reconnect_min_s
            sleep = random.uniform(0, delay)
            log.info("reconnecting", provider=self.name, in_s=round(sleep, 3))
            try:
                await asyncio.wait_for(self._stop.wait(), sleep)
            except asyncio.TimeoutError:
                pass
            delay = min(delay * 2, self.pcfg.reconnect_max_s)

    async def housekeeping(self) -> None:
        """Every second: ring heartbeats, persist-queue flush/spool rotation and fsync (in a
        thread: the event loop never waits on the disk), registry heartbeat, dead-letter bursts,
        stats file."""
        beat = 0
        while not self._stop.is_set():
            if self.fanout is not None:
                self.fanout.close_bars(now_ns())  # live bars whose interval ended (dm.bars)
            for w in self.channels.values():
                w.heartbeat()
            if self.queue is not None:
                self.queue.flush()
                if self.queue.fsync == "batch":
                    try:
                        await asyncio.to_thread(self.queue.sync)
                    except OSError as e:  # the spool stays in the kernel; retried next tick
                        log.error("spool fsync failed", provider=self.name, error=repr(e))
            if self.capture is not None:
                self.capture.flush()
            beat += 1
            if self.slot is not None and beat % 5 == 0:
                self.slot.heartbeat()
            self.dead.tick()
            self.write_stats()
            try:
                await asyncio.wait_for(self._stop.wait(), 1.0)
            except asyncio.TimeoutError:
                pass

    def stats(self) -> dict:
        self.fold_feed()
        synced = max(self.books.first_synced.values(), default=(0, 0, 0.0)) if self.books else (0, 0, 0.0)
        return {
            "provider": self.name,
            "exchange": self.exchange,
            "pid": os.getpid(),
            "connects": self.connects,
            "frames": self.frames,
            "frames_by_kind": self.codec.counts() if self.codec is not None else {},
            "records": self.records,
            "records_by_channel": {s: w.records_written for s, w in self.channels.items()},
            "persist_records": self.queue.records_written if self.queue is not None else 0,
            "persist_spooled": self.queue.records_spooled if self.queue is not None else 0,
            "dead_letters": self.dead.count,
            "dead_letters_by_kind": dict(self.dead.by_reason),
            "value_errors": self.value_errors,
            "live_bars": self.fanout.bar_stats if self.fanout is not None else {},
            "book_gaps": self.books.gaps if self.books else 0,
            "book_resyncs": self.books.resyncs if self.books else 0,
            "book_crossed": self.books.crossed if self.books else 0,
            "book_frames_in_c": self.fast_book_frames,
            "book_frames_buffered_in_c": self.fast_buffered_frames,
            "book_checksums_unchanged": self.checksums_unchanged,
            "stale_disconnects": self.stale_disconnects,
            "first_frame_ns": self.first_frame_ns,
            # the last book's first sync (0 without books): when the start-up ended
            "books_synced_ns": synced[0],
            "books_synced_frames": synced[1],
            "cpu_s_since_books_synced": time.process_time() - synced[2] if synced[0] else 0.0,
            "last_frame_ns": self.last_frame_ns,
            # CPU seconds (user + system) this worker spent since its first frame
            "cpu_s_since_first_frame": time.process_time() - self.cpu_at_first_frame if self.first_frame_ns else 0.0,
            # progress for the supervisor's /health, /ready, READY=1 and /metrics (dm.health)
            "connected": self.ws is not None and not self.ws.closed,
            "reconnects": max(0, self.connects - 1),
            "gaps": self.gaps_recorded,
            "restart_gaps": self.restart_gaps,
            "refused_symbols": self.refused_symbols,
            "restart_from_ns": self.restart_from_ns,  # a restart window not recorded yet (no frame so far)
            "clean_stop": self.clean_stop,
            "resyncs": self.books.resyncs if self.books else 0,
            "spool_bytes": self.spool_bytes(),
            "capture_error": self.capture.error if self.capture is not None else "",
            "ts": time.time(),
        }

    def spool_bytes(self) -> int:
        """Bytes in this provider's spool files (records the persist queue could not hold)."""
        total = 0
        try:
            with os.scandir(self.cfg.spool_dir_for(self.name)) as it:
                for e in it:
                    try:
                        total += e.stat().st_size
                    except OSError:
                        pass
        except OSError:
            pass
        return total

    def write_stats(self) -> None:
        """The stats file (for /health, dm top) and the state file the next worker reads."""
        self.stats_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.stats_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.stats(), indent=1))
        os.replace(tmp, self.stats_path)
        self.write_state()

    def write_state(self) -> None:
        """``run_dir/<instance>/<name>.worker-state.json`` (tmp + rename): see ``predecessor_window``."""
        self.fold_feed()
        doc = {"pid": os.getpid(), "last_frame_ns": self.last_frame_ns, "clean_stop": self.clean_stop,
               "restart_from_ns": self.restart_from_ns, "restart_detail": self.restart_detail, "ts": time.time()}
        tmp = self.state_path.with_name(self.state_path.name + ".tmp")
        tmp.write_text(json.dumps(doc))
        os.replace(tmp, self.state_path)


    def stop(self) -> None:
        self._stop.set()

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stop)
        timeout = aiohttp.ClientTimeout(total=None, connect=10, sock_connect=10)
        self.capture = self.open_capture()
        kw = {}
        if self.capture is not None:
            from dm.capture import capturing_response_class

            kw["response_class"] = capturing_response_class(self.capture)
        async with aiohttp.ClientSession(timeout=timeout, **kw) as self.session:
            await self.resolve_symbols()
            self.codec = self.make_codec()
            window = self.predecessor_window()
            if window is not None:
                self.restart_from_ns, self.restart_detail = window
                log.info("predecessor ended without a clean stop: a restart gap opens", provider=self.name,
                         after_ns=self.restart_from_ns, detail=self.restart_detail)
            self.open_rings()
            await self.restore_runtime_symbols()
            self.open_done = True
            control = await self.start_control()
            log.info("worker ready", provider=self.name, symbols=sorted(self.channels), instance=self.cfg.instance)
            freeze_startup_heap()
            try:
                hk = asyncio.create_task(self.housekeeping())
                conn = asyncio.create_task(self.connection_loop())
                await self._stop.wait()
                conn.cancel()
                await asyncio.gather(conn, return_exceptions=True)
                await hk
                # a stop asked for is clean; one forced by the supervisor's death (SIGTERM from
                # dm.lifeline, this process re-parented) loses a window: the next worker records it
                self.clean_stop = not _orphaned()
            finally:
                if control is not None:
                    await control.close()
                self.write_stats()
                self.close_rings()
                self.dead.close()
                if self.capture is not None:
                    self.capture.close()
                log.info("worker stopped", provider=self.name, frames=self.frames, records=self.records, dead_letters=self.dead.count)


async def resolve_instruments(cfg: Config, pcfg: ProviderConfig, venue_symbols: dict[str, str]) -> dict[str, int]:
    """Canonical symbol → instrument_id from the instance's local instrument cache
    (``dm.instruments.InstrumentCache``, ``run_dir/<instance>/instruments.sqlite``), assigning
    new ones there: no database needed (when the cache lacks a symbol, the database's
    registrations are copied in first if it answers within 2 s: ``seed_from_storage``) (the persister reconciles the cache with storage, and
    ``Provider.write_definitions`` sends each registration as an INSTRUMENT_DEF record). Raises
    ``InstrumentError`` when the cache is unusable."""
    from dm.instruments import InstrumentCache, InstrumentRegistry, cache_path, seed_from_storage

    def work():
        with InstrumentCache(cache_path(cfg.run_dir, cfg.instance)) as cache:
            reg = InstrumentRegistry(cache)
            if any(reg.get(c, pcfg.exchange) is None for c in venue_symbols):
                # new to the cache: take the database's ids if it answers at once (never waits long)
                n = seed_from_storage(cache, cfg.storage.url, min(2.0, cfg.storage.timeout_s or 2.0))
                if n > 0:
                    reg.reload()
                log.info("instrument cache seeded from the database" if n >= 0 else
                         "database not readable; instrument ids from the local cache", provider=pcfg.name,
                         imported=max(n, 0))
            got = reg.resolve_many((c, pcfg.exchange, v, pcfg.publisher_id) for c, v in venue_symbols.items())
            return {c: got[(c, pcfg.exchange)] for c in venue_symbols}

    return await asyncio.to_thread(work)


def freeze_startup_heap() -> None:
    """Move everything allocated so far (modules, reference data, symbol tables, books) out of
    the cyclic collector's sight (``gc.freeze``): it never becomes garbage, and a collection
    triggered by the frame path then walks only what frames allocate, not the whole heap."""
    gc.collect()
    gc.freeze()


def _orphaned() -> bool:
    """This worker's supervisor (``$DM_SUPERVISOR_PID``) is gone (we were re-parented)."""
    sup = os.environ.get("DM_SUPERVISOR_PID", "")
    return sup.isdigit() and os.getppid() != int(sup)


def _record_ts(raw: bytes) -> int:
    """ts_recv of a record (ns since the epoch), ts_event for a BAR (it has no ts_recv)."""
    from dm.records import RType

    if raw[1] == RType.BAR or len(raw) < 24:
        return int.from_bytes(raw[8:16], "little")
    return int.from_bytes(raw[16:24], "little")


def provider_class(kind: str):
    """The worker class of provider ``kind``, from the venue registry (``dm.venues``). Raises
    ``NotImplementedError`` for a kind that has no worker."""
    import importlib

    from dm import venues
    from dm.providers import WORKERS

    if kind in WORKERS:
        module, _, cls = WORKERS[kind].partition(":")
        return getattr(importlib.import_module(module), cls)
    if kind not in venues.worker_kinds():
        raise NotImplementedError(f"provider kind {kind!r} has no worker yet (workers: {', '.join((*venues.worker_kinds(), *WORKERS))})")
    return venues.venue(kind).provider_class()


def run_worker(cfg: Config, name: str) -> None:
    """Entry point of ``dm worker NAME``: runs the provider on uvloop until SIGTERM/SIGINT."""
    import uvloop

    pcfg = cfg.providers[name]
    if "{replay}" in pcfg.ws_url + pcfg.rest_url:
        raise ConfigError(f"providers.{name}: URLs use {{replay}} but DM_REPLAY_ADDR is not set: run the worker under `dm supervise` with [replay] enabled")
    prov = provider_class(pcfg.kind)(cfg, pcfg)
    uvloop.run(prov.run())
