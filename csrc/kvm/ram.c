/* Guest RAM backings: a sealed memfd (shareable), a huge-page memfd, a hugetlbfs file
 * (see ram.h). vm.c maps them into a VM. */
#include "ram.h"
#include "internal.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <unistd.h>

#ifndef HUGETLBFS_MAGIC
#define HUGETLBFS_MAGIC 0x958458f6
#endif

int64_t kvm_ram_page_size(int fd)
{
    struct statfs st;
    if (fstatfs(fd, &st) < 0)
        return neg_errno();
    if ((unsigned long)st.f_type == (unsigned long)HUGETLBFS_MAGIC)
        return (int64_t)st.f_bsize;
    return (int64_t)sysconf(_SC_PAGESIZE);
}

/* Huge pages are reserved when a hugetlb file is mapped, not when it is sized: map and
 * unmap it once, so a short pool is found here (-ENOMEM) rather than when the VM maps it
 * (which can still fail so, if the pool shrinks in between). */
static int reserve_probe(int fd, uint64_t size)
{
    void *p = mmap(NULL, (size_t)size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (p == MAP_FAILED)
        return neg_errno();
    munmap(p, (size_t)size);
    return 0;
}

/* Size the new file; on failure it is closed. */
static int size_file(int fd, uint64_t size)
{
    int64_t pg = kvm_ram_page_size(fd);
    int e = 0;
    if (pg < 0)
        e = (int)pg;
    else if (size == 0 || size > (uint64_t)INT64_MAX || size > SIZE_MAX || size % (uint64_t)pg)
        e = -EINVAL;
    else if (ftruncate(fd, (off_t)size) < 0)
        e = neg_errno();
    else if (pg > (int64_t)sysconf(_SC_PAGESIZE))
        e = reserve_probe(fd, size);
    if (e) {
        close(fd);
        return e;
    }
    return fd;
}

int kvm_ram_memfd(uint64_t size, int hugetlb)
{
    unsigned flags = MFD_CLOEXEC | MFD_ALLOW_SEALING | (hugetlb ? MFD_HUGETLB : 0);
    int fd = memfd_create(hugetlb ? "luavfio-guest-ram-huge" : "luavfio-guest-ram", flags);
    if (fd < 0)
        return neg_errno();
    fd = size_file(fd, size);
    if (fd < 0)
        return fd;
    if (fcntl(fd, F_ADD_SEALS, KVM_RAM_SEALS) < 0) {
        int e = neg_errno();
        close(fd);
        return e;
    }
    return fd;
}

int kvm_ram_hugetlbfs(const char *dir, uint64_t size)
{
    struct statfs st;
    if (statfs(dir, &st) < 0)
        return neg_errno();
    if ((unsigned long)st.f_type != (unsigned long)HUGETLBFS_MAGIC)
        return -ENOTTY;
    char path[PATH_MAX];
    if (snprintf(path, sizeof path, "%s/luavfio-guest-ram-XXXXXX", dir) >= (int)sizeof path)
        return -ENAMETOOLONG;
    int fd = mkostemp(path, O_CLOEXEC);
    if (fd < 0)
        return neg_errno();
    unlink(path);   /* only the fd reaches it: nothing else opens guest RAM by its name */
    return size_file(fd, size);
}

int kvm_ram_fd_info(int fd, uint64_t *size, int *sealed)
{
    struct stat st;
    if (fstat(fd, &st) < 0)
        return neg_errno();
    int seals = fcntl(fd, F_GET_SEALS);
    *size = st.st_size > 0 ? (uint64_t)st.st_size : 0;
    *sealed = seals >= 0 && (seals & KVM_RAM_SEALS) == KVM_RAM_SEALS;
    return 0;
}
