"""The CLI as a user runs it (click's runner in-process; the supervisor/worker/replay commands
are run as real processes in test_e2e.py)."""
from __future__ import annotations

import shutil

import pytest
from click.testing import CliRunner

import tomllib

from dm.cli import main
from dm.instruments import first_choice
from dm.storage import open_storage

EXINFO = "data/binance/2021-10-12/BINANCE.0"


@pytest.fixture
def cfg(tmp_path, storage_url, monkeypatch):
    monkeypatch.setenv("DM_STORAGE_URL", storage_url)
    monkeypatch.setenv("DM_REPLAY_ADDR", "127.0.0.1:1")
    path = tmp_path / "dm.toml"
    shutil.copy("conf/demo.toml", path)
    return str(path)


def binance_symbols(cfg: str) -> list[str]:
    return tomllib.loads(open(cfg).read())["providers"]["binance"]["symbols"]


def run(*args):
    res = CliRunner().invoke(main, list(args), catch_exceptions=False)
    return res


def test_db_migrate_is_idempotent(cfg):
    first = run("db", "migrate", "-c", cfg)
    assert first.exit_code == 0 and "applied" in first.output
    again = run("db", "migrate", "-c", cfg)
    assert again.exit_code == 0 and "up to date" in again.output
    stats = run("db", "stats", "-c", cfg)
    assert stats.exit_code == 0 and '"trades"' in stats.output


def test_symbol_discover_add_list_remove(cfg, storage_url):
    d = run("symbol", "discover", "-c", cfg, "--provider", "binance", "--reference", EXINFO, "--quote", "USD")
    assert d.exit_code == 0
    assert "ZILUSD" in d.output and "ZILUSDT" in d.output and "ETHBRL" not in d.output

    a = run("symbol", "add", "BTCUSD", "ethusd", "-c", cfg, "--provider", "binance", "--reference", EXINFO)
    assert a.exit_code == 0, a.output
    st = open_storage(storage_url)
    ids = {s: i for i, s, ex, v, p in st.load_instruments()}
    st.close()
    assert ids["BTCUSD"] == first_choice("BTCUSD", "BINANCE")  # deterministic first choice
    assert {"BTCUSD", "ETHUSD"} <= set(binance_symbols(cfg))

    lst = run("symbol", "list", "-c", cfg, "--provider", "binance")
    assert "BTCUSD" in lst.output and str(ids["BTCUSD"]) in lst.output

    r = run("symbol", "remove", "BTCUSD", "-c", cfg, "--provider", "binance")
    assert r.exit_code == 0 and "BTCUSD" not in binance_symbols(cfg)
    assert "# per venue" in open(cfg).read()  # tomlkit kept the config's comments
    # the id is persistent: re-adding gives the same one
    run("symbol", "add", "BTCUSD", "-c", cfg, "--provider", "binance", "--reference", EXINFO)
    st = open_storage(storage_url)
    assert {s: i for i, s, ex, v, p in st.load_instruments()}["BTCUSD"] == ids["BTCUSD"]
    st.close()


def test_symbol_add_unknown_is_a_clear_error(cfg):
    res = CliRunner().invoke(main, ["symbol", "add", "NOPEUSD", "-c", cfg, "--provider", "binance", "--reference", EXINFO])
    assert res.exit_code != 0 and "NOPEUSD" in res.output
