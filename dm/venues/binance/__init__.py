"""Binance spot: websocket combined streams (``aggTrade``, ``trade``, ``bookTicker``, diff
``depth``), REST ``exchangeInfo`` and ``depth`` snapshots; L2 books by the documented diff-depth
procedure. Rules: Binance Spot API docs ("WebSocket Streams", "Market Data endpoints", "How to
manage a local order book correctly"), cited where each is implemented.

Files: ``_codec.pyx`` (``BinanceCodec``), ``codec_ref.py`` (its oracle), ``booksync.py``
(``BinanceDepthSync``), ``symbology.py`` (``BinanceSymbology``), ``provider.py``
(``BinanceProvider``), ``replay.py`` (``BinanceReplay``)."""
from dm.venues import Venue

VENUE = Venue(
    kind="binance",
    exchange="BINANCE",
    publisher_id=1001,  # dm.records.Publisher.BINANCE
    # stream.binance.com, api.binance.com, www.binance.com; Binance.US (stream.binance.us,
    # api.binance.us) and Binance TR (trbinance.com, api.binance.me) speak the same spot API
    # (configure exchange = "BINANCE_US" / "BINANCE_TR"); the futures hosts (fstream/fapi,
    # dstream/dapi .binance.com) are longer, so they stay with binance_futures/binance_delivery
    hosts=("binance.com", "binance.us", "trbinance.com", "binance.me"),
    reference_path="/api/v3/exchangeInfo",
    codec="dm.venues.binance._codec:BinanceCodec",
    codec_ref="dm.venues.binance.codec_ref:RefBinanceCodec",
    provider="dm.venues.binance.provider:BinanceProvider",
    symbology="dm.venues.binance.symbology:BinanceSymbology",
    replay="dm.venues.binance.replay:BinanceReplay",
    doc="https://developers.binance.com/docs/binance-spot-api-docs",
    filler="dm.venues.binance.filler:BinanceGapFiller",
    # aggregate trade ids are consecutive per symbol: aggTrades fromId fills such a gap exactly
    id_gap_kinds=("binance.agg_trade_id",),
)
