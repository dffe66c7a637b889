"""Binance futures codec vs the spot codec and ``orjson.loads`` on the same recorded USD-M frames
(data/binance_futures/2021-07-22), interleaved in one process (fair on a shared machine): the
futures codec adds ``pu``, ``T``, per-instrument size precision and value rejects; this shows
what that costs against the spot codec (which decodes these frames too, without them).

    python bench/ab_binance_futures.py

Prints ns per frame (best of 7 interleaved rounds) per stream type and a JSON line with the
ratios ``futures_vs_spot`` (< 1: faster) and ``speedup_vs_orjson_loads``.
"""
from __future__ import annotations

import gc
import json
import re
import sys
import time
from pathlib import Path

import orjson

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from dm import codec_ref as R  # noqa: E402
from dm.venues.binance._codec import BinanceCodec  # noqa: E402
from dm.venues.binance_futures._codec import BinanceFuturesCodec  # noqa: E402

WS = ROOT / "data/binance_futures/2021-07-22/BINANCE_FUTURES.ws.1.0"


def run(rounds: int = 7, loops: int = 20) -> dict[str, float]:
    frames_all = [t for k, _, _, t in R.iter_recording(WS) if k == "ws"]
    syms: dict[str, int] = {}
    for f in frames_all:
        for m in re.finditer(rb'"s":"(\w+)"', f):
            syms.setdefault(m.group(1).decode(), len(syms) + 1)
    out: dict[str, float] = {}
    for kind in ("depth", "aggTrade", "bookTicker"):
        frames = [f for f in frames_all if f"@{kind}".encode() in f[:40]]
        spot, fut = BinanceCodec(1001, syms), BinanceFuturesCodec(1004, syms)
        fns = {"spot": lambda: [spot.decode(f, 1) for f in frames],
               "futures": lambda: [fut.decode(f, 1) for f in frames],
               "orjson_loads": lambda: [orjson.loads(f) for f in frames]}
        best = {n: float("inf") for n in fns}
        gc.disable()
        try:
            for _ in range(rounds):
                for n, fn in fns.items():
                    t = time.perf_counter_ns()
                    for _ in range(loops):
                        fn()
                    best[n] = min(best[n], (time.perf_counter_ns() - t) / (loops * len(frames)))
        finally:
            gc.enable()
        for n, v in best.items():
            out[f"ab_binance_futures.{kind}.{n}.ns_per_frame"] = v
        out[f"ab_binance_futures.{kind}.futures_vs_spot"] = best["futures"] / best["spot"]
        out[f"ab_binance_futures.{kind}.speedup_vs_orjson_loads"] = best["orjson_loads"] / best["futures"]
    return out


if __name__ == "__main__":
    res = run()
    width = max(map(len, res))
    for k, v in res.items():
        print(f"{k:<{width}}  {v:>10,.2f}")
    print(json.dumps(res))
