"""Coinbase end to end: `dm supervise` replays the real recordings (the 2026 Advanced Trade
session, the 2021 Exchange feed session) through the replay server to the real worker; dm.client
readers collect every channel record; the persister stores them. Every DEPTH is checked against
a book rebuilt in pure Python (tests/book_ref.py) from the recorded frames, trades and ticker
BBOs against the recording parsed with json (numbers from their text, never through float). A
dropped Advanced Trade message breaks sequence_num: one gap per book, a level2 resubscription,
then the true books again, in the same worker process."""
from __future__ import annotations

import json
from collections import defaultdict
from decimal import Decimal
from pathlib import Path

import pytest
import zstandard

from dm.recording import Corrupt, Drop, Replace, read_recording, write_modified_recording, ws_sessions
from dm.records import SIDE_ASK, SIDE_BID, Bbo, Depth, Flag, Trade
FLAG_SNAPSHOT = Flag.SNAPSHOT
from dm.storage import open_storage
from tests.book_ref import FLAG_SNAPSHOT as F_SNAP, MASK_TOP10, RefBook, clear, delta
from tests.e2e import (ChannelCollector, config_head, depth_levels, leftover_segments, provider_toml, run_supervised,
                       started_pids, worker_stats)

ROOT = Path(__file__).resolve().parent.parent
S21 = ROOT / "data/coinbase/2021-04-17"
S26 = ROOT / "data/coinbase/2026-08-09/COINBASE.jsonl.zst"
AT = {"BTC-USD": "BTCUSD", "ETH-USD": "ETHUSD"}
EX = {p: p.replace("-", "") for p in ["SKL-USD", "SKL-BTC", "SKL-GBP", "BAND-GBP", "BAND-BTC", "NMR-EUR", "YFI-BTC",
                                      "DASH-BTC", "NU-GBP", "CRV-EUR"]}
IID = 1
SP26 = {"BTC-USD": 8, "ETH-USD": 8}   # base_increment of the recorded products bodies
SP21 = {"SKL-USD": 1, "SKL-BTC": 1, "SKL-GBP": 1, "BAND-GBP": 2, "BAND-BTC": 2, "NMR-EUR": 3, "YFI-BTC": 6,
        "DASH-BTC": 3, "NU-GBP": 6, "CRV-EUR": 2}


def snap_recs(iid: int, bids, asks) -> bytes:
    """CLEAR + one ADD per (price, size) level (integers as the codec scales them), bids then asks."""
    return (clear(iid) + b"".join(delta(iid, ord("B"), p, q, flags=F_SNAP) for p, q in bids)
            + b"".join(delta(iid, ord("A"), p, q, flags=F_SNAP) for p, q in asks))


def fx(text: str, scale: int = 9) -> int:
    d = Decimal(text).scaleb(scale)
    assert d == d.to_integral_value()
    return int(d)


def dec(v: int, scale: int = 9) -> str:
    return f"{Decimal(v).scaleb(-scale).normalize():f}"


def iso_ns(text: str) -> int:
    from datetime import datetime, timezone

    body, _, frac = text.rstrip("Z").partition(".")
    dt = datetime.strptime(body, "%Y-%m-%dT%H:%M:%S").replace(tzinfo=timezone.utc)
    return int(dt.timestamp()) * 1_000_000_000 + int((frac + "000000000")[:9])


def coinbase_provider(tmp: Path, symbols, feed: str, channels=(), **extra) -> str:
    path = "/advanced-trade-ws" if feed == "advanced" else "/ws-feed"
    return provider_toml(tmp, "coinbase", "coinbase", "COINBASE", "ws://{replay}" + path, symbols, channels, feed=feed,
                         **extra)


def recorded(path) -> list[dict]:
    (s,) = ws_sessions(read_recording(path))
    return [json.loads(ev.text) for ev in s.frames]


def book_events(msgs, sps: dict) -> dict[str, list]:
    """canonical -> [(snapshot?, seq, bids, asks)] per level2 message, recorded order (bids/asks
    as (price at 1e-9, size at the product's precision ``sps[product]``))."""
    out = defaultdict(list)
    for m in msgs:
        if m.get("channel") == "l2_data":
            for e in m["events"]:
                sp = sps[e["product_id"]]
                bids = [(fx(u["price_level"]), fx(u["new_quantity"], sp)) for u in e["updates"] if u["side"] == "bid"]
                asks = [(fx(u["price_level"]), fx(u["new_quantity"], sp)) for u in e["updates"] if u["side"] == "offer"]
                out[AT[e["product_id"]]].append((e["type"] == "snapshot", m["sequence_num"], bids, asks))
        elif m.get("type") in ("snapshot", "l2update"):
            sym, sp = EX[m["product_id"]], sps[m["product_id"]]
            if m["type"] == "snapshot":
                out[sym].append((True, 0, [(fx(p), fx(q, sp)) for p, q, *_ in m["bids"]],
                                 [(fx(p), fx(q, sp)) for p, q, *_ in m["asks"]]))
            else:
                out[sym].append((False, 0, [(fx(p), fx(q, sp)) for s, p, q in m["changes"] if s == "buy"],
                                 [(fx(p), fx(q, sp)) for s, p, q in m["changes"] if s == "sell"]))
    return out


def apply(ref: RefBook, ev) -> int:
    snap, _, bids, asks = ev
    if snap:
        return ref.apply(snap_recs(IID, bids, asks))
    return ref.apply(b"".join(delta(IID, SIDE_BID, p, q) for p, q in bids)
                     + b"".join(delta(IID, SIDE_ASK, p, q) for p, q in asks))


def expected_depths(events):
    ref = RefBook(IID, 0, 0)
    out = []
    for ev in events:
        m = apply(ref, ev)
        assert not ref.crossed
        if m & MASK_TOP10:
            bids, asks = ref.levels(SIDE_BID, 10), ref.levels(SIDE_ASK, 10)
            out.append((ev[1], len(bids), len(asks), depth_levels(bids, asks)))
    return out


def depths(records):
    return [(r.sequence, r.n_bid, r.n_ask, r.levels) for r in records if isinstance(r, Depth)]


@pytest.mark.timeout(180)
def test_coinbase_advanced_trade_replay(tmp_path, instance, storage_url):
    symbols = list(AT.values())
    cfg = tmp_path / "dm.toml"
    cfg.write_text(config_head(tmp_path, instance, storage_url, [S26]) + coinbase_provider(tmp_path, symbols, "advanced"))
    readers = ChannelCollector(instance, symbols, exchange="COINBASE").start()
    run_supervised(cfg, tmp_path)
    readers.join(timeout=60)

    stats = worker_stats(tmp_path, instance, "coinbase")
    assert stats["dead_letters"] == 0 and stats["error_frames"] == 0 and stats["value_errors"] == 0
    assert stats["book_gaps"] == 0 and stats["sequence_breaks"] == 0 and stats["book_crossed"] == 0
    assert stats["book_snapshots"] == 2 and stats["book_deltas_applied"] == 773 and stats["connects"] == 1
    assert stats["frames"] == 1030 and stats["size_precisions"] == {"BTCUSD": 8, "ETHUSD": 8}

    msgs = recorded(S26)
    books = book_events(msgs, SP26)
    trades, bbos = defaultdict(list), defaultdict(list)
    for m in msgs:
        for e in m.get("events", ()):
            for t in e.get("trades", ()):
                trades[AT[t["product_id"]]].append((fx(t["price"]), fx(t["size"], 8), iso_ns(t["time"]),
                                                    SIDE_ASK if t["side"] == "BUY" else SIDE_BID, int(t["trade_id"]),
                                                    e["type"] == "snapshot"))
            for t in e.get("tickers", ()):
                bbos[AT[t["product_id"]]].append((fx(t["best_bid"]), fx(t["best_bid_quantity"], 8), fx(t["best_ask"]),
                                                  fx(t["best_ask_quantity"], 8), m["sequence_num"]))
    n_depth = 0
    for sym in symbols:
        recs = readers.records[sym]
        assert readers.overruns[sym] == 0
        want = expected_depths(books[sym])
        assert depths(recs) == want, sym
        n_depth += len(want)
        assert [(r.bid_px, r.bid_sz, r.ask_px, r.ask_sz, r.sequence) for r in recs if isinstance(r, Bbo)] == bbos[sym]
        assert [(r.price, r.size, r.ts_event, r.side, r.trade_id, bool(r.flags & FLAG_SNAPSHOT))
                for r in recs if isinstance(r, Trade)] == trades[sym]
    assert sum(map(len, trades.values())) == 279 and sum(map(len, bbos.values())) == 160

    st = open_storage(storage_url)
    try:
        assert st.gaps() == []
        counts = st.counts()
        assert counts["depth"] == n_depth and counts["bbo"] == 160 and 0 < counts["trades"] <= 279
        inst = {sym: v for iid, sym, ex, v, pub in st.load_instruments() if ex == "COINBASE"}
        assert inst == {"BTCUSD": "BTC-USD", "ETHUSD": "ETH-USD"}
    finally:
        st.close()
    assert leftover_segments(instance) == []


@pytest.mark.timeout(180)
def test_coinbase_exchange_feed_replay(tmp_path, instance, sqlite_url):
    symbols = list(EX.values())
    cfg = tmp_path / "dm.toml"
    cfg.write_text(config_head(tmp_path, instance, sqlite_url, [S21])
                   + coinbase_provider(tmp_path, symbols, "exchange"))   # default channels: level2_batch, matches, ticker
    readers = ChannelCollector(instance, symbols, exchange="COINBASE").start()
    run_supervised(cfg, tmp_path)
    readers.join(timeout=60)

    stats = worker_stats(tmp_path, instance, "coinbase")
    assert stats["feed"] == "exchange" and stats["dead_letters"] == 0 and stats["error_frames"] == 0
    assert stats["book_gaps"] == 0 and stats["book_crossed"] == 0 and stats["connects"] == 1
    assert stats["book_snapshots"] == 10 and stats["book_deltas_applied"] == 9719
    assert stats["size_precisions"]["SKLUSD"] == 1 and stats["size_precisions"]["DASHBTC"] == 3

    msgs = recorded(S21)
    books = book_events(msgs, SP21)
    n_trades = n_bbo = 0
    for sym in symbols:
        recs = readers.records[sym]
        assert readers.overruns[sym] == 0
        assert depths(recs) == expected_depths(books[sym]), sym
        want_t = [(fx(m["price"]), fx(m["size"], SP21[m["product_id"]]), m["trade_id"], m["sequence"]) for m in msgs
                  if m["type"] in ("match", "last_match") and EX[m["product_id"]] == sym]
        assert [(r.price, r.size, r.trade_id, r.sequence) for r in recs if isinstance(r, Trade)] == want_t
        want_b = [(fx(m["best_bid"]), fx(m["best_ask"]), m["sequence"]) for m in msgs
                  if m["type"] == "ticker" and EX[m["product_id"]] == sym]
        assert [(r.bid_px, r.ask_px, r.sequence) for r in recs if isinstance(r, Bbo)] == want_b
        n_trades += len(want_t)
        n_bbo += len(want_b)
    assert (n_trades, n_bbo) == (107, 107)
    st = open_storage(sqlite_url)
    try:
        assert st.gaps() == []
        assert st.counts()["bbo"] == 107
    finally:
        st.close()
    assert leftover_segments(instance) == []


def jsonl_lines(path: Path = S26) -> list[str]:
    return zstandard.ZstdDecompressor().stream_reader(path.read_bytes()).read().decode().split("\n")


def top10(ref: RefBook) -> tuple:
    bids, asks = ref.levels(SIDE_BID, 10), ref.levels(SIDE_ASK, 10)
    return len(bids), len(asks), depth_levels(bids, asks)


@pytest.mark.timeout(180)
def test_coinbase_dropped_message_sequence_break_resubscribe(tmp_path, instance, sqlite_url):
    """One BTC-USD level2 update is dropped from the Advanced Trade recording: sequence_num
    jumps over it, so both books of the connection (any message may have been the lost one) get
    ONE gap each naming the missing number and a level2 resubscription. What Coinbase sends on
    it (each book's true state as a snapshot) replaces a later level2 message of that product
    (same sequence_num, >= 2 recorded seconds later). From each snapshot on, DEPTH equals the
    true book; nothing is published in between; a corrupted heartbeat (its sequence_num
    unreadable: a second break) is dead-lettered; the worker process never changes."""
    lines = jsonl_lines()
    l2 = []   # (line number, ts, msg) of level2 messages
    hb_line = None
    for no, line in enumerate(lines, 1):
        if not line:
            continue
        e = json.loads(line)
        if e["t"] != "recv":
            continue
        msg = json.loads(e["data"])
        if msg["channel"] == "l2_data":
            l2.append((no, e["ts"], msg))
    k = next(i for i, (_, _, m) in enumerate(l2) if i > 50 and m["events"][0]["product_id"] == "BTC-USD")
    refs = {p: RefBook(IID, 0, 0) for p in AT}
    states = {p: {} for p in AT}
    repl = {}
    for i, (no, ts, msg) in enumerate(l2):
        (ev,) = msg["events"]
        p = ev["product_id"]
        bids = [(fx(u["price_level"]), fx(u["new_quantity"], 8)) for u in ev["updates"] if u["side"] == "bid"]
        asks = [(fx(u["price_level"]), fx(u["new_quantity"], 8)) for u in ev["updates"] if u["side"] == "offer"]
        apply(refs[p], (ev["type"] == "snapshot", 0, bids, asks))
        if i > k and p not in repl and ts >= l2[k][1] + 2.0:
            # the resubscription's answer: the true book now, as a snapshot with this message's sequence_num
            ups = ([{"side": "bid", "event_time": ev["updates"][0]["event_time"], "price_level": dec(a), "new_quantity": dec(b, 8)}
                    for a, b in refs[p].levels(SIDE_BID)]
                   + [{"side": "offer", "event_time": ev["updates"][0]["event_time"], "price_level": dec(a),
                       "new_quantity": dec(b, 8)} for a, b in refs[p].levels(SIDE_ASK)])
            snap = dict(msg, events=[{"type": "snapshot", "product_id": p, "updates": ups}])
            e = json.loads(lines[no - 1])
            e["data"] = json.dumps(snap)
            repl[p] = (no, msg["sequence_num"], json.dumps(e))
        if p in repl:
            states[p][msg["sequence_num"]] = top10(refs[p])
    assert set(repl) == set(AT)
    hb_line = next(no for no, line in enumerate(lines, 1) if line and '\\"heartbeats\\"' in line
                   and json.loads(line)["ts"] > l2[k][1] + 5.0 and all(no > r[0] for r in repl.values()))
    hb_seq = json.loads(json.loads(lines[hb_line - 1])["data"])["sequence_num"]
    rec = write_modified_recording(S26, tmp_path / "COINBASE-fault.jsonl.zst",
                                   [Drop(l2[k][0]), Corrupt(hb_line, 0.1)]
                                   + [Replace(no, text) for no, _, text in repl.values()])

    cfg = tmp_path / "dm.toml"
    symbols = list(AT.values())
    cfg.write_text(config_head(tmp_path, instance, sqlite_url, [rec], speed=10.0)
                   + coinbase_provider(tmp_path, symbols, "advanced", resync_timeout_s=30.0))
    readers = ChannelCollector(instance, symbols, exchange="COINBASE").start()
    run_supervised(cfg, tmp_path)
    readers.join(timeout=60)

    seq_k = l2[k][2]["sequence_num"]
    st = open_storage(sqlite_url)
    try:
        gaps = st.gaps()
    finally:
        st.close()
    got = sorted((g["kind"], g["first_missing"], g["last_missing"]) for g in gaps)
    assert got == sorted([("coinbase.sequence_num", seq_k, seq_k)] * 2 + [("coinbase.sequence_num", hb_seq, hb_seq)] * 2)
    log = (tmp_path / "supervisor.log").read_text()
    stats = worker_stats(tmp_path, instance, "coinbase")
    assert started_pids(log, "coinbase") == [stats["pid"]] and "child exited, restarting" not in log
    assert stats["sequence_breaks"] == 2 and stats["book_resubscribes"] >= 2 and stats["book_crossed"] == 0
    assert stats["dead_letters"] == 1 and stats["book_snapshots"] >= 4
    for p, sym in AT.items():
        no, snap_seq, _ = repl[p]
        ds = [d for d in depths(readers.records[sym])]
        after = [d for d in ds if d[0] >= snap_seq]
        assert after and after[0][0] == snap_seq, sym             # the resubscription's snapshot
        for d in after:
            if d[0] < hb_seq:
                assert d[1:] == states[p][d[0]], (sym, d[0])
        assert not [d for d in ds if seq_k < d[0] < snap_seq], sym  # nothing published while out of sync
    assert leftover_segments(instance) == []


@pytest.mark.timeout(180)
def test_coinbase_exchange_connection_cut_is_one_reconnect_gap_per_book(tmp_path, instance, sqlite_url):
    """The Exchange feed's level2 has no sequence number: a lost l2update cannot be seen, the
    connection is the only detectable loss. The websocket (through a TCP proxy) dies mid-stream:
    the worker reconnects, subscribes again, ledgers the window as ONE "reconnect" gap per
    instrument, and rebuilds each book from the new subscription's snapshot: the final books are
    the true ones. Same worker process throughout."""
    from tests.e2e import CuttingProxy, free_port

    products = {"SKL-USD": "SKLUSD", "NU-GBP": "NUGBP"}
    books = book_events(recorded(S21), SP21)
    finals = {}
    for sym in products.values():
        ref = RefBook(IID, 0, 0)
        for ev in books[sym]:
            apply(ref, ev)
        finals[sym] = top10(ref)
    replay_port = free_port()
    proxy = CuttingProxy(replay_port, after_bytes=60_000, mode="cut", max_connections=2).start()
    try:
        cfg = tmp_path / "dm.toml"
        cfg.write_text(config_head(tmp_path, instance, sqlite_url, [S21], replay_port=replay_port)
                       + coinbase_provider(tmp_path, list(products.values()), "exchange", channels=("level2",)).replace(
                           'ws_url = "ws://{replay}/ws-feed"', f'ws_url = "ws://127.0.0.1:{proxy.port}/ws-feed"'))
        readers = ChannelCollector(instance, list(products.values()), exchange="COINBASE").start()
        run_supervised(cfg, tmp_path)
        readers.join(timeout=60)
    finally:
        proxy.stop()
    assert proxy.faulted.is_set() and proxy.connections == 2
    stats = worker_stats(tmp_path, instance, "coinbase")
    log = (tmp_path / "supervisor.log").read_text()
    assert started_pids(log, "coinbase") == [stats["pid"]] and stats["connects"] == 2
    assert stats["book_crossed"] == 0 and stats["sequence_breaks"] == 0 and stats["dead_letters"] == 0
    st = open_storage(sqlite_url)
    try:
        gaps = st.gaps()
        inst = {iid: sym for iid, sym, ex, venue, pub in st.load_instruments()}
    finally:
        st.close()
    assert sorted((g["kind"], inst[g["instrument_id"]]) for g in gaps) == [("reconnect", "NUGBP"), ("reconnect", "SKLUSD")]
    assert all(g["first_missing"] < g["last_missing"] for g in gaps)
    for sym in products.values():
        ds = [r for r in readers.records[sym] if isinstance(r, Depth)]
        assert (ds[-1].n_bid, ds[-1].n_ask, ds[-1].levels) == finals[sym], sym
    assert leftover_segments(instance) == []
