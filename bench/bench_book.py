"""L2 book apply cost on the real recorded streams: ``dm._book.L2Book`` vs the pure-Python
reference book (``tests/book_ref.py``: dict + bisect-sorted keys, the obvious alternative),
same run, same records.

Streams (data/README.md): Binance ``BINANCE-b38f7c.0`` (diffs after each symbol's REST snapshot,
~13 levels per diff), Kraken ``KRAKEN-c197c0.0`` (book-1000 updates, ~1-2 levels each, depth
1000 truncation), Kraken Futures ``KRAKEN_FUTURES.ws.1.0`` (one level per ``book`` message).
Books are loaded from the snapshots untimed; then every diff message is applied with one
``apply(records)`` call (the worker's granularity).

Keys (ns per BOOK_DELTA record unless said otherwise):
* ``book.<venue>.ns_per_delta``        L2Book, one Python ``apply`` call per venue message
* ``book.<venue>.ns_per_delta_core``   L2Book, each instrument's whole diff stream in one call
                                       (the C loop alone, as a Cython caller of apply_buffer sees it)
* ``book.<venue>.ns_per_delta_python`` RefBook, one call per message
* ``book.baseline_python.ns_per_delta`` RefBook over the three streams; ``book.ns_per_delta``
  L2Book over the three streams; ``book.speedup_vs_python`` their ratio
* ``book.snapshot_ns_per_level``       loading the snapshots (CLEAR + levels, best first)
* ``book.bbo_record_ns`` / ``book.depth_record_ns`` / ``book.kraken_checksum_ns`` per call

    python bench/bench_book.py [--quick]
"""
from __future__ import annotations

import gc
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

import book_ref as br  # noqa: E402
from dm._book import L2Book  # noqa: E402
from dm.venues.kraken._checksum import book_checksum as kraken_book_checksum  # noqa: E402

DATA = ROOT / "data"


def _binance():
    events = br.load_binance(DATA / "binance/BINANCE-b38f7c.0")
    ids = br.instrument_ids(e.symbol for e in events)
    snaps, diffs, last = [], [], {}
    for e in events:
        iid = ids[e.symbol]
        if e.kind == "snapshot":
            snaps.append((iid, br.binance_snapshot_records(iid, e)))
            last[e.symbol] = e.last_id
        elif e.kind == "diff" and e.symbol in last and e.last_id > last[e.symbol]:
            diffs.append((iid, br.binance_diff_records(iid, e)))
    return snaps, diffs, 0


def _kraken():
    events = br.load_kraken(DATA / "kraken/KRAKEN-c197c0.0")
    ids = br.instrument_ids(e.pair for e in events)
    snaps, diffs = [], []
    for e in events:
        iid = ids[e.pair]
        if e.kind == "snapshot":
            snaps.append((iid, br.kraken_snapshot_records(iid, e)))
        else:
            diffs.append((iid, br.kraken_update_records(iid, e)))
    return snaps, diffs, 1000


def _kraken_futures():
    events = br.load_kraken_futures(DATA / "kraken_futures/KRAKEN_FUTURES.ws.1.0")
    ids = br.instrument_ids(e.product for e in events)
    snaps, diffs = [], []
    for e in events:
        iid = ids[e.product]
        if e.kind == "snapshot":
            snaps.append((iid, br.kf_snapshot_records(iid, e)))
        elif e.kind == "delta":
            diffs.append((iid, br.kf_delta_record(iid, e)))
    return snaps, diffs, 0


def _books(cls, snaps, depth):
    books = {}
    for iid, recs in snaps:
        books[iid] = cls(iid, 0, depth)
        books[iid].apply(recs)
    return books


def _time_stream(cls, snaps, diffs, depth, reps):
    """Best-of-reps seconds to apply every diff message (books loaded from snapshots untimed)."""
    best = float("inf")
    for _ in range(reps):
        books = _books(cls, snaps, depth)
        pairs = [(books[iid].apply, recs) for iid, recs in diffs]
        gc.disable()
        t0 = time.perf_counter_ns()
        for apply, recs in pairs:
            apply(recs)
        dt = time.perf_counter_ns() - t0
        gc.enable()
        best = min(best, dt)
    return best


def _time_core(snaps, diffs, depth, reps):
    per_iid: dict[int, list[bytes]] = {}
    for iid, recs in diffs:
        per_iid.setdefault(iid, []).append(recs)
    joined = {iid: b"".join(v) for iid, v in per_iid.items()}
    best = float("inf")
    for _ in range(reps):
        books = _books(L2Book, snaps, depth)
        gc.disable()
        t0 = time.perf_counter_ns()
        for iid, recs in joined.items():
            books[iid].apply(recs)
        dt = time.perf_counter_ns() - t0
        gc.enable()
        best = min(best, dt)
    return best


def _time_snapshots(snaps, depth, reps):
    n = sum(len(r) // 56 for _, r in snaps)
    best = float("inf")
    for _ in range(reps):
        books = {iid: L2Book(iid, 0, depth) for iid, _ in snaps}
        gc.disable()
        t0 = time.perf_counter_ns()
        for iid, recs in snaps:
            books[iid].apply(recs)
        dt = time.perf_counter_ns() - t0
        gc.enable()
        best = min(best, dt)
    return best, n


def _per_call(fn, n):
    fn()
    gc.disable()
    t0 = time.perf_counter_ns()
    for _ in range(n):
        fn()
    dt = time.perf_counter_ns() - t0
    gc.enable()
    return dt / n


def run(quick: bool = False) -> dict[str, float]:
    reps = 3 if quick else 15
    py_reps = 1 if quick else 3
    out: dict[str, float] = {}
    tot_c = tot_py = tot_n = 0
    snap_t = snap_n = 0
    streams = {"binance": _binance(), "kraken": _kraken(), "kraken_futures": _kraken_futures()}
    for name, (snaps, diffs, depth) in streams.items():
        n = sum(len(r) // 56 for _, r in diffs)
        _time_stream(L2Book, snaps, diffs, depth, 1)          # warm-up
        c = _time_stream(L2Book, snaps, diffs, depth, reps)
        core = _time_core(snaps, diffs, depth, reps)
        py = _time_stream(br.RefBook, snaps, diffs, depth, py_reps)
        st, sn = _time_snapshots(snaps, depth, reps)
        snap_t += st
        snap_n += sn
        out[f"book.{name}.deltas"] = float(n)
        out[f"book.{name}.messages"] = float(len(diffs))
        out[f"book.{name}.ns_per_delta"] = c / n
        out[f"book.{name}.ns_per_delta_core"] = core / n
        out[f"book.{name}.ns_per_delta_python"] = py / n
        out[f"book.{name}.ns_per_message"] = c / len(diffs)
        out[f"book.{name}.speedup_vs_python"] = py / c
        tot_c += c
        tot_py += py
        tot_n += n
    out["book.ns_per_delta"] = tot_c / tot_n
    out["book.baseline_python.ns_per_delta"] = tot_py / tot_n
    out["book.speedup_vs_python"] = tot_py / tot_c
    out["book.snapshot_ns_per_level"] = snap_t / snap_n

    snaps, _, depth = streams["kraken"]
    # XBT/USD (1000 levels per side; wire decimals 5 / 8)
    xbt = br.instrument_ids(e.pair for e in br.load_kraken(DATA / "kraken/KRAKEN-c197c0.0"))["XBT/USD"]
    b = _books(L2Book, snaps, depth)[xbt]
    calls = 20_000 if quick else 200_000
    out["book.bbo_record_ns"] = _per_call(lambda: b.bbo_record(1, 2, 3), calls)
    out["book.depth_record_ns"] = _per_call(lambda: b.depth_record(1, 2, 3), calls)
    buf = bytearray()
    out["book.write_depth_ns"] = _per_call(lambda: (b.write_depth(buf, 1, 2, 3), buf.clear()), calls)
    out["book.kraken_checksum_ns"] = _per_call(lambda: kraken_book_checksum(b, 5, 8), calls)
    rb = _books(br.RefBook, snaps, depth)[xbt]
    out["book.kraken_checksum_python_ns"] = _per_call(lambda: rb.kraken_checksum(5, 8),
                                                      calls // 20)
    return out


if __name__ == "__main__":
    res = run(quick="--quick" in sys.argv)
    width = max(len(k) for k in res)
    print(f"{'metric':<{width}}  value")
    for k in sorted(res):
        print(f"{k:<{width}}  {res[k]:>14,.1f}")
