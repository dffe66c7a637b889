# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
# distutils: libraries = z
"""OKX v5 order book checksum (OKX API v5 docs, "Order book channel" → "Checksum") over dm's L2
book (``dm._book.L2Book``), read straight from the book's level arrays (layout in
``dm/_book.pxd``). Each level's ``px:sz`` text is rendered once per book and copied after
(``dm._leveltext.LevelText``), and the CRC-32 is ``dm/dm_crc32.h``'s (PCLMULQDQ folding, zlib's
``crc32`` for the tail and on other CPUs), called on the text without a Python object.
bench/bench_checksum.py compares it with the Python alternative (book levels → strings →
``zlib.crc32``) per recorded update, and the CRC with ``zlib.crc32`` (an earlier hand-rolled
slice-by-8 table CRC measured 0.82-0.87x zlib's braided one and was dropped)."""
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_GET_SIZE
from libc.stdint cimport int64_t, uint8_t, uint32_t, uint64_t
from libc.stdlib cimport calloc, free
from libc.string cimport memcpy

from dm._book cimport BookSide, L2Book
from dm._booksync cimport FastChecksum
from dm._leveltext cimport LevelText, LevelTextSlot

from dm.errors import BookError

cdef extern from "dm_crc32.h" nogil:
    # zlib's CRC-32, folded with PCLMULQDQ where the CPU has it (dm/dm_crc32.h)
    uint32_t dm_crc32(uint32_t crc, const unsigned char* buf, size_t len)
    int dm_crc32_folds()

cdef enum:
    DEPTH = 25                   # "Checksum": the best 25 bids and asks
    BUF = 25 * 2 * 2 * 42 + 64   # 100 numbers of at most 41 characters + ':', and room for a fixed-size copy

#: levels per side the checksum covers (``dm._feed``: updates below them leave it unchanged)
CHECKSUM_DEPTH = DEPTH


cdef extern from *:
    """
    static const char dm_okx_dig2[201] =
        "00010203040506070809101112131415161718192021222324252627282930313233343536373839"
        "40414243444546474849505152535455565758596061626364656667686970717273747576777879"
        "8081828384858687888990919293949596979899";
    static const uint64_t dm_okx_p10[20] = {
        1ULL, 10ULL, 100ULL, 1000ULL, 10000ULL, 100000ULL, 1000000ULL, 10000000ULL, 100000000ULL,
        1000000000ULL, 10000000000ULL, 100000000000ULL, 1000000000000ULL, 10000000000000ULL,
        100000000000000ULL, 1000000000000000ULL, 10000000000000000ULL, 100000000000000000ULL,
        1000000000000000000ULL, 10000000000000000000ULL};
    /* the digits of v, at least `width` of them (zero-padded on the left), written at p */
    static inline char *dm_okx_digits(char *p, uint64_t v, int width) {
        char tmp[24];
        int k = 24;
        while (v >= 100) {
            uint64_t q = v / 100;
            unsigned r = (unsigned)(v - q * 100);
            k -= 2;
            memcpy(tmp + k, dm_okx_dig2 + 2 * r, 2);
            v = q;
        }
        if (v >= 10) {
            k -= 2;
            memcpy(tmp + k, dm_okx_dig2 + 2 * v, 2);
        } else if (v > 0 || k == 24) {
            tmp[--k] = (char)('0' + v);
        }
        while (24 - k < width)
            tmp[--k] = '0';
        memcpy(p, tmp + k, 24 - k);
        return p + 24 - k;
    }
    /* v / 10**dp in its shortest decimal form: no trailing fractional zeros, no '.' for an
       integer ("0" for zero) */
    static inline char *dm_okx_dec(char *p, uint64_t v, int dp) {
        uint64_t ip, fr;
        if (dp == 0)
            return dm_okx_digits(p, v, 1);
        ip = dp == 9 ? v / 1000000000ULL : v / dm_okx_p10[dp];   /* 9 (prices): a constant divisor */
        fr = v - ip * dm_okx_p10[dp];
        p = dm_okx_digits(p, ip, 1);
        if (fr == 0)
            return p;
        /* strip trailing zeros: at most four divisions (8, 4, 2, 1 digits) */
        if (dp > 8 && fr % 100000000ULL == 0) { fr /= 100000000ULL; dp -= 8; }
        if (dp > 4 && fr % 10000ULL == 0) { fr /= 10000ULL; dp -= 4; }
        if (dp > 2 && fr % 100ULL == 0) { fr /= 100ULL; dp -= 2; }
        if (dp > 1 && fr % 10ULL == 0) { fr /= 10ULL; dp -= 1; }
        *p++ = '.';
        return dm_okx_digits(p, fr, dp);
    }
    """
    char* dm_okx_dec(char* p, uint64_t v, int dp) noexcept nogil


cdef inline char* put_dec(char* p, uint64_t v, int dp) noexcept nogil:
    """Decimal text of ``v / 10**dp``, shortest form: no trailing fractional zeros, no '.' for an
    integer, "0" for zero (the form OKX sends its price and size strings in)."""
    return dm_okx_dec(p, v, dp)


cdef char* put_px(char* p, int64_t px) noexcept nogil:
    if px < 0:
        p[0] = 45
        return put_dec(p + 1, <uint64_t>(-(px + 1)) + 1, 9)
    return put_dec(p, <uint64_t>px, 9)


cdef inline char* put_level(char* p, int64_t px, uint64_t sz, int size_precision, LevelText text):
    """``px:sz`` at p (copied from ``text`` when rendered before); returns its end."""
    cdef LevelTextSlot* s
    cdef char* q
    if text is None:
        q = put_px(p, px)
        q[0] = 58
        return put_dec(q + 1, sz, size_precision)
    s = text.slot(px, sz)
    if s.len and s.price == px and s.size == sz:
        return text.copy(p, s)                   # BUF has room: 50 levels of <= 44 bytes
    q = put_px(p, px)
    q[0] = 58
    q = put_dec(q + 1, sz, size_precision)
    text.keep(s, px, sz, p, q - p)
    text.misses += 1
    return q


cdef Py_ssize_t render(L2Book book, int size_precision, char* buf, LevelText text):
    """The checksum text into buf (length returned): bid1px:bid1sz:ask1px:ask1sz:bid2px:..., the
    shorter side's missing levels left out; levels come from ``text`` when it has them."""
    cdef BookSide* bd = &book.bids
    cdef BookSide* ak = &book.asks
    cdef Py_ssize_t nb = bd.n if bd.n < DEPTH else DEPTH
    cdef Py_ssize_t na = ak.n if ak.n < DEPTH else DEPTH
    cdef Py_ssize_t tb = bd.lo + bd.n - 1, ta = ak.lo + ak.n - 1, i
    cdef char* p = buf
    if text is not None:
        text.use(<uint64_t>size_precision + 1)
    for i in range(nb if nb > na else na):
        if i < nb:
            if p != buf:
                p[0] = 58
                p += 1
            p = put_level(p, bd.lv[tb - i].key, bd.lv[tb - i].size, size_precision, text)
        if i < na:
            if p != buf:
                p[0] = 58
                p += 1
            p = put_level(p, ~ak.lv[ta - i].key, ak.lv[ta - i].size, size_precision, text)
    return p - buf


def _check_sp(int size_precision):
    if not 0 <= size_precision <= 18:
        raise BookError(f"size_precision must be within 0..18, got {size_precision}")


def book_checksum(L2Book book, int size_precision, LevelText text=None) -> int:
    """OKX API v5 "Order book channel" → "Checksum" of ``book`` as u32 (OKX sends it as a
    signed 32-bit integer: compare ``& 0xFFFFFFFF``): CRC32 of the best 25 bids and asks
    interleaved, ``bid1px:bid1sz:ask1px:ask1sz:bid2px:...`` (when one side has fewer levels,
    the other side's remaining levels follow alone), each price and size written as OKX sends
    them (shortest decimal; the book holds prices at 1e-9 and sizes at ``size_precision``
    decimals). ``text``: the book's ``dm._leveltext.LevelText``, levels rendered before are
    copied from it. Raises ``BookError`` for a size_precision outside 0..18."""
    _check_sp(size_precision)
    cdef char buf[BUF]
    cdef Py_ssize_t n = render(book, size_precision, buf, text)
    return dm_crc32(0, <const unsigned char*>buf, <size_t>n)


# The C frame path's checksum keeps, per book side, the top 25 levels it rendered last time and
# their texts, by position (``PosSide``): most updates leave most of the top 25 as they were, or
# shift them by one place (a level inserted or removed above), so each level's text is found at
# its position or one place off (two compares on adjacent memory, one fixed-size copy) before the
# LevelText hash cache is asked. Two buffers per side: the levels of this render are built from
# those of the last one.

cdef enum:
    POS_TEXT = 47                # longest text kept by position (longer ones are rendered each time)

ctypedef struct PosLevel:        # 64 bytes
    int64_t price
    uint64_t size
    uint8_t len                  # 0: not kept (text longer than POS_TEXT)
    char text[POS_TEXT]

ctypedef struct PosSide:
    PosLevel lv[DEPTH]
    Py_ssize_t n


cdef inline char* pos_level(const PosSide* old, PosLevel* new, Py_ssize_t i, int64_t px, uint64_t sz,
                            char* p, int size_precision, LevelText text) noexcept:
    """Level i of a side (``px:sz``) at p, from ``old`` at i, i + 1 or i - 1 when it is there,
    else rendered (through ``text``); kept in ``new[i]``. Returns its end. p needs POS_TEXT bytes
    of room."""
    cdef const PosLevel* src = NULL
    cdef char* q
    cdef Py_ssize_t n
    if i < old.n and old.lv[i].price == px and old.lv[i].size == sz:
        src = &old.lv[i]
    elif i + 1 < old.n and old.lv[i + 1].price == px and old.lv[i + 1].size == sz:
        src = &old.lv[i + 1]
    elif 0 < i <= old.n and old.lv[i - 1].price == px and old.lv[i - 1].size == sz:
        src = &old.lv[i - 1]
    if src != NULL and src.len:
        memcpy(new, src, sizeof(PosLevel))
        memcpy(p, src.text, POS_TEXT)
        return p + src.len
    q = put_level(p, px, sz, size_precision, text)
    n = q - p
    new.price = px
    new.size = sz
    if n <= POS_TEXT:
        new.len = <uint8_t>n
        memcpy(new.text, p, n)
    else:
        new.len = 0
    return q


cdef class OkxChecksum(FastChecksum):
    """``OkxChecksum(size_precision, text=None)``: :func:`book_checksum` of one book held at
    ``size_precision`` (its ``LevelText`` ``text``), called by the C frame path (``dm._feed``)
    through ``FastChecksum.matches`` (the venue's checksum as u32) after each update. Keeps the
    top 25 levels per side it rendered last (above) and reuses their texts. Raises
    ``BookError`` for a size_precision outside 0..18."""
    cdef int size_precision
    cdef LevelText text
    cdef PosSide* sides          # [bids, asks] of the last render, then [bids, asks] to build
    cdef int cur                 # 0 or 2: where the last render's pair starts

    def __cinit__(self, *args, **kwargs):
        self.sides = <PosSide*>calloc(4, sizeof(PosSide))
        if self.sides == NULL:
            raise MemoryError()
        self.cur = 0

    def __dealloc__(self):
        free(self.sides)
        self.sides = NULL

    def __init__(self, int size_precision, LevelText text=None):
        _check_sp(size_precision)
        self.size_precision = size_precision
        self.text = text if text is not None else LevelText()

    cdef Py_ssize_t render_pos(self, L2Book book, char* buf):
        """``render``'s text into buf (length returned), levels reused by position."""
        cdef BookSide* bd = &book.bids
        cdef BookSide* ak = &book.asks
        cdef Py_ssize_t nb = bd.n if bd.n < DEPTH else DEPTH
        cdef Py_ssize_t na = ak.n if ak.n < DEPTH else DEPTH
        cdef Py_ssize_t tb = bd.lo + bd.n - 1, ta = ak.lo + ak.n - 1, i
        cdef PosSide* ob = &self.sides[self.cur]
        cdef PosSide* oa = &self.sides[self.cur + 1]
        cdef PosSide* nbs = &self.sides[2 - self.cur]
        cdef PosSide* nas = &self.sides[3 - self.cur]
        cdef char* p = buf
        cdef int sp = self.size_precision
        cdef LevelText text = self.text
        text.use(<uint64_t>sp + 1)
        for i in range(nb if nb > na else na):
            if i < nb:
                if p != buf:
                    p[0] = 58
                    p += 1
                p = pos_level(ob, &nbs.lv[i], i, bd.lv[tb - i].key, bd.lv[tb - i].size, p, sp, text)
            if i < na:
                if p != buf:
                    p[0] = 58
                    p += 1
                p = pos_level(oa, &nas.lv[i], i, ~ak.lv[ta - i].key, ak.lv[ta - i].size, p, sp, text)
        nbs.n = nb
        nas.n = na
        self.cur = 2 - self.cur
        return p - buf

    cdef uint32_t crc_pos(self, L2Book book) except? 0:
        """The book's checksum (u32) from ``render_pos``'s text."""
        cdef char buf[BUF]
        cdef Py_ssize_t n = self.render_pos(book, buf)
        return dm_crc32(0, <const unsigned char*>buf, <size_t>n)

    cdef int matches(self, L2Book book, int64_t checksum) except -1:
        return self.crc_pos(book) == <uint32_t>checksum

    def checksum(self, L2Book book) -> int:
        """The book's checksum as ``matches`` computes it (u32; tests, bench)."""
        return self.crc_pos(book)


def checksum_text(L2Book book, int size_precision) -> bytes:
    """The text :func:`book_checksum` hashes (tests, diagnostics)."""
    _check_sp(size_precision)
    cdef char buf[BUF]
    cdef Py_ssize_t n = render(book, size_precision, buf, None)
    return buf[:n]


def crc32(bytes data, uint32_t crc=0) -> int:
    """CRC-32 of ``data`` continuing ``crc``, as ``zlib.crc32`` (``dm/dm_crc32.h``: the checksums'
    CRC; tests compare it with ``zlib.crc32``)."""
    return dm_crc32(crc, <const unsigned char*>PyBytes_AS_STRING(data), <size_t>PyBytes_GET_SIZE(data))


def crc32_folds() -> bool:
    """True when this CPU's CRC-32 folds with PCLMULQDQ (else zlib's crc32 alone)."""
    return bool(dm_crc32_folds())
