/* Lua binding: vfio.vcpu (created by vm:vcpu(id)); the run loop itself is in kvm/run.c. */
#include "l_kvm.h"
#include "base/le.h"
#include "kvm/smp.h"
#include "kvm/wake.h"

#include <errno.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* Rules of a run (vcpu:run, vm:run_vcpus, and any run entry point added later):
 * - A run holds references to everything it runs: vcpu:run has its vCPU on its stack,
 *   vm:run_vcpus anchors its vCPUs in the user value of a userdata on its stack (not
 *   only in the caller's list, which a handler may empty), and each vCPU holds its VM.
 * - A VM runs once at a time: every run entry point refuses, with "vm is running: ...",
 *   while any run of the same VM is on the stack (a handler's vcpu:run of another vCPU
 *   would wait for io_lock held by its own thread; a second run_vcpus would replace it).
 * - A vCPU running in a thread of vm:run_vcpus is in KVM_RUN or about to be: a vCPU
 *   ioctl on it (registers, CPUID, LAPIC, MSRs, complete) raises instead of blocking in
 *   KVM while the handler holds io_lock. Only the vCPU whose exit the handler is looking
 *   at is parked, and may be used.
 * - Lifetime: the kvm_run page and the vCPU fd stay while a run is on the stack, so
 *   vcpu:close() from a run handler only marks the vCPU; the run then returns after that
 *   handler (its exit table has closed = true) and closes it. The VM is kept alive by
 *   user value 1 and follows the same rule (struct lv_vm_ud). */
enum { IDLE = 0, RUN_HERE = 1, RUN_THREAD = 2 };

struct vcpu_ud {
    struct kvm_vcpu c;
    struct kvm_exit last; /* the exit last returned, for complete() */
    struct lv_vm_ud *vm;
    int running;             /* IDLE, RUN_HERE (vcpu:run) or RUN_THREAD (vm:run_vcpus) */
    int parked;              /* RUN_THREAD, its exit handed to Lua: its thread waits */
    int close_pending;
};

static struct vcpu_ud *checkvcpu(lua_State *L, int arg)
{
    struct vcpu_ud *v = luaL_checkudata(L, arg, LV_VCPU_T);
    if (v->c.fd < 0 || v->close_pending)
        luaL_error(L, "attempt to use a closed vcpu");
    if (v->c.vm->fd < 0 || v->vm->close_pending)
        luaL_error(L, "attempt to use a vcpu of a closed vm");
    return v;
}

/* checkvcpu for a vCPU ioctl or its kvm_run page: not while another thread runs it */
static struct vcpu_ud *checkvcpu_idle(lua_State *L, int arg)
{
    struct vcpu_ud *v = checkvcpu(L, arg);
    if (v->running == RUN_THREAD && !v->parked)
        luaL_error(L, "vcpu %d is running in another thread (vm:run_vcpus): it cannot be "
                   "used until the run ends", v->c.id);
    return v;
}

/* Every run entry point: the VM runs once at a time. */
static void check_vm_idle(lua_State *L, struct lv_vm_ud *vm, const char *what)
{
    if (vm->running)
        luaL_error(L, "vm is running: %s refused inside a run of the same VM (one run at a "
                   "time; return from the handler first)", what);
}

int lv_vm_vcpu(lua_State *L)
{
    luaL_checkudata(L, 1, LV_VM_T);
    int id = (int)lv_checkrange(L, 2, 0, 1023);
    struct vcpu_ud *v = lv_newobject(L, sizeof *v, LV_VCPU_T, 1);
    v->c.fd = -1;
    struct lv_vm_ud *vm = lv_checkvm(L, 1);   /* after the allocation (a GC step) */
    v->vm = vm;
    int e = kvm_vcpu_create(&v->c, &vm->vm, id);
    if (e < 0)
        return lv_syserrorf(L, -e, "KVM_CREATE_VCPU", "vcpu %d", id);
    lv_set_parent(L, -1, 1, 1); /* the vcpu keeps its vm (and the vm its kvm) alive */
    return 1;
}

static int l_vcpu_close(lua_State *L)
{
    struct vcpu_ud *v = luaL_checkudata(L, 1, LV_VCPU_T);
    if (v->running)
        v->close_pending = 1;   /* from a handler: run() ends, then closes the vCPU */
    else
        kvm_vcpu_close(&v->c);
    return 0;
}

static int l_vcpu_tostring(lua_State *L)
{
    struct vcpu_ud *v = luaL_checkudata(L, 1, LV_VCPU_T);
    if (v->c.fd < 0)
        lua_pushliteral(L, "vfio.vcpu (closed)");
    else
        lua_pushfstring(L, "vfio.vcpu (id %d, fd %d)", v->c.id, v->c.fd);
    return 1;
}

static int l_vcpu_id(lua_State *L)
{
    lua_pushinteger(L, checkvcpu(L, 1)->c.id);
    return 1;
}

static int l_vcpu_fileno(lua_State *L)
{
    struct vcpu_ud *v = luaL_checkudata(L, 1, LV_VCPU_T);
    lua_pushinteger(L, v->c.fd);
    return 1;
}

/* ---- registers ---- */

#define REGS(X) X(rax) X(rbx) X(rcx) X(rdx) X(rsi) X(rdi) X(rsp) X(rbp) X(r8) X(r9) \
    X(r10) X(r11) X(r12) X(r13) X(r14) X(r15) X(rip) X(rflags)

static int l_vcpu_get_regs(lua_State *L)
{
    struct vcpu_ud *v = checkvcpu_idle(L, 1);
    struct kvm_regs r;
    int e = kvm_vcpu_get_regs(&v->c, &r);
    if (e < 0)
        return lv_syserrorf(L, -e, "KVM_GET_REGS", "vcpu %d", v->c.id);
    lua_createtable(L, 0, 18);
#define PUSH(n) lua_pushinteger(L, (lua_Integer)r.n); lua_setfield(L, -2, #n);
    REGS(PUSH)
#undef PUSH
    return 1;
}

/* vcpu:set_regs{rip=..., ...}: fields not given keep their value. */
static int l_vcpu_set_regs(lua_State *L)
{
    luaL_checkudata(L, 1, LV_VCPU_T);
    luaL_checktype(L, 2, LUA_TTABLE);
    /* the table first (its metamethods may run Lua), then the vCPU (README: read, then
     * check) */
    struct kvm_regs given = {0};
    uint32_t mask = 0, bit = 1;
#define GET(n) if (lua_getfield(L, 2, #n) != LUA_TNIL) \
        given.n = (__u64)luaL_checkinteger(L, -1), mask |= bit; \
    lua_pop(L, 1); bit <<= 1;
    REGS(GET)
#undef GET
    struct vcpu_ud *v = checkvcpu_idle(L, 1);
    struct kvm_regs r;
    int e = kvm_vcpu_get_regs(&v->c, &r);
    if (e < 0)
        return lv_syserrorf(L, -e, "KVM_GET_REGS", "vcpu %d", v->c.id);
    bit = 1;
#define PUT(n) if (mask & bit) r.n = given.n; bit <<= 1;
    REGS(PUT)
#undef PUT
    if ((e = kvm_vcpu_set_regs(&v->c, &r)) < 0)
        return lv_syserrorf(L, -e, "KVM_SET_REGS", "vcpu %d", v->c.id);
    lua_pushboolean(L, 1);
    return 1;
}

static int l_vcpu_get_sregs(lua_State *L)
{
    struct vcpu_ud *v = checkvcpu_idle(L, 1);
    struct kvm_sregs s;
    int e = kvm_vcpu_get_sregs(&v->c, &s);
    if (e < 0)
        return lv_syserrorf(L, -e, "KVM_GET_SREGS", "vcpu %d", v->c.id);
    lua_createtable(L, 0, 8);
#define PUSH(k, val) lua_pushinteger(L, (lua_Integer)(val)); lua_setfield(L, -2, k);
    PUSH("cr0", s.cr0) PUSH("cr2", s.cr2) PUSH("cr3", s.cr3) PUSH("cr4", s.cr4)
    PUSH("efer", s.efer) PUSH("apic_base", s.apic_base) PUSH("cs", s.cs.selector)
    PUSH("cs_base", s.cs.base)
#undef PUSH
    return 1;
}

static int l_vcpu_setup_real(lua_State *L)
{
    struct vcpu_ud *v = checkvcpu_idle(L, 1);
    uint16_t cs = (uint16_t)lv_checkrange(L, 2, 0, 0xffff);
    uint16_t ip = (uint16_t)lv_checkrange(L, 3, 0, 0xffff);
    int e = kvm_vcpu_setup_real(&v->c, cs, ip);
    if (e < 0)
        return lv_syserrorf(L, -e, "set real-mode registers", "vcpu %d", v->c.id);
    lua_pushboolean(L, 1);
    return 1;
}

/* vcpu:setup_flat32(eip, eax, ebx): the multiboot entry state. */
static int l_vcpu_setup_flat32(lua_State *L)
{
    struct vcpu_ud *v = checkvcpu_idle(L, 1);
    uint32_t eip = (uint32_t)lv_checkrange(L, 2, 0, UINT32_MAX);
    uint32_t eax = (uint32_t)lv_checkrange(L, 3, 0, UINT32_MAX);
    uint32_t ebx = (uint32_t)lv_checkrange(L, 4, 0, UINT32_MAX);
    int e = kvm_vcpu_setup_flat32(&v->c, eip, eax, ebx);
    if (e < 0)
        return lv_syserrorf(L, -e, "set protected-mode registers", "vcpu %d", v->c.id);
    lua_pushboolean(L, 1);
    return 1;
}

/* vcpu:setup_boot32{eip=, esi=0, eax=0, ebx=0, cs=0x08, ds=0x10, gdt_base=, gdt_limit=}:
 * 32-bit flat protected mode with the selectors and GDT given (the Linux boot protocol's
 * entry: cs = 0x10, ds = 0x18, esi = boot_params). */
static int l_vcpu_setup_boot32(lua_State *L)
{
    luaL_checkudata(L, 1, LV_VCPU_T);
    luaL_checktype(L, 2, LUA_TTABLE);
    struct kvm_boot32 b = {0};
    static const char *const names[] = {"eip", "esi", "eax", "ebx", "cs", "ds",
                                        "gdt_base", "gdt_limit"};
    lua_Integer val[8] = {0};
    static const lua_Integer max[8] = {UINT32_MAX, UINT32_MAX, UINT32_MAX, UINT32_MAX,
                                       0xffff, 0xffff, UINT32_MAX, 0xffff};
    for (int i = 0; i < 8; i++) {
        if (lua_getfield(L, 2, names[i]) != LUA_TNIL) {
            val[i] = luaL_checkinteger(L, -1);
            if (val[i] < 0 || val[i] > max[i])
                return luaL_error(L, "setup_boot32: %s out of range", names[i]);
        } else if (i == 0) {
            return luaL_error(L, "setup_boot32: eip required");
        }
        lua_pop(L, 1);
    }
    b.eip = (uint32_t)val[0], b.esi = (uint32_t)val[1], b.eax = (uint32_t)val[2];
    b.ebx = (uint32_t)val[3], b.cs = (uint16_t)val[4], b.ds = (uint16_t)val[5];
    b.gdt_base = (uint64_t)val[6], b.gdt_limit = (uint16_t)val[7];
    struct vcpu_ud *v = checkvcpu_idle(L, 1);   /* after the table's reads */
    int e = kvm_vcpu_setup_boot32(&v->c, &b);
    if (e < 0)
        return lv_syserrorf(L, -e, "set protected-mode registers", "vcpu %d", v->c.id);
    lua_pushboolean(L, 1);
    return 1;
}

/* vcpu:setup_boot64{rip=, rsi=0, cr3=, cs=0x10, ds=0x18, gdt_base=, gdt_limit=}: long
 * mode through the guest's page tables at cr3 (the Linux 64-bit boot protocol's entry into
 * a vmlinux: rsi = boot_params). The tables and the GDT are the caller's, in guest RAM. */
static int l_vcpu_setup_boot64(lua_State *L)
{
    luaL_checkudata(L, 1, LV_VCPU_T);
    luaL_checktype(L, 2, LUA_TTABLE);
    static const char *const names[] = {"rip", "rsi", "cr3", "gdt_base", "gdt_limit", "cs", "ds"};
    static const lua_Integer max[] = {LUA_MAXINTEGER, LUA_MAXINTEGER, 0xffffffffffLL,
                                      LUA_MAXINTEGER, 0xffff, 0xffff, 0xffff};
    static const lua_Integer dflt[] = {-1, 0, -1, -1, -1, 0x10, 0x18};
    lua_Integer val[7];
    for (int i = 0; i < 7; i++) {
        if (lua_getfield(L, 2, names[i]) != LUA_TNIL) {
            val[i] = luaL_checkinteger(L, -1);
            if (val[i] < 0 || val[i] > max[i])
                return luaL_error(L, "setup_boot64: %s out of range", names[i]);
        } else if (dflt[i] < 0) {
            return luaL_error(L, "setup_boot64: %s required", names[i]);
        } else {
            val[i] = dflt[i];
        }
        lua_pop(L, 1);
    }
    if (val[2] & 0xfff)
        return luaL_error(L, "setup_boot64: cr3 must be page aligned");
    struct kvm_boot64 b = {.rip = (uint64_t)val[0], .rsi = (uint64_t)val[1],
                           .cr3 = (uint64_t)val[2], .gdt_base = (uint64_t)val[3],
                           .gdt_limit = (uint16_t)val[4], .cs = (uint16_t)val[5],
                           .ds = (uint16_t)val[6]};
    struct vcpu_ud *v = checkvcpu_idle(L, 1);   /* after the table's reads */
    int e = kvm_vcpu_setup_boot64(&v->c, &b);
    if (e < 0)
        return lv_syserrorf(L, -e, "set long-mode registers", "vcpu %d", v->c.id);
    lua_pushboolean(L, 1);
    return 1;
}

/* ---- CPUID, LAPIC, MSRs ---- */

void lv_push_cpuid(lua_State *L, const struct kvm_cpuid2 *t)
{
    unsigned n = t ? t->nent : 0;
    lua_createtable(L, (int)n, 0);
    for (unsigned i = 0; i < n; i++) {
        const struct kvm_cpuid_entry2 *e = &t->entries[i];
        lua_createtable(L, 0, 7);
#define F(k) lua_pushinteger(L, (lua_Integer)e->k); lua_setfield(L, -2, #k);
        F(function) F(index) F(flags) F(eax) F(ebx) F(ecx) F(edx)
#undef F
        lua_rawseti(L, -2, (lua_Integer)i + 1);
    }
}

/* vcpu:set_cpuid([{ {function=, index=0, eax=, ebx=, ecx=, edx=}, ... }]): the table
 * built from KVM's supported CPUID with this vCPU's APIC ID, the hypervisor bit and KVM's
 * leaves (kvm/vcpu.h), the given leaves replacing theirs (registers not given stay KVM's).
 * Before the first run only. */
static int l_vcpu_set_cpuid(lua_State *L)
{
    luaL_checkudata(L, 1, LV_VCPU_T);
    lua_Integer n = 0;
    if (!lua_isnoneornil(L, 2)) {
        luaL_checktype(L, 2, LUA_TTABLE);
        n = luaL_len(L, 2);
        if (n < 0 || n > 256)
            return luaL_argerror(L, 2, "at most 256 leaves");
    }
    /* Every leaf is read before the vCPU is checked and KVM's table looked at: the list's
     * metamethods may run Lua that closes the VM (and frees that table). `given` marks
     * the registers a leaf sets (bit r). */
    struct kvm_cpuid_entry2 *over = n ? lua_newuserdatauv(L, (size_t)n * sizeof *over, 0) : NULL;
    uint8_t given[256];
    static const char *const regs[] = {"eax", "ebx", "ecx", "edx"};
    for (lua_Integer i = 0; i < n; i++) {
        lua_geti(L, 2, i + 1);
        luaL_checktype(L, -1, LUA_TTABLE);
        struct kvm_cpuid_entry2 *e = &over[i];
        memset(e, 0, sizeof *e);
        lua_getfield(L, -1, "function");
        e->function = (uint32_t)luaL_checkinteger(L, -1);
        lua_getfield(L, -2, "index");
        e->index = (uint32_t)luaL_optinteger(L, -1, 0);
        lua_pop(L, 2);
        uint32_t *dst[] = {&e->eax, &e->ebx, &e->ecx, &e->edx};
        given[i] = 0;
        for (int r = 0; r < 4; r++) {
            if (lua_getfield(L, -1, regs[r]) != LUA_TNIL) {
                *dst[r] = (uint32_t)luaL_checkinteger(L, -1);
                given[i] |= (uint8_t)(1u << r);
            }
            lua_pop(L, 1);
        }
        lua_pop(L, 1);
    }
    struct vcpu_ud *v = checkvcpu_idle(L, 1);
    const struct kvm_cpuid2 *sup = v->vm->vm.cpuid;
    for (lua_Integer i = 0; i < n; i++) {
        struct kvm_cpuid_entry2 *e = &over[i];
        uint32_t *dst[] = {&e->eax, &e->ebx, &e->ecx, &e->edx};
        /* start from KVM's answer for that leaf, so a partial override keeps the rest */
        for (uint32_t j = 0; sup && j < sup->nent; j++)
            if (sup->entries[j].function == e->function &&
                (!(sup->entries[j].flags & KVM_CPUID_FLAG_SIGNIFCANT_INDEX) ||
                 sup->entries[j].index == e->index)) {
                const uint32_t kvm[] = {sup->entries[j].eax, sup->entries[j].ebx,
                                        sup->entries[j].ecx, sup->entries[j].edx};
                for (int r = 0; r < 4; r++)
                    if (!(given[i] & (1u << r)))
                        *dst[r] = kvm[r];
                e->flags = sup->entries[j].flags;
                break;
            }
    }
    int e = kvm_vcpu_set_cpuid(&v->c, over, (unsigned)n);
    if (e < 0)
        return lv_syserrorf(L, -e, "KVM_SET_CPUID2", "vcpu %d", v->c.id);
    lua_pushboolean(L, 1);
    return 1;
}

/* vcpu:cpuid() -> the table set (KVM_GET_CPUID2), as vm:supported_cpuid() lists it */
static int l_vcpu_cpuid(lua_State *L)
{
    struct vcpu_ud *v = checkvcpu_idle(L, 1);
    struct kvm_cpuid2 *t = NULL;
    int e = kvm_vcpu_get_cpuid(&v->c, &t);
    if (e < 0)
        return lv_syserrorf(L, -e, "KVM_GET_CPUID2", "vcpu %d", v->c.id);
    lv_push_cpuid(L, t);
    free(t);
    return 1;
}

/* vcpu:set_lapic_lint(): LINT0 ExtINT, LINT1 NMI (after vm:create_irqchip) */
static int l_vcpu_set_lapic_lint(lua_State *L)
{
    struct vcpu_ud *v = checkvcpu_idle(L, 1);
    int e = kvm_vcpu_set_lapic_lint(&v->c);
    if (e < 0)
        return lv_syserrorf(L, -e, "KVM_SET_LAPIC", "vcpu %d", v->c.id);
    lua_pushboolean(L, 1);
    return 1;
}

/* vcpu:lapic_reg(offset) -> the 32-bit LAPIC register (KVM_GET_LAPIC) */
static int l_vcpu_lapic_reg(lua_State *L)
{
    struct vcpu_ud *v = checkvcpu_idle(L, 1);
    unsigned off = (unsigned)lv_checkrange(L, 2, 0, 0x3fc);
    if (off % 4)
        return luaL_argerror(L, 2, "LAPIC registers are 4-byte aligned");
    uint32_t val;
    int e = kvm_vcpu_get_lapic_reg(&v->c, off, &val);
    if (e < 0)
        return lv_syserrorf(L, -e, "KVM_GET_LAPIC", "vcpu %d", v->c.id);
    lua_pushinteger(L, val);
    return 1;
}

/* vcpu:set_msr(index, value) -> true; vcpu:get_msr(index) -> value */
static int l_vcpu_set_msr(lua_State *L)
{
    struct vcpu_ud *v = checkvcpu_idle(L, 1);
    uint32_t index = (uint32_t)lv_checkrange(L, 2, 0, UINT32_MAX);
    uint64_t value = (uint64_t)luaL_checkinteger(L, 3);
    int e = kvm_vcpu_set_msr(&v->c, index, value);
    if (e < 0)
        return lv_syserrorf(L, -e, "KVM_SET_MSRS", "vcpu %d msr 0x%x", v->c.id, index);
    lua_pushboolean(L, 1);
    return 1;
}

static int l_vcpu_get_msr(lua_State *L)
{
    struct vcpu_ud *v = checkvcpu_idle(L, 1);
    uint32_t index = (uint32_t)lv_checkrange(L, 2, 0, UINT32_MAX);
    uint64_t value;
    int e = kvm_vcpu_get_msr(&v->c, index, &value);
    if (e < 0)
        return lv_syserrorf(L, -e, "KVM_GET_MSRS", "vcpu %d msr 0x%x", v->c.id, index);
    lua_pushinteger(L, (lua_Integer)value);
    return 1;
}

/* ---- run ---- */

static const char *const kind_names[] = {
    [KVM_VMM_EXIT_IO] = "io",         [KVM_VMM_EXIT_MMIO] = "mmio",
    [KVM_VMM_EXIT_HLT] = "hlt",       [KVM_VMM_EXIT_SHUTDOWN] = "shutdown",
    [KVM_VMM_EXIT_STOP] = "stop",     [KVM_VMM_EXIT_INTR] = "intr",
    [KVM_VMM_EXIT_TIMEOUT] = "timeout", [KVM_VMM_EXIT_FAIL_ENTRY] = "fail_entry",
    [KVM_VMM_EXIT_INTERNAL_ERROR] = "internal_error",
    [KVM_VMM_EXIT_SYSTEM_EVENT] = "system_event", [KVM_VMM_EXIT_OTHER] = "other",
    [KVM_VMM_EXIT_WAKE] = "wake",
};

/* A stop exit's reason (struct kvm_exit's stop), as Lua reads it in exit.stop. */
static const char *const stop_names[] = {
    [KVM_VMM_STOP_NONE] = NULL,            [KVM_VMM_STOP_EXIT_PORT] = "exit_port",
    [KVM_VMM_STOP_RESET] = "reset",        [KVM_VMM_STOP_CONFIG] = "config",
    [KVM_VMM_STOP_BAR] = "bar",
};

static void push_exit(lua_State *L, const struct kvm_exit *x)
{
    lua_createtable(L, 0, 11);
    lua_pushstring(L, kind_names[x->kind]);
    lua_setfield(L, -2, "reason");
    lua_pushinteger(L, x->reason);
    lua_setfield(L, -2, "kvm_reason");
    switch (x->kind) {
    case KVM_VMM_EXIT_IO:
    case KVM_VMM_EXIT_MMIO:
    case KVM_VMM_EXIT_STOP:
        lua_pushstring(L, x->space == KVM_VMM_PIO ? "pio" : "mmio");
        lua_setfield(L, -2, "space");
        lua_pushinteger(L, (lua_Integer)x->addr);
        lua_setfield(L, -2, x->space == KVM_VMM_PIO ? "port" : "addr");
        lua_pushinteger(L, x->size);
        lua_setfield(L, -2, "size");
        lua_pushinteger(L, x->count);
        lua_setfield(L, -2, "count");
        lua_pushboolean(L, x->is_write);
        lua_setfield(L, -2, "write");
        if (x->kind == KVM_VMM_EXIT_STOP && x->stop > KVM_VMM_STOP_NONE &&
            x->stop < KVM_VMM_STOP_KINDS) {
            lua_pushstring(L, stop_names[x->stop]);
            lua_setfield(L, -2, "stop");
        }
        if (x->is_write) {
            lua_pushinteger(L, (lua_Integer)lv_le_get(x->data, x->size));
            lua_setfield(L, -2, "value");
            lua_pushlstring(L, (const char *)x->data, (size_t)x->size * x->count);
            lua_setfield(L, -2, "data");
        }
        break;
    case KVM_VMM_EXIT_FAIL_ENTRY:
    case KVM_VMM_EXIT_INTERNAL_ERROR:
    case KVM_VMM_EXIT_SYSTEM_EVENT:
        lua_pushinteger(L, (lua_Integer)x->code);
        lua_setfield(L, -2, "code");
        break;
    default:
        break;
    }
}

/* Fill the data of the pending read with value (integer, repeated per element) or a
 * string of exactly size*count bytes. Returns 0 or raises through arg. */
static void complete_read(lua_State *L, struct vcpu_ud *v, int arg)
{
    struct kvm_exit *x = &v->last;
    size_t total = (size_t)x->size * x->count;
    if (lua_type(L, arg) == LUA_TSTRING) {
        size_t len;
        const char *s = lua_tolstring(L, arg, &len);
        if (len != total)
            luaL_error(L, "read completion needs %d bytes, got %d", (int)total, (int)len);
        memcpy(x->data, s, len);
    } else {
        uint64_t val = (uint64_t)luaL_checkinteger(L, arg);
        for (unsigned i = 0; i < x->count; i++)
            lv_le_put(x->data + i * x->size, val, x->size);
    }
}

/* vcpu:complete(value): data for the read exit last returned by run(). */
static int l_vcpu_complete(lua_State *L)
{
    struct vcpu_ud *v = checkvcpu_idle(L, 1);
    if (!v->c.pending_read)
        return luaL_error(L, "no pending read to complete");
    complete_read(L, v, 2);
    return 0;
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* vcpu:run([handler], [{timeout = seconds, deadline = monotonic seconds}]) -> exit table.
 * Without a handler: returns at the first exit the C side does not handle; a read exit is
 * answered with vcpu:complete(value) before the next run (else it reads all ones).
 * With a handler: handler(exit) is called for every unhandled io/mmio exit; for reads
 * its integer or string result is the data; returning false ends run() with that exit.
 * An unhandled io/mmio exit is one no range covers or one its range passed on (a Lua
 * quirk window inside a trap's range). Other exits (hlt, stop, timeout, intr, shutdown,
 * ...) always end run(); a stop carries its reason in exit.stop: "exit_port", "reset",
 * "config" (a config write asking for attention) or "bar" (a BAR access that queued
 * trap events). */
/* Leave run(): the closes asked for by a handler happen now, when nothing of the run
 * is on the stack any more. */
static void end_run(struct vcpu_ud *v)
{
    v->running = IDLE;
    v->parked = 0;
    v->vm->running--;
    if (v->close_pending) {
        v->close_pending = 0;
        kvm_vcpu_close(&v->c);
    }
    if (v->vm->close_pending && !v->vm->running)
        lv_vm_close_now(v->vm);
}

/* Push v->last as an exit table and, for an io/mmio exit, give it to the handler: 1 when
 * the run ends here (the exit table on the stack), 0 when the vCPU goes on (the read, if
 * any, answered; the stack as before). The run ends for any other exit, a handler that
 * returns false, or one that closed the VM or any of the `n` vCPUs of the run (`all`, or
 * just v). */
static int give_exit(lua_State *L, struct vcpu_ud *v, int handler, struct vcpu_ud **all,
                     unsigned n)
{
    push_exit(L, &v->last);
    if (all) {
        lua_pushinteger(L, v->c.id);
        lua_setfield(L, -2, "vcpu");
    }
    int k = v->last.kind;
    if (!handler || (k != KVM_VMM_EXIT_IO && k != KVM_VMM_EXIT_MMIO))
        return 1;
    lua_pushvalue(L, handler);
    lua_pushvalue(L, -2);
    lua_call(L, 1, 1);
    int closed = v->close_pending || v->vm->close_pending;
    for (unsigned j = 0; j < n; j++)
        closed |= all[j]->close_pending;
    if (closed) {
        /* the handler closed a vCPU or the VM: no completion, no next entry */
        v->c.pending_read = 0;
        lua_pop(L, 1);
        lua_pushboolean(L, 1);
        lua_setfield(L, -2, "closed");
        return 1;
    }
    if (lua_isboolean(L, -1) && !lua_toboolean(L, -1)) {
        lua_pop(L, 1);
        return 1;
    }
    if (v->c.pending_read && !lua_isnil(L, -1))
        complete_read(L, v, lua_gettop(L));
    lua_pop(L, 2);
    return 0;
}

/* Seconds to a timer's nanoseconds: at least 1, saturated (a huge timeout is a far one,
 * never an overflow, nor a conversion of an out-of-range double) */
static int64_t secs_to_ns(double secs)
{
    if (!(secs < 9e9))
        return INT64_MAX;
    int64_t ns = (int64_t)(secs * 1e9);
    return ns < 1 ? 1 : ns;
}

static int run_loop(lua_State *L, struct vcpu_ud *v, int handler, double deadline)
{
    for (;;) {
        int64_t ns = 0;
        if (deadline > 0) {
            double left = deadline - now_s();
            if (left <= 0) {
                v->c.pending_read = 0;
                push_exit(L, &(struct kvm_exit){.kind = KVM_VMM_EXIT_TIMEOUT});
                return 1;
            }
            ns = secs_to_ns(left);
        }
        int e = kvm_vcpu_run(&v->c, ns, &v->last);
        if (e == -EBUSY)
            return lv_syserrorf(L, EBUSY, "KVM_RUN", "vcpu %d: its timeout signal %d "
                                "(SIGRTMAX-%d) has another handler", v->c.id,
                                kvm_kick_signal(), SIGRTMAX - kvm_kick_signal());
        if (e < 0)
            return lv_syserrorf(L, -e, "KVM_RUN", "vcpu %d", v->c.id);
        if (give_exit(L, v, handler, NULL, 0))
            return 1;
    }
}

/* run_loop under pcall: (vcpu block, handler or nil, deadline) */
static int run_protected(lua_State *L)
{
    return run_loop(L, lua_touserdata(L, 1), lua_isfunction(L, 2) ? 2 : 0, lua_tonumber(L, 3));
}

/* The fds of opts.wake (a list of fds or objects with fileno()), read into `fds`. */
static unsigned wake_args(lua_State *L, int optarg, int *fds)
{
    unsigned n = 0;
    if (lua_getfield(L, optarg, "wake") != LUA_TNIL) {
        int list = lua_gettop(L);
        luaL_argexpected(L, lua_istable(L, list), optarg, "wake: a list of fds");
        lua_Integer len = luaL_len(L, list);
        if (len < 0 || len > KVM_WAKE_MAX)
            luaL_argerror(L, optarg, "wake: a list of at most 64 fds");
        for (lua_Integer i = 1; i <= len; i++) {
            lua_geti(L, list, i);
            fds[n++] = lv_checkfd(L, lua_gettop(L));
            lua_pop(L, 1);
        }
    }
    lua_pop(L, 1);
    return n;
}

/* The ([handler], [{timeout = seconds, deadline = seconds, wake = {fd...}}]) arguments of
 * run and run_vcpus from `arg` on: the handler's stack index (0: none), the run's
 * deadline on CLOCK_MONOTONIC in seconds (0: none), the earlier of now + timeout and
 * `deadline` (a caller's one deadline for a run made of several calls, on the same clock
 * as posix.time.clock_gettime(CLOCK_MONOTONIC)), and the wake fds (n_wake of them in
 * wake, KVM_WAKE_MAX room). */
static int run_args(lua_State *L, int arg, double *deadline, int *wake, unsigned *n_wake)
{
    int handler = 0, optarg = arg;
    if (lua_isfunction(L, arg))
        handler = arg, optarg = arg + 1;
    else if (lua_isnil(L, arg) && !lua_isnone(L, arg + 1))
        optarg = arg + 1;
    *deadline = 0;
    *n_wake = 0;
    if (!lua_isnoneornil(L, optarg)) {
        luaL_checktype(L, optarg, LUA_TTABLE);
        *n_wake = wake_args(L, optarg, wake);
        lua_getfield(L, optarg, "timeout");
        double timeout = luaL_optnumber(L, -1, 0);
        lua_pop(L, 1);
        if (!(timeout >= 0))   /* NaN too */
            luaL_argerror(L, optarg, "timeout must be a number of seconds >= 0");
        lua_getfield(L, optarg, "deadline");
        double at = luaL_optnumber(L, -1, 0);
        int given = !lua_isnil(L, -1);
        lua_pop(L, 1);
        if (given && !(at > 0))   /* NaN too */
            luaL_argerror(L, optarg, "deadline must be a monotonic time in seconds > 0");
        if (timeout > 0)
            *deadline = now_s() + timeout;
        if (given && (*deadline == 0 || at < *deadline))
            *deadline = at;
    }
    return handler;
}

/* A wake fd of vcpu:run is readable: the run's vCPU ends its run with a wake exit. */
static void vcpu_woken(struct kvm_wake *w)
{
    kvm_vcpu_wake(w->arg);
}

static int l_vcpu_run(lua_State *L)
{
    luaL_checkudata(L, 1, LV_VCPU_T);
    double deadline;
    int wake_fds[KVM_WAKE_MAX];
    unsigned n_wake;
    /* the options first: they may run Lua */
    int handler = run_args(L, 2, &deadline, wake_fds, &n_wake);
    struct vcpu_ud *v = checkvcpu(L, 1);
    check_vm_idle(L, v->vm, "vcpu:run");   /* its own run or any other of its VM */
    /* the wake thread lives exactly as long as this call: the fds are used only here */
    struct kvm_wake wake = {.cancel_fd = -1};
    atomic_store(&v->c.wake, 0);
    if (n_wake) {
        int e = kvm_wake_start(&wake, wake_fds, n_wake, vcpu_woken, &v->c);
        if (e < 0)
            return lv_syserrorf(L, -e, "start the wake thread", "vcpu %d", v->c.id);
    }
    /* The loop runs under pcall so that a handler's error still ends the run properly
     * (running cleared, pending closes done) before it propagates. */
    int base = lua_gettop(L);
    lua_pushcfunction(L, run_protected);
    lua_pushlightuserdata(L, v);
    if (handler)
        lua_pushvalue(L, handler);
    else
        lua_pushnil(L);
    lua_pushnumber(L, deadline);
    v->running = RUN_HERE;
    v->vm->running++;
    int st = lua_pcall(L, 3, LUA_MULTRET, 0);
    kvm_wake_join(&wake);   /* no wake after the run: a later one is the next run's */
    atomic_store(&v->c.wake, 0);
    end_run(v);
    if (st != LUA_OK)
        return lua_error(L);
    return lua_gettop(L) - base;
}

/* ---- several vCPUs, a thread each (csrc/kvm/smp.c) ---- */

struct smp_run {
    struct kvm_smp s;
    struct vcpu_ud *v[KVM_SMP_MAX];
    unsigned n;
    int64_t deadline_ns;     /* CLOCK_MONOTONIC, 0: none */
};

/* The loop, under pcall, holding the VM's io_lock except inside kvm_smp_wait:
 * (smp_run, handler or nil) */
static int smp_loop(lua_State *L)
{
    struct smp_run *r = lua_touserdata(L, 1);
    int handler = lua_isfunction(L, 2) ? 2 : 0;
    for (;;) {
        int i = kvm_smp_wait(&r->s, r->deadline_ns);
        if (i == -ETIMEDOUT) {
            push_exit(L, &(struct kvm_exit){.kind = KVM_VMM_EXIT_TIMEOUT});
            return 1;
        }
        if (i == -EINTR) {   /* a wake fd: the run ends, the vCPUs' exits held */
            push_exit(L, &(struct kvm_exit){.kind = KVM_VMM_EXIT_WAKE});
            return 1;
        }
        struct vcpu_ud *v = r->v[i];
        struct kvm_smp_cpu *p = &r->s.cpu[i];
        if (p->err < 0)
            return lv_syserrorf(L, -p->err, "KVM_RUN", "vcpu %d", v->c.id);
        v->last = p->exit;
        v->parked = 1;   /* its thread waits for the answer: the handler may use it */
        if (give_exit(L, v, handler, r->v, r->n))
            return 1;    /* parked until the run ends: the exit is returned */
        v->parked = 0;
        v->c.pending_read = 0;
        kvm_smp_answer(&r->s, (unsigned)i);
    }
}

/* vm:run_vcpus({vcpu...}, [handler], [{timeout =, deadline =, wake =}]) -> exit table (with vcpu =
 * the id of the vCPU it came from). Each vCPU runs in a thread of its own; what C handles
 * is answered there, under one lock; handler(exit) sees the io/mmio exits C left, one at
 * a time, with no C access running meanwhile (so it may touch traps, ranges and slots as
 * from vcpu:run). Any other exit, a handler returning false, or the timeout ends the run:
 * every thread is then kicked out of KVM_RUN and joined before this returns. A read left
 * pending by the exit returned is answered with vcpu:complete on its vCPU. */
int lv_vm_run_vcpus(lua_State *L)
{
    luaL_checkudata(L, 1, LV_VM_T);
    luaL_checktype(L, 2, LUA_TTABLE);
    double deadline;
    int wake_fds[KVM_WAKE_MAX];
    unsigned n_wake;
    /* the options first: they may run Lua */
    int handler = run_args(L, 3, &deadline, wake_fds, &n_wake);
    lua_Integer n = (lua_Integer)lua_rawlen(L, 2);
    if (n < 1 || n > KVM_SMP_MAX)
        return luaL_argerror(L, 2, "a list of 1 to 64 vCPUs");
    /* on the stack for the whole run: the run's state, and in its user value the vCPUs
     * it runs (a handler may empty the caller's list and collect) */
    struct smp_run *r = lua_newuserdatauv(L, sizeof *r, 1);
    int ridx = lua_gettop(L);
    /* after the last call that can run Lua (the allocation's GC step included) */
    struct lv_vm_ud *vm = lv_checkvm(L, 1);
    check_vm_idle(L, vm, "vm:run_vcpus");
    memset(r, 0, sizeof *r);
    r->n = (unsigned)n;
    memcpy(r->s.wake_fds, wake_fds, n_wake * sizeof *wake_fds);
    r->s.n_wake = n_wake;
    lua_createtable(L, (int)n, 0);
    int anchors = lua_gettop(L);
    struct kvm_vcpu *cs[KVM_SMP_MAX];
    for (unsigned i = 0; i < r->n; i++) {
        lua_rawgeti(L, 2, (lua_Integer)i + 1);
        struct vcpu_ud *v = checkvcpu(L, -1);
        lua_rawseti(L, anchors, (lua_Integer)i + 1);
        if (v->vm != vm)
            return luaL_argerror(L, 2, "every vCPU must belong to this VM");
        for (unsigned j = 0; j < i; j++)
            if (r->v[j] == v)
                return luaL_argerror(L, 2, "a vCPU is listed twice");
        r->v[i] = v;
        cs[i] = &v->c;
    }
    lua_setiuservalue(L, ridx, 1);
    /* again: the anchor table's allocation is a GC step, which may run any __gc */
    check_vm_idle(L, vm, "vm:run_vcpus");
    for (unsigned i = 0; i < r->n; i++)
        if (r->v[i]->c.fd < 0 || r->v[i]->close_pending)
            return luaL_argerror(L, 2, "a vCPU of the list is closed");
    if (vm->vm.fd < 0 || vm->close_pending)
        return luaL_error(L, "attempt to use a closed vm");
    /* the same deadline in the SMP wait's nanoseconds (a passed one: at once) */
    if (deadline > 0) {
        double left = deadline - now_s();
        r->deadline_ns = kvm_smp_deadline(left > 1e-9 ? left : 1e-9);
    } else {
        r->deadline_ns = 0;
    }
    int e = kvm_smp_start(&r->s, cs, r->n);
    if (e == -EBUSY)
        return lv_syserrorf(L, EBUSY, "start vCPU threads", "%u vCPUs: their kick signal %d "
                            "(SIGRTMAX-%d) has another handler", r->n, kvm_kick_signal(),
                            SIGRTMAX - kvm_kick_signal());
    if (e < 0)
        return lv_syserrorf(L, -e, "start vCPU threads", "%u vCPUs", r->n);
    for (unsigned i = 0; i < r->n; i++)
        r->v[i]->running = RUN_THREAD;
    vm->running += (int)r->n;
    int base = lua_gettop(L);
    lua_pushcfunction(L, smp_loop);
    lua_pushvalue(L, ridx);
    if (handler)
        lua_pushvalue(L, handler);
    else
        lua_pushnil(L);
    int st = lua_pcall(L, 2, LUA_MULTRET, 0);
    int se = kvm_smp_stop(&r->s);   /* every thread gone before anything may close */
    for (unsigned i = 0; i < r->n; i++)
        end_run(r->v[i]);
    if (st != LUA_OK)
        return lua_error(L);
    if (se < 0)
        return luaL_error(L, "vm:run_vcpus: the kick signal %d (SIGRTMAX-%d) was taken over "
                          "by another handler during the run", kvm_kick_signal(),
                          SIGRTMAX - kvm_kick_signal());
    return lua_gettop(L) - base;
}

/*** @module vfio.core */

/***
A vCPU of a VM (`vfio.vcpu`); it keeps its VM alive.
@type vcpu
*/

/***
KVM_RUN until an exit C does not handle. Without a handler it returns at the first such
exit; a read exit is answered with `complete` before the next run (else it reads all
ones). With a handler, handler(exit) is called for every unhandled io/mmio exit: for a
read its integer or string result is the data; false ends the run with that exit. Other
exits (hlt, stop, timeout, intr, shutdown...) always end it, as does an error the handler
raises. A close of the vCPU or VM from a handler ends the run after that handler
(`closed = true`) and then closes.
`"intr"`, `"timeout"`, `"fail_entry"`, `"internal_error"`, `"system_event"`, `"other"`, `"wake"`),
`kvm_reason`, and the access's fields for io/mmio
@function vcpu:run
@tparam[opt] function handler the exit handler
@tparam[opt] table opts `{timeout = seconds, deadline = seconds, wake = {fd...}}`: the
run ends (a `"timeout"` exit) at the earlier of now + `timeout` and `deadline`, a time on
CLOCK_MONOTONIC (`posix.time.clock_gettime(posix.time.CLOCK_MONOTONIC)`), so one
deadline can bound a run made of several calls; with `wake` (at most 64 fds, or objects
with `fileno()`) it ends with a `"wake"` exit as soon as one of them is readable or hung
up (already readable: at once), even while the guest sits in an in-kernel HLT: a thread
polls them for the length of the call (`vm:run_vcpus` takes the same option)
@treturn table the exit: `reason` (`"io"`, `"mmio"`, `"hlt"`, `"shutdown"`, `"stop"`,
*/

/***
The data of the read exit `run` last returned: an integer (repeated per element) or a
string of exactly size * count bytes. Raises when no read is pending.
@function vcpu:complete
@param value an integer or a string
*/

/***
KVM_GET_REGS.
@function vcpu:get_regs
@treturn table `{rax=, rbx=, ..., rip=, rflags=}`, or `nil, message, errno`
*/

/***
KVM_SET_REGS; fields not given keep their value.
@function vcpu:set_regs
@tparam table regs `{rip=, ...}`
@treturn boolean true, or `nil, message, errno`
*/

/***
KVM_GET_SREGS (segments, control registers, descriptor tables).
@function vcpu:get_sregs
@treturn table the registers, or `nil, message, errno`
*/

/***
Real mode at cs:ip.
@function vcpu:setup_real
@tparam int cs code segment
@tparam int ip instruction pointer
@treturn boolean true, or `nil, message, errno`
*/

/***
Flat 32-bit protected mode: the multiboot entry state.
@function vcpu:setup_flat32
@tparam int eip entry
@tparam int eax eax (the multiboot magic)
@tparam int ebx ebx (the info's address)
@treturn boolean true, or `nil, message, errno`
*/

/***
32-bit flat protected mode with the selectors and GDT given (the Linux boot protocol's
entry: cs = 0x10, ds = 0x18, esi = boot_params).
@function vcpu:setup_boot32
@tparam table regs `{eip=, esi=0, eax=0, ebx=0, cs=0x08, ds=0x10, gdt_base=, gdt_limit=}` (eip required)
@treturn boolean true, or `nil, message, errno`
*/

/***
Long mode through the guest's page tables at cr3 (the Linux 64-bit boot protocol's entry
into a vmlinux: rsi = boot_params); tables and GDT are the caller's, in guest RAM.
@function vcpu:setup_boot64
@tparam table regs `{rip=, rsi=0, cr3=, cs=0x10, ds=0x18, gdt_base=, gdt_limit=}`
@treturn boolean true, or `nil, message, errno`
*/

/***
KVM_SET_CPUID2 (before the first run): KVM's supported CPUID with this vCPU's APIC ID, the
hypervisor bit and KVM's leaves, the given leaves replacing theirs (registers not given
stay KVM's).
@function vcpu:set_cpuid
@tparam[opt] table leaves `{{function=, index=0, eax=, ebx=, ecx=, edx=}...}`
@treturn boolean true, or `nil, message, errno`
*/

/***
KVM_GET_CPUID2: the table set, as `vm:supported_cpuid` lists it.
@function vcpu:cpuid
@treturn table the leaves, or `nil, message, errno`
*/

/***
LINT0 ExtINT, LINT1 NMI (after `vm:create_irqchip`).
@function vcpu:set_lapic_lint
@treturn boolean true, or `nil, message, errno`
*/

/***
A 32-bit LAPIC register (KVM_GET_LAPIC).
@function vcpu:lapic_reg
@tparam int offset 0 to 0x3fc
@treturn int the value, or `nil, message, errno`
*/

/***
KVM_SET_MSRS of one MSR.
@function vcpu:set_msr
@tparam int index the MSR
@tparam int value the value
@treturn boolean true, or `nil, message, errno`
*/

/***
KVM_GET_MSRS of one MSR.
@function vcpu:get_msr
@tparam int index the MSR
@treturn int the value, or `nil, message, errno`
*/

/***
The vCPU's id.
@function vcpu:id
@treturn int
*/

/***
The vCPU fd's number.
@function vcpu:fileno
@treturn int
*/

/***
Close the vCPU (idempotent; from inside its run, when the run returns).
@function vcpu:close
*/

void lv_open_vcpu(lua_State *L)
{
    static const luaL_Reg m[] = {
        {"run", l_vcpu_run}, {"complete", l_vcpu_complete}, {"get_regs", l_vcpu_get_regs},
        {"set_regs", l_vcpu_set_regs}, {"get_sregs", l_vcpu_get_sregs},
        {"setup_real", l_vcpu_setup_real}, {"setup_flat32", l_vcpu_setup_flat32},
        {"setup_boot32", l_vcpu_setup_boot32}, {"setup_boot64", l_vcpu_setup_boot64},
        {"set_cpuid", l_vcpu_set_cpuid},
        {"cpuid", l_vcpu_cpuid}, {"set_lapic_lint", l_vcpu_set_lapic_lint},
        {"lapic_reg", l_vcpu_lapic_reg}, {"set_msr", l_vcpu_set_msr},
        {"get_msr", l_vcpu_get_msr},
        {"id", l_vcpu_id}, {"fileno", l_vcpu_fileno}, {"close", l_vcpu_close}, {NULL, NULL}};
    static const luaL_Reg mt[] = {
        {"__gc", l_vcpu_close}, {"__close", l_vcpu_close}, {"__tostring", l_vcpu_tostring},
        {NULL, NULL}};
    lv_newclass(L, LV_VCPU_T, m, mt);
}
