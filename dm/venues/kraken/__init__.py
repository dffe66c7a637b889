"""Kraken spot, websocket API v1 (``book`` with CRC32 checksums, ``trade``, ``ticker``,
``spread``) and REST ``AssetPairs``. Rules: Kraken "WebSocket API v1" and REST API docs, cited
where each is implemented.

Files: ``_codec.pyx`` (``KrakenCodec``), ``codec_ref.py`` (its oracle), ``booksync.py``
(``KrakenBookSync``), ``_checksum.pyx`` (the book CRC32 over ``L2Book``), ``symbology.py``
(``KrakenSymbology``, ``KRAKEN_ASSET_ALIASES``), ``provider.py`` (``KrakenProvider``),
``replay.py`` (``KrakenReplay``)."""
from dm.venues import Venue

VENUE = Venue(
    kind="kraken",
    exchange="KRAKEN",
    publisher_id=1002,  # dm.records.Publisher.KRAKEN
    hosts=("kraken.com",),  # ws.kraken.com, api.kraken.com (futures.kraken.com is kraken_futures)
    reference_path="/0/public/AssetPairs",
    codec="dm.venues.kraken._codec:KrakenCodec",
    codec_ref="dm.venues.kraken.codec_ref:RefKrakenCodec",
    provider="dm.venues.kraken.provider:KrakenProvider",
    symbology="dm.venues.kraken.symbology:KrakenSymbology",
    replay="dm.venues.kraken.replay:KrakenReplay",
    doc="https://docs.kraken.com/websockets/ (v1), https://docs.kraken.com/rest/",
    filler="dm.venues.kraken.filler:KrakenGapFiller",
)
