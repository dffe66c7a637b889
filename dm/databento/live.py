"""The Databento live worker (``[providers.X] kind = "databento"``): one process under the
supervisor like a venue's, reading Databento's Live Subscription Gateway (LSG) over TCP.

    [providers.cme]
    kind = "databento"
    ws_url = "tcp://glbx-mdp3.lsg.databento.com:13000"   # the gateway (tcp://HOST[:PORT], 13000)
    symbols = ["ESU4", "NQU4"]                            # raw symbols (Databento symbols are native)
    dataset = "GLBX.MDP3"
    schemas = ["trades", "mbp-1"]
    # exchange = dataset by default: instruments register under (raw symbol, "GLBX.MDP3"), the
    # exchange dm's historical engine and [routing] use for the dataset
    # api_key_env = "DATABENTO_API_KEY"   # where the key is (else [databento] api_key)
    # replay_window_s = 86400             # reconnect within this: intraday replay from the last record
    # heartbeat_interval_s = 30           # asked of the gateway; silence of stale_after_s = reconnect
    # fake_gateway_data = "data/databento/glbx-mdp3-esu4-nqu4-20240701"   # demo/tests: serve these
    #   files from an in-process fake gateway on loopback (dm.databento.fake_live) and read it

Protocol (Databento docs, "Live API → Raw API": text control lines ``key=value|...\\n`` then a DBN
stream; the official client ``databento`` 0.88, ``databento/live/gateway.py``, whose message
classes and CRAM function this module uses):

* the gateway greets with ``lsg_version=...`` and a challenge ``cram=...``; dm answers
  ``auth=<sha256(cram|key) hex>-<last 5 characters of the key>|dataset=D|encoding=dbn|ts_out=0|
  compression=none|[heartbeat_interval_s=N|]client=...``, and reads ``success=1|session_id=...``
  (``success=0|error=...``: the key was refused: one error line, the worker exits with
  ``EXIT_FATAL`` and the supervisor marks the provider failed; the other providers run on);
* one ``schema=S|stype_in=raw_symbol|symbols=...[|start=<ns>]`` line per schema and ≤ 500 symbols
  (``SYMBOL_LIST_BATCH_SIZE``), then ``start_session=0``;
* then DBN (metadata, SymbolMappingMsg per symbol, SystemMsg acks and heartbeats, ErrorMsg,
  records) converted by dm's Cython DBN converter (``dm._dbn.DbnConverter``: trades → TRADE +
  MBP_EVENT, mbp-1 → BBO + MBP_EVENT, mbp-10 → DEPTH + MBP_EVENT, ohlcv → BAR, definition →
  INSTRUMENT_DEF), Databento instrument ids replaced by dm's (``dm.databento._live.LiveTracker``,
  from the session's symbol mappings: raw symbol → the registry id of (raw symbol, exchange)),
  published to the symbol's channel ring and the persist queue.

Gaps. Within one TCP session the gateway loses nothing (a slow reader is warned by a SystemMsg,
or skipped with ``slow_reader_behavior=skip``, which dm does not ask for). DBN's ``sequence`` is the
venue's per-channel message sequence: a subscription filtered to some instruments skips numbers
by design, so a sequence jump is not a loss and is not used. What can be lost is the time between
two sessions: on any close dm did not ask for (FIN, RST, silence longer than ``stale_after_s``) the
worker reconnects with backoff and, when the outage was shorter than ``replay_window_s``
(Databento's intraday replay covers the last 24 hours), subscribes again with ``start`` = the
index time of the last record it published, dropping what it had already published (no record
twice, none missed); else it subscribes from now and writes one GAP record per instrument
(kind ``reconnect``, units NS, inclusive: from the last published record's time to the first
new record's time; records at those two times may be partly missing, and fill-gaps stores
idempotently) to the persist queue, which the persister puts in the ledger for
``dm backfill fill-gaps``.

ErrorMsg: logged (burst-limited), counted and dead-lettered; the worker keeps running. A chunk the
converter rejects (corrupt DBN) is dead-lettered and the session is dropped (the stream cannot be
resynchronised mid-record) and reconnected like any other close.
"""
from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path
from urllib.parse import urlsplit

from dm import log as dmlog
from dm._ring import now_ns
from dm.config import Config, ProviderConfig
from dm.databento.config import LiveSettings, parse_live_settings
from dm.errors import EXIT_FATAL, ConfigError, DbnError, DmError
from dm.providers.base import Provider, resolve_instruments
from dm.records import GapUnits, gap_record

__all__ = ["DatabentoLiveProvider", "LiveSettings", "DEFAULT_PORT", "GatewayRefused"]  # LiveSettings: dm.databento.config

log = dmlog.get("dm.databento.live")

DEFAULT_PORT = 13000  # databento.live.session.DEFAULT_REMOTE_PORT
READ_BYTES = 1 << 20
NS = 1_000_000_000
_DBN_ERROR, _DBN_SYSTEM = 0x15, 0x17


class GatewayRefused(DmError):
    """The gateway refused the session (authentication or dataset): retrying cannot help."""


class GatewayError(DmError):
    """An ErrorMsg from the gateway (dead-lettered; the session goes on)."""


def gateway_address(url: str) -> tuple[str, int]:
    """``tcp://HOST[:PORT]`` (or ``HOST[:PORT]``) → (host, port); port 13000 when absent."""
    u = urlsplit(url if "://" in url else "tcp://" + url)
    if u.scheme != "tcp" or not u.hostname:
        raise ConfigError(f"databento gateway {url!r}: expected tcp://HOST[:PORT]")
    return u.hostname, u.port or DEFAULT_PORT


class DatabentoLiveProvider(Provider):
    """The Databento live worker (module doc). Reuses the base class's rings, registry slot,
    dead letters, stats file and reconnect loop; replaces the websocket connection with the LSG
    TCP session."""

    publisher_name = "DATABENTO"
    stale_after_s = 75.0  # 2.5 x the gateway's default 30 s heartbeat

    def __init__(self, cfg: Config, pcfg: ProviderConfig):
        super().__init__(cfg, pcfg)
        self.settings = parse_live_settings(pcfg.name, pcfg.extra)
        if "stale_after_s" not in pcfg.extra and self.settings.heartbeat_interval_s:
            self.stale_after_s = 2.5 * self.settings.heartbeat_interval_s
        self.gateway = gateway_address(pcfg.ws_url) if not self.settings.fake_gateway_data else ("127.0.0.1", 0)
        self.key = ""
        self.fake = None
        self.tracker = None
        self.conv = None
        self._nsym = 0
        self.connected = False
        self.session_id = None
        self.heartbeats = 0
        self.gateway_errors = 0
        self.system_msgs = 0
        self.bytes_read = 0
        self.gaps = 0
        self.replays = 0
        self.fatal: str | None = None
        self._writer = None
        self._last_unmapped_log = -1000  # the first drop is logged at once, then once per 1000 reads

    @classmethod
    def websocket_connections(cls, pcfg: ProviderConfig) -> int:
        return 0  # none to the replay server: it reads the Databento gateway

    # -- set-up -----------------------------------------------------------------------------
    def api_key(self) -> str:
        env = self.settings.api_key_env
        key = os.environ.get(env) or (self.cfg.sections.get("databento") or {}).get("api_key", "")
        if (not key or key.isspace()) and self.settings.fake_gateway_data:
            import secrets

            key = "db-" + secrets.token_hex(14)  # the in-process fake accepts the key it is given
        if not key or key.isspace():
            raise ConfigError(f"providers.{self.name}: no Databento API key: set ${env} (or [databento] api_key)")
        dmlog.add_secret(key)
        return key

    async def resolve_symbols(self) -> None:
        """Configured raw symbols → dm instrument ids (registry, exchange = the provider's)."""
        self.venue_symbols = {s: s for s in self.pcfg.symbols}
        self.instrument_ids = await resolve_instruments(self.cfg, self.pcfg, self.venue_symbols)
        self.venue_of = {i: s for s, i in self.instrument_ids.items()}

    def make_codec(self):
        from dm.databento._live import LiveTracker

        self.tracker = LiveTracker()
        return None

    # -- the session --------------------------------------------------------------------------
    async def _handshake(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> str:
        from databento.common.cram import get_challenge_response
        from databento.live.gateway import AuthenticationRequest, AuthenticationResponse, ChallengeRequest, Greeting, parse_gateway_message

        cram = None
        while cram is None:
            line = await reader.readline()
            if not line:
                raise ConnectionError("gateway closed the connection during the greeting")
            try:
                msg = parse_gateway_message(line.decode("utf-8", "replace"))
            except ValueError as e:
                raise ConnectionError(f"unexpected gateway line: {e}") from None
            if isinstance(msg, Greeting):
                log.debug("gateway greeting", provider=self.name, lsg_version=msg.lsg_version)
            elif isinstance(msg, ChallengeRequest):
                cram = msg.cram
        req = AuthenticationRequest(auth=get_challenge_response(cram, self.key), dataset=self.settings.dataset,
                                    heartbeat_interval_s=self.settings.heartbeat_interval_s, compression="none",
                                    client=f"dm {self.name}")
        writer.write(bytes(req))
        await writer.drain()
        line = await reader.readline()
        if not line:
            raise ConnectionError("gateway closed the connection during authentication")
        try:
            resp = parse_gateway_message(line.decode("utf-8", "replace"))
        except ValueError as e:
            raise ConnectionError(f"unexpected gateway line: {e}") from None
        if not isinstance(resp, AuthenticationResponse):
            raise ConnectionError(f"unexpected gateway message during authentication: {type(resp).__name__}")
        if resp.success != "1":
            raise GatewayRefused(f"the Databento gateway refused the session: {resp.error or 'no reason given'} "
                                 f"(dataset {self.settings.dataset}, key from ${self.settings.api_key_env})")
        return resp.session_id or ""

    def _subscriptions(self, start: int | None) -> bytes:
        from databento.live.gateway import SessionStart, SubscriptionRequest
        from databento.live.protocol import SYMBOL_LIST_BATCH_SIZE

        symbols = [self.venue_symbols[s] for s in self.pcfg.symbols]
        out = []
        n = 0
        for schema in self.settings.schemas:
            batches = [symbols[i:i + SYMBOL_LIST_BATCH_SIZE] for i in range(0, len(symbols), SYMBOL_LIST_BATCH_SIZE)]
            for k, batch in enumerate(batches):
                out.append(bytes(SubscriptionRequest(schema=schema, stype_in=self.settings.stype_in,
                                                     symbols=",".join(batch), start=start, id=n,
                                                     is_last=int(k == len(batches) - 1))))
                n += 1
        out.append(bytes(SessionStart()))
        return b"".join(out)

    def _resume_plan(self) -> int | None:
        """``start`` for the next subscription: the last published record's index time when the
        outage fits the replay window, else None (from now; the gap is recorded)."""
        tr = self.tracker
        if not tr.passed:
            return None
        if self._gap_from:  # a gap is open (no record since a reconnect beyond the window): from now
            tr.cancel_resume()
            return None
        # the replay must reach back to the last record published (sessions that died before
        # publishing anything count as time away)
        away_s = (now_ns() - self._last_pub_ns) / NS
        if self.settings.replay_window_s > 0 and away_s <= self.settings.replay_window_s:
            tr.resume()
            self.replays += 1
            return int(tr.last_ts)
        tr.cancel_resume()
        # records at the last time may be missing too: the window starts there (fill-gaps stores
        # idempotently), and the first new record's time closes it
        self._gap_from = int(tr.last_ts)
        return None

    async def run_connection(self) -> None:
        host, port = self.gateway
        if self.fake is not None:
            host, port = self.fake.host, self.fake.port
        reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port, limit=1 << 16), 10)
        self._writer = writer
        try:
            self.session_id = await asyncio.wait_for(self._handshake(reader, writer), 10)
            start = self._resume_plan() if self.connects else None
            writer.write(self._subscriptions(start))
            await writer.drain()
            self.connects += 1
            self.connected = True
            log.info("connected", provider=self.name, gateway=f"{host}:{port}", session_id=self.session_id,
                     replay_from=start, schemas=list(self.settings.schemas))
            from dm._dbn import DbnConverter

            if self.conv is not None:
                self._dbn_done += self.conv.dbn_count
            self.conv = DbnConverter(messages=True)
            self.tracker.reset_ids()
            self._nsym = 0
            watchdog = asyncio.get_running_loop().create_task(self._watchdog(writer)) if self.stale_after_s else None
            try:
                on_chunk = self.on_chunk
                read = reader.read
                while not self._stop.is_set():
                    data = await read(READ_BYTES)
                    if not data:
                        break
                    if not on_chunk(data, now_ns()):
                        break
            finally:
                if watchdog is not None:
                    watchdog.cancel()
        finally:
            was = self.connected
            self.connected = False
            self._writer = None
            writer.close()
            if was:
                log.info("disconnected", provider=self.name, records=self.records)

    async def _watchdog(self, writer: asyncio.StreamWriter) -> None:
        """No bytes at all (records or heartbeats) for ``stale_after_s``: the session is dead."""
        stale = self.stale_after_s
        tick = max(0.05, min(1.0, stale / 4))
        seen, changed = self.frames, time.monotonic()
        while not writer.is_closing():
            await asyncio.sleep(tick)
            now = time.monotonic()
            if self.frames != seen:
                seen, changed = self.frames, now
            elif now - changed >= stale:
                self.stale_disconnects += 1
                log.warning("gateway silent, reconnecting", provider=self.name, silent_s=round(now - changed, 3))
                writer.transport.abort()
                return

    # -- the hot path -------------------------------------------------------------------------
    def on_chunk(self, data: bytes, ts_recv: int) -> bool:
        """One read of the DBN stream → records on the rings. False: the stream is corrupt
        (dead-lettered) and the session must end."""
        self.frames += 1
        self.bytes_read += len(data)
        if self.frames == 1:
            self.on_first_frame(ts_recv)
        self.last_frame_ns = ts_recv
        conv = self.conv
        try:
            out = conv.feed(data)
        except DbnError as e:
            self.dead.add(ts_recv, data[:4096], e)
            return False
        if conv.messages:
            self._messages(ts_recv)
        if len(conv.symbols) != self._nsym:
            self._map_ids()
        if out:
            buf = bytearray(out)
            n = self.tracker.process(buf)
            if n:
                del buf[n:]
                if self._gap_from:
                    self._record_gaps(buf)
                self.records += self.fanout.publish(buf)
                self._last_pub_ns = ts_recv
            if self.tracker.unmapped and self.frames - self._last_unmapped_log >= 1000:
                self._last_unmapped_log = self.frames
                log.warning("records of instruments with no symbol mapping dropped", provider=self.name,
                            records=self.tracker.unmapped, ids=sorted(self.tracker.unmapped_ids)[:10])
        return True

    def _map_ids(self) -> None:
        """New symbol mappings of this session: Databento id → dm id of the configured symbol."""
        ids = self.instrument_ids
        m = self.tracker.idmap
        for db_id, raw in self.conv.symbols.items():
            dm_id = ids.get(raw)
            if dm_id is not None:
                m[db_id] = dm_id
        self._nsym = len(self.conv.symbols)
        self.tracker.invalidate()

    _gap_from = 0
    _last_pub_ns = 0  # wall clock (ns) of the last read that published records
    _dbn_done = 0  # DBN records of the sessions before this one

    def _record_gaps(self, buf: bytearray) -> None:
        """The first records after a reconnect that could not replay: one GAP record per
        instrument for [last published + 1, this first record's time - 1] (ns)."""
        import struct

        rt = buf[1]
        first = struct.unpack_from("<Q", buf, 8 if rt == 0xE4 else 16)[0]
        lo, hi = self._gap_from, max(self._gap_from, first)
        self._gap_from = 0
        detected = now_ns()
        out = b"".join(gap_record(self.pcfg.publisher_id, iid, "reconnect", lo, hi, int(GapUnits.NS), detected,
                                  f"databento {self.settings.dataset} reconnect beyond replay")
                       for iid in sorted(self.instrument_ids.values()))
        self.gaps += len(self.instrument_ids)
        self.fanout.publish(out)
        log.warning("reconnect gap", provider=self.name, first_missing=lo, last_missing=hi,
                    instruments=len(self.instrument_ids))

    def _messages(self, ts_recv: int) -> None:
        import databento_dbn as dbn

        msgs, self.conv.messages[:] = list(self.conv.messages), []
        for rtype, ts_event, code, text in msgs:
            if rtype == _DBN_ERROR:
                self.gateway_errors += 1
                self.dead.add(ts_recv, text, GatewayError(f"gateway error (code {code}): {text}"))
            elif code == int(dbn.SystemCode.HEARTBEAT) or (code < 0 and text == "Heartbeat"):
                self.heartbeats += 1
            else:
                self.system_msgs += 1
                if code == int(dbn.SystemCode.SLOW_READER_WARNING):
                    log.warning("gateway: slow reader", provider=self.name, message=text)
                else:
                    log.info("gateway message", provider=self.name, code=code, message=text)

    # -- life cycle ---------------------------------------------------------------------------
    async def connection_loop(self) -> None:
        try:
            await super().connection_loop()
        except GatewayRefused as e:
            self.fatal = str(e)
            log.error(str(e), provider=self.name)
            self.stop()

    def stats(self) -> dict:
        d = super().stats()
        tr = self.tracker
        d.update({
            "connected": self.connected,
            # what the reads held: DBN records (metadata, mappings and messages included), heartbeats...
            "frames_by_kind": {"dbn records": self._dbn_done + (self.conv.dbn_count if self.conv is not None else 0),
                               "heartbeat": self.heartbeats, "system": self.system_msgs, "error": self.gateway_errors},
            "bytes": self.bytes_read,
            "heartbeats": self.heartbeats,
            "gateway_errors": self.gateway_errors,
            "system_messages": self.system_msgs,
            "replays": self.replays,
            "replayed_dropped": tr.replayed if tr is not None else 0,
            "unmapped_dropped": tr.unmapped if tr is not None else 0,
            "gaps": self.gaps,
            "failed": self.fatal,
        })
        return d

    async def run(self) -> None:
        # the official client's protocol classes (databento imports pandas: ~1-3 s) are loaded
        # now, not in the first session's handshake
        await asyncio.to_thread(__import__, "databento.live.protocol")
        try:
            self.key = self.api_key()
        except ConfigError as e:
            log.error(str(e), provider=self.name)
            raise SystemExit(EXIT_FATAL) from None
        if self.settings.fake_gateway_data:
            from dm.databento.fake_live import FakeLiveGateway

            self.fake = await asyncio.to_thread(lambda: FakeLiveGateway(Path(self.settings.fake_gateway_data), key=self.key).start())
            log.info("fake Databento live gateway", provider=self.name, address=self.fake.address,
                     data=self.settings.fake_gateway_data)
        try:
            await super().run()
        finally:
            if self.fake is not None:
                self.fake.stop()
        if self.fatal:
            raise SystemExit(EXIT_FATAL)
