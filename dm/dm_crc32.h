/* CRC-32 (IEEE 802.3, the zlib / PNG / Kraken / OKX checksum) of a buffer, for the venue book
 * checksums (dm/venues/kraken/_checksum.pyx, dm/venues/okx/_checksum.pyx).
 *
 * dm_crc32(crc, buf, len) has zlib's crc32() contract (start from 0, chain by passing the last
 * result). On x86-64 CPUs with PCLMULQDQ, whole 16-byte blocks of buffers of 64 bytes or more
 * are folded with carry-less multiplications, four 128-bit lanes at a time, as in V. Gopal,
 * E. Ozturk et al., "Fast CRC Computation for Generic Polynomials Using PCLMULQDQ Instruction"
 * (Intel, 2009): fold by 512 bits with k1/k2, merge the lanes and fold by 128 bits with k3/k4,
 * reduce 128 -> 64 bits with k5 and 64 -> 32 bits by Barrett reduction (P' and mu), all in the
 * bit-reflected domain. The tail under 16 bytes, short buffers and other CPUs use zlib's crc32.
 * bench/bench_checksum.py measures it against zlib.crc32; tests/test_book.py checks it equals
 * zlib.crc32 on any input (hypothesis).
 *
 * The constants are x^n mod P(x) for P = 0x104C11DB7, bit-reflected and shifted left by one
 * (so that the 64x64-bit products land aligned), as the paper defines them:
 *   k1 = x^(4*128+32) mod P, k2 = x^(4*128-32) mod P   (fold 4 lanes forward by 512 bits)
 *   k3 = x^(128+32) mod P,   k4 = x^(128-32) mod P     (fold one lane forward by 128 bits)
 *   k5 = x^64 mod P                                     (128 -> 64 bits)
 *   P' = P reflected (33 bits), mu = x^64 / P reflected  (Barrett)
 * tests check them by recomputing them from P (test_crc32_fold_constants).
 */
#ifndef DM_CRC32_H
#define DM_CRC32_H

#include <stddef.h>
#include <stdint.h>
#include <zlib.h>

#define DM_CRC32_K1 0x154442bd4ULL
#define DM_CRC32_K2 0x1c6e41596ULL
#define DM_CRC32_K3 0x1751997d0ULL
#define DM_CRC32_K4 0x0ccaa009eULL
#define DM_CRC32_K5 0x163cd6124ULL
#define DM_CRC32_P  0x1db710641ULL
#define DM_CRC32_MU 0x1f7011641ULL

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>

/* The folded CRC state (zlib's internal, inverted form) of `len` bytes at p: len >= 64 and a
 * multiple of 16. */
__attribute__((target("pclmul,sse4.1")))
static uint32_t dm_crc32_fold(uint32_t state, const unsigned char *p, size_t len)
{
    __m128i k, a0, a1, a2, a3, t0, t1, t2, t3, mask32;

    a0 = _mm_xor_si128(_mm_loadu_si128((const __m128i *)p), _mm_cvtsi32_si128((int)state));
    a1 = _mm_loadu_si128((const __m128i *)(p + 16));
    a2 = _mm_loadu_si128((const __m128i *)(p + 32));
    a3 = _mm_loadu_si128((const __m128i *)(p + 48));
    p += 64;
    len -= 64;

    /* four lanes, each folded forward over the next 64 bytes */
    k = _mm_set_epi64x((long long)DM_CRC32_K2, (long long)DM_CRC32_K1);
    while (len >= 64) {
        t0 = _mm_clmulepi64_si128(a0, k, 0x00);
        t1 = _mm_clmulepi64_si128(a1, k, 0x00);
        t2 = _mm_clmulepi64_si128(a2, k, 0x00);
        t3 = _mm_clmulepi64_si128(a3, k, 0x00);
        a0 = _mm_xor_si128(_mm_clmulepi64_si128(a0, k, 0x11), t0);
        a1 = _mm_xor_si128(_mm_clmulepi64_si128(a1, k, 0x11), t1);
        a2 = _mm_xor_si128(_mm_clmulepi64_si128(a2, k, 0x11), t2);
        a3 = _mm_xor_si128(_mm_clmulepi64_si128(a3, k, 0x11), t3);
        a0 = _mm_xor_si128(a0, _mm_loadu_si128((const __m128i *)p));
        a1 = _mm_xor_si128(a1, _mm_loadu_si128((const __m128i *)(p + 16)));
        a2 = _mm_xor_si128(a2, _mm_loadu_si128((const __m128i *)(p + 32)));
        a3 = _mm_xor_si128(a3, _mm_loadu_si128((const __m128i *)(p + 48)));
        p += 64;
        len -= 64;
    }

    /* the lanes into one: a0 folded forward by 128 bits onto a1, then onto a2, a3 */
    k = _mm_set_epi64x((long long)DM_CRC32_K4, (long long)DM_CRC32_K3);
#define DM_CRC32_FOLD128(acc, next) \
    acc = _mm_xor_si128(_mm_xor_si128(_mm_clmulepi64_si128(acc, k, 0x00), \
                                      _mm_clmulepi64_si128(acc, k, 0x11)), (next))
    DM_CRC32_FOLD128(a0, a1);
    DM_CRC32_FOLD128(a0, a2);
    DM_CRC32_FOLD128(a0, a3);
    while (len >= 16) {                 /* remaining whole blocks, one at a time */
        DM_CRC32_FOLD128(a0, _mm_loadu_si128((const __m128i *)p));
        p += 16;
        len -= 16;
    }
#undef DM_CRC32_FOLD128

    /* 128 -> 64 bits: the low half times k4, onto the high half */
    t0 = _mm_clmulepi64_si128(a0, k, 0x10);
    a0 = _mm_xor_si128(_mm_srli_si128(a0, 8), t0);
    /* 64 -> 32 bits (+32 zero bits): the low 32 bits times k5, onto the rest */
    mask32 = _mm_set_epi32(0, -1, 0, -1);
    k = _mm_set_epi64x(0, (long long)DM_CRC32_K5);
    t0 = _mm_srli_si128(a0, 4);
    a0 = _mm_xor_si128(_mm_clmulepi64_si128(_mm_and_si128(a0, mask32), k, 0x00), t0);
    /* Barrett reduction to 32 bits */
    k = _mm_set_epi64x((long long)DM_CRC32_MU, (long long)DM_CRC32_P);
    t0 = _mm_and_si128(_mm_clmulepi64_si128(_mm_and_si128(a0, mask32), k, 0x10), mask32);
    t0 = _mm_clmulepi64_si128(t0, k, 0x00);
    a0 = _mm_xor_si128(a0, t0);
    return (uint32_t)_mm_extract_epi32(a0, 1);
}

static inline int dm_crc32_have_clmul(void)
{
    static int have = -1;
    if (have < 0) {
        __builtin_cpu_init();
        have = __builtin_cpu_supports("pclmul") && __builtin_cpu_supports("sse4.1");
    }
    return have;
}
#define DM_CRC32_CLMUL 1
#else
#define DM_CRC32_CLMUL 0
#endif

static inline uint32_t dm_crc32(uint32_t crc, const unsigned char *p, size_t len)
{
#if DM_CRC32_CLMUL
    if (len >= 64 && dm_crc32_have_clmul()) {
        size_t whole = len & ~(size_t)15;
        crc = ~dm_crc32_fold(~crc, p, whole);
        p += whole;
        len -= whole;
    }
#endif
    return len ? (uint32_t)crc32(crc, p, (uInt)len) : crc;
}

/* 1 when dm_crc32 folds with PCLMULQDQ on this CPU (benches report it) */
static inline int dm_crc32_folds(void)
{
#if DM_CRC32_CLMUL
    return dm_crc32_have_clmul();
#else
    return 0;
#endif
}

#endif
