"""OKX v5 order-book synchronisation by ``seqId``/``prevSeqId`` and the CRC32 checksum
(``OkxBookSync``; the generic ``Actions``, ``Gap`` and ``BookSync`` are in ``dm.booksync``)."""
from __future__ import annotations

from dm.booksync import Actions, BookSync, Gap, L2Book
from dm.venues.okx import VENUE
from dm._leveltext import LevelText
from dm.venues.okx._checksum import OkxChecksum, book_checksum

GAP_OKX_SEQ = "okx.seq_id"         # gap ledger kind: prevSeqId is not the last applied seqId
GAP_OKX_CHECKSUM = "okx.checksum"  # gap ledger kind: book checksum mismatch (no ids)
_ACTION_CLEAR = ord("R")           # BookDeltaRecord.action at byte 49


class OkxBookSync(BookSync):
    """One instrument's order book (OKX API v5 docs, "WebSocket → Public Channel → Order book
    channel", and its "Checksum" and "Sequence ID" sections), for ``books``, ``books-l2-tbt``
    and ``books50-l2-tbt``:

    * a ``snapshot`` replaces the book whenever it comes (after each (re)subscribe);
    * an ``update`` continues the book when its ``prevSeqId`` equals the ``seqId`` of the last
      message applied ("prevSeqId: sequence ID of the last sent message"). ``prevSeqId ==
      seqId`` is an update without changes (OKX sends one when the book did not change for a
      while); ``seqId < prevSeqId`` is a sequence reset after maintenance and is accepted (the
      chain is by identity, not arithmetic). Any other ``prevSeqId`` is ONE gap
      (``okx.seq_id``, missing ``last seqId + 1 .. prevSeqId``): the book is invalid, the
      provider resubscribes the channel for a fresh snapshot (``needs_snapshot``) and updates
      are dropped until it comes. Frames without ``seqId`` (OKX before 2022-11, e.g.
      data/okx/) are chained by the checksum alone;
    * after every snapshot and update the book's top 25 levels must give the frame's
      ``checksum`` (``dm.venues.okx._checksum.book_checksum``: CRC32 of
      ``bid1px:bid1sz:ask1px:ask1sz:...``, signed 32-bit on the wire). A mismatch is ONE gap
      (``okx.checksum``, no ids) and a resubscribe, as OKX documents ("If the checksum does not
      match, please resubscribe").

    ``size_precision``: the decimals the book's sizes are held at (the codec's for this
    instrument): the checksum writes sizes back as OKX sent them."""

    venue = VENUE.exchange

    def __init__(self, instrument_id: int, publisher_id: int = VENUE.publisher_id, size_precision: int = 9,
                 max_depth: int = 0):
        super().__init__(L2Book(instrument_id, publisher_id, max_depth))
        self.size_precision = size_precision
        self.seq: int | None = None
        self.level_text = LevelText()   # the checksum's level texts, rendered once each
        # the C frame path (dm._feed) verifies the checksum of an update it applied with this:
        # OKX's checksum is the book's alone
        self.fast_checker = OkxChecksum(size_precision, self.level_text)

    def _verify(self, act: Actions, checksum: int | None) -> bool:
        if checksum is None or checksum < 0:
            return True
        if self.fast_checksum(checksum):
            return True
        got = book_checksum(self.book, self.size_precision, self.level_text)
        signed = checksum - (1 << 32) if checksum >= 1 << 31 else checksum
        self._gap(act, Gap(GAP_OKX_CHECKSUM, None, None, f"book checksum {got} != venue {signed} (signed)"))
        return False

    def fast_checksum(self, checksum: int) -> bool:
        """The book's CRC32 of the top 25 levels equals the update's ``checksum`` (u32 or
        signed; counted)."""
        if not self.fast_checker.check(self.book, checksum & 0xFFFFFFFF):
            return False
        self.stats.checksums_ok += 1
        return True

    def applied_then_mismatch(self, records: bytes, mask: int, checksum: int) -> Actions:
        """The C frame path (``dm._feed``) applied ``records`` (change mask ``mask``), advanced
        ``seq`` and counted the update, as ``on_update`` does, and the book's checksum is not the
        venue's: the ``Actions`` ``on_update`` would have returned (records applied, the gap)."""
        act = Actions()
        act.applied.append(records)
        act.mask = mask
        self._verify(act, checksum)
        return act

    def on_snapshot(self, records, checksum: int | None = None, seq_id: int | None = None) -> Actions:
        """A snapshot (CLEAR + levels, as the codec decodes it), its ``checksum`` (u32 or signed;
        ``None``/-1: none) and ``seqId`` (``None`` when the frame has none)."""
        act = Actions()
        if len(records) < 56 or records[49] != _ACTION_CLEAR:
            self.book.clear()
        self._apply(act, records)
        self.seq = seq_id
        self.synced = True
        self.awaiting_snapshot = False
        self.stats.snapshots += 1
        act.snapshot_applied = True
        self._verify(act, checksum)
        return act

    def on_update(self, records, checksum: int | None = None, seq_id: int | None = None,
                  prev_seq_id: int | None = None) -> Actions:
        """An update (its BOOK_DELTA records, may be empty) with its ``checksum``, ``seqId`` and
        ``prevSeqId`` (``None`` when the frame has none)."""
        act = Actions()
        if not self.synced:
            self.stats.dropped += 1
            act.dropped = 1
            act.reason = "no snapshot"
            if not self.awaiting_snapshot:
                self._want_snapshot(act, "no snapshot")
            return act
        if prev_seq_id is not None and self.seq is not None and prev_seq_id != self.seq:
            self._gap(act, Gap(GAP_OKX_SEQ, self.seq + 1, prev_seq_id if prev_seq_id > self.seq else None,
                               f"prevSeqId {prev_seq_id} after seqId {self.seq}"))
            self.stats.dropped += 1
            act.dropped = 1
            return act
        if len(records):
            self._apply(act, records)
        if seq_id is not None:
            self.seq = seq_id
        self.stats.applied += 1
        self._verify(act, checksum)
        return act
