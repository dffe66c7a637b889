"""Runtime control (dm.control): the request grammar, and a running service that takes
SUBSCRIBE / UNSUBSCRIBE / LIST / STATUS on its control socket — the Kraken v1 recording replayed
at its recorded pace, a real supervisor, worker and persister, readers through dm.client."""
from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

import pytest

from dm.control import ControlError, parse_control_section, parse_request, request
from dm.errors import ConfigError
from dm.records import Bbo, Depth, Trade
from tests.e2e import KRAKEN_FILES, ROOT, config_head, kraken_provider, leftover_segments, start_supervisor, worker_stats


# ----------------------------------------------------------------------------- request grammar

def test_text_and_json_requests_are_the_same():
    assert parse_request("SUBSCRIBE ethusd@kraken persist-only") == parse_request(
        '{"op": "subscribe", "symbol": "ETHUSD@KRAKEN", "persist_only": true}')
    assert parse_request(b"unsubscribe ETHUSD@KRAKEN save\n") == {
        "op": "unsubscribe", "symbol": "ETHUSD", "exchange": "KRAKEN", "persist_only": False, "save": True}
    assert parse_request("LIST")["op"] == "list" and parse_request('{"cmd": "STATUS"}')["op"] == "status"
    assert parse_request('{"op": "subscribe", "symbol": "ETHUSD", "exchange": "kraken"}')["exchange"] == "KRAKEN"


@pytest.mark.parametrize("line, why", [
    ("", "empty"), ("FROB X@Y", "unknown op"), ("SUBSCRIBE", "needs SYMBOL@EXCHANGE"),
    ("SUBSCRIBE ETHUSD", "needs SYMBOL@EXCHANGE"), ("SUBSCRIBE ETHUSD@KRAKEN loud", "unknown flag"),
    ("{not json", "not JSON"), ("[1, 2]", "unknown op"), ('"x"', "unknown op"),
])
def test_bad_requests_are_one_clear_error(line, why):
    with pytest.raises(ControlError, match=why):
        parse_request(line)


def test_control_section_is_validated():
    assert parse_control_section({"max_channels": 3})["max_channels"] == 3
    with pytest.raises(ConfigError, match="control.max_chanels: unknown key"):
        parse_control_section({"max_chanels": 3})
    with pytest.raises(ConfigError, match="control.timeout_s: expected float"):
        parse_control_section({"timeout_s": "10"})
    with pytest.raises(ConfigError, match="control.mode: not an octal"):
        parse_control_section({"mode": "rw"})


def test_no_service_is_a_clear_error(tmp_path):
    with pytest.raises(ControlError, match="no control socket"):
        request(tmp_path / "control.sock", {"op": "list"})


# ----------------------------------------------------------------------------- a running service

CONFIGURED = ["BTCUSD", "LSKUSD", "ICXUSD"]  # of the 10 recorded pairs; AUDUSD etc. come at runtime


def _wait(cond, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while True:
        v = cond()
        if v:
            return v
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.02)


def _dm(*args, cfg) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "dm", *args, "-c", str(cfg)], cwd=ROOT, capture_output=True, text=True, timeout=60)


@pytest.fixture
def service(tmp_path, instance):
    """Supervisor + Kraken worker + persister on the recorded session at its recorded pace
    (the session lasts minutes: late subscriptions find the replay still running)."""
    cfg = tmp_path / "dm.toml"
    cfg.write_text(config_head(tmp_path, instance, f"sqlite:///{tmp_path / 'dm.sqlite'}", KRAKEN_FILES, speed=1.0, once=False)
                   + "[control]\nmax_channels = 5\nunsubscribe_grace_s = 0.5\n"
                   + "# runtime subscriptions are written below by --save\n"
                   + kraken_provider(tmp_path, symbols=CONFIGURED))
    sup = start_supervisor(cfg, tmp_path / "supervisor.log")
    sock = tmp_path / "run" / instance / "control.sock"
    try:
        _wait(lambda: sock.exists() and (tmp_path / "run" / instance / "kraken.ctl.sock").exists()
              and (tmp_path / "run" / instance / "kraken.stats.json").exists()
              and worker_stats(tmp_path, instance, "kraken")["connected"], 60, "worker connected")
        yield cfg, sock, sup
    finally:
        if sup.poll() is None:
            sup.send_signal(signal.SIGTERM)
            try:
                sup.wait(30)
            except subprocess.TimeoutExpired:
                sup.kill()


def test_subscribe_at_runtime_without_reconnect_then_unsubscribe(service, tmp_path, instance):
    """The issue's figure: a running service takes SUBSCRIBE AUDUSD@KRAKEN, a reader gets its book
    and BBO records with no worker restart and no reconnect; UNSUBSCRIBE frees the channel."""
    from dm.client import Client

    cfg, sock, sup = service
    pid = worker_stats(tmp_path, instance, "kraken")["pid"]
    client = Client(instance=instance, registry=f"/dm.reg.{instance}", control=str(sock))
    assert "AUDUSD" not in {s for _, s, _ in client.channels()}
    t0 = time.monotonic()
    sub = client.subscribe("AUDUSD", "KRAKEN", request=True, start="oldest", wait=10, follow=False)
    got = []
    _wait(lambda: (r := sub.read()) is not None and got.append(r) is None and any(isinstance(x, (Depth, Bbo)) for x in got),
          30, "first AUDUSD book record")
    first_record_s = time.monotonic() - t0
    assert first_record_s < 10, first_record_s  # the bench measures it; here: it arrives at all
    st = worker_stats(tmp_path, instance, "kraken")
    assert st["pid"] == pid and st["connects"] == 1 and st["reconnects"] == 0
    assert {r.instrument_id for r in got} == {sub.instrument_id}, ({r.instrument_id for r in got}, sub.instrument_id, got[:3])

    listing = request(sock, "LIST")
    assert listing["ok"] and {s["symbol"] for s in listing["symbols"]} == set(CONFIGURED) | {"AUDUSD"}
    assert request(sock, {"op": "status"})["health"]["children"]

    ans = request(sock, "UNSUBSCRIBE AUDUSD@KRAKEN")
    assert ans["ok"], ans
    assert "AUDUSD" not in {s for _, s, _ in client.channels()}
    import threading

    rest: list = []
    reader = threading.Thread(target=lambda: rest.extend(sub), daemon=True)  # ends: the producer closed it
    reader.start()
    reader.join(20)
    assert not reader.is_alive(), "the reader did not see the channel close"
    assert sub.producer_state() == "closed"
    name = f"dm.{instance}.KRAKEN.AUDUSD"
    _wait(lambda: name not in leftover_segments(instance), 10, "channel unlinked after the grace period")
    assert worker_stats(tmp_path, instance, "kraken")["connects"] == 1
    client.close()


def test_errors_budget_persist_only_and_save(service, tmp_path, instance):
    cfg, sock, _ = service
    unknown = request(sock, "SUBSCRIBE NOPEUSD@KRAKEN")
    assert not unknown["ok"] and "NOPEUSD" in unknown["error"]
    assert "no enabled provider for exchange NYSE" in request(sock, "SUBSCRIBE IBM@NYSE")["error"]
    assert "already carried" in request(sock, "SUBSCRIBE BTCUSD@KRAKEN")["error"]
    assert "not carried" in request(sock, "UNSUBSCRIBE AUDUSD@KRAKEN")["error"]

    # 3 configured + 2 = the budget of 5 channels; the 6th is refused, persist-only is not a channel
    r = _dm("subscribe", "AUDUSD@KRAKEN", "--save", cfg=cfg)
    assert r.returncode == 0 and "channel /dm." in r.stdout and "saved to" in r.stdout, r.stderr
    assert request(sock, "SUBSCRIBE DASHEUR@KRAKEN")["ok"]
    full = _dm("subscribe", "KAVAUSD@KRAKEN", cfg=cfg)
    assert full.returncode == 1 and "channel budget full" in full.stderr
    assert request(sock, "SUBSCRIBE KAVAUSD@KRAKEN persist-only")["ok"]
    ls = _dm("ls", cfg=cfg)
    assert ls.returncode == 0 and "KAVAUSD" in ls.stdout and "(persist only)" in ls.stdout
    saved = cfg.read_text()
    assert '"AUDUSD"' in saved and "# runtime subscriptions are written below by --save" in saved

    # the worker keeps its runtime symbols across a restart of its own (kill -9)
    pid = worker_stats(tmp_path, instance, "kraken")["pid"]
    import os

    os.kill(pid, signal.SIGKILL)
    _wait(lambda: (s := worker_stats(tmp_path, instance, "kraken"))["pid"] != pid and s["connected"], 60, "worker restarted")
    carried = {s["symbol"]: s["channel"] for s in request(sock, "LIST")["symbols"]}
    assert set(carried) == set(CONFIGURED) | {"AUDUSD", "DASHEUR", "KAVAUSD"} and carried["KAVAUSD"] is None
    r = _dm("unsubscribe", "AUDUSD@KRAKEN", "--save", cfg=cfg)
    assert r.returncode == 0, r.stderr
    assert '"AUDUSD"' not in cfg.read_text()
    assert json.loads((tmp_path / "run" / instance / "kraken.runtime.json").read_text())["added"] == {"DASHEUR": False, "KAVAUSD": True}


@pytest.mark.parametrize("venue", ["binance", "kraken_futures"])
def test_runtime_subscribe_other_venues(venue, tmp_path, instance):
    """Binance (SUBSCRIBE method on the combined stream) and Kraken Futures (subscribe event):
    the symbol added at runtime gets records on the same connection."""
    from dm.client import Client
    from tests.e2e import B38_SYMBOLS, KF_FILES, KF_PRODUCTS, kraken_futures_provider, write_config

    if venue == "binance":
        cfg = write_config(tmp_path, instance, f"sqlite:///{tmp_path / 'dm.sqlite'}", speed=1.0, once=False,
                           symbols=B38_SYMBOLS[:4])
        target, exchange = "ZILUSD", "BINANCE"
    else:
        products = list(KF_PRODUCTS.values())
        cfg = tmp_path / "dm.toml"
        cfg.write_text(config_head(tmp_path, instance, f"sqlite:///{tmp_path / 'dm.sqlite'}", KF_FILES, speed=1.0, once=False)
                       + kraken_futures_provider(tmp_path, symbols=products[1:]))
        target, exchange = products[0], "KRAKEN_FUTURES"
    sup = start_supervisor(cfg, tmp_path / "supervisor.log")
    run_dir = tmp_path / "run" / instance
    try:
        _wait(lambda: (run_dir / f"{venue}.ctl.sock").exists() and (run_dir / f"{venue}.stats.json").exists()
              and worker_stats(tmp_path, instance, venue)["connected"], 60, "worker connected")
        client = Client(instance=instance, registry=f"/dm.reg.{instance}", control=str(run_dir / "control.sock"))
        sub = client.subscribe(target, exchange, request=True, start="oldest", wait=10, follow=False)
        got = []
        _wait(lambda: (r := sub.read()) is not None and got.append(r) is None and len(got) >= 3, 30, f"{target} records")
        assert {r.instrument_id for r in got} == {sub.instrument_id}
        assert worker_stats(tmp_path, instance, venue)["connects"] == 1
        assert request(run_dir / "control.sock", f"UNSUBSCRIBE {target}@{exchange}")["ok"]
        client.close()
    finally:
        sup.send_signal(signal.SIGTERM)
        try:
            sup.wait(30)
        except subprocess.TimeoutExpired:
            sup.kill()
