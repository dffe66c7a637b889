"""Kraken spot symbology: websocket v1 ``wsname`` ``XBT/USD`` ↔ ``BTCUSD`` (``XBT`` → ``BTC``,
``XDG`` → ``DOGE``), from REST ``GET /0/public/AssetPairs``."""
from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal

from dm.errors import SymbologyError
from dm.symbology import SymbolInfo, Symbology, canonical_asset, exact_decimal, load_reference, upper_map

#: Kraken's legacy asset codes → common codes (Kraken spot and Kraken Futures).
KRAKEN_ASSET_ALIASES: dict[str, str] = {"XBT": "BTC", "XDG": "DOGE"}


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
    def from_reference(cls, body, quote_aliases=None, asset_aliases=None, exchange=None) -> "KrakenSymbology":
        """``GET /0/public/AssetPairs`` body → the map (see :meth:`from_asset_pairs`)."""
        return cls.from_asset_pairs(body, quote_aliases, asset_aliases, exchange or "KRAKEN")

    @classmethod
    def from_asset_pairs(
        cls,
        body: bytes | str | Mapping,
        quote_aliases: Mapping[str, str] | None = None,
        asset_aliases: Mapping[str, str] | None = None,
        exchange: str = "KRAKEN",
    ) -> "KrakenSymbology":
        doc = body if isinstance(body, Mapping) else load_reference(body, exchange)
        if not isinstance(doc, Mapping) or doc.get("error"):
            raise SymbologyError(f"{exchange}: AssetPairs error: {doc.get('error') if isinstance(doc, Mapping) else doc!r:.200}")
        result = doc.get("result")
        if not isinstance(result, Mapping):
            raise SymbologyError(f"{exchange}: AssetPairs body has no 'result' object")
        qa = upper_map(quote_aliases)
        aa = upper_map(KRAKEN_ASSET_ALIASES if asset_aliases is None else asset_aliases)
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
            tick = exact_decimal(p["tick_size"]) if p.get("tick_size") is not None else (
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
