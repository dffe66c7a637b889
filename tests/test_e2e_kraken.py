"""Kraken spot v1 and Kraken Futures v1 end to end: `dm supervise` replays the real recordings
through the replay server to the real workers; dm.client readers collect every channel record;
the persister stores them. Every DEPTH/BBO record is checked against a book rebuilt in pure
Python (tests/book_ref.py) from the same recorded frames, trades against the recording parsed
with orjson / json (never dm's codec)."""
from __future__ import annotations

import json
from bisect import bisect_right
from collections import defaultdict

import orjson
import pytest

from dm.records import SIDE_ASK, SIDE_BID, UNDEF_PRICE, Bbo, Depth, Flag, Trade
from dm.storage import open_storage
from tests.book_ref import (MASK_BBO, MASK_TOP10, RefBook, kf_delta_record, kf_snapshot_records,
                            kraken_snapshot_records, kraken_update_records, load_kraken,
                            load_kraken_futures, recording_lines)
from tests.e2e import (KF_FILES, KF_PRODUCTS, KF_WS, KRAKEN_BOOK, KRAKEN_FILES, KRAKEN_PAIRS, KRAKEN_TRADE,
                       ChannelCollector, config_head, depth_levels, fx, kraken_futures_provider, kraken_provider,
                       leftover_segments, run_supervised, to9, worker_stats)

IID = 1  # instrument id of the reference books (any; records are compared field by field)


def _top(side):
    return side if side is not None else (UNDEF_PRICE, 0)


def expected_book_stream(events, apply_event, max_depth: int, publish_bbo: bool, depth_seq=lambda ev: 0):
    """What a worker's Books must publish for one instrument, in order: ("depth", seq, n_bid,
    n_ask, levels) when the top 10 changed, ("bbo", bid_px, bid_sz, ask_px, ask_sz) when the top
    changed (publish_bbo); ``apply_event(ref, ev)`` returns the reference book's change mask."""
    ref = RefBook(IID, 0, max_depth)
    out = []
    for ev in events:
        m = apply_event(ref, ev)
        if m is None:
            continue
        if m & MASK_TOP10:
            bids, asks = ref.levels(SIDE_BID, 10), ref.levels(SIDE_ASK, 10)
            out.append(("depth", depth_seq(ev), len(bids), len(asks), depth_levels(bids, asks)))
        if m & MASK_BBO and publish_bbo:
            (bp, bs), (ap, as_) = _top(ref.best_bid), _top(ref.best_ask)
            out.append(("bbo", bp, bs, ap, as_))
        assert not ref.crossed
    return out, ref


def published_book_stream(records, with_bbo: bool):
    """The DEPTH/BBO records as the reference stream shapes them, sizes brought from the
    record's size_precision to the reference books' 1e-9 (exact: ``to9``)."""
    out = []
    for r in records:
        sp = getattr(r, "size_precision", 9)
        if isinstance(r, Depth):
            levels = tuple((bp, ap, to9(bs, sp), to9(as_, sp)) for bp, ap, bs, as_ in r.levels)
            out.append(("depth", r.sequence, r.n_bid, r.n_ask, levels))
        elif with_bbo and isinstance(r, Bbo):
            out.append(("bbo", r.bid_px, to9(r.bid_sz, sp), r.ask_px, to9(r.ask_sz, sp)))
    return out


# --------------------------------------------------------------------------- Kraken spot v1


def kraken_apply(ref, ev):
    if ev.kind == "snapshot":
        return ref.apply(kraken_snapshot_records(IID, ev))
    return ref.apply(kraken_update_records(IID, ev))


def kraken_trades() -> dict[str, list]:
    """Per canonical symbol: (price, size, ts_event ns, side) of every recorded trade, in order."""
    out = defaultdict(list)
    for _ts, kind, text, _url in recording_lines(KRAKEN_TRADE):
        if kind != "frame" or not text.startswith("["):
            continue
        msg = orjson.loads(text)
        if msg[-2] != "trade":
            continue
        for price, volume, t, side, *_ in msg[1]:
            out[KRAKEN_PAIRS[msg[-1]]].append((fx(price), fx(volume), fx(t), SIDE_BID if side == "b" else SIDE_ASK))
    return out


@pytest.mark.timeout(120)
def test_kraken_replay_books_trades_storage(tmp_path, instance, storage_url):
    cfg = tmp_path / "dm.toml"
    cfg.write_text(config_head(tmp_path, instance, storage_url, KRAKEN_FILES, speed=0.0) + kraken_provider(tmp_path))
    symbols = list(KRAKEN_PAIRS.values())
    readers = ChannelCollector(instance, symbols, exchange="KRAKEN").start()
    run_supervised(cfg, tmp_path)
    readers.join(timeout=30)

    stats = worker_stats(tmp_path, instance, "kraken")
    assert stats["book_frames_in_c"] == 14496   # every steady-state update took the C frame path
    assert stats["connects"] == 1 and stats["dead_letters"] == 0 and stats["error_frames"] == 0
    assert stats["checksum_failures"] == 0 and stats["book_gaps"] == 0 and stats["book_crossed"] == 0
    assert stats["checksums_ok"] == 14496 and stats["book_snapshots"] == 10
    assert stats["frames_by_kind"]["ticker"] == 22 and stats["frames_by_kind"]["trade"] == 12
    # wire decimals taken from the snapshots (AssetPairs says 1 for XBT/USD, the wire has 5)
    assert stats["book_decimals"]["XBT/USD"] == [5, 8] and stats["book_decimals"]["DASH/EUR"] == [6, 8]

    events = defaultdict(list)
    for ev in load_kraken(KRAKEN_BOOK):
        events[KRAKEN_PAIRS[ev.pair]].append(ev)
    trades = kraken_trades()
    n_depth = 0
    for sym in symbols:
        recs = readers.records[sym]
        assert readers.overruns[sym] == 0
        # every DEPTH and BBO the reader got equals the independently rebuilt book at that point;
        # the book is the channel's only BBO source (ticker BBOs are stored, not published)
        want, ref = expected_book_stream(events[sym], kraken_apply, 1000, publish_bbo=True)
        got = published_book_stream(recs, with_bbo=True)
        assert len(got) == len(want), sym
        for i, (g, w) in enumerate(zip(got, want)):
            assert g == w, (sym, i)
        assert not any(isinstance(r, Bbo) and r.flags & Flag.TS_EVENT_IS_RECV for r in recs)
        n_depth += sum(1 for g in got if g[0] == "depth")
        # trades exact vs the recording
        got_t = [(r.price, to9(r.size, r.size_precision), r.ts_event, r.side) for r in recs if isinstance(r, Trade)]
        assert {r.size_precision for r in recs if isinstance(r, (Trade, Depth, Bbo))} == {8}   # lot_decimals
        assert got_t == trades.get(sym, []), sym
    assert sum(len(v) for v in trades.values()) == 28

    st = open_storage(storage_url)
    try:
        assert st.gaps() == []
        counts = st.counts()
        assert counts["trades"] == 28 and counts["depth"] == n_depth
        inst = {sym: iid for iid, sym, ex, venue, pub in st.load_instruments() if ex == "KRAKEN"}
        assert set(inst) == set(symbols)
        # ticker BBOs went to storage (flagged: v1 tickers have no event time)
        ticker_rows = sum(int((st.fetch("bbo", inst[s])["flags"] & Flag.TS_EVENT_IS_RECV != 0).sum()) for s in symbols)
        assert ticker_rows == 22
    finally:
        st.close()
    assert leftover_segments(instance) == []


# --------------------------------------------------------------------------- Kraken Futures v1


def kf_apply(ref, ev):
    if ev.kind == "snapshot":
        return ref.apply(kf_snapshot_records(IID, ev))
    if ev.kind == "delta":
        return ref.apply(kf_delta_record(IID, ev))
    return None  # ticker


def kf_trades() -> dict[str, list]:
    """Per canonical symbol: (price, size, ts_event, seq, side, snapshot?) in recorded order,
    numbers parsed from their text (json parse_float=str), never through float."""
    out = defaultdict(list)
    for _ts, kind, text, _url in recording_lines(KF_WS):
        if kind != "frame":
            continue
        msg = json.loads(text, parse_float=str)
        feed = None if "event" in msg else msg.get("feed")
        if feed == "trade_snapshot":
            entries, snap = msg["trades"], True
        elif feed == "trade":
            entries, snap = [msg], False
        else:
            continue
        for t in entries:
            out[KF_PRODUCTS[t["product_id"]]].append(
                (fx(str(t["price"])), fx(str(t["qty"])), t["time"] * 1_000_000, t["seq"],
                 SIDE_BID if t["side"] == "buy" else SIDE_ASK, snap))
    return out


@pytest.mark.timeout(120)
def test_kraken_futures_replay_books_ticker_trades(tmp_path, instance, storage_url):
    cfg = tmp_path / "dm.toml"
    cfg.write_text(config_head(tmp_path, instance, storage_url, KF_FILES, speed=0.0) + kraken_futures_provider(tmp_path))
    symbols = list(KF_PRODUCTS.values())
    readers = ChannelCollector(instance, symbols, exchange="KRAKEN_FUTURES").start()
    run_supervised(cfg, tmp_path)
    readers.join(timeout=30)

    stats = worker_stats(tmp_path, instance, "kraken_futures")
    assert stats["book_frames_in_c"] == stats["book_deltas_applied"] == 7014   # all in the C frame path
    assert stats["connects"] == 1 and stats["dead_letters"] == 0 and stats["error_frames"] == 0
    assert stats["book_gaps"] == 0 and stats["book_seq_gaps"] == 0 and stats["book_crossed"] == 0
    assert stats["book_snapshots"] == 10 and stats["book_deltas_applied"] == 7014

    events = defaultdict(list)
    for ev in load_kraken_futures(KF_WS):
        events[KF_PRODUCTS[ev.product]].append(ev)
    trades = kf_trades()
    n_depth = n_bbo = 0
    for sym in symbols:
        recs = readers.records[sym]
        assert readers.overruns[sym] == 0
        # DEPTH only from the book (ticker_lite is the BBO source); sequence = the book seq
        want, _ = expected_book_stream(events[sym], kf_apply, 0, publish_bbo=False, depth_seq=lambda ev: ev.seq)
        got = published_book_stream(recs, with_bbo=False)
        assert len(got) == len(want), sym
        for i, (g, w) in enumerate(zip(got, want)):
            assert g == w, (sym, i)
        n_depth += len(got)
        # ticker_lite BBOs: exactly the recorded ones, and each equals the top of the worker's own
        # book at the same venue moment: the DEPTH it published for the last seq before the ticker
        # (channel order across feeds is not venue order: the replay server catches a late
        # subscription up at speed 0, as documented)
        depth_by_seq = [(r.sequence, r) for r in recs if isinstance(r, Depth)]
        seqs = [q for q, _ in depth_by_seq]
        tickers, last_seq, at_seq = [], None, []
        for ev in events[sym]:
            if ev.kind == "ticker":
                tickers.append((ev.price, ev.ask))
                at_seq.append(last_seq)
            else:
                last_seq = ev.seq
        got_bbo = []
        for r in recs:
            if isinstance(r, Bbo):
                assert r.flags & Flag.TS_EVENT_IS_RECV and r.bid_sz == 0 and r.ask_sz == 0
                got_bbo.append((r.bid_px, r.ask_px))
        for (bid, ask), q in zip(tickers, at_seq):
            assert q is not None, sym
            d = depth_by_seq[bisect_right(seqs, q) - 1][1]
            assert d.sequence <= q and (d.levels[0][0], d.levels[0][1]) == (bid, ask), sym
        assert got_bbo == tickers, sym
        n_bbo += len(got_bbo)
        # trades: the trade_snapshot history (FLAG_SNAPSHOT) then live fills, exact
        got_t = [(r.price, to9(r.size, r.size_precision), r.ts_event, r.sequence, r.side,
                  bool(r.flags & Flag.SNAPSHOT)) for r in recs if isinstance(r, Trade)]
        assert got_t == trades.get(sym, []), sym
    assert n_bbo == 107
    assert sum(len(v) for v in trades.values()) == 1003

    st = open_storage(storage_url)
    try:
        assert st.gaps() == []
        counts = st.counts()
        assert counts["depth"] == n_depth and counts["bbo"] == 107 and counts["trades"] == 1003
    finally:
        st.close()
    assert leftover_segments(instance) == []
