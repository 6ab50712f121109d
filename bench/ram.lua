-- bench/ram.lua: what guest RAM costs a VM with a device passed through, per GiB.
--
-- 1. The DMA map alone, for each backing (vfio.vmm.ram): VFIO pins every page of guest RAM
-- when the board maps it (type1 or an iommufd IOAS), faulting in what was never touched,
-- so this is a cost a guest pays once per GiB before it starts. Printed as ms per GiB and
-- as ratios to anonymous RAM. Each case: a VM with the RAM (below the hole, and above
-- 4 GiB past 128 MiB, as --mem N,below-4g=128M lays it out), the lab's edu opened, its
-- container or IOAS mapping every RAM range at IOVA == guest-physical (board.map_dma's
-- work), timed, then unmapped; best of 3.
--
-- 2. With --boot [ROUNDS]: boot to /init with that much RAM and the lab's nvme, under QEMU
-- (lab/oracle --linux --mem) and under passthrough.lua with each backing, and both
-- without any device (no DMA map at all: QEMU with one empty hot-plug port, as lab/oracle
-- needs something to pass), ROUNDS rounds (default 3) interleaved, medians and ranges.
-- The guest (bench/ram_boot_init.sh) prints its boot time to /init by its TSC, which both
-- VMMs start after guest RAM is mapped; the host times each VMM from its start to that
-- line (the wall: the map included, and QEMU's firmware); passthrough.lua says what its
-- map took (LUAVFIO_TIMING=1). With a device against without is the most a map done in
-- the background, while the guest boots, could save (with a host CPU to spare for it).
--
-- Huge pages are measured when the lab can reserve them (it tries, and gives them back).
--   lab/run -- lua5.4 bench/ram.lua [MiB]   (default 256: the lab has 1.5 GiB)
--   lab/run --mem 9216 --smp 2 --timeout 7200 -- lua5.4 bench/ram.lua 6144 --boot 3
--      (6 GiB guests: the lab needs their RAM pinned, and some for itself and the VMM)
package.path = "lua/?.lua;lua/?/init.lua;spec/?.lua;" .. package.path
package.cpath = (os.getenv("LUAVFIO_BUILD") or "build") .. "/?.so;" .. package.cpath
local vfio = require "vfio"
local vmlib = require "vfio.vmm.vm"

assert(os.getenv("LUAVFIO_LAB") == "1", "bench/ram.lua runs in the lab: lab/run -- lua5.4 bench/ram.lua")
local MIB, BOOT_ROUNDS = 256, nil
do
   local i = 1
   while i <= #arg do
      if arg[i] == "--boot" then
         BOOT_ROUNDS = math.tointeger(tonumber(arg[i + 1] or ""))
         if BOOT_ROUNDS then i = i + 1 else BOOT_ROUNDS = 3 end
      elseif math.tointeger(tonumber(arg[i])) then
         MIB = math.tointeger(tonumber(arg[i]))
      else
         io.stderr:write("usage: lab/run -- lua5.4 bench/ram.lua [MiB] [--boot [ROUNDS]]\n")
         os.exit(2)
      end
      i = i + 1
   end
end
local BELOW = 128 << 20
local ROUNDS = 3

local edu = assert(require("support.lab").device("edu"), "no edu device in this lab run")

-- One map of all guest RAM into dev's container: seconds, or nil and why.
local function map_once(backing)
   local m, err = vmlib.create { mem_mib = MIB, ram_below_4g = BELOW, backing = backing }
   if not m then return nil, err end
   local dev = assert(vfio.open(edu.bdf))
   local c = dev.container
   local t0 = vmlib.now()
   local done, ok, merr = {}, true, nil
   for _, r in ipairs(m.ram_ranges) do
      ok, merr = c:map_dma(m.vm, r.start, { gpa = r.start, size = r.size, read = true, write = true })
      if not ok then break end
      done[#done + 1] = r
   end
   local dt = vmlib.now() - t0
   for _, r in ipairs(done) do c:unmap_dma(r.start, r.size) end
   dev:close()
   m:close()
   if not ok then return nil, merr end
   return dt
end

local function best(backing)
   local b
   for _ = 1, ROUNDS do
      local t, why = map_once(backing)
      if not t then return nil, why end
      b = math.min(b or t, t)
   end
   return b
end

-- Huge pages for one run of the hugetlbfs case: the pool's size before, or nil.
local function reserve_hugepages()
   local f = io.open("/proc/meminfo")
   local info = f and f:read("a") or ""
   if f then f:close() end
   local kib = tonumber(info:match("Hugepagesize:%s*(%d+)") or "")
   local total = tonumber(info:match("HugePages_Total:%s*(%d+)") or "")
   if not kib or not total then return nil end
   local w = io.open("/proc/sys/vm/nr_hugepages", "w")
   if not w then return nil end
   w:write(tostring(total + (MIB * 1024) // kib), "\n")
   w:close()
   return total
end

local function restore_hugepages(total)
   local w = io.open("/proc/sys/vm/nr_hugepages", "w")
   if w then w:write(tostring(total), "\n") w:close() end
end

io.write(("bench/ram.lua: %d MiB of guest RAM (%d below 4 GiB), mapped for DMA through %s's %s, "
   .. "best of %d\n"):format(MIB, BELOW >> 20, edu.bdf, os.getenv("LUAVFIO_IOMMUFD") == "1" and "IOAS"
   or "container", ROUNDS))
local per_gib = MIB / 1024
local results = {}
for _, backing in ipairs { "anonymous", "memfd", "hugetlbfs" } do
   local before = backing == "hugetlbfs" and reserve_hugepages()
   local t, why = best(backing)
   if before then restore_hugepages(before) end
   results[backing] = t
   if t then
      local ratio = results.anonymous and backing ~= "anonymous"
         and ("   (%.2fx anonymous)"):format(t / results.anonymous) or ""
      io.write(("  %-10s %8.1f ms per GiB%s\n"):format(backing, t * 1000 / per_gib, ratio))
   else
      io.write(("  %-10s not measured: %s\n"):format(backing, tostring(why)))
   end
end

if not BOOT_ROUNDS then os.exit(0) end

-- 2. Boot to /init with MIB of guest RAM.
local lab = require "support.lab"
local linux = require "support.linux_guest"
local child = require "support.child"
local nvme = lab.need("nvme").bdf
local bin = (os.getenv("LUAVFIO_BUILD") or "build") .. "/bench/guest_bench"
assert(io.open(bin), bin .. " missing: make first")
local img = linux.initramfs(("--init bench/ram_boot_init.sh --modules nvme --file %s:/bin/guest_bench"):format(bin))
local VMM_TIMEOUT = 900
-- passthrough.lua boots the kernel its host decompressed once and cached: done before the
-- rounds, so no round pays for it
do
   local vmlinux = require "vfio.vmm.vmlinux"
   local image, known = assert(vmlinux.read_image(linux.kernel()))
   assert(vmlinux.decompress(image, { path = linux.kernel(), known = known }))
end

local function oracle(...)
   return { "lab/oracle", "--linux", "--initrd", img, "--mem", tostring(MIB), "--timeout",
            tostring(VMM_TIMEOUT), ... }
end
local function ours(...)
   return { "env", "LUAVFIO_TIMING=1", "lua5.4", "passthrough.lua", "--kernel", linux.kernel(),
            "--initrd", img, "--append", "quiet", "--mem", tostring(MIB), "--timeout",
            tostring(VMM_TIMEOUT), ... }
end
-- name, what it is, its command
local CONFIGS = {
   { "qemu", "QEMU vfio-pci", oracle(nvme) },
   { "qemu-nodev", "QEMU, no device", oracle("--hotplug-ports", "1") },
   { "anonymous", "ours, anonymous RAM", ours("--device", nvme) },
   { "memfd", "ours, memfd RAM", ours("--mem-backing", "memfd", "--device", nvme) },
   { "hugetlbfs", "ours, huge pages", ours("--hugepages", "--device", nvme) },
   -- no device at boot needs an empty hot-plug slot and a control socket (as QEMU's above)
   { "nodev", "ours, no device", ours("--hotplug-slots", "1", "--control", os.tmpname() .. ".sock") },
}

-- One boot: {wall =, guest =, map =, mem_kib =}, or nil and why (the end of its output).
local function boot(cmd)
   collectgarbage(); collectgarbage()
   local t0 = child.now()
   local vm = child.spawn(cmd[1], { table.unpack(cmd, 2) })
   local wall
   local give_up = t0 + VMM_TIMEOUT + 60
   while child.now() < give_up do
      if vm.output():find("BOOT_MS", 1, true) then wall = child.now() - t0 break end
      if vm.status() then break end
      child.sleep(0.05)
   end
   while not vm.status() and child.now() < give_up do child.sleep(0.1) end
   local out, status = vm.output(), vm.status()
   vm.stop()
   local r = {
      wall = wall,
      guest = tonumber(out:match("BOOT_MS (%S+)")),
      map = tonumber(out:match("guest RAM mapped for DMA: %d+ MiB in (%S+) s")),
      mem_kib = tonumber(out:match("MemTotal:%s*(%d+) kB")),
   }
   if status ~= 0 or not (r.wall and r.guest and r.mem_kib) then
      return nil, ("exit %s\n%s"):format(tostring(status), out:sub(-3000))
   end
   -- the guest has the RAM it was given (its kernel keeps a little for itself)
   if r.mem_kib < MIB * 1024 * 0.8 then
      return nil, ("the guest sees %d MiB of RAM, not %d\n%s"):format(r.mem_kib // 1024, MIB, out:sub(-3000))
   end
   r.guest = r.guest / 1000
   return r
end

local function meminfo_line()
   local f = io.open("/proc/meminfo")
   local info = f and f:read("a") or ""
   if f then f:close() end
   local thp = io.open("/sys/kernel/mm/transparent_hugepage/enabled")
   local mode = thp and thp:read("l") or "?"
   if thp then thp:close() end
   local cpus = 0
   local c = io.open("/proc/cpuinfo")
   for line in (c and c:read("a") or ""):gmatch("[^\n]+") do
      if line:match("^processor%s*:") then cpus = cpus + 1 end
   end
   if c then c:close() end
   return ("lab: MemTotal %d MiB, %d CPU(s), transparent huge pages %s"):format(
      (tonumber(info:match("MemTotal:%s*(%d+)")) or 0) // 1024, cpus, mode)
end

io.write(("\nboot to /init with %d MiB of guest RAM and nvme %s, %d interleaved round(s)\n"):format(MIB,
   nvme, BOOT_ROUNDS))
io.write(meminfo_line(), "\n")
do
   -- the guest's RAM is pinned whole while it runs: the lab needs it and room for itself
   local total = require("vfio.vmm.ram").meminfo().MemTotal or 0
   if total // 1024 < MIB + 1024 then
      io.stderr:write(("bench/ram.lua: the lab has %d MiB for guests of %d MiB: give lab/run --mem %d or more\n")
         :format(total // 1024, MIB, MIB + 2048))
   end
end
local got, failed = {}, {}
for round = 1, BOOT_ROUNDS do
   io.stderr:write(("boot round %d of %d\n"):format(round, BOOT_ROUNDS))
   for k = 0, #CONFIGS - 1 do
      -- each round starts one further along, so no configuration always follows another
      local c = CONFIGS[(round - 1 + k) % #CONFIGS + 1]
      local name = c[1]
      if not failed[name] then
         local before = name == "hugetlbfs" and reserve_hugepages()
         local r, why = boot(c[3])
         if before then restore_hugepages(before) end
         if r then
            got[name] = got[name] or {}
            table.insert(got[name], r)
         else
            failed[name] = why
            io.stderr:write(("%s, round %d: %s\n"):format(c[2], round, why))
         end
      end
   end
end

local function stats(name, k)
   local v = {}
   for _, r in ipairs(got[name] or {}) do if r[k] then v[#v + 1] = r[k] end end
   if #v == 0 then return nil end
   table.sort(v)
   return v[(#v + 1) // 2], v[1], v[#v]
end
local function cell(name, k, scale)
   local m, lo, hi = stats(name, k)
   if not m then return "-" end
   scale = scale or 1
   return ("%.2f (%.2f-%.2f)"):format(m * scale, lo * scale, hi * scale)
end

local gib = MIB / 1024
io.write(("seconds, median (min-max); ratio: the wall to /init over QEMU's with the nvme\n"))
io.write(("  %-22s %22s %22s %22s %7s\n"):format("", "wall to /init", "guest's boot (TSC)",
   "DMA map (VMM's note)", "/QEMU"))
local qemu_wall = stats("qemu", "wall")
for _, c in ipairs(CONFIGS) do
   local name = c[1]
   if failed[name] and not got[name] then
      io.write(("  %-22s not measured: %s\n"):format(c[2], (failed[name]:match("[^\n]*"))))
   else
      local w = stats(name, "wall")
      io.write(("  %-22s %22s %22s %22s %7s\n"):format(c[2], cell(name, "wall"), cell(name, "guest"),
         cell(name, "map"), (w and qemu_wall) and ("%.2f"):format(w / qemu_wall) or "-"))
   end
end
for _, c in ipairs(CONFIGS) do
   local m = stats(c[1], "map")
   if m then io.write(("  %s: DMA map %.1f ms per GiB\n"):format(c[2], m * 1000 / gib)) end
end
-- what the map costs the boot, and so the most mapping in the background could give back
for _, pair in ipairs { { "anonymous", "nodev", "ours" }, { "qemu", "qemu-nodev", "QEMU" } } do
   local with, without = stats(pair[1], "wall"), stats(pair[2], "wall")
   if with and without then
      io.write(("  %s: the device's DMA map (and its setup) adds %.2f s to the wall to /init, "
         .. "%.0f ms per GiB: the most a map in the background could save\n"):format(pair[3],
         with - without, (with - without) * 1000 / gib))
   end
end
for _, name in ipairs { "qemu", "anonymous" } do
   if failed[name] then os.exit(1) end
end
