/* One line per concern: X(name) calls lv_open_<name>(L) with the vfio.core table on top.
 * Keep this list in sync with the csrc/lua/l_*.c binding files; l_legacy.c and
 * l_trap_bench.c have no entry: they only define methods of a class whose file lists
 * them (l_vm.c, l_trap.c). */
#define LV_MODULES(X) \
    X(util)           \
    X(container)      \
    X(group)          \
    X(device)         \
    X(iommufd)        \
    X(migration)      \
    X(region)         \
    X(eventfd)        \
    X(dmabuf)         \
    X(kvm)            \
    X(vm)             \
    X(ramfd)          \
    X(vcpu)           \
    X(irqfd)          \
    X(ioeventfd)      \
    X(debugcon)       \
    X(uart)           \
    X(cfgspace)       \
    X(pcihost)        \
    X(rootport)       \
    X(backend)        \
    X(trap)           \
    X(trap_kvm)       \
    X(socket)         \
    X(user)           \
    X(user_device)
