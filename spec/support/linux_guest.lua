-- A Linux guest (the lab's own kernel, an initramfs from lab/initramfs running
-- spec/support/guest_checks.sh) with lab devices passed through, under QEMU's vfio-pci
-- (lab/oracle --linux) or under passthrough.lua: both print the same report, parsed here.
local M = {}

M.CHECKS = "spec/support/guest_checks.sh"

local sh = require("support.shell").run

-- lab/initramfs ARGS: the image's path; raises with the tool's messages when it fails.
function M.initramfs(args)
   local out, code = sh("lab/initramfs " .. args)
   assert(code == 0, "lab/initramfs failed:\n" .. out)
   return (out:match("(%S+)%s*$"))
end

-- The initramfs both VMMs boot (cached by contents, so made once per lab run at most).
function M.initrd()
   local edu = (os.getenv("LUAVFIO_BUILD") or "build") .. "/bench/guest_edu"
   return M.initramfs(("--run %s --file %s:/bin/guest_edu"):format(M.CHECKS, edu))
end

-- The guest's report: devices by vendor:device ({bdf=, class=, driver=, res={...}}),
-- nvme sector checks, interrupt counts by handler name, CPUs online, and whether the
-- guest reached /init and ran the checks to the end.
function M.parse(out)
   local r = { pci = {}, reads = {}, irqs = {}, init = out:find("guest: init reached", 1, true) ~= nil }
   for line in out:gmatch("[^\r\n]+") do
      local bdf, id, class, drv = line:match("^pci (%S+) (%x+:%x+) (%S+) (%S+)$")
      if bdf then r.pci[id] = { bdf = bdf, class = class, driver = drv } end
      local s, verdict = line:match("^nvme%-read (%d+) (%a+)$")
      if s then r.reads[tonumber(s)] = verdict end
      local name, n = line:match("^irq (%S+) (%d+)$")
      if name then r.irqs[name] = (r.irqs[name] or 0) + tonumber(n) end
      local c = line:match("^cpus (%d+)$")
      if c then r.cpus = tonumber(c) end
      local b, a = line:match("^EDU_MSI (%d+) (%d+)$")
      if b then r.edu_msi = tonumber(a) - tonumber(b) end
      local rc = line:match("^guest: run.sh exit (%d+)$")
      if rc then r.checks_exit = tonumber(rc) end
   end
   return r
end

-- Interrupts counted for handler names matching `pattern`.
function M.irq_total(r, pattern)
   local n = 0
   for name, c in pairs(r.irqs) do if name:match(pattern) then n = n + c end end
   return n
end

-- Under QEMU's vfio-pci: lab/oracle --linux with these BDFs ("port:BDF" behind a root port).
function M.oracle(bdfs, opts)
   opts = opts or {}
   local cmd = ("lab/oracle --linux --initrd %s --timeout %d%s %s"):format(M.initrd(),
      opts.timeout or 240, opts.cpus and (" --cpus " .. opts.cpus) or "", table.concat(bdfs, " "))
   return sh(cmd)
end

-- The guest kernel: the lab's default kernel (Debian 12's), whatever kernel the lab itself
-- boots (lab/initramfs resolves that kernel's modules), as lab/oracle --linux boots it.
function M.kernel()
   local cache = assert(os.getenv("LUAVFIO_CACHE"), "LUAVFIO_CACHE unset: run me with lab/run")
   local f = assert(io.open(cache .. "/lab/kernel/version"), "no lab kernel: run lab/setup")
   local ver = f:read("l")
   f:close()
   return cache .. "/lab/kernel/boot/vmlinuz-" .. ver
end

-- Under passthrough.lua: the same kernel and initramfs.
function M.ours(bdfs, opts)
   opts = opts or {}
   local kernel = M.kernel()
   local devs = {}
   for _, b in ipairs(bdfs) do devs[#devs + 1] = "--device " .. b:gsub("^port:", "") end
   local cmd = ("lua5.4 passthrough.lua --kernel %s --initrd %s --timeout %d%s%s %s"):format(kernel,
      M.initrd(), opts.timeout or 240, opts.cpus and (" --cpus " .. opts.cpus) or "",
      opts.mem and (" --mem " .. opts.mem) or "", table.concat(devs, " "))
   return sh(cmd)
end

return M
