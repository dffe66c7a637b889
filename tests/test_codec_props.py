"""Property tests (hypothesis): the Cython codec and the pure-Python oracle agree on generated
and mutated frames (same records or the same error: class, venue, reason, field, offset), and
fixed-point parsing is exact."""
from __future__ import annotations

import json
import random
from decimal import Decimal
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from dm import codec_ref as R
from dm._codec import parse_price, parse_size
from dm.venues.binance._codec import BinanceCodec
from dm.venues.binance.codec_ref import RefBinanceCodec
from dm.venues.kraken._codec import KrakenCodec
from dm.venues.kraken.codec_ref import RefKrakenCodec
from dm.venues.kraken_futures._codec import KrakenFuturesCodec
from dm.venues.kraken_futures.codec_ref import RefKrakenFuturesCodec
from dm.errors import CodecError, FixedPointError

DATA = Path(__file__).resolve().parent.parent / "data"
SETTINGS = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])

BSYMS = {"ZILUSDT": 1, "DENTUSDT": 2, "MANAUSDT": 3, "BTCAUD": 4, "ETHBRL": 5, "AXSBNB": 6, "QTUMETH": 7,
         "BTCSTUSDT": 8, "NEOUSDC": 9, "RENBTCETH": 10}
KSYMS = {s: 20 + i for i, s in enumerate(["ALGO/XBT", "LSK/USD", "USDC/GBP", "FIL/XBT", "WAVES/ETH", "ICX/USD",
                                         "AUD/USD", "KAVA/USD", "DASH/EUR", "XBT/USD"])}
FSYMS = {s: 40 + i for i, s in enumerate(["PI_XRPUSD", "PI_LTCUSD", "PI_ETHUSD", "FI_ETHUSD_211231",
                                         "FI_BCHUSD_210730", "FI_XBTUSD_210924", "FI_ETHUSD_210730",
                                         "FI_BCHUSD_210924", "FI_XRPUSD_210924", "FI_XBTUSD_210730"])}
CODECS = {
    "binance": (lambda: BinanceCodec(1001, BSYMS), lambda: RefBinanceCodec(1001, BSYMS)),
    "kraken": (lambda: KrakenCodec(1002, KSYMS), lambda: RefKrakenCodec(1002, KSYMS)),
    "kf": (lambda: KrakenFuturesCodec(1003, FSYMS), lambda: RefKrakenFuturesCodec(1003, FSYMS)),
}
PAIRS = {k: (a(), b()) for k, (a, b) in CODECS.items()}


def outcome(codec, frame, ts=123456789):
    try:
        n = codec.decode(frame, ts)
    except CodecError as e:
        return ("error", type(e).__name__, e.venue, e.reason, e.field, e.offset)
    return (n, bytes(codec.output()), codec.last_kind, codec.instrument_id, codec.first_seq,
            codec.last_seq, codec.checksum, list(codec.value_errors), codec.value_error_count)


def agree(venue, frame):
    c, r = PAIRS[venue]
    a, b = outcome(c, frame), outcome(r, frame)
    assert a == b, frame[:300]
    return a


def sample_frames(path, k, seed=1):
    frames = [t for kind, _, _, t in R.iter_recording(path) if kind == "ws"]
    rnd = random.Random(seed)
    return rnd.sample(frames, min(k, len(frames)))


RECORDED = {
    "binance": sample_frames(DATA / "binance/BINANCE-b38f7c.0", 300)
    + sample_frames(DATA / "binance/2021-08-14/BINANCE.ws.1.0", 50),
    "kraken": sample_frames(DATA / "kraken/KRAKEN-c197c0.0", 200) + sample_frames(DATA / "kraken/KRAKEN-4b7396.0", 60)
    + sample_frames(DATA / "kraken/KRAKEN-82ac16.0", 60),
    "kf": sample_frames(DATA / "kraken_futures/KRAKEN_FUTURES.ws.1.0", 300),
}
RECORDED["kf"] = [f for f in RECORDED["kf"] if len(f) < 4000] + [
    f for _, _, _, f in R.iter_recording(DATA / "kraken_futures/KRAKEN_FUTURES.ws.1.0")
    if b"trade_snapshot" in f[:30] or b"ticker_lite" in f[:30]][:20]


# ---------------------------------------------------------------------------------------------
# fixed point


def fixed_outcome(fn, text):
    try:
        return fn(text)
    except FixedPointError as e:
        return ("error", e.reason)


decimal_text = st.builds(
    lambda sign, i, dot, f, e: sign + i + dot + f + e,
    st.sampled_from(["", "-", "", "+"]),
    st.text("0123456789", max_size=22),
    st.sampled_from([".", "", "."]),
    st.text("0123456789", max_size=14),
    st.one_of(st.just(""), st.builds(lambda E, s, d: E + s + d, st.sampled_from("eE"),
                                     st.sampled_from(["", "+", "-"]), st.text("0123456789", max_size=4)),
              st.sampled_from(["e999999999999999999999", "e-99999999999999999", "E+0000000000009"])),
)


@SETTINGS
@given(decimal_text)
@example("0.21448000")
@example("-9223372036.854775808")
@example("9223372036.854775807")
@example("18446744073.709551615")
@example("18446744073.709551616")
@example("1" + "0" * 30 + "e-30")
@example("0." + "0" * 40 + "1e41")
@example("-0")
@example(".")
@example("9999999999.999999999")          # fast path: 19 digits, the widest it takes
@example("-9999999999.999999999")
@example("-9223372036.854775809")
@example("12345678901.5")                 # 11 integer digits: general path
@example("1.1234567890")                  # 10 fractional digits (trailing zero): general path
@example("5.")
def test_fixed_point_matches_oracle_and_decimal(text):
    for fn, ref, signed in ((parse_price, R.ref_parse_price, True), (parse_size, R.ref_parse_size, False)):
        a = fixed_outcome(fn, text.encode())
        assert a == fixed_outcome(ref, text.encode()), text
        if not isinstance(a, tuple):
            # independent check: exact Decimal arithmetic (a zero may carry any exponent)
            if a == 0:
                assert set(text.split("e")[0].split("E")[0]) <= set("-0.")
            else:
                assert Decimal(text) * 10**9 == a
            assert (-(1 << 63) if signed else 0) <= a <= (1 << 63) - 1


@SETTINGS
@given(st.binary(max_size=40))
def test_fixed_point_random_bytes_match_oracle(raw):
    assert fixed_outcome(parse_price, raw) == fixed_outcome(R.ref_parse_price, raw)
    assert fixed_outcome(parse_size, raw) == fixed_outcome(R.ref_parse_size, raw)


@SETTINGS
@given(st.one_of(st.from_regex(r"-?[0-9]{0,20}(\.[0-9]{0,20})?([eE][-+]?[0-9]{1,3})?", fullmatch=True),
                 st.binary(max_size=30).map(lambda b: b.decode("latin-1"))),
       st.integers(0, 18))
@example("12000000000", 0)                # a PEPE trade: whole tokens
@example("1000000000000000", 0)           # 10**15 units
@example("0.00100000", 3)                 # trailing zeros past the precision
@example("9223372036854775807", 0)
@example("9223372036854775808", 0)
def test_sizes_at_every_precision_match_oracle_and_decimal(text, dp):
    a = fixed_outcome(lambda t: parse_size(t, dp), text.encode())
    assert a == fixed_outcome(lambda t: R.ref_parse_size(t, dp), text.encode()), (text, dp)
    if not isinstance(a, tuple) and a:
        assert Decimal(text) * 10**dp == a and 0 < a <= (1 << 63) - 1


@SETTINGS
@given(st.integers(-(1 << 63), (1 << 63) - 1), st.integers(0, 12))
def test_fixed_point_round_trip(v, pad):
    plain = format(Decimal(v).scaleb(-9), "f")
    text = plain + ("0" * pad if "." in plain else "")
    assert parse_price(str(Decimal(v).scaleb(-9)).encode()) == v  # Decimal's own E-notation
    assert parse_price(text.encode()) == v
    assert parse_price(f"{v}e-9".encode()) == v                  # exponent form
    assert parse_price(f"{v}000E-12".encode()) == v
    if v >= 0:
        assert parse_size(text.encode()) == v
    else:
        with pytest.raises(FixedPointError, match="negative value"):
            parse_size(text.encode())


@SETTINGS
@given(st.integers(1, 10**12), st.integers(10, 30))
def test_fixed_point_never_rounds_or_wraps(v, digits):
    with pytest.raises(FixedPointError, match="more than 9 fractional digits"):
        parse_price(f"{v}e-{digits}".encode()) if v % 10 else parse_price(f"{v + 1}e-{digits}".encode())
    with pytest.raises(FixedPointError, match="out of range"):
        parse_size(f"{v}e{digits + 10}".encode())


# ---------------------------------------------------------------------------------------------
# generated frames

weird = st.one_of(
    st.none(), st.booleans(), st.integers(-(1 << 70), 1 << 70), st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=8), st.sampled_from(["1e5", "0.1", "-3", "1.0000000001", "", "abc", "1e-5", "9" * 25]),
    st.lists(st.integers(0, 3), max_size=2), st.dictionaries(st.text(max_size=2), st.integers(), max_size=2),
)
dec_str = st.one_of(
    st.decimals(allow_nan=False, allow_infinity=False, places=8, min_value=-10**9, max_value=10**9).map(str),
    decimal_text,
)
ms = st.one_of(st.integers(0, 2**45), st.integers(-5, 2**66))


def maybe(strategy):
    """Usually a valid value, sometimes a wrong-typed one, sometimes absent (KeyError = drop the key)."""
    return st.integers(0, 39).flatmap(lambda k: strategy if k < 37 else weird if k < 39 else st.just(KeyError))


def obj(**fields):
    return st.fixed_dictionaries(fields).map(lambda d: {k: v for k, v in d.items() if v is not KeyError})


def render(draw, value):
    """json.dumps with random key order and whitespace."""
    if isinstance(value, dict):
        items = list(value.items())
        draw(st.randoms()).shuffle(items)
        sep = draw(st.sampled_from([",", ", ", " ,\n"]))
        col = draw(st.sampled_from([":", ": ", " : "]))
        return "{" + sep.join(json.dumps(k) + col + render(draw, v) for k, v in items) + "}"
    if isinstance(value, list):
        sep = draw(st.sampled_from([",", ",", ", ", " ,\n"]))
        pad = draw(st.sampled_from(["", "", " ", "\n "]))
        return "[" + pad + sep.join(render(draw, v) for v in value) + pad + "]"
    if isinstance(value, Decimal):
        return str(value)                                   # exact, maybe with an exponent
    return json.dumps(value)


sym = st.integers(0, 19).flatmap(lambda k: st.sampled_from(list(BSYMS) + ["zilusdt"]) if k
                                 else st.sampled_from(["NOPE", ""]))
# [price, qty] as Binance sends it, with extra elements after it, too short, or not a pair at all
level = st.one_of(st.tuples(dec_str, dec_str).map(list), st.tuples(dec_str, dec_str, weird).map(list),
                  st.tuples(dec_str).map(list), st.tuples(weird, dec_str).map(list), weird)
agg = obj(e=st.sampled_from(["aggTrade", "trade", "kline"]), E=ms, s=maybe(sym), a=maybe(ms), t=maybe(ms),
          p=maybe(dec_str), q=maybe(dec_str), T=maybe(ms), m=maybe(st.booleans()), M=st.booleans())
book_ticker = obj(u=maybe(ms), s=maybe(sym), b=maybe(dec_str), B=maybe(dec_str), a=maybe(dec_str),
                  A=maybe(dec_str), E=st.one_of(st.just(KeyError), ms))
depth = obj(e=st.just("depthUpdate"), E=maybe(ms), s=maybe(sym), U=maybe(ms), u=maybe(ms),
            b=maybe(st.lists(level, max_size=4)), a=maybe(st.lists(level, max_size=4)))
stream_name = st.integers(0, 9).flatmap(lambda k: st.sampled_from(
    ["zilusdt@aggTrade", "zilusdt@trade", "zilusdt@bookTicker", "zilusdt@depth@100ms", "zilusdt@depth"]) if k
    else st.sampled_from(["x@kline_1m", "zilusdt@depth5", "nope", "@"]))


@st.composite
def binance_frames(draw):
    data = draw(st.one_of(agg, book_ticker, depth))
    form = draw(st.sampled_from(["env", "env", "raw"]))
    value = {"stream": draw(stream_name), "data": data} if form == "env" else data
    return render(draw, value).encode()


@SETTINGS
@given(binance_frames())
def test_generated_binance_frames_agree(frame):
    agree("binance", frame)


k_level = st.one_of(st.lists(dec_str, min_size=3, max_size=4), weird)
k_pair = st.sampled_from(list(KSYMS) + ["xbt/usd", "ETH/USD"])


@st.composite
def kraken_frames(draw):
    chan = draw(st.sampled_from(["book-10", "trade", "ticker", "spread", "ohlc-1", "nope"]))
    if chan.startswith("book"):
        keys = draw(st.sampled_from([("as", "bs"), ("a", "b", "c"), ("a",), ("b", "c")]))
        pays = [{k: (draw(st.one_of(st.text("0123456789", min_size=1, max_size=11), weird)) if k == "c"
                     else draw(maybe(st.lists(k_level, max_size=3)))) for k in keys}
                for _ in range(draw(st.integers(1, 2)))]
        pays = [{k: v for k, v in p.items() if v is not KeyError} for p in pays]
    elif chan == "trade":
        pays = [draw(st.lists(st.one_of(st.tuples(dec_str, dec_str, dec_str, st.sampled_from(["b", "s", "x"]),
                                                  st.just("l"), st.just("")).map(list), weird), max_size=3))]
    elif chan == "ticker":
        side = st.one_of(st.tuples(dec_str, st.integers(), dec_str).map(list), weird)
        pays = [draw(obj(a=maybe(side), b=maybe(side), c=st.just(["1", "2"])))]
    else:
        pays = [draw(st.one_of(st.lists(dec_str, min_size=5, max_size=5), weird))]
    value = [draw(st.integers(0, 9999))] + pays + [chan, draw(k_pair)]
    if draw(st.integers(0, 9)) == 0:
        value = {"event": draw(st.sampled_from(["heartbeat", "pong", "nope", 3]))}
    return render(draw, value).encode()


@SETTINGS
@given(kraken_frames())
def test_generated_kraken_frames_agree(frame):
    agree("kraken", frame)


num = st.one_of(st.integers(-(10**12), 10**12), st.floats(-1e6, 1e6, allow_nan=False),
                st.decimals(allow_nan=False, allow_infinity=False, places=4, min_value=-(10**6), max_value=10**6))
kf_pid = st.integers(0, 19).flatmap(lambda k: st.sampled_from(list(FSYMS) + ["pi_xrpusd"]) if k
                                    else st.just("PI_NOPE"))


@st.composite
def kf_frames(draw):
    feed = draw(st.sampled_from(["book", "book_snapshot", "trade", "trade_snapshot", "ticker_lite", "ticker",
                                 "heartbeat", "nope"]))
    trade = obj(side=maybe(st.sampled_from(["buy", "sell", "x"])), seq=maybe(ms), time=maybe(ms),
                price=maybe(num), qty=maybe(num))
    lvl = obj(price=maybe(num), qty=maybe(num))
    base = draw(obj(feed=st.just(feed), product_id=maybe(kf_pid), side=maybe(st.sampled_from(["buy", "sell"])),
                    seq=maybe(ms), timestamp=maybe(ms), time=maybe(ms), price=maybe(num), qty=maybe(num),
                    bid=maybe(st.one_of(num, st.none())), ask=maybe(st.one_of(num, st.none())),
                    bid_size=maybe(num), ask_size=maybe(num),
                    bids=maybe(st.lists(st.one_of(lvl, weird), max_size=3)),
                    asks=maybe(st.lists(st.one_of(lvl, weird), max_size=3)),
                    trades=maybe(st.lists(st.one_of(trade, weird), max_size=3))))
    if draw(st.integers(0, 9)) == 0:
        base = {"event": draw(st.sampled_from(["info", "subscribed", "nope"]))}
    return render(draw, base).encode()


@SETTINGS
@given(kf_frames())
def test_generated_kraken_futures_frames_agree(frame):
    agree("kf", frame)


# ---------------------------------------------------------------------------------------------
# mutated recorded frames

SPECIAL = [b'"', b"\\", b"{", b"}", b"[", b"]", b",", b":", b"-", b".", b"e", b"0", b"9", b"\x00", b"\xff",
           b" ", b"null", b"true", b'"x"', b"1e999", b"99999999999999999999999", b"[" * 40]


@st.composite
def mutated(draw, venue):
    frame = bytearray(draw(st.sampled_from(RECORDED[venue])))
    for _ in range(draw(st.integers(1, 3))):
        op = draw(st.integers(0, 5))
        i = draw(st.integers(0, max(0, len(frame) - 1)))
        if op == 0:
            del frame[i:]                                              # truncation
        elif op == 1 and frame:
            frame[i] ^= 1 << draw(st.integers(0, 7))                   # bit flip
        elif op == 2:
            frame[i:i] = draw(st.sampled_from(SPECIAL))                # insertion
        elif op == 3:
            del frame[i:i + draw(st.integers(1, 8))]                   # deletion
        elif op == 4 and frame:
            frame[i] = draw(st.integers(0, 255))                       # byte replacement
        else:
            j = draw(st.integers(i, min(len(frame), i + 40)))
            frame[j:j] = frame[i:j]                                    # duplicated slice
    return bytes(frame)


@SETTINGS
@given(mutated("binance"))
def test_mutated_binance_frames_agree(frame):
    agree("binance", frame)


@SETTINGS
@given(mutated("kraken"))
def test_mutated_kraken_frames_agree(frame):
    agree("kraken", frame)


@SETTINGS
@given(mutated("kf"))
def test_mutated_kraken_futures_frames_agree(frame):
    agree("kf", frame)


@pytest.mark.parametrize("venue", ["binance", "kraken", "kf"])
def test_every_truncation_agrees(venue):
    """Every prefix of a few recorded frames: identical error (mostly "unexpected end")."""
    for frame in RECORDED[venue][:6]:
        for i in range(len(frame)):
            res = agree(venue, frame[:i])
            assert res[0] == "error"


@SETTINGS
@given(data=st.lists(st.sampled_from(list(b'"{}[]\\\x1f az09:,.-') + list(range(256))), max_size=40).map(bytes),
       start=st.integers(0, 40))
def test_scan_runs_stop_at_the_first_flagged_byte(data, start):
    """The eight-bytes-at-a-time scans of dm/_scan.pxd against a byte-by-byte scan: dm_str_run
    stops at '"', '\\' or a control byte, dm_struct_run at a quote or a bracket, else at the end."""
    from dm._codec import _scan_runs

    i = min(start, len(data))
    first = lambda hit: next((k for k in range(i, len(data)) if hit(data[k])), len(data))  # noqa: E731
    assert _scan_runs(data, i) == (first(lambda c: c in b'"\\' or c < 0x20), first(lambda c: c in b'"{}[]'))
