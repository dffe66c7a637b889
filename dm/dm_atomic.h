/* dm_atomic.h: the few atomics dm's shared-memory segments need, on GCC/Clang __atomic builtins.
 *
 * Every shared field in a segment header is accessed only through these helpers, so the ordering
 * of each access is explicit at the call site.  On x86-64 acquire loads and release stores are
 * plain MOVs plus a compiler barrier; the fences below cost nothing but forbid compiler reordering
 * (the seqlock validation in dm/_ring.pyx depends on that).  On ARM they emit the needed barriers.
 */
#ifndef DM_ATOMIC_H
#define DM_ATOMIC_H

#include <stdint.h>

static inline uint64_t dm_load_acquire_u64(const uint64_t *p) { return __atomic_load_n(p, __ATOMIC_ACQUIRE); }
static inline uint64_t dm_load_relaxed_u64(const uint64_t *p) { return __atomic_load_n(p, __ATOMIC_RELAXED); }
static inline void dm_store_release_u64(uint64_t *p, uint64_t v) { __atomic_store_n(p, v, __ATOMIC_RELEASE); }
static inline void dm_store_relaxed_u64(uint64_t *p, uint64_t v) { __atomic_store_n(p, v, __ATOMIC_RELAXED); }

static inline uint16_t dm_load_relaxed_u16(const uint16_t *p) { return __atomic_load_n(p, __ATOMIC_RELAXED); }

static inline uint32_t dm_load_acquire_u32(const uint32_t *p) { return __atomic_load_n(p, __ATOMIC_ACQUIRE); }
static inline uint32_t dm_load_relaxed_u32(const uint32_t *p) { return __atomic_load_n(p, __ATOMIC_RELAXED); }
static inline void dm_store_release_u32(uint32_t *p, uint32_t v) { __atomic_store_n(p, v, __ATOMIC_RELEASE); }
static inline void dm_store_relaxed_u32(uint32_t *p, uint32_t v) { __atomic_store_n(p, v, __ATOMIC_RELAXED); }

/* Strong CAS, acq_rel on success, acquire on failure. Returns 1 when *p was `expected` and is now `desired`. */
static inline int dm_cas_u32(uint32_t *p, uint32_t expected, uint32_t desired) {
    return __atomic_compare_exchange_n(p, &expected, desired, 0, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE);
}
static inline int dm_cas_u64(uint64_t *p, uint64_t expected, uint64_t desired) {
    return __atomic_compare_exchange_n(p, &expected, desired, 0, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE);
}
static inline uint64_t dm_fetch_add_u64(uint64_t *p, uint64_t v) { return __atomic_fetch_add(p, v, __ATOMIC_ACQ_REL); }
static inline uint32_t dm_fetch_add_u32(uint32_t *p, uint32_t v) { return __atomic_fetch_add(p, v, __ATOMIC_ACQ_REL); }
static inline uint32_t dm_fetch_sub_u32(uint32_t *p, uint32_t v) { return __atomic_fetch_sub(p, v, __ATOMIC_ACQ_REL); }

/* Fences: acquire orders earlier loads before later loads/stores; release orders earlier
 * loads/stores before later stores (the store-store fence of the seqlock writer). */
static inline void dm_fence_acquire(void) { __atomic_thread_fence(__ATOMIC_ACQUIRE); }
static inline void dm_fence_release(void) { __atomic_thread_fence(__ATOMIC_RELEASE); }
static inline void dm_fence_seq_cst(void) { __atomic_thread_fence(__ATOMIC_SEQ_CST); }

/* Spin-wait hint (PAUSE on x86, YIELD on ARM). */
static inline void dm_cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield" ::: "memory");
#else
    __asm__ __volatile__("" ::: "memory");
#endif
}

/* A reader with nothing new asks for the line the next record will be written to, so that
 * when the writer publishes it that line is already on its way (a hint: it never faults). */
static inline void dm_prefetch(const void *p) { __builtin_prefetch(p, 0, 3); }

#endif /* DM_ATOMIC_H */
