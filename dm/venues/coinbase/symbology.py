"""Coinbase symbology: product ids ``BTC-USD`` ↔ canonical ``BTCUSD`` (spot only), from either
REST reference body:

* Advanced Trade ``GET /api/v3/brokerage/market/products`` → ``{"products": [{"product_id",
  "base_currency_id", "quote_currency_id", "base_increment", "quote_increment" | "price_increment",
  "status", "trading_disabled", "product_type", ...}]}`` (Advanced Trade REST docs, "List Public
  Products");
* Exchange ``GET /products`` → ``[{"id", "base_currency", "quote_currency", "base_increment",
  "quote_increment", "status", "trading_disabled", ...}]`` (Exchange REST docs, "Get all known
  trading pairs").

``size_precision`` is the decimals of ``base_increment`` (the product's order size step; sizes in
frames never carry more); ``tick_size`` is ``quote_increment`` (``price_increment`` when the v3
body has it). ``tradeable`` is ``status == "online"`` and not ``trading_disabled``. Advanced
Trade products that are not ``SPOT`` (futures) are skipped: dm speaks Coinbase spot only.
"""
from __future__ import annotations

from collections.abc import Mapping

from dm.errors import SymbologyError
from dm.symbology import SymbolInfo, Symbology, canonical_asset, exact_decimal, load_reference, upper_map


class CoinbaseSymbology(Symbology):
    """Coinbase spot products (module docstring). Venue symbols are product ids, upper case
    (``BTC-USD``), as every websocket frame carries them in ``product_id``; input is
    case-insensitive. Canonical: base + quote with aliases applied (``BTC-USD`` → ``BTCUSD``).
    No quote alias by default (``[providers.X] quote_aliases``): Coinbase lists ``BTC-USD``
    next to ``BTC-USDT`` and ``BTC-USDC``."""

    kind = "coinbase"

    @classmethod
    def from_reference(cls, body, quote_aliases=None, asset_aliases=None, exchange=None) -> "CoinbaseSymbology":
        """Either products body (module docstring) → the map. Raises ``SymbologyError`` for a
        body of neither form or a malformed entry."""
        exchange = exchange or "COINBASE"
        doc = body if isinstance(body, (Mapping, list)) else load_reference(body, exchange)
        if isinstance(doc, Mapping) and isinstance(doc.get("products"), list):
            entries, v3 = doc["products"], True
        elif isinstance(doc, list):
            entries, v3 = doc, False
        else:
            raise SymbologyError(f"{exchange}: not a Coinbase products body: {str(doc)[:200]!r}")
        qa, aa = upper_map(quote_aliases), upper_map(asset_aliases)
        infos = []
        for p in entries:
            info = cls._info(exchange, p, v3, qa, aa)
            if info is not None:
                infos.append(info)
        return cls(exchange, infos)

    @staticmethod
    def _info(exchange: str, p, v3: bool, qa: dict, aa: dict) -> SymbolInfo | None:
        try:
            if v3:
                if str(p.get("product_type") or "SPOT").upper() != "SPOT":
                    return None
                pid = str(p["product_id"]).strip().upper()
                b, q = str(p["base_currency_id"]), str(p["quote_currency_id"])
                tick = exact_decimal(p.get("price_increment") or p.get("quote_increment") or None)
            else:
                pid = str(p["id"]).strip().upper()
                b, q = str(p["base_currency"]), str(p["quote_currency"])
                tick = exact_decimal(p.get("quote_increment") or None)
            step = exact_decimal(p.get("base_increment") or None)
            status = str(p.get("status", ""))
            disabled = bool(p.get("trading_disabled") or p.get("is_disabled"))
        except (KeyError, TypeError, AttributeError, ArithmeticError, ValueError):
            raise SymbologyError(f"{exchange}: malformed product entry {p!r:.200}") from None
        if not pid:
            raise SymbologyError(f"{exchange}: product entry without an id: {p!r:.200}")
        base = canonical_asset(b, aa)
        quote = canonical_asset(canonical_asset(q, aa), qa)
        size_precision = None
        if step is not None and step > 0:
            from dm.records import size_precision_of

            try:
                size_precision = size_precision_of(step)
            except ValueError as e:
                raise SymbologyError(f"{exchange}: product {pid!r}: {e}") from None
        return SymbolInfo(
            venue_symbol=pid,
            canonical=base + quote,
            base=base,
            quote=quote,
            kind="spot",
            status=status,
            tradeable=status.lower() == "online" and not disabled,
            tick_size=tick,
            lot_size=step,
            rest_name=pid,
            size_precision=size_precision,
        )
