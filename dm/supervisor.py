"""The supervisor: spawns one worker per enabled provider, the persister and (when the config
asks) the replay server, restarts children that die, and stops everything in order.

- Children are fresh interpreters: ``sys.executable -m dm worker NAME -c CONF`` etc.
- A child that exits unexpectedly is restarted after an exponential backoff
  (``supervisor.restart_backoff_min_s`` … ``_max_s``); more than ``max_restarts`` exits within
  ``restart_window_s`` and the supervisor gives up on it and shuts down with an error.
- SIGTERM/SIGINT: workers first (SIGTERM, ``stop_grace_s``, then SIGKILL), then the persister
  (which drains every queue to storage), then the replay server.
- systemd: ``READY=1`` once children run, ``WATCHDOG=1`` at half ``$WATCHDOG_USEC``,
  ``STOPPING=1`` on shutdown (sd_notify over ``$NOTIFY_SOCKET``).
- ``supervisor.health_port``: HTTP on 127.0.0.1 with /health, /ready and /metrics (Prometheus).

The spawner and the clock are injectable, so restart policy is tested without real processes.
"""
from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import sys
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Awaitable, Callable

from dm import log as dmlog
from dm.config import Config

log = dmlog.get("dm.supervisor")


def sd_notify(message: str) -> bool:
    """Send a systemd notification (``READY=1``, ``WATCHDOG=1``, ``STOPPING=1``, ``STATUS=…``).
    Returns False when not run under systemd (no ``$NOTIFY_SOCKET``). See sd_notify(3)."""
    addr = os.environ.get("NOTIFY_SOCKET")
    if not addr:
        return False
    if addr.startswith("@"):
        addr = "\0" + addr[1:]
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
        s.connect(addr)
        s.sendall(message.encode())
    return True


class RestartPolicy:
    """Exponential backoff with a flapping limit. ``on_exit(now)`` returns the delay before the
    next start, or None when the child exited more than ``max_restarts`` times within ``window_s``."""

    def __init__(self, min_s: float, max_s: float, max_restarts: int, window_s: float):
        self.min_s, self.max_s = min_s, max_s
        self.max_restarts, self.window_s = max_restarts, window_s
        self.exits: deque[float] = deque()

    def on_exit(self, now: float) -> float | None:
        self.exits.append(now)
        while self.exits and now - self.exits[0] > self.window_s:
            self.exits.popleft()
        if len(self.exits) > self.max_restarts:
            return None
        return min(self.min_s * (2 ** (len(self.exits) - 1)), self.max_s)


@dataclass
class ChildSpec:
    name: str
    role: str  # "worker" | "persister" | "replay"
    argv: list[str]
    restart: bool = True


@dataclass
class Child:
    spec: ChildSpec
    policy: RestartPolicy
    proc: object = None
    starts: int = 0
    restarts: int = 0
    state: str = "new"  # running | backoff | stopped | failed | done
    last_exit: int | None = None
    task: asyncio.Task | None = None
    history: list[int] = field(default_factory=list)


Spawner = Callable[[list[str], dict], Awaitable[object]]


async def default_spawn(argv: list[str], env: dict):
    return await asyncio.create_subprocess_exec(*argv, stdin=asyncio.subprocess.DEVNULL, env=env)


class Supervisor:
    def __init__(self, cfg: Config, config_path: str, spawn: Spawner = default_spawn, clock: Callable[[], float] = time.monotonic, sleep=asyncio.sleep):
        self.cfg = cfg
        self.config_path = str(config_path)
        self.spawn = spawn
        self.clock = clock
        self.sleep = sleep
        self.children: dict[str, Child] = {}
        self.stop_event = asyncio.Event()
        self.exit_code = 0
        self.replay_port: int | None = None
        self.started_at = time.time()

    # -- specs ------------------------------------------------------------------------------
    def specs(self) -> list[ChildSpec]:
        py = [sys.executable, "-m", "dm"]
        out = []
        if self.cfg.replay.enabled:
            r = self.cfg.replay
            argv = py + ["replay", *map(str, r.files), "--host", r.host, "--port", str(r.port), "--speed", str(r.speed), "--ready-file", str(self.ready_file)]
            if self.cfg.supervisor.exit_when_replay_done:
                argv += ["--once", "--connections", str(len(self.cfg.enabled_providers))]
            out.append(ChildSpec("replay", "replay", argv, restart=not self.cfg.supervisor.exit_when_replay_done))
        out.append(ChildSpec("persister", "persister", py + ["persist", "-c", self.config_path]))
        for p in self.cfg.enabled_providers:
            out.append(ChildSpec(p.name, "worker", py + ["worker", p.name, "-c", self.config_path]))
        return out

    @property
    def ready_file(self) -> Path:
        return self.cfg.run_dir / self.cfg.instance / "replay.port"

    # -- child lifecycle ----------------------------------------------------------------------
    async def start_child(self, child: Child) -> None:
        env = dict(os.environ)
        if self.replay_port is not None:
            env["DM_REPLAY_ADDR"] = f"{self.cfg.replay.host}:{self.replay_port}"
        child.proc = await self.spawn(child.spec.argv, env)
        child.starts += 1
        child.state = "running"
        log.info("started", child=child.spec.name, pid=getattr(child.proc, "pid", None))

    async def watch(self, child: Child) -> None:
        """Wait for the child to exit; restart it per policy unless we are stopping."""
        while True:
            code = await child.proc.wait()
            child.last_exit = code
            child.history.append(code)
            if self.stop_event.is_set() or child.state == "stopping":
                child.state = "stopped"
                return
            if child.spec.role == "replay" and not child.spec.restart:
                child.state = "done" if code == 0 else "failed"
                if code != 0:
                    log.error("replay server failed", code=code)
                    self.exit_code = 1
                else:
                    log.info("recording replayed to the end")
                self.stop_event.set()
                return
            delay = child.policy.on_exit(self.clock())
            if delay is None:
                child.state = "failed"
                log.error("child keeps dying, giving up", child=child.spec.name, code=code, restarts=child.restarts)
                self.exit_code = 1
                self.stop_event.set()
                return
            child.state = "backoff"
            log.warning("child exited, restarting", child=child.spec.name, code=code, in_s=delay)
            await self.sleep(delay)
            if self.stop_event.is_set():
                child.state = "stopped"
                return
            child.restarts += 1
            await self.start_child(child)

    async def stop_child(self, child: Child) -> None:
        proc = child.proc
        if proc is None or child.state in ("stopped", "done", "failed"):
            if child.task:
                child.task.cancel()
            return
        child.state = "stopping"
        if getattr(proc, "returncode", None) is None:
            try:
                proc.send_signal(signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                await asyncio.wait_for(asyncio.shield(proc.wait()), self.cfg.supervisor.stop_grace_s)
            except asyncio.TimeoutError:
                log.warning("child ignored SIGTERM, killing", child=child.spec.name)
                proc.kill()
                await proc.wait()
        if child.task:
            await asyncio.gather(child.task, return_exceptions=True)
        child.state = "stopped"
        log.info("stopped", child=child.spec.name, code=proc.returncode)

    async def wait_replay_ready(self, child: Child, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.ready_file.exists() and self.ready_file.read_text().strip():
                self.replay_port = int(self.ready_file.read_text())
                return
            if getattr(child.proc, "returncode", None) is not None:
                raise RuntimeError(f"replay server exited with {child.proc.returncode} before listening")
            await asyncio.sleep(0.02)
        raise RuntimeError("replay server did not start listening in time")

    # -- main ---------------------------------------------------------------------------------
    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._on_signal, sig)
        await asyncio.to_thread(self._migrate)
        self.ready_file.parent.mkdir(parents=True, exist_ok=True)
        self.ready_file.unlink(missing_ok=True)
        s = self.cfg.supervisor
        for spec in self.specs():
            self.children[spec.name] = Child(spec, RestartPolicy(s.restart_backoff_min_s, s.restart_backoff_max_s, s.max_restarts, s.restart_window_s))
        health = await self.start_health()
        try:
            for child in self.children.values():
                await self.start_child(child)
                child.task = asyncio.create_task(self.watch(child))
                if child.spec.role == "replay":
                    await self.wait_replay_ready(child)
            sd_notify("READY=1")
            watchdog = asyncio.create_task(self.pet_watchdog())
            await self.stop_event.wait()
            watchdog.cancel()
        except Exception as e:  # a child that cannot start at all
            log.error("start-up failed", error=str(e))
            self.exit_code = 1
        sd_notify("STOPPING=1")
        await self.shutdown()
        if health is not None:
            await health.cleanup()
        return self.exit_code

    async def shutdown(self) -> None:
        self.stop_event.set()
        order = ("worker", "persister", "replay")
        for role in order:
            await asyncio.gather(*(self.stop_child(c) for c in self.children.values() if c.spec.role == role))
        self.cleanup_channels()

    def cleanup_channels(self) -> None:
        """Channel rings of this instance left by a worker that was killed: remove them (they
        hold no durable data). Persist queues are left alone unless drained (the persister
        removes drained ones): they may hold records not yet stored."""
        from dm._ring import unlink_segment

        for p in self.cfg.enabled_providers:
            for sym in p.symbols:
                if unlink_segment(self.cfg.channel_name(p.exchange, sym)):
                    log.warning("removed stale channel", exchange=p.exchange, symbol=sym)

    def _on_signal(self, sig) -> None:
        log.info("signal received, stopping", signal=signal.Signals(sig).name)
        self.stop_event.set()

    def _migrate(self) -> None:
        from dm.storage import open_storage

        st = open_storage(self.cfg.storage.url)
        try:
            st.migrate()
        finally:
            st.close()

    async def pet_watchdog(self) -> None:
        usec = int(os.environ.get("WATCHDOG_USEC", "0") or 0)
        if not usec:
            return
        while True:
            sd_notify("WATCHDOG=1")
            await asyncio.sleep(usec / 2e6)

    # -- health / metrics ----------------------------------------------------------------------
    def health(self) -> dict:
        return {
            "instance": self.cfg.instance,
            "uptime_s": round(time.time() - self.started_at, 3),
            "children": {n: {"state": c.state, "pid": getattr(c.proc, "pid", None), "starts": c.starts, "restarts": c.restarts, "last_exit": c.last_exit} for n, c in self.children.items()},
        }

    def ready(self) -> bool:
        return bool(self.children) and all(c.state in ("running", "done") for c in self.children.values())

    def metrics_text(self) -> bytes:
        from prometheus_client import CollectorRegistry, Gauge, generate_latest

        reg = CollectorRegistry()
        up = Gauge("dm_child_up", "1 when the child process is running", ["child", "role"], registry=reg)
        restarts = Gauge("dm_child_restarts", "restarts since the supervisor started", ["child"], registry=reg)
        for n, c in self.children.items():
            up.labels(n, c.spec.role).set(1 if c.state == "running" else 0)
            restarts.labels(n).set(c.restarts)
        frames = Gauge("dm_worker_frames", "websocket frames read", ["provider", "kind"], registry=reg)
        recs = Gauge("dm_channel_records", "records written to a channel ring", ["exchange", "symbol"], registry=reg)
        dead = Gauge("dm_worker_dead_letters", "frames rejected by the codec", ["provider"], registry=reg)
        rows = Gauge("dm_persister_rows", "rows written to storage", ["table"], registry=reg)
        for st in read_stats(self.cfg).values():
            if "provider" in st:
                for k, v in st.get("frames_by_kind", {}).items():
                    frames.labels(st["provider"], k).set(v)
                for s, v in st.get("records_by_channel", {}).items():
                    recs.labels(st["exchange"], s).set(v)
                dead.labels(st["provider"]).set(st.get("dead_letters", 0))
            else:
                for t, v in st.get("rows", {}).items():
                    rows.labels(t).set(v)
        return generate_latest(reg)

    async def start_health(self):
        port = self.cfg.supervisor.health_port
        if not port:
            return None
        from aiohttp import web

        async def health(_):
            return web.json_response(self.health())

        async def ready(_):
            return web.json_response({"ready": self.ready()}, status=200 if self.ready() else 503)

        async def metrics(_):
            return web.Response(body=self.metrics_text(), content_type="text/plain")

        app = web.Application()
        app.add_routes([web.get("/health", health), web.get("/ready", ready), web.get("/metrics", metrics)])
        runner = web.AppRunner(app)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        log.info("health endpoint", url=f"http://127.0.0.1:{port}/health")
        return runner


def read_stats(cfg: Config) -> dict[str, dict]:
    d = cfg.run_dir / cfg.instance
    out = {}
    for p in sorted(d.glob("*.stats.json")) if d.exists() else []:
        try:
            out[p.name.split(".")[0]] = json.loads(p.read_text())
        except (OSError, ValueError):
            pass
    return out


def summary(cfg: Config) -> str:
    """What flowed: frames by type, records by channel, rows stored, dead letters."""
    from dm.storage import open_storage

    stats = read_stats(cfg)
    lines = [f"dm instance {cfg.instance!r} — what flowed"]
    for name, st in stats.items():
        if "provider" not in st:
            continue
        lines.append(f"\n[{name}] {st['exchange']}: {st['frames']} frames, {st['records']} records, {st['dead_letters']} dead letters, {st['connects']} connection(s)")
        lines.append("  frames by type: " + ", ".join(f"{k} {v}" for k, v in sorted(st["frames_by_kind"].items()) if v))
        snapshots = st.get("book_snapshots", st.get("book_resyncs", 0))  # subscription venues count snapshots
        if snapshots or st.get("book_gaps"):
            lines.append(f"  books: {snapshots} snapshots, {st['book_gaps']} gaps, {st['book_crossed']} crossed")
        lines.append("  records by channel:")
        for s, v in sorted(st["records_by_channel"].items()):
            lines.append(f"    {cfg.channel_name(st['exchange'], s):<40} {v:>8}")
        if st["dead_letters"]:
            lines.append(f"  dead letters: {st['dead_letters_by_kind']} → {cfg.providers[name].dead_letter}")
    st = open_storage(cfg.storage.url)
    try:
        counts = st.counts()
    finally:
        st.close()
    lines.append(f"\nrows stored ({cfg.storage.url.split('@')[-1]}):")
    for t, v in sorted(counts.items()):
        lines.append(f"  {t:<16} {v:>8}")
    return "\n".join(lines)


def run_supervisor(cfg: Config, config_path: str) -> int:
    import uvloop

    return uvloop.run(Supervisor(cfg, config_path).run())
