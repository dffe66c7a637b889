"""dm.storage on both backends (real SQLite files, real PostgreSQL databases from conftest):
migrations, exact round trips of every record kind (hypothesis + real Databento data), idempotent
replays, u64 overflow refusal, atomicity, day partitions, instruments, gaps, concurrent migrate,
and the vectorised binary COPY payload against psycopg's own ``write_row``."""
from __future__ import annotations

import datetime as dt
import io
import json
import subprocess
import sys
import textwrap
import time
from decimal import Decimal
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dm.errors import StorageError
from dm.records import (
    BAR_DTYPE,
    BBO_DTYPE,
    BOOK_DELTA_DTYPE,
    DEPTH_DTYPE,
    DTYPES,
    I64_MAX,
    I64_MIN,
    TRADE_DTYPE,
    U64_MAX,
    UNDEF_PRICE,
    RType,
)
from dm.storage import open_storage
from dm.storage.base import ALL_TABLES, COLUMNS, EXTRA_COLUMNS, NS_PER_DAY, TABLE_OF, column_arrays, dedup_hash

MIGRATIONS = ["001_initial", "002_mbp_events", "003_size_precision", "004_records_ledger", "005_backfill",
              "006_bars_history"]
LATEST = int(MIGRATIONS[-1][:3])  # schema_version() is the highest applied number

ROOT = Path(__file__).resolve().parent.parent
DAY0 = 19_905  # 2024-07-01
T0 = DAY0 * NS_PER_DAY


def _stamp(arr: np.ndarray, rtype: int) -> np.ndarray:
    arr["length"] = DTYPES[rtype].itemsize // 4
    arr["rtype"] = rtype
    return arr


def trades(n: int, iid: int = 7, t0: int = T0 + 3_600 * 10**9, trade_id0: int = 1) -> np.ndarray:
    a = np.zeros(n, TRADE_DTYPE)
    a["publisher_id"] = 1001
    a["instrument_id"] = iid
    a["ts_event"] = t0 + np.arange(n) * 1_000_003
    a["ts_recv"] = a["ts_event"] + 250_000
    a["price"] = 5_528_750_000_000 + (np.arange(n) % 17) * 250_000_000
    a["size"] = (1 + np.arange(n) % 5) * 10**9
    a["trade_id"] = trade_id0 + np.arange(n)
    a["sequence"] = 9_060_643 + np.arange(n)
    a["side"] = np.where(np.arange(n) % 2, ord("A"), ord("B"))
    a["flags"] = 128
    a["size_precision"] = 9
    return _stamp(a, RType.TRADE)


def rows_sorted(a: np.ndarray) -> list[bytes]:
    return sorted(bytes(r) for r in a.view(f"V{a.dtype.itemsize}"))


@pytest.fixture
def store(storage_url):
    s = open_storage(storage_url)
    s.migrate()
    yield s
    s.close()


@pytest.fixture
def pg(pg_url):
    s = open_storage(pg_url, migrate=True)
    yield s
    s.close()


# --- migrations ---------------------------------------------------------------------------------

def test_migrate_twice_is_a_noop(storage_url):
    s = open_storage(storage_url)
    assert s.schema_version() == 0
    assert s.migrate() == MIGRATIONS
    assert s.schema_version() == LATEST
    before = s.counts()
    assert s.migrate() == []
    assert s.schema_version() == LATEST
    assert s.counts() == before
    assert set(before) == set(ALL_TABLES) and before["schema_migrations"] == len(MIGRATIONS)
    s.close()
    s2 = open_storage(storage_url, migrate=True)  # a second connection sees it applied
    assert s2.migrate() == [] and s2.schema_version() == LATEST
    s2.close()


def test_schema_columns_match_the_python_spec(store):
    """The SQL files and COLUMNS (which the COPY / executemany paths use) must agree."""
    for table, spec in COLUMNS.items():
        if store.backend == "sqlite":
            cols = {r[1]: r[2] for r in store._conn.execute(f"PRAGMA table_info({table})")
                    if r[1] not in EXTRA_COLUMNS.get(table, ())}
            assert cols == {c.name: "INTEGER" for c in spec}, table
        else:
            cols = store._conn.execute(
                "SELECT column_name, upper(data_type) FROM information_schema.columns"
                " WHERE table_name = %s ORDER BY ordinal_position", (table,)).fetchall()
            assert {k: v for k, v in cols if k not in EXTRA_COLUMNS.get(table, ())} == \
                {c.name: c.sqltype for c in spec}, table


def test_write_before_migrate_raises_storage_error(storage_url):
    s = open_storage(storage_url)
    with pytest.raises(StorageError):
        s.write({RType.TRADE: trades(3)})
    s.close()


def test_concurrent_migrate_from_processes(storage_url, tmp_path):
    """Three fresh interpreters race migrate(); exactly one applies 001, nobody fails."""
    go = tmp_path / "go"
    script = textwrap.dedent(f"""
        import json, os, sys, time
        from dm.storage import open_storage
        s = open_storage({storage_url!r})
        open({str(tmp_path)!r} + '/ready.' + str(os.getpid()), 'w').close()
        while not os.path.exists({str(go)!r}):
            time.sleep(0.001)
        print(json.dumps(s.migrate()))
        s.close()
    """)
    procs = [subprocess.Popen([sys.executable, "-c", script], cwd=ROOT, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(3)]
    deadline = time.monotonic() + 30
    while len(list(tmp_path.glob("ready.*"))) < 3:
        assert time.monotonic() < deadline, [p.poll() for p in procs]
        time.sleep(0.01)
    go.touch()
    results = []
    for p in procs:
        out, err = p.communicate(timeout=60)
        assert p.returncode == 0, err
        results.append(json.loads(out))
    assert sorted(results) == [[], [], MIGRATIONS]
    s = open_storage(storage_url)
    assert s.schema_version() == LATEST and s.counts()["schema_migrations"] == len(MIGRATIONS)
    s.close()


# --- round trips ----------------------------------------------------------------------------------

def _extremes() -> dict[int, np.ndarray]:
    """Records whose every field takes its extreme storable values (i64 min/max for prices, 0 and
    i64 max for u64 fields, max of u8/u16/u32)."""
    out = {}
    for rtype, dt_ in DTYPES.items():
        if rtype not in TABLE_OF:
            continue
        a = np.zeros(3, dt_)
        for name in dt_.names:
            f = dt_.fields[name][0]
            if name in ("length", "rtype", "_reserved") or f.kind == "V":
                continue
            if name == "levels":
                for sub in ("bid_px", "ask_px"):
                    a["levels"][sub] = [[I64_MIN] * 10, [I64_MAX] * 10, list(range(-5, 5))]
                for sub in ("bid_sz", "ask_sz"):
                    a["levels"][sub] = [[0] * 10, [I64_MAX] * 10, list(range(10))]
                continue
            hi = I64_MAX if (f.kind == "u" and f.itemsize == 8) else int(np.iinfo(f).max)
            lo = int(np.iinfo(f).min)
            a[name] = [lo, hi, 1]
        a["ts_event"] = [0, I64_MAX, T0]
        out[int(rtype)] = _stamp(a, rtype)
    return out


def test_round_trip_every_rtype_at_extremes(store):
    batch = _extremes()
    got = store.write(batch)
    assert got == {TABLE_OF[r]: 3 for r in batch}
    for rtype, a in batch.items():
        back = store.fetch(TABLE_OF[rtype])
        assert back.dtype == DTYPES[rtype]
        assert len(back) == 3
        order = np.argsort(a["ts_event"], kind="stable")
        assert back.tobytes() == a[order].tobytes(), TABLE_OF[rtype]
    assert store.write(batch) == {TABLE_OF[r]: 0 for r in batch}


_I64 = st.integers(I64_MIN, I64_MAX)
_U63 = st.integers(0, I64_MAX)
_TS = st.one_of(st.integers(0, I64_MAX), st.integers(T0, T0 + 2 * NS_PER_DAY))


def _values(dt_: np.dtype, name: str):
    f = dt_.fields[name][0]
    if f.kind == "i":
        return _I64 if f.itemsize == 8 else st.integers(int(np.iinfo(f).min), int(np.iinfo(f).max))
    if f.itemsize == 8:
        return _TS if name.startswith("ts_") else _U63
    return st.integers(0, int(np.iinfo(f).max))


@st.composite
def record_arrays(draw, rtype: int):
    dt_ = DTYPES[rtype]
    n = draw(st.integers(1, 6))
    a = np.zeros(n, dt_)
    for name in dt_.names:
        if name in ("length", "rtype", "instrument_id", "_reserved"):
            continue
        sub_dt = dt_.fields[name][0].subdtype
        if sub_dt is not None and name != "levels":  # e.g. MBP_EVENT bid_ct/ask_ct: u32 × 10
            a[name] = np.array(draw(st.lists(st.lists(st.integers(0, 2**32 - 1), min_size=10, max_size=10),
                                             min_size=n, max_size=n)), dtype=sub_dt[0])
            continue
        if name == "levels":
            for sub in ("bid_px", "ask_px", "bid_sz", "ask_sz"):
                strat = _I64 if sub.endswith("px") else _U63
                a["levels"][sub] = np.array(draw(st.lists(st.lists(strat, min_size=10, max_size=10),
                                                          min_size=n, max_size=n)), dtype=a["levels"][sub].dtype)
            continue
        a[name] = draw(st.lists(_values(dt_, name), min_size=n, max_size=n))
    # the bars key has no content hash: distinct (interval_s, ts_event) per row
    if rtype == RType.BAR:
        a["ts_event"] = np.arange(n, dtype=np.uint64) * 60 * 10**9 + T0
    return _stamp(a, rtype)


@pytest.mark.parametrize("rtype", list(TABLE_OF), ids=list(TABLE_OF.values()))
def test_round_trip_property(store, rtype):
    """Any storable records come back byte for byte (per instrument, set equality: records with
    equal (ts_event, ts_recv) may come back in either order)."""
    counter = iter(range(1, 10**6))

    @settings(max_examples=15, deadline=None, suppress_health_check=list(HealthCheck))
    @given(a=record_arrays(rtype))
    def check(a):
        iid = next(counter)
        a["instrument_id"] = iid
        if rtype == RType.TRADE:
            # a trade is identified by its venue trade id, or (trade_id 0) by its content less
            # ts_recv and flags: the first record of each key is the one stored
            first = {}
            for r in a:
                key = (int(r["ts_event"]), int(r["trade_id"])) if r["trade_id"] else \
                    (int(r["ts_event"]), 0, int(r["publisher_id"]), int(r["price"]), int(r["size"]), int(r["side"]), int(r["sequence"]))
                first.setdefault(key, r.tobytes())
            uniq = np.frombuffer(b"".join(first.values()), a.dtype)
        else:
            uniq = np.unique(a.view(f"V{a.dtype.itemsize}")).view(a.dtype)
        inserted = store.write({rtype: a})[TABLE_OF[rtype]]
        assert inserted == len(uniq)
        back = store.fetch(TABLE_OF[rtype], instrument_id=iid)
        assert rows_sorted(back) == rows_sorted(uniq)
        assert (np.diff(back["ts_event"].astype(object)) >= 0).all() if len(back) > 1 else True

    check()


# --- real data ------------------------------------------------------------------------------------

def _dbn(path: Path) -> list:
    import databento_dbn
    import zstandard

    raw = path.read_bytes()
    if path.suffix == ".zst":
        raw = zstandard.ZstdDecompressor().stream_reader(io.BytesIO(raw)).read()
    dec = databento_dbn.DBNDecoder()
    dec.write(raw)
    return dec.decode()[1:]


def _ch(x) -> int:
    return ord(str(getattr(x, "value", x)))


def real_records(data_dir: Path) -> dict[int, np.ndarray]:
    """The Databento sample files as dm records (sizes ×1e9 to dm's fixed point)."""
    g = data_dir / "databento" / "glbx-mdp3-esu4-nqu4-20240701"
    mbp1 = _dbn(g / "futures_mbp-1_2024-07-01T23-58_2024-07-02T00-02.dbn.zst")
    trd = _dbn(g / "futures_trades_2024-07-01T23-58_2024-07-02T00-02.dbn.zst")
    bars = _dbn(g / "futures_ohlcv-1m_2024-07-01T23-40_2024-07-02T00-10.dbn.zst")
    mbp10 = []
    for venue in ("GLBX.MDP3", "XNAS.ITCH"):
        mbp10 += _dbn(data_dir / "databento" / "databento-python" / venue / "test_data.mbp-10.dbn.zst")
    E = 10**9
    t = np.zeros(len(trd), TRADE_DTYPE)
    for i, r in enumerate(trd):
        t[i] = (0, 0, int(r.publisher_id), r.instrument_id, r.ts_event, r.ts_recv, r.price, r.size * E,
                0, r.sequence, _ch(r.side), r.flags, 9, b"")
    b = np.zeros(len(mbp1), BBO_DTYPE)
    d = np.zeros(len(mbp1), BOOK_DELTA_DTYPE)
    for i, r in enumerate(mbp1):
        lv = r.levels[0]
        b[i] = (0, 0, int(r.publisher_id), r.instrument_id, r.ts_event, r.ts_recv, lv.bid_px, lv.ask_px,
                lv.bid_sz * E, lv.ask_sz * E, r.sequence, lv.bid_ct, lv.ask_ct, r.flags, 9, b"")
        d[i] = (0, 0, int(r.publisher_id), r.instrument_id, r.ts_event, r.ts_recv, r.price, r.size * E,
                r.sequence, _ch(r.side), _ch(r.action), r.flags, 9, b"")
    k = np.zeros(len(mbp10), DEPTH_DTYPE)
    for i, r in enumerate(mbp10):
        lv = [(x.bid_px, x.ask_px, x.bid_sz * E, x.ask_sz * E) for x in r.levels]
        k[i] = (0, 0, int(r.publisher_id), r.instrument_id, r.ts_event, r.ts_recv, r.sequence, r.flags,
                sum(x.bid_px != UNDEF_PRICE for x in r.levels), sum(x.ask_px != UNDEF_PRICE for x in r.levels),
                9, b"", lv)
    o = np.zeros(len(bars), BAR_DTYPE)
    for i, r in enumerate(bars):
        o[i] = (0, 0, int(r.publisher_id), r.instrument_id, r.ts_event, r.open, r.high, r.low, r.close,
                r.volume * E, 60, 0, 0, 9, b"")
    return {RType.TRADE: _stamp(t, RType.TRADE), RType.BBO: _stamp(b, RType.BBO),
            RType.BOOK_DELTA: _stamp(d, RType.BOOK_DELTA), RType.DEPTH: _stamp(k, RType.DEPTH),
            RType.BAR: _stamp(o, RType.BAR)}


def test_real_databento_round_trip_and_replay(store, data_dir):
    batch = real_records(data_dir)
    assert len(batch[RType.TRADE]) == 120 and len(batch[RType.BBO]) == 2288
    got = store.write(batch)
    # every distinct record is kept: several mbp-1 updates share ts_event and sequence (one CME
    # packet), yet all are distinct rows; the 120 trades have no trade id and all are kept
    for rtype, a in batch.items():
        distinct = len(np.unique(a.view(f"V{a.dtype.itemsize}")))
        assert got[TABLE_OF[rtype]] == distinct, TABLE_OF[rtype]
        back = store.fetch(TABLE_OF[rtype])
        assert rows_sorted(back) == rows_sorted(np.unique(a.view(f"V{a.dtype.itemsize}")).view(a.dtype))
        keys = back["ts_event"].astype(np.int64)
        assert (np.diff(keys) >= 0).all()
    assert got["trades"] == 120 and got["bbo"] == 2288 and got["bars"] == 60
    # a persister crash re-delivers the batch: nothing new
    assert store.write(batch) == {t: 0 for t in got}
    # and an overlapping batch inserts only the new part
    assert store.write({RType.TRADE: np.concatenate([batch[RType.TRADE][-10:], trades(5, iid=118)])}) == {"trades": 5}
    assert len(store.fetch("trades", instrument_id=118)) == 125
    assert len(store.fetch("bars", instrument_id=4358)) == 30


# --- idempotency and dedup semantics --------------------------------------------------------------

def test_duplicates_inserted_once(store):
    a = trades(50)
    assert store.write({RType.TRADE: a}) == {"trades": 50}
    assert store.write({RType.TRADE: a}) == {"trades": 0}
    assert store.write({RType.TRADE: np.concatenate([a[:5], a[:5]])}) == {"trades": 0}
    b = trades(4, iid=8)
    assert store.write({RType.TRADE: np.concatenate([b, b])}) == {"trades": 4}  # dupes within a batch
    assert store.counts()["trades"] == 54


@pytest.mark.parametrize("optimistic", [True, False])
def test_pg_insert_strategies_agree(pg, optimistic):
    """Plain INSERT with ON CONFLICT fallback, or ON CONFLICT always: same rows, same counts."""
    pg.optimistic_insert = optimistic
    a = trades(30)
    assert pg.write({RType.TRADE: a[:20]}) == {"trades": 20}
    assert pg.write({RType.TRADE: a}) == {"trades": 10}
    assert pg.write({RType.TRADE: np.concatenate([trades(3, iid=9)] * 2)}) == {"trades": 3}
    assert pg.write({RType.TRADE: a}) == {"trades": 0}
    assert len(pg.fetch("trades")) == 33


def test_trade_id_identifies_a_venue_trade(store):
    a = trades(3)
    store.write({RType.TRADE: a})
    again = a.copy()
    again["ts_recv"] += 5 * 10**9  # re-received after a reconnect, as part of a snapshot
    again["flags"] |= 32
    assert store.write({RType.TRADE: again}) == {"trades": 0}
    # no trade id (Databento): distinct trades at one ts_event are all kept ...
    z = trades(3, iid=9)
    z["trade_id"] = 0
    z["ts_event"] = z["ts_event"][0]
    assert store.write({RType.TRADE: z}) == {"trades": 3}
    # ... and the same one again is not
    assert store.write({RType.TRADE: z[1:2]}) == {"trades": 0}


def test_bbo_states_in_one_packet_all_kept(store):
    b = _stamp(np.zeros(3, BBO_DTYPE), RType.BBO)
    b["instrument_id"] = 118
    b["ts_event"] = T0
    b["ts_recv"] = T0 + 17_664
    b["sequence"] = 9_060_643  # one packet: same ts_event, ts_recv, sequence
    b["bid_px"] = [5_528_500_000_000, 5_528_250_000_000, 5_528_500_000_000]
    b["bid_sz"] = [29 * 10**9, 29 * 10**9, 30 * 10**9]
    b["ask_px"] = UNDEF_PRICE
    assert store.write({RType.BBO: b}) == {"bbo": 3}
    assert store.write({RType.BBO: b[::-1].copy()}) == {"bbo": 0}


def test_dedup_hash_is_stable():
    """The hash is stored data: this golden value must never change without a migration."""
    cols = [np.array([0, 1, -1, I64_MAX, I64_MIN], np.int64), np.arange(5, dtype=np.int64)]
    h = dedup_hash(cols, 5)
    assert h.dtype == np.int64
    assert len(set(h.tolist())) == 5
    assert h.tolist() == GOLDEN_DEDUP


GOLDEN_DEDUP = [300283168811039478, -6585287660242738361, 4796026744091900478, 507045574177332683,
                -8897958440422259677]


# --- refusals and atomicity -----------------------------------------------------------------------

def test_size_above_i64_max_rejected_nothing_written(store):
    good = trades(10)
    bad = _stamp(np.zeros(2, BOOK_DELTA_DTYPE), RType.BOOK_DELTA)
    bad["ts_event"] = T0
    bad["size"] = [1, I64_MAX + 1]
    with pytest.raises(StorageError, match="exceeds i64 max"):
        store.write({RType.TRADE: good, RType.BOOK_DELTA: bad})
    for field, rtype, dt_ in (("size", RType.TRADE, TRADE_DTYPE), ("volume", RType.BAR, BAR_DTYPE),
                              ("sequence", RType.BBO, BBO_DTYPE), ("ts_recv", RType.TRADE, TRADE_DTYPE)):
        x = _stamp(np.zeros(1, dt_), rtype)
        x[field] = U64_MAX
        with pytest.raises(StorageError):
            store.write({rtype: x})
    dep = _stamp(np.zeros(1, DEPTH_DTYPE), RType.DEPTH)
    dep["levels"]["ask_sz"][0, 9] = I64_MAX + 1
    with pytest.raises(StorageError):
        store.write({RType.DEPTH: dep})
    assert sum(v for k, v in store.counts().items() if k != "schema_migrations") == 0


def test_wrong_inputs_raise_storage_error(store):
    with pytest.raises(StorageError):
        store.write({0x42: trades(1)})
    with pytest.raises(StorageError):
        store.write({RType.BBO: trades(1)})  # dtype of another rtype
    with pytest.raises(StorageError):
        store.fetch("nope")
    assert store.write({RType.TRADE: trades(0)}) == {"trades": 0}
    with pytest.raises(StorageError):
        open_storage("mysql://x")


def test_one_transaction_for_the_whole_batch(store):
    """A database failure on the second table leaves the first unwritten."""
    store._conn.execute("DROP TABLE bars" + (" CASCADE" if store.backend == "postgresql" else ""))
    bar = _stamp(np.zeros(1, BAR_DTYPE), RType.BAR)
    with pytest.raises(StorageError):
        store.write({RType.TRADE: trades(10), RType.BAR: bar})
    assert len(store.fetch("trades")) == 0
    assert store.write({RType.TRADE: trades(10)}) == {"trades": 10}  # the connection still works


# --- partitions, views (PostgreSQL) ---------------------------------------------------------------

def test_partitions_across_two_days(store):
    a = trades(6, t0=T0 + NS_PER_DAY - 3 * 1_000_003)  # 3 before midnight UTC, 3 after
    assert store.write({RType.TRADE: a}) == {"trades": 6}
    back = store.fetch("trades")
    assert back.tobytes() == a.tobytes()
    if store.backend != "postgresql":
        return
    rows = store._conn.execute(
        "SELECT tableoid::regclass::text, count(*) FROM trades GROUP BY 1 ORDER BY 1").fetchall()
    assert rows == [("trades_p20240701", 3), ("trades_p20240702", 3)]
    parts = {r[0] for r in store._conn.execute(
        "SELECT relid::text FROM pg_partition_tree('trades') WHERE level = 1")}
    assert {"trades_p20240701", "trades_p20240702", "trades_p20240703"} <= parts  # + one day ahead
    assert store.stats()["tables"]["trades"]["partitions"] == len(parts)


def test_partition_created_by_another_writer_is_fine(pg_url):
    s1, s2 = open_storage(pg_url, migrate=True), open_storage(pg_url)
    assert s1.write({RType.TRADE: trades(3)}) == {"trades": 3}
    assert s2.write({RType.TRADE: trades(3, trade_id0=100)}) == {"trades": 3}  # its cache is cold
    s1.close(), s2.close()


def test_pg_reconnects_after_the_connection_is_lost(pg, pg_url):
    """The server kills our session (restart, failover): that call raises StorageError, the
    persister's retry of the same batch reconnects and stores it once."""
    import psycopg

    a = trades(10)
    assert pg.write({RType.TRADE: a[:5]}) == {"trades": 5}
    pid = pg._conn.info.backend_pid
    with psycopg.connect(pg_url, autocommit=True) as admin:
        admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
    with pytest.raises(StorageError):
        pg.write({RType.TRADE: a})
    assert pg.write({RType.TRADE: a}) == {"trades": 5}
    assert len(pg.fetch("trades")) == 10
    pg.close()
    with pytest.raises(StorageError):
        pg.counts()


def test_views_show_timestamptz_and_numeric(pg):
    a = trades(2)
    pg.insert_instrument(7, "ESU4", "GLBX", "ESU4", 1)
    pg.write({RType.TRADE: a})
    row = pg._conn.execute("SELECT symbol, ts_event, price, size, side, ts_event_ns FROM trades_v ORDER BY ts_event_ns").fetchone()
    assert row[0] == "ESU4"
    ns = int(a["ts_event"][0])
    assert row[1] == dt.datetime.fromtimestamp(ns // 10**9, dt.timezone.utc) + dt.timedelta(microseconds=ns % 10**9 // 1000)
    assert row[2] == Decimal("5528.75") and row[3] == Decimal("1") and row[4] == "B" and row[5] == ns
    b = _stamp(np.zeros(1, BBO_DTYPE), RType.BBO)
    b["ts_event"], b["bid_px"], b["ask_px"] = T0, UNDEF_PRICE, -1
    pg.write({RType.BBO: b})
    assert pg._conn.execute("SELECT bid_px, ask_px FROM bbo_v").fetchone() == (None, Decimal("-0.000000001"))


def test_binary_copy_payload_matches_psycopg_write_row(pg, data_dir):
    """The vectorised payload is byte-identical to psycopg's per-row binary COPY, and what the
    server sends back with COPY TO parses to the same columns."""
    from psycopg.copy import Copy, FileWriter

    from dm.storage.postgres import binary_copy_payload, copy_rows, parse_copy_rows

    batch = real_records(data_dir) | {r: a for r, a in _extremes().items() if r == RType.DEPTH}
    pgtype = {"BIGINT": "int8", "INTEGER": "int4", "SMALLINT": "int2"}
    for rtype, a in batch.items():
        table = TABLE_OF[rtype]
        ours = binary_copy_payload(table, a)
        cols = column_arrays(table, a)
        buf = io.BytesIO()
        with pg._conn.cursor() as cur:
            with Copy(cur, binary=True, writer=FileWriter(buf)) as cp:
                cp.set_types([pgtype[c.sqltype] for c in COLUMNS[table]])
                for row in np.column_stack(cols).tolist():
                    cp.write_row(row)
        assert ours == buf.getvalue(), table
        assert copy_rows(table, cols).tobytes() == ours[19:-2], table  # the int64-columns path
        assert [c.tolist() for c in parse_copy_rows(table, ours)] == [c.tolist() for c in cols]
        # the server accepts it and sends the same bytes back
        stage = pg._ensure_stage(table)
        names = ", ".join(c.name for c in COLUMNS[table])
        with pg._conn.transaction(), pg._conn.cursor() as cur:  # staging rows vanish at commit
            with cur.copy(f"COPY {stage} ({names}) FROM STDIN (FORMAT BINARY)") as cp:
                cp.write(ours)
            back = bytearray()
            with cur.copy(f"COPY (SELECT {names} FROM {stage}) TO STDOUT (FORMAT BINARY)") as cp:
                for chunk in cp:
                    back += chunk
        assert bytes(back) == ours, table


def test_concurrent_writers_of_the_same_batch(storage_url, tmp_path):
    """Two processes persist the same 20,000 trades at once (a replay racing the live writer):
    every trade is stored once and the inserted counts add up."""
    s = open_storage(storage_url, migrate=True)
    go = tmp_path / "go"
    script = textwrap.dedent(f"""
        import json, os, sys, time
        sys.path.insert(0, {str(Path(__file__).parent)!r})
        from test_storage import trades
        from dm.records import RType
        from dm.storage import open_storage
        s = open_storage({storage_url!r})
        batch = trades(20_000)
        open({str(tmp_path)!r} + '/ready.' + str(os.getpid()), 'w').close()
        while not os.path.exists({str(go)!r}):
            time.sleep(0.001)
        n = 0
        for i in range(0, 20_000, 5_000):
            n += s.write({{RType.TRADE: batch[i:i + 5_000]}})["trades"]
        print(n)
    """)
    procs = [subprocess.Popen([sys.executable, "-c", script], cwd=ROOT, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(2)]
    deadline = time.monotonic() + 30
    while len(list(tmp_path.glob("ready.*"))) < 2:
        assert time.monotonic() < deadline, [p.poll() for p in procs]
        time.sleep(0.01)
    go.touch()
    total = 0
    for p in procs:
        out, err = p.communicate(timeout=60)
        assert p.returncode == 0, err
        total += int(out)
    assert total == 20_000
    assert s.fetch("trades").tobytes() == trades(20_000).tobytes()
    s.close()


# --- instruments, gaps, stats --------------------------------------------------------------------

def test_instruments(store):
    assert store.load_instruments() == []
    assert store.insert_instrument(118, "ESU4", "GLBX", "ESU4", 1) is True
    assert store.insert_instrument(118, "NQU4", "GLBX", "NQU4", 1) is False  # id taken
    assert store.insert_instrument(4358, "ESU4", "GLBX", "ESU4", 1) is False  # (symbol, exchange) taken
    assert store.insert_instrument(4358, "NQU4", "GLBX", "NQU4", 1) is True
    assert store.insert_instrument(2**32 - 1, "BTCUSD", "BINANCE", "BTCUSDT", 1001) is True
    assert store.load_instruments() == [
        (118, "ESU4", "GLBX", "ESU4", 1), (4358, "NQU4", "GLBX", "NQU4", 1),
        (2**32 - 1, "BTCUSD", "BINANCE", "BTCUSDT", 1001)]
    with pytest.raises(StorageError):
        store.insert_instrument(2**32, "ETHUSD", "BINANCE", "ETHUSDT", 1001)  # not a u32


def test_gaps(store):
    g1 = store.record_gap(7, "sequence", 100, 105, T0, detail="binance depth U/u")
    g2 = store.record_gap(8, "time", T0, T0 + 10**9, T0 + 2)
    assert g2 > g1
    assert [g["id"] for g in store.gaps()] == [g1, g2]
    assert store.gaps("open")[0] == {"id": g1, "publisher_id": 0, "instrument_id": 7, "kind": "sequence",
                                     "units": 0, "first_missing": 100, "last_missing": 105, "detected_ns": T0,
                                     "state": "open", "detail": "binance depth U/u"}
    assert store.record_gap(7, "sequence", 100, 105, T0, detail="binance depth U/u") == g1  # idempotent
    assert store.update_gap(g1, "filled") is True
    assert store.update_gap(10**9, "filled") is False
    assert [g["id"] for g in store.gaps("filled")] == [g1]
    assert [g["id"] for g in store.gaps("open")] == [g2]
    assert store.gaps("filled")[0]["detail"] == "binance depth U/u"


def test_stats_and_compress(store):
    store.write({RType.TRADE: trades(10)})
    s = store.stats()
    assert s["backend"] in ("sqlite", "postgresql") and s["schema_version"] == LATEST
    t = s["tables"]["trades"]
    assert t["rows"] == 10 and t["ts_min"] == int(trades(1)["ts_event"][0])
    assert t["ts_max"] == int(trades(10)["ts_event"][-1])
    assert s["tables"]["bbo"]["ts_min"] is None
    assert set(s["tables"]) == set(ALL_TABLES)
    msg = store.compress()
    assert "VACUUM" in msg
    assert len(store.fetch("trades")) == 10


# --- SQLite specifics -----------------------------------------------------------------------------

def test_sqlite_relative_url_creates_dirs_and_uses_wal(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    s = open_storage("sqlite:///var/sub/demo.sqlite", migrate=True)
    assert (tmp_path / "var" / "sub" / "demo.sqlite").exists()
    assert s._conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert s.write({RType.TRADE: trades(3)}) == {"trades": 3}
    s.close()
    s = open_storage(f"sqlite:///{tmp_path}/var/sub/demo.sqlite")  # absolute: sqlite:////tmp/...
    assert len(s.fetch("trades")) == 3
    s.close()


# --- migration 004: statistics, gaps and instrument definitions as records -----------------------

def stats_records(n: int, iid: int = 7) -> np.ndarray:
    a = _stamp(np.zeros(n, DTYPES[RType.STATISTICS]), RType.STATISTICS)
    a["publisher_id"], a["instrument_id"] = 1003, iid
    a["ts_event"] = T0 + np.arange(n) * 10**9
    a["ts_recv"] = a["ts_event"] + 1000
    a["ts_ref"] = np.where(np.arange(n) % 2, U64_MAX, a["ts_event"] - 8 * 3600 * 10**9)  # undefined / funding time
    a["price"] = [UNDEF_PRICE if i % 3 == 0 else 100_000 + i for i in range(n)]
    a["quantity"] = [I64_MAX if i % 3 else -5 for i in range(n)]
    a["stat_type"] = [1001, 1003, 9][:1] * n
    a["sequence"], a["ts_in_delta"], a["channel_id"], a["update_action"] = 2**32 - 1, -17, 65535, 1
    a["stat_flags"], a["size_precision"] = ord("B"), 4
    return a


def test_statistics_round_trip_with_undefined_ts_ref(store):
    a = stats_records(6)
    assert store.write({RType.STATISTICS: a}) == {"statistics": 6}
    back = store.fetch("statistics")
    assert back.tobytes() == a.tobytes()  # UNDEF_TIMESTAMP went to NULL and came back
    assert store.write({RType.STATISTICS: a}) == {"statistics": 0}
    if store.backend == "postgresql":
        rows = store._conn.execute("SELECT ts_ref, stat_name, price, quantity FROM statistics_v ORDER BY ts_event_ns").fetchall()
        assert rows[1][0] is None and rows[0][0] is not None and rows[0][1] == "mark_price"
        assert rows[0][2] is None and rows[1][2] == Decimal("0.000100001")
        assert rows[0][3] == Decimal("-0.0005") and rows[1][3] is None
        parts = {r[0] for r in store._conn.execute("SELECT relid::text FROM pg_partition_tree('statistics') WHERE level = 1")}
        assert "statistics_p20240701" in parts


@pytest.mark.parametrize("per", [1, 7, 500])
def test_sqlite_multi_row_statements_keep_one_row_semantics(tmp_path, monkeypatch, per):
    """SQLite writes a batch as INSERTs of up to ``ROWS_PER_STATEMENT`` rows each. With 1, 7 and
    500 rows per statement, over 1,234-row batches (whole statements plus a remainder): the same
    rows come back, NULL-able -1 round-trips, a duplicate is dropped wherever it falls (inside a
    statement, across two, in the remainder), and a refused row anywhere rolls back the batch."""
    from dm.errors import StorageDataError
    from dm.storage.sqlite import SqliteStorage

    monkeypatch.setattr(SqliteStorage, "ROWS_PER_STATEMENT", per)
    st = open_storage(f"sqlite:///{tmp_path / 'm.sqlite'}", migrate=True)
    try:
        a = trades(1_234)
        dup = np.concatenate([a, a[[0, 3, 6, 499, 500, 1_001, 1_233]]])
        assert st.write({RType.TRADE: dup}) == {"trades": 1_234}
        assert st.fetch("trades").tobytes() == a.tobytes()
        assert st.write({RType.TRADE: a}) == {"trades": 0}
        s = stats_records(1_234)
        assert st.write({RType.STATISTICS: s}) == {"statistics": 1_234}
        assert st.fetch("statistics").tobytes() == s.tobytes()
        assert st._scalar("SELECT count(*) FROM statistics WHERE ts_ref IS NULL") == 617
        st._conn.execute("CREATE TRIGGER no_neg BEFORE INSERT ON trades WHEN NEW.price < 0"
                         " BEGIN SELECT RAISE(ABORT, 'no_neg'); END")
        for bad in (5, 777, 1_233):  # in the first statement, a middle one, the remainder
            b = trades(1_234, iid=9)
            b["price"][bad] = -1
            with pytest.raises(StorageDataError):
                st.write({RType.TRADE: b})
            assert st.counts()["trades"] == 1_234
    finally:
        st.close()


def gap_recs(rows) -> np.ndarray:
    from dm.records import gap_record

    return np.frombuffer(b"".join(gap_record(*r) for r in rows), DTYPES[RType.GAP]).copy()


def test_gap_records_are_idempotent_and_keep_their_state(store):
    from dm.records import GapUnits

    g = gap_recs([(1001, 7, "sequence", 100, 105, GapUnits.SEQUENCE, T0, "binance depth U/u"),
                  (1002, 0, "restart", T0 - 10**9, T0, GapUnits.NS, T0 + 5, "worker restarted"),
                  (1001, 7, "sequence", 100, 105, GapUnits.SEQUENCE, T0 + 1, "same window, detected again")])
    assert store.write({RType.GAP: g}) == {"gaps": 3}
    rows = store.gaps()
    assert [(r["publisher_id"], r["instrument_id"], r["kind"], r["units"], r["first_missing"], r["last_missing"],
             r["detected_ns"], r["state"], r["detail"]) for r in rows] == [
        (1001, 7, "sequence", 0, 100, 105, T0, "open", "binance depth U/u"),
        (1002, 0, "restart", 1, T0 - 10**9, T0, T0 + 5, "open", "worker restarted"),
        (1001, 7, "sequence", 0, 100, 105, T0 + 1, "open", "same window, detected again")]
    assert store.update_gap(rows[0]["id"], "filled")
    assert store.write({RType.GAP: g}) == {"gaps": 0}  # re-delivered: a no-op, the state stays
    assert [r["state"] for r in store.gaps()] == ["filled", "open", "open"]
    assert store.record_gap(7, "sequence", 100, 105, T0, "binance depth U/u", publisher_id=1001) == rows[0]["id"]


def definition_recs(rows) -> np.ndarray:
    """rows: (instrument_id, symbol, exchange, size_precision)."""
    a = _stamp(np.zeros(len(rows), DTYPES[RType.INSTRUMENT_DEF]), RType.INSTRUMENT_DEF)
    for i, (iid, sym, ex, sp) in enumerate(rows):
        a[i]["instrument_id"], a[i]["symbol"], a[i]["exchange"], a[i]["size_precision"] = iid, sym.encode(), ex.encode(), sp
    a["publisher_id"] = 1001
    a["ts_event"] = a["ts_recv"] = T0
    a["raw_symbol"] = b"raw"
    a["min_price_increment"], a["display_factor"], a["lot_size"] = 10**7, 10**9, 1000
    a["contract_multiplier"], a["strike_price"] = UNDEF_PRICE, UNDEF_PRICE
    a["expiration"], a["activation"] = U64_MAX, T0
    a["instrument_class"] = ord("X")
    return a


def test_instrument_definitions_register_and_refuse_conflicts(store):
    from dm.errors import StorageDataError

    assert store.insert_instrument(50, "OLD", "BINANCE", "OLDUSDT", 1001)  # before 004: size unknown
    d = definition_recs([(10, "BTCUSD", "BINANCE", 8), (11, "ETHUSD", "BINANCE", 4), (50, "OLD", "BINANCE", 2)])
    assert store.write({RType.INSTRUMENT_DEF: d}) == {"instrument_definitions": 3, "instruments": 2}
    assert store.instrument_rows() == [(10, "BTCUSD", "BINANCE", "raw", 1001, 8), (11, "ETHUSD", "BINANCE", "raw", 1001, 4),
                                       (50, "OLD", "BINANCE", "OLDUSDT", 1001, 2)]
    assert store.definitions().tobytes() == d.tobytes()
    assert store.write({RType.INSTRUMENT_DEF: d}) == {"instrument_definitions": 0, "instruments": 0}
    later = d[:1].copy()
    later["ts_event"] += 86_400 * 10**9  # the next day's definition: a new row, same registration
    later["lot_size"] = 2000
    assert store.write({RType.INSTRUMENT_DEF: later}) == {"instrument_definitions": 1, "instruments": 0}
    # the id taken by another symbol (in the database, and earlier in the batch): refused
    bad = definition_recs([(10, "SOLUSD", "BINANCE", 8), (13, "XRPUSD", "BINANCE", 4), (13, "ADAUSD", "BINANCE", 4),
                           (14, "DOTUSD", "BINANCE", 4)])
    with pytest.raises(StorageDataError) as ei:
        store.write({RType.INSTRUMENT_DEF: bad})
    assert [r[1] for r in ei.value.rejects] == [2]  # the batch's own contradiction is found first
    with pytest.raises(StorageDataError) as ei:
        store.write({RType.INSTRUMENT_DEF: bad[[0, 1, 3]]})
    assert [r[1] for r in ei.value.rejects] == [0]
    assert "registered to BTCUSD@BINANCE" in ei.value.rejects[0][2]
    assert store.counts()["instruments"] == 3  # nothing of a refused batch was written
    assert store.write({RType.INSTRUMENT_DEF: bad[[1, 3]]}) == {"instrument_definitions": 2, "instruments": 2}
    # one symbol under a new id (Databento re-assigns ids daily): the definition is stored, the
    # registration keeps the first id
    moved = definition_recs([(12, "ETHUSD", "BINANCE", 4)])
    assert store.write({RType.INSTRUMENT_DEF: moved}) == {"instrument_definitions": 1, "instruments": 0}
    assert [r[0] for r in store.instrument_rows() if r[1] == "ETHUSD"] == [11]


def test_real_dbn_definitions_stored_and_read_back(store, data_dir):
    from dm.dbn import read_dbn

    recs = []
    for p in sorted((data_dir / "databento").rglob("*definition*")):
        if "dbn-versions" in str(p) and "v3" not in p.name:
            continue  # the same MSFT definitions in v1/v2/v3: identical records
        recs.append(read_dbn(p).arrays()[RType.INSTRUMENT_DEF])
    defs = np.concatenate(recs)
    assert len(defs) == 6
    got = store.write({RType.INSTRUMENT_DEF: defs})
    # MSFT is 6819 on 2021-10-04 and 6830 on 2021-10-05 (Databento re-assigns ids daily): both
    # definitions are stored, the registry keeps the first id
    assert got == {"instrument_definitions": 6, "instruments": 5}
    order = np.lexsort((defs["ts_event"], defs["instrument_id"]))
    back = store.definitions()
    assert rows_sorted(back) == rows_sorted(defs)
    assert len(back) == 6 and back["instrument_id"].tolist() == defs["instrument_id"][order].tolist()
    by_id = {r[0]: r for r in store.instrument_rows()}
    assert by_id[118] == (118, "ESU4", "XCME", "ESU4", 1, 0) and by_id[6819][1:3] == ("MSFT", "XNAS")  # DBN: native counts
    assert 6830 not in by_id and len(store.definitions(6830)) == 1
    if store.backend == "postgresql":
        row = store._conn.execute("SELECT tick_size, contract_multiplier, expiration, instrument_class"
                                  " FROM instrument_definitions_v WHERE instrument_id = 118").fetchone()
        assert row[0] == Decimal("0.25") and row[1] == Decimal("50") and row[3] == "F"
        assert row[2] == dt.datetime(2024, 9, 20, 13, 30, tzinfo=dt.timezone.utc)


def test_row_problems_name_every_bad_row_and_write_refuses_them(store):
    from dm.errors import StorageDataError
    from dm.storage.base import row_problems

    a = trades(100)
    a["size"][[3, 70]] = I64_MAX + 1
    a["ts_recv"][70] = U64_MAX
    dep = _stamp(np.zeros(3, DEPTH_DTYPE), RType.DEPTH)
    dep["levels"]["bid_sz"][1, 4] = I64_MAX + 5
    s = stats_records(4)
    s["ts_ref"][2] = I64_MAX + 1  # not UNDEF_TIMESTAMP: refused
    g = gap_recs([(1, 1, "ok", 1, 2, 0, T0, "")] * 3)
    g["kind"][1] = b"caf\xc3"  # cut UTF-8
    g["detail"][2] = b"a\x00b"  # a NUL inside
    d = definition_recs([(0, "A", "X", 2), (5, "", "X", 2), (6, "B", "X", 19), (7, "C", "X", 2)])
    assert [i for i, _ in row_problems(RType.TRADE, a)] == [3, 70] and "trades.size" in row_problems(RType.TRADE, a)[0][1]
    assert row_problems(RType.DEPTH, dep) == [(1, f"depth.bid_sz_04 = {I64_MAX + 5} exceeds i64 max ({I64_MAX}); refusing to wrap it into BIGINT")]
    assert [i for i, _ in row_problems(RType.STATISTICS, s)] == [2]
    assert [i for i, _ in row_problems(RType.GAP, g)] == [1, 2]
    assert [i for i, _ in row_problems(RType.INSTRUMENT_DEF, d)] == [0, 1, 2]
    with pytest.raises(StorageDataError) as ei:
        store.write({RType.TRADE: a, RType.DEPTH: dep, RType.STATISTICS: s, RType.GAP: g, RType.INSTRUMENT_DEF: d})
    assert sorted((int(r[0]), r[1]) for r in ei.value.rejects) == sorted(
        [(RType.TRADE, 3), (RType.TRADE, 70), (RType.DEPTH, 1), (RType.STATISTICS, 2), (RType.GAP, 1), (RType.GAP, 2),
         (RType.INSTRUMENT_DEF, 0), (RType.INSTRUMENT_DEF, 1), (RType.INSTRUMENT_DEF, 2)])
    assert sum(v for k, v in store.counts().items() if k != "schema_migrations") == 0


def test_a_constraint_the_database_enforces_is_a_data_error(store):
    """A CHECK constraint (here added by hand) refusing a row: ``StorageDataError`` with no row
    named (the persister bisects), nothing written, and the connection still works."""
    from dm.errors import StorageDataError

    store._conn.execute("CREATE TABLE t_check (x INTEGER)")  # make sure DDL works on both
    if store.backend == "postgresql":
        store._conn.execute("ALTER TABLE trades ADD CONSTRAINT no_neg CHECK (price >= 0)")
        a = trades(10)
        a["price"][4] = -1
        with pytest.raises(StorageDataError) as ei:
            store.write({RType.TRADE: a})
        assert ei.value.rejects == [] and "no_neg" in str(ei.value)
        assert store.write({RType.TRADE: a[:4]}) == {"trades": 4}
    else:  # SQLite cannot add a constraint to a table: a trigger refuses instead
        store._conn.execute("CREATE TRIGGER no_neg BEFORE INSERT ON trades WHEN NEW.price < 0"
                            " BEGIN SELECT RAISE(ABORT, 'no_neg'); END")
        a = trades(10)
        a["price"][4] = -1
        with pytest.raises(StorageDataError):
            store.write({RType.TRADE: a})
        assert store.write({RType.TRADE: a[:4]}) == {"trades": 4}


def test_bars_of_four_publishers_in_one_minute_are_four_rows(store):
    """OPRA-like: one option, one minute, four publishers (venues) each sending its ohlcv-1m bar:
    bars are keyed by publisher (migration 003), so all four are stored and read back."""
    b = _stamp(np.zeros(4, BAR_DTYPE), RType.BAR)
    b["instrument_id"] = 1_234_567
    b["publisher_id"] = [30, 31, 32, 33]
    b["ts_event"] = T0
    b["interval_s"] = 60
    b["open"] = b["high"] = b["low"] = b["close"] = [1_150_000_000, 1_160_000_000, 1_150_000_000, 1_170_000_000]
    b["volume"], b["count"], b["size_precision"] = [3, 1, 7, 2], [1, 1, 2, 1], 0
    assert store.write({RType.BAR: b}) == {"bars": 4}
    assert store.write({RType.BAR: b}) == {"bars": 0}
    back = store.fetch("bars", instrument_id=1_234_567)
    assert rows_sorted(back) == rows_sorted(b)
    if store.backend == "postgresql":
        assert store._conn.execute("SELECT count(*) FROM bars_v WHERE instrument_id = 1234567").fetchone()[0] == 4


# --- secrets, timeouts, lazy connection ---------------------------------------------------------------

def test_storage_urls_and_errors_carry_no_secret():
    from dm.storage.base import redact_text, redact_url

    assert redact_url("postgresql://dm:hunter2@db:5432/dm") == "postgresql://dm:***@db:5432/dm"
    assert redact_url("postgresql://dm@db/dm?password=hunter2&sslmode=require") == \
        "postgresql://dm@db/dm?password=***&sslmode=require"
    assert redact_url("postgresql://db/dm?sslpassword=x1&passfile=/p") == "postgresql://db/dm?sslpassword=***&passfile=***"
    assert redact_url("sqlite:///var/dm.sqlite") == "sqlite:///var/dm.sqlite"
    assert redact_text("auth failed for hunter2", "postgresql://u:hunter2@h/d") == "auth failed for ***"
    for url in ("postgresql://postgres:hunter2@127.0.0.1:1/dm", "postgresql://postgres@127.0.0.1:1/dm?password=hunter2"):
        with pytest.raises(StorageError) as ei:
            open_storage(url, timeout_s=2)
        assert "hunter2" not in str(ei.value) and "127.0.0.1" in str(ei.value)
        st_ = open_storage(url, timeout_s=2, connect=False)  # lazy: nothing happens yet
        with pytest.raises(StorageError) as ei:
            st_.ping()
        assert "hunter2" not in str(ei.value)
        st_.close()


def test_blackholed_postgresql_call_times_out_and_the_next_one_reconnects(pg_url):
    """Through a proxy that stops passing bytes (connection open): a write fails with
    ``StorageTimeoutError`` after ``timeout_s`` (the watchdog shut the socket down), not never; once
    bytes pass again the next call reconnects and the retried batch is stored once."""
    from dm.errors import StorageTimeoutError
    from tests.pgproxy import PgProxy

    proxy = PgProxy(int(pg_url.split(":")[2].split("/")[0]))
    url = f"postgresql://postgres@127.0.0.1:{proxy.port}/{pg_url.rsplit('/', 1)[1]}?sslmode=disable"
    try:
        st_ = open_storage(url, migrate=True, timeout_s=1.0)
        a = trades(10)
        assert st_.write({RType.TRADE: a[:5]}) == {"trades": 5}
        proxy.set_mode("blackhole")
        t = time.monotonic()
        with pytest.raises(StorageTimeoutError, match=r"within 1.0 s"):
            st_.write({RType.TRADE: a})
        assert 0.9 < time.monotonic() - t < 2.5
        t = time.monotonic()
        with pytest.raises(StorageTimeoutError):  # reconnecting into the blackhole: bounded too
            st_.ping()
        assert time.monotonic() - t < 3.5
        proxy.set_mode("forward")
        assert st_.write({RType.TRADE: a}) == {"trades": 5}
        assert len(st_.fetch("trades")) == 10
        st_.close()
    finally:
        proxy.close()


def test_pg_connection_has_keepalives_and_statement_timeout(pg_url):
    from dm.errors import StorageTimeoutError

    st_ = open_storage(pg_url, timeout_s=1.5)
    try:
        st_.ping()
        assert st_._conn.execute("SHOW statement_timeout").fetchone()[0] == "1200ms"  # 0.8 x timeout_s
        params = st_._conn.info.get_parameters()
        assert params["keepalives"] == "1" and params["tcp_user_timeout"] == "1500"
        conn = st_._conn
        with pytest.raises(StorageTimeoutError, match="statement timeout"):
            with st_._errors("sleep"):  # the path every call takes
                st_._conn.execute("SELECT pg_sleep(3)")
        st_.ping()
        assert st_._conn is conn  # a live server cancelled the statement: the connection survived
    finally:
        st_.close()
