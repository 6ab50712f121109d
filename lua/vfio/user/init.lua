---
-- vfio-user (require "vfio.user"): serve a device to a vfio-user client.
-- `serve` and `listen` are vfio.user.server's; device models are vfio.user.model's,
-- recordings and kernel devices vfio.user.trapped's.
-- @module vfio.user
local server = require "vfio.user.server"

local M = {}

--- vfio.user.server.serve: listen on `path`, serve `device` until SIGTERM or SIGINT.
-- @tparam string path the socket path
-- @tparam table device the served device
-- @tparam[opt] table opts as for vfio.user.server.listen
-- @return true, or `nil, message, errno`
function M.serve(path, device, opts) return server.serve(path, device, opts) end

--- vfio.user.server.listen: a server to run or step yourself.
-- @tparam string path the socket path
-- @tparam table device the served device
-- @tparam[opt] table opts
-- @return a server, or `nil, message, errno`
function M.listen(path, device, opts) return server.listen(path, device, opts) end

return M
