-- The host-side decompression and the 64-bit entry (vfio.vmm.vmlinux, linux.load_vmlinux):
-- stand-in bzImages whose 32-bit code (the decompressor's place) and whose compressed
-- payload (a 64-bit ELF) print different things, booted on the host's /dev/kvm; the ELF
-- checks against hostile headers; and the lab's real kernels, whose decompressed
-- program headers are read back by binutils' readelf.
local asm = require "support.asm"
local files = require "support.files"
local vmm = require "vfio.vmm.vm"
local vmlinux = require "vfio.vmm.vmlinux"
local linux = require "vfio.vmm.linux"
local kvmhost = require "support.kvm"

local MiB = 1 << 20

local function put(s, off, fmt, ...)
   local b = string.pack("<" .. fmt, ...)
   return s:sub(1, off) .. b .. s:sub(off + #b + 1)
end

-- A 64-bit ELF executable from segments {{paddr=, bytes=, memsz=}}, entry at the first.
local function elf(segs, entry)
   local phoff, n = 64, #segs
   local data_at = 0x1000
   local ph, body = {}, {}
   for i, s in ipairs(segs) do
      ph[i] = string.pack("<I4I4I8I8I8I8I8I8", 1, 7, s.offset or data_at, s.vaddr or s.paddr, s.paddr,
                          s.filesz or #s.bytes, s.memsz or #s.bytes, 0x1000)
      body[i] = s.bytes .. ("\0"):rep((-#s.bytes) % 0x1000)
      data_at = data_at + #body[i]
   end
   local eh = "\127ELF\2\1\1" .. ("\0"):rep(9)
      .. string.pack("<I2I2I4I8I8I8I4I2I2I2I2I2I2", 2, 62, 1, entry or segs[1].paddr, phoff, 0, 0, 64, 56, n, 64, 0, 0)
   local head = eh .. table.concat(ph)
   return head .. ("\0"):rep(0x1000 - #head) .. table.concat(body)
end

-- The 64-bit stand-in kernel at 2 MiB: the command line (RSI = boot_params, cmd_line_ptr
-- at 0x228) and "vmlinux" on the UART, then a reset through the i8042.
local function kernel64()
   local code = assert(asm.assemble([[
.code64
         mov 0x228(%rsi), %ebx
         mov $0x3f8, %dx
      1: movb (%rbx), %al
         test %al, %al
         jz 2f
         out %al, %dx
         inc %rbx
         jmp 1b
      2: lea msg(%rip), %rbx
      3: movb (%rbx), %al
         test %al, %al
         jz 4f
         out %al, %dx
         inc %rbx
         jmp 3b
      4: mov $0xfe, %al
         out %al, $0x64
         hlt
      msg: .asciz "\nvmlinux\n"
]], 0x200000))
   return elf { { paddr = 0x200000, bytes = code, memsz = #code + 0x10000 } }
end

-- The 32-bit stand-in for the decompressor: "decompressor" on the UART, then a reset.
local function decompressor32()
   local t = { ".code32\n mov $0x3f8, %dx\n" }
   for c in ("decompressor\n"):gmatch(".") do t[#t + 1] = ("mov $0x%x, %%al\n out %%al, %%dx\n"):format(c:byte()) end
   t[#t + 1] = "mov $0xfe, %al\n out %al, $0x64\n hlt\n"
   return assert(asm.assemble(table.concat(t), 0x100000))
end

local function compress(bytes, cmd)
   local base = os.tmpname()
   files.writefile(base, bytes)
   files.sh(("%s < %s > %s.z"):format(cmd, base, base))
   local z = files.readfile(base .. ".z")
   os.remove(base); os.remove(base .. ".z")
   return z
end

-- A bzImage: one setup sector, the 32-bit code, then the payload: the compressed bytes
-- and their uncompressed size, as the kernel build appends it (gzip's own trailer ends
-- with that size, so nothing is appended to gzip: size nil).
local function bzimage(code32, z, size)
   local tail = size and string.pack("<I4", size) or ""
   local s = ("\0"):rep(1024)
   s = put(s, 0x1f1, "B", 1)
   s = put(s, 0x1fe, "I2", 0xaa55)
   s = put(s, 0x200, "BB", 0xeb, 0x66)
   s = put(s, 0x202, "c4I2", "HdrS", 0x20f)
   s = put(s, 0x211, "B", 0x01)
   s = put(s, 0x214, "I4", 0x100000)
   s = put(s, 0x22c, "I4", 0x7fffffff)
   s = put(s, 0x230, "I4", 0x200000)
   s = put(s, 0x238, "I4", 2047)
   s = put(s, 0x248, "I4I4", #code32, #z + #tail)   -- payload_offset, payload_length
   s = put(s, 0x258, "I8", 0x1000000)
   s = put(s, 0x260, "I4", 0x400000)
   return s .. code32 .. z .. tail
end

local function tmpdir()
   local d = os.tmpname()
   os.remove(d)
   files.sh("mkdir -p " .. d)
   return d
end

local function listdir(d)
   local out = {}
   for _, n in ipairs(require("posix.dirent").dir(d)) do
      if n ~= "." and n ~= ".." then out[#out + 1] = n end
   end
   table.sort(out)
   return out
end

local function boot(image, opts)
   local m, err = vmm.create { mem_mib = 64 }
   if not m then return nil, err end
   opts.image, opts.stdout, opts.timeout = image, false, 10
   local r, why = require("vfio.vmm.boot_linux").boot(m, opts)
   return r, m, why
end

describe("vfio.vmm.vmlinux: the kernel decompressed on the host", function()
   local vml = kernel64()
   local gz = bzimage(decompressor32(), compress(vml, "gzip -9"))

   it("finds the payload and its compression from the setup header", function()
      local p = assert(vmlinux.payload(gz))
      assert.are.equal("gzip", p.format)
      assert.are.equal(#vml, p.size)
      local xz = assert(vmlinux.payload(bzimage(decompressor32(), compress(vml, "xz -9 --check=crc32"), #vml)))
      assert.are.equal("xz", xz.format)
      local old = put(gz, 0x206, "I2", 0x207)
      assert.is_nil(vmlinux.payload(old))
      assert.matches("2.08 or later", select(2, vmlinux.payload(old)))
      assert.matches("outside the", select(2, vmlinux.payload(put(gz, 0x24c, "I4", #gz))))
      local zeros = bzimage(decompressor32(), ("\0"):rep(64), 64)
      assert.matches("not recognized %(starts 00 ", select(2, vmlinux.payload(zeros)))
      assert.matches("no HdrS", select(2, vmlinux.payload(("\0"):rep(4096))))
   end)

   it("decompresses each format this host has a tool for, once, into a cache named by SHA-256", function()
      local dir = tmpdir() .. "/not/made/yet"   -- made as a cache directory needs
      local tried = {}
      for _, f in ipairs { { "gzip", "gzip -9" }, { "xz", "xz --check=crc32" }, { "bzip2", "bzip2" },
                           { "lzma", "xz --format=lzma" }, { "zstd", "zstd -q" }, { "lz4", "lz4 -l -q" } } do
         local tool = f[2]:match("^%S+")
         if vmlinux.have_tool(tool) then
            local img = bzimage(decompressor32(), compress(vml, f[2]), f[1] ~= "gzip" and #vml or nil)
            local d = assert(vmlinux.decompress(img, { cache_dir = dir }))
            assert.are.equal(f[1], d.format)
            assert.is_false(d.cached)
            assert.are.equal(vml, files.readfile(d.path))
            local key = d.path:match("/(%x+)%.vmlinux$")
            assert.are.equal(64, #key)
            local again = assert(vmlinux.decompress(img, { cache_dir = dir }))
            assert.is_true(again.cached)
            assert.are.equal(d.path, again.path)
            tried[#tried + 1] = f[1]
         end
      end
      assert.is_true(#tried >= 2, "gzip and xz at least")        -- lab/setup installs xz-utils
      assert.are.equal(#tried, #listdir(dir))                    -- no temporary files left
      files.sh("rm -rf " .. dir)
   end)

   it("remembers a file's hash by its path, size and times, and hashes a changed file again", function()
      local dir, work = tmpdir(), tmpdir()
      local path = work .. "/bzImage"
      files.writefile(path, gz)
      local image, known = assert(vmlinux.read_image(path))
      assert.are.equal(gz, image)
      assert.is_string(known)
      local d = assert(vmlinux.decompress(gz, { path = path, known = known, cache_dir = dir }))
      local sha = d.path:match("/(%x+)%.vmlinux$")
      local index = listdir(dir .. "/index")
      assert.are.equal(1, #index)
      assert.are.equal(sha .. " " .. path .. "\n", files.readfile(dir .. "/index/" .. index[1]))
      -- an index entry that names another file is not believed
      files.writefile(dir .. "/index/" .. index[1], ("0"):rep(64) .. " /elsewhere\n")
      assert.are.equal(d.path, assert(vmlinux.decompress(gz, { path = path, known = known, cache_dir = dir })).path)
      assert.are.equal(sha .. " " .. path .. "\n", files.readfile(dir .. "/index/" .. index[1]))
      -- another kernel at the same path: another size, so another entry, another hash
      local xz = bzimage(decompressor32(), compress(vml, "xz --check=crc32"), #vml)
      files.writefile(path, xz)
      local xzimage, xzknown = assert(vmlinux.read_image(path))
      assert.are_not.equal(known, xzknown)
      local d2 = assert(vmlinux.decompress(xzimage, { path = path, known = xzknown, cache_dir = dir }))
      assert.are_not.equal(d.path, d2.path)
      assert.are.equal(2, #listdir(dir .. "/index"))
      files.sh("rm -rf " .. dir .. " " .. work)
   end)

   it("falls back to a private directory under $TMPDIR when the cache cannot be written", function()
      local stdlib = require "posix.stdlib"
      local tmp = tmpdir()
      local saved_cache, saved_tmp = os.getenv("LUAVFIO_CACHE"), os.getenv("TMPDIR")
      stdlib.setenv("LUAVFIO_CACHE", "/proc/luavfio-not-writable")
      stdlib.setenv("TMPDIR", tmp)
      local ok, err = pcall(function()
         local d = assert(vmlinux.decompress(gz))
         local uid = require("posix.unistd").geteuid()
         local want = ("%s/luavfio-vmlinux-%d/"):format(tmp, uid)
         assert.are.equal(want, d.path:sub(1, #want))
         assert.is_false(d.cached)
         assert.is_true(assert(vmlinux.decompress(gz)).cached)
         -- a directory others could have written to is not trusted
         files.sh(("chmod 755 %s/luavfio-vmlinux-%d"):format(tmp, uid))
         local none, why, reason = vmlinux.decompress(gz)
         assert.is_nil(none)
         assert.are.equal("cache", reason)
         assert.matches("^kernel cache /proc/luavfio%-not%-writable/vmlinux: ", why)
      end)
      stdlib.setenv("LUAVFIO_CACHE", saved_cache)
      stdlib.setenv("TMPDIR", saved_tmp)
      files.sh("rm -rf " .. tmp)
      assert(ok, err)
   end)

   it("refuses a payload that does not decompress to its recorded size, caching nothing", function()
      local dir = tmpdir()
      local z = compress(vml, "gzip -9")
      local broken = z:sub(1, 40) .. string.char(z:byte(41) ~ 0xff) .. z:sub(42)
      local d, err, reason = vmlinux.decompress(bzimage(decompressor32(), broken), { cache_dir = dir })
      assert.is_nil(d)
      assert.are.equal("corrupt", reason)
      assert.matches("^gzip %-d failed on the kernel's payload", err)
      local xz = compress(vml, "xz --check=crc32")
      d, err, reason = vmlinux.decompress(bzimage(decompressor32(), xz, #vml + 1), { cache_dir = dir })
      assert.is_nil(d)
      assert.are.equal("corrupt", reason)
      assert.are.equal(("the kernel's payload decompressed to %d bytes; its header says %d")
                       :format(#vml, #vml + 1), err)
      assert.are.same({}, listdir(dir))
      files.sh("rm -rf " .. dir)
   end)

   it("boots the vmlinux at its 64-bit entry, or the decompressor at the 32-bit one #kvm", function()
      local usable, no_kvm = kvmhost.usable()
      if not usable then pending(no_kvm) return end
      local dir = tmpdir()
      local r, m = boot(gz, { decompress = "host", cache_dir = dir, append = "x=1" })
      if not r then pending(m) return end
      assert.are.equal("reboot", r.result)
      assert.matches("x=1\nvmlinux\n$", r.output)
      assert.is_false(m.vmlinux.cached)
      assert.is_true(m.linux.long_mode)
      m:close()
      r, m = boot(gz, { cache_dir = dir })                      -- auto: host, from the cache now
      assert.matches("\nvmlinux\n$", r.output)
      assert.is_true(m.vmlinux.cached)
      assert.is_nil(m.boot_note)
      m:close()
      r, m = boot(gz, { decompress = "guest", cache_dir = dir })
      assert.are.equal("reboot", r.result)
      assert.are.equal("decompressor\n", r.output)
      assert.is_nil(m.linux.long_mode)
      m:close()
      -- a vmlinux given as the kernel itself
      r, m = boot(vml, { cache_dir = dir })
      assert.matches("\nvmlinux\n$", r.output)
      m:close()
      files.sh("rm -rf " .. dir)
   end)

   it("falls back to the guest's decompressor when the host lacks the tool, unless told host #kvm", function()
      local usable, no_kvm = kvmhost.usable()
      if not usable then pending(no_kvm) return end
      local dir = tmpdir()
      local gzip = vmlinux.FORMATS[1]
      local saved = gzip.cmd
      gzip.cmd = { "luavfio-no-such-gunzip", "-dc" }
      local ok, err = pcall(function()
         local r, m = boot(gz, { cache_dir = dir })
         if not r then return end
         assert.are.equal("decompressor\n", r.output)
         assert.are.equal("the guest decompresses the kernel: the kernel is gzip-compressed and "
                          .. "luavfio-no-such-gunzip is not installed", m.boot_note)
         m:close()
         local r2, m2, why = boot(gz, { cache_dir = dir, decompress = "host" })
         assert.is_nil(r2)
         assert.matches("luavfio%-no%-such%-gunzip is not installed", why)
         m2:close()
      end)
      gzip.cmd = saved
      assert(ok, err)
      -- a corrupt payload is an error in every mode: the guest's decompressor would fail too
      local z = compress(vml, "xz --check=crc32")
      local r, m, why = boot(bzimage(decompressor32(), z, #vml + 8), { cache_dir = dir })
      assert.is_nil(r)
      assert.matches("decompressed to", why)
      m:close()
      files.sh("rm -rf " .. dir)
   end)
end)

describe("vfio.vmm.vmlinux: a cache nobody else can plant", function()
   local vml = kernel64()
   local gz = bzimage(decompressor32(), compress(vml, "gzip -9"))
   local other = elf { { paddr = 0x200000, bytes = ("\244"):rep(64) } } -- a kernel of someone else's
   local root = require("posix.unistd").geteuid() == 0

   local function sha_of(bytes)
      local f = os.tmpname()
      files.writefile(f, bytes)
      local p = io.popen("sha256sum < " .. f)
      local h = p:read("a"):match("^(%x+)")
      p:close()
      os.remove(f)
      return h
   end

   it("refuses a cache directory another user owns or others may write to, or one below such a directory", function()
      if not root then pending("chown to another user needs root") return end
      local base = tmpdir()
      local function refused(dir, pattern)
         local d, err, reason = vmlinux.decompress(gz, { cache_dir = dir })
         assert.is_nil(d, dir)
         assert.are.equal("cache", reason)
         assert.matches(pattern, err)
         assert.are.same({}, listdir(dir))                   -- nothing written there
      end
      local theirs = base .. "/theirs"
      files.sh(("mkdir -p %s && chown nobody %s"):format(theirs, theirs))
      refused(theirs, "^kernel cache .*theirs: .*theirs is owned by uid 65534, not by this user")
      local open = base .. "/open"
      files.sh(("mkdir -p %s && chmod o+w %s"):format(open, open))
      refused(open, "^kernel cache .*open: .*open is writable by group or others")
      -- as with HOME unset (/tmp/.cache/luavfio/vmlinux): a parent made by someone else
      local parent = base .. "/dotcache"
      files.sh(("mkdir -p %s/luavfio/vmlinux && chown nobody %s"):format(parent, parent))
      refused(parent .. "/luavfio/vmlinux", "dotcache %(above .*%) is owned by uid 65534, neither root nor this user")
      -- the cache found through the environment falls back to this user's private
      -- directory under $TMPDIR, saying why
      local stdlib = require "posix.stdlib"
      local saved_cache, saved_tmp = os.getenv("LUAVFIO_CACHE"), os.getenv("TMPDIR")
      stdlib.setenv("LUAVFIO_CACHE", theirs)
      stdlib.setenv("TMPDIR", base)
      local ok, err = pcall(function()
         local d = assert(vmlinux.decompress(gz))
         assert.are.equal(base .. "/luavfio-vmlinux-0/", d.path:sub(1, #base + 19))
         assert.matches("^kernel cache .*theirs/vmlinux: .*theirs %(above .*%) is owned by uid 65534", d.note)
         d.file:close()
      end)
      stdlib.setenv("LUAVFIO_CACHE", saved_cache)
      stdlib.setenv("TMPDIR", saved_tmp)
      assert(ok, err)
      files.sh("rm -rf " .. base)
   end)

   it("refuses a cached kernel another user owns or others may write to, and boots only the checked handle", function()
      local dir = tmpdir()
      local d = assert(vmlinux.decompress(gz, { cache_dir = dir }))
      assert.are.equal(vml, files.readfile(d.path))
      if d.file then d.file:close() end
      -- planted: another kernel of the same size under this kernel's name
      files.writefile(d.path, other .. ("\0"):rep(#vml - #other))
      if root then
         files.sh("chown nobody " .. d.path)
         local none, err, reason = vmlinux.decompress(gz, { cache_dir = dir })
         assert.is_nil(none)
         assert.are.equal("cache", reason)
         assert.are.equal(("kernel cache: %s is owned by uid 65534, not by this user (uid 0): "
                           .. "not booted (remove it)"):format(d.path), err)
         files.sh("chown 0 " .. d.path)
      end
      files.sh("chmod o+w " .. d.path)
      local none, err, reason = vmlinux.decompress(gz, { cache_dir = dir })
      assert.is_nil(none)
      assert.are.equal("cache", reason)
      assert.matches("is writable by group or others %(mode %d+%): not booted", err)
      files.sh("rm -rf " .. dir)
   end)

   it("ignores an index entry another user wrote", function()
      if not root then pending("chown to another user needs root") return end
      local dir, work = tmpdir(), tmpdir()
      local path = work .. "/bzImage"
      files.writefile(path, gz)
      local image, known = files.readfile(path), nil
      if vmlinux.read_image then image, known = assert(vmlinux.read_image(path)) end
      local d = assert(vmlinux.decompress(image, { path = path, known = known, cache_dir = dir }))
      if d.file then d.file:close() end
      -- someone else's index entry sends this path to their kernel, filed under its hash
      local theirs = sha_of(other)
      files.writefile(("%s/%s.vmlinux"):format(dir, theirs), other .. ("\0"):rep(#vml - #other))
      local entry = dir .. "/index/" .. listdir(dir .. "/index")[1]
      files.writefile(entry, theirs .. " " .. path .. "\n")
      files.sh("chown nobody " .. entry)
      local again = assert(vmlinux.decompress(image, { path = path, known = known, cache_dir = dir }))
      assert.are.equal(d.path, again.path)
      assert.are.equal(vml, again.file:read("a"))
      again.file:close()
      files.sh("rm -rf " .. dir .. " " .. work)
   end)

   it("files a kernel under the hash of the bytes it decompressed, not of the file read again", function()
      local dir, work = tmpdir(), tmpdir()
      local path = work .. "/bzImage"
      files.writefile(path, gz)
      local image = files.readfile(path)
      -- the file changes after it was read: another kernel now lies there
      local xz = bzimage(decompressor32(), compress(other, "xz --check=crc32"), #other)
      files.writefile(path, xz)
      local d = assert(vmlinux.decompress(image, { path = path, cache_dir = dir }))
      assert.are.equal(("%s/%s.vmlinux"):format(dir, sha_of(gz)), d.path)
      assert.are.equal(vml, files.readfile(d.path))
      if d.file then d.file:close() end
      -- and the other kernel gets its own key
      local d2 = assert(vmlinux.decompress(xz, { path = path, cache_dir = dir }))
      assert.are.equal(("%s/%s.vmlinux"):format(dir, sha_of(xz)), d2.path)
      assert.are.equal(other, files.readfile(d2.path))
      if d2.file then d2.file:close() end
      files.sh("rm -rf " .. dir .. " " .. work)
   end)

   it("stops a decompressor whose output passes the size the header states", function()
      local dir = tmpdir()
      -- 64 MiB of zeros, about 10 KB of xz, in an image whose header says 4 KiB
      local bomb = compress(("\0"):rep(64 * MiB), "xz --check=crc32")
      assert.is_true(#bomb < 64 * 1024)
      local image = bzimage(decompressor32(), bomb, 4096)
      local d, err, reason = vmlinux.decompress(image, { cache_dir = dir })
      assert.is_nil(d)
      assert.are.equal("corrupt", reason)
      local stopped = tonumber(err:match("^the kernel's payload decompresses to more than the 4096 "
                                         .. "bytes its header says %(xz stopped after (%d+)%)$"))
      assert.is_number(stopped, err)
      assert.is_true(stopped <= 4096 + 65536)
      assert.are.same({}, listdir(dir))
      files.sh("rm -rf " .. dir)
   end)
end)

describe("vfio.vmm.vmlinux: ELF checks", function()
   local code = ("\144"):rep(64)
   local function parse(bytes, ram)
      return vmlinux.parse_elf(function(off, n) return bytes:sub(off + 1, off + n) end, #bytes, ram or 64 * MiB)
   end

   it("reads the loadable segments and the entry", function()
      local info = assert(parse(elf({ { paddr = 0x200000, bytes = code, memsz = 0x3000 },
                                      { paddr = 0x400000, bytes = code } }, 0x200010)))
      assert.are.equal(0x200010, info.entry)
      assert.are.equal(2, #info.segments)
      assert.are.equal(0x200000, info.start)
      assert.are.equal(0x400000 + #code, info.end_)
      assert.are.equal(0x3000, info.segments[1].memsz)
   end)

   it("explains each header it refuses", function()
      local good = elf { { paddr = 0x200000, bytes = code } }
      local cases = {
         { "not an ELF file", "" },
         { "not an ELF file", ("\0"):rep(4096) },
         { "not a little%-endian 64%-bit ELF", put(good, 4, "B", 1) },
         { "not a little%-endian 64%-bit ELF", put(good, 5, "B", 2) },
         { "machine 3 is not x86%-64", put(good, 18, "I2", 3) },
         { "type 3 is not an executable", put(good, 16, "I2", 3) },
         { "program header size 32", put(good, 54, "I2", 32) },
         { "has 0 program headers", put(good, 56, "I2", 0) },
         { "has 65 program headers", put(good, 56, "I2", 65) },
         { "program headers lie outside", put(good, 32, "I8", #good) },
         { "program headers lie outside", put(good, 32, "I8", -1) },
         { "segment 0 lies outside the file", put(good, 64 + 8, "I8", #good) },        -- p_offset
         { "segment 0 lies outside the file", put(good, 64 + 32, "I8", 1 << 40) },     -- p_filesz
         { "segment 0 lies outside the file", put(good, 64 + 32, "I8", -8) },
         { "segment 0 lies outside the file", put(good, 64 + 40, "I8", 8) },           -- memsz < filesz
         { "does not fit in RAM", elf { { paddr = 0x7000, bytes = code } } },
         { "does not fit in RAM", elf { { paddr = 64 * MiB - 32, bytes = code } } },
         { "does not fit in RAM", put(good, 64 + 24, "I8", -4096) },                   -- p_paddr
         { "does not fit in RAM", put(good, 64 + 40, "I8", math.maxinteger) },
         { "segments 0 and 1 overlap", elf { { paddr = 0x200000, bytes = code }, { paddr = 0x200020, bytes = code } } },
         { "entry 0x100 is outside its segments", elf({ { paddr = 0x200000, bytes = code } }, 0x100) },
         { "no loadable segment", put(good, 64, "I4", 4) },
      }
      for _, c in ipairs(cases) do
         local info, err = parse(c[2])
         assert.is_nil(info, c[1])
         assert.matches(c[1], err)
      end
   end)

   it("never raises on corrupted headers", function()
      local good = elf({ { paddr = 0x200000, bytes = code }, { paddr = 0x300000, bytes = code } })
      math.randomseed(7)
      for _ = 1, 2000 do
         local s = good
         for _ = 1, math.random(1, 6) do
            local at = math.random(0, 64 + 2 * 56 - 1)
            s = put(s, at, "B", math.random(0, 255))
         end
         local ok, info = pcall(parse, s)
         assert(ok, info)
         if info then
            for _, seg in ipairs(info.segments) do
               assert.is_true(seg.paddr >= MiB and seg.paddr + seg.memsz <= 64 * MiB)
               assert.is_true(seg.offset + seg.filesz <= #s)
            end
         end
      end
   end)
end)

describe("linux.load_vmlinux: the 64-bit entry's memory", function()
   local memory = require("support.guest_memory").new
   local code = ("\144"):rep(100)
   local image = elf { { paddr = 0x200000, bytes = code, memsz = 0x5000 } }

   it("places segments, identity page tables, a long-mode GDT and boot_params", function()
      local mem = memory(64 * MiB)
      local vml = assert(vmlinux.from_string(image, 64 * MiB))
      local info = assert(linux.load_vmlinux(mem, vml, { ram_size = 64 * MiB, cmdline = "console=ttyS0",
                                                        initrd = ("i"):rep(5000) }))
      assert.are.equal(0x200000, info.entry)
      assert.are.equal(code, mem:get(0x200000, #code))
      assert.are.equal(("\0"):rep(0x5000 - #code), mem:get(0x200000 + #code, 0x5000 - #code))
      assert.are.equal(0x200000 + 0x5000, info.kernel_end)
      -- PML4[0] -> PDPT, PDPT[0..3] -> four directories, 2 MiB pages mapping 0-4 GiB 1:1
      assert.are.equal(0x9000, info.cr3)
      assert.are.equal(0xa003, string.unpack("<I8", mem:get(0x9000, 8)))
      for i = 0, 3 do assert.are.equal(0xb003 + i * 0x1000, string.unpack("<I8", mem:get(0xa000 + 8 * i, 8))) end
      assert.are.equal(0x83, string.unpack("<I8", mem:get(0xb000, 8)))
      assert.are.equal((1 << 21) | 0x83, string.unpack("<I8", mem:get(0xb008, 8)))
      assert.are.equal((2047 << 21) | 0x83, string.unpack("<I8", mem:get(0xe000 + 511 * 8, 8)))
      -- GDT: 0x10 a 64-bit code segment (L set, D clear), 0x18 flat data
      local cs, ds = string.unpack("<I8I8", mem:get(0x1000 + 0x10, 16))
      assert.are.equal(1, (cs >> 53) & 1)
      assert.are.equal(0, (cs >> 54) & 1)
      assert.are.equal(0x00cf93000000ffff, ds)
      -- boot_params: a setup header of its own (no bzImage), the command line, the initrd
      local bp = mem:get(0x7000, 0x1000)
      assert.are.equal("HdrS", bp:sub(0x203, 0x206))
      assert.are.equal(0xaa55, string.unpack("<I2", bp, 0x1ff))
      assert.are.equal(0x20000, string.unpack("<I4", bp, 0x229))
      assert.are.equal("console=ttyS0\0", mem:get(0x20000, 14))
      local rd, rdsize = string.unpack("<I4I4", bp, 0x219)
      assert.are.equal(5000, rdsize)
      assert.are.equal(info.initrd, rd)
      assert.is_true(rd >= info.kernel_end and rd + 5000 <= 64 * MiB)
      assert.are.equal(0xff, bp:byte(0x211))
   end)

   it("checks the command line, the initrd and RAM, writing nothing", function()
      local function try(opts, img)
         local mem = memory(opts.ram_size)
         local vml = vmlinux.from_string(img or image, opts.ram_size)
         local info, err = linux.load_vmlinux(mem, vml, opts)
         assert.is_nil(info)
         assert.are.same({}, mem.chunks)
         return err
      end
      assert.matches("command line of 2048 bytes exceeds the kernel's cmdline_size 2047",
                     try { ram_size = 64 * MiB, cmdline = ("x"):rep(2048) })
      assert.matches("contains NUL", try { ram_size = 64 * MiB, cmdline = "a\0b" })
      assert.matches("initrd of 67108864 bytes does not fit",
                     try { ram_size = 64 * MiB, initrd = ("i"):rep(64 * MiB) })
      assert.matches("RAM size", try { ram_size = 1 * MiB })
   end)
end)

describe("vfio.vmm.vmlinux: the lab's kernels", function()
   local cache = os.getenv("LUAVFIO_CACHE")
   if not cache or cache == "" then
      cache = (os.getenv("XDG_CACHE_HOME") or ((os.getenv("HOME") or "") .. "/.cache")) .. "/luavfio"
   end
   local function kernels()
      local list = {}
      for _, dir in ipairs { cache .. "/lab/kernel", cache .. "/lab/kernel-6.12" } do
         local v = files.readfile(dir .. "/version")
         local path = v and dir .. "/boot/vmlinuz-" .. v:match("%S+")
         if path and io.open(path) then list[#list + 1] = path end
      end
      return list
   end

   it("decompress to the ELF binutils reads: the same entry and loadable segments", function()
      local list = kernels()
      if #list == 0 then pending("no lab kernel cached: lab/setup fetches and builds them") return end
      local dir = tmpdir()
      for _, path in ipairs(list) do
         local image = assert(files.readfile(path))
         local d = assert(vmlinux.decompress(image, { path = path, cache_dir = dir }))
         local info = assert(vmlinux.open(d.path, 512 * MiB))
         info.close()
         local p = io.popen("readelf -W -h -l " .. d.path)
         local out = p:read("a")
         p:close()
         assert.are.equal(tonumber(out:match("Entry point address:%s+(0x%x+)")), info.entry)
         local segs = {}
         for off, paddr, filesz, memsz in out:gmatch("\n%s+LOAD%s+(0x%x+) 0x%x+ (0x%x+) (0x%x+) (0x%x+)") do
            if tonumber(memsz) > 0 then
               segs[#segs + 1] = { tonumber(off), tonumber(paddr), tonumber(filesz), tonumber(memsz) }
            end
         end
         assert.are.equal(#segs, #info.segments, path)
         for i, s in ipairs(info.segments) do
            assert.are.same(segs[i], { s.offset, s.paddr, s.filesz, s.memsz })
         end
         -- Linux's vmlinux runs from its 16 MiB link address (CONFIG_PHYSICAL_START)
         assert.are.equal(0x1000000, info.start)
         assert.truthy(files.readfile(d.path):find("Linux version ", 1, true))
      end
      files.sh("rm -rf " .. dir)
   end)
end)
