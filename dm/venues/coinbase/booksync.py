"""Coinbase order-book synchronisation (``CoinbaseBookSync``, ``SequenceTracker``; the generic
``Actions``, ``Gap`` and ``BookSync`` are in ``dm.booksync``).

Two feeds, two loss models:

* **Advanced Trade** (Advanced Trade docs, "WebSocket Overview → Sequence Numbers": "Most
  channels will include a ``sequence_num`` [...] incremented by one for each message on the
  connection"; "level2 channel": a ``snapshot`` event then ``update`` events). ``sequence_num``
  is connection-wide (every channel, heartbeats included), so the provider keeps ONE
  :class:`SequenceTracker` per connection: a jump means some message was lost, of an unknown
  channel and product, so every book of the connection is invalid. Each book's sync gets
  :meth:`CoinbaseBookSync.on_break`: one gap (``coinbase.sequence_num``, first/last = the
  missing sequence numbers) and a resubscribe of ``level2`` for a fresh snapshot.
* **Exchange** (Exchange docs, "WebSocket Feed → Channels → Level2 channel": a ``snapshot``
  then ``l2update`` messages, which carry no sequence number; "Overview → Sequence Numbers"
  covers the full channel only). A lost ``l2update`` cannot be detected; the only detectable
  loss is the connection itself: the provider ledgers the reconnect window as a gap
  (``reconnect``) and the new subscription's snapshot replaces the book.

In both feeds a snapshot replaces the book whenever it comes; updates before the first
snapshot (or after a break, until the next one) are dropped."""
from __future__ import annotations

from dm.booksync import Actions, BookSync, Gap, L2Book
from dm.venues.coinbase import VENUE

GAP_SEQUENCE = "coinbase.sequence_num"   # gap ledger kind: missing Advanced Trade sequence numbers
_ACTION_CLEAR = ord("R")                 # BookDeltaRecord.action at byte 49


class SequenceTracker:
    """Continuity of one Advanced Trade connection's ``sequence_num`` (module docstring).
    ``on_message(seq)`` returns ``None`` when ``seq`` is the next one (or the first seen), else
    the ``(first_missing, last_missing)`` range; a repeated or older number is ``"duplicate"``
    (counted, otherwise ignored). ``reset()`` on every new connection (numbers restart).

    ``last`` is the provider's ``message_seq`` state: the worker's frame path (``dm._feed``,
    "Message sequence"; ``Provider.check_message_seq`` on the Python path) takes the next number
    itself and hands every other one to ``on_message``, which decides as above."""

    __slots__ = ("last", "breaks", "duplicates")

    def __init__(self):
        self.last: int | None = None
        self.breaks = 0
        self.duplicates = 0

    def reset(self) -> None:
        self.last = None

    def on_message(self, seq: int):
        last = self.last
        if last is None or seq == last + 1:
            self.last = seq
            return None
        if seq <= last:
            self.duplicates += 1
            return "duplicate"
        self.last = seq
        self.breaks += 1
        return (last + 1, seq - 1)


class CoinbaseBookSync(BookSync):
    """One product's level2 book (module docstring). ``on_snapshot`` / ``on_update`` take the
    BOOK_DELTA records the codec decoded (a snapshot starts with CLEAR); ``on_break`` is the
    connection's sequence break (Advanced Trade). ``size_precision``: the scale of the records'
    sizes (the product's, the decimals of its ``base_increment``), the book's
    ``L2Book.size_precision``, stamped on the DEPTH/BBO it writes (in Python and in the C frame
    path alike): 1e-9 cannot hold Coinbase's sizes, a 27,510,000,000 SKL level does not fit u64
    at 1e-9 (data/coinbase/2021-04-17), at its ``base_increment`` (0.1) it does."""

    venue = VENUE.exchange

    def __init__(self, instrument_id: int, publisher_id: int = VENUE.publisher_id, max_depth: int = 0,
                 size_precision: int = 9):
        super().__init__(L2Book(instrument_id, publisher_id, max_depth, size_precision))

    def on_snapshot(self, records) -> Actions:
        """A snapshot (CLEAR + levels; in an Advanced Trade frame possibly after updates of the
        same product, all applied in order)."""
        act = Actions()
        if len(records) < 56 or records[49] != _ACTION_CLEAR:
            self.book.clear()
        self._apply(act, records)
        self.synced = True
        self.awaiting_snapshot = False
        self.stats.snapshots += 1
        act.snapshot_applied = True
        return act

    def on_update(self, records) -> Actions:
        """An update (``l2update`` / level2 ``update`` event): applied when the book is synced,
        dropped otherwise (a snapshot is then asked for once)."""
        act = Actions()
        if not self.synced:
            self.stats.dropped += 1
            act.dropped = 1
            act.reason = "no snapshot"
            if not self.awaiting_snapshot:
                self._want_snapshot(act, "no snapshot")
            return act
        if len(records):
            self._apply(act, records)
        self.stats.applied += 1
        return act

    def on_break(self, first_missing: int, last_missing: int) -> Actions:
        """Advanced Trade ``sequence_num`` jumped over ``first_missing..last_missing`` on this
        book's connection: one gap, the book invalid until a new snapshot (``needs_snapshot``:
        resubscribe ``level2``)."""
        act = Actions()
        self._gap(act, Gap(GAP_SEQUENCE, first_missing, last_missing,
                           f"sequence_num {last_missing + 1} after {first_missing - 1}"))
        return act
