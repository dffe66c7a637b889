"""dm.replay: a real aiohttp client over loopback against the replay server, on the real
recordings. Expected texts come from the recording files (the reader is checked byte-exact
against them in test_recording.py; REST bodies here are cut from the raw file bytes)."""
from __future__ import annotations

import asyncio
import collections
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
import orjson
import pytest

from dm.errors import ConfigError, RecordingError
from dm.recording import Drop, Insert, find_lines, read_file, read_recording, write_modified_recording, ws_sessions
from dm.replay import ReplayServer

pytestmark = pytest.mark.timeout(60)

B38 = "binance/BINANCE-b38f7c.0"


def arun(coro, timeout: float = 30.0):
    async def main():
        return await asyncio.wait_for(coro, timeout)

    return asyncio.run(main())


def recorded_frames(path) -> list[str]:
    return [e.text for e in read_recording(path) if e.kind == "frame"]


def rest_body_bytes(path: Path, url_prefix: str) -> list[bytes]:
    """REST bodies cut from the raw file bytes (independent of dm.recording)."""
    out = []
    for line in path.read_bytes().split(b"\n"):
        if line.startswith(url_prefix.encode()):
            out.append(line.split(b" -> ", 1)[1].split(b": ", 1)[1])
    return out


def stream_of(text: str) -> str:
    return re.match(r'\{"stream":"([^"]+)"', text).group(1)


async def ws_collect(url: str, send: list[dict] = (), stop_after: int | None = None):
    """Connect, send the messages, read text frames until the server closes. Returns (texts,
    close code the server sent, arrival times)."""
    texts, times, code = [], [], None
    async with aiohttp.ClientSession() as s:
        async with s.ws_connect(url, max_msg_size=0, autoping=True) as ws:
            for m in send:
                await ws.send_str(json.dumps(m))
            while True:
                msg = await ws.receive()
                if msg.type == aiohttp.WSMsgType.TEXT:
                    texts.append(msg.data)
                    times.append(time.monotonic())
                    if stop_after is not None and len(texts) >= stop_after:
                        break
                else:
                    code = msg.data if msg.type == aiohttp.WSMsgType.CLOSE else msg.type
                    break
            assert ws.close_code in (None, code), (ws.close_code, code)  # clean close handshake
    return texts, code, times


# ------------------------------------------------------------------ Binance


def test_binance_all_streams_verbatim_frame_for_frame(data_dir):
    path = data_dir / B38
    connect = next(e for e in read_recording(path) if e.kind == "connect")
    query = connect.url.split("?", 1)[1]  # the recorded URL's own stream list

    async def main():
        async with ReplayServer([path], speed=0, once=True) as srv:
            texts, code, _ = await ws_collect(f"ws://127.0.0.1:{srv.port}/stream?{query}")
            await asyncio.wait_for(srv.wait_done(), 5)
            return texts, code, dict(srv.stats)

    texts, code, stats = arun(main())
    assert texts == recorded_frames(path)  # every frame, verbatim, in recorded order
    types = collections.Counter(stream_of(t).split("@", 1)[1] for t in texts)
    assert types == {"bookTicker": 5408, "depth@100ms": 4709, "aggTrade": 1240}  # README counts
    assert code == 1000
    assert stats["frames_sent"] == 11357 and stats["completed"] == 1


def test_once_refuses_a_finished_venue_and_ends_when_every_venue_is_done(data_dir):
    """A worker reconnects after the venue closes, as it would live; with --once that must not
    restart the session (the server would never end): the finished venue answers 410 while
    the other venue is still being replayed, and the server ends when both are done."""
    b38 = data_dir / B38

    async def main():
        async with ReplayServer([b38, data_dir / "kraken_futures"], speed=0, once=True, expected_connections=2) as srv:
            texts, code, _ = await ws_collect(f"ws://127.0.0.1:{srv.port}/stream?streams=zilusdt@aggTrade")
            assert code == 1000 and len(texts) == 331
            with pytest.raises(aiohttp.WSServerHandshakeError) as e:
                await ws_collect(f"ws://127.0.0.1:{srv.port}/stream?streams=zilusdt@aggTrade")
            assert e.value.status == 410
            assert not srv.done  # Kraken Futures was never replayed
            kf, code, _ = await ws_collect(f"ws://127.0.0.1:{srv.port}/ws/v1",
                                           [{"event": "subscribe", "feed": "trade", "product_ids": ["pi_ethusd"]}])
            assert code == 1000 and kf
            await asyncio.wait_for(srv.wait_done(), 5)

    arun(main())


def test_binance_subset_subscription_is_case_insensitive(data_dir):
    path = data_dir / B38
    want = {"zilusdt@depth@100ms", "dentusdt@aggtrade"}

    async def main():
        async with ReplayServer([path], speed=0) as srv:
            return await ws_collect(srv.ws_url("binance") + "?streams=ZILUSDT@depth@100ms/dentusdt@AGGTRADE/nosuch@trade")

    texts, code, _ = arun(main())
    assert texts == [t for t in recorded_frames(path) if stream_of(t).lower() in want]
    c = collections.Counter(stream_of(t) for t in texts)
    assert c == {"zilusdt@depth@100ms": 982, "dentusdt@aggTrade": 716}  # README per-symbol counts
    assert code == 1000


def test_binance_raw_stream_and_live_subscribe(data_dir):
    path = data_dir / B38
    zil_trades = [t for t in recorded_frames(path) if stream_of(t) == "zilusdt@aggTrade"]
    btcaud_trades = [t for t in recorded_frames(path) if stream_of(t) == "btcaud@aggTrade"]

    async def main():
        async with ReplayServer([path], speed=0, linger=0.1) as srv:
            raw, code1, _ = await ws_collect(f"ws://127.0.0.1:{srv.port}/ws/zilusdt@aggTrade")
            live, code2, _ = await ws_collect(
                f"ws://127.0.0.1:{srv.port}/ws",
                send=[{"method": "SUBSCRIBE", "params": ["btcaud@aggTrade"], "id": 7},
                      {"method": "LIST_SUBSCRIPTIONS", "id": 8}],
            )
            return raw, code1, live, code2

    raw, code1, live, code2 = arun(main())
    assert len(raw) == 331 and code1 == 1000
    for got, rec in zip(raw, zil_trades):
        assert rec == '{"stream":"zilusdt@aggTrade","data":' + got + "}"  # the data object, verbatim
        assert orjson.loads(got)["e"] == "aggTrade"
    assert live[0] == '{"result":null,"id":7}'
    assert '{"result":["btcaud@aggtrade"],"id":8}' in live
    data = [t for t in live if not t.startswith('{"result"')]
    assert len(data) == 20 and code2 == 1000
    assert data == [t[len('{"stream":"btcaud@aggTrade","data":'):-1] for t in btcaud_trades]


def test_binance_rest_depth_and_exchange_info_byte_exact(data_dir, tmp_path):
    b38 = data_dir / B38
    split = data_dir / "binance/2021-08-14"
    # a second NKNUSDT snapshot, recorded later: served after the first, then repeated
    http = data_dir / "binance/2021-10-12/BINANCE.http.0.0"
    first = http.read_text().split("\n")[0]
    second = first.replace('"lastUpdateId":499869752', '"lastUpdateId":499869999').replace("1633998512.320639", "1633998520.5")
    mod = write_modified_recording(http, tmp_path / "BINANCE.http.0.0", [Insert(5, second)])
    zil = rest_body_bytes(b38, "https://www.binance.com/api/v1/depth?symbol=ZILUSDT")
    xmr = rest_body_bytes(split / "BINANCE.http.0.0", "https://www.binance.com/api/v3/depth?symbol=XMRBTC")
    info = rest_body_bytes(split / "BINANCE.0", "https://api.binance.com/api/v3/exchangeInfo")
    nkn = rest_body_bytes(mod, "https://api.binance.com/api/v3/depth?symbol=NKNUSDT")
    assert len(zil) == len(xmr) == len(info) == 1 and len(nkn) == 2 and nkn[0] != nkn[1]

    async def main():
        async with ReplayServer([b38, split, mod], speed=0) as srv:
            base = srv.rest_url()
            out = {}
            async with aiohttp.ClientSession() as s:
                for key, url in [
                    ("zil1", "/api/v1/depth?symbol=ZILUSDT&limit=1000"),
                    ("zil3", "/api/v3/depth?symbol=zilusdt&limit=5000"),
                    ("xmr", "/api/v3/depth?symbol=XMRBTC&limit=5000"),
                    ("info", "/api/v3/exchangeInfo"),
                    ("nkn1", "/api/v3/depth?symbol=NKNUSDT&limit=1000"),
                    ("nkn2", "/api/v3/depth?symbol=NKNUSDT&limit=1000"),
                    ("nkn3", "/api/v3/depth?symbol=NKNUSDT&limit=1000"),
                    ("bad", "/api/v3/depth?symbol=NOPE&limit=10"),
                    ("nosym", "/api/v3/depth"),
                ]:
                    async with s.get(base + url) as r:
                        out[key] = (r.status, r.headers.get("Content-Type"), await r.read())
            return out

    out = arun(main())
    assert out["zil1"] == (200, "application/json", zil[0])
    assert out["zil3"][2] == zil[0]
    assert out["xmr"][2] == xmr[0] and len(orjson.loads(out["xmr"][2])["asks"]) == 5000
    assert out["info"] == (200, "application/json", info[0])
    assert len(orjson.loads(out["info"][2])["symbols"]) == 1589
    assert [out[k][2] for k in ("nkn1", "nkn2", "nkn3")] == [nkn[0], nkn[1], nkn[1]]
    assert out["bad"][0] == 400 and orjson.loads(out["bad"][2])["code"] == -1121
    assert out["nosym"][0] == 400 and orjson.loads(out["nosym"][2])["code"] == -1102


def test_kraken_and_futures_rest_byte_exact(data_dir):
    ap = rest_body_bytes(data_dir / "kraken/KRAKEN.0", "https://api.kraken.com/0/public/AssetPairs")
    ins = rest_body_bytes(data_dir / "kraken_futures/KRAKEN_FUTURES.0", "https://futures.kraken.com/derivatives/api/v3/instruments")

    async def main():
        async with ReplayServer([data_dir / "kraken/KRAKEN.0", data_dir / "kraken_futures"], speed=0) as srv:
            async with aiohttp.ClientSession() as s:
                async with s.get(srv.rest_url() + "/0/public/AssetPairs") as r:
                    a = await r.read()
                async with s.get(srv.rest_url() + "/derivatives/api/v3/instruments") as r:
                    b = await r.read()
                async with s.get(srv.rest_url() + "/0/public/Depth?pair=XBTUSD") as r:
                    c = r.status
            return a, b, c

    a, b, c = arun(main())
    assert a == ap[0] and len(orjson.loads(a)["result"]) == 304
    assert b == ins[0] and len(orjson.loads(b)["instruments"]) == 27
    assert c == 404


def test_pacing_follows_recorded_time_over_speed(data_dir):
    path = data_dir / "binance/2021-10-12"
    all_evs = read_recording(path)
    query = ws_sessions(all_evs)[0].url.split("?", 1)[1]
    evs = [e for e in all_evs if e.kind == "frame"]
    speed = 20.0
    rec_offsets = [(e.ts - evs[0].ts) / speed for e in evs]
    assert 1.4 < rec_offsets[-1] < 1.7  # 30.9 s recorded

    async def main(speed):
        async with ReplayServer([path], speed=speed, linger=0.05) as srv:
            t0 = time.monotonic()
            texts, code, times = await ws_collect(srv.ws_url("binance") + "?" + query)
            return texts, times, t0

    texts, times, t0 = arun(main(speed))
    assert texts == [e.text for e in evs]
    got = [t - times[0] for t in times]
    assert 0.9 * rec_offsets[-1] <= got[-1] <= 1.2 * rec_offsets[-1] + 0.1
    assert max(abs(g - r) for g, r in zip(got, rec_offsets)) < 0.15  # every frame near its slot
    texts0, times0, _ = arun(main(0.0))
    assert texts0 == texts and times0[-1] - times0[0] < 0.3 * rec_offsets[-1]


def test_fixed_rate_paces_frames_whatever_the_recorded_pace(data_dir):
    path = data_dir / "binance/2021-10-12"
    all_evs = read_recording(path)
    query = ws_sessions(all_evs)[0].url.split("?", 1)[1]
    evs = [e for e in all_evs if e.kind == "frame"]
    rate = 2000.0  # the recording spans 30.9 s; at 2,000 frames/s it takes len(evs) / rate

    async def main():
        async with ReplayServer([path], rate=rate, linger=0.05) as srv:
            return await ws_collect(srv.ws_url("binance") + "?" + query)

    texts, code, times = arun(main())
    assert texts == [e.text for e in evs]  # every frame once, in order
    span = times[-1] - times[0]
    assert 0.85 * (len(evs) - 1) / rate <= span <= 1.5 * (len(evs) - 1) / rate + 0.1, span
    half = len(times) // 2  # evenly spread: the first half takes about half the time
    assert 0.3 * span <= times[half] - times[0] <= 0.7 * span
    with pytest.raises(ConfigError):
        ReplayServer([path], rate=-1.0)


# ------------------------------------------------------------------ Kraken v1


def test_kraken_subscribe_flow(data_dir):
    book = ws_sessions(read_file(data_dir / "kraken/KRAKEN-c197c0.0"))[0]
    ticker = ws_sessions(read_file(data_dir / "kraken/KRAKEN-4b7396.0"))[0]
    hellos = {e.text for s in (book, ticker) for e in s.frames if '"systemStatus"' in e.text}

    def status_of(s, pairs):
        return [e.text for e in s.frames if '"subscriptionStatus"' in e.text and any(f'"pair":"{p}"' in e.text for p in pairs)]

    async def main():
        async with ReplayServer([data_dir / "kraken"], speed=0, once=True) as srv:
            assert srv.ws_url("kraken").endswith("/")
            texts, code, _ = await ws_collect(
                srv.ws_url("kraken"),
                send=[
                    {"event": "ping", "reqid": 5},
                    {"event": "subscribe", "pair": ["XBT/USD", "usdc/gbp", "FOO/BAR"], "subscription": {"name": "book", "depth": 1000}},
                    {"event": "subscribe", "pair": ["XBT/USD"], "subscription": {"name": "ticker"}, "reqid": 9},
                    {"event": "subscribe", "pair": ["XBT/USD"], "subscription": {"name": "book", "depth": 25}},
                ],
            )
            await asyncio.wait_for(srv.wait_done(), 5)
            return texts, code

    texts, code = arun(main())
    assert texts[0] in hellos
    assert texts[1] == '{"event":"pong","reqid":5}'
    assert code == 1000
    events = [orjson.loads(t) for t in texts if t.startswith("{")]
    errors = [e for e in events if e.get("status") == "error"]
    assert [e["pair"] for e in errors] == ["FOO/BAR", "XBT/USD"]  # unknown pair; depth 25 was not recorded
    statuses = [t for t in texts if '"status":"subscribed"' in t]
    assert statuses[:2] == status_of(book, ["USDC/GBP", "XBT/USD"])  # verbatim, recorded order
    # with a reqid, Kraken echoes it: the recorded ack plus "reqid" (keys stay sorted)
    assert statuses[2] == status_of(ticker, ["XBT/USD"])[0].replace(',"status":', ',"reqid":9,"status":')
    assert orjson.loads(statuses[2])["reqid"] == 9
    by_chan = collections.defaultdict(list)
    for t in texts:
        if t.startswith("["):
            arr = orjson.loads(t)
            by_chan[(arr[-2], arr[-1])].append(t)
    assert set(by_chan) == {("book-1000", "XBT/USD"), ("book-1000", "USDC/GBP"), ("ticker", "XBT/USD")}
    # every frame of the subscribed channel/pair, verbatim and in recorded order
    for (chan, pair), got in by_chan.items():
        src = book if chan.startswith("book") else ticker
        assert got == [e.text for e in src.frames if e.text.startswith("[") and e.text.endswith(f'"{chan}","{pair}"]')]
    assert len(by_chan[("book-1000", "XBT/USD")]) == 5788 + 1  # updates + snapshot (README)
    assert len(by_chan[("book-1000", "USDC/GBP")]) == 51 + 1
    assert len(by_chan[("ticker", "XBT/USD")]) == 8
    assert texts.count('{"event":"heartbeat"}') == 119  # heartbeats of one recording, not of both


def test_kraken_futures_subscribe_flow(data_dir):
    rec = ws_sessions(read_recording(data_dir / "kraken_futures"))[0]
    frames = [e.text for e in rec.frames]

    async def main():
        async with ReplayServer([data_dir / "kraken_futures"], speed=0, once=True) as srv:
            texts, code, _ = await ws_collect(
                srv.ws_url("kraken_futures"),
                send=[
                    {"event": "subscribe", "feed": "book", "product_ids": ["pi_ethusd", "PI_XRPUSD", "pi_nosuch"]},
                    {"event": "subscribe", "feed": "trade", "product_ids": [p.lower() for p in (
                        "PI_ETHUSD PI_XRPUSD PI_LTCUSD FI_XBTUSD_210730 FI_XBTUSD_210924 FI_ETHUSD_210730 "
                        "FI_ETHUSD_211231 FI_BCHUSD_210730 FI_BCHUSD_210924 FI_XRPUSD_210924").split()]},
                ],
            )
            await asyncio.wait_for(srv.wait_done(), 5)
            return texts, code

    texts, code = arun(main())
    assert texts[0] == '{"event":"info","version":1}' == frames[0]
    assert code == 1000
    objs = [orjson.loads(t) for t in texts]
    assert sum(o.get("event") == "error" for o in objs) == 1
    subscribed = [t for t, o in zip(texts, objs) if o.get("event") == "subscribed"]
    # the recorded acks, verbatim, in recorded order
    assert subscribed[:2] == [f for f in frames if '"subscribed","feed":"book"' in f and ("PI_ETHUSD" in f or "PI_XRPUSD" in f)]
    assert len(subscribed) == 2 + 10
    feeds = collections.Counter((o.get("feed"), o.get("product_id")) for o in objs if "feed" in o and "event" not in o)
    assert feeds[("book", "PI_ETHUSD")] == 3890 and feeds[("book", "PI_XRPUSD")] == 235  # README counts
    assert feeds[("book_snapshot", "PI_ETHUSD")] == 1 and feeds[("book_snapshot", "PI_XRPUSD")] == 1
    assert sum(n for (f, _), n in feeds.items() if f == "trade_snapshot") == 10
    assert sum(n for (f, _), n in feeds.items() if f == "trade") == 3
    assert not any(f == "ticker_lite" for f, _ in feeds)
    # per product the book seq continues the snapshot's by exactly +1: order kept
    for pid in ("PI_ETHUSD", "PI_XRPUSD"):
        seqs = [o["seq"] for o in objs if o.get("product_id") == pid and o.get("feed") in ("book", "book_snapshot")]
        assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))
    data = [t for t, o in zip(texts, objs) if "feed" in o and "event" not in o]
    assert set(data) <= set(frames)


# ------------------------------------------------------------------ lifecycle, faults, entry point


def test_once_waits_for_expected_connections(data_dir):
    """N sessions of one venue (two workers, say) that start while it is being replayed are
    each replayed to the end; the server is done only after both."""
    path = data_dir / "binance/2021-10-12"

    async def main():
        async with ReplayServer([path], speed=5.0, once=True, expected_connections=2, linger=0.05) as srv:
            url = srv.ws_url("binance") + "?streams=nknusdt@depth@100ms"
            first = asyncio.ensure_future(ws_collect(url))
            await asyncio.sleep(0.3)
            assert not srv.done  # one session still open, the other not yet started
            second = asyncio.ensure_future(ws_collect(url))
            (a, code_a, _), (b, code_b, _) = await asyncio.gather(first, second)
            await asyncio.wait_for(srv.wait_done(), 5)
            # REST still up after done
            async with aiohttp.ClientSession() as s:
                async with s.get(srv.rest_url() + "/api/v3/exchangeInfo") as r:
                    status = r.status
            return a, b, code_a, code_b, status

    a, b, code_a, code_b, status = arun(main())
    assert a == b and len(a) > 0 and code_a == code_b == 1000
    assert status == 200


def test_mutate_and_modified_recording(data_dir, tmp_path):
    src = data_dir / "binance/2021-10-12/BINANCE.ws.1.0"
    depth_lines = find_lines(src, '"stream":"nknusdt@depth@100ms"')
    dropped = read_file(src)[depth_lines[5] - 1].text
    mod = write_modified_recording(src, tmp_path / "BINANCE.ws.1.0", [Drop(depth_lines[5])])
    seen = []

    def mutate(ev):
        seen.append(ev.line)
        if "@bookTicker" in ev.text:
            return None
        return ev.text.replace('"e":"depthUpdate"', '"e":"depthUpdate","x":1')

    async def main():
        async with ReplayServer([mod], speed=0, mutate=mutate, linger=0.05) as srv:
            streams = ws_sessions(read_file(mod))[0].url.split("?", 1)[1]
            texts, _, _ = await ws_collect(srv.ws_url("binance") + "?" + streams)
            return texts

    texts = arun(main())
    orig = recorded_frames(src)
    assert dropped not in texts and dropped.replace('"e":"depthUpdate"', '"e":"depthUpdate","x":1') not in texts
    assert not any("@bookTicker" in t for t in texts)
    depth = [t for t in texts if "depthUpdate" in t]
    assert len(depth) == sum("depthUpdate" in t for t in orig) - 1 and all('"x":1' in t for t in depth)
    assert len(seen) == len(orig) - 1
    # the drop is a real gap in U/u that a book-sync test can detect
    nkn = [orjson.loads(t)["data"] for t in depth if "nknusdt@depth" in t]
    assert any(b["U"] != a["u"] + 1 for a, b in zip(nkn, nkn[1:]))


def test_bad_recordings_fail_before_listening(data_dir, tmp_path):
    bad = write_modified_recording(data_dir / "kraken/KRAKEN-82ac16.0", tmp_path / "KRAKEN-x.0", [Insert(7, "not a recorded line")])
    with pytest.raises(RecordingError, match=rf"^{re.escape(str(bad))}:7: "):
        ReplayServer([bad])
    with pytest.raises(ConfigError):
        ReplayServer([data_dir / B38], speed=-1)


def test_stop_closes_live_connections(data_dir):
    async def main():
        srv = ReplayServer([data_dir / B38], speed=1.0)
        await srv.start()
        async with aiohttp.ClientSession() as s:
            async with s.ws_connect(srv.ws_url("binance") + "?streams=dentusdt@bookTicker") as ws:
                first = await ws.receive(timeout=5)
                stopping = asyncio.ensure_future(srv.stop())
                msg = await ws.receive(timeout=5)
                while msg.type == aiohttp.WSMsgType.TEXT:  # frames already in flight
                    msg = await ws.receive(timeout=5)
                t = time.monotonic()
                await stopping
                return first, msg, ws.close_code, time.monotonic() - t

    first, msg, code, stop_wait = arun(main())
    assert first.type == aiohttp.WSMsgType.TEXT and "dentusdt@bookTicker" in first.data
    assert msg.type == aiohttp.WSMsgType.CLOSE and msg.data == 1001
    assert code == 1001 and stop_wait < 1.0


def test_run_replay_entry_point_in_a_process(data_dir, tmp_path):
    ready = tmp_path / "replay.port"
    root = Path(__file__).resolve().parent.parent
    code = (
        "from dm.replay import run_replay; import sys; "
        f"run_replay([{str(data_dir / 'binance/2021-10-12')!r}], port=0, speed=0, once=True, ready_file={str(ready)!r})"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=root, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env={**os.environ, "PYTHONPATH": str(root)})
    try:
        deadline = time.monotonic() + 20
        while not ready.exists():
            assert proc.poll() is None, proc.stderr.read().decode()
            assert time.monotonic() < deadline, "replay never became ready"
            time.sleep(0.05)
        port = int(ready.read_text())
        evs = read_recording(data_dir / "binance/2021-10-12")
        streams = ws_sessions(evs)[0].url.split("?", 1)[1]
        texts, close, _ = arun(ws_collect(f"ws://127.0.0.1:{port}/stream?{streams}"))
        assert texts == [e.text for e in evs if e.kind == "frame"] and close == 1000
        assert proc.wait(timeout=10) == 0  # --once: the process ends by itself
        assert b"replay listening" in proc.stderr.read() + (proc.stdout.read() or b"")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_late_subscription_shares_the_clock_and_catches_up(data_dir):
    """Kraken Futures at speed 30 (31 s → ~1 s): book first, trade 0.4 s later. The trade
    snapshots (recorded 0.09 s after the book snapshots) arrive at once on the late subscribe,
    and the connection still ends at ≈ recorded duration / speed: one clock per session."""
    rec = ws_sessions(read_recording(data_dir / "kraken_futures"))[0]
    data = [e for e in rec.frames if '"feed"' in e.text and '"event"' not in e.text]
    duration = (data[-1].ts - data[0].ts) / 30.0

    async def main():
        async with ReplayServer([data_dir / "kraken_futures"], speed=30.0, linger=0.05) as srv:
            got = []
            async with aiohttp.ClientSession() as s:
                async with s.ws_connect(srv.ws_url("kraken_futures")) as ws:
                    t0 = time.monotonic()
                    await ws.send_str('{"event":"subscribe","feed":"book","product_ids":["PI_LTCUSD"]}')
                    await asyncio.sleep(0.4)
                    t_trade = time.monotonic()
                    await ws.send_str('{"event":"subscribe","feed":"trade","product_ids":["PI_LTCUSD"]}')
                    async for msg in ws:
                        got.append((time.monotonic(), msg.data))
            return t0, t_trade, got

    t0, t_trade, got = arun(main())
    texts = [t for _, t in got]
    expected = [e.text for e in rec.frames if '"product_id":"PI_LTCUSD"' in e.text and '"event"' not in e.text
                and ('"feed":"book' in e.text or '"feed":"trade' in e.text)]
    assert sorted(t for t in texts if '"event"' not in t) == sorted(expected)  # each exactly once
    snap_at = next(t for t, x in got if '"feed":"trade_snapshot"' in x)
    assert snap_at - t_trade < 0.15  # caught up at once, not after another 0.09 s * 30 wait
    books = [x for x in texts if '"feed":"book' in x and '"event"' not in x]
    assert books == [x for x in expected if '"feed":"book' in x]  # book order kept
    end = got[-1][0] - t0
    assert 0.8 * duration <= end <= 1.3 * duration + 0.3


def test_kraken_unsubscribe_stops_a_pair(data_dir):
    async def main():
        async with ReplayServer([data_dir / "kraken/KRAKEN-c197c0.0"], speed=100.0, linger=0.05) as srv:
            got = []
            async with aiohttp.ClientSession() as s:
                async with s.ws_connect(srv.ws_url("kraken")) as ws:
                    await ws.send_str('{"event":"subscribe","pair":["XBT/USD","DASH/EUR"],"subscription":{"name":"book","depth":1000}}')
                    await asyncio.sleep(0.4)
                    await ws.send_str('{"event":"unsubscribe","pair":["DASH/EUR"],"subscription":{"name":"book","depth":1000},"reqid":3}')
                    async for msg in ws:
                        got.append(msg.data)
                    return got, ws.close_code

    got, code = arun(main())
    i = next(i for i, t in enumerate(got) if '"status":"unsubscribed"' in t)
    st = orjson.loads(got[i])
    assert st["pair"] == "DASH/EUR" and st["channelName"] == "book-1000" and st["reqid"] == 3
    dash = [t for t in got if t.endswith('"book-1000","DASH/EUR"]')]
    assert 0 < len(dash) < 2716 and not any(t.endswith('"DASH/EUR"]') for t in got[i + 1:])
    assert sum(t.endswith('"book-1000","XBT/USD"]') for t in got) == 5789 and code == 1000


def test_concurrent_connections_each_get_the_whole_session(data_dir):
    path = data_dir / B38
    want = [t for t in recorded_frames(path) if stream_of(t) in ("zilusdt@depth@100ms", "zilusdt@bookTicker")]

    async def main():
        async with ReplayServer([path], speed=0, once=True, expected_connections=3, linger=0.05) as srv:
            url = srv.ws_url("binance") + "?streams=zilusdt@depth@100ms/zilusdt@bookTicker"
            results = await asyncio.gather(*(ws_collect(url) for _ in range(3)))
            await asyncio.wait_for(srv.wait_done(), 5)
            return results, dict(srv.stats)

    results, stats = arun(main())
    for texts, code, _ in results:
        assert texts == want and code == 1000
    assert stats["completed"] == 3 and stats["frames_sent"] == 3 * len(want)
