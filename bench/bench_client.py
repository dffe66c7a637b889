"""dm.client end to end: one-way latency from ChannelWriter.write in another process to a
``dm.records.Trade`` object in this one (Subscription.read with busy polling, then unpack), and
the client's read rate. The ring alone (ChannelReader) is measured in bench_ring.py.

    python bench/bench_client.py [--quick]
"""
from __future__ import annotations

import gc
import multiprocessing as mp
import os
import struct
import sys
import time
import uuid

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from dm._ring import ChannelWriter, now_ns  # noqa: E402
from dm.client import Client, Overrun  # noqa: E402
from dm.records import LAYOUT_HASH, TRADE_DTYPE, RType  # noqa: E402
from dm.registry import Registry  # noqa: E402


def _writer(name: str, n: int, rate: float, start_evt, warm: int) -> None:
    w = ChannelWriter(name, 1 << 22, LAYOUT_HASH)
    rec = np.zeros(1, TRADE_DTYPE)
    rec["length"], rec["rtype"], rec["instrument_id"] = 16, RType.TRADE, 1
    buf = bytearray(rec.tobytes())
    write = w.write
    pack_into = struct.pack_into
    start_evt.wait()
    period = 1e9 / rate if rate else 0
    t0 = now_ns()
    for i in range(n + warm):
        if period:
            target = t0 + int(i * period)
            while now_ns() < target:
                pass
        pack_into("<Q", buf, 40, i)             # trade_id
        pack_into("<Q", buf, 16, now_ns())      # ts_recv = write time, stamped last (as bench_ring)
        write(buf)
    time.sleep(0.2)
    w.close(unlink=True)


def measure(n: int, rate: float, warm: int = 2000, raw: bool = False) -> dict:
    inst = "b" + uuid.uuid4().hex[:8]
    reg = f"/dm.reg.{inst}"
    name = f"/dm.{inst}.BENCH.BTCUSD"
    ctx = mp.get_context("spawn")
    evt = ctx.Event()
    p = ctx.Process(target=_writer, args=(name, n, rate, evt, warm))
    p.start()
    slot = Registry(reg).register(inst, "bench", "BENCH", f"/dm.{inst}.BENCH.", ["BTCUSD"])
    lat = np.empty(n, np.int64)
    try:
        with Client(instance=inst, registry=reg) as c:
            sub = c.subscribe("BTCUSD", "BENCH", start="oldest", wait=30, busy_poll=True)
            gc.disable()
            evt.set()
            got = 0
            t_first = t_last = 0
            for _ in range(warm):
                sub.read(timeout=None)
            lost = 0
            read_raw = sub.read_raw
            while raw and got < n:  # bytes only: the ring through the client's wait path
                b = read_raw(timeout=None)
                t = now_ns()
                lat[got] = t - int.from_bytes(b[16:24], "little")
                got += 1
            while got + lost < n:
                rec = sub.read(timeout=None)
                t = now_ns()
                if isinstance(rec, Overrun):  # flooding: a reader slower than the writer is lapped
                    lost += rec.lost_records
                    continue
                lat[got] = t - rec.ts_recv
                if got == 0:
                    t_first = t
                got += 1
            t_last = now_ns()
            gc.enable()
    finally:
        p.join(30)
        slot.release()
    q = np.percentile(lat[:got], [50, 99, 99.9])
    return {"p50": float(q[0]), "p99": float(q[1]), "p999": float(q[2]), "rate": got / ((t_last - t_first) / 1e9), "lost": lost}


def run(quick: bool = False) -> dict:
    n = 50_000 if quick else 300_000
    best = min((measure(n, 100_000) for _ in range(1 if quick else 3)), key=lambda r: r["p50"])
    raw = min((measure(n, 100_000, raw=True) for _ in range(1 if quick else 3)), key=lambda r: r["p50"])
    flood = measure(n, 0)
    return {
        "client.read_raw.latency_p50_ns": raw["p50"],
        "client.read_raw.latency_p99_ns": raw["p99"],
        "client.latency_p50_ns": best["p50"],
        "client.latency_p99_ns": best["p99"],
        "client.latency_p999_ns": best["p999"],
        "client.read_records_per_s": flood["rate"],
        "client.flood_lost_records": float(flood["lost"]),
    }


if __name__ == "__main__":
    for k, v in run("--quick" in sys.argv).items():
        print(f"{k:<32} {v:>14,.0f}")
