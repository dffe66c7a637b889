"""Binance USD-M (dm/venues/binance_futures) and COIN-M (dm/venues/binance_delivery) futures:
codec vs its pure-Python oracle on every recorded frame and REST snapshot of both sessions, at
the instruments' real size precisions (golden); records against the recordings parsed
independently (json + Decimal); hypothesis on generated and mutated frames; values rejected
alone; symbology from the recorded exchangeInfo bodies; the futures book-sync rule (`pu`
continuity, u >= lastUpdateId snapshot alignment) on the recordings with 0 gaps, and a dropped
diff = one gap + resync + the true book after; the replay server on the futures paths next to
Binance spot."""
from __future__ import annotations

import asyncio
import json
from collections import Counter, defaultdict
from decimal import Decimal
from pathlib import Path

import aiohttp
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dm import records as REC
from dm._codec import KINDS
from dm.errors import CodecError, SymbologyError
from dm.recording import read_recording, ws_sessions
from dm.records import SIDE_ASK, SIDE_BID, UNDEF_PRICE, StatType
from dm.replay import ReplayServer
from dm.venues import venue, venue_of_host
from dm.venues.binance_delivery._codec import BinanceDeliveryCodec
from dm.venues.binance_delivery.booksync import DeliveryDepthSync
from dm.venues.binance_delivery.codec_ref import RefBinanceDeliveryCodec
from dm.venues.binance_delivery.symbology import BinanceDeliverySymbology
from dm.venues.binance_futures._codec import BinanceFuturesCodec
from dm.venues.binance_futures.booksync import GAP_BINANCE_FUTURES, FuturesDepthSync
from dm.venues.binance_futures.codec_ref import RefBinanceFuturesCodec
from dm.venues.binance_futures.symbology import BinanceFuturesSymbology
from tests.book_ref import RefBook, levels_records, snapshot_records

ROOT = Path(__file__).resolve().parent.parent
UM = ROOT / "data/binance_futures/2021-07-22"
CM = ROOT / "data/binance_delivery/2021-07-22"
UM_INFO = UM / "BINANCE_FUTURES.0"
CM_INFO = CM / "BINANCE_DELIVERY.0"
SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
TS = 1_700_000_000_000_000_000

VENUES = {
    "um": (UM, UM_INFO, BinanceFuturesCodec, RefBinanceFuturesCodec, BinanceFuturesSymbology, 1004, FuturesDepthSync),
    "cm": (CM, CM_INFO, BinanceDeliveryCodec, RefBinanceDeliveryCodec, BinanceDeliverySymbology, 1005, DeliveryDepthSync),
}


def reference(path: Path) -> bytes:
    return next(e for e in read_recording(path) if e.kind == "rest").text.encode()


def symbology(which: str, **kw):
    _d, info, _c, _r, sym_cls, _p, _s = VENUES[which]
    return sym_cls.from_reference(reference(info), **kw)


def recorded(which: str) -> list:
    """[(kind, event)] of the session in recorded order: ("ws", frame event) and ("rest",
    snapshot event)."""
    d = VENUES[which][0]
    evs = read_recording(sorted(d.glob("*.ws.*")) + sorted(d.glob("*.http.*")))
    return [("ws" if e.kind == "frame" else "rest", e) for e in evs if e.kind in ("frame", "rest")]


def session_symbols(which: str) -> dict[str, int]:
    """venue symbol -> instrument id of the symbols the session streams."""
    syms = sorted({json.loads(e.text)["data"]["s"] for k, e in recorded(which) if k == "ws"})
    return {s: i + 1 for i, s in enumerate(syms)}


def pair(which: str, precisions: bool = True):
    _d, _i, c_cls, r_cls, _s, pub, _y = VENUES[which]
    sym = symbology(which)
    c, r = c_cls(pub), r_cls(pub)
    for s, iid in session_symbols(which).items():
        sp = sym.info(s).resolved_size_precision() if precisions else 9
        c.add_symbol(s, iid, sp)
        r.add_symbol(s, iid, sp)
    return c, r


def outcome(codec, frame, ts=TS, snapshot_of=None):
    try:
        n = codec.decode_snapshot(frame, snapshot_of, ts) if snapshot_of else codec.decode(frame, ts)
    except CodecError as e:
        return ("error", type(e).__name__, e.venue, e.reason, e.field, e.offset)
    return (n, bytes(codec.output()), codec.last_kind, codec.instrument_id, codec.first_seq, codec.last_seq,
            codec.prev_seq, list(codec.value_errors), codec.value_error_count)


def agree(c, r, frame, **kw):
    a, b = outcome(c, frame, **kw), outcome(r, frame, **kw)
    assert a == b, frame[:300]
    return a


def split(buf: bytes) -> list:
    out, i = [], 0
    while i < len(buf):
        n = buf[i] * 4
        out.append(REC.unpack(buf[i:i + n]))
        i += n
    return out


def snap_symbol(url: str) -> str:
    return url.split("symbol=", 1)[1].split("&", 1)[0]


def fx(text: str, scale: int = 9) -> int:
    d = Decimal(text).scaleb(scale)
    assert d == d.to_integral_value()
    return int(d)


# --------------------------------------------------------------------------- golden


@pytest.mark.parametrize("which,counts", [
    ("um", {"depthUpdate": 764, "bookTicker": 613, "aggTrade": 91, "kline": 67, "depthSnapshot": 4}),
    ("cm", {"depthUpdate": 2047, "bookTicker": 2240, "aggTrade": 51, "kline": 33, "depthSnapshot": 10}),
])
def test_every_recorded_frame_and_snapshot_agrees_with_the_oracle(which, counts):
    c, r = pair(which)
    for kind, ev in recorded(which):
        if kind == "ws":
            res = agree(c, r, ev.text, ts=int(Decimal(ev.ts_text).scaleb(9)))
        else:
            res = agree(c, r, ev.text, snapshot_of=snap_symbol(ev.url))
        assert res[0] != "error", (ev.text[:200], res)
        assert res[8] == 0          # nothing rejected on real data at the real precisions
    assert c.counts() == r.counts() == counts


@pytest.mark.parametrize("which", ["um", "cm"])
def test_records_match_the_recording_parsed_independently(which):
    """Trades, BBOs, book deltas and snapshots against json + Decimal at the real size
    precisions (COIN-M: whole contracts, size_precision 0)."""
    c, _ = pair(which)
    sym = symbology(which)
    ids = session_symbols(which)
    sp = {s: sym.info(s).resolved_size_precision() for s in ids}
    if which == "cm":
        assert set(sp.values()) == {0}
    n = Counter()
    for kind, ev in recorded(which):
        if kind == "rest":
            s = snap_symbol(ev.url)
            body = json.loads(ev.text)
            recs = split(bytes(c.output())) if c.decode_snapshot(ev.text, s, TS) else []
            assert recs[0].action == ord("R") and all(x.flags & REC.Flag.SNAPSHOT for x in recs)
            want = [(SIDE_BID, fx(p), fx(q, sp[s])) for p, q in body["bids"]] + \
                   [(SIDE_ASK, fx(p), fx(q, sp[s])) for p, q in body["asks"]]
            assert [(x.side, x.price, x.size) for x in recs[1:]] == want
            assert {x.ts_event for x in recs} == {body["T"] * 10**6} and recs[-1].sequence == body["lastUpdateId"]
            n["snapshot"] += 1
            continue
        d = json.loads(ev.text)["data"]
        c.decode(ev.text, TS)
        recs = split(bytes(c.output()))
        e = d["e"]
        s = d["s"]
        if e == "aggTrade":
            (t,) = recs
            assert (t.instrument_id, t.price, t.size, t.trade_id, t.ts_event, t.side, t.size_precision) == (
                ids[s], fx(d["p"]), fx(d["q"], sp[s]), d["a"], d["T"] * 10**6,
                SIDE_ASK if d["m"] else SIDE_BID, sp[s])
        elif e == "bookTicker":
            (b,) = recs
            assert (b.bid_px, b.bid_sz, b.ask_px, b.ask_sz, b.sequence, b.ts_event) == (
                fx(d["b"]), fx(d["B"], sp[s]), fx(d["a"]), fx(d["A"], sp[s]), d["u"], d["T"] * 10**6)
        elif e == "depthUpdate":
            want = [(SIDE_BID, fx(p), fx(q, sp[s])) for p, q in d["b"]] + \
                   [(SIDE_ASK, fx(p), fx(q, sp[s])) for p, q in d["a"]]
            assert [(x.side, x.price, x.size) for x in recs] == want
            assert (c.first_seq, c.last_seq, c.prev_seq) == (d["U"], d["u"], d["pu"])
            assert all(x.sequence == d["u"] and x.ts_event == d["T"] * 10**6 for x in recs)
            assert not recs or recs[-1].flags & REC.Flag.LAST
        else:
            assert e == "kline"
            k = d["k"]
            if not k["x"]:
                assert recs == []               # the bar is still open
            else:
                (bar,) = recs
                assert (bar.ts_event, bar.open, bar.high, bar.low, bar.close, bar.volume, bar.interval_s, bar.count,
                        bar.size_precision) == (k["t"] * 10**6, fx(k["o"]), fx(k["h"]), fx(k["l"]), fx(k["c"]),
                                                fx(k["v"], sp[s]), 60, k["n"], sp[s])
                n["bar"] += 1
        n[e] += 1
    assert n["snapshot"] == (4 if which == "um" else 10)
    assert n["bar"] == (4 if which == "um" else 0)      # the USD-M session crosses 22:26:00


def test_mark_price_statistics():
    """markPriceUpdate (USD-M and COIN-M docs, "Mark Price Stream"): mark, index, estimated
    settlement price and funding rate (ts_ref = next funding time) as STATISTICS; a dated
    contract's empty funding rate and T=0 give no FUNDING_RATE; a value that does not fit is
    left out alone."""
    c, r = pair("cm")
    perp = ('{"stream":"bchusd_perp@markPrice@1s","data":{"e":"markPriceUpdate","E":1596095725000,'
            '"s":"BCHUSD_PERP","p":"10934.62615417","P":"10962.17178236","i":"10933.62615417",'
            '"r":"0.00010000","T":1596096000000}}')
    res = agree(c, r, perp)
    assert res[2] == KINDS["ticker"]
    stats = split(res[1])
    assert [(s.stat_type, s.price, s.ts_ref, s.ts_event) for s in stats] == [
        (StatType.MARK_PRICE, 10934_626154170, REC.UNDEF_TIMESTAMP, 1596095725000 * 10**6),
        (StatType.INDEX_PRICE, 10933_626154170, REC.UNDEF_TIMESTAMP, 1596095725000 * 10**6),
        (StatType.ESTIMATED_SETTLEMENT_PRICE, 10962_171782360, REC.UNDEF_TIMESTAMP, 1596095725000 * 10**6),
        (StatType.FUNDING_RATE, 100_000, 1596096000000 * 10**6, 1596095725000 * 10**6)]
    dated = perp.replace('"0.00010000"', '""').replace('"T":1596096000000', '"T":0').replace("BCHUSD_PERP", "BCHUSD_210924")
    dated = dated.replace("bchusd_perp", "bchusd_210924")
    assert [s.stat_type for s in split(agree(c, r, dated)[1])] == [
        StatType.MARK_PRICE, StatType.INDEX_PRICE, StatType.ESTIMATED_SETTLEMENT_PRICE]
    huge = perp.replace('"i":"10933.62615417"', '"i":"99999999999999.5"')
    res = agree(c, r, huge)
    assert [s.stat_type for s in split(res[1])] == [StatType.MARK_PRICE, StatType.ESTIMATED_SETTLEMENT_PRICE,
                                                    StatType.FUNDING_RATE]
    assert res[7][0][1:3] == ("i", "out of range")


def test_liquidation_statistics():
    """forceOrder (USD-M docs, "Liquidation Order Streams"; COIN-M the same with "ps"): one
    STATISTICS LIQUIDATION at the average price and filled quantity, stat_flags = the side of
    the liquidated order, ts_event = T."""
    c, r = pair("um")
    fo = ('{"stream":"sushiusdt@forceOrder","data":{"e":"forceOrder","E":1568014460893,"o":{"s":"SUSHIUSDT",'
          '"S":"SELL","o":"LIMIT","f":"IOC","q":"14","p":"7.5010","ap":"7.5020","X":"FILLED","l":"14","z":"14",'
          '"T":1568014460890}}}')
    res = agree(c, r, fo)
    assert res[2] == KINDS["liquidation"]
    (st_,) = split(res[1])
    assert (st_.stat_type, st_.price, st_.quantity, st_.stat_flags, st_.ts_event, st_.size_precision) == (
        StatType.LIQUIDATION, 7_502000000, 14, ord("A"), 1568014460890 * 10**6, 0)
    buy = fo.replace('"S":"SELL"', '"S":"BUY"').replace('"stream":"sushiusdt@forceOrder",', '"stream":"!forceOrder@arr",')
    assert split(agree(c, r, buy)[1])[0].stat_flags == ord("B")
    assert agree(c, r, fo.replace('"S":"SELL"', '"S":"SHORT"'))[3:5] == ("invalid side", "S")
    res = agree(c, r, fo.replace('"z":"14"', '"z":"14.5"'))      # SUSHIUSDT lot step 1: rejected alone
    assert res[0] == 0 and res[7][0][1] == "z"
    raw = json.loads(fo)["data"]
    assert agree(c, r, json.dumps(raw))[0] == 1                 # raw stream form


def test_values_rejected_alone():
    """COIN-M sizes are whole contracts: a fractional quantity is rejected alone (the level
    dropped, the BBO side published empty, the trade left out), the rest of the frame kept."""
    c, r = pair("cm")
    bt = ('{"stream":"bchusd_perp@bookTicker","data":{"u":167006084895,"e":"bookTicker","s":"BCHUSD_PERP",'
          '"ps":"BCHUSD","b":"427.84","B":"24.5","a":"427.90","A":"669","T":1626916403864,"E":1626916403871}}')
    res = agree(c, r, bt)
    (b,) = split(res[1])
    assert (b.bid_px, b.bid_sz, b.ask_px, b.ask_sz) == (UNDEF_PRICE, 0, 427_900000000, 669)
    assert res[7] == [(c.instrument_id, "B", "more fractional digits than the instrument's size_precision",
                       bt.index('"24.5"'))]
    dp = ('{"stream":"bchusd_perp@depth@100ms","data":{"e":"depthUpdate","E":1626916403873,"T":1626916403864,'
          '"s":"BCHUSD_PERP","ps":"BCHUSD","U":167006084465,"u":167006084895,"pu":167006084238,'
          '"b":[["427.27","0"],["427.53","2.6"]],"a":[["428.1","-1"],["428.2","7"]]}}')
    res = agree(c, r, dp)
    assert [(x.side, x.price, x.size) for x in split(res[1])] == [(SIDE_BID, 427_270000000, 0), (SIDE_ASK, 428_200000000, 7)]
    assert res[8] == 2 and res[6] == 167006084238
    tr = ('{"stream":"bchusd_perp@aggTrade","data":{"e":"aggTrade","E":1626916404006,"a":11285749,'
          '"s":"BCHUSD_PERP","p":"427.91","q":"3.5","f":16034449,"l":16034449,"T":1626916403852,"m":true}}')
    res = agree(c, r, tr)
    assert res[0] == 0 and res[8] == 1


def test_malformed_frames_are_errors_not_records():
    c, r = pair("um")
    for bad in ('{"stream":"sushiusdt@depth@100ms","data":{"e":"depthUpdate","E":1,"T":1,"s":"SUSHIUSDT","U":1,"u":2,"b":[],"a":[]}}',
                '{"stream":"sushiusdt@ticker","data":{}}',
                '{"stream":"nopeusdt@aggTrade","data":{"e":"aggTrade","E":1,"a":1,"s":"NOPEUSDT","p":"1","q":"1","T":1,"m":true}}',
                '{"e":"depthUpdate","E":1,"s":"SUSHIUSDT","U":1,"u":2,"pu":1,"b":[["x","1"]],"a":[]}',
                '{"stream":"sushiusdt@bookTicker","data":{"e":"bookTicker","s":"SUSHIUSDT","u":1}',
                '{"no":"e"}', '[1]', ''):
        res = agree(c, r, bad)
        assert res[0] == "error", bad
    assert agree(c, r, '{"result":null,"id":7}')[2] == KINDS["subscription"]
    kl = ('{"e":"kline","E":1,"s":"SUSHIUSDT","k":{"t":1,"i":"%s","o":"1","h":"2","l":"0.5","c":"1.5",'
          '"v":"10","n":3,"x":true}}')
    for iv, secs in (("1m", 60), ("4h", 14400), ("1d", 86400), ("1w", 604800), ("1M", 0), ("15s", 15)):
        assert split(agree(c, r, kl % iv)[1])[0].interval_s == secs
    for bad in ("m", "1y", "1000m", ""):
        assert agree(c, r, kl % bad)[3:5] == ("unknown interval", "i")
    assert agree(c, r, kl.replace('"v":"10"', '"v":"10.5"') % "1m")[7][0][1:3] == (
        "v", "more fractional digits than the instrument's size_precision")
    raw = '{"e":"depthUpdate","E":5,"s":"SUSHIUSDT","U":1,"u":2,"pu":0,"b":[["1.5","3"]],"a":[]}'
    res = agree(c, r, raw)                  # raw stream (/ws/<stream>): no T -> ts_event = E
    assert split(res[1])[0].ts_event == 5 * 10**6 and res[4:7] == (1, 2, 0)


# --------------------------------------------------------------------------- hypothesis

DEC = st.one_of(
    st.decimals(min_value=0, max_value=10**12, places=3, allow_nan=False, allow_infinity=False).map(lambda d: f"{d:f}"),
    st.decimals(min_value=0, max_value=10**6, places=9, allow_nan=False, allow_infinity=False).map(lambda d: f"{d:f}"),
    st.integers(0, 10**6).map(str),
    st.sampled_from(["0", "0.0", "1e3", "-1", "", "1.0000000001", "99999999999.123", "18446744073.709551616", "abc"]))
IDS = st.integers(min_value=0, max_value=2**64 + 5)


@st.composite
def frames(draw):
    s = draw(st.sampled_from(["SUSHIUSDT", "CTKUSDT", "sushiusdt", "BCHUSD_PERP", "ETHUSD_210924", "NOPE"]))
    lv = st.lists(st.tuples(DEC, DEC).map(list), max_size=4)
    kind = draw(st.sampled_from(["depth", "bt", "agg", "mark", "kline", "force"]))
    if kind == "depth":
        d = {"e": "depthUpdate", "E": draw(IDS), "T": draw(IDS), "s": s, "U": draw(IDS), "u": draw(IDS),
             "pu": draw(IDS), "b": draw(lv), "a": draw(lv)}
        name = "depth@100ms"
    elif kind == "bt":
        d = {"e": "bookTicker", "u": draw(IDS), "s": s, "b": draw(DEC), "B": draw(DEC), "a": draw(DEC),
             "A": draw(DEC), "T": draw(IDS), "E": draw(IDS)}
        name = "bookTicker"
    elif kind == "agg":
        d = {"e": "aggTrade", "E": draw(IDS), "a": draw(IDS), "s": s, "p": draw(DEC), "q": draw(DEC),
             "f": 1, "l": 2, "T": draw(IDS), "m": draw(st.booleans())}
        name = "aggTrade"
    elif kind == "mark":
        d = {"e": "markPriceUpdate", "E": draw(IDS), "s": s, "p": draw(DEC), "P": draw(DEC), "i": draw(DEC),
             "r": draw(DEC), "T": draw(IDS)}
        name = "markPrice@1s"
    elif kind == "force":
        o = {"s": s, "S": draw(st.sampled_from(["BUY", "SELL", "X"])), "q": draw(DEC), "p": draw(DEC),
             "ap": draw(DEC), "z": draw(DEC), "T": draw(IDS)}
        for k in draw(st.lists(st.sampled_from(sorted(o)), max_size=1)):
            o.pop(k, None)
        d = {"e": "forceOrder", "E": draw(IDS), "o": o}
        name = "forceOrder"
    else:
        d = {"e": "kline", "E": 1, "s": s, "k": {"t": draw(IDS), "i": draw(st.sampled_from(["1m", "1h", "x"])),
                                                   "o": draw(DEC), "h": draw(DEC), "l": draw(DEC), "c": draw(DEC),
                                                   "v": draw(DEC), "n": draw(IDS), "x": draw(st.booleans())}}
        name = "kline_1m"
    for k in draw(st.lists(st.sampled_from(sorted(d)), max_size=2)):
        d.pop(k, None)
    if draw(st.booleans()):
        return json.dumps({"stream": f"{s.lower()}@{name}", "data": d})
    return json.dumps(d)


@SETTINGS
@given(frames(), st.sampled_from(["um", "cm"]))
def test_generated_frames_agree(frame, which):
    c, r = PAIRS[which]
    agree(c, r, frame)


@SETTINGS
@given(st.data())
def test_mutated_recorded_frames_agree(data):
    which = data.draw(st.sampled_from(["um", "cm"]))
    c, r = PAIRS[which]
    text = data.draw(st.sampled_from(SAMPLES[which])).encode()
    i = data.draw(st.integers(0, len(text) - 1))
    op = data.draw(st.sampled_from(["flip", "cut", "dup"]))
    if op == "flip":
        frame = text[:i] + bytes([data.draw(st.integers(0, 255))]) + text[i + 1:]
    elif op == "cut":
        frame = text[:i]
    else:
        frame = text[:i] + text[i:i + 8] + text[i:]
    agree(c, r, frame)


PAIRS = {"um": pair("um"), "cm": pair("cm")}
SAMPLES = {w: [e.text for k, e in recorded(w) if k == "ws"][::40] for w in ("um", "cm")}


# --------------------------------------------------------------------------- symbology


def test_usdm_symbology_from_recorded_exchange_info():
    sym = symbology("um")
    assert len(sym) == 122
    assert sym.to_canonical("SUSHIUSDT") == "SUSHIUSDT-USDT-PERP" and sym.to_venue("SUSHIUSDT-USDT-PERP") == "SUSHIUSDT"
    assert sym.to_canonical("sushiusdt") == "SUSHIUSDT-USDT-PERP"
    assert sym.to_canonical("BTCUSDT_210924") == "BTCUSDT-USDT-210924"
    i = sym.info("BTCUSDT_210924")
    assert (i.kind, i.expiry, i.settle, i.size_precision, i.tick_size) == ("future_linear", "210924", "USDT", 3, Decimal("0.1"))
    i = sym.info("SUSHIUSDT")
    assert (i.kind, i.size_precision, i.tradeable, i.underlying) == ("perpetual_linear", 0, True, "SUSHIUSDT")
    pending = sym.info("BTCSTUSDT")       # PENDING_TRADING, empty contractType: a perpetual
    assert (pending.kind, pending.tradeable, pending.canonical) == ("perpetual_linear", False, "BTCSTUSDT-USDT-PERP")
    aliased = symbology("um", quote_aliases={"USDT": "USD"})
    assert aliased.to_canonical("BTCUSDT") == "BTCUSD-USD-PERP"
    with pytest.raises(SymbologyError):
        sym.to_canonical("BTCUSD_PERP")
    with pytest.raises(SymbologyError):
        BinanceFuturesSymbology.from_reference(b'{"nope":1}')


def test_coinm_symbology_from_recorded_exchange_info():
    sym = symbology("cm")
    assert len(sym) == 36
    assert sym.to_canonical("BTCUSD_PERP") == "BTCUSD-BTC-PERP"
    assert sym.to_canonical("BTCUSD_210924") == "BTCUSD-BTC-210924"
    assert sym.to_venue("BCHUSD-BCH-PERP") == "BCHUSD_PERP"
    i = sym.info("BTCUSD_211231")
    assert (i.kind, i.expiry, i.settle, i.contract_size, i.size_precision) == ("future_inverse", "211231", "BTC", 100, 0)
    i = sym.info("LINKUSD_PERP")
    assert (i.kind, i.contract_size, i.tradeable) == ("perpetual_inverse", 10, True)
    assert Counter(x.kind for x in sym) == {"perpetual_inverse": 18, "future_inverse": 18}


def test_registry_and_hosts():
    assert venue("binance_futures").publisher_id == 1004 and venue("binance_delivery").publisher_id == 1005
    assert venue("binance_futures").codec_class() is BinanceFuturesCodec
    assert venue("binance_delivery").symbology_class() is BinanceDeliverySymbology
    assert venue_of_host("fstream.binance.com") == "binance_futures"
    assert venue_of_host("fapi.binance.com") == "binance_futures"
    assert venue_of_host("dstream.binance.com") == "binance_delivery"
    assert venue_of_host("dapi.binance.com") == "binance_delivery"
    assert venue_of_host("stream.binance.com") == "binance"
    assert venue_of_host("api.binance.us") == "binance"          # Binance.US: the spot kind
    assert venue_of_host("stream.binance.us") == "binance"
    assert venue_of_host("www.trbinance.com") == "binance"       # Binance TR
    assert issubclass(BinanceDeliveryCodec, BinanceFuturesCodec)
    assert BinanceDeliveryCodec(1005).venue == "BINANCE_DELIVERY" and BinanceFuturesCodec(1004).venue == "BINANCE_FUTURES"


# --------------------------------------------------------------------------- book sync


def sync_session(which: str, drop=None, fresh=None):
    """Feed the recorded session through codec + sync per symbol in recorded order.
    ``drop``: (symbol, index of the diff to drop); ``fresh``: symbol -> {diff index: snapshot
    body} served right after that diff (the venue's answer to the resync request).
    Returns syncs, ref books (rebuilt in pure Python from every diff after the recorded
    snapshot), gaps."""
    _d, _i, c_cls, _r, _s, pub, sync_cls = VENUES[which]
    ids = session_symbols(which)
    c = c_cls(pub)
    for s, iid in ids.items():
        c.add_symbol(s, iid, 9)
    syncs = {s: sync_cls(iid, pub) for s, iid in ids.items()}
    refs = {s: RefBook(iid, 0, 0) for s, iid in ids.items()}
    ref_l = {}
    seen = Counter()
    gaps = []
    pending = {}
    for kind, ev in recorded(which):
        if kind == "rest":
            s = snap_symbol(ev.url)
            body = json.loads(ev.text)
            ref_l[s] = body["lastUpdateId"]
            refs[s].apply(snapshot_records(ids[s], [tuple(x) for x in body["bids"]], [tuple(x) for x in body["asks"]]))
            c.decode_snapshot(ev.text, s, TS)
            act = syncs[s].on_snapshot(c.last_seq, bytes(c.output()))
            assert act.gap is None
            continue
        d = json.loads(ev.text)["data"]
        if d["e"] != "depthUpdate":
            continue
        s = d["s"]
        k = seen[s]
        seen[s] += 1
        if s in ref_l and d["u"] >= ref_l[s]:
            refs[s].apply(levels_records(ids[s], SIDE_BID, d["b"]) + levels_records(ids[s], SIDE_ASK, d["a"]))
        if drop == (s, k):
            continue
        c.decode(ev.text, TS)
        act = syncs[s].on_diff(c.first_seq, c.last_seq, c.output(), c.prev_seq)
        if act.gap:
            gaps.append((s, act.gap))
        assert not act.crossed
        if fresh and k in fresh.get(s, {}):
            body = fresh[s][k]
            c.decode_snapshot(json.dumps(body), s, TS)
            syncs[s].on_snapshot(c.last_seq, bytes(c.output()))
    return syncs, refs, gaps


@pytest.mark.parametrize("which", ["um", "cm"])
def test_recorded_sessions_sync_with_zero_gaps(which):
    """The futures rule on the real sessions: every book synced from its one snapshot, 0 gaps,
    never crossed, equal to the pure-Python rebuild at the end. (The spot rule on the same
    data would see a gap at nearly every diff: U != previous u + 1.)"""
    syncs, refs, gaps = sync_session(which)
    assert gaps == []
    for s, sy in syncs.items():
        assert sy.synced and sy.stats.snapshots == 1 and sy.stats.gaps == 0 and sy.stats.stale_snapshots == 0
        assert sy.stats.crossed == 0
        assert sy.book.levels(SIDE_BID) == refs[s].levels(SIDE_BID)
        assert sy.book.levels(SIDE_ASK) == refs[s].levels(SIDE_ASK)
    # the documented quirk: a diff with u == lastUpdateId is applied (3 of 4 USD-M symbols)


def test_futures_snapshot_rule_applies_u_equal_last_update_id():
    sy = FuturesDepthSync(1)
    snap = snapshot_records(1, [("10", "1")], [("11", "1")], sequence=100)
    sy.on_diff(90, 99, levels_records(1, SIDE_BID, [("9", "5")]), 80)     # u < L: dropped
    sy.on_diff(95, 100, levels_records(1, SIDE_BID, [("10", "2")]), 99)   # U <= L <= u: the first applied
    act = sy.on_snapshot(100, snap)
    assert act.snapshot_applied and sy.synced and sy.book.levels(SIDE_BID) == [(10 * 10**9, 2 * 10**9)]
    assert sy.stats.dropped == 1
    act = sy.on_diff(130, 140, levels_records(1, SIDE_ASK, [("11", "0")]), 100)   # pu == previous u
    assert act.gap is None and sy.book.levels(SIDE_ASK) == []
    act = sy.on_diff(150, 160, b"", 145)                                   # pu != previous u: lost 141..145
    assert act.gap == act.gap.__class__(GAP_BINANCE_FUTURES, 141, 145, "pu=145 after u=140")
    assert act.needs_snapshot and not sy.synced
    assert sy.on_diff(150, 160, b"", 140).dropped == 1                     # duplicate
    # a snapshot older than the oldest kept diff (U=150 > 140) is stale: ask for another
    sy.on_diff(161, 170, levels_records(1, SIDE_ASK, [("12", "4")]), 160)
    act = sy.on_snapshot(140, snap)
    assert not act.snapshot_applied and not sy.synced and act.needs_snapshot and sy.stats.stale_snapshots == 1
    # a fresh one: diffs with u < 165 dropped, (161, 170) straddles it and is applied
    act = sy.on_snapshot(165, snapshot_records(1, [("10", "1")], [("11", "1")], sequence=165))
    assert act.snapshot_applied and sy.synced and sy.last_update_id == 170
    assert sy.book.levels(SIDE_ASK) == [(11 * 10**9, 10**9), (12 * 10**9, 4 * 10**9)]


@pytest.mark.parametrize("which", ["um", "cm"])
def test_dropped_diff_is_one_gap_then_resync_and_true_book(which):
    """A diff lost mid-stream: exactly one gap (missing ids previous u + 1 .. pu), the book
    invalid until a fresh snapshot, then equal to the pure-Python rebuild of every diff."""
    ids = session_symbols(which)
    evs = [json.loads(e.text)["data"] for k, e in recorded(which) if k == "ws"]
    sym = max(ids, key=lambda s: sum(1 for d in evs if d["e"] == "depthUpdate" and d["s"] == s))
    diffs = [d for d in evs if d["e"] == "depthUpdate" and d["s"] == sym]
    k = len(diffs) // 2
    j = k + 10
    # the venue's book at diffs[j].u, rebuilt from the clean stream: the resync snapshot
    _syncs, _refs, _ = sync_session(which)
    base = sync_session_until(which, sym, j)
    body = {"lastUpdateId": diffs[j]["u"], "T": 1, "bids": base[0], "asks": base[1]}
    syncs, refs, gaps = sync_session(which, drop=(sym, k), fresh={sym: {j: body}})
    assert len(gaps) == 1
    s, g = gaps[0]
    assert s == sym and (g.first_missing, g.last_missing) == (diffs[k - 1]["u"] + 1, diffs[k + 1]["pu"])
    sy = syncs[sym]
    assert sy.synced and sy.stats.gaps == 1 and sy.stats.snapshots == 2
    assert sy.book.levels(SIDE_BID) == refs[sym].levels(SIDE_BID)
    assert sy.book.levels(SIDE_ASK) == refs[sym].levels(SIDE_ASK)
    for other, osy in syncs.items():
        if other != sym:
            assert osy.stats.gaps == 0


def sync_session_until(which: str, sym: str, j: int):
    """[[price, size]] bids and asks (decimal text) of ``sym``'s clean book after its diff j."""
    ids = session_symbols(which)
    ref = RefBook(ids[sym], 0, 0)
    l0, k = None, 0
    for kind, ev in recorded(which):
        if kind == "rest" and snap_symbol(ev.url) == sym:
            body = json.loads(ev.text)
            l0 = body["lastUpdateId"]
            ref.apply(snapshot_records(ids[sym], [tuple(x) for x in body["bids"]], [tuple(x) for x in body["asks"]]))
        elif kind == "ws":
            d = json.loads(ev.text)["data"]
            if d["e"] != "depthUpdate" or d["s"] != sym:
                continue
            if l0 is not None and d["u"] >= l0:
                ref.apply(levels_records(ids[sym], SIDE_BID, d["b"]) + levels_records(ids[sym], SIDE_ASK, d["a"]))
            if k == j:
                break
            k += 1
    txt = lambda v: f"{Decimal(v).scaleb(-9).normalize():f}"
    return ([[txt(p), txt(q)] for p, q in ref.levels(SIDE_BID)], [[txt(p), txt(q)] for p, q in ref.levels(SIDE_ASK)])


# --------------------------------------------------------------------------- replay


def arun(coro):
    return asyncio.run(coro)


def test_replay_serves_futures_next_to_spot():
    """One replay server with Binance spot, USD-M and COIN-M recordings: each venue on its own
    websocket path and REST paths; unknown symbols answer Binance's -1121."""
    spot = ROOT / "data/binance/BINANCE-b38f7c.0"
    files = sorted(UM.iterdir()) + sorted(CM.iterdir()) + [spot]
    want_um = [e.text for k, e in recorded("um") if k == "ws" and '"sushiusdt@' in e.text[:30]]

    async def main():
        async with ReplayServer(files, speed=0) as srv:
            um, cm, sp = srv.ws_url("binance_futures"), srv.ws_url("binance_delivery"), srv.ws_url("binance")
            out = {}
            async with aiohttp.ClientSession() as s:
                streams = "/".join(f"sushiusdt@{x}" for x in ("depth@100ms", "bookTicker", "aggTrade", "kline_1m"))
                got = []
                async with s.ws_connect(f"{um}?streams={streams}") as ws:
                    while len(got) < len(want_um):
                        got.append((await ws.receive(timeout=10)).data)
                out["um"] = got
                base = srv.rest_url()
                for path in ("/fapi/v1/depth?symbol=SUSHIUSDT&limit=1000", "/fapi/v1/depth?symbol=NOPE",
                             "/dapi/v1/depth?symbol=BTCUSD_211231&limit=1000", "/fapi/v1/exchangeInfo",
                             "/dapi/v1/exchangeInfo"):
                    async with s.get(base + path) as r:
                        out[path] = (r.status, await r.read())
            out["urls"] = (um, cm, sp)
            return out
    out = arun(main())
    assert out["um"] == want_um
    um, cm, sp = out["urls"]
    assert um.endswith("/fstream/stream") and cm.endswith("/dstream/stream") and sp.endswith("/stream")
    assert out["/fapi/v1/depth?symbol=SUSHIUSDT&limit=1000"][0] == 200
    assert json.loads(out["/fapi/v1/depth?symbol=SUSHIUSDT&limit=1000"][1])["lastUpdateId"] > 0
    assert out["/fapi/v1/depth?symbol=NOPE"] == (400, b'{"code":-1121,"msg":"Invalid symbol."}')
    assert json.loads(out["/dapi/v1/depth?symbol=BTCUSD_211231&limit=1000"][1])["symbol"] == "BTCUSD_211231"
    assert len(json.loads(out["/fapi/v1/exchangeInfo"][1])["symbols"]) == 122
    assert len(json.loads(out["/dapi/v1/exchangeInfo"][1])["symbols"]) == 36


def _diff_ids(which: str) -> dict[str, list[tuple[int, int, int]]]:
    out = defaultdict(list)
    for k, e in recorded(which):
        if k == "ws":
            d = json.loads(e.text)["data"]
            if d["e"] == "depthUpdate":
                out[d["s"]].append((d["U"], d["u"], d["pu"]))
    return out


DIFF_IDS = {w: _diff_ids(w) for w in ("um", "cm")}


@SETTINGS
@given(st.data())
def test_every_run_of_lost_diffs_is_one_gap_with_its_exact_range(data):
    """Property on the recorded update ids: drop any set of diffs; the sync reports one gap per
    run of consecutive lost diffs that a received diff follows (none before the first diff
    seen), missing exactly previous received u + 1 .. pu of the diff after the run; the spot
    rule (U == previous u + 1) would instead call almost every received diff a gap."""
    which = data.draw(st.sampled_from(["um", "cm"]))
    sym = data.draw(st.sampled_from(sorted(DIFF_IDS[which])))
    ids = DIFF_IDS[which][sym]
    lost = data.draw(st.sets(st.integers(0, len(ids) - 1), max_size=len(ids) // 3))
    sy = VENUES[which][6](1)
    got, want = [], []
    prev_u = None
    pending_loss = False
    for i, (U, u, pu) in enumerate(ids):
        if i in lost:
            pending_loss = prev_u is not None
            continue
        act = sy.on_diff(U, u, b"", pu)
        if act.gap:
            got.append((act.gap.first_missing, act.gap.last_missing))
        if pending_loss:
            want.append((prev_u + 1, pu))
        pending_loss = False
        prev_u = u
    assert got == want
    assert sy.stats.gaps == len(want)
