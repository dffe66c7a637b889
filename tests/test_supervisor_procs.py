"""The supervisor on real processes: `dm supervise` with real workers reading the replay server
(real Binance recording), the real persister and storage, HTTP /health /ready /metrics on
loopback, systemd notifications on a real NOTIFY_SOCKET datagram socket, signals from a
pseudo-terminal, kill -9. Long fault scenarios carry the ``faults`` marker (`make faults`)."""
from __future__ import annotations

import fcntl
import json
import os
import pty
import re
import signal
import socket
import subprocess
import sys
import termios
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from prometheus_client import CONTENT_TYPE_LATEST
from prometheus_client.parser import text_string_to_metric_families

from dm._ring import pid_alive
from tests.e2e import (B38, B38_SYMBOLS, EXCHANGE_INFO, ROOT, config_head, free_port, leftover_segments, provider_toml,
                       started_pids)

SYMBOLS = B38_SYMBOLS


def write_cfg(tmp: Path, instance: str, storage_url: str, *, providers: str | None = None, files=(B38, EXCHANGE_INFO),
              speed: float = 1.0, once: bool = False, **supervisor) -> Path:
    if providers is None:
        providers = binance(tmp)
    cfg = tmp / "dm.toml"
    cfg.write_text(config_head(tmp, instance, storage_url, files, speed=speed, once=once, supervisor=supervisor) + providers)
    return cfg


def binance(tmp: Path, name: str = "binance", ws_url: str = "ws://{replay}/stream", exchange: str = "BINANCE", **extra) -> str:
    return provider_toml(tmp, name, "binance", exchange, ws_url, SYMBOLS, ("aggTrade", "bookTicker"), **extra)


def crashing(tmp: Path, name: str = "broken") -> str:
    """A provider whose worker dies at start every time: its dead-letter file is under a regular
    file (a misconfigured path), so creating it fails."""
    (tmp / "not-a-dir").write_text("")
    block = provider_toml(tmp, name, "binance", name.upper(), "ws://127.0.0.1:1/stream", SYMBOLS, ("aggTrade",), rest_url="http://127.0.0.1:1")
    return re.sub(r'dead_letter = ".*"', f'dead_letter = "{tmp / "not-a-dir" / "dl.jsonl"}"', block)


class Notify:
    """A NOTIFY_SOCKET: a unix datagram socket collecting (monotonic time, message) in a thread."""

    def __init__(self, tmp: Path):
        self.path = str(tmp / "notify.sock")
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        self.sock.settimeout(0.1)
        self.messages: list[tuple[float, str]] = []
        self.done = False
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        while not self.done:
            try:
                self.messages.append((time.monotonic(), self.sock.recv(4096).decode()))
            except socket.timeout:
                pass

    def texts(self, prefix: str = "") -> list[str]:
        return [m for _, m in list(self.messages) if m.startswith(prefix)]

    def wait(self, prefix: str, timeout: float) -> float:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for t, m in list(self.messages):
                if m.startswith(prefix):
                    return t
            time.sleep(0.02)
        raise AssertionError(f"no {prefix} within {timeout} s; got {self.texts()}")

    def close(self):
        self.done = True
        self.thread.join(2)
        self.sock.close()


def spawn(cfg: Path, tmp: Path, env_extra: dict | None = None, **popen) -> subprocess.Popen:
    env = dict(os.environ)
    env.pop("DM_STORAGE_URL", None)
    env.update(env_extra or {})
    log = tmp / "supervisor.log"
    return subprocess.Popen([sys.executable, "-m", "dm", "supervise", "-c", str(cfg)], cwd=ROOT, env=env,
                            stdout=open(tmp / "supervisor.out", "ab"), stderr=open(log, "ab"), **popen)


def log_text(tmp: Path) -> str:
    return (tmp / "supervisor.log").read_text()


def wait_for(cond, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = cond()
        if v:
            return v
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def http(port: int, path: str):
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as r:
            return r.status, r.headers.get("Content-Type"), r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers.get("Content-Type"), e.read()
    except OSError:
        return None, None, b""


def stats(tmp: Path, instance: str, name: str) -> dict | None:
    try:
        return json.loads((tmp / "run" / instance / f"{name}.stats.json").read_text())
    except (OSError, ValueError):
        return None


def child_pids(tmp: Path, instance: str) -> dict[str, int]:
    """Pids of the supervisor's children from its pid files."""
    out = {}
    for p in (tmp / "run" / instance).glob("*.pid"):
        if p.stem != "supervisor":
            try:
                out[p.stem] = json.loads(p.read_text())["pid"]
            except (OSError, ValueError, KeyError):
                pass
    return out


def stop(sup: subprocess.Popen, timeout: float = 60) -> int:
    if sup.poll() is None:
        sup.send_signal(signal.SIGTERM)
    try:
        return sup.wait(timeout=timeout)
    finally:
        if sup.poll() is None:
            sup.kill()


def connected(tmp, instance, name="binance"):
    st = stats(tmp, instance, name)
    return st is not None and st.get("connected") and st.get("frames", 0) > 0 and st


# --------------------------------------------------------------------------- readiness


@pytest.mark.timeout(120)
def test_ready_watchdog_health_and_metrics_follow_progress(tmp_path, instance, sqlite_url):
    port = free_port()
    cfg = write_cfg(tmp_path, instance, sqlite_url, health_port=port, stall_after_s=3.0)
    notify = Notify(tmp_path)
    sup = spawn(cfg, tmp_path, {"NOTIFY_SOCKET": notify.path, "WATCHDOG_USEC": "400000"})
    try:
        t_ready = notify.wait("READY=1", 60)
        # READY=1 came only once the worker reported a live connection
        st = stats(tmp_path, instance, "binance")
        assert st["connected"] is True
        assert notify.texts("STATUS=")[0].startswith("STATUS=starting: waiting for ")
        assert not [t for t, m in notify.messages if m == "WATCHDOG=1" and t < t_ready]
        code, _, body = http(port, "/ready")
        assert code == 200, body
        notify.wait("WATCHDOG=1", 5)

        def rate():
            doc = json.loads(http(port, "/health")[2])
            p = doc["children"]["binance"]["progress"]
            return p["frames_per_s"] and p["frames_per_s"] > 0 and doc

        doc = wait_for(rate, 15, "frames/s in /health")
        assert doc["healthy"] and doc["children"]["binance"]["state"] == "running"
        assert doc["children"]["binance"]["progress"]["connected"] is True
        assert doc["children"]["binance"]["progress"]["last_frame_age_s"] < 10
        code, ctype, body = http(port, "/metrics")
        assert code == 200 and ctype == CONTENT_TYPE_LATEST
        fams = {f.name: f for f in text_string_to_metric_families(body.decode())}
        assert fams["dm_worker_frames"].type == "counter"
        assert sum(s.value for s in fams["dm_worker_frames"].samples) > 0
        assert {s.labels["symbol"] for s in fams["dm_channel_records"].samples} <= set(SYMBOLS)
        assert [s.value for s in fams["dm_child_up"].samples if s.labels["child"] == "binance"] == [1.0]

        # a hung persister (SIGSTOP): no progress → /ready 503 naming it, the watchdog is withheld
        persister = child_pids(tmp_path, instance)["persister"]
        os.kill(persister, signal.SIGSTOP)
        try:
            code, _, body = wait_for(lambda: (r := http(port, "/ready"))[0] == 503 and r, 10, "/ready 503")
            assert any(r.startswith("persister: stalled") for r in json.loads(body)["reasons"]), body
            assert http(port, "/health")[0] == 503
            time.sleep(0.5)  # a pet decided before the verdict may still be in flight
            t_cut = time.monotonic()
            time.sleep(1.5)
            assert not [t for t, m in notify.messages if m == "WATCHDOG=1" and t > t_cut]
            assert any(m.startswith("STATUS=degraded: persister: stalled") for m in notify.texts())
        finally:
            os.kill(persister, signal.SIGCONT)
        wait_for(lambda: http(port, "/ready")[0] == 200, 10, "/ready 200 again")
        t_back = time.monotonic()
        wait_for(lambda: [t for t, m in notify.messages if m == "WATCHDOG=1" and t > t_back], 5, "watchdog resumed")
        assert stop(sup) == 0
        assert "STOPPING=1" in notify.texts()
    finally:
        stop(sup)
        notify.close()
    assert leftover_segments(instance) == []


@pytest.mark.timeout(120)
def test_worker_that_never_connects_is_not_ready(tmp_path, instance, sqlite_url):
    port = free_port()
    dead = free_port()  # nothing listens: every websocket connect is refused
    cfg = write_cfg(tmp_path, instance, sqlite_url, providers=binance(tmp_path, ws_url=f"ws://127.0.0.1:{dead}/stream"),
                    health_port=port, ready_timeout_s=6.0)
    notify = Notify(tmp_path)
    t0 = time.monotonic()
    sup = spawn(cfg, tmp_path, {"NOTIFY_SOCKET": notify.path})
    try:
        wait_for(lambda: stats(tmp_path, instance, "binance"), 30, "the worker to report")
        code, _, body = http(port, "/ready")
        assert code == 503 and "binance: not connected" in json.loads(body)["reasons"]
        doc = json.loads(http(port, "/health")[2])
        assert doc["children"]["binance"]["progress"]["connected"] is False
        assert doc["children"]["binance"]["state"] == "running"  # reconnecting in-process, not failed
        wait_for(lambda: "STATUS=starting: waiting for binance (connecting)" in notify.texts(), 10, "STATUS naming binance")
        # a second supervisor of the same instance is refused (one line) and harms nothing
        second = subprocess.run([sys.executable, "-m", "dm", "supervise", "-c", str(cfg)], cwd=ROOT, capture_output=True,
                                text=True, timeout=60, env={k: v for k, v in os.environ.items() if k != "DM_STORAGE_URL"})
        assert second.returncode == 1 and f"already supervised by pid {sup.pid}" in second.stderr
        assert len(second.stderr.strip().splitlines()) == 1, second.stderr
        assert sup.poll() is None and http(port, "/health")[0] == 200
        t_ready = notify.wait("READY=1", 30)  # only once supervisor.ready_timeout_s has passed
        assert t_ready - t0 >= 6.0
        assert "ready without every worker connected" in log_text(tmp_path)
        assert http(port, "/ready")[0] == 503
        assert stop(sup) == 0
    finally:
        stop(sup)
        notify.close()


@pytest.mark.timeout(120)
@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs 2 CPUs to tell a pinned child apart")
def test_children_run_on_the_cpus_the_config_names(tmp_path, instance, sqlite_url):
    """[supervisor] cpus pins a worker and the persister (sched_setaffinity as they start) and
    [supervisor] nice lowers the persister; the replay server, named in neither, keeps every CPU
    and its priority; a name that is no child is refused in one line."""
    allowed = os.sched_getaffinity(0)
    one = max(allowed)
    cfg = write_cfg(tmp_path, instance, sqlite_url)
    cfg.write_text(cfg.read_text() + f"[supervisor.cpus]\nbinance = [{one}]\npersister = [{one}]\n"
                   "[supervisor.nice]\npersister = 7\n")
    sup = spawn(cfg, tmp_path)
    try:
        pids = wait_for(lambda: (lambda p: p if {"binance", "persister", "replay"} <= set(p) else None)(
            child_pids(tmp_path, instance)), 30, "the children's pid files")
        assert os.sched_getaffinity(pids["binance"]) == {one}
        assert os.sched_getaffinity(pids["persister"]) == {one}
        assert os.sched_getaffinity(pids["replay"]) == allowed
        assert os.getpriority(os.PRIO_PROCESS, pids["persister"]) == 7
        assert started_pids(log_text(tmp_path), "persister") == [pids["persister"]]   # logged with cpus, nice
        assert os.getpriority(os.PRIO_PROCESS, pids["replay"]) == os.getpriority(os.PRIO_PROCESS, 0)
        wait_for(lambda: connected(tmp_path, instance), 30, "the pinned worker to read frames")
        assert stop(sup) == 0
    finally:
        stop(sup)
    cfg.write_text(cfg.read_text().replace("persister = [", "persistr = ["))
    r = subprocess.run([sys.executable, "-m", "dm", "supervise", "-c", str(cfg)], cwd=ROOT, capture_output=True,
                       text=True, timeout=60, env={k: v for k, v in os.environ.items() if k != "DM_STORAGE_URL"})
    assert r.returncode == 1 and "cpus names no child ['persistr']" in r.stderr


# --------------------------------------------------------------------------- signals


@pytest.mark.timeout(60)
def test_sigterm_during_a_child_backoff_returns_promptly(tmp_path, instance, sqlite_url):
    cfg = write_cfg(tmp_path, instance, sqlite_url, providers=crashing(tmp_path), files=(),
                    restart_backoff_min_s=30.0, restart_backoff_max_s=60.0)
    sup = spawn(cfg, tmp_path)
    try:
        wait_for(lambda: "child exited, restarting" in log_text(tmp_path), 30, "the first crash")
        t0 = time.monotonic()
        sup.send_signal(signal.SIGTERM)
        assert sup.wait(timeout=20) == 0
        took = time.monotonic() - t0
    finally:
        stop(sup)
    assert took < 3.0, took  # not the 30 s backoff
    assert started_pids(log_text(tmp_path), "broken").__len__() == 1


@pytest.mark.timeout(90)
def test_ctrl_c_at_a_terminal_reaches_only_the_supervisor(tmp_path, instance, sqlite_url):
    """The supervisor runs as the foreground job of a pseudo-terminal; Ctrl-C (the tty driver's
    SIGINT to the foreground process group) must reach only it: the children live in their own
    sessions and are stopped by the supervisor, workers before the persister."""
    cfg = write_cfg(tmp_path, instance, sqlite_url)
    master, slave = pty.openpty()

    def controlling_tty():  # after setsid (start_new_session): the pty becomes our terminal
        fcntl.ioctl(0, termios.TIOCSCTTY, 0)

    sup = spawn(cfg, tmp_path, stdin=slave, start_new_session=True, preexec_fn=controlling_tty)
    os.close(slave)
    try:
        wait_for(lambda: connected(tmp_path, instance), 60, "the worker to connect")
        pids = child_pids(tmp_path, instance)
        assert set(pids) == {"replay", "persister", "binance"}
        for pid in pids.values():
            assert os.getsid(pid) == pid and os.getpgid(pid) == pid  # own session, own group
        assert os.tcgetpgrp(master) == sup.pid  # the supervisor is the terminal's foreground job
        gone: dict[str, float] = {}

        def watch():
            while len(gone) < len(pids):
                for n, p in pids.items():
                    if n not in gone and not pid_alive(p):
                        gone[n] = time.monotonic()
                time.sleep(0.001)

        t = threading.Thread(target=watch, daemon=True)
        t.start()
        os.write(master, b"\x03")  # Ctrl-C
        assert sup.wait(timeout=60) == 0
        t.join(10)
    finally:
        stop(sup)
        os.close(master)
    log = log_text(tmp_path)
    assert "signal received, stopping" in log and "signal=SIGINT" in log
    assert gone["binance"] <= gone["persister"] <= gone["replay"], gone  # stopped in order, one by one
    assert leftover_segments(instance) == []


# --------------------------------------------------------------------------- secrets


@pytest.mark.postgres
@pytest.mark.timeout(180)
def test_no_secret_in_any_output_of_a_real_run(tmp_path, instance, pg_url):
    """A whole run (replay to the end, PostgreSQL) with the DSN's password in the userinfo and
    the query string, JSON logs at level debug and a Databento
    key in the environment: the password and the key appear in no output, the DSN does
    (redacted)."""
    pw, key = "Pw-9f3b2c7a1e", "db-Q3kV8rT2mZ6yW1pL4nX7cB9dF5"
    base, db = pg_url.rsplit("/", 1)
    user_host = base.split("://", 1)[1]
    user, host = user_host.split("@") if "@" in user_host else ("postgres", user_host)
    url = f"postgresql://{user}:{pw}@{host}/{db}?password={pw}"
    cfg = write_cfg(tmp_path, instance, url, speed=0.0, once=True)
    cfg.write_text(cfg.read_text().replace('log_level = "info"', 'log_level = "debug"').replace('log_format = "console"', 'log_format = "json"'))
    sup = spawn(cfg, tmp_path, {"DATABENTO_API_KEY": key})
    try:
        assert sup.wait(timeout=150) == 0, log_text(tmp_path)[-3000:]
    finally:
        stop(sup)
    err, out = log_text(tmp_path), (tmp_path / "supervisor.out").read_text()
    everything = err + out + "".join(p.read_text() for p in (tmp_path / "run").rglob("*.json"))
    assert pw not in everything and key not in everything
    assert "password=***" in err + out  # the DSN was shown, redacted
    assert "rows stored" in out
    # every stderr line went through the JSON pipeline (nothing bypassed it)
    for line in err.splitlines():
        json.loads(line)
    r = subprocess.run([sys.executable, "-m", "dm", "db", "stats", "--url", url.replace(host, "127.0.0.1:1")],
                       cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert r.returncode == 1 and len(r.stderr.strip().splitlines()) == 1 and pw not in r.stderr


# --------------------------------------------------------------------------- faults


@pytest.mark.faults
@pytest.mark.timeout(180)
def test_crash_looping_provider_is_failed_and_the_others_run_on(tmp_path, instance, sqlite_url):
    port = free_port()
    cfg = write_cfg(tmp_path, instance, sqlite_url, providers=binance(tmp_path) + crashing(tmp_path),
                    health_port=port, max_restarts=2, restart_window_s=60.0, failed_retry_s=4.0)
    sup = spawn(cfg, tmp_path)
    try:
        wait_for(lambda: "child failed" in log_text(tmp_path), 60, "the crash loop to be marked failed")
        t_failed = time.monotonic()
        doc = json.loads(http(port, "/health")[2])
        assert doc["children"]["broken"]["state"] == "failed" and doc["children"]["broken"]["failures"] == 1
        code, _, body = http(port, "/ready")
        assert code == 503 and any(r.startswith("broken: failed") for r in json.loads(body)["reasons"])
        fams = {f.name: f for f in text_string_to_metric_families(http(port, "/metrics")[2].decode())}
        assert [s.value for s in fams["dm_child_failed"].samples if s.labels["child"] == "broken"] == [1.0]
        # the healthy venue keeps ingesting, with the same process, while the broken one waits
        first = wait_for(lambda: connected(tmp_path, instance), 30, "binance connected")
        later = wait_for(lambda: (st := stats(tmp_path, instance, "binance"))["frames"] > first["frames"] and st, 10, "more frames")
        assert later["pid"] == first["pid"]
        assert sup.poll() is None
        # after failed_retry_s it is tried again (and fails again: one more "child failed" line)
        wait_for(lambda: "retrying failed child" in log_text(tmp_path), 20, "the long-backoff retry")
        assert time.monotonic() - t_failed >= 3.0
        wait_for(lambda: log_text(tmp_path).count("child failed") == 2, 30, "the second failure")
        assert stats(tmp_path, instance, "binance")["pid"] == first["pid"]
        assert stop(sup) == 0
    finally:
        stop(sup)
    log = log_text(tmp_path)
    assert len(started_pids(log, "binance")) == 1
    # 3 quick starts (max_restarts = 2), then one start per failed_retry_s: the earlier exits are
    # still within restart_window_s, so the first exit after the retry marks it failed again
    assert len(started_pids(log, "broken")) == 4


@pytest.mark.faults
@pytest.mark.timeout(120)
def test_fail_fast_stops_the_instance_with_an_error(tmp_path, instance, sqlite_url):
    cfg = write_cfg(tmp_path, instance, sqlite_url, providers=binance(tmp_path) + crashing(tmp_path),
                    max_restarts=1, fail_fast=True)
    sup = spawn(cfg, tmp_path)
    try:
        assert sup.wait(timeout=90) == 1
    finally:
        stop(sup)
    log = log_text(tmp_path)
    assert "fail_fast: stopping the instance" in log
    assert child_pids(tmp_path, instance) == {}
    assert leftover_segments(instance) == []


@pytest.mark.faults
@pytest.mark.timeout(180)
def test_kill9_of_the_supervisor_children_exit_and_a_new_one_starts_clean(tmp_path, instance, sqlite_url):
    cfg = write_cfg(tmp_path, instance, sqlite_url)
    sup = spawn(cfg, tmp_path)
    try:
        wait_for(lambda: connected(tmp_path, instance), 60, "the worker to connect")
        pids = child_pids(tmp_path, instance)
        assert set(pids) == {"replay", "persister", "binance"}
        os.kill(sup.pid, signal.SIGKILL)
        t0 = time.monotonic()
        sup.wait(10)
        wait_for(lambda: not any(pid_alive(p) for p in pids.values()), 10, "the orphans to exit")
        took = time.monotonic() - t0
        assert took < 2.0, took  # PR_SET_PDEATHSIG: SIGTERM at once; they drain and exit
        # they stopped cleanly: the worker released its channels and registry slot
        assert [s for s in leftover_segments(instance) if not s.endswith(".persist")] == []
        sup = spawn(cfg, tmp_path)
        second = wait_for(lambda: (st := connected(tmp_path, instance)) and st["pid"] != pids["binance"] and st, 60,
                          "the new worker to connect")
        assert second["frames"] > 0
        assert stop(sup) == 0
    finally:
        stop(sup)
    log = log_text(tmp_path)
    assert "persist queue exists and its producer is alive" not in log
    assert "child exited, restarting" not in log and "leftover" not in log
    assert leftover_segments(instance) == []
    print(f"children gone {took:.3f} s after kill -9 of the supervisor")


@pytest.mark.faults
@pytest.mark.timeout(180)
def test_leftovers_that_do_not_exit_are_ended_by_pid(tmp_path, instance, sqlite_url):
    """Children that could not act on their supervisor's death (stopped: SIGTERM stays pending)
    are found by a new supervisor — the worker through the shm registry (its pid file removed),
    the persister through its pid file — and ended (SIGTERM, grace, SIGKILL) before the new
    children start; the new worker then owns the persist queue and its channels."""
    cfg = write_cfg(tmp_path, instance, sqlite_url, stop_grace_s=1.0)
    sup = spawn(cfg, tmp_path)
    try:
        wait_for(lambda: connected(tmp_path, instance), 60, "the worker to connect")
        pids = child_pids(tmp_path, instance)
        for n in ("binance", "persister"):
            os.kill(pids[n], signal.SIGSTOP)
        os.kill(sup.pid, signal.SIGKILL)
        sup.wait(10)
        wait_for(lambda: not pid_alive(pids["replay"]), 10, "the replay server to exit")
        assert pid_alive(pids["binance"]) and pid_alive(pids["persister"])
        (tmp_path / "run" / instance / "binance.pid").unlink()
        sup = spawn(cfg, tmp_path)
        wait_for(lambda: not pid_alive(pids["binance"]) and not pid_alive(pids["persister"]), 20, "the leftovers to be ended")
        st = wait_for(lambda: (s := connected(tmp_path, instance)) and s["pid"] != pids["binance"] and s, 60, "the new worker")
        assert st["frames"] > 0
        assert stop(sup) == 0
    finally:
        for p in pids.values():
            try:
                os.kill(p, signal.SIGCONT)
            except (ProcessLookupError, NameError):
                pass
        stop(sup)
    log = log_text(tmp_path)
    assert re.search(rf"leftover of an earlier run still running: stopping it\s+child=binance found_by=registry pid={pids['binance']}", log), log[-3000:]
    assert re.search(rf"leftover of an earlier run still running: stopping it\s+child=persister found_by=pid_file pid={pids['persister']}", log)
    assert log.count("leftover ignored SIGTERM, killing") == 2
    assert "persist queue exists and its producer is alive" not in log
    assert leftover_segments(instance) == []
