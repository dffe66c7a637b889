"""Coinbase Advanced Trade through the C frame path (``dm._feed``: the connection's
``sequence_num`` as its message sequence, trades and tickers published in C, level2 updates of a
synced book applied in C) against the Python frame path (``transport = "aiohttp"``): the same
recording, with faults in the middle of the session, replayed to the real worker process over
each transport must give the same channel records, the same gap records and the same counts,
and the C path must have taken the steady-state level2 updates (``book_frames_in_c``).

The faults (Advanced Trade docs, "WebSocket Overview → Sequence Numbers": ``sequence_num`` numbers
every message of the connection): a level2 message naming both products (goes to Python whole),
a repeated message (a duplicate ``sequence_num``), a message refused after its ``sequence_num``
was read (it arrived: no break), and a dropped level2 message (a break: one gap per book, a
level2 resubscription, whose snapshots replace later level2 messages as in
tests/test_e2e_coinbase.py)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from dm.recording import Drop, Insert, Replace, write_modified_recording
from dm.records import SIDE_ASK, SIDE_BID, GapUnits
from dm.storage import open_storage
from tests.book_ref import RefBook
from tests.e2e import ChannelCollector, config_head, leftover_segments, run_supervised, worker_stats
from tests.test_e2e_coinbase import AT, IID, S26, apply, coinbase_provider, dec, fx, jsonl_lines

GAP = "coinbase.sequence_num"


def _line(template: str, msg: dict) -> str:
    e = json.loads(template)
    e["data"] = json.dumps(msg, separators=(",", ":"))
    return json.dumps(e)


def faulty_session(dst: Path) -> dict:
    """The 2026 Advanced Trade recording with the module docstring's faults; returns what they
    are (sequence numbers, the dropped one)."""
    lines = jsonl_lines()
    recv = []                                    # (line number, ts, msg) of every received message
    for no, line in enumerate(lines, 1):
        if line and (e := json.loads(line))["t"] == "recv":
            recv.append((no, e["ts"], json.loads(e["data"])))

    def l2_update(i: int):
        m = recv[i][2]
        return m["channel"] == "l2_data" and [e["type"] for e in m["events"]] == ["update"]

    edits = []
    # 1. two consecutive level2 updates of different products as ONE message (the first one's
    #    sequence_num); the second one's place (its sequence_num) becomes a heartbeat
    j = next(i for i in range(40, len(recv) - 1) if l2_update(i) and l2_update(i + 1)
             and recv[i][2]["events"][0]["product_id"] != recv[i + 1][2]["events"][0]["product_id"])
    (no_a, _, a), (no_b, _, b) = recv[j], recv[j + 1]
    hb = next(m for _, _, m in recv if m["channel"] == "heartbeats")
    edits += [Replace(no_a, _line(lines[no_a - 1], dict(a, events=a["events"] + b["events"]))),
              Replace(no_b, _line(lines[no_b - 1], dict(hb, timestamp=b["timestamp"], sequence_num=b["sequence_num"])))]
    # 2. a ticker message received twice (a duplicate sequence_num: counted, the message kept)
    d = next(i for i in range(j + 2, len(recv)) if recv[i][2]["channel"] == "ticker")
    edits.append(Insert(recv[d][0] + 1, lines[recv[d][0] - 1]))
    # 3. a ticker message naming a product nobody subscribed: refused (a dead letter) after its
    #    sequence_num was read, so it arrived (no break)
    r = next(i for i in range(d + 1, len(recv)) if recv[i][2]["channel"] == "ticker")
    bad = json.loads(json.dumps(recv[r][2]))
    bad["events"][0]["tickers"][0]["product_id"] = "XRP-USD"
    edits.append(Replace(recv[r][0], _line(lines[recv[r][0] - 1], bad)))
    # 4. a BTC-USD level2 update dropped: a break; each product's first level2 message >= 2
    #    recorded seconds later becomes the true book as a snapshot (the resubscription's answer)
    k = next(i for i in range(r + 1, len(recv)) if l2_update(i) and recv[i][2]["events"][0]["product_id"] == "BTC-USD")
    edits.append(Drop(recv[k][0]))
    refs = {p: RefBook(IID, 0, 0) for p in AT}
    repl: dict[str, int] = {}
    for i, (no, ts, msg) in enumerate(recv):
        if msg["channel"] != "l2_data":
            continue
        for ev in msg["events"]:
            p = ev["product_id"]
            bids = [(fx(u["price_level"]), fx(u["new_quantity"], 8)) for u in ev["updates"] if u["side"] == "bid"]
            asks = [(fx(u["price_level"]), fx(u["new_quantity"], 8)) for u in ev["updates"] if u["side"] == "offer"]
            apply(refs[p], (ev["type"] == "snapshot", 0, bids, asks))
        if i > k and len(msg["events"]) == 1 and (p := msg["events"][0]["product_id"]) not in repl and ts >= recv[k][1] + 2.0:
            t = msg["events"][0]["updates"][0]["event_time"]
            ups = ([{"side": "bid", "event_time": t, "price_level": dec(x), "new_quantity": dec(q, 8)}
                    for x, q in refs[p].levels(SIDE_BID)]
                   + [{"side": "offer", "event_time": t, "price_level": dec(x), "new_quantity": dec(q, 8)}
                      for x, q in refs[p].levels(SIDE_ASK)])
            edits.append(Replace(no, _line(lines[no - 1], dict(msg, events=[{"type": "snapshot", "product_id": p,
                                                                             "updates": ups}]))))
            repl[p] = msg["sequence_num"]
    assert set(repl) == set(AT)
    write_modified_recording(S26, dst, edits)
    return {"mixed_seq": a["sequence_num"], "dup_seq": recv[d][2]["sequence_num"], "refused_seq": recv[r][2]["sequence_num"],
            "dropped_seq": recv[k][2]["sequence_num"], "snapshot_seqs": repl}


def _run(tmp: Path, instance: str, rec: Path, **extra) -> dict:
    tmp.mkdir()
    url = f"sqlite:///{tmp / 'dm.sqlite'}"
    symbols = list(AT.values())
    cfg = tmp / "dm.toml"
    cfg.write_text(config_head(tmp, instance, url, [rec], speed=10.0)
                   + coinbase_provider(tmp, symbols, "advanced", resync_timeout_s=30.0, **extra))
    readers = ChannelCollector(instance, symbols, exchange="COINBASE").start()
    run_supervised(cfg, tmp)
    readers.join(timeout=60)
    assert all(readers.overruns[s] == 0 for s in symbols)
    st = open_storage(url)
    try:
        gaps = sorted((g["kind"], g["instrument_id"], g["first_missing"], g["last_missing"], g["units"]) for g in st.gaps())
        counts = st.counts()
        inst = {sym: iid for iid, sym, ex, v, pub in st.load_instruments() if ex == "COINBASE"}
    finally:
        st.close()
    assert leftover_segments(instance) == []
    # what a run may differ in: when frames were read (ts_recv; a GAP's ts_event is its frame's)
    recs = {s: [(type(r).__name__,) + tuple(getattr(r, f) for f in r._fields
                                           if f != "ts_recv" and not (f == "ts_event" and type(r).__name__ == "Gap"))
                for r in readers.records[s]] for s in symbols}
    chan_gaps = {s: [(r.kind, r.first_missing, r.last_missing) for r in readers.records[s] if type(r).__name__ == "Gap"]
                 for s in symbols}
    return {"stats": worker_stats(tmp, instance, "coinbase"), "gaps": gaps, "counts": counts, "inst": inst,
            "records": recs, "chan_gaps": chan_gaps}


@pytest.mark.timeout(240)
def test_c_frame_path_equals_python_path_with_faults_mid_session(tmp_path, instance):
    fault = faulty_session(tmp_path / "COINBASE-faults.jsonl.zst")
    rec = tmp_path / "COINBASE-faults.jsonl.zst"
    c = _run(tmp_path / "picows", instance + "c", rec)                      # default transport: the C path
    py = _run(tmp_path / "aiohttp", instance + "p", rec, transport="aiohttp")  # the Python frame path

    sc, sp = c["stats"], py["stats"]
    # the C path took the steady state: every level2 update applied, but the two of the mixed
    # message (one per product, in Python); the Python path none
    assert sc["book_frames_in_c"] == sc["book_deltas_applied"] - 2 > 600, sc
    assert sp["book_frames_in_c"] == 0
    # the faults, as the Python path sees them
    assert sp["sequence_breaks"] == 1 and sp["sequence_duplicates"] == 1 and sp["dead_letters"] == 1
    assert sp["book_gaps"] == 2 and sp["book_crossed"] == 0 and sp["book_snapshots"] == 4 and sp["connects"] == 1
    want_gaps = sorted((GAP, iid, fault["dropped_seq"], fault["dropped_seq"], int(GapUnits.SEQUENCE))
                       for iid in py["inst"].values())
    assert py["gaps"] == want_gaps, py["gaps"]
    # ... and the C path the same: counts, gap records, every channel record, rows stored
    for key in ("frames", "records", "persist_records", "dead_letters", "value_errors", "book_gaps", "book_resyncs",
                "book_crossed", "book_snapshots", "book_deltas_applied", "sequence_breaks", "sequence_duplicates",
                "book_resubscribes", "frames_by_kind", "connects", "gaps"):
        assert sc[key] == sp[key], (key, sc[key], sp[key])
    assert c["gaps"] == py["gaps"]
    assert c["counts"] == py["counts"]
    for sym in AT.values():
        assert len(c["records"][sym]) == len(py["records"][sym]) > 100, sym
        for i, (x, y) in enumerate(zip(c["records"][sym], py["records"][sym])):
            assert x == y, (sym, i, x, y)
    # the channels saw the gap: one GAP record per book, the dropped number
    for sym in AT.values():
        assert c["chan_gaps"][sym] == py["chan_gaps"][sym] == [(GAP, fault["dropped_seq"], fault["dropped_seq"])]
