# cython: language_level=3
"""Declaration of BinanceDeliveryCodec so other Cython modules can cimport it."""
from dm.venues.binance_futures._codec cimport BinanceFuturesCodec


cdef class BinanceDeliveryCodec(BinanceFuturesCodec):
    pass
