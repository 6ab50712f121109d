/* One line per concern: X(name) calls lv_open_<name>(L) with the vfio.core table on top.
 * Keep this list in sync with the csrc/lua/l_*.c binding files. */
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
    X(vcpu)           \
    X(irqfd)          \
    X(ioeventfd)      \
    X(debugcon)       \
    X(uart)           \
    X(legacy)         \
    X(cfgspace)       \
    X(pcihost)        \
    X(backend)        \
    X(trap)           \
    X(trap_bench)     \
    X(trap_kvm)
