"""Shared by the service-level benches (bench_e2e, bench_scaling): write a config for a unique
instance, run the real ``dm supervise`` (replay server + workers + persister) and watch it from
outside: per process CPU seconds and peak RSS (psutil, sampled every ``every`` s), the persister's
stats file (lag per queue), the instance's shm segments (bytes), the workers' stats files."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.e2e import config_head, provider_toml  # noqa: E402


def instance_name(tag: str) -> str:
    return f"b{tag}{uuid.uuid4().hex[:6]}"


def write_config(tmp: Path, instance: str, files, providers: str, *, speed: float = 0.0, rate: float = 0.0,
                 storage_url: str | None = None, batch_records: int = 5000, channel_bytes: int = 4 << 20,
                 persist_bytes: int = 1 << 28) -> Path:
    """A bench config; ``persist_bytes`` defaults to conf/prod.toml's 256 MiB (the tests' 16 MiB
    fills at full-speed replay and the worker then spills every frame's rows with a write(2))."""
    text = config_head(tmp, instance, storage_url or f"sqlite:///{tmp / 'db.sqlite'}", files, speed=speed)
    text = text.replace("persist_bytes = 16777216\n", f"persist_bytes = {persist_bytes}\n", 1)
    text = text.replace(f"speed = {speed}\n", f"speed = {speed}\nrate = {rate}\n", 1)
    text = text.replace("batch_records = 5000\n", f"batch_records = {batch_records}\n", 1)
    text = text.replace("channel_bytes = 4194304\n", f"channel_bytes = {channel_bytes}\n", 1)
    cfg = tmp / "dm.toml"
    cfg.write_text(text + providers)
    return cfg


def binance_provider(tmp: Path, symbols, channels=("aggTrade", "bookTicker", "depth@100ms")) -> str:
    return provider_toml(tmp, "binance", "binance", "BINANCE", "ws://{replay}/stream", symbols, channels).replace(
        "reconnect_min_s = 0.1", "reconnect_min_s = 5.0")


def role_of(cmdline: list[str]) -> str | None:
    """'supervise' | 'replay' | 'persist' | 'worker:<name>' for a dm process, else None."""
    try:
        i = cmdline.index("dm")
    except ValueError:
        return None
    rest = cmdline[i + 1:]
    if not rest:
        return None
    if rest[0] == "worker" and len(rest) > 1:
        return f"worker:{rest[1]}"
    return rest[0]


class Watch(threading.Thread):
    """Samples a supervisor's process tree until ``stop()``: CPU seconds (user + system, last
    seen), peak RSS, persister lag per queue over time, the instance's shm bytes (peak)."""

    def __init__(self, sup_pid: int, run_dir: Path, instance: str, every: float = 0.1):
        super().__init__(daemon=True)
        self.sup = psutil.Process(sup_pid)
        self.run_dir, self.instance, self.every = run_dir, instance, every
        self.cpu: dict[str, float] = {}
        self.rss: dict[str, int] = {}
        self.lag: list[tuple[float, float]] = []  # (monotonic s, max lag_s over queues)
        self.shm_bytes = 0
        self.shm_segments: dict[str, int] = {}
        self._halt = threading.Event()
        self.t0 = time.monotonic()

    def _sample(self) -> None:
        procs = [self.sup]
        try:
            procs += self.sup.children(recursive=True)
        except psutil.Error:
            pass
        for p in procs:
            try:
                role = "supervise" if p.pid == self.sup.pid else role_of(p.cmdline())
                if role is None:
                    continue
                with p.oneshot():
                    ct = p.cpu_times()
                    self.cpu[role] = ct.user + ct.system
                    self.rss[role] = max(self.rss.get(role, 0), p.memory_info().rss)
            except psutil.Error:
                continue
        st = self.run_dir / self.instance / "persister.stats.json"
        try:
            q = json.loads(st.read_text()).get("queues", {})
            self.lag.append((time.monotonic() - self.t0, max((v.get("lag_s", 0.0) for v in q.values()), default=0.0)))
        except (OSError, ValueError):
            pass
        segs = {}
        for f in os.scandir("/dev/shm"):
            if f.name.startswith(f"dm.{self.instance}."):
                try:
                    segs[f.name] = f.stat().st_size
                except OSError:
                    pass
        if sum(segs.values()) > self.shm_bytes:
            self.shm_bytes = sum(segs.values())
            self.shm_segments = segs

    def run(self) -> None:
        while not self._halt.is_set():
            self._sample()
            self._halt.wait(self.every)

    def stop(self) -> None:
        self._halt.set()
        self.join(5)


def supervise(cfg: Path, log: Path, timeout: float = 300) -> subprocess.Popen:
    env = dict(os.environ)
    env.pop("DM_STORAGE_URL", None)
    return subprocess.Popen([sys.executable, "-m", "dm", "supervise", "-c", str(cfg)], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=open(log, "wb"))


def worker_stats(run_dir: Path, instance: str, name: str) -> dict:
    return json.loads((run_dir / instance / f"{name}.stats.json").read_text())


def frames_per_s(st: dict) -> float:
    span = (st["last_frame_ns"] - st["first_frame_ns"]) / 1e9
    return (st["frames"] - 1) / span if span > 0 else 0.0
