# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""L2 order book (price-level aggregated) for dm workers.

``L2Book`` holds one instrument's bids and asks and applies BOOK_DELTA records
(``dm/_records.pxd``):

* ``size == 0`` (or action ``'C'``) deletes the level; a delete of an absent level is a no-op
  (Binance Spot API docs, "How to manage a local order book correctly": "Receiving an event that
  removes a price level that is not in your local order book can happen and is normal").
* action ``'R'`` (CLEAR) empties both sides (sent before a snapshot).
* ``max_depth > 0`` truncates each side to its best ``max_depth`` levels at the end of every
  ``apply``/``apply_level`` call (Kraken WebSocket API v1, "book": the local book is kept at the
  subscribed depth; levels that fall out are not deleted by the venue).

Prices are i64 and sizes u64 in fixed point 1e-9; timestamps u64 ns since the UNIX epoch.
Every call returns a change mask: ``MASK_BBO`` (1) the top level (price or size) of either side
differs from before the call; ``MASK_TOP10`` (2) some level within the top 10 of either side was
touched (conservative: a change undone within the same call still sets it); ``MASK_CROSSED`` (4)
the book is crossed (best bid >= best ask) after the call. ``version`` counts those calls and
``touched`` is the best-most level position the last one changed (its top ``k`` levels are
unchanged iff ``touched >= k``: a checksum over them need not be recomputed, ``dm._feed``).

Layout (``dm/_book.pxd``): each side has two tiers, keys ascending with the best at the end
(bids ``key = price``, asks ``key = ~price``):

* the TOP tier, one contiguous sorted array (``lv[lo : lo + n]``) holding the best levels: an
  insert or delete moves the shorter part of it (memmove), so changes near the top and at its
  bottom cost a few bytes, and the top-k readers (BBO, DEPTH, the OKX top-25 and Kraken top-10
  checksums) read it as one array;
* the DEEP tier, every worse level, in sorted blocks of at most ``BOOK_BLOCK`` (128) levels,
  found by a binary search over ``bkey`` (each block's best key, one compact array): a change
  there moves at most one block's levels; a full block splits (or, for a level below all of
  it, the level opens a new block: snapshots arrive best first and fill blocks completely), an
  emptied block is freed, a block and a neighbour that fit in half a block merge.

Invariant: while the deep tier is non-empty the top tier holds at least ``BOOK_TOP_MIN`` (64)
levels, so the best ``min(total, 64)`` levels of a side are always the top tier's; the top
tier never holds more than ``BOOK_TOP_MAX`` (256): past it, its worst levels move down into new
deep blocks in one bulk copy (down to ``BOOK_TOP_KEEP``, 128); below ``BOOK_TOP_MIN`` the deep
tier's best levels move back up in one bulk copy (up to 128). Such moves change no level: no
mask bit, nothing ``touched``. A deep change is at a position >= the top tier's count, which is
what ``touched`` reports for it (exact for every k <= 64: ``touched >= k`` iff the top k stayed).
``max_depth`` truncation frees the worst deep blocks first (a partial block only advances its
``lo``), then cuts the top tier.

Why: a single contiguous array per side was ideal near the top, but Coinbase Advanced Trade
level2 books hold 18k-27k levels per side and ~7% of its updates land thousands of levels deep:
memmove was 18.7% and ``L2Book._apply_raw`` 10% of the Coinbase worker's steady-state CPU (on the
recorded session data/coinbase/2026-08-09, 4859 updates: 325 of them moved >= 3000 levels, i.e.
>= 48 KB each). Two tiers bound any change to ~128 levels (2 KB) of moves. Sizes chosen by
``bench/bench_book.py`` (ns per delta, one apply per message; the old single array: Coinbase
150, Binance 58, Kraken 77, Kraken Futures 88): top 256 / block 128 gave Coinbase 52 with the
near-top venues unchanged; top 512 or 1024 gave Coinbase 54-57, block 64 or 256 within +-1.
"""
from cpython.buffer cimport PyObject_GetBuffer, PyBuffer_Release, PyBUF_SIMPLE
from cpython.bytes cimport PyBytes_FromStringAndSize, PyBytes_AS_STRING
from cpython.bytearray cimport PyByteArray_GET_SIZE, PyByteArray_Resize, PyByteArray_AS_STRING
from libc.stdint cimport int64_t, uint8_t, uint16_t, uint32_t, uint64_t
from libc.stdlib cimport malloc, free
from cpython.pyport cimport PY_SSIZE_T_MAX
from libc.string cimport memmove, memcpy, memset

from dm._records cimport *

cdef extern from *:
    # Cython's own branch hint macro (__builtin_expect): keeps the rare tier moves and deep
    # levels out of the near-top fast path's straight line
    bint unlikely(bint) noexcept nogil
from dm.errors import BookError, DmError  # BookError re-exported for callers

MASK_BBO = BOOK_MASK_BBO
MASK_TOP10 = BOOK_MASK_TOP10
MASK_CROSSED = BOOK_MASK_CROSSED
# the tier sizes (dm/_book.pxd), for tests and benchmarks
TOP_MIN = BOOK_TOP_MIN
TOP_MAX = BOOK_TOP_MAX
TOP_KEEP = BOOK_TOP_KEEP
BLOCK = BOOK_BLOCK


# status codes of the nogil core, turned into BookError by _raise_status
cdef enum:
    ST_OK = 0
    ST_NOMEM = -1
    ST_TRUNCATED = -2
    ST_RTYPE = -3
    ST_LENGTH = -4
    ST_SIDE = -5
    ST_ACTION = -6
    ST_INSTRUMENT = -7

cdef enum:
    DELTA_SIZE = sizeof(BookDeltaRecord)
    LINEAR_SCAN = 8      # levels checked linearly from the top before binary search
    TOP_N = DEPTH_LEVELS


cdef int _raise_status(int st, Py_ssize_t bad) except -1:
    if st == ST_NOMEM:
        raise MemoryError("L2Book: out of memory growing a side")
    reasons = {
        ST_TRUNCATED: "buffer ends inside a record",
        ST_RTYPE: "record is not a BOOK_DELTA (rtype 0xE3)",
        ST_LENGTH: f"record length is not {DELTA_SIZE} bytes",
        ST_SIDE: "side is not 'B' or 'A'",
        ST_ACTION: "action is not one of 'A', 'M', 'C', 'R'",
        ST_INSTRUMENT: "record is for another instrument",
    }
    raise BookError(reasons.get(st, f"status {st}"), bad)


# ---------------------------------------------------------------- top tier (nogil helpers)

cdef inline Py_ssize_t _bsearch(const BookLevel* a, Py_ssize_t n, int64_t key) noexcept nogil:
    """First index i with a[i].key >= key (n if none)."""
    cdef Py_ssize_t lo = 0, hi = n, mid
    while lo < hi:
        mid = (lo + hi) >> 1
        if a[mid].key < key:
            lo = mid + 1
        else:
            hi = mid
    return lo


cdef inline Py_ssize_t _lower_bound(const BookLevel* a, Py_ssize_t n, int64_t key) noexcept nogil:
    """First index i with a[i].key >= key (n if none). Scans from the top (best) first."""
    cdef Py_ssize_t i = n, j = 0
    while i > 0 and j < LINEAR_SCAN:
        if a[i - 1].key < key:
            return i
        i -= 1
        j += 1
    if i == 0 or a[0].key >= key:
        return 0
    return _bsearch(a, i, key)


cdef int _room(BookSide* s, Py_ssize_t front, Py_ssize_t back) noexcept nogil:
    """Make ``front`` free slots below the top tier's window and ``back`` above it: re-centre
    in place when the result needs at most half the buffer, else move into a buffer twice as
    large (or more). Amortised O(1) per level added."""
    cdef Py_ssize_t need = s.n + front + back, newcap, newlo
    cdef BookLevel* nl
    if need <= (s.cap >> 1):
        newlo = front + ((s.cap - need) >> 1)
        memmove(s.lv + newlo, s.lv + s.lo, s.n * sizeof(BookLevel))
        s.lo = newlo
        return 0
    newcap = s.cap * 2 if s.cap >= 16 else 32
    while newcap < need:
        newcap *= 2
    nl = <BookLevel*>malloc(newcap * sizeof(BookLevel))
    if nl == NULL:
        return ST_NOMEM
    newlo = front + ((newcap - need) >> 1)
    if s.n:
        memcpy(nl + newlo, s.lv + s.lo, s.n * sizeof(BookLevel))
    free(s.lv)
    s.lv = nl
    s.lo = newlo
    s.cap = newcap
    return 0


cdef inline int _top_set(BookSide* s, int64_t key, uint64_t size, Py_ssize_t* touch) noexcept nogil:
    """Set one level of the top tier (its key is above every deep key); size 0 deletes. Returns
    mask bits (>= 0) or ST_NOMEM; lowers ``touch[0]`` to the level's position from the top
    (0 = best) when the book changed.

    Inserts and deletes move the shorter part of the array (the part above the position, or
    the part below it), so levels near the top and levels at the bottom (snapshots arrive best
    first, i.e. each new level is the worst) both cost O(1) moves."""
    cdef BookLevel* a = s.lv + s.lo
    cdef Py_ssize_t n = s.n
    cdef Py_ssize_t i = _lower_bound(a, n, key)
    cdef Py_ssize_t dist
    if i < n and a[i].key == key:
        dist = n - 1 - i
        if size == 0:
            if i < dist:                    # fewer levels below: shift them up, lo + 1
                memmove(a + 1, a, i * sizeof(BookLevel))
                s.lo += 1
            else:                           # fewer above: shift them down
                memmove(a + i, a + i + 1, dist * sizeof(BookLevel))
            s.n = n - 1
        elif a[i].size != size:
            a[i].size = size
        else:
            return 0
    else:
        if size == 0:
            return 0
        dist = n - i
        if i < dist:                        # shift the levels below i down by one
            if s.lo == 0:
                if _room(s, 1, 0) != 0:
                    return ST_NOMEM
            s.lo -= 1
            a = s.lv + s.lo
            memmove(a, a + 1, i * sizeof(BookLevel))
        else:                               # shift the levels above i up by one
            if s.lo + n == s.cap:
                if _room(s, 0, 1) != 0:
                    return ST_NOMEM
                a = s.lv + s.lo
            memmove(a + i + 1, a + i, dist * sizeof(BookLevel))
        a[i].key = key
        a[i].size = size
        s.n = n + 1
    if dist < touch[0]:
        touch[0] = dist
    if dist == 0:
        return BOOK_MASK_BBO | BOOK_MASK_TOP10
    if dist < TOP_N:
        return BOOK_MASK_TOP10
    return 0


# ---------------------------------------------------------------- deep tier (nogil helpers)

cdef inline Py_ssize_t _find_block(const int64_t* bkey, Py_ssize_t nb, int64_t key) noexcept nogil:
    """First block j with bkey[j] >= key (nb if none): binary search over the compact
    best-key array (8 bytes a block: a 27k-level side's ~300 blocks fit in 2-3 KB)."""
    cdef Py_ssize_t lo = 0, hi = nb, mid
    while lo < hi:
        mid = (lo + hi) >> 1
        if bkey[mid] < key:
            lo = mid + 1
        else:
            hi = mid
    return lo


cdef int _blocks_reserve(BookSide* s, Py_ssize_t extra) noexcept nogil:
    """Room for ``extra`` more entries in ``blk``/``bkey`` (doubling)."""
    cdef Py_ssize_t newcap
    cdef BookBlock** nblk
    cdef int64_t* nkey
    if s.nb + extra <= s.bcap:
        return 0
    newcap = s.bcap * 2 if s.bcap >= 16 else 16
    while newcap < s.nb + extra:
        newcap *= 2
    nblk = <BookBlock**>malloc(newcap * sizeof(BookBlock*))
    nkey = <int64_t*>malloc(newcap * sizeof(int64_t))
    if nblk == NULL or nkey == NULL:
        free(nblk)
        free(nkey)
        return ST_NOMEM
    if s.nb:
        memcpy(nblk, s.blk, s.nb * sizeof(BookBlock*))
        memcpy(nkey, s.bkey, s.nb * sizeof(int64_t))
    free(s.blk)
    free(s.bkey)
    s.blk = nblk
    s.bkey = nkey
    s.bcap = newcap
    return 0


cdef inline int64_t _block_best(const BookBlock* b) noexcept nogil:
    return b.lv[b.lo + b.n - 1].key


cdef void _blocks_insert(BookSide* s, Py_ssize_t j, BookBlock* b) noexcept nogil:
    """Put block ``b`` (non-empty) at index j; entries j.. move up one (room reserved)."""
    memmove(s.blk + j + 1, s.blk + j, (s.nb - j) * sizeof(BookBlock*))
    memmove(s.bkey + j + 1, s.bkey + j, (s.nb - j) * sizeof(int64_t))
    s.blk[j] = b
    s.bkey[j] = _block_best(b)
    s.nb += 1


cdef void _blocks_remove(BookSide* s, Py_ssize_t j, Py_ssize_t k) noexcept nogil:
    """Free blocks j .. j + k - 1 and close the gap (their levels are no longer counted by
    the caller)."""
    cdef Py_ssize_t q
    for q in range(j, j + k):
        free(s.blk[q])
    memmove(s.blk + j, s.blk + j + k, (s.nb - j - k) * sizeof(BookBlock*))
    memmove(s.bkey + j, s.bkey + j + k, (s.nb - j - k) * sizeof(int64_t))
    s.nb -= k


cdef inline void _block_put(BookBlock* b, Py_ssize_t i, int64_t key, uint64_t size) noexcept nogil:
    """Insert at window index i of a block that is not full: moves the shorter part when
    there is room on its side, else the other part."""
    cdef Py_ssize_t n = b.n
    if b.lo + n == BOOK_BLOCK or (b.lo > 0 and i < n - i):
        b.lo -= 1                           # levels below i move down one
        memmove(b.lv + b.lo, b.lv + b.lo + 1, i * sizeof(BookLevel))
    else:                                   # levels from i up move up one
        memmove(b.lv + b.lo + i + 1, b.lv + b.lo + i, (n - i) * sizeof(BookLevel))
    b.lv[b.lo + i].key = key
    b.lv[b.lo + i].size = size
    b.n = n + 1


cdef void _merge_left(BookSide* s, Py_ssize_t j) noexcept nogil:
    """Append block j's levels to block j - 1 (together at most BOOK_BLOCK) and remove j."""
    cdef BookBlock* l = s.blk[j - 1]
    cdef BookBlock* r = s.blk[j]
    cdef Py_ssize_t newlo
    if l.lo + l.n + r.n > BOOK_BLOCK:
        newlo = (BOOK_BLOCK - l.n - r.n) >> 1
        memmove(l.lv + newlo, l.lv + l.lo, l.n * sizeof(BookLevel))
        l.lo = newlo
    memcpy(l.lv + l.lo + l.n, r.lv + r.lo, r.n * sizeof(BookLevel))
    l.n += r.n
    s.bkey[j - 1] = s.bkey[j]
    _blocks_remove(s, j, 1)


cdef int _deep_set(BookSide* s, int64_t key, uint64_t size, Py_ssize_t* touch) noexcept nogil:
    """Set a level whose key is <= the deep tier's best key (``bkey[nb - 1]``), i.e. one of
    the deep tier; size 0 deletes. Moves at most BOOK_BLOCK levels: a full block splits in
    two (or, for a level below all of it, the level goes to the previous block or a new one:
    snapshots, best first, fill blocks completely); an emptied block is removed; a block and a
    neighbour that fit in half a block merge. Returns 0 (its position is >= the top tier's
    count n >= BOOK_TOP_MIN > 10: no mask bit) or ST_NOMEM (the book unchanged); lowers
    ``touch[0]`` to n when the book changed."""
    cdef Py_ssize_t j = _find_block(s.bkey, s.nb, key)
    cdef BookBlock* b = s.blk[j]
    cdef BookBlock* nw
    cdef BookBlock* pv
    cdef Py_ssize_t n = b.n, i, h
    cdef BookLevel* a = b.lv + b.lo
    i = _bsearch(a, n, key)
    if i < n and a[i].key == key:
        if size == 0:
            if n == 1:
                _blocks_remove(s, j, 1)
            else:
                if i < n - 1 - i:
                    memmove(a + 1, a, i * sizeof(BookLevel))
                    b.lo += 1
                else:
                    memmove(a + i, a + i + 1, (n - 1 - i) * sizeof(BookLevel))
                b.n = n - 1
                if i == n - 1:
                    s.bkey[j] = _block_best(b)
                if j > 0 and s.blk[j - 1].n + b.n <= (BOOK_BLOCK >> 1):
                    _merge_left(s, j)
                elif j + 1 < s.nb and s.blk[j + 1].n + b.n <= (BOOK_BLOCK >> 1):
                    _merge_left(s, j + 1)
            s.ndeep -= 1
        elif a[i].size != size:
            a[i].size = size
        else:
            return 0
    else:
        if size == 0:
            return 0
        if n < BOOK_BLOCK:
            _block_put(b, i, key, size)
            if i == n:
                s.bkey[j] = key
        elif i == 0 and j > 0 and s.blk[j - 1].n < BOOK_BLOCK:
            pv = s.blk[j - 1]                # below all of block j: the previous block's best
            _block_put(pv, pv.n, key, size)
            s.bkey[j - 1] = key
        else:
            if _blocks_reserve(s, 1) != 0:
                return ST_NOMEM
            nw = <BookBlock*>malloc(sizeof(BookBlock))
            if nw == NULL:
                return ST_NOMEM
            if i == 0:                       # a new block below it, filled from its top down
                nw.lo = BOOK_BLOCK - 1
                nw.n = 1
                nw.lv[nw.lo].key = key
                nw.lv[nw.lo].size = size
                _blocks_insert(s, j, nw)
            else:                            # split: the upper half moves to a new block
                h = n >> 1
                nw.n = n - h
                nw.lo = (BOOK_BLOCK - nw.n) >> 1
                memcpy(nw.lv + nw.lo, a + h, nw.n * sizeof(BookLevel))
                b.n = h
                s.bkey[j] = _block_best(b)
                _blocks_insert(s, j + 1, nw)
                if i < h:
                    _block_put(b, i, key, size)
                else:
                    _block_put(nw, i - h, key, size)
        s.ndeep += 1
    if s.n < touch[0]:
        touch[0] = s.n
    return 0


cdef int _spill(BookSide* s) noexcept nogil:
    """Move the top tier's worst levels (all but its best BOOK_TOP_KEEP) into new deep blocks
    above the deep tier's best one, 3/4 full and centred (room for inserts either way). Changes
    no level: no mask bit, nothing touched. ST_NOMEM leaves the book as it was."""
    cdef Py_ssize_t cnt = s.n - BOOK_TOP_KEEP
    cdef Py_ssize_t fill = (BOOK_BLOCK * 3) >> 2
    cdef Py_ssize_t k = (cnt + fill - 1) // fill, q, c, done = 0
    cdef BookBlock* b
    if _blocks_reserve(s, k) != 0:
        return ST_NOMEM
    for q in range(k):
        b = <BookBlock*>malloc(sizeof(BookBlock))
        if b == NULL:
            _blocks_remove(s, s.nb - q, q)   # the blocks made so far (levels not yet moved)
            return ST_NOMEM
        c = cnt * (q + 1) // k - done
        b.n = c
        b.lo = (BOOK_BLOCK - c) >> 1
        memcpy(b.lv + b.lo, s.lv + s.lo + done, c * sizeof(BookLevel))
        done += c
        s.blk[s.nb] = b
        s.bkey[s.nb] = _block_best(b)
        s.nb += 1
    s.lo += cnt
    s.n -= cnt
    s.ndeep += cnt
    return 0


cdef int _refill(BookSide* s) noexcept nogil:
    """Move the deep tier's best levels up into the top tier (to BOOK_TOP_KEEP levels, or all
    of the deep tier) below its worst. Changes no level. Cannot run out of memory in practice:
    the deep tier only fills by _spill, so the top buffer once held BOOK_TOP_MAX + 1 levels and
    its capacity (a power of two >= 32) is >= 2 * BOOK_TOP_KEEP: _room re-centres in place."""
    cdef Py_ssize_t want = BOOK_TOP_KEEP - s.n, got = 0, c
    cdef BookBlock* b
    if want > s.ndeep:
        want = s.ndeep
    if s.lo < want and _room(s, want, 0) != 0:
        return ST_NOMEM
    while got < want:
        b = s.blk[s.nb - 1]
        c = want - got
        if c > b.n:
            c = b.n
        got += c
        memcpy(s.lv + s.lo - got, b.lv + b.lo + b.n - c, c * sizeof(BookLevel))
        b.n -= c
        if b.n == 0:
            free(b)
            s.nb -= 1
        else:
            s.bkey[s.nb - 1] = _block_best(b)
    s.lo -= want
    s.n += want
    s.ndeep -= want
    return 0


# ---------------------------------------------------------------- one side (nogil helpers)

cdef inline int _set_level(BookSide* s, int64_t key, uint64_t size, Py_ssize_t* touch) noexcept nogil:
    """Set one level; size 0 deletes. Returns mask bits (>= 0) or ST_NOMEM; lowers ``touch[0]``
    to the level's position from the top (0 = best) when the book changed (for a deep level:
    the top tier's count, a lower bound of its position). Keeps the tier invariant
    (``dm/_book.pxd``): bulk moves between the tiers after a top-tier change."""
    cdef int rc
    if unlikely(s.nb != 0 and key <= s.bkey[s.nb - 1]):
        return _deep_set(s, key, size, touch)
    rc = _top_set(s, key, size, touch)
    if unlikely(s.n > BOOK_TOP_MAX):
        if _spill(s) != 0:
            return ST_NOMEM
    elif unlikely(s.n < BOOK_TOP_MIN and s.nb != 0):
        if _refill(s) != 0:
            return ST_NOMEM
    return rc


cdef inline Py_ssize_t _count(const BookSide* s) noexcept nogil:
    """Levels on the side (both tiers)."""
    return s.n + s.ndeep


cdef inline int _truncate_side(BookSide* s, Py_ssize_t depth, Py_ssize_t* touch) noexcept nogil:
    """Keep the best `depth` levels; returns MASK_TOP10 when a dropped level was in the top 10."""
    if not unlikely(s.n + s.ndeep > depth):
        return 0
    return _drop_worst(s, depth, s.n + s.ndeep - depth, touch)


cdef int _drop_worst(BookSide* s, Py_ssize_t depth, Py_ssize_t drop, Py_ssize_t* touch) noexcept nogil:
    """Drop the worst ``drop`` (> 0) levels, keeping ``depth``: whole worst deep blocks are
    freed, then the worst block's bottom is cut (its ``lo`` advances), then (deep tier empty)
    the top tier's (its ``lo`` advances)."""
    cdef Py_ssize_t k = 0
    cdef BookBlock* b
    if depth < touch[0]:
        touch[0] = depth
    while k < s.nb and s.blk[k].n <= drop:
        drop -= s.blk[k].n
        s.ndeep -= s.blk[k].n
        k += 1
    if k:
        _blocks_remove(s, 0, k)
    if drop and s.nb:
        b = s.blk[0]                        # drop < b.n
        b.lo += drop
        b.n -= drop
        s.ndeep -= drop
        drop = 0
    if drop:
        s.lo += drop
        s.n -= drop
    return BOOK_MASK_TOP10 if depth < TOP_N else 0


cdef void _clear_side(BookSide* s) noexcept nogil:
    """Empty both tiers: deep blocks are freed, the top buffer (and block index) kept."""
    if s.nb:
        _blocks_remove(s, 0, s.nb)
    s.ndeep = 0
    s.lo = s.cap >> 1
    s.n = 0


cdef void _free_side(BookSide* s) noexcept nogil:
    _clear_side(s)
    free(s.lv)
    free(s.blk)
    free(s.bkey)
    memset(s, 0, sizeof(BookSide))


cdef inline int64_t _price(int64_t key, bint bid) noexcept nogil:
    return key if bid else ~key


cdef object _side_levels(BookSide* s, bint bid, Py_ssize_t n):
    """Best first: the top tier from its best, then the deep blocks from the best one."""
    cdef Py_ssize_t k, i, j
    cdef BookBlock* b
    cdef list out = []
    if n <= 0 or n > _count(s):
        n = _count(s)
    i = s.lo + s.n - 1
    k = 0
    while k < n and i >= s.lo:
        out.append((_price(s.lv[i].key, bid), s.lv[i].size))
        i -= 1
        k += 1
    j = s.nb - 1
    while k < n:
        b = s.blk[j]
        i = b.lo + b.n - 1
        while k < n and i >= b.lo:
            out.append((_price(b.lv[i].key, bid), b.lv[i].size))
            i -= 1
            k += 1
        j -= 1
    return out


cdef int _side_code(object side) except -1:
    cdef int c
    if isinstance(side, str):
        if len(<str>side) != 1:
            raise BookError(f"side {side!r} is not 'B' or 'A'")
        c = ord(<str>side)
    else:
        c = side
    if c != SIDE_BID and c != SIDE_ASK:
        raise BookError(f"side {side!r} is not 'B' (66) or 'A' (65)")
    return c


# ---------------------------------------------------------------- the book

cdef class L2Book:
    """L2 book of one instrument.

    ``L2Book(instrument_id, publisher_id, max_depth=0, size_precision=9)``: ``max_depth`` 0 =
    unbounded, else each side is truncated to its best ``max_depth`` levels after every apply
    call. Records passed to ``apply`` must carry this ``instrument_id`` (``BookError``
    otherwise). ``size_precision`` (0..18, settable): the scale of the sizes it holds (those of
    the records applied), stamped on the DEPTH and BBO records it writes."""

    def __cinit__(self, uint32_t instrument_id, uint16_t publisher_id, Py_ssize_t max_depth=0,
                  int size_precision=FIXED_DECIMALS):
        if max_depth < 0:
            raise ValueError("max_depth must be >= 0")
        if not 0 <= size_precision <= 18:
            raise ValueError(f"size_precision {size_precision} must be 0..18")
        self.size_precision = <uint8_t>size_precision
        self.instrument_id = instrument_id
        self.publisher_id = publisher_id
        self.max_depth = max_depth
        self.version = 0
        self.touched = PY_SSIZE_T_MAX
        memset(&self.bids, 0, sizeof(BookSide))
        memset(&self.asks, 0, sizeof(BookSide))

    def __dealloc__(self):
        _free_side(&self.bids)
        _free_side(&self.asks)

    # ------------------------------------------------------------ C-level API

    cdef int _apply_raw(self, const uint8_t* buf, Py_ssize_t nbytes, int* mask,
                        Py_ssize_t* bad, Py_ssize_t* touch) noexcept nogil:
        cdef Py_ssize_t off = 0, idx = 0
        cdef const BookDeltaRecord* r
        cdef BookSide* s
        cdef int64_t key
        cdef uint64_t size
        cdef int m = 0, rc
        cdef uint8_t act
        while off < nbytes:
            bad[0] = idx
            if nbytes - off < DELTA_SIZE:
                mask[0] = m
                return ST_TRUNCATED
            r = <const BookDeltaRecord*>(buf + off)
            if r.hd.rtype != RTYPE_BOOK_DELTA:
                mask[0] = m
                return ST_RTYPE
            if r.hd.length * 4 != DELTA_SIZE:
                mask[0] = m
                return ST_LENGTH
            if r.hd.instrument_id != self.instrument_id:
                mask[0] = m
                return ST_INSTRUMENT
            act = r.action
            if act == ACTION_CLEAR:
                if self.bids.n or self.asks.n:
                    m |= BOOK_MASK_TOP10
                    touch[0] = 0
                _clear_side(&self.bids)
                _clear_side(&self.asks)
            else:
                if r.side == SIDE_BID:
                    s = &self.bids
                    key = r.price
                elif r.side == SIDE_ASK:
                    s = &self.asks
                    key = ~r.price
                else:
                    mask[0] = m
                    return ST_SIDE
                if act == ACTION_CANCEL:
                    size = 0
                elif act == ACTION_ADD or act == ACTION_MODIFY:
                    size = r.size
                else:
                    mask[0] = m
                    return ST_ACTION
                rc = _set_level(s, key, size, touch)
                if rc < 0:
                    mask[0] = m
                    return rc
                m |= rc
            off += DELTA_SIZE
            idx += 1
        mask[0] = m
        return ST_OK

    cdef int _finish(self, int m, int64_t bk0, uint64_t bs0, int64_t ak0, uint64_t as0,
                            Py_ssize_t bn0, Py_ssize_t an0, Py_ssize_t* touch) noexcept nogil:
        """Truncate, then compute the exact BBO bit and the crossed bit; count the call
        (``version``) and keep its ``touched``."""
        cdef BookSide* b = &self.bids
        cdef BookSide* a = &self.asks
        if self.max_depth:
            m |= _truncate_side(b, self.max_depth, touch)
            m |= _truncate_side(a, self.max_depth, touch)
        self.version += 1
        self.touched = touch[0]
        m &= ~BOOK_MASK_BBO
        if (b.n != 0) != (bn0 != 0) or (b.n and (b.lv[b.lo + b.n - 1].key != bk0
                                                or b.lv[b.lo + b.n - 1].size != bs0)):
            m |= BOOK_MASK_BBO | BOOK_MASK_TOP10
        if (a.n != 0) != (an0 != 0) or (a.n and (a.lv[a.lo + a.n - 1].key != ak0
                                                or a.lv[a.lo + a.n - 1].size != as0)):
            m |= BOOK_MASK_BBO | BOOK_MASK_TOP10
        if self.is_crossed():
            m |= BOOK_MASK_CROSSED
        return m

    cdef int apply_buffer(self, const uint8_t* buf, Py_ssize_t nbytes) except -1:
        cdef int m = 0, st
        cdef Py_ssize_t bad = -1, touch = PY_SSIZE_T_MAX
        cdef BookSide* b = &self.bids
        cdef BookSide* a = &self.asks
        cdef Py_ssize_t bn0 = b.n, an0 = a.n
        cdef int64_t bk0 = b.lv[b.lo + bn0 - 1].key if bn0 else 0
        cdef uint64_t bs0 = b.lv[b.lo + bn0 - 1].size if bn0 else 0
        cdef int64_t ak0 = a.lv[a.lo + an0 - 1].key if an0 else 0
        cdef uint64_t as0 = a.lv[a.lo + an0 - 1].size if an0 else 0
        st = self._apply_raw(buf, nbytes, &m, &bad, &touch)
        m = self._finish(m, bk0, bs0, ak0, as0, bn0, an0, &touch)
        if st != ST_OK:
            _raise_status(st, bad)
        return m

    cdef int apply_one(self, uint8_t side, int64_t price, uint64_t size) except -1:
        cdef int rc, m = 0
        cdef Py_ssize_t touch = PY_SSIZE_T_MAX
        cdef BookSide* b = &self.bids
        cdef BookSide* a = &self.asks
        cdef Py_ssize_t bn0 = b.n, an0 = a.n
        cdef int64_t bk0 = b.lv[b.lo + bn0 - 1].key if bn0 else 0
        cdef uint64_t bs0 = b.lv[b.lo + bn0 - 1].size if bn0 else 0
        cdef int64_t ak0 = a.lv[a.lo + an0 - 1].key if an0 else 0
        cdef uint64_t as0 = a.lv[a.lo + an0 - 1].size if an0 else 0
        if side == SIDE_BID:
            rc = _set_level(b, price, size, &touch)
        elif side == SIDE_ASK:
            rc = _set_level(a, ~price, size, &touch)
        else:
            raise BookError(f"side {side} is not 'B' (66) or 'A' (65)")
        if rc < 0:
            self.version += 1
            self.touched = touch
            _raise_status(rc, -1)
        return self._finish(rc, bk0, bs0, ak0, as0, bn0, an0, &touch)

    cdef bint is_crossed(self) noexcept nogil:
        if self.bids.n == 0 or self.asks.n == 0:
            return False
        return self.bids.lv[self.bids.lo + self.bids.n - 1].key >= \
            ~self.asks.lv[self.asks.lo + self.asks.n - 1].key

    cdef void fill_bbo(self, BboRecord* out, uint64_t ts_event, uint64_t ts_recv,
                       uint64_t sequence, uint8_t flags) noexcept nogil:
        cdef BookSide* b = &self.bids
        cdef BookSide* a = &self.asks
        memset(out, 0, sizeof(BboRecord))
        out.hd.length = sizeof(BboRecord) // 4
        out.hd.rtype = RTYPE_BBO
        out.hd.publisher_id = self.publisher_id
        out.hd.instrument_id = self.instrument_id
        out.hd.ts_event = ts_event
        out.ts_recv = ts_recv
        out.sequence = sequence
        out.flags = flags
        out.size_precision = self.size_precision
        if b.n:
            out.bid_px = b.lv[b.lo + b.n - 1].key
            out.bid_sz = b.lv[b.lo + b.n - 1].size
        else:
            out.bid_px = DM_UNDEF_PRICE
        if a.n:
            out.ask_px = ~a.lv[a.lo + a.n - 1].key
            out.ask_sz = a.lv[a.lo + a.n - 1].size
        else:
            out.ask_px = DM_UNDEF_PRICE

    cdef void fill_depth(self, DepthRecord* out, uint64_t ts_event, uint64_t ts_recv,
                         uint64_t sequence, uint8_t flags) noexcept nogil:
        cdef BookSide* b = &self.bids
        cdef BookSide* a = &self.asks
        cdef Py_ssize_t k, nb = b.n if b.n < DEPTH_LEVELS else DEPTH_LEVELS
        cdef Py_ssize_t na = a.n if a.n < DEPTH_LEVELS else DEPTH_LEVELS
        cdef Py_ssize_t btop = b.lo + b.n - 1, atop = a.lo + a.n - 1
        memset(out, 0, sizeof(DepthRecord))
        out.hd.length = sizeof(DepthRecord) // 4
        out.hd.rtype = RTYPE_DEPTH
        out.hd.publisher_id = self.publisher_id
        out.hd.instrument_id = self.instrument_id
        out.hd.ts_event = ts_event
        out.ts_recv = ts_recv
        out.sequence = sequence
        out.flags = flags
        out.n_bid = <uint8_t>nb
        out.n_ask = <uint8_t>na
        out.size_precision = self.size_precision
        for k in range(DEPTH_LEVELS):
            if k < nb:
                out.levels[k].bid_px = b.lv[btop - k].key
                out.levels[k].bid_sz = b.lv[btop - k].size
            else:
                out.levels[k].bid_px = DM_UNDEF_PRICE
            if k < na:
                out.levels[k].ask_px = ~a.lv[atop - k].key
                out.levels[k].ask_sz = a.lv[atop - k].size
            else:
                out.levels[k].ask_px = DM_UNDEF_PRICE

    # ------------------------------------------------------------ Python API

    def apply(self, records) -> int:
        """Apply concatenated BOOK_DELTA records (any contiguous bytes-like: bytes, bytearray,
        memoryview, numpy array of ``BOOK_DELTA_DTYPE``), in order. Returns the change mask.

        Raises ``BookError`` for a record that is not a 56-byte BOOK_DELTA of this instrument,
        an unknown side or action, or a buffer that ends inside a record; the records before
        the bad one stay applied."""
        cdef Py_buffer view
        PyObject_GetBuffer(records, &view, PyBUF_SIMPLE)
        try:
            return self.apply_buffer(<const uint8_t*>view.buf, view.len)
        finally:
            PyBuffer_Release(&view)

    def apply_level(self, side, int64_t price, uint64_t size) -> int:
        """Set one level: ``side`` 66/'B' bid or 65/'A' ask, price i64 and size u64 at 1e-9;
        size 0 deletes the level. Returns the change mask. Raises ``BookError`` for a bad side."""
        return self.apply_one(<uint8_t>_side_code(side), price, size)

    def bbo_record(self, uint64_t ts_event, uint64_t ts_recv, uint64_t sequence,
                   uint8_t flags=0) -> bytes:
        """The current top as an 80-byte BBO record (``dm.records.BBO_DTYPE``); an empty side
        has price ``UNDEF_PRICE`` and size 0; order counts are 0 (unknown)."""
        cdef bytes out = PyBytes_FromStringAndSize(NULL, sizeof(BboRecord))
        self.fill_bbo(<BboRecord*>PyBytes_AS_STRING(out), ts_event, ts_recv, sequence, flags)
        return out

    def depth_record(self, uint64_t ts_event, uint64_t ts_recv, uint64_t sequence,
                     uint8_t flags=0) -> bytes:
        """The top 10 levels per side as a 360-byte DEPTH record (``dm.records.DEPTH_DTYPE``),
        best first; ``n_bid``/``n_ask`` say how many are present, missing ones have price
        ``UNDEF_PRICE`` and size 0."""
        cdef bytes out = PyBytes_FromStringAndSize(NULL, sizeof(DepthRecord))
        self.fill_depth(<DepthRecord*>PyBytes_AS_STRING(out), ts_event, ts_recv, sequence, flags)
        return out

    def write_bbo(self, bytearray out, uint64_t ts_event, uint64_t ts_recv, uint64_t sequence,
                  uint8_t flags=0) -> int:
        """Append the BBO record (as ``bbo_record``) to ``out``; returns the bytes appended (80)."""
        cdef Py_ssize_t n0 = PyByteArray_GET_SIZE(out)
        PyByteArray_Resize(out, n0 + sizeof(BboRecord))
        self.fill_bbo(<BboRecord*>(PyByteArray_AS_STRING(out) + n0), ts_event, ts_recv,
                      sequence, flags)
        return sizeof(BboRecord)

    def write_depth(self, bytearray out, uint64_t ts_event, uint64_t ts_recv,
                    uint64_t sequence, uint8_t flags=0) -> int:
        """Append the DEPTH record (as ``depth_record``) to ``out``; returns the bytes appended
        (360)."""
        cdef Py_ssize_t n0 = PyByteArray_GET_SIZE(out)
        PyByteArray_Resize(out, n0 + sizeof(DepthRecord))
        self.fill_depth(<DepthRecord*>(PyByteArray_AS_STRING(out) + n0), ts_event, ts_recv,
                        sequence, flags)
        return sizeof(DepthRecord)

    @property
    def best_bid(self):
        """``(price, size)`` of the highest bid (1e-9 fixed point), or ``None`` when empty."""
        if self.bids.n == 0:
            return None
        cdef BookLevel* t = &self.bids.lv[self.bids.lo + self.bids.n - 1]
        return (t.key, t.size)

    @property
    def best_ask(self):
        """``(price, size)`` of the lowest ask (1e-9 fixed point), or ``None`` when empty."""
        if self.asks.n == 0:
            return None
        cdef BookLevel* t = &self.asks.lv[self.asks.lo + self.asks.n - 1]
        return (~t.key, t.size)

    @property
    def crossed(self) -> bool:
        """True when both sides are present and best bid >= best ask."""
        return self.is_crossed()

    @property
    def n_bids(self) -> int:
        return _count(&self.bids)

    @property
    def n_asks(self) -> int:
        return _count(&self.asks)

    def levels(self, side, Py_ssize_t n=0) -> list:
        """``[(price, size), ...]`` of one side (66/'B' or 65/'A'), best first; ``n`` 0 = all."""
        if _side_code(side) == SIDE_BID:
            return _side_levels(&self.bids, True, n)
        return _side_levels(&self.asks, False, n)

    def truncate(self, Py_ssize_t depth) -> int:
        """Keep the best ``depth`` levels on each side; returns the change mask."""
        if depth < 0:
            raise ValueError("depth must be >= 0")
        cdef Py_ssize_t touch = PY_SSIZE_T_MAX
        cdef int m = _truncate_side(&self.bids, depth, &touch) | _truncate_side(&self.asks, depth, &touch)
        self.version += 1
        self.touched = touch
        if depth == 0 and m:
            m |= BOOK_MASK_BBO
        return m

    def clear(self) -> None:
        """Empty both sides (capacity is kept)."""
        self.version += 1
        self.touched = 0 if self.bids.n or self.asks.n else PY_SSIZE_T_MAX
        _clear_side(&self.bids)
        _clear_side(&self.asks)

    def _check(self) -> None:
        """Debug/test aid: verify the layout invariants of both sides (``dm/_book.pxd``): top
        window inside its buffer, at most BOOK_TOP_MAX levels; deep blocks non-empty windows
        inside their buffers, ``bkey`` their best keys, ``ndeep`` their sum; keys strictly
        ascending across all blocks then the top tier; no zero size; a non-empty deep tier
        only under a top tier of at least BOOK_TOP_MIN levels. Raises AssertionError."""
        cdef BookSide* sd
        cdef BookBlock* b
        cdef Py_ssize_t i, j, tot
        cdef int64_t prev = 0
        cdef bint first
        cdef int k
        for k in range(2):
            sd = &self.bids if k == 0 else &self.asks
            assert 0 <= sd.lo and sd.n >= 0 and sd.lo + sd.n <= sd.cap, (sd.lo, sd.n, sd.cap)
            assert sd.cap == 0 or sd.lv != NULL
            assert sd.n <= BOOK_TOP_MAX, sd.n
            assert 0 <= sd.nb <= sd.bcap and (sd.nb == 0) == (sd.ndeep == 0), (sd.nb, sd.ndeep)
            if sd.nb:
                assert sd.n >= BOOK_TOP_MIN, (sd.n, sd.ndeep)
            first = True
            tot = 0
            for j in range(sd.nb):
                b = sd.blk[j]
                assert 0 < b.n and 0 <= b.lo and b.lo + b.n <= BOOK_BLOCK, (j, b.lo, b.n)
                assert sd.bkey[j] == b.lv[b.lo + b.n - 1].key, j
                tot += b.n
                for i in range(b.lo, b.lo + b.n):
                    assert b.lv[i].size != 0
                    assert first or prev < b.lv[i].key, (j, i)
                    prev = b.lv[i].key
                    first = False
            assert tot == sd.ndeep, (tot, sd.ndeep)
            for i in range(sd.lo, sd.lo + sd.n):
                assert sd.lv[i].size != 0
                assert first or prev < sd.lv[i].key, i
                prev = sd.lv[i].key
                first = False

    def _tiers(self) -> tuple:
        """Debug/test aid: ``((top, deep, blocks) of the bids, (top, deep, blocks) of the
        asks)``: the top tier's level count, the deep tier's, its block count."""
        return ((self.bids.n, self.bids.ndeep, self.bids.nb),
                (self.asks.n, self.asks.ndeep, self.asks.nb))

    def __repr__(self):
        return (f"L2Book(instrument_id={self.instrument_id}, publisher_id={self.publisher_id}, "
                f"bids={_count(&self.bids)}, asks={_count(&self.asks)}, best_bid={self.best_bid}, "
                f"best_ask={self.best_ask})")
