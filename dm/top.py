"""``dm top``: a live terminal view of one dm instance (rich).

What it reads (all local, read-only; nothing here can disturb a producer):

- the shm registry (``dm/registry.py``): which workers serve which channels, pid, heartbeat;
- every channel's ring (``ChannelReader`` mapped read-only, joined at the newest record): records
  written (header), producer state, and the last trade and BBO it carries;
- each persist queue's header (records written/committed/spooled: the persist lag in records);
- the stats files ``run_dir/<instance>/*.stats.json`` the workers, the persister and the bridge
  rewrite every second (frames, frames by kind, reconnects, book gaps/resyncs, dead letters);
- ``/metrics`` on ``supervisor.health_port`` when configured (children up, restarts, and any
  ``dm_*`` counter it exports).

Rates (frames/s, records/s) are differences between two refreshes. ``dm top --once`` prints one
frame (rates over ``--interval``) and exits, for scripts and tests.
"""
from __future__ import annotations

import json
import mmap
import os
import struct
import time
from dataclasses import dataclass, field

from dm.config import Config
from dm.records import RType, to_decimal

# Persist queue SegHeader fields (dm/_ring.pxd): records_written @80 (producer), records_spooled
# @216 (producer), head_records @264 (consumer), spool_records_committed @288 (consumer).
_PQ_MAGIC = 0x3151525047524E44
_PQ_FIELDS = struct.Struct("<Q")


def persist_lag(shm_name: str) -> int | None:
    """Records a provider's persist queue holds that the persister has not committed (ring +
    spool), from the queue's header; None when the queue does not exist."""
    path = "/dev/shm/" + shm_name.lstrip("/")
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        mm = mmap.mmap(fd, 4096, prot=mmap.PROT_READ)
    except (OSError, ValueError):
        return None
    finally:
        os.close(fd)
    try:
        u = lambda off: _PQ_FIELDS.unpack_from(mm, off)[0]  # noqa: E731
        if u(0) != _PQ_MAGIC:
            return None
        return max(0, (u(80) - u(264)) + (u(216) - u(288)))
    finally:
        mm.close()


def read_stats_files(cfg: Config) -> dict[str, dict]:
    """``run_dir/<instance>/<name>.stats.json`` → {name: stats}."""
    d = cfg.run_dir / cfg.instance
    out = {}
    if d.exists():
        for p in sorted(d.glob("*.stats.json")):
            try:
                out[p.name.split(".")[0]] = json.loads(p.read_text())
            except (OSError, ValueError):
                pass
    return out


def scrape_metrics(port: int, timeout: float = 0.5) -> dict[str, list[tuple[dict, float]]] | None:
    """``/metrics`` of the supervisor on 127.0.0.1:port as {sample name: [(labels, value)]};
    None when not reachable."""
    import urllib.request

    from prometheus_client.parser import text_string_to_metric_families

    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=timeout) as r:
            text = r.read().decode()
    except OSError:
        return None
    out: dict[str, list] = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out.setdefault(s.name, []).append((s.labels, s.value))
    return out


@dataclass
class ChannelView:
    exchange: str
    symbol: str
    name: str
    reader: object = None
    epoch: int = 0
    last_trade: tuple | None = None  # (price, size, side, size_precision)
    last_bbo: tuple | None = None  # (bid_px, bid_sz, ask_px, ask_sz, size_precision)
    state: str = "absent"
    records: int = 0


@dataclass
class Snapshot:
    t: float
    providers: list[dict] = field(default_factory=list)
    channels: list[dict] = field(default_factory=list)
    persister: dict | None = None
    bridge: dict | None = None
    metrics: dict | None = None
    metrics_url: str | None = None


class Top:
    """Collects snapshots of an instance; ``render(snap)`` turns one into a rich renderable."""

    def __init__(self, cfg: Config):
        self.cfg = cfg
        self.channels: dict[str, ChannelView] = {}
        self.prev: dict[str, tuple[float, float]] = {}  # key -> (t, counter)

    def rate(self, key: str, value: float, t: float) -> float | None:
        p = self.prev.get(key)
        self.prev[key] = (t, value)
        if p is None or t <= p[0] or value < p[1]:
            return None
        return (value - p[1]) / (t - p[0])

    def _channel(self, cv: ChannelView) -> None:
        from dm._ring import ChannelReader
        from dm.errors import RingError
        from dm.records import LAYOUT_HASH

        if cv.reader is None:
            try:
                cv.reader = ChannelReader(cv.name, LAYOUT_HASH, start="oldest")
                cv.epoch = cv.reader.created_ns
            except (RingError, OSError) as e:
                cv.state = "absent" if "no such" in str(e) else "error"
                return
        r = cv.reader
        try:
            cv.records = r.records_written
            cv.state = r.producer_state()
            while True:  # drain to now, keeping the last trade and BBO
                arr = r.read_batch(1 << 16)
                if arr is None:
                    break
                rt = arr.dtype.names and int(arr["rtype"][-1])
                if rt == RType.TRADE:
                    x = arr[-1]
                    cv.last_trade = (int(x["price"]), int(x["size"]), chr(x["side"]), int(x["size_precision"]))
                elif rt == RType.BBO:
                    x = arr[-1]
                    cv.last_bbo = (int(x["bid_px"]), int(x["bid_sz"]), int(x["ask_px"]), int(x["ask_sz"]), int(x["size_precision"]))
            r.take_overrun()
        except (RingError, ValueError):
            cv.state = "error"
        if cv.state in ("closed", "dead"):
            r.close()  # reopen next time: the producer may have restarted with a new ring
            cv.reader = None

    def collect(self) -> Snapshot:
        from dm.registry import Registry

        cfg = self.cfg
        t = time.time()
        snap = Snapshot(t)
        entries = [e for e in Registry.open_readonly(cfg.shm.registry).entries(include_stale=True) if e.instance == cfg.instance]
        by_provider = {e.provider: e for e in entries}
        stats = read_stats_files(cfg)
        names = list(dict.fromkeys([p.name for p in cfg.enabled_providers] + list(by_provider)))
        for name in names:
            st = stats.get(name, {})
            e = by_provider.get(name)
            pcfg = cfg.providers.get(name)
            exchange = e.exchange if e else (pcfg.exchange if pcfg else st.get("exchange", "?"))
            frames = st.get("frames", 0)
            row = {
                "provider": name, "exchange": exchange, "pid": e.pid if e else st.get("pid"),
                "state": ("stale" if e.stale else "live") if e else "down",
                "frames": frames, "frames_s": self.rate(f"f:{name}", frames, st.get("ts", t)) if st else None,
                "records_s": self.rate(f"r:{name}", st.get("records", 0), st.get("ts", t)) if st else None,
                "reconnects": max(0, st.get("connects", 0) - 1), "gaps": st.get("book_gaps", 0),
                "resyncs": st.get("book_resyncs", st.get("book_snapshots", 0)), "dead_letters": st.get("dead_letters", 0),
                "persist_lag": persist_lag(cfg.persist_name(name)),
                "last_frame_age_s": (t - st["last_frame_ns"] / 1e9) if st.get("last_frame_ns") else None,
            }
            snap.providers.append(row)
            symbols = e.symbols if e else (pcfg.symbols if pcfg else ())
            for sym in symbols:
                key = f"{sym}@{exchange}"
                cv = self.channels.get(key)
                if cv is None:
                    cv = self.channels[key] = ChannelView(exchange, sym, cfg.channel_name(exchange, sym))
                self._channel(cv)
                snap.channels.append({
                    "channel": key, "provider": name, "state": cv.state, "records": cv.records,
                    "records_s": self.rate(f"c:{key}:{cv.epoch}", cv.records, t), "trade": cv.last_trade, "bbo": cv.last_bbo,
                })
        snap.persister = stats.get("persister")
        snap.bridge = stats.get("bridge")
        if snap.bridge:
            snap.bridge = dict(snap.bridge, records_s=self.rate("bridge", snap.bridge.get("records", 0), snap.bridge.get("ts", t)))
        port = cfg.supervisor.health_port
        if port:
            snap.metrics_url = f"http://127.0.0.1:{port}/metrics"
            snap.metrics = scrape_metrics(port)
        return snap

    # -- rendering ----------------------------------------------------------------------------
    @staticmethod
    def _num(v, fmt="{:,.0f}") -> str:
        return "-" if v is None else fmt.format(v)

    @staticmethod
    def _px(v: int) -> str:
        return "-" if v >= (1 << 63) - 1 else format(to_decimal(v).normalize(), "f")

    @staticmethod
    def _sz(v: int, prec: int) -> str:
        return format(to_decimal(v, prec).normalize(), "f")

    def render(self, snap: Snapshot):
        from rich.console import Group
        from rich.table import Table
        from rich.text import Text

        cfg = self.cfg
        head = Text(f"dm top — instance {cfg.instance} — {time.strftime('%H:%M:%S', time.localtime(snap.t))} — "
                    f"registry {cfg.shm.registry} — metrics {snap.metrics_url or 'off (no supervisor.health_port)'}"
                    + ("" if snap.metrics_url is None or snap.metrics is not None else " (unreachable)"), style="bold")
        pt = Table(title="providers", expand=False, title_justify="left")
        for c in ("provider", "exchange", "pid", "state", "frames", "frames/s", "records/s", "reconnects", "gaps", "resyncs",
                  "dead letters", "persist lag", "last frame"):
            pt.add_column(c, justify="right" if c not in ("provider", "exchange", "state") else "left")
        for p in snap.providers:
            age = p["last_frame_age_s"]
            pt.add_row(p["provider"], p["exchange"], str(p["pid"] or "-"),
                       Text(p["state"], style="green" if p["state"] == "live" else "red"),
                       self._num(p["frames"]), self._num(p["frames_s"]), self._num(p["records_s"]), str(p["reconnects"]),
                       str(p["gaps"]), str(p["resyncs"]), Text(str(p["dead_letters"]), style="red" if p["dead_letters"] else ""),
                       self._num(p["persist_lag"]), "-" if age is None else f"{age:,.1f}s ago")
        ct = Table(title="channels", expand=False, title_justify="left")
        for c in ("channel", "state", "records", "records/s", "last trade", "bid", "ask"):
            ct.add_column(c, justify="right" if c in ("records", "records/s") else "left")
        for c in snap.channels:
            tr, bb = c["trade"], c["bbo"]
            trade = "-" if tr is None else f"{tr[2]} {self._sz(tr[1], tr[3])} @ {self._px(tr[0])}"
            bid = "-" if bb is None else f"{self._sz(bb[1], bb[4])} @ {self._px(bb[0])}"
            ask = "-" if bb is None else f"{self._sz(bb[3], bb[4])} @ {self._px(bb[2])}"
            ct.add_row(c["channel"], Text(c["state"], style="green" if c["state"] == "live" else "yellow"),
                       self._num(c["records"]), self._num(c["records_s"]), trade, bid, ask)
        parts = [head, pt, ct]
        lines = []
        if snap.persister:
            ps = snap.persister
            rows = sum(ps.get("rows", {}).values())
            lines.append(f"persister: {ps.get('records', 0):,} records, {rows:,} rows stored, {ps.get('batches', 0):,} batches, "
                         f"{ps.get('failures', 0)} storage failures")
        if snap.bridge:
            b = snap.bridge
            lines.append(f"bridge → {b.get('url')} stream {b.get('stream')}: {'connected' if b.get('connected') else 'DISCONNECTED'}, "
                         f"{b.get('records', 0):,} records acked ({self._num(b.get('records_s'))}/s), {b.get('unacked', 0)} unacked, "
                         f"{b.get('lost_records', 0)} lost to overruns, {b.get('reconnects', 0)} reconnects")
        if snap.metrics:
            up = snap.metrics.get("dm_child_up", [])
            rs = {lb.get("child"): v for lb, v in snap.metrics.get("dm_child_restarts", []) + snap.metrics.get("dm_child_restarts_total", [])}
            if up:
                lines.append("children: " + ", ".join(f"{lb.get('child')} {'up' if v else 'DOWN'} ({int(rs.get(lb.get('child'), 0))} restarts)" for lb, v in up))
        if lines:
            parts.append(Text("\n".join(lines)))
        return Group(*parts)


def run_top(cfg: Config, interval: float = 1.0, once: bool = False) -> None:
    from rich.console import Console
    from rich.live import Live

    top = Top(cfg)
    console = Console()
    if once:
        top.collect()
        time.sleep(interval)
        console.print(top.render(top.collect()))
        return
    with Live(top.render(top.collect()), console=console, refresh_per_second=4, screen=False) as live:
        try:
            while True:
                time.sleep(interval)
                live.update(top.render(top.collect()))
        except KeyboardInterrupt:
            pass
