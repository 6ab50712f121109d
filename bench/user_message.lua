-- bench/user_message.lua: the host CPU time luavfio's vfio-user server spends on one
-- message, outside the device's own Lua (the issue's target: at most 2 microseconds).
-- A client in this process sends REGION_READ requests one at a time, as QEMU's vCPU
-- does, to a server in a child process; the child measures its own user and system CPU
-- time (/proc/self/stat) over the N round trips, then the device's region_read called directly N
-- times (os.clock), and the user time less the device's is the server's own.
-- Three servers, in one run:
--   floor    a bare Lua loop over core.user_connection answering from a string (no
--            vfio.user.server): the C framing, decode and encode, one Lua dispatch
--   server   vfio.user.server (poll loop, dispatch, checks) with a device whose
--            region_read returns a constant
--   model    vfio.user.server with the 16550A model (examples/vfio-user/serial_16550a.lua),
--            reading its scratch register through the register DSL
--   lua5.4 bench/user_message.lua [round trips]   (default 100000)
package.path = "lua/?.lua;lua/?/init.lua;spec/?.lua;" .. package.path
package.cpath = (os.getenv("LUAVFIO_BUILD") or "build") .. "/?.so;" .. package.cpath
local core = require "vfio.core"
local server = require "vfio.user.server"
local unistd = require "posix.unistd"
local psocket = require "posix.sys.socket"
local pwait = require "posix.sys.wait"
local now = require("support.child").now

local N = math.tointeger(tonumber(arg[1])) or 100000
-- /proc/self/stat's utime and stime count clock ticks: N round trips make them fine
-- enough (luaposix's times() answers zeros here)
local TICK = unistd.sysconf(unistd._SC_CLK_TCK)
local function cpu_times()
   local f = assert(io.open("/proc/self/stat"))
   local line = f:read("l")
   f:close()
   local rest = line:match("%) (.*)$")            -- past the command name, which may hold spaces
   local fields = {}
   for x in rest:gmatch("%S+") do fields[#fields + 1] = x end
   return tonumber(fields[12]), tonumber(fields[13])   -- utime, stime (fields 14 and 15)
end

-- A device whose own work is nothing: what vfio.user.server costs by itself.
local function constant_device()
   return {
      info = function() return { flags = 2, num_regions = 9, num_irqs = 0 } end,
      region_info = function(_, i) return { size = i == 0 and 0x1000 or i == 7 and 256 or 0, flags = 3 } end,
      irq_info = function() return { count = 0, flags = 0 } end,
      region_read = function(_, _, _, count) return ("\0"):rep(count) end,
      region_write = function() return true end,
      set_irqs = function() return true end,
      reset = function() return true end,
   }
end

local function serial_model()
   local dev = dofile("examples/vfio-user/serial_16550a.lua")
   -- I/O decoding on, as a guest's firmware leaves it: the model answers its BAR
   assert(dev:region_write(7, 4, "\1\0"))
   return dev
end

-- The servers, each run in the child: serve(path, n) serves n round trips plus the
-- handshake and returns; direct(n) is the device's own share (nil for the floor).
local SERVERS = {
   { name = "floor", what = "bare Lua loop over core.user_connection", region = 0, offset = 0,
     serve = function(path)
        local ls = assert(psocket.socket(psocket.AF_UNIX, psocket.SOCK_STREAM, 0))
        assert(psocket.bind(ls, { family = psocket.AF_UNIX, path = path }))
        assert(psocket.listen(ls, 1))
        return function()
           local s = assert(psocket.accept(ls))
           local conn = core.user_connection(s, { role = "server", max_msg_fds = 8 })
           unistd.close(s)
           local zeros = ("\0"):rep(4)
           while true do
              local m = conn:recv()
              if not m then break end
              if m.command == "version" then
                 conn:reply(m, { major = 0, minor = 0, capabilities = { max_msg_fds = 8 } })
              else
                 conn:reply(m, { offset = m.offset, region = m.region, data = zeros })
              end
           end
           conn:close()
           unistd.close(ls)
        end
     end },
   { name = "server", what = "vfio.user.server, a constant device", region = 0, offset = 0,
     device = constant_device },
   { name = "model", what = "vfio.user.server, the 16550A model's scratch register", region = 0, offset = 7,
     device = serial_model },
}

-- In the child: serve, then time the device alone; write "cpu direct" to `out`.
local function child(spec, path, out)
   local dev, run
   if spec.device then
      dev = spec.device()
      local s = assert(server.listen(path, dev, { signals = false }))
      run = function()
         while s.stats.clients == 0 or s.client do assert(s:step(1000)) end
         s:close()
      end
   else
      run = spec.serve(path)
   end
   unistd.write(out, "ready\n")
   local u0, s0 = cpu_times()
   run()
   local u1, s1 = cpu_times()
   local user, sys = (u1 - u0) / TICK, (s1 - s0) / TICK
   local direct = 0
   if dev then
      local read = dev.region_read
      local t1 = os.clock()
      for _ = 1, N do read(dev, spec.region, spec.offset, 1) end
      direct = os.clock() - t1
   end
   unistd.write(out, ("%.9f %.9f %.9f\n"):format(user, sys, direct))
end

local function measure(spec)
   local path = os.tmpname()
   os.remove(path)
   local rd, wr = unistd.pipe()
   local pid = assert(unistd.fork())
   if pid == 0 then
      unistd.close(rd)
      local ok, err = pcall(child, spec, path, wr)
      if not ok then io.stderr:write(tostring(err), "\n") unistd._exit(1) end
      unistd._exit(0)
   end
   unistd.close(wr)
   assert(unistd.read(rd, 6) == "ready\n", spec.name .. ": the server did not start")
   local fd = assert(psocket.socket(psocket.AF_UNIX, psocket.SOCK_STREAM, 0))
   assert(psocket.connect(fd, { family = psocket.AF_UNIX, path = path }))
   local c = core.user_connection(fd, { role = "client", max_msg_fds = 8, peer_max_msg_fds = 8,
                                        peer_max_data_xfer_size = 1 << 20 })
   unistd.close(fd)
   assert(c:request("version", { major = 0, minor = 0, caps = { max_msg_fds = 8 } }))
   assert(c:recv(5000))
   local fields = { region = spec.region, offset = spec.offset, count = 1 }
   local w0 = now()
   for _ = 1, N do
      assert(c:request("region_read", fields))
      local r = assert(c:recv(5000))
      assert(not r.error, "refused: errno " .. tostring(r.error))
   end
   local rt = (now() - w0) / N
   c:close()
   local line = ""
   while not line:find("\n") do
      local s = unistd.read(rd, 64)
      if not s or s == "" then break end
      line = line .. s
   end
   unistd.close(rd)
   pwait.wait(pid)
   os.remove(path)
   local user, sys, direct = line:match("(%S+) (%S+) (%S+)")
   assert(user, spec.name .. ": no figures from the server")
   return { user = tonumber(user) / N, sys = tonumber(sys) / N, direct = tonumber(direct) / N, rt = rt }
end

local got = {}
for _, spec in ipairs(SERVERS) do got[spec.name] = measure(spec) end

local us = 1e6
print(("vfio-user server, host CPU per message (%d REGION_READ round trips, one at a time)"):format(N))
print(("  %-52s %8s %8s %8s %8s %8s"):format("", "user us", "sys us", "device", "user-dev", "rt us"))
for _, spec in ipairs(SERVERS) do
   local g = got[spec.name]
   print(("  %-52s %8.2f %8.2f %8.2f %8.2f %8.2f"):format(spec.what, g.user * us, g.sys * us,
      g.direct * us, (g.user - g.direct) * us, g.rt * us))
end
local f, s = got.floor, got.server
print(("vfio.user.server over the bare loop, outside the device: %.2f us user + %.2f us system a message"
   .. " (target: 2 us)"):format((s.user - s.direct - f.user) * us, (s.sys - f.sys) * us))
print("(sys: the socket and poll system calls and the wakeups, which any server on a socket pays)")
