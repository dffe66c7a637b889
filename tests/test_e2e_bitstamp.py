"""Bitstamp v2 end to end: `dm supervise` replays the real recording (data/bitstamp/2022-01-05: 10
pairs, diff_order_book + live_trades, REST order_book snapshots) through the replay server to the
real worker process (bts:subscribe per channel, REST snapshot after each book ack, diffs synced
by microtimestamp); dm.client readers collect every channel record; the persister stores them.
Every DEPTH/BBO equals a book rebuilt in pure Python (snapshot + the diffs newer than it) as of
that DEPTH's microtimestamp, trades equal the recording parsed with json. A connection that dies
mid-stream is one ledgered gap per instrument, the books are rebuilt from new snapshots and end
equal to the true books, in the same worker process."""
from __future__ import annotations

import json
from collections import defaultdict
from decimal import Decimal
from pathlib import Path

import pytest

from dm.records import SIDE_ASK, SIDE_BID, UNDEF_PRICE, Bbo, Depth, Trade
from dm.storage import open_storage
from tests.book_ref import RefBook, delta, snapshot_records
from tests.e2e import (ChannelCollector, CuttingProxy, config_head, depth_levels, free_port, leftover_segments,
                       provider_toml, run_supervised, started_pids, worker_stats)

ROOT = Path(__file__).resolve().parent.parent
SESSION = ROOT / "data/bitstamp/2022-01-05"
IID = 1
PAIRS = {"sgbeur": "SGBEUR", "ethusd": "ETHUSD", "xrpeur": "XRPEUR", "bateur": "BATEUR", "usdteur": "USDTEUR",
         "usdtusd": "USDTUSD", "xlmgbp": "XLMGBP", "adaeur": "ADAEUR", "batbtc": "BATBTC", "galaeur": "GALAEUR"}


def fx(text: str) -> int:
    d = Decimal(text).scaleb(9)
    assert d == d.to_integral_value()
    return int(d)


def fits(levels) -> list:
    """The levels whose price fits i64 at 1e-9: the recorded ETH/USD snapshot has an ask at
    9,999,999,999, rejected alone (dead-lettered) by the codec."""
    return [lv for lv in levels if fx(lv[0]) < 1 << 63]


def bitstamp_provider(tmp: Path, syms, channels=("diff_order_book", "live_trades"), ws_url="ws://{replay}/bitstamp",
                      **extra) -> str:
    return provider_toml(tmp, "bitstamp", "bitstamp", "BITSTAMP", ws_url, syms, channels, **extra)


def recorded():
    """pair -> (snapshot dict, [diff data dicts]), trades [(pair, data)]."""
    snaps = {}
    for line in (SESSION / "BITSTAMP.http.0.0").read_text().split("\n"):
        if line.startswith("http"):
            url, rest = line.split(" -> ", 1)
            snaps[url.rsplit("/", 1)[1]] = json.loads(rest.split(": ", 1)[1])
    diffs, trades = defaultdict(list), []
    for line in (SESSION / "BITSTAMP.ws.1.0").read_text().split("\n"):
        if line[:1].isdigit():
            m = json.loads(line.split(": ", 1)[1])
            if m["event"] == "data":
                diffs[m["channel"][len("diff_order_book_"):]].append(m["data"])
            elif m["event"] == "trade":
                trades.append((m["channel"][len("live_trades_"):], m["data"]))
    return snaps, diffs, trades


def states(snap: dict, diffs: list) -> tuple[dict, tuple, tuple]:
    """{microtimestamp: set of (top10, bbo) the book passes through at that µs} from the snapshot
    on, and the final (top10, bbo)."""
    ref = RefBook(IID, 0, 0)
    ref.apply(snapshot_records(IID, fits(snap["bids"]), fits(snap["asks"])))
    out = defaultdict(set)

    def cur():
        bids, asks = ref.levels(SIDE_BID, 10), ref.levels(SIDE_ASK, 10)
        (bp, bs), (ap, as_) = ref.best_bid or (UNDEF_PRICE, 0), ref.best_ask or (UNDEF_PRICE, 0)
        return (len(bids), len(asks), depth_levels(bids, asks)), (bp, bs, ap, as_)

    s_us = int(snap["microtimestamp"])
    out[s_us].add(cur())
    for d in diffs:
        us = int(d["microtimestamp"])
        if us <= s_us:
            continue
        ref.apply(b"".join(delta(IID, SIDE_BID, fx(p), fx(q)) for p, q in d["bids"])
                  + b"".join(delta(IID, SIDE_ASK, fx(p), fx(q)) for p, q in d["asks"]))
        assert not ref.crossed
        out[us].add(cur())
    return out, cur()


def check_books(readers, pairs, snaps, diffs) -> int:
    n = 0
    for pair, sym in pairs.items():
        seen, final = states(snaps[pair], diffs[pair])
        depths = [r for r in readers.records[sym] if isinstance(r, Depth)]
        bbos = [r for r in readers.records[sym] if isinstance(r, Bbo)]
        assert depths and bbos, sym
        for r in depths:
            assert (r.n_bid, r.n_ask, r.levels) in {s[0] for s in seen[r.sequence]}, (sym, r.sequence)
        for r in bbos:
            assert (r.bid_px, r.bid_sz, r.ask_px, r.ask_sz) in {s[1] for s in seen[r.sequence]}, (sym, r.sequence)
        assert (depths[-1].n_bid, depths[-1].n_ask, depths[-1].levels) == final[0], sym
        assert (bbos[-1].bid_px, bbos[-1].bid_sz, bbos[-1].ask_px, bbos[-1].ask_sz) == final[1], sym
        n += len(depths)
    return n


@pytest.mark.timeout(180)
def test_bitstamp_replay(tmp_path, instance, storage_url):
    syms = list(PAIRS.values())
    cfg = tmp_path / "dm.toml"
    # paced (24 s of market in ~2.4 s): each book's snapshot arrives while its diffs flow, so the
    # buffered diffs (older ones dropped) and the live ones after the snapshot are both exercised
    cfg.write_text(config_head(tmp_path, instance, storage_url, [SESSION], speed=10.0) + bitstamp_provider(tmp_path, syms))
    readers = ChannelCollector(instance, syms, exchange="BITSTAMP").start()
    run_supervised(cfg, tmp_path)
    readers.join(timeout=60)

    stats = worker_stats(tmp_path, instance, "bitstamp")
    assert stats["dead_letters"] == 1 and stats["value_errors"] == 1     # the 9,999,999,999 ETH/USD ask
    assert stats["error_frames"] == 0 and stats["book_crossed"] == 0
    assert stats["book_gaps"] == 0 and stats["book_snapshots"] == 10 and stats["subscription_acks"] == 20
    assert stats["book_deltas_applied"] + stats["book_deltas_dropped"] == 717
    # the start-up ended when the last of the 10 books got its snapshot: after the first frame and
    # some frames in, before the last frame (the REST snapshots answer the subscriptions' acks)
    assert stats["first_frame_ns"] < stats["books_synced_ns"] <= stats["last_frame_ns"]
    assert 20 <= stats["books_synced_frames"] < stats["frames"] and stats["cpu_s_since_books_synced"] >= 0
    assert stats["size_precisions"]["USDTEUR"] == 5 and stats["size_precisions"]["ETHUSD"] == 8

    snaps, diffs, trades = recorded()
    n_depth = check_books(readers, PAIRS, snaps, diffs)
    assert n_depth > 200                     # most diffs were applied live, one DEPTH each
    got = [(r.price, r.size, r.trade_id, r.side, r.ts_event) for r in readers.records["ETHUSD"] if isinstance(r, Trade)]
    assert got == [(fx(d["price_str"]), fx(d["amount_str"]), d["id"], SIDE_BID if d["type"] == 0 else SIDE_ASK,
                    int(d["microtimestamp"]) * 1000) for _, d in trades]
    assert len(got) == 10
    st = open_storage(storage_url)
    try:
        assert st.gaps() == []
        counts = st.counts()
        assert counts["trades"] == 10 and counts["depth"] == n_depth
        inst = {sym: venue for iid, sym, ex, venue, pub in st.load_instruments() if ex == "BITSTAMP"}
        assert inst["ETHUSD"] == "ethusd" and len(inst) == 10
    finally:
        st.close()
    assert leftover_segments(instance) == []


@pytest.mark.timeout(180)
def test_bitstamp_connection_cut_is_a_gap_and_books_rebuild(tmp_path, instance, sqlite_url):
    """Bitstamp diffs carry no sequence: the loss a worker can know of is a connection. The
    websocket dies mid-stream (TCP proxy): the worker reconnects, subscribes again, refetches
    every snapshot; the ledger holds one ``reconnect`` gap per instrument; every DEPTH equals the
    true book as of its microtimestamp and the final books are the true ones."""
    pairs = {"ethusd": "ETHUSD", "batbtc": "BATBTC", "usdteur": "USDTEUR"}
    replay_port = free_port()
    proxy = CuttingProxy(replay_port, after_bytes=20_000, mode="cut", max_connections=2).start()
    try:
        cfg = tmp_path / "dm.toml"
        cfg.write_text(config_head(tmp_path, instance, sqlite_url, [SESSION], speed=4.0, replay_port=replay_port)
                       + bitstamp_provider(tmp_path, list(pairs.values()), channels=("diff_order_book",),
                                           ws_url=f"ws://127.0.0.1:{proxy.port}/bitstamp"))
        readers = ChannelCollector(instance, list(pairs.values()), exchange="BITSTAMP").start()
        run_supervised(cfg, tmp_path)
        readers.join(timeout=60)
    finally:
        proxy.stop()
    assert proxy.faulted.is_set() and proxy.connections == 2
    stats = worker_stats(tmp_path, instance, "bitstamp")
    log = (tmp_path / "supervisor.log").read_text()
    assert started_pids(log, "bitstamp") == [stats["pid"]]
    assert stats["connects"] == 2 and stats["book_crossed"] == 0 and stats["book_snapshots"] >= 3
    st = open_storage(sqlite_url)
    try:
        gaps = st.gaps()
        inst = {iid: sym for iid, sym, ex, venue, pub in st.load_instruments()}
    finally:
        st.close()
    assert sorted(inst[g["instrument_id"]] for g in gaps) == sorted(pairs.values())
    assert all(g["kind"] == "reconnect" and g["first_missing"] < g["last_missing"] for g in gaps)
    snaps, diffs, _ = recorded()
    check_books(readers, pairs, snaps, diffs)
    assert leftover_segments(instance) == []


@pytest.mark.timeout(180)
def test_bitstamp_request_reconnect(tmp_path, instance, sqlite_url):
    """The venue's ``bts:request_reconnect`` (inserted mid-session; the replay server sends it to
    the first connection only) makes the worker reconnect at once: one ``reconnect`` gap per
    pair in the ledger, every snapshot fetched again, the books end true; same worker process."""
    import shutil

    from dm.recording import Insert, write_modified_recording

    pairs = {"ethusd": "ETHUSD", "batbtc": "BATBTC"}
    lines = (SESSION / "BITSTAMP.ws.1.0").read_text().split("\n")
    data = [no for no, line in enumerate(lines, 1) if '"diff_order_book_batbtc"' in line and line[:1].isdigit()]
    at = data[len(data) // 2]
    ts = lines[at - 1].split(": ", 1)[0]
    folder = tmp_path / "bitstamp-reconnect"
    folder.mkdir()
    for f in ("BITSTAMP.0", "BITSTAMP.http.0.0"):
        shutil.copy(SESSION / f, folder / f)
    write_modified_recording(SESSION / "BITSTAMP.ws.1.0", folder / "BITSTAMP.ws.1.0",
                             [Insert(at, f'{ts}: {{"event":"bts:request_reconnect","channel":"","data":""}}')])
    cfg = tmp_path / "dm.toml"
    cfg.write_text(config_head(tmp_path, instance, sqlite_url, [folder], speed=4.0)
                   + bitstamp_provider(tmp_path, list(pairs.values()), channels=("diff_order_book",)))
    readers = ChannelCollector(instance, list(pairs.values()), exchange="BITSTAMP").start()
    run_supervised(cfg, tmp_path)
    readers.join(timeout=60)
    stats = worker_stats(tmp_path, instance, "bitstamp")
    log = (tmp_path / "supervisor.log").read_text()
    assert started_pids(log, "bitstamp") == [stats["pid"]]
    assert stats["reconnect_requests"] == 1 and stats["connects"] == 2 and stats["book_snapshots"] == 4
    assert stats["book_crossed"] == 0
    st = open_storage(sqlite_url)
    try:
        gaps = st.gaps()
        inst = {iid: sym for iid, sym, ex, venue, pub in st.load_instruments()}
    finally:
        st.close()
    assert sorted(inst[g["instrument_id"]] for g in gaps) == sorted(pairs.values())
    assert all(g["kind"] == "reconnect" for g in gaps)
    snaps, diffs, _ = recorded()
    check_books(readers, pairs, snaps, diffs)
    assert leftover_segments(instance) == []
