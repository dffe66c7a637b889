"""Binance USD-M futures symbology: ``BTCUSDT`` → ``BTCUSD-USD-PERP`` (with the USDT→USD quote
alias; ``BTCUSDT-USDT-PERP`` without), ``BTCUSDT_210924`` → ``BTCUSD-USD-210924``, from REST
``GET /fapi/v1/exchangeInfo``. COIN-M (``dm.venues.binance_delivery``) subclasses it."""
from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timezone

from dm.errors import SymbologyError
from dm.symbology import (SymbolInfo, Symbology, canonical_asset, derivative_symbol, exact_decimal, load_reference,
                          upper_map)

#: exchangeInfo ``contractType`` values of dated contracts (Binance futures docs, "Enum
#: Definitions → Contract type")
DATED = frozenset({"CURRENT_MONTH", "NEXT_MONTH", "CURRENT_QUARTER", "NEXT_QUARTER",
                   "CURRENT_QUARTER DELIVERING", "NEXT_QUARTER DELIVERING"})


def _yymmdd(ms) -> str:
    return datetime.fromtimestamp(int(ms) / 1000, tz=timezone.utc).strftime("%y%m%d")


class BinanceFuturesSymbology(Symbology):
    """Binance USD-M futures (linear: margined and settled in ``marginAsset``, the quote).

    Venue symbols are ``symbols[].symbol`` (``BTCUSDT``, ``BTCUSDT_210924``), case-insensitive
    on input (stream names are lower case). Canonical (``dm.symbology`` module docstring):
    ``PERPETUAL`` → ``BASEQUOTE-SETTLE-PERP``; a dated contract (``CURRENT_QUARTER``, ...) →
    ``BASEQUOTE-SETTLE-YYMMDD`` with the ``deliveryDate`` (UTC). A symbol listed before trading
    (``PENDING_TRADING``) may have an empty ``contractType``: a perpetual unless its symbol has
    a ``_YYMMDD`` suffix. ``size_precision`` is the decimals of ``LOT_SIZE.stepSize`` (also
    ``lot_size``); ``tick_size`` is ``PRICE_FILTER.tickSize``; ``tradeable`` is ``status ==
    "TRADING"``.

    Source: Binance USD-M Futures docs, "Market Data → Exchange Information" (``GET
    /fapi/v1/exchangeInfo``: ``symbols[]``: ``symbol``, ``pair``, ``contractType``,
    ``deliveryDate``, ``status``, ``baseAsset``, ``quoteAsset``, ``marginAsset``, ``filters``),
    verified on data/binance_futures/2021-07-22/BINANCE_FUTURES.0 (122 symbols).
    """

    kind = "binance_futures"
    EXCHANGE = "BINANCE_FUTURES"
    INVERSE = False          # COIN-M: settled in the base asset, sizes in contracts
    STATUS_KEY = "status"    # COIN-M: contractStatus

    @classmethod
    def from_reference(cls, body, quote_aliases=None, asset_aliases=None, exchange=None):
        """exchangeInfo body (raw or parsed) → the map. Raises ``SymbologyError`` for a body
        without ``symbols`` or a malformed entry."""
        exchange = exchange or cls.EXCHANGE
        doc = body if isinstance(body, Mapping) else load_reference(body, exchange)
        try:
            symbols = doc["symbols"]
        except (KeyError, TypeError):
            raise SymbologyError(f"{exchange}: exchangeInfo body has no 'symbols' list") from None
        qa, aa = upper_map(quote_aliases), upper_map(asset_aliases)
        return cls(exchange, [cls._info(exchange, s, qa, aa) for s in symbols])

    @classmethod
    def _info(cls, exchange: str, s, qa: dict, aa: dict) -> SymbolInfo:
        try:
            sym = str(s["symbol"]).strip().upper()
            b, q = str(s["baseAsset"]), str(s["quoteAsset"])
            margin = str(s.get("marginAsset") or (b if cls.INVERSE else q))
            ctype = str(s.get("contractType") or "")
            status = str(s.get(cls.STATUS_KEY) or s.get("status") or s.get("contractStatus") or "")
            filters = {f.get("filterType"): f for f in s.get("filters", ())}
            tick = exact_decimal(filters.get("PRICE_FILTER", {}).get("tickSize"))
            step = exact_decimal(filters.get("LOT_SIZE", {}).get("stepSize"))
            csize = exact_decimal(s["contractSize"]) if s.get("contractSize") is not None else None
        except (KeyError, TypeError, AttributeError, ArithmeticError, ValueError):
            raise SymbologyError(f"{exchange}: malformed exchangeInfo symbol entry {s!r:.200}") from None
        base = canonical_asset(b, aa)
        quote = canonical_asset(canonical_asset(q, aa), qa)
        settle = canonical_asset(canonical_asset(margin, aa), qa)
        dated = ctype in DATED or (not ctype and "_" in sym and not sym.endswith("_PERP"))
        expiry = None
        if dated:
            dd = s.get("deliveryDate")
            if not str(dd or "").isdigit() or int(dd) <= 0:
                raise SymbologyError(f"{exchange}: dated contract {sym!r} has no deliveryDate ({dd!r})")
            expiry = _yymmdd(dd)
        klass = ("future_" if dated else "perpetual_") + ("inverse" if cls.INVERSE else "linear")
        size_precision = None
        if step is not None and step > 0:
            from dm.records import size_precision_of

            try:
                size_precision = size_precision_of(step)
            except ValueError as e:
                raise SymbologyError(f"{exchange}: {sym!r}: {e}") from None
        return SymbolInfo(
            venue_symbol=sym,
            canonical=derivative_symbol(base, quote, settle, expiry),
            base=base,
            quote=quote,
            kind=klass,
            status=status,
            tradeable=status == "TRADING",
            expiry=expiry,
            tick_size=tick,
            lot_size=step,
            contract_size=csize,
            settle=settle,
            underlying=str(s.get("pair") or "") or None,
            size_precision=size_precision,
        )
