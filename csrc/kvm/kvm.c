/* The KVM system fd: open, API version, extensions, the vCPU mmap size and the CPUID
 * tables (see kvm.h). */
#include "kvm.h"
#include "internal.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <sys/ioctl.h>

int kvm_open(const char *path)
{
    int fd = open(path, O_RDWR | O_CLOEXEC);
    return fd < 0 ? neg_errno() : fd;
}

int kvm_api_version(int kvm_fd)
{
    int v = ioctl(kvm_fd, KVM_GET_API_VERSION, 0);
    return v < 0 ? neg_errno() : v;
}

int kvm_check_extension(int fd, int cap)
{
    int v = ioctl(fd, KVM_CHECK_EXTENSION, cap);
    return v < 0 ? neg_errno() : v;
}

int kvm_vcpu_mmap_size(int kvm_fd)
{
    int v = ioctl(kvm_fd, KVM_GET_VCPU_MMAP_SIZE, 0);
    return v < 0 ? neg_errno() : v;
}

/* A CPUID table from `req` on `fd` (KVM_GET_SUPPORTED_CPUID on /dev/kvm, KVM_GET_CPUID2
 * on a vCPU), the buffer grown until it fits; malloc'd for the caller. */
int kvm_read_cpuid(int fd, unsigned long req, struct kvm_cpuid2 **out)
{
    for (unsigned n = 64; n <= 4096; n *= 2) {
        struct kvm_cpuid2 *c = calloc(1, sizeof *c + n * sizeof c->entries[0]);
        if (!c)
            return -ENOMEM;
        c->nent = n;
        if (ioctl(fd, req, c) == 0) {
            *out = c;
            return 0;
        }
        int e = neg_errno();
        free(c);
        if (e != -E2BIG)
            return e;
    }
    return -E2BIG;
}
