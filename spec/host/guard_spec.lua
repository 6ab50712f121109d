-- The guest boundary and the Lua API as a security boundary: what a plain Lua script (no
-- debug library) or a guest can do to the objects of vfio.core. Each case was a way to
-- crash the process or reach memory, a file or a device register it was not given.
local core = require "vfio.core"
local fixture = require "support.fixture"
local kvmhost = require "support.kvm"

-- Objects these specs leave to the collector must not close fds under later specs.
local function gc() collectgarbage(); collectgarbage() end

local function shm_region(size)
   local path = os.tmpname()
   local f = assert(io.open(path, "wb"))
   f:write(("\0"):rep(size))
   f:close()
   local dev = assert(core.device_file(path, "shm"))
   os.remove(path)
   local r = core.region(dev, { offset = 0, size = size, readable = true, writable = true,
                                mappable = true })
   return r, dev
end

describe("types Lua cannot forge", function()
   after_each(gc)
   it("keep every metatable out of Lua's reach: getmetatable gives a description", function()
      local r = shm_region(4096)
      local cfg = core.cfgspace(256)
      for _, obj in ipairs { r, cfg, core.eventfd(), core.dmabuf(4096) } do
         local mt = getmetatable(obj)
         assert.is_table(mt)
         local name = mt.__name
         assert.matches("^vfio%.", name)
         mt.__tostring, mt.__name, mt.__index = nil, nil, nil   -- a copy: the class is untouched
         assert.are.equal(1, (tostring(obj):find(name, 1, true)))
         assert.is_function(obj.close)
      end
   end)

   it("a cfgspace given the region class is still no region", function()
      local r = shm_region(4096)
      local cfg = core.cfgspace(256)
      local desc = getmetatable(cfg)
      desc.__index = getmetatable(r).__index          -- what once re-classed it
      setmetatable(desc, getmetatable(r))
      assert.has_error(function() r.read32(cfg, 0) end, nil)
      local ok, err = pcall(r.write32, cfg, 0, 0x41414141)
      assert.is_false(ok)
      assert.matches("vfio.region expected, got vfio.cfgspace", err)
   end)

   it("a region whose __gc a script removed is still finalized before its device", function()
      local r, dev = shm_region(4096)
      local desc = getmetatable(r)
      desc.__gc, desc.__close = nil, nil
      assert.is_nil(r.__gc)                            -- metamethods are no fields either
      assert.is_nil(r.__index)
      assert(r:map())
      r = nil -- luacheck: ignore
      collectgarbage(); collectgarbage()
      dev:close()                                       -- walked a freed region before
      dev:close()
   end)

   it("what an object implements in C cannot be copied onto another", function()
      local cfg = core.cfgspace(256)
      local t = fixture.trap("edu")
      local desc = getmetatable(cfg)
      for k, v in pairs(getmetatable(t)) do desc[k] = v end  -- a trap's "__kvm_io" and all
      local host = core.pcihost()
      -- a cfgspace is a PCI function, so the host bridge takes it ...
      assert(host:attach(0, 1, 0, cfg))
   end)

   it("a cfgspace handles no guest ranges: a VM refuses it, and takes a trap #kvm", function()
      local cfg = core.cfgspace(256)
      local t = fixture.trap("edu")
      local desc = getmetatable(cfg)
      for k, v in pairs(getmetatable(t)) do desc[k] = v end
      local vm, kvm = kvmhost.vm()
      if not vm then pending(kvm) return end
      assert.has_error(function() vm:add_range("mmio", 0x100000, 0x1000, cfg) end)
      assert(vm:add_range("mmio", 0x100000, 0x1000, t))
      vm:close(); kvm:close()
   end)
end)

describe("a closed trap, as the guest reaches it", function()
   after_each(gc)
   it("answers config reads with all ones and drops config writes (C host bridge)", function()
      local t, be = fixture.trap("nvme")
      local host = core.pcihost()
      assert(host:attach(0, 3, 0, t))
      local cf8 = function(off) return 0x80000000 | 3 << 11 | off end
      t:close()
      local before = be:stats()
      host:access { space = "pio", port = 0xcf8, size = 4, write = true, value = cf8(0) }
      local _, v = host:access { space = "pio", port = 0xcfc, size = 4 }
      assert.are.equal(0xffffffff, v)
      host:access { space = "pio", port = 0xcf8, size = 4, write = true, value = cf8(4) }
      host:access { space = "pio", port = 0xcfc, size = 2, write = true, value = 0x0006 }
      assert.are.same(before, be:stats())
   end)

   it("forwards nothing to the device's MSI-X table from a guest store #kvm", function()
      local t, be = fixture.trap("nvme")
      local m = assert(t:msix())
      local bar = assert(t:bars()[m.table_bar])
      local base = 0x200000
      t:cfg_write(0x10 + 4 * m.table_bar, 4, base)
      if bar.is64 then t:cfg_write(0x14 + 4 * m.table_bar, 4, 0) end
      t:cfg_write(4, 2, 0x0006)                           -- memory decode, bus master
      local vm, kvm = kvmhost.vm()
      if not vm then pending(kvm) return end
      assert(vm:add_ram(0, 0x10000))
      assert(vm:add_range("mmio", base, bar.size, t))
      local entry = base + m.table_off
      -- 32-bit flat code: mov dword [entry], 0xfee00000; mov dword [entry+12], 0; hlt
      local code = string.pack("<BBI4I4BBI4I4B", 0xC7, 0x05, entry, 0xfee00000,
                               0xC7, 0x05, entry + 12, 0, 0xF4)
      vm:write(0x1000, code)
      local cpu = assert(vm:vcpu(0))
      assert(cpu:setup_flat32(0x1000, 0, 0))
      t:close()                                           -- the range stays registered
      local before = be:stats()
      local e = assert(cpu:run(nil, { timeout = 5 }))
      assert.are.equal("hlt", e.reason)
      assert.are.same(before, be:stats())
      vm:close()
   end)
end)

-- Real-mode code for the vCPU cases: `out 0x10, al` twice, then hlt.
local OUT_TWICE = string.char(0xB0, 0x01, 0xE6, 0x10, 0xB0, 0x02, 0xE6, 0x10, 0xF4)

local function kvm_vm()
   local vm, kvm = kvmhost.vm { ram = 0x10000 }
   if not vm then return nil, kvm end
   assert(vm:write(0x1000, OUT_TWICE) == nil)
   local cpu = assert(vm:vcpu(0))
   assert(cpu:setup_real(0, 0x1000))
   return vm, cpu, kvm
end

describe("objects closed from inside vcpu:run #kvm", function()
   after_each(gc)
   it("a handler that closes its vCPU ends the run cleanly", function()
      local vm, cpu = kvm_vm()
      if not vm then pending(cpu) return end
      local calls = 0
      local e = assert(cpu:run(function()
         calls = calls + 1
         cpu:close()
         assert.has_error(function() cpu:get_regs() end, "attempt to use a closed vcpu")
         return 0
      end))
      assert.are.equal(1, calls)
      assert.is_true(e.closed)
      assert.are.equal("vfio.vcpu (closed)", tostring(cpu))
      assert.has_error(function() cpu:run() end, "attempt to use a closed vcpu")
      vm:close()
   end)

   it("a handler that closes the VM ends the run; RAM goes only after the run", function()
      local vm, cpu = kvm_vm()
      if not vm then pending(cpu) return end
      local e = assert(cpu:run(function()
         vm:close()
         assert.has_error(function() vm:read(0x1000, 1) end, "attempt to use a closed vm")
      end))
      assert.is_true(e.closed)
      assert.are.equal("vfio.vm (closed)", tostring(vm))
      assert.has_error(function() cpu:run() end, "attempt to use a vcpu of a closed vm")
      -- fresh allocations where guest RAM was stay ours: no vCPU can run on it
      local junk = {}
      for i = 1, 64 do junk[i] = core.dmabuf(0x10000) end
      assert.are.equal(64, #junk)
      assert.has_error(function() cpu:run() end)
   end)

   it("a handler's error still ends the run, and the vCPU stays usable", function()
      local vm, cpu = kvm_vm()
      if not vm then pending(cpu) return end
      assert.has_error(function() cpu:run(function() error("handler failed") end) end, nil)
      -- not stuck in "running": a nested-run check would refuse this
      local e = assert(cpu:run(function() return nil end))
      assert.are.equal("hlt", e.reason)
      assert.has_error(function()
         cpu:setup_real(0, 0x1000)
         cpu:run(function() cpu:run() end)
      end)
      vm:close()
   end)
end)

describe("no Lua value is trusted as a pointer or a file descriptor", function()
   after_each(gc)
   it("a backend borrows its device, not the fd number: after close nothing is forwarded", function()
      local fx = fixture.load("edu")
      local path = os.tmpname()
      local f = assert(io.open(path, "wb")); f:write(("\0"):rep(8 << 20)); f:close()
      local dev = assert(core.device_file(path, "edu (file)"))
      local regions = { [7] = { offset = 7 << 20, size = #fx.config, flags = 3 } }
      local be = assert(core.vfio_backend(dev, { regions = regions, irqs = {} }))
      local t = assert(core.trap(be))
      dev:close()
      -- the next file opened gets the number the device had
      local victim = os.tmpname()
      local vf = assert(io.open(victim, "wb")); vf:write(("\0"):rep(8 << 20)); vf:close()
      local other = assert(core.device_file(victim, "victim"))
      t:cfg_write(4, 2, 0x0006)                           -- forwarded: memory, bus master
      t:cfg_write(0x40, 4, 0x41414141)                    -- forwarded: device-specific
      other:close()
      local got = assert(io.open(victim, "rb")):read("a")
      assert.is_nil(got:find("[^\0]"), "a write reached the file that took the fd number")
      os.remove(path); os.remove(victim)
   end)

   it("takes no raw address for a backend or a DMA mapping", function()
      assert.has_error(function() core.vfio_backend(3, {}, {}) end)
      local c = core.container and core.container("/dev/null")
      if c then assert.has_error(function() c:map_dma(0x1000, 4096, 0) end) end
   end)

   it("takes no raw address for a VM slot #kvm", function()
      local vm, kvm = kvmhost.vm { ram = 0x10000 }
      if not vm then pending(kvm) return end
      assert.is_nil(vm:memory()[1].host)                  -- no host address reaches Lua
      assert.has_error(function() vm:map(0x80000, 0x1000, 0x7f0000000000) end)
      local buf = core.dmabuf(0x1000)
      local slot = assert(vm:map(0x80000, 0x1000, buf))
      assert.is_nil((buf:close()))                        -- pinned by the slot
      assert.is_false(buf:closed())
      assert.has_error(function() vm:map(0x90000, 0x2000, buf) end)   -- past its end
      assert(vm:unmap(slot))
      buf:close()
      assert.is_true(buf:closed())
      vm:close()
   end)

   it("an irqfd or ioeventfd keeps its own fd: a number Lua closed and reused is never written #kvm", function()
      local vm, kvm = kvmhost.vm { ram = 0x10000 }
      if not vm then pending(kvm) return end
      assert(vm:create_irqchip())
      local e = core.eventfd()
      local n = e:fileno()
      local q = assert(vm:irqfd(40, { fd = e }))
      local iev = assert(vm:ioeventfd { addr = 0x510, len = 1, pio = true, fd = n })
      assert.are_not.equal(n, q:fileno())
      e:close()
      -- the process reuses the number for a file; the irqfd's writes must not land in it
      local unistd = require "posix.unistd"
      local path = os.tmpname()
      local f = assert(io.open(path, "w+b"))
      assert.are.equal(n, unistd.dup2(require("posix.stdio").fileno(f), n))
      assert(q:trigger(1))
      assert.are.equal(0, unistd.lseek(n, 0, unistd.SEEK_END))
      unistd.close(n)
      f:close()
      os.remove(path)
      iev:close(); q:close()
      vm:close(); kvm:close()
   end)
end)

describe("one guest-physical address map that refuses overlaps #kvm", function()
   after_each(gc)
   it("refuses RAM over RAM, a range over RAM, RAM or ranges over the irqchip's windows", function()
      local vm, kvm = kvmhost.vm()
      if not vm then pending(kvm) return end
      assert(vm:add_ram(0, 0x100000))
      local buf = core.dmabuf(0x2000)
      local _, msg, errno = vm:map(0x80000, 0x1000, buf)
      assert.are.equal(17, errno, msg)                                    -- EEXIST
      _, msg, errno = vm:add_range("mmio", 0xff000, 0x2000, core.pcihost())
      assert.are.equal(17, errno, msg)                                    -- RAM answers first
      assert(vm:create_irqchip())
      _, _, errno = vm:map(0xfee00000, 0x1000, buf)
      assert.are.equal(17, errno)                                         -- the LAPIC window
      _, _, errno = vm:add_range("mmio", 0xfec00000, 0x1000, core.pcihost())
      assert.are.equal(17, errno)                                         -- the IOAPIC window
      -- a read-only slot may carry a range: its writes are what the range handles
      local slot = assert(vm:map(0x200000, 0x1000, buf, { readonly = true }))
      assert(vm:add_range("mmio", 0x200000, 0x1000, core.pcihost()))
      _, _, errno = vm:map(0x200000, 0x1000, buf, { offset = 0x1000 })   -- but no second slot
      assert.are.equal(17, errno)
      assert(vm:unmap(slot))
      vm:close()
   end)
end)

describe("a device whose MSI-X table and PBA overlap (found by fuzzing)", function()
   after_each(gc)
   it("gets its MSI-X hidden as malformed, and no access indexes past the PBA", function()
      local fx = fixture.load("nvme")
      local t0 = fixture.trap("nvme")
      local m = assert(t0:msix())
      -- the same BAR and offset for the PBA as for the table
      local bad = {}
      for k, v in pairs(fx) do bad[k] = v end
      local tbl = fixture.cfg(fx, m.off + 4, 4)
      bad.config = fx.config:sub(1, m.off + 8) .. string.pack("<I4", tbl) .. fx.config:sub(m.off + 13)
      local t = fixture.trap(bad)
      assert.is_nil(t:msix())
      for off = m.table_off, m.table_off + m.n * 16 - 8, 8 do t:bar_read(m.table_bar, off, 8) end
   end)
end)
