"""The venue registry: one line per venue maps a provider ``kind`` to the package that holds
everything about that venue (DESIGN.md §6).

A venue package ``dm/venues/<kind>/`` holds:

* ``__init__.py`` — ``VENUE``, the :class:`Venue` descriptor below (plain data: importing it
  loads no codec, no aiohttp);
* ``_codec.pyx`` (+ ``_codec.pxd``) — the Cython codec, a subclass of ``dm._codec._Codec``
  built on the shared scanner ``dm/_scan.pxd`` (``setup.py`` finds it by itself);
* ``codec_ref.py`` — the pure-Python test oracle of that codec (on ``dm.codec_ref.RefCodec``);
* ``booksync.py`` — the venue's order-book sync rules (on ``dm.booksync.BookSync``);
* ``symbology.py`` — venue symbols ↔ canonical symbols (on ``dm.symbology.Symbology``);
* ``provider.py`` — the worker's venue part (on ``dm.providers.base.Provider``);
* ``replay.py`` — how the venue's websocket and REST behave, for the replay server (on
  ``dm.replay.VenueReplay``).

Everything outside ``dm/venues/`` finds a venue through this module (:func:`venue`,
:func:`kinds`, :func:`worker_kinds`, :func:`venue_of_url`) and never names one. Imports are lazy:
``kinds()`` imports nothing, ``venue(kind)`` imports only the descriptor, and the descriptor's
``*_class()`` methods import the module they name on first use.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from functools import cache
from urllib.parse import urlsplit

from dm.errors import ConfigError

__all__ = ["REGISTRY", "Venue", "venue", "venues", "kinds", "worker_kinds", "venue_of_host", "venue_of_url"]

#: provider kind -> venue package. Adding a venue = adding its folder and one line here.
REGISTRY: dict[str, str] = {
    "binance": "dm.venues.binance",
    "kraken": "dm.venues.kraken",
    "kraken_futures": "dm.venues.kraken_futures",
    "bybit": "dm.venues.bybit",
    "coinbase": "dm.venues.coinbase",
    "okx": "dm.venues.okx",
    "deribit": "dm.venues.deribit",
    "bitstamp": "dm.venues.bitstamp",
    "binance_futures": "dm.venues.binance_futures",
    "binance_delivery": "dm.venues.binance_delivery",
}


def _load(target: str | None, what: str, kind: str):
    if target is None:
        raise NotImplementedError(f"venue {kind!r} has no {what}")
    module, _, name = target.partition(":")
    return getattr(importlib.import_module(module), name)


@dataclass(frozen=True)
class Venue:
    """What dm needs to know to run one venue (a venue package's ``VENUE``).

    ``kind``: the provider kind in the config (``[providers.X] kind``) and the registry key.
    ``exchange``: default exchange name (``[providers.X] exchange`` overrides it); channel and
    instrument names use it. ``publisher_id``: the u16 in every record header
    (``dm.records.Publisher``). ``hosts``: DNS names the venue's URLs use (a URL whose host is
    one of them or a subdomain of one belongs to the venue; the longest match wins): how
    recordings and the replay server tell venues apart. ``reference_path``: REST path of the
    reference data the symbology is built from, appended to ``[providers.X] rest_url``.
    ``codec``, ``codec_ref``, ``provider``, ``symbology``, ``replay``: ``"module:Class"`` of the
    Cython codec, its pure-Python oracle, the worker (``None``: no worker yet), the symbology
    and the replay handler; load them with the ``*_class()`` methods. ``doc``: the venue API
    documentation the rules come from."""

    kind: str
    exchange: str
    publisher_id: int
    hosts: tuple[str, ...]
    reference_path: str
    codec: str
    codec_ref: str
    provider: str | None
    symbology: str
    replay: str
    doc: str = ""
    #: ``"module:Class"`` of the venue's REST trade gap filler (``dm.venues.restfill``), or None
    filler: str | None = None
    #: gap kinds counting the venue's trade ids (``GapUnits.SEQUENCE``) that its filler refetches
    #: by id (``plan_id_gap``)
    id_gap_kinds: tuple[str, ...] = ()

    def codec_class(self) -> type:
        """The Cython codec class (``dm._codec._Codec`` subclass)."""
        return _load(self.codec, "codec", self.kind)

    def codec_ref_class(self) -> type:
        """The pure-Python reference codec (tests only; production never uses it)."""
        return _load(self.codec_ref, "reference codec", self.kind)

    def provider_class(self) -> type:
        """The worker (``dm.providers.base.Provider`` subclass). Raises ``NotImplementedError``
        when the venue has none."""
        return _load(self.provider, "worker", self.kind)

    def symbology_class(self) -> type:
        """The symbology (``dm.symbology.Symbology`` subclass with ``from_reference``)."""
        return _load(self.symbology, "symbology", self.kind)

    def replay_class(self) -> type:
        """The replay handler (``dm.replay.VenueReplay`` subclass)."""
        return _load(self.replay, "replay handler", self.kind)


def kinds() -> tuple[str, ...]:
    """Every registered venue kind, in registry order (imports nothing)."""
    return tuple(REGISTRY)


@cache
def venue(kind: str) -> Venue:
    """The descriptor of venue ``kind``. Raises ``ConfigError`` for an unknown kind."""
    try:
        package = REGISTRY[kind]
    except (KeyError, TypeError):
        raise ConfigError(f"unknown venue kind {kind!r}; known: {', '.join(REGISTRY)}") from None
    v = importlib.import_module(package).VENUE
    if v.kind != kind:
        raise ConfigError(f"{package}.VENUE.kind is {v.kind!r}, registered as {kind!r}")
    return v


def venues() -> list[Venue]:
    """Every registered venue's descriptor, in registry order."""
    return [venue(k) for k in REGISTRY]


def worker_kinds() -> tuple[str, ...]:
    """Kinds whose venue has a worker (``dm worker`` can run them)."""
    return tuple(v.kind for v in venues() if v.provider is not None)


@cache
def _host_table() -> tuple[tuple[str, str], ...]:
    # longest host first: futures.kraken.com must win over kraken.com
    pairs = [(h.lower(), v.kind) for v in venues() for h in v.hosts]
    return tuple(sorted(pairs, key=lambda p: -len(p[0])))


def venue_of_host(host: str) -> str | None:
    """The kind of the venue that owns ``host`` (exactly one of its ``hosts`` or a subdomain of
    one; the longest match wins), ``None`` when no venue does."""
    host = host.lower().rstrip(".")
    for h, kind in _host_table():
        if host == h or host.endswith("." + h):
            return kind
    return None


def venue_of_url(url: str) -> str | None:
    """The kind of the venue a websocket or REST URL belongs to (by its host), or ``None``."""
    return venue_of_host(urlsplit(url).hostname or "")
