"""TOML configuration, validated once at load by a pydantic schema.

Every section is a strict, frozen pydantic model: an unknown key (``batch_mss``), a value of the
wrong type (``batch_ms = "50"``) or outside its range, or a provider kind that has no worker is
refused at load with ONE line that names the key path, e.g.::

    persister.batch_ms: expected an integer, got '50'
    persister.batch_mss: unknown key (did you mean batch_ms?)
    providers.db.kind: 'databento' has no worker; kinds with a worker: binance, bybit, kraken, kraken_futures

Providers: the keys every venue shares are typed here (``ProviderSection``); any other key is
venue-specific and kept in ``ProviderConfig.extra`` for the venue to validate.
``DM_STORAGE_URL`` in the environment overrides ``storage.url``. Relative paths in the file are
resolved against the directory the process runs in (the project root for ``make demo``).
Error messages never carry a secret (``dm.log.redact``).
"""
from __future__ import annotations

import difflib
import os
import tomllib
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, Strict, StringConstraints, ValidationError, field_validator

from dm import venues
from dm.errors import ConfigError

#: Kinds dm knows of (every registered venue, plus Databento); which have a worker: ``worker_kinds()``.
KNOWN_KINDS = (*venues.kinds(), "databento")


@lru_cache(maxsize=1)
def worker_kinds() -> frozenset[str]:
    """The provider kinds that have a worker — the one place the config asks (the venue
    registry, ``dm.venues``)."""
    from dm.providers import WORKERS

    return frozenset(venues.worker_kinds()) | frozenset(WORKERS)


# -- types --------------------------------------------------------------------------------------
LaxPath = Annotated[Path, Strict(False)]  # TOML has no path type: a string becomes a Path
_NAME_PATTERN = r"^[A-Za-z0-9_-]+$"
Name = Annotated[str, StringConstraints(pattern=_NAME_PATTERN, min_length=1, max_length=32)]
Port = Annotated[int, Field(ge=0, le=65535)]
PosFloat = Annotated[float, Field(gt=0)]
NonNegFloat = Annotated[float, Field(ge=0)]


class _Section(BaseModel):
    """A config section: unknown keys and wrong types are errors; values never change."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class DmSection(_Section):
    instance: Name = "default"
    run_dir: LaxPath = Path("var/run")
    log_format: Literal["console", "json"] = "console"
    log_level: Literal["debug", "info", "warning", "error", "critical"] = "info"


class StorageConfig(_Section):
    url: str = "sqlite:///var/dm.sqlite"
    #: a connect, statement or write that takes longer is a hung database (persister)
    timeout_s: PosFloat = 5.0

    @field_validator("url")
    @classmethod
    def _scheme(cls, v: str) -> str:
        if not v.startswith(("sqlite://", "postgresql://", "postgres://")):
            raise ValueError("must be sqlite:///PATH or postgresql://...")
        return v


def _pow2(v: int) -> int:
    if v < 4096 or v & (v - 1):
        raise ValueError("must be a power of two >= 4096")
    return v


class ShmConfig(_Section):
    registry: Annotated[str, StringConstraints(pattern=r"^/[^/]+$")] = "/dm.registry"
    channel_bytes: int = 1 << 22  # per-symbol channel ring, power of two
    persist_bytes: int = 1 << 24  # per-worker persist queue, power of two
    spool_dir: LaxPath = Path("var/spool")
    spool_fsync: Literal["never", "batch", "always"] = "batch"
    #: channel ring bytes per instrument class (dm.symbology.parse_canonical kinds), e.g.
    #: ``{ option = 65536, spot = 4194304 }``: a thousand option channels need not cost 4 GiB
    channel_bytes_by_class: dict[Literal["spot", "perpetual", "future", "option", "index", "reference_rate"], int] = {}

    @field_validator("channel_bytes", "persist_bytes")
    @classmethod
    def _power_of_two(cls, v: int) -> int:
        return _pow2(v)

    @field_validator("channel_bytes_by_class")
    @classmethod
    def _powers_of_two(cls, v: dict) -> dict:
        return {k: _pow2(x) for k, x in v.items()}

    def channel_bytes_for(self, symbol: str) -> int:
        """Ring bytes of one canonical symbol's channel: its class's size, else ``channel_bytes``."""
        if self.channel_bytes_by_class:
            from dm.symbology import parse_canonical
            from dm.errors import SymbologyError

            try:
                return self.channel_bytes_by_class.get(parse_canonical(symbol).klass, self.channel_bytes)
            except SymbologyError:
                pass
        return self.channel_bytes


class PersisterConfig(_Section):
    batch_records: Annotated[int, Field(gt=0)] = 10_000
    batch_ms: Annotated[int, Field(ge=0)] = 50
    #: /ready is 503 while a queue's oldest unstored record is older than this
    max_lag_s: PosFloat = 10.0
    #: rows storage refused (JSON lines: provider, table, reason, the record's fields)
    dead_letter: LaxPath = Path("var/deadletter/persister.jsonl")


class SupervisorConfig(_Section):
    restart_backoff_min_s: PosFloat = 0.5
    restart_backoff_max_s: PosFloat = 30.0
    max_restarts: Annotated[int, Field(ge=0)] = 5  # within restart_window_s, then the child is failed
    restart_window_s: PosFloat = 60.0
    #: a failed child (crash loop) is started again after this long; the others run on
    failed_retry_s: PosFloat = 300.0
    #: true: a failed child stops the whole instance with exit code 1
    fail_fast: bool = False
    stop_grace_s: NonNegFloat = 10.0
    #: systemd READY=1 at the latest after this long, even if a worker is still not connected
    ready_timeout_s: PosFloat = 60.0
    #: a child whose stats file is older than this is shown as stalled
    stall_after_s: PosFloat = 10.0
    health_port: Port = 0  # 0: no HTTP health/metrics endpoint
    exit_when_replay_done: bool = False
    #: child name (a provider, "persister", "replay") -> the CPUs it runs on (sched_setaffinity,
    #: set by the supervisor as it starts the child): e.g. a worker on a core of its own
    cpus: dict[str, Annotated[tuple[Annotated[int, Field(ge=0)], ...], Strict(False), Field(min_length=1)]] = {}
    #: child name -> its nice value (-20..19, setpriority, set as it starts): e.g. the persister,
    #: which may lag behind (its queue is lossless), below the workers, which may not
    nice: dict[str, Annotated[int, Field(ge=-20, le=19)]] = {}

    @field_validator("restart_backoff_max_s")
    @classmethod
    def _order(cls, v: float, info) -> float:
        if v < info.data.get("restart_backoff_min_s", 0.0):
            raise ValueError("must be >= restart_backoff_min_s")
        return v


class ReplayConfig(_Section):
    enabled: bool = False
    files: Annotated[tuple[LaxPath, ...], Strict(False)] = ()
    host: str = "127.0.0.1"
    port: Port = 0
    speed: NonNegFloat = 0.0  # 0: as fast as possible; 1.0: recorded pace
    rate: NonNegFloat = 0.0  # > 0: frames/s per connection instead of the recorded pace (benchmarks)


class SymbologySection(_Section):
    quote_aliases: dict[str, str] = {}


#: Provider keys every venue's base class reads from ``ProviderConfig.extra`` (typed here).
COMMON_EXTRAS = ("quote_aliases", "stale_after_s", "ping_interval_s")


class ProviderSection(BaseModel):
    """``[providers.NAME]`` as written. Keys not declared here are venue-specific: they are
    kept, unvalidated, in ``ProviderConfig.extra`` (the venue validates them)."""

    model_config = ConfigDict(extra="allow", strict=True, frozen=True)

    kind: Name
    exchange: str | None = None
    publisher_id: Annotated[int, Field(ge=0, le=65535)] | None = None
    ws_url: str
    rest_url: str = ""
    symbols: Annotated[tuple[str, ...], Strict(False)]
    channels: Annotated[tuple[str, ...], Strict(False)] = ()
    dead_letter: LaxPath | None = None
    enabled: bool = True
    reconnect_min_s: PosFloat = 0.5
    reconnect_max_s: PosFloat = 30.0
    # shared by every venue, kept in extra
    quote_aliases: dict[str, str] | None = None
    stale_after_s: NonNegFloat | None = None
    ping_interval_s: NonNegFloat | None = None


class ConfigFile(_Section):
    """The whole TOML document."""

    dm: DmSection = DmSection()
    storage: StorageConfig = StorageConfig()
    shm: ShmConfig = ShmConfig()
    persister: PersisterConfig = PersisterConfig()
    supervisor: SupervisorConfig = SupervisorConfig()
    replay: ReplayConfig = ReplayConfig()
    symbology: SymbologySection = SymbologySection()
    providers: dict[Name, ProviderSection] = {}
    # sections owned by other modules (EXTENSION_SECTIONS): validated by their owner at load
    bridge: dict[str, Any] = {}
    routing: dict[str, Any] = {}
    backfill: dict[str, Any] = {}
    databento: dict[str, Any] = {}
    control: dict[str, Any] = {}
    capture: dict[str, Any] = {}
    bars: dict[str, Any] = {}
    retention: dict[str, Any] = {}


#: ``[section]`` → ``"module:function"`` validating that table (every key; raises ``ConfigError``
#: naming the key). The owning module keeps its schema next to its code and is imported only when
#: the section is present, so loading a config stays light.
EXTENSION_SECTIONS: dict[str, str] = {
    "bridge": "dm.bridge:parse_bridge_section",
    "routing": "dm.backfill:parse_routing_section",
    "backfill": "dm.backfill:parse_backfill_section",
    "databento": "dm.backfill:parse_databento_section",
    "control": "dm.control:parse_control_section",
    "capture": "dm.capture:parse_capture_section",
    "bars": "dm.bars:parse_bars_section",
    "retention": "dm.archive:parse_retention_section",
}


# -- what the code base uses ----------------------------------------------------------------------
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
    #: the raw tables of EXTENSION_SECTIONS present in the file (already validated)
    sections: dict[str, dict] = field(default_factory=dict)

    @property
    def enabled_providers(self) -> list[ProviderConfig]:
        return [p for p in self.providers.values() if p.enabled]

    @property
    def instance_dir(self) -> Path:
        """``run_dir/<instance>``: stats files, pid files, the replay port file."""
        return self.run_dir / self.instance

    def channel_name(self, exchange: str, symbol: str) -> str:
        """POSIX shm name of a symbol's channel ring: ``/dm.<instance>.<EXCHANGE>.<SYMBOL>``."""
        return f"/dm.{self.instance}.{exchange}.{symbol}"

    def persist_name(self, provider: str) -> str:
        """POSIX shm name of a provider's persist queue: ``/dm.<instance>.<provider>.persist``."""
        return f"/dm.{self.instance}.{provider}.persist"

    def spool_dir_for(self, provider: str) -> Path:
        return self.shm.spool_dir / self.instance / provider




# -- errors -------------------------------------------------------------------------------------
def _path_of(loc: tuple) -> str:
    return ".".join(str(x) for x in loc if x != "[key]")


def _known_keys(loc: tuple) -> list[str]:
    """The keys the schema declares at ``loc`` (a ValidationError location)."""
    model: Any = ConfigFile
    parts = list(loc[:-1])
    i = 0
    while i < len(parts):
        if model is ConfigFile and parts[i] == "providers":
            model, i = ProviderSection, i + 2  # providers.<name>.
            continue
        f = model.model_fields.get(parts[i])
        if f is None or not (isinstance(f.annotation, type) and issubclass(f.annotation, BaseModel)):
            return []
        model, i = f.annotation, i + 1
    return list(model.model_fields)


def _describe(err: dict) -> str:
    from dm.log import redact

    loc = tuple(err["loc"])
    path = _path_of(loc)
    typ = err["type"]
    if typ == "extra_forbidden":
        known = _known_keys(loc)
        close = difflib.get_close_matches(str(loc[-1]), known, n=1)
        hint = f"did you mean {close[0]}?" if close else "known: " + ", ".join(known)
        return f"{path}: unknown key ({hint})"
    if typ == "missing":
        return f"{path}: missing (required)"
    msg = err["msg"].removeprefix("Value error, ").replace("Input should be", "must be")
    if typ == "string_pattern_mismatch":
        pattern = (err.get("ctx") or {}).get("pattern", "")
        msg = "must be 1-32 letters, digits, '-' or '_'" if pattern == _NAME_PATTERN else f"must match {pattern}"
    if typ in ("int_type", "float_type", "bool_type", "string_type", "dict_type", "tuple_type", "int_from_float"):
        msg = {"int_type": "expected an integer", "float_type": "expected a number", "bool_type": "expected true or false",
               "string_type": "expected a string", "dict_type": "expected a table", "tuple_type": "expected a list",
               "int_from_float": "expected an integer"}[typ]
    got = repr(err.get("input"))
    if len(got) > 60:
        got = got[:57] + "..."
    return redact(f"{path}: {msg}, got {got}")


def _one_line(e: ValidationError, prefix_env: bool = False) -> str:
    errs = e.errors()
    line = _describe(errs[0])
    if prefix_env and tuple(errs[0]["loc"]) == ("storage", "url"):
        line = line.replace("storage.url:", "storage.url ($DM_STORAGE_URL):", 1)
    if len(errs) > 1:
        line += f" (and {len(errs) - 1} more error{'s' if len(errs) > 2 else ''})"
    return line


# -- load ---------------------------------------------------------------------------------------
def parse(raw: dict, path: Path | None = None, env: dict | None = None) -> Config:
    """Validate a parsed TOML document. Raises ``ConfigError`` (one line naming the key path)."""
    env = os.environ if env is None else env
    raw = dict(raw)
    from_env = bool(env.get("DM_STORAGE_URL"))
    if from_env:
        storage = dict(raw.get("storage") or {}) if isinstance(raw.get("storage"), dict) else {}
        storage["url"] = env["DM_STORAGE_URL"]
        raw["storage"] = storage
    providers_raw = raw.get("providers")
    if isinstance(providers_raw, dict):
        raw["providers"] = {n: ({"kind": n, **p} if isinstance(p, dict) else p) for n, p in providers_raw.items()}
    try:
        doc = ConfigFile.model_validate(raw)
    except ValidationError as e:
        raise ConfigError(_one_line(e, prefix_env=from_env)) from None

    replay = doc.replay
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

    kinds = worker_kinds() if doc.providers else frozenset()
    providers: dict[str, ProviderConfig] = {}
    for name, p in doc.providers.items():
        if p.kind not in kinds:
            raise ConfigError(f"providers.{name}.kind: {p.kind!r} has no worker; kinds with a worker: {', '.join(sorted(kinds))}")
        extra = dict(p.model_extra or {})
        extra.update(p.model_dump(include=set(COMMON_EXTRAS), exclude_none=True))
        exchange, publisher_id = _defaults(name, p.kind, extra)
        providers[name] = ProviderConfig(
            name=name,
            kind=p.kind,
            exchange=p.exchange if p.exchange is not None else exchange,
            publisher_id=p.publisher_id if p.publisher_id is not None else publisher_id,
            ws_url=url(name, "ws_url", p.ws_url),
            rest_url=url(name, "rest_url", p.rest_url).rstrip("/"),
            symbols=tuple(s.upper() for s in p.symbols),
            channels=p.channels,
            dead_letter=p.dead_letter if p.dead_letter is not None else Path(f"var/deadletter/{name}.jsonl"),
            enabled=p.enabled,
            reconnect_min_s=p.reconnect_min_s,
            reconnect_max_s=p.reconnect_max_s,
            extra=extra,
        )
    _remember_secrets(doc.storage.url)
    sections = {}
    for name, target in EXTENSION_SECTIONS.items():
        table = getattr(doc, name)
        if table:
            import importlib

            mod, fn = target.split(":")
            getattr(importlib.import_module(mod), fn)(dict(table))
            sections[name] = dict(table)
    return Config(
        instance=doc.dm.instance,
        run_dir=doc.dm.run_dir,
        log_format=doc.dm.log_format,
        log_level=doc.dm.log_level,
        storage=doc.storage,
        shm=doc.shm,
        persister=doc.persister,
        supervisor=doc.supervisor,
        replay=replay,
        quote_aliases={k.upper(): v.upper() for k, v in doc.symbology.quote_aliases.items()},
        providers=providers,
        path=path,
        sections=sections,
    )


def _defaults(name: str, kind: str, extra: dict) -> tuple[str, int]:
    """Default (exchange, publisher_id) of a provider: its venue's, or for a worker that is not a
    venue (``dm.providers.WORKERS``) the value of its ``DEFAULTS`` key and publisher id."""
    from dm.providers import DEFAULTS, SETTINGS, WORKERS

    if kind in WORKERS:
        key, pub = DEFAULTS.get(kind, ("", 0))
        value = extra.get(key) if key else None
        if not isinstance(value, str) or not value:
            raise ConfigError(f"providers.{name}.{key}: missing (required for kind {kind!r})")
        if kind in SETTINGS:
            import importlib

            module, _, fn = SETTINGS[kind].partition(":")
            getattr(importlib.import_module(module), fn)(name, extra)
        return value, pub
    v = venues.venue(kind)
    return v.exchange, v.publisher_id


def _remember_secrets(url: str) -> None:
    """The storage password, whatever form it takes in the URL, is redacted from every log line
    and error message of this process from now on (``dm.log.add_secret``)."""
    from urllib.parse import parse_qs, urlsplit

    from dm.log import add_secret

    try:
        u = urlsplit(url)
        if u.password:
            add_secret(u.password)
        for v in parse_qs(u.query).get("password", []):
            add_secret(v)
    except ValueError:
        pass


def load(path: str | os.PathLike, env: dict | None = None) -> Config:
    """Read and validate a TOML config file. Raises ``ConfigError`` (one line)."""
    p = Path(path)
    try:
        raw = tomllib.loads(p.read_text())
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {p}") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"{p}: cannot read: {e}") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{p}: {e}") from None
    return parse(raw, path=p, env=env)
