"""`make bench`: runs every bench/bench_*.py `run()` in one process run, prints one table and
writes bench/results/latest.json (plus a timestamped copy; a partial `--only` run writes only the
copy), then the targets table (bench/targets.py). Numbers from one run are comparable
with each other; ratios against the baselines are what to read on a noisy machine.

    python bench/run.py [--quick] [--only codec,ring]
"""
from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))
ORDER = ["codec", "ring", "book", "storage", "worker", "bridge", "backfill"]


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="shorter runs (smoke test of the benches)")
    ap.add_argument("--only", default="", help="comma-separated bench names, e.g. codec,ring")
    args = ap.parse_args()
    names = [n for n in ORDER if (HERE / f"bench_{n}.py").exists()]
    names += sorted(p.stem[6:] for p in HERE.glob("bench_*.py") if p.stem[6:] not in names)
    if args.only:
        names = [n for n in names if n in args.only.split(",")]
    results: dict[str, float] = {}
    failed = {}
    for name in names:
        # the previous bench's write-back (databases, session files) goes to disk now, not into
        # this bench's timings (a background flush stalled the replay server's pacing and the
        # readers' p99 by milliseconds in one run)
        if hasattr(os, "sync"):
            os.sync()
        t0 = time.perf_counter()
        print(f"== bench_{name} ...", flush=True)
        try:
            mod = importlib.import_module(f"bench_{name}")
            res = mod.run(quick=args.quick)
        except Exception as e:  # one broken bench must not hide the others
            failed[name] = repr(e)
            print(f"   FAILED: {e!r}", flush=True)
            continue
        results.update(res)
        print(f"   done in {time.perf_counter() - t0:.1f} s", flush=True)
    width = max((len(k) for k in results), default=10)
    print()
    print(f"{'metric':<{width}}  value")
    print(f"{'-' * width}  {'-' * 16}")
    for k in sorted(results):
        v = results[k]
        print(f"{k:<{width}}  {v:>16,.3f}" if isinstance(v, float) and abs(v) < 1000 else f"{k:<{width}}  {v:>16,.0f}")
    out = {
        "meta": {"time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "python": sys.version.split()[0],
                 "machine": platform.machine(), "cpus": os.cpu_count(), "quick": args.quick, "failed": failed},
        **results,
    }
    res_dir = HERE / "results"
    res_dir.mkdir(exist_ok=True)
    stamped = res_dir / f"bench-{time.strftime('%Y%m%dT%H%M%S')}.json"
    stamped.write_text(json.dumps(out, indent=1, sort_keys=True))
    if args.only:  # latest.json is one whole run: a partial run never replaces it
        print(f"\nwrote {stamped} (--only: latest.json left as it was)")
    else:
        (res_dir / "latest.json").write_text(json.dumps(out, indent=1, sort_keys=True))
        print(f"\nwrote {res_dir / 'latest.json'} and {stamped}")
    from targets import table

    print("\ntargets (bench/targets.py):\n" + table(results))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
