"""OKX v5 end to end: `dm supervise` replays the real recording (data/okx/2022-02-27: books-l2-tbt
with CRC32 checksums, trades, tickers; REST instruments of every instrument type) through the
replay server to a real worker process on loopback; dm.client readers collect every channel
record; the persister stores them (SQLite and PostgreSQL). Every DEPTH is checked against a book
rebuilt in pure Python (tests/book_ref.py) from the same recorded frames, trades and ticker BBOs
against the recording parsed with json (numbers from their text, never through float); every
book checksum verifies in the worker, 0 gaps, books never crossed."""
from __future__ import annotations

import json
from collections import defaultdict
from decimal import Decimal
from pathlib import Path

import pytest

from dm.recording import read_recording
from dm.records import SIDE_ASK, SIDE_BID, UNDEF_PRICE, Bbo, Depth, Trade
from dm.storage import open_storage
from tests.book_ref import MASK_TOP10, RefBook, delta, snapshot_records
from tests.e2e import (ChannelCollector, config_head, depth_levels, leftover_segments, provider_toml, run_supervised,
                       worker_stats)

ROOT = Path(__file__).resolve().parent.parent
REC_DIR = ROOT / "data/okx/2022-02-27"
IID = 1
#: instId -> canonical; ELON-USDT is left out (tickSz 1e-11: its prices do not fit 1e-9)
SYMS = {"PROPS-ETH": "PROPSETH", "ZEN-USDT": "ZENUSDT", "UNI-USD-SWAP": "UNIUSD-UNI-PERP",
        "BTC-USD-220325-40000-C": "BTCUSD-BTC-220325-40000-C", "ETH-USD-220228-3000-C": "ETHUSD-ETH-220228-3000-C",
        "ETH-USD-220325-8800-P": "ETHUSD-ETH-220325-8800-P", "ETH-USD-220429-1900-P": "ETHUSD-ETH-220429-1900-P",
        "ETH-USD-220624-12000-P": "ETHUSD-ETH-220624-12000-P", "ETH-USD-220624-20000-C": "ETHUSD-ETH-220624-20000-C"}


def fx(text: str) -> int:
    d = Decimal(text).scaleb(9)
    assert d == d.to_integral_value()
    return int(d)


def okx_provider(tmp: Path, symbols, channels=("books-l2-tbt", "trades", "tickers"), **extra) -> str:
    return provider_toml(tmp, "okx", "okx", "OKX", "ws://{replay}/ws/v5/public", symbols, channels,
                         quote_aliases={}, **extra)


def recorded() -> list[dict]:
    return [json.loads(e.text) for e in read_recording(REC_DIR) if e.kind == "frame"]


def expected(frames):
    """canonical -> DEPTH stream [(seq, n_bid, n_ask, levels)], trades, ticker BBOs."""
    refs, depth = {}, defaultdict(list)
    trades, bbos = defaultdict(list), defaultdict(list)
    for d in frames:
        if "event" in d or d["arg"]["instId"] not in SYMS:
            continue
        sym = SYMS[d["arg"]["instId"]]
        ch = d["arg"]["channel"]
        for item in d["data"]:
            if ch == "books-l2-tbt":
                bids = [(p, q) for p, q, *_ in item["bids"]]
                asks = [(p, q) for p, q, *_ in item["asks"]]
                ref = refs.setdefault(sym, RefBook(IID, 0, 0))
                if d["action"] == "snapshot":
                    m = ref.apply(snapshot_records(IID, bids, asks))
                else:
                    recs = (b"".join(delta(IID, SIDE_BID, fx(p), fx(q)) for p, q in bids)
                            + b"".join(delta(IID, SIDE_ASK, fx(p), fx(q)) for p, q in asks))
                    m = ref.apply(recs) if recs else 0
                assert not ref.crossed
                if m & MASK_TOP10:
                    b, a = ref.levels(SIDE_BID, 10), ref.levels(SIDE_ASK, 10)
                    depth[sym].append((0, len(b), len(a), depth_levels(b, a)))
            elif ch == "trades":
                trades[sym].append((fx(item["px"]), fx(item["sz"]), int(item["ts"]) * 10**6,
                                    SIDE_BID if item["side"] == "buy" else SIDE_ASK, int(item["tradeId"])))
            else:
                side = lambda p, s: (UNDEF_PRICE, 0) if item[p] == "" else (fx(item[p]), fx(item[s]))
                bbos[sym].append(side("bidPx", "bidSz") + side("askPx", "askSz"))
    return depth, trades, bbos


@pytest.mark.timeout(180)
@pytest.mark.parametrize("storage_url", ["sqlite", "postgres"], indirect=True)
def test_okx_replay_end_to_end(tmp_path, instance, storage_url):
    symbols = list(SYMS.values())
    cfg = tmp_path / "dm.toml"
    cfg.write_text(config_head(tmp_path, instance, storage_url, [REC_DIR], speed=0.0) + okx_provider(tmp_path, symbols))
    readers = ChannelCollector(instance, symbols, exchange="OKX").start()
    run_supervised(cfg, tmp_path)
    readers.join(timeout=60)

    depth, trades, bbos = expected(recorded())
    stats = worker_stats(tmp_path, instance, "okx")
    assert stats["dead_letters"] == 0 and stats["error_frames"] == 0 and stats["value_errors"] == 0
    assert stats["book_gaps"] == 0 and stats["book_crossed"] == 0
    assert stats["book_snapshots"] == 18 and stats["book_updates_applied"] == 3659 - 1600
    assert stats["checksums_ok"] == 18 + 3659 - 1600          # every book frame of these 9 verified
    assert stats["subscription_acks"] == 27 and stats["connects"] == 1
    assert stats["size_precisions"]["ZENUSDT"] == 6 and stats["size_precisions"]["UNIUSD-UNI-PERP"] == 0
    n_depth = n_bbo = n_trades = 0
    for sym in symbols:
        recs = readers.records[sym]
        assert readers.overruns[sym] == 0
        got = [(r.sequence, r.n_bid, r.n_ask, r.levels) for r in recs if isinstance(r, Depth)]
        assert got == depth[sym], sym
        got_b = [(r.bid_px, r.bid_sz, r.ask_px, r.ask_sz) for r in recs if isinstance(r, Bbo)]
        assert got_b == bbos[sym], sym                       # tickers: the BBO source
        got_t = [(r.price, r.size, r.ts_event, r.side, r.trade_id) for r in recs if isinstance(r, Trade)]
        assert got_t == trades[sym], sym
        n_depth, n_bbo, n_trades = n_depth + len(got), n_bbo + len(got_b), n_trades + len(got_t)
    assert n_trades == 16 and n_bbo == 16

    st = open_storage(storage_url)
    try:
        assert st.gaps() == []
        counts = st.counts()
        assert counts["trades"] == n_trades and counts["depth"] == n_depth and counts["bbo"] == n_bbo
        inst = {sym: venue for iid, sym, ex, venue, pub in st.load_instruments() if ex == "OKX"}
        assert inst == {c: v for v, c in SYMS.items()}
    finally:
        st.close()
    assert leftover_segments(instance) == []
