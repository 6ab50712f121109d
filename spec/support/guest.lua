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

-- The guest under QEMU's own vfio-pci (nested KVM in the lab): the reference VMM.
-- Returns output, QEMU's exit status.
function M.qemu_vfio(bdf, opts)
   opts = opts or {}
   local cmd = ("timeout %d qemu-system-x86_64 -M q35 -accel kvm -cpu host -m 64 -nodefaults"
      .. " -display none -serial none -monitor none -no-reboot -debugcon stdio"
      .. " -device isa-debug-exit,iobase=0xf4,iosize=4 -device vfio-pci,host=%s -kernel %s%s 2>/dev/null")
      :format(opts.timeout or 120, bdf, M.ELF, opts.cmdline and (" -append '" .. opts.cmdline .. "'") or "")
   local p = assert(io.popen(cmd))
   local out = p:read("a")
   local _, _, code = p:close()
   return out, code
end

return M
