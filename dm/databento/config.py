"""``[databento]`` settings (pydantic, strict: unknown keys and wrong types are errors that name
the key; loaded by ``dm.backfill.load_settings``).

    [databento]
    hist_gateway = "https://hist.databento.com"   # the official client always speaks https://GATEWAY/v0/...
    ca_file = ""            # extra CA bundle to trust (a local fake gateway); "" = system/certifi
    timeout_s = 100.0       # per HTTP read (the client's default is 100 s)
    api_key = ""            # prefer $DATABENTO_API_KEY (it wins); never logged

The API key comes from ``$DATABENTO_API_KEY`` (or ``api_key``) and never reaches a log or an
error message (``DatabentoConfig.key()`` raises without echoing anything; ``redact`` scrubs
messages that pass through dm).
"""
from __future__ import annotations

import os

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from dm.errors import ConfigError

__all__ = ["DatabentoConfig", "LiveSettings", "parse_live_settings", "redact"]


class DatabentoConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    hist_gateway: str = "https://hist.databento.com"
    ca_file: str = ""
    timeout_s: float = Field(default=100.0, gt=0)
    api_key: str = Field(default="", repr=False)

    @field_validator("hist_gateway")
    @classmethod
    def _gateway(cls, v: str) -> str:
        if not v.startswith("https://"):
            raise ValueError(f"must start with https:// (the official client only speaks HTTPS), got {v!r}")
        return v.rstrip("/")

    def key(self, env: dict | None = None) -> str:
        """The API key: ``$DATABENTO_API_KEY``, else ``api_key``. Raises ``ConfigError`` (which
        names where to put it, never a value) when neither is set."""
        env = os.environ if env is None else env
        k = env.get("DATABENTO_API_KEY") or self.api_key
        if not k or k.isspace():
            raise ConfigError("no Databento API key: set $DATABENTO_API_KEY (or [databento].api_key)")
        return k


def redact(text: str, key: str | None) -> str:
    """``text`` with every occurrence of the API key replaced by ``db-…<last 4>`` (nothing of a
    key shorter than 8 characters survives)."""
    if not key or not text:
        return text
    shown = f"…{key[-4:]}" if len(key) >= 8 else "…"
    return text.replace(key, shown)


# --- the live worker's [providers.X] keys (kind = "databento", dm.databento.live) -----------------
class LiveSettings(BaseModel):
    """The databento-specific keys of ``[providers.X]`` (strict; unknown keys are errors)."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    dataset: Annotated[str, Field(min_length=1)]
    schemas: tuple[Literal["trades", "mbp-1", "tbbo", "mbp-10", "ohlcv-1s", "ohlcv-1m", "ohlcv-1h", "ohlcv-1d",
                           "definition"], ...] = ("trades",)
    stype_in: Literal["raw_symbol"] = "raw_symbol"
    api_key_env: str = "DATABENTO_API_KEY"
    replay_window_s: Annotated[float, Field(ge=0)] = 86_400.0
    heartbeat_interval_s: Annotated[int, Field(ge=5, le=1800)] | None = None
    fake_gateway_data: str = ""
    # shared keys the base class reads (typed in dm.config)
    quote_aliases: dict | None = None
    stale_after_s: float | None = None
    ping_interval_s: float | None = None


def parse_live_settings(name: str, extra: dict) -> LiveSettings:
    """``[providers.NAME]``'s keys beyond the shared ones, for ``kind = "databento"`` (checked when
    the config is loaded, see ``dm.providers.WORKERS``). Raises ``ConfigError`` naming the key."""
    extra = dict(extra)
    if "schemas" in extra and isinstance(extra["schemas"], list):
        extra["schemas"] = tuple(extra["schemas"])
    try:
        return LiveSettings.model_validate(extra)
    except ValidationError as e:
        err = e.errors()[0]
        where = ".".join(str(x) for x in err["loc"])
        raise ConfigError(f"providers.{name}.{where}: {err['msg']}") from None
