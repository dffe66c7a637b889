"""dm's command line (click). Thin: parse, call, print."""
from __future__ import annotations

import os
import sys
from datetime import datetime, timezone

import click

from dm import config as dmconfig
from dm import log as dmlog
from dm.errors import DmError

DEFAULT_CONFIG = os.environ.get("DM_CONFIG", "conf/prod.toml")
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


@main.command()
@click.argument("files", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=True))
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=0, show_default=True, help="0 picks a free port (see --ready-file).")
@click.option("--speed", default=1.0, show_default=True, help="Recorded pace × speed; 0 = as fast as possible.")
@click.option("--once", is_flag=True, help="Exit once the recording was replayed to the end to --connections clients.")
@click.option("--connections", default=1, show_default=True, help="With --once: how many connections to serve before exiting.")
@click.option("--ready-file", type=click.Path(dir_okay=False), default=None, help="Write the bound port here once listening.")
@click.option("--log-format", type=click.Choice(["console", "json"]), default="console", show_default=True)
@click.option("--log-level", type=click.Choice(["debug", "info", "warning", "error", "critical"]), default="info", show_default=True)
def replay(files, host, port, speed, once, connections, ready_file, log_format, log_level) -> None:
    """Serve recorded venue sessions (cryptofeed raw-data files) over websocket + REST, frame
    for frame as the venue sent them."""
    from dm.lifeline import tie_to_supervisor
    from dm.replay import run_replay

    tie_to_supervisor()
    dmlog.setup(log_format, log_level, "replay")
    run_replay(list(files), host=host, port=port, speed=speed, once=once, ready_file=ready_file, expected_connections=connections)


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


url_option = click.option("--url", default=None, help="Storage URL (default: the config's storage.url / $DM_STORAGE_URL).")


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
        click.echo(json.dumps(st.stats(), indent=2, default=str))
    finally:
        st.close()


@db.command()
@config_option
@url_option
def compress(config_path: str, url: str | None) -> None:
    """Compress old partitions (TimescaleDB) or vacuum/analyse."""
    st = _storage(config_path, url)
    try:
        click.echo(st.compress())
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


if __name__ == "__main__":
    main()
