"""Values that fit real markets (issue 7 items 2-3): sizes at each instrument's own precision
(Binance LOT_SIZE stepSize, Kraken lot_decimals, Kraken Futures contract precision), exact up to
10**15 units and stored exactly; a value that still cannot be represented (a far placeholder
level, Kraken's XBT/CHF ask at 9999999997.00000) costs that value alone: dead-lettered with
instrument and field, the book valid, Kraken's CRC32 checksum still verified.

Real data: the recorded Binance exchangeInfo (SHIBUSDT: stepSize 1.00, maxQty 46116860414.00,
beyond u64 at 1e-9) and DENTUSDT frames (stepSize 1), Kraken book-1000 frames. The XBT/CHF
frame itself is not in data/: the far level is put into a real USDC/GBP snapshot (its own far
ask, 100000.00000000, edited to 9999999997.00000000), everything else as recorded."""
from __future__ import annotations

import json
import zlib
from decimal import Decimal
from pathlib import Path

import numpy as np
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dm import codec_ref as R
from dm._codec import parse_size
from dm.errors import FixedPointError
from dm.providers.base import DeadLetters, dead_letter_values
from dm.records import DTYPES, RType
from dm.records import unpack as _unpack1
from dm.storage import open_storage
from dm.symbology import for_provider, read_recorded_reference
from dm.venues.binance._codec import BinanceCodec
from dm.venues.binance.codec_ref import RefBinanceCodec
from dm.venues.kraken._codec import KrakenCodec
from dm.venues.kraken.booksync import KrakenBookSync
from dm.venues.kraken.codec_ref import RefKrakenCodec
from dm.venues.kraken.provider import rejected_levels, snapshot_decimals
from dm.venues.kraken_futures._codec import KrakenFuturesCodec
from dm.venues.kraken_futures.codec_ref import RefKrakenFuturesCodec

DATA = Path(__file__).resolve().parent.parent / "data"
B38 = DATA / "binance/BINANCE-b38f7c.0"
KRAKEN_BOOK = DATA / "kraken/KRAKEN-c197c0.0"
FAR_ASK = "9999999997.00000000"          # XBT/CHF's placeholder ask (more than i64 at 1e-9)


def ws_frames(path, pred=lambda t: True):
    return [t.decode() for kind, _, _, t in R.iter_recording(path) if kind == "ws" and pred(t.decode())]


def unpack(buf) -> list:
    """Every record of a codec's concatenated output."""
    b, out, i = bytes(buf), [], 0
    while i < len(b):
        out.append(_unpack1(b[i:]))
        i += b[i] * 4
    return out


def decode_both(codec, ref, frame, ts=1):
    n = codec.decode(frame, ts)
    m = ref.decode(frame, ts)
    assert (n, bytes(codec.output())) == (m, ref.output())
    assert codec.value_errors == ref.value_errors and codec.value_error_count == ref.value_error_count
    return n


# ---------------------------------------------------------------- precision from reference data

@pytest.fixture(scope="module")
def binance_sym():
    return for_provider("binance", read_recorded_reference(DATA / "binance/2021-10-12/BINANCE.0")[2], {})


SHIB_SP = 2   # SHIBUSDT in the recorded exchangeInfo: stepSize 1.00, baseAssetPrecision 2


def test_binance_size_precision_from_exchange_info(binance_sym):
    """max(baseAssetPrecision, stepSize decimals): executed quantities are bound by the base
    asset's precision, order quantities by the step."""
    shib = binance_sym.info("SHIBUSDT")
    assert shib.lot_size == Decimal("1") and shib.resolved_size_precision() == SHIB_SP
    assert binance_sym.info("DENTUSDT").lot_size == Decimal("1")
    assert binance_sym.info("BTCUSDT").resolved_size_precision() == 8      # stepSize 0.00001, base 8
    # SHIB's own maxQty does not fit u64 at 1e-9 (the old single scale) but is exact at its own
    with pytest.raises(FixedPointError):
        parse_size("46116860414.00", 9)
    assert parse_size("46116860414.00", SHIB_SP) == 4611686041400
    assert parse_size("1000000000000000", SHIB_SP) == 10**17                # 10**15 units fit


def test_kraken_and_kraken_futures_size_precision_from_reference():
    k = for_provider("kraken", read_recorded_reference(DATA / "kraken/KRAKEN.0")[2], {})
    assert k.info("XBT/USD").resolved_size_precision() == 8                # lot_decimals
    kf = for_provider("kraken_futures", read_recorded_reference(DATA / "kraken_futures/KRAKEN_FUTURES.0")[2], {})
    assert kf.info("PI_XBTUSD").resolved_size_precision() == 0            # whole contracts


# ---------------------------------------------------------------- meme-coin sizes, exact

def _edit(frame: str, **fields) -> str:
    msg = json.loads(frame)
    msg["data"].update(fields)
    return json.dumps(msg, separators=(",", ":"))


def binance_pair(sp: dict[str, int]):
    c, r = BinanceCodec(1001), RefBinanceCodec(1001)
    for i, (s, p) in enumerate(sp.items()):
        c.add_symbol(s, 100 + i, p)
        r.add_symbol(s, 100 + i, p)
    return c, r


@pytest.mark.parametrize("sp", [0, 8])
def test_real_dent_frames_decode_at_their_precision(sp):
    """Every real DENTUSDT aggTrade / depthUpdate (stepSize 1, base precision 8): sizes exact at
    0 (whole tokens) and at 8, the oracle agrees; nothing is rejected."""
    c, r = binance_pair({"DENTUSDT": sp})
    frames = ws_frames(B38, lambda t: '"DENTUSDT"' in t and ("aggTrade" in t or "depthUpdate" in t))
    assert len(frames) > 50
    n_trades = 0
    for f in frames:
        decode_both(c, r, f)
        assert c.value_error_count == 0
        data = json.loads(f)["data"]
        recs = unpack(bytes(c.output()))
        if data["e"] == "aggTrade":
            (t,) = recs
            assert t.size_precision == sp and t.size == int(Decimal(data["q"]).scaleb(sp))
            n_trades += 1
        else:
            want = [int(Decimal(q).scaleb(sp)) for _, q in data["b"] + data["a"]]
            assert [d.size for d in recs] == want and {d.size_precision for d in recs} == {sp}
    assert n_trades > 0


MEME_SIZES = ["46116860414.00000000",          # SHIBUSDT maxQty (recorded exchangeInfo)
              "12000000000.00000000",          # a 12e9 PEPE trade (issue 7 item 1)
              "1000000000000000.00000000"]     # 10**15 units


@pytest.mark.parametrize("qty", MEME_SIZES)
def test_meme_sized_trade_and_levels_exact(qty):
    """A real DENTUSDT aggTrade and depthUpdate with the symbol made SHIBUSDT and a quantity
    edited to a meme-coin size decode exactly at SHIB's precision (1e-9 could not hold them)."""
    c, r = binance_pair({"SHIBUSDT": SHIB_SP})
    agg = next(iter(ws_frames(B38, lambda t: '"DENTUSDT"' in t and "aggTrade" in t)))
    f = _edit(agg, s="SHIBUSDT", q=qty)
    assert decode_both(c, r, f) == 1 and c.value_error_count == 0
    (t,) = unpack(c.output())
    assert (t.size, t.size_precision) == (int(Decimal(qty).scaleb(SHIB_SP)), SHIB_SP)
    assert t.dec("size") == Decimal(qty)
    depth = next(iter(ws_frames(B38, lambda t: '"DENTUSDT"' in t and "depthUpdate" in t)))
    data = json.loads(depth)["data"]
    levels = (data["b"] + data["a"])[:1]
    f = _edit(depth, s="SHIBUSDT", b=[[levels[0][0], qty]], a=[["1.0", qty]])
    assert decode_both(c, r, f) == 2
    recs = unpack(c.output())
    assert [x.size for x in recs] == [int(Decimal(qty).scaleb(SHIB_SP))] * 2
    assert {x.size_precision for x in recs} == {SHIB_SP} and recs[0].dec("size") == Decimal(qty)


def test_meme_sizes_store_exactly(storage_url):
    """TRADE / BOOK_DELTA / BBO records with meme-coin sizes (decoded from edited real frames)
    store and read back exactly, precision byte included, on PostgreSQL (BIGINT) and SQLite."""
    c, r = binance_pair({"SHIBUSDT": SHIB_SP})
    agg = next(iter(ws_frames(B38, lambda t: '"DENTUSDT"' in t and "aggTrade" in t)))
    depth = next(iter(ws_frames(B38, lambda t: '"DENTUSDT"' in t and "depthUpdate" in t)))
    trades, deltas = [], []
    for k, qty in enumerate(MEME_SIZES):
        c.decode(_edit(agg, s="SHIBUSDT", q=qty, a=1000 + k), 1)
        trades.append(bytes(c.output()))
        data = json.loads(depth)["data"]
        c.decode(_edit(depth, s="SHIBUSDT", b=[[data["b"][0][0], qty]], a=[], u=data["u"] + k), 2 + k)
        deltas.append(bytes(c.output()))
    ta = np.frombuffer(b"".join(trades), DTYPES[RType.TRADE])
    da = np.frombuffer(b"".join(deltas), DTYPES[RType.BOOK_DELTA])
    st_ = open_storage(storage_url, migrate=True)
    try:
        got = st_.write({RType.TRADE: ta, RType.BOOK_DELTA: da})
        assert got["trades"] == 3 and got["book_deltas"] == 3
        t = st_.fetch("trades", 100)
        want = sorted(int(Decimal(q).scaleb(SHIB_SP)) for q in MEME_SIZES)
        assert sorted(t["size"].tolist()) == want and set(t["size_precision"].tolist()) == {SHIB_SP}
        d = st_.fetch("book_deltas", 100)
        assert sorted(d["size"].tolist()) == want and set(d["size_precision"].tolist()) == {SHIB_SP}
    finally:
        st_.close()


def test_size_beyond_the_instrument_scale_is_rejected_alone():
    """A size too big for i64 at its precision, or with more digits than its scale: that trade
    alone is dropped and reported; a BBO side with one loses that side only."""
    c, r = binance_pair({"SHIBUSDT": SHIB_SP, "DENTUSDT": 0})
    agg = next(iter(ws_frames(B38, lambda t: '"DENTUSDT"' in t and "aggTrade" in t)))
    for qty, reason in (("99999999999999999999", "out of range"),
                        ("1.5", "more fractional digits than the instrument's size_precision")):
        assert decode_both(c, r, _edit(agg, q=qty)) == 0
        assert c.value_error_count == 1
        iid, field, why, off = c.value_errors[0]
        assert (iid, field, why) == (101, "q", reason)
    bt = next(iter(ws_frames(B38, lambda t: "bookTicker" in t)))
    msg = json.loads(bt)
    msg["data"].update(s="DENTUSDT", B="0.5")
    assert decode_both(c, r, json.dumps(msg)) == 1
    (b,) = unpack(bytes(c.output()))
    assert b.bid_px == R.UNDEF_PRICE and b.bid_sz == 0 and b.ask_sz == int(Decimal(msg["data"]["A"]))


# ---------------------------------------------------------------- Kraken: the far level

def kraken_book_frames(pair: str) -> list[str]:
    return ws_frames(KRAKEN_BOOK, lambda t: t.startswith("[") and t.endswith(f'"{pair}"]') and '"book-' in t)


def with_far_ask(snapshot: str) -> str:
    """The real snapshot with its farthest ask's price replaced by XBT/CHF's placeholder."""
    msg = orjson.loads(snapshot)
    far = msg[1]["as"][-1]
    assert Decimal(far[0]) == Decimal("100000")          # USDC/GBP's own far placeholder ask
    far[0] = FAR_ASK
    return orjson.dumps(msg).decode()


def kraken_sync_run(frames, pair, sp=8):
    codec, ref = KrakenCodec(1002), RefKrakenCodec(1002)
    codec.add_symbol(pair, 7, sp)
    ref.add_symbol(pair, 7, sp)
    sync = KrakenBookSync(7, 1002, depth=1000)
    sync.book.size_precision = sp
    gaps, value_errors = 0, []
    for f in frames:
        decode_both(codec, ref, f)
        rej = rejected_levels(f, codec.size_precision) if codec.value_error_count else ()
        value_errors += codec.value_errors
        if codec.last_kind == R.K["bookSnapshot"]:
            pd, sd = snapshot_decimals(f)
            act = sync.on_snapshot(codec.output(), pd, sd, rej)
        else:
            cs = codec.checksum
            act = sync.on_update(codec.output(), cs if cs >= 0 else None, rej)
        gaps += act.gap is not None
    return sync, gaps, value_errors


def test_far_ask_on_real_frames_costs_one_value_checksums_verify():
    """The real USDC/GBP session with XBT/CHF's far ask in its snapshot: one value rejected (the
    far ask's price, field "as"), every recorded update applied and its CRC32 verified, no gap,
    and the book equals the one built from the unedited frames minus that level."""
    frames = kraken_book_frames("USDC/GBP")
    assert len(frames) > 20
    edited = [with_far_ask(frames[0])] + frames[1:]
    sync, gaps, verrs = kraken_sync_run(edited, "USDC/GBP")
    assert gaps == 0 and sync.synced
    assert [(iid, field, reason) for iid, field, reason, _ in verrs] == [(7, "as", "out of range")]
    n_updates = sum(1 for f in frames[1:] if '"c":"' in f)
    assert sync.stats.checksums_ok == n_updates > 20 and sync.stats.gaps == 0
    assert list(sync.rejected[65].values()) == [(FAR_ASK, "5.00000000")]
    plain, gaps0, _ = kraken_sync_run(frames, "USDC/GBP")
    assert gaps0 == 0
    assert sync.book.levels("B") == plain.book.levels("B")
    assert sync.book.levels("A") == [lv for lv in plain.book.levels("A") if lv[0] != 100000 * 10**9]


def venue_crc(asks: list, bids: list) -> int:
    """Kraken's "Book checksum" computed independently on the venue's text: top 10 asks (lowest
    first) then top 10 bids (highest first), price then volume, '.' removed, leading zeros
    stripped."""
    a = sorted(asks, key=lambda lv: Decimal(lv[0]))[:10]
    b = sorted(bids, key=lambda lv: -Decimal(lv[0]))[:10]
    return zlib.crc32("".join(p.replace(".", "").lstrip("0") + v.replace(".", "").lstrip("0")
                              for p, v, *_ in a + b).encode())


def test_far_ask_inside_the_checksum_window_still_verifies():
    """A thin book (4 real asks + the far ask: inside the top 10 the checksum covers): the
    venue's CRC32 includes the far level's text; dm's book lacks it yet verifies, and deleting it
    later (volume 0) verifies too."""
    snap = orjson.loads(frames0 := kraken_book_frames("USDC/GBP")[0])
    asks = snap[1]["as"][:4] + [[FAR_ASK, "5.00000000", "1611248595.188857"]]
    bids = snap[1]["bs"][:6]
    snap[1] = {"as": asks, "bs": bids}
    t = "1617666500.000000"
    upd1 = [snap[0], {"a": [[asks[0][0], "1.00000000", t]], "c": None}, "book-1000", "USDC/GBP"]
    asks1 = [[asks[0][0], "1.00000000"]] + asks[1:]
    upd1[1]["c"] = str(venue_crc(asks1, bids))
    upd2 = [snap[0], {"a": [[FAR_ASK, "0.00000000", t]], "c": str(venue_crc(asks1[:4], bids))}, "book-1000", "USDC/GBP"]
    frames = [orjson.dumps(m).decode() for m in (snap, upd1, upd2)]
    assert frames0  # the snapshot came from the recording
    sync, gaps, verrs = kraken_sync_run(frames, "USDC/GBP")
    assert gaps == 0 and sync.stats.checksums_ok == 2 and len(verrs) == 2    # snapshot + delete
    assert sync.rejected[65] == {} and sync.book.n_asks == 4
    # without keeping the rejected level the first checksum would have failed
    bare = KrakenBookSync(7, 1002, depth=1000)
    bare.book.size_precision = 8
    c = KrakenCodec(1002)
    c.add_symbol("USDC/GBP", 7, 8)
    c.decode(frames[0], 1)
    bare.on_snapshot(c.output(), 8, 8)
    c.decode(frames[1], 2)
    assert bare.on_update(c.output(), c.checksum).gap is not None


def test_value_errors_are_dead_lettered_with_instrument_and_field(tmp_path):
    """dead_letter_values: one dead letter per rejected value with instrument, symbol, field,
    text and reason; counted on the provider."""
    class P:
        exchange = "KRAKEN"
        value_errors = 0
        _iid_to_symbol = {7: "USDCGBP"}
        dead = DeadLetters(tmp_path / "dl.jsonl", "kraken")

    p = P()
    codec = KrakenCodec(1002)
    codec.add_symbol("USDC/GBP", 7, 8)
    frame = with_far_ask(kraken_book_frames("USDC/GBP")[0])
    codec.decode(frame, 5)
    assert dead_letter_values(p, codec, frame, 5) == 1 and p.value_errors == 1 and p.dead.count == 1
    p.dead.close()
    (line,) = (tmp_path / "dl.jsonl").read_text().splitlines()
    e = json.loads(line)
    assert (e["instrument_id"], e["symbol"], e["field"], e["reason"]) == (7, "USDCGBP", "as", "out of range")
    assert e["text"] == f'"{FAR_ASK}"' and e["kind"] == "FixedPointError" and e["frame"] == frame


# ---------------------------------------------------------------- property: codec vs oracle

PROPS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
size_text = st.one_of(
    st.from_regex(r"[0-9]{1,19}(\.[0-9]{0,12})?", fullmatch=True),
    st.integers(0, 10**16).map(str),
    st.sampled_from(["46116860414.00", "12000000000.00000000", "1000000000000000", "0.00000001", "1e3", "-1"]))
price_text = st.one_of(st.from_regex(r"[0-9]{1,11}(\.[0-9]{0,10})?", fullmatch=True),
                       st.sampled_from([FAR_ASK, "9223372036.854775807", "0.21448000"]))


@PROPS
@given(sp=st.integers(0, 18), px=price_text, q=size_text, levels=st.lists(st.tuples(price_text, size_text), max_size=4))
def test_binance_codec_matches_oracle_at_any_size_precision(sp, px, q, levels):
    c, r = binance_pair({"SHIBUSDT": sp})
    agg = {"stream": "shibusdt@aggTrade", "data": {"e": "aggTrade", "E": 1, "s": "SHIBUSDT", "a": 5, "p": px,
                                                   "q": q, "T": 2, "m": True}}
    decode_both(c, r, json.dumps(agg))
    depth = {"stream": "shibusdt@depth", "data": {"e": "depthUpdate", "E": 1, "s": "SHIBUSDT", "U": 1, "u": 2,
                                                  "b": [list(x) for x in levels], "a": [[px, q]]}}
    decode_both(c, r, json.dumps(depth))
    for rec in unpack(bytes(c.output())):             # kept levels are exact at sp
        assert rec.size_precision == sp and rec.dec("size") * 10**sp == rec.size


@PROPS
@given(sp=st.integers(0, 18), levels=st.lists(st.tuples(price_text, size_text), max_size=4),
       trade=st.tuples(price_text, size_text))
def test_kraken_codec_matches_oracle_at_any_size_precision(sp, levels, trade):
    c, r = KrakenCodec(1002), RefKrakenCodec(1002)
    c.add_symbol("XBT/CHF", 3, sp)
    r.add_symbol("XBT/CHF", 3, sp)
    lv = [[p, q, "1617666423.606671"] for p, q in levels]
    decode_both(c, r, json.dumps([1, {"as": lv, "bs": lv}, "book-10", "XBT/CHF"]))
    decode_both(c, r, json.dumps([1, {"a": lv, "c": "123"}, "book-10", "XBT/CHF"]))
    decode_both(c, r, json.dumps([1, [[trade[0], trade[1], "1617666423.606671", "b", "l", ""]], "trade", "XBT/CHF"]))
    decode_both(c, r, json.dumps([1, [trade[0], trade[0], "1617666423.606671", trade[1], trade[1]], "spread", "XBT/CHF"]))
    assert {x.size_precision for x in unpack(bytes(c.output()))} <= {sp}


@PROPS
@given(sp=st.integers(0, 18), price=st.one_of(st.integers(-10**12, 10**20), st.decimals(allow_nan=False, allow_infinity=False, places=6)),
       qty=st.one_of(st.integers(0, 10**20), st.decimals(min_value=0, allow_nan=False, allow_infinity=False, places=12)))
def test_kraken_futures_codec_matches_oracle_at_any_size_precision(sp, price, qty):
    c, r = KrakenFuturesCodec(1003), RefKrakenFuturesCodec(1003)
    c.add_symbol("PI_XBTUSD", 4, sp)
    r.add_symbol("PI_XBTUSD", 4, sp)
    p, q = str(price), str(qty)
    for frame in (
        f'{{"feed":"book","product_id":"PI_XBTUSD","side":"sell","seq":9,"timestamp":1,"price":{p},"qty":{q}}}',
        f'{{"feed":"book_snapshot","product_id":"PI_XBTUSD","seq":9,"timestamp":1,"bids":[{{"price":{p},"qty":{q}}}],"asks":[]}}',
        f'{{"feed":"trade","product_id":"PI_XBTUSD","side":"buy","seq":3,"time":1,"price":{p},"qty":{q}}}',
        f'{{"feed":"ticker","product_id":"PI_XBTUSD","bid":{p},"ask":null,"bid_size":{q},"ask_size":0,"time":1}}',
    ):
        decode_both(c, r, frame)
        if c.last_kind == R.K["book"]:
            assert (c.first_seq, c.last_seq) == (9, 9)     # seq counts even when the level is rejected


# ---------------------------------------------------------------- end to end: the real worker

@pytest.mark.timeout(120)
def test_far_ask_end_to_end_kraken_worker(tmp_path, instance, storage_url):
    """`dm supervise` replays the Kraken recording with XBT/CHF's far ask in the USDC/GBP
    snapshot: exactly one dead letter naming the instrument and field, every checksum of both
    pairs verified, no gap in the ledger, the book's DEPTH keeps flowing after the snapshot."""
    from dm.recording import Replace, write_modified_recording
    from dm.records import Depth
    from tests.e2e import (KRAKEN_ASSET_PAIRS, ChannelCollector, config_head, kraken_provider,
                           leftover_segments, run_supervised, worker_stats)

    lines = KRAKEN_BOOK.read_bytes().split(b"\n")
    snap_line = next(i for i, ln in enumerate(lines, 1)
                     if ln.endswith(b'"USDC/GBP"]') and b'"as":' in ln and b'"book-1000"' in ln)
    ts, _, text = lines[snap_line - 1].decode().partition(": ")
    edited = write_modified_recording(KRAKEN_BOOK, tmp_path / "KRAKEN-c197c0.0",
                                      [Replace(snap_line, f"{ts}: {with_far_ask(text)}")])
    cfg = tmp_path / "dm.toml"
    cfg.write_text(config_head(tmp_path, instance, storage_url, (edited, KRAKEN_ASSET_PAIRS), speed=0.0)
                   + kraken_provider(tmp_path, symbols=("USDCGBP", "AUDUSD"), channels=("book",)))
    readers = ChannelCollector(instance, ["USDCGBP", "AUDUSD"], exchange="KRAKEN").start()
    run_supervised(cfg, tmp_path)
    readers.join(timeout=30)

    stats = worker_stats(tmp_path, instance, "kraken")
    n_updates = sum(1 for p in ("USDC/GBP", "AUD/USD") for f in kraken_book_frames(p) if '"c":"' in f)
    assert stats["value_errors"] == 1 and stats["dead_letters"] == 1
    assert stats["checksum_failures"] == 0 and stats["book_gaps"] == 0 and stats["book_crossed"] == 0
    assert stats["checksums_ok"] == n_updates and stats["book_snapshots"] == 2
    (line,) = (tmp_path / "deadletter" / "kraken.jsonl").read_text().splitlines()
    e = json.loads(line)
    assert (e["symbol"], e["field"], e["reason"], e["text"]) == ("USDCGBP", "as", "out of range", f'"{FAR_ASK}"')
    depth = [r for r in readers.records["USDCGBP"] if isinstance(r, Depth)]
    assert len(depth) > 1 and {r.size_precision for r in depth} == {8}
    assert all(lv[1] != R.UNDEF_PRICE for lv in depth[-1].levels)      # ten real asks on top
    st_ = open_storage(storage_url)
    try:
        assert st_.gaps() == []
        iid = {s: i for i, s, ex, *_ in st_.load_instruments() if ex == "KRAKEN"}["USDCGBP"]
        assert e["instrument_id"] == iid
    finally:
        st_.close()
    assert leftover_segments(instance) == []


def test_kraken_futures_rejected_delta_keeps_the_seq_chain():
    """A real Kraken Futures book delta whose qty does not fit the contract's precision (0 for
    PI_) is rejected alone: no record, but its seq still counts, so the next delta is no gap."""
    from dm.venues.kraken_futures.booksync import KrakenFuturesBookSync

    import re

    frames = ws_frames(DATA / "kraken_futures/KRAKEN_FUTURES.ws.1.0", lambda t: '"product_id":"PI_ETHUSD"' in t and
                       ('"feed":"book_snapshot"' in t or '"feed":"book"' in t))
    assert '"book_snapshot"' in frames[0] and len(frames) > 10
    c, r = KrakenFuturesCodec(1003), RefKrakenFuturesCodec(1003)
    c.add_symbol("PI_ETHUSD", 4, 0)
    r.add_symbol("PI_ETHUSD", 4, 0)
    sync = KrakenFuturesBookSync(4, 1003)
    sync.book.size_precision = 0
    bad = 0
    for k, f in enumerate(frames):
        if k == 5:                      # a half contract: more digits than precision 0
            f = re.sub(r'"qty":[0-9.eE+-]+', '"qty":0.5', f)
        decode_both(c, r, f)
        bad += c.value_error_count
        if c.last_kind == R.K["bookSnapshot"]:
            act = sync.on_snapshot(c.first_seq, c.output())
        else:
            act = sync.on_delta(c.first_seq, c.output())
        assert act.gap is None
    assert bad == 1 and sync.stats.gaps == 0 and sync.stats.applied == len(frames) - 1


def test_tail_and_record_objects_show_sizes_at_the_records_precision():
    """`dm tail`'s line and the reader's record objects scale sizes by the record's own
    size_precision (a SHIB-sized trade at 2: two decimals, exact)."""
    from dm.cli import format_record

    c, _ = binance_pair({"SHIBUSDT": SHIB_SP})
    agg = next(iter(ws_frames(B38, lambda t: '"DENTUSDT"' in t and "aggTrade" in t)))
    c.decode(_edit(agg, s="SHIBUSDT", q="46116860414.00"), 1)
    (t,) = unpack(c.output())
    line = format_record(t)
    assert " B 46116860414.00 @ 0.020955900 " in line and t.f("size") == 46116860414.0
    from dm.records import to_decimal
    assert t.dec("size") == to_decimal(t.size, 2) == Decimal("46116860414")
