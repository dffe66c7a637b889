"""Bitstamp v2 symbology: pairs from REST ``GET /api/v2/trading-pairs-info/``."""
from __future__ import annotations

from decimal import Decimal

from dm.errors import SymbologyError
from dm.symbology import SymbolInfo, Symbology, canonical_asset, load_reference, upper_map


class BitstampSymbology(Symbology):
    """Bitstamp spot pairs by ``url_symbol`` (``ethusd``: the form channel names carry,
    ``diff_order_book_ethusd``; input accepted in any case, and as ``name`` ``ETH/USD``).

    Canonical: base + quote of ``name`` (``ETH/USD`` → ``ETHUSD``), aliases applied.
    ``size_precision`` = ``base_decimals`` (amounts are sent with that many decimals), ``tick_size``
    = 10^-``counter_decimals``; ``tradeable`` = ``trading == "Enabled"``.

    Source: Bitstamp REST API docs, "Trading pairs info" (``name``, ``url_symbol``,
    ``base_decimals``, ``counter_decimals``, ``trading``), verified on the recorded body of
    data/bitstamp/2022-01-05 (140 pairs; ``ethusd`` and ``ethusdt`` both listed: the global
    USDT → USD alias would merge them, so the provider takes quote aliases from its own config).
    """

    kind = "bitstamp"

    @staticmethod
    def _norm(symbol: str) -> str:
        return symbol.strip().lower()

    @classmethod
    def from_reference(cls, body, quote_aliases=None, asset_aliases=None, exchange=None) -> "BitstampSymbology":
        """The ``trading-pairs-info`` body (a JSON array) → the map. Raises ``SymbologyError``
        for a body that is not a list of pairs or a malformed entry."""
        exchange = exchange or "BITSTAMP"
        doc = body if isinstance(body, list) else load_reference(body, exchange)
        if not isinstance(doc, list):
            raise SymbologyError(f"{exchange}: trading-pairs-info is not a list: {str(doc)[:200]}")
        qa, aa = upper_map(quote_aliases), upper_map(asset_aliases)
        infos, aliases = [], []
        for p in doc:
            try:
                url = str(p["url_symbol"]).strip().lower()
                b, q = str(p["name"]).split("/")
                bdec, cdec = int(p["base_decimals"]), int(p["counter_decimals"])
                trading = str(p.get("trading", ""))
            except (KeyError, TypeError, ValueError, AttributeError):
                raise SymbologyError(f"{exchange}: malformed pair entry {p!r:.200}") from None
            if not url or not 0 <= bdec <= 18 or not 0 <= cdec <= 18:
                raise SymbologyError(f"{exchange}: malformed pair entry {p!r:.200}")
            base = canonical_asset(b, aa)
            quote = canonical_asset(canonical_asset(q, aa), qa)
            infos.append(SymbolInfo(
                venue_symbol=url, canonical=base + quote, base=base, quote=quote, kind="spot", status=trading,
                tradeable=trading == "Enabled", tick_size=Decimal(1).scaleb(-cdec), lot_size=Decimal(1).scaleb(-bdec),
                rest_name=url, size_precision=bdec))
            aliases.append((f"{b.strip()}/{q.strip()}", url))
        return cls(exchange, infos, input_aliases=aliases)
