/* The "vfio.trap" class in the KVM run loop: it registers LV_CAP_PCI_CFG (a function of
 * the C host bridge) and LV_CAP_KVM_IO (handled ranges) with the seam's ops
 * (wire/trap_kvm.h). The opaque pointer is the trap's userdata block, whose first member
 * is its struct trap_fn. An access to a Lua-handled window is not answered there: those
 * handlers need a Lua call frame, which only the run's caller has. */
#include "l_trap.h"
#include "wire/trap_kvm.h"

void lv_open_trap_kvm(lua_State *L)
{
    lv_setcap(L, LV_TRAP_T, LV_CAP_PCI_CFG, &wire_trap_cfg_ops);
    lv_setcap(L, LV_TRAP_T, LV_CAP_KVM_IO, &wire_trap_io_ops);
}
