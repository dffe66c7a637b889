# cython: language_level=3
"""Binance COIN-M futures frames: the USD-M codec (``dm.venues.binance_futures._codec``) under
the COIN-M venue name. COIN-M frames differ only by extra keys the codec ignores (``ps``, the
pair) and by their units: quantities are contracts (Binance COIN-M Futures docs, "WebSocket
Market Streams"), stored at the instrument's size_precision (0 for whole contracts)."""
from dm.venues.binance_futures._codec cimport BinanceFuturesCodec


cdef class BinanceDeliveryCodec(BinanceFuturesCodec):
    """``BinanceFuturesCodec`` for Binance COIN-M (``dstream``, REST ``/dapi/v1/depth``); the
    errors it raises name venue ``BINANCE_DELIVERY``."""

    def __cinit__(self, *args, **kwargs):
        self.venue = "BINANCE_DELIVERY"
