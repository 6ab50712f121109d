/* KVM: system, VM and vCPU plumbing without Lua (the binding is l_kvm.c / l_vcpu.c).
 *
 * The run loop decodes exits in C. A PIO or MMIO exit whose address falls in a range
 * registered with lv_kvm_add_range() is handled by that range's ops and the guest resumes
 * at once; only the remaining exits go back to the caller (and from there to Lua). The
 * trap core plugs in through struct lv_kvm_io_ops. Single-threaded: all calls on one VM
 * must come from one thread. Functions return 0 or -errno. */
#ifndef LUAVFIO_KVM_H
#define LUAVFIO_KVM_H

#include <linux/kvm.h>
#include <stddef.h>
#include <pthread.h>
#include <stdint.h>

enum { LV_KVM_PIO = 0, LV_KVM_MMIO = 1 };

/* Pages KVM takes at VM creation (KVM_SET_IDENTITY_MAP_ADDR: one page, KVM_SET_TSS_ADDR:
 * three), below the 4 GiB BIOS area; the address map keeps slots and ranges off them. */
#define LV_KVM_IDENTITY_MAP_ADDR 0xfffbc000ull
#define LV_KVM_TSS_ADDR 0xfffbd000ull
#define LV_KVM_SYSTEM_PAGES_SIZE 0x4000ull

/* Return values of the access callbacks. */
enum { LV_KVM_IO_DONE = 0, /* resume the guest */
       LV_KVM_IO_STOP = 1  /* handled, but end the run loop with LV_KVM_EXIT_STOP */ };

/* Access callbacks of a handled range. `data` holds `size` bytes, little-endian as the
 * guest sees them; a read fills them (they arrive filled with 0xff). `addr` is absolute
 * (port number or guest-physical address). Called on the vCPU thread, inside run. */
struct lv_kvm_io_ops {
    int (*access)(void *opaque, int space, uint64_t addr, uint8_t *data, unsigned size,
                  int is_write);
    /* Called once when the range is removed or the VM closes; may be NULL. */
    void (*release)(void *opaque);
};

struct lv_kvm_range {
    int id, space;
    uint64_t base, size;
    const struct lv_kvm_io_ops *ops;
    void *opaque;
};

struct lv_kvm_slot {
    int used, owned, readonly;   /* owned: anonymous RAM mmap'd by us, unmapped on close */
    uint64_t gpa, size;
    void *host;
    int *pin;                    /* the owner's use count of host memory it lends: held while
                                    the slot exists, released when it goes (may be NULL) */
    /* Lifetime rule: RAM is unmapped from the process only when no IOMMU mapping uses it.
     * dma counts the IOMMU mappings (container or IOAS map_dma) of this owned RAM: while
     * it is > 0, lv_kvm_unmap refuses (-EBUSY) and the VM's close deletes the KVM slot but
     * keeps the RAM (orphaned) until lv_kvm_ram_dma_put releases the last mapping. */
    int dma;
    int orphaned;
};

#define LV_KVM_MAX_SLOTS 64

struct lv_kvm_vm {
    int fd;                      /* -1 once closed */
    int run_size;                /* KVM_GET_VCPU_MMAP_SIZE */
    int irqchip;
    int vfio_fd;                 /* KVM VFIO pseudo device, -1 if not created */
    struct lv_kvm_slot slots[LV_KVM_MAX_SLOTS];
    struct lv_kvm_range *ranges;
    unsigned nranges, cap_ranges;
    int next_range_id;
    struct kvm_irq_routing_entry *routes;
    unsigned nroutes, cap_routes;
    struct kvm_cpuid2 *cpuid;    /* supported CPUID, given to every vCPU */
    /* While several vCPU threads run (smp.c): the lock every C-handled access takes, so
     * the device models, ranges and slots see one access at a time; NULL otherwise. */
    pthread_mutex_t *io_lock;
};

/* What the run loop reports for an exit it did not handle. */
enum lv_kvm_exit_kind {
    LV_KVM_EXIT_IO, LV_KVM_EXIT_MMIO, LV_KVM_EXIT_HLT, LV_KVM_EXIT_SHUTDOWN,
    LV_KVM_EXIT_STOP, LV_KVM_EXIT_INTR, LV_KVM_EXIT_TIMEOUT, LV_KVM_EXIT_FAIL_ENTRY,
    LV_KVM_EXIT_INTERNAL_ERROR, LV_KVM_EXIT_SYSTEM_EVENT, LV_KVM_EXIT_OTHER
};

struct lv_kvm_exit {
    enum lv_kvm_exit_kind kind;
    uint32_t reason;             /* raw KVM_EXIT_* */
    int space;                   /* IO, MMIO, STOP: LV_KVM_PIO or LV_KVM_MMIO */
    uint64_t addr;
    unsigned size, count;        /* count > 1 only for string PIO */
    int is_write;
    uint8_t *data;               /* inside kvm_run; valid until the next run */
    uint64_t code;               /* FAIL_ENTRY reason, INTERNAL_ERROR suberror, event type */
};

struct lv_kvm_vcpu {
    int fd, id;
    struct kvm_run *run;
    size_t run_size;
    struct lv_kvm_vm *vm;
    int pending_read;            /* an IO/MMIO read was returned to the caller */
    /* An exit taken from KVM_RUN that no caller has seen (lv_kvm_vcpu_hold): the next
     * lv_kvm_vcpu_run returns it before the vCPU enters KVM_RUN again, since that entry
     * would complete it unseen (a write lost, a read answered with all ones). */
    int held, held_err, held_pending_read;
    struct lv_kvm_exit held_exit;
};

int lv_kvm_open(const char *path);   /* returns fd or -errno */
/* System-fd queries; check_extension also answers on a VM fd (VM-scoped capabilities).
 * Each returns the kernel's answer (>= 0) or -errno. */
int lv_kvm_api_version(int kvm_fd);
int lv_kvm_check_extension(int fd, int cap);
int lv_kvm_vcpu_mmap_size(int kvm_fd);
int lv_kvm_vm_create(struct lv_kvm_vm *vm, int kvm_fd);
void lv_kvm_vm_close(struct lv_kvm_vm *vm);

/* Map `size` bytes of fresh anonymous memory at guest-physical `gpa`; returns slot or
 * -errno. lv_kvm_map_host maps caller-owned memory (e.g. a BAR mmap). */
int lv_kvm_add_ram(struct lv_kvm_vm *vm, uint64_t gpa, uint64_t size);
int lv_kvm_map_host(struct lv_kvm_vm *vm, uint64_t gpa, uint64_t size, void *host,
                    int readonly, int *pin);
int lv_kvm_unmap(struct lv_kvm_vm *vm, int slot);  /* -EBUSY while its RAM is DMA-mapped */
/* Host pointer of guest RAM [gpa, gpa+len) if it lies within one owned RAM slot. */
void *lv_kvm_ram_ptr(struct lv_kvm_vm *vm, uint64_t gpa, uint64_t len);
/* The owned RAM slot holding [gpa, gpa+len), or -1. */
int lv_kvm_ram_slot(struct lv_kvm_vm *vm, uint64_t gpa, uint64_t len);
/* An IOMMU mapping of slot's RAM is made (get) or gone (put: the RAM of a slot the VM's
 * close orphaned is unmapped with its last mapping). */
void lv_kvm_ram_dma_get(struct lv_kvm_vm *vm, int slot);
void lv_kvm_ram_dma_put(struct lv_kvm_vm *vm, int slot);
/* The first slot whose RAM an IOMMU still maps (its count in *count), or -1. */
int lv_kvm_ram_dma_busy(const struct lv_kvm_vm *vm, int *count);

int lv_kvm_create_irqchip(struct lv_kvm_vm *vm);
/* The in-kernel i8254 PIT (ports 0x40-0x43, and 0x61), after the irqchip. */
int lv_kvm_create_pit2(struct lv_kvm_vm *vm);
/* How long a halted vCPU of this VM polls for a wake-up before it sleeps
 * (KVM_CAP_HALT_POLL; the kernel's halt_poll_ns is the default). */
int lv_kvm_set_halt_poll(struct lv_kvm_vm *vm, uint64_t ns);
int lv_kvm_set_msi_route(struct lv_kvm_vm *vm, uint32_t gsi, uint64_t addr, uint32_t data);
int lv_kvm_remove_route(struct lv_kvm_vm *vm, uint32_t gsi);
int lv_kvm_irqfd(struct lv_kvm_vm *vm, uint32_t gsi, int fd, int resample_fd, int deassign);
int lv_kvm_ioeventfd(struct lv_kvm_vm *vm, int space, uint64_t addr, unsigned len, int fd,
                     int has_datamatch, uint64_t datamatch, int deassign);
int lv_kvm_irq_line(struct lv_kvm_vm *vm, uint32_t gsi, int level);
int lv_kvm_signal_msi(struct lv_kvm_vm *vm, uint64_t addr, uint32_t data);
int lv_kvm_vfio_group(struct lv_kvm_vm *vm, int group_fd, int add);

/* Returns the range id (> 0) or -errno: -EEXIST if it overlaps a handled range of its
 * space, or (MMIO) a writable slot, the irqchip's IOAPIC/LAPIC windows or KVM's TSS and
 * identity-map pages. Slots likewise refuse to overlap slots, MMIO ranges (unless the
 * slot is read-only) and those windows. */
int lv_kvm_add_range(struct lv_kvm_vm *vm, int space, uint64_t base, uint64_t size,
                     const struct lv_kvm_io_ops *ops, void *opaque);
int lv_kvm_remove_range(struct lv_kvm_vm *vm, int id);

/* Built-in devices. A debug console appends the low byte of every write to a buffer
 * (capped: bytes beyond the cap are counted, not stored; reads return 0xe9 like QEMU's);
 * the guest's output never goes through Lua. An exit port ends the run loop on writes. */
struct lv_kvm_debugcon {
    char *buf;
    size_t len, cap;
    uint64_t dropped;
    int closed;
};
extern const struct lv_kvm_io_ops lv_kvm_debugcon_ops; /* opaque: struct lv_kvm_debugcon */
void lv_kvm_debugcon_close(struct lv_kvm_debugcon *d);
int lv_kvm_add_exit_port(struct lv_kvm_vm *vm, uint16_t port);

int lv_kvm_vcpu_create(struct lv_kvm_vcpu *c, struct lv_kvm_vm *vm, int id);
void lv_kvm_vcpu_close(struct lv_kvm_vcpu *c);
/* Register presets: real mode at cs:ip; 32-bit flat protected mode (multiboot entry). */
int lv_kvm_vcpu_setup_real(struct lv_kvm_vcpu *c, uint16_t cs, uint16_t ip);
int lv_kvm_vcpu_setup_flat32(struct lv_kvm_vcpu *c, uint32_t eip, uint32_t eax,
                             uint32_t ebx);
/* The same state with the selectors, a GDT and ESI chosen (the Linux 32-bit boot
 * protocol: CS 0x10, DS 0x18, ESI = boot_params). Zero cs/ds/gdt_limit: the defaults. */
struct lv_kvm_boot32 {
    uint32_t eip, eax, ebx, esi;
    uint16_t cs, ds, gdt_limit;
    uint64_t gdt_base;
};
int lv_kvm_vcpu_setup_boot32(struct lv_kvm_vcpu *c, const struct lv_kvm_boot32 *b);
/* 64-bit long mode with the caller's page tables at cr3 (4-level, PAE), CS a 64-bit code
 * segment, interrupts off: the Linux 64-bit boot protocol's entry (RSI = boot_params) into
 * an uncompressed vmlinux. The GDT must hold cs and ds as long-mode descriptors. */
struct lv_kvm_boot64 {
    uint64_t rip, rsi, cr3, gdt_base;
    uint16_t cs, ds, gdt_limit;
};
int lv_kvm_vcpu_setup_boot64(struct lv_kvm_vcpu *c, const struct lv_kvm_boot64 *b);
/* CPUID of the vCPU (KVM_SET_CPUID2), from the VM's supported list: the vCPU's APIC ID
 * (leaf 1 EBX[31:24], leaves 0xb/0x1f EDX), the hypervisor bit (leaf 1 ECX[31]), KVM's
 * signature leaf 0x40000000 and features 0x40000001, then `over` replacing or adding
 * leaves by function and index. Done at creation with no overrides; again only before the
 * first run (KVM refuses a changed table after it). */
int lv_kvm_vcpu_set_cpuid(struct lv_kvm_vcpu *c, const struct kvm_cpuid_entry2 *over,
                          unsigned nover);
/* The table set (KVM_GET_CPUID2), malloc'd for the caller to free. */
int lv_kvm_vcpu_get_cpuid(struct lv_kvm_vcpu *c, struct kvm_cpuid2 **out);
/* LAPIC LINT0 as ExtINT and LINT1 as NMI (KVM_GET_LAPIC/KVM_SET_LAPIC); needs the
 * irqchip. get_lapic_reg reads one register of the saved state (offset 0x350...). */
int lv_kvm_vcpu_set_lapic_lint(struct lv_kvm_vcpu *c);
int lv_kvm_vcpu_get_lapic_reg(struct lv_kvm_vcpu *c, unsigned off, uint32_t *val);
/* One MSR (KVM_SET_MSRS/KVM_GET_MSRS); -EINVAL when KVM refuses the index or value. */
int lv_kvm_vcpu_set_msr(struct lv_kvm_vcpu *c, uint32_t index, uint64_t value);
int lv_kvm_vcpu_get_msr(struct lv_kvm_vcpu *c, uint32_t index, uint64_t *value);
/* Register access (KVM_GET_REGS, KVM_SET_REGS, KVM_GET_SREGS): 0 or -errno. */
int lv_kvm_vcpu_get_regs(struct lv_kvm_vcpu *c, struct kvm_regs *r);
int lv_kvm_vcpu_set_regs(struct lv_kvm_vcpu *c, const struct kvm_regs *r);
int lv_kvm_vcpu_get_sregs(struct lv_kvm_vcpu *c, struct kvm_sregs *s);
/* Run until an exit the C side does not handle. timeout_ns <= 0: no timeout. An exit
 * held by lv_kvm_vcpu_hold comes first, without entering KVM_RUN. */
int lv_kvm_vcpu_run(struct lv_kvm_vcpu *c, int64_t timeout_ns, struct lv_kvm_exit *out);
/* One exit as KVM_RUN left it in `run`, decoded the way the run loop does: an IO or MMIO
 * exit whose address a handled range answers is dispatched to it (a read's data arriving
 * as all ones first) and LV_KVM_DECODE_RESUME returned (the guest runs on); anything else
 * fills *out and returns LV_KVM_DECODE_DONE (an unhandled read answered all ones with
 * pending_read set; a range asking to stop gives LV_KVM_EXIT_STOP). IO data outside
 * c->run_size bytes, or an MMIO length past mmio.data, sets *err to -EPROTO (DONE).
 * The run loop's body, callable without KVM (fuzz/exit_fuzz.c drives it). */
enum { LV_KVM_DECODE_DONE = 0, LV_KVM_DECODE_RESUME = 1 };
int lv_kvm_exit_decode(struct lv_kvm_vcpu *c, struct kvm_run *run, struct lv_kvm_exit *out,
                       int *err);
/* Rule: an exit lv_kvm_vcpu_run returned (or its error) that no caller has seen must not
 * be dropped: whoever ends a run with one in hand holds it here (its data stays in
 * kvm_run, which only the next KVM_RUN changes), and the next run of the vCPU, by any
 * entry point, delivers it first. take_held copies it back to out with its error: 1 if
 * there was one, else 0. Closing the vCPU drops it. */
void lv_kvm_vcpu_hold(struct lv_kvm_vcpu *c, const struct lv_kvm_exit *x, int err);
int lv_kvm_vcpu_take_held(struct lv_kvm_vcpu *c, struct lv_kvm_exit *out, int *err);
/* Make the thread `t`, inside lv_kvm_vcpu_run, leave it with a timeout exit soon (the
 * run loop's timer signal; a kick that lands outside KVM_RUN may be lost: repeat it).
 * -EBUSY when another handler owns the signal (lv_kvm_kick_signal()). */
int lv_kvm_kick(pthread_t t);
/* The kick and timeout signal, and its preparation in the calling process and thread:
 * the handler installed (-EBUSY if another one owns the signal) and the thread-local
 * state the handler touches allocated, so the handler never allocates (in a dlopen'ed
 * module the first access to a TLS variable may). A thread that can be kicked calls it
 * before it unblocks the signal. */
int lv_kvm_kick_signal(void);
int lv_kvm_kick_prepare(void);

#endif
