-- The host check in the lab (issue 25 item 2), where VFIO is real: the defaults pass (an
-- Intel IOMMU with interrupt remapping, vfio-pci, every lab device in a viable group);
-- settings broken here fail with their fix: the memlock limit lowered (with CAP_IPC_LOCK
-- dropped, as a user without it runs), where a real DMA map then fails with ENOMEM naming
-- the limit, and a device taken from vfio-pci. vfio.bind refuses the lab's own file system
-- device, and the REPL shows why it cannot be opened.
local lab = require "support.lab"
local vfio = require "vfio"
local files = require "support.files"

local root = io.popen("pwd"):read("l")

local function cmd(c)
   local err = os.tmpname()
   local p = assert(io.popen(("cd %s && %s 2>%s"):format(root, c, err)))
   local out = p:read("a")
   local _, _, code = p:close()
   local stderr = files.readfile(err)
   os.remove(err)
   return code, out, stderr
end

-- Lower the memlock limit to 64 KiB and drop CAP_IPC_LOCK (root keeps it otherwise, and
-- the limit would not apply), for one command.
local LOW = "prlimit --memlock=65536:65536 setpriv --bounding-set -ipc_lock --inh-caps "
   .. "-ipc_lock "

local function by_check(list)
   local by = {}
   for _, f in ipairs(list) do by[f.check] = f end
   return by
end

describe("the host check in the lab", function()
   it("passes with the lab's defaults", function()
      local list = vfio.host.check()
      local by = by_check(list)
      for _, f in ipairs(list) do
         assert.are_not.equal("fail", f.status, f.check .. ": " .. f.found .. " (fix: "
            .. tostring(f.fix) .. ")")
      end
      assert.are.equal("ok", by.IOMMU.status)
      assert.matches("^Intel VT%-d %(DMAR%): dmar", by.IOMMU.found)
      assert.are.equal("ok", by["interrupt remapping"].status)
      assert.are.equal("ok", by["vfio-pci"].status)
      assert.are.equal("ok", by["/dev/vfio"].status)
      assert.are.equal("ok", by["memlock limit"].status)
      for _, d in ipairs(lab.devices()) do
         assert.are.equal("ok", by["device " .. d.bdf].status, d.bdf)
         assert.are.equal("ok", by[("group %d"):format(d.group)].status, d.bdf)
      end
      local code, out, err = cmd("bin/vfio-poke --check")
      assert.are.equal(0, code, out .. err)
      assert.matches("^OK    IOMMU: Intel VT%-d", out)
      assert.not_matches("\nFAIL", out)
   end)

   it("fails a memlock limit below the VM's RAM, with the ulimit -l it needs", function()
      local code, out, err = cmd(LOW .. "bin/vfio-poke --check --mem 256M "
         .. lab.need("edu").bdf)
      assert.are.equal(1, code, out .. err)
      assert.matches("\nFAIL  memlock limit: 64 KiB %(RLIMIT_MEMLOCK%), less than the 256 MiB "
         .. "a VM would pin", out)
      assert.matches("\n      fix: ulimit %-l 262144 %(KiB%)", out)
   end)

   it("a DMA map over the memlock limit fails with ENOMEM naming the limit", function()
      collectgarbage()
      collectgarbage()
      local bdf = lab.need("edu").bdf
      local script = os.tmpname()
      files.writefile(script, ([[
         package.path = %q
         package.cpath = %q
         local vfio = require "vfio"
         local dev = assert(vfio.open(%q))
         local buf = assert(vfio.dmabuf(1 << 20))
         local ok, err, errno = dev.container:map_dma(buf, 0x100000)
         print(tostring(ok) .. "|" .. tostring(errno) .. "|" .. tostring(err))
         dev:close()
      ]]):format(package.path, package.cpath, bdf))
      local code, out, err = cmd(LOW .. "lua5.4 " .. script)
      os.remove(script)
      assert.are.equal(0, code, out .. err)
      assert.matches("^nil|12|[%u_]+_MAP[%u_]* .*: Cannot allocate memory: VFIO pins mapped "
         .. "memory against the memlock limit %(RLIMIT_MEMLOCK%), 64 KiB, with %d+ KiB locked "
         .. "already: this map needs at least %d+ KiB %(ulimit %-l %d+", out)
   end)

   it("vfio.bind refuses the lab's own file system device, saying what uses it", function()
      -- the lab's root and project trees are virtio-9p functions (lab/run): the host (the
      -- lab guest) uses them; bind is tried only on one vfio.host.users has found in use,
      -- so a miss fails here instead of unbinding the lab's file system
      local found
      for _, d in ipairs(vfio.devices()) do
         if d.bdf and d.driver ~= "vfio-pci" then
            local uses = vfio.host.users(d.bdf)
            local text = table.concat(uses, "; ")
            if text:match("9p file system %S+ is mounted on ") then found = d.bdf break end
         end
      end
      assert.is_string(found, "no virtio-9p function of the lab found in use")
      local ok, err, errno = vfio.bind(found)
      assert.is_nil(ok)
      assert.are.equal(16, errno)
      assert.matches("^bind " .. found:gsub("%p", "%%%0") .. ": the host uses this device: 9p "
         .. "file system %S+ is mounted on .*bind it anyway with {force = true}", err)
      assert.are_not.equal("vfio-pci", vfio.driver_of(found))
      -- and the REPL shows why a device cannot be opened, errno by name
      local poke = require "vfio.poke"
      local out = {}
      local s = poke.session(poke.env(), function(x) out[#out + 1] = x end)
      assert.are.equal("failed", s:feed(('d = open("%s")'):format(found)))
      assert.matches("^failed: open " .. found:gsub("%p", "%%%0") .. ": device is bound to "
         .. "%S+, not to vfio%-pci: call vfio%.bind%(.*%) first %(ENODEV%); d = nil\n$", out[#out])
   end)

   describe("a device taken from vfio-pci", function()
      local bdf
      after_each(function()
         if bdf then assert(vfio.bind(bdf)) end
         bdf = nil
      end)

      it("is a warning that says to bind it, and passes once it is bound again", function()
         collectgarbage()
         collectgarbage()
         bdf = lab.need("pci-testdev").bdf
         assert(vfio.unbind(bdf, { probe = false }))
         local f = by_check(vfio.host.check { devices = { bdf } })["device " .. bdf]
         assert.are.equal("warn", f.status)
         assert.are.equal("bound to no driver", f.found)
         assert.matches('bind it to vfio%-pci: vfio%-poke, then bind%("' .. bdf:gsub("%p", "%%%0"), f.fix)
         assert(vfio.bind(bdf))
         f = by_check(vfio.host.check { devices = { bdf } })["device " .. bdf]
         assert.are.equal("ok", f.status)
      end)
   end)
end)
