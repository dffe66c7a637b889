"""Shared fixtures of the Databento tests: the fake historical gateway (real HTTPS on loopback,
local CA) serving data/databento, the settings that point dm at it, the facts of the ESU4 files."""
from __future__ import annotations

from pathlib import Path

import pytest

from dm.backfill import parse_settings
from dm.databento.fake import FakeHistoricalGateway

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "data" / "databento"
ESU4_DIR = DATA / "glbx-mdp3-esu4-nqu4-20240701"
ESU4_TRADES = ESU4_DIR / "futures_trades_2024-07-01T23-58_2024-07-02T00-02.dbn.zst"
ESU4_MBP1 = ESU4_DIR / "futures_mbp-1_2024-07-01T23-58_2024-07-02T00-02.dbn.zst"
KEY = "db-TESTKEY0123456789abcdefTESTKE"  # 32 characters, like a real key
USD_PER_GB = 2.5
DBN_SIZE = {"trades": 48, "mbp-1": 80}


@pytest.fixture(scope="module")
def gateway():
    gw = FakeHistoricalGateway(DATA, key=KEY, usd_per_gb=USD_PER_GB).start()
    yield gw
    gw.stop()


@pytest.fixture
def gw(gateway, monkeypatch):
    """The module's gateway with no faults and zeroed counters; the key in the environment."""
    gateway.clear_faults()
    gateway.reset_stats()
    monkeypatch.setenv("DATABENTO_API_KEY", KEY)
    yield gateway
    gateway.clear_faults()


def settings_for(gw, tmp_path, routing: dict | None = None, **backfill):
    """Settings pointing at ``gw``: fast backoff, downloads under tmp_path."""
    bf = {"work_dir": str(tmp_path / "backfill"), "backoff_base_s": 0.01, "backoff_max_s": 0.05}
    bf.update(backfill)
    return parse_settings({"databento": {"hist_gateway": gw.url, "ca_file": gw.ca_file, "timeout_s": 5.0},
                           "backfill": bf, "routing": routing or {}})
