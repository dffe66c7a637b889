"""How cost grows, written to bench/results/scaling.json and drawn as PNG charts there
(matplotlib):

* **worker frames/s vs symbols** (10, 100, 1,000): the Binance worker under ``dm supervise`` at full
  replay speed on the recorded session cloned to N symbols (bench/gen_symbols.py; aggTrade +
  bookTicker + depth@100ms for each: 3 N streams on one connection — the real venue caps a
  connection at 1,024 streams, so 1,000 symbols there would need several), from the worker's
  stats file as bench_worker; with each run's worker peak RSS and the instance's shm bytes
  (``memory.1000_channels.*``: one 4 MiB channel ring per symbol);
* **persist rows/s vs batch size** (1 k, 5 k, 20 k, 100 k rows): trades as a persist queue holds
  them through ``dm.persister.store_batch`` (split, poison checks, binary COPY with dm's dedup
  keys) into PostgreSQL, as bench_storage does, per batch size;
* **reader latency vs readers** (1, 4, 16 reader processes on one channel, waiting readers, not
  spinning: 16 spinners on 2 cores would measure the scheduler only): p50 / p99 of writer →
  record object in each reader's hands at 10 k records/s.

    python bench/bench_scaling.py [--quick]
"""
from __future__ import annotations

import gc
import json
import multiprocessing as mp
import os
import sys
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

import _svc  # noqa: E402
from gen_symbols import generate  # noqa: E402

RESULTS = HERE / "results"


# --------------------------------------------------------------------------- worker vs symbols


def worker_vs_symbols(counts, reps: int) -> dict:
    out = {}
    with tempfile.TemporaryDirectory(prefix="dm-bench-scale-") as g:
        for n in counts:
            session, info, canon = generate(n, Path(g) / str(n))
            best = {"fps": 0.0}
            for _ in range(reps):
                with tempfile.TemporaryDirectory(prefix="dm-bench-scale-run-") as d:
                    tmp = Path(d)
                    inst = _svc.instance_name("w")
                    cfg = _svc.write_config(tmp, inst, (session, info), _svc.binance_provider(tmp, canon))
                    sup = _svc.supervise(cfg, tmp / "sup.log")
                    watch = _svc.Watch(sup.pid, tmp / "run", inst, every=0.2)
                    watch.start()
                    try:
                        rc = sup.wait(900)
                    finally:
                        if sup.poll() is None:
                            sup.kill()
                        watch.stop()
                    if rc != 0:
                        raise RuntimeError(f"{n} symbols: supervise exited {rc}")
                    st = _svc.worker_stats(tmp / "run", inst, "binance")
                    fps = _svc.frames_per_s(st)
                    if st["connects"] == 1 and fps > best["fps"]:
                        chans = [v for k, v in watch.shm_segments.items() if not k.endswith(".persist")]
                        best = {"fps": fps, "frames": st["frames"], "rss": watch.rss.get("worker:binance", 0),
                                "shm_channels": len(chans), "shm_channel_bytes": sum(chans)}
            out[n] = best
    return out


# --------------------------------------------------------------------------- persist vs batch size


def persist_vs_batch(sizes, rows: int) -> dict:
    import psycopg

    from bench_storage import PG_ADMIN_URL, make_trades
    from dm.persister import store_batch
    from dm.storage import open_storage

    try:
        admin = psycopg.connect(PG_ADMIN_URL, autocommit=True, connect_timeout=3)
    except psycopg.OperationalError:
        return {}
    name = f"dm_bench_{uuid.uuid4().hex[:8]}"
    admin.execute(f'CREATE DATABASE "{name}"')
    out = {}
    try:
        st = open_storage(f"{PG_ADMIN_URL.rsplit('/', 1)[0]}/{name}", migrate=True)
        data = make_trades(rows)
        try:
            for bs in sizes:
                st.conn.execute("TRUNCATE trades") if hasattr(st, "conn") else None
                payload = [data[i:i + bs].tobytes() for i in range(0, rows, bs)]
                gc.disable()
                t0 = time.perf_counter()
                for b in payload:
                    store_batch(st, b, "bench")
                dt = time.perf_counter() - t0
                gc.enable()
                out[bs] = rows / dt
                data = make_trades(rows, trade_id0=int(data["trade_id"][-1]) + 1)  # new keys: no dedup shortcut
        finally:
            st.close()
    finally:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()
    return out


# --------------------------------------------------------------------------- readers


def _writer(name: str, n: int, rate: float, start_evt) -> None:
    import struct

    from dm._ring import ChannelWriter, now_ns
    from dm.records import LAYOUT_HASH, TRADE_DTYPE, RType

    w = ChannelWriter(name, 1 << 22, LAYOUT_HASH)
    rec = np.zeros(1, TRADE_DTYPE)
    rec["length"], rec["rtype"] = 16, RType.TRADE
    buf = bytearray(rec.tobytes())
    start_evt.wait()
    time.sleep(0.2)
    period = 1e9 / rate
    t0 = now_ns()
    for i in range(n):
        target = t0 + int(i * period)
        while now_ns() < target:
            time.sleep(0) if target - now_ns() > 20_000 else None
        struct.pack_into("<Q", buf, 40, i)
        struct.pack_into("<Q", buf, 16, now_ns())
        w.write(buf)
    time.sleep(0.3)
    w.close(unlink=True)


def _reader(name: str, n: int, out: str, ready) -> None:
    from dm._ring import now_ns
    from dm.client import Overrun, Subscription

    sub = Subscription(name, "BTCUSD", "BENCH", start="oldest", follow=False)
    lat = np.empty(n, np.int64)
    k = 0
    ready.set()
    gc.disable()
    for rec in sub:
        t = now_ns()
        if rec.__class__ is Overrun:
            continue
        lat[k] = t - rec.ts_recv
        k += 1
        if k >= n:
            break
    np.save(out, lat[:k])


def readers_latency(counts, n: int) -> dict:
    out = {}
    ctx = mp.get_context("spawn")
    for nr in counts:
        name = f"/dm.b{uuid.uuid4().hex[:8]}.BENCH.BTCUSD"
        start = ctx.Event()
        w = ctx.Process(target=_writer, args=(name, n, 10_000.0, start))
        w.start()
        from dm._ring import segment_exists

        while not segment_exists(name):
            time.sleep(0.01)
        with tempfile.TemporaryDirectory() as d:
            procs, readies, files = [], [], []
            for i in range(nr):
                ev = ctx.Event()
                f = os.path.join(d, f"r{i}.npy")
                p = ctx.Process(target=_reader, args=(name, n, f, ev))
                p.start()
                procs.append(p), readies.append(ev), files.append(f)
            for ev in readies:
                ev.wait(60)
            start.set()
            for p in procs:
                p.join(120)
            w.join(30)
            lat = np.concatenate([np.load(f) for f in files if os.path.exists(f)])
        out[nr] = {"p50": float(np.percentile(lat, 50)), "p99": float(np.percentile(lat, 99)), "n": len(lat)}
    return out


# --------------------------------------------------------------------------- charts


def charts(data: dict) -> list[Path]:
    import matplotlib
    import matplotlib.ticker

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    RESULTS.mkdir(exist_ok=True)
    paths = []

    def save(fig, name):
        for ax in fig.axes:  # ticks at the measured points, plain numbers
            xs = sorted({x for line in ax.get_lines() for x in line.get_xdata()})
            ax.set_xticks(xs, [f"{int(x):,}" for x in xs])
            ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
        p = RESULTS / name
        fig.tight_layout()
        fig.savefig(p, dpi=110)
        plt.close(fig)
        paths.append(p)

    w = data.get("worker_vs_symbols", {})
    if w:
        xs = sorted(int(k) for k in w)
        fig, ax = plt.subplots(figsize=(6, 3.6))
        ax.plot(xs, [w[str(x)]["fps"] / 1e3 for x in xs], "o-")
        ax.set_xscale("log")
        ax.set_xlabel("symbols (one connection, 3 streams each)")
        ax.set_ylabel("worker k frames/s")
        ax.set_title("Binance worker end to end vs symbols")
        ax.set_ylim(bottom=0)
        ax.grid(alpha=0.3)
        save(fig, "scaling_worker_symbols.png")
    pb = data.get("persist_vs_batch", {})
    if pb:
        xs = sorted(int(k) for k in pb)
        fig, ax = plt.subplots(figsize=(6, 3.6))
        ax.plot(xs, [pb[str(x)] / 1e3 for x in xs], "o-")
        ax.set_xscale("log")
        ax.set_xlabel("batch size (rows)")
        ax.set_ylabel("k rows/s")
        ax.set_title("persist (store_batch → PostgreSQL COPY) vs batch size")
        ax.set_ylim(bottom=0)
        ax.grid(alpha=0.3)
        save(fig, "scaling_persist_batch.png")
    rl = data.get("readers_latency", {})
    if rl:
        xs = sorted(int(k) for k in rl)
        fig, ax = plt.subplots(figsize=(6, 3.6))
        ax.plot(xs, [rl[str(x)]["p50"] / 1e3 for x in xs], "o-", label="p50")
        ax.plot(xs, [rl[str(x)]["p99"] / 1e3 for x in xs], "s--", label="p99")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("reader processes on one channel")
        ax.set_ylabel("writer → record object, µs")
        ax.set_title("reader latency vs readers (10 k records/s, waiting readers)")
        ax.legend()
        ax.grid(alpha=0.3)
        save(fig, "scaling_readers.png")
    return paths


def run(quick: bool = False, out_name: str = "scaling.json") -> dict[str, float]:
    sym_counts = (10, 100) if quick else (10, 100, 1000)
    w = worker_vs_symbols(sym_counts, 1 if quick else 2)
    pb = persist_vs_batch((1000, 5000, 20000) if quick else (1000, 5000, 20000, 100000), 100_000 if quick else 400_000)
    rl = readers_latency((1, 4) if quick else (1, 4, 16), 5_000 if quick else 30_000)
    data = {"meta": {"time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "quick": quick, "cpus": os.cpu_count()},
            "worker_vs_symbols": {str(k): v for k, v in w.items()},
            "persist_vs_batch": {str(k): v for k, v in pb.items()},
            "readers_latency": {str(k): v for k, v in rl.items()}}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / out_name).write_text(json.dumps(data, indent=1, sort_keys=True))
    charts(data)
    out: dict[str, float] = {}
    for n, v in w.items():
        out[f"scaling.worker.{n}_symbols.frames_per_s"] = round(v["fps"], 1)
        out[f"scaling.worker.{n}_symbols.rss_bytes"] = float(v.get("rss", 0))
    if 1000 in w:
        out["memory.1000_channels.shm_bytes"] = float(w[1000]["shm_channel_bytes"])
        out["memory.1000_channels.channels"] = float(w[1000]["shm_channels"])
        out["memory.1000_channels.worker_rss_bytes"] = float(w[1000]["rss"])
    for bs, v in pb.items():
        out[f"scaling.persist.batch_{bs}.rows_per_s"] = round(v, 1)
    for nr, v in rl.items():
        out[f"scaling.readers.{nr}.latency_p50_ns"] = v["p50"]
        out[f"scaling.readers.{nr}.latency_p99_ns"] = v["p99"]
    return out


if __name__ == "__main__":
    res = run("--quick" in sys.argv, out_name="scaling-quick.json" if "--quick" in sys.argv else "scaling.json")
    for k, v in res.items():
        print(f"{k:<48} {v:>16,.1f}")
