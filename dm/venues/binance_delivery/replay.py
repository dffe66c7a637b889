"""Binance COIN-M futures on the replay server: the USD-M handler on the COIN-M paths.

* websocket ``/dstream/stream?streams=...`` (live: ``wss://dstream.binance.com/stream``) and
  ``/dstream/ws[/<stream>...]`` (the ``/dstream`` prefix exists only on the replay server, see
  ``dm.venues.binance_futures.replay``);
* REST ``/dapi/v1/depth?symbol=S&limit=N`` → recorded snapshots of ``S``;
  ``/dapi/v1/exchangeInfo`` → recorded body.
"""
from __future__ import annotations

from dm.venues.binance_futures.replay import BinanceFuturesReplay


class BinanceDeliveryReplay(BinanceFuturesReplay):
    kind = "binance_delivery"
    ws_path = "/dstream/stream"
    ws_exact = ("/dstream/stream",)
    ws_prefixes = ("/dstream/ws",)
    raw_prefix = "/dstream/ws"
    depth_paths = ("/dapi/v1/depth",)
