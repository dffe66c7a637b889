"""[routing]: three tiers, stype inference, strict validation that names the key."""
from __future__ import annotations

import pytest

from dm.backfill import load_settings, parse_settings
from dm.errors import ConfigError
from dm.routing import Router, RoutingConfig, infer_stype

CFG = {
    "default": {"historical": "databento", "dataset": "XNAS.ITCH", "live": "databento"},
    "symbols": [
        {"match": "ESU4", "historical": "databento", "dataset": "GLBX.MDP3", "stype_in": "raw_symbol"},
        {"match": "NQ?4", "historical": "databento", "dataset": "GLBX.MDP3", "exchange": "CME"},
        {"match": "re:^CL[FGHJKMNQUVXZ]\\d$", "historical": "databento", "dataset": "GLBX.MDP3", "schemas": ["trades", "mbp-10"]},
        {"match": "ES*", "historical": "databento", "dataset": "GLBX.MDP3"},
    ],
    "exchanges": {
        "crypto@BINANCE": {"historical": "binance", "live": "binance"},
        "*@BINANCE": {"historical": "none", "live": "binance"},
        "future@CME": {"historical": "databento", "dataset": "GLBX.MDP3"},
    },
}


@pytest.fixture
def router():
    return Router(RoutingConfig.model_validate(CFG))


def test_stype_from_the_symbol_form():
    assert infer_stype("ES.FUT") == infer_stype("SPX.OPT") == "parent"
    assert infer_stype("ES.c.0") == infer_stype("CL.n.1") == infer_stype("ZN.v.12") == "continuous"
    assert infer_stype("ESU4") == infer_stype("BTCUSD") == infer_stype("BRK.B") == "raw_symbol"


def test_tiers_in_order(router):
    r = router.route("ESU4", "future", "CME")
    assert (r.tier, r.chosen_by, r.route.dataset) == (1, "ESU4", "GLBX.MDP3")  # tier 1 wins over tier 2
    r = router.route("NQU4")
    assert (r.tier, r.chosen_by, r.route.registry_exchange) == (1, "NQ?4", "CME")
    r = router.route("CLZ4")
    assert r.tier == 1 and r.route.schemas == ("trades", "mbp-10") and r.tier_name == "symbol rule"
    assert router.route("CLZ44").tier == 3  # a regex matches whole symbols only
    r = router.route("ES.FUT")
    assert (r.tier, r.chosen_by, r.stype_in) == (1, "ES*", "parent")
    r = router.route("BTCUSD", "crypto", "BINANCE")
    assert (r.tier, r.chosen_by, r.route.historical) == (2, "crypto@BINANCE", "binance")
    r = router.route("BTCUSD", exchange="BINANCE")
    assert (r.tier, r.chosen_by, r.route.historical) == (2, "*@BINANCE", "none")
    r = router.route("GCZ4", "future", "CME")
    assert (r.tier, r.chosen_by) == (2, "future@CME") and r.route.registry_exchange == "GLBX.MDP3"
    r = router.route("AAPL")
    assert (r.tier, r.chosen_by, r.route.dataset, r.stype_in) == (3, "default", "XNAS.ITCH", "raw_symbol")
    assert r.describe() == "AAPL: tier 3 (default) → historical databento XNAS.ITCH, live databento, stype_in raw_symbol"
    assert router.route("es.c.0").tier == 3  # symbols are case-sensitive (Databento's are)


def test_a_route_can_override_stype(router):
    cfg = RoutingConfig.model_validate({"symbols": [{"match": "ES.FUT", "historical": "databento", "dataset": "GLBX.MDP3",
                                                     "stype_in": "raw_symbol"}]})
    assert Router(cfg).route("ES.FUT").stype_in == "raw_symbol"


@pytest.mark.parametrize("routing, message", [
    ({"default": {"historical": "databento"}}, r"\[routing\]\.default: historical = 'databento' needs a dataset"),
    ({"default": {"histrical": "none"}}, r"\[routing\]\.default\.histrical: Extra inputs are not permitted"),
    ({"default": {"historical": 3}}, r"\[routing\]\.default\.historical: Input should be a valid string"),
    ({"default": {"historical": "bloomberg"}}, r"historical must be one of"),
    ({"default": {"stype_in": "isin"}}, r"stype_in must be one of"),
    ({"default": {"schemas": ["mbo"]}}, r"schemas: unknown \['mbo'\]"),
    ({"symbols": [{"historical": "none"}]}, r"\[routing\]\.symbols\.0\.match: Field required"),
    ({"symbols": [{"match": "re:([", "historical": "none"}]}, r"bad regular expression"),
    ({"exchanges": {"BINANCE": {"historical": "binance"}}}, r"\[routing\]\.exchanges: .*'asset_type@EXCHANGE'"),
    ({"surprise": {}}, r"\[routing\]\.surprise: Extra inputs are not permitted"),
])
def test_bad_routing_is_an_error_naming_the_key(routing, message):
    with pytest.raises(ConfigError, match=message):
        parse_settings({"routing": routing})


def test_shipped_configs_parse():
    for path in ("conf/demo.toml", "conf/prod.toml"):
        s = load_settings(path)
        assert s.routing.default.historical == "databento" and s.backfill.max_symbols_per_chunk == 2000
