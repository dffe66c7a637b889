"""Worker throughput end to end: frames/s each venue worker (Binance, Kraken v1, Kraken Futures
v1, Bybit v5 with its two category connections, Binance USD-M and COIN-M futures, OKX v5) handles when
`dm supervise` replays its real recording at speed 0 (as fast as the replay server goes).
Measured from the worker's stats file over the steady state: the frames received after every
book first stood synced / (last frame ts_recv - the ts_recv of that moment), i.e. websocket read
+ codec + books (checksums, DEPTH/BBO) + shm channels + persist queue, with the persister and the
replay server running on the same 2 cores. The connection's start-up is outside that window: at
speed 0 the REST depth snapshots (Binance, Bitstamp) land 10-30 % into a session that compresses
minutes of market into a second, and the diffs buffered for them meanwhile (tens of thousands
here, tens live) take the Python path once. ``worker.<venue>.whole_session.*`` is the rate from
the first frame, start-up included, and ``worker.<venue>.startup_frames_share`` the share of
frames received before the books synced (a window starting after half the frames is not taken:
the whole session is used). ``cpu_us_per_frame``: the worker's CPU time over the same window.

Baseline in the same run: a null client (aiohttp on uvloop, subscribing exactly like the worker
and only counting frames) against the same replay server — the rate the feed can be delivered
at all. ``ratio_vs_null_client`` near 1 means the replay server, not the worker, is the limit.

Short recordings are tiled. A recording under :data:`TILE_BELOW` frames (Binance spot 11,357
frames, Binance USD-M 1,468, COIN-M 4,338, Bybit 3,227 in its two category connections of which
the worker receives 3,110 (no kline; the replay's own subscribe acks), Deribit 139, Coinbase
Advanced Trade 1,030, Bitstamp 747, OKX 3,777 of which the worker subscribes to 2,136, Kraken v1
14,930 in three connection files of which the worker receives 14,690) lasts a few ms at speed 0,
so its rate is mostly start-up (Kraken Futures, 7,175, is not tiled: ``gen_sessions`` has no
tiler for it): REST depth snapshots, the first websocket snapshots (Coinbase's are multi-MB),
subscription round trips. For those venues the run generates, once into a temporary folder, a session of
about :data:`TILE_TARGET` frames (those the worker subscribes to: :data:`SERVED`) with
``bench/gen_sessions.py``: the recording itself, then its steady-state stream (book diffs,
trades, tickers, heartbeats) repeated tile after tile with every continuity field shifted under
the venue's book rule, times shifted forward, and one generated book-reset diff per book at each
tile boundary (so every tile's diffs apply to the same book as in the recording); connects,
subscription acks, snapshots, candles and the diffs a book drops before its snapshot are in the
first tile only. Worker and null client replay the same generated session; on it the worker has
the recording's own counts of gaps (0), resyncs (the start-up snapshot requests), dead letters
and crossed books (0) (tests/test_gen_sessions.py). ``worker.<venue>.tiles`` is the tile count
(1: the recording as shipped). The start-up is amortised over the tiles, not removed: at speed 0
the stream outruns the REST depth snapshots (Binance spot and futures, Bitstamp), and the diffs
received before a book's snapshot are buffered and applied in Python when it lands (on the
loaded 2-core VM, COIN-M and Bitstamp books synced 20 % to 100 % into a ~0.2 s, 30,000-frame
session, so only ~20 % and ~15 % of their diffs took the C path; hence 150,000 frames, where
~80 % and ~45 % do).
"""
from __future__ import annotations

import gc
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
import orjson

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench import gen_sessions  # noqa: E402
from tests.e2e import (B38, B38_SYMBOLS, EXCHANGE_INFO, KF_FILES, KF_PRODUCTS, KRAKEN_FILES, KRAKEN_PAIRS,  # noqa: E402
                       config_head, provider_toml)

#: the persist queue of conf/prod.toml (256 MiB), not the tests' 16 MiB: at speed 0 a depth-heavy
#: session makes rows far faster than any persister stores them, and once the queue is full every
#: frame's rows are spilled to the spool with one write(2) each (kept through kill -9), which
#: measures the persister (bench_storage does), not the worker
PERSIST_BYTES = 1 << 28

#: the persister's nice value ([supervisor] nice): it drains the queue on what CPU the worker and
#: the replay server leave, as a deployment on few cores runs it (it may lag, the worker may not);
#: at speed 0 it would otherwise take a third of the 2 cores the null client's run leaves to the
#: replay server and the client alone
PERSISTER_NICE = 19

#: CPU placement with two CPUs or more, as a low-latency deployment pins its processes
#: (``[supervisor.cpus]``, conf/prod.toml): the process measured (the worker, or the null client)
#: on a CPU of its own (MEASURED_CPU), the replay server and the persister on another (OTHER_CPU).
#: Both sides of each ratio run so placed. Unpinned, the scheduler moves the worker between the
#: cores it shares with the replay server and the persister (on the 2-core VM: OKX 0.62x pinned
#: 0.83x, same build, same run of the null client).
_CPUS = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
MEASURED_CPU, OTHER_CPU = (_CPUS[-1], _CPUS[0]) if len(_CPUS) >= 2 else (None, None)

#: a recording with fewer websocket frames than this is tiled (bench/gen_sessions.py) ...
TILE_BELOW = 20_000
#: ... to about this many frames
TILE_TARGET = 150_000

BYBIT_2026 = ROOT / "data/bybit/2026-08-09/BYBIT.jsonl.zst"
COINBASE_2026 = ROOT / "data/coinbase/2026-08-09/COINBASE.jsonl.zst"
#: (category, venue symbol) -> canonical, the 2026 session's linear + spot symbols
BYBIT_SYMBOLS = {("linear", "BTCUSDT"): "BTCUSDT-USDT-PERP", ("linear", "ETHUSDT"): "ETHUSDT-USDT-PERP",
                 ("linear", "SOLUSDT"): "SOLUSDT-USDT-PERP", ("linear", "DOGEUSDT"): "DOGEUSDT-USDT-PERP",
                 ("spot", "BTCUSDT"): "BTCUSDT", ("spot", "ETHUSDT"): "ETHUSDT"}

OKX_DIR = ROOT / "data/okx/2022-02-27"
#: instId -> canonical (ELON-USDT left out: tickSz 1e-11 does not fit 1e-9 prices)
OKX_SYMBOLS = {"PROPS-ETH": "PROPSETH", "ZEN-USDT": "ZENUSDT", "UNI-USD-SWAP": "UNIUSD-UNI-PERP",
               "BTC-USD-220325-40000-C": "BTCUSD-BTC-220325-40000-C",
               "ETH-USD-220228-3000-C": "ETHUSD-ETH-220228-3000-C", "ETH-USD-220325-8800-P": "ETHUSD-ETH-220325-8800-P",
               "ETH-USD-220429-1900-P": "ETHUSD-ETH-220429-1900-P",
               "ETH-USD-220624-12000-P": "ETHUSD-ETH-220624-12000-P",
               "ETH-USD-220624-20000-C": "ETHUSD-ETH-220624-20000-C"}
DERIBIT = ROOT / "data/deribit/2021-07-22"
#: instrument name -> canonical, the 10 recorded options
DERIBIT_SYMBOLS = {"BTC-24SEP21-8000-P": "BTCUSD-BTC-210924-8000-P", "BTC-30JUL21-24000-P": "BTCUSD-BTC-210730-24000-P",
                   "BTC-31DEC21-34000-P": "BTCUSD-BTC-211231-34000-P", "BTC-24SEP21-34000-P": "BTCUSD-BTC-210924-34000-P",
                   "BTC-24JUN22-15000-C": "BTCUSD-BTC-220624-15000-C", "BTC-31DEC21-300000-C": "BTCUSD-BTC-211231-300000-C",
                   "BTC-25MAR22-30000-C": "BTCUSD-BTC-220325-30000-C", "ETH-30JUL21-2800-C": "ETHUSD-ETH-210730-2800-C",
                   "ETH-27AUG21-4000-P": "ETHUSD-ETH-210827-4000-P", "ETH-23JUL21-2300-C": "ETHUSD-ETH-210723-2300-C"}
BITSTAMP = ROOT / "data/bitstamp/2022-01-05"
BITSTAMP_PAIRS = ["sgbeur", "ethusd", "xrpeur", "bateur", "usdteur", "usdtusd", "xlmgbp", "adaeur", "batbtc", "galaeur"]

VENUES = {
    # name: (files, provider block args, null-client subscription)
    "binance": (
        (B38, EXCHANGE_INFO),
        dict(kind="binance", exchange="BINANCE", ws_url="ws://{replay}/stream", symbols=B38_SYMBOLS,
             channels=["aggTrade", "bookTicker", "depth@100ms"]),
    ),
    "kraken": (
        KRAKEN_FILES,
        dict(kind="kraken", exchange="KRAKEN", ws_url="ws://{replay}/", symbols=list(KRAKEN_PAIRS.values()),
             channels=["book", "trade", "ticker"]),
    ),
    "kraken_futures": (
        KF_FILES,
        dict(kind="kraken_futures", exchange="KRAKEN_FUTURES", ws_url="ws://{replay}/ws/v1",
             symbols=list(KF_PRODUCTS.values()), channels=["book", "trade", "ticker_lite"]),
    ),
    "bybit": (
        (BYBIT_2026,),
        dict(kind="bybit", exchange="BYBIT", ws_url="ws://{replay}/v5/public", symbols=list(BYBIT_SYMBOLS.values()),
             channels=["orderbook", "publicTrade", "tickers"], extra={"depth": 200, "quote_aliases": {}}),
    ),
    "coinbase": (
        (COINBASE_2026,),
        dict(kind="coinbase", exchange="COINBASE", ws_url="ws://{replay}/advanced-trade-ws", symbols=["BTCUSD", "ETHUSD"],
             channels=["level2", "market_trades", "ticker"], extra={"feed": "advanced", "quote_aliases": {}}),
    ),
    "okx": (
        (OKX_DIR,),
        dict(kind="okx", exchange="OKX", ws_url="ws://{replay}/ws/v5/public", symbols=list(OKX_SYMBOLS.values()),
             channels=["books-l2-tbt", "trades", "tickers"], extra={"quote_aliases": {}}),
    ),
    "deribit": (
        (DERIBIT,),
        dict(kind="deribit", exchange="DERIBIT", ws_url="ws://{replay}/ws/api/v2", symbols=list(DERIBIT_SYMBOLS.values()),
             channels=["book", "ticker", "trades"], extra={"interval": "raw", "heartbeat_s": 30}),
    ),
    "bitstamp": (
        (BITSTAMP,),
        dict(kind="bitstamp", exchange="BITSTAMP", ws_url="ws://{replay}/bitstamp", symbols=[p.upper() for p in BITSTAMP_PAIRS],
             channels=["diff_order_book", "live_trades"]),
    ),
    "binance_futures": (
        tuple(sorted((ROOT / "data/binance_futures/2021-07-22").iterdir())),
        dict(kind="binance_futures", exchange="BINANCE_FUTURES", ws_url="ws://{replay}/fstream/stream",
             symbols=["SUSHIUSDT-USDT-PERP", "CTKUSDT-USDT-PERP", "AKROUSDT-USDT-PERP", "KEEPUSDT-USDT-PERP"],
             channels=["aggTrade", "bookTicker", "depth@100ms"], extra={"quote_aliases": {}}),
    ),
    "binance_delivery": (
        tuple(sorted((ROOT / "data/binance_delivery/2021-07-22").iterdir())),
        dict(kind="binance_delivery", exchange="BINANCE_DELIVERY", ws_url="ws://{replay}/dstream/stream",
             symbols=["ETHUSD-ETH-210924", "ETCUSD-ETC-PERP", "LINKUSD-LINK-PERP", "BTCUSD-BTC-211231",
                      "EOSUSD-EOS-PERP", "BCHUSD-BCH-PERP", "XRPUSD-XRP-PERP", "TRXUSD-TRX-PERP",
                      "LINKUSD-LINK-211231", "BCHUSD-BCH-210924"],
             channels=["aggTrade", "bookTicker", "depth@100ms"]),
    ),
}
#: venue -> the venue symbols its bench worker and null client subscribe to, where the recording
#: holds more (OKX: ELON-USDT): a tiled session's size counts the frames they receive
SERVED = {"okx": frozenset(OKX_SYMBOLS)}
#: venue symbols of the Binance futures null clients (the recorded sessions' symbols)
BN_FUTURES_STREAMS = {
    "binance_futures": ("/fstream/stream", ["SUSHIUSDT", "CTKUSDT", "AKROUSDT", "KEEPUSDT"]),
    "binance_delivery": ("/dstream/stream", ["ETHUSD_210924", "ETCUSD_PERP", "LINKUSD_PERP", "BTCUSD_211231",
                                             "EOSUSD_PERP", "BCHUSD_PERP", "XRPUSD_PERP", "TRXUSD_PERP",
                                             "LINKUSD_211231", "BCHUSD_210924"]),
}


#: venues measured over both transports (the picows C frame path and aiohttp) in the same run
PICOWS_VENUES = ("binance", "kraken", "kraken_futures", "bybit")


#: venue -> the generated session replayed instead of the recording (set by ``run`` for the run)
TILED: dict[str, gen_sessions.Tiling] = {}


def venue_files(venue: str) -> tuple:
    t = TILED.get(venue)
    return (t.path,) if t is not None else VENUES[venue][0]


def worker_config(venue: str, tmp: Path, transport: str = "picows") -> tuple[str, Path]:
    """The instance name and the config file (in ``tmp``) of a bench run of ``venue``'s worker."""
    _files, p = VENUES[venue]
    files = venue_files(venue)
    extra = dict(p.get("extra", {}))
    if venue in PICOWS_VENUES:
        extra["transport"] = transport
    instance = f"bw{os.getpid()}{venue[:2]}{int(time.time() * 1000) % 100000}"
    cfg = tmp / "dm.toml"
    cfg.write_text(config_head(tmp, instance, f"sqlite:///{tmp / 'db.sqlite'}", files, speed=0.0)
                   .replace("persist_bytes = 16777216", f"persist_bytes = {PERSIST_BYTES}")
                   + provider_toml(tmp, venue, p["kind"], p["exchange"], p["ws_url"], p["symbols"], p["channels"],
                                   **extra)
                   .replace("reconnect_min_s = 0.1", "reconnect_min_s = 5.0")
                   + f"[supervisor.nice]\npersister = {PERSISTER_NICE}\n"
                   + (f"[supervisor.cpus]\n{venue} = [{MEASURED_CPU}]\npersister = [{OTHER_CPU}]\n"
                      f"replay = [{OTHER_CPU}]\n" if MEASURED_CPU is not None else ""))
    return instance, cfg


def run_worker_once(venue: str, tmp: Path, transport: str = "picows") -> dict:
    instance, cfg = worker_config(venue, tmp, transport)
    env = dict(os.environ)
    env.pop("DM_STORAGE_URL", None)
    r = subprocess.run([sys.executable, "-m", "dm", "supervise", "-c", str(cfg)], cwd=ROOT, env=env,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=300)
    if r.returncode != 0:
        raise RuntimeError(f"dm supervise exited {r.returncode} for {venue}")
    return json.loads((tmp / "run" / instance / f"{venue}.stats.json").read_text())


#: CPU µs per frame of the last worker_rate call's best sample (the worker's own CPU time since
#: its first frame / frames: what a frame costs, whatever else shares the cores)
LAST_CPU_US: dict[tuple[str, str], float] = {}
#: its frames/s over the whole session (first frame to last, start-up included) ...
LAST_WHOLE: dict[tuple[str, str], float] = {}
#: ... and the share of its frames received before every book was synced
LAST_STARTUP_SHARE: dict[tuple[str, str], float] = {}
#: venue -> the frames the worker received before its books synced (most of its samples): the null
#: client's rate is taken over the same frames of the stream, from that one on
LAST_SKIP: dict[str, int] = {}


def worker_rate(venue: str, reps: int, transport: str = "picows") -> tuple[float, int]:
    best, frames, cpu, whole, share = 0.0, 0, float("inf"), 0.0, 0.0
    for _ in range(reps):
        with tempfile.TemporaryDirectory(prefix="dm-bench-worker-") as d:
            st = run_worker_once(venue, Path(d), transport)
        if st["reconnects"] != 0:  # a reconnect after the end of the replay: not a clean sample
            continue
        n, t0, n0 = st["frames"], st["first_frame_ns"], 0
        whole_span = (st["last_frame_ns"] - t0) / 1e9
        if whole_span > 0:
            whole = max(whole, (n - 1) / whole_span)
        synced = st.get("books_synced_ns", 0)
        if synced and st["books_synced_frames"] <= n // 2:   # the steady state: from books synced
            t0, n0 = synced, st["books_synced_frames"]
            share = max(share, n0 / n)
            LAST_SKIP[venue] = max(LAST_SKIP.get(venue, 0), n0)
        span = (st["last_frame_ns"] - t0) / 1e9
        if span > 0:
            best = max(best, (n - n0 - 1) / span)
            frames = n
        cpu_s = st.get("cpu_s_since_books_synced") if n0 else st.get("cpu_s_since_first_frame")
        if cpu_s and n > n0:
            cpu = min(cpu, cpu_s * 1e6 / (n - n0))
    LAST_CPU_US[(venue, transport)] = cpu if cpu != float("inf") else 0.0
    LAST_WHOLE[(venue, transport)] = whole
    LAST_STARTUP_SHARE[(venue, transport)] = share
    return best, frames


# --------------------------------------------------------------------------- null client


def start_replay(files) -> tuple[subprocess.Popen, int]:
    ready = Path(tempfile.mktemp(prefix="dm-bench-replay-"))
    proc = subprocess.Popen([sys.executable, "-m", "dm", "replay", *map(str, files), "--port", "0", "--speed", "0",
                             "--ready-file", str(ready)], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    if OTHER_CPU is not None:
        os.sched_setaffinity(proc.pid, {OTHER_CPU})
    deadline = time.monotonic() + 60
    while not (ready.exists() and ready.read_text().strip()):
        if time.monotonic() > deadline or proc.poll() is not None:
            proc.kill()
            raise RuntimeError("replay server did not start")
        time.sleep(0.02)
    port = int(ready.read_text())
    ready.unlink()
    return proc, port


async def null_client(venue: str, port: int, skip: int = 0) -> tuple[int, float]:
    """(frames, seconds) from frame ``skip`` (0: the first) to the last."""
    _files, p = VENUES[venue]
    if venue == "bybit":
        return await _null_bybit(port, p, skip)
    if venue == "binance":
        streams = [f"{s.lower()}@{c}" for s in _binance_venue(p["symbols"]) for c in p["channels"]]
        url, subs = f"ws://127.0.0.1:{port}/stream?streams=" + "/".join(streams), []
    elif venue == "coinbase":   # the replay serves the recorded connection whole from the first subscribe
        url = f"ws://127.0.0.1:{port}/advanced-trade-ws"
        subs = [{"type": "subscribe", "product_ids": ["BTC-USD", "ETH-USD"], "channel": c}
                for c in (*p["channels"], "heartbeats")]
    elif venue == "okx":
        url = f"ws://127.0.0.1:{port}/ws/v5/public"
        subs = [{"op": "subscribe", "args": [{"channel": c, "instId": i} for i in OKX_SYMBOLS for c in p["channels"]]}]
    elif venue in BN_FUTURES_STREAMS:
        path, syms = BN_FUTURES_STREAMS[venue]
        streams = [f"{s.lower()}@{c}" for s in syms for c in p["channels"]]
        url, subs = f"ws://127.0.0.1:{port}{path}?streams=" + "/".join(streams), []
    elif venue == "kraken":
        pairs = list(KRAKEN_PAIRS)
        url = f"ws://127.0.0.1:{port}/"
        subs = [{"event": "subscribe", "pair": pairs, "subscription": ({"name": "book", "depth": 1000} if c == "book" else {"name": c})}
                for c in p["channels"]]
    elif venue == "deribit":
        url = f"ws://127.0.0.1:{port}/ws/api/v2"
        subs = [{"jsonrpc": "2.0", "id": 1, "method": "public/subscribe", "params": {
            "channels": [f"{c}.{n}.raw" for n in DERIBIT_SYMBOLS for c in p["channels"]]}}]
    elif venue == "bitstamp":
        url = f"ws://127.0.0.1:{port}/bitstamp"
        subs = [{"event": "bts:subscribe", "data": {"channel": f"{c}_{x}"}} for x in BITSTAMP_PAIRS for c in p["channels"]]
    else:
        products = [x.lower() for x in KF_PRODUCTS]
        url = f"ws://127.0.0.1:{port}/ws/v1"
        subs = [{"event": "subscribe", "feed": c, "product_ids": products} for c in p["channels"]]
    n, t0, t1 = 0, 0, 0
    async with aiohttp.ClientSession() as s:
        async with s.ws_connect(url, max_msg_size=0) as ws:
            for m in subs:
                await ws.send_str(orjson.dumps(m).decode())
            async for msg in ws:
                if msg.type != aiohttp.WSMsgType.TEXT:
                    break
                t1 = time.perf_counter_ns()
                if n == skip:
                    t0 = t1
                n += 1
    return n - skip, (t1 - t0) / 1e9 if n > skip else 0.0


async def _null_bybit(port: int, p: dict, skip: int = 0) -> tuple[int, float]:
    """One websocket per category, the worker's topics (10 per subscribe request)."""
    import asyncio

    times: list[int] = []

    async def one(cat: str, symbols: list[str]) -> int:
        topics = [f"orderbook.200.{s}" if c == "orderbook" else f"{c}.{s}" for s in symbols for c in p["channels"]]
        n = 0
        async with aiohttp.ClientSession() as s:
            async with s.ws_connect(f"ws://127.0.0.1:{port}/v5/public/{cat}", max_msg_size=0) as ws:
                for i in range(0, len(topics), 10):
                    await ws.send_str(orjson.dumps({"op": "subscribe", "args": topics[i:i + 10]}).decode())
                async for msg in ws:
                    if msg.type != aiohttp.WSMsgType.TEXT:
                        break
                    times.append(time.perf_counter_ns())
                    n += 1
        return n

    cats: dict[str, list[str]] = {}
    for (cat, sym) in BYBIT_SYMBOLS:
        cats.setdefault(cat, []).append(sym)
    counts = await asyncio.gather(*(one(c, syms) for c, syms in cats.items()))
    times.sort()
    return sum(counts) - skip, (times[-1] - times[skip]) / 1e9 if len(times) > skip else 0.0


def _binance_venue(canonicals) -> list[str]:
    from tests.e2e import canonical  # USDT -> USD, as the bench config's quote alias

    venue = {}
    for line in B38.read_text().splitlines():
        if line[:1].isdigit() and '"stream":"' in line[:40]:
            s = line.split('"stream":"', 1)[1].split("@", 1)[0].upper()
            venue.setdefault(canonical(s), s)
    return [venue[c] for c in canonicals]


def null_rate(venue: str, reps: int) -> float:
    import uvloop

    files = venue_files(venue)
    best = 0.0
    mask = os.sched_getaffinity(0) if MEASURED_CPU is not None else None
    for _ in range(reps):
        proc, port = start_replay(files)
        try:
            if mask is not None:              # the null client where the worker runs (MEASURED_CPU)
                os.sched_setaffinity(0, {MEASURED_CPU})
            n, span = uvloop.run(null_client(venue, port, LAST_SKIP.get(venue, 0)))
        finally:
            if mask is not None:
                os.sched_setaffinity(0, mask)
            proc.terminate()
            proc.wait(10)
        if span > 0:
            best = max(best, (n - 1) / span)
    return best


def recorded_frames(venue: str) -> int:
    """Websocket frames of the venue's shipped recording."""
    from dm.recording import iter_recording

    return sum(1 for e in iter_recording(VENUES[venue][0]) if e.kind == "frame")


def tile(venue: str, tmp: Path) -> None:
    """A short recording of a venue ``gen_sessions`` can tile: generate its long session (TILED)."""
    if venue in gen_sessions.TILERS and recorded_frames(venue) < TILE_BELOW:
        TILED[venue] = gen_sessions.generate(venue, None, tmp, target_frames=TILE_TARGET, served=SERVED.get(venue))


def run(quick: bool = False, only: list[str] | None = None) -> dict[str, float]:
    reps = 1 if quick else 3
    out: dict[str, float] = {}
    tiles_dir = tempfile.TemporaryDirectory(prefix="dm-bench-tiles-")
    gc.disable()
    try:
        for venue in only or VENUES:
            tile(venue, Path(tiles_dir.name))
            worker_rate(venue, 1)  # warm-up: page cache, .pyc, sqlite file system
            LAST_SKIP.pop(venue, None)   # the measured runs' start-up sets the null client's window
            w, frames = worker_rate(venue, reps, "picows")  # the default transport
            nul = null_rate(venue, reps)
            out[f"worker.{venue}.frames_per_s"] = round(w, 1)
            out[f"worker.{venue}.cpu_us_per_frame"] = round(LAST_CPU_US[(venue, "picows")], 3)
            out[f"worker.{venue}.frames"] = float(frames)
            out[f"worker.{venue}.null_client_frames_per_s"] = round(nul, 1)
            out[f"worker.{venue}.ratio_vs_null_client"] = round(w / nul, 3) if nul else 0.0
            out[f"worker.{venue}.whole_session.frames_per_s"] = round(LAST_WHOLE[(venue, "picows")], 1)
            out[f"worker.{venue}.whole_session.ratio_vs_null_client"] = (
                round(LAST_WHOLE[(venue, "picows")] / nul, 3) if nul else 0.0)
            out[f"worker.{venue}.startup_frames_share"] = round(LAST_STARTUP_SHARE[(venue, "picows")], 3)
            out[f"worker.{venue}.tiles"] = float(TILED[venue].tiles if venue in TILED else 1)
            if venue in PICOWS_VENUES:  # the same worker over aiohttp, same run
                wa, _ = worker_rate(venue, reps, "aiohttp")
                out[f"worker.{venue}.aiohttp.frames_per_s"] = round(wa, 1)
                out[f"worker.{venue}.aiohttp.cpu_us_per_frame"] = round(LAST_CPU_US[(venue, "aiohttp")], 3)
                out[f"worker.{venue}.aiohttp.ratio_vs_null_client"] = round(wa / nul, 3) if nul else 0.0
                out[f"worker.{venue}.picows_over_aiohttp.ratio"] = round(w / wa, 3) if wa else 0.0
    finally:
        gc.enable()
        TILED.clear()
        tiles_dir.cleanup()
    return out


if __name__ == "__main__":
    quick = "--quick" in sys.argv
    res = run(quick=quick, only=[a for a in sys.argv[1:] if not a.startswith("--")] or None)
    width = max(map(len, res))
    for k, v in res.items():
        print(f"{k:<{width}}  {v:>14,.3f}")
