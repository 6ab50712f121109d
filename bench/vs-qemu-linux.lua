-- bench/vs-qemu-linux.lua: the same Linux guest (the lab's kernel, one initramfs) with the
-- lab's nvme passed through, under QEMU's vfio-pci (lab/oracle --linux, nested KVM) and
-- under passthrough.lua, alternating, ROUNDS times in one lab run; medians printed as
-- ours/QEMU ratios. The guest measures itself (bench/guest/guest_bench.c): boot to /init
-- by its TSC (zeroed when the machine starts: QEMU at its reset, passthrough.lua before
-- the first vCPU runs; QEMU's figure includes its firmware), 4 KiB O_DIRECT random-read
-- latency (median, p99) and IOPS, 1 MiB sequential read throughput, nvme interrupts per
-- I/O. The whole run's wall clock (VMM start to exit, device setup included) is printed
-- as well. passthrough.lua decompresses the bzImage's kernel on the host once and caches
-- it (vfio.vmm.vmlinux): that is done, and timed, before the rounds, as a user's first
-- boot of a kernel would. A third VM per round, passthrough.lua with --decompress guest
-- (the kernel's own decompressor in the guest), shows what that is worth in the same run.
--   lab/run -- lua5.4 bench/vs-qemu-linux.lua [ROUNDS]     (default 3)
package.path = "lua/?.lua;lua/?/init.lua;spec/?.lua;" .. package.path
local lab = require "support.lab"

local rounds = math.tointeger(tonumber(arg[1])) or 3
assert(lab.inside, "run me in the lab: lab/run -- lua5.4 bench/vs-qemu-linux.lua")
local nvme = lab.need("nvme").bdf

local sh = require("support.shell").run

local bin = (os.getenv("LUAVFIO_BUILD") or "build") .. "/bench/guest_bench"
assert(io.open(bin), bin .. " missing: make first")
local img = require("support.linux_guest").initramfs(
   ("--init bench/linux_bench_init.sh --modules nvme --file %s:/bin/guest_bench"):format(bin))
local kernel = os.getenv("LUAVFIO_CACHE") .. "/lab/kernel/boot/vmlinuz-" .. os.getenv("LUAVFIO_LAB_KERNEL")

local function clock()
   local p = io.popen("date +%s.%N")
   local t = tonumber(p:read("a"))
   p:close()
   return t
end

local RUN = {
   qemu = ("lab/oracle --linux --initrd %s --timeout 300 %s"):format(img, nvme),
   ours = ("lua5.4 passthrough.lua --kernel %s --initrd %s --append quiet --timeout 300 --device %s %s")
      :format(kernel, img, nvme, os.getenv("LUAVFIO_BENCH_OURS_ARGS") or ""),
}
RUN.ours_guest = RUN.ours .. " --decompress guest"
local WHO = { "qemu", "ours", "ours_guest" }

local function parse(out)
   local r = {}
   r.boot = tonumber(out:match("BOOT_MS (%S+)"))
   local med, p99 = out:match("RAND4K_US (%S+) (%S+)")
   r.lat, r.p99 = tonumber(med), tonumber(p99)
   r.iops = tonumber(out:match("RAND4K_IOPS (%S+)"))
   r.seq = tonumber(out:match("SEQ1M_MBS (%S+)"))
   r.irq = tonumber(out:match("IRQ_PER_IO (%S+)"))
   return r
end

-- The one-time host decompression (nothing to do when the cache has this kernel already).
do
   local vmlinux = require "vfio.vmm.vmlinux"
   local image, known = assert(vmlinux.read_image(kernel))
   local t0 = clock()
   local d = assert(vmlinux.decompress(image, { path = kernel, known = known }))
   print(("host decompression of the kernel (%s, %d MB): %s, %.1f s"):format(d.format, d.size // 1000000,
      d.cached and "cached already" or "done now", clock() - t0))
end

local got = { qemu = {}, ours = {}, ours_guest = {} }
for i = 1, rounds do
   for _, who in ipairs(WHO) do
      collectgarbage(); collectgarbage()
      local t0 = clock()
      local out, code = sh(RUN[who])
      local wall = clock() - t0
      local r = parse(out)
      r.wall = wall
      if code ~= 0 or not r.lat then
         io.stderr:write(("%s round %d failed (exit %s):\n%s\n"):format(who, i, tostring(code), out:sub(-3000)))
         os.exit(1)
      end
      got[who][i] = r
   end
end

local function sorted(list, k)
   local v = {}
   for i, r in ipairs(list) do v[i] = r[k] end
   table.sort(v)
   return v
end
local function median(list, k)
   local v = sorted(list, k)
   return v[(#v + 1) // 2]
end

if os.getenv("LUAVFIO_LAB_KERNEL") then print("lab kernel " .. os.getenv("LUAVFIO_LAB_KERNEL")) end
print(("Linux guest, nvme %s passed through, medians of %d runs each (nested KVM in the lab)")
   :format(nvme, rounds))
print(("  %-28s %12s %12s %8s %12s %8s   %s"):format("", "QEMU vfio-pci", "passthrough", "ours/QEMU",
   "guest-decomp", "g-d/QEMU", "range QEMU | ours | guest-decomp"))
for _, row in ipairs {
   { "boot to /init (ms)", "boot" }, { "4 KiB random read, median us", "lat" },
   { "4 KiB random read, p99 us", "p99" }, { "4 KiB random read IOPS", "iops" },
   { "1 MiB sequential MB/s", "seq" }, { "nvme interrupts per I/O", "irq" },
   { "whole run, wall clock (s)", "wall" },
} do
   local m, r = {}, {}
   for _, who in ipairs(WHO) do
      m[who] = median(got[who], row[2])
      local v = sorted(got[who], row[2])
      r[#r + 1] = ("%.1f-%.1f"):format(v[1], v[#v])
   end
   local q = m.qemu
   print(("  %-28s %12.1f %12.1f %8.2f %12.1f %8.2f   %s"):format(row[1], q, m.ours, q ~= 0 and m.ours / q or 0,
      m.ours_guest, q ~= 0 and m.ours_guest / q or 0, table.concat(r, " | ")))
end
