"""Coinbase: two public websocket feeds under one kind, chosen by ``[providers.X] feed``:

* ``advanced`` (default) — Coinbase Advanced Trade WebSocket
  (``wss://advanced-trade-ws.coinbase.com``): channels ``level2`` (messages on ``l2_data``),
  ``market_trades``, ``ticker``, ``heartbeats``; every message carries the connection-wide
  ``sequence_num``. Reference data: REST v3 ``GET /api/v3/brokerage/market/products``.
* ``exchange`` — Coinbase Exchange WebSocket feed (``wss://ws-feed.exchange.coinbase.com``,
  formerly ``ws-feed.pro.coinbase.com``): ``level2`` (``snapshot`` + ``l2update``, no
  sequence numbers), ``matches``, ``ticker``, ``heartbeat``. Reference data: REST
  ``GET /products`` (``api.exchange.coinbase.com``, formerly ``api.pro.coinbase.com``).

Rules: Coinbase Advanced Trade docs, "WebSocket Overview" / "WebSocket Channels" (level2,
market_trades, ticker, heartbeats; "Sequence Numbers"), and Coinbase Exchange docs,
"WebSocket Feed → Channels" (Level2 channel, Matches channel, Ticker channel, Heartbeat
channel) and "Overview → Sequence Numbers"; cited where each rule is implemented.

Files: ``_codec.pyx`` (``CoinbaseCodec``, both feeds), ``codec_ref.py`` (its oracle),
``booksync.py`` (``CoinbaseBookSync``, ``SequenceTracker``), ``symbology.py``
(``CoinbaseSymbology``, both REST forms), ``provider.py`` (``CoinbaseProvider``),
``replay.py`` (``CoinbaseReplay``)."""
from dm.venues import Venue

VENUE = Venue(
    kind="coinbase",
    exchange="COINBASE",
    publisher_id=1008,
    hosts=("coinbase.com",),
    reference_path="/api/v3/brokerage/market/products",
    codec="dm.venues.coinbase._codec:CoinbaseCodec",
    codec_ref="dm.venues.coinbase.codec_ref:RefCoinbaseCodec",
    provider="dm.venues.coinbase.provider:CoinbaseProvider",
    symbology="dm.venues.coinbase.symbology:CoinbaseSymbology",
    replay="dm.venues.coinbase.replay:CoinbaseReplay",
    doc="https://docs.cdp.coinbase.com/advanced-trade/docs/ws-channels (level2, market_trades, ticker, "
        "heartbeats, sequence_num); https://docs.cdp.coinbase.com/exchange/docs/websocket-channels "
        "(Level2, Matches, Ticker)",
)
