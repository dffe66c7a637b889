"""A local fake of Databento's Live Subscription Gateway (LSG), for dm's tests and users' own.

    with FakeLiveGateway("data/databento/glbx-mdp3-esu4-nqu4-20240701", key="db-TESTKEY") as gw:
        live = databento.Live("db-TESTKEY", gateway=gw.host, port=gw.port)   # the official client
        # or dm's worker: [providers.X] kind = "databento", ws_url = "tcp://127.0.0.1:PORT"
        gw.add_fault(LiveFault(after_records=100, action="rst"))

It serves the DBN files under ``data`` (indexed like the historical fake: ``dm.databento.fake.
DataStore``, every dataset × schema merged and sorted by index time, upgraded to DBN v3 layouts)
over plain TCP, speaking the Live API's raw protocol as Databento documents it (docs: "Live API →
Raw API", "Authentication", "Subscription"; wire details as the official client ``databento``
0.88 implements them in ``databento/live/gateway.py`` and ``protocol.py``, whose message classes
this module uses):

1. on connect the gateway sends ``lsg_version=<v>\\n`` then ``cram=<challenge>\\n``;
2. the client answers ``auth=<sha256(cram|key) hex>-<last 5 key chars>|dataset=D|encoding=dbn|
   ts_out=0|compression=none|[heartbeat_interval_s=N|]client=...\\n``; a wrong key (or unknown
   dataset, or anything but DBN without ts_out) gets ``success=0|error=<why>\\n`` and a close;
   a good one ``success=1|session_id=<n>\\n``;
3. the client sends subscription lines ``schema=S|stype_in=T|symbols=A,B|[start=<ns>|]
   snapshot=0|id=<n>|is_last=1\\n`` (at most 500 symbols a line), then ``start_session=0\\n``;
4. the gateway streams DBN: the metadata header (version 3 by default; schema and stype_in
   when every subscription shares them, else mixed), one SymbolMappingMsg per resolved symbol,
   a SystemMsg SUBSCRIPTION_ACK per subscription, an ErrorMsg SYMBOL_RESOLUTION_FAILED per symbol
   that does not resolve, then the records merged in index-time order, written in
   ``chunk_bytes`` pieces that do not respect record boundaries (like TCP segments do), then a
   SystemMsg heartbeat every ``heartbeat_interval_s`` (the client's, else 30 s) while nothing
   else is sent.

Which records a session gets ("live" in a recording): a subscription with ``start`` replays from
``start`` (index time, inclusive: Databento's intraday replay); one without starts at the
gateway's *live position*: after the index time of the last record earlier sessions were sent
(the start of the recording for the first session), moved on by a fault's ``skip_records``
(records that happened while the client was away: what it missed). ``close_at_end``: close (FIN) once everything was sent (the official
client's ``block_for_close`` then returns).

Faults (``LiveFault``, in-process ``add_fault`` or ``--live-fault JSON``), each for one session
(the next, or the ``session``-th connection): after N records ``fin`` (clean close), ``rst``
(abortive close: SO_LINGER 0) or ``silence`` (stop sending, heartbeats too, keep the socket
open); ``skip_records`` advances the live position by that many records when the fault fires;
``reject_auth`` answers the next authentication with ``success=0`` whatever the key.
``id_shift``: session N's instrument ids are the files' + (N - 1) x ``id_shift`` (mappings and
records): Databento's ids are only valid within a session's symbol mappings.
"""
from __future__ import annotations

import asyncio
import dataclasses
import json
import secrets
import socket
import struct
import threading
import time
from pathlib import Path
from typing import Any

import databento_dbn as dbn
import numpy as np
from databento.common.cram import get_challenge_response  # the official client's protocol pieces
from databento.live.gateway import AuthenticationResponse, ChallengeRequest, Greeting

from dm.databento.fake import DataStore

__all__ = ["LiveFault", "FakeLiveGateway", "LSG_VERSION"]

LSG_VERSION = "0.0.0-dm-fake"
DEFAULT_HEARTBEAT_S = 30


@dataclasses.dataclass
class LiveFault:
    """One scripted fault (see the module doc). ``action``: ``"fin"``, ``"rst"``, ``"silence"``
    (after ``after_records`` records of the session) or ``"reject_auth"``."""

    action: str
    after_records: int = 0
    session: int | None = None  # 1-based connection number; None: the next session
    skip_records: int = 0

    def __post_init__(self):
        if self.action not in ("fin", "rst", "silence", "reject_auth"):
            raise ValueError(f"LiveFault.action {self.action!r}: fin, rst, silence or reject_auth")

    @classmethod
    def from_dict(cls, d: dict) -> "LiveFault":
        return cls(**d)


def _parse_line(line: bytes) -> dict[str, str]:
    text = line.decode("utf-8", "replace").strip()
    return {k: v for k, _, v in (t.partition("=") for t in text.split("|")) if k}


class FakeLiveGateway:
    """The fake LSG (module doc). ``start()`` serves from a background thread (own event loop)
    and returns once listening; ``stop()``; a context manager; ``serve_forever()`` for the CLI.
    After start: ``host``, ``port``, ``address`` (``tcp://host:port``), ``stats``
    (``sessions``: one dict per connection: id, auth, dataset, subscriptions, records, ended)."""

    def __init__(self, data: str | Path | DataStore, key: str = "db-FAKEFAKEFAKEFAKEFAKEFAKEFAKEFAKE",
                 host: str = "127.0.0.1", port: int = 0, faults: list[LiveFault] | None = None,
                 version: int = 3, chunk_bytes: int = 65_521, close_at_end: bool = False, id_shift: int = 0,
                 heartbeat_s: float | None = None):
        if version not in (2, 3):
            raise ValueError("version: 2 or 3 (the record layouts served are the same in both)")
        self.store = data if isinstance(data, DataStore) else DataStore(data)
        self.key = key
        self.host = host
        self.port = port
        self.version = version
        self.chunk_bytes = max(1, int(chunk_bytes))
        self.close_at_end = close_at_end
        self.id_shift = int(id_shift)
        self.heartbeat_s = heartbeat_s  # overrides the client's heartbeat_interval_s (tests)
        self._faults: list[LiveFault] = list(faults or [])
        self._lock = threading.Lock()
        self.stats: dict[str, Any] = {"sessions": [], "auth_failures": 0}
        self._live_ts: dict[str, int] = {}  # dataset -> index time of the last record "happened"
        self._connections = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._started = threading.Event()
        self._stop: asyncio.Event | None = None
        self._error: BaseException | None = None
        self._writers: set = set()

    @property
    def address(self) -> str:
        return f"tcp://{self.host}:{self.port}"

    def add_fault(self, *faults: LiveFault) -> None:
        with self._lock:
            self._faults.extend(faults)

    def _take_fault(self, session: int, auth: bool) -> LiveFault | None:
        with self._lock:
            for i, f in enumerate(self._faults):
                if (f.action == "reject_auth") != auth:
                    continue
                if f.session is None or f.session == session:
                    return self._faults.pop(i)
        return None

    # -- life cycle ------------------------------------------------------------------------
    async def _serve(self) -> None:
        server = await asyncio.start_server(self._session, self.host, self.port, reuse_address=True)
        self.port = server.sockets[0].getsockname()[1]
        self._stop = asyncio.Event()
        self._started.set()
        try:
            await self._stop.wait()
        finally:
            server.close()
            for w in list(self._writers):
                w.transport.abort()
            await server.wait_closed()

    def _run(self) -> None:
        self._loop = asyncio.new_event_loop()
        try:
            self._loop.run_until_complete(self._serve())
        except BaseException as e:  # reported by start()
            self._error = e
            self._started.set()
        finally:
            self._loop.close()

    def start(self) -> "FakeLiveGateway":
        self._thread = threading.Thread(target=self._run, name="fake-databento-live", daemon=True)
        self._thread.start()
        self._started.wait(30)
        if self._error is not None:
            raise self._error
        return self

    def serve_forever(self, ready=None) -> None:
        """Serve in this thread until interrupted; ``ready(self)`` once listening."""
        self.start()
        if ready:
            ready(self)
        try:
            while self._thread.is_alive():
                self._thread.join(0.5)
        except KeyboardInterrupt:
            pass
        finally:
            self.stop()

    def stop(self) -> None:
        if self._loop is not None and self._stop is not None and self._thread and self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._stop.set)
            self._thread.join(10)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    # -- one session -----------------------------------------------------------------------
    async def _session(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        with self._lock:
            self._connections += 1
            sid = self._connections
        entry: dict[str, Any] = {"id": sid, "auth": False, "dataset": None, "subscriptions": [], "records": 0,
                                 "ended": None}
        with self._lock:
            self.stats["sessions"].append(entry)
        try:
            cram = secrets.token_urlsafe(24)
            writer.write(bytes(Greeting(lsg_version=LSG_VERSION)) + bytes(ChallengeRequest(cram=cram)))
            await writer.drain()
            req = _parse_line(await asyncio.wait_for(reader.readline(), 30))
            error = None
            if self._take_fault(sid, auth=True) is not None:
                error = "Authentication failed."
            elif req.get("auth") != get_challenge_response(cram, self.key):
                error = "Authentication failed."
            elif req.get("dataset") not in self.store.datasets():
                error = f"Unknown dataset {req.get('dataset')!r}."
            elif req.get("encoding", "dbn") != "dbn" or req.get("ts_out", "0") != "0" \
                    or req.get("compression", "none") not in ("none", ""):
                error = "This fake gateway serves DBN without ts_out or compression."
            if error is not None:
                with self._lock:
                    self.stats["auth_failures"] += 1
                entry["ended"] = "auth"
                writer.write(bytes(AuthenticationResponse(success="0", error=error)))
                await writer.drain()
                return
            entry["auth"], entry["dataset"] = True, req["dataset"]
            writer.write(bytes(AuthenticationResponse(success="1", session_id=str(sid))))
            await writer.drain()
            heartbeat = self.heartbeat_s or float(req.get("heartbeat_interval_s") or DEFAULT_HEARTBEAT_S)
            subs: list[dict[str, str]] = []
            while True:
                line = await reader.readline()
                if not line:
                    entry["ended"] = "client"
                    return
                msg = _parse_line(line)
                if "start_session" in msg:
                    break
                if "schema" in msg:
                    subs.append(msg)
            entry["subscriptions"] = subs
            await self._stream(reader, writer, entry, req["dataset"], subs, heartbeat)
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.TimeoutError):
            entry["ended"] = entry["ended"] or "client"  # a fault's name stays
        finally:
            self._writers.discard(writer)
            if not writer.transport.is_closing():
                writer.close()

    def _plan(self, dataset: str, subs: list[dict[str, str]], shift: int = 0):
        """→ (metadata bytes, control records bytes, [(table key, record indexes)]); ``shift`` is
        added to every instrument id of the session (symbol mappings and records)."""
        lo, hi = self.store.dataset_range(dataset)
        d0 = dbn_date(lo)
        d1 = dbn_date(hi)
        # subscriptions of one schema merge (several lines of ≤ 500 symbols)
        by_schema: dict[str, dict] = {}
        controls = []
        first_start = None
        for s in subs:
            schema, stype = s["schema"], s.get("stype_in", "raw_symbol")
            symbols = [x for x in s.get("symbols", "").split(",") if x]
            start = int(s["start"]) if s.get("start") not in (None, "") else None
            g = by_schema.setdefault(schema, {"iids": set(), "start": start, "stype": stype, "maps": []})
            if (schema, dataset) not in {(k[1], k[0]) for k in self.store.tables}:
                controls.append(bytes(dbn.ErrorMsg(ts_event=time.time_ns(), err=f"Schema {schema} is not served for {dataset}.",
                                                   code=dbn.ErrorCode.INVALID_SUBSCRIPTION, is_last=True)))
                continue
            if symbols == ["ALL_SYMBOLS"]:
                res = {raw: sorted(ivs) for raw, ivs in self.store.mappings[dataset].items()}
                not_found = []
            else:
                res, _, not_found = self.store.resolve(dataset, symbols, stype, d0, d1)
            for sym, ivs in res.items():
                for a, b, iid in ivs:
                    g["iids"].add(int(iid))
                    raw = sym if stype == "raw_symbol" else self._raw_of(dataset, int(iid)) or sym
                    g["maps"].append((sym, raw, int(iid)))
            for sym in not_found:
                controls.append(bytes(dbn.ErrorMsg(ts_event=time.time_ns(), err=f"Failed to resolve symbol: {sym}",
                                                   code=dbn.ErrorCode.SYMBOL_RESOLUTION_FAILED, is_last=True)))
            controls.append(bytes(dbn.SystemMsg(ts_event=time.time_ns(), code=dbn.SystemCode.SUBSCRIPTION_ACK,
                                                msg=f"Subscription request {s.get('id', len(controls))} for {schema} data succeeded")))
            if start is not None:
                first_start = start if first_start is None else min(first_start, start)
        plan = []
        maps = []
        for schema, g in by_schema.items():
            key = (dataset, schema)
            t = self.store.tables.get(key)
            if t is None:
                continue
            if g["start"] is not None:
                begin = int(np.searchsorted(t.ts, np.uint64(g["start"]), "left"))
            elif dataset in self._live_ts:
                begin = int(np.searchsorted(t.ts, np.uint64(self._live_ts[dataset]), "right"))
            else:
                begin = 0
            idx = np.arange(begin, len(t.ts))
            idx = idx[np.isin(t.iid[begin:], np.fromiter(g["iids"], np.uint32, len(g["iids"])))]
            plan.append((key, idx))
            maps += [(g["stype"], sym, raw, iid) for sym, raw, iid in g["maps"]]
        schemas = sorted(by_schema)
        stypes = sorted({g["stype"] for g in by_schema.values()})
        ts0 = first_start if first_start is not None else (
            min((int(self.store.tables[k].ts[i[0]]) for k, i in plan if len(i)), default=lo))
        meta = dbn.Metadata(dataset=dataset, start=ts0, stype_in=dbn.SType(stypes[0]) if len(stypes) == 1 else None,
                            stype_out=dbn.SType.INSTRUMENT_ID, schema=dbn.Schema(schemas[0]) if len(schemas) == 1 else None,
                            symbols=[], partial=[], not_found=[], mappings=[], end=None, limit=None, ts_out=False,
                            version=self.version).encode()
        pubs = {}
        for key, idx in plan:
            t = self.store.tables[key]
            for i in idx[:1]:
                pubs[key] = int(np.frombuffer(t.data[i].tobytes()[2:4], "<u2")[0])
        mapping_recs = b"".join(bytes(dbn.SymbolMappingMsg(
            publisher_id=next(iter(pubs.values()), 0), instrument_id=iid + shift, ts_event=ts0, stype_in=dbn.SType(stype),
            stype_in_symbol=sym, stype_out=dbn.SType.INSTRUMENT_ID, stype_out_symbol=raw, start_ts=ts0,
            end_ts=ts0 + 86_400 * 10**9)) for stype, sym, raw, iid in sorted(set(maps)))
        return meta, mapping_recs + b"".join(controls), plan

    def _raw_of(self, dataset: str, iid: int) -> str | None:
        for raw, ivs in self.store.mappings[dataset].items():
            if any(x[2] == iid for x in ivs):
                return raw
        return None

    async def _stream(self, reader, writer, entry, dataset, subs, heartbeat: float) -> None:
        shift = self.id_shift * (entry["id"] - 1)
        meta, controls, plan = self._plan(dataset, subs, shift)
        # merge the schemas' records by index time (stable: a schema's own order is kept)
        parts, ts, owners = [], [], []
        for n, (key, idx) in enumerate(plan):
            t = self.store.tables[key]
            parts.append((key, t, idx))
            ts.append(t.ts[idx])
            owners.append(np.full(len(idx), n, np.int32))
        if len(parts) == 1:
            all_ts, own = ts[0], owners[0]  # sorted already
        elif parts:
            all_ts = np.concatenate(ts)
            own = np.concatenate(owners)
            order = np.argsort(all_ts, kind="stable")
            own = own[order]
        else:
            own = np.zeros(0, np.int32)
        if len(parts) == 1:
            body = parts[0][1].data[parts[0][2]].tobytes()
            rec_len = np.full(len(own), parts[0][1].rec_len, np.int64)
        else:
            pos = [0] * len(parts)
            chunks, rec_len = [], []
            for o in own:
                _, t, idx = parts[o]
                chunks.append(t.data[idx[pos[o]]].tobytes())
                rec_len.append(t.rec_len)
                pos[o] += 1
            body = b"".join(chunks)
        rec_len = np.asarray(rec_len, np.int64)
        ends = np.cumsum(rec_len) if len(rec_len) else np.zeros(0, np.int64)
        if shift and len(ends):  # this session's instrument ids (u32 at byte 4 of each record)
            u8 = np.frombuffer(bytearray(body), np.uint8)
            at = (ends - rec_len + 4)[:, None] + np.arange(4)
            ids = u8[at].copy().view("<u4").ravel() + np.uint32(shift)
            u8[at] = ids.view(np.uint8).reshape(-1, 4)
            body = u8.tobytes()
        fault = self._take_fault(entry["id"], auth=False)
        n = len(own)
        stop_at = n if fault is None else min(n, fault.after_records)
        head = meta + controls
        cut = int(ends[stop_at - 1]) if stop_at else 0
        out = head + body[:cut]
        sent_records = 0
        for i in range(0, len(out), self.chunk_bytes):
            writer.write(out[i:i + self.chunk_bytes])
            await writer.drain()
            # records complete so far (for the stats and the live position)
            done = i + self.chunk_bytes - len(head)
            sent_records = int(np.searchsorted(ends, done, "right")) if done > 0 else 0
            entry["records"] = min(sent_records, stop_at)
        entry["records"] = stop_at
        # the live position: the time of the last record this session was sent (+ what happened
        # while the client is away: skip_records more of the merged stream)
        if parts and n:
            merged_ts = all_ts if len(parts) == 1 else np.sort(all_ts, kind="stable")
            last = stop_at - 1 + (fault.skip_records if fault is not None else 0)
            if last >= 0:
                t_last = int(merged_ts[min(last, n - 1)])
                self._live_ts[dataset] = max(self._live_ts.get(dataset, 0), t_last)
        if fault is not None:
            entry["ended"] = fault.action
            if fault.action == "fin":
                writer.write_eof() if writer.can_write_eof() else None
                writer.close()
                return
            if fault.action == "rst":
                sock = writer.get_extra_info("socket")
                if sock is not None:
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                writer.transport.abort()
                return
            # silence: keep the socket open, send nothing, until the client goes
            try:
                while await reader.read(65536):
                    pass
            except ConnectionError:
                pass
            return
        if self.close_at_end:
            entry["ended"] = "end"
            writer.close()
            return
        while True:  # live and quiet: heartbeats until the client goes
            try:
                data = await asyncio.wait_for(reader.read(65536), heartbeat)
                if not data:
                    entry["ended"] = "client"
                    return
            except asyncio.TimeoutError:
                writer.write(bytes(dbn.SystemMsg(ts_event=time.time_ns(), msg="Heartbeat", code=dbn.SystemCode.HEARTBEAT)))
                await writer.drain()


def dbn_date(ns: int):
    import datetime as _dt

    return _dt.date(1970, 1, 1) + _dt.timedelta(days=ns // 86_400_000_000_000)


def faults_from_json(text: str) -> list[LiveFault]:
    """``--live-fault`` values: a JSON object or list of objects of ``LiveFault`` fields."""
    d = json.loads(text)
    return [LiveFault.from_dict(x) for x in (d if isinstance(d, list) else [d])]
