"""Venue book checksums over recorded sessions: what checking every update's checksum costs.

Kraken v1 ("Book Checksum": CRC32 of the top 10 asks and bids as decimal text without '.' and
leading zeros; data/kraken/KRAKEN-c197c0.0, 14,496 updates of 10 pairs at depth 1000) and OKX v5
("Order book channel" → "Checksum": CRC32 of the interleaved top 25 ``px:sz`` texts;
data/okx/2022-02-27, 2,048 updates of 9 instruments). Each session is replayed from its
snapshots, update after update, into ``L2Book``s; every update's checksum is computed and must
equal the venue's (asserted). Per update, the checksum's cost is (pass − the same pass applying
updates only) / updates, for:

* ``python``: the levels → strings → ``zlib.crc32`` (the obvious alternative);
* ``render``: dm's Cython rendering every level from the book, then dm's CRC (``text=None``);
* ``level_text``: with the book's ``dm._leveltext.LevelText`` (each level rendered once, copied
  after);
* ``worker``: what the worker's C frame path does (``dm._feed``): ``level_text``, and no
  rendering at all when the update left the top levels alone (``L2Book.touched``) since the last
  matching checksum (``unchanged_share``: the share of updates where that holds).

And the bare CRC-32 on the checksum texts: dm's (``dm/dm_crc32.h``, PCLMULQDQ folding) against
``zlib.crc32`` (and ``isal.isal_zlib.crc32`` when the ``isal`` package is installed).

    python bench/bench_checksum.py [--quick]

Keys ``checksum.<venue>.<variant>.ns_per_update``, ``checksum.<venue>.speedup_vs_python``
(python / worker), ``checksum.<venue>.unchanged_share``, ``checksum.<venue>.text_bytes``,
``checksum.crc32_{dm,zlib,isal}.ns_per_call``, ``checksum.crc32_dm_vs_zlib``; and, kept from the
former bench_okx_checksum, ``okx_checksum.{cython,python}.ns_per_book`` (one book, rendered in
full), ``okx_checksum.speedup_vs_python``, ``okx_checksum.crc32_{dm,zlib}.ns_per_call``,
``okx_checksum.crc32_dm_vs_zlib``, ``okx_checksum.text_bytes``. One core; gc off while timing;
best of repeats.
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

from dm import codec_ref as R  # noqa: E402
from dm._book import L2Book  # noqa: E402
from dm._leveltext import LevelText  # noqa: E402
from dm.errors import UnknownInstrumentError  # noqa: E402
from dm.records import SIDE_ASK, SIDE_BID  # noqa: E402

DATA = HERE.parent / "data"
KRAKEN = DATA / "kraken/KRAKEN-c197c0.0"
OKX = DATA / "okx/2022-02-27/OKX.ws.1.0"
OKX_IDS = {"PROPS-ETH": 1, "ZEN-USDT": 2, "UNI-USD-SWAP": 3, "BTC-USD-220325-40000-C": 4,
           "ETH-USD-220228-3000-C": 5, "ETH-USD-220325-8800-P": 6, "ETH-USD-220429-1900-P": 7,
           "ETH-USD-220624-12000-P": 8, "ETH-USD-220624-20000-C": 9}


# ------------------------------------------------------------------ the sessions

def kraken_session():
    """``(snapshots, updates, params)``: snapshots ``[(iid, records)]``, updates ``[(iid, records,
    checksum)]`` in session order, params ``{iid: (price_decimals, size_decimals)}``."""
    from dm.venues.kraken._codec import KrakenCodec
    from dm.venues.kraken.booksync import decimals_of

    pairs = {}
    snaps, updates, params = [], [], {}
    c = None
    for kind, _, ts, text in R.iter_recording(KRAKEN):
        msg = json.loads(text)
        if not isinstance(msg, list) or len(msg) < 4:
            continue
        pair = msg[-1]
        if pair not in pairs:
            pairs[pair] = 200 + len(pairs)
            c = KrakenCodec(1002, pairs)
        c.decode(text, ts)
        iid = c.instrument_id
        recs = bytes(c.output())
        first = msg[1]
        if "as" in first or "bs" in first:
            lv = (first.get("as") or first.get("bs"))[0]
            params[iid] = (decimals_of(lv[0]), decimals_of(lv[1]))
            snaps.append((iid, recs))
        elif c.checksum >= 0:
            updates.append((iid, recs, c.checksum))
    return snaps, updates, params


def okx_session():
    from dm.venues.okx._codec import OkxCodec

    c = OkxCodec(1006, OKX_IDS)
    snaps, updates = [], []
    for kind, _, ts, text in R.iter_recording(OKX):
        if b'"books-l2-tbt"' not in text[:200] or b'"data"' not in text:
            continue
        try:
            c.decode(text, ts)
        except UnknownInstrumentError:          # ELON-USDT: tickSz 1e-11 does not fit 1e-9
            continue
        recs = bytes(c.output())
        if b'"action":"snapshot"' in text:
            snaps.append((c.instrument_id, recs))
        else:
            updates.append((c.instrument_id, recs, c.checksum & 0xFFFFFFFF))
    return snaps, updates, {iid: (9,) for iid in OKX_IDS.values()}


# ------------------------------------------------------------------ checksum functions

def _kraken_py(book, params) -> int:
    pd, sd = params
    parts = []
    for side in (SIDE_ASK, SIDE_BID):
        for px, sz in book.levels(side, 10):
            parts.append(str(px // 10 ** (9 - pd)) if px else "")
            parts.append(str(sz // 10 ** (9 - sd)) if sz else "")
    return zlib.crc32("".join(p.lstrip("0") for p in parts).encode())


def _okx_fmt(v: int, dp: int) -> str:
    s = str(v).rjust(dp + 1, "0")
    i, f = s[:-dp], s[-dp:].rstrip("0")
    return f"{i}.{f}" if f else i


def _okx_py(book, dp: int = 9) -> int:
    b, a = book.levels(SIDE_BID, 25), book.levels(SIDE_ASK, 25)
    parts = []
    for i in range(max(len(b), len(a))):
        if i < len(b):
            parts += (_okx_fmt(b[i][0], 9), _okx_fmt(b[i][1], dp))
        if i < len(a):
            parts += (_okx_fmt(a[i][0], 9), _okx_fmt(a[i][1], dp))
    return zlib.crc32(":".join(parts).encode())


def venues():
    from dm.venues.kraken._checksum import CHECKSUM_DEPTH as KD, KrakenChecksum, book_checksum as kc
    from dm.venues.okx._checksum import CHECKSUM_DEPTH as OD, OkxChecksum, book_checksum as oc

    # (session, depth, checksum depth, python, book_checksum, the worker's FastChecksum per book)
    return {
        "kraken": (kraken_session, 1000, KD, _kraken_py, lambda b, p, t: kc(b, p[0], p[1], t),
                   lambda p: KrakenChecksum(p[0], p[1], LevelText())),
        "okx": (okx_session, 400, OD, lambda b, p: _okx_py(b), lambda b, p, t: oc(b, p[0], t),
                lambda p: OkxChecksum(p[0], LevelText())),
    }


def replay(session, depth: int, k: int, variant: str, fn, pyfn, fast=None):
    """One pass over the session; returns (seconds, unchanged updates)."""
    snaps, updates, params = session
    books = {}
    for iid, recs in snaps:
        b = books.setdefault(iid, L2Book(iid, 1, depth))
        b.apply(recs)
    texts = {iid: LevelText() for iid in books}
    checkers = {iid: fast(params[iid]) for iid in books} if fast is not None else {}
    memo = {}
    unchanged = 0
    t0 = time.perf_counter_ns()
    for iid, recs, want in updates:
        b = books[iid]
        v0 = b.version
        b.apply(recs)
        if variant == "apply":
            continue
        if variant == "python":
            got = pyfn(b, params[iid])
        elif variant == "render":
            got = fn(b, params[iid], None)
        elif variant == "level_text":
            got = fn(b, params[iid], texts[iid])
        else:                                   # worker: dm._feed's rule, then the book's FastChecksum
            m = memo.get(iid)
            if m is not None and m[0] == v0 and b.touched >= k and m[1] == want:
                memo[iid] = (b.version, want)
                unchanged += 1
                continue
            if not checkers[iid].check(b, want):
                raise AssertionError(f"worker: checksum != venue {want} (instrument {iid})")
            memo[iid] = (b.version, want)
            continue
        if got != want:
            raise AssertionError(f"{variant}: checksum {got} != venue {want} (instrument {iid})")
    return (time.perf_counter_ns() - t0) / 1e9, unchanged


def _best(fn, repeats: int):
    best = None
    for _ in range(repeats):
        r = fn()
        if best is None or r[0] < best[0]:
            best = r
    return best


def _crc_calls(f, texts, n: int, repeats: int) -> float:
    def once():
        t0 = time.perf_counter_ns()
        for _ in range(n // len(texts)):
            for t in texts:
                f(t)
        return (time.perf_counter_ns() - t0) / (n // len(texts) * len(texts)), 0
    return _best(once, repeats)[0]


def run(quick: bool = False) -> dict[str, float]:
    from dm.venues.okx._checksum import book_checksum, checksum_text, crc32, crc32_folds

    repeats = 2 if quick else 5
    out: dict[str, float] = {}
    gc.collect()
    gc.disable()
    try:
        for venue, (load, depth, k, pyfn, fn, fast) in venues().items():
            session = load()
            n = len(session[1])
            base = _best(lambda: replay(session, depth, k, "apply", fn, pyfn), repeats)[0]
            for variant in ("python", "render", "level_text", "worker"):
                t, unchanged = _best(lambda: replay(session, depth, k, variant, fn, pyfn, fast),
                                     max(1, repeats // 2) if variant == "python" else repeats)
                out[f"checksum.{venue}.{variant}.ns_per_update"] = max(t - base, 0.0) / n * 1e9
                if variant == "worker":
                    out[f"checksum.{venue}.unchanged_share"] = unchanged / n
            out[f"checksum.{venue}.updates"] = float(n)
            out[f"checksum.{venue}.speedup_vs_python"] = (out[f"checksum.{venue}.python.ns_per_update"]
                                                          / max(out[f"checksum.{venue}.worker.ns_per_update"], 1e-9))

        # one OKX book rendered in full (the former bench_okx_checksum) and the bare CRC
        snaps, _, _ = okx_session()
        bks = []
        for iid, recs in snaps:
            if iid in (2, 3) and iid not in [b.instrument_id for b in bks]:
                b = L2Book(iid, 1, 400)
                b.apply(recs)
                bks.append(b)
        for b in bks:
            assert book_checksum(b, 9) == _okx_py(b) == zlib.crc32(checksum_text(b, 9))
        texts = [checksum_text(b, 9) for b in bks]
        calls = 4000 if quick else 40000

        def per_book(f, m):
            def once():
                t0 = time.perf_counter_ns()
                for _ in range(m // len(bks)):
                    for b in bks:
                        f(b)
                return (time.perf_counter_ns() - t0) / (m // len(bks) * len(bks)), 0
            return _best(once, repeats)[0]
        out["okx_checksum.cython.ns_per_book"] = per_book(lambda b: book_checksum(b, 9), calls)
        out["okx_checksum.python.ns_per_book"] = per_book(_okx_py, max(calls // 20, 200))
        out["okx_checksum.speedup_vs_python"] = out["okx_checksum.python.ns_per_book"] / out["okx_checksum.cython.ns_per_book"]
        out["okx_checksum.text_bytes"] = float(sum(map(len, texts)) / len(texts))
        out["checksum.crc32_dm.ns_per_call"] = _crc_calls(crc32, texts, calls, repeats)
        out["checksum.crc32_zlib.ns_per_call"] = _crc_calls(zlib.crc32, texts, calls, repeats)
        try:
            from isal import isal_zlib
        except ImportError:
            pass
        else:
            assert all(isal_zlib.crc32(t) == zlib.crc32(t) for t in texts)
            out["checksum.crc32_isal.ns_per_call"] = _crc_calls(isal_zlib.crc32, texts, calls, repeats)
    finally:
        gc.enable()
    out["checksum.crc32_dm_vs_zlib"] = out["checksum.crc32_zlib.ns_per_call"] / out["checksum.crc32_dm.ns_per_call"]
    out["checksum.crc32_folds"] = float(crc32_folds())
    out["okx_checksum.crc32_dm.ns_per_call"] = out["checksum.crc32_dm.ns_per_call"]
    out["okx_checksum.crc32_zlib.ns_per_call"] = out["checksum.crc32_zlib.ns_per_call"]
    out["okx_checksum.crc32_dm_vs_zlib"] = out["checksum.crc32_dm_vs_zlib"]
    return out


if __name__ == "__main__":
    res = run(quick="--quick" in sys.argv)
    width = max(map(len, res))
    for key, v in res.items():
        print(f"{key:<{width}}  {v:>12,.3f}")
