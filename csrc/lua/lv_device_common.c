/* What vfio.device (l_device.c, the kernel's VFIO device) and vfio.user_device
 * (l_user_device.c, a vfio-user server's) share: the tables info(), region_info() and
 * irq_info() return, and set_irqs()'s arguments. Each type keeps its own metatable and
 * method table in its own file; the two describe a device the same way, so a caller
 * handles either alike. */
#include "l_objects.h"

#include <linux/vfio.h>

/* The flags each table spells out as booleans. */
struct flag_name {
    const char *name;
    uint32_t bit;
};

static const struct flag_name device_flags[] = {
    {"reset", VFIO_DEVICE_FLAGS_RESET},       {"pci", VFIO_DEVICE_FLAGS_PCI},
    {"platform", VFIO_DEVICE_FLAGS_PLATFORM}, {"caps", VFIO_DEVICE_FLAGS_CAPS},
    {NULL, 0}};
static const struct flag_name region_flags[] = {
    {"readable", VFIO_REGION_INFO_FLAG_READ}, {"writable", VFIO_REGION_INFO_FLAG_WRITE},
    {"mappable", VFIO_REGION_INFO_FLAG_MMAP}, {"caps", VFIO_REGION_INFO_FLAG_CAPS},
    {NULL, 0}};
static const struct flag_name irq_flags[] = {
    {"eventfd", VFIO_IRQ_INFO_EVENTFD},       {"maskable", VFIO_IRQ_INFO_MASKABLE},
    {"automasked", VFIO_IRQ_INFO_AUTOMASKED}, {"noresize", VFIO_IRQ_INFO_NORESIZE},
    {NULL, 0}};

static void set_flags(lua_State *L, uint32_t flags, const struct flag_name *f)
{
    for (; f->name; f++)
        lv_setbool(L, f->name, flags & f->bit);
}

void lv_push_device_info(lua_State *L, uint32_t flags, uint32_t num_regions,
                         uint32_t num_irqs)
{
    lua_createtable(L, 0, 8);
    lv_setint(L, "flags", flags);
    lv_setint(L, "num_regions", num_regions);
    lv_setint(L, "num_irqs", num_irqs);
    set_flags(L, flags, device_flags);
}

void lv_region_base_fields(lua_State *L, uint32_t index, uint32_t flags, uint64_t size,
                           uint64_t offset)
{
    lv_setint(L, "index", index);
    lv_setint(L, "flags", flags);
    lv_setint(L, "size", (lua_Integer)size);
    lv_setint(L, "offset", (lua_Integer)offset);
    set_flags(L, flags, region_flags);
}

void lv_push_irq_info(lua_State *L, uint32_t index, uint32_t count, uint32_t flags)
{
    lua_createtable(L, 0, 7);
    lv_setint(L, "index", index);
    lv_setint(L, "count", count);
    lv_setint(L, "flags", flags);
    set_flags(L, flags, irq_flags);
}

/* One eventfd of set_irqs' data (argument 6), the value at idx: an eventfd object or a
 * number the device's rules accept. */
static int32_t irq_fd(lua_State *L, int idx, const struct lv_irq_data_rules *rules)
{
    if (lua_type(L, idx) == LUA_TNUMBER) {
        lua_Integer v = lua_tointeger(L, idx);
        if (!lua_isinteger(L, idx) || v < rules->min_fd || v > 0x7fffffff)
            luaL_argerror(L, 6, rules->bad_number);
        return (int32_t)v;
    }
    lv_eventfd *e = luaL_testudata(L, idx, LV_EVENTFD);
    if (!e)
        luaL_argerror(L, 6, rules->bad_value);
    if (e->fd < 0)
        luaL_argerror(L, 6, "eventfd is closed");
    return e->fd;
}

void lv_check_set_irqs(lua_State *L, const struct lv_irq_data_rules *rules,
                       struct lv_irq_set *s)
{
    static const char *const actions[] = {"mask", "unmask", "trigger", NULL};
    static const uint32_t action_bits[] = {VFIO_IRQ_SET_ACTION_MASK,
                                           VFIO_IRQ_SET_ACTION_UNMASK,
                                           VFIO_IRQ_SET_ACTION_TRIGGER};
    s->index = (uint32_t)lv_checkrange(L, 2, 0, 0xffffffff);
    s->action = action_bits[luaL_checkoption(L, 3, NULL, actions)];
    s->start = (uint32_t)lv_checkrange(L, 4, 0, 0xffffffff);
    s->count = (uint32_t)lv_checkrange(L, 5, 0, rules->max_count);
    s->type = VFIO_IRQ_SET_DATA_NONE;
    s->data = NULL;
    int t = lua_type(L, 6);
    if (t == LUA_TNONE || t == LUA_TNIL)
        return;
    int is_list = t == LUA_TTABLE;
    lua_Integer n = is_list ? (lua_Integer)lua_rawlen(L, 6) : 1;
    if (n != (lua_Integer)s->count)
        luaL_argerror(L, 6, lua_pushfstring(L, "%I data entries for count %I", n,
                                            (lua_Integer)s->count));
    if (is_list && n == 0)
        luaL_argerror(L, 6, "empty data list: pass nil for DATA_NONE");
    if (is_list)
        lua_rawgeti(L, 6, 1);
    else
        lua_pushvalue(L, 6);
    int bools = lua_type(L, -1) == LUA_TBOOLEAN;   /* the first entry sets the kind */
    lua_pop(L, 1);
    s->type = bools ? VFIO_IRQ_SET_DATA_BOOL : VFIO_IRQ_SET_DATA_EVENTFD;
    /* A userdata buffer so a raised argument error cannot leak it. */
    s->data = lua_newuserdatauv(L, (bools ? 1 : sizeof(int32_t)) * (size_t)n, 0);
    for (lua_Integer i = 0; i < n; i++) {
        if (is_list)
            lua_rawgeti(L, 6, i + 1);
        else
            lua_pushvalue(L, 6);
        if ((lua_type(L, -1) == LUA_TBOOLEAN) != bools)
            luaL_argerror(L, 6, "mixed data: all booleans or all eventfds");
        if (bools)
            ((uint8_t *)s->data)[i] = (uint8_t)lua_toboolean(L, -1);
        else
            ((int32_t *)s->data)[i] = irq_fd(L, -1, rules);
        lua_pop(L, 1);
    }
}
