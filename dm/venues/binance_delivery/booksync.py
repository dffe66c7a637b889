"""Binance COIN-M diff-depth book synchronisation: the USD-M rules (``FuturesDepthSync``; COIN-M
docs, "How to manage a local order book correctly": same ``pu`` continuity and snapshot rule)."""
from __future__ import annotations

from dm.venues.binance_futures.booksync import FuturesDepthSync

GAP_BINANCE_DELIVERY = "binance_cm.update_id"  # COIN-M (ledger kinds are <= 24 characters)


class DeliveryDepthSync(FuturesDepthSync):
    """:class:`~dm.venues.binance_futures.booksync.FuturesDepthSync` for COIN-M (publisher 1005,
    its own gap ledger kind)."""

    venue = "BINANCE_DELIVERY"
    gap_kind = GAP_BINANCE_DELIVERY

    def __init__(self, instrument_id: int, publisher_id: int = 1005, max_depth: int = 0, max_buffer: int = 10_000):
        super().__init__(instrument_id, publisher_id, max_depth, max_buffer)
