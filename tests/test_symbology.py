"""dm.symbology on the real recorded REST reference bodies (Binance exchangeInfo, Kraken
AssetPairs, Kraken Futures instruments), a real aiohttp server on loopback for fetch_reference,
and hypothesis-generated exchangeInfo bodies for the collision policy."""
from __future__ import annotations

import asyncio
import json
import re
from decimal import Decimal

import aiohttp
import pytest
from aiohttp import web
from hypothesis import given, settings
from hypothesis import strategies as st

from dm.errors import RecordingError, SymbologyError
from dm.symbology import NativeSymbology, fetch_reference, for_provider, read_recorded_reference
from dm.venues import venue as venue_of_kind
from dm.venues.binance.symbology import BinanceSymbology
from dm.venues.kraken.symbology import KrakenSymbology
from dm.symbology import CanonicalParts, derivative_symbol, parse_canonical
from dm.venues.kraken_futures.symbology import KrakenFuturesSymbology

BINANCE_FILES = ["binance/2021-10-12/BINANCE.0", "binance/2021-08-14/BINANCE.0"]
CANONICAL_RE = re.compile(r"^[A-Z0-9]+(-[A-Z0-9]+)*$")


def _body(data_dir, rel):
    url, ts, body = read_recorded_reference(data_dir / rel)
    assert url.startswith("https://") and ts > 1.6e9
    return body


@pytest.fixture(scope="module")
def kraken_body(data_dir):
    return _body(data_dir, "kraken/KRAKEN.0")


@pytest.fixture(scope="module")
def kf_body(data_dir):
    return _body(data_dir, "kraken_futures/KRAKEN_FUTURES.0")


def _assert_reversible(sym, expected_count):
    pairs = sym.pairs()
    assert len(pairs) == expected_count
    assert len(set(pairs.values())) == len(pairs), "pairs() must be a bijection"
    for venue, canonical in pairs.items():
        assert CANONICAL_RE.match(canonical), canonical
        assert sym.to_canonical(venue) == canonical
        assert sym.to_venue(canonical) == venue
        assert sym.info_canonical(canonical).venue_symbol == venue
        assert venue in sym


# ---------------------------------------------------------------- Binance


@pytest.mark.parametrize("rel", BINANCE_FILES)
def test_binance_every_real_symbol_is_reversible(data_dir, rel):
    raw = json.loads(_body(data_dir, rel))["symbols"]
    for aliases in ({}, {"USDT": "USD"}):
        sym = for_provider("binance", _body(data_dir, rel), aliases)
        assert isinstance(sym, BinanceSymbology) and sym.exchange == "BINANCE"
        assert sym.collisions() == {}  # no real Binance symbol collides under USDT→USD alone
        _assert_reversible(sym, len(raw))
        for s in raw:
            quote = aliases.get(s["quoteAsset"], s["quoteAsset"])
            assert sym.to_canonical(s["symbol"]) == s["baseAsset"] + quote
            assert sym.to_canonical(s["symbol"].lower()) == s["baseAsset"] + quote  # stream names
        assert len(sym.pairs(tradeable_only=True)) == sum(s["status"] == "TRADING" for s in raw)
        assert sum(not i.tradeable for i in sym) == sum(s["status"] != "TRADING" for s in raw) > 0


def test_binance_quote_alias_and_reference_values(data_dir):
    sym = for_provider("binance", _body(data_dir, BINANCE_FILES[0]), {"USDT": "USD"})
    assert sym.to_canonical("ZILUSDT") == "ZILUSD"
    assert sym.to_venue("ZILUSD") == "ZILUSDT"
    assert sym.to_canonical("ETHBTC") == "ETHBTC"
    info = sym.info("btcusdt")
    assert (info.base, info.quote, info.status) == ("BTC", "USD", "TRADING")
    assert info.tick_size == Decimal("0.01") and info.lot_size == Decimal("0.00001")
    assert sym.info("ETHBTC").tick_size == Decimal("0.000001")
    # every symbol the recorded Binance websocket sessions carry is known
    for rel in ("binance/2021-10-12/BINANCE.ws.1.0", "binance/2021-08-14/BINANCE.ws.1.0"):
        book = for_provider("binance", _body(data_dir, rel.replace(".ws.1.0", ".0")), {"USDT": "USD"})
        seen = set(re.findall(r'"s":"([A-Z0-9]+)"', (data_dir / rel).read_text()))
        assert len(seen) == 4
        for v in seen:
            assert book.to_venue(book.to_canonical(v)) == v


def test_binance_alias_collisions_are_lazy_and_name_both_symbols(data_dir):
    sym = for_provider("binance", _body(data_dir, BINANCE_FILES[0]), {"USDT": "USD", "BUSD": "USD"})
    coll = sym.collisions()
    assert coll["BTCUSD"] == ("BTCBUSD", "BTCUSDT")
    assert len(coll) > 100
    for venue in ("BTCUSDT", "BTCBUSD"):
        with pytest.raises(SymbologyError, match="BTCBUSD.*BTCUSDT.*BTCUSD"):
            sym.to_canonical(venue)
        assert sym.info(venue).canonical == "BTCUSD"  # the venue symbol itself is unambiguous
    with pytest.raises(SymbologyError, match="'BTCBUSD' and 'BTCUSDT'"):
        sym.to_venue("BTCUSD")
    pairs = sym.pairs()
    assert "BTCUSDT" not in pairs and "BTCBUSD" not in pairs
    assert len(pairs) == len(sym) - sum(len(v) for v in coll.values())
    _assert_reversible(sym, len(pairs))
    # configured symbols: unrelated ones resolve, an ambiguous one fails start-up with all problems
    assert sym.select(["ETHBTC", "nknusd"]) == {"ETHBTC": "ETHBTC", "NKNUSD": "NKNUSDT"}
    with pytest.raises(SymbologyError) as e:
        sym.select(["ETHBTC", "BTCUSD", "NOPEUSD"])
    assert "BTCUSDT" in str(e.value) and "BTCBUSD" in str(e.value) and "NOPEUSD" in str(e.value)


def test_binance_hypothetical_native_and_aliased_symbol_collide():
    body = {"symbols": [
        {"symbol": "BTCUSDT", "status": "TRADING", "baseAsset": "BTC", "quoteAsset": "USDT"},
        {"symbol": "BTCUSD", "status": "TRADING", "baseAsset": "BTC", "quoteAsset": "USD"},
        {"symbol": "ETHUSDT", "status": "TRADING", "baseAsset": "ETH", "quoteAsset": "USDT"},
    ]}
    sym = BinanceSymbology.from_exchange_info(json.dumps(body), {"usdt": "usd"})
    assert sym.collisions() == {"BTCUSD": ("BTCUSD", "BTCUSDT")}
    assert sym.pairs() == {"ETHUSDT": "ETHUSD"}
    with pytest.raises(SymbologyError, match="'BTCUSD' and 'BTCUSDT'"):
        sym.to_canonical("BTCUSD")
    # without the alias nothing collides
    plain = BinanceSymbology.from_exchange_info(json.dumps(body))
    assert plain.collisions() == {} and plain.to_venue("BTCUSD") == "BTCUSD"


def test_unknown_symbols_and_bad_bodies(data_dir):
    sym = for_provider("binance", _body(data_dir, BINANCE_FILES[1]), {})
    with pytest.raises(SymbologyError, match="unknown venue symbol 'NOPE'"):
        sym.to_canonical("NOPE")
    with pytest.raises(SymbologyError, match="unknown canonical symbol"):
        sym.to_venue("NOPE")
    assert "NOPE" not in sym and 42 not in sym
    with pytest.raises(SymbologyError):
        sym.to_canonical(42)
    with pytest.raises(SymbologyError, match="not JSON"):
        for_provider("binance", b"<html>", {})
    with pytest.raises(SymbologyError, match="symbols"):
        for_provider("binance", b"{}", {})
    with pytest.raises(SymbologyError, match="unknown provider kind"):
        for_provider("bitmex", b"{}", {})
    with pytest.raises(SymbologyError, match="AssetPairs error"):
        for_provider("kraken", b'{"error":["EGeneral:Too many requests"]}', {})
    with pytest.raises(SymbologyError, match="instruments request failed"):
        for_provider("kraken_futures", b'{"result":"error","error":"apiLimitExceeded"}', {})
    dup = {"symbols": [{"symbol": "A1B", "baseAsset": "A1", "quoteAsset": "B"}] * 2}
    with pytest.raises(SymbologyError, match="listed twice"):
        BinanceSymbology.from_exchange_info(dup)


# ---------------------------------------------------------------- Kraken spot


def test_kraken_every_real_pair_is_reversible(kraken_body):
    raw = json.loads(kraken_body)["result"]
    sym = for_provider("kraken", kraken_body, {})
    assert isinstance(sym, KrakenSymbology)
    ws_pairs = {k: v for k, v in raw.items() if "wsname" in v}
    assert len(ws_pairs) == 293 and len(raw) - len(ws_pairs) == 11  # the .d dark-pool pairs
    assert sym.collisions() == {}
    _assert_reversible(sym, len(ws_pairs))
    for rest_name, p in ws_pairs.items():
        ws = p["wsname"]
        canonical = sym.to_canonical(ws)
        b, q = ws.split("/")
        alias = {"XBT": "BTC", "XDG": "DOGE"}
        assert canonical == re.sub(r"[^A-Z0-9]", "", alias.get(b, b) + alias.get(q, q))
        # REST pair name, altname and lower case all name the same pair
        assert sym.to_canonical(rest_name) == canonical
        assert sym.to_canonical(p["altname"]) == canonical
        assert sym.to_canonical(ws.lower()) == canonical
        assert sym.to_canonical(f"{alias.get(b, b)}/{alias.get(q, q)}") == canonical  # ws v2 form
        info = sym.info(rest_name)
        assert info.venue_symbol == ws and info.rest_name == rest_name
        assert (info.pair_decimals, info.lot_decimals) == (p["pair_decimals"], p["lot_decimals"])
        assert info.tick_size == Decimal(1).scaleb(-p["pair_decimals"])


def test_kraken_aliases_and_specific_pairs(kraken_body, data_dir):
    sym = for_provider("kraken", kraken_body, {})
    assert sym.to_canonical("XBT/USD") == "BTCUSD"
    assert sym.to_canonical("XXBTZUSD") == "BTCUSD"
    assert sym.to_canonical("xbtusd") == "BTCUSD"
    assert sym.to_canonical("BTC/USD") == "BTCUSD"  # websocket v2 form
    assert sym.to_canonical("DOGE/USD") == "DOGEUSD" and sym.info("btc/eur").venue_symbol == "XBT/EUR"
    assert sym.to_venue("BTCUSD") == "XBT/USD"
    assert sym.to_canonical("XDG/USD") == "DOGEUSD"
    assert sym.to_canonical("ETH/XBT") == "ETHBTC"
    assert sym.to_canonical("ETH2.S/ETH") == "ETH2SETH" and sym.to_venue("ETH2SETH") == "ETH2.S/ETH"
    info = sym.info("XBT/USD")
    assert (info.pair_decimals, info.lot_decimals) == (1, 8)
    with pytest.raises(SymbologyError):
        sym.to_canonical("XXBTZUSD.d")  # dark pool: not on the websocket
    # configurable asset aliases: none at all keeps Kraken's codes
    raw_codes = for_provider("kraken", kraken_body, {}, asset_aliases={})
    assert raw_codes.to_canonical("XBT/USD") == "XBTUSD"
    # every pair the recorded websocket sessions subscribe to is known
    for f in ("KRAKEN-c197c0.0", "KRAKEN-4b7396.0", "KRAKEN-82ac16.0"):
        text = (data_dir / "kraken" / f).read_text()
        pairs = json.loads(re.search(r'"pair":(\[[^\]]*\])', text).group(1))
        assert len(pairs) == 10
        assert [sym.to_venue(sym.to_canonical(p)) for p in pairs] == pairs


def test_kraken_quote_alias_collisions(kraken_body):
    sym = for_provider("kraken", kraken_body, {"USDT": "USD"})
    coll = sym.collisions()
    assert coll["BTCUSD"] == ("XBT/USD", "XBT/USDT")
    assert coll["ADAUSD"] == ("ADA/USD", "ADA/USDT")
    with pytest.raises(SymbologyError, match="'XBT/USD' and 'XBT/USDT'"):
        sym.select(["BTCUSD"])
    with pytest.raises(SymbologyError, match="XBT/USDT"):
        sym.to_canonical("XXBTZUSD")
    assert sym.select(["BTCEUR", "ETHBTC"]) == {"BTCEUR": "XBT/EUR", "ETHBTC": "ETH/XBT"}


def test_kraken_ambiguous_input_form_raises():
    # an altname equal to another pair's REST name must not silently pick one of them
    body = {"error": [], "result": {
        "ABCUSD": {"altname": "ABCUSD", "wsname": "ABC/USD", "pair_decimals": 2, "lot_decimals": 8},
        "XABCZUSD": {"altname": "ABCUSD", "wsname": "XABC/ZUSD", "pair_decimals": 2, "lot_decimals": 8},
    }}
    sym = KrakenSymbology.from_asset_pairs(json.dumps(body))
    assert sym.to_canonical("ABC/USD") == "ABCUSD" and sym.to_canonical("XABCZUSD") == "XABCZUSD"
    with pytest.raises(SymbologyError, match="ABC/USD.*XABC/ZUSD"):
        sym.to_canonical("abcusd")


# ---------------------------------------------------------------- Kraken Futures


def test_kraken_futures_every_real_instrument(kf_body, data_dir):
    raw = json.loads(kf_body)["instruments"]
    sym = for_provider("kraken_futures", kf_body, {"USDT": "USD"})
    assert isinstance(sym, KrakenFuturesSymbology)
    assert len(raw) == 27 and sym.collisions() == {}
    _assert_reversible(sym, 27)
    expected = {
        "PI_XBTUSD": "BTCUSD-BTC-PERP",
        "PI_XRPUSD": "XRPUSD-XRP-PERP",
        "FI_XBTUSD_210924": "BTCUSD-BTC-210924",
        "FI_ETHUSD_211231": "ETHUSD-ETH-211231",
        "IN_XBTUSD": "BTCUSD-INDEX",
        "RR_ETHUSD": "ETHUSD-REFRATE",
    }
    for venue, canonical in expected.items():
        assert sym.to_canonical(venue) == canonical
        assert sym.to_canonical(venue.lower()) == canonical  # REST lists lower case
        assert sym.to_venue(canonical) == venue
    for inst in raw:
        info = sym.info(inst["symbol"])
        assert info.venue_symbol == inst["symbol"].upper() and info.rest_name == inst["symbol"]
        if inst["symbol"].startswith(("in_", "rr_")):
            assert not info.tradeable and info.kind in ("index", "reference_rate")
            assert info.tick_size is None
        else:
            assert info.tradeable and info.kind in ("perpetual_inverse", "future_inverse")
            # exact decimals straight from the JSON number text, never through float
            text = re.search(r'"symbol":"%s"[^}]*"tickSize":([0-9.eE-]+)' % inst["symbol"],
                             kf_body.decode()).group(1)
            assert info.tick_size == Decimal(text)
            assert info.contract_size == Decimal(1)
            assert (info.expiry is None) == inst["symbol"].startswith("pi_")
    assert sym.info("PI_XRPUSD").tick_size == Decimal("0.0001")
    assert sym.info("fi_xbtusd_210730").expiry == "210730"
    tradeable = sym.pairs(tradeable_only=True)
    assert len(tradeable) == 17 and not any(c.endswith(("-INDEX", "-REFRATE")) for c in tradeable.values())
    assert all(parse_canonical(c).klass in ("perpetual", "future") for c in tradeable.values())
    assert sym.info("PI_XBTUSD").settle == "BTC" and sym.info("PI_XBTUSD").resolved_size_precision() == 0
    # every product_id of the recorded websocket session is known
    seen = set(re.findall(r'"product_id":"([A-Z_0-9]+)"', (data_dir / "kraken_futures" / "KRAKEN_FUTURES.ws.1.0").read_text()))
    assert len(seen) == 10
    for p in seen:
        assert sym.to_venue(sym.to_canonical(p)) == p


def test_kraken_futures_linear_contracts_never_collide_with_inverse():
    body = {"result": "success", "instruments": [
        {"symbol": "PI_XBTUSD", "type": "futures_inverse", "tradeable": True, "tickSize": 0.5, "contractSize": 1},
        {"symbol": "PF_XBTUSD", "type": "flexible_futures", "tradeable": True, "tickSize": 1, "contractSize": 1,
         "base": "XBT", "quote": "USD"},
        {"symbol": "FF_XBTUSD_230929", "type": "flexible_futures", "tradeable": True, "tickSize": 1, "contractSize": 1},
        {"symbol": "FI_XBTUSD_230929", "type": "futures_inverse", "tradeable": True, "tickSize": 0.5, "contractSize": 1},
        {"symbol": "PF_1000SHIBUSD", "type": "flexible_futures", "tradeable": True, "tickSize": 1e-06,
         "contractSize": 1},
        {"symbol": "PF_ETHXBT", "type": "flexible_futures", "tradeable": True, "tickSize": 0.00001, "contractSize": 1},
    ]}
    sym = KrakenFuturesSymbology.from_instruments(json.dumps(body))
    assert sym.collisions() == {}
    assert sym.pairs() == {
        "PI_XBTUSD": "BTCUSD-BTC-PERP",
        "PF_XBTUSD": "BTCUSD-USD-PERP",
        "FF_XBTUSD_230929": "BTCUSD-USD-230929",
        "FI_XBTUSD_230929": "BTCUSD-BTC-230929",
        "PF_1000SHIBUSD": "1000SHIBUSD-USD-PERP",
        "PF_ETHXBT": "ETHBTC-BTC-PERP",
    }
    assert sym.info("pf_xbtusd").kind == "perpetual_linear"
    assert sym.info("FF_XBTUSD_230929").kind == "future_linear"
    assert sym.info("PF_1000SHIBUSD").tick_size == Decimal("0.000001")
    with pytest.raises(SymbologyError, match="YYMMDD"):
        KrakenFuturesSymbology.from_instruments({"result": "success", "instruments": [{"symbol": "FI_XBTUSD_SEP"}]})
    with pytest.raises(SymbologyError, match="cannot parse"):
        KrakenFuturesSymbology.from_instruments({"result": "success", "instruments": [{"symbol": "XBTUSD"}]})


def test_native_symbology_is_identity():
    sym = for_provider("databento", None, {}, exchange="GLBX.MDP3", symbols=["ESU4", "nqu4"])
    assert isinstance(sym, NativeSymbology)
    assert sym.to_canonical("ESU4") == "ESU4" and sym.to_venue("ESH1") == "ESH1"
    assert sym.pairs() == {"ESU4": "ESU4", "NQU4": "NQU4"}
    with pytest.raises(SymbologyError):
        sym.to_canonical("")


def test_read_recorded_reference_rejects_other_lines(tmp_path):
    p = tmp_path / "X.0"
    p.write_text('1626994927.1: {"event":"info"}\n')
    with pytest.raises(RecordingError):
        read_recorded_reference(p)


# ---------------------------------------------------------------- fetch_reference over HTTP


def test_fetch_reference_from_a_real_server(data_dir, kraken_body, kf_body):
    bodies = {
        venue_of_kind("binance").reference_path: _body(data_dir, BINANCE_FILES[0]),
        venue_of_kind("kraken").reference_path: kraken_body,
        venue_of_kind("kraken_futures").reference_path: kf_body,
    }

    async def handler(request):
        body = bodies.get(request.path)
        if body is None:
            return web.Response(status=404, text="no such endpoint")
        return web.Response(body=body, content_type="application/json")

    async def main():
        app = web.Application()
        app.router.add_get("/{tail:.*}", handler)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]
        base = f"http://127.0.0.1:{port}"
        try:
            async with aiohttp.ClientSession() as session:
                out = {}
                for kind in ("binance", "kraken", "kraken_futures"):
                    out[kind] = await fetch_reference(kind, base + "/", session)
                with pytest.raises(SymbologyError, match="HTTP 404"):
                    await fetch_reference("binance", base + "/nope", session)
                with pytest.raises(SymbologyError, match="no REST reference"):
                    await fetch_reference("databento", base, session)
                return out
        finally:
            await runner.cleanup()

    out = asyncio.run(main())
    assert out["binance"] == bodies[venue_of_kind("binance").reference_path]
    assert for_provider("kraken", out["kraken"], {}).to_canonical("XBT/USD") == "BTCUSD"
    assert for_provider("kraken_futures", out["kraken_futures"], {}).to_venue("BTCUSD-BTC-PERP") == "PI_XBTUSD"

    async def refused():
        async with aiohttp.ClientSession() as session:
            # port 1 on loopback: nothing listens there
            await fetch_reference("kraken", "http://127.0.0.1:1", session)

    with pytest.raises(SymbologyError, match="127.0.0.1:1/0/public/AssetPairs"):
        asyncio.run(refused())


# ---------------------------------------------------------------- property: collision policy

_ASSET = st.sampled_from(["BTC", "ETH", "USD", "USDT", "BUSD", "B", "TC", "BT", "CUSD", "EUR", "1INCH"])


@settings(max_examples=200, deadline=None)
@given(
    pairs=st.lists(st.tuples(_ASSET, _ASSET), min_size=1, max_size=30, unique=True),
    aliases=st.dictionaries(st.sampled_from(["USDT", "BUSD", "EUR"]), st.sampled_from(["USD", "EUR"]), max_size=3),
)
def test_collision_policy_property(pairs, aliases):
    """Whatever the symbols and aliases: building never fails, pairs() is a bijection that
    round-trips, and every venue symbol left out of it is in collisions() together with every
    other venue symbol claiming its canonical symbol (concatenation ambiguity included:
    B+TCUSD vs BT+CUSD vs BTC+USD)."""
    symbols = {}
    for b, q in pairs:
        symbols.setdefault(b + q, (b, q))  # a venue symbol is listed once
    body = {"symbols": [{"symbol": s, "status": "TRADING", "baseAsset": b, "quoteAsset": q}
                        for s, (b, q) in symbols.items()]}
    sym = BinanceSymbology.from_exchange_info(body, aliases)
    want: dict[str, list[str]] = {}
    for s, (b, q) in symbols.items():
        want.setdefault(b + aliases.get(q, q), []).append(s)
    coll = sym.collisions()
    assert coll == {c: tuple(sorted(v)) for c, v in want.items() if len(v) > 1}
    pm = sym.pairs()
    assert set(pm) | {v for vs in coll.values() for v in vs} == set(symbols)
    for venue, canonical in pm.items():
        assert sym.to_venue(sym.to_canonical(venue)) == venue and want[canonical] == [venue]
    for canonical, venues in coll.items():
        with pytest.raises(SymbologyError) as e:
            sym.to_venue(canonical)
        assert all(repr(v) in str(e.value) for v in venues)
        for v in venues:
            with pytest.raises(SymbologyError):
                sym.to_canonical(v)


def test_canonical_scheme_builds_and_reads_every_class():
    cases = [
        (("BTC", "USD", "BTC"), {}, "BTCUSD-BTC-PERP", CanonicalParts("BTCUSD", "perpetual", "BTC")),
        (("BTC", "USD", "USD"), {"expiry": "PERP"}, "BTCUSD-USD-PERP", CanonicalParts("BTCUSD", "perpetual", "USD")),
        (("ETH", "USD", "ETH"), {"expiry": "210924"}, "ETHUSD-ETH-210924", CanonicalParts("ETHUSD", "future", "ETH", "210924")),
        (("BTC", "USD", "BTC"), {"expiry": "210924", "strike": Decimal("40000"), "option_type": "C"},
         "BTCUSD-BTC-210924-40000-C", CanonicalParts("BTCUSD", "option", "BTC", "210924", Decimal("40000"), "C")),
        (("XRP", "USD", "USD"), {"expiry": "211231", "strike": "0.5500", "option_type": "P"},
         "XRPUSD-USD-211231-0D55-P", CanonicalParts("XRPUSD", "option", "USD", "211231", Decimal("0.55"), "P")),
    ]
    for args, kw, text, parts in cases:
        assert derivative_symbol(*args, **kw) == text
        assert parse_canonical(text) == parts
    assert parse_canonical("BTCUSD") == CanonicalParts("BTCUSD", "spot")
    assert parse_canonical("BTCUSD-INDEX").klass == "index"
    for bad in ("BTCUSD-", "BTCUSD-BTC-SEP21", "BTCUSD-BTC-210924-40000-X", "BTC.USD", "BTCUSD-BTC-210924-4.5-C"):
        with pytest.raises(SymbologyError):
            parse_canonical(bad)
    with pytest.raises(SymbologyError):
        derivative_symbol("BTC", "USD", "BTC", "PERP", 1, "C")  # a perpetual has no strike
