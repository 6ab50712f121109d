/* x86 boot register presets (boot.c): the segment, control and general registers a
 * vCPU starts a guest with. Functions return 0 or -errno. */
#ifndef LUAVFIO_KVM_BOOT_H
#define LUAVFIO_KVM_BOOT_H

#include "vcpu.h"

#include <stdint.h>

/* Register presets: real mode at cs:ip; 32-bit flat protected mode (multiboot entry). */
int kvm_vcpu_setup_real(struct kvm_vcpu *c, uint16_t cs, uint16_t ip);
int kvm_vcpu_setup_flat32(struct kvm_vcpu *c, uint32_t eip, uint32_t eax,
                          uint32_t ebx);
/* The same state with the selectors, a GDT and ESI chosen (the Linux 32-bit boot
 * protocol: CS 0x10, DS 0x18, ESI = boot_params). Zero cs/ds/gdt_limit: the defaults. */
struct kvm_boot32 {
    uint32_t eip, eax, ebx, esi;
    uint16_t cs, ds, gdt_limit;
    uint64_t gdt_base;
};
int kvm_vcpu_setup_boot32(struct kvm_vcpu *c, const struct kvm_boot32 *b);
/* 64-bit long mode with the caller's page tables at cr3 (4-level, PAE), CS a 64-bit code
 * segment, interrupts off: the Linux 64-bit boot protocol's entry (RSI = boot_params) into
 * an uncompressed vmlinux. The GDT must hold cs and ds as long-mode descriptors. */
struct kvm_boot64 {
    uint64_t rip, rsi, cr3, gdt_base;
    uint16_t cs, ds, gdt_limit;
};
int kvm_vcpu_setup_boot64(struct kvm_vcpu *c, const struct kvm_boot64 *b);

#endif
