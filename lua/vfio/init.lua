-- luavfio: Linux VFIO device passthrough from Lua. The C half is vfio.core.
local core = require "vfio.core"

local vfio = {
   core = core,
   _VERSION = core._VERSION,
}

return vfio
