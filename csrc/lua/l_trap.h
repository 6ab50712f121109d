/* Shared by the trap binding files: l_backend.c (vfio.backend: the devices the trap core
 * reaches), l_trap.c (vfio.trap), l_trap_bench.c (trap:bench) and l_trap_kvm.c (a trap in
 * the KVM run loop and the C host bridge, with the seam's ops of wire/trap_kvm.h). */
#ifndef LUAVFIO_L_TRAP_H
#define LUAVFIO_L_TRAP_H

#include "lv.h"
#include "trap/trap.h"

#define LV_BACKEND_T "vfio.backend"
#define LV_TRAP_T "vfio.trap"

struct lv_backend_ud {
    struct lv_backend be;     /* first: a trap's fn.be points here (lv_trap_backend) */
    int pins;                 /* VM memory slots using its mappings: close() refuses while > 0 */
    int busy;                 /* trap accesses through it that may run Lua (window handlers) */
    int close_pending;        /* close() called while busy: done when the last one ends */
};

/* The trap userdata. fn comes first: the seam (wire/) gets the userdata block as the opaque
 * pointer of its ops and uses it as the struct trap_fn. */
struct lv_trap_ud {
    struct trap_fn fn;
    lua_State *L;          /* the state of the current access, for window handlers */
    int handler_err;       /* a Lua window handler raised: its message is on the stack */
    int open;
    /* Lifetime rule: a BAR window's Lua handler runs inside the trap core's dispatch, so
     * trap:close() or backend:close() called from it only marks the object; the access
     * that ran it closes it once the core has returned (lv_trap_enter / lv_trap_leave). */
    int busy, close_pending;
};

/* Bracket a trap core call that may run Lua (a BAR access reaching a window handler). */
void lv_trap_enter(struct lv_trap_ud *t);
void lv_trap_leave(struct lv_trap_ud *t);
/* trap:bench (l_trap_bench.c), listed in l_trap.c's method table. */
int lv_trap_bench(lua_State *L);

/* Check arguments, raising when closed. lv_checktrap also readies the trap for an
 * access from L (window handlers run on L). */
struct lv_backend_ud *lv_checkbackend(lua_State *L, int i);
struct lv_trap_ud *lv_checktrap(lua_State *L, int i);

#endif
