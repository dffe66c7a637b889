# cython: language_level=3
"""L2 order book (price-level aggregated), declared here so other Cython modules (the worker's
codec/fan-out) can ``cimport`` it and call the C-level methods without Python objects:

    from dm._book cimport L2Book
    mask = book.apply_buffer(ptr, nbytes)          # raises dm._book.BookError on bad records
    book.fill_bbo(&bbo, ts_event, ts_recv, sequence, flags)

Layout: per side two tiers (the full story, and why, in ``dm/_book.pyx``'s docstring).

* TOP tier: a contiguous array of ``BookLevel`` sorted ascending by ``key`` with the BEST level
  at the END (the live window is ``lv[lo : lo + n]``). Bids use ``key = price`` (ascending
  price), asks use ``key = ~price`` (bitwise not: order-reversing and overflow-free), so both
  sides share one code path and inserts/deletes near the top move few bytes. Readers of the
  best levels (fill_bbo/fill_depth, the OKX and Kraken checksums) read ``lv``/``lo``/``n`` only.
* DEEP tier: the levels worse than every top-tier level, in ``nb`` blocks of at most
  ``BOOK_BLOCK`` levels each (``blk[0]`` the worst block, ``blk[nb - 1]`` the best), each block
  itself a sorted window ``blk[j].lv[lo : lo + n]``; ``bkey[j]`` is block j's best key (the
  compact array a binary search runs over); ``ndeep`` the deep tier's level count.

INVARIANT (what lets top-k readers ignore the deep tier): whenever the deep tier is non-empty
(``ndeep > 0``), the top tier holds at least ``BOOK_TOP_MIN`` (>= 64) levels, and every deep
key is below the top tier's worst key ``lv[lo].key``. So the best ``min(total, BOOK_TOP_MIN)``
levels of a side are always ``lv[lo + n - 1 - i]`` for ``i < min(n, BOOK_TOP_MIN)``, and a
side's level count is ``n + ndeep``. The top tier holds at most ``BOOK_TOP_MAX`` levels after
every change (unless growing the deep tier ran out of memory): past it, its worst levels move
to the deep tier in bulk (down to ``BOOK_TOP_KEEP``); below ``BOOK_TOP_MIN`` with a non-empty
deep tier, the deep tier's best levels move back up in bulk (up to ``BOOK_TOP_KEEP``).
"""
from libc.stdint cimport int64_t, uint8_t, uint16_t, uint32_t, uint64_t
from dm._records cimport BboRecord, DepthRecord

# change-mask bits returned by apply / apply_level / apply_buffer / apply_one
cdef enum:
    BOOK_MASK_BBO = 1        # top level (price or size) of either side changed
    BOOK_MASK_TOP10 = 2      # something within the top 10 levels of either side changed
    BOOK_MASK_CROSSED = 4    # after the call best bid >= best ask (both sides present)

ctypedef struct BookLevel:
    int64_t key              # bids: price; asks: ~price (1e-9 fixed point before the ~)
    uint64_t size            # 1e-9 fixed point, never 0 inside the book

# tier sizes (module docstring of dm/_book.pyx: how they were chosen)
cdef enum:
    BOOK_TOP_MIN = 64        # top-tier floor while the deep tier is non-empty (the invariant)
    BOOK_TOP_MAX = 256       # top-tier ceiling: past it the worst levels move down
    BOOK_TOP_KEEP = 128      # top-tier count after a bulk move either way (<= TOP_MAX / 2)
    BOOK_BLOCK = 128         # levels per deep block at most

ctypedef struct BookBlock:
    Py_ssize_t lo            # first live level (the worst)
    Py_ssize_t n             # live levels (1..BOOK_BLOCK); best is lv[lo + n - 1]
    BookLevel lv[BOOK_BLOCK]

ctypedef struct BookSide:
    # top tier
    BookLevel* lv            # malloc'd buffer of cap levels
    Py_ssize_t lo            # first live level (the worst of the top tier)
    Py_ssize_t n             # live top-tier levels; best is lv[lo + n - 1]
    # deep tier (all keys < lv[lo].key; non-empty only while n >= BOOK_TOP_MIN); the fields
    # every update reads come first, next to the top tier's
    Py_ssize_t nb            # blocks in use
    int64_t* bkey            # bkey[j] = best key of blk[j] (ascending)
    Py_ssize_t ndeep         # levels in the deep tier (sum of blk[j].n)
    BookBlock** blk          # nb malloc'd blocks, worst first
    Py_ssize_t cap           # top tier: lv's capacity
    Py_ssize_t bcap          # deep tier: capacity of blk / bkey

cdef class L2Book:
    cdef BookSide bids
    cdef BookSide asks
    cdef readonly uint32_t instrument_id
    cdef readonly uint16_t publisher_id
    cdef readonly Py_ssize_t max_depth        # 0 = unbounded
    cdef public uint8_t size_precision        # the instrument's size scale, stamped on DEPTH/BBO
    # bumped by every call that may change the book (apply*, truncate, clear): a reader that saw
    # version v knows the book is as it left it while version is still v
    cdef readonly uint64_t version
    # the best-most level position (0 = the best) any change of the last such call touched on
    # either side (a level at position p changed, or levels at p and below moved; a deep-tier
    # change reports the top tier's count n, a lower bound of its position, >= BOOK_TOP_MIN;
    # moves between the tiers change no level and touch nothing); PY_SSIZE_T_MAX when it
    # changed nothing. The top k levels of both sides are as before the
    # call iff touched >= k (a book checksum over the top k levels is then unchanged).
    cdef readonly Py_ssize_t touched

    # Apply concatenated BOOK_DELTA records at buf[0:nbytes]; returns the change mask.
    cdef int apply_buffer(self, const uint8_t* buf, Py_ssize_t nbytes) except -1
    # One level: side SIDE_BID/SIDE_ASK, size 0 deletes; returns the change mask.
    cdef int apply_one(self, uint8_t side, int64_t price, uint64_t size) except -1
    # Status-code core used by both (no exceptions inside): 0 ok, <0 error code.
    cdef int _apply_raw(self, const uint8_t* buf, Py_ssize_t nbytes, int* mask,
                        Py_ssize_t* bad, Py_ssize_t* touch) noexcept nogil
    cdef int _finish(self, int m, int64_t bk0, uint64_t bs0, int64_t ak0, uint64_t as0,
                     Py_ssize_t bn0, Py_ssize_t an0, Py_ssize_t* touch) noexcept nogil
    cdef void fill_bbo(self, BboRecord* out, uint64_t ts_event, uint64_t ts_recv,
                       uint64_t sequence, uint8_t flags) noexcept nogil
    cdef void fill_depth(self, DepthRecord* out, uint64_t ts_event, uint64_t ts_recv,
                         uint64_t sequence, uint8_t flags) noexcept nogil
    cdef bint is_crossed(self) noexcept nogil
