"""OHLCV bars built from trades as they are persisted (issue 10), exact in fixed point.

A bar of ``interval_s`` seconds covers ``[ts_event, ts_event + interval_s * 1e9)`` ns since the
UNIX epoch, aligned to the epoch (Databento's OHLCV convention: ``ts_event`` of a bar is the
start of its interval). Over the trades of an (instrument_id, publisher_id) in that interval:

* open / close: the price of the first / last trade in the order (ts_event, venue order, dedup),
  where venue order is the trade id, or the sequence when the venue gives no trade id (0, e.g.
  Databento); ``dedup`` (``dm.storage.base.dedup_column``) makes the order total;
* high / low: max / min price (i64 at 1e-9);
* volume: the sum of sizes (u64 at 10^-size_precision), saturated at i64 max (never wrapped);
* count: the number of trades.

Built bars are stored with ``source = 1`` beside received bars (``source = 0``, a venue's or
Databento's own), keyed (instrument_id, publisher_id, interval_s, ts_event, source), with the
ordering key of their open and close trade (``open_ts/open_ord/open_dd``, ``close_*``). The
storage builds them inside the write transaction from exactly the trades that transaction
inserted (a re-delivered trade is refused by the trades key and never counted twice) and merges
them into the stored bar: open = the least key, close = the greatest, high/low max/min, volume
and count summed. So a late trade updates its closed bar, and the bars equal a rebuild from the
stored trades (``Storage.rebuild_bars``) whatever the batching, order or re-delivery.

Configuration (``[bars]``, validated by ``parse_bars_section``)::

    [bars]
    enabled = true                      # default true
    intervals = ["1m", "1h", "1d"]      # default; units s, m, h, d
    live = true                         # default true: closed bars published on the channels
    live_grace_ms = 1000                # default 1000: timer close this long after a bar's end
    [bars.exchanges]                    # per venue (the provider's exchange), replaces intervals
    BINANCE = ["1s", "1m", "1h", "1d"]

Live bars: every worker builds the same bars from the trades it publishes and publishes each
closed bar as one BAR record (``BarFlag.BUILT``; a correction after a late trade also
``BarFlag.LATE``) on the instrument's channel, so ``dm.client`` readers get bars live
(``dm._ring.Fanout.set_bar_intervals``; the rules are the ones above, the dedup hash breaking
ties as here). A bar closes when a later trade of its instrument arrives, or when the venue
clock (the latest trade ts_event, advancing with the wall clock while the feed is quiet) is
``live_grace_ms`` past its end. Live BAR records are not persisted: the stored bars are built
from the stored trades.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np

from dm.errors import ConfigError
from dm.records import I64_MAX

NS = 1_000_000_000
DEFAULT_INTERVALS = (60, 3600, 86400)
SOURCE_RECEIVED = 0
SOURCE_BUILT = 1
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}

#: one partial (or stored) built bar, as the storages exchange them
BUILT_DTYPE = np.dtype([
    ("instrument_id", "<i8"), ("publisher_id", "<i8"), ("interval_s", "<i8"), ("ts_event", "<i8"),
    ("open", "<i8"), ("high", "<i8"), ("low", "<i8"), ("close", "<i8"), ("volume", "<i8"), ("count", "<i8"),
    ("size_precision", "<i8"),
    ("open_ts", "<i8"), ("open_ord", "<i8"), ("open_dd", "<i8"),
    ("close_ts", "<i8"), ("close_ord", "<i8"), ("close_dd", "<i8"),
])
#: stored bars columns in BUILT_DTYPE order (flags 0 and source 1 are constants)
BUILT_COLUMNS = ("instrument_id", "publisher_id", "interval_s", "ts_event", "open", "high", "low", "close", "volume",
                 "count", "size_precision", "open_ts", "open_ord", "open_dd", "close_ts", "close_ord", "close_dd")


def parse_interval(v) -> int:
    """``"1s"``, ``"5m"``, ``"1h"``, ``"1d"`` or an int of seconds → seconds (> 0). Raises
    ``ConfigError``."""
    if isinstance(v, bool):
        raise ConfigError(f"bar interval {v!r}: expected e.g. '1m'")
    if isinstance(v, int):
        n = v
    else:
        m = re.fullmatch(r"\s*(\d+)\s*([smhd])\s*", str(v))
        if not m:
            raise ConfigError(f"bar interval {v!r}: expected <n>s, <n>m, <n>h or <n>d")
        n = int(m.group(1)) * _UNITS[m.group(2)]
    if n <= 0 or n > 366 * 86400:
        raise ConfigError(f"bar interval {v!r}: must be between 1 s and 366 d")
    return n


def interval_name(seconds: int) -> str:
    for u, k in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds % k == 0:
            return f"{seconds // k}{u}"
    return f"{seconds}s"


@dataclass(frozen=True)
class BarPlan:
    """Which intervals to build per publisher: ``per_publisher`` when listed, else ``default``."""

    default: tuple[int, ...] = DEFAULT_INTERVALS
    per_publisher: dict[int, tuple[int, ...]] = field(default_factory=dict)

    def intervals_for(self, publisher_id: int) -> tuple[int, ...]:
        return self.per_publisher.get(int(publisher_id), self.default)

    def pairs(self, publishers) -> tuple[list[int], list[int]]:
        """(publisher ids, intervals) flattened, one pair per interval built for each publisher."""
        pubs, ivs = [], []
        for p in sorted({int(p) for p in publishers}):
            for iv in self.intervals_for(p):
                pubs.append(p)
                ivs.append(int(iv))
        return pubs, ivs


def parse_bars_section(table: dict) -> dict:
    """Validate ``[bars]`` (see module doc); returns the normalised table. Raises ``ConfigError``."""
    known = {"enabled", "intervals", "exchanges", "live", "live_grace_ms"}
    for k in table:
        if k not in known:
            raise ConfigError(f"bars.{k}: unknown key; known: {sorted(known)}")
    enabled = table.get("enabled", True)
    if not isinstance(enabled, bool):
        raise ConfigError(f"bars.enabled: expected true or false, got {enabled!r}")
    ivs = table.get("intervals", [interval_name(i) for i in DEFAULT_INTERVALS])
    if not isinstance(ivs, (list, tuple)):
        raise ConfigError("bars.intervals: expected a list such as ['1m', '1h']")
    live = table.get("live", True)
    if not isinstance(live, bool):
        raise ConfigError(f"bars.live: expected true or false, got {live!r}")
    grace = table.get("live_grace_ms", 1000)
    if isinstance(grace, bool) or not isinstance(grace, int) or not 0 <= grace <= 86_400_000:
        raise ConfigError(f"bars.live_grace_ms: expected an integer of ms between 0 and 86400000, got {grace!r}")
    out = {"enabled": enabled, "intervals": sorted({parse_interval(v) for v in ivs}), "exchanges": {},
           "live": live, "live_grace_ms": grace}
    ex = table.get("exchanges", {})
    if not isinstance(ex, dict):
        raise ConfigError("bars.exchanges: expected a table EXCHANGE = ['1m', ...]")
    for name, lst in ex.items():
        if not isinstance(lst, (list, tuple)):
            raise ConfigError(f"bars.exchanges.{name}: expected a list such as ['1m', '1h']")
        out["exchanges"][str(name).upper()] = sorted({parse_interval(v) for v in lst})
    return out


def plan_from_config(cfg) -> BarPlan | None:
    """The persister's ``BarPlan`` from a ``dm.config.Config`` (None: bars disabled)."""
    sec = parse_bars_section(dict(cfg.sections.get("bars", {})))
    if not sec["enabled"]:
        return None
    per: dict[int, tuple[int, ...]] = {}
    for p in cfg.providers.values():
        ivs = sec["exchanges"].get(p.exchange.upper())
        if ivs is not None:
            per[int(p.publisher_id)] = tuple(ivs)
    return BarPlan(tuple(sec["intervals"]), per)


def live_plan(cfg, exchange: str) -> tuple[tuple[int, ...], int]:
    """(intervals in seconds, grace in ns) of the live bars a worker of ``exchange`` builds
    (``Fanout.set_bar_intervals``): ``[bars]`` as the persister reads it; () when bars or live
    bars are off. Raises ``ConfigError``."""
    sec = parse_bars_section(dict(cfg.sections.get("bars", {})))
    if not sec["enabled"] or not sec["live"]:
        return (), 0
    ivs = sec["exchanges"].get(str(exchange).upper(), sec["intervals"])
    return tuple(int(v) for v in ivs), int(sec["live_grace_ms"]) * 1_000_000


def trade_order(trades: np.ndarray) -> np.ndarray:
    """Venue order of TRADE records (int64): the trade id, or the sequence when the id is 0."""
    tid = trades["trade_id"].astype(np.int64)
    return np.where(tid != 0, tid, trades["sequence"].astype(np.int64))


def _sorted_columns(trades: np.ndarray, dedup):
    """The trades' columns as int64 (sizes u64) in the order (publisher, instrument, ts_event,
    venue order, dedup): one sort for every interval (a bar start is nondecreasing in ts_event,
    so each bar's trades are contiguous in this order)."""
    from dm.storage.base import dedup_column

    n = len(trades)
    if dedup is None:  # 0 for every trade with an id (dedup_column): no hash to compute then
        dedup = np.zeros(n, np.int64) if (trades["trade_id"] != 0).all() else dedup_column("trades", trades)
    pub0 = trades["publisher_id"].astype(np.int64)
    iid0 = trades["instrument_id"].astype(np.int64)
    ts0 = trades["ts_event"].astype(np.int64)
    ord0 = trade_order(trades)
    dd0 = np.ascontiguousarray(dedup, dtype=np.int64)
    cols = (pub0, iid0, ts0, ord0, dd0, trades["price"].astype(np.int64), trades["size"].astype(np.uint64),
            trades["size_precision"].astype(np.int64))
    if n > 1 and not _in_order((pub0, iid0, ts0, ord0, dd0)):
        o = np.lexsort((dd0, ord0, ts0, iid0, pub0))
        cols = tuple(c[o] for c in cols)
    return cols


def _in_order(keys) -> bool:
    """True when the rows are already ordered by ``keys`` (lexicographically, ties allowed): a
    batch of one instrument in time order (the common case) needs no sort."""
    undecided = np.ones(len(keys[0]) - 1, bool)  # pairs (i, i+1) equal on the keys so far
    for k in keys:
        a, b = k[:-1], k[1:]
        if (undecided & (a > b)).any():
            return False
        undecided &= a == b
        if not undecided.any():
            return True
    return True


def _sorted_result(cols: dict) -> np.ndarray:
    """Per-(publisher, interval) column lists, in publisher then interval order, each ordered by
    (instrument, ts_event) → one ``BUILT_DTYPE`` array ordered by (instrument, publisher,
    interval, ts_event); plain int64 columns (a structured concatenate or sort is ~10x slower)."""
    if not cols["ts_event"]:
        return np.zeros(0, BUILT_DTYPE)
    flat = {c: np.concatenate(v) if len(v) > 1 else v[0] for c, v in cols.items()}
    # the parts come publisher-major, then interval, each ordered by (instrument, ts_event): a
    # stable sort by instrument alone gives (instrument, publisher, interval, ts_event)
    iid = flat["instrument_id"]
    res = np.empty(len(iid), BUILT_DTYPE)
    if len(iid) > 1 and (iid[1:] < iid[:-1]).any():
        o = np.argsort(iid, kind="stable")
        for c, v in flat.items():
            res[c] = v[o]
    else:
        for c, v in flat.items():
            res[c] = v
    return res


def build_bars(trades: np.ndarray, plan: BarPlan, dedup: np.ndarray | None = None) -> np.ndarray:
    """Partial bars (``BUILT_DTYPE``) of TRADE records (or stored trade columns with the same
    field names), one per (instrument, publisher, interval, bar start) they touch, ordered by
    those. ``dedup``: the trades' dedup column (computed when None). Exact integer arithmetic;
    volume saturates at i64 max. One numpy sort, then one C pass per (publisher, interval)
    (``dm._bars.aggregate``); ``build_bars_numpy`` is the same in numpy (tests, bench)."""
    from dm._bars import aggregate

    if len(trades) == 0:
        return np.zeros(0, BUILT_DTYPE)
    pub, iid, ts, ordk, dd, px, sz, sp = _sorted_columns(trades, dedup)
    n = len(pub)
    pb = np.flatnonzero(pub[1:] != pub[:-1]) + 1
    cols: dict[str, list] = {c: [] for c in BUILT_DTYPE.names}
    for a, z in zip([0, *pb.tolist()], [*pb.tolist(), n]):
        p = int(pub[a])
        for iv in sorted(set(plan.intervals_for(p))):
            part = aggregate(iid[a:z], ts[a:z], ordk[a:z], dd[a:z], px[a:z], sz[a:z], sp[a:z], int(iv))
            k = len(part["ts_event"])
            for c, v in part.items():
                cols[c].append(v)
            cols["publisher_id"].append(np.full(k, p, np.int64))
            cols["interval_s"].append(np.full(k, int(iv), np.int64))
    return _sorted_result(cols)


def build_bars_numpy(trades: np.ndarray, plan: BarPlan, dedup: np.ndarray | None = None) -> np.ndarray:
    """``build_bars`` in numpy only (reduceat per interval): the reference the C pass is tested
    against and the library alternative bench_history measures it against."""
    n = len(trades)
    if n == 0:
        return np.zeros(0, BUILT_DTYPE)
    pub, iid, ts, ordk, dd, px, sz, sp = _sorted_columns(trades, dedup)
    # volume: u64 sums of a segment cannot pass i64 max when max size x n cannot (the common case)
    safe = int(sz.max()) * n <= I64_MAX
    pb = np.flatnonzero(pub[1:] != pub[:-1]) + 1
    p_lo = np.concatenate(([0], pb))
    p_hi = np.concatenate((pb, [n]))
    cols: dict[str, list] = {c: [] for c in BUILT_DTYPE.names}
    for a, z in zip(p_lo.tolist(), p_hi.tolist()):
        p = int(pub[a])
        t = ts[a:z]
        ii = iid[a:z]
        i_brk = ii[1:] != ii[:-1]
        seg_px = px[a:z]
        seg_sz = sz[a:z]
        for iv in sorted(set(plan.intervals_for(p))):
            step = np.int64(int(iv) * NS)
            start = t - t % step
            brk = np.flatnonzero(i_brk | (start[1:] != start[:-1])) + 1
            first = np.concatenate(([0], brk))
            last = np.concatenate((brk - 1, [z - a - 1]))
            k = len(first)
            fo, la = first + a, last + a
            cols["instrument_id"].append(ii[first])
            cols["publisher_id"].append(np.full(k, p, np.int64))
            cols["interval_s"].append(np.full(k, int(iv), np.int64))
            cols["ts_event"].append(start[first])
            cols["open"].append(px[fo])
            cols["close"].append(px[la])
            cols["high"].append(np.maximum.reduceat(seg_px, first))
            cols["low"].append(np.minimum.reduceat(seg_px, first))
            vol = np.add.reduceat(seg_sz, first)
            if not safe:  # may wrap: checked against a float sum, exact where near the limit
                approx = np.add.reduceat(seg_sz.astype(np.float64), first)
                over = (approx >= 9.0e18) | (vol > np.uint64(I64_MAX))
                for j in np.flatnonzero(over).tolist():
                    exact = sum(int(x) for x in seg_sz[first[j]:last[j] + 1])
                    vol[j] = np.uint64(min(exact, I64_MAX))
            cols["volume"].append(vol.astype(np.int64))
            cols["count"].append(last - first + 1)
            cols["size_precision"].append(sp[fo])
            cols["open_ts"].append(ts[fo])
            cols["open_ord"].append(ordk[fo])
            cols["open_dd"].append(dd[fo])
            cols["close_ts"].append(ts[la])
            cols["close_ord"].append(ordk[la])
            cols["close_dd"].append(dd[la])
    return _sorted_result(cols)


def merge_sql(dialect: str) -> str:
    """``INSERT INTO bars .. ON CONFLICT DO UPDATE`` merging a partial built bar into the stored
    one (placeholders: ``%s`` for postgres, ``?`` for sqlite; the 17 ``BUILT_COLUMNS``)."""
    ph = "%s" if dialect == "postgres" else "?"
    big, small = ("GREATEST", "LEAST") if dialect == "postgres" else ("max", "min")
    return (
        "INSERT INTO bars (" + ", ".join(BUILT_COLUMNS) + ", flags, source) VALUES ("
        + ", ".join([ph] * len(BUILT_COLUMNS)) + f", 0, {SOURCE_BUILT})" + merge_clause(big, small))


def merge_clause(big: str = "GREATEST", small: str = "LEAST") -> str:
    """The ``ON CONFLICT .. DO UPDATE`` of a built bar (see ``merge_sql``)."""
    o_new = "(excluded.open_ts, excluded.open_ord, excluded.open_dd) < (bars.open_ts, bars.open_ord, bars.open_dd)"
    c_new = "(excluded.close_ts, excluded.close_ord, excluded.close_dd) > (bars.close_ts, bars.close_ord, bars.close_dd)"
    sets = [f"{c} = CASE WHEN {o_new} THEN excluded.{c} ELSE bars.{c} END" for c in ("open", "open_ts", "open_ord", "open_dd")]
    sets += [f"{c} = CASE WHEN {c_new} THEN excluded.{c} ELSE bars.{c} END"
             for c in ("close", "close_ts", "close_ord", "close_dd")]
    sets += [f"high = {big}(bars.high, excluded.high)", f"low = {small}(bars.low, excluded.low)",
             f"volume = CASE WHEN bars.volume > {I64_MAX} - excluded.volume THEN {I64_MAX}"
             " ELSE bars.volume + excluded.volume END",
             'count = bars."count" + excluded."count"']
    return (" ON CONFLICT (instrument_id, publisher_id, interval_s, ts_event, source) DO UPDATE SET "
            + ", ".join(sets))


def built_rows(b: np.ndarray) -> list[tuple]:
    return [tuple(r) for r in np.column_stack([b[c] for c in BUILT_COLUMNS]).tolist()]
