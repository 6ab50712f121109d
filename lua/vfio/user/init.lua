---
-- vfio-user (require "vfio.user"): serve a device to a vfio-user client.
-- `serve` and `listen` are vfio.user.server's; device models are vfio.user.model's,
-- recordings and kernel devices vfio.user.trapped's.
-- @module vfio.user
local server = require "vfio.user.server"

local M = {}

--- vfio.user.server.serve: listen on `path`, serve `device` until SIGTERM or SIGINT.
-- @function serve
M.serve = server.serve

--- vfio.user.server.listen: a server to run or step yourself.
-- @function listen
M.listen = server.listen

return M
