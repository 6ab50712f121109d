-- examples/guest's report, parsed: lines "FOUND ...", "TEST name PASS|FAIL ...",
-- "BENCH name cycles", "RESULT ...". Shared by specs and bench/vs-qemu.lua.
local M = {}

M.ELF = "build/guest/guest.elf"
M.EDU_TESTS = { "id", "liveness", "factorial", "msi", "intx", "dma", "spurious" }

function M.parse(out)
   local r = { tests = {}, bench = {}, order = {} }
   for name, verdict in out:gmatch("TEST (%S+) (%u+)") do
      r.tests[name] = verdict
      r.order[#r.order + 1] = name
   end
   for name, n in out:gmatch("BENCH (%S+) (%d+)") do r.bench[name] = tonumber(n) end
   r.result = out:match("RESULT (%u+)")
   r.found = out:match("FOUND (%S+ %x+:%x+)")
   return r
end

-- The guest under passthrough.lua (this tree's): output (debug console, then the
-- script's stderr) and exit status. args: extra command line arguments (a string).
function M.ours(bdf, args)
   local p = assert(io.popen(("lua5.4 passthrough.lua --device %s --guest %s %s 2>&1"):format(
      bdf, M.ELF, args or "")))
   local out = p:read("a")
   local _, _, code = p:close()
   return out, code
end

-- The guest under QEMU's own vfio-pci (lab/oracle --kernel, nested KVM in the lab): the
-- reference VMM. Returns the guest's debug output and its exit code (0 pass, 1 fail,
-- 2 no device; 124/125 from lab/oracle when QEMU or the guest did not finish).
-- opts: cmdline = guest command line, vfio_opts = extra vfio-pci properties, timeout.
function M.qemu_vfio(bdf, opts)
   opts = opts or {}
   local cmd = ("lab/oracle --kernel %s --timeout %d%s%s %s 2>&1"):format(M.ELF, opts.timeout or 120,
      opts.cmdline and (" --append '" .. opts.cmdline .. "'") or "",
      opts.vfio_opts and (" --vfio-opts '" .. opts.vfio_opts .. "'") or "", bdf)
   local p = assert(io.popen(cmd))
   local out = p:read("a")
   local _, _, code = p:close()
   return out, code
end

return M
