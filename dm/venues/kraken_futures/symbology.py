"""Kraken Futures symbology: ``PI_XBTUSD`` ↔ ``BTCUSD``, ``FI_XBTUSD_210924`` ↔ ``BTCUSD-210924``,
other contract families keep their prefix (``PF_XBTUSD`` ↔ ``BTCUSD-PF``), from REST
``GET /derivatives/api/v3/instruments``."""
from __future__ import annotations

from collections.abc import Mapping

from dm.errors import SymbologyError
from dm.symbology import SymbolInfo, Symbology, canonical_asset, exact_decimal, load_reference, upper_map
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
                    tick_size=exact_decimal(inst.get("tickSize")),
                    contract_size=exact_decimal(inst.get("contractSize")),
                    rest_name=str(inst.get("symbol")),
                )
            )
        return cls(exchange, infos)
