-- vfio.vmm.vm's errors where there is no usable KVM (the lab spec covers the rest).
local machine = require "vfio.vmm.vm"

describe("vfio.vmm.vm.create", function()
   it("explains a missing /dev/kvm", function()
      local m, msg, errno = machine.create { kvm = "/nonexistent/kvm" }
      assert.is_nil(m)
      assert.are.equal("KVM unavailable: open /nonexistent/kvm: No such file or directory"
         .. " (no KVM here: load kvm-intel or kvm-amd, or run in the lab)", msg)
      assert.are.equal(2, errno)
   end)

   it("explains a file that is not KVM", function()
      local m, msg, errno = machine.create { kvm = "/dev/null" }
      assert.is_nil(m)
      assert.matches("^KVM unavailable: KVM_GET_API_VERSION /dev/null: ", msg)
      assert.are.equal(25, errno)
   end)

   it("checks the memory size", function()
      assert.has_error(function() machine.create { mem_mib = 1 } end)
      assert.has_error(function() machine.create { mem_mib = (machine.RAM_LIMIT >> 20) + 1 } end)
      assert.has_error(function() machine.create { mem_mib = 1.5 } end)
   end)
end)
