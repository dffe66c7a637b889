"""L2 book apply cost on the real recorded streams: ``dm._book.L2Book`` vs the pure-Python
reference book (``tests/book_ref.py``: dict + bisect-sorted keys, the obvious alternative),
same run, same records.

Streams (data/README.md): Binance ``BINANCE-b38f7c.0`` (diffs after each symbol's REST snapshot,
~13 levels per diff), Kraken ``KRAKEN-c197c0.0`` (book-1000 updates, ~1-2 levels each, depth
1000 truncation), Kraken Futures ``KRAKEN_FUTURES.ws.1.0`` (one level per ``book`` message),
Coinbase Advanced Trade ``coinbase/2026-08-09/COINBASE.jsonl.zst`` (the deep case: level2
snapshots of 18k-27k levels per side, 4859 updates, ~7% of them thousands of levels deep).
Books are loaded from the snapshots untimed; then every diff message is applied with one
``apply(records)`` call (the worker's granularity).

Keys (ns per BOOK_DELTA record unless said otherwise):
* ``book.<venue>.ns_per_delta``        L2Book, one Python ``apply`` call per venue message
* ``book.<venue>.ns_per_delta_core``   L2Book, each instrument's whole diff stream in one call
                                       (the C loop alone, as a Cython caller of apply_buffer sees it)
* ``book.<venue>.ns_per_delta_python`` RefBook, one call per message
* ``book.baseline_python.ns_per_delta`` RefBook over the first three streams; ``book.ns_per_delta``
  L2Book over them; ``book.speedup_vs_python`` their ratio (Coinbase is reported on its own)
* ``book.<venue>.ns_per_delta_before`` / ``_core_before`` with ``--before PATH``: the same for
  another build's ``dm/_book*.so`` (e.g. /work/main's), timed interleaved in the same run
* ``book.snapshot_ns_per_level``       loading the snapshots (CLEAR + levels, best first)
* ``book.bbo_record_ns`` / ``book.depth_record_ns`` / ``book.kraken_checksum_ns`` per call

    python bench/bench_book.py [--quick] [--before path/to/_book.cpython-*.so] [--only venue,...]
"""
from __future__ import annotations

import gc
import importlib.machinery
import importlib.util
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


def _coinbase():
    """Advanced Trade level2 (``l2_data``): per product a snapshot (CLEAR + levels) and one
    record batch per update message, bids then asks, as the worker applies them."""
    ids: dict[str, int] = {}
    snaps, diffs = [], []
    for prod, snap, recs in br.coinbase_l2_events(DATA / "coinbase/2026-08-09/COINBASE.jsonl.zst",
                                                  lambda p: ids.setdefault(p, len(ids) + 1)):
        iid = ids[prod]
        if snap:
            snaps.append((iid, br.clear(iid) + recs))
        else:
            diffs.append((iid, recs))
    return snaps, diffs, 0


def load_l2book(so_path: str):
    """``L2Book`` of another build's ``_book`` extension (e.g. /work/main/dm/_book*.so), loaded
    under another package name so both live in one process."""
    name = "dm_book_before._book"            # the init symbol is PyInit__book either way
    loader = importlib.machinery.ExtensionFileLoader(name, so_path)
    spec = importlib.util.spec_from_file_location(name, so_path, loader=loader)
    mod = importlib.util.module_from_spec(spec)
    loader.exec_module(mod)
    return mod.L2Book


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


def _time_core(snaps, diffs, depth, reps, cls=L2Book):
    per_iid: dict[int, list[bytes]] = {}
    for iid, recs in diffs:
        per_iid.setdefault(iid, []).append(recs)
    joined = {iid: b"".join(v) for iid, v in per_iid.items()}
    best = float("inf")
    for _ in range(reps):
        books = _books(cls, snaps, depth)
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


def run(quick: bool = False, before: str | None = None, only=None) -> dict[str, float]:
    reps = 3 if quick else 15
    py_reps = 1 if quick else 3
    old = load_l2book(before) if before else None
    out: dict[str, float] = {}
    tot_c = tot_py = tot_n = 0
    snap_t = snap_n = 0
    streams = {"binance": _binance(), "kraken": _kraken(), "kraken_futures": _kraken_futures(),
               "coinbase": _coinbase()}
    for name, (snaps, diffs, depth) in streams.items():
        if only and name not in only:
            continue
        n = sum(len(r) // 56 for _, r in diffs)
        _time_stream(L2Book, snaps, diffs, depth, 1)          # warm-up
        if old is None:
            c = _time_stream(L2Book, snaps, diffs, depth, reps)
            core = _time_core(snaps, diffs, depth, reps)
        else:                   # interleaved, best of each: drift on a shared machine hits both
            _time_stream(old, snaps, diffs, depth, 1)
            c = core = c_old = core_old = float("inf")
            for _ in range(reps):
                c = min(c, _time_stream(L2Book, snaps, diffs, depth, 1))
                c_old = min(c_old, _time_stream(old, snaps, diffs, depth, 1))
                core = min(core, _time_core(snaps, diffs, depth, 1))
                core_old = min(core_old, _time_core(snaps, diffs, depth, 1, old))
            out[f"book.{name}.ns_per_delta_before"] = c_old / n
            out[f"book.{name}.ns_per_delta_core_before"] = core_old / n
        py = _time_stream(br.RefBook, snaps, diffs, depth, py_reps)
        st, sn = _time_snapshots(snaps, depth, reps)
        out[f"book.{name}.deltas"] = float(n)
        out[f"book.{name}.messages"] = float(len(diffs))
        out[f"book.{name}.ns_per_delta"] = c / n
        out[f"book.{name}.ns_per_delta_core"] = core / n
        out[f"book.{name}.ns_per_delta_python"] = py / n
        out[f"book.{name}.ns_per_message"] = c / len(diffs)
        out[f"book.{name}.speedup_vs_python"] = py / c
        if name == "coinbase":
            out["book.coinbase.snapshot_ns_per_level"] = st / sn
            continue
        snap_t += st
        snap_n += sn
        tot_c += c
        tot_py += py
        tot_n += n
    if only:
        return out
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
    args = sys.argv[1:]
    res = run(quick="--quick" in args,
              before=args[args.index("--before") + 1] if "--before" in args else None,
              only=args[args.index("--only") + 1].split(",") if "--only" in args else None)
    width = max(len(k) for k in res)
    print(f"{'metric':<{width}}  value")
    for k in sorted(res):
        print(f"{k:<{width}}  {res[k]:>14,.1f}")
