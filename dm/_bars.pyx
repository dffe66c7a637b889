# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""One pass of ``dm.bars.build_bars`` in C: the bars of one publisher's trades for one interval.

The persister builds bars from every batch of trades it stores; numpy needs about 25 array
passes per interval (reduceat, fancy indexing, concatenation), which for 1s bars of sparse
trades cost more than storing the trades. Here: one loop over the sorted trades per interval.
"""
import numpy as np

from libc.stdint cimport int64_t, uint64_t

cdef int64_t I64_MAX = 0x7FFFFFFFFFFFFFFF

#: column order of the arrays ``aggregate`` returns (``dm.bars.BUILT_COLUMNS`` minus the constant
#: publisher_id and interval_s)
COLUMNS = ("instrument_id", "ts_event", "open", "high", "low", "close", "volume", "count", "size_precision",
           "open_ts", "open_ord", "open_dd", "close_ts", "close_ord", "close_dd")


def aggregate(const int64_t[::1] iid, const int64_t[::1] ts, const int64_t[::1] ordk, const int64_t[::1] dd,
              const int64_t[::1] px, const uint64_t[::1] sz, const int64_t[::1] sp, int64_t interval_s):
    """Bars of ``interval_s`` seconds over trades sorted by (instrument, ts_event, venue order,
    dedup) (all arrays of one length n): a dict of int64 arrays (``COLUMNS``), one element per
    (instrument, bar start) in that order. open/close = first/last trade, volume = sum of sizes
    saturated at i64 max. Bar start = ts_event floored to the interval (numpy's floor semantics,
    also for negative int64). Raises ``ValueError`` for interval_s < 1."""
    cdef Py_ssize_t n = ts.shape[0], j, k = -1
    cdef int64_t step, t, r, st, cur_iid = 0, cur_st = 0, p
    cdef uint64_t s
    if interval_s < 1:
        raise ValueError(f"interval_s must be >= 1, got {interval_s}")
    if not (iid.shape[0] == ordk.shape[0] == dd.shape[0] == px.shape[0] == sz.shape[0] == sp.shape[0] == n):
        raise ValueError("aggregate: arrays of different lengths")
    step = interval_s * 1_000_000_000
    out = np.empty((len(COLUMNS), n), np.int64)
    cdef int64_t[:, ::1] o = out
    for j in range(n):
        t = ts[j]
        r = t % step
        if r < 0:
            r += step
        st = t - r
        p = px[j]
        s = sz[j]
        if k < 0 or iid[j] != cur_iid or st != cur_st:
            k += 1
            cur_iid = iid[j]
            cur_st = st
            o[0, k] = cur_iid
            o[1, k] = st
            o[2, k] = p
            o[3, k] = p
            o[4, k] = p
            o[5, k] = p
            o[6, k] = <int64_t>s if s <= <uint64_t>I64_MAX else I64_MAX
            o[7, k] = 1
            o[8, k] = sp[j]
            o[9, k] = t
            o[10, k] = ordk[j]
            o[11, k] = dd[j]
            o[12, k] = t
            o[13, k] = ordk[j]
            o[14, k] = dd[j]
        else:
            if p > o[3, k]:
                o[3, k] = p
            if p < o[4, k]:
                o[4, k] = p
            o[5, k] = p
            if s > <uint64_t>(I64_MAX - o[6, k]):
                o[6, k] = I64_MAX
            else:
                o[6, k] += <int64_t>s
            o[7, k] += 1
            o[12, k] = t
            o[13, k] = ordk[j]
            o[14, k] = dd[j]
    return {c: out[i, :k + 1] for i, c in enumerate(COLUMNS)}
