"""Bybit, websocket API v5 public streams (spot, linear, inverse: one websocket per category,
``/v5/public/<category>``) and REST v5 ``GET /v5/market/instruments-info``. Rules: Bybit API v5
docs (https://bybit-exchange.github.io/docs/v5/), cited where each is implemented.

Files: ``_codec.pyx`` (``BybitCodec``), ``codec_ref.py`` (its oracle), ``booksync.py``
(``BybitBookSync``), ``symbology.py`` (``BybitSymbology``), ``provider.py`` (``BybitProvider``),
``replay.py`` (``BybitReplay``).

``reference_path`` is the linear category's instruments (what a single GET such as
``dm symbol discover`` fetches); the worker fetches every category its symbols need itself
(``BybitProvider.fetch_reference``)."""
from dm.venues import Venue

VENUE = Venue(
    kind="bybit",
    exchange="BYBIT",
    publisher_id=1007,
    hosts=("bybit.com", "bytick.com"),
    reference_path="/v5/market/instruments-info?category=linear&limit=1000",
    codec="dm.venues.bybit._codec:BybitCodec",
    codec_ref="dm.venues.bybit.codec_ref:RefBybitCodec",
    provider="dm.venues.bybit.provider:BybitProvider",
    symbology="dm.venues.bybit.symbology:BybitSymbology",
    replay="dm.venues.bybit.replay:BybitReplay",
    doc="https://bybit-exchange.github.io/docs/v5/ (WebSocket Stream: Public; Market: Get Instruments Info)",
)
