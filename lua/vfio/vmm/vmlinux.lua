---
-- The uncompressed kernel: a bzImage's payload decompressed on the host, once per kernel
-- (cached by its SHA-256), and the vmlinux ELF it holds, checked and placed in guest RAM.
--
-- Why: a bzImage carries the kernel compressed (Debian's: 8 MB of XZ) behind a small
-- decompressor that runs in the guest before Linux does. Under the lab's nested KVM on
-- TCG that decompression, the copy before it and the KASLR relocation pass after it are
-- seconds of every boot. Done once on the host, every later boot enters the kernel at
-- its 64-bit entry directly, as firecracker and cloud-hypervisor boot a vmlinux. The
-- kernel then runs at its link address: no KASLR in the guest (the decompressor chose
-- it); `decompress = "guest"` keeps the decompressor and its KASLR.
--
-- Every field of the image and of the ELF comes from an untrusted file and is checked
-- before it is used; a decompressor's output is bounded by the size the bzImage records
-- for it (the tool is stopped past it) and checked against it before it enters the cache.
--
-- The cache's rules, since a kernel found there is booted:
-- - the cache directory and every file in it must be this user's own and not writable by
--   group or others, and every directory above it owned by root or this user and not
--   writable by others unless sticky (/tmp): checked with lstat on the directory, and
--   with fstat on each file once it is open (the handle checked is the one read, never a
--   path checked and then opened again). A directory that fails is not used (the next
--   one is, else decompress fails with reason "cache" and the guest decompresses); a
--   cached file that fails is refused, naming it;
-- - a kernel is filed under the SHA-256 of the very bytes that were decompressed (the
--   bytes in hand, never the file hashed again), and an index entry (path, size, times
--   -> hash) is written only for bytes read while the file's size and times held still
--   (M.read_image).
-- @module vfio.vmm.vmlinux
local M = {}

local MiB = 1 << 20

-- The compressions a bzImage's payload can have (the kernel's KERNEL_* choices), by the
-- magic at the payload's start, and the host tool that undoes each. The kernel build
-- appends the uncompressed size to every payload but gzip's, whose own trailer ends with
-- it (ISIZE): trailer = true.
M.FORMATS = {
   { name = "gzip", magic = "\31\139", cmd = { "gzip", "-dc" }, trailer = true },
   { name = "bzip2", magic = "BZh", cmd = { "bzip2", "-dc" } },
   { name = "lzma", magic = "\93\0\0", cmd = { "xz", "-dc", "--format=lzma" } },
   { name = "xz", magic = "\253" .. "7zXZ\0", cmd = { "xz", "-dc" } },
   { name = "lzo", magic = "\137LZO\0", cmd = { "lzop", "-dc" } },
   { name = "lz4", magic = "\2\33\76\24", cmd = { "lz4", "-dc" } },
   { name = "zstd", magic = "\40\181\47\253", cmd = { "zstd", "-dc", "-q" } },
}

-- setup header fields (boot.rst) the payload needs: protocol 2.08 or later
local OFF_SETUP_SECTS, OFF_HEADER, OFF_VERSION = 0x1f1, 0x202, 0x206
local OFF_PAYLOAD_OFFSET, OFF_PAYLOAD_LENGTH = 0x248, 0x24c

local function u32(s, off) return (string.unpack("<I4", s, off + 1)) end

local function quote(s) return "'" .. s:gsub("'", "'\\''") .. "'" end

---
-- payload(image) -> {format=, cmd=, data=compressed bytes, size=uncompressed size} or
-- nil, message. The last four bytes of a payload are its uncompressed size (the kernel
-- build's size_append, or gzip's ISIZE; the decompressor reads them the same way).
function M.payload(image)
   if type(image) ~= "string" then error("image must be a string", 2) end
   if #image < 0x254 or image:sub(OFF_HEADER + 1, OFF_HEADER + 4) ~= "HdrS" then
      return nil, "not a bzImage (no HdrS magic)"
   end
   local version = string.unpack("<I2", image, OFF_VERSION + 1)
   if version < 0x208 then
      return nil, ("boot protocol %d.%02d has no payload fields (2.08 or later needed)")
         :format(version >> 8, version & 0xff)
   end
   local sects = image:byte(OFF_SETUP_SECTS + 1)
   if sects == 0 then sects = 4 end
   local base = (sects + 1) * 512
   local off, len = u32(image, OFF_PAYLOAD_OFFSET), u32(image, OFF_PAYLOAD_LENGTH)
   if len < 8 or base + off + len > #image then
      return nil, ("payload (offset 0x%x, %d bytes) lies outside the %d-byte image"):format(off, len, #image)
   end
   local data = image:sub(base + off + 1, base + off + len)
   local size = u32(image, base + off + len - 4)
   for _, f in ipairs(M.FORMATS) do
      if data:sub(1, #f.magic) == f.magic then
         return { format = f.name, cmd = f.cmd, data = f.trailer and data or data:sub(1, -5), size = size }
      end
   end
   return nil, ("payload compression not recognized (starts %s)"):format(
      (data:sub(1, 6):gsub(".", function(c) return ("%02x "):format(c:byte()) end)))
end

-- The ELF64 program header table of a vmlinux, checked. parse_elf(read, file_size,
-- ram_size) -> {entry=, segments={{index=, paddr=, offset=, filesz=, memsz=}}, start=,
-- end_=} or nil, message. read(offset, n) returns up to n bytes of the file from offset.
M.PT_LOAD = 1
M.MIN_PADDR = MiB -- below: the zero page, the boot tables and the BIOS area

--- Parse and check a vmlinux's ELF64 program headers (see the comment above PT_LOAD).
function M.parse_elf(read, file_size, ram_size)
   -- the kernel is written below the hole: RAM from 4 GiB up holds none of it
   ram_size = math.min(ram_size, require("vfio.vmm.address_map").HOLE_START)
   local eh = file_size >= 64 and read(0, 64) or ""
   if #eh < 64 or eh:sub(1, 4) ~= "\127ELF" then return nil, "not an ELF file" end
   if eh:byte(5) ~= 2 or eh:byte(6) ~= 1 then return nil, "not a little-endian 64-bit ELF" end
   local etype, machine = string.unpack("<I2I2", eh, 17)
   if machine ~= 62 then return nil, ("ELF machine %d is not x86-64"):format(machine) end
   if etype ~= 2 then return nil, ("ELF type %d is not an executable"):format(etype) end
   local entry, phoff = string.unpack("<I8I8", eh, 25)
   local phentsize, phnum = string.unpack("<I2I2", eh, 55)
   if phentsize ~= 56 then return nil, ("ELF program header size %d (56 expected)"):format(phentsize) end
   if phnum == 0 or phnum > 64 then return nil, ("ELF has %d program headers"):format(phnum) end
   if phoff < 64 or phoff > file_size - phnum * 56 then
      return nil, "ELF program headers lie outside the file"
   end
   local head = read(phoff, phnum * 56)
   if #head ~= phnum * 56 then return nil, "ELF program headers lie outside the file" end
   local segs, lo, hi = {}, math.maxinteger, 0
   for i = 0, phnum - 1 do
      local p = i * 56 + 1
      local ptype = string.unpack("<I4", head, p)
      if ptype == M.PT_LOAD then
         local offset, _, paddr, filesz, memsz = string.unpack("<I8I8I8I8I8", head, p + 8)
         -- unsigned 64-bit values read as Lua integers: a huge one is negative
         if offset < 0 or filesz < 0 or memsz < 0 or filesz > memsz
            or offset > file_size or filesz > file_size - offset then
            return nil, ("ELF segment %d lies outside the file"):format(i)
         end
         if memsz > 0 then
            if paddr < M.MIN_PADDR or memsz > ram_size or paddr > ram_size - memsz then
               return nil, ("kernel segment at 0x%x (%d bytes) does not fit in RAM from 1 MiB to %d MiB"
                  .. " (--mem %d)"):format(paddr, memsz, (ram_size + MiB - 1) // MiB, ram_size // MiB)
            end
            for _, s in ipairs(segs) do
               if paddr < s.paddr + s.memsz and s.paddr < paddr + memsz then
                  return nil, ("ELF segments %d and %d overlap"):format(s.index, i)
               end
            end
            segs[#segs + 1] = { index = i, paddr = paddr, offset = offset, filesz = filesz, memsz = memsz }
            lo, hi = math.min(lo, paddr), math.max(hi, paddr + memsz)
         end
      end
   end
   if #segs == 0 then return nil, "ELF has no loadable segment" end
   local inside
   for _, s in ipairs(segs) do
      if entry >= s.paddr and entry < s.paddr + s.filesz then inside = true end
   end
   -- a vmlinux's e_entry is the physical address of startup_64 (ENTRY(phys_startup_64))
   if not inside then return nil, ("ELF entry 0x%x is outside its segments"):format(entry) end
   return { entry = entry, segments = segs, start = lo, end_ = hi }
end

---
-- The cache directory: opts.cache_dir, else $LUAVFIO_CACHE/vmlinux, else
-- $XDG_CACHE_HOME/luavfio/vmlinux, else ~/.cache/luavfio/vmlinux.
function M.cache_dir(opts)
   if opts and opts.cache_dir then return opts.cache_dir end
   local base = os.getenv("LUAVFIO_CACHE")
   if not base then
      local xdg = os.getenv("XDG_CACHE_HOME")
      base = (xdg and xdg ~= "" and xdg or ((os.getenv("HOME") or "/tmp") .. "/.cache")) .. "/luavfio"
   end
   return base .. "/vmlinux"
end

---
-- Where a cache that cannot be written falls back to (a read-only home, the lab's
-- read-only view of the host): a directory of this user's own under $TMPDIR, used only
-- when it is a real directory owned by this user and closed to everyone else, since a
-- kernel found there is booted.
function M.private_tmp_dir()
   local unistd, stat = require "posix.unistd", require "posix.sys.stat"
   local uid = unistd.geteuid()
   local dir = ("%s/luavfio-vmlinux-%d"):format(os.getenv("TMPDIR") or "/tmp", uid)
   stat.mkdir(dir, tonumber("700", 8))
   local st = stat.lstat(dir)
   if not st or stat.S_ISDIR(st.st_mode) == 0 or st.st_uid ~= uid or st.st_mode & tonumber("077", 8) ~= 0 then
      return nil, ("%s is not a private directory of this user"):format(dir)
   end
   return dir
end

local S_IWGO, S_ISVTX = tonumber("022", 8), tonumber("1000", 8)

-- Why a file or directory (its lstat or fstat) is not this user's own and closed to
-- writes by group and others; nil when it is.
local function not_private(st, what, uid)
   if st.st_uid ~= uid then
      return ("%s is owned by uid %d, not by this user (uid %d)"):format(what, st.st_uid, uid)
   end
   if st.st_mode & S_IWGO ~= 0 then
      return ("%s is writable by group or others (mode %o)"):format(what, st.st_mode & tonumber("7777", 8))
   end
end

---
-- trusted_dir(dir) -> its real path, or nil, why: dir is a directory of this user's own
-- that nobody else can write to, below directories only root or this user can change
-- (a directory others may write to must be sticky, as /tmp is).
function M.trusted_dir(dir)
   local stat, unistd = require "posix.sys.stat", require "posix.unistd"
   local uid = unistd.geteuid()
   local real = require("posix.stdlib").realpath(dir)
   if not real then return nil, ("%s does not exist"):format(dir) end
   local at = ""
   local parts = {}
   for part in real:gmatch("[^/]+") do parts[#parts + 1] = part end
   for i = 0, #parts - 1 do
      at = i == 0 and "/" or (at == "/" and "" or at) .. "/" .. parts[i]
      local st = stat.lstat(at)
      if not st or stat.S_ISDIR(st.st_mode) == 0 then return nil, ("%s is not a directory"):format(at) end
      if st.st_uid ~= 0 and st.st_uid ~= uid then
         return nil, ("%s (above %s) is owned by uid %d, neither root nor this user (uid %d)")
            :format(at, dir, st.st_uid, uid)
      end
      if st.st_mode & S_IWGO ~= 0 and st.st_mode & S_ISVTX == 0 then
         return nil, ("%s (above %s) is writable by group or others and not sticky"):format(at, dir)
      end
   end
   local st = stat.lstat(real)
   if not st or stat.S_ISDIR(st.st_mode) == 0 then return nil, ("%s is not a directory"):format(dir) end
   local why = not_private(st, dir, uid)
   if why then return nil, why end
   return real
end

-- open_private(path) -> an open file (read), or nil (absent) | false, why (there, but
-- not a regular file of this user's own closed to others' writes), checked by fstat on
-- the handle returned.
local function open_private(path)
   local f = io.open(path, "rb")
   if not f then return nil end
   local st = require("posix.sys.stat").fstat(require("posix.stdio").fileno(f))
   local why
   if not st or require("posix.sys.stat").S_ISREG(st.st_mode) == 0 then
      why = ("%s is not a regular file"):format(path)
   else
      why = not_private(st, path, require("posix.unistd").geteuid())
   end
   if why then
      f:close()
      return false, why
   end
   return f, st.st_size
end

local function sh(cmd)
   local ok, how, code = os.execute(cmd)
   return ok == true, how, code
end

-- mkdir -p, quietly: a directory that cannot be made shows up as the open that fails next
local function make_dirs(path)
   local mkdir = require("posix.sys.stat").mkdir
   local at = path:sub(1, 1) == "/" and "" or "."
   for part in path:gmatch("[^/]+") do
      at = at .. "/" .. part
      mkdir(at, tonumber("755", 8))
   end
end


---
-- Does a tool run here? (The lab and Debian have gzip and xz; zstd, lz4 and lzop are
-- packages of their own.)
function M.have_tool(name)
   return sh(("command -v %s >/dev/null 2>&1"):format(quote(name)))
end

local index_lookup, index_store

---
-- The SHA-256 of bytes in hand (never of a file that may have changed since they were
-- read), or nil.
function M.sha256(bytes)
   local out = os.tmpname() -- made by mkstemp: ours, mode 0600
   local p = io.popen(("sha256sum > %s 2>/dev/null"):format(quote(out)), "w")
   if not p then os.remove(out) return nil end
   p:write(bytes)
   local ok = p:close()
   local f = io.open(out, "rb")
   local line = f and f:read("a") or ""
   if f then f:close() end
   os.remove(out)
   return ok and line:match("^(%x+)") or nil
end

-- Hashing a bzImage costs a second under TCG, so a file's hash is remembered in the
-- cache's index/, under its path, size, mtime and ctime (not its inode: the lab's 9p
-- view of the host renumbers inodes). A file rewritten in place within one second at
-- the same size would be missed; a new file (a copy, a rename, a rebuild) is not.
local function stat_key(path, st)
   local name = path:gsub("[^%w%.%-]", "_")
   if #name > 160 then name = name:sub(-160) end
   return ("%s@%d-%d-%d.sha256"):format(name, st.st_size, st.st_mtime, st.st_ctime)
end

---
-- read_image(path) -> bytes, known | nil, message: a kernel file's bytes, and the index
-- key of the file they came from (nil when its size or times changed while it was read:
-- such bytes are hashed, never looked up). Pass both to decompress: {path =, known =}.
function M.read_image(path)
   local stat = require "posix.sys.stat"
   local f, err = io.open(path, "rb")
   if not f then return nil, err end
   local fd = require("posix.stdio").fileno(f)
   local before = stat.fstat(fd)
   local bytes = f:read("a")
   local after = stat.fstat(fd)
   f:close()
   if not bytes then return nil, ("%s: read failed"):format(path) end
   local known
   if before and after and before.st_size == #bytes and after.st_size == #bytes
      and before.st_mtime == after.st_mtime and before.st_ctime == after.st_ctime then
      known = stat_key(path, after)
   end
   return bytes, known
end

function index_lookup(dirs, known, path)
   for _, d in ipairs(dirs) do
      local f = M.trusted_dir(d .. "/index") and open_private(d .. "/index/" .. known)
      if f then
         local line = f:read("a")
         f:close()
         local sha, p = line:match("^(%x+) (.-)\n$")
         if sha and #sha == 64 and p == path then return sha end
      end
   end
end

function index_store(dirs, known, sha, path)
   for _, d in ipairs(dirs) do
      make_dirs(d .. "/index")
      if not M.trusted_dir(d .. "/index") then goto next end
      local tmpname = ("%s/index/.tmp.%d.%d"):format(d, os.time(), math.random(1 << 30))
      local f = io.open(tmpname, "wb")
      if f then
         local ok = f:write(sha, " ", path, "\n")
         f:close()
         if ok and os.rename(tmpname, d .. "/index/" .. known) then return end
         os.remove(tmpname)
      end
      ::next::
   end
end

---
-- decompress(image, {path = the image's file, known = read_image's key for it, cache_dir =})
--   -> {path = the vmlinux file, file = it open for reading (checked: boot this handle,
--   not the path), cached = true when it was there already, format =, size =, note = why
--   the cache directory was passed over for the private one, when it was}
--   or nil, message, reason. reason "corrupt": the payload does not decompress to what
--   its header says (the guest's decompressor would fail too); "payload": the image has
--   no payload this can read (too old a protocol, an unknown compression); "tool": the
--   host lacks the tool for this compression; "cache": no cache directory can be trusted
--   or written, or a cached file is not this user's own; "signal": the tool was killed (a
--   Ctrl-C reaches it too).
-- The tool's output is read here and stopped once it passes the header's size: a small
-- image cannot fill the disk.
function M.decompress(image, opts)
   opts = opts or {}
   local pl, err = M.payload(image)
   if not pl then return nil, err, "payload" end
   -- the cache, else this user's private directory under $TMPDIR: only directories that
   -- pass trusted_dir are read or written
   local candidates, tmp = { M.cache_dir(opts) }, not opts.cache_dir and M.private_tmp_dir()
   if tmp then candidates[2] = tmp end
   local dirs, refused = {}, nil
   for _, d in ipairs(candidates) do
      make_dirs(d)
      local real, why = M.trusted_dir(d)
      if real then dirs[#dirs + 1] = real else refused = refused or ("kernel cache %s: %s"):format(d, why) end
   end
   if #dirs == 0 then return nil, refused, "cache" end
   local known = opts.path and opts.known
   local key = known and index_lookup(dirs, known, opts.path)
   for _, d in ipairs(key and dirs or {}) do
      local out = ("%s/%s.vmlinux"):format(d, key)
      local f, size = open_private(out)
      if f == false then return nil, ("kernel cache: %s: not booted (remove it)"):format(size), "cache" end
      if f and size == pl.size then
         return { path = out, file = f, cached = true, format = pl.format, size = pl.size, note = refused }
      end
      if f then f:close() end
   end
   -- not known by the index (or its kernel is gone): the bytes in hand are hashed
   local sha = M.sha256(image)
   if not sha then return nil, "kernel cache: sha256sum failed", "cache" end
   if known and sha ~= key then index_store(dirs, known, sha, opts.path) end
   key = sha
   for _, d in ipairs(dirs) do
      local out = ("%s/%s.vmlinux"):format(d, key)
      local f, size = open_private(out)
      if f == false then return nil, ("kernel cache: %s: not booted (remove it)"):format(size), "cache" end
      if f and size == pl.size then
         return { path = out, file = f, cached = true, format = pl.format, size = pl.size, note = refused }
      end
      if f then f:close() end
   end
   if not M.have_tool(pl.cmd[1]) then
      return nil, ("the kernel is %s-compressed and %s is not installed"):format(pl.format, pl.cmd[1]), "tool"
   end
   local dir, tag, f, ferr
   for _, d in ipairs(dirs) do
      tag = ("%s/.tmp.%d.%d"):format(d, os.time(), math.random(1 << 30))
      f, ferr = io.open(tag .. ".in", "wb")
      if f then dir = d break end
   end
   if not f then return nil, ("kernel cache %s: %s"):format(dirs[1], ferr), "cache" end
   local out = ("%s/%s.vmlinux"):format(dir, key)
   local zin, zout, zerr = tag .. ".in", tag .. ".out", tag .. ".err"
   local wrote, werr = f:write(pl.data)
   f:close()
   local o
   if wrote then o, werr = io.open(zout, "wb") end
   if not o then
      os.remove(zin)
      return nil, ("kernel cache %s: %s"):format(dir, werr), "cache"
   end
   local cmd = {}
   for i, a in ipairs(pl.cmd) do cmd[i] = quote(a) end
   local p = io.popen(("%s < %s 2> %s"):format(table.concat(cmd, " "), quote(zin), quote(zerr)), "r")
   local n, over = 0, false
   while p do
      local chunk = p:read(1 << 16)
      if not chunk then break end
      n = n + #chunk
      if n > pl.size then over = true break end -- stop the tool: closing the pipe ends it
      if not wrote then break end
      wrote, werr = o:write(chunk)
   end
   o:close()
   local ok, how, code
   if p then ok, how, code = p:close() else ok, how, code = nil, "exit", 127 end
   os.remove(zin)
   local why
   if not wrote then
      os.remove(zerr)
      os.remove(zout)
      return nil, ("kernel cache %s: %s"):format(dir, werr), "cache"
   elseif over then
      why = ("the kernel's payload decompresses to more than the %d bytes its header says "
             .. "(%s stopped after %d)"):format(pl.size, pl.cmd[1], n)
   elseif not ok and how == "signal" then
      os.remove(zerr)
      os.remove(zout)
      return nil, ("%s was killed by signal %d while decompressing the kernel"):format(pl.cmd[1], code), "signal"
   elseif not ok then
      local e = io.open(zerr, "rb")
      why = e and e:read("a"):gsub("%s+$", ""):gsub("\n", "; ") or ""
      if e then e:close() end
      why = ("%s -d failed on the kernel's payload%s"):format(pl.cmd[1], why ~= "" and ": " .. why or "")
   elseif n ~= pl.size then
      why = ("the kernel's payload decompressed to %d bytes; its header says %d"):format(n, pl.size)
   end
   os.remove(zerr)
   if why then
      os.remove(zout)
      return nil, why, "corrupt"
   end
   local done, derr = open_private(zout)
   if not done then
      os.remove(zout)
      return nil, ("kernel cache: %s"):format(derr or "the output vanished"), "cache"
   end
   local renamed, rerr = os.rename(zout, out)
   if not renamed then
      done:close()
      os.remove(zout)
      return nil, ("kernel cache: %s"):format(rerr), "cache"
   end
   return { path = out, file = done, cached = false, format = pl.format, size = pl.size, note = refused }
end

-- open(path, ram_size) -> {entry=, segments=, start=, end_=, path=, read=, close=} or nil,
-- message: the vmlinux's program headers read and checked against RAM. from_string(bytes,
-- ram_size, name) does the same for a vmlinux already in memory.
local function checked(read, close, size, ram_size, name, file)
   local info, perr = M.parse_elf(read, size, ram_size)
   if not info then
      close()
      return nil, ("vmlinux %s: %s"):format(name, perr)
   end
   info.read, info.close, info.path, info.size, info.file = read, close, name, size, file
   return info
end

---
-- open(path, ram_size [, file]): file, when given, is path already open (decompress's
-- checked handle), and is read instead of opening path again.
function M.open(path, ram_size, file)
   local f, err = file, nil
   if not f then f, err = io.open(path, "rb") end
   if not f then return nil, ("vmlinux %s"):format(err) end
   return checked(function(off, n)
      f:seek("set", off)
      return f:read(n) or ""
   end, function() if io.type(f) == "file" then f:close() end end, f:seek("end"), ram_size, path, f)
end

--- As `open`, for a vmlinux already in memory (bytes).
function M.from_string(bytes, ram_size, name)
   return checked(function(off, n) return bytes:sub(off + 1, off + n) end, function() end,
                  #bytes, ram_size, name or "image")
end

---
-- load(mem, info): each segment's bytes into guest RAM at its physical address (through
-- mem:load_file when mem has it, as a VM does), the rest of its memory size zeroed (the
-- kernel's .bss). Closes the file.
function M.load(mem, info)
   for _, s in ipairs(info.segments) do
      if s.filesz > 0 and info.file and mem.load_file then
         -- a VM reads the file straight into guest RAM
         local ok, err = mem:load_file(s.paddr, info.file, s.offset, s.filesz)
         if not ok then
            info.close()
            return nil, ("vmlinux %s: segment %d: %s"):format(info.path, s.index, err)
         end
      elseif s.filesz > 0 then
         local bytes = info.read(s.offset, s.filesz)
         if #bytes ~= s.filesz then
            info.close()
            return nil, ("vmlinux %s: short read of segment %d"):format(info.path, s.index)
         end
         mem:write(s.paddr, bytes)
      end
      if s.memsz > s.filesz then mem:fill(s.paddr + s.filesz, s.memsz - s.filesz, 0) end
   end
   info.close()
   return true
end

--- Whether image (bytes) starts with the ELF magic.
function M.is_elf(image) return type(image) == "string" and image:sub(1, 4) == "\127ELF" end

return M
