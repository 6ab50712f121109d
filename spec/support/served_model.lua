-- A served device (a vfio.user.model, such as the examples in examples/vfio-user) driven
-- directly through the served-device interface, the way a driver would, with no server
-- and no socket: its I/O ports, and a trigger standing for an eventfd.
local M = {}

local CONFIG = 7

---
-- M.open(path, bar [, opts]) -> dev, port: the model file at path (loadfile(path)(opts))
-- with I/O decoding on in its command register; port.i(off) reads a byte of its I/O BAR
-- bar, port.o(off, v) writes one (v modulo 256).
function M.open(path, bar, opts)
   local dev = assert(loadfile(path))(opts)
   assert(dev:region_write(CONFIG, 0x04, string.pack("<I2", 0x0001)))   -- I/O decoding on
   local port = {}
   function port.i(off) return assert(dev:region_read(bar, off, 1)):byte() end
   function port.o(off, v) assert(dev:region_write(bar, off, string.char(v & 0xff))) end
   return dev, port
end

--- M.counter() -> a trigger standing for an eventfd: t.n counts its signals.
function M.counter()
   local t = { n = 0 }
   function t.signal(self) self.n = self.n + 1 end
   return t
end

return M
