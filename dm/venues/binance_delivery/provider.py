"""Binance COIN-M futures provider: the USD-M worker (``dm.venues.binance_futures.provider``) on
``dstream``/``dapi`` (Binance COIN-M Futures docs, "WebSocket Market Streams": the same stream
names; REST ``GET /dapi/v1/depth?symbol=S&limit=N``). Quantities are contracts (each instrument's
size_precision is 0, from ``LOT_SIZE.stepSize`` "1")."""
from __future__ import annotations

from dm import log as dmlog
from dm.venues.binance_delivery.booksync import DeliveryDepthSync
from dm.venues.binance_futures.provider import BinanceFuturesProvider

log = dmlog.get("dm.worker.binance_delivery")


class BinanceDeliveryProvider(BinanceFuturesProvider):
    depth_path = "/dapi/v1/depth"
    sync_class = DeliveryDepthSync
    venue_kind = "binance_delivery"
