--- Where luavfio's examples are (examples/ of the source: edu_regs.lua, edu_tour.lua,
-- poke_session.lua, linux_demo.sh, the multiboot guest's source, and vfio-user/: device
-- models written in Lua).
-- @module vfio.examples
local M = {}

--- The directory holding the examples.
-- Installed (CMake or LuaRocks), the one the installation wrote into vfio.installed (a
-- rock: its doc/examples); in a checkout, the checkout's examples/.
-- @treturn[1] string the directory
-- @treturn[2] nil when neither is found
function M.dir()
   -- vfio.installed is written by CMake at configure time and exists only once installed
   -- (so it is named through a variable: tools/check-layers looks for it under lua/)
   local generated = "vfio.installed"
   local ok, installed = pcall(require, generated)
   if ok and type(installed) == "table" and installed.examples then return installed.examples end
   local path = debug.getinfo(1, "S").source:match("^@(.*)$") or ""
   local root = path:match("^(.*)/lua/vfio/examples%.lua$")
      or (path == "lua/vfio/examples.lua" and ".")
   if root then
      local f = io.open(root .. "/examples/edu_regs.lua")
      if f then f:close() return root .. "/examples" end
   end
   return nil
end

return M
