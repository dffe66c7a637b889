"""DBN → dm records throughput: ``dm._dbn.DbnConverter.feed`` on the real Databento files
(records repeated to get enough of them) against the obvious alternative, Databento's own
``databento_dbn.DBNDecoder`` (Rust) + Python ``struct.pack`` into the same dm records.

    python bench/bench_dbn.py [--quick]

Keys: ``dbn.convert.records_per_s`` (headline: the mbp-1 stream in one ``feed`` as ``read_dbn``
does, DBN records in per second; bound by first-touch page faults of the ~2.7x larger output),
``dbn.convert_stream_64k.records_per_s`` (same stream fed in 64 KiB chunks, the live shape),
``dbn.baseline_databento_pack.records_per_s``, ``dbn.convert.speedup_vs_databento_pack``; per
schema ``dbn.<schema>.convert.records_per_s`` / ``.baseline.records_per_s`` / ``.speedup``, and
``dbn.baseline_databento_decode_only.records_per_s`` (decoding to Python objects, no packing).
One core; gc disabled while timing; best of several repeats after a warm-up.
"""
from __future__ import annotations

import gc
import struct
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

import databento_dbn as dbn  # noqa: E402

from dm._dbn import DbnConverter  # noqa: E402
from dm.dbn import decompress  # noqa: E402

DATA = HERE.parent / "data" / "databento"
SOURCES = {
    "trades": DATA / "glbx-mdp3-esu4-nqu4-20240701" / "futures_trades_2024-07-01T23-58_2024-07-02T00-02.dbn.zst",
    "mbp-1": DATA / "glbx-mdp3-esu4-nqu4-20240701" / "futures_mbp-1_2024-07-01T23-58_2024-07-02T00-02.dbn.zst",
    "mbp-10": DATA / "databento-python" / "GLBX.MDP3" / "test_data.mbp-10.dbn.zst",
    "ohlcv-1m": DATA / "glbx-mdp3-esu4-nqu4-20240701" / "futures_ohlcv-1m_2024-07-01T23-40_2024-07-02T00-10.dbn.zst",
}
SCALE = 1  # DBN sizes stay native integer counts in dm records (size_precision 0)

TRADE = struct.Struct("<BBHIQQqQQQBB6x")
BBO = struct.Struct("<BBHIQQqqQQQIIB7x")
DEPTH_HEAD = struct.Struct("<BBHIQQQBBB5x")
LEVEL = struct.Struct("<qqQQ")
EVENT = struct.Struct("<BBHIQQqQQiBBBB10I10I")
BAR = struct.Struct("<BBHIQqqqqQIIBB6x")  # layout v2: count, flags, size_precision
UNDEF = (1 << 63) - 1
INTERVAL = {0x20: 1, 0x21: 60, 0x22: 3600, 0x23: 86400}
Z10 = (0,) * 10


def _stream(path: Path, n_records: int) -> tuple[bytes, int]:
    """The file's metadata + its records repeated until >= n_records. Returns (bytes, count)."""
    data = decompress(path.read_bytes())
    hl = 8 + struct.unpack_from("<I", data, 4)[0]
    body = data[hl:]
    per = 0
    off = 0
    while off < len(body):
        off += body[off] * 4
        per += 1
    reps = max(1, -(-n_records // per))
    return data[:hl] + body * reps, per * reps


def _event(r, bid_ct, ask_ct) -> bytes:
    return EVENT.pack(34, 0xE5, r.publisher_id, r.instrument_id, r.ts_event, r.ts_recv, r.price,
                      r.size * SCALE, r.sequence, r.ts_in_delta, ord(r.action.value), ord(r.side.value),
                      int(r.flags), r.depth, *bid_ct, *ask_ct)


def baseline(data: bytes) -> bytes:
    """databento_dbn decodes; Python packs the same dm records dm._dbn writes."""
    dec = dbn.DBNDecoder()
    dec.write(data)
    out = []
    append = out.append
    for r in dec.decode()[1:]:
        rt = r.rtype
        if rt == 0x00:
            append(TRADE.pack(16, 0xE0, r.publisher_id, r.instrument_id, r.ts_event, r.ts_recv, r.price,
                              r.size * SCALE, 0, r.sequence, ord(r.side.value), int(r.flags)))
            append(_event(r, Z10, Z10))
        elif rt == 0x01:
            lv = r.levels[0]
            append(BBO.pack(20, 0xE1, r.publisher_id, r.instrument_id, r.ts_event, r.ts_recv, lv.bid_px,
                            lv.ask_px, lv.bid_sz * SCALE, lv.ask_sz * SCALE, r.sequence, lv.bid_ct,
                            lv.ask_ct, int(r.flags)))
            append(_event(r, (lv.bid_ct,) + Z10[1:], (lv.ask_ct,) + Z10[1:]))
        elif rt == 0x0A:
            lvs = r.levels
            nb = next((i for i, lv in enumerate(lvs) if lv.bid_px == UNDEF), 10)
            na = next((i for i, lv in enumerate(lvs) if lv.ask_px == UNDEF), 10)
            append(DEPTH_HEAD.pack(90, 0xE2, r.publisher_id, r.instrument_id, r.ts_event, r.ts_recv,
                                   r.sequence, int(r.flags), nb, na))
            for lv in lvs:
                append(LEVEL.pack(lv.bid_px, lv.ask_px, lv.bid_sz * SCALE, lv.ask_sz * SCALE))
            append(_event(r, [lv.bid_ct for lv in lvs], [lv.ask_ct for lv in lvs]))
        else:
            append(BAR.pack(18, 0xE4, r.publisher_id, r.instrument_id, r.ts_event, r.open, r.high, r.low,
                            r.close, r.volume * SCALE, INTERVAL[int(rt)], 0, 0, 0))
    return b"".join(out)


def decode_only(data: bytes) -> int:
    dec = dbn.DBNDecoder()
    dec.write(data)
    return len(dec.decode())


def convert(data: bytes) -> bytes:
    """What ``read_dbn`` does after decompression: the whole stream in one ``feed``."""
    return DbnConverter().feed(data)


def convert_stream(data: bytes, chunk: int = 65536) -> int:
    """The live-gateway shape: the stream fed in 64 KiB chunks (records split across chunks)."""
    c = DbnConverter()
    mv = memoryview(data)
    n = 0
    for i in range(0, len(data), chunk):
        n += len(c.feed(mv[i:i + chunk]))
    c.finish()
    return n


def _best_s(fn, data, repeats: int) -> float:
    fn(data)                                    # warm-up
    best = float("inf")
    gc_was = gc.isenabled()
    gc.disable()
    try:
        for _ in range(repeats):
            t = time.perf_counter_ns()
            fn(data)
            best = min(best, time.perf_counter_ns() - t)
    finally:
        if gc_was:
            gc.enable()
    return best / 1e9


def run(quick: bool = False) -> dict[str, float]:
    n_fast = 50_000 if quick else 1_000_000
    n_slow = 10_000 if quick else 100_000
    repeats = 3 if quick else 5
    out: dict[str, float] = {}
    for schema, path in SOURCES.items():
        fast, nf = _stream(path, n_fast)
        slow, ns = _stream(path, n_slow)
        assert convert(slow) == baseline(slow), schema        # same records, or the race is void
        ours = nf / _best_s(convert, fast, repeats)
        theirs = ns / _best_s(baseline, slow, repeats)
        out[f"dbn.{schema}.convert.records_per_s"] = ours
        out[f"dbn.{schema}.convert_stream_64k.records_per_s"] = nf / _best_s(convert_stream, fast, repeats)
        out[f"dbn.{schema}.baseline.records_per_s"] = theirs
        out[f"dbn.{schema}.speedup"] = ours / theirs
        if schema == "mbp-1":
            out["dbn.convert.records_per_s"] = ours
            out["dbn.convert_stream_64k.records_per_s"] = out[f"dbn.{schema}.convert_stream_64k.records_per_s"]
            out["dbn.convert.mb_per_s"] = len(fast) / _best_s(convert, fast, repeats) / 1e6
            out["dbn.baseline_databento_pack.records_per_s"] = theirs
            out["dbn.convert.speedup_vs_databento_pack"] = ours / theirs
            out["dbn.baseline_databento_decode_only.records_per_s"] = ns / _best_s(decode_only, slow, repeats)
    return out


def main() -> None:
    res = run(quick="--quick" in sys.argv)
    width = max(map(len, res))
    for k, v in res.items():
        print(f"{k:<{width}}  {v:>16,.1f}")


if __name__ == "__main__":
    main()
