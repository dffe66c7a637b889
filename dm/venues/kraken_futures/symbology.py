"""Kraken Futures symbology: ``PI_XBTUSD`` ↔ ``BTCUSD-BTC-PERP``, ``FI_XBTUSD_210924`` ↔
``BTCUSD-BTC-210924``, ``PF_XBTUSD`` ↔ ``BTCUSD-USD-PERP`` (dm's canonical scheme for
derivatives, ``dm.symbology``), from REST ``GET /derivatives/api/v3/instruments``."""
from __future__ import annotations

from collections.abc import Mapping

from dm.errors import SymbologyError
from dm.symbology import (SymbolInfo, Symbology, canonical_asset, derivative_symbol, exact_decimal, load_reference,
                          upper_map)
from dm.venues.kraken.symbology import KRAKEN_ASSET_ALIASES


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

    Canonical forms (``dm.symbology`` module docstring; reversible through the map):

    * ``PI_XBTUSD`` (perpetual inverse, settled in the base) → ``BTCUSD-BTC-PERP``;
    * ``FI_XBTUSD_210924`` (fixed-maturity inverse) → ``BTCUSD-BTC-210924``;
    * ``PF_XBTUSD`` (perpetual linear, multi-collateral, settled in the quote) →
      ``BTCUSD-USD-PERP``; ``FF_XBTUSD_230929`` (linear, dated) → ``BTCUSD-USD-230929``;
    * index ``in_xbtusd`` → ``BTCUSD-INDEX`` and reference rate ``rr_xbtusd`` →
      ``BTCUSD-REFRATE``, marked ``tradeable=False`` with kind ``index``/``reference_rate``
      (left out of ``pairs(tradeable_only=True)``);
    * any other contract family keeps its two-letter prefix: ``XX_XBTUSD`` → ``BTCUSD-XX``.

    Sizes are contracts (``contractSize`` says what one is worth): the size precision is the
    decimals of the venue's ``contractValueTradePrecision`` when the body has it (the number
    of decimals an order size may carry; negative means whole multiples), else 0 for inverse
    contracts (whole contracts) and 4 otherwise.

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

    @classmethod
    def from_reference(cls, body, quote_aliases=None, asset_aliases=None, exchange=None) -> "KrakenFuturesSymbology":
        """``GET /derivatives/api/v3/instruments`` body → the map (see :meth:`from_instruments`)."""
        return cls.from_instruments(body, quote_aliases, asset_aliases, exchange or "KRAKEN_FUTURES")

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
        doc = body if isinstance(body, Mapping) else load_reference(body, exchange, decimals=True)
        if not isinstance(doc, Mapping) or doc.get("result") != "success":
            err = doc.get("error") if isinstance(doc, Mapping) else doc
            raise SymbologyError(f"{exchange}: instruments request failed: {err!r:.200}")
        qa = upper_map(quote_aliases)
        aa = upper_map(KRAKEN_ASSET_ALIASES if asset_aliases is None else asset_aliases)
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
            kind = _KF_KINDS.get(prefix, "other")
            settle = None
            if prefix in ("PI", "FI", "PF", "FF"):
                settle = base if prefix in ("PI", "FI") else quote
                canonical = derivative_symbol(base, quote, settle, expiry)
            elif prefix in ("IN", "RR"):
                canonical = base + quote + ("-INDEX" if prefix == "IN" else "-REFRATE")
            else:
                canonical = base + quote + (f"-{expiry}" if expiry else "") + "-" + prefix
            cvp = inst.get("contractValueTradePrecision")
            if isinstance(cvp, (int, float)) and not isinstance(cvp, bool):
                size_precision = max(0, int(cvp))
            else:
                size_precision = 0 if prefix in ("PI", "FI") else 4
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
                    tick_size=exact_decimal(inst.get("tickSize")),
                    contract_size=exact_decimal(inst.get("contractSize")),
                    rest_name=str(inst.get("symbol")),
                    settle=settle,
                    underlying=str(inst["underlying"]) if inst.get("underlying") else None,
                    size_precision=size_precision,
                )
            )
        return cls(exchange, infos)
