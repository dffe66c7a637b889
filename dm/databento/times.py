"""Time values at the edges of the historical API: ns since the UNIX epoch (dm's unit) ↔ what
people type and what Databento's HTTP API accepts and returns."""
from __future__ import annotations

import datetime as _dt
import re

NS_PER_DAY = 86_400 * 1_000_000_000
_EPOCH = _dt.datetime(1970, 1, 1, tzinfo=_dt.timezone.utc)
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_FRAC = re.compile(r"^(.*T\d{2}:\d{2}(?::\d{2})?)(?:\.(\d{1,9}))?(Z|[+-]\d{2}:?\d{2})?$")

__all__ = ["NS_PER_DAY", "to_ns", "iso", "iso_date", "day_of", "is_date"]


def is_date(text: str) -> bool:
    return bool(_DATE.match(text.strip()))


def to_ns(value: str | int) -> int:
    """ns since the epoch from an int (ns), a decimal string of ns, ``YYYY-MM-DD`` (midnight UTC)
    or ISO 8601 ``YYYY-MM-DDTHH:MM[:SS[.fffffffff]][Z|±HH:MM]`` (UTC when no offset; up to 9
    fractional digits, exact). Raises ``ValueError`` naming the value."""
    if isinstance(value, bool):
        raise ValueError(f"not a time: {value!r}")
    if isinstance(value, int):
        return value
    s = str(value).strip()
    if s.isdigit():
        return int(s)
    if _DATE.match(s):
        d = _dt.date.fromisoformat(s)
        return (d - _dt.date(1970, 1, 1)).days * NS_PER_DAY
    m = _FRAC.match(s.replace(" ", "T"))
    if not m:
        raise ValueError(f"not a time (ns, YYYY-MM-DD or ISO 8601): {value!r}")
    head, frac, tz = m.groups()
    tz = tz or "+00:00"
    if tz == "Z":
        tz = "+00:00"
    try:
        t = _dt.datetime.fromisoformat(head + tz)
    except ValueError:
        raise ValueError(f"not a time (ns, YYYY-MM-DD or ISO 8601): {value!r}") from None
    delta = t - _EPOCH
    ns = (delta.days * 86_400 + delta.seconds) * 1_000_000_000
    return ns + (int(frac.ljust(9, "0")) if frac else 0)


def iso(ns: int) -> str:
    """``YYYY-MM-DDTHH:MM:SS.fffffffffZ`` (exact ns, UTC)."""
    s, f = divmod(int(ns), 1_000_000_000)
    t = _EPOCH + _dt.timedelta(seconds=s)
    return f"{t:%Y-%m-%dT%H:%M:%S}.{f:09d}Z"


def iso_date(ns: int) -> str:
    """The UTC date of ``ns`` as ``YYYY-MM-DD``."""
    return (_dt.date(1970, 1, 1) + _dt.timedelta(days=int(ns) // NS_PER_DAY)).isoformat()


def day_of(ns: int) -> int:
    """Days since 1970-01-01 (UTC) of ``ns``."""
    return int(ns) // NS_PER_DAY
