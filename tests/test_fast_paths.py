"""The C fast paths of issue 11 against their references, on real shm and real processes:
``dm.client.Subscription.read``/``read_raw`` (dm/_client.pyx) with a busy-polling reader spinning
while another process writes and laps it; ``split_by_rtype`` (dm/_ring.pyx) and the records →
binary COPY tuples program (dm/storage/_copy.pyx) against simple Python/numpy references, with
hypothesis."""
from __future__ import annotations

import multiprocessing as mp
import os
import time

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dm._client import SubscriptionCore
from dm._ring import ChannelWriter, split_by_rtype, unlink_segment
from dm.client import Client, Overrun, Subscription
from dm.errors import ProducerGoneError, RingError
from dm.records import DTYPES, LAYOUT_HASH, TRADE_DTYPE, RType, Trade
from dm.registry import Registry
from dm.storage.base import COLUMNS, RTYPE_OF
from dm.storage.postgres import _PROGRAMS, copy_rows_from_records, copy_rows_from_records_numpy

N_LAP = 3000


def _trade(i: int) -> bytes:
    a = np.zeros(1, TRADE_DTYPE)
    a["length"], a["rtype"], a["instrument_id"], a["trade_id"], a["price"] = 16, RType.TRADE, 7, i, i
    return a.tobytes()


@pytest.fixture
def busy(instance, monkeypatch, tmp_path):
    """(writer, subscribe) for a channel whose reader gets a spin slot of its own."""
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))  # slots of this test only: one is free
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    reg = f"/dm.reg.{instance}"
    name = f"/dm.{instance}.BINANCE.BTCUSD"
    w = ChannelWriter(name, 1 << 14, LAYOUT_HASH)
    slot = Registry(reg).register(instance, "binance", "BINANCE", f"/dm.{instance}.BINANCE.", ["BTCUSD"])
    c = Client(instance=instance, registry=reg)

    def subscribe(**kw):
        sub = c.subscribe("BTCUSD", "BINANCE", busy_poll=True, **kw)
        assert sub.busy_poll is True
        return sub

    yield w, subscribe
    c.close()
    w.close(unlink=True)
    slot.release()
    unlink_segment(name)


def test_the_read_methods_are_the_c_ones():
    """No Python override may shadow the C methods (that would put a Python frame back on the
    path every record takes)."""
    assert Subscription.read is SubscriptionCore.read
    assert Subscription.read_raw is SubscriptionCore.read_raw


def _lapping_writer(name: str, n: int, ready, go) -> None:
    """Creates the channel, then (after ``go``) writes n trades as fast as it can: a reader
    spinning on it is lapped."""
    w = ChannelWriter(name, 1 << 14, LAYOUT_HASH)
    ready.put(1)
    go.wait(20)
    for i in range(n):
        w.write(_trade(i))
    ready.put(2)
    w.close(unlink=True)  # the reader keeps its mapping: what is left in the ring stays readable


@pytest.mark.parametrize("raw", [False, True])
def test_busy_poll_reads_a_lapping_writer_exactly(instance, monkeypatch, tmp_path, raw):
    """A busy-polling reader spinning in C while another process floods a 16 KiB ring: every
    trade it gets is in order, and (record objects) the Overrun markers account for exactly the
    rest; bytes reads skip them silently but count them in the reader."""
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    reg = f"/dm.reg.{instance}"
    name = f"/dm.{instance}.BINANCE.BTCUSD"
    ctx = mp.get_context("fork")
    ready, go = ctx.Queue(), ctx.Event()
    p = ctx.Process(target=_lapping_writer, args=(name, N_LAP, ready, go))
    p.start()
    slot = Registry(reg).register(instance, "binance", "BINANCE", f"/dm.{instance}.BINANCE.", ["BTCUSD"])
    try:
        assert ready.get(timeout=20) == 1
        with Client(instance=instance, registry=reg) as c:
            sub = c.subscribe("BTCUSD", "BINANCE", busy_poll=True, start="oldest")
            assert sub.busy_poll is True
            go.set()
            ids, lost = [], 0
            while not ids or ids[-1] != N_LAP - 1:
                item = sub.read_raw(timeout=10) if raw else sub.read(timeout=10)
                assert item is not None
                if isinstance(item, Overrun):
                    lost += item.lost_records
                    continue
                ids.append(int.from_bytes(item[40:48], "little") if raw else item.trade_id)
                assert raw or isinstance(item, Trade)
            assert ids == sorted(set(ids))
            if raw:
                lost = sub.reader.lost_records
            else:
                assert lost == sub.lost_records
            assert len(ids) + lost == N_LAP
            assert ready.get(timeout=20) == 2
            assert (sub.read_raw if raw else sub.read)(timeout=0) is None
    finally:
        go.set()
        p.join(20)
        slot.release()
        unlink_segment(name)


def test_busy_poll_timeouts_and_producer_gone(busy):
    w, subscribe = busy
    sub = subscribe(start="newest", follow=False)
    for read in (sub.read, sub.read_raw):
        t0 = time.monotonic()
        assert read(timeout=0.05) is None  # spun, then waited, then timed out
        assert time.monotonic() - t0 >= 0.045
        assert read(timeout=0) is None and read() is None
    w.write(_trade(1))
    w.write(_trade(2))
    assert sub.read(timeout=None).trade_id == 1
    assert int.from_bytes(sub.read_raw(timeout=None)[40:48], "little") == 2
    w.write(_trade(3))
    w.close(unlink=False)
    assert sub.read(timeout=None).trade_id == 3  # written before it stopped
    with pytest.raises(ProducerGoneError):
        sub.read(timeout=None)
    with pytest.raises(ProducerGoneError):
        sub.read_raw(timeout=1)


# -------------------------------------------------------------------------- split_by_rtype


def _split_ref(buf: bytes) -> dict[int, bytes]:
    parts: dict[int, list[bytes]] = {}
    off = 0
    while off < len(buf):
        n = buf[off] * 4
        if n < 16 or off + n > len(buf):
            raise RingError("bad")
        parts.setdefault(buf[off + 1], []).append(buf[off:off + n])
        off += n
    return {k: b"".join(v) for k, v in parts.items()}


_rec = st.tuples(st.integers(4, 90), st.sampled_from([0x00, 0x01, 0x02, 0x11, 0x20, 0xFF]), st.binary(min_size=2, max_size=2))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_rec, max_size=40), st.sampled_from([bytes, bytearray, memoryview]), st.integers(0, 3))
def test_split_by_rtype_matches_the_python_reference(recs, kind, cut):
    buf = b"".join(bytes([w, rt]) + rest + bytes(w * 4 - 4) for w, rt, rest in recs)  # w * 4 bytes each
    if cut and buf:
        buf = buf[:-cut * 4]
    try:
        want = _split_ref(buf)
    except RingError:
        with pytest.raises(RingError):
            split_by_rtype(kind(buf))
        return
    got = split_by_rtype(kind(buf))
    assert got == want and list(got) == list(want)  # rtypes in order of first appearance
    assert all(type(v) is bytes for v in got.values())


# ------------------------------------------------------------- records → binary COPY tuples


@pytest.mark.parametrize("table", sorted(COLUMNS))
def test_every_table_has_a_c_program(table):
    assert _PROGRAMS[table] is not None


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(sorted(COLUMNS)), st.integers(0, 40), st.integers(0, 2**32 - 1), st.integers(1, 3))
def test_copy_rows_match_the_numpy_reference(table, n, seed, step):
    """Random bytes in every field (so every sign/width/byte order path and the dedup hash, with
    and without a trade_id), contiguous and strided arrays: the same bytes as the numpy path."""
    dt = DTYPES[RTYPE_OF[table]]
    rng = np.random.default_rng(seed)
    a = np.frombuffer(rng.integers(0, 256, size=n * step * dt.itemsize, dtype=np.uint8).tobytes(), dt)[::step]
    if table == "trades" and n:
        a = a.copy()
        a["trade_id"][::2] = 0  # half without a venue trade id: content hash
    got = copy_rows_from_records(table, a)
    want = copy_rows_from_records_numpy(table, a)
    assert got.dtype == want.dtype and got.tobytes() == want.tobytes()
