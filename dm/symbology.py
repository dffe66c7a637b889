"""Venue symbology: venue symbols ↔ dm's canonical symbols (DESIGN §4).

A **canonical symbol** is base + quote, upper case, no separator (``BTCUSD``), built only from
``A-Z`` and ``0-9``; other characters of venue asset codes are dropped (Kraken ``ETH2.S/ETH`` →
``ETH2SETH``). Derivatives add ``-`` separated suffixes (Kraken Futures below). Venue forms appear
only at the edges (subscriptions, frame parsing); everything inside dm speaks canonical symbols.

One :class:`Symbology` per exchange, built from that venue's REST reference body:

============== ======================================== ============================================
kind           reference (REST path)                    venue symbol (what frames carry)
============== ======================================== ============================================
binance        ``GET /api/v3/exchangeInfo``             ``BTCUSDT`` (``symbols[].symbol``)
kraken         ``GET /0/public/AssetPairs``             ``XBT/USD`` (``wsname``, websocket v1)
kraken_futures ``GET /derivatives/api/v3/instruments``  ``PI_XBTUSD`` (``product_id``, upper case)
databento      none                                     native (``ESU4``): identity mapping
============== ======================================== ============================================

Aliases. ``asset_aliases`` rename an asset on both sides of a pair (Kraken's ``XBT`` → ``BTC``,
``XDG`` → ``DOGE`` by default); ``quote_aliases`` (``[symbology] quote_aliases`` in the config,
e.g. ``{"USDT": "USD"}``) rename the quote asset only, so Binance ``ZILUSDT`` → ``ZILUSD``.

Collisions (decided policy). Aliases can make two venue symbols of one exchange map to the same
canonical symbol (with USDT→USD and BUSD→USD, Binance ``BTCUSDT`` and ``BTCBUSD`` both want
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

from dm.errors import RecordingError, SymbologyError

__all__ = [
    "SymbolInfo",
    "Symbology",
    "BinanceSymbology",
    "KrakenSymbology",
    "KrakenFuturesSymbology",
    "NativeSymbology",
    "KRAKEN_ASSET_ALIASES",
    "REST_PATHS",
    "for_provider",
    "fetch_reference",
    "read_recorded_reference",
    "canonical_asset",
]

#: Kraken's legacy asset codes → common codes (Kraken spot and Kraken Futures).
KRAKEN_ASSET_ALIASES: dict[str, str] = {"XBT": "BTC", "XDG": "DOGE"}

#: REST path of each venue's reference endpoint, appended to the provider's ``rest_url``.
REST_PATHS: dict[str, str] = {
    "binance": "/api/v3/exchangeInfo",
    "kraken": "/0/public/AssetPairs",
    "kraken_futures": "/derivatives/api/v3/instruments",
}

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


def _upper_map(m: Mapping[str, str] | None) -> dict[str, str]:
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


_AMBIGUOUS = object()


class Symbology:
    """Reversible venue ↔ canonical map of one exchange.

    Build it with a venue constructor (:meth:`BinanceSymbology.from_exchange_info`, ...) or
    :func:`for_provider`. Lookups are dictionary lookups (no parsing at run time).

    Raises ``SymbologyError`` from ``to_canonical``/``to_venue``/``info``/``select`` for unknown
    symbols and for symbols involved in a collision (see the module docstring).
    """

    kind: str = ""

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


def _loads(body: bytes | str, venue: str, decimals: bool = False) -> Any:
    try:
        if decimals:
            return json.loads(body, parse_float=Decimal)
        import orjson

        return orjson.loads(body)
    except ValueError as e:
        raise SymbologyError(f"{venue}: reference body is not JSON: {e}") from None


def _dec(v: Any) -> Decimal | None:
    if v is None:
        return None
    d = Decimal(str(v))
    return d.quantize(Decimal(1)) if d == d.to_integral_value() else d.normalize()


class BinanceSymbology(Symbology):
    """Binance spot. Venue symbols are ``symbols[].symbol`` (``BTCUSDT``), case-insensitive on
    input (stream names are lower case: ``btcusdt@trade``). Canonical = ``baseAsset`` +
    aliased ``quoteAsset``.

    Source: Binance Spot API docs, "General endpoints → Exchange information"
    (``GET /api/v3/exchangeInfo``: ``symbols[].symbol``, ``status``, ``baseAsset``,
    ``quoteAsset``, ``filters[]`` with ``PRICE_FILTER.tickSize`` and ``LOT_SIZE.stepSize``).
    ``tradeable`` is ``status == "TRADING"``; halted symbols (``BREAK``) stay in the map.
    """

    kind = "binance"

    @classmethod
    def from_exchange_info(
        cls,
        body: bytes | str | Mapping,
        quote_aliases: Mapping[str, str] | None = None,
        asset_aliases: Mapping[str, str] | None = None,
        exchange: str = "BINANCE",
    ) -> "BinanceSymbology":
        doc = body if isinstance(body, Mapping) else _loads(body, exchange)
        try:
            symbols = doc["symbols"]
        except (KeyError, TypeError):
            raise SymbologyError(f"{exchange}: exchangeInfo body has no 'symbols' list") from None
        qa, aa = _upper_map(quote_aliases), _upper_map(asset_aliases)
        infos = []
        for s in symbols:
            try:
                venue, b, q, status = s["symbol"].upper(), s["baseAsset"], s["quoteAsset"], s.get("status", "")
            except (KeyError, TypeError, AttributeError):
                raise SymbologyError(f"{exchange}: malformed exchangeInfo symbol entry {s!r:.200}") from None
            base = canonical_asset(b, aa)
            quote = canonical_asset(canonical_asset(q, aa), qa)
            filters = {f.get("filterType"): f for f in s.get("filters", ())}
            infos.append(
                SymbolInfo(
                    venue_symbol=venue,
                    canonical=base + quote,
                    base=base,
                    quote=quote,
                    kind="spot",
                    status=status,
                    tradeable=status == "TRADING",
                    tick_size=_dec(filters.get("PRICE_FILTER", {}).get("tickSize")),
                    lot_size=_dec(filters.get("LOT_SIZE", {}).get("stepSize")),
                )
            )
        return cls(exchange, infos)


class KrakenSymbology(Symbology):
    """Kraken spot. Venue symbols are websocket v1 pair names (``wsname``: ``XBT/USD``).
    Accepted input forms (case-insensitive): the ``wsname``, the REST pair name (``XXBTZUSD``),
    the ``altname`` (``XBTUSD``) and the websocket v2 form with asset aliases applied
    (``BTC/USD``). Canonical = aliased base + aliased quote from the
    ``wsname`` halves (``XBT/USD`` → ``BTCUSD``; asset aliases default to
    :data:`KRAKEN_ASSET_ALIASES`).

    Source: Kraken REST API docs, "Market Data → Get Tradable Asset Pairs"
    (``GET /0/public/AssetPairs``: ``altname``, ``wsname``, ``pair_decimals``,
    ``lot_decimals``, ``status``), and websocket v1 "subscribe" (``pair``: ``XBT/USD``).
    Pairs without a ``wsname`` (dark-pool ``.d`` pairs) are not on the websocket and are left
    out. ``pair_decimals``/``lot_decimals`` are exposed for the book checksum (websocket v1
    "book — checksum"); ``tick_size``/``lot_size`` are ``10**-decimals`` unless the body has
    ``tick_size``.
    """

    kind = "kraken"

    @classmethod
    def from_asset_pairs(
        cls,
        body: bytes | str | Mapping,
        quote_aliases: Mapping[str, str] | None = None,
        asset_aliases: Mapping[str, str] | None = None,
        exchange: str = "KRAKEN",
    ) -> "KrakenSymbology":
        doc = body if isinstance(body, Mapping) else _loads(body, exchange)
        if not isinstance(doc, Mapping) or doc.get("error"):
            raise SymbologyError(f"{exchange}: AssetPairs error: {doc.get('error') if isinstance(doc, Mapping) else doc!r:.200}")
        result = doc.get("result")
        if not isinstance(result, Mapping):
            raise SymbologyError(f"{exchange}: AssetPairs body has no 'result' object")
        qa = _upper_map(quote_aliases)
        aa = _upper_map(KRAKEN_ASSET_ALIASES if asset_aliases is None else asset_aliases)
        infos: list[SymbolInfo] = []
        inputs: list[tuple[str, str]] = []
        for rest_name, p in result.items():
            ws = p.get("wsname")
            if not ws:
                continue
            ws = ws.upper()
            try:
                b, q = ws.split("/")
            except ValueError:
                raise SymbologyError(f"{exchange}: wsname {ws!r} of {rest_name!r} is not BASE/QUOTE") from None
            base = canonical_asset(b, aa)
            quote = canonical_asset(canonical_asset(q, aa), qa)
            pd, ld = p.get("pair_decimals"), p.get("lot_decimals")
            status = str(p.get("status", "online"))
            tick = _dec(p["tick_size"]) if p.get("tick_size") is not None else (
                Decimal(1).scaleb(-int(pd)) if pd is not None else None)
            infos.append(
                SymbolInfo(
                    venue_symbol=ws,
                    canonical=base + quote,
                    base=base,
                    quote=quote,
                    kind="spot",
                    status=status,
                    tradeable=status == "online",
                    tick_size=tick,
                    lot_size=Decimal(1).scaleb(-int(ld)) if ld is not None else None,
                    pair_decimals=None if pd is None else int(pd),
                    lot_decimals=None if ld is None else int(ld),
                    rest_name=rest_name,
                )
            )
            inputs.append((rest_name, ws))
            inputs.append((f"{aa.get(b, b)}/{aa.get(q, q)}", ws))  # websocket v2 form: BTC/USD
            if p.get("altname"):
                inputs.append((p["altname"], ws))
        return cls(exchange, infos, inputs)


_KF_KINDS = {
    "PI": "perpetual_inverse",
    "FI": "future_inverse",
    "PF": "perpetual_linear",
    "FF": "future_linear",
    "IN": "index",
    "RR": "reference_rate",
}
_KF_QUOTES = ("USDT", "USDC", "USD", "EUR", "GBP", "CHF", "JPY", "AUD", "CAD", "XBT", "BTC", "ETH")


class KrakenFuturesSymbology(Symbology):
    """Kraken Futures. Venue symbols are upper case (``PI_XBTUSD``, as websocket v1 frames carry
    them in ``product_id``); input is case-insensitive (REST lists ``pi_xbtusd``).

    Canonical form ``{BASE}{QUOTE}[-{YYMMDD}][-{PREFIX}]`` (reversible through the map):

    * ``PI_XBTUSD`` (perpetual inverse) → ``BTCUSD`` — no suffix (DESIGN §4);
    * ``FI_XBTUSD_210924`` (fixed-maturity inverse) → ``BTCUSD-210924`` (expiry kept);
    * every other contract family keeps its two-letter venue prefix as the last suffix, so it
      never collides with the inverse contracts: ``PF_XBTUSD`` (perpetual linear,
      multi-collateral) → ``BTCUSD-PF``; ``FF_XBTUSD_230929`` → ``BTCUSD-230929-FF``;
    * index ``in_xbtusd`` → ``BTCUSD-IN`` and reference rate ``rr_xbtusd`` → ``BTCUSD-RR``,
      marked ``tradeable=False`` with kind ``index``/``reference_rate`` (left out of
      ``pairs(tradeable_only=True)``).

    Base/quote come from the body's ``base``/``quote`` fields when present (newer API), else
    from splitting the pair on a known quote suffix (``USD``, ``EUR``, ...). Asset aliases
    default to :data:`KRAKEN_ASSET_ALIASES`.

    Source: Kraken Futures REST API v3 docs, "Instrument Details → Get instruments"
    (``GET /derivatives/api/v3/instruments``: ``symbol``, ``type``, ``tradeable``,
    ``tickSize``, ``contractSize``, ``lastTradingTime``) and the websocket v1 ``book``/
    ``trade`` feeds (``product_id``). ``tickSize`` and ``contractSize`` are JSON numbers; they
    are parsed to exact ``Decimal`` (never through float).
    """

    kind = "kraken_futures"

    @staticmethod
    def _norm(symbol: str) -> str:
        return symbol.strip().upper()

    @classmethod
    def from_instruments(
        cls,
        body: bytes | str | Mapping,
        quote_aliases: Mapping[str, str] | None = None,
        asset_aliases: Mapping[str, str] | None = None,
        exchange: str = "KRAKEN_FUTURES",
    ) -> "KrakenFuturesSymbology":
        doc = body if isinstance(body, Mapping) else _loads(body, exchange, decimals=True)
        if not isinstance(doc, Mapping) or doc.get("result") != "success":
            err = doc.get("error") if isinstance(doc, Mapping) else doc
            raise SymbologyError(f"{exchange}: instruments request failed: {err!r:.200}")
        qa = _upper_map(quote_aliases)
        aa = _upper_map(KRAKEN_ASSET_ALIASES if asset_aliases is None else asset_aliases)
        infos = []
        for inst in doc.get("instruments", ()):
            venue = str(inst.get("symbol", "")).upper()
            parts = venue.split("_")
            if len(parts) not in (2, 3) or len(parts[0]) != 2 or not parts[1]:
                raise SymbologyError(f"{exchange}: cannot parse instrument symbol {venue!r}")
            prefix, pair = parts[0], parts[1]
            expiry = parts[2] if len(parts) == 3 else None
            if expiry is not None and not (len(expiry) == 6 and expiry.isdigit()):
                raise SymbologyError(f"{exchange}: instrument {venue!r}: expiry {expiry!r} is not YYMMDD")
            if inst.get("base") and inst.get("quote"):
                b, q = str(inst["base"]), str(inst["quote"])
            else:
                q = next((x for x in _KF_QUOTES if pair.endswith(x) and len(pair) > len(x)), pair[-3:])
                b = pair[: -len(q)]
            if not b:
                raise SymbologyError(f"{exchange}: cannot split {venue!r} into base and quote")
            base = canonical_asset(b, aa)
            quote = canonical_asset(canonical_asset(q, aa), qa)
            canonical = base + quote
            if expiry:
                canonical += "-" + expiry
            if prefix not in ("PI", "FI"):
                canonical += "-" + prefix
            kind = _KF_KINDS.get(prefix, "other")
            tradeable = bool(inst.get("tradeable", False)) and kind not in ("index", "reference_rate")
            infos.append(
                SymbolInfo(
                    venue_symbol=venue,
                    canonical=canonical,
                    base=base,
                    quote=quote,
                    kind=kind,
                    status=str(inst.get("type", "")),
                    tradeable=tradeable,
                    expiry=expiry,
                    tick_size=_dec(inst.get("tickSize")),
                    contract_size=_dec(inst.get("contractSize")),
                    rest_name=str(inst.get("symbol")),
                )
            )
        return cls(exchange, infos)


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
    """Build the symbology of a provider ``kind`` (``binance``, ``kraken``, ``kraken_futures``,
    ``databento``) from its REST reference body (see :func:`fetch_reference`; ignored for
    ``databento``, whose symbols are native and may be listed in ``symbols``). ``exchange``
    defaults to ``kind.upper()``. Raises ``SymbologyError`` for an unknown kind or a malformed
    body (never for alias collisions between symbols: see the module docstring)."""
    exchange = exchange or kind.upper()
    if kind == "databento":
        return NativeSymbology(exchange, symbols)
    if reference_body is None:
        raise SymbologyError(f"{kind}: a reference body is required")
    if kind == "binance":
        return BinanceSymbology.from_exchange_info(reference_body, quote_aliases, asset_aliases, exchange)
    if kind == "kraken":
        return KrakenSymbology.from_asset_pairs(reference_body, quote_aliases, asset_aliases, exchange)
    if kind == "kraken_futures":
        return KrakenFuturesSymbology.from_instruments(reference_body, quote_aliases, asset_aliases, exchange)
    raise SymbologyError(f"unknown provider kind {kind!r}; known: binance, kraken, kraken_futures, databento")


async def fetch_reference(kind: str, rest_url: str, session) -> bytes:
    """GET the venue's reference body: ``rest_url`` (no trailing slash needed) +
    :data:`REST_PATHS` ``[kind]`` through the given ``aiohttp.ClientSession``. Returns the raw
    body bytes (feed them to :func:`for_provider`). Raises ``SymbologyError`` for an unknown
    kind, a non-200 status, a connection error or a timeout (message names the URL)."""
    import aiohttp

    try:
        path = REST_PATHS[kind]
    except KeyError:
        raise SymbologyError(f"provider kind {kind!r} has no REST reference endpoint") from None
    url = rest_url.rstrip("/") + path
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
