---
-- The library's one error convention, and its one helper. A caller's mistake (a wrong
-- argument, a call out of order) raises with error(); what the system refuses (a
-- syscall, sysfs, KVM, a device) returns nil, message, errno, which errors.fail builds,
-- so every module words and returns it the same way.
-- @module vfio.errors
local M = {}

---
-- errors.fail(errno, fmt, ...) -> nil, message, errno: a failure of the system, with the
-- message fmt:format(...) and errno (nil when there is none).
function M.fail(errno, fmt, ...)
   return nil, fmt:format(...), errno
end

return M
