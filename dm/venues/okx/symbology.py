"""OKX v5 symbology: instruments from REST ``GET /api/v5/public/instruments?instType=SPOT|SWAP|
FUTURES|OPTION`` (OKX API v5 docs, "Public Data → Get instruments"; options need ``uly`` or
``instFamily``). The venue symbol is OKX's ``instId``, unique across instrument types (spot
``BTC-USDT``, swap ``BTC-USDT-SWAP``, future ``BTC-USD-210924``, option
``BTC-USD-220325-40000-C``)."""
from __future__ import annotations

from collections.abc import Mapping

from dm.errors import SymbologyError
from dm.symbology import (SymbolInfo, Symbology, canonical_asset, derivative_symbol, exact_decimal, load_reference,
                          upper_map)

#: the instrument types dm speaks ("Get instruments": instType)
INST_TYPES = ("SPOT", "SWAP", "FUTURES", "OPTION")


class OkxSymbology(Symbology):
    """OKX v5 spot, perpetual swaps, dated futures and options.

    Canonical forms (``dm.symbology`` module docstring; ``SETTLE`` = ``settleCcy``):

    * spot ``BTC-USDT`` → ``BTCUSDT`` (``baseCcy`` + ``quoteCcy``, quote aliases applied);
    * swap ``BTC-USDT-SWAP`` (linear) → ``BTCUSDT-USDT-PERP``; ``BTC-USD-SWAP`` (inverse) →
      ``BTCUSD-BTC-PERP`` (base/quote from ``uly``);
    * future ``BTC-USD-210924`` → ``BTCUSD-BTC-210924`` (the expiry as the ``instId`` names it);
    * option ``BTC-USD-220325-40000-C`` → ``BTCUSD-BTC-220325-40000-C`` (``stk``, ``optType``).

    ``lot_size`` = ``lotSz`` and ``size_precision`` = its decimals (spot: base currency;
    SWAP/FUTURES/OPTION: contracts, the unit every size of those books and trades is in);
    ``tick_size`` = ``tickSz``; ``contract_size`` = ``ctVal`` × ``ctMult``. ``tradeable`` is
    ``state == "live"``. ``underlying`` = ``uly``.

    Source: OKX API v5 docs, "Public Data → Get instruments" (``instType``, ``instId``,
    ``uly``, ``baseCcy``, ``quoteCcy``, ``settleCcy``, ``ctVal``, ``ctMult``, ``ctType``,
    ``stk``, ``optType``, ``tickSz``, ``lotSz``, ``state``), verified on the recorded bodies of
    data/okx/2022-02-27/OKX.0 (509 spot, 162 swaps, 104 futures, 508 options).
    """

    kind = "okx"

    @staticmethod
    def _norm(symbol: str) -> str:
        return symbol.strip().upper()

    @classmethod
    def from_reference(cls, body, quote_aliases=None, asset_aliases=None, exchange=None) -> "OkxSymbology":
        """One ``/api/v5/public/instruments`` body, or a JSON array of them (one per instrument
        type / underlying, as ``OkxProvider.fetch_reference`` joins them) → the map. Raises
        ``SymbologyError`` for a failed answer (``code`` != ``"0"``) or a malformed entry."""
        exchange = exchange or "OKX"
        doc = body if isinstance(body, (Mapping, list)) else load_reference(body, exchange)
        docs = doc if isinstance(doc, list) else [doc]
        qa, aa = upper_map(quote_aliases), upper_map(asset_aliases)
        infos: list[SymbolInfo] = []
        seen: set[str] = set()
        for d in docs:
            if not isinstance(d, Mapping) or str(d.get("code")) != "0" or not isinstance(d.get("data"), list):
                err = d.get("msg") if isinstance(d, Mapping) else d
                raise SymbologyError(f"{exchange}: instruments request failed: {err!r:.200}")
            for inst in d["data"]:
                info = cls._info(exchange, inst, qa, aa)
                if info is None or info.venue_symbol in seen:
                    continue
                seen.add(info.venue_symbol)
                infos.append(info)
        return cls(exchange, infos)

    @staticmethod
    def _info(exchange: str, inst, qa: dict, aa: dict) -> SymbolInfo | None:
        try:
            iid = str(inst["instId"]).strip().upper()
            itype = str(inst["instType"]).strip().upper()
            state = str(inst.get("state", ""))
            tick = exact_decimal(inst.get("tickSz") or None)
            lot = exact_decimal(inst.get("lotSz") or None)
            ct_val = exact_decimal(inst.get("ctVal") or None)
            ct_mult = exact_decimal(inst.get("ctMult") or None)
        except (KeyError, TypeError, AttributeError, ArithmeticError, ValueError):
            raise SymbologyError(f"{exchange}: malformed instrument entry {inst!r:.200}") from None
        if itype not in INST_TYPES:
            return None     # MARGIN lists the spot instIds again; other types dm does not speak
        if not iid:
            raise SymbologyError(f"{exchange}: instrument entry without instId: {inst!r:.200}")
        expiry = settle = strike = opt = None
        uly = str(inst.get("uly") or "").upper() or None
        if itype == "SPOT":
            b, q = str(inst.get("baseCcy") or ""), str(inst.get("quoteCcy") or "")
            if not b or not q:
                raise SymbologyError(f"{exchange}: spot {iid!r} without baseCcy/quoteCcy")
            base = canonical_asset(b, aa)
            quote = canonical_asset(canonical_asset(q, aa), qa)
            kind, canonical = "spot", base + quote
        else:
            parts = iid.split("-")
            src = (uly or "").split("-") if uly else parts[:2]
            if len(src) != 2 or len(parts) < 3:
                raise SymbologyError(f"{exchange}: {itype} {iid!r} has no BASE-QUOTE underlying ({uly!r})")
            base = canonical_asset(src[0], aa)
            quote = canonical_asset(canonical_asset(src[1], aa), qa)
            sc = str(inst.get("settleCcy") or "")
            if not sc:
                raise SymbologyError(f"{exchange}: {itype} {iid!r} without settleCcy")
            settle = canonical_asset(canonical_asset(sc, aa), qa) if sc.upper() != src[0].upper() else base
            inverse = str(inst.get("ctType") or "") == "inverse" or settle == base
            if itype == "SWAP":
                kind, expiry = ("perpetual_inverse" if inverse else "perpetual_linear"), None
            else:
                expiry = parts[2]
                if len(expiry) != 6 or not expiry.isdigit():
                    raise SymbologyError(f"{exchange}: {itype} {iid!r} has no YYMMDD expiry")
                kind = "option" if itype == "OPTION" else ("future_inverse" if inverse else "future_linear")
            if itype == "OPTION":
                opt = str(inst.get("optType") or "").upper()
                strike = exact_decimal(inst.get("stk") or None)
                if opt not in ("C", "P") or strike is None:
                    raise SymbologyError(f"{exchange}: option {iid!r} without stk/optType")
            try:
                canonical = derivative_symbol(base, quote, settle, expiry, strike, opt)
            except SymbologyError as e:
                raise SymbologyError(f"{exchange}: {iid!r}: {e}") from None
        size_precision = None
        if lot is not None and lot > 0:
            from dm.records import size_precision_of

            try:
                size_precision = size_precision_of(lot)
            except ValueError as e:
                raise SymbologyError(f"{exchange}: {iid!r}: {e}") from None
        contract = ct_val * ct_mult if ct_val is not None and ct_mult is not None else ct_val
        return SymbolInfo(
            venue_symbol=iid,
            canonical=canonical,
            base=base,
            quote=quote,
            kind=kind,
            status=state,
            tradeable=state == "live",
            expiry=expiry,
            tick_size=tick,
            lot_size=lot,
            contract_size=contract,
            settle=settle,
            strike=strike,
            option_type=opt,
            underlying=uly,
            size_precision=size_precision,
        )
