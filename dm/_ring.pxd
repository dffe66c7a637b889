# cython: language_level=3
"""Declarations of dm/_ring.pyx so other Cython modules can cimport the rings and call their
C-level entry points (``ChannelWriter.write_ptr``, ``ChannelReader.next_into``,
``PersistQueue.write_ptr``) without going through Python."""
from libc.stdint cimport int64_t, uint8_t, uint16_t, uint32_t, uint64_t

cdef extern from "dm_atomic.h" nogil:
    uint64_t dm_load_acquire_u64(const uint64_t *p)
    uint64_t dm_load_relaxed_u64(const uint64_t *p)
    void dm_store_release_u64(uint64_t *p, uint64_t v)
    void dm_store_relaxed_u64(uint64_t *p, uint64_t v)
    uint16_t dm_load_relaxed_u16(const uint16_t *p)
    uint32_t dm_load_acquire_u32(const uint32_t *p)
    uint32_t dm_load_relaxed_u32(const uint32_t *p)
    void dm_store_release_u32(uint32_t *p, uint32_t v)
    void dm_store_relaxed_u32(uint32_t *p, uint32_t v)
    int dm_cas_u32(uint32_t *p, uint32_t expected, uint32_t desired)
    int dm_cas_u64(uint64_t *p, uint64_t expected, uint64_t desired)
    uint64_t dm_fetch_add_u64(uint64_t *p, uint64_t v)
    uint32_t dm_fetch_add_u32(uint32_t *p, uint32_t v)
    uint32_t dm_fetch_sub_u32(uint32_t *p, uint32_t v)
    void dm_fence_acquire()
    void dm_fence_release()
    void dm_fence_seq_cst()
    void dm_cpu_relax()
    void dm_prefetch(const void *p)

cpdef uint64_t now_ns() noexcept   # CLOCK_REALTIME ns since the UNIX epoch


# Segment header: the first 4096 bytes of every ring segment; the byte ring follows at offset
# HEADER_BYTES. Positions (tail, head, ...) are u64 byte counts since the ring was created and
# never wrap; the byte index in the ring is `pos & (capacity - 1)`.
# Each field says who writes it and with which ordering. Readers of a channel map the segment
# PROT_READ and never write anything.
cdef struct SegHeader:
    # -- line 0 (0..63): identity. Written once by the creator before `magic`; immutable after.
    uint64_t magic              # creator, release store LAST (a reader seeing it sees the rest)
    uint32_t layout_version     # creator: DM_LAYOUT_VERSION of dm/_records.pxd
    uint32_t layout_hash        # creator: dm.records.LAYOUT_HASH
    uint64_t capacity           # creator: ring bytes (power of two)
    uint64_t created_ns         # creator: CLOCK_REALTIME ns
    uint32_t header_bytes       # creator: offset of the ring (4096)
    uint32_t kind               # creator: 1 channel, 2 persist queue
    # Channel metadata (in what was padding: offsets of every other field unchanged; a segment
    # written before these existed reads meta_flags 0). Creator, before `magic`; immutable after.
    uint32_t instrument_id      # creator (channel): instrument of the records (0: not given)
    uint16_t publisher_id       # creator (channel): dm.records.Publisher (0: not given)
    uint8_t size_precision      # creator (channel): sizes in units of 10**-size_precision
    uint8_t meta_flags          # creator: bit 0 set when the three fields above were written
    uint8_t _pad0[16]
    # -- line 1 (64..127): producer hot fields.
    uint64_t tail_intent        # producer, release store BEFORE copying a frame (channel only)
    uint64_t tail               # producer, release store AFTER the frame is copied
    uint64_t records_written    # producer, relaxed store after `tail` (monotonic record count)
    uint8_t _pad1[40]
    # -- line 2 (128..191): producer seqlock snapshot (channel): read on join / after an overrun.
    uint64_t snap_version       # producer: odd while updating; relaxed+release fence, release
    uint64_t snap_head          # producer: position of the oldest record still intact
    uint64_t snap_head_seq      # producer: record index (0-based) of the record at snap_head
    uint64_t snap_tail          # producer: tail after the write in progress
    uint64_t snap_records       # producer: records written after the write in progress
    uint8_t _pad2[24]
    # -- line 3 (192..255): producer cold fields.
    uint64_t heartbeat_ns       # producer, relaxed store (ChannelWriter.heartbeat / write)
    uint32_t producer_pid       # producer, release store at create / re-open
    uint32_t closed             # producer, release store 1 on graceful close
    uint64_t spool_next_seq     # persist producer: next spool file number (relaxed)
    uint64_t records_spooled    # persist producer: records ever spooled (relaxed)
    uint8_t _pad3[32]
    # -- line 4 (256..319): consumer fields (persist queue only; the consumer maps read-write).
    uint64_t head               # consumer, release store on commit(): committed read position
    uint64_t head_records       # consumer, relaxed store before `head`: records committed
    uint64_t spool_commit       # consumer, release store: (spool seq << 40) | committed offset
    uint32_t consumer_pid       # consumer, release store when it attaches, 0 when it detaches
    uint32_t _pad4a
    uint64_t spool_records_committed  # consumer, relaxed: records committed from spool files
    uint8_t _pad4[24]


# Live bars (dm.bars, issue 10): one slot per (channel, interval, bar start mod BAR_RING), see
# Fanout.set_bar_intervals in dm/_ring.pyx. Order keys are int64 as in dm.bars.
cdef enum:
    BAR_MAX_INTERVALS = 16
    BAR_RING = 4                # bars kept per (channel, interval): a late trade reaches back 3 bars

cdef struct BarSlot:
    int64_t start               # bar start (ts_event of the BAR), INT64_MIN: empty
    int64_t open, high, low, close
    int64_t o_ts, o_ord, c_ts, c_ord   # (ts_event, trade id or sequence) of the open / close trade
    uint64_t volume             # saturated at i64 max
    uint64_t count
    uint64_t o_size, o_seq, o_tid, c_size, c_seq, c_tid  # the open / close trade's dedup fields
    uint8_t o_side, c_side
    uint8_t size_precision
    uint8_t published           # the bar went out on the channel at least once
    uint8_t late                # a trade arrived after it went out (BAR flags: BarFlag.LATE)


cdef class ChanBars:
    cdef BarSlot *slots         # n_intervals * BAR_RING
    cdef int n
    cdef uint16_t pub
    cdef uint32_t iid           # the channel's instrument (BAR header)
    cdef int64_t cur[BAR_MAX_INTERVALS]      # start of the latest bar per interval (INT64_MIN: none)
    cdef int64_t cur_end[BAR_MAX_INTERVALS]  # its end (exclusive)
    cdef BarSlot *cur_slot[BAR_MAX_INTERVALS]


cdef class ChannelWriter:
    cdef SegHeader *hdr
    cdef uint8_t *data
    cdef void *base
    cdef size_t map_len
    cdef uint64_t cap, mask, tail, head, head_seq, records
    cdef readonly str name
    cdef object _ident   # (st_dev, st_ino) of the segment file, to unlink only our own
    cdef int _owner_pid  # creating process: a forked child's copy never closes/unlinks the ring
    cdef ChanBars bars   # live bar state of the Fanout that publishes into it (None: no bars)
    cdef int write_ptr(self, const uint8_t *p, size_t n) except -1
    cdef int write_many_ptr(self, const uint8_t *p, size_t n) except -1
    cdef void _put(self, const uint8_t *p, uint32_t n) noexcept nogil


cdef class ChannelReader:
    cdef const SegHeader *hdr
    cdef const uint8_t *data
    cdef void *base
    cdef size_t map_len
    cdef uint64_t cap, mask, pos, seq, pending_lost
    cdef uint32_t need
    cdef readonly str name
    cdef readonly uint64_t lost_records, lost_bytes, overruns
    cdef object _dtypes
    cdef object _ident      # (st_dev, st_ino) of the mapped segment file
    # close() safety: calls that use the mapping without the GIL (wait) count themselves in
    # _inflight (atomic); close() sets _closing (release store), wakes them and unmaps only
    # when _inflight is 0. Calls that hold the GIL throughout only check `base`.
    cdef uint32_t _inflight
    cdef uint32_t _closing
    cdef int64_t next_into(self, uint8_t *out, size_t outcap) noexcept nogil
    cdef int _resync(self) noexcept nogil
    cdef int _raise_status(self, int64_t st) except -1
    cdef int _check_open(self) except -1
    cdef bint _snapshot(self, uint64_t *h, uint64_t *hs, uint64_t *t, uint64_t *r) noexcept nogil


cdef class PersistQueue:
    cdef SegHeader *hdr
    cdef uint8_t *data
    cdef void *base
    cdef size_t map_len
    cdef uint64_t cap, mask, tail, head_cache, records
    cdef readonly str name
    cdef readonly object spool_dir
    cdef readonly str fsync
    # Spool state. Appends and rotation run on the producer's thread (the event loop);
    # sync() may run on another thread: `_lock` guards _sfd / _unsynced / _dir_dirty.
    cdef int _sfd           # fd of the current spool file (.part), -1 when none is open
    cdef object _spool_path
    cdef double _spool_opened
    cdef object _lock       # threading.Lock
    cdef list _unsynced     # paths of rotated (renamed) spool files not yet fsynced
    cdef bint _dirty        # the current spool fd was written since the last sync
    cdef bint _dir_dirty    # a rename in spool_dir not yet made durable (directory fsync)
    cdef uint8_t *_sbuf     # spill batch: u32 length + record, written with one write(2)
    cdef size_t _sbuf_len, _sbuf_cap
    cdef uint64_t _sbuf_records
    cdef public double spool_max_age_s
    cdef readonly uint64_t records_spooled
    cdef int _owner_pid
    cdef int write_ptr(self, const uint8_t *p, size_t n) except -1
    cdef int write_many_ptr(self, const uint8_t *p, size_t n) except -1
    cdef int _put(self, const uint8_t *p, size_t n) except -1
    cdef int _stage(self, const uint8_t *p, size_t n) except -1
    cdef int _spill_flush(self) except -1


cdef class PersistConsumer:
    cdef SegHeader *hdr
    cdef const uint8_t *data
    cdef void *base
    cdef size_t map_len
    cdef uint64_t cap, mask, rpos, rrecords
    cdef readonly str name
    cdef readonly object spool_dir
    cdef object _sfile      # (seq, path, file object) of the spool file being read, or None
    cdef uint64_t _soff     # read offset in that spool file
    cdef uint64_t _sfloor   # spool files below this seq were read to the end by this consumer
    cdef bint _turn         # alternates queue-first / spool-first between read_batch calls
    cdef double _next_orphan_check  # monotonic s: next look for a dead producer's .part files
    cdef int _check_open(self) except -1


cdef class Fanout:
    cdef PersistQueue queue
    cdef dict channels
    cdef uint32_t _last_id
    cdef ChannelWriter _last
    cdef int _nbar                            # intervals of live bars (0: off)
    cdef int64_t _steps[BAR_MAX_INTERVALS]    # their lengths, ns
    cdef uint32_t _ivs[BAR_MAX_INTERVALS]     # their lengths, s
    cdef int64_t _grace                       # ns after a bar's end before the timer closes it
    cdef int64_t _max_ts                      # latest channel record ts_event seen (the venue clock)
    cdef int64_t _seen_ts, _seen_wall         # (_max_ts, wall ns) when close_bars last saw it move
    cdef readonly uint64_t bars_published, bars_late, bars_dropped
    cdef int64_t publish_ptr(self, const uint8_t *p, size_t n) except -1
    cdef void _bar_trade(self, ChannelWriter w, const uint8_t *p) noexcept
    cdef void _bar_emit(self, ChannelWriter w, BarSlot *s, int i) noexcept
