"""Binance spot symbology: ``BTCUSDT`` ↔ ``BTCUSD`` (quote aliases from the config), from REST
``GET /api/v3/exchangeInfo``."""
from __future__ import annotations

from collections.abc import Mapping

from dm.errors import SymbologyError
from dm.symbology import SymbolInfo, Symbology, canonical_asset, exact_decimal, load_reference, upper_map


def _size_precision(base_precision, step) -> int | None:
    """max(baseAssetPrecision, decimals of stepSize), None when neither is usable."""
    from dm.records import size_precision_of

    cands = []
    if isinstance(base_precision, int) and 0 <= base_precision <= 18:
        cands.append(base_precision)
    if step is not None and step > 0:
        try:
            cands.append(size_precision_of(step))
        except ValueError:
            pass
    return max(cands) if cands else None


class BinanceSymbology(Symbology):
    """Binance spot. Venue symbols are ``symbols[].symbol`` (``BTCUSDT``), case-insensitive on
    input (stream names are lower case: ``btcusdt@trade``). Canonical = ``baseAsset`` +
    aliased ``quoteAsset``.

    Source: Binance Spot API docs, "General endpoints → Exchange information"
    (``GET /api/v3/exchangeInfo``: ``symbols[].symbol``, ``status``, ``baseAsset``,
    ``quoteAsset``, ``filters[]`` with ``PRICE_FILTER.tickSize`` and ``LOT_SIZE.stepSize``).
    ``tradeable`` is ``status == "TRADING"``; halted symbols (``BREAK``) stay in the map.

    ``size_precision`` (the scale dm stores sizes at) is the larger of ``baseAssetPrecision``
    and the decimals of ``LOT_SIZE.stepSize``: order quantities follow the step, but executed
    quantities (trades of quote-quantity market orders) are only bound by the base asset's
    precision. SHIBUSDT: step 1.00, base precision 2 → 2 (10**15 units fit).
    """

    kind = "binance"

    @classmethod
    def from_reference(cls, body, quote_aliases=None, asset_aliases=None, exchange=None) -> "BinanceSymbology":
        """``GET /api/v3/exchangeInfo`` body → the map (see :meth:`from_exchange_info`)."""
        return cls.from_exchange_info(body, quote_aliases, asset_aliases, exchange or "BINANCE")

    @classmethod
    def from_exchange_info(
        cls,
        body: bytes | str | Mapping,
        quote_aliases: Mapping[str, str] | None = None,
        asset_aliases: Mapping[str, str] | None = None,
        exchange: str = "BINANCE",
    ) -> "BinanceSymbology":
        doc = body if isinstance(body, Mapping) else load_reference(body, exchange)
        try:
            symbols = doc["symbols"]
        except (KeyError, TypeError):
            raise SymbologyError(f"{exchange}: exchangeInfo body has no 'symbols' list") from None
        qa, aa = upper_map(quote_aliases), upper_map(asset_aliases)
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
                    tick_size=exact_decimal(filters.get("PRICE_FILTER", {}).get("tickSize")),
                    lot_size=(step := exact_decimal(filters.get("LOT_SIZE", {}).get("stepSize"))),
                    size_precision=_size_precision(s.get("baseAssetPrecision"), step),
                )
            )
        return cls(exchange, infos)
