"""Binance USD-M futures on the replay server (``dm.replay``): the spot handler
(``dm.venues.binance.replay``) on the futures paths (Binance USD-M Futures docs, "WebSocket
Market Streams" and REST "Market Data Endpoints").

* websocket ``/fstream/stream?streams=a@b/c@d`` (live: ``wss://fstream.binance.com/stream``)
  combined streams, ``/fstream/ws[/<stream>...]`` raw streams, live ``SUBSCRIBE`` /
  ``UNSUBSCRIBE`` / ``LIST_SUBSCRIPTIONS`` as spot. The ``/fstream`` prefix exists only on the
  replay server: spot, USD-M and COIN-M all use ``/stream`` and ``/ws`` on their own hosts,
  and one replay server serves them all.
* REST ``/fapi/v1/depth?symbol=S&limit=N`` → the recorded snapshot bodies of ``S`` (in order,
  then the latest again), HTTP 400 ``{"code":-1121,"msg":"Invalid symbol."}`` for a symbol
  never recorded; ``/fapi/v1/exchangeInfo`` → recorded body (served by path).
"""
from __future__ import annotations

from dm.venues.binance.replay import BinanceReplay


class BinanceFuturesReplay(BinanceReplay):
    kind = "binance_futures"
    ws_path = "/fstream/stream"
    ws_exact = ("/fstream/stream",)
    ws_prefixes = ("/fstream/ws",)
    raw_prefix = "/fstream/ws"
    depth_paths = ("/fapi/v1/depth",)
