/* A preload library for the host specs of vfio.migfile: it makes one ordinary file act as
 * a VFIO device with migration, so the data fd paths of csrc/lua/l_migration.c run without
 * a kernel driver. Everything comes from the directory $LUAVFIO_FAKE_MIG_DIR:
 *   device     the file to open with vfio.core.device_file: its VFIO_DEVICE_FEATURE
 *              ioctls are answered here (MIGRATION: STOP_COPY | PRE_COPY; the state's
 *              GET and SET);
 *   state-N    the data of state N: a SET to N opens it as the data fd (read-write, and
 *              emptied first for RESUMING); without the file the arc opens none.
 * On those data fds, reads and writes move at most 4097 bytes a call and every third
 * call fails with EINTR; a PRE_COPY fd answers VFIO_MIG_GET_PRECOPY_INFO with the bytes
 * left and, like the kernel's drivers, fails a read at its end with ENOMSG. Any other fd
 * goes straight to the C library. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/vfio.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define MAXFD 4096
#define PIECE 4097
enum { DATA = 1, PRECOPY = 2 };
static unsigned char kind[MAXFD];
static unsigned calls;
static uint32_t state = 2; /* running */

static int is_device(int fd)
{
    const char *dir = getenv("LUAVFIO_FAKE_MIG_DIR");
    char path[4096];
    struct stat a, b;
    if (!dir || fstat(fd, &a) < 0)
        return 0;
    snprintf(path, sizeof path, "%s/device", dir);
    return stat(path, &b) == 0 && a.st_dev == b.st_dev && a.st_ino == b.st_ino;
}

static int is_data(int fd) { return fd >= 0 && fd < MAXFD && kind[fd]; }

static int interrupted(void)
{
    if (++calls % 3 == 0) {
        errno = EINTR;
        return 1;
    }
    return 0;
}

static int open_data(uint32_t s)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/state-%u", getenv("LUAVFIO_FAKE_MIG_DIR"), s);
    if (access(path, F_OK) != 0)
        return -1;
    int fd = open(path, O_RDWR | O_CLOEXEC | (s == 4 ? O_TRUNC : 0));
    if (fd >= 0 && fd < MAXFD)
        kind[fd] = s == 6 || s == 7 ? PRECOPY : DATA;
    return fd;
}

static int feature(struct vfio_device_feature *f)
{
    uint32_t which = f->flags & VFIO_DEVICE_FEATURE_MASK;
    if (which == VFIO_DEVICE_FEATURE_MIGRATION && (f->flags & VFIO_DEVICE_FEATURE_GET)) {
        uint64_t flags = VFIO_MIGRATION_STOP_COPY | 4; /* PRE_COPY */
        memcpy(f->data, &flags, sizeof flags);
        return 0;
    }
    if (which == VFIO_DEVICE_FEATURE_MIG_DEVICE_STATE) {
        int32_t m[2];
        memcpy(m, f->data, sizeof m);
        if (f->flags & VFIO_DEVICE_FEATURE_GET) {
            m[0] = (int32_t)state;
            m[1] = -1;
        } else {
            state = (uint32_t)m[0];
            m[1] = open_data(state);
        }
        memcpy(f->data, m, sizeof m);
        return 0;
    }
    errno = ENOTTY;
    return -1;
}

int ioctl(int fd, unsigned long request, ...)
{
    static int (*real)(int, unsigned long, ...);
    if (!real)
        real = (int (*)(int, unsigned long, ...))dlsym(RTLD_NEXT, "ioctl");
    va_list ap;
    va_start(ap, request);
    void *arg = va_arg(ap, void *);
    va_end(ap);
    if (request == VFIO_DEVICE_FEATURE && is_device(fd))
        return feature(arg);
    if (request == _IO(VFIO_TYPE, VFIO_BASE + 21) && is_data(fd)) {
        if (kind[fd] != PRECOPY) {
            errno = EINVAL;
            return -1;
        }
        struct stat st;
        off_t at = lseek(fd, 0, SEEK_CUR);
        fstat(fd, &st);
        uint64_t info[3] = {24, (uint64_t)(st.st_size - at), 0};
        memcpy((char *)arg + 8, &info[1], 16);
        return 0;
    }
    return real(fd, request, arg);
}

ssize_t read(int fd, void *buf, size_t n)
{
    static ssize_t (*real)(int, void *, size_t);
    if (!real)
        real = (ssize_t (*)(int, void *, size_t))dlsym(RTLD_NEXT, "read");
    if (!is_data(fd))
        return real(fd, buf, n);
    if (interrupted())
        return -1;
    ssize_t r = real(fd, buf, n < PIECE ? n : PIECE);
    if (r == 0 && n > 0 && kind[fd] == PRECOPY) {
        errno = ENOMSG;
        return -1;
    }
    return r;
}

ssize_t write(int fd, const void *buf, size_t n)
{
    static ssize_t (*real)(int, const void *, size_t);
    if (!real)
        real = (ssize_t (*)(int, const void *, size_t))dlsym(RTLD_NEXT, "write");
    if (!is_data(fd))
        return real(fd, buf, n);
    if (interrupted())
        return -1;
    return real(fd, buf, n < PIECE ? n : PIECE);
}

int close(int fd)
{
    static int (*real)(int);
    if (!real)
        real = (int (*)(int))dlsym(RTLD_NEXT, "close");
    if (fd >= 0 && fd < MAXFD)
        kind[fd] = 0;
    return real(fd);
}
