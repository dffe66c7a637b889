"""`dm route | fetch | backfill ...` as a user runs them, against the fake gateway (real HTTPS,
the official client) and real PostgreSQL / SQLite; exit statuses of the budget guard; the API key
never printed."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import tomlkit
from click.testing import CliRunner

from dm.backfill import Ledger
from dm.cli import main
from dm.records import GapUnits
from dm.databento.fake import Fault
from dm.storage import open_storage
from tests.databento_fixtures import KEY, ROOT, USD_PER_GB, gateway, gw  # noqa: F401

WINDOW = ["--start", "2024-07-01", "--end", "2024-07-03"]


@pytest.fixture
def cfg(tmp_path, storage_url, gw, monkeypatch):
    """conf/demo.toml pointed at the fake gateway and the test's database."""
    monkeypatch.setenv("DM_STORAGE_URL", storage_url)
    monkeypatch.setenv("DM_REPLAY_ADDR", "127.0.0.1:1")
    doc = tomlkit.parse((ROOT / "conf" / "demo.toml").read_text())
    doc["databento"]["hist_gateway"] = gw.url
    doc["databento"]["ca_file"] = gw.ca_file
    doc["backfill"]["work_dir"] = str(tmp_path / "backfill")
    doc["backfill"]["auto_approve_usd"] = 0.0001  # trades ($0.0000144) run, mbp-1 ($0.0004576) needs --confirm
    doc["backfill"]["backoff_base_s"] = 0.01
    path = tmp_path / "dm.toml"
    path.write_text(tomlkit.dumps(doc))
    return str(path)


def run(*args):
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def test_route_prints_tier_and_provider():
    res = run("route", "ESU4", "ES.FUT", "DASHEUR", "-c", "conf/demo.toml")
    assert res.exit_code == 0, res.output
    lines = res.output.splitlines()
    # the demo streams ESU4 on GLBX.MDP3 (its Databento live provider): that exchange's rule decides
    assert lines[0].startswith("ESU4: tier 2 (asset_type@exchange '*@GLBX.MDP3') → historical databento GLBX.MDP3")
    assert lines[1].startswith("ES.FUT: tier 1 (symbol rule") and lines[1].endswith("stype_in parent")
    # (BTCUSD is streamed by Kraken and Coinbase in the demo: no one exchange decides it)
    assert lines[2].startswith("DASHEUR: tier 2 (asset_type@exchange '*@KRAKEN') → historical kraken")
    res = run("route", "ESU4", "--asset-type", "future", "--exchange", "CME", "-c", "conf/demo.toml", "--json")
    got = json.loads(res.output)[0]
    assert (got["tier"], got["chosen_by"], got["historical"], got["dataset"], got["exchange"]) == (
        2, "future@CME", "databento", "GLBX.MDP3", "GLBX.MDP3")


def test_fetch_then_rerun(cfg, gw, storage_url):
    res = run("fetch", "ESU4", "--schema", "trades", *WINDOW, "-c", cfg)
    assert res.exit_code == 0, res.output
    assert "rows stored: mbp_events 120, trades 120" in res.output and "2 chunk(s) fetched" in res.output
    res = run("fetch", "ESU4", "--schema", "trades", *WINDOW, "-c", cfg)
    assert res.exit_code == 0 and "0 chunk(s) fetched, 2 already done" in res.output
    assert gw.calls("timeseries.get_range") == 2
    with open_storage(storage_url) as st:
        assert st.counts()["trades"] == 120


def test_estimate_json(cfg, gw):
    res = run("backfill", "estimate", "ESU4", "--schema", "trades", "--schema", "mbp-1", *WINDOW, "-c", cfg, "--json")
    assert res.exit_code == 0, res.output
    out = json.loads(res.output)
    assert out["total"]["records"] == 120 + 2288
    assert out["total"]["bytes"] == 120 * 48 + 2288 * 80
    assert out["total"]["usd_nano"] == (120 * 48 + 2288 * 80) * USD_PER_GB
    assert [p["usd_nano"] for p in out["plans"]] == [120 * 48 * USD_PER_GB, 2288 * 80 * USD_PER_GB]
    assert out["verdict"]["decision"] == "confirm" and gw.calls("timeseries.get_range") == 0


def test_budget_guard_exit_statuses_and_a_confirmed_cut_fetch(cfg, gw, storage_url, tmp_path):
    res = run("fetch", "ESU4", "--schema", "mbp-1", *WINDOW, "-c", cfg)
    assert res.exit_code == 3 and "needs --confirm" in res.output
    res = run("fetch", "ESU4", "--schema", "mbp-1", *WINDOW, "-c", cfg, "--confirm", "--dry-run")
    assert res.exit_code == 0 and "dry run: nothing fetched" in res.output
    strict = tmp_path / "strict.toml"
    doc = tomlkit.parse(open(cfg).read())
    doc["backfill"]["max_request_usd"] = 0.0004
    strict.write_text(tomlkit.dumps(doc))
    res = run("fetch", "ESU4", "--schema", "mbp-1", *WINDOW, "-c", str(strict), "--confirm")
    assert res.exit_code == 4 and "REFUSED" in res.output and "max_request_usd $0.0004" in res.output
    assert gw.calls("timeseries.get_range") == 0

    gw.add_fault(Fault("timeseries.get_range", cut_fraction=0.5))
    res = run("fetch", "ESU4", "--schema", "mbp-1", *WINDOW, "-c", cfg, "--confirm")
    assert res.exit_code == 0, res.output
    assert "rows stored: bbo 2,288, mbp_events 2,288" in res.output and "3 request(s)" in res.output
    with open_storage(storage_url) as st:
        assert st.counts()["bbo"] == 2288
    rep = json.loads(run("backfill", "cost-report", "-c", cfg, "--json").output)
    assert rep["total"]["usd_nano"] == 2288 * 80 * USD_PER_GB
    assert all(c["usd_nano"] == c["quoted_usd_nano"] for c in rep["chunk"].values())
    text = run("backfill", "cost-report", "-c", cfg).output
    assert "by day:" in text and "by schema:" in text and "mbp-1" in text and "total: $0.0004576" in text
    status = run("backfill", "status", "-c", cfg).output
    assert "job 1 done" in status and "2/2 chunks" in status
    chunks = run("backfill", "status", "-c", cfg, "--job", "1").output
    assert chunks.count("chunk ") == 2 and "2 request(s)" in chunks


def test_fill_gaps_command(cfg, gw, storage_url):
    from dm.instruments import InstrumentRegistry
    from dm.databento.times import to_ns

    with open_storage(storage_url, migrate=True) as st:
        es = InstrumentRegistry(st).resolve("ESU4", "GLBX.MDP3", "ESU4", 1)
        btc = InstrumentRegistry(st).resolve("ZILUSD", "BINANCE", "ZILUSDT", 1001)
        st.record_gap(es, "databento.reconnect", to_ns("2024-07-02T00:00:10"), to_ns("2024-07-02T00:00:20"), 1, units=GapUnits.NS)
        st.record_gap(btc, "binance.update_id", 5, 9, 1)
    res = run("backfill", "fill-gaps", "-c", cfg, "--confirm")
    assert res.exit_code == 0, res.output
    assert "gap 1: filled" in res.output and "gap 2: unfillable" in res.output
    with open_storage(storage_url) as st:
        assert [g["state"] for g in st.gaps()] == ["filled", "unfillable"]
        assert Ledger(st).jobs()[0]["gap_id"] == 1
    assert "no open gaps" in run("backfill", "fill-gaps", "-c", cfg).output


def test_the_api_key_is_never_printed(cfg, gw, tmp_path):
    """Real processes, all output captured: a wrong key (401) and a run through faults."""
    env = {**os.environ, "DATABENTO_API_KEY": "db-WRONGKEY-0123456789abcdefWRONG"}
    p = subprocess.run([sys.executable, "-m", "dm", "fetch", "ESU4", *WINDOW, "-c", cfg], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 1 and "HTTP 401 auth_invalid_key" in p.stderr
    assert "WRONGKEY" not in p.stdout + p.stderr
    gw.add_fault(Fault("timeseries.get_range", status=429, retry_after=0), Fault("timeseries.get_range", cut_fraction=0.5),
                 Fault("metadata.get_cost", status=503))
    env["DATABENTO_API_KEY"] = KEY
    p = subprocess.run([sys.executable, "-m", "dm", "fetch", "ESU4", *WINDOW, "-c", cfg], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    out = p.stdout + p.stderr
    assert "rate limit" in out and "stream cut" in out and "server error" in out
    assert KEY not in out and KEY[3:15] not in out
