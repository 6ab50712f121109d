-- A machine without /dev/kvm, on any machine: LUAVFIO_NO_KVM=1 hides the host's /dev/kvm
-- from the library (core.kvm_open, and so vfio.vmm.vm and passthrough.lua) and from the
-- specs (spec/support/kvm.lua). Every spec that needs KVM carries the tag #kvm and pends
-- with its reason there; spec/run then runs them in the lab (tier lab-kvm).
local core = require "vfio.core"
local stdlib = require "posix.stdlib"

local function with_env(value, fn)
   local saved = os.getenv("LUAVFIO_NO_KVM")
   stdlib.setenv("LUAVFIO_NO_KVM", value)
   local ok, err = pcall(fn)
   stdlib.setenv("LUAVFIO_NO_KVM", saved)
   assert(ok, err)
end

describe("LUAVFIO_NO_KVM", function()
   it("hides /dev/kvm from core.kvm_open, and no other path", function()
      with_env("1", function()
         local k, msg, errno = core.kvm_open()
         assert.is_nil(k)
         assert.are.equal("open /dev/kvm (hidden by LUAVFIO_NO_KVM): No such file or directory", msg)
         assert.are.equal(2, errno)
         assert.is_nil((core.kvm_open("/dev/kvm")))
         local other = assert(core.kvm_open("/dev/null"))     -- a path given is not hidden
         other:close()
         local m, vmsg = require("vfio.vmm.vm").create { mem_mib = 4 }
         assert.is_nil(m)
         assert.matches("^KVM unavailable: open /dev/kvm %(hidden by LUAVFIO_NO_KVM%)", vmsg)
      end)
      with_env("0", function()                                 -- 0 and "" hide nothing
         local k, msg = core.kvm_open()
         if k then k:close() else assert.is_nil(msg:find("hidden", 1, true)) end
      end)
   end)

   it("leaves every host spec tagged kvm pending with its reason, none failing or passing #noasan", function()
      local p = assert(io.popen("LUAVFIO_NO_KVM=1 lua5.4 /usr/bin/busted -o plainTerminal --run=host "
                                .. "--tags=kvm 2>&1"))
      local out = p:read("a"):gsub("\27%[[%d;]*m", "")
      p:close()
      local s, f, e, n = out:match("(%d+) successes? / (%d+) failures? / (%d+) errors? / (%d+) pending")
      assert(s, out)
      -- a #kvm spec that passes without KVM does not need it: its tag would be wrong
      assert.are.same({ 0, 0, 0 }, { tonumber(s), tonumber(f), tonumber(e) }, out)
      assert.is_true(tonumber(n) >= 40, out)
      local reasons = 0
      for reason in out:gmatch("Pending %-> [^\n]+\n[^\n]+\n([^\n]*)") do
         reasons = reasons + 1
         assert.is_truthy(reason:find("no usable /dev/kvm here", 1, true)
                          or reason:find("KVM unavailable: open /dev/kvm (hidden", 1, true), reason)
      end
      assert.are.equal(tonumber(n), reasons)
   end)
end)
