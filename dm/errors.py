"""Every exception dm raises. Cython modules import these and raise them; none defines its own."""
from __future__ import annotations


class DmError(Exception):
    """Base class of every dm error."""


class ConfigError(DmError):
    """The configuration file is missing, malformed or inconsistent; the message names the key."""


class CodecError(DmError, ValueError):
    """A frame could not be decoded into records.

    Attributes: ``venue`` (e.g. ``"BINANCE"``), ``field`` (JSON key or ``None``), ``offset``
    (byte offset in the frame where decoding stopped, or -1) and ``reason``."""

    def __init__(self, venue: str, reason: str, field: str | None = None, offset: int = -1):
        self.venue = venue
        self.reason = reason
        self.field = field
        self.offset = offset
        where = f" field {field!r}" if field else ""
        at = f" at byte {offset}" if offset >= 0 else ""
        super().__init__(f"{venue}:{where}{at}: {reason}")

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, CodecError)
            and (self.venue, self.reason, self.field, self.offset)
            == (other.venue, other.reason, other.field, other.offset)
        )

    def __hash__(self) -> int:
        return hash((self.venue, self.reason, self.field, self.offset))

    def __reduce__(self):
        return (type(self), (self.venue, self.reason, self.field, self.offset))


class FixedPointError(CodecError):
    """A decimal value does not fit its fixed-point field (i64/u64 at 1e-9) or has more than
    9 significant fractional digits. Never wrapped, never rounded."""


class UnknownInstrumentError(CodecError):
    """A frame names a venue symbol the codec has no instrument id for."""


class DbnError(CodecError):
    """A DBN stream could not be converted: truncated or corrupt bytes, or a value that does not
    fit its dm field. ``venue`` is "DATABENTO", ``field`` the DBN field, ``offset`` the byte
    offset in the (decompressed) DBN stream where the bad record or header field starts."""


class RingError(DmError):
    """A shared-memory segment could not be created, opened or used."""


class LayoutMismatchError(RingError):
    """A segment was written with another layout version or record-layout hash."""


class ProducerGoneError(RingError):
    """The segment's producer closed it or died (pid gone / heartbeat stale)."""


class ClosedError(RingError):
    """This process closed the reader, writer, queue or subscription it tried to use (or closed
    it from another thread while the call was waiting)."""


class SegmentInUseError(RingError):
    """A shared-memory segment's producer is alive (``pid``), so it cannot be created over,
    re-opened or unlinked by another process."""

    def __init__(self, message: str, pid: int = 0):
        super().__init__(message)
        self.pid = pid

    def __reduce__(self):
        return (type(self), (str(self), self.pid))


class RegistryError(RingError):
    """The shm service registry is full, a field does not fit its slot, or a slot was
    reclaimed from us."""


class BookError(DmError, ValueError):
    """A record given to ``L2Book`` is not a valid BOOK_DELTA for this book (wrong rtype or
    length, unknown side/action, other instrument, truncated buffer), or a value cannot be
    rendered (checksum decimals). ``index`` is the record's position in the buffer (or -1)."""

    def __init__(self, reason: str, index: int = -1):
        self.reason = reason
        self.index = index
        at = f" (record {index})" if index >= 0 else ""
        super().__init__(f"L2Book: {reason}{at}")

    def __reduce__(self):
        return (type(self), (self.reason, self.index))


class SymbologyError(DmError):
    """A venue symbol cannot be mapped to a canonical symbol, or two venue symbols map to one."""


class InstrumentError(DmError):
    """The instrument registry could not assign or find an instrument id."""


class StorageError(DmError):
    """The storage backend failed or its schema is not at the expected version. ``outage`` is
    True when the database could not be reached or did not answer (every caller is affected:
    connection refused or lost, a timeout), False when it answered and refused this call."""

    outage = False


class StorageDataError(StorageError):
    """The database refused a value or a row (out of range, a constraint other than a duplicate
    key, an identity conflict): retrying the same data cannot succeed. ``rejects`` lists the
    refused rows when the backend could tell which, as ``(rtype, row_index, reason)`` into the
    arrays given to ``Storage.write``; empty when it could not (the caller bisects)."""

    def __init__(self, message: str, rejects: list | None = None):
        super().__init__(message)
        self.rejects = list(rejects or ())


class StorageTimeoutError(StorageError):
    """The database gave no answer within ``storage.timeout_s`` (a hung server or a blackholed
    connection); the connection was closed and the call can be retried."""

    outage = True


class RecordingError(DmError):
    """A recording file line does not follow the cryptofeed raw-data grammar."""


class BackfillError(DmError):
    """A historical request failed: the provider refused it (its ``case: message``), retries
    were exhausted, or the data could not be stored. Never carries an API key."""


class BudgetRefused(BackfillError):
    """A backfill request was not run because of the budget guard (``[backfill]``): it needs
    ``--confirm`` (``needs_confirm``) or it exceeds a limit. ``verdict`` holds the numbers."""

    def __init__(self, message: str, verdict=None, needs_confirm: bool = False):
        super().__init__(message)
        self.verdict = verdict
        self.needs_confirm = needs_confirm


#: Exit status of a child that cannot work until someone changes something (a refused API key, a
#: configuration the venue rejects): ``EX_CONFIG`` of sysexits.h. The supervisor marks such a child
#: failed at once (no restart loop, one line in its log) and retries it after ``failed_retry_s``.
EXIT_FATAL = 78
