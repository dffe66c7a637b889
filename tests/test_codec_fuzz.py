"""Fuzz: malformed input never crashes the Cython codec or corrupts its output.

Default run: 10**6 mutated recorded frames in total, shared by the venues (truncations, bit flips, byte insertions and
deletions, huge numbers, deep nesting, wrong types), each must end as well-formed records or a
``CodecError``; one frame in 100 is also checked against the pure-Python oracle. The
``slow`` variant runs 10**7 with a different seed."""
from __future__ import annotations

import random
from pathlib import Path

import pytest

from dm import codec_ref as R
from dm import records as REC
from dm.venues.binance._codec import BinanceCodec
from dm.venues.binance.codec_ref import RefBinanceCodec
from dm.venues.kraken._codec import KrakenCodec
from dm.venues.kraken.codec_ref import RefKrakenCodec
from dm.venues.kraken_futures._codec import KrakenFuturesCodec
from dm.venues.kraken_futures.codec_ref import RefKrakenFuturesCodec
from dm.venues.bybit._codec import BybitCodec
from dm.venues.bybit.codec_ref import RefBybitCodec
from dm.venues.coinbase._codec import CoinbaseCodec
from dm.venues.coinbase.codec_ref import RefCoinbaseCodec
from dm.venues.okx._codec import OkxCodec
from dm.venues.okx.codec_ref import RefOkxCodec
from dm.venues.deribit._codec import DeribitCodec
from dm.venues.deribit.codec_ref import RefDeribitCodec
from dm.venues.bitstamp._codec import BitstampCodec
from dm.venues.bitstamp.codec_ref import RefBitstampCodec
from dm.venues.binance_futures._codec import BinanceFuturesCodec
from dm.venues.binance_futures.codec_ref import RefBinanceFuturesCodec
from dm.venues.binance_delivery._codec import BinanceDeliveryCodec
from dm.venues.binance_delivery.codec_ref import RefBinanceDeliveryCodec
from dm.errors import CodecError

DATA = Path(__file__).resolve().parent.parent / "data"
SIZES = REC.SIZES


def recorded(path: Path, limit: int = 4000) -> list[bytes]:
    if path.name.endswith(".jsonl.zst"):  # format 2 (JSONL)
        from dm.recording import frames

        return [t.encode() for _, t in frames(path) if len(t) < limit]
    return [t for kind, _, _, t in R.iter_recording(path) if kind == "ws" and len(t) < limit]


def codecs():
    bsyms = {"ZILUSDT": 1, "DENTUSDT": 2, "MANAUSDT": 3, "BTCAUD": 4, "ETHBRL": 5, "AXSBNB": 6, "QTUMETH": 7,
             "BTCSTUSDT": 8, "NEOUSDC": 9, "RENBTCETH": 10, "FTMUSDT": 11, "SXPBTC": 12, "BADGERBTC": 13,
             "XMRBTC": 14}
    ksyms = {s: 20 + i for i, s in enumerate(["ALGO/XBT", "LSK/USD", "USDC/GBP", "FIL/XBT", "WAVES/ETH",
                                             "ICX/USD", "AUD/USD", "KAVA/USD", "DASH/EUR", "XBT/USD"])}
    fsyms = {s: 40 + i for i, s in enumerate(["PI_XRPUSD", "PI_LTCUSD", "PI_ETHUSD", "FI_ETHUSD_211231",
                                             "FI_BCHUSD_210730", "FI_XBTUSD_210924", "FI_ETHUSD_210730",
                                             "FI_BCHUSD_210924", "FI_XRPUSD_210924", "FI_XBTUSD_210730"])}
    ysyms = {s: 60 + i for i, s in enumerate(["BTCUSDT", "ETHUSDT", "SOLUSDT", "DOGEUSDT", "SNTUSDT", "BANDUSDT",
                                             "AIOZUSDT", "RADUSDT"])}
    csyms = {s: 80 + i for i, s in enumerate(["BTC-USD", "ETH-USD", "SKL-USD", "SKL-BTC", "SKL-GBP", "BAND-GBP",
                                             "BAND-BTC", "NMR-EUR", "YFI-BTC", "DASH-BTC", "NU-GBP", "CRV-EUR"])}
    osyms = {s: 80 + i for i, s in enumerate(["ELON-USDT", "ZEN-USDT", "PROPS-ETH", "UNI-USD-SWAP",
                                             "BTC-USD-220325-40000-C", "ETH-USD-220228-3000-C"])}
    dsyms = {s: 80 + i for i, s in enumerate(["BTC-24SEP21-8000-P", "BTC-30JUL21-24000-P", "BTC-31DEC21-34000-P",
                                             "BTC-24SEP21-34000-P", "BTC-24JUN22-15000-C", "BTC-31DEC21-300000-C",
                                             "BTC-25MAR22-30000-C", "ETH-30JUL21-2800-C", "ETH-27AUG21-4000-P",
                                             "ETH-23JUL21-2300-C"])}
    ssyms = {s: 100 + i for i, s in enumerate(["sgbeur", "ethusd", "xrpeur", "bateur", "usdteur", "usdtusd", "xlmgbp",
                                              "adaeur", "batbtc", "galaeur"])}
    usyms = {s: 100 + i for i, s in enumerate(["SUSHIUSDT", "CTKUSDT", "AKROUSDT", "KEEPUSDT"])}
    cmsyms = {s: 110 + i for i, s in enumerate(["ETHUSD_210924", "ETCUSD_PERP", "LINKUSD_PERP", "BTCUSD_211231",
                                             "EOSUSD_PERP", "BCHUSD_PERP", "XRPUSD_PERP", "TRXUSD_PERP",
                                             "LINKUSD_211231", "BCHUSD_210924"])}
    return [
        (BinanceCodec(1001, bsyms), RefBinanceCodec(1001, bsyms),
         recorded(DATA / "binance/BINANCE-b38f7c.0") + recorded(DATA / "binance/2021-08-14/BINANCE.ws.1.0")),
        (KrakenCodec(1002, ksyms), RefKrakenCodec(1002, ksyms),
         recorded(DATA / "kraken/KRAKEN-c197c0.0") + recorded(DATA / "kraken/KRAKEN-4b7396.0")
         + recorded(DATA / "kraken/KRAKEN-82ac16.0")),
        (KrakenFuturesCodec(1003, fsyms), RefKrakenFuturesCodec(1003, fsyms),
         recorded(DATA / "kraken_futures/KRAKEN_FUTURES.ws.1.0")),
        # stateful (tickers merge over the last full ticker): the oracle is compared against a
        # second codec that sees exactly the frames the oracle sees
        (BybitCodec(1007, ysyms), RefBybitCodec(1007, ysyms),
         recorded(DATA / "bybit/2026-08-09/BYBIT.jsonl.zst", 6000) + recorded(DATA / "bybit/2025-06-13/BYBIT.ws.1.0"),
         BybitCodec(1007, ysyms)),
        (CoinbaseCodec(1008, csyms), RefCoinbaseCodec(1008, csyms),
         recorded(DATA / "coinbase/2026-08-09/COINBASE.jsonl.zst", 6000) + recorded(DATA / "coinbase/2021-04-17/COINBASE.ws.28.0")),
        (OkxCodec(1006, osyms), RefOkxCodec(1006, osyms), recorded(DATA / "okx/2022-02-27/OKX.ws.1.0")),
        (DeribitCodec(1009, dsyms), RefDeribitCodec(1009, dsyms), recorded(DATA / "deribit/2021-07-22/DERIBIT.ws.1.0")),
        (BitstampCodec(1010, ssyms), RefBitstampCodec(1010, ssyms), recorded(DATA / "bitstamp/2022-01-05/BITSTAMP.ws.1.0")),
        (BinanceFuturesCodec(1004, usyms), RefBinanceFuturesCodec(1004, usyms),
         recorded(DATA / "binance_futures/2021-07-22/BINANCE_FUTURES.ws.1.0")),
        (BinanceDeliveryCodec(1005, cmsyms), RefBinanceDeliveryCodec(1005, cmsyms),
         recorded(DATA / "binance_delivery/2021-07-22/BINANCE_DELIVERY.ws.1.0")),
    ]


INSERTS = [b'"', b"\\", b"{", b"}", b"[", b"]", b",", b":", b"-", b".", b"e", b"E+", b"0", b"\x00", b"\xff",
           b"\x1f", b"\\u12", b"null", b"true", b"1e999999999", b"-" + b"9" * 40, b"0." + b"0" * 30 + b"1",
           b"[" * 100, b"{\"a\":" * 50, b'"' + b"x" * 300 + b'"', b"18446744073709551616", b"\\ud800"]


def mutate(rnd: random.Random, frame: bytes) -> bytes:
    b = bytearray(frame)
    for _ in range(rnd.randint(1, 3)):
        op = rnd.randrange(7)
        i = rnd.randrange(len(b)) if b else 0
        if op == 0:
            del b[i:]
        elif op == 1 and b:
            b[i] ^= 1 << rnd.randrange(8)
        elif op == 2:
            b[i:i] = rnd.choice(INSERTS)
        elif op == 3:
            del b[i:i + rnd.randint(1, 16)]
        elif op == 4 and b:
            b[i] = rnd.randrange(256)
        elif op == 5:
            # swap a value for a value of another type: find a ':' and replace what follows
            j = b.find(b":", i)
            if j >= 0:
                k = j + 1
                while k < len(b) and b[k] not in b",}]":
                    k += 1
                b[j + 1:k] = rnd.choice([b"{}", b"[]", b"null", b"-1", b'"x"', b"1.5e3", b"true", b"[[]]"])
        else:
            j = min(len(b), i + rnd.randint(1, 64))
            b[j:j] = b[i:j]
    return bytes(b)


def check_output(buf: memoryview, n: int) -> None:
    """Records are whole, of a known rtype, and their lengths add up to the buffer."""
    raw = bytes(buf)
    i = count = 0
    while i < len(raw):
        size = raw[i] * 4
        assert SIZES.get(raw[i + 1]) == size
        i += size
        count += 1
    assert i == len(raw) and count == n


def fuzz(total: int, seed: int, oracle_every: int = 100) -> dict:
    rnd = random.Random(seed)
    stats = {"records": 0, "errors": 0, "ok": 0, "oracle_checked": 0}
    venues = codecs()
    per_venue, extra = divmod(total, len(venues))
    for idx, (c, ref, frames, *twin) in enumerate(venues):
        decode = c.decode
        for k in range(per_venue + (idx < extra)):   # exactly `total` frames whatever the venue count
            frame = mutate(rnd, rnd.choice(frames))
            try:
                n = decode(frame, k)
            except CodecError as e:
                assert -1 <= e.offset <= len(frame) and e.venue == c.venue
                assert c.output().nbytes == 0
                stats["errors"] += 1
                res = ("error", type(e), e.reason, e.field, e.offset)
            else:
                if k % 64 == 0:
                    check_output(c.output(), n)
                stats["ok"] += 1
                stats["records"] += n
                res = (n, bytes(c.output()), c.last_kind, c.instrument_id, c.first_seq, c.last_seq, c.checksum)
            if k % oracle_every == 0:
                if twin:
                    try:
                        n2 = twin[0].decode(frame, k)
                        t = twin[0]
                        res = (n2, bytes(t.output()), t.last_kind, t.instrument_id, t.first_seq, t.last_seq, t.checksum)
                    except CodecError as e:
                        res = ("error", type(e), e.reason, e.field, e.offset)
                try:
                    m = ref.decode(frame, k)
                    exp = (m, ref.output(), ref.last_kind, ref.instrument_id, ref.first_seq, ref.last_seq,
                           ref.checksum)
                except CodecError as e:
                    exp = ("error", type(e), e.reason, e.field, e.offset)
                assert res == exp, frame[:300]
                stats["oracle_checked"] += 1
    return stats


def test_fuzz_one_million_mutated_frames():
    stats = fuzz(1_000_000, seed=20240601)
    assert stats["ok"] + stats["errors"] >= 1_000_000 - len(codecs())   # total // venues each
    # the mutations must leave a fair share of decodable frames, or the test proves little
    assert stats["ok"] > 30_000 and stats["errors"] > 300_000, stats


@pytest.mark.slow
def test_fuzz_ten_million_mutated_frames():
    stats = fuzz(10_000_000, seed=7, oracle_every=1000)
    assert stats["ok"] + stats["errors"] >= 10_000_000 - len(codecs())


@pytest.mark.parametrize("codec", [BinanceCodec(1, {}), KrakenCodec(1, {}), KrakenFuturesCodec(1, {}), BybitCodec(1, {}),
                                   CoinbaseCodec(1, {}), DeribitCodec(1, {}), BitstampCodec(1, {}),
                                   BinanceFuturesCodec(1, {}), BinanceDeliveryCodec(1, {}), OkxCodec(1, {})],
                         ids=["binance", "kraken", "kf", "bybit", "coinbase", "deribit", "bitstamp", "binance_futures",
                              "binance_delivery", "okx"])
def test_pathological_inputs(codec):
    """Deep nesting (no recursion), enormous numbers and strings, every byte value."""
    cases = [
        b"[" * 200_000,
        b"{\"a\":" * 100_000,
        b"[" * 31 + b"]" * 31,
        b'{"stream":"a@aggTrade","data":' + b"[" * 50_000 + b"]" * 50_000 + b"}",
        b"1" * 1_000_000,
        b'"' + b"a" * 1_000_000 + b'"',
        b'"' + b"\\u0041" * 100_000,
        b'{"e":"aggTrade","s":"X","T":' + b"9" * 100_000 + b"}",
        b'{"feed":"book","product_id":"X","price":1e' + b"9" * 100_000 + b"}",
        bytes(range(256)),
        b"\x00" * 1000,
        b"",
        b" \t\r\n",
        "{\"event\":\"h\u00e9artbeat\"}".encode(),
    ]
    for frame in cases:
        with pytest.raises(CodecError) as ei:
            codec.decode(frame, 1)
        assert 0 <= ei.value.offset <= len(frame)
