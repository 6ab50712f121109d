/* trap:bench(kind, n, ...): the trap core's costs measured in C, for bench/trap.lua. A
 * file of its own: benchmarking is not part of the trap binding's job. l_trap.c's method
 * table lists it. */
#include "l_trap.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static double now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

/* trap:bench(kind, n [, a, b, size]) -> ns per operation, measured in C for bench/trap.lua:
 *   "cfg"    n config reads of `size` bytes at offset a
 *   "bar"    n BAR reads of `size` bytes at BAR a, offset b
 *   "pread"  n preads of `size` bytes from a temporary file (the syscall floor)
 *   "memcpy" n copies of `size` bytes (the memory floor) */
int lv_trap_bench(lua_State *L)
{
    luaL_checkudata(L, 1, LV_TRAP_T);
    static const char *const kinds[] = {"cfg", "bar", "pread", "memcpy", NULL};
    int kind = luaL_checkoption(L, 2, NULL, kinds);
    lua_Integer n = lv_checkrange(L, 3, 1, 1000000000);
    lua_Integer a = luaL_optinteger(L, 4, 0), b = luaL_optinteger(L, 5, 0);
    uint32_t size = (uint32_t)lv_checkrange(L, 6, 1, 8);
    struct lv_trap_ud *t = lv_checktrap(L, 1);   /* after the arguments */
    volatile uint64_t sink = 0;
    double t0 = 0, t1 = 0;
    if (kind == 0 || kind == 1) {
        t0 = now_ns();
        int rc = 0;
        /* a BAR read may reach a window's Lua handler, which may close the trap or its
         * backend: each read is one bracketed access, and the loop stops once closed */
        for (lua_Integer i = 0; i < n && rc >= 0; i++) {
            uint32_t v32;
            uint64_t v64;
            if (!t->open || t->close_pending || !t->fn.be->ops)
                rc = -EBADF;
            else if (kind == 0)
                rc = trap_cfg_read(&t->fn, (uint32_t)a, size, &v32);
            else {
                lv_trap_enter(t);
                rc = trap_bar_access(&t->fn, (unsigned)a, (uint64_t)b, size, false, &v64);
                lv_trap_leave(t);
            }
            if (rc >= 0)
                sink += kind == 0 ? v32 : v64;
        }
        if (t->handler_err)
            return lua_error(L);
        if (rc < 0)
            return lv_syserror(L, -rc, "bench", t->fn.be->name);
        t1 = now_ns();
    } else if (kind == 2) {
        char path[] = "/tmp/luavfio-bench-XXXXXX";
        int fd = mkstemp(path);
        if (fd < 0)
            return lv_syserror(L, errno, "mkstemp", path);
        unlink(path);
        uint8_t page[4096] = {1};
        if (write(fd, page, sizeof page) != (ssize_t)sizeof page) {
            int e = errno;
            close(fd);
            return lv_syserror(L, e, "write", path);
        }
        uint8_t buf[8];
        t0 = now_ns();
        for (lua_Integer i = 0; i < n; i++) {
            if (pread(fd, buf, size, (off_t)(i & 1023) * 4) < 0) {
                int e = errno;
                close(fd);
                return lv_syserror(L, e, "pread", path);
            }
            sink += buf[0];
        }
        t1 = now_ns();
        close(fd);
    } else {
        static uint8_t src[4096];
        uint8_t dst[8];
        t0 = now_ns();
        for (lua_Integer i = 0; i < n; i++) {
            const uint8_t *p = src + (i & 1023) * 4;
            __asm__ volatile("" : "+r"(p));   /* keep the copy from being folded away */
            memcpy(dst, p, size);
            __asm__ volatile("" : : "r"(dst) : "memory");
            sink += dst[0];
        }
        t1 = now_ns();
    }
    (void)sink;
    lua_pushnumber(L, (t1 - t0) / (double)n);
    return 1;
}
