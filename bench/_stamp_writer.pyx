# cython: language_level=3
"""bench only (compiled by bench/bench_client.py with pyximport): a writer that stamps the
record's ts_recv in C immediately before the ring write, so a one-way latency starts at the
commit and not before the writer's own Python call overhead."""
from cpython.bytearray cimport PyByteArray_AS_STRING, PyByteArray_GET_SIZE
from libc.stdint cimport uint8_t, uint64_t
from dm._ring cimport ChannelWriter, now_ns


def write_stamped(ChannelWriter w, bytearray buf, Py_ssize_t off):
    """Store ``now_ns()`` (u64 little-endian, x86/arm64 native) at ``buf[off:off+8]``, then
    ``w.write`` the record: nothing but the ring's own write sits between the stamp and the
    release store of the tail."""
    cdef uint8_t *p = <uint8_t *>PyByteArray_AS_STRING(buf)
    if off < 0 or off + 8 > PyByteArray_GET_SIZE(buf):
        raise ValueError("stamp offset outside the record")
    (<uint64_t *>(p + off))[0] = now_ns()
    w.write_ptr(p, <size_t>PyByteArray_GET_SIZE(buf))
