"""Raw capture: every frame a worker receives, every message it sends and every REST answer it
reads, written in the recording format the replay server reads (format 2, cryptofeed's JSONL
recorder, ``dm.recording``), zstd-compressed and rotated, so a live session can be replayed
(``dm replay FILE``) and audited later.

``[capture]`` (an extension section of the config)::

    enabled = true
    dir = "var/capture"     # files: <dir>/<instance>/<provider>/<provider>-<YYYYmmddTHHMMSS>.jsonl.zst
    rotate_s = 3600         # a new file every hour (UTC, aligned on the period)
    level = 3               # zstd level

One JSON object per line: ``{"t": "connect", "conn": C, "ts": S, "url": URL}``,
``{"t": "send", "conn": C, "ts": S, "url": URL, "data": TEXT}``, ``{"t": "recv", "conn": C,
"ts": S, "data": TEXT}``, ``{"t": "http", "ts": S, "url": URL, "data": BODY}`` with ``ts`` in
float seconds since the UNIX epoch (the receive time the worker stamped). Each second (the
worker's housekeeping) ends a zstd frame, so a file is readable up to the last second even when
the worker was killed. URLs on a loopback host (a session captured from the replay server) are
written under the venue's own host, so the capture replays like a live one.
"""
from __future__ import annotations

import os
import time
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import orjson

from dm import log as dmlog
from dm.errors import ConfigError

log = dmlog.get("dm.capture")

DEFAULTS = {"enabled": False, "dir": "var/capture", "rotate_s": 3600, "level": 3}
_LOOPBACK = {"127.0.0.1", "localhost", "::1"}


def parse_capture_section(table: dict) -> dict:
    """Validate ``[capture]`` (keys as in the module docstring). Raises ``ConfigError`` naming
    the key."""
    out = dict(DEFAULTS)
    for k, v in table.items():
        if k not in DEFAULTS:
            raise ConfigError(f"capture.{k}: unknown key (known: {', '.join(DEFAULTS)})")
        want = type(DEFAULTS[k])
        if not isinstance(v, want) or (want is int and isinstance(v, bool)):
            raise ConfigError(f"capture.{k}: expected {want.__name__}, got {type(v).__name__} {v!r}")
        out[k] = v
    if out["rotate_s"] < 1:
        raise ConfigError("capture.rotate_s: must be >= 1")
    if not 1 <= out["level"] <= 22:
        raise ConfigError("capture.level: must be 1..22")
    return out


class Capture:
    """One provider's capture files. ``frame`` is called once per received frame (the hot
    path: one small dict, orjson, zstd's streaming compressor)."""

    def __init__(self, directory: Path, provider: str, venue_host: str, rotate_s: int = 3600, level: int = 3):
        import zstandard

        self.dir = directory
        self.provider = provider
        self.venue_host = venue_host
        self.rotate_s = rotate_s
        self._cctx = zstandard.ZstdCompressor(level=level)
        self._flush_frame = zstandard.FLUSH_FRAME
        self._fh = None
        self._writer = None
        self._period_end = 0.0
        self.path: Path | None = None
        self.files: list[Path] = []
        self.lines = 0
        self.error = ""  # set when writing failed: capture stops, the worker's data path does not
        self.bytes_in = 0
        self.dir.mkdir(parents=True, exist_ok=True)

    @classmethod
    def from_config(cls, cfg, pcfg, venue_host: str) -> "Capture | None":
        table = cfg.sections.get("capture")
        if not table:
            return None
        st = parse_capture_section(dict(table))
        if not st["enabled"]:
            return None
        return cls(Path(st["dir"]) / cfg.instance / pcfg.name, pcfg.name, venue_host, st["rotate_s"], st["level"])

    def url(self, url: str) -> str:
        """``url`` as written: a loopback host becomes the venue's own (scheme, path and query kept)."""
        u = urlsplit(url)
        if u.hostname in _LOOPBACK and self.venue_host:
            scheme = {"ws": "wss", "http": "https"}.get(u.scheme, u.scheme)
            return urlunsplit((scheme, self.venue_host, u.path or "/", u.query, u.fragment))
        return url

    def _open(self, now: float) -> None:
        self._close_file()
        start = now - (now % self.rotate_s)
        self._period_end = start + self.rotate_s
        stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime(start))
        path = self.dir / f"{self.provider}-{stamp}.jsonl.zst"
        k = 1
        while path.exists():  # a restarted worker never appends to its predecessor's file
            path = self.dir / f"{self.provider}-{stamp}-{k}.jsonl.zst"
            k += 1
        self._fh = open(path, "wb")
        self._writer = self._cctx.stream_writer(self._fh, closefd=False)
        self.path = path
        self.files.append(path)
        log.info("capture file opened", provider=self.provider, path=str(path))

    def _write(self, obj: dict, ts: float) -> None:
        if self.error:
            return
        try:
            if ts >= self._period_end:
                self._open(ts)
            line = orjson.dumps(obj) + b"\n"
            self._writer.write(line)
        except Exception as e:  # noqa: BLE001 - a full disk costs the capture, never the feed
            self._fail(e)
            return
        self.lines += 1
        self.bytes_in += len(line)

    def _fail(self, e: BaseException) -> None:
        self.error = f"{type(e).__name__}: {e}"
        log.error("capture stopped; the feed goes on without it", provider=self.provider,
                  path=str(self.path), error=self.error)

    @staticmethod
    def _text(data) -> str:
        if isinstance(data, str):
            return data
        return bytes(data).decode("utf-8", "replace")

    def connect(self, conn: int, url: str, ts_ns: int) -> None:
        ts = ts_ns / 1e9
        self._write({"t": "connect", "conn": conn, "ts": ts, "url": self.url(url)}, ts)

    def sent(self, conn: int, url: str, text: str, ts_ns: int) -> None:
        ts = ts_ns / 1e9
        self._write({"t": "send", "conn": conn, "ts": ts, "url": self.url(url), "data": text}, ts)

    def frame(self, conn: int, data, ts_ns: int) -> None:
        ts = ts_ns / 1e9
        self._write({"t": "recv", "conn": conn, "ts": ts, "data": self._text(data)}, ts)

    def rest(self, url: str, body, ts_ns: int) -> None:
        ts = ts_ns / 1e9
        self._write({"t": "http", "ts": ts, "url": self.url(url), "data": self._text(body)}, ts)

    def flush(self) -> None:
        """End the current zstd frame and hand it to the OS (readable after a kill -9)."""
        if self._writer is not None and not self.error:
            try:
                self._writer.flush(self._flush_frame)
                self._fh.flush()
            except Exception as e:  # noqa: BLE001
                self._fail(e)

    def _close_file(self) -> None:
        if self._writer is not None:
            w, fh, self._writer, self._fh = self._writer, self._fh, None, None
            try:
                if not self.error:
                    w.flush(self._flush_frame)
                w.close()
                fh.close()
            except Exception as e:  # noqa: BLE001
                if not self.error:
                    self._fail(e)

    def close(self) -> None:
        self._close_file()


class CapturingSocket:
    """Wraps a worker's websocket (aiohttp or picows) so what the venue code sends is captured
    too; everything else is the socket's own."""

    def __init__(self, ws, capture: Capture, conn: int, url: str):
        self._ws = ws
        self._cap = capture
        self._conn = conn
        self._url = url

    async def send_str(self, text: str, *a, **kw):
        from dm._ring import now_ns

        self._cap.sent(self._conn, self._url, text, now_ns())
        return await self._ws.send_str(text, *a, **kw)

    def __getattr__(self, name):
        return getattr(self._ws, name)


def capturing_response_class(capture: Capture):
    """An ``aiohttp.ClientResponse`` subclass whose body reads are captured (``ClientSession(
    response_class=...)``): every REST answer the worker reads, reference data and snapshots."""
    import aiohttp

    from dm._ring import now_ns

    class CapturingResponse(aiohttp.ClientResponse):
        async def read(self) -> bytes:
            body = await super().read()
            if self.status == 200:
                capture.rest(str(self.url), body, now_ns())
            return body

    return CapturingResponse
