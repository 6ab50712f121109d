-- The host's /dev/kvm for the specs that need it. Such a spec carries the tag #kvm (in
-- its own name or its describe's) and asks for a VM here:
--
--   local vm, kvm = kvmhost.vm()            -- or kvmhost.vm { ram = 0x20000 }
--   if not vm then pending(kvm) return end  -- kvm is then the reason
--
-- spec/run runs #kvm specs once, against the ASan build: on the host (tier host-asan)
-- when its /dev/kvm is usable, and otherwise inside the lab (tier lab-kvm, nested KVM),
-- so every machine runs them once. Run by hand on a host without KVM they are pending
-- with REASON. LUAVFIO_NO_KVM=1 hides the host's /dev/kvm from the library
-- (core.kvm_open) and so from these specs.
local core = require "vfio.core"

local M = {}

M.REASON = "no usable /dev/kvm here: make check runs the #kvm specs in the lab (tier lab-kvm)"

local probed, why_not
-- Whether this process can open /dev/kvm and create a VM in it; the reason when not.
function M.usable()
   if probed == nil then
      local kvm, msg = core.kvm_open()
      local vm, vmsg = nil, nil
      if kvm then vm, vmsg = kvm:create_vm() end
      probed = vm ~= nil
      why_not = not probed and ("%s (%s)"):format(M.REASON, msg or vmsg) or nil
      if vm then vm:close() end
      if kvm then kvm:close() end
   end
   return probed, why_not
end

-- A fresh VM on the host's KVM: vm, kvm; or nil and the reason to pend with.
-- opts.ram: bytes of RAM at guest address 0 (none by default).
function M.vm(opts)
   local ok, why = M.usable()
   if not ok then return nil, why end
   local kvm = assert(core.kvm_open())
   local vm = assert(kvm:create_vm())
   if opts and opts.ram then assert(vm:add_ram(0, opts.ram)) end
   return vm, kvm
end

return M
