"""Stub of the Cython module dm.databento._live (see dm/databento/_live.pyx)."""

class LiveTracker:
    idmap: dict[int, int]
    unmapped_ids: dict[int, int]
    last_ts: int
    at_last: int
    resume_ts: int
    skip_left: int
    resuming: bool
    unmapped: int
    replayed: int
    passed: int
    def invalidate(self) -> None: ...
    def reset_ids(self) -> None: ...
    def resume(self) -> None: ...
    def cancel_resume(self) -> None: ...
    def process(self, buf: bytearray) -> int: ...
