"""Priced backfill: settings, the ledger of jobs / chunks / paid requests, the budget guard, the
fill-gaps dispatcher and the reports behind ``dm backfill estimate|fetch|fill-gaps|status|cost-report``.

Who writes: dm's rule is that the persister is the only writer of the live database. ``dm fetch``
and ``dm backfill`` are operator commands: they write their own idempotent transactions through
``dm.storage`` (records by their unique keys, so a record the live feed already stored is not
stored twice), each chunk's rows committed in ONE transaction with the chunk's ledger update
(``Storage.write(batches, then=...)``), so the ledger never claims rows that are not stored and
a crash never loses the knowledge of what was paid for and stored.

Money is integer nano-USD (1e-9 USD, dm's fixed point). Databento prices per GB of billable
bytes, and with GB = 10^9 bytes a price in USD/GB *is* nano-USD per byte, so a quote is exact.

The engine that fetches (``dm.databento.historical``) is one *gap filler*; venue fillers
(Binance ``aggTrades``, Kraken ``Trades``, Kraken Futures history) register with
``register_filler`` later. ``fill_gaps`` routes every open gap of the ledger to its instrument's
historical provider and marks it ``filled`` (with the job ids) or ``unfillable`` (with the reason);
gaps nobody can fill yet stay ``open``.
"""
from __future__ import annotations

import dataclasses
import hashlib
import os
import socket
import time
import tomllib
from decimal import ROUND_HALF_EVEN, Decimal
from pathlib import Path
from typing import Any, Callable, Iterable, Protocol

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from dm.databento.config import DatabentoConfig
from dm.errors import BackfillError, BudgetRefused, ConfigError
from dm.log import get as get_log
from dm.routing import RoutingConfig

__all__ = [
    "BackfillConfig", "Settings", "load_settings", "parse_settings", "Ledger", "Verdict",
    "budget_verdict", "usd", "nano_usd", "fill_gaps", "register_filler", "FILLERS", "GapTarget",
    "GapPlan", "BOOK_DELTA_GAP_KINDS",
]

log = get_log("dm.backfill")
NS_PER_DAY = 86_400 * 1_000_000_000
NANO = Decimal(1_000_000_000)


# --- settings -------------------------------------------------------------------------------
class BackfillConfig(BaseModel):
    """``[backfill]``: the budget guard and the engine's limits.

    * ``auto_approve_usd``: a request costing at most this runs without ``--confirm``;
    * ``max_request_usd``, ``max_daily_usd``, ``max_monthly_usd``: a request above the first, or
      that would take the spend of the current UTC day / month above the others, is refused even
      with ``--confirm`` (exit status 4, the numbers printed); between auto-approve and the limits
      it needs ``--confirm`` (exit status 3 without);
    * ``max_symbols_per_chunk`` (≤ 2,000: Databento's per-request limit), ``batch_rows`` (dm
      records per commit inside a chunk: DBN trades/mbp records make two each), ``max_retries`` (5xx / timeouts per request, exponential backoff
      from ``backoff_base_s`` to ``backoff_max_s``), ``max_rate_limit_waits`` (429s per request,
      each waiting its ``Retry-After`` up to ``max_retry_after_s``), ``work_dir`` (downloads)."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    auto_approve_usd: float = Field(default=1.0, ge=0)
    max_request_usd: float = Field(default=100.0, ge=0)
    max_daily_usd: float = Field(default=200.0, ge=0)
    max_monthly_usd: float = Field(default=1000.0, ge=0)
    max_symbols_per_chunk: int = Field(default=2000, ge=1, le=2000)
    batch_rows: int = Field(default=250_000, ge=1000)
    max_retries: int = Field(default=5, ge=0, le=100)
    backoff_base_s: float = Field(default=1.0, ge=0)
    backoff_max_s: float = Field(default=60.0, ge=0)
    max_rate_limit_waits: int = Field(default=20, ge=0)
    max_retry_after_s: float = Field(default=600.0, gt=0)
    work_dir: str = "var/backfill"

    @model_validator(mode="after")
    def _order(self):
        if self.auto_approve_usd > self.max_request_usd:
            raise ValueError(f"auto_approve_usd ({self.auto_approve_usd}) must not exceed max_request_usd ({self.max_request_usd})")
        return self

    def nano(self, name: str) -> int:
        return nano_usd(getattr(self, name))


@dataclasses.dataclass(frozen=True)
class Settings:
    """The sections this module owns, parsed from the same TOML file as ``dm.config``."""

    routing: RoutingConfig = RoutingConfig()
    backfill: BackfillConfig = BackfillConfig()
    databento: DatabentoConfig = DatabentoConfig()


_SECTIONS = {"routing": RoutingConfig, "backfill": BackfillConfig, "databento": DatabentoConfig}


def parse_settings(raw: dict) -> Settings:
    """``[routing]``, ``[backfill]``, ``[databento]`` of a parsed TOML document (other sections
    are ``dm.config``'s). Raises ``ConfigError`` naming the key of the first problem."""
    out = {}
    for name, model in _SECTIONS.items():
        data = raw.get(name, {})
        if not isinstance(data, dict):
            raise ConfigError(f"[{name}] must be a table, got {type(data).__name__}")
        try:
            out[name] = model.model_validate(data)
        except ValidationError as e:
            err = e.errors()[0]
            where = ".".join(str(x) for x in err["loc"])
            what = err["msg"].removeprefix("Value error, ")
            raise ConfigError(f"[{name}]{'.' + where if where else ''}: {what}"
                              + (f" (got {err['input']!r})" if err.get("type") != "extra_forbidden" and "input" in err
                                 and not isinstance(err["input"], dict) else "")) from None
    return Settings(**out)


def parse_routing_section(table: dict) -> None:
    """``dm.config`` validates ``[routing]`` at load through this (raises ``ConfigError``)."""
    parse_settings({"routing": table})


def parse_backfill_section(table: dict) -> None:
    """``dm.config`` validates ``[backfill]`` at load through this (raises ``ConfigError``)."""
    parse_settings({"backfill": table})


def parse_databento_section(table: dict) -> None:
    """``dm.config`` validates ``[databento]`` at load through this (raises ``ConfigError``)."""
    parse_settings({"databento": table})


def load_settings(path: str | os.PathLike) -> Settings:
    p = Path(path)
    try:
        return parse_settings(tomllib.loads(p.read_text()))
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {p}") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{p}: {e}") from None


# --- money ----------------------------------------------------------------------------------
def nano_usd(value: float | int | str | Decimal) -> int:
    """USD → integer nano-USD, exact for what a float's shortest repr says (Databento's
    ``get_cost`` answers a JSON float), half-even at the 9th decimal."""
    d = value if isinstance(value, Decimal) else Decimal(repr(value) if isinstance(value, float) else str(value))
    return int((d * NANO).to_integral_value(ROUND_HALF_EVEN))


def usd(nano: int) -> str:
    """``$1.234567891`` (trailing zeros dropped, at least 2 decimals)."""
    s = f"{Decimal(int(nano)) / NANO:.9f}".rstrip("0")
    whole, _, frac = s.partition(".")
    return f"${whole}.{frac.ljust(2, '0')}"


# --- budget ---------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Verdict:
    """The budget guard's answer for a request of ``request_nano``: ``decision`` is ``"run"``
    (under auto-approve, or confirmed), ``"confirm"`` (needs ``--confirm``) or ``"refuse"``
    (beyond a limit: ``reasons``)."""

    decision: str
    request_nano: int
    auto_approve_nano: int
    max_request_nano: int
    spent_today_nano: int
    max_daily_nano: int
    spent_month_nano: int
    max_monthly_nano: int
    reasons: tuple[str, ...] = ()

    def describe(self) -> str:
        head = {"run": "approved", "confirm": "needs --confirm", "refuse": "REFUSED"}[self.decision]
        nums = (f"request {usd(self.request_nano)} (auto-approve {usd(self.auto_approve_nano)}, max request "
                f"{usd(self.max_request_nano)}); today {usd(self.spent_today_nano)} + request of max "
                f"{usd(self.max_daily_nano)}; this month {usd(self.spent_month_nano)} + request of max "
                f"{usd(self.max_monthly_nano)}")
        return f"budget: {head}: {nums}" + (f" — {'; '.join(self.reasons)}" if self.reasons else "")

    def as_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d.update({k.replace("_nano", "_usd"): usd(v) for k, v in d.items() if k.endswith("_nano")})
        d["reasons"] = list(self.reasons)
        return d


def budget_verdict(cfg: BackfillConfig, request_nano: int, spent_today_nano: int, spent_month_nano: int,
                   confirm: bool) -> Verdict:
    """Apply ``[backfill]``'s guard (see ``BackfillConfig``) to a request's quoted cost."""
    lim = {k: cfg.nano(k) for k in ("auto_approve_usd", "max_request_usd", "max_daily_usd", "max_monthly_usd")}
    reasons = []
    if request_nano > lim["max_request_usd"]:
        reasons.append(f"request {usd(request_nano)} > max_request_usd {usd(lim['max_request_usd'])}")
    if spent_today_nano + request_nano > lim["max_daily_usd"]:
        reasons.append(f"today's spend {usd(spent_today_nano)} + {usd(request_nano)} > max_daily_usd {usd(lim['max_daily_usd'])}")
    if spent_month_nano + request_nano > lim["max_monthly_usd"]:
        reasons.append(f"this month's spend {usd(spent_month_nano)} + {usd(request_nano)} > max_monthly_usd {usd(lim['max_monthly_usd'])}")
    if reasons:
        decision = "refuse"
    elif request_nano <= lim["auto_approve_usd"] or confirm:
        decision = "run"
    else:
        decision = "confirm"
        reasons.append(f"{usd(request_nano)} is above auto_approve_usd {usd(lim['auto_approve_usd'])}: rerun with --confirm")
    return Verdict(decision, request_nano, lim["auto_approve_usd"], lim["max_request_usd"], spent_today_nano,
                   lim["max_daily_usd"], spent_month_nano, lim["max_monthly_usd"], tuple(reasons))


def enforce(verdict: Verdict) -> None:
    """Raise ``BudgetRefused`` unless the verdict is ``run``."""
    if verdict.decision != "run":
        raise BudgetRefused(verdict.describe(), verdict, needs_confirm=verdict.decision == "confirm")


def month_start_ns(now_ns: int) -> int:
    import datetime as dt

    d = dt.datetime.fromtimestamp(now_ns // 1_000_000_000, dt.timezone.utc)
    return int(dt.datetime(d.year, d.month, 1, tzinfo=dt.timezone.utc).timestamp()) * 1_000_000_000


# --- ledger ---------------------------------------------------------------------------------
def owner_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def job_key(provider: str, dataset: str, schema: str, stype_in: str, symbols: Iterable[str], start_ns: int,
            end_ns: int, exchange: str, gap_id: int | None = None) -> str:
    """The identity of a request: the same request finds the same job (and skips what is done)."""
    syms = ",".join(sorted(symbols))
    h = hashlib.blake2b(syms.encode(), digest_size=12).hexdigest()
    return f"{provider}|{dataset}|{schema}|{stype_in}|{exchange}|{start_ns}|{end_ns}|{'' if gap_id is None else gap_id}|{h}"


class Ledger:
    """``backfill_jobs`` / ``backfill_chunks`` / ``backfill_requests`` (migration 005) on a
    ``Storage``. Every statement runs through ``Storage.write({}, then=...)`` (or with rows:
    ``commit_rows``), i.e. in a committed transaction of the storage's own connection."""

    def __init__(self, storage):
        self.st = storage
        self._pg = storage.backend == "postgresql"

    # -- plumbing ----------------------------------------------------------------------------
    def _sql(self, q: str) -> str:
        return q.replace("?", "%s") if self._pg else q

    def run(self, fn: Callable[[Any], Any]) -> Any:
        """``fn(cursor)`` in one committed transaction; returns its result."""
        return self.commit({}, lambda c, _inserted: fn(c))[0]

    def commit(self, batches: dict, fn: Callable[[Any, dict[str, int]], Any]) -> tuple[Any, dict[str, int]]:
        """Store ``batches`` and run ``fn(cursor, {table: rows inserted})`` in ONE transaction.
        Returns (fn's result, rows inserted per table)."""
        box = []

        def then(cur, inserted):
            box.append(fn(_Cursor(cur, self._sql), inserted))
        written = self.st.write(batches, then=then)
        return box[0], written

    def query(self, q: str, params: tuple = ()) -> list[dict]:
        return self.run(lambda c: c.all(q, params))

    # -- jobs --------------------------------------------------------------------------------
    def find_job(self, key: str) -> dict | None:
        rows = self.query("SELECT * FROM backfill_jobs WHERE key = ?", (key,))
        return rows[0] if rows else None

    def job(self, job_id: int) -> dict | None:
        rows = self.query("SELECT * FROM backfill_jobs WHERE id = ?", (int(job_id),))
        return rows[0] if rows else None

    def jobs(self) -> list[dict]:
        return self.query("SELECT * FROM backfill_jobs ORDER BY id")

    def chunks(self, job_id: int | None = None) -> list[dict]:
        if job_id is None:
            return self.query("SELECT * FROM backfill_chunks ORDER BY id")
        return self.query("SELECT * FROM backfill_chunks WHERE job_id = ? ORDER BY start_ns, id", (int(job_id),))

    def covering(self, dataset: str, schema: str, stype_in: str, lo: int, hi: int) -> list[dict]:
        """Chunks of any job (same dataset, schema, stype_in) whose stored prefix
        ``[start_ns, resume_ns)`` overlaps ``[lo, hi)``."""
        return self.query(
            "SELECT id, job_id, symbols, start_ns, resume_ns FROM backfill_chunks WHERE dataset = ? AND schema = ?"
            " AND stype_in = ? AND start_ns < ? AND resume_ns > ? AND resume_ns > start_ns",
            (dataset, schema, stype_in, int(hi), int(lo)))

    def create_job(self, key: str, command: str, provider: str, dataset: str, schema: str, stype_in: str,
                   symbols: Iterable[str], exchange: str, start_ns: int, end_ns: int, gap_id: int | None,
                   chunks: list[tuple[str, int, int, int, int, int]], now: int) -> int:
        """Insert a job and its chunks ``[(symbols, start_ns, end_ns, q_records, q_bytes, q_usd_nano)]``
        in one transaction; returns the job id (an existing job with ``key`` wins a race)."""
        def fn(c):
            row = c.one("SELECT id FROM backfill_jobs WHERE key = ?", (key,))
            if row:
                return int(row["id"])
            jid = c.insert(
                "INSERT INTO backfill_jobs (key, command, provider, dataset, schema, stype_in, symbols, exchange,"
                " start_ns, end_ns, gap_id, state, quoted_records, quoted_bytes, quoted_usd_nano, created_ns, updated_ns)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'planned', ?, ?, ?, ?, ?)",
                (key, command, provider, dataset, schema, stype_in, ",".join(sorted(symbols)), exchange, int(start_ns),
                 int(end_ns), gap_id, sum(x[3] for x in chunks), sum(x[4] for x in chunks), sum(x[5] for x in chunks), now, now))
            for syms, a, b, qr, qb, qu in chunks:
                c.insert(
                    "INSERT INTO backfill_chunks (job_id, dataset, schema, stype_in, symbols, start_ns, end_ns, resume_ns,"
                    " state, quoted_records, quoted_bytes, quoted_usd_nano, created_ns, updated_ns)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, 'pending', ?, ?, ?, ?, ?)",
                    (jid, dataset, schema, stype_in, syms, int(a), int(b), int(a), int(qr), int(qb), int(qu), now, now))
            return jid
        return self.run(fn)

    def claim_job(self, job_id: int, stale_after_ns: int = 600 * 1_000_000_000) -> None:
        """Mark a job ``running`` by this process; ``BackfillError`` when another live process runs it."""
        me = owner_id()
        now = time.time_ns()

        def fn(c):
            row = c.one("SELECT state, owner, updated_ns FROM backfill_jobs WHERE id = ?", (int(job_id),))
            if row and row["state"] == "running" and row["owner"] and row["owner"] != me:
                host, _, pid = row["owner"].rpartition(":")
                last = c.one("SELECT coalesce(max(updated_ns), 0) AS t FROM backfill_chunks WHERE job_id = ?", (int(job_id),))
                alive = now - max(int(row["updated_ns"]), int(last["t"])) < stale_after_ns  # chunks commit as it goes
                if host == socket.gethostname():
                    alive = _pid_alive(int(pid))
                if alive:
                    raise BackfillError(f"backfill job {job_id} is being run by {row['owner']}")
            c.exec("UPDATE backfill_jobs SET state = 'running', owner = ?, updated_ns = ? WHERE id = ?", (me, now, int(job_id)))
        self.run(fn)

    def finish_job(self, job_id: int, state: str, detail: str = "") -> None:
        self.run(lambda c: c.exec("UPDATE backfill_jobs SET state = ?, detail = ?, owner = '', updated_ns = ? WHERE id = ?",
                                  (state, detail, time.time_ns(), int(job_id))))

    def fail_chunk(self, chunk_id: int, error: str) -> None:
        self.run(lambda c: c.exec("UPDATE backfill_chunks SET state = 'failed', error = ?, updated_ns = ? WHERE id = ?",
                                  (error, time.time_ns(), int(chunk_id))))

    def mark_chunk_done(self, chunk_id: int, detail: str = "") -> None:
        """A chunk with nothing to fetch (the provider has no records in its window)."""
        self.run(lambda c: c.exec("UPDATE backfill_chunks SET state = 'done', resume_ns = end_ns, error = ?, updated_ns = ?"
                                  " WHERE id = ?", (detail, time.time_ns(), int(chunk_id))))

    # -- spend -------------------------------------------------------------------------------
    def spent_since(self, since_ns: int) -> int:
        rows = self.query("SELECT coalesce(sum(usd_nano), 0) AS s FROM backfill_requests WHERE ts_ns >= ?", (int(since_ns),))
        return int(rows[0]["s"])

    def spent_today_and_month(self, now_ns: int | None = None) -> tuple[int, int]:
        now = time.time_ns() if now_ns is None else now_ns
        return self.spent_since(now // NS_PER_DAY * NS_PER_DAY), self.spent_since(month_start_ns(now))

    def cost_report(self) -> dict:
        """Spend per UTC day, month, dataset, schema and chunk (from the paid requests), totals."""
        reqs = self.query("SELECT r.ts_ns, r.dataset, r.schema, r.records, r.bytes, r.usd_nano, r.chunk_id, r.outcome"
                          " FROM backfill_requests r ORDER BY r.id")
        import datetime as dt

        def day(ns):
            return (dt.date(1970, 1, 1) + dt.timedelta(days=int(ns) // NS_PER_DAY)).isoformat()

        out: dict[str, Any] = {k: {} for k in ("day", "month", "dataset", "schema", "chunk")}
        total = {"requests": 0, "records": 0, "bytes": 0, "usd_nano": 0}
        for r in reqs:
            keys = {"day": day(r["ts_ns"]), "month": day(r["ts_ns"])[:7], "dataset": r["dataset"], "schema": r["schema"],
                    "chunk": str(r["chunk_id"])}
            for group, k in keys.items():
                acc = out[group].setdefault(k, {"requests": 0, "records": 0, "bytes": 0, "usd_nano": 0})
                acc["requests"] += 1
                acc["records"] += int(r["records"])
                acc["bytes"] += int(r["bytes"])
                acc["usd_nano"] += int(r["usd_nano"])
            total["requests"] += 1
            total["records"] += int(r["records"])
            total["bytes"] += int(r["bytes"])
            total["usd_nano"] += int(r["usd_nano"])
        quotes = {str(c["id"]): c for c in self.query("SELECT id, job_id, schema, start_ns, end_ns, quoted_usd_nano, usd_nano FROM backfill_chunks")}
        for k, acc in out["chunk"].items():
            c = quotes.get(k)
            if c is not None:
                acc.update(job_id=int(c["job_id"]), start_ns=int(c["start_ns"]), end_ns=int(c["end_ns"]),
                           quoted_usd_nano=int(c["quoted_usd_nano"]))
        out["total"] = total
        return out


class _Cursor:
    """A DB-API cursor with dm's ``?`` placeholders on both backends and dict rows."""

    def __init__(self, cur, sql: Callable[[str], str]):
        self.cur, self.sql = cur, sql

    def exec(self, q: str, params: tuple = ()):
        self.cur.execute(self.sql(q), params)
        return self.cur

    def all(self, q: str, params: tuple = ()) -> list[dict]:
        cur = self.exec(q, params)
        names = [d[0] for d in cur.description]
        return [dict(zip(names, r)) for r in cur.fetchall()]

    def one(self, q: str, params: tuple = ()) -> dict | None:
        rows = self.all(q, params)
        return rows[0] if rows else None

    def insert(self, q: str, params: tuple = ()) -> int:
        cur = self.exec(q + " RETURNING id", params)
        return int(cur.fetchone()[0])


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


# --- fill-gaps ------------------------------------------------------------------------------
#: Gap kinds that lose only L2 book deltas, which no venue serves again: the book was resynced
#: from a fresh snapshot (dm.booksync), so the deltas in the window are gone for good. Binance
#: spot has no historical diff-depth endpoint (Binance Spot API docs, "Market Data endpoints":
#: only the current ``/api/v3/depth`` snapshot); Kraken spot v1 books and Kraken Futures books
#: likewise only as a current snapshot (Kraken REST "Get Order Book"; Futures "orderbook").
BOOK_DELTA_GAP_KINDS: dict[str, str] = {
    "binance.update_id": "Binance diff-depth updates cannot be refetched (REST serves only the current depth snapshot); the book was resynced from a snapshot",
    "kraken.checksum": "Kraken book updates cannot be refetched (REST serves only the current book); the book was resynced from a new subscription snapshot",
    "kraken_futures.seq": "Kraken Futures book deltas cannot be refetched (REST serves only the current book); the book was resynced from a new subscription snapshot",
}
#: historical providers that can refetch book data (Databento serves mbp-1/mbp-10 history)
BOOK_HISTORY_PROVIDERS = {"databento"}


@dataclasses.dataclass(frozen=True)
class GapTarget:
    """One instrument of a gap with its route: ``symbol``/``exchange`` from the registry."""

    instrument_id: int
    symbol: str
    exchange: str
    routed: Any  # dm.routing.Routed


@dataclasses.dataclass
class GapPlan:
    """What a filler will do for one gap: its ``cost_nano`` (quoted, 0 for free venue REST),
    ``opaque`` filler state, and a human ``summary``."""

    gap: dict
    filler: str
    cost_nano: int
    summary: str
    opaque: Any = None


class GapFiller(Protocol):
    """A historical provider that can fill gaps (``register_filler(provider, factory)``;
    ``factory(storage, settings, **kw) -> GapFiller``)."""

    def plan_gap(self, gap: dict, targets: list[GapTarget], start_ns: int, end_ns: int) -> GapPlan: ...

    def fill(self, plan: GapPlan) -> tuple[list[int], int]:
        """Fetch and store; returns (job ids, rows stored). Raises ``BackfillError``."""


FILLERS: dict[str, Callable[..., GapFiller]] = {}


def register_filler(provider: str, factory: Callable[..., GapFiller]) -> None:
    """Make ``provider`` (a route's ``historical`` value) able to fill gaps."""
    FILLERS[provider] = factory


def _venue_id_gap_kinds(provider: str) -> frozenset[str]:
    """Gap kinds counting a venue's trade ids that its filler refetches by id (the venue
    descriptor's ``id_gap_kinds``, ``dm.venues``); none for other providers."""
    from dm import venues

    return frozenset(venues.venue(provider).id_gap_kinds) if provider in venues.kinds() else frozenset()


def _lazy_factory(target: str) -> Callable[..., GapFiller]:
    def factory(storage, settings, **kw):
        import importlib

        mod, _, name = target.partition(":")
        return getattr(importlib.import_module(mod), name)(storage, settings, **kw)
    return factory


def _default_fillers() -> None:
    if "databento" not in FILLERS:
        from dm.databento.historical import DatabentoGapFiller

        register_filler("databento", DatabentoGapFiller)
    from dm import venues

    for v in venues.venues():  # each venue's REST trade filler, named in its descriptor
        if v.filler is not None and v.kind not in FILLERS:
            register_filler(v.kind, _lazy_factory(v.filler))


def gap_window_ns(gap: dict) -> tuple[int, int] | None:
    """``[start, end)`` in ns of a gap measured in time, else None. ``units`` 1 = ns
    (``dm.records.GapUnits.NS``); ledgers before migration 004 have no units column: there a
    window whose both ends are ≥ 1e18 (after 2001-09-09) is taken as ns (venue sequence numbers
    and update ids are far smaller)."""
    units = gap.get("units")
    first, last = int(gap["first_missing"]), int(gap["last_missing"])
    if units is None:
        units = 1 if first >= 10**18 and last >= 10**18 else 0
    if int(units) != 1 or last < first:
        return None
    return first, last + 1


@dataclasses.dataclass
class FillOutcome:
    gap_id: int
    state: str  # filled | unfillable | open | failed | planned
    detail: str
    cost_nano: int = 0
    rows: int = 0
    jobs: tuple[int, ...] = ()


def fill_gaps(storage, settings: Settings, *, confirm: bool = False, dry_run: bool = False,
              gap_ids: Iterable[int] | None = None, filler_kw: dict | None = None,
              now_ns: int | None = None) -> tuple[list[FillOutcome], Verdict | None]:
    """Route every open gap (or ``gap_ids``) to its filler, price the lot, apply the budget
    guard, fill, and mark each gap. Returns (one outcome per gap, the verdict or None when
    nothing costs). Raises ``BudgetRefused`` (nothing fetched) when the guard says no."""
    from dm.instruments import InstrumentRegistry
    from dm.routing import Router

    _default_fillers()
    router = Router(settings.routing)
    registry = InstrumentRegistry(storage)
    wanted = None if gap_ids is None else {int(g) for g in gap_ids}
    gaps = [g for g in storage.gaps("open") if wanted is None or int(g["id"]) in wanted]
    outcomes: list[FillOutcome] = []
    fillers: dict[str, GapFiller] = {}
    plans: list[GapPlan] = []
    for g in gaps:
        gid = int(g["id"])
        targets, why = _targets(g, registry, router)
        if not targets:
            outcomes.append(FillOutcome(gid, "open", why))
            continue
        providers = {t.routed.route.historical for t in targets}
        if len(providers) > 1:
            outcomes.append(FillOutcome(gid, "open", f"instruments route to several providers {sorted(providers)}"))
            continue
        provider = providers.pop()
        kind = str(g["kind"])
        if kind in BOOK_DELTA_GAP_KINDS and provider not in BOOK_HISTORY_PROVIDERS:
            reason = BOOK_DELTA_GAP_KINDS[kind]
            if not dry_run:
                storage.update_gap(gid, "unfillable", reason)
            outcomes.append(FillOutcome(gid, "unfillable", reason))
            continue
        if provider == "none":
            outcomes.append(FillOutcome(gid, "open", f"no historical provider routes {targets[0].symbol}"))
            continue
        if provider not in FILLERS:
            outcomes.append(FillOutcome(gid, "open", f"no gap filler for provider {provider!r} yet"))
            continue
        window = gap_window_ns(g)
        by_id = window is None and kind in _venue_id_gap_kinds(provider)
        if window is None and not by_id:
            outcomes.append(FillOutcome(gid, "open", f"{provider} fills time windows; this gap counts sequence numbers"))
            continue
        filler = fillers.get(provider)
        if filler is None:
            filler = fillers[provider] = FILLERS[provider](storage, settings, **(filler_kw or {}))
        if by_id:  # exact by id continuity: first..last missing venue trade ids
            plans.append(filler.plan_id_gap(g, targets, int(g["first_missing"]), int(g["last_missing"])))
        else:
            plans.append(filler.plan_gap(g, targets, *window))
    total = sum(p.cost_nano for p in plans)
    verdict = None
    if plans:
        ledger = Ledger(storage)
        verdict = budget_verdict(settings.backfill, total, *ledger.spent_today_and_month(now_ns), confirm)
    if dry_run:
        outcomes += [FillOutcome(int(p.gap["id"]), "planned", p.summary, p.cost_nano) for p in plans]
        return sorted(outcomes, key=lambda o: o.gap_id), verdict
    if verdict is not None:
        enforce(verdict)
    for p in plans:
        gid = int(p.gap["id"])
        try:
            jobs, rows = fillers[p.filler].fill(p)
        except BackfillError as e:
            log.error("fill-gaps: gap not filled", gap_id=gid, error=str(e))
            outcomes.append(FillOutcome(gid, "failed", str(e), p.cost_nano))
            continue
        detail = f"filled by backfill job{'s' if len(jobs) != 1 else ''} {', '.join(map(str, jobs))}: {rows} rows stored"
        storage.update_gap(gid, "filled", detail)
        outcomes.append(FillOutcome(gid, "filled", detail, p.cost_nano, rows, tuple(jobs)))
    return sorted(outcomes, key=lambda o: o.gap_id), verdict


def _targets(g: dict, registry, router) -> tuple[list[GapTarget], str]:
    iid = int(g["instrument_id"])
    if iid:
        inst = registry.by_id(iid)
        if inst is None:
            return [], f"instrument {iid} is not in the registry"
        insts = [inst]
    else:
        pub = g.get("publisher_id")
        if pub is None:
            return [], "gap of every instrument of a publisher, but the ledger has no publisher_id"
        insts = [i for i in registry if i.publisher_id == int(pub)]
        if not insts:
            return [], f"no registered instrument of publisher {pub}"
    return [GapTarget(i.instrument_id, i.symbol, i.exchange, router.route(i.symbol, exchange=i.exchange)) for i in insts], ""


# --- progress -------------------------------------------------------------------------------
class LogProgress:
    """Progress as log lines (not a terminal): one line per finished chunk and per job."""

    def __init__(self):
        self.desc = ""
        self.total = self.done_chunks = self.records = self.bytes = self.usd_nano = 0

    def start(self, desc: str, chunks: int, records: int, nbytes: int, usd_nano: int) -> None:
        self.desc, self.total = desc, chunks
        self.done_chunks = self.records = self.bytes = self.usd_nano = 0
        log.info("backfill start", job=desc, chunks=chunks, records=records, bytes=nbytes, usd=usd(usd_nano))

    def advance(self, chunks: int = 0, records: int = 0, bytes: int = 0, usd_nano: int = 0) -> None:
        self.done_chunks += chunks
        self.records += records
        self.bytes += bytes
        self.usd_nano += usd_nano
        if chunks:
            log.info("backfill progress", job=self.desc, chunks=f"{self.done_chunks}/{self.total}", records=self.records,
                     bytes=self.bytes, usd=usd(self.usd_nano))

    def done(self) -> None:
        pass


class RichProgress:
    """A progress bar on a terminal (rich): chunks, records, bytes, USD."""

    def __init__(self, console=None):
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self._p = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("chunks"),
                           TextColumn("{task.fields[stats]}"), TimeElapsedColumn(),
                           console=console or Console(stderr=True), transient=False)
        self._task = None
        self.records = self.bytes = self.usd_nano = 0
        self._want = (0, 0, 0)

    def _stats(self) -> str:
        return (f"{self.records:,}/{self._want[0]:,} records  {self.bytes / 1e6:,.1f}/{self._want[1] / 1e6:,.1f} MB  "
                f"{usd(self.usd_nano)}/{usd(self._want[2])}")

    def start(self, desc: str, chunks: int, records: int, nbytes: int, usd_nano: int) -> None:
        self.records = self.bytes = self.usd_nano = 0
        self._want = (records, nbytes, usd_nano)
        self._p.start()
        self._task = self._p.add_task(desc, total=chunks, stats=self._stats())

    def advance(self, chunks: int = 0, records: int = 0, bytes: int = 0, usd_nano: int = 0) -> None:
        self.records += records
        self.bytes += bytes
        self.usd_nano += usd_nano
        if self._task is not None:
            self._p.update(self._task, advance=chunks, stats=self._stats())

    def done(self) -> None:
        self._p.stop()


def make_progress(tty: bool | None = None):
    """A rich bar when stderr is a terminal, log lines otherwise."""
    import sys

    if tty is None:
        tty = sys.stderr.isatty()
    if tty:
        try:
            return RichProgress()
        except ImportError:  # rich not installed: log lines
            pass
    return LogProgress()
