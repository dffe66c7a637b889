"""Restart policy, isolation and shutdown order with an injected spawner and clock (no real
processes; the real CLI is exercised in test_supervisor_procs.py and test_e2e.py), plus
sd_notify over a real unix datagram socket."""
from __future__ import annotations

import asyncio
import socket
import time

from dm.config import parse
from dm.supervisor import RestartPolicy, Supervisor, sd_notify


def test_backoff_doubles_and_caps():
    p = RestartPolicy(min_s=0.5, max_s=3.0, max_restarts=10, window_s=100)
    assert [p.on_exit(t) for t in range(6)] == [0.5, 1.0, 2.0, 3.0, 3.0, 3.0]


def test_flapping_limit_gives_up_then_window_forgets():
    p = RestartPolicy(min_s=1, max_s=8, max_restarts=3, window_s=10)
    assert [p.on_exit(t) for t in (0, 1, 2)] == [1, 2, 4]
    assert p.on_exit(3) is None  # 4 exits within 10 s > 3 restarts
    q = RestartPolicy(min_s=1, max_s=8, max_restarts=3, window_s=10)
    assert [q.on_exit(t) for t in (0, 20, 40, 60)] == [1, 1, 1, 1]  # spread out: never gives up


class FakeProc:
    """A process double for the injected spawner: exits when told to, records signals."""

    def __init__(self, pid, log):
        self.pid, self.log, self.returncode = pid, log, None
        self._exit = asyncio.get_running_loop().create_future()

    async def wait(self):
        return await asyncio.shield(self._exit)

    def exit(self, code):
        if not self._exit.done():
            self.returncode = code
            self._exit.set_result(code)

    def send_signal(self, sig):
        self.log.append(("signal", self.pid, int(sig)))
        self.exit(0)

    def kill(self):
        self.exit(-9)


def config(tmp_path, providers=("binance",), **supervisor):
    sup = {"restart_backoff_min_s": 0.01, "restart_backoff_max_s": 0.02, "max_restarts": 2, "restart_window_s": 60}
    sup.update(supervisor)
    return parse({
        "dm": {"instance": "unit", "run_dir": str(tmp_path / "run")},
        "shm": {"registry": f"/dm.reg.unit{tmp_path.name[-12:]}"},
        "supervisor": sup,
        "providers": {p: {"kind": "binance", "ws_url": "ws://x/stream", "symbols": ["BTCUSD"]} for p in providers},
    }, env={})


async def _run_supervisor(cfg, scenario, sleep=asyncio.sleep):
    log, procs = [], []

    async def spawn(argv, env):
        p = FakeProc(10_000_000 + len(procs), log)  # beyond pid_max: never a real process
        procs.append((argv, p))
        log.append(("spawn", argv[3], argv[4] if argv[3] == "worker" else None))
        return p

    sup = Supervisor(cfg, "x.toml", spawn=spawn, clock=time.monotonic, sleep=sleep)
    sup.cleanup_channels = lambda: None
    task = asyncio.create_task(sup.run())
    await asyncio.sleep(0.05)
    await scenario(sup, procs)
    code = await asyncio.wait_for(task, 5)
    return code, log, sup


def live(procs, name):
    return [p for a, p in procs if a[3] == "worker" and a[4] == name and p.returncode is None][-1]


def test_crashed_child_is_restarted_and_shutdown_is_ordered(tmp_path):
    async def scenario(sup, procs):
        live(procs, "binance").exit(1)  # crash
        await asyncio.sleep(0.1)
        assert sup.children["binance"].restarts == 1
        sup.stop_event.set()

    code, log, sup = asyncio.run(_run_supervisor(config(tmp_path), scenario))
    assert code == 0
    assert [e[:2] for e in log if e[0] == "spawn"] == [("spawn", "persist"), ("spawn", "worker"), ("spawn", "worker")]
    signals = [e[1] for e in log if e[0] == "signal"]
    assert signals == [10_000_002, 10_000_000]  # the live worker first, then the persister


def test_crash_looping_provider_is_failed_others_run_on_and_it_is_retried(tmp_path):
    cfg = config(tmp_path, providers=("binance", "kraken"), failed_retry_s=0.3)

    async def scenario(sup, procs):
        for _ in range(3):  # max_restarts = 2: the third exit in the window marks it failed
            live(procs, "kraken").exit(1)
            await asyncio.sleep(0.08)
        k = sup.children["kraken"]
        assert k.state == "failed" and k.failures == 1
        assert sup.children["binance"].state == "running"
        assert not sup.stop_event.is_set()  # the supervisor runs on
        v = sup.health.evaluate()
        assert not v.ready and any(r.startswith("kraken: failed") for r in v.reasons)
        assert "kraken: failed" in " ".join(v.local)
        doc = sup.health_doc()
        assert doc["children"]["kraken"]["state"] == "failed" and doc["healthy"] is False
        assert 0 < doc["children"]["kraken"]["retry_in_s"] <= 0.3
        await asyncio.sleep(0.5)  # failed_retry_s: started again on the long backoff
        assert k.state == "running" and k.starts == 4
        sup.stop_event.set()

    code, log, sup = asyncio.run(_run_supervisor(cfg, scenario))
    assert code == 0
    assert sup.children["binance"].restarts == 0


def test_fatal_exit_fails_the_child_at_once_others_run_on(tmp_path):
    """EXIT_FATAL (a refused API key): failed on the first exit, no restart loop; retried after
    failed_retry_s like a crash-looped child."""
    from dm.errors import EXIT_FATAL

    cfg = config(tmp_path, providers=("binance", "kraken"), failed_retry_s=0.3)

    async def scenario(sup, procs):
        live(procs, "kraken").exit(EXIT_FATAL)
        await asyncio.sleep(0.08)
        k = sup.children["kraken"]
        assert k.state == "failed" and k.failures == 1 and k.starts == 1
        assert sup.children["binance"].state == "running" and not sup.stop_event.is_set()
        await asyncio.sleep(0.5)
        assert k.state == "running" and k.starts == 2
        sup.stop_event.set()

    code, log, sup = asyncio.run(_run_supervisor(cfg, scenario))
    assert code == 0 and sup.children["binance"].restarts == 0


def test_every_provider_failed_exits_non_zero(tmp_path):
    async def scenario(sup, procs):
        for _ in range(3):
            live(procs, "binance").exit(1)
            await asyncio.sleep(0.08)

    code, log, sup = asyncio.run(_run_supervisor(config(tmp_path), scenario))
    assert code == 1 and sup.children["binance"].state == "failed"


def test_fail_fast_exits_non_zero_at_the_first_failed_child(tmp_path):
    cfg = config(tmp_path, providers=("binance", "kraken"), fail_fast=True)

    async def scenario(sup, procs):
        for _ in range(3):
            live(procs, "kraken").exit(1)
            await asyncio.sleep(0.08)

    code, log, sup = asyncio.run(_run_supervisor(cfg, scenario))
    assert code == 1 and sup.children["kraken"].state == "failed"
    assert sup.children["binance"].state == "stopped"


def test_stop_during_backoff_is_immediate(tmp_path):
    cfg = config(tmp_path, restart_backoff_min_s=30.0, restart_backoff_max_s=60.0)
    took = {}

    async def scenario(sup, procs):
        live(procs, "binance").exit(1)
        await asyncio.sleep(0.05)
        assert sup.children["binance"].state == "backoff"
        took["t0"] = time.monotonic()
        sup.stop_event.set()

    code, log, sup = asyncio.run(_run_supervisor(cfg, scenario))
    took = time.monotonic() - took["t0"]
    assert code == 0 and took < 1.0, took  # not the 30 s backoff
    assert [e[:2] for e in log if e[0] == "spawn"].count(("spawn", "worker")) == 1


def test_stop_while_failed_is_immediate(tmp_path):
    cfg = config(tmp_path, providers=("binance", "kraken"), failed_retry_s=300.0)

    async def scenario(sup, procs):
        for _ in range(3):
            live(procs, "kraken").exit(1)
            await asyncio.sleep(0.08)
        assert sup.children["kraken"].state == "failed"
        sup.stop_event.set()

    t0 = time.monotonic()
    code, log, sup = asyncio.run(_run_supervisor(cfg, scenario))
    assert code == 0 and time.monotonic() - t0 < 3.0


def test_sd_notify_sends_datagram(tmp_path, monkeypatch):
    path = str(tmp_path / "notify.sock")
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    srv.bind(path)
    monkeypatch.setenv("NOTIFY_SOCKET", path)
    assert sd_notify("READY=1")
    assert srv.recv(100) == b"READY=1"
    monkeypatch.delenv("NOTIFY_SOCKET")
    assert sd_notify("READY=1") is False


def test_a_child_that_cannot_be_spawned_again_ends_failed_not_stuck(tmp_path):
    cfg = config(tmp_path, providers=("binance", "kraken"))
    log, procs = [], []

    async def spawn(argv, env):
        if argv[3] == "worker" and argv[4] == "kraken" and procs and any(a[4] == "kraken" for a, _ in procs if a[3] == "worker"):
            raise OSError(24, "Too many open files")
        p = FakeProc(10_000_000 + len(procs), log)
        procs.append((argv, p))
        return p

    async def main():
        sup = Supervisor(cfg, "x.toml", spawn=spawn)
        sup.cleanup_channels = lambda: None
        task = asyncio.create_task(sup.run())
        await asyncio.sleep(0.05)
        live(procs, "kraken").exit(1)
        await asyncio.sleep(0.3)
        k = sup.children["kraken"]
        assert k.state == "failed" and len(k.history) == 3  # the failed spawns count as exits
        assert sup.children["binance"].state == "running"
        sup.stop_event.set()
        return await asyncio.wait_for(task, 5)

    assert asyncio.run(main()) == 0
