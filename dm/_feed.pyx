# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""The worker's frame path in one Cython call per websocket frame (issue 11): picows hands a
complete frame to ``FeedListener.on_ws_frame`` straight from its parser; the frame is decoded by
the venue codec from picows's read buffer (``_Codec.decode_c``: no ``bytes`` object), and its
records go to the channel rings and the persist queue (``Fanout.publish_ptr``) without a
Python frame in between.

Only what needs venue logic leaves C, through ``provider.on_decoded(data, ts_recv, n)`` (the
frame as ``bytes``): kinds in ``provider.book_kinds`` (order books, subscription answers, venue
errors) and frames with values rejected alone (dead letters).

Order books in their steady state stay in C too, for venues whose diff rule is a sequence
chain (``provider.fast_book = (kind, rule)``): when the instrument's sync is synced and the diff
continues the stream exactly as the venue's documented rule says, the diff is applied to the
sync's ``L2Book`` and the sync's state advanced the way its Python ``on_diff`` would, its
BOOK_DELTA records go to the persist queue, and DEPTH/BBO records to the channel and the queue
(``Books.handle``'s output). Anything else (not synced, a gap, a duplicate, a stale snapshot,
buffering) goes to Python, which owns every decision but this one. Rules:

* ``FAST_BINANCE_SPOT`` — Binance Spot "How to manage a local order book correctly": a diff
  continues when ``U <= previous u + 1 < u + 1`` and, on the book, ``U <= lastUpdateId + 1 <= u``
  (``dm.venues.binance.booksync.BinanceDepthSync``);
* ``FAST_BINANCE_FUTURES`` — Binance USD-M / COIN-M futures: ``pu == previous u`` and ``u`` past
  the book's update id, once a diff was applied after the snapshot
  (``dm.venues.binance_futures.booksync.FuturesDepthSync``);
* ``FAST_SEQ_NEXT`` — one sequence per update, ``seq == previous seq + 1`` (Kraken Futures v1
  ``book``: ``dm.venues.kraken_futures.booksync.KrakenFuturesBookSync``; the sync's ``seq``);
* ``FAST_PREV_ID`` — the update names the id it follows: ``prev_change_id == change_id`` of the
  book (Deribit ``book.*`` notifications: ``dm.venues.deribit.booksync.DeribitBookSync``; codec
  ``first_seq``/``last_seq`` = prev_change_id/change_id);
* ``FAST_KRAKEN_CHECKSUM`` — Kraken v1 ``book`` updates ("Book Checksum"): applied, then the
  CRC32 of the top 10 levels compared with the update's ``c``
  (``dm.venues.kraken.booksync.KrakenBookSync``: only while its price/size decimals are known
  and no level is held as rejected text; a mismatch is the sync's gap, through Python);
* ``FAST_OKX`` — OKX v5 order book channels ("Order book channel": an update's ``prevSeqId``
  equals the previous ``seqId``), then the CRC32 of the top 25 levels against ``checksum``
  (``dm.venues.okx.booksync.OkxBookSync``; a mismatch is the sync's gap, through Python);
* ``FAST_MONOTONIC`` — no update ids, only time order: a diff not older than the book's last
  (Bitstamp v2 ``diff_order_book`` ``microtimestamp``: ``dm.venues.bitstamp.booksync``).

Kinds in ``provider.persist_only_kinds`` (e.g. Kraken ticker/spread BBOs while the book is the
channel's BBO source) are written to the persist queue only, in C. A frame the codec refuses is
dead-lettered (``provider.dead.add``) and costs nothing else. Fragmented messages (continuation
frames, RFC 6455 §5.4), close frames and every other control frame go to the Python socket class
mixed in above this one (``dm.providers.base._PicowsSocket``).

Counters (``frames``, ``records``, ``last_frame_ns``: ns since the UNIX epoch) live here while
the connection is up; the provider folds them into its own (``Provider.fold_feed``) for stats,
the watchdog and the state file, so nothing per frame touches a Python attribute.
"""
from cpython.bytes cimport PyBytes_FromStringAndSize
from libc.stdint cimport int64_t, uint8_t, uint32_t, uint64_t

from picows.picows cimport WSFrame, WSListener, WSMsgType, WSTransport

from dm._book cimport BOOK_MASK_BBO, BOOK_MASK_CROSSED, BOOK_MASK_TOP10, L2Book
from dm._codec cimport _Codec
from dm._records cimport BboRecord, DepthRecord
from dm._ring cimport Fanout, PersistQueue, now_ns

from dm._book import BookError
from dm.errors import CodecError

FAST_NONE = 0
FAST_BINANCE_SPOT = 1
FAST_BINANCE_FUTURES = 2
FAST_SEQ_NEXT = 3
FAST_PREV_ID = 4
FAST_KRAKEN_CHECKSUM = 5
FAST_OKX = 6
FAST_MONOTONIC = 7

cdef struct BookOut:     # DEPTH then BBO, published in one Fanout call
    DepthRecord depth
    BboRecord bbo


cdef class FeedListener(WSListener):
    """``FeedListener(provider, url)`` (as a base of the provider's picows connection class):
    ``provider`` gives ``codec`` (a venue ``_Codec``), ``fanout`` (``dm._ring.Fanout``),
    ``book_kinds`` (codec kinds handled in Python), ``on_decoded``, ``on_first_frame``, ``dead``
    and ``frames`` (its count before this connection)."""

    cdef _Codec codec
    cdef Fanout fanout
    cdef object provider
    cdef object on_decoded
    cdef uint64_t slow_kinds       # bit k set: codec kind k goes to provider.on_decoded
    cdef bint first_pending        # the provider has not seen a frame yet: call on_first_frame
    cdef public uint64_t frames
    cdef public uint64_t records
    cdef public uint64_t last_frame_ns
    # the steady-state book path (provider.fast_book); syncs / last_ok_ns are the Books' own dicts
    cdef object books
    cdef dict syncs
    cdef dict last_ok_ns
    cdef PersistQueue queue
    cdef int book_kind, book_rule
    cdef bint publish_bbo
    cdef public uint64_t fast_book_frames
    cdef uint64_t persist_only        # bit k set: codec kind k goes to the persist queue only
    cdef object checksum_fn           # FAST_KRAKEN_CHECKSUM: book_checksum(book, pd, sd)

    def __cinit__(self, provider=None, *args, **kwargs):
        self.frames = self.records = self.last_frame_ns = 0
        if provider is None:
            return
        self.provider = provider
        self.codec = provider.codec
        self.fanout = provider.fanout
        self.on_decoded = provider.on_decoded
        self.slow_kinds = 0
        for k in provider.book_kinds:
            if not 0 <= k < 64:
                raise ValueError(f"codec kind {k} does not fit the 64-bit kind mask")
            self.slow_kinds |= (<uint64_t>1) << k
        self.first_pending = provider.frames == 0
        self.fast_book_frames = 0
        self.book_kind = -1
        self.book_rule = FAST_NONE
        self.persist_only = 0
        for k in getattr(provider, "persist_only_kinds", ()):
            if not 0 <= k < 64:
                raise ValueError(f"codec kind {k} does not fit the 64-bit kind mask")
            self.persist_only |= (<uint64_t>1) << k
        fb = getattr(provider, "fast_book", None)
        books = getattr(provider, "books", None)
        if fb is not None and books is not None:
            self.book_kind, self.book_rule = fb
            self.books = books
            self.syncs = books.syncs
            self.last_ok_ns = books.last_ok_ns
            self.publish_bbo = books.publish_bbo
            self.queue = provider.queue
            if self.book_rule == FAST_KRAKEN_CHECKSUM:
                from dm.venues.kraken._checksum import book_checksum
                self.checksum_fn = book_checksum
            elif self.book_rule == FAST_OKX:
                from dm.venues.okx._checksum import book_checksum
                self.checksum_fn = book_checksum
        if self.persist_only:
            self.queue = provider.queue

    cpdef on_ws_frame(self, WSTransport transport, WSFrame frame):
        cdef WSMsgType t = frame.msg_type
        if (t == WSMsgType.TEXT or t == WSMsgType.BINARY) and frame.fin and self.codec is not None:
            self._frame(frame.payload_ptr, frame.payload_size)
        else:  # fragments, close, pings/pongs: rare, in Python (the mixed-in socket class)
            (<object>self).on_other_frame(transport, frame)

    cdef int _frame(self, const char* p, Py_ssize_t n) except -1:
        cdef uint64_t ts = now_ns()
        cdef int k
        cdef _Codec c = self.codec
        self.frames += 1
        self.last_frame_ns = ts
        if self.first_pending:
            self.first_pending = False
            self.provider.on_first_frame(ts)
        try:
            k = c.decode_c(p, n, ts)
        except CodecError as e:
            self.provider.dead.add(ts, PyBytes_FromStringAndSize(p, n), e)
            return 0
        if c.st.verr_n or (self.slow_kinds >> c.st.kind) & 1:
            if not c.st.verr_n and k:
                if c.st.kind == self.book_kind and self._book(c, ts, p, n):
                    return 0
                if (self.persist_only >> c.st.kind) & 1 and self.queue is not None:
                    self.queue.write_many_ptr(<const uint8_t*>c.st.out, <size_t>c.st.out_len)
                    self.records += <uint64_t>k
                    return 0
            self.on_decoded(PyBytes_FromStringAndSize(p, n), ts, k)
        elif k:
            self.records += <uint64_t>self.fanout.publish_ptr(<const uint8_t*>c.st.out, <size_t>c.st.out_len)
        return 0

    cdef bint _book(self, _Codec c, uint64_t ts, const char* p, Py_ssize_t n) except -1:
        """The steady-state diff (module docstring): 1 when done here, 0 for the Python path."""
        cdef uint32_t iid = c.st.instrument_id
        cdef uint64_t first = c.st.first_seq, last = c.st.last_seq, prev, lu, seq_out
        cdef bint ok
        cdef int m, rule = self.book_rule
        cdef L2Book book
        cdef BookOut out
        cdef Py_ssize_t nout = 0
        cdef const uint8_t* ev
        sync = self.syncs.get(iid)
        if sync is None or first > last or not sync.synced:
            return 0
        if rule == FAST_BINANCE_SPOT or rule == FAST_BINANCE_FUTURES:
            prev_o = sync.stream_last
            if prev_o is None:
                return 0
            prev = prev_o
            if last <= prev:
                return 0
            lu = sync.last_update_id
            if rule == FAST_BINANCE_SPOT:
                if first > prev + 1 or last <= lu or first > lu + 1:
                    return 0
            elif (<object>c).prev_seq != prev or sync._at_snapshot or last <= lu:
                return 0
            sync.stream_last = last          # on_diff: the stream's id first, then the book
            seq_out = last
        elif rule == FAST_SEQ_NEXT:
            prev_o = sync.seq
            if prev_o is None or first != <uint64_t>prev_o + 1:
                return 0
            seq_out = first
        elif rule == FAST_PREV_ID:
            prev_o = sync.change_id
            if prev_o is None or first != <uint64_t>prev_o or last <= first:
                return 0
            seq_out = last
        elif rule == FAST_KRAKEN_CHECKSUM:
            rej = sync.rejected
            if rej[65] or rej[66]:                       # levels held as the venue's text
                return 0
            pd, sd = sync.price_decimals, sync.size_decimals
            if c.st.checksum >= 0 and (pd is None or sd is None):
                return 0
            seq_out = 0
        elif rule == FAST_MONOTONIC:
            if last < <uint64_t>sync.last_us:
                return 0
            seq_out = last
        elif rule == FAST_OKX:
            prev_o = sync.seq
            if last == 0 or first == 0 or prev_o is None or first - 1 != <uint64_t>prev_o:
                return 0
            seq_out = last
        else:
            return 0
        book = <L2Book>sync.book
        try:
            m = book.apply_buffer(<const uint8_t*>c.st.out, c.st.out_len)
        except BookError as e:
            self.provider.dead.add(ts, PyBytes_FromStringAndSize(p, n), e)
            return 1
        stats = sync.stats
        if m & BOOK_MASK_CROSSED:
            stats.crossed += 1
        if rule == FAST_SEQ_NEXT:
            sync.seq = first
        elif rule == FAST_OKX:
            sync.seq = last
        elif rule == FAST_MONOTONIC:
            sync.last_us = last
        elif rule == FAST_PREV_ID:
            sync.change_id = last
        else:
            sync.last_update_id = last
        stats.applied += 1
        if (rule == FAST_KRAKEN_CHECKSUM or rule == FAST_OKX) and c.st.checksum >= 0:
            try:
                if rule == FAST_OKX:
                    ok = self.checksum_fn(book, sync.size_precision) == (c.st.checksum & 0xFFFFFFFF)
                else:
                    ok = self.checksum_fn(book, pd, sd) == c.st.checksum
            except BookError as e:                       # as on_update: the frame is dead-lettered
                self.provider.dead.add(ts, PyBytes_FromStringAndSize(p, n), e)
                return 1
            if ok:
                stats.checksums_ok += 1
            else:                                        # the sync's gap; Books.handle as usual
                act = sync.applied_then_mismatch(PyBytes_FromStringAndSize(c.st.out, c.st.out_len), m, c.st.checksum)
                self.books.handle(iid, act, 0, ts)
                return 1
        self.fast_book_frames += 1
        # Books.handle: deltas to the persist queue, then DEPTH/BBO to the channel and the queue
        if self.queue is not None:
            self.queue.write_many_ptr(<const uint8_t*>c.st.out, <size_t>c.st.out_len)
        if m & BOOK_MASK_CROSSED:
            self.books.on_crossed(iid)
        self.last_ok_ns[iid] = ts
        if m & (BOOK_MASK_TOP10 | BOOK_MASK_BBO):
            ev = <const uint8_t*>c.st.out + c.st.last_rec + 8       # the last delta's ts_event
            if m & BOOK_MASK_TOP10:
                book.fill_depth(&out.depth, (<const uint64_t*>ev)[0], ts, seq_out, 0)
                nout = sizeof(DepthRecord)
            if m & BOOK_MASK_BBO and self.publish_bbo:
                book.fill_bbo(<BboRecord*>(<char*>&out + nout), (<const uint64_t*>ev)[0], ts, seq_out, 0)
                nout += sizeof(BboRecord)
            if nout:
                self.records += <uint64_t>self.fanout.publish_ptr(<const uint8_t*>&out, <size_t>nout)
        return 1
