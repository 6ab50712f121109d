-- QEMU 11.1 with its vfio-user client (-device vfio-user-pci), as lab/vfio-user-client
-- unpacks it and lab/qemu-vfio-user runs it, driven from a spec.
--
-- M.start{...} starts it under qtest (-accel qtest -qtest stdio): no guest code runs, and
-- the spec is the CPU, through qtest's line protocol on QEMU's stdin and stdout: port and
-- memory accesses, PCI config space through CF8/CFC (or ECAM once enabled), BAR sizing and
-- assignment as firmware does it, the virtual clock, and interrupt lines.
--
-- Interrupts under qtest:
-- * INTx: s:irq_intercept_in("ioapic") makes QEMU report the IOAPIC's input lines as
--   "IRQ raise N" / "IRQ lower N"; s:irq_level(n) is the last state seen, s:wait_irq(n)
--   waits for a raise. On q35, PCI INTA..D of the root bus reach IOAPIC inputs 16..23
--   without any firmware set-up (the ICH9 routes PIRQA..H there); which one depends on
--   the slot (seen: 03.0 INTA on 23, 04.0 INTA on 20), so s:wait_irq() takes any.
-- * MSI and MSI-X: a message is a memory write by the device (QEMU's msi_notify writes
--   the data at the address through the function's bus-master address space). Aimed at
--   the APIC (0xfee00000) it would only set a bit in a vCPU's APIC that qtest never
--   shows; aimed at guest RAM it is a plain write the spec reads back. So a spec programs
--   the capability with an address in RAM (s:msi_enable), sets bus mastering, and polls
--   that address (s:wait_mem), as QEMU's own virtio qtests do with MSI-X.
--
-- M.start_guest{...} boots a Linux kernel and initramfs under TCG with the device, its
-- console on the serial port in a log (for specs where a guest driver is the judge).
local unistd = require "posix.unistd"
local fcntl = require "posix.fcntl"
local psignal = require "posix.signal"
local poll = require "posix.poll"
local json = require "dkjson"
local child = require "support.child"

local M = {}

local now, sleep, slurp = child.now, child.sleep, child.slurp
local private_dir, remove_dir = child.private_dir, child.remove_dir

--- The wrapper that runs the unpacked QEMU (lab/qemu-vfio-user).
M.WRAPPER = child.ROOT .. "/lab/qemu-vfio-user"
--- The script that fetches and unpacks it (lab/vfio-user-client).
M.FETCH = child.ROOT .. "/lab/vfio-user-client"

---
-- M.available() -> root, version | nil, reason: whether lab/vfio-user-client has unpacked
-- QEMU's vfio-user client in the per-user cache. The reason says to run lab/setup.
function M.available()
   local p = io.popen(("'%s' --status 2>&1"):format(M.FETCH))
   local out = p:read("a")
   local ok = p:close()
   if not ok then
      return nil, "QEMU's vfio-user client (lab/vfio-user-client --status): " .. out:gsub("%s+$", "")
   end
   local version, root = out:match("^ready: qemu%-system%-x86 (%S+) in (%S+)")
   return root, version
end

-- "BB:DD.F" or "DD.F" -> bus, device, function.
local function parse_bdf(bdf)
   local b, d, f = bdf:match("^(%x%x):(%x%x)%.(%x)$")
   if not b then
      b = "00"
      d, f = bdf:match("^(%x%x?)%.(%x)$")
   end
   assert(d, ("bad PCI address %q (want BB:DD.F or DD.F)"):format(tostring(bdf)))
   return tonumber(b, 16), tonumber(d, 16), tonumber(f, 16)
end
M.parse_bdf = parse_bdf

-- The -device argument for a vfio-user-pci function: JSON, so the socket (a QAPI
-- SocketAddress) and any extra property pass as they are.
local function vfio_user_device(socket, addr, props)
   local dev = { driver = "vfio-user-pci", socket = { type = "unix", path = socket }, addr = addr }
   for k, v in pairs(props or {}) do dev[k] = v end
   return json.encode(dev)
end
M.vfio_user_device = vfio_user_device

-- Memory: private RAM, or a shared memfd (the vfio-user server then gets DMA_MAP with
-- fds and can reach guest RAM directly; without it QEMU serves DMA_READ/DMA_WRITE).
local function memory_args(args, size, shared)
   if shared then
      args[#args + 1] = "-object"
      args[#args + 1] = ("memory-backend-memfd,id=mem,size=%s,share=on"):format(size)
      args[#args + 1] = "-machine"
      args[#args + 1] = "memory-backend=mem"
   end
   args[#args + 1] = "-m"
   args[#args + 1] = size
end

local function device_args(args, opts)
   if opts.socket then
      args[#args + 1] = "-device"
      args[#args + 1] = vfio_user_device(opts.socket, opts.addr or "03.0", opts.props)
   end
   for _, d in ipairs(opts.devices or {}) do
      args[#args + 1] = "-device"
      args[#args + 1] = d
   end
   for _, a in ipairs(opts.args or {}) do args[#args + 1] = a end
end

local Session = {}
Session.__index = Session
Session.__name = "qemu_vfio_user.session"

function Session.__tostring(s)
   return ("qemu_vfio_user.session (pid %d%s)"):format(s.pid, s.exit and ", ended" or "")
end

-- Fork and exec the wrapper with stdin and stdout on pipes and stderr in dir/log; a
-- process group of its own so close() ends it and nothing it started.
local function spawn(args, dir)
   local to_r, to_w = assert(unistd.pipe())
   local from_r, from_w = assert(unistd.pipe())
   local log = dir .. "/log"
   local pid = assert(unistd.fork())
   if pid == 0 then
      unistd.setpid("p", 0, 0)
      local err = fcntl.open(log, fcntl.O_WRONLY | fcntl.O_CREAT | fcntl.O_TRUNC, tonumber("600", 8))
      unistd.dup2(to_r, 0)
      unistd.dup2(from_w, 1)
      unistd.dup2(err, 2)
      unistd.execp(M.WRAPPER, args)
      unistd._exit(127)
   end
   unistd.close(to_r)
   unistd.close(from_w)
   for _, fd in ipairs { to_w, from_r } do fcntl.fcntl(fd, fcntl.F_SETFD, fcntl.FD_CLOEXEC) end
   return pid, to_w, from_r, log
end

---
-- M.start(opts) -> session | nil, message: QEMU under qtest on a q35 machine.
-- opts.socket: a vfio-user-pci function served at that UNIX socket path, at PCI address
-- opts.addr ("03.0" by default) with extra properties opts.props (for example
-- { ["x-no-posted-writes"] = true }); opts.devices: more -device arguments
-- ("edu,addr=04.0"); opts.args: more QEMU arguments; opts.memory ("256M"); opts.shared:
-- guest RAM in a shared memfd; opts.timeout: seconds a qtest command may take (10).
-- Returns nil and QEMU's own messages when it does not start (a vfio-user-pci device
-- whose server does not answer fails its realize and QEMU exits).
function M.start(opts)
   opts = opts or {}
   local root, why = M.available()
   if not root then return nil, why end
   -- A write to a QEMU that died must fail with EPIPE, not end the spec's process.
   psignal.signal(psignal.SIGPIPE, psignal.SIG_IGN)
   -- exit-with-parent: a spec process that dies leaves no QEMU behind (its own group).
   local args = { "-machine", "q35", "-accel", "qtest", "-qtest", "stdio",
                  "-qtest-log", opts.qtest_log or "none", "-display", "none", "-nodefaults",
                  "-run-with", "exit-with-parent=on" }
   memory_args(args, opts.memory or "256M", opts.shared)
   device_args(args, opts)
   local dir = private_dir()
   local pid, to_w, from_r, log = spawn(args, dir)
   local s = setmetatable({ pid = pid, to = to_w, from = from_r, log_path = log, dir = dir,
                            buf = "", irqs = {}, irq_events = {}, args = args,
                            timeout = opts.timeout or 10, mmio_next = 0xe0000000,
                            io_next = 0xc000 }, Session)
   local t0 = now()
   local ok, err = pcall(Session.cmd, s, "endianness")
   if not ok then
      local status = s:close()
      local text = s:log():gsub("%s+$", "")
      return nil, ("QEMU did not start (exit status %s): %s"):format(tostring(status),
         text ~= "" and text or tostring(err))
   end
   s.start_seconds = now() - t0
   return s
end

--- The command line QEMU was started with (the wrapper's arguments).
function Session:command_line()
   return "lab/qemu-vfio-user " .. table.concat(self.args, " ")
end

--- QEMU's stderr so far.
function Session:log()
   return self.exit_log or slurp(self.log_path)
end

--- QEMU's exit status once it ended (nil while it runs; 128 + N after signal N).
function Session:status()
   self.exit = self.exit or child.reap(self.pid)
   return self.exit
end

---
-- s:close() -> exit status: ends QEMU (SIGTERM, then SIGKILL after 5 s), keeps its log
-- for s:log(), removes its private directory. Idempotent.
function Session:close()
   if self.closed then return self.exit end
   self.closed = true
   unistd.close(self.to)
   if not self:status() then
      self.exit = child.terminate(self.pid, function() return self:status() end, 5, 0.02)
   end
   unistd.close(self.from)
   self.exit_log = slurp(self.log_path)
   remove_dir(self.dir)
   return self.exit
end
Session.__close = Session.close
Session.__gc = Session.close

-- An error naming what failed, with QEMU's state and the end of its log.
function Session:fail(what)
   local st = self:status()
   error(("%s (QEMU %s)\n%s"):format(what, st and ("exited " .. st) or "running",
      (self.exit_log or slurp(self.log_path)):sub(-3000)), 3)
end

-- Record an asynchronous "IRQ raise N" / "IRQ lower N" line.
function Session:async_line(line)
   local how, n = line:match("^IRQ (%a+) (%d+)$")
   if not how then return false end
   n = tonumber(n)
   self.irqs[n] = how == "raise"
   self.irq_events[#self.irq_events + 1] = { line = n, raised = how == "raise", at = now() }
   return true
end

-- The next line from QEMU, or nil and "timeout" / "end of output" at the deadline.
function Session:read_line(deadline)
   while true do
      local nl = self.buf:find("\n", 1, true)
      if nl then
         local line = self.buf:sub(1, nl - 1)
         self.buf = self.buf:sub(nl + 1)
         return line
      end
      local left = deadline - now()
      if left <= 0 then return nil, "timeout" end
      local n = poll.rpoll(self.from, math.max(1, math.ceil(left * 1000)))
      if n and n > 0 then
         local data = unistd.read(self.from, 65536)
         if not data or data == "" then return nil, "end of output" end
         self.buf = self.buf .. data
      end
   end
end

---
-- s:cmd(line) -> what follows "OK" in QEMU's answer: one raw qtest command. Raises, with
-- QEMU's log, on FAIL, on a timeout and when QEMU has ended.
function Session:cmd(line)
   if self.closed then error("qtest session closed", 2) end
   local msg = line .. "\n"
   while #msg > 0 do
      local n, err = unistd.write(self.to, msg)
      if not n then self:fail(("qtest %q: write failed: %s"):format(line, err)) end
      msg = msg:sub(n + 1)
   end
   local deadline = now() + self.timeout
   while true do
      local got, why = self:read_line(deadline)
      if not got then self:fail(("qtest %q: %s"):format(line, why)) end
      if not self:async_line(got) then
         local rest = got:match("^OK ?(.*)$")
         if rest then return rest end
         self:fail(("qtest %q: %s"):format(line, got))
      end
   end
end

local function num(s) return math.tointeger(tonumber(s)) end

--- s:outb(port, v), s:outw, s:outl: I/O port writes.
function Session:outb(port, v) self:cmd(("outb 0x%x 0x%x"):format(port, v)) end
--- 16-bit port write.
function Session:outw(port, v) self:cmd(("outw 0x%x 0x%x"):format(port, v)) end
--- 32-bit port write.
function Session:outl(port, v) self:cmd(("outl 0x%x 0x%x"):format(port, v)) end
--- s:inb(port) -> v, s:inw, s:inl: I/O port reads.
function Session:inb(port) return num(self:cmd(("inb 0x%x"):format(port))) end
--- 16-bit port read.
function Session:inw(port) return num(self:cmd(("inw 0x%x"):format(port))) end
--- 32-bit port read.
function Session:inl(port) return num(self:cmd(("inl 0x%x"):format(port))) end

--- s:readb(addr) -> v, s:readw, s:readl, s:readq: guest-physical memory reads (RAM or MMIO).
function Session:readb(addr) return num(self:cmd(("readb 0x%x"):format(addr))) end
--- 16-bit memory read.
function Session:readw(addr) return num(self:cmd(("readw 0x%x"):format(addr))) end
--- 32-bit memory read.
function Session:readl(addr) return num(self:cmd(("readl 0x%x"):format(addr))) end
--- 64-bit memory read (a Lua integer; the top bit makes it negative).
function Session:readq(addr)
   return num(self:cmd(("readq 0x%x"):format(addr)))
end
--- s:writeb(addr, v), s:writew, s:writel, s:writeq: guest-physical memory writes.
function Session:writeb(addr, v) self:cmd(("writeb 0x%x 0x%x"):format(addr, v)) end
--- 16-bit memory write.
function Session:writew(addr, v) self:cmd(("writew 0x%x 0x%x"):format(addr, v)) end
--- 32-bit memory write.
function Session:writel(addr, v) self:cmd(("writel 0x%x 0x%x"):format(addr, v)) end
--- 64-bit memory write.
function Session:writeq(addr, v) self:cmd(("writeq 0x%x 0x%x"):format(addr, v)) end

---
-- s:memread(addr, len) -> bytes (a Lua string): qtest's `read`, hex on the wire; one
-- access of len bytes (MMIO then sees accesses the size QEMU splits it into).
function Session:memread(addr, len)
   local hex = self:cmd(("read 0x%x 0x%x"):format(addr, len)):match("^0x(%x*)$")
   return (hex:gsub("%x%x", function(h) return string.char(tonumber(h, 16)) end))
end

--- s:memwrite(addr, bytes): qtest's `write` of a Lua string, hex on the wire.
function Session:memwrite(addr, bytes)
   local hex = bytes:gsub(".", function(c) return ("%02x"):format(c:byte()) end)
   self:cmd(("write 0x%x 0x%x 0x%s"):format(addr, #bytes, hex))
end

--- s:memset(addr, len, byte): fill guest memory.
function Session:memset(addr, len, byte)
   self:cmd(("memset 0x%x 0x%x 0x%x"):format(addr, len, byte or 0))
end

---
-- s:clock_step(ns) -> the virtual clock in ns: advance QEMU's virtual clock by ns (to the
-- next timer deadline when nil). Under qtest time moves only this way.
function Session:clock_step(ns)
   return num(self:cmd(ns and ("clock_step %d"):format(ns) or "clock_step"))
end

-- Config space -------------------------------------------------------------------------

local CF8, CFC = 0xcf8, 0xcfc

---
-- s:enable_ecam(base): map q35's PCIe MMCONFIG (256 MiB, buses 0..255) at base
-- (0xb0000000 by default), as firmware does through the host bridge's PCIEXBAR; config
-- accesses at offsets from 256 then go through it.
function Session:enable_ecam(base)
   base = base or 0xb0000000
   self:cfg_write("00.0", 0x64, 4, 0)
   self:cfg_write("00.0", 0x60, 4, base | 1)
   self.ecam = base
end

local function cf8_address(b, d, f, off)
   return 0x80000000 | b << 16 | d << 11 | f << 8 | (off & 0xfc)
end

local port_read = { [1] = Session.inb, [2] = Session.inw, [4] = Session.inl }
local port_write = { [1] = Session.outb, [2] = Session.outw, [4] = Session.outl }
local mem_read = { [1] = Session.readb, [2] = Session.readw, [4] = Session.readl }
local mem_write = { [1] = Session.writeb, [2] = Session.writew, [4] = Session.writel }

---
-- s:cfg_read(bdf, off, size) -> v: a config space read of size 1, 2 or 4 bytes of the
-- function at bdf ("BB:DD.F" or "DD.F"), through CF8/CFC (ECAM for offsets past 255
-- once s:enable_ecam() ran).
function Session:cfg_read(bdf, off, size)
   size = size or 4
   assert(port_read[size] and off % size == 0, "config read: size 1, 2 or 4, aligned")
   local b, d, f = parse_bdf(bdf)
   if off >= 256 then
      assert(self.ecam and off < 4096, "config offsets past 255 need s:enable_ecam()")
      return mem_read[size](self, self.ecam + (b << 20 | d << 15 | f << 12 | off))
   end
   self:outl(CF8, cf8_address(b, d, f, off))
   return port_read[size](self, CFC + (off & 3))
end

--- s:cfg_write(bdf, off, size, v): a config space write (see cfg_read).
function Session:cfg_write(bdf, off, size, v)
   assert(port_write[size] and off % size == 0, "config write: size 1, 2 or 4, aligned")
   local b, d, f = parse_bdf(bdf)
   if off >= 256 then
      assert(self.ecam and off < 4096, "config offsets past 255 need s:enable_ecam()")
      return mem_write[size](self, self.ecam + (b << 20 | d << 15 | f << 12 | off), v)
   end
   self:outl(CF8, cf8_address(b, d, f, off))
   port_write[size](self, CFC + (off & 3), v)
end

---
-- s:find_cap(bdf, id) -> offset | nil: the first standard capability with that ID (0x05
-- MSI, 0x10 PCIe, 0x11 MSI-X) in the function's list.
function Session:find_cap(bdf, id)
   if self:cfg_read(bdf, 0x06, 2) & 0x10 == 0 then return nil end
   local off, seen = self:cfg_read(bdf, 0x34, 1) & 0xfc, 0
   while off ~= 0 and seen < 48 do
      if self:cfg_read(bdf, off, 1) == id then return off end
      off = self:cfg_read(bdf, off + 1, 1) & 0xfc
      seen = seen + 1
   end
   return nil
end

local function align_up(v, a) return (v + a - 1) & ~(a - 1) end

---
-- s:assign_bars(bdf, opts) -> bars: size each BAR as firmware does (write all ones, read
-- back, restore), give it an address (memory BARs from 0xe0000000, 64-bit ones below 4 GiB
-- too; I/O BARs from 0xc000), then enable the decoding the BARs need in COMMAND (and bus
-- mastering when opts.master). bars[i] = { index, kind = "mem"|"io", size, addr, is64,
-- prefetch } for each implemented BAR i (0..5).
function Session:assign_bars(bdf, opts)
   opts = opts or {}
   local cmd = self:cfg_read(bdf, 0x04, 2)
   self:cfg_write(bdf, 0x04, 2, cmd & ~3)        -- no decoding while sizing
   local bars, i, need = {}, 0, 0
   while i < 6 do
      local off = 0x10 + 4 * i
      local orig = self:cfg_read(bdf, off, 4)
      self:cfg_write(bdf, off, 4, 0xffffffff)
      local mask = self:cfg_read(bdf, off, 4)
      self:cfg_write(bdf, off, 4, orig)
      local bar = { index = i }
      if mask ~= 0 then
         if mask & 1 == 1 then
            bar.kind, bar.size = "io", ((~(mask & ~3)) & 0xffff) + 1
            bar.addr = align_up(self.io_next, bar.size)
            self.io_next = bar.addr + bar.size
            self:cfg_write(bdf, off, 4, bar.addr | 1)
            need = need | 1
         else
            bar.kind, bar.is64, bar.prefetch = "mem", mask & 6 == 4, mask & 8 == 8
            local size = ((~(mask & ~0xf)) & 0xffffffff) + 1
            if bar.is64 then
               local hi_orig = self:cfg_read(bdf, off + 4, 4)
               self:cfg_write(bdf, off + 4, 4, 0xffffffff)
               local hi = self:cfg_read(bdf, off + 4, 4)
               self:cfg_write(bdf, off + 4, 4, hi_orig)
               local full = (hi << 32 | (mask & ~0xf))
               size = (~full) + 1
            end
            bar.size = size
            bar.addr = align_up(self.mmio_next, size)
            assert(bar.addr + size <= 0xfec00000,
               ("BAR %d of %s (%d bytes) does not fit below 4 GiB"):format(i, bdf, size))
            self.mmio_next = bar.addr + size
            self:cfg_write(bdf, off, 4, bar.addr & 0xffffffff)
            if bar.is64 then self:cfg_write(bdf, off + 4, 4, 0) end
            need = need | 2
         end
         bars[i] = bar
      end
      i = i + ((bar.is64) and 2 or 1)
   end
   self:cfg_write(bdf, 0x04, 2, (cmd & ~7) | need | (opts.master and 4 or 0))
   return bars
end

-- Interrupts ------------------------------------------------------------------------------

---
-- s:irq_intercept_in(path): have QEMU report the input lines of the device at the QOM
-- path ("ioapic" on q35) as asynchronous lines, read by s:irq_level and s:wait_irq.
function Session:irq_intercept_in(path)
   self:cmd("irq_intercept_in " .. (path or "ioapic"))
end

---
-- s:irq_level(n) -> true | false | nil: the last state reported for intercepted line n
-- (nil when it never changed). Reads what QEMU has written so far without waiting.
function Session:irq_level(n)
   while true do
      local line = self:read_line(now())
      if not line then break end
      if not self:async_line(line) then self:fail("unexpected qtest output: " .. line) end
   end
   return self.irqs[n]
end

---
-- s:wait_irq(n, seconds) -> n | nil, message: wait (3 s by default) until intercepted
-- line n is up (at once when it already is); with n nil, until any line is, returning the
-- lowest such line. QEMU's main loop runs between commands, so an interrupt a vfio-user
-- server signals through its eventfd arrives here without any clock_step.
function Session:wait_irq(n, seconds)
   local deadline = now() + (seconds or 3)
   while true do
      if n and self.irqs[n] then return n end
      if not n then
         local up
         for line, raised in pairs(self.irqs) do
            if raised and (not up or line < up) then up = line end
         end
         if up then return up end
      end
      local line, why = self:read_line(deadline)
      if not line then return nil, ("IRQ %s not raised (%s)"):format(n or "(any)", why) end
      if not self:async_line(line) then self:fail("unexpected qtest output: " .. line) end
   end
end

--- s:irq_history() -> the raise and lower events seen so far ({ line, raised, at }).
function Session:irq_history()
   self:irq_level(-1)
   return self.irq_events
end

---
-- s:msi_enable(bdf, addr, data) -> cap offset | nil: program the function's MSI
-- capability with one vector writing data (16 bits) at addr, a guest RAM address, and
-- enable it; nil when it has no MSI capability. Bus mastering must be on for the write to
-- land (assign_bars{ master = true }).
function Session:msi_enable(bdf, addr, data)
   local cap = self:find_cap(bdf, 0x05)
   if not cap then return nil end
   local ctl = self:cfg_read(bdf, cap + 2, 2)
   self:cfg_write(bdf, cap + 4, 4, addr & 0xffffffff)
   if ctl & 0x80 ~= 0 then             -- 64-bit address
      self:cfg_write(bdf, cap + 8, 4, addr >> 32)
      self:cfg_write(bdf, cap + 12, 2, data)
   else
      self:cfg_write(bdf, cap + 8, 2, data)
   end
   self:cfg_write(bdf, cap + 2, 2, (ctl & ~0x70) | 1)   -- one vector, enabled
   return cap
end

---
-- s:wait_mem(addr, want, seconds) -> true | nil, last value: poll the 32-bit word at addr
-- (every 10 ms, 3 s by default) until it reads want; for an MSI aimed at RAM.
function Session:wait_mem(addr, want, seconds)
   local deadline = now() + (seconds or 3)
   while true do
      local v = self:readl(addr)
      if v == want then return true end
      if now() > deadline then return nil, v end
      sleep(0.01)
   end
end

-- A Linux guest --------------------------------------------------------------------------

---
-- M.start_guest(opts) -> child (spec/support/child.lua) | nil, message: boot
-- opts.kernel with opts.initrd under TCG on q35 with the vfio-user-pci function at
-- opts.socket (opts.addr, opts.props as for M.start; opts.devices, opts.args too), guest
-- RAM (opts.memory, "256M") shared through a memfd unless opts.shared == false, the
-- console on ttyS0 in the child's output, opts.append added to the kernel command line,
-- opts.accel "kvm" (with -cpu host; default "tcg" with -cpu max) where /dev/kvm is usable.
-- child.output() is the console so far, child.stop() ends QEMU; child.wait_for from
-- spec/support/child.lua waits for a line. opts.debugcon (no initrd): a multiboot guest
-- such as examples/guest, its port-0xe9 report read by child.debug_output(), its exit
-- code set through isa-debug-exit.
function M.start_guest(opts)
   local root, why = M.available()
   if not root then return nil, why end
   assert(opts.kernel and (opts.initrd or opts.debugcon),
          "start_guest needs a kernel, and an initrd or debugcon (a multiboot guest)")
   local accel = opts.accel or "tcg"
   local function args_in(dir)
      local args = { "-machine", "q35", "-accel", accel, "-cpu", accel == "kvm" and "host" or "max",
                     "-smp", tostring(opts.cpus or 1),
                     "-display", "none", "-nodefaults", "-no-reboot", "-serial", "stdio",
                     "-run-with", "exit-with-parent=on", "-kernel", opts.kernel,
                     "-append", (opts.initrd and "console=ttyS0 panic=-1 " or "") .. (opts.append or "") }
      if opts.initrd then
         args[#args + 1] = "-initrd"
         args[#args + 1] = opts.initrd
      end
      if opts.debugcon then
         -- examples/guest: its report on port 0xe9, its verdict by isa-debug-exit
         for _, a in ipairs { "-chardev", "file,id=dbg,path=" .. dir .. "/debug",
                              "-device", "isa-debugcon,iobase=0xe9,chardev=dbg",
                              "-device", "isa-debug-exit,iobase=0xf4,iosize=1" } do
            args[#args + 1] = a
         end
      end
      memory_args(args, opts.memory or "256M", opts.shared ~= false)
      device_args(args, opts)
      return args
   end
   local c = require("support.child").spawn(M.WRAPPER, args_in)
   c.name = "qemu-vfio-user (guest)"
   function c.debug_output() return slurp(c.dir .. "/debug") or "" end
   return c
end

return M
