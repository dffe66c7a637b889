"""TOML configuration → frozen dataclasses, validated once at load with errors that name the key.

``DM_STORAGE_URL`` in the environment overrides ``storage.url``. Relative paths in the file are
resolved against the directory the process runs in (the project root for ``make demo``).
"""
from __future__ import annotations

import dataclasses
import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dm.errors import ConfigError

PROVIDER_KINDS = ("binance", "kraken", "kraken_futures", "databento")


@dataclass(frozen=True)
class ShmConfig:
    registry: str = "/dm.registry"
    channel_bytes: int = 1 << 22  # per-symbol channel ring, power of two
    persist_bytes: int = 1 << 24  # per-worker persist queue, power of two
    spool_dir: Path = Path("var/spool")
    spool_fsync: str = "batch"  # never | batch | always


@dataclass(frozen=True)
class StorageConfig:
    url: str = "sqlite:///var/dm.sqlite"
    timeout_s: float = 5.0  # a database call without an answer for this long is an error (hung)


@dataclass(frozen=True)
class PersisterConfig:
    batch_records: int = 10_000
    batch_ms: int = 50
    dead_letter: Path = Path("var/deadletter/persister.jsonl")  # rows storage refused


@dataclass(frozen=True)
class SupervisorConfig:
    restart_backoff_min_s: float = 0.5
    restart_backoff_max_s: float = 30.0
    max_restarts: int = 5  # within restart_window_s, then the supervisor gives up on the child
    restart_window_s: float = 60.0
    stop_grace_s: float = 10.0
    health_port: int = 0  # 0: no HTTP health/metrics endpoint
    exit_when_replay_done: bool = False


@dataclass(frozen=True)
class ReplayConfig:
    enabled: bool = False
    files: tuple[Path, ...] = ()
    host: str = "127.0.0.1"
    port: int = 0
    speed: float = 0.0  # 0: as fast as possible; 1.0: recorded pace


@dataclass(frozen=True)
class ProviderConfig:
    name: str
    kind: str
    exchange: str
    publisher_id: int
    ws_url: str
    rest_url: str
    symbols: tuple[str, ...]  # canonical symbols
    channels: tuple[str, ...]  # venue stream/channel names
    dead_letter: Path
    enabled: bool = True
    reconnect_min_s: float = 0.5
    reconnect_max_s: float = 30.0
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Config:
    instance: str
    run_dir: Path
    log_format: str
    log_level: str
    storage: StorageConfig
    shm: ShmConfig
    persister: PersisterConfig
    supervisor: SupervisorConfig
    replay: ReplayConfig
    quote_aliases: dict[str, str]
    providers: dict[str, ProviderConfig]
    path: Path | None = None

    @property
    def enabled_providers(self) -> list[ProviderConfig]:
        return [p for p in self.providers.values() if p.enabled]

    def channel_name(self, exchange: str, symbol: str) -> str:
        """POSIX shm name of a symbol's channel ring: ``/dm.<instance>.<EXCHANGE>.<SYMBOL>``."""
        return f"/dm.{self.instance}.{exchange}.{symbol}"

    def persist_name(self, provider: str) -> str:
        """POSIX shm name of a provider's persist queue: ``/dm.<instance>.<provider>.persist``."""
        return f"/dm.{self.instance}.{provider}.persist"

    def spool_dir_for(self, provider: str) -> Path:
        return self.shm.spool_dir / self.instance / provider


_PUBLISHERS = {"binance": 1001, "kraken": 1002, "kraken_futures": 1003}


def _section(raw: dict, key: str, cls, conv: dict | None = None):
    data = dict(raw.get(key, {}))
    known = set(cls.__dataclass_fields__)
    unknown = set(data) - known
    if unknown:
        raise ConfigError(f"[{key}]: unknown key(s) {sorted(unknown)}; known: {sorted(known)}")
    for k, fn in (conv or {}).items():
        if k in data:
            try:
                data[k] = fn(data[k])
            except (TypeError, ValueError) as e:
                raise ConfigError(f"[{key}].{k}: {e}") from None
    try:
        return cls(**data)
    except TypeError as e:
        raise ConfigError(f"[{key}]: {e}") from None


def _pow2(name: str, v: int) -> int:
    if v < 4096 or v & (v - 1):
        raise ConfigError(f"shm.{name} must be a power of two >= 4096, got {v}")
    return v


def parse(raw: dict, path: Path | None = None, env: dict | None = None) -> Config:
    """Validate a parsed TOML document. Raises ``ConfigError`` naming the offending key."""
    env = os.environ if env is None else env
    top = raw.get("dm", {})
    instance = str(top.get("instance", "default"))
    if not instance.replace("_", "").replace("-", "").isalnum():
        raise ConfigError(f"dm.instance must be alphanumeric (with - _), got {instance!r}")
    storage = _section(raw, "storage", StorageConfig, {"timeout_s": float})
    if storage.timeout_s <= 0:
        raise ConfigError(f"storage.timeout_s must be > 0, got {storage.timeout_s}")
    if env.get("DM_STORAGE_URL"):
        storage = dataclasses.replace(storage, url=env["DM_STORAGE_URL"])
    if not storage.url.startswith(("sqlite://", "postgresql://", "postgres://")):
        raise ConfigError(f"storage.url must be sqlite:///PATH or postgresql://..., got {storage.url!r}")
    shm = _section(raw, "shm", ShmConfig, {"spool_dir": Path})
    _pow2("channel_bytes", shm.channel_bytes)
    _pow2("persist_bytes", shm.persist_bytes)
    if shm.spool_fsync not in ("never", "batch", "always"):
        raise ConfigError(f"shm.spool_fsync must be never|batch|always, got {shm.spool_fsync!r}")
    replay = _section(raw, "replay", ReplayConfig, {"files": lambda v: tuple(Path(p) for p in v)})
    replay_addr = env.get("DM_REPLAY_ADDR", "")

    def url(name: str, key: str, value: str) -> str:
        # "{replay}" in a URL is the address of the supervisor's replay server (host:port), given
        # to children in $DM_REPLAY_ADDR: the worker cannot tell a replay from the venue.
        if "{replay}" in value:
            if not replay_addr:
                if replay.enabled:
                    return value  # resolved in the children: the supervisor sets DM_REPLAY_ADDR
                raise ConfigError(f"providers.{name}.{key} uses {{replay}}: run it under `dm supervise` with [replay] enabled (or set DM_REPLAY_ADDR=host:port)")
            value = value.replace("{replay}", replay_addr)
        return value

    providers: dict[str, ProviderConfig] = {}
    for name, p in raw.get("providers", {}).items():
        p = dict(p)
        kind = p.pop("kind", name)
        if kind not in PROVIDER_KINDS:
            raise ConfigError(f"providers.{name}.kind must be one of {PROVIDER_KINDS}, got {kind!r}")
        try:
            providers[name] = ProviderConfig(
                name=name,
                kind=kind,
                exchange=str(p.pop("exchange", kind.upper())),
                publisher_id=int(p.pop("publisher_id", _PUBLISHERS.get(kind, 0))),
                ws_url=url(name, "ws_url", str(p.pop("ws_url"))),
                rest_url=url(name, "rest_url", str(p.pop("rest_url", ""))).rstrip("/"),
                symbols=tuple(str(s).upper() for s in p.pop("symbols")),
                channels=tuple(p.pop("channels", ())),
                dead_letter=Path(p.pop("dead_letter", f"var/deadletter/{name}.jsonl")),
                enabled=bool(p.pop("enabled", True)),
                reconnect_min_s=float(p.pop("reconnect_min_s", 0.5)),
                reconnect_max_s=float(p.pop("reconnect_max_s", 30.0)),
                extra=p,
            )
        except KeyError as e:
            raise ConfigError(f"providers.{name}: missing key {e.args[0]!r}") from None
    return Config(
        instance=instance,
        run_dir=Path(top.get("run_dir", "var/run")),
        log_format=str(top.get("log_format", "console")),
        log_level=str(top.get("log_level", "info")),
        storage=storage,
        shm=shm,
        persister=_section(raw, "persister", PersisterConfig, {"dead_letter": Path}),
        supervisor=_section(raw, "supervisor", SupervisorConfig),
        replay=replay,
        quote_aliases={str(k).upper(): str(v).upper() for k, v in raw.get("symbology", {}).get("quote_aliases", {}).items()},
        providers=providers,
        path=path,
    )


def load(path: str | os.PathLike, env: dict | None = None) -> Config:
    """Read and validate a TOML config file. Raises ``ConfigError``."""
    p = Path(path)
    try:
        raw = tomllib.loads(p.read_text())
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {p}") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{p}: {e}") from None
    return parse(raw, path=p, env=env)
