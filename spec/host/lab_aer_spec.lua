-- VFIO's error interrupt from a real AER report: the lab VM's own QEMU injects an
-- uncorrectable (non-fatal) error at the pcie-root-port above the lab's virtio-net (its
-- monitor's pcie_aer_inject_error, from outside the lab, as spec/host/lab_run_spec.lua
-- asks the monitor); the lab kernel's AER driver reports it to the drivers below the
-- port, vfio-pci's among them, which signals the error interrupt. These boot the lab
-- (from the host, for its monitor) and are not repeated under ASan.
local reclaim = require "vfio.vmm.reclaim"

-- One device behind a root port of its own: lab/run names that port lab_port2 (the
-- first slot it gives out), the id the monitor command takes.
local LAB = "lab/run --no-defaults --port-device virtio-net-pci,disable-legacy=on,"
   .. "iommu_platform=on --monitor %s -- %s 2>&1; echo \"lab-exit=$?\""
local PORT = "lab_port2"
-- Poisoned TLP: uncorrectable, non-fatal by the AER severity register's default, so the
-- lab kernel recovers without resetting the link.
local INJECT = "pcie_aer_inject_error " .. PORT .. " POISON_TLP"

local function quote(word) return "'" .. word:gsub("'", "'\\''") .. "'" end

local function monitor(sock, command)
   local m = assert(io.popen(("{ echo %s; sleep 1; } | socat - UNIX-CONNECT:%s 2>&1")
      :format(quote(command), sock)))
   local answer = m:read("a")
   m:close()
   return answer
end

-- Run COMMAND in the lab; when a line of its output contains `cue`, inject the error.
-- Returns everything it printed, and the monitor's answer.
local function run_and_inject(command, cue)
   local sock = os.tmpname()
   os.remove(sock)
   local p = assert(io.popen(LAB:format(sock, command)))
   local out, answer = {}, nil
   for line in p:lines() do
      out[#out + 1] = line
      if not answer and line:find(cue, 1, true) then answer = monitor(sock, INJECT) end
   end
   p:close()
   return table.concat(out, "\n"), answer
end

describe("AER through the lab's QEMU monitor #noasan #labboot", function()
   it("reaches vfio-pci's error interrupt of the device below the port, and no request", function()
      local out, answer = run_and_inject("lua5.4 spec/support/aer_watch.lua",
         "aer-watch: armed")
      assert.matches("aer%-watch: armed %S+", out)
      assert.is_string(answer, "never armed:\n" .. out)
      assert.matches("aer%-watch: error %d+", out, "monitor: " .. tostring(answer) .. "\n" .. out)
      assert.not_matches("aer%-watch: request", out)
      assert.matches("lab%-exit=0", out)
   end)

   it("stops the VMM's run with a verdict naming the device #nested", function()
      -- inside the lab: a Linux guest with the virtio-net behind a hot-plug slot of the
      -- VMM's; the error comes once the guest's driver has it
      local inside = [[sh -c 'bdf=$(awk "\$5 == \"virtio-net-pci\" {print \$1}" "$LUAVFIO_LAB_DEVICES")
i=$(lab/initramfs --run spec/support/reclaim_guest.sh | tail -n 1) || exit 1
k="$LUAVFIO_CACHE/lab/kernel/boot/vmlinuz-$(cat "$LUAVFIO_CACHE/lab/kernel/version")"
lua5.4 passthrough.lua --kernel "$k" --initrd "$i" --timeout 400 --device "$bdf,port=on"
echo "vmm-exit=$?"']]
      local out, answer = run_and_inject(inside, "guest: ready")
      assert.is_string(answer, "the guest never got ready:\n" .. out)
      local bdf = out:match("device (%x+:%x+:%x+%.%x) reported")
      assert.is_string(bdf, "no verdict naming the device:\n" .. out)
      assert.matches(("guest stopped: " .. reclaim.ERROR:format(bdf)):gsub("[%p]", "%%%0"), out)
      assert.matches("vmm%-exit=1", out)
      assert.not_matches("guest: virtio removed", out)
   end)
end)
