-- Several vCPUs, a thread each (vm:run_vcpus, csrc/kvm/smp.c), on the host's /dev/kvm:
-- every vCPU's exits that C leaves reach the one Lua handler, one at a time and tagged
-- with the vCPU; C-handled accesses from all threads land in one device model intact;
-- a read is answered per vCPU; the first other exit ends the run with every thread
-- joined; a handler's error or close ends it cleanly. No irqchip here: without one every
-- vCPU starts runnable (with one, KVM holds the others until the BSP's INIT/SIPI, which
-- the Linux guest in the lab exercises).
local kvmhost = require "support.kvm"

-- Real-mode code: 200 times `mov al, TAG; out 0xe9, al` (the debug console, C), then
-- `in al, 0x10` (a read for Lua), `out 0x11, al` (its value back to Lua), then `jmp $`.
local function program(tag)
   local body = string.char(0xB9, 0xC8, 0x00) -- mov cx, 200
      .. string.char(0xB0, tag, 0xE6, 0xE9)     -- loop: mov al, tag; out 0xe9, al
      .. string.char(0xE2, 0xFA)                -- loop (cx) back 6 bytes
      .. string.char(0xE4, 0x10)                -- in al, 0x10
      .. string.char(0xE6, 0x11)                -- out 0x11, al
   return body .. string.char(0xEB, 0xFE)     -- jmp $
end

local function setup(n)
   local vm, kvm = kvmhost.vm()
   if not vm or not vm:add_ram(0, 0x20000) then return nil end
   assert(vm:add_debugcon(0xe9))
   local cpus = {}
   for i = 0, n - 1 do
      vm:write(0x1000 * (i + 1), program(0x41 + i))
      cpus[i + 1] = assert(vm:vcpu(i))
      assert(cpus[i + 1]:setup_real(0, 0x1000 * (i + 1)))
   end
   return vm, cpus, kvm
end

describe("vm:run_vcpus #kvm", function()
   it("serves every vCPU's Lua exits one at a time, C exits in their threads", function()
      local vm, cpus, kvm = setup(3)
      if not vm then pending(kvmhost.REASON) return end
      local busy, back, n = false, {}, 0
      local e = assert(vm:run_vcpus(cpus, function(x)
         assert.is_false(busy)                 -- never two handlers at once
         busy = true
         local r
         if x.port == 0x10 and not x.write then r = 0x60 + x.vcpu  -- each its own answer
         elseif x.port == 0x11 then back[x.vcpu], n = x.value, n + 1 end
         busy = false
         if n == 3 then return false end       -- every vCPU reported: end the run
         return r
      end, { timeout = 120 }))
      assert.are.equal("io", e.reason)
      assert.are.equal(0x11, e.port)
      assert.are.same({ [0] = 0x60, [1] = 0x61, [2] = 0x62 }, back)
      -- the debug console got each vCPU's 200 bytes whole, from three threads
      local out = vm:debug_output()
      for _, tag in ipairs { "A", "B", "C" } do
         local _, k = out:gsub(tag, "")
         assert.are.equal(200, k, tag)
      end
      assert.are.equal(600, #out)
      -- a second run starts the threads again; spinning vCPUs end it on its timeout
      local t = assert(vm:run_vcpus(cpus, function() end, { timeout = 0.5 }))
      assert.are.equal("timeout", t.reason)
      vm:close(); kvm:close()
   end)

   it("checks its arguments", function()
      local vm, cpus, kvm = setup(2)
      if not vm then pending(kvmhost.REASON) return end
      assert.has_error(function() vm:run_vcpus({}) end)
      assert.has_error(function() vm:run_vcpus({ cpus[1], cpus[1] }) end)
      local other = assert(kvm:create_vm())
      assert.has_error(function() other:run_vcpus(cpus) end)
      other:close()
      vm:close(); kvm:close()
   end)

   it("ends cleanly when a handler raises or closes the VM", function()
      local vm, cpus, kvm = setup(2)
      if not vm then pending(kvmhost.REASON) return end
      assert.has_error(function()
         vm:run_vcpus(cpus, function(x) if x.port == 0x10 then error("boom") end end, { timeout = 10 })
      end, nil)
      -- the threads are gone and the vCPUs usable again. Whichever exit comes first (a
      -- vCPU whose `in` the failed run left pending goes on to its `out 0x11`), the
      -- handler closes the VM on it.
      local e = assert(vm:run_vcpus(cpus, function() vm:close() end, { timeout = 10 }))
      assert.is_true(e.closed)
      assert.has_error(function() cpus[1]:run() end)
      kvm:close()
   end)
end)
