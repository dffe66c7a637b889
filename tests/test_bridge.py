"""dm over NATS JetStream, end to end on real processes: a writer process feeding shm channels
with records decoded by dm's codec from a real Binance recording, ``dm bridge`` publishing them
to a nats-server of the test's own, remote readers (``dm.client.Client(url=...)``) and the
remote persister (``dm persist-remote``), through a restart of that nats-server."""
from __future__ import annotations

import threading
import time
from collections import Counter

import pytest

from nats_helpers import (NatsServer, Writer, bridge_config, local_records, start_dm, stats, stop_proc,
                          stream_messages, wait_for)

pytestmark = pytest.mark.timeout(240)

SYMBOLS = ["DENTUSD", "ZILUSD", "MANAUSD", "NEOUSDC"]


@pytest.fixture
def nats_server(tmp_path):
    srv = NatsServer(tmp_path).start()
    yield srv
    srv.stop()


def _bridge_caught_up(tmp, instance, counts):
    st = stats(tmp, instance, "bridge")
    ch = st.get("channels", {})
    return st.get("unacked") == 0 and all(ch.get(f"{s}@BINANCE", {}).get("next_index") == n for s, n in counts.items())


def _read_all(sub, n: int, timeout: float = 60) -> list[bytes]:
    out = []
    deadline = time.monotonic() + timeout
    while len(out) < n and time.monotonic() < deadline:
        r = sub.read_raw(timeout=0.5)
        if r is not None:
            out.append(r)
    extra = sub.read_raw(timeout=0.3)  # nothing twice: nothing after the last one
    assert extra is None, "a record arrived after every record of the channel"
    return out


def test_two_instances_same_records_through_nats_restart(tmp_path, instance, nats_server):
    """Instance A (writer + bridge) and instance B (remote readers, live through a restart of
    nats-server, and fresh ones afterwards) see exactly the same records in the same order."""
    from dm.client import Client

    cfg = bridge_config(tmp_path, instance, nats_server.url, "T" + instance, batch_records=512, linger_ms=2.0)
    w = Writer(tmp_path, instance, repeat=3, rate=6000, go=True, symbols=SYMBOLS)
    bridge = start_dm(["bridge", "-c", str(cfg)], tmp_path, "bridge")
    try:
        wait_for(lambda: stats(tmp_path, instance, "bridge").get("connected"), 30, "bridge connected")
        with Client(url=nats_server.url, instance=instance) as remote:
            w.go()
            subs = {s: remote.subscribe(s, "BINANCE", start="oldest", wait=30) for s in SYMBOLS}
            readers = {s: [] for s in SYMBOLS}
            stop = threading.Event()

            def pump(s):
                while not stop.is_set():
                    r = subs[s].read_raw(timeout=0.2)
                    if r is not None:
                        readers[s].append(r)
            threads = [threading.Thread(target=pump, args=(s,), daemon=True) for s in SYMBOLS]
            for t in threads:
                t.start()
            wait_for(lambda: sum(map(len, readers.values())) > 2000, 60, "records before the restart")
            nats_server.restart(down_s=1.5)  # mid-stream: writer keeps writing, bridge buffers, readers wait
            counts = w.wait_done()
            wait_for(lambda: _bridge_caught_up(tmp_path, instance, counts), 90, "bridge caught up after the restart")
            wait_for(lambda: all(len(readers[s]) >= counts[s] for s in SYMBOLS), 60, "live remote readers caught up")
            time.sleep(0.5)  # nothing twice: give a duplicate the time to show up
            stop.set()
            for t in threads:
                t.join(5)
            b_stats = stats(tmp_path, instance, "bridge")
            assert b_stats["disconnects"] >= 1 and b_stats["reconnects"] >= 1, b_stats
            assert sum(c.resets for c in subs.values()) >= len(SYMBOLS), "readers did not re-create their consumers"
            for s in SYMBOLS:
                local = local_records(instance, s)
                assert len(local) == counts[s]
                assert readers[s] == local, f"{s}: live remote reader differs from the shm ring"
                assert subs[s].lost_records == 0
            # a fresh instance-B reader after the restart: the whole stream, same records, same order
            for s in SYMBOLS:
                sub = remote.subscribe(s, "BINANCE", start="oldest")
                assert _read_all(sub, counts[s]) == local_records(instance, s)
        # the stream itself holds every record once: one message per (subject, first position)
        msgs = stream_messages(nats_server.url, "T" + instance, f"dm.{instance}.>")
        keys = Counter((subj, h["Dm-Pos"]) for _, subj, h, _ in msgs)
        assert max(keys.values()) == 1, "a batch was stored twice"
        assert sum(int(h["Dm-Count"]) for _, _, h, _ in msgs) == sum(counts.values())
        assert {subj.rsplit(".", 1)[1] for _, subj, _, _ in msgs} == {"trades", "bbo"}
    finally:
        stop_proc(bridge)
        w.close()
    assert bridge.returncode == 0, (tmp_path / "bridge.log").read_text()[-3000:]


def test_remote_reader_resumes_from_its_last_sequence(tmp_path, instance, nats_server):
    """A reader that goes away resumes in a new client at its ``resume_token``: the rest of the
    channel, nothing lost, nothing twice."""
    from dm.client import Client

    cfg = bridge_config(tmp_path, instance, nats_server.url, "T" + instance, batch_records=64)
    w = Writer(tmp_path, instance, symbols=["DENTUSD"])
    counts = w.wait_done()
    bridge = start_dm(["bridge", "-c", str(cfg)], tmp_path, "bridge")
    try:
        wait_for(lambda: _bridge_caught_up(tmp_path, instance, counts), 60, "bridge published everything")
        local = local_records(instance, "DENTUSD")
        half = len(local) // 2
        with Client(url=nats_server.url, instance=instance) as c1:
            sub = c1.subscribe("DENTUSD", "BINANCE")
            first = [sub.read_raw(timeout=10) for _ in range(half)]
            token = sub.resume_token
        assert first == local[:half]
        assert token[1] > 0 or half % 64 == 0  # the reader stopped inside a batch
        with Client(url=nats_server.url, instance=instance) as c2:
            sub2 = c2.subscribe("DENTUSD", "BINANCE", start=token)
            rest = _read_all(sub2, len(local) - half)
        assert rest == local[half:]
    finally:
        stop_proc(bridge)
        w.close()


def test_ring_lapping_the_bridge_is_a_gap_record(tmp_path, instance, nats_server):
    """NATS down, the bridge's buffer full, the writer laps its rings: the bridge publishes a
    GAP record (kind bridge.overrun) naming the window, never silence; everything else arrives."""
    from dm.client import Client, Overrun
    from dm.records import Gap

    cfg = bridge_config(tmp_path, instance, nats_server.url, "T" + instance, buffer_bytes=1 << 20)
    w = Writer(tmp_path, instance, ring_bytes=1 << 16, repeat=8, go=True, symbols=["DENTUSD", "ZILUSD", "MANAUSD"])
    bridge = start_dm(["bridge", "-c", str(cfg)], tmp_path, "bridge")
    try:
        wait_for(lambda: len(stats(tmp_path, instance, "bridge").get("channels", {})) == 3, 30, "bridge tapping 3 channels")
        nats_server.stop()
        wait_for(lambda: stats(tmp_path, instance, "bridge").get("connected") is False, 30, "bridge to see NATS down")
        w.go()
        counts = w.wait_done()
        wait_for(lambda: stats(tmp_path, instance, "bridge").get("lost_records", 0) > 0, 30, "bridge overrun")
        nats_server.start()
        wait_for(lambda: _bridge_caught_up(tmp_path, instance, counts), 90, "bridge caught up")
        bst = stats(tmp_path, instance, "bridge")
        with Client(url=nats_server.url, instance=instance) as remote:
            total_lost = 0
            for s, n in counts.items():
                sub = remote.subscribe(s, "BINANCE")
                recs, gaps = 0, []
                while True:
                    r = sub.read(timeout=1.0)
                    if r is None:
                        break
                    assert not isinstance(r, Overrun), "the stream lost nothing: every loss is the bridge's GAP record"
                    if isinstance(r, Gap):
                        gaps.append(r)
                    else:
                        recs += 1
                lost = 0
                for g in gaps:
                    assert g.kind == "bridge.overrun" and "lapped the bridge" in g.detail and g.last_missing >= g.first_missing
                    a, b = g.detail.split("ring records ")[1].split(" ")[0].split("..")
                    lost += int(b) - int(a) + 1
                assert recs + lost == n, (s, recs, lost, n)
                total_lost += lost
            assert total_lost == bst["lost_records"] > 0
    finally:
        stop_proc(bridge)
        w.close()


def test_remote_persister_stores_exactly_the_bridged_records(tmp_path, instance, nats_server):
    """``dm persist-remote --from-nats`` on "another host" (its own SQLite file) stores exactly the
    records the bridge published; a restart of the persister stores nothing twice."""
    import numpy as np

    from dm.records import TRADE_DTYPE, BBO_DTYPE, RType
    from dm.storage import open_storage

    cfg = bridge_config(tmp_path, instance, nats_server.url, "T" + instance)
    remote_db = f"sqlite:///{tmp_path / 'remote.sqlite'}"
    w = Writer(tmp_path, instance, repeat=2, symbols=SYMBOLS)
    counts = w.wait_done()
    bridge = start_dm(["bridge", "-c", str(cfg)], tmp_path, "bridge")
    pers = None
    try:
        wait_for(lambda: _bridge_caught_up(tmp_path, instance, counts), 60, "bridge published everything")
        args = ["persist-remote", "-c", str(cfg), "--from-nats", nats_server.url, "--storage-url", remote_db]
        pers = start_dm(args, tmp_path, "persist")
        wait_for(lambda: stats(tmp_path, instance, "nats-persister").get("records") == sum(counts.values()), 60, "remote persister stored everything")
        assert stop_proc(pers) == 0
        pers = start_dm(args, tmp_path, "persist2")  # durable consumer: nothing to re-deliver
        first = {}

        def reported_twice() -> bool:  # its loop ran past at least one fetch (stats every 1 s)
            st = stats(tmp_path, instance, "nats-persister")
            if st.get("pid") != pers.pid:
                return False
            first.setdefault("ts", st["ts"])
            return st["ts"] > first["ts"]

        wait_for(reported_twice, 60, "the restarted remote persister running")
        assert stats(tmp_path, instance, "nats-persister")["messages"] == 0
        assert stop_proc(pers) == 0
        local = b"".join(b"".join(local_records(instance, s)) for s in SYMBOLS)
        from dm.persister import split_records

        want, poison = split_records(local)
        assert not poison
        st = open_storage(remote_db)
        try:
            c = st.counts()
            assert c["trades"] == len(want[RType.TRADE]) and c["bbo"] == len(want[RType.BBO])
            for rt, table, dt in ((RType.TRADE, "trades", TRADE_DTYPE), (RType.BBO, "bbo", BBO_DTYPE)):
                got = st.fetch(table)
                key = [n for n in dt.names if not n.startswith("_")]
                assert sorted(got[key].tolist()) == sorted(np.asarray(want[rt])[key].tolist())
        finally:
            st.close()
    finally:
        if pers is not None:
            stop_proc(pers)
        stop_proc(bridge)
        w.close()
