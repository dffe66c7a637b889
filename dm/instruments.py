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

Store protocol (implemented by the SQL storages in ``dm.storage`` and by :class:`MemoryStore`)::

    load_instruments() -> Iterable[tuple[instrument_id, symbol, exchange, venue_symbol, publisher_id]]
    insert_instrument(instrument_id, symbol, exchange, venue_symbol, publisher_id) -> bool
"""
from __future__ import annotations

import hashlib
import threading
from collections.abc import Iterable, Iterator
from typing import NamedTuple, Protocol

from dm.errors import InstrumentError

_blake2b = hashlib.blake2b

__all__ = [
    "Instrument",
    "InstrumentStore",
    "MemoryStore",
    "InstrumentRegistry",
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
    ``exchange``, the ``venue_symbol`` it was first seen as and its ``publisher_id``.
    An immutable named tuple (cheap to build at 200,000 instruments)."""

    instrument_id: int
    symbol: str
    exchange: str
    venue_symbol: str = ""
    publisher_id: int = 0


class InstrumentStore(Protocol):
    def load_instruments(self) -> Iterable[tuple[int, str, str, str, int]]: ...

    def insert_instrument(
        self, instrument_id: int, symbol: str, exchange: str, venue_symbol: str, publisher_id: int
    ) -> bool: ...


class MemoryStore:
    """In-memory store (tests, tools). Thread-safe; ``insert_instrument`` returns ``False`` when
    the id or the (symbol, exchange) is taken, like the SQL stores' UNIQUE constraints."""

    def __init__(self, rows: Iterable[tuple[int, str, str, str, int]] = ()) -> None:
        self._lock = threading.Lock()
        self._rows: dict[int, tuple[int, str, str, str, int]] = {}
        self._keys: set[tuple[str, str]] = set()
        self.inserts = 0
        for r in rows:
            if not self.insert_instrument(*r):
                raise InstrumentError(f"MemoryStore: duplicate row {r!r}")
        self.inserts = 0  # successful inserts after construction (seed rows not counted)

    def load_instruments(self) -> list[tuple[int, str, str, str, int]]:
        with self._lock:
            return list(self._rows.values())

    def insert_instrument(
        self, instrument_id: int, symbol: str, exchange: str, venue_symbol: str = "", publisher_id: int = 0
    ) -> bool:
        with self._lock:
            if instrument_id in self._rows or (symbol, exchange) in self._keys:
                return False
            self._rows[instrument_id] = (instrument_id, symbol, exchange, venue_symbol, publisher_id)
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
        for row in self._store.load_instruments():
            iid, symbol, exchange, venue_symbol, publisher_id = row
            iid = int(iid)
            if not 0 < iid <= U32_MAX:
                raise InstrumentError(f"store holds invalid instrument_id {iid} for {symbol}@{exchange}")
            inst = Instrument(iid, symbol, exchange, venue_symbol or "", int(publisher_id or 0))
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

    def resolve(self, symbol: str, exchange: str, venue_symbol: str = "", publisher_id: int = 0) -> int:
        """Id of (symbol, exchange): from memory, else assign the first free candidate and
        persist it (see the module docstring). ``venue_symbol``/``publisher_id`` are stored with a
        new assignment only. Raises ``InstrumentError`` for invalid names or a misbehaving store;
        store exceptions (e.g. ``StorageError``) propagate."""
        inst = self._by_key.get((symbol, exchange))
        if inst is not None:
            return inst.instrument_id
        with self._lock:
            return self._assign(symbol, exchange, venue_symbol, publisher_id)

    def _assign(self, symbol: str, exchange: str, venue_symbol: str = "", publisher_id: int = 0) -> int:
        # caller holds self._lock
        key = (symbol, exchange)
        inst = self._by_key.get(key)
        if inst is not None:
            return inst.instrument_id
        _check_names(symbol, exchange)
        for _ in range(MAX_PROBES):
            iid = self._next_free(symbol, exchange)
            if self._store.insert_instrument(iid, symbol, exchange, venue_symbol, publisher_id):
                inst = Instrument(iid, symbol, exchange, venue_symbol, publisher_id)
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
        self, items: Iterable[tuple[str, str] | tuple[str, str, str] | tuple[str, str, str, int]]
    ) -> dict[tuple[str, str], int]:
        """Resolve ``(symbol, exchange[, venue_symbol[, publisher_id]])`` items in the given order
        (the order decides who wins a collision). Returns ``{(symbol, exchange): id}``."""
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
