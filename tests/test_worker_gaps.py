"""The worker side of "every lost window is a gap" and "workers start while the database is
down" (issue 7), on real processes: gaps travel through the persist queue as GAP records and the
persister stores them; a worker killed with kill -9 leaves one ``restart`` gap per instrument
with the exact window; a worker starts and publishes while PostgreSQL refuses connections and
its records reach storage once it answers; an unknown symbol costs that symbol only; Kraken's
id-less identical fills stay two rows."""
from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import numpy as np
import orjson
import pytest

from dm.instruments import InstrumentCache, cache_path
from dm.persister import store_batch
from dm.records import DTYPES, Gap, GapUnits, RType, Trade
from dm.codec_ref import iter_recording
from dm.storage import open_storage
from dm.venues.kraken._codec import KrakenCodec
from tests.e2e import (B38, B38_SYMBOLS, EXCHANGE_INFO, ChannelCollector, CuttingProxy, config_head, expected_binance,
                       free_port, provider_toml, run_supervised, start_supervisor, started_pids, worker_stats)
from tests.pgproxy import PgProxy

ROOT = Path(__file__).resolve().parent.parent
KRAKEN_TRADE = ROOT / "data/kraken/KRAKEN-82ac16.0"
BINANCE = 1001


def wait_for(cond, timeout: float, what: str, every: float = 0.05):
    deadline = time.monotonic() + timeout
    while True:
        v = cond()
        if v:
            return v
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(every)


def stats_of(tmp: Path, instance: str, name: str) -> dict:
    try:
        return json.loads((tmp / "run" / instance / f"{name}.stats.json").read_text())
    except (OSError, ValueError):
        return {}


def log_lines(tmp: Path) -> list[str]:
    return (tmp / "supervisor.log").read_text().splitlines()


def stop(proc, timeout: float = 60) -> int:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(timeout=timeout)
    finally:
        if proc.poll() is None:
            proc.kill()


def binance_config(tmp: Path, instance: str, url: str, symbols=B38_SYMBOLS, *, speed: float = 0.0,
                   once: bool = True) -> Path:
    cfg = tmp / "dm.toml"
    cfg.write_text(config_head(tmp, instance, url, (B38, EXCHANGE_INFO), speed=speed, once=once)
                   + provider_toml(tmp, "binance", "binance", "BINANCE", "ws://{replay}/stream", symbols,
                                   ["aggTrade", "bookTicker"]))
    return cfg


def query(url: str, fn):
    st = open_storage(url)
    try:
        return fn(st)
    finally:
        st.close()


# ------------------------------------------------------------------- Kraken identical fills


def _identical_fills_frame() -> tuple[str, int]:
    """A real recorded Kraken v1 trade frame (one DASH/EUR fill) with that fill sent twice."""
    for _, _, ts, text in iter_recording(KRAKEN_TRADE):
        msg = orjson.loads(text)
        if isinstance(msg, list) and msg[-2] == "trade" and msg[-1] == "DASH/EUR" and len(msg[1]) == 1:
            msg[1] = [msg[1][0], list(msg[1][0])]
            return orjson.dumps(msg).decode(), ts
    raise AssertionError("no single-fill DASH/EUR trade frame in the recording")


def test_kraken_identical_fills_in_one_frame_are_two_rows(storage_url):
    """Kraken v1 trades have no id: the codec numbers identical fills of a frame (sequence = how
    many identical ones precede it), so two identical fills are two rows; decoding the same frame again (a replay of the
    recording) gives the same records, so a re-ingest adds nothing."""
    frame, ts = _identical_fills_frame()
    codec = KrakenCodec(1002, {"DASH/EUR": 77})
    assert codec.decode(frame, ts) == 2
    buf = bytes(codec.output())
    a = np.frombuffer(buf, DTYPES[RType.TRADE])
    assert a["sequence"].tolist() == [0, 1] and a["trade_id"].tolist() == [0, 0]
    assert len({tuple(r) for r in a[["price", "size", "side", "ts_event"]].tolist()}) == 1  # identical fills
    st = open_storage(storage_url)
    try:
        st.migrate()
        inserted, dead, _ = store_batch(st, buf)
        assert dead == [] and inserted.get("trades") == 2
        again = KrakenCodec(1002, {"DASH/EUR": 77})
        again.decode(frame, ts)
        assert bytes(again.output()) == buf  # deterministic: a replay re-creates the same records
        store_batch(st, bytes(again.output()))
        assert st.counts()["trades"] == 2
        assert sorted(st.fetch("trades", 77)["sequence"].tolist()) == [0, 1]
    finally:
        st.close()


# ------------------------------------------------------------------- unknown symbol


@pytest.mark.timeout(180)
def test_unknown_symbol_is_refused_in_one_line_and_the_worker_runs_the_rest(tmp_path, instance, sqlite_url):
    syms = ["BTCAUD", "NOPEUSD", "ZILUSD"]
    cfg = binance_config(tmp_path, instance, sqlite_url, syms)
    run_supervised(cfg, tmp_path, timeout=150)
    log = (tmp_path / "supervisor.log").read_text()
    refused = [ln for ln in log.splitlines() if "symbols refused" in ln]
    assert len(refused) == 1 and "NOPEUSD" in refused[0], refused
    assert len(started_pids(log, "binance")) == 1, "the worker was restarted"
    st = worker_stats(tmp_path, instance, "binance")
    assert list(st["refused_symbols"]) == ["NOPEUSD"]
    exp = expected_binance()
    n = sum(len(exp["aggTrade"][s]) for s in ("BTCAUD", "ZILUSD"))
    assert n > 0
    assert query(sqlite_url, lambda s: s.counts()["trades"]) == n


# ------------------------------------------------------------------- database down at start


@pytest.mark.faults
@pytest.mark.timeout(240)
def test_worker_starts_and_publishes_while_the_database_refuses(tmp_path, instance, pg_url):
    """PostgreSQL refuses every connection (loopback proxy) when the instance starts: the worker
    resolves its ids from the local cache, connects and publishes to its channels, the persister
    keeps everything in the persist queue; once the database answers, every record is stored,
    the instruments are registered in it with the ids the worker used, and no gap is recorded."""
    port = int(pg_url.rsplit(":", 1)[1].split("/")[0])
    proxy = PgProxy(port)
    proxy.set_mode("refuse")
    db = pg_url.rsplit("/", 1)[1]
    url = f"postgresql://postgres@127.0.0.1:{proxy.port}/{db}?sslmode=disable&gssencmode=disable"
    cfg = binance_config(tmp_path, instance, url, speed=5.0)  # ~24 s of session
    exp = expected_binance()
    readers = ChannelCollector(instance, B38_SYMBOLS, exchange="BINANCE").start()
    sup = start_supervisor(cfg, tmp_path / "supervisor.log")
    try:
        wait_for(lambda: stats_of(tmp_path, instance, "binance").get("records", 0) >= 200, 120,
                 "the worker to publish with the database down")
        p = stats_of(tmp_path, instance, "persister")
        assert p["storage"]["state"] in ("connecting", "failing"), p["storage"]
        assert p["records"] == 0 and proxy.connections == 0
        assert sum(len(v) for v in readers.records.values()) > 0  # readers got records already
        proxy.set_mode("forward")
        rc = sup.wait(timeout=180)
    finally:
        stop(sup)
        proxy.close()
    assert rc == 0, (tmp_path / "supervisor.log").read_text()[-3000:]
    readers.join(timeout=30)
    got = {s: [r for r in readers.records[s] if isinstance(r, Trade)] for s in B38_SYMBOLS}
    assert sum(len(v) for v in got.values()) == 1240
    counts = query(pg_url, lambda s: s.counts())
    assert counts["trades"] == 1240 and counts["bbo"] == 5408
    assert query(pg_url, lambda s: s.gaps()) == []
    ids = {sym: iid for iid, sym, ex, venue, pub in query(pg_url, lambda s: s.load_instruments()) if ex == "BINANCE"}
    with InstrumentCache(cache_path(tmp_path / "run", instance)) as cache:
        cached = {r[1]: r[0] for r in cache.load_instruments() if r[2] == "BINANCE"}
    assert ids == cached and set(ids) == set(B38_SYMBOLS)
    for s in B38_SYMBOLS:
        assert {r.instrument_id for r in got[s]} <= {ids[s]}


# ------------------------------------------------------------------- kill -9 → restart gap


def _ts_recv_column(st, table: str, iid: int) -> np.ndarray:
    return st.fetch(table, iid)["ts_recv"].astype(np.int64)


@pytest.mark.faults
@pytest.mark.timeout(300)
def test_kill9_of_a_worker_leaves_one_restart_gap_per_instrument(tmp_path, instance, pg_url):
    """A Binance worker is killed with SIGKILL (no flush, no finally) mid-session; the supervisor
    restarts it; the new worker records one ``restart`` gap per instrument, stored by the
    persister (the only writer): first_missing is just after the last record the killed worker
    wrote (no stored record of any instrument lies in the window and one lies right before it),
    last_missing just before the new worker's first frame."""
    cfg = binance_config(tmp_path, instance, pg_url, speed=4.0, once=False)
    sup = start_supervisor(cfg, tmp_path / "supervisor.log")
    n_inst = len(B38_SYMBOLS)
    try:
        first = wait_for(lambda: (s := stats_of(tmp_path, instance, "binance")).get("frames", 0) >= 300 and s,
                         120, "the first worker to stream")
        os.kill(first["pid"], signal.SIGKILL)
        second = wait_for(lambda: (s := stats_of(tmp_path, instance, "binance")).get("pid") not in (None, first["pid"])
                          and s.get("restart_gaps") and s, 120, "the restarted worker's first frame")
        assert second["restart_gaps"] == n_inst and second["restart_from_ns"] == 0
        gaps = wait_for(lambda: (g := query(pg_url, lambda s: s.gaps())) and len(g) >= n_inst and g, 60,
                        "the persister to store the restart gaps")
    finally:
        rc = stop(sup)
    assert rc == 0, (tmp_path / "supervisor.log").read_text()[-3000:]
    gaps = query(pg_url, lambda s: s.gaps())
    restart = [g for g in gaps if g["kind"] == "restart"]
    assert len(restart) == n_inst and len(gaps) == n_inst, gaps  # and nothing else (no reconnect gap)
    ids = {sym: iid for iid, sym, ex, venue, pub in query(pg_url, lambda s: s.load_instruments()) if ex == "BINANCE"}
    assert sorted(g["instrument_id"] for g in restart) == sorted(ids.values())
    # both workers announced the same registrations (INSTRUMENT_DEF, ts_event = registration): one row each
    assert query(pg_url, lambda s: s.counts())["instrument_definitions"] == n_inst
    persister = stats_of(tmp_path, instance, "persister")
    assert persister["queues"]["binance"]["gaps"] == n_inst
    assert sum(1 for ln in log_lines(tmp_path) if "gaps recorded in the ledger" in ln) >= 1
    windows = {(g["first_missing"], g["last_missing"], g["units"], g["publisher_id"], g["state"]) for g in restart}
    assert len(windows) == 1, windows
    lo, hi, units, pub, state = windows.pop()
    assert units == 1 and pub == BINANCE and state == "open" and lo <= hi
    # the new worker's first frame is right after the window
    log = (tmp_path / "supervisor.log").read_text()
    pids = started_pids(log, "binance")
    assert len(pids) == 2 and pids[0] == first["pid"], pids
    second = stats_of(tmp_path, instance, "binance")
    assert second["pid"] == pids[1] and second["first_frame_ns"] == hi + 1
    # the killed worker's last record is right before the window; nothing stored inside it
    st = open_storage(pg_url)
    try:
        ts = np.concatenate([_ts_recv_column(st, t, iid) for t in ("trades", "bbo") for iid in ids.values()])
    finally:
        st.close()
    assert int(ts[ts < lo].max()) == lo - 1
    assert not ((ts >= lo) & (ts <= hi)).any()
    assert (ts > hi).any()  # the new worker's records are stored too
    print(f"kill -9 of the worker: {n_inst} restart gaps, window {(hi - lo + 2) / 1e9:.3f} s "
          f"(killed worker's last record → restarted worker's first frame)")


# ------------------------------------------------------------------- instrument ids without a database


def test_instrument_ids_come_from_the_cache_seeded_by_a_database_that_answers(tmp_path, instance, storage_url):
    """A worker's cache that lacks a symbol first copies the database's registrations (read
    only): an id the database assigned off the first choice (a collision moved it) is kept.
    With the database unreachable the cache alone answers, and the same ids come back."""
    import asyncio

    from dm.config import load
    from dm.instruments import first_choice
    from dm.providers.base import resolve_instruments

    st = open_storage(storage_url, migrate=True)
    try:
        assert st.insert_instrument(12345, "BTCAUD", "BINANCE", "BTCAUD", BINANCE)
    finally:
        st.close()
    cfg = load(binance_config(tmp_path, instance, storage_url, ["BTCAUD", "ZILUSD"]))
    venue = {"BTCAUD": "BTCAUD", "ZILUSD": "ZILUSDT"}
    ids = asyncio.run(resolve_instruments(cfg, cfg.providers["binance"], venue))
    assert ids == {"BTCAUD": 12345, "ZILUSD": first_choice("ZILUSD", "BINANCE")}
    # the database unreachable now (a port nobody listens on / a SQLite file that is gone): same ids
    down = load(binance_config(tmp_path, instance, "postgresql://postgres@127.0.0.1:1/none", ["BTCAUD", "ZILUSD", "ETHBRL"]))
    again = asyncio.run(resolve_instruments(down, down.providers["binance"], {**venue, "ETHBRL": "ETHBRL"}))
    assert again == {**ids, "ETHBRL": first_choice("ETHBRL", "BINANCE")}


# ------------------------------------------------------------------- where a restart window starts

_CHILD = """
import sys, time
from dm._ring import ChannelWriter
from dm.records import LAYOUT_HASH, GapUnits, gap_record
w = ChannelWriter(sys.argv[1], 4096, LAYOUT_HASH)
for ts in map(int, sys.argv[2:]):
    w.write(gap_record(1001, 7, "probe", 0, 0, GapUnits.NS, ts))  # a record whose ts_recv is ts
print("ready", flush=True)
time.sleep(60)
"""


def _killed_producer(name: str, *ts: int) -> int:
    """A real process that creates channel ``name``, writes records with these ts_recv and is
    then killed with SIGKILL (its segment stays, producer dead). Returns its pid."""
    import subprocess
    import sys

    p = subprocess.Popen([sys.executable, "-c", _CHILD, name, *map(str, ts)], cwd=ROOT, stdout=subprocess.PIPE)
    try:
        assert p.stdout.readline().strip() == b"ready"
    finally:
        p.kill()
        p.wait()
    return p.pid


def test_predecessor_window_from_stats_file_and_killed_channels(tmp_path, instance, sqlite_url):
    from dm._ring import unlink_segment
    from dm.config import load
    from dm.providers.base import provider_class

    cfg = load(binance_config(tmp_path, instance, sqlite_url, ["BTCAUD", "ZILUSD"]))
    prov = provider_class("binance")(cfg, cfg.providers["binance"])
    prov.instrument_ids = {"BTCAUD": 11, "ZILUSD": 12}
    names = [cfg.channel_name("BINANCE", s) for s in ("BTCAUD", "ZILUSD")]
    T = 1_700_000_000_000_000_000

    def predecessor(**doc):
        prov.state_path.parent.mkdir(parents=True, exist_ok=True)
        prov.state_path.write_text(json.dumps(doc))
        return prov.predecessor_window()

    try:
        assert prov.predecessor_window() is None  # first start: no state file
        # killed: the latest of its last stats write and its channels' last records
        pid = _killed_producer(names[0], T + 5, T + 9)
        w = predecessor(pid=pid, last_frame_ns=T + 7, clean_stop=False)
        assert w is not None and w[0] == T + 9 and str(pid) in w[1]
        # channels of another producer (not the predecessor) are not its records
        assert predecessor(pid=pid + 1, last_frame_ns=T + 7, clean_stop=False)[0] == T + 7
        # a clean stop: no window; a crash that never read a frame: none either
        assert predecessor(pid=pid, last_frame_ns=T + 7, clean_stop=True) is None
        unlink_segment(names[0])
        assert predecessor(pid=pid, last_frame_ns=0, clean_stop=False) is None
        # a window inherited and not closed (no frame before it ended, even cleanly) is passed on
        assert predecessor(pid=pid, last_frame_ns=0, clean_stop=True, restart_from_ns=T + 3,
                           restart_detail="worker pid 1 ended without a clean stop") == (T + 3, "worker pid 1 ended without a clean stop")
    finally:
        for n in names:
            unlink_segment(n)
        prov.dead.close()


@pytest.mark.faults
@pytest.mark.timeout(300)
def test_supervisor_killed_its_worker_stops_and_the_next_one_records_the_window(tmp_path, instance, sqlite_url):
    """kill -9 of the supervisor: its worker is told (SIGTERM on parent death), stops and exits,
    but that stop was not asked for: the worker started by the next supervisor records one
    ``restart`` gap per instrument from the last frame the orphan read (its final stats write)
    to its own first frame. A stop asked for (the second supervisor's SIGTERM) leaves no gap."""
    syms = ["BTCAUD", "ZILUSD", "MANAUSD"]
    cfg = binance_config(tmp_path, instance, sqlite_url, syms, speed=4.0, once=False)
    sup = start_supervisor(cfg, tmp_path / "supervisor.log")
    try:
        first = wait_for(lambda: (s := stats_of(tmp_path, instance, "binance")).get("frames", 0) >= 100 and s,
                         120, "the first worker to stream")
        os.kill(sup.pid, signal.SIGKILL)
        sup.wait(10)
        wait_for(lambda: not os.path.exists(f"/proc/{first['pid']}"), 20, "the orphaned worker to exit")
        gone = json.loads((tmp_path / "run" / instance / "binance.worker-state.json").read_text())
        assert gone["pid"] == first["pid"] and gone["clean_stop"] is False and gone["last_frame_ns"] > 0
        # the orphaned persister drained and exited too (children of the dead supervisor)
        wait_for(lambda: not (tmp_path / "run" / instance / "persister.pid").exists()
                 or not os.path.exists(f"/proc/{json.loads((tmp_path / 'run' / instance / 'persister.pid').read_text())['pid']}"),
                 30, "the orphaned persister to exit")
        sup = start_supervisor(cfg, tmp_path / "supervisor2.log")
        second = wait_for(lambda: (s := stats_of(tmp_path, instance, "binance")).get("pid") != first["pid"]
                          and s.get("restart_gaps") and s, 120, "the new worker's first frame")
        wait_for(lambda: len(query(sqlite_url, lambda s: s.gaps())) >= len(syms), 60, "the gaps stored")
    finally:
        rc = stop(sup)
    assert rc == 0, (tmp_path / "supervisor2.log").read_text()[-3000:]
    gaps = query(sqlite_url, lambda s: s.gaps())
    assert len(gaps) == len(syms) and {g["kind"] for g in gaps} == {"restart"}, gaps
    assert {(g["first_missing"], g["last_missing"]) for g in gaps} == {(gone["last_frame_ns"] + 1, second["first_frame_ns"] - 1)}
    state = json.loads((tmp_path / "run" / instance / "binance.worker-state.json").read_text())
    assert state["clean_stop"] is True and state["pid"] == second["pid"]  # asked to stop: no gap next time
    g = gaps[0]
    print(f"kill -9 of the supervisor: {len(gaps)} restart gaps, window {(g['last_missing'] - g['first_missing'] + 2) / 1e9:.3f} s")


# ------------------------------------------------------------------- a reconnect gap reaches readers and the ledger


@pytest.mark.faults
@pytest.mark.timeout(180)
def test_reconnect_gap_is_one_record_on_each_channel_and_one_ledger_row(tmp_path, instance, sqlite_url):
    """The websocket dies mid-stream (a TCP proxy aborts it): the worker reconnects and writes one
    ``reconnect`` GAP record per instrument to the instrument's channel (readers see the window)
    and to the persist queue, whence the persister stores exactly those records in the ledger."""
    syms = ["BTCAUD", "ZILUSD", "MANAUSD"]
    replay_port = free_port()
    proxy = CuttingProxy(replay_port, after_bytes=200_000, mode="cut").start()
    try:
        cfg = tmp_path / "dm.toml"
        cfg.write_text(config_head(tmp_path, instance, sqlite_url, (B38, EXCHANGE_INFO), replay_port=replay_port)
                       + provider_toml(tmp_path, "binance", "binance", "BINANCE", f"ws://127.0.0.1:{proxy.port}/stream",
                                       syms, ["aggTrade", "bookTicker"]))
        readers = ChannelCollector(instance, syms, exchange="BINANCE").start()
        run_supervised(cfg, tmp_path, timeout=150)
        readers.join(timeout=30)
    finally:
        proxy.stop()
    assert proxy.faulted.is_set() and proxy.connections == 2
    ledger = query(sqlite_url, lambda s: s.gaps())
    assert len(ledger) == len(syms) and {g["kind"] for g in ledger} == {"reconnect"}, ledger
    on_channels = {s: [r for r in readers.records[s] if isinstance(r, Gap)] for s in syms}
    assert all(len(v) == 1 for v in on_channels.values()), on_channels
    got = sorted((g.instrument_id, g.first_missing, g.last_missing, g.units, g.publisher_id) for v in on_channels.values() for g in v)
    assert got == sorted((g["instrument_id"], g["first_missing"], g["last_missing"], g["units"], g["publisher_id"]) for g in ledger)
    assert {x[3] for x in got} == {GapUnits.NS} and {x[4] for x in got} == {BINANCE}
    assert all(x[1] < x[2] for x in got)
    st = worker_stats(tmp_path, instance, "binance")
    assert st["connects"] == 2 and st["gaps"] == len(syms) and st["restart_gaps"] == 0
