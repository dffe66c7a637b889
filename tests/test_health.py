"""dm.health on real stats files in a run directory: readiness, health, frames/s, the
Prometheus exposition (parsed back with prometheus_client's parser) and the systemd
notifications on a real unix datagram socket. The children are described by the supervisor's
own ``Child`` records (pids of this test process, so "its current process wrote the report"
holds); the processes themselves are exercised in test_supervisor_procs.py."""
from __future__ import annotations

import json
import os
import socket
import time

import pytest
from prometheus_client.parser import text_string_to_metric_families

from dm.config import parse
from dm.health import Notifier
from dm.supervisor import Child, RestartPolicy, Supervisor


class Proc:
    def __init__(self, pid):
        self.pid, self.returncode = pid, None


PIDS = {"persister": 101, "binance": 102, "kraken": 103}


def make(tmp_path, **supervisor):
    cfg = parse({
        "dm": {"instance": "h", "run_dir": str(tmp_path / "run")},
        "persister": {"max_lag_s": 5.0},
        "supervisor": {"stall_after_s": 3.0, **supervisor},
        "providers": {p: {"kind": p, "ws_url": "ws://x", "symbols": ["BTCUSD"]} for p in ("binance", "kraken")},
    }, env={})
    sup = Supervisor(cfg, "x.toml")
    for spec in sup.specs():
        sup.children[spec.name] = Child(spec, RestartPolicy(1, 2, 3, 4), proc=Proc(PIDS[spec.name]), state="running", starts=1)
    (tmp_path / "run" / "h").mkdir(parents=True)
    return sup


def write(sup, name, **st):
    st.setdefault("pid", PIDS[name])
    st.setdefault("ts", time.time())
    (sup.run_dir / f"{name}.stats.json").write_text(json.dumps(st))


def worker(sup, name, **kw):
    base = {"provider": name, "exchange": name.upper(), "connected": True, "frames": 10, "records": 20,
            "frames_by_kind": {"trade": 6, "bbo": 4}, "records_by_channel": {"BTCUSD": 20},
            "dead_letters": 1, "dead_letters_by_kind": {"CodecError": 1}, "reconnects": 2, "gaps": 3,
            "resyncs": 1, "spool_bytes": 4096, "last_frame_ns": time.time_ns()}
    base.update(kw)
    write(sup, name, **base)


def persister(sup, queues=None, state="ok", **kw):
    st = {"rows": {"trades": 5}, "storage": {"state": state, "last_error": kw.pop("last_error", ""), "last_ok_ns": time.time_ns(),
          "write_latency_s": {"buckets": {"0.001": 3, "0.01": 7, "0.1": 9, "+Inf": 10}, "sum": 0.25, "count": 10}}}
    if queues is not None:
        st["queues"] = queues
    st.update(kw)
    write(sup, "persister", **st)


def q(attached=True, lag_s=0.1, pending=3):
    return {"attached": attached, "pending": pending, "lag_s": lag_s, "records": 100, "dead_letters": 0}


def verdict(sup):
    sup.health.refresh()
    return sup.health.evaluate()


def test_ready_needs_every_worker_connected_and_its_queue_attached(tmp_path):
    sup = make(tmp_path)
    v = verdict(sup)
    assert not v.ready and set(v.waiting) == {"persister (starting)", "binance (connecting)", "kraken (connecting)"}
    worker(sup, "binance")
    worker(sup, "kraken", connected=False)
    persister(sup, queues={"binance": q(), "kraken": q(attached=False)})
    v = verdict(sup)
    assert v.reasons == ["kraken: not connected"] and v.waiting == ["kraken (connecting)"]
    worker(sup, "kraken")
    v = verdict(sup)
    assert v.reasons == ["kraken: persist queue not attached"] and v.waiting == ["persister (attaching kraken)"]
    persister(sup, queues={"binance": q(), "kraken": q()})
    assert verdict(sup).ready
    # a persister that does not report queues (older stats) is taken as attached once it reports
    persister(sup)
    assert verdict(sup).ready


def test_report_of_another_pid_is_not_progress(tmp_path):
    sup = make(tmp_path)
    worker(sup, "binance", pid=999)  # a previous life of the worker
    worker(sup, "kraken")
    persister(sup)
    v = verdict(sup)
    assert v.reasons == ["binance: not connected"]
    assert sup.health_doc()["children"]["binance"]["progress"] == {"reporting": False, "connected": False}


@pytest.mark.parametrize("state, unhealthy", [("hung", True), ("failing", True), ("connecting", False)])
def test_storage_not_ok_is_not_ready_but_keeps_the_watchdog(tmp_path, state, unhealthy):
    sup = make(tmp_path)
    worker(sup, "binance")
    worker(sup, "kraken")
    persister(sup, queues={"binance": q(), "kraken": q()}, state=state,
              last_error="connection to postgresql://dm:hunter2secret@db/dm timed out; password=hunter2secret")
    v = verdict(sup)
    assert not v.ready and v.reasons[0].startswith(f"storage: {state}")
    # an outside fault the service rides out (workers spool, the persister retries): a watchdog
    # restart would only add gaps
    assert v.watchdog_ok(fail_fast=False) is True and v.watchdog_ok(fail_fast=True) is False
    assert bool(v.unhealthy) is unhealthy
    doc = sup.health_doc()
    assert doc["storage"]["state"] == state
    assert "hunter2secret" not in json.dumps(doc) and "***" in doc["storage"]["last_error"]


def test_persist_lag_over_max_is_not_ready(tmp_path):
    sup = make(tmp_path)
    worker(sup, "binance")
    worker(sup, "kraken")
    persister(sup, queues={"binance": q(lag_s=4.9), "kraken": q(lag_s=5.1)})
    v = verdict(sup)
    assert v.reasons == ["kraken: persist lag 5.1 s > persister.max_lag_s 5 s"]
    assert v.watchdog_ok(fail_fast=False) and not v.watchdog_ok(fail_fast=True)
    assert sup.health_doc()["storage"]["lag_s"] == 5.1


def test_failed_provider_is_not_ready_but_local(tmp_path):
    sup = make(tmp_path)
    sup.children["kraken"].state = "failed"
    sup.children["kraken"].last_exit = 1
    worker(sup, "binance")
    persister(sup, queues={"binance": q()})
    v = verdict(sup)
    assert v.reasons == ["kraken: failed (crash loop; exit code 1)"] and v.waiting == []  # READY=1 may go
    assert v.watchdog_ok(fail_fast=False) and not v.watchdog_ok(fail_fast=True)
    assert sup.health_doc()["healthy"] is False


def test_stalled_child(tmp_path):
    sup = make(tmp_path)
    worker(sup, "binance")
    worker(sup, "kraken")
    persister(sup, ts=time.time() - 10)
    v = verdict(sup)
    assert len(v.reasons) == 1 and v.reasons[0].startswith("persister: stalled (last report 10.")
    assert v.unhealthy and not v.watchdog_ok(fail_fast=False)
    assert sup.health_doc()["children"]["persister"]["progress"]["stalled"] is True


def test_frames_per_second_from_successive_reports(tmp_path):
    sup = make(tmp_path)
    t = time.time()
    worker(sup, "binance", frames=1000, ts=t - 2)
    sup.health.refresh()
    assert sup.health.worker_progress("binance")["frames_per_s"] is None  # one report: no rate yet
    worker(sup, "binance", frames=1500, ts=t)
    sup.health.refresh()
    p = sup.health.worker_progress("binance")
    assert p["frames_per_s"] == 250.0 and p["connected"] and p["reconnects"] == 2 and p["spool_bytes"] == 4096
    assert 0 <= p["last_frame_age_s"] < 5


def test_metrics_parse_as_prometheus_text(tmp_path):
    sup = make(tmp_path)
    sup.children["kraken"].state = "failed"
    sup.children["kraken"].restarts = 6
    worker(sup, "binance")
    persister(sup, queues={"binance": q(lag_s=0.5, pending=7)})
    text = sup.metrics_text().decode()
    fams = {f.name: f for f in text_string_to_metric_families(text)}
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value for f in fams.values() for s in f.samples}

    def val(name, **labels):
        return samples[(name, tuple(sorted(labels.items())))]

    assert fams["dm_worker_frames"].type == "counter"
    assert val("dm_worker_frames_total", provider="binance", kind="trade") == 6
    assert val("dm_channel_records_total", provider="binance", exchange="BINANCE", symbol="BTCUSD") == 20
    assert val("dm_worker_dead_letters_total", provider="binance", kind="CodecError") == 1
    assert val("dm_worker_gaps_total", provider="binance") == 3
    assert val("dm_worker_reconnects_total", provider="binance") == 2
    assert val("dm_worker_resyncs_total", provider="binance") == 1
    assert fams["dm_worker_spool_bytes"].type == "gauge" and val("dm_worker_spool_bytes", provider="binance") == 4096
    assert val("dm_worker_connected", provider="binance") == 1
    assert val("dm_child_up", child="binance", role="worker") == 1
    assert val("dm_child_failed", child="kraken", role="worker") == 1
    assert val("dm_child_restarts_total", child="kraken", role="worker") == 6
    assert val("dm_persist_lag_seconds", provider="binance") == 0.5
    assert val("dm_persist_pending_records", provider="binance") == 7
    assert val("dm_persist_records_total", provider="binance") == 100
    assert val("dm_storage_rows_total", table="trades") == 5
    assert val("dm_storage_state", state="ok") == 1 and val("dm_storage_state", state="hung") == 0
    assert val("dm_ready") == 0
    h = fams["dm_storage_write_latency_seconds"]
    assert h.type == "histogram"
    assert [(s.labels["le"], s.value) for s in h.samples if s.name.endswith("_bucket")] == [("0.001", 3), ("0.01", 7), ("0.1", 9), ("+Inf", 10)]
    assert val("dm_storage_write_latency_seconds_count") == 10 and val("dm_storage_write_latency_seconds_sum") == 0.25


def test_notifier_ready_status_and_watchdog_on_a_real_socket(tmp_path, monkeypatch):
    path = str(tmp_path / "notify.sock")
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    srv.bind(path)
    srv.setblocking(False)
    monkeypatch.setenv("NOTIFY_SOCKET", path)
    monkeypatch.setenv("WATCHDOG_USEC", "2000000")  # pet every 1 s of the injected clock
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))

    def received():
        out = []
        while True:
            try:
                out.append(srv.recv(2000).decode())
            except BlockingIOError:
                return out

    now = [0.0]
    sup = make(tmp_path, ready_timeout_s=30.0)
    n = Notifier(sup.health, clock=lambda: now[0])
    worker(sup, "binance", connected=False)
    worker(sup, "kraken")
    persister(sup, queues={"binance": q(), "kraken": q()})
    n.tick()
    assert received() == ["STATUS=starting: waiting for binance (connecting)"]  # no READY=1, no WATCHDOG=1
    now[0] = 1.0
    worker(sup, "binance")
    n.tick()
    assert received() == ["READY=1", "STATUS=ready: 2 worker(s) connected, storage ok", "WATCHDOG=1"]
    now[0] = 2.5
    persister(sup, queues={"binance": q(), "kraken": q()}, state="hung")
    n.tick()  # an outside fault the service rides out: not ready, the watchdog goes on
    assert received() == ["STATUS=degraded: storage: hung", "WATCHDOG=1"]
    now[0] = 4.0
    persister(sup, queues={"binance": q(), "kraken": q()}, ts=time.time() - 30)
    n.tick()  # the persister itself stopped reporting: withheld
    got = received()
    assert len(got) == 1 and got[0].startswith("STATUS=degraded: persister: stalled"), got
    persister(sup, queues={"binance": q(), "kraken": q()})
    n.tick()
    assert received() == ["STATUS=ready: 2 worker(s) connected, storage ok", "WATCHDOG=1"]
    # a provider-local reason does not withhold the watchdog (the supervisor isolates it) ...
    now[0] = 6.0
    worker(sup, "kraken", connected=False)
    n.tick()
    assert received() == ["STATUS=degraded: kraken: not connected", "WATCHDOG=1"]


def test_notifier_ready_after_timeout_when_a_worker_never_connects(tmp_path, monkeypatch):
    path = str(tmp_path / "notify.sock")
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    srv.bind(path)
    srv.settimeout(1)
    monkeypatch.setenv("NOTIFY_SOCKET", path)
    now = [0.0]
    sup = make(tmp_path, ready_timeout_s=20.0)
    n = Notifier(sup.health, clock=lambda: now[0])
    worker(sup, "binance", connected=False)
    worker(sup, "kraken")
    persister(sup)
    n.tick()
    assert not n.ready_sent
    now[0] = 20.0
    n.tick()
    assert n.ready_sent
    assert [srv.recv(2000) for _ in range(3)] == [b"STATUS=starting: waiting for binance (connecting)", b"READY=1",
                                                  b"STATUS=degraded: binance: not connected"]


def test_refused_symbols_and_rejected_values_show_in_health(tmp_path):
    """An unknown symbol refused at start, values rejected alone and a capture that stopped are
    in /health and /metrics, per child."""
    sup = make(tmp_path)
    worker(sup, "binance", refused_symbols=["NOPEUSD"], value_errors=3, capture_error="OSError: [Errno 28] No space left")
    sup.health.refresh()
    p = sup.health_doc()["children"]["binance"]["progress"]
    assert p["refused_symbols"] == ["NOPEUSD"] and p["value_errors"] == 3 and p["capture_error"].startswith("OSError")
    text = sup.metrics_text().decode()
    assert 'dm_worker_refused_symbols{provider="binance"} 1.0' in text
    assert 'dm_worker_value_errors_total{provider="binance"} 3.0' in text
    assert 'dm_worker_capture_failed{provider="binance"} 1.0' in text
    worker(sup, "kraken")
    sup.health.refresh()
    assert sup.health_doc()["children"]["kraken"]["progress"]["refused_symbols"] == []
