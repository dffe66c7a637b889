"""The Databento historical engine behind ``dm fetch`` and ``dm backfill estimate|fetch|fill-gaps``.

Every HTTP call goes through the official client ``databento`` (``databento.Historical``; 0.88):
``metadata.get_dataset_range`` and ``symbology.resolve`` to plan, ``metadata.get_record_count`` /
``get_billable_size`` / ``get_cost`` to quote (these are free), ``timeseries.get_range`` to fetch
(billed by bytes sent).

A request (dataset, schema, symbols, stype_in, [start, end)) is cut into **chunks**: one UTC day
× at most ``max_symbols_per_chunk`` (≤ 2,000, Databento's per-request limit) symbols, only the
days each symbol resolves on, minus what other jobs already stored for the same symbols (the
ledger's chunks: data already stored is never requested again). Each chunk is quoted, fetched to
a file in ``work_dir`` (the client writes it; a cut stream leaves its prefix there), converted by
dm's DBN converter (``dm.dbn.DbnConverter``: TRADE/BBO/DEPTH/BAR + MBP_EVENT, losslessly), its
Databento instrument ids mapped to dm instrument ids (Databento's ids are the venue's and are
reused across days: each chunk maps them through the DBN metadata's symbol mappings, or
``symbology.resolve`` instrument_id → raw_symbol for parent/continuous requests, then
``InstrumentRegistry`` on (raw symbol, route exchange), as ``dm/dbn.py`` describes) and stored with
``Storage.write`` in batches of ``batch_rows``, each batch committed together with the chunk's
ledger row (rows, bytes, USD, and ``resume_ns``: everything of the chunk before it is stored).

Resume: records arrive sorted by the schema's index time (``ts_recv``, or ``ts_event`` for OHLCV:
Databento filters ``start``/``end`` on it). A batch stores the records strictly before its last
index time and carries that time's records to the next batch, so ``resume_ns`` is always exact. A
cut stream (network failure mid-body) stores what arrived; whether the last time's records are
complete is asked with a free ``get_record_count`` over ``[t, t + 1 ns)``: complete → stored and the
resume starts at ``t + 1``; incomplete → dropped and the resume starts at ``t``. The next request
asks for ``[resume_ns, end)`` only.

Errors: 429 waits ``Retry-After`` (bounded); 5xx, 408 and timeouts / connection failures back off
exponentially, at most ``max_retries`` times per call; any other 4xx fails the chunk with the
gateway's ``case: message`` (the other chunks go on). The API key never reaches a log or an error
message (``redact``).
"""
from __future__ import annotations

import contextlib
import dataclasses
import datetime as _dt
import gc
import os
import queue
import random
import threading
import time
import uuid
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import numpy as np

from dm.backfill import GapPlan, GapTarget, Ledger, Settings, budget_verdict, enforce, job_key, usd
from dm.databento.config import redact
from dm.databento.times import NS_PER_DAY, iso, iso_date
from dm.dbn import ZSTD_MAGIC, DbnConverter, DbnError, split_records
from dm.errors import BackfillError
from dm.log import get as get_log
from dm.records import DTYPES, RType
from dm.routing import SCHEMAS

__all__ = ["FetchRequest", "Quote", "ChunkPlan", "JobPlan", "JobResult", "DatabentoHistorical", "DatabentoGapFiller"]

log = get_log("dm.databento.historical")
PROVIDER = "databento"
_CA_LOCK = threading.Lock()
_CA_STATE: dict[str, Any] = {"users": 0, "saved": None}
READ_BLOCK = 1 << 20


@dataclasses.dataclass(frozen=True)
class FetchRequest:
    """One historical request. Times ns since the epoch, ``[start_ns, end_ns)``; ``exchange``
    is the dm registry exchange its instruments are stored under (the route's)."""

    dataset: str
    schema: str
    symbols: tuple[str, ...]
    stype_in: str
    start_ns: int
    end_ns: int
    exchange: str
    command: str = "fetch"
    gap_id: int | None = None

    @property
    def key(self) -> str:
        return job_key(PROVIDER, self.dataset, self.schema, self.stype_in, self.symbols, self.start_ns, self.end_ns,
                       self.exchange, self.gap_id)

    def describe(self) -> str:
        syms = ",".join(self.symbols[:5]) + (f",… ({len(self.symbols)})" if len(self.symbols) > 5 else "")
        return f"{self.dataset} {self.schema} {syms} [{iso(self.start_ns)}, {iso(self.end_ns)})"


@dataclasses.dataclass(frozen=True)
class Quote:
    """The free metadata calls' answer for one window: records, billable bytes, nano-USD."""

    records: int = 0
    bytes: int = 0
    usd_nano: int = 0

    def __add__(self, o: "Quote") -> "Quote":
        return Quote(self.records + o.records, self.bytes + o.bytes, self.usd_nano + o.usd_nano)


@dataclasses.dataclass
class ChunkPlan:
    """A chunk: ``symbols`` over ``[start_ns, end_ns)``; ``[start_ns, resume_ns)`` is stored.
    ``quote`` prices what is left (``[resume_ns, end_ns)``), ``full`` the whole window (the
    billing rate). ``state``: new | pending | partial | failed | done."""

    symbols: tuple[str, ...]
    start_ns: int
    end_ns: int
    resume_ns: int
    state: str
    quote: Quote
    full: Quote
    chunk_id: int | None = None


@dataclasses.dataclass
class JobPlan:
    request: FetchRequest
    job_id: int | None
    chunks: list[ChunkPlan]
    not_found: list[str] = dataclasses.field(default_factory=list)
    notes: list[str] = dataclasses.field(default_factory=list)

    @property
    def todo(self) -> list[ChunkPlan]:
        return [c for c in self.chunks if c.state != "done"]

    @property
    def quote(self) -> Quote:
        q = Quote()
        for c in self.todo:
            q = q + c.quote
        return q

    @property
    def cost_nano(self) -> int:
        return self.quote.usd_nano

    def as_dict(self) -> dict:
        q = self.quote
        r = self.request
        return {"dataset": r.dataset, "schema": r.schema, "symbols": list(r.symbols), "stype_in": r.stype_in,
                "start": iso(r.start_ns), "end": iso(r.end_ns), "job_id": self.job_id,
                "chunks": len(self.chunks), "chunks_done": len(self.chunks) - len(self.todo), "chunks_todo": len(self.todo),
                "records": q.records, "bytes": q.bytes, "usd_nano": q.usd_nano, "usd": usd(q.usd_nano),
                "not_found": self.not_found, "notes": self.notes}


@dataclasses.dataclass
class JobResult:
    job_id: int
    chunks_done: int = 0
    chunks_skipped: int = 0
    chunks_failed: int = 0
    records: int = 0
    rows: dict = dataclasses.field(default_factory=dict)
    bytes: int = 0
    usd_nano: int = 0
    requests: int = 0
    errors: list = dataclasses.field(default_factory=list)

    @property
    def rows_total(self) -> int:
        return sum(self.rows.values())

    def as_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["usd"] = usd(self.usd_nano)
        return d


class _Timing:
    """Seconds spent per phase (the bench reads these: chunk overhead = all but store/download)."""

    def __init__(self):
        self.s: dict[str, float] = {}

    @contextlib.contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        t = time.perf_counter()
        try:
            yield
        finally:
            self.s[name] = self.s.get(name, 0.0) + time.perf_counter() - t


class DatabentoHistorical:
    """The engine (see the module doc). ``client``: a ``databento.Historical`` (default: built
    from ``[databento]`` and ``$DATABENTO_API_KEY``); ``sleep`` and ``progress`` are injectable.

    ``plan(request)`` makes free calls only; ``estimate(requests)`` → (plans, verdict);
    ``fetch(requests, confirm, dry_run)`` → (plans, verdict, results); ``run(plan)`` fetches one
    planned job (no budget check: callers check first)."""

    def __init__(self, storage, settings: Settings, *, client=None, progress=None,
                 sleep: Callable[[float], None] = time.sleep, now: Callable[[], int] = time.time_ns):
        self.st = storage
        self.settings = settings
        self.cfg = settings.backfill
        self.ledger = Ledger(storage)
        self._client = client
        self._key: str | None = None
        self.progress = progress
        self.sleep = sleep
        self.now = now
        self._registry = None
        self.timing = _Timing()
        self.calls: dict[str, int] = {}
        self.read_block = READ_BLOCK  # bytes of the downloaded file read (and converted) at a time
        self.prefetch = True  # download the next chunk while this one is converted and stored

    # -- client ------------------------------------------------------------------------------
    @property
    def client(self):
        if self._client is None:
            import databento

            cfg = self.settings.databento
            self._key = cfg.key()
            self._client = databento.Historical(key=self._key, gateway=cfg.hist_gateway)
            for api in (self._client.timeseries, self._client.metadata, self._client.symbology):
                api.TIMEOUT = cfg.timeout_s  # the client reads self.TIMEOUT per request
        elif self._key is None:
            self._key = getattr(self._client, "key", None)
        return self._client

    @contextlib.contextmanager
    def _tls(self) -> Iterator[None]:
        """Trust ``[databento].ca_file`` while calls are in flight: requests reads
        ``REQUESTS_CA_BUNDLE`` per request (the client offers no other way). Reference counted
        across threads (the prefetch thread overlaps the main one)."""
        ca = self.settings.databento.ca_file
        if not ca:
            yield
            return
        with _CA_LOCK:
            if _CA_STATE["users"] == 0:
                _CA_STATE["saved"] = os.environ.get("REQUESTS_CA_BUNDLE")
                os.environ["REQUESTS_CA_BUNDLE"] = ca
            elif os.environ.get("REQUESTS_CA_BUNDLE") != ca:
                raise BackfillError("two Databento engines with different [databento].ca_file in one process")
            _CA_STATE["users"] += 1
        try:
            yield
        finally:
            with _CA_LOCK:
                _CA_STATE["users"] -= 1
                if _CA_STATE["users"] == 0:
                    if _CA_STATE["saved"] is None:
                        os.environ.pop("REQUESTS_CA_BUNDLE", None)
                    else:
                        os.environ["REQUESTS_CA_BUNDLE"] = _CA_STATE["saved"]

    @property
    def registry(self):
        if self._registry is None:
            from dm.instruments import InstrumentRegistry

            self._registry = InstrumentRegistry(self.st)
        return self._registry

    def _err(self, e: BaseException) -> str:
        """``HTTP 422 case: message`` of a client error, key redacted."""
        status = getattr(e, "http_status", None)
        body = getattr(e, "json_body", None)
        detail = body.get("detail") if isinstance(body, dict) else None
        if isinstance(detail, dict) and "case" in detail:
            text = f"{detail.get('case')}: {detail.get('message')}"
        elif isinstance(detail, str):
            text = detail
        else:
            text = getattr(e, "message", None) or str(e) or type(e).__name__
        return redact(f"HTTP {status} {text}" if status else f"{type(e).__name__}: {text}", self._key)

    def _backoff(self, attempt: int) -> float:
        base = self.cfg.backoff_base_s * (2 ** (attempt - 1))
        return min(self.cfg.backoff_max_s, base) * (0.8 + 0.4 * random.random())

    def _call(self, what: str, fn: Callable[[], Any]) -> Any:
        """One client call with dm's retry policy (module doc). Non-HTTP ``BentoError`` (a
        stream that broke after its headers) propagates to the caller."""
        import requests
        from databento.common.error import BentoHttpError

        attempts = waits = 0
        self.calls[what] = self.calls.get(what, 0) + 1
        while True:
            try:
                with self._tls():
                    return fn()
            except BentoHttpError as e:
                st = e.http_status
                if st == 429:
                    waits += 1
                    if waits > self.cfg.max_rate_limit_waits:
                        raise BackfillError(f"{what}: still rate limited after {waits - 1} waits: {self._err(e)}") from None
                    wait = min(_retry_after(e.headers), self.cfg.max_retry_after_s)
                    log.warning("databento rate limit: waiting Retry-After", call=what, wait_s=wait)
                    self.sleep(wait)
                    continue
                if st >= 500 or st == 408:
                    attempts += 1
                    if attempts > self.cfg.max_retries:
                        raise BackfillError(f"{what}: {self._err(e)} (gave up after {attempts - 1} retries)") from None
                    wait = self._backoff(attempts)
                    log.warning("databento server error: backing off", call=what, error=self._err(e), attempt=attempts, wait_s=round(wait, 3))
                    self.sleep(wait)
                    continue
                raise BackfillError(f"{what}: {self._err(e)}") from None
            except (requests.Timeout, requests.ConnectionError) as e:
                attempts += 1
                if attempts > self.cfg.max_retries:
                    raise BackfillError(f"{what}: {type(e).__name__} (gave up after {attempts - 1} retries): {redact(str(e), self._key)}") from None
                wait = self._backoff(attempts)
                log.warning("databento timeout or connection failure: backing off", call=what, error=type(e).__name__, attempt=attempts, wait_s=round(wait, 3))
                self.sleep(wait)

    # -- free calls --------------------------------------------------------------------------
    def _quote(self, r: FetchRequest, symbols: Iterable[str], start: int, end: int) -> Quote:
        from dm.backfill import nano_usd

        kw = dict(dataset=r.dataset, symbols=list(symbols), schema=r.schema, stype_in=r.stype_in, start=start, end=end)
        md = self.client.metadata
        with self.timing("quote"):
            n = int(self._call("metadata.get_record_count", lambda: md.get_record_count(**kw)))
            if n == 0:
                return Quote()
            b = int(self._call("metadata.get_billable_size", lambda: md.get_billable_size(**kw)))
            c = self._call("metadata.get_cost", lambda: md.get_cost(**kw))
        return Quote(n, b, nano_usd(c))

    def _resolve(self, r: FetchRequest, start: int, end: int) -> dict[str, list[tuple[int, int]]]:
        """symbol → [(day0, day1)) day numbers it resolves on, within [start, end)."""
        d0 = _dt.date.fromisoformat(iso_date(start))
        d1 = _dt.date.fromisoformat(iso_date(end - 1)) + _dt.timedelta(days=1)
        out: dict[str, list[tuple[int, int]]] = {}
        syms = list(r.symbols)
        for i in range(0, len(syms), 2000):
            batch = syms[i:i + 2000]
            res = self._call("symbology.resolve", lambda: self.client.symbology.resolve(
                dataset=r.dataset, symbols=batch, stype_in=r.stype_in, stype_out="instrument_id",
                start_date=d0.isoformat(), end_date=d1.isoformat()))
            for s in batch:
                ivs = (res.get("result") or {}).get(s) or []
                out[s] = sorted((_day(iv["d0"]), _day(iv["d1"])) for iv in ivs if iv.get("s"))
        return out

    def plan(self, r: FetchRequest) -> JobPlan:
        """Chunks of ``r`` with what is left of each and its price. Free calls only; writes
        nothing. Raises ``BackfillError`` for a bad request or when no symbol resolves."""
        if r.schema not in SCHEMAS:
            raise BackfillError(f"schema {r.schema!r}: dm stores {SCHEMAS}")
        if r.start_ns >= r.end_ns:
            raise BackfillError(f"empty window: start {iso(r.start_ns)} is not before end {iso(r.end_ns)}")
        if not r.symbols:
            raise BackfillError("no symbols")
        job = self.ledger.find_job(r.key)
        if job is not None:
            return self._plan_existing(r, job)
        plan = JobPlan(r, None, [])
        rng = self._call("metadata.get_dataset_range", lambda: self.client.metadata.get_dataset_range(dataset=r.dataset))
        sch = (rng.get("schema") or {}).get(r.schema) or rng
        from dm.databento.times import to_ns

        lo, hi = max(r.start_ns, to_ns(sch["start"])), min(r.end_ns, to_ns(sch["end"]))
        if (lo, hi) != (r.start_ns, r.end_ns):
            plan.notes.append(f"{r.dataset} {r.schema} is available [{sch['start']}, {sch['end']}): window clamped to "
                              f"[{iso(lo)}, {iso(hi)})" if lo < hi else f"nothing of {r.dataset} {r.schema} is available in the window")
        if lo >= hi:
            return plan
        if r.symbols == ("ALL_SYMBOLS",) or r.stype_in == "instrument_id":
            days = {s: [(lo // NS_PER_DAY, (hi - 1) // NS_PER_DAY + 1)] for s in r.symbols}
        else:
            days = self._resolve(r, lo, hi)
            plan.not_found = [s for s, ivs in days.items() if not ivs]
            if len(plan.not_found) == len(r.symbols):
                raise BackfillError(f"none of the symbols resolved in {r.dataset} ({r.stype_in}) between "
                                    f"{iso_date(lo)} and {iso_date(hi - 1)}: {', '.join(plan.not_found[:20])}")
            if plan.not_found:
                plan.notes.append(f"not found in {r.dataset}, left out: {', '.join(plan.not_found[:20])}")
        per = self.cfg.max_symbols_per_chunk
        for day in range(lo // NS_PER_DAY, (hi - 1) // NS_PER_DAY + 1):
            a, b = max(lo, day * NS_PER_DAY), min(hi, (day + 1) * NS_PER_DAY)
            syms = sorted(s for s, ivs in days.items() if any(d0 <= day < d1 for d0, d1 in ivs))
            if not syms:
                continue
            cover = self.ledger.covering(r.dataset, r.schema, r.stype_in, a, b)
            for i in range(0, len(syms), per):
                groups: dict[tuple, list[str]] = {}
                for s in syms[i:i + per]:
                    done = [(int(c["start_ns"]), int(c["resume_ns"])) for c in cover if s in c["symbols"].split(",")]
                    groups.setdefault(tuple(_subtract((a, b), done)), []).append(s)
                for windows, group in groups.items():
                    if not windows:
                        plan.notes.append(f"{iso_date(a)}: {len(group)} symbol(s) already stored by earlier jobs")
                    for wa, wb in windows:
                        q = self._quote(r, group, wa, wb)
                        plan.chunks.append(ChunkPlan(tuple(group), wa, wb, wa, "new", q, q))
        return plan

    def _plan_existing(self, r: FetchRequest, job: dict) -> JobPlan:
        plan = JobPlan(r, int(job["id"]), [])
        for c in self.ledger.chunks(int(job["id"])):
            full = Quote(int(c["quoted_records"]), int(c["quoted_bytes"]), int(c["quoted_usd_nano"]))
            syms = tuple(c["symbols"].split(","))
            a, b, res = int(c["start_ns"]), int(c["end_ns"]), int(c["resume_ns"])
            if c["state"] == "done" or res >= b:
                plan.chunks.append(ChunkPlan(syms, a, b, b, "done", Quote(), full, int(c["id"])))
                continue
            q = full if res == a else self._quote(r, syms, res, b)
            plan.chunks.append(ChunkPlan(syms, a, b, res, c["state"], q, full, int(c["id"])))
        return plan

    def estimate(self, requests: Iterable[FetchRequest], confirm: bool = False):
        plans = [self.plan(r) for r in requests]
        total = sum(p.cost_nano for p in plans)
        return plans, budget_verdict(self.cfg, total, *self.ledger.spent_today_and_month(self.now()), confirm)

    def fetch(self, requests: Iterable[FetchRequest], confirm: bool = False, dry_run: bool = False):
        """Plan, apply the budget guard (``BudgetRefused`` when it says no; nothing fetched),
        run. Returns (plans, verdict, results); ``dry_run`` stops before any ``get_range``."""
        plans, verdict = self.estimate(requests, confirm)
        if dry_run:
            return plans, verdict, []
        enforce(verdict)
        return plans, verdict, [self.run(p) for p in plans]

    # -- fetching ----------------------------------------------------------------------------
    def run(self, plan: JobPlan) -> JobResult:
        """Fetch and store every chunk of ``plan`` that is not done. A failing chunk is recorded
        (``failed`` with its error) and the others go on; the job ends ``done`` or ``failed``."""
        r = plan.request
        if plan.job_id is None:
            plan.job_id = self.ledger.create_job(
                r.key, r.command, PROVIDER, r.dataset, r.schema, r.stype_in, r.symbols, r.exchange, r.start_ns,
                r.end_ns, r.gap_id,
                [(",".join(c.symbols), c.start_ns, c.end_ns, c.full.records, c.full.bytes, c.full.usd_nano) for c in plan.chunks],
                self.now())
            ids = {(int(c["start_ns"]), int(c["end_ns"]), c["symbols"]): int(c["id"]) for c in self.ledger.chunks(plan.job_id)}
            for c in plan.chunks:
                c.chunk_id = ids[(c.start_ns, c.end_ns, ",".join(c.symbols))]
                c.state = "pending"
        res = JobResult(plan.job_id, chunks_skipped=len(plan.chunks) - len(plan.todo))
        self.ledger.claim_job(plan.job_id)
        prog = self.progress
        if prog is not None:
            q = plan.quote
            prog.start(f"{r.dataset} {r.schema}", len(plan.todo), q.records, q.bytes, q.usd_nano)
        todo = plan.todo
        ahead: dict[int, _Prefetch] = {}

        def prefetch(k: int) -> None:
            # the next chunk's first download overlaps this chunk's conversion and storing
            if k < len(todo) and k not in ahead and self.prefetch and _needs_request(todo[k]):
                ahead[k] = _Prefetch(self, plan, todo[k])
        try:
            for k, c in enumerate(todo):
                try:
                    self._fetch_chunk(plan, c, res, ahead.pop(k, None), lambda k=k: prefetch(k + 1))
                    res.chunks_done += 1
                except BackfillError as e:
                    msg = redact(str(e), self._key)
                    res.chunks_failed += 1
                    res.errors.append(f"{iso_date(c.start_ns)} {','.join(c.symbols[:3])}: {msg}")
                    self.ledger.fail_chunk(c.chunk_id, msg)
                    log.error("backfill chunk failed", job_id=plan.job_id, chunk_id=c.chunk_id, dataset=r.dataset,
                              schema=r.schema, day=iso_date(c.start_ns), error=msg)
                if prog is not None:
                    prog.advance(chunks=1)
        finally:
            for p in ahead.values():
                p.abandon()
            state = "failed" if res.chunks_failed else "done"
            self.ledger.finish_job(plan.job_id, state, "; ".join(res.errors)[:2000])
            if prog is not None:
                prog.done()
        log.info("backfill job finished", job_id=plan.job_id, request=r.describe(), state=state,
                 chunks_done=res.chunks_done, chunks_skipped=res.chunks_skipped, chunks_failed=res.chunks_failed,
                 records=res.records, rows=res.rows_total, bytes=res.bytes, usd=usd(res.usd_nano), requests=res.requests)
        return res

    def _path(self, plan: JobPlan, c: ChunkPlan) -> Path:
        work = Path(self.cfg.work_dir)
        work.mkdir(parents=True, exist_ok=True)
        return work / f"job{plan.job_id}-chunk{c.chunk_id}-{uuid.uuid4().hex[:8]}.dbn.zst"

    def _fetch_chunk(self, plan: JobPlan, c: ChunkPlan, res: JobResult, ahead: "_Prefetch | None" = None,
                     downloaded: Callable[[], None] | None = None) -> None:
        r = plan.request
        if not _needs_request(c):
            # the provider has nothing (left) in this window: done without a paid request
            self.ledger.mark_chunk_done(c.chunk_id, "no records in the window")
            c.state, c.resume_ns = "done", c.end_ns
            return
        stalls = 0
        while c.resume_ns < c.end_ns:
            start = c.resume_ns
            path = None
            try:
                if ahead is not None:
                    path = ahead.path
                    with self.timing("download_wait"):
                        complete = ahead.result()  # raises what the download raised
                    ahead = None
                else:
                    path = self._path(plan, c)
                    with self.timing("download_wait"):
                        complete = self._download(r, c, path)
                if downloaded is not None:
                    downloaded()
                    downloaded = None
                before = c.resume_ns
                self._ingest(plan, c, path, complete, res)
            finally:
                if path is not None:
                    with contextlib.suppress(FileNotFoundError):
                        path.unlink()
            if complete:
                break
            if c.resume_ns > before:
                stalls = 0
                log.warning("databento stream cut: resuming after the stored part", job_id=plan.job_id, chunk_id=c.chunk_id,
                            requested_from=iso(start), resume_from=iso(c.resume_ns))
                continue
            stalls += 1
            if stalls > self.cfg.max_retries:
                raise BackfillError(f"timeseries.get_range: stream cut {stalls} times without progress at {iso(c.resume_ns)}")
            self.sleep(self._backoff(stalls))
        c.state = "done"

    def _download(self, r: FetchRequest, c: ChunkPlan, path: Path) -> bool:
        """``get_range`` of ``[resume_ns, end_ns)`` into ``path``; True when the stream ended
        cleanly, False when it broke after its headers (``path`` holds the received prefix)."""
        from databento.common.error import BentoError, BentoHttpError

        kw = dict(dataset=r.dataset, symbols=list(c.symbols), schema=r.schema, stype_in=r.stype_in,
                  start=c.resume_ns, end=c.end_ns, path=str(path))
        try:
            with self.timing("download"):
                self._call("timeseries.get_range", lambda: self.client.timeseries.get_range(**kw))
            return True
        except BentoHttpError:
            raise
        except BentoError as e:
            error = redact(str(e), self._key)
        # The client leaves its output file open when the body breaks (the exception's traceback
        # holds the frame): with the exception gone, collect it so the file is flushed and closed.
        gc.collect()
        if not path.exists():
            raise BackfillError(f"timeseries.get_range: {error}")
        log.warning("databento stream broke", error=error, received_bytes=path.stat().st_size)
        return False

    def _ingest(self, plan: JobPlan, c: ChunkPlan, path: Path, complete: bool, res: JobResult) -> None:
        """Convert, map and store the DBN file of one request, in batches committed with the
        ledger (module doc). A reader thread decompresses and converts the next batch (zstd and
        ``DbnConverter`` release the GIL) while this thread stores the current one; at most two
        batches wait between them."""
        conv = DbnConverter(events=True)
        req = {"id": None, "records": 0, "bytes": 0, "usd": 0, "start": c.resume_ns, "end": c.end_ns}
        batches: queue.Queue = queue.Queue(maxsize=2)
        stop = threading.Event()
        idmap: dict[int, int] = {}  # Databento id -> dm id for this request (its day); the reader maps with it too
        reader = threading.Thread(target=self._read, args=(path, complete, conv, batches, stop, idmap),
                                  name="dm-backfill-convert", daemon=True)
        reader.start()
        carry: dict[int, np.ndarray] = {}
        try:
            while True:
                with self.timing("convert_wait"):
                    kind, payload = batches.get()
                if kind == "error":
                    raise payload
                arrays, meta_len, offset, count, mapped = payload
                if not mapped:  # ids the reader had not seen mapped yet: resolved here (the registry is ours)
                    with self.timing("map"):
                        self._map_ids(plan.request, c, conv, arrays, idmap)
                carry = self._flush(plan, c, conv, meta_len, offset, count, arrays, carry, req, res,
                                    final=kind == "end", complete=complete)
                if kind == "end":
                    break
        finally:
            stop.set()
            reader.join()

    def _read(self, path: Path, complete: bool, conv: DbnConverter, out: queue.Queue, stop: threading.Event,
              idmap: dict[int, int]) -> None:
        """The reader thread of ``_ingest``: ``("batch" | "end", (arrays, meta_len, offset,
        dbn_count, mapped))`` items, or ``("error", exception)``. ``mapped``: the instrument ids
        were rewritten here, all of them being in ``idmap`` already."""
        import zstandard

        def put(item) -> bool:
            while not stop.is_set():
                try:
                    out.put(item, timeout=0.1)
                    return True
                except queue.Full:
                    continue
            return False

        try:
            meta_len = None
            head = b""
            pieces: list[bytes] = []
            pending = 0
            limit = self.cfg.batch_rows
            first = True
            with open(path, "rb") as f:
                first = f.read(4)
                f.seek(0)
                dec = zstandard.ZstdDecompressor().decompressobj() if first == ZSTD_MAGIC else None
                while not stop.is_set():
                    block = f.read(self.read_block)
                    if not block:
                        break
                    with self.timing("convert"):
                        try:
                            raw = dec.decompress(block) if dec is not None else block
                        except zstandard.ZstdError as e:
                            if complete:
                                raise BackfillError(f"corrupt zstd stream from get_range: {e}") from None
                            break  # the cut tail of a broken stream
                        if meta_len is None:
                            head += raw[:8]
                            if len(head) >= 8:
                                meta_len = 8 + int.from_bytes(head[4:8], "little")
                        before = conv.count
                        try:
                            piece = conv.feed(raw)
                        except DbnError as e:
                            raise BackfillError(f"DBN from get_range: {e}") from None
                        if piece:
                            pieces.append(piece)
                            pending += conv.count - before
                        batch = None
                        if pending >= limit or (first and pending):  # the first batch early: storing starts sooner
                            first = False
                            arrays = _split(b"".join(pieces))
                            batch = (arrays, meta_len, conv.offset, conv.dbn_count, _map_known(arrays, idmap))
                            pieces, pending = [], 0
                    if batch is not None and not put(("batch", batch)):
                        return
                if complete:
                    try:
                        conv.finish()
                    except DbnError as e:
                        raise BackfillError(f"DBN from get_range: {e}") from None
            with self.timing("convert"):
                arrays = _split(b"".join(pieces))
                last = (arrays, meta_len, conv.offset, conv.dbn_count, _map_known(arrays, idmap))
            put(("end", last))
        except BaseException as e:  # handed to the storing thread
            put(("error", e))

    def _flush(self, plan: JobPlan, c: ChunkPlan, conv: DbnConverter, meta_len, offset: int, dbn_count: int,
               arrays: dict[int, np.ndarray], carry, req, res, final: bool, complete: bool = True
               ) -> dict[int, np.ndarray]:
        """Store a batch whose ids are dm's (plus the records carried from the last one), commit
        with the ledger, return the records carried to the next batch."""
        r = plan.request
        for rt, a in carry.items():
            arrays[rt] = np.concatenate([a, arrays[rt]]) if rt in arrays else a
        store, hold, resume = arrays, {}, c.resume_ns
        if arrays:
            t = max(int(a[_index(rt)].max()) for rt, a in arrays.items() if len(a))
            if not final:
                store, hold = _cut_at(arrays, t)
                resume = t
            elif complete:
                resume = c.end_ns
            else:
                got = sum(int((a[_index(rt)] == t).sum()) for rt, a in arrays.items() if rt != RType.MBP_EVENT)
                n = int(self._call("metadata.get_record_count", lambda: self.client.metadata.get_record_count(
                    dataset=r.dataset, symbols=list(c.symbols), schema=r.schema, stype_in=r.stype_in, start=t, end=t + 1)))
                if n <= got:
                    resume = t + 1
                else:
                    store, hold = _cut_at(arrays, t)
                    resume = t
                    log.info("databento cut inside one timestamp: its records are requested again", ts=t, received=got, total=n)
        elif final and complete:
            resume = c.end_ns
        billed = offset - meta_len if meta_len else 0  # DBN record bytes received (Databento bills these)
        records = dbn_count
        full = c.full
        usd_nano = billed * full.usd_nano // full.bytes if full.bytes else 0
        d_rec, d_bytes, d_usd = records - req["records"], billed - req["bytes"], usd_nano - req["usd"]
        now = self.now()
        outcome = "complete" if complete or not final else "cut"
        state = "done" if resume >= c.end_ns else "partial"

        def ledger(cur, inserted):
            if req["id"] is None:
                req["id"] = cur.insert(
                    "INSERT INTO backfill_requests (chunk_id, ts_ns, dataset, schema, start_ns, end_ns, records, bytes,"
                    " usd_nano, outcome) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (c.chunk_id, now, r.dataset, r.schema, req["start"], req["end"], records, billed, usd_nano, outcome))
                new_req = 1
            else:
                cur.exec("UPDATE backfill_requests SET records = ?, bytes = ?, usd_nano = ?, outcome = ? WHERE id = ?",
                         (records, billed, usd_nano, outcome, req["id"]))
                new_req = 0
            cur.exec("UPDATE backfill_chunks SET resume_ns = ?, state = ?, records = records + ?, rows = rows + ?,"
                     " bytes = bytes + ?, usd_nano = usd_nano + ?, requests = requests + ?, error = '', updated_ns = ?"
                     " WHERE id = ?", (resume, state, d_rec, sum(inserted.values()), d_bytes, d_usd, new_req, now, c.chunk_id))
            return new_req

        with self.timing("store"):
            new_req, inserted = self.ledger.commit({rt: a for rt, a in store.items() if len(a)}, ledger)
        req.update(records=records, bytes=billed, usd=usd_nano)
        c.resume_ns = resume
        res.records += d_rec
        res.bytes += d_bytes
        res.usd_nano += d_usd
        res.requests += new_req
        for t_, n_ in inserted.items():
            res.rows[t_] = res.rows.get(t_, 0) + n_
        if self.progress is not None:
            self.progress.advance(records=d_rec, bytes=d_bytes, usd_nano=d_usd)
        return hold

    def _map_ids(self, r: FetchRequest, c: ChunkPlan, conv: DbnConverter, arrays: dict[int, np.ndarray],
                 idmap: dict[int, int]) -> None:
        """Databento instrument ids → dm instrument ids, in place (see the module doc): new ids get
        their raw symbol and a registry id, then ``_rewrite``."""
        first_pub = _ids_of(arrays)  # Databento id -> publisher of its first record here
        new = [i for i in first_pub if i not in idmap]
        if new:
            # raw_symbol requests: the DBN metadata maps raw symbol -> id; parent/continuous ones
            # map the *input* symbol, so those ids are resolved to raw symbols (free call)
            raw = {i: conv.symbols.get(i) for i in new} if r.stype_in == "raw_symbol" else {}
            missing = [i for i in new if not raw.get(i)]
            if missing:
                raw.update(self._raw_symbols(r, missing, c.start_ns))
            unknown = [i for i in new if not raw.get(i)]
            if unknown:
                raise BackfillError(f"Databento instrument ids {unknown[:10]} have no raw symbol in {r.dataset} on {iso_date(c.start_ns)}")
            got = self.registry.resolve_many([(raw[i], r.exchange, raw[i], first_pub[i]) for i in new])
            for i in new:
                idmap[i] = got[(raw[i], r.exchange)]
        _rewrite(arrays, first_pub, idmap)

    def _raw_symbols(self, r: FetchRequest, ids: list[int], day_ns: int) -> dict[int, str]:
        d0 = _dt.date.fromisoformat(iso_date(day_ns))
        res = self._call("symbology.resolve", lambda: self.client.symbology.resolve(
            dataset=r.dataset, symbols=[str(i) for i in ids], stype_in="instrument_id", stype_out="raw_symbol",
            start_date=d0.isoformat(), end_date=(d0 + _dt.timedelta(days=1)).isoformat()))
        out = {}
        for i in ids:
            ivs = (res.get("result") or {}).get(str(i)) or []
            if ivs and ivs[0].get("s"):
                out[i] = ivs[0]["s"]
        return out


# --- helpers ---------------------------------------------------------------------------------
def _needs_request(c: ChunkPlan) -> bool:
    """False when the quote says the provider has no records in what is left of the chunk."""
    return c.quote.records > 0


class _Prefetch:
    """One chunk's first ``get_range``, downloading in a daemon thread while the main thread
    converts and stores the previous chunk. ``result()`` → complete (bool) or the download's
    exception; ``abandon()`` deletes the file whenever the download ends."""

    def __init__(self, eng: "DatabentoHistorical", plan: JobPlan, c: ChunkPlan):
        self.path = eng._path(plan, c)
        self._done = threading.Event()
        self._lock = threading.Lock()
        self._abandoned = False
        self._complete = False
        self._error: BaseException | None = None

        def work():
            try:
                self._complete = eng._download(plan.request, c, self.path)
            except BaseException as e:  # handed to result()
                self._error = e
            finally:
                with self._lock:
                    self._done.set()
                    if self._abandoned:
                        self._unlink()
        threading.Thread(target=work, name="dm-backfill-prefetch", daemon=True).start()

    def _unlink(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()

    def result(self) -> bool:
        self._done.wait()
        if self._error is not None:
            raise self._error
        return self._complete

    def abandon(self) -> None:
        with self._lock:
            self._abandoned = True
            if self._done.is_set():
                self._unlink()


def _day(date_text: str) -> int:
    return (_dt.date.fromisoformat(date_text) - _dt.date(1970, 1, 1)).days


def _ids_of(arrays: dict[int, np.ndarray]) -> dict[int, int]:
    """``{instrument_id: publisher_id of its first record}`` of a batch; one comparison pass when
    the batch holds one instrument (the usual case), else a sort."""
    out: dict[int, int] = {}
    for a in arrays.values():
        col = a["instrument_id"]
        if not len(col):
            continue
        if (col == col[0]).all():
            ids, at = [int(col[0])], [0]
        else:
            u, k = np.unique(col, return_index=True)
            ids, at = u.tolist(), k.tolist()
        for i, k in zip(ids, at):
            out.setdefault(i, int(a["publisher_id"][k]))
    return out


def _rewrite(arrays: dict[int, np.ndarray], ids: Iterable[int], idmap: dict[int, int]) -> None:
    keys = np.array(sorted(ids), dtype=np.uint32)
    vals = np.array([idmap[int(k)] for k in keys], dtype=np.uint32)
    for a in arrays.values():
        col = a["instrument_id"]
        if not len(col):
            continue
        if len(keys) == 1:
            col[:] = vals[0]
        else:
            col[:] = vals[np.searchsorted(keys, col)]


def _map_known(arrays: dict[int, np.ndarray], idmap: dict[int, int]) -> bool:
    """Rewrite the batch's ids (reader thread) when every one is in ``idmap`` already; False (and
    nothing changed) otherwise. An empty batch is trivially mapped."""
    ids = _ids_of(arrays)
    if any(i not in idmap for i in ids):
        return False
    if ids:
        _rewrite(arrays, ids, idmap)
    return True


def _retry_after(headers) -> float:
    v = (headers or {}).get("Retry-After")
    if v is None:
        return 1.0
    try:
        return max(0.0, float(v))
    except ValueError:
        from email.utils import parsedate_to_datetime

        try:
            return max(0.0, parsedate_to_datetime(v).timestamp() - time.time())
        except (TypeError, ValueError):
            return 1.0


def _subtract(window: tuple[int, int], covered: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """``window`` minus the union of ``covered`` intervals (all half-open), in order."""
    a, b = window
    out = []
    for x, y in sorted(covered):
        if y <= a or x >= b:
            continue
        if x > a:
            out.append((a, x))
        a = max(a, y)
        if a >= b:
            break
    if a < b:
        out.append((a, b))
    return out


def _index(rtype: int) -> str:
    """The field a record is filtered and ordered on: ts_recv, or ts_event when it has none."""
    return "ts_recv" if "ts_recv" in DTYPES[rtype].names else "ts_event"


def _cut_at(arrays: dict[int, np.ndarray], t: int) -> tuple[dict, dict]:
    """(records with index time < t, the others). Databento streams are sorted by index time, so
    this is a split of views at one position; an unsorted array is split by a mask."""
    store, hold = {}, {}
    tt = np.uint64(t)
    for rt, a in arrays.items():
        ts = a[_index(rt)]
        k = int(np.searchsorted(ts, tt, "left"))
        if (k == 0 or ts[:k].max() < tt) and (k == len(ts) or ts[k:].min() >= tt):
            store[rt], hold[rt] = a[:k], a[k:]
        else:
            m = ts < tt
            store[rt], hold[rt] = a[m], a[~m]
    return store, hold


def _split(buf: bytes) -> dict[int, np.ndarray]:
    """dm records from ``DbnConverter`` → ``{rtype: writable array}``. The converter's output is
    regular (each DBN record → one record of one rtype, optionally followed by its MBP_EVENT), so
    it is viewed as an array of that pair in one step; anything else goes through
    ``dm.dbn.split_records``."""
    if not buf:
        return {}
    u8 = np.frombuffer(buf, np.uint8)
    l1, rt1 = int(u8[0]) * 4, int(u8[1])
    if rt1 in DTYPES and l1 == DTYPES[rt1].itemsize:
        kinds = [(rt1, DTYPES[rt1])]
        if len(buf) > l1 and u8[l1 + 1] == RType.MBP_EVENT:
            kinds.append((RType.MBP_EVENT, DTYPES[RType.MBP_EVENT]))
        period = sum(dt.itemsize for _, dt in kinds)
        if len(buf) % period == 0:
            off, ok = 0, True
            for rt, dt in kinds:
                if not ((u8[off + 1::period] == rt).all() and (u8[off::period] == dt.itemsize // 4).all()):
                    ok = False
                    break
                off += dt.itemsize
            if ok:
                pair = np.frombuffer(buf, np.dtype([(f"f{i}", dt) for i, (_, dt) in enumerate(kinds)]))
                out = {}
                for i, (rt, _) in enumerate(kinds):
                    a = np.ascontiguousarray(pair[f"f{i}"])
                    out[rt] = a if a.flags.writeable else a.copy()  # one kind: a view of the input
                return out
    return {rt: a.copy() for rt, a in split_records(buf).items()}


# --- the fill-gaps hook -----------------------------------------------------------------------
class DatabentoGapFiller:
    """``dm.backfill``'s filler for gaps routed to Databento: one request per schema of the
    route (``[routing]`` ``schemas``) over the gap's window, with the instruments' raw symbols."""

    def __init__(self, storage, settings: Settings, **kw):
        kw.pop("rest_urls", None)  # the venue REST fillers' key of fill_gaps' shared filler_kw
        self.engine = DatabentoHistorical(storage, settings, **kw)

    def plan_gap(self, gap: dict, targets: list[GapTarget], start_ns: int, end_ns: int) -> GapPlan:
        groups: dict[tuple, list[str]] = {}
        for t in targets:
            rt = t.routed.route
            groups.setdefault((rt.dataset, t.routed.stype_in, t.exchange, rt.schemas), []).append(t.symbol)
        plans = []
        for (dataset, stype, exchange, schemas), syms in groups.items():
            for schema in schemas:
                plans.append(self.engine.plan(FetchRequest(dataset, schema, tuple(sorted(syms)), stype, start_ns, end_ns,
                                                           exchange, "fill-gaps", int(gap["id"]))))
        cost = sum(p.cost_nano for p in plans)
        todo = sum(len(p.todo) for p in plans)
        summary = (f"databento: {len(plans)} request(s), {todo} chunk(s) to fetch, "
                   f"{sum(p.quote.records for p in plans)} records, {usd(cost)}")
        return GapPlan(gap, PROVIDER, cost, summary, plans)

    def fill(self, plan: GapPlan) -> tuple[list[int], int]:
        """Fetch the gap's requests, planned again first: a gap filled just before may have
        stored part of this window, which is then not requested again (the cost can only drop)."""
        jobs, rows, errors = [], 0, []
        for p in plan.opaque:
            res = self.engine.run(self.engine.plan(p.request))
            jobs.append(res.job_id)
            rows += res.rows_total
            errors += res.errors
        if errors:
            raise BackfillError(f"gap {plan.gap['id']}: {len(errors)} chunk(s) failed: {'; '.join(errors[:3])}")
        return jobs, rows
