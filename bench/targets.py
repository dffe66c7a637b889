"""The throughput and latency targets (issue 11 and issue 10's read/bar targets) checked against
one ``make bench`` run: prints a markdown table (figure, its baseline in the same run, the ratio,
the target, met or not) from ``bench/results/latest.json``, the table the README carries.

    python bench/targets.py [bench/results/latest.json]
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
VENUES = ("binance", "kraken", "kraken_futures", "bybit", "coinbase", "okx", "deribit", "bitstamp",
          "binance_futures", "binance_delivery")


def _fmt(v: float | None, unit: str) -> str:
    if v is None:
        return "–"
    if unit == "ns":
        return f"{v:,.0f} ns" if v < 10_000 else f"{v / 1000:,.1f} µs"
    if unit == "/s":
        return f"{v / 1e6:,.2f} M/s" if v >= 1e6 else f"{v / 1e3:,.0f} k/s"
    if unit == "x":
        return f"{v:.2f}×"
    if unit == "us":
        return f"{v:.2f} µs"
    if unit == "%":
        return f"{v:.1f} %"
    return f"{v:,.3g}"


def rows(d: dict) -> list[tuple[str, str, str, str, str, str]]:
    """[(what, dm, baseline, ratio, target, met)] from one run's results ``d``."""
    g = d.get
    out = []

    def row(what, val, unit, base, base_unit, ratio, target, ok):
        out.append((what, _fmt(val, unit), base if isinstance(base, str) else _fmt(base, base_unit),
                    _fmt(ratio, "x") if ratio is not None else "–", target,
                    "–" if ok is None else ("yes" if ok else "**no**")))

    for v in VENUES:
        r = g(f"worker.{v}.ratio_vs_null_client")
        if r is None:
            continue
        cpu = g(f"worker.{v}.cpu_us_per_frame")
        tiles = g(f"worker.{v}.tiles") or 1
        extra = f" ({cpu:.2f} µs CPU/frame)" if cpu else ""
        if tiles > 1:   # a short recording measured tiled (bench/gen_sessions.py)
            extra += f", recording tiled ×{tiles:.0f}"
        share, whole = g(f"worker.{v}.startup_frames_share"), g(f"worker.{v}.whole_session.ratio_vs_null_client")
        if share and whole is not None:   # measured from books synced; the whole session beside it
            extra += f", after a start-up of {share:.0%} of the frames (whole session {whole:.2f}×)"
        row(f"worker `{v}` frames/s{extra}", g(f"worker.{v}.frames_per_s"), "/s",
            g(f"worker.{v}.null_client_frames_per_s"), "/s", r, "≥ 0.8× null aiohttp client", r >= 0.8)
    p = g("storage.persist.rows_per_s")
    if p is not None:
        r = g("storage.persist_vs_raw_copy")
        row("persister → PostgreSQL rows/s", p, "/s", g("storage.raw_copy.rows_per_s"), "/s", r,
            "≥ 0.45 M/s and ≥ 0.9× raw COPY BINARY", p >= 450_000 and (r or 0) >= 0.9)
    s = g("storage.sqlite.rows_per_s")
    if s is not None:
        em = g("storage.sqlite_executemany.rows_per_s")
        row("persist → SQLite rows/s (baseline: one row per INSERT)", s, "/s", em if em else "–", "/s" if em else "",
            (s / em) if em else None, "≥ 0.4 M/s", s >= 400_000)
    o = g("client.record_object.latency_p50_ns")
    if o is not None:
        nt = g("client.namedtuple.latency_p50_ns")
        row("reader: record object, p50 (writer → reader process)", o, "ns", nt, "ns", (nt / o) if nt and o else None,
            "≤ 350 ns", o <= 350)
    raw = g("client.read_raw.latency_p50_ns")
    if raw is not None:
        row("reader: raw bytes, p50", raw, "ns", "–", "", None, "≤ 250 ns", raw <= 250)
    b = g("client.read_batch.records_per_s")
    if b is not None:
        row("reader: batch reads", b, "/s", "–", "", None, "≥ 100 M records/s", b >= 100e6)
    for pace in ("10k", "100k"):
        p50 = g(f"e2e.{pace}.latency_p50_ns")
        if p50 is None:
            continue
        row(f"end to end socket → reader, {pace} frames/s: p50 (p99 {_fmt(g(f'e2e.{pace}.latency_p99_ns'), 'ns')}, "
            f"p99.9 {_fmt(g(f'e2e.{pace}.latency_p999_ns'), 'ns')})", p50, "ns", "–", "", None, "p50 ≤ 20 µs", p50 <= 20_000)
    r = g("peer.dm_worker_vs_cryptofeed.ratio")
    if r is not None:
        row("dm Binance worker end to end vs cryptofeed 2.4.1's handler alone", g("peer.dm.worker.binance.frames_per_s"), "/s",
            g("peer.cryptofeed.binance.msgs_per_s"), "/s", r, "≥ 4×", r >= 4)
    h = g("history.pg.history_numpy.rows_per_s")
    if h is not None:
        row("history read PostgreSQL → numpy", h, "/s", g("history.pg.read_sql.rows_per_s"), "/s",
            g("history.pg.history_numpy_vs_read_sql.ratio"), "≥ 5 M rows/s", h >= 5e6)
    a = g("history.archive.history_numpy.rows_per_s")
    if a is not None:
        row("history read Parquet archive → numpy", a, "/s", g("history.pg.read_sql.rows_per_s"), "/s",
            g("history.archive_vs_pg_read_sql.ratio"), "≥ 10 M rows/s", a >= 10e6)
    c = g("history.pg.bars_cost.ratio")
    if c is not None:
        row("bar building cost in the persist path (1m/1h/1d)", c * 100, "%", "–", "", None, "< 10 %", c < 0.10)
    c1 = g("history.pg.bars_1s_cost.ratio")
    if c1 is not None:
        row("bar building cost with 1 s bars too", c1 * 100, "%", "–", "", None, "< 10 %", c1 < 0.10)
    return out


def table(d: dict) -> str:
    lines = ["| figure | dm | baseline, same run | ratio | target | met |", "|---|---|---|---|---|---|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows(d)]
    return "\n".join(lines)


if __name__ == "__main__":
    path = Path(sys.argv[1]) if len(sys.argv) > 1 else HERE / "results" / "latest.json"
    print(table(json.loads(path.read_text())))
