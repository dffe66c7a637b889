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
from hypothesis import given, settings
from hypothesis import strategies as st

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


# --- DBN export of mbp-1, mbp-10, statistics, definition (read back by the databento package) -----

def _dbn_export(url, tmp_path, symbol, schema, *extra, check=True):
    out = tmp_path / f"{symbol}.{schema}.dbn"
    r = _dm("export", symbol, "--schema", schema, "--format", "dbn", "-o", str(out), "--url", url, *extra, check=check)
    return out, r


def _u8(chars: np.ndarray) -> list[int]:
    """DBN c_char columns (``S1`` in databento's arrays) as their byte values."""
    return np.ascontiguousarray(chars).view(np.uint8).tolist()


def _store_of(path):
    databento = pytest.importorskip("databento")
    store = databento.DBNStore.from_file(path)
    assert store.metadata.version == 3 and store.metadata.stype_in.value == "instrument_id"
    return store, store.to_ndarray()


def test_export_mbp1_from_bbo_round_trips(filled, tmp_path):
    """bbo → mbp-1: level 0 is the stored BBO, field by field; the header and times are dm's;
    side says which side of the book changed since the previous BBO, the event price/size are
    DBN's nulls (not stored)."""
    from dm.records import UNDEF_PRICE

    s, _ = filled
    out, _ = _dbn_export(s.url, tmp_path, "ESU4", "bbo", "--exchange", "GLBX")
    store, got = _store_of(out)
    want = History(s).bbo("ESU4", "GLBX")
    assert str(store.schema) == "mbp-1" and len(got) == len(want) > 100
    for f in ("publisher_id", "instrument_id", "ts_event", "ts_recv", "flags", "sequence"):
        assert got[f].tolist() == want[f].astype(np.int64).tolist(), f
    for f in ("bid_px", "ask_px", "bid_ct", "ask_ct"):
        assert got[f"{f}_00"].tolist() == want[f].astype(np.int64).tolist(), f
    for f in ("bid_sz", "ask_sz"):  # whole contracts (size_precision 9 → units)
        assert (got[f"{f}_00"].astype(np.int64) * 10**9).tolist() == want[f].astype(np.int64).tolist(), f
    assert set(_u8(got["action"])) == {ord("M")} and set(got["price"].tolist()) == {UNDEF_PRICE}
    assert not got["size"].any() and not got["depth"].any()
    # side: the changed side against the previous BBO; 'N' for the first and for two-sided changes
    side = _u8(got["side"])
    assert side[0] == ord("N")
    for i in range(1, len(want)):
        b = [want[f][i] != want[f][i - 1] for f in ("bid_px", "bid_sz", "bid_ct")]
        a = [want[f][i] != want[f][i - 1] for f in ("ask_px", "ask_sz", "ask_ct")]
        assert side[i] == (ord("B") if any(b) and not any(a) else ord("A") if any(a) and not any(b) else ord("N"))
    assert {ord("A"), ord("B")} <= set(side)


def test_export_mbp10_from_depth_round_trips(filled, tmp_path, data_dir):
    """depth → mbp-10 on the recorded Databento mbp-10 records (ESH1 on GLBX): every level's
    price and size as stored; the same records as Databento's own file, but for the event
    fields and the order counts DEPTH does not store."""
    s, _ = filled
    s.insert_instrument(5482, "ESH1", "GLBX", "ESH1", 1)
    out, _ = _dbn_export(s.url, tmp_path, "ESH1", "depth", "--exchange", "GLBX")
    store, got = _store_of(out)
    want = History(s).depth("ESH1", "GLBX")
    assert str(store.schema) == "mbp-10" and len(got) == len(want) == 4
    for f in ("publisher_id", "instrument_id", "ts_event", "ts_recv", "flags", "sequence"):
        assert got[f].tolist() == want[f].astype(np.int64).tolist(), f
    for i in range(10):
        for f in ("bid_px", "ask_px"):
            assert got[f"{f}_{i:02d}"].tolist() == want["levels"][f][:, i].tolist()
        for f in ("bid_sz", "ask_sz"):
            assert (got[f"{f}_{i:02d}"].astype(np.int64) * 10**9).tolist() == \
                want["levels"][f][:, i].astype(np.int64).tolist()
    # against Databento's own file: the book is the same
    databento = pytest.importorskip("databento")
    orig = databento.DBNStore.from_file(
        data_dir / "databento" / "databento-python" / "GLBX.MDP3" / "test_data.mbp-10.dbn.zst").to_ndarray()
    for i in range(10):
        for f in ("bid_px", "ask_px", "bid_sz", "ask_sz"):
            assert got[f"{f}_{i:02d}"].tolist() == orig[f"{f}_{i:02d}"].tolist()
    assert got["ts_event"].tolist() == orig["ts_event"].tolist()
    assert _u8(got["side"])[0] == ord("N") and set(_u8(got["action"])) == {ord("M")}


def _bybit_statistics(data_dir):
    """STATISTICS records of the recorded Bybit linear session (dm's codec, the recording's
    receive times): open interest (9), mark (1001), index (1002), funding (1003)."""
    from dm.dbn import split_records
    from dm.recording import read_recording, ws_sessions
    from dm.venues.bybit._codec import BybitCodec

    ids = {"BTCUSDT": (1, 3), "ETHUSDT": (2, 2), "SOLUSDT": (3, 1), "DOGEUSDT": (4, 0)}
    parts = []
    for sess in ws_sessions(read_recording(data_dir / "bybit" / "2026-08-09" / "BYBIT.jsonl.zst")):
        if "/linear" not in sess.url:
            continue
        c = BybitCodec(1007)
        for sym, (iid, sp) in ids.items():
            c.add_symbol(sym, iid, sp)
        for ev in sess.frames:
            c.decode(ev.text, ev.ts_ns)
            out = bytes(c.output())
            if out:
                parts.append(split_records(out).get(RType.STATISTICS, np.zeros(0, np.uint8)))
    return np.concatenate([p for p in parts if len(p)]), ids


def test_export_statistics_round_trips_and_refuses_what_dbn_lacks(storage_url, data_dir, tmp_path):
    """Recorded Bybit statistics stored through dm: open interest (DBN's OPEN_INTEREST, 9)
    exports field by field (quantity in whole contracts); a dm-only stat_type (mark price,
    funding rate ..) and a fractional open interest (BTCUSDT, 0.001 contracts) are refused by name."""
    from dm.records import StatType

    s = open_storage(storage_url, migrate=True)
    try:
        stats, ids = _bybit_statistics(data_dir)
        s.write({RType.STATISTICS: stats})
        for sym, (iid, sp) in ids.items():
            s.insert_instrument(iid, sym, "BYBIT", sym, 1007, sp)
        out, _ = _dbn_export(s.url, tmp_path, "DOGEUSDT", "statistics", "--stat-type", "9")
        store, got = _store_of(out)
        want = History(s).statistics("DOGEUSDT", stat_type=9)
        assert str(store.schema) == "statistics" and len(got) == len(want) == 5
        for f in ("publisher_id", "instrument_id", "ts_event", "ts_recv", "ts_ref", "price", "quantity", "sequence",
                  "ts_in_delta", "stat_type", "channel_id", "update_action", "stat_flags"):
            assert got[f].astype(np.uint64).tolist() == want[f].astype(np.uint64).tolist(), f
        assert set(want["size_precision"].tolist()) == {0} and want["quantity"].min() > 10**9
        _, r = _dbn_export(s.url, tmp_path, "DOGEUSDT", "statistics", check=False)
        every = History(s).statistics("DOGEUSDT")
        i = int(np.flatnonzero(every["stat_type"] >= 1000)[0])
        first = StatType(int(every["stat_type"][i]))
        assert r.returncode != 0 and f"row {i}: stat_type {int(first)} ({first.name}) has no DBN StatType code" in r.stderr
        _, r = _dbn_export(s.url, tmp_path, "BTCUSDT", "statistics", "--stat-type", "9", check=False)
        q = int(History(s).statistics("BTCUSDT", stat_type=9)["quantity"][0])
        assert r.returncode != 0 and f"size {q} at 10^-3 is not a whole number" in r.stderr
        assert not (tmp_path / "BTCUSDT.statistics.dbn").exists()
    finally:
        s.close()


def test_export_definition_round_trips(storage_url, data_dir, tmp_path):
    """The recorded CME definitions (ESU4, NQU4) stored through dm export as DBN
    InstrumentDefMsg: every field dm keeps reads back from the databento package as stored."""
    from dm.dbn import read_dbn

    defs = read_dbn(data_dir / "databento" / "glbx-mdp3-esu4-nqu4-20240701" / "futures_definition.dbn.zst")
    s = open_storage(storage_url, migrate=True)
    try:
        s.write({RType.INSTRUMENT_DEF: defs.arrays()[RType.INSTRUMENT_DEF]})
        out, _ = _dbn_export(s.url, tmp_path, "ESU4", "definitions")
        store, got = _store_of(out)
        want = History(s).definitions("ESU4")
        assert str(store.schema) == "definition" and len(got) == len(want) == 1
        w = want[0]
        for f in ("publisher_id", "instrument_id", "ts_event", "ts_recv", "min_price_increment", "display_factor",
                  "strike_price", "expiration", "activation"):
            assert int(got[f][0]) == int(w[f]), f
        assert int(got["unit_of_measure_qty"][0]) == int(w["contract_multiplier"]) == 50 * 10**9
        assert int(got["min_lot_size_round_lot"][0]) == (int(w["lot_size"]) or (1 << 31) - 1)
        for f, g in (("raw_symbol", "raw_symbol"), ("exchange", "exchange"), ("base", "asset"), ("quote", "currency"),
                     ("underlying", "underlying")):
            assert got[g][0].decode().rstrip("\0") == w[f].decode(), f
        assert _u8(got["instrument_class"]) == [int(w["instrument_class"])] == [ord("F")]
        # and dm reads its own export back into the same record
        back = read_dbn(out.read_bytes()).arrays()[RType.INSTRUMENT_DEF]
        assert back.tobytes() == want.tobytes()
    finally:
        s.close()


def test_dbn_export_refuses_values_dbn_cannot_hold(data_dir):
    """A value that does not fit its DBN field is refused by name, never wrapped or rounded:
    a sequence above u32, a fractional size, an instrument class DBN lacks, a symbol too long."""
    from dm.dbn import read_dbn
    from dm.history import definitions_to_dbn, to_dbn

    rec = real_records(data_dir)
    b = rec[RType.BBO][:5].copy()
    assert len(to_dbn(b, "bbo")) == 5
    b["sequence"][3] = 1 << 32
    with pytest.raises(HistoryError, match=r"row 3: sequence 4294967296 does not fit DBN's 32-bit field"):
        to_dbn(b, "bbo")
    d = rec[RType.DEPTH][:2].copy()
    d["levels"]["ask_sz"][1, 4] += 1  # 1e-9 of a contract
    with pytest.raises(HistoryError, match=r"row 1: size \d+ at 10\^-9 is not a whole number"):
        to_dbn(d, "depth")
    with pytest.raises(HistoryError, match="DBN export covers"):
        to_dbn(rec[RType.BOOK_DELTA][:1], "book_deltas")
    defs = read_dbn(data_dir / "databento" / "glbx-mdp3-esu4-nqu4-20240701" / "futures_definition.dbn.zst")
    a = defs.arrays()[RType.INSTRUMENT_DEF].copy()
    pytest.importorskip("databento_dbn")
    assert len(definitions_to_dbn(a)) == 2 * 520
    a["instrument_class"][1] = ord("W")
    with pytest.raises(HistoryError, match="row 1: instrument_class 'W' has no DBN InstrumentClass"):
        definitions_to_dbn(a)
    a = defs.arrays()[RType.INSTRUMENT_DEF].copy()
    a["exchange"][0] = b"GLBX.MDP3"
    with pytest.raises(HistoryError, match=r"row 0: exchange 'GLBX.MDP3' is longer than DBN's 4 bytes"):
        definitions_to_dbn(a)


def _side_ref(rows):
    """The changed side per row by a plain loop (the oracle of ``_changed_side``)."""
    last, out = {}, []
    for iid, bid, ask in rows:
        prev = last.get(iid)
        if prev is None:
            out.append((ord("N"), 0))
        else:
            cb = [i for i in range(len(bid)) if bid[i] != prev[0][i]]
            ca = [i for i in range(len(ask)) if ask[i] != prev[1][i]]
            out.append((ord("B"), cb[0]) if cb and not ca else (ord("A"), ca[0]) if ca and not cb else (ord("N"), 0))
        last[iid] = (bid, ask)
    return out


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(1, 3), st.integers(-(1 << 63), (1 << 63) - 1),
                          st.integers(0, (1 << 32) - 1), st.integers(0, (1 << 32) - 1),
                          st.integers(0, 3), st.integers(0, 3), st.integers(0, 5)), min_size=1, max_size=40),
       st.integers(0, 9))
def test_mbp_export_decodes_to_the_stored_fields(rows, sp):
    """Random DEPTH records with whole-unit sizes → to_dbn → databento_dbn's decoder: every
    level's price and size (in units) as stored, sequence kept; side/depth as the oracle says."""
    dbn = pytest.importorskip("databento_dbn")
    from dm.history import to_dbn
    from dm.records import DEPTH_DTYPE

    a = np.zeros(len(rows), DEPTH_DTYPE)
    a["size_precision"] = sp
    scale = 10**sp
    for i, (iid, px, sz, seq, lb, la, step) in enumerate(rows):
        a["instrument_id"][i], a["sequence"][i], a["ts_event"][i] = iid, seq, 10**18 + i
        lv = a["levels"][i]
        lv["bid_px"] = px
        lv["bid_px"][step] = px ^ 2
        lv["ask_px"][la] = px ^ 1
        lv["bid_sz"][lb] = sz * scale  # at most u32 max units, below i64 max at 10^-9
        lv["ask_sz"] = sz // 2 * scale
    out = to_dbn(a, "depth")
    meta = dbn.Metadata(dataset="DM", start=0, stype_in=dbn.SType.INSTRUMENT_ID, stype_out=dbn.SType.INSTRUMENT_ID,
                        schema=dbn.Schema.MBP_10)
    dec = dbn.DBNDecoder()
    dec.write(bytes(meta.encode()) + out.tobytes())
    got = dec.decode()[1:]
    assert len(got) == len(a)
    ref = _side_ref([(int(r["instrument_id"]),
                      list(zip(r["levels"]["bid_px"].tolist(), r["levels"]["bid_sz"].tolist())),
                      list(zip(r["levels"]["ask_px"].tolist(), r["levels"]["ask_sz"].tolist()))) for r in a])
    for g, w, (side, depth) in zip(got, a, ref):
        assert (g.instrument_id, g.sequence, g.ts_event) == (int(w["instrument_id"]), int(w["sequence"]), int(w["ts_event"]))
        for i, lv in enumerate(g.levels):
            assert (lv.bid_px, lv.ask_px) == (int(w["levels"]["bid_px"][i]), int(w["levels"]["ask_px"][i]))
            assert (lv.bid_sz * scale, lv.ask_sz * scale) == (int(w["levels"]["bid_sz"][i]), int(w["levels"]["ask_sz"][i]))
        assert (ord(str(g.side)), g.depth, str(g.action)) == (side, depth, "M")
