"""Channel ring, persist queue, fanout: real POSIX shm segments, real processes, real data.

The property tests drive the ring with random record sizes and interleavings of writes and
reads and compare every read with a model of the documented frame layout (8-byte aligned
frames, a padding frame at the wrap, a record is held while its start >= tail - capacity).
"""
from __future__ import annotations

import ctypes
import mmap
import multiprocessing as mp
import os
import signal
import struct
import time

import numpy as np
import pytest
import zstandard
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dm import records as R
from dm._ring import (
    ChannelReader,
    ChannelWriter,
    Fanout,
    PersistConsumer,
    PersistQueue,
    _header_offsets,
    cas_u32,
    load_u32,
    load_u64,
    now_ns,
    segment_exists,
    split_by_rtype,
    store_u64,
    unlink_segment,
)
from dm.errors import ClosedError, LayoutMismatchError, RingError, SegmentInUseError

H = R.LAYOUT_HASH
FORK = mp.get_context("fork")
HDR = struct.Struct("<BBHIQ")


def rec(seq: int, size: int = 64, rtype: int = R.RType.TRADE, iid: int = 7) -> bytes:
    """A record of `size` bytes whose every 8-byte word after the header encodes `seq`, so any
    mix of two records (a torn read) is detected by `check`."""
    body = bytearray(size - 16)
    for i in range(0, len(body) - 7, 8):
        struct.pack_into("<Q", body, i, seq ^ (0x9E3779B97F4A7C15 * (i // 8 + 1) & (2**64 - 1)))
    if len(body) % 8:
        body[-4:] = struct.pack("<I", seq & 0xFFFFFFFF)
    return HDR.pack(size // 4, rtype, R.Publisher.BINANCE, iid, seq) + bytes(body)


def check(b: bytes) -> int:
    """Verify a record built by `rec`; returns its seq."""
    length, rtype, _, iid, seq = HDR.unpack_from(b)
    assert length * 4 == len(b)
    assert b == rec(seq, len(b), rtype, iid), f"torn record seq={seq}"
    return seq


@pytest.fixture
def seg(instance):
    names = []

    def make(suffix: str = "X") -> str:
        n = f"/dm.{instance}.{suffix}"
        names.append(n)
        return n

    yield make
    for n in names:
        unlink_segment(n)


# ------------------------------------------------------------------------------------ layout


def test_header_layout_hot_fields_on_own_cache_lines():
    off = _header_offsets()
    assert off["magic"] == 0
    assert off["tail_intent"] == 64 and off["tail"] == 72
    assert off["snap_version"] == 128
    assert off["heartbeat_ns"] == 192
    assert off["head"] == 256  # consumer-written line
    assert off["size"] == 320
    # identity line: the channel metadata lives in what was padding; nothing else moved
    assert (off["capacity"], off["created_ns"], off["header_bytes"], off["kind"]) == (16, 24, 32, 36)
    assert (off["instrument_id"], off["publisher_id"], off["size_precision"], off["meta_flags"]) == (40, 44, 46, 47)


def test_channel_header_metadata_for_readers(seg):
    name = seg()
    w = ChannelWriter(name, 4096, H, instrument_id=0xDEADBEEF, size_precision=0, publisher_id=R.Publisher.KRAKEN)
    r = ChannelReader(name, H)
    assert (r.instrument_id, r.size_precision, r.publisher_id) == (0xDEADBEEF, 0, R.Publisher.KRAKEN)
    assert (w.instrument_id, w.size_precision, w.publisher_id) == (0xDEADBEEF, 0, R.Publisher.KRAKEN)
    w.close()
    w = ChannelWriter(name, 4096, H)  # defaults keep today's callers working
    r2 = ChannelReader(name, H)
    assert (r2.instrument_id, r2.size_precision, r2.publisher_id) == (0, 9, 0)
    mm = _rw_map(name, 4096)
    mm[47] = 0  # a segment written before the fields existed: precision unknown, not 0
    assert r2.size_precision is None
    del mm
    for bad in (-1, 19):
        with pytest.raises(ValueError, match="size_precision"):
            ChannelWriter(seg("bad"), 4096, H, size_precision=bad)
    w.close()


def test_now_ns_is_realtime():
    assert abs(now_ns() - time.time_ns()) < 50_000_000


# ------------------------------------------------------------------------------ basic channel


def test_round_trip_all_dm_record_sizes_and_mode(seg):
    name = seg()
    w = ChannelWriter(name, 1 << 16, H)
    assert os.stat("/dev/shm/" + name[1:]).st_mode & 0o777 == 0o640
    r = ChannelReader(name, H)
    sizes = [R.SIZES[k] for k in sorted(R.SIZES)] + [20, 1020, 68]
    for i, s in enumerate(sizes):
        w.write(rec(i, s))
    got = []
    while (b := r.read()) is not None:
        got.append(check(b))
    assert got == list(range(len(sizes)))
    assert r.read() is None
    assert w.records_written == r.records_written == len(sizes)
    assert r.lost_records == 0 and r.overruns == 0
    w.close()
    assert not segment_exists(name)


@pytest.mark.parametrize(
    "bad, why",
    [
        (b"", "shorter"),
        (rec(1)[:60], "!= buffer length"),
        (bytes([16, 0xFF]) + bytes(62), "reserved"),
        (bytes([2, 0xE0]) + bytes(6), "shorter"),
        (rec(1) + b"\0" * 4, "!= buffer length"),
    ],
)
def test_write_refuses_malformed_records(seg, bad, why):
    w = ChannelWriter(seg(), 4096, H)
    with pytest.raises(RingError, match=why):
        w.write(bad)
    assert w.records_written == 0
    w.close()


def test_write_many_validates_everything_first(seg):
    w = ChannelWriter(seg(), 4096, H)
    good = rec(1) + rec(2, 80)
    assert w.write_many(good) == 2
    with pytest.raises(RingError, match="at byte 64"):
        w.write_many(rec(3) + bytes([16, 0xFF]) + bytes(62))
    assert w.records_written == 2
    w.close()


def test_bad_names_and_capacities(instance):
    with pytest.raises(RingError, match="bad shm segment name"):
        ChannelWriter("no-slash", 4096, H)
    with pytest.raises(RingError, match="bad shm segment name"):
        ChannelWriter("/a/b", 4096, H)
    for cap in (1000, 2048, 4096 + 8):
        with pytest.raises(RingError, match="power of two"):
            ChannelWriter(f"/dm.{instance}.cap", cap, H)
    with pytest.raises(RingError, match="no such channel"):
        ChannelReader(f"/dm.{instance}.missing", H)


def test_read_into_allocation_free_and_too_small_keeps_record(seg):
    name = seg()
    w = ChannelWriter(name, 4096, H)
    r = ChannelReader(name, H)
    buf = bytearray(64)
    assert r.read_into(buf) == 0
    w.write(rec(1, 80))
    w.write(rec(2, 64))
    with pytest.raises(ValueError, match="80 bytes"):
        r.read_into(buf)
    big = bytearray(1024)
    assert r.read_into(memoryview(big)[8:]) == 80
    assert check(bytes(big[8:88])) == 1
    assert r.read_into(buf) == 64 and check(bytes(buf)) == 2
    w.close()


def test_read_batch_numpy_views(seg):
    name = seg()
    w = ChannelWriter(name, 1 << 16, H)
    r = ChannelReader(name, H)
    for i in range(10):
        w.write(rec(i, 64, R.RType.TRADE))
    for i in range(10, 15):
        w.write(rec(i, 80, R.RType.BBO))
    a = r.read_batch(4)
    assert a.dtype == R.TRADE_DTYPE and list(a["ts_event"]) == [0, 1, 2, 3]
    a = r.read_batch()
    assert list(a["ts_event"]) == list(range(4, 10))
    a = r.read_batch()
    assert a.dtype == R.BBO_DTYPE and list(a["ts_event"]) == list(range(10, 15))
    assert a.flags.owndata and r.read_batch() is None
    w.write(rec(99, 24, 0xE9))  # an rtype without a dtype: a void record
    a = r.read_batch()
    assert a.dtype.itemsize == 24 and bytes(a[0]) == rec(99, 24, 0xE9)
    w.close()


# --------------------------------------------------------------------------------- the model


class Model:
    """The documented frame layout: frame = record rounded up to 8 bytes; a padding frame fills
    the ring's end when the next frame does not fit; record j is held while
    start_j >= tail - capacity."""

    def __init__(self, cap: int):
        self.cap = cap
        self.tail = 0
        self.starts: list[int] = []
        self.sizes: list[int] = []

    def write(self, size: int):
        fsz = (size + 7) & ~7
        idx = self.tail % self.cap
        if idx + fsz > self.cap:
            self.tail += self.cap - idx
        self.starts.append(self.tail)
        self.sizes.append(size)
        self.tail += fsz

    def oldest_held(self) -> int:
        for j in range(len(self.starts) - 1, -1, -1):
            if self.starts[j] < self.tail - self.cap:
                return j + 1
        return 0


ops = st.lists(
    st.one_of(
        st.tuples(
            st.just("w"),
            st.lists(
                st.one_of(st.sampled_from([56, 64, 80, 360]), st.integers(4, 255).map(lambda x: x * 4)),
                min_size=1,
                max_size=40,
            ),
        ),
        st.tuples(st.just("r"), st.integers(1, 50)),
        st.tuples(st.just("b"), st.integers(1, 50)),
    ),
    max_size=40,
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=ops, cap_log=st.integers(12, 14), newest=st.booleans(), prefill=st.integers(0, 30))
def test_property_reads_match_model(seg, ops, cap_log, newest, prefill):
    name = seg()
    unlink_segment(name)
    cap = 1 << cap_log
    w = ChannelWriter(name, cap, H)
    m = Model(cap)
    seq = 0
    for _ in range(prefill):
        w.write(rec(seq, 64))
        m.write(64)
        seq += 1
    r = ChannelReader(name, H, start="newest" if newest else "oldest")
    expect = seq if newest else m.oldest_held()  # index of the next record the reader returns
    lost = 0
    for op in ops:
        if op[0] == "w":
            for size in op[1]:
                w.write(rec(seq, size))
                m.write(size)
                seq += 1
            continue
        for _ in range(op[1]):
            oldest = m.oldest_held()
            if expect < oldest:  # overwritten: the reader must report the gap exactly
                lost += oldest - expect
                expect = oldest
            if op[0] == "r":
                b = r.read()
                if expect == seq:
                    assert b is None
                    break
                assert check(b) == expect and len(b) == m.sizes[expect]
                expect += 1
            else:
                a = r.read_batch(op[1])
                if expect == seq:
                    assert a is None
                    break
                n = len(a)
                got = [check(bytes(x)) for x in a]
                assert got == list(range(expect, expect + n))
                assert len({m.sizes[j] for j in got}) == 1
                expect += n
            assert r.lost_records == lost
    assert r.take_overrun() == lost and r.take_overrun() == 0
    assert r.records_read == expect
    w.close()
    r.close()


def test_overrun_accounting_exact(seg):
    name = seg()
    cap = 4096
    w = ChannelWriter(name, cap, H)
    r = ChannelReader(name, H)
    for i in range(64):  # exactly fills the ring: nothing lost yet
        w.write(rec(i))
    assert check(r.read()) == 0
    for i in range(64, 64 + 100):
        w.write(rec(i))
    # 164 records of 64 B written, 64 held (100..163); the reader was at record 1
    b = r.read()
    assert check(b) == 100
    assert r.lost_records == 99 and r.overruns == 1 and r.lost_bytes == 99 * 64
    assert r.take_overrun() == 99 and r.take_overrun() == 0
    n = 1
    while (b := r.read()) is not None:
        n += 1
    assert r.records_read == w.records_written == 164
    assert n + 1 + r.lost_records == 164


def test_late_join_oldest_and_newest(seg):
    name = seg()
    w = ChannelWriter(name, 8192, H)
    for i in range(10):
        w.write(rec(i, 360))  # 10 * 360 = 3600 B, all held
    old = ChannelReader(name, H, start="oldest")
    new = ChannelReader(name, H, start="newest")
    assert new.read() is None
    w.write(rec(10))
    assert [check(old.read()) for _ in range(11)] == list(range(11))
    assert check(new.read()) == 10 and new.read() is None
    for i in range(11, 100):
        w.write(rec(i, 360))
    late = ChannelReader(name, H, start="oldest")
    first = check(late.read())
    assert late.lost_records == 0
    # oldest held: every record from `first` on fits in the ring, the one before does not
    assert 0 < first and (100 - first) * 360 <= 8192 + 360
    with pytest.raises(ValueError):
        ChannelReader(name, H, start="middle")


def test_layout_mismatch_refused_with_both_values(seg):
    name = seg()
    w = ChannelWriter(name, 4096, H)
    other = (H + 1) & 0xFFFFFFFF
    with pytest.raises(LayoutMismatchError) as ei:
        ChannelReader(name, other)
    msg = str(ei.value)
    assert f"{H:#010x}" in msg and f"{other:#010x}" in msg and "version 2" in msg
    w.close()


def test_reader_refuses_a_persist_queue_and_vice_versa(seg, tmp_path):
    q = PersistQueue(seg("q"), 4096, H, tmp_path)
    with pytest.raises(RingError, match="not a dm channel"):
        ChannelReader(q.name, H)
    w = ChannelWriter(seg("c"), 4096, H)
    with pytest.raises(RingError, match="not a dm persist queue"):
        PersistConsumer(w.name, H, tmp_path)
    q.close()
    w.close()


# ------------------------------------------------------------------- read-only, corruption


def _maps_perms(addr: int) -> str:
    with open("/proc/self/maps") as f:
        for line in f:
            lo, hi = (int(x, 16) for x in line.split()[0].split("-"))
            if lo <= addr < hi:
                return line.split()[1]
    raise AssertionError("mapping not found")


def _poke(addr: int):
    import faulthandler

    faulthandler.disable()  # the SIGSEGV is the expected outcome
    ctypes.c_uint64.from_address(addr + 64).value = 12345  # tail_intent
    os._exit(0)


def test_reader_mapping_is_read_only(seg):
    name = seg()
    w = ChannelWriter(name, 4096, H)
    r = ChannelReader(name, H)
    assert _maps_perms(r.address) == "r--s"
    p = FORK.Process(target=_poke, args=(r.address,))
    p.start()
    p.join(10)
    assert p.exitcode == -signal.SIGSEGV
    w.write(rec(1))
    assert check(r.read()) == 1
    w.close()


def _rw_map(name: str, size: int) -> mmap.mmap:
    fd = os.open("/dev/shm/" + name[1:], os.O_RDWR)
    try:
        return mmap.mmap(fd, size)
    finally:
        os.close(fd)


def test_garbage_lengths_raise_never_fault(seg):
    """Frames a reader cannot trust (length below the record header, or crossing the ring end)
    are never copied: if they are not being overwritten, the ring is reported corrupt."""
    name = seg()
    w = ChannelWriter(name, 4096, H)
    r = ChannelReader(name, H)
    for i in range(63):
        w.write(rec(i))
    w.write(rec(63, 56))  # ends at 4088
    assert [check(r.read()) for _ in range(64)] == list(range(64))
    w.write(rec(64))  # 8-byte padding frame at 4088, then the record at ring index 0
    mm = _rw_map(name, 4096 + 4096)
    assert mm[4096 + 4088:4096 + 4090] == bytes([2, 0xFF])
    mm[4096 + 4088] = 255  # the padding frame now claims 1020 bytes past the ring end
    with pytest.raises(RingError, match="corrupt"):
        r.read()
    with pytest.raises(RingError, match="corrupt"):
        r.read_batch()
    mm[4096 + 4088] = 2
    assert check(r.read()) == 64
    w.write(rec(65))
    mm[4096 + 64] = 3  # 12 bytes: shorter than a record header
    with pytest.raises(RingError, match="corrupt"):
        r.read()
    del mm
    w.close()


def test_frame_overwritten_during_copy_is_discarded_and_counted(seg):
    """Simulate the writer claiming the reader's frame while the reader copies it (tail_intent
    past position + capacity): the copy is dropped and the loss is counted exactly."""
    name = seg()
    w = ChannelWriter(name, 4096, H)
    r = ChannelReader(name, H)
    for i in range(3):
        w.write(rec(i))
    mm = _rw_map(name, 4096 + 4096)
    assert load_u64(mm, 128) % 2 == 0
    store_u64(mm, 64, 4096 + 64)  # tail_intent: frame 0 is being overwritten
    store_u64(mm, 136, 64)  # snapshot: oldest intact frame at 64 ...
    store_u64(mm, 144, 1)  # ... is record 1
    assert check(r.read()) == 1
    assert r.lost_records == 1 and r.lost_bytes == 64 and r.overruns == 1
    del mm
    w.close()


# ------------------------------------------------------------------------- producer state


def _writer_then_die(name: str, q):
    w = ChannelWriter(name, 4096, H)
    w.write(rec(1))
    q.put(os.getpid())
    time.sleep(30)


def test_dead_producer_detected_and_segment_replaced(seg):
    name = seg()
    q = FORK.Queue()
    p = FORK.Process(target=_writer_then_die, args=(name, q))
    p.start()
    q.get(timeout=10)
    r = ChannelReader(name, H)
    assert r.producer_state() == "live"
    with pytest.raises(SegmentInUseError, match=rf"producer \(pid {p.pid}\) is alive") as ei:
        ChannelWriter(name, 4096, H)
    assert ei.value.pid == p.pid
    os.kill(p.pid, signal.SIGKILL)
    p.join(10)
    assert r.producer_state() == "dead"
    assert check(r.read()) == 1  # what was written stays readable
    w = ChannelWriter(name, 8192, H)  # a dead producer's segment is replaced
    assert w.capacity == 8192
    assert r.producer_state() == "dead"  # the old mapping still says so
    r2 = ChannelReader(name, H)
    assert r2.producer_state() == "live" and r2.capacity == 8192
    w.close()
    assert r2.producer_state() == "closed"


def test_quiet_market_vs_stale_vs_closed(seg):
    name = seg()
    w = ChannelWriter(name, 4096, H)
    r = ChannelReader(name, H)
    assert r.producer_state() == "live"
    time.sleep(0.15)
    assert r.producer_state(stale_after_s=10) == "live"  # quiet market, heartbeat recent
    assert r.producer_state(stale_after_s=0.1) == "stale"
    w.heartbeat()
    assert r.producer_state(stale_after_s=0.1) == "live"
    assert abs(r.heartbeat_ns - now_ns()) < 100_000_000
    assert r.producer_pid == os.getpid()
    w.close(unlink=False)
    assert r.producer_state() == "closed"
    assert segment_exists(name)
    w2 = ChannelWriter(name, 4096, H)  # closed segment is replaced
    w2.close()


def test_wait_returns_on_data_timeout_and_close(seg):
    name = seg()
    w = ChannelWriter(name, 4096, H)
    r = ChannelReader(name, H)
    t0 = time.monotonic()
    assert r.wait(0.05) is False
    assert 0.04 < time.monotonic() - t0 < 1.0
    w.write(rec(1))
    assert r.wait(1.0) is True
    r.read()
    w.close(unlink=False)
    t0 = time.monotonic()
    assert r.wait(5.0) is False and time.monotonic() - t0 < 1.0


# ----------------------------------------------------------------------------- persist queue


def _drain(c: PersistConsumer, commit: bool = True, max_records: int = 37) -> list[int]:
    got = []
    while (b := c.read_batch(max_records)) is not None:
        buf, n, tok = b
        off = 0
        for _ in range(n):
            ln = buf[off] * 4
            got.append(check(bytes(buf[off:off + ln])))
            off += ln
        assert off == len(buf)
        if commit:
            c.commit(tok)
    return got


@pytest.mark.parametrize("fsync", ["never", "batch", "always"])
def test_persist_spills_to_spool_when_full_and_drains_after(seg, tmp_path, fsync):
    name = seg()
    q = PersistQueue(name, 4096, H, tmp_path, fsync=fsync)
    sizes = [56, 64, 80, 360, 68]
    for i in range(300):
        q.write(rec(i, sizes[i % 5]))
    assert q.records_spooled > 0 and q.records_written + q.records_spooled == 300
    assert q.spooling
    c = PersistConsumer(name, H, tmp_path)
    q.flush()  # not drained yet: the spool file stays open (consumer does not see it)
    first = _drain(c)
    assert len(first) == q.records_written
    q.flush()  # drained: closes the spool file -> visible
    assert not q.spooling
    second = _drain(c)
    assert sorted(first + second) == list(range(300))
    assert c.pending() == 0
    assert os.listdir(tmp_path) == []  # committed spool files are removed
    q.close()
    assert c.producer_closed()
    c.unlink()
    assert not segment_exists(name) and not tmp_path.exists()


def test_persist_uncommitted_batch_redelivered(seg, tmp_path):
    name = seg()
    q = PersistQueue(name, 1 << 16, H, tmp_path)
    for i in range(100):
        q.write(rec(i))
    c = PersistConsumer(name, H, tmp_path)
    buf, n, tok = c.read_batch(30)
    c.commit(tok)
    c.read_batch(30)  # read, not committed: the "database commit" failed
    c.close()
    c2 = PersistConsumer(name, H, tmp_path)
    assert c2.pending() == 70
    assert _drain(c2) == list(range(30, 100))
    c2.close()
    q.close()


def _consume_some(name: str, spool_dir: str, n_batches: int, out):
    c = PersistConsumer(name, H, spool_dir)
    got = []
    for _ in range(n_batches):
        b = c.read_batch(25)
        if b is None:
            break
        buf, n, tok = b
        got += [check(bytes(buf[i * 64:(i + 1) * 64])) for i in range(n)]
        c.commit(tok)
    b = c.read_batch(25)  # read but "crash" before commit: must be re-delivered
    out.put(got)
    os._exit(0)


def _produce(name: str, spool_dir: str, start: int, count: int, done, crash: bool):
    q = PersistQueue(name, 4096, H, spool_dir, fsync="batch")
    for i in range(start, start + count):
        q.write(rec(i))
    done.put((q.records_written, q.records_spooled))
    if not crash:
        q.close()
    os._exit(0)  # crash: no flush(), no close(); the spool file stays .part


def test_persist_restarts_of_consumer_and_producer_lose_nothing(seg, tmp_path):
    """Producer crashes with a spool open, a new producer process re-opens the queue, consumers
    in new processes commit and crash with an uncommitted batch: no record is lost, and only the
    uncommitted batch is delivered twice."""
    name = seg()
    out = FORK.SimpleQueue()
    p = FORK.Process(target=_produce, args=(name, str(tmp_path), 0, 200, out, True))
    p.start()
    p.join(20)
    assert p.exitcode == 0
    inq, spooled = out.get()
    assert inq == 64 and spooled == 136
    assert any(f.endswith(".part") for f in os.listdir(tmp_path))
    c = FORK.Process(target=_consume_some, args=(name, str(tmp_path), 2, out))
    c.start()
    c.join(20)
    got1 = out.get()
    assert got1 == list(range(50))
    # producer restart: re-opens the queue, keeps its 14 unconsumed records, recovers the spool
    p = FORK.Process(target=_produce, args=(name, str(tmp_path), 200, 100, out, False))
    p.start()
    p.join(20)
    inq2, spooled2 = out.get()
    assert inq2 == 64 + 50 and spooled2 == 50  # 50 free slots were reused, 50 spooled
    assert not any(f.endswith(".part") for f in os.listdir(tmp_path))
    c2 = PersistConsumer(name, H, tmp_path)
    assert c2.producer_closed()
    assert c2.pending() == 300 - 50
    got2 = _drain(c2)
    assert sorted(got1 + got2) == list(range(300))
    assert c2.pending() == 0
    c2.unlink()


def test_persist_live_producer_and_consumer_are_exclusive(seg, tmp_path):
    name = seg()
    q = PersistQueue(name, 4096, H, tmp_path)
    with pytest.raises(SegmentInUseError, match=rf"producer \(pid {os.getpid()}\) is alive"):
        PersistQueue(name, 4096, H, tmp_path)
    with pytest.raises(LayoutMismatchError):
        PersistConsumer(name, H ^ 1, tmp_path)
    c = PersistConsumer(name, H, tmp_path)
    assert not c.producer_closed()
    q.close()
    with pytest.raises(LayoutMismatchError):
        PersistQueue(name, 4096, H ^ 1, tmp_path)
    c.close()
    c.unlink()


def test_persist_spool_rotates_by_age(seg, tmp_path):
    name = seg()
    q = PersistQueue(name, 4096, H, tmp_path, spool_max_age_s=0.0)
    c = PersistConsumer(name, H, tmp_path)
    for i in range(80):
        q.write(rec(i))
    q.flush()  # queue not drained, but the file is "old": closed and handed over
    assert [f for f in os.listdir(tmp_path) if f.endswith(".spool")]
    got = _drain(c)
    assert sorted(got) == list(range(80))
    for i in range(80, 200):
        q.write(rec(i))
    q.flush()
    got += _drain(c)
    assert sorted(got) == list(range(200))
    q.close()
    c.unlink()


# ----------------------------------------------------------------- fanout on recorded data


def _dbn(path) -> list:
    import databento_dbn

    with open(path, "rb") as f:
        raw = zstandard.ZstdDecompressor().stream_reader(f).read()
    dec = databento_dbn.DBNDecoder()
    dec.write(raw)
    return dec.decode()[1:]


def test_fanout_routes_recorded_bars_and_trades(seg, tmp_path, data_dir):
    base = data_dir / "databento" / "glbx-mdp3-esu4-nqu4-20240701"
    bars = _dbn(base / "futures_ohlcv-1m_2024-07-01T23-40_2024-07-02T00-10.dbn.zst")
    trades = _dbn(base / "futures_trades_2024-07-01T23-58_2024-07-02T00-02.dbn.zst")
    a = np.zeros(len(bars), R.BAR_DTYPE)
    a["length"], a["rtype"], a["publisher_id"] = R.BAR_DTYPE.itemsize // 4, R.RType.BAR, 1
    for k in ("instrument_id", "ts_event", "open", "high", "low", "close"):
        a[k] = [getattr(b, k) for b in bars]
    a["volume"] = [b.volume * R.FIXED_SCALE for b in bars]
    a["interval_s"] = 60
    t = np.zeros(len(trades), R.TRADE_DTYPE)
    t["length"], t["rtype"], t["publisher_id"] = R.TRADE_DTYPE.itemsize // 4, R.RType.TRADE, 1
    for k in ("instrument_id", "ts_event", "ts_recv", "price", "sequence"):
        t[k] = [getattr(x, k) for x in trades]
    t["size"] = [x.size * R.FIXED_SCALE for x in trades]
    t["side"] = [ord(str(x.side.value)) for x in trades]
    buf = a.tobytes() + t.tobytes()
    ids = sorted(set(a["instrument_id"]))
    assert ids == [118, 4358]

    q = PersistQueue(seg("q"), 1 << 16, H, tmp_path)
    f = Fanout(q)
    w_es = ChannelWriter(seg("ES"), 1 << 16, H)
    f.add_channel(118, w_es)  # NQU4 (4358) has no channel: persisted only
    r_es = ChannelReader(w_es.name, H)
    assert f.publish(buf) == len(bars) + len(trades)
    got_bars = r_es.read_batch(1000)
    got_trades = r_es.read_batch(1000)
    assert r_es.read_batch() is None
    assert np.array_equal(got_bars, a[a["instrument_id"] == 118])
    assert np.array_equal(got_trades, t)
    c = PersistConsumer(q.name, H, tmp_path)
    data, n, tok = c.read_batch(10_000)
    assert n == len(bars) + len(trades) and data == buf

    groups = split_by_rtype(buf)
    assert groups == {R.RType.BAR: a.tobytes(), R.RType.TRADE: t.tobytes()}
    mixed = b"".join(a[i].tobytes() + t[i].tobytes() for i in range(10))
    g = split_by_rtype(mixed)
    assert g[R.RType.BAR] == a[:10].tobytes() and g[R.RType.TRADE] == t[:10].tobytes()
    with pytest.raises(RingError):
        split_by_rtype(buf[:-8])
    with pytest.raises(RingError):
        f.publish(buf[:-8])
    w_es.close()
    with pytest.raises(RingError, match="closed"):
        f.publish(buf)
    q.close()
    c.unlink()


# ------------------------------------------------------------------------- atomic helpers


def _cas_incr(path: str, n: int):
    fd = os.open(path, os.O_RDWR)
    mm = mmap.mmap(fd, 4096)
    os.close(fd)
    for _ in range(n):
        while True:
            v = load_u32(mm, 8)
            if cas_u32(mm, 8, v, v + 1):
                break
    os._exit(0)


def test_cas_across_processes_is_exact(tmp_path):
    path = str(tmp_path / "cas")
    with open(path, "wb") as f:
        f.write(bytes(4096))
    ps = [FORK.Process(target=_cas_incr, args=(path, 20000)) for _ in range(3)]
    for p in ps:
        p.start()
    for p in ps:
        p.join(30)
        assert p.exitcode == 0
    fd = os.open(path, os.O_RDONLY)
    mm = mmap.mmap(fd, 4096, prot=mmap.PROT_READ)
    os.close(fd)
    assert load_u32(mm, 8) == 60000
    assert load_u64(mm, 8) == 60000
    with pytest.raises(BufferError):
        cas_u32(mm, 8, 60000, 1)  # a read-only mapping cannot be written
    with pytest.raises(ValueError, match="aligned"):
        load_u64(mm, 4)
    with pytest.raises(ValueError, match="range"):
        load_u32(mm, 4096)


def test_persist_queue_and_spool_take_turns(seg, tmp_path):
    """Under a steady load the queue never drains: spool files must still be consumed."""
    name = seg()
    q = PersistQueue(name, 4096, H, tmp_path, spool_max_age_s=0.0)
    c = PersistConsumer(name, H, tmp_path)
    for i in range(200):
        q.write(rec(i))
    q.flush()
    kinds = []
    for _ in range(4):
        buf, n, tok = c.read_batch(10)
        kinds.append(tok[0])
        c.commit(tok)
    assert sorted(kinds) == [0, 0, 1, 1]
    got = _drain(c)
    assert len(got) == 160
    q.close()
    c.unlink()


def _drop_writer(w):
    w.close()  # the child's inherited copy: unmaps, must not close or unlink the parent's ring


def test_forked_child_never_closes_the_parents_ring(seg):
    name = seg()
    w = ChannelWriter(name, 4096, H)
    r = ChannelReader(name, H)
    p = FORK.Process(target=_drop_writer, args=(w,))
    p.start()
    p.join(10)
    assert p.exitcode == 0
    assert r.producer_state() == "live" and segment_exists(name)
    w.close()
    assert r.producer_state() == "closed"


# ------------------------------------------------------------------- closing never crashes


def test_every_method_of_a_closed_reader_raises_closed_error(seg):
    name = seg()
    w = ChannelWriter(name, 4096, H)
    w.write(rec(1))
    r = ChannelReader(name, H)
    r.close()
    r.close()  # idempotent
    assert r.closed
    calls = [
        r.read, lambda: r.read_into(bytearray(64)), r.read_batch, r.producer_state, lambda: r.wait(0),
        r.last_record, lambda: r.records_written, lambda: r.lag_bytes, lambda: r.producer_pid,
        lambda: r.heartbeat_ns, lambda: r.created_ns, lambda: r.instrument_id,
        lambda: r.size_precision, lambda: r.publisher_id,
    ]
    for call in calls:
        with pytest.raises(ClosedError, match="closed"):
            call()
    w.close()
    with pytest.raises(ClosedError):
        w.write(rec(2))
    c_name = seg("q")
    q = PersistQueue(c_name, 4096, H, "/tmp/" + c_name[1:])
    c = PersistConsumer(c_name, H, "/tmp/" + c_name[1:])
    q.close()
    with pytest.raises(ClosedError):
        q.write(rec(3))
    c.close()
    for call in (c.read_batch, c.pending, c.producer_state, c.producer_closed, c.recover_orphans):
        with pytest.raises(ClosedError):
            call()
    c2 = PersistConsumer(c_name, H, "/tmp/" + c_name[1:])
    c2.unlink()


_CLOSE_RACE = r"""
import random, sys, threading, time
from dm import records as R
from dm._ring import ChannelReader, ChannelWriter
from dm.errors import ClosedError

name, rounds = sys.argv[1], int(sys.argv[2])
H = R.LAYOUT_HASH
rec = bytes([16, R.RType.TRADE]) + bytes(62)
w = ChannelWriter(name, 1 << 16, H)
outcomes = {}
for i in range(rounds):
    for _ in range(random.randrange(0, 300)):
        w.write(rec)
    r = ChannelReader(name, H, start="oldest")
    go = threading.Barrier(7)
    buf = bytearray(64)
    ops = [
        r.read,
        lambda: r.read_into(buf),
        lambda: r.read_batch(7),
        r.producer_state,
        lambda: r.wait(5.0),  # blocks without the GIL once the ring is drained
        lambda: (r.last_record(), r.lag_bytes, r.instrument_id),
    ]

    def hammer(op, k):
        go.wait()
        try:
            while True:
                op()
        except ClosedError:
            outcomes[k] = outcomes.get(k, 0) + 1
        except BaseException as e:
            outcomes[k] = repr(e)

    ts = [threading.Thread(target=hammer, args=(op, k)) for k, op in enumerate(ops)]
    for t in ts:
        t.start()
    go.wait()
    time.sleep(random.random() * 0.003)
    t0 = time.monotonic()
    r.close()
    closed_in = time.monotonic() - t0
    for t in ts:
        t.join(10)
        assert not t.is_alive(), "a reader thread did not notice close()"
    assert closed_in < 1.0, f"close() took {closed_in:.3f} s with a waiter blocked"
bad = {k: v for k, v in outcomes.items() if v != rounds}
assert not bad, bad
w.close()
print("ok", rounds)
"""


def test_close_racing_readers_in_other_threads_never_crashes(seg):
    """Six threads hammer every read path (one blocked in the GIL-free wait) while the main
    thread closes the reader, 150 times: each thread ends with ClosedError, never a segfault
    (exit -11 of the child process would fail this test cleanly)."""
    import subprocess
    import sys

    name = seg()
    p = subprocess.run([sys.executable, "-c", _CLOSE_RACE, name, "150"], capture_output=True, text=True, timeout=240)
    assert p.returncode == 0, f"exit {p.returncode}: {p.stderr[-2000:]}"
    assert p.stdout.split() == ["ok", "150"]


# --------------------------------------------------------- a live segment is never unlinked


def _hold_segments(chan: str, queue: str, spool: str, ready, stop):
    w = ChannelWriter(chan, 4096, H)
    q = PersistQueue(queue, 4096, H, spool)
    w.write(rec(1))
    ready.put(os.getpid())
    stop.wait(30)
    w.close(unlink=False)
    q.close()


def test_unlink_refuses_live_segments_of_another_process(seg, tmp_path):
    from dm._ring import segment_info
    from dm.errors import SegmentInUseError

    chan, queue = seg("c"), seg("q")
    ready, stop = FORK.SimpleQueue(), FORK.Event()
    p = FORK.Process(target=_hold_segments, args=(chan, queue, str(tmp_path), ready, stop))
    p.start()
    pid = ready.get()
    try:
        for name, kind in ((chan, "channel"), (queue, "persist")):
            assert unlink_segment(name) is False  # refused: its writer lives
            assert segment_exists(name)
            assert segment_info(name) == {"kind": kind, "state": "live", "producer_pid": pid}
        with pytest.raises(SegmentInUseError, match=f"pid {pid}") as e1:
            ChannelWriter(chan, 4096, H)
        with pytest.raises(SegmentInUseError, match=f"pid {pid}") as e2:
            PersistQueue(queue, 4096, H, tmp_path)
        assert e1.value.pid == e2.value.pid == pid
        r = ChannelReader(chan, H)
        assert check(r.read()) == 1  # the refused attempts changed nothing
    finally:
        stop.set()
        p.join(10)
    assert segment_info(chan)["state"] == "closed"
    assert unlink_segment(chan) is True and not segment_exists(chan)  # closed: removable
    assert unlink_segment(chan) is False and segment_info(chan) is None
    own = ChannelWriter(chan, 4096, H)
    assert unlink_segment(chan) is True  # the caller's own live segment: allowed
    own.close()


def test_unlink_removes_a_dead_producers_segment_and_force_removes_a_live_one(seg):
    name = seg()
    q = FORK.Queue()
    p = FORK.Process(target=_writer_then_die, args=(name, q))
    p.start()
    pid = q.get(timeout=10)
    assert unlink_segment(name) is False
    assert unlink_segment(name, force=True) is True and not segment_exists(name)
    p2 = FORK.Process(target=_writer_then_die, args=(name, q))
    p2.start()
    pid2 = q.get(timeout=10)
    os.kill(pid2, signal.SIGKILL)
    p2.join(10)
    from dm._ring import segment_info

    assert segment_info(name) == {"kind": "channel", "state": "dead", "producer_pid": pid2}
    assert unlink_segment(name) is True
    os.kill(pid, signal.SIGKILL)
    p.join(10)


# ------------------------------------------------------------------ spilled means durable


def _syscw() -> int:
    """write-family syscalls this process made (/proc/self/io)."""
    with open("/proc/self/io") as f:
        return int(next(ln for ln in f if ln.startswith("syscw:")).split()[1])


def _spill_then_wait(name: str, spool: str, n: int, ready):
    """Fill the queue (no consumer), spill the rest through both write paths, report, and wait
    to be killed: no flush(), no close()."""
    q = PersistQueue(name, 4096, H, spool, fsync="batch")
    for i in range(n // 2):
        q.write(rec(i))
    fan = Fanout(q)  # the worker's path: a frame's records spill in one write(2)
    frame = b"".join(rec(i) for i in range(n // 2, n))
    w0 = _syscw()
    fan.publish(frame)
    writes = _syscw() - w0
    parts = [f for f in os.listdir(spool) if f.endswith(".spool.part")]
    size = sum(os.path.getsize(os.path.join(spool, f)) for f in parts)
    ready.put((q.records_written, q.records_spooled, parts, size, writes))
    time.sleep(60)


def test_spilled_records_survive_kill9_without_flush(seg, tmp_path):
    name = seg()
    n = 500
    ready = FORK.SimpleQueue()
    p = FORK.Process(target=_spill_then_wait, args=(name, str(tmp_path), n, ready))
    p.start()
    inq, spooled, parts, size, writes = ready.get()
    assert inq == 64 and spooled == n - 64 and len(parts) == 1
    assert writes == 1  # 250 records spilled by one publish() call: one write(2)
    assert size == spooled * (4 + 64)  # every spilled byte is in the file: no userspace buffer
    os.kill(p.pid, signal.SIGKILL)
    p.join(10)
    assert p.exitcode == -signal.SIGKILL
    c = PersistConsumer(name, H, tmp_path)
    assert c.producer_state() == "dead"
    assert c.pending() == n
    got = _drain(c)  # the consumer hands over the dead producer's .part file itself
    assert sorted(got) == list(range(n)) and len(got) == n  # every record exactly once
    assert c.pending() == 0 and os.listdir(tmp_path) == []
    c.unlink()
    assert not segment_exists(name)


def test_sync_from_another_thread_races_writes_and_rotation(seg, tmp_path):
    """The worker calls sync() via asyncio.to_thread while its event loop writes and rotates
    spool files: no error, every record delivered once, files fsynced."""
    import threading

    name = seg()
    q = PersistQueue(name, 4096, H, tmp_path, fsync="batch", spool_max_age_s=0.0)
    c = PersistConsumer(name, H, tmp_path)
    stop = threading.Event()
    synced, errors = [], []

    def syncer():
        while not stop.is_set():
            try:
                synced.append(q.sync())
            except Exception as e:  # pragma: no cover - the failure being tested for
                errors.append(e)

    t = threading.Thread(target=syncer)
    t.start()
    got = []
    try:
        for i in range(3000):
            q.write(rec(i))
            if i % 50 == 49:
                q.flush()  # rotates (age 0): rename while sync() may hold the file
            if i % 400 == 399:
                got += _drain(c)
    finally:
        stop.set()
        t.join(10)
    q.close()
    got += _drain(c)
    assert not errors
    assert sum(synced) > 0
    assert sorted(got) == list(range(3000))
    never = PersistQueue(seg("n"), 4096, H, tmp_path / "n", fsync="never")
    never.write(rec(1))
    assert never.sync() == 0
    never.close()
    c.unlink()
