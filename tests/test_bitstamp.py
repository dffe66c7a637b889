"""Bitstamp v2 (dm/venues/bitstamp): codec vs its pure-Python oracle on every recorded frame and
REST snapshot (golden), on generated and mutated frames (hypothesis); the codec's records checked
against the recording parsed independently (json + Decimal); values rejected alone; the book
sync (REST snapshot + diffs by microtimestamp) on the recording; symbology from the recorded
trading-pairs-info; the replay server."""
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
from dm.errors import CodecError, ConfigError, SymbologyError, UnknownInstrumentError
from dm.recording import read_recording, ws_sessions
from dm.records import SIDE_ASK, SIDE_BID
from dm.replay import ReplayServer
from dm.venues.bitstamp._codec import BitstampCodec
from dm.venues.bitstamp.booksync import BitstampBookSync
from dm.venues.bitstamp.codec_ref import RefBitstampCodec
from dm.venues.bitstamp.provider import BitstampProvider
from dm.venues.bitstamp.symbology import BitstampSymbology
from tests.book_ref import RefBook, delta, snapshot_records

ROOT = Path(__file__).resolve().parent.parent
SESSION = ROOT / "data/bitstamp/2022-01-05"
PUB = 1010
SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
PAIRS = ["sgbeur", "ethusd", "xrpeur", "bateur", "usdteur", "usdtusd", "xlmgbp", "adaeur", "batbtc", "galaeur"]
IIDS = {p: i + 1 for i, p in enumerate(PAIRS)}


def reference() -> bytes:
    return (SESSION / "BITSTAMP.0").read_bytes().split(b"\n")[0].split(b": ", 1)[1]


SYM = BitstampSymbology.from_reference(reference())
SP = {p: SYM.info(p).size_precision for p in PAIRS}


def frames() -> list:
    (s,) = ws_sessions(read_recording(SESSION / "BITSTAMP.ws.1.0"))
    return s.frames


def snapshots() -> dict[str, tuple[int, bytes]]:
    """pair -> (ts_recv ns, REST body) of the recorded order_book snapshots."""
    out = {}
    for line in (SESSION / "BITSTAMP.http.0.0").read_bytes().split(b"\n"):
        if line.startswith(b"http"):
            url, rest = line.split(b" -> ", 1)
            ts, body = rest.split(b": ", 1)
            out[url.rsplit(b"/", 1)[1].decode()] = (int(Decimal(ts.decode()).scaleb(9)), body)
    return out


def pair(precisions=SP):
    c, r = BitstampCodec(PUB), RefBitstampCodec(PUB)
    for s, iid in IIDS.items():
        c.add_symbol(s, iid, precisions.get(s, 9))
        r.add_symbol(s, iid, precisions.get(s, 9))
    return c, r


def outcome(codec, frame, ts=1_700_000_000_000_000_000, snap_of=None):
    try:
        n = codec.decode_snapshot(frame, snap_of, ts) if snap_of else codec.decode(frame, ts)
    except CodecError as e:
        return ("error", type(e).__name__, e.venue, e.reason, e.field, e.offset)
    return (n, bytes(codec.output()), codec.last_kind, codec.instrument_id, codec.first_seq, codec.last_seq,
            list(codec.value_errors), codec.value_error_count)


def agree(c, r, frame, snap_of=None):
    a, b = outcome(c, frame, snap_of=snap_of), outcome(r, frame, snap_of=snap_of)
    assert a == b, frame[:300]
    return a


def _split(buf: bytes) -> list:
    out, i = [], 0
    while i < len(buf):
        n = buf[i] * 4
        out.append(REC.unpack(buf[i:i + n]))
        i += n
    return out


I64_MAX = (1 << 63) - 1


def fits(levels) -> list:
    """The levels whose price fits i64 at 1e-9 (what the codec keeps)."""
    return [lv for lv in levels if fx(lv[0]) <= I64_MAX]


def fx(text: str, scale: int = 9) -> int:
    d = Decimal(text).scaleb(scale)
    assert d == d.to_integral_value()
    return int(d)


# --------------------------------------------------------------------------- golden


def test_every_recorded_frame_and_snapshot_agrees_with_the_oracle():
    c, r = pair()
    kinds = Counter()
    for ev in frames():
        res = agree(c, r, ev.text)
        assert res[0] != "error", (ev.text[:200], res)
        assert res[7] == 0
        kinds[c.last_kind] += 1
    assert kinds == {KINDS["subscription"]: 20, KINDS["book"]: 717, KINDS["trade"]: 10}
    rejected = []
    for p, (ts, body) in snapshots().items():
        res = agree(c, r, body, snap_of=p)
        assert res[0] != "error" and res[2] == KINDS["depthSnapshot"]
        rejected += [(p, field, reason, body[off:off + 15]) for _, field, reason, off in res[6]]
    # the one recorded value that does not fit i64 at 1e-9: an ETH/USD ask at 9,999,999,999 (rejected alone)
    assert rejected == [("ethusd", "asks", "out of range", b'"9999999999.00"')]
    assert c.counts() == r.counts()


def test_records_match_the_recording_parsed_independently():
    c = BitstampCodec(PUB)
    for s, iid in IIDS.items():
        c.add_symbol(s, iid, SP[s])
    n_trades = n_levels = 0
    for ev in frames():
        c.decode(ev.text, ev.ts_ns)
        recs = _split(bytes(c.output()))
        msg = json.loads(ev.text)
        if msg["event"] == "data":
            p = msg["channel"][len("diff_order_book_"):]
            d = msg["data"]
            levels = [(SIDE_BID, *lv) for lv in d["bids"]] + [(SIDE_ASK, *lv) for lv in d["asks"]]
            us = int(d["microtimestamp"])
            assert [(r.instrument_id, r.side, r.price, r.size, r.action, r.sequence, r.ts_event, r.size_precision)
                    for r in recs] == [
                (IIDS[p], side, fx(px), fx(q, SP[p]), REC.ACTION_CANCEL if Decimal(q) == 0 else REC.ACTION_ADD, us,
                 us * 1000, SP[p]) for side, px, q in levels]
            n_levels += len(levels)
        elif msg["event"] == "trade":
            d = msg["data"]
            p = msg["channel"][len("live_trades_"):]
            (t,) = recs
            assert (t.instrument_id, t.price, t.size, t.trade_id, t.side, t.ts_event) == (
                IIDS[p], fx(d["price_str"]), fx(d["amount_str"], SP[p]), d["id"], SIDE_BID if d["type"] == 0 else SIDE_ASK,
                int(d["microtimestamp"]) * 1000)
            assert Decimal(str(d["price"])) == Decimal(d["price_str"])   # the float agrees with the string here
            n_trades += 1
        else:
            assert recs == []
    assert n_trades == 10 and n_levels == 1950
    for p, (ts, body) in snapshots().items():
        c.decode_snapshot(body, p, ts)
        recs = _split(bytes(c.output()))
        d = json.loads(body)
        us = int(d["microtimestamp"])
        assert recs[0].action == REC.ACTION_CLEAR and c.first_seq == c.last_seq == us
        assert [(r.side, r.price, r.size) for r in recs[1:]] == [(SIDE_BID, fx(a), fx(b, SP[p])) for a, b in fits(d["bids"])] + \
            [(SIDE_ASK, fx(a), fx(b, SP[p])) for a, b in fits(d["asks"])]
        assert all(r.flags & REC.Flag.SNAPSHOT and r.ts_event == us * 1000 for r in recs)


def test_values_control_frames_and_errors():
    c, r = pair()
    f = json.dumps({"data": {"timestamp": "1", "microtimestamp": "1641343691406478",
                             "bids": [["3800.71", "1.762000001"], ["3800.07", "10.0"]], "asks": [["1e30", "1"]]},
                    "channel": "diff_order_book_ethusd", "event": "data"})
    res = agree(c, r, f)
    assert [(x.price, x.size) for x in _split(res[1])] == [(3_800_070_000_000, 1_000_000_000)]
    assert [v[1:3] for v in res[6]] == [("bids", "more fractional digits than the instrument's size_precision"),
                                        ("asks", "out of range")]
    for text, kind in (('{"event":"bts:subscription_succeeded","channel":"live_trades_ethusd","data":{}}', "subscription"),
                       ('{"event":"bts:request_reconnect","channel":"","data":""}', "status"),
                       ('{"event":"bts:heartbeat","channel":"","data":{"status":"success"}}', "pong"),
                       ('{"event":"bts:error","channel":"","data":{"code":null,"message":"x"}}', "error")):
        assert agree(c, r, text)[2] == KINDS[kind]
    for bad, reason in (('{"event":"bts:nope"}', "unknown event"), ('{"event":"x","channel":"a","data":{}}', "unknown event"),
                        ('{"event":"data","channel":"order_book_ethusd","data":{}}', "unknown channel"),
                        ('{"event":"data","channel":"diff_order_book_nope","data":{}}', None),
                        ('{"event":"data","channel":"diff_order_book_ethusd","data":{"microtimestamp":"x"}}',
                         "expected microseconds"),
                        ('{"event":"trade","channel":"live_trades_ethusd","data":{"id":1,"microtimestamp":"1","type":2}}',
                         "invalid type"), ("[]", "expected a JSON object")):
        res = agree(c, r, bad)
        assert res[0] == "error" and (reason is None or res[3].startswith(reason)), (bad, res)
    with pytest.raises(UnknownInstrumentError):
        c.decode_snapshot(b"{}", "nope", 1)
    assert agree(c, r, b'{"timestamp": "1", "bids": []}', snap_of="ethusd")[3] == "missing field"


# --------------------------------------------------------------------------- hypothesis

weird = st.one_of(st.none(), st.booleans(), st.integers(-(1 << 70), 1 << 70), st.text(max_size=6),
                  st.lists(st.integers(0, 3), max_size=2))
dec = st.integers(0, 9).flatmap(lambda k: st.decimals(
    allow_nan=False, allow_infinity=False, places=8, min_value=0, max_value=10**9).map(str) if k else st.sampled_from(
    ["", "0", "1e3", "-0", "-1", "1.000000001", "99999999999.5", "5E-2", "0.000000001", "1e30", "x"]))
us = st.one_of(st.integers(0, 2**55).map(str), st.sampled_from(["", "x1", "99999999999999999999", "-1", "1.5"]))
chan = st.sampled_from(["diff_order_book_ethusd", "diff_order_book_XLMGBP", "diff_order_book_", "live_trades_ethusd",
                        "live_trades_nope", "order_book_ethusd"])


def maybe(s):
    return st.integers(0, 59).flatmap(lambda k: s if k < 57 else weird if k < 59 else st.just(KeyError))


def mostly(s):
    return st.integers(0, 19).flatmap(lambda k: s if k else weird)


def obj(**f):
    return st.fixed_dictionaries(f).map(lambda d: {k: v for k, v in d.items() if v is not KeyError})


level = mostly(st.lists(dec, min_size=1, max_size=3))


@st.composite
def gen_frames(draw):
    kind = draw(st.sampled_from(["data", "trade", "bts"]))
    if kind == "data":
        data = obj(timestamp=maybe(st.just("1")), microtimestamp=maybe(us), bids=maybe(st.lists(level, max_size=3)),
                   asks=maybe(st.lists(level, max_size=3)))
    elif kind == "trade":
        data = obj(id=maybe(st.integers(0, 2**65)), microtimestamp=maybe(us), price_str=maybe(dec),
                   amount_str=maybe(dec), type=maybe(st.integers(0, 3)), price=maybe(st.floats(0, 10)))
    else:
        data = st.just({})
    ev = st.sampled_from(["data", "trade"]) if kind != "bts" else st.sampled_from(
        ["bts:subscription_succeeded", "bts:request_reconnect", "bts:heartbeat", "bts:error", "bts:x", "bts:"])
    v = draw(obj(event=maybe(ev), channel=maybe(chan), data=maybe(data)))
    items = list(v.items())
    draw(st.randoms()).shuffle(items)
    return ("{" + ",".join(json.dumps(k) + ":" + json.dumps(x) for k, x in items) + "}").encode()


GEN = pair()


@SETTINGS
@given(gen_frames())
def test_generated_frames_agree(frame):
    agree(*GEN, frame)


RECORDED = [ev.text.encode() for ev in frames()]
RECORDED = random.Random(4).sample(RECORDED, 300)
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
    agree(*GEN, frame)


def test_every_truncation_agrees():
    c, r = pair()
    for frame in RECORDED[:6]:
        for i in range(len(frame)):
            assert agree(c, r, frame[:i])[0] == "error"
    body = snapshots()["sgbeur"][1][:3000]
    for i in range(0, len(body), 7):
        agree(c, r, body[:i], snap_of="sgbeur")


# --------------------------------------------------------------------------- book sync


def test_booksync_buffers_until_the_snapshot_then_applies_newer_diffs():
    s = BitstampBookSync(9)
    a = s.on_diff(100, delta(9, SIDE_BID, 10**9, 5))
    assert a.needs_snapshot and not s.synced and len(s.buffer) == 1
    assert not s.on_diff(200, delta(9, SIDE_BID, 2 * 10**9, 1)).needs_snapshot    # one request
    a = s.on_snapshot(150, snapshot_records(9, [("1", "7")], [("3", "1")]))
    assert s.synced and a.dropped == 1 and s.stats.applied == 1 and s.last_us == 200
    assert s.book.levels(SIDE_BID) == [(2 * 10**9, 1), (10**9, 7 * 10**9)]     # the 100 diff was in the snapshot
    assert s.on_diff(200, delta(9, SIDE_BID, 2 * 10**9, 0)).applied and s.book.best_bid == (10**9, 7 * 10**9)
    assert s.on_diff(199, delta(9, SIDE_BID, 10**9, 0)).reason == "older microtimestamp"
    s.reset()
    assert not s.synced and not s.buffer and s.on_diff(300, b"").needs_snapshot


def test_booksync_drops_a_buffered_diff_older_than_the_one_before_it():
    """The buffer is replayed under on_diff's order rule: a diff older than the last applied is
    dropped, not applied over it."""
    s = BitstampBookSync(9)
    s.on_diff(200, delta(9, SIDE_BID, 10**9, 5))
    s.on_diff(180, delta(9, SIDE_BID, 10**9, 9))           # out of order: older than 200
    a = s.on_snapshot(150, snapshot_records(9, [], []))
    assert a.dropped == 1 and s.stats.applied == 1 and s.last_us == 200
    assert s.book.levels(SIDE_BID) == [(10**9, 5)]


def test_recorded_books_sync_from_the_rest_snapshots():
    """The recorded session as the worker sees it on replay: each pair's diffs after its
    subscription ack are buffered until its REST snapshot; 2–25 diffs per pair predate the
    snapshot (dropped), the rest are applied; never crossed; final books equal a pure-Python
    rebuild (snapshot + the later diffs)."""
    c = BitstampCodec(PUB)
    for s_, iid in IIDS.items():
        c.add_symbol(s_, iid, 9)
    syncs = {iid: BitstampBookSync(iid) for iid in IIDS.values()}
    refs = {}
    snaps = snapshots()
    diffs = defaultdict(list)
    for ev in frames():
        c.decode(ev.text, ev.ts_ns)
        if c.last_kind == KINDS["book"]:
            a = syncs[c.instrument_id].on_diff(c.last_seq, bytes(c.output()))
            assert not a.crossed
            diffs[c.instrument_id].append(json.loads(ev.text)["data"])
    dropped = {}
    for p, (ts, body) in snaps.items():
        iid = IIDS[p]
        c.decode_snapshot(body, p, ts)
        a = syncs[iid].on_snapshot(c.last_seq, bytes(c.output()))
        assert not a.crossed and syncs[iid].synced
        dropped[p] = a.dropped
        d = json.loads(body)
        ref = refs[iid] = RefBook(iid, 0, 0)
        ref.apply(snapshot_records(iid, fits(d["bids"]), fits(d["asks"])))
        for df in diffs[iid]:
            if int(df["microtimestamp"]) > int(d["microtimestamp"]):
                ref.apply(b"".join(delta(iid, SIDE_BID, fx(x), fx(y)) for x, y in df["bids"])
                          + b"".join(delta(iid, SIDE_ASK, fx(x), fx(y)) for x, y in df["asks"]))
        assert not ref.crossed
    for iid, s in syncs.items():
        assert s.book.levels(SIDE_BID) == refs[iid].levels(SIDE_BID)
        assert s.book.levels(SIDE_ASK) == refs[iid].levels(SIDE_ASK)
        assert s.stats.crossed == 0
    assert dropped["sgbeur"] == 0 and all(2 <= dropped[p] <= 25 for p in PAIRS if p != "sgbeur")
    assert sum(s.stats.applied for s in syncs.values()) + sum(dropped.values()) == 717


# --------------------------------------------------------------------------- symbology


def test_symbology_from_recorded_pairs():
    assert len(SYM) == 140
    assert SYM.to_canonical("ethusd") == "ETHUSD" and SYM.to_venue("XLMGBP") == "xlmgbp"
    assert SYM.to_canonical("ETH/USD") == "ETHUSD" and SYM.to_canonical("ETHUSD") == "ETHUSD"
    i = SYM.info("usdteur")
    assert (i.size_precision, str(i.tick_size), i.base, i.quote, i.tradeable) == (5, "0.00001", "USDT", "EUR", True)
    assert SP == {"sgbeur": 8, "ethusd": 8, "xrpeur": 8, "bateur": 8, "usdteur": 5, "usdtusd": 5, "xlmgbp": 8,
                  "adaeur": 8, "batbtc": 8, "galaeur": 8}
    aliased = BitstampSymbology.from_reference(reference(), {"USDT": "USD"})
    assert "ETHUSD" in aliased.collisions()          # why the provider takes no global alias
    with pytest.raises(SymbologyError):
        BitstampSymbology.from_reference(b'{"error": "x"}')
    with pytest.raises(SymbologyError, match="malformed"):
        BitstampSymbology.from_reference(b'[{"url_symbol": "x", "name": "XY"}]')


def test_provider_config():
    raw = {"providers": {"b": {"kind": "bitstamp", "ws_url": "ws://x/bitstamp", "symbols": ["ETHUSD"]}}}
    cfg = parse(raw, env={})
    p = BitstampProvider(cfg, cfg.providers["b"])
    assert p.channel_names == ("diff_order_book", "live_trades") and p.pcfg.publisher_id == PUB
    assert p.ping_message() == '{"event":"bts:heartbeat"}'
    for extra, match in (({"channels": ["order_book"]}, "unknown Bitstamp channel"), ({"depth": 5}, "unknown Bitstamp key")):
        bad = json.loads(json.dumps(raw))
        bad["providers"]["b"].update(extra)
        c2 = parse(bad, env={})
        with pytest.raises(ConfigError, match=match):
            BitstampProvider(c2, c2.providers["b"])


# --------------------------------------------------------------------------- replay server


def test_replay_subscribe_heartbeat_and_rest():
    want = defaultdict(list)
    for ev in frames():
        m = json.loads(ev.text)
        if not m["event"].startswith("bts:"):
            want[m["channel"]].append(ev.text)

    async def main():
        async with ReplayServer([SESSION], speed=0, once=True, linger=0.1) as srv:
            url = srv.ws_url("bitstamp")
            got = []
            async with aiohttp.ClientSession() as s:
                async with s.ws_connect(url, max_msg_size=0) as ws:
                    await ws.send_str('{"event":"bts:heartbeat"}')
                    hb = json.loads((await ws.receive()).data)
                    await ws.send_str('{"event":"bts:subscribe","data":{"channel":"diff_order_book_nope"}}')
                    err = json.loads((await ws.receive()).data)
                    for ch in sorted(want):
                        await ws.send_str(json.dumps({"event": "bts:subscribe", "data": {"channel": ch}}))
                    async for msg in ws:
                        if msg.type != aiohttp.WSMsgType.TEXT:
                            break
                        got.append(msg.data)
                async with s.get(srv.rest_url() + "/api/v2/order_book/ethusd") as r:
                    book = (r.status, await r.read())
                async with s.get(srv.rest_url() + "/api/v2/trading-pairs-info/") as r:
                    info = (r.status, await r.read())
            await srv.wait_done()
            return hb, err, got, book, info
    hb, err, got, book, info = arun(main())
    assert hb == {"event": "bts:heartbeat", "channel": "", "data": {"status": "success"}}
    assert err["event"] == "bts:error"
    acks = [json.loads(t) for t in got if '"bts:subscription_succeeded"' in t]
    assert len(acks) == len(want) == 10     # 9 diff channels with frames (not sgbeur) + live_trades_ethusd
    per = defaultdict(list)
    for t in got:
        m = json.loads(t)
        if not m["event"].startswith("bts:"):
            per[m["channel"]].append(t)
    assert per == want
    assert book == (200, snapshots()["ethusd"][1]) and info == (200, reference())


def arun(coro, timeout: float = 30.0):
    async def main():
        return await asyncio.wait_for(coro, timeout)
    return asyncio.run(main())
