/* Little-endian integers in byte buffers: guest data, config space and MSI-X entries are
 * little-endian whatever the host is, and byte loops keep unaligned buffers safe. The
 * one place every layer takes them from (header-only; the compiler folds the loops). */
#ifndef LUAVFIO_BASE_LE_H
#define LUAVFIO_BASE_LE_H

#include <stdint.h>

/* The n (<= 8) bytes at p as an integer. */
static inline uint64_t lv_le_get(const uint8_t *p, unsigned n)
{
    uint64_t v = 0;
    for (unsigned i = 0; i < n; i++)
        v |= (uint64_t)p[i] << (8 * i);
    return v;
}

/* The low n (<= 8) bytes of v into p. */
static inline void lv_le_put(uint8_t *p, uint64_t v, unsigned n)
{
    for (unsigned i = 0; i < n; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

#endif
