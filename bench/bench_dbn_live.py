"""Databento live worker throughput: DBN records/s through dm's worker path against what the
official client does with the same bytes.

    python bench/bench_dbn_live.py [--quick]

The stream: the recorded GLBX.MDP3 mbp-1 file (ESU4, 2,288 records) tiled with shifted times to
``N`` records (2M, ``--quick`` 200k), metadata first, as the live gateway sends it.

* ``dbn_live.worker_path.records_per_s`` — the worker's per-read work in one process, no socket:
  1 MiB reads → ``DbnConverter.feed`` (BBO + MBP_EVENT per DBN record) → ``LiveTracker.process``
  (ids, replay filter) → ``Fanout.publish`` into the symbol's channel ring and the persist queue
  (shm, sized to hold the run: no spill).
* ``dbn_live.tcp.session.records_per_s`` / ``dbn_live.tcp.stream.records_per_s`` — end to end: the fake live gateway (``dm fake-databento-live``,
  its own process) streams the file over loopback TCP to ``DatabentoLiveProvider.run_connection``
  (CRAM handshake, subscription, reads, the worker path above) until the gateway closes; timed
  from the connection to the FIN (the fake's own send cost included: on a 2-core machine it shares
  the CPU).
* baselines on the same bytes: ``dbn_live.baseline_live_client_pack.records_per_s`` — the
  official client's way to the same dm records: ``databento_dbn.DBNDecoder`` (what
  ``databento.Live`` runs per read) + ``struct.pack`` of each record's BBO and MBP_EVENT
  (``bench_dbn.baseline``), no ring; ``dbn_live.baseline_live_client_decode.records_per_s`` — the
  decoder alone (one Python record object each, nothing converted); ``dbn_live.baseline_dbnstore_ndarray.records_per_s``
  — ``databento.DBNStore.from_bytes(...).to_ndarray()`` (vectorised copy into a numpy array, no
  conversion: the fastest way the library reads DBN).
* ratios ``dbn_live.worker_path.vs_live_client_pack`` (headline), ``.vs_live_client_decode``,
  ``.vs_dbnstore_ndarray``.
One core each; gc off while timing; best of repeats after a warm-up.
"""
from __future__ import annotations

import asyncio
import gc
import json
import os
import struct
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from dm.dbn import decompress  # noqa: E402

MBP1 = ROOT / "data" / "databento" / "glbx-mdp3-esu4-nqu4-20240701" / "futures_mbp-1_2024-07-01T23-58_2024-07-02T00-02.dbn.zst"
KEY = "db-BENCHKEYBENCHKEYBENCHKEYBENCH"
READ = 1 << 20


def stream(n: int) -> tuple[bytes, int, int]:
    """(metadata + records, DBN record count, Databento instrument id) of the tiled file."""
    data = decompress(MBP1.read_bytes())
    hl = 8 + struct.unpack_from("<I", data, 4)[0]
    body = np.frombuffer(data[hl:], np.dtype((np.void, 80)))
    tiles = -(-n // len(body))
    view = np.frombuffer(data[hl:], np.dtype({"names": ["ts_event", "ts_recv"], "formats": ["<u8", "<u8"],
                                              "offsets": [8, 32], "itemsize": 80}))
    span = int(view["ts_recv"].max() - view["ts_event"].min()) + 1
    out = np.empty(tiles * len(body), body.dtype)
    for t in range(tiles):
        out[t * len(body):(t + 1) * len(body)] = body
    tv = out.view(np.uint8).reshape(-1, 80)
    shift = (np.arange(len(out), dtype=np.uint64) // len(body)) * np.uint64(span)
    for off in (8, 32):
        col = tv[:, off:off + 8].copy().view("<u8").ravel() + shift
        tv[:, off:off + 8] = col.view(np.uint8).reshape(-1, 8)
    out = out[:n]
    iid = struct.unpack_from("<I", data, hl + 4)[0]
    return data[:hl] + out.tobytes(), n, iid


def best(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        gc.collect()
        gc.disable()
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
        gc.enable()
    return min(times)


def worker_path(data: bytes, iid: int, instance: str, repeats: int) -> tuple[float, int]:
    """Best time of the worker path over ``repeats`` runs (plus a warm-up), each into fresh rings
    (the persist queue holds a whole run: nothing reads it here). Returns (seconds, records)."""
    import shutil

    from dm._dbn import DbnConverter
    from dm._ring import ChannelWriter, Fanout, PersistQueue
    from dm.databento._live import LiveTracker
    from dm.records import LAYOUT_HASH

    cap = 1 << max(24, (len(data) * 3).bit_length())
    times, n = [], 0
    for rep in range(repeats + 1):
        spool = tempfile.mkdtemp(prefix="dm-bench-spool-")
        q = PersistQueue(f"/dm.{instance}.bench{rep}.persist", cap, LAYOUT_HASH, spool)
        ch = ChannelWriter(f"/dm.{instance}.GLBX.MDP3.ESU4", 1 << 26, LAYOUT_HASH)
        fan = Fanout(q)
        fan.add_channel(7, ch)
        gc.collect()
        gc.disable()
        t0 = time.perf_counter()
        conv = DbnConverter(messages=True)
        tr = LiveTracker()
        tr.idmap[iid] = 7
        tr.invalidate()
        n = 0
        for i in range(0, len(data), READ):
            out = conv.feed(data[i:i + READ])
            if out:
                buf = bytearray(out)
                k = tr.process(buf)
                del buf[k:]
                n += fan.publish(buf)
        dt = time.perf_counter() - t0
        gc.enable()
        spilled = q.records_spooled
        ch.close(unlink=True)
        q.close()
        for name in (f"/dev/shm/dm.{instance}.bench{rep}.persist",):
            try:
                os.unlink(name)
            except OSError:
                pass
        shutil.rmtree(spool, ignore_errors=True)
        assert spilled == 0, "persist queue spilled: the bench would measure the disk"
        if rep:
            times.append(dt)
    return min(times), n


def tcp_run(data: bytes, n: int, quick: bool) -> tuple[float, float]:
    """Records/s of one session (connect → FIN: handshake, the fake's planning, the stream) and
    of its stream (first read → last read): fake gateway process → worker's run_connection."""
    from dm.config import parse
    from dm.databento.live import DatabentoLiveProvider

    tmp = Path(tempfile.mkdtemp(prefix="dm-bench-live-"))
    (tmp / "data").mkdir()
    (tmp / "data" / "bench.dbn").write_bytes(data)
    ready = tmp / "ready.json"
    env = dict(os.environ, DATABENTO_API_KEY=KEY)
    gw = subprocess.Popen([sys.executable, "-m", "dm", "fake-databento-live", "--data", str(tmp / "data"),
                           "--close-at-end", "--chunk-bytes", str(1 << 18), "--ready-file", str(ready)],
                          cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    instance = "b" + uuid.uuid4().hex[:8]
    try:
        deadline = time.monotonic() + 120
        while not ready.exists():
            if gw.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("fake live gateway did not start")
            time.sleep(0.05)
        addr = json.loads(ready.read_text())["address"]
        cap = 1 << max(24, (len(data) * 3).bit_length())
        cfg = parse({"dm": {"instance": instance, "run_dir": str(tmp / "run")}, "storage": {"url": f"sqlite:///{tmp}/x.sqlite"},
                     "shm": {"registry": f"/dm.reg.{instance}", "persist_bytes": cap, "channel_bytes": 1 << 26,
                             "spool_dir": str(tmp / "spool")},
                     "providers": {"cme": {"kind": "databento", "ws_url": addr, "symbols": ["ESU4"], "schemas": ["mbp-1"],
                                           "dataset": "GLBX.MDP3", "dead_letter": str(tmp / "dl.jsonl")}}}, env={})
        os.environ["DATABENTO_API_KEY"] = KEY
        prov = DatabentoLiveProvider(cfg, cfg.providers["cme"])
        prov.key = KEY
        prov.venue_symbols = {"ESU4": "ESU4"}
        prov.instrument_ids = {"ESU4": 7}
        prov.make_codec()
        prov.open_rings()
        try:
            gc.collect()
            gc.disable()
            t0 = time.perf_counter()
            asyncio.run(prov.run_connection())
            dt = time.perf_counter() - t0
            gc.enable()
            assert prov.records == 2 * n, (prov.records, n)
            stream_s = (prov.last_frame_ns - prov.first_frame_ns) / 1e9
        finally:
            prov.close_rings()
            try:
                os.unlink(f"/dev/shm/dm.{instance}.cme.persist")
                os.unlink(f"/dev/shm/dm.reg.{instance}")
            except OSError:
                pass
        return n / dt, n / max(stream_s, 1e-9)
    finally:
        gw.terminate()
        gw.wait(10)
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)


def run(quick: bool = False) -> dict:
    import databento as db
    import databento_dbn as dbn

    n = 200_000 if quick else 2_000_000
    repeats = 3 if quick else 5
    data, n, iid = stream(n)
    instance = "b" + uuid.uuid4().hex[:8]
    t_worker, published = worker_path(data, iid, instance, repeats)
    assert published == 2 * n, (published, n)  # BBO + MBP_EVENT per DBN record

    def live_client():
        dec = dbn.DBNDecoder(ts_out=False)
        k = 0
        for i in range(0, len(data), READ):
            dec.write(data[i:i + READ])
            k += len(dec.decode())
        return k

    t_client = best(live_client, repeats)

    def dbnstore():
        return len(db.DBNStore.from_bytes(data).to_ndarray())

    t_store = best(dbnstore, repeats)
    sys.path.insert(0, str(HERE))
    from bench_dbn import baseline as decode_and_pack

    t_pack = best(lambda: decode_and_pack(data), repeats)
    res = {
        "dbn_live.records": float(n),
        "dbn_live.worker_path.records_per_s": n / t_worker,
        "dbn_live.baseline_live_client_decode.records_per_s": n / t_client,
        "dbn_live.baseline_live_client_pack.records_per_s": n / t_pack,
        "dbn_live.baseline_dbnstore_ndarray.records_per_s": n / t_store,
        "dbn_live.worker_path.vs_live_client_pack": t_pack / t_worker,
        "dbn_live.worker_path.vs_live_client_decode": t_client / t_worker,
        "dbn_live.worker_path.vs_dbnstore_ndarray": t_store / t_worker,
    }
    try:
        session, stream_rate = tcp_run(data, n, quick)
        res["dbn_live.tcp.session.records_per_s"] = session
        res["dbn_live.tcp.stream.records_per_s"] = stream_rate
    except Exception as e:  # the socket run must not hide the in-process numbers
        print(f"   tcp run failed: {e!r}", flush=True)
    return res


def main() -> None:
    res = run(quick="--quick" in sys.argv)
    width = max(len(k) for k in res)
    print(f"{'metric':<{width}}  value")
    for k, v in res.items():
        print(f"{k:<{width}}  {v:>16,.2f}")
    print(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
