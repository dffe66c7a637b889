"""Binance COIN-M futures (``dstream``): the USD-M package (``dm.venues.binance_futures``) on
``dstream.binance.com`` / ``dapi.binance.com`` (REST ``/dapi/v1/exchangeInfo``,
``/dapi/v1/depth``), inverse contracts (``BTCUSD_PERP``, ``BTCUSD_210924``) quoted in
contracts. Rules: Binance COIN-M Futures docs ("WebSocket Market Streams", "How to manage a
local order book correctly": the same ``pu`` rule as USD-M).

Files: ``_codec.pyx`` (``BinanceDeliveryCodec``), ``codec_ref.py``, ``booksync.py``
(``DeliveryDepthSync``), ``symbology.py`` (``BinanceDeliverySymbology``), ``provider.py``
(``BinanceDeliveryProvider``), ``replay.py`` (``BinanceDeliveryReplay``)."""
from dm.venues import Venue

VENUE = Venue(
    kind="binance_delivery",
    exchange="BINANCE_DELIVERY",
    publisher_id=1005,  # BINANCE_DELIVERY (BRIEFING publisher ids)
    hosts=("dstream.binance.com", "dapi.binance.com"),
    reference_path="/dapi/v1/exchangeInfo",
    codec="dm.venues.binance_delivery._codec:BinanceDeliveryCodec",
    codec_ref="dm.venues.binance_delivery.codec_ref:RefBinanceDeliveryCodec",
    provider="dm.venues.binance_delivery.provider:BinanceDeliveryProvider",
    symbology="dm.venues.binance_delivery.symbology:BinanceDeliverySymbology",
    replay="dm.venues.binance_delivery.replay:BinanceDeliveryReplay",
    doc="https://developers.binance.com/docs/derivatives/coin-margined-futures/",
)
