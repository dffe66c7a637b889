"""The persister: drains every worker's persist queue into storage.

Batches close on size (``persister.batch_records``) or age (``persister.batch_ms`` since the
batch's first record), whichever comes first. A batch is split by rtype into numpy structured
arrays and written in one storage transaction (PostgreSQL binary COPY, or SQLite); the queue
positions are committed only after the database commit, so a crash re-delivers at most the
uncommitted batch, which the storage's uniqueness keys make idempotent. When the database
fails, the batch is kept and retried with backoff (the worker's queue spills to disk
meanwhile): the persister does not exit, so a database outage does not trip the supervisor's
flapping limit. On SIGTERM it drains every queue (and spool) to the end, then unlinks the queues
whose producer has closed them.
"""
from __future__ import annotations

import json
import os
import signal
import time
from collections import Counter

import numpy as np

from dm import log as dmlog
from dm._ring import PersistConsumer, split_by_rtype
from dm.config import Config
from dm.errors import RingError, StorageError
from dm.records import DTYPES, LAYOUT_HASH
from dm.storage import open_storage

log = dmlog.get("dm.persister")


def to_arrays(buf: bytes) -> dict[int, np.ndarray]:
    """Concatenated records → rtype → structured array (a copy, so the batch can be released)."""
    out = {}
    for rtype, chunk in split_by_rtype(buf).items():
        dt = DTYPES.get(rtype)
        if dt is None:
            raise StorageError(f"persist queue holds a record of unknown rtype {rtype:#x}")
        out[rtype] = np.frombuffer(chunk, dtype=dt)
    return out


class Batch:
    """Records read from one queue and not yet committed: buffers, queue tokens, age."""

    __slots__ = ("bufs", "tokens", "n", "t0")

    def __init__(self):
        self.bufs: list[bytes] = []
        self.tokens: list = []
        self.n = 0
        self.t0 = 0.0

    def add(self, buf: bytes, n: int, token) -> None:
        if not self.n:
            self.t0 = time.monotonic()
        self.bufs.append(buf)
        self.tokens.append(token)
        self.n += n


class Persister:
    def __init__(self, cfg: Config):
        self.cfg = cfg
        self.storage = open_storage(cfg.storage.url)
        self.consumers: dict[str, PersistConsumer] = {}
        self.rows: Counter[str] = Counter()
        self.records = 0
        self.batches = 0
        self.failures = 0
        self.retry_at = 0.0
        self.backoff = 0.05
        self.stopping = False
        self.stats_path = cfg.run_dir / cfg.instance / "persister.stats.json"

    def attach(self) -> None:
        """Open the queues of enabled providers that exist (workers create them)."""
        for p in self.cfg.enabled_providers:
            if p.name in self.consumers:
                continue
            try:
                self.consumers[p.name] = PersistConsumer(self.cfg.persist_name(p.name), LAYOUT_HASH, str(self.cfg.spool_dir_for(p.name)))
                log.info("attached persist queue", provider=p.name)
            except RingError:
                pass  # the worker has not created it yet

    def fill(self, c: PersistConsumer, b: Batch) -> int:
        """Read from the queue into the batch up to ``batch_records``. Returns records read."""
        limit = self.cfg.persister.batch_records
        got = 0
        while b.n < limit:
            r = c.read_batch(limit - b.n)
            if r is None:
                break
            b.add(*r)
            got += r[1]
        return got

    def flush(self, name: str, c: PersistConsumer, b: Batch) -> bool:
        """Write the batch in one transaction, then commit its queue positions. On a storage
        failure keep the batch for a retry and back off."""
        try:
            inserted = self.storage.write(to_arrays(b"".join(b.bufs)))
        except StorageError as e:
            self.failures += 1
            self.retry_at = time.monotonic() + self.backoff
            log.error("storage write failed; batch kept for retry", provider=name, records=b.n, retry_in_s=self.backoff, error=str(e))
            self.backoff = min(self.backoff * 2, 5.0)
            return False
        for tok in b.tokens:
            c.commit(tok)
        self.rows.update(inserted)
        self.records += b.n
        self.batches += 1
        self.backoff = 0.05
        b.__init__()
        return True

    def run(self) -> None:
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)
        self.storage.migrate()
        log.info("persister ready", storage=self.cfg.storage.url.split("@")[-1], providers=[p.name for p in self.cfg.enabled_providers])
        max_age = self.cfg.persister.batch_ms / 1000.0
        idle_sleep = min(max_age, 0.005)
        last_stats = 0.0
        batches: dict[str, Batch] = {}
        while True:
            if len(self.consumers) < len(self.cfg.enabled_providers):
                self.attach()
            moved = 0
            now = time.monotonic()
            for name, c in list(self.consumers.items()):
                b = batches.setdefault(name, Batch())
                moved += self.fill(c, b)
                due = b.n >= self.cfg.persister.batch_records or now - b.t0 >= max_age or self.stopping
                if b.n and due and now >= self.retry_at:
                    self.flush(name, c, b)
            if now - last_stats > 1.0:
                self.write_stats()
                last_stats = now
            if self.stopping and moved == 0 and not any(b.n for b in batches.values()):
                break
            if moved == 0:
                time.sleep(idle_sleep)
        self.finish()

    def finish(self) -> None:
        """After the final drain: unlink queues whose producer closed them and that are empty."""
        for name, c in self.consumers.items():
            if c.pending() == 0 and c.producer_closed():
                c.unlink()
                log.info("persist queue drained and removed", provider=name)
            else:
                log.warning("persist queue left for the next run", provider=name, pending=c.pending())
        self.write_stats()
        self.storage.close()
        log.info("persister stopped", records=self.records, rows=dict(self.rows), batches=self.batches)

    def _on_signal(self, signum, frame) -> None:
        self.stopping = True

    def write_stats(self) -> None:
        self.stats_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.stats_path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"pid": os.getpid(), "records": self.records, "rows": dict(self.rows), "batches": self.batches, "failures": self.failures, "ts": time.time()}))
        os.replace(tmp, self.stats_path)


def run_persister(cfg: Config) -> None:
    Persister(cfg).run()
