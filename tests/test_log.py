"""Logging: secrets are redacted in every form they take, and stdlib loggers (aiohttp, psycopg,
asyncio, warnings) go through the same structlog pipeline — checked on the stderr of real
processes. The end-to-end run with a password DSN is in test_supervisor_procs.py."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from dm.log import add_secret, redact
from tests.e2e import ROOT

PW = "S3cr3t-pw"


@pytest.mark.parametrize("text, kept", [
    (f"postgresql://dm:{PW}@db:5432/dm", "postgresql://dm:***@db:5432/dm"),
    (f"postgres://:{PW}@db/dm", "postgres://:***@db/dm"),
    (f"postgresql://dm@db/dm?sslmode=require&password={PW}&x=1", "postgresql://dm@db/dm?sslmode=require&password=***&x=1"),
    (f"host=db user=dm password={PW} dbname=dm", "host=db user=dm password=*** dbname=dm"),
    (f"host=db password='{PW} with space' dbname=dm", "host=db password=*** dbname=dm"),
    (f"PASSWORD = {PW}", "PASSWORD = ***"),
    (f"GET /v0/timeseries?dataset=GLBX&key={PW}", "GET /v0/timeseries?dataset=GLBX&key=***"),
    (f"api_key={PW} token={PW}", "api_key=*** token=***"),
    (f"{{'password': '{PW}', 'user': 'dm'}}", "{'password': '***', 'user': 'dm'}"),
    (f'{{"api_key": "{PW}"}}', '{"api_key": "***"}'),
    ("key db-AbCdEfGhIjKlMnOpQrStUvWxYz012 used", "key db-*** used"),
])
def test_redact_every_form(text, kept):
    assert redact(text) == kept


def test_redact_leaves_ordinary_text_alone():
    for text in ("started child=binance pid=12", "ws://127.0.0.1:9000/stream", "monkey=1 sort_key=trade_id",
                 "http://127.0.0.1:9090/health"):
        assert redact(text) == text


def test_registered_secret_is_redacted_anywhere_and_url_encoded():
    add_secret("p@ss/wörd-42")
    assert redact("auth failed for p@ss/wörd-42 at x") == "auth failed for *** at x"
    assert redact("dsn postgresql://u:p%40ss%2Fw%C3%B6rd-42@h/db") == "dsn postgresql://u:***@h/db"


SCRIPT = r"""
import asyncio, logging, warnings
from dm import log
log.setup("{fmt}", "info", "t")
log.get("dm.test").info("dm event", url="postgresql://u:{pw}@h/db", opts={{"password": "{pw}", "n": 1}}, obj=ValueError("password={pw}"))
logging.getLogger("psycopg").warning("connection failed: host=h password=%s", "{pw}")
logging.getLogger("aiohttp.client").error("GET https://hist.databento.com/x?key={key} failed")
warnings.warn("deprecated; token={pw}")
async def boom():
    raise RuntimeError("task died with postgresql://u:{pw}@h/db")
async def main():
    asyncio.get_running_loop().create_task(boom())
    await asyncio.sleep(0.05)
asyncio.run(main())
import gc; gc.collect()
raise SystemError("crash postgresql://u:{pw}@h/db")
"""

KEY = "db-AbCdEfGhIjKlMnOpQrStUvWxYz012"


def run_script(fmt: str) -> str:
    r = subprocess.run([sys.executable, "-c", SCRIPT.format(fmt=fmt, pw=PW, key="ENVKEY12345")], cwd=ROOT, capture_output=True, text=True,
                       timeout=60, env={"DATABENTO_API_KEY": "ENVKEY12345", "PATH": "/usr/bin:/bin"})
    assert r.returncode == 1
    return r.stderr


def test_stdlib_logging_goes_through_the_pipeline_as_json_redacted():
    err = run_script("json")
    assert PW not in err and "ENVKEY12345" not in err and KEY not in err
    events = [json.loads(line) for line in err.splitlines()]  # every line is JSON: nothing bypassed
    by = {e.get("logger", "dm"): e for e in events}
    assert by["psycopg"]["event"] == "connection failed: host=h password=***" and by["psycopg"]["proc"] == "t"
    assert by["aiohttp.client"]["event"] == "GET https://hist.databento.com/x?key=*** failed"
    assert "token=***" in by["py.warnings"]["event"]
    assert by["asyncio"]["level"] == "error" and "postgresql://u:***@h/db" in json.dumps(by["asyncio"])
    dm_event = next(e for e in events if e["event"] == "dm event")
    assert dm_event["url"] == "postgresql://u:***@h/db" and dm_event["opts"] == {"password": "***", "n": 1}
    assert dm_event["obj"] == "ValueError('password=***')"
    crash = events[-1]
    assert crash["event"] == "unhandled exception" and "SystemError: crash postgresql://u:***@h/db" in crash["exception"]


def test_console_format_is_redacted_too():
    err = run_script("console")
    assert PW not in err and "ENVKEY12345" not in err
    assert "[psycopg]" in err and "password=***" in err and "unhandled exception" in err
