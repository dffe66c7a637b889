"""Bybit v5 (dm/venues/bybit): codec vs its pure-Python oracle on every recorded frame of both
sessions (golden), on generated and mutated frames (hypothesis); the codec's records checked
against the recordings parsed independently (json + Decimal); values rejected alone; the book
sync rules; symbology from the recorded instruments-info bodies; the replay server serving each
recorded connection on its own URL (JSONL with two connections, and the format-1 split session)."""
from __future__ import annotations

import asyncio
import json
import random
from collections import Counter, defaultdict
from decimal import Decimal
from pathlib import Path

import aiohttp
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dm import records as REC
from dm.booksync import MASK_BBO
from dm.config import parse
from dm.errors import CodecError, ConfigError, SymbologyError
from dm.recording import read_file, read_recording, ws_sessions
from dm.records import SIDE_ASK, SIDE_BID, UNDEF_PRICE, StatType
from dm.replay import ReplayServer
from dm.venues.bybit._codec import BybitCodec
from dm.venues.bybit.booksync import GAP_BYBIT, BybitBookSync
from dm.venues.bybit.codec_ref import RefBybitCodec, trade_id
from dm.venues.bybit.provider import BybitProvider, categories, category_of
from dm.venues.bybit.symbology import BybitSymbology, split_venue_symbol
from tests.book_ref import RefBook, delta, snapshot_records

ROOT = Path(__file__).resolve().parent.parent
S26 = ROOT / "data/bybit/2026-08-09/BYBIT.jsonl.zst"
S25 = ROOT / "data/bybit/2025-06-13"
PUB = 1007
I64_MAX = (1 << 63) - 1
U64_MAX = (1 << 64) - 1
SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

LINEAR = {"BTCUSDT": 1, "ETHUSDT": 2, "SOLUSDT": 3, "DOGEUSDT": 4}
SPOT = {"BTCUSDT": 11, "ETHUSDT": 12}
LINEAR25 = {"SNTUSDT": 21, "BANDUSDT": 22, "AIOZUSDT": 23, "RADUSDT": 24}
SPOT25 = {"ARBUSDC": 31, "OPUSDC": 32, "KCSUSDT": 33, "CPOOLUSDT": 34, "TUSDUSDT": 35, "MASAUSDT": 36}
#: size_precision per symbol as the recorded instruments-info states it (qtyStep / basePrecision)
SP_LINEAR = {"BTCUSDT": 3, "ETHUSDT": 2, "SOLUSDT": 1, "DOGEUSDT": 0}
SP_SPOT = {"BTCUSDT": 6, "ETHUSDT": 5}


def sessions(path) -> list:
    """(url path, [frame events]) per recorded websocket connection."""
    return [(s.url.split("bybit.com", 1)[1], s.frames) for s in ws_sessions(read_recording(path))]


def pair(symbols: dict, precisions: dict | None = None):
    c, r = BybitCodec(PUB), RefBybitCodec(PUB)
    for s, iid in symbols.items():
        sp = (precisions or {}).get(s, 9)
        c.add_symbol(s, iid, sp)
        r.add_symbol(s, iid, sp)
    return c, r


def outcome(codec, frame, ts=1_700_000_000_000_000_000):
    try:
        n = codec.decode(frame, ts)
    except CodecError as e:
        return ("error", type(e).__name__, e.venue, e.reason, e.field, e.offset)
    out = bytes(codec.output())
    return (n, out, codec.last_kind, codec.instrument_id, codec.first_seq, codec.last_seq,
            list(codec.value_errors), codec.value_error_count)


def agree(c, r, frame):
    a, b = outcome(c, frame), outcome(r, frame)
    assert a == b, frame[:300]
    return a


def _split(buf: bytes) -> list:
    """Concatenated records → record objects (dm.records.unpack)."""
    out, i = [], 0
    while i < len(buf):
        n = buf[i] * 4
        out.append(REC.unpack(buf[i:i + n]))
        i += n
    return out


# --------------------------------------------------------------------------- golden: every recorded frame


@pytest.mark.parametrize("path,tables", [
    (S26, {"/v5/public/linear": (LINEAR, SP_LINEAR), "/v5/public/spot": (SPOT, SP_SPOT)}),
    (S25, {"/v5/public/linear": (LINEAR25, None), "/v5/public/spot": (SPOT25, None)}),
], ids=["2026-jsonl", "2025-split"])
def test_every_recorded_frame_agrees_with_the_oracle(path, tables):
    """Each connection gets its own codec (the same symbol is another instrument in another
    category); every frame decodes without error, identically in Cython and Python, ticker
    state included."""
    kinds = Counter()
    for url_path, frames in sessions(path):
        c, r = pair(*tables[url_path])
        for ev in frames:
            res = agree(c, r, ev.text)
            assert res[0] != "error", (ev.text[:200], res)
            assert res[7] == 0  # nothing rejected on real data
            kinds[(url_path, c.last_kind)] += 1
        for iid in tables[url_path][0].values():
            assert c.ticker_state(iid) == r.ticker_state(iid)
    from dm._codec import KINDS
    if path == S26:
        assert kinds[("/v5/public/linear", KINDS["book"])] == 1594
        assert kinds[("/v5/public/spot", KINDS["book"])] == 548
        assert kinds[("/v5/public/linear", KINDS["bookSnapshot"])] == 4
        assert kinds[("/v5/public/linear", KINDS["ticker"])] == 758
        assert kinds[("/v5/public/spot", KINDS["ticker"])] == 81
        assert kinds[("/v5/public/linear", KINDS["trade"])] + kinds[("/v5/public/spot", KINDS["trade"])] == 120
        assert kinds[("/v5/public/linear", KINDS["subscription"])] == 17
    else:
        assert kinds[("/v5/public/linear", KINDS["bookSnapshot"])] == 198
        assert kinds[("/v5/public/spot", KINDS["bookSnapshot"])] == 139
        assert kinds[("/v5/public/linear", KINDS["subscription"])] == 4
        assert kinds[("/v5/public/spot", KINDS["subscription"])] == 6


def _fx(text: str, scale: int = 9) -> int:
    d = Decimal(text).scaleb(scale)
    assert d == d.to_integral_value()
    return int(d)


def test_records_match_the_recording_parsed_independently():
    """Trades, book levels, ticker BBOs (deltas merged over the last full ticker) and statistics
    of the 2026 session against json + Decimal, at the instruments' real size precisions."""
    conns = {"/v5/public/linear": (LINEAR, SP_LINEAR), "/v5/public/spot": (SPOT, SP_SPOT)}
    n_stats = Counter()
    n_trades = 0
    for url_path, frames in sessions(S26):
        syms, sp = conns[url_path]
        c = BybitCodec(PUB)
        for s, iid in syms.items():
            c.add_symbol(s, iid, sp[s])
        last = defaultdict(dict)  # symbol -> merged ticker fields
        for ev in frames:
            n = c.decode(ev.text, ev.ts_ns)
            recs = _split(bytes(c.output()))
            msg = json.loads(ev.text)
            topic = msg.get("topic", "")
            if topic.startswith("publicTrade."):
                want = [(syms[t["s"]], _fx(t["p"]), _fx(t["v"], sp[t["s"]]), t["T"] * 10**6,
                         SIDE_BID if t["S"] == "Buy" else SIDE_ASK, t["seq"], trade_id(t["i"].encode()),
                         sp[t["s"]]) for t in msg["data"]]
                got = [(r.instrument_id, r.price, r.size, r.ts_event, r.side, r.sequence, r.trade_id,
                        r.size_precision) for r in recs]
                assert got == want
                n_trades += len(want)
                for t in msg["data"]:
                    if t["i"].isdigit():
                        assert trade_id(t["i"].encode()) == int(t["i"])   # spot: the venue's number
            elif topic.startswith("orderbook."):
                d = msg["data"]
                snap = msg["type"] == "snapshot"
                levels = [(SIDE_BID, p, q) for p, q in d["b"]] + [(SIDE_ASK, p, q) for p, q in d["a"]]
                body = recs[1:] if snap else recs
                assert len(recs) == len(levels) + snap
                for r, (side, p, q) in zip(body, levels):
                    assert (r.side, r.price, r.size, r.sequence, r.ts_event) == (
                        side, _fx(p), _fx(q, sp[d["s"]]), d["u"], msg["cts"] * 10**6)
                    assert r.action == (REC.ACTION_CANCEL if Decimal(q) == 0 else REC.ACTION_ADD)
            elif topic.startswith("tickers."):
                d = msg["data"]
                if msg["type"] == "snapshot":
                    last[d["symbol"]] = {}
                last[d["symbol"]].update(d)
                m = last[d["symbol"]]
                want = []
                if any(k in d for k in ("bid1Price", "bid1Size", "ask1Price", "ask1Size")):
                    want.append(("bbo", _fx(m["bid1Price"]), _fx(m["bid1Size"], sp[d["symbol"]]),
                                 _fx(m["ask1Price"]), _fx(m["ask1Size"], sp[d["symbol"]]), msg.get("cs", 0)))
                for key, stype in (("markPrice", StatType.MARK_PRICE), ("indexPrice", StatType.INDEX_PRICE),
                                   ("fundingRate", StatType.FUNDING_RATE), ("openInterest", StatType.OPEN_INTEREST)):
                    if d.get(key):
                        v = _fx(d[key], sp[d["symbol"]]) if key == "openInterest" else _fx(d[key])
                        ref = int(m["nextFundingTime"]) * 10**6 if key == "fundingRate" else REC.UNDEF_TIMESTAMP
                        want.append(("stat", int(stype), v, ref))
                        n_stats[key] += 1
                got = []
                for r in recs:
                    if isinstance(r, REC.Bbo):
                        got.append(("bbo", r.bid_px, r.bid_sz, r.ask_px, r.ask_sz, r.sequence))
                    else:
                        v = r.quantity if r.stat_type == StatType.OPEN_INTEREST else r.price
                        got.append(("stat", r.stat_type, v, r.ts_ref))
                        assert r.ts_event == msg["ts"] * 10**6 and r.update_action == 1
                assert got == want, ev.text[:300]
            else:
                assert n == 0
    assert n_trades == 347
    # linear tickers carry mark/index/funding/OI (deltas: only when changed); spot none of them
    assert n_stats == {"markPrice": 89, "indexPrice": 69, "openInterest": 20, "fundingRate": 6}


# --------------------------------------------------------------------------- rules on hand-written frames


def book(typ, sym, u, bids, asks, ts=1000, cts=999):
    return json.dumps({"topic": f"orderbook.50.{sym}", "type": typ, "ts": ts,
                       "data": {"s": sym, "b": bids, "a": asks, "u": u, "seq": 7}, "cts": cts})


def test_delta_with_update_id_1_is_a_snapshot():
    """Bybit v5 "Orderbook": u = 1 is the service's restart; overwrite the local book."""
    c, r = pair({"BTCUSDT": 5})
    res = agree(c, r, book("delta", "BTCUSDT", 1, [["10", "1"]], [["11", "2"]]))
    recs = _split(res[1])
    from dm._codec import KINDS
    assert res[2] == KINDS["bookSnapshot"]
    assert recs[0].action == REC.ACTION_CLEAR and all(x.flags & REC.Flag.SNAPSHOT for x in recs)
    res = agree(c, r, book("delta", "BTCUSDT", 2, [["10", "0"]], []))
    assert res[2] == KINDS["book"] and _split(res[1])[0].action == REC.ACTION_CANCEL


def test_values_that_do_not_fit_are_rejected_alone():
    c, r = pair({"BTCUSDT": 5}, {"BTCUSDT": 3})
    # a level whose size has more digits than size_precision 3, one negative size: both dropped
    res = agree(c, r, book("snapshot", "BTCUSDT", 9, [["10", "1.0001"], ["9", "1"]], [["11", "-2"], ["12", "3"]]))
    recs = _split(res[1])
    assert [(x.side, x.price, x.size) for x in recs[1:]] == [(SIDE_BID, 9 * 10**9, 1000), (SIDE_ASK, 12 * 10**9, 3000)]
    assert [e[1:3] for e in res[6]] == [("b", "more fractional digits than the instrument's size_precision"),
                                        ("a", "negative value")]
    assert recs[-1].flags & REC.Flag.LAST
    # a trade with an out-of-range price is dropped, the next one kept
    t = {"topic": "publicTrade.BTCUSDT", "type": "snapshot", "ts": 1,
         "data": [{"T": 5, "s": "BTCUSDT", "S": "Sell", "v": "0.5", "p": "1e20", "i": "x", "BT": True},
                  {"T": 6, "s": "BTCUSDT", "S": "Buy", "v": "0.5", "p": "2", "i": "42", "BT": True, "seq": 3}]}
    res = agree(c, r, json.dumps(t))
    recs = _split(res[1])
    assert [(x.price, x.size, x.trade_id, x.sequence, x.side) for x in recs] == [(2 * 10**9, 500, 42, 3, SIDE_BID)]
    assert recs[0].flags & REC.Flag.PUBLISHER_SPECIFIC  # block trade
    assert res[6][0][1:3] == ("p", "out of range") and res[7] == 1
    # an invalid decimal is a malformed frame (not a value to drop)
    bad = book("snapshot", "BTCUSDT", 9, [["1x", "1"]], [])
    assert agree(c, r, bad)[:4] == ("error", "FixedPointError", "BYBIT", "invalid decimal")


def test_ticker_deltas_merge_and_bad_side_is_dropped():
    c, r = pair({"BTCUSDT": 5}, {"BTCUSDT": 3})

    def tk(typ, **d):
        return json.dumps({"topic": "tickers.BTCUSDT", "type": typ, "data": {"symbol": "BTCUSDT", **d},
                           "cs": 77, "ts": 2000})
    agree(c, r, tk("snapshot", bid1Price="10", bid1Size="1", ask1Price="11", ask1Size="2",
                   nextFundingTime="1673280000000", fundingRate="-0.000212", markPrice="10.5"))
    res = agree(c, r, tk("delta", ask1Price="10.9", ask1Size="0.5"))
    bbo = _split(res[1])[0]
    assert (bbo.bid_px, bbo.bid_sz, bbo.ask_px, bbo.ask_sz, bbo.sequence) == (10 * 10**9, 1000, 10_900_000_000, 500, 77)
    res = agree(c, r, tk("delta", fundingRate="0.0001"))
    stat = _split(res[1])[0]
    assert (stat.stat_type, stat.price, stat.ts_ref) == (StatType.FUNDING_RATE, 100_000, 1673280000000 * 10**6)
    assert stat.quantity == I64_MAX
    # a bid price that does not fit: that side is empty, the ask kept, the mark price still out
    res = agree(c, r, tk("delta", bid1Price="99999999999", bid1Size="1", markPrice="11"))
    recs = _split(res[1])
    assert (recs[0].bid_px, recs[0].bid_sz, recs[0].ask_px) == (UNDEF_PRICE, 0, 10_900_000_000)
    assert recs[1].stat_type == StatType.MARK_PRICE and res[7] == 1
    assert c.ticker_state(5) == r.ticker_state(5)
    # "" means no value: no statistic
    res = agree(c, r, tk("delta", predictedDeliveryPrice="", openInterest="12.5"))
    assert [(x.stat_type, x.quantity, x.price) for x in _split(res[1])] == [(StatType.OPEN_INTEREST, 12500, UNDEF_PRICE)]
    # a snapshot resets what deltas built
    res = agree(c, r, tk("snapshot", ask1Price="12", ask1Size="1"))
    assert (_split(res[1])[0].bid_px, _split(res[1])[0].bid_sz) == (UNDEF_PRICE, 0)
    assert c.ticker_state(5)[4] == REC.UNDEF_TIMESTAMP


def test_control_frames_and_errors():
    from dm._codec import KINDS
    c, r = pair({"BTCUSDT": 5})
    assert agree(c, r, '{"success":true,"ret_msg":"","conn_id":"x","req_id":"","op":"subscribe"}')[2] == KINDS["subscription"]
    assert agree(c, r, '{"success":false,"ret_msg":"error:handler not found","conn_id":"x","op":"subscribe"}')[2] == KINDS["error"]
    assert agree(c, r, '{"success":true,"ret_msg":"pong","conn_id":"x","op":"ping"}')[2] == KINDS["pong"]
    assert agree(c, r, '{"topic":"kline.1.BTCUSDT","data":[],"ts":1,"type":"snapshot"}')[:3] == (0, b"", KINDS["kline"])
    assert agree(c, r, '{"op":"auth","success":true}')[3:5] == ("unknown op", "op")
    assert agree(c, r, '{"topic":"liquidation.BTCUSDT","data":{}}')[3:5] == ("unknown topic", "topic")
    e = agree(c, r, book("delta", "XRPUSDT", 3, [], []))
    assert e[:2] == ("error", "UnknownInstrumentError")
    assert agree(c, r, '[1]')[3] == "expected a JSON object"


def test_data_indexed_while_the_frame_is_validated():
    """The general path indexes a ticker's or book's data object while it validates the frame
    (index_top): repeated data members (the last one wins, object or not), nesting at the depth
    limit inside data and malformed data give the oracle's records and errors."""
    from dm.venues.bybit._codec import _set_one_pass
    c, r = pair({"BTCUSDT": 5, "ETHUSDT": 6}, {"BTCUSDT": 3})
    tk = '{"topic":"tickers.BTCUSDT","type":"snapshot","data":%s,"cs":7,"ts":2000}'
    bk = '{"topic":"orderbook.50.BTCUSDT","type":"delta","ts":1,"data":%s,"cts":2}'
    t1 = '{"symbol":"BTCUSDT","bid1Price":"10","bid1Size":"1","ask1Price":"11","ask1Size":"2","markPrice":"3"}'
    t2 = '{"symbol":"ETHUSDT","ask1Price":"12","ask1Size":"0.5","x":[1]}'
    b1 = '{"s":"BTCUSDT","b":[["1","2"]],"a":[],"u":5}'
    b2 = '{"s":"ETHUSDT","b":[],"a":[["3","4"]],"u":6}'
    deep = "[" * 30 + "]" * 30                            # 2 containers around: 32 deep at most
    was = _set_one_pass(False)
    try:
        for tpl, x, y in ((tk, t1, t2), (bk, b1, b2)):
            fine = (x, y, x + ',"data":' + y, y + ',"data":' + x, '1,"data":' + x, '[],"data":' + y,
                    x[:-1] + ',"z":' + deep + "}")
            bad = (x + ',"data":1', x + ',"data":[]', x[:-1] + ',"z":[' + deep + "]}", x[:-1] + ',"z":}',
                   x[:-1] + ',"z":1,}', x[:-2], '{"s":"BTCUSDT","u":1}')
            for d in fine + bad:
                out = agree(c, r, tpl % d)
                assert (out[0] == "error") == (d in bad), (d, out)
                for iid in (5, 6):
                    assert c.ticker_state(iid) == r.ticker_state(iid)
    finally:
        _set_one_pass(was)


def test_trade_ids_fit_bigint():
    assert trade_id(b"2290000001189048101") == 2290000001189048101
    assert trade_id(b"9223372036854775807") == I64_MAX
    big = trade_id(b"9223372036854775808")
    uuid = trade_id(b"a9188a0a-82bc-50de-be60-03eedbe3cdd7")
    assert 0 <= big <= I64_MAX and 0 <= uuid <= I64_MAX and uuid != trade_id(b"a9188a0a-82bc-50de-be60-03eedbe3cdd8")
    c, r = pair({"BTCUSDT": 5})
    for i in ("9223372036854775808", "a9188a0a-82bc-50de-be60-03eedbe3cdd7", "", "00012", "1" * 25):
        t = {"topic": "publicTrade.BTCUSDT", "type": "snapshot", "ts": 1,
             "data": [{"T": 5, "s": "BTCUSDT", "S": "Sell", "v": "1", "p": "2", "i": i}]}
        res = agree(c, r, json.dumps(t))
        assert _split(res[1])[0].trade_id == trade_id(i.encode())


# --------------------------------------------------------------------------- hypothesis: generated and mutated frames

SYMS = {"BTCUSDT": 1, "ETHUSDT": 2}
GEN = pair(SYMS, {"BTCUSDT": 3, "ETHUSDT": 9})
weird = st.one_of(st.none(), st.booleans(), st.integers(-(1 << 70), 1 << 70), st.text(max_size=6),
                  st.sampled_from(["", "1e5", "-3", "0.1234567891", "abc", "9" * 25, "1e-3", "0"]),
                  st.lists(st.integers(0, 3), max_size=2))
dec = st.integers(0, 9).flatmap(lambda k: st.decimals(
    allow_nan=False, allow_infinity=False, places=4, min_value=0, max_value=10**9).map(str) if k else st.sampled_from(
    ["", "0", "1e3", "-0", "-1", "1.0001", "99999999999.5", "5E-2", "0.000000001", "1e30", "x"]))
ms = st.integers(0, 19).flatmap(lambda k: st.integers(0, 2**45) if k else st.integers(-5, 2**66))
ms_any = st.one_of(ms, st.sampled_from(["1673280000000", "", "x1", "99999999999999999999"]))
sym = st.sampled_from(["BTCUSDT", "ETHUSDT", "btcusdt", "BTCUSDT", "ETHUSDT", "NOPE"])


def maybe(s):
    """Usually a valid value, sometimes a wrong-typed one, sometimes absent (KeyError: drop the key)."""
    return st.integers(0, 59).flatmap(lambda k: s if k < 57 else weird if k < 59 else st.just(KeyError))


def mostly(s):
    """An array element: usually valid, sometimes wrong-typed."""
    return st.integers(0, 19).flatmap(lambda k: s if k else weird)


def obj(**f):
    return st.fixed_dictionaries(f).map(lambda d: {k: v for k, v in d.items() if v is not KeyError})


level = mostly(st.tuples(dec, dec).map(list))


@st.composite
def frames(draw):
    kind = draw(st.sampled_from(["book", "trade", "ticker", "ctl", "kline"]))
    typ = maybe(st.sampled_from(["snapshot", "delta"] * 4 + ["x"]))
    if kind == "book":
        data = draw(obj(s=maybe(sym), u=maybe(st.integers(0, 5)), seq=maybe(st.integers(0, 99)),
                        b=maybe(st.lists(level, max_size=3)), a=maybe(st.lists(level, max_size=3))))
        v = draw(obj(topic=st.sampled_from(["orderbook.50.BTCUSDT", "orderbook.", "orderbook.1.X"]), type=typ,
                     ts=maybe(ms), cts=maybe(ms), data=maybe(st.just(data))))
    elif kind == "trade":
        tr = obj(T=maybe(ms), s=maybe(sym), S=maybe(st.sampled_from(["Buy", "Sell", "buy"])), v=maybe(dec),
                 p=maybe(dec), i=maybe(st.one_of(st.text("0123456789abcdef-", max_size=40), st.just("12"))),
                 BT=maybe(st.booleans()), seq=maybe(st.integers(0, 2**64)))
        v = draw(obj(topic=st.just("publicTrade.BTCUSDT"), type=typ, ts=maybe(ms),
                     data=maybe(st.lists(mostly(tr), max_size=3))))
    elif kind == "ticker":
        data = draw(obj(symbol=maybe(sym), bid1Price=maybe(dec), bid1Size=maybe(dec), ask1Price=maybe(dec),
                        ask1Size=maybe(dec), markPrice=maybe(dec), indexPrice=maybe(dec), fundingRate=maybe(dec),
                        nextFundingTime=maybe(ms_any), openInterest=maybe(dec), predictedDeliveryPrice=maybe(dec),
                        lastPrice=maybe(dec)))
        v = draw(obj(topic=st.just("tickers.ETHUSDT"), type=typ, ts=maybe(ms), cs=maybe(st.integers(0, 2**64)),
                     data=maybe(st.just(data))))
    elif kind == "ctl":
        v = draw(obj(success=maybe(st.booleans()), ret_msg=st.just(""), op=maybe(st.sampled_from(
            ["subscribe", "unsubscribe", "ping", "pong", "auth"])), req_id=maybe(st.text(max_size=3))))
    else:
        v = draw(obj(topic=st.sampled_from(["kline.1.BTCUSDT", "kline.", "allLiquidation.BTCUSDT"]), data=weird))
    items = list(v.items())
    draw(st.randoms()).shuffle(items)
    return ("{" + ",".join(json.dumps(k) + ":" + json.dumps(x) for k, x in items) + "}").encode()


@SETTINGS
@given(frames())
def test_generated_frames_agree(frame):
    c, r = GEN
    agree(c, r, frame)
    for iid in SYMS.values():
        assert c.ticker_state(iid) == r.ticker_state(iid)


RECORDED = [ev.text.encode() for _, fr in sessions(S26) for ev in fr if len(ev.text) < 6000]
RECORDED = random.Random(3).sample(RECORDED, 400) + [f for f in RECORDED if b'"tickers.' in f[:30]][:30]
SPECIAL = [b'"', b"\\", b"{", b"}", b"[", b"]", b",", b":", b"-", b".", b"e", b"0", b"\x00", b"\xff",
           b" ", b"null", b"true", b'""', b"1e999", b"99999999999999999999999", b"[" * 40]


@st.composite
def mutated(draw):
    f = bytearray(draw(st.sampled_from(RECORDED)))
    for _ in range(draw(st.integers(1, 3))):
        op = draw(st.integers(0, 5))
        i = draw(st.integers(0, max(0, len(f) - 1)))
        if op == 0:
            del f[i:]
        elif op == 1 and f:
            f[i] ^= 1 << draw(st.integers(0, 7))
        elif op == 2:
            f[i:i] = draw(st.sampled_from(SPECIAL))
        elif op == 3:
            del f[i:i + draw(st.integers(1, 8))]
        elif op == 4 and f:
            f[i] = draw(st.integers(0, 255))
        else:
            j = draw(st.integers(i, min(len(f), i + 40)))
            f[j:j] = f[i:j]
    return bytes(f)


MUT = pair({**LINEAR}, SP_LINEAR)


@SETTINGS
@given(mutated())
def test_mutated_recorded_frames_agree(frame):
    c, r = MUT
    agree(c, r, frame)
    for iid in LINEAR.values():
        assert c.ticker_state(iid) == r.ticker_state(iid)


def test_every_truncation_agrees():
    c, r = pair(LINEAR, SP_LINEAR)
    for frame in RECORDED[:8]:
        for i in range(len(frame)):
            assert agree(c, r, frame[:i])[0] == "error"


# --------------------------------------------------------------------------- book sync


def recs(u, bids=(), asks=(), snap=False, iid=9):
    if snap:
        return snapshot_records(iid, list(bids), list(asks), sequence=u)
    return b"".join(delta(iid, SIDE_BID, _fx(p), _fx(q), sequence=u) for p, q in bids) + \
        b"".join(delta(iid, SIDE_ASK, _fx(p), _fx(q), sequence=u) for p, q in asks)


def test_booksync_contiguous_u_duplicates_gap_and_resync():
    s = BybitBookSync(9)
    a = s.on_delta(5, recs(5, [("1", "1")]))                 # before any snapshot: dropped, resync asked once
    assert a.dropped == 1 and a.needs_snapshot and s.on_delta(6, b"").needs_snapshot is False
    a = s.on_snapshot(10, recs(10, [("1", "1")], [("2", "1")], snap=True))
    assert s.synced and a.snapshot_applied and a.mask & MASK_BBO
    assert s.on_delta(11, recs(11, [("1", "3")])).applied and s.u == 11
    assert s.on_delta(12, b"").applied == [] and s.u == 12   # an empty delta still advances u
    assert s.on_delta(12, recs(12, [("1", "4")])).reason == "duplicate u"
    a = s.on_delta(15, recs(15, [("1", "5")]))
    assert a.gap is not None and (a.gap.kind, a.gap.first_missing, a.gap.last_missing) == (GAP_BYBIT, 13, 14)
    assert a.needs_snapshot and not s.synced and s.stats.gaps == 1
    a = s.on_delta(16, recs(16))                              # one gap, one request: no more until the snapshot
    assert a.gap is None and not a.needs_snapshot and s.stats.gaps == 1
    s.on_snapshot(20, recs(20, [("1", "9")], [("2", "9")], snap=True))
    assert s.synced and s.book.best_bid == (10**9, 9 * 10**9)
    # level 1 re-sends its last snapshot with the same u when nothing changed; a restart sends u = 1
    assert s.on_snapshot(20, recs(20, [("1", "9")], [("2", "9")], snap=True)).snapshot_applied and s.u == 20
    s.on_snapshot(1, recs(1, [("1", "2")], [("3", "1")], snap=True))
    assert s.u == 1 and s.on_delta(2, recs(2)).gap is None and s.stats.gaps == 1


def test_recorded_books_rebuild_without_gaps():
    """Every book frame of both sessions through the codec and BybitBookSync: 0 gaps, never
    crossed, and the final books equal a pure-Python rebuild from the same frames."""
    for path, tables in ((S26, {"/v5/public/linear": LINEAR, "/v5/public/spot": SPOT}),
                         (S25, {"/v5/public/linear": LINEAR25, "/v5/public/spot": SPOT25})):
        for url_path, frames in sessions(path):
            c = BybitCodec(PUB, tables[url_path])
            syncs = {iid: BybitBookSync(iid) for iid in tables[url_path].values()}
            refs = {iid: RefBook(iid, 0, 0) for iid in tables[url_path].values()}
            for ev in frames:
                msg = json.loads(ev.text)
                if not msg.get("topic", "").startswith("orderbook."):
                    continue
                c.decode(ev.text, ev.ts_ns)
                s = syncs[c.instrument_id]
                a = (s.on_snapshot if msg["type"] == "snapshot" else s.on_delta)(c.first_seq, bytes(c.output()))
                assert a.gap is None and not a.crossed and not a.dropped
                d, ref = msg["data"], refs[c.instrument_id]
                if msg["type"] == "snapshot":
                    ref.apply(snapshot_records(c.instrument_id, d["b"], d["a"]))
                else:
                    ref.apply(recs(0, d["b"], d["a"], iid=c.instrument_id))
            for iid, s in syncs.items():
                if s.synced:
                    assert s.book.levels(SIDE_BID) == refs[iid].levels(SIDE_BID)
                    assert s.book.levels(SIDE_ASK) == refs[iid].levels(SIDE_ASK)
                assert s.stats.gaps == 0 and s.stats.crossed == 0


# --------------------------------------------------------------------------- symbology


def rest_bodies() -> dict[str, bytes]:
    return {e.url.split("category=")[1].split("&")[0]: e.text.encode() for e in read_file(S26) if e.kind == "rest"}


def test_symbology_from_recorded_instruments():
    b = rest_bodies()
    sym = BybitSymbology.from_reference(b"[" + b["linear"] + b"," + b["spot"] + b"]")
    assert len(sym) == 800 + 557
    assert sym.to_canonical("linear:BTCUSDT") == "BTCUSDT-USDT-PERP" and sym.to_canonical("spot:BTCUSDT") == "BTCUSDT"
    assert sym.to_venue("BTCUSDC-USDC-PERP") == "linear:BTCPERP"
    assert sym.to_venue("BTCUSD") == "spot:BTCUSD"         # Bybit spot lists a USD pair too
    lin, spot = sym.info("linear:BTCUSDT"), sym.info("Spot:btcusdt")
    assert (lin.kind, lin.settle, lin.size_precision, lin.lot_size, str(lin.tick_size)) == (
        "perpetual_linear", "USDT", 3, Decimal("0.001"), "0.1")
    assert (spot.kind, spot.size_precision, spot.rest_name) == ("spot", 6, "BTCUSDT")
    fut = sym.info("linear:BTCUSDT-25DEC26")
    assert (fut.kind, fut.expiry, fut.canonical) == ("future_linear", "261225", "BTCUSDT-USDT-261225")
    with pytest.raises(SymbologyError, match="names several instruments"):
        sym.to_canonical("BTCUSDT")                          # spot and linear: ambiguous bare name
    assert split_venue_symbol("linear:btcusdt") == ("linear", "BTCUSDT")
    # the global USDT -> USD alias merges spot BTCUSDT and BTCUSD: both poisoned (why the
    # provider takes quote aliases from its own config only); linear has no USD pair
    aliased = BybitSymbology.from_reference(b"[" + b["linear"] + b"," + b["spot"] + b"]", {"USDT": "USD"})
    assert "BTCUSD" in aliased.collisions() and aliased.to_venue("BTCUSD-USD-PERP") == "linear:BTCUSDT"
    with pytest.raises(SymbologyError, match="both map"):
        aliased.select(["BTCUSD"])


def test_symbology_inverse_and_errors():
    doc = {"retCode": 0, "retMsg": "OK", "result": {"category": "inverse", "list": [
        {"symbol": "BTCUSD", "contractType": "InversePerpetual", "status": "Trading", "baseCoin": "BTC",
         "quoteCoin": "USD", "settleCoin": "BTC", "deliveryTime": "0", "priceFilter": {"tickSize": "0.50"},
         "lotSizeFilter": {"qtyStep": "1"}},
        {"symbol": "BTCUSDZ26", "contractType": "InverseFutures", "status": "Trading", "baseCoin": "BTC",
         "quoteCoin": "USD", "settleCoin": "BTC", "deliveryTime": "1798185600000",
         "priceFilter": {"tickSize": "0.50"}, "lotSizeFilter": {"qtyStep": "1"}}]}}
    sym = BybitSymbology.from_reference(json.dumps(doc))
    assert sym.to_canonical("inverse:BTCUSD") == "BTCUSD-BTC-PERP"
    assert sym.to_canonical("inverse:BTCUSDZ26") == "BTCUSD-BTC-261225"
    assert sym.info("inverse:BTCUSD").size_precision == 0
    with pytest.raises(SymbologyError, match="request failed"):
        BybitSymbology.from_reference('{"retCode":10001,"retMsg":"params error","result":{}}')
    with pytest.raises(SymbologyError, match="contractType"):
        BybitSymbology.from_reference(json.dumps({"retCode": 0, "result": {"category": "linear", "list": [
            {"symbol": "X", "contractType": "InversePerpetual", "baseCoin": "X", "quoteCoin": "USD"}]}}))
    assert category_of("BTCUSD") == "spot" and category_of("BTCUSDT-USDT-PERP") == "linear"
    assert category_of("BTCUSD-BTC-261225") == "inverse" and category_of("BTCUSDC-USDC-261225") == "linear"
    with pytest.raises(ConfigError):
        category_of("BTCUSD-BTC-261225-40000-C")


def test_provider_config_and_connection_count():
    raw = {"providers": {"b": {"kind": "bybit", "ws_url": "ws://x/v5/public", "symbols": ["BTCUSDT", "ETHUSDT-USDT-PERP"],
                               "depth": 50}}}
    cfg = parse(raw, env={})
    p = cfg.providers["b"]
    assert categories(p) == ["spot", "linear"] and BybitProvider.websocket_connections(p) == 2
    from dm.supervisor import Supervisor
    assert Supervisor(cfg, "x.toml").replay_connections() == 2   # what a --once replay waits for
    bad = {"providers": {"b": {"kind": "bybit", "ws_url": "ws://x", "symbols": ["BTCUSDT"], "depth": 7}}}
    with pytest.raises(ConfigError, match="depth"):
        BybitProvider(parse(bad, env={}), parse(bad, env={}).providers["b"])
    bad["providers"]["b"].update(depth=1, channels=["book"])
    with pytest.raises(ConfigError, match="unknown Bybit v5 topic"):
        BybitProvider(parse(bad, env={}), parse(bad, env={}).providers["b"])


# --------------------------------------------------------------------------- replay server


def arun(coro, timeout: float = 30.0):
    async def main():
        return await asyncio.wait_for(coro, timeout)
    return asyncio.run(main())


async def collect(url: str, send: list[dict]) -> list[str]:
    out = []
    async with aiohttp.ClientSession() as s:
        async with s.ws_connect(url, max_msg_size=0) as ws:
            for m in send:
                await ws.send_str(json.dumps(m))
            async for msg in ws:
                if msg.type != aiohttp.WSMsgType.TEXT:
                    break
                out.append(msg.data)
    return out


def test_replay_serves_each_jsonl_connection_on_its_url():
    """One JSONL file, two recorded connections: /v5/public/linear serves only the linear
    connection's frames, /v5/public/spot only the spot one's, each in recorded order and each
    exactly once; acks in the form each connection recorded them, with the request's req_id."""
    want = {p: [e.text for e in fr if '"topic"' in e.text[:12] or '"topic"' in e.text[:30]] for p, fr in sessions(S26)}

    async def main():
        async with ReplayServer([S26], speed=0, once=True, expected_connections=2, linger=0.1) as srv:
            base = srv.ws_url("bybit")
            assert base.endswith("/v5/public")
            lin_topics = sorted({json.loads(t)["topic"] for t in want["/v5/public/linear"]})
            spot_topics = sorted({json.loads(t)["topic"] for t in want["/v5/public/spot"]})
            lin, spot = await asyncio.gather(
                collect(base + "/linear", [{"op": "subscribe", "req_id": "a", "args": lin_topics[:10]},
                                           {"op": "subscribe", "req_id": "b", "args": lin_topics[10:]}]),
                collect(base + "/spot", [{"op": "subscribe", "req_id": "c", "args": spot_topics}]))
            await srv.wait_done()
            return lin, spot
    lin, spot = arun(main())
    for got, path, acks in ((lin, "/v5/public/linear", ["a", "b"]), (spot, "/v5/public/spot", ["c"])):
        ack = [json.loads(t) for t in got if '"op"' in t]
        assert [a["req_id"] for a in ack] == acks and all(a["success"] for a in ack)
        data = [t for t in got if '"op"' not in t]
        assert sorted(data) == sorted(want[path]) and len(data) == len(want[path])
        by_topic = defaultdict(list)
        for t in want[path]:
            by_topic[json.loads(t)["topic"]].append(t)
        got_by_topic = defaultdict(list)
        for t in data:
            got_by_topic[json.loads(t)["topic"]].append(t)
        assert got_by_topic == by_topic               # per topic, in recorded order
    assert '"ret_msg":"subscribe"' in next(t for t in spot if '"op"' in t)   # spot's own ack form


def test_replay_pong_unknown_topics_rest_and_split_session():
    async def main():
        async with ReplayServer([S25, S26], speed=0) as srv:
            base = srv.ws_url("bybit")
            out = []
            async with aiohttp.ClientSession() as s:
                async with s.ws_connect(base + "/spot") as ws:
                    await ws.send_str('{"op":"ping","req_id":"7"}')
                    out.append(json.loads((await ws.receive()).data))
                    await ws.send_str('{"op":"subscribe","req_id":"8","args":["orderbook.1.OPUSDC","tickers.NOPE"]}')
                    out.append(json.loads((await ws.receive()).data))
                    out.append(json.loads((await ws.receive()).data))        # OPUSDC from the 2025 session
                for cat in ("linear", "spot", "inverse"):
                    async with s.get(srv.rest_url() + f"/v5/market/instruments-info?category={cat}&limit=1000") as r:
                        out.append((r.status, (await r.read())[:80]))
            return out
    pong, ack, frame, lin, spot, inv = arun(main())
    assert (pong["op"], pong["ret_msg"], pong["req_id"], pong["success"]) == ("ping", "pong", "7", True)
    assert ack["success"] is False and "tickers.NOPE" in ack["ret_msg"] and ack["req_id"] == "8"
    assert frame["topic"] == "orderbook.1.OPUSDC"
    assert lin[0] == 200 and b'"category":"linear"' in lin[1] and spot[0] == 200 and b'"category":"spot"' in spot[1]
    assert inv[0] == 404


def test_once_serves_a_category_connecting_after_another_finished():
    """--once: a venue path that ran to the end refuses reconnects (410), but the venue's other
    paths stay open (before, the whole venue was refused once its first connection ended)."""
    async def main():
        async with ReplayServer([S26], speed=0, once=True, expected_connections=2, linger=0.05) as srv:
            base = srv.ws_url("bybit")
            spot = await collect(base + "/spot", [{"op": "subscribe", "args": ["publicTrade.BTCUSDT"]}])
            async with aiohttp.ClientSession() as s:
                with pytest.raises(aiohttp.WSServerHandshakeError) as e:
                    await s.ws_connect(base + "/spot")
                assert e.value.status == 410
            lin = await collect(base + "/linear", [{"op": "subscribe", "args": ["publicTrade.ETHUSDT"]}])
            await srv.wait_done()
            return spot, lin
    spot, lin = arun(main())
    assert sum('"publicTrade.BTCUSDT"' in t for t in spot) == 11
    assert sum('"publicTrade.ETHUSDT"' in t for t in lin) > 0
