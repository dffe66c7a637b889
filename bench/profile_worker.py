"""`make profile`: where a worker's time goes, per frame. Runs the real ``dm supervise`` with the
Binance worker on the recorded session cloned to 100 symbols (bench/gen_symbols.py, 113 k frames),
or with ``--venue V`` any bench_worker venue on bench_worker's session (tiled by
bench/gen_sessions.py when the recording is short), replayed at full speed, and samples that
worker with py-spy (``py-spy record --native``: Python and the C/Cython frames under it; py-spy
pauses the worker for each sample, so its frames/s while sampled are lower than bench_worker's)
from its start to its exit. Writes bench/results/profile-worker-<venue>.svg (flame graph: open it
in a browser), or with ``--format speedscope`` bench/results/profile-worker-<venue>.speedscope.json
(speedscope.app), or with ``--format raw`` folded stacks and a printed self/inclusive summary.

    python bench/profile_worker.py [--venue binance] [--symbols 100] [--rate 0] [--hz 499] [--format flamegraph|speedscope|raw] [--no-native]
"""
from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

import _svc  # noqa: E402
from gen_symbols import generate  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--venue", default="binance", help="binance (the cloned session) or any bench_worker venue")
    ap.add_argument("--symbols", type=int, default=100)
    ap.add_argument("--rate", type=float, default=0.0, help="replay frames/s (0: full speed)")
    ap.add_argument("--hz", type=int, default=499, help="py-spy samples per second")
    ap.add_argument("--format", choices=("flamegraph", "speedscope", "raw"), default="flamegraph",
                    help="raw: folded stacks plus a printed self/inclusive summary")
    ap.add_argument("--no-native", action="store_true", help="Python frames only (no pause per sample)")
    args = ap.parse_args()
    spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    out_dir = HERE / "results"
    out_dir.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="dm-profile-") as d:
        tmp = Path(d)
        venue = args.venue
        if venue == "binance":
            session, info, canon = generate(args.symbols, tmp / "gen")
            inst = _svc.instance_name("p")
            cfg = _svc.write_config(tmp, inst, (session, info), _svc.binance_provider(tmp, canon), rate=args.rate)
        else:                        # bench_worker's config, its tiled session for a short recording
            import bench_worker as bw
            bw.tile(venue, tmp / "tiles")
            inst, cfg = bw.worker_config(venue, tmp)
        sup = _svc.supervise(cfg, tmp / "sup.log")
        worker = None
        deadline = time.monotonic() + 60
        while worker is None and time.monotonic() < deadline and sup.poll() is None:
            for p in psutil.Process(sup.pid).children(recursive=True):
                try:
                    if _svc.role_of(p.cmdline()) == f"worker:{venue}":
                        worker = p.pid
                except psutil.Error:
                    pass
            time.sleep(0.01)
        if worker is None:
            sup.kill()
            print(f"no {venue} worker started; see", tmp / "sup.log", file=sys.stderr)
            return 1
        base = out_dir / f"profile-worker-{venue}"
        out = str(base) + {"flamegraph": ".svg", "speedscope": ".speedscope.json", "raw": ".folded.txt"}[args.format]
        cmd = [spy, "record", "--pid", str(worker), "--rate", str(args.hz), "--format", args.format, "--output", out]
        cmd += ["--nonblocking"] if args.no_native else ["--native"]
        spies = [subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)]
        rc = sup.wait(900)
        for s in spies:
            try:
                s.wait(60)
            except subprocess.TimeoutExpired:
                s.terminate()
        st = _svc.worker_stats(tmp / "run", inst, venue)
        print(f"supervise exit {rc}; worker frames {st['frames']} at {_svc.frames_per_s(st):,.0f} frames/s (while sampled)")
        for s in spies:
            err = s.stderr.read().decode(errors="replace").strip().splitlines()
            if err:
                print("py-spy:", err[-1])
        print("wrote", out)
        if args.format == "raw":
            summarize(Path(out))
    return 0


def summarize(folded: Path, top: int = 30) -> None:
    """Self and inclusive sample shares per function from py-spy's folded stacks."""
    import collections

    own, incl, total = collections.Counter(), collections.Counter(), 0
    for line in folded.read_text().splitlines():
        stack, _, n = line.rpartition(" ")
        frames, n = stack.split(";"), int(n)
        total += n
        own[frames[-1]] += n
        for f in set(frames):
            incl[f] += n
    print(f"{total} samples; self time:")
    for f, n in own.most_common(top):
        print(f"  {n / total:6.1%}  {f[:140]}")
    print("inclusive:")
    for f, n in incl.most_common(top * 2):
        print(f"  {n / total:6.1%}  {f[:140]}")


if __name__ == "__main__":
    sys.exit(main())
