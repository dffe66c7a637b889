"""Databento DBN → dm records: lossless on every real DBN file (v1, v2, v3), oracle
``databento_dbn.DBNDecoder``; versions agree; random records round-trip; corrupt input raises
``DbnError`` (a ``CodecError``), never anything else."""
from __future__ import annotations

import struct
from pathlib import Path

import databento_dbn as dbn
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dm import records as R
from dm._dbn import _struct_layout
from dm.dbn import SCHEMA_NAMES, STYPE_NAMES, DbnConverter, DbnError, decompress, read_dbn, split_records
from dm.errors import CodecError

DATA = Path(__file__).resolve().parent.parent / "data" / "databento"
FILES = sorted(p for p in DATA.rglob("*") if p.name.endswith((".dbn", ".dbn.zst")))
SCALE = R.FIXED_SCALE
SZ = 1   # DBN sizes keep their native scale in dm (size_precision 0)
UNDEF = R.UNDEF_PRICE
PRIMARY = {0x00: R.RType.TRADE, 0x01: R.RType.BBO, 0x0A: R.RType.DEPTH}
INTERVAL = {0x20: 1, 0x21: 60, 0x22: 3600, 0x23: 86400}
RTYPE_OF_INTERVAL = {v: k for k, v in INTERVAL.items()}


def raw(path: Path) -> bytes:
    return decompress(path.read_bytes())


def oracle(data: bytes, **kw):
    dec = dbn.DBNDecoder(upgrade_policy=dbn.VersionUpgradePolicy.AS_IS, **kw)
    dec.write(data)
    out = dec.decode()
    return out[0], out[1:]


def dm_records(buf: bytes) -> list:
    out, off = [], 0
    while off < len(buf):
        ln = buf[off] * 4
        out.append(R.unpack(buf[off:off + ln]))
        off += ln
    return out


def group(recs: list, events: bool = True) -> list[tuple]:
    """dm records → [(primary, event-or-None)] per DBN record."""
    out, i = [], 0
    while i < len(recs):
        r = recs[i]
        if events and r.rtype in (R.RType.TRADE, R.RType.BBO, R.RType.DEPTH):
            e = recs[i + 1]
            assert e.rtype == R.RType.MBP_EVENT
            assert e[2:5] == r[2:5]            # same publisher, instrument, ts_event
            out.append((r, e))
            i += 2
        else:
            out.append((r, None))
            i += 1
    return out


# -- the inverse: dm records → DBN bytes (proves nothing was dropped) ---------------------------

def _unscale(v: int) -> int:
    assert v % SZ == 0
    return v // SZ


def to_dbn(p, e) -> bytes:
    """Rebuild the exact DBN record from the dm record(s) it became."""
    if p.rtype == R.RType.BAR:
        return struct.pack("<BBHIQqqqqQ", 14, RTYPE_OF_INTERVAL[p.interval_s], p.publisher_id,
                           p.instrument_id, p.ts_event, p.open, p.high, p.low, p.close, _unscale(p.volume))
    rtype = {R.RType.TRADE: 0x00, R.RType.BBO: 0x01, R.RType.DEPTH: 0x0A}[p.rtype]
    levels = {0x00: 0, 0x01: 1, 0x0A: 10}[rtype]
    head = struct.pack("<BBHIQqIBBBBQiI", (48 + 32 * levels) // 4, rtype, e.publisher_id, e.instrument_id,
                       e.ts_event, e.price, _unscale(e.size), e.action, e.side, e.flags, e.depth,
                       e.ts_recv, e.ts_in_delta, e.sequence)
    if rtype == 0x00:
        return head
    if rtype == 0x01:
        return head + struct.pack("<qqIIII", p.bid_px, p.ask_px, _unscale(p.bid_sz), _unscale(p.ask_sz),
                                  p.bid_ct, p.ask_ct)
    return head + b"".join(
        struct.pack("<qqIIII", bp, ap, _unscale(bs), _unscale(as_), e.bid_ct[i], e.ask_ct[i])
        for i, (bp, ap, bs, as_) in enumerate(p.levels))


def check_fields(p, e, r) -> None:
    """Every field databento_dbn decodes equals the dm record's (exact ints)."""
    assert (p.publisher_id, p.instrument_id, p.ts_event) == (int(r.publisher_id), r.instrument_id, r.ts_event)
    rt = int(r.rtype)
    if rt in INTERVAL or rt == 0x11:
        assert p.rtype == R.RType.BAR and e is None
        assert (p.open, p.high, p.low, p.close) == (r.open, r.high, r.low, r.close)
        assert p.volume == r.volume * SZ and p.flags == 0 and p.size_precision == 0
        if rt in INTERVAL:
            assert p.interval_s == INTERVAL[rt]
        return
    assert p.rtype == PRIMARY[rt]
    assert (e.price, e.size, e.side, e.action, e.flags, e.depth) == (
        r.price, r.size * SZ, ord(str(r.side)), ord(str(r.action)), int(r.flags), r.depth)
    assert (e.ts_recv, e.ts_in_delta, e.sequence) == (r.ts_recv, r.ts_in_delta, r.sequence)
    assert (p.ts_recv, p.sequence, p.flags) == (r.ts_recv, r.sequence, int(r.flags))
    if rt == 0x00:
        assert (p.price, p.size, p.side, p.trade_id) == (r.price, r.size * SZ, ord(str(r.side)), 0)
        assert p.size_precision == 0
        assert e.bid_ct == e.ask_ct == (0,) * 10
    elif rt == 0x01:
        lv = r.levels[0]
        assert (p.bid_px, p.ask_px, p.bid_sz, p.ask_sz, p.bid_ct, p.ask_ct) == (
            lv.bid_px, lv.ask_px, lv.bid_sz * SZ, lv.ask_sz * SZ, lv.bid_ct, lv.ask_ct)
        assert (e.bid_ct[0], e.ask_ct[0]) == (lv.bid_ct, lv.ask_ct) and e.bid_ct[1:] == (0,) * 9
    else:
        assert len(r.levels) == 10
        for i, lv in enumerate(r.levels):
            assert p.levels[i] == (lv.bid_px, lv.ask_px, lv.bid_sz * SZ, lv.ask_sz * SZ)
            assert (e.bid_ct[i], e.ask_ct[i]) == (lv.bid_ct, lv.ask_ct)
        nb = next((i for i, lv in enumerate(r.levels) if lv.bid_px == UNDEF), 10)
        na = next((i for i, lv in enumerate(r.levels) if lv.ask_px == UNDEF), 10)
        assert (p.n_bid, p.n_ask) == (nb, na)


# -- real files ---------------------------------------------------------------------------------

def test_every_data_file_is_found():
    assert len(FILES) == 31
    assert {raw(p)[3] for p in FILES} == {1, 2, 3}


@pytest.mark.parametrize("path", FILES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_real_file_lossless_against_databento_dbn(path):
    data = raw(path)
    meta, recs = oracle(data)
    res = read_dbn(path)
    assert res == read_dbn(data)                       # path and bytes agree
    assert (res.version, res.dataset, res.schema) == (meta.version, meta.dataset, meta.schema.value)
    assert (res.stype_in, res.stype_out) == (meta.stype_in.value, meta.stype_out.value)
    assert (res.start, res.end) == (meta.start, meta.end)
    want = {int(iv["symbol"]): sym for sym, ivs in meta.mappings.items() for iv in ivs}
    assert res.symbols == want and res.symbols
    assert res.dbn_count == len(recs) and res.skipped == {}
    out = dm_records(res.records)
    pairs = group([r for r in out if r.rtype != R.RType.INSTRUMENT_DEF])
    defs = [r for r in recs if int(r.rtype) == 0x13]
    market = [r for r in recs if int(r.rtype) != 0x13]
    assert len(pairs) == len(market) and res.count == len(out)
    for (p, e), r in zip(pairs, market):
        check_fields(p, e, r)
        assert to_dbn(p, e) == bytes(r)                # byte-exact inverse: nothing dropped
    assert [(d.instrument_id, d.raw_symbol, d.min_price_increment, d.display_factor, d.ts_recv)
            for d in res.definitions] == [(r.instrument_id, r.raw_symbol, r.min_price_increment,
                                           r.display_factor, r.ts_recv) for r in defs]
    got_defs = [r for r in out if r.rtype == R.RType.INSTRUMENT_DEF]
    assert len(got_defs) == len(defs) and res.rejected == []
    for g, r in zip(got_defs, defs):
        check_definition(g, r, res.dataset)
    arrays = res.arrays()
    assert sum(len(a) for a in arrays.values()) == res.count
    for rt, a in arrays.items():
        assert a.dtype == R.DTYPES[rt] and (a["length"].astype(int) * 4 == a.dtype.itemsize).all()


def _c(v) -> int:
    return ord(str(getattr(v, "value", v)))


def check_definition(g, r, dataset: str) -> None:
    """An INSTRUMENT_DEF record against the DBN definition it came from (mapping: dm/_dbn.pyx)."""
    assert (g.publisher_id, g.instrument_id, g.ts_event, g.ts_recv) == (
        int(r.publisher_id), r.instrument_id, r.ts_event, r.ts_recv)
    assert (g.min_price_increment, g.display_factor, g.strike_price) == (
        r.min_price_increment, r.display_factor, r.strike_price)
    assert (g.expiration, g.activation) == (r.expiration, r.activation)
    assert g.lot_size == (r.min_lot_size_round_lot * SZ if 0 < r.min_lot_size_round_lot < 2**31 - 1 else 0)
    if r.unit_of_measure_qty != UNDEF:
        assert g.contract_multiplier == r.unit_of_measure_qty
    else:
        assert g.contract_multiplier == (r.contract_multiplier * SCALE if 0 < r.contract_multiplier < 2**31 - 1 else UNDEF)
    assert (g.symbol, g.raw_symbol, g.exchange) == (r.raw_symbol, r.raw_symbol, r.exchange or dataset)
    assert (g.underlying, g.base, g.quote) == (r.underlying, r.asset, r.currency)
    assert g.instrument_class == _c(r.instrument_class) and g.size_precision == 0 and g.flags == 0


def test_definitions_become_instrument_def_records():
    """The two CME futures definitions of the main set, field by field (data/README.md §12)."""
    d = DATA / "glbx-mdp3-esu4-nqu4-20240701"
    res = read_dbn(d / "futures_definition.dbn.zst")
    es, nq = dm_records(res.records)
    assert (es.rtype, es.instrument_id, es.symbol, es.exchange, es.raw_symbol) == (R.RType.INSTRUMENT_DEF, 118, "ESU4", "XCME", "ESU4")
    assert es.dec("min_price_increment") == R.to_decimal(250_000_000) and es.price_precision == 2
    assert es.dec("display_factor") == R.to_decimal(10_000_000)
    assert es.contract_multiplier == 50 * SCALE and nq.contract_multiplier == 20 * SCALE   # unit_of_measure_qty
    assert es.expiration == nq.expiration == 1726839000000000000                            # 2024-09-20 13:30 UTC
    assert (es.base, es.quote, chr(es.instrument_class)) == ("ES", "USD", "F")
    assert es.strike_price == UNDEF and es.lot_size == 0 and res.count == 2
    assert (nq.instrument_id, nq.symbol, nq.activation) == (4358, "NQU4", 1686922200000000000)


def test_long_raw_symbol_is_rejected_not_truncated():
    """A definition whose raw symbol does not fit INSTRUMENT_DEF's 48 bytes produces no record and
    is listed in ``rejected``; the stream goes on."""
    data = bytearray(raw(DATA / "dbn-versions" / "test_data.definition.v3.dbn.zst"))
    hl = 8 + struct.unpack_from("<I", data, 4)[0]
    long_sym = b"X" * 60
    data[hl + 238:hl + 238 + 60] = long_sym                   # raw_symbol of the first definition
    res = read_dbn(bytes(data))
    assert res.rejected == [(6819, "X" * 60, "raw symbol longer than 48 bytes")]
    assert [r.instrument_id for r in dm_records(res.records)] == [6830]


def test_main_set_facts():
    """Facts of data/README.md section 5 hold on the converted records."""
    d = DATA / "glbx-mdp3-esu4-nqu4-20240701"
    mbp = group(dm_records(read_dbn(next(d.glob("futures_mbp-1_*"))).records))
    trades = group(dm_records(read_dbn(next(d.glob("futures_trades_*"))).records))
    assert len(mbp) == 2288 and len(trades) == 120
    actions = {}
    for _, e in mbp:
        actions[chr(e.action)] = actions.get(chr(e.action), 0) + 1
    assert actions == {"A": 1061, "C": 989, "T": 120, "M": 118}
    assert [(t.ts_event, t.sequence, t.price, t.size, t.side) for t, _ in trades] == [
        (e.ts_event, e.sequence, e.price, e.size, e.side) for _, e in mbp if e.action == R.ACTION_TRADE]
    first = mbp[0]
    assert first[1].ts_in_delta == 17664 and first[0].bid_px == 5528_500_000_000 and first[0].bid_ct == 22
    assert first[0].bid_sz == 29 and first[0].size_precision == 0 and chr(first[1].side) == "B"
    snap = [b for b, e in mbp if b.flags == R.Flag.LAST | R.Flag.SNAPSHOT | R.Flag.BAD_TS_RECV]
    assert len(snap) == 1 and snap[0].ts_recv == 1719878400 * SCALE
    assert sum(b.flags == R.Flag.LAST | R.Flag.PUBLISHER_SPECIFIC for b, _ in mbp) == 2167
    assert all(e.flags == 0 for _, e in mbp if e.action == R.ACTION_TRADE)
    seq = [b.sequence for b, _ in mbp]
    assert seq[0] == 9_060_643 and seq[-1] == 9_064_213 and seq == sorted(seq)
    bars = dm_records(read_dbn(next(d.glob("futures_ohlcv-1m_*"))).records)
    for iid in (118, 4358):
        ts = [b.ts_event for b in bars if b.instrument_id == iid]
        assert len(ts) == 30 and all(b - a == 60 * SCALE for a, b in zip(ts, ts[1:]))
    assert {b.interval_s for b in bars} == {60}
    defs = read_dbn(d / "futures_definition.dbn.zst").definitions
    assert [(x.raw_symbol, x.instrument_id, x.min_price_increment) for x in defs] == [
        ("ESU4", 118, 250_000_000), ("NQU4", 4358, 250_000_000)]


@pytest.mark.parametrize("schema", ["trades", "mbp-1", "mbp-10", "ohlcv-1m", "definition"])
def test_v1_v2_v3_give_identical_dm_records(schema):
    d = DATA / "dbn-versions"
    res = [read_dbn(d / f"test_data.{schema}.v{v}.dbn.zst") for v in (1, 2, 3)]
    assert [r.version for r in res] == [1, 2, 3]
    assert res[0].records == res[1].records == res[2].records
    assert res[0].symbols == res[1].symbols == res[2].symbols
    assert res[0].definitions == res[1].definitions == res[2].definitions
    assert res[0].count == res[0].dbn_count * (1 if schema.startswith("ohlcv") else 2) or schema == "definition"
    plain = d / f"test_data.{schema}.dbn"
    if plain.exists():
        assert read_dbn(plain).records == res[1].records


def test_events_false_keeps_only_primary_records():
    p = DATA / "dbn-versions" / "test_data.mbp-10.v3.dbn.zst"
    full, lean = read_dbn(p), read_dbn(p, events=False)
    assert lean.count == full.count // 2
    assert lean.records == b"".join(bytes(x) for x in [split_records(full.records)[R.RType.DEPTH]])


def test_struct_layout_matches_numpy_dtype():
    lay = _struct_layout()
    dt = R.MBP_EVENT_DTYPE
    assert lay.pop("itemsize") == dt.itemsize == 136
    for name, off in lay.items():
        assert dt.fields[name][1] == off, name


def test_schema_and_stype_tables_match_dbn():
    for i, name in enumerate(SCHEMA_NAMES):
        assert dbn.Schema.from_int(i).value == name
    for i, name in enumerate(STYPE_NAMES):
        assert dbn.SType.from_int(i).value == name


@pytest.mark.parametrize("version", [1, 2, 3])
@pytest.mark.parametrize("schema", list(dbn.Schema.variants()), ids=str)
def test_metadata_of_every_schema_and_version(version, schema):
    m = dbn.Metadata("XNAS.ITCH", 5, dbn.SType.INSTRUMENT_ID, dbn.SType.RAW_SYMBOL, schema,
                     symbols=["6155"], mappings=[], end=99, limit=7, version=version)
    c = DbnConverter()
    assert c.feed(m.encode()) == b""
    c.finish()
    assert (c.version, c.dataset, c.schema, c.start, c.end, c.limit) == (version, "XNAS.ITCH", schema.value, 5, 99, 7)
    assert (c.stype_in, c.stype_out, c.query_symbols) == ("instrument_id", "raw_symbol", ["6155"])


# -- random records -----------------------------------------------------------------------------

u8, u16, u32 = st.integers(0, 255), st.integers(0, 2**16 - 1), st.integers(0, 2**32 - 1)
u64, i64, i32 = st.integers(0, 2**64 - 1), st.integers(-(2**63), 2**63 - 1), st.integers(-(2**31), 2**31 - 1)
side = st.sampled_from(b"ABN")
action = st.sampled_from(b"AMCRTFN")
price = st.one_of(i64, st.just(UNDEF))


@st.composite
def dbn_record(draw):
    kind = draw(st.sampled_from(["trade", "mbp1", "mbp10", "ohlcv"]))
    hd = (draw(u16), draw(u32), draw(u64))
    if kind == "ohlcv":
        rt = draw(st.sampled_from(sorted(INTERVAL)))
        return struct.pack("<BBHIQqqqqQ", 14, rt, *hd, draw(i64), draw(i64), draw(i64), draw(i64),
                           draw(st.integers(0, 18_446_744_073)))
    n = {"trade": 0, "mbp1": 1, "mbp10": 10}[kind]
    rt = {"trade": 0, "mbp1": 1, "mbp10": 10}[kind]
    body = struct.pack("<BBHIQqIBBBBQiI", (48 + 32 * n) // 4, rt, *hd, draw(price), draw(u32), draw(action),
                       draw(side), draw(u8), draw(u8), draw(u64), draw(i32), draw(u32))
    for _ in range(n):
        body += struct.pack("<qqIIII", draw(price), draw(price), draw(u32), draw(u32), draw(u32), draw(u32))
    return body


def _header(version: int) -> bytes:
    return dbn.Metadata("GLBX.MDP3", 0, dbn.SType.RAW_SYMBOL, dbn.SType.INSTRUMENT_ID, dbn.Schema.MBP_1,
                        symbols=[], mappings=[], version=version).encode()


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(dbn_record(), min_size=1, max_size=12), st.sampled_from([1, 2, 3]), st.randoms(use_true_random=False))
def test_random_records_round_trip(recs, version, rnd):
    body = b"".join(recs)
    data = _header(version) + body
    res = read_dbn(data)
    pairs = group(dm_records(res.records))
    assert [to_dbn(p, e) for p, e in pairs] == recs
    _, orc = oracle(data)
    for (p, e), r in zip(pairs, orc, strict=True):
        check_fields(p, e, r)
    # the bare record stream gives the same, and so does any chunking of the stream
    bare = DbnConverter(metadata=False, version=version)
    assert bare.feed(body) == res.records
    c, out, pos = DbnConverter(), [], 0
    while pos < len(data):
        k = rnd.randint(1, 97)
        out.append(c.feed(memoryview(data)[pos:pos + k]))
        pos += k
    c.finish()
    assert b"".join(out) == res.records and c.offset == len(data) and c.pending == 0


def test_ts_out_records_convert_and_drop_the_send_time():
    m = dbn.Metadata("GLBX.MDP3", 0, dbn.SType.RAW_SYMBOL, dbn.SType.INSTRUMENT_ID, dbn.Schema.TRADES,
                     ts_out=True, version=3).encode()
    t = dbn.TradeMsg(1, 5, 10, 2_000_000_000, 3, dbn.Action.TRADE, dbn.Side.BID, 0, 11, flags=128,
                     ts_in_delta=-4, sequence=9, ts_out=12)
    b = dbn.OHLCVMsg(0x22, 1, 5, 3600 * SCALE, 1, 4, 0, 2, 7, ts_out=13)
    res = read_dbn(m + bytes(t) + bytes(b))
    (p, e), (bar, _) = group(dm_records(res.records))
    assert (p.price, p.size, p.side, p.sequence, e.ts_in_delta) == (2_000_000_000, 3, ord("B"), 9, -4)
    assert (bar.interval_s, bar.volume, bar.high) == (3600, 7, 4)
    with pytest.raises(DbnError) as ei:                 # a stream without ts_out must not accept them
        DbnConverter(metadata=False, version=3).feed(bytes(t))
    assert ei.value.field == "length" and ei.value.offset == 0


def test_symbol_mapping_records_update_symbols_v1_and_v2():
    for version, msg in ((2, dbn.SymbolMappingMsg(1, 77, 5, dbn.SType.RAW_SYMBOL, "ES.FUT", dbn.SType.RAW_SYMBOL,
                                                  "ESU4", 1, 2)),
                         (1, dbn.SymbolMappingMsgV1(1, 77, 5, "ES.FUT", "ESU4", 1, 2))):
        c = DbnConverter(metadata=False, version=version)
        t = dbn.TradeMsg(1, 77, 10, 1, 1, dbn.Action.TRADE, dbn.Side.ASK, 0, 11)
        hb = struct.pack("<BBHIQ", 4, 0x17, 0, 0, 0)     # a header-only record of an unhandled rtype
        out = c.feed(bytes(msg) + hb + bytes(t))
        assert c.symbols == {77: "ESU4"} and c.skipped == {0x17: 1} and c.dbn_count == 3
        assert [r.rtype for r in dm_records(out)] == [R.RType.TRADE, R.RType.MBP_EVENT]


def test_deprecated_v1_ohlcv_rtype_takes_interval_from_schema():
    hd = dbn.Metadata("GLBX.MDP3", 0, dbn.SType.RAW_SYMBOL, dbn.SType.INSTRUMENT_ID, dbn.Schema.OHLCV_1D,
                      version=1).encode()
    rec = struct.pack("<BBHIQqqqqQ", 14, 0x11, 1, 5, 0, 1, 2, 0, 1, 9)
    (bar,) = dm_records(read_dbn(hd + rec).records)
    assert (bar.rtype, bar.interval_s, bar.volume) == (R.RType.BAR, 86400, 9)
    with pytest.raises(DbnError) as ei:
        DbnConverter(metadata=False, version=1).feed(rec)
    assert ei.value.field == "rtype"


# -- corrupt / truncated input -----------------------------------------------------------------

def _err(data, **kw) -> DbnError:
    with pytest.raises(DbnError) as ei:
        read_dbn(data, **kw)
    assert isinstance(ei.value, CodecError) and ei.value.venue == "DATABENTO"
    return ei.value


def test_specific_errors_name_field_and_offset():
    data = raw(DATA / "dbn-versions" / "test_data.trades.v2.dbn.zst")
    hl = 8 + struct.unpack_from("<I", data, 4)[0]
    assert _err(b"XBN\x02" + data[4:]).field == "magic"
    assert _err(b"").field == "metadata"
    assert _err(b"DBN\x04" + data[4:]).field == "version"
    assert _err(data[:5]).field == "metadata"
    assert _err(data[:hl - 3]).field == "metadata"
    e = _err(data[:-1])
    assert (e.field, e.offset) == ("length", hl + 48)             # second record truncated
    bad = bytearray(data)
    bad[hl + 29] = ord("X")
    e = _err(bytes(bad))
    assert (e.field, e.offset) == ("side", hl)
    bad = bytearray(data)
    bad[hl + 48 + 28] = ord("Q")
    assert (_err(bytes(bad)).field, _err(bytes(bad)).offset) == ("action", hl + 48)
    bad = bytearray(data)
    bad[hl] = 13                                                    # 52 bytes: not a trade's 48
    assert _err(bytes(bad)).field == "length"
    bad[hl] = 2                                                     # shorter than the header
    assert _err(bytes(bad)).offset == hl
    ohlcv = raw(DATA / "dbn-versions" / "test_data.ohlcv-1m.v3.dbn.zst")
    ol = 8 + struct.unpack_from("<I", ohlcv, 4)[0]
    bad = bytearray(ohlcv)
    bad[ol + 48:ol + 56] = struct.pack("<Q", 2**63)                # volume > i64: not storable
    assert (_err(bytes(bad)).field, _err(bytes(bad)).offset) == ("volume", ol)
    bad[ol + 48:ol + 56] = struct.pack("<Q", 2**63 - 1)
    assert read_dbn(bytes(bad)).count == 2
    z = (DATA / "dbn-versions" / "test_data.mbp-10.v3.dbn.zst").read_bytes()
    assert _err(z[:-5]).field == "zstd"
    assert _err(z[:4] + b"\0" * 20).field == "zstd"


@pytest.mark.parametrize("name", ["dbn-versions/test_data.mbp-10.v1.dbn.zst", "dbn-versions/test_data.definition.v2.dbn.zst",
                                  "databento-python/XNAS.ITCH/test_data.mbp-1.dbn.zst"])
def test_every_truncation_is_an_error_or_a_record_boundary(name):
    data = raw(DATA / name)
    full = read_dbn(data)
    hl = 8 + struct.unpack_from("<I", data, 4)[0]
    bounds, off = {hl}, hl
    while off < len(data):
        off += data[off] * 4
        bounds.add(off)
    for cut in range(len(data)):
        if cut in bounds:
            part = read_dbn(data[:cut])
            assert full.records.startswith(part.records)
        else:
            e = _err(data[:cut])
            assert e.field in ("metadata", "length", "magic") and 0 <= e.offset <= cut


@settings(max_examples=300, deadline=None)
@given(st.sampled_from([p for p in FILES if p.stat().st_size < 5000]), st.data())
def test_random_corruption_never_crashes(path, data):
    buf = bytearray(raw(path))
    for _ in range(data.draw(st.integers(1, 4))):
        i = data.draw(st.integers(0, len(buf) - 1))
        buf[i] = data.draw(u8)
    try:
        res = read_dbn(bytes(buf))
    except DbnError as e:
        assert e.venue == "DATABENTO" and e.field
        return
    assert sum(len(a) for a in split_records(res.records).values()) == res.count
