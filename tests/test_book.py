"""dm._book.L2Book: unit semantics, record output, errors, property test against the pure-Python
reference book (tests/book_ref.py), and the real recorded streams applied level by level."""
from __future__ import annotations

import random

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import book_ref as br
from book_ref import SIDE_ASK, SIDE_BID, RefBook, delta
from dm._book import MASK_BBO, MASK_CROSSED, MASK_TOP10, BookError, L2Book
from dm.venues.kraken._checksum import book_checksum as kraken_book_checksum
from dm.errors import DmError
from dm.records import BBO_DTYPE, BOOK_DELTA_DTYPE, DEPTH_DTYPE, RType, UNDEF_PRICE

IID = 7
PUB = 1001


def book(max_depth: int = 0) -> L2Book:
    return L2Book(IID, PUB, max_depth)


# ----------------------------------------------------------------------------- semantics


def test_levels_sorted_best_first_and_masks():
    b = book()
    assert b.best_bid is None and b.best_ask is None and not b.crossed
    assert b.apply_level("B", 100, 5) == MASK_BBO | MASK_TOP10
    assert b.apply_level("B", 90, 1) == MASK_TOP10          # second level
    assert b.apply_level(SIDE_ASK, 110, 3) == MASK_BBO | MASK_TOP10
    assert b.apply_level(SIDE_ASK, 120, 4) == MASK_TOP10
    assert b.apply_level("B", 100, 5) == 0                  # same size: nothing changed
    assert b.apply_level("B", 100, 6) == MASK_BBO | MASK_TOP10
    assert b.levels("B") == [(100, 6), (90, 1)]
    assert b.levels("A") == [(110, 3), (120, 4)]
    assert b.levels(SIDE_ASK, 1) == [(110, 3)]
    assert b.best_bid == (100, 6) and b.best_ask == (110, 3)
    assert (b.n_bids, b.n_asks) == (2, 2)
    assert b.apply_level("B", 95, 0) == 0                   # delete of an absent level
    assert b.apply_level("B", 100, 0) == MASK_BBO | MASK_TOP10
    assert b.best_bid == (90, 1)
    # levels 11+ from the top do not touch the top 10
    for p in range(1, 30):
        b.apply_level("A", 200 + p, 1)
    assert b.apply_level("A", 1000, 7) == 0
    assert b.apply_level("A", 205, 9) == MASK_TOP10


def test_crossed_mask_and_property():
    b = book()
    b.apply_level("B", 100, 1)
    m = b.apply_level("A", 100, 1)
    assert m & MASK_CROSSED and b.crossed
    m = b.apply_level("A", 100, 0)
    assert not m & MASK_CROSSED and not b.crossed


def test_negative_and_extreme_prices():
    b = book()
    for p in (-(1 << 63), -5, 0, (1 << 63) - 2):
        b.apply_level("A", p, 1)
        b.apply_level("B", p, 2)
    assert b.levels("A")[0] == (-(1 << 63), 1)
    assert b.levels("B")[0] == ((1 << 63) - 2, 2)
    assert [p for p, _ in b.levels("A")] == sorted(p for p, _ in b.levels("A"))


def test_apply_records_actions_clear_and_cancel():
    b = book()
    recs = (delta(IID, SIDE_BID, 100, 5) + delta(IID, SIDE_ASK, 101, 2, action=ord("M"))
            + delta(IID, SIDE_BID, 99, 3))
    assert b.apply(recs) == MASK_BBO | MASK_TOP10
    # 'C' deletes whatever size it carries; 'A'/'M' with size 0 deletes too
    assert b.apply(delta(IID, SIDE_BID, 99, 77, action=ord("C"))) == MASK_TOP10
    assert b.apply(delta(IID, SIDE_ASK, 101, 0, action=ord("M"))) == MASK_BBO | MASK_TOP10
    assert b.levels("B") == [(100, 5)] and b.levels("A") == []
    # CLEAR then snapshot in one call: top unchanged → no BBO bit
    assert b.apply(br.clear(IID) + delta(IID, SIDE_BID, 100, 5)) == MASK_TOP10
    assert b.apply(br.clear(IID)) == MASK_BBO | MASK_TOP10
    assert (b.n_bids, b.n_asks) == (0, 0)
    # bytearray, memoryview and numpy inputs
    b.apply(bytearray(delta(IID, SIDE_BID, 1, 1)))
    b.apply(memoryview(delta(IID, SIDE_BID, 2, 1)))
    b.apply(np.frombuffer(delta(IID, SIDE_BID, 3, 1) * 1, dtype=np.uint8))
    assert b.levels("B") == [(3, 1), (2, 1), (1, 1)]
    arr = np.frombuffer(delta(IID, SIDE_BID, 4, 1) + delta(IID, SIDE_BID, 1, 0), BOOK_DELTA_DTYPE)
    assert b.apply(arr) == MASK_BBO | MASK_TOP10
    assert b.levels("B") == [(4, 1), (3, 1), (2, 1)]


def test_bad_records_raise_book_error_and_keep_prefix():
    b = book()
    good = delta(IID, SIDE_BID, 100, 1)
    cases = {
        "rtype": bytearray(delta(IID, SIDE_BID, 1, 1)),
        "length": bytearray(delta(IID, SIDE_BID, 1, 1)),
        "side": delta(IID, ord("X"), 1, 1),
        "action": delta(IID, SIDE_BID, 1, 1, action=ord("T")),
        "instrument": delta(IID + 1, SIDE_BID, 1, 1),
    }
    cases["rtype"][1] = int(RType.TRADE)
    cases["length"][0] = 16
    for name, bad in cases.items():
        with pytest.raises(BookError) as ei:
            b.apply(good + bytes(bad))
        assert ei.value.index == 1, name
        assert isinstance(ei.value, DmError) and isinstance(ei.value, ValueError)
    with pytest.raises(BookError):
        b.apply(good[:-1])
    with pytest.raises(BookError):
        b.apply_level("X", 1, 1)
    with pytest.raises(BookError):
        b.levels(3)
    assert b.levels("B") == [(100, 1)]                     # the good prefix stayed applied
    assert b.apply(b"") == 0


def test_truncate_and_max_depth():
    b = book(max_depth=3)
    for p in range(10):
        b.apply_level("B", p, 1)
        b.apply_level("A", 100 + p, 1)
    assert b.levels("B") == [(9, 1), (8, 1), (7, 1)]
    assert b.levels("A") == [(100, 1), (101, 1), (102, 1)]
    # a level worse than the depth is dropped at once (top unchanged: no BBO bit)
    assert not b.apply_level("B", 0, 5) & MASK_BBO and b.n_bids == 3
    # truncation happens at the end of a call, so insert + delete in one call keeps the level
    recs = delta(IID, SIDE_BID, 10, 1) + delta(IID, SIDE_BID, 10, 0)
    b.apply(recs)
    assert b.levels("B") == [(9, 1), (8, 1), (7, 1)]
    u = book()
    for p in range(50):
        u.apply_level("B", p, 1)
    u.truncate(5)
    assert u.levels("B") == [(p, 1) for p in range(49, 44, -1)]
    assert u.truncate(0) & MASK_BBO and u.n_bids == 0
    u.apply_level("B", 3, 3)
    u.clear()
    assert u.best_bid is None and u.levels("B") == []


def test_bbo_and_depth_records():
    b = L2Book(42, 1002)
    bbo = np.frombuffer(b.bbo_record(1, 2, 3), BBO_DTYPE)[0]
    assert bbo["bid_px"] == UNDEF_PRICE and bbo["ask_px"] == UNDEF_PRICE and bbo["bid_sz"] == 0
    for p in range(12):
        b.apply_level("B", 1000 - p, p + 1)
    b.apply_level("A", 2000, 9)
    raw = b.bbo_record(111, 222, 333, 0x80)
    assert len(raw) == BBO_DTYPE.itemsize
    r = np.frombuffer(raw, BBO_DTYPE)[0]
    assert (int(r["length"]) * 4, r["rtype"], r["publisher_id"], r["instrument_id"]) == (80, 0xE1, 1002, 42)
    assert (r["ts_event"], r["ts_recv"], r["sequence"], r["flags"]) == (111, 222, 333, 0x80)
    assert (r["bid_px"], r["bid_sz"], r["ask_px"], r["ask_sz"]) == (1000, 1, 2000, 9)
    assert (r["bid_ct"], r["ask_ct"]) == (0, 0)
    raw = b.depth_record(5, 6, 7)
    d = np.frombuffer(raw, DEPTH_DTYPE)[0]
    assert (int(d["length"]) * 4, d["rtype"], d["n_bid"], d["n_ask"]) == (360, 0xE2, 10, 1)
    assert list(d["levels"]["bid_px"]) == [1000 - k for k in range(10)]
    assert list(d["levels"]["bid_sz"]) == [k + 1 for k in range(10)]
    assert d["levels"]["ask_px"][0] == 2000 and all(d["levels"]["ask_px"][1:] == UNDEF_PRICE)
    assert all(d["levels"]["ask_sz"][1:] == 0)
    out = bytearray(b"xyz")
    assert b.write_bbo(out, 111, 222, 333, 0x80) == 80
    assert b.write_depth(out, 5, 6, 7) == 360
    assert bytes(out) == b"xyz" + b.bbo_record(111, 222, 333, 0x80) + b.depth_record(5, 6, 7)


def test_kraken_checksum_rendering_matches_text_rule():
    # levels written with the pair's decimals, '.' removed, leading zeros stripped
    b = L2Book(1, 1002)
    r = RefBook(1, 1002)
    for side, px, sz in (("A", "0.05005", "0.00000500"), ("A", "0.05010", "0.50000000"),
                         ("B", "0.05000", "0.00001000"), ("B", "0.04990", "1.00000000")):
        for bk in (b, r):
            bk.apply_level(ord(side), br.fixed(px), br.fixed(sz))
    text = "5005500" + "501050000000" + "50001000" + "4990100000000"
    import zlib

    assert kraken_book_checksum(b, 5, 8) == zlib.crc32(text.encode()) == r.kraken_checksum(5, 8)
    with pytest.raises(BookError):
        kraken_book_checksum(b, 3, 8)          # 0.05005 does not fit 3 decimals
    with pytest.raises(BookError):
        kraken_book_checksum(b, 10, 8)


def test_large_book_random_order_matches_reference():
    rnd = random.Random(5)
    b, r = book(), RefBook(IID, PUB)
    prices = rnd.sample(range(1, 10_000_000), 20_000)
    for p in prices:
        side = SIDE_BID if p % 2 else SIDE_ASK
        assert b.apply_level(side, p, p) == r.apply_level(side, p, p)
    for p in prices[::3]:
        side = SIDE_BID if p % 2 else SIDE_ASK
        assert b.apply_level(side, p, 0) == r.apply_level(side, p, 0)
    assert br.book_state(b) == br.book_state(r)
    b._check()


@settings(max_examples=150, deadline=None)
@given(runs=st.lists(st.tuples(st.sampled_from(["top", "bottom", "del_top", "del_bottom", "mid"]),
                               st.integers(1, 120)), min_size=1, max_size=30),
       side=st.sampled_from((SIDE_BID, SIDE_ASK)), max_depth=st.sampled_from((0, 0, 50)))
def test_property_runs_at_both_ends_keep_layout(runs, side, max_depth):
    """Long runs of inserts/deletes at the top and at the bottom: the paths that re-centre or
    grow the array (snapshots arrive best first = worst-level inserts; truncation drops the
    bottom). Checked against the reference and the layout invariants after every run."""
    b, r = book(max_depth), RefBook(IID, PUB, max_depth)
    hi, lo = 10_000, 10_000       # next price above / below everything so far
    for mode, count in runs:
        for j in range(count):
            better = (mode == "top") == (side == SIDE_BID)
            if mode in ("top", "bottom"):
                if better:
                    hi += 1
                    price = hi
                else:
                    lo -= 1
                    price = lo
                size = j + 1
            elif mode in ("del_top", "del_bottom"):
                lv = b.levels(side)
                if not lv:
                    break
                price, size = (lv[0] if mode == "del_top" else lv[-1])[0], 0
            else:
                price, size = (hi + lo) // 2 + j % 7, 3
            assert b.apply_level(side, price, size) == r.apply_level(side, price, size)
        b._check()
        assert br.book_state(b) == br.book_state(r)


# ----------------------------------------------------------------------------- property


@st.composite
def delta_batches(draw):
    n_batches = draw(st.integers(1, 25))
    batches = []
    for _ in range(n_batches):
        recs = []
        for _ in range(draw(st.integers(0, 12))):
            kind = draw(st.sampled_from("AAAAMMCCR"))
            side = draw(st.sampled_from((SIDE_BID, SIDE_ASK)))
            price = draw(st.integers(-20, 40))
            size = draw(st.sampled_from((0, 1, 2, 3, 10**9, (1 << 64) - 1)))
            recs.append(delta(IID, side, price, size, action=ord(kind)))
        batches.append(b"".join(recs))
    return batches


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(batches=delta_batches(), max_depth=st.sampled_from((0, 0, 1, 3, 10, 12)))
def test_property_l2book_equals_reference(batches, max_depth):
    b, r = book(max_depth), RefBook(IID, PUB, max_depth)
    for recs in batches:
        assert b.apply(recs) == r.apply(recs)
        b._check()
        assert br.book_state(b) == br.book_state(r)
        assert b.best_bid == r.best_bid and b.best_ask == r.best_ask
        assert b.crossed == r.crossed
        assert (b.n_bids, b.n_asks) == (r.n_bids, r.n_asks)
        d = np.frombuffer(b.depth_record(0, 0, 0), DEPTH_DTYPE)[0]
        bids = r.levels(SIDE_BID, 10)
        assert d["n_bid"] == len(bids)
        assert [(int(x), int(y)) for x, y in zip(d["levels"]["bid_px"], d["levels"]["bid_sz"])][: len(bids)] == bids


def _tops(r: RefBook, k: int):
    return r.levels(SIDE_BID, k), r.levels(SIDE_ASK, k)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(batches=delta_batches(), max_depth=st.sampled_from((0, 0, 1, 3, 10, 12)))
def test_property_touched_bounds_what_changed(batches, max_depth):
    """``version`` counts every apply; ``touched >= k`` means the top k levels of both sides are
    as before the call (what lets dm._feed skip re-rendering a top-k checksum)."""
    b, r = book(max_depth), RefBook(IID, PUB, max_depth)
    for recs in batches:
        before = {k: _tops(r, k) for k in (1, 2, 3, 5, 10, 25)}
        v = b.version
        b.apply(recs)
        r.apply(recs)
        assert b.version == v + 1
        for k, top in before.items():
            if b.touched >= k:
                assert _tops(r, k) == top, (k, b.touched)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(batches=delta_batches(), sp=st.sampled_from((9, 9, 3, 0)))
def test_property_checksums_from_cached_level_text_equal_rendered(batches, sp):
    """Kraken's and OKX's checksums with the book's LevelText (kept across updates, parameters
    changing between calls) equal those rendered in full, errors included."""
    from dm._leveltext import LevelText
    from dm.venues.okx._checksum import book_checksum as okx_book_checksum

    b, text = book(), LevelText()
    b.size_precision = 9
    for recs in batches:
        b.apply(recs)
        assert okx_book_checksum(b, sp, text) == okx_book_checksum(b, sp)
        for pd, sd in ((9, 9), (0, 0), (9, 9)):
            try:
                want = kraken_book_checksum(b, pd, sd)
            except BookError:
                with pytest.raises(BookError):
                    kraken_book_checksum(b, pd, sd, text)
                continue
            assert kraken_book_checksum(b, pd, sd, text) == want


def test_level_text_renders_each_level_once():
    from dm._leveltext import LevelText
    from dm.venues.okx._checksum import book_checksum as okx_book_checksum

    b, text = book(), LevelText()
    for i in range(30):
        b.apply_level(SIDE_BID, (100 - i) * 10**9, 10**9 + i)
        b.apply_level(SIDE_ASK, (200 + i) * 10**9, 10**9 + i)
    first = kraken_book_checksum(b, 2, 9, text)
    assert (text.hits, text.misses) == (0, 20)
    b.apply_level(SIDE_BID, 100 * 10**9, 5)          # one top level changes
    assert kraken_book_checksum(b, 2, 9, text) == kraken_book_checksum(b, 2, 9) != first
    assert (text.hits, text.misses) == (19, 21)
    okx_book_checksum(b, 9, text)                     # other parameters: the cache starts over
    assert text.misses == 21 + 50


def test_touched_is_the_position_of_the_change():
    b = book()
    for i in range(30):
        b.apply_level(SIDE_BID, 100 - i, 1)
        b.apply_level(SIDE_ASK, 200 + i, 1)
    assert b.touched == 29                      # each new level went in at the bottom
    b.apply_level(SIDE_BID, 100 - 12, 5)        # the 13th bid: position 12
    assert b.touched == 12
    b.apply_level(SIDE_ASK, 200 + 3, 0)         # delete the 4th ask: position 3 and below move
    assert b.touched == 3
    b.apply_level(SIDE_ASK, 199, 1)             # a new best ask
    assert b.touched == 0
    v = b.version
    b.apply_level(SIDE_BID, 100 - 12, 5)        # the same size again: no change
    assert (b.version, b.touched) == (v + 1, 2**63 - 1)
    b.apply(delta(IID, SIDE_BID, 100 - 20, 7) + delta(IID, SIDE_BID, 100 - 25, 0))
    assert b.touched == 20
    b.truncate(15)                              # levels from position 15 down dropped
    assert b.touched == 15
    b.clear()
    assert b.touched == 0 and b.version == v + 4


@settings(max_examples=200, deadline=None)
@given(ops=st.lists(st.tuples(st.sampled_from((SIDE_BID, SIDE_ASK)), st.integers(0, 60),
                              st.integers(0, 3)), max_size=200),
       max_depth=st.sampled_from((0, 2, 11)))
def test_property_apply_level_equals_reference(ops, max_depth):
    b, r = book(max_depth), RefBook(IID, PUB, max_depth)
    for side, price, size in ops:
        assert b.apply_level(side, price, size) == r.apply_level(side, price, size)
    b._check()
    assert br.book_state(b) == br.book_state(r)
    assert kraken_book_checksum(b, 9, 9) == r.kraken_checksum(9, 9)


# ----------------------------------------------------------------------------- recordings


def test_binance_recording_equals_reference_after_every_diff(data_dir):
    """Raw book mechanics on the main Binance file: snapshot then every later diff (the sync
    rules are tested in test_booksync.py); compared with the reference after each diff."""
    events = br.load_binance(data_dir / "binance/BINANCE-b38f7c.0")
    ids = br.instrument_ids(e.symbol for e in events)
    books, refs, last = {}, {}, {}
    n = 0
    for e in events:
        iid = ids[e.symbol]
        if e.kind == "snapshot":
            books[e.symbol], refs[e.symbol] = L2Book(iid, PUB), RefBook(iid, PUB)
            recs = br.binance_snapshot_records(iid, e)
            last[e.symbol] = e.last_id
        elif e.kind == "diff" and e.symbol in books and e.last_id > last[e.symbol]:
            recs = br.binance_diff_records(iid, e)
        else:
            continue
        b, r = books[e.symbol], refs[e.symbol]
        assert b.apply(recs) == r.apply(recs)
        assert not b.crossed
        assert b.best_bid == r.best_bid and b.best_ask == r.best_ask
        assert br.book_state(b) == br.book_state(r)
        n += 1
    assert n == 10 + 4642   # 67 of the 4,709 diffs are older than their symbol's snapshot


def test_kraken_futures_recording_equals_reference(data_dir):
    events = br.load_kraken_futures(data_dir / "kraken_futures/KRAKEN_FUTURES.ws.1.0")
    ids = br.instrument_ids(e.product for e in events)
    books, refs = {}, {}
    for e in events:
        iid = ids[e.product]
        if e.kind == "snapshot":
            books[e.product], refs[e.product] = L2Book(iid, PUB), RefBook(iid, PUB)
            recs = br.kf_snapshot_records(iid, e)
        elif e.kind == "delta":
            recs = br.kf_delta_record(iid, e)
        else:
            continue
        assert books[e.product].apply(recs) == refs[e.product].apply(recs)
        assert not books[e.product].crossed
    for p in books:
        assert br.book_state(books[p]) == br.book_state(refs[p])
