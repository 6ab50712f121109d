/* Region I/O through the device fd: positional reads/writes and mmap of areas. */
#include "vfio_impl.h"

#include <errno.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

int vfio_pread_all(int fd, void *buf, size_t n, uint64_t off)
{
    uint8_t *p = buf;
    while (n > 0) {
        ssize_t r = pread(fd, p, n, (off_t)off);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0)
            return -errno;
        if (r == 0)
            return -EIO;
        p += r;
        off += (uint64_t)r;
        n -= (size_t)r;
    }
    return 0;
}

int vfio_pwrite_all(int fd, const void *buf, size_t n, uint64_t off)
{
    const uint8_t *p = buf;
    while (n > 0) {
        ssize_t r = pwrite(fd, p, n, (off_t)off);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0)
            return -errno;
        if (r == 0)
            return -EIO;
        p += r;
        off += (uint64_t)r;
        n -= (size_t)r;
    }
    return 0;
}

int vfio_mmap_fits(int fd, uint64_t off, uint64_t size)
{
    struct stat st;
    if (fstat(fd, &st) < 0)
        return -errno;
    if (!S_ISREG(st.st_mode))
        return 0;
    if (st.st_size < 0 || off > (uint64_t)st.st_size || size > (uint64_t)st.st_size - off)
        return -ENXIO;
    return 0;
}

int vfio_map_area(int fd, uint64_t base, struct vfio_map_area *a, int prot)
{
    if (base + a->off < base)
        return -EINVAL;
    int e = vfio_mmap_fits(fd, base + a->off, a->size);
    if (e < 0)
        return e;
    void *p = mmap(NULL, a->size, prot, MAP_SHARED, fd, (off_t)(base + a->off));
    if (p == MAP_FAILED)
        return -errno;
    a->ptr = p;
    return 0;
}

void vfio_unmap_area(struct vfio_map_area *a)
{
    if (a->ptr)
        munmap(a->ptr, a->size);
    a->ptr = NULL;
}

/* Copies to and from a device mapping use naturally aligned 8-, 4-, 2- and 1-byte volatile
 * accesses, never libc's memcpy: its vector or string instructions may issue access sizes
 * the device does not decode (QEMU aborts on some of them, and real devices may drop
 * them). Aligned bulk moves are 8 bytes wide, which keeps memory-speed copies. */
void vfio_copy_from_io(void *dst, const volatile uint8_t *src, size_t n)
{
    uint8_t *d = dst;
    while (n && ((uintptr_t)src & 7)) {
        size_t w = ((uintptr_t)src & 1) || n < 2 ? 1 : ((uintptr_t)src & 2) || n < 4 ? 2 : 4;
        if (w > n)
            w = 1;
        if (w == 1) {
            *d = *src;
        } else if (w == 2) {
            uint16_t v = *(const volatile uint16_t *)src;
            memcpy(d, &v, 2);
        } else {
            uint32_t v = *(const volatile uint32_t *)src;
            memcpy(d, &v, 4);
        }
        d += w, src += w, n -= w;
    }
#if defined(__x86_64__)
    /* rep movsq: on ordinary memory the CPU's fast-string path moves whole cache lines;
     * on uncached MMIO it is a sequence of 8-byte accesses, as memcpy_fromio does. */
    if (n >= 64) {
        size_t q = n / 8;
        void *dd = d;
        const volatile void *ss = src;
        __asm__ volatile("rep movsq" : "+D"(dd), "+S"(ss), "+c"(q) : : "memory");
        d = dd;
        src = (const volatile uint8_t *)ss;
        n &= 7;
    }
#endif
    /* Four loads in flight before the stores: volatile forbids the compiler from
     * widening or merging them, but not from scheduling them together. */
    while (n >= 32) {
        const volatile uint64_t *s8 = (const volatile uint64_t *)src;
        uint64_t a = s8[0], b = s8[1], c = s8[2], e = s8[3];
        memcpy(d, &a, 8);
        memcpy(d + 8, &b, 8);
        memcpy(d + 16, &c, 8);
        memcpy(d + 24, &e, 8);
        d += 32, src += 32, n -= 32;
    }
    while (n >= 8) {
        uint64_t v = *(const volatile uint64_t *)src;
        memcpy(d, &v, 8);
        d += 8, src += 8, n -= 8;
    }
    if (n >= 4) {
        uint32_t v = *(const volatile uint32_t *)src;
        memcpy(d, &v, 4);
        d += 4, src += 4, n -= 4;
    }
    if (n >= 2) {
        uint16_t v = *(const volatile uint16_t *)src;
        memcpy(d, &v, 2);
        d += 2, src += 2, n -= 2;
    }
    if (n)
        *d = *src;
}

void vfio_copy_to_io(volatile uint8_t *dst, const void *src, size_t n)
{
    const uint8_t *s = src;
    while (n && ((uintptr_t)dst & 7)) {
        size_t w = ((uintptr_t)dst & 1) || n < 2 ? 1 : ((uintptr_t)dst & 2) || n < 4 ? 2 : 4;
        if (w == 1) {
            *dst = *s;
        } else if (w == 2) {
            uint16_t v;
            memcpy(&v, s, 2);
            *(volatile uint16_t *)dst = v;
        } else {
            uint32_t v;
            memcpy(&v, s, 4);
            *(volatile uint32_t *)dst = v;
        }
        dst += w, s += w, n -= w;
    }
#if defined(__x86_64__)
    if (n >= 64) {
        size_t q = n / 8;
        volatile void *dd = dst;
        const void *ss = s;
        __asm__ volatile("rep movsq" : "+D"(dd), "+S"(ss), "+c"(q) : : "memory");
        dst = (volatile uint8_t *)dd;
        s = ss;
        n &= 7;
    }
#endif
    while (n >= 32) {
        uint64_t a, b, c, e;
        memcpy(&a, s, 8);
        memcpy(&b, s + 8, 8);
        memcpy(&c, s + 16, 8);
        memcpy(&e, s + 24, 8);
        volatile uint64_t *d8 = (volatile uint64_t *)dst;
        d8[0] = a, d8[1] = b, d8[2] = c, d8[3] = e;
        dst += 32, s += 32, n -= 32;
    }
    while (n >= 8) {
        uint64_t v;
        memcpy(&v, s, 8);
        *(volatile uint64_t *)dst = v;
        dst += 8, s += 8, n -= 8;
    }
    if (n >= 4) {
        uint32_t v;
        memcpy(&v, s, 4);
        *(volatile uint32_t *)dst = v;
        dst += 4, s += 4, n -= 4;
    }
    if (n >= 2) {
        uint16_t v;
        memcpy(&v, s, 2);
        *(volatile uint16_t *)dst = v;
        dst += 2, s += 2, n -= 2;
    }
    if (n)
        *dst = *s;
}
