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

from tests.test_coinbase import AT, F26, SETTINGS, SP26, agree, outcome, pair

DATA = [json.loads(ev.text) for ev in F26 if len(ev.text) < 20_000 and '"channel":"l2_data"' in ev.text[:30]]
DATA += [json.loads(ev.text) for ev in F26 if '"channel":"market_trades"' in ev.text[:40] or '"channel":"ticker"' in ev.text[:40]]
#: a decoy value per member: what a repeated member may carry
DECOY = {"channel": "heartbeats", "timestamp": "2030-01-01T00:00:00Z", "sequence_num": 7, "events": [], "client_id": "x",
         "type": "snapshot", "product_id": "ETH-USD", "updates": [], "trades": [], "tickers": []}


def dump(pairs) -> str:
    """A JSON object from (key, value text) pairs, repeats kept."""
    return "{" + ",".join(f"{json.dumps(k)}:{v}" for k, v in pairs) + "}"


@st.composite
def members(draw, obj: dict, inner=None) -> str:
    """``obj`` with its members in a drawn order, maybe one repeated (before or after with a decoy,
    or after with the same value), ``inner`` re-serializing list members' objects."""
    items = [(k, inner(k, v) if inner else json.dumps(v, separators=(",", ":"))) for k, v in obj.items()]
    items = draw(st.permutations(items)) if draw(st.booleans()) else items
    if draw(st.booleans()) and items:
        i = draw(st.integers(0, len(items) - 1))
        k, v = items[i]
        decoy = json.dumps(DECOY.get(k, 0))
        where = draw(st.sampled_from(["decoy before", "decoy after", "same after"]))
        if where == "decoy before":
            items.insert(i, (k, decoy))
        else:
            items.append((k, decoy if where == "decoy after" else v))
    return dump(items)


@st.composite
def reordered(draw):
    msg = draw(st.sampled_from(DATA))
    events = [draw(members(e)) for e in msg["events"]]
    return draw(members(msg, lambda k, v: "[" + ",".join(events) + "]" if k == "events" else json.dumps(v)))


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
