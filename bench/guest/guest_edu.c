/* A Linux guest's check of edu's MSI (1234:11e8; the guest kernel has no edu driver): with
 * the function's config space (sysfs `config`) and BAR0 (sysfs `resource0`, mmap) from
 * userspace, point edu's MSI at the guest's APIC error vector 0xfe on CPU 0, raise edu's
 * interrupt (BAR0+0x60) and count the ERR line of /proc/interrupts, which only that
 * vector's handler increments; it always sends the EOI. (Not the spurious vector 0xff:
 * Linux acknowledges that one only when it finds it in service, and an unacknowledged
 * 0xff blocks every lower vector, the timer's included.) Prints "EDU BDF", then
 * "EDU_MSI <before> <after>".
 * Built static (CMake: build/bench/guest_edu), run in the guest's initramfs. */
#define _GNU_SOURCE
#include <dirent.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include "procirq.h"

static int err_row(const char *line)
{
    while (*line == ' ')
        line++;
    return !strncmp(line, "ERR:", 4);
}
static long apic_errors(void) { return procirq_sum(err_row); }

static int hexfile(const char *dir, const char *name)
{
    char path[512], buf[32] = {0};
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "r");
    if (!f || !fgets(buf, sizeof buf, f)) {
        if (f)
            fclose(f);
        return -1;
    }
    fclose(f);
    return (int)strtol(buf, NULL, 16);
}

int main(void)
{
    char dir[512] = "";
    DIR *d = opendir("/sys/bus/pci/devices");
    struct dirent *e;
    while (d && (e = readdir(d))) {
        char p[512];
        snprintf(p, sizeof p, "/sys/bus/pci/devices/%s", e->d_name);
        if (hexfile(p, "vendor") == 0x1234 && hexfile(p, "device") == 0x11e8) {
            snprintf(dir, sizeof dir, "%s", p);
            printf("EDU %s\n", e->d_name);
        }
    }
    if (d)
        closedir(d);
    if (!dir[0]) {
        printf("EDU none\n");
        return 1;
    }
    char path[600];
    snprintf(path, sizeof path, "%s/config", dir);
    int cfg = open(path, O_RDWR);
    uint8_t c[256];
    if (cfg < 0 || pread(cfg, c, sizeof c, 0) != (ssize_t)sizeof c) {
        perror(path);
        return 1;
    }
    unsigned msi = 0;
    for (unsigned off = c[0x34] & 0xfc, n = 0; off && n < 48; off = c[off + 1] & 0xfc, n++)
        if (c[off] == 0x05)
            msi = off;
    if (!msi) {
        printf("EDU_MSI no MSI capability\n");
        return 1;
    }
    uint16_t cmd = (uint16_t)(c[4] | c[5] << 8) | 0x6;   /* memory, bus master */
    pwrite(cfg, &cmd, 2, 4);
    uint16_t flags = (uint16_t)(c[msi + 2] | c[msi + 3] << 8);
    uint32_t addr = 0xfee00000, hi = 0;
    uint16_t data = 0x00fe;                               /* fixed, edge, vector 0xfe */
    pwrite(cfg, &addr, 4, msi + 4);
    unsigned doff = msi + 8;
    if (flags & 0x80) {
        pwrite(cfg, &hi, 4, msi + 8);
        doff = msi + 12;
    }
    pwrite(cfg, &data, 2, doff);
    flags = (uint16_t)((flags & ~0x70u) | 1);             /* one vector, enabled */
    pwrite(cfg, &flags, 2, msi + 2);
    snprintf(path, sizeof path, "%s/resource0", dir);
    int bar = open(path, O_RDWR | O_SYNC);
    volatile uint32_t *r = bar < 0 ? MAP_FAILED
                                   : mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, bar, 0);
    if (r == MAP_FAILED) {
        perror(path);
        return 1;
    }
    long before = apic_errors();
    for (int i = 0; i < 4; i++) {
        r[0x60 / 4] = 0x1u << i;                          /* raise */
        struct timespec t = {0, 50000000};
        nanosleep(&t, NULL);
        r[0x64 / 4] = 0x1u << i;                          /* acknowledge */
    }
    printf("EDU_MSI %ld %ld\n", before, apic_errors());
    flags &= (uint16_t)~1u;
    pwrite(cfg, &flags, 2, msi + 2);
    return 0;
}
