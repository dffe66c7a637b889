"""Bybit v5 end to end: `dm supervise` replays the real recordings (the 2026 JSONL session: two
connections, linear + spot, in one file; the 2025 split session: orderbook.1 snapshots on two
connections) through the replay server to the real worker, which keeps one websocket per
category; dm.client readers collect every channel record; the persister stores them. Every
DEPTH/BBO is checked against a book rebuilt in pure Python (tests/book_ref.py) from the same
recorded frames, trades, ticker BBOs and statistics against the recording parsed with json
(numbers from their text, never through float). A dropped delta gives one gap and a
resubscription, then the true book again, in the same worker process."""
from __future__ import annotations

import json
from collections import Counter, defaultdict
from decimal import Decimal
from pathlib import Path

import pytest
import zstandard

from dm.recording import Corrupt, Drop, Insert, Replace, write_modified_recording
from dm.records import SIDE_ASK, SIDE_BID, UNDEF_PRICE, UNDEF_TIMESTAMP, Bbo, Depth, Statistic, StatType, Trade
from dm.storage import open_storage
from dm.venues.bybit.codec_ref import trade_id
from tests.book_ref import MASK_BBO, MASK_TOP10, RefBook, delta, snapshot_records
from tests.e2e import (ChannelCollector, to9, config_head, depth_levels, leftover_segments, provider_toml, run_supervised,
                       started_pids, worker_stats)

ROOT = Path(__file__).resolve().parent.parent
S26 = ROOT / "data/bybit/2026-08-09/BYBIT.jsonl.zst"
S25 = ROOT / "data/bybit/2025-06-13"
IID = 1
LINEAR_CONN, SPOT_CONN = "BYBIT.ws.2", "BYBIT.ws.3"
#: (connection, venue symbol) -> canonical (no quote alias: Bybit spot lists BTCUSD next to BTCUSDT)
SYMS26 = {(LINEAR_CONN, "BTCUSDT"): "BTCUSDT-USDT-PERP", (LINEAR_CONN, "ETHUSDT"): "ETHUSDT-USDT-PERP",
          (LINEAR_CONN, "SOLUSDT"): "SOLUSDT-USDT-PERP", (LINEAR_CONN, "DOGEUSDT"): "DOGEUSDT-USDT-PERP",
          (SPOT_CONN, "BTCUSDT"): "BTCUSDT", (SPOT_CONN, "ETHUSDT"): "ETHUSDT"}


def fx(text: str) -> int:
    d = Decimal(text).scaleb(9)
    assert d == d.to_integral_value()
    return int(d)


def jsonl(path: Path = S26) -> list[dict]:
    raw = zstandard.ZstdDecompressor().stream_reader(path.read_bytes()).read()
    return [json.loads(line) for line in raw.decode().split("\n") if line]


def bybit_provider(tmp: Path, symbols, channels=("orderbook", "publicTrade", "tickers"), depth: int = 200,
                   **extra) -> str:
    return provider_toml(tmp, "bybit", "bybit", "BYBIT", "ws://{replay}/v5/public", symbols, channels, depth=depth,
                         quote_aliases={}, **extra)


def book_events(frames) -> dict[str, list]:
    """canonical -> [(kind, u, bids, asks)] of its orderbook frames, in recorded order."""
    out = defaultdict(list)
    for conn, msg in frames:
        if msg.get("topic", "").startswith("orderbook."):
            d = msg["data"]
            key = SYMS26.get((conn, d["s"])) if conn else d["s"]
            if key is not None:
                out[key].append((msg["type"], d["u"], d["b"], d["a"]))
    return out


def apply(ref: RefBook, ev) -> int:
    kind, u, bids, asks = ev
    if kind == "snapshot" or u == 1:
        return ref.apply(snapshot_records(IID, bids, asks))
    return ref.apply(b"".join(delta(IID, SIDE_BID, fx(p), fx(q)) for p, q in bids)
                     + b"".join(delta(IID, SIDE_ASK, fx(p), fx(q)) for p, q in asks))


def expected_book_stream(events, publish_bbo: bool):
    """What the worker's Books must publish for one instrument: ("depth", u, n_bid, n_ask,
    levels) when the top 10 changed, ("bbo", ...) when the top changed (publish_bbo)."""
    ref = RefBook(IID, 0, 0)
    out = []
    for ev in events:
        m = apply(ref, ev)
        if m & MASK_TOP10:
            bids, asks = ref.levels(SIDE_BID, 10), ref.levels(SIDE_ASK, 10)
            out.append(("depth", ev[1], len(bids), len(asks), depth_levels(bids, asks)))
        if m & MASK_BBO and publish_bbo:
            (bp, bs), (ap, as_) = ref.best_bid or (UNDEF_PRICE, 0), ref.best_ask or (UNDEF_PRICE, 0)
            out.append(("bbo", bp, bs, ap, as_))
        assert not ref.crossed
    return out


def published_book_stream(records, with_bbo: bool):
    """DEPTH/BBO as the reference shapes them, sizes brought from the record's size_precision to
    the reference's 1e-9 (exact: ``to9``)."""
    out = []
    for r in records:
        if isinstance(r, Depth):
            sp = r.size_precision
            out.append(("depth", r.sequence, r.n_bid, r.n_ask,
                        tuple((bp, ap, to9(bs, sp), to9(as_, sp)) for bp, ap, bs, as_ in r.levels)))
        elif with_bbo and isinstance(r, Bbo):
            out.append(("bbo", r.bid_px, to9(r.bid_sz, r.size_precision), r.ask_px, to9(r.ask_sz, r.size_precision)))
    return out


def expected_trades_and_tickers(frames):
    """canonical -> trades [(price, size, ts_event, side, trade_id, seq)], ticker BBOs
    [(bid_px, bid_sz, ask_px, ask_sz, cs)] (deltas merged over the last full ticker) and
    statistics [(stat_type, value, ts_ref)] in recorded order."""
    trades, bbos, stats = defaultdict(list), defaultdict(list), defaultdict(list)
    last = defaultdict(dict)
    for conn, msg in frames:
        topic = msg.get("topic", "")
        if topic.startswith("publicTrade."):
            for t in msg["data"]:
                trades[SYMS26[(conn, t["s"])]].append((fx(t["p"]), fx(t["v"]), t["T"] * 10**6,
                                                       SIDE_BID if t["S"] == "Buy" else SIDE_ASK,
                                                       trade_id(t["i"].encode()), t["seq"]))
        elif topic.startswith("tickers."):
            d = msg["data"]
            sym = SYMS26[(conn, d["symbol"])]
            if msg["type"] == "snapshot":
                last[sym] = {}
            last[sym].update(d)
            m = last[sym]
            if any(k in d for k in ("bid1Price", "bid1Size", "ask1Price", "ask1Size")):
                bbos[sym].append((fx(m["bid1Price"]), fx(m["bid1Size"]), fx(m["ask1Price"]), fx(m["ask1Size"]),
                                  msg["cs"]))
            for key, st in (("markPrice", StatType.MARK_PRICE), ("indexPrice", StatType.INDEX_PRICE),
                            ("fundingRate", StatType.FUNDING_RATE), ("openInterest", StatType.OPEN_INTEREST)):
                if d.get(key):
                    ref = int(m["nextFundingTime"]) * 10**6 if key == "fundingRate" else UNDEF_TIMESTAMP
                    stats[sym].append((int(st), fx(d[key]), ref))
    return trades, bbos, stats


@pytest.mark.timeout(180)
def test_bybit_2026_linear_and_spot_replay(tmp_path, instance, storage_url):
    symbols = list(SYMS26.values())
    cfg = tmp_path / "dm.toml"
    cfg.write_text(config_head(tmp_path, instance, storage_url, [S26], speed=0.0) + bybit_provider(tmp_path, symbols))
    readers = ChannelCollector(instance, symbols, exchange="BYBIT").start()
    run_supervised(cfg, tmp_path)
    readers.join(timeout=60)

    stats = worker_stats(tmp_path, instance, "bybit")
    assert stats["book_frames_in_c"] == stats["book_deltas_applied"] == 2142   # all in the C frame path
    assert stats["dead_letters"] == 0 and stats["error_frames"] == 0 and stats["subscription_errors"] == 0
    assert stats["book_gaps"] == 0 and stats["book_update_id_gaps"] == 0 and stats["book_crossed"] == 0
    assert stats["book_snapshots"] == 6 and stats["book_deltas_applied"] == 2142
    assert stats["subscription_acks"] == 3                 # 12 linear topics in 2 requests, 6 spot in 1
    assert {c: v["connects"] for c, v in stats["categories"].items()} == {"spot": 1, "linear": 1}
    assert stats["frames_by_kind"]["ticker"] == 839 and stats["frames_by_kind"]["trade"] == 120
    assert stats["size_precisions"]["BTCUSDT-USDT-PERP"] == 3 and stats["size_precisions"]["BTCUSDT"] == 6

    frames = [(e["conn"], json.loads(e["data"])) for e in jsonl() if e["t"] == "recv"]
    books = book_events(frames)
    trades, tickers, statistics = expected_trades_and_tickers(frames)
    n_depth = n_bbo = n_stats = 0
    stat_types = Counter()
    for sym in symbols:
        recs = readers.records[sym]
        assert readers.overruns[sym] == 0
        spot = not sym.endswith("-PERP")
        # the book: DEPTH always; BBO too for spot (its tickers carry no bid1/ask1)
        want = expected_book_stream(books[sym], publish_bbo=spot)
        got = published_book_stream(recs, with_bbo=spot)
        assert len(got) == len(want), sym
        for i, (g, w) in enumerate(zip(got, want)):
            assert g == w, (sym, i)
        n_depth += sum(1 for g in got if g[0] == "depth")
        n_bbo += sum(1 for g in got if g[0] == "bbo")
        # linear: the ticker is the BBO source, exactly the merged recorded tickers
        if not spot:
            got_t = [(r.bid_px, to9(r.bid_sz, r.size_precision), r.ask_px, to9(r.ask_sz, r.size_precision), r.sequence)
                     for r in recs if isinstance(r, Bbo)]
            assert got_t == tickers[sym], sym
            n_bbo += len(got_t)
        got_s = [(r.stat_type, to9(r.quantity, r.size_precision) if r.stat_type == StatType.OPEN_INTEREST else r.price,
                  r.ts_ref)
                 for r in recs if isinstance(r, Statistic)]
        assert got_s == statistics[sym], sym
        stat_types.update(StatType(s[0]).name for s in got_s)
        n_stats += len(got_s)
        got_tr = [(r.price, to9(r.size, r.size_precision), r.ts_event, r.side, r.trade_id, r.sequence)
                  for r in recs if isinstance(r, Trade)]
        assert got_tr == trades[sym], sym
    assert sum(len(v) for v in trades.values()) == 347
    assert dict(stat_types) == {"MARK_PRICE": 89, "INDEX_PRICE": 69, "OPEN_INTEREST": 20, "FUNDING_RATE": 6}

    st = open_storage(storage_url)
    try:
        assert st.gaps() == []
        counts = st.counts()
        assert counts["trades"] == 347 and counts["depth"] == n_depth and counts["bbo"] == n_bbo
        assert counts["statistics"] == n_stats
        inst = {sym: venue for iid, sym, ex, venue, pub in st.load_instruments() if ex == "BYBIT"}
        assert inst["BTCUSDT"] == "spot:BTCUSDT" and inst["BTCUSDT-USDT-PERP"] == "linear:BTCUSDT"
    finally:
        st.close()
    assert leftover_segments(instance) == []


def rest_file_from_2026(tmp: Path) -> Path:
    """The 2026 session's recorded instruments-info bodies (real, as Bybit sent them) in a
    format-1 REST file: the 2025 split session holds no v5 reference data (data/VENUES.md §8)."""
    out = tmp / "BYBIT-instruments.0"
    out.write_text("".join(f"{e['url']} -> {e['ts']}: {e['data']}\n" for e in jsonl() if e["t"] == "http"))
    return out


@pytest.mark.timeout(180)
def test_bybit_2025_orderbook1_snapshots_replay(tmp_path, instance, sqlite_url):
    """Level-1 books are snapshots only (re-sent with the same u after 3 s without change):
    every DEPTH and BBO equals the rebuild. RADUSDT and MASAUSDT are not listed any more in the
    2026 instruments, so the other 8 symbols are replayed."""
    symbols = {"SNTUSDT": "SNTUSDT-USDT-PERP", "BANDUSDT": "BANDUSDT-USDT-PERP", "AIOZUSDT": "AIOZUSDT-USDT-PERP",
               "ARBUSDC": "ARBUSDC", "OPUSDC": "OPUSDC", "KCSUSDT": "KCSUSDT", "CPOOLUSDT": "CPOOLUSDT",
               "TUSDUSDT": "TUSDUSDT"}
    cfg = tmp_path / "dm.toml"
    cfg.write_text(config_head(tmp_path, instance, sqlite_url, [S25, rest_file_from_2026(tmp_path)], speed=0.0)
                   + bybit_provider(tmp_path, list(symbols.values()), channels=("orderbook",), depth=1))
    readers = ChannelCollector(instance, list(symbols.values()), exchange="BYBIT").start()
    run_supervised(cfg, tmp_path)
    readers.join(timeout=60)

    stats = worker_stats(tmp_path, instance, "bybit")
    assert stats["dead_letters"] == 0 and stats["book_gaps"] == 0 and stats["book_crossed"] == 0
    frames = []
    for f in sorted(S25.glob("BYBIT.ws.*")):
        for line in f.read_text().split("\n"):
            if line[:1].isdigit():
                frames.append((None, json.loads(line.split(": ", 1)[1])))
    books = book_events(frames)
    n = 0
    for venue, sym in symbols.items():
        want = expected_book_stream(books[venue], publish_bbo=True)   # no tickers: the book is the BBO
        got = published_book_stream(readers.records[sym], with_bbo=True)
        assert got == want, sym
        n += len(books[venue])
    assert stats["book_snapshots"] == n == 107 + 45 + 28 + 54 + 30 + 19 + 14 + 11
    assert ledger(sqlite_url) == []


def ledger(url: str) -> list[dict]:
    st = open_storage(url)
    try:
        return st.gaps()
    finally:
        st.close()


def depth9(r) -> tuple:
    """(n_bid, n_ask, levels) of a DEPTH record, sizes at 1e-9 like the reference books."""
    sp = r.size_precision
    return r.n_bid, r.n_ask, tuple((bp, ap, to9(bs, sp), to9(as_, sp)) for bp, ap, bs, as_ in r.levels)


def top10(ref: RefBook) -> tuple:
    bids, asks = ref.levels(SIDE_BID, 10), ref.levels(SIDE_ASK, 10)
    return len(bids), len(asks), depth_levels(bids, asks)


def dec(v: int) -> str:
    return f"{Decimal(v).scaleb(-9).normalize():f}"


@pytest.mark.timeout(180)
def test_bybit_dropped_delta_one_gap_resubscribe(tmp_path, instance, sqlite_url):
    """A linear BTCUSDT delta is dropped from the recording; what Bybit sends on the
    resubscription (the book's true state as a snapshot) is inserted 2 recorded seconds later.
    Exactly one gap (the missing u), one resubscription, DEPTH equal to the true book from the
    snapshot on; a corrupted (spot ticker) frame is dead-lettered, and so is a mark price that does not
    fit (that value alone); the spot connection is untouched; the
    worker process never changes."""
    lines = zstandard.ZstdDecompressor().stream_reader(S26.read_bytes()).read().decode().split("\n")
    evs = []  # (line number, ts, msg) of linear BTCUSDT book frames
    ticker_line = mark_line = None
    for no, line in enumerate(lines, 1):
        if not line:
            continue
        e = json.loads(line)
        if e["t"] != "recv":
            continue
        msg = json.loads(e["data"])
        if e["conn"] == LINEAR_CONN and msg.get("topic") == "orderbook.200.BTCUSDT":
            evs.append((no, e["ts"], msg))
        elif ticker_line is None and msg.get("topic") == "tickers.BTCUSDT" and e["conn"] == SPOT_CONN:
            ticker_line = no  # spot tickers give no records here: corrupting one costs nothing else
        elif (mark_line is None and msg.get("topic") == "tickers.BTCUSDT" and e["conn"] == LINEAR_CONN
              and "markPrice" in msg["data"] and msg["type"] == "delta"):
            mark_line, mark_msg = no, msg
    deltas = [i for i, ev in enumerate(evs) if ev[2]["type"] == "delta"]
    k = deltas[len(deltas) // 3]
    j = next(i for i in range(k + 1, len(evs)) if evs[i][1] >= evs[k][1] + 2.0)
    ref = RefBook(IID, 0, 0)
    states = {}
    for i, (_, _, msg) in enumerate(evs):
        d = msg["data"]
        apply(ref, (msg["type"], d["u"], d["b"], d["a"]))
        if i == j - 1:
            snap_u = d["u"]
            snap = {"topic": "orderbook.200.BTCUSDT", "type": "snapshot", "ts": msg["ts"],
                    "data": {"s": "BTCUSDT", "b": [[dec(p), dec(q)] for p, q in ref.levels(SIDE_BID)],
                             "a": [[dec(p), dec(q)] for p, q in ref.levels(SIDE_ASK)], "u": snap_u, "seq": d["seq"]},
                    "cts": msg["cts"]}
        if i >= j - 1:
            states[d["u"]] = top10(ref)
    final = top10(ref)
    ins = json.dumps({"t": "recv", "conn": LINEAR_CONN, "ts": evs[j][1], "data": json.dumps(snap)})
    # a mark price that does not fit i64 at 1e-9: that statistic alone is dropped (dead-lettered)
    bad = json.loads(lines[mark_line - 1])
    mark_msg["data"]["markPrice"] = "1e30"
    bad["data"] = json.dumps(mark_msg)
    rec = write_modified_recording(S26, tmp_path / "BYBIT-fault.jsonl.zst",
                                   [Drop(evs[k][0]), Insert(evs[j][0], ins), Corrupt(ticker_line),
                                    Replace(mark_line, json.dumps(bad))])

    cfg = tmp_path / "dm.toml"
    symbols = ["BTCUSDT-USDT-PERP", "BTCUSDT"]
    cfg.write_text(config_head(tmp_path, instance, sqlite_url, [rec], speed=10.0) + bybit_provider(tmp_path, symbols))
    readers = ChannelCollector(instance, symbols, exchange="BYBIT").start()
    run_supervised(cfg, tmp_path)
    readers.join(timeout=60)

    gaps = ledger(sqlite_url)
    u_k = evs[k][2]["data"]["u"]
    assert [(g["kind"], g["first_missing"], g["last_missing"]) for g in gaps] == [("bybit.update_id", u_k, u_k)]
    log = (tmp_path / "supervisor.log").read_text()
    stats = worker_stats(tmp_path, instance, "bybit")
    assert started_pids(log, "bybit") == [stats["pid"]] and "child exited, restarting" not in log
    assert stats["book_update_id_gaps"] == 1 and stats["book_resubscribes"] == 1 and stats["book_crossed"] == 0
    assert stats["book_snapshots"] == 3                   # linear 1 + its resync 1, spot 1
    assert stats["dead_letters"] == 2 and stats["value_errors"] == 1 and stats["subscription_errors"] == 0
    dead = [json.loads(x) for x in (tmp_path / "deadletter" / "bybit.jsonl").read_text().splitlines()]
    assert sorted(d["kind"] for d in dead) == ["CodecError", "FixedPointError"]
    assert "out of range: \"1e30\"" in next(d["error"] for d in dead if d["kind"] == "FixedPointError")
    same = [r for r in readers.records["BTCUSDT-USDT-PERP"] if r.ts_event == mark_msg["ts"] * 10**6
            and isinstance(r, (Bbo, Statistic))]
    assert [type(r).__name__ for r in same] == ["Bbo"]     # the rest of that ticker went out
    assert same[0].sequence == mark_msg["cs"]
    assert {c: v["connects"] for c, v in stats["categories"].items()} == {"spot": 1, "linear": 1}
    depths = [r for r in readers.records["BTCUSDT-USDT-PERP"] if isinstance(r, Depth)]
    after = [r for r in depths if r.sequence >= snap_u]
    assert after and after[0].sequence == snap_u           # the resubscription's snapshot
    for r in after:
        assert depth9(r) == states[r.sequence], r.sequence
    assert depth9(depths[-1]) == final
    assert not [r for r in depths if u_k <= r.sequence < snap_u]   # nothing published while out of sync
    # the spot book went on untouched
    spot_frames = [(e["conn"], json.loads(e["data"])) for e in jsonl() if e["t"] == "recv" and e["conn"] == SPOT_CONN]
    want = expected_book_stream(book_events(spot_frames)["BTCUSDT"], publish_bbo=True)
    assert published_book_stream(readers.records["BTCUSDT"], with_bbo=True) == want
    assert leftover_segments(instance) == []


@pytest.mark.timeout(180)
@pytest.mark.parametrize("mode", ["cut", "freeze"])
def test_bybit_one_category_connection_lost_reconnects_alone(tmp_path, instance, sqlite_url, mode):
    """The first websocket through a TCP proxy dies mid-stream ("cut") or goes silent with the
    socket open ("freeze": only the worker's watchdog can tell). That category alone reconnects,
    resubscribes and rebuilds its books from new snapshots; the ledger holds one "reconnect" gap
    per instrument of that category and nothing for the other; the final books are the true ones.
    The freeze runs paced (speed 8): much faster, the replay server hands a category's whole session
    to the socket buffers before the freeze and counts that connection as replayed."""
    from tests.e2e import CuttingProxy, free_port

    symbols = {(LINEAR_CONN, "BTCUSDT"): "BTCUSDT-USDT-PERP", (SPOT_CONN, "BTCUSDT"): "BTCUSDT"}
    frames = [(e["conn"], json.loads(e["data"])) for e in jsonl() if e["t"] == "recv"]
    books = book_events(frames)
    finals = {}
    for sym in symbols.values():
        ref = RefBook(IID, 0, 0)
        for ev in books[sym]:
            apply(ref, ev)
        finals[sym] = top10(ref)
    replay_port = free_port()
    proxy = CuttingProxy(replay_port, after_bytes=30_000, mode=mode, max_connections=3).start()
    try:
        cfg = tmp_path / "dm.toml"
        cfg.write_text(config_head(tmp_path, instance, sqlite_url, [S26], speed=0.0 if mode == "cut" else 8.0,
                                   replay_port=replay_port)
                       + bybit_provider(tmp_path, list(symbols.values()), channels=("orderbook",)).replace(
                           'ws_url = "ws://{replay}/v5/public"', f'ws_url = "ws://127.0.0.1:{proxy.port}/v5/public"')
                       + "stale_after_s = 0.5\n")
        readers = ChannelCollector(instance, list(symbols.values()), exchange="BYBIT").start()
        run_supervised(cfg, tmp_path)
        readers.join(timeout=60)
    finally:
        proxy.stop()
    assert proxy.faulted.is_set() and proxy.connections == 3
    stats = worker_stats(tmp_path, instance, "bybit")
    log = (tmp_path / "supervisor.log").read_text()
    assert started_pids(log, "bybit") == [stats["pid"]]
    connects = {c: v["connects"] for c, v in stats["categories"].items()}
    assert sorted(connects.values()) == [1, 2]
    lost = next(c for c, n in connects.items() if n == 2)
    lost_sym = "BTCUSDT-USDT-PERP" if lost == "linear" else "BTCUSDT"
    assert stats["categories"][lost]["stale_disconnects"] == (1 if mode == "freeze" else 0)
    assert stats["book_snapshots"] == 3 and stats["book_update_id_gaps"] == 0 and stats["book_crossed"] == 0
    gaps = ledger(sqlite_url)
    assert [g["kind"] for g in gaps] == ["reconnect"] and gaps[0]["first_missing"] < gaps[0]["last_missing"]
    st = open_storage(sqlite_url)
    try:
        inst = {iid: sym for iid, sym, ex, venue, pub in st.load_instruments()}
    finally:
        st.close()
    assert inst[gaps[0]["instrument_id"]] == lost_sym
    for sym in symbols.values():
        depths = [r for r in readers.records[sym] if isinstance(r, Depth)]
        assert depth9(depths[-1]) == finals[sym], sym
    assert leftover_segments(instance) == []
