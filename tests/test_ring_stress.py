"""Multi-process stress of the channel ring: 1 writer, 4 reader processes, >= 10^7 records.

Every record carries its sequence number in ``ts_event`` and in every following 8-byte word
(xor a per-word constant), so a record assembled from two different writes (a torn read) fails
the check. Readers:

* ``busy``  busy-polls ``read_batch`` (the only spinning process: 2 cores = writer + 1 spinner),
* ``wait``  ``wait()`` (spin -> yield -> sleep) then ``read_batch``,
* ``into``  ``wait()`` then ``read_into`` one record at a time (the lean Python path),
* ``slow``  sleeps 2 ms between small batches: lapped all the time on purpose.

Each reader checks that every gap in the sequence equals what ``take_overrun()`` reported,
and at the end that records read + records lost == records written, exactly.
"""
from __future__ import annotations

import multiprocessing as mp
import os
import time

import numpy as np
import pytest

from dm import records as R
from dm._ring import ChannelReader, ChannelWriter, unlink_segment

H = R.LAYOUT_HASH
CTX = mp.get_context("fork")
K = 0x9E3779B97F4A7C15
# (rtype, size): a trade, a bbo, a book delta, a depth snapshot; bursts of one kind at a time
KINDS = [(R.RType.TRADE, 64), (R.RType.BBO, 80), (R.RType.BOOK_DELTA, 56), (R.RType.DEPTH, 360)]
BURST = 256


def _hdr_word(rtype: int, size: int, iid: int = 42) -> int:
    return (size // 4) | (rtype << 8) | (int(R.Publisher.BINANCE) << 16) | (iid << 32)


PAT = {size: (np.arange(2, size // 8, dtype=np.uint64) * np.uint64(K)) for _, size in KINDS}
HDRW = {size: np.uint64(_hdr_word(rt, size)) for rt, size in KINDS}
PAT_INT = {size: int.from_bytes(PAT[size].tobytes(), "little") for size in PAT}
REP_INT = {size: sum(1 << (64 * i) for i in range(size // 8 - 2)) for size in PAT}


def make_burst(seq0: int, kind: int, n: int) -> np.ndarray:
    rtype, size = KINDS[kind]
    words = np.empty((n, size // 8), dtype=np.uint64)
    seq = np.arange(seq0, seq0 + n, dtype=np.uint64)
    words[:, 0] = HDRW[size]
    words[:, 1] = seq
    words[:, 2:] = seq[:, None] ^ PAT[size][None, :]
    return words


def verify_batch(a: np.ndarray) -> tuple[int, int]:
    """(first seq, last seq) of a batch; raises AssertionError on any torn/foreign record."""
    size = a.dtype.itemsize
    w = a.view(np.uint8).reshape(len(a), size).view("<u8")
    seq = w[:, 1]
    assert (w[:, 0] == HDRW[size]).all(), "torn header"
    assert (np.diff(seq) == 1).all(), "gap inside a batch"
    assert (w[:, 2:] == (seq[:, None] ^ PAT[size][None, :])).all(), "torn record body"
    return int(seq[0]), int(seq[-1])


def writer_main(name: str, cap: int, total: int, rate: float, ready, go, out):
    w = ChannelWriter(name, cap, H)
    ready.put("writer")
    go.get()
    seq = 0
    kind = 0
    t0 = time.perf_counter()
    while seq < total:
        n = min(BURST, total - seq)
        w.write_many(make_burst(seq, kind, n))
        seq += n
        kind = (kind + 1) % len(KINDS)
        ahead = seq / rate - (time.perf_counter() - t0)
        if ahead > 0.0005:
            time.sleep(ahead)
    out.put(("writer", {"written": w.records_written, "s": time.perf_counter() - t0}))
    w.close(unlink=False)  # readers see the closed flag, then drain


def reader_main(name: str, mode: str, ready, out):
    try:
        r = ChannelReader(name, H, start="oldest")
        ready.put(mode)
        expected = 0  # next sequence number this reader must get (after accounting losses)
        nread = 0
        batches = 0
        empty = 0
        buf = bytearray(1024)
        mv = memoryview(buf)
        while True:
            if mode in ("wait", "into", "slow"):
                if mode == "slow":
                    time.sleep(0.002)
                elif not r.wait(0.2):
                    if r.producer_state() == "closed" and not r.wait(0):
                        break
                    continue
            if mode == "into":
                n = r.read_into(buf)
                if n == 0:
                    continue
                seq = int.from_bytes(mv[8:16], "little")
                assert int.from_bytes(mv[0:8], "little") == int(HDRW[n]), "torn header"
                body = int.from_bytes(mv[16:n], "little")
                assert body == (seq * REP_INT[n]) ^ PAT_INT[n], "torn record body"
                first = last = seq
            else:
                a = r.read_batch(8192 if mode != "slow" else 16)
                if a is None:
                    empty += 1
                    if (mode == "slow" or empty % 1000 == 0) and r.producer_state() == "closed":
                        a = r.read_batch()
                        if a is None:
                            break
                    else:
                        continue
                first, last = verify_batch(a)
                n = len(a)
                nread += n - 1
            gap = r.take_overrun()
            assert first == expected + gap, f"gap {first - expected} but overrun reported {gap}"
            expected = last + 1
            nread += 1
            batches += 1
        out.put((mode, {"read": nread, "lost": r.lost_records, "overruns": r.overruns,
                        "lost_bytes": r.lost_bytes, "next": expected + r.take_overrun(),
                        "batches": batches}))
    except BaseException as e:  # report, never hang the test
        out.put((mode, {"error": repr(e)}))
        raise


def run_stress(total: int, cap: int = 1 << 20, rate: float = 1.5e6, timeout: float = 100.0):
    name = f"/dm.stress{os.getpid()}.{time.monotonic_ns()}"
    ready, go, out = CTX.SimpleQueue(), CTX.SimpleQueue(), CTX.SimpleQueue()
    wp = CTX.Process(target=writer_main, args=(name, cap, total, rate, ready, go, out))
    wp.start()
    assert ready.get() == "writer"
    modes = ["busy", "wait", "into", "slow"]
    rps = [CTX.Process(target=reader_main, args=(name, m, ready, out)) for m in modes]
    for p in rps:
        p.start()
    for _ in modes:
        ready.get()
    go.put(1)
    deadline = time.monotonic() + timeout
    results = {}
    try:
        for p in [wp, *rps]:
            p.join(max(0.1, deadline - time.monotonic()))
        for p in [wp, *rps]:
            assert p.exitcode == 0, f"process {p.name} exit code {p.exitcode}"
        while not out.empty():
            k, v = out.get()
            results[k] = v
    finally:
        for p in [wp, *rps]:
            if p.is_alive():
                p.kill()
                p.join()
        unlink_segment(name)
    written = results["writer"]["written"]
    assert written == total
    for m in modes:
        res = results[m]
        assert "error" not in res, f"{m}: {res}"
        assert res["read"] + res["lost"] == written, f"{m}: {res}"
        assert res["next"] == written, f"{m}: {res}"
    return results


@pytest.mark.timeout(120)
def test_stress_1_writer_4_readers_10m_records():
    res = run_stress(10_000_000)
    assert res["slow"]["lost"] > 0 and res["slow"]["overruns"] > 0  # the slow one was lapped
    assert res["busy"]["read"] > 0 and res["wait"]["read"] > 0 and res["into"]["read"] > 0
    print({k: v for k, v in res.items()})


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_soak_100m_records():
    res = run_stress(100_000_000, rate=3e6, timeout=1500)
    print(res)


if __name__ == "__main__":
    import pprint

    t = time.perf_counter()
    pprint.pprint(run_stress(int(os.environ.get("N", 10_000_000))))
    print(f"{time.perf_counter() - t:.1f} s")
