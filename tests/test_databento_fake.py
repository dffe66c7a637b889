"""Conformance: the official ``databento`` client (real HTTPS on loopback, local CA) against dm's
fake historical gateway, on the real DBN files of data/databento — the client accepts every
response, and the fake keeps Databento's rules (start inclusive / end exclusive on ts_recv, auth,
error shape, Retry-After, cut streams)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import warnings

import databento
import numpy as np
import pytest
import requests
from databento.common.error import BentoClientError, BentoError, BentoServerError, BentoWarning
from databento.common.symbology import InstrumentMap

from dm.databento.fake import Fault
from dm.databento.times import to_ns
from dm.dbn import read_dbn
from dm.records import RType
from tests.databento_fixtures import DATA, ESU4_MBP1, ESU4_TRADES, KEY, ROOT, USD_PER_GB, gateway, gw  # noqa: F401

DAY = dict(dataset="GLBX.MDP3", symbols=["ESU4"], start="2024-07-01", end="2024-07-03")


@pytest.fixture
def client(gw, monkeypatch):
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", gw.ca_file)
    return databento.Historical(KEY, gateway=gw.url)


def _file(path):
    r = read_dbn(path)
    return r, r.arrays()


def test_get_range_is_the_file(client, tmp_path):
    store = client.timeseries.get_range(schema="mbp-1", **DAY)
    assert store.metadata.dataset == "GLBX.MDP3" and str(store.metadata.schema) == "mbp-1"
    assert store.metadata.mappings["ESU4"][0]["symbol"] == "118"
    df = store.to_df()
    assert len(df) == 2288
    # byte for byte the records of the file, through dm's converter on both sides
    path = tmp_path / "got.dbn.zst"
    store.to_file(path)
    got, src = _file(path)[1], _file(ESU4_MBP1)[1]
    for rt in (RType.BBO, RType.MBP_EVENT):
        assert np.array_equal(got[rt], src[rt])


def test_start_inclusive_end_exclusive_on_ts_recv(client):
    src = _file(ESU4_TRADES)[1][RType.TRADE]
    t = int(src["ts_recv"][40])
    assert int(src["ts_event"][40]) != t  # the filter is on ts_recv, not ts_event
    n_at = int((src["ts_recv"] == t).sum())
    kw = dict(dataset="GLBX.MDP3", symbols=["ESU4"], schema="trades")
    assert client.metadata.get_record_count(start=t, end=t + 1, **kw) == n_at
    assert client.metadata.get_record_count(start=t + 1, end=t + 2, **kw) == int((src["ts_recv"] == t + 1).sum())
    before = int((src["ts_recv"] < t).sum())
    assert len(client.timeseries.get_range(start="2024-07-01", end=t, **kw).to_df()) == before
    assert len(client.timeseries.get_range(start=t, end="2024-07-03", **kw).to_df()) == 120 - before


def test_metadata_calls_price_records_times_size(client):
    for schema, size, n in (("trades", 48, 120), ("mbp-1", 80, 2288)):
        kw = dict(schema=schema, **DAY)
        assert client.metadata.get_record_count(**kw) == n
        assert client.metadata.get_billable_size(**kw) == n * size
        assert client.metadata.get_cost(**kw) == n * size * USD_PER_GB / 1e9
    # a window with one day only: the trades of 2024-07-01 by ts_recv
    assert client.metadata.get_record_count(dataset="GLBX.MDP3", symbols=["ESU4"], schema="trades",
                                            start="2024-07-01", end="2024-07-02") == 28


def test_dataset_range_and_lists(client):
    rng = client.metadata.get_dataset_range("GLBX.MDP3")
    assert to_ns(rng["schema"]["mbp-1"]["end"]) == to_ns("2024-07-03")
    assert to_ns(rng["start"]) <= to_ns("2020-12-28") and set(rng["schema"]) >= {"trades", "mbp-1", "ohlcv-1m"}
    assert client.metadata.list_datasets() == ["GLBX.MDP3", "XNAS.ITCH"]
    assert "trades" in client.metadata.list_schemas("XNAS.ITCH")


def test_symbology_resolve_accepted_by_the_client(client):
    res = client.symbology.resolve("GLBX.MDP3", ["ESU4", "NQU4", "ESZ9"], "raw_symbol", "instrument_id", "2024-07-01", "2024-07-02")
    assert res["not_found"] == ["ESZ9"] and res["status"] == 2
    imap = InstrumentMap()
    imap.insert_json(res)  # the client's own parser takes our answer
    import datetime as dt

    assert imap.resolve(118, dt.date(2024, 7, 1)) == "ESU4" and imap.resolve(4358, dt.date(2024, 7, 1)) == "NQU4"
    parent = client.symbology.resolve("GLBX.MDP3", ["ES.FUT"], "parent", "instrument_id", "2024-07-01", "2024-07-02")
    assert parent["result"]["ES.FUT"][0]["s"] == "118"
    cont = client.symbology.resolve("GLBX.MDP3", ["NQ.c.0"], "continuous", "instrument_id", "2024-07-01", "2024-07-02")
    assert cont["result"]["NQ.c.0"][0]["s"] == "4358"
    back = client.symbology.resolve("GLBX.MDP3", ["118"], "instrument_id", "raw_symbol", "2024-07-01", "2024-07-02")
    assert back["result"]["118"][0]["s"] == "ESU4"


def test_parent_request_returns_its_contracts(client):
    store = client.timeseries.get_range(schema="trades", stype_in="parent", **{**DAY, "symbols": ["ES.FUT"]})
    assert len(store.to_df()) == 120 and "ES.FUT" in store.metadata.mappings


def test_errors_have_databentos_shape(client, gw):
    with pytest.raises(BentoClientError) as e:
        databento.Historical("db-WRONGWRONGWRONGWRONGWRONGWRONG", gateway=gw.url).metadata.get_cost(schema="trades", **DAY)
    assert e.value.http_status == 401 and e.value.json_body["detail"]["case"] == "auth_invalid_key"
    assert gw.stats["auth_failures"] == 1 and gw.calls("metadata.get_cost") == 0
    with pytest.raises(BentoClientError) as e:
        client.timeseries.get_range(schema="trades", **{**DAY, "symbols": ["ESZ9"]})
    assert e.value.http_status == 422 and "None of the symbols could be resolved" in str(e.value)
    assert set(e.value.json_body["detail"]) == {"case", "message", "docs"}
    with pytest.raises(BentoClientError) as e:
        client.timeseries.get_range(schema="trades", **{**DAY, "end": "2024-07-04"})
    assert e.value.json_body["detail"]["case"] == "data_end_after_available_end"
    gw.add_fault(Fault("metadata.get_cost", status=429, retry_after=7))
    with pytest.raises(BentoClientError) as e:
        client.metadata.get_cost(schema="trades", **DAY)
    assert e.value.http_status == 429 and e.value.headers["Retry-After"] == "7"
    assert client.metadata.get_cost(schema="trades", **DAY) > 0  # the fault was for one request
    gw.add_fault(Fault("timeseries.get_range", status=503, times=2))
    for _ in range(2):
        with pytest.raises(BentoServerError) as e:
            client.timeseries.get_range(schema="trades", **DAY)
        assert e.value.http_status == 503
    assert len(client.timeseries.get_range(schema="trades", **DAY).to_df()) == 120


def test_partly_unknown_symbols_warn(client):
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        store = client.timeseries.get_range(schema="trades", **{**DAY, "symbols": ["ESU4", "ESZ9"]})
    assert len(store.to_df()) == 120 and store.metadata.not_found == ["ESZ9"]
    assert any(issubclass(x.category, BentoWarning) and "ESZ9" in str(x.message) for x in w)


def test_cut_stream_leaves_a_decodable_prefix(client, gw, tmp_path):
    gw.add_fault(Fault("timeseries.get_range", cut_after_records=1000))
    path = tmp_path / "cut.dbn.zst"
    with pytest.raises(BentoError) as e:
        client.timeseries.get_range(schema="mbp-1", path=path, **DAY)
    assert "Error streaming response" in str(e.value)
    del e
    import gc

    gc.collect()  # the client's file is closed once its frame is gone
    import zstandard

    raw = zstandard.ZstdDecompressor().decompressobj().decompress(path.read_bytes())
    from dm.dbn import DbnConverter

    conv = DbnConverter()
    conv.feed(raw)
    assert conv.dbn_count == 1000 and conv.pending == 0
    assert gw.stats["get_range"][-1]["cut"] and gw.stats["get_range"][-1]["records"] == 1000


def test_tls_is_real(gw, monkeypatch):
    monkeypatch.delenv("REQUESTS_CA_BUNDLE", raising=False)
    monkeypatch.delenv("CURL_CA_BUNDLE", raising=False)
    with pytest.raises(requests.exceptions.SSLError):
        databento.Historical(KEY, gateway=gw.url).metadata.get_dataset_range("GLBX.MDP3")


def test_fake_databento_command(tmp_path):
    """`dm fake-databento` as a process: ready file, CA, a scripted --fault, /_fake/stats."""
    ready = tmp_path / "ready.json"
    ca = tmp_path / "ca.pem"
    env = {**os.environ, "DATABENTO_API_KEY": KEY}
    p = subprocess.Popen([sys.executable, "-m", "dm", "fake-databento", "--data", str(DATA / "glbx-mdp3-esu4-nqu4-20240701"),
                          "--hist-port", "0", "--usd-per-gb", "3", "--ca-file", str(ca), "--ready-file", str(ready),
                          "--fault", json.dumps({"method": "metadata.get_cost", "status": 500})],
                         cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while not ready.exists():
            assert p.poll() is None, p.communicate()
            assert time.monotonic() < deadline
            time.sleep(0.05)
        info = json.loads(ready.read_text())
        os.environ["REQUESTS_CA_BUNDLE"] = info["ca_file"]
        try:
            c = databento.Historical(KEY, gateway=info["url"])
            with pytest.raises(BentoServerError):
                c.metadata.get_cost(schema="trades", **DAY)
            assert c.metadata.get_cost(schema="trades", **DAY) == 120 * 48 * 3 / 1e9
            stats = requests.get(info["url"] + "/_fake/stats", verify=info["ca_file"]).json()
            assert stats["requests"]["metadata.get_cost"] == 2
            r = requests.post(info["url"] + "/_fake/faults", json=[{"method": "metadata.get_cost", "status": 422, "case": "scripted"}],
                              auth=(KEY, ""), verify=info["ca_file"])
            assert r.status_code == 200
            with pytest.raises(BentoClientError, match="scripted"):
                c.metadata.get_cost(schema="trades", **DAY)
            assert requests.post(info["url"] + "/_fake/faults", json=[{"nope": 1}], auth=(KEY, ""),
                                 verify=info["ca_file"]).status_code == 422
        finally:
            del os.environ["REQUESTS_CA_BUNDLE"]
    finally:
        p.terminate()
        p.communicate(timeout=30)
