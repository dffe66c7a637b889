"""structlog setup: coloured console lines for people, JSON lines for machines."""
from __future__ import annotations

import logging
import sys

import structlog


def setup(fmt: str = "console", level: str = "info", process: str | None = None) -> None:
    """Configure structlog once per process. ``fmt``: ``console`` or ``json``."""
    lvl = getattr(logging, level.upper(), logging.INFO)
    processors = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    if fmt == "json":
        processors += [structlog.processors.format_exc_info, structlog.processors.JSONRenderer()]
    else:
        processors += [structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())]
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(lvl),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )
    if process:
        structlog.contextvars.bind_contextvars(proc=process)


def get(name: str | None = None):
    return structlog.get_logger(name)
