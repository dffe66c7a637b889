from __future__ import annotations

import subprocess
import sys

import pytest

from dm.config import load, parse, worker_kinds
from dm.errors import ConfigError
from dm.venues import kinds
from tests.e2e import ROOT

MIN = {"providers": {"binance": {"ws_url": "wss://stream.binance.com:9443/stream", "symbols": ["btcusd"]}}}


def test_shipped_configs_load():
    for name in ("conf/demo.toml", "conf/prod.toml"):
        cfg = load(name, env={"DM_REPLAY_ADDR": "127.0.0.1:1"})
        assert cfg.enabled_providers


def test_defaults_and_names():
    cfg = parse(MIN, env={})
    p = cfg.providers["binance"]
    assert p.symbols == ("BTCUSD",) and p.publisher_id == 1001 and p.exchange == "BINANCE"
    assert cfg.channel_name("BINANCE", "BTCUSD") == "/dm.default.BINANCE.BTCUSD"
    assert cfg.persist_name("binance") == "/dm.default.binance.persist"
    s = cfg.supervisor
    assert (s.fail_fast, s.failed_retry_s) == (False, 300.0)
    assert cfg.persister.max_lag_s == 10.0 and cfg.storage.timeout_s == 5.0


def test_storage_url_env_override():
    cfg = parse(MIN, env={"DM_STORAGE_URL": "postgresql://postgres@127.0.0.1:5432/x"})
    assert cfg.storage.url == "postgresql://postgres@127.0.0.1:5432/x"
    with pytest.raises(ConfigError, match=r"^storage.url \(\$DM_STORAGE_URL\): must be"):
        parse(MIN, env={"DM_STORAGE_URL": "mysql://x"})


def test_replay_placeholder():
    raw = {"providers": {"binance": {"ws_url": "ws://{replay}/stream", "symbols": ["X"]}}}
    assert parse(raw, env={"DM_REPLAY_ADDR": "127.0.0.1:9"}).providers["binance"].ws_url == "ws://127.0.0.1:9/stream"
    with pytest.raises(ConfigError, match="replay"):
        parse(raw, env={})
    # under a supervisor that runs the replay server, the children resolve it
    raw["replay"] = {"enabled": True, "files": ["x"]}
    assert parse(raw, env={}).providers["binance"].ws_url == "ws://{replay}/stream"


def test_venue_keys_are_kept_for_the_venue_and_shared_ones_typed():
    raw = {"providers": {"kraken": {"ws_url": "ws://x", "symbols": ["BTCUSD"], "depth": 100, "stale_after_s": 10,
                                    "quote_aliases": {}}}}
    p = parse(raw, env={}).providers["kraken"]
    assert p.extra == {"depth": 100, "stale_after_s": 10.0, "quote_aliases": {}}
    raw["providers"]["kraken"]["stale_after_s"] = "10"
    with pytest.raises(ConfigError, match=r"^providers.kraken.stale_after_s: expected a number, got '10'$"):
        parse(raw, env={})


def test_worker_kinds_are_the_kinds_with_a_worker():
    from dm.providers.base import provider_class

    # every registered venue has a worker (other venue branches add theirs: a superset check)
    assert set(worker_kinds()) >= {"binance", "kraken", "kraken_futures", "bybit", "deribit", "bitstamp"}
    assert set(worker_kinds()) == set(kinds()) | {"databento"}   # databento: a worker that is not a venue
    for k in worker_kinds():
        provider_class(k)
    assert provider_class("databento").__name__ == "DatabentoLiveProvider"  # dm.providers.WORKERS
    with pytest.raises(NotImplementedError):
        provider_class("nope")


P = {"ws_url": "ws://x", "symbols": ["BTCUSD"]}


@pytest.mark.parametrize("raw, line", [
    ({"persister": {"batch_ms": "50"}}, "persister.batch_ms: expected an integer, got '50'"),
    ({"persister": {"batch_mss": 50}}, "persister.batch_mss: unknown key (did you mean batch_ms?)"),
    ({"dm": {"log_format": "jsn"}}, "dm.log_format: must be 'console' or 'json', got 'jsn'"),
    ({"providers": {"db": {"kind": "databento", **P}}},
     "providers.db.dataset: missing (required for kind 'databento')"),
    ({"providers": {"x": {"kind": "nope", "ws_url": "a", "symbols": []}}},
     "providers.x.kind: 'nope' has no worker; kinds with a worker: " + ", ".join(sorted(worker_kinds()))),
    ({"providers": {"binance": {"symbols": []}}}, "providers.binance.ws_url: missing (required)"),
    ({"providers": {"binance": {**P, "enabled": "yes"}}}, "providers.binance.enabled: expected true or false, got 'yes'"),
    ({"providers": {"binance": {**P, "symbols": "BTCUSD"}}}, "providers.binance.symbols: expected a list, got 'BTCUSD'"),
    ({"shm": {"channel_bytes": 5000}}, "shm.channel_bytes: must be a power of two >= 4096, got 5000"),
    ({"shm": {"bogus": 1}}, "shm.bogus: unknown key (known: registry, channel_bytes, persist_bytes, spool_dir, spool_fsync, channel_bytes_by_class)"),
    ({"storage": {"url": "mysql://x"}}, "storage.url: must be sqlite:///PATH or postgresql://..., got 'mysql://x'"),
    ({"supervisor": {"fail_fast": 1}}, "supervisor.fail_fast: expected true or false, got 1"),
    ({"supervisor": {"restart_backoff_min_s": 5, "restart_backoff_max_s": 1}},
     "supervisor.restart_backoff_max_s: must be >= restart_backoff_min_s, got 1"),
    ({"dm": {"instance": "a.b"}}, "dm.instance: must be 1-32 letters, digits, '-' or '_', got 'a.b'"),
    ({"symbology": {"quote_aliases": {"USDT": 1}}}, "symbology.quote_aliases.USDT: expected a string, got 1"),
    ({"persister": {"batch_ms": "50", "batch_records": "x"}},
     "persister.batch_records: expected an integer, got 'x' (and 1 more error)"),
])
def test_errors_are_one_line_naming_the_key(raw, line):
    with pytest.raises(ConfigError) as e:
        parse(raw, env={})
    assert str(e.value) == line


def test_errors_carry_no_secret():
    with pytest.raises(ConfigError) as e:
        parse({"storage": {"url": "mysql://dm:hunter2hunter2@db/x"}}, env={})
    assert "hunter2hunter2" not in str(e.value) and "dm:***@db" in str(e.value)


def test_missing_file():
    with pytest.raises(ConfigError, match="not found"):
        load("/nonexistent.toml")


def _dm(*args, **kw):
    return subprocess.run([sys.executable, "-m", "dm", *args], cwd=ROOT, capture_output=True, text=True, timeout=60, **kw)


@pytest.mark.parametrize("toml, key", [
    ('[persister]\nbatch_ms = "50"\n', "persister.batch_ms"),
    ("[persister]\nbatch_mss = 50\n", "persister.batch_mss"),
    ('[dm]\nlog_format = "jsn"\n', "dm.log_format"),
    ('[providers.databento]\nkind = "databento"\nws_url = "x"\nsymbols = ["ES"]\n', "providers.databento.dataset"),
    ("[persister\n", "line 1"),
])
def test_cli_start_up_error_is_one_line(tmp_path, toml, key):
    """A bad config stops `dm supervise` before anything starts: exit 1, one line, no traceback."""
    cfg = tmp_path / "bad.toml"
    cfg.write_text(toml)
    r = _dm("supervise", "-c", str(cfg))
    assert r.returncode == 1
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: ") and key in lines[0], r.stderr


def test_cli_unreachable_database_is_one_line_without_the_password(tmp_path):
    r = _dm("db", "migrate", "--url", "postgresql://postgres:Hunter2Secret@127.0.0.1:1/dm?password=Hunter2Secret")
    assert r.returncode == 1
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: cannot connect to PostgreSQL"), r.stderr
    assert "Hunter2Secret" not in r.stderr + r.stdout


def test_cli_unknown_provider_is_one_line(tmp_path):
    r = _dm("worker", "nope", "-c", "conf/demo.toml", env={"DM_REPLAY_ADDR": "127.0.0.1:1", "PATH": "/usr/bin:/bin"})
    assert r.returncode == 1
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "no provider 'nope'" in lines[0], r.stderr
