"""Deribit, JSON-RPC websocket API v2 (``wss://www.deribit.com/ws/api/v2``) and REST
``GET /api/v2/public/get_instruments``. Rules: Deribit API v2 docs
(https://docs.deribit.com/), cited where each is implemented: "Subscriptions →
book.{instrument_name}.{interval}", "ticker.{instrument_name}.{interval}",
"trades.{instrument_name}.{interval}", "Session management → public/set_heartbeat,
public/test", "Market data → public/get_instruments".

Files: ``_codec.pyx`` (``DeribitCodec``), ``codec_ref.py`` (its oracle), ``booksync.py``
(``DeribitBookSync``), ``symbology.py`` (``DeribitSymbology``), ``provider.py``
(``DeribitProvider``), ``replay.py`` (``DeribitReplay``).

``reference_path`` is the BTC instruments (what a single GET such as ``dm symbol discover``
fetches); the worker fetches every currency its symbols need itself
(``DeribitProvider.fetch_reference``)."""
from dm.venues import Venue

VENUE = Venue(
    kind="deribit",
    exchange="DERIBIT",
    publisher_id=1009,
    hosts=("deribit.com",),
    reference_path="/api/v2/public/get_instruments?currency=BTC&expired=false",
    codec="dm.venues.deribit._codec:DeribitCodec",
    codec_ref="dm.venues.deribit.codec_ref:RefDeribitCodec",
    provider="dm.venues.deribit.provider:DeribitProvider",
    symbology="dm.venues.deribit.symbology:DeribitSymbology",
    replay="dm.venues.deribit.replay:DeribitReplay",
    doc="https://docs.deribit.com/ (JSON-RPC v2: Subscriptions book/ticker/trades; public/set_heartbeat; public/get_instruments)",
)
