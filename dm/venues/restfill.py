"""What every venue REST gap filler shares (``dm/venues/<venue>/filler.py`` subclasses it).

A venue filler closes a TRADE gap of the ledger from the venue's public REST trade history:
``dm.backfill.fill_gaps`` hands it each open gap routed to the venue (``[routing]``
``historical = "<venue kind>"``) whose window is measured in ns (``GapUnits.NS``); the filler
pages through the venue's trade history over ``[start_ns, end_ns)``, decodes every trade with
the venue's own live codec (so a refetched trade is the same TRADE record, with the same
``ts_event``, ``trade_id``, price and size, as the one the websocket would have delivered, and the
storage's unique keys make it a no-op when it is already stored), and commits the records of
each page in ONE transaction with the ledger's chunk row (``backfill_jobs`` / ``backfill_chunks``
of migration 005: provider = venue kind, dataset = exchange, schema ``trades``, stype_in
``venue``, cost 0). A rerun of a finished job fetches nothing; a second fill of the same window
stores 0 rows.

``ts_recv`` of a refetched trade is the time dm received the REST answer (ns since the UNIX
epoch): that is when dm learnt of it.

Base URLs: ``rest_urls={kind: url}`` (``dm backfill fill-gaps`` passes the ``rest_url`` of every
``[providers.*]`` section of the config, so a replay server answers in tests and the demo), else
the venue's public URL (``PUBLIC_REST_URL`` of the subclass).
"""
from __future__ import annotations

import time
from typing import Callable, Iterator

import numpy as np
import orjson
import urllib.error
import urllib.parse
import urllib.request

from dm.errors import BackfillError, DmError
from dm.log import get as get_log
from dm.records import DTYPES, RType

log = get_log("dm.backfill.venue")

__all__ = ["VenueRestFiller", "trade_array"]


def trade_array(chunks: list[bytes]) -> np.ndarray:
    """Concatenated codec outputs holding TRADE records only → one TRADE array."""
    return np.frombuffer(b"".join(chunks), DTYPES[RType.TRADE]).copy()


class VenueRestFiller:
    """Base of a venue's REST trade gap filler (``dm.backfill.GapFiller``).

    Subclasses set ``KIND`` (venue kind = provider name in ``[routing]``), ``PUBLIC_REST_URL``
    and implement :meth:`pages` (yield one TRADE array per REST page). ``get_json`` does the
    HTTP GET with bounded retries on 429 / 5xx / timeouts (``[backfill] max_retries``,
    ``backoff_base_s`` .. ``backoff_max_s``); a 4xx is ``BackfillError`` with the venue's text."""

    KIND = ""
    PUBLIC_REST_URL = ""

    def __init__(self, storage, settings, *, rest_urls: dict[str, str] | None = None, sleep: Callable[[float], None] = time.sleep,
                 page_limit: int | None = None, timeout_s: float = 30.0, **_kw):
        from dm.backfill import Ledger
        from dm.instruments import InstrumentRegistry

        self.st = storage
        self.settings = settings
        self.ledger = Ledger(storage)
        self.registry = InstrumentRegistry(storage)
        self.base = ((rest_urls or {}).get(self.KIND) or self.PUBLIC_REST_URL).rstrip("/")
        self.sleep = sleep
        self.page_limit = page_limit or 1000
        self.timeout_s = timeout_s
        self.requests = 0

    # -- HTTP -------------------------------------------------------------------------------
    def get_json(self, path: str, params: dict, *, parse_float=None):
        """GET ``base + path?params`` → (raw body bytes, parsed JSON). Raises ``BackfillError``."""
        url = f"{self.base}{path}?{urllib.parse.urlencode(params)}"
        cfg = self.settings.backfill
        delay = cfg.backoff_base_s
        for attempt in range(cfg.max_retries + 1):
            self.requests += 1
            try:
                with urllib.request.urlopen(url, timeout=self.timeout_s) as resp:
                    body = resp.read()
                break
            except urllib.error.HTTPError as e:
                text = e.read()[:300].decode("utf-8", "replace")
                if e.code != 429 and e.code < 500:
                    raise BackfillError(f"{self.KIND} {path}: HTTP {e.code}: {text}") from None
                why = f"HTTP {e.code}: {text}"
            except (urllib.error.URLError, TimeoutError, OSError) as e:
                why = repr(e)
            if attempt == cfg.max_retries:
                raise BackfillError(f"{self.KIND} {path}: {why} (gave up after {cfg.max_retries} retries)")
            log.warning("venue REST retry", venue=self.KIND, path=path, error=why, retry_in_s=delay)
            self.sleep(delay)
            delay = min(delay * 2, cfg.backoff_max_s)
        if parse_float is not None:
            import json

            return body, json.loads(body, parse_float=parse_float)
        return body, orjson.loads(body)

    # -- GapFiller ---------------------------------------------------------------------------
    def plan_gap(self, gap: dict, targets, start_ns: int, end_ns: int):
        from dm.backfill import GapPlan

        syms = ", ".join(sorted(t.symbol for t in targets))
        return GapPlan(gap, self.KIND, 0, f"{self.KIND}: trades of {syms} over [{start_ns}, {end_ns}) from public REST (free)",
                       (list(targets), start_ns, end_ns, False))

    def plan_id_gap(self, gap: dict, targets, first_id: int, last_id: int):
        """A gap of venue trade ids ``first_id..last_id`` (inclusive): the ledger's chunk then
        holds ids in ``start_ns``/``end_ns``/``resume_ns`` (``stype_in`` ``trade_id``)."""
        from dm.backfill import GapPlan

        syms = ", ".join(sorted(t.symbol for t in targets))
        return GapPlan(gap, self.KIND, 0, f"{self.KIND}: trades {first_id}..{last_id} of {syms} by trade id from public REST (free)",
                       (list(targets), first_id, last_id + 1, True))

    def fill(self, plan) -> tuple[list[int], int]:
        """One job per instrument; its trades over the window stored page by page, each page
        committed with the chunk's progress. Returns (job ids, rows stored)."""
        from dm.backfill import job_key

        targets, start_ns, end_ns, by_id = plan.opaque
        stype = "trade_id" if by_id else "venue"
        gid = int(plan.gap["id"])
        jobs, rows = [], 0
        for t in targets:
            inst = self.registry.by_id(t.instrument_id)
            if inst is None or not inst.venue_symbol:
                raise BackfillError(f"{self.KIND}: instrument {t.instrument_id} has no venue symbol in the registry")
            vsym = inst.venue_symbol
            key = job_key(self.KIND, t.exchange, "trades", stype, [vsym], start_ns, end_ns, t.exchange, gid)
            now = time.time_ns()
            jid = self.ledger.create_job(key, "fill-gaps", self.KIND, t.exchange, "trades", stype, [vsym], t.exchange,
                                         start_ns, end_ns, gid, [(vsym, start_ns, end_ns, 0, 0, 0)], now)
            jobs.append(jid)
            chunk = self.ledger.chunks(jid)[0]
            if chunk["state"] == "done":
                continue
            self.ledger.claim_job(jid)
            try:
                pages = self.pages_by_id(inst, start_ns, end_ns - 1) if by_id else self.pages(inst, start_ns, end_ns)
                for arr, nbytes in pages:
                    resume = (int(arr["trade_id"].max()) + 1 if by_id else int(arr["ts_event"].max())) if len(arr) else 0
                    rows += self._commit(int(chunk["id"]), arr, nbytes, resume)
            except DmError as e:
                self.ledger.fail_chunk(int(chunk["id"]), str(e))
                self.ledger.finish_job(jid, "failed", str(e))
                raise BackfillError(f"gap {gid}: {self.KIND} {vsym}: {e}") from None
            self.ledger.run(lambda c: c.exec(
                "UPDATE backfill_chunks SET state = 'done', resume_ns = end_ns, updated_ns = ? WHERE id = ?",
                (time.time_ns(), int(chunk["id"]))))
            self.ledger.finish_job(jid, "done")
            log.info("venue gap filled", venue=self.KIND, symbol=vsym, gap_id=gid, job_id=jid, rows=rows, requests=self.requests)
        return jobs, rows

    def _commit(self, chunk_id: int, arr: np.ndarray, nbytes: int, resume: int) -> int:

        def fn(c, inserted):
            c.exec("UPDATE backfill_chunks SET state = 'partial', resume_ns = CASE WHEN ? > resume_ns THEN ? ELSE resume_ns END,"
                   " records = records + ?, rows = rows + ?, bytes = bytes + ?, requests = requests + 1, updated_ns = ?"
                   " WHERE id = ?", (resume, resume, len(arr), inserted.get("trades", 0), nbytes, time.time_ns(), chunk_id))
            return inserted.get("trades", 0)
        batches = {RType.TRADE: arr} if len(arr) else {}
        n, _ = self.ledger.commit(batches, fn)
        return int(n)

    def pages(self, inst, start_ns: int, end_ns: int) -> Iterator[tuple[np.ndarray, int]]:
        """Yield (TRADE array with ts_event in ``[start_ns, end_ns)``, body bytes) per REST page."""
        raise NotImplementedError

    def pages_by_id(self, inst, first_id: int, last_id: int) -> Iterator[tuple[np.ndarray, int]]:
        """Yield (TRADE array of trade ids ``first_id..last_id``, body bytes) per REST page
        (venues whose descriptor lists the kind in ``id_gap_kinds``)."""
        raise BackfillError(f"{self.KIND} cannot refetch trades by id")

    def codec(self, inst):
        """The venue's live codec mapping ``inst``'s venue symbol (at its size precision)."""
        from dm import venues

        v = venues.venue(self.KIND)
        c = v.codec_class()(v.publisher_id)
        c.add_symbol(inst.venue_symbol, inst.instrument_id, inst.size_precision if inst.size_precision is not None else 9)
        return c
