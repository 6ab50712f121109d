/* The fuzz targets' input reader: little-endian values taken from the input's front,
 * zeros once it is used up (so every input is a complete program). */
#pragma once
#include <stddef.h>
#include <stdint.h>

struct in {
    const uint8_t *p;
    size_t n;
};

static inline uint64_t take(struct in *in, unsigned k)
{
    uint64_t v = 0;
    for (unsigned i = 0; i < k; i++) {
        uint8_t b = in->n ? *in->p : 0;
        if (in->n)
            in->p++, in->n--;
        v |= (uint64_t)b << (8 * i);
    }
    return v;
}
