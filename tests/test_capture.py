"""Raw capture ([capture]): a Kraken session replayed through a real worker is captured
(frames, the subscribe messages, the REST reference data) in the JSONL recording format,
zstd; replaying the capture through a fresh service stores the same rows; a capture survives
kill -9 of its worker up to the last flushed second."""
from __future__ import annotations

import os
import signal
import time

import pytest

from dm.capture import parse_capture_section
from dm.errors import ConfigError
from dm.recording import read_file, ws_sessions
from dm.records import Flag
from dm.storage import open_storage
from tests.e2e import KRAKEN_FILES, config_head, kraken_provider, run_supervised, start_supervisor, worker_stats

PAIRS = ["BTCUSD", "LSKUSD", "ICXUSD", "AUDUSD"]


def _rows(url: str) -> dict[str, list]:
    """Stored rows without the receive time (stamped anew by each run)."""
    st = open_storage(url)
    try:
        out = {}
        for table in ("trades", "book_deltas", "bbo"):
            a = st.fetch(table)
            cols = [c for c in a.dtype.names if c not in ("ts_recv", "instrument_id")]
            # a time the worker stamped (flag TS_EVENT_IS_RECV: book clears, Kraken's spread BBO)
            # is a receive time too
            ts_event = cols.index("ts_event")
            out[table] = sorted(tuple(-1 if i == ts_event and f & Flag.TS_EVENT_IS_RECV else v for i, v in enumerate(r))
                                for r, f in zip(a[cols].tolist(), a["flags"].tolist()))
        return out
    finally:
        st.close()


def _config(tmp, instance, files, capture_dir=None, speed=0.0) -> "os.PathLike":
    cfg = tmp / "dm.toml"
    extra = f'[capture]\nenabled = true\ndir = "{capture_dir}"\n' if capture_dir else ""
    cfg.write_text(config_head(tmp, instance, f"sqlite:///{tmp / 'dm.sqlite'}", files, speed=speed) + extra
                   + kraken_provider(tmp, symbols=PAIRS))
    return cfg


def test_capture_section_is_validated():
    assert parse_capture_section({"enabled": True})["rotate_s"] == 3600
    with pytest.raises(ConfigError, match="capture.rotate: unknown key"):
        parse_capture_section({"rotate": 60})
    with pytest.raises(ConfigError, match="capture.level: must be 1..22"):
        parse_capture_section({"level": 40})


@pytest.mark.timeout(240)
def test_captured_session_replays_to_the_same_rows(tmp_path, instance):
    first, second = tmp_path / "live", tmp_path / "again"
    first.mkdir(), second.mkdir()
    cap_dir = tmp_path / "capture"
    run_supervised(_config(first, instance, KRAKEN_FILES, cap_dir), first)
    files = sorted((cap_dir / instance / "kraken").glob("kraken-*.jsonl.zst"))
    assert files, list(cap_dir.rglob("*"))
    events = [e for f in files for e in read_file(f)]
    kinds = {e.kind for e in events}
    assert {"connect", "sent", "frame", "rest"} <= kinds
    rest = [e for e in events if e.kind == "rest"]
    assert all(e.url.startswith("https://kraken.com/") for e in rest) and any("AssetPairs" in e.url for e in rest)
    sessions = ws_sessions(events)
    assert [s.venue for s in sessions] == ["kraken"] and sessions[0].url.startswith("wss://kraken.com/")
    frames = worker_stats(first, instance, "kraken")["frames"]
    assert len(sessions[0].frames) == frames > 1000

    run_supervised(_config(second, instance + "b", files), second)
    a, b = _rows(f"sqlite:///{first / 'dm.sqlite'}"), _rows(f"sqlite:///{second / 'dm.sqlite'}")
    assert a["trades"] and a["book_deltas"] and a["bbo"]
    assert a == b


@pytest.mark.timeout(120)
def test_capture_survives_kill_9_of_its_worker(tmp_path, instance):
    """What the capture file held before kill -9 (each housekeeping second ends a zstd frame)
    is still readable after it: nothing sits in a userspace buffer that the kill would lose."""
    cap_dir = tmp_path / "capture"
    cfg = _config(tmp_path, instance, KRAKEN_FILES, cap_dir, speed=1.0)
    sup = start_supervisor(cfg, tmp_path / "supervisor.log")

    def readable_frames() -> int:
        files = sorted((cap_dir / instance / "kraken").glob("kraken-*.jsonl.zst"))
        try:
            return sum(1 for f in files[:1] for e in read_file(f) if e.kind == "frame")
        except Exception:  # noqa: BLE001 - not written yet
            return 0

    try:
        deadline = time.monotonic() + 60
        while (seen := readable_frames()) < 200:
            assert time.monotonic() < deadline, "the capture never held 200 readable frames"
            time.sleep(0.05)
        pid = worker_stats(tmp_path, instance, "kraken")["pid"]
        os.kill(pid, signal.SIGKILL)
        assert readable_frames() >= seen
    finally:
        sup.send_signal(signal.SIGTERM)
        try:
            sup.wait(30)
        except Exception:  # noqa: BLE001
            sup.kill()


def test_a_failing_capture_stops_itself_not_the_feed(tmp_path):
    """A write that fails (here: the file handle closed under it, as a full disk would fail it)
    stops the capture with one error; later calls are no-ops that raise nothing."""
    from dm.capture import Capture

    cap = Capture(tmp_path / "cap", "kraken", "kraken.com", rotate_s=3600)
    cap.frame(1, b'{"a":1}', 1_700_000_000_000_000_000)
    cap._fh.close()  # the file underneath goes away
    cap.frame(1, b'{"a":2}' * 100_000, 1_700_000_000_100_000_000)
    cap.flush()
    assert cap.error
    cap.frame(1, b'{"a":3}', 1_700_000_000_200_000_000)
    cap.rest("http://127.0.0.1:1/x", b"{}", 1_700_000_000_300_000_000)
    cap.close()
    assert cap.lines == 1
