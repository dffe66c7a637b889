"""A loopback TCP proxy in front of PostgreSQL that a test controls, for storage faults:

* ``forward``   — pass bytes both ways;
* ``refuse``    — stop listening (new connections get ECONNREFUSED) and reset every open
  connection (a server that went away);
* ``blackhole`` — keep every connection open and accept new ones, but pass no byte either way
  (a hung server or a silent network: the client's sends succeed, no answer ever comes);
* ``arm_copy_stall(after_commits=n)`` — one shot, in ``forward``: once clients have committed ``n``
  more transactions that ran a COPY, when a client next sends a COPY data message
  (PostgreSQL protocol ``CopyData``, type ``'d'``), pass the first half of it and then nothing more
  on that connection, so the server is provably in the middle of a ``COPY .. FROM STDIN`` when the
  test kills the client (``stalled`` is set, ``stalled_bytes`` says how much of the COPY reached
  the server).

Leaving ``blackhole`` or ``refuse`` closes the connections that lost bytes (their streams are
broken). The client must not use TLS (``sslmode=disable``) so the stall can find message
boundaries. Messages: PostgreSQL documentation, "Frontend/Backend Protocol — Message Formats".
"""
from __future__ import annotations

import select
import socket
import struct
import threading

SSL_REQUEST, GSSENC_REQUEST, PROTOCOL_3 = 80877103, 80877104, 196608


class PgProxy:
    def __init__(self, upstream_port: int, upstream_host: str = "127.0.0.1"):
        self.upstream = (upstream_host, upstream_port)
        self._lock = threading.Lock()
        self._mode = "forward"
        self._conns: set[_Conn] = set()
        self._listener: socket.socket | None = None
        self.port = 0
        self._stop = threading.Event()
        self._copy_stall_armed = False
        self._commits_to_pass = 0
        self.stalled = threading.Event()
        self.stalled_bytes = 0
        self.connections = 0
        self._listen()
        self._thread = threading.Thread(target=self._accept_loop, name="pgproxy", daemon=True)
        self._thread.start()

    # -- control -----------------------------------------------------------------------------
    @property
    def mode(self) -> str:
        return self._mode

    def set_mode(self, mode: str) -> None:
        assert mode in ("forward", "refuse", "blackhole"), mode
        with self._lock:
            old, self._mode = self._mode, mode
            conns = list(self._conns)
        if mode == "refuse":
            self._close_listener()
            for c in conns:
                c.close(reset=True)
        elif mode == "blackhole":
            for c in conns:
                c.blackholed = True
        if mode != "refuse" and self._listener is None:
            self._listen()
        if old in ("blackhole", "refuse") and mode == "forward":
            for c in conns:
                if c.blackholed:
                    c.close(reset=True)

    def arm_copy_stall(self, after_commits: int = 0) -> None:
        """Stall the first CopyData sent once ``after_commits`` more transactions that ran a
        COPY were committed (COMMIT by simple ``Query`` or extended ``Parse``). Armed before the client starts, the stall cannot be
        missed by a client that finishes its work before the test looks."""
        self.stalled.clear()
        with self._lock:
            self._copy_stall_armed = True
            self._commits_to_pass = after_commits

    def release(self) -> None:
        """Close stalled connections (they can never be resumed: half a message went through)."""
        with self._lock:
            conns = list(self._conns)
        for c in conns:
            if c.stalled:
                c.close(reset=True)

    def close(self) -> None:
        self._stop.set()
        self._close_listener()
        with self._lock:
            conns = list(self._conns)
        for c in conns:
            c.close(reset=True)

    # -- internals -----------------------------------------------------------------------------
    def _listen(self) -> None:
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", self.port))
        s.listen(64)
        s.settimeout(0.05)
        self.port = s.getsockname()[1]
        self._listener = s

    def _close_listener(self) -> None:
        s, self._listener = self._listener, None
        if s is not None:
            s.close()

    def _accept_loop(self) -> None:
        while not self._stop.is_set():
            s = self._listener
            if s is None:
                self._stop.wait(0.02)
                continue
            try:
                client, _ = s.accept()
            except (TimeoutError, socket.timeout):
                continue
            except OSError:
                self._stop.wait(0.01)
                continue
            self.connections += 1
            c = _Conn(self, client)
            with self._lock:
                self._conns.add(c)
                c.blackholed = self._mode == "blackhole"
            threading.Thread(target=c.run, name="pgproxy-conn", daemon=True).start()

    def _take_copy_stall(self) -> bool:
        with self._lock:
            if not self._copy_stall_armed or self._commits_to_pass > 0:
                return False
            self._copy_stall_armed = False
            return True

    def _commit_seen(self) -> None:
        with self._lock:
            if self._copy_stall_armed and self._commits_to_pass > 0:
                self._commits_to_pass -= 1

    def _gone(self, c: "_Conn") -> None:
        with self._lock:
            self._conns.discard(c)


class _Conn:
    def __init__(self, proxy: PgProxy, client: socket.socket):
        self.proxy = proxy
        self.client = client
        self.server: socket.socket | None = None
        self.blackholed = False
        self.stalled = False
        self.closed = False
        self._startup = True
        self._copied = False  # a COPY finished in the transaction now open
        self._buf = b""  # client → server bytes not yet forwarded (an incomplete message)

    def close(self, reset: bool = False) -> None:
        if self.closed:
            return
        self.closed = True
        for s in (self.client, self.server):
            if s is None:
                continue
            try:
                if reset:
                    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                s.close()
            except OSError:
                pass
        self.proxy._gone(self)

    def run(self) -> None:
        try:
            if not self.blackholed:
                self.server = socket.create_connection(self.proxy.upstream, timeout=5)
                self.server.settimeout(None)
            while not self.closed:
                socks = [self.client] + ([self.server] if self.server is not None else [])
                try:
                    ready, _, _ = select.select(socks, [], [], 0.05)
                except (OSError, ValueError):
                    break
                for s in ready:
                    data = s.recv(65536)
                    if not data:
                        raise ConnectionError("peer closed")
                    if self.blackholed or self.stalled:
                        continue  # swallowed: the sender never gets an answer
                    if s is self.client:
                        self._to_server(data)
                    else:
                        self.client.sendall(data)
        except (OSError, ConnectionError):
            pass
        finally:
            self.close()

    def _to_server(self, data: bytes) -> None:
        """Forward whole protocol messages; stall in the middle of a CopyData when armed."""
        self._buf += data
        out = bytearray()
        while True:
            if self._startup:  # untyped: int32 length (itself included), then int32 code
                if len(self._buf) < 8:
                    break
                n, code = struct.unpack_from("!ii", self._buf)
                if len(self._buf) < n:
                    break
                out += self._buf[:n]
                self._buf = self._buf[n:]
                if code == PROTOCOL_3:
                    self._startup = False
                continue
            if len(self._buf) < 5:
                break
            kind = self._buf[:1]
            n = struct.unpack_from("!i", self._buf, 1)[0] + 1
            if kind == b"d" and self.proxy._take_copy_stall():
                half = min(5 + (n - 5) // 2, len(self._buf))
                out += self._buf[:half]
                self.server.sendall(bytes(out))
                self.stalled = True
                self.proxy.stalled_bytes = len(out)
                self.proxy.stalled.set()
                return
            if len(self._buf) < n:
                break
            if kind == b"c":  # CopyDone
                self._copied = True
            elif kind in (b"Q", b"P") and self._copied and \
                    _query_text(kind, self._buf[5:n]).lstrip().upper().startswith(b"COMMIT"):
                self._copied = False
                self.proxy._commit_seen()
            out += self._buf[:n]
            self._buf = self._buf[n:]
        if out:
            self.server.sendall(bytes(out))


def _query_text(kind: bytes, body: bytes) -> bytes:
    """The SQL of a ``Query`` (the body is the text) or a ``Parse`` (statement name, then text;
    both NUL-terminated)."""
    if kind == b"P":
        body = body[body.find(b"\0") + 1:]
    return body[:body.find(b"\0")]
