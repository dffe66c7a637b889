"""The historical engine end to end: the official client over real loopback HTTPS against the
fake gateway serving the real ESU4 files, into real PostgreSQL and SQLite — chunks, idempotent
reruns, the budget guard, cut streams resumed exactly, 429/5xx/4xx/timeouts, fill-gaps."""
from __future__ import annotations

import numpy as np
import pytest

from dm.backfill import Ledger, fill_gaps, parse_settings
from dm.databento.fake import Fault
from dm.databento.historical import DatabentoHistorical, FetchRequest
from dm.databento.times import NS_PER_DAY, to_ns
from dm.dbn import read_dbn
from dm.errors import BudgetRefused
from dm.instruments import InstrumentRegistry, first_choice
from dm.records import GapUnits
from dm.records import RType
from dm.storage import open_storage
from tests.databento_fixtures import DBN_SIZE, ESU4_MBP1, ESU4_TRADES, KEY, USD_PER_GB, gateway, gw, settings_for  # noqa: F401

D1, D3 = to_ns("2024-07-01"), to_ns("2024-07-03")
MIDNIGHT = to_ns("2024-07-02")
ESU4_ID = first_choice("ESU4", "GLBX.MDP3")


def req(schema="trades", start=D1, end=D3, symbols=("ESU4",), stype="raw_symbol", **kw) -> FetchRequest:
    return FetchRequest("GLBX.MDP3", schema, tuple(symbols), stype, start, end, "GLBX.MDP3", **kw)


class Sleeps(list):
    def __call__(self, s):  # recorded, not slept: the waits the engine chose are what is checked
        self.append(s)


@pytest.fixture
def st(storage_url):
    s = open_storage(storage_url, migrate=True)
    yield s
    s.close()


def engine(st, gw, tmp_path, **backfill):
    sleeps = Sleeps()
    e = DatabentoHistorical(st, settings_for(gw, tmp_path, **backfill), sleep=sleeps)
    e.sleeps = sleeps
    return e


def source(path, rtype):
    """The file's records as dm converts them, with Databento's id replaced by dm's."""
    a = read_dbn(path).arrays()[rtype].copy()
    a["instrument_id"] = ESU4_ID
    return a


def stored(st, table):
    return st.fetch(table)


def same_rows(a, b) -> bool:
    key = lambda x: np.argsort(x.view(f"V{x.dtype.itemsize}"), kind="stable")  # noqa: E731
    return len(a) == len(b) and np.array_equal(a[key(a)], b[key(b)])


def test_write_then_commits_with_the_rows_or_not_at_all(st):
    """The storage hook the ledger relies on: bookkeeping and rows in one transaction."""
    trades = source(ESU4_TRADES, RType.TRADE)[:5]
    led = Ledger(st)
    with pytest.raises(ZeroDivisionError):
        led.commit({RType.TRADE: trades}, lambda c, ins: 1 / 0)
    assert st.counts()["trades"] == 0
    seen, written = led.commit({RType.TRADE: trades}, lambda c, ins: dict(ins))
    assert seen == written == {"trades": 5} and st.counts()["trades"] == 5


def test_trades_fetch_stores_120_then_a_rerun_costs_nothing(st, gw, tmp_path):
    eng = engine(st, gw, tmp_path)
    plans, verdict, results = eng.fetch([req()])
    assert verdict.decision == "run" and len(plans[0].chunks) == 2  # two UTC days
    assert [c.quote.records for c in plans[0].chunks] == [28, 92]
    assert results[0].rows == {"trades": 120, "mbp_events": 120}
    assert st.counts()["trades"] == 120 and st.counts()["mbp_events"] == 120
    assert same_rows(stored(st, "trades"), source(ESU4_TRADES, RType.TRADE))
    assert same_rows(stored(st, "mbp_events"), source(ESU4_TRADES, RType.MBP_EVENT))
    assert InstrumentRegistry(st).get("ESU4", "GLBX.MDP3") == ESU4_ID
    assert gw.calls("timeseries.get_range") == 2
    gw.reset_stats()
    plans, verdict, results = engine(st, gw, tmp_path).fetch([req()])
    assert results[0].rows_total == 0 and results[0].chunks_skipped == 2 and results[0].requests == 0
    assert gw.calls("timeseries.get_range") == 0 and plans[0].cost_nano == 0
    assert st.counts()["trades"] == 120


def test_mbp1_over_the_limit_is_refused_and_a_cut_stream_resumes_exactly(st, gw, tmp_path):
    cost = 2288 * DBN_SIZE["mbp-1"] * USD_PER_GB  # nano-USD: $/GB is nano-USD per byte
    eng = engine(st, gw, tmp_path, auto_approve_usd=0.0001)
    with pytest.raises(BudgetRefused) as e:
        eng.fetch([req("mbp-1")])
    assert e.value.needs_confirm and e.value.verdict.request_nano == cost
    plans, verdict, results = eng.fetch([req("mbp-1")], confirm=True, dry_run=True)
    assert results == [] and verdict.decision == "run"
    strict = engine(st, gw, tmp_path, auto_approve_usd=0.0001, max_request_usd=0.0004)
    with pytest.raises(BudgetRefused) as e:
        strict.fetch([req("mbp-1")], confirm=True)
    assert not e.value.needs_confirm and "max_request_usd" in str(e.value)
    assert gw.calls("timeseries.get_range") == 0 and st.counts()["bbo"] == 0

    # day 1 holds 568 of the records (by ts_recv); its stream is cut in half, at a timestamp edge
    ts = np.sort(source(ESU4_MBP1, RType.BBO)["ts_recv"])
    day1 = ts[ts < np.uint64(MIDNIGHT)]
    assert len(day1) == 568 and day1[283] != day1[284]
    gw.add_fault(Fault("timeseries.get_range", cut_fraction=0.5))
    plans, verdict, results = eng.fetch([req("mbp-1")], confirm=True)
    assert results[0].chunks_failed == 0 and results[0].requests == 3
    assert st.counts()["bbo"] == 2288 and st.counts()["mbp_events"] == 2288
    assert same_rows(stored(st, "bbo"), source(ESU4_MBP1, RType.BBO))  # every record once, none lost
    sent = sorted(gw.stats["get_range"], key=lambda g: g["start"])  # day 2 downloads while day 1 is stored
    assert [g["records"] for g in sent] == [284, 284, 1720] and sent[0]["cut"]
    assert sent[1]["start"] == int(day1[283]) + 1  # resumed right after the last stored ts_recv

    rep = Ledger(st).cost_report()
    assert rep["total"]["usd_nano"] == cost and rep["total"]["records"] == 2288
    for chunk in rep["chunk"].values():  # each chunk billed once, whatever it took
        assert chunk["usd_nano"] == chunk["quoted_usd_nano"]
    assert sorted(c["requests"] for c in rep["chunk"].values()) == [1, 2]


def test_a_cut_inside_one_timestamp_requests_that_timestamp_again(st, gw, tmp_path):
    ts = np.sort(source(ESU4_MBP1, RType.BBO)["ts_recv"])
    day2 = ts[ts >= np.uint64(MIDNIGHT)]
    i = next(k for k in range(800, len(day2)) if day2[k - 1] == day2[k])  # cut between two records of one ts_recv
    group = int((day2 == day2[i]).sum())
    received = int((day2[:i] == day2[i]).sum())
    eng = engine(st, gw, tmp_path, auto_approve_usd=1.0)
    gw.add_fault(Fault("timeseries.get_range", cut_after_records=i, times=1))
    eng.fetch([req("mbp-1", start=MIDNIGHT)])
    assert same_rows(stored(st, "bbo"), source(ESU4_MBP1, RType.BBO)[source(ESU4_MBP1, RType.BBO)["ts_recv"] >= np.uint64(MIDNIGHT)])
    sent = gw.stats["get_range"]
    assert sent[1]["start"] == int(day2[i])  # the whole timestamp again
    assert sent[0]["records"] + sent[1]["records"] == len(day2) + received
    chunk = Ledger(st).chunks()[0]
    assert chunk["state"] == "done" and chunk["rows"] == 2 * len(day2)
    assert chunk["usd_nano"] - chunk["quoted_usd_nano"] == received * 80 * USD_PER_GB  # paid twice: honest
    assert group > received


def test_estimate_is_records_times_record_size_times_price(st, gw, tmp_path):
    plans, verdict = engine(st, gw, tmp_path).estimate([req("trades"), req("mbp-1")])
    for p, n in zip(plans, (120, 2288)):
        size = DBN_SIZE[p.request.schema]
        assert (p.quote.records, p.quote.bytes, p.quote.usd_nano) == (n, n * size, n * size * USD_PER_GB)
    assert verdict.request_nano == (120 * 48 + 2288 * 80) * USD_PER_GB
    assert gw.calls("timeseries.get_range") == 0
    assert gw.calls("metadata.get_cost") == 4 and gw.calls("metadata.get_record_count") == 4


def test_rate_limit_waits_retry_after(st, gw, tmp_path):
    eng = engine(st, gw, tmp_path)
    gw.add_fault(Fault("metadata.get_cost", status=429, retry_after=3),
                 Fault("timeseries.get_range", status=429, retry_after=2, times=2))
    eng.fetch([req()])
    assert eng.sleeps == [3, 2, 2] and st.counts()["trades"] == 120
    assert gw.calls("timeseries.get_range") == 4  # 2 refused + 2 served, nothing billed twice
    assert Ledger(st).cost_report()["total"]["requests"] == 2


def test_server_errors_and_timeouts_back_off_then_succeed(st, gw, tmp_path):
    import dataclasses

    eng = engine(st, gw, tmp_path, max_retries=3)
    eng.settings = dataclasses.replace(eng.settings, databento=eng.settings.databento.model_copy(update={"timeout_s": 0.5}))
    # two 503s, then a gateway that answers after the client's 0.5 s read timeout
    gw.add_fault(Fault("timeseries.get_range", status=503, times=2), Fault("timeseries.get_range", stall_s=1.5))
    eng.fetch([req()])
    assert len(eng.sleeps) == 3 and all(0.008 <= s <= 0.06 for s in eng.sleeps)  # backoff within [base, max] ± jitter
    assert eng.sleeps[1] > eng.sleeps[0] * 1.2  # exponential: base, then 2 x base (± 20 % jitter)
    assert st.counts()["trades"] == 120 and gw.calls("timeseries.get_range") == 5


def test_server_errors_beyond_the_retries_fail_the_chunk_and_a_rerun_finishes(st, gw, tmp_path):
    eng = engine(st, gw, tmp_path, max_retries=2)
    gw.add_fault(Fault("timeseries.get_range", status=500, times=0))
    plans, verdict, results = eng.fetch([req()])
    r = results[0]
    assert r.chunks_failed == 2 and len(eng.sleeps) == 4
    assert "HTTP 500 internal_error: Unexpected condition in the gateway. (gave up after 2 retries)" in r.errors[0]
    led = Ledger(st)
    assert led.job(r.job_id)["state"] == "failed" and all(c["state"] == "failed" for c in led.chunks(r.job_id))
    gw.clear_faults()
    results = engine(st, gw, tmp_path).fetch([req()])[2]
    assert results[0].chunks_done == 2 and st.counts()["trades"] == 120 and led.job(r.job_id)["state"] == "done"


def test_a_client_error_fails_its_chunk_with_case_and_message_the_others_go_on(st, gw, tmp_path):
    eng = engine(st, gw, tmp_path)
    gw.add_fault(Fault("timeseries.get_range", status=422, case="custom_case", message="no can do"))
    results = eng.fetch([req()])[2]
    assert results[0].chunks_failed == 1 and results[0].chunks_done == 1 and eng.sleeps == []
    assert "HTTP 422 custom_case: no can do" in results[0].errors[0]
    assert st.counts()["trades"] == 92  # day 2 went on
    gw.reset_stats()
    engine(st, gw, tmp_path).fetch([req()])
    assert st.counts()["trades"] == 120 and [g["records"] for g in gw.stats["get_range"]] == [28]


def test_unknown_symbols(st, gw, tmp_path):
    eng = engine(st, gw, tmp_path)
    from dm.errors import BackfillError

    with pytest.raises(BackfillError, match="none of the symbols resolved.*ESZ9"):
        eng.estimate([req(symbols=("ESZ9",))])
    plans, verdict, results = eng.fetch([req(symbols=("ESU4", "ESZ9"))])
    assert plans[0].not_found == ["ESZ9"] and st.counts()["trades"] == 120


def test_data_already_stored_is_never_requested_again(st, gw, tmp_path):
    a, b = to_ns("2024-07-01T23:59"), to_ns("2024-07-02T00:01")
    engine(st, gw, tmp_path).fetch([req(start=a, end=b)])
    first = st.counts()["trades"]
    gw.reset_stats()
    plans = engine(st, gw, tmp_path).fetch([req()])[0]
    assert [len(p.chunks) for p in plans] == [2]  # the stored part of each day is left out
    windows = sorted((g["start"], g["end"]) for g in gw.stats["get_range"])
    assert windows == [(D1, a), (b, MIDNIGHT + NS_PER_DAY)]
    assert sum(g["records"] for g in gw.stats["get_range"]) == 120 - first
    assert st.counts()["trades"] == 120


def test_parent_symbols_store_under_their_contract(st, gw, tmp_path):
    engine(st, gw, tmp_path).fetch([req(symbols=("ES.FUT",), stype="parent")])
    t = stored(st, "trades")
    assert len(t) == 120 and set(t["instrument_id"].tolist()) == {ESU4_ID}


def test_small_batches_commit_as_they_go(st, gw, tmp_path):
    eng = engine(st, gw, tmp_path, batch_rows=1000)
    eng.read_block = 4096
    eng.fetch([req("mbp-1", start=MIDNIGHT)], confirm=True)
    assert same_rows(stored(st, "bbo"), source(ESU4_MBP1, RType.BBO)[source(ESU4_MBP1, RType.BBO)["ts_recv"] >= np.uint64(MIDNIGHT)])
    c = Ledger(st).chunks()[0]
    assert c["records"] == 1720 and c["rows"] == 3440 and c["usd_nano"] == c["quoted_usd_nano"]


# --- fill-gaps -------------------------------------------------------------------------------
ROUTING = {"exchanges": {"*@GLBX.MDP3": {"historical": "databento", "dataset": "GLBX.MDP3", "schemas": ["trades", "mbp-1"]},
                         "*@BINANCE": {"historical": "binance"}, "*@KRAKEN": {"historical": "kraken"}}}


def test_fill_gaps(st, gw, tmp_path):
    reg = InstrumentRegistry(st)
    es = reg.resolve("ESU4", "GLBX.MDP3", "ESU4", 1)
    btc = reg.resolve("BTCUSD", "BINANCE", "BTCUSDT", 1001)
    xbt = reg.resolve("BTCUSD", "KRAKEN", "XBT/USD", 1002)
    a, b = to_ns("2024-07-01T23:59"), to_ns("2024-07-02T00:01")
    g_es = st.record_gap(es, "databento.reconnect", a, b - 1, b, units=GapUnits.NS)
    g_in = st.record_gap(es, "databento.reconnect", a + 10**9, a + 2 * 10**9, b, units=GapUnits.NS)  # inside the first
    g_book = st.record_gap(btc, "binance.update_id", 1000, 1010, b)
    g_kr = st.record_gap(xbt, "reconnect", a, b, b)
    s = settings_for(gw, tmp_path, routing=ROUTING)

    # Kraken's REST filler (dm.venues.kraken.filler) asks a closed loopback port: the test stays offline
    kw = {"sleep": lambda x: None, "rest_urls": {"kraken": "http://127.0.0.1:1"}}
    outcomes, verdict = fill_gaps(st, s, dry_run=True, filler_kw=kw)
    assert [o.state for o in outcomes] == ["planned", "planned", "unfillable", "planned"]
    assert all(g["state"] == "open" for g in st.gaps()) and gw.calls("timeseries.get_range") == 0

    outcomes, verdict = fill_gaps(st, s, filler_kw=kw)
    by = {o.gap_id: o for o in outcomes}
    assert by[g_es].state == "filled" and by[g_in].state == "filled"
    assert by[g_book].state == "unfillable" and "cannot be refetched" in by[g_book].detail
    assert by[g_kr].state == "failed" and "kraken /0/public/Trades" in by[g_kr].detail  # venue unreachable: stays open
    gaps = {g["id"]: g for g in st.gaps()}
    assert gaps[g_es]["state"] == "filled" and "job" in gaps[g_es]["detail"]
    assert gaps[g_book]["state"] == "unfillable" and gaps[g_kr]["state"] == "open"
    jobs = [j for j in Ledger(st).jobs() if j["provider"] == "databento"]
    assert {j["gap_id"] for j in jobs} == {g_es, g_in} and {j["schema"] for j in jobs} == {"trades", "mbp-1"}
    assert [(j["gap_id"], j["state"]) for j in Ledger(st).jobs() if j["provider"] == "kraken"] == [(g_kr, "failed")]
    # exactly the file's records of the window; the inner gap cost nothing
    t = source(ESU4_TRADES, RType.TRADE)
    q = source(ESU4_MBP1, RType.BBO)
    assert same_rows(stored(st, "trades"), t[(t["ts_recv"] >= np.uint64(a)) & (t["ts_recv"] < np.uint64(b))])
    assert same_rows(stored(st, "bbo"), q[(q["ts_recv"] >= np.uint64(a)) & (q["ts_recv"] < np.uint64(b))])
    assert by[g_in].rows == 0 and gw.calls("timeseries.get_range") == 4  # 2 schemas x 2 UTC days
    assert sum(g["records"] for g in gw.stats["get_range"]) == len(stored(st, "trades")) + len(stored(st, "bbo"))


def test_fill_gaps_over_budget_changes_nothing(st, gw, tmp_path):
    es = InstrumentRegistry(st).resolve("ESU4", "GLBX.MDP3", "ESU4", 1)
    st.record_gap(es, "databento.reconnect", D1, D3 - 1, D3, units=GapUnits.NS)
    s = settings_for(gw, tmp_path, routing=ROUTING, auto_approve_usd=0.0, max_request_usd=0.0001)
    with pytest.raises(BudgetRefused):
        fill_gaps(st, s, confirm=True, filler_kw={"sleep": lambda x: None})
    assert st.gaps()[0]["state"] == "open" and gw.calls("timeseries.get_range") == 0


def test_settings_errors_name_the_key():
    from dm.errors import ConfigError

    with pytest.raises(ConfigError, match=r"\[backfill\]\.max_daily_usd: .*number"):
        parse_settings({"backfill": {"max_daily_usd": "lots"}})
    with pytest.raises(ConfigError, match=r"\[backfill\]\.max_daily_usd"):
        parse_settings({"backfill": {"max_daily_usd": True}})
    with pytest.raises(ConfigError, match=r"\[backfill\]\.surprise: Extra inputs are not permitted"):
        parse_settings({"backfill": {"surprise": 1}})
    with pytest.raises(ConfigError, match=r"\[backfill\]: auto_approve_usd .* must not exceed max_request_usd"):
        parse_settings({"backfill": {"auto_approve_usd": 5, "max_request_usd": 1}})
    with pytest.raises(ConfigError, match=r"\[databento\]\.hist_gateway: must start with https://"):
        parse_settings({"databento": {"hist_gateway": "http://x"}})
    assert parse_settings({"backfill": {"max_daily_usd": 5}}).backfill.max_daily_usd == 5.0  # an int is a number


def test_progress_bar_on_a_terminal_and_log_lines_otherwise(st, gw, tmp_path):
    import io

    from rich.console import Console

    from dm.backfill import LogProgress, RichProgress, make_progress

    assert isinstance(make_progress(tty=False), LogProgress) and isinstance(make_progress(tty=True), RichProgress)
    buf = io.StringIO()
    eng = engine(st, gw, tmp_path)
    eng.progress = RichProgress(console=Console(file=buf, force_terminal=True, width=200))
    eng.fetch([req()])
    out = buf.getvalue()
    assert "2/2" in out and "chunks" in out and "120/120 records" in out and "$0.0000144/$0.0000144" in out


def test_a_killed_fetch_resumes_where_its_ledger_says(storage_url, gw, tmp_path):
    """A real `dm fetch` process is SIGKILLed while waiting for its second chunk; the rerun finds
    the first chunk stored and paid, reclaims the dead process's job and fetches only the rest."""
    import os
    import signal
    import subprocess
    import sys
    import time

    import tomlkit

    from tests.databento_fixtures import ROOT

    doc = tomlkit.parse((ROOT / "conf" / "demo.toml").read_text())
    doc["databento"]["hist_gateway"], doc["databento"]["ca_file"] = gw.url, gw.ca_file
    doc["backfill"]["work_dir"] = str(tmp_path / "backfill")
    cfg = tmp_path / "dm.toml"
    cfg.write_text(tomlkit.dumps(doc))
    gw.add_fault(Fault("timeseries.get_range", stall_s=20, skip=1))  # the second chunk hangs
    env = {**os.environ, "DM_STORAGE_URL": storage_url, "DM_REPLAY_ADDR": "127.0.0.1:1", "DATABENTO_API_KEY": KEY}
    p = subprocess.Popen([sys.executable, "-m", "dm", "fetch", "ESU4", "--start", "2024-07-01", "--end", "2024-07-03",
                          "-c", str(cfg)], cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        with open_storage(storage_url, migrate=True) as st:
            led = Ledger(st)
            while not [c for c in led.chunks() if c["state"] == "done"] or gw.calls("timeseries.get_range") < 2:
                assert p.poll() is None, p.communicate()
                assert time.monotonic() < deadline
                time.sleep(0.05)
            p.send_signal(signal.SIGKILL)
            p.wait(30)
            job = led.jobs()[0]
            assert job["state"] == "running" and job["owner"].endswith(f":{p.pid}")
            assert st.counts()["trades"] == 28  # day 1, committed with its ledger row
            gw.clear_faults()
            gw.reset_stats()
            results = engine(st, gw, tmp_path).fetch([req()])[2]
            assert results[0].chunks_skipped == 1 and results[0].chunks_done == 1
            assert [(g["start"], g["records"]) for g in gw.stats["get_range"]] == [(MIDNIGHT, 92)]
            assert st.counts()["trades"] == 120 and led.jobs()[0]["state"] == "done"
    finally:
        if p.poll() is None:
            p.kill()
        p.communicate()


def test_gap_targets_and_windows():
    """Gaps of every instrument of a publisher (instrument_id 0, migration 004's publisher_id)
    route each registered instrument; sequence gaps have no time window."""
    from dm.backfill import _targets, gap_window_ns
    from dm.instruments import InstrumentRegistry, MemoryStore
    from dm.routing import Router, RoutingConfig

    reg = InstrumentRegistry(MemoryStore())
    reg.resolve_many([("ESU4", "GLBX.MDP3", "ESU4", 1), ("NQU4", "GLBX.MDP3", "NQU4", 1), ("BTCUSD", "BINANCE", "BTCUSDT", 1001)])
    router = Router(RoutingConfig.model_validate(ROUTING))
    targets, why = _targets({"instrument_id": 0, "publisher_id": 1}, reg, router)
    assert sorted(t.symbol for t in targets) == ["ESU4", "NQU4"] and {t.routed.tier for t in targets} == {2}
    assert _targets({"instrument_id": 0}, reg, router)[1].startswith("gap of every instrument")
    assert gap_window_ns({"first_missing": 5, "last_missing": 9, "units": 0}) is None
    assert gap_window_ns({"first_missing": 10**18, "last_missing": 10**18 + 9, "units": 1}) == (10**18, 10**18 + 10)
    assert gap_window_ns({"first_missing": 1_000, "last_missing": 2_000}) is None  # no units: ids, not ns


def test_ohlcv_of_two_contracts_filters_on_ts_event(st, gw, tmp_path):
    """OHLCV has no ts_recv: Databento filters (and dm resumes) on ts_event; two contracts in one
    chunk map to two dm instruments."""
    from tests.databento_fixtures import ESU4_DIR

    src = read_dbn(ESU4_DIR / "futures_ohlcv-1m_2024-07-01T23-40_2024-07-02T00-10.dbn.zst").arrays()[RType.BAR]
    a, b = to_ns("2024-07-01T23:50"), to_ns("2024-07-02T00:05")
    eng = engine(st, gw, tmp_path)
    gw.add_fault(Fault("timeseries.get_range", cut_fraction=0.5))
    eng.fetch([req("ohlcv-1m", start=a, end=b, symbols=("ESU4", "NQU4"))])
    bars = stored(st, "bars")
    want = src[(src["ts_event"] >= np.uint64(a)) & (src["ts_event"] < np.uint64(b))]
    assert len(bars) == len(want) == 2 * 15
    reg = InstrumentRegistry(st)
    ids = {reg.get("ESU4", "GLBX.MDP3"), reg.get("NQU4", "GLBX.MDP3")}
    assert set(bars["instrument_id"].tolist()) == ids and None not in ids
    assert sorted(bars["close"].tolist()) == sorted(want["close"].tolist())


@pytest.mark.parametrize("cut", [200, 700, 1500])
def test_a_stream_cut_mid_zstd_block_resumes_exactly(st, gw, tmp_path, cut):
    """Cut after N compressed bytes: inside the metadata, inside a zstd block, near the end."""
    gw.add_fault(Fault("timeseries.get_range", cut_after_bytes=cut))
    results = engine(st, gw, tmp_path).fetch([req(start=MIDNIGHT)])[2]
    assert results[0].chunks_failed == 0
    t = source(ESU4_TRADES, RType.TRADE)
    assert same_rows(stored(st, "trades"), t[t["ts_recv"] >= np.uint64(MIDNIGHT)])
    sent = gw.stats["get_range"]
    assert sent[0]["cut"] and sent[0]["bytes"] == cut and not sent[-1]["cut"]
