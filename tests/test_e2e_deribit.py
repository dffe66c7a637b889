"""Deribit v2 end to end: `dm supervise` replays the real recording (data/deribit/2021-07-22: 10
options, book + ticker) through the replay server to the real worker process (JSON-RPC
subscribe, public/set_heartbeat and the test_request it answers with public/test); dm.client
readers collect every channel record; the persister stores them. Every DEPTH is checked against
a book rebuilt in pure Python (tests/book_ref.py) from the recorded notifications, ticker BBOs and
statistics against the recording parsed with json + Decimal. A lost book change gives one gap and
a resubscription, then the true book again, in the same worker process; a corrupted frame and a
mark price that does not fit are dead-lettered alone."""
from __future__ import annotations

import json
import shutil
from collections import Counter, defaultdict
from decimal import Decimal
from pathlib import Path

import pytest

from dm.recording import Corrupt, Drop, Insert, Replace, write_modified_recording
from dm.records import SIDE_ASK, SIDE_BID, UNDEF_PRICE, Bbo, Depth, Statistic, StatType, Trade
from dm.storage import open_storage
from dm.venues.deribit.symbology import DeribitSymbology
from tests.book_ref import MASK_TOP10, RefBook, delta, snapshot_records
from tests.e2e import (ChannelCollector, config_head, depth_levels, leftover_segments, provider_toml, run_supervised,
                       started_pids, worker_stats)

ROOT = Path(__file__).resolve().parent.parent
SESSION = ROOT / "data/deribit/2021-07-22"
WS = SESSION / "DERIBIT.ws.1.0"
IID = 1


def fx(v) -> int:
    d = Decimal(str(v)).scaleb(9)
    assert d == d.to_integral_value()
    return int(d)


def symbols() -> dict[str, str]:
    """venue instrument name -> canonical, from the recorded get_instruments bodies."""
    bodies = [line.split(b": ", 1)[1] for line in (SESSION / "DERIBIT.0").read_bytes().split(b"\n")
              if line.startswith(b"http")]
    sym = DeribitSymbology.from_reference(b"[" + b",".join(bodies) + b"]")
    names = {json.loads(line.split(": ", 1)[1])["params"]["data"]["instrument_name"]
             for line in WS.read_text().split("\n") if '"method":"subscription"' in line}
    return {n: sym.to_canonical(n) for n in sorted(names)}


SYMS = symbols()


def deribit_provider(tmp: Path, syms, channels=("book", "ticker", "trades"), **extra) -> str:
    return provider_toml(tmp, "deribit", "deribit", "DERIBIT", "ws://{replay}/ws/api/v2", syms, channels,
                         interval="raw", heartbeat_s=10, **extra)


def notifications(lines) -> list[tuple[int, float, dict]]:
    """(line number, ts, message) of every subscription notification."""
    out = []
    for no, line in enumerate(lines, 1):
        if line[:1].isdigit() and '"method":"subscription"' in line:
            ts, text = line.split(": ", 1)
            out.append((no, float(ts), json.loads(text, parse_float=Decimal)))
    return out


def apply(ref: RefBook, d: dict) -> int:
    if d["type"] == "snapshot":
        return ref.apply(snapshot_records(IID, [(str(p), str(q)) for _, p, q in d["bids"]],
                                          [(str(p), str(q)) for _, p, q in d["asks"]]))
    return ref.apply(b"".join(delta(IID, SIDE_BID, fx(p), 0 if a == "delete" else fx(q)) for a, p, q in d["bids"])
                     + b"".join(delta(IID, SIDE_ASK, fx(p), 0 if a == "delete" else fx(q)) for a, p, q in d["asks"]))


def top10(ref: RefBook) -> tuple:
    bids, asks = ref.levels(SIDE_BID, 10), ref.levels(SIDE_ASK, 10)
    return len(bids), len(asks), depth_levels(bids, asks)


def expected(msgs):
    """canonical -> DEPTH stream [(change_id, n_bid, n_ask, levels)], ticker BBOs, statistics."""
    depth, bbos, stats = defaultdict(list), defaultdict(list), defaultdict(list)
    refs = defaultdict(lambda: RefBook(IID, 0, 0))
    for _, _, m in msgs:
        d = m["params"]["data"]
        sym = SYMS[d["instrument_name"]]
        if m["params"]["channel"].startswith("book."):
            ref = refs[sym]
            if apply(ref, d) & MASK_TOP10:
                depth[sym].append((d["change_id"], *top10(ref)))
            assert not ref.crossed
        else:
            b = (fx(d["best_bid_price"]), fx(d["best_bid_amount"])) if d["best_bid_amount"] else (UNDEF_PRICE, 0)
            a = (fx(d["best_ask_price"]), fx(d["best_ask_amount"])) if d["best_ask_amount"] else (UNDEF_PRICE, 0)
            bbos[sym].append((*b, *a, d["timestamp"] * 10**6))
            for key, st in (("mark_price", StatType.MARK_PRICE), ("index_price", StatType.INDEX_PRICE),
                            ("underlying_price", StatType.UNDERLYING_PRICE), ("mark_iv", StatType.IMPLIED_VOLATILITY),
                            ("open_interest", StatType.OPEN_INTEREST),
                            ("estimated_delivery_price", StatType.ESTIMATED_SETTLEMENT_PRICE)):
                stats[sym].append((int(st), fx(d[key])))
    return depth, bbos, stats


def got_stream(recs):
    depth = [(r.sequence, r.n_bid, r.n_ask, r.levels) for r in recs if isinstance(r, Depth)]
    bbos = [(r.bid_px, r.bid_sz, r.ask_px, r.ask_sz, r.ts_event) for r in recs if isinstance(r, Bbo)]
    stats = [(r.stat_type, r.quantity if r.stat_type == StatType.OPEN_INTEREST else r.price)
             for r in recs if isinstance(r, Statistic)]
    return depth, bbos, stats


def ledger(url: str) -> list[dict]:
    st = open_storage(url)
    try:
        return st.gaps()
    finally:
        st.close()


@pytest.mark.timeout(180)
def test_deribit_options_replay(tmp_path, instance, storage_url):
    syms = list(SYMS.values())
    cfg = tmp_path / "dm.toml"
    cfg.write_text(config_head(tmp_path, instance, storage_url, [SESSION], speed=0.0) + deribit_provider(tmp_path, syms))
    readers = ChannelCollector(instance, syms, exchange="DERIBIT").start()
    run_supervised(cfg, tmp_path)
    readers.join(timeout=60)

    stats = worker_stats(tmp_path, instance, "deribit")
    assert stats["book_frames_in_c"] == stats["book_deltas_applied"] == 36   # all in the C frame path
    assert stats["dead_letters"] == 0 and stats["error_frames"] == 0 and stats["subscription_errors"] == 0
    assert stats["book_gaps"] == 0 and stats["book_change_id_gaps"] == 0 and stats["book_crossed"] == 0
    assert stats["book_snapshots"] == 10 and stats["book_deltas_applied"] == 36
    assert stats["subscription_acks"] == 1 and stats["frames_by_kind"]["ticker"] == 89
    assert stats["test_requests"] == 1 and stats["pongs"] == 2     # set_heartbeat "ok" + public/test
    assert stats["size_precisions"]["BTCUSD-BTC-210924-8000-P"] == 1
    assert stats["size_precisions"]["ETHUSD-ETH-210723-2300-C"] == 0

    depth, bbos, statistics = expected(notifications(WS.read_text().split("\n")))
    n = Counter()
    for sym in syms:
        recs = readers.records[sym]
        assert readers.overruns[sym] == 0
        d, b, s = got_stream(recs)
        assert d == depth[sym], sym            # the book: DEPTH only (the ticker is the BBO source)
        assert b == bbos[sym], sym
        assert s == statistics[sym], sym
        assert not [r for r in recs if isinstance(r, Trade)]
        n["depth"] += len(d)
        n["bbo"] += len(b)
        n["stats"] += len(s)
    assert n["bbo"] == 89 and n["stats"] == 6 * 89

    st = open_storage(storage_url)
    try:
        assert st.gaps() == []
        counts = st.counts()
        assert counts["depth"] == n["depth"] and counts["bbo"] == n["bbo"] and counts["statistics"] == n["stats"]
        inst = {sym: venue for iid, sym, ex, venue, pub in st.load_instruments() if ex == "DERIBIT"}
        assert inst["BTCUSD-BTC-210924-8000-P"] == "BTC-24SEP21-8000-P" and len(inst) == 10
    finally:
        st.close()
    assert leftover_segments(instance) == []


def _dec(v: int) -> float:
    return float(Decimal(v).scaleb(-9))


@pytest.mark.timeout(180)
def test_deribit_lost_change_one_gap_resubscribe(tmp_path, instance, sqlite_url):
    """A BTC-24SEP21-8000-P book change is dropped from the recording; what Deribit sends on the
    resubscription (the true book as a snapshot with the last change_id) is inserted one recorded
    second later. Exactly one gap (deribit.change_id), one resubscription, DEPTH equal to the
    true book from the snapshot on; a corrupted ticker frame is dead-lettered, and so is a mark
    price that does not fit (that value alone; the rest of that ticker goes out); channels the
    venue leaves out of the subscribe result are logged and counted; the worker process never
    changes."""
    lines = WS.read_text().split("\n")
    msgs = notifications(lines)
    name = "BTC-24SEP21-8000-P"
    sym = SYMS[name]
    evs = [(no, ts, m) for no, ts, m in msgs if m["params"]["channel"] == f"book.{name}.raw"]
    k = 8
    j = next(i for i in range(k + 2, len(evs)) if evs[i][1] >= evs[k][1] + 1.0)
    ref = RefBook(IID, 0, 0)
    states = {}
    for i, (_, _, m) in enumerate(evs):
        d = m["params"]["data"]
        apply(ref, d)
        if i == j - 1:
            snap_cid = d["change_id"]
            snap = {"jsonrpc": "2.0", "method": "subscription", "params": {"channel": f"book.{name}.raw", "data": {
                "type": "snapshot", "timestamp": d["timestamp"], "instrument_name": name, "change_id": snap_cid,
                "bids": [["new", _dec(p), _dec(q)] for p, q in ref.levels(SIDE_BID)],
                "asks": [["new", _dec(p), _dec(q)] for p, q in ref.levels(SIDE_ASK)]}}}
        if i >= j - 1:
            states[d["change_id"]] = top10(ref)
    final = top10(ref)
    # a ticker of another instrument is corrupted; one of this instrument gets a mark price out of range
    other = next(no for no, _, m in msgs if m["params"]["channel"] == "ticker.ETH-30JUL21-2800-C.raw")
    mark_no, _, mark_msg = next((no, ts, m) for no, ts, m in msgs if m["params"]["channel"] == f"ticker.{name}.raw")
    ts_text, text = lines[mark_no - 1].split(": ", 1)
    bad_text = text.replace('"mark_price":', '"mark_price":1e30,"x_mark":', 1)
    assert bad_text != text
    folder = tmp_path / "deribit-fault"
    folder.mkdir()
    shutil.copy(SESSION / "DERIBIT.0", folder / "DERIBIT.0")
    write_modified_recording(WS, folder / "DERIBIT.ws.1.0", [
        Drop(evs[k][0]), Insert(evs[j][0], f"{evs[j][1] - 0.0001}: {json.dumps(snap, separators=(',', ':'))}"),
        Corrupt(other), Replace(mark_no, f"{ts_text}: {bad_text}")])

    cfg = tmp_path / "dm.toml"
    # BTC-24SEP21-40000-C is listed by get_instruments but nothing of it was recorded: the replay
    # leaves its channels out of the subscribe result, as Deribit does for channels it refuses
    syms = [sym, SYMS["ETH-30JUL21-2800-C"], "BTCUSD-BTC-210924-40000-C"]
    cfg.write_text(config_head(tmp_path, instance, sqlite_url, [folder], speed=10.0) + deribit_provider(tmp_path, syms))
    readers = ChannelCollector(instance, syms, exchange="DERIBIT").start()
    run_supervised(cfg, tmp_path)
    readers.join(timeout=60)

    gaps = ledger(sqlite_url)
    prev_cid = evs[k - 1][2]["params"]["data"]["change_id"]
    lost_cid = evs[k][2]["params"]["data"]["change_id"]
    assert [(g["kind"], g["first_missing"], g["last_missing"]) for g in gaps] == [
        ("deribit.change_id", prev_cid + 1, lost_cid)]
    log = (tmp_path / "supervisor.log").read_text()
    stats = worker_stats(tmp_path, instance, "deribit")
    assert started_pids(log, "deribit") == [stats["pid"]] and "child exited, restarting" not in log
    assert stats["book_change_id_gaps"] == 1 and stats["book_resubscribes"] == 1 and stats["book_crossed"] == 0
    assert stats["book_snapshots"] == 3                    # 2 instruments + the resync
    assert stats["dead_letters"] == 2 and stats["value_errors"] == 1
    assert stats["subscription_errors"] == 3 and "channels not subscribed" in log   # book, ticker, trades of 40000-C
    assert readers.records["BTCUSD-BTC-210924-40000-C"] == []
    dead = [json.loads(x) for x in (tmp_path / "deadletter" / "deribit.jsonl").read_text().splitlines()]
    assert sorted(d["kind"] for d in dead) == ["CodecError", "FixedPointError"]
    same = [r for r in readers.records[sym] if r.ts_event == mark_msg["params"]["data"]["timestamp"] * 10**6
            and isinstance(r, (Bbo, Statistic))]
    assert [type(r).__name__ for r in same][0] == "Bbo"
    assert StatType.MARK_PRICE not in {getattr(r, "stat_type", 0) for r in same}
    assert len(same) == 6                                   # the BBO and 5 statistics of that ticker
    depths = [r for r in readers.records[sym] if isinstance(r, Depth)]
    after = [r for r in depths if r.sequence >= snap_cid]
    assert after and after[0].sequence == snap_cid
    for r in after:
        assert (r.n_bid, r.n_ask, r.levels) == states[r.sequence], r.sequence
    assert (depths[-1].n_bid, depths[-1].n_ask, depths[-1].levels) == final
    assert not [r for r in depths if lost_cid <= r.sequence < snap_cid]
    assert leftover_segments(instance) == []


@pytest.mark.timeout(180)
def test_deribit_connection_cut_is_a_gap_and_books_rebuild(tmp_path, instance, sqlite_url):
    """The websocket dies mid-stream (TCP proxy): the worker reconnects, sets the heartbeat and
    subscribes again; the ledger holds one ``reconnect`` gap per instrument; the books are rebuilt
    from the new snapshots and end equal to the true books; same worker process."""
    from tests.e2e import CuttingProxy, free_port

    names = ["BTC-24SEP21-8000-P", "BTC-31DEC21-34000-P", "ETH-30JUL21-2800-C"]
    syms = [SYMS[n] for n in names]
    finals = {}
    for n in names:
        ref = RefBook(IID, 0, 0)
        for _, _, m in notifications(WS.read_text().split("\n")):
            if m["params"]["channel"] == f"book.{n}.raw":
                apply(ref, m["params"]["data"])
        finals[SYMS[n]] = top10(ref)
    replay_port = free_port()
    proxy = CuttingProxy(replay_port, after_bytes=30_000, mode="cut", max_connections=2).start()
    try:
        cfg = tmp_path / "dm.toml"
        cfg.write_text(config_head(tmp_path, instance, sqlite_url, [SESSION], speed=4.0, replay_port=replay_port)
                       + deribit_provider(tmp_path, syms).replace(
                           'ws_url = "ws://{replay}/ws/api/v2"', f'ws_url = "ws://127.0.0.1:{proxy.port}/ws/api/v2"'))
        readers = ChannelCollector(instance, syms, exchange="DERIBIT").start()
        run_supervised(cfg, tmp_path)
        readers.join(timeout=60)
    finally:
        proxy.stop()
    assert proxy.faulted.is_set() and proxy.connections == 2
    stats = worker_stats(tmp_path, instance, "deribit")
    log = (tmp_path / "supervisor.log").read_text()
    assert started_pids(log, "deribit") == [stats["pid"]]
    assert stats["connects"] == 2 and stats["book_change_id_gaps"] == 0 and stats["book_crossed"] == 0
    assert stats["book_snapshots"] == 6 and stats["test_requests"] == 2
    st = open_storage(sqlite_url)
    try:
        gaps = st.gaps()
        inst = {iid: sym for iid, sym, ex, venue, pub in st.load_instruments()}
    finally:
        st.close()
    assert sorted(inst[g["instrument_id"]] for g in gaps) == sorted(syms)
    assert all(g["kind"] == "reconnect" and g["first_missing"] < g["last_missing"] for g in gaps)
    for sym in syms:
        depths = [r for r in readers.records[sym] if isinstance(r, Depth)]
        assert (depths[-1].n_bid, depths[-1].n_ask, depths[-1].levels) == finals[sym], sym
    assert leftover_segments(instance) == []
