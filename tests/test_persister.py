"""The persister under a database outage: PostgreSQL refuses connections for a while mid-run;
the persister keeps its batch, retries with backoff, never exits, and every record still lands
exactly once."""
from __future__ import annotations

import json
import time

import psycopg
import pytest

from dm.storage import open_storage
from tests.conftest import PG_ADMIN_URL
from tests.e2e import leftover_segments, start_supervisor, write_config


@pytest.mark.timeout(180)
def test_database_outage_loses_nothing(tmp_path, instance, pg_url):
    dbname = pg_url.rsplit("/", 1)[1]
    cfg = write_config(tmp_path, instance, pg_url, speed=8.0, channels=("aggTrade", "bookTicker"))
    sup = start_supervisor(cfg, tmp_path / "supervisor.log")
    stats_path = tmp_path / "run" / instance / "persister.stats.json"
    admin = psycopg.connect(PG_ADMIN_URL, autocommit=True)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:  # wait until rows flow
            try:
                st = json.loads(stats_path.read_text())
                if st["records"] > 0:
                    break
            except (OSError, ValueError):
                pass
            time.sleep(0.05)
        pid = st["pid"]
        admin.execute(f'ALTER DATABASE "{dbname}" WITH ALLOW_CONNECTIONS false')
        admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (dbname,))
        time.sleep(3.0)
        admin.execute(f'ALTER DATABASE "{dbname}" WITH ALLOW_CONNECTIONS true')
        assert sup.wait(timeout=120) == 0
    finally:
        admin.execute(f'ALTER DATABASE "{dbname}" WITH ALLOW_CONNECTIONS true')
        admin.close()
        if sup.poll() is None:
            sup.kill()
    final = json.loads(stats_path.read_text())
    assert final["pid"] == pid and final["failures"] > 0  # it retried, it was not restarted
    log = (tmp_path / "supervisor.log").read_text()
    assert "storage failing" in log and "storage recovered" in log and "restarting" not in log
    st = open_storage(pg_url)
    try:
        assert st.counts()["trades"] == 1240 and st.counts()["bbo"] == 5408
    finally:
        st.close()
    assert leftover_segments(instance) == []
