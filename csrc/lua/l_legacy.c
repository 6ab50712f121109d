/* vm methods for the legacy PC ports answered in C (csrc/kvm/legacy.h): ignored port
 * ranges and the i8042 controller whose reset is the guest's reboot. They are built
 * into the VM (no Lua object): the VM frees them when it closes. l_vm.c's method table
 * lists them. */
#include "l_kvm.h"
#include "kvm/legacy.h"

#include <stdint.h>

/* vm:add_ignore_ports(base, size [, value = 0xff]) -> id: reads give `value` in every
 * byte, writes are dropped. */
int lv_vm_add_ignore_ports(lua_State *L)
{
    struct lv_vm_ud *v = lv_checkvm(L, 1);
    unsigned base = (unsigned)lv_checkrange(L, 2, 0, 0xffff);
    unsigned size = (unsigned)lv_checkrange(L, 3, 1, 0x10000 - base);
    unsigned value = lua_isnoneornil(L, 4) ? 0xff : (unsigned)lv_checkrange(L, 4, 0, 0xff);
    int id = kvm_add_ignore(&v->vm, (uint16_t)base, (uint16_t)size, (uint8_t)value);
    if (id < 0)
        return lv_syserrorf(L, -id, "add ignored ports", "0x%x size 0x%x", base, size);
    lua_pushinteger(L, id);
    return 1;
}

/* vm:add_i8042() -> id: ports 0x60/0x64; a reset pulse ends vcpu:run with a "stop" exit
 * at port 0x64 (value 0xfe). */
int lv_vm_add_i8042(lua_State *L)
{
    struct lv_vm_ud *v = lv_checkvm(L, 1);
    int id = kvm_add_i8042(&v->vm);
    if (id < 0)
        return lv_syserror(L, -id, "add i8042", "ports 0x60, 0x64");
    lua_pushinteger(L, id);
    return 1;
}
