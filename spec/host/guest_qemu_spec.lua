-- examples/guest under QEMU TCG with an emulated edu: the guest program itself is right
-- (PCI scan, BARs, MMIO, MSI, INTx, DMA) before any VMM of ours runs it.
local GUEST = "build/guest/guest.elf"

local function have(cmd)
   return os.execute("command -v " .. cmd .. " >/dev/null 2>&1")
end

-- Boot the guest; returns its debug-console output and QEMU's exit status.
local function boot(extra)
   local cmd = "timeout 120 qemu-system-x86_64 -M q35 -accel tcg -m 64 -display none"
      .. " -serial none -monitor none -no-reboot -debugcon stdio"
      .. " -device isa-debug-exit,iobase=0xf4,iosize=4 -kernel " .. GUEST .. " " .. extra
   local f = assert(io.popen(cmd, "r"))
   local out = f:read("a")
   local _, _, code = f:close()
   return out, code
end

local function results(out)
   local t = {}
   for name, verdict in out:gmatch("TEST (%S+) (%u+)") do t[name] = verdict end
   return t
end

describe("examples/guest under QEMU", function()
   if not have("qemu-system-x86_64") then
      pending("qemu-system-x86_64 not installed")
      return
   end

   it("was built", function()
      assert.truthy(io.open(GUEST, "rb"), "build the project first: make")
   end)

   it("finds edu, uses every feature and reports PASS", function()
      local out, code = boot("-device edu")
      assert.matches("multiboot ok", out)
      assert.matches("FOUND %x%x:%x%x%.%d 1234:11e8", out)
      assert.matches("BAR0 mem32 0x%x+ size 0x00100000", out)
      local r = results(out)
      for _, name in ipairs { "id", "liveness", "factorial", "msi", "intx", "dma", "spurious" } do
         assert.are.equal("PASS", r[name], name .. " in:\n" .. out)
      end
      assert.matches("TEST id PASS 0x010000ed", out)
      assert.matches("TEST liveness PASS 0xedcba987", out)
      assert.matches("10!=3628800", out)
      for _, b in ipairs { "cfg_read", "bar_read", "msi_roundtrip" } do
         assert.matches("BENCH " .. b .. " %d+", out)
      end
      assert.matches("RESULT PASS\n$", out)
      assert.are.equal(1, code) -- isa-debug-exit: (0 << 1) | 1
   end)

   it("finds edu behind a PCIe root port (scans secondary buses)", function()
      local out, code = boot("-device pcie-root-port,id=rp,chassis=1 -device edu,bus=rp")
      assert.matches("FOUND 01:00%.0 1234:11e8", out)
      assert.matches("RESULT PASS", out)
      assert.are.equal(1, code)
   end)

   it("configures through ECAM when given its base (q35 MMCONFIG)", function()
      local out, code = boot("-device pcie-root-port,id=rp,chassis=1 -device edu,bus=rp -append ecam=b0000000")
      assert.matches("config via ECAM at 0xb0000000\n", out)
      assert.matches("FOUND 01:00%.0 1234:11e8", out)
      for _, name in ipairs { "id", "msi", "intx", "dma" } do
         assert.matches("TEST " .. name .. " PASS", out)
      end
      assert.matches("RESULT PASS", out)
      assert.are.equal(1, code)
   end)

   it("reports a missing device cleanly", function()
      local out, code = boot("-device edu -append dev=dead:beef")
      assert.matches("cmdline .*dev=dead:beef", out)
      assert.matches("device dead:beef not found\nRESULT NODEV\n$", out)
      assert.are.equal(5, code) -- (2 << 1) | 1
   end)

   it("looks for another device given by dev= and runs no edu tests on it", function()
      -- pci-testdev has no edu registers: asking for it must not run the edu tests.
      local out, code = boot("-device pci-testdev -append dev=1b36:0005")
      assert.matches("FOUND %x%x:%x%x%.%d 1b36:0005", out)
      assert.is_nil(out:match("TEST id"))
      assert.matches("RESULT PASS", out)
      assert.are.equal(1, code)
   end)
end)
