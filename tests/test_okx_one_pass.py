"""The OKX codec's one-pass decoder of order book frames (``ok_one_pass`` in
dm/venues/okx/_codec.pyx: the data object's members read once in whatever order they come, each
level in one scan) must give exactly what the general path gives (``_set_one_pass(False)``) and
what the pure-Python oracle gives, and hand every other frame to the general path: recorded frames
as recorded and with their members in other orders, repeated members (JSON "the last one wins"),
levels with values rejected alone on both sides, and malformed frames at every offset."""
from __future__ import annotations

import json

from hypothesis import given
from hypothesis import strategies as st

from dm.venues.okx._codec import _one_pass_count, _set_one_pass
from tests.json_frames import dump, every_offset, j, members
from tests.test_okx import FRAMES, SETTINGS, agree, outcome, pair

BOOK = [e.text for e in FRAMES if '"action"' in e.text[:120]]
SMALL = [t for t in BOOK if len(t) < 400]
#: a decoy value per member: what a repeated member may carry
DECOY = {"arg": {"channel": "trades", "instId": "ZEN-USDT"}, "action": "snapshot", "data": [],
         "asks": [["1", "1", "0", "1"]], "bids": [], "ts": "1", "checksum": 7, "seqId": 5, "prevSeqId": 4}
UPD = ('{"arg":{"channel":"books","instId":"ZEN-USDT"},"action":"update","data":[{"asks":[["32.5","1.5","0","1"],'
       '["32.6","0","0","0"]],"bids":[["32.1","2","0","3"]],"ts":"1700000000000","checksum":-5,"prevSeqId":120,'
       '"seqId":123}]}')


def general(codec, frame):
    """The frame's outcome through the general path alone."""
    was = _set_one_pass(False)
    try:
        return outcome(codec, frame)
    finally:
        _set_one_pass(was)


def check(frame, *, one_pass: bool | None = None):
    """One-pass (when it takes the frame), general path and oracle agree; ``one_pass``: whether the
    one-pass decoder must have taken it (None: either)."""
    c, r = pair()
    n0 = _one_pass_count()
    a = agree(c, r, frame)
    took = _one_pass_count() > n0
    if one_pass is not None:
        assert took == one_pass, frame[:300]
    g, _ = pair()
    assert general(g, frame) == a, frame[:300]
    return a


def moved(out):
    """An outcome without the frame offsets of its value errors (re-serialized frames move them)."""
    return out[:7] + ([v[:3] for v in out[7]], out[8]) if out[0] != "error" else out


def rebuild(msg: dict, top_order=None, item_order=None, item_extra=()) -> str:
    """A book frame re-serialized with its top members and data-object members in the given orders
    (key lists; default as they are), ``item_extra`` (key, value text) pairs appended to the item."""
    item = msg["data"][0]
    ipairs = [(k, j(item[k])) for k in (item_order or list(item))] + list(item_extra)
    tops = [(k, "[" + dump(ipairs) + "]" if k == "data" else j(msg[k])) for k in (top_order or list(msg))]
    return dump(tops)


def test_every_recorded_frame_equals_the_general_path():
    """Every recorded frame: the one-pass decoder takes each book frame (and no other) and gives
    the general path's records and results, value errors included (ELON-USDT's)."""
    c, r = pair()
    g, _ = pair()
    books = fallbacks = 0
    for e in FRAMES:
        n0 = _one_pass_count()
        a = agree(c, r, e.text)
        took = _one_pass_count() > n0
        assert general(g, e.text) == a
        book = '"action"' in e.text[:120]
        books += book
        assert took or not book or a[-1] > 16           # more than the 16 kept: the general path
        fallbacks += book and not took
    assert books == len(BOOK) > 3600
    assert fallbacks == 2                                # ELON-USDT's two snapshots (502 rejected each)


def test_member_orders():
    """Other member orders give the same result; the one-pass decoder takes any data-object order
    and any top order with arg and action before data."""
    n = 0
    for t in SMALL[::5] + [UPD, UPD.replace('"update"', '"snapshot"')]:
        msg = json.loads(t)
        keys = list(msg["data"][0])
        orders = [list(reversed(keys)), sorted(keys), ["ts"] + [k for k in keys if k != "ts"],
                  ["bids", "asks"] + [k for k in keys if k not in ("bids", "asks")],
                  [k for k in keys if k not in ("bids", "asks")] + ["asks", "bids"]]
        want = moved(check(t, one_pass=True))
        for o in orders:
            assert moved(check(rebuild(msg, item_order=o), one_pass=True)) == want
        assert moved(check(rebuild(msg, top_order=["action", "arg", "data"]), one_pass=True)) == want
        extra = rebuild(msg, item_order=list(reversed(keys)), item_extra=[("x", '{"a":[1,{"b":null}]}')])
        assert moved(check(extra, one_pass=True)) == want
        # data before arg or action: the general path
        assert moved(check(rebuild(msg, top_order=["data", "arg", "action"]), one_pass=False)) == want
        assert moved(check(rebuild(msg, top_order=["arg", "data", "action"]), one_pass=False)) == want
        n += 1
    assert n > 50


def test_repeated_members_take_the_general_path():
    msg = json.loads(UPD)
    item = msg["data"][0]
    for k in item:
        for where in ("before", "after", "same"):
            pairs = [(x, j(v)) for x, v in item.items()]
            i = list(item).index(k)
            if where == "before":
                pairs.insert(i, (k, j(DECOY[k])))
            else:
                pairs.append((k, j(DECOY[k]) if where == "after" else pairs[i][1]))
            check(dump([("arg", j(msg["arg"])), ("action", j(msg["action"])), ("data", "[" + dump(pairs) + "]")]),
                  one_pass=False)
    for k in msg:
        for where in ("before", "after"):
            pairs = [(x, UPD[UPD.index('"data":') + 7:-1] if x == "data" else j(v)) for x, v in msg.items()]
            i = list(msg).index(k)
            decoy = j(DECOY[k])
            pairs.insert(i, (k, decoy)) if where == "before" else pairs.append((k, decoy))
            check(dump(pairs), one_pass=False)
    # a repeated member the general path ignores does not matter
    check(UPD.replace('"action"', '"x":1,"x":2,"action"'), one_pass=True)
    # an "event" member makes it an event frame
    check(UPD.replace('"action"', '"event":"subscribe","action"'), one_pass=False)


def test_values_rejected_alone_in_both_sides():
    """Levels whose price or size does not fit are dropped alone, their value errors in the general
    path's order (bids' first) whatever the member order, beyond the 16 kept too."""
    bad = ["1.0000000001", "99999999999999"]
    for nb in (0, 1, 2, 7, 9, 17):
        for na in (0, 1, 3, 8, 16):
            bids = [[bad[i % 2] if i % 3 == 0 else str(100 + i), "1.0000001" if i % 3 == 1 else "2", "0", "1"]
                    for i in range(nb)]
            asks = [[str(200 + i), bad[1] if i % 2 else "0.1234567", "0", "1"] for i in range(na)]
            rejected = sum(1 for i in range(nb) if i % 3 != 2) + na
            for order in (["asks", "bids", "ts", "checksum"], ["bids", "asks", "ts", "checksum"],
                          ["ts", "asks", "checksum", "bids"]):
                item = {"asks": asks, "bids": bids, "ts": "1700000000000", "checksum": 3}
                for action in ("update", "snapshot"):
                    f = dump([("arg", j({"channel": "books", "instId": "ZEN-USDT"})), ("action", j(action)),
                              ("data", "[" + dump([(k, j(item[k])) for k in order]) + "]")])
                    # beyond 16 value errors on both sides with asks first: the general path
                    out = check(f, one_pass=None if rejected > 16 else True)
                    assert out[-1] == rejected and len(out[-2]) == min(rejected, 16)
                    assert out[0] == nb - sum(1 for i in range(nb) if i % 3 != 2) + (action == "snapshot")


def test_level_shapes():
    """Levels of two elements, of more than four, with nested, null and numeric extras, a negative
    size (rejected alone); levels that are not arrays, hold non-strings or bad JSON (errors, from
    the general path)."""
    fine = [
        '[["1","2"]]', '[["1","2","0","1","x",null,true,false,-1.5e3,[],{},[{"a":[1]}]]]',
        '[ [ "1" , "2" , "0" , "1" ] , ["3","0"] ]', '[]', '[["1","2"],["1","2"],["1","2"]]', '[["1","-2"]]',
    ]
    for v in fine:
        assert check(UPD.replace('"bids":[["32.1","2","0","3"]]', '"bids":' + v), one_pass=True)[0] != "error"
    deep = "[" * 27 + "]" * 27                            # 5 containers around: 32 deep at most
    assert check(UPD.replace('"bids":[["32.1","2","0","3"]]', '"bids":[["1","2",' + deep + ']]'), one_pass=True)
    errors = ['[["1"]]', '[[]]', '[[1,"2"]]', '[["1",2]]', '["1"]', '[{"px":"1"}]', '{}', '"x"', 'null',
              '[["1","2",]]', '[["1","2"]', '[["1","2" "3"]]', '[["1","2",[' + deep + ']]]', '[["1","2",{"a":' + deep + '}]]',
              '[["1","2",{"a":}]]', '[["1","2","\x01"]]', '[["1\\u0030","2"]]', '[["1","2","\\q"]]']
    for v in errors:
        out = check(UPD.replace('"bids":[["32.1","2","0","3"]]', '"bids":' + v), one_pass=False)
        assert out[0] == "error", v


def test_malformed_at_every_offset():
    """Truncated, corrupted and extended at every offset: the same result (error or not) through
    both paths and the oracle."""
    snap = next(t for t in SMALL if '"snapshot"' in t and '"bids":[[' in t and '"asks":[[' in t)
    for t in (UPD, snap):
        b = t.encode()
        for v in every_offset(b):
            check(v)
        check(b + b" ", one_pass=True)
        check(b + b" x", one_pass=False)
        check(b + b"{}", one_pass=False)


# --------------------------------------------------------------------------- hypothesis

@st.composite
def book_frames(draw):
    msg = json.loads(draw(st.sampled_from(SMALL + [UPD])))
    item = dict(msg["data"][0])
    for side in ("asks", "bids"):
        if draw(st.booleans()):
            px = st.sampled_from(["1", "0.5", "1.0000000001", "-3", "99999999999999", "1e5", "", "7.25"])
            sz = st.sampled_from(["0", "1", "0.1234567", "12345678901234567890", "-1", "2.5"])
            rest = st.lists(st.sampled_from(['"0"', '"4"', "1", "null", "[]", '{"a":1}']), max_size=3)
            item[side] = [[draw(px), draw(sz)] + [json.loads(x) for x in draw(rest)]
                          for _ in range(draw(st.integers(0, 5)))]
    if draw(st.booleans()):
        item["seqId"] = draw(st.integers(-1, 1 << 63))
        item["prevSeqId"] = draw(st.integers(-2, 1 << 63))
    return draw(members(msg, DECOY, lambda k, v: "[" + draw(members(item, DECOY)) + "]" if k == "data" else j(v)))


@SETTINGS
@given(book_frames())
def test_reordered_repeated_and_odd_values_agree(frame):
    check(frame)


def test_arg_and_other_channels():
    """``arg`` in any member order is read by the one-pass decoder; a repeated or odd ``arg``
    member, and every other channel (however written), go to the general path."""
    msg = json.loads(UPD)
    want = moved(check(UPD, one_pass=True))
    swapped = UPD.replace('{"channel":"books","instId":"ZEN-USDT"}', '{"instId":"ZEN-USDT","x":[1],"channel":"books"}')
    assert moved(check(swapped, one_pass=True)) == want
    assert moved(check(json.dumps(msg, indent=1), one_pass=True)) == want      # whitespace everywhere
    for arg in ('{"channel":"books","channel":"books","instId":"ZEN-USDT"}',
                '{"channel":"books","instId":"ZEN-USDT","instId":"ZEN-USDT"}',
                '{"channel":"trades","instId":"ZEN-USDT","channel":"books"}',
                '{"channel":"books","instId":"NOPE"}', '{"channel":"books"}', '{"instId":"ZEN-USDT"}',
                '{"channel":1,"instId":"ZEN-USDT"}', '{"channel":"books","instId":1}', '[]', '"books"'):
        check(UPD.replace('{"channel":"books","instId":"ZEN-USDT"}', arg), one_pass=False)
    for action in ('"partial"', '1', 'null', '"snapshot\\u0020"'):
        check(UPD.replace('"update"', action, 1), one_pass=False)
    for data in ('[]', '[{}]', '{}', '[{"asks":[],"bids":[],"ts":"1"},{}]', '[{"asks":[],"bids":[],"ts":"1"},1]',
                 '[{"asks":[],"bids":[]}]', '[{"asks":[],"ts":"1"}]', '[{"bids":[],"ts":"1"}]'):
        check(UPD[:UPD.index('"data":') + 7] + data + "}", one_pass=False)
    check(UPD[:UPD.index('"data":') + 7] + '[{"asks":[],"bids":[],"ts":"1"}]}', one_pass=True)
    t = next(e.text for e in FRAMES if '{"channel":"trades"' in e.text[:30])
    check(t, one_pass=False)
    check(t.replace('{"channel":"trades"', '{ "channel":"trades"'), one_pass=False)
    check(t.replace('{"channel":"trades"', '{"channel":"books"'), one_pass=False)   # no action: an error
