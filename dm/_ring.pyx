# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""Shared-memory rings (DESIGN.md section 3): broadcast channel rings, the lossless persist queue
with its disk spool, and the POSIX shm segments under both.

Segments are POSIX shm objects (``/dev/shm/<name without the leading slash>``) created by their
single writer with ``O_CREAT|O_EXCL`` and mode 0640, a 4096-byte header (``SegHeader`` in
``dm/_ring.pxd``) followed by a power-of-two byte ring. Channel readers map them ``PROT_READ``.

Frames in a ring are dm records, each starting with the 16-byte record header whose byte 0 is
the record length in 4-byte words; each frame starts 8-byte aligned (a record of n bytes takes
``(n + 7) & ~7`` ring bytes). A frame never wraps: when the next record does not fit before the
end of the ring, the writer fills the rest with a padding frame (rtype 0xFF, length = the gap).

Channel ring protocol (single producer, any number of readers; the idea of Aeron's broadcast
buffer and the LMAX Disruptor's seqlock validation):

* writer: advance the oldest-record snapshot (seqlock), store ``tail_intent`` = end of the new
  frame(s), release fence, copy the frame, store ``tail`` (release). It never waits for readers.
* reader: load ``tail`` (acquire); copy the frame at its position; acquire fence; load
  ``tail_intent``. If ``tail_intent - capacity > position`` the writer may have overwritten the
  frame while it was copied: the copy is discarded, never returned (no torn record), and the
  reader resumes at the oldest record still held, counting exactly how many records (and ring
  bytes) it lost (an *overrun*).

Persist queue protocol (single producer, single consumer, lossless): the producer writes only
into space the consumer has committed (``head``); when the ring is full it appends the record to
a spool file in ``spool_dir`` instead (``<segment>.<seq>.spool.part`` while open, renamed to
``.spool`` when closed). The consumer reads the queue, then closed spool files, and commits its
position explicitly after its database commit.
"""
import os
import threading
import time
from pathlib import Path

import numpy as np

from dm.errors import ClosedError, LayoutMismatchError, ProducerGoneError, RingError, SegmentInUseError

from cpython.buffer cimport PyBUF_SIMPLE, PyBUF_WRITABLE, PyBuffer_Release, PyObject_GetBuffer
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from libc.errno cimport EEXIST, EINTR, ENOENT, EPERM, ESRCH, errno
from libc.stdlib cimport calloc, free, realloc
from libc.stdint cimport int64_t, uint8_t, uint16_t, uint32_t, uint64_t
from libc.string cimport memcpy, memset
from posix.fcntl cimport O_CREAT, O_EXCL, O_RDONLY, O_RDWR
from posix.mman cimport (MAP_FAILED, MAP_POPULATE, MAP_SHARED, PROT_READ, PROT_WRITE, mmap,
                         munmap, shm_open, shm_unlink)
from posix.signal cimport kill
from posix.stat cimport fchmod, fstat, struct_stat
from posix.time cimport CLOCK_MONOTONIC, CLOCK_REALTIME, clock_gettime, nanosleep, timespec
from posix.unistd cimport close as c_close, ftruncate, getpid, write as c_write

from dm._records cimport (DM_LAYOUT_VERSION, FLAG_SNAPSHOT, RTYPE_BAR, RTYPE_TRADE, BarRecord,
                         TradeRecord)

cdef extern from "<sched.h>" nogil:
    int sched_yield()

cdef extern from *:
    """
    #define DM_HEADER_BYTES 4096
    #define DM_MAGIC_CHANNEL 0x314E4843474E5244ULL  /* "DRNGCHN1" little-endian */
    #define DM_MAGIC_PERSIST 0x3151525047524E44ULL  /* "DNRGPRQ1" little-endian */
    """
    uint64_t DM_HEADER_BYTES
    uint64_t DM_MAGIC_CHANNEL
    uint64_t DM_MAGIC_PERSIST

DEF PAD_RTYPE = 0xFF
DEF MIN_RECORD = 16          # the record header
DEF MAX_RECORD = 1020        # 255 words
DEF ST_TOO_SMALL = -1
DEF ST_CORRUPT = -2
DEF ST_STUCK = -3
DEF KIND_CHANNEL = 1
DEF KIND_PERSIST = 2
DEF SPOOL_OFF_BITS = 40

HEADER_BYTES = 4096
MIN_CAPACITY = 4096
MAX_CAPACITY = 1 << 40
STALE_CREATE_S = 5.0   # an uninitialised segment older than this is debris of a crashed creator



# ----------------------------------------------------------------------------------------- time

cpdef uint64_t now_ns() noexcept:
    """CLOCK_REALTIME in ns since the UNIX epoch (the clock of ``ts_recv``)."""
    cdef timespec ts
    clock_gettime(CLOCK_REALTIME, &ts)
    return <uint64_t>ts.tv_sec * 1000000000ULL + <uint64_t>ts.tv_nsec


cdef inline uint64_t _mono_ns() noexcept nogil:
    cdef timespec ts
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return <uint64_t>ts.tv_sec * 1000000000ULL + <uint64_t>ts.tv_nsec


cdef inline uint64_t _real_ns() noexcept nogil:
    cdef timespec ts
    clock_gettime(CLOCK_REALTIME, &ts)
    return <uint64_t>ts.tv_sec * 1000000000ULL + <uint64_t>ts.tv_nsec


cdef void _sleep_ns(uint64_t ns) noexcept nogil:
    cdef timespec ts
    ts.tv_sec = ns // 1000000000ULL
    ts.tv_nsec = ns % 1000000000ULL
    nanosleep(&ts, NULL)


# -------------------------------------------------------------------------------- processes

def pid_alive(int pid) -> bool:
    """True when process ``pid`` exists and is not a zombie (0 and negative pids are not alive)."""
    if pid <= 0:
        return False
    if kill(pid, 0) != 0 and errno != EPERM:
        return False
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
        return stat[stat.rindex(b")") + 2:stat.rindex(b")") + 3] != b"Z"
    except (OSError, ValueError):
        return True


# --------------------------------------------------------------------------------- segments

cdef bytes _bname(name):
    if not isinstance(name, str) or len(name) < 2 or name[0] != "/" or "/" in name[1:] or len(name) > 250:
        raise RingError(f"bad shm segment name {name!r}: must be '/' followed by 1-249 chars without '/'")
    return name.encode()


def _shm_path(name: str) -> str:
    return "/dev/shm/" + name[1:]


def segment_exists(name: str) -> bool:
    """True when the POSIX shm segment ``name`` (e.g. ``"/dm.demo.BINANCE.BTCUSD"``) exists."""
    _bname(name)
    return os.path.exists(_shm_path(name))


cdef bint _shm_unlink(str name) except -1:
    cdef bytes b = _bname(name)
    if shm_unlink(b) == 0:
        return True
    if errno == ENOENT:
        return False
    raise RingError(f"{name}: shm_unlink failed: {os.strerror(errno)}")


def unlink_segment(name: str, bint force=False) -> bool:
    """Remove the shm segment ``name``; True when this call removed it.

    Returns False, removing nothing, when the segment does not exist, or (unless ``force``)
    when it is a dm channel ring or persist queue whose producer process is alive and is not
    this process, or one being created right now: a live segment is never removed under its
    writer (so a new supervisor cannot delete the channels of orphaned children).
    ``segment_info(name)`` tells which case it was. Processes that have the segment mapped keep
    their mapping. Raises ``RingError`` on any other failure."""
    _bname(name)
    if force:
        return _shm_unlink(name)
    state, ident, pid, _ = _inspect(name)
    if state == "gone":
        return False
    if state == "creating" or (state == "live" and pid != <uint32_t>getpid()):
        return False  # being created, or its writer lives
    return _unlink_if_same(name, ident)


def segment_info(name: str):
    """What the shm segment ``name`` is, without changing it: ``None`` when it does not exist,
    else a dict ``{"kind": "channel" | "persist" | "other", "state": ..., "producer_pid": int}``
    with state ``"live"`` (producer alive), ``"closed"`` (closed gracefully), ``"dead"``
    (producer pid gone), ``"creating"`` (being initialised) or ``"other"`` (not a dm ring).
    Raises ``RingError`` when it exists but cannot be opened."""
    state, ident, pid, magic = _inspect(name)
    if state == "gone":
        return None
    kind = {DM_MAGIC_CHANNEL: "channel", DM_MAGIC_PERSIST: "persist"}.get(magic, "other")
    if state == "stale":
        state = "dead"  # debris of a creator that crashed before initialising it
    elif state == "foreign":
        state = "other"
    return {"kind": kind, "state": state, "producer_pid": pid}


cdef void *_mmap_fd(int fd, size_t length, bint writable, str name) except NULL:
    cdef int prot = PROT_READ | (PROT_WRITE if writable else 0)
    cdef void *p = mmap(NULL, length, prot, MAP_SHARED | MAP_POPULATE, fd, 0)
    if p == MAP_FAILED:
        raise RingError(f"{name}: mmap of {length} bytes failed: {os.strerror(errno)}")
    return p


cdef int _check_capacity(uint64_t capacity, str name) except -1:
    if capacity < MIN_CAPACITY or capacity > MAX_CAPACITY or (capacity & (capacity - 1)) != 0:
        raise RingError(f"{name}: capacity {capacity} must be a power of two in [{MIN_CAPACITY}, 2**40]")
    return 0


def _classify_existing(name: str, uint64_t magic):
    """Look at an existing segment: returns (state, ident, producer pid) with state "stale"
    (producer closed or dead, or debris of a crashed creator), "live" (producer alive),
    "creating", "gone" (vanished) or "foreign" (not a dm segment of this kind)."""
    state, ident, pid, m = _inspect(name)
    if state in ("closed", "dead"):
        state = "stale"
    if state in ("live", "stale") and m != magic:
        state = "foreign"
    return state, ident, pid


def _inspect(name: str):
    """(state, ident, producer pid, magic) of an existing segment; state "gone", "creating",
    "stale" (never initialised, older than STALE_CREATE_S), "closed", "dead", "live", or
    "foreign" (not a dm ring of either kind)."""
    cdef bytes b = _bname(name)
    cdef int fd = shm_open(b, O_RDONLY, 0)
    cdef struct_stat st
    cdef void *p
    cdef const SegHeader *h
    cdef uint64_t m
    cdef uint32_t pid, closed
    if fd < 0:
        if errno == ENOENT:
            return "gone", None, 0, 0
        raise RingError(f"{name}: cannot open existing segment: {os.strerror(errno)}")
    try:
        fstat(fd, &st)
        ident = (st.st_dev, st.st_ino)
        age = time.time() - st.st_ctime
        if <uint64_t>st.st_size < DM_HEADER_BYTES:
            return ("stale" if age > STALE_CREATE_S else "creating"), ident, 0, 0
        p = _mmap_fd(fd, DM_HEADER_BYTES, False, name)
    finally:
        c_close(fd)
    h = <const SegHeader *>p
    m = dm_load_acquire_u64(&h.magic)
    pid = dm_load_acquire_u32(&h.producer_pid)
    closed = dm_load_acquire_u32(&h.closed)
    munmap(p, DM_HEADER_BYTES)
    if m == 0:
        return ("stale" if age > STALE_CREATE_S else "creating"), ident, 0, 0
    if m != DM_MAGIC_CHANNEL and m != DM_MAGIC_PERSIST:
        return "foreign", ident, 0, m
    if closed:
        return "closed", ident, pid, m
    if not pid_alive(pid):
        return "dead", ident, pid, m
    return "live", ident, pid, m


def _unlink_if_same(name: str, ident) -> bool:
    """Unlink ``name`` only if it is still the file ``ident`` (st_dev, st_ino)."""
    try:
        st = os.stat(_shm_path(name))
    except FileNotFoundError:
        return False
    if ident is not None and (st.st_dev, st.st_ino) != tuple(ident):
        return False
    return _shm_unlink(name)


cdef int _create_excl(str name, uint64_t total) except -2:
    """shm_open(O_CREAT|O_EXCL, 0640) + ftruncate; returns the fd or -1 when it exists."""
    cdef bytes b = _bname(name)
    cdef int fd = shm_open(b, O_RDWR | O_CREAT | O_EXCL, 0o640)
    if fd < 0:
        if errno == EEXIST:
            return -1
        raise RingError(f"{name}: shm_open(O_CREAT|O_EXCL) failed: {os.strerror(errno)}")
    if fchmod(fd, 0o640) != 0 or ftruncate(fd, total) != 0:
        err = os.strerror(errno)
        c_close(fd)
        shm_unlink(b)
        raise RingError(f"{name}: cannot size segment to {total} bytes: {err}")
    return fd


cdef void _init_header(SegHeader *h, uint64_t capacity, uint32_t layout_hash, uint32_t kind) noexcept:
    cdef uint64_t t = _real_ns()
    h.layout_version = DM_LAYOUT_VERSION
    h.layout_hash = layout_hash
    h.capacity = capacity
    h.created_ns = t
    h.header_bytes = <uint32_t>DM_HEADER_BYTES
    h.kind = kind
    dm_store_relaxed_u64(&h.heartbeat_ns, t)
    dm_store_release_u32(&h.producer_pid, <uint32_t>getpid())


cdef int _check_layout(const SegHeader *h, uint32_t layout_hash, str name) except -1:
    if h.layout_version != <uint32_t>DM_LAYOUT_VERSION or h.layout_hash != layout_hash:
        raise LayoutMismatchError(
            f"{name}: segment has record layout version {h.layout_version} hash {h.layout_hash:#010x}, "
            f"this process expects version {DM_LAYOUT_VERSION} hash {layout_hash:#010x}; "
            "restart the producer with the same dm version"
        )
    return 0


cdef object _open_existing(str name, bint writable, uint64_t magic, str what):
    """Open and map a whole existing segment; waits up to 0.5 s for a creator to finish.
    Returns (address, map_len, (st_dev, st_ino)). Raises RingError."""
    cdef bytes b = _bname(name)
    cdef int fd
    cdef struct_stat st
    cdef void *p = NULL
    cdef const SegHeader *h
    cdef uint64_t m, cap
    deadline = time.monotonic() + 0.5
    while True:
        fd = shm_open(b, O_RDWR if writable else O_RDONLY, 0)
        if fd < 0:
            if errno == ENOENT:
                raise RingError(f"{name}: no such {what} segment (is its producer running?)")
            raise RingError(f"{name}: cannot open {what} segment: {os.strerror(errno)}")
        try:
            fstat(fd, &st)
            ident = (st.st_dev, st.st_ino)
            if <uint64_t>st.st_size >= DM_HEADER_BYTES:
                p = _mmap_fd(fd, st.st_size, writable, name)
                h = <const SegHeader *>p
                m = dm_load_acquire_u64(&h.magic)
                if m != 0:
                    cap = h.capacity
                    if m != magic:
                        munmap(p, st.st_size)
                        raise RingError(f"{name}: not a dm {what} segment (magic {m:#x})")
                    if cap + DM_HEADER_BYTES != <uint64_t>st.st_size:
                        munmap(p, st.st_size)
                        raise RingError(f"{name}: size {st.st_size} does not match capacity {cap}")
                    return <size_t>p, <size_t>st.st_size, ident
                munmap(p, st.st_size)
                p = NULL
        finally:
            c_close(fd)
        if time.monotonic() > deadline:
            raise RingError(f"{name}: segment exists but was never initialised by its creator")
        time.sleep(0.001)


cdef str _producer_state(const SegHeader *h, double stale_after_s):
    # Every header field is read before pid_alive, which does file I/O (releases the GIL: a
    # thread may close the reader and unmap `h` meanwhile).
    cdef uint32_t closed = dm_load_acquire_u32(&h.closed)
    cdef uint32_t pid = dm_load_acquire_u32(&h.producer_pid)
    cdef uint64_t hb = dm_load_relaxed_u64(&h.heartbeat_ns)
    cdef uint64_t now = _real_ns()
    if closed:
        return "closed"
    if not pid_alive(pid):
        return "dead"
    if now > hb and <double>(now - hb) > stale_after_s * 1e9:
        return "stale"
    return "live"


cdef inline int _valid_record(const uint8_t *p, size_t n) noexcept nogil:
    return (n >= MIN_RECORD and n <= MAX_RECORD and (n & 3) == 0
            and <size_t>p[0] * 4 == n and p[1] != PAD_RTYPE)


cdef str _bad_record(const uint8_t *p, size_t n):
    if n < MIN_RECORD:
        return f"record of {n} bytes is shorter than the 16-byte record header"
    if n > MAX_RECORD or n & 3:
        return f"record of {n} bytes: length must be a multiple of 4 up to {MAX_RECORD}"
    if p[1] == PAD_RTYPE:
        return "rtype 0xFF is reserved for the ring's padding frame"
    return f"record header length {p[0]} words ({p[0] * 4} bytes) != buffer length {n}"


# ------------------------------------------------------------------------------ channel ring

cdef class ChannelWriter:
    """The single producer of a broadcast channel ring (one per symbol).

    ``ChannelWriter(name, capacity, layout_hash, *, instrument_id=0, size_precision=9,
    publisher_id=0)`` creates the shm segment ``name`` (e.g. ``"/dm.demo.BINANCE.BTCUSD"``)
    with ``capacity`` ring bytes (a power of two >= 4096) and ``layout_hash``
    (``dm.records.LAYOUT_HASH``) in its header. ``instrument_id`` (u32, 0: not given),
    ``size_precision`` (0..18: the records' sizes are in units of 10**-size_precision) and
    ``publisher_id`` (u16, ``dm.records.Publisher``) go into the header so a reader knows them
    before the first record. A segment of the same name left by a closed or dead producer is
    replaced; one whose producer is alive raises ``SegmentInUseError`` (a ``RingError``)
    naming its pid. ``write`` never blocks: slow readers are overrun (they are told how much
    they lost). Raises ``ValueError`` for a size_precision outside 0..18.
    """

    def __cinit__(self, str name, uint64_t capacity, uint32_t layout_hash, *,
                  uint32_t instrument_id=0, int size_precision=9, uint16_t publisher_id=0):
        cdef int fd = -1
        self.base = NULL
        self.name = name
        if size_precision < 0 or size_precision > 18:
            raise ValueError(f"{name}: size_precision {size_precision} is not in 0..18")
        _check_capacity(capacity, name)
        for _ in range(5):
            fd = _create_excl(name, DM_HEADER_BYTES + capacity)
            if fd >= 0:
                break
            state, ident, pid = _classify_existing(name, DM_MAGIC_CHANNEL)
            if state == "stale":
                _unlink_if_same(name, ident)
            elif state == "live":
                raise SegmentInUseError(f"{name}: channel exists and its producer (pid {pid}) is alive", pid)
            elif state == "foreign":
                raise RingError(f"{name}: segment exists and is not a dm channel ring")
            elif state == "creating":
                time.sleep(0.01)
        if fd < 0:
            raise RingError(f"{name}: could not create segment (another creator keeps racing)")
        try:
            st = os.fstat(fd)
            self._ident = (st.st_dev, st.st_ino)
            self.map_len = DM_HEADER_BYTES + capacity
            self.base = _mmap_fd(fd, self.map_len, True, name)
        except BaseException:
            shm_unlink(_bname(name))
            raise
        finally:
            c_close(fd)
        self.hdr = <SegHeader *>self.base
        self.data = <uint8_t *>self.base + DM_HEADER_BYTES
        self.cap = capacity
        self.mask = capacity - 1
        self.tail = self.head = self.head_seq = self.records = 0
        self._owner_pid = getpid()
        _init_header(self.hdr, capacity, layout_hash, KIND_CHANNEL)
        self.hdr.instrument_id = instrument_id
        self.hdr.publisher_id = publisher_id
        self.hdr.size_precision = <uint8_t>size_precision
        self.hdr.meta_flags = 1
        dm_store_release_u64(&self.hdr.magic, DM_MAGIC_CHANNEL)

    def __dealloc__(self):
        if self.base != NULL:
            if getpid() == self._owner_pid:  # a forked child's copy must not close our ring
                dm_store_release_u32(&self.hdr.closed, 1)
            munmap(self.base, self.map_len)
            self.base = NULL

    cdef void _put(self, const uint8_t *p, uint32_t n) noexcept nogil:
        """Append one validated record (16 <= n <= 1020, n % 4 == 0). Never blocks."""
        cdef SegHeader *h = self.hdr
        cdef uint8_t *data = self.data
        cdef uint64_t fsz = (n + 7) & ~(<uint64_t>7)
        cdef uint64_t idx = self.tail & self.mask
        cdef uint64_t pad = 0
        cdef uint64_t end, hsz, v
        cdef const uint8_t *hp
        if idx + fsz > self.cap:
            pad = self.cap - idx
        end = self.tail + pad + fsz
        # Retire the frames this write overwrites: the oldest intact record moves forward.
        while self.head + self.cap < end:
            hp = data + (self.head & self.mask)
            hsz = ((<uint64_t>hp[0] << 2) + 7) & ~(<uint64_t>7)
            if hsz == 0:  # cannot happen (only this writer writes); never loop forever
                self.head = end - self.cap
                break
            if hp[1] != PAD_RTYPE:
                self.head_seq += 1
            self.head += hsz
        # Seqlock snapshot for joiners and lapped readers, published before tail_intent.
        v = h.snap_version
        dm_store_relaxed_u64(&h.snap_version, v + 1)
        dm_fence_release()
        dm_store_relaxed_u64(&h.snap_head, self.head)
        dm_store_relaxed_u64(&h.snap_head_seq, self.head_seq)
        dm_store_relaxed_u64(&h.snap_tail, end)
        dm_store_relaxed_u64(&h.snap_records, self.records + 1)
        dm_store_release_u64(&h.snap_version, v + 2)
        # Claim the bytes, store-store fence, copy, publish.
        dm_store_release_u64(&h.tail_intent, end)
        dm_fence_release()
        if pad:
            data[idx] = <uint8_t>(pad >> 2)
            data[idx + 1] = PAD_RTYPE
            idx = 0
        memcpy(data + idx, p, n)
        self.records += 1
        self.tail = end
        dm_store_release_u64(&h.tail, end)
        dm_store_relaxed_u64(&h.records_written, self.records)

    cdef int write_ptr(self, const uint8_t *p, size_t n) except -1:
        """C entry point: validate and append one record; raises RingError."""
        if self.base == NULL:
            raise ClosedError(f"{self.name}: writer is closed")
        if not _valid_record(p, n):
            raise RingError(f"{self.name}: {_bad_record(p, n)}")
        self._put(p, <uint32_t>n)
        return 0

    cdef int write_many_ptr(self, const uint8_t *p, size_t n) except -1:
        cdef size_t off = 0, rl
        if self.base == NULL:
            raise ClosedError(f"{self.name}: writer is closed")
        while off < n:  # validate everything first: a malformed buffer writes nothing
            rl = <size_t>p[off] * 4 if n - off >= 1 else 0
            if rl == 0 or off + rl > n or not _valid_record(p + off, rl):
                raise RingError(f"{self.name}: at byte {off}: {_bad_record(p + off, min(rl, n - off) if rl else n - off)}")
            off += rl
        off = 0
        while off < n:
            rl = <size_t>p[off] * 4
            self._put(p + off, <uint32_t>rl)
            off += rl
        return 0

    def write(self, record):
        """Append one record (bytes-like, length == header byte 0 x 4, 16..1020 bytes, rtype
        != 0xFF). Never blocks. Raises ``RingError`` if malformed, ``ClosedError`` if the writer
        is closed."""
        cdef Py_buffer view
        if type(record) is bytes:
            self.write_ptr(<const uint8_t *>PyBytes_AS_STRING(record), PyBytes_GET_SIZE(record))
            return
        PyObject_GetBuffer(record, &view, PyBUF_SIMPLE)
        try:
            self.write_ptr(<const uint8_t *>view.buf, view.len)
        finally:
            PyBuffer_Release(&view)

    def write_many(self, buf) -> int:
        """Append concatenated records; returns how many. All are validated before any is
        written (``RingError`` names the byte offset of the first malformed one)."""
        cdef Py_buffer view
        cdef size_t off = 0, k = 0
        PyObject_GetBuffer(buf, &view, PyBUF_SIMPLE)
        try:
            self.write_many_ptr(<const uint8_t *>view.buf, view.len)
            while off < <size_t>view.len:
                off += (<const uint8_t *>view.buf)[off] * 4
                k += 1
        finally:
            PyBuffer_Release(&view)
        return k

    def heartbeat(self):
        """Store the current CLOCK_REALTIME ns as the producer heartbeat (call every ~1 s)."""
        if self.base != NULL:
            dm_store_relaxed_u64(&self.hdr.heartbeat_ns, _real_ns())

    def close(self, bint unlink=True):
        """Set the closed flag (readers then report ``"closed"``), unmap, and unlink the segment
        if ``unlink`` and it is still ours. Idempotent."""
        if self.base != NULL:
            if getpid() == self._owner_pid:
                dm_store_relaxed_u64(&self.hdr.heartbeat_ns, _real_ns())
                dm_store_release_u32(&self.hdr.closed, 1)
            munmap(self.base, self.map_len)
            self.base = NULL
            self.hdr = NULL
            self.data = NULL
            if unlink and getpid() == self._owner_pid:
                _unlink_if_same(self.name, self._ident)

    @property
    def capacity(self) -> int:
        return self.cap

    @property
    def records_written(self) -> int:
        return self.records

    @property
    def tail(self) -> int:
        """Ring position (bytes since creation) after the last frame written."""
        return self.tail

    @property
    def closed(self) -> bool:
        return self.base == NULL

    @property
    def instrument_id(self) -> int:
        """Header metadata given at creation (0: not given)."""
        if self.base == NULL:
            raise ClosedError(f"{self.name}: writer is closed")
        return self.hdr.instrument_id

    @property
    def size_precision(self) -> int:
        if self.base == NULL:
            raise ClosedError(f"{self.name}: writer is closed")
        return self.hdr.size_precision

    @property
    def publisher_id(self) -> int:
        if self.base == NULL:
            raise ClosedError(f"{self.name}: writer is closed")
        return self.hdr.publisher_id

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __repr__(self):
        return f"<ChannelWriter {self.name} capacity={self.cap} records={self.records}>"


cdef int _wait_tail(const SegHeader *h, uint64_t pos, uint64_t deadline, long spin, long yields,
                    const uint32_t *closing) noexcept nogil:
    """1 when tail moved past ``pos``; 0 on timeout or closed producer with nothing new; -1 when
    ``*closing`` became non-zero (the reader is being closed: stop touching ``h`` at once)."""
    cdef uint64_t sleep_ns = 20000
    cdef long i = 0
    while True:
        if dm_load_acquire_u32(closing):
            return -1
        if <int64_t>(dm_load_acquire_u64(&h.tail) - pos) > 0:
            return 1
        if i < spin:
            dm_cpu_relax()
        elif i < spin + yields:
            sched_yield()
        else:
            if dm_load_acquire_u32(&h.closed):
                return 1 if <int64_t>(dm_load_acquire_u64(&h.tail) - pos) > 0 else 0
            if deadline and _mono_ns() >= deadline:
                return 0
            _sleep_ns(sleep_ns)
            if sleep_ns < 1000000:
                sleep_ns *= 2
        i += 1
        if deadline and (i & 1023) == 0 and _mono_ns() >= deadline:
            return 0


cdef class ChannelReader:
    """A reader of a channel ring, mapped read-only (it cannot modify the segment).

    ``ChannelReader(name, layout_hash, start="oldest")``: ``start="oldest"`` joins at the oldest
    record still held (replay the ring: snapshot + deltas), ``"newest"`` only sees records written
    after joining, ``"first"`` as ``"oldest"`` but the records the producer wrote before the
    oldest one held count as lost (an overrun: ``take_overrun``), as for a reader that must
    see every record of a new producer. Raises ``RingError`` when the segment is missing or not a channel ring, and
    ``LayoutMismatchError`` when it was written with another layout version or hash.

    Records are returned whole or not at all (never torn). When the writer laps the reader, the
    reader resumes at the oldest record still held and counts the loss: ``lost_records`` (exact),
    ``lost_bytes`` (ring bytes skipped, including padding and alignment), ``overruns`` (events),
    ``take_overrun()`` (records lost since the last call).

    Closing: every method of a closed reader raises ``ClosedError`` (a ``RingError``), never
    touching the unmapped segment. ``close()`` may be called from another thread while one is
    blocked in ``wait()`` (which releases the GIL): the waiter wakes within one poll interval
    (<= 1 ms) and raises ``ClosedError``; the segment is unmapped only after it left.

    Header metadata (from the writer, readable before any record): ``instrument_id``,
    ``size_precision``, ``publisher_id`` (``None`` for a segment whose writer predates them).
    """

    def __cinit__(self, str name, uint32_t layout_hash, str start="oldest"):
        cdef uint64_t h, hs, t, r
        self.base = NULL
        self.name = name
        self._inflight = 0
        self._closing = 0
        if start not in ("oldest", "newest", "first"):
            raise ValueError(f"start must be 'oldest', 'newest' or 'first', not {start!r}")
        addr, self.map_len, self._ident = _open_existing(name, False, DM_MAGIC_CHANNEL, "channel")
        self.base = <void *><size_t>addr
        self.hdr = <const SegHeader *>self.base
        self.data = <const uint8_t *>self.base + DM_HEADER_BYTES
        _check_layout(self.hdr, layout_hash, name)
        self.cap = self.hdr.capacity
        self.mask = self.cap - 1
        self.lost_records = self.lost_bytes = self.overruns = self.pending_lost = 0
        if not self._snapshot(&h, &hs, &t, &r):
            raise ProducerGoneError(f"{name}: producer died while updating the ring header")
        if start == "newest":
            self.pos, self.seq = t, r
        else:
            self.pos, self.seq = h, hs
            if start == "first" and hs:  # the records before the oldest held count as lost
                self.lost_records = self.pending_lost = hs
                self.lost_bytes = h
                self.overruns = 1
        from dm.records import DTYPES
        self._dtypes = {int(k): v for k, v in DTYPES.items()}

    def __dealloc__(self):
        if self.base != NULL:
            munmap(self.base, self.map_len)
            self.base = NULL

    cdef bint _snapshot(self, uint64_t *h, uint64_t *hs, uint64_t *t, uint64_t *r) noexcept nogil:
        """Seqlock read of (oldest position, its record index, tail, records). False if stuck."""
        cdef const SegHeader *hd = self.hdr
        cdef uint64_t v1, v2
        cdef long spins = 0
        while spins < 20000000:
            v1 = dm_load_acquire_u64(&hd.snap_version)
            if v1 & 1:
                spins += 1
                dm_cpu_relax()
                continue
            h[0] = dm_load_relaxed_u64(&hd.snap_head)
            hs[0] = dm_load_relaxed_u64(&hd.snap_head_seq)
            t[0] = dm_load_relaxed_u64(&hd.snap_tail)
            r[0] = dm_load_relaxed_u64(&hd.snap_records)
            dm_fence_acquire()
            v2 = dm_load_relaxed_u64(&hd.snap_version)
            if v1 == v2:
                return True
            spins += 1
        return False

    cdef int _resync(self) noexcept nogil:
        """After an overrun: jump to the oldest record still held, account the loss exactly."""
        cdef uint64_t h, hs, t, r, lost
        cdef long tries = 0
        while tries < 1000000:
            if not self._snapshot(&h, &hs, &t, &r):
                return ST_STUCK
            if <int64_t>(h - self.pos) > 0:
                lost = hs - self.seq
                self.lost_records += lost
                self.pending_lost += lost
                self.lost_bytes += h - self.pos
                self.overruns += 1
                self.pos = h
                self.seq = hs
                return 0
            tries += 1
            dm_cpu_relax()
        return ST_STUCK

    cdef int64_t next_into(self, uint8_t *out, size_t outcap) noexcept nogil:
        """Copy the next record into ``out``: returns its length, 0 when there is nothing new,
        ST_TOO_SMALL (record needs ``self.need`` bytes; not consumed), ST_CORRUPT or ST_STUCK."""
        cdef const SegHeader *h = self.hdr
        cdef uint64_t t, ti, idx, n, fsz
        cdef uint16_t w
        cdef int rc
        while True:
            t = dm_load_acquire_u64(&h.tail)
            if <int64_t>(t - self.pos) <= 0:
                # nothing new: ask for the line the next record goes to, so that it is on its way
                # by the time the writer publishes (a hint; a busy-polling reader repeats it)
                dm_prefetch(self.data + (self.pos & self.mask))
                return 0
            if t - self.pos > self.cap:
                rc = self._resync()
                if rc:
                    return rc
                continue
            idx = self.pos & self.mask
            w = dm_load_relaxed_u16(<const uint16_t *>(self.data + idx))
            n = <uint64_t>(w & 0xFF) << 2
            fsz = (n + 7) & ~(<uint64_t>7)
            if (w >> 8) == PAD_RTYPE:
                if n < 8 or idx + fsz > self.cap:
                    n = 0  # torn or corrupt: decided below
                else:
                    dm_fence_acquire()
                    ti = dm_load_relaxed_u64(&h.tail_intent)
                    if ti - self.pos > self.cap:
                        rc = self._resync()
                        if rc:
                            return rc
                        continue
                    self.pos += fsz
                    continue
            if n < MIN_RECORD or idx + fsz > self.cap or n > outcap:
                dm_fence_acquire()
                ti = dm_load_relaxed_u64(&h.tail_intent)
                if ti - self.pos > self.cap:
                    rc = self._resync()
                    if rc:
                        return rc
                    continue
                if n >= MIN_RECORD and idx + fsz <= self.cap:
                    self.need = <uint32_t>n
                    return ST_TOO_SMALL
                return ST_CORRUPT
            memcpy(out, self.data + idx, n)
            dm_fence_acquire()
            ti = dm_load_relaxed_u64(&h.tail_intent)
            if ti - self.pos > self.cap:
                rc = self._resync()
                if rc:
                    return rc
                continue
            self.pos += fsz
            self.seq += 1
            return <int64_t>n

    cdef int _raise_status(self, int64_t st) except -1:
        if self.base == NULL:
            raise ClosedError(f"{self.name}: reader is closed")
        if st == ST_TOO_SMALL:
            raise ValueError(f"{self.name}: buffer too small for the next record ({self.need} bytes)")
        if st == ST_STUCK:
            raise ProducerGoneError(f"{self.name}: producer stopped in the middle of a write")
        raise RingError(f"{self.name}: corrupt frame at ring position {self.pos} (not overwritten)")

    def read(self):
        """Next record as ``bytes`` or ``None`` when nothing new. Never torn. An overrun is
        resolved silently (see ``take_overrun``). Raises ``RingError`` on a corrupt ring,
        ``ClosedError`` when the reader is closed."""
        cdef uint8_t buf[1024]
        cdef int64_t n
        if self.base == NULL:
            raise ClosedError(f"{self.name}: reader is closed")
        n = self.next_into(buf, 1024)
        if n > 0:
            return PyBytes_FromStringAndSize(<char *>buf, n)
        if n == 0:
            return None
        self._raise_status(n)

    def read_into(self, buf) -> int:
        """Copy the next record into the writable buffer ``buf`` (bytearray, memoryview...);
        returns its length, 0 when nothing new. Allocation-free. Raises ``ValueError`` when
        ``buf`` is smaller than the record (the record is kept for the next call),
        ``ClosedError`` when the reader is closed."""
        cdef Py_buffer view
        cdef int64_t n
        PyObject_GetBuffer(buf, &view, PyBUF_WRITABLE)
        if self.base == NULL:  # checked after GetBuffer: an exporter's code may have run
            PyBuffer_Release(&view)
            raise ClosedError(f"{self.name}: reader is closed")
        n = self.next_into(<uint8_t *>view.buf, view.len)
        PyBuffer_Release(&view)
        if n >= 0:
            return n
        self._raise_status(n)

    def read_batch(self, Py_ssize_t max_records=4096):
        """The next run of up to ``max_records`` records that share one rtype and length, as a
        numpy structured array of ``dm.records.DTYPES[rtype]`` (a void dtype for other rtypes),
        or ``None`` when nothing new. The array is a validated copy (it owns its memory), so it
        stays valid whatever the writer does next. Overruns are accounted as in ``read``.
        Raises ``ClosedError`` when the reader is closed."""
        cdef const SegHeader *h
        cdef uint64_t t, ti, idx, n, fsz, p, lim
        cdef uint16_t w, w0
        cdef Py_ssize_t k
        cdef int rc
        cdef object arr
        cdef Py_buffer view
        if max_records < 1:
            raise ValueError("max_records must be >= 1")
        while True:
            if self.base == NULL:  # also after np.empty below, which may run other threads
                raise ClosedError(f"{self.name}: reader is closed")
            h = self.hdr
            t = dm_load_acquire_u64(&h.tail)
            if <int64_t>(t - self.pos) <= 0:
                return None
            if t - self.pos > self.cap:
                rc = self._resync()
                if rc:
                    self._raise_status(rc)
                continue
            idx = self.pos & self.mask
            w0 = dm_load_relaxed_u16(<const uint16_t *>(self.data + idx))
            n = <uint64_t>(w0 & 0xFF) << 2
            fsz = (n + 7) & ~(<uint64_t>7)
            if n < 8 or idx + fsz > self.cap or ((w0 >> 8) != PAD_RTYPE and n < MIN_RECORD):
                dm_fence_acquire()
                if dm_load_relaxed_u64(&h.tail_intent) - self.pos > self.cap:
                    rc = self._resync()
                    if rc:
                        self._raise_status(rc)
                    continue
                self._raise_status(ST_CORRUPT)
            if (w0 >> 8) == PAD_RTYPE:
                dm_fence_acquire()
                if dm_load_relaxed_u64(&h.tail_intent) - self.pos > self.cap:
                    rc = self._resync()
                    if rc:
                        self._raise_status(rc)
                    continue
                self.pos += fsz
                continue
            # Extend the run: same header word, contiguous (n % 8 == 0), before the wrap and tail.
            k = 1
            p = self.pos + fsz
            if fsz == n:
                lim = self.pos + (self.cap - idx)
                if t < lim:
                    lim = t
                while k < max_records and p + n <= lim:
                    w = dm_load_relaxed_u16(<const uint16_t *>(self.data + (p & self.mask)))
                    if w != w0:
                        break
                    k += 1
                    p += n
            dt = self._dtypes.get(w0 >> 8)
            if dt is None or dt.itemsize != n:
                dt = np.dtype((np.void, n))
            arr = np.empty(k, dtype=dt)
            if self.base == NULL:  # closed by another thread while numpy ran (gc, finalizers)
                raise ClosedError(f"{self.name}: reader is closed")
            PyObject_GetBuffer(arr, &view, PyBUF_WRITABLE)
            memcpy(view.buf, self.data + idx, k * n)
            PyBuffer_Release(&view)
            dm_fence_acquire()
            ti = dm_load_relaxed_u64(&h.tail_intent)
            if ti - self.pos > self.cap:
                rc = self._resync()
                if rc:
                    self._raise_status(rc)
                continue
            self.pos += k * fsz
            self.seq += k
            return arr

    def wait(self, double timeout_s=-1.0, long spin=2000, long yields=100) -> bool:
        """Wait without burning a core until a record is available: spin ``spin`` polls, then
        ``sched_yield`` ``yields`` times, then sleep 20 us doubling to 1 ms. Returns True when
        something can be read, False on timeout (``timeout_s`` < 0: no timeout) or when the
        producer closed the ring with nothing left to read. Releases the GIL. Raises
        ``ClosedError`` when the reader is closed, before or (from another thread) during the
        wait."""
        cdef uint64_t deadline = 0
        cdef int rc
        cdef const SegHeader *h
        self._check_open()
        if timeout_s >= 0:
            deadline = _mono_ns() + <uint64_t>(timeout_s * 1e9)
        h = self.hdr
        dm_fetch_add_u32(&self._inflight, 1)  # close() unmaps only when no wait is in flight
        with nogil:
            rc = _wait_tail(h, self.pos, deadline, spin, yields, &self._closing)
            dm_fetch_sub_u32(&self._inflight, 1)  # the mapping is not touched after this
        if rc < 0 or self.base == NULL:
            raise ClosedError(f"{self.name}: reader was closed while waiting")
        return rc == 1

    def take_overrun(self) -> int:
        """Records lost to overruns since the last call (0 if none)."""
        cdef uint64_t v = self.pending_lost
        self.pending_lost = 0
        return v

    def producer_state(self, double stale_after_s=5.0) -> str:
        """``"closed"`` (the producer closed the ring), ``"dead"`` (its pid is gone),
        ``"stale"`` (alive but no heartbeat for ``stale_after_s``: hung), else ``"live"``
        (a quiet market is live: the worker heartbeats every ~1 s even without trades).
        Raises ``ClosedError`` when the reader is closed."""
        self._check_open()
        return _producer_state(self.hdr, stale_after_s)

    def close(self):
        """Unmap the segment. Idempotent; safe from any thread: a ``wait()`` in progress in
        another thread is woken (it raises ``ClosedError``) and the segment is unmapped after
        it left. Every later call raises ``ClosedError``."""
        if self.base == NULL:
            return
        dm_store_release_u32(&self._closing, 1)
        if dm_load_acquire_u32(&self._inflight):
            with nogil:  # waiters see _closing within one poll (<= 1 ms) and leave
                while dm_load_acquire_u32(&self._inflight):
                    _sleep_ns(20000)
        if self.base != NULL:  # another thread may have finished closing meanwhile
            munmap(self.base, self.map_len)
            self.base = NULL
            self.hdr = NULL
            self.data = NULL

    cdef int _check_open(self) except -1:
        if self.base == NULL or dm_load_relaxed_u32(&self._closing):
            raise ClosedError(f"{self.name}: reader is closed")
        return 0

    @property
    def closed(self) -> bool:
        return self.base == NULL or dm_load_relaxed_u32(&self._closing) != 0

    @property
    def ident(self):
        """``(st_dev, st_ino)`` of the mapped segment file: a producer that re-creates the
        channel makes a new file (a new ident) under the same name."""
        return self._ident

    @property
    def instrument_id(self) -> int:
        """Instrument id the writer put in the header (0: not given). Raises ``ClosedError``."""
        self._check_open()
        return self.hdr.instrument_id

    @property
    def size_precision(self):
        """Sizes of this channel's records are in units of 10**-size_precision (0..18), as the
        writer declared in the header; ``None`` when its writer predates the field."""
        self._check_open()
        return self.hdr.size_precision if self.hdr.meta_flags & 1 else None

    @property
    def publisher_id(self) -> int:
        """``dm.records.Publisher`` the writer put in the header (0: not given)."""
        self._check_open()
        return self.hdr.publisher_id

    def last_record(self):
        """The last complete record the producer wrote (``bytes``), or ``None`` when the ring
        holds none. Walks the ring from the oldest record held; meant for a producer that has
        stopped (a live producer may overwrite the walk: ``None`` then too). Raises
        ``ClosedError``."""
        cdef uint64_t h, hs, t, r, p, idx, fsz, last, ti
        cdef int64_t found = -1
        cdef uint8_t buf[1024]
        cdef uint64_t n = 0
        self._check_open()
        if not self._snapshot(&h, &hs, &t, &r):
            return None
        t = dm_load_acquire_u64(&self.hdr.tail)
        p = h
        while <int64_t>(t - p) > 0:
            idx = p & self.mask
            fsz = ((<uint64_t>self.data[idx] << 2) + 7) & ~(<uint64_t>7)
            if fsz == 0 or idx + fsz > self.cap:
                return None
            if self.data[idx + 1] != PAD_RTYPE:
                found = <int64_t>p
            p += fsz
        if found < 0:
            return None
        idx = <uint64_t>found & self.mask
        n = <uint64_t>self.data[idx] << 2
        if n < MIN_RECORD:
            return None
        memcpy(buf, self.data + idx, n)
        dm_fence_acquire()
        ti = dm_load_relaxed_u64(&self.hdr.tail_intent)
        if ti - <uint64_t>found > self.cap:
            return None  # overwritten while copied
        return PyBytes_FromStringAndSize(<char *>buf, n)

    @property
    def capacity(self) -> int:
        return self.cap

    @property
    def position(self) -> int:
        """Ring position (bytes since creation) of the next record to read."""
        return self.pos

    @property
    def records_read(self) -> int:
        """Index of the next record to read (records read + lost since the ring's creation,
        plus the start offset of a late joiner)."""
        return self.seq

    @property
    def records_written(self) -> int:
        self._check_open()
        return dm_load_acquire_u64(&self.hdr.records_written)

    @property
    def lag_bytes(self) -> int:
        self._check_open()
        return dm_load_acquire_u64(&self.hdr.tail) - self.pos

    @property
    def producer_pid(self) -> int:
        self._check_open()
        return dm_load_acquire_u32(&self.hdr.producer_pid)

    @property
    def heartbeat_ns(self) -> int:
        self._check_open()
        return dm_load_relaxed_u64(&self.hdr.heartbeat_ns)

    @property
    def created_ns(self) -> int:
        self._check_open()
        return self.hdr.created_ns

    @property
    def address(self) -> int:
        """Address of the (read-only) mapping in this process; for tests and diagnostics."""
        return <size_t>self.base

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __repr__(self):
        return f"<ChannelReader {self.name} position={self.pos} lost={self.lost_records}>"


# ----------------------------------------------------------------------------- persist queue

def _spool_base(name: str) -> str:
    return name[1:]


def _spool_files(spool_dir, name: str, suffix: str = ".spool"):
    """[(seq, Path)] of this queue's spool files with ``suffix``, oldest first."""
    base = _spool_base(name) + "."
    out = []
    try:
        entries = os.listdir(spool_dir)
    except FileNotFoundError:
        return out
    for fn in entries:
        if fn.startswith(base) and fn.endswith(suffix):
            mid = fn[len(base):-len(suffix)]
            if mid.isdigit():
                out.append((int(mid), Path(spool_dir) / fn))
    out.sort()
    return out


cdef tuple _scan_spool(object f, uint64_t start):
    """Walk length prefixes of an open spool file from ``start``: (records, end of the last
    complete record)."""
    cdef uint64_t off = start, k = 0, n
    cdef bytes chunk
    cdef const uint8_t *c
    cdef Py_ssize_t i, m
    cdef uint64_t chunk_start
    while True:
        f.seek(off)
        chunk = f.read(1 << 22)
        m = len(chunk)
        if m == 0:
            break
        c = <const uint8_t *>PyBytes_AS_STRING(chunk)
        chunk_start = off
        i = 0
        while i + 4 <= m:
            n = c[i] | (<uint64_t>c[i + 1] << 8) | (<uint64_t>c[i + 2] << 16) | (<uint64_t>c[i + 3] << 24)
            if i + 4 + <Py_ssize_t>n > m:
                break
            i += 4 + n
            k += 1
        if i == 0:
            # one record larger than a chunk cannot happen (records are <= 1020 bytes): partial tail
            break
        off = chunk_start + i
        if m < (1 << 22):
            break
    return k, off


def _recover_part_files(spool_dir, name: str, bint do_fsync, below_seq=None):
    """Close spool files a dead producer left open: cut a partial last record, rename to .spool.
    ``below_seq``: only files numbered below it (files from that number on may belong to a
    producer that started meanwhile). Safe to run from two processes at once."""
    for seq, path in _spool_files(spool_dir, name, ".spool.part"):
        if below_seq is not None and seq >= below_seq:
            continue
        try:
            with open(path, "r+b") as f:
                _, end = _scan_spool(f, 0)
                f.truncate(end)
                if do_fsync:
                    f.flush()
                    os.fsync(f.fileno())
            os.rename(path, str(path)[: -len(".part")])
        except FileNotFoundError:
            continue  # recovered by the other side first


cdef int _write_all(int fd, const uint8_t *p, size_t n) except -1:
    """write(2) until all of ``p[:n]`` is written (short writes, EINTR); OSError on failure."""
    cdef ssize_t k
    while n:
        k = c_write(fd, p, n)
        if k < 0:
            if errno == EINTR:
                continue
            raise OSError(errno, os.strerror(errno))
        p += k
        n -= <size_t>k
    return 0


cdef class PersistQueue:
    """The producer side of a worker's lossless persist queue (SPSC).

    ``PersistQueue(name, capacity, layout_hash, spool_dir, fsync="batch")`` creates the segment
    (e.g. ``"/dm.demo.binance.persist"``) or re-opens an existing compatible one left by a
    previous producer that closed or died, keeping every record not yet committed by the
    consumer (the capacity of the existing segment wins). Raises ``SegmentInUseError`` (a
    ``RingError``, naming the pid) when another live producer owns it, ``LayoutMismatchError``
    for another layout.

    ``write`` never blocks on the consumer and never drops: when the ring is full, the record
    is appended to the current spool file ``<spool_dir>/<name>.<seq>.spool.part`` (u32
    little-endian length prefix + record) with ``write(2)`` straight from the call, no
    userspace buffer: what a ``write``/``write_many``/``Fanout.publish`` call spilled is in the
    kernel when it returns and survives kill -9 of the process (the records one call spills go
    out in one ``write(2)``). ``flush()`` (cheap, call it every ~1 s on the producer's thread)
    stores the heartbeat and rotates the spool file: it is renamed to ``.spool`` (handed to
    the consumer) once the queue has drained or it is older than ``spool_max_age_s``.

    Durability against power loss (``fsync``): ``"never"``; ``"batch"``: ``sync()`` fsyncs
    what was spilled and renamed since the last call (run it off the event loop, e.g.
    ``await asyncio.to_thread(queue.sync)`` every second: it holds no lock while it waits on the
    disk and never blocks ``write``/``flush``); ``"always"``: each spilling call fsyncs before
    it returns (on the caller's thread). ``close()`` syncs (``batch``/``always``).
    A producer killed with files still open leaves ``.part`` files: the next producer, or the
    consumer once it sees the producer dead, cuts a partial last record and renames them.
    """

    def __cinit__(self, str name, uint64_t capacity, uint32_t layout_hash, spool_dir,
                  str fsync="batch", double spool_max_age_s=5.0):
        cdef int fd = -1
        cdef SegHeader *h
        cdef uint32_t old_pid
        self.base = NULL
        self.name = name
        self._sfd = -1
        self._sbuf = NULL
        self._sbuf_len = self._sbuf_cap = 0
        self._sbuf_records = 0
        self._lock = threading.Lock()
        self._unsynced = []
        self._dirty = self._dir_dirty = False
        self.spool_max_age_s = spool_max_age_s
        if fsync not in ("never", "batch", "always"):
            raise ValueError(f"fsync must be 'never', 'batch' or 'always', not {fsync!r}")
        self.fsync = fsync
        self.spool_dir = Path(spool_dir)
        self.spool_dir.mkdir(parents=True, exist_ok=True)
        _check_capacity(capacity, name)
        created = False
        for _ in range(5):
            fd = _create_excl(name, DM_HEADER_BYTES + capacity)
            if fd >= 0:
                created = True
                break
            state, ident, pid = _classify_existing(name, DM_MAGIC_PERSIST)
            if state == "live":
                raise SegmentInUseError(f"{name}: persist queue exists and its producer (pid {pid}) is alive", pid)
            if state == "foreign":
                raise RingError(f"{name}: segment exists and is not a dm persist queue")
            if state == "creating":
                time.sleep(0.01)
                continue
            if state == "gone":
                continue
            # stale: a previous producer closed or died. Keep its queue if it was initialised.
            try:
                addr, map_len, ident2 = _open_existing(name, True, DM_MAGIC_PERSIST, "persist queue")
            except LayoutMismatchError:
                raise
            except RingError:
                _unlink_if_same(name, ident)  # never initialised: debris
                continue
            self.base = <void *><size_t>addr
            self.map_len = map_len
            break
        if self.base == NULL and not created:
            raise RingError(f"{name}: could not create or re-open the persist queue")
        if created:
            try:
                self.map_len = DM_HEADER_BYTES + capacity
                self.base = _mmap_fd(fd, self.map_len, True, name)
            except BaseException:
                shm_unlink(_bname(name))
                raise
            finally:
                c_close(fd)
            h = <SegHeader *>self.base
            _init_header(h, capacity, layout_hash, KIND_PERSIST)
            existing = _spool_files(self.spool_dir, name) + _spool_files(self.spool_dir, name, ".spool.part")
            h.spool_next_seq = max([s for s, _ in existing], default=0) + 1
            dm_store_release_u64(&h.magic, DM_MAGIC_PERSIST)
        else:
            h = <SegHeader *>self.base
            try:
                _check_layout(h, layout_hash, name)
                # Take the queue over from the dead/closed producer with a CAS on its pid, so
                # two producers starting at once cannot both re-open it.
                old_pid = dm_load_acquire_u32(&h.producer_pid)
                if (not dm_load_acquire_u32(&h.closed) and pid_alive(old_pid)) or \
                        not dm_cas_u32(&h.producer_pid, old_pid, <uint32_t>getpid()):
                    other = dm_load_acquire_u32(&h.producer_pid)
                    raise SegmentInUseError(f"{name}: persist queue was taken over by producer pid {other}", other)
            except BaseException:
                munmap(self.base, self.map_len)
                self.base = NULL
                raise
            dm_store_relaxed_u64(&h.tail_intent, h.tail)
            existing = _spool_files(self.spool_dir, name) + _spool_files(self.spool_dir, name, ".spool.part")
            h.spool_next_seq = max(h.spool_next_seq, max([s for s, _ in existing], default=0) + 1)
            dm_store_relaxed_u64(&h.heartbeat_ns, _real_ns())
            dm_store_release_u32(&h.closed, 0)
        self.hdr = h
        self._owner_pid = getpid()
        self.data = <uint8_t *>self.base + DM_HEADER_BYTES
        self.cap = h.capacity
        self.mask = self.cap - 1
        self.tail = h.tail
        self.records = h.records_written
        self.head_cache = dm_load_acquire_u64(&h.head)
        self.records_spooled = 0
        _recover_part_files(self.spool_dir, name, fsync != "never")

    def __dealloc__(self):
        if self._sbuf != NULL:
            free(self._sbuf)
            self._sbuf = NULL
        if self._sfd >= 0:  # not closed: the data is in the kernel; the .part file is recovered
            c_close(self._sfd)  # by the next producer or the consumer
            self._sfd = -1
        if self.base != NULL:
            if getpid() == self._owner_pid:
                dm_store_release_u32(&self.hdr.closed, 1)
            munmap(self.base, self.map_len)
            self.base = NULL

    cdef int _put(self, const uint8_t *p, size_t n) except -1:
        """Append one validated record to the queue ring, or stage it for the spool when full."""
        cdef SegHeader *h = self.hdr
        cdef uint64_t fsz, idx, pad, need
        fsz = (n + 7) & ~(<uint64_t>7)
        idx = self.tail & self.mask
        pad = self.cap - idx if idx + fsz > self.cap else 0
        need = pad + fsz
        if self.tail + need - self.head_cache > self.cap:
            self.head_cache = dm_load_acquire_u64(&h.head)
            if self.tail + need - self.head_cache > self.cap:
                return self._stage(p, n)
        if pad:
            self.data[idx] = <uint8_t>(pad >> 2)
            self.data[idx + 1] = PAD_RTYPE
            idx = 0
        memcpy(self.data + idx, p, n)
        self.tail += need
        self.records += 1
        dm_store_relaxed_u64(&h.records_written, self.records)
        dm_store_release_u64(&h.tail, self.tail)
        return 0

    cdef int _stage(self, const uint8_t *p, size_t n) except -1:
        """Add one record (u32 length prefix + bytes) to the spill batch."""
        cdef size_t need = self._sbuf_len + 4 + n
        cdef size_t cap
        cdef void *nb
        cdef uint32_t n32 = <uint32_t>n
        if need > self._sbuf_cap:
            cap = self._sbuf_cap * 2 if self._sbuf_cap else 65536
            while cap < need:
                cap *= 2
            nb = realloc(self._sbuf, cap)
            if nb == NULL:
                raise MemoryError()
            self._sbuf = <uint8_t *>nb
            self._sbuf_cap = cap
        self._sbuf[self._sbuf_len] = n32 & 0xFF
        self._sbuf[self._sbuf_len + 1] = (n32 >> 8) & 0xFF
        self._sbuf[self._sbuf_len + 2] = (n32 >> 16) & 0xFF
        self._sbuf[self._sbuf_len + 3] = (n32 >> 24) & 0xFF
        memcpy(self._sbuf + self._sbuf_len + 4, p, n)
        self._sbuf_len = need
        self._sbuf_records += 1
        return 0

    cdef int _spill_flush(self) except -1:
        """Write the staged spill batch to the current spool file (opening one if needed) with
        one write(2); fsync it at once under ``fsync="always"``. The GIL is held throughout, so
        no other thread can close or rotate the file meanwhile."""
        cdef SegHeader *h = self.hdr
        cdef uint64_t seq, k = self._sbuf_records
        cdef int fd
        if self._sbuf_len == 0:
            return 0
        try:
            if self._sfd < 0:
                seq = h.spool_next_seq
                dm_store_relaxed_u64(&h.spool_next_seq, seq + 1)
                path = self.spool_dir / f"{_spool_base(self.name)}.{seq:010d}.spool.part"
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o640)
                with self._lock:
                    self._sfd = fd
                    self._spool_path = path
                    self._spool_opened = time.monotonic()
            _write_all(self._sfd, self._sbuf, self._sbuf_len)
        finally:
            # staged records are either in the kernel now or the error propagates (OSError):
            # never re-written later, so a failed call cannot duplicate records
            self._sbuf_len = 0
            self._sbuf_records = 0
        self._dirty = True
        if self.fsync == "always":
            os.fsync(self._sfd)
            self._dirty = False
        self.records_spooled += k
        dm_store_relaxed_u64(&h.records_spooled, h.records_spooled + k)
        return 0

    cdef int write_ptr(self, const uint8_t *p, size_t n) except -1:
        """C entry point: append one record to the queue, or to the spool when it is full."""
        if self.base == NULL:
            raise ClosedError(f"{self.name}: persist queue is closed")
        if not _valid_record(p, n):
            raise RingError(f"{self.name}: {_bad_record(p, n)}")
        self._put(p, n)
        if self._sbuf_len:
            self._spill_flush()
        return 0

    cdef int write_many_ptr(self, const uint8_t *p, size_t n) except -1:
        """C entry point: append concatenated records; all are validated first (a malformed
        buffer writes nothing); those that do not fit in the ring go to the spool in one write."""
        cdef size_t off = 0, rl
        if self.base == NULL:
            raise ClosedError(f"{self.name}: persist queue is closed")
        while off < n:
            rl = <size_t>p[off] * 4
            if rl == 0 or off + rl > n or not _valid_record(p + off, rl):
                raise RingError(f"{self.name}: at byte {off}: {_bad_record(p + off, min(rl, n - off) if rl else n - off)}")
            off += rl
        off = 0
        try:
            while off < n:
                rl = <size_t>p[off] * 4
                self._put(p + off, rl)
                off += rl
        finally:
            if self._sbuf_len:
                self._spill_flush()
        return 0

    def _rotate(self):
        """Hand the current spool file to the consumer: close it and rename ``.part`` ->
        ``.spool``. Under fsync ``batch``/``always`` its path is kept for the next ``sync()``
        (a path, not an fd: a producer whose ``sync`` is never called cannot run out of fds)."""
        cdef int fd
        if self._sfd < 0:
            return
        with self._lock:
            fd = self._sfd
            path = self._spool_path
            final = str(path)[: -len(".part")]
            self._sfd = -1
            self._spool_path = None
            dirty = self._dirty
            self._dirty = False
            os.close(fd)  # no fsync: a sync() in flight holds its own dup of the fd
            os.rename(path, final)
            if self.fsync != "never":
                if dirty:
                    self._unsynced.append(final)
                self._dir_dirty = True

    def sync(self) -> int:
        """Make what was spilled durable (fsync policy ``batch``/``always``; a no-op for
        ``never``): fsync the current spool file and those rotated since the last call, then the
        spool directory (the renames). Safe to call from another thread while this one writes,
        flushes or closes: the fds are taken under a lock and fsynced outside it with the GIL
        released. Returns the number of files fsynced. Raises ``OSError``."""
        cdef int cur = -1
        dir_dirty = False
        with self._lock:
            if self.fsync == "never":
                return 0
            todo = self._unsynced
            self._unsynced = []
            if self._sfd >= 0 and self._dirty:
                cur = os.dup(self._sfd)  # stays valid if the producer rotates meanwhile
                self._dirty = False
            dir_dirty = self._dir_dirty
            self._dir_dirty = False
        k = 0
        err = None
        fds = [cur] if cur >= 0 else []
        for path in todo:
            try:
                fds.append(os.open(path, os.O_RDONLY | os.O_CLOEXEC))
            except FileNotFoundError:
                pass  # already stored by the consumer and removed
        for fd in fds:
            try:
                os.fsync(fd)  # releases the GIL
                k += 1
            except OSError as e:
                err = err or e
            finally:
                os.close(fd)
        if dir_dirty:
            dfd = os.open(self.spool_dir, os.O_RDONLY)
            try:
                os.fsync(dfd)
            finally:
                os.close(dfd)
        if err is not None:
            raise err
        return k

    def write(self, record):
        """Append one record (same validation as ``ChannelWriter.write``); spools when full.
        Raises ``RingError`` (malformed), ``ClosedError`` (closed) or ``OSError`` (spool I/O)."""
        cdef Py_buffer view
        if type(record) is bytes:
            self.write_ptr(<const uint8_t *>PyBytes_AS_STRING(record), PyBytes_GET_SIZE(record))
            return
        PyObject_GetBuffer(record, &view, PyBUF_SIMPLE)
        try:
            self.write_ptr(<const uint8_t *>view.buf, view.len)
        finally:
            PyBuffer_Release(&view)

    def write_many(self, buf) -> int:
        """Append concatenated records; returns how many. All are validated before any is
        written; what does not fit in the ring is spooled in one ``write(2)``."""
        cdef Py_buffer view
        cdef size_t off = 0, k = 0
        PyObject_GetBuffer(buf, &view, PyBUF_SIMPLE)
        try:
            self.write_many_ptr(<const uint8_t *>view.buf, view.len)
            while off < <size_t>view.len:
                off += (<const uint8_t *>view.buf)[off] * 4
                k += 1
        finally:
            PyBuffer_Release(&view)
        return k

    def flush(self):
        """Store the heartbeat and rotate the current spool file (rename it to ``.spool``: the
        consumer sees it) once the queue has drained or the file is older than
        ``spool_max_age_s``. Never fsyncs (see ``sync``); cheap enough for the event loop.
        Call every ~100 ms to 1 s on the producer's thread."""
        if self.base == NULL:
            return
        dm_store_relaxed_u64(&self.hdr.heartbeat_ns, _real_ns())
        if self._sfd < 0:
            return
        drained = dm_load_acquire_u64(&self.hdr.head) == self.tail
        if drained or time.monotonic() - self._spool_opened >= self.spool_max_age_s:
            self._rotate()

    def close(self):
        """Rotate the current spool file, sync (fsync policy), set the closed flag, unmap. The
        segment stays (the persister drains it); ``PersistConsumer.unlink`` removes it.
        Idempotent; later writes raise ``ClosedError``."""
        if self.base != NULL:
            if getpid() != self._owner_pid:  # a forked child's copy: just unmap
                munmap(self.base, self.map_len)
                self.base = NULL
                return
            try:
                self._rotate()
                self.sync()
            finally:
                dm_store_relaxed_u64(&self.hdr.heartbeat_ns, _real_ns())
                dm_store_release_u32(&self.hdr.closed, 1)
                munmap(self.base, self.map_len)
                self.base = NULL
                self.hdr = NULL
                self.data = NULL

    @property
    def capacity(self) -> int:
        return self.cap

    @property
    def records_written(self) -> int:
        """Records written into the queue ring (not counting spooled ones) since it was created,
        across producer restarts."""
        return self.records

    @property
    def spooling(self) -> bool:
        """True while a spool file is open (not yet rotated)."""
        return self._sfd >= 0

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __repr__(self):
        return f"<PersistQueue {self.name} records={self.records} spooled={self.records_spooled}>"


cdef class PersistConsumer:
    """The consumer (the persister) of a persist queue: maps it read-write to commit its position.

    ``PersistConsumer(name, layout_hash, spool_dir)`` resumes at the last committed position
    (queue and spool). Raises ``RingError`` when the queue does not exist or another live
    consumer is attached, ``LayoutMismatchError`` for another layout.

    ``read_batch(max_records)`` returns ``(records, n, token)``: ``records`` is ``bytes`` of ``n``
    concatenated records from the queue or from closed spool files (oldest first); the two
    sources take turns as first choice so neither starves; ``None`` when there is nothing. ``commit(token)`` after the database commit
    (tokens commit in order; an older token is ignored). Uncommitted batches are re-delivered to
    the next consumer after a crash (at-least-once).
    """

    def __cinit__(self, str name, uint32_t layout_hash, spool_dir):
        cdef SegHeader *h
        cdef uint32_t other
        cdef uint64_t sc
        self.base = NULL
        self.name = name
        self.spool_dir = Path(spool_dir)
        self._sfile = None
        self._sfloor = 0
        self._next_orphan_check = 0.0
        addr, self.map_len, _ = _open_existing(name, True, DM_MAGIC_PERSIST, "persist queue")
        self.base = <void *><size_t>addr
        h = <SegHeader *>self.base
        self.hdr = h
        try:
            _check_layout(h, layout_hash, name)
            other = dm_load_acquire_u32(&h.consumer_pid)
            if other != 0 and other != <uint32_t>getpid() and pid_alive(other):
                raise RingError(f"{name}: another consumer (pid {other}) is attached")
        except BaseException:
            munmap(self.base, self.map_len)
            self.base = NULL
            raise
        dm_store_release_u32(&h.consumer_pid, <uint32_t>getpid())
        self.data = <const uint8_t *>self.base + DM_HEADER_BYTES
        self.cap = h.capacity
        self.mask = self.cap - 1
        self.rpos = dm_load_acquire_u64(&h.head)
        self.rrecords = h.head_records
        # Spool files fully committed by a previous consumer that crashed before removing them.
        sc = dm_load_acquire_u64(&h.spool_commit)
        cseq, coff = sc >> SPOOL_OFF_BITS, sc & ((1 << SPOOL_OFF_BITS) - 1)
        for seq, path in _spool_files(self.spool_dir, name):
            if seq < cseq or (seq == cseq and coff and os.path.getsize(path) <= coff):
                path.unlink(missing_ok=True)

    def __dealloc__(self):
        if self.base != NULL:
            munmap(self.base, self.map_len)
            self.base = NULL

    cdef int _check_open(self) except -1:
        if self.base == NULL:
            raise ClosedError(f"{self.name}: consumer is closed")
        return 0

    def recover_orphans(self) -> int:
        """Hand over the spool files a producer left open (``.part``) when it died: cut a
        partial last record, rename to ``.spool`` (then ``read_batch`` reads them). Only when
        the producer is closed or dead, and only files numbered below the producer's next spool
        number as read before that check, so a producer starting meanwhile keeps its own.
        ``read_batch`` calls it at most once a second when it has nothing else. Returns how
        many ``.part`` files were recovered."""
        cdef SegHeader *h = self.hdr
        cdef uint64_t nseq
        cdef uint32_t closed, pid
        self._check_open()
        parts = _spool_files(self.spool_dir, self.name, ".spool.part")
        if not parts:
            return 0
        nseq = dm_load_acquire_u64(&h.spool_next_seq)
        closed = dm_load_acquire_u32(&h.closed)
        pid = dm_load_acquire_u32(&h.producer_pid)
        if not closed and pid_alive(pid):
            return 0
        _recover_part_files(self.spool_dir, self.name, False, below_seq=nseq)
        return sum(1 for seq, _ in parts if seq < nseq)

    def read_batch(self, Py_ssize_t max_records=10000):
        """``(records: bytes, n: int, token)`` of up to ``max_records`` concatenated records, or
        ``None`` when the queue and closed spool files hold nothing unread."""
        cdef SegHeader *h = self.hdr
        cdef uint64_t t, p, idx, n, fsz, total
        cdef Py_ssize_t k
        cdef bytes out
        cdef uint8_t *o
        self._check_open()
        if max_records < 1:
            raise ValueError("max_records must be >= 1")
        # Alternate which source goes first so that neither starves under a steady load.
        self._turn = not self._turn
        if self._turn:
            b = self._read_spool(max_records)
            if b is not None:
                return b
            self._check_open()  # file I/O released the GIL
        t = dm_load_acquire_u64(&h.tail)
        if t != self.rpos:
            # pass 1: count and size
            p = self.rpos
            k = 0
            total = 0
            while p != t and k < max_records:
                idx = p & self.mask
                n = <uint64_t>self.data[idx] << 2
                fsz = (n + 7) & ~(<uint64_t>7)
                if fsz == 0 or idx + fsz > self.cap:
                    raise RingError(f"{self.name}: corrupt frame at queue position {p}")
                if self.data[idx + 1] != PAD_RTYPE:
                    total += n
                    k += 1
                p += fsz
            end = p
            if k:
                out = PyBytes_FromStringAndSize(NULL, total)
                o = <uint8_t *>PyBytes_AS_STRING(out)
                p = self.rpos
                while p != end:
                    idx = p & self.mask
                    n = <uint64_t>self.data[idx] << 2
                    if self.data[idx + 1] != PAD_RTYPE:
                        memcpy(o, self.data + idx, n)
                        o += n
                    p += (n + 7) & ~(<uint64_t>7)
                self.rpos = end
                self.rrecords += k
                return out, k, (0, end, self.rrecords)
            self.rpos = end  # only padding
        b = None if self._turn else self._read_spool(max_records)
        if b is None:
            now = time.monotonic()
            if now >= self._next_orphan_check:
                self._next_orphan_check = now + 1.0
                if self.recover_orphans():
                    return self._read_spool(max_records)
        return b

    def _next_spool_file(self):
        """Open the oldest closed spool file not yet read by this consumer; False if none."""
        sc = dm_load_acquire_u64(&self.hdr.spool_commit)
        cseq, coff = sc >> SPOOL_OFF_BITS, sc & ((1 << SPOOL_OFF_BITS) - 1)
        floor = max(cseq, self._sfloor)
        if self._sfile is not None:
            self._sfile[2].close()
            self._sfile = None
        for seq, path in _spool_files(self.spool_dir, self.name):
            if seq >= floor:
                try:
                    f = open(path, "rb")
                except FileNotFoundError:
                    continue
                self._sfile = (seq, path, f)
                self._soff = coff if seq == cseq else 0
                return True
        return False

    def _read_spool(self, Py_ssize_t max_records):
        cdef bytes chunk
        cdef const uint8_t *c
        cdef Py_ssize_t i, m, k, total
        cdef uint64_t n
        cdef bytes out
        cdef uint8_t *o
        while True:
            if self._sfile is None and not self._next_spool_file():
                return None
            seq, path, f = self._sfile
            f.seek(self._soff)
            chunk = f.read(max_records * 1024 + 4 if max_records < 8192 else 8 << 20)
            m = len(chunk)
            c = <const uint8_t *>PyBytes_AS_STRING(chunk)
            i = 0
            k = 0
            total = 0
            while i + 4 <= m and k < max_records:
                n = c[i] | (<uint64_t>c[i + 1] << 8) | (<uint64_t>c[i + 2] << 16) | (<uint64_t>c[i + 3] << 24)
                if i + 4 + <Py_ssize_t>n > m:
                    break
                total += n
                k += 1
                i += 4 + n
            if k == 0:
                # end of a closed (immutable) file: never read it again; removed on its commit
                self._sfloor = seq + 1
                f.close()
                self._sfile = None
                continue
            out = PyBytes_FromStringAndSize(NULL, total)
            o = <uint8_t *>PyBytes_AS_STRING(out)
            i = 0
            for _ in range(k):
                n = c[i] | (<uint64_t>c[i + 1] << 8) | (<uint64_t>c[i + 2] << 16) | (<uint64_t>c[i + 3] << 24)
                memcpy(o, c + i + 4, n)
                o += n
                i += 4 + n
            self._soff += i
            done = self._soff >= os.fstat(f.fileno()).st_size
            return out, k, (1, seq, self._soff, done, k, str(path))

    def commit(self, token):
        """Acknowledge everything up to ``token`` (from ``read_batch``) after the database
        commit: the queue space is released to the producer / a finished spool file is removed."""
        cdef SegHeader *h = self.hdr
        self._check_open()
        if token[0] == 0:
            _, pos, cum = token
            if <int64_t>(<uint64_t>pos - dm_load_relaxed_u64(&h.head)) > 0:
                dm_store_relaxed_u64(&h.head_records, cum)
                dm_store_release_u64(&h.head, pos)
        else:
            _, seq, off, done, k, path = token
            dm_store_release_u64(&h.spool_commit, (<uint64_t>seq << SPOOL_OFF_BITS) | <uint64_t>off)
            dm_store_relaxed_u64(&h.spool_records_committed, h.spool_records_committed + k)
            if done:
                try:
                    os.unlink(path)
                except FileNotFoundError:
                    pass

    def pending(self) -> int:
        """Records not yet committed: in the queue plus in spool files (closed and open)."""
        cdef SegHeader *h = self.hdr
        self._check_open()
        q = dm_load_acquire_u64(&h.records_written) - h.head_records
        sc = dm_load_acquire_u64(&h.spool_commit)
        cseq, coff = sc >> SPOOL_OFF_BITS, sc & ((1 << SPOOL_OFF_BITS) - 1)
        s = 0
        files = _spool_files(self.spool_dir, self.name) + _spool_files(self.spool_dir, self.name, ".spool.part")
        for seq, path in files:
            if seq < cseq:
                continue
            try:
                with open(path, "rb") as f:
                    s += _scan_spool(f, coff if seq == cseq else 0)[0]
            except FileNotFoundError:
                pass
        return q + s

    def producer_closed(self) -> bool:
        """True when the producer closed the queue or its process is gone."""
        self._check_open()
        return bool(dm_load_acquire_u32(&self.hdr.closed)) or not pid_alive(
            dm_load_acquire_u32(&self.hdr.producer_pid))

    def producer_state(self, double stale_after_s=5.0) -> str:
        """As ``ChannelReader.producer_state``."""
        self._check_open()
        return _producer_state(self.hdr, stale_after_s)

    def close(self):
        """Detach (consumer pid cleared) and unmap. Uncommitted batches will be re-delivered."""
        if self.base != NULL:
            if self._sfile is not None:
                self._sfile[2].close()
                self._sfile = None
            dm_store_release_u32(&self.hdr.consumer_pid, 0)
            munmap(self.base, self.map_len)
            self.base = NULL
            self.hdr = NULL
            self.data = NULL

    def unlink(self):
        """Close, remove the segment, and remove ``spool_dir`` if it is empty (spool files still
        holding records are never deleted here)."""
        self.close()
        unlink_segment(self.name)
        try:
            os.rmdir(self.spool_dir)
        except OSError:
            pass

    @property
    def records_committed(self) -> int:
        self._check_open()
        return self.hdr.head_records + self.hdr.spool_records_committed

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


# ----------------------------------------------------------------------------------- fanout

# ------------------------------------------------------------------------------ live bars

cdef extern from *:
    """
    #define DM_BAR_I64_MIN ((int64_t)(-0x7FFFFFFFFFFFFFFFLL - 1))
    #define DM_BAR_I64_MAX ((int64_t)0x7FFFFFFFFFFFFFFFLL)
    """
    int64_t DM_BAR_I64_MIN
    int64_t DM_BAR_I64_MAX

cdef enum:
    BAR_FLAG_BUILT = 1 << 0   # dm.records.BarFlag.BUILT: built by dm from the channel's trades
    BAR_FLAG_LATE = 1 << 1    # dm.records.BarFlag.LATE: re-published after a late trade


cdef inline int64_t _trade_dd(uint16_t pub, int64_t px, uint64_t size, uint8_t side, uint64_t seq,
                              uint64_t tid) noexcept nogil:
    """The trade's ``dedup`` column (dm.storage.base.dedup_column: 0 with a trade id, else the
    dm-dedup-v1 hash of (publisher_id, price, size, side, sequence))."""
    cdef uint64_t h = 0x646D2D6465647570ULL
    cdef uint64_t v[5]
    cdef int k
    if tid != 0:
        return 0
    v[0] = pub
    v[1] = <uint64_t>px
    v[2] = size
    v[3] = side
    v[4] = seq
    for k in range(5):
        h = (h ^ v[k]) * 0x9E3779B97F4A7C15ULL
        h = h ^ (h >> 32)
    h = h ^ (h >> 33)
    h = h * 0xFF51AFD7ED558CCDULL
    h = h ^ (h >> 33)
    h = h * 0xC4CEB9FE1A85EC53ULL
    h = h ^ (h >> 33)
    return <int64_t>h


cdef inline void _bar_init(BarSlot *s, int64_t start, const TradeRecord *t, int64_t ts, int64_t ordk) noexcept nogil:
    s.start = start
    s.open = s.high = s.low = s.close = t.price
    s.o_ts = s.c_ts = ts
    s.o_ord = s.c_ord = ordk
    s.volume = t.size if t.size <= <uint64_t>DM_BAR_I64_MAX else <uint64_t>DM_BAR_I64_MAX
    s.count = 1
    s.o_size = s.c_size = t.size
    s.o_seq = s.c_seq = t.sequence
    s.o_tid = s.c_tid = t.trade_id
    s.o_side = s.c_side = t.side
    s.size_precision = t.size_precision
    s.published = 0
    s.late = 0


cdef inline void _bar_add(BarSlot *s, const TradeRecord *t, int64_t ts, int64_t ordk) noexcept nogil:
    """One more trade into the bar: dm.bars order (ts_event, trade id or sequence, dedup)."""
    cdef int64_t px = t.price
    cdef int64_t dd
    cdef uint16_t pub = t.hd.publisher_id
    if px > s.high:
        s.high = px
    if px < s.low:
        s.low = px
    if t.size > <uint64_t>DM_BAR_I64_MAX - s.volume:
        s.volume = <uint64_t>DM_BAR_I64_MAX  # saturates, never wraps (dm.bars)
    else:
        s.volume += t.size
    s.count += 1
    if ts < s.o_ts or (ts == s.o_ts and (ordk < s.o_ord or (ordk == s.o_ord and _trade_dd(
            pub, px, t.size, t.side, t.sequence, t.trade_id) < _trade_dd(
            pub, s.open, s.o_size, s.o_side, s.o_seq, s.o_tid)))):
        s.open = px
        s.o_ts = ts
        s.o_ord = ordk
        s.o_size = t.size
        s.o_seq = t.sequence
        s.o_tid = t.trade_id
        s.o_side = t.side
        s.size_precision = t.size_precision
    if ts > s.c_ts or (ts == s.c_ts and (ordk > s.c_ord or (ordk == s.c_ord and _trade_dd(
            pub, px, t.size, t.side, t.sequence, t.trade_id) >= _trade_dd(
            pub, s.close, s.c_size, s.c_side, s.c_seq, s.c_tid)))):
        s.close = px
        s.c_ts = ts
        s.c_ord = ordk
        s.c_size = t.size
        s.c_seq = t.sequence
        s.c_tid = t.trade_id
        s.c_side = t.side


cdef class ChanBars:
    """Live bar state of one channel (allocated by ``Fanout.set_bar_intervals``/``add_channel``)."""

    def __cinit__(self, int n, uint32_t iid):
        cdef int i
        self.n = n
        self.iid = iid
        self.pub = 0
        self.slots = <BarSlot *>calloc(max(n, 1) * BAR_RING, sizeof(BarSlot))
        if self.slots == NULL:
            raise MemoryError()
        for i in range(n * BAR_RING):
            self.slots[i].start = DM_BAR_I64_MIN
        for i in range(BAR_MAX_INTERVALS):
            self.cur[i] = DM_BAR_I64_MIN
            self.cur_end[i] = DM_BAR_I64_MIN
            self.cur_slot[i] = NULL

    def __dealloc__(self):
        free(self.slots)
        self.slots = NULL


cdef class Fanout:
    """Routes a worker's records: each record to its instrument's channel ring (if one) and
    every record to the persist queue (if any); builds live OHLCV bars from the TRADE records
    of each channel and publishes them on that channel only (``set_bar_intervals``).

    ``Fanout(queue_or_None)``; ``add_channel(instrument_id, writer)``; ``publish(buf) -> int``.

    Live bars (dm.bars rules, issue 10): per (channel, interval) a bar of ``[start, start +
    interval)`` ns since the UNIX epoch (``ts_event`` of the BAR = ``start``, Databento's
    convention); open / close = price of the first / last trade by (ts_event, trade id or
    sequence when the id is 0, the trade's dedup hash), high / low, volume = sum of sizes
    saturated at i64 max, count (saturated at u32 max), size_precision of the open trade.
    A bar is published as one BAR record (``flags`` ``BarFlag.BUILT``) on the channel when a
    trade of that channel falls into a later interval, or by ``close_bars`` once the venue
    clock passed its end by the grace period. A trade for a bar already published (late) updates
    it and re-publishes it at once with ``BarFlag.LATE`` set: readers keep the latest BAR per
    (instrument, interval_s, ts_event). The last ``BAR_RING`` (4) bars per (channel, interval)
    are kept; a trade older than those is left out of the live bars (``bars_dropped``; the
    stored bars, built by the persister from the stored trades, still count it). Not counted
    live: trades flagged SNAPSHOT (a venue's replay of past trades on (re)subscribe) and trades
    with ts_event >= 2**63. BAR records never go to the persist queue (the persister builds the
    stored bars itself, ``dm.bars``). Received BAR records (e.g. Databento ohlcv, no
    ``BarFlag.BUILT``) pass through like any record.
    """

    def __cinit__(self, PersistQueue queue=None):
        self.queue = queue
        self.channels = {}
        self._last = None
        self._last_id = 0
        self._nbar = 0
        self._grace = 0
        self._max_ts = DM_BAR_I64_MIN
        self._seen_ts = DM_BAR_I64_MIN
        self._seen_wall = 0
        self.bars_published = self.bars_late = self.bars_dropped = 0

    def add_channel(self, uint32_t instrument_id, ChannelWriter writer not None):
        self.channels[instrument_id] = writer
        writer.bars = ChanBars(self._nbar, instrument_id) if self._nbar else None
        self._last = None

    def remove_channel(self, uint32_t instrument_id):
        self.channels.pop(instrument_id, None)
        self._last = None

    def set_bar_intervals(self, intervals_s, int64_t grace_ns=1_000_000_000):
        """Build live bars of ``intervals_s`` (seconds, each 1 .. 366 days, at most 16; empty:
        off) on every channel; ``grace_ns`` (>= 0): how long after a bar's end (on the venue
        clock, see ``close_bars``) the timer publishes it. Resets every bar in progress.
        Raises ``ValueError``."""
        cdef list ivs = sorted({int(v) for v in intervals_s})
        cdef int i
        if len(ivs) > BAR_MAX_INTERVALS:
            raise ValueError(f"live bars: at most {BAR_MAX_INTERVALS} intervals, got {len(ivs)}")
        for v in ivs:
            if v < 1 or v > 366 * 86400:
                raise ValueError(f"live bars: interval {v} s must be between 1 s and 366 d")
        if grace_ns < 0:
            raise ValueError(f"live bars: grace_ns must be >= 0, got {grace_ns}")
        for i in range(len(ivs)):
            self._ivs[i] = ivs[i]
            self._steps[i] = <int64_t>ivs[i] * 1_000_000_000
        self._nbar = len(ivs)
        self._grace = grace_ns
        for iid, w in self.channels.items():
            (<ChannelWriter>w).bars = ChanBars(self._nbar, iid) if self._nbar else None

    @property
    def bar_intervals(self) -> tuple:
        """The live bar intervals (seconds), () when off."""
        return tuple(self._ivs[i] for i in range(self._nbar))

    cdef void _bar_emit(self, ChannelWriter w, BarSlot *s, int i) noexcept:
        cdef BarRecord r
        memset(&r, 0, sizeof(BarRecord))
        r.hd.length = <uint8_t>(sizeof(BarRecord) // 4)
        r.hd.rtype = RTYPE_BAR
        r.hd.publisher_id = w.bars.pub
        r.hd.instrument_id = w.bars.iid
        r.hd.ts_event = <uint64_t>s.start
        r.open = s.open
        r.high = s.high
        r.low = s.low
        r.close = s.close
        r.volume = s.volume
        r.interval_s = self._ivs[i]
        r.count = <uint32_t>s.count if s.count <= 0xFFFFFFFFULL else 0xFFFFFFFFU
        r.flags = BAR_FLAG_BUILT | (BAR_FLAG_LATE if s.late else 0)
        r.size_precision = s.size_precision
        w._put(<const uint8_t *>&r, <uint32_t>sizeof(BarRecord))
        s.published = 1
        self.bars_published += 1
        if s.late:
            self.bars_late += 1

    cdef void _bar_trade(self, ChannelWriter w, const uint8_t *p) noexcept:
        """One TRADE record of channel ``w`` into its live bars (publishing what it closes or
        corrects, before the trade itself)."""
        cdef const TradeRecord *t = <const TradeRecord *>p  # field loads: fine unaligned on x86-64 / arm64
        cdef ChanBars c = w.bars
        cdef int64_t ts, ordk, st, step
        cdef int i
        cdef BarSlot *s
        cdef BarSlot *cs
        ts = <int64_t>t.hd.ts_event
        if ts < 0 or (t.flags & FLAG_SNAPSHOT):
            return
        c.pub = t.hd.publisher_id
        ordk = <int64_t>(t.trade_id if t.trade_id != 0 else t.sequence)
        for i in range(self._nbar):
            if ts >= c.cur[i] and ts < c.cur_end[i]:  # the common case: the latest bar
                s = c.cur_slot[i]
                _bar_add(s, t, ts, ordk)
                if s.published:  # the timer closed it already
                    s.late = 1
                    self._bar_emit(w, s, i)
                continue
            step = self._steps[i]
            st = ts - ts % step
            s = &c.slots[i * BAR_RING + <int>((st // step) & (BAR_RING - 1))]
            if s.start == st:  # an earlier bar, kept and published: correct it
                _bar_add(s, t, ts, ordk)
                s.late = 1
                self._bar_emit(w, s, i)
            elif s.start < st:
                if st > c.cur[i]:  # a later interval: the latest bar is closed
                    cs = c.cur_slot[i]
                    if cs != NULL and not cs.published:
                        self._bar_emit(w, cs, i)
                    _bar_init(s, st, t, ts, ordk)
                    c.cur[i] = st
                    c.cur_end[i] = st + step if st <= DM_BAR_I64_MAX - step else DM_BAR_I64_MAX
                    c.cur_slot[i] = s
                else:  # a late trade of an interval that had none: its bar is closed already
                    _bar_init(s, st, t, ts, ordk)
                    s.late = 1
                    self._bar_emit(w, s, i)
            else:  # older than the bars kept
                self.bars_dropped += 1

    def close_bars(self, int64_t now_ns) -> int:
        """Publish every latest bar not yet published whose end is ``grace_ns`` or more behind
        the venue clock: the latest ts_event of any record published on a channel (below 2**63),
        advanced by the wall time since
        ``close_bars`` first saw it (``now_ns``, ns since the UNIX epoch; so a replay closes
        bars on its own clock and a quiet feed still closes its last bar). Call about once per
        second (the worker's housekeeping). Returns the number of bars published."""
        cdef int64_t vnow, end, d
        cdef int i
        cdef uint64_t before = self.bars_published
        cdef ChanBars c
        cdef ChannelWriter w
        cdef BarSlot *s
        if self._nbar == 0 or self._max_ts == DM_BAR_I64_MIN:
            return 0
        if self._max_ts != self._seen_ts:
            self._seen_ts = self._max_ts
            self._seen_wall = now_ns
        d = now_ns - self._seen_wall if now_ns > self._seen_wall else 0
        vnow = self._seen_ts + d if self._seen_ts <= DM_BAR_I64_MAX - d else DM_BAR_I64_MAX
        for o in self.channels.values():
            w = <ChannelWriter>o
            c = w.bars
            if c is None or w.base == NULL:
                continue
            for i in range(self._nbar):
                s = c.cur_slot[i]
                if s == NULL or s.published:
                    continue
                end = c.cur_end[i]
                if end <= DM_BAR_I64_MAX - self._grace and end + self._grace <= vnow:
                    self._bar_emit(w, s, i)
        return <int>(self.bars_published - before)

    @property
    def bar_stats(self) -> dict:
        """``{"published", "late", "dropped"}``: live BAR records published (late: of them,
        re-published corrections), trades left out of live bars as older than the bars kept."""
        return {"published": self.bars_published, "late": self.bars_late, "dropped": self.bars_dropped}

    cdef int64_t publish_ptr(self, const uint8_t *p, size_t n) except -1:
        cdef size_t off = 0, rl
        cdef int64_t k = 0
        cdef uint32_t iid
        cdef int64_t ts
        cdef ChannelWriter w
        cdef PersistQueue q = self.queue
        while off < n:
            rl = <size_t>p[off] * 4
            if rl == 0 or off + rl > n or not _valid_record(p + off, rl):
                raise RingError(f"fanout: at byte {off}: {_bad_record(p + off, min(rl, n - off) if rl else n - off)}")
            off += rl
        if q is not None and q.base == NULL:
            raise ClosedError(f"{q.name}: persist queue is closed")
        off = 0
        try:
            while off < n:
                rl = <size_t>p[off] * 4
                memcpy(&iid, p + off + 4, 4)
                if self._last is not None and iid == self._last_id:
                    w = self._last
                else:
                    w = self.channels.get(iid)
                    self._last = w
                    self._last_id = iid
                if w is not None:
                    if w.base == NULL:
                        raise ClosedError(f"{w.name}: channel writer for instrument {iid} is closed")
                    if w.bars is not None:
                        memcpy(&ts, p + off + 8, 8)
                        if ts > self._max_ts:  # the venue clock (close_bars): any record's time
                            self._max_ts = ts
                        if p[off + 1] == RTYPE_TRADE and rl == sizeof(TradeRecord):
                            self._bar_trade(w, p + off)
                    w._put(p + off, <uint32_t>rl)
                if q is not None:
                    q._put(p + off, rl)  # to the ring, or staged for the spool
                off += rl
                k += 1
        finally:
            if q is not None and q._sbuf_len:
                q._spill_flush()  # what this call spilled: one write(2)
        return k

    def publish(self, buf) -> int:
        """Publish concatenated records (bytes-like); returns the number of records. A malformed
        buffer (bad length / rtype 0xFF) raises ``RingError`` before anything is published."""
        cdef Py_buffer view
        PyObject_GetBuffer(buf, &view, PyBUF_SIMPLE)
        try:
            return self.publish_ptr(<const uint8_t *>view.buf, view.len)
        finally:
            PyBuffer_Release(&view)


def split_by_rtype(buf) -> dict:
    """Group concatenated records by rtype: ``{rtype: bytes}``, order kept within each rtype,
    rtypes in the order they first appear. Raises ``RingError`` on a truncated or zero-length
    record (nothing is returned then). Two passes in C (sizes per rtype, then one copy of each
    record into its group), no per-record Python object: it is the persister's step from a
    batch read off a persist queue to its record arrays. A batch of one rtype that is a
    ``bytes`` object is returned as is."""
    cdef Py_buffer view
    cdef const uint8_t *p
    cdef size_t off = 0, rl, n
    cdef size_t sizes[256]
    cdef size_t fill[256]
    cdef uint8_t order[256]
    cdef int ngroups = 0, i
    cdef uint8_t rt
    cdef dict parts = {}
    cdef char *dst[256]
    PyObject_GetBuffer(buf, &view, PyBUF_SIMPLE)
    try:
        p = <const uint8_t *>view.buf
        n = view.len
        memset(sizes, 0, sizeof(sizes))
        while off < n:
            rl = <size_t>p[off] * 4
            if rl < MIN_RECORD or off + rl > n:
                raise RingError(f"split_by_rtype: bad record length {rl} at byte {off}")
            rt = p[off + 1]
            if sizes[rt] == 0:
                order[ngroups] = rt
                ngroups += 1
            sizes[rt] += rl
            off += rl
        if ngroups == 1 and type(buf) is bytes:
            return {order[0]: buf}
        for i in range(ngroups):
            rt = order[i]
            b = PyBytes_FromStringAndSize(NULL, <Py_ssize_t>sizes[rt])
            parts[rt] = b
            dst[rt] = PyBytes_AS_STRING(b)
            fill[rt] = 0
        if ngroups == 1:
            memcpy(dst[order[0]], p, n)
        else:
            off = 0
            while off < n:
                rl = <size_t>p[off] * 4
                rt = p[off + 1]
                memcpy(dst[rt] + fill[rt], p + off, rl)
                fill[rt] += rl
                off += rl
    finally:
        PyBuffer_Release(&view)
    return parts


# ------------------------------------------------------------- atomics over Python buffers

cdef void *_buf_at(object buf, Py_buffer *view, Py_ssize_t off, Py_ssize_t size, bint writable) except NULL:
    PyObject_GetBuffer(buf, view, PyBUF_WRITABLE if writable else PyBUF_SIMPLE)
    if off < 0 or off + size > view.len or ((<size_t>view.buf + off) % size) != 0:
        PyBuffer_Release(view)
        raise ValueError(f"offset {off} is out of range or not {size}-byte aligned")
    return <char *>view.buf + off


def cas_u32(buf, Py_ssize_t offset, uint32_t expected, uint32_t new) -> bool:
    """Atomic compare-and-swap of the u32 at ``offset`` of the writable buffer (an mmap):
    True when it held ``expected`` and now holds ``new`` (acq_rel)."""
    cdef Py_buffer view
    cdef uint32_t *p = <uint32_t *>_buf_at(buf, &view, offset, 4, True)
    cdef int ok = dm_cas_u32(p, expected, new)
    PyBuffer_Release(&view)
    return ok != 0


def cas_u64(buf, Py_ssize_t offset, uint64_t expected, uint64_t new) -> bool:
    """As ``cas_u32`` for a u64."""
    cdef Py_buffer view
    cdef uint64_t *p = <uint64_t *>_buf_at(buf, &view, offset, 8, True)
    cdef int ok = dm_cas_u64(p, expected, new)
    PyBuffer_Release(&view)
    return ok != 0


def load_u32(buf, Py_ssize_t offset) -> int:
    """Acquire load of the u32 at ``offset`` (read-only buffers accepted)."""
    cdef Py_buffer view
    cdef uint32_t *p = <uint32_t *>_buf_at(buf, &view, offset, 4, False)
    cdef uint32_t v = dm_load_acquire_u32(p)
    PyBuffer_Release(&view)
    return v


def load_u64(buf, Py_ssize_t offset) -> int:
    """Acquire load of the u64 at ``offset`` (read-only buffers accepted)."""
    cdef Py_buffer view
    cdef uint64_t *p = <uint64_t *>_buf_at(buf, &view, offset, 8, False)
    cdef uint64_t v = dm_load_acquire_u64(p)
    PyBuffer_Release(&view)
    return v


def store_u32(buf, Py_ssize_t offset, uint32_t value):
    """Release store of the u32 at ``offset`` of a writable buffer."""
    cdef Py_buffer view
    cdef uint32_t *p = <uint32_t *>_buf_at(buf, &view, offset, 4, True)
    dm_store_release_u32(p, value)
    PyBuffer_Release(&view)


def store_u64(buf, Py_ssize_t offset, uint64_t value):
    """Release store of the u64 at ``offset`` of a writable buffer."""
    cdef Py_buffer view
    cdef uint64_t *p = <uint64_t *>_buf_at(buf, &view, offset, 8, True)
    dm_store_release_u64(p, value)
    PyBuffer_Release(&view)


def fence():
    """Full (seq_cst) memory fence."""
    dm_fence_seq_cst()


def _header_offsets() -> dict:
    """Byte offsets of SegHeader fields (checked by tests against the documented layout)."""
    cdef SegHeader h
    cdef size_t b = <size_t>&h
    return {
        "magic": <size_t>&h.magic - b, "tail_intent": <size_t>&h.tail_intent - b,
        "tail": <size_t>&h.tail - b, "snap_version": <size_t>&h.snap_version - b,
        "heartbeat_ns": <size_t>&h.heartbeat_ns - b, "producer_pid": <size_t>&h.producer_pid - b,
        "closed": <size_t>&h.closed - b, "head": <size_t>&h.head - b,
        "consumer_pid": <size_t>&h.consumer_pid - b, "size": sizeof(SegHeader),
        "instrument_id": <size_t>&h.instrument_id - b, "publisher_id": <size_t>&h.publisher_id - b,
        "size_precision": <size_t>&h.size_precision - b, "meta_flags": <size_t>&h.meta_flags - b,
        "capacity": <size_t>&h.capacity - b, "created_ns": <size_t>&h.created_ns - b,
        "header_bytes": <size_t>&h.header_bytes - b, "kind": <size_t>&h.kind - b,
    }
