"""Real processes for the NATS tests: a nats-server of the test's own (free port, own JetStream
store dir, so restarting it never disturbs the shared server on 4222), the shm writer process
(tests/nats_writer.py), ``dm bridge`` and ``dm persist-remote`` as subprocesses."""
from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
NATS_SERVER = shutil.which("nats-server") or "/usr/sbin/nats-server"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(cond, timeout: float, what: str, every: float = 0.02):
    deadline = time.monotonic() + timeout
    while True:
        v = cond()
        if v:
            return v
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(every)


class NatsServer:
    def __init__(self, tmp: Path):
        self.port = free_port()
        self.store = tmp / "jetstream"
        self.log = tmp / "nats-server.log"
        self.proc: subprocess.Popen | None = None
        self.url = f"nats://127.0.0.1:{self.port}"

    def _up(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), 0.2) as s:
                return s.recv(4).startswith(b"INFO")
        except OSError:
            return False

    def start(self) -> "NatsServer":
        self.proc = subprocess.Popen([NATS_SERVER, "-js", "-a", "127.0.0.1", "-p", str(self.port), "-sd", str(self.store)],
                                     stdout=subprocess.DEVNULL, stderr=open(self.log, "ab"))
        wait_for(self._up, 15, "nats-server to listen")
        return self

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def restart(self, down_s: float = 1.0) -> None:
        self.stop()
        time.sleep(down_s)  # the outage itself: clients must ride it out
        self.start()


def bridge_config(tmp: Path, instance: str, url: str, stream: str, storage_url: str = "", **bridge) -> Path:
    cfg = tmp / "dm.toml"
    extra = "".join(f"{k} = {json.dumps(v)}\n" for k, v in bridge.items())
    cfg.write_text(f"""
[dm]
instance = "{instance}"
run_dir = "{tmp / 'run'}"
log_format = "console"
log_level = "info"
[storage]
url = "{storage_url or f'sqlite:///{tmp / "dm.sqlite"}'}"
[shm]
registry = "/dm.reg.{instance}"
[bridge]
url = "{url}"
stream = "{stream}"
{extra}""")
    return cfg


class Writer:
    """tests/nats_writer.py as a process; ``counts`` once it wrote everything."""

    def __init__(self, tmp: Path, instance: str, *, ring_bytes: int = 1 << 22, repeat: int = 1, rate: float = 0.0,
                 go: bool = False, symbols=None):
        self.stop_file = tmp / f"writer-{instance}.stop"
        self.go_file = tmp / f"writer-{instance}.go" if go else None
        argv = [sys.executable, str(ROOT / "tests/nats_writer.py"), instance, f"/dm.reg.{instance}", "--ring-bytes", str(ring_bytes),
                "--repeat", str(repeat), "--rate", str(rate), "--stop-file", str(self.stop_file)]
        if self.go_file:
            argv += ["--go-file", str(self.go_file)]
        if symbols:
            argv += ["--symbols", ",".join(symbols)]
        self.out = tmp / f"writer-{instance}.out"
        self.proc = subprocess.Popen(argv, stdout=open(self.out, "wb"), stderr=subprocess.STDOUT, cwd=ROOT)
        wait_for(lambda: self.out.read_bytes().startswith(b"ready") or self.proc.poll() is not None, 60, "writer ready")
        assert self.proc.poll() is None, self.out.read_text()
        self.counts: dict | None = None

    def go(self) -> None:
        self.go_file.write_text("go")

    def wait_done(self, timeout: float = 120) -> dict:
        def done():
            lines = self.out.read_text().splitlines()
            return json.loads(lines[1]) if len(lines) > 1 and lines[1].startswith("{") else None
        self.counts = wait_for(done, timeout, "writer to finish", every=0.05)
        return self.counts

    def close(self) -> None:
        self.stop_file.write_text("stop")
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def start_dm(args, tmp: Path, name: str) -> subprocess.Popen:
    env = dict(os.environ)
    env.pop("DM_STORAGE_URL", None)
    return subprocess.Popen([sys.executable, "-m", "dm", *args], cwd=ROOT, env=env, stdout=open(tmp / f"{name}.out", "wb"),
                            stderr=open(tmp / f"{name}.log", "wb"))


def stop_proc(p: subprocess.Popen, timeout: float = 20) -> int:
    if p.poll() is None:
        p.send_signal(signal.SIGTERM)
        try:
            return p.wait(timeout)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
            return -9
    return p.returncode


def stats(tmp: Path, instance: str, name: str) -> dict:
    try:
        return json.loads((tmp / "run" / instance / f"{name}.stats.json").read_text())
    except (OSError, ValueError):
        return {}


def local_records(instance: str, symbol: str, exchange: str = "BINANCE") -> list[bytes]:
    """Every record a channel ring still holds, from the oldest, through a local reader."""
    from dm._ring import ChannelReader
    from dm.records import LAYOUT_HASH

    r = ChannelReader(f"/dm.{instance}.{exchange}.{symbol}", LAYOUT_HASH, start="oldest")
    out = []
    try:
        while (x := r.read()) is not None:
            out.append(x)
        assert r.lost_records == 0
    finally:
        r.close()
    return out


def stream_messages(url: str, stream: str, subject: str = ">") -> list[tuple[int, str, dict, bytes]]:
    """Every message of a stream as (stream seq, subject, headers, payload), with a raw ordered
    consumer of the test's own (independent of dm.remote)."""
    import asyncio

    import nats

    async def go():
        nc = await nats.connect(url)
        js = nc.jetstream()
        info = await js.stream_info(stream)
        last = info.state.last_seq
        out = []
        sub = await js.subscribe(subject, stream=stream, ordered_consumer=True)
        while out and out[-1][0] < last or not out and info.state.messages:
            m = await sub.next_msg(timeout=10)
            out.append((m.metadata.sequence.stream, m.subject, dict(m.headers or {}), m.data))
        await nc.close()
        return out

    return asyncio.run(go())
