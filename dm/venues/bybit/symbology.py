"""Bybit v5 symbology: instruments keyed by (category, symbol), from REST
``GET /v5/market/instruments-info?category=spot|linear|inverse``.

Bybit lists the same symbol name in several categories (spot ``BTCUSDT`` and the linear
perpetual ``BTCUSDT`` are different instruments), so a venue symbol here is
``<category>:<SYMBOL>`` (``spot:BTCUSDT``, ``linear:BTCUSDT``, ``inverse:BTCUSD``): unique per
exchange, and what the instrument registry keeps as the raw symbol. Frames carry the bare
symbol; the provider keeps one codec symbol table per category connection
(:func:`split_venue_symbol`).
"""
from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timezone

from dm.errors import SymbologyError
from dm.symbology import (SymbolInfo, Symbology, canonical_asset, derivative_symbol, exact_decimal, load_reference,
                          upper_map)

#: the categories dm speaks (Bybit v5 "Connect": one public websocket per category)
CATEGORIES = ("spot", "linear", "inverse")

# Bybit v5 "Enums Definitions → contractType"
_CONTRACT_KINDS = {
    "LinearPerpetual": "perpetual_linear",
    "LinearFutures": "future_linear",
    "InversePerpetual": "perpetual_inverse",
    "InverseFutures": "future_inverse",
}


def venue_symbol(category: str, symbol: str) -> str:
    """``("linear", "btcusdt")`` → ``"linear:BTCUSDT"``."""
    return f"{category.strip().lower()}:{symbol.strip().upper()}"


def split_venue_symbol(venue: str) -> tuple[str, str]:
    """``"linear:BTCUSDT"`` → ``("linear", "BTCUSDT")``. Raises ``SymbologyError`` for a form
    without a known category."""
    cat, sep, sym = venue.partition(":")
    cat = cat.strip().lower()
    if not sep or cat not in CATEGORIES or not sym.strip():
        raise SymbologyError(f"BYBIT: venue symbol {venue!r} is not '<category>:<SYMBOL>' "
                             f"with a category in {CATEGORIES}")
    return cat, sym.strip().upper()


def _yymmdd(ms) -> str:
    return datetime.fromtimestamp(int(ms) / 1000, tz=timezone.utc).strftime("%y%m%d")


class BybitSymbology(Symbology):
    """Bybit v5 spot, linear (USDT/USDC perpetuals and futures) and inverse contracts.

    Canonical forms (``dm.symbology`` module docstring):

    * spot ``spot:BTCUSDT`` → ``BTCUSD`` (base + quote, quote aliases applied);
    * linear perpetual ``linear:BTCUSDT`` → ``BTCUSD-USD-PERP`` (settled in ``settleCoin``,
      the quote: USDT → USD with the alias), ``linear:BTCPERP`` (USDC) → ``BTCUSDC-USDC-PERP``;
    * linear future ``linear:BTC-26DEC25`` → ``BTCUSDC-USDC-251226`` (``deliveryTime``, UTC);
    * inverse perpetual ``inverse:BTCUSD`` → ``BTCUSD-BTC-PERP``; inverse future
      ``inverse:BTCUSDZ25`` → ``BTCUSD-BTC-251226``.

    ``size_precision`` is the decimals of the venue's quantity step: ``lotSizeFilter.
    basePrecision`` for spot, ``lotSizeFilter.qtyStep`` for contracts (also ``lot_size``);
    ``tick_size`` is ``priceFilter.tickSize``. ``tradeable`` is ``status == "Trading"``.
    Option instruments are skipped (dm does not speak Bybit options yet).

    Input: a venue symbol is accepted in any case (``Linear:btcusdt``); the bare symbol
    (``BTCUSDT``) names an instrument only when one category lists it (else it is ambiguous).

    Source: Bybit API v5 docs, "Market → Get Instruments Info" (``GET /v5/market/
    instruments-info``: ``result.category``, ``result.list[]``: ``symbol``, ``contractType``,
    ``status``, ``baseCoin``, ``quoteCoin``, ``settleCoin``, ``deliveryTime``,
    ``priceFilter.tickSize``, ``lotSizeFilter.qtyStep`` / ``basePrecision``), verified on the
    recorded bodies of data/bybit/2026-08-09 (linear: 800 instruments, spot: 557).
    """

    kind = "bybit"

    @staticmethod
    def _norm(symbol: str) -> str:
        cat, sep, sym = symbol.strip().partition(":")
        if not sep:
            return symbol.strip().upper()
        return f"{cat.strip().lower()}:{sym.strip().upper()}"

    @classmethod
    def from_reference(cls, body, quote_aliases=None, asset_aliases=None, exchange=None) -> "BybitSymbology":
        """One ``GET /v5/market/instruments-info`` body, or a JSON array of them (one per
        category and page, as :meth:`dm.venues.bybit.provider.BybitProvider.fetch_reference`
        joins them) → the map. Raises ``SymbologyError`` for a body that is not a successful
        instruments-info answer (``retCode`` != 0) or a malformed entry."""
        exchange = exchange or "BYBIT"
        doc = body if isinstance(body, (Mapping, list)) else load_reference(body, exchange)
        docs = doc if isinstance(doc, list) else [doc]
        qa, aa = upper_map(quote_aliases), upper_map(asset_aliases)
        infos: list[SymbolInfo] = []
        aliases: list[tuple[str, str]] = []
        for d in docs:
            if not isinstance(d, Mapping) or d.get("retCode") != 0 or not isinstance(d.get("result"), Mapping):
                err = d.get("retMsg") if isinstance(d, Mapping) else d
                raise SymbologyError(f"{exchange}: instruments-info request failed: {err!r:.200}")
            result = d["result"]
            category = str(result.get("category", "")).lower()
            if category == "option":
                continue
            if category not in CATEGORIES:
                raise SymbologyError(f"{exchange}: instruments-info of unknown category {category!r}")
            for inst in result.get("list") or ():
                info = cls._info(exchange, category, inst, qa, aa)
                infos.append(info)
                aliases.append((info.rest_name, info.venue_symbol))
        return cls(exchange, infos, input_aliases=aliases)

    @staticmethod
    def _info(exchange: str, category: str, inst, qa: dict, aa: dict) -> SymbolInfo:
        try:
            sym = str(inst["symbol"]).strip().upper()
            b, q = str(inst["baseCoin"]), str(inst["quoteCoin"])
            status = str(inst.get("status", ""))
            lot = inst.get("lotSizeFilter") or {}
            tick = exact_decimal((inst.get("priceFilter") or {}).get("tickSize") or None)
            step = exact_decimal(lot.get("basePrecision" if category == "spot" else "qtyStep") or None)
        except (KeyError, TypeError, AttributeError, ArithmeticError, ValueError):
            raise SymbologyError(f"{exchange}: malformed {category} instrument entry {inst!r:.200}") from None
        if not sym:
            raise SymbologyError(f"{exchange}: {category} instrument entry without a symbol: {inst!r:.200}")
        base = canonical_asset(b, aa)
        quote = canonical_asset(canonical_asset(q, aa), qa)
        expiry = settle = None
        if category == "spot":
            kind, canonical = "spot", base + quote
        else:
            ctype = str(inst.get("contractType", ""))
            kind = _CONTRACT_KINDS.get(ctype)
            if kind is None or not kind.endswith(category):
                raise SymbologyError(f"{exchange}: {category} instrument {sym!r} has contractType {ctype!r}")
            if category == "linear":
                settle = canonical_asset(canonical_asset(str(inst.get("settleCoin") or q), aa), qa)
            else:
                settle = base
            if kind.startswith("future"):
                delivery = inst.get("deliveryTime")
                if not str(delivery or "").isdigit() or int(delivery) <= 0:
                    raise SymbologyError(f"{exchange}: future {sym!r} has no deliveryTime ({delivery!r})")
                expiry = _yymmdd(delivery)
            canonical = derivative_symbol(base, quote, settle, expiry)
        size_precision = None
        if step is not None and step > 0:
            from dm.records import size_precision_of

            try:
                size_precision = size_precision_of(step)
            except ValueError as e:
                raise SymbologyError(f"{exchange}: {category} instrument {sym!r}: {e}") from None
        return SymbolInfo(
            venue_symbol=venue_symbol(category, sym),
            canonical=canonical,
            base=base,
            quote=quote,
            kind=kind,
            status=status,
            tradeable=status == "Trading",
            expiry=expiry,
            tick_size=tick,
            lot_size=step,
            rest_name=sym,
            settle=settle,
            size_precision=size_precision,
        )
