"""dm's command line (click). Thin: parse, call, print."""
from __future__ import annotations

import json
import os
import sys
from datetime import datetime, timezone

import click

from dm import config as dmconfig
from dm import log as dmlog
from dm.errors import DmError

DEFAULT_CONFIG = os.environ.get("DM_CONFIG", "conf/prod.toml")
url_option = click.option("--url", default=None, help="Storage URL (default: the config's storage.url / $DM_STORAGE_URL).")
config_option = click.option("-c", "--config", "config_path", default=DEFAULT_CONFIG, show_default=True, help="TOML config file ($DM_CONFIG).")


def _load(config_path: str, process: str | None = None) -> dmconfig.Config:
    cfg = dmconfig.load(config_path)  # ConfigError: one line (DmGroup)
    dmlog.setup(cfg.log_format, cfg.log_level, process)
    return cfg


def one_line(e: BaseException) -> str:
    """An error as one line for a person: its message with whitespace collapsed (psycopg's
    messages span lines) and secrets redacted."""
    text = " ".join(str(e).split()) or type(e).__name__
    if isinstance(e, OSError) and not isinstance(e, DmError):
        text = f"{type(e).__name__}: {text}"
    return dmlog.redact(text)


def _expected_errors() -> tuple[type[BaseException], ...]:
    """Errors a person can act on (config, storage, network, files): reported as one line.
    Anything else is a bug and keeps its (redacted) traceback."""
    errs: list[type[BaseException]] = [DmError, OSError]
    psycopg = sys.modules.get("psycopg")
    if psycopg is not None:
        errs.append(psycopg.Error)
    return tuple(errs)


class DmGroup(click.Group):
    """Every command's expected errors end the process with ONE line and exit code 1: ``Error:
    ...`` for a person at a terminal, or one log event once logging is set up (children of the
    supervisor, whose stderr is the service log)."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except _expected_errors() as e:
            if dmlog.configured():
                dmlog.get("dm").error("fatal", error=one_line(e))
                ctx.exit(1)
            raise click.ClickException(one_line(e)) from None


@click.group(cls=DmGroup)
@click.version_option(package_name="dm")
def main() -> None:
    """dm — market data manager: venue feeds → shared memory → trading processes and storage."""


@main.command()
@config_option
@click.option("--summary/--no-summary", default=None, help="Print what flowed at the end (default: when the run ends with the replay).")
def supervise(config_path: str, summary: bool | None) -> None:
    """Run the supervisor: one worker per enabled provider, the persister, and the replay server
    when [replay] is enabled. Stops cleanly on SIGTERM/SIGINT (systemd-friendly)."""
    from dm.supervisor import run_supervisor, summary as flow_summary

    cfg = _load(config_path, "supervisor")
    code = run_supervisor(cfg, config_path)
    if summary or (summary is None and cfg.supervisor.exit_when_replay_done):
        click.echo(flow_summary(cfg))
    sys.exit(code)


@main.command()
@click.argument("name")
@config_option
def worker(name: str, config_path: str) -> None:
    """Run the worker of provider NAME (the supervisor starts these)."""
    from dm.lifeline import tie_to_supervisor
    from dm.providers.base import run_worker

    tie_to_supervisor()
    cfg = _load(config_path, f"worker:{name}")
    if name not in cfg.providers:
        raise click.ClickException(f"no provider {name!r} in {config_path}; have {sorted(cfg.providers)}")
    run_worker(cfg, name)


@main.command()
@config_option
def persist(config_path: str) -> None:
    """Run the persister: persist queues → storage (the supervisor starts it)."""
    from dm.lifeline import tie_to_supervisor
    from dm.persister import run_persister

    tie_to_supervisor()
    run_persister(_load(config_path, "persister"))


def _control(config_path: str, req: dict) -> dict:
    from dm.control import ControlError, control_request

    cfg = dmconfig.load(config_path)
    ans = control_request(cfg, req)
    if not ans.get("ok"):
        raise ControlError(ans.get("error", "request failed"))
    return ans


@main.command()
@click.argument("target", metavar="SYMBOL@EXCHANGE")
@click.option("--persist-only", is_flag=True, help="Store it without a shared-memory channel.")
@click.option("--save", is_flag=True, help="Also add it to the provider's symbols in the config file.")
@config_option
def subscribe(target: str, persist_only: bool, save: bool, config_path: str) -> None:
    """Carry SYMBOL@EXCHANGE (canonical, e.g. ETHUSD@KRAKEN) from now on, without a restart:
    the worker subscribes on its live socket and creates the channel."""
    ans = _control(config_path, {"op": "subscribe", "symbol": target, "persist_only": persist_only, "save": save})
    where = "persist only" if ans.get("persist_only") else f"channel {ans.get('channel')}"
    click.echo(f"subscribed {ans['symbol']}@{ans['exchange']} ({ans['venue_symbol']}, instrument {ans['instrument_id']}, "
               f"provider {ans['provider']}): {where}" + (f"; saved to {ans['saved']}" if ans.get("saved") else ""))


@main.command()
@click.argument("target", metavar="SYMBOL@EXCHANGE")
@click.option("--save", is_flag=True, help="Also remove it from the provider's symbols in the config file.")
@config_option
def unsubscribe(target: str, save: bool, config_path: str) -> None:
    """Stop carrying SYMBOL@EXCHANGE; its channel is removed once readers had their grace period."""
    ans = _control(config_path, {"op": "unsubscribe", "symbol": target, "save": save})
    click.echo(f"unsubscribed {ans['symbol']}@{ans['exchange']} (provider {ans['provider']})"
               + (f"; saved to {ans['saved']}" if ans.get("saved") else ""))


@main.command("ls")
@click.option("--json", "as_json", is_flag=True, help="The control answer as JSON.")
@config_option
def ls_cmd(as_json: bool, config_path: str) -> None:
    """What the running service carries: symbol, exchange, venue symbol, instrument id, channel."""
    ans = _control(config_path, {"op": "list"})
    if as_json:
        click.echo(json.dumps(ans, indent=1))
        return
    for s in ans["symbols"]:
        click.echo(f"{s['symbol']:<24} {s['exchange']:<16} {s['venue_symbol'] or '':<20} {s['instrument_id']:>10}  "
                   f"{s['channel'] or '(persist only)'}")
    for name, err in ans.get("errors", {}).items():
        click.echo(f"{name}: {err}", err=True)


@main.command()
@click.argument("files", nargs=-1, required=True)
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=0, show_default=True, help="0 picks a free port (see --ready-file).")
@click.option("--speed", default=1.0, show_default=True, help="Recorded pace × speed; 0 = as fast as possible.")
@click.option("--rate", default=0.0, show_default=True, help="Frames per second per connection instead of the recorded pace (benchmarks); 0 = off.")
@click.option("--once", is_flag=True, help="Exit once the recording was replayed to the end to --connections clients.")
@click.option("--connections", default=1, show_default=True, help="With --once: how many connections to serve before exiting.")
@click.option("--ready-file", type=click.Path(dir_okay=False), default=None, help="Write the bound port here once listening.")
@click.option("--log-format", type=click.Choice(["console", "json"]), default="console", show_default=True)
@click.option("--log-level", type=click.Choice(["debug", "info", "warning", "error", "critical"]), default="info", show_default=True)
@click.option("--from-db", "from_db", is_flag=True,
              help="FILES are SYMBOL@EXCHANGE (or SYMBOL with --exchange): publish their stored records into shm "
                   "channels (dm.client reads them as live) instead of serving venue recordings.")
@click.option("--exchange", default=None, help="--from-db: exchange of symbols given without @EXCHANGE.")
@click.option("--start", default=None, help="--from-db: ns or ISO-8601, inclusive.")
@click.option("--end", default=None, help="--from-db: ns or ISO-8601, exclusive.")
@click.option("--schemas", default="trades,bbo,book_deltas,depth,bars,statistics", show_default=True,
              help="--from-db: stored schemas to publish, merged by ts_event.")
@click.option("--instance", default="replay", show_default=True, help="--from-db: dm instance the channels are registered under.")
@click.option("--registry", default="/dm.registry", show_default=True, help="--from-db: service registry segment.")
@click.option("--linger", default=1.0, show_default=True, help="--from-db: seconds the channels stay up after the last record.")
@config_option
@url_option
def replay(files, host, port, speed, rate, once, connections, ready_file, log_format, log_level, from_db, exchange,
           start, end, schemas, instance, registry, linger, config_path, url) -> None:
    """Serve recorded venue sessions (cryptofeed raw-data files) over websocket + REST, frame
    for frame as the venue sent them; or, with --from-db, publish stored records of symbols into
    shm channels at the recorded pace x --speed (0: as fast as possible, or --rate records/s)."""
    from dm.lifeline import tie_to_supervisor

    tie_to_supervisor()
    dmlog.setup(log_format, log_level, "replay")
    if from_db:
        import signal

        from dm.history import replay_from_db

        stopping = []
        signal.signal(signal.SIGTERM, lambda *a: stopping.append(1))
        counts = replay_from_db(_storage(config_path, url), list(files), start, end, exchange=exchange,
                                schemas=[s.strip() for s in schemas.split(",") if s.strip()], speed=speed, rate=rate,
                                instance=instance, registry=registry, linger_s=linger, stop=lambda: bool(stopping))
        click.echo(" ".join(f"{k}={v}" for k, v in counts.items()), err=True)
        return
    missing = [f for f in files if not os.path.exists(f)]
    if missing:
        raise click.BadParameter(f"no such file or directory: {', '.join(missing)}", param_hint="FILES")
    from dm.replay import run_replay

    run_replay(list(files), host=host, port=port, speed=speed, once=once, ready_file=ready_file, expected_connections=connections,
               rate=rate)


def _fmt_ts(ns: int) -> str:
    return datetime.fromtimestamp(ns / 1e9, timezone.utc).strftime("%H:%M:%S.%f") + f"{ns % 1000:03d}"


def format_record(rec) -> str:
    """One line for a person; prices (1e-9) and sizes (at the record's size_precision) as exact
    decimals; a gap as its window (ns or sequence numbers) and cause."""
    from dm.client import Overrun

    if isinstance(rec, Overrun):
        return f"OVERRUN lost {rec.lost_records} records"
    name = type(rec).__name__.upper()
    head = f"{_fmt_ts(rec.ts_event)} {name:<6} id={rec.instrument_id}"
    if name == "TRADE":
        return f"{head} {chr(rec.side)} {rec.dec('size')} @ {rec.dec('price')} trade_id={rec.trade_id}"
    if name == "BBO":
        return f"{head} {rec.dec('bid_sz')} {rec.dec('bid_px')} / {rec.dec('ask_px')} {rec.dec('ask_sz')} seq={rec.sequence}"
    if name == "BOOKDELTA":
        return f"{head} {chr(rec.side)} {chr(rec.action)} {rec.dec('size')} @ {rec.dec('price')} seq={rec.sequence}"
    if name == "DEPTH":
        from dm.records import to_decimal

        top = rec.levels[0]
        return f"{head} top {to_decimal(top[0])} / {to_decimal(top[1])} ({rec.n_bid}x{rec.n_ask} levels) seq={rec.sequence}"
    if name == "GAP":
        from dm.records import GapUnits

        if rec.units == GapUnits.NS:
            span = rec.last_missing - rec.first_missing + 1
            window = f"{_fmt_ts(rec.first_missing)} .. {_fmt_ts(rec.last_missing)} ({span / 1e9:.3f} s)"
        else:
            window = f"seq {rec.first_missing} .. {rec.last_missing}"
        return f"{head} {rec.kind} {window} {rec.detail}".rstrip()
    return f"{head} {rec}"


@main.command()
@click.argument("symbol")
@click.option("--exchange", required=True, help="e.g. BINANCE")
@click.option("--instance", default=None, help="Only this dm instance's channels.")
@click.option("--registry", default="/dm.registry", show_default=True)
@click.option("--start", type=click.Choice(["newest", "oldest"]), default="newest", show_default=True)
@click.option("-n", "--count", default=0, help="Stop after N lines (0: until interrupted, or until the producer stops with --no-follow).")
@click.option("--wait", default=10.0, show_default=True, help="Seconds to wait for the channel to appear.")
@click.option("--follow/--no-follow", default=True, show_default=True,
              help="Follow producer restarts (a GAP line marks the lost window) or end when the producer stops.")
def tail(symbol, exchange, instance, registry, start, count, wait, follow) -> None:
    """Print a symbol's records live from shared memory."""
    from dm.client import Client

    with Client(instance=instance, registry=registry) as client:
        try:
            sub = client.subscribe(symbol, exchange=exchange, start=start, wait=wait, follow=follow)
        except DmError as e:
            raise click.ClickException(str(e)) from None
        prec = "?" if sub.size_precision is None else sub.size_precision
        click.echo(f"# {sub.name} ({sub.producer_state()}) instrument_id={sub.instrument_id} size_precision={prec}", err=True)
        n = 0
        try:
            for rec in sub:
                click.echo(format_record(rec))
                n += 1
                if count and n >= count:
                    break
        except KeyboardInterrupt:
            pass


@main.group()
def db() -> None:
    """Storage: migrate, stats, compress."""


def _storage(config_path: str, url: str | None):
    from dm.storage import open_storage

    if url is None:
        url = _load(config_path).storage.url
    return open_storage(url)




@db.command()
@config_option
@url_option
def migrate(config_path: str, url: str | None) -> None:
    """Create or upgrade the schema (idempotent)."""
    st = _storage(config_path, url)
    try:
        applied = st.migrate()
        click.echo(f"schema version {st.schema_version()}" + (f"; applied {', '.join(applied)}" if applied else "; up to date"))
    finally:
        st.close()


@db.command()
@config_option
@url_option
def stats(config_path: str, url: str | None) -> None:
    """Rows, size and time range per table."""
    import json

    st = _storage(config_path, url)
    try:
        out = st.stats()
        ret = _retention(config_path)
        if ret is not None:  # rows and bytes per table in the retention archive too
            from dm.archive import archive_stats

            out["archive"] = {"dir": str(ret["archive_dir"]), "tables": archive_stats(ret["archive_dir"])}
        click.echo(json.dumps(out, indent=2, default=str))
    finally:
        st.close()


def _retention(config_path: str) -> dict | None:
    """The config's ``[retention]`` (``dm.archive``), None without a config or section."""
    try:
        cfg = _load(config_path)
    except (DmError, OSError):
        return None
    sec = cfg.sections.get("retention")
    if not sec:
        return None
    from dm.archive import parse_retention_section

    return parse_retention_section(dict(sec))


@db.command()
@config_option
@url_option
@click.option("--older-than-days", type=int, default=None, help="Archive days older than this (with --table; default: [retention] days).")
@click.option("--table", "tables", multiple=True, help="Tick table to archive (repeat).")
@click.option("--archive-dir", default=None, help="Archive directory (default: [retention] archive_dir).")
def compress(config_path: str, url: str | None, older_than_days, tables, archive_dir) -> None:
    """Move days older than the retention into zstd Parquet files ([retention] or the options:
    written, read back, row count and checksum verified, then dropped from the database);
    without a retention: vacuum/analyse."""
    import json
    from pathlib import Path

    ret = _retention(config_path)
    if older_than_days is not None or tables or archive_dir:
        if older_than_days is None or not tables:
            raise click.UsageError("--older-than-days and --table go together")
        ret = {"archive_dir": Path(archive_dir or (ret or {}).get("archive_dir", "var/archive")),
               "days": {t: older_than_days for t in tables}}
    st = _storage(config_path, url)
    try:
        if ret is None or not ret["days"]:
            click.echo(st.compress())
            return
        from dm.archive import compress as archive

        done = archive(st, ret)
        for r in done:
            click.echo(json.dumps(r))
        click.echo(f"archived {sum(r['removed'] for r in done)} rows of {len(done)} table-days into {ret['archive_dir']}")
    finally:
        st.close()


@db.command("rebuild-bars")
@config_option
@url_option
@click.option("--since", default="0", show_default=True, help="ns since the epoch or ISO-8601: bars starting at or after it are rebuilt.")
@click.option("--interval", "intervals", multiple=True, help="Interval to rebuild (repeat; default: the config's [bars]).")
def rebuild_bars(config_path: str, url: str | None, since: str, intervals) -> None:
    """Recompute dm's bars from the stored trades (equal to what the persister built)."""
    from dm.bars import BarPlan, parse_interval, plan_from_config
    from dm.history import to_ns

    plan = BarPlan(tuple(parse_interval(i) for i in intervals)) if intervals else None
    if plan is None:
        try:
            plan = plan_from_config(_load(config_path))
        except (DmError, OSError):
            plan = None  # no config: the default intervals
    st = _storage(config_path, url)
    try:
        r = st.rebuild_bars(to_ns(since), plan)
        click.echo(f"rebuilt {r['bars']} bars (replacing {r['deleted']})")
    finally:
        st.close()


@db.command()
@config_option
@url_option
@click.option("--ahead-days", default=2, show_default=True, help="Day partitions to create ahead of today.")
def maintain(config_path: str, url: str | None, ahead_days: int) -> None:
    """Create day partitions ahead (PostgreSQL), outside the write path."""
    st = _storage(config_path, url)
    try:
        made = st.maintain(ahead_days)
        click.echo(f"created {len(made)} partitions" + (f": {', '.join(made)}" if made else ""))
    finally:
        st.close()


@main.group()
def symbol() -> None:
    """Symbols: list, discover, add, remove (canonical symbols; venue forms only at the edges)."""


provider_option = click.option("--provider", "provider_name", required=True, help="Provider name from the config, e.g. binance.")
reference_option = click.option("--reference", "reference_file", type=click.Path(exists=True, dir_okay=False), default=None,
                                help="A recorded REST reference file (line 1 'URL -> TS: BODY', e.g. data/binance/2021-10-12/BINANCE.0) instead of fetching from the venue.")


def _provider(cfg: dmconfig.Config, name: str) -> dmconfig.ProviderConfig:
    if name not in cfg.providers:
        raise click.ClickException(f"no provider {name!r} in the config; have {sorted(cfg.providers)}")
    return cfg.providers[name]


def _symbology(cfg: dmconfig.Config, p: dmconfig.ProviderConfig, reference_file: str | None):
    """The provider's venue symbology from a recorded reference file or the venue's REST API."""
    import asyncio

    from dm.symbology import fetch_reference, for_provider, read_recorded_reference

    if reference_file:
        _, _, body = read_recorded_reference(reference_file)
    else:
        import aiohttp

        async def get():
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as s:
                return await fetch_reference(p.kind, p.rest_url, s)

        body = asyncio.run(get())
    aliases = p.extra.get("quote_aliases", cfg.quote_aliases)
    return for_provider(p.kind, body, aliases, exchange=p.exchange)


@symbol.command("list")
@config_option
@click.option("--provider", "provider_name", default=None, help="Only this provider.")
def symbol_list(config_path: str, provider_name: str | None) -> None:
    """Configured symbols with their persistent instrument ids, and stored instruments not configured."""
    from dm.storage import open_storage

    cfg = _load(config_path)
    st = open_storage(cfg.storage.url)
    try:
        st.migrate()
        stored = {(sym, ex): (iid, venue) for iid, sym, ex, venue, _ in st.load_instruments()}
    finally:
        st.close()
    providers = [_provider(cfg, provider_name)] if provider_name else list(cfg.providers.values())
    click.echo(f"{'provider':<16} {'exchange':<16} {'symbol':<20} {'venue':<20} instrument_id")
    seen = set()
    for p in providers:
        for s in p.symbols:
            iid, venue = stored.get((s, p.exchange), (None, ""))
            seen.add((s, p.exchange))
            click.echo(f"{p.name:<16} {p.exchange:<16} {s:<20} {venue:<20} {iid if iid is not None else '(not yet assigned)'}")
    exchanges = {p.exchange for p in providers}
    for (s, ex), (iid, venue) in sorted(stored.items()):
        if ex in exchanges and (s, ex) not in seen:
            click.echo(f"{'-':<16} {ex:<16} {s:<20} {venue:<20} {iid}  (stored, not configured)")


@symbol.command("discover")
@config_option
@provider_option
@reference_option
@click.option("--quote", default=None, help="Only symbols with this canonical quote asset, e.g. USD.")
@click.option("--all", "show_all", is_flag=True, help="Include instruments the venue does not trade now.")
def symbol_discover(config_path, provider_name, reference_file, quote, show_all) -> None:
    """List the venue's instruments (REST reference data) as canonical ↔ venue symbols."""
    cfg = _load(config_path)
    p = _provider(cfg, provider_name)
    sym = _symbology(cfg, p, reference_file)
    n = 0
    for info in sorted(sym, key=lambda i: i.canonical):
        if (quote and info.quote != quote.upper()) or (not show_all and not info.tradeable):
            continue
        tick = "" if info.tick_size is None else f" tick={info.tick_size.normalize()}"
        click.echo(f"{info.canonical:<20} {info.venue_symbol:<20} {info.kind}{tick}")
        n += 1
    collisions = sym.collisions()
    click.echo(f"# {n} instruments on {p.exchange}" + (f"; {len(collisions)} ambiguous canonical symbols left out: {sorted(collisions)[:5]}" if collisions else ""), err=True)


def _edit_symbols(config_path: str, provider: str, fn) -> list[str]:
    import tomlkit

    path = click.format_filename(config_path)
    doc = tomlkit.parse(open(path).read())
    arr = doc["providers"][provider]["symbols"]
    new = fn([str(s) for s in arr])
    doc["providers"][provider]["symbols"] = new
    with open(path, "w") as f:
        f.write(tomlkit.dumps(doc))
    return new


@symbol.command("add")
@click.argument("symbols", nargs=-1, required=True)
@config_option
@provider_option
@reference_option
def symbol_add(symbols, config_path, provider_name, reference_file) -> None:
    """Add canonical SYMBOLS to a provider: checked against the venue's reference data, given
    persistent instrument ids, written to the config (restart the worker to stream them)."""
    from dm.errors import SymbologyError
    from dm.instruments import InstrumentRegistry
    from dm.storage import open_storage

    cfg = _load(config_path)
    p = _provider(cfg, provider_name)
    try:
        venue = _symbology(cfg, p, reference_file).select(symbols)
    except SymbologyError as e:
        raise click.ClickException(str(e)) from None
    st = open_storage(cfg.storage.url)
    try:
        st.migrate()
        reg = InstrumentRegistry(st)
        ids = {c: reg.resolve(c, p.exchange, v, p.publisher_id) for c, v in venue.items()}
    finally:
        st.close()
    _edit_symbols(config_path, provider_name, lambda cur: cur + [c for c in venue if c not in cur])
    for c, v in venue.items():
        click.echo(f"{c} ({v}) on {p.exchange}: instrument_id {ids[c]}")


@symbol.command("remove")
@click.argument("symbols", nargs=-1, required=True)
@config_option
@provider_option
def symbol_remove(symbols, config_path, provider_name) -> None:
    """Remove canonical SYMBOLS from a provider's config. Their instrument ids stay assigned
    (ids are persistent: re-adding a symbol gives it the same id)."""
    cfg = _load(config_path)
    p = _provider(cfg, provider_name)
    drop = {s.upper() for s in symbols}
    missing = drop - set(p.symbols)
    if missing:
        raise click.ClickException(f"not configured for {provider_name}: {sorted(missing)}")
    _edit_symbols(config_path, provider_name, lambda cur: [s for s in cur if s.upper() not in drop])
    click.echo(f"removed {sorted(drop)} from {provider_name}")


# ------------------------------------------------------------------ NATS bridge, remote persister, dm top (issue 12)

@main.command()
@config_option
@click.option("--url", default=None, help="NATS server, e.g. nats://127.0.0.1:4222 (default: [bridge] url).")
@click.option("--stream", default=None, help="JetStream stream name (default: [bridge] stream, DM).")
@click.option("--channel", "channels", multiple=True, help="SYMBOL@EXCHANGE to publish (repeat); '*' = every channel of the instance.")
@click.option("--batch-records", type=int, default=None, help="Records per message at most.")
@click.option("--linger-ms", type=float, default=None, help="Longest wait before a partial batch is published.")
@click.option("--max-age-s", type=float, default=None, help="Stream retention: age.")
@click.option("--max-bytes", type=int, default=None, help="Stream retention: bytes (-1 unlimited).")
def bridge(config_path, url, stream, channels, batch_records, linger_ms, max_age_s, max_bytes) -> None:
    """Publish the instance's shm channels to NATS JetStream, batched, on
    dm.<instance>.<EXCHANGE>.<SYMBOL>.<schema> (see dm/bridge.py). Runs until SIGTERM/SIGINT."""
    from dm.bridge import load_bridge_config, run_bridge

    cfg = _load(config_path, "bridge")
    try:
        bcfg = load_bridge_config(config_path, url=url, stream=stream, channels=list(channels) or None,
                                  batch_records=batch_records, linger_ms=linger_ms, max_age_s=max_age_s, max_bytes=max_bytes)
    except DmError as e:
        raise click.ClickException(str(e)) from None
    sys.exit(run_bridge(cfg, bcfg))


@main.command("persist-remote")
@config_option
@click.option("--from-nats", "url", required=True, help="NATS server the bridge publishes to, e.g. nats://host:4222.")
@click.option("--instance", default=None, help="dm instance whose channels to store (default: the config's).")
@click.option("--stream", default=None, help="JetStream stream (default: found from the subjects).")
@click.option("--durable", default=None, help="Durable consumer name (default dm-persist-<instance>).")
@click.option("--storage-url", default=None, help="Storage URL (default: the config's storage.url / $DM_STORAGE_URL).")
def persist_remote(config_path, url, instance, stream, durable, storage_url) -> None:
    """Store records from JetStream (what `dm bridge` publishes on another host), idempotently,
    acknowledging after each database commit."""
    from dm.nats_persist import run_remote_persister

    cfg = _load(config_path, "persist-remote")
    sys.exit(run_remote_persister(cfg, url, instance or cfg.instance, stream=stream, durable=durable, storage_url=storage_url))


@main.command()
@config_option
@click.option("--interval", default=1.0, show_default=True, help="Seconds between refreshes.")
@click.option("--once", is_flag=True, help="Print one frame (rates over --interval) and exit.")
def top(config_path, interval, once) -> None:
    """Live view of an instance: providers, channels (last trade, BBO), persist lag, gaps,
    reconnects, dead letters, bridge and /metrics."""
    from dm.top import run_top

    run_top(_load(config_path, "top"), interval=interval, once=once)
# --- routing, historical fetch, backfill, fake Databento gateway (dm.routing, dm.backfill, -----
# --- dm.databento). Exit status: 0 ok, 1 error or failed chunks, 3 needs --confirm, 4 over a budget limit.
def _settings(config_path: str):
    from dm.backfill import load_settings

    try:
        return load_settings(config_path)
    except DmError as e:
        raise click.ClickException(str(e)) from None


def _echo_json(obj) -> None:
    import json

    click.echo(json.dumps(obj, indent=2, default=str))


@main.command("route")
@click.argument("symbols", nargs=-1, required=True)
@click.option("--asset-type", default=None, help="e.g. future, crypto (tier 2: asset_type@EXCHANGE).")
@click.option("--exchange", default=None, help="e.g. CME, BINANCE (tier 2).")
@config_option
@click.option("--json", "as_json", is_flag=True, help="One JSON object per symbol.")
def route_cmd(symbols, asset_type, exchange, config_path, as_json) -> None:
    """Print the route of each SYMBOL ([routing]: symbol rule → asset_type@EXCHANGE → default)
    and the tier that chose it."""
    from dm.routing import Router

    router = Router(_settings(config_path).routing)
    providers = {}
    if exchange is None:  # the exchanges the config streams the symbol on feed tier 2
        try:
            providers = dmconfig.load(config_path).providers
        except DmError:
            providers = {}
    try:
        routed = []
        for s in symbols:
            exchanges = [exchange] if exchange else sorted({p.exchange for p in providers.values() if s.upper() in p.symbols})
            routed += [router.route(s, asset_type, ex) for ex in exchanges or [None]]
    except DmError as e:
        raise click.ClickException(str(e)) from None
    if as_json:
        _echo_json([r.as_dict() for r in routed])
        return
    for r in routed:
        click.echo(r.describe())


def _fetch_requests(settings, symbols, schemas, start, end, dataset, stype_in, asset_type, exchange, command="fetch"):
    from dm.databento.historical import FetchRequest
    from dm.databento.times import to_ns
    from dm.routing import Router

    try:
        start_ns, end_ns = to_ns(start), to_ns(end)
    except ValueError as e:
        raise click.ClickException(str(e)) from None
    router = Router(settings.routing)
    groups: dict[tuple, list[str]] = {}
    for s in symbols:
        r = router.route(s, asset_type, exchange)
        if dataset is None and r.route.historical != "databento":
            raise click.ClickException(
                f"{s} routes to historical provider {r.route.historical!r} ({r.tier_name} {r.chosen_by!r}); dm fetch "
                "fetches from Databento: route it there in [routing] or pass --dataset")
        ds = dataset or r.route.dataset
        ex = r.route.exchange or ds
        groups.setdefault((ds, stype_in or r.stype_in, ex), []).append(s)
    return [FetchRequest(ds, schema, tuple(sorted(set(syms))), st, start_ns, end_ns, ex, command)
            for (ds, st, ex), syms in groups.items() for schema in schemas]


def _open_backfill(config_path: str):
    from dm.backfill import make_progress
    from dm.databento.historical import DatabentoHistorical
    from dm.storage import open_storage

    cfg = _load(config_path)
    settings = _settings(config_path)
    try:
        st = open_storage(cfg.storage.url, migrate=True)
    except DmError as e:
        raise click.ClickException(str(e)) from None
    eng = DatabentoHistorical(st, settings, progress=make_progress())
    return st, settings, eng


def _plan_lines(plans, verdict) -> list[str]:
    from dm.backfill import usd

    lines = []
    tot = [0, 0, 0]
    for p in plans:
        q = p.quote
        done = len(p.chunks) - len(p.todo)
        lines.append(f"{p.request.describe()}: {len(p.chunks)} chunk(s), {done} already stored; to fetch "
                     f"{q.records:,} records, {q.bytes:,} B, {usd(q.usd_nano)}")
        lines += [f"  note: {n}" for n in p.notes]
        tot = [tot[0] + q.records, tot[1] + q.bytes, tot[2] + q.usd_nano]
    lines.append(f"total: {tot[0]:,} records, {tot[1]:,} billable B, {usd(tot[2])}")
    lines.append(verdict.describe())
    return lines


def _exit_refused(e) -> None:
    click.echo(str(e), err=True)
    sys.exit(3 if e.needs_confirm else 4)


def _run_fetch(config_path, symbols, schemas, start, end, dataset, stype_in, asset_type, exchange, confirm, dry_run, as_json):
    from dm.backfill import usd
    from dm.errors import BudgetRefused

    st, settings, eng = _open_backfill(config_path)
    try:
        reqs = _fetch_requests(settings, symbols, schemas, start, end, dataset, stype_in, asset_type, exchange)
        try:
            plans, verdict, results = eng.fetch(reqs, confirm=confirm, dry_run=dry_run)
        except BudgetRefused as e:
            if as_json:
                _echo_json({"refused": True, "verdict": e.verdict.as_dict() if e.verdict else None})
            else:
                click.echo(str(e), err=True)
            sys.exit(3 if e.needs_confirm else 4)
        except DmError as e:
            raise click.ClickException(str(e)) from None
        if as_json:
            _echo_json({"plans": [p.as_dict() for p in plans], "verdict": verdict.as_dict(), "dry_run": dry_run,
                        "results": [r.as_dict() for r in results]})
        else:
            for line in _plan_lines(plans, verdict):
                click.echo(line)
            if dry_run:
                click.echo("dry run: nothing fetched")
            for r in results:
                rows = ", ".join(f"{t} {n:,}" for t, n in sorted(r.rows.items())) or "none"
                click.echo(f"job {r.job_id}: {r.chunks_done} chunk(s) fetched, {r.chunks_skipped} already done, "
                           f"{r.chunks_failed} failed; {r.records:,} records in {r.requests} request(s), "
                           f"{r.bytes:,} B, {usd(r.usd_nano)}; rows stored: {rows}")
                for err in r.errors:
                    click.echo(f"  failed: {err}", err=True)
        if any(r.chunks_failed for r in results):
            sys.exit(1)
    finally:
        st.close()


def _fetch_options(fn):
    for opt in reversed([
        click.option("--schema", "schemas", multiple=True, default=("trades",), show_default=True,
                     help="Databento schema (repeatable): trades, mbp-1, tbbo, mbp-10, ohlcv-1s/1m/1h/1d."),
        click.option("--start", required=True, help="Inclusive: YYYY-MM-DD, ISO 8601 (UTC unless an offset) or ns."),
        click.option("--end", required=True, help="Exclusive, same forms."),
        click.option("--dataset", default=None, help="Override the routed dataset (e.g. GLBX.MDP3)."),
        click.option("--stype-in", default=None, help="Override the inferred input symbology."),
        click.option("--asset-type", default=None, help="For routing tier 2."),
        click.option("--exchange", default=None, help="For routing tier 2."),
        config_option,
        click.option("--json", "as_json", is_flag=True, help="Machine-readable output."),
    ]):
        fn = opt(fn)
    return fn


@main.command("fetch")
@click.argument("symbol")
@_fetch_options
@click.option("--confirm", is_flag=True, help="Approve a cost above [backfill] auto_approve_usd (limits still apply).")
@click.option("--dry-run", is_flag=True, help="Plan and price only: no get_range call.")
def fetch_cmd(symbol, schemas, start, end, dataset, stype_in, asset_type, exchange, config_path, as_json, confirm, dry_run) -> None:
    """Fetch SYMBOL's history from its routed provider (Databento) into storage: chunked, priced,
    budget-guarded, resumable; a rerun fetches nothing already stored. An operator command: it
    writes its own idempotent transactions (the persister stays the live writer)."""
    _run_fetch(config_path, [symbol], schemas, start, end, dataset, stype_in, asset_type, exchange, confirm, dry_run, as_json)


@main.group()
def backfill() -> None:
    """Priced historical backfill: estimate, fetch, fill-gaps, status, cost-report."""


@backfill.command("estimate")
@click.argument("symbols", nargs=-1, required=True)
@_fetch_options
def backfill_estimate(symbols, schemas, start, end, dataset, stype_in, asset_type, exchange, config_path, as_json) -> None:
    """Price a request with Databento's free metadata calls only (records, billable bytes, USD
    per dataset × schema, total) and say what the budget guard would do."""
    st, settings, eng = _open_backfill(config_path)
    try:
        reqs = _fetch_requests(settings, symbols, schemas, start, end, dataset, stype_in, asset_type, exchange)
        try:
            plans, verdict = eng.estimate(reqs)
        except DmError as e:
            raise click.ClickException(str(e)) from None
        if as_json:
            from dm.backfill import usd

            q = [p.quote for p in plans]
            _echo_json({"plans": [p.as_dict() for p in plans], "verdict": verdict.as_dict(),
                        "total": {"records": sum(x.records for x in q), "bytes": sum(x.bytes for x in q),
                                  "usd_nano": sum(x.usd_nano for x in q), "usd": usd(sum(x.usd_nano for x in q))}})
        else:
            for line in _plan_lines(plans, verdict):
                click.echo(line)
    finally:
        st.close()


@backfill.command("fetch")
@click.argument("symbols", nargs=-1, required=True)
@_fetch_options
@click.option("--confirm", is_flag=True, help="Approve a cost above [backfill] auto_approve_usd (limits still apply).")
@click.option("--dry-run", is_flag=True, help="Plan and price only: no get_range call.")
def backfill_fetch(symbols, schemas, start, end, dataset, stype_in, asset_type, exchange, config_path, as_json, confirm, dry_run) -> None:
    """Fetch SYMBOLS' history (see `dm fetch`)."""
    _run_fetch(config_path, list(symbols), schemas, start, end, dataset, stype_in, asset_type, exchange, confirm, dry_run, as_json)


@backfill.command("fill-gaps")
@config_option
@click.option("--gap", "gap_ids", multiple=True, type=int, help="Only these gap ids (repeatable).")
@click.option("--confirm", is_flag=True, help="Approve a cost above [backfill] auto_approve_usd (limits still apply).")
@click.option("--dry-run", is_flag=True, help="Route and price only: nothing fetched, no gap changed.")
@click.option("--json", "as_json", is_flag=True)
def backfill_fill_gaps(config_path, gap_ids, confirm, dry_run, as_json) -> None:
    """Close the gap ledger: each open gap goes to its instrument's historical provider and ends
    `filled` (with its job ids) or `unfillable` (book deltas no venue serves again, with the
    reason); gaps no provider can fill yet stay open."""
    import dataclasses

    from dm.backfill import fill_gaps, make_progress, usd
    from dm.errors import BudgetRefused
    from dm.storage import open_storage

    cfg = _load(config_path)
    settings = _settings(config_path)
    st = open_storage(cfg.storage.url, migrate=True)
    try:
        try:
            outcomes, verdict = fill_gaps(st, settings, confirm=confirm, dry_run=dry_run, gap_ids=gap_ids or None,
                                          filler_kw={"progress": make_progress(),
                                                     # venue REST fillers ask the configured venues (a replay in the demo)
                                                     "rest_urls": {p.kind: p.rest_url for p in cfg.providers.values() if p.rest_url}})
        except BudgetRefused as e:
            _exit_refused(e)
        except DmError as e:
            raise click.ClickException(str(e)) from None
        if as_json:
            _echo_json({"gaps": [dataclasses.asdict(o) for o in outcomes],
                        "verdict": verdict.as_dict() if verdict else None, "dry_run": dry_run})
        else:
            for o in outcomes:
                cost = f" ({usd(o.cost_nano)})" if o.cost_nano else ""
                click.echo(f"gap {o.gap_id}: {o.state}{cost}: {o.detail}")
            if verdict is not None:
                click.echo(verdict.describe())
            if not outcomes:
                click.echo("no open gaps")
        if any(o.state == "failed" for o in outcomes):
            sys.exit(1)
    finally:
        st.close()


@backfill.command("status")
@config_option
@click.option("--job", "job_id", type=int, default=None, help="One job's chunks.")
@click.option("--json", "as_json", is_flag=True)
def backfill_status(config_path, job_id, as_json) -> None:
    """Backfill jobs (or one job's chunks) with their state, rows, bytes and spend."""
    from dm.backfill import Ledger, usd
    from dm.databento.times import iso
    from dm.storage import open_storage

    cfg = _load(config_path)
    st = open_storage(cfg.storage.url, migrate=True)
    try:
        led = Ledger(st)
        if job_id is not None:
            job = led.job(job_id)
            if job is None:
                raise click.ClickException(f"no backfill job {job_id}")
            chunks = led.chunks(job_id)
            if as_json:
                _echo_json({"job": job, "chunks": chunks})
                return
            click.echo(f"job {job['id']} {job['state']}: {job['dataset']} {job['schema']} {job['symbols']} "
                       f"[{iso(job['start_ns'])}, {iso(job['end_ns'])}) {job['detail']}")
            for c in chunks:
                click.echo(f"  chunk {c['id']} {c['state']:<8} [{iso(c['start_ns'])}, {iso(c['end_ns'])}) stored to "
                           f"{iso(c['resume_ns'])}: {c['records']:,} records, {c['rows']:,} rows, {c['bytes']:,} B, "
                           f"{usd(c['usd_nano'])} (quoted {usd(c['quoted_usd_nano'])}), {c['requests']} request(s)"
                           + (f" error: {c['error']}" if c['error'] else ""))
            return
        jobs = led.jobs()
        chunks = led.chunks()
        if as_json:
            _echo_json({"jobs": jobs})
            return
        if not jobs:
            click.echo("no backfill jobs")
        for j in jobs:
            cs = [c for c in chunks if c["job_id"] == j["id"]]
            done = sum(c["state"] == "done" for c in cs)
            spent = sum(int(c["usd_nano"]) for c in cs)
            rows = sum(int(c["rows"]) for c in cs)
            click.echo(f"job {j['id']} {j['state']:<8} {j['command']:<9} {j['dataset']} {j['schema']} {j['symbols']} "
                       f"[{iso(j['start_ns'])}, {iso(j['end_ns'])}): {done}/{len(cs)} chunks, {rows:,} rows, {usd(spent)}"
                       + (f" (gap {j['gap_id']})" if j['gap_id'] is not None else ""))
    finally:
        st.close()


@backfill.command("cost-report")
@config_option
@click.option("--json", "as_json", is_flag=True)
def backfill_cost_report(config_path, as_json) -> None:
    """Spend per UTC day, month, dataset, schema and chunk (every paid request counted once)."""
    from dm.backfill import Ledger, usd
    from dm.storage import open_storage

    cfg = _load(config_path)
    st = open_storage(cfg.storage.url, migrate=True)
    try:
        rep = Ledger(st).cost_report()
    finally:
        st.close()
    if as_json:
        _echo_json(rep)
        return
    for group in ("day", "month", "dataset", "schema", "chunk"):
        click.echo(f"by {group}:")
        for k, v in rep[group].items():
            quoted = f" (quoted {usd(v['quoted_usd_nano'])})" if "quoted_usd_nano" in v else ""
            click.echo(f"  {k:<12} {usd(v['usd_nano']):>14} {v['bytes']:>14,} B {v['records']:>12,} records "
                       f"{v['requests']:>4} request(s){quoted}")
    t = rep["total"]
    click.echo(f"total: {usd(t['usd_nano'])}, {t['bytes']:,} B, {t['records']:,} records, {t['requests']} request(s)")


@main.command("fake-databento")
@click.option("--data", "data_dir", required=True, type=click.Path(exists=True, file_okay=False), help="Folder of *.dbn / *.dbn.zst files.")
@click.option("--hist-port", default=0, show_default=True, help="Historical HTTPS port (0: a free one; see --ready-file).")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--key", default=None, help="The API key it accepts (default $DATABENTO_API_KEY).")
@click.option("--usd-per-gb", default=1.0, show_default=True, help="Price per 10^9 billable bytes.")
@click.option("--ca-file", default="var/fake-databento-ca.pem", show_default=True, help="Where to write the local CA (PEM) clients must trust.")
@click.option("--ready-file", default=None, type=click.Path(dir_okay=False), help="Write {\"hist_port\", \"ca_file\", \"url\"} JSON here once listening.")
@click.option("--fault", "faults", multiple=True, help='A scripted fault as JSON, e.g. \'{"method": "timeseries.get_range", "status": 429}\' (repeatable).')
def fake_databento(data_dir, hist_port, host, key, usd_per_gb, ca_file, ready_file, faults) -> None:
    """Serve DBN files like Databento's historical gateway (HTTPS with a local CA, Basic auth,
    zstd DBN streams, metadata/symbology calls, scripted faults) for tests. The live gateway comes
    with the Databento live worker."""
    import json
    from pathlib import Path

    from dm.databento.fake import FakeHistoricalGateway, Fault

    dmlog.setup("console", "info", "fake-databento")
    key = key or os.environ.get("DATABENTO_API_KEY")
    if not key:
        raise click.ClickException("give --key or set $DATABENTO_API_KEY")
    try:
        fl = [Fault.from_dict(json.loads(f)) for f in faults]
    except (ValueError, TypeError) as e:
        raise click.ClickException(f"--fault: {e}") from None
    gw = FakeHistoricalGateway(data_dir, key=key, usd_per_gb=usd_per_gb, host=host, port=hist_port, ca_file=ca_file, faults=fl)

    def ready(g):
        info = {"hist_port": g.port, "url": g.url, "ca_file": str(Path(g.ca_file).resolve())}
        if ready_file:
            tmp = Path(ready_file).with_suffix(".tmp")
            tmp.write_text(json.dumps(info))
            tmp.replace(ready_file)
        click.echo(f"fake Databento historical gateway on {g.url} (CA: {info['ca_file']}; datasets {g.store.datasets()})", err=True)

    gw.serve_forever(ready)


@main.command("fake-databento-live")
@click.option("--data", "data_dir", required=True, type=click.Path(exists=True, file_okay=False), help="Folder of *.dbn / *.dbn.zst files.")
@click.option("--live-port", default=0, show_default=True, help="TCP port (0: a free one; see --ready-file). Databento's is 13000.")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--key", default=None, help="The API key it accepts (default $DATABENTO_API_KEY).")
@click.option("--version", "dbn_version", default=3, show_default=True, type=click.IntRange(2, 3), help="DBN version of the stream.")
@click.option("--chunk-bytes", default=65521, show_default=True, help="Bytes per write (cuts records like TCP segments do).")
@click.option("--close-at-end", is_flag=True, help="Close (FIN) once a session was sent everything.")
@click.option("--ready-file", default=None, type=click.Path(dir_okay=False), help='Write {"live_port", "address"} JSON here once listening.')
@click.option("--live-fault", "faults", multiple=True, help='A scripted fault as JSON, e.g. \'{"action": "rst", "after_records": 1000}\' (repeatable).')
def fake_databento_live(data_dir, live_port, host, key, dbn_version, chunk_bytes, close_at_end, ready_file, faults) -> None:
    """Serve DBN files like Databento's Live Subscription Gateway (raw TCP protocol: greeting,
    CRAM authentication, subscriptions with intraday replay, DBN stream with symbol mappings and
    heartbeats, scripted faults) for tests and the Databento live worker."""
    import json
    from pathlib import Path

    from dm.databento.fake_live import FakeLiveGateway, faults_from_json

    dmlog.setup("console", "info", "fake-databento-live")
    key = key or os.environ.get("DATABENTO_API_KEY")
    if not key:
        raise click.ClickException("give --key or set $DATABENTO_API_KEY")
    try:
        fl = [f for text in faults for f in faults_from_json(text)]
    except (ValueError, TypeError) as e:
        raise click.ClickException(f"--live-fault: {e}") from None
    gw = FakeLiveGateway(data_dir, key=key, host=host, port=live_port, faults=fl, version=dbn_version,
                         chunk_bytes=chunk_bytes, close_at_end=close_at_end)

    def ready(g):
        if ready_file:
            tmp = Path(ready_file).with_suffix(".tmp")
            tmp.write_text(json.dumps({"live_port": g.port, "address": g.address}))
            tmp.replace(ready_file)
        click.echo(f"fake Databento live gateway on {g.address} (datasets {g.store.datasets()})", err=True)

    gw.serve_forever(ready)


if __name__ == "__main__":
    main()


# --- history (issue 10) ---------------------------------------------------------------------------

def _history_options(f):
    for opt in reversed([
        click.argument("symbol"),
        click.option("--exchange", default=None, help="Canonical exchange, e.g. BINANCE (default: every exchange)."),
        click.option("--schema", type=click.Choice(["trades", "bbo", "depth", "book_deltas", "bars", "mbp_events",
                                                    "statistics", "definitions"]), default="trades",
                     show_default=True),
        click.option("--start", default=None, help="ns since the epoch or ISO-8601 (UTC when no zone); inclusive."),
        click.option("--end", default=None, help="ns since the epoch or ISO-8601; exclusive."),
        click.option("--interval", default="1m", show_default=True, help="Bars: 1s, 1m, 1h, 1d, ..."),
        click.option("--source", type=click.Choice(["dm", "venue", "all"]), default="dm", show_default=True,
                     help="Bars: built by dm, received from the venue, or both."),
        click.option("--stat-type", type=int, default=None,
                     help="Statistics: only this stat_type (dm.records.StatType code, e.g. 9 open interest)."),
        config_option, url_option,
        click.option("--archive-dir", default=None, help="Retention archive to read too (default: [retention] archive_dir)."),
    ]):
        f = opt(f)
    return f


def _history_chunks(config_path, url, symbol, exchange, schema, start, end, interval, source, archive_dir=None,
                    chunk_rows=1 << 18, stat_type=None):
    from dm.history import History

    if archive_dir is None:
        ret = _retention(config_path)
        archive_dir = None if ret is None else ret["archive_dir"]
    h = History(_storage(config_path, url), archive_dir=archive_dir)
    h._own = True
    try:
        yield from h.iter(schema, symbol, exchange, start, end, chunk_rows=chunk_rows,
                          interval=interval if schema == "bars" else None,
                          source=None if source == "all" else source, stat_type=stat_type)
    finally:
        h.close()


def _write_csv(chunks, out) -> int:
    """Chunks → CSV with the stored integers (exact ns, fixed point); returns rows."""
    import numpy as np

    from dm.history import flat_columns

    n, header = 0, False
    for arr in chunks:
        cols = flat_columns(arr)
        if not header:
            out.write(",".join(cols) + "\n")
            header = True
        lists = [np.char.decode(v, "utf-8", "replace").tolist() if v.dtype.kind == "S" else v.tolist()
                 for v in cols.values()]
        out.write("".join(",".join(map(str, row)) + "\n" for row in zip(*lists)))
        n += len(arr)
    return n




@main.command("history")
@_history_options
@click.option("-n", "--limit", default=0, help="At most N rows (0: all).")
def history_cmd(symbol, exchange, schema, start, end, interval, source, stat_type, config_path, url, archive_dir,
                limit) -> None:
    """Print stored records of SYMBOL in [--start, --end) as CSV (integers: ns, fixed point)."""
    import sys

    chunks = _history_chunks(config_path, url, symbol, exchange, schema, start, end, interval, source, archive_dir,
                             stat_type=stat_type)
    if limit:
        def cut(it, left=limit):
            for a in it:
                if left <= 0:
                    break
                yield a[:left]
                left -= len(a)
        chunks = cut(chunks)
    _write_csv(chunks, sys.stdout)


@main.command("export")
@_history_options
@click.option("--format", "fmt", type=click.Choice(["csv", "parquet", "dbn"]), default="csv", show_default=True)
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False), help="File to write.")
def export_cmd(symbol, exchange, schema, start, end, interval, source, stat_type, config_path, url, archive_dir, fmt,
               output) -> None:
    """Export stored records of SYMBOL in [--start, --end) to CSV, zstd Parquet (pyarrow) or DBN
    v3 (trades, bars as ohlcv-1s/1m/1h/1d, bbo as mbp-1, depth as mbp-10, statistics, definitions
    as definition: mapping in dm.history.to_dbn; the databento package reads it back). A value
    DBN cannot hold (a fractional size, a dm-only stat_type, ..) is refused by name."""
    chunks = _history_chunks(config_path, url, symbol, exchange, schema, start, end, interval, source, archive_dir,
                             stat_type=stat_type)
    import os

    tmp = f"{output}.tmp"
    try:
        if fmt == "csv":
            with open(tmp, "w") as f:
                n = _write_csv(chunks, f)
        elif fmt == "parquet":
            from dm.history import write_parquet

            n = write_parquet(chunks, tmp)
        else:
            from dm.history import write_dbn

            n = write_dbn(chunks, tmp, schema)
    except BaseException:
        if os.path.exists(tmp):  # a refused value: no half-written file left behind
            os.unlink(tmp)
        raise
    os.replace(tmp, output)
    click.echo(f"{n} {schema} rows → {output}", err=True)
