"""Logging: one structlog pipeline for dm and for the stdlib loggers of its libraries.

``setup(fmt, level, process)`` configures, once per process:

- structlog → stdlib ``logging`` → one stderr handler whose ``structlog.stdlib.ProcessorFormatter``
  renders every record, dm's and foreign ones (aiohttp, psycopg, asyncio, warnings) alike:
  coloured console lines for people (``fmt="console"``) or JSON lines for machines (``"json"``);
- secrets never reach a log line: ``redact_event`` rewrites every string of an event (values,
  nested containers, tracebacks, the repr of other objects) with ``redact`` before rendering;
- an uncaught exception is logged as one ``unhandled exception`` event (traceback redacted).

``redact(text)`` is also what error messages go through. It removes:

- URL credentials: ``postgresql://user:PASSWORD@host/db`` → ``postgresql://user:***@host/db``;
- secret parameters in query strings and key/value DSNs, quoted or not:
  ``?password=PW``, ``password=PW``, ``password='P W'``, ``api_key=K``, ``key=K``, ``token=T``,
  ``secret=S`` (and JSON/dict forms ``"password": "PW"``);
- Databento API keys (``db-`` + 20 or more alphanumerics);
- every value registered with ``add_secret`` — the storage password (``dm.config`` registers it
  at load) and, at ``setup``, the values of environment variables whose names say they hold a
  secret (``*API_KEY*``, ``*SECRET*``, ``*TOKEN*``, ``*PASSWORD*``, ``PGPASSWORD``, e.g.
  ``$DATABENTO_API_KEY``).
"""
from __future__ import annotations

import logging
import os
import re
import sys

import structlog

MASK = "***"

_SECRET_KEYS = r"(?:password|passwd|pwd|sslpassword|api[_-]?key|apikey|key|token|access[_-]?token|secret|client[_-]?secret)"
_URL_CREDENTIALS = re.compile(r"(?P<head>\b[a-zA-Z][a-zA-Z0-9+.-]*://[^\s:/@]*):(?P<pw>[^\s@/]*)@")
# key=value in a query string or a libpq key/value DSN; value quoted ('…' with \' escapes) or bare
_KEY_VALUE = re.compile(
    rf"(?P<key>(?<![A-Za-z0-9_]){_SECRET_KEYS})(?P<eq>\s*=\s*)(?P<val>'(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\"|[^\s&;,'\"]+)",
    re.IGNORECASE,
)
# "password": "x" / 'password': 'x' (JSON, Python reprs of dicts)
_MAPPING = re.compile(rf"(?P<key>(?P<q>['\"]){_SECRET_KEYS}(?P=q)\s*:\s*)(?P<val>'(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\")", re.IGNORECASE)
_SECRET_KEY = re.compile(_SECRET_KEYS, re.IGNORECASE)
_DATABENTO_KEY = re.compile(r"\bdb-[A-Za-z0-9]{20,}\b")
_SECRET_ENV = re.compile(r"API_?KEY|SECRET|TOKEN|PASSWORD|PASSWD|^PGPASS", re.IGNORECASE)

_secrets: set[str] = set()


def add_secret(value: str | None) -> None:
    """Redact this exact value (and its URL-encoded form) wherever it appears from now on.
    Values shorter than 4 characters are ignored (they would mask ordinary text)."""
    if not value or len(value) < 4:
        return
    from urllib.parse import quote, unquote

    for v in {value, quote(value, safe=""), unquote(value)}:
        if len(v) >= 4:
            _secrets.add(v)


def secrets_from_env(env=None) -> None:
    """Register the values of environment variables whose names say they hold a secret."""
    env = os.environ if env is None else env
    for name, value in env.items():
        if _SECRET_ENV.search(name):
            add_secret(value)


def redact(text: str) -> str:
    """``text`` with every secret replaced by ``***`` (see the module docstring for the forms)."""
    if not text:
        return text
    for s in sorted(_secrets, key=len, reverse=True):
        if s in text:
            text = text.replace(s, MASK)
    text = _URL_CREDENTIALS.sub(lambda m: f"{m['head']}:{MASK}@" if m["pw"] != MASK else m[0], text)
    text = _KEY_VALUE.sub(lambda m: f"{m['key']}{m['eq']}{MASK}", text)
    text = _MAPPING.sub(lambda m: f"{m['key']}{m['val'][0]}{MASK}{m['val'][0]}", text)
    return _DATABENTO_KEY.sub("db-" + MASK, text)


_PLAIN = (int, float, bool, type(None))


def _scrub(v):
    if isinstance(v, str):
        return redact(v)
    if isinstance(v, _PLAIN):
        return v
    if isinstance(v, dict):
        return {k: MASK if isinstance(k, str) and _SECRET_KEY.fullmatch(k) and x else _scrub(x) for k, x in v.items()}
    if isinstance(v, (list, tuple, set, frozenset)):
        return [_scrub(x) for x in v]
    return redact(repr(v))  # any other object is rendered by its repr: redact that


def redact_event(logger, method_name: str, event_dict: dict) -> dict:
    """structlog processor: every string in the event (nested too) goes through ``redact``;
    other objects are replaced by their redacted repr. Runs after ``format_exc_info`` so the
    traceback text is redacted too."""
    for k, v in event_dict.items():
        if k.startswith("_") or isinstance(v, _PLAIN):
            continue
        event_dict[k] = MASK if _SECRET_KEY.fullmatch(k) else _scrub(v)
    return event_dict


class _Stderr(logging.StreamHandler):
    """A stream handler on whatever ``sys.stderr`` is when a record is emitted."""

    def __init__(self):
        super().__init__(sys.stderr)

    def emit(self, record):
        self.stream = sys.stderr
        super().emit(record)


_HANDLER_NAME = "dm"
_configured = False


#: third-party loggers whose info lines only repeat what dm logs itself
_CHATTY = ("databento", "databento_dbn", "aiohttp.access", "nats", "urllib3", "asyncio")


def configured() -> bool:
    """True once ``setup`` ran in this process."""
    return _configured


def setup(fmt: str = "console", level: str = "info", process: str | None = None) -> None:
    """Configure logging for this process. ``fmt``: ``console`` or ``json``; ``level``: a
    stdlib level name; ``process``: bound as ``proc`` on every line (e.g. ``worker:binance``)."""
    lvl = getattr(logging, level.upper(), logging.INFO)
    secrets_from_env()
    timestamper = structlog.processors.TimeStamper(fmt="iso", utc=True)
    shared = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        timestamper,
    ]
    renderer = structlog.processors.JSONRenderer() if fmt == "json" else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    formatter = structlog.stdlib.ProcessorFormatter(
        # records of stdlib loggers (aiohttp, psycopg, asyncio, py.warnings) get these first
        foreign_pre_chain=[*shared, structlog.stdlib.add_logger_name, structlog.stdlib.ExtraAdder()],
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info,
            redact_event,
            renderer,
        ],
    )
    root = logging.getLogger()
    for h in list(root.handlers):
        if getattr(h, "name", None) == _HANDLER_NAME:
            root.removeHandler(h)
    handler = _Stderr()
    handler.name = _HANDLER_NAME
    handler.setFormatter(formatter)
    root.addHandler(handler)
    root.setLevel(lvl)
    # libraries' own info chatter (databento's "Initialized Historical", ...) is not dm's: their
    # warnings and errors still come through, all of it at level debug
    for name in _CHATTY:
        logging.getLogger(name).setLevel(lvl if lvl <= logging.DEBUG else max(lvl, logging.WARNING))
    logging.captureWarnings(True)
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        wrapper_class=structlog.make_filtering_bound_logger(lvl),
        logger_factory=structlog.stdlib.LoggerFactory(),
        cache_logger_on_first_use=True,
    )
    if process:
        structlog.contextvars.bind_contextvars(proc=process)
    sys.excepthook = _excepthook
    global _configured
    _configured = True


def _excepthook(typ, value, tb) -> None:
    if issubclass(typ, KeyboardInterrupt):
        sys.__excepthook__(typ, value, tb)
        return
    get("dm").critical("unhandled exception", exc_info=(typ, value, tb))


def get(name: str | None = None):
    return structlog.get_logger(name)
