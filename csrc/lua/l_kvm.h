/* Shared between the KVM binding files (l_kvm.c: system, VM, irqfd, ioeventfd;
 * l_vcpu.c: vCPU). */
#ifndef LUAVFIO_L_KVM_H
#define LUAVFIO_L_KVM_H

#include "kvm/kvm.h"
#include "lv.h"

#define LV_VM_T "vfio.vm"
#define LV_VCPU_T "vfio.vcpu"

/* The VM userdata; its address is stable for as long as any vCPU (which keeps the VM
 * userdata alive through its user value) can reach it. */
struct lv_vm_ud {
    struct lv_kvm_vm vm;
};

struct lv_vm_ud *lv_checkvm(lua_State *L, int arg);  /* raises if closed */
/* vm:vcpu(id): defined in l_vcpu.c, registered by l_kvm.c. */
int lv_vm_vcpu(lua_State *L);
/* An fd argument: an integer, or an object whose fileno() method returns one. */
int lv_checkfd(lua_State *L, int arg);

#endif
