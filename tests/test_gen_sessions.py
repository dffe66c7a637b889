"""bench/gen_sessions.py end to end: a recording tiled 3 times (bench_worker's tiled sessions)
replayed by `dm supervise` (real replay server, real worker process, bench_worker's provider
config) ends with the recording's own book state counts — no gap, no crossed book, no
reconnect, the recording's dead letters and start-up snapshots only — every diff of every tile
applied (none dropped as late or duplicate), and exactly the frames the tiles imply. A session
whose tile boundaries are broken (``skew``: each reset frame's continuity field off) must show
it: the check can fail."""
from __future__ import annotations

from pathlib import Path

import pytest

from bench.bench_worker import VENUES
from bench.gen_sessions import TILERS, generate
from dm.recording import read_recording
from tests.e2e import config_head, leftover_segments, provider_toml, run_supervised, worker_stats

#: what the worker does with the recording itself (bench_worker's config, one tile): websocket
#: frames received (Deribit: + its 4 replies to subscribe/set_heartbeat/test), book snapshots
#: applied, book diffs applied, dead letters (Bitstamp: one value the codec refuses), book
#: resyncs (Binance, Bitstamp: the start-up REST snapshot requests)
RECORDED = {
    "binance_futures": dict(frames=1468, snapshots=4, applied=752, dead=0, resyncs=4),
    "binance_delivery": dict(frames=4338, snapshots=10, applied=1788, dead=0, resyncs=10),
    "deribit": dict(frames=139, snapshots=10, applied=36, dead=0, resyncs=0),
    "coinbase": dict(frames=1030, snapshots=2, applied=773, dead=0, resyncs=0),
    "bitstamp": dict(frames=747, snapshots=10, applied=615, dead=1, resyncs=10),
}
TILES = 3


def run_tiled(venue: str, tmp: Path, instance: str, tiles: int, skew: int = 0):
    t = generate(venue, tiles, tmp / "gen", skew=skew)
    _files, p = VENUES[venue]
    cfg = tmp / "dm.toml"
    cfg.write_text(config_head(tmp, instance, f"sqlite:///{tmp / 'db.sqlite'}", [t.path], speed=0.0)
                   + provider_toml(tmp, venue, p["kind"], p["exchange"], p["ws_url"], p["symbols"], p["channels"],
                                   **p.get("extra", {})))
    run_supervised(cfg, tmp)
    assert leftover_segments(instance) == []
    return t, worker_stats(tmp, instance, venue)


@pytest.mark.timeout(120)
@pytest.mark.parametrize("venue", sorted(TILERS))
def test_tiled_session_stays_in_sync(venue, tmp_path, instance):
    t, st = run_tiled(venue, tmp_path, instance, TILES)
    rec = RECORDED[venue]
    assert t.tiles == TILES and t.resets_per_tile == len(t.books) > 0

    frames = [e for e in read_recording(t.path) if e.kind == "frame"]
    assert len(frames) == t.frames == t.frames_first + (TILES - 1) * t.frames_per_tile
    assert all(a.ts <= b.ts for a, b in zip(frames, frames[1:])), "recorder time goes back"

    assert st["reconnects"] == 0
    assert st["book_gaps"] == 0 and st["gaps"] == 0
    assert st["book_crossed"] == 0
    assert st["dead_letters"] == rec["dead"]
    assert st["book_resyncs"] == rec["resyncs"]
    assert st["book_snapshots"] == rec["snapshots"]              # tile 0's only
    # the generator's books are the worker's: the diffs the book applied in the recording ...
    assert sum(n for n, _ in t.books.values()) == rec["applied"]
    # ... and in every later tile all of them again plus one reset per book: nothing dropped
    assert st["book_deltas_applied"] == rec["applied"] + (TILES - 1) * (rec["applied"] + t.resets_per_tile)
    assert st.get("book_deltas_dropped", 0) == (102 if venue == "bitstamp" else 0)   # the recording's own
    assert st.get("sequence_breaks", 0) == 0
    # every frame of every tile reached the worker
    assert st["frames"] == rec["frames"] + (TILES - 1) * t.frames_per_tile


#: per venue: what a broken boundary shows as (Bitstamp has no sequence: a reset diff dated
#: after the next tile makes that tile's diffs of its pair older, dropped)
BROKEN = {"binance_futures": 1, "binance_delivery": 1, "deribit": 1, "coinbase": 1, "bitstamp": 100_000_000}


@pytest.mark.timeout(120)
@pytest.mark.parametrize("venue", sorted(TILERS))
def test_broken_tile_boundary_is_seen(venue, tmp_path, instance):
    t, st = run_tiled(venue, tmp_path, instance, 2, skew=BROKEN[venue])
    if venue == "bitstamp":
        assert st["book_deltas_dropped"] > 102
    else:
        assert st["book_gaps"] >= 1
