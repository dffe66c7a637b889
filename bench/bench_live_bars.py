"""Live bars in the worker's publish path (issue 10): what building OHLCV bars from every TRADE
costs ``Fanout.publish`` (dm/_ring.pyx), against the same publish without bars, same run.

Input: the recorded ESU4 trades (data/databento/glbx-mdp3-esu4-nqu4-20240701, 120 TRADE records
over 4 minutes) tiled to ``n`` records: copy k is shifted by k x the file's span (so bars keep
closing as they would live) and goes to instrument k mod 8 (8 channels, runs of one instrument
as a venue sends them). Published in frames of 8 records (a worker publishes per websocket frame)
into 8 channel rings, no persist queue (its cost is the same with and without bars).

Keys (rows/s = TRADE records published per second, best of ``rounds``, interleaved):

* ``bars.live.publish_no_bars.rows_per_s``     ``Fanout.publish``, bars off
* ``bars.live.publish_bars.rows_per_s``        bars 1m/1h/1d (the default ``[bars]``)
* ``bars.live.publish_bars_1s.rows_per_s``     bars 1s/1m/1h/1d
* ``bars.live.publish_cost.ratio``             1 - publish_bars / publish_no_bars
* ``bars.live.publish_cost_1s.ratio``          1 - publish_bars_1s / publish_no_bars
* ``bars.live.python_builder.rows_per_s``      the obvious alternative: the same bars (1m/1h/1d)
                                               kept in a Python dict per trade after a publish
                                               without bars (struct.unpack_from of each record)
* ``bars.live.cython_vs_python_cost.ratio``    Python builder's added time / the Cython builder's

The persister's side (``dm.bars.build_bars``, run on every stored batch of trades): 10,000 trades
of one instrument, one every 0.86 s (bench_storage.make_trades: every trade its own 1s bar).

* ``bars.build.c.batches_per_s`` / ``bars.build.numpy.batches_per_s``   1s/1m/1h/1d bars of a
  batch with ``build_bars`` (one C pass per interval, dm/_bars.pyx) / ``build_bars_numpy``
* ``bars.build.c_vs_numpy.ratio``

    python bench/bench_live_bars.py [--quick]
"""
from __future__ import annotations

import gc
import json
import struct
import sys
import time
import uuid
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(HERE))

from dm._ring import ChannelWriter, Fanout, unlink_segment  # noqa: E402
from dm.dbn import read_dbn  # noqa: E402
from dm.records import LAYOUT_HASH, RType  # noqa: E402

ESU4 = ROOT / "data/databento/glbx-mdp3-esu4-nqu4-20240701"
FRAME = 8
CHANNELS = 8
I64_MAX = (1 << 63) - 1


def trades(n: int) -> np.ndarray:
    t = read_dbn(next(ESU4.glob("futures_trades_*"))).arrays()[RType.TRADE]
    span = int(t["ts_event"].max() - t["ts_event"].min()) + 1
    k = -(-n // len(t))
    out = np.concatenate([t] * k)[:n].copy()
    copy = np.arange(len(out)) // len(t)
    out["ts_event"] += (copy * span).astype(np.uint64)
    out["instrument_id"] = 1 + copy % CHANNELS
    return out


def python_builder(buf: bytes, intervals) -> dict:
    """The obvious alternative: per trade, unpack and update a dict of bars (no tie-break by the
    dedup hash: a lower bound of what the same rules cost in Python)."""
    bars: dict = {}
    unpack = struct.Struct("<BBHIQQqQQQ").unpack_from
    steps = [iv * 1_000_000_000 for iv in intervals]
    for off in range(0, len(buf), 64):
        _, rt, pub, iid, ts, _, px, sz, tid, seq = unpack(buf, off)
        if rt != RType.TRADE:
            continue
        key_o = (ts, tid or seq)
        for st in steps:
            k = (iid, st, ts - ts % st)
            b = bars.get(k)
            if b is None:
                bars[k] = [px, px, px, px, sz, 1, key_o, key_o]
            else:
                if px > b[1]:
                    b[1] = px
                if px < b[2]:
                    b[2] = px
                b[4] = min(b[4] + sz, I64_MAX)
                b[5] += 1
                if key_o < b[6]:
                    b[0], b[6] = px, key_o
                if key_o >= b[7]:
                    b[3], b[7] = px, key_o
    return bars


def build_rates(rounds: int) -> dict[str, float]:
    from bench_storage import make_trades

    from dm.bars import BarPlan, build_bars, build_bars_numpy

    t = make_trades(10_000)
    plan = BarPlan((1, 60, 3600, 86400))
    best = {"c": 0.0, "numpy": 0.0}
    for _ in range(rounds):
        for label, fn in (("c", build_bars), ("numpy", build_bars_numpy)):
            t0 = time.perf_counter()
            for _ in range(20):
                fn(t, plan)
            best[label] = max(best[label], 20 / (time.perf_counter() - t0))
    return {"bars.build.c.batches_per_s": best["c"], "bars.build.numpy.batches_per_s": best["numpy"],
            "bars.build.c_vs_numpy.ratio": best["c"] / best["numpy"]}


def run(quick: bool = False) -> dict[str, float]:
    n = 100_000 if quick else 1_000_000
    rounds = 3 if quick else 5
    data = trades(n)
    raw = data.tobytes()
    frames = [raw[i:i + FRAME * 64] for i in range(0, len(raw), FRAME * 64)]
    tag = uuid.uuid4().hex[:8]
    names = [f"/dm.benchbars{tag}.{i}" for i in range(CHANNELS)]
    writers = [ChannelWriter(nm, 1 << 22, LAYOUT_HASH, instrument_id=i + 1, size_precision=0, publisher_id=1)
               for i, nm in enumerate(names)]
    plans = {"publish_no_bars": (), "publish_bars": (60, 3600, 86400), "publish_bars_1s": (1, 60, 3600, 86400)}
    best = {k: 0.0 for k in [*plans, "python_builder"]}
    try:
        for _ in range(rounds):
            for label, ivs in plans.items():
                f = Fanout(None)
                for i, w in enumerate(writers):
                    f.add_channel(i + 1, w)
                f.set_bar_intervals(ivs, 0)
                pub = f.publish
                gc.collect()
                gc.disable()
                try:
                    t0 = time.perf_counter()
                    for fr in frames:
                        pub(fr)
                    dt = time.perf_counter() - t0
                finally:
                    gc.enable()
                best[label] = max(best[label], n / dt)
            # the Python alternative: publish without bars, then the dict builder per record
            f = Fanout(None)
            for i, w in enumerate(writers):
                f.add_channel(i + 1, w)
            m = n // 10  # 10x fewer: it is slow
            sub = frames[:m // FRAME]
            gc.collect()
            gc.disable()
            try:
                t0 = time.perf_counter()
                for fr in sub:
                    f.publish(fr)
                    python_builder(fr, (60, 3600, 86400))
                dt = time.perf_counter() - t0
            finally:
                gc.enable()
            best["python_builder"] = max(best["python_builder"], len(sub) * FRAME / dt)
    finally:
        for w, nm in zip(writers, names):
            w.close()
            unlink_segment(nm)
    res = {f"bars.live.{k}.rows_per_s": v for k, v in best.items()}
    res.update(build_rates(rounds))
    base = best["publish_no_bars"]
    res["bars.live.publish_cost.ratio"] = 1 - best["publish_bars"] / base
    res["bars.live.publish_cost_1s.ratio"] = 1 - best["publish_bars_1s"] / base
    cy = 1 / best["publish_bars"] - 1 / base
    py = 1 / best["python_builder"] - 1 / base
    res["bars.live.cython_vs_python_cost.ratio"] = py / cy if cy > 0 else float("inf")
    return res


if __name__ == "__main__":
    out = run(quick="--quick" in sys.argv)
    w = max(len(k) for k in out)
    print(f"{'metric':<{w}}  value")
    for k, v in out.items():
        print(f"{k:<{w}}  {v:>14,.3f}")
    res_dir = HERE / "results"
    res_dir.mkdir(exist_ok=True)
    (res_dir / "bench_live_bars.json").write_text(json.dumps(out, indent=2))
