"""dm.client end to end: one-way latency from ChannelWriter.write in another process to a record
in this one's hands, as bytes (``Subscription.read_raw``), as a record object (``Subscription.read``:
dm/_recobj.pyx) and, as the baseline in the same run, as the ``dm.records`` namedtuple the client
used to build (``read_raw`` + ``dm.records.unpack``); the client's read rate; batch reads.

Latency method: the writer (another process, paced at 100 k records/s by busy-waiting) stamps
ts_recv in C right before the ring write (bench/_stamp_writer.pyx: nothing but the write between
the stamp and the tail's release store); the reader calls the read with ``timeout=None`` on a
``busy_poll`` subscription and stamps ``now_ns()`` right after it returns. Baselines in the same
run, same writer: ``client.ring_floor`` — a bare ``ChannelReader.read_into`` polled from a Python
loop (bench/bench_ring.py's reader), and ``client.read_raw_python_path`` — the wait path
``read_raw`` had before dm/_client.pyx (``ChannelReader.read`` → None → ``Subscription._slow``
→ spin in C → back up through the Python frames). p50, p99 and p99.9 of each. And, in one
process, the CPU cost of one read call on a ring that already holds the records, C methods vs
that Python path (``client.read_path.*``): the part of the latency the client's code adds, a
figure other load on the machine barely moves.

In-process, same run: what it costs to take a record from a ring into the reader's hands, per
design — bytes only, dm's record object (struct copied into the object by a cdef factory), the
design not picked (a Trade that keeps the ``bytes`` and decodes on access:
bench/_recobj_bytes_variant.pyx, compiled here with pyximport), and the namedtuple.

    python bench/bench_client.py [--quick]
"""
from __future__ import annotations

import gc
import hashlib
import multiprocessing as mp
import os
import struct
import sys
import tempfile
import time
import uuid

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, ".."))

from dm import _recobj  # noqa: E402
from dm._ring import ChannelReader, ChannelWriter, now_ns  # noqa: E402
from dm._recobj import read_record as _read_record  # noqa: E402
from dm.client import Client, Overrun, _overrun  # noqa: E402
from dm.records import LAYOUT_HASH, TRADE_DTYPE, RType, unpack  # noqa: E402
from dm.registry import Registry  # noqa: E402


def _writer(name: str, n: int, rate: float, start_evt, warm: int, stamp: str = "c") -> None:
    write_stamped = _pyx("_stamp_writer").write_stamped
    w = ChannelWriter(name, 1 << 22, LAYOUT_HASH)
    rec = np.zeros(1, TRADE_DTYPE)
    rec["length"], rec["rtype"], rec["instrument_id"] = 16, RType.TRADE, 1
    buf = bytearray(rec.tobytes())
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
        if stamp == "c":
            write_stamped(w, buf, 16)           # ts_recv = now_ns() in C, then the ring write
        else:                                   # the method before: stamped in Python, then write()
            pack_into("<Q", buf, 16, now_ns())
            w.write(buf)
    time.sleep(0.2)
    w.close(unlink=True)


def measure(n: int, rate: float, warm: int = 2000, mode: str = "object", stamp: str = "c") -> dict:
    """``mode``: "object" (``sub.read``), "raw" (``sub.read_raw``), "namedtuple"
    (``unpack(sub.read_raw())``, what ``read`` did before the record objects), "ring" (the
    floor: ``ChannelReader.read_into`` polled from Python on the subscription's reader),
    "raw_python_path" (bytes through the Python wait path ``read_raw`` had before
    dm/_client.pyx). ``stamp``: "c" (bench/_stamp_writer.pyx) or "python" (``struct.pack_into``
    of ``now_ns()``, then ``ChannelWriter.write``: what this bench did before)."""
    inst = "b" + uuid.uuid4().hex[:8]
    reg = f"/dm.reg.{inst}"
    name = f"/dm.{inst}.BENCH.BTCUSD"
    ctx = mp.get_context("spawn")
    evt = ctx.Event()
    p = ctx.Process(target=_writer, args=(name, n, rate, evt, warm, stamp))
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
            if mode == "raw":  # bytes only: the ring through the client's wait path
                while got < n:
                    b = read_raw(timeout=None)
                    t = now_ns()
                    lat[got] = t - int.from_bytes(b[16:24], "little")
                    got += 1
            elif mode == "ring":  # the floor: the bare reader polled from Python, as bench_ring
                read_into, buf = sub.reader.read_into, bytearray(1024)
                while got < n:
                    if read_into(buf):
                        t = now_ns()
                        lat[got] = t - int.from_bytes(buf[16:24], "little")
                        got += 1
            elif mode == "raw_python_path":
                while got < n:
                    b = _python_path_read_raw(sub)
                    t = now_ns()
                    lat[got] = t - int.from_bytes(b[16:24], "little")
                    got += 1
            elif mode == "namedtuple":
                while got < n:
                    rec = unpack(read_raw(timeout=None))
                    t = now_ns()
                    lat[got] = t - rec.ts_recv
                    got += 1
            else:
                read = sub.read
                while got + lost < n:
                    rec = read(timeout=None)
                    t = now_ns()
                    if rec.__class__ is Overrun:  # flooding: a reader slower than the writer is lapped
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
    rate_out = got / ((t_last - t_first) / 1e9) if t_first else 0.0
    return {"p50": float(q[0]), "p99": float(q[1]), "p999": float(q[2]), "rate": rate_out, "lost": lost}


def _python_path_read_raw(sub, timeout=None):
    """``Subscription.read_raw(timeout=None)`` as it was before dm/_client.pyx: the Python frames
    around the C spin (nothing queued, no restart)."""
    if sub._queued:
        return sub._take_queued_raw()
    raw = sub.reader.read()
    if raw is None:
        raw = sub._slow(timeout, False)
    return raw


def _python_path_read(sub, timeout=None):
    """``Subscription.read`` as it was before dm/_client.pyx."""
    if sub._queued:
        return sub._take_queued()
    rec = _read_record(sub.reader, _overrun, sub)
    if rec is None:
        rec = sub._slow(timeout, True)
    return rec


def read_path_costs(n: int, reps: int) -> dict[str, float]:
    """ns per ``read_raw(timeout=None)`` / ``read(timeout=None)`` call on a subscription whose
    ring already holds the records (one process: the CPU cost of the call itself, which load
    from other processes on the machine barely moves), dm/_client.pyx's C methods vs the Python
    path they replaced; best of ``reps``."""
    inst = "b" + uuid.uuid4().hex[:8]
    reg = f"/dm.reg.{inst}"
    name = f"/dm.{inst}.BENCH.PATH"
    w = ChannelWriter(name, 1 << max(24, (n * TRADE_DTYPE.itemsize * 2 - 1).bit_length()), LAYOUT_HASH)
    slot = Registry(reg).register(inst, "bench", "BENCH", f"/dm.{inst}.BENCH.", ["PATH"])
    rec = np.zeros(n, TRADE_DTYPE)
    rec["length"], rec["rtype"] = 16, RType.TRADE
    w.write_many(rec.tobytes())
    best: dict[str, float] = {}
    gc.disable()
    try:
        with Client(instance=inst, registry=reg) as c:
            for _ in range(reps):
                for label in ("raw", "raw_python_path", "object", "object_python_path"):
                    sub = c.subscribe("PATH", "BENCH", start="oldest")
                    t0 = time.perf_counter_ns()
                    if label == "raw":
                        f = sub.read_raw
                        for _ in range(n):
                            f(timeout=None)
                    elif label == "object":
                        f = sub.read
                        for _ in range(n):
                            f(timeout=None)
                    elif label == "raw_python_path":
                        for _ in range(n):
                            _python_path_read_raw(sub, timeout=None)
                    else:
                        for _ in range(n):
                            _python_path_read(sub, timeout=None)
                    best[label] = min(best.get(label, float("inf")), (time.perf_counter_ns() - t0) / n)
                    sub.close()
    finally:
        gc.enable()
        w.close(unlink=True)
        slot.release()
    return best


# --------------------------------------------------------------------------- in-process designs


def _pyx(module: str):
    """bench/<module>.pyx compiled on the fly (pyximport, a temp build dir)."""
    import importlib

    import pyximport

    # one build dir per checkout and ring ABI: a module built against another dm/_ring.pxd
    # (another checkout, or before a change to ChannelWriter) fails to import
    ring_pxd = open(os.path.join(HERE, "..", "dm", "_ring.pxd"), "rb").read()
    tag = hashlib.sha1(HERE.encode() + ring_pxd).hexdigest()[:12]
    pyximport.install(build_dir=os.path.join(tempfile.gettempdir(), f"dm-bench-pyx-{tag}"), language_level=3,
                      setup_args={"include_dirs": [os.path.join(HERE, ".."), os.path.join(HERE, "..", "dm")]})
    if HERE not in sys.path:
        sys.path.insert(0, HERE)
    return importlib.import_module(module)


def _bytes_variant():
    """bench/_recobj_bytes_variant.pyx compiled on the fly (pyximport, a temp build dir)."""
    return _pyx("_recobj_bytes_variant")


def designs(n: int, reps: int) -> dict:
    """ns per record to take a Trade from a ring into the reader's hands and read two fields
    (ts_recv, price), per design, alternating designs rep by rep; best rep of each."""
    v = _bytes_variant()
    name = f"/dm.b{uuid.uuid4().hex[:8]}.BENCH.DESIGN"
    w = ChannelWriter(name, 1 << max(24, (n * TRADE_DTYPE.itemsize * 2 - 1).bit_length()), LAYOUT_HASH)
    rec = np.zeros(n, TRADE_DTYPE)
    rec["length"], rec["rtype"], rec["ts_recv"], rec["price"] = 16, RType.TRADE, np.arange(n), 7
    w.write_many(rec.tobytes())
    TradeB = v.TradeB
    read_record = _recobj.read_record

    def run_bytes(r):
        read = r.read
        for _ in range(n):
            b = read()
            b[16:24], b[24:32]

    def run_object(r):
        for _ in range(n):
            o = read_record(r, None, None)
            o.ts_recv, o.price

    def run_bytes_variant(r):
        read, mk = r.read, v.from_bytes
        for _ in range(n):
            o = mk(read())
            o.ts_recv, o.price

    def run_namedtuple(r):
        read = r.read
        for _ in range(n):
            o = unpack(read())
            o.ts_recv, o.price

    runs = {"bytes": run_bytes, "record_object": run_object, "bytes_variant": run_bytes_variant, "namedtuple": run_namedtuple}
    best = {k: float("inf") for k in runs}
    gc.disable()
    try:
        for _ in range(reps):
            for k, fn in runs.items():
                r = ChannelReader(name, LAYOUT_HASH, start="oldest")
                t0 = time.perf_counter_ns()
                fn(r)
                best[k] = min(best[k], (time.perf_counter_ns() - t0) / n)
                r.close()
        # construction alone, from bytes already in hand
        raw = rec[:1].tobytes()
        fb, fbv = _recobj.from_bytes, v.from_bytes
        for label, fn in (("record_object", fb), ("bytes_variant", fbv), ("namedtuple", unpack)):
            t = float("inf")
            for _ in range(reps):
                t0 = time.perf_counter_ns()
                for _ in range(n):
                    fn(raw)
                t = min(t, (time.perf_counter_ns() - t0) / n)
            best[f"build.{label}"] = t
        # batch reads through the client's path (numpy arrays of 4096): best of ``reps`` passes
        # over the whole ring, as every figure above (one pass is a few ms: a single one is noise)
        best["batch_records_per_s"] = 0.0
        for _ in range(reps):
            r = ChannelReader(name, LAYOUT_HASH, start="oldest")
            t0 = time.perf_counter_ns()
            k = 0
            while (a := r.read_batch(4096)) is not None:
                k += len(a)
            best["batch_records_per_s"] = max(best["batch_records_per_s"], k / ((time.perf_counter_ns() - t0) / 1e9))
            r.close()
        del TradeB
    finally:
        gc.enable()
        w.close(unlink=True)
    return best


def run(quick: bool = False) -> dict:
    n = 50_000 if quick else 300_000
    reps = 1 if quick else 3
    out: dict[str, float] = {}
    # the latency modes alternate rep by rep, so machine noise hits them alike; best p50 of each
    lat: dict[str, dict] = {}
    _pyx("_stamp_writer")  # compiled once here, before the writer processes import it
    for _ in range(reps):
        for mode in ("object", "raw", "namedtuple", "ring", "raw_python_path"):
            r = measure(n, 100_000, mode=mode)
            if mode not in lat or r["p50"] < lat[mode]["p50"]:
                lat[mode] = r
        r = measure(n, 100_000, mode="raw", stamp="python")  # what the writer's own Python call adds
        if "raw_py_stamp" not in lat or r["p50"] < lat["raw_py_stamp"]["p50"]:
            lat["raw_py_stamp"] = r
    flood = measure(n, 0)
    obj, raw, nt, ring, pyp = lat["object"], lat["raw"], lat["namedtuple"], lat["ring"], lat["raw_python_path"]
    out.update({
        "client.read_raw.latency_p50_ns": raw["p50"],
        "client.read_raw.latency_p99_ns": raw["p99"],
        "client.read_raw.latency_p999_ns": raw["p999"],
        "client.ring_floor.latency_p50_ns": ring["p50"],
        "client.ring_floor.latency_p99_ns": ring["p99"],
        "client.ring_floor.latency_p999_ns": ring["p999"],
        "client.read_raw_python_path.latency_p50_ns": pyp["p50"],
        "client.read_raw_python_path.latency_p99_ns": pyp["p99"],
        "client.read_raw_python_path.latency_p999_ns": pyp["p999"],
        "client.read_raw.python_stamped_writer.latency_p50_ns": lat["raw_py_stamp"]["p50"],
        "client.read_raw_vs_ring_floor.latency_ratio": round(raw["p50"] / ring["p50"], 3),
        "client.record_object_vs_ring_floor.latency_ratio": round(obj["p50"] / ring["p50"], 3),
        "client.read_raw_vs_python_path.latency_ratio": round(raw["p50"] / pyp["p50"], 3),
        "client.record_object.latency_p50_ns": obj["p50"],
        "client.record_object.latency_p99_ns": obj["p99"],
        "client.record_object.latency_p999_ns": obj["p999"],
        "client.namedtuple.latency_p50_ns": nt["p50"],
        "client.namedtuple.latency_p99_ns": nt["p99"],
        "client.record_object_vs_namedtuple.latency_ratio": round(obj["p50"] / nt["p50"], 3),
        "client.latency_p50_ns": obj["p50"],   # what Subscription.read hands out (record objects)
        "client.latency_p99_ns": obj["p99"],
        "client.latency_p999_ns": obj["p999"],
        "client.read_records_per_s": flood["rate"],
        "client.flood_lost_records": float(flood["lost"]),
    })
    pc = read_path_costs(100_000 if quick else 300_000, reps + 2)
    for k, v in pc.items():
        out[f"client.read_path.{k}.call_ns"] = round(v, 1)
    out["client.read_path.raw_vs_python_path.speedup"] = round(pc["raw_python_path"] / pc["raw"], 2)
    out["client.read_path.object_vs_python_path.speedup"] = round(pc["object_python_path"] / pc["object"], 2)
    d = designs(100_000 if quick else 300_000, reps)
    for k in ("bytes", "record_object", "bytes_variant", "namedtuple"):
        out[f"client.design.{k}.read_ns"] = round(d[k], 1)
    for k in ("record_object", "bytes_variant", "namedtuple"):
        out[f"client.design.{k}.build_ns"] = round(d[f"build.{k}"], 1)
    out["client.design.record_object_vs_namedtuple.speedup"] = round(d["namedtuple"] / d["record_object"], 2)
    out["client.design.record_object_vs_bytes_variant.speedup"] = round(d["bytes_variant"] / d["record_object"], 2)
    out["client.read_batch.records_per_s"] = d["batch_records_per_s"]
    return out


if __name__ == "__main__":
    for k, v in run("--quick" in sys.argv).items():
        print(f"{k:<56} {v:>14,.1f}")
