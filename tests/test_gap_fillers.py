"""Venue REST gap fillers end to end: the real replay server on loopback answers the venues' REST
trade history from the real recordings (data/), ``fill_gaps`` closes a TRADE gap of the ledger
in real SQLite and PostgreSQL with exactly the recorded trades of the gap's window, a second fill
stores nothing, the gap ends ``filled``."""
from __future__ import annotations

import asyncio
import threading
import urllib.error
import urllib.request

import numpy as np
import orjson
import pytest

from dm.backfill import Ledger, fill_gaps, parse_settings
from dm.instruments import InstrumentRegistry
from dm.records import DTYPES, GapUnits, RType
from dm.recording import read_file
from dm.replay import ReplayServer
from dm.storage import open_storage
from dm.venues.binance._codec import BinanceCodec

BINANCE = "data/binance/BINANCE-b38f7c.0"
ROUTING = {"routing": {"exchanges": {"*@BINANCE": {"historical": "binance"}, "*@KRAKEN": {"historical": "kraken"},
                                     "*@KRAKEN_FUTURES": {"historical": "kraken_futures"}}},
           "backfill": {"backoff_base_s": 0.01, "max_retries": 1}}
COLS = [n for n in DTYPES[RType.TRADE].names if n != "ts_recv"]  # a refetched trade is received later


class Replay:
    """A ReplayServer on loopback in its own thread and event loop."""

    def __init__(self, files):
        self.loop = asyncio.new_event_loop()
        self.srv = ReplayServer(files, port=0, speed=0.0)
        ready = threading.Event()

        def run():
            asyncio.set_event_loop(self.loop)
            self.loop.run_until_complete(self.srv.start())
            ready.set()
            self.loop.run_forever()
        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()
        assert ready.wait(30)
        self.url = self.srv.rest_url()

    def get(self, path: str):
        try:
            with urllib.request.urlopen(self.url + path, timeout=30) as r:
                return r.status, orjson.loads(r.read())
        except urllib.error.HTTPError as e:
            return e.code, orjson.loads(e.read())

    def close(self):
        asyncio.run_coroutine_threadsafe(self.srv.stop(), self.loop).result(30)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(30)


@pytest.fixture(scope="module")
def binance_replay():
    r = Replay([BINANCE])
    yield r
    r.close()


@pytest.fixture
def st(storage_url):
    s = open_storage(storage_url, migrate=True)
    yield s
    s.close()


def recorded_binance_trades(venue_symbol: str, iid: int, size_precision: int = 9) -> np.ndarray:
    """Every aggTrade frame of the recording for ``venue_symbol`` through the live codec."""
    codec = BinanceCodec(1001)
    codec.add_symbol(venue_symbol, iid, size_precision)
    out = []
    for ev in read_file(BINANCE):
        if ev.kind == "frame" and f'"stream":"{venue_symbol.lower()}@aggTrade"' in ev.text:
            codec.decode(ev.text, int(ev.ts * 1e9))
            out.append(bytes(codec.output()))
    a = np.frombuffer(b"".join(out), DTYPES[RType.TRADE])
    return a[np.argsort(a["trade_id"], kind="stable")]


def same_trades(stored: np.ndarray, want: np.ndarray) -> bool:
    a = np.sort(stored[COLS], order=["ts_event", "trade_id"])
    b = np.sort(want[COLS], order=["ts_event", "trade_id"])
    return len(a) == len(b) and bool(np.all(a == b))


def test_binance_replay_serves_agg_trades_as_the_venue(binance_replay):
    r = binance_replay
    status, page = r.get("/api/v3/aggTrades?symbol=DENTUSDT&limit=1000")
    assert status == 200 and len(page) == 716  # every recorded aggTrade of the symbol, ascending by id
    assert list(page[0]) == ["a", "p", "q", "f", "l", "T", "m", "M"]
    ids = [t["a"] for t in page]
    assert ids == sorted(ids) and len(set(ids)) == 716
    a5 = ids[5]
    assert [t["a"] for t in r.get(f"/api/v3/aggTrades?symbol=DENTUSDT&fromId={a5}&limit=3")[1]] == ids[5:8]  # fromId inclusive
    t0, t1 = page[10]["T"], page[20]["T"]
    got = r.get(f"/api/v3/aggTrades?symbol=DENTUSDT&startTime={t0}&endTime={t1}&limit=1000")[1]
    assert got == [t for t in page if t0 <= t["T"] <= t1]  # both bounds inclusive
    assert r.get("/api/v3/aggTrades?symbol=DENTUSDT&limit=2")[1] == page[-2:]  # no bounds: the most recent
    assert r.get("/api/v3/aggTrades?symbol=DENTUSDT")[1] == page[-500:]  # default limit 500
    assert r.get(f"/api/v3/aggTrades?symbol=DENTUSDT&startTime=0&endTime={3_600_000}")[1]["code"] == -1127
    assert r.get(f"/api/v3/aggTrades?symbol=DENTUSDT&startTime=0&endTime={3_599_999}")[0] == 200
    assert r.get(f"/api/v3/aggTrades?symbol=DENTUSDT&fromId=1&startTime={t0}")[1]["code"] == -1128
    assert r.get("/api/v3/aggTrades?symbol=DENTUSDT&limit=1001")[1]["code"] == -1130
    assert r.get("/api/v3/aggTrades?symbol=NOPE")[1]["code"] == -1121
    assert r.get("/api/v3/aggTrades")[1]["code"] == -1102


def test_binance_trade_gap_filled_exactly_from_agg_trades(st, binance_replay):
    reg = InstrumentRegistry(st)
    iid = reg.resolve("DENTUSD", "BINANCE", "DENTUSDT", 1001)
    rec = recorded_binance_trades("DENTUSDT", iid)
    ts = np.unique(rec["ts_event"])
    a, b = int(ts[80]), int(ts[520])  # the gap: [a, b), most of the 716 trades (564 distinct ms)
    want = rec[(rec["ts_event"] >= a) & (rec["ts_event"] < b)]
    assert len(want) > 300
    # the live feed stored the trades around the gap, and the first few of it, before it broke
    live = rec[(rec["ts_event"] < a) | (rec["ts_event"] >= b) | (np.arange(len(rec)) % 97 == 0)]
    st.write({RType.TRADE: live.copy()})
    gid = st.record_gap(iid, "reconnect", a, b - 1, b, units=GapUnits.NS)
    settings = parse_settings(ROUTING)
    kw = {"rest_urls": {"binance": binance_replay.url}, "page_limit": 100, "sleep": lambda s: None}

    outcomes, verdict = fill_gaps(st, settings, dry_run=True, filler_kw=kw)
    assert [o.state for o in outcomes] == ["planned"] and verdict.request_nano == 0 and st.counts()["trades"] == len(live)

    outcomes, verdict = fill_gaps(st, settings, filler_kw=kw)
    (o,) = outcomes
    inside_live = int(((live["ts_event"] >= a) & (live["ts_event"] < b)).sum())
    assert o.state == "filled" and o.rows == len(want) - inside_live, o.detail
    assert same_trades(st.fetch("trades"), rec)  # every recorded trade once: the gap's refetched, none twice
    assert st.gaps()[0]["state"] == "filled" and f"job {o.jobs[0]}" in st.gaps()[0]["detail"]
    job = Ledger(st).job(o.jobs[0])
    (chunk,) = Ledger(st).chunks(o.jobs[0])
    assert (job["state"], job["provider"], job["schema"], job["gap_id"]) == ("done", "binance", "trades", gid)
    # paged by 100: the first page by time, the rest by fromId; records = the window's trades
    assert chunk["state"] == "done" and chunk["records"] == len(want) and chunk["rows"] == o.rows
    assert chunk["requests"] == len(want) // 100 + 1

    # the same window again (another gap over it): fetched again, nothing stored twice
    gid2 = st.record_gap(iid, "reconnect", a, b - 1, b + 1, units=GapUnits.NS)
    (o2,), _ = fill_gaps(st, settings, filler_kw=kw)
    assert o2.gap_id == gid2 and o2.state == "filled" and o2.rows == 0
    assert same_trades(st.fetch("trades"), rec)


def test_binance_gap_of_aggregate_ids_is_filled_by_from_id(st, binance_replay):
    """A gap counting aggregate trade ids (``binance.agg_trade_id``, units SEQUENCE) is refetched
    by ``fromId`` alone: exactly the ids first..last, by id continuity."""
    iid = InstrumentRegistry(st).resolve("DENTUSD", "BINANCE", "DENTUSDT", 1001)
    rec = recorded_binance_trades("DENTUSDT", iid)
    ids = rec["trade_id"]
    assert np.all(np.diff(ids.astype(np.int64)) == 1)  # consecutive in the recording too
    first, last = int(ids[50]), int(ids[400])
    st.record_gap(iid, "binance.agg_trade_id", first, last, 1, units=GapUnits.SEQUENCE)
    kw = {"rest_urls": {"binance": binance_replay.url}, "page_limit": 100, "sleep": lambda s: None}
    outcomes, _ = fill_gaps(st, parse_settings(ROUTING), dry_run=True, filler_kw=kw)
    assert [o.state for o in outcomes] == ["planned"] and "by trade id" in outcomes[0].detail
    (o,), _ = fill_gaps(st, parse_settings(ROUTING), filler_kw=kw)
    assert o.state == "filled" and o.rows == 351, o.detail
    assert same_trades(st.fetch("trades"), rec[50:401])
    (chunk,) = Ledger(st).chunks(o.jobs[0])
    assert (chunk["stype_in"], chunk["requests"], chunk["resume_ns"]) == ("trade_id", 4, last + 1)


def test_binance_gap_longer_than_an_hour_is_asked_in_hour_windows(st, binance_replay):
    """Binance refuses ``endTime - startTime`` of 1 h or more (-1127): a 3 h gap is asked as
    three ≤ 1 h windows, and every recorded trade inside it is stored."""
    iid = InstrumentRegistry(st).resolve("DENTUSD", "BINANCE", "DENTUSDT", 1001)
    rec = recorded_binance_trades("DENTUSDT", iid)
    hour = 3_600 * 10**9
    a = int(rec["ts_event"].min()) - 2 * hour + 5 * 10**9  # the recording sits in the third hour window
    b = a + 3 * hour
    st.record_gap(iid, "reconnect", a, b - 1, b, units=GapUnits.NS)
    kw = {"rest_urls": {"binance": binance_replay.url}, "sleep": lambda s: None}
    (o,), _ = fill_gaps(st, parse_settings(ROUTING), filler_kw=kw)
    assert o.state == "filled" and o.rows == len(rec) == 716, o.detail
    assert same_trades(st.fetch("trades"), rec)
    (chunk,) = Ledger(st).chunks(o.jobs[0])
    assert chunk["requests"] == 3 and chunk["records"] == 716  # one page per hour window (1,000 a page)


def test_a_venue_error_fails_the_gap_which_stays_open(st, binance_replay):
    iid = InstrumentRegistry(st).resolve("NOPEUSD", "BINANCE", "NOPEUSDT", 1001)
    gid = st.record_gap(iid, "reconnect", 10**18, 10**18 + 10**9, 1, units=GapUnits.NS)
    kw = {"rest_urls": {"binance": binance_replay.url}, "sleep": lambda s: None}
    (o,), _ = fill_gaps(st, parse_settings(ROUTING), filler_kw=kw)
    assert o.state == "failed" and 'HTTP 400: {"code":-1121,"msg":"Invalid symbol."}' in o.detail
    assert st.gaps()[0]["state"] == "open" and st.counts()["trades"] == 0
    job = Ledger(st).jobs()[0]
    assert (job["gap_id"], job["state"]) == (gid, "failed") and "-1121" in Ledger(st).chunks(job["id"])[0]["error"]


def test_fill_gaps_command_uses_the_configured_rest_url(tmp_path, storage_url, binance_replay, monkeypatch):
    """``dm backfill fill-gaps`` asks the venue at its ``[providers.*] rest_url`` (here the replay)."""
    import tomlkit
    from click.testing import CliRunner

    from dm.cli import main

    host = binance_replay.url.removeprefix("http://")
    monkeypatch.setenv("DM_STORAGE_URL", storage_url)
    monkeypatch.setenv("DM_REPLAY_ADDR", host)
    doc = tomlkit.parse(open("conf/demo.toml").read())
    path = tmp_path / "dm.toml"
    path.write_text(tomlkit.dumps(doc))
    with open_storage(storage_url, migrate=True) as s:
        iid = InstrumentRegistry(s).resolve("ZILUSD", "BINANCE", "ZILUSDT", 1001)
        rec = recorded_binance_trades("ZILUSDT", iid)
        a, b = int(rec["ts_event"][50]), int(rec["ts_event"][250])
        s.record_gap(iid, "reconnect", a, b - 1, b, units=GapUnits.NS)
    res = CliRunner().invoke(main, ["backfill", "fill-gaps", "-c", str(path)], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    want = rec[(rec["ts_event"] >= a) & (rec["ts_event"] < b)]
    assert f"gap 1: filled" in res.output and f"{len(want)} rows stored" in res.output
    with open_storage(storage_url) as s:
        assert same_trades(s.fetch("trades"), want)


# --- Kraken spot ----------------------------------------------------------------------------
KRAKEN = ["data/kraken/KRAKEN-82ac16.0", "data/kraken/KRAKEN.0"]  # trade frames, AssetPairs


@pytest.fixture(scope="module")
def kraken_replay():
    r = Replay(KRAKEN)
    yield r
    r.close()


def recorded_kraken_trades(ws: str, iid: int) -> np.ndarray:
    from dm.venues.kraken._codec import KrakenCodec

    codec = KrakenCodec(1002)
    codec.add_symbol(ws, iid, 9)
    out = []
    for ev in read_file(KRAKEN[0]):
        if ev.kind == "frame" and ev.text.endswith(f',"trade","{ws}"]'):
            codec.decode(ev.text, int(ev.ts * 1e9))
            out.append(bytes(codec.output()))
    return np.frombuffer(b"".join(out), DTYPES[RType.TRADE])


def test_kraken_replay_serves_trades_as_the_venue(kraken_replay):
    r = kraken_replay
    from decimal import Decimal

    with urllib.request.urlopen(r.url + "/0/public/Trades?pair=XBTUSD") as resp:
        import json

        status, body = resp.status, json.loads(resp.read(), parse_float=str)
    assert status == 200 and body["error"] == [] and list(body["result"]) == ["XXBTZUSD", "last"]
    rows = body["result"]["XXBTZUSD"]
    assert len(rows) == 22 and rows[0][:2] == ["58721.20000", "0.02798644"] and rows[0][3:] == ["s", "m", "", 1]
    assert body["result"]["last"] == str(int(Decimal(rows[-1][2]).scaleb(9)))
    with urllib.request.urlopen(r.url + "/0/public/Trades?pair=XBTUSD&count=1") as resp:
        raw = resp.read()
    assert b'"1617666461.465618"' not in raw and b",1617666461.465618," in raw  # time: a JSON number, every digit
    t5 = r.get("/0/public/Trades?pair=XXBTZUSD&count=5")[1]["result"]
    nxt = r.get(f"/0/public/Trades?pair=XBT/USD&count=5&since={t5['last']}")[1]["result"]
    assert [x[6] for x in t5["XXBTZUSD"]] == [1, 2, 3, 4, 5] and nxt["XXBTZUSD"][0][6] == 6  # since: exclusive
    assert r.get("/0/public/Trades?pair=NOPE")[1] == {"error": ["EQuery:Unknown asset pair"]}


def test_kraken_trade_gap_filled_exactly_from_trades(st, kraken_replay):
    iid = InstrumentRegistry(st).resolve("BTCUSD", "KRAKEN", "XBT/USD", 1002)
    rec = recorded_kraken_trades("XBT/USD", iid)
    ts = np.sort(rec["ts_event"])
    a, b = int(ts[3]), int(ts[18])
    want = rec[(rec["ts_event"] >= a) & (rec["ts_event"] < b)]
    assert len(want) == 15
    st.write({RType.TRADE: rec[(rec["ts_event"] < a) | (rec["ts_event"] >= b)].copy()})
    st.record_gap(iid, "reconnect", a, b - 1, b, units=GapUnits.NS)
    kw = {"rest_urls": {"kraken": kraken_replay.url}, "page_limit": 4, "sleep": lambda s: None}
    (o,), _ = fill_gaps(st, parse_settings(ROUTING), filler_kw=kw)
    assert o.state == "filled" and o.rows == 15, o.detail
    assert same_trades(st.fetch("trades"), rec)
    (chunk,) = Ledger(st).chunks(o.jobs[0])
    assert chunk["state"] == "done" and chunk["requests"] >= 4  # pages of 4, each starting again at the last timestamp
    assert st.gaps()[0]["state"] == "filled"
    st.record_gap(iid, "reconnect", a, b - 1, b + 1, units=GapUnits.NS)
    (o2,), _ = fill_gaps(st, parse_settings(ROUTING), filler_kw=kw)
    assert o2.state == "filled" and o2.rows == 0 and same_trades(st.fetch("trades"), rec)


# --- end to end: frames dropped in the replay, the worker stores the rest, fill-gaps closes it -----
@pytest.mark.timeout(180)
def test_trades_dropped_in_the_replay_are_filled_exactly_from_agg_trades(tmp_path, instance, sqlite_url, binance_replay):
    """A real `dm supervise` (replay, Binance worker, persister) on a copy of the recording with
    a window of DENTUSDT aggTrade frames dropped stores every trade but those; the gap over the
    window (recorded here: the live worker does not yet check aggregate-id continuity) is then
    filled from ``aggTrades`` of the unmodified recording, and the stored trades equal the
    recording's, each once."""
    from dm.recording import Drop, write_modified_recording
    from tests.e2e import B38, EXCHANGE_INFO, config_head, provider_toml, run_supervised

    frames = [(no, orjson.loads(line.split(": ", 1)[1])["data"]) for no, line in enumerate(open(B38).read().split("\n"), 1)
              if line[:1].isdigit() and '"stream":"dentusdt@aggTrade"' in line[:60]]
    ts = sorted({d["T"] for _, d in frames})
    a_ms, b_ms = ts[200], ts[400]
    dropped = [no for no, d in frames if a_ms <= d["T"] < b_ms]
    rec = write_modified_recording(B38, tmp_path / "BINANCE-dropped.0", [Drop(no) for no in dropped])
    cfg = tmp_path / "dm.toml"
    cfg.write_text(config_head(tmp_path, instance, sqlite_url, (rec, EXCHANGE_INFO))
                   + provider_toml(tmp_path, "binance", "binance", "BINANCE", "ws://{replay}/stream", ["DENTUSD"], ["aggTrade"]))
    run_supervised(cfg, tmp_path)

    with open_storage(sqlite_url) as st:
        inst = InstrumentRegistry(st).instrument("DENTUSD", "BINANCE")
        sp = 9 if inst.size_precision is None else inst.size_precision  # the registry's scale, as the filler's codec
        want = recorded_binance_trades("DENTUSDT", inst.instrument_id, sp)
        before = st.fetch("trades", inst.instrument_id)
        assert len(before) == len(want) - len(dropped) and len(dropped) > 100
        a, b = a_ms * 10**6, b_ms * 10**6
        st.record_gap(inst.instrument_id, "reconnect", a, b - 1, b, units=GapUnits.NS)
        kw = {"rest_urls": {"binance": binance_replay.url}, "sleep": lambda s: None}
        (o,), _ = fill_gaps(st, parse_settings(ROUTING), filler_kw=kw)
        assert o.state == "filled" and o.rows == len(dropped), o.detail
        assert same_trades(st.fetch("trades", inst.instrument_id), want)


# --- Kraken Futures ---------------------------------------------------------------------------
KF = ["data/kraken_futures/KRAKEN_FUTURES.ws.1.0", "data/kraken_futures/KRAKEN_FUTURES.0"]


@pytest.fixture(scope="module")
def kf_replay():
    r = Replay(KF)
    yield r
    r.close()


def recorded_kf_trades(pid: str, iid: int) -> np.ndarray:
    """The recording's trades of ``pid`` (trade and trade_snapshot frames, each uid once) through
    the live codec: trade_id = the websocket ``seq``."""
    from dm.venues.kraken_futures._codec import KrakenFuturesCodec

    codec = KrakenFuturesCodec(1003)
    codec.add_symbol(pid, iid, 9)
    out = []
    for ev in read_file(KF[0]):
        if ev.kind == "frame" and f'"product_id":"{pid}"' in ev.text[:80] and '"feed":"trade' in ev.text[:30]:
            codec.decode(ev.text, int(ev.ts * 1e9))
            out.append(bytes(codec.output()))
    a = np.frombuffer(b"".join(out), DTYPES[RType.TRADE])
    _, first = np.unique(a["trade_id"], return_index=True)
    return a[np.sort(first)]


def fills(a: np.ndarray) -> list:
    """A trade array as the multiset (sorted list) of (ts_event, price, size, side)."""
    return sorted(zip(a["ts_event"].tolist(), a["price"].tolist(), a["size"].tolist(), a["side"].tolist()))


def test_kraken_futures_replay_serves_executions(kf_replay):
    r = kf_replay
    status, body = r.get("/api/history/v3/market/pi_xrpusd/executions")
    assert status == 200 and body["len"] == 100 and "continuationToken" not in body
    ts = [e["timestamp"] for e in body["elements"]]
    assert ts == sorted(ts, reverse=True)  # default sort: desc
    ex = body["elements"][0]["event"]["Execution"]["execution"]
    assert set(ex) == {"uid", "makerOrder", "takerOrder", "timestamp", "quantity", "price", "markPrice", "limitFilled", "usdValue"}
    assert isinstance(ex["quantity"], str) and {ex["takerOrder"]["direction"], ex["makerOrder"]["direction"]} == {"Buy", "Sell"}
    with urllib.request.urlopen(r.url + f"/api/history/v3/market/PI_XRPUSD/executions?since={min(ts)}&sort=asc&count=30") as resp:
        page = orjson.loads(resp.read())
        token = resp.headers["Next-Continuation-Token"]
    assert page["len"] == 30 and page["continuationToken"] == token
    nxt = r.get(f"/api/history/v2/market/PI_XRPUSD/executions?since={min(ts)}&sort=asc&count=30&continuationToken={token}")[1]
    asc = sorted(ts)
    assert [e["timestamp"] for e in page["elements"] + nxt["elements"]] == asc[:60]
    assert r.get(f"/api/history/v3/market/pi_xrpusd/executions?since={asc[10]}&before={asc[20]}&sort=asc")[1]["len"] == \
        sum(asc[10] <= t < asc[20] for t in asc)
    assert r.get("/api/history/v3/market/pi_nope/executions")[0] == 404


def test_kraken_futures_trade_gap_filled_exactly_from_executions(st, kf_replay):
    iid = InstrumentRegistry(st).resolve("XRPUSD-USD-PERP", "KRAKEN_FUTURES", "PI_XRPUSD", 1003)
    rec = recorded_kf_trades("PI_XRPUSD", iid)
    ts = np.unique(rec["ts_event"])
    a, b = int(ts[15]), int(ts[70])  # 80 distinct ms among the 100 recorded trades
    inside = (rec["ts_event"] >= a) & (rec["ts_event"] < b)
    live = rec[~inside | (np.arange(len(rec)) % 7 == 0)]  # the live feed's rows (trade_id = seq)
    st.write({RType.TRADE: live.copy()})
    st.record_gap(iid, "reconnect", a, b - 1, b, units=GapUnits.NS)
    kw = {"rest_urls": {"kraken_futures": kf_replay.url}, "page_limit": 25, "sleep": lambda s: None}
    (o,), _ = fill_gaps(st, parse_settings(ROUTING), filler_kw=kw)
    missing = len(rec) - len(live)
    assert o.state == "filled" and o.rows == missing > 30, o.detail
    assert fills(st.fetch("trades", iid)) == fills(rec)  # every recorded fill once
    (chunk,) = Ledger(st).chunks(o.jobs[0])
    assert chunk["requests"] == -(-int(inside.sum()) // 25)  # pages of 25 by continuation token
    st.record_gap(iid, "reconnect", a, b - 1, b + 1, units=GapUnits.NS)
    (o2,), _ = fill_gaps(st, parse_settings(ROUTING), filler_kw=kw)
    assert o2.state == "filled" and o2.rows == 0 and fills(st.fetch("trades", iid)) == fills(rec)
