"""The Databento live worker against the fake live gateway, as real processes: ``dm supervise``
runs the worker and the persister; the fake gateway (dm.databento.fake_live) serves the recorded
GLBX.MDP3 files over loopback TCP with CRAM authentication; readers take the channels from shm;
storage is checked row by row against dm's converter run on the files directly."""
from __future__ import annotations

import json
import os
import re
import signal
import struct
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest

from databento_fixtures import KEY as HIST_KEY
from databento_fixtures import ESU4_DIR, ESU4_MBP1, ESU4_TRADES, gateway, gw, settings_for  # noqa: F401 (fixtures)
from dm.databento.fake_live import FakeLiveGateway, LiveFault
from dm.dbn import DbnConverter, read_dbn
from dm.instruments import first_choice
from dm.records import RType
from dm.storage import open_storage
from e2e import ChannelCollector, config_head, leftover_segments, start_supervisor

KEY = "db-LIVETESTKEY0123456789abcdefABCDE"
ESU4_ID = first_choice("ESU4", "GLBX.MDP3")
NQU4_ID = first_choice("NQU4", "GLBX.MDP3")


@pytest.fixture(scope="module")
def store():
    from dm.databento.fake import DataStore

    return DataStore(ESU4_DIR)


def source(path, rtype) -> np.ndarray:
    """The file's records as dm converts them, Databento's id replaced by dm's (ESU4 only)."""
    a = read_dbn(path).arrays()[rtype].copy()
    a["instrument_id"] = ESU4_ID
    return a


def databento_block(tmp: Path, name: str, gateway: str, *, symbols=("ESU4", "NQU4"), schemas=("trades", "mbp-1"),
                    **extra) -> str:
    def lit(v):
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, (int, float)):
            return repr(v)
        return json.dumps(v)
    lines = [f"[providers.{name}]", 'kind = "databento"', f'ws_url = "{gateway}"',
             "symbols = " + json.dumps(list(symbols)), "schemas = " + json.dumps(list(schemas)),
             'dataset = "GLBX.MDP3"', f'dead_letter = "{tmp / "deadletter" / (name + ".jsonl")}"',
             "reconnect_min_s = 0.05", "reconnect_max_s = 0.2"]
    lines += [f"{k} = {lit(v)}" for k, v in extra.items()]
    return "\n".join(lines) + "\n"


def write_cfg(tmp: Path, instance: str, storage_url: str, blocks: str, **sup) -> Path:
    st = open_storage(storage_url)  # migrated up front: the test polls it from the start
    try:
        st.migrate()
    finally:
        st.close()
    cfg = tmp / "dm.toml"
    cfg.write_text(config_head(tmp, instance, storage_url, (), once=False,
                               supervisor={"max_restarts": 3, "failed_retry_s": 600.0, **sup}) + blocks)
    return cfg


def stats(tmp: Path, instance: str, name: str) -> dict:
    p = tmp / "run" / instance / f"{name}.stats.json"
    try:
        return json.loads(p.read_text())
    except (OSError, ValueError):
        return {}


def wait_for(cond, timeout: float, what: str, log: Path | None = None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = cond()
        if v:
            return v
        time.sleep(0.05)
    tail = log.read_text()[-3000:] if log is not None and log.exists() else ""
    raise AssertionError(f"timed out waiting for {what}\n{tail}")


def stop(sup: subprocess.Popen, timeout: float = 60) -> int:
    sup.send_signal(signal.SIGTERM)
    try:
        return sup.wait(timeout)
    finally:
        if sup.poll() is None:
            sup.kill()


def counts(url: str) -> dict:
    st = open_storage(url)
    try:
        return st.counts()
    finally:
        st.close()


def fetch(url: str, table: str, iid=None) -> np.ndarray:
    st = open_storage(url)
    try:
        return st.fetch(table, iid)
    finally:
        st.close()


def same_rows(a, b) -> bool:
    key = lambda x: np.argsort(x.view(f"V{x.dtype.itemsize}"), kind="stable")  # noqa: E731
    return len(a) == len(b) and np.array_equal(a[key(a)], b[key(b)])


EXPECTED_TRADES = 120
EXPECTED_BBO = 2288


def run_session(tmp, instance, url, gw, monkeypatch, *, extra_blocks: str = "", collect=True, name="cme",
                before_stop=None, **extra):
    """Start the supervisor with a databento provider on ``gw``; wait until storage holds every
    trade and BBO of the files; stop; return (collector, log path, stats)."""
    monkeypatch.setenv("DATABENTO_API_KEY", KEY)
    cfg = write_cfg(tmp, instance, url, databento_block(tmp, name, gw.address, **extra) + extra_blocks)
    log = tmp / "supervisor.log"
    sup = start_supervisor(cfg, log)
    coll = None
    try:
        if collect:
            coll = ChannelCollector(instance, ["ESU4"], exchange="GLBX.MDP3").start()
        wait_for(lambda: (c := counts(url)).get("trades") == EXPECTED_TRADES and c.get("bbo") == EXPECTED_BBO,
                 90, "every trade and BBO in storage", log)
        if before_stop is not None:
            before_stop(log)
        st = stats(tmp, instance, name)
        assert stop(sup) == 0, log.read_text()[-3000:]
    finally:
        if sup.poll() is None:
            sup.kill()
    if coll is not None:
        coll.join(60)
    return coll, log, stats(tmp, instance, name) or st


def test_worker_records_equal_the_files(tmp_path, instance, storage_url, monkeypatch, store):
    """Channel and storage hold exactly what dm's converter makes of the DBN files, with dm's
    instrument ids; heartbeat-free, fragmented TCP writes (chunk 4,093 bytes cut records)."""
    with FakeLiveGateway(store, key=KEY, chunk_bytes=4093) as gw:
        coll, log, st = run_session(tmp_path, instance, storage_url, gw, monkeypatch)
    trades, bbo = source(ESU4_TRADES, RType.TRADE), source(ESU4_MBP1, RType.BBO)
    assert same_rows(fetch(storage_url, "trades"), trades)
    assert same_rows(fetch(storage_url, "bbo"), bbo)
    assert counts(storage_url)["mbp_events"] == EXPECTED_TRADES + EXPECTED_BBO
    # the channel: every record once, in the gateway's order (per kind: the files' order)
    recs = coll.records["ESU4"]
    got_trades = [(r.ts_event, r.ts_recv, r.price, r.size, r.sequence) for r in recs if r.rtype == RType.TRADE]
    assert got_trades == [tuple(int(x[f]) for f in ("ts_event", "ts_recv", "price", "size", "sequence")) for x in trades]
    got_bbo = [(r.ts_recv, r.bid_px, r.ask_px, r.bid_sz, r.ask_sz) for r in recs if r.rtype == RType.BBO]
    assert got_bbo == [tuple(int(x[f]) for f in ("ts_recv", "bid_px", "ask_px", "bid_sz", "ask_sz")) for x in bbo]
    assert all(r.instrument_id == ESU4_ID for r in recs)
    assert coll.overruns["ESU4"] == 0
    assert st["connects"] == 1 and st["gaps"] == 0 and st["gateway_errors"] == 0 and st["unmapped_dropped"] == 0
    assert gw.stats["sessions"][0]["subscriptions"][0]["symbols"] == "ESU4,NQU4"
    assert not leftover_segments(instance)


@pytest.mark.parametrize("action, id_shift", [
    ("rst", 0),
    pytest.param("fin", 0, marks=pytest.mark.faults),
    pytest.param("silence", 0, marks=pytest.mark.faults),
    pytest.param("rst", 100_000, marks=pytest.mark.faults),
])
def test_cut_session_replays_from_the_last_record_without_duplicates(tmp_path, instance, sqlite_url, monkeypatch,
                                                                    store, action, id_shift):
    """FIN, RST or silence (no byte, no heartbeat for stale_after_s) mid-session: the worker
    reconnects, subscribes with start = its last record's ts_recv and drops what it already had:
    storage and channel hold every record exactly once, no gap is recorded. With ``id_shift`` the
    second session's Databento ids differ: its own symbol mappings map them."""
    extra = {"stale_after_s": 1.0} if action == "silence" else {}
    with FakeLiveGateway(store, key=KEY, faults=[LiveFault(action, after_records=1001)], id_shift=id_shift) as gw:
        coll, log, st = run_session(tmp_path, instance, sqlite_url, gw, monkeypatch, **extra)
        sessions = gw.stats["sessions"]
    assert sessions[0]["ended"] == action and sessions[0]["records"] == 1001
    assert "start=" not in json.dumps(sessions[0]["subscriptions"]) and sessions[1]["subscriptions"][0].get("start")
    assert same_rows(fetch(sqlite_url, "trades"), source(ESU4_TRADES, RType.TRADE))
    assert same_rows(fetch(sqlite_url, "bbo"), source(ESU4_MBP1, RType.BBO))
    recs = [r for r in coll.records["ESU4"] if r.rtype != RType.BAR]  # (dm's live bars: tests/test_live_bars.py)
    keys = [(r.rtype, r.ts_recv, getattr(r, "sequence", 0), getattr(r, "price", 0), getattr(r, "bid_px", 0)) for r in recs]
    assert len(recs) == 2 * (EXPECTED_TRADES + EXPECTED_BBO)  # TRADE/BBO + MBP_EVENT each, once
    assert len([k for k in keys if k[0] in (RType.TRADE, RType.BBO)]) == EXPECTED_TRADES + EXPECTED_BBO
    assert st["connects"] == 2 and st["replays"] == 1 and st["replayed_dropped"] > 0 and st["gaps"] == 0
    assert st["stale_disconnects"] == (1 if action == "silence" else 0)
    assert st["unmapped_dropped"] == 0
    st_ = open_storage(sqlite_url)
    try:
        assert st_.gaps() == []
    finally:
        st_.close()


def test_reconnect_beyond_the_replay_window_is_a_gap_fill_gaps_closes(tmp_path, instance, sqlite_url, monkeypatch,
                                                                       store, gw):
    """replay_window_s = 0 (no intraday replay): the cut session's missed records (the fake's live
    position moves on by 500 while the worker is away) are a reconnect gap in the ledger, in ns,
    from the last record stored to the first record after the reconnect (inclusive); then
    ``fill_gaps`` through the historical fake closes it: storage equals the files exactly."""
    from dm.backfill import fill_gaps

    hist = gw
    monkeypatch.setenv("DATABENTO_API_KEY", HIST_KEY)  # one account: live and historical
    with FakeLiveGateway(store, key=HIST_KEY, faults=[LiveFault("rst", after_records=1001, skip_records=500)]) as gw:
        cfg = write_cfg(tmp_path, instance, sqlite_url, databento_block(tmp_path, "cme", gw.address, replay_window_s=0.0))
        log = tmp_path / "supervisor.log"
        sup = start_supervisor(cfg, log)
        try:
            def ledger():
                st = open_storage(sqlite_url)
                try:
                    return st.gaps() if st.counts().get("gaps") else []
                finally:
                    st.close()
            gaps = wait_for(lambda: len(ledger()) == 2 and ledger(), 90, "two reconnect gaps in the ledger", log)
            wait_for(lambda: stats(tmp_path, instance, "cme").get("connects") == 2, 30, "the second session", log)
            assert stop(sup) == 0
        finally:
            if sup.poll() is None:
                sup.kill()
    trades = fetch(sqlite_url, "trades")
    bbo = fetch(sqlite_url, "bbo")
    stored_ts = np.concatenate([trades["ts_recv"], bbo["ts_recv"]])
    all_ts = np.concatenate([source(ESU4_TRADES, RType.TRADE)["ts_recv"], source(ESU4_MBP1, RType.BBO)["ts_recv"]])
    assert len(stored_ts) < len(all_ts)  # something was missed...
    g = {x["instrument_id"]: x for x in gaps}
    assert set(g) == {ESU4_ID, NQU4_ID}
    gap = g[ESU4_ID]
    assert gap["kind"] == "reconnect" and gap["units"] == 1 and gap["state"] == "open"
    missed = np.setdiff1d(all_ts, stored_ts)
    # ...and every missed record is inside the gap; stored records only at its two ends
    assert gap["first_missing"] <= missed.min() and missed.max() <= gap["last_missing"]
    assert not ((stored_ts > gap["first_missing"]) & (stored_ts < gap["last_missing"])).any()
    assert gap["first_missing"] == stored_ts[stored_ts < missed.min()].max()
    # fill-gaps: the historical fake refetches both instruments' windows; every record once
    routing = {"exchanges": {"*@GLBX.MDP3": {"historical": "databento", "dataset": "GLBX.MDP3",
                                             "schemas": ["trades", "mbp-1"]}}}
    st = open_storage(sqlite_url)
    try:
        outcomes, _ = fill_gaps(st, settings_for(hist, tmp_path, routing=routing), filler_kw={"sleep": lambda x: None})
        assert [o.state for o in outcomes] == ["filled", "filled"], [o.detail for o in outcomes]
        assert {g["state"] for g in st.gaps()} == {"filled"}
    finally:
        st.close()
    assert same_rows(fetch(sqlite_url, "trades"), source(ESU4_TRADES, RType.TRADE))
    assert same_rows(fetch(sqlite_url, "bbo"), source(ESU4_MBP1, RType.BBO))


def test_bad_key_fails_the_provider_alone_with_one_line(tmp_path, instance, sqlite_url, monkeypatch, store):
    """A key the gateway refuses: one error line naming the cause (never the key), the worker
    exits EXIT_FATAL and is marked failed without a restart loop; a second provider with a good
    key (another env var) stores everything."""
    monkeypatch.setenv("DM_TEST_BAD_KEY", "db-WRONGKEYWRONGKEYWRONGKEY99999")
    with FakeLiveGateway(store, key=KEY) as gw:
        bad = databento_block(tmp_path, "bad", gw.address, api_key_env="DM_TEST_BAD_KEY", exchange="GLBX.BAD")
        def bad_failed(log):
            wait_for(lambda: "child failed (fatal error" in log.read_text(), 90, "the bad provider failed", log)
        coll, log, st = run_session(tmp_path, instance, sqlite_url, gw, monkeypatch, extra_blocks=bad, collect=False,
                                    before_stop=bad_failed)
        auth_failures = gw.stats["auth_failures"]
    text = log.read_text()
    refused = [ln for ln in text.splitlines() if "refused the session" in ln]
    assert len(refused) == 1 and "Authentication failed" in refused[0], text[-3000:]
    assert "WRONGKEY" not in text and KEY not in text
    assert auth_failures == 1
    assert "child failed (fatal error" in text
    assert len(re.findall(r"\] started\s+child=bad ", text)) == 1  # no restart loop
    assert st["records"] == 2 * (EXPECTED_TRADES + EXPECTED_BBO)
    assert stats(tmp_path, instance, "bad").get("failed", "").startswith("the Databento gateway refused")


def test_heartbeats_keep_a_quiet_session_alive(tmp_path, instance, sqlite_url, monkeypatch, store):
    """After the recording the gateway only sends SystemMsg heartbeats: they are counted and feed
    the silence watchdog (stale_after_s 1 s, heartbeats every 0.2 s): no reconnect."""
    def quiet_for_a_while(log):
        wait_for(lambda: stats(tmp_path, instance, "cme").get("heartbeats", 0) >= 15, 60, "15 heartbeats", log)
    with FakeLiveGateway(store, key=KEY, heartbeat_s=0.2) as gw:
        coll, log, st = run_session(tmp_path, instance, sqlite_url, gw, monkeypatch, collect=False,
                                    before_stop=quiet_for_a_while, stale_after_s=1.0)
    assert st["heartbeats"] >= 15 and st["frames_by_kind"]["heartbeat"] == st["heartbeats"]
    assert st["connects"] == 1 and st["stale_disconnects"] == 0 and len(gw.stats["sessions"]) == 1


def test_gateway_error_message_is_dead_lettered_and_the_session_goes_on(tmp_path, instance, sqlite_url, monkeypatch, store):
    """An unknown symbol: the gateway's ErrorMsg is logged, counted and dead-lettered; the rest
    of the session is stored."""
    with FakeLiveGateway(store, key=KEY) as gw:
        coll, log, st = run_session(tmp_path, instance, sqlite_url, gw, monkeypatch, symbols=("ESU4", "NQU4", "ZZZ9"),
                                    collect=False)
    assert st["gateway_errors"] == 2  # one per schema's subscription
    lines = (tmp_path / "deadletter" / "cme.jsonl").read_text().splitlines()
    assert len(lines) == 2 and "Failed to resolve symbol: ZZZ9" in json.loads(lines[0])["error"]


@pytest.mark.parametrize("extra, line", [
    ({}, "providers.cme.dataset: missing (required for kind 'databento')"),
    ({"dataset": "GLBX.MDP3", "schemas": ["trade"]}, "providers.cme.schemas.0: Input should be 'trades'"),
    ({"dataset": "GLBX.MDP3", "replay_windows_s": 5}, "providers.cme.replay_windows_s: Extra inputs are not permitted"),
])
def test_config_errors_name_the_key(extra, line):
    from dm.config import parse
    from dm.errors import ConfigError

    base = {"kind": "databento", "ws_url": "tcp://127.0.0.1:13000", "symbols": ["ESU4"]}
    with pytest.raises(ConfigError) as e:
        parse({"providers": {"cme": {**base, **extra}}}, env={})
    assert str(e.value).startswith(line)
    cfg = parse({"providers": {"cme": {**base, "dataset": "GLBX.MDP3"}}}, env={})
    assert (cfg.providers["cme"].exchange, cfg.providers["cme"].publisher_id) == ("GLBX.MDP3", 0)


def test_converter_keeps_gateway_messages_when_asked():
    """DbnConverter(messages=True): ErrorMsg/SystemMsg of DBN v2/v3 → (rtype, ts_event, code, text)."""
    import databento_dbn as dbn

    meta = dbn.Metadata(dataset="GLBX.MDP3", start=0, stype_in=dbn.SType.RAW_SYMBOL, stype_out=dbn.SType.INSTRUMENT_ID,
                        schema=dbn.Schema.TRADES, symbols=[], partial=[], not_found=[], mappings=[], end=None,
                        limit=None, ts_out=False, version=3).encode()
    body = (bytes(dbn.SystemMsg(ts_event=5, msg="Heartbeat", code=dbn.SystemCode.HEARTBEAT))
            + bytes(dbn.ErrorMsg(ts_event=6, err="boom", code=dbn.ErrorCode.INTERNAL_ERROR, is_last=True)))
    c = DbnConverter(messages=True)
    assert c.feed(meta + body[:100]) == b""
    assert c.feed(body[100:]) == b""
    assert c.messages == [(0x17, 5, int(dbn.SystemCode.HEARTBEAT), "Heartbeat"),
                          (0x15, 6, int(dbn.ErrorCode.INTERNAL_ERROR), "boom")]
    assert c.skipped == {}
    c2 = DbnConverter()
    c2.feed(meta + body)
    assert c2.messages == [] and c2.skipped == {0x15: 1, 0x17: 1}


def test_live_tracker_maps_drops_and_resumes():
    """LiveTracker: ids mapped, unmapped records dropped, replay filter by (time, count)."""
    from dm.databento._live import LiveTracker

    def trade(iid, ts):  # a 64-byte TRADE record with ts_recv = ts
        return struct.pack("<BBHIQQ", 16, 0xE0, 1, iid, ts, ts) + bytes(40)

    t = LiveTracker()
    t.idmap[7] = 1000
    t.invalidate()
    buf = bytearray(trade(7, 10) + trade(8, 11) + trade(7, 12) + trade(7, 12))
    n = t.process(buf)
    assert n == 3 * 64 and t.unmapped == 1 and t.unmapped_ids == {8: 1}
    assert [struct.unpack_from("<I", buf, 64 * i + 4)[0] for i in range(3)] == [1000] * 3
    assert (t.last_ts, t.at_last, t.passed) == (12, 2, 3)
    t.resume()
    buf = bytearray(trade(7, 10) + trade(7, 12) + trade(7, 12) + trade(7, 12) + trade(7, 13))
    n = t.process(buf)
    assert n == 2 * 64 and t.replayed == 3
    assert [struct.unpack_from("<Q", buf, 64 * i + 16)[0] for i in range(2)] == [12, 13]


def test_official_client_accepts_the_fake(store):
    """The fake conforms: databento.Live (the official client) authenticates with CRAM,
    subscribes, and receives the same records as the file holds, plus the symbol mapping."""
    import databento as db

    with FakeLiveGateway(store, key=KEY, close_at_end=True) as gw:
        live = db.Live(key=KEY, gateway=gw.host, port=gw.port)
        got = []
        live.add_callback(got.append)
        live.subscribe(dataset="GLBX.MDP3", schema="trades", stype_in="raw_symbol", symbols=["ESU4"])
        live.start()
        live.block_for_close(timeout=30)
    import databento_dbn as dbn

    trades = [r for r in got if isinstance(r, dbn.TradeMsg)]
    maps = [r for r in got if isinstance(r, dbn.SymbolMappingMsg)]
    assert len(trades) == EXPECTED_TRADES and [m.stype_out_symbol for m in maps] == ["ESU4"]
    direct = read_dbn(ESU4_TRADES).arrays()[RType.TRADE]
    assert [(t.ts_recv, t.price, t.size) for t in trades] == [
        (int(x["ts_recv"]), int(x["price"]), int(x["size"])) for x in direct]   # DBN sizes: native counts


def test_official_client_is_refused_a_bad_key(store):
    import databento as db
    from databento.common.error import BentoError

    with FakeLiveGateway(store, key=KEY) as gw:
        live = db.Live(key="db-NOTTHEKEYNOTTHEKEYNOTTHEKEY1", gateway=gw.host, port=gw.port)
        with pytest.raises(BentoError, match="Authentication failed"):
            live.subscribe(dataset="GLBX.MDP3", schema="trades", symbols=["ESU4"])


def test_cli_fake_live_gateway_serves_the_official_client(tmp_path):
    """``dm fake-databento-live`` (its own process): ready file, CRAM, a scripted RST fault
    after 50 records, then a replay session with ``start`` gets the rest."""
    import sys

    import databento as db
    import databento_dbn as dbn

    from e2e import ROOT

    ready = tmp_path / "ready.json"
    proc = subprocess.Popen([sys.executable, "-m", "dm", "fake-databento-live", "--data", str(ESU4_DIR), "--key", KEY,
                             "--close-at-end", "--ready-file", str(ready),
                             "--live-fault", '{"action": "rst", "after_records": 50}'],
                            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        wait_for(lambda: ready.exists() or proc.poll() is not None, 60, "the fake's ready file")
        port = json.loads(ready.read_text())["live_port"]
        sessions = []
        for start in (None, 0):
            live = db.Live(key=KEY, gateway="127.0.0.1", port=port)
            got = []
            live.add_callback(got.append)
            live.subscribe(dataset="GLBX.MDP3", schema="trades", symbols=["ESU4"], start=start)
            live.start()
            try:
                live.block_for_close(timeout=30)
            except Exception:  # the RST: the official client reports the connection error
                pass
            sessions.append([r for r in got if isinstance(r, dbn.TradeMsg)])
        # an RST may cost the reader what it had not read yet: at most the 50 sent
        assert len(sessions[0]) <= 50 and len(sessions[1]) == EXPECTED_TRADES
    finally:
        proc.terminate()
        proc.wait(10)
