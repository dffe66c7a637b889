"""dm.client: the reader trading processes import.

    from dm.client import Client
    with Client() as client:
        sub = client.subscribe("ZILUSD", exchange="BINANCE")
        for rec in sub:                      # blocks; ends when the producer closes or dies
            if isinstance(rec, Overrun):     # the reader was lapped: rec.lost_records are gone
                ...
            print(rec.price, rec.dec("price"))   # raw fixed-point 1e-9 int, exact Decimal

Channels are found through the shm service registry (``/dm.registry``): each worker registers its
exchange, channel prefix and symbols. A subscription maps the symbol's channel ring read-only and
reads records (``dm.records.Trade``, ``Bbo``, ``BookDelta``, ``Depth``, ``Bar``: raw fixed-point
ints at 1e-9, timestamps in ns since the UNIX epoch) one at a time, as numpy batches, or with
``async for``. Waiting is adaptive (yield → sleep, 50 µs up to 1 ms) so idle readers do not burn
a core; ``busy_poll=True`` spins for the lowest latency (use it for at most cores − 1 readers).
"""
from __future__ import annotations

import asyncio
import fcntl
import os
import tempfile
import time
from typing import Iterator, NamedTuple

import numpy as np

from dm._ring import ChannelReader
from dm.errors import ProducerGoneError, RingError
from dm.records import LAYOUT_HASH, unpack
from dm.registry import Registry


class Overrun(NamedTuple):
    """Yielded in the record stream when the reader was lapped by the writer."""

    lost_records: int


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


class Subscription:
    """One channel ring (a symbol on an exchange), mapped read-only.

    ``start``: ``"oldest"`` (every record still held, e.g. to see a session from the start) or
    ``"newest"`` (only records written from now on). ``busy_poll``: spin while waiting, if one
    of the machine's ``cores - 1`` spin slots is free (``SpinSlot``); otherwise this reader
    waits without spinning and ``busy_poll`` reads False."""

    def __init__(self, name: str, symbol: str, exchange: str, start: str = "oldest", busy_poll: bool = False):
        self.name = name
        self.symbol = symbol
        self.exchange = exchange
        self.reader = ChannelReader(name, LAYOUT_HASH, start=start)
        self.spin_slot = SpinSlot.acquire() if busy_poll else None
        self.busy_poll = self.spin_slot is not None
        self.waiter = Waiter(self.busy_poll)
        self.overruns = 0
        self.lost_records = 0
        self._pending: bytes | None = None  # record read together with an overrun

    # -- reading --------------------------------------------------------------------------
    def read_raw(self, timeout: float | None = 0.0) -> bytes | None:
        """Next record's bytes, waiting up to ``timeout`` s (None: forever, 0: do not wait).
        The wait runs in C without the GIL: spin (``busy_poll``), sched_yield, then sleeps from
        20 µs doubling to 1 ms. Raises ``ProducerGoneError`` when nothing is left and the
        producer closed the channel or died."""
        r = self.reader
        rec = r.read()
        if rec is not None or timeout == 0:
            return rec
        if self.busy_poll:  # this reader holds a spin slot: poll without leaving Python (~50 ns a try)
            read = r.read
            for _ in range(20_000):
                rec = read()
                if rec is not None:
                    return rec
        deadline = None if timeout is None else time.monotonic() + timeout
        spin = 1_000_000 if self.waiter.busy_poll else 200
        while True:
            left = -1.0 if deadline is None else max(0.0, deadline - time.monotonic())
            # wait in slices so a producer that dies without closing is noticed
            ready = r.wait(1.0 if left < 0 else min(left, 1.0), spin, 50)
            rec = r.read()
            if rec is not None:
                return rec
            if not ready and r.producer_state() in ("closed", "dead"):
                raise ProducerGoneError(f"{self.name}: producer {r.producer_state()}")
            if deadline is not None and time.monotonic() >= deadline:
                return None

    def read(self, timeout: float | None = 0.0):
        """Next record as a ``dm.records`` namedtuple, an ``Overrun`` if records were lost just
        before it, or None on timeout. Raises ``ProducerGoneError`` as ``read_raw``."""
        if self._pending is not None:
            rec, self._pending = self._pending, None
            return unpack(rec)
        rec = self.read_raw(timeout)
        lost = self.reader.take_overrun()
        if lost:
            self.overruns += 1
            self.lost_records += lost
            self._pending = rec
            return Overrun(lost)
        return None if rec is None else unpack(rec)

    def read_batch(self, max_records: int = 4096) -> np.ndarray | None:
        """Up to ``max_records`` records of one rtype as a numpy structured array
        (``dm.records.DTYPES[rtype]``), or None when nothing is new. Overruns are counted in
        ``lost_records``."""
        arr = self.reader.read_batch(max_records)
        lost = self.reader.take_overrun()
        if lost:
            self.overruns += 1
            self.lost_records += lost
        return arr

    def __iter__(self) -> Iterator:
        while True:
            try:
                rec = self.read(timeout=None)
            except ProducerGoneError:
                return
            if rec is not None:
                yield rec

    async def __aiter__(self):
        """``async for rec in sub``: waits with ``asyncio.sleep`` (yield → 50 µs … 1 ms), never
        blocking the event loop; ends when the producer closes or dies."""
        w = self.waiter
        r = self.reader
        idle = 0
        while True:
            raw = r.read()
            if raw is None:
                idle += 1
                if idle % 256 == 0 and r.producer_state() in ("closed", "dead"):
                    raw = r.read()
                    if raw is None:
                        return
                else:
                    await asyncio.sleep(w.delay())
                    continue
            idle = 0
            w.reset()
            lost = r.take_overrun()
            if lost:
                self.overruns += 1
                self.lost_records += lost
                yield Overrun(lost)
            yield unpack(raw)

    def producer_state(self) -> str:
        """``live`` | ``closed`` | ``dead`` (pid gone) | ``stale`` (heartbeat old: quiet or hung)."""
        return self.reader.producer_state()

    def close(self) -> None:
        self.reader.close()
        if self.spin_slot is not None:
            self.spin_slot.release()
            self.spin_slot = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class Client:
    """Discovers channels through the shm service registry.

    ``instance``: only use channels of this dm instance (None: any). Raises ``RingError`` from
    ``subscribe`` when no live worker serves the symbol within ``wait`` seconds."""

    def __new__(cls, instance: str | None = None, registry: str = "/dm.registry", *, url: str | None = None, **remote):
        """``url="nats://HOST:4222"``: a ``dm.remote.RemoteClient`` with the same API, reading the
        channels a ``dm bridge`` publishes to NATS JetStream (nats is imported only then)."""
        if url is None:
            return super().__new__(cls)
        from dm.remote import RemoteClient

        return RemoteClient(url, instance, **remote)

    def __init__(self, instance: str | None = None, registry: str = "/dm.registry", *, url: str | None = None):
        self.instance = instance
        self.registry_name = registry
        self.subscriptions: list[Subscription] = []

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

    def subscribe(self, symbol: str, exchange: str, *, start: str = "oldest", wait: float = 5.0, busy_poll: bool = False) -> Subscription:
        """Subscribe to a canonical symbol (``"ZILUSD"``) on an exchange (``"BINANCE"``)."""
        symbol, exchange = symbol.upper(), exchange.upper()
        deadline = time.monotonic() + wait
        while True:
            for ex, sym, name in self.channels():
                if ex == exchange and sym == symbol:
                    try:
                        sub = Subscription(name, symbol, exchange, start=start, busy_poll=busy_poll)
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
