"""dm's CRC-32 (dm/dm_crc32.h, the Kraken and OKX book checksums' CRC): equal to zlib.crc32 on
any input and any starting value, folded with PCLMULQDQ where the CPU has it; its folding
constants recomputed from the polynomial."""
from __future__ import annotations

import re
import zlib
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from dm.venues.okx._checksum import crc32, crc32_folds

P = 0x104C11DB7     # IEEE 802.3 CRC-32 polynomial, x^32 term included


@settings(max_examples=500, deadline=None)
@given(data=st.binary(max_size=3000), crc=st.integers(0, 2**32 - 1))
def test_crc32_equals_zlib(data, crc):
    assert crc32(data, crc) == zlib.crc32(data, crc)
    assert crc32(data) == zlib.crc32(data)


def test_crc32_every_length_around_the_fold_boundaries():
    data = bytes(range(256)) * 5
    for n in range(0, 400):
        assert crc32(data[:n]) == zlib.crc32(data[:n]), n
    half = crc32(data[:700])
    assert crc32(data[700:], half) == zlib.crc32(data)   # chaining, as zlib


def _x_pow_mod_p(n: int) -> int:
    r = 1
    for _ in range(n):
        r <<= 1
        if r >> 32 & 1:
            r ^= P
    return r


def _reflect(x: int, bits: int) -> int:
    return int(f"{x:0{bits}b}"[::-1], 2)


def test_crc32_fold_constants():
    """Each constant of dm_crc32.h is what its comment says: x^n mod P bit-reflected and shifted
    left by one, P' = P reflected, mu = floor(x^64 / P) reflected."""
    text = (Path(__file__).resolve().parent.parent / "dm/dm_crc32.h").read_text()
    k = {m[1]: int(m[2], 16) for m in re.finditer(r"#define DM_CRC32_(\w+)\s+0x([0-9a-fA-F]+)ULL", text)}
    for name, n in (("K1", 4 * 128 + 32), ("K2", 4 * 128 - 32), ("K3", 128 + 32), ("K4", 128 - 32), ("K5", 64)):
        assert k[name] == _reflect(_x_pow_mod_p(n), 32) << 1, name
    q, a = 0, 1 << 64
    while a.bit_length() >= P.bit_length():
        s = a.bit_length() - P.bit_length()
        q |= 1 << s
        a ^= P << s
    assert k["MU"] == _reflect(q, 33)
    assert k["P"] == _reflect(P, 33)


def test_crc32_reports_whether_it_folds():
    cpu = Path("/proc/cpuinfo")
    if cpu.exists():
        flags = cpu.read_text()
        assert crc32_folds() == (" pclmulqdq" in flags and " sse4_1" in flags)
