"""The shm service registry (DESIGN.md section 3): which dm worker serves which symbols.

``/dm.registry`` (name configurable) is a POSIX shm segment of 64 slots, one per worker. A slot
holds the dm instance id, provider, exchange, channel prefix, canonical symbols, the worker's pid,
a heartbeat (ns since the UNIX epoch, CLOCK_REALTIME) and its registration time. Workers claim a
slot with compare-and-swap on the slot's ``owner_pid`` word, heartbeat every 5 s and clear the
slot on graceful shutdown. A slot is *stale* when its heartbeat is older than 30 s or its pid is
gone; a stale slot is reclaimed (CAS from the old pid) when a worker needs one. Clients map the
registry read-only (``Registry.open_readonly``).

Creating, initialising and unlinking the segment are serialised with ``flock`` on the segment
file; a process that locked a file another process unlinked meanwhile sees ``st_nlink == 0`` and
retries, so the last ``release()`` can unlink the registry without racing a new ``register()``.

Layout (little-endian): a 64-byte header, then ``SLOTS`` slots of ``SLOT_BYTES`` each::

    header: magic u64 | version u32 | slots u32 | slot_bytes u32
    slot:   0 owner_pid u32   CAS by registrants (0 = free); release store 0 by the owner on release
            8 gen u64         owner: seqlock over the text fields (odd while writing)
           16 heartbeat_ns u64  owner, release store
           24 registered_ns u64 owner, under gen
           32 pid u32, nsym u32, 40 sym_bytes u32
           48 instance[32] 80 provider[32] 112 exchange[32] 144 prefix[128]
          272 symbols: comma-joined UTF-8, up to SLOT_BYTES - 272 bytes
"""
from __future__ import annotations

import fcntl
import mmap
import os
import struct
import time
from dataclasses import dataclass

from dm._ring import fence, load_u32, load_u64, now_ns, pid_alive, store_u32, store_u64, cas_u32
from dm.errors import RegistryError  # re-exported for callers

DEFAULT_NAME = "/dm.registry"
SLOTS = 64
SLOT_BYTES = 1 << 16
HEADER_BYTES = 64
SIZE = HEADER_BYTES + SLOTS * SLOT_BYTES
MAGIC = int.from_bytes(b"DMREGST1", "little")
VERSION = 1
STALE_AFTER_S = 30.0
HEARTBEAT_EVERY_S = 5.0

_OWNER, _GEN, _HB, _REG, _PID, _NSYM, _SYMLEN = 0, 8, 16, 24, 32, 36, 40
_TEXT = {"instance": (48, 32), "provider": (80, 32), "exchange": (112, 32), "prefix": (144, 128)}
_SYMS = 272
_SYM_CAP = SLOT_BYTES - _SYMS
_HDR = struct.Struct("<QIII")


@dataclass(frozen=True)
class Entry:
    """One registered worker as seen by a reader. ``heartbeat_ns``/``registered_ns``: ns since
    the UNIX epoch; ``stale``: heartbeat older than 30 s or pid gone."""

    slot: int
    instance: str
    provider: str
    exchange: str
    prefix: str
    symbols: tuple[str, ...]
    pid: int
    heartbeat_ns: int
    registered_ns: int
    stale: bool


def _path(name: str) -> str:
    if not name.startswith("/") or "/" in name[1:] or len(name) < 2:
        raise RegistryError(f"bad registry name {name!r}: must be '/' + a name without '/'")
    return "/dev/shm/" + name[1:]


def _enc(field: str, value: str, cap: int) -> bytes:
    b = value.encode()
    if len(b) > cap or b"\0" in b:
        raise RegistryError(f"registry {field} {value!r} does not fit in {cap} bytes")
    return b.ljust(cap, b"\0")


def _enc_symbols(symbols) -> tuple[bytes, int]:
    syms = tuple(symbols)
    for s in syms:
        if not s or "," in s:
            raise RegistryError(f"bad symbol {s!r} (empty or contains ',')")
    b = ",".join(syms).encode()
    if len(b) > _SYM_CAP:
        raise RegistryError(f"{len(syms)} symbols ({len(b)} bytes) do not fit in a slot ({_SYM_CAP})")
    return b, len(syms)


class Slot:
    """A worker's claimed slot. Call ``heartbeat()`` every ~5 s, ``release()`` on shutdown."""

    def __init__(self, reg: Registry, fd: int, mm: mmap.mmap, index: int):
        self._reg = reg
        self._fd = fd
        self._mm = mm
        self.index = index
        self._base = HEADER_BYTES + index * SLOT_BYTES
        self._pid = os.getpid()

    def _check(self):
        if self._mm is None:
            raise RegistryError("slot was released")
        if load_u32(self._mm, self._base + _OWNER) != self._pid:
            raise RegistryError(f"registry slot {self.index} was reclaimed by another worker")

    def _write(self, fields: dict, symbols=None):
        """Seqlock write of the slot's text fields (readers retry while gen is odd)."""
        mm, b = self._mm, self._base
        gen = load_u64(mm, b + _GEN)
        store_u64(mm, b + _GEN, gen + 1 if gen % 2 == 0 else gen)
        fence()
        for k, v in fields.items():
            off, cap = _TEXT[k]
            mm[b + off:b + off + cap] = _enc(k, v, cap)
        if symbols is not None:
            data, n = symbols
            mm[b + _SYMS:b + _SYMS + len(data)] = data
            struct.pack_into("<II", mm, b + _NSYM, n, len(data))
        fence()
        store_u64(mm, b + _GEN, (gen | 1) + 1)

    def heartbeat(self) -> None:
        """Store now (ns) as the slot heartbeat. Raises RegistryError if the slot was reclaimed."""
        self._check()
        store_u64(self._mm, self._base + _HB, now_ns())

    def update_symbols(self, symbols) -> None:
        """Replace the slot's canonical symbols (e.g. after a SUBSCRIBE)."""
        self._check()
        self._write({}, _enc_symbols(symbols))
        store_u64(self._mm, self._base + _HB, now_ns())

    def release(self) -> None:
        """Clear the slot (graceful shutdown); unlink the registry when no slot is in use.
        Idempotent."""
        if self._mm is None:
            return
        mm, fd = self._mm, self._fd
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            if load_u32(mm, self._base + _OWNER) == self._pid:
                gen = load_u64(mm, self._base + _GEN)
                store_u64(mm, self._base + _GEN, gen | 1)
                fence()
                mm[self._base + _HB:self._base + SLOT_BYTES] = bytes(SLOT_BYTES - _HB)
                fence()
                store_u64(mm, self._base + _GEN, (gen | 1) + 1)
                store_u32(mm, self._base + _OWNER, 0)
            in_use = any(load_u32(mm, HEADER_BYTES + i * SLOT_BYTES) for i in range(SLOTS))
            if not in_use and os.fstat(fd).st_nlink > 0:
                os.unlink(self._reg.path)
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
            self._mm = None
            mm.close()
            os.close(fd)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.release()

    def __repr__(self):
        return f"<Slot {self.index} of {self._reg.name}>"


class Registry:
    """``Registry(name="/dm.registry")`` for workers (``register``) and readers (``entries``,
    ``find``); ``Registry.open_readonly(name)`` for clients (reading only, mapped PROT_READ)."""

    def __init__(self, name: str = DEFAULT_NAME, *, stale_after_s: float = STALE_AFTER_S,
                 readonly: bool = False):
        self.name = name
        self.path = _path(name)
        self.stale_after_s = stale_after_s
        self.readonly = readonly
        self._ro: mmap.mmap | None = None
        self._ro_ident = None

    @classmethod
    def open_readonly(cls, name: str = DEFAULT_NAME, **kw) -> Registry:
        """A client's read-only view. The segment need not exist yet (``entries()`` is then [])."""
        return cls(name, readonly=True, **kw)

    # ---------------------------------------------------------------------------- writers

    def _open_locked(self) -> tuple[int, mmap.mmap]:
        """Open or create the segment and return it flock'ed (LOCK_EX) and mapped read-write."""
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o640)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                st = os.fstat(fd)
                if st.st_nlink == 0:  # unlinked by the last release() between open and flock
                    os.close(fd)
                    continue
                if st.st_size == 0:
                    os.fchmod(fd, 0o640)
                    os.ftruncate(fd, SIZE)
                elif st.st_size != SIZE:
                    raise RegistryError(f"{self.name}: size {st.st_size} != {SIZE}: not a dm registry")
                mm = mmap.mmap(fd, SIZE)
                magic, version, slots, slot_bytes = _HDR.unpack_from(mm, 0)
                if magic == 0:
                    struct.pack_into("<III", mm, 8, VERSION, SLOTS, SLOT_BYTES)  # then magic, last
                    store_u64(mm, 0, MAGIC)
                elif (magic, version, slots, slot_bytes) != (MAGIC, VERSION, SLOTS, SLOT_BYTES):
                    mm.close()
                    raise RegistryError(f"{self.name}: not a version {VERSION} dm registry")
                return fd, mm
            except BaseException:
                try:
                    fcntl.flock(fd, fcntl.LOCK_UN)
                    os.close(fd)
                except OSError:
                    pass
                raise

    def _slot_stale(self, mm, base: int, owner: int) -> bool:
        if not pid_alive(owner):
            return True
        hb = load_u64(mm, base + _HB)
        return hb != 0 and now_ns() - hb > self.stale_after_s * 1e9

    def register(self, instance: str, provider: str, exchange: str, prefix: str, symbols) -> Slot:
        """Claim a slot for this worker process and publish its fields; returns the ``Slot``.

        A stale slot of the same (instance, provider) is reused, else a free slot, else any
        stale slot. Raises ``RegistryError`` when a live worker already registered the same
        (instance, provider), when all 64 slots are live, or when a field does not fit."""
        if self.readonly:
            raise RegistryError(f"{self.name}: opened read-only")
        syms = _enc_symbols(symbols)
        fields = {"instance": instance, "provider": provider, "exchange": exchange, "prefix": prefix}
        for k, v in fields.items():
            _enc(k, v, _TEXT[k][1])
        me = os.getpid()
        fd, mm = self._open_locked()
        try:
            free, stale, same = [], [], []
            for i in range(SLOTS):
                base = HEADER_BYTES + i * SLOT_BYTES
                owner = load_u32(mm, base + _OWNER)
                if owner == 0:
                    free.append((i, 0))
                    continue
                e = self._read_slot(mm, i)
                is_stale = self._slot_stale(mm, base, owner)
                if e is not None and (e.instance, e.provider) == (instance, provider):
                    if not is_stale and owner != me:
                        raise RegistryError(
                            f"{self.name}: {instance}/{provider} is already registered by live pid {owner}")
                    same.append((i, owner))
                elif is_stale:
                    stale.append((i, owner))
            for i, owner in same + free + stale:
                base = HEADER_BYTES + i * SLOT_BYTES
                if cas_u32(mm, base + _OWNER, owner, me):
                    slot = Slot(self, fd, mm, i)
                    t = now_ns()
                    store_u64(mm, base + _HB, t)
                    gen = load_u64(mm, base + _GEN)
                    store_u64(mm, base + _GEN, gen | 1)
                    fence()
                    mm[base + _REG:base + _REG + 8] = struct.pack("<Q", t)
                    struct.pack_into("<I", mm, base + _PID, me)
                    slot._write(fields, syms)
                    return slot
            raise RegistryError(f"{self.name}: all {SLOTS} slots are held by live workers")
        except BaseException:
            mm.close()
            os.close(fd)
            raise
        finally:
            try:
                fcntl.flock(fd, fcntl.LOCK_UN)
            except OSError:
                pass

    # ---------------------------------------------------------------------------- readers

    def _map_ro(self) -> mmap.mmap | None:
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            self._close_ro()
            return None
        ident = (st.st_dev, st.st_ino)
        if self._ro is not None and ident == self._ro_ident:
            return self._ro
        self._close_ro()
        if st.st_size != SIZE:
            return None  # being created
        try:
            fd = os.open(self.path, os.O_RDONLY)
        except FileNotFoundError:
            return None
        try:
            mm = mmap.mmap(fd, SIZE, prot=mmap.PROT_READ)
        finally:
            os.close(fd)
        if load_u64(mm, 0) != MAGIC:
            mm.close()
            return None
        self._ro, self._ro_ident = mm, ident
        return mm

    def _close_ro(self):
        if self._ro is not None:
            self._ro.close()
            self._ro = None
            self._ro_ident = None

    def _read_slot(self, mm, i: int) -> Entry | None:
        base = HEADER_BYTES + i * SLOT_BYTES
        for _ in range(10000):
            owner = load_u32(mm, base + _OWNER)
            if owner == 0:
                return None
            g1 = load_u64(mm, base + _GEN)
            if g1 == 0:
                return None  # claimed, fields not published yet
            if g1 % 2:
                time.sleep(0)
                continue
            raw = bytes(mm[base:base + _SYMS])
            _, _, _, hb, reg, pid, nsym, symlen = struct.unpack_from("<IIQQQIII", raw, 0)
            syms = bytes(mm[base + _SYMS:base + _SYMS + min(symlen, _SYM_CAP)])
            fence()
            if load_u64(mm, base + _GEN) != g1:
                continue
            text = {k: raw[off:off + cap].rstrip(b"\0").decode() for k, (off, cap) in _TEXT.items()}
            symbols = tuple(syms.decode().split(",")) if nsym else ()
            hb = load_u64(mm, base + _HB)
            stale = not pid_alive(pid) or (now_ns() - hb) > self.stale_after_s * 1e9
            return Entry(slot=i, symbols=symbols, pid=pid, heartbeat_ns=hb, registered_ns=reg,
                         stale=stale, **text)
        return None  # a writer died mid-update: treat as absent

    def entries(self, include_stale: bool = False) -> list[Entry]:
        """Registered workers in slot order; stale ones only with ``include_stale``."""
        mm = self._map_ro()
        if mm is None:
            return []
        out = []
        for i in range(SLOTS):
            e = self._read_slot(mm, i)
            if e is not None and (include_stale or not e.stale):
                out.append(e)
        return out

    def find(self, symbol: str, exchange: str) -> Entry | None:
        """The live worker streaming canonical ``symbol`` on ``exchange`` (exchange compared
        case-insensitively), or None."""
        ex = exchange.upper()
        for e in self.entries():
            if e.exchange.upper() == ex and symbol in e.symbols:
                return e
        return None

    def close(self) -> None:
        self._close_ro()

    def __repr__(self):
        return f"<Registry {self.name}{' read-only' if self.readonly else ''}>"
