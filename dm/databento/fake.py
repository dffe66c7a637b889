"""A local fake of Databento's historical HTTP gateway, for dm's tests and for users' own.

    dm fake-databento --data data/databento/glbx-mdp3-esu4-nqu4-20240701 --hist-port 8443 \\
        --key db-TESTKEY --usd-per-gb 2.5 --ca-file var/fake-ca.pem

    with FakeHistoricalGateway("data/databento", key="db-TESTKEY") as gw:   # in-process
        client = databento.Historical("db-TESTKEY", gateway=gw.url)          # with REQUESTS_CA_BUNDLE=gw.ca_file
        gw.add_fault(Fault("timeseries.get_range", status=429, retry_after=1))

It serves the DBN files found under ``--data`` (``*.dbn``, ``*.dbn.zst``; records of every file of
one dataset × schema merged, sorted by time, exact duplicates dropped, upgraded to DBN v3 like the
live service) the way the official client ``databento`` (0.88) expects the real gateway to:

* HTTPS only (the client always builds ``https://GATEWAY/v0/<group>.<method>``), with a local CA
  made by ``trustme`` (``ca_file``: make the client trust it, e.g. ``REQUESTS_CA_BUNDLE``);
* HTTP Basic auth, user = the API key, empty password; a wrong or missing key → 401;
* ``POST timeseries.get_range`` (form: dataset, start, end, symbols, schema, stype_in, stype_out,
  encoding=dbn, compression=zstd|none, limit): a DBN v3 stream (metadata + records), zstd
  compressed in flushed blocks (so a cut stream leaves a decodable prefix), chunked;
* ``POST metadata.get_record_count`` / ``get_billable_size`` / ``get_cost`` (same form),
  ``GET metadata.get_dataset_range``, ``GET metadata.list_datasets`` / ``list_schemas``,
  ``POST symbology.resolve``.

Semantics (Databento docs, "timeseries.get_range" and "metadata.get_billable_size"): ``start``
inclusive, ``end`` exclusive, filtering on ``ts_recv`` when the schema has it, else ``ts_event``;
times as ns integers, ``YYYY-MM-DD`` or ISO 8601; ≤ 2,000 symbols; ``ALL_SYMBOLS``; a request
outside the dataset's available range is a 422; a request where no symbol resolves is 422
``symbology_invalid_request`` ("None of the symbols could be resolved"); symbols that do not
resolve beside others that do are named in an ``X-Warning`` header. Errors are JSON
``{"detail": {"case", "message", "docs"}}`` (the shape the client parses); the ``case`` strings are
the fake's own names. 429 carries ``Retry-After`` (seconds).

Pricing: ``usd_per_gb`` dollars per 10^9 billable bytes, billable bytes = records × DBN record
size, so ``get_cost`` = records × record size × usd_per_gb / 1e9 (and in dm's nano-USD exactly
records × record size × usd_per_gb).

Symbology: raw symbols and instrument ids from the files' metadata mappings and definition
records. Parent ``ROOT.FUT`` selects the raw symbols ``ROOT`` + CME month code + year digits;
continuous ``ROOT.c.N`` the N-th of those by expiry (the fake's simplification: no roll calendar).
``instrument_id`` → ``raw_symbol`` resolution is supported (dm uses it for parent/continuous).

Scripted faults (``Fault``; in-process ``add_fault``, or ``POST /_fake/faults`` with a JSON list,
``--fault JSON`` on the command line): a status (401, 422, 429 + Retry-After, 5xx) for the next N
requests of a method, a stream cut after N records / N bytes / a fraction of the records (the
connection is aborted mid-body, as a network failure would), a stall before answering (client
timeouts). ``GET /_fake/stats`` (and ``.stats``) counts requests per method and lists every
``get_range`` with its window and what it sent.
"""
from __future__ import annotations

import asyncio
import base64
import dataclasses
import datetime as _dt
import json
import re
import ssl
import tempfile
import threading
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from dm.databento.times import NS_PER_DAY, iso, is_date, to_ns

__all__ = ["Fault", "FakeHistoricalGateway", "DataStore", "RECORD_SIZE"]

ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
MAX_SYMBOLS = 2000
#: DBN v3 record sizes of the schemas dm converts (databento/dbn rust/dbn/src/record.rs)
RECORD_SIZE = {"trades": 48, "mbp-1": 80, "tbbo": 80, "mbp-10": 368, "ohlcv-1s": 56, "ohlcv-1m": 56,
               "ohlcv-1h": 56, "ohlcv-1d": 56}
# rtypes whose layout is the same in DBN v1, v2 and v3 → served from the file's bytes as they are;
# value: byte offset of ts_recv (None: the schema has none, filter on ts_event)
_SAME_LAYOUT = {0x00: 32, 0x01: 32, 0x0A: 32, 0x20: None, 0x21: None, 0x22: None, 0x23: None}
_MONTHS = "FGHJKMNQUVXZ"
DOCS = "https://databento.com/docs/api-reference-historical/basics/errors"


@dataclasses.dataclass
class Fault:
    """One scripted fault for the next ``times`` requests of ``method`` (``"*"``: any; ``times``
    0: every request until cleared). Exactly what happens:

    * ``status`` (401, 422, 429, 500, 503, ...): that HTTP error in Databento's JSON shape
      (``case``/``message`` override the defaults; 429 carries ``Retry-After: retry_after``);
    * ``cut_after_records`` / ``cut_after_bytes`` / ``cut_fraction`` (get_range only): the stream
      stops after that many records (or compressed bytes, or that fraction of its records) and
      the connection is aborted without ending the chunked body;
    * ``stall_s``: wait that long before answering (a client timeout shorter than it fires);
    * ``skip``: let that many matching requests through first.
    """

    method: str = "*"
    status: int | None = None
    case: str = ""
    message: str = ""
    retry_after: int = 1
    cut_after_records: int | None = None
    cut_after_bytes: int | None = None
    cut_fraction: float | None = None
    stall_s: float = 0.0
    times: int = 1
    skip: int = 0

    @classmethod
    def from_dict(cls, d: dict) -> "Fault":
        names = {f.name for f in dataclasses.fields(cls)}
        bad = set(d) - names
        if bad:
            raise ValueError(f"unknown fault field(s) {sorted(bad)}; known: {sorted(names)}")
        return cls(**d)

    def is_cut(self) -> bool:
        return any(v is not None for v in (self.cut_after_records, self.cut_after_bytes, self.cut_fraction))


class ApiError(Exception):
    def __init__(self, status: int, case: str, message: str, headers: dict | None = None):
        super().__init__(message)
        self.status, self.case, self.message, self.headers = status, case, message, headers or {}


@dataclasses.dataclass
class _Table:
    """Records of one dataset × schema: raw DBN v3 bytes of fixed-size records sorted by ``ts``."""

    schema: str
    rec_len: int
    data: np.ndarray  # void records
    ts: np.ndarray  # u64 index time (ts_recv, or ts_event when the schema has none)
    iid: np.ndarray  # u32


class DataStore:
    """DBN files under a folder, indexed by dataset × schema, with their symbology."""

    def __init__(self, root: str | Path):
        import databento_dbn as dbn

        self.root = Path(root)
        files = sorted(p for p in self.root.rglob("*") if p.is_file() and (p.name.endswith(".dbn") or p.name.endswith(".dbn.zst")))
        if not files:
            raise FileNotFoundError(f"no *.dbn or *.dbn.zst files under {self.root}")
        parts: dict[tuple[str, str], list] = defaultdict(list)
        self.mappings: dict[str, dict[str, set]] = defaultdict(lambda: defaultdict(set))  # dataset -> raw -> {(d0, d1, iid)}
        self.files = [str(p) for p in files]
        for p in files:
            raw = _decompress(p.read_bytes())
            dec = dbn.DBNDecoder(upgrade_policy=dbn.VersionUpgradePolicy.UPGRADE_TO_V3)
            hl = 8 + int.from_bytes(raw[4:8], "little")
            dec.write(raw[:hl])
            meta = dec.decode()[0]
            dataset, schema = meta.dataset, str(meta.schema)
            for sym, ivs in meta.mappings.items():
                for iv in ivs:
                    if iv["symbol"].isdigit():
                        self.mappings[dataset][sym].add((iv["start_date"], iv["end_date"], int(iv["symbol"])))
            body = raw[hl:]
            if not body:
                continue
            rt = body[1]
            L = body[0] * 4
            u8 = np.frombuffer(body, np.uint8)
            if (rt in _SAME_LAYOUT and len(body) % L == 0 and (u8[::L] == body[0]).all()
                    and (u8[1::L] == rt).all()):
                off = _SAME_LAYOUT[rt]
                names, fmts, offs = ["iid", "ts_event"], ["<u4", "<u8"], [4, 8]
                if off is not None:
                    names.append("ts_recv"), fmts.append("<u8"), offs.append(off)
                view = np.frombuffer(body, np.dtype({"names": names, "formats": fmts, "offsets": offs, "itemsize": L}))
                ts = view["ts_recv"] if off is not None else view["ts_event"]
                parts[(dataset, schema)].append((L, np.frombuffer(body, np.dtype((np.void, L))), ts.copy(), view["iid"].copy()))
            else:  # other layouts/versions: through databento_dbn, upgraded to v3
                dec.write(body)
                recs = [r for r in dec.decode()]
                by_len: dict[int, list] = defaultdict(list)
                for r in recs:
                    if getattr(r, "rtype", None) is None:
                        continue
                    b = bytes(r)
                    ts = getattr(r, "ts_recv", None) or r.ts_event
                    by_len[len(b)].append((b, ts, r.instrument_id))
                    sym = getattr(r, "raw_symbol", None)
                    if sym:  # a definition: raw symbol of its day
                        d = _dt.date(1970, 1, 1) + _dt.timedelta(days=r.ts_recv // NS_PER_DAY)
                        self.mappings[dataset][sym].add((d, d + _dt.timedelta(days=1), r.instrument_id))
                for L2, rows in by_len.items():
                    parts[(dataset, schema)].append((
                        L2, np.frombuffer(b"".join(x[0] for x in rows), np.dtype((np.void, L2))),
                        np.array([x[1] for x in rows], np.uint64), np.array([x[2] for x in rows], np.uint32)))
        for dataset, syms in self.mappings.items():  # the same interval from several files: once
            for raw, ivs in syms.items():
                merged: list[list] = []
                for a, b, iid in sorted(ivs, key=lambda x: (x[2], x[0])):
                    if merged and merged[-1][2] == iid and a <= merged[-1][1]:
                        merged[-1][1] = max(merged[-1][1], b)
                    else:
                        merged.append([a, b, iid])
                syms[raw] = {tuple(m) for m in merged}
        self.tables: dict[tuple[str, str], _Table] = {}
        for key, ps in parts.items():
            L = ps[0][0]
            ps = [x for x in ps if x[0] == L]  # one record size per dataset × schema
            data = np.concatenate([x[1] for x in ps])
            ts = np.concatenate([x[2] for x in ps])
            iid = np.concatenate([x[3] for x in ps])
            order = np.argsort(ts, kind="stable")
            data, ts, iid = data[order], ts[order], iid[order]
            if len(data) > 1:  # the same record from several files (DBN v1/v2/v3 copies): once
                _, first = np.unique(data, return_index=True)
                keep = np.sort(first)
                data, ts, iid = data[keep], ts[keep], iid[keep]
            self.tables[key] = _Table(key[1], L, data, ts, iid)

    # -- catalogue ---------------------------------------------------------------------------
    def datasets(self) -> list[str]:
        return sorted({d for d, _ in self.tables})

    def schemas(self, dataset: str) -> list[str]:
        return sorted(s for d, s in self.tables if d == dataset)

    def schema_range(self, dataset: str, schema: str) -> tuple[int, int]:
        """Available [start, end): whole UTC days around the records."""
        t = self.tables[(dataset, schema)]
        return int(t.ts[0]) // NS_PER_DAY * NS_PER_DAY, (int(t.ts[-1]) // NS_PER_DAY + 1) * NS_PER_DAY

    def dataset_range(self, dataset: str) -> tuple[int, int]:
        rs = [self.schema_range(dataset, s) for s in self.schemas(dataset)]
        return min(r[0] for r in rs), max(r[1] for r in rs)

    # -- symbology ---------------------------------------------------------------------------
    def _raw_intervals(self, dataset: str, raw: str, d0: _dt.date, d1: _dt.date) -> list[tuple]:
        return sorted((max(a, d0), min(b, d1), iid) for a, b, iid in self.mappings[dataset].get(raw, ())
                      if a < d1 and b > d0)

    def _futures(self, dataset: str, root: str) -> list[str]:
        pat = re.compile(rf"^{re.escape(root)}([{_MONTHS}])(\d{{1,2}})$")

        def expiry(sym: str):
            m = pat.match(sym)
            return (int(m.group(2)), _MONTHS.index(m.group(1)))
        return sorted((s for s in self.mappings[dataset] if pat.match(s)), key=expiry)

    def resolve(self, dataset: str, symbols: list[str], stype_in: str, d0: _dt.date, d1: _dt.date
                ) -> tuple[dict[str, list[tuple]], list[str], list[str]]:
        """``({symbol: [(d0, d1, out)]}, partial, not_found)``; ``out`` is an instrument id (int)
        or, for ``stype_in="instrument_id"``, a raw symbol."""
        result: dict[str, list[tuple]] = {}
        for s in symbols:
            if stype_in == "raw_symbol":
                ivs = self._raw_intervals(dataset, s, d0, d1)
            elif stype_in == "parent":
                root, _, kind = s.rpartition(".")
                ivs = [] if kind != "FUT" else sorted(
                    iv for raw in self._futures(dataset, root) for iv in self._raw_intervals(dataset, raw, d0, d1))
            elif stype_in == "continuous":
                m = re.match(r"^(.+)\.c\.(\d+)$", s)
                futs = self._futures(dataset, m.group(1)) if m else []
                rank = int(m.group(2)) if m else 0
                ivs = self._raw_intervals(dataset, futs[rank], d0, d1) if rank < len(futs) else []
            elif stype_in == "instrument_id":
                ivs = sorted((max(a, d0), min(b, d1), raw) for raw, items in self.mappings[dataset].items()
                             for a, b, iid in items if str(iid) == s and a < d1 and b > d0)
            else:
                raise ApiError(422, "symbology_invalid_stype", f"stype_in {stype_in!r} is not supported by this gateway")
            result[s] = ivs
        not_found = [s for s, ivs in result.items() if not ivs]
        partial = [s for s, ivs in result.items() if ivs and (ivs[0][0] > d0 or ivs[-1][1] < d1)]
        return result, partial, not_found

    def select(self, dataset: str, schema: str, start: int, end: int, iids: set[int] | None,
               limit: int | None) -> tuple[_Table, np.ndarray]:
        t = self.tables[(dataset, schema)]
        lo, hi = np.searchsorted(t.ts, np.uint64(start), "left"), np.searchsorted(t.ts, np.uint64(end), "left")
        idx = np.arange(lo, hi)
        if iids is not None:
            idx = idx[np.isin(t.iid[lo:hi], np.fromiter(iids, np.uint32, len(iids)))]
        if limit:
            idx = idx[:limit]
        return t, idx


def _decompress(data: bytes) -> bytes:
    if not data.startswith(ZSTD_MAGIC):
        return data
    import zstandard

    out, rest = [], data
    while rest:
        d = zstandard.ZstdDecompressor().decompressobj()
        out.append(d.decompress(rest))
        rest = d.unused_data
    return b"".join(out)


def _date(ns: int) -> _dt.date:
    return _dt.date(1970, 1, 1) + _dt.timedelta(days=ns // NS_PER_DAY)


class _MappingInterval:  # duck-typed for databento_dbn.Metadata
    def __init__(self, start_date, end_date, symbol):
        self.start_date, self.end_date, self.symbol = start_date, end_date, symbol


class _SymbolMapping:
    def __init__(self, raw_symbol, intervals):
        self.raw_symbol, self.intervals = raw_symbol, intervals


class FakeHistoricalGateway:
    """The fake gateway (see the module doc). ``start()`` serves from a background thread (its own
    event loop) and returns once listening; ``stop()`` ends it; also a context manager.
    ``serve_forever()`` runs in the calling thread (the CLI). Attributes after start: ``port``,
    ``url`` (``https://127.0.0.1:PORT``), ``ca_file`` (PEM of the local CA), ``stats``."""

    def __init__(self, data: str | Path | DataStore, key: str = "db-FAKEFAKEFAKEFAKEFAKEFAKEFAKEFAKE",
                 usd_per_gb: float = 1.0, host: str = "127.0.0.1", port: int = 0,
                 ca_file: str | Path | None = None, faults: list[Fault] | None = None,
                 block_records: int = 16384):
        self.store = data if isinstance(data, DataStore) else DataStore(data)
        self.key = key
        self.usd_per_gb = float(usd_per_gb)
        self.host = host
        self.port = port
        self.block_records = block_records
        self._tmp = None
        if ca_file is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="dm-fake-databento-")
            ca_file = Path(self._tmp.name) / "ca.pem"
        self.ca_file = str(ca_file)
        self._faults: list[Fault] = list(faults or [])
        self._lock = threading.Lock()
        self.stats: dict[str, Any] = {}
        self.reset_stats()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner = None
        self._thread: threading.Thread | None = None
        self._started = threading.Event()
        self._stop: asyncio.Event | None = None
        self._error: BaseException | None = None

    # -- control -----------------------------------------------------------------------------
    @property
    def url(self) -> str:
        return f"https://{self.host}:{self.port}"

    def add_fault(self, *faults: Fault) -> None:
        with self._lock:
            self._faults.extend(faults)

    def clear_faults(self) -> None:
        with self._lock:
            self._faults.clear()

    def reset_stats(self) -> None:
        with self._lock:
            self.stats = {"requests": defaultdict(int), "get_range": [], "auth_failures": 0}

    def calls(self, method: str) -> int:
        """Requests of ``method`` (e.g. ``"timeseries.get_range"``) that passed authentication."""
        return self.stats["requests"].get(method, 0)

    def _take_fault(self, method: str) -> Fault | None:
        with self._lock:
            for i, f in enumerate(self._faults):
                if f.method in ("*", method):
                    if f.skip > 0:
                        f.skip -= 1
                        continue
                    if f.times == 1:
                        del self._faults[i]
                    elif f.times > 1:
                        f.times -= 1
                    return f
        return None

    def _ssl(self) -> ssl.SSLContext:
        import trustme

        ca = trustme.CA()
        cert = ca.issue_cert("127.0.0.1", "localhost", self.host)
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        cert.configure_cert(ctx)
        Path(self.ca_file).parent.mkdir(parents=True, exist_ok=True)
        ca.cert_pem.write_to_path(self.ca_file)
        return ctx

    async def _serve(self) -> None:
        from aiohttp import web

        app = web.Application(client_max_size=64 << 20)
        app.router.add_route("*", "/v0/{method}", self._handle)
        app.router.add_post("/_fake/faults", self._admin_faults)
        app.router.add_get("/_fake/stats", self._admin_stats)
        app.router.add_post("/_fake/reset", self._admin_reset)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port, ssl_context=self._ssl(), reuse_address=True)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]
        self._stop = asyncio.Event()
        self._started.set()
        try:
            await self._stop.wait()
        finally:
            await self._runner.cleanup()

    def _run(self) -> None:
        self._loop = asyncio.new_event_loop()
        try:
            self._loop.run_until_complete(self._serve())
        except BaseException as e:  # reported by start()
            self._error = e
            self._started.set()
        finally:
            self._loop.close()

    def start(self) -> "FakeHistoricalGateway":
        self._thread = threading.Thread(target=self._run, name="fake-databento", daemon=True)
        self._thread.start()
        self._started.wait(30)
        if self._error is not None:
            raise self._error
        return self

    def serve_forever(self, ready=None) -> None:
        """Serve in this thread until interrupted; ``ready(self)`` is called once listening."""
        self._thread = threading.Thread(target=self._run, name="fake-databento", daemon=True)
        self._thread.start()
        self._started.wait(30)
        if self._error is not None:
            raise self._error
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
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    # -- HTTP --------------------------------------------------------------------------------
    def _error_response(self, e: ApiError):
        from aiohttp import web

        body = {"detail": {"case": e.case, "message": e.message, "docs": DOCS}}
        return web.json_response(body, status=e.status, headers=e.headers)

    def _auth_ok(self, request) -> bool:
        h = request.headers.get("Authorization", "")
        if not h.startswith("Basic "):
            return False
        try:
            user, _, pw = base64.b64decode(h[6:]).decode().partition(":")
        except (ValueError, UnicodeDecodeError):
            return False
        return user == self.key and pw == ""

    async def _handle(self, request):
        from aiohttp import web

        method = request.match_info["method"]
        try:
            if not self._auth_ok(request):
                with self._lock:
                    self.stats["auth_failures"] += 1
                raise ApiError(401, "auth_invalid_key", "Authentication failed: check the API key (HTTP Basic, key as user, empty password).")
            with self._lock:
                self.stats["requests"][method] += 1
            fault = self._take_fault(method)
            if fault is not None and fault.stall_s:
                await asyncio.sleep(fault.stall_s)
            if fault is not None and fault.status is not None:
                raise self._fault_error(fault)
            handler = _HANDLERS.get((request.method, method))
            if handler is None:
                raise ApiError(404, "not_found", f"no such method: {request.method} /v0/{method}")
            params = dict(request.query)
            if request.method == "POST":
                params.update({k: v for k, v in (await request.post()).items() if isinstance(v, str)})
            if method == "timeseries.get_range":
                return await self._get_range(request, params, fault if fault is not None and fault.is_cut() else None)
            return web.json_response(handler(self, params))
        except ApiError as e:
            return self._error_response(e)

    @staticmethod
    def _fault_error(f: Fault) -> ApiError:
        s = f.status
        defaults = {
            401: ("auth_invalid_key", "Authentication failed."),
            402: ("payment_required", "Issue with the account's payment information."),
            403: ("forbidden", "The API key has insufficient permissions."),
            422: ("unprocessable", "The request is well formed but cannot be processed."),
            429: ("rate_limit_exceeded", "API rate limit exceeded."),
            500: ("internal_error", "Unexpected condition in the gateway."),
            503: ("service_unavailable", "Data gateway is offline or overloaded."),
            504: ("gateway_timeout", "Data gateway timed out."),
        }
        case, msg = defaults.get(s, ("error", f"HTTP {s}"))
        headers = {"Retry-After": str(f.retry_after)} if s == 429 else {}
        return ApiError(s, f.case or case, f.message or msg, headers)

    async def _admin_faults(self, request):
        from aiohttp import web

        if not self._auth_ok(request):
            return self._error_response(ApiError(401, "auth_invalid_key", "Authentication failed."))
        try:
            faults = [Fault.from_dict(d) for d in await request.json()]
        except (ValueError, TypeError) as e:
            return self._error_response(ApiError(422, "bad_fault", str(e)))
        self.add_fault(*faults)
        return web.json_response({"faults": len(self._faults)})

    async def _admin_stats(self, request):
        from aiohttp import web

        with self._lock:
            return web.json_response({"requests": dict(self.stats["requests"]), "get_range": list(self.stats["get_range"]),
                                      "auth_failures": self.stats["auth_failures"]})

    async def _admin_reset(self, request):
        from aiohttp import web

        self.reset_stats()
        self.clear_faults()
        return web.json_response({"ok": True})

    # -- request parsing ---------------------------------------------------------------------
    def _query(self, p: dict, need_end: bool = True) -> dict:
        dataset = p.get("dataset", "")
        if dataset not in self.store.datasets():
            raise ApiError(422, "dataset_invalid", f"Unknown dataset {dataset!r}; this gateway serves {self.store.datasets()}.")
        schema = p.get("schema", "trades")
        if (dataset, schema) not in self.store.tables:
            raise ApiError(422, "schema_unavailable", f"Schema {schema!r} is not available for {dataset}; have {self.store.schemas(dataset)}.")
        try:
            start = to_ns(p["start"])
            if p.get("end") not in (None, ""):
                end = to_ns(p["end"])
            elif is_date(p["start"]):  # forward filled: a date means that day
                end = start + NS_PER_DAY
            else:
                raise ApiError(422, "end_required", "This gateway needs `end` unless `start` is a date.")
        except KeyError:
            raise ApiError(422, "start_required", "`start` is required.") from None
        except ValueError as e:
            raise ApiError(422, "datetime_invalid", str(e)) from None
        lo, hi = self.store.schema_range(dataset, schema)
        if start >= end:
            raise ApiError(422, "data_start_after_end", f"`start` ({iso(start)}) must be before `end` ({iso(end)}).")
        if start < lo:
            raise ApiError(422, "data_start_before_available_start", f"`start` {iso(start)} is before the available start {iso(lo)} of {dataset} {schema}.")
        if end > hi:
            raise ApiError(422, "data_end_after_available_end", f"`end` {iso(end)} is after the available end {iso(hi)} of {dataset} {schema}.")
        stype_in = p.get("stype_in", "raw_symbol")
        stype_out = p.get("stype_out", "instrument_id")
        if stype_out != "instrument_id":
            raise ApiError(422, "symbology_invalid_stype", f"stype_out {stype_out!r}: this gateway outputs instrument_id only.")
        symbols = [s for s in p.get("symbols", "").split(",") if s] or ["ALL_SYMBOLS"]
        if len(symbols) > MAX_SYMBOLS:
            raise ApiError(422, "symbols_too_many", f"{len(symbols)} symbols: at most {MAX_SYMBOLS} per request.")
        limit = p.get("limit")
        try:
            limit = int(limit) if limit not in (None, "") else None
        except ValueError:
            raise ApiError(422, "limit_invalid", f"`limit` must be an integer, got {limit!r}") from None
        q = {"dataset": dataset, "schema": schema, "start": start, "end": end, "stype_in": stype_in,
             "stype_out": stype_out, "symbols": symbols, "limit": limit, "warnings": [],
             "partial": [], "not_found": [], "mappings": {}}
        d0, d1 = _date(start), _date(end - 1) + _dt.timedelta(days=1)
        if symbols == ["ALL_SYMBOLS"]:
            q["iids"] = None
            q["mappings"] = {raw: self.store._raw_intervals(dataset, raw, d0, d1) for raw in self.store.mappings[dataset]}
            return q
        result, partial, not_found = self.store.resolve(dataset, symbols, stype_in, d0, d1)
        if len(not_found) == len(symbols):
            raise ApiError(422, "symbology_invalid_request", "None of the symbols could be resolved.")
        if not_found:
            q["warnings"].append(f"SymbologyWarning: The following symbols could not be resolved: {', '.join(not_found)}")
        q.update(iids={iid for ivs in result.values() for _, _, iid in ivs}, partial=partial, not_found=not_found,
                 mappings={s: ivs for s, ivs in result.items() if ivs})
        return q

    def _counts(self, q: dict) -> tuple[int, int]:
        t, idx = self.store.select(q["dataset"], q["schema"], q["start"], q["end"], q["iids"], q["limit"])
        return len(idx), len(idx) * t.rec_len

    # -- methods -----------------------------------------------------------------------------
    def _record_count(self, p: dict) -> int:
        return self._counts(self._query(p))[0]

    def _billable_size(self, p: dict) -> int:
        return self._counts(self._query(p))[1]

    def _cost(self, p: dict) -> float:
        return self._counts(self._query(p))[1] * self.usd_per_gb / 1e9

    def _dataset_range(self, p: dict) -> dict:
        dataset = p.get("dataset", "")
        if dataset not in self.store.datasets():
            raise ApiError(422, "dataset_invalid", f"Unknown dataset {dataset!r}.")
        lo, hi = self.store.dataset_range(dataset)
        per = {s: {"start": iso(a), "end": iso(b)} for s in self.store.schemas(dataset)
               for a, b in [self.store.schema_range(dataset, s)]}
        return {"start": iso(lo), "end": iso(hi), "schema": per}

    def _list_datasets(self, p: dict) -> list[str]:
        return self.store.datasets()

    def _list_schemas(self, p: dict) -> list[str]:
        return self.store.schemas(p.get("dataset", ""))

    def _resolve(self, p: dict) -> dict:
        dataset = p.get("dataset", "")
        if dataset not in self.store.datasets():
            raise ApiError(422, "dataset_invalid", f"Unknown dataset {dataset!r}.")
        symbols = [s for s in p.get("symbols", "").split(",") if s]
        if not symbols:
            raise ApiError(422, "symbols_required", "`symbols` is required.")
        stype_in, stype_out = p.get("stype_in", "raw_symbol"), p.get("stype_out", "instrument_id")
        want = "raw_symbol" if stype_in == "instrument_id" else "instrument_id"
        if stype_out != want:
            raise ApiError(422, "symbology_invalid_combination", f"{stype_in} → {stype_out} is not supported.")
        try:
            d0 = _dt.date.fromisoformat(p["start_date"])
            d1 = _dt.date.fromisoformat(p["end_date"]) if p.get("end_date") else d0 + _dt.timedelta(days=1)
        except (KeyError, ValueError) as e:
            raise ApiError(422, "date_invalid", f"start_date/end_date: {e}") from None
        result, partial, not_found = self.store.resolve(dataset, symbols, stype_in, d0, d1)
        status = 2 if not_found else (1 if partial else 0)
        return {
            "result": {s: [{"d0": a.isoformat(), "d1": b.isoformat(), "s": str(o)} for a, b, o in ivs] for s, ivs in result.items()},
            "symbols": symbols, "stype_in": stype_in, "stype_out": stype_out,
            "start_date": d0.isoformat(), "end_date": d1.isoformat(), "partial": partial, "not_found": not_found,
            "message": ["OK", "Partially resolved", "Not found"][status], "status": status,
        }

    async def _get_range(self, request, p: dict, fault: Fault | None):
        import databento_dbn as dbn
        import zstandard
        from aiohttp import web

        q = self._query(p)
        if p.get("encoding", "dbn") != "dbn":
            raise ApiError(422, "encoding_unsupported", "This gateway streams DBN only.")
        compression = p.get("compression", "zstd")
        if compression not in ("zstd", "none"):
            raise ApiError(422, "compression_unsupported", f"compression {compression!r}")
        t, idx = self.store.select(q["dataset"], q["schema"], q["start"], q["end"], q["iids"], q["limit"])
        mappings = [_SymbolMapping(s, [_MappingInterval(a, b, str(iid)) for a, b, iid in ivs])
                    for s, ivs in sorted(q["mappings"].items())]
        meta = dbn.Metadata(q["dataset"], q["start"], dbn.SType(q["stype_in"]), dbn.SType.INSTRUMENT_ID,
                            dbn.Schema(q["schema"]), q["symbols"], q["partial"], q["not_found"], mappings,
                            q["end"], q["limit"], False, 3).encode()
        n = len(idx)
        cut_records = None
        if fault is not None:
            if fault.cut_after_records is not None:
                cut_records = min(n, fault.cut_after_records)
            elif fault.cut_fraction is not None:
                cut_records = min(n, int(n * fault.cut_fraction))
        headers = {"Content-Type": "application/octet-stream"}
        if q["warnings"]:
            headers["X-Warning"] = json.dumps(q["warnings"])
        resp = web.StreamResponse(status=200, headers=headers)
        resp.enable_chunked_encoding()
        await resp.prepare(request)
        entry = {"dataset": q["dataset"], "schema": q["schema"], "start": q["start"], "end": q["end"],
                 "symbols": q["symbols"], "stype_in": q["stype_in"], "records": 0, "bytes": 0, "cut": False}
        with self._lock:
            self.stats["get_range"].append(entry)
        comp = zstandard.ZstdCompressor(level=1).compressobj() if compression == "zstd" else None
        sent = 0
        limit_bytes = fault.cut_after_bytes if fault is not None else None

        async def send(raw: bytes, final: bool = False) -> bool:
            nonlocal sent
            out = raw if comp is None else comp.compress(raw) + comp.flush(
                zstandard.COMPRESSOBJ_FLUSH_FINISH if final else zstandard.COMPRESSOBJ_FLUSH_BLOCK)
            if limit_bytes is not None and sent + len(out) >= limit_bytes:
                await resp.write(out[: max(0, limit_bytes - sent)])
                sent = limit_bytes
                return False
            await resp.write(out)
            sent += len(out)
            return True

        ok = await send(meta, final=(n == 0 and cut_records is None))
        stop_at = n if cut_records is None else cut_records
        i = 0
        while ok and i < stop_at:
            j = min(stop_at, i + self.block_records)
            ok = await send(t.data[idx[i:j]].tobytes(), final=(j == n and cut_records is None))
            entry["records"] = j
            i = j
        entry["bytes"] = sent
        if not ok or cut_records is not None:
            entry["cut"] = True
            request.transport.abort()  # a network failure mid-body: no final chunk
            return resp
        await resp.write_eof()
        return resp


_HANDLERS = {
    ("POST", "timeseries.get_range"): FakeHistoricalGateway._get_range,
    ("POST", "metadata.get_record_count"): FakeHistoricalGateway._record_count,
    ("POST", "metadata.get_billable_size"): FakeHistoricalGateway._billable_size,
    ("POST", "metadata.get_cost"): FakeHistoricalGateway._cost,
    ("GET", "metadata.get_dataset_range"): FakeHistoricalGateway._dataset_range,
    ("GET", "metadata.list_datasets"): FakeHistoricalGateway._list_datasets,
    ("GET", "metadata.list_schemas"): FakeHistoricalGateway._list_schemas,
    ("POST", "symbology.resolve"): FakeHistoricalGateway._resolve,
}
