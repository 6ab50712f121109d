-- KVM binding behaviour that needs no /dev/kvm: errors name the operation and the path,
-- objects close idempotently, arguments are checked.
local core = require "vfio.core"

describe("vfio.core.kvm_open", function()
   it("reports a missing device node with the path and errno", function()
      local k, msg, errno = core.kvm_open("/nonexistent/kvm")
      assert.is_nil(k)
      assert.are.equal("open /nonexistent/kvm: No such file or directory", msg)
      assert.are.equal(2, errno)
   end)

   it("reports ioctls that fail on a non-KVM file, naming the ioctl", function()
      local k = assert(core.kvm_open("/dev/null"))
      local v, msg, errno = k:api_version()
      assert.is_nil(v)
      assert.matches("^KVM_GET_API_VERSION /dev/null: ", msg)
      assert.are.equal(25, errno) -- ENOTTY
      local vm, vmsg = k:create_vm()
      assert.is_nil(vm)
      assert.matches("^KVM_CREATE_VM /dev/null: ", vmsg)
      local c, cmsg = k:check_extension("irqfd")
      assert.is_nil(c)
      assert.matches("^KVM_CHECK_EXTENSION /dev/null cap 32: ", cmsg)
      k:close()
   end)

   it("closes idempotently and refuses use after close", function()
      local k = assert(core.kvm_open("/dev/null"))
      assert.matches("^vfio.kvm %(/dev/null, fd %d+%)$", tostring(k))
      k:close()
      k:close()
      assert.are.equal("vfio.kvm (closed)", tostring(k))
      assert.has_error(function() k:api_version() end, "attempt to use a closed kvm")
   end)

   it("supports to-be-closed variables", function()
      local saved
      do
         local k <close> = assert(core.kvm_open("/dev/null"))
         saved = k
      end
      assert.are.equal("vfio.kvm (closed)", tostring(saved))
   end)

   it("checks capability names", function()
      local k = assert(core.kvm_open("/dev/null"))
      assert.has_error(function() k:check_extension("no_such_cap") end)
      assert.are.equal(32, core.KVM_CAP.irqfd)
      assert.are.equal(82, core.KVM_CAP.irqfd_resample)
      k:close()
   end)
end)
