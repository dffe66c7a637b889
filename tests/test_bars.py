"""Bars built from trades as they are stored (dm.bars, issue 10), on both backends: Databento's own
ohlcv-1m equals dm's bars from the ESU4 trades, batching/order/re-delivery change nothing, a
late trade updates its closed bar, rebuild-bars equals the incremental build; the PostgreSQL
write path never creates hundreds of partitions (DEFAULT partition, migration 006)."""
from __future__ import annotations

import time

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dm.bars import BarPlan, build_bars, parse_bars_section, parse_interval
from dm.errors import ConfigError
from dm.records import BOOK_DELTA_DTYPE, I64_MAX, RType
from dm.storage import open_storage
from dm.storage.base import NS_PER_DAY
from tests.test_storage import _dbn, _stamp, real_records, trades

ESU4 = "glbx-mdp3-esu4-nqu4-20240701"
MIN = 60 * 10**9


@pytest.fixture
def store(storage_url):
    s = open_storage(storage_url)
    s.migrate()
    s.bar_plan = BarPlan((1, 60, 3600))
    yield s
    s.close()


def built(store, interval_s: int) -> np.ndarray:
    """Built bars of one interval as rows (iid, pub, ts, o, h, l, c, vol, count), sorted."""
    q = ("SELECT instrument_id, publisher_id, ts_event, open, high, low, close, volume, count FROM bars"
         " WHERE source = 1 AND interval_s = {} ORDER BY instrument_id, publisher_id, ts_event")
    return [tuple(int(x) for x in r) for r in store._conn.execute(q.format(int(interval_s))).fetchall()]


def ref_bars(t: np.ndarray, interval_s: int) -> list[tuple]:
    """Pure-Python oracle: group, order by (ts_event, trade id or sequence, dedup)."""
    from dm.storage.base import dedup_column

    dd = dedup_column("trades", t)
    groups: dict[tuple, list] = {}
    seen = set()
    for r, d in zip(t.tolist(), dd.tolist()):
        rec = dict(zip(t.dtype.names, r))
        key = (rec["instrument_id"], rec["ts_event"], rec["trade_id"], d)
        if key in seen:
            continue
        seen.add(key)
        start = rec["ts_event"] - rec["ts_event"] % (interval_s * 10**9)
        order = (rec["ts_event"], rec["trade_id"] or rec["sequence"], d)
        groups.setdefault((rec["instrument_id"], rec["publisher_id"], start), []).append((order, rec))
    out = []
    for (iid, pub, start), rows in sorted(groups.items()):
        rows.sort(key=lambda x: x[0])
        px = [r["price"] for _, r in rows]
        out.append((iid, pub, start, px[0], max(px), min(px), px[-1],
                    min(sum(r["size"] for _, r in rows), I64_MAX), len(rows)))
    return out


# --- Databento: dm's bars equal Databento's ohlcv-1m ------------------------------------------------

def test_esu4_bars_equal_databento_ohlcv_1m(store, data_dir):
    rec = real_records(data_dir)
    t = rec[RType.TRADE]
    ohlcv = rec[RType.BAR]
    # in several batches, the second delivered twice (a persister crash), the last one first
    parts = np.array_split(t, 5)
    for p in (parts[4], parts[0], parts[1], parts[1], parts[2], parts[3], parts[2]):
        store.write({RType.TRADE: p})
    got = built(store, 60)
    # every minute the trades file covers: its request was 2024-07-01T23:58 .. 2024-07-02T00:02
    lo = 1_719_878_280 * 10**9  # 2024-07-01T23:58:00Z
    hi = lo + 4 * MIN
    want = [(int(b["instrument_id"]), int(b["publisher_id"]), int(b["ts_event"]), int(b["open"]), int(b["high"]),
             int(b["low"]), int(b["close"]), int(b["volume"]), None) for b in ohlcv
            if lo <= b["ts_event"] and b["ts_event"] + MIN <= hi and b["instrument_id"] in set(t["instrument_id"].tolist())]
    minutes = {w[2] for w in want}
    assert len(minutes) == 4 and len(want) == 4 and (t["ts_event"] >= lo).all() and (t["ts_event"] < hi).all()
    got_full = [g for g in got if g[2] in minutes]
    assert [g[:8] for g in got_full] == sorted(w[:8] for w in want)
    assert sum(g[8] for g in got) == 120  # every trade counted once
    assert got == ref_bars(t, 60)
    # rebuild-bars from the stored trades equals the incremental build
    before = {iv: built(store, iv) for iv in (1, 60, 3600)}
    r = store.rebuild_bars(since_ns=0)
    assert r["deleted"] == r["bars"] == sum(len(v) for v in before.values())
    assert {iv: built(store, iv) for iv in (1, 60, 3600)} == before


def test_esu4_ohlcv_covers_four_minutes_of_trades(data_dir):
    """The data the acceptance rests on: the trades file spans 4 complete minutes."""
    g = data_dir / "databento" / ESU4
    trd = _dbn(next(g.glob("futures_trades_*")))
    starts = {r.ts_event - r.ts_event % MIN for r in trd}
    assert len(starts) >= 4


def test_late_trade_updates_its_closed_bar_and_rebuild_agrees(store):
    a = trades(200)
    a["ts_event"] = 20_000 * NS_PER_DAY + np.arange(200) * (MIN // 50)  # 4 minutes, 50 trades each
    store.write({RType.TRADE: a[50:]})
    first_bar_later = a[:50].copy()
    store.write({RType.TRADE: first_bar_later[10:]})  # the first minute arrives late, out of order
    store.write({RType.TRADE: first_bar_later[:10]})  # and its opening trades even later
    late = a[120:121].copy()
    late["trade_id"] = 10_000
    late["price"] = 1  # a new low for minute 2, the bar's latest trade id but not its close (ts)
    store.write({RType.TRADE: late})
    allt = np.concatenate([a, late])
    assert built(store, 60) == ref_bars(allt, 60)
    assert built(store, 3600) == ref_bars(allt, 3600)
    b = built(store, 60)
    assert [x[8] for x in b] == [50, 50, 51, 50] and b[2][5] == 1
    snap = built(store, 1)
    store.rebuild_bars(since_ns=int(a["ts_event"][100]))
    assert built(store, 1) == snap and built(store, 60) == ref_bars(allt, 60)


def test_many_bars_per_batch_and_interleaved_batches(store):
    """Batches with hundreds of 1s bars (PostgreSQL: straight COPY into bars, the first bar of
    each key merged); a second batch interleaved with the first in time (every one of its bars
    is stored already: the COPY is refused and the batch takes the exact merge); a re-delivered
    part; out of order: the bars equal the oracle."""
    a = trades(2400)
    a["ts_event"] = 20_000 * NS_PER_DAY + np.arange(2400) * 500_000_000  # two trades per second
    even, odd = a[0::2], a[1::2]
    store.write({RType.TRADE: even[600:]})
    store.write({RType.TRADE: even[:600]})  # earlier than what is stored: its bars are all new
    store.write({RType.TRADE: odd})  # the same seconds as `even`: every bar stored already
    store.write({RType.TRADE: odd[100:400]})  # re-delivered: never counted twice
    assert built(store, 1) == ref_bars(a, 1)
    assert built(store, 60) == ref_bars(a, 60) and built(store, 3600) == ref_bars(a, 3600)
    assert sum(x[8] for x in built(store, 1)) == 2400


def test_redelivered_trade_without_trade_id_counts_once(store):
    a = trades(30)
    a["trade_id"] = 0  # Databento-like: identified by content
    assert store.write({RType.TRADE: a})["trades"] == 30
    assert store.write({RType.TRADE: np.concatenate([a[:5], a[:5]])})["trades"] == 0
    assert sum(x[8] for x in built(store, 60)) == 30


def test_volume_saturates_never_wraps(store):
    a = trades(3)
    a["size_precision"] = 0
    a["size"] = I64_MAX - 5
    store.write({RType.TRADE: a[:2]})
    store.write({RType.TRADE: a[2:]})
    (b,) = built(store, 60)
    assert b[7] == I64_MAX and b[8] == 3


def test_no_plan_builds_nothing(storage_url):
    s = open_storage(storage_url, migrate=True)
    s.write({RType.TRADE: trades(5)})
    assert s.counts()["bars"] == 0
    s.close()


def test_received_bars_stay_beside_built_ones(store, data_dir):
    rec = real_records(data_dir)
    store.write({RType.TRADE: rec[RType.TRADE], RType.BAR: rec[RType.BAR]})
    n_recv = store._conn.execute("SELECT count(*) FROM bars WHERE source = 0").fetchone()[0]
    assert n_recv == len(rec[RType.BAR]) and len(built(store, 60)) > 0


# --- the aggregation alone (hypothesis) -------------------------------------------------------------

@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 5 * 60_000), st.integers(1, 9), st.integers(0, 3),
                          st.integers(1, 10**6), st.integers(0, 3)), min_size=1, max_size=80),
       st.sampled_from([1, 60, 3600]))
def test_build_bars_matches_the_oracle(rows, iv):
    t = trades(len(rows))
    for i, (ms, px, tid, sz, iid) in enumerate(rows):
        t["ts_event"][i] = 19_000 * NS_PER_DAY + ms * 10**6
        t["price"][i] = px * 10**9
        t["trade_id"][i] = tid  # repeats and zeros: order falls back to sequence, then dedup
        t["size"][i] = sz
        t["instrument_id"][i] = iid
    # the storage refuses repeated keys before bars are built: the oracle and build_bars get unique trades
    from dm.storage.base import dedup_column

    dd = dedup_column("trades", t)
    _, first = np.unique(np.stack([t["instrument_id"].astype(np.int64), t["ts_event"].astype(np.int64),
                                   t["trade_id"].astype(np.int64), dd], axis=1), axis=0, return_index=True)
    u = t[np.sort(first)]
    b = build_bars(u, BarPlan((iv,)))
    got = [tuple(int(x) for x in (r["instrument_id"], r["publisher_id"], r["ts_event"], r["open"], r["high"],
                                  r["low"], r["close"], r["volume"], r["count"])) for r in b]
    assert got == ref_bars(u, iv)


def test_config_intervals():
    assert [parse_interval(x) for x in ("1s", "1m", "5m", "1h", "1d", 30)] == [1, 60, 300, 3600, 86400, 30]
    for bad in ("1w", "0m", "", True, -1):
        with pytest.raises(ConfigError):
            parse_interval(bad)
    sec = parse_bars_section({"intervals": ["1h", "1m", "1m"], "exchanges": {"binance": ["1s"]}})
    assert sec == {"enabled": True, "intervals": [60, 3600], "exchanges": {"BINANCE": [1]}, "live": True,
                   "live_grace_ms": 1000}
    with pytest.raises(ConfigError):
        parse_bars_section({"interval": ["1m"]})


# --- PostgreSQL partitions: never hundreds inside one write ----------------------------------------

def test_pg_snapshot_of_many_old_days_writes_fast_into_default(pg_url):
    """A Kraken book snapshot carries each level's last-change time: hundreds of distinct days in
    one batch. The write creates at most WRITE_PARTITION_BUDGET partitions per table; the other
    days' rows go to the DEFAULT partition, and every row reads back."""
    from dm.storage.postgres import WRITE_PARTITION_BUDGET

    s = open_storage(pg_url, migrate=True)
    s.timeout_s = None
    parts0 = {r[0] for r in s._conn.execute("SELECT relid::text FROM pg_partition_tree('book_deltas') WHERE level = 1")}
    n = 400
    d = np.zeros(n, BOOK_DELTA_DTYPE)
    today = time.time_ns() // NS_PER_DAY
    d["publisher_id"], d["instrument_id"] = 1002, 9
    d["ts_event"] = (today - 2 * np.arange(n)) * NS_PER_DAY + 5 * 10**9  # 400 distinct days, today first
    d["ts_recv"] = time.time_ns()
    d["price"] = 10**9 * (1 + np.arange(n))
    d["size"] = 10**8
    d["side"], d["action"], d["size_precision"] = ord("B"), ord("A"), 8
    _stamp(d, RType.BOOK_DELTA)
    t0 = time.monotonic()
    assert s.write({RType.BOOK_DELTA: d}) == {"book_deltas": n}
    took = time.monotonic() - t0
    parts = {r[0] for r in s._conn.execute("SELECT relid::text FROM pg_partition_tree('book_deltas') WHERE level = 1")}
    assert len(parts - parts0) <= WRITE_PARTITION_BUDGET, sorted(parts - parts0)
    assert parts - parts0 == set()  # today and tomorrow exist (maintain); no partition for an old day
    assert "book_deltas_default" in parts
    in_default = s._conn.execute("SELECT count(*) FROM book_deltas_default").fetchone()[0]
    assert in_default == n - 1  # all but today's row
    assert s.fetch("book_deltas").tobytes() == d[np.argsort(d["ts_event"], kind="stable")].tobytes()
    # a partition for a day whose rows are in DEFAULT cannot be made: refused quietly, rows stay
    old_day = int(d["ts_event"][-1]) // NS_PER_DAY
    assert s.ensure_partitions([old_day], ("book_deltas",)) == []
    assert s.write({RType.BOOK_DELTA: d}) == {"book_deltas": 0}
    print(f"400-day snapshot batch stored in {took:.3f} s")
    s.close()


def test_pg_maintain_creates_partitions_ahead(pg_url):
    s = open_storage(pg_url, migrate=True)
    today = time.time_ns() // NS_PER_DAY
    made = s.maintain(ahead_days=5)
    names = {r[0] for r in s._conn.execute("SELECT relid::text FROM pg_partition_tree('trades') WHERE level = 1")}
    from dm.storage.postgres import partition_name

    assert {partition_name("trades", today + k) for k in range(6)} <= names
    assert all(m in names or m.split("_p")[0] != "trades" for m in made)
    assert s.maintain(ahead_days=5) == []
    s.close()


# --- through the persister (real process, real persist queue), killed mid-run ---------------------

def test_persister_bars_equal_databento_ohlcv_despite_kill_9(tmp_path, instance, pg_url, data_dir):
    """The ESU4 trades go through a real persist queue to `dm persist` in small batches; the
    persister is killed with SIGKILL mid-run and restarted (its uncommitted batch is delivered
    again). dm's 1m bars equal Databento's ohlcv-1m for the 4 minutes the trades cover."""
    import signal

    from tests.test_persister import config, open_queue, start_persister, stats, stop, wait_for

    rec = real_records(data_dir)
    t = rec[RType.TRADE]
    cfg = config(tmp_path, instance, pg_url, providers=("alpha",), batch_records=7)
    q = open_queue(tmp_path, instance, "alpha")
    proc = start_persister(cfg, tmp_path / "p1.log")
    try:
        for i in range(0, 60):
            q.write(t[i:i + 1].tobytes())
        q.flush()
        wait_for(lambda: (x := stats(tmp_path, instance)) and x["pid"] == proc.pid and x["records"] >= 14, 60,
                 "some batches stored")
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        for i in range(60, len(t)):
            q.write(t[i:i + 1].tobytes())
        q.flush()
        proc = start_persister(cfg, tmp_path / "p2.log")
        wait_for(lambda: (x := stats(tmp_path, instance)) and x["pid"] == proc.pid
                 and x["queues"]["alpha"]["pending"] == 0, 60, "all stored")
        assert stop(proc) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        q.close()
    s = open_storage(pg_url)
    try:
        assert s.counts()["trades"] == 120
        lo = 1_719_878_280 * 10**9
        want = sorted((int(b["ts_event"]), int(b["open"]), int(b["high"]), int(b["low"]), int(b["close"]),
                       int(b["volume"])) for b in rec[RType.BAR]
                      if b["instrument_id"] == 118 and lo <= b["ts_event"] < lo + 4 * MIN)
        got = [r[2:8] for r in built(s, 60)]
        assert len(want) == 4 and got == want
        assert built(s, 3600) == ref_bars(t, 3600)
    finally:
        s.close()


# --- through the Databento client path (the fake gateway over real HTTPS) -------------------------

from tests.databento_fixtures import gateway, gw  # noqa: E402,F401


def test_databento_fetch_builds_bars_equal_to_ohlcv_and_rebuild(storage_url, gw, tmp_path, data_dir):  # noqa: F811
    """`dm backfill` fetches the ESU4 trades with the databento client (fake gateway, TLS) into a
    storage with a bar plan: bars built as they are stored equal Databento's ohlcv-1m, and
    rebuild-bars gives the same rows."""
    from tests.test_backfill import engine, req

    st = open_storage(storage_url, migrate=True)
    st.bar_plan = BarPlan((60,))
    try:
        _, verdict, results = engine(st, gw, tmp_path).fetch([req()])
        assert results[0].rows["trades"] == 120
        ohlcv = real_records(data_dir)[RType.BAR]
        lo = 1_719_878_280 * 10**9
        # the client path stores DBN's native integer sizes (size_precision 0); real_records
        # scales the file's bars to 1e-9
        want = sorted((int(b["ts_event"]), int(b["open"]), int(b["high"]), int(b["low"]), int(b["close"]),
                       int(b["volume"]) // 10**9) for b in ohlcv if b["instrument_id"] == 118 and lo <= b["ts_event"] < lo + 4 * MIN)
        got = [r[2:8] for r in built(st, 60)]
        assert len(got) == 4 and got == want
        st.rebuild_bars(0)
        assert [r[2:8] for r in built(st, 60)] == want
    finally:
        st.close()


@settings(max_examples=150, deadline=None)
@given(rows=st.lists(st.tuples(st.integers(1, 3), st.sampled_from([1, 1001]), st.integers(0, 2**64 - 1),
                               st.integers(-10**12, 10**12), st.sampled_from([0, 1, 2**62, 2**63 - 1, 2**64 - 1]),
                               st.integers(0, 3), st.integers(0, 3)), min_size=1, max_size=60),
       small_ts=st.booleans())
def test_c_pass_equals_numpy_reference(rows, small_ts):
    """dm._bars.aggregate (build_bars) equals build_bars_numpy: several instruments and
    publishers, per-publisher intervals, ts_event above 2**63 (negative as int64), sizes that
    saturate the volume, ties."""
    from dm.bars import build_bars_numpy

    t = trades(len(rows))
    for i, (iid, pub, ts, px, sz, tid, seq) in enumerate(rows):
        t[i]["instrument_id"], t[i]["publisher_id"], t[i]["price"], t[i]["size"] = iid, pub, px, sz
        t[i]["ts_event"] = 20_000 * NS_PER_DAY + ts % (300 * 10**9) if small_ts else ts
        t[i]["trade_id"], t[i]["sequence"] = tid, seq
    plan = BarPlan((1, 60), {1: (5, 3600, 1)})
    a, b = build_bars(t, plan), build_bars_numpy(t, plan)
    assert a.dtype == b.dtype and a.tolist() == b.tolist()


@settings(max_examples=200, deadline=None)
@given(rows=st.lists(st.tuples(st.integers(0, 2), st.integers(0, 2), st.integers(-2, 2)), min_size=2, max_size=12))
def test_in_order_is_lexicographic_order(rows):
    """build_bars skips its sort when the trades are already in order: the check is exact."""
    from dm.bars import _in_order

    keys = tuple(np.array(c, np.int64) for c in zip(*rows))
    assert _in_order(keys) == (rows == sorted(rows))
