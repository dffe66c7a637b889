"""The bridge's wire format without a server: a channel split into groups and schema messages
(the bridge's own ``Tap``), re-delivered, duplicated and reordered, comes back from
``Reassembler`` in the channel's exact order, each record once; a missing window is reported."""
from __future__ import annotations

import numpy as np
from hypothesis import given, settings, strategies as st

from dm import nats_wire as wire
from dm.bridge import Tap
from dm.records import BBO_DTYPE, DEPTH_DTYPE, TRADE_DTYPE, RType

DT = {int(RType.TRADE): TRADE_DTYPE, int(RType.BBO): BBO_DTYPE, int(RType.DEPTH): DEPTH_DTYPE}


def _rec(rtype: int, i: int) -> bytes:
    a = np.zeros(1, DT[rtype])
    a["length"], a["rtype"], a["instrument_id"], a["ts_event"] = DT[rtype].itemsize // 4, rtype, 7, i
    return a.tobytes()


def _messages(kinds, cuts):
    """The channel's records and the bridge's messages for them (groups end at ``cuts``)."""
    tap = Tap("inst", "EX", "SYM", "/dm.inst.EX.SYM", 1 << 20)
    tap.epoch = 5
    recs, msgs = [], []
    for i, k in enumerate(kinds):
        r = _rec(k, i)
        recs.append(r)
        tap._add(r, k, 1, i)
        tap.next_pos = i + 1
        if i in cuts or i == len(kinds) - 1:
            msgs += tap.take_group()
    return recs, msgs


def _feed(reasm, msgs):
    out = []
    for seq, m in enumerate(msgs, 1):
        out += reasm.add(m.subject.rsplit(".", 1)[1], m.payload, wire.parse_headers(m.headers), seq)
    return out


def _records(items):
    recs = []
    for it in items:
        if it[0] == "records":
            _, p, size, n, _ = it
            recs += [p[i * size:(i + 1) * size] for i in range(n)]
    return recs


kinds_st = st.lists(st.sampled_from(sorted(DT)), min_size=1, max_size=60)


@settings(max_examples=150, deadline=None)
@given(kinds_st, st.sets(st.integers(0, 59)), st.integers(0, 10**6))
def test_order_restored_through_duplicates_and_reordering(kinds, cuts, seed):
    recs, msgs = _messages(kinds, cuts)
    rng = np.random.default_rng(seed)
    order = list(msgs)
    # duplicates (a re-publish after a reconnect) and swaps of neighbours, after the first message
    # (a fresh subscription takes the first group it receives as its start)
    for _ in range(3):
        if len(order) > 2:
            i = int(rng.integers(1, len(order) - 1))
            order[i], order[i + 1] = order[i + 1], order[i]
            order.insert(int(rng.integers(1, len(order))), order[int(rng.integers(0, len(order)))])
    r = wire.Reassembler()
    items = _feed(r, order)
    items += r._drain(force_old=True) if not r.held else []
    assert not any(it[0] == "lost" for it in items)
    assert _records(items) == recs


def test_subset_of_schemas_keeps_their_order():
    kinds = [int(RType.TRADE), int(RType.BBO), int(RType.BBO), int(RType.DEPTH), int(RType.TRADE)] * 5
    recs, msgs = _messages(kinds, {3, 9, 14})
    r = wire.Reassembler(["trades"])
    got = _records(_feed(r, [m for m in msgs if m.subject.endswith(".trades")]))
    assert got == [x for x in recs if x[1] == RType.TRADE]


def test_a_missing_group_is_lost_after_the_wait():
    kinds = [int(RType.TRADE)] * 30
    recs, msgs = _messages(kinds, {9, 19})
    now = [0.0]
    r = wire.Reassembler(reorder_s=1.0, clock=lambda: now[0])
    items = _feed(r, [msgs[0], msgs[2]])  # the middle batch never arrives
    assert _records(items) == recs[:10]
    now[0] = 5.0
    items = r.poll()
    assert items[0] == ("lost", 10) and _records(items) == recs[20:]
    assert r.lost == 10


def test_subject_tokens_round_trip():
    for s in ["BTCUSD", "ES.FUT", "A*B>C", "x y", "100%"]:
        t = wire.token(s)
        assert "." not in t and "*" not in t and ">" not in t and " " not in t
        assert wire.untoken(t) == s
    assert wire.parse_subject(wire.channel_subject("p", "GLBX", "ES.FUT", "trades")) == ("p", "GLBX", "ES.FUT", "trades")
