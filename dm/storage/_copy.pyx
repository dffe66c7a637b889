# cython: language_level=3
"""Record arrays → PostgreSQL binary COPY tuples in one C pass (``copy_rows_from_records`` of
dm/storage/postgres.py): per row, the i16 field count, then per column its i32 length and the
record field sign- or zero-extended to the column's width, big-endian ("COPY — Binary Format"
of the PostgreSQL docs), and the ``dedup`` column (dm-dedup-v1 of dm/storage/base.py) hashed in
the same pass. The numpy version (one strided cast per column, then the hash over int64 column
copies) walks the batch about 15 times; this walks it once, without the GIL.

Each table's program (field offset, size and signedness per column, the hashed columns) is
derived at import from ``dm.storage.base.COLUMNS`` by probing each column's ``get`` on a record
whose bytes count up, so it follows the columns as they are declared; a table whose columns are
not plain little-endian integer fields of the record gets no program (``program(table)`` is
None) and the caller keeps the numpy path.
"""
from libc.stdint cimport int8_t, int16_t, int32_t, int64_t, uint8_t, uint16_t, uint32_t, uint64_t
from libc.string cimport memcpy

import numpy as np

cdef extern from *:
    uint16_t __builtin_bswap16(uint16_t x) nogil
    uint32_t __builtin_bswap32(uint32_t x) nogil
    uint64_t __builtin_bswap64(uint64_t x) nogil

cdef enum:
    MAX_COLS = 64

cdef enum:
    DEDUP_NONE = 0
    DEDUP_HASH = 1      # content hash of the hashed columns
    DEDUP_TRADES = 2    # 0 when the zero column (trade_id) is non-zero, else the content hash

cdef uint64_t _SEED = 0x646D2D6465647570ULL
cdef uint64_t _M1 = 0x9E3779B97F4A7C15ULL
cdef uint64_t _F1 = 0xFF51AFD7ED558CCDULL
cdef uint64_t _F2 = 0xC4CEB9FE1A85EC53ULL


cdef struct Col:
    uint32_t off      # byte offset of the field in the record
    uint8_t size      # 1, 2, 4 or 8 bytes
    uint8_t signed_   # sign-extend (else zero-extend) to i64
    uint8_t width     # 2, 4 or 8 bytes in the tuple (SMALLINT, INTEGER, BIGINT)


cdef inline int64_t _load(const uint8_t *p, Col c) noexcept nogil:
    cdef uint16_t u16
    cdef uint32_t u32
    cdef uint64_t u64
    if c.size == 8:
        memcpy(&u64, p + c.off, 8)
        return <int64_t>u64
    if c.size == 4:
        memcpy(&u32, p + c.off, 4)
        return <int64_t>(<int32_t>u32) if c.signed_ else <int64_t>u32
    if c.size == 2:
        memcpy(&u16, p + c.off, 2)
        return <int64_t>(<int16_t>u16) if c.signed_ else <int64_t>u16
    return <int64_t>(<int8_t>p[c.off]) if c.signed_ else <int64_t>p[c.off]


cdef inline uint8_t *_put(uint8_t *q, int64_t v, uint8_t width) noexcept nogil:
    """i32 length then the value, big-endian, truncated to ``width`` (as numpy's cast)."""
    cdef uint32_t ln = __builtin_bswap32(width)
    cdef uint16_t b16
    cdef uint32_t b32
    cdef uint64_t b64
    memcpy(q, &ln, 4)
    q += 4
    if width == 8:
        b64 = __builtin_bswap64(<uint64_t>v)
        memcpy(q, &b64, 8)
    elif width == 4:
        b32 = __builtin_bswap32(<uint32_t>v)
        memcpy(q, &b32, 4)
    else:
        b16 = __builtin_bswap16(<uint16_t>v)
        memcpy(q, &b16, 2)
    return q + width


cdef class Program:
    """How one table's tuples are made from its records (see the module docstring)."""
    cdef Col cols[MAX_COLS]
    cdef int ncols
    cdef int hashed[MAX_COLS]
    cdef int nhash
    cdef int dedup
    cdef Col zero           # DEDUP_TRADES: the column that zeroes the hash when non-zero
    cdef readonly Py_ssize_t record_size, row_size
    cdef readonly str table
    cdef object row_dtype

    def rows(self, arr):
        """The binary COPY tuples of the 1-d record array ``arr`` (dtype already checked by the
        caller) as an array of ``row_dtype``."""
        cdef Py_ssize_t n = len(arr), stride, i
        cdef int j
        cdef const uint8_t *src
        cdef const uint8_t *p
        cdef uint8_t *q
        cdef uint8_t *dst
        cdef int64_t v
        cdef int64_t vals[MAX_COLS]
        cdef uint64_t h
        cdef uint16_t nf = __builtin_bswap16(<uint16_t>(self.ncols + (1 if self.dedup else 0)))
        if arr.dtype.itemsize != self.record_size or arr.ndim != 1:
            raise ValueError(f"{self.table}: records of {arr.dtype.itemsize} B, the program expects {self.record_size} B")
        out = np.empty(n, dtype=self.row_dtype)
        if n == 0:
            return out
        stride = arr.strides[0]
        src = <const uint8_t *><size_t>arr.__array_interface__["data"][0]
        dst = <uint8_t *><size_t>out.__array_interface__["data"][0]
        with nogil:
            for i in range(n):
                p = src + i * stride
                q = dst + i * self.row_size
                memcpy(q, &nf, 2)
                q += 2
                for j in range(self.ncols):
                    v = _load(p, self.cols[j])
                    vals[j] = v
                    q = _put(q, v, self.cols[j].width)
                if self.dedup:
                    if self.dedup == DEDUP_TRADES and _load(p, self.zero) != 0:
                        h = 0
                    else:
                        h = _SEED
                        for j in range(self.nhash):
                            h = (h ^ <uint64_t>vals[self.hashed[j]]) * _M1
                            h ^= h >> 32
                        h ^= h >> 33
                        h *= _F1
                        h ^= h >> 33
                        h *= _F2
                        h ^= h >> 33
                    _put(q, <int64_t>h, 8)
        return out


def _field_spec(col, dt):
    """(offset, size, signed) of the record field ``col.get`` reads, found by probing; None when
    it is not a plain little-endian integer field of the record."""
    n = dt.itemsize
    ks = np.arange(n)
    probe = []
    for shift in (0, 8):
        a = np.zeros(1, dt)
        a.view(np.uint8)[:] = (ks >> shift) & 0xFF
        v = np.asarray(col.get(a))
        if v.shape != (1,) or v.dtype.kind not in "iu" or v.dtype.itemsize not in (1, 2, 4, 8) \
                or v.dtype.byteorder == ">":
            return None
        probe.append(np.ascontiguousarray(v).view(np.uint8))
    size = probe[0].size
    off = int(probe[0][0]) | int(probe[1][0]) << 8
    want = np.arange(off, off + size)
    if off + size > n or (probe[0] != (want & 0xFF)).any() or (probe[1] != (want >> 8)).any():
        return None
    return off, size, v.dtype.kind == "i"


def make_program(table: str, row_dtype):
    """The ``Program`` of ``table`` whose tuples are ``row_dtype`` (dm.storage.postgres.ROW_DTYPES),
    or None when its columns cannot be made by one (see the module docstring)."""
    cdef Program pr
    cdef int j
    from dm.records import DTYPES
    from dm.storage.base import _DEDUP, COLUMNS, RTYPE_OF

    spec = COLUMNS[table]
    rtype = RTYPE_OF.get(table)
    if rtype is None or rtype not in DTYPES:
        return None
    dt = DTYPES[rtype]
    cols = [c for c in spec if c.get is not None]
    has_dedup = len(spec) > 0 and spec[len(spec) - 1] is _DEDUP  # (no negative indexes: wraparound is off)
    if len(cols) + has_dedup != len(spec) or len(cols) > MAX_COLS:
        return None
    pr = Program()
    pr.table = table
    pr.record_size = dt.itemsize
    pr.row_dtype = np.dtype(row_dtype)
    pr.row_size = pr.row_dtype.itemsize
    pr.ncols = len(cols)
    for j, c in enumerate(cols):
        fs = _field_spec(c, dt)
        if fs is None:
            return None
        pr.cols[j].off, pr.cols[j].size, pr.cols[j].signed_ = fs[0], fs[1], bool(fs[2])
        pr.cols[j].width = c.width
    pr.dedup = DEDUP_NONE
    pr.nhash = 0
    if has_dedup:
        if table == "trades":  # as dm.storage.base.dedup_column
            names = [c.name for c in cols]
            hashed = [names.index(f) for f in ("publisher_id", "price", "size", "side", "sequence")]
            pr.dedup = DEDUP_TRADES
            z = cols[names.index("trade_id")]
            fs = _field_spec(z, dt)
            pr.zero.off, pr.zero.size, pr.zero.signed_, pr.zero.width = fs[0], fs[1], bool(fs[2]), 8
        else:
            hashed = [j for j, c in enumerate(cols) if c.hashed]
            pr.dedup = DEDUP_HASH
        pr.nhash = len(hashed)
        for j, k in enumerate(hashed):
            pr.hashed[j] = k
    if pr.row_size != 2 + sum(4 + c.width for c in spec):
        return None
    return pr
