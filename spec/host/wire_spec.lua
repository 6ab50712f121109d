-- The guest-access seam (csrc/wire): a trap's C range answers what the trap core answers
-- and passes an access to a Lua quirk window on to the run's caller, which hands it to
-- Lua; a stop carries its reason. Without KVM through tests/wire_host; on the host's
-- /dev/kvm (#kvm) with a guest.
local fixture = require "support.fixture"
local kvmhost = require "support.kvm"
local asm = require "support.asm"

describe("the guest-access seam without KVM (tests/wire_host)", function()
   it("answers in C, passes a handler window on untouched, stops with the BAR reason", function()
      local prog = (os.getenv("LUAVFIO_BUILD") or "build") .. "/tests/wire_host"
      local p = assert(io.popen(prog .. " 2>&1"))
      local out = p:read("a")
      local ok, how, code = p:close()
      assert.is_true(ok, ("wire_host ended by %s %s: %s"):format(how, code, out))
      assert.matches("^ok: the seam answers in C, passes handler windows on, stops with a reason", out)
   end)
end)

describe("a trap's C range over a Lua quirk window #kvm", function()
   local BAR0 = 0xc0000000

   it("answers the rest of the page in C and passes the window's accesses to Lua", function()
      local vm, kvm = kvmhost.vm { ram = 0x20000 }
      if not vm then pending(kvm) return end
      local t, be = fixture.trap("edu")
      t:cfg_write(0x10, 4, BAR0)
      t:cfg_write(0x04, 2, 0x2)                                  -- memory decode on
      t:events()
      local calls = {}
      assert.is_true(t:add_window(0, 0x80, 0x20, {
         read = function(off, size) calls[#calls + 1] = { "r", off, size }; return 0xabcd0000 | off end,
         write = function(off, size, v) calls[#calls + 1] = { "w", off, size, v } end,
      }))
      local device = t:bar_read(0, 0x10, 4)
      assert(vm:add_range("mmio", BAR0, 0x1000, t))              -- the whole page, window too
      assert(vm:add_exit_port(0xf4))
      vm:write(0x1000, assert(asm.assemble(([[
.code32
         movl 0x%x, %%ebx
         movl 0x%x, %%ecx
         movl %%ecx, 0x%x
         mov $7, %%al
         out %%al, $0xf4
      ]]):format(BAR0 + 0x10, BAR0 + 0x84, BAR0 + 0x88), 0x1000)))
      local cpu = assert(vm:vcpu(0))
      assert(cpu:setup_flat32(0x1000, 0, 0))
      local reads = be:stats().region_reads
      local exits = {}
      local e = assert(cpu:run(function(x)
         exits[#exits + 1] = { x.reason, x.addr, x.size, x.write }
         -- what the board's handler does: the trap makes the access, Lua handlers and all
         if x.write then
            local _, hit = t:mmio_write(x.addr, x.size, x.value)
            assert.is_true(hit)
            return nil
         end
         local v, hit = t:mmio_read(x.addr, x.size)
         assert.is_true(hit)
         return v
      end, { timeout = 10 }))
      assert.are.equal("stop", e.reason)
      assert.are.equal("exit_port", e.stop)
      -- the read at +0x10 never left C; the window's read and write reached Lua, once each
      assert.are.same({ { "mmio", BAR0 + 0x84, 4, false }, { "mmio", BAR0 + 0x88, 4, true } }, exits)
      assert.are.same({ { "r", 4, 4 }, { "w", 8, 4, 0xabcd0004 } }, calls)
      local regs = cpu:get_regs()
      assert.are.equal(device, regs.rbx & 0xffffffff)
      assert.are.equal(0xabcd0004, regs.rcx & 0xffffffff)
      assert.are.equal(reads + 1, be:stats().region_reads)        -- only the C read
      vm:close(); kvm:close(); t:close()
   end)
end)
