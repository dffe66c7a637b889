"""The persister: drains every worker's persist queue into storage, the only writer of storage
(DESIGN.md section 1).

Batches close on size (``persister.batch_records``) or age (``persister.batch_ms`` since the
batch's first record), whichever comes first. A batch is split by rtype into numpy structured
arrays and written in one storage transaction (PostgreSQL binary COPY, or SQLite); queue
positions are committed only after the database commit, so a crash re-delivers at most the
uncommitted batches, which the storage's uniqueness keys make idempotent (0 lost, 0 duplicated).

Faults stay local:

* **Poison never blocks.** Rows a table cannot hold (``dm.storage.base.row_problems``: a u64
  above i64 max, unstorable text, ...) are found row-wise, vectorised, before the write; rows the
  database still refuses for a data error (a constraint other than a duplicate key, an
  instrument registration contradicting the registry) are isolated by bisecting the batch. Each
  is appended, with its provider, table, reason and fields, to the dead-letter file
  (``persister.dead_letter``, JSON lines, fsync'd before the batch's positions are committed);
  the rest of the batch is stored.
* **Retries are per provider.** A failed write keeps that provider's batch and retries it after
  that provider's own backoff (50 ms doubling to 5 s); other providers' batches go on as soon as
  the database answers them. An outage (refused, lost, no answer: ``StorageError.outage``) is the
  storage's state and every provider waiting on it retries once the database answers again; a
  refusal of one provider's batch by a database that answers (a trigger, a permission) stays that
  provider's (its ``state``/``last_error`` in the stats) and never touches the others' clocks.
* **Hung storage is detected** within ``storage.timeout_s`` (``dm.storage.postgres``: keepalives,
  ``tcp_user_timeout``, ``statement_timeout`` and a watchdog on each call); an idle persister pings
  the database every second so a quiet market does not hide an outage. One log line per incident
  (state change), the storage URL redacted.
* **The database may be down at start**: the persister connects lazily with backoff and migrates
  on its first connection; the supervisor's flapping limit never sees it exit.
* **A stop while storage is down loses nothing**: what the persister holds and what is still in
  the shared-memory queues is spilled to ``<spool_dir>/<instance>/<provider>/persister.NNNNNNNNNN.held``
  (written, fsync'd, renamed, directory fsync'd), then the queue positions are committed. The next
  start stores the held files first. (The worker's own spool files are already on disk: they are
  left for the next run.)
* **Instrument cache**: on each (re)connection the local instrument cache
  (``dm.instruments.InstrumentCache``, ``run_dir/<instance>/instruments.sqlite``) and the
  database are reconciled both ways; registrations stored from INSTRUMENT_DEF records are added
  to the cache too.
* **The gap ledger** is written here only: workers send every lost window as a GAP record through
  their persist queue (``dm.providers.base.Provider.record_gap``); each stored batch holding some
  logs one line and counts them per provider (``gaps``).

Stats file ``run_dir/<instance>/persister.stats.json``, rewritten every 0.5 s by a thread (also
while a database call blocks)::

    {"pid", "ts",
     "storage": {"state": "ok"|"failing"|"hung"|"connecting", "last_error": str (no secrets),
                 "last_ok_ns": int, "url": redacted URL,
                 "write_latency_s": {"buckets": {"0.001": n, ..., "+Inf": n}, "sum": s, "count": n}},
     "queues": {provider: {"attached": bool, "pending": int, "lag_s": float, "records": int,
                           "dead_letters": int, "gaps": int, "spool_bytes": int, "state": "ok"|"retrying",
                           "last_error": str}},
     "rows": {table: n}, "dead_letters": int, "records": int, "batches": int, "failures": int}

``write_latency_s`` buckets are cumulative (Prometheus ``le``), one observation per write
attempt (failed ones too). ``lag_s`` is how long the oldest record not yet stored has waited,
measured from when the persister first could not keep up (a batch failed, or a read filled a
whole batch) until it has read everything and stored it again: an upper bound, 0 when caught up.
``pending`` counts records in the queue and the worker's spool files not yet committed, plus the
held files. ``spool_bytes`` is the size of the provider's spool directory (worker spool files and
held files).
"""
from __future__ import annotations

import json
import os
import signal
import struct
import threading
import time
from collections import Counter
from pathlib import Path

import numpy as np

from dm import log as dmlog
from dm._ring import PersistConsumer, split_by_rtype
from dm.config import Config
from dm.errors import InstrumentError, RingError, StorageDataError, StorageError, StorageTimeoutError
from dm.records import DTYPES, LAYOUT_HASH, RType, unpack
from dm.storage import open_storage
from dm.storage.base import RECORD_TABLES, check_dtype, drop_rows, redact_text, redact_url, row_problems, text_column

log = dmlog.get("dm.persister")

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
BACKOFF_MIN_S = 0.05
BACKOFF_MAX_S = 5.0
PING_EVERY_S = 1.0
MAINTAIN_EVERY_S = 3600.0  # storage maintenance (partitions ahead) between batches, never inside a write
STATS_EVERY_S = 0.5
HELD_MAGIC = b"DMHELD01"
_HELD_HEAD = struct.Struct("<8sII")  # magic, layout hash, record count
_U32 = struct.Struct("<I")


# ----------------------------------------------------------------------------- small pieces

class Histogram:
    """Cumulative-bucket histogram of seconds (Prometheus semantics)."""

    def __init__(self, buckets=LATENCY_BUCKETS):
        self.bounds = tuple(buckets)
        self.counts = [0] * (len(self.bounds) + 1)
        self.sum = 0.0
        self.count = 0

    def observe(self, v: float) -> None:
        for i, b in enumerate(self.bounds):
            if v <= b:
                self.counts[i] += 1
                break
        else:
            self.counts[-1] += 1
        self.sum += v
        self.count += 1

    def snapshot(self) -> dict:
        cum, out = 0, {}
        for b, c in zip(self.bounds, self.counts):
            cum += c
            out[repr(b)] = cum
        out["+Inf"] = self.count
        return {"buckets": out, "sum": self.sum, "count": self.count}


def record_fields(raw: bytes) -> dict:
    """A record's fields for a dead letter (``dm.records.unpack``; bytes as text)."""
    try:
        d = unpack(raw)._asdict()
    except Exception:  # noqa: BLE001 - unknown rtype or short record: the hex says it all
        return {}
    return {k: v for k, v in d.items()}


def split_records(buf: bytes) -> tuple[dict[int, np.ndarray], list[tuple[bytes, str]]]:
    """Concatenated records → ``({rtype: structured array (copy)}, [(raw, reason)])``: records of an
    unknown rtype or with a length that does not match their rtype are returned as poison, never
    raised (one bad record must not cost the batch)."""
    arrays: dict[int, np.ndarray] = {}
    poison: list[tuple[bytes, str]] = []
    try:
        parts = split_by_rtype(buf)
    except RingError as e:  # a truncated/zero-length record: walk what is readable
        return _walk(buf, str(e))
    for rtype, chunk in parts.items():
        dt = DTYPES.get(rtype)
        if dt is None or rtype not in RECORD_TABLES:
            poison += [(r, f"rtype {rtype:#04x} is not a storable dm record") for r in _records_of(chunk)]
            continue
        if len(chunk) % dt.itemsize == 0:
            a = np.frombuffer(chunk, dtype=dt)
            if (a["length"] == dt.itemsize // 4).all():
                arrays[rtype] = a
                continue
        good = []
        for r in _records_of(chunk):
            if len(r) == dt.itemsize:
                good.append(r)
            else:
                poison.append((r, f"record of {len(r)} bytes; rtype {rtype:#04x} has {dt.itemsize}"))
        if good:
            arrays[rtype] = np.frombuffer(b"".join(good), dtype=dt)
    return arrays, poison


def _records_of(chunk: bytes) -> list[bytes]:
    out, off, n = [], 0, len(chunk)
    while off < n:
        ln = chunk[off] * 4
        if ln == 0 or off + ln > n:
            out.append(chunk[off:])
            break
        out.append(chunk[off:off + ln])
        off += ln
    return out


def _walk(buf: bytes, why: str) -> tuple[dict[int, np.ndarray], list[tuple[bytes, str]]]:
    off, n, good = 0, len(buf), []
    while off < n:
        ln = buf[off] * 4
        if ln < 16 or off + ln > n:
            break
        good.append(buf[off:off + ln])
        off += ln
    arrays, poison = split_records(b"".join(good)) if good else ({}, [])
    if off < n:
        poison.append((bytes(buf[off:]), f"unreadable bytes from here on ({why})"))
    return arrays, poison


def dead_entry(provider: str, raw: bytes, why: str, table: str = "") -> dict:
    """One dead letter: ``ts_ns``, ``provider``, ``table``, ``rtype``, ``reason``, ``record`` (the
    fields), ``raw`` (the record's bytes in hex, to replay it)."""
    return {"ts_ns": time.time_ns(), "provider": provider, "table": table,
            "rtype": raw[1] if len(raw) > 1 else None, "reason": why, "record": record_fields(raw),
            "raw": raw.hex()}


def _dead_row(provider: str, arrays: dict[int, np.ndarray], reject) -> dict:
    rt, i, why = int(reject[0]), int(reject[1]), reject[2]
    return dead_entry(provider, arrays[rt][i:i + 1].tobytes(), why, RECORD_TABLES.get(rt, ""))


def store_batch(storage, buf: bytes, provider: str = "", url: str = "") -> tuple[dict[str, int], list[dict], dict]:
    """Store concatenated records, poison set aside: ``(rows inserted per table, dead-letter
    entries, the record arrays)``.

    Records of an unknown rtype or length, rows ``row_problems`` finds (vectorised, before the
    write) and rows the database refuses for a data error (``StorageDataError``: the rows it
    names, else found by bisecting: per table, then halves, each part its own transaction) become
    dead-letter entries; everything else is written. Raises ``StorageError`` (not a data error)
    on an outage or a timeout: nothing of the batch may be assumed stored then (a retry is
    idempotent)."""
    arrays, poison = split_records(buf)
    dead = [dead_entry(provider, raw, why) for raw, why in poison]
    rejects = []
    for rt, a in arrays.items():
        check_dtype(rt, a)
        rejects += [(rt, i, why) for i, why in row_problems(rt, a)]
    clean = arrays
    if rejects:
        dead += [_dead_row(provider, arrays, r) for r in rejects]
        clean = drop_rows(arrays, rejects)
    return _write_isolating(storage, clean, dead, provider, url), dead, arrays


def _write_isolating(storage, arrays: dict[int, np.ndarray], dead: list[dict], provider: str, url: str) -> dict[str, int]:
    arrays = {rt: a for rt, a in arrays.items() if len(a)}
    if not arrays:
        return {}
    try:
        return storage.write(arrays, checked=True)
    except StorageDataError as e:
        if e.rejects:
            dead += [_dead_row(provider, arrays, r) for r in e.rejects]
            return _write_isolating(storage, drop_rows(arrays, e.rejects), dead, provider, url)
        if sum(len(a) for a in arrays.values()) == 1:
            rt = next(iter(arrays))
            dead.append(_dead_row(provider, arrays, (rt, 0, redact_text(str(e), url))))
            return {}
        if len(arrays) > 1:
            parts = [{rt: a} for rt, a in arrays.items()]
        else:
            (rt, a), = arrays.items()
            h = len(a) // 2
            parts = [{rt: a[:h]}, {rt: a[h:]}]
        out: Counter[str] = Counter()
        for part in parts:
            out.update(_write_isolating(storage, part, dead, provider, url))
        return dict(out)


class DeadLetters:
    """The persister's dead-letter file: one JSON object per line (``ts_ns``, ``provider``,
    ``table``, ``rtype``, ``reason``, ``record`` = the fields, ``raw`` = the record's bytes in hex);
    ``write`` appends and fsyncs."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.count = 0

    def write(self, entries: list[dict]) -> None:
        if not entries:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        data = b"".join(json.dumps(e, default=_json_default).encode() + b"\n" for e in entries)
        with open(self.path, "ab") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        self.count += len(entries)


def _json_default(v):
    if isinstance(v, (bytes, bytearray)):
        return v.decode("utf-8", "replace")
    if isinstance(v, np.integer):
        return int(v)
    raise TypeError(type(v).__name__)


class Batch:
    """Records read and not yet committed: buffers, commit tokens, first-read time."""

    __slots__ = ("bufs", "tokens", "n", "t0", "held")

    def __init__(self):
        self.bufs: list[bytes] = []
        self.tokens: list = []
        self.held: list[Path] = []  # held files whose records are in this batch
        self.n = 0
        self.t0 = 0.0

    def add(self, buf: bytes, n: int, token) -> None:
        if not self.n:
            self.t0 = time.monotonic()
        self.bufs.append(buf)
        self.tokens.append(token)
        self.n += n


class Queue:
    """One provider as the persister sees it: its persist queue (once the worker created it),
    its held files, the batch in flight, its own retry clock and counters."""

    def __init__(self, name: str, shm_name: str, spool_dir: Path):
        self.name = name
        self.shm_name = shm_name
        self.spool_dir = spool_dir
        self.consumer: PersistConsumer | None = None
        self.batch = Batch()
        self.held = sorted(spool_dir.glob("persister.*.held")) if spool_dir.exists() else []
        self.retry_at = 0.0
        self.backoff = BACKOFF_MIN_S
        self.failing = False
        self.outage_wait = False  # the failure was an outage (retried as soon as storage answers)
        self.last_error = ""
        self.records = 0
        self.dead_letters = 0
        self.gaps = 0  # GAP records of this provider stored in the ledger
        self.behind_since: float | None = None  # when this provider fell behind (lag = now - this)
        self.read_all = True  # the last fill emptied the queue (the batch holds all there was)
        for tmp in spool_dir.glob("persister.*.held.tmp") if spool_dir.exists() else []:
            tmp.unlink(missing_ok=True)  # a spill cut short: its records were never committed

    def spool_bytes(self) -> int:
        try:
            return sum(e.stat().st_size for e in os.scandir(self.spool_dir) if e.is_file())
        except OSError:
            return 0

    def held_records(self) -> int:
        n = 0
        for p in self.held:
            try:
                with open(p, "rb") as f:
                    n += _HELD_HEAD.unpack(f.read(_HELD_HEAD.size))[2]
            except (OSError, struct.error):
                pass
        return n


def write_held(spool_dir: Path, bufs: list[bytes], n: int) -> Path:
    """Durably write concatenated records to a new held file (tmp, fsync, rename, fsync dir)."""
    spool_dir.mkdir(parents=True, exist_ok=True)
    seqs = [int(p.name.split(".")[1]) for p in spool_dir.glob("persister.*.held") if p.name.split(".")[1].isdigit()]
    path = spool_dir / f"persister.{max(seqs, default=0) + 1:010d}.held"
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(_HELD_HEAD.pack(HELD_MAGIC, LAYOUT_HASH, n))
        for b in bufs:
            f.write(b)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fd = os.open(spool_dir, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    return path


def read_held(path: Path) -> tuple[bytes, int]:
    """(records, count) of a held file. Raises ``StorageError`` on another layout or a bad file."""
    data = path.read_bytes()
    try:
        magic, layout, n = _HELD_HEAD.unpack_from(data)
    except struct.error:
        raise StorageError(f"{path}: not a persister held file") from None
    if magic != HELD_MAGIC:
        raise StorageError(f"{path}: not a persister held file")
    if layout != LAYOUT_HASH:
        raise StorageError(f"{path}: written with record layout {layout:#x}, this dm has {LAYOUT_HASH:#x}")
    return data[_HELD_HEAD.size:], n


# ----------------------------------------------------------------------------- the persister

class Persister:
    def __init__(self, cfg: Config):
        self.cfg = cfg
        self.url = cfg.storage.url
        self.safe_url = redact_url(self.url)
        self.timeout_s = cfg.storage.timeout_s
        self.storage = None  # opened, migrated and reconciled lazily (the database may be down)
        from dm.bars import plan_from_config

        #: bars built from the trades each write stores ([bars], dm.bars; None: disabled)
        self.bar_plan = plan_from_config(cfg)
        self.ready = False
        self.state = "connecting"
        self.last_error = ""
        self.last_ok_ns = 0
        self.last_ok = 0.0  # monotonic time of the last successful round trip
        self.incident_at: float | None = None
        self.incident_failures = 0
        self.connect_at = 0.0
        self.connect_backoff = BACKOFF_MIN_S
        self.latency = Histogram()
        self.queues: dict[str, Queue] = {
            p.name: Queue(p.name, cfg.persist_name(p.name), Path(cfg.spool_dir_for(p.name))) for p in cfg.enabled_providers
        }
        self.rows: Counter[str] = Counter()
        self.records = 0
        self.batches = 0
        self.failures = 0
        self.dead = DeadLetters(cfg.persister.dead_letter)
        self.cache = None
        self.cache_path = cfg.run_dir / cfg.instance / "instruments.sqlite"
        self.stopping = False
        self.spilled = False
        self.stats_path = cfg.run_dir / cfg.instance / "persister.stats.json"
        self._lock = threading.Lock()  # the stats thread reads what the main thread updates
        self._stats_stop = threading.Event()
        self._last_attach = 0.0
        self._last_maintain = time.monotonic()  # migrate() just ran it

    # -- storage connection ------------------------------------------------------------------
    def connect(self) -> bool:
        """Open (lazily), migrate and reconcile the instrument cache; on failure back off."""
        now = time.monotonic()
        try:
            if self.storage is None:
                self.storage = open_storage(self.url, timeout_s=self.timeout_s, connect=False)
                self.storage.bar_plan = self.bar_plan
            applied = self.storage.migrate()
            if applied:
                log.info("storage migrated", storage=self.safe_url, applied=applied)
        except StorageError as e:
            self._failed(e)
            self.connect_at = now + self.connect_backoff
            self.connect_backoff = min(self.connect_backoff * 2, BACKOFF_MAX_S)
            return False
        self.ready = True
        self.connect_backoff = BACKOFF_MIN_S
        self._ok()
        log.info("storage connected", storage=self.safe_url)
        self.reconcile_instruments()
        return True

    def reconcile_instruments(self) -> None:
        from dm.instruments import InstrumentCache, reconcile

        try:
            if self.cache is None:
                self.cache = InstrumentCache(self.cache_path)
            r = reconcile(self.cache, self.storage)
        except InstrumentError as e:
            log.error("instrument cache unusable; registrations stay in the database only", path=str(self.cache_path), error=str(e))
            return
        except StorageError as e:
            self._failed(e)
            return
        for c in r.conflicts:
            log.error("instrument registration conflict", detail=c)
        if r.imported or r.exported or r.conflicts:
            log.info("instrument cache reconciled", imported=r.imported, exported=r.exported, conflicts=len(r.conflicts))

    def _ok(self) -> bool:
        """A database call succeeded. Returns True when that ends an incident (then every
        provider waiting out an outage backoff retries at once)."""
        self.last_ok_ns = time.time_ns()
        self.last_ok = time.monotonic()
        if self.state == "ok":
            return False
        self.state = "ok"
        if self.incident_at is None:
            return False
        log.info("storage recovered", storage=self.safe_url, after_s=round(time.monotonic() - self.incident_at, 3),
                 failures=self.incident_failures)
        self.incident_at = None
        self.incident_failures = 0
        for q in self.queues.values():
            if q.failing and q.outage_wait:  # waited out the outage: retry now
                q.retry_at = 0.0
                q.backoff = BACKOFF_MIN_S
        return True

    def _failed(self, e: StorageError) -> None:
        self.failures += 1
        self.incident_failures += 1
        state = "hung" if isinstance(e, StorageTimeoutError) else "failing"
        self.last_error = redact_text(str(e), self.url)
        if self.incident_at is None:
            self.incident_at = time.monotonic()
        if state != self.state:
            log.error("storage hung" if state == "hung" else "storage failing; batches kept for retry",
                      storage=self.safe_url, error=self.last_error,
                      **({"timeout_s": self.timeout_s} if state == "hung" else {}))
            self.state = state

    # -- queues --------------------------------------------------------------------------------
    def attach(self) -> None:
        """Open the persist queues of enabled providers that exist (workers create them)."""
        for q in self.queues.values():
            if q.consumer is not None:
                continue
            try:
                q.consumer = PersistConsumer(q.shm_name, LAYOUT_HASH, str(q.spool_dir))
                log.info("attached persist queue", provider=q.name)
            except RingError:
                pass  # the worker has not created it yet

    def fill(self, q: Queue) -> int:
        """Read held files, then the queue, into the batch up to ``batch_records``. Returns
        records read."""
        limit = self.cfg.persister.batch_records
        b = q.batch
        got = 0
        while q.held and b.n < limit:
            path = q.held.pop(0)
            try:
                buf, n = read_held(path)
            except (OSError, StorageError) as e:
                log.error("held file unreadable; left in place", provider=q.name, path=str(path), error=str(e))
                continue
            b.add(buf, n, ("held", path))
            got += n
        if q.consumer is None:
            return got
        full = False
        while b.n < limit:
            r = q.consumer.read_batch(limit - b.n)
            if r is None:
                break
            b.add(*r)
            got += r[1]
        else:
            full = True  # the batch filled up: more may be waiting
        q.read_all = not full and not q.held
        if full and q.behind_since is None:
            q.behind_since = b.t0
        return got

    def flush(self, q: Queue) -> bool:
        """Store the batch (poison dead-lettered), then commit its positions. On an outage keep
        the batch and back off (this provider only)."""
        b = q.batch
        t0 = time.perf_counter()
        try:
            inserted, dead, arrays = store_batch(self.storage, b"".join(b.bufs), q.name, self.url)
        except StorageError as e:
            self.latency.observe(time.perf_counter() - t0)
            self._retry_later(q, e, outage=e.outage)
            return False
        except Exception as e:  # noqa: BLE001 - a bug must not stop the other providers
            self.latency.observe(time.perf_counter() - t0)
            log.exception("batch could not be stored (bug?); kept for retry", provider=q.name, records=b.n)
            self._retry_later(q, StorageError(f"{type(e).__name__}: {e}"), outage=False, logged=True)
            return False
        self.latency.observe(time.perf_counter() - t0)
        self.dead.write(dead)  # fsync'd before the positions are committed
        if dead:
            by_reason = Counter(d["reason"].split(";")[0][:120] for d in dead)
            log.error("records dead-lettered; the rest of the batch is stored", provider=q.name, count=len(dead),
                      file=str(self.dead.path), reasons=dict(by_reason.most_common(3)))
        self._commit(q)
        defs = arrays.get(RType.INSTRUMENT_DEF)
        if defs is not None and len(defs):
            self.cache_registrations(defs, dead)
        gaps = arrays.get(RType.GAP)
        if gaps is not None and len(gaps):
            self.note_gaps(q, gaps, sum(1 for d in dead if d.get("rtype") == RType.GAP))
        with self._lock:
            self.rows.update({k: v for k, v in inserted.items() if v})
            self.records += b.n
            self.batches += 1
            q.records += b.n
            q.dead_letters += len(dead)
            q.batch = Batch()
        if q.failing and not q.outage_wait:
            log.info("provider's batches stored again", provider=q.name)
        q.backoff = BACKOFF_MIN_S
        q.failing = q.outage_wait = False
        if q.read_all and not q.held:
            # caught up: everything read before this batch's fill is stored. Records that arrived
            # since are a new batch with its own age, not lag carried over from the incident (the
            # loop alone cannot tell: under steady input it rarely sees an empty batch).
            q.behind_since = None
        q.last_error = ""
        q.retry_at = 0.0
        if self._ok():
            self.reconcile_instruments()
        return True

    def _commit(self, q: Queue) -> None:
        for tok in q.batch.tokens:
            if tok[0] == "held":
                tok[1].unlink(missing_ok=True)
            else:
                q.consumer.commit(tok)

    def _retry_later(self, q: Queue, e: StorageError, outage: bool, logged: bool = False) -> None:
        """Keep the provider's batch and retry it after its own backoff. An outage is the
        storage's state (``failing``/``hung``); a refusal of this provider's batch by a database
        that answers (e.g. a trigger, a permission, a missing table) is that provider's alone."""
        now = time.monotonic()
        q.retry_at = now + q.backoff
        q.backoff = min(q.backoff * 2, BACKOFF_MAX_S)
        q.outage_wait = outage
        if q.behind_since is None:
            q.behind_since = q.batch.t0 or now
        q.last_error = redact_text(str(e), self.url)
        if outage:
            self._failed(e)
        else:
            self.failures += 1
            if not q.failing and not logged:
                log.error("storage refused this provider's batch; retrying it alone", provider=q.name,
                          records=q.batch.n, error=q.last_error, retry_in_s=round(q.retry_at - now, 3))
        q.failing = True

    def note_gaps(self, q: Queue, gaps: np.ndarray, refused: int) -> None:
        """GAP records a worker sent (the ledger's only way in: workers never write storage),
        stored with the batch: one log line per batch with their kinds; counted in the stats
        (``queues.<provider>.gaps``, dead-lettered ones not included)."""
        kinds = Counter(k.decode("ascii", "replace") for k in gaps["kind"].tolist())
        q.gaps += len(gaps) - refused
        log.info("gaps recorded in the ledger", provider=q.name, count=len(gaps) - refused, kinds=dict(kinds))

    def cache_registrations(self, defs: np.ndarray, dead: list[dict]) -> None:
        """Add the registrations of stored INSTRUMENT_DEF records to the local cache (workers
        started without a database find them there)."""
        if self.cache is None:
            return
        refused = {d["raw"] for d in dead if d.get("rtype") == RType.INSTRUMENT_DEF}
        rows = zip(defs["instrument_id"].tolist(), text_column(defs, "symbol"), text_column(defs, "exchange"),
                   text_column(defs, "raw_symbol"), defs["publisher_id"].tolist(), defs["size_precision"].tolist())
        try:
            for i, row in enumerate(rows):
                if defs[i:i + 1].tobytes().hex() not in refused:
                    self.cache.insert_instrument(*row)
        except InstrumentError as e:
            log.error("instrument cache not updated", path=str(self.cache_path), error=str(e))

    # -- stop while storage is down --------------------------------------------------------
    def spill(self, q: Queue) -> None:
        """Stop while storage is down: write the batch and everything still in the shm queue to a
        held file (durably), then commit their positions. Spool-file reads are not spilled (they
        are on disk already) and not committed: the next run reads them again."""
        b = q.batch
        bufs, n, tokens = list(b.bufs), b.n, list(b.tokens)
        if q.consumer is not None:
            while True:
                r = q.consumer.read_batch(1 << 16)
                if r is None:
                    break
                if r[2][0] == 0:  # from the queue
                    bufs.append(r[0])
                    n += r[1]
                    tokens.append(r[2])
                # else: from a spool file: stays there (uncommitted)
        if n == 0:
            return
        # records of held files in the batch are rewritten into the new file, then those go
        path = write_held(q.spool_dir, bufs, n)
        for tok in tokens:
            if tok[0] == "held":
                tok[1].unlink(missing_ok=True)
            else:
                q.consumer.commit(tok)
        q.batch = Batch()
        q.held = []  # unread held files stay on disk for the next run
        log.warning("storage down at stop: records spilled to disk for the next run", provider=q.name,
                    records=n, path=str(path))

    # -- main loop -------------------------------------------------------------------------------
    def run(self) -> None:
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)
        log.info("persister starting", storage=self.safe_url, timeout_s=self.timeout_s,
                 providers=list(self.queues), held_files=sum(len(q.held) for q in self.queues.values()))
        stats = threading.Thread(target=self._stats_loop, name="dm-persister-stats", daemon=True)
        stats.start()
        max_age = self.cfg.persister.batch_ms / 1000.0
        limit = self.cfg.persister.batch_records
        idle_sleep = min(max_age, 0.005)
        try:
            while True:
                now = time.monotonic()
                if now - self._last_attach > 0.1:
                    self._last_attach = now
                    self.attach()
                if not self.ready and now >= self.connect_at and not self.stopping:
                    self.connect()
                moved = 0
                for q in self.queues.values():
                    moved += self.fill(q)
                    b = q.batch
                    now = time.monotonic()
                    if not b.n:
                        if q.behind_since is not None and q.consumer is not None and not q.held:
                            q.behind_since = None  # read everything, stored everything
                        continue
                    if not self.ready:
                        if q.behind_since is None:
                            q.behind_since = b.t0
                        continue
                    due = b.n >= limit or now - b.t0 >= max_age or self.stopping
                    if due and now >= q.retry_at:
                        self.flush(q)
                if self.stopping:
                    if self._stop_step(moved):
                        break
                    continue
                if self.ready and moved == 0 and time.monotonic() - self._last_maintain >= MAINTAIN_EVERY_S:
                    self._maintain()
                if self.ready and moved == 0 and time.monotonic() - self.last_ok >= PING_EVERY_S:
                    self._ping()
                if moved == 0:
                    time.sleep(idle_sleep)
        finally:
            self._stats_stop.set()
            stats.join(2)
        self.finish()

    def _stop_step(self, moved: int) -> bool:
        """One step of stopping; True when done. Storage up: drain everything to storage (done
        when a pass read nothing and nothing is held). Storage down (never connected, or the last
        attempt failed): spill what is held and in the queues."""
        down = not self.ready or self.state in ("failing", "hung")
        for q in self.queues.values():
            if down or q.failing:  # a provider whose batch failed (even for a bug) is not retried now
                self.spill(q)
                self.spilled = True
        if down:
            return True
        return moved == 0 and not any(q.batch.n or q.held for q in self.queues.values())

    def _maintain(self) -> None:
        """Partitions ahead (``Storage.maintain``), when the queues are idle; a failure is the
        storage's state like any other call and is retried at the next interval."""
        self._last_maintain = time.monotonic()
        try:
            created = self.storage.maintain()
        except StorageError as e:
            self._failed(e)
            return
        if created:
            log.info("storage maintenance: partitions created ahead", created=len(created))

    def _ping(self) -> None:
        t0 = time.perf_counter()
        try:
            self.storage.ping()
        except StorageError as e:
            self._failed(e)
            self.last_ok = time.monotonic()  # next ping in a second, not at once
            return
        self.latency.observe(time.perf_counter() - t0)
        if self._ok():
            self.reconcile_instruments()

    def finish(self) -> None:
        """After the final drain or spill: unlink queues whose producer closed them and that are
        empty; close storage and the cache."""
        for q in self.queues.values():
            c = q.consumer
            if c is None:
                continue
            if c.pending() == 0 and c.producer_closed():
                c.unlink()
                log.info("persist queue drained and removed", provider=q.name)
            else:
                log.warning("persist queue left for the next run", provider=q.name, pending=c.pending())
        self.write_stats()
        if self.storage is not None:
            self.storage.close()
        if self.cache is not None:
            self.cache.close()
        log.info("persister stopped", records=self.records, rows=dict(self.rows), batches=self.batches,
                 dead_letters=self.dead.count, spilled=self.spilled)

    def _on_signal(self, signum, frame) -> None:
        self.stopping = True

    # -- stats -------------------------------------------------------------------------------------
    def _stats_loop(self) -> None:
        while not self._stats_stop.wait(STATS_EVERY_S):
            try:
                self.write_stats()
            except Exception:  # noqa: BLE001 - never let stats kill the persister
                log.exception("stats file not written")

    def stats(self) -> dict:
        now = time.monotonic()
        with self._lock:
            queues = {}
            for q in self.queues.values():
                c = q.consumer
                pending = q.held_records()
                if c is not None:
                    try:
                        pending += c.pending()
                    except RingError:
                        pass
                else:
                    pending += q.batch.n
                lag = 0.0
                if q.batch.n or q.behind_since is not None or q.held:
                    starts = [t for t in (q.behind_since, q.batch.t0 if q.batch.n else None) if t]
                    lag = max(0.0, now - min(starts)) if starts else 0.0
                queues[q.name] = {"attached": c is not None, "pending": int(pending), "lag_s": round(lag, 3),
                                  "records": q.records, "dead_letters": q.dead_letters, "gaps": q.gaps,
                                  "spool_bytes": q.spool_bytes(), "state": "retrying" if q.failing else "ok",
                                  "last_error": q.last_error}
            return {
                "pid": os.getpid(),
                "ts": time.time(),
                "storage": {"state": self.state, "last_error": self.last_error, "last_ok_ns": self.last_ok_ns,
                            "url": self.safe_url, "timeout_s": self.timeout_s,
                            "write_latency_s": self.latency.snapshot()},
                "queues": queues,
                "rows": dict(self.rows),
                "dead_letters": self.dead.count,
                "records": self.records,
                "batches": self.batches,
                "failures": self.failures,
            }

    def write_stats(self) -> None:
        self.stats_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.stats_path.with_name(f"{self.stats_path.name}.{threading.get_ident()}.tmp")
        tmp.write_text(json.dumps(self.stats()))
        os.replace(tmp, self.stats_path)


def run_persister(cfg: Config) -> None:
    Persister(cfg).run()
