"""The numpy dtypes (dm/records.py) mirror the C structs (dm/_records.pxd) exactly, and the
Python record objects decode what the dtypes describe."""
from __future__ import annotations

import numpy as np
from hypothesis import given, strategies as st

from dm import records
from dm._codec import record_layout


def test_dtypes_match_the_c_structs():
    layout = record_layout()
    assert set(layout) >= {int(k) for k in records.DTYPES if k in layout}
    for rtype, (size, fields) in layout.items():
        dt = records.DTYPES[rtype]
        assert dt.itemsize == size, (hex(rtype), dt.itemsize, size)
        assert size % 8 == 0 and size // 4 < 256  # 8-byte aligned; length fits the u8 in words
        for name, off in fields.items():
            assert dt.fields[name][1] == off, (hex(rtype), name)


def test_layout_hash_changes_with_the_layout():
    assert records.LAYOUT_HASH == records._layout_hash()
    saved = records.DTYPES[records.RType.TRADE]
    try:
        records.DTYPES[records.RType.TRADE] = np.dtype(records._HEADER + [(f"x{i}", "<u8") for i in range(6)])
        assert records._layout_hash() != records.LAYOUT_HASH
    finally:
        records.DTYPES[records.RType.TRADE] = saved


@given(st.sampled_from(sorted(records.DTYPES)), st.data())
def test_unpack_agrees_with_the_dtype(rtype, data):
    dt = records.DTYPES[rtype]
    raw = bytearray(data.draw(st.binary(min_size=dt.itemsize, max_size=dt.itemsize)))
    raw[0], raw[1] = dt.itemsize // 4, rtype
    arr = np.frombuffer(bytes(raw), dt)[0]
    rec = records.unpack(bytes(raw))
    for name in rec._fields:
        if name == "levels":
            assert rec.levels == tuple(tuple(int(v) for v in lvl) for lvl in arr["levels"])
        elif np.ndim(arr[name]):
            assert tuple(getattr(rec, name)) == tuple(int(v) for v in arr[name]), name
        else:
            assert getattr(rec, name) == int(arr[name]), name


def test_fixed_point_helpers_are_exact():
    assert records.from_decimal("0.000000001") == 1
    assert records.from_decimal("-9223372036.854775808") == records.I64_MIN
    assert str(records.to_decimal(123_456_789_012)) == "123.456789012"
    for bad in ("0.0000000001", "9223372036.854775808"):
        try:
            records.from_decimal(bad)
        except ValueError:
            continue
        raise AssertionError(bad)
