"""The Coinbase codec's one-pass decoder of Advanced Trade data messages (``at_one_pass`` in
dm/venues/coinbase/_codec.pyx: the members in the order Coinbase sends them, each event decoded
where it is met) must give exactly what the general path gives, and hand every other frame to it:
recorded messages re-serialized with their members in other orders, with members repeated (JSON
"the last one wins": a decoy before, or a different value after, the member the one-pass reads)
must agree with the pure-Python oracle, and the recorded order with the reordered one."""
from __future__ import annotations

import json

from hypothesis import given
from hypothesis import strategies as st

from tests.json_frames import dump, members
from tests.test_coinbase import AT, F26, SETTINGS, SP26, agree, outcome, pair

DATA = [json.loads(ev.text) for ev in F26 if len(ev.text) < 20_000 and '"channel":"l2_data"' in ev.text[:30]]
DATA += [json.loads(ev.text) for ev in F26 if '"channel":"market_trades"' in ev.text[:40] or '"channel":"ticker"' in ev.text[:40]]
#: a decoy value per member: what a repeated member may carry
DECOY = {"channel": "heartbeats", "timestamp": "2030-01-01T00:00:00Z", "sequence_num": 7, "events": [], "client_id": "x",
         "type": "snapshot", "product_id": "ETH-USD", "updates": [], "trades": [], "tickers": []}


@st.composite
def reordered(draw):
    msg = draw(st.sampled_from(DATA))
    events = [draw(members(e, DECOY, repeat_one_in=2)) for e in msg["events"]]
    return draw(members(msg, DECOY, lambda k, v: "[" + ",".join(events) + "]" if k == "events" else json.dumps(v),
                        repeat_one_in=2))


@SETTINGS
@given(reordered())
def test_reordered_and_repeated_members_agree_with_the_oracle(frame):
    c, r = pair(AT, SP26)
    agree(c, r, frame)


def test_recorded_order_equals_the_general_path():
    """Every recorded data message: as recorded (the one-pass decoder) and with its members
    reversed (the general path) the codec gives the same records and results."""
    c, r = pair(AT, SP26)
    n = 0
    for ev in F26:
        msg = json.loads(ev.text)
        if msg.get("channel") not in ("l2_data", "market_trades", "ticker"):
            continue
        rev = dump([(k, json.dumps(v)) for k, v in reversed(msg.items())])
        a = agree(c, r, ev.text)
        assert outcome(c, rev) == a
        n += 1
    assert n > 900


# A level2 update written exactly as Coinbase writes it ({"side":..,"event_time":..,"price_level":..,
# "new_quantity":..}, compact, plain strings) is read with its keys compared as bytes and each value
# scanned once (``update_shape``); any other text of an update takes the general path. Both must
# give the oracle's records, rejections and errors (offsets included).
L2 = [m for m in DATA if m["channel"] == "l2_data" and any(e.get("updates") for e in m["events"])]
#: texts an update's value may be replaced with: other spellings, escapes, numbers, bad values
VALUE_TEXT = {
    "side": ['"bid"', '"offer"', '"\\u0062id"', '"buy"', '"sideways"', '1', 'null', '"of\\"fer"'],
    "event_time": ['"2026-08-09T21:05:48.264069Z"', '"2026-08-09T21:05:48Z"', '"2026-08-09 21:05:48Z"',
                   '"2026-02-30T00:00:00Z"', '"2026-08-09T21:05:48.264\\u0030Z"', '17', '"x"'],
    "price_level": ['"65106.54"', '"0.0000000001"', '"1e3"', '"-1"', '"99999999999999"', '65106.54', '"6510\\u0036"',
                    '""', '"12.5\\t"'],
    "new_quantity": ['"0"', '"0.15361938"', '"0.0000000001"', '"-0.5"', '"abc"', '0.1', '"1\\u0030"', '"  1"'],
}


@st.composite
def update_text(draw, upd: dict) -> str:
    """One update object's text: as Coinbase writes it, or with one thing changed (a value's text,
    whitespace, member order, a member repeated, missing or added)."""
    items = [(k, json.dumps(v)) for k, v in upd.items()]
    how = draw(st.sampled_from(["as sent", "value", "value", "space", "order", "repeat", "missing", "extra"]))
    if how == "value":
        i = draw(st.integers(0, len(items) - 1))
        k = items[i][0]
        items[i] = (k, draw(st.sampled_from(VALUE_TEXT.get(k, ['"x"']))))
    elif how == "order":
        items = draw(st.permutations(items))
    elif how == "repeat":
        i = draw(st.integers(0, len(items) - 1))
        items.insert(draw(st.integers(0, len(items))), (items[i][0], draw(st.sampled_from(VALUE_TEXT.get(items[i][0], ['"x"'])))))
    elif how == "missing":
        del items[draw(st.integers(0, len(items) - 1))]
    elif how == "extra":
        items.insert(draw(st.integers(0, len(items))), ("queue", '"x"'))
    text = dump(items)
    if how == "space":                       # JSON whitespace before or after a structural character
        i = draw(st.sampled_from([i for i, ch in enumerate(text) if ch in ",:{}"])) + draw(st.integers(0, 1))
        text = text[:i] + draw(st.sampled_from([" ", "\n", "\t", "\r"])) + text[i:]
    return text


@st.composite
def l2_frames(draw):
    msg = draw(st.sampled_from(L2))
    events = []
    for e in msg["events"]:
        ups = e.get("updates") or []
        k = min(len(ups), 4)
        texts = [draw(update_text(u)) for u in ups[:k]] + [dump([(a, json.dumps(b)) for a, b in u.items()]) for u in ups[k:]]
        events.append(dump([(a, "[" + ",".join(texts) + "]" if a == "updates" else json.dumps(b)) for a, b in e.items()]))
    return dump([(a, "[" + ",".join(events) + "]" if a == "events" else json.dumps(b)) for a, b in msg.items()])


@SETTINGS
@given(l2_frames())
def test_update_text_variants_agree_with_the_oracle(frame):
    c, r = pair(AT, SP26)
    agree(c, r, frame)


def test_update_shape_is_the_recorded_one():
    """The recorded level2 updates are written in the shape the codec reads fast (so the test
    above exercises that path), and a value rejected alone there is rejected as the oracle does."""
    ups = [u for m in L2 for e in m["events"] for u in e.get("updates") or []]
    assert ups and all(list(u) == ["side", "event_time", "price_level", "new_quantity"] for u in ups)
    m = next(m for m in L2 if m["events"][0].get("updates"))
    u = dict(m["events"][0]["updates"][0], price_level="0.0000000001")        # 10 decimals: rejected alone
    frame = json.dumps(dict(m, events=[dict(m["events"][0], updates=[u])]), separators=(",", ":"))
    c, r = pair(AT, SP26)
    got = agree(c, r, frame)
    assert got[0] == 0 and got[-1] == 1                                            # no record, one rejection
