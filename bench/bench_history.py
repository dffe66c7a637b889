"""History reads and bar building, against the obvious alternatives in the same run.

Reads of the same rows (one instrument's trades over a day, ``n`` rows, ORDER BY ts_event ..):

* ``history_numpy``   ``dm.history.History.trades``: ``Storage.scan`` = PostgreSQL binary COPY out,
                      parsed by numpy as the bytes arrive, into TRADE records (SQLite: cursor chunks);
* ``history_pandas``  the same, then ``History.to_pandas`` (tz-aware ts, float prices and sizes);
* ``read_sql``        ``pandas.read_sql`` of the same SELECT on a psycopg (sqlite3) connection;
* ``fetchall``        a plain psycopg cursor ``fetchall`` of the same SELECT into a numpy array.

Then the same rows after ``dm db compress`` moved their day into the zstd Parquet archive:
``history.archive.history_numpy`` (``History(.., archive_dir=)``), ratios against PostgreSQL
read_sql and against ``pandas.read_parquet`` of the same archive files (every column, pyarrow
engine: the obvious library read of them).

``history.pg.copy_out_floor``: the same ``COPY (SELECT ..) TO STDOUT (FORMAT BINARY)`` that
``history_numpy`` runs, its bytes only read (psycopg ``copy.read``), nothing parsed: what
PostgreSQL and the driver deliver at best (``history_numpy_vs_copy_out_floor.ratio`` near 1: the
parse costs next to nothing).

Ratios: ``history_numpy_vs_read_sql`` (and ``_vs_fetchall``) = rows/s of dm over the alternative.

Bar building (issue 10: "bar building costs < 10 % of persist throughput"): ``PostgresStorage.write``
of the same trades (one every 0.43 s: every trade opens its own 1s bar, the worst case for 1s)
in the persister's batches (10,000) with the default ``bar_plan`` (1m/1h/1d), with 1s/1m/1h/1d,
and without; ``bars_cost.ratio`` = 1 - with/without.

Creates and drops its own PostgreSQL database (admin URL ``DM_TEST_PG_URL``, default
``postgresql://postgres@127.0.0.1:5432/test``; PG rows skipped when unreachable).

    python bench/bench_history.py [--quick]
"""
from __future__ import annotations

import gc
import json
import os
import sys
import tempfile
import time
import uuid
import warnings
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

from bench_storage import BATCH, PG_ADMIN_URL, make_trades  # noqa: E402

from dm.bars import BarPlan  # noqa: E402
from dm.history import History  # noqa: E402
from dm.records import RType  # noqa: E402
from dm.storage import open_storage  # noqa: E402

COLS = "instrument_id, publisher_id, ts_event, ts_recv, price, size, trade_id, sequence, side, flags, size_precision"
Q = f"SELECT {COLS} FROM trades WHERE instrument_id = 118 ORDER BY ts_event, ts_recv, instrument_id, sequence, trade_id, dedup"


def _best(fn, rounds: int) -> tuple[float, int]:
    """(best seconds, rows) over ``rounds`` runs, gc off."""
    best, rows = float("inf"), 0
    for _ in range(rounds):
        gc.collect()
        gc.disable()
        try:
            t0 = time.perf_counter()
            rows = fn()
            best = min(best, time.perf_counter() - t0)
        finally:
            gc.enable()
    return best, rows


def _fill(st, data: np.ndarray) -> None:
    for s in range(0, len(data), BATCH):
        st.write({RType.TRADE: data[s:s + BATCH]})
    st.insert_instrument(118, "ESU4", "GLBX", "ESU4", 1001, 9)


def _copy_out_floor(conn, h: History) -> int:
    """Bytes of the scan's own COPY read and dropped (no parsing); returns rows (from the size)."""
    from dm.storage.postgres import READ_DTYPES, read_columns_sql
    from dm.storage.base import ORDER_BY

    q = (f"COPY (SELECT {read_columns_sql('trades')} FROM trades WHERE instrument_id = 118"
         f" ORDER BY {ORDER_BY['trades']}) TO STDOUT (FORMAT BINARY)")
    nb = 0
    with conn.cursor() as cur, cur.copy(q) as cp:
        while data := cp.read():
            nb += len(data)
    return (nb - 21) // READ_DTYPES["trades"].itemsize  # header 19 B, trailer 2 B


def _reads(st, conn, prefix: str, rounds: int, res: dict) -> None:
    import pandas as pd

    h = History(st)
    methods = {
        "history_numpy": lambda: len(h.trades("ESU4", "GLBX")),
        "history_pandas": lambda: len(h.to_pandas(h.trades("ESU4", "GLBX"))),
        "read_sql": lambda: len(pd.read_sql(Q, conn)),
        "fetchall": lambda: len(np.array(conn.execute(Q).fetchall(), dtype=np.int64)),
    }
    if prefix == "pg":
        methods["copy_out_floor"] = lambda: _copy_out_floor(conn, h)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pandas: "only SQLAlchemy / sqlite3 connections are tested"
        for fn in methods.values():
            fn()  # warm: caches, plans
        best = {label: float("inf") for label in methods}
        for _ in range(rounds):  # interleaved (A/B/C, A/B/C, ..): a load drift hits all alike
            for label, fn in methods.items():
                t, n = _best(fn, 1)
                best[label] = min(best[label], t)
        for label, t in best.items():
            res[f"history.{prefix}.{label}.rows_per_s"] = n / t
    base = res[f"history.{prefix}.history_numpy.rows_per_s"]
    res[f"history.{prefix}.history_numpy_vs_read_sql.ratio"] = base / res[f"history.{prefix}.read_sql.rows_per_s"]
    res[f"history.{prefix}.history_numpy_vs_fetchall.ratio"] = base / res[f"history.{prefix}.fetchall.rows_per_s"]
    if prefix == "pg":
        res["history.pg.history_numpy_vs_copy_out_floor.ratio"] = base / res["history.pg.copy_out_floor.rows_per_s"]
    res[f"history.{prefix}.history_pandas_vs_read_sql.ratio"] = (
        res[f"history.{prefix}.history_pandas.rows_per_s"] / res[f"history.{prefix}.read_sql.rows_per_s"])


def run(quick: bool = False) -> dict[str, float]:
    n = 100_000 if quick else 1_000_000
    rounds = 1 if quick else 3
    data = make_trades(n)
    res: dict[str, float] = {"history.rows": float(n)}

    with tempfile.TemporaryDirectory() as d:
        st = open_storage(f"sqlite:///{d}/bench.sqlite?synchronous=normal", migrate=True)
        _fill(st, data)
        _reads(st, st._conn, "sqlite", rounds, res)
        st.close()

    try:
        import psycopg

        admin = psycopg.connect(PG_ADMIN_URL, autocommit=True, connect_timeout=3)
    except Exception as e:  # noqa: BLE001
        print(f"PostgreSQL not reachable ({e}); PG rows skipped", file=sys.stderr)
        return res
    name = "dm_bench_" + uuid.uuid4().hex[:10]
    admin.execute(f'CREATE DATABASE "{name}"')
    try:
        url = f"{PG_ADMIN_URL.rsplit('/', 1)[0]}/{name}"
        st = open_storage(url, migrate=True)
        # bar building cost: the same batches with and without bars
        m = min(n, 200_000)
        plans = (("without_bars", None), ("with_bars", BarPlan()), ("with_bars_1s", BarPlan((1, 60, 3600, 86400))))
        best = {label: 0.0 for label, _ in plans}
        for _ in range(rounds + 1):  # interleaved (A/B/C, A/B/C, ..): a load drift hits all alike
            for label, plan in plans:
                st._conn.execute("TRUNCATE trades, bars")
                st.bar_plan = plan
                st.write({RType.TRADE: make_trades(BATCH, trade_id0=10**12)})  # warm
                st._conn.execute("TRUNCATE trades, bars")
                t0 = time.perf_counter()
                for s in range(0, m, BATCH):
                    st.write({RType.TRADE: data[s:s + BATCH]})
                best[label] = max(best[label], m / (time.perf_counter() - t0))
        for label, v in best.items():
            res[f"history.pg.write_{label}.rows_per_s"] = v
        for k in ("with_bars", "with_bars_1s"):
            res[f"history.pg.{k.replace('with_', '')}_cost.ratio"] = 1 - res[f"history.pg.write_{k}.rows_per_s"] / \
                res["history.pg.write_without_bars.rows_per_s"]
        st._conn.execute("TRUNCATE trades, bars")
        st.bar_plan = None
        _fill(st, data)
        st._conn.execute("VACUUM ANALYZE trades")
        with psycopg.connect(url, autocommit=True) as conn:
            _reads(st, conn, "pg", rounds, res)
        # the same rows after `dm db compress` moved their day into the zstd Parquet archive
        try:
            from dm.archive import compress
        except ImportError:
            compress = None
        with tempfile.TemporaryDirectory() as arch:
            if compress is not None:
                import pyarrow  # noqa: F401 - the archive needs it

                compress(st, {"archive_dir": Path(arch), "days": {"trades": 1}})
                assert st.counts()["trades"] == 0
                h = History(st, archive_dir=Path(arch))
                import pandas as pd

                files = sorted(Path(arch).glob("trades/*/*.parquet"))
                methods = {"history_numpy": lambda: len(h.trades("ESU4", "GLBX")),
                           "read_parquet": lambda: sum(len(pd.read_parquet(f)) for f in files)}
                for fn in methods.values():
                    assert fn() == n  # warm
                best = {label: float("inf") for label in methods}
                for _ in range(rounds + 2):  # interleaved; short reads: more rounds
                    for label, fn in methods.items():
                        best[label] = min(best[label], _best(fn, 1)[0])
                for label, t in best.items():
                    res[f"history.archive.{label}.rows_per_s"] = n / t
                res["history.archive.history_numpy_vs_read_parquet.ratio"] = best["read_parquet"] / best["history_numpy"]
                res["history.archive_vs_pg_read_sql.ratio"] = (n / best["history_numpy"]) / \
                    res["history.pg.read_sql.rows_per_s"]
        st.close()
    finally:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()
    return res


if __name__ == "__main__":
    out = run(quick="--quick" in sys.argv)
    w = max(len(k) for k in out)
    print(f"{'metric':<{w}}  value")
    for k, v in out.items():
        print(f"{k:<{w}}  {v:>14,.2f}")
    res_dir = HERE / "results"
    res_dir.mkdir(exist_ok=True)
    (res_dir / "bench_history.json").write_text(json.dumps(out, indent=2))
