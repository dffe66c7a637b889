"""OKX v5 book checksum ("Order book channel" → "Checksum": CRC32 over the interleaved top 25
``bid px:sz:ask px:sz`` strings): dm's Cython (``dm.venues.okx._checksum.book_checksum``: text
rendered from the L2Book's fixed-point levels + slice-by-8 CRC32) against the Python alternative
on the same book (``L2Book.levels(side, 25)`` + shortest-decimal formatting + ``":".join`` +
``zlib.crc32``), and the bare CRC32 on the same checksum text: dm links zlib's ``crc32`` and calls
it from C (``dm.venues.okx._checksum.crc32``) vs ``zlib.crc32`` (a hand-rolled slice-by-8 CRC
measured 0.82-0.87x zlib's and was dropped).
Books: UNI-USD-SWAP and ZEN-USDT after their recorded snapshots (data/okx/2022-02-27), sizes at
1e-9 as the worker holds them.

    python bench/bench_okx_checksum.py [--quick]

Keys: ``okx_checksum.{cython,python}.ns_per_book``, ``okx_checksum.speedup_vs_python``,
``okx_checksum.crc32_{dm,zlib}.ns_per_call``, ``okx_checksum.crc32_dm_vs_zlib`` (~1: the same
code), ``okx_checksum.text_bytes``. One core; gc disabled while timing; best of repeats.
"""
from __future__ import annotations

import gc
import json
import sys
import time
import zlib
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from dm.records import SIDE_ASK, SIDE_BID  # noqa: E402

REC = HERE.parent / "data/okx/2022-02-27/OKX.ws.1.0"


def books():
    from dm.venues.okx._codec import OkxCodec
    from dm.venues.okx.booksync import OkxBookSync

    c = OkxCodec(1006, {"UNI-USD-SWAP": 1, "ZEN-USDT": 2})
    out = {}
    for line in REC.read_text().split("\n"):
        if '"action":"snapshot"' in line and ("UNI-USD-SWAP" in line[:120] or "ZEN-USDT" in line[:120]):
            c.decode(line.partition(": ")[2], 1)
            s = OkxBookSync(c.instrument_id, 1006, 9)
            act = s.on_snapshot(bytes(c.output()), c.checksum)
            assert act.gap is None
            out.setdefault(c.instrument_id, s.book)
    return list(out.values())


def _fmt(v: int, dp: int) -> str:
    s = str(v).rjust(dp + 1, "0")
    i, f = s[:-dp], s[-dp:].rstrip("0")
    return f"{i}.{f}" if f else i


def python_checksum(book, dp: int = 9) -> int:
    b, a = book.levels(SIDE_BID, 25), book.levels(SIDE_ASK, 25)
    parts = []
    for i in range(max(len(b), len(a))):
        if i < len(b):
            parts += (_fmt(b[i][0], 9), _fmt(b[i][1], dp))
        if i < len(a):
            parts += (_fmt(a[i][0], 9), _fmt(a[i][1], dp))
    return zlib.crc32(":".join(parts).encode())


def _best(fn, n: int, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter_ns()
        fn(n)
        best = min(best, (time.perf_counter_ns() - t0) / n)
    return best


def run(quick: bool = False) -> dict[str, float]:
    from dm.venues.okx._checksum import book_checksum, checksum_text, crc32

    bks = books()
    for bk in bks:
        assert book_checksum(bk, 9) == python_checksum(bk) == zlib.crc32(checksum_text(bk, 9))
    texts = [checksum_text(bk, 9) for bk in bks]
    n, repeats = (2000, 3) if quick else (20000, 5)
    out: dict[str, float] = {}
    gc.collect()
    gc.disable()
    try:
        def cy(k):
            for _ in range(k // len(bks)):
                for bk in bks:
                    book_checksum(bk, 9)

        def py(k):
            for _ in range(k // len(bks)):
                for bk in bks:
                    python_checksum(bk)

        def crc_dm(k):
            for _ in range(k // len(texts)):
                for t in texts:
                    crc32(t)

        def crc_zlib(k):
            for _ in range(k // len(texts)):
                for t in texts:
                    zlib.crc32(t)
        out["okx_checksum.cython.ns_per_book"] = _best(cy, n, repeats)
        out["okx_checksum.python.ns_per_book"] = _best(py, max(n // 10, 200), repeats)
        out["okx_checksum.crc32_dm.ns_per_call"] = _best(crc_dm, n, repeats)
        out["okx_checksum.crc32_zlib.ns_per_call"] = _best(crc_zlib, n, repeats)
    finally:
        gc.enable()
    out["okx_checksum.speedup_vs_python"] = out["okx_checksum.python.ns_per_book"] / out["okx_checksum.cython.ns_per_book"]
    out["okx_checksum.crc32_dm_vs_zlib"] = out["okx_checksum.crc32_zlib.ns_per_call"] / out["okx_checksum.crc32_dm.ns_per_call"]
    out["okx_checksum.text_bytes"] = float(sum(map(len, texts)) / len(texts))
    return out


if __name__ == "__main__":
    res = run(quick="--quick" in sys.argv)
    width = max(map(len, res))
    for k, v in res.items():
        print(f"{k:<{width}}  {v:>12,.2f}")
    print(json.dumps(res))
