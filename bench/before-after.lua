-- bench/before-after: examples/guest on the lab's edu under this tree's passthrough.lua
-- and under another tree's (an older commit, checked out with `git worktree add DIR REV`
-- and built), interleaved run by run, with QEMU's vfio-pci in the same rounds as the
-- reference. Nested TCG figures move by 2x with the machine's load within minutes, so a
-- before/after comparison is only fair when both sides run side by side: each round runs
-- every configuration once, and the medians over the rounds are compared.
--   lab/run -- lua5.4 bench/before-after.lua --before DIR [--runs N]    (default 5 rounds)
-- Prints TSC cycles per operation (the guest's own counters) and after/before ratios
-- (target <= 1) for each passthrough.lua configuration bench/vs-qemu.lua uses.
package.path = "lua/?.lua;lua/?/init.lua;spec/?.lua;" .. package.path
local lab = require "support.lab"
local guest = require "support.guest"

local before, runs
for i = 1, #arg do
   if arg[i] == "--before" then before = arg[i + 1] end
   if arg[i] == "--runs" then runs = math.tointeger(tonumber(arg[i + 1])) end
end
runs = runs or 5
if not before then
   io.stderr:write("usage: lab/run -- lua5.4 bench/before-after.lua --before DIR [--runs N]\n")
   os.exit(2)
end
local edu = assert(lab.device("edu"), "no edu device: run this inside lab/run")
local METRICS = { "cfg_read", "bar_read", "msi_roundtrip" }
local CONFIGS = { { "default", "" }, { "trapped", "--no-mmap" }, { "mapped", "--quirk none" } }

-- passthrough.lua of the tree at `dir` on the guest, its BENCH figures (nil: it failed)
local function ours(dir, args)
   local p = assert(io.popen(("cd '%s' && lua5.4 passthrough.lua --device %s --guest %s %s 2>&1")
      :format(dir, edu.bdf, guest.ELF, args)))
   local out = p:read("a")
   p:close()
   local r = guest.parse(out)
   if r.result ~= "PASS" then
      io.stderr:write(("%s %s: the guest did not pass:\n%s\n"):format(dir, args, out))
      return nil
   end
   return r.bench
end

local samples = {}   -- samples[side .. config][metric] = {cycles...}
local function add(key, bench)
   if not bench then return end
   samples[key] = samples[key] or {}
   for _, m in ipairs(METRICS) do
      local list = samples[key][m] or {}
      samples[key][m] = list
      list[#list + 1] = bench[m]
   end
end

local here = os.getenv("PWD") or "."
for round = 1, runs do
   io.stderr:write(("round %d of %d\n"):format(round, runs))
   local q = guest.parse((guest.qemu_vfio(edu.bdf)))
   add("qemu", q.result == "PASS" and q.bench or nil)
   for _, c in ipairs(CONFIGS) do
      -- alternate which side goes first, so neither always runs after QEMU
      local order = round % 2 == 1 and { "before", "after" } or { "after", "before" }
      for _, side in ipairs(order) do
         add(side .. " " .. c[1], ours(side == "before" and before or here, c[2]))
      end
   end
end

local function median(list)
   if not list or #list == 0 then return nil end
   table.sort(list)
   return list[(#list + 1) // 2]
end
local function med(key, m) return samples[key] and median(samples[key][m]) end

if os.getenv("LUAVFIO_LAB_KERNEL") then print("lab kernel " .. os.getenv("LUAVFIO_LAB_KERNEL")) end
print(("edu %s, before = %s, after = %s, median of %d interleaved round(s); TSC cycles per "
   .. "operation"):format(edu.bdf, before, here, runs))
print(("%-14s %-8s %9s %9s %9s | %12s"):format("", "config", "QEMU", "before", "after", "after/before"))
local failed = false
for _, m in ipairs(METRICS) do
   for _, c in ipairs(CONFIGS) do
      local b, a = med("before " .. c[1], m), med("after " .. c[1], m)
      failed = failed or not (a and b)
      print(("%-14s %-8s %9s %9s %9s | %12s"):format(m, c[1], tostring(med("qemu", m) or "-"),
         tostring(b or "-"), tostring(a or "-"), (a and b) and ("%.2f"):format(a / b) or "-"))
   end
end
print("configs: default = as shipped, trapped = --no-mmap, mapped = --quirk none; QEMU: "
   .. "vfio-pci default, run once per round")
if failed then os.exit(1) end
