-- Host specs: traps over devices recorded in the lab (spec/fixtures/*.lua).
local core = require "vfio.core"
local record = require "vfio.record"

local fixture = {}

fixture.names = { "edu", "e1000e", "nvme", "virtio-net-pci", "qemu-xhci", "pci-testdev" }

local cache = {}
function fixture.load(name)
   cache[name] = cache[name] or assert(record.load(name))
   return cache[name]
end

-- fixture.trap(name_or_table [, opts]) -> trap, backend
function fixture.trap(fx, opts)
   if type(fx) == "string" then fx = fixture.load(fx) end
   local be = assert(core.replay(fx))
   return assert(core.trap(be, opts)), be
end

-- Little-endian integer from the recorded config image.
function fixture.cfg(fx, off, n)
   if type(fx) == "string" then fx = fixture.load(fx) end
   local v = 0
   for i = n, 1, -1 do v = v << 8 | fx.config:byte(off + i) end
   return v
end

-- The capability IDs in the order a guest walking the chain finds them.
function fixture.walk(t)
   local ids, seen = {}, {}
   local p = t:cfg_read(0x34, 1)
   while p ~= 0 and not seen[p] do
      seen[p] = true
      ids[#ids + 1] = t:cfg_read(p, 1)
      p = t:cfg_read(p + 1, 1)
   end
   return ids
end

function fixture.walk_ext(t)
   local ids, seen, p = {}, {}, 0x100
   if t:info().cfg_size < 4096 then return ids end
   while p ~= 0 and not seen[p] do
      seen[p] = true
      local h = t:cfg_read(p, 4)
      if h == 0 then break end
      ids[#ids + 1] = h & 0xffff
      p = (h >> 20) & 0xffc
   end
   return ids
end

return fixture
