# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""The worker's frame path in one Cython call per websocket frame (issue 11): picows hands a
complete frame to ``FeedListener.on_ws_frame`` straight from its parser; the frame is decoded by
the venue codec from picows's read buffer (``_Codec.decode_c``: no ``bytes`` object), and its
records go to the channel rings and the persist queue (``Fanout.publish_ptr``) without a
Python frame in between.

Only what needs venue logic leaves C, through ``provider.on_decoded(data, ts_recv, n)`` (the
frame as ``bytes``): kinds in ``provider.book_kinds`` (order books, subscription answers, venue
errors) and frames with values rejected alone (dead letters). A frame the codec refuses is
dead-lettered (``provider.dead.add``) and costs nothing else. Fragmented messages (continuation
frames, RFC 6455 §5.4), close frames and every other control frame go to the Python socket class
mixed in above this one (``dm.providers.base._PicowsSocket``).

Counters (``frames``, ``records``, ``last_frame_ns``: ns since the UNIX epoch) live here while
the connection is up; the provider folds them into its own (``Provider.fold_feed``) for stats,
the watchdog and the state file, so nothing per frame touches a Python attribute.
"""
from cpython.bytes cimport PyBytes_FromStringAndSize
from libc.stdint cimport int64_t, uint8_t, uint64_t

from picows.picows cimport WSFrame, WSListener, WSMsgType, WSTransport

from dm._codec cimport _Codec
from dm._ring cimport Fanout, now_ns

from dm.errors import CodecError


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
            self.on_decoded(PyBytes_FromStringAndSize(p, n), ts, k)
        elif k:
            self.records += <uint64_t>self.fanout.publish_ptr(<const uint8_t*>c.st.out, <size_t>c.st.out_len)
        return 0
