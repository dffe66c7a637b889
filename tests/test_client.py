"""dm.client against real shm segments and a real registry: discovery, one-at-a-time reads with
timeouts, overruns reported exactly, numpy batches, async iteration, end of stream."""
from __future__ import annotations

import asyncio
import multiprocessing as mp
import os
import signal
import threading
import time

import numpy as np
import pytest

from dm._ring import ChannelWriter, now_ns, unlink_segment
from dm import client
from dm.client import Client, Overrun, Subscription
from dm.errors import ClosedError, ProducerGoneError, RingError
from dm.records import GAP_DTYPE, LAYOUT_HASH, TRADE_DTYPE, Gap, GapUnits, RType, Trade, gap_record
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
    name = f"/dm.{instance}.BINANCE.BTCUSD"
    w = ChannelWriter(name, 1 << 14, LAYOUT_HASH)
    slot = Registry(reg_name).register(instance, "binance", "BINANCE", f"/dm.{instance}.BINANCE.", ["BTCUSD"])
    yield w, reg_name
    w.close(unlink=True)
    slot.release()
    unlink_segment(name)  # a test that closed it with unlink=False


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


def test_without_follow_iteration_ends_when_the_producer_closes_and_async_too(instance):
    name = f"/dm.{instance}.BINANCE.BTCUSD"
    reg = f"/dm.reg.{instance}"
    slot = Registry(reg).register(instance, "binance", "BINANCE", f"/dm.{instance}.BINANCE.", ["BTCUSD"])
    p = mp.get_context("spawn").Process(target=_produce, args=(name, 200, 0.001))
    p.start()
    try:
        with Client(instance=instance, registry=reg) as c:
            sub = c.subscribe("BTCUSD", "BINANCE", start="oldest", wait=20, follow=False)
            ids = [r.trade_id for r in sub]  # blocks until the producer closes
            assert ids == list(range(200))
            with pytest.raises(ProducerGoneError):
                sub.read(timeout=1)
            sub2 = c.subscribe("BTCUSD", "BINANCE", start="oldest", follow=False)

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


# -------------------------------------------------------------- following producer restarts

IID = 7


def _writer(name: str, first_id: int, n: int, ready, go=None, unlink_on_exit: bool = True, cap: int = 1 << 16):
    """A producer process as a worker runs one: creates the channel (replacing a dead one),
    writes n trades stamped with ts_recv = now, reports (pid, ts_recv of first, of last), then
    waits for `go` (None: sleep until killed) and closes gracefully."""
    w = ChannelWriter(name, cap, LAYOUT_HASH, instrument_id=IID, size_precision=4, publisher_id=2)
    ready.put(("created", os.getpid(), w.capacity))
    if go is not None and n < 0:
        go.wait(30)
        n = -n
    ts = []
    for i in range(n):
        a = np.frombuffer(trade(first_id + i), TRADE_DTYPE).copy()
        a["size"], a["size_precision"], a["side"] = 1000, 4, ord("B")  # 0.1 at this instrument's precision
        a["ts_recv"] = now_ns()
        w.write(a.tobytes())
        ts.append(int(a["ts_recv"][0]))
    ready.put(("written", ts[0] if ts else 0, ts[-1] if ts else 0))
    if go is None:
        time.sleep(60)
    else:
        go.wait(30)
        w.close(unlink=unlink_on_exit)


def _expect(q, what):
    msg = q.get(timeout=20)
    assert msg[0] == what, msg
    return msg[1:]


def test_follow_reattaches_after_kill9_with_a_restart_gap_and_nothing_silent(instance):
    name = f"/dm.{instance}.BINANCE.BTCUSD"
    reg = f"/dm.reg.{instance}"
    slot = Registry(reg).register(instance, "binance", "BINANCE", f"/dm.{instance}.BINANCE.", ["BTCUSD"])
    ctx = mp.get_context("fork")
    q = ctx.Queue()  # one per process: a process killed with -9 may hold a shared queue's lock
    a = ctx.Process(target=_writer, args=(name, 0, 100, q))
    a.start()
    b = None
    try:
        pid_a, _ = _expect(q, "created")
        _, last_a = _expect(q, "written")
        with Client(instance=instance, registry=reg) as c:
            sub = c.subscribe("BTCUSD", "BINANCE", start="oldest", wait=20)
            assert sub.follow and (sub.instrument_id, sub.size_precision, sub.publisher_id) == (IID, 4, 2)
            got = [sub.read(timeout=5) for _ in range(100)]
            assert [r.trade_id for r in got] == list(range(100))
            os.kill(pid_a, signal.SIGKILL)
            a.join(10)
            assert sub.read(timeout=0.3) is None  # dead producer, nobody replaced it yet
            assert sub.producer_state() == "dead"
            q = ctx.Queue()  # one per process: a process killed with -9 may hold a shared queue's lock
            b = ctx.Process(target=_writer, args=(name, 1000, 50, q))
            b.start()
            pid_b, _ = _expect(q, "created")
            first_b, _ = _expect(q, "written")
            gap = sub.read(timeout=10)
            assert isinstance(gap, Gap), gap
            assert (gap.kind, gap.units, gap.instrument_id, gap.publisher_id) == ("restart", GapUnits.NS, IID, 2)
            assert gap.first_missing == last_a + 1 and gap.last_missing == first_b - 1
            assert f"pid {pid_a} dead" in gap.detail and f"pid {pid_b}" in gap.detail
            rest = [sub.read(timeout=5) for _ in range(50)]
            assert [r.trade_id for r in rest] == list(range(1000, 1050))  # every record, no overrun
            assert sub.read(timeout=0) is None
            assert sub.restarts == 1 and sub.lost_records == 0 and sub.producer_pid == pid_b
    finally:
        for p in (a, b):
            if p is not None and p.is_alive():
                p.kill()
                p.join(10)
        slot.release()
        unlink_segment(name, force=True)


def test_follow_graceful_stop_then_restart_and_lapped_new_ring(instance):
    """The worker closes (unlinks) its channel, a new one starts later: the gap ends at the new
    channel's creation time when it has written nothing yet. A second restart whose producer
    laps its ring before the reader re-attaches: the marker, then an Overrun with the exact
    count, then the records still held."""
    name = f"/dm.{instance}.KRAKEN.ETHUSD"
    ctx = mp.get_context("fork")
    go_a = ctx.Event()
    q = ctx.Queue()  # one per process: a process killed with -9 may hold a shared queue's lock
    a = ctx.Process(target=_writer, args=(name, 0, 10, q, go_a))
    a.start()
    _expect(q, "created")
    _, last_a = _expect(q, "written")
    procs = [a]
    try:
        sub = Subscription(name, "ETHUSD", "KRAKEN", start="oldest")
        assert [sub.read(timeout=5).trade_id for _ in range(10)] == list(range(10))
        go_a.set()
        a.join(10)
        assert sub.read(timeout=0.2) is None and sub.producer_state() == "closed"
        go_b = ctx.Event()
        q = ctx.Queue()  # one per process: a process killed with -9 may hold a shared queue's lock
        b = ctx.Process(target=_writer, args=(name, 100, -5, q, go_b))  # waits before writing
        procs.append(b)
        b.start()
        _expect(q, "created")
        gap = sub.read(timeout=10)
        assert isinstance(gap, Gap) and gap.kind == "restart"
        created_b = sub.reader.created_ns
        assert gap.first_missing == last_a + 1 and gap.last_missing == created_b - 1
        assert "closed" in gap.detail
        assert sub.read(timeout=0.1) is None
        go_b.set()  # now it writes 5 and closes
        _expect(q, "written")
        assert [sub.read(timeout=5).trade_id for _ in range(5)] == list(range(100, 105))
        b.join(10)
        # third producer writes 2000 trades into a 16 KiB ring (256 held) before we look
        q = ctx.Queue()  # one per process: a process killed with -9 may hold a shared queue's lock
        c = ctx.Process(target=_writer, args=(name, 5000, 2000, q, None, True, 1 << 14))
        procs.append(c)
        c.start()
        _expect(q, "created")
        _expect(q, "written")
        items = []
        while len(items) < 2 or not isinstance(items[-1], Trade) or items[-1].trade_id != 6999:
            r = sub.read(timeout=5)
            assert r is not None, items[-3:]
            items.append(r)
        assert isinstance(items[0], Gap) and isinstance(items[1], Overrun)
        trades = items[2:]
        assert items[1].lost_records + len(trades) == 2000
        assert [t.trade_id for t in trades] == list(range(5000 + items[1].lost_records, 7000))
        assert sub.restarts == 2 and sub.lost_records == items[1].lost_records
        sub.close()
    finally:
        for p in procs:
            if p.is_alive():
                p.kill()
            p.join(10)
        unlink_segment(name, force=True)


def test_follow_in_async_iteration_and_batches(instance):
    name = f"/dm.{instance}.BINANCE.SOLUSD"
    ctx = mp.get_context("fork")
    q = ctx.Queue()  # one per process: a process killed with -9 may hold a shared queue's lock
    a = ctx.Process(target=_writer, args=(name, 0, 20, q))
    a.start()
    pid_a, _ = _expect(q, "created")
    _expect(q, "written")
    procs = [a]
    try:
        sub = Subscription(name, "SOLUSD", "BINANCE")
        arr = sub.read_batch(100)
        assert arr.dtype == TRADE_DTYPE and list(arr["trade_id"]) == list(range(20))
        os.kill(pid_a, signal.SIGKILL)
        a.join(10)
        q = ctx.Queue()  # one per process: a process killed with -9 may hold a shared queue's lock
        b = ctx.Process(target=_writer, args=(name, 100, 20, q))
        procs.append(b)
        b.start()
        _expect(q, "created")
        _expect(q, "written")
        t0 = time.monotonic()
        while (g := sub.read_batch(100)) is None:  # non-blocking reads notice the restart too
            assert time.monotonic() - t0 < 10
            time.sleep(0.01)
        assert g.dtype == GAP_DTYPE and g["kind"][0] == b"restart" and len(g) == 1
        assert list(sub.read_batch(100)["trade_id"]) == list(range(100, 120))
        pid_b = sub.producer_pid
        os.kill(pid_b, signal.SIGKILL)
        b.join(10)
        q = ctx.Queue()  # one per process: a process killed with -9 may hold a shared queue's lock
        c = ctx.Process(target=_writer, args=(name, 200, 3, q))
        procs.append(c)
        c.start()
        _expect(q, "created")
        _expect(q, "written")

        async def collect():
            out = []
            async for r in sub:
                out.append(r)
                if len(out) == 4:
                    return out

        out = asyncio.run(asyncio.wait_for(collect(), 20))
        assert isinstance(out[0], Gap) and [r.trade_id for r in out[1:]] == [200, 201, 202]
        sub.close()
    finally:
        for p in procs:
            if p.is_alive():
                p.kill()
            p.join(10)
        unlink_segment(name, force=True)


def test_producer_gap_records_are_delivered_like_any_record(channel, instance):
    w, reg = channel
    with Client(instance=instance, registry=reg) as c:
        sub = c.subscribe("BTCUSD", "BINANCE", start="newest")
        g = gap_record(1, 7, "sequence", 10, 12, GapUnits.SEQUENCE, now_ns(), "u 9 -> 13")
        w.write(trade(1))
        w.write(g)
        w.write(trade(2))
        got = [sub.read(timeout=1) for _ in range(3)]
        assert [type(r) for r in got] == [client.Trade, client.Gap, client.Trade]  # dm._recobj's record objects
        assert [isinstance(r, t) for r, t in zip(got, (Trade, Gap, Trade))] == [True] * 3  # and the namedtuple classes
        assert (got[1].kind, got[1].first_missing, got[1].last_missing, got[1].detail) == ("sequence", 10, 12, "u 9 -> 13")
        w.write(g)
        arr = sub.read_batch()
        assert arr.dtype == GAP_DTYPE and arr["last_missing"][0] == 12


# ------------------------------------------------------------------- closed subscriptions


def test_closed_subscription_raises_closed_error(channel, instance):
    w, reg = channel
    with Client(instance=instance, registry=reg) as c:
        sub = c.subscribe("BTCUSD", "BINANCE")
        sub.close()
        sub.close()
        assert sub.closed
        for call in (sub.read, sub.read_raw, sub.read_batch, sub.producer_state, lambda: next(iter(sub))):
            with pytest.raises(ClosedError):
                call()


@pytest.mark.parametrize("state", ["live", "waiting for a new producer"])
def test_close_from_another_thread_wakes_a_blocked_read(channel, instance, state):
    w, reg = channel
    with Client(instance=instance, registry=reg) as c:
        sub = c.subscribe("BTCUSD", "BINANCE", start="newest")
        if state != "live":
            w.close(unlink=False)
        out = []

        def reader():
            try:
                for r in sub:
                    out.append(r)
            except ClosedError as e:
                out.append(e)

        t = threading.Thread(target=reader)
        t.start()
        time.sleep(0.3)
        assert t.is_alive()  # blocked: nothing to read / no new producer
        t0 = time.monotonic()
        sub.close()
        t.join(5)
        assert not t.is_alive() and time.monotonic() - t0 < 1.0
        assert len(out) == 1 and isinstance(out[0], ClosedError)


# ---------------------------------------------------------------------------------- dm tail


def _tail(instance, reg, *extra):
    import subprocess
    import sys

    return subprocess.Popen(
        [sys.executable, "-m", "dm", "tail", "BTCUSD", "--exchange", "BINANCE", "--instance", instance,
         "--registry", reg, "--start", "oldest", "--wait", "20", *extra],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


def test_dm_tail_follows_a_restart_and_prints_the_gap(instance):
    name = f"/dm.{instance}.BINANCE.BTCUSD"
    reg = f"/dm.reg.{instance}"
    slot = Registry(reg).register(instance, "binance", "BINANCE", f"/dm.{instance}.BINANCE.", ["BTCUSD"])
    ctx = mp.get_context("fork")
    procs = []
    tail = None
    try:
        qa = ctx.Queue()
        a = ctx.Process(target=_writer, args=(name, 0, 3, qa))
        procs.append(a)
        a.start()
        pid_a, _ = _expect(qa, "created")
        _expect(qa, "written")
        tail = _tail(instance, reg, "-n", "6")
        line = tail.stderr.readline()
        assert line.startswith(f"# {name} (live) instrument_id={IID} size_precision=4"), line
        lines = [tail.stdout.readline() for _ in range(3)]
        assert all(" TRADE " in ln and " B 0.1000 @ " in ln for ln in lines), lines  # 1000 units at 1e-4
        os.kill(pid_a, signal.SIGKILL)
        a.join(10)
        qb = ctx.Queue()
        b = ctx.Process(target=_writer, args=(name, 100, 2, qb))
        procs.append(b)
        b.start()
        out, err = tail.communicate(timeout=20)
        assert tail.returncode == 0, err
        rest = out.splitlines()
        assert len(rest) == 3 and " GAP " in rest[0] and " restart " in rest[0] and f"pid {pid_a} dead" in rest[0]
        assert all("trade_id=10" in ln for ln in rest[1:])
    finally:
        if tail is not None and tail.poll() is None:
            tail.kill()
            tail.wait(10)
        for p in procs:
            if p.is_alive():
                p.kill()
            p.join(10)
        slot.release()
        unlink_segment(name, force=True)


def test_dm_tail_no_follow_ends_when_the_producer_stops(instance):
    name = f"/dm.{instance}.BINANCE.BTCUSD"
    reg = f"/dm.reg.{instance}"
    slot = Registry(reg).register(instance, "binance", "BINANCE", f"/dm.{instance}.BINANCE.", ["BTCUSD"])
    ctx = mp.get_context("fork")
    q, go = ctx.Queue(), ctx.Event()
    a = ctx.Process(target=_writer, args=(name, 0, 4, q, go))
    a.start()
    tail = None
    try:
        _expect(q, "created")
        _expect(q, "written")
        tail = _tail(instance, reg, "--no-follow")
        assert tail.stderr.readline().startswith(f"# {name} (live)")
        go.set()  # graceful close
        out, err = tail.communicate(timeout=20)
        assert tail.returncode == 0, err
        assert len(out.splitlines()) == 4
    finally:
        if tail is not None and tail.poll() is None:
            tail.kill()
            tail.wait(10)
        if a.is_alive():
            a.kill()
        a.join(10)
        slot.release()
        unlink_segment(name, force=True)
