"""dm bridge into NATS JetStream (issue 12 target: >= 1 M records/s batched) and the remote
reader's one-way latency beside the local ring's.

Throughput: real records (trades + BBOs decoded by dm's codec from the Binance recording, tiled
with shifted timestamps) pre-filled into shm channel rings; the bridge (in this process) publishes
them to a nats-server of the bench's own (file storage, JetStream acks, dedup ids); records/s =
records acked / time from first read to last ack. Baseline in the same run: one JetStream publish
per record (nats-py ``js.publish_async``, the obvious way to put records on NATS).

Latency: a writer process writes a trade every 200 µs stamped with its write time (ts_recv); a
local dm.client reader and then a remote reader (``Client(url=...)`` via ``dm bridge`` with
linger 0.5 ms, in a subprocess) take ``now - ts_recv`` per record; p50/p99 of each.

    python bench/bench_bridge.py [--quick]
"""
from __future__ import annotations

import asyncio
import gc
import multiprocessing as mp
import os
import struct
import sys
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE.parent / "tests"))

from dm._ring import ChannelWriter, now_ns  # noqa: E402
from dm.records import LAYOUT_HASH, TRADE_DTYPE, RType  # noqa: E402
from dm.registry import Registry  # noqa: E402


def _records(symbols, n_per_symbol: int) -> dict[str, bytes]:
    from nats_writer import decoded_records

    frames = decoded_records(symbols)
    per: dict[int, list[bytes]] = {}
    for f in frames:
        off = 0
        while off < len(f):
            ln = f[off] * 4
            per.setdefault(int.from_bytes(f[off + 4:off + 8], "little"), []).append(f[off:off + ln])
            off += ln
    out = {}
    for i, (iid, recs) in enumerate(sorted(per.items())):
        base = b"".join(recs)
        reps = -(-n_per_symbol // len(recs))
        out[sorted(symbols)[i]] = base * reps  # ts shifts do not matter to the bridge
    return out


def _cfg(tmp: Path, inst: str, url: str):
    from nats_helpers import bridge_config

    from dm import config as dmconfig

    return dmconfig.load(bridge_config(tmp, inst, url, "B" + inst))


def throughput(n_total: int) -> dict:
    from nats_helpers import NatsServer

    from dm.bridge import Bridge, load_bridge_config

    symbols = ["DENTUSD", "ZILUSD", "MANAUSD", "NEOUSDC"]
    res = {}
    with tempfile.TemporaryDirectory() as td:
        tmp = Path(td)
        srv = NatsServer(tmp).start()
        inst = "b" + uuid.uuid4().hex[:8]
        recs = _records(symbols, n_total // len(symbols))
        writers = {}
        n = 0
        for s, buf in recs.items():
            cap = 1 << max(22, (len(buf) * 2 - 1).bit_length())
            w = writers[s] = ChannelWriter(f"/dm.{inst}.BINANCE.{s}", cap, LAYOUT_HASH)
            n += w.write_many(buf)
        slot = Registry(f"/dm.reg.{inst}").register(inst, "bench", "BINANCE", f"/dm.{inst}.BINANCE.", sorted(writers))
        cfg = _cfg(tmp, inst, srv.url)
        bcfg = load_bridge_config(cfg.path, batch_records=8192, max_inflight=32)
        br = Bridge(cfg, bcfg)

        async def go():
            task = asyncio.get_running_loop().create_task(br.run())
            while not br.taps or not any(t.records for t in br.taps.values()):
                await asyncio.sleep(0.0005)
            t0 = time.perf_counter()
            while br.s["records"] < n:
                await asyncio.sleep(0.001)
            dt = time.perf_counter() - t0
            br.stop()
            await task
            return dt

        gc.disable()
        try:
            dt = asyncio.run(go())
        finally:
            gc.enable()
        res["bridge_records_per_s"] = n / dt
        res["bridge_mb_per_s"] = br.s["bytes"] / dt / 1e6
        res["bridge_records_per_message"] = n / max(1, br.s["messages"])

        # baseline: one JetStream message per record, pipelined publish_async
        async def per_record(m: int) -> float:
            import nats

            nc = await nats.connect(srv.url)
            js = nc.jetstream()
            await js.add_stream(name="BASE" + inst, subjects=["base." + inst])
            buf = recs[symbols[0]]
            one = [buf[i:i + buf[0] * 4] for i in range(0, min(len(buf), m * 80), buf[0] * 4)][:m]
            t0 = time.perf_counter()
            futs = [await js.publish_async("base." + inst, r) for r in one]
            await asyncio.gather(*futs)
            dt = time.perf_counter() - t0
            await nc.close()
            return len(one) / dt

        res["jetstream_one_record_per_message_per_s"] = asyncio.run(per_record(20_000 if n_total < 10**6 else 100_000))
        res["bridge_vs_one_per_message_ratio"] = res["bridge_records_per_s"] / res["jetstream_one_record_per_message_per_s"]
        for w in writers.values():
            w.close(unlink=True)
        slot.release()
        srv.stop()
    return res


def _lat_writer(inst: str, seconds: float, period_us: float, go) -> None:
    w = ChannelWriter(f"/dm.{inst}.BINANCE.BTCUSD", 1 << 22, LAYOUT_HASH)
    slot = Registry(f"/dm.reg.{inst}").register(inst, "bench", "BINANCE", f"/dm.{inst}.BINANCE.", ["BTCUSD"])
    rec = np.zeros(1, TRADE_DTYPE)
    rec["length"], rec["rtype"], rec["instrument_id"], rec["publisher_id"] = 16, RType.TRADE, 1, 1001
    buf = bytearray(rec.tobytes())
    go.wait()
    t_end = time.monotonic() + seconds
    i = 0
    nxt = now_ns()
    while time.monotonic() < t_end:
        while now_ns() < nxt:
            time.sleep(0)
        nxt += int(period_us * 1000)
        struct.pack_into("<Q", buf, 40, i)
        struct.pack_into("<Q", buf, 16, now_ns())
        w.write(buf)
        i += 1
        if i % 1000 == 0:
            w.heartbeat()
    time.sleep(0.5)
    w.close(unlink=True)
    slot.release()


def latency(seconds: float) -> dict:
    from nats_helpers import NatsServer, bridge_config, start_dm, stop_proc

    from dm.client import Client

    res = {}
    with tempfile.TemporaryDirectory() as td:
        tmp = Path(td)
        srv = NatsServer(tmp).start()
        inst = "l" + uuid.uuid4().hex[:8]
        ctx = mp.get_context("spawn")
        go = ctx.Event()
        p = ctx.Process(target=_lat_writer, args=(inst, 2 * seconds + 2, 200.0, go))
        p.start()
        cfg = bridge_config(tmp, inst, srv.url, "L" + inst, linger_ms=0.5, batch_records=1024)
        bridge = None
        try:
            reg = f"/dm.reg.{inst}"
            go.set()
            with Client(instance=inst, registry=reg) as c:
                sub = c.subscribe("BTCUSD", "BINANCE", start="newest", wait=20)
                bridge = start_dm(["bridge", "-c", str(cfg)], tmp, "bridge")
                lat = []
                t_end = time.monotonic() + seconds
                while time.monotonic() < t_end:
                    r = sub.read_raw(timeout=0.5)
                    if r is not None:
                        lat.append(now_ns() - int.from_bytes(r[16:24], "little"))
                a = np.array(lat[200:])
                res["local_ring_latency_p50_us"] = float(np.percentile(a, 50)) / 1e3
                res["local_ring_latency_p99_us"] = float(np.percentile(a, 99)) / 1e3
            with Client(url=srv.url, instance=inst) as rc:
                sub = rc.subscribe("BTCUSD", "BINANCE", start="newest", wait=20)
                lat = []
                t_end = time.monotonic() + seconds
                while time.monotonic() < t_end:
                    r = sub.read_raw(timeout=0.5)
                    if r is not None:
                        lat.append(now_ns() - int.from_bytes(r[16:24], "little"))
                a = np.array(lat[200:])
                res["remote_reader_latency_p50_us"] = float(np.percentile(a, 50)) / 1e3
                res["remote_reader_latency_p99_us"] = float(np.percentile(a, 99)) / 1e3
                res["remote_reader_records"] = len(lat)
        finally:
            if bridge is not None:
                stop_proc(bridge)
            p.join(30)
            srv.stop()
    return res


def run(quick: bool = False) -> dict:
    out = {}
    out.update(throughput(400_000 if quick else 4_000_000))
    out.update(latency(2.0 if quick else 5.0))
    return out


if __name__ == "__main__":
    for k, v in run(quick="--quick" in sys.argv).items():
        print(f"{k:<45} {v:>14,.3f}")
