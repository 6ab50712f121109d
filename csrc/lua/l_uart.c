/* vfio.uart: a 16550A serial port answered in C in the run loop (csrc/kvm/uart.h), made
 * by vm:add_uart; its output streams to stdout and/or a capture buffer Lua reads. */
#include "l_kvm.h"
#include "kvm/uart.h"

#include <stdint.h>
#include <stdio.h>
#include <string.h>

#define UART_T "vfio.uart"

static struct kvm_uart *checkuart(lua_State *L, int arg)
{
    return luaL_checkudata(L, arg, UART_T);
}

/* vm:add_uart{port = 0x3f8, irq = 4, stdout = false, capture = bytes (0: none)}
 *   -> id, uart. The guest's writes to THR go to the sinks chosen here; the last 4 KiB
 * are always kept (uart:tail()). */
int lv_vm_add_uart(lua_State *L)
{
    luaL_checkudata(L, 1, LV_VM_T);
    lua_Integer port = 0x3f8, irq = 4, capture = 0;
    int to_stdout = 0;
    if (!lua_isnoneornil(L, 2)) {
        luaL_checktype(L, 2, LUA_TTABLE);
        if (lua_getfield(L, 2, "port") != LUA_TNIL)
            port = luaL_checkinteger(L, -1);
        if (lua_getfield(L, 2, "irq") != LUA_TNIL)
            irq = luaL_checkinteger(L, -1);
        if (lua_getfield(L, 2, "capture") != LUA_TNIL)
            capture = luaL_checkinteger(L, -1);
        to_stdout = lua_getfield(L, 2, "stdout") != LUA_TNIL && lua_toboolean(L, -1);
        lua_pop(L, 4);
    }
    if (port < 0 || port > 0x10000 - KVM_UART_PORTS)
        return luaL_argerror(L, 2, "port out of range");
    if (irq < 0 || irq > 23)
        return luaL_argerror(L, 2, "irq must be an irqchip pin in [0, 23]");
    if (capture < 0 || capture > (1 << 30))
        return luaL_argerror(L, 2, "capture must be in [0, 1 GiB]");
    struct kvm_uart *u = lv_newobject(L, sizeof *u, UART_T, 0);
    int obj = lua_gettop(L);
    int e = kvm_uart_init(u, (uint32_t)irq, to_stdout, (size_t)capture);
    if (e < 0) {
        u->closed = 1;
        return lv_syserrorf(L, -e, "add UART", "port 0x%x", (unsigned)port);
    }
    /* The VM is checked after the options and the allocations, which may run Lua that
     * closes it: a UART is never attached to a closed VM. */
    struct lv_vm_ud *v = lv_checkvm(L, 1);
    if (lv_vm_add_range_obj(L, v, KVM_VMM_PIO, (uint64_t)port, KVM_UART_PORTS, obj) != 1)
        return 3;
    /* attached once the VM holds it: the range's release detaches it again, so a UART
     * never keeps a pointer to a VM that no longer holds it */
    kvm_uart_attach(u, &v->vm, (uint64_t)port);
    lua_pushvalue(L, obj);
    return 2;
}

/* uart:output([clear]) -> captured bytes, bytes dropped past the cap */
static int l_uart_output(lua_State *L)
{
    struct kvm_uart *u = checkuart(L, 1);
    return lv_push_capture(L, u->cap_buf, &u->cap_len, &u->dropped);
}

/* uart:tail() -> the last (up to 4 KiB) bytes sent, and how many were sent in all */
static int l_uart_tail(lua_State *L)
{
    struct kvm_uart *u = checkuart(L, 1);
    char buf[KVM_UART_TAIL];
    size_t n = kvm_uart_tail(u, buf);
    lua_pushlstring(L, buf, n);
    lua_pushinteger(L, (lua_Integer)u->sent);
    return 2;
}

/* uart:feed(bytes) -> how many were queued for the guest (the queue holds 4 KiB) */
static int l_uart_feed(lua_State *L)
{
    struct kvm_uart *u = checkuart(L, 1);
    size_t len;
    const char *s = luaL_checklstring(L, 2, &len);
    if (u->closed)
        return luaL_error(L, "attempt to use a closed uart");
    lua_pushinteger(L, (lua_Integer)kvm_uart_feed(u, s, len));
    return 1;
}

/* uart:stdout_error() -> nil while streaming works (or was never asked for), else a
 * message and errno: the last write to stdout that failed. A stdout with no reader left
 * (EPIPE) ends streaming; the VMM and the guest go on. */
static int l_uart_stdout_error(lua_State *L)
{
    struct kvm_uart *u = checkuart(L, 1);
    if (!u->stdout_errno)
        return 0;
    lua_pushfstring(L, "uart write to stdout: %s%s", strerror(u->stdout_errno),
                    u->to_stdout ? "" : " (streaming stopped)");
    lua_pushinteger(L, u->stdout_errno);
    return 2;
}

static int l_uart_close(lua_State *L)
{
    struct kvm_uart *u = checkuart(L, 1);
    if (!u->closed)
        kvm_uart_close(u);
    return 0;
}

static int l_uart_tostring(lua_State *L)
{
    struct kvm_uart *u = checkuart(L, 1);
    if (u->closed)
        lua_pushliteral(L, "vfio.uart (closed)");
    else {
        char s[96]; /* lua_pushfstring has no %x */
        snprintf(s, sizeof s, "vfio.uart (port 0x%llx, irq %u, %llu bytes sent)",
                 (unsigned long long)u->base, (unsigned)u->irq, (unsigned long long)u->sent);
        lua_pushstring(L, s);
    }
    return 1;
}

/*** @module vfio.core */

/***
A guest serial port (`vfio.uart`).
@type uart
*/

/***
The bytes captured (up to `capture`).
@function uart:output
@tparam[opt] boolean clear empty the capture after
@treturn string the bytes
@treturn int bytes dropped past the cap
*/

/***
The last bytes sent.
@function uart:tail
@treturn string up to 4 KiB
@treturn int how many were sent in all
*/

/***
Queue input for the guest (the queue holds 4 KiB); raises on a closed uart.
@function uart:feed
@tparam string bytes the input
@treturn int how many were queued
*/

/***
Why streaming to `stdout` stopped: nil while it works (or was never asked for), else the
error of the write that failed (EPIPE when the reader went away); the guest's output is
still captured.
@function uart:stdout_error
@treturn ?string the failed write's message
@treturn ?int its errno
*/

/***
Stop answering (idempotent).
@function uart:close
*/

void lv_open_uart(lua_State *L)
{
    static const luaL_Reg methods[] = {
        {"output", l_uart_output}, {"tail", l_uart_tail}, {"feed", l_uart_feed},
        {"stdout_error", l_uart_stdout_error}, {"close", l_uart_close}, {NULL, NULL}};
    static const luaL_Reg meta[] = {
        {"__gc", l_uart_close}, {"__close", l_uart_close}, {"__tostring", l_uart_tostring},
        {NULL, NULL}};
    lv_newclass(L, UART_T, methods, meta);
    lv_setcap(L, UART_T, LV_CAP_KVM_IO, &kvm_uart_ops);
}
