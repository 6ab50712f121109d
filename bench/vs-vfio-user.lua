-- bench/vs-vfio-user.lua: the same device given to the same QEMU 11.1 guest two ways, in one
-- run, measured by the guest: by the kernel (-device vfio-pci) and by luavfio's server
-- (-device vfio-user-pci against bin/vfio-user-serve BDF, through the trap core). Ratios
-- are the server's / the kernel path's (the issue's target for nvme I/O: at most 1.1).
--
--   lab/run -- lua5.4 bench/vs-vfio-user.lua [--rounds N]          (the lab; KVM there)
--   lua5.4 bench/vs-vfio-user.lua --host [--rounds N]              (the host, TCG)
--   --only serial|edu|nvme: that comparison alone
--
-- Lab mode, rounds interleaved (kernel, server, kernel, server, ...):
-- * edu under examples/guest (build/guest/guest.elf, multiboot): TSC cycles per config
--   read (CF8/CFC), per trapped 4-byte BAR read (edu's ID) and write (its liveness
--   register), per MSI round trip. The kernel path gets x-no-mmap=on so its BAR accesses
--   are trapped by QEMU as the server's are (the server is started without
--   --trust-client: every BAR access is a message).
-- * nvme under the lab's Linux kernel with bench/guest/guest_bench (the initramfs of
--   bench/vs-qemu-linux.lua): 4 KiB O_DIRECT random-read latency (median, p99) and IOPS.
--   The server twice: without --trust-client (every doorbell a message) and with it (the
--   BAR's pages mapped into the guest, the issue's parity case). Skipped with a note when
--   the lab has no nvme.
-- * a Lua model's register access against a C-answered one: the 16550A model
--   (examples/vfio-user/serial_16550a.lua) served by bin/vfio-user-serve against QEMU's
--   own C pci-serial (same IDs 1b36:0002, an 8-port I/O BAR0): cycles per byte read and
--   write of the scratch register, and the config read.
-- Host mode (--host) runs only that last comparison, under TCG: no VFIO device is needed.
-- Each figure: the median over the rounds, its min-max range, the ratio of medians.
package.path = "lua/?.lua;lua/?/init.lua;spec/?.lua;" .. package.path
package.cpath = "build/?.so;" .. package.cpath
local qvu = require "support.qemu_vfio_user"
local us = require "support.user_server"
local child = require "support.child"
local guest = require "support.guest"
local stat = require "posix.sys.stat"
local psignal = require "posix.signal"

local rounds, host, only = 3, false, nil
do
   local i = 1
   while i <= #arg do
      if arg[i] == "--rounds" then
         rounds = assert(math.tointeger(tonumber(arg[i + 1])), "--rounds N")
         i = i + 1
      elseif arg[i] == "--host" then
         host = true
      elseif arg[i] == "--only" and arg[i + 1] then
         only = arg[i + 1]
         i = i + 1
      else
         error("usage: lua5.4 bench/vs-vfio-user.lua [--host] [--rounds N] [--only serial|edu|nvme]")
      end
      i = i + 1
   end
end

assert(qvu.available())
assert(io.open(guest.ELF), guest.ELF .. " missing: build first (make build)")
local lab = not host and require "support.lab" or nil
if lab then assert(lab.inside, "lab mode runs in the lab (lab/run -- ...); --host runs here") end
-- KVM where there is one (the lab guest), TCG otherwise; the same for both paths.
local kvm = io.open("/dev/kvm") and not host
local ACCEL = kvm and "kvm" or "tcg"

-- QEMU 11.1 (spec/support/qemu_vfio_user.lua's start_guest: q35, guest RAM in a shared
-- memfd, so the server gets DMA_MAP with fds and the kernel path does not care) with
-- opts.device, until it exits (timeout seconds): its debug port and its console, or nil
-- and why.
local function run_guest(opts, timeout, what)
   opts.accel, opts.devices = ACCEL, { opts.device }
   local g = assert(qvu.start_guest(opts))
   local ok, err = pcall(child.wait_for, g, what .. " to finish", function() return g.status() end, timeout)
   local dbg, out = g.debug_output(), g.output()
   g.stop()
   if not ok then return nil, err end
   return dbg, out
end

-- examples/guest with `device` (a -device argument) at 03.0: its parsed report.
local function multiboot(device, cmdline, what)
   local out, log = run_guest({ kernel = guest.ELF, debugcon = true, append = cmdline, memory = "256M",
                                device = device }, 180, what)
   if not out then error(log) end
   local r = guest.parse(out)
   if r.result ~= "PASS" then
      error(("%s: the guest did not pass:\n%s\n%s"):format(what, out, log:sub(-2000)))
   end
   return r.bench
end

-- No x-no-mmap here: a server without --trust-client hands over no BAR fds, so every
-- BAR access is already a message.
local function user_device(socket) return qvu.vfio_user_device(socket, "03.0") end

-- The server for one VM: started (without --trace, which spec/support/user_server.lua
-- always adds: a line per message would be measured too), `fn(socket)` run, stopped.
-- `extra`: more arguments for vfio-user-serve (--trust-client).
local function served(dev, fn, extra)
   local srv = {}
   local c = child.spawn(us.COMMAND, function(dir)
      srv.socket = dir .. "/sock"
      local args = { dev, "--socket", srv.socket }
      for _, a in ipairs(extra or {}) do args[#args + 1] = a end
      return args
   end)
   c.name = "vfio-user-serve"
   child.wait_for(c, "the server's socket", function() return stat.stat(srv.socket) end, 10)
   function srv.stop()
      if not c.status() then psignal.kill(c.pid, psignal.SIGTERM) end
      local t = child.now() + 10
      while not c.status() and child.now() < t do child.sleep(0.05) end
      srv.log = c.output()
      c.stop()
   end
   function srv.output() return srv.log or c.output() end
   local ok, r = pcall(fn, srv.socket)
   srv.stop()
   if not ok then error(r .. "\nserver:\n" .. srv.output():sub(-2000), 0) end
   return r
end

-- Configurations: name -> { pair = row group, run = function() -> { metric = value } }.
local GROUPS, CONFIGS = {}, {}
local function config(group, side, run)
   if only and group.name ~= only then return end
   if not GROUPS[group.name] then
      GROUPS[group.name] = group
      GROUPS[#GROUPS + 1] = group
   end
   CONFIGS[#CONFIGS + 1] = { group = group.name, side = side, run = run, got = {} }
end

local SERIAL = "examples/vfio-user/serial_16550a.lua"
local serial_group = { name = "serial", title = "16550A: Lua model served vs QEMU's C pci-serial (TSC cycles)",
                       base = "C pci-serial", other = "Lua model", metrics = { "cfg_read", "bar_read", "bar_write" },
                       labels = { cfg_read = "config read", bar_read = "I/O read (1 byte)",
                                  bar_write = "I/O write (1 byte)" } }
config(serial_group, "base", function()
   return multiboot("pci-serial,addr=03.0", "dev=1b36:0002", "QEMU pci-serial")
end)
config(serial_group, "other", function()
   return served(SERIAL, function(sock)
      return multiboot(qvu.vfio_user_device(sock, "03.0"), "dev=1b36:0002", "served 16550A model")
   end)
end)

local nvme_note
if lab then
   local edu = lab.need("edu").bdf
   local edu_group = { name = "edu",
                       title = ("edu %s: vfio-user-pci (server) vs vfio-pci (kernel), TSC cycles"):format(edu),
                       base = "kernel", other = "server",
                       metrics = { "cfg_read", "bar_read", "bar_write", "msi_roundtrip" },
                       labels = { cfg_read = "config read", bar_read = "BAR read (4 bytes, trapped)",
                                  bar_write = "BAR write (4 bytes, trapped)", msi_roundtrip = "MSI round trip" } }
   config(edu_group, "base", function()
      return multiboot(("vfio-pci,host=%s,addr=03.0,x-no-mmap=on"):format(edu), "", "vfio-pci edu")
   end)
   config(edu_group, "other", function()
      return served(edu, function(sock) return multiboot(user_device(sock), "", "vfio-user-pci edu") end)
   end)

   local nvme = lab.device("nvme")
   local bin = (os.getenv("LUAVFIO_BUILD") or "build") .. "/bench/guest_bench"
   if not nvme then
      nvme_note = "nvme: none in this lab, not measured"
   elseif not io.open(bin) then
      nvme_note = "nvme: " .. bin .. " missing (build first), not measured"
   else
      local img = require("support.linux_guest").initramfs(
         ("--init bench/linux_bench_init.sh --modules nvme --file %s:/bin/guest_bench"):format(bin))
      local kernel = os.getenv("LUAVFIO_CACHE") .. "/lab/kernel/boot/vmlinuz-" .. os.getenv("LUAVFIO_LAB_KERNEL")
      local function linux(device, what)
         local _, out = run_guest({ kernel = kernel, initrd = img, append = "quiet", memory = "512M",
                                    device = device }, 300, what)
         local med, p99 = out:match("RAND4K_US (%S+) (%S+)")
         local iops = tonumber(out:match("RAND4K_IOPS (%S+)"))
         if not (med and iops) then error(what .. ": no figures from the guest:\n" .. out:sub(-3000)) end
         return { lat = tonumber(med), p99 = tonumber(p99), iops = iops }
      end
      local nvme_group = { name = "nvme",
                           title = ("nvme %s, Linux guest: vfio-user-pci (server) vs vfio-pci (kernel)")
                              :format(nvme.bdf),
                           base = "kernel", other = "server", trusted = "server, BAR fds",
                           metrics = { "lat", "p99", "iops" },
                           labels = { lat = "4 KiB random read, median us", p99 = "4 KiB random read, p99 us",
                                      iops = "4 KiB random read IOPS" } }
      config(nvme_group, "base", function()
         return linux(("vfio-pci,host=%s,addr=03.0"):format(nvme.bdf), "vfio-pci nvme")
      end)
      config(nvme_group, "other", function()
         return served(nvme.bdf, function(sock)
            return linux(user_device(sock), "vfio-user-pci nvme")
         end)
      end)
      -- the BAR pages handed over: the doorbells are the guest's stores, no message
      config(nvme_group, "trusted", function()
         return served(nvme.bdf, function(sock)
            return linux(user_device(sock), "vfio-user-pci nvme, --trust-client")
         end, { "--trust-client" })
      end)
   end
end

-- Rounds interleaved, so drift on a shared machine falls on both sides alike.
for round = 1, rounds do
   for _, c in ipairs(CONFIGS) do
      collectgarbage()
      c.got[round] = c.run()
   end
   io.stderr:write(("round %d of %d done\n"):format(round, rounds))
end

local function values(c, m)
   local v = {}
   for _, r in ipairs(c.got) do v[#v + 1] = r[m] end
   table.sort(v)
   return v
end

print(("QEMU 11.1 (lab/qemu-vfio-user), %s, %d round(s) interleaved; median [min-max]; ratio = %s")
   :format(kvm and "KVM" or "TCG", rounds, "served / reference (medians)"))
for _, g in ipairs(GROUPS) do
   local side, order = {}, {}
   for _, c in ipairs(CONFIGS) do
      if c.group == g.name then side[c.side] = c end
   end
   for _, k in ipairs { "other", "trusted" } do if side[k] then order[#order + 1] = k end end
   local function cell(v)
      if #v == 0 then return "-" end
      return ("%g [%g-%g]"):format(v[(#v + 1) // 2], v[1], v[#v])
   end
   print(g.title)
   local head = ("  %-30s %22s"):format("", g.base)
   for _, k in ipairs(order) do head = head .. (" %22s %7s"):format(g[k], "ratio") end
   print(head)
   for _, m in ipairs(g.metrics) do
      local a = values(side.base, m)
      local ma = a[(#a + 1) // 2]
      local row = ("  %-30s %22s"):format(g.labels[m], cell(a))
      for _, k in ipairs(order) do
         local b = values(side[k], m)
         local mb = b[(#b + 1) // 2]
         row = row .. (" %22s %7s"):format(cell(b), (ma and mb and ma ~= 0) and ("%.2f"):format(mb / ma) or "-")
      end
      print(row)
   end
end
if nvme_note then print(nvme_note) end
if lab then
   print("edu: the kernel path with x-no-mmap=on, the server without --trust-client: every BAR access trapped")
   print("nvme: 'server' without --trust-client (BAR accesses as messages), 'server, BAR fds' with it"
      .. " (the doorbells mapped into the guest); IOPS ratio > 1 is better")
end
