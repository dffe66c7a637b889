"""Kraken spot websocket v1 book synchronisation with CRC32 checksums (``KrakenBookSync``; the
generic ``Actions``, ``Gap`` and ``BookSync`` are in ``dm.booksync``)."""
from __future__ import annotations

import struct
import zlib
from decimal import Decimal

from dm.booksync import Actions, BookError, BookSync, Gap, L2Book
from dm.records import Publisher
from dm._leveltext import LevelText
from dm.venues.kraken._checksum import KrakenChecksum, book_checksum

SIDE_ASK, SIDE_BID = 65, 66
_DELTA_PX_SIDE = struct.Struct("<24xq16xB")   # BOOK_DELTA price (offset 24) and side (48)
_DELTA_SIZE = 56

GAP_KRAKEN_CHECKSUM = "kraken.checksum"  # gap ledger kind: book checksum mismatch (no ids)


def decimals_of(text: str) -> int:
    """Digits after the '.' of a venue decimal string ("58729.40000" → 5). Kraken v1 sends each
    pair's prices and volumes with a fixed number of decimals and the checksum is defined on
    those strings; note that REST AssetPairs ``pair_decimals`` can differ from the websocket's
    (XBT/USD: 1 in AssetPairs, 5 on the wire in data/kraken/KRAKEN-c197c0.0)."""
    _, dot, frac = text.partition(".")
    return len(frac) if dot else 0


class KrakenBookSync(BookSync):
    """Kraken spot WebSocket API v1 ``book`` channel (docs: "book" and "Book checksum"):

    * a snapshot (``as``/``bs``) replaces the book; updates (``a``/``b``) set levels, volume 0
      deletes, republished levels (4th element ``"r"``) are ordinary sets;
    * the book is truncated to the subscribed ``depth`` after each message (levels that fall
      out are not deleted by the venue);
    * every update carries ``c``: CRC32 of the top 10 asks and bids rendered with the pair's
      decimals (``dm.venues.kraken._checksum.book_checksum``). A mismatch is a gap (``kraken.checksum``, no ids):
      the book is invalid, resubscribe (``needs_snapshot``); updates are dropped until the new
      snapshot.

    ``price_decimals``/``size_decimals`` are the decimals of the websocket strings (see
    ``decimals_of``; REST AssetPairs ``pair_decimals`` is NOT always the same); they can also be
    given (or updated) with each snapshot. When unknown they are detected on the first update
    carrying ``c``: the one (price, size) decimals pair in 0..9 x 0..9 whose checksum equals the
    venue's (a false match has probability ~100 * 2**-32); no pair matching is a gap.

    Levels rejected alone (a value dm cannot represent, e.g. a placeholder ask at
    ``9999999997.00000``: more than i64 at 1e-9) are not in the book but are in the venue's:
    they are passed as ``rejected`` (``[(side, price_text, size_text)]`` in message order) and
    kept here as text, so the checksum — defined on the venue's text — is computed over the
    venue's book (``checksum``). A later level at the same price replaces or deletes it; a
    snapshot drops them all."""

    venue = "KRAKEN"

    def __init__(self, instrument_id: int, publisher_id: int = Publisher.KRAKEN,
                 depth: int = 1000, price_decimals: int | None = None,
                 size_decimals: int | None = None):
        super().__init__(L2Book(instrument_id, publisher_id, depth))
        self.depth = depth
        self.price_decimals = price_decimals
        self.size_decimals = size_decimals
        # levels rejected alone, per side: Decimal price -> (price text, size text)
        self.rejected: dict[int, dict[Decimal, tuple[str, str]]] = {SIDE_ASK: {}, SIDE_BID: {}}
        self.level_text = LevelText()   # the checksum's level texts, rendered once each
        self._checker: KrakenChecksum | None = None      # fast_checker while the decimals hold
        self._checker_decimals: tuple[int, int] | None = None
        self._set_fast_ready()

    def on_snapshot(self, records, price_decimals: int | None = None,
                    size_decimals: int | None = None, rejected=()) -> Actions:
        act = Actions()
        if price_decimals is not None:
            self.price_decimals = price_decimals
        if size_decimals is not None:
            self.size_decimals = size_decimals
        self.book.clear()
        self.rejected[SIDE_ASK].clear()
        self.rejected[SIDE_BID].clear()
        self._apply(act, records)
        self._apply_rejected(records, rejected)
        self.synced = True
        self.awaiting_snapshot = False
        self.stats.snapshots += 1
        act.snapshot_applied = True
        self._set_fast_ready()
        return act

    def on_update(self, records, checksum: int | None, rejected=()) -> Actions:
        """One update message (asks then bids as sent) and its ``c`` (None when absent: applied
        without verification); ``rejected``: its levels the codec rejected alone."""
        act = Actions()
        if not self.synced:
            self.stats.dropped += 1
            act.dropped = 1
            act.reason = "no snapshot"
            if not self.awaiting_snapshot:
                self._want_snapshot(act, "no snapshot")
            return act
        self._apply(act, records)
        self._apply_rejected(records, rejected)
        self.stats.applied += 1
        if checksum is not None:
            if self.price_decimals is None or self.size_decimals is None:
                ok = self._detect_decimals(checksum)
            else:
                ok = self.checksum(self.price_decimals, self.size_decimals) == checksum
            if ok:
                self.stats.checksums_ok += 1
            else:
                self._checksum_gap(act, checksum)
        self._set_fast_ready()
        return act

    def _checksum_gap(self, act: Actions, checksum: int) -> None:
        self._gap(act, Gap(GAP_KRAKEN_CHECKSUM, None, None,
                           f"book checksum != venue {checksum} (decimals "
                           f"{self.price_decimals}/{self.size_decimals})"))

    def _set_fast_ready(self) -> None:
        """``fast_checker``: the C frame path (``dm._feed``) may apply an update and verify its
        checksum (a ``KrakenChecksum``) while the checksum's decimals are known and no level is
        held as rejected text (the checksum is then the book's alone), else None. A plain
        attribute (read per frame), set after each snapshot and update, the only calls that
        change the decimals or the rejected levels."""
        rej = self.rejected
        pd, sd = self.price_decimals, self.size_decimals
        if rej[SIDE_ASK] or rej[SIDE_BID] or pd is None or sd is None:
            self.fast_checker = None
        else:
            if self._checker is None or self._checker_decimals != (pd, sd):
                self._checker = KrakenChecksum(pd, sd, self.level_text)
                self._checker_decimals = (pd, sd)
            self.fast_checker = self._checker

    def applied_then_mismatch(self, records: bytes, mask: int, checksum: int) -> Actions:
        """The C frame path (``dm._feed``) applied ``records`` (change mask ``mask``) and counted
        the update, as ``on_update`` does, and the book's checksum is not the venue's: the
        ``Actions`` ``on_update`` would have returned (records applied, the checksum gap)."""
        act = Actions()
        act.applied.append(records)
        act.mask = mask
        self._checksum_gap(act, checksum)
        return act


    def _detect_decimals(self, checksum: int) -> bool:
        pds = [self.price_decimals] if self.price_decimals is not None else range(10)
        sds = [self.size_decimals] if self.size_decimals is not None else range(10)
        for pd in pds:
            for sd in sds:
                try:
                    got = self.checksum(pd, sd)
                except BookError:          # a level has more decimals than pd/sd
                    continue
                if got == checksum:
                    self.price_decimals, self.size_decimals = pd, sd
                    return True
        return False

    # -- levels rejected alone (kept as the venue's text) ----------------------------------
    def _apply_rejected(self, records, rejected) -> None:
        rej = self.rejected
        if rej[SIDE_ASK] or rej[SIDE_BID]:
            # a level the book took at a rejected level's price replaces it
            mv = memoryview(records)
            for off in range(0, len(mv) - _DELTA_SIZE + 1, _DELTA_SIZE):
                px, side = _DELTA_PX_SIDE.unpack_from(mv, off)
                if side in rej and rej[side]:
                    rej[side].pop(Decimal(px).scaleb(-9), None)
        for side, ptext, stext in rejected:
            try:
                price, size = Decimal(ptext), Decimal(stext)
            except ArithmeticError:
                continue
            if not price.is_finite() or not size.is_finite():
                continue
            side = side if isinstance(side, int) else ord(side)
            if size == 0:
                rej[side].pop(price, None)
                continue
            rej[side][price] = (ptext, stext)
            # the book keeps no level at that price: the venue's is the rejected one
            px = price.scaleb(9)
            if px == px.to_integral_value() and -(1 << 63) <= px < (1 << 63):
                if any(p == int(px) for p, _ in self.book.levels(side)):
                    self.book.apply_level(side, int(px), 0)
        for side in (SIDE_ASK, SIDE_BID):      # the venue truncates its book to the depth
            r = rej[side]
            if r and self.depth and len(r) + (self.book.n_asks if side == SIDE_ASK else self.book.n_bids) > self.depth:
                merged = self._merged(side, 0)
                keep = {p for p, _, _ in merged[:self.depth]}
                for p in [p for p in r if p not in keep]:
                    del r[p]

    def _merged(self, side: int, n: int) -> list:
        """The venue's side, best first: ``[(Decimal price, price text | None, size text |
        None)]`` (texts None for the book's own levels), ``n`` 0 = all."""
        sp = self.book.size_precision
        r = self.rejected[side]
        out = [(Decimal(p).scaleb(-9), None, Decimal(z).scaleb(-sp)) for p, z in self.book.levels(side, n)
               if Decimal(p).scaleb(-9) not in r]
        out += [(p, t[0], t[1]) for p, t in r.items()]
        out.sort(key=lambda x: x[0], reverse=side == SIDE_BID)
        return out[:n] if n else out

    def checksum(self, price_decimals: int, size_decimals: int) -> int:
        """Kraken v1 CRC32 of the venue's book (``book_checksum`` of the book, with the levels
        rejected alone put back in their place as the venue's text). Raises ``BookError`` like
        ``book_checksum``."""
        if not (self.rejected[SIDE_ASK] or self.rejected[SIDE_BID]):
            own = price_decimals == self.price_decimals and size_decimals == self.size_decimals
            return book_checksum(self.book, price_decimals, size_decimals, self.level_text if own else None)
        parts = []
        for side in (SIDE_ASK, SIDE_BID):
            for price, ptext, size in self._merged(side, 10):
                if ptext is not None:
                    parts.append(ptext.replace(".", "").lstrip("0"))
                    parts.append(size.replace(".", "").lstrip("0"))
                    continue
                p, z = price.scaleb(price_decimals), size.scaleb(size_decimals)
                if p != p.to_integral_value() or z != z.to_integral_value() or p < 0:
                    raise BookError(f"level {price}/{size} does not fit {price_decimals}/{size_decimals} decimals")
                parts.append(str(int(p)) if p else "")
                parts.append(str(int(z)) if z else "")
        return zlib.crc32("".join(parts).encode())
