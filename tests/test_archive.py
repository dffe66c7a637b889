"""Retention (dm.archive) on both backends with the recorded Databento data: compress moves old
days into zstd Parquet files (verified), history returns the same rows before and after, row for
row; late rows of an archived day are merged by the next run; ``dm db compress`` end to end."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

pytest.importorskip("pyarrow")

from dm.archive import archive_day, archived_days, compress, parse_retention_section  # noqa: E402
from dm.errors import ConfigError  # noqa: E402
from dm.history import History  # noqa: E402
from dm.records import RType  # noqa: E402
from dm.storage import open_storage  # noqa: E402
from dm.storage.base import NS_PER_DAY  # noqa: E402
from tests.test_storage import real_records  # noqa: E402

DAY1 = 19_905  # 2024-07-01: the ESU4 data spans 23:58 .. 00:02, two UTC days


@pytest.fixture
def filled(storage_url, data_dir):
    s = open_storage(storage_url, migrate=True)
    rec = real_records(data_dir)
    s.write({k: v for k, v in rec.items() if k != RType.DEPTH})
    s.insert_instrument(118, "ESU4", "GLBX", "ESU4", 1)
    s.insert_instrument(4358, "NQU4", "GLBX", "NQU4", 1)
    yield s, rec
    s.close()


def _all(h, schema):
    return {sym: h.get(schema, sym, "GLBX").tobytes() for sym in ("ESU4", "NQU4")}


def test_compress_then_history_returns_the_same_rows(filled, tmp_path):
    s, rec = filled
    before = {t: _all(History(s), t) for t in ("trades", "bbo", "book_deltas")}
    counts0 = s.counts()
    ret = {"archive_dir": tmp_path / "arch", "days": {"trades": 1, "bbo": 1, "book_deltas": 1}}
    now = (DAY1 + 3) * NS_PER_DAY  # both days are older than 1 day
    done = compress(s, ret, now=now)
    assert {(r["table"], r["day"]) for r in done if r["rows"]} == {
        (t, d) for t in ("trades", "bbo", "book_deltas") for d in ("2024-07-01", "2024-07-02")}
    assert sum(r["removed"] for r in done if r["table"] == "trades") == counts0["trades"]
    assert s.counts()["trades"] == s.counts()["bbo"] == s.counts()["book_deltas"] == 0
    assert archived_days(tmp_path / "arch", "trades") == [DAY1, DAY1 + 1]
    m = json.loads((tmp_path / "arch" / "trades" / "2024-07-01" / "manifest.json").read_text())
    assert m["files"] == {"GLBX.parquet": m["rows"]} and m["rows"] > 0
    h = History(s, archive_dir=tmp_path / "arch")
    assert {t: _all(h, t) for t in ("trades", "bbo", "book_deltas")} == before
    # a range across the archived midnight, in chunks
    lo, hi = DAY1 * NS_PER_DAY + 86_340 * 10**9, (DAY1 + 1) * NS_PER_DAY + 60 * 10**9
    parts = list(h.iter("bbo", "ESU4", "GLBX", lo, hi, chunk_rows=50))
    want = History(s, archive_dir=tmp_path / "arch").bbo("ESU4", "GLBX")
    want = want[(want["ts_event"] >= lo) & (want["ts_event"] < hi)]
    assert all(len(p) <= 50 for p in parts) and np.concatenate(parts).tobytes() == want.tobytes()
    assert compress(s, ret, now=now) == []  # nothing left to do


def test_late_rows_of_an_archived_day_are_merged(filled, tmp_path):
    s, rec = filled
    t = rec[RType.TRADE]
    arch = tmp_path / "arch"
    day0 = t[t["ts_event"] < (DAY1 + 1) * NS_PER_DAY]
    r = archive_day(s, "trades", DAY1, arch)
    assert r["rows"] == r["removed"] == len(day0)
    late = day0[:3].copy()
    late["sequence"] += 10**6  # three new trades of the archived day (another content hash)
    s.write({RType.TRADE: np.concatenate([late, day0[:2]])})  # and two the archive already holds
    h = History(s, archive_dir=arch)
    got = h.trades("ESU4", "GLBX", DAY1 * NS_PER_DAY, (DAY1 + 1) * NS_PER_DAY)
    assert len(got) == len(day0) + 3  # the two repeated rows are seen once
    r2 = archive_day(s, "trades", DAY1, arch)
    assert r2["rows"] == len(day0) + 3 and r2["removed"] == 5
    assert h.trades("ESU4", "GLBX", DAY1 * NS_PER_DAY, (DAY1 + 1) * NS_PER_DAY).tobytes() == got.tobytes()


def test_retention_section():
    assert parse_retention_section({"days": {"book_deltas": 7}})["days"] == {"book_deltas": 7}
    for bad in ({"days": {"bars": 7}}, {"days": {"trades": 0}}, {"keep": 1}):
        with pytest.raises(ConfigError):
            parse_retention_section(bad)


def test_cli_compress(filled, tmp_path):
    s, _ = filled
    before = History(s).trades("ESU4", "GLBX").tobytes()
    arch = tmp_path / "a"
    r = subprocess.run([sys.executable, "-m", "dm", "db", "compress", "--url", s.url, "--older-than-days", "30",
                        "--table", "trades", "--archive-dir", str(arch)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "archived 120 rows of " in r.stdout  # PostgreSQL: also the empty day-ahead partition
    assert s.counts()["trades"] == 0
    r = subprocess.run([sys.executable, "-m", "dm", "history", "ESU4", "--exchange", "GLBX", "--url", s.url,
                        "--archive-dir", str(arch)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and len(r.stdout.strip().splitlines()) == 121
    assert History(s, archive_dir=arch).trades("ESU4", "GLBX").tobytes() == before


def test_archive_stats(filled, tmp_path):
    from dm.archive import archive_stats

    s, _ = filled
    compress(s, {"archive_dir": tmp_path, "days": {"trades": 1}}, now=(DAY1 + 5) * NS_PER_DAY)
    st = archive_stats(tmp_path)
    assert st["trades"]["rows"] == 120 and st["trades"]["days"] == 2 and st["trades"]["bytes"] > 0
    assert st["trades"]["first_day"] == "2024-07-01"


def test_several_exchanges_in_one_day_read_back_in_order(filled, tmp_path):
    """A day holding two exchanges' rows is archived as two files; history merges them into the
    database's order (ts_event .. dedup), per instrument and for everything, and a range that
    cuts the day reads only its part (Parquet filters / row-group statistics)."""
    s, rec = filled
    t = rec[RType.TRADE].copy()
    t["instrument_id"] = 777  # the same trades on another exchange: equal ts_event, other instrument
    t["sequence"] += 1
    s.write({RType.TRADE: t})
    s.insert_instrument(777, "ESU4", "OTHER", "ESU4", 1)
    h0 = History(s)
    before = {k: h0.get("trades", *k).tobytes() for k in ((None, None), ("ESU4", None), ("ESU4", "OTHER"))}
    lo, hi = DAY1 * NS_PER_DAY + 86_370 * 10**9, (DAY1 + 1) * NS_PER_DAY + 30 * 10**9
    cut = h0.trades("ESU4", None, lo, hi).tobytes()
    compress(s, {"archive_dir": tmp_path, "days": {"trades": 1}}, now=(DAY1 + 5) * NS_PER_DAY)
    m = json.loads((tmp_path / "trades" / "2024-07-01" / "manifest.json").read_text())
    assert sorted(m["files"]) == ["GLBX.parquet", "OTHER.parquet"] and s.counts()["trades"] == 0
    h = History(s, archive_dir=tmp_path)
    assert {k: h.get("trades", *k).tobytes() for k in before} == before
    assert h.trades("ESU4", None, lo, hi).tobytes() == cut and 0 < len(h.trades("ESU4", None, lo, hi)) < len(t)
    # the iterator (bounded chunks) gives the same rows as get
    assert np.concatenate(list(h.iter("trades", None, chunk_rows=7))).tobytes() == before[(None, None)]
