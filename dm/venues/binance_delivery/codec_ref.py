"""Pure-Python oracle of ``BinanceDeliveryCodec`` (the USD-M oracle under the COIN-M name), for
tests only."""
from __future__ import annotations

from dm.venues.binance_futures.codec_ref import RefBinanceFuturesCodec


class RefBinanceDeliveryCodec(RefBinanceFuturesCodec):
    VENUE = "BINANCE_DELIVERY"
