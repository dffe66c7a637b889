"""dm.client's record objects (dm/_recobj.pyx) against the dm.records namedtuples, field for field,
on every record kind and arbitrary bytes; tuple-like behaviour; pickling (also into another
process); reading them from a real channel ring, overruns included."""
from __future__ import annotations

import multiprocessing as mp
import pickle
from decimal import Decimal

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from dm import _recobj, records
from dm._ring import ChannelReader, ChannelWriter, unlink_segment

KINDS = sorted(records.DTYPES)


def _raw(rtype: int, body: bytes) -> bytes:
    b = bytearray(body)
    b[0], b[1] = records.DTYPES[rtype].itemsize // 4, rtype
    return bytes(b)


def _kind_bytes():
    return st.sampled_from(KINDS).flatmap(
        lambda rt: st.binary(min_size=records.DTYPES[rt].itemsize, max_size=records.DTYPES[rt].itemsize).map(lambda b: _raw(rt, b)))


@settings(max_examples=400)
@given(_kind_bytes())
def test_record_objects_equal_the_namedtuples_field_for_field(raw):
    nt = records.unpack(raw)
    obj = _recobj.from_bytes(raw)
    assert type(obj).__name__ == type(nt).__name__ and type(obj) is _recobj.TYPES[raw[1]]
    assert obj._fields == nt._fields
    for name in nt._fields:
        got, want = getattr(obj, name), getattr(nt, name)
        assert got == want and type(got) is type(want), name
    assert obj == nt and nt == obj and not (obj != nt) and hash(obj) == hash(nt)
    assert tuple(obj) == tuple(nt) and len(obj) == len(nt) and obj[5] == nt[5] and obj[-1] == nt[-1]
    t = obj.to_tuple()
    assert type(t) is type(nt) and t == nt
    assert obj._asdict() == nt._asdict()
    assert repr(obj) == repr(nt)
    assert bytes(obj) == raw
    assert isinstance(obj, type(nt)) and isinstance(obj, _recobj.Record)
    for name in nt._fields:  # the fixed-point helpers agree, errors (text fields, tuples) included
        for helper in ("dec", "f"):
            try:
                want_v = getattr(nt, helper)(name)
            except Exception as e:  # noqa: BLE001 - whatever it is, the object raises the same
                with pytest.raises(type(e)):
                    getattr(obj, helper)(name)
                continue
            assert getattr(obj, helper)(name) == want_v, (helper, name)


@given(_kind_bytes())
def test_pickling_round_trips(raw):
    obj = _recobj.from_bytes(raw)
    back = pickle.loads(pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL))
    assert type(back) is type(obj) and back == obj and bytes(back) == raw


def test_isinstance_against_the_namedtuple_classes_is_exact():
    trade = _recobj.from_bytes(_raw(records.RType.TRADE, bytes(64)))
    gap = _recobj.from_bytes(records.gap_record(1, 2, "restart", 3, 4, records.GapUnits.NS, 5))
    assert isinstance(trade, records.Trade) and not isinstance(trade, records.Gap)
    assert isinstance(gap, records.Gap) and not isinstance(gap, (records.Trade, records.Bbo))
    assert isinstance(records.unpack(bytes(gap)), records.Gap)  # the namedtuples are unchanged
    assert not isinstance(records.unpack(bytes(gap)), _recobj.Gap)
    assert gap.kind == "restart" and (gap.first_missing, gap.last_missing, gap.units) == (3, 4, 1)


def test_equality_and_order_are_tuple_like():
    a = _recobj.from_bytes(_raw(records.RType.TRADE, bytes(64)))
    b_raw = bytearray(bytes(a))
    b_raw[24] = 1  # price 1
    b = _recobj.from_bytes(bytes(b_raw))
    assert a != b and a < b and b > a and a <= a
    assert {a: 1}[a.to_tuple()] == 1  # equal values hash equal, as tuples do
    assert (a == "x") is False and a != 3
    reserved = bytearray(bytes(a))
    reserved[-1] = 7  # a reserved byte is not a field: equal records all the same
    assert _recobj.from_bytes(bytes(reserved)) == a


def test_sizes_scale_by_the_records_size_precision():
    a = np.zeros(1, records.TRADE_DTYPE)
    a["length"], a["rtype"], a["price"], a["size"], a["size_precision"] = 16, records.RType.TRADE, 123_450_000_000, 12_000, 3
    t = _recobj.from_bytes(a.tobytes())
    assert t.dec("price") == Decimal("123.45") and t.dec("size") == Decimal("12") and t.f("size") == 12.0
    with pytest.raises(AttributeError):
        t.dec("nope")


def test_depth_levels_and_bad_input():
    a = np.zeros(1, records.DEPTH_DTYPE)
    a["length"], a["rtype"] = records.DEPTH_DTYPE.itemsize // 4, records.RType.DEPTH
    a["levels"][0, 3] = (1, 2, 3, 4)
    d = _recobj.from_bytes(a.tobytes())
    assert d.level(3) == (1, 2, 3, 4) and d.levels[3] == (1, 2, 3, 4) and len(d.levels) == 10
    with pytest.raises(IndexError):
        d.level(10)
    with pytest.raises(KeyError):
        _recobj.from_bytes(bytes([16, 0x42]) + bytes(62))  # an rtype dm does not know, as unpack
    with pytest.raises(ValueError):
        _recobj.from_bytes(a.tobytes()[:200])  # shorter than its struct
    assert _recobj.from_bytes(memoryview(bytearray(a.tobytes()))) == d  # any bytes-like


def _unpickle_in_child(blob: bytes, q) -> None:
    obj = pickle.loads(blob)
    q.put((type(obj).__module__, type(obj).__name__, obj.to_tuple()))


def test_record_objects_travel_to_another_process():
    raw = records.gap_record(1001, 42, "reconnect", 10, 20, records.GapUnits.SEQUENCE, 30, "détail")
    obj = _recobj.from_bytes(raw)
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    p = ctx.Process(target=_unpickle_in_child, args=(pickle.dumps(obj), q))
    p.start()
    mod, name, tup = q.get(timeout=60)
    p.join(30)
    assert (mod, name) == ("dm._recobj", "Gap") and tup == records.unpack(raw) and tup.detail == "détail"


def _trade(i: int) -> bytes:
    a = np.zeros(1, records.TRADE_DTYPE)
    a["length"], a["rtype"], a["trade_id"], a["ts_recv"] = 16, records.RType.TRADE, i, i
    return a.tobytes()


def test_read_record_from_a_ring_with_an_overrun(instance):
    name = f"/dm.{instance}.RO.BTCUSD"
    w = ChannelWriter(name, 1 << 12, records.LAYOUT_HASH)
    lost_calls = []

    def on_overrun(ctx, lost, raw):
        lost_calls.append((ctx, lost, raw))
        return ("overrun", lost)

    try:
        r = ChannelReader(name, records.LAYOUT_HASH, start="oldest")
        assert _recobj.read_record(r, on_overrun, "ctx") is None
        w.write(_trade(0))
        t = _recobj.read_record(r, on_overrun, "ctx")
        assert isinstance(t, _recobj.Trade) and t.trade_id == 0
        for i in range(1, 200):  # 4 KiB ring, 64 B records: the reader is lapped
            w.write(_trade(i))
        item = _recobj.read_record(r, on_overrun, "ctx")
        assert item[0] == "overrun" and lost_calls[0][0] == "ctx"
        lost, nxt = lost_calls[0][1], records.unpack(lost_calls[0][2])
        assert nxt.trade_id == 1 + lost  # the record after the loss comes with the marker
        rest = []
        while (x := _recobj.spin_record(r, on_overrun, "ctx", 0.001)) is not None:
            rest.append(x.trade_id)
        assert rest == list(range(nxt.trade_id + 1, 200))
        assert _recobj.spin_raw(r, 0.001) is None
        w.write(_trade(200))
        assert records.unpack(_recobj.spin_raw(r, 0.5)).trade_id == 200
        r.close()
        from dm.errors import ClosedError
        for call in (lambda: _recobj.read_record(r, on_overrun, None), lambda: _recobj.spin_record(r, on_overrun, None, 0.0),
                     lambda: _recobj.spin_raw(r, 0.0)):
            with pytest.raises(ClosedError):
                call()
    finally:
        w.close(unlink=True)
        unlink_segment(name)
