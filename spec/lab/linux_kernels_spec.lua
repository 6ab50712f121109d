-- Kernels other than the default guest's, and the kernel's own decompressor, under
-- passthrough.lua: the lab's second kernel (Linux 6.12 built by lab/kernel/build: a
-- different version and configuration, gzip-compressed, its drivers built in) decompressed
-- on the host, driving nvme with its own driver; and Debian's kernel through the
-- decompressor in the guest (--decompress guest), the path a host without the payload's
-- tool falls back to.
local lab = require "support.lab"
local linux = require "support.linux_guest"
local files = require "support.files"
local sh = require("support.shell").run

local function kernel_612()
   local dir = assert(os.getenv("LUAVFIO_CACHE"), "run me with lab/run") .. "/lab/kernel-6.12"
   local v = files.readfile(dir .. "/version")
   return v and dir .. "/boot/vmlinuz-" .. v:match("%S+"), dir
end

describe("other kernels under passthrough.lua #nested", function()
   it("boots the lab's own 6.12 build decompressed on the host; its built-in nvme driver reads the disk", function()
      assert.is_true(lab.inside, "run me with lab/run")
      local kernel, dir = kernel_612()
      assert(kernel, "no 6.12 kernel in " .. dir .. ": lab/setup builds it")
      local image = assert(files.readfile(kernel))
      assert.are.equal("gzip", assert(require("vfio.vmm.vmlinux").payload(image)).format)
      -- no modules: the 6.12 build has its drivers built in
      local initrd = linux.initramfs(("--modules '' --run %s"):format(linux.CHECKS))
      collectgarbage(); collectgarbage()
      local run = "lua5.4 passthrough.lua --kernel %s --initrd %s --decompress host --timeout 240 --device %s"
      local out, code = sh(run:format(kernel, initrd, lab.need("nvme").bdf))
      assert.are.equal(0, code, out)
      assert.matches("Linux version 6%.12%.", out)
      assert.not_matches("the guest decompresses", out)
      local r = linux.parse(out)
      assert.is_true(r.init, out)
      assert.are.equal(0, r.checks_exit, out)
      assert.are.equal("nvme", r.pci["1b36:0010"] and r.pci["1b36:0010"].driver, out)
      for _, s in ipairs { 0, 1234, 16383 } do assert.are.equal("ok", r.reads[s], "sector " .. s .. ":\n" .. out) end
      assert.is_true(linux.irq_total(r, "^nvme0q%d+$") > 0, out)
   end)

   it("boots Debian's kernel through its own decompressor with --decompress guest", function()
      assert.is_true(lab.inside, "run me with lab/run")
      collectgarbage(); collectgarbage()
      local out, code = sh(("lua5.4 passthrough.lua --kernel %s --initrd %s --decompress guest --timeout 240"
                            .. " --device %s"):format(linux.kernel(), linux.initrd(), lab.need("edu").bdf))
      assert.are.equal(0, code, out)
      assert.matches("passthrough.lua: guest poweroff", out)
      local r = linux.parse(out)
      assert.is_true(r.init, out)
      assert.are.equal("none", r.pci["1234:11e8"] and r.pci["1234:11e8"].driver, out)
   end)
end)
