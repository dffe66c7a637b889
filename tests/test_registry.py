"""Service registry: real shm segment, real worker processes, CAS claims, flock'ed unlink."""
from __future__ import annotations

import multiprocessing as mp
import os
import signal
import time

import pytest

from dm.registry import SLOTS, Registry, RegistryError

FORK = mp.get_context("fork")


@pytest.fixture
def regname(instance):
    name = f"/dm.{instance}.registry"
    yield name
    try:
        os.unlink("/dev/shm/" + name[1:])
    except FileNotFoundError:
        pass


def _exists(name):
    return os.path.exists("/dev/shm/" + name[1:])


def test_register_find_release_unlinks_when_last(regname):
    reg = Registry(regname)
    assert reg.entries() == [] and not _exists(regname)
    a = reg.register("demo", "binance", "BINANCE", "/dm.demo.BINANCE.", ["BTCUSD", "ZILUSD"])
    assert os.stat("/dev/shm/" + regname[1:]).st_mode & 0o777 == 0o640
    b = reg.register("demo", "kraken", "KRAKEN", "/dm.demo.KRAKEN.", ["BTCUSD"])
    client = Registry.open_readonly(regname)
    es = client.entries()
    assert [(e.provider, e.symbols, e.pid, e.stale) for e in es] == [
        ("binance", ("BTCUSD", "ZILUSD"), os.getpid(), False),
        ("kraken", ("BTCUSD",), os.getpid(), False),
    ]
    assert client.find("ZILUSD", "binance").prefix == "/dm.demo.BINANCE."
    assert client.find("BTCUSD", "KRAKEN").slot == b.index
    assert client.find("ETHUSD", "KRAKEN") is None
    a.update_symbols(["BTCUSD", "ZILUSD", "ETHUSD"])
    assert client.find("ETHUSD", "BINANCE").slot == a.index
    with pytest.raises(RegistryError, match="read-only"):
        client.register("x", "y", "Z", "/p", [])
    a.release()
    assert [e.provider for e in client.entries()] == ["kraken"]
    assert _exists(regname)
    b.release()
    b.release()  # idempotent
    assert not _exists(regname)
    assert client.entries() == []
    with pytest.raises(RegistryError, match="released"):
        b.heartbeat()


def test_client_mapping_is_read_only(regname):
    reg = Registry(regname)
    s = reg.register("demo", "binance", "BINANCE", "/dm.demo.BINANCE.", ["BTCUSD"])
    client = Registry.open_readonly(regname)
    assert client.entries()
    with pytest.raises(TypeError):
        client._ro[100] = 1
    s.release()


def test_same_provider_twice_is_refused_while_live(regname):
    reg = Registry(regname)
    s = reg.register("demo", "binance", "BINANCE", "/p.", ["BTCUSD"])
    with pytest.raises(RegistryError, match="already registered"):
        _register_in_child(regname, "binance")
    s.release()


def _register_in_child(regname, provider):
    q = FORK.SimpleQueue()

    def child():
        try:
            Registry(regname).register("demo", provider, "BINANCE", "/p.", ["BTCUSD"])
            q.put("ok")
        except RegistryError as e:
            q.put(e)
        os._exit(0)

    p = FORK.Process(target=child)
    p.start()
    p.join(10)
    r = q.get()
    if isinstance(r, Exception):
        raise r
    return p


def _worker(regname, provider, ready, stop):
    slot = Registry(regname).register("demo", provider, "KRAKEN", "/dm.demo.KRAKEN.", [provider.upper()])
    ready.put(slot.index)
    stop.get()
    slot.release()
    os._exit(0)


def test_dead_worker_is_stale_and_its_slot_reclaimed(regname):
    ready = FORK.SimpleQueue()
    p = FORK.Process(target=_worker, args=(regname, "kraken", ready, FORK.SimpleQueue()))
    p.start()
    idx = ready.get()
    client = Registry.open_readonly(regname)
    assert client.find("KRAKEN", "KRAKEN").slot == idx
    os.kill(p.pid, signal.SIGKILL)
    p.join(10)
    assert client.find("KRAKEN", "KRAKEN") is None  # a dead pid is stale at once
    [e] = client.entries(include_stale=True)
    assert e.stale and e.pid == p.pid
    # the restarted worker reclaims its own stale slot
    s = Registry(regname).register("demo", "kraken", "KRAKEN", "/dm.demo.KRAKEN.", ["KRAKEN"])
    assert s.index == idx
    assert client.find("KRAKEN", "KRAKEN").pid == os.getpid()
    s.release()
    assert not _exists(regname)


def test_heartbeat_staleness(regname):
    reg = Registry(regname, stale_after_s=0.2)
    s = reg.register("demo", "binance", "BINANCE", "/p.", ["BTCUSD"])
    client = Registry.open_readonly(regname, stale_after_s=0.2)
    assert client.find("BTCUSD", "BINANCE") is not None
    time.sleep(0.3)
    assert client.find("BTCUSD", "BINANCE") is None
    assert client.entries(include_stale=True)[0].stale
    s.heartbeat()
    assert client.find("BTCUSD", "BINANCE") is not None
    # a hung worker's slot can be reclaimed; the hung owner then learns it lost the slot
    time.sleep(0.3)
    other = Registry(regname, stale_after_s=0.2)
    fd_owner = s._mm
    # simulate the claim of another process: CAS the owner word from our pid
    from dm._ring import cas_u32

    assert cas_u32(fd_owner, 64 + s.index * (1 << 16), os.getpid(), 1)
    with pytest.raises(RegistryError, match="reclaimed"):
        s.heartbeat()
    assert cas_u32(fd_owner, 64 + s.index * (1 << 16), 1, os.getpid())
    s.release()
    del other


def test_field_limits(regname):
    reg = Registry(regname)
    with pytest.raises(RegistryError, match="does not fit"):
        reg.register("x" * 40, "binance", "BINANCE", "/p.", [])
    with pytest.raises(RegistryError, match="bad symbol"):
        reg.register("demo", "binance", "BINANCE", "/p.", ["BTC,USD"])
    with pytest.raises(RegistryError, match="do not fit"):
        reg.register("demo", "binance", "BINANCE", "/p.", [f"S{i:08d}" for i in range(8000)])
    s = reg.register("demo", "binance", "BINANCE", "/p.", [f"S{i:07d}" for i in range(5000)])
    assert len(Registry.open_readonly(regname).entries()[0].symbols) == 5000
    s.release()


def _churn(regname, k, n, out):
    try:
        for i in range(n):
            s = Registry(regname).register("demo", f"p{k}", "EX", "/p.", [f"S{k}"])
            e = Registry.open_readonly(regname).find(f"S{k}", "EX")
            assert e is not None and e.slot == s.index and e.pid == os.getpid()
            s.release()
        out.put("ok")
    except BaseException as e:
        out.put(repr(e))
    os._exit(0)


def test_concurrent_register_release_never_loses_a_registration(regname):
    """Processes register and release in a loop while others do the same: the last release
    unlinks the segment, and a registration is never made on an unlinked (invisible) file."""
    out = FORK.SimpleQueue()
    ps = [FORK.Process(target=_churn, args=(regname, k, 300, out)) for k in range(4)]
    for p in ps:
        p.start()
    for p in ps:
        p.join(60)
    assert [out.get() for _ in ps] == ["ok"] * 4
    assert not _exists(regname)


def test_full_registry(regname):
    reg = Registry(regname)
    slots = [reg.register("demo", f"p{i}", "EX", "/p.", ["A"]) for i in range(SLOTS)]
    with pytest.raises(RegistryError, match="all 64 slots"):
        reg.register("demo", "one-more", "EX", "/p.", ["A"])
    assert len({s.index for s in slots}) == SLOTS
    for s in slots:
        s.release()
    assert not _exists(regname)
