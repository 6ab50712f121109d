--- The luavfio release: the one place its number is written.
-- CMakeLists.txt reads `number` below for the C core's `_VERSION` (so `vfio._VERSION`
-- and `vfio.core._VERSION` are this), the commands' `--version` print it, `make dist`
-- names the archive and the release rockspec after it, and spec/host/rockspec_spec.lua
-- checks that rockspecs/luavfio-NUMBER-1.rockspec and CHANGELOG.md agree.
-- @module vfio.version
local M = {
   number = "0.1",
}

-- The release as Lua's own `_VERSION` writes itself: "luavfio NUMBER".
M._VERSION = "luavfio " .. M.number

--- The line each command prints for its version option: "PROG (luavfio NUMBER)".
-- @tparam string prog the command's name as the user ran it
-- @treturn string the line, without a newline
function M.line(prog)
   return ("%s (luavfio %s)"):format(prog, M.number)
end

return M
