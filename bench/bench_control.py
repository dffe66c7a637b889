"""Runtime control: a SUBSCRIBE on the control socket → first record of the new channel in the
reader's hands, on the replay server (Kraken v1 recording at its recorded pace, a real
supervisor, worker and persister). Alternative measured in the same run: what a symbol costs
without runtime control — the worker restarted (SIGTERM, the supervisor restarts it, it
reconnects and resubscribes) until its first record again. Ratio = restart / subscribe.

    python bench/bench_control.py [--quick]
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from dm.control import request  # noqa: E402
from tests.e2e import KRAKEN_FILES, KRAKEN_PAIRS, config_head, kraken_provider, start_supervisor  # noqa: E402


def _wait(cond, timeout: float):
    deadline = time.monotonic() + timeout
    while True:
        v = cond()
        if v:
            return v
        if time.monotonic() > deadline:
            raise TimeoutError("bench_control: condition not met")
        time.sleep(0.001)


def run(quick: bool = False) -> dict[str, float]:
    from dm.client import Client

    tmp = Path(tempfile.mkdtemp(prefix="dm-bench-control-"))
    instance = "b" + uuid.uuid4().hex[:10]
    configured = ["BTCUSD", "LSKUSD"]
    runtime = [s for s in KRAKEN_PAIRS.values() if s not in configured][: 3 if quick else 8]
    cfg = tmp / "dm.toml"
    cfg.write_text(config_head(tmp, instance, f"sqlite:///{tmp / 'dm.sqlite'}", KRAKEN_FILES, speed=1.0, once=False)
                   + kraken_provider(tmp, symbols=configured))
    sup = start_supervisor(cfg, tmp / "supervisor.log")
    run_dir = tmp / "run" / instance
    stats = lambda: json.loads((run_dir / "kraken.stats.json").read_text())  # noqa: E731
    client = Client(instance=instance, registry=f"/dm.reg.{instance}", control=str(run_dir / "control.sock"))
    sub_s, restart_s = [], []
    try:
        _wait(lambda: (run_dir / "kraken.ctl.sock").exists() and (run_dir / "kraken.stats.json").exists()
              and stats()["connected"], 60)
        for sym in runtime:
            t0 = time.perf_counter()
            sub = client.subscribe(sym, "KRAKEN", request=True, start="oldest", wait=10, follow=False)
            _wait(lambda: sub.read() is not None, 30)
            sub_s.append(time.perf_counter() - t0)
        connects = stats()["connects"]
        for _ in range(1 if quick else 3):  # the alternative: restart the worker to take a symbol
            pid = stats()["pid"]
            sub = client.subscribe(configured[0], "KRAKEN", start="newest", wait=10)
            t0 = time.perf_counter()
            os.kill(pid, signal.SIGTERM)
            _wait(lambda: (s := stats())["pid"] != pid and s["connected"], 60)
            sub.close()
            sub = client.subscribe(configured[0], "KRAKEN", start="newest", wait=30)
            _wait(lambda: sub.read() is not None, 60)
            restart_s.append(time.perf_counter() - t0)
            sub.close()
    finally:
        client.close()
        sup.send_signal(signal.SIGTERM)
        try:
            sup.wait(30)
        except subprocess.TimeoutExpired:
            sup.kill()
        shutil.rmtree(tmp, ignore_errors=True)
    p50 = statistics.median(sub_s)
    out = {
        "control.subscribe_to_first_record.p50_s": p50,
        "control.subscribe_to_first_record.max_s": max(sub_s),
        "control.subscribe.reconnects": float(connects - 1),
        "control.worker_restart_to_first_record.p50_s": statistics.median(restart_s),
        "control.restart_over_subscribe.ratio": statistics.median(restart_s) / p50,
    }
    return out


if __name__ == "__main__":
    quick = "--quick" in sys.argv
    for k, v in run(quick).items():
        print(f"{k:<52} {v:10.3f}")
