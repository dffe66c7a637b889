"""dm.client against real shm segments and a real registry: discovery, one-at-a-time reads with
timeouts, overruns reported exactly, numpy batches, async iteration, end of stream."""
from __future__ import annotations

import asyncio
import multiprocessing as mp
import os
import time

import numpy as np
import pytest

from dm._ring import ChannelWriter
from dm.client import Client, Overrun
from dm.errors import RingError
from dm.records import LAYOUT_HASH, TRADE_DTYPE, Trade, RType
from dm.registry import Registry


def trade(i: int, iid: int = 7) -> bytes:
    a = np.zeros(1, TRADE_DTYPE)
    a["length"], a["rtype"], a["instrument_id"] = 16, RType.TRADE, iid
    a["ts_event"], a["price"], a["size"], a["trade_id"] = 1_600_000_000_000_000_000 + i, 100_000_000 * i, 1_000_000_000, i
    a["size_precision"] = 9
    return a.tobytes()


@pytest.fixture
def channel(instance):
    reg_name = f"/dm.reg.{instance}"
    w = ChannelWriter(f"/dm.{instance}.BINANCE.BTCUSD", 1 << 14, LAYOUT_HASH)
    slot = Registry(reg_name).register(instance, "binance", "BINANCE", f"/dm.{instance}.BINANCE.", ["BTCUSD"])
    yield w, reg_name
    w.close(unlink=True)
    slot.release()


def test_discover_read_and_decimal_helpers(channel, instance):
    w, reg = channel
    with Client(instance=instance, registry=reg) as c:
        assert c.channels() == [("BINANCE", "BTCUSD", f"/dm.{instance}.BINANCE.BTCUSD")]
        sub = c.subscribe("btcusd", exchange="binance", start="newest")
        assert sub.read(timeout=0) is None
        t0 = time.monotonic()
        assert sub.read(timeout=0.05) is None and time.monotonic() - t0 >= 0.04
        w.write(trade(3))
        rec = sub.read(timeout=1)
        assert isinstance(rec, Trade) and rec.trade_id == 3 and rec.price == 300_000_000
        assert str(rec.dec("price")) == "0.300000000" and rec.f("size") == 1.0
        with pytest.raises(RingError, match="ETHUSD"):
            c.subscribe("ETHUSD", exchange="BINANCE", wait=0.1)


def test_overrun_is_reported_exactly_then_reading_resumes(channel, instance):
    w, reg = channel
    with Client(instance=instance, registry=reg) as c:
        sub = c.subscribe("BTCUSD", "BINANCE", start="newest")
        for i in range(2000):  # 2000 × 64 B laps a 16 KiB ring many times
            w.write(trade(i))
        got = []
        while (r := sub.read(timeout=0)) is not None:
            got.append(r)
        assert isinstance(got[0], Overrun)
        trades = [r for r in got if isinstance(r, Trade)]
        assert got[0].lost_records + len(trades) == 2000
        assert [t.trade_id for t in trades] == list(range(got[0].lost_records, 2000))
        assert sub.lost_records == got[0].lost_records and sub.overruns == 1


def test_batch_read_is_a_numpy_structured_array(channel, instance):
    w, reg = channel
    with Client(instance=instance, registry=reg) as c:
        sub = c.subscribe("BTCUSD", "BINANCE")
        for i in range(100):
            w.write(trade(i))
        arr = sub.read_batch(64)
        assert arr.dtype == TRADE_DTYPE and len(arr) == 64
        assert list(arr["trade_id"]) == list(range(64))


def _produce(name, n, delay):
    w = ChannelWriter(name, 1 << 16, LAYOUT_HASH)
    for i in range(n):
        w.write(trade(i))
        time.sleep(delay)
    w.close(unlink=False)


def test_iteration_ends_when_the_producer_closes_and_async_too(instance):
    name = f"/dm.{instance}.BINANCE.BTCUSD"
    reg = f"/dm.reg.{instance}"
    slot = Registry(reg).register(instance, "binance", "BINANCE", f"/dm.{instance}.BINANCE.", ["BTCUSD"])
    p = mp.get_context("spawn").Process(target=_produce, args=(name, 200, 0.001))
    p.start()
    try:
        with Client(instance=instance, registry=reg) as c:
            sub = c.subscribe("BTCUSD", "BINANCE", start="oldest", wait=20)
            ids = [r.trade_id for r in sub]  # blocks until the producer closes
            assert ids == list(range(200))
            sub2 = c.subscribe("BTCUSD", "BINANCE", start="oldest")

            async def collect():
                return [r.trade_id async for r in sub2]

            assert asyncio.run(collect()) == list(range(200))
    finally:
        p.join(20)
        slot.release()
        from dm._ring import unlink_segment

        unlink_segment(name)


def _hold_spin_slot(q, release):
    from dm.client import SpinSlot

    slot = SpinSlot.acquire(limit=1)
    q.put(slot is not None)
    release.wait(20)


def test_busy_pollers_never_exceed_cores_minus_one(channel, instance, monkeypatch, tmp_path):
    """With every spin slot held by another process, a busy_poll reader waits without spinning;
    when the holder exits, the kernel frees the slot."""
    from dm.client import SpinSlot

    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    monkeypatch.setattr(os, "cpu_count", lambda: 2)  # one slot, as on the CI machine
    ctx = mp.get_context("fork")
    q, release = ctx.Queue(), ctx.Event()
    p = ctx.Process(target=_hold_spin_slot, args=(q, release))
    p.start()
    try:
        assert q.get(timeout=20) is True
        w, reg = channel
        with Client(instance=instance, registry=reg) as c:
            sub = c.subscribe("BTCUSD", "BINANCE", busy_poll=True)
            assert sub.busy_poll is False  # the only slot is taken
        release.set()
        p.join(20)
        slot = SpinSlot.acquire()
        assert slot is not None
        slot.release()
    finally:
        release.set()
        p.join(5)
