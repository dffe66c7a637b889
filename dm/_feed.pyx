# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""The worker's frame path in one Cython call per websocket frame (issue 11): picows hands a
complete frame to ``FeedListener.on_ws_frame`` straight from its parser; the frame is decoded by
the venue codec from picows's read buffer (``_Codec.decode_c``: no ``bytes`` object), and its
records go to the channel rings and the persist queue (``Fanout.publish_ptr``) without a
Python frame in between.

Only what needs venue logic leaves C, through ``provider.on_decoded(data, ts_recv, n)`` (the
frame as ``bytes``): kinds in ``provider.book_kinds`` (order books, subscription answers, venue
errors) and frames with values rejected alone (dead letters).

Order books in their steady state stay in C too (``provider.fast_book = (kind, rule, attr,
checksum)``): when the instrument's sync is synced and the update continues the stream by the
rule, the update is applied to the sync's ``L2Book`` and the sync's state advanced the way its
Python ``on_diff``/``on_update`` would, its BOOK_DELTA records go to the persist queue, and
DEPTH/BBO records to the channel and the queue (``Books.handle``'s output). Anything else (not
synced, a gap, a duplicate, a stale snapshot) goes to Python, which owns every decision but
this one and the next. This module knows the shapes of continuity rules, not venues: each
venue's provider names the shape its documented rule has (the venue doc is cited there and in
its sync). With the codec's ``first_seq``/``last_seq`` of the update as ``first``/``last``:

* ``FAST_ID_RANGE`` — the update covers ids ``first..last``: it continues the stream when
  ``first <= stream_last + 1 < last + 1`` and the book when ``first <= last_update_id + 1 <= last``
  (the sync's ``stream_last``, ``last_update_id``);
* ``FAST_PREV_LINK`` — the update names the last id of the one before it (the codec's
  ``prev_seq``): ``prev_seq == stream_last``, ``last`` past ``last_update_id``, and not the first
  update after a snapshot (the sync's ``_at_snapshot``);
* ``FAST_SEQ_NEXT`` — one sequence per update: ``first == attr + 1`` (``attr``: the sync's
  attribute holding the last sequence, default ``seq``);
* ``FAST_PREV_ID`` — ``first`` is the id of the update before it: ``first == attr`` (default
  ``change_id``), then ``attr = last``;
* ``FAST_CHAINED`` — ``first - 1`` is the id of the update before it: ``first - 1 == attr``
  (default ``seq``; not checked while ``attr`` is None), then ``attr = last``; an update without
  ids (``last`` 0) applies unchained;
* ``FAST_MONOTONIC`` — no ids, time order only: ``last >= attr`` (default ``last_us``);
* ``FAST_ALWAYS`` — no ids of the book's own: every update of a synced book applies (its
  DEPTH/BBO carry the codec's ``last_seq``, 0 when it has none; with a message sequence, below,
  the continuity is the connection's and this is the shape).

Buffering (``FAST_ID_RANGE`` and ``FAST_PREV_LINK``, syncs whose class sets ``fast_buffering``:
Binance's "How to manage a local order book correctly", step 1 and 2: buffer the stream's diffs
until the REST snapshot is applied): while the book waits for a snapshot it has already asked
for (``awaiting_snapshot``), a diff that continues the stream by the rule above (``stream_last``)
is appended to the sync's ``_buffer`` as ``(first, last, records)`` and ``stream_last`` advanced,
as its ``on_diff`` does, unless the buffer holds ``max_buffer`` diffs already. The first diff, a
gap, a duplicate and a full buffer go to Python. At start-up and after every resync all of a
book's diffs take this branch until the snapshot arrives: through Python each cost ~2 µs.

An update whose records name another instrument than the codec's ``instrument_id`` (a venue
message carrying several instruments' updates) goes to Python whole.

``checksum`` k > 0: the venue sends a checksum of the book's top ``k`` levels per side with
updates (the codec's ``checksum``, -1 when absent). The C path then needs ``sync.fast_checker``
(a ``dm._booksync.FastChecksum``: the sync says its checksum can be computed from the book
alone; None sends the update to Python), and after applying calls its ``matches`` in C (a match
is counted in the sync's ``stats.checksums_ok``, a C field like the other counters); on a mismatch
``sync.applied_then_mismatch(records, mask, checksum)`` gives the ``Actions`` its ``on_update``
would have (the gap), through ``Books.handle``. Most updates change levels below the top ``k``:
when the book is exactly as this path left it after the last matching checksum (its
``version``) and the update touched no level above position ``k`` (its ``touched``), the book's
checksum is the one that matched then, so the venue's must be that same value: it is compared
without rendering the book (counted as matched as well); anything else computes it in full.

Message sequence (``provider.message_seq``, default None): for venues that number every
message of a connection, whatever its channel or instrument, so that a missing number is a loss
of unknown kind for every book of the connection. The codec puts a frame's number in its state
(``msg_seq``, -1 when the frame carries none; read before a decode error, it is kept).
``provider.message_seq`` is the connection's sequence state, an object whose ``last`` is the
last number taken (None before the connection's first; the provider resets it per connection).
A number that is ``last + 1`` becomes ``last`` here and the frame goes on in C; any other (the
connection's first, a break, a duplicate or an older one) goes to
``provider.on_message_seq(seq, ts_recv)``, which owns those decisions (gaps, resyncs,
counting; it advances ``last`` itself), before the frame itself is handled as usual — the order
the Python frame path (``Provider.on_frame``) keeps. A refused frame whose number was read is
checked the same way before it is dead-lettered.

Kinds in ``provider.persist_only_kinds`` (e.g. Kraken ticker/spread BBOs while the book is the
channel's BBO source) are written to the persist queue only, in C. A frame the codec refuses is
dead-lettered (``provider.dead.add``) and costs nothing else. Fragmented messages (continuation
frames, RFC 6455 §5.4), close frames and every other control frame go to the Python socket class
mixed in above this one (``dm.providers.base._PicowsSocket``).

Counters (``frames``, ``records``, ``last_frame_ns``: ns since the UNIX epoch) live here while
the connection is up, and so does each instrument's last good update time (``Books.last_ok_ns``,
where a gap without ids starts); the provider folds them into its own (``Provider.fold_feed``,
``fold_last_ok``) for stats, the watchdog, the state file and before it records such a gap, so
nothing per frame touches a Python attribute that only those read.
"""
cimport cython
from cpython.bytes cimport PyBytes_FromStringAndSize
from cpython.dict cimport PyDict_GetItem, PyDict_SetItem
from cpython.object cimport PyObject
from libc.stdint cimport int64_t, uint8_t, uint32_t, uint64_t
from libc.string cimport memcpy

from picows.picows cimport WSFrame, WSListener, WSMsgType, WSTransport

from dm._book cimport BOOK_MASK_BBO, BOOK_MASK_CROSSED, BOOK_MASK_TOP10, L2Book
from dm._booksync cimport FastChecksum, SyncCore, SyncStats
from dm._codec cimport _Codec
from dm._records cimport BboRecord, DepthRecord
from dm._ring cimport Fanout, PersistQueue, now_ns

from dm._book import BookError
from dm.errors import CodecError

# the book rules: C constants here (each ``rule == FAST_..`` a C compare, not a module-global
# look-up), and the same names in the module dict for the providers' ``fast_book`` tuples
cdef enum:
    FAST_NONE = 0
    FAST_ID_RANGE = 1
    FAST_PREV_LINK = 2
    FAST_SEQ_NEXT = 3
    FAST_PREV_ID = 4
    FAST_CHAINED = 5
    FAST_MONOTONIC = 6
    FAST_ALWAYS = 7

globals().update(FAST_NONE=FAST_NONE, FAST_ID_RANGE=FAST_ID_RANGE, FAST_PREV_LINK=FAST_PREV_LINK,
                 FAST_SEQ_NEXT=FAST_SEQ_NEXT, FAST_PREV_ID=FAST_PREV_ID, FAST_CHAINED=FAST_CHAINED,
                 FAST_MONOTONIC=FAST_MONOTONIC, FAST_ALWAYS=FAST_ALWAYS)
_DEFAULT_ATTR = {FAST_SEQ_NEXT: "seq", FAST_PREV_ID: "change_id", FAST_CHAINED: "seq", FAST_MONOTONIC: "last_us"}

cdef struct BookOut:     # DEPTH then BBO, published in one Fanout call
    DepthRecord depth
    BboRecord bbo


@cython.final
cdef class _BookState:
    """What the C path keeps of an instrument's sync between updates: the sync it was taken
    from (a new sync object gets a new state), its book and counters as C types, and the venue
    checksum that last matched the book with the book's ``version`` then (``memo``: 0 = none).
    ``attrs``: the sync's instance dict when every sequence attribute the rule reads is a plain
    instance attribute (read and written there directly), else None (``getattr``/``setattr``)."""
    cdef object sync
    cdef SyncCore core
    cdef dict attrs
    cdef L2Book book
    cdef SyncStats stats
    cdef bint memo
    cdef uint64_t version
    cdef int64_t checksum
    cdef uint64_t last_ok_ns     # ts_recv of the last update applied here (fold_last_ok)
    cdef bint buffering          # the sync's buffer (awaiting_snapshot, _buffer, max_buffer) is used here


cdef inline bint _one_instrument(const uint8_t* p, Py_ssize_t n, uint32_t iid) noexcept nogil:
    """Whether every record of ``p[0:n]`` (concatenated, sized by their first byte) is ``iid``'s."""
    cdef Py_ssize_t off = 0, rl
    cdef uint32_t r
    while off < n:
        rl = <Py_ssize_t>p[off] * 4
        if rl < 8 or off + rl > n:
            return 0
        memcpy(&r, p + off + 4, 4)
        if r != iid:
            return 0
        off += rl
    return 1


#: the sync attributes the id-range rules (Binance spot; USD-M and COIN-M futures) read and write
_RANGE_ATTRS = ("stream_last", "last_update_id")
_PREV_LINK_ATTRS = ("stream_last", "last_update_id", "_at_snapshot")
_BUFFER_ATTRS = ("awaiting_snapshot", "_buffer", "max_buffer")


cdef inline object _get(_BookState bs, str name):
    """``sync.<name>``: from the instance dict when the state holds it (None when absent)."""
    cdef PyObject* v
    if bs.attrs is None:
        return getattr(bs.sync, name)
    v = PyDict_GetItem(bs.attrs, name)
    return None if v == NULL else <object>v


cdef inline int _set(_BookState bs, str name, object value) except -1:
    if bs.attrs is None:
        setattr(bs.sync, name, value)
    else:
        PyDict_SetItem(bs.attrs, name, value)
    return 0


cdef _BookState _new_state(object sync, tuple names):
    """The C path's state of a new sync object (its ``book`` an ``L2Book``, its ``stats`` a
    ``SyncStats``), or None when it is not a ``SyncCore`` (its updates take the Python path). Its
    sequence attributes ``names`` are read from the instance dict only if each is already there
    and no class in its MRO defines the name (a property or a class default would be bypassed)."""
    cdef _BookState bs
    if not isinstance(sync, SyncCore):
        return None
    bs = _BookState()
    bs.sync = sync
    bs.core = <SyncCore>sync
    bs.book = <L2Book?>sync.book
    bs.stats = <SyncStats?>sync.stats
    bs.memo = False
    bs.attrs = None
    d = getattr(sync, "__dict__", None)
    if type(d) is dict and all(n in d and not hasattr(type(sync), n) for n in names):
        bs.attrs = d
    # buffering in C: the sync's class says its buffer is the documented shape, and the buffer's
    # attributes are plain instance attributes (the rule's own are read the same way)
    bs.buffering = (names is not None and "stream_last" in names and getattr(type(sync), "fast_buffering", False) is True
                    and bs.attrs is not None and all(n in d and not hasattr(type(sync), n) for n in _BUFFER_ATTRS))
    return bs


cdef class FeedListener(WSListener):
    """``FeedListener(provider, url)`` (as a base of the provider's picows connection class):
    ``provider`` gives ``codec`` (a venue ``_Codec``), ``fanout`` (``dm._ring.Fanout``),
    ``book_kinds`` (codec kinds handled in Python), ``on_decoded``, ``on_first_frame``, ``dead``
    and ``first_frame_ns`` (0 until its first frame); optionally ``fast_book``, ``books``,
    ``queue``, ``persist_only_kinds``, ``message_seq`` and ``on_message_seq`` (module
    docstring)."""

    cdef _Codec codec
    cdef Fanout fanout
    cdef object provider
    cdef object on_decoded
    cdef uint64_t slow_kinds       # bit k set: codec kind k goes to provider.on_decoded
    cdef bint first_pending        # this connection's first frame: the provider's first, maybe
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
    cdef public uint64_t fast_buffered_frames  # diffs buffered here for a book awaiting its snapshot
    cdef public uint64_t checksums_unchanged   # venue checksums matched by the memo (no render)
    cdef uint64_t persist_only        # bit k set: codec kind k goes to the persist queue only
    cdef bint book_checksum           # the venue's updates carry a book checksum (sync.fast_checker)
    cdef Py_ssize_t checksum_depth    # the top levels per side it covers (0: not known, no memo)
    cdef dict book_states             # instrument id -> _BookState
    cdef str seq_attr                 # the sync's attribute holding the last id / sequence / time
    cdef tuple state_attrs            # the sync attributes the rule reads and writes
    cdef object bbo_iids              # Books publishing BBO per instrument (a set), else None
    # the connection's message sequence (provider.message_seq: its ``last``), else None
    cdef object msg_seq
    cdef object on_message_seq

    def __cinit__(self, provider=None, *args, codec=None, on_decoded=None, **kwargs):
        self.frames = self.records = self.last_frame_ns = 0
        if provider is None:
            return
        self.provider = provider
        # a provider with one codec per connection (Bybit: one per category) passes its own
        self.codec = codec if codec is not None else provider.codec
        self.fanout = provider.fanout
        self.on_decoded = on_decoded if on_decoded is not None else provider.on_decoded
        self.slow_kinds = 0
        for k in provider.book_kinds:
            if not 0 <= k < 64:
                raise ValueError(f"codec kind {k} does not fit the 64-bit kind mask")
            self.slow_kinds |= (<uint64_t>1) << k
        self.first_pending = True
        self.fast_book_frames = 0
        self.fast_buffered_frames = 0
        self.checksums_unchanged = 0
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
            self.book_kind, self.book_rule = fb[0], fb[1]
            if not FAST_ID_RANGE <= self.book_rule <= FAST_ALWAYS:
                raise ValueError(f"unknown fast_book rule {self.book_rule}")
            self.seq_attr = (fb[2] if len(fb) > 2 and fb[2] else _DEFAULT_ATTR.get(self.book_rule, ""))
            self.state_attrs = (_RANGE_ATTRS if self.book_rule == FAST_ID_RANGE
                                else _PREV_LINK_ATTRS if self.book_rule == FAST_PREV_LINK
                                else (self.seq_attr,) if self.seq_attr else ())
            ck = fb[3] if len(fb) > 3 else 0
            self.book_checksum = bool(ck)
            self.checksum_depth = ck if type(ck) is int and ck > 0 else 0
            self.book_states = {}
            self.books = books
            self.syncs = books.syncs
            self.last_ok_ns = books.last_ok_ns
            self.publish_bbo = books.publish_bbo
            self.bbo_iids = getattr(books, "bbo_iids", None)
            self.queue = provider.queue
        if self.persist_only:
            self.queue = provider.queue
        self.msg_seq = getattr(provider, "message_seq", None)
        if self.msg_seq is not None:
            self.on_message_seq = provider.on_message_seq

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
            if not getattr(self.provider, "first_frame_ns", 0):   # the provider's first frame
                self.provider.on_first_frame(ts)
        try:
            k = c.decode_c(p, n, ts)
        except CodecError as e:
            if c.st.msg_seq >= 0 and self.msg_seq is not None:   # the frame arrived all the same
                self._msg_seq(c.st.msg_seq, ts)
            self.provider.dead.add(ts, PyBytes_FromStringAndSize(p, n), e)
            return 0
        if c.st.msg_seq >= 0 and self.msg_seq is not None:
            self._msg_seq(c.st.msg_seq, ts)
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

    def fold_last_ok(self):
        """Into the Books' ``last_ok_ns`` (iid -> ts_recv of the last update applied without a
        gap: where a gap without ids starts), the updates this path applied since (kept per
        instrument in C, not written per frame). ``Provider.fold_counters`` calls it."""
        cdef _BookState bs
        if self.book_states is None:
            return
        d = self.last_ok_ns
        for key, o in self.book_states.items():
            bs = <_BookState>o
            if bs.last_ok_ns and bs.last_ok_ns > d.get(key, 0):
                d[key] = bs.last_ok_ns

    cdef int _msg_seq(self, int64_t seq, uint64_t ts) except -1:
        """The connection's message sequence (module docstring): the next number stays here,
        any other goes to ``provider.on_message_seq``."""
        last = self.msg_seq.last
        if last is not None and seq > 0 and seq - 1 == <int64_t>last:
            self.msg_seq.last = seq
        else:
            self.on_message_seq(seq, ts)
        return 0

    cdef bint _buffer_diff(self, _BookState bs, _Codec c, uint64_t first, uint64_t last) except -1:
        """A diff for a book awaiting its snapshot (module docstring, Buffering): 1 when
        buffered here, 0 for the Python path. ``first <= last`` was checked."""
        cdef uint64_t prev
        if _get(bs, "awaiting_snapshot") is not True:
            return 0                          # the snapshot request is Python's to make
        prev_o = _get(bs, "stream_last")
        if prev_o is None:
            return 0
        prev = prev_o
        if last <= prev:
            return 0                          # a duplicate or late diff: dropped and counted there
        if self.book_rule == FAST_ID_RANGE:
            if first > prev + 1:
                return 0                      # a gap
        elif (<object>c).prev_seq != prev:
            return 0
        buf = _get(bs, "_buffer")
        if len(buf) >= _get(bs, "max_buffer"):
            return 0                          # full: the oldest is dropped and counted there
        _set(bs, "stream_last", last)
        buf.append((first, last, PyBytes_FromStringAndSize(c.st.out, c.st.out_len)))
        self.fast_buffered_frames += 1
        return 1

    cdef bint _book(self, _Codec c, uint64_t ts, const char* p, Py_ssize_t n) except -1:
        """The steady-state diff (module docstring): 1 when done here, 0 for the Python path."""
        cdef uint32_t iid = c.st.instrument_id
        cdef uint64_t first = c.st.first_seq, last = c.st.last_seq, prev, lu, seq_out, v0
        cdef _BookState bs
        cdef SyncStats stats
        cdef int m, ok, rule = self.book_rule
        cdef L2Book book
        cdef BookOut out
        cdef Py_ssize_t nout = 0
        cdef const uint8_t* ev
        cdef object checker = None
        key = iid
        sync = self.syncs.get(key)
        if sync is None or first > last:
            return 0
        bs = <_BookState>self.book_states.get(key)
        if bs is None or bs.sync is not sync:
            bs = _new_state(sync, self.state_attrs)
            if bs is None:
                return 0
            self.book_states[key] = bs
        if not _one_instrument(<const uint8_t*>c.st.out, c.st.out_len, iid):
            return 0
        if not bs.core.synced:
            return bs.buffering and self._buffer_diff(bs, c, first, last)
        if self.book_checksum:
            checker = bs.core.fast_checker
            if checker is None:
                return 0
        if rule == FAST_ID_RANGE or rule == FAST_PREV_LINK:
            prev_o = _get(bs, "stream_last")
            lu_o = _get(bs, "last_update_id")
            if prev_o is None or lu_o is None:
                return 0
            prev = prev_o
            if last <= prev:
                return 0
            lu = lu_o
            if rule == FAST_ID_RANGE:
                if first > prev + 1 or last <= lu or first > lu + 1:
                    return 0
            elif (<object>c).prev_seq != prev or _get(bs, "_at_snapshot") or last <= lu:
                return 0
            _set(bs, "stream_last", last)    # on_diff: the stream's id first, then the book
            seq_out = last
        elif rule == FAST_SEQ_NEXT:
            prev_o = _get(bs, self.seq_attr)
            if prev_o is None or first != <uint64_t>prev_o + 1:
                return 0
            seq_out = first
        elif rule == FAST_PREV_ID:
            prev_o = _get(bs, self.seq_attr)
            if prev_o is None or first != <uint64_t>prev_o or last <= first:
                return 0
            seq_out = last
        elif rule == FAST_CHAINED:
            if last == 0:                    # no ids in this update: applied unchained
                seq_out = 0
            else:
                prev_o = _get(bs, self.seq_attr)
                if first == 0 or (prev_o is not None and first - 1 != <uint64_t>prev_o):
                    return 0
                seq_out = last
        elif rule == FAST_MONOTONIC:
            prev_o = _get(bs, self.seq_attr)
            if prev_o is None or last < <uint64_t>prev_o:
                return 0
            seq_out = last
        else:                                # FAST_ALWAYS
            seq_out = last
        book = bs.book
        stats = bs.stats
        v0 = book.version
        try:
            m = book.apply_buffer(<const uint8_t*>c.st.out, c.st.out_len)
        except BookError as e:
            self.provider.dead.add(ts, PyBytes_FromStringAndSize(p, n), e)
            return 1
        if m & BOOK_MASK_CROSSED:
            stats.crossed += 1
        if rule == FAST_ID_RANGE or rule == FAST_PREV_LINK:
            _set(bs, "last_update_id", last)
        elif rule == FAST_SEQ_NEXT:
            _set(bs, self.seq_attr, first)
        elif rule != FAST_ALWAYS and not (rule == FAST_CHAINED and last == 0):
            _set(bs, self.seq_attr, last)
        stats.applied += 1
        if checker is not None and c.st.checksum >= 0:
            if (bs.memo and bs.version == v0 and book.touched >= self.checksum_depth
                    and bs.checksum == c.st.checksum):   # top k unchanged: the checksum that matched
                bs.version = book.version
                stats.checksums_ok += 1
                self.checksums_unchanged += 1
            else:
                try:
                    ok = (<FastChecksum>checker).matches(book, c.st.checksum)
                except BookError as e:                   # as on_update: the frame is dead-lettered
                    bs.memo = False
                    self.provider.dead.add(ts, PyBytes_FromStringAndSize(p, n), e)
                    return 1
                if not ok:                               # the sync's gap; Books.handle as usual
                    bs.memo = False
                    act = sync.applied_then_mismatch(PyBytes_FromStringAndSize(c.st.out, c.st.out_len), m, c.st.checksum)
                    self.books.handle(iid, act, seq_out, ts)
                    return 1
                stats.checksums_ok += 1
                if self.checksum_depth:
                    bs.memo = True
                    bs.version = book.version
                    bs.checksum = c.st.checksum
        self.fast_book_frames += 1
        # Books.handle: deltas to the persist queue, then DEPTH/BBO to the channel and the queue
        if self.queue is not None:
            self.queue.write_many_ptr(<const uint8_t*>c.st.out, <size_t>c.st.out_len)
        if m & BOOK_MASK_CROSSED:
            self.books.on_crossed(iid)
        bs.last_ok_ns = ts
        if m & (BOOK_MASK_TOP10 | BOOK_MASK_BBO):
            ev = <const uint8_t*>c.st.out + c.st.last_rec + 8       # the last delta's ts_event
            if m & BOOK_MASK_TOP10:
                book.fill_depth(&out.depth, (<const uint64_t*>ev)[0], ts, seq_out, 0)
                nout = sizeof(DepthRecord)
            if m & BOOK_MASK_BBO and (self.publish_bbo if self.bbo_iids is None else key in self.bbo_iids):
                book.fill_bbo(<BboRecord*>(<char*>&out + nout), (<const uint64_t*>ev)[0], ts, seq_out, 0)
                nout += sizeof(BboRecord)
            if nout:
                self.records += <uint64_t>self.fanout.publish_ptr(<const uint8_t*>&out, <size_t>nout)
        return 1
