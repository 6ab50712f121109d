/* The lab's recorded devices for the fuzz targets: the files fuzz/export_fixtures.lua
 * writes ("LVFX", see there), loaded into replay backends. Included by one target each. */
#ifndef LUAVFIO_FUZZ_FIXTURE_H
#define LUAVFIO_FUZZ_FIXTURE_H

#include "trap/trap.h" /* -Icsrc */

#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int load_fixture(const char *path, struct lv_backend *be)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return -1;
    static uint8_t buf[1 << 22];
    size_t n = fread(buf, 1, sizeof buf, f);
    fclose(f);
    size_t p = 0;
#define NEED(k) do { if (p + (k) > n) return -1; } while (0)
#define U32(v) do { NEED(4); memcpy(&(v), buf + p, 4); p += 4; } while (0)
#define U64(v) do { NEED(8); memcpy(&(v), buf + p, 8); p += 8; } while (0)
    NEED(4);
    if (memcmp(buf, "LVFX", 4))
        return -1;
    p = 4;
    uint32_t clen, nr, ni;
    U32(clen);
    NEED(clen);
    if (lv_backend_replay_init(be, buf + p, clen) < 0)
        return -1;
    p += clen;
    U32(nr);
    for (uint32_t i = 0; i < nr; i++) {
        uint32_t idx, flags, dl;
        uint64_t size;
        U32(idx); U64(size); U32(flags); U32(dl);
        NEED(dl);
        if (lv_replay_set_region(be, idx, size, flags) < 0 ||
            (dl && lv_replay_fill(be, idx, 0, buf + p, dl) < 0))
            return -1;
        p += dl;
    }
    U32(ni);
    for (uint32_t i = 0; i < ni; i++) {
        uint32_t idx, count, flags;
        U32(idx); U32(count); U32(flags);
        lv_replay_set_irq(be, idx, count, flags);
    }
    snprintf(be->name, sizeof be->name, "%s", path);
    return 0;
}

/* Every fixture in $TRAP_FUZZ_FIXTURES (default build-fuzz/fixtures) into be[0..max):
 * returns how many, or exits naming `who` when there are none. */
static unsigned load_fixtures(struct lv_backend *be, unsigned max, const char *who)
{
    const char *dir = getenv("TRAP_FUZZ_FIXTURES");
    if (!dir)
        dir = "build-fuzz/fixtures";
    DIR *d = opendir(dir);
    if (!d) {
        fprintf(stderr, "%s: no fixtures in %s (run fuzz/run)\n", who, dir);
        exit(1);
    }
    struct dirent *e;
    char path[4096];
    unsigned n = 0;
    while ((e = readdir(d)) && n < max) {
        if (!strstr(e->d_name, ".fx"))
            continue;
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        if (load_fixture(path, &be[n]) == 0)
            n++;
    }
    closedir(d);
    if (!n) {
        fprintf(stderr, "%s: no fixtures loaded from %s\n", who, dir);
        exit(1);
    }
    return n;
}

#endif
