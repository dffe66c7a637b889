"""Shared fixtures: real data paths, a fresh PostgreSQL database per test session, a fresh
SQLite file per test, and unique shm instance names so runs never collide."""
from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "data"
PG_ADMIN_URL = os.environ.get("DM_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/test")


@pytest.fixture(scope="session")
def data_dir() -> Path:
    return DATA


@pytest.fixture
def instance() -> str:
    """A unique dm instance name: every shm segment a test creates is /dm.<instance>.*"""
    return "t" + uuid.uuid4().hex[:10]


@pytest.fixture
def sqlite_url(tmp_path) -> str:
    return f"sqlite:///{tmp_path / 'dm.sqlite'}"


def _pg_admin():
    import psycopg

    try:
        return psycopg.connect(PG_ADMIN_URL, autocommit=True, connect_timeout=3)
    except psycopg.OperationalError as e:
        if os.environ.get("DM_REQUIRE_PG"):
            raise
        pytest.skip(f"PostgreSQL not reachable at {PG_ADMIN_URL} ({e}); set DM_TEST_PG_URL")


@pytest.fixture
def pg_url():
    """A fresh PostgreSQL database for one test, dropped afterwards."""
    admin = _pg_admin()
    name = "dm_test_" + uuid.uuid4().hex[:12]
    admin.execute(f'CREATE DATABASE "{name}"')
    base = PG_ADMIN_URL.rsplit("/", 1)[0]
    try:
        yield f"{base}/{name}"
    finally:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


@pytest.fixture(params=["sqlite", "postgres"])
def storage_url(request, tmp_path):
    """Both storage backends: every test using this runs once on each."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'dm.sqlite'}"
    else:
        yield request.getfixturevalue("pg_url")
