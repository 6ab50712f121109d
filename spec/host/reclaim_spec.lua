-- vfio.vmm.reclaim: what the VMM does when the host wants a device back (VFIO's request
-- interrupt) or reports an uncorrectable error on it (the error interrupt). The decisions
-- are data; the lab specs (spec/lab/reclaim_spec.lua) drive the real interrupts.
local reclaim = require "vfio.vmm.reclaim"

local A, B = "0000:01:00.0", "0000:00:04.0"

describe("vfio.vmm.reclaim", function()
   it("asks the guest for a device in a hot-plug slot, saying so once per burst", function()
      local w = reclaim.new { remove_timeout = 20 }
      local acts = w:decide({ { name = A, request = 1, slot = true } }, 100)
      assert.are.equal(1, #acts)
      assert.are.equal("unplug", acts[1][1])
      assert.are.equal(1, acts[1][2])
      assert.are.equal(reclaim.UNPLUG:format(A, 20), acts[1].note)
      assert.matches("the host wants 0000:01:00%.0 back: asking the guest", acts[1].note)
      assert.matches("after 20 s$", acts[1].note)
      -- the kernel's repeat 10 s later: asked again (device_del is idempotent), not said
      acts = w:decide({ { name = A, request = 1, slot = true } }, 110)
      assert.are.same({ { "unplug", 1 } }, acts)
      -- a request after a quiet gap is a new burst: said again
      acts = w:decide({ { name = A, request = 1, slot = true } }, 110 + reclaim.BURST_GAP)
      assert.is_string(acts[1].note)
   end)

   it("keeps a device with no slot and says so once per burst of requests", function()
      local w = reclaim.new()
      local acts = w:decide({ { name = B, request = 2 } }, 50)
      assert.are.same({ { "note", 1, reclaim.NO_SLOT:format(B, B) } }, acts)
      assert.matches("0000:00:04%.0 back, but it has no hot%-plug slot", acts[1][3])
      assert.matches("until this VMM exits", acts[1][3])
      for t = 60, 60 + 5 * 10, 10 do   -- the kernel repeats every 10 s while it waits
         assert.are.same({}, w:decide({ { name = B, request = 1 } }, t))
      end
      -- another device's first request is its own burst
      acts = w:decide({ { name = A, request = 1 } }, 115)
      assert.are.equal(reclaim.NO_SLOT:format(A, A), acts[1][3])
   end)

   it("stops the run on an error, naming the device, whatever else came", function()
      local w = reclaim.new()
      local acts = w:decide({ { name = B, request = 1 },
                              { name = A, error = 1, request = 1, slot = true } }, 5)
      local stop
      for _, a in ipairs(acts) do if a[1] == "stop" then stop = a end end
      assert.is_not_nil(stop)
      assert.are.equal(2, stop[2])
      assert.are.equal(reclaim.ERROR:format(A), stop[3])
      assert.matches("device 0000:01:00%.0 reported an uncorrectable error", stop[3])
      -- the request of the same device and the other device's are decided as well
      assert.are.equal(3, #acts)
   end)

   it("decides nothing without news", function()
      assert.are.same({}, reclaim.new():decide({}, 0))
   end)
end)
