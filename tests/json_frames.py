"""Frame builders shared by the one-pass codec tests (tests/test_okx_one_pass.py,
tests/test_bybit_one_pass.py, tests/test_coinbase_one_pass.py): JSON objects written member by member, so that member order and
repeats can be drawn, and the malformed variants of a frame at every offset."""
from __future__ import annotations

import json

from hypothesis import strategies as st

#: bytes each position of a frame is replaced by, or preceded by, in ``every_offset``
SIGNIFICANT = b'"0,:[]{}x \x01\\'


def dump(pairs) -> str:
    """A JSON object from (key, value text) pairs, repeats kept."""
    return "{" + ",".join(f"{json.dumps(k)}:{v}" for k, v in pairs) + "}"


def j(v) -> str:
    """``v`` as compact JSON text."""
    return json.dumps(v, separators=(",", ":"))


@st.composite
def members(draw, obj: dict, decoys: dict, inner=None, repeat_one_in: int = 4) -> str:
    """``obj`` with its members in a drawn order, maybe (one draw in ``repeat_one_in``) one
    repeated (before or after with a decoy value from ``decoys``, or after with the same value),
    ``inner(key, value)`` re-serializing some members."""
    items = [(k, inner(k, v) if inner else j(v)) for k, v in obj.items()]
    items = draw(st.permutations(items)) if draw(st.booleans()) else items
    if draw(st.integers(0, repeat_one_in - 1)) == 0 and items:
        i = draw(st.integers(0, len(items) - 1))
        k, v = items[i]
        decoy = j(decoys.get(k, 0))
        where = draw(st.sampled_from(["decoy before", "decoy after", "same after"]))
        if where == "decoy before":
            items.insert(i, (k, decoy))
        else:
            items.append((k, decoy if where == "decoy after" else v))
    return dump(items)


def every_offset(b: bytes):
    """``b`` truncated at every offset, each byte replaced by and preceded by each byte of
    ``SIGNIFICANT``, and each byte deleted."""
    for i in range(len(b) + 1):
        yield b[:i]
    for i in range(len(b)):
        for ch in SIGNIFICANT:
            yield b[:i] + bytes([ch]) + b[i + 1:]
            yield b[:i] + bytes([ch]) + b[i:]
        yield b[:i] + b[i + 1:]
