"""dm.history on both backends with the recorded Databento ESU4/NQU4 data (data/databento):
range queries by canonical symbol, bounded chunks, bars by source, pandas with exact Decimals,
and the ``dm history`` / ``dm export`` commands (real CLI processes)."""
from __future__ import annotations

import datetime as dt
import time
import subprocess
import sys
from decimal import Decimal

import numpy as np
import pytest

from dm.bars import BarPlan
from dm.history import History, HistoryError, to_ns
from dm.records import RType
from dm.storage import open_storage
from tests.test_storage import real_records

T23_59 = 1_719_878_340 * 10**9  # 2024-07-01T23:59:00Z
T00_01 = T23_59 + 120 * 10**9


@pytest.fixture
def filled(storage_url, data_dir):
    s = open_storage(storage_url, migrate=True)
    s.bar_plan = BarPlan((60,))
    rec = real_records(data_dir)
    s.write(rec)
    s.insert_instrument(118, "ESU4", "GLBX", "ESU4", 1)
    s.insert_instrument(4358, "NQU4", "GLBX", "NQU4", 1)
    yield s, rec
    s.close()


def _sel(a: np.ndarray, iid: int, lo: int, hi: int) -> np.ndarray:
    m = (a["instrument_id"] == iid) & (a["ts_event"] >= lo) & (a["ts_event"] < hi)
    return a[m]


def test_trades_and_bbo_by_symbol_and_range(filled):
    s, rec = filled
    h = History(s)
    t = h.trades("ESU4", "GLBX", T23_59, T00_01)
    want = _sel(s.fetch("trades"), 118, T23_59, T00_01)
    assert len(t) > 10 and t.tobytes() == want.tobytes()
    assert t.dtype == rec[RType.TRADE].dtype
    b = h.bbo("ESU4@GLBX", start=dt.datetime(2024, 7, 1, 23, 59), end="2024-07-02T00:01:00Z")
    assert len(b) > 10 and b.tobytes() == _sel(s.fetch("bbo"), 118, T23_59, T00_01).tobytes()
    # every exchange when none is given; open ends
    assert len(h.book_deltas("ESU4")) == int((s.fetch("book_deltas")["instrument_id"] == 118).sum())
    assert len(h.get("trades", None)) == len(rec[RType.TRADE])


def test_chunks_are_bounded_and_complete(filled):
    s, _ = filled
    h = History(s)
    chunks = list(h.iter("bbo", "ESU4", "GLBX", chunk_rows=100))
    assert len(chunks) > 3 and all(0 < len(c) <= 100 for c in chunks)
    assert np.concatenate(chunks).tobytes() == h.bbo("ESU4", "GLBX").tobytes()


def test_bars_by_source_and_interval(filled):
    s, rec = filled
    h = History(s)
    mine = h.bars("ESU4", "GLBX", interval="1m")  # dm's own, built from the stored trades
    venue = h.bars("ESU4", "GLBX", interval="1m", source="venue")
    assert len(venue) == int((rec[RType.BAR]["instrument_id"] == 118).sum())
    assert 0 < len(mine) <= len(venue)
    by_ts = {int(v["ts_event"]): v for v in venue}
    for b in mine:  # the trades file covers whole minutes: dm's bars are Databento's
        v = by_ts[int(b["ts_event"])]
        assert (b["open"], b["high"], b["low"], b["close"], b["volume"]) == \
            (v["open"], v["high"], v["low"], v["close"], v["volume"])
    assert len(h.bars("ESU4", "GLBX", interval="1h")) == 0  # not built by this plan
    assert len(h.bars("ESU4", "GLBX", interval=None, source=None)) == len(mine) + len(venue)


def test_pandas_float_and_exact_decimal(filled):
    pd = pytest.importorskip("pandas")
    s, _ = filled
    h = History(s)
    t = h.trades("ESU4", "GLBX")
    f = h.to_pandas(t)
    assert str(f["ts_event"].dtype) == "datetime64[ns, UTC]"
    assert f["ts_event"].iloc[0].value == int(t["ts_event"][0])
    assert f["price"].iloc[0] == t["price"][0] / 1e9 and f["size"].iloc[0] == t["size"][0] / 1e9
    d = h.to_pandas(t, prices="decimal")
    assert d["price"].iloc[0] == Decimal(int(t["price"][0])) / Decimal(10**9)
    assert all(isinstance(x, Decimal) for x in d["size"])
    depth = h.to_pandas(h.get("depth", None))
    assert "bid_px_00" in depth.columns and "ask_sz_09" in depth.columns
    assert isinstance(depth, pd.DataFrame)


def test_unknown_symbol_schema_and_time():
    assert to_ns("2024-07-01T23:59:00Z") == T23_59 == to_ns(dt.datetime(2024, 7, 1, 23, 59)) == to_ns(T23_59)
    assert to_ns(dt.date(1970, 1, 2)) == 86_400 * 10**9
    with pytest.raises(HistoryError):
        to_ns("yesterday")


def test_errors(filled):
    s, _ = filled
    h = History(s)
    with pytest.raises(HistoryError):
        h.trades("BTCUSD", "GLBX")
    with pytest.raises(HistoryError):
        h.get("quotes", "ESU4")
    with pytest.raises(HistoryError):
        h.bars("ESU4", source="someone")


def _dm(*args, check=True):
    r = subprocess.run([sys.executable, "-m", "dm", *args], capture_output=True, text=True, timeout=120)
    if check:
        assert r.returncode == 0, r.stderr
    return r


def test_cli_history_and_export_csv_parquet(filled, tmp_path):
    s, _ = filled
    url = s.url
    r = _dm("history", "ESU4", "--exchange", "GLBX", "--schema", "trades", "--start", str(T23_59),
            "--end", str(T00_01), "--url", url)
    n = len(History(s).trades("ESU4", "GLBX", T23_59, T00_01))
    lines = r.stdout.strip().splitlines()
    assert lines[0].startswith("publisher_id,instrument_id,ts_event,") and len(lines) == n + 1
    out = tmp_path / "esu4.csv"
    _dm("export", "ESU4", "--exchange", "GLBX", "--schema", "bbo", "--format", "csv", "-o", str(out), "--url", url)
    import csv

    rows = list(csv.DictReader(out.open()))
    b = History(s).bbo("ESU4", "GLBX")
    assert len(rows) == len(b) and int(rows[0]["bid_px"]) == int(b["bid_px"][0])
    assert int(rows[-1]["ts_event"]) == int(b["ts_event"][-1])
    pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    pqf = tmp_path / "esu4.parquet"
    _dm("export", "ESU4", "--exchange", "GLBX", "--schema", "trades", "--format", "parquet", "-o", str(pqf),
        "--url", url)
    tab = pq.read_table(pqf)
    t = History(s).trades("ESU4", "GLBX")
    assert tab.num_rows == len(t) and tab.column("price").to_pylist() == t["price"].astype(np.int64).tolist()
    r = _dm("export", "NOPE", "--schema", "trades", "--format", "csv", "-o", str(out), "--url", url, check=False)
    assert r.returncode != 0 and "no instrument NOPE" in r.stderr


@pytest.mark.parametrize("schema", ["trades", "bars"])
def test_export_dbn_round_trips_through_databento(filled, tmp_path, schema):
    dbn = pytest.importorskip("databento_dbn")
    s, _ = filled
    out = tmp_path / f"esu4.{schema}.dbn"
    _dm("export", "ESU4", "--exchange", "GLBX", "--schema", schema, "--format", "dbn", "-o", str(out),
        "--url", s.url, *(["--source", "venue"] if schema == "bars" else []))
    dec = dbn.DBNDecoder()
    dec.write(out.read_bytes())
    recs = dec.decode()
    meta, body = recs[0], recs[1:]
    h = History(s)
    if schema == "trades":
        want = h.trades("ESU4", "GLBX")
        assert [(r.instrument_id, r.ts_event, r.ts_recv, r.price, r.size * 10**9, r.sequence, ord(str(r.side)), r.flags)
                for r in body] == [tuple(int(x) for x in (w["instrument_id"], w["ts_event"], w["ts_recv"], w["price"],
                                                          w["size"], w["sequence"], w["side"], w["flags"]))
                                   for w in want]
    else:
        want = h.bars("ESU4", "GLBX", source="venue")
        assert [(r.ts_event, r.open, r.high, r.low, r.close, r.volume * 10**9) for r in body] == \
            [tuple(int(x) for x in (w["ts_event"], w["open"], w["high"], w["low"], w["close"], w["volume"]))
             for w in want]
    assert len(body) == len(want) > 0


def test_replay_from_db_feeds_dm_client(filled, instance, tmp_path):
    """``dm replay --from-db`` (a real process) publishes the stored ESU4 records into a shm
    channel; a ``dm.client`` reader gets them all, merged in ts_event order, as it would live."""
    import os

    from dm.client import Client
    from dm.history import REPLAY_SCHEMAS

    s, _ = filled
    h = History(s)
    parts, keys = [], []
    for k, schema in enumerate(REPLAY_SCHEMAS):
        a = h.get(schema, "ESU4", "GLBX", **({"interval": None} if schema == "bars" else {}))
        parts += [a[i:i + 1].tobytes() for i in range(len(a))]
        keys += [(int(t), k) for t in a["ts_event"]]
    want = [parts[i] for i in sorted(range(len(parts)), key=lambda i: keys[i])]
    assert len(want) > 2000
    reg = f"/dm.reg.{instance}"
    p = subprocess.Popen([sys.executable, "-m", "dm", "replay", "--from-db", "ESU4@GLBX", "--url", s.url,
                          "--instance", instance, "--registry", reg, "--speed", "0", "--linger", "60"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        with Client(instance=instance, registry=reg) as c:
            sub = c.subscribe("ESU4", "GLBX", wait=60, follow=False, start="oldest")
            got = []
            deadline = time.monotonic() + 120
            while len(got) < len(want) and time.monotonic() < deadline:
                raw = sub.read_raw(timeout=1.0)
                if raw is not None:
                    got.append(raw)
            assert sub.lost_records == 0 and sub.instrument_id == 118
        assert got == want
    finally:
        p.terminate()
        out, err = p.communicate(timeout=60)
        if os.path.exists(f"/dev/shm{reg}"):
            os.unlink(f"/dev/shm{reg}")
    assert p.returncode == 0, err
    assert f"ESU4@GLBX={len(want)}" in err


def test_cli_rebuild_bars_equals_incremental(filled):
    s, _ = filled
    q = "SELECT * FROM bars WHERE source = 1 ORDER BY instrument_id, interval_s, ts_event"
    before = [tuple(r) for r in s._conn.execute(q).fetchall()]
    assert before
    r = _dm("db", "rebuild-bars", "--url", s.url, "--since", "2024-07-01T23:59:30Z", "--interval", "1m")
    assert "rebuilt" in r.stderr + r.stdout
    if s.backend == "postgresql":
        s._conn.execute("SELECT 1")  # a fresh snapshot (autocommit)
    assert [tuple(r) for r in s._conn.execute(q).fetchall()] == before
    _dm("db", "maintain", "--url", s.url)
