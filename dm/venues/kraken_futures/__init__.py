"""Kraken Futures, websocket API v1 (``book`` with contiguous ``seq``, ``trade``,
``ticker_lite``, ``ticker``) and REST ``instruments``. Rules: Kraken Futures "WebSocket API v1"
and REST API v3 docs, cited where each is implemented.

Files: ``_codec.pyx`` (``KrakenFuturesCodec``), ``codec_ref.py`` (its oracle), ``booksync.py``
(``KrakenFuturesBookSync``), ``symbology.py`` (``KrakenFuturesSymbology``), ``provider.py``
(``KrakenFuturesProvider``), ``replay.py`` (``KrakenFuturesReplay``)."""
from dm.venues import Venue

VENUE = Venue(
    kind="kraken_futures",
    exchange="KRAKEN_FUTURES",
    publisher_id=1003,  # dm.records.Publisher.KRAKEN_FUTURES
    hosts=("futures.kraken.com",),
    reference_path="/derivatives/api/v3/instruments",
    codec="dm.venues.kraken_futures._codec:KrakenFuturesCodec",
    codec_ref="dm.venues.kraken_futures.codec_ref:RefKrakenFuturesCodec",
    provider="dm.venues.kraken_futures.provider:KrakenFuturesProvider",
    symbology="dm.venues.kraken_futures.symbology:KrakenFuturesSymbology",
    replay="dm.venues.kraken_futures.replay:KrakenFuturesReplay",
    doc="https://docs.futures.kraken.com/ (websocket v1, REST v3)",
    filler="dm.venues.kraken_futures.filler:KrakenFuturesGapFiller",
)
