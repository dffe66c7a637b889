"""Book fault injection through real workers: `dm supervise` replays a modified copy of a real
recording (``dm.recording.write_modified_recording``) or a real network fault (a TCP proxy in
front of the replay server); each fault must give exactly one gap in the ledger, a resync, a
correct book afterwards (DEPTH records equal a pure-Python book rebuilt from the unmodified
frames after the resync), and the worker must survive it (same pid, no restart).

What the venue would send on a resync is part of the modified recording, because the replay
server sends each recorded frame once per connection: Binance — a second REST depth snapshot
(the book's true state at a later update id) that ``GET /api/v3/depth`` serves after the
recorded one; Kraken / Kraken Futures — the snapshot a resubscription brings, inserted a few
recorded seconds after the fault (at speed 20 / 10 that leaves the worker 100+ ms to
resubscribe, and the frames it misses meanwhile are ones it must drop anyway)."""
from __future__ import annotations

from decimal import Decimal

import orjson
import pytest

from dm.recording import Drop, Insert, Replace, Swap, write_modified_recording
from dm.records import SIDE_ASK, SIDE_BID, Depth
from dm.storage import open_storage
from tests.book_ref import RefBook, delta, levels_records, snapshot_records
from tests.e2e import (B38, EXCHANGE_INFO, KF_INSTRUMENTS, KF_WS, KRAKEN_ASSET_PAIRS, KRAKEN_BOOK,
                       ChannelCollector, CuttingProxy, config_head, depth_levels, free_port, fx, kraken_futures_provider, to9,
                       kraken_provider, leftover_segments, provider_toml, run_supervised, started_pids,
                       worker_stats)

IID = 1


def dec(v: int, places: int | None = None) -> str:
    """Fixed point 1e-9 → decimal text (``places`` digits after the point, else as few as exact)."""
    d = Decimal(v).scaleb(-9)
    if places is not None:
        return f"{d:.{places}f}"
    s = f"{d.normalize():f}"
    return s


def top10(ref: RefBook) -> tuple:
    bids, asks = ref.levels(SIDE_BID, 10), ref.levels(SIDE_ASK, 10)
    return len(bids), len(asks), depth_levels(bids, asks)


def depth_of(r: Depth) -> tuple:
    """(n_bid, n_ask, levels) with sizes brought from the record's size_precision to the
    reference books' 1e-9 (exact)."""
    sp = r.size_precision
    return r.n_bid, r.n_ask, tuple((bp, ap, to9(bs, sp), to9(as_, sp)) for bp, ap, bs, as_ in r.levels)


def check_worker_survived(tmp_path, instance, provider) -> dict:
    log = (tmp_path / "supervisor.log").read_text()
    pids = started_pids(log, provider)
    stats = worker_stats(tmp_path, instance, provider)
    assert pids == [stats["pid"]], pids
    assert "child exited, restarting" not in log
    return stats


def ledger(url: str) -> list[dict]:
    st = open_storage(url)
    try:
        return st.gaps()
    finally:
        st.close()


def lines_of(path) -> list[str]:
    return path.read_text().split("\n")


# --------------------------------------------------------------------------- Binance


BN_SYMBOL, BN_CANON = "ZILUSDT", "ZILUSD"


def binance_session():
    """(snapshot (line, lastUpdateId, bids, asks), diffs [(line, U, u, bids, asks)]) of BN_SYMBOL."""
    snap, diffs = None, []
    stream = f'"{BN_SYMBOL.lower()}@depth'
    for no, line in enumerate(lines_of(B38), 1):
        if line.startswith("http") and f"symbol={BN_SYMBOL}&" in line:
            body = orjson.loads(line.split(" -> ", 1)[1].split(": ", 1)[1])
            snap = (no, body["lastUpdateId"], body["bids"], body["asks"])
        elif stream in line[:80]:
            d = orjson.loads(line.split(": ", 1)[1])["data"]
            diffs.append((no, d["U"], d["u"], d["b"], d["a"]))
    return snap, diffs


def bn_apply(ref: RefBook, diff) -> None:
    _no, _U, u, b, a = diff
    ref.apply(levels_records(IID, SIDE_BID, b, sequence=u) + levels_records(IID, SIDE_ASK, a, sequence=u))


@pytest.mark.timeout(120)
@pytest.mark.parametrize("fault,speed", [("dropped", 20.0), ("reordered", 20.0), ("dropped", 0.0)])
def test_binance_diff_fault_gap_resync(tmp_path, instance, sqlite_url, fault, speed):
    """Paced (speed 20) so the first REST snapshot is applied before the fault arrives, as on
    the venue. At speed 0 the whole stream, fault included, is buffered before the first
    snapshot lands: that snapshot is then older than the diffs kept after the hole, and the
    worker must fetch another from inside the snapshot task (the stale-snapshot rule)."""
    snap, diffs = binance_session()
    s_no, l0, s_bids, s_asks = snap
    live = [d for d in diffs if d[2] > l0]
    k = len(live) // 2                      # the faulty diff, well after the first sync
    j = k + 15                              # the resync snapshot's update id: live[j].u
    ref = RefBook(IID, 0, 0)
    ref.apply(snapshot_records(IID, [tuple(x) for x in s_bids], [tuple(x) for x in s_asks]))
    states = {}
    for i, d in enumerate(live):
        bn_apply(ref, d)
        if i == j:
            l1 = d[2]
            body = orjson.dumps({"lastUpdateId": l1, "bids": [[dec(p, 8), dec(q, 8)] for p, q in ref.levels(SIDE_BID)],
                                 "asks": [[dec(p, 8), dec(q, 8)] for p, q in ref.levels(SIDE_ASK)]}).decode()
        if i >= j:
            states[d[2]] = top10(ref)
    final = top10(ref)
    ts = lines_of(B38)[live[j][0] - 1].split(": ", 1)[0]
    rest = f"https://www.binance.com/api/v1/depth?symbol={BN_SYMBOL}&limit=1000 -> {ts}: {body}"
    edits = [Drop(live[k][0])] if fault == "dropped" else [Swap(live[k][0], live[k + 1][0])]
    edits.append(Insert(live[j][0], rest))  # served by GET /api/v3/depth after the recorded one
    rec = write_modified_recording(B38, tmp_path / "BINANCE-fault.0", edits)

    cfg = tmp_path / "dm.toml"
    cfg.write_text(config_head(tmp_path, instance, sqlite_url, (rec, EXCHANGE_INFO), speed=speed)
                   + provider_toml(tmp_path, "binance", "binance", "BINANCE", "ws://{replay}/stream", [BN_CANON],
                                   ["depth@100ms"]))
    readers = ChannelCollector(instance, [BN_CANON], exchange="BINANCE").start()
    run_supervised(cfg, tmp_path)
    readers.join(timeout=30)

    gaps = ledger(sqlite_url)
    assert len(gaps) == 1, gaps
    g = gaps[0]
    # missing: exactly the faulty diff's update ids
    assert (g["kind"], g["first_missing"], g["last_missing"]) == ("binance.update_id", live[k][1], live[k][2])
    stats = check_worker_survived(tmp_path, instance, "binance")
    assert stats["book_gaps"] == 1 and stats["book_crossed"] == 0 and stats["dead_letters"] == 0
    depths = [r for r in readers.records[BN_CANON] if isinstance(r, Depth)]
    after = [r for r in depths if r.sequence > l1]
    assert after, "no DEPTH after the resync"
    for r in after:                         # the book after the resync, update by update
        assert depth_of(r) == states[r.sequence], r.sequence
    assert depth_of(depths[-1]) == final
    assert leftover_segments(instance) == []


# --------------------------------------------------------------------------- Kraken spot v1


KR_PAIR, KR_CANON = "XBT/USD", "BTCUSD"
KR_PRICE_DP, KR_SIZE_DP = 5, 8  # XBT/USD on the wire


def kraken_session():
    """[(line, ts_text, kind, asks, bids, checksum)] of KR_PAIR's book frames."""
    out = []
    for no, line in enumerate(lines_of(KRAKEN_BOOK), 1):
        if not line[:1].isdigit() or f'"book-1000","{KR_PAIR}"]' not in line[-40:]:
            continue
        ts, text = line.split(": ", 1)
        msg = orjson.loads(text)
        pay = msg[1:-2]
        if "as" in pay[0] or "bs" in pay[0]:
            out.append((no, ts, "snapshot", pay[0].get("as", []), pay[0].get("bs", []), None))
        else:
            asks = [x for p in pay for x in p.get("a", [])]
            bids = [x for p in pay for x in p.get("b", [])]
            out.append((no, ts, "update", asks, bids, next(int(p["c"]) for p in pay if "c" in p)))
    return out


def kr_apply(ref: RefBook, ev) -> None:
    _no, _ts, kind, asks, bids, _c = ev
    if kind == "snapshot":
        ref.apply(snapshot_records(IID, [(x[0], x[1]) for x in bids], [(x[0], x[1]) for x in asks]))
    else:
        ref.apply(levels_records(IID, SIDE_ASK, [(x[0], x[1]) for x in asks])
                  + levels_records(IID, SIDE_BID, [(x[0], x[1]) for x in bids]))


def kraken_snapshot_frame(ref: RefBook, ts: str) -> str:
    lv = lambda side: [[dec(p, KR_PRICE_DP), dec(q, KR_SIZE_DP), ts] for p, q in ref.levels(side)]
    return orjson.dumps([320, {"as": lv(SIDE_ASK), "bs": lv(SIDE_BID)}, "book-1000", KR_PAIR]).decode()


def expected_tail(events, apply) -> tuple[list, tuple]:
    """DEPTH states a worker publishes from ``events`` (first = a snapshot), and the final one."""
    ref = RefBook(IID, 0, 1000)
    out = []
    for ev in events:
        before = top10(ref)
        apply(ref, ev)
        now = top10(ref)
        if now != before:
            out.append(now)
    return out, top10(ref)


@pytest.mark.timeout(120)
def test_kraken_corrupted_checksum_gap_resubscribe(tmp_path, instance, sqlite_url):
    evs = kraken_session()
    updates = [i for i, e in enumerate(evs) if e[2] == "update"]
    k = updates[len(updates) // 3]
    ts_k = float(evs[k][1])
    j = next(i for i in range(k + 1, len(evs)) if float(evs[i][1]) >= ts_k + 3.0)
    ref = RefBook(IID, 0, 1000)
    for ev in evs[:j]:
        kr_apply(ref, ev)
    snap_text = kraken_snapshot_frame(ref, evs[j][1])
    no_k = evs[k][0]
    bad_line = lines_of(KRAKEN_BOOK)[no_k - 1].replace(f'"c":"{evs[k][5]}"', f'"c":"{(evs[k][5] + 1) % 2**32}"')
    assert bad_line != lines_of(KRAKEN_BOOK)[no_k - 1]
    rec = write_modified_recording(KRAKEN_BOOK, tmp_path / "KRAKEN-fault.0",
                                   [Replace(no_k, bad_line), Insert(evs[j][0], f"{evs[j][1]}: {snap_text}")])
    snap_ev = (0, evs[j][1], "snapshot", orjson.loads(snap_text)[1]["as"], orjson.loads(snap_text)[1]["bs"], None)
    tail, final = expected_tail([snap_ev] + evs[j:], kr_apply)

    cfg = tmp_path / "dm.toml"
    cfg.write_text(config_head(tmp_path, instance, sqlite_url, (rec, KRAKEN_ASSET_PAIRS), speed=20.0)
                   + kraken_provider(tmp_path, [KR_CANON], ["book"]))
    readers = ChannelCollector(instance, [KR_CANON], exchange="KRAKEN").start()
    run_supervised(cfg, tmp_path)
    readers.join(timeout=30)

    gaps = ledger(sqlite_url)
    assert len(gaps) == 1 and gaps[0]["kind"] == "kraken.checksum", gaps
    # the ns window of the suspect data: from the last update applied good (in C, folded in before
    # the gap is recorded) to the failing one, at 20x speed well under a second apart
    assert 0 < gaps[0]["last_missing"] - gaps[0]["first_missing"] < 1_000_000_000, gaps
    stats = check_worker_survived(tmp_path, instance, "kraken")
    assert stats["checksum_failures"] == 1 and stats["book_resubscribes"] == 1 and stats["book_snapshots"] == 2
    assert stats["connects"] == 1 and stats["book_crossed"] == 0
    depths = [depth_of(r) for r in readers.records[KR_CANON] if isinstance(r, Depth)]
    # after the resubscription's snapshot, every DEPTH is the true book's top 10, checksums hold
    assert depths[-len(tail):] == tail
    assert depths[-1] == final
    assert leftover_segments(instance) == []


# --------------------------------------------------------------------------- Kraken Futures v1


KF_PRODUCT, KF_CANON = "PI_ETHUSD", "ETHUSD-ETH-PERP"


def kf_session():
    """[(line, ts_text, kind, seq, payload)] of KF_PRODUCT's book frames (numbers as text)."""
    import json

    out = []
    for no, line in enumerate(lines_of(KF_WS), 1):
        if not line[:1].isdigit() or f'"product_id":"{KF_PRODUCT}"' not in line:
            continue
        ts, text = line.split(": ", 1)
        msg = json.loads(text, parse_float=str)
        if msg.get("feed") in ("book", "book_snapshot"):
            out.append((no, ts, msg["feed"], msg["seq"], msg))
    return out


def kf_apply(ref: RefBook, ev) -> None:
    msg = ev[4]
    if ev[2] == "book_snapshot":
        ref.apply(snapshot_records(IID, [(str(x["price"]), str(x["qty"])) for x in msg["bids"]],
                                   [(str(x["price"]), str(x["qty"])) for x in msg["asks"]]))
    else:
        ref.apply(delta(IID, SIDE_BID if msg["side"] == "buy" else SIDE_ASK, fx(str(msg["price"])), fx(str(msg["qty"]))))


@pytest.mark.timeout(120)
def test_kraken_futures_dropped_delta_gap_resubscribe(tmp_path, instance, sqlite_url):
    evs = kf_session()
    deltas = [i for i, e in enumerate(evs) if e[2] == "book"]
    k = deltas[len(deltas) // 3]
    ts_k = float(evs[k][1])
    j = next(i for i in range(k + 1, len(evs)) if float(evs[i][1]) >= ts_k + 2.0)
    ref = RefBook(IID, 0, 0)
    states = {}
    for i, ev in enumerate(evs):
        kf_apply(ref, ev)
        if i == j - 1:
            snap_seq = ev[3]
            lv = lambda side: ",".join(f'{{"price":{dec(p)},"qty":{dec(q)}}}' for p, q in ref.levels(side))
            snap_text = (f'{{"feed":"book_snapshot","product_id":"{KF_PRODUCT}","timestamp":{int(ts_k * 1000)},'
                         f'"seq":{snap_seq},"tickSize":null,"bids":[{lv(SIDE_BID)}],"asks":[{lv(SIDE_ASK)}]}}')
        if i >= j - 1:
            states[ev[3]] = top10(ref)
    final = top10(ref)
    rec = write_modified_recording(KF_WS, tmp_path / "KRAKEN_FUTURES-fault.ws.1.0",
                                   [Drop(evs[k][0]), Insert(evs[j][0], f"{evs[j][1]}: {snap_text}")])

    cfg = tmp_path / "dm.toml"
    cfg.write_text(config_head(tmp_path, instance, sqlite_url, (rec, KF_INSTRUMENTS), speed=10.0)
                   + kraken_futures_provider(tmp_path, [KF_CANON]))
    readers = ChannelCollector(instance, [KF_CANON], exchange="KRAKEN_FUTURES").start()
    run_supervised(cfg, tmp_path)
    readers.join(timeout=30)

    gaps = ledger(sqlite_url)
    assert len(gaps) == 1, gaps
    assert (gaps[0]["kind"], gaps[0]["first_missing"], gaps[0]["last_missing"]) == ("kraken_futures.seq", evs[k][3], evs[k][3])
    stats = check_worker_survived(tmp_path, instance, "kraken_futures")
    assert stats["book_seq_gaps"] == 1 and stats["book_resubscribes"] == 1 and stats["book_snapshots"] == 2
    assert stats["connects"] == 1 and stats["book_crossed"] == 0
    depths = [r for r in readers.records[KF_CANON] if isinstance(r, Depth)]
    after = [r for r in depths if r.sequence >= snap_seq]
    assert after and after[0].sequence == snap_seq          # the resubscription's snapshot
    for r in after:
        assert depth_of(r) == states[r.sequence], r.sequence
    assert depth_of(depths[-1]) == final
    assert leftover_segments(instance) == []


# --------------------------------------------------------------------------- network faults


@pytest.mark.timeout(120)
@pytest.mark.parametrize("mode, transport", [("cut", "aiohttp"), ("freeze", "aiohttp"), ("cut", "picows"), ("freeze", "picows")])
def test_kraken_websocket_lost_mid_stream_reconnects(tmp_path, instance, sqlite_url, mode, transport):
    """"cut": the TCP connection dies mid-stream; "freeze": the peer goes silent with the socket
    open (only the worker's watchdog can tell). Either way the worker reconnects, resubscribes,
    rebuilds the book from the new snapshot; the ledger holds one "reconnect" gap.
    The freeze runs paced (speed 20): at speed 0 the replay server would hand the whole session
    to its socket buffers before the freeze and count that connection as replayed."""
    evs = kraken_session()
    tail, final = expected_tail(evs, kr_apply)   # the replay starts the session over
    replay_port = free_port()
    speed = 0.0 if mode == "cut" else 20.0
    proxy = CuttingProxy(replay_port, after_bytes=400_000 if mode == "cut" else 150_000, mode=mode).start()
    try:
        cfg = tmp_path / "dm.toml"
        cfg.write_text(config_head(tmp_path, instance, sqlite_url, (KRAKEN_BOOK, KRAKEN_ASSET_PAIRS), speed=speed,
                                   replay_port=replay_port)
                       + kraken_provider(tmp_path, [KR_CANON], ["book"], ws_url=f"ws://127.0.0.1:{proxy.port}/",
                                         stale_after_s=0.5, transport=transport))
        readers = ChannelCollector(instance, [KR_CANON], exchange="KRAKEN").start()
        run_supervised(cfg, tmp_path)
        readers.join(timeout=30)
    finally:
        proxy.stop()
    assert proxy.faulted.is_set() and proxy.connections == 2
    gaps = ledger(sqlite_url)
    assert len(gaps) == 1 and gaps[0]["kind"] == "reconnect", gaps
    assert gaps[0]["first_missing"] < gaps[0]["last_missing"]   # the disconnected window, ns
    stats = check_worker_survived(tmp_path, instance, "kraken")
    assert stats["connects"] == 2 and stats["book_snapshots"] == 2
    assert stats["stale_disconnects"] == (1 if mode == "freeze" else 0)
    assert stats["checksum_failures"] == 0 and stats["book_crossed"] == 0
    depths = [depth_of(r) for r in readers.records[KR_CANON] if isinstance(r, Depth)]
    assert depths[-len(tail):] == tail and depths[-1] == final
    assert leftover_segments(instance) == []
