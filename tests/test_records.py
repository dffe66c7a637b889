"""The numpy dtypes (dm/records.py) mirror the C structs (dm/_records.pxd) exactly, and the
Python record objects decode what the dtypes describe."""
from __future__ import annotations

import numpy as np
from hypothesis import given, strategies as st

from dm import records
from dm._records import record_layout


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
        elif arr.dtype.fields[name][0].kind == "S":  # NUL-padded text
            assert getattr(rec, name) == records.c_string(arr[name]), name
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


def test_every_record_kind_is_in_the_layout():
    assert set(record_layout()) == {int(k) for k in records.DTYPES}


def test_gap_record_round_trips():
    raw = records.gap_record(1001, 42, "restart", 10, 20, records.GapUnits.NS, 30, "worker binance pid 7 died" * 5)
    g = records.unpack(raw)
    assert (g.rtype, g.instrument_id, g.kind, g.first_missing, g.last_missing, g.units) == (records.RType.GAP, 42, "restart", 10, 20, 1)
    assert g.detail == ("worker binance pid 7 died" * 5)[:64] and g.ts_event == g.ts_recv == 30


def test_sizes_scale_by_their_record_size_precision():
    t = records.Trade(16, records.RType.TRADE, 1, 1, 0, 0, 123_450_000_000, 12_000_000_000, 0, 0, 66, 0, 0)
    assert str(t.dec("size")) == "12000000000" and str(t.dec("price")) == "123.450000000"
    assert records.size_precision_of("0.00100000") == 3 and records.size_precision_of("1.00") == 0
    assert records.from_decimal("12000000000", 0) == 12_000_000_000
