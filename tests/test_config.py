from __future__ import annotations

import pytest

from dm.config import load, parse
from dm.errors import ConfigError

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


def test_storage_url_env_override():
    cfg = parse(MIN, env={"DM_STORAGE_URL": "postgresql://postgres@127.0.0.1:5432/x"})
    assert cfg.storage.url == "postgresql://postgres@127.0.0.1:5432/x"


def test_replay_placeholder():
    raw = {"providers": {"binance": {"ws_url": "ws://{replay}/stream", "symbols": ["X"]}}}
    assert parse(raw, env={"DM_REPLAY_ADDR": "127.0.0.1:9"}).providers["binance"].ws_url == "ws://127.0.0.1:9/stream"
    with pytest.raises(ConfigError, match="replay"):
        parse(raw, env={})
    # under a supervisor that runs the replay server, the children resolve it
    raw["replay"] = {"enabled": True, "files": ["x"]}
    assert parse(raw, env={}).providers["binance"].ws_url == "ws://{replay}/stream"


@pytest.mark.parametrize("raw, match", [
    ({"shm": {"channel_bytes": 5000}}, "power of two"),
    ({"shm": {"bogus": 1}}, "unknown key"),
    ({"storage": {"url": "mysql://x"}}, "storage.url"),
    ({"providers": {"x": {"kind": "nope", "ws_url": "a", "symbols": []}}}, "kind"),
    ({"providers": {"binance": {"symbols": []}}}, "ws_url"),
])
def test_errors_name_the_key(raw, match):
    with pytest.raises(ConfigError, match=match):
        parse(raw, env={})


def test_missing_file():
    with pytest.raises(ConfigError, match="not found"):
        load("/nonexistent.toml")
