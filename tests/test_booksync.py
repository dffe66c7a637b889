"""dm.booksync on the real recordings (Binance, Kraken, Kraken Futures), with injected faults
(dropped / reordered diff, corrupted checksum, dropped delta) and the state machines' edges."""
from __future__ import annotations

import pytest

import book_ref as br
from book_ref import SIDE_ASK, SIDE_BID, RefBook, delta
from dm.booksync import MASK_BBO, BookError, Gap
from dm.venues.binance.booksync import BinanceDepthSync
from dm.venues.kraken.booksync import KrakenBookSync, decimals_of
from dm.venues.kraken._checksum import book_checksum as kraken_book_checksum
from dm.venues.kraken_futures.booksync import KrakenFuturesBookSync

BINANCE_SESSIONS = {
    "b38f7c": ("binance/BINANCE-b38f7c.0",),
    "2021-08-14": ("binance/2021-08-14/BINANCE.ws.1.0", "binance/2021-08-14/BINANCE.http.0.0"),
    "2021-10-12": ("binance/2021-10-12/BINANCE.ws.1.0", "binance/2021-10-12/BINANCE.http.0.0"),
}
# bookTickers whose u equals a book update id (data/README.md §2: their top equals the book's)
BINANCE_TICKER_MATCHES = {"b38f7c": 1155, "2021-08-14": 98, "2021-10-12": 26}
BINANCE_SNAPSHOTS = {"b38f7c": 10, "2021-08-14": 4, "2021-10-12": 4}


class BinanceTruth:
    """Independent oracle: RefBook + the documented rule, written the plain way."""

    def __init__(self, iid):
        self.iid, self.book, self.last = iid, None, None

    def snapshot(self, e):
        self.book = RefBook(self.iid)
        self.book.apply(br.binance_snapshot_records(self.iid, e))
        self.last = e.last_id

    def diff(self, e) -> bool:
        if self.book is None or e.last_id <= self.last:
            return False
        assert e.first_id <= self.last + 1 <= e.last_id
        self.book.apply(br.binance_diff_records(self.iid, e))
        self.last = e.last_id
        return True


# ----------------------------------------------------------------------------- Binance


@pytest.fixture(scope="module")
def binance_events(data_dir):
    return {name: br.load_binance(*(data_dir / p for p in paths))
            for name, paths in BINANCE_SESSIONS.items()}


@pytest.mark.parametrize("session", list(BINANCE_SESSIONS))
def test_binance_recording_syncs_without_gaps(binance_events, session):
    events = binance_events[session]
    ids = br.instrument_ids(e.symbol for e in events)
    tickers = {(e.symbol, e.last_id): e.ticker for e in events if e.kind == "ticker"}
    syncs = {s: BinanceDepthSync(i) for s, i in ids.items()}
    truth = {s: BinanceTruth(i) for s, i in ids.items()}
    snapshots = matched = 0
    for e in events:
        sync, t, iid = syncs[e.symbol], truth[e.symbol], ids[e.symbol]
        if e.kind == "ticker":
            continue
        if e.kind == "snapshot":
            act = sync.on_snapshot(e.last_id, br.binance_snapshot_records(iid, e))
            t.snapshot(e)
            assert act.snapshot_applied and not act.needs_snapshot and act.gap is None
            snapshots += 1
        else:
            act = sync.on_diff(e.first_id, e.last_id, br.binance_diff_records(iid, e))
            assert act.gap is None
            if t.diff(e):
                assert len(act.applied) == 1 and sync.last_update_id == e.last_id
        assert not sync.book.crossed and not act.crossed
        if t.book is not None:
            assert sync.synced
            assert br.book_state(sync.book) == br.book_state(t.book)
            if act.applied and (e.symbol, sync.last_update_id) in tickers:
                bid_px, bid_sz, ask_px, ask_sz = tickers[(e.symbol, sync.last_update_id)]
                assert sync.book.best_bid == (bid_px, bid_sz)
                assert sync.book.best_ask == (ask_px, ask_sz)
                matched += 1
    assert snapshots == BINANCE_SNAPSHOTS[session]
    assert matched == BINANCE_TICKER_MATCHES[session]
    for s in syncs.values():
        assert s.synced and s.stats.gaps == 0 and s.stats.crossed == 0
        assert s.stats.stale_snapshots == 0 and s.stats.snapshot_requests == 1
        assert s.buffered == 0


def _binance_symbol_feed(events, symbol):
    """The symbol's recorded snapshot + diffs from it on (diffs before it are out of scope)."""
    feed = [e for e in events if e.symbol == symbol and e.kind in ("snapshot", "diff")]
    i = next(k for k, e in enumerate(feed) if e.kind == "snapshot")
    return feed[i:]


@pytest.mark.parametrize("fault", ["drop", "reorder"])
@pytest.mark.parametrize("lag", [0, 3])
def test_binance_fault_gives_one_gap_and_resync(binance_events, fault, lag):
    feed = _binance_symbol_feed(binance_events["b38f7c"], "ZILUSDT")
    k = 300
    seen = list(feed)
    if fault == "drop":
        missing = seen.pop(k)
        seen.insert(k, None)                          # keep the time steps aligned with truth
    else:
        missing = seen[k]
        seen[k], seen[k + 1] = seen[k + 1], seen[k]
    iid = 1
    sync, truth = BinanceDepthSync(iid), BinanceTruth(iid)
    gaps, requests, resynced_at, deliver_at, compared = [], 0, None, None, 0
    for step, (true_ev, ev) in enumerate(zip(feed, seen)):
        if true_ev.kind == "snapshot":
            truth.snapshot(true_ev)
        else:
            truth.diff(true_ev)
        if ev is None:
            act = None
        elif ev.kind == "snapshot":
            act = sync.on_snapshot(ev.last_id, br.binance_snapshot_records(iid, ev))
        else:
            act = sync.on_diff(ev.first_id, ev.last_id, br.binance_diff_records(iid, ev))
        if act is not None:
            if act.gap is not None:
                gaps.append(act.gap)
                assert not sync.synced
            if act.needs_snapshot and step > 0:
                requests += 1
                deliver_at = step + lag
        if deliver_at == step:
            # the REST snapshot as Binance would serve it now: the true book and its id
            act = sync.on_snapshot(truth.last, br.state_snapshot_records(iid, truth.book))
            assert act.snapshot_applied and act.gap is None and sync.synced
            deliver_at, resynced_at = None, step
        if resynced_at is not None and sync.last_update_id == truth.last:
            # (after a reorder the sync can be one diff ahead of the truth for a step)
            assert br.book_state(sync.book) == br.book_state(truth.book)
            compared += 1
    assert compared > 600
    assert gaps == [Gap("binance.update_id", missing.first_id, missing.last_id,
                        gaps[0].detail)]
    assert requests == 1 and resynced_at is not None
    assert sync.stats.gaps == 1 and sync.stats.snapshot_requests == 1   # feed starts at the snapshot
    assert sync.synced and sync.last_update_id == feed[-1].last_id
    assert br.book_state(sync.book) == br.book_state(truth.book)


def _diff(iid, U, u, price=100, size=1, side=SIDE_BID):
    return U, u, delta(iid, side, price, size, sequence=u)


def test_binance_buffering_stale_snapshot_and_edges():
    s = BinanceDepthSync(3, max_buffer=3)
    a = s.on_diff(*_diff(3, 10, 12, 100))
    assert a.needs_snapshot and not a.applied and s.awaiting_snapshot
    assert not s.on_diff(*_diff(3, 13, 15, 101)).needs_snapshot      # asked once only
    assert s.on_diff(*_diff(3, 13, 15, 101)).dropped == 1            # duplicate
    # snapshot older than the oldest buffered diff: ask again, no gap
    a = s.on_snapshot(5, delta(3, SIDE_ASK, 200, 1))
    assert a.needs_snapshot and a.gap is None and not a.snapshot_applied and not s.synced
    assert s.stats.stale_snapshots == 1 and s.buffered == 2
    # good snapshot: drops u <= 12, applies the straddling 13..15 diff
    a = s.on_snapshot(13, delta(3, SIDE_ASK, 200, 1) + delta(3, SIDE_BID, 99, 1))
    assert a.snapshot_applied and len(a.applied) == 2 and a.dropped == 1 and s.synced
    assert s.last_update_id == 15 and s.book.best_bid == (101, 1) and a.mask & MASK_BBO
    # older snapshot while synced is ignored
    a = s.on_snapshot(14, delta(3, SIDE_ASK, 1, 1))
    assert not a.snapshot_applied and s.book.best_ask == (200, 1)
    with pytest.raises(BookError):
        s.on_diff(*_diff(3, 20, 19))
    # a gap while synced: buffer again (bounded), one request
    a = s.on_diff(*_diff(3, 18, 18))
    assert a.gap == Gap("binance.update_id", 16, 17, a.gap.detail) and a.needs_snapshot
    for u in range(19, 24):
        s.on_diff(*_diff(3, u, u))
    assert s.buffered == 3                                            # oldest dropped
    # forced resync
    a = s.request_snapshot()
    assert a.needs_snapshot and not s.synced


def test_binance_snapshot_before_any_diff():
    s = BinanceDepthSync(3)
    a = s.on_snapshot(100, delta(3, SIDE_BID, 5, 1))
    assert a.snapshot_applied and s.synced
    assert s.on_diff(*_diff(3, 90, 100)).dropped == 1                 # u <= lastUpdateId
    assert s.on_diff(*_diff(3, 95, 101, 6)).applied                   # U <= 101 <= u
    s2 = BinanceDepthSync(3)
    s2.on_snapshot(100, delta(3, SIDE_BID, 5, 1))
    a = s2.on_diff(*_diff(3, 105, 110))                               # snapshot older than stream
    assert a.needs_snapshot and a.gap is None and not s2.synced
    assert s2.stats.stale_snapshots == 1


# ----------------------------------------------------------------------------- Kraken


@pytest.fixture(scope="module")
def kraken_events(data_dir):
    return br.load_kraken(data_dir / "kraken/KRAKEN-c197c0.0")


def _kraken_decimals(ev):
    lv = (ev.bids or ev.asks)[0]
    return decimals_of(lv[0]), decimals_of(lv[1])


def test_kraken_recording_all_checksums_verify_with_depth_1000(kraken_events):
    ids = br.instrument_ids(e.pair for e in kraken_events)
    syncs = {p: KrakenBookSync(i, depth=1000) for p, i in ids.items()}
    truth = {p: RefBook(i, 0, 1000) for p, i in ids.items()}
    untruncated = {p: RefBook(i) for p, i in ids.items()}
    updates = 0
    for e in kraken_events:
        s, iid = syncs[e.pair], ids[e.pair]
        if e.kind == "snapshot":
            recs = br.kraken_snapshot_records(iid, e)
            act = s.on_snapshot(recs, *_kraken_decimals(e))
            truth[e.pair].apply(recs)
            untruncated[e.pair].apply(recs)
            assert act.snapshot_applied
            continue
        recs = br.kraken_update_records(iid, e)
        act = s.on_update(recs, e.checksum)
        truth[e.pair].apply(recs)
        untruncated[e.pair].apply(recs)
        updates += 1
        assert act.gap is None and not act.crossed and s.synced
        assert s.book.n_bids <= 1000 and s.book.n_asks <= 1000
        assert s.book.levels(SIDE_BID, 10) == truth[e.pair].levels(SIDE_BID, 10)
        assert s.book.levels(SIDE_ASK, 10) == truth[e.pair].levels(SIDE_ASK, 10)
        if updates % 1000 == 0:
            assert br.book_state(s.book) == br.book_state(truth[e.pair])
    assert updates == 14_496
    assert sum(s.stats.checksums_ok for s in syncs.values()) == 14_496
    assert sum(s.stats.gaps for s in syncs.values()) == 0
    for p, s in syncs.items():
        assert br.book_state(s.book) == br.book_state(truth[p])
    # truncation matters on this data: without it XBT/USD and DASH/EUR exceed 1000 levels
    assert max(b.n_bids + b.n_asks for b in untruncated.values()) > 2000


def test_kraken_corrupted_checksum_one_gap_and_resubscribe(kraken_events):
    pair = "XBT/USD"
    feed = [e for e in kraken_events if e.pair == pair]
    k, lag, iid = 2000, 2, 1
    sync, truth = KrakenBookSync(iid, depth=1000), RefBook(iid, 0, 1000)
    gaps, requests, deliver_at, resynced = [], 0, None, False
    for step, e in enumerate(feed):
        if e.kind == "snapshot":
            recs = br.kraken_snapshot_records(iid, e)
            truth.apply(recs)
            sync.on_snapshot(recs, *_kraken_decimals(e))
            continue
        recs = br.kraken_update_records(iid, e)
        truth.apply(recs)
        checksum = e.checksum ^ 1 if step == k else e.checksum
        act = sync.on_update(recs, checksum)
        if act.gap is not None:
            gaps.append(act.gap)
        if act.needs_snapshot:
            requests += 1
            deliver_at = step + lag
        if step > k and deliver_at is not None and step < deliver_at:
            assert act.dropped == 1 and not act.applied              # until the new snapshot
        if deliver_at == step:
            act = sync.on_snapshot(br.state_snapshot_records(iid, truth))
            assert act.snapshot_applied and sync.synced
            deliver_at, resynced = None, True
        if resynced:
            assert kraken_book_checksum(sync.book, *sync_decimals(sync)) == truth.kraken_checksum(
                *sync_decimals(sync))
    assert [g.kind for g in gaps] == ["kraken.checksum"] and gaps[0].first_missing is None
    assert requests == 1 and resynced and sync.stats.gaps == 1
    assert br.book_state(sync.book) == br.book_state(truth)
    # every update after the resync verified
    assert sync.stats.checksums_ok == sum(1 for e in feed if e.kind == "update") - 1 - lag


def sync_decimals(sync):
    return sync.price_decimals, sync.size_decimals


def test_kraken_edges():
    s = KrakenBookSync(2, depth=2)
    a = s.on_update(delta(2, SIDE_BID, 1, 1), None)
    assert a.dropped == 1 and a.needs_snapshot and not s.synced
    assert not s.on_update(delta(2, SIDE_BID, 1, 1), None).needs_snapshot
    s.on_snapshot(delta(2, SIDE_BID, 10, 1) + delta(2, SIDE_BID, 9, 1))
    a = s.on_update(delta(2, SIDE_BID, 11, 1), None)                 # truncated to depth 2
    assert a.applied and s.book.levels(SIDE_BID) == [(11, 1), (10, 1)]
    assert decimals_of("58729.40000") == 5 and decimals_of("7") == 0


def test_kraken_decimals_detected_from_checksums(kraken_events):
    """Without decimals the sync finds the wire decimals on the first update of each pair
    (they differ from REST AssetPairs pair_decimals for most pairs, e.g. XBT/USD 5 vs 1)."""
    ids = br.instrument_ids(e.pair for e in kraken_events)
    syncs = {p: KrakenBookSync(i) for p, i in ids.items()}
    wire = {}
    for e in kraken_events:
        s, iid = syncs[e.pair], ids[e.pair]
        if e.kind == "snapshot":
            s.on_snapshot(br.kraken_snapshot_records(iid, e))
            wire[e.pair] = _kraken_decimals(e)
        else:
            assert s.on_update(br.kraken_update_records(iid, e), e.checksum).gap is None
    assert sum(s.stats.checksums_ok for s in syncs.values()) == 14_496
    for p, s in syncs.items():
        assert (s.price_decimals, s.size_decimals) == wire[p], p
    assert wire["XBT/USD"] == (5, 8)
    # a wrong checksum on the first update cannot be explained by any decimals: one gap
    e0 = next(e for e in kraken_events if e.kind == "snapshot" and e.pair == "XBT/USD")
    e1 = next(e for e in kraken_events if e.kind == "update" and e.pair == "XBT/USD")
    s = KrakenBookSync(1)
    s.on_snapshot(br.kraken_snapshot_records(1, e0))
    a = s.on_update(br.kraken_update_records(1, e1), e1.checksum ^ 0x5A5A)
    assert a.gap is not None and a.needs_snapshot and s.price_decimals is None


# ----------------------------------------------------------------------------- Kraken Futures


@pytest.fixture(scope="module")
def kf_events(data_dir):
    return br.load_kraken_futures(data_dir / "kraken_futures/KRAKEN_FUTURES.ws.1.0")


def test_kraken_futures_recording_seq_contiguous_and_ticker_lite(kf_events):
    ids = br.instrument_ids(e.product for e in kf_events)
    syncs = {p: KrakenFuturesBookSync(i) for p, i in ids.items()}
    truth = {p: RefBook(i) for p, i in ids.items()}
    tickers = deltas = 0
    for e in kf_events:
        s, iid = syncs[e.product], ids[e.product]
        if e.kind == "snapshot":
            recs = br.kf_snapshot_records(iid, e)
            assert s.on_snapshot(e.seq, recs).snapshot_applied
            truth[e.product].apply(recs)
        elif e.kind == "delta":
            recs = br.kf_delta_record(iid, e)
            act = s.on_delta(e.seq, recs)
            truth[e.product].apply(recs)
            assert act.gap is None and act.applied and not act.crossed and s.seq == e.seq
            deltas += 1
        else:
            assert s.synced
            assert s.book.best_bid[0] == e.price and s.book.best_ask[0] == e.ask
            tickers += 1
        assert not s.book.crossed
    assert (deltas, tickers) == (7014, 107)
    for p, s in syncs.items():
        assert s.stats.gaps == 0 and s.stats.dropped == 0 and s.stats.crossed == 0
        assert br.book_state(s.book) == br.book_state(truth[p])


def test_kraken_futures_dropped_delta_one_gap_and_resubscribe(kf_events):
    product = "PI_ETHUSD"
    feed = [e for e in kf_events if e.product == product]
    iid, lag = 1, 4
    k = [i for i, e in enumerate(feed) if e.kind == "delta"][1500]
    sync, truth = KrakenFuturesBookSync(iid), RefBook(iid)
    truth_seq, gaps, requests, deliver_at, resynced, tickers = None, [], 0, None, False, 0
    for step, e in enumerate(feed):
        act = None
        if e.kind == "snapshot":
            recs = br.kf_snapshot_records(iid, e)
            truth.apply(recs)
            act = sync.on_snapshot(e.seq, recs)
            truth_seq = e.seq
        elif e.kind == "delta":
            recs = br.kf_delta_record(iid, e)
            truth.apply(recs)
            truth_seq = e.seq
            if step != k:
                act = sync.on_delta(e.seq, recs)
        elif sync.synced:
            assert (sync.book.best_bid[0], sync.book.best_ask[0]) == (e.price, e.ask)
            tickers += 1
        if act is not None and act.gap is not None:
            gaps.append(act.gap)
        if act is not None and act.needs_snapshot:
            requests += 1
            deliver_at = step + lag
        if deliver_at == step:
            act = sync.on_snapshot(truth_seq, br.state_snapshot_records(iid, truth))
            deliver_at, resynced = None, True
        if resynced:
            assert br.book_state(sync.book) == br.book_state(truth)
    assert gaps == [Gap("kraken_futures.seq", feed[k].seq, feed[k].seq, gaps[0].detail)]
    assert requests == 1 and resynced and sync.synced
    assert tickers > 0


def test_kraken_futures_edges():
    s = KrakenFuturesBookSync(4)
    a = s.on_delta(5, delta(4, SIDE_BID, 1, 1))
    assert a.dropped == 1 and a.needs_snapshot
    s.on_snapshot(10, delta(4, SIDE_BID, 1, 1))
    assert s.on_delta(10, delta(4, SIDE_BID, 2, 1)).dropped == 1      # duplicate seq
    assert s.on_delta(11, delta(4, SIDE_BID, 2, 1)).mask & MASK_BBO
    a = s.on_delta(13, delta(4, SIDE_BID, 3, 1))
    assert a.gap == Gap("kraken_futures.seq", 12, 12, a.gap.detail) and a.needs_snapshot
    assert s.book.best_bid == (2, 1)                                   # gap delta not applied
    assert s.on_delta(14, delta(4, SIDE_BID, 3, 1)).dropped == 1
