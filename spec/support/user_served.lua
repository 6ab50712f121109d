-- A model file for bin/vfio-user-serve that serves another model (opts.model, a model
-- file given the same opts) with a control channel for specs: two FIFOs (opts.control
-- and opts.control .. ".out") the spec made. Each line on the first is a JSON string of
-- Lua code, run in the server process with `dev` (the served device) in scope; its
-- results come back on the second as one JSON line {ok=, values=[...]} (or {ok=false,
-- error=}). The FIFO is one of the device's poll_fds: a line is served while the client
-- is idle, so interrupts a line causes go out at once (dev:on_ready).
local fcntl = require "posix.fcntl"
local unistd = require "posix.unistd"
local json = require "dkjson"

local opts = ... or {}
assert(opts.model and opts.control, "user_served: model= and control= are needed")
local chunk = assert(loadfile(opts.model))
local dev = chunk(opts)
local cmd = assert(fcntl.open(opts.control, fcntl.O_RDWR | fcntl.O_NONBLOCK))
local out = assert(fcntl.open(opts.control .. ".out", fcntl.O_RDWR | fcntl.O_NONBLOCK))
local buf = ""

local function answer(t)
   local s = json.encode(t) .. "\n"
   while #s > 0 do
      local n = unistd.write(out, s)
      if not n then break end
      s = s:sub(n + 1)
   end
end

dev.poll_fds = function() return { cmd } end
dev.on_ready = function(d)
   local s = unistd.read(cmd, 65536)
   if not s then return end
   buf = buf .. s
   while true do
      local nl = buf:find("\n", 1, true)
      if not nl then break end
      local line = buf:sub(1, nl - 1)
      buf = buf:sub(nl + 1)
      local code = json.decode(line)
      local env = setmetatable({ dev = d }, { __index = _G })
      local fn, err = load(code or "", "control", "t", env)
      if not fn then
         answer { ok = false, error = err }
      else
         local r = table.pack(pcall(fn))
         if r[1] then
            answer { ok = true, values = { table.unpack(r, 2, r.n) }, n = r.n - 1 }
         else
            answer { ok = false, error = tostring(r[2]) }
         end
      end
   end
end

return dev
