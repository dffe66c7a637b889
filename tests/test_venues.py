"""The venue registry (dm.venues) and the one-folder-per-venue layout: every registered venue's
descriptor loads and names classes of the right kind, lookups go through the registry, and no
module outside dm/venues/ imports a venue package."""
from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

from dm import venues
from dm._codec import _Codec
from dm.booksync import BookSync
from dm.codec_ref import RefCodec
from dm.config import KNOWN_KINDS, parse, worker_kinds
from dm.errors import ConfigError
from dm.providers.base import Provider, provider_class
from dm.records import Publisher
from dm.replay import VenueReplay
from dm.symbology import Symbology

ROOT = Path(__file__).resolve().parent.parent
DM = ROOT / "dm"
VENUE_FILES = ("__init__.py", "_codec.pyx", "_codec.pxd", "codec_ref.py", "booksync.py", "symbology.py",
               "provider.py", "replay.py")


@pytest.mark.parametrize("kind", venues.kinds())
def test_descriptor_names_classes_of_the_right_kind(kind):
    v = venues.venue(kind)
    assert v.kind == kind and venues.REGISTRY[kind] == f"dm.venues.{kind}"
    assert issubclass(v.codec_class(), _Codec)
    assert issubclass(v.codec_ref_class(), RefCodec)
    assert issubclass(v.provider_class(), Provider) and provider_class(kind) is v.provider_class()
    assert issubclass(v.symbology_class(), Symbology) and v.symbology_class().kind == kind
    assert issubclass(v.replay_class(), VenueReplay) and v.replay_class().kind == kind
    assert v.reference_path.startswith("/") and v.hosts
    # records keep dm.records.Publisher values: an exchange named there has the enum's id
    if v.exchange in Publisher.__members__:
        assert Publisher[v.exchange] == v.publisher_id
    # the codec says which venue it decodes in its errors
    assert v.codec_class()(v.publisher_id).venue == v.codec_ref_class().VENUE == v.exchange


@pytest.mark.parametrize("kind", venues.kinds())
def test_venue_folder_holds_every_part(kind):
    folder = DM / "venues" / kind
    assert sorted(p.name for p in folder.iterdir() if p.name in VENUE_FILES) == sorted(VENUE_FILES)


def test_publisher_ids_are_unique():
    ids = [v.publisher_id for v in venues.venues()]
    assert len(set(ids)) == len(ids) and all(1000 < i <= 0xFFFF for i in ids)  # 1-999: Databento's
    taken = {int(p): name for name, p in Publisher.__members__.items()}
    for v in venues.venues():
        assert taken.get(v.publisher_id, v.exchange) == v.exchange, f"{v.kind}: id {v.publisher_id} is {taken[v.publisher_id]}"


def test_registry_lookups():
    assert venues.kinds() == tuple(venues.REGISTRY)
    assert venues.worker_kinds() == venues.kinds()
    assert [v.kind for v in venues.venues()] == list(venues.kinds())
    with pytest.raises(ConfigError, match="unknown venue kind 'nope'"):
        venues.venue("nope")
    with pytest.raises(NotImplementedError, match="has no worker"):
        provider_class("nope")
    # the longest host wins: futures.kraken.com is not kraken.com
    assert venues.venue_of_host("futures.kraken.com") == "kraken_futures"
    assert venues.venue_of_host("www.futures.kraken.com") == "kraken_futures"
    assert venues.venue_of_host("api.kraken.com") == "kraken"
    assert venues.venue_of_host("Stream.Binance.COM.") == "binance"
    assert venues.venue_of_host("notbinance.com") is None
    assert venues.venue_of_url("wss://example.com/ws.kraken.com") is None


def test_config_defaults_come_from_the_descriptor():
    assert KNOWN_KINDS == (*venues.kinds(), "databento")
    assert worker_kinds() == frozenset(venues.worker_kinds()) | {"databento"}  # dm.providers.WORKERS
    raw = {"providers": {k: {"kind": k, "ws_url": "ws://x", "symbols": ["BTCUSD"]} for k in venues.kinds()}}
    cfg = parse(raw, env={})
    for k in venues.kinds():
        v = venues.venue(k)
        assert (cfg.providers[k].exchange, cfg.providers[k].publisher_id) == (v.exchange, v.publisher_id)
    with pytest.raises(ConfigError, match="has no worker"):
        parse({"providers": {"x": {"kind": "nope", "ws_url": "ws://x", "symbols": []}}}, env={})


def _venue_imports(path: Path) -> list[str]:
    """Modules under dm.venues.<venue> that a file imports or cimports."""
    text = path.read_text()
    if path.suffix == ".py":
        names = []
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.Import):
                names += [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names.append(node.module)
                if node.module == "dm.venues":
                    names += [f"dm.venues.{a.name}" for a in node.names if a.name in venues.REGISTRY]
    else:
        names = re.findall(r"^\s*(?:from|c?import)\s+([\w.]+)", text, re.M)
    return [n for n in names if n.startswith("dm.venues.")]


def test_nothing_outside_dm_venues_imports_a_venue():
    offenders = {}
    for path in DM.rglob("*"):
        if path.suffix in (".py", ".pyx", ".pxd") and "venues" not in path.relative_to(DM).parts:
            found = _venue_imports(path)
            if found:
                offenders[str(path.relative_to(ROOT))] = found
    assert offenders == {}, "look venues up through dm.venues (venue(kind).xxx_class()) instead"


def test_client_import_stays_light():
    code = ("import sys, dm.client; bad = sorted(m for m in sys.modules if m.startswith('dm.venues') "
            "or m in ('dm.cli', 'aiohttp')); print(bad); sys.exit(1 if bad else 0)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0, r.stdout + r.stderr
