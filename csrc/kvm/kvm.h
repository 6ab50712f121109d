/* KVM without Lua (the bindings are csrc/lua/l_kvm.c, l_vm.c, l_vcpu.c and the files of
 * the objects a VM creates): the system fd here (kvm.c), and the umbrella of one header
 * per concern:
 *   vm.h     the VM, memory slots and guest RAM, the guest-physical address map
 *   irq.h    irqchip, PIT, GSI routes, irqfds, IRQ lines, MSIs, the KVM VFIO device
 *   iobus.h  handled PIO/MMIO ranges (struct kvm_io_ops), ioeventfds, the exit port
 *   vcpu.h   vCPUs: CPUID, LAPIC, MSRs, registers, the held exit
 *   boot.h   x86 boot register presets
 *   run.h    the run loop, the exit decode and the kick signal
 * The device models are files of their own (debugcon.h, uart.h, legacy.h, pcihost.h),
 * as is running several vCPUs with a thread each (smp.h).
 *
 * The run loop decodes exits in C. A PIO or MMIO exit whose address falls in a range
 * registered with kvm_add_range() is handled by that range's ops and the guest resumes
 * at once; only the remaining exits go back to the caller (and from there to Lua). The
 * trap core plugs in through struct kvm_io_ops. Calls on one VM come from one thread,
 * except while smp.c runs its vCPUs: then each vCPU thread is inside kvm_vcpu_run and
 * every C-handled access takes the VM's io_lock, which the caller's thread holds
 * whenever it is not waiting for an exit (smp.h). Functions return 0 or -errno. */
#ifndef LUAVFIO_KVM_H
#define LUAVFIO_KVM_H

#include "boot.h"
#include "iobus.h"
#include "irq.h"
#include "run.h"
#include "vcpu.h"
#include "vm.h"

int kvm_open(const char *path);   /* returns fd or -errno */
/* System-fd queries; check_extension also answers on a VM fd (VM-scoped capabilities).
 * Each returns the kernel's answer (>= 0) or -errno. */
int kvm_api_version(int kvm_fd);
int kvm_check_extension(int fd, int cap);
int kvm_vcpu_mmap_size(int kvm_fd);

#endif
