"""OKX, websocket API v5 public channels (``wss://ws.okx.com:8443/ws/v5/public``: spot, perpetual
swaps, dated futures, options on one connection) and REST v5 ``GET /api/v5/public/instruments``.
Rules: OKX API v5 docs (https://www.okx.com/docs-v5/en/), cited where each is implemented
("Order book channel", "Checksum", "Trades channel", "Tickers channel", "Get instruments",
"Connect" / ping-pong).

Files: ``_codec.pyx`` (``OkxCodec``), ``_checksum.pyx`` (the book CRC32), ``codec_ref.py`` (the
codec's oracle), ``booksync.py`` (``OkxBookSync``), ``symbology.py`` (``OkxSymbology``),
``provider.py`` (``OkxProvider``), ``replay.py`` (``OkxReplay``).

``reference_path`` is the SPOT instruments (what a single GET such as ``dm symbol discover``
fetches); the worker fetches every instrument type its symbols need itself
(``OkxProvider.fetch_reference``)."""
from dm.venues import Venue

VENUE = Venue(
    kind="okx",
    exchange="OKX",
    publisher_id=1006,
    hosts=("okx.com", "okex.com"),
    reference_path="/api/v5/public/instruments?instType=SPOT",
    codec="dm.venues.okx._codec:OkxCodec",
    codec_ref="dm.venues.okx.codec_ref:RefOkxCodec",
    provider="dm.venues.okx.provider:OkxProvider",
    symbology="dm.venues.okx.symbology:OkxSymbology",
    replay="dm.venues.okx.replay:OkxReplay",
    doc="https://www.okx.com/docs-v5/en/ (WebSocket Public Channel: Order book, Trades, Tickers; Public Data: Get instruments)",
)
