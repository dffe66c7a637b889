"""A/B of the codec bench between two checkouts of dm, interleaved in one run (A, B, A, B, ...)
so both sides see the same machine load. Each side runs its own ``bench/bench_codec.py``
``run()`` against its own built extensions (``make build`` in each checkout first).

    python bench/ab_codec.py A_DIR B_DIR [--rounds 3] [--quick] [--out bench/results/ab-NAME.json]

Prints, per codec case, the best and median ns/frame of each side and the ratio B/A of the
best (< 1: B faster), and writes them to ``--out`` with every raw round. Each side's
``bench_codec.run()`` is already best-of-5 after a warm-up with gc disabled.
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

_CHILD = ("import json, sys; sys.path[:0] = [{tree!r}, {tree!r} + '/bench']; import bench_codec; "
          "print(json.dumps(bench_codec.run(quick={quick})))")


def _one(tree: Path, quick: bool) -> dict[str, float]:
    out = subprocess.run([sys.executable, "-c", _CHILD.format(tree=str(tree), quick=quick)], cwd=tree,
                         capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("a", type=Path, help="checkout A (e.g. before a change)")
    ap.add_argument("b", type=Path, help="checkout B (e.g. after)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    runs: dict[str, list[dict[str, float]]] = {"A": [], "B": []}
    for r in range(args.rounds):
        for side, tree in (("A", args.a), ("B", args.b)):
            print(f"round {r + 1}/{args.rounds}: {side} ({tree}) ...", flush=True)
            runs[side].append(_one(tree.resolve(), args.quick))
    cases = sorted(k[len("codec."):-len(".ns_per_frame")] for k in runs["A"][0]
                   if k.endswith(".ns_per_frame") and k in runs["B"][0])
    table = {}
    print(f"\n{'case':<28} {'A best':>8} {'A median':>9} {'B best':>8} {'B median':>9} {'B/A best':>9}")
    for c in cases:
        key = f"codec.{c}.ns_per_frame"
        a = [x[key] for x in runs["A"]]
        b = [x[key] for x in runs["B"]]
        row = {"a_best": min(a), "a_median": statistics.median(a), "b_best": min(b), "b_median": statistics.median(b),
               "b_over_a_best": min(b) / min(a), "a_all": a, "b_all": b}
        table[c] = row
        print(f"{c:<28} {row['a_best']:>8.1f} {row['a_median']:>9.1f} {row['b_best']:>8.1f} {row['b_median']:>9.1f} "
              f"{row['b_over_a_best']:>9.3f}")
    if args.out:
        meta = {"time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "python": sys.version.split()[0],
                "machine": platform.machine(), "a": str(args.a), "b": str(args.b), "rounds": args.rounds,
                "quick": args.quick, "unit": "ns per frame (bench_codec: best of 5 after warm-up, gc off)"}
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"meta": meta, "cases": table}, indent=1))
        print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
