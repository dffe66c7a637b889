"""Deribit v2 symbology: instruments from REST ``GET /api/v2/public/get_instruments?currency=C``
(one body per currency; the provider joins them in a JSON array)."""
from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timezone

from dm.errors import SymbologyError
from dm.symbology import (SymbolInfo, Symbology, canonical_asset, derivative_symbol, exact_decimal, load_reference,
                          upper_map)


def _yymmdd(ms) -> str:
    return datetime.fromtimestamp(int(ms) / 1000, tz=timezone.utc).strftime("%y%m%d")


class DeribitSymbology(Symbology):
    """Deribit options, futures, perpetuals (and spot pairs) by ``instrument_name``.

    Canonical forms (``dm.symbology`` module docstring):

    * option ``BTC-24SEP21-40000-C`` → ``BTCUSD-BTC-210924-40000-C``: base ``base_currency``,
      quote the currency the strike and the underlying index are in (``counter_currency`` when
      the venue gives it, else USD for an option quoted in its own base — the 2021 inverse
      options, premium in BTC —, else ``quote_currency``), settled in ``settlement_currency``
      (else the base: inverse); expiry = ``expiration_timestamp`` (UTC date), strike exact;
    * future ``BTC-25MAR22`` → ``BTCUSD-BTC-220325``; perpetual ``BTC-PERPETUAL`` →
      ``BTCUSD-BTC-PERP`` (``settlement_period`` ``perpetual``); spot ``BTC_USDC`` → ``BTCUSDC``.
      Combos (``future_combo``, ``option_combo``) are skipped.

    ``size_precision``: the decimals of ``min_trade_amount`` (the amount step: options trade in
    contracts of 1 BTC/ETH at 0.1 / 1); ``tick_size``, ``contract_size`` as sent (exact: the
    body is parsed with Decimal); ``tradeable`` = ``is_active``.

    Source: Deribit API v2 docs, "Market data → public/get_instruments" (``instrument_name``,
    ``kind``, ``base_currency``, ``quote_currency``, ``counter_currency``,
    ``settlement_currency``, ``settlement_period``, ``expiration_timestamp``, ``strike``,
    ``option_type``, ``min_trade_amount``, ``tick_size``, ``contract_size``, ``is_active``),
    verified on the recorded bodies of data/deribit/2021-07-22 (BTC 398, ETH 426 instruments).
    """

    kind = "deribit"

    @classmethod
    def from_reference(cls, body, quote_aliases=None, asset_aliases=None, exchange=None) -> "DeribitSymbology":
        """One ``public/get_instruments`` body, or a JSON array of them (one per currency) → the
        map. Raises ``SymbologyError`` for a body that is not a successful answer (a JSON-RPC
        ``error``, no ``result`` list) or a malformed entry."""
        exchange = exchange or "DERIBIT"
        doc = body if isinstance(body, (Mapping, list)) else load_reference(body, exchange, decimals=True)
        docs = doc if isinstance(doc, list) else [doc]
        qa, aa = upper_map(quote_aliases), upper_map(asset_aliases)
        infos: list[SymbolInfo] = []
        for d in docs:
            if not isinstance(d, Mapping) or not isinstance(d.get("result"), list):
                err = d.get("error") if isinstance(d, Mapping) else d
                raise SymbologyError(f"{exchange}: get_instruments request failed: {err!r:.200}")
            for inst in d["result"]:
                info = cls._info(exchange, inst, qa, aa)
                if info is not None:
                    infos.append(info)
        return cls(exchange, infos)

    @staticmethod
    def _info(exchange: str, inst, qa: dict, aa: dict) -> SymbolInfo | None:
        try:
            name = str(inst["instrument_name"]).strip().upper()
            kind = str(inst["kind"])
            b = str(inst["base_currency"])
            q = str(inst["quote_currency"])
            counter = inst.get("counter_currency")
            settle_raw = inst.get("settlement_currency")
            tick = exact_decimal(inst.get("tick_size"))
            step = exact_decimal(inst.get("min_trade_amount"))
            csize = exact_decimal(inst.get("contract_size"))
            active = bool(inst.get("is_active", True))
        except (KeyError, TypeError, AttributeError, ArithmeticError, ValueError):
            raise SymbologyError(f"{exchange}: malformed instrument entry {inst!r:.200}") from None
        if kind.endswith("_combo"):
            return None
        if not name:
            raise SymbologyError(f"{exchange}: instrument entry without a name: {inst!r:.200}")
        base = canonical_asset(b, aa)
        if counter:
            qraw = str(counter)
        elif kind == "option" and q.upper() == b.upper():
            qraw = "USD"
        else:
            qraw = q
        quote = canonical_asset(canonical_asset(qraw, aa), qa)
        settle = canonical_asset(canonical_asset(str(settle_raw or b), aa), qa) if kind != "spot" else None
        linear = settle is not None and settle != base
        expiry = strike = otype = None
        if kind == "spot":
            canonical, vkind = base + quote, "spot"
        elif kind in ("future", "option"):
            perpetual = inst.get("settlement_period") == "perpetual"
            if not perpetual:
                exp = inst.get("expiration_timestamp")
                if not str(exp or "").isdigit():
                    raise SymbologyError(f"{exchange}: {name!r} has no expiration_timestamp ({exp!r})")
                expiry = _yymmdd(exp)
            if kind == "option":
                otype = {"call": "C", "put": "P"}.get(str(inst.get("option_type")))
                strike = exact_decimal(inst.get("strike"))
                if otype is None or strike is None or expiry is None:
                    raise SymbologyError(f"{exchange}: option {name!r} without expiry, strike or option_type")
                vkind = "option_linear" if linear else "option_inverse"
            else:
                vkind = ("perpetual_" if perpetual else "future_") + ("linear" if linear else "inverse")
            canonical = derivative_symbol(base, quote, settle, expiry, strike, otype)
        else:
            raise SymbologyError(f"{exchange}: instrument {name!r} of unknown kind {kind!r}")
        size_precision = None
        if step is not None and step > 0:
            from dm.records import size_precision_of

            try:
                size_precision = size_precision_of(step)
            except ValueError as e:
                raise SymbologyError(f"{exchange}: instrument {name!r}: {e}") from None
        return SymbolInfo(
            venue_symbol=name,
            canonical=canonical,
            base=base,
            quote=quote,
            kind=vkind,
            status="open" if active else "closed",
            tradeable=active,
            expiry=expiry,
            tick_size=tick,
            lot_size=step,
            contract_size=csize,
            settle=settle,
            strike=strike,
            option_type=otype,
            size_precision=size_precision,
        )
