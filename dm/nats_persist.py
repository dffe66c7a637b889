"""``dm persist --from-nats URL``: stores the records ``dm bridge`` published into storage on
another host.

A durable JetStream pull consumer (``durable``, default ``dm-persist-<instance>``) on
``dm.<instance>.>`` delivers batches of messages; their records go through the persister's own
``store_batch`` (one transaction; a record storage refuses is dead-lettered alone to
``persister.dead_letter``, the rest stored), and the messages are acknowledged only after the
database commit. A crash between
commit and ack re-delivers the batch, which storage's uniqueness keys make idempotent; the
durable consumer remembers what was acknowledged across restarts of this process and of NATS.

Nothing silent: a message in another record layout, or with records that do not parse, is
terminated (never re-delivered), counted and logged once per burst. A storage failure keeps the batch unacknowledged and retries with backoff (JetStream re-delivers
after ``ack_wait_s`` if this process dies meanwhile).
"""
from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from collections import Counter

from dm import log as dmlog
from dm import nats_wire as wire
from dm.bridge import safe_url
from dm.config import Config
from dm.errors import StorageError
from dm.persister import DeadLetters, store_batch

log = dmlog.get("dm.nats_persist")


class RemotePersister:
    def __init__(self, cfg: Config, url: str, instance: str, *, stream: str | None = None, durable: str | None = None,
                 batch_messages: int = 256, ack_wait_s: float = 30.0, storage_url: str | None = None):
        self.cfg = cfg
        self.url, self.instance, self.stream = url, instance, stream
        self.durable = durable or f"dm-persist-{wire.token(instance)}"
        self.batch_messages = batch_messages
        self.ack_wait_s = ack_wait_s
        self.storage_url = storage_url or cfg.storage.url
        self.subject = f"dm.{wire.token(instance)}.>"
        self.stopping = False
        self.s = {"messages": 0, "records": 0, "batches": 0, "poison_messages": 0, "storage_failures": 0}
        self.rows: Counter[str] = Counter()
        self.dead = DeadLetters(cfg.persister.dead_letter)
        self.stats_path = cfg.run_dir / cfg.instance / "nats-persister.stats.json"

    async def connect(self):
        import nats

        delay = 0.1
        while not self.stopping:
            try:
                nc = await nats.connect(self.url, name=f"dm-persist-{self.instance}", max_reconnect_attempts=-1,
                                        reconnect_time_wait=0.25, connect_timeout=2)
                log.info("NATS connected", url=safe_url(self.url))
                return nc
            except Exception as e:  # noqa: BLE001
                log.warning("NATS connect failed; retrying", url=safe_url(self.url), error=repr(e), in_s=delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)
        return None

    async def subscribe(self, js):
        from nats.js import api

        while not self.stopping:
            try:
                stream = self.stream or await js.find_stream_name_by_subject(self.subject)
                cfg = api.ConsumerConfig(durable_name=self.durable, ack_policy=api.AckPolicy.EXPLICIT,
                                         ack_wait=self.ack_wait_s, deliver_policy=api.DeliverPolicy.ALL,
                                         filter_subject=self.subject, max_ack_pending=-1, max_deliver=-1)
                return await js.pull_subscribe(self.subject, durable=self.durable, stream=stream, config=cfg)
            except Exception as e:  # noqa: BLE001 - no stream yet / JetStream restarting
                log.warning("consumer set-up failed; retrying", subject=self.subject, error=repr(e))
                await asyncio.sleep(1.0)
        return None

    def decode(self, msgs) -> tuple[bytes, list]:
        """Messages → (their records concatenated, the messages to terminate as poison: a payload
        that does not hold the records its headers announce). Bad records inside a good message
        are the persister's business (``dm.persister.store_batch`` dead-letters them alone)."""
        good, poison = [], []
        for m in msgs:
            try:
                h = wire.parse_headers(m.headers)
                if len(m.data) % (m.data[0] * 4 if m.data else 1) or (m.data and len(m.data) // (m.data[0] * 4) != h.count):
                    raise ValueError(f"payload of {len(m.data)} bytes does not hold {h.count} records")
                good.append(m.data)
            except (ValueError, KeyError, IndexError) as e:
                poison.append(m)
                log.error("poison message terminated", subject=m.subject, error=str(e))
        return b"".join(good), poison

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stop)
        from dm.storage import open_storage

        storage = open_storage(self.storage_url)
        await asyncio.to_thread(storage.migrate)
        nc = await self.connect()
        if nc is None:
            return 0
        js = nc.jetstream(timeout=5)
        psub = await self.subscribe(js)
        backoff = 0.05
        last_stats = 0.0
        try:
            while not self.stopping and psub is not None:
                if time.monotonic() - last_stats > 1.0:
                    self.write_stats()
                    last_stats = time.monotonic()
                try:
                    msgs = await psub.fetch(self.batch_messages, timeout=0.5)
                except asyncio.TimeoutError:
                    continue
                except Exception as e:  # noqa: BLE001 - connection trouble: the client reconnects
                    log.warning("fetch failed", error=repr(e))
                    await asyncio.sleep(0.25)
                    if "consumer" in repr(e).lower() and "not found" in repr(e).lower():
                        psub = await self.subscribe(js)
                    continue
                buf, poison = self.decode(msgs)
                while True:
                    try:
                        inserted, dead, arrays = (await asyncio.to_thread(store_batch, storage, buf, "nats", self.storage_url)
                                                  if buf else ({}, [], {}))
                        self.dead.write(dead)  # fsync'd before the acks
                        break
                    except StorageError as e:
                        self.s["storage_failures"] += 1
                        log.error("storage write failed; batch kept unacknowledged", bytes=len(buf), retry_in_s=backoff, error=str(e))
                        await asyncio.sleep(backoff)
                        backoff = min(backoff * 2, 5.0)
                        if self.stopping:
                            return 1
                backoff = 0.05
                poison_ids = {id(m) for m in poison}
                for m in msgs:  # after the commit
                    if id(m) in poison_ids:
                        await m.term()
                    else:
                        await m.ack()
                self.rows.update(inserted)
                self.s["messages"] += len(msgs)
                self.s["poison_messages"] += len(poison)
                self.s["records"] += sum(map(len, arrays.values()))
                self.s["batches"] += 1
        finally:
            self.write_stats()
            try:
                await asyncio.wait_for(nc.close(), 5)
            except Exception:  # noqa: BLE001
                pass
            storage.close()
            log.info("remote persister stopped", **self.s)
        return 0

    def stop(self) -> None:
        self.stopping = True

    def write_stats(self) -> None:
        self.stats_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.stats_path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"nats_persister": True, "pid": os.getpid(), "url": safe_url(self.url), **self.s,
                                   "rows": dict(self.rows), "dead_letters": self.dead.count, "ts": time.time()}))
        os.replace(tmp, self.stats_path)


def run_remote_persister(cfg: Config, url: str, instance: str, **kw) -> int:
    import uvloop

    return uvloop.run(RemotePersister(cfg, url, instance, **kw).run())
