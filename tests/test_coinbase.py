"""Coinbase (dm/venues/coinbase): codec vs its pure-Python oracle on every recorded frame of both
sessions (Exchange feed 2021, Advanced Trade 2026), on generated and mutated frames
(hypothesis); the codec's records checked against the recordings parsed independently (json +
Decimal); ISO-8601 times; values rejected alone; the book sync rules (sequence_num breaks,
Exchange snapshots); symbology from both recorded products bodies; the replay handler."""
from __future__ import annotations

import asyncio
import json
from collections import Counter, defaultdict
from datetime import datetime, timezone
from decimal import Decimal
from pathlib import Path

import aiohttp
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dm import records as REC
from dm._codec import KINDS
from dm.config import parse
from dm.errors import CodecError, ConfigError, SymbologyError
from dm.recording import read_recording, ws_sessions
from dm.records import SIDE_ASK, SIDE_BID, UNDEF_PRICE
from dm.replay import ReplayServer
from dm.venues import venue, venue_of_url
from dm.venues.coinbase._codec import CoinbaseCodec
from dm.venues.coinbase.booksync import GAP_SEQUENCE, CoinbaseBookSync, SequenceTracker
from dm.venues.coinbase.codec_ref import RefCoinbaseCodec
from dm.venues.coinbase.provider import CoinbaseProvider
from dm.venues.coinbase.symbology import CoinbaseSymbology
from tests.book_ref import FLAG_SNAPSHOT as F_SNAP, RefBook, clear, delta

ROOT = Path(__file__).resolve().parent.parent
S21 = ROOT / "data/coinbase/2021-04-17"
S26 = ROOT / "data/coinbase/2026-08-09/COINBASE.jsonl.zst"
PUB = 1008
SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

EX_PRODUCTS = ["SKL-USD", "SKL-BTC", "SKL-GBP", "BAND-GBP", "BAND-BTC", "NMR-EUR", "YFI-BTC", "DASH-BTC", "NU-GBP",
               "CRV-EUR"]
EX = {p: i + 1 for i, p in enumerate(EX_PRODUCTS)}
AT = {"BTC-USD": 21, "ETH-USD": 22}


def snap_recs(iid: int, bids, asks) -> bytes:
    """CLEAR + one ADD per (price, size) level (integers as the codec scales them), bids then asks."""
    return (clear(iid) + b"".join(delta(iid, ord("B"), p, q, flags=F_SNAP) for p, q in bids)
            + b"".join(delta(iid, ord("A"), p, q, flags=F_SNAP) for p, q in asks))


def rest_bodies() -> dict[str, str]:
    """REST path -> recorded body, both sessions."""
    out = {}
    for path in (S21, S26):
        for ev in read_recording(path):
            if ev.kind == "rest":
                out[ev.url.split("coinbase.com", 1)[1]] = ev.text
    return out


REST = rest_bodies()
SYM21 = CoinbaseSymbology.from_reference(REST["/products"])
SYM26 = CoinbaseSymbology.from_reference(REST["/api/v3/brokerage/market/products"])
SP21 = {p: SYM21.info(p).size_precision for p in EX}
SP26 = {p: SYM26.info(p).size_precision for p in AT}


def frames(path) -> list:
    (s,) = ws_sessions(read_recording(path))
    return s.frames


F21, F26 = frames(S21), frames(S26)


def pair(symbols: dict, precisions: dict | None = None):
    c, r = CoinbaseCodec(PUB), RefCoinbaseCodec(PUB)
    for s, iid in symbols.items():
        sp = (precisions or {}).get(s, 9)
        c.add_symbol(s, iid, sp)
        r.add_symbol(s, iid, sp)
    return c, r


def outcome(codec, frame, ts=1_700_000_000_000_000_000):
    try:
        n = codec.decode(frame, ts)
    except CodecError as e:
        return ("error", type(e).__name__, e.venue, e.reason, e.field, e.offset, codec.sequence_num)
    out = bytes(codec.output())
    return (n, out, codec.last_kind, codec.instrument_id, codec.first_seq, codec.last_seq, codec.sequence_num,
            codec.mixed, list(codec.value_errors), codec.value_error_count)


def agree(c, r, frame, ts=1_700_000_000_000_000_000):
    a, b = outcome(c, frame, ts), outcome(r, frame, ts)
    assert a == b, frame[:300]
    return a


def split(buf: bytes) -> list:
    out, i = [], 0
    while i < len(buf):
        n = buf[i] * 4
        out.append(REC.unpack(buf[i:i + n]))
        i += n
    return out


def fx(text: str, scale: int = 9) -> int:
    d = Decimal(text).scaleb(scale)
    assert d == d.to_integral_value()
    return int(d)


def iso_ns(text: str) -> int:
    """The test's own ISO-8601 reading (datetime for the seconds, the fraction as text)."""
    body, _, frac = text.rstrip("Z").partition(".")
    dt = datetime.strptime(body, "%Y-%m-%dT%H:%M:%S").replace(tzinfo=timezone.utc)
    return int(dt.timestamp()) * 1_000_000_000 + int((frac + "000000000")[:9])


# --------------------------------------------------------------------------- golden: every recorded frame


@pytest.mark.parametrize("session", ["2021-exchange", "2026-advanced"])
def test_every_recorded_frame_agrees_with_the_oracle(session):
    evs, syms, sps = (F21, EX, SP21) if session == "2021-exchange" else (F26, AT, SP26)
    c, r = pair(syms, sps)
    kinds = Counter()
    for ev in evs:
        res = agree(c, r, ev.text, ev.ts_ns)
        assert res[0] != "error", (ev.text[:200], res)
        assert res[9] == 0  # nothing rejected on real data, at the products' own size precisions
        kinds[c.last_kind] += 1
    assert c.counts() == r.counts()
    if session == "2021-exchange":
        assert kinds == {KINDS["book"]: 9719, KINDS["bookSnapshot"]: 10, KINDS["ticker"]: 107, KINDS["trade"]: 97,
                         KINDS["tradeSnapshot"]: 10, KINDS["subscription"]: 3}
    else:
        assert kinds == {KINDS["book"]: 773, KINDS["bookSnapshot"]: 2, KINDS["ticker"]: 160, KINDS["trade"]: 57,
                         KINDS["tradeSnapshot"]: 2, KINDS["subscription"]: 5, KINDS["heartbeat"]: 25,
                         KINDS["kline"]: 6}


def test_advanced_sequence_num_is_contiguous_on_the_recording():
    c = CoinbaseCodec(PUB)
    for p, iid in AT.items():
        c.add_symbol(p, iid, SP26[p])
    t = SequenceTracker()
    seqs = []
    for ev in F26:
        c.decode(ev.text, ev.ts_ns)
        assert c.sequence_num >= 0
        seqs.append(c.sequence_num)
        assert t.on_message(c.sequence_num) is None
    assert seqs == list(range(len(F26)))
    assert t.breaks == 0


def test_exchange_records_match_the_recording_parsed_independently():
    c, _ = pair(EX, SP21)
    n_trades = n_levels = n_bbo = 0
    for ev in F21:
        msg = json.loads(ev.text)
        n = c.decode(ev.text, ev.ts_ns)
        recs = split(bytes(c.output()))
        assert len(recs) == n
        t = msg["type"]
        if t in ("match", "last_match"):
            (tr,) = recs
            sp = SP21[msg["product_id"]]
            assert isinstance(tr, REC.Trade)
            assert tr.instrument_id == EX[msg["product_id"]]
            assert (tr.price, tr.size, tr.size_precision) == (fx(msg["price"]), fx(msg["size"], sp), sp)
            assert tr.trade_id == msg["trade_id"] and tr.sequence == msg["sequence"]
            assert tr.side == (SIDE_ASK if msg["side"] == "buy" else SIDE_BID)   # side = maker side
            assert tr.ts_event == iso_ns(msg["time"]) and tr.ts_recv == ev.ts_ns
            assert bool(tr.flags & REC.Flag.SNAPSHOT) == (t == "last_match")
            n_trades += 1
        elif t == "ticker":
            (b,) = recs
            assert (b.bid_px, b.ask_px, b.bid_sz, b.ask_sz) == (fx(msg["best_bid"]), fx(msg["best_ask"]), 0, 0)
            assert b.sequence == msg["sequence"] and b.ts_event == iso_ns(msg["time"])
            n_bbo += 1
        elif t == "snapshot":
            sp = SP21[msg["product_id"]]
            assert recs[0].action == REC.ACTION_CLEAR
            levels = [(r.side, r.price, r.size) for r in recs[1:]]
            assert levels == ([(SIDE_BID, fx(p), fx(s, sp)) for p, s, *_ in msg["bids"]]
                              + [(SIDE_ASK, fx(p), fx(s, sp)) for p, s, *_ in msg["asks"]])
            assert all(r.flags & REC.Flag.SNAPSHOT for r in recs) and recs[-1].flags & REC.Flag.LAST
        elif t == "l2update":
            sp = SP21[msg["product_id"]]
            assert [(r.side, r.price, r.size, r.ts_event) for r in recs] == [
                (SIDE_BID if s == "buy" else SIDE_ASK, fx(p), fx(q, sp), iso_ns(msg["time"])) for s, p, q in msg["changes"]]
            n_levels += len(recs)
    assert (n_trades, n_bbo, n_levels) == (107, 107, 9719)


def test_advanced_records_match_the_recording_parsed_independently():
    c, _ = pair(AT, SP26)
    n_trades = n_bbo = n_levels = 0
    for ev in F26:
        msg = json.loads(ev.text)
        c.decode(ev.text, ev.ts_ns)
        recs = split(bytes(c.output()))
        ch, seq = msg["channel"], msg["sequence_num"]
        assert all(r.sequence == seq for r in recs)
        if ch == "market_trades":
            want = [(AT[t["product_id"]], fx(t["price"]), fx(t["size"], SP26[t["product_id"]]), int(t["trade_id"]),
                     SIDE_ASK if t["side"] == "BUY" else SIDE_BID, iso_ns(t["time"]), e["type"] == "snapshot")
                    for e in msg["events"] for t in e["trades"]]
            assert [(r.instrument_id, r.price, r.size, r.trade_id, r.side, r.ts_event,
                     bool(r.flags & REC.Flag.SNAPSHOT)) for r in recs] == want
            n_trades += len(recs)
        elif ch == "ticker":
            want = [(AT[t["product_id"]], fx(t["best_bid"]), fx(t["best_bid_quantity"], SP26[t["product_id"]]),
                     fx(t["best_ask"]), fx(t["best_ask_quantity"], SP26[t["product_id"]]), iso_ns(msg["timestamp"]))
                    for e in msg["events"] for t in e["tickers"]]
            assert [(r.instrument_id, r.bid_px, r.bid_sz, r.ask_px, r.ask_sz, r.ts_event) for r in recs] == want
            n_bbo += len(recs)
        elif ch == "l2_data":
            want = []
            for e in msg["events"]:
                if e["type"] == "snapshot":
                    want.append((REC.ACTION_CLEAR, None, None, None))
                sp = SP26[e["product_id"]]
                want += [(REC.ACTION_ADD if fx(u["new_quantity"], sp) else REC.ACTION_CANCEL,
                          SIDE_BID if u["side"] == "bid" else SIDE_ASK, fx(u["price_level"]), fx(u["new_quantity"], sp))
                         for u in e["updates"]]
            got = [(r.action, None, None, None) if r.action == REC.ACTION_CLEAR else (r.action, r.side, r.price, r.size)
                   for r in recs]
            assert got == want
            n_levels += len(recs)
    assert n_trades == 279 and n_bbo == 160 and n_levels > 0


# --------------------------------------------------------------------------- times, values, control frames


@given(st.datetimes(min_value=datetime(1970, 1, 1), max_value=datetime(2554, 7, 21)),
       st.integers(0, 10 ** 9 - 1), st.integers(1, 9))
@SETTINGS
def test_iso_times_are_exact(dt, ns, digits):
    frac = str(ns).rjust(9, "0")[:digits]
    text = dt.strftime("%Y-%m-%dT%H:%M:%S") + "." + frac + "Z"
    frame = json.dumps({"type": "l2update", "product_id": "SKL-USD", "time": text, "changes": [["buy", "1", "2"]]})
    c, r = pair({"SKL-USD": 1})
    res = agree(c, r, frame)
    assert split(res[1])[0].ts_event == iso_ns(text)


@pytest.mark.parametrize("text", ["2021-04-17T16:43:37.075351", "2021-04-17 16:43:37Z", "2021-02-29T00:00:00Z",
                                  "2021-04-31T00:00:00Z", "1969-12-31T23:59:59Z", "2021-04-17T24:00:00Z",
                                  "2021-04-17T16:43:37.Z", "2021-04-17T16:43:37.0753510000Z", "2021-4-17T16:43:37Z",
                                  "2021-04-17T16:43:37+00:00", ""])
def test_invalid_times_are_frame_errors(text):
    frame = json.dumps({"type": "l2update", "product_id": "SKL-USD", "time": text, "changes": [["buy", "1", "2"]]})
    c, r = pair({"SKL-USD": 1})
    res = agree(c, r, frame)
    assert res[0] == "error" and res[3] == "invalid timestamp"


def test_time_beyond_u64_ns_is_out_of_range():
    c, r = pair({"SKL-USD": 1})
    for text, reason in (("2554-07-21T23:34:33.709551615Z", None), ("2554-07-21T23:34:33.709551616Z", "timestamp out of range"),
                         ("3026-08-09T21:06:01Z", "timestamp out of range")):
        frame = json.dumps({"type": "l2update", "product_id": "SKL-USD", "time": text, "changes": [["buy", "1", "2"]]})
        res = agree(c, r, frame)
        if reason is None:
            assert split(res[1])[0].ts_event == (1 << 64) - 1
        else:
            assert res[3] == reason


def test_leap_day_and_nanoseconds():
    c, r = pair({"BTC-USD": 1}, {"BTC-USD": 8})
    frame = json.dumps({"channel": "ticker", "timestamp": "2024-02-29T23:59:59.999999999Z", "sequence_num": 7,
                        "events": [{"type": "update", "tickers": [{"product_id": "BTC-USD", "best_bid": "1",
                                                                   "best_ask": "2", "best_bid_quantity": "0.5",
                                                                   "best_ask_quantity": "0.25"}]}]})
    res = agree(c, r, frame)
    (b,) = split(res[1])
    assert b.ts_event == 1709251199_999999999 and b.sequence == 7 and (b.bid_sz, b.ask_sz) == (50000000, 25000000)


def test_values_that_do_not_fit_are_rejected_alone():
    c, r = pair({"SKL-USD": 1}, {"SKL-USD": 1})
    frame = json.dumps({"type": "snapshot", "product_id": "SKL-USD",
                        "bids": [["0.79", "1.25"], ["0.78", "5.5"], ["99999999999", "1"]], "asks": [["0.80", "-1"], ["0.81", "2"]]})
    res = agree(c, r, frame)
    recs = split(res[1])
    assert [(x.price, x.size) for x in recs[1:]] == [(780000000, 55), (810000000, 20)]
    assert res[9] == 3 and {e[2] for e in res[8]} == {"more fractional digits than the instrument's size_precision",
                                                      "out of range", "negative value"}
    # a ticker side whose value does not fit is emptied alone
    frame = json.dumps({"type": "ticker", "product_id": "SKL-USD", "sequence": 5, "best_bid": "0.7",
                        "best_ask": "0.8", "best_bid_size": "0.05", "best_ask_size": "3", "time": "2021-04-17T16:43:37Z"})
    (b,) = split(agree(c, r, frame)[1])
    assert (b.bid_px, b.bid_sz, b.ask_px, b.ask_sz) == (UNDEF_PRICE, 0, 800000000, 30)
    # a trade that does not fit is dropped alone, the frame still decodes
    frame = json.dumps({"channel": "market_trades", "timestamp": "2026-08-09T21:05:48Z", "sequence_num": 3, "events": [
        {"type": "update", "trades": [
            {"product_id": "SKL-USD", "trade_id": "1", "price": "1", "size": "0.01", "time": "2026-08-09T21:05:48Z", "side": "BUY"},
            {"product_id": "SKL-USD", "trade_id": "2", "price": "1", "size": "0.1", "time": "2026-08-09T21:05:48Z", "side": "SELL"}]}]})
    res = agree(c, r, frame)
    (t,) = split(res[1])
    assert t.trade_id == 2 and t.side == SIDE_BID and res[9] == 1


def test_control_frames_errors_and_mixed_level2():
    c, r = pair({"BTC-USD": 1, "ETH-USD": 2})
    assert agree(c, r, '{"type":"heartbeat","sequence":1,"last_trade_id":2,"product_id":"BTC-USD","time":"x"}')[2] == KINDS["heartbeat"]
    assert agree(c, r, '{"type":"error","message":"Failed to subscribe"}')[2] == KINDS["error"]
    res = agree(c, r, '{"channel":"subscriptions","timestamp":"2026-08-09T21:05:48Z","sequence_num":0,"events":[]}')
    assert res[2] == KINDS["subscription"] and res[6] == 0
    assert agree(c, r, '{"type":"received","product_id":"BTC-USD"}')[3] == "unknown type"
    assert agree(c, r, '{"channel":"user","sequence_num":4,"events":[]}')[3] == "unknown channel"
    res = agree(c, r, '{"channel":"l2_data","sequence_num":4,"events":[]}')
    assert res[3] == "no events" and res[6] == 4          # the sequence_num was read: the frame arrived
    assert agree(c, r, '{"type":"l2update","product_id":"XRP-USD","time":"2021-04-17T16:43:37Z","changes":[]}')[1] == "UnknownInstrumentError"
    mixed = json.dumps({"channel": "l2_data", "timestamp": "2026-08-09T21:05:48Z", "sequence_num": 9, "events": [
        {"type": "update", "product_id": "BTC-USD", "updates": [
            {"side": "bid", "event_time": "2026-08-09T21:05:48Z", "price_level": "1", "new_quantity": "2"}]},
        {"type": "snapshot", "product_id": "ETH-USD", "updates": [
            {"side": "offer", "event_time": "2026-08-09T21:05:48Z", "price_level": "3", "new_quantity": "4"}]}]})
    res = agree(c, r, mixed)
    assert res[7] is True and res[2] == KINDS["bookSnapshot"] and res[3] == 2
    assert [x.instrument_id for x in split(res[1])] == [1, 2, 2]


# --------------------------------------------------------------------------- hypothesis: generated + mutated


DEC = st.one_of(st.decimals(min_value=0, max_value=10 ** 7, places=4, allow_nan=False).map(str),
                st.sampled_from(["0", "0.00000001", "1e5", "-1", "", "1.0000000001", "99999999999999999999", "abc"]))
TIME = st.one_of(st.just("2021-04-17T16:43:37.075351Z"), st.just("2026-08-09T21:05:48.228568804Z"),
                 st.text(max_size=30))
PRODUCT = st.sampled_from(["BTC-USD", "ETH-USD", "btc-usd", "XRP-USD"])


def maybe(d: dict, draw) -> dict:
    keys = list(d)
    drop = draw(st.sets(st.sampled_from(keys), max_size=1)) if keys and draw(st.integers(0, 9)) == 0 else set()
    return {k: v for k, v in d.items() if k not in drop}


@st.composite
def gen_frames(draw):
    kind = draw(st.sampled_from(["l2update", "snapshot", "match", "ticker", "l2_data", "market_trades", "at_ticker",
                                 "heartbeats"]))
    p = draw(PRODUCT)
    if kind == "l2update":
        d = {"type": "l2update", "product_id": p, "time": draw(TIME),
             "changes": draw(st.lists(st.tuples(st.sampled_from(["buy", "sell", "x"]), DEC, DEC).map(list), max_size=3))}
    elif kind == "snapshot":
        d = {"type": "snapshot", "product_id": p, "bids": draw(st.lists(st.tuples(DEC, DEC).map(list), max_size=3)),
             "asks": draw(st.lists(st.tuples(DEC, DEC).map(list), max_size=3))}
    elif kind == "match":
        d = {"type": draw(st.sampled_from(["match", "last_match"])), "trade_id": draw(st.integers(0, 2 ** 64)),
             "side": draw(st.sampled_from(["buy", "sell", "BUY"])), "size": draw(DEC), "price": draw(DEC),
             "product_id": p, "sequence": draw(st.integers(-1, 2 ** 64)), "time": draw(TIME)}
    elif kind == "ticker":
        d = {"type": "ticker", "product_id": p, "best_bid": draw(DEC), "best_ask": draw(DEC), "sequence": 3,
             "best_bid_size": draw(DEC), "time": draw(TIME)}
    else:
        ev = {"type": draw(st.sampled_from(["snapshot", "update", "other"]))}
        if kind == "l2_data":
            ev.update(product_id=p, updates=[maybe({"side": draw(st.sampled_from(["bid", "offer", "ask"])),
                                                    "event_time": draw(TIME), "price_level": draw(DEC),
                                                    "new_quantity": draw(DEC)}, draw)
                                             for _ in range(draw(st.integers(0, 3)))])
        elif kind == "market_trades":
            ev["trades"] = [maybe({"product_id": draw(PRODUCT), "trade_id": draw(st.sampled_from(["1", "x", "99999999999999999999"])),
                                   "price": draw(DEC), "size": draw(DEC), "time": draw(TIME),
                                   "side": draw(st.sampled_from(["BUY", "SELL", "buy", "?"]))}, draw)
                            for _ in range(draw(st.integers(0, 3)))]
        elif kind == "at_ticker":
            ev["tickers"] = [maybe({"product_id": p, "best_bid": draw(DEC), "best_ask": draw(DEC),
                                    "best_bid_quantity": draw(DEC), "best_ask_quantity": draw(DEC)}, draw)]
        d = {"channel": {"l2_data": "l2_data", "market_trades": "market_trades", "at_ticker": "ticker",
                         "heartbeats": "heartbeats"}[kind],
             "timestamp": draw(TIME), "sequence_num": draw(st.integers(-1, 2 ** 64)),
             "events": draw(st.lists(st.just(maybe(ev, draw)), max_size=2))}
    return json.dumps(maybe(d, draw))


@SETTINGS
@given(gen_frames())
def test_generated_frames_agree(frame):
    c, r = pair({"BTC-USD": 1, "ETH-USD": 2}, {"BTC-USD": 8, "ETH-USD": 4})
    agree(c, r, frame)


SAMPLE = [ev.text for ev in F21[::97]] + [ev.text for ev in F26[::11]]


@st.composite
def mutated(draw):
    text = draw(st.sampled_from(SAMPLE)).encode()
    b = bytearray(text)
    for _ in range(draw(st.integers(1, 3))):
        i = draw(st.integers(0, len(b) - 1))
        op = draw(st.integers(0, 2))
        if op == 0:
            b[i] = draw(st.sampled_from(b'{}[]",:0123456789.-eE tnfx\\'))
        elif op == 1:
            del b[i]
        else:
            b.insert(i, draw(st.sampled_from(b'{}[]",:0-')))
    return bytes(b)


@SETTINGS
@given(mutated())
def test_mutated_recorded_frames_agree(frame):
    c, r = pair({**EX, **AT}, {**SP21, **SP26})
    agree(c, r, frame)


def test_every_truncation_agrees():
    c, r = pair({**EX, **AT}, {**SP21, **SP26})
    for text in (F21[5].text, F21[20].text, F26[10].text, F26[40].text):
        b = text.encode()
        for n in range(0, len(b), max(1, len(b) // 300)):
            agree(c, r, b[:n])


# --------------------------------------------------------------------------- book sync


def rebuild(evs, syms, sps):
    """Every recorded level2 frame through the codec and a CoinbaseBookSync per product (sizes
    at its own precision), checked against RefBook fed from the recording's own JSON; returns
    ({iid: sync}, tickers, tickers equal to the book top)."""
    c = CoinbaseCodec(PUB)
    for p, iid in syms.items():
        c.add_symbol(p, iid, sps[p])
    syncs = {iid: CoinbaseBookSync(iid, PUB, size_precision=sps[p]) for p, iid in syms.items()}
    refs = {iid: RefBook(iid) for iid in syms.values()}
    tops_ok = tops = n_book = 0
    for ev in evs:
        msg = json.loads(ev.text)
        c.decode(ev.text, ev.ts_ns)
        if c.last_kind in (KINDS["book"], KINDS["bookSnapshot"]):
            iid = c.instrument_id
            act = syncs[iid].on_snapshot(c.output()) if c.last_kind == KINDS["bookSnapshot"] else syncs[iid].on_update(c.output())
            assert act.gap is None and not act.crossed and not act.dropped
            ref = refs[iid]
            if "events" in msg:
                for e in msg["events"]:
                    sp = sps[e["product_id"]]
                    lv = [(u["side"], fx(u["price_level"]), fx(u["new_quantity"], sp)) for u in e["updates"]]
                    if e["type"] == "snapshot":
                        ref.apply(snap_recs(iid, [(p, q) for s_, p, q in lv if s_ == "bid"],
                                                   [(p, q) for s_, p, q in lv if s_ == "offer"]))
                    else:
                        ref.apply(b"".join(delta(iid, ord("B") if s_ == "bid" else ord("A"), p, q) for s_, p, q in lv))
            else:
                sp = sps[msg["product_id"]]
                if msg["type"] == "snapshot":
                    ref.apply(snap_recs(iid, [(fx(p), fx(q, sp)) for p, q, *_ in msg["bids"]],
                                               [(fx(p), fx(q, sp)) for p, q, *_ in msg["asks"]]))
                else:
                    ref.apply(b"".join(delta(iid, ord("B") if s_ == "buy" else ord("A"), fx(p), fx(q, sp))
                                       for s_, p, q in msg["changes"]))
            n_book += 1
            depth = 0 if n_book % 64 == 0 else 10      # the top 10 after every frame, whole books now and then
            assert syncs[iid].book.levels(ord("B"), depth) == ref.levels(ord("B"), depth)
            assert syncs[iid].book.levels(ord("A"), depth) == ref.levels(ord("A"), depth)
        elif msg.get("type") == "ticker":
            b = syncs[EX[msg["product_id"]]].book
            tops += 1
            tops_ok += (b.best_bid[0], b.best_ask[0]) == (fx(msg["best_bid"]), fx(msg["best_ask"]))
    for iid, sync in syncs.items():
        for side in (ord("B"), ord("A")):
            assert sync.book.levels(side) == refs[iid].levels(side)
    return syncs, tops, tops_ok


def test_recorded_books_rebuild_without_gaps():
    syncs, tops, tops_ok = rebuild(F21, EX, SP21)
    assert sum(s.stats.snapshots for s in syncs.values()) == 10 and sum(s.stats.applied for s in syncs.values()) == 9719
    assert all(s.synced and s.stats.gaps == 0 and s.stats.crossed == 0 for s in syncs.values())
    # data/README.md: ticker best bid/ask equal the rebuilt top at arrival in 100 of 107 cases
    assert (tops, tops_ok) == (107, 100)
    syncs, _, _ = rebuild(F26, AT, SP26)
    assert sum(s.stats.snapshots for s in syncs.values()) == 2 and sum(s.stats.applied for s in syncs.values()) == 773
    assert all(s.synced and s.stats.gaps == 0 and s.stats.crossed == 0 for s in syncs.values())


def test_sequence_break_is_one_gap_per_book_and_resync():
    """A dropped Advanced Trade message (any channel) = a sequence_num break: each book of the
    connection gets ONE gap naming the missing numbers, asks once for a snapshot, drops updates
    until it comes, and is exact again after it."""
    c = CoinbaseCodec(PUB)
    for p, iid in AT.items():
        c.add_symbol(p, iid, SP26[p])
    syncs = {iid: CoinbaseBookSync(iid, PUB, size_precision=SP26[p]) for p, iid in AT.items()}
    tracker = SequenceTracker()
    drop = next(i for i, ev in enumerate(F26) if '"l2_data"' in ev.text and '"update"' in ev.text and i > 100)
    gaps, asks, dropped = [], 0, 0
    for i, ev in enumerate(F26):
        if i == drop:
            continue
        c.decode(ev.text, ev.ts_ns)
        r = tracker.on_message(c.sequence_num)
        if r is not None:
            for s in syncs.values():
                act = s.on_break(*r)
                gaps.append(act.gap)
                asks += act.needs_snapshot
        if c.last_kind in (KINDS["book"], KINDS["bookSnapshot"]):
            act = syncs[c.instrument_id].on_update(c.output())
            dropped += act.dropped
            asks += act.needs_snapshot
    assert [(g.kind, g.first_missing, g.last_missing) for g in gaps] == [(GAP_SEQUENCE, drop, drop)] * 2
    assert asks == 2 and dropped > 0
    assert not any(s.synced for s in syncs.values())
    # the resubscription's snapshot (the true book of the full recording) resyncs each book
    full = {iid: CoinbaseBookSync(iid, PUB, size_precision=SP26[p]) for p, iid in AT.items()}
    for ev in F26:
        c.decode(ev.text, ev.ts_ns)
        if c.last_kind == KINDS["bookSnapshot"]:
            full[c.instrument_id].on_snapshot(c.output())
        elif c.last_kind == KINDS["book"]:
            full[c.instrument_id].on_update(c.output())
    for iid, s in syncs.items():
        book = full[iid].book
        snap = snap_recs(iid, book.levels(ord("B")), book.levels(ord("A")))
        act = s.on_snapshot(snap)
        assert act.snapshot_applied and s.synced and act.gap is None
        assert s.book.levels(ord("B")) == book.levels(ord("B")) and s.book.levels(ord("A")) == book.levels(ord("A"))


def test_sequence_tracker_duplicates_and_reset():
    t = SequenceTracker()
    assert t.on_message(5) is None and t.on_message(6) is None
    assert t.on_message(6) == "duplicate" and t.on_message(3) == "duplicate"
    assert t.on_message(9) == (7, 8) and t.breaks == 1
    t.reset()
    assert t.on_message(0) is None and t.on_message(1) is None


def test_update_before_snapshot_is_dropped_and_asks_once():
    s = CoinbaseBookSync(1, PUB)
    a = s.on_update(delta(1, ord("B"), 10, 1))
    assert a.dropped == 1 and a.needs_snapshot
    assert not s.on_update(delta(1, ord("B"), 10, 1)).needs_snapshot
    a = s.on_snapshot(snap_recs(1, [(10, 1)], [(11, 1)]))
    assert s.synced and a.mask
    assert s.on_update(delta(1, ord("A"), 11, 0)).applied


# --------------------------------------------------------------------------- symbology, config, registry


def test_symbology_from_both_recorded_products_bodies():
    assert SYM21.to_canonical("SKL-USD") == "SKLUSD" and SYM21.to_venue("DASHBTC") == "DASH-BTC"
    assert SP21["SKL-USD"] == 1 and SP21["DASH-BTC"] == 3 and len(SYM21) == 162
    info = SYM26.info("btc-usd")
    assert (info.canonical, info.size_precision, str(info.tick_size), info.tradeable) == ("BTCUSD", 8, "0.01", True)
    assert SYM26.to_venue("ETHUSD") == "ETH-USD" and SYM26.to_canonical("BTC-USDC") == "BTCUSDC"
    aliased = CoinbaseSymbology.from_reference(REST["/api/v3/brokerage/market/products"], {"USDC": "USD"})
    with pytest.raises(SymbologyError):
        aliased.select(["BTCUSD"])          # BTC-USD and BTC-USDC collide: poisoned, never merged
    with pytest.raises(SymbologyError):
        CoinbaseSymbology.from_reference('{"error":"x"}')


def test_registry_and_hosts():
    v = venue("coinbase")
    assert v.publisher_id == 1008 and v.exchange == "COINBASE"
    for url in ("wss://ws-feed.pro.coinbase.com", "wss://advanced-trade-ws.coinbase.com",
                "https://api.coinbase.com/api/v3/brokerage/market/products", "https://api.pro.coinbase.com/products"):
        assert venue_of_url(url) == "coinbase"


def _cfg(**extra):
    raw = {"providers": {"cb": {"kind": "coinbase", "ws_url": "wss://advanced-trade-ws.coinbase.com",
                                "rest_url": "https://api.coinbase.com", "symbols": ["BTCUSD"], **extra}}}
    return parse(raw, env={})


def test_provider_config():
    cfg = _cfg()
    p = CoinbaseProvider(cfg, cfg.providers["cb"])
    assert p.feed == "advanced" and p.channel_names == ("level2", "market_trades", "ticker")
    cfg = _cfg(feed="exchange")
    p = CoinbaseProvider(cfg, cfg.providers["cb"])
    assert p.channel_names == ("level2_batch", "matches", "ticker") and p.book_channel == "level2_batch"
    with pytest.raises(ConfigError):
        cfg = _cfg(feed="fix")
        CoinbaseProvider(cfg, cfg.providers["cb"])
    with pytest.raises(ConfigError):
        cfg = _cfg(channels=["matches"])
        CoinbaseProvider(cfg, cfg.providers["cb"])
    with pytest.raises(ConfigError):
        cfg = _cfg(depth=5)
        CoinbaseProvider(cfg, cfg.providers["cb"])


# --------------------------------------------------------------------------- replay handler


def arun(coro, timeout: float = 30.0):
    return asyncio.run(asyncio.wait_for(coro, timeout))


async def collect(url: str, send: list[dict], until=None) -> list[str]:
    out = []
    async with aiohttp.ClientSession() as s:
        async with s.ws_connect(url, max_msg_size=0) as ws:
            for m in send:
                await ws.send_str(json.dumps(m))
            async for msg in ws:
                if msg.type != aiohttp.WSMsgType.TEXT:
                    break
                out.append(msg.data)
                if until is not None and until(out):
                    break
    return out


def test_replay_serves_the_advanced_connection_whole():
    async def main():
        srv = ReplayServer([S26], port=0, speed=0.0)
        await srv.start()
        try:
            url = f"ws://127.0.0.1:{srv.port}/advanced-trade-ws"
            got = await collect(url, [{"type": "subscribe", "product_ids": ["BTC-USD"], "channel": "level2"},
                                      {"type": "subscribe", "product_ids": ["BTC-USD"], "channel": "heartbeats"}])
            async with aiohttp.ClientSession() as s:
                async with s.get(f"http://127.0.0.1:{srv.port}/api/v3/brokerage/market/products") as r:
                    body = await r.read()
            bad = await collect(url, ["hello"], until=lambda o: True)
            return got, body, bad
        finally:
            await srv.stop()

    got, body, bad = arun(main())
    assert got == [ev.text for ev in F26]       # every message, recorded order: sequence_num intact
    assert json.loads(body)["products"][0]["product_id"] == "BTC-USD"
    assert json.loads(bad[0])["type"] == "error"


def test_replay_exchange_subscriptions_by_channel_and_product():
    async def main():
        srv = ReplayServer([S21], port=0, speed=0.0)
        await srv.start()
        try:
            url = f"ws://127.0.0.1:{srv.port}/ws-feed"
            got = await collect(url, [{"type": "subscribe", "product_ids": ["SKL-USD", "NU-GBP"], "channels": ["level2"]},
                                      {"type": "subscribe", "product_ids": ["NU-GBP"],
                                       "channels": [{"name": "matches", "product_ids": ["NU-GBP"]}]}])
            async with aiohttp.ClientSession() as s:
                async with s.get(f"http://127.0.0.1:{srv.port}/products") as r:
                    body = await r.read()
            return got, body
        finally:
            await srv.stop()

    got, body = arun(main())
    msgs = [json.loads(t) for t in got]
    acks = [m for m in msgs if m["type"] == "subscriptions"]
    assert acks[-1]["channels"] == [{"name": "level2", "product_ids": ["NU-GBP", "SKL-USD"]},
                                    {"name": "matches", "product_ids": ["NU-GBP"]}]
    data = Counter((m["type"], m["product_id"]) for m in msgs if m["type"] != "subscriptions")
    assert data == {("snapshot", "SKL-USD"): 1, ("l2update", "SKL-USD"): 2592, ("snapshot", "NU-GBP"): 1,
                    ("l2update", "NU-GBP"): 76, ("last_match", "NU-GBP"): 1, ("match", "NU-GBP"): 1}
    assert len(json.loads(body)) == 162


def test_book_records_carry_the_product_size_precision():
    """DEPTH/BBO written by the book say the product's size scale (dm._book stamps 1e-9)."""
    s = CoinbaseBookSync(7, PUB, size_precision=1)
    s.on_snapshot(snap_recs(7, [(10, 275100000000)], [(11, 5)]))
    out = bytearray()
    s.book.write_depth(out, 1, 2, 3)
    s.book.write_bbo(out, 1, 2, 3)
    d, b = split(bytes(out))
    assert d.size_precision == 1 and b.size_precision == 1 and b.bid_sz == 275100000000 and d.levels[0][2] == 275100000000


def test_mixed_level2_frame_is_split_per_product():
    """A level2 message whose events name two products: the provider groups the records by
    instrument and gives each book its own part (a snapshot where the part holds a CLEAR)."""
    from dm.venues.coinbase.provider import _by_instrument, _has_clear

    c = CoinbaseCodec(PUB)
    c.add_symbol("BTC-USD", 1, 8)
    c.add_symbol("ETH-USD", 2, 8)
    up = {"side": "bid", "event_time": "2026-08-09T21:05:48Z", "price_level": "10", "new_quantity": "1"}
    frame = json.dumps({"channel": "l2_data", "timestamp": "2026-08-09T21:05:48Z", "sequence_num": 3, "events": [
        {"type": "snapshot", "product_id": "BTC-USD", "updates": [up, dict(up, side="offer", price_level="11")]},
        {"type": "update", "product_id": "ETH-USD", "updates": [up]},
        {"type": "update", "product_id": "BTC-USD", "updates": [dict(up, new_quantity="0")]}]})
    c.decode(frame, 1)
    assert c.mixed and c.instrument_id == 1
    parts = _by_instrument(c.output())
    assert sorted(parts) == [1, 2] and len(parts[1]) == 4 * 56 and len(parts[2]) == 56
    assert _has_clear(parts[1]) and not _has_clear(parts[2])
    s1, s2 = CoinbaseBookSync(1, PUB, size_precision=8), CoinbaseBookSync(2, PUB, size_precision=8)
    s1.on_snapshot(parts[1])
    assert s1.book.levels(ord("B")) == [] and s1.book.levels(ord("A")) == [(11_000_000_000, 100_000_000)]
    assert s2.on_update(parts[2]).dropped == 1        # ETH-USD has no snapshot yet
