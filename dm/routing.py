"""Provider routing: which provider serves a symbol's history and live data (``[routing]``).

Three tiers, the first that matches wins:

1. **symbol rules** ``[[routing.symbols]]``, in file order: ``match`` is an exact symbol
   (``ESU4``), a glob (``ES*``, ``NQ?4``: ``fnmatch`` rules, case-sensitive) or a regular
   expression prefixed ``re:`` (``re:^ES[HMUZ]\\d$``, full match);
2. **asset type @ exchange** ``[routing.exchanges]``: keys ``"future@CME"``; ``"*@BINANCE"``
   matches any asset type on that exchange (tried after the exact asset type);
3. **default** ``[routing.default]``.

A route names the historical provider and its dataset, the live provider, the dm exchange its
instruments are registered under (default: the dataset, e.g. ``GLBX.MDP3``, so historical and
live Databento data of one contract share one instrument id), the schemas ``fill-gaps``
refetches, and ``stype_in``. ``stype_in`` is inferred from the symbol's form unless the route sets
it: ``ES.FUT`` → ``parent``, ``ES.c.0`` → ``continuous``, anything else → ``raw_symbol``
(Databento symbology: https://databento.com/docs/standards-and-conventions/symbology — parent
symbols are ``[ROOT].FUT`` / ``[ROOT].OPT``, continuous ``[ROOT].[c|n|v].[rank]``).

Example::

    [routing.default]
    historical = "databento"
    dataset = "GLBX.MDP3"
    live = "databento"

    [[routing.symbols]]
    match = "re:^(ES|NQ)[FGHJKMNQUVXZ]\\d$"
    historical = "databento"
    dataset = "GLBX.MDP3"
    schemas = ["trades", "mbp-1"]

    [routing.exchanges]
    "crypto@BINANCE" = { historical = "binance", live = "binance" }

The models are pydantic (``extra="forbid"``, strict types): an unknown key or a wrong type is a
``ConfigError`` naming the key (see ``dm.backfill.load_settings``).
"""
from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from dm.errors import ConfigError

__all__ = ["Route", "SymbolRule", "RoutingConfig", "Router", "Routed", "infer_stype", "HISTORICAL_PROVIDERS"]

#: who can serve history: Databento now; the venue REST fillers register later (dm.backfill)
HISTORICAL_PROVIDERS = ("databento", "binance", "kraken", "kraken_futures", "none")
LIVE_PROVIDERS = ("databento", "binance", "kraken", "kraken_futures", "none")
#: Databento's stype names (databento/dbn ``enums.rs``), the ones a request can use as input
STYPES_IN = ("raw_symbol", "instrument_id", "parent", "continuous", "smart")
#: Databento schemas dm can convert and store (dm/_dbn.pyx)
SCHEMAS = ("trades", "mbp-1", "tbbo", "mbp-10", "ohlcv-1s", "ohlcv-1m", "ohlcv-1h", "ohlcv-1d")

_PARENT = re.compile(r"^[^.\s]+\.(FUT|OPT)$")
_CONTINUOUS = re.compile(r"^[^.\s]+\.[cnv]\.\d+$")


def infer_stype(symbol: str) -> str:
    """Databento input symbology of a symbol's form: ``ES.FUT``/``ES.OPT`` → ``parent``,
    ``ES.c.0``/``CL.n.1``/``ZN.v.0`` → ``continuous``, anything else → ``raw_symbol``."""
    if _PARENT.match(symbol):
        return "parent"
    if _CONTINUOUS.match(symbol):
        return "continuous"
    return "raw_symbol"


class Route(BaseModel):
    """Where a symbol's data comes from (all keys optional; see the module doc)."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    historical: str = "none"
    dataset: str = ""
    live: str = "none"
    stype_in: str | None = None
    exchange: str = ""
    schemas: tuple[str, ...] = ("trades",)

    @field_validator("schemas", mode="before")
    @classmethod
    def _list(cls, v):
        # TOML arrays arrive as lists; strict mode wants the exact tuple type
        return tuple(v) if isinstance(v, list) else v

    @model_validator(mode="after")
    def _check(self):
        if self.historical not in HISTORICAL_PROVIDERS:
            raise ValueError(f"historical must be one of {HISTORICAL_PROVIDERS}, got {self.historical!r}")
        if self.live not in LIVE_PROVIDERS:
            raise ValueError(f"live must be one of {LIVE_PROVIDERS}, got {self.live!r}")
        if self.historical == "databento" and not self.dataset:
            raise ValueError("historical = 'databento' needs a dataset (e.g. 'GLBX.MDP3')")
        if self.stype_in is not None and self.stype_in not in STYPES_IN:
            raise ValueError(f"stype_in must be one of {STYPES_IN}, got {self.stype_in!r}")
        bad = [s for s in self.schemas if s not in SCHEMAS]
        if bad:
            raise ValueError(f"schemas: unknown {bad}; dm stores {SCHEMAS}")
        return self

    @property
    def registry_exchange(self) -> str:
        """The exchange under which dm registers this route's instruments."""
        return self.exchange or self.dataset

    def describe(self) -> str:
        hist = self.historical + (f" {self.dataset}" if self.dataset else "")
        return f"historical {hist}, live {self.live}"


class SymbolRule(Route):
    """Tier 1: a route for the symbols ``match`` selects (exact, glob, or ``re:`` regex)."""

    match: str = Field(min_length=1)

    @field_validator("match")
    @classmethod
    def _pattern(cls, v: str) -> str:
        if v.startswith("re:"):
            try:
                re.compile(v[3:])
            except re.error as e:
                raise ValueError(f"bad regular expression {v[3:]!r}: {e}") from None
        return v

    def kind(self) -> Literal["regex", "glob", "exact"]:
        if self.match.startswith("re:"):
            return "regex"
        return "glob" if any(c in self.match for c in "*?[") else "exact"

    def matches(self, symbol: str) -> bool:
        k = self.kind()
        if k == "regex":
            return re.fullmatch(self.match[3:], symbol) is not None
        if k == "glob":
            return fnmatch.fnmatchcase(symbol, self.match)
        return symbol == self.match

    def route(self) -> Route:
        return Route(**self.model_dump(exclude={"match"}))


class RoutingConfig(BaseModel):
    """``[routing]``: ``default`` (tier 3), ``symbols`` (tier 1 rules), ``exchanges`` (tier 2)."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    default: Route = Route()
    symbols: tuple[SymbolRule, ...] = ()
    exchanges: dict[str, Route] = {}

    @field_validator("symbols", mode="before")
    @classmethod
    def _list(cls, v):
        return tuple(v) if isinstance(v, list) else v

    @field_validator("exchanges")
    @classmethod
    def _keys(cls, v: dict[str, Route]) -> dict[str, Route]:
        for k in v:
            asset, sep, ex = k.partition("@")
            if not sep or not asset or not ex or "@" in ex:
                raise ValueError(f"key {k!r} must be 'asset_type@EXCHANGE' (asset_type may be '*')")
        return v


@dataclass(frozen=True)
class Routed:
    """A routing decision: the ``route``, the ``tier`` that chose it (1 symbol rule, 2 asset
    type @ exchange, 3 default), ``chosen_by`` (the rule's match, the exchanges key, or
    ``"default"``) and the effective ``stype_in``."""

    symbol: str
    route: Route
    tier: int
    chosen_by: str
    stype_in: str

    @property
    def tier_name(self) -> str:
        return {1: "symbol rule", 2: "asset_type@exchange", 3: "default"}[self.tier]

    def describe(self) -> str:
        by = self.tier_name if self.tier == 3 else f"{self.tier_name} '{self.chosen_by}'"
        return (f"{self.symbol}: tier {self.tier} ({by}) → "
                f"{self.route.describe()}, stype_in {self.stype_in}")

    def as_dict(self) -> dict:
        return {"symbol": self.symbol, "tier": self.tier, "tier_name": self.tier_name,
                "chosen_by": self.chosen_by, "stype_in": self.stype_in,
                **self.route.model_dump(exclude={"stype_in", "exchange"}),
                "schemas": list(self.route.schemas), "exchange": self.route.registry_exchange}


class Router:
    """Routes symbols through a ``RoutingConfig``'s three tiers."""

    def __init__(self, config: RoutingConfig | None = None):
        self.config = config or RoutingConfig()

    def route(self, symbol: str, asset_type: str | None = None, exchange: str | None = None) -> Routed:
        """The route of ``symbol`` (as given: Databento symbols are case-sensitive, ``ES.c.0``).
        ``asset_type``/``exchange`` feed tier 2. Raises ``ConfigError`` for an empty symbol."""
        if not isinstance(symbol, str) or not symbol.strip():
            raise ConfigError(f"cannot route an empty symbol {symbol!r}")
        cfg = self.config
        for rule in cfg.symbols:
            if rule.matches(symbol):
                return self._routed(symbol, rule.route(), 1, rule.match)
        if exchange:
            for key in ([f"{asset_type}@{exchange}"] if asset_type else []) + [f"*@{exchange}"]:
                r = cfg.exchanges.get(key)
                if r is not None:
                    return self._routed(symbol, r, 2, key)
        return self._routed(symbol, cfg.default, 3, "default")

    @staticmethod
    def _routed(symbol: str, route: Route, tier: int, by: str) -> Routed:
        return Routed(symbol, route, tier, by, route.stype_in or infer_stype(symbol))
