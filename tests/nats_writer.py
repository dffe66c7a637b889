"""A real producer process for the NATS tests and bench: decodes a real Binance recording
(data/binance/BINANCE-b38f7c.0: aggTrade + bookTicker frames) with dm's Cython codec and writes
the records to one shm channel ring per symbol, registered in a shm registry like a worker.

    python tests/nats_writer.py INSTANCE REGISTRY --ring-bytes N [--repeat K] [--rate R]
        [--go-file F] [--stop-file F] [--symbols A,B]

Writes the recording ``--repeat`` times (records of repeat k get ts_event shifted by k ns so
every record is distinct), at most ``--rate`` records/s (0: as fast as possible), starting once
``--go-file`` exists; then prints the per-symbol record counts as JSON on stdout, keeps the
rings open until ``--stop-file`` exists (or at once without it), closes them and exits.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from dm.venues.binance._codec import BinanceCodec  # noqa: E402
from dm._ring import ChannelWriter, Fanout, now_ns  # noqa: E402
from dm.records import LAYOUT_HASH  # noqa: E402
from dm.registry import Registry  # noqa: E402

RECORDING = ROOT / "data/binance/BINANCE-b38f7c.0"
VENUE = {"BTCAUD": "BTCAUD", "MANAUSD": "MANAUSDT", "ETHBRL": "ETHBRL", "DENTUSD": "DENTUSDT", "ZILUSD": "ZILUSDT",
         "RENBTCETH": "RENBTCETH", "BTCSTUSD": "BTCSTUSDT", "QTUMETH": "QTUMETH", "AXSBNB": "AXSBNB", "NEOUSDC": "NEOUSDC"}


def decoded_records(symbols) -> list[bytes]:
    """Every aggTrade/bookTicker record of the recording for ``symbols``, in recorded order
    (one bytes object per frame's output)."""
    iids = {VENUE[s]: 100 + i for i, s in enumerate(sorted(VENUE)) if s in symbols}
    codec = BinanceCodec(1001, iids)
    out = []
    for line in RECORDING.read_bytes().splitlines():
        if not line or line.startswith((b"configuration:", b"wss://", b"http")):
            continue
        ts, text = line.split(b": ", 1)
        if b"@aggTrade" not in text[:80] and b"@bookTicker" not in text[:80]:
            continue
        try:
            n = codec.decode(text, int(float(ts) * 1e9))
        except Exception:  # noqa: BLE001 - not a frame for these symbols
            continue
        if n:
            out.append(bytes(codec.output()))
    return out


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("instance")
    ap.add_argument("registry")
    ap.add_argument("--ring-bytes", type=int, default=1 << 22)
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--rate", type=float, default=0.0)
    ap.add_argument("--go-file", default=None)
    ap.add_argument("--stop-file", default=None)
    ap.add_argument("--symbols", default=",".join(sorted(VENUE)))
    a = ap.parse_args()
    symbols = a.symbols.split(",")
    frames = decoded_records(symbols)
    writers, fan = {}, Fanout(None)
    iid_sym = {100 + i: s for i, s in enumerate(sorted(VENUE)) if s in symbols}
    for iid, s in iid_sym.items():
        writers[s] = ChannelWriter(f"/dm.{a.instance}.BINANCE.{s}", a.ring_bytes, LAYOUT_HASH)
        fan.add_channel(iid, writers[s])
    slot = Registry(a.registry).register(a.instance, "writer", "BINANCE", f"/dm.{a.instance}.BINANCE.", sorted(writers))
    print("ready", flush=True)
    if a.go_file:
        while not os.path.exists(a.go_file):
            time.sleep(0.005)
    t0 = time.monotonic()
    n = 0
    last_beat = time.monotonic()
    for k in range(a.repeat):
        for buf in frames:
            if k:
                arr = np.frombuffer(buf, np.uint8).copy()
                # shift ts_event of every record (records are 8-byte aligned; header at each record start)
                off = 0
                while off < len(arr):
                    ln = int(arr[off]) * 4
                    ts = int.from_bytes(arr[off + 8:off + 16].tobytes(), "little") + k
                    arr[off + 8:off + 16] = np.frombuffer(ts.to_bytes(8, "little"), np.uint8)
                    off += ln
                buf = arr.tobytes()
            n += fan.publish(buf)
            if a.rate:
                while n > a.rate * (time.monotonic() - t0):
                    time.sleep(0.0005)
            if time.monotonic() - last_beat > 0.5:
                for w in writers.values():
                    w.heartbeat()
                slot.heartbeat()
                last_beat = time.monotonic()
    print(json.dumps({s: w.records_written for s, w in writers.items()}), flush=True)
    if a.stop_file:
        while not os.path.exists(a.stop_file):
            for w in writers.values():
                w.heartbeat()
            slot.heartbeat()
            time.sleep(0.05)
    for w in writers.values():
        w.close(unlink=True)
    slot.release()
    return 0


if __name__ == "__main__":
    sys.exit(main())
