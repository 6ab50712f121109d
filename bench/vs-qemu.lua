-- bench/vs-qemu: examples/guest on the lab's edu, under QEMU's vfio-pci (nested KVM,
-- lab/oracle --kernel) and under passthrough.lua, in the same lab run. The guest measures
-- TSC cycles per config read (CF8/CFC, trapped by both VMMs), per BAR read (edu's id
-- register) and per MSI round trip (raise, interrupt, ISR reads status and acks).
--
-- Where edu's register page lives differs by policy: QEMU maps the whole BAR into the
-- guest; passthrough.lua maps the first 4 KiB page read-only (reads direct, writes
-- trapped) because the edu-dma-guard quirk must see DMA commands (0x80-0x9f). So there
-- are three like-for-like pairs:
--   trapped: QEMU with x-no-mmap=on vs ours --no-mmap (every BAR access trapped)
--   mapped:  QEMU (default)         vs ours --quirk none (the whole BAR mapped)
--   default: each VMM as shipped: QEMU (default) vs ours (default)
-- Ratios are ours / QEMU's (target <= 1). Run: lab/run -- lua5.4 bench/vs-qemu.lua
-- [--runs N] (each configuration N times, the median kept).
package.path = "lua/?.lua;lua/?/init.lua;spec/?.lua;" .. package.path
local lab = require "support.lab"
local guest = require "support.guest"

local runs = 1
for i = 1, #arg do
   if arg[i] == "--runs" then runs = math.tointeger(tonumber(arg[i + 1])) or 1 end
end

local edu = assert(lab.device("edu"), "no edu device: run this inside lab/run")
local METRICS = { "cfg_read", "bar_read", "msi_roundtrip" }

local function measure(name, fn)
   local samples = {}
   for _ = 1, runs do
      local out = fn()
      local r = guest.parse(out)
      if r.result ~= "PASS" then
         io.stderr:write(("%s: the guest did not pass:\n%s\n"):format(name, out))
         return nil
      end
      samples[#samples + 1] = r.bench
   end
   local med = {}
   for _, m in ipairs(METRICS) do
      local v = {}
      for _, s in ipairs(samples) do v[#v + 1] = s[m] end
      table.sort(v)
      med[m] = v[(#v + 1) // 2]
   end
   return med
end

local R = {
   qemu = measure("QEMU vfio-pci", function() return (guest.qemu_vfio(edu.bdf)) end),
   qemu_trapped = measure("QEMU vfio-pci x-no-mmap=on",
      function() return (guest.qemu_vfio(edu.bdf, { vfio_opts = "x-no-mmap=on" })) end),
   ours = measure("passthrough.lua", function() return (guest.ours(edu.bdf)) end),
   ours_trapped = measure("passthrough.lua --no-mmap",
      function() return (guest.ours(edu.bdf, "--no-mmap")) end),
   ours_mapped = measure("passthrough.lua --quirk none",
      function() return (guest.ours(edu.bdf, "--quirk none")) end),
}

local function cell(r, m) return r and r[m] and tostring(r[m]) or "-" end
local function ratio(a, b, m)
   if not (a and b and a[m] and b[m]) then return "-" end
   return ("%.2f"):format(a[m] / b[m])
end

if os.getenv("LUAVFIO_LAB_KERNEL") then print("lab kernel " .. os.getenv("LUAVFIO_LAB_KERNEL")) end
print(("edu %s, guest %s, median of %d run(s); TSC cycles per operation"):format(edu.bdf, guest.ELF, runs))
print(("%-14s %9s %9s %9s %9s %9s | %7s %7s %7s"):format("", "QEMU", "QEMU-trap", "ours",
   "ours-trap", "ours-map", "trapped", "mapped", "default"))
for _, m in ipairs(METRICS) do
   print(("%-14s %9s %9s %9s %9s %9s | %7s %7s %7s"):format(m, cell(R.qemu, m),
      cell(R.qemu_trapped, m), cell(R.ours, m), cell(R.ours_trapped, m), cell(R.ours_mapped, m),
      ratio(R.ours_trapped, R.qemu_trapped, m), ratio(R.ours_mapped, R.qemu, m),
      ratio(R.ours, R.qemu, m)))
end
print("QEMU-trap: vfio-pci x-no-mmap=on; ours-trap: passthrough.lua --no-mmap; ours-map: "
   .. "passthrough.lua --quirk none")
print("ratios ours/QEMU: trapped = ours-trap/QEMU-trap, mapped = ours-map/QEMU, default = ours/QEMU")
for _, k in ipairs { "qemu", "qemu_trapped", "ours", "ours_trapped", "ours_mapped" } do
   if not R[k] then os.exit(1) end
end
