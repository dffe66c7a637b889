"""Deribit v2 (dm/venues/deribit): codec vs its pure-Python oracle on every recorded frame
(golden), on generated and mutated frames (hypothesis); the codec's records checked against the
recording parsed independently (json + Decimal); values rejected alone; the book sync rules (the
recorded books rebuild with 0 gaps and every ticker's best bid/ask equals the rebuilt top as of
its timestamp; a lost change = one gap); symbology from the recorded get_instruments bodies; the
replay server (JSON-RPC subscribe, heartbeat test_request, REST per currency)."""
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
from dm._codec import KINDS
from dm.config import parse
from dm.errors import CodecError, ConfigError, SymbologyError
from dm.recording import read_recording, ws_sessions
from dm.records import SIDE_ASK, SIDE_BID, UNDEF_PRICE, StatType
from dm.replay import ReplayServer
from dm.venues.deribit._codec import DeribitCodec
from dm.venues.deribit.booksync import GAP_DERIBIT, DeribitBookSync
from dm.venues.deribit.codec_ref import RefDeribitCodec, trade_id
from dm.venues.deribit.provider import DeribitProvider, currency_of
from dm.venues.deribit.symbology import DeribitSymbology
from tests.book_ref import RefBook, delta, snapshot_records

ROOT = Path(__file__).resolve().parent.parent
SESSION = ROOT / "data/deribit/2021-07-22"
PUB = 1009
SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

NAMES = ["BTC-24SEP21-8000-P", "BTC-30JUL21-24000-P", "BTC-31DEC21-34000-P", "BTC-24SEP21-34000-P",
         "BTC-24JUN22-15000-C", "BTC-31DEC21-300000-C", "BTC-25MAR22-30000-C", "ETH-30JUL21-2800-C",
         "ETH-27AUG21-4000-P", "ETH-23JUL21-2300-C"]
IIDS = {n: i + 1 for i, n in enumerate(NAMES)}
#: min_trade_amount decimals as the recorded get_instruments state them (BTC 0.1, ETH 1)
SP = {n: 1 if n.startswith("BTC") else 0 for n in NAMES}


def frames() -> list:
    (s,) = ws_sessions(read_recording(SESSION))
    return s.frames


def rest_bodies() -> dict[str, bytes]:
    out = {}
    for line in (SESSION / "DERIBIT.0").read_bytes().split(b"\n"):
        if line.startswith(b"http"):
            url, rest = line.split(b" -> ", 1)
            out[url.split(b"currency=")[1].split(b"&")[0].decode()] = rest.split(b": ", 1)[1]
    return out


def pair(symbols=IIDS, precisions=SP):
    c, r = DeribitCodec(PUB), RefDeribitCodec(PUB)
    for s, iid in symbols.items():
        sp = precisions.get(s, 9)
        c.add_symbol(s, iid, sp)
        r.add_symbol(s, iid, sp)
    return c, r


def outcome(codec, frame, ts=1_700_000_000_000_000_000):
    try:
        n = codec.decode(frame, ts)
    except CodecError as e:
        return ("error", type(e).__name__, e.venue, e.reason, e.field, e.offset)
    return (n, bytes(codec.output()), codec.last_kind, codec.instrument_id, codec.first_seq, codec.last_seq,
            list(codec.value_errors), codec.value_error_count)


def agree(c, r, frame):
    a, b = outcome(c, frame), outcome(r, frame)
    assert a == b, frame[:300]
    return a


def _split(buf: bytes) -> list:
    out, i = [], 0
    while i < len(buf):
        n = buf[i] * 4
        out.append(REC.unpack(buf[i:i + n]))
        i += n
    return out


def fx(v, scale: int = 9) -> int:
    d = Decimal(str(v)).scaleb(scale)
    assert d == d.to_integral_value()
    return int(d)


def loads(text: str):
    return json.loads(text, parse_float=Decimal)


# --------------------------------------------------------------------------- golden: every recorded frame


def test_every_recorded_frame_agrees_with_the_oracle():
    c, r = pair()
    kinds = Counter()
    for ev in frames():
        res = agree(c, r, ev.text)
        assert res[0] != "error", (ev.text[:200], res)
        assert res[7] == 0  # nothing rejected on real data
        kinds[c.last_kind] += 1
    assert kinds == {KINDS["subscription"]: 1, KINDS["bookSnapshot"]: 10, KINDS["book"]: 36, KINDS["ticker"]: 89}
    assert c.counts() == r.counts()


def test_records_match_the_recording_parsed_independently():
    """Book levels (action, price, amount at the instrument's precision, change_id), ticker BBOs
    (an empty side: price 0.0 amount 0.0 → no price) and statistics against json + Decimal."""
    c = DeribitCodec(PUB)
    for s, iid in IIDS.items():
        c.add_symbol(s, iid, SP[s])
    n_stats = Counter()
    empty_sides = 0
    for ev in frames():
        n = c.decode(ev.text, ev.ts_ns)
        recs = _split(bytes(c.output()))
        msg = loads(ev.text)
        if msg.get("method") != "subscription":
            assert n == 0 and c.last_kind == KINDS["subscription"] and c.first_seq == msg["id"] == 0
            continue
        d = msg["params"]["data"]
        name = d["instrument_name"]
        sp = SP[name]
        assert all(r.instrument_id == IIDS[name] and r.size_precision == sp for r in recs)
        assert all(r.ts_event == d["timestamp"] * 10**6 and r.ts_recv == ev.ts_ns for r in recs)
        if msg["params"]["channel"].startswith("book."):
            snap = d["type"] == "snapshot"
            levels = [(SIDE_BID, *lv) for lv in d["bids"]] + [(SIDE_ASK, *lv) for lv in d["asks"]]
            body = recs[1:] if snap else recs
            assert len(recs) == len(levels) + snap
            if snap:
                assert recs[0].action == REC.ACTION_CLEAR and all(lv[1] == "new" for lv in levels)
            for r, (side, action, p, q) in zip(body, levels):
                act = {"new": REC.ACTION_ADD, "change": REC.ACTION_MODIFY, "delete": REC.ACTION_CANCEL}[action]
                assert (r.side, r.action, r.price, r.size, r.sequence) == (
                    side, act, fx(p), 0 if action == "delete" else fx(q, sp), d["change_id"])
                assert bool(r.flags & REC.Flag.SNAPSHOT) == snap
            assert (c.first_seq, c.last_seq) == ((d["change_id"],) * 2 if snap else (d["prev_change_id"], d["change_id"]))
        else:
            bbo, stats = recs[0], recs[1:]
            want_b = (fx(d["best_bid_price"]), fx(d["best_bid_amount"], sp)) if d["best_bid_amount"] else (UNDEF_PRICE, 0)
            want_a = (fx(d["best_ask_price"]), fx(d["best_ask_amount"], sp)) if d["best_ask_amount"] else (UNDEF_PRICE, 0)
            empty_sides += (not d["best_bid_amount"]) or (not d["best_ask_amount"])
            assert isinstance(bbo, REC.Bbo) and (bbo.bid_px, bbo.bid_sz, bbo.ask_px, bbo.ask_sz) == want_b + want_a
            want = []
            for key, stype in (("mark_price", StatType.MARK_PRICE), ("index_price", StatType.INDEX_PRICE),
                               ("underlying_price", StatType.UNDERLYING_PRICE),
                               ("mark_iv", StatType.IMPLIED_VOLATILITY), ("open_interest", StatType.OPEN_INTEREST),
                               ("estimated_delivery_price", StatType.ESTIMATED_SETTLEMENT_PRICE)):
                if d.get(key) is not None:
                    want.append((int(stype), fx(d[key], sp) if key == "open_interest" else fx(d[key])))
                    n_stats[stype.name] += 1
            got = [(r.stat_type, r.quantity if r.stat_type == StatType.OPEN_INTEREST else r.price) for r in stats]
            assert got == want
    assert empty_sides == 13            # tickers with an empty side: data/VENUES.md §10 quirk (2)
    assert n_stats == {k: 89 for k in ("MARK_PRICE", "INDEX_PRICE", "UNDERLYING_PRICE", "IMPLIED_VOLATILITY",
                                       "OPEN_INTEREST", "ESTIMATED_SETTLEMENT_PRICE")}


# --------------------------------------------------------------------------- edge cases


def book(typ, name, cid, bids, asks, prev=None, ts=1000):
    d = {"type": typ, "timestamp": ts, "instrument_name": name, "change_id": cid, "bids": bids, "asks": asks}
    if prev is not None:
        d["prev_change_id"] = prev
    return json.dumps({"jsonrpc": "2.0", "method": "subscription",
                       "params": {"channel": f"book.{name}.raw", "data": d}})


def test_values_that_do_not_fit_are_rejected_alone():
    c, r = pair()
    # 0.05 BTC option contracts: more decimals than min_trade_amount 0.1 allows -> that level alone
    f = book("change", "BTC-24SEP21-8000-P", 9, [["new", 0.001, 0.05], ["change", 0.002, 1.5]],
             [["delete", 1e30, 0.0]], prev=8)
    res = agree(c, r, f)
    recs = _split(res[1])
    assert [(x.action, x.price, x.size) for x in recs] == [(REC.ACTION_MODIFY, 2_000_000, 15)]
    assert res[7] == 2 and [v[1:3] for v in res[6]] == [
        ("bids", "more fractional digits than the instrument's size_precision"), ("asks", "out of range")]
    t = json.dumps({"jsonrpc": "2.0", "method": "subscription", "params": {"channel": "ticker.ETH-23JUL21-2300-C.raw",
                    "data": {"timestamp": 5, "instrument_name": "ETH-23JUL21-2300-C", "best_bid_price": 0.01,
                             "best_bid_amount": 1.5, "best_ask_price": None, "best_ask_amount": 3,
                             "mark_price": -1e40, "index_price": 2000.5, "open_interest": 12.0,
                             "current_funding": -0.00001}}})
    res = agree(c, r, t)
    recs = _split(res[1])
    assert (recs[0].bid_px, recs[0].bid_sz, recs[0].ask_px, recs[0].ask_sz) == (UNDEF_PRICE, 0, UNDEF_PRICE, 0)
    assert [(x.stat_type, x.price, x.quantity) for x in recs[1:]] == [
        (StatType.INDEX_PRICE, 2_000_500_000_000, REC.I64_MAX if hasattr(REC, "I64_MAX") else (1 << 63) - 1),
        (StatType.OPEN_INTEREST, UNDEF_PRICE, 12), (StatType.FUNDING_RATE, -10_000, (1 << 63) - 1)]
    assert [v[1] for v in res[6]] == ["best_bid_amount", "mark_price"]


def test_control_frames_trades_and_errors():
    c, r = pair()
    assert agree(c, r, '{"jsonrpc":"2.0","method":"heartbeat","params":{"type":"heartbeat"}}')[2:5] == (
        KINDS["heartbeat"], 0, 0)
    assert agree(c, r, '{"jsonrpc":"2.0","method":"heartbeat","params":{"type":"test_request"}}')[2:5] == (
        KINDS["heartbeat"], 0, 1)
    assert agree(c, r, '{"jsonrpc":"2.0","id":7,"result":"ok","usIn":1}')[2:5] == (KINDS["pong"], 0, 7)
    assert agree(c, r, '{"jsonrpc":"2.0","id":8,"result":{"version":"1.2.26"}}')[2] == KINDS["pong"]
    assert agree(c, r, '{"jsonrpc":"2.0","id":9,"result":["book.X.raw"]}')[2:5] == (KINDS["subscription"], 0, 9)
    assert agree(c, r, '{"jsonrpc":"2.0","id":3,"error":{"code":11050,"message":"bad_request"}}')[2:5] == (
        KINDS["error"], 0, 3)
    for bad, reason in (('{"jsonrpc":"2.0","method":"x","params":{}}', "unknown method"),
                        ('{"method":"subscription","params":{"channel":"quote.X","data":{}}}', "unknown channel"),
                        ('{"method":"heartbeat","params":{"type":"nope"}}', "unknown heartbeat type"),
                        ('{"jsonrpc":"2.0","id":1}', "missing field"),
                        (book("snap", "BTC-24SEP21-8000-P", 1, [], []), "unknown type"),
                        (book("change", "BTC-24SEP21-8000-P", 1, [], []), "missing field"),
                        (book("snapshot", "BTC-24SEP21-8000-P", 1, [["add", 1, 1]], []), "unknown level action"),
                        (book("snapshot", "NOPE-1", 1, [], []), None), ("[1]", "expected a JSON object")):
        res = agree(c, r, bad)
        assert res[0] == "error" and (reason is None or res[3].startswith(reason)), (bad, res)
    tr = json.dumps({"jsonrpc": "2.0", "method": "subscription", "params": {"channel": "trades.BTC-24SEP21-8000-P.raw",
                     "data": [{"trade_seq": 5, "trade_id": "139424046", "timestamp": 1626993722319, "price": 0.0005,
                               "amount": 1.2, "direction": "sell", "instrument_name": "BTC-24SEP21-8000-P",
                               "iv": 150.1, "index_price": 32000.1, "tick_direction": 0},
                              {"trade_seq": 6, "trade_id": "ETH-12", "timestamp": 1626993722320, "price": 0.001,
                               "amount": 3.0, "direction": "buy", "instrument_name": "BTC-24SEP21-8000-P"}]}})
    res = agree(c, r, tr)
    t = _split(res[1])
    assert [(x.side, x.price, x.size, x.trade_id, x.sequence) for x in t] == [
        (SIDE_ASK, 500_000, 12, 139424046, 5), (SIDE_BID, 1_000_000, 30, trade_id(b"ETH-12"), 6)]
    assert res[2:6] == (KINDS["trade"], 1, 5, 6) and trade_id(b"ETH-12") < 1 << 63


# --------------------------------------------------------------------------- hypothesis

weird = st.one_of(st.none(), st.booleans(), st.integers(-(1 << 70), 1 << 70), st.text(max_size=6),
                  st.sampled_from(["", "1e5", "abc"]), st.lists(st.integers(0, 3), max_size=2))
num = st.one_of(st.decimals(allow_nan=False, allow_infinity=False, places=4, min_value=0, max_value=10**9),
                st.sampled_from([Decimal("0"), Decimal("-1"), Decimal("1E+30"), Decimal("5E-2"),
                                 Decimal("0.000000001"), Decimal("12.0"), Decimal("99999999999.5")]),
                st.integers(0, 10**6))
ms = st.integers(0, 19).flatmap(lambda k: st.integers(0, 2**45) if k else st.integers(-5, 2**66))
name = st.sampled_from(["BTC-24SEP21-8000-P", "ETH-23JUL21-2300-C", "btc-24sep21-8000-p", "NOPE"])


def maybe(s):
    return st.integers(0, 59).flatmap(lambda k: s if k < 57 else weird if k < 59 else st.just(KeyError))


def mostly(s):
    return st.integers(0, 19).flatmap(lambda k: s if k else weird)


def obj(**f):
    return st.fixed_dictionaries(f).map(lambda d: {k: v for k, v in d.items() if v is not KeyError})


level = mostly(st.tuples(st.sampled_from(["new", "change", "delete", "x"]), num, num).map(list))


class _Enc(json.JSONEncoder):
    def default(self, o):
        if isinstance(o, Decimal):
            return float(o)
        return super().default(o)


def dumps(v) -> str:
    """JSON with Decimals written as their exact text (json.dumps would go through float)."""
    if isinstance(v, Decimal):
        return str(v) if "E" not in str(v) else format(v, "e")
    if isinstance(v, dict):
        items = list(v.items())
        return "{" + ",".join(json.dumps(k) + ":" + dumps(x) for k, x in items) + "}"
    if isinstance(v, list):
        return "[" + ",".join(dumps(x) for x in v) + "]"
    return json.dumps(v)


@st.composite
def gen_frames(draw):
    kind = draw(st.sampled_from(["book", "ticker", "trades", "hb", "rpc"]))
    if kind == "book":
        data = draw(obj(type=maybe(st.sampled_from(["snapshot", "change", "x"])), timestamp=maybe(ms),
                        instrument_name=maybe(name), change_id=maybe(st.integers(0, 2**64)),
                        prev_change_id=maybe(st.integers(0, 2**64)), bids=maybe(st.lists(level, max_size=3)),
                        asks=maybe(st.lists(level, max_size=3))))
        v = {"jsonrpc": "2.0", "method": "subscription", "params": draw(obj(
            channel=st.sampled_from(["book.BTC-24SEP21-8000-P.raw", "book.", "bookx"]), data=maybe(st.just(data))))}
    elif kind == "ticker":
        data = draw(obj(timestamp=maybe(ms), instrument_name=maybe(name), best_bid_price=maybe(num),
                        best_bid_amount=maybe(num), best_ask_price=maybe(num), best_ask_amount=maybe(num),
                        mark_price=maybe(num), index_price=maybe(num), underlying_price=maybe(num),
                        mark_iv=maybe(num), open_interest=maybe(num), estimated_delivery_price=maybe(num),
                        current_funding=maybe(num), greeks=maybe(st.just({"delta": 0.5}))))
        v = {"jsonrpc": "2.0", "method": "subscription",
             "params": draw(obj(channel=st.just("ticker.ETH-23JUL21-2300-C.100ms"), data=maybe(st.just(data))))}
    elif kind == "trades":
        tr = obj(trade_seq=maybe(st.integers(0, 2**64)), trade_id=maybe(st.text("0123456789ETH-", max_size=22)),
                 timestamp=maybe(ms), price=maybe(num), amount=maybe(num),
                 direction=maybe(st.sampled_from(["buy", "sell", "Buy"])), instrument_name=maybe(name))
        v = {"jsonrpc": "2.0", "method": "subscription", "params": draw(obj(
            channel=st.just("trades.BTC-24SEP21-8000-P.raw"), data=maybe(st.lists(mostly(tr), max_size=3))))}
    elif kind == "hb":
        v = draw(obj(jsonrpc=st.just("2.0"), method=maybe(st.sampled_from(["heartbeat", "subscription"])),
                     params=maybe(obj(type=maybe(st.sampled_from(["heartbeat", "test_request", "x"]))))))
    else:
        v = draw(obj(jsonrpc=st.just("2.0"), id=maybe(st.one_of(st.integers(-3, 2**65), st.just(1.5))),
                     result=maybe(st.one_of(st.just("ok"), st.lists(st.just("book.X.raw"), max_size=2))),
                     error=maybe(st.just({"code": 1}))))
    return dumps(v).encode()


GEN = pair()


@SETTINGS
@given(gen_frames())
def test_generated_frames_agree(frame):
    c, r = GEN
    agree(c, r, frame)


RECORDED = [ev.text.encode() for ev in frames()]
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


@SETTINGS
@given(mutated())
def test_mutated_recorded_frames_agree(frame):
    c, r = GEN
    agree(c, r, frame)


def test_every_truncation_agrees():
    c, r = pair()
    for frame in random.Random(5).sample(RECORDED, 6):
        for i in range(len(frame)):
            assert agree(c, r, frame[:i])[0] == "error"


# --------------------------------------------------------------------------- book sync


def recs(cid, bids=(), asks=(), snap=False, iid=9):
    if snap:
        return snapshot_records(iid, list(bids), list(asks), sequence=cid)
    return b"".join(delta(iid, SIDE_BID, fx(p), fx(q), sequence=cid) for p, q in bids) + \
        b"".join(delta(iid, SIDE_ASK, fx(p), fx(q), sequence=cid) for p, q in asks)


def test_booksync_prev_change_id_duplicates_gap_and_resync():
    s = DeribitBookSync(9)
    a = s.on_change(1, 5, recs(5, [("1", "1")]))             # before any snapshot: dropped, resync asked once
    assert a.dropped == 1 and a.needs_snapshot and s.on_change(5, 6, b"").needs_snapshot is False
    a = s.on_snapshot(100, recs(100, [("1", "1")], [("2", "1")], snap=True))
    assert s.synced and a.snapshot_applied
    assert s.on_change(100, 137, recs(137, [("1", "3")])).applied and s.change_id == 137   # ids jump: fine
    assert s.on_change(137, 140, b"").applied == [] and s.change_id == 140
    assert s.on_change(100, 137, recs(137, [("1", "4")])).reason == "duplicate change_id"
    a = s.on_change(150, 160, recs(160, [("1", "5")]))       # the change 140 -> 150 was lost
    assert a.gap is not None and (a.gap.kind, a.gap.first_missing, a.gap.last_missing) == (GAP_DERIBIT, 141, 150)
    assert a.needs_snapshot and not s.synced and s.stats.gaps == 1
    a = s.on_change(160, 170, recs(170))                      # one gap, one request
    assert a.gap is None and not a.needs_snapshot and s.stats.gaps == 1
    s.on_snapshot(200, recs(200, [("1", "9")], [("2", "9")], snap=True))
    assert s.synced and s.book.best_bid == (10**9, 9 * 10**9)
    assert s.on_change(200, 201, recs(201, [("1", "0")])).gap is None and s.book.best_bid is None


def test_recorded_books_rebuild_without_gaps_and_tickers_match():
    """Every book notification through the codec and DeribitBookSync: 0 gaps, never crossed,
    final books equal a pure-Python rebuild; every ticker's best bid/ask equals the rebuilt top
    as of the ticker's timestamp (data/VENUES.md §10: 89/89)."""
    c = DeribitCodec(PUB)
    for s_, iid in IIDS.items():
        c.add_symbol(s_, iid, 9)
    syncs = {iid: DeribitBookSync(iid) for iid in IIDS.values()}
    refs = {iid: RefBook(iid, 0, 0) for iid in IIDS.values()}
    tops = defaultdict(list)     # iid -> [(timestamp, best bid, best ask)] after each book notification
    tickers = []
    for ev in frames():
        msg = loads(ev.text)
        if msg.get("method") != "subscription":
            continue
        d = msg["params"]["data"]
        c.decode(ev.text, ev.ts_ns)
        iid = c.instrument_id
        if msg["params"]["channel"].startswith("ticker."):
            tickers.append((iid, d["timestamp"], d))
            continue
        s = syncs[iid]
        a = s.on_snapshot(c.last_seq, bytes(c.output())) if d["type"] == "snapshot" else \
            s.on_change(c.first_seq, c.last_seq, bytes(c.output()))
        assert a.gap is None and not a.crossed and not a.dropped
        ref = refs[iid]
        if d["type"] == "snapshot":
            ref.apply(snapshot_records(iid, [(str(p), str(q)) for _, p, q in d["bids"]],
                                       [(str(p), str(q)) for _, p, q in d["asks"]]))
        else:
            ref.apply(recs(0, [(str(p), "0" if a_ == "delete" else str(q)) for a_, p, q in d["bids"]],
                           [(str(p), "0" if a_ == "delete" else str(q)) for a_, p, q in d["asks"]], iid=iid))
        tops[iid].append((d["timestamp"], s.book.best_bid, s.book.best_ask))
    for iid, s in syncs.items():
        assert s.synced and s.stats.gaps == 0 and s.stats.crossed == 0
        assert s.book.levels(SIDE_BID) == refs[iid].levels(SIDE_BID)
        assert s.book.levels(SIDE_ASK) == refs[iid].levels(SIDE_ASK)
    assert sum(s.stats.applied for s in syncs.values()) == 36
    for iid, ts, d in tickers:
        asof = [t for t in tops[iid] if t[0] <= ts][-1]
        bid = asof[1][0] if asof[1] else 0
        ask = asof[2][0] if asof[2] else 0
        assert (bid, ask) == (fx(d["best_bid_price"]), fx(d["best_ask_price"])), (iid, ts)
    assert len(tickers) == 89


# --------------------------------------------------------------------------- symbology


def test_symbology_from_recorded_instruments():
    b = rest_bodies()
    sym = DeribitSymbology.from_reference(b"[" + b["BTC"] + b"," + b["ETH"] + b"]")
    assert len(sym) == 398 + 426
    assert sym.to_canonical("BTC-24SEP21-40000-C") == "BTCUSD-BTC-210924-40000-C"
    assert sym.to_venue("ETHUSD-ETH-210723-2300-C") == "ETH-23JUL21-2300-C"
    assert sym.to_canonical("btc-25mar22") == "BTCUSD-BTC-220325"
    assert sym.to_canonical("BTC-PERPETUAL") == "BTCUSD-BTC-PERP"
    o, e, f = sym.info("BTC-24SEP21-8000-P"), sym.info("ETH-23JUL21-2300-C"), sym.info("BTC-PERPETUAL")
    assert (o.kind, o.settle, o.strike, o.option_type, o.size_precision, str(o.tick_size), o.expiry) == (
        "option_inverse", "BTC", Decimal(8000), "P", 1, "0.0005", "210924")
    assert (e.size_precision, e.lot_size) == (0, Decimal(1))
    assert (f.kind, f.size_precision, f.contract_size) == ("perpetual_inverse", 0, Decimal(10))
    for n in NAMES:
        assert sym.info(n).size_precision == SP[n]
    assert sym.collisions() == {}
    # a single body (what `dm symbol discover` fetches) works too
    assert len(DeribitSymbology.from_reference(b["ETH"])) == 426


def test_symbology_linear_and_errors():
    doc = {"jsonrpc": "2.0", "result": [
        {"instrument_name": "SOL_USDC-PERPETUAL", "kind": "future", "base_currency": "SOL", "quote_currency": "USDC",
         "counter_currency": "USDC", "settlement_currency": "USDC", "settlement_period": "perpetual",
         "min_trade_amount": 0.1, "tick_size": 0.01, "contract_size": 0.1, "is_active": True},
        {"instrument_name": "SOL_USDC-30SEP22-40-C", "kind": "option", "base_currency": "SOL",
         "quote_currency": "USDC", "counter_currency": "USDC", "settlement_currency": "USDC",
         "settlement_period": "month", "expiration_timestamp": 1664524800000, "strike": 40.5,
         "option_type": "call", "min_trade_amount": 1, "tick_size": 0.01, "is_active": False},
        {"instrument_name": "BTC-FS-30SEP22_PERP", "kind": "future_combo", "base_currency": "BTC",
         "quote_currency": "USD"}]}
    sym = DeribitSymbology.from_reference(json.dumps(doc))
    assert sym.to_canonical("SOL_USDC-PERPETUAL") == "SOLUSDC-USDC-PERP"
    assert sym.to_canonical("SOL_USDC-30SEP22-40-C") == "SOLUSDC-USDC-220930-40D5-C"
    assert sym.info("SOL_USDC-30SEP22-40-C").kind == "option_linear" and not sym.info("SOL_USDC-30SEP22-40-C").tradeable
    assert len(sym) == 2
    with pytest.raises(SymbologyError, match="request failed"):
        DeribitSymbology.from_reference('{"jsonrpc":"2.0","error":{"code":10012,"message":"x"}}')
    with pytest.raises(SymbologyError, match="without expiry"):
        DeribitSymbology.from_reference(json.dumps({"result": [{"instrument_name": "X", "kind": "option",
                                                                "base_currency": "BTC", "quote_currency": "BTC",
                                                                "expiration_timestamp": 1}]}))
    assert currency_of("BTCUSD-BTC-210924-40000-C") == "BTC" and currency_of("SOLUSDC-USDC-PERP") == "USDC"
    with pytest.raises(ConfigError):
        currency_of("BTCUSD")


def test_provider_config():
    raw = {"providers": {"d": {"kind": "deribit", "ws_url": "ws://x/ws/api/v2",
                               "symbols": ["BTCUSD-BTC-210924-8000-P", "ETHUSD-ETH-210723-2300-C"], "interval": "raw"}}}
    cfg = parse(raw, env={})
    p = DeribitProvider(cfg, cfg.providers["d"])
    assert p.currencies == ["BTC", "ETH"] and p.interval == "raw" and p.pcfg.publisher_id == PUB
    assert (p.heartbeat_s, p.stale_after_s) == (30, 70.0)
    quiet = json.loads(json.dumps(raw))
    quiet["providers"]["d"]["heartbeat_s"] = 0
    cq = parse(quiet, env={})
    assert DeribitProvider(cq, cq.providers["d"]).stale_after_s is None   # no heartbeats: no staleness rule
    assert json.loads(p._message("subscribe", "book", ["BTC-24SEP21-8000-P"]))["params"] == {
        "channels": ["book.BTC-24SEP21-8000-P.raw"]}
    for extra, match in (({"interval": "1s"}, "interval"), ({"heartbeat_s": 5}, "heartbeat_s"),
                         ({"channels": ["quote"]}, "unknown Deribit channel"), ({"depth": 5}, "unknown Deribit key")):
        bad = json.loads(json.dumps(raw))
        bad["providers"]["d"].update(extra)
        c2 = parse(bad, env={})
        with pytest.raises(ConfigError, match=match):
            DeribitProvider(c2, c2.providers["d"])


# --------------------------------------------------------------------------- replay server


def arun(coro, timeout: float = 30.0):
    async def main():
        return await asyncio.wait_for(coro, timeout)
    return asyncio.run(main())


def test_replay_jsonrpc_subscribe_heartbeat_and_rest():
    want = defaultdict(list)
    for ev in frames():
        m = json.loads(ev.text)
        if m.get("method") == "subscription":
            want[m["params"]["channel"]].append(ev.text)

    async def main():
        async with ReplayServer([SESSION], speed=0, once=True, linger=0.1) as srv:
            url = srv.ws_url("deribit")
            assert url.endswith("/ws/api/v2")
            got, ctl = [], []
            async with aiohttp.ClientSession() as s:
                async with s.ws_connect(url, max_msg_size=0) as ws:
                    await ws.send_str('{"jsonrpc":"2.0","id":1,"method":"public/set_heartbeat","params":{"interval":30}}')
                    ctl.append(json.loads((await ws.receive()).data))
                    ctl.append(json.loads((await ws.receive()).data))
                    await ws.send_str('{"jsonrpc":"2.0","id":2,"method":"public/test","params":{}}')
                    ctl.append(json.loads((await ws.receive()).data))
                    chans = sorted(want) + ["trades.BTC-24SEP21-8000-P.raw", "book.NOPE.raw"]
                    await ws.send_str(json.dumps({"jsonrpc": "2.0", "id": 3, "method": "public/subscribe",
                                                  "params": {"channels": chans}}))
                    async for msg in ws:
                        if msg.type != aiohttp.WSMsgType.TEXT:
                            break
                        got.append(msg.data)
                rest = {}
                for cur in ("BTC", "ETH", "SOL"):
                    async with s.get(srv.rest_url() + f"/api/v2/public/get_instruments?currency={cur}&expired=false") as r:
                        rest[cur] = (r.status, await r.read())
            await srv.wait_done()
            return ctl, got, rest
    ctl, got, rest = arun(main())
    assert ctl[0]["id"] == 1 and ctl[0]["result"] == "ok"
    assert ctl[1] == {"jsonrpc": "2.0", "method": "heartbeat", "params": {"type": "test_request"}}
    assert ctl[2]["id"] == 2 and "version" in ctl[2]["result"]
    ack = json.loads(got[0])
    assert ack["id"] == 3 and "book.NOPE.raw" not in ack["result"] and "trades.BTC-24SEP21-8000-P.raw" in ack["result"]
    per = defaultdict(list)
    for t in got[1:]:
        per[json.loads(t)["params"]["channel"]].append(t)
    assert per == want and sum(map(len, per.values())) == 135
    b = rest_bodies()
    assert rest["BTC"] == (200, b["BTC"]) and rest["ETH"] == (200, b["ETH"]) and rest["SOL"][0] == 400
