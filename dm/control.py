"""Runtime control: subscribe and unsubscribe symbols while the service runs.

One Unix socket per instance (``[control] socket``, default ``run_dir/<instance>/control.sock``,
mode ``0660``, group ``[control] group`` if set) takes one request per line and answers one JSON
object per line. A request is JSON or the equivalent text form::

    {"op": "subscribe", "symbol": "ETHUSD@KRAKEN", "persist_only": false, "save": false}
    SUBSCRIBE ETHUSD@KRAKEN [persist-only] [save]
    {"op": "unsubscribe", "symbol": "ETHUSD@KRAKEN"}          UNSUBSCRIBE ETHUSD@KRAKEN [save]
    {"op": "list"}                                           LIST
    {"op": "status"}                                         STATUS

Answers: ``{"ok": true, ...}`` or ``{"ok": false, "error": "<one line>"}``. ``SUBSCRIBE``
answers once the channel exists, is registered and the venue's subscribe message went out on
the worker's live socket (no reconnect, no restart); records follow as the venue sends them.

The supervisor owns the instance socket and routes a request by exchange to the worker(s)
whose ``[providers.X] exchange`` matches; each worker listens on its own socket
(``run_dir/<instance>/<provider>.ctl.sock``) and applies the change
(:meth:`dm.providers.base.Provider.add_symbol` / ``remove_symbol``). The config stays the source
of truth at start; ``save`` writes the change back into the config file (tomlkit keeps its
comments and layout).

Errors a caller sees (``ok: false``): unknown symbol or exchange, a symbol already carried /
not carried, a venue without runtime subscription, a full channel budget
(``[control] max_channels``), a worker that does not answer within ``[control] timeout_s``.
"""
from __future__ import annotations

import asyncio
import grp
import json
import os
import socket
import time
from pathlib import Path
from typing import Any

from dm import log as dmlog
from dm.errors import ConfigError, DmError

log = dmlog.get("dm.control")

OPS = ("subscribe", "unsubscribe", "list", "status")
DEFAULTS = {"enabled": True, "socket": "", "group": "", "mode": "0660", "timeout_s": 10.0,
            "unsubscribe_grace_s": 5.0, "max_channels": 1000}
MAX_LINE = 64 * 1024


class ControlError(DmError):
    """A control request failed (the message is the answer's ``error``)."""


def parse_control_section(table: dict) -> dict:
    """Validate ``[control]``: enabled (bool), socket (path), group (name), mode (octal string),
    timeout_s (s), unsubscribe_grace_s (s), max_channels (int). Raises ``ConfigError`` naming
    the key."""
    out = dict(DEFAULTS)
    for k, v in table.items():
        if k not in DEFAULTS:
            raise ConfigError(f"control.{k}: unknown key (known: {', '.join(DEFAULTS)})")
        want = type(DEFAULTS[k])
        if want is float and isinstance(v, int) and not isinstance(v, bool):
            v = float(v)
        if not isinstance(v, want) or (want is int and isinstance(v, bool)):
            raise ConfigError(f"control.{k}: expected {want.__name__}, got {type(v).__name__} {v!r}")
        out[k] = v
    try:
        int(out["mode"], 8)
    except ValueError:
        raise ConfigError(f"control.mode: not an octal mode: {out['mode']!r}") from None
    return out


def settings(cfg) -> dict:
    """The ``[control]`` settings of a loaded config (defaults filled in)."""
    return parse_control_section(dict(cfg.sections.get("control", {})))


def socket_path(cfg) -> Path:
    """The instance's control socket."""
    s = settings(cfg)["socket"]
    return Path(s) if s else cfg.instance_dir / "control.sock"


def worker_socket_path(cfg, provider: str) -> Path:
    return cfg.instance_dir / f"{provider}.ctl.sock"


def parse_request(line: bytes | str) -> dict:
    """One request line (JSON or text form) → ``{"op", "symbol", "exchange", "persist_only",
    "save"}``. Raises ``ControlError`` for a malformed request."""
    if isinstance(line, bytes):
        line = line.decode("utf-8", "replace")
    line = line.strip()
    if not line:
        raise ControlError("empty request")
    if line.startswith("{"):
        try:
            req = json.loads(line)
        except ValueError as e:
            raise ControlError(f"request is not JSON: {e}") from None
        if not isinstance(req, dict):
            raise ControlError("request must be a JSON object")
        op = str(req.get("op", req.get("cmd", ""))).lower()
        target = req.get("symbol")
        persist_only, save = bool(req.get("persist_only", False)), bool(req.get("save", False))
        exchange = req.get("exchange")
    else:
        words = line.split()
        op, target = words[0].lower(), (words[1] if len(words) > 1 else None)
        flags = {w.lower() for w in words[2:]}
        bad = flags - {"persist-only", "save"}
        if bad:
            raise ControlError(f"unknown flag(s) {sorted(bad)} (known: persist-only, save)")
        persist_only, save, exchange = "persist-only" in flags, "save" in flags, None
    if op not in OPS:
        raise ControlError(f"unknown op {op!r} (known: {', '.join(o.upper() for o in OPS)})")
    out = {"op": op, "persist_only": persist_only, "save": save}
    if op in ("subscribe", "unsubscribe"):
        if not target or not isinstance(target, str):
            raise ControlError(f"{op.upper()} needs SYMBOL@EXCHANGE")
        sym, _, ex = target.partition("@")
        ex = ex or (exchange or "")
        if not sym or not ex:
            raise ControlError(f"{op.upper()} needs SYMBOL@EXCHANGE, got {target!r}")
        out.update(symbol=sym.strip().upper(), exchange=ex.strip().upper())
    return out


def _answer(obj: dict) -> bytes:
    return json.dumps(obj, separators=(",", ":"), default=str).encode() + b"\n"


async def _serve_lines(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, handle) -> None:
    try:
        while True:
            try:
                line = await reader.readline()
            except (asyncio.LimitOverrunError, ValueError):
                writer.write(_answer({"ok": False, "error": f"request longer than {MAX_LINE} bytes"}))
                break
            if not line:
                break
            try:
                ans = await handle(parse_request(line))
            except (ControlError, DmError, ValueError, NotImplementedError) as e:
                ans = {"ok": False, "error": str(e).splitlines()[0] if str(e) else type(e).__name__}
            except Exception as e:  # noqa: BLE001 - one bad request never stops the server
                log.exception("control request failed")
                ans = {"ok": False, "error": f"{type(e).__name__}: {e}"}
            writer.write(_answer(ans))
            await writer.drain()
    except (ConnectionError, asyncio.IncompleteReadError):
        pass
    finally:
        writer.close()


async def start_unix_server(path: Path, handle, mode: int = 0o660, group: str = "") -> asyncio.AbstractServer:
    """Serve ``handle(request) -> answer`` on a Unix socket at ``path`` (a stale socket file is
    replaced; a live one raises ``ControlError``)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists():
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            probe.connect(str(path))
            raise ControlError(f"control socket {path} is in use by a running process")
        except (ConnectionRefusedError, FileNotFoundError):
            path.unlink(missing_ok=True)
        finally:
            probe.close()
    server = await asyncio.start_unix_server(lambda r, w: _serve_lines(r, w, handle), path=str(path), limit=MAX_LINE)
    os.chmod(path, mode)
    if group:
        try:
            os.chown(path, -1, grp.getgrnam(group).gr_gid)
        except (KeyError, PermissionError) as e:
            log.error("control socket group not applied", group=group, error=repr(e))
    return server


async def ask(path: Path, req: dict, timeout_s: float = 10.0) -> dict:
    """Send one request to a control socket and return its answer (async)."""
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_unix_connection(str(path), limit=1 << 24), timeout_s)
    except (FileNotFoundError, ConnectionRefusedError) as e:
        raise ControlError(f"no control socket at {path} ({type(e).__name__}): is the service running?") from None
    try:
        writer.write(_answer(req))
        await writer.drain()
        line = await asyncio.wait_for(reader.readline(), timeout_s)
    except asyncio.TimeoutError:
        raise ControlError(f"no answer from {path} within {timeout_s} s") from None
    finally:
        writer.close()
    if not line:
        raise ControlError(f"{path} closed the connection without an answer")
    return json.loads(line)


def request(path: Path | str, req: dict | str, timeout_s: float = 30.0) -> dict:
    """Blocking client: send ``req`` (dict or request line) to the control socket at ``path``,
    return the answer dict. Raises ``ControlError`` when nothing listens there."""
    body = req if isinstance(req, str) else json.dumps(req)
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(timeout_s)
    try:
        try:
            s.connect(str(path))
        except (FileNotFoundError, ConnectionRefusedError) as e:
            raise ControlError(f"no control socket at {path} ({type(e).__name__}): is the service running?") from None
        s.sendall(body.encode() + b"\n")
        buf = b""
        while not buf.endswith(b"\n"):
            chunk = s.recv(1 << 16)
            if not chunk:
                break
            buf += chunk
    except socket.timeout:
        raise ControlError(f"no answer from {path} within {timeout_s} s") from None
    finally:
        s.close()
    if not buf:
        raise ControlError(f"{path} closed the connection without an answer")
    return json.loads(buf)


# -- worker side ---------------------------------------------------------------------------------
class WorkerControl:
    """A worker's control endpoint: applies subscribe / unsubscribe / list to its provider."""

    def __init__(self, provider, grace_s: float):
        self.p = provider
        self.grace_s = grace_s
        self.server: asyncio.AbstractServer | None = None

    async def start(self) -> None:
        path = worker_socket_path(self.p.cfg, self.p.name)
        self.server = await start_unix_server(path, self.handle, 0o600)

    async def handle(self, req: dict) -> dict:
        p, op = self.p, req["op"]
        if op == "subscribe":
            return {"ok": True, **await p.add_symbol(req["symbol"], persist_only=req.get("persist_only", False))}
        if op == "unsubscribe":
            return {"ok": True, **await p.remove_symbol(req["symbol"], grace_s=self.grace_s)}
        if op == "list":
            return {"ok": True, "provider": p.name, "symbols": p.carried()}
        if op == "status":
            return {"ok": True, "provider": p.name, "stats": p.stats()}
        raise ControlError(f"unknown op {op!r}")

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()
            worker_socket_path(self.p.cfg, self.p.name).unlink(missing_ok=True)


# -- supervisor side -----------------------------------------------------------------------------
class SupervisorControl:
    """The instance's control socket in the supervisor: routes requests to workers by exchange,
    answers LIST (every worker's symbols) and STATUS (the health document), enforces the
    channel budget and writes ``save`` requests back into the config file."""

    def __init__(self, supervisor):
        self.sup = supervisor
        self.cfg = supervisor.cfg
        self.settings = settings(self.cfg)
        self.path = socket_path(self.cfg)
        self.server: asyncio.AbstractServer | None = None
        self.requests = 0

    async def start(self) -> None:
        self.server = await start_unix_server(self.path, self.handle, int(self.settings["mode"], 8), self.settings["group"])
        log.info("control socket listening", path=str(self.path))

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()
            self.path.unlink(missing_ok=True)

    def providers_of(self, exchange: str) -> list[str]:
        return [p.name for p in self.cfg.enabled_providers if p.exchange.upper() == exchange.upper()]

    async def _worker(self, name: str, req: dict) -> dict:
        return await ask(worker_socket_path(self.cfg, name), req, float(self.settings["timeout_s"]))

    async def _all(self, req: dict) -> dict[str, dict]:
        names = [p.name for p in self.cfg.enabled_providers]
        got = await asyncio.gather(*(self._worker(n, req) for n in names), return_exceptions=True)
        return {n: (g if isinstance(g, dict) else {"ok": False, "error": str(g)}) for n, g in zip(names, got)}

    async def handle(self, req: dict) -> dict:
        self.requests += 1
        op = req["op"]
        t0 = time.monotonic()
        if op == "status":
            return {"ok": True, "health": self.sup.health_doc()}
        if op == "list":
            answers = await self._all({"op": "list"})
            symbols = [s for a in answers.values() if a.get("ok") for s in a["symbols"]]
            errors = {n: a["error"] for n, a in answers.items() if not a.get("ok")}
            return {"ok": True, "symbols": symbols, "channels": sum(1 for s in symbols if s["channel"]), "errors": errors}
        names = self.providers_of(req["exchange"])
        if not names:
            known = sorted({p.exchange.upper() for p in self.cfg.enabled_providers})
            raise ControlError(f"no enabled provider for exchange {req['exchange']} (exchanges: {', '.join(known)})")
        if op == "subscribe" and not req.get("persist_only"):
            listing = await self._all({"op": "list"})
            used = sum(1 for a in listing.values() if a.get("ok") for s in a["symbols"] if s["channel"])
            if used >= int(self.settings["max_channels"]):
                raise ControlError(f"channel budget full: {used} channels of [control] max_channels = "
                                   f"{self.settings['max_channels']} (subscribe persist-only, or unsubscribe first)")
        errors = []
        for name in names:  # the first provider of that exchange that knows the symbol takes it
            ans = await self._worker(name, req)
            if ans.get("ok"):
                if req.get("save"):
                    ans["saved"] = str(save_symbol(self.sup.config_path, name, req["symbol"], op == "subscribe"))
                log.info("control", op=op, symbol=req["symbol"], exchange=req["exchange"], provider=name,
                         took_ms=round((time.monotonic() - t0) * 1000, 1))
                return ans
            errors.append(f"{name}: {ans.get('error')}")
        raise ControlError("; ".join(errors))


def save_symbol(config_path: str | Path, provider: str, symbol: str, add: bool) -> Path:
    """Write a runtime change back into the config file: add ``symbol`` to (or remove it from)
    ``[providers.<provider>] symbols``; comments and layout are kept (tomlkit)."""
    import tomlkit

    path = Path(config_path)
    doc = tomlkit.parse(path.read_text())
    table = doc["providers"][provider]
    syms = table.get("symbols")
    if syms is None:
        syms = tomlkit.array()
        table["symbols"] = syms
    present = [str(s).upper() for s in syms]
    if add and symbol.upper() not in present:
        syms.append(symbol)
    elif not add:
        for i in reversed(range(len(syms))):
            if str(syms[i]).upper() == symbol.upper():
                del syms[i]
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(tomlkit.dumps(doc))
    os.replace(tmp, path)
    return path


def control_request(cfg, req: dict | str, timeout_s: float = 30.0) -> dict[str, Any]:
    """Blocking request to the instance's control socket of ``cfg``."""
    return request(socket_path(cfg), req, timeout_s)
