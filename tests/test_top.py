"""``dm top`` under tmux, as a person runs it: a real producer process (records decoded from a
real Binance recording into shm channels), ``dm bridge`` beside it, ``dm top`` in a tmux pane;
the screen is captured and its figures checked against the rings and the recording."""
from __future__ import annotations

import shutil
import subprocess
import sys
import time

import pytest

from nats_helpers import NatsServer, ROOT, Writer, bridge_config, local_records, start_dm, stats, stop_proc, wait_for

pytestmark = [pytest.mark.timeout(180), pytest.mark.skipif(not shutil.which("tmux"), reason="tmux not installed (apt-get install tmux)")]


def _capture(session: str) -> str:
    return subprocess.run(["tmux", "capture-pane", "-p", "-t", session], capture_output=True, text=True).stdout


def test_dm_top_shows_channels_bridge_and_last_prices(tmp_path, instance):
    from dm.records import RType, to_decimal, unpack

    srv = NatsServer(tmp_path).start()
    cfg = bridge_config(tmp_path, instance, srv.url, "T" + instance)
    symbols = ["DENTUSD", "ZILUSD", "MANAUSD"]
    w = Writer(tmp_path, instance, symbols=symbols)
    counts = w.wait_done()
    bridge = start_dm(["bridge", "-c", str(cfg)], tmp_path, "bridge")
    session = "dmtop-" + instance
    try:
        wait_for(lambda: stats(tmp_path, instance, "bridge").get("records") == sum(counts.values()), 60, "bridge published")
        cmd = f"cd {ROOT} && COLUMNS=220 {sys.executable} -m dm top -c {cfg} --interval 0.5 2>&1; sleep 60"
        subprocess.run(["tmux", "new-session", "-d", "-s", session, "-x", "220", "-y", "50", cmd], check=True)
        subprocess.run(["tmux", "resize-window", "-t", session, "-x", "220", "-y", "50"], capture_output=True)
        try:
            wait_for(lambda: "ZILUSD@BINANCE" in (s := _capture(session)) and "bridge" in s, 30, "dm top on screen")
        except AssertionError:
            raise AssertionError(_capture(session)) from None
        time.sleep(1.2)  # a refresh with rates
        screen = _capture(session)
        (tmp_path / "screen.txt").write_text(screen)
        assert f"instance {instance}" in screen
        cells = [[c.strip() for c in ln.split("│")[1:-1]] for ln in screen.splitlines() if ln.startswith("│")]
        lines = {c[0]: " │ ".join(c) for c in cells}
        for s in symbols:
            recs = local_records(instance, s)
            row = lines[f"{s}@BINANCE"]
            assert "live" in row and f"{counts[s]:,}" in row, row
            trades = [unpack(r) for r in recs if r[1] == RType.TRADE]
            bbos = [unpack(r) for r in recs if r[1] == RType.BBO]
            t = trades[-1]
            price = format(to_decimal(t.price).normalize(), "f")
            size = format(to_decimal(t.size, t.size_precision).normalize(), "f")
            assert f"{chr(t.side)} {size} @ {price}" in row, (row, price, size)
            b = bbos[-1]
            assert f"@ {format(to_decimal(b.bid_px).normalize(), 'f')}" in row and f"@ {format(to_decimal(b.ask_px).normalize(), 'f')}" in row, row
        # the producer's row (from the registry) and the bridge's line (from its stats file)
        assert any(c[:2] == ["writer", "BINANCE"] and c[3] == "live" for c in cells), screen
        bline = next(ln for ln in screen.splitlines() if ln.startswith("bridge"))
        assert "connected" in bline and f"{sum(counts.values()):,} records acked" in bline and "0 unacked" in bline, bline
    finally:
        subprocess.run(["tmux", "kill-session", "-t", session], capture_output=True)
        stop_proc(bridge)
        w.close()
        srv.stop()
