"""Historical fetch into PostgreSQL: ``dm backfill fetch`` end to end vs storage alone, same run.

Data: the real ESU4 mbp-1 records (data/databento/glbx-mdp3-esu4-nqu4-20240701), repeated with
shifted timestamps into ``DAYS`` UTC days × ``PER_DAY`` records (a DBN v3 file), served by the
fake gateway (real HTTPS on loopback, zstd) to the official client. Measured:

* ``backfill.fetch``: ``DatabentoHistorical.fetch`` of all days (plan with the free metadata
  calls, get_range per day chunk, DBN → dm records, id mapping, ``Storage.write`` in batches
  committed with the ledger) into an empty PostgreSQL database: rows/s (BBO + MBP_EVENT rows)
  and DBN records/s;
* ``backfill.storage_only``: the same dm records written with ``Storage.write`` in the same
  batches into another empty database — the floor "bounded by storage" is measured against;
* ``backfill.overhead_pct``: 100 × (1 − storage-only time / fetch time): everything the fetch adds
  to storing (network, TLS, zstd, conversion, quotes, ledger); ``backfill.chunk_overhead_pct``:
  the per-chunk bookkeeping alone (quotes, planning, ledger, job claim) as a share of the fetch;
  ``backfill.phase.*_s``: where the fetch's time went (``download`` runs in the prefetch thread,
  overlapping ``store``; ``download_wait`` is what the main thread waited for it; ``convert``
  runs in the reader thread, ``convert_wait`` is the storing thread's wait for a batch).

The bench creates and drops its own databases (``DM_TEST_PG_URL`` admin URL, default
``postgresql://postgres@127.0.0.1:5432/test``).

    python bench/bench_backfill.py [--quick]
"""
from __future__ import annotations

import gc
import os
import sys
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from dm.backfill import parse_settings  # noqa: E402
from dm.databento.fake import FakeHistoricalGateway  # noqa: E402
from dm.databento.historical import DatabentoHistorical, FetchRequest, _split  # noqa: E402
from dm.databento.times import NS_PER_DAY, to_ns  # noqa: E402
from dm.dbn import DbnConverter, decompress  # noqa: E402
from dm.storage import open_storage  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
SRC = ROOT / "data/databento/glbx-mdp3-esu4-nqu4-20240701/futures_mbp-1_2024-07-01T23-58_2024-07-02T00-02.dbn.zst"
PG_ADMIN_URL = os.environ.get("DM_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/test")
KEY = "db-BENCHBENCHBENCHBENCHBENCHBENC"
DAY0 = to_ns("2024-07-01")


def make_dbn(path: Path, days: int, per_day: int) -> int:
    """A DBN v3 mbp-1 file of ESU4: the real records tiled over ``days`` days, in ts_recv order."""
    import databento_dbn as dbn
    import zstandard

    raw = decompress(SRC.read_bytes())
    hl = 8 + int.from_bytes(raw[4:8], "little")
    rec = np.frombuffer(raw[hl:], np.dtype((np.void, 80)))
    n = days * per_day
    out = np.tile(rec, n // len(rec) + 1)[:n].copy()
    f = out.view(np.uint8).reshape(n, 80)
    step = (NS_PER_DAY - 10**9) // per_day
    ts = (DAY0 + (np.arange(n) // per_day) * NS_PER_DAY + (np.arange(n) % per_day) * step).astype("<u8")
    f[:, 8:16] = (ts - 1000).view(np.uint8).reshape(n, 8)  # ts_event
    f[:, 32:40] = ts.view(np.uint8).reshape(n, 8)  # ts_recv
    f[:, 44:48] = (np.arange(n) % (2**32)).astype("<u4").view(np.uint8).reshape(n, 4)  # sequence

    class IV:
        def __init__(s):
            import datetime as dt
            s.start_date, s.end_date, s.symbol = dt.date(2024, 7, 1), dt.date(2024, 7, 1) + dt.timedelta(days=days), "118"

    class SM:
        raw_symbol, intervals = "ESU4", [IV()]

    meta = dbn.Metadata("GLBX.MDP3", DAY0, dbn.SType.RAW_SYMBOL, dbn.SType.INSTRUMENT_ID, dbn.Schema.MBP_1,
                        ["ESU4"], [], [], [SM()], DAY0 + days * NS_PER_DAY, None, False, 3).encode()
    path.write_bytes(zstandard.ZstdCompressor(level=1).compress(meta + out.tobytes()))
    return n


def _pg_db():
    import psycopg

    admin = psycopg.connect(PG_ADMIN_URL, autocommit=True, connect_timeout=3)
    name = "dm_bench_" + uuid.uuid4().hex[:10]
    admin.execute(f'CREATE DATABASE "{name}"')
    return admin, name, PG_ADMIN_URL.rsplit("/", 1)[0] + "/" + name


def _fetch_once(settings, req, n: int, days: int):
    admin, name, url = _pg_db()
    try:
        st = open_storage(url, migrate=True)
        eng = DatabentoHistorical(st, settings)
        eng.client  # noqa: B018 -- import databento (pandas, pyarrow: ~0.3 s once per process) before the clock
        gc.collect()
        gc.disable()
        t0 = time.perf_counter()
        plans, verdict, results = eng.fetch([req])
        wall = time.perf_counter() - t0
        gc.enable()
        res = results[0]
        assert res.chunks_done == days and res.records == n, res.as_dict()
        st.close()
        return wall, res.rows_total, dict(eng.timing.s)
    finally:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _store_once(arrays, n: int, batch: int) -> tuple[float, int]:
    admin, name, url = _pg_db()
    try:
        st = open_storage(url, migrate=True)
        gc.collect()
        gc.disable()
        t0 = time.perf_counter()
        stored = 0
        for i in range(0, n, batch):
            stored += sum(st.write({rt: a[i:i + batch] for rt, a in arrays.items()}).values())
        base = time.perf_counter() - t0
        gc.enable()
        st.close()
        return base, stored
    finally:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def run(quick: bool = False) -> dict[str, float]:
    days, per_day = (2, 60_000) if quick else (4, 250_000)
    repeats = 1 if quick else 3  # alternating, best of each: the machine is shared
    out: dict[str, float] = {}
    try:
        import psycopg

        psycopg.connect(PG_ADMIN_URL, connect_timeout=3).close()
    except Exception as e:  # no server: nothing to measure
        print(f"   PostgreSQL unreachable ({e}): skipped")
        return out
    with tempfile.TemporaryDirectory(prefix="dm-bench-backfill-") as tmp:
        tmp = Path(tmp)
        (tmp / "data").mkdir()
        n = make_dbn(tmp / "data" / "esu4.mbp-1.dbn.zst", days, per_day)
        os.environ["DATABENTO_API_KEY"] = KEY
        # the same records the fetch stores, converted up front, for storing alone in the same batches
        arrays = _split(DbnConverter().feed(decompress((tmp / "data" / "esu4.mbp-1.dbn.zst").read_bytes())))
        for a in arrays.values():
            a["instrument_id"] = 7
        with FakeHistoricalGateway(tmp / "data", key=KEY, usd_per_gb=0.5) as gw:
            settings = parse_settings({"databento": {"hist_gateway": gw.url, "ca_file": gw.ca_file},
                                       "backfill": {"work_dir": str(tmp / "work"), "auto_approve_usd": 100.0}})
            req = FetchRequest("GLBX.MDP3", "mbp-1", ("ESU4",), "raw_symbol", DAY0, DAY0 + days * NS_PER_DAY, "GLBX.MDP3")
            batch = settings.backfill.batch_rows // 2  # DBN records per engine batch (BBO + MBP_EVENT each)
            fetches, bases = [], []
            for _ in range(repeats):
                fetches.append(_fetch_once(settings, req, n, days))
                bases.append(_store_once(arrays, n, batch))
    wall, rows, ph = min(fetches, key=lambda x: x[0])
    base, stored = min(bases)
    assert stored == rows, (stored, rows)
    # the download of chunk k+1 overlaps storing chunk k, and conversion runs in a reader thread
    # beside storing: only the storing thread's waits for them count
    bookkeeping = wall - sum(ph.get(k, 0.0) for k in ("store", "download_wait", "convert_wait", "map"))
    out["backfill.fetch.rows_per_s"] = rows / wall
    out["backfill.fetch.dbn_records_per_s"] = n / wall
    out["backfill.storage_only.rows_per_s"] = rows / base
    out["backfill.fetch_vs_storage_only"] = base / wall
    out["backfill.overhead_pct"] = 100.0 * (1.0 - base / wall)
    out["backfill.chunk_overhead_pct"] = 100.0 * bookkeeping / wall
    out["backfill.chunks"] = float(days)
    for k in ("store", "download", "download_wait", "convert", "convert_wait", "map", "quote"):
        out[f"backfill.phase.{k}_s"] = ph.get(k, 0.0)
    out["backfill.phase.other_s"] = bookkeeping - ph.get("quote", 0.0)
    return out


def main() -> None:
    res = run(quick="--quick" in sys.argv)
    width = max(map(len, res), default=10)
    for k, v in res.items():
        print(f"{k:<{width}}  {v:>16,.3f}")


if __name__ == "__main__":
    main()
