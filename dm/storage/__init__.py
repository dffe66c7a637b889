"""dm storage: PostgreSQL (binary COPY) or embedded SQLite, one logical schema (DESIGN.md §5).

    from dm.storage import open_storage
    st = open_storage("sqlite:///var/dm.sqlite")      # or "postgresql://user@host:5432/db"
    st.migrate()
    st.write({RType.TRADE: trades_array})             # {table: rows inserted}

The schema, units and uniqueness keys are documented in ``dm/storage/base.py``.
"""
from __future__ import annotations

from dm.errors import StorageDataError, StorageError, StorageTimeoutError
from dm.storage.base import COLUMNS, RECORD_TABLES, TABLE_OF, Storage, redact_url

__all__ = ["open_storage", "Storage", "StorageError", "StorageDataError", "StorageTimeoutError", "COLUMNS",
           "TABLE_OF", "RECORD_TABLES", "redact_url"]


def open_storage(url: str, migrate: bool = False, timeout_s: float | None = None, connect: bool = True) -> Storage:
    """Open the database named by ``url``:

    * ``sqlite:///relative/path.sqlite``, ``sqlite:////absolute/path.sqlite`` (parent directories
      are created; WAL mode), ``sqlite:///:memory:``;
    * ``postgresql://user@host:port/db`` (or ``postgres://``).

    With ``migrate=True`` pending migrations are applied. ``timeout_s``: every call must be
    answered within it (``StorageTimeoutError``; see ``PostgresStorage``); None: no deadline.
    ``connect=False`` (PostgreSQL): connect on the first call instead. Raises ``StorageError``
    for an unknown scheme or when the database cannot be opened (messages carry no password)."""
    if url.startswith("sqlite:"):
        from dm.storage.sqlite import SqliteStorage

        st: Storage = SqliteStorage(url, timeout_s=timeout_s)
    elif url.startswith(("postgresql://", "postgres://")):
        from dm.storage.postgres import PostgresStorage

        st = PostgresStorage(url, timeout_s=timeout_s, connect=connect)
    else:
        raise StorageError(f"unknown storage URL {redact_url(url)!r}: use sqlite:///PATH or postgresql://user@host:port/db")
    if migrate:
        try:
            st.migrate()
        except BaseException:
            st.close()
            raise
    return st
