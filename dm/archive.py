"""Retention: old days of tick tables move from the database into zstd Parquet files (issue 10).

Layout under the archive directory (``[retention] archive_dir``)::

    <table>/<YYYY-MM-DD>/<EXCHANGE>.parquet     one file per table, UTC day and exchange
    <table>/<YYYY-MM-DD>/manifest.json          {"rows", "checksum", "files": {name: rows}}

A file holds the table's stored columns (``dm.storage.base.COLUMNS``: exact BIGINT/INTEGER/
SMALLINT integers, ``dedup`` included; a nullable column's NULL as -1), rows in ``ORDER_BY``
order. ``archive_day`` writes the files (``.tmp`` then rename), reads them back and compares row
count and content checksum with what it read from the database (the checksum: the sum mod 2**64
of the dm-dedup-v1 hash of every row's stored columns, ``dm.storage.base.dedup_hash``:
independent of order), and only then removes the day from the database (PostgreSQL: DROP of its
day partition, or DELETE of the day's rows from the DEFAULT partition; SQLite: DELETE), refusing
when the day's row count changed since it was read. Rows that reach an archived day later are
merged into its files by the next run, so a run cut short anywhere is completed by the next one
and history never sees a row twice (a day is read from the archive or the database: see
``dm.history``).

Runs while the service writes: a day is archived only when it is older than the retention
(writes of that day are over), and the removal is one transaction.

``[retention]``::

    [retention]
    archive_dir = "var/archive"
    days = { book_deltas = 7, bbo = 30, depth = 7 }    # tables not listed stay forever

Requires pyarrow.
"""
from __future__ import annotations

import datetime as _dt
import json
import os
from pathlib import Path

import numpy as np

from dm.errors import ConfigError, StorageError
from dm.storage.base import COLUMNS, NS_PER_DAY, ORDER_BY, TICK_TABLES, dedup_hash, now_ns


def parse_retention_section(table: dict) -> dict:
    """Validate ``[retention]``; returns ``{"archive_dir": Path, "days": {table: int}}``."""
    known = {"archive_dir", "days"}
    for k in table:
        if k not in known:
            raise ConfigError(f"retention.{k}: unknown key; known: {sorted(known)}")
    days = table.get("days", {})
    if not isinstance(days, dict):
        raise ConfigError("retention.days: expected a table such as { book_deltas = 7 }")
    out = {}
    for t, n in days.items():
        if t not in TICK_TABLES:
            raise ConfigError(f"retention.days.{t}: not a tick table; one of {', '.join(TICK_TABLES)}")
        if not isinstance(n, int) or isinstance(n, bool) or n < 1:
            raise ConfigError(f"retention.days.{t}: expected a whole number of days >= 1, got {n!r}")
        out[t] = n
    return {"archive_dir": Path(table.get("archive_dir", "var/archive")), "days": out}


def day_name(day: int) -> str:
    return f"{_dt.date(1970, 1, 1) + _dt.timedelta(days=int(day)):%Y-%m-%d}"


def checksum(cols: list[np.ndarray]) -> int:
    """Order-independent content checksum of stored columns (int64 each)."""
    if not len(cols[0]):
        return 0
    return int(dedup_hash(cols, len(cols[0])).view(np.uint64).sum(dtype=np.uint64))


def _exchanges(storage) -> dict[int, str]:
    return {int(r[0]): str(r[2]).upper() for r in storage.instrument_rows()}


def _columns_of(table: str, arr: np.ndarray) -> list[np.ndarray]:
    from dm.storage.base import column_arrays

    return column_arrays(table, arr)


def _day_columns(storage, table: str, day: int) -> list[np.ndarray]:
    """The stored columns (dedup included) of one day of ``table`` in ``ORDER_BY`` order."""
    parts = list(storage.scan(table, None, day * NS_PER_DAY, (day + 1) * NS_PER_DAY))
    spec = COLUMNS[table]
    if not parts:
        return [np.zeros(0, np.int64) for _ in spec]
    arr = np.concatenate(parts)
    return _columns_of(table, arr)


#: columns that grow along a day (times, venue ids): DELTA_BINARY_PACKED stores their small
#: differences (smaller files, and several times faster to decode than dictionary pages)
DELTA_COLUMNS = frozenset({"ts_event", "ts_recv", "trade_id", "sequence"})


def write_options(names: list[str]) -> dict:
    """``pyarrow.parquet.write_table`` options of an archive file of columns ``names``: zstd,
    ``DELTA_COLUMNS`` delta-encoded, ``dedup`` (a hash: no repeats) plain, every other column
    dictionary-encoded (instrument ids, sides, flags, prices repeat; Parquet falls back to plain
    by itself when a dictionary grows too big). Any Parquet reader reads the files."""
    return {"compression": "zstd",
            "use_dictionary": [n for n in names if n not in DELTA_COLUMNS and n != "dedup"],
            "column_encoding": {n: "DELTA_BINARY_PACKED" for n in names if n in DELTA_COLUMNS}}


def _read_day_files(d: Path, names: list[str]) -> list[np.ndarray]:
    import pyarrow.parquet as pq

    files = json.loads((d / "manifest.json").read_text())["files"]
    tabs = [pq.read_table(d / f) for f in sorted(files)]
    return [np.concatenate([t.column(nm).to_numpy().astype(np.int64, copy=False) for t in tabs] or
                           [np.zeros(0, np.int64)]) for nm in names]


def archive_day(storage, table: str, day: int, archive_dir: Path) -> dict:
    """Archive one UTC day of ``table`` (see module doc). Rows of a day archived before (late
    rows: a venue snapshot can carry old event times) are merged into its files. Returns
    ``{"table", "day", "rows", "files", "removed"}``. Raises ``StorageError`` when the read-back
    does not match (nothing is removed then)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    spec = COLUMNS[table]
    names = [c.name for c in spec]
    keys = [k.strip() for k in ORDER_BY[table].split(",")]
    d = Path(archive_dir) / table / day_name(day)
    manifest = d / "manifest.json"
    db_cols = _day_columns(storage, table, day)
    n_db = len(db_cols[0])
    if n_db == 0:
        return {"table": table, "day": day_name(day), "rows": 0, "files": [], "removed": storage.drop_day(table, day, 0)}
    cols = db_cols
    if manifest.exists():  # merge with what is archived already (identical rows once)
        old = _read_day_files(d, names)
        m = np.stack([np.concatenate([a, b]) for a, b in zip(old, db_cols)], axis=1)
        m = np.unique(m, axis=0)
        cols = [m[:, i].copy() for i in range(len(names))]
        o = np.lexsort([cols[names.index(k)] for k in reversed(keys)])
        cols = [c[o] for c in cols]
    n = len(cols[0])
    total = checksum(cols)
    d.mkdir(parents=True, exist_ok=True)
    ex_of = _exchanges(storage)
    iid = cols[0]
    uniq = np.unique(iid)
    ex = np.array([ex_of.get(int(i), "UNKNOWN") for i in uniq.tolist()])
    ex_per_row = ex[np.searchsorted(uniq, iid)]
    files = {}
    for e in sorted(set(ex_per_row.tolist())):
        sel = ex_per_row == e
        tab = pa.table({nm: c[sel] for nm, c in zip(names, cols)})
        path = d / f"{e}.parquet"
        pq.write_table(tab, f"{path}.tmp", **write_options(names))
        files[path.name] = int(sel.sum())
    for f in files:  # all written: now replace (a reader sees old or new files, each whole)
        os.replace(d / f"{f}.tmp", d / f)
    tmp = manifest.with_suffix(".tmp")
    tmp.write_text(json.dumps({"table": table, "day": day_name(day), "rows": n, "checksum": total, "files": files,
                               "archived_ns": now_ns()}))
    os.replace(tmp, manifest)
    # verify what is on disk before anything is removed
    back = _read_day_files(d, names)
    if len(back[0]) != n or checksum(back) != total:
        raise StorageError(f"archive {d}: read-back differs from what was written ({len(back[0])} vs {n} rows); "
                           "nothing removed")
    removed = storage.drop_day(table, day, n_db)  # rows arrived meanwhile: refused, the next run merges them
    return {"table": table, "day": day_name(day), "rows": n, "files": sorted(files), "removed": removed}


def compress(storage, retention: dict, now: int | None = None) -> list[dict]:
    """Archive every day older than its table's retention (``retention["days"]``) that the
    database still holds. Returns one ``archive_day`` result per day."""
    today = (now_ns() if now is None else int(now)) // NS_PER_DAY
    out = []
    for table, keep in sorted(retention["days"].items()):
        cutoff = today - keep  # days < cutoff go
        for day in storage.days(table):
            if day < cutoff:
                out.append(archive_day(storage, table, day, retention["archive_dir"]))
    return out


def archived_days(archive_dir: Path, table: str) -> list[int]:
    """UTC days (since the epoch) of ``table`` with a manifest in the archive, sorted."""
    d = Path(archive_dir) / table
    if not d.exists():
        return []
    out = []
    for p in d.iterdir():
        if (p / "manifest.json").exists():
            y, m, dd = (int(x) for x in p.name.split("-"))
            out.append((_dt.date(y, m, dd) - _dt.date(1970, 1, 1)).days)
    return sorted(out)


def _stats_range(meta, name: str):
    """(min, max) of column ``name`` over a Parquet file's row groups (None when a row group has
    no statistics)."""
    i = meta.schema.names.index(name)
    lo = hi = None
    for g in range(meta.num_row_groups):
        st = meta.row_group(g).column(i).statistics
        if st is None or not st.has_min_max:
            return None
        lo = st.min if lo is None else min(lo, st.min)
        hi = st.max if hi is None else max(hi, st.max)
    return lo, hi


def _file_table(path: Path, table: str, ids, start_ns, end_ns, where, with_dedup: bool):
    """One archive file's rows matching the filters as a pyarrow Table of the columns a record
    holds (+ ``dedup`` when ``with_dedup``), or None when none match. Read with ``use_threads``,
    memory-mapped; the filters go to pyarrow (row groups whose statistics exclude them are
    skipped) only when the file's statistics say some row may fall outside them."""
    import pyarrow.parquet as pq

    from dm.storage.base import record_reader

    names = [c.name for c in record_reader(table).columns] + (["dedup"] if with_dedup else [])
    meta = pq.ParquetFile(path, memory_map=True).metadata
    if meta.num_rows == 0:
        return None
    filters = []
    rid = _stats_range(meta, "instrument_id")
    if ids is not None:
        if rid is not None and not any(rid[0] <= i <= rid[1] for i in ids):
            return None
        if rid is None or not (rid[0] == rid[1] and rid[0] in ids):
            filters.append(("instrument_id", "in", list(ids)))
    rts = _stats_range(meta, "ts_event")
    if start_ns is not None:
        if rts is not None and rts[1] < start_ns:
            return None
        if rts is None or rts[0] < start_ns:
            filters.append(("ts_event", ">=", int(start_ns)))
    if end_ns is not None:
        if rts is not None and rts[0] >= end_ns:
            return None
        if rts is None or rts[1] >= end_ns:
            filters.append(("ts_event", "<", int(end_ns)))
    for k, v in (where or {}).items():
        filters.append((k, "=", int(v)))
    tab = pq.read_table(path, columns=names, filters=filters or None, use_threads=True, memory_map=True)
    return tab if tab.num_rows else None


def _fill(table: str, tab, out: np.ndarray) -> None:
    """Rows of an archive Table → the record array ``out`` (len = rows): each Arrow chunk as a
    zero-copy numpy view (archive columns have no nulls), cast into its record field by numpy,
    block by block (cache-sized: the template and every field of a block land while it is in
    cache, rather than one pass over the whole array per column)."""
    from dm.storage.base import record_reader

    reader = record_reader(table)
    names = [c.name for c in reader.columns]
    view = out.view(reader.view)
    cols = [tab.column(nm) for nm in names]
    bounds = [len(c) for c in cols[0].chunks]
    step = 1 << 14
    if all([len(c) for c in col.chunks] == bounds for col in cols):
        off = 0
        for k in range(len(bounds)):
            src = [col.chunk(k).to_numpy(zero_copy_only=False) for col in cols]
            for lo in range(0, bounds[k], step):
                hi = min(bounds[k], lo + step)
                reader.fill_template(out[off + lo:off + hi])
                v = view[off + lo:off + hi]
                for nm, c in zip(names, src):
                    v[nm] = c[lo:hi]
            off += bounds[k]
        return
    for lo in range(0, len(out), step):  # columns chunked differently: column by column
        reader.fill_template(out[lo:lo + step])
    for nm, col in zip(names, cols):
        dst = view[nm]
        off = 0
        for chunk in col.chunks:
            dst[off:off + len(chunk)] = chunk.to_numpy(zero_copy_only=False)
            off += len(chunk)


class ArchivedDay:
    """The matching rows of one archived day, decoded by pyarrow but not yet in records: ``n``
    rows; ``fill(out)`` writes them (``ORDER_BY`` order) into a record array of length ``n``
    (so a caller can gather several days into one array it allocated once); ``records()``
    returns them in a new array."""

    def __init__(self, table: str, tabs: list):
        self.table = table
        self.tabs = tabs
        self.n = sum(t.num_rows for t in tabs)

    def records(self) -> np.ndarray:
        from dm.records import DTYPES
        from dm.storage.base import RTYPE_OF

        out = np.empty(self.n, DTYPES[RTYPE_OF[self.table]])
        self.fill(out)
        return out

    def fill(self, out: np.ndarray) -> None:
        if len(self.tabs) == 1:
            _fill(self.table, self.tabs[0], out)
            return
        # several exchanges' files: one order (dedup breaks the last ties, as in the database)
        keys = [k.strip() for k in ORDER_BY[self.table].split(",")]
        parts = []
        for t in self.tabs:
            a = np.empty(t.num_rows, out.dtype)
            _fill(self.table, t, a)
            parts.append(a)
        arr = np.concatenate(parts)
        dedup = np.concatenate([t.column("dedup").to_numpy() for t in self.tabs]).astype(np.int64, copy=False)
        o = np.lexsort([dedup if k == "dedup" else arr[k] for k in reversed(keys)])
        np.take(arr, o, out=out)


def archived_pieces(archive_dir: Path, table: str, instrument_ids, start_ns: int | None, end_ns: int | None,
                    where: dict | None = None):
    """``ArchivedDay`` per archived day with rows of ``table`` matching like ``Storage.scan``."""
    ids = None if instrument_ids is None else sorted({int(i) for i in instrument_ids})
    for day in archived_days(archive_dir, table):
        lo, hi = day * NS_PER_DAY, (day + 1) * NS_PER_DAY
        if (end_ns is not None and lo >= end_ns) or (start_ns is not None and hi <= start_ns):
            continue
        d = Path(archive_dir) / table / day_name(day)
        files = sorted(json.loads((d / "manifest.json").read_text())["files"])
        many = len(files) > 1
        tabs = [t for t in (_file_table(d / f, table, ids, start_ns, end_ns, where, many) for f in files)
                if t is not None]
        if tabs:
            yield ArchivedDay(table, tabs)


def read_archive(archive_dir: Path, table: str, instrument_ids, start_ns: int | None, end_ns: int | None,
                 where: dict | None = None):
    """Record arrays (one per archived day, ``ORDER_BY`` order) of ``table`` rows in the archive
    matching like ``Storage.scan``: straight from the Parquet columns into the record dtype."""
    for piece in archived_pieces(archive_dir, table, instrument_ids, start_ns, end_ns, where):
        yield piece.records()


def archive_stats(archive_dir: Path) -> dict:
    """``{table: {"days", "rows", "bytes", "first_day", "last_day"}}`` of the archive."""
    out = {}
    for table in TICK_TABLES:
        days = archived_days(archive_dir, table)
        if not days:
            continue
        rows = size = 0
        for day in days:
            d = Path(archive_dir) / table / day_name(day)
            m = json.loads((d / "manifest.json").read_text())
            rows += m["rows"]
            size += sum((d / f).stat().st_size for f in m["files"])
        out[table] = {"days": len(days), "rows": rows, "bytes": size, "first_day": day_name(days[0]),
                      "last_day": day_name(days[-1])}
    return out
