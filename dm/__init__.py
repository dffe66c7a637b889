"""dm: a market data manager. Venue feeds → Cython codecs → shared-memory rings → trading
processes (``dm.client``) and storage (PostgreSQL via COPY, or embedded SQLite)."""

__version__ = "0.1.0"
