"""Helpers for end-to-end tests: write a config for a unique instance, run `dm supervise` as a
real process, read channels with dm.client from the start, and parse expectations straight from
the recording with orjson (independently of dm's codec)."""
from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections import defaultdict
from decimal import Decimal
from pathlib import Path

import orjson

ROOT = Path(__file__).resolve().parent.parent
B38 = ROOT / "data/binance/BINANCE-b38f7c.0"
EXCHANGE_INFO = ROOT / "data/binance/2021-10-12/BINANCE.0"
B38_SYMBOLS = ["BTCAUD", "MANAUSD", "ETHBRL", "DENTUSD", "ZILUSD", "RENBTCETH", "BTCSTUSD", "QTUMETH", "AXSBNB", "NEOUSDC"]


def canonical(venue: str) -> str:
    return venue[:-1] if venue.endswith("USDT") else venue  # quote alias USDT -> USD


def fx(s: str) -> int:
    """Decimal string → fixed point 1e-9, exactly (the test's own oracle)."""
    d = Decimal(s).scaleb(9)
    assert d == d.to_integral_value()
    return int(d)


def fxs(s: str, size_precision: int) -> int:
    """A size's decimal string → integer at 10**-size_precision, exactly (the test's oracle)."""
    d = Decimal(s).scaleb(size_precision)
    assert d == d.to_integral_value(), (s, size_precision)
    return int(d)


def to9(size: int, size_precision: int) -> int:
    """A record's size at its size_precision (<= 9) → the same quantity at 1e-9, exactly: for
    comparing with reference books that work at 1e-9."""
    assert 0 <= size_precision <= 9
    return size * 10 ** (9 - size_precision)


def expected_binance(path: Path = B38) -> dict:
    """Per canonical symbol: list of aggTrade data dicts and bookTicker data dicts, in order."""
    out = {"aggTrade": defaultdict(list), "bookTicker": defaultdict(list)}
    for line in path.read_bytes().splitlines():
        if not line or line.startswith((b"configuration:", b"wss://", b"http")):
            continue
        _, text = line.split(b": ", 1)
        try:
            msg = orjson.loads(text)
        except orjson.JSONDecodeError:
            continue
        if not isinstance(msg, dict) or "stream" not in msg:
            continue
        kind = msg["stream"].split("@", 1)[1]
        if kind in out:
            out[kind][canonical(msg["data"]["s"])].append(msg["data"])
    return out


def config_head(tmp: Path, instance: str, storage_url: str, files, *, speed: float = 0.0, once: bool = True,
                replay_port: int = 0, quote_aliases: str = '{ USDT = "USD" }', supervisor: dict | None = None) -> str:
    """Every section of a test config except the providers (append ``provider_toml`` blocks).
    ``supervisor``: more ``[supervisor]`` keys (TOML literals: str/int/float/bool), e.g.
    ``{"health_port": 9099, "fail_fast": True}``; no files: no replay server."""
    files_toml = ", ".join(f'"{f}"' for f in files)
    sup = {"restart_backoff_min_s": 0.1, "restart_backoff_max_s": 1.0, "max_restarts": 5, "restart_window_s": 60.0,
           "stop_grace_s": 10.0, "exit_when_replay_done": once, **(supervisor or {})}
    sup_toml = "".join(f"{k} = {str(v).lower() if isinstance(v, bool) else repr(v)}\n" for k, v in sup.items())
    return f"""
[dm]
instance = "{instance}"
run_dir = "{tmp / 'run'}"
log_format = "console"
log_level = "info"
[storage]
url = "{storage_url}"
[shm]
registry = "/dm.reg.{instance}"
channel_bytes = 4194304
persist_bytes = 16777216
spool_dir = "{tmp / 'spool'}"
[persister]
batch_records = 5000
batch_ms = 10
[supervisor]
{sup_toml}[replay]
enabled = {'true' if files else 'false'}
files = [{files_toml}]
speed = {speed}
port = {replay_port}
[symbology]
quote_aliases = {quote_aliases}
"""


def provider_toml(tmp: Path, name: str, kind: str, exchange: str, ws_url: str, symbols, channels=(),
                  rest_url: str = "http://{replay}", **extra) -> str:
    """One ``[providers.NAME]`` block; ``extra`` values are written as TOML literals (str/int/
    float/bool/dict of str)."""
    def lit(v):
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, (int, float)):
            return repr(v)
        if isinstance(v, dict):
            return "{ " + ", ".join(f'{k} = {lit(x)}' for k, x in v.items()) + " }"
        return f'"{v}"'
    lines = [
        f"[providers.{name}]",
        f'kind = "{kind}"',
        f'exchange = "{exchange}"',
        f'ws_url = "{ws_url}"',
        f'rest_url = "{rest_url}"',
        "symbols = [" + ", ".join(f'"{s}"' for s in symbols) + "]",
        "channels = [" + ", ".join(f'"{c}"' for c in channels) + "]",
        f'dead_letter = "{tmp / "deadletter" / (name + ".jsonl")}"',
        "reconnect_min_s = 0.1",
        "reconnect_max_s = 1.0",
    ]
    lines += [f"{k} = {lit(v)}" for k, v in extra.items()]
    return "\n".join(lines) + "\n"


def write_config(tmp: Path, instance: str, storage_url: str, files=(B38, EXCHANGE_INFO), *, speed: float = 0.0,
                 once: bool = True, symbols=B38_SYMBOLS, channels=("aggTrade", "bookTicker"), extra: str = "") -> Path:
    cfg = tmp / "dm.toml"
    syms = ", ".join(f'"{s}"' for s in symbols)
    chans = ", ".join(f'"{c}"' for c in channels)
    cfg.write_text(config_head(tmp, instance, storage_url, files, speed=speed, once=once) + f"""
[providers.binance]
kind = "binance"
exchange = "BINANCE"
ws_url = "ws://{{replay}}/stream"
rest_url = "http://{{replay}}"
symbols = [{syms}]
channels = [{chans}]
dead_letter = "{tmp / 'deadletter' / 'binance.jsonl'}"
{extra}
""")
    return cfg


def start_supervisor(cfg: Path, log_path: Path) -> subprocess.Popen:
    env = dict(os.environ)
    env.pop("DM_STORAGE_URL", None)
    return subprocess.Popen([sys.executable, "-m", "dm", "supervise", "-c", str(cfg)], cwd=ROOT, env=env,
                            stdout=open(log_path.with_suffix(".out"), "wb"), stderr=open(log_path, "wb"))


class ChannelCollector:
    """Subscribes (start="oldest", follow=False) to every symbol as soon as its channel appears
    and collects every record until the producer closes the channel."""

    def __init__(self, instance: str, symbols, exchange: str = "BINANCE"):
        from dm.client import Client

        self.client = Client(instance=instance, registry=f"/dm.reg.{instance}")
        self.symbols = list(symbols)
        self.exchange = exchange
        self.records: dict[str, list] = {s: [] for s in self.symbols}
        self.overruns: dict[str, int] = {}
        self.errors: list[BaseException] = []
        self.threads = [threading.Thread(target=self._run, args=(s,), daemon=True) for s in self.symbols]

    def start(self):
        for t in self.threads:
            t.start()
        return self

    def _run(self, symbol: str) -> None:
        try:
            sub = self.client.subscribe(symbol, exchange=self.exchange, start="oldest", wait=60, follow=False)
            for rec in sub:
                self.records[symbol].append(rec)
            self.overruns[symbol] = sub.lost_records
        except BaseException as e:  # surfaced by join()
            self.errors.append(e)

    def join(self, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        for t in self.threads:
            t.join(max(0.0, deadline - time.monotonic()))
        assert not self.errors, self.errors
        assert not any(t.is_alive() for t in self.threads), "a reader never saw its channel close"


def leftover_segments(instance: str) -> list[str]:
    return sorted(p.name for p in Path("/dev/shm").iterdir() if p.name.startswith((f"dm.{instance}.", f"dm.reg.{instance}")))


# --------------------------------------------------------------------------- Kraken / Kraken Futures

KRAKEN_BOOK = ROOT / "data/kraken/KRAKEN-c197c0.0"
KRAKEN_TICKER = ROOT / "data/kraken/KRAKEN-4b7396.0"
KRAKEN_TRADE = ROOT / "data/kraken/KRAKEN-82ac16.0"
KRAKEN_ASSET_PAIRS = ROOT / "data/kraken/KRAKEN.0"
KRAKEN_FILES = (KRAKEN_BOOK, KRAKEN_TICKER, KRAKEN_TRADE, KRAKEN_ASSET_PAIRS)
#: Kraken v1 wsname -> canonical symbol (the 10 recorded pairs)
KRAKEN_PAIRS = {"ALGO/XBT": "ALGOBTC", "LSK/USD": "LSKUSD", "USDC/GBP": "USDCGBP", "FIL/XBT": "FILBTC",
                "WAVES/ETH": "WAVESETH", "ICX/USD": "ICXUSD", "AUD/USD": "AUDUSD", "KAVA/USD": "KAVAUSD",
                "DASH/EUR": "DASHEUR", "XBT/USD": "BTCUSD"}

KF_WS = ROOT / "data/kraken_futures/KRAKEN_FUTURES.ws.1.0"
KF_INSTRUMENTS = ROOT / "data/kraken_futures/KRAKEN_FUTURES.0"
KF_FILES = (KF_WS, KF_INSTRUMENTS)
#: Kraken Futures product id -> canonical symbol (the 10 recorded products)
KF_PRODUCTS = {"PI_ETHUSD": "ETHUSD-ETH-PERP", "PI_XRPUSD": "XRPUSD-XRP-PERP", "PI_LTCUSD": "LTCUSD-LTC-PERP",
               "FI_XBTUSD_210730": "BTCUSD-BTC-210730", "FI_XBTUSD_210924": "BTCUSD-BTC-210924",
               "FI_ETHUSD_210730": "ETHUSD-ETH-210730", "FI_ETHUSD_211231": "ETHUSD-ETH-211231",
               "FI_BCHUSD_210730": "BCHUSD-BCH-210730", "FI_BCHUSD_210924": "BCHUSD-BCH-210924",
               "FI_XRPUSD_210924": "XRPUSD-XRP-210924"}


def kraken_provider(tmp: Path, symbols=tuple(KRAKEN_PAIRS.values()), channels=("book", "trade", "ticker"),
                    ws_url: str = "ws://{replay}/", **extra) -> str:
    return provider_toml(tmp, "kraken", "kraken", "KRAKEN", ws_url, symbols, channels, **extra)


def kraken_futures_provider(tmp: Path, symbols=tuple(KF_PRODUCTS.values()), channels=("book", "trade", "ticker_lite"),
                            ws_url: str = "ws://{replay}/ws/v1", **extra) -> str:
    return provider_toml(tmp, "kraken_futures", "kraken_futures", "KRAKEN_FUTURES", ws_url, symbols, channels, **extra)


def run_supervised(cfg: Path, tmp: Path, timeout: float = 90) -> None:
    """Run ``dm supervise`` to its own end (replay ``--once``); asserts exit code 0."""
    sup = start_supervisor(cfg, tmp / "supervisor.log")
    try:
        rc = sup.wait(timeout=timeout)
    finally:
        if sup.poll() is None:
            sup.kill()
    assert rc == 0, (tmp / "supervisor.log").read_text()[-4000:]


def worker_stats(tmp: Path, instance: str, provider: str) -> dict:
    import json

    return json.loads((tmp / "run" / instance / f"{provider}.stats.json").read_text())


def depth_levels(bids, asks, n: int = 10) -> tuple:
    """A DEPTH record's ``levels`` tuple from best-first (price, size) lists (UNDEF_PRICE, 0 pad)."""
    undef = (1 << 63) - 1
    out = []
    for k in range(n):
        bp, bs = bids[k] if k < len(bids) else (undef, 0)
        ap, as_ = asks[k] if k < len(asks) else (undef, 0)
        out.append((bp, ap, bs, as_))
    return tuple(out)


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class CuttingProxy:
    """TCP proxy on loopback in front of the replay server, for network faults a recording cannot
    express. The first connection is forwarded until ``after_bytes`` went server → client, then
    ``mode`` "cut": both sockets are aborted (the client sees the TCP connection die mid-stream);
    "freeze": nothing more is forwarded either way but the sockets stay open (a silent, dead
    peer) until the client closes. Connections 2..``max_connections`` are forwarded untouched,
    later ones are refused (closed at once): the replay server replays the whole session to
    each connection, so a reconnect after the end of the recording would start it over."""

    def __init__(self, upstream_port: int, after_bytes: int, mode: str = "cut", max_connections: int = 2):
        import asyncio

        assert mode in ("cut", "freeze")
        self.upstream_port = upstream_port
        self.after_bytes = after_bytes
        self.mode = mode
        self.port = free_port()
        self.max_connections = max_connections
        self.connections = 0
        self.refused = 0
        self.faulted = threading.Event()
        self.loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> "CuttingProxy":
        self.thread.start()
        assert self._ready.wait(10)
        return self

    def _run(self) -> None:
        import asyncio

        asyncio.set_event_loop(self.loop)
        self.server = self.loop.run_until_complete(asyncio.start_server(self._handle, "127.0.0.1", self.port))
        self._ready.set()
        self.loop.run_forever()

    async def _handle(self, reader, writer) -> None:
        import asyncio

        if self.connections >= self.max_connections:
            self.refused += 1
            writer.transport.abort()
            return
        self.connections += 1
        faulty = self.connections == 1
        for _ in range(200):  # the replay server may still be starting
            try:
                up_r, up_w = await asyncio.open_connection("127.0.0.1", self.upstream_port)
                break
            except OSError:
                await asyncio.sleep(0.05)
        else:
            writer.close()
            return
        frozen, closed = asyncio.Event(), asyncio.Event()

        async def pump(src, dst, count: bool):
            sent = 0
            try:
                while True:
                    if frozen.is_set() and count:
                        await closed.wait()  # a dead peer reads nothing: the server's sends stall
                        break
                    data = await src.read(65536)
                    if not data:
                        break
                    if frozen.is_set():
                        continue
                    if count and faulty and sent + len(data) >= self.after_bytes:
                        dst.write(data[: max(0, self.after_bytes - sent)])
                        self.faulted.set()
                        if self.mode == "cut":
                            writer.transport.abort()
                            up_w.transport.abort()
                            return
                        frozen.set()
                        continue
                    sent += len(data)
                    dst.write(data)
                    await dst.drain()
            except (ConnectionError, OSError):
                pass
            finally:
                closed.set()
                for w in (writer, up_w):
                    if not w.transport.is_closing():
                        w.transport.abort()

        await asyncio.gather(pump(up_r, writer, True), pump(reader, up_w, False))

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.server.close)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


def started_pids(log_text: str, child: str) -> list[int]:
    """pids of every start of ``child`` in a supervisor log."""
    import re

    return [int(m) for m in re.findall(rf"started\s+child={re.escape(child)}(?: \w+=\S+)*? pid=(\d+)", log_text)]
