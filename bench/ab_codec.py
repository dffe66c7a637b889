"""A/B of the codecs of two checkouts of dm (e.g. before and after a change), interleaved finely
so both sides see the same machine load: one long-lived process per checkout decodes the same
recorded frames (the cases of ``bench/bench_codec.py``), and the parent asks them in turn,
case by case, alternating which side goes first each round.

    python bench/ab_codec.py A_DIR B_DIR [--rounds 10] [--target 0.3] [--out FILE] [--only okx]

Each checkout must be built (``make build`` there). Prints per case the best and median
ns/frame of each side and B/A of the best (< 1: B is faster); ``--out`` writes them with every
raw measurement as JSON. One measurement is ``bench_codec._time``: best of 3 runs of
>= target/3 s each, gc disabled.
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

HERE = Path(__file__).resolve().parent


def _child(tree: str) -> None:
    """Serve timing requests for checkout ``tree``: stdin ``CASE TARGET REPEATS`` -> ns/frame."""
    import gc
    import importlib.util

    sys.path.insert(0, tree)
    import dm.codec_ref  # noqa: F401  (the checkout's dm, before bench_codec puts ours on the path)

    spec = importlib.util.spec_from_file_location("bench_codec_ab", HERE / "bench_codec.py")
    bc = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bc)
    assert dm.__file__.startswith(tree), (dm.__file__, tree)

    def make_codec(kind: str, symbols: dict[str, int]):
        if (Path(tree) / "dm" / "venues").is_dir():
            return bc.registry_codec(kind, symbols)
        # a checkout from before dm.venues: every codec lived in dm._codec
        from dm import _codec

        cls, pub = {"binance": ("BinanceCodec", 1001), "kraken": ("KrakenCodec", 1002),
                    "kraken_futures": ("KrakenFuturesCodec", 1003)}[kind]
        return getattr(_codec, cls)(pub, symbols)

    cases = bc.cases(make_codec)
    for _, codec, _ in cases.values():
        assert sys.modules[type(codec).__module__].__file__.startswith(tree), type(codec)
    print(json.dumps({"dm": dm.__file__, "cases": list(cases)}), flush=True)
    gc.collect()
    gc.disable()
    for line in sys.stdin:
        name, target, repeats = line.split()
        _, codec, frames = cases[name]
        print(bc._time(bc._decode_loop(codec), frames, float(target), int(repeats)), flush=True)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("a", type=Path, help="checkout A (e.g. before a change)")
    ap.add_argument("b", type=Path, help="checkout B (e.g. after)")
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--target", type=float, default=0.3, help="seconds per measurement")
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--only", default=None, help="only the cases whose name contains this (e.g. okx)")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        _child(args.child)
        return 0
    procs, info = {}, {}
    for side, tree in (("A", args.a), ("B", args.b)):
        procs[side] = subprocess.Popen([sys.executable, __file__, "x", "x", "--child", str(tree.resolve())],
                                       cwd=tree, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        info[side] = json.loads(procs[side].stdout.readline())
        print(f"{side}: {info[side]['dm']}")
    cases = [c for c in info["A"]["cases"] if c in info["B"]["cases"] and (args.only is None or args.only in c)]
    raw: dict[str, dict[str, list[float]]] = {c: {"A": [], "B": []} for c in cases}
    try:
        for r in range(args.rounds):
            order = ("A", "B") if r % 2 == 0 else ("B", "A")
            for c in cases:
                for side in order:
                    p = procs[side]
                    p.stdin.write(f"{c} {args.target} 3\n")
                    p.stdin.flush()
                    raw[c][side].append(float(p.stdout.readline()))
            print(f"round {r + 1}/{args.rounds} done", flush=True)
    finally:
        for p in procs.values():
            p.stdin.close()
            p.wait()
    table = {}
    print(f"\n{'case':<22} {'A best':>8} {'A median':>9} {'B best':>8} {'B median':>9} {'B/A best':>9} {'B/A median':>11}")
    for c in cases:
        a, b = raw[c]["A"], raw[c]["B"]
        row = {"a_best": min(a), "a_median": statistics.median(a), "b_best": min(b), "b_median": statistics.median(b)}
        row["b_over_a_best"] = row["b_best"] / row["a_best"]
        row["b_over_a_median"] = row["b_median"] / row["a_median"]
        row.update(a_all=a, b_all=b)
        table[c] = row
        print(f"{c:<22} {row['a_best']:>8.1f} {row['a_median']:>9.1f} {row['b_best']:>8.1f} {row['b_median']:>9.1f} "
              f"{row['b_over_a_best']:>9.3f} {row['b_over_a_median']:>11.3f}")
    if args.out:
        meta = {"time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "python": sys.version.split()[0],
                "machine": platform.machine(), "a": str(args.a), "b": str(args.b), "rounds": args.rounds,
                "target_s": args.target, "unit": "ns per frame through the public decode() call"}
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"meta": meta, "cases": table}, indent=1))
        print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
