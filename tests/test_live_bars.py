"""Live bars (issue 10): the worker's Fanout builds OHLCV bars from the TRADE records it publishes
and publishes each closed bar as a BAR record on the instrument's channel only (dm/_ring.pyx,
``Fanout.set_bar_intervals`` / ``close_bars``). Real shm rings; the builder is checked against
``dm.bars.build_bars`` (the reference the stored bars use) on random trade streams with ties,
late trades, interval boundaries and saturating volumes; then end to end through the Databento
live path (Databento's own ohlcv-1m) and a venue worker (the timer closes the last bar)."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dm._ring import ChannelReader, ChannelWriter, Fanout, PersistQueue, unlink_segment
from dm.bars import BarPlan, build_bars, live_plan, parse_bars_section
from dm.errors import ConfigError
from dm.records import BAR_DTYPE, I64_MAX, LAYOUT_HASH, TRADE_DTYPE, BarFlag, Flag, RType

NS = 1_000_000_000
BASE = 1_719_878_280 * NS  # 2024-07-01T23:58:00Z
IID, PUB = 77, 1001


@pytest.fixture
def chan(instance):
    """(fanout, writer, reader) on a fresh channel ring, no persist queue."""
    made = []

    def make(intervals=(1, 60), grace_ns=0, queue=None):
        name = f"/dm.{instance}.B{len(made)}"
        w = ChannelWriter(name, 1 << 22, LAYOUT_HASH, instrument_id=IID, size_precision=3, publisher_id=PUB)
        made.append((name, w))
        f = Fanout(queue)
        f.add_channel(IID, w)
        f.set_bar_intervals(intervals, grace_ns)
        return f, w, ChannelReader(name, LAYOUT_HASH)

    yield make
    for name, w in made:
        w.close()
        unlink_segment(name)


def trade_array(rows) -> np.ndarray:
    """rows: (ts_event, price, size, trade_id, sequence, side, flags) → TRADE records."""
    a = np.zeros(len(rows), TRADE_DTYPE)
    a["length"] = TRADE_DTYPE.itemsize // 4
    a["rtype"] = RType.TRADE
    a["publisher_id"] = PUB
    a["instrument_id"] = IID
    for i, (ts, px, sz, tid, seq, side, fl) in enumerate(rows):
        a[i]["ts_event"], a[i]["ts_recv"], a[i]["price"], a[i]["size"] = ts, ts + 5, px, sz
        a[i]["trade_id"], a[i]["sequence"], a[i]["side"], a[i]["flags"] = tid, seq, side, fl
    a["size_precision"] = 3
    return a


def read_all(reader) -> tuple[list[bytes], list[np.void]]:
    """(TRADE record bytes, BAR records) of the channel, in order."""
    trades, bars = [], []
    while True:
        r = reader.read()
        if r is None:
            return trades, bars
        r = bytes(r)
        if r[1] == RType.TRADE:
            trades.append(r)
        elif r[1] == RType.BAR:
            bars.append(np.frombuffer(r, BAR_DTYPE)[0])
        else:
            raise AssertionError(f"unexpected rtype {r[1]:#x} on the channel")


def latest(bars) -> dict:
    """Readers' rule: the latest BAR per (interval_s, ts_event)."""
    out = {}
    for b in bars:
        out[(int(b["interval_s"]), int(b["ts_event"]))] = b
    return out


def ref(t: np.ndarray, intervals) -> dict:
    b = build_bars(t, BarPlan(tuple(intervals)))
    return {(int(x["interval_s"]), int(x["ts_event"])): x for x in b}


def same(live, want) -> None:
    assert sorted(live) == sorted(want)
    for k, w in want.items():
        g = live[k]
        got = tuple(int(g[c]) for c in ("open", "high", "low", "close", "volume", "count", "size_precision"))
        exp = tuple(int(w[c]) for c in ("open", "high", "low", "close", "volume", "count", "size_precision"))
        assert got == exp, (k, got, exp)
        assert g["flags"] & BarFlag.BUILT and g["instrument_id"] == IID and g["publisher_id"] == PUB


# --- the builder against dm.bars' reference ------------------------------------------------------

trade_rows = st.lists(st.tuples(
    st.integers(0, 24).map(lambda k: BASE + k * 250_000_000),  # a coarse grid: ties in ts_event
    st.sampled_from([100, 101, 99, -5, 7]).map(lambda p: p * NS // 4),
    st.one_of(st.integers(1, 1000), st.just(I64_MAX // 3), st.just(I64_MAX)),  # volume saturates
    st.sampled_from([0, 0, 0, 5, 9, 2**63 + 3]),               # no id: sequence order; u64 above i64
    st.sampled_from([1, 1, 2, 2**64 - 1]),
    st.sampled_from([ord("A"), ord("B"), ord("N")]),
    st.just(0),
), min_size=1, max_size=50)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows=trade_rows, jitter=st.lists(st.integers(0, 1_900_000_000), min_size=50, max_size=50),
       split=st.integers(1, 7), ticks=st.booleans())
def test_live_bars_equal_the_reference(chan, rows, jitter, split, ticks):
    """Trades published out of order (up to 1.9 s late: up to two 1s bars back), in batches,
    with or without timer closes in between: the latest BAR per (interval, start) equals
    dm.bars.build_bars of all the trades, every bar once closed."""
    f, w, r = chan((1, 3, 60), grace_ns=0)
    t = trade_array(rows)
    order = np.argsort(t["ts_event"].astype(np.int64) + np.array(jitter[:len(t)], np.int64), kind="stable")
    pub = t[order]
    for part in np.array_split(pub, min(split, len(pub))):
        f.publish(part.tobytes())
        if ticks:  # the housekeeping timer, on the venue clock: closes bars ended behind it
            f.close_bars(0)
    trades, bars = read_all(r)
    assert trades == [x.tobytes() for x in pub]  # the trades themselves pass unchanged, in order
    f.close_bars(0)
    f.close_bars(1 << 62)  # much later on the wall clock: every bar closed
    _, more = read_all(r)
    assert f.bar_stats["dropped"] == 0
    live = latest(bars + more)
    same(live, ref(pub, (1, 3, 60)))
    seen = set()
    for b in bars + more:  # a bar published again is a correction, flagged LATE
        k = (int(b["interval_s"]), int(b["ts_event"]))
        assert k not in seen or b["flags"] & BarFlag.LATE
        seen.add(k)
    assert f.bar_stats["published"] == len(bars) + len(more)


@pytest.mark.parametrize("rev", [False, True])
def test_ties_broken_by_the_dedup_hash_whatever_the_arrival_order(chan, rev):
    """Same ts_event, no trade id, same sequence (a CME match event): open/close as the stored
    bars order them (dm.storage.base.dedup_column), not by arrival."""
    f, w, r = chan((1,))
    rows = [(BASE + 7, p * NS, 1 + p, 0, 42, 66, 0) for p in (3, 5, 4, 9, 1)]
    t = trade_array(rows[::-1] if rev else rows)
    f.publish(t.tobytes())
    f.close_bars(0)
    f.close_bars(10 * NS)
    same(latest(read_all(r)[1]), ref(t, (1,)))


def test_bar_published_when_a_later_trade_arrives_before_that_trade(chan):
    f, w, r = chan((1,))
    f.publish(trade_array([(BASE + 10, 5 * NS, 2, 1, 0, 66, 0), (BASE + 20, 7 * NS, 3, 2, 0, 66, 0)]).tobytes())
    assert read_all(r)[1] == []  # the bar is open: nothing yet
    f.publish(trade_array([(BASE + NS, 6 * NS, 1, 3, 0, 65, 0)]).tobytes())
    out = []
    while (x := r.read()) is not None:
        out.append(bytes(x))
    assert [x[1] for x in out] == [RType.BAR, RType.TRADE]  # the closed bar, then the trade
    b = np.frombuffer(out[0], BAR_DTYPE)[0]
    assert (int(b["ts_event"]), int(b["open"]), int(b["high"]), int(b["low"]), int(b["close"]), int(b["volume"]),
            int(b["count"]), int(b["interval_s"]), int(b["flags"]), int(b["size_precision"])) == (
        BASE, 5 * NS, 7 * NS, 5 * NS, 7 * NS, 5, 2, 1, BarFlag.BUILT, 3)
    assert f.bar_stats == {"published": 1, "late": 0, "dropped": 0}


def test_timer_closes_on_the_venue_clock_after_the_grace(chan):
    """close_bars: venue clock = latest trade ts_event + wall time since close_bars saw it."""
    f, w, r = chan((1,), grace_ns=300_000_000)
    f.publish(trade_array([(BASE + 900_000_000, NS, 1, 1, 0, 66, 0)]).tobytes())
    wall = 5_000 * NS  # any wall clock: only its advance counts
    assert f.close_bars(wall) == 0  # venue clock BASE + 0.9 s
    assert f.close_bars(wall + 399_000_000) == 0  # BASE + 1.299 s < end + grace
    assert f.close_bars(wall + 400_000_000) == 1  # BASE + 1.3 s
    assert f.close_bars(wall + 10 * NS) == 0  # once
    # a trade for the bar the timer closed: a correction, flagged LATE
    f.publish(trade_array([(BASE + 950_000_000, 3 * NS, 4, 2, 0, 66, 0)]).tobytes())
    bars = read_all(r)[1]
    assert [(int(b["flags"]), int(b["close"]), int(b["volume"]), int(b["count"])) for b in bars] == [
        (BarFlag.BUILT, NS, 1, 1), (BarFlag.BUILT | BarFlag.LATE, 3 * NS, 5, 2)]
    assert f.bar_stats == {"published": 2, "late": 1, "dropped": 0}


def test_too_late_snapshot_and_foreign_records(chan, instance, tmp_path):
    """A trade older than the 4 bars kept is left out (counted); SNAPSHOT trades are a venue's
    replay and not counted; BAR records go to the channel, never to the persist queue; a
    received BAR (Databento ohlcv) passes through untouched."""
    q = PersistQueue(f"/dm.{instance}.PQ", 1 << 16, LAYOUT_HASH, str(tmp_path))
    try:
        f, w, r = chan((1,), queue=q)
        rows = [(BASE + k * NS, NS + k, 1, k + 1, 0, 66, 0) for k in range(6)]
        rows.append((BASE + NS // 2, 9 * NS, 1, 100, 0, 66, 0))  # 5 bars back: dropped
        rows.append((BASE + 5 * NS + 1, 9 * NS, 1, 101, 0, 66, Flag.SNAPSHOT))  # not counted
        f.publish(trade_array(rows).tobytes())
        recv = np.zeros(1, BAR_DTYPE)
        recv["length"], recv["rtype"], recv["instrument_id"], recv["ts_event"] = 18, RType.BAR, IID, BASE
        recv["interval_s"], recv["open"], recv["volume"] = 60, 42, 9
        f.publish(recv.tobytes())
        trades, bars = read_all(r)
        assert len(trades) == 8
        assert [int(b["ts_event"]) for b in bars] == [BASE + k * NS for k in range(5)] + [BASE]
        assert int(bars[-1]["flags"]) == 0 and int(bars[-1]["open"]) == 42  # the received one
        assert all(int(b["count"]) == 1 for b in bars[:5])
        assert f.bar_stats == {"published": 5, "late": 0, "dropped": 1}
        assert q.records_written == 9  # 8 trades + the received bar; no built bar
    finally:
        q.close()


def test_set_bar_intervals_validates_and_turns_off(chan):
    f, w, r = chan((60,))
    with pytest.raises(ValueError, match="between 1 s and 366 d"):
        f.set_bar_intervals([0])
    with pytest.raises(ValueError, match="at most 16"):
        f.set_bar_intervals(range(1, 18))
    with pytest.raises(ValueError, match="grace_ns"):
        f.set_bar_intervals([1], -1)
    assert f.bar_intervals == (60,)
    f.set_bar_intervals([])
    assert f.bar_intervals == ()
    f.publish(trade_array([(BASE, NS, 1, 1, 0, 66, 0), (BASE + 3600 * NS, NS, 1, 2, 0, 66, 0)]).tobytes())
    assert f.close_bars(0) == f.close_bars(1 << 62) == 0 and read_all(r)[1] == []


def test_live_plan_from_config():
    class Cfg:
        sections = {"bars": {"intervals": ["1m"], "exchanges": {"binance": ["1s", "1m"]}, "live_grace_ms": 250}}

    assert live_plan(Cfg, "BINANCE") == ((1, 60), 250_000_000)
    assert live_plan(Cfg, "KRAKEN") == ((60,), 250_000_000)
    Cfg.sections = {}
    assert live_plan(Cfg, "X") == ((60, 3600, 86400), 1_000_000_000)  # default on
    Cfg.sections = {"bars": {"live": False}}
    assert live_plan(Cfg, "X") == ((), 0)
    for bad in ({"live": 1}, {"live_grace_ms": -1}, {"live_grace_ms": "1s"}):
        with pytest.raises(ConfigError, match="bars.live"):
            parse_bars_section(bad)


# --- end to end: the Databento live path ---------------------------------------------------------

def _latest_live(records, interval_s: int) -> dict:
    """The latest dm-built BAR per ts_event of one interval, from a channel's records."""
    out = {}
    for r in records:
        if r.rtype == RType.BAR and r.interval_s == interval_s and r.flags & BarFlag.BUILT:
            out[r.ts_event] = r
    return out


def test_databento_live_bars_equal_databento_ohlcv_1m(tmp_path, instance, sqlite_url, monkeypatch):
    """The ESU4 trades (and BBOs) replayed by the fake Databento live gateway through `dm
    supervise`: a dm.client reader of ESU4 receives, for each of the 4 minutes the trades file
    covers, a BAR equal to Databento's own ohlcv-1m bar (open, high, low, close, volume); the
    last minute is closed by the timer (no trade after it), the others by the next trade."""
    from databento_fixtures import ESU4_DIR
    from test_databento_live import KEY, databento_block, stop, wait_for, write_cfg

    from dm.databento.fake import DataStore
    from dm.databento.fake_live import FakeLiveGateway
    from dm.dbn import read_dbn
    from e2e import ChannelCollector, leftover_segments, start_supervisor

    ohlcv = read_dbn(next(ESU4_DIR.glob("futures_ohlcv-1m_*"))).arrays()[RType.BAR]
    trades = read_dbn(next(ESU4_DIR.glob("futures_trades_*"))).arrays()[RType.TRADE]
    lo = BASE  # the trades file's request: 2024-07-01T23:58 .. 2024-07-02T00:02
    want = [tuple(int(b[c]) for c in ("ts_event", "open", "high", "low", "close", "volume")) for b in ohlcv
            if b["instrument_id"] == trades["instrument_id"][0] and lo <= b["ts_event"] < lo + 4 * 60 * NS]
    assert len(want) == 4
    monkeypatch.setenv("DATABENTO_API_KEY", KEY)
    with FakeLiveGateway(DataStore(ESU4_DIR), key=KEY) as gw:
        cfg = write_cfg(tmp_path, instance, sqlite_url, databento_block(tmp_path, "cme", gw.address)
                        + "[bars]\nlive_grace_ms = 200\n")
        log = tmp_path / "supervisor.log"
        sup = start_supervisor(cfg, log)
        try:
            coll = ChannelCollector(instance, ["ESU4"], exchange="GLBX.MDP3").start()
            wait_for(lambda: len(_latest_live(list(coll.records["ESU4"]), 60)) >= 4, 90, "4 live 1m bars", log)
            assert stop(sup) == 0, log.read_text()[-3000:]
        finally:
            if sup.poll() is None:
                sup.kill()
    coll.join(60)
    recs = coll.records["ESU4"]
    live = _latest_live(recs, 60)
    got = [(ts, b.open, b.high, b.low, b.close, b.volume) for ts, b in sorted(live.items())]
    assert got == want
    assert sum(b.count for b in live.values()) == len(trades) == 120
    # each minute went out once (closed, never corrected: the trades arrive in order)
    assert [r.ts_event for r in recs if r.rtype == RType.BAR and r.interval_s == 60] == [w[0] for w in want]
    # no bar before its minute's last trade on the channel: a bar follows every trade it holds
    pos = {id(r): i for i, r in enumerate(recs)}
    for b in live.values():
        last = max(i for i, r in enumerate(recs) if r.rtype == RType.TRADE and b.ts_event <= r.ts_event < b.ts_event + 60 * NS)
        assert pos[id(b)] > last
    assert not leftover_segments(instance)


# --- end to end: a venue worker ------------------------------------------------------------------

def test_binance_worker_live_bars_equal_stored_bars_timer_closes_the_last(tmp_path, instance, sqlite_url):
    """A Binance worker (real `dm supervise`, aggTrades of a recorded session replayed by a real
    `dm replay --once` process): every symbol's channel carries 1s and 1m BAR records equal to
    dm.bars' reference over the trades on that channel and to the bars the persister stored; the
    bar of each symbol's last trade is closed by the timer (nothing comes after it)."""
    import subprocess
    import sys

    from test_databento_live import stop, wait_for

    from dm.storage import open_storage
    from e2e import (B38, B38_SYMBOLS, EXCHANGE_INFO, ROOT, ChannelCollector, config_head, expected_binance,
                     provider_toml, start_supervisor)

    n_trades = sum(len(v) for v in expected_binance()["aggTrade"].values())
    ready = tmp_path / "replay.port"
    rp = subprocess.Popen([sys.executable, "-m", "dm", "replay", str(B38), str(EXCHANGE_INFO), "--host", "127.0.0.1",
                           "--port", "0", "--speed", "0", "--once", "--connections", "1", "--ready-file", str(ready)],
                          cwd=ROOT, stdout=subprocess.DEVNULL, stderr=open(tmp_path / "replay.log", "wb"))
    try:
        port = wait_for(lambda: ready.exists() and ready.read_text().strip(), 30, "the replay port")
        st = open_storage(sqlite_url)
        st.migrate()
        st.close()
        cfg = tmp_path / "dm.toml"
        cfg.write_text(config_head(tmp_path, instance, sqlite_url, (), once=False)
                       + provider_toml(tmp_path, "binance", "binance", "BINANCE", f"ws://127.0.0.1:{port}/stream",
                                       B38_SYMBOLS, ("aggTrade",), rest_url=f"http://127.0.0.1:{port}")
                       + '[bars]\nlive_grace_ms = 0\nintervals = ["1m"]\n[bars.exchanges]\nBINANCE = ["1s", "1m"]\n')
        log = tmp_path / "supervisor.log"
        sup = start_supervisor(cfg, log)
        try:
            coll = ChannelCollector(instance, B38_SYMBOLS).start()

            def all_closed():
                for s in B38_SYMBOLS:
                    recs = list(coll.records[s])
                    last = [r for r in recs if r.rtype == RType.TRADE][-1:]
                    if last and (last[0].ts_event - last[0].ts_event % NS) not in _latest_live(recs, 1):
                        return False
                return sum(1 for s in B38_SYMBOLS for r in list(coll.records[s]) if r.rtype == RType.TRADE) == n_trades

            wait_for(all_closed, 60, "every symbol's last 1s bar", log)

            def stored():
                s = open_storage(sqlite_url)
                try:
                    return s.counts().get("trades") == n_trades
                finally:
                    s.close()

            wait_for(stored, 60, "every trade stored", log)
            assert stop(sup) == 0, log.read_text()[-3000:]
        finally:
            if sup.poll() is None:
                sup.kill()
        coll.join(60)
    finally:
        rp.kill()
        rp.wait()
    st = open_storage(sqlite_url)
    try:
        rows = st._conn.execute("SELECT instrument_id, interval_s, ts_event, open, high, low, close, volume, count"
                                " FROM bars WHERE source = 1").fetchall()
    finally:
        st.close()
    stored_bars = {(r[0], r[1], r[2]): tuple(r[3:]) for r in rows}
    checked = 0
    for s in B38_SYMBOLS:
        recs = coll.records[s]
        t = np.concatenate([np.frombuffer(bytes(r), TRADE_DTYPE) for r in recs if r.rtype == RType.TRADE] or
                           [np.zeros(0, TRADE_DTYPE)])
        if not len(t):
            continue
        want = ref(t, (1, 60))
        for iv in (1, 60):
            live = _latest_live(recs, iv)
            got = {(iv, ts): (b.open, b.high, b.low, b.close, b.volume, b.count) for ts, b in live.items()}
            exp = {k: tuple(int(w[c]) for c in ("open", "high", "low", "close", "volume", "count"))
                   for k, w in want.items() if k[0] == iv}
            # every 1s bar went out; the last 1m bar only if its minute ended before the run did
            assert got == exp if iv == 1 else got.items() <= exp.items(), (s, iv)
            iid = int(t["instrument_id"][0])
            assert all(stored_bars[(iid, iv, ts)] == v for (_, ts), v in got.items())
            checked += len(got)
    assert checked > 100
