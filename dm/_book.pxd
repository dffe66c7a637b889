# cython: language_level=3
"""L2 order book (price-level aggregated), declared here so other Cython modules (the worker's
codec/fan-out) can ``cimport`` it and call the C-level methods without Python objects:

    from dm._book cimport L2Book
    mask = book.apply_buffer(ptr, nbytes)          # raises dm._book.BookError on bad records
    book.fill_bbo(&bbo, ts_event, ts_recv, sequence, flags)

Layout: per side a contiguous array of ``BookLevel`` sorted ascending by ``key`` with the BEST
level at the END (the live window is ``lv[lo : lo + n]``). Bids use ``key = price`` (ascending
price), asks use ``key = ~price`` (bitwise not: order-reversing and overflow-free), so both
sides share one code path and inserts/deletes near the top move few bytes. Dropping the worst
levels (truncation) only advances ``lo``.
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

ctypedef struct BookSide:
    BookLevel* lv            # malloc'd buffer of cap levels
    Py_ssize_t lo            # first live level (the worst)
    Py_ssize_t n             # live levels; best is lv[lo + n - 1]
    Py_ssize_t cap

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
    # either side (a level at position p changed, or levels at p and below moved);
    # PY_SSIZE_T_MAX when it changed nothing. The top k levels of both sides are as before the
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
