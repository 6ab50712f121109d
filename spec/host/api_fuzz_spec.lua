-- The Lua API as a security boundary, fuzzed: random calls of every method of every
-- vfio.core object with random arguments (integers at the edges, strings, tables, other
-- objects, closed objects), objects closed at random and from inside run handlers, and a
-- script tampering with what getmetatable shows. Under host-asan this runs against the
-- ASan+UBSan build: any memory error aborts the tier. Deterministic (fixed seeds).
local core = require "vfio.core"
local fixture = require "support.fixture"

local EDGE = { 0, 1, -1, 2, 3, 4, 7, 8, 0xff, 0x100, 0xfff, 0x1000, 0xffff, 0x10000,
               0x7fffffff, 0x80000000, 0xffffffff, 0x100000000, math.maxinteger,
               math.mininteger, 1 << 40, 4096 * 3 + 1 }

local function new_world()
   local w = {}
   local path = os.tmpname()
   local f = assert(io.open(path, "wb")); f:write(("\0"):rep(0x4000)); f:close()
   w.dev = assert(core.device_file(path, "fuzz"))
   os.remove(path)
   w.region = core.region(w.dev, { offset = 0, size = 0x2000, readable = true, writable = true,
                                   mappable = true })
   w.region2 = core.region(w.dev, { offset = 0x2000, size = 0x2000, readable = true })
   w.cfg = core.cfgspace(4096)
   w.host = core.pcihost { ecam_base = 0xe0000000 }
   w.port = core.rootport { secondary = 1 }
   w.host:attach(0, 0x1c, 0, w.port)
   w.port:insert(w.cfg)
   w.efd = core.eventfd()
   w.iommufd = core.iommufd("/dev/null") -- no iommufd: every call reaches the ioctl and fails
   w.buf = core.dmabuf(0x3000)
   w.ramfd = core.ram_memfd(0x4000)   -- guest RAM from a file: vm:add_ram's {fd =}
   local t, be = fixture.trap("nvme")
   w.trap, w.backend = t, be
   local kvm = core.kvm_open()
   w.vm = kvm and kvm:create_vm() or nil
   if w.vm then
      w.vm:add_ram(0, 0x10000)
      w.vcpu = w.vm:vcpu(0)
   end
   return w
end

local function pick(list) return list[math.random(#list)] end

local function random_value(w, objs)
   local k = math.random(10)
   if k <= 4 then return pick(EDGE) + (math.random(3) - 2) end
   if k == 5 then return ("\0\255x"):rep(math.random(0, 40)) end
   if k == 6 then return nil end
   if k == 7 then return { read = math.random(2) == 1, write = true, offset = pick(EDGE),
                           region = math.random(0, 9), size = pick(EDGE), gpa = pick(EDGE),
                           readonly = true, timeout = 0.001,
                           fd = math.random(2) == 1 and w.ramfd or nil } end
   if k == 8 then return pick(objs) end
   if k == 9 then return function() return pick(EDGE) end end
   return w.trap
end

-- name -> function for each method, taken before the script starts rewriting classes
local function methods_of(obj)
   local d = getmetatable(obj)
   local out = {}
   if type(d) == "table" and type(d.__index) == "table" then
      for name, fn in pairs(d.__index) do
         if type(fn) == "function" then out[#out + 1] = { name, fn } end
      end
   end
   table.sort(out, function(a, b) return a[1] < b[1] end)
   return out
end

describe("the vfio.core API under random use", function()
   for seed = 1, 8 do
      it("survives 5000 random calls, closes and metatable tampering (seed " .. seed .. ")", function()
         math.randomseed(0xf022 + seed)
         local w = new_world()
         local objs = {}
         for _, k in ipairs { "dev", "region", "region2", "cfg", "host", "port", "efd", "buf", "trap",
                              "backend", "vm", "vcpu", "iommufd", "ramfd" } do
            if w[k] then objs[#objs + 1] = w[k] end
         end
         local calls, errors = 0, 0
         local methods, saved = {}, {}
         -- calls that block by design (an eventfd's read and wait) are left out
         local blocking = { [w.efd] = { read = true, wait = true } }
         for _, o in ipairs(objs) do
            methods[o] = {}
            for _, m in ipairs(methods_of(o)) do
               if not (blocking[o] and blocking[o][m[1]]) then methods[o][#methods[o] + 1] = m end
            end
            local d = getmetatable(o)
            saved[d] = { d.__index, d.__gc, d.__name }
         end
         for _ = 1, 5000 do
            local obj = pick(objs)
            local names = methods[obj]
            local r = math.random(100)
            if r <= 3 then
               pcall(obj.close, obj)                        -- closed at random
            elseif r <= 6 then
               local d = getmetatable(obj)                  -- a script rewriting the class
               if type(d) == "table" then
                  d.__index, d.__gc, d.__name = pick(objs), nil, "vfio.region"
               end
            elseif r <= 8 and w.vcpu then
               -- a run whose handler does random things, closes included
               pcall(w.vcpu.setup_real, w.vcpu, 0, 0x1000)
               pcall(w.vm.write, w.vm, 0x1000, string.char(0xE6, 0x10, 0xE4, 0x11, 0xF4))
               pcall(w.vcpu.run, w.vcpu, function()
                  local o = pick(objs)
                  if math.random(3) == 1 then pcall(o.close, o) end
                  return random_value(w, objs)
               end, { timeout = 0.05 })
            elseif #names > 0 then
               local fn = pick(names)[2]
               local args = {}
               for i = 1, math.random(0, 5) do args[i] = random_value(w, objs) end
               -- self of the wrong type, now and then
               local self = math.random(8) == 1 and pick(objs) or obj
               local ok = pcall(fn, self, table.unpack(args, 1, 5))
               calls = calls + 1
               if not ok then errors = errors + 1 end
            end
         end
         for _, o in ipairs(objs) do pcall(methods_of(o).close or o.close, o) end
         for d, v in pairs(saved) do d.__index, d.__gc, d.__name = v[1], v[2], v[3] end
         for _, o in ipairs(objs) do
            for _, m in ipairs(methods[o]) do if m[1] == "close" then pcall(m[2], o) end end
         end
         collectgarbage(); collectgarbage()
         -- the run got this far: no crash, no ASan report; most calls did something
         assert.is_true(calls > 3000, "calls " .. calls)
         assert.is_true(errors < calls, "every call failed: the fuzzer reached nothing")
      end)
   end
end)
