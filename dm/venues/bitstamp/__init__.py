"""Bitstamp, websocket API v2 (``wss://ws.bitstamp.net``) and REST v2 (``/api/v2/order_book/{pair}``,
``/api/v2/trading-pairs-info/``). Rules: Bitstamp WebSocket API v2 docs
(https://www.bitstamp.net/websocket/v2/: channels ``diff_order_book_{pair}``,
``live_trades_{pair}``, events ``bts:subscribe``, ``bts:subscription_succeeded``,
``bts:request_reconnect``, ``bts:heartbeat``) and the REST API docs
(https://www.bitstamp.net/api/: "Order book", "Trading pairs info"), cited where each is
implemented.

Files: ``_codec.pyx`` (``BitstampCodec``), ``codec_ref.py`` (its oracle), ``booksync.py``
(``BitstampBookSync``), ``symbology.py`` (``BitstampSymbology``), ``provider.py``
(``BitstampProvider``), ``replay.py`` (``BitstampReplay``)."""
from dm.venues import Venue

VENUE = Venue(
    kind="bitstamp",
    exchange="BITSTAMP",
    publisher_id=1010,
    hosts=("bitstamp.net",),
    reference_path="/api/v2/trading-pairs-info/",
    codec="dm.venues.bitstamp._codec:BitstampCodec",
    codec_ref="dm.venues.bitstamp.codec_ref:RefBitstampCodec",
    provider="dm.venues.bitstamp.provider:BitstampProvider",
    symbology="dm.venues.bitstamp.symbology:BitstampSymbology",
    replay="dm.venues.bitstamp.replay:BitstampReplay",
    doc="https://www.bitstamp.net/websocket/v2/ (diff_order_book, live_trades, bts:request_reconnect); "
        "https://www.bitstamp.net/api/ (order_book, trading-pairs-info)",
)
