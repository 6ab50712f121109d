-- Metamethod re-entry (issue 21, item 2), as a property: every binding that reads an
-- option table, a list, a string or handler functions is called with hostile arguments
-- whose every read runs a step that closes the objects the call uses (the object itself
-- and its parents), collects garbage, leaves garbage whose __gc closes them at the
-- collector's next step (inside the call's own allocations), or answers an object of
-- the wrong type. Each call must work or raise a clean Lua error, and the world must
-- stay usable afterwards (no crash; under ASan no memory error). The rule it checks is
-- in csrc/lua/README.md: read every argument, then check the object. Deterministic seeds.
local core = require "vfio.core"
local fixture = require "support.fixture"
local kvmhost = require "support.kvm"

local SEEDS = tonumber(os.getenv("LUAVFIO_REENTRY_SEEDS") or "") or 40

local function pick(list) return list[math.random(#list)] end

-- Every object of the world, closed or not, and a few values of the wrong type: what a
-- hostile read answers instead of the real value.
local function strangers(w)
   local out = { 1, -1, "x", 1 << 40, true, {}, function() end }
   for _, v in pairs(w) do
      if type(v) == "userdata" then out[#out + 1] = v end
   end
   return out
end

local function close_all(list)
   for _, o in ipairs(list) do pcall(function() o:close() end) end
end

-- One hostile step against `targets` (the objects the call under test uses).
local function step(_, targets)
   local k = math.random(7)
   if k == 1 then
      close_all(targets)                                      -- close them now
   elseif k == 2 then
      collectgarbage("collect")
   elseif k == 3 then                                        -- their close from a __gc, now
      setmetatable({}, { __gc = function() close_all(targets) end })
      collectgarbage("collect")
   elseif k == 4 then                                        -- ... or at a later GC step
      for _ = 1, 4 do setmetatable({}, { __gc = function() close_all(targets) end }) end
   elseif k == 5 then
      collectgarbage("step")
   end
   -- k 6, 7: nothing (so that some calls get past every read)
end

-- A proxy of `real`: reading a field or its length runs a step, and one read in six
-- answers a stranger instead; nested tables are proxies too.
local function hostile(w, targets, real, depth)
   depth = depth or 0
   local others = strangers(w)
   return setmetatable({}, {
      __index = function(_, key)
         step(w, targets)
         local v = real[key]
         if math.random(6) == 1 then return pick(others) end
         if type(v) == "table" and depth < 3 then return hostile(w, targets, v, depth + 1) end
         return v
      end,
      __len = function() step(w, targets); return #real end,
      __tostring = function() step(w, targets); return "hostile" end,
      __name = "hostile",
   })
end

-- Garbage whose finalizers close the targets at the collector's next step, which is the
-- next allocation: the call's own (a buffer, an object, a number converted to a string).
-- The collector is made eager (a new cycle at once, whole in one step; a pause of 0
-- would mean "unchanged"), the finalizable objects survive one full collection
-- referenced, then are dropped with no allocation in between. calm_gc() restores the
-- default pacing after the call.
-- Eager, each allocation runs a whole cycle; a finalizer that counts down re-arms itself
-- k - 1 times, so the close falls on the k-th allocation (1 to 4, by seed): inside a
-- loop that pushes a list, not only at its first table.
local armed
local function countdown(targets, k)
   return setmetatable({}, { __gc = function()
      if k <= 1 then close_all(targets) else countdown(targets, k - 1) end
   end })
end
local function eager_gc(targets, k)
   k = k or math.random(4)
   armed = {}
   for i = 1, 4 do armed[i] = countdown(targets, k) end
   collectgarbage("incremental", 1, 1000, 16)
   collectgarbage("collect")
   assert(armed[4], "kept through the collection")
   armed = nil
end
local function calm_gc() collectgarbage("incremental", 200, 100, 13) end

-- After a call: every object still answers (methods on closed objects raise cleanly).
local function poke_world(w)
   for _, o in pairs(w) do
      if type(o) == "userdata" then
         tostring(o)
         pcall(function() return o:closed() end)
      end
   end
   if w.trap then pcall(w.trap.cfg_read, w.trap, 0, 4); pcall(w.trap.bar_read, w.trap, 0, 0x1000, 4) end
   if w.region then pcall(w.region.read32, w.region, 0); pcall(w.region.read, w.region, 0, 64) end
   if w.buf then pcall(w.buf.read, w.buf, 0, 16) end
   if w.backend then pcall(w.backend.region_read, w.backend, 0, 0, 4) end
end

-- Run `case` over SEEDS seeds: the world is made fresh each time by `make`.
local function property(make, case)
   for seed = 1, SEEDS do
      math.randomseed(seed)
      local w = make()
      local targets = {}
      for _, name in ipairs(case.targets) do targets[#targets + 1] = w[name] end
      local P = function(real) return hostile(w, targets, real) end
      local ok, err = pcall(function()
         if seed % 3 == 0 then eager_gc(targets) end
         return case.call(w, P, targets)
      end)
      calm_gc()
      assert(ok or type(err) == "string",
         ("%s, seed %d: not a clean error: %s"):format(case.name, seed, tostring(err)))
      poke_world(w)
      close_all(strangers(w))
      collectgarbage("collect")
   end
end

local function host_world()
   local w = {}
   local path = os.tmpname()
   local f = assert(io.open(path, "wb")); f:write(("\0"):rep(0x4000)); f:close()
   w.dev = assert(core.device_file(path, "reentry"))
   os.remove(path)
   w.region = core.region(w.dev, { offset = 0, size = 0x2000, readable = true,
                                   writable = true, mappable = true })
   w.trap, w.backend = fixture.trap("edu")
   w.buf = core.dmabuf(0x2000)
   w.efd = core.eventfd()
   w.host = core.pcihost {}
   return w
end

local HOST_CASES = {
   { name = "core.trap(backend, opts)", targets = { "backend" },
     call = function(w, P) return core.trap(w.backend, P { pcie = true }) end },
   { name = "core.vfio_backend(device, opts)", targets = { "dev" },
     call = function(w, P)
        local be = core.vfio_backend(w.dev, P {
           mmap = true, name = ("long name "):rep(3) .. math.random(1000),
           regions = { [0] = { offset = 0, size = 0x1000, flags = 7, mmap = true },
                       [1] = { offset = 0x1000, size = 0x1000, flags = 3 } },
           irqs = { [0] = { count = 1, flags = 0 } } })
        if be then
           collectgarbage("collect")
           assert(tostring(be))
           pcall(be.region_read, be, 0, 0, 4)
           pcall(be.region_read, be, 1, 0, 4)
        end
        return be
     end },
   { name = "core.region(device, description)", targets = { "dev" },
     call = function(w, P)
        local r = core.region(w.dev, P { index = 1, offset = 0, size = 0x2000, readable = true,
                                        writable = true, mappable = true,
                                        sparse = { { offset = 0, size = 0x1000 } } })
        if r then pcall(r.map, r); pcall(r.read, r, 0, 0x100) end
        return r
     end },
   { name = "core.replay(fixture)", targets = { "trap", "backend" },
     call = function(_, P) return core.replay(P(fixture.load("edu"))) end },
   { name = "core.eventfd(n, opts)", targets = { "efd" },
     call = function(_, P) return core.eventfd(1, P { semaphore = true }) end },
   { name = "core.pcihost(opts) and host:access(exit)", targets = { "trap", "backend", "host" },
     call = function(w, P)
        local h = core.pcihost(P { ecam_base = 0xe0000000, ecam_buses = 1 })
        w.host:attach(0, 1, 0, w.trap)
        w.host:access(P { space = "pio", port = 0xcf8, size = 4, write = true, value = 0x80000800 })
        return h, w.host:access(P { space = "pio", port = 0xcfc, size = 4, write = false })
     end },
   { name = "trap:add_window(handlers) and accesses reaching them", targets = { "trap", "backend" },
     call = function(w, P, targets)
        local handlers = {
           read = function() step(w, targets); return 0x1234 end,
           write = function() step(w, targets) end,
        }
        w.trap:add_window(0, 0x1000, 0x100, P(handlers))
        w.trap:bar_write(0, 0x1000, 4, 1)
        w.trap:mmio_read(0xfebf1000, 4)
        w.trap:bench("bar", 4, 0, 0x1000, 4)
        return w.trap:bar_read(0, 0x1004, 4)
     end },
   { name = "trap:on_event callback closing the trap", targets = { "trap", "backend" },
     call = function(w, _, targets)
        w.trap:on_event(function() step(w, targets) end)
        w.trap:cfg_write(0x10, 4, 0xfe000000)
        w.trap:cfg_write(0x04, 2, 0x0007)
        return w.trap:cfg_write(0x04, 2, 0x0000)
     end },
   { name = "trap methods converting numbers to strings", targets = { "trap", "backend" },
     call = function(w)
        eager_gc({ w.trap, w.backend })
        pcall(w.trap.set_config, w.trap, 0x40, 12345678)
        pcall(w.trap.add_cap, w.trap, 0x50, 1234, nil)
        pcall(w.trap.set_pending, w.trap, 1, 0, true)
        return w.trap:set_config(0x40, 1234, 9999)
     end },
   { name = "device:set_irqs(data list), hot_reset(groups), probe_feature", targets = { "dev", "efd" },
     call = function(w, P, targets)
        pcall(w.dev.set_irqs, w.dev, 1, "trigger", 0, 2, P { w.efd, -1 })
        eager_gc(targets)
        pcall(w.dev.set_irqs, w.dev, 1, "trigger", 0, 2, { w.efd, w.efd })
        eager_gc(targets)
        pcall(w.dev.probe_feature, w.dev, 1, 2)
        eager_gc(targets)
        return w.dev:hot_reset(P { 3, 4 })
     end },
   { name = "dmabuf:write(off, number)", targets = { "buf" },
     call = function(w)
        eager_gc({ w.buf })
        for i = 1, 64 do w.buf:write(i, 1234567 + i) end
        return w.buf:read(0, 0x100)
     end },
   { name = "region:read and write under an eager collector", targets = { "region", "dev" },
     call = function(w)
        w.region:map()
        eager_gc({ w.region, w.dev })
        for i = 1, 16 do w.region:read(0, 0x1000 + i); w.region:write(0, 99999 + i) end
        return true
     end },
   { name = "region:mapped and other lists built under an eager collector",
     targets = { "region", "dev", "trap", "backend" },
     call = function(w)
        local sparse = core.region(w.dev, { index = 2, offset = 0, size = 0x4000, readable = true,
           mappable = true, sparse = { { offset = 0, size = 0x1000 }, { offset = 0x2000, size = 0x1000 },
                                       { offset = 0x3000, size = 0x1000 } } })
        sparse:map()
        eager_gc({ sparse, w.dev })
        local m = sparse:mapped()
        for _, c in ipairs { { 1, "bars" }, { 1, "caps" }, { 1, "windows" }, { 1, "info" },
                             { 2, "mapped" }, { 2, "stats" } } do
           local pair = { fixture.trap("edu") }   -- fresh ones: each call gets its own close
           local obj = pair[c[1]]
           local f = obj[c[2]]
           eager_gc(pair)
           pcall(f, obj)
        end
        return m
     end },
}

describe("metamethod re-entry: bindings read their arguments before they use an object", function()
   for _, case in ipairs(HOST_CASES) do
      it(case.name .. " works or raises, whatever its arguments' metamethods do", function()
         property(host_world, case)
      end)
   end

   it("a trap closed from its own window handler closes after the access", function()
      local t, be = fixture.trap("edu")
      t:add_window(0, 0x1000, 0x100, { read = function() t:close(); be:close(); return 7 end })
      assert.are.equal(7, t:bar_read(0, 0x1000, 4))
      assert.matches("closed", tostring(t))
      assert.matches("closed", tostring(be))
      assert.has_error(function() t:bar_read(0, 0x1000, 4) end, "vfio.trap is closed")
   end)

   it("core.trap whose options close its backend raises, calling nothing of it", function()
      local _, be = fixture.trap("edu")
      local opts = setmetatable({}, { __index = function() be:close() end })
      assert.has_error(function() core.trap(be, opts) end, "backend edu is closed")
   end)

   it("core.vfio_backend keeps the name it was given, whatever the collector frees", function()
      local path = os.tmpname()
      local f = assert(io.open(path, "wb")); f:write(("\0"):rep(0x2000)); f:close()
      local dev = assert(core.device_file(path, "dev"))
      os.remove(path)
      local opts = setmetatable({}, { __index = function(_, k)
         if k == "name" then return ("fresh-%d"):format(12345) end   -- referenced by nothing
         collectgarbage("collect")
         if k == "regions" then return { [0] = { offset = 0, size = 0x1000, flags = 3 } } end
      end })
      local be = assert(core.vfio_backend(dev, opts))
      assert.matches("fresh%-12345", tostring(be))
   end)
end)

-- The same property over the bindings that need a VM (and, in the lab, an iommufd).
local function kvm_world()
   local vm = kvmhost.vm { ram = 0x20000 }
   if not vm then return nil end
   local w = host_world()
   w.vm = vm
   w.vcpu = vm:vcpu(0)
   local ifd = core.iommufd()
   if ifd then w.iommufd = ifd; w.ioas = ifd:ioas() end
   return w
end

local KVM_CASES = {
   { name = "vcpu:run(nil, opts)", targets = { "vcpu", "vm" },
     call = function(w, P) return w.vcpu:run(nil, P { timeout = 0.01 }) end },
   { name = "vcpu:run(handler, opts)", targets = { "vcpu", "vm" },
     call = function(w, P, targets)
        return w.vcpu:run(function() step(w, targets); return 0 end, P { timeout = 0.01 })
     end },
   { name = "vm:run_vcpus(list, handler, opts)", targets = { "vcpu", "vm" },
     call = function(w, P) return w.vm:run_vcpus({ w.vcpu }, nil, P { timeout = 0.01 }) end },
   { name = "vm:add_uart(opts)", targets = { "vm" },
     call = function(w, P)
        local id, u = w.vm:add_uart(P { port = 0x3f8, irq = 4, capture = 64, stdout = false })
        collectgarbage("collect")
        if u then u:feed("x"); u:output(); u:tail() end
        return id
     end },
   { name = "vcpu:set_cpuid(list)", targets = { "vcpu", "vm" },
     call = function(w, P)
        return w.vcpu:set_cpuid(P { { ["function"] = 0 }, { ["function"] = 1, eax = 0x663 },
                                    { ["function"] = 7, index = 0, ebx = 0 } })
     end },
   { name = "vcpu:set_regs(regs)", targets = { "vcpu", "vm" },
     call = function(w, P) return w.vcpu:set_regs(P { rip = 0x1000, rax = 1, rflags = 2 }) end },
   { name = "vcpu:setup_boot32(opts)", targets = { "vcpu", "vm" },
     call = function(w, P) return w.vcpu:setup_boot32(P { eip = 0x1000, esi = 0x7000 }) end },
   { name = "vcpu:setup_boot64(opts)", targets = { "vcpu", "vm" },
     call = function(w, P)
        return w.vcpu:setup_boot64(P { rip = 0x1000, cr3 = 0x9000, gdt_base = 0x500, gdt_limit = 0x1f })
     end },
   { name = "vm:map(gpa, size, buf, opts)", targets = { "vm", "buf" },
     call = function(w, P) return w.vm:map(0x100000, 0x1000, w.buf, P { offset = 0, readonly = true }) end },
   { name = "vm:irqfd(gsi, opts)", targets = { "vm", "efd" },
     call = function(w, P) return w.vm:irqfd(5, P { fd = w.efd, resample = true }) end },
   { name = "vm:ioeventfd(opts)", targets = { "vm", "efd" },
     call = function(w, P) return w.vm:ioeventfd(P { addr = 0x1000, len = 4, fd = w.efd }) end },
   { name = "vm:vcpu, vm:write, vm:add_debugcon under an eager collector", targets = { "vm" },
     call = function(w)
        eager_gc({ w.vm })
        for i = 1, 8 do w.vm:write(0x100 + i, 123456 + i) end
        w.vm:add_debugcon(0xe9)
        return w.vm:vcpu(1)
     end },
   { name = "vm:supported_cpuid, vm:routes, vm:memory under an eager collector", targets = { "vm" },
     call = function(w)
        w.vm:create_irqchip()
        w.vm:set_msi_route(24, 0xfee00000, 0x41)
        w.vm:set_msi_route(25, 0xfee00000, 0x42)
        eager_gc({ w.vm })
        local c = w.vm:supported_cpuid()
        eager_gc({ w.vm })
        local r = w.vm:routes()
        eager_gc({ w.vm })
        return c, r, w.vm:memory()
     end },
   { name = "ioas:map_dma(buf, iova, access)", targets = { "ioas", "iommufd", "buf" },
     call = function(w, P)
        if not w.ioas then return true end
        return w.ioas:map_dma(w.buf, 0x100000, P { read = true, write = true })
     end },
   { name = "ioas:map_dma(vm, iova, {gpa=, size=})", targets = { "ioas", "iommufd", "vm" },
     call = function(w, P)
        if not w.ioas then return true end
        return w.ioas:map_dma(w.vm, 0x200000, P { gpa = 0, size = 0x1000, read = true })
     end },
}

describe("metamethod re-entry on the KVM bindings #kvm", function()
   for _, case in ipairs(KVM_CASES) do
      it(case.name .. " works or raises, whatever its arguments' metamethods do", function()
         local ok, why = kvmhost.usable()
         if not ok then pending(why) return end
         property(kvm_world, case)
      end)
   end
end)
