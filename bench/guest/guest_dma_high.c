/* A Linux guest's check that its nvme driver DMAs into RAM above 4 GiB (spec/lab/
 * linux_highmem_spec.lua): a locked buffer, the guest-physical address of each of its
 * pages from /proc/self/pagemap, and O_DIRECT reads of the lab disk (whose 16-byte lines
 * read "lv<sector>.<line>\n", lab/run) into pages that lie above 4 GiB, so the device
 * writes those guest-physical addresses itself. Prints per page read
 *   "nvme-high-read 0x<guest-physical> <sector> ok|bad"
 * and "nvme-high-read none" when no page of the buffer lies above 4 GiB; the highest
 * guest-physical address it saw as "buffer-top 0x...". Exits 0 when at least one page
 * above 4 GiB was read and all read back the pattern.
 * Usage: guest_dma_high [DISK] (default /dev/nvme0n1).
 * Built static (CMake: build/bench/guest_dma_high), run in the guest's initramfs. */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#define PAGE 4096ull
#define BUF_PAGES 16384          /* 64 MiB: well past what the kernel took above 4 GiB */
#define READS 4

/* The guest-physical address of the page at `va` (0: not present, or no PFN shown). */
static uint64_t gpa_of(int pagemap, const void *va)
{
    uint64_t e;
    if (pread(pagemap, &e, sizeof e, (off_t)((uintptr_t)va / PAGE * sizeof e)) != sizeof e)
        return 0;
    if (!(e >> 63 & 1))
        return 0;
    return (e & ((1ull << 55) - 1)) * PAGE;
}

/* Whether a page read from `sector` on holds the lab disk's pattern. */
static int pattern_ok(const char *p, unsigned sector)
{
    char want[17];
    for (unsigned s = 0; s < PAGE / 512; s++)
        for (unsigned u = 0; u < 32; u++) {
            snprintf(want, sizeof want, "lv%06x.%06x\n", sector + s, u);
            if (memcmp(p + s * 512 + u * 16, want, 16))
                return 0;
        }
    return 1;
}

int main(int argc, char **argv)
{
    const char *path = argc > 1 ? argv[1] : "/dev/nvme0n1";   /* another disk: a test */
    int disk = open(path, O_RDONLY | O_DIRECT);
    int pagemap = open("/proc/self/pagemap", O_RDONLY);
    if (disk < 0 || pagemap < 0) {
        perror(disk < 0 ? path : "/proc/self/pagemap");
        return 1;
    }
    char *buf = mmap(NULL, BUF_PAGES * PAGE, PROT_READ | PROT_WRITE,
                     MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
    if (buf == MAP_FAILED || mlock(buf, BUF_PAGES * PAGE) < 0) {
        perror("buffer");
        return 1;
    }
    uint64_t top = 0;
    int done = 0, bad = 0;
    for (unsigned i = 0; i < BUF_PAGES && done < READS; i++) {
        char *p = buf + i * PAGE;
        uint64_t gpa = gpa_of(pagemap, p);
        if (gpa > top)
            top = gpa;
        if (gpa < (1ull << 32))
            continue;
        unsigned sector = 1000 + 8 * (unsigned)done * 97;   /* spread over the disk */
        memset(p, 0, PAGE);
        ssize_t n = pread(disk, p, PAGE, (off_t)sector * 512);
        /* the page must still be where the device wrote (it is locked: it is) */
        int ok = n == (ssize_t)PAGE && gpa_of(pagemap, p) == gpa && pattern_ok(p, sector);
        printf("nvme-high-read 0x%llx %u %s\n", (unsigned long long)gpa, sector, ok ? "ok" : "bad");
        bad += !ok;
        done++;
    }
    printf("buffer-top 0x%llx\n", (unsigned long long)top);
    if (!done)
        printf("nvme-high-read none\n");
    fflush(stdout);
    return done && !bad ? 0 : 1;
}
