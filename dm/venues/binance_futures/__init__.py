"""Binance USD-M futures (``fstream``): websocket combined streams (``aggTrade``, ``bookTicker``,
diff ``depth`` with ``pu``, ``markPrice``, ``kline``), REST ``/fapi/v1/exchangeInfo`` and
``/fapi/v1/depth`` snapshots; L2 books by the futures diff-depth procedure. Rules: Binance USD-M
Futures docs ("WebSocket Market Streams", "How to manage a local order book correctly",
"Market Data Endpoints"), cited where each is implemented. Reuses the spot package
(``dm.venues.binance``) by subclassing: codec, oracle, book sync, provider and replay handler.

Files: ``_codec.pyx`` (``BinanceFuturesCodec``), ``codec_ref.py`` (its oracle), ``booksync.py``
(``FuturesDepthSync``), ``symbology.py`` (``BinanceFuturesSymbology``), ``provider.py``
(``BinanceFuturesProvider``), ``replay.py`` (``BinanceFuturesReplay``)."""
from dm.venues import Venue

VENUE = Venue(
    kind="binance_futures",
    exchange="BINANCE_FUTURES",
    publisher_id=1004,  # BINANCE_FUTURES (BRIEFING publisher ids)
    hosts=("fstream.binance.com", "fapi.binance.com"),
    reference_path="/fapi/v1/exchangeInfo",
    codec="dm.venues.binance_futures._codec:BinanceFuturesCodec",
    codec_ref="dm.venues.binance_futures.codec_ref:RefBinanceFuturesCodec",
    provider="dm.venues.binance_futures.provider:BinanceFuturesProvider",
    symbology="dm.venues.binance_futures.symbology:BinanceFuturesSymbology",
    replay="dm.venues.binance_futures.replay:BinanceFuturesReplay",
    doc="https://developers.binance.com/docs/derivatives/usds-margined-futures/",
)
