"""dm._book.L2Book with deep books: the two-tier side (top tier contiguous, deep tier in blocks;
layout and invariant in dm/_book.pxd) against the pure-Python reference book (tests/book_ref.py)
on books large enough that the top tier overflows into the deep tier and comes back, deep
blocks split, fill, empty and merge, and max_depth truncation cuts deep blocks; and the recorded
Coinbase Advanced Trade session (18k-27k levels per side) applied update by update."""
from __future__ import annotations

import random
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import book_ref as br
from book_ref import SIDE_ASK, SIDE_BID, RefBook, delta
from dm._book import BLOCK, MASK_TOP10, TOP_KEEP, TOP_MAX, TOP_MIN, L2Book
from dm.venues.kraken._checksum import book_checksum as kraken_book_checksum
from dm.venues.okx._checksum import book_checksum as okx_book_checksum

IID = 7
PUB = 1001
ROOT = Path(__file__).resolve().parent.parent
S26 = ROOT / "data/coinbase/2026-08-09/COINBASE.jsonl.zst"
KS = (1, 2, 10, 25, TOP_MIN // 2, TOP_MIN)     # top-k depths checked against `touched`


def test_tier_sizes_as_documented():
    assert 64 <= TOP_MIN < TOP_KEEP <= TOP_MAX // 2 and BLOCK >= 16


def _tops(b, k):
    return b.levels(SIDE_BID, k), b.levels(SIDE_ASK, k)


def _same(b: L2Book, r: RefBook):
    b._check()
    assert br.book_state(b) == br.book_state(r)
    assert (b.n_bids, b.n_asks) == (r.n_bids, r.n_asks)
    assert b.best_bid == r.best_bid and b.best_ask == r.best_ask and b.crossed == r.crossed


def _snap(bids, asks) -> bytes:
    """CLEAR + one ADD per (price, size) level (integers as held), bids then asks."""
    return (br.clear(IID) + b"".join(delta(IID, SIDE_BID, p, q, flags=br.FLAG_SNAPSHOT) for p, q in bids)
            + b"".join(delta(IID, SIDE_ASK, p, q, flags=br.FLAG_SNAPSHOT) for p, q in asks))


def _snapshot(n: int, mid: int, step: int = 2) -> bytes:
    """CLEAR + n bids below mid and n asks above it, best first (as venues send them), on even
    prices (odd ones are free for inserts between levels)."""
    return _snap([(mid - step * (i + 1), i + 1) for i in range(n)],
                 [(mid + step * (i + 1), i + 1) for i in range(n)])


# ----------------------------------------------------------------------------- tier mechanics


def test_snapshot_fills_deep_tier_and_levels_export_is_total():
    b, r = L2Book(IID, PUB), RefBook(IID, PUB)
    recs = _snapshot(5000, 1_000_000)
    assert b.apply(recs) == r.apply(recs)
    _same(b, r)
    (bt, bd, bn), (at, ad, an) = b._tiers()
    assert bt + bd == at + ad == 5000 and TOP_MIN <= bt <= TOP_MAX and bn >= 5000 // BLOCK - 4
    assert b.levels(SIDE_BID, 3) == r.levels(SIDE_BID, 3)
    assert b.levels(SIDE_ASK, 4000) == r.levels(SIDE_ASK, 4000)     # crosses into the deep tier


def test_top_overflow_moves_down_and_underflow_pulls_back_touching_nothing():
    b, r = L2Book(IID, PUB), RefBook(IID, PUB)
    # bids only, each new one the best: the top tier overflows again and again
    for p in range(1, 3 * TOP_MAX):
        assert b.apply_level(SIDE_BID, p, p) == r.apply_level(SIDE_BID, p, p)
        assert b.touched == 0
        top, deep, _ = b._tiers()[0]
        assert top <= TOP_MAX
    _same(b, r)
    assert b._tiers()[0][1] > 0
    # delete the best again and again: the top tier refills from the deep tier in bulk
    refills = 0
    last_top = b._tiers()[0][0]
    for p in range(3 * TOP_MAX - 1, 0, -1):
        assert b.apply_level(SIDE_BID, p, 0) == r.apply_level(SIDE_BID, p, 0)
        assert b.touched == 0
        top = b._tiers()[0][0]
        refills += top > last_top
        last_top = top
        if p % 97 == 0:
            _same(b, r)
    assert refills >= 2
    _same(b, r)
    assert b.n_bids == 0 and b._tiers()[0] == (0, 0, 0)


def test_deep_changes_touch_below_the_top_tier_and_set_no_mask():
    b, r = L2Book(IID, PUB), RefBook(IID, PUB)
    b.apply(_snapshot(3000, 1_000_000))
    r.apply(_snapshot(3000, 1_000_000))
    top = b._tiers()[0][0]
    for price, size in [(1_000_000 - 2 * 2000, 77),     # modify a deep level
                        (1_000_000 - 2 * 2000 - 1, 5),  # insert between deep levels
                        (1_000_000 - 2 * 2000, 0),      # delete one
                        (1_000_000 - 2 * 2500 + 1, 0)]:  # delete of an absent deep level
        v = b.version
        m = b.apply_level(SIDE_BID, price, size)
        assert m == r.apply_level(SIDE_BID, price, size) == 0
        assert b.version == v + 1
        assert b.touched >= top if size or price % 2 == 0 else b.touched == 2**63 - 1
    _same(b, r)


def test_block_splits_and_removals_and_merges():
    """Fill a region of the deep tier densely (splits), then delete it all (emptied blocks
    removed, thin neighbours merged): block count up then down, always as the reference."""
    b, r = L2Book(IID, PUB), RefBook(IID, PUB)
    b.apply(_snapshot(4000, 10_000_000, step=1000))
    r.apply(_snapshot(4000, 10_000_000, step=1000))
    nb0 = b._tiers()[0][2]
    lo, hi = 10_000_000 - 1000 * 3000, 10_000_000 - 1000 * 2900   # 100 deep levels apart
    rnd = random.Random(3)
    prices = rnd.sample(range(lo, hi), 3000)
    for p in prices:
        assert b.apply_level(SIDE_BID, p, 1 + p % 5) == r.apply_level(SIDE_BID, p, 1 + p % 5)
    _same(b, r)
    nb1 = b._tiers()[0][2]
    assert nb1 >= nb0 + 3000 // BLOCK
    rnd.shuffle(prices)
    for p in prices + list(range(lo, hi, 1000)):
        assert b.apply_level(SIDE_BID, p, 0) == r.apply_level(SIDE_BID, p, 0)
    _same(b, r)
    assert b._tiers()[0][2] <= nb0 + 1
    # thin the deep tier to 1 level in 8: blocks shrink and neighbours merge
    for i in range(TOP_MAX, 4000):
        if i % 8:
            p = 10_000_000 - 1000 * (i + 1)
            assert b.apply_level(SIDE_BID, p, 0) == r.apply_level(SIDE_BID, p, 0)
    _same(b, r)
    assert b._tiers()[0][2] <= nb0 // 3


def test_max_depth_truncation_cuts_deep_blocks_first():
    for depth in (3500, 2 * BLOCK + 7, TOP_MAX + 1, TOP_MIN, 9, 1):
        b, r = L2Book(IID, PUB, depth), RefBook(IID, PUB, depth)
        recs = _snapshot(4000, 1_000_000)
        assert b.apply(recs) == r.apply(recs)
        _same(b, r)
        assert b.n_bids == b.n_asks == depth
        # an insert at the top pushes one level out at the bottom; position `depth` touched
        m = b.apply_level(SIDE_ASK, 1_000_001, 3)
        assert m == r.apply_level(SIDE_ASK, 1_000_001, 3)
        assert b.touched == 0
        _same(b, r)
    b, r = L2Book(IID, PUB), RefBook(IID, PUB)
    b.apply(_snapshot(4000, 1_000_000))
    r.apply(_snapshot(4000, 1_000_000))
    for depth in (3999, 3000, 1000, TOP_MAX, TOP_MIN, 5, 0):
        m = b.truncate(depth)
        r.truncate(depth)
        _same(b, r)
        assert b.touched == depth and bool(m & MASK_TOP10) == (depth < 10)


def test_clear_frees_the_deep_tier_and_the_book_refills():
    b, r = L2Book(IID, PUB), RefBook(IID, PUB)
    for _ in range(3):
        recs = _snapshot(3000, 1_000_000)
        assert b.apply(recs) == r.apply(recs)
        _same(b, r)
        recs = br.clear(IID) + _snapshot(10, 5_000)[56:]
        assert b.apply(recs) == r.apply(recs)
        assert b.touched == 0
        _same(b, r)
        assert b._tiers() == ((10, 0, 0), (10, 0, 0))
    b.clear()
    r.clear()
    _same(b, r)


def test_checksums_on_a_deep_book_read_the_top_tier():
    b, r = L2Book(IID, PUB), RefBook(IID, PUB)
    b.apply(_snapshot(2000, 1_000_000_000))
    r.apply(_snapshot(2000, 1_000_000_000))
    rnd = random.Random(9)
    for _ in range(3000):       # delete near the top: refills; insert near the top: spills
        side = rnd.choice((SIDE_BID, SIDE_ASK))
        lv = r.levels(side, TOP_MIN + 5)
        if rnd.random() < 0.5 and lv:
            price, size = rnd.choice(lv)[0], 0
        else:
            price, size = 1_000_000_000 + rnd.randrange(-300, 300) * (1 if side == SIDE_ASK else -1), 2
            if (side == SIDE_BID) == (price >= 1_000_000_000):
                continue
        assert b.apply_level(side, price, size) == r.apply_level(side, price, size)
    _same(b, r)
    assert kraken_book_checksum(b, 9, 9) == r.kraken_checksum(9, 9)
    assert okx_book_checksum(b, 9) == okx_book_checksum(_rebuilt(r), 9)


def _rebuilt(r: RefBook) -> L2Book:
    """A fresh L2Book holding r's levels, small enough to stay in one tier (its top 30)."""
    b = L2Book(IID, PUB)
    b.apply(_snap(r.levels(SIDE_BID, 30), r.levels(SIDE_ASK, 30)))
    return b


# ----------------------------------------------------------------------------- property


@st.composite
def deep_ops(draw):
    """Ops on a book starting at ``n0`` levels a side; prices are chosen by rank in the
    current book when run, so they land near the top, mid-deep or at the bottom."""
    n0 = draw(st.sampled_from((300, 700, 2000)))
    ops = draw(st.lists(st.tuples(
        st.sampled_from(["ins_top", "ins_deep", "ins_bottom", "del_top", "del_deep", "del_bottom",
                         "del_absent", "modify", "clear", "batch"]),
        st.sampled_from((SIDE_BID, SIDE_ASK)),
        st.integers(1, 400),
        st.floats(0, 1)), min_size=1, max_size=12))
    return n0, ops


MID = 1_000_000_000


def _run_op(b, r, rnd, op, side, count, where):
    """Apply one op (``count`` single-level calls, or one batch of ``count`` records); check
    masks against the reference and ``touched`` against a brute-force top-k comparison."""
    sign = -1 if side == SIDE_BID else 1
    if op == "clear":
        assert b.apply(br.clear(IID)) == r.apply(br.clear(IID))
        return
    if op == "batch":
        recs = []
        for _ in range(count):
            px = MID + sign * (1 + rnd.randrange(60_000))
            recs.append(delta(IID, side, px, rnd.choice((0, 0, 1, 5))))
        before = {k: _tops(r, k) for k in KS}
        assert b.apply(b"".join(recs)) == r.apply(b"".join(recs))
        for k in KS:                    # several levels: touched bounds what changed
            if b.touched >= k:
                assert _tops(r, k) == before[k], (k, b.touched)
        return
    for _ in range(count):
        n = r.n_bids if side == SIDE_BID else r.n_asks
        lv = r.levels(side)
        if op.startswith("ins"):
            if op == "ins_top" or not lv:
                base = lv[0][0] if lv else MID + sign * 30_000
                px = base - sign * (1 + rnd.randrange(3))
                if sign * (px - MID) <= 0:
                    px = MID + sign
            elif op == "ins_bottom":
                px = lv[-1][0] + sign * (1 + rnd.randrange(3))
            else:
                i = min(n - 1, int(where * n))
                px = lv[i][0] + sign * rnd.randrange(3)
            size = 1 + rnd.randrange(9)
        elif op == "del_absent":
            px, size = MID + sign * (1 + rnd.randrange(60_000)), 0
            if (px, 0) in [(p, 0) for p, _ in lv[:0]]:
                continue
        elif op == "modify":
            if not lv:
                continue
            px, size = lv[min(n - 1, int(where * n))][0], 1 + rnd.randrange(3)
        else:
            if not lv:
                continue
            i = 0 if op == "del_top" else n - 1 if op == "del_bottom" else min(n - 1, int(where * n))
            px, size = lv[i][0], 0
        before = {k: _tops(r, k) for k in KS}
        m = b.apply_level(side, px, size)
        assert m == r.apply_level(side, px, size), (op, px, size)
        for k in KS:                    # one level: touched >= k exactly when the top k stayed
            assert (b.touched >= k) == (_tops(r, k) == before[k]), (op, k, b.touched)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=deep_ops(), max_depth=st.sampled_from((0, 0, 0, 900, 150)), seed=st.integers(0, 2**32))
def test_property_deep_book_equals_reference(case, max_depth, seed):
    n0, ops = case
    rnd = random.Random(seed)
    b, r = L2Book(IID, PUB, max_depth), RefBook(IID, PUB, max_depth)
    recs = _snap([(MID - 3 * (i + 1), 7) for i in range(n0)], [(MID + 3 * (i + 1), 7) for i in range(n0)])
    assert b.apply(recs) == r.apply(recs)
    _same(b, r)
    for op, side, count, where in ops:
        _run_op(b, r, rnd, op, side, count, where)
        _same(b, r)
    assert kraken_book_checksum(b, 9, 9) == r.kraken_checksum(9, 9)


# ----------------------------------------------------------------------------- Coinbase


def _coinbase_events():
    """[(product, snapshot?, records)] per level2 event of the recorded Advanced Trade session,
    bids then asks, a snapshot led by CLEAR (as tests/test_e2e_coinbase.py rebuilds its books)."""
    return [(prod, snap, (br.clear(IID) if snap else b"") + recs)
            for prod, snap, recs in br.coinbase_l2_events(S26, lambda _p: IID)]


@pytest.mark.skipif(not S26.exists(), reason="recording not present")
def test_coinbase_session_equals_reference_mask_by_mask():
    events = _coinbase_events()
    books = {p: (L2Book(IID, PUB), RefBook(IID, PUB)) for p, _, _ in events}
    deep_updates = 0
    for i, (p, snap, recs) in enumerate(events):
        b, r = books[p]
        before = {k: _tops(r, k) for k in KS}
        assert b.apply(recs) == r.apply(recs), i
        for k in KS:
            if b.touched >= k:
                assert _tops(r, k) == before[k], (i, k)
        if snap:
            _same(b, r)
            assert min(b.n_bids, b.n_asks) > 5000 and min(b._tiers()[0][1], b._tiers()[1][1]) > 5000   # deep
        deep_updates += not snap and b.touched >= TOP_MIN
    assert deep_updates > 50
    for b, r in books.values():
        _same(b, r)
