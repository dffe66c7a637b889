"""Venue symbology: venue symbols ↔ dm's canonical symbols (DESIGN §4), the venue-independent
machinery. Each venue's normalizer is ``dm/venues/<venue>/symbology.py`` (a :class:`Symbology`
subclass with a ``from_reference`` constructor), found through the venue registry
(``dm.venues.venue(kind).symbology_class()``); the REST path of its reference data is the venue
descriptor's ``reference_path``.

A **canonical symbol** is base + quote, upper case, no separator (``BTCUSD``), built only from
``A-Z`` and ``0-9``; other characters of venue asset codes are dropped (``ETH2.S/ETH`` →
``ETH2SETH``). Venue forms appear only at the edges (subscriptions, frame parsing); everything
inside dm speaks canonical symbols. One scheme covers every instrument class, for every venue
(:func:`derivative_symbol` builds, :func:`parse_canonical` reads)::

    spot                BASEQUOTE                                  BTCUSD
    perpetual swap      BASEQUOTE-SETTLE-PERP                      BTCUSD-BTC-PERP   (inverse)
                                                                   BTCUSD-USD-PERP   (linear, USDT→USD)
    dated future        BASEQUOTE-SETTLE-YYMMDD                    BTCUSD-BTC-210924
    option              BASEQUOTE-SETTLE-YYMMDD-STRIKE-C|P         BTCUSD-BTC-210924-40000-C
    index / ref. rate   BASEQUOTE-INDEX, BASEQUOTE-REFRATE         BTCUSD-INDEX

``SETTLE`` is the asset the contract is margined and settled in (canonical, aliases applied: the
base for inverse contracts, the quote for linear ones), so a venue's inverse and linear
perpetuals of one pair never share a name, and no derivative shares a spot symbol. ``STRIKE`` is
the exact decimal without exponent or trailing zeros, with ``D`` for the decimal point
(``0D55``: names stay free of ``.``, which separates the parts of shm and NATS names).

One :class:`Symbology` per exchange, built from that venue's REST reference body by
:func:`for_provider`; Databento's symbols are native (:class:`NativeSymbology`: identity).

Aliases. ``asset_aliases`` rename an asset on both sides of a pair (a venue may default them,
e.g. Kraken's ``XBT`` → ``BTC``); ``quote_aliases`` (``[symbology] quote_aliases`` in the
config, e.g. ``{"USDT": "USD"}``) rename the quote asset only, so ``ZILUSDT`` → ``ZILUSD``.

Collisions (decided policy). Aliases can make two venue symbols of one exchange map to the same
canonical symbol (with USDT→USD and BUSD→USD, ``BTCUSDT`` and ``BTCBUSD`` both want
``BTCUSD``). Building the full map never fails because of such unrelated symbols: the colliding
canonical symbol is *poisoned* instead, reported by :meth:`Symbology.collisions`, left out of
:meth:`Symbology.pairs`, and every lookup that touches it (``to_canonical`` of either venue
symbol, ``to_venue`` of the canonical one, :meth:`Symbology.select` of a configured symbol)
raises :class:`~dm.errors.SymbologyError` naming both venue symbols. Records of two different
markets are therefore never merged under one instrument, and a worker fails at start-up (in
``select``) only when one of *its configured* symbols is ambiguous. Unknown symbols raise
``SymbologyError`` too.
"""
from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

from dm import venues as venue_registry
from dm.errors import RecordingError, SymbologyError

__all__ = [
    "SymbolInfo",
    "CanonicalParts",
    "derivative_symbol",
    "parse_canonical",
    "strike_text",
    "Symbology",
    "NativeSymbology",
    "for_provider",
    "fetch_reference",
    "read_recorded_reference",
    "canonical_asset",
    "upper_map",
    "load_reference",
    "exact_decimal",
]

_NOT_ALNUM = re.compile(r"[^A-Z0-9]")


def canonical_asset(code: str, aliases: Mapping[str, str] | None = None) -> str:
    """Upper-case an asset code, apply ``aliases`` (keys upper case) and drop every character
    outside ``A-Z0-9``. Raises ``SymbologyError`` if nothing is left."""
    c = code.strip().upper()
    if aliases:
        c = aliases.get(c, c)
    out = _NOT_ALNUM.sub("", c)
    if not out:
        raise SymbologyError(f"asset code {code!r} has no alphanumeric character")
    return out


def strike_text(strike: Decimal | str | int) -> str:
    """An option strike as it appears in a canonical symbol: exact, no exponent, no trailing
    zeros, ``D`` for the decimal point (``Decimal("40000")`` → ``40000``, ``0.550`` → ``0D55``).
    Raises ``SymbologyError`` for a negative or non-finite strike."""
    d = Decimal(str(strike))
    if not d.is_finite() or d < 0:
        raise SymbologyError(f"strike {strike!r} is not a non-negative number")
    text = format(d.normalize(), "f")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return text.replace(".", "D")


def derivative_symbol(base: str, quote: str, settle: str, expiry: str | None = None,
                      strike: Decimal | str | int | None = None, option_type: str | None = None) -> str:
    """The canonical symbol of a derivative (module docstring): ``expiry`` ``None`` or
    ``"PERP"`` for a perpetual, else ``YYMMDD``; ``strike`` and ``option_type`` (``C``/``P``)
    for an option. Assets must already be canonical (see :func:`canonical_asset`). Raises
    ``SymbologyError`` for a malformed part."""
    for name, a in (("base", base), ("quote", quote), ("settle", settle)):
        if not a or _NOT_ALNUM.search(a):
            raise SymbologyError(f"{name} asset {a!r} is not a canonical asset code")
    exp = "PERP" if expiry in (None, "PERP") else expiry
    if exp != "PERP" and not (len(exp) == 6 and exp.isdigit()):
        raise SymbologyError(f"expiry {expiry!r} is not YYMMDD")
    out = f"{base}{quote}-{settle}-{exp}"
    if option_type is not None or strike is not None:
        if exp == "PERP" or option_type not in ("C", "P") or strike is None:
            raise SymbologyError(f"an option needs an expiry, a strike and C or P, got {expiry!r} {strike!r} {option_type!r}")
        out += f"-{strike_text(strike)}-{option_type}"
    return out


@dataclass(frozen=True, slots=True)
class CanonicalParts:
    """A canonical symbol taken apart: ``pair`` (BASEQUOTE), ``klass`` (``spot``, ``perpetual``,
    ``future``, ``option``, ``index``, ``reference_rate``), ``settle``, ``expiry`` (YYMMDD),
    ``strike`` (exact), ``option_type`` (C/P)."""

    pair: str
    klass: str
    settle: str | None = None
    expiry: str | None = None
    strike: Decimal | None = None
    option_type: str | None = None


def parse_canonical(symbol: str) -> CanonicalParts:
    """Read a canonical symbol (module docstring). Raises ``SymbologyError`` when it fits no form."""
    parts = symbol.split("-")
    bad = SymbologyError(f"{symbol!r} is not a canonical symbol")
    if not parts[0] or _NOT_ALNUM.search(parts[0]):
        raise bad
    if len(parts) == 1:
        return CanonicalParts(parts[0], "spot")
    if len(parts) == 2 and parts[1] in ("INDEX", "REFRATE"):
        return CanonicalParts(parts[0], "index" if parts[1] == "INDEX" else "reference_rate")
    if len(parts) not in (3, 5) or not parts[1] or _NOT_ALNUM.search(parts[1]):
        raise bad
    exp = parts[2]
    if len(parts) == 3:
        if exp == "PERP":
            return CanonicalParts(parts[0], "perpetual", parts[1])
        if len(exp) == 6 and exp.isdigit():
            return CanonicalParts(parts[0], "future", parts[1], exp)
        raise bad
    strike, cp = parts[3], parts[4]
    if not (len(exp) == 6 and exp.isdigit()) or cp not in ("C", "P") or not re.fullmatch(r"[0-9]+(D[0-9]+)?", strike):
        raise bad
    return CanonicalParts(parts[0], "option", parts[1], exp, Decimal(strike.replace("D", ".")), cp)


def upper_map(m: Mapping[str, str] | None) -> dict[str, str]:
    """Alias table with keys and values stripped and upper-cased."""
    return {str(k).strip().upper(): str(v).strip().upper() for k, v in (m or {}).items()}


@dataclass(frozen=True, slots=True)
class SymbolInfo:
    """One venue instrument.

    ``venue_symbol``: the form the venue's websocket frames carry; ``canonical``: dm's symbol;
    ``base``/``quote``: canonical asset codes (aliases applied); ``kind``: ``spot``,
    ``perpetual_inverse``, ``future_inverse``, ``perpetual_linear``, ``future_linear``,
    ``index``, ``reference_rate`` or ``other``; ``status``: the venue's status string;
    ``tradeable``: whether the venue trades it now; ``expiry``: ``YYMMDD`` for fixed-maturity
    contracts. Exact decimals (never floats): ``tick_size`` (price increment), ``lot_size``
    (quantity step), ``contract_size`` (Kraken Futures). ``pair_decimals``/``lot_decimals``:
    Kraken spot's price/volume decimals (the book checksum formats levels with them).
    ``rest_name``: the venue's REST name where it differs from ``venue_symbol``.
    Derivatives: ``settle`` (canonical settlement asset), ``strike`` (exact) and ``option_type``
    (``"C"``/``"P"``), ``underlying`` (the venue's underlying/index name when it has one).
    ``size_precision``: the scale dm stores this instrument's sizes at (``dm/_records.pxd``), when
    the venue states it otherwise than through ``lot_size`` (see :meth:`resolved_size_precision`).
    """

    venue_symbol: str
    canonical: str
    base: str
    quote: str
    kind: str = "spot"
    status: str = ""
    tradeable: bool = True
    expiry: str | None = None
    tick_size: Decimal | None = None
    lot_size: Decimal | None = None
    contract_size: Decimal | None = None
    pair_decimals: int | None = None
    lot_decimals: int | None = None
    rest_name: str | None = None
    settle: str | None = None
    strike: Decimal | None = None
    option_type: str | None = None
    underlying: str | None = None
    size_precision: int | None = None

    def resolved_size_precision(self, default: int = 8) -> int:
        """The size scale dm registers for this instrument: ``size_precision`` when the venue
        states it, else the decimals of ``lot_size`` (the venue's quantity step: every size it
        sends is a multiple of it), else ``default``. A value with more digits than this is
        rejected alone at decode (never rounded)."""
        from dm.records import size_precision_of

        if self.size_precision is not None:
            return self.size_precision
        if self.lot_size is not None and self.lot_size > 0:
            return size_precision_of(self.lot_size)
        return default


_AMBIGUOUS = object()


class Symbology:
    """Reversible venue ↔ canonical map of one exchange.

    Build it with a venue subclass's :meth:`from_reference` or :func:`for_provider`. Lookups are dictionary lookups (no parsing at run time).

    Raises ``SymbologyError`` from ``to_canonical``/``to_venue``/``info``/``select`` for unknown
    symbols and for symbols involved in a collision (see the module docstring).
    """

    kind: str = ""

    @classmethod
    def from_reference(
        cls,
        body: bytes | str | Mapping,
        quote_aliases: Mapping[str, str] | None = None,
        asset_aliases: Mapping[str, str] | None = None,
        exchange: str | None = None,
    ) -> "Symbology":
        """Build the map from the venue's REST reference body (raw bytes/str or parsed JSON);
        ``exchange`` defaults to the venue's. Each venue subclass implements it. Raises
        ``SymbologyError`` for a malformed body."""
        raise NotImplementedError(f"{cls.__name__} has no reference-data constructor")

    def __init__(
        self,
        exchange: str,
        infos: Iterable[SymbolInfo],
        input_aliases: Iterable[tuple[str, str]] = (),
    ) -> None:
        self.exchange = exchange
        self._by_venue: dict[str, SymbolInfo] = {}
        by_canon: dict[str, list[str]] = {}
        for info in infos:
            if info.venue_symbol in self._by_venue:
                raise SymbologyError(
                    f"{exchange}: venue symbol {info.venue_symbol!r} listed twice in the reference data"
                )
            self._by_venue[info.venue_symbol] = info
            by_canon.setdefault(info.canonical, []).append(info.venue_symbol)
        self._canon: dict[str, str] = {c: v[0] for c, v in by_canon.items() if len(v) == 1}
        self._collisions: dict[str, tuple[str, ...]] = {
            c: tuple(sorted(v)) for c, v in by_canon.items() if len(v) > 1
        }
        # Accepted input forms → venue symbol. The venue symbol itself always wins; an extra
        # form claimed by two instruments is ambiguous and raises on lookup.
        self._inputs: dict[str, Any] = {}
        self._input_claims: dict[str, set[str]] = {}
        for alias, venue in input_aliases:
            key = self._norm(alias)
            if key in self._by_venue or venue not in self._by_venue:
                continue
            self._input_claims.setdefault(key, set()).add(venue)
        for key, venues in self._input_claims.items():
            self._inputs[key] = next(iter(venues)) if len(venues) == 1 else _AMBIGUOUS

    # -- input normalisation (venue specific) -------------------------------------------------
    @staticmethod
    def _norm(symbol: str) -> str:
        return symbol.strip().upper()

    def _venue_of(self, symbol: str) -> str:
        if not isinstance(symbol, str):
            raise SymbologyError(f"{self.exchange}: symbol must be str, got {type(symbol).__name__}")
        key = self._norm(symbol)
        if key in self._by_venue:
            return key
        v = self._inputs.get(key)
        if v is _AMBIGUOUS:
            raise SymbologyError(
                f"{self.exchange}: {symbol!r} names several instruments: "
                f"{', '.join(sorted(self._input_claims[key]))}"
            )
        if v is None:
            raise SymbologyError(f"{self.exchange}: unknown venue symbol {symbol!r}")
        return v

    def _collision_error(self, canonical: str) -> SymbologyError:
        venues = self._collisions[canonical]
        return SymbologyError(
            f"{self.exchange}: venue symbols {' and '.join(repr(v) for v in venues)} both map to "
            f"canonical symbol {canonical!r} (check [symbology] quote_aliases)"
        )

    # -- public API --------------------------------------------------------------------------
    def to_canonical(self, venue_symbol: str) -> str:
        """Venue symbol (any accepted form, see the subclass) → canonical symbol.
        Raises ``SymbologyError`` if unknown or if its canonical symbol collides."""
        info = self._by_venue[self._venue_of(venue_symbol)]
        if info.canonical in self._collisions:
            raise self._collision_error(info.canonical)
        return info.canonical

    def to_venue(self, canonical: str) -> str:
        """Canonical symbol → the venue symbol frames carry. Raises ``SymbologyError`` if
        unknown or ambiguous (two venue symbols map to it)."""
        if not isinstance(canonical, str):
            raise SymbologyError(f"{self.exchange}: symbol must be str, got {type(canonical).__name__}")
        c = canonical.strip().upper()
        v = self._canon.get(c)
        if v is not None:
            return v
        if c in self._collisions:
            raise self._collision_error(c)
        raise SymbologyError(f"{self.exchange}: unknown canonical symbol {canonical!r}")

    def info(self, venue_symbol: str) -> SymbolInfo:
        """Reference data of a venue symbol (collisions do not raise here: the venue symbol is
        unambiguous). Raises ``SymbologyError`` if unknown."""
        return self._by_venue[self._venue_of(venue_symbol)]

    def info_canonical(self, canonical: str) -> SymbolInfo:
        """Reference data of a canonical symbol; raises like :meth:`to_venue`."""
        return self._by_venue[self.to_venue(canonical)]

    def pairs(self, tradeable_only: bool = False) -> dict[str, str]:
        """``{venue_symbol: canonical}`` for every instrument whose canonical symbol does not
        collide (a bijection). ``tradeable_only`` drops halted/index instruments."""
        return {
            v: i.canonical
            for v, i in self._by_venue.items()
            if i.canonical not in self._collisions and (i.tradeable or not tradeable_only)
        }

    def collisions(self) -> dict[str, tuple[str, ...]]:
        """``{canonical: (venue_symbol, venue_symbol, ...)}`` for every canonical symbol that more
        than one venue symbol maps to (sorted venue symbols)."""
        return dict(self._collisions)

    def select(self, canonicals: Iterable[str]) -> dict[str, str]:
        """Resolve the configured canonical symbols of a provider: ``{canonical: venue_symbol}``
        in input order. Raises one ``SymbologyError`` listing every unknown or ambiguous symbol."""
        out: dict[str, str] = {}
        problems: list[str] = []
        for c in canonicals:
            try:
                out[c.strip().upper()] = self.to_venue(c)
            except SymbologyError as e:
                problems.append(str(e))
        if problems:
            raise SymbologyError("; ".join(problems))
        return out

    def __len__(self) -> int:
        return len(self._by_venue)

    def __iter__(self) -> Iterator[SymbolInfo]:
        return iter(self._by_venue.values())

    def __contains__(self, venue_symbol: object) -> bool:
        if not isinstance(venue_symbol, str):
            return False
        try:
            self._venue_of(venue_symbol)
        except SymbologyError:
            return False
        return True

    def __repr__(self) -> str:
        return (
            f"<{type(self).__name__} {self.exchange}: {len(self._by_venue)} symbols, "
            f"{len(self._collisions)} collisions>"
        )


def load_reference(body: bytes | str, venue: str, decimals: bool = False) -> Any:
    """Parse a REST reference body (``decimals``: JSON numbers as exact ``Decimal``). Raises
    ``SymbologyError`` naming the venue when it is not JSON."""
    try:
        if decimals:
            return json.loads(body, parse_float=Decimal)
        import orjson

        return orjson.loads(body)
    except ValueError as e:
        raise SymbologyError(f"{venue}: reference body is not JSON: {e}") from None


def exact_decimal(v: Any) -> Decimal | None:
    """A venue number (str, int or Decimal; never float) as a normalised exact ``Decimal``."""
    if v is None:
        return None
    d = Decimal(str(v))
    return d.quantize(Decimal(1)) if d == d.to_integral_value() else d.normalize()


class NativeSymbology(Symbology):
    """Identity symbology for feeds whose symbols are already canonical (Databento: ``ESU4``,
    ``NVDA``; DESIGN §4). Any non-empty symbol maps to itself (upper-cased, stripped);
    ``pairs()`` lists the ``symbols`` it was built with."""

    kind = "databento"

    def __init__(self, exchange: str, symbols: Iterable[str] = ()) -> None:
        syms = [s.strip().upper() for s in symbols]
        super().__init__(exchange, [SymbolInfo(s, s, s, "") for s in syms])

    def _venue_of(self, symbol: str) -> str:
        if not isinstance(symbol, str) or not symbol.strip():
            raise SymbologyError(f"{self.exchange}: empty or non-str symbol {symbol!r}")
        return self._norm(symbol)

    def to_canonical(self, venue_symbol: str) -> str:
        return self._venue_of(venue_symbol)

    def to_venue(self, canonical: str) -> str:
        return self._venue_of(canonical)

    def info(self, venue_symbol: str) -> SymbolInfo:
        s = self._venue_of(venue_symbol)
        return self._by_venue.get(s) or SymbolInfo(s, s, s, "")

    def info_canonical(self, canonical: str) -> SymbolInfo:
        return self.info(canonical)

def for_provider(
    kind: str,
    reference_body: bytes | str | Mapping | None,
    quote_aliases: Mapping[str, str] | None = None,
    *,
    exchange: str | None = None,
    asset_aliases: Mapping[str, str] | None = None,
    symbols: Iterable[str] = (),
) -> Symbology:
    """Build the symbology of a provider ``kind`` (a registered venue, see ``dm.venues.kinds()``,
    or ``databento``) from its REST reference body (see :func:`fetch_reference`; ignored for
    ``databento``, whose symbols are native and may be listed in ``symbols``). ``exchange``
    defaults to the venue's exchange name. Raises ``SymbologyError`` for an unknown kind or a
    malformed body (never for alias collisions between symbols: see the module docstring)."""
    if kind == "databento":
        return NativeSymbology(exchange or kind.upper(), symbols)
    if reference_body is None:
        raise SymbologyError(f"{kind}: a reference body is required")
    if kind not in venue_registry.kinds():
        raise SymbologyError(f"unknown provider kind {kind!r}; known: {', '.join(venue_registry.kinds())}, databento")
    v = venue_registry.venue(kind)
    return v.symbology_class().from_reference(reference_body, quote_aliases, asset_aliases, exchange or v.exchange)


async def fetch_reference(kind: str, rest_url: str, session) -> bytes:
    """GET the venue's reference body: ``rest_url`` (no trailing slash needed) + the venue's
    ``reference_path`` through the given ``aiohttp.ClientSession``. Returns the raw body bytes
    (feed them to :func:`for_provider`). Raises ``SymbologyError`` for an unknown kind, a
    non-200 status, a connection error or a timeout (message names the URL)."""
    import aiohttp

    if kind not in venue_registry.kinds():
        raise SymbologyError(f"provider kind {kind!r} has no REST reference endpoint")
    url = rest_url.rstrip("/") + venue_registry.venue(kind).reference_path
    try:
        async with session.get(url) as resp:
            body = await resp.read()
            if resp.status != 200:
                raise SymbologyError(f"GET {url}: HTTP {resp.status}: {body[:200]!r}")
            return body
    except (aiohttp.ClientError, asyncio.TimeoutError) as e:
        raise SymbologyError(f"GET {url}: {type(e).__name__}: {e}") from e


def read_recorded_reference(path: str | Path) -> tuple[str, float, bytes]:
    """Line 1 of a recorded split session's ``X.0`` file (``URL -> TS: BODY``, see
    data/README.md §1) → ``(url, ts_seconds, body_bytes)``. Raises ``RecordingError``."""
    with open(path, "rb") as f:
        line = f.readline().rstrip(b"\n")
    try:
        url, rest = line.split(b" -> ", 1)
        ts, body = rest.split(b": ", 1)
        if not url.startswith(b"http"):
            raise ValueError("not a REST line")
        return url.decode(), float(ts), body
    except ValueError as e:
        raise RecordingError(f"{path}: line 1 is not 'URL -> TS: BODY' ({e})") from None
