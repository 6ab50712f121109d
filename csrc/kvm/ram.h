/* Guest RAM backings (ram.c): the files a VM's RAM may come from besides anonymous
 * memory, so that RAM can be shared (a memfd another process maps) or backed by huge
 * pages. vm.c maps them (kvm_add_ram_fd); these only make them. Functions return an fd
 * or 0, or -errno. */
#ifndef LUAVFIO_KVM_RAM_H
#define LUAVFIO_KVM_RAM_H

#include <fcntl.h>
#include <stdint.h>

/* What a backing file is. */
enum kvm_ram_kind {
    KVM_RAM_MEMFD = 1,        /* a memfd on shmem */
    KVM_RAM_MEMFD_HUGETLB,    /* a memfd on the default huge page size (MFD_HUGETLB) */
    KVM_RAM_HUGETLBFS,        /* a file in a hugetlbfs mount, unlinked at once */
};

/* The seals a RAM memfd carries: it can neither shrink (a mapping past its end would
 * fault: SIGBUS in this process, EFAULT in KVM) nor grow, and no seal can be added
 * (F_SEAL_WRITE would make our own mapping's writes fail). */
#define KVM_RAM_SEALS (F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL)

/* A memfd of `size` bytes for guest RAM, close-on-exec, sealed with KVM_RAM_SEALS; with
 * `hugetlb` on the default huge page size. Returns the fd or -errno: -EINVAL for a size
 * that is no multiple of the page size, -ENOMEM for huge pages when the pool has not
 * `size` bytes of them free (their reservation is tried once, here: huge pages are
 * reserved when a file is mapped, so kvm_add_ram_fd may still meet -ENOMEM). */
int kvm_ram_memfd(uint64_t size, int hugetlb);

/* A file of `size` bytes in the hugetlbfs mount `dir` (created with a unique name and
 * unlinked at once: only the fd reaches it), close-on-exec. -ENOTTY when `dir` is no
 * hugetlbfs mount (say so, not strerror's words), -EINVAL for a size that is no multiple
 * of its page size, -ENOMEM as for kvm_ram_memfd. Such a file takes no seals: whoever holds the fd could shrink it. */
int kvm_ram_hugetlbfs(const char *dir, uint64_t size);

/* The page size behind a backing fd: the huge page size on hugetlbfs, else the system's
 * page size; -errno when fstatfs fails. */
int64_t kvm_ram_page_size(int fd);

/* The file's size, and whether it carries every seal of KVM_RAM_SEALS (1) or not (0). */
int kvm_ram_fd_info(int fd, uint64_t *size, int *sealed);

#endif
