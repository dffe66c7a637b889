"""Binance COIN-M futures symbology: ``BTCUSD_PERP`` → ``BTCUSD-BTC-PERP``, ``BTCUSD_210924`` →
``BTCUSD-BTC-210924``, from REST ``GET /dapi/v1/exchangeInfo``."""
from __future__ import annotations

from dm.venues.binance_futures.symbology import BinanceFuturesSymbology


class BinanceDeliverySymbology(BinanceFuturesSymbology):
    """Binance COIN-M futures (inverse: margined and settled in ``marginAsset``, the base).
    As :class:`~dm.venues.binance_futures.symbology.BinanceFuturesSymbology`, with the status in
    ``contractStatus``, ``contract_size`` from ``contractSize`` (USD per contract: 100 for BTC,
    10 for the others) and sizes in contracts (``LOT_SIZE.stepSize`` "1": size_precision 0).

    Source: Binance COIN-M Futures docs, "Market Data → Exchange Information" (``GET
    /dapi/v1/exchangeInfo``), verified on data/binance_delivery/2021-07-22/BINANCE_DELIVERY.0
    (36 symbols: 18 perpetual, 18 quarterly)."""

    kind = "binance_delivery"
    EXCHANGE = "BINANCE_DELIVERY"
    INVERSE = True
    STATUS_KEY = "contractStatus"
