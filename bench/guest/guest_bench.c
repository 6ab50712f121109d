/* The Linux guest's side of bench/vs-qemu-linux.lua: a static program run in the guest's
 * initramfs, measuring with the guest's own clocks (no shell timing).
 *   guest_bench boot    BOOT_MS <ms>: the guest TSC at this moment over its rate; the TSC
 *                       starts with the vCPU, so this is VMM + firmware + kernel to /init
 *   guest_bench nvme DEV [N]
 *                       RAND4K_US <median> <p99>, RAND4K_IOPS <n>, SEQ1M_MBS <MB/s>,
 *                       IRQ_PER_IO <x>: O_DIRECT reads of DEV (4 KiB at random aligned
 *                       offsets N times, then 1 MiB sequential passes), interrupts of the
 *                       nvme queues counted in /proc/interrupts around the random reads */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <linux/fs.h>
#include "procirq.h"
#include <time.h>
#include <unistd.h>

static uint64_t rdtsc(void)
{
    uint32_t lo, hi;
    __asm__ volatile("rdtsc" : "=a"(lo), "=d"(hi));
    return (uint64_t)hi << 32 | lo;
}

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

/* TSC ticks per second, measured against CLOCK_MONOTONIC over 200 ms */
static double tsc_hz(void)
{
    double t0 = now();
    uint64_t c0 = rdtsc();
    struct timespec d = {0, 200000000};
    nanosleep(&d, NULL);
    double t1 = now();
    uint64_t c1 = rdtsc();
    return (double)(c1 - c0) / (t1 - t0);
}

static int nvme_row(const char *line) { return strstr(line, "nvme") != NULL; }
static long nvme_irqs(void) { return procirq_sum(nvme_row); }

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

int main(int argc, char **argv)
{
    if (argc >= 2 && !strcmp(argv[1], "boot")) {
        uint64_t c = rdtsc();
        printf("BOOT_MS %.1f\n", (double)c / tsc_hz() * 1e3);
        return 0;
    }
    if (argc < 3 || strcmp(argv[1], "nvme")) {
        fprintf(stderr, "usage: guest_bench boot | guest_bench nvme DEV [N]\n");
        return 2;
    }
    int n = argc > 3 ? atoi(argv[3]) : 2000;
    int fd = open(argv[2], O_RDONLY | O_DIRECT);
    if (fd < 0) {
        perror(argv[2]);
        return 1;
    }
    uint64_t size = 0;
    if (ioctl(fd, BLKGETSIZE64, &size) < 0 || size < (1 << 20)) {
        fprintf(stderr, "%s: size unknown or below 1 MiB\n", argv[2]);
        return 1;
    }
    void *buf;
    if (posix_memalign(&buf, 1 << 20, 1 << 20))
        return 1;
    double *lat = calloc((size_t)n, sizeof *lat);
    uint64_t blocks = size / 4096, x = 88172645463325252ull;
    for (int i = 0; i < 50; i++)   /* warm up */
        if (pread(fd, buf, 4096, 0) != 4096)
            return 1;
    long irq0 = nvme_irqs();
    double t0 = now();
    for (int i = 0; i < n; i++) {
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        off_t off = (off_t)(x % blocks) * 4096;
        double a = now();
        if (pread(fd, buf, 4096, off) != 4096) {
            perror("pread");
            return 1;
        }
        lat[i] = now() - a;
    }
    double t1 = now();
    long irq1 = nvme_irqs();
    qsort(lat, (size_t)n, sizeof *lat, cmp_double);
    printf("RAND4K_US %.1f %.1f\n", lat[n / 2] * 1e6, lat[(int)(n * 0.99)] * 1e6);
    printf("RAND4K_IOPS %.0f\n", n / (t1 - t0));
    printf("IRQ_PER_IO %.2f\n", (double)(irq1 - irq0) / n);
    uint64_t passes = 4, per = size >> 20, bytes = 0;
    double s0 = now();
    for (uint64_t p = 0; p < passes; p++)
        for (uint64_t m = 0; m < per; m++) {
            if (pread(fd, buf, 1 << 20, (off_t)(m << 20)) != 1 << 20) {
                perror("pread 1M");
                return 1;
            }
            bytes += 1 << 20;
        }
    printf("SEQ1M_MBS %.1f\n", bytes / (now() - s0) / 1e6);
    return 0;
}
