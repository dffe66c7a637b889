"""Runtime subscriptions (dm.control) on Deribit v2 (public/subscribe) and Bitstamp v2
(bts:subscribe, then the REST snapshot of the new book): a symbol added to a running worker gets
records on the same connection, from the real recordings replayed at their recorded pace."""
from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path

import pytest

from dm.control import request
from dm.records import Depth
from tests.e2e import config_head, provider_toml, start_supervisor, worker_stats

ROOT = Path(__file__).resolve().parent.parent


def _wait(cond, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while True:
        v = cond()
        if v:
            return v
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.02)


@pytest.mark.timeout(120)
@pytest.mark.parametrize("venue", ["deribit", "bitstamp"])
def test_runtime_subscribe(venue, tmp_path, instance):
    from dm.client import Client

    if venue == "deribit":
        files = [ROOT / "data/deribit/2021-07-22"]
        block = provider_toml(tmp_path, "deribit", "deribit", "DERIBIT", "ws://{replay}/ws/api/v2",
                              ["ETHUSD-ETH-210730-2800-C"], ("book", "ticker"), interval="raw")
        block += 'currencies = ["BTC", "ETH"]\n'   # runtime symbols must be of a currency fetched at start
        target, exchange = "BTCUSD-BTC-210924-8000-P", "DERIBIT"
    else:
        files = [ROOT / "data/bitstamp/2022-01-05"]
        block = provider_toml(tmp_path, "bitstamp", "bitstamp", "BITSTAMP", "ws://{replay}/bitstamp", ["XLMGBP"],
                              ("diff_order_book",))
        target, exchange = "BATBTC", "BITSTAMP"
    cfg = tmp_path / "dm.toml"
    cfg.write_text(config_head(tmp_path, instance, f"sqlite:///{tmp_path / 'dm.sqlite'}", files, speed=1.0, once=False)
                   + block)
    sup = start_supervisor(cfg, tmp_path / "supervisor.log")
    run_dir = tmp_path / "run" / instance
    try:
        _wait(lambda: (run_dir / f"{venue}.ctl.sock").exists() and (run_dir / f"{venue}.stats.json").exists()
              and worker_stats(tmp_path, instance, venue)["connected"], 60, "worker connected")
        client = Client(instance=instance, registry=f"/dm.reg.{instance}", control=str(run_dir / "control.sock"))
        sub = client.subscribe(target, exchange, request=True, start="oldest", wait=10, follow=False)
        got = []
        _wait(lambda: (r := sub.read()) is not None and got.append(r) is None
              and sum(isinstance(x, Depth) for x in got) >= 3, 40, f"{target} book records")
        assert {r.instrument_id for r in got} == {sub.instrument_id}
        st = worker_stats(tmp_path, instance, venue)
        assert st["connects"] == 1 and st["book_gaps"] == 0 and st["book_crossed"] == 0
        assert request(run_dir / "control.sock", f"UNSUBSCRIBE {target}@{exchange}")["ok"]
        client.close()
    finally:
        sup.send_signal(signal.SIGTERM)
        try:
            sup.wait(30)
        except subprocess.TimeoutExpired:
            sup.kill()
