"""Health, readiness, metrics and systemd notifications of a supervised dm instance.

Progress, not presence: every child reports what it did through its stats file in
``run_dir/<instance>/`` (a worker's ``<provider>.stats.json`` every second, see
``dm.providers.base.Provider.stats``; the persister's ``persister.stats.json``), and this module
turns successive stats into health. Only a stats file written by the child's *current* pid
counts as a report; a report older than ``supervisor.stall_after_s`` means the child is stalled.

Persister stats contract (every key optional; a missing key is "unknown", never an error)::

    {"pid", "ts",
     "storage": {"state": "ok"|"failing"|"hung"|"connecting", "last_error": str, "last_ok_ns": int,
                 "write_latency_s": {"buckets": {le: cumulative count}, "sum": s, "count": n}},
     "queues": {provider: {"attached": bool, "pending": int, "lag_s": float, "records": int,
                           "dead_letters": int}},
     "rows": {table: n}}

``/health`` (HTTP 200, or 503 when a child failed or stalled or storage is failing/hung): JSON
per child (state, pid, starts, restarts, last exit, failures, progress: connected, last frame
age, frames/s from successive stats, reconnects, gaps, ...) and per storage (state, last error
redacted, lag per queue). ``/ready`` (200/503 with the reasons): 503 while a provider failed
or is not connected, a child stalled, storage is not ok, a persist queue is not attached or its
lag exceeds ``persister.max_lag_s``. ``/metrics``: Prometheus text (``CONTENT_TYPE_LATEST``) from a
custom collector over the same stats: counters (``_total``), gauges and the storage write
latency histogram, per provider, channel and table.

systemd (``sd_notify`` over ``$NOTIFY_SOCKET``): ``READY=1`` once every enabled worker is
connected (or definitively failed) and the persister reports its queues attached — or at the
latest after ``supervisor.ready_timeout_s``, so one unreachable venue cannot make systemd time
the whole service out; ``STATUS=`` says what is waited for or what is wrong; ``WATCHDOG=1``
(at half ``$WATCHDOG_USEC``) only while the service itself makes progress: every worker connected
or definitively failed, the persister alive and attached. A reason local to one provider (it
failed or is not connected) does not withhold the watchdog: the supervisor isolates that
provider itself, and a watchdog restart would cost every healthy venue a restart gap. Nor does
an outside fault the service is already riding out (storage unreachable or hung, persist lag
while it catches up): workers spool, the persister retries, and a restart would only add gaps.
With ``supervisor.fail_fast = true`` every reason withholds it.
"""
from __future__ import annotations

import json
import os
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path

from dm import log as dmlog

log = dmlog.get("dm.supervisor")

STORAGE_NOT_OK = ("failing", "hung", "connecting")


def sd_notify(message: str) -> bool:
    """Send a systemd notification (``READY=1``, ``WATCHDOG=1``, ``STOPPING=1``, ``STATUS=…``).
    Returns False when not run under systemd (no ``$NOTIFY_SOCKET``). See sd_notify(3)."""
    addr = os.environ.get("NOTIFY_SOCKET")
    if not addr:
        return False
    if addr.startswith("@"):
        addr = "\0" + addr[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
            s.connect(addr)
            s.sendall(message.encode())
    except OSError as e:
        log.warning("sd_notify failed", error=repr(e))
        return False
    return True


def read_stats(directory: Path) -> dict[str, dict]:
    """``{name: stats}`` of every ``<name>.stats.json`` in ``directory`` (unreadable ones skipped)."""
    out = {}
    if not directory.exists():
        return out
    for p in sorted(directory.glob("*.stats.json")):
        try:
            st = json.loads(p.read_text())
        except (OSError, ValueError):
            continue
        if isinstance(st, dict):
            out[p.name[: -len(".stats.json")]] = st
    return out


def _num(v, default=0.0) -> float:
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else default


@dataclass
class Verdict:
    """One evaluation. ``reasons``: why not ready (empty: ready); ``local``: the subset that is
    one provider's own fault; ``external``: the subset caused outside the service (storage
    down or hung, lag while catching up); ``waiting``: what start-up (READY=1) still waits for;
    ``unhealthy``: what makes /health 503."""

    reasons: list[str] = field(default_factory=list)
    local: list[str] = field(default_factory=list)
    external: list[str] = field(default_factory=list)
    waiting: list[str] = field(default_factory=list)
    unhealthy: list[str] = field(default_factory=list)

    @property
    def ready(self) -> bool:
        return not self.reasons

    def watchdog_ok(self, fail_fast: bool) -> bool:
        return not self.reasons if fail_fast else set(self.reasons) <= set(self.local) | set(self.external)


class Health:
    """Health of one supervisor's children from their stats files. ``sup`` provides ``cfg``,
    ``children`` (name → ``dm.supervisor.Child``) and ``started_at`` (wall clock)."""

    def __init__(self, sup, clock=time.time):
        self.sup = sup
        self.cfg = sup.cfg
        self.clock = clock
        self.stats: dict[str, dict] = {}
        self._sample: dict[str, tuple[int, float, int]] = {}  # name -> (pid, ts, frames)
        self.rates: dict[str, float] = {}
        self._refreshed = 0.0

    # -- inputs ---------------------------------------------------------------------------------
    def refresh(self) -> None:
        """Read every stats file; frames/s from the previous report of the same pid."""
        self.stats = read_stats(self.cfg.run_dir / self.cfg.instance)
        self._refreshed = time.monotonic()
        for name, st in self.stats.items():
            pid, ts, frames = st.get("pid"), _num(st.get("ts")), int(_num(st.get("frames")))
            prev = self._sample.get(name)
            if prev is None or prev[0] != pid:
                self.rates.pop(name, None)
                self._sample[name] = (pid, ts, frames)
            elif ts > prev[1]:
                self.rates[name] = max(0.0, (frames - prev[2]) / (ts - prev[1]))
                self._sample[name] = (pid, ts, frames)

    def fresh(self, max_age_s: float = 0.25) -> None:
        if time.monotonic() - self._refreshed > max_age_s:
            self.refresh()

    def report(self, name: str) -> dict | None:
        """The stats of child ``name`` if its current process wrote them, else None."""
        child = self.sup.children.get(name)
        st = self.stats.get(name)
        pid = getattr(child.proc, "pid", None) if child is not None else None
        if st is None or pid is None or st.get("pid") != pid:
            return None
        return st

    def stalled(self, name: str) -> float | None:
        """Seconds since the child's last report when that exceeds ``stall_after_s``, else None."""
        st = self.report(name)
        if st is None:
            return None
        age = self.clock() - _num(st.get("ts"), self.clock())
        return age if age > self.cfg.supervisor.stall_after_s else None

    # -- views ----------------------------------------------------------------------------------
    def worker_progress(self, name: str) -> dict:
        st = self.report(name)
        if st is None:
            return {"reporting": False, "connected": False}
        now = self.clock()
        last = int(_num(st.get("last_frame_ns")))
        return {
            "reporting": True,
            "stats_age_s": round(now - _num(st.get("ts"), now), 3),
            "stalled": self.stalled(name) is not None,
            "connected": bool(st.get("connected", False)),
            "last_frame_age_s": round(now - last / 1e9, 3) if last else None,
            "frames": int(_num(st.get("frames"))),
            "frames_per_s": round(self.rates[name], 1) if name in self.rates else None,
            "records": int(_num(st.get("records"))),
            "reconnects": int(_num(st.get("reconnects"))),
            "gaps": int(_num(st.get("gaps", st.get("book_gaps")))),
            "resyncs": int(_num(st.get("resyncs", st.get("book_resyncs")))),
            "dead_letters": int(_num(st.get("dead_letters"))),
            "value_errors": int(_num(st.get("value_errors"))),
            "refused_symbols": list(st.get("refused_symbols") or []),  # unknown at the venue: not carried
            "capture_error": str(st.get("capture_error") or ""),  # raw capture stopped (the feed did not)
            "spool_bytes": int(_num(st.get("spool_bytes"))),
        }

    def persister_stats(self) -> dict:
        return self.report("persister") or {}

    def storage(self) -> dict:
        """Storage as the persister sees it (``state`` "unknown" until it reports one)."""
        st = self.persister_stats()
        s = st.get("storage") if isinstance(st.get("storage"), dict) else {}
        now = self.clock()
        last_ok = int(_num(s.get("last_ok_ns")))
        queues = {}
        for p, q in (st.get("queues") or {}).items():
            if isinstance(q, dict):
                queues[p] = {"attached": bool(q.get("attached", False)), "pending": int(_num(q.get("pending"))),
                             "lag_s": round(_num(q.get("lag_s")), 3), "records": int(_num(q.get("records"))),
                             "dead_letters": int(_num(q.get("dead_letters")))}
        return {
            "state": str(s.get("state", "unknown")),
            "last_error": dmlog.redact(str(s.get("last_error") or "")),
            "last_ok_age_s": round(now - last_ok / 1e9, 3) if last_ok else None,
            "lag_s": max((q["lag_s"] for q in queues.values()), default=0.0),
            "queues": queues,
            "rows": {t: int(_num(n)) for t, n in (st.get("rows") or {}).items()},
        }

    def child_view(self, name: str, child) -> dict:
        proc = child.proc
        out = {
            "role": child.spec.role,
            "state": child.state,
            "pid": getattr(proc, "pid", None) if child.state not in ("backoff", "failed", "stopped", "done") else None,
            "starts": child.starts,
            "restarts": child.restarts,
            "last_exit": child.last_exit,
            "failures": child.failures,
        }
        if child.state == "failed" and child.retry_at is not None:
            out["retry_in_s"] = round(max(0.0, child.retry_at - self.sup.clock()), 3)
        if child.spec.role == "worker":
            out["progress"] = self.worker_progress(name)
        elif child.spec.role == "persister":
            st = self.report(name)
            now = self.clock()
            out["progress"] = {"reporting": st is not None,
                               "stats_age_s": round(now - _num(st.get("ts"), now), 3) if st else None,
                               "stalled": self.stalled(name) is not None}
        return out

    # -- verdicts -------------------------------------------------------------------------------
    def evaluate(self) -> Verdict:
        v = Verdict()
        cfg = self.cfg
        storage = self.storage()
        pstats = self.persister_stats()
        queues_known = isinstance(pstats.get("queues"), dict)
        for name, child in self.sup.children.items():
            role = child.spec.role
            if child.state == "failed":
                why = f"{name}: failed (crash loop; exit code {child.last_exit})"
                v.reasons.append(why)
                v.unhealthy.append(why)
                if role == "worker":
                    v.local.append(why)
                continue
            if role not in ("worker", "persister"):
                continue
            age = self.stalled(name)
            if age is not None:
                why = f"{name}: stalled (last report {age:.1f} s ago)"
                v.reasons.append(why)
                v.unhealthy.append(why)
                if role == "worker":
                    v.local.append(why)
                continue
            if role == "persister":
                if not pstats:
                    v.reasons.append("persister: not reporting yet")
                    v.waiting.append("persister (starting)")
                continue
            st = self.report(name)
            if st is None or not st.get("connected", False):
                why = f"{name}: not connected"
                v.reasons.append(why)
                v.local.append(why)
                v.waiting.append(f"{name} (connecting)")
                continue
            if pstats and queues_known and not storage["queues"].get(name, {}).get("attached", False):
                v.reasons.append(f"{name}: persist queue not attached")
                v.waiting.append(f"persister (attaching {name})")
        state = storage["state"]
        if state in STORAGE_NOT_OK:
            err = f" ({storage['last_error']})" if storage["last_error"] else ""
            why = f"storage: {state}{err}"
            v.reasons.append(why)
            v.external.append(why)
            if state != "connecting":
                v.unhealthy.append(why)
        for p, q in storage["queues"].items():
            if q["lag_s"] > cfg.persister.max_lag_s:
                why = f"{p}: persist lag {q['lag_s']:.1f} s > persister.max_lag_s {cfg.persister.max_lag_s:g} s"
                v.reasons.append(why)
                v.external.append(why)
        return v

    def health_doc(self) -> dict:
        self.fresh()
        v = self.evaluate()
        return {
            "instance": self.cfg.instance,
            "uptime_s": round(time.time() - self.sup.started_at, 3),
            "ready": v.ready,
            "reasons": v.reasons,
            "healthy": not v.unhealthy,
            "children": {n: self.child_view(n, c) for n, c in self.sup.children.items()},
            "storage": self.storage(),
        }

    # -- metrics --------------------------------------------------------------------------------
    def collect(self):
        """prometheus_client custom collector: one family per metric, from the latest stats."""
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

        self.fresh()
        v = self.evaluate()
        up = GaugeMetricFamily("dm_child_up", "1 while the child process runs", labels=["child", "role"])
        failed = GaugeMetricFamily("dm_child_failed", "1 while the child is marked failed (crash loop, long backoff)", labels=["child", "role"])
        restarts = CounterMetricFamily("dm_child_restarts", "restarts since the supervisor started", labels=["child", "role"])
        for n, c in self.sup.children.items():
            up.add_metric([n, c.spec.role], 1.0 if c.state == "running" else 0.0)
            failed.add_metric([n, c.spec.role], 1.0 if c.state == "failed" else 0.0)
            restarts.add_metric([n, c.spec.role], c.restarts)
        yield from (up, failed, restarts)
        yield GaugeMetricFamily("dm_ready", "1 while /ready answers 200", value=1.0 if v.ready else 0.0)

        fam = {
            "connected": GaugeMetricFamily("dm_worker_connected", "1 while the venue connection is up", labels=["provider"]),
            "age": GaugeMetricFamily("dm_worker_last_frame_age_seconds", "seconds since the last frame was read", labels=["provider"]),
            "frames": CounterMetricFamily("dm_worker_frames", "frames read from the venue, by codec kind", labels=["provider", "kind"]),
            "records": CounterMetricFamily("dm_worker_records", "records published", labels=["provider"]),
            "channel": CounterMetricFamily("dm_channel_records", "records written to a channel ring", labels=["provider", "exchange", "symbol"]),
            "dead": CounterMetricFamily("dm_worker_dead_letters", "frames dead-lettered, by error kind", labels=["provider", "kind"]),
            "gaps": CounterMetricFamily("dm_worker_gaps", "gaps recorded in the ledger", labels=["provider"]),
            "reconnects": CounterMetricFamily("dm_worker_reconnects", "venue reconnections", labels=["provider"]),
            "resyncs": CounterMetricFamily("dm_worker_resyncs", "book resyncs requested", labels=["provider"]),
            "spool": GaugeMetricFamily("dm_worker_spool_bytes", "bytes in the persist queue's spool files", labels=["provider"]),
            "refused": GaugeMetricFamily("dm_worker_refused_symbols", "configured symbols the venue does not know (not carried)", labels=["provider"]),
            "values": CounterMetricFamily("dm_worker_value_errors", "values rejected alone (dead-lettered)", labels=["provider"]),
            "capture": GaugeMetricFamily("dm_worker_capture_failed", "1 when raw capture stopped on an error", labels=["provider"]),
        }
        now = self.clock()
        for n, c in self.sup.children.items():
            if c.spec.role != "worker":
                continue
            st = self.stats.get(n)
            if st is None:
                continue
            cur = self.report(n) is not None
            fam["connected"].add_metric([n], 1.0 if cur and st.get("connected") else 0.0)
            last = _num(st.get("last_frame_ns"))
            if last:
                fam["age"].add_metric([n], max(0.0, now - last / 1e9))
            for k, x in (st.get("frames_by_kind") or {}).items():
                fam["frames"].add_metric([n, str(k)], _num(x))
            fam["records"].add_metric([n], _num(st.get("records")))
            ex = str(st.get("exchange", ""))
            for s, x in (st.get("records_by_channel") or {}).items():
                fam["channel"].add_metric([n, ex, str(s)], _num(x))
            for k, x in (st.get("dead_letters_by_kind") or {}).items():
                fam["dead"].add_metric([n, str(k)], _num(x))
            fam["gaps"].add_metric([n], _num(st.get("gaps", st.get("book_gaps"))))
            fam["reconnects"].add_metric([n], _num(st.get("reconnects")))
            fam["resyncs"].add_metric([n], _num(st.get("resyncs", st.get("book_resyncs"))))
            fam["spool"].add_metric([n], _num(st.get("spool_bytes")))
            fam["refused"].add_metric([n], float(len(st.get("refused_symbols") or [])))
            fam["values"].add_metric([n], _num(st.get("value_errors")))
            fam["capture"].add_metric([n], 1.0 if st.get("capture_error") else 0.0)
        yield from fam.values()

        storage = self.storage()
        pq = {
            "attached": GaugeMetricFamily("dm_persist_attached", "1 while the persister has the provider's queue attached", labels=["provider"]),
            "pending": GaugeMetricFamily("dm_persist_pending_records", "records in the queue and spool not yet stored", labels=["provider"]),
            "lag": GaugeMetricFamily("dm_persist_lag_seconds", "age of the oldest record not yet stored", labels=["provider"]),
            "records": CounterMetricFamily("dm_persist_records", "records stored from the provider's queue", labels=["provider"]),
            "dead": CounterMetricFamily("dm_persist_dead_letters", "records storage refused (dead-lettered)", labels=["provider"]),
        }
        for p, q in storage["queues"].items():
            pq["attached"].add_metric([p], 1.0 if q["attached"] else 0.0)
            pq["pending"].add_metric([p], q["pending"])
            pq["lag"].add_metric([p], q["lag_s"])
            pq["records"].add_metric([p], q["records"])
            pq["dead"].add_metric([p], q["dead_letters"])
        yield from pq.values()
        rows = CounterMetricFamily("dm_storage_rows", "rows inserted, by table", labels=["table"])
        for t, n in storage["rows"].items():
            rows.add_metric([t], n)
        yield rows
        state = GaugeMetricFamily("dm_storage_state", "1 for the storage state the persister reports", labels=["state"])
        for s in ("ok", "connecting", "failing", "hung", "unknown"):
            state.add_metric([s], 1.0 if storage["state"] == s else 0.0)
        yield state
        hist = self._latency()
        if hist is not None:
            buckets, total = hist
            h = HistogramMetricFamily("dm_storage_write_latency_seconds", "storage write (one batch transaction) latency")
            h.add_metric([], buckets=buckets, sum_value=total)
            yield h

    def _latency(self):
        """The persister's write latency histogram as sorted cumulative (le, count) buckets
        ending in +Inf, and the sum; None when it reports none."""
        s = self.persister_stats().get("storage")
        h = s.get("write_latency_s") if isinstance(s, dict) else None
        if not isinstance(h, dict) or not isinstance(h.get("buckets"), dict):
            return None
        try:
            pairs = sorted((float(le), int(_num(n))) for le, n in h["buckets"].items())
        except ValueError:
            return None
        count = int(_num(h.get("count"), pairs[-1][1] if pairs else 0))
        out, running = [], 0
        for le, n in pairs:
            running = max(running, n)  # cumulative by contract; never let it decrease
            if le != float("inf"):
                out.append((_le(le), running))
        out.append(("+Inf", max(running, count)))
        return out, _num(h.get("sum"))


def _le(x: float) -> str:
    from prometheus_client.utils import floatToGoString

    return floatToGoString(x)


class Notifier:
    """systemd notifications driven by ``Health`` verdicts: READY=1 once, STATUS= on change,
    WATCHDOG=1 at half ``$WATCHDOG_USEC`` while the verdict allows it."""

    def __init__(self, health: Health, clock=time.monotonic):
        self.health = health
        self.cfg = health.cfg
        self.clock = clock
        self.t0 = clock()
        self.ready_sent = False
        self.status = ""
        usec = int(os.environ.get("WATCHDOG_USEC", "0") or 0)
        wpid = os.environ.get("WATCHDOG_PID", "")
        self.watchdog_s = usec / 2e6 if usec and (not wpid or wpid == str(os.getpid())) else 0.0
        self.last_pet = 0.0
        self.withheld = False

    def tick(self) -> Verdict:
        h = self.health
        h.refresh()
        v = h.evaluate()
        now = self.clock()
        if not self.ready_sent:
            if not v.waiting:
                self.ready_sent = True
                sd_notify("READY=1")
                log.info("ready", reasons=v.reasons or None)
            elif now - self.t0 >= self.cfg.supervisor.ready_timeout_s:
                self.ready_sent = True
                sd_notify("READY=1")
                log.warning("ready without every worker connected (supervisor.ready_timeout_s)", waiting=v.waiting)
        self._status(v)
        if self.ready_sent and self.watchdog_s:
            ok = v.watchdog_ok(self.cfg.supervisor.fail_fast)
            if ok and now - self.last_pet >= self.watchdog_s:
                sd_notify("WATCHDOG=1")
                self.last_pet = now
            if ok == self.withheld:
                self.withheld = not ok
                if ok:
                    log.info("watchdog resumed")
                else:
                    log.error("watchdog withheld: not ready", reasons=v.reasons)
        return v

    def _status(self, v: Verdict) -> None:
        if not self.ready_sent:
            text = "starting: waiting for " + ", ".join(v.waiting)
        elif v.ready:
            n = sum(1 for c in self.health.sup.children.values() if c.spec.role == "worker")
            text = f"ready: {n} worker(s) connected, storage {self.health.storage()['state']}"
        else:
            text = "degraded: " + "; ".join(v.reasons)
        if text != self.status:
            self.status = text
            sd_notify("STATUS=" + text[:1000])
