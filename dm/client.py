"""dm.client: the reader trading processes import.

    from dm.client import Client, Gap, Overrun
    with Client() as client:
        sub = client.subscribe("ZILUSD", exchange="BINANCE")
        for rec in sub:                      # blocks; follows producer restarts (follow=True)
            if isinstance(rec, Overrun):     # the reader was lapped: rec.lost_records are gone
                ...
            elif isinstance(rec, Gap):       # a lost window, e.g. kind "restart": the producer
                ...                          # died or stopped and a new one took over
            else:
                print(rec.price, rec.dec("price"), rec.dec("size"))  # raw ints, exact Decimals

Channels are found through the shm service registry (``/dm.registry``): each worker registers its
exchange, channel prefix and symbols. A subscription maps the symbol's channel ring read-only and
reads records one at a time, as numpy batches, or with ``async for``. One at a time, a record is
an object of ``dm._recobj`` (re-exported here: ``Trade``, ``Bbo``, ``BookDelta``, ``Depth``,
``Bar``, ``Gap``, ``Statistic``, ``InstrumentDef``, ``MbpEvent``) over a copy of the record's
struct: the fields of the ``dm.records`` namedtuple of the same name (raw fixed-point ints,
prices at 1e-9, sizes at the record's ``size_precision``, timestamps in ns since the UNIX epoch),
decoded when read; ``rec.to_tuple()`` gives the namedtuple, and ``isinstance(rec,
dm.records.Trade)`` holds as well (``isinstance(rec, dm.client.Trade)`` is cheaper). Waiting is adaptive
(yield → sleep, 20 µs up to 1 ms) so idle readers do not burn a core; ``busy_poll=True`` spins
for the lowest latency (use it for at most cores − 1 readers).

Producer restarts: a worker that dies (kill -9, crash) or stops and starts again re-creates its
channels under the same names. A subscription with ``follow=True`` (the default) waits for the
new channel, re-attaches, and first hands the reader a ``dm.records.Gap`` record (kind
``"restart"``, units ``GapUnits.NS``) naming the window it may have lost; nothing is dropped
silently (records the new producer wrote before the reader re-attached and that were already
overwritten come as an ``Overrun``). With ``follow=False`` iteration ends when the producer stops.
"""
from __future__ import annotations

import asyncio
import collections
import fcntl
import os
import tempfile
import threading
import time
from typing import Iterator, NamedTuple

import numpy as np

from dm._client import SubscriptionCore
from dm._recobj import (Bar, Bbo, BookDelta, Depth, Gap, InstrumentDef, MbpEvent, Record, Statistic, Trade,
                        from_bytes, read_record, spin_raw, spin_record)
from dm._ring import ChannelReader, now_ns
from dm.errors import ClosedError, LayoutMismatchError, ProducerGoneError, RingError
from dm.records import DTYPES, LAYOUT_HASH, GapUnits, RType, gap_record
from dm.registry import Registry

__all__ = ["Client", "Subscription", "Overrun", "SpinSlot", "Record", "Trade", "Bbo", "Depth", "BookDelta", "Bar",
           "MbpEvent", "Gap", "Statistic", "InstrumentDef", "from_bytes"]

#: a following subscription whose producer is gone looks for the new channel this often (s)
FOLLOW_POLL_S = 0.01
#: non-blocking reads (``timeout=0``, ``read_batch``, ``async for``) look at the producer's
#: liveness at most this often while the ring is empty (s)
CHECK_EVERY_S = 0.1
#: blocking reads wait on the ring in slices of this length to notice a producer killed
#: without closing its ring (s)
WAIT_SLICE_S = 0.1
#: a busy-polling reader spins in C this long (s) before it waits in ``ChannelReader.wait``
SPIN_S = 0.002

_SWITCHED = object()  # internal: re-attached to a new producer; a gap record is queued
_RT_BAR = int(RType.BAR)


class Overrun(NamedTuple):
    """Yielded in the record stream when records were lost before the next one: the reader
    was lapped by the writer, or (after a restart) the new producer overwrote records before
    the reader re-attached."""

    lost_records: int


def _overrun(sub: "Subscription", lost: int, raw: bytes | None) -> "Overrun":
    """``read_record``'s callback when records were lost before the next one: count them, queue
    that next record after the marker."""
    sub.overruns += 1
    sub.lost_records += lost
    if raw is not None:
        sub._queued.append(raw)
    return Overrun(lost)


class SpinSlot:
    """Machine-wide limit on busy-polling readers: at most ``os.cpu_count() - 1`` at once, so a
    spinning reader never starves the writer of a core. A slot is an exclusive ``flock`` on one
    of N lock files in ``$XDG_RUNTIME_DIR`` (or the temp dir); the kernel releases it when the
    process exits, so a crashed reader never leaks one."""

    def __init__(self, fd: int, index: int):
        self.fd, self.index = fd, index

    @classmethod
    def acquire(cls, limit: int | None = None) -> "SpinSlot | None":
        limit = max(0, (os.cpu_count() or 1) - 1) if limit is None else limit
        base = os.environ.get("XDG_RUNTIME_DIR") or tempfile.gettempdir()
        for i in range(limit):
            fd = os.open(os.path.join(base, f"dm-spin.{i}.lock"), os.O_RDWR | os.O_CREAT, 0o666)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return cls(fd, i)
            except BlockingIOError:
                os.close(fd)
        return None

    def release(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)  # drops the flock
            self.fd = -1


class Waiter:
    """Adaptive wait: optional spin, then sched_yield, then sleeps doubling from 50 µs to 1 ms."""

    __slots__ = ("busy_poll", "n")

    def __init__(self, busy_poll: bool = False):
        self.busy_poll = busy_poll
        self.n = 0

    def reset(self) -> None:
        self.n = 0

    def delay(self) -> float:
        """Seconds to sleep now (0 = spin or yield)."""
        self.n += 1
        if self.busy_poll:
            return 0.0
        if self.n <= 4:
            os.sched_yield()
            return 0.0
        return min(50e-6 * (1 << min(self.n - 5, 5)), 1e-3)

    def wait(self) -> None:
        d = self.delay()
        if d:
            time.sleep(d)


def _ts_of(raw: bytes) -> int:
    """ts_recv of a record (ns since the epoch), or ts_event for a BAR (which has no ts_recv)."""
    if raw[1] == _RT_BAR or len(raw) < 24:
        return int.from_bytes(raw[8:16], "little")
    return int.from_bytes(raw[16:24], "little")


def _as_array(raw: bytes) -> np.ndarray:
    dt = DTYPES.get(raw[1])
    if dt is None or dt.itemsize != len(raw):
        dt = np.dtype((np.void, len(raw)))
    return np.frombuffer(raw, dtype=dt).copy()


class Subscription(SubscriptionCore):
    """One channel ring (a symbol on an exchange), mapped read-only.

    ``start``: ``"oldest"`` (every record still held, e.g. to see a session from the start) or
    ``"newest"`` (only records written from now on). ``busy_poll``: spin while waiting, if one
    of the machine's ``cores - 1`` spin slots is free (``SpinSlot``); otherwise this reader
    waits without spinning and ``busy_poll`` reads False.

    ``follow`` (default True): when the producer stops (closes the channel, or its pid is gone)
    and a new producer re-creates the channel, re-attach to it. The first item after the switch
    is a ``dm.records.Gap``: ``kind`` ``"restart"``, ``units`` ``GapUnits.NS``,
    ``first_missing``..``last_missing`` (inclusive, ns since the epoch) from just after the
    ts_recv (ts_event for a BAR) of the last record the old producer wrote (the old channel's
    creation time if it wrote none) to just before the ts_recv of the new producer's first
    record (the new channel's creation time if it has written none yet); ``instrument_id`` and
    ``publisher_id`` from the channel header (else from that last record); ``detail`` names
    both pids. Records the new producer wrote and overwrote before the switch come next as an
    ``Overrun``, then every record of the new producer from its first one. While no new producer
    is there, reads wait (``timeout``) and ``producer_state()`` says ``"closed"`` or ``"dead"``.
    ``follow=False``: blocking reads raise ``ProducerGoneError`` and iteration ends once the
    producer stopped and everything it wrote was read.

    GAP records the producer itself writes on the channel (sequence breaks, reconnects) are
    delivered like every other record.

    Attributes: ``name``, ``symbol``, ``exchange``, ``follow``, ``busy_poll``; from the channel
    header (updated on a re-attach): ``instrument_id`` (0: not given), ``size_precision``
    (sizes in units of 10**-size_precision; None from a writer that predates it),
    ``publisher_id``, ``producer_pid``; counters ``restarts`` (re-attaches), ``overruns`` and
    ``lost_records``.

    Closing: ``close()`` may be called from another thread, also while one is blocked in a
    read; every read after (or woken by) it raises ``ClosedError`` (a ``RingError``). A
    subscription is read by one thread at a time.
    """

    def __init__(self, name: str, symbol: str, exchange: str, start: str = "oldest",
                 busy_poll: bool = False, follow: bool = True):
        self.name = name
        self.symbol = symbol
        self.exchange = exchange
        self.follow = follow
        self.reader = ChannelReader(name, LAYOUT_HASH, start=start)
        self.spin_slot = SpinSlot.acquire() if busy_poll else None
        self.busy_poll = self.spin_slot is not None
        self.waiter = Waiter(self.busy_poll)
        self.overruns = 0
        self.lost_records = 0
        self.restarts = 0
        self._queued: collections.deque = collections.deque()  # records (bytes) / Overrun to hand out first
        self._lock = threading.Lock()  # guards the reader swap against close()
        self._closed = False
        self._gone: str | None = None  # "closed" / "dead" while waiting for a new producer
        self._next_check = 0.0
        self._on_overrun = _overrun
        self.spin_s = SPIN_S
        self._meta()

    def _meta(self) -> None:
        r = self.reader
        self.instrument_id = r.instrument_id
        self.size_precision = r.size_precision
        self.publisher_id = r.publisher_id
        self.producer_pid = r.producer_pid

    # -- reading --------------------------------------------------------------------------
    # read_raw(timeout) and read(timeout) are C methods of SubscriptionCore (dm/_client.pyx, where
    # they are documented): a record that is there, or arrives while a busy-polling read spins, is
    # handed out with no Python frame in between. Everything else comes here.
    def _read_raw_slow(self, timeout: float | None, spun: bool) -> bytes | None:
        """``read_raw`` after an empty look at the ring (``spun``: and after its spin)."""
        if self._queued:
            return self._take_queued_raw()
        raw = self._slow(timeout, False, spun)
        if raw is _SWITCHED:
            return self._take_queued_raw()
        return raw

    def _read_slow(self, timeout: float | None, spun: bool):
        """``read`` after an empty look at the ring (``spun``: and after its spin)."""
        if self._queued:
            return self._take_queued()
        rec = self._slow(timeout, True, spun)
        if rec is _SWITCHED:
            return self._take_queued()
        return rec

    def read_batch(self, max_records: int = 4096) -> np.ndarray | None:
        """Up to ``max_records`` records of one rtype as a numpy structured array
        (``dm.records.DTYPES[rtype]``, e.g. ``GAP_DTYPE`` for the restart marker), or None when
        nothing is new. Does not wait. Overruns are counted in ``lost_records``/``overruns``.
        Raises ``ClosedError`` when the subscription is closed."""
        while self._queued:
            item = self._queued.popleft()
            if self._closed:
                raise ClosedError(f"{self.name}: subscription is closed")
            if not isinstance(item, Overrun):
                return _as_array(item)
        arr = self.reader.read_batch(max_records)
        if arr is None and self.follow:
            raw = self._slow(0, False)
            if raw is _SWITCHED:
                return self.read_batch(max_records)
            if raw is not None:
                arr = _as_array(raw)
        lost = self.reader.take_overrun()
        if lost:
            self.overruns += 1
            self.lost_records += lost
        return arr

    def __iter__(self) -> Iterator:
        """Blocking iteration over ``read`` items. Ends (``follow=False``) when the producer
        stopped and everything was read; with ``follow=True`` it runs until ``close()``
        (then raises ``ClosedError``)."""
        read = self.read
        while True:
            if not self._queued:  # the hot path of read(), inlined
                rec = read_record(self.reader, _overrun, self)
                if rec is not None:
                    yield rec
                    continue
            try:
                rec = read(timeout=None)
            except ProducerGoneError:
                return
            if rec is not None:
                yield rec

    async def __aiter__(self):
        """``async for rec in sub``: waits with ``asyncio.sleep`` (yield → 50 µs … 1 ms), never
        blocking the event loop; follows restarts as ``__iter__`` (re-attach noticed within
        ``CHECK_EVERY_S``); with ``follow=False`` ends when the producer stopped."""
        w = self.waiter
        while True:
            rec = self.read(0)
            if rec is None:
                if not self.follow and self._stopped():
                    return
                await asyncio.sleep(w.delay())
                continue
            w.reset()
            yield rec

    # -- internals ------------------------------------------------------------------------
    def _take_queued(self):
        item = self._queued.popleft()
        if self._closed:
            raise ClosedError(f"{self.name}: subscription is closed")
        return item if isinstance(item, Overrun) else from_bytes(item)

    def _take_queued_raw(self) -> bytes | None:
        while self._queued:
            item = self._queued.popleft()
            if self._closed:
                raise ClosedError(f"{self.name}: subscription is closed")
            if not isinstance(item, Overrun):
                return item
        return None

    def _poll(self, obj: bool):
        """One look at the ring: a record object / Overrun (``obj``) or bytes, or None."""
        return read_record(self.reader, _overrun, self) if obj else self.reader.read()

    def _slow(self, timeout: float | None, obj: bool, spun: bool = False):
        """After an empty read: wait up to ``timeout`` (0: a rate-limited look at the
        producer only, with ``follow``), following a restart. Returns what ``_poll(obj)``
        found, None (timeout) or _SWITCHED (re-attached: the gap record is queued).
        ``spun``: the caller already spun ``spin_s`` on the ring (the C fast path)."""
        if timeout == 0:
            if not self.follow:
                return None
            now = time.monotonic()
            if now < self._next_check:
                return None
            self._next_check = now + CHECK_EVERY_S
            return self._on_idle(obj)
        r = self.reader
        if self.busy_poll and self._gone is None and not spun:  # a spin slot: poll in C, holding the GIL briefly
            got = spin_record(r, _overrun, self, self.spin_s) if obj else spin_raw(r, self.spin_s)
            if got is not None:
                return got
        deadline = None if timeout is None else time.monotonic() + timeout
        spin = 1_000_000 if self.busy_poll else 200
        while True:
            left = WAIT_SLICE_S if deadline is None else min(WAIT_SLICE_S, deadline - time.monotonic())
            if left > 0:
                if self._gone is not None:  # waiting for a new producer: poll for it
                    time.sleep(min(left, FOLLOW_POLL_S))
                    ready = False
                else:
                    ready = self.reader.wait(left, spin, 50)
                got = self._poll(obj)
                if got is not None:
                    return got
                if not ready:
                    res = self._on_idle(obj)
                    if res is not None:
                        return res
            if deadline is not None and time.monotonic() >= deadline:
                return None

    def _stopped(self) -> bool:
        """(``follow=False``, rate-limited) The producer stopped and everything it wrote was read."""
        now = time.monotonic()
        if now < self._next_check:
            return False
        self._next_check = now + CHECK_EVERY_S
        r = self.reader
        return r.producer_state() in ("closed", "dead") and r.lag_bytes == 0

    def _on_idle(self, obj: bool):
        """The ring is empty: is the producer gone? Returns what ``_poll(obj)`` finds written
        just before it stopped, _SWITCHED after a re-attach, or None. Raises
        ``ProducerGoneError`` when it is gone and not following."""
        if self._closed:
            raise ClosedError(f"{self.name}: subscription is closed")
        state = self._gone
        if state is None:  # (a stopped producer never comes back: closed / dead pid are final)
            r = self.reader
            state = r.producer_state()
            if state not in ("closed", "dead"):
                return None
            got = self._poll(obj)  # written before it stopped
            if got is not None:
                return got
            if not self.follow:
                raise ProducerGoneError(f"{self.name}: producer {state}")
            self._gone = state
        return _SWITCHED if self._reattach(state) else None

    def _reattach(self, state: str) -> bool:
        """Switch to a channel a new producer created under our name; queue the gap marker."""
        old = self.reader
        try:
            st = os.stat("/dev/shm/" + self.name[1:])
        except FileNotFoundError:
            return False
        if (st.st_dev, st.st_ino) == old.ident:
            return False  # still the old segment
        try:
            new = ChannelReader(self.name, LAYOUT_HASH, start="first")
        except LayoutMismatchError:
            raise  # the new producer runs another dm version: say so, loudly
        except RingError:
            return False  # being created or removed again: next poll
        try:
            gap = self._gap_record(old, new, state)
        except BaseException:
            new.close()
            raise
        with self._lock:
            if self._closed:
                new.close()
                raise ClosedError(f"{self.name}: subscription is closed")
            self.reader = new
        old.close()
        self._queued.append(gap)
        lost = new.take_overrun()  # overwritten before we attached: after the marker
        if lost:
            self.overruns += 1
            self.lost_records += lost
            self._queued.append(Overrun(lost))
        self.restarts += 1
        self._gone = None
        self._meta()
        return True

    def _gap_record(self, old: ChannelReader, new: ChannelReader, state: str) -> bytes:
        last = old.last_record()
        first = None
        try:
            probe = ChannelReader(self.name, LAYOUT_HASH, start="first")
            try:
                first = probe.read() if probe.ident == new.ident else None
            finally:
                probe.close()
        except RingError:
            pass
        start = _ts_of(last) if last is not None else old.created_ns
        end = _ts_of(first) if first is not None else new.created_ns
        first_missing = start + 1
        last_missing = max(end - 1, first_missing)
        iid = new.instrument_id or (int.from_bytes(last[4:8], "little") if last is not None else 0)
        pub = new.publisher_id or (int.from_bytes(last[2:4], "little") if last is not None else 0)
        detail = f"producer pid {old.producer_pid} {state}; pid {new.producer_pid} re-created the channel"
        return gap_record(pub, iid, "restart", first_missing, last_missing, GapUnits.NS, now_ns(), detail)

    # -- state ----------------------------------------------------------------------------
    def producer_state(self) -> str:
        """``live`` | ``closed`` | ``dead`` (pid gone) | ``stale`` (heartbeat old: quiet or hung),
        of the producer currently attached (while following, the stopped one until a new one
        is there). Raises ``ClosedError`` when the subscription is closed."""
        return self.reader.producer_state()

    @property
    def closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        """Unmap the channel and release the spin slot. Idempotent; safe from another thread:
        a read blocked in it raises ``ClosedError`` within about a millisecond."""
        with self._lock:
            self._closed = True
            r = self.reader
        r.close()
        if self.spin_slot is not None:
            self.spin_slot.release()
            self.spin_slot = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class Client:
    """Discovers channels through the shm service registry.

    ``instance``: only use channels of this dm instance (None: any). ``registry``: the
    registry segment name. ``subscribe`` raises ``RingError`` when no live worker serves the
    symbol within ``wait`` seconds (and ``LayoutMismatchError`` when the worker runs another
    dm record layout). ``close()`` closes every subscription made through this client."""

    def __new__(cls, instance: str | None = None, registry: str = "/dm.registry", *, url: str | None = None, **remote):
        """``url="nats://HOST:4222"``: a ``dm.remote.RemoteClient`` with the same API, reading the
        channels a ``dm bridge`` publishes to NATS JetStream (nats is imported only then)."""
        if url is None:
            return super().__new__(cls)
        from dm.remote import RemoteClient

        return RemoteClient(url, instance, **remote)

    def __init__(self, instance: str | None = None, registry: str = "/dm.registry", *, url: str | None = None,
                 control: str | None = None):
        self.instance = instance
        self.registry_name = registry
        self.subscriptions: list[Subscription] = []
        #: the service's control socket (``subscribe(..., request=True)``): ``control``, else
        #: ``$DM_CONTROL``, else ``var/run/<instance>/control.sock`` (the default run_dir)
        self.control = control or os.environ.get("DM_CONTROL") or (f"var/run/{instance}/control.sock" if instance else None)

    def _registry(self) -> Registry | None:
        try:
            return Registry.open_readonly(self.registry_name)
        except (RingError, FileNotFoundError):
            return None

    def channels(self) -> list[tuple[str, str, str]]:
        """Live channels as ``(exchange, symbol, shm name)``."""
        reg = self._registry()
        if reg is None:
            return []
        out = []
        for e in reg.entries():
            if self.instance and e.instance != self.instance:
                continue
            out += [(e.exchange, s, e.prefix + s) for s in e.symbols]
        return sorted(out)

    def subscribe(self, symbol: str, exchange: str, *, start: str = "oldest", wait: float = 5.0,
                  busy_poll: bool = False, follow: bool = True, request: bool = False,
                  persist_only: bool = False) -> Subscription:
        """Subscribe to a canonical symbol (``"ZILUSD"``) on an exchange (``"BINANCE"``);
        ``start``, ``busy_poll`` and ``follow`` (re-attach after a producer restart, with a
        ``Gap`` marker) as ``Subscription``. Waits up to ``wait`` s for a worker to register
        the symbol. ``request=True``: when no worker carries it yet, ask the service to
        (``SUBSCRIBE`` on its control socket, see ``dm.control``) and wait for the channel.
        Raises ``RingError`` as described on the class, ``dm.control.ControlError`` when the
        service refuses the request (unknown symbol, channel budget full, ...)."""
        symbol, exchange = symbol.upper(), exchange.upper()
        if request and not any(ex == exchange and sym == symbol for ex, sym, _ in self.channels()):
            from dm.control import ControlError, request as control_request

            if not self.control:
                raise ControlError("subscribe(request=True) needs the service's control socket: Client(control=PATH), "
                                   "Client(instance=...) or $DM_CONTROL")
            ans = control_request(self.control, {"op": "subscribe", "symbol": f"{symbol}@{exchange}", "persist_only": persist_only})
            if not ans.get("ok") and "already carried" not in str(ans.get("error")):
                raise ControlError(ans.get("error", "subscribe refused"))
        deadline = time.monotonic() + wait
        while True:
            for ex, sym, name in self.channels():
                if ex == exchange and sym == symbol:
                    try:
                        sub = Subscription(name, symbol, exchange, start=start, busy_poll=busy_poll, follow=follow)
                    except LayoutMismatchError:
                        raise
                    except RingError:
                        break  # registered but the segment is not there yet
                    self.subscriptions.append(sub)
                    return sub
            if time.monotonic() >= deadline:
                raise RingError(f"no live dm worker serves {symbol} on {exchange} (registry {self.registry_name})")
            time.sleep(0.02)

    def close(self) -> None:
        for s in self.subscriptions:
            s.close()
        self.subscriptions.clear()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
