"""Binance USD-M and COIN-M futures end to end: `dm supervise` replays both real sessions
(data/binance_futures/2021-07-22, data/binance_delivery/2021-07-22) through one replay server to
two real worker processes (kinds binance_futures and binance_delivery); dm.client readers
collect every channel record; the persister stores them. Trades and BBOs equal the recordings
parsed with json (numbers from their text); every DEPTH equals a book rebuilt in pure Python
(tests/book_ref.py) by the futures rule at that update id; 0 gaps, 0 crossed books. A dropped
diff gives exactly one gap (missing previous u + 1 .. pu), a resync from a fresh snapshot, and
the true book again, in the same worker process."""
from __future__ import annotations

import json
from collections import defaultdict
from decimal import Decimal
from pathlib import Path

import pytest

from dm.recording import Drop, Insert, write_modified_recording
from dm.records import SIDE_ASK, SIDE_BID, Bar, BarFlag, Bbo, Depth, Trade
from dm.storage import open_storage
from tests.book_ref import RefBook, levels_records, snapshot_records
from tests.e2e import (ChannelCollector, config_head, depth_levels, leftover_segments, provider_toml, run_supervised,
                       started_pids, worker_stats)

ROOT = Path(__file__).resolve().parent.parent
UM = ROOT / "data/binance_futures/2021-07-22"
CM = ROOT / "data/binance_delivery/2021-07-22"
IID = 1
UM_SYMS = {"SUSHIUSDT": "SUSHIUSDT-USDT-PERP", "CTKUSDT": "CTKUSDT-USDT-PERP", "AKROUSDT": "AKROUSDT-USDT-PERP",
           "KEEPUSDT": "KEEPUSDT-USDT-PERP"}
CM_SYMS = {"ETHUSD_210924": "ETHUSD-ETH-210924", "ETCUSD_PERP": "ETCUSD-ETC-PERP", "LINKUSD_PERP": "LINKUSD-LINK-PERP",
           "BTCUSD_211231": "BTCUSD-BTC-211231", "EOSUSD_PERP": "EOSUSD-EOS-PERP", "BCHUSD_PERP": "BCHUSD-BCH-PERP",
           "XRPUSD_PERP": "XRPUSD-XRP-PERP", "TRXUSD_PERP": "TRXUSD-TRX-PERP", "LINKUSD_211231": "LINKUSD-LINK-211231",
           "BCHUSD_210924": "BCHUSD-BCH-210924"}
CHANNELS = ("aggTrade", "bookTicker", "depth@100ms", "kline_1m")


def fx(text: str) -> int:
    d = Decimal(text).scaleb(9)
    assert d == d.to_integral_value()
    return int(d)


def files(d: Path) -> list[Path]:
    return sorted(p for p in d.iterdir() if p.is_file())


def session(d: Path):
    """(snapshots {symbol: body}, frames [(line no, file, data)]) of a split session."""
    snaps = {}
    for f in d.glob("*.http.*"):
        for line in f.read_text().split("\n"):
            if line.startswith("http"):
                url, rest = line.split(" -> ", 1)
                snaps[url.split("symbol=", 1)[1].split("&", 1)[0]] = json.loads(rest.split(": ", 1)[1])
    frames = []
    for f in d.glob("*.ws.*"):
        for no, line in enumerate(f.read_text().split("\n"), 1):
            if line[:1].isdigit():
                frames.append((no, f, json.loads(line.split(": ", 1)[1])["data"]))
    return snaps, frames


def top10(ref: RefBook) -> tuple:
    bids, asks = ref.levels(SIDE_BID, 10), ref.levels(SIDE_ASK, 10)
    return len(bids), len(asks), depth_levels(bids, asks)


def book_states(snap: dict, diffs: list) -> dict:
    """update id -> top 10 of the book rebuilt by the futures rule: the snapshot (at
    lastUpdateId), then every diff with u >= lastUpdateId."""
    ref = RefBook(IID, 0, 0)
    ref.apply(snapshot_records(IID, [tuple(x) for x in snap["bids"]], [tuple(x) for x in snap["asks"]]))
    states = {snap["lastUpdateId"]: top10(ref)}
    for d in diffs:
        if d["u"] >= snap["lastUpdateId"]:
            ref.apply(levels_records(IID, SIDE_BID, d["b"]) + levels_records(IID, SIDE_ASK, d["a"]))
            states[d["u"]] = top10(ref)
            assert not ref.crossed
    return states


def futures_providers(tmp: Path, um_syms=tuple(UM_SYMS.values()), cm_syms=tuple(CM_SYMS.values())) -> str:
    out = ""
    if um_syms:
        out += provider_toml(tmp, "binance_futures", "binance_futures", "BINANCE_FUTURES", "ws://{replay}/fstream/stream",
                             um_syms, CHANNELS, quote_aliases={})
    if cm_syms:
        out += provider_toml(tmp, "binance_delivery", "binance_delivery", "BINANCE_DELIVERY",
                             "ws://{replay}/dstream/stream", cm_syms, CHANNELS)
    return out


@pytest.mark.timeout(180)
def test_usdm_and_coinm_replay_end_to_end(tmp_path, instance, storage_url):
    cfg = tmp_path / "dm.toml"
    cfg.write_text(config_head(tmp_path, instance, storage_url, files(UM) + files(CM), speed=0.0)
                   + futures_providers(tmp_path))
    um_r = ChannelCollector(instance, list(UM_SYMS.values()), exchange="BINANCE_FUTURES").start()
    cm_r = ChannelCollector(instance, list(CM_SYMS.values()), exchange="BINANCE_DELIVERY").start()
    run_supervised(cfg, tmp_path)
    um_r.join(timeout=60)
    cm_r.join(timeout=60)

    totals = defaultdict(int)
    for d, syms, readers, prov, n_snap in ((UM, UM_SYMS, um_r, "binance_futures", 4),
                                            (CM, CM_SYMS, cm_r, "binance_delivery", 10)):
        stats = worker_stats(tmp_path, instance, prov)
        assert stats["dead_letters"] == 0 and stats["value_errors"] == 0
        assert stats["book_gaps"] == 0 and stats["book_crossed"] == 0 and stats["book_snapshots"] == n_snap
        assert set(stats["size_precisions"]) == set(syms.values())
        snaps, frames = session(d)
        by = defaultdict(lambda: defaultdict(list))
        for _no, _f, data in frames:
            by[data["s"]][data["e"]].append(data)
        for venue, sym in syms.items():
            recs = readers.records[sym]
            assert readers.overruns[sym] == 0
            trades = [(r.price, r.size, r.ts_event, r.side, r.trade_id) for r in recs if isinstance(r, Trade)]
            assert trades == [(fx(t["p"]), fx(t["q"]), t["T"] * 10**6, SIDE_ASK if t["m"] else SIDE_BID, t["a"])
                              for t in by[venue]["aggTrade"]], sym
            bbos = [(r.bid_px, r.bid_sz, r.ask_px, r.ask_sz, r.sequence, r.ts_event) for r in recs if isinstance(r, Bbo)]
            assert bbos == [(fx(b["b"]), fx(b["B"]), fx(b["a"]), fx(b["A"]), b["u"], b["T"] * 10**6)
                            for b in by[venue]["bookTicker"]], sym
            states = book_states(snaps[venue], by[venue]["depthUpdate"])
            depths = [r for r in recs if isinstance(r, Depth)]
            assert depths, sym
            for r in depths:                    # every DEPTH: the rebuilt book at its update id
                assert (r.n_bid, r.n_ask, r.levels) == states[r.sequence], (sym, r.sequence)
                assert r.levels[0][0] < r.levels[0][1]          # not crossed
            assert (depths[-1].n_bid, depths[-1].n_ask, depths[-1].levels) == states[max(states)]
            bars = [(r.ts_event, r.open, r.close, r.volume, r.interval_s) for r in recs
                    if isinstance(r, Bar) and not r.flags & BarFlag.BUILT]  # the venue's klines, not dm's live bars
            assert bars == [(k["k"]["t"] * 10**6, fx(k["k"]["o"]), fx(k["k"]["c"]), fx(k["k"]["v"]), 60)
                            for k in by[venue]["kline"] if k["k"]["x"]], sym
            totals["bars"] += len(bars)
            totals[prov + ".trades"] += len(trades)
            totals[prov + ".bbo"] += len(bbos)
            totals[prov + ".depth"] += len(depths)
    assert totals["binance_futures.trades"] == 91 and totals["binance_delivery.trades"] == 51

    st = open_storage(storage_url)
    try:
        assert st.gaps() == []
        counts = st.counts()
        assert counts["trades"] == 91 + 51
        # closed 1m klines (the USD-M session crosses a minute): the venue's bars (source 0); the
        # bars table also holds dm's own, built from the trades (dm.bars)
        assert len(st.fetch("bars")) == totals["bars"] == 4
        assert counts["bbo"] == totals["binance_futures.bbo"] + totals["binance_delivery.bbo"] == 613 + 2240
        assert counts["depth"] == totals["binance_futures.depth"] + totals["binance_delivery.depth"]
        inst = {(ex, sym): (venue, pub) for iid, sym, ex, venue, pub in st.load_instruments()}
        assert inst[("BINANCE_FUTURES", "SUSHIUSDT-USDT-PERP")] == ("SUSHIUSDT", 1004)
        assert inst[("BINANCE_DELIVERY", "BTCUSD-BTC-211231")] == ("BTCUSD_211231", 1005)
    finally:
        st.close()
    assert leftover_segments(instance) == []


@pytest.mark.timeout(120)
def test_coinm_dropped_diff_gap_resync(tmp_path, instance, sqlite_url):
    """Paced (speed 20) so the recorded snapshot is applied before the fault, as on the venue;
    the resync snapshot (the true book at a later update id, built from the clean stream) is
    inserted into the recording, served by GET /dapi/v1/depth after the recorded one."""
    venue, canon = "ETCUSD_PERP", "ETCUSD-ETC-PERP"
    snaps, frames = session(CM)
    snap = snaps[venue]
    l0 = snap["lastUpdateId"]
    diffs = [(no, f, d) for no, f, d in frames if d["e"] == "depthUpdate" and d["s"] == venue]
    live = [x for x in diffs if x[2]["u"] >= l0]
    k = len(live) // 2
    j = k + 15
    ref = RefBook(IID, 0, 0)
    ref.apply(snapshot_records(IID, [tuple(x) for x in snap["bids"]], [tuple(x) for x in snap["asks"]]))
    states = {}
    txt = lambda v: f"{Decimal(v).scaleb(-9).normalize():f}"
    for i, (_no, _f, d) in enumerate(live):
        ref.apply(levels_records(IID, SIDE_BID, d["b"]) + levels_records(IID, SIDE_ASK, d["a"]))
        if i == j:
            l1 = d["u"]
            body = json.dumps({"lastUpdateId": l1, "E": d["E"], "T": d["T"], "symbol": venue, "pair": "ETCUSD",
                               "bids": [[txt(p), txt(q)] for p, q in ref.levels(SIDE_BID)],
                               "asks": [[txt(p), txt(q)] for p, q in ref.levels(SIDE_ASK)]})
        if i >= j:
            states[d["u"]] = top10(ref)
    final = top10(ref)
    ws = live[0][1]
    lines = ws.read_text().split("\n")
    ts = lines[live[j][0] - 1].split(": ", 1)[0]
    rest = f"https://dapi.binance.com/dapi/v1/depth?symbol={venue}&limit=1000 -> {ts}: {body}"
    rec = write_modified_recording(ws, tmp_path / "BINANCE_DELIVERY.ws.1.0", [Drop(live[k][0]), Insert(live[j][0], rest)])
    cfg = tmp_path / "dm.toml"
    cfg.write_text(config_head(tmp_path, instance, sqlite_url,
                               # the recorded snapshot is served first, the inserted one after it
                               [CM / "BINANCE_DELIVERY.http.0.0", rec, CM / "BINANCE_DELIVERY.0"], speed=20.0)
                   + futures_providers(tmp_path, um_syms=(), cm_syms=(canon,)).replace(
                       '"aggTrade", "bookTicker", "depth@100ms", "kline_1m"', '"depth@100ms"'))
    readers = ChannelCollector(instance, [canon], exchange="BINANCE_DELIVERY").start()
    run_supervised(cfg, tmp_path)
    readers.join(timeout=30)

    st = open_storage(sqlite_url)
    try:
        gaps = st.gaps()
    finally:
        st.close()
    assert len(gaps) == 1, gaps
    g = gaps[0]
    assert (g["kind"], g["first_missing"], g["last_missing"]) == (
        "binance_cm.update_id", live[k - 1][2]["u"] + 1, live[k + 1][2]["pu"])
    log = (tmp_path / "supervisor.log").read_text()
    stats = worker_stats(tmp_path, instance, "binance_delivery")
    assert started_pids(log, "binance_delivery") == [stats["pid"]]
    assert stats["book_gaps"] == 1 and stats["book_crossed"] == 0 and stats["dead_letters"] == 0
    depths = [r for r in readers.records[canon] if isinstance(r, Depth)]
    after = [r for r in depths if r.sequence > l1]
    assert after, "no DEPTH after the resync"
    for r in after:
        assert (r.n_bid, r.n_ask, r.levels) == states[r.sequence], r.sequence
    assert (depths[-1].n_bid, depths[-1].n_ask, depths[-1].levels) == final
    assert leftover_segments(instance) == []


@pytest.mark.timeout(120)
def test_binance_us_recording_replays_as_recorded(tmp_path, instance, sqlite_url):
    """A Binance.US session (the spot recording with its hosts as Binance.US names them:
    stream.binance.us, api.binance.us, www.binance.us) replays through the spot kind under
    exchange BINANCE_US: the replay server knows the hosts (websocket, depth snapshots,
    exchangeInfo), the worker syncs every book, 0 gaps."""
    from tests.e2e import B38, B38_SYMBOLS, EXCHANGE_INFO, canonical

    files = []
    for src in (B38, EXCHANGE_INFO):
        dst = tmp_path / f"US-{src.name}"
        dst.write_text(src.read_text().replace("binance.com", "binance.us"))
        assert "binance.com" not in dst.read_text()
        files.append(dst)
    syms = B38_SYMBOLS[:5]
    cfg = tmp_path / "dm.toml"
    cfg.write_text(config_head(tmp_path, instance, sqlite_url, files, speed=0.0)
                   + provider_toml(tmp_path, "binance_us", "binance", "BINANCE_US", "ws://{replay}/stream", syms,
                                   ["aggTrade", "bookTicker", "depth@100ms"]))
    readers = ChannelCollector(instance, syms, exchange="BINANCE_US").start()
    run_supervised(cfg, tmp_path)
    readers.join(timeout=30)
    stats = worker_stats(tmp_path, instance, "binance_us")
    assert stats["dead_letters"] == 0 and stats["book_gaps"] == 0 and stats["book_crossed"] == 0
    assert stats["frames_by_kind"]["depthSnapshot"] == len(syms)
    want = defaultdict(int)
    for line in B38.read_text().split("\n"):
        if line[:1].isdigit() and "@aggTrade" in line[:60]:
            want[canonical(json.loads(line.split(": ", 1)[1])["data"]["s"])] += 1
    for s in syms:
        assert sum(isinstance(r, Trade) for r in readers.records[s]) == want[s], s
        assert any(isinstance(r, Depth) for r in readers.records[s]), s
    st = open_storage(sqlite_url)
    try:
        assert st.gaps() == []
        assert {ex for _iid, _sym, ex, _v, _p in st.load_instruments()} == {"BINANCE_US"}
    finally:
        st.close()
    assert leftover_segments(instance) == []


@pytest.mark.timeout(120)
def test_value_that_does_not_fit_is_dead_lettered_alone(tmp_path, instance, sqlite_url):
    """A bookTicker whose bid price cannot be represented (out of range at 1e-9): the worker
    dead-letters that value alone and publishes the BBO with an empty bid side; every other
    frame and the book are untouched (0 gaps), same worker process."""
    from dm.recording import Replace

    venue, canon = "BCHUSD_PERP", "BCHUSD-BCH-PERP"
    ws = CM / "BINANCE_DELIVERY.ws.1.0"
    lines = ws.read_text().split("\n")
    no = next(i for i, line in enumerate(lines, 1) if '"bchusd_perp@bookTicker"' in line[:80])
    ts, text = lines[no - 1].split(": ", 1)
    d = json.loads(text)["data"]
    bad = text.replace(f'"b":"{d["b"]}"', '"b":"99999999999999999999"')
    assert bad != text
    rec = write_modified_recording(ws, tmp_path / "BINANCE_DELIVERY.ws.1.0", [Replace(no, f"{ts}: {bad}")])
    cfg = tmp_path / "dm.toml"
    cfg.write_text(config_head(tmp_path, instance, sqlite_url,
                               [CM / "BINANCE_DELIVERY.http.0.0", rec, CM / "BINANCE_DELIVERY.0"], speed=0.0)
                   + futures_providers(tmp_path, um_syms=(), cm_syms=(canon,)))
    readers = ChannelCollector(instance, [canon], exchange="BINANCE_DELIVERY").start()
    run_supervised(cfg, tmp_path)
    readers.join(timeout=30)
    stats = worker_stats(tmp_path, instance, "binance_delivery")
    assert stats["value_errors"] == 1 and stats["dead_letters"] == 1 and stats["book_gaps"] == 0
    (dead,) = [json.loads(x) for x in (tmp_path / "deadletter" / "binance_delivery.jsonl").read_text().split("\n") if x]
    assert dead["kind"] == "FixedPointError" and "99999999999999999999" in dead["error"] and dead["frame"] == bad
    snaps, frames = session(CM)
    want = [b for _no, _f, b in frames if b["e"] == "bookTicker" and b["s"] == venue]
    bbos = [r for r in readers.records[canon] if isinstance(r, Bbo)]
    assert len(bbos) == len(want)
    first = bbos[0]
    assert (first.bid_px, first.bid_sz, first.ask_px, first.ask_sz) == (
        (1 << 63) - 1, 0, fx(want[0]["a"]), fx(want[0]["A"]))
    assert [(r.bid_px, r.ask_px) for r in bbos[1:]] == [(fx(b["b"]), fx(b["a"])) for b in want[1:]]
    assert started_pids((tmp_path / "supervisor.log").read_text(), "binance_delivery") == [stats["pid"]]


@pytest.mark.timeout(240)
def test_captured_coinm_session_replays_to_the_same_rows(tmp_path, instance):
    """[capture] on a COIN-M worker: the websocket frames and the REST answers it used (exchangeInfo,
    depth snapshots) are written under the venue's hosts; replaying the capture through a fresh
    service stores the same trades, book deltas and BBOs."""
    from dm.recording import read_file, ws_sessions
    from tests.test_capture import _rows

    syms = ("ETCUSD-ETC-PERP", "XRPUSD-XRP-PERP", "BTCUSD-BTC-211231")
    first, second = tmp_path / "live", tmp_path / "again"
    first.mkdir(), second.mkdir()
    cap_dir = tmp_path / "capture"

    def cfg(tmp, inst, files, capture=None):
        p = tmp / "dm.toml"
        extra = f'[capture]\nenabled = true\ndir = "{capture}"\n' if capture else ""
        p.write_text(config_head(tmp, inst, f"sqlite:///{tmp / 'dm.sqlite'}", files, speed=0.0) + extra
                     + futures_providers(tmp, um_syms=(), cm_syms=syms))
        return p

    run_supervised(cfg(first, instance, files(CM), cap_dir), first)
    captured = sorted((cap_dir / instance / "binance_delivery").glob("*.jsonl.zst"))
    assert captured, list(cap_dir.rglob("*"))
    events = [e for f in captured for e in read_file(f)]
    rest = [e.url for e in events if e.kind == "rest"]
    assert any("/dapi/v1/exchangeInfo" in u for u in rest) and sum("/dapi/v1/depth" in u for u in rest) == len(syms)
    sessions = ws_sessions(events)
    assert [s.venue for s in sessions] == ["binance_delivery"]
    assert len(sessions[0].frames) == worker_stats(first, instance, "binance_delivery")["frames"]

    run_supervised(cfg(second, instance + "b", captured), second)
    a, b = _rows(f"sqlite:///{first / 'dm.sqlite'}"), _rows(f"sqlite:///{second / 'dm.sqlite'}")
    assert a["trades"] and a["book_deltas"] and a["bbo"]
    assert a == b
    assert worker_stats(second, instance + "b", "binance_delivery")["book_gaps"] == 0
