"""dm._codec on the real recordings (golden: every frame, against the pure-Python oracle and
against an independent json.loads + Decimal reading of the frame), the record contract, and
the public API (output buffer lifetime, counts, symbols)."""
from __future__ import annotations

import json
import re
from decimal import Decimal
from pathlib import Path

import numpy as np
import pytest

from dm import codec_ref as R
from dm import records as REC
from dm._codec import KIND_NAMES, parse_price, parse_size
from dm.venues.binance._codec import BinanceCodec
from dm.venues.binance.codec_ref import RefBinanceCodec
from dm.venues.kraken._codec import KrakenCodec
from dm.venues.kraken.codec_ref import RefKrakenCodec
from dm.venues.kraken_futures._codec import KrakenFuturesCodec
from dm.venues.kraken_futures.codec_ref import RefKrakenFuturesCodec
from dm.errors import CodecError, FixedPointError, UnknownInstrumentError

DATA = Path(__file__).resolve().parent.parent / "data"
BINANCE_MAIN = DATA / "binance" / "BINANCE-b38f7c.0"
BINANCE_FILES = [
    BINANCE_MAIN,
    DATA / "binance/2021-08-14/BINANCE.ws.1.0",
    DATA / "binance/2021-08-14/BINANCE.http.0.0",
    DATA / "binance/2021-10-12/BINANCE.ws.1.0",
    DATA / "binance/2021-10-12/BINANCE.http.0.0",
]
KRAKEN_FILES = sorted((DATA / "kraken").glob("KRAKEN-*.0"))
KF_FILE = DATA / "kraken_futures" / "KRAKEN_FUTURES.ws.1.0"

KRAKEN_PAIRS = ["ALGO/XBT", "LSK/USD", "USDC/GBP", "FIL/XBT", "WAVES/ETH", "ICX/USD", "AUD/USD",
                "KAVA/USD", "DASH/EUR", "XBT/USD"]
KF_PRODUCTS = ("fi_ethusd_211231 pi_xrpusd pi_ltcusd fi_bchusd_210730 pi_ethusd fi_xbtusd_210924 "
               "fi_ethusd_210730 fi_bchusd_210924 fi_xrpusd_210924 fi_xbtusd_210730").split()
SCALE = Decimal(10) ** 9


def binance_symbols() -> dict[str, int]:
    syms: dict[str, int] = {}
    for p in BINANCE_FILES:
        for m in re.finditer(rb'"s":"(\w+)"', p.read_bytes()):
            syms.setdefault(m.group(1).decode(), 100 + len(syms))
        for m in re.finditer(rb"symbol=(\w+)", p.read_bytes()):
            syms.setdefault(m.group(1).decode(), 100 + len(syms))
    return syms


BSYMS = binance_symbols()
KSYMS = {s: 200 + i for i, s in enumerate(KRAKEN_PAIRS)}
FSYMS = {s: 300 + i for i, s in enumerate(KF_PRODUCTS)}


def pair(venue: str):
    if venue == "binance":
        return BinanceCodec(1001, BSYMS), RefBinanceCodec(1001, BSYMS)
    if venue == "kraken":
        return KrakenCodec(1002, KSYMS), RefKrakenCodec(1002, KSYMS)
    return KrakenFuturesCodec(1003, FSYMS), RefKrakenFuturesCodec(1003, FSYMS)


def outcome(fn, codec, *args):
    """Everything observable about one decode: records + state, or the error."""
    try:
        n = fn(*args)
    except CodecError as e:
        return ("error", type(e).__name__, e.venue, e.reason, e.field, e.offset)
    return (n, bytes(codec.output()), codec.last_kind, codec.instrument_id, codec.first_seq,
            codec.last_seq, codec.checksum, list(codec.value_errors), codec.value_error_count)


def both(c, r, frame, ts=1):
    return outcome(c.decode, c, frame, ts), outcome(r.decode, r, frame, ts)


def split_records(buf) -> list[np.void]:
    """Walk a record buffer by each header's length; check the length matches the rtype."""
    buf = bytes(buf)
    out, i = [], 0
    while i < len(buf):
        size = buf[i] * 4
        assert size == REC.SIZES[buf[i + 1]], "length byte disagrees with rtype"
        out.append(REC.view(buf[i:i + size]))
        i += size
    assert i == len(buf)
    return out


def fx(text: str) -> int:
    return int(Decimal(text) * SCALE)


# ---------------------------------------------------------------------------------------------
# golden: every frame of every recording, Cython == oracle


@pytest.mark.parametrize("path", BINANCE_FILES, ids=lambda p: p.name + "@" + p.parent.name)
def test_binance_recordings_match_oracle(path):
    c, r = pair("binance")
    n = 0
    for kind, url, ts, text in R.iter_recording(path):
        if kind == "rest":
            sym = re.search(r"symbol=(\w+)", url).group(1)
            a = outcome(c.decode_snapshot, c, text, sym, ts)
            b = outcome(r.decode_snapshot, r, text, sym, ts)
        else:
            a, b = both(c, r, text, ts)
        assert a == b, text[:200]
        assert a[0] != "error", a
        n += 1
    assert n > 0
    assert c.counts() == r.counts()


@pytest.mark.parametrize("path", KRAKEN_FILES, ids=lambda p: p.name)
def test_kraken_recordings_match_oracle(path):
    c, r = pair("kraken")
    for kind, _, ts, text in R.iter_recording(path):
        a, b = both(c, r, text, ts)
        assert a == b, text[:200]
        assert a[0] != "error", a
    assert c.counts() == r.counts()


def test_kraken_futures_recording_matches_oracle():
    c, r = pair("kf")
    for kind, _, ts, text in R.iter_recording(KF_FILE):
        a, b = both(c, r, text, ts)
        assert a == b, text[:200]
        assert a[0] != "error", a
    assert c.counts() == {"info": 1, "subscription": 30, "book": 7014, "bookSnapshot": 10,
                          "tradeSnapshot": 10, "trade": 3, "tickerLite": 107}


def test_recording_counts_match_the_data_readme():
    c, _ = pair("binance")
    for kind, url, ts, text in R.iter_recording(BINANCE_MAIN):
        if kind == "ws":
            c.decode(text, ts)
    assert c.counts() == {"aggTrade": 1240, "bookTicker": 5408, "depthUpdate": 4709}
    k, _ = pair("kraken")
    for _, _, ts, text in R.iter_recording(DATA / "kraken/KRAKEN-c197c0.0"):
        k.decode(text, ts)
    assert k.counts() == {"status": 1, "subscription": 10, "heartbeat": 119, "bookSnapshot": 10, "book": 14496}


# ---------------------------------------------------------------------------------------------
# golden: values against an independent reading (json.loads, Decimal), not the oracle


def test_binance_trades_and_bbo_equal_the_frame_decimals():
    c = BinanceCodec(1001, BSYMS)
    seen = {"aggTrade": 0, "bookTicker": 0}
    for kind, _, ts, text in R.iter_recording(BINANCE_MAIN):
        if kind != "ws":
            continue
        msg = json.loads(text)
        stream, d = msg["stream"], msg["data"]
        n = c.decode(text, ts)
        recs = split_records(c.output())
        assert len(recs) == n
        if stream.endswith("@aggTrade"):
            (t,) = recs
            assert t["rtype"] == REC.RType.TRADE and t["length"] == 16
            assert t["publisher_id"] == 1001 and t["instrument_id"] == BSYMS[d["s"]]
            assert t["ts_event"] == d["T"] * 1_000_000 and t["ts_recv"] == ts
            assert REC.to_decimal(int(t["price"])) == Decimal(d["p"])
            assert REC.to_decimal(int(t["size"])) == Decimal(d["q"])
            assert t["trade_id"] == t["sequence"] == d["a"]
            assert t["side"] == (ord("A") if d["m"] else ord("B"))
            assert t["flags"] == 0 and t["size_precision"] == 9 and bytes(t["_reserved"]) == bytes(5)
            assert c.first_seq == c.last_seq == 0
            seen["aggTrade"] += 1
        elif stream.endswith("@bookTicker"):
            (q,) = recs
            assert q["rtype"] == REC.RType.BBO and q["length"] == 20
            assert q["ts_event"] == q["ts_recv"] == ts
            assert q["flags"] == REC.Flag.TS_EVENT_IS_RECV
            assert REC.to_decimal(int(q["bid_px"])) == Decimal(d["b"])
            assert REC.to_decimal(int(q["bid_sz"])) == Decimal(d["B"])
            assert REC.to_decimal(int(q["ask_px"])) == Decimal(d["a"])
            assert REC.to_decimal(int(q["ask_sz"])) == Decimal(d["A"])
            assert q["sequence"] == d["u"] == c.first_seq == c.last_seq
            assert q["bid_ct"] == q["ask_ct"] == 0 and q["size_precision"] == 9 and bytes(q["_reserved"]) == bytes(6)
            seen["bookTicker"] += 1
        else:
            assert stream.endswith("@depth@100ms")
            levels = [(ord("B"), b) for b in d["b"]] + [(ord("A"), a) for a in d["a"]]
            assert len(recs) == len(levels)
            for i, (rec, (side, (p, q))) in enumerate(zip(recs, levels)):
                assert rec["side"] == side and rec["price"] == fx(p) and rec["size"] == fx(q)
                assert rec["action"] == (ord("C") if Decimal(q) == 0 else ord("A"))
                assert rec["sequence"] == d["u"] and rec["ts_event"] == d["E"] * 1_000_000
                assert rec["flags"] == (REC.Flag.LAST if i == len(recs) - 1 else 0)
            assert (c.first_seq, c.last_seq) == (d["U"], d["u"])
    assert seen == {"aggTrade": 1240, "bookTicker": 5408}


def test_binance_rest_snapshots():
    c = BinanceCodec(1001, BSYMS)
    n_snap = 0
    for path in BINANCE_FILES:
        for kind, url, ts, body in R.iter_recording(path):
            if kind != "rest":
                continue
            sym = re.search(r"symbol=(\w+)", url).group(1)
            d = json.loads(body)
            n = c.decode_snapshot(body, sym, ts)
            recs = split_records(c.output())
            assert n == len(recs) == 1 + len(d["bids"]) + len(d["asks"])
            clear = recs[0]
            assert chr(clear["action"]) == "R" and chr(clear["side"]) == "N"
            assert clear["price"] == REC.UNDEF_PRICE and clear["size"] == 0
            snap = REC.Flag.SNAPSHOT | REC.Flag.TS_EVENT_IS_RECV
            for rec in recs:
                assert rec["sequence"] == d["lastUpdateId"] and rec["ts_event"] == ts
                assert rec["instrument_id"] == BSYMS[sym]
            for rec in recs[:-1]:
                assert rec["flags"] == snap
            assert recs[-1]["flags"] == snap | REC.Flag.LAST
            exp = [(ord("B"), p, q) for p, q in d["bids"]] + [(ord("A"), p, q) for p, q in d["asks"]]
            assert [(r["side"], int(r["price"]), int(r["size"])) for r in recs[1:]] == \
                [(s, fx(p), fx(q)) for s, p, q in exp]
            assert c.first_seq == c.last_seq == d["lastUpdateId"]
            assert KIND_NAMES[c.last_kind] == "depthSnapshot"
            n_snap += 1
    assert n_snap == 18


def test_kraken_book_values_and_checksums():
    c = KrakenCodec(1002, KSYMS)
    n_upd = n_r = 0
    for kind, _, ts, text in R.iter_recording(DATA / "kraken/KRAKEN-c197c0.0"):
        msg = json.loads(text)
        n = c.decode(text, ts)
        recs = split_records(c.output())
        if isinstance(msg, dict):
            assert n == 0 and c.checksum == -1
            continue
        pays = msg[1:-2]
        assert c.instrument_id == KSYMS[msg[-1]]
        if "as" in pays[0] or "bs" in pays[0]:
            exp = [("A", lv) for lv in pays[0].get("as", [])] + [("B", lv) for lv in pays[0].get("bs", [])]
            assert chr(recs[0]["action"]) == "R"
            recs = recs[1:]
            assert c.checksum == -1
        else:
            exp = []
            for p in pays:
                exp += [("A", lv) for lv in p.get("a", [])] + [("B", lv) for lv in p.get("b", [])]
            assert c.checksum == int(pays[-1]["c"])
            n_upd += 1
        assert len(recs) == len(exp)
        for rec, (side, lv) in zip(recs, exp):
            assert chr(rec["side"]) == side
            assert rec["price"] == fx(lv[0]) and rec["size"] == fx(lv[1])
            assert rec["ts_event"] == fx(lv[2])          # seconds with µs -> ns, exact
            n_r += len(lv) == 4
        assert split_records(c.output())[-1]["flags"] & REC.Flag.LAST
    assert n_upd == 14496 and n_r == 2535


def test_kraken_trades_and_ticker_values():
    c = KrakenCodec(1002, KSYMS)
    n_trades = 0
    for _, _, ts, text in R.iter_recording(DATA / "kraken/KRAKEN-82ac16.0"):
        msg = json.loads(text)
        c.decode(text, ts)
        if isinstance(msg, list):
            recs = split_records(c.output())
            assert len(recs) == len(msg[1])
            for rec, (p, v, t, side, *_rest) in zip(recs, msg[1]):
                assert rec["price"] == fx(p) and rec["size"] == fx(v) and rec["ts_event"] == fx(t)
                assert chr(rec["side"]) == {"b": "B", "s": "A"}[side] and rec["trade_id"] == 0
            n_trades += len(recs)
    assert n_trades == 28
    n_tick = 0
    for _, _, ts, text in R.iter_recording(DATA / "kraken/KRAKEN-4b7396.0"):
        msg = json.loads(text)
        c.decode(text, ts)
        if isinstance(msg, list):
            (q,) = split_records(c.output())
            t = msg[1]
            assert q["bid_px"] == fx(t["b"][0]) and q["bid_sz"] == fx(t["b"][2])
            assert q["ask_px"] == fx(t["a"][0]) and q["ask_sz"] == fx(t["a"][2])
            assert q["ts_event"] == ts and q["flags"] == REC.Flag.TS_EVENT_IS_RECV
            n_tick += 1
    assert n_tick == 22


def test_kraken_futures_values():
    c = KrakenFuturesCodec(1003, FSYMS)
    for _, _, ts, text in R.iter_recording(KF_FILE):
        msg = json.loads(text, parse_float=Decimal, parse_int=Decimal)
        n = c.decode(text, ts)
        recs = split_records(c.output())
        feed = msg.get("feed") if "event" not in msg else None
        if feed == "book":
            (r,) = recs
            assert r["price"] == msg["price"] * SCALE and r["size"] == msg["qty"] * SCALE
            assert chr(r["side"]) == {"buy": "B", "sell": "A"}[msg["side"]]
            assert r["sequence"] == msg["seq"] == c.first_seq == c.last_seq
            assert r["ts_event"] == msg["timestamp"] * 10**6 and r["flags"] == REC.Flag.LAST
            assert c.instrument_id == FSYMS[msg["product_id"].lower()]
        elif feed == "book_snapshot":
            assert n == 1 + len(msg["bids"]) + len(msg["asks"])
            lv = [("B", x) for x in msg["bids"]] + [("A", x) for x in msg["asks"]]
            for r, (side, x) in zip(recs[1:], lv):
                assert chr(r["side"]) == side and r["price"] == x["price"] * SCALE and r["size"] == x["qty"] * SCALE
                assert r["flags"] & REC.Flag.SNAPSHOT
        elif feed == "trade_snapshot":
            assert n == len(msg["trades"])
            for r, t in zip(recs, msg["trades"]):
                assert r["trade_id"] == r["sequence"] == t["seq"] and r["flags"] == REC.Flag.SNAPSHOT
                assert r["price"] == t["price"] * SCALE and r["size"] == t["qty"] * SCALE
                assert chr(r["side"]) == {"buy": "B", "sell": "A"}[t["side"]]     # taker side
            assert (c.first_seq, c.last_seq) == (msg["trades"][0]["seq"], msg["trades"][-1]["seq"])
        elif feed == "ticker_lite":
            (q,) = recs
            assert q["bid_px"] == msg["bid"] * SCALE and q["ask_px"] == msg["ask"] * SCALE
            assert q["bid_sz"] == q["ask_sz"] == 0 and q["flags"] == REC.Flag.TS_EVENT_IS_RECV
        elif feed == "trade":
            (r,) = recs
            assert r["ts_event"] == msg["time"] * 10**6 and r["trade_id"] == msg["seq"]
        else:
            assert n == 0


# ---------------------------------------------------------------------------------------------
# message shapes not in the recordings (venue docs)

AGG = {"e": "aggTrade", "E": 1617647603484, "s": "ZILUSDT", "a": 18938405, "p": "0.21448000",
       "q": "2062.90000000", "f": 1, "l": 1, "T": 1617647603483, "m": True, "M": True}


def dec(codec, obj, ts=7):
    frame = obj if isinstance(obj, (bytes, str)) else json.dumps(obj).encode()
    n = codec.decode(frame, ts)
    return n, split_records(codec.output())


def test_binance_raw_stream_forms():
    c = BinanceCodec(1001, {"zilusdt": 5})
    n, (t,) = dec(c, AGG)                                 # raw aggTrade (no envelope)
    assert n == 1 and chr(t["side"]) == "A" and c.instrument_id == 5
    n, (t,) = dec(c, dict(AGG, e="trade", t=77, a=None))  # raw trade stream: trade_id = t
    assert t["trade_id"] == t["sequence"] == 77 and KIND_NAMES[c.last_kind] == "trade"
    n, (t,) = dec(c, {"stream": "zilusdt@trade", "data": dict(AGG, e="trade", t=78)})
    assert t["trade_id"] == 78
    bt = {"u": 9, "s": "ZILUSDT", "b": "1", "B": "2", "a": "3", "A": "4"}
    n, (q,) = dec(c, bt)                                  # raw bookTicker: no "e"
    assert q["sequence"] == 9 and q["flags"] == REC.Flag.TS_EVENT_IS_RECV and q["ts_event"] == 7
    n, (q,) = dec(c, dict(bt, E=1000))                    # an event time is used when present
    assert q["ts_event"] == 10**9 and q["flags"] == 0
    assert dec(c, {"result": None, "id": 1}) == (0, [])
    assert KIND_NAMES[c.last_kind] == "subscription" and c.instrument_id == 0
    assert dec(c, {"stream": "zilusdt@kline_1m", "data": {"e": "kline"}}) == (0, [])
    assert KIND_NAMES[c.last_kind] == "kline"
    assert c.counts()["kline"] == 1


def test_binance_errors_name_venue_field_offset():
    c = BinanceCodec(1001, {"ZILUSDT": 5})
    frame = json.dumps({"stream": "zilusdt@aggTrade", "data": dict(AGG, p="0.1234567891")}).encode()
    # a value that cannot be represented is rejected alone (the trade), the frame is not an error
    assert c.decode(frame, 1) == 0 and c.output().nbytes == 0 and KIND_NAMES[c.last_kind] == "aggTrade"
    assert c.value_errors == [(5, "p", "more than 9 fractional digits", frame.index(b'"0.1234567891"'))]
    frame = json.dumps({"stream": "zilusdt@aggTrade", "data": dict(AGG, p="1.2.3")}).encode()
    with pytest.raises(FixedPointError) as ei:      # not a decimal at all: the frame is malformed
        c.decode(frame, 1)
    assert (ei.value.venue, ei.value.field, ei.value.offset) == ("BINANCE", "p", frame.index(b'"1.2.3"'))
    assert ei.value.reason == "invalid decimal"
    assert c.output().nbytes == 0 and c.last_kind == 0
    frame = json.dumps({"stream": "zilusdt@aggTrade", "data": dict(AGG, s="NOPE")}).encode()
    with pytest.raises(UnknownInstrumentError) as ei:
        c.decode(frame, 1)
    assert ei.value.field == "s" and ei.value.offset == frame.index(b'"NOPE"') and "NOPE" in ei.value.reason
    data = {k: v for k, v in AGG.items() if k != "T"}
    frame = json.dumps({"stream": "zilusdt@aggTrade", "data": data}).encode()
    with pytest.raises(CodecError) as ei:
        c.decode(frame, 1)
    assert (ei.value.reason, ei.value.field, ei.value.offset) == ("missing field", "T", frame.index(b'{"e"'))
    for bad, reason, off in [
        (b"", "invalid JSON: unexpected end of frame", 0),
        (b'{"stream":"x@aggTrade",', "invalid JSON: unexpected end of frame", 23),
        (b'{"a":tru}', "invalid JSON: unexpected byte 0x7d", 8),
        (b'{"a":01}', "invalid JSON: unexpected byte 0x31", 6),
        (b'{"a":"\x01"}', "invalid JSON: unexpected byte 0x01", 6),
        (b"[" * 33 + b"]" * 33, "invalid JSON: nesting too deep", 32),
        (b"[1]", "expected a JSON object", 0),
        (b'{"stream":"zilusdt@ticker","data":{}}', "unknown stream", 10),
        (b'{"stream":"zilusdt@aggTrade","data":[]}', "expected an object", 36),
        (b'{"e":"aggTrade","s":"ZILUSDT","T":-1}', "expected a non-negative integer", 34),
        (b'{"e":"aggTrade","s":"ZILUSDT","T":18446744073709551616}', "integer out of range", 34),
        (b'{"e":"aggTrade","s":"ZILUSDT","T":18446744073709552}', "timestamp out of range", 34),
    ]:
        with pytest.raises(CodecError) as ei:
            c.decode(bad, 1)
        assert (ei.value.reason, ei.value.offset) == (reason, off), bad
        assert type(ei.value) is CodecError


def test_kraken_shapes_not_recorded():
    c = KrakenCodec(1002, {"XBT/USD": 9})
    n, (q,) = dec(c, [0, ["5698.40000", "5700.00000", "1542057299.545897", "1.01234567", "0.98765432"],
                      "spread", "XBT/USD"])
    assert q["bid_px"] == fx("5698.4") and q["ask_px"] == fx("5700") and q["ts_event"] == 1542057299545897000
    assert q["bid_sz"] == fx("1.01234567") and q["ask_sz"] == fx("0.98765432") and q["flags"] == 0
    assert dec(c, {"event": "pong", "reqid": 1}) == (0, []) and KIND_NAMES[c.last_kind] == "pong"
    assert dec(c, [42, [], "ohlc-5", "XBT/USD"]) == (0, []) and KIND_NAMES[c.last_kind] == "ohlc"
    # both sides in one update frame (5 elements), checksum from the second payload
    n, recs = dec(c, [1, {"a": [["1.0", "0", "1.5"]]}, {"b": [["0.5", "2", "2.5", "r"]], "c": "4294967295"},
                      "book-10", "xbt/usd"])
    assert [chr(r["side"]) for r in recs] == ["A", "B"] and c.checksum == 0xFFFFFFFF
    assert [chr(r["action"]) for r in recs] == ["C", "A"] and [r["flags"] for r in recs] == [0, REC.Flag.LAST]
    for bad, reason, field in [
        ([1, {"a": []}, {"b": []}, {"b": []}, "book-10", "XBT/USD"], "unexpected number of payloads", None),
        ([1, {}, {}, "ticker", "XBT/USD"], "unexpected number of payloads", None),
        ([1, {"a": [], "c": "4294967296"}, "book-10", "XBT/USD"], "invalid checksum", "c"),
        ([1, [["1", "1", "1", "x"]], "trade", "XBT/USD"], "invalid side", "trade"),
        ([1, {}, "candles", "XBT/USD"], "unknown channel", "channelName"),
        ({"event": "nope"}, "unknown event", "event"),
        ({"status": "x"}, "missing field", "event"),
    ]:
        with pytest.raises(CodecError) as ei:
            dec(c, bad)
        assert (ei.value.reason, ei.value.field) == (reason, field)
    with pytest.raises(UnknownInstrumentError):
        dec(c, [1, {"a": []}, "book-10", "ETH/USD"])


def test_kraken_futures_shapes_not_recorded():
    c = KrakenFuturesCodec(1003, {"PI_XBTUSD": 4})
    n, (q,) = dec(c, {"feed": "ticker", "product_id": "PI_XBTUSD", "bid": 34832.5, "ask": 34847.5,
                      "bid_size": 42864, "ask_size": 2300, "time": 1612270825253, "volume": 1e3})
    assert (q["bid_px"], q["ask_px"], q["bid_sz"], q["ask_sz"]) == (fx("34832.5"), fx("34847.5"), fx("42864"), fx("2300"))
    assert q["ts_event"] == 1612270825253 * 10**6 and q["flags"] == 0
    n, (q,) = dec(c, b'{"feed":"ticker_lite","product_id":"pi_xbtusd","bid":null,"ask":2.5E+3}')
    assert q["bid_px"] == REC.UNDEF_PRICE and q["ask_px"] == fx("2500")
    n, (t,) = dec(c, b'{"feed":"trade","product_id":"PI_XBTUSD","side":"sell","seq":3,"time":1,"qty":1e-05,"price":-0.5}')
    assert chr(t["side"]) == "A" and t["size"] == 10_000 and t["price"] == -500_000_000
    assert dec(c, {"feed": "heartbeat", "time": 1}) == (0, []) and KIND_NAMES[c.last_kind] == "heartbeat"
    assert dec(c, {"event": "alert", "message": "x"}) == (0, []) and KIND_NAMES[c.last_kind] == "error"
    for bad, reason, field in [
        ({"feed": "book", "product_id": "PI_XBTUSD", "side": "buy", "seq": 1, "timestamp": 1, "price": "1", "qty": 1},
         "expected a number", "price"),
        ({"feed": "book", "product_id": "PI_XBTUSD", "side": "up", "seq": 1}, "invalid side", "side"),
        ({"feed": "nope"}, "unknown feed", "feed"),
        ({"product_id": "PI_XBTUSD"}, "missing field", "feed"),
    ]:
        with pytest.raises(CodecError) as ei:
            dec(c, bad)
        assert (ei.value.reason, ei.value.field) == (reason, field)
    # a negative size is a value rejected alone: no level, the seq still counts
    frame = b'{"feed":"book","product_id":"PI_XBTUSD","side":"buy","seq":1,"timestamp":1,"price":1,"qty":-2}'
    assert c.decode(frame, 1) == 0 and (c.first_seq, c.last_seq) == (1, 1)
    assert [e[1:] for e in c.value_errors] == [("qty", "negative value", frame.index(b"-2"))]


# ---------------------------------------------------------------------------------------------
# API


def test_kind_names_and_parse_helpers_match_oracle():
    assert KIND_NAMES == R.KIND_NAMES
    assert parse_price(b"2.5E+3") == 2_500_000_000_000 and parse_price("-1e-05") == -10_000
    assert parse_size(b"0.000000001") == 1 and parse_size(b"-0.0") == 0
    assert parse_price(b"-9223372036.854775808") == -(1 << 63)
    assert parse_size(b"9223372036.854775807") == (1 << 63) - 1  # sizes are stored in BIGINT
    assert parse_size(b"12000000000", 0) == 12_000_000_000 and parse_size(b"0.00100000", 3) == 1
    for bad, reason in [(b"1.0000000001", "more than 9 fractional digits"), (b"9223372036.854775808", "out of range"),
                        (b"1e", "invalid decimal"), (b"+1", "invalid decimal"), (b"", "invalid decimal"),
                        (b"nan", "invalid decimal"), (b" 1", "invalid decimal")]:
        with pytest.raises(FixedPointError) as ei:
            parse_price(bad)
        assert ei.value.reason == reason
    with pytest.raises(FixedPointError, match="negative value"):
        parse_size(b"-1")
    for bad, dp, reason in [(b"9223372036.854775808", 9, "out of range"), (b"0.0015", 3, "size_precision"),
                            (b"18446744073709551615", 0, "out of range")]:
        with pytest.raises(FixedPointError, match=reason):
            parse_size(bad, dp)


def test_input_types_and_symbols():
    c = BinanceCodec(1001, {})
    frame = json.dumps({"stream": "zilusdt@aggTrade", "data": AGG})
    with pytest.raises(UnknownInstrumentError):
        c.decode(frame, 1)
    c.add_symbol("zilusdt", 5)
    for f in (frame, frame.encode(), bytearray(frame.encode()), memoryview(frame.encode())):
        assert c.decode(f, 1) == 1 and c.instrument_id == 5
    c.add_symbol("ZILUSDT", 6)                             # replaces, case-insensitively
    c.decode(frame, 1)
    assert c.instrument_id == 6
    for i in range(500):                                   # table growth keeps old entries
        c.add_symbol(f"SYM{i}USDT", 1000 + i)
    c.decode(frame, 1)
    assert c.instrument_id == 6
    with pytest.raises(ValueError):
        c.add_symbol("X" * 60, 1)
    with pytest.raises(ValueError):
        BinanceCodec(70000, {})
    assert c.publisher_id == 1001 and c.venue == "BINANCE"


def test_output_view_survives_buffer_growth():
    c = BinanceCodec(1001, BSYMS)
    small = json.dumps({"stream": "zilusdt@aggTrade", "data": AGG}).encode()
    c.decode(small, 1)
    view = c.output()
    first = bytes(view)
    assert len(first) == 64 and view.readonly
    with pytest.raises(TypeError):
        view[0] = 1
    kind, url, ts, body = next(x for x in R.iter_recording(BINANCE_FILES[2]) if x[0] == "rest")
    n = c.decode_snapshot(body, re.search(r"symbol=(\w+)", url).group(1), ts)
    assert n > 5000                                        # the buffer grew while `view` was held
    # the old buffer is kept alive (not freed) while `view` exists: reading it is memory safe;
    # its content is the start of the snapshot written before the buffer grew (documented)
    stale = bytes(view)
    assert len(stale) == 64 and stale[:2] == bytes([14, 0xE3])
    big = np.frombuffer(c.output(), REC.BOOK_DELTA_DTYPE)
    assert len(big) == n and big[0]["action"] == ord("R")
    del view, big
    c.decode(small, 1)
    assert bytes(c.output()) == first


def test_counts_survive_errors():
    c = KrakenCodec(1002, KSYMS)
    c.decode(b'{"event":"heartbeat"}', 1)
    with pytest.raises(CodecError):
        c.decode(b'{"event":"heartbeat"', 1)
    c.decode(b'{"event":"heartbeat"}', 1)
    assert c.counts() == {"heartbeat": 2}
