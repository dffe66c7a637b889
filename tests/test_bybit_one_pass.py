"""The Bybit codec's one-pass decoder of order book and trade frames (``by_one_pass`` in
dm/venues/bybit/_codec.pyx: the top and data objects' members read once in whatever order they
come, each level in one scan, each trade object indexed while validated) must give exactly what
the general path gives (``_set_one_pass(False)``) and what the pure-Python oracle gives, and hand
every other frame to the general path: every recorded frame of both sessions as recorded and with
its members in other orders, repeated members (JSON "the last one wins"), levels and trades with
values rejected alone, nesting at the depth limit, malformed frames at every offset, generated and
mutated frames (hypothesis)."""
from __future__ import annotations

import json

from hypothesis import given
from hypothesis import strategies as st

from dm._codec import KINDS
from dm.venues.bybit._codec import _one_pass_count, _set_one_pass
from tests.json_frames import dump, every_offset, j, members
from tests.test_bybit import (LINEAR, LINEAR25, S25, S26, SETTINGS, SP_LINEAR, SPOT, SPOT25, SP_SPOT, agree, frames,
                              mutated, outcome, pair, sessions)

#: one codec trio for the hand-made frames: one-pass (on), oracle, general path (one-pass off)
C, R = pair(LINEAR, SP_LINEAR)
G, _ = pair(LINEAR, SP_LINEAR)
REC26 = [(u, [e.text for e in fr]) for u, fr in sessions(S26)]
BOOK = [t for _, fr in REC26 for t in fr if t.startswith('{"topic":"orderbook.')]
TRADE = [t for u, fr in REC26 if u.endswith("linear") for t in fr if t.startswith('{"topic":"publicTrade.')]
SMALL = [t for u, fr in REC26 if u.endswith("linear") for t in fr
         if t.startswith('{"topic":"orderbook.') and len(t) < 400]
#: a decoy value per member: what a repeated member may carry
DECOY = {"topic": "tickers.BTCUSDT", "type": "snapshot", "ts": 1, "cts": 2, "data": {"s": "ETHUSDT", "b": [], "a": [],
                                                                                   "u": 9},
         "s": "ETHUSDT", "b": [["1", "1"]], "a": [["2", "1"]], "u": 5, "seq": 3,
         "T": 1, "S": "Buy", "v": "7", "p": "8", "i": "99", "BT": True}
UPD = ('{"topic":"orderbook.50.BTCUSDT","type":"delta","ts":1786310818129,"data":{"s":"BTCUSDT",'
       '"b":[["65114.20","6.054"],["65114.10","0"]],"a":[["65114.30","0.002"]],"u":123,"seq":77},"cts":1786310818127}')
TRD = ('{"topic":"publicTrade.BTCUSDT","type":"snapshot","ts":1786310819681,"data":[{"T":1786310819680,'
       '"s":"BTCUSDT","S":"Sell","v":"0.004","p":"65114.20","L":"MinusTick","i":"a9188a0a-82bc-50de-be60-03eedbe3cdd7",'
       '"BT":false,"RPI":false,"seq":753843954913},{"T":1786310819681,"s":"ETHUSDT","S":"Buy","v":"1.5","p":"1922.5",'
       '"i":"2280000001739247417","BT":true,"seq":178477362706}]}')


def general(codec, frame):
    """The frame's outcome through the general path alone."""
    was = _set_one_pass(False)
    try:
        return outcome(codec, frame)
    finally:
        _set_one_pass(was)


def check(frame, *, one_pass: bool | None = None, codecs=None):
    """One-pass (when it takes the frame), general path and oracle agree; ``one_pass``: whether the
    one-pass decoder must have taken it (None: either)."""
    c, r, g = codecs or (C, R, G)
    n0 = _one_pass_count()
    a = agree(c, r, frame)
    took = _one_pass_count() > n0
    if one_pass is not None:
        assert took == one_pass, frame[:300]
    assert general(g, frame) == a, frame[:300]
    return a


def moved(out):
    """An outcome without the frame offsets of its value errors (re-serialized frames move them)."""
    return out[:6] + ([v[:3] for v in out[6]], out[7]) if out[0] != "error" else out


def rebuild(msg: dict, top_order=None, data_order=None, data_extra=()) -> str:
    """A book frame re-serialized with its top members and data-object members in the given orders
    (key lists; default as they are), ``data_extra`` (key, value text) pairs appended to data."""
    d = msg["data"]
    dpairs = [(k, j(d[k])) for k in (data_order or list(d))] + list(data_extra)
    return dump([(k, dump(dpairs) if k == "data" else j(msg[k])) for k in (top_order or list(msg))])


def test_every_recorded_frame_equals_the_general_path():
    """Every frame of both recorded sessions (each connection with its own codecs): the one-pass
    decoder takes each book and trade frame and no other, and gives the general path's records and
    results."""
    took_n = hot = 0
    for path, tables in ((S26, {"/v5/public/linear": (LINEAR, SP_LINEAR), "/v5/public/spot": (SPOT, SP_SPOT)}),
                         (S25, {"/v5/public/linear": (LINEAR25, None), "/v5/public/spot": (SPOT25, None)})):
        for url_path, frs in sessions(path):
            c, r = pair(*tables[url_path])
            g, _ = pair(*tables[url_path])
            for ev in frs:
                n0 = _one_pass_count()
                a = agree(c, r, ev.text)
                took = _one_pass_count() > n0
                assert a[0] != "error" and general(g, ev.text) == a
                is_hot = ev.text.startswith(('{"topic":"orderbook.', '{"topic":"publicTrade.'))
                assert took == is_hot, ev.text[:200]
                hot += is_hot
                took_n += took
                if a[2] == KINDS["ticker"]:
                    for iid in tables[url_path][0].values():
                        assert c.ticker_state(iid) == g.ticker_state(iid) == r.ticker_state(iid)
    # 2026: 1598 + 550 book, 102 + 18 trade frames; 2025: 198 + 139 book frames
    assert took_n == hot == 1598 + 550 + 102 + 18 + 198 + 139


def test_member_orders():
    """Other member orders give the same result; the one-pass decoder takes any top order with topic
    before data, and any data-object order with s before b before a."""
    n = 0
    for t in SMALL[::7] + [UPD, UPD.replace('"delta"', '"snapshot"'), UPD.replace('"u":123', '"u":1')]:
        msg = json.loads(t)
        keys = list(msg["data"])
        want = moved(check(t, one_pass=True))
        for o in (["u", "seq", "s", "b", "a"], ["s", "u", "b", "seq", "a"], ["seq", "s", "b", "a", "u"]):
            assert moved(check(rebuild(msg, data_order=o), one_pass=True)) == want
        for o in (["topic", "cts", "data", "ts", "type"], ["cts", "ts", "type", "topic", "data"],
                  ["topic", "data", "type", "cts", "ts"]):
            assert moved(check(rebuild(msg, top_order=o), one_pass=True)) == want
        extra = rebuild(msg, data_order=keys, data_extra=[("x", '{"a":[1,{"b":null}]}'), ("ts", '"x"')])
        assert moved(check(extra, one_pass=True)) == want
        # data before topic, b before s, a before b: the general path
        assert moved(check(rebuild(msg, top_order=["data", "topic", "type", "ts", "cts"]), one_pass=False)) == want
        for o in (["b", "s", "a", "u", "seq"], ["s", "a", "b", "u", "seq"], ["a", "b", "s", "u", "seq"]):
            assert moved(check(rebuild(msg, data_order=o), one_pass=False)) == want
        n += 1
    assert n > 20
    # trades: any top order with topic before data, any member order in a trade object
    msg = json.loads(TRD)
    want = moved(check(TRD, one_pass=True))
    rev = [dump([(k, j(v)) for k, v in reversed(tr.items())]) for tr in msg["data"]]
    for top in (["topic", "type", "ts", "data"], ["ts", "topic", "data", "type"]):
        f = dump([(k, "[" + ",".join(rev) + "]" if k == "data" else j(msg[k])) for k in top])
        assert moved(check(f, one_pass=True)) == want
    assert moved(check(dump([(k, j(msg[k])) for k in ["data", "topic", "type", "ts"]]), one_pass=False)) == want


def test_repeated_members_take_the_general_path():
    """A repeated member the decode reads (top: topic, type, ts, cts, data; book data: s, b, a, u)
    goes to the general path, with a decoy before or after or the same value again; repeated members
    it does not read, and repeated members of a trade object (indexed as the general path indexes
    them: the last one wins), stay in one pass."""
    msg = json.loads(UPD)
    d = msg["data"]
    for k in ("s", "b", "a", "u"):
        for where in ("before", "after", "same"):
            pairs = [(x, j(v)) for x, v in d.items()]
            i = list(d).index(k)
            if where == "before":
                pairs.insert(i, (k, j(DECOY[k])))
            else:
                pairs.append((k, j(DECOY[k]) if where == "after" else pairs[i][1]))
            check(dump([(x, dump(pairs) if x == "data" else j(v)) for x, v in msg.items()]), one_pass=False)
    for k in msg:
        for where in ("before", "after", "same"):
            pairs = [(x, j(v)) for x, v in msg.items()]
            i = list(msg).index(k)
            if where == "before":
                pairs.insert(i, (k, j(DECOY[k])))
            else:
                pairs.append((k, j(DECOY[k]) if where == "after" else pairs[i][1]))
            check(dump(pairs), one_pass=False)
    check(UPD.replace('"seq":77', '"seq":77,"seq":"x","x":1,"x":[2]'), one_pass=True)
    check(UPD.replace('"type"', '"op":"x","success":1,"x":1,"x":2,"type"'), one_pass=True)
    # a trade object's members: the last one wins in both paths
    t = json.loads(TRD)
    for k in t["data"][0]:
        for where in ("before", "after"):
            pairs = [(x, j(v)) for x, v in t["data"][0].items()]
            pairs.insert(0, (k, j(DECOY.get(k, 0)))) if where == "before" else pairs.append((k, j(DECOY.get(k, 0))))
            check(TRD.replace(j(t["data"][0]), dump(pairs)), one_pass=None)
    check(TRD.replace('"L":"MinusTick"', '"L":"MinusTick","s":"BTCUSDT","p":"1"'), one_pass=True)
    for k in ("topic", "data"):
        check(TRD.replace('"ts"', f'"{k}":{j(DECOY[k])},"ts"'), one_pass=False)


def test_snapshots_and_restart():
    """A snapshot, and a delta with u == 1 (the service restarted), start with CLEAR and flag every
    record FLAG_SNAPSHOT, the last FLAG_LAST, whatever the member order; empty sides too."""
    for f in (UPD.replace('"delta"', '"snapshot"'), UPD.replace('"u":123', '"u":1'),
              UPD.replace('"u":123', '"u":1').replace('"b":[["65114.20","6.054"],["65114.10","0"]]', '"b":[]')
              .replace('"a":[["65114.30","0.002"]]', '"a":[]'),
              UPD.replace('"b":[["65114.20","6.054"],["65114.10","0"]]', '"b":[]').replace('"a":[["65114.30","0.002"]]',
                                                                                        '"a":[]')):
        out = check(f, one_pass=True)
        msg = json.loads(f)
        snap = msg["type"] == "snapshot" or msg["data"]["u"] == 1
        assert out[2] == (KINDS["bookSnapshot"] if snap else KINDS["book"])
        assert out[0] == len(msg["data"]["b"]) + len(msg["data"]["a"]) + (out[2] == KINDS["bookSnapshot"])
        moved_top = rebuild(msg, top_order=["data", "cts", "ts", "type", "topic"][::-1])
        assert check(moved_top, one_pass=True) == out


def test_values_rejected_alone():
    """Levels and trades whose price or size does not fit are dropped alone, their value errors in
    the general path's order (bids' first), beyond the 16 kept too."""
    bad = ["1.0000000001", "99999999999999"]
    for nb in (0, 1, 2, 7, 17):
        for na in (0, 1, 3, 16):
            b = [[bad[i % 2] if i % 3 == 0 else str(100 + i), "1.0001" if i % 3 == 1 else "2"] for i in range(nb)]
            a = [[str(200 + i), "99999999999999999" if i % 2 else "-0.5"] for i in range(na)]
            rejected = sum(1 for i in range(nb) if i % 3 != 2) + na
            for typ in ("delta", "snapshot"):
                f = j({"topic": "orderbook.50.BTCUSDT", "type": typ, "ts": 5,
                       "data": {"s": "BTCUSDT", "b": b, "a": a, "u": 9}, "cts": 4})
                out = check(f, one_pass=True)
                assert out[7] == rejected and len(out[6]) == min(rejected, 16)
                assert out[0] == nb - sum(1 for i in range(nb) if i % 3 != 2) + (typ == "snapshot")
    trades = [{"T": 5, "s": "BTCUSDT", "S": "Sell", "v": v, "p": p, "i": str(k)}
              for k, (p, v) in enumerate([("1e20", "1"), ("2", "0.0001"), ("3", "1"), ("-4", "1"), ("5", "-1")])]
    out = check(j({"topic": "publicTrade.BTCUSDT", "data": trades}), one_pass=True)
    assert out[0] == 2 and out[7] == 3


DEEP_ERR = "invalid JSON: nesting too deep"


def test_nesting_limits():
    """Extra values nested up to the general path's depth limit stay in one pass; one level more
    is the general path's error, at every place the one-pass decoder skips values."""
    def nest(k):
        return "[" * k + "]" * k
    # (frame template with {} where the extra goes, containers around it)
    places = [(UPD.replace('"seq":77', '"seq":{}'), 2), (UPD.replace('"cts"', '"x":{},"cts"'), 1),
              (UPD.replace('"65114.10","0"]', '"65114.10","0",{}]'), 4),
              (UPD.replace('"b":[', '"b":[{},', 1), 3),
              (TRD.replace('"L":"MinusTick"', '"L":{}'), 3), (TRD.replace('"type"', '"x":{},"type"'), 1)]
    for tpl, around in places:
        ok = 32 - around
        out = check(tpl.replace("{}", nest(ok)), one_pass=None)
        assert out[0] != "error" or out[3] != DEEP_ERR
        if "b\":[{}" not in tpl:                         # a level that is not [price, size]: an error anyway
            assert check(tpl.replace("{}", nest(ok)), one_pass=True)[0] != "error"
        out = check(tpl.replace("{}", nest(ok + 1)), one_pass=False)
        assert out[:4] == ("error", "CodecError", "BYBIT", DEEP_ERR)


def test_level_shapes():
    """Levels with extra, nested, null and numeric elements and whitespace, a negative size
    (rejected alone) stay in one pass; levels that are not arrays, hold non-strings, fewer than two
    elements or bad JSON are the general path's errors."""
    fine = ['[["1","2"]]', '[["1","2","0","x",null,true,false,-1.5e3,[],{},[{"a":[1]}]]]',
            '[ [ "1" , "2" ] , ["3","0"] ]', '[]', '[["1","2"],["1","2"],["1","2"]]', '[["1","-2"]]',
            '[["1e2","2E-3"]]', '[["0.0000000001","1"]]', '[["1","\\u0032"]]']
    for v in fine:
        out = check(UPD.replace('"b":[["65114.20","6.054"],["65114.10","0"]]', '"b":' + v), one_pass=None)
        assert out[0] != "error" or v.endswith('"\\u0032"]]'), v
    errors = ['[["1"]]', '[[]]', '[[1,"2"]]', '[["1",2]]', '["1"]', '[{"p":"1"}]', '{}', '"x"', 'null',
              '[["1","2",]]', '[["1","2"]', '[["1","2" "3"]]', '[["1","2",{"a":}]]', '[["1","2","\x01"]]',
              '[["1x","2"]]', '[["1","2","\\q"]]', '[["1",""]]', '[["","1"]]']
    for v in errors:
        out = check(UPD.replace('"b":[["65114.20","6.054"],["65114.10","0"]]', '"b":' + v), one_pass=False)
        assert out[0] == "error", v


PRICES = ["1", "1.", "0", "00", "01.50", "65114.20", "9999999999", "99999999999", "9999999999.999999999",
          "9223372036.854775807", "9223372036.854775808", "1.123456789", "1.1234567890", "1.12345678901", ".5",
          "-1", "+1", "1e3", "1.5e-3", " 1", "1 ", "1.2.3", "", ".", "\u0661"]
SIZES = ["1", "1.", "0", "0.0", "6.054", "1.000", "1.0001", "1.10", "0.001", "0.0010", "123456789012345678",
         "12345678901234567", "1234567890123456", "99999999999999999", "-1", "1e2", ".5", "", "1 ", "0.000000001"]


def test_level_values_through_the_plain_reader():
    """Every price and size text, at size precisions 0..3 (the level read by plain_level when it is
    Bybit's plain form, element by element otherwise): the general path's records, rejections and
    errors."""
    n = 0
    for sym in LINEAR:                                   # size_precision 3, 2, 1, 0
        for p in PRICES:
            for q in SIZES:
                lvl = '[[' + j(p) + ',' + j(q) + ']]'
                f = UPD.replace('"BTCUSDT"', j(sym)).replace('[["65114.20","6.054"],["65114.10","0"]]', lvl)
                out = check(f, one_pass=None)
                n += out[0] != "error"
    assert n > 1000
    # whitespace or a third element inside the level: read element by element, the same records
    want = check(UPD, one_pass=True)
    for lvl in ('[ "65114.20","6.054"]', '["65114.20" ,"6.054"]', '["65114.20", "6.054"]', '["65114.20","6.054" ]',
                '["65114.20","6.054","x"]', '[\n"65114.20","6.054"\t]'):
        f = UPD.replace('["65114.20","6.054"]', lvl)
        assert moved(check(f, one_pass=True)) == moved(want)
    for lvl in ('["\\u0036\\u0035114.20","6.054"]', '["65114.20","6\\u002e054"]', '["65114.20","6.054\\"]'):
        assert check(UPD.replace('["65114.20","6.054"]', lvl), one_pass=False)[0] == "error"


def test_other_frames_and_field_errors():
    """Tickers, klines, control frames and unknown topics go to the general path; so does every
    book or trade frame with a field the general path rejects (its error and offset)."""
    for f in ('{"topic":"tickers.BTCUSDT","type":"snapshot","data":{"symbol":"BTCUSDT","bid1Price":"1"},"cs":1,"ts":2}',
              '{"topic":"kline.1.BTCUSDT","data":[],"ts":1,"type":"snapshot"}',
              '{"success":true,"ret_msg":"","conn_id":"x","req_id":"","op":"subscribe"}',
              '{"topic":"liquidation.BTCUSDT","data":{}}', '{"topic":"orderbook","data":{}}', '[1]', '{}', ' {} '):
        check(f, one_pass=False)
    book_errors = [('"type":"delta"', '"type":"partial"'), ('"type":"delta"', '"type":1'), ('"type":"delta",', ''),
                   ('"ts":1786310818129', '"ts":-1'), ('"ts":1786310818129', '"ts":"1"'),
                   ('"ts":1786310818129,', ''), ('"cts":1786310818127', '"cts":1.5'),
                   ('"cts":1786310818127', '"cts":99999999999999999999'), ('"u":123', '"u":-1'), ('"u":123,', ''),
                   ('"u":123', '"u":"123"'), ('"s":"BTCUSDT"', '"s":"XRPUSDT"'), ('"s":"BTCUSDT"', '"s":1'),
                   ('"s":"BTCUSDT",', ''), ('"a":[["65114.30","0.002"]],', ''), ('"topic":"orderbook.50.BTCUSDT",', ''),
                   ('"data":{', '"data":[{', '"seq":77}', '"seq":77}]'), ('"data":{', '"data":[{')]
    for old, new, *more in book_errors:
        f = UPD.replace(old, new)
        if more:
            f = f.replace(*more)
        assert old in UPD and f != UPD
        assert check(f, one_pass=False)[0] == "error", f
    trade_errors = [('"S":"Sell"', '"S":"sell"'), ('"T":1786310819680', '"T":"1"'), ('"s":"ETHUSDT"', '"s":"NOPE"'),
                    ('"i":"2280000001739247417",', ''), ('"p":"1922.5"', '"p":"x"'), ('"v":"1.5"', '"v":1.5'),
                    ('"BT":true', '"BT":"true"'), ('"seq":178477362706', '"seq":-2'),
                    ('"data":[', '"data":[1,'), ('"data":[{', '"data":{"x":[{', '}]}', '}]}}'), ('}]}', '}}}')]
    for old, new, *more in trade_errors:
        f = TRD.replace(old, new, 1)
        if more:
            f = f.replace(*more)
        assert old in TRD and f != TRD
        assert check(f, one_pass=False)[0] == "error", f
    assert check(TRD[:TRD.index('"data":')] + '"data":[]}', one_pass=True)[:3] == (0, b"", KINDS["trade"])


def test_malformed_at_every_offset():
    """Truncated, corrupted and extended at every offset: the same result (error or not) through
    both paths and the oracle."""
    for t in (UPD, UPD.replace('"delta"', '"snapshot"'), TRD):
        b = t.encode()
        for v in every_offset(b):
            check(v)
        check(b + b" ", one_pass=True)
        check(b + b" x", one_pass=False)
        check(b + b"{}", one_pass=False)


# --------------------------------------------------------------------------- hypothesis

px = st.sampled_from(["1", "0.5", "1.0000000001", "-3", "99999999999999", "1e5", "", "7.25", "65114.20"])
sz = st.sampled_from(["0", "1", "0.001", "0.0001", "12345678901234567890", "-1", "2.5", "1E2"])
extra = st.lists(st.sampled_from(['"0"', "1", "null", "[]", '{"a":1}']), max_size=2)


@st.composite
def hot_frames(draw):
    if draw(st.booleans()):
        msg = json.loads(draw(st.sampled_from(SMALL + [UPD])))
        d = dict(msg["data"])
        for side in ("b", "a"):
            if draw(st.booleans()):
                d[side] = [[draw(px), draw(sz)] + [json.loads(x) for x in draw(extra)]
                           for _ in range(draw(st.integers(0, 5)))]
        if draw(st.booleans()):
            d["u"] = draw(st.sampled_from([0, 1, 2, 1 << 64, -1, "1", 1.5]))
        if draw(st.booleans()):
            msg["type"] = draw(st.sampled_from(["snapshot", "delta", "x", 1]))
        return draw(members(msg, DECOY, lambda k, v: draw(members(d, DECOY)) if k == "data" else j(v)))
    msg = json.loads(draw(st.sampled_from(TRADE + [TRD])))
    trades = [dict(t, p=draw(px), v=draw(sz)) if draw(st.booleans()) else t for t in msg["data"]]
    return draw(members(msg, DECOY, lambda k, v: "[" + ",".join(draw(members(t, DECOY)) for t in trades) + "]"
                        if k == "data" else j(v)))


@SETTINGS
@given(hot_frames())
def test_reordered_repeated_and_odd_values_agree(frame):
    check(frame)


@SETTINGS
@given(st.one_of(frames(), mutated()))
def test_generated_and_mutated_frames_agree(frame):
    """tests/test_bybit.py's generated frames and mutated recorded frames through all three."""
    check(frame)
    for iid in LINEAR.values():
        assert C.ticker_state(iid) == R.ticker_state(iid) == G.ticker_state(iid)
