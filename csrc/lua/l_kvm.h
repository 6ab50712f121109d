/* Shared between the KVM binding files: l_kvm.c (system), l_vm.c (VM), l_vcpu.c (vCPU),
 * l_irqfd.c, l_ioeventfd.c and l_debugcon.c (objects a VM creates, with their vm methods). */
#ifndef LUAVFIO_L_KVM_H
#define LUAVFIO_L_KVM_H

#include "kvm/kvm.h"
#include "lv.h"

#define LV_VM_T "vfio.vm"
#define LV_VCPU_T "vfio.vcpu"

/* The VM userdata; its address is stable for as long as any vCPU (which keeps the VM
 * userdata alive through its user value) can reach it. */
struct lv_vm_ud {
    struct kvm_vm vm;
    /* Lifetime rule: guest RAM, the slots and ranges a vCPU can reach stay as they are
     * while any vcpu:run of this VM is on the stack. vm:close() called from a run
     * handler only marks the VM (close_pending); the run ends after that handler and the
     * last run to leave closes it. */
    int running;                /* vCPUs in a run (vcpu:run, vm:run_vcpus); a VM runs once
                                   at a time: every run entry point refuses while > 0
                                   (the rules of a run: l_vcpu.c) */
    int close_pending;
};

/* A guest RAM backing file (l_ramfd.c, csrc/kvm/ram.h): a sealed memfd, a huge-page
 * memfd or a hugetlbfs file. vm:add_ram maps it; the mapping holds the file, so closing
 * the object (its fd) never takes RAM from a VM. */
#define LV_RAMFD_T "vfio.ramfd"
struct lv_ramfd_ud {
    int fd;                     /* -1 once closed */
    int kind;                   /* enum kvm_ram_kind */
    uint64_t size;
    int64_t page_size;
};
struct lv_ramfd_ud *lv_checkramfd(lua_State *L, int arg);  /* raises if closed */

/* Close the VM now (its runs have ended). */
void lv_vm_close_now(struct lv_vm_ud *v);

struct lv_vm_ud *lv_checkvm(lua_State *L, int arg);  /* raises if closed */
/* vm methods defined beside the objects they make or the devices they add, and listed
 * with the rest of the class in l_vm.c's method table. */
int lv_vm_vcpu(lua_State *L);              /* vm:vcpu(id), l_vcpu.c */
int lv_vm_run_vcpus(lua_State *L);         /* vm:run_vcpus, l_vcpu.c */
int lv_vm_irqfd(lua_State *L);             /* vm:irqfd, l_irqfd.c */
int lv_vm_ioeventfd(lua_State *L);         /* vm:ioeventfd, l_ioeventfd.c */
int lv_vm_add_debugcon(lua_State *L);      /* vm:add_debugcon, l_debugcon.c */
int lv_vm_debug_output(lua_State *L);      /* vm:debug_output, l_debugcon.c */
int lv_vm_add_uart(lua_State *L);          /* vm:add_uart, l_uart.c */
int lv_vm_add_ignore_ports(lua_State *L);  /* vm:add_ignore_ports, l_legacy.c */
int lv_vm_add_i8042(lua_State *L);         /* vm:add_i8042, l_legacy.c */
/* A KVM capability argument: a name from core.KVM_CAP or a number (l_kvm.c). */
int lv_kvm_checkcap(lua_State *L, int arg);
/* An fd argument: an integer, or an object whose fileno() method returns one. Such a
 * number is used only during the call that receives it (the kernel checks what it is);
 * an object that keeps an fd keeps its own duplicate (lv_dupfd), so a number Lua
 * closes and the process reuses never reaches it. */
int lv_checkfd(lua_State *L, int arg);
/* lv_checkfd, duplicated (close-on-exec): the caller owns the result. Raises on failure. */
int lv_dupfd(lua_State *L, int arg);
/* The fd field of the irqfd at idx (raises unless it is an open vfio.irqfd): the trap
 * reads a masked vector's eventfd through it (trap_set_source) and keeps the irqfd alive. */
const int *lv_irqfd_fdp(lua_State *L, int idx);
/* Register the C handler of the object at `obj` for [base, base+size) of `space` in the VM
 * at index 1 and keep the object alive with it; pushes the range id (or nil, msg, errno). */
int lv_vm_add_range_obj(lua_State *L, struct lv_vm_ud *v, int space, uint64_t base,
                        uint64_t size, int obj);

/* Push a CPUID table as a list of {function, index, flags, eax, ebx, ecx, edx} (an
 * empty list for NULL); l_vcpu.c. */
void lv_push_cpuid(lua_State *L, const struct kvm_cpuid2 *t);

#endif
