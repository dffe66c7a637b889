"""Restart policy and shutdown order with an injected spawner and clock (no real processes; the
real CLI is exercised in test_e2e.py), plus sd_notify over a real unix datagram socket."""
from __future__ import annotations

import asyncio
import socket


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


def config():
    return parse({
        "dm": {"instance": "unit"},
        "supervisor": {"restart_backoff_min_s": 0.01, "restart_backoff_max_s": 0.02, "max_restarts": 2, "restart_window_s": 60},
        "providers": {"binance": {"ws_url": "ws://x/stream", "symbols": ["BTCUSD"]}},
    }, env={})


async def _run_supervisor(scenario):
    log, procs = [], []

    async def spawn(argv, env):
        p = FakeProc(1000 + len(procs), log)
        procs.append((argv, p))
        log.append(("spawn", argv[3]))
        return p

    sup = Supervisor(config(), "x.toml", spawn=spawn, clock=lambda: 0.0)
    sup._migrate = lambda: None
    sup.cleanup_channels = lambda: None
    task = asyncio.create_task(sup.run())
    await asyncio.sleep(0.05)
    await scenario(sup, procs)
    code = await asyncio.wait_for(task, 5)
    return code, log, sup


def test_crashed_child_is_restarted_and_shutdown_is_ordered():
    async def scenario(sup, procs):
        worker = [p for a, p in procs if a[3] == "worker"][0]
        worker.exit(1)  # crash
        await asyncio.sleep(0.1)
        assert sup.children["binance"].restarts == 1
        sup.stop_event.set()

    code, log, sup = asyncio.run(_run_supervisor(scenario))
    assert code == 0
    assert [e for e in log if e[0] == "spawn"] == [("spawn", "persist"), ("spawn", "worker"), ("spawn", "worker")]
    signals = [e[1] for e in log if e[0] == "signal"]
    assert signals == [1002, 1000]  # the live worker first, then the persister


def test_flapping_child_stops_everything_with_error():
    async def scenario(sup, procs):
        for _ in range(3):
            live = [p for a, p in procs if a[3] == "worker" and p.returncode is None][-1]
            live.exit(1)
            await asyncio.sleep(0.1)

    code, log, sup = asyncio.run(_run_supervisor(scenario))
    assert code == 1 and sup.children["binance"].state == "failed"


def test_sd_notify_sends_datagram(tmp_path, monkeypatch):
    path = str(tmp_path / "notify.sock")
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    srv.bind(path)
    monkeypatch.setenv("NOTIFY_SOCKET", path)
    assert sd_notify("READY=1")
    assert srv.recv(100) == b"READY=1"
    monkeypatch.delenv("NOTIFY_SOCKET")
    assert sd_notify("READY=1") is False
