"""OKX v5 end to end: `dm supervise` replays the real recording (data/okx/2022-02-27: books-l2-tbt
with CRC32 checksums, trades, tickers; REST instruments of every instrument type) through the
replay server to a real worker process on loopback; dm.client readers collect every channel
record; the persister stores them (SQLite and PostgreSQL). Every DEPTH is checked against a book
rebuilt in pure Python (tests/book_ref.py) from the same recorded frames, trades and ticker BBOs
against the recording parsed with json (numbers from their text, never through float); every
book checksum verifies in the worker, 0 gaps, books never crossed."""
from __future__ import annotations

import json
from collections import defaultdict
from decimal import Decimal
from pathlib import Path

import pytest

from dm.recording import read_recording
from dm.records import SIDE_ASK, SIDE_BID, UNDEF_PRICE, Bbo, Depth, Trade
from dm.storage import open_storage
from tests.book_ref import MASK_TOP10, RefBook, delta, snapshot_records
from tests.e2e import (ChannelCollector, config_head, depth_levels, leftover_segments, provider_toml, run_supervised,
                       worker_stats)

ROOT = Path(__file__).resolve().parent.parent
REC_DIR = ROOT / "data/okx/2022-02-27"
IID = 1
#: instId -> canonical; ELON-USDT is left out (tickSz 1e-11: its prices do not fit 1e-9)
SYMS = {"PROPS-ETH": "PROPSETH", "ZEN-USDT": "ZENUSDT", "UNI-USD-SWAP": "UNIUSD-UNI-PERP",
        "BTC-USD-220325-40000-C": "BTCUSD-BTC-220325-40000-C", "ETH-USD-220228-3000-C": "ETHUSD-ETH-220228-3000-C",
        "ETH-USD-220325-8800-P": "ETHUSD-ETH-220325-8800-P", "ETH-USD-220429-1900-P": "ETHUSD-ETH-220429-1900-P",
        "ETH-USD-220624-12000-P": "ETHUSD-ETH-220624-12000-P", "ETH-USD-220624-20000-C": "ETHUSD-ETH-220624-20000-C"}


def fx(text: str) -> int:
    d = Decimal(text).scaleb(9)
    assert d == d.to_integral_value()
    return int(d)


def okx_provider(tmp: Path, symbols, channels=("books-l2-tbt", "trades", "tickers"), **extra) -> str:
    return provider_toml(tmp, "okx", "okx", "OKX", "ws://{replay}/ws/v5/public", symbols, channels,
                         quote_aliases={}, **extra)


def recorded() -> list[dict]:
    return [json.loads(e.text) for e in read_recording(REC_DIR) if e.kind == "frame"]


def expected(frames):
    """canonical -> DEPTH stream [(seq, n_bid, n_ask, levels)], trades, ticker BBOs."""
    refs, depth = {}, defaultdict(list)
    trades, bbos = defaultdict(list), defaultdict(list)
    for d in frames:
        if "event" in d or d["arg"]["instId"] not in SYMS:
            continue
        sym = SYMS[d["arg"]["instId"]]
        ch = d["arg"]["channel"]
        for item in d["data"]:
            if ch == "books-l2-tbt":
                bids = [(p, q) for p, q, *_ in item["bids"]]
                asks = [(p, q) for p, q, *_ in item["asks"]]
                ref = refs.setdefault(sym, RefBook(IID, 0, 0))
                if d["action"] == "snapshot":
                    m = ref.apply(snapshot_records(IID, bids, asks))
                else:
                    recs = (b"".join(delta(IID, SIDE_BID, fx(p), fx(q)) for p, q in bids)
                            + b"".join(delta(IID, SIDE_ASK, fx(p), fx(q)) for p, q in asks))
                    m = ref.apply(recs) if recs else 0
                assert not ref.crossed
                if m & MASK_TOP10:
                    b, a = ref.levels(SIDE_BID, 10), ref.levels(SIDE_ASK, 10)
                    depth[sym].append((0, len(b), len(a), depth_levels(b, a)))
            elif ch == "trades":
                trades[sym].append((fx(item["px"]), fx(item["sz"]), int(item["ts"]) * 10**6,
                                    SIDE_BID if item["side"] == "buy" else SIDE_ASK, int(item["tradeId"])))
            else:
                side = lambda p, s: (UNDEF_PRICE, 0) if item[p] == "" else (fx(item[p]), fx(item[s]))
                bbos[sym].append(side("bidPx", "bidSz") + side("askPx", "askSz"))
    return depth, trades, bbos


@pytest.mark.timeout(180)
@pytest.mark.parametrize("storage_url,transport", [("sqlite", "aiohttp"), ("postgres", "aiohttp"), ("sqlite", "picows")],
                         indirect=["storage_url"])
def test_okx_replay_end_to_end(tmp_path, instance, storage_url, transport):
    symbols = list(SYMS.values())
    cfg = tmp_path / "dm.toml"
    cfg.write_text(config_head(tmp_path, instance, storage_url, [REC_DIR], speed=0.0)
                   + okx_provider(tmp_path, symbols, transport=transport))
    readers = ChannelCollector(instance, symbols, exchange="OKX").start()
    run_supervised(cfg, tmp_path)
    readers.join(timeout=60)

    depth, trades, bbos = expected(recorded())
    stats = worker_stats(tmp_path, instance, "okx")
    assert stats["book_frames_in_c"] == (2048 if transport == "picows" else 0)   # the C frame path: picows only
    assert stats["dead_letters"] == 0 and stats["error_frames"] == 0 and stats["value_errors"] == 0
    assert stats["book_gaps"] == 0 and stats["book_crossed"] == 0
    assert stats["book_snapshots"] == 18 and stats["book_updates_applied"] == 3659 - 1600
    assert stats["checksums_ok"] == 18 + 3659 - 1600          # every book frame of these 9 verified
    assert stats["subscription_acks"] == 27 and stats["connects"] == 1
    assert stats["size_precisions"]["ZENUSDT"] == 6 and stats["size_precisions"]["UNIUSD-UNI-PERP"] == 0
    n_depth = n_bbo = n_trades = 0
    for sym in symbols:
        recs = readers.records[sym]
        assert readers.overruns[sym] == 0
        got = [(r.sequence, r.n_bid, r.n_ask, r.levels) for r in recs if isinstance(r, Depth)]
        assert got == depth[sym], sym
        got_b = [(r.bid_px, r.bid_sz, r.ask_px, r.ask_sz) for r in recs if isinstance(r, Bbo)]
        assert got_b == bbos[sym], sym                       # tickers: the BBO source
        got_t = [(r.price, r.size, r.ts_event, r.side, r.trade_id) for r in recs if isinstance(r, Trade)]
        assert got_t == trades[sym], sym
        n_depth, n_bbo, n_trades = n_depth + len(got), n_bbo + len(got_b), n_trades + len(got_t)
    assert n_trades == 16 and n_bbo == 16

    st = open_storage(storage_url)
    try:
        assert st.gaps() == []
        counts = st.counts()
        assert counts["trades"] == n_trades and counts["depth"] == n_depth and counts["bbo"] == n_bbo
        inst = {sym: venue for iid, sym, ex, venue, pub in st.load_instruments() if ex == "OKX"}
        assert inst == {c: v for v, c in SYMS.items()}
    finally:
        st.close()
    assert leftover_segments(instance) == []


def _string_snapshot(bids: dict, asks: dict, ts: str, inst: str) -> tuple[str, list]:
    """A books-l2-tbt snapshot frame of a string book (as OKX would send it on resubscribe) and
    its checksum (OKX "Checksum": CRC32 over the interleaved top 25, signed 32-bit)."""
    import zlib
    b = sorted(bids.items(), key=lambda kv: -Decimal(kv[0]))
    a = sorted(asks.items(), key=lambda kv: Decimal(kv[0]))
    parts = []
    for i in range(min(25, max(len(b), len(a)))):
        if i < len(b):
            parts += b[i]
        if i < len(a):
            parts += a[i]
    cs = zlib.crc32(":".join(parts).encode())
    cs = cs - (1 << 32) if cs >= 1 << 31 else cs
    msg = {"arg": {"channel": "books-l2-tbt", "instId": inst}, "action": "snapshot",
           "data": [{"asks": [[p, s, "0", "1"] for p, s in a], "bids": [[p, s, "0", "1"] for p, s in b],
                     "ts": ts, "checksum": cs}]}
    return json.dumps(msg, separators=(",", ":")), (b, a)


@pytest.mark.timeout(180)
def test_okx_dropped_update_one_checksum_gap_resubscribe(tmp_path, instance, sqlite_url):
    """A UNI-USD-SWAP update is dropped from the recording: the next update's checksum fails →
    exactly one gap (okx.checksum) and one resubscription; what OKX sends on it (the true book as
    a snapshot) is inserted 2 recorded seconds later; from it on every DEPTH equals the true
    book and every checksum verifies again. A corrupted ZEN-USDT trades frame is dead-lettered
    and costs nothing else, a trade whose price has 10 decimals is rejected alone (dead-lettered
    with its text); the worker process never changes."""
    import shutil

    from dm.recording import Corrupt, Drop, Insert, Replace, write_modified_recording
    from dm.venues.okx._codec import OkxCodec
    from dm.venues.okx.booksync import OkxBookSync
    from tests.e2e import started_pids

    ws_file = REC_DIR / "OKX.ws.1.0"
    lines = ws_file.read_text().split("\n")
    inst = "UNI-USD-SWAP"

    def book_events(name):
        out = []          # (line no, recorder ts, msg) of the instrument's book frames
        for no, line in enumerate(lines, 1):
            if line[:1].isdigit():
                ts, _, text = line.partition(": ")
                if f'"instId":"{name}"}},"action"' in text:
                    out.append((no, float(ts), json.loads(text)))
        return out

    def detectable(evs, start, stop):
        """The first update in evs[start:stop] whose loss the next frame's checksum shows."""
        c = OkxCodec(1006)
        c.add_symbol(evs[0][2]["arg"]["instId"], 1, 9)
        base = max(i for i in range(start + 1) if evs[i][2]["action"] == "snapshot")
        for cand in range(start, stop):
            sync = OkxBookSync(1, 1006, 9)
            for i in list(range(base, cand)) + [cand + 1]:
                c.decode(json.dumps(evs[i][2]), 1)
                fn = sync.on_snapshot if evs[i][2]["action"] == "snapshot" else sync.on_update
                act = fn(bytes(c.output()), c.checksum)
            if act.gap is not None and evs[cand + 1][2]["action"] == "update":
                return cand
        raise AssertionError("no detectable update")

    evs = book_events(inst)
    second = [i for i, e in enumerate(evs) if e[2]["action"] == "snapshot"][1]
    k = detectable(evs, max(second + 1, len(evs) // 2), len(evs) - 1)
    zen_trades = [no for no, line in enumerate(lines, 1) if '{"channel":"trades","instId":"ZEN-USDT"},"data"' in line]
    corrupt_line = zen_trades[0]
    # a price with 10 decimals: that value (the trade) alone is rejected and dead-lettered
    ts_, _, text = lines[zen_trades[1] - 1].partition(": ")
    bad_trade = json.loads(text)
    bad_trade["data"][0]["px"] = "32.5100000001"
    bad_line = f"{ts_}: {json.dumps(bad_trade, separators=(',', ':'))}"
    j = next(i for i in range(k + 1, len(evs)) if evs[i][1] >= evs[k][1] + 2.0)
    bids, asks, states = {}, {}, []
    for i, (_, _, msg) in enumerate(evs):
        if msg["action"] == "snapshot":
            bids, asks = {}, {}
        for side, key in ((bids, "bids"), (asks, "asks")):
            for p, s, *_ in msg["data"][0][key]:
                if s == "0":
                    side.pop(p, None)
                else:
                    side[p] = s
        if i == j - 1:
            snap_text, _ = _string_snapshot(bids, asks, msg["data"][0]["ts"], inst)
        if i >= j - 1:
            b = sorted(((fx(p), fx(s)) for p, s in bids.items()), reverse=True)[:10]
            a = sorted((fx(p), fx(s)) for p, s in asks.items())[:10]
            states.append((len(b), len(a), depth_levels(b, a)))
    ins = f"{evs[j][1]}: {snap_text}"
    work = tmp_path / "rec"
    work.mkdir()
    shutil.copy(REC_DIR / "OKX.0", work / "OKX.0")
    write_modified_recording(ws_file, work / "OKX.ws.1.0", [Drop(evs[k][0]), Insert(evs[j][0], ins),
                                                             Corrupt(corrupt_line), Replace(zen_trades[1], bad_line)])
    symbols = ["UNIUSD-UNI-PERP", "ZENUSDT"]
    cfg = tmp_path / "dm.toml"
    cfg.write_text(config_head(tmp_path, instance, sqlite_url, [work], speed=10.0)
                   + okx_provider(tmp_path, symbols, channels=("books-l2-tbt", "trades")))
    readers = ChannelCollector(instance, symbols, exchange="OKX").start()
    run_supervised(cfg, tmp_path)
    readers.join(timeout=60)

    st = open_storage(sqlite_url)
    try:
        gaps = st.gaps()
        iids = {sym: iid for iid, sym, ex, venue, pub in st.load_instruments()}
    finally:
        st.close()
    assert [(g["kind"], g["instrument_id"]) for g in gaps] == [("okx.checksum", iids["UNIUSD-UNI-PERP"])]
    assert gaps[0]["first_missing"] <= gaps[0]["last_missing"]     # the ns window of the loss
    log = (tmp_path / "supervisor.log").read_text()
    stats = worker_stats(tmp_path, instance, "okx")
    assert started_pids(log, "okx") == [stats["pid"]] and "child exited, restarting" not in log
    assert stats["book_gaps"] == 1 and stats["book_resubscribes"] == 1 and stats["book_crossed"] == 0
    assert stats["book_snapshots"] == 2 + 2 + 1 and stats["dead_letters"] == 2 and stats["value_errors"] == 1
    dead = [json.loads(x) for x in (tmp_path / "deadletter" / "okx.jsonl").read_text().splitlines()]
    assert sorted(d["kind"] for d in dead) == ["CodecError", "FixedPointError"]
    assert '"32.5100000001"' in next(d["error"] for d in dead if d["kind"] == "FixedPointError")
    zen_trades_got = [r for r in readers.records["ZENUSDT"] if isinstance(r, Trade)]
    assert len(zen_trades_got) == 11 - 2                        # the corrupted frame and the rejected trade
    depths = [(r.n_bid, r.n_ask, r.levels) for r in readers.records["UNIUSD-UNI-PERP"] if isinstance(r, Depth)]
    # from the inserted snapshot on, the published books are the true ones (a DEPTH whenever the
    # top 10 changed), ending on the final book; nothing was published while out of sync
    want = [st_ for i, st_ in enumerate(states) if i == 0 or st_ != states[i - 1]]
    assert len(want) > 20 and depths[-len(want):] == want
    assert leftover_segments(instance) == []


@pytest.mark.timeout(180)
def test_okx_runtime_subscribe_without_reconnect(tmp_path, instance):
    """dm.control: UNI-USD-SWAP subscribed at runtime on the open OKX connection (subscribe op;
    the replay server catches the new channel up from its snapshot): its book syncs and
    publishes, the worker never reconnects; UNSUBSCRIBE answers ok."""
    import signal
    import subprocess

    from dm.client import Client
    from dm.control import request
    from tests.e2e import start_supervisor
    from tests.test_control import _wait

    cfg = tmp_path / "dm.toml"
    cfg.write_text(config_head(tmp_path, instance, f"sqlite:///{tmp_path / 'dm.sqlite'}", [REC_DIR], speed=1.0, once=False)
                   + okx_provider(tmp_path, ["ZENUSDT"]))
    sup = start_supervisor(cfg, tmp_path / "supervisor.log")
    run_dir = tmp_path / "run" / instance
    try:
        _wait(lambda: (run_dir / "okx.ctl.sock").exists() and (run_dir / "okx.stats.json").exists()
              and worker_stats(tmp_path, instance, "okx")["connected"], 60, "worker connected")
        client = Client(instance=instance, registry=f"/dm.reg.{instance}", control=str(run_dir / "control.sock"))
        sub = client.subscribe("UNIUSD-UNI-PERP", "OKX", request=True, start="oldest", wait=10, follow=False)
        got = []
        _wait(lambda: (r := sub.read()) is not None and got.append(r) is None
              and sum(isinstance(x, Depth) for x in got) >= 3, 30, "UNI DEPTH records")
        assert {r.instrument_id for r in got} == {sub.instrument_id}
        stats = worker_stats(tmp_path, instance, "okx")
        assert stats["connects"] == 1 and stats["subscription_errors"] == 0
        assert request(run_dir / "control.sock", "UNSUBSCRIBE UNIUSD-UNI-PERP@OKX")["ok"]
        client.close()
    finally:
        sup.send_signal(signal.SIGTERM)
        try:
            sup.wait(30)
        except subprocess.TimeoutExpired:
            sup.kill()


@pytest.mark.timeout(240)
def test_okx_captured_session_replays_to_the_same_rows(tmp_path, instance):
    """[capture]: the OKX session through a real worker is captured (frames, subscribe messages,
    every instruments answer) under the venue's host; replaying the capture through a fresh
    service stores the same trade, book delta and BBO rows."""
    from dm.recording import read_file, ws_sessions
    from tests.test_capture import _rows

    symbols = ["ZENUSDT", "UNIUSD-UNI-PERP", "BTCUSD-BTC-220325-40000-C"]
    first, second = tmp_path / "live", tmp_path / "again"
    first.mkdir(), second.mkdir()
    cap_dir = tmp_path / "capture"

    def config(tmp, inst, files, capture=True):
        cfg = tmp / "dm.toml"
        extra = f'[capture]\nenabled = true\ndir = "{cap_dir}"\n' if capture else ""
        cfg.write_text(config_head(tmp, inst, f"sqlite:///{tmp / 'dm.sqlite'}", files, speed=0.0) + extra
                       + okx_provider(tmp, symbols))
        return cfg
    run_supervised(config(first, instance, [REC_DIR]), first)
    files = sorted((cap_dir / instance / "okx").glob("okx-*.jsonl.zst"))
    assert files, list(cap_dir.rglob("*"))
    events = [e for f in files for e in read_file(f)]
    rest = [e for e in events if e.kind == "rest"]
    assert sorted(e.url.split("instType=")[1] for e in rest) == ["FUTURES", "OPTION&uly=BTC-USD", "SPOT", "SWAP"]
    assert all(e.url.startswith("https://okx.com/api/v5/public/instruments") for e in rest)
    sessions = ws_sessions(events)
    assert [s.venue for s in sessions] == ["okx"]
    assert len(sessions[0].frames) == worker_stats(first, instance, "okx")["frames"] > 1000
    run_supervised(config(second, instance + "b", files, capture=False), second)
    a, b = _rows(f"sqlite:///{first / 'dm.sqlite'}"), _rows(f"sqlite:///{second / 'dm.sqlite'}")
    assert a["trades"] and a["book_deltas"] and a["bbo"]
    assert a == b
    assert worker_stats(second, instance + "b", "okx")["checksums_ok"] == worker_stats(first, instance, "okx")["checksums_ok"]
