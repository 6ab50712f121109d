-- The harness the vfio-user specs drive QEMU 11.1's client with (spec/support/
-- qemu_vfio_user.lua), checked against QEMU's own emulated devices under qtest: no
-- vfio-user server is involved, so what passes here is the harness, and the protocol
-- specs can trust it. Pending when lab/setup has not unpacked that QEMU
-- (lab/vfio-user-client).
local qvu = require "support.qemu_vfio_user"
local child = require "support.child"

local EDU, TESTDEV, E1000E = "04.0", "05.0", "06.0"

local function cache_dir()
   local p = io.popen(". lab/cache.sh && echo \"$cache\"")
   local dir = p:read("l")
   p:close()
   return dir
end

describe("QEMU 11.1's vfio-user client, driven by spec/support/qemu_vfio_user", function()
   local root, version = qvu.available()
   if not root then
      pending(version)
      return
   end

   it("is a QEMU of 10.1 or later that has vfio-user-pci", function()
      local p = io.popen(("'%s' -version 2>&1; '%s' -device help 2>&1"):format(qvu.WRAPPER, qvu.WRAPPER))
      local out = p:read("a")
      p:close()
      local major, minor = out:match("QEMU emulator version (%d+)%.(%d+)")
      assert.truthy(major, out)
      assert.is_true(tonumber(major) * 100 + tonumber(minor) >= 1001, out:match("[^\n]*"))
      assert.matches('name "vfio%-user%-pci", bus PCI', out)
      assert.matches("^1:1%d", version)
   end)

   describe("under qtest with emulated devices", function()
      local s
      lazy_setup(function()
         s = assert(qvu.start { devices = { "edu,addr=" .. EDU, "pci-testdev,addr=" .. TESTDEV,
                                             "e1000e,addr=" .. E1000E } })
      end)
      lazy_teardown(function() if s then s:close() end end)

      it("reads vendor and device IDs through CF8/CFC, and all ones from an empty slot", function()
         assert.are.equal(0x11e81234, s:cfg_read(EDU, 0, 4))
         assert.are.equal(0x00051b36, s:cfg_read(TESTDEV, 0, 4))
         assert.are.equal(0x10d38086, s:cfg_read(E1000E, 0, 4))
         assert.are.equal(0xffffffff, s:cfg_read("07.0", 0, 4))
         assert.are.equal(0x8086, s:cfg_read("00:00.0", 0, 2))      -- the q35 host bridge
      end)

      it("reads bytes and words at every offset of a dword alike", function()
         local dword = s:cfg_read(EDU, 0x08, 4)                     -- revision and class
         for i = 0, 3 do assert.are.equal((dword >> (8 * i)) & 0xff, s:cfg_read(EDU, 0x08 + i, 1)) end
         assert.are.equal(dword >> 16, s:cfg_read(EDU, 0x0a, 2))
         assert.are.equal(0x00ff, s:cfg_read(EDU, 0x0a, 2))          -- edu's class: others
      end)

      it("writes config space: the interrupt line register keeps a byte", function()
         s:cfg_write(EDU, 0x3c, 1, 0x0b)
         assert.are.equal(0x0b, s:cfg_read(EDU, 0x3c, 1))
         assert.are.equal(1, s:cfg_read(EDU, 0x3d, 1))              -- INTA, read-only
      end)

      it("walks the capability list", function()
         local msi = s:find_cap(EDU, 0x05)
         assert.truthy(msi)
         assert.are.equal(5, s:cfg_read(EDU, msi, 1))
         assert.truthy(s:find_cap(E1000E, 0x10))                     -- PCI Express
         assert.is_nil(s:find_cap(TESTDEV, 0x05))
      end)

      it("reaches extended config space through ECAM once enabled", function()
         assert.has_error(function() s:cfg_read(E1000E, 0x100, 4) end)
         s:enable_ecam()
         assert.are.equal(0x10d38086, s:readl(0xb0000000 + (6 << 15)))
         assert.are.equal(1, s:cfg_read(E1000E, 0x100, 4) & 0xffff)  -- AER, e1000e's first
      end)

      local bars
      it("sizes and assigns BARs as firmware does and enables decoding", function()
         bars = s:assign_bars(EDU, { master = true })
         for i = 1, 5 do assert.is_nil(bars[i], "edu has BAR0 only") end
         assert.are.equal("mem", bars[0].kind)
         assert.are.equal(1 << 20, bars[0].size)
         assert.is_false(bars[0].is64)
         assert.are.equal(0, bars[0].addr % bars[0].size)
         assert.are.equal(bars[0].addr, s:cfg_read(EDU, 0x10, 4) & ~0xf)
         assert.are.equal(6, s:cfg_read(EDU, 0x04, 2) & 7)          -- memory + bus master

         local t = s:assign_bars(TESTDEV)
         assert.are.equal("mem", t[0].kind)
         assert.are.equal(4096, t[0].size)
         assert.are.equal("io", t[1].kind)
         assert.are.equal(256, t[1].size)
         assert.are.equal(t[1].addr | 1, s:cfg_read(TESTDEV, 0x14, 4))
         assert.are.equal(3, s:cfg_read(TESTDEV, 0x04, 2) & 7)      -- I/O + memory
         assert.is_true(t[0].addr >= bars[0].addr + bars[0].size)   -- no overlap

         local e = s:assign_bars(E1000E)
         assert.are.equal(128 * 1024, e[0].size)
         assert.are.equal("io", e[2].kind)
      end)

      it("does MMIO through an assigned BAR", function()
         local base = assert(bars, "BARs assigned above")[0].addr
         assert.are.equal(0x010000ed, s:readl(base))                -- edu's identification
         s:writel(base + 4, 0x12345678)                             -- liveness: reads inverted
         assert.are.equal(0xedcba987, s:readl(base + 4))
      end)

      it("reads and writes guest RAM by byte, word, quadword and hex block", function()
         s:memwrite(0x3000, "vfio-user\0")
         assert.are.equal("vfio-user\0", s:memread(0x3000, 10))
         assert.are.equal(0x66, s:readb(0x3001))
         s:writeq(0x3100, 0x8877665544332211)
         assert.are.equal(0x8877665544332211, s:readq(0x3100))
         assert.are.equal(0x44332211, s:readl(0x3100))
         assert.are.equal(0x2211, s:readw(0x3100))
         s:memset(0x3100, 8, 0xab)
         assert.are.equal(("\xab"):rep(8), s:memread(0x3100, 8))
         s:outb(0x80, 0x55)                                          -- a port write is accepted
      end)

      it("sees an INTx raised and lowered at the IOAPIC", function()
         local base = assert(bars, "BARs assigned above")[0].addr
         s:irq_intercept_in("ioapic")
         s:writel(base + 0x60, 1)                                   -- edu: raise interrupt
         local line = assert(s:wait_irq(nil, 3))
         assert.is_true(line >= 16 and line <= 23, "PCI INTx lands on IOAPIC 16..23, got " .. line)
         assert.is_true(s:irq_level(line))
         s:writel(base + 0x64, 1)                                   -- acknowledge: lowered
         assert.is_false(s:irq_level(line))
      end)

      it("sees an MSI as a write of its data at its address in RAM", function()
         local base = assert(bars, "BARs assigned above")[0].addr
         s:writel(0x10000, 0)
         assert.truthy(s:msi_enable(EDU, 0x10000, 0x4242))
         s:writel(base + 0x60, 2)
         assert.is_true(s:wait_mem(0x10000, 0x4242, 3))
      end)

      it("steps the virtual clock", function()
         local t1 = s:clock_step(1000)
         local t2 = s:clock_step(1000000)
         assert.are.equal(1000000, t2 - t1)
      end)

      it("raises, naming the command and with QEMU's log, when qtest refuses a command", function()
         local ok, err = pcall(s.cmd, s, "no_such_command")
         assert.is_false(ok)
         assert.matches("no_such_command", err)
      end)
   end)

   describe("with a vfio-user-pci device", function()
      local dir
      before_each(function()
         dir = child.private_dir()
      end)
      after_each(function()
         os.remove(dir .. "/peer.sock")
         os.remove(dir)
      end)

      it("returns QEMU's error when nothing listens at the socket", function()
         local s, err = qvu.start { socket = dir .. "/peer.sock", addr = "03.0" }
         assert.is_nil(s)
         local quoted = dir:gsub("%p", "%%%0") .. "/peer%.sock"
         assert.matches("Failed to connect to '" .. quoted .. "': No such file or directory", err)
         assert.matches('"driver":"vfio%-user%-pci"', err)
      end)

      it("passes device properties: a server that never answers times out after x-msg-timeout", function()
         local sock = require "posix.sys.socket"
         local unistd = require "posix.unistd"
         local fd = assert(sock.socket(sock.AF_UNIX, sock.SOCK_STREAM, 0))
         assert(sock.bind(fd, { family = sock.AF_UNIX, path = dir .. "/peer.sock" }))
         assert(sock.listen(fd, 1))
         local s, err = qvu.start { socket = dir .. "/peer.sock", props = { ["x-msg-timeout"] = 200 } }
         unistd.close(fd)
         assert.is_nil(s)
         assert.matches("timed out waiting for reply", err)
      end)
   end)

   describe("booting Linux under TCG (start_guest) #noasan", function()   -- QEMU's code, not ours
      it("boots the lab kernel and shows its console", function()
         local kdir = cache_dir() .. "/lab/kernel"
         local f = io.open(kdir .. "/version")
         if not f then pending("no lab kernel in the cache (lab/setup)") return end
         local kver = f:read("l")
         f:close()
         -- An empty initramfs: the kernel boots, finds no root and panics, which ends QEMU.
         local initrd = os.tmpname()
         local g = assert(qvu.start_guest { kernel = kdir .. "/boot/vmlinuz-" .. kver, initrd = initrd,
                                            append = "quiet loglevel=3", memory = "128M" })
         local ok, err = pcall(child.wait_for, g, "the kernel's panic on the console", function()
            return g.output():match("Kernel panic") or g.status()
         end, 120)
         local out = g.output()
         g.stop()
         os.remove(initrd)
         assert(ok, err)
         assert.matches("Kernel panic", out)
         assert.matches("VFS", out)
      end)
   end)
end)
