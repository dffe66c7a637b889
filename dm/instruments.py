"""Instrument registry: (canonical symbol, exchange) → persistent u32 ``instrument_id`` (DESIGN §4).

Id choice
---------
Candidate ``k`` of an instrument (k = 0, 1, 2, ...) is::

    key_k = f"{symbol}@{exchange}"            if k == 0
            f"{symbol}@{exchange}#{k}"        otherwise          (UTF-8 encoded)
    candidate(symbol, exchange, k) = int.from_bytes(blake2b(key_k, digest_size=8).digest(), "big") >> 32

i.e. the high 32 bits of a 64-bit BLAKE2b digest (``hashlib.blake2b`` with ``digest_size=8``,
which is *not* a prefix of the 64-byte digest: the digest size is part of BLAKE2's parameter
block). It is stable across processes, Python versions and machines, unlike ``hash()``. The
**first choice** is candidate 0. Id 0 is never used (``0`` means "no instrument" in records).

An instrument gets the first candidate of its chain that is non-zero and not yet taken *at the
moment it is assigned*, and that choice is persisted in the store; from then on the store, not
the hash, is the truth, so an id never changes, whatever symbols come or go later.

What determinism can promise (and the tests check exactly this):

* assigning the same sequence of instruments to an empty store gives the same ids, whatever the
  store, batching (``resolve`` vs ``resolve_many``) or process — a pure function of the sequence;
* an instrument whose first choice no other instrument's chain reaches gets its first choice,
  independent of order (with ``n`` symbols a first-choice collision has probability about
  ``n**2 / 2**33``: ~5% at 20,000 symbols, expect ~5 at 200,000);
* among instruments competing for one id, the one assigned first wins it and the later ones
  move down their own chains; so two registries built in different orders agree on a competing
  group exactly when they assigned its members in the same relative order;
* an id, once persisted, never changes (reload, new symbols, other processes).

Concurrency: ``store.insert_instrument`` must be atomic and return ``False`` when the id or the
(symbol, exchange) is already taken (a UNIQUE constraint on each). On ``False`` the registry
reloads the store and retries, so two processes assigning concurrently converge on the ids the
store accepted first.

Store protocol (implemented by the SQL storages in ``dm.storage``, by :class:`MemoryStore` and
by :class:`InstrumentCache`)::

    load_instruments() -> Iterable[tuple[instrument_id, symbol, exchange, venue_symbol, publisher_id
                                         [, size_precision]]]
    insert_instrument(instrument_id, symbol, exchange, venue_symbol, publisher_id
                      [, size_precision=...]) -> bool

``size_precision`` (the instrument's size scale, 0..18, None when unknown) is passed to
``insert_instrument`` only when the caller gives one, so two-method stores without it still work.

Local cache (DB-less start)
---------------------------
:class:`InstrumentCache` is a store in one SQLite file per dm instance
(``cache_path(run_dir, instance)`` = ``run_dir/<instance>/instruments.sqlite``, WAL mode), shared
by the instance's workers: each opens it and builds an :class:`InstrumentRegistry` on it, so a
worker starts and assigns ids while the database is down; the UNIQUE constraints on the id and
on (symbol, exchange) arbitrate concurrent assignment exactly as the database would. The
persister, the only writer of the database, reconciles the cache with the database each time it
connects (:func:`reconcile`): the database is the source of truth for ids already assigned
there; registrations only the cache knows are inserted into the database (they normally arrive
as INSTRUMENT_DEF records too).
"""
from __future__ import annotations

import hashlib
import os
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, NamedTuple, Protocol

from dm.errors import InstrumentError

_blake2b = hashlib.blake2b

__all__ = [
    "Instrument",
    "InstrumentStore",
    "MemoryStore",
    "InstrumentRegistry",
    "InstrumentCache",
    "cache_path",
    "reconcile",
    "definition_record",
    "seed_from_storage",
    "candidate",
    "first_choice",
    "MAX_PROBES",
]

#: Longest candidate chain tried before giving up (reaching it means the u32 space is nearly
#: full or the store misbehaves): raises ``InstrumentError``.
MAX_PROBES = 1024
U32_MAX = 0xFFFF_FFFF


_GOOD_EXCHANGES: set[str] = set()


def _check_names(symbol: str, exchange: str) -> None:
    if type(exchange) is not str or exchange not in _GOOD_EXCHANGES:
        if not isinstance(exchange, str) or not exchange or exchange != exchange.strip() or "@" in exchange or "#" in exchange:
            raise InstrumentError(f"invalid exchange {exchange!r}: empty, padded or contains '@' or '#'")
        _GOOD_EXCHANGES.add(exchange)
    if not isinstance(symbol, str) or not symbol or "@" in symbol or symbol[0].isspace() or symbol[-1].isspace():
        raise InstrumentError(f"invalid symbol {symbol!r}: empty, padded or contains '@'")


def _candidate(symbol: str, exchange: str, k: int) -> int:
    key = f"{symbol}@{exchange}" if k == 0 else f"{symbol}@{exchange}#{k}"
    return int.from_bytes(_blake2b(key.encode(), digest_size=8).digest(), "big") >> 32


def candidate(symbol: str, exchange: str, k: int = 0) -> int:
    """Candidate ``k`` (≥ 0) of ``symbol@exchange``: high 32 bits of BLAKE2b-64 of
    ``symbol@exchange`` (k = 0) or ``symbol@exchange#k``; an int in [0, 2**32). May be 0
    (then skipped by the registry). Raises ``InstrumentError`` for names containing ``@``
    (or ``#`` in the exchange), which would make keys ambiguous."""
    _check_names(symbol, exchange)
    return _candidate(symbol, exchange, k)


def first_choice(symbol: str, exchange: str) -> int:
    """The deterministic first-choice id of ``symbol@exchange`` (``candidate(..., 0)``)."""
    return candidate(symbol, exchange, 0)


class Instrument(NamedTuple):
    """One registered instrument: ``instrument_id`` (u32, never 0), canonical ``symbol``,
    ``exchange``, the ``venue_symbol`` it was first seen as, its ``publisher_id`` and its
    ``size_precision`` (None when the store does not know it). An immutable named tuple (cheap
    to build at 200,000 instruments)."""

    instrument_id: int
    symbol: str
    exchange: str
    venue_symbol: str = ""
    publisher_id: int = 0
    size_precision: int | None = None


class InstrumentStore(Protocol):
    def load_instruments(self) -> Iterable[tuple[int, str, str, str, int]]: ...

    def insert_instrument(
        self, instrument_id: int, symbol: str, exchange: str, venue_symbol: str, publisher_id: int
    ) -> bool: ...


class MemoryStore:
    """In-memory store (tests, tools). Thread-safe; ``insert_instrument`` returns ``False`` when
    the id or the (symbol, exchange) is taken, like the SQL stores' UNIQUE constraints."""

    def __init__(self, rows: Iterable[tuple] = ()) -> None:
        self._lock = threading.Lock()
        self._rows: dict[int, tuple] = {}
        self._keys: set[tuple[str, str]] = set()
        self.inserts = 0
        for r in rows:
            if not self.insert_instrument(*r):
                raise InstrumentError(f"MemoryStore: duplicate row {r!r}")
        self.inserts = 0  # successful inserts after construction (seed rows not counted)

    def load_instruments(self) -> list[tuple]:
        with self._lock:
            return list(self._rows.values())

    def insert_instrument(
        self, instrument_id: int, symbol: str, exchange: str, venue_symbol: str = "", publisher_id: int = 0,
        size_precision: int | None = None,
    ) -> bool:
        with self._lock:
            if instrument_id in self._rows or (symbol, exchange) in self._keys:
                return False
            row = (instrument_id, symbol, exchange, venue_symbol, publisher_id)
            self._rows[instrument_id] = row if size_precision is None else row + (size_precision,)
            self._keys.add((symbol, exchange))
            self.inserts += 1
            return True


class InstrumentRegistry:
    """(symbol, exchange) → instrument id, loaded from ``store`` at construction; lookups are in
    memory, assignments go to the store first (it is the source of truth).

    Thread-safe (one lock). Not async: the SQL store calls block, so call ``resolve_many`` once
    at start-up for the configured symbols and ``resolve`` rarely afterwards (e.g. a
    ``SUBSCRIBE`` for a new symbol).
    """

    def __init__(self, store: InstrumentStore) -> None:
        self._store = store
        self._lock = threading.RLock()
        self._by_key: dict[tuple[str, str], Instrument] = {}
        self._by_id: dict[int, Instrument] = {}
        self.reloads = 0  # how many times the store was (re)loaded
        self.conflicts = 0  # inserts the store refused (a concurrent writer got there first)
        self.reload()

    # -- loading -----------------------------------------------------------------------------
    def reload(self) -> None:
        """Replace the in-memory maps with the store's rows. Raises ``InstrumentError`` if the
        store holds an invalid id or duplicate ids / (symbol, exchange) pairs."""
        by_key: dict[tuple[str, str], Instrument] = {}
        by_id: dict[int, Instrument] = {}
        rows = getattr(self._store, "instrument_rows", None)  # storages: with each size_precision
        for row in (rows() if rows is not None else self._store.load_instruments()):
            iid, symbol, exchange, venue_symbol, publisher_id = row[:5]
            precision = row[5] if len(row) > 5 else None
            iid = int(iid)
            if not 0 < iid <= U32_MAX:
                raise InstrumentError(f"store holds invalid instrument_id {iid} for {symbol}@{exchange}")
            inst = Instrument(iid, symbol, exchange, venue_symbol or "", int(publisher_id or 0),
                              None if precision is None else int(precision))
            if iid in by_id or (symbol, exchange) in by_key:
                raise InstrumentError(f"store holds a duplicate instrument: {inst!r}")
            by_id[iid] = inst
            by_key[(symbol, exchange)] = inst
        with self._lock:
            self._by_key, self._by_id = by_key, by_id
            self.reloads += 1

    # -- lookups -----------------------------------------------------------------------------
    def get(self, symbol: str, exchange: str) -> int | None:
        """The id of (symbol, exchange) if known in memory, else ``None`` (no store access)."""
        inst = self._by_key.get((symbol, exchange))
        return None if inst is None else inst.instrument_id

    def by_id(self, instrument_id: int) -> Instrument | None:
        return self._by_id.get(instrument_id)

    def instrument(self, symbol: str, exchange: str) -> Instrument | None:
        return self._by_key.get((symbol, exchange))

    def __len__(self) -> int:
        return len(self._by_id)

    def __iter__(self) -> Iterator[Instrument]:
        return iter(list(self._by_id.values()))

    def __contains__(self, key: object) -> bool:
        return key in self._by_key

    def rehashed(self) -> list[Instrument]:
        """Instruments whose id is not their first choice (a collision moved them down their
        chain), from the store's view as loaded."""
        return [i for i in self._by_id.values() if i.instrument_id != _candidate(i.symbol, i.exchange, 0)]

    # -- assignment --------------------------------------------------------------------------
    def _next_free(self, symbol: str, exchange: str) -> int:
        by_id = self._by_id
        for k in range(MAX_PROBES):
            iid = _candidate(symbol, exchange, k)
            if iid and iid not in by_id:
                return iid
        raise InstrumentError(f"no free instrument id for {symbol}@{exchange} in {MAX_PROBES} candidates")

    def resolve(self, symbol: str, exchange: str, venue_symbol: str = "", publisher_id: int = 0,
                size_precision: int | None = None) -> int:
        """Id of (symbol, exchange): from memory, else assign the first free candidate and
        persist it (see the module docstring). ``venue_symbol``/``publisher_id``/``size_precision``
        are stored with a new assignment only. Raises ``InstrumentError`` for invalid names or a
        misbehaving store; store exceptions (e.g. ``StorageError``) propagate."""
        inst = self._by_key.get((symbol, exchange))
        if inst is not None:
            return inst.instrument_id
        with self._lock:
            return self._assign(symbol, exchange, venue_symbol, publisher_id, size_precision)

    def _assign(self, symbol: str, exchange: str, venue_symbol: str = "", publisher_id: int = 0,
                size_precision: int | None = None) -> int:
        # caller holds self._lock
        key = (symbol, exchange)
        inst = self._by_key.get(key)
        if inst is not None:
            return inst.instrument_id
        _check_names(symbol, exchange)
        extra = () if size_precision is None else (size_precision,)
        for _ in range(MAX_PROBES):
            iid = self._next_free(symbol, exchange)
            if self._store.insert_instrument(iid, symbol, exchange, venue_symbol, publisher_id, *extra):
                inst = Instrument(iid, symbol, exchange, venue_symbol, publisher_id, size_precision)
                self._by_id[iid] = inst
                self._by_key[key] = inst
                return iid
            # Someone else took the id or this instrument: the store knows who.
            self.conflicts += 1
            self.reload()
            inst = self._by_key.get(key)
            if inst is not None:
                return inst.instrument_id
            if iid not in self._by_id:
                raise InstrumentError(
                    f"store refused id {iid} for {symbol}@{exchange} but holds neither the id "
                    f"nor the instrument"
                )
        raise InstrumentError(f"could not assign an id to {symbol}@{exchange}: too many conflicts")

    def resolve_many(
        self, items: Iterable[tuple[str, str] | tuple[str, str, str] | tuple[str, str, str, int]
                              | tuple[str, str, str, int, int]]
    ) -> dict[tuple[str, str], int]:
        """Resolve ``(symbol, exchange[, venue_symbol[, publisher_id[, size_precision]]])`` items in
        the given order (the order decides who wins a collision). Returns
        ``{(symbol, exchange): id}``."""
        out: dict[tuple[str, str], int] = {}
        with self._lock:
            for item in items:
                key = (item[0], item[1])
                inst = self._by_key.get(key)
                if inst is not None:
                    out[key] = inst.instrument_id
                else:
                    out[key] = self._assign(item[0], item[1], *item[2:])
        return out

    def __repr__(self) -> str:
        return f"<InstrumentRegistry {len(self)} instruments>"


# ---------------------------------------------------------------------------- local SQLite cache

CACHE_SCHEMA = """
CREATE TABLE IF NOT EXISTS instruments (
    instrument_id  INTEGER NOT NULL PRIMARY KEY CHECK (instrument_id BETWEEN 1 AND 4294967295),
    symbol         TEXT NOT NULL,
    exchange       TEXT NOT NULL,
    venue_symbol   TEXT NOT NULL,
    publisher_id   INTEGER NOT NULL,
    size_precision INTEGER CHECK (size_precision BETWEEN 0 AND 18),
    created_ns     INTEGER NOT NULL,
    UNIQUE (symbol, exchange)
)
"""


def cache_path(run_dir: str | os.PathLike, instance: str) -> Path:
    """Where an instance's instrument cache lives: ``run_dir/<instance>/instruments.sqlite``."""
    return Path(run_dir) / instance / "instruments.sqlite"


class InstrumentCache:
    """The registry's store in a local SQLite file (WAL), safe for several processes assigning at
    once: ``insert_instrument`` is one ``INSERT .. ON CONFLICT DO NOTHING`` whose UNIQUE
    constraints (id; symbol, exchange) decide who wins, as the registry's protocol expects.
    Thread-safe (one lock per object). Raises ``InstrumentError`` when the file cannot be opened
    or a statement fails (a lock held longer than ``busy_timeout_s`` included)."""

    def __init__(self, path: str | os.PathLike, busy_timeout_s: float = 30.0) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(str(self.path), timeout=busy_timeout_s, isolation_level=None,
                                       check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")  # an id handed out must survive a crash
            self._db.execute(CACHE_SCHEMA)
        except (sqlite3.Error, OSError) as e:
            raise InstrumentError(f"instrument cache {self.path}: {e}") from None

    def _run(self, q: str, params: Any = ()) -> sqlite3.Cursor:
        try:
            with self._lock:
                return self._db.execute(q, params)
        except sqlite3.Error as e:
            raise InstrumentError(f"instrument cache {self.path}: {e}") from None

    def load_instruments(self) -> list[tuple[int, str, str, str, int, int | None]]:
        """Every row as ``(instrument_id, symbol, exchange, venue_symbol, publisher_id,
        size_precision)`` ordered by id."""
        return self._run("SELECT instrument_id, symbol, exchange, venue_symbol, publisher_id, size_precision"
                         " FROM instruments ORDER BY instrument_id").fetchall()

    instrument_rows = load_instruments

    def insert_instrument(self, instrument_id: int, symbol: str, exchange: str, venue_symbol: str = "",
                          publisher_id: int = 0, size_precision: int | None = None) -> bool:
        """Insert one registration (committed, fsync'd); False when the id or (symbol, exchange)
        is taken."""
        cur = self._run(
            "INSERT INTO instruments (instrument_id, symbol, exchange, venue_symbol, publisher_id, size_precision,"
            " created_ns) VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
            (int(instrument_id), symbol, exchange, venue_symbol or "", int(publisher_id or 0),
             None if size_precision is None else int(size_precision), time.time_ns()))
        return cur.rowcount == 1

    def replace_instrument(self, instrument_id: int, symbol: str, exchange: str, venue_symbol: str = "",
                           publisher_id: int = 0, size_precision: int | None = None) -> list[tuple]:
        """Make the cache hold this registration (the database's), removing the rows that hold its
        id or its (symbol, exchange) otherwise, in one transaction. Returns the removed rows."""
        try:
            with self._lock:
                self._db.execute("BEGIN IMMEDIATE")
                try:
                    gone = self._db.execute(
                        "SELECT instrument_id, symbol, exchange, venue_symbol, publisher_id, size_precision"
                        " FROM instruments WHERE instrument_id = ? OR (symbol = ? AND exchange = ?)",
                        (int(instrument_id), symbol, exchange)).fetchall()
                    self._db.execute("DELETE FROM instruments WHERE instrument_id = ? OR (symbol = ? AND exchange = ?)",
                                     (int(instrument_id), symbol, exchange))
                    self._db.execute(
                        "INSERT INTO instruments (instrument_id, symbol, exchange, venue_symbol, publisher_id,"
                        " size_precision, created_ns) VALUES (?, ?, ?, ?, ?, ?, ?)",
                        (int(instrument_id), symbol, exchange, venue_symbol or "", int(publisher_id or 0),
                         None if size_precision is None else int(size_precision), time.time_ns()))
                except BaseException:
                    self._db.execute("ROLLBACK")
                    raise
                self._db.execute("COMMIT")
        except sqlite3.Error as e:
            raise InstrumentError(f"instrument cache {self.path}: {e}") from None
        return [g for g in gone if tuple(g[:3]) != (int(instrument_id), symbol, exchange)]

    def registrations(self, instrument_ids: Iterable[int]) -> list[tuple[Instrument, int]]:
        """``(Instrument, created_ns)`` of each of ``instrument_ids`` the cache holds, in the
        given order (created_ns: when the cache assigned it, ns since the epoch)."""
        rows = {r[0]: r for r in self._run(
            "SELECT instrument_id, symbol, exchange, venue_symbol, publisher_id, size_precision, created_ns"
            " FROM instruments").fetchall()}
        out = []
        for iid in instrument_ids:
            r = rows.get(int(iid))
            if r is not None:
                out.append((Instrument(*r[:6]), int(r[6])))
        return out

    def set_size_precision(self, instrument_id: int, size_precision: int) -> bool:
        """Fill in a registration's unknown size_precision; False if it was known or absent."""
        cur = self._run("UPDATE instruments SET size_precision = ? WHERE instrument_id = ? AND size_precision IS NULL",
                        (int(size_precision), int(instrument_id)))
        return cur.rowcount == 1

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self) -> "InstrumentCache":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


#: size_precision of a definition whose registration does not know it: the records' default scale
DEFAULT_SIZE_PRECISION = 9


def definition_record(inst: Instrument, created_ns: int, ts_recv: int) -> bytes:
    """An INSTRUMENT_DEF record (``dm.records.INSTRUMENT_DEF_DTYPE``) announcing a registration
    to the persister: header ``instrument_id``/``publisher_id``, ``ts_event`` = ``created_ns``
    (when the id was assigned: the same registration always gives the same record, one row in
    storage), ``ts_recv``, ``symbol``/``exchange``, ``raw_symbol`` = the venue symbol,
    ``size_precision`` (``DEFAULT_SIZE_PRECISION`` when unknown); prices and sizes undefined
    (``UNDEF_PRICE``), timestamps ``UNDEF_TIMESTAMP``, ``display_factor`` 1e9. Raises
    ``InstrumentError`` for names longer than the record's fields."""
    import numpy as np

    from dm.records import INSTRUMENT_DEF_DTYPE, UNDEF_PRICE, UNDEF_TIMESTAMP, RType

    a = np.zeros(1, INSTRUMENT_DEF_DTYPE)
    a["length"] = INSTRUMENT_DEF_DTYPE.itemsize // 4
    a["rtype"] = RType.INSTRUMENT_DEF
    a["publisher_id"] = inst.publisher_id
    a["instrument_id"] = inst.instrument_id
    a["ts_event"] = created_ns
    a["ts_recv"] = ts_recv
    for f in ("min_price_increment", "lot_size", "contract_multiplier", "strike_price"):
        a[f] = UNDEF_PRICE
    a["display_factor"] = 1_000_000_000
    a["expiration"] = a["activation"] = UNDEF_TIMESTAMP
    a["size_precision"] = DEFAULT_SIZE_PRECISION if inst.size_precision is None else inst.size_precision
    for f, v in (("symbol", inst.symbol), ("exchange", inst.exchange), ("raw_symbol", inst.venue_symbol)):
        b = v.encode()
        if len(b) > INSTRUMENT_DEF_DTYPE[f].itemsize:
            raise InstrumentError(f"{inst.symbol}@{inst.exchange}: {f} {v!r} longer than {INSTRUMENT_DEF_DTYPE[f].itemsize} bytes")
        a[f] = b
    return a.tobytes()


def seed_from_storage(cache: InstrumentCache, url: str, timeout_s: float = 2.0) -> int:
    """Copy into the cache the database's registrations it lacks (never the other way: the
    persister is the database's only writer), so a worker whose cache is new (first start after
    an upgrade, a fresh run_dir) takes the ids the database already assigned instead of
    re-deriving them. Best effort, read-only, bounded by ``timeout_s``: returns the number of rows
    imported, or -1 when the database could not be read (down, not migrated yet, a SQLite file
    that does not exist: the cache alone decides then). A row whose id or (symbol, exchange) the
    cache holds otherwise is left for the persister's ``reconcile``."""
    from dm.errors import StorageError
    from dm.storage import open_storage

    if url.startswith("sqlite:"):
        path = url[len("sqlite:///"):] if url.startswith("sqlite:///") else ""
        if not path or path == ":memory:" or not Path(path).exists():
            return -1
    try:
        st = open_storage(url, timeout_s=timeout_s)
    except StorageError:
        return -1
    try:
        rows = st.instrument_rows()
    except StorageError:
        return -1
    finally:
        try:
            st.close()
        except StorageError:
            pass
    n = 0
    for r in rows:
        if cache.insert_instrument(*r[:5], size_precision=r[5]):
            n += 1
    return n


class Reconciled(NamedTuple):
    """What :func:`reconcile` did: ``imported`` rows copied database → cache, ``exported`` rows
    copied cache → database, ``conflicts`` (human-readable: the cache held an id or a
    (symbol, exchange) the database assigns otherwise; the database won, the cache row was
    replaced; records a worker wrote under the cache's id are misattributed and must be
    looked at)."""

    imported: int
    exported: int
    conflicts: list[str]


def reconcile(cache: InstrumentCache, db: Any) -> Reconciled:
    """Make the cache and the database (a ``dm.storage.Storage``) agree, both ways: database
    rows missing from the cache are imported (the database is the source of truth for ids it
    holds: a conflicting cache row is replaced), cache rows the database lacks are inserted into
    it; a known size_precision fills an unknown one on the other side (cache side only: the
    database's is filled by INSTRUMENT_DEF records). Storage errors propagate."""
    db_rows = [tuple(r) for r in db.instrument_rows()]
    local = [tuple(r) for r in cache.instrument_rows()]
    l_by_id = {r[0]: r for r in local}
    l_by_key = {(r[1], r[2]): r for r in local}
    d_by_id = {r[0]: r for r in db_rows}
    d_by_key = {(r[1], r[2]): r for r in db_rows}
    imported = exported = 0
    conflicts: list[str] = []
    for r in db_rows:
        iid, sym, ex = r[0], r[1], r[2]
        mine = l_by_id.get(iid)
        if mine is not None and (mine[1], mine[2]) == (sym, ex):
            if mine[5] is None and r[5] is not None:
                cache.set_size_precision(iid, r[5])
            continue
        other = l_by_key.get((sym, ex))
        if mine is None and other is None:
            if cache.insert_instrument(*r):
                imported += 1
                continue
        for gone in cache.replace_instrument(*r):
            conflicts.append(f"cache had {gone[1]}@{gone[2]} as instrument_id {gone[0]}; the database has "
                             f"{sym}@{ex} as {iid}: cache row replaced")
        imported += 1
    for r in local:
        iid, sym, ex = r[0], r[1], r[2]
        if iid in d_by_id or (sym, ex) in d_by_key:
            continue  # present, or a conflict the loop above resolved for the database
        if db.insert_instrument(*r[:5], size_precision=r[5]):
            exported += 1
        else:
            conflicts.append(f"database refused the cache's {sym}@{ex} as instrument_id {iid} (assigned "
                             f"concurrently): the next reconcile imports the database's choice")
    return Reconciled(imported, exported, conflicts)
