"""The supervisor: spawns one worker per enabled provider, the persister and (when the config
asks) the replay server, restarts children that die, isolates the ones that keep dying, and
stops everything in order.

- Children are fresh interpreters (``sys.executable -m dm worker NAME -c CONF`` etc.), each in
  its own session (``start_new_session``): a Ctrl-C at the terminal or a signal to the
  supervisor's process group reaches only the supervisor, which stops the children in order.
  Their environment carries ``$DM_SUPERVISOR_PID``: ``dm.lifeline`` makes a child receive
  SIGTERM (drain and exit) as soon as the supervisor dies, even by kill -9.
- A child that exits unexpectedly is restarted after an exponential backoff
  (``supervisor.restart_backoff_min_s`` … ``_max_s``). More than ``max_restarts`` exits within
  ``restart_window_s`` marks it **failed** (one error line, /health, /ready, metrics); it is
  started again after ``failed_retry_s`` while the other children run on. The supervisor
  exits with code 1 only when ``fail_fast = true`` or when every provider failed.
- A stop (SIGTERM/SIGINT) is immediate even while a child waits out a backoff: workers first
  (SIGTERM, ``stop_grace_s``, then SIGKILL), then the persister (which drains every queue to
  storage), then the replay server.
- Leftovers: the supervisor keeps a pid file per child (``run_dir/<instance>/<child>.pid``: pid,
  kernel start time, argv) and one for itself. A new supervisor refuses to start while another
  one of the instance lives; otherwise it ends the previous run's children that still live
  (found by pid file and in the shm registry) — SIGTERM, ``stop_grace_s``, SIGKILL — before it
  starts its own, so no new worker meets a live producer on its persist queue.
- It does not need the database: the persister, the only writer of storage, migrates when it
  connects.
- Health, readiness, metrics and systemd notifications: ``dm.health``.

The spawner and the clock are injectable, so restart policy is tested without real processes.
"""
from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Awaitable, Callable

from dm import log as dmlog
from dm.config import Config
from dm.errors import EXIT_FATAL, ConfigError, DmError, RingError
from dm.health import Health, Notifier, read_stats as _read_stats, sd_notify

__all__ = ["Supervisor", "RestartPolicy", "sd_notify", "read_stats", "summary", "run_supervisor"]

log = dmlog.get("dm.supervisor")


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
    state: str = "new"  # running | backoff | failed | stopping | stopped | done
    last_exit: int | None = None
    task: asyncio.Task | None = None
    history: list[int] = field(default_factory=list)
    failures: int = 0  # times marked failed
    retry_at: float | None = None  # supervisor clock: when a failed child starts again
    starting: bool = False


Spawner = Callable[[list[str], dict], Awaitable[object]]


async def default_spawn(argv: list[str], env: dict):
    """A child in its own session: terminal signals to the supervisor's group never reach it."""
    return await asyncio.create_subprocess_exec(*argv, stdin=asyncio.subprocess.DEVNULL, env=env, start_new_session=True)


# -- processes by pid --------------------------------------------------------------------------
def proc_start_time(pid: int) -> int | None:
    """The kernel start time of ``pid`` (clock ticks since boot, /proc/PID/stat field 22), or
    None when there is no such process. Together with the pid it names one process."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
        return int(stat[stat.rindex(b")") + 2:].split()[19])
    except (OSError, ValueError, IndexError):
        return None


def proc_cmdline(pid: int) -> list[str]:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return [a.decode(errors="replace") for a in f.read().split(b"\0") if a]
    except OSError:
        return []


def _alive(pid: int) -> bool:
    from dm._ring import pid_alive

    return pid_alive(pid)


@dataclass(frozen=True)
class Leftover:
    pid: int
    role: str
    name: str
    source: str  # "pid_file" | "registry"


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
        self.health = Health(self)
        self.notifier: Notifier | None = None

    # -- specs ------------------------------------------------------------------------------
    def specs(self) -> list[ChildSpec]:
        py = [sys.executable, "-m", "dm"]
        out = []
        if self.cfg.replay.enabled:
            r = self.cfg.replay
            argv = py + ["replay", *map(str, r.files), "--host", r.host, "--port", str(r.port), "--speed", str(r.speed), "--ready-file", str(self.ready_file),
                           "--log-format", self.cfg.log_format, "--log-level", self.cfg.log_level]
            if r.rate:
                argv += ["--rate", str(r.rate)]
            if self.cfg.supervisor.exit_when_replay_done:
                argv += ["--once", "--connections", str(self.replay_connections())]
            out.append(ChildSpec("replay", "replay", argv, restart=not self.cfg.supervisor.exit_when_replay_done))
        out.append(ChildSpec("persister", "persister", py + ["persist", "-c", self.config_path]))
        for p in self.cfg.enabled_providers:
            out.append(ChildSpec(p.name, "worker", py + ["worker", p.name, "-c", self.config_path]))
        return out

    def replay_connections(self) -> int:
        """Websocket connections the enabled workers open (a venue may open several, one per
        path): what a ``--once`` replay server waits for before it ends."""
        from dm.providers.base import provider_class

        n = 0
        for p in self.cfg.enabled_providers:
            try:
                n += provider_class(p.kind).websocket_connections(p)
            except NotImplementedError:  # a kind without a venue worker: one, as before
                n += 1
        return n

    @property
    def run_dir(self) -> Path:
        return self.cfg.run_dir / self.cfg.instance

    @property
    def ready_file(self) -> Path:
        return self.run_dir / "replay.port"

    def pid_file(self, name: str) -> Path:
        return self.run_dir / f"{name}.pid"

    @property
    def stopping(self) -> bool:
        return self.stop_event.is_set()

    # -- child lifecycle ----------------------------------------------------------------------
    async def start_child(self, child: Child) -> None:
        env = dict(os.environ)
        env["DM_SUPERVISOR_PID"] = str(os.getpid())
        if self.replay_port is not None:
            env["DM_REPLAY_ADDR"] = f"{self.cfg.replay.host}:{self.replay_port}"
        child.starting = True
        try:
            child.proc = await self.spawn(child.spec.argv, env)
        finally:
            child.starting = False
        child.starts += 1
        child.state = "running"
        child.retry_at = None
        pid = getattr(child.proc, "pid", None)
        self._write_pid_file(child.spec, pid)
        cpus = self.cfg.supervisor.cpus.get(child.spec.name)
        nice = self.cfg.supervisor.nice.get(child.spec.name)
        if cpus and pid:
            try:
                os.sched_setaffinity(pid, cpus)   # the child is still starting up (imports)
            except OSError as e:                  # e.g. a CPU this machine does not have
                log.error("cpu affinity not set", child=child.spec.name, cpus=list(cpus), error=repr(e))
        if nice is not None and pid:
            try:
                os.setpriority(os.PRIO_PROCESS, pid, nice)
            except OSError as e:                  # a negative value without the privilege
                log.error("nice not set", child=child.spec.name, nice=nice, error=repr(e))
        placed = {"cpus": list(cpus)} if cpus else {}
        if nice is not None:
            placed["nice"] = nice
        log.info("started", child=child.spec.name, pid=pid, **placed)

    async def _wait_or_stop(self, delay: float) -> bool:
        """Sleep ``delay`` seconds; return False at once when a stop is requested."""
        if self.stopping:
            return False
        sleeper = asyncio.ensure_future(self.sleep(delay))
        stopper = asyncio.ensure_future(self.stop_event.wait())
        try:
            await asyncio.wait({sleeper, stopper}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for t in (sleeper, stopper):
                t.cancel()
        return not self.stopping

    def _providers_all_failed(self) -> bool:
        workers = [c for c in self.children.values() if c.spec.role == "worker"]
        return bool(workers) and all(c.state == "failed" for c in workers)

    async def watch(self, child: Child) -> None:
        """Wait for the child to exit; restart it per policy unless we are stopping."""
        s = self.cfg.supervisor
        while True:
            code = await child.proc.wait()
            child.last_exit = code
            child.history.append(code)
            self._remove_pid_file(child.spec.name)
            if self.stopping or child.state == "stopping":
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
            fatal = code == EXIT_FATAL
            delay = None if fatal else child.policy.on_exit(self.clock())
            if delay is None:
                child.state = "failed"
                child.failures += 1
                child.retry_at = self.clock() + s.failed_retry_s
                if fatal:  # the child said why in its own log line; restarting at once cannot help
                    log.error("child failed (fatal error, not restarted now)", child=child.spec.name, code=code,
                              retry_in_s=s.failed_retry_s)
                else:
                    log.error("child failed (crash loop)", child=child.spec.name, code=code,
                              exits=len(child.policy.exits), window_s=s.restart_window_s, retry_in_s=s.failed_retry_s)
                if s.fail_fast:
                    log.error("fail_fast: stopping the instance", child=child.spec.name)
                    self.exit_code = 1
                    self.stop_event.set()
                    return
                if self._providers_all_failed():
                    log.error("every provider failed: stopping the instance")
                    self.exit_code = 1
                    self.stop_event.set()
                    return
                if not await self._wait_or_stop(s.failed_retry_s):
                    return  # stays "failed" through the shutdown
                log.info("retrying failed child", child=child.spec.name)
            else:
                child.state = "backoff"
                log.warning("child exited, restarting", child=child.spec.name, code=code, in_s=delay)
                if not await self._wait_or_stop(delay):
                    child.state = "stopped"
                    return
            child.restarts += 1
            try:
                await self.start_child(child)
            except OSError as e:  # cannot even spawn: counts as one more exit of the old process
                log.error("cannot start child", child=child.spec.name, error=dmlog.redact(str(e)))

    async def stop_child(self, child: Child) -> None:
        while child.starting:  # a start in progress: stop the process it creates
            await asyncio.sleep(0.005)
        proc = child.proc
        if proc is not None and getattr(proc, "returncode", None) is None and child.state not in ("stopped", "done"):
            child.state = "stopping"
            try:
                proc.send_signal(signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                await asyncio.wait_for(asyncio.shield(proc.wait()), self.cfg.supervisor.stop_grace_s)
            except asyncio.TimeoutError:
                log.warning("child ignored SIGTERM, killing", child=child.spec.name)
                try:
                    proc.kill()
                except ProcessLookupError:
                    pass
                await proc.wait()
            log.info("stopped", child=child.spec.name, code=proc.returncode)
        if child.task is not None:
            await asyncio.gather(child.task, return_exceptions=True)
        if child.state not in ("failed", "done"):
            child.state = "stopped"

    async def wait_replay_ready(self, child: Child, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not self.stopping:
            if self.ready_file.exists() and self.ready_file.read_text().strip():
                self.replay_port = int(self.ready_file.read_text())
                return
            if getattr(child.proc, "returncode", None) is not None:
                raise DmError(f"replay server exited with {child.proc.returncode} before listening")
            await asyncio.sleep(0.02)
        if not self.stopping:
            raise DmError("replay server did not start listening in time")

    # -- pid files and leftovers of a previous run ----------------------------------------------
    def _write_pid_file(self, spec: ChildSpec, pid: int | None) -> None:
        if not pid:
            return
        doc = {"pid": pid, "start": proc_start_time(pid), "role": spec.role, "argv": spec.argv, "supervisor": os.getpid()}
        tmp = self.pid_file(spec.name).with_suffix(".tmp")
        tmp.write_text(json.dumps(doc))
        os.replace(tmp, self.pid_file(spec.name))

    def _remove_pid_file(self, name: str) -> None:
        self.pid_file(name).unlink(missing_ok=True)

    @staticmethod
    def _same_process(doc: dict) -> bool:
        """The process a pid file names still runs (same pid, kernel start time and argv)."""
        pid = doc.get("pid")
        if not isinstance(pid, int) or pid <= 0 or not _alive(pid):
            return False
        start = doc.get("start")
        if start is None or proc_start_time(pid) != start:
            return False
        return doc.get("argv") is None or proc_cmdline(pid) == doc["argv"]

    def claim_instance(self) -> None:
        """Refuse a second live supervisor of this instance; record ourselves."""
        path = self.pid_file("supervisor")
        try:
            doc = json.loads(path.read_text())
        except (OSError, ValueError):
            doc = None
        if isinstance(doc, dict) and doc.get("pid") != os.getpid() and self._same_process(doc):
            raise DmError(f"instance {self.cfg.instance!r} is already supervised by pid {doc['pid']} ({path})")
        me = os.getpid()
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"pid": me, "start": proc_start_time(me), "argv": proc_cmdline(me)}))
        os.replace(tmp, path)

    def find_leftovers(self) -> list[Leftover]:
        """Children of an earlier supervisor of this instance that still run: from its pid
        files, and workers of this instance in the shm registry."""
        found: dict[int, Leftover] = {}
        for p in sorted(self.run_dir.glob("*.pid")):
            name = p.name[: -len(".pid")]
            if name == "supervisor":
                continue
            try:
                doc = json.loads(p.read_text())
            except (OSError, ValueError):
                doc = None
            if isinstance(doc, dict) and self._same_process(doc):
                found[doc["pid"]] = Leftover(doc["pid"], str(doc.get("role", "?")), name, "pid_file")
            else:
                p.unlink(missing_ok=True)
        try:
            from dm.registry import Registry

            reg = Registry.open_readonly(self.cfg.shm.registry)
            try:
                entries = reg.entries(include_stale=True)
            finally:
                reg.close()
        except (DmError, OSError) as e:
            log.warning("registry unreadable; leftovers by pid file only", registry=self.cfg.shm.registry, error=str(e))
            entries = []
        me = os.getpid()
        for e in entries:
            if e.instance != self.cfg.instance or e.pid in found or e.pid == me or not _alive(e.pid):
                continue
            argv = proc_cmdline(e.pid)
            if "worker" in argv and e.provider in argv:  # a dm worker, not a reused pid
                found[e.pid] = Leftover(e.pid, "worker", e.provider, "registry")
        return list(found.values())

    async def end_leftovers(self, leftovers: list[Leftover]) -> None:
        """Workers first, then the persister, then the rest: SIGTERM (they drain and exit),
        ``stop_grace_s``, then SIGKILL."""
        grace = self.cfg.supervisor.stop_grace_s
        for roles in (("worker",), ("persister",), None):
            group = [x for x in leftovers if (x.role in roles if roles else x.role not in ("worker", "persister"))]
            if not group:
                continue
            for x in group:
                log.warning("leftover of an earlier run still running: stopping it", child=x.name, pid=x.pid, found_by=x.source)
                try:
                    os.kill(x.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
            live = await self._wait_gone([x.pid for x in group], grace)
            for pid in live:
                log.warning("leftover ignored SIGTERM, killing", pid=pid)
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            if await self._wait_gone(live, 5.0):
                raise DmError(f"leftover processes {live} of instance {self.cfg.instance!r} do not exit")
        for x in leftovers:
            self._remove_pid_file(x.name)

    @staticmethod
    async def _wait_gone(pids: list[int], timeout: float) -> list[int]:
        deadline = time.monotonic() + timeout
        live = [p for p in pids if _alive(p)]
        while live and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
            live = [p for p in live if _alive(p)]
        return live

    # -- main ---------------------------------------------------------------------------------
    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._on_signal, sig)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.claim_instance()
        try:
            return await self._run()
        finally:
            self._remove_pid_file("supervisor")

    async def _run(self) -> int:
        leftovers = self.find_leftovers()
        if leftovers:
            await self.end_leftovers(leftovers)
        for p in self.run_dir.glob("*.stats.json"):  # reports of an earlier run
            p.unlink(missing_ok=True)
        for p in self.run_dir.glob("*.runtime.json"):  # the config is the source of truth at start
            p.unlink(missing_ok=True)
        self.ready_file.unlink(missing_ok=True)
        s = self.cfg.supervisor
        for spec in self.specs():
            self.children[spec.name] = Child(spec, RestartPolicy(s.restart_backoff_min_s, s.restart_backoff_max_s, s.max_restarts, s.restart_window_s))
        for key, table in (("cpus", s.cpus), ("nice", s.nice)):
            unknown = sorted(set(table) - set(self.children))
            if unknown:
                raise ConfigError(f"[supervisor] {key} names no child {unknown}; the children are {sorted(self.children)}")
        health = await self.start_health()
        control = await self.start_control()
        self.notifier = Notifier(self.health)
        monitor = asyncio.create_task(self.monitor())
        try:
            for child in self.children.values():
                if self.stopping:
                    break
                await self.start_child(child)
                child.task = asyncio.create_task(self.watch(child))
                if child.spec.role == "replay":
                    await self.wait_replay_ready(child)
            await self.stop_event.wait()
        except (DmError, OSError) as e:  # a child that cannot start at all
            log.error("start-up failed", error=dmlog.redact(str(e)))
            self.exit_code = 1
        monitor.cancel()
        sd_notify("STOPPING=1")
        if control is not None:
            await control.close()
        await self.shutdown()
        if health is not None:
            await health.cleanup()
        return self.exit_code

    async def start_control(self):
        """The instance's control socket (``dm.control``), None when ``[control] enabled =
        false`` or it cannot listen (logged; the service runs on without runtime control)."""
        from dm import control

        if not control.settings(self.cfg)["enabled"]:
            return None
        sc = control.SupervisorControl(self)
        try:
            await sc.start()
        except (OSError, control.ControlError) as e:
            log.error("control socket not started", error=str(e))
            return None
        return sc

    async def monitor(self, every_s: float = 0.25) -> None:
        """Readiness, STATUS= and the watchdog from the children's progress."""
        while True:
            try:
                self.notifier.tick()
            except Exception as e:  # health must never take the supervisor down
                log.error("health evaluation failed", error=repr(e))
            await asyncio.sleep(every_s)

    async def shutdown(self) -> None:
        self.stop_event.set()
        for role in ("worker", "persister", "replay"):
            await asyncio.gather(*(self.stop_child(c) for c in self.children.values() if c.spec.role == role))
        self.cleanup_channels()

    def cleanup_channels(self) -> None:
        """Channel rings of this instance left by a worker that was killed: remove them (they
        hold no durable data). ``unlink_segment`` refuses a segment whose writer lives. Persist
        queues are left alone (the persister removes drained ones): they may hold records not
        yet stored."""
        from dm._ring import unlink_segment

        for p in self.cfg.enabled_providers:
            extra = []
            try:  # symbols a killed worker carried at runtime
                extra = list(json.loads((self.run_dir / f"{p.name}.runtime.json").read_text()).get("added", {}))
            except (OSError, ValueError):
                pass
            for sym in list(p.symbols) + extra:
                try:
                    removed = unlink_segment(self.cfg.channel_name(p.exchange, sym))
                except RingError as e:
                    log.warning("channel left in place", exchange=p.exchange, symbol=sym, reason=str(e))
                    continue
                if removed:
                    log.warning("removed stale channel", exchange=p.exchange, symbol=sym)

    def _on_signal(self, sig) -> None:
        log.info("signal received, stopping", signal=signal.Signals(sig).name)
        self.stop_event.set()

    # -- health / metrics (dm.health) ----------------------------------------------------------
    def health_doc(self) -> dict:
        return self.health.health_doc()

    def ready(self) -> bool:
        self.health.fresh()
        return self.health.evaluate().ready

    def metrics_text(self) -> bytes:
        from prometheus_client import CollectorRegistry, generate_latest

        reg = CollectorRegistry(auto_describe=False)
        reg.register(self.health)
        return generate_latest(reg)

    async def start_health(self):
        port = self.cfg.supervisor.health_port
        if not port:
            return None
        from aiohttp import web
        from prometheus_client import CONTENT_TYPE_LATEST

        async def health(_):
            doc = self.health_doc()
            return web.json_response(doc, status=200 if doc["healthy"] else 503)

        async def ready(_):
            self.health.fresh()
            v = self.health.evaluate()
            return web.json_response({"ready": v.ready, "reasons": v.reasons}, status=200 if v.ready else 503)

        async def metrics(_):
            return web.Response(body=self.metrics_text(), headers={"Content-Type": CONTENT_TYPE_LATEST})

        app = web.Application()
        app.add_routes([web.get("/health", health), web.get("/ready", ready), web.get("/metrics", metrics)])
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        try:
            await web.TCPSite(runner, "127.0.0.1", port).start()
        except OSError as e:
            await runner.cleanup()
            raise DmError(f"supervisor.health_port {port}: cannot listen on 127.0.0.1: {e.strerror or e}") from None
        log.info("health endpoint", url=f"http://127.0.0.1:{port}/health")
        return runner


def read_stats(cfg: Config) -> dict[str, dict]:
    """``{name: stats}`` of the instance's children (``run_dir/<instance>/*.stats.json``)."""
    return _read_stats(cfg.run_dir / cfg.instance)


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
    lines.append(f"\nrows stored ({dmlog.redact(cfg.storage.url.split('@')[-1])}):")
    for t, v in sorted(counts.items()):
        lines.append(f"  {t:<16} {v:>8}")
    return "\n".join(lines)


def run_supervisor(cfg: Config, config_path: str) -> int:
    import uvloop

    return uvloop.run(Supervisor(cfg, config_path).run())
