---
-- vfio.vmm.passthrough(dev, opts): a virtual PCI function for a VM layer, built from the
-- trap core (vfio.core), device quirks (vfio.vmm.quirks) and the BAR layout (vfio.vmm.layout).
--   dev   a device from vfio.open (kernel VFIO or vfio-user), a vfio.backend, a fixture
--         table or a fixture path/name (recorded device)
--   opts  pcie=false      the guest sees a conventional PCI device (256 B config)
--         quirks=list     quirk tables to consider (default: the built-in ones);
--                         quirks=false applies none
--         layout=alloc    a vfio.vmm.layout allocator shared by the VM's devices
--                         (default: a fresh one); layout=false leaves BARs unassigned
--         policy=fn       window policy for a fresh allocator (see vfio.vmm.layout)
--         enable=true     set COMMAND memory/I/O decode after programming BARs
--         on_event=fn     event callback (else drain with pt:events())
--         mmap=false      reach mappable BARs with pread/pwrite instead of a mapping
-- @module vfio.vmm.passthrough
local core = require "vfio.core"
local layout = require "vfio.vmm.layout"
local quirks = require "vfio.vmm.quirks"
local record = require "vfio.record"

local passthrough = {}

-- A passthrough function: the virtual PCI function a guest sees over one device (called
-- pt; "VF" would say an SR-IOV virtual function, which it is not).
local Passthrough = {}
Passthrough.__index = Passthrough
Passthrough.__name = "vfio.passthrough"

-- The object's type, by its metatable's name (vfio.core's types all have one).
local function type_name(x)
   local mt = type(x) == "userdata" and getmetatable(x)
   return type(mt) == "table" and rawget(mt, "__name") or nil
end

-- A backend as given, one built in C from a VFIO device (a vfio.open device or a
-- vfio.core one), or the replay of a recorded fixture. The VFIO backend maps mappable
-- BARs itself (falling back to pread/pwrite) unless mmap = false.
local function backend_of(dev, opts)
   local ty, name = type(dev), type_name(dev)
   if name == "vfio.backend" then return dev end
   local mmap = opts.mmap ~= false
   if name == "vfio.device" then return core.vfio_backend(dev, { mmap = mmap }) end
   if ty == "string" or (ty == "table" and dev.config and type(dev.config) == "string") then
      return record.backend(dev)
   end
   if ty == "table" and type_name(dev.handle) == "vfio.device" then
      return core.vfio_backend(dev.handle, { mmap = mmap, name = dev.bdf })
   end
   -- vfio-user: the trap reaches the server in C (csrc/trap/backend_user.c); the areas
   -- the server gave fds for were mapped when the device opened
   if name == "vfio.user_device" then return core.user_backend(dev) end
   if ty == "table" and type_name(dev.handle) == "vfio.user_device" then
      return core.user_backend(dev.handle, { name = dev.name })
   end
   error("vfio.vmm.passthrough: expected a VFIO device, a backend or a recorded fixture", 3)
end

--- The virtual function over dev (see the module's description for dev and opts).
-- @return a Passthrough, or `nil, message, errno` (the backend's or the trap core's), or
-- `nil, message` when the BARs cannot be placed
function passthrough.new(dev, opts)
   opts = opts or {}
   local be, err, errno = backend_of(dev, opts)
   if not be then return nil, err, errno end
   local trap
   trap, err, errno = core.trap(be, { pcie = opts.pcie ~= false })
   if not trap then return nil, err, errno end
   local pt = setmetatable({ trap = trap, backend = be, device = dev, quirks = {},
                             own_backend = be ~= dev }, Passthrough)
   if opts.quirks ~= false then
      pt.quirks, pt.quirk_states = quirks.apply_matching(trap, opts.quirks or nil)
   end
   if opts.on_event then trap:on_event(opts.on_event) end
   if opts.layout ~= false then
      local alloc = opts.layout or layout.new { policy = opts.policy, windows = opts.windows }
      local placed
      placed, err = alloc:place(trap:bars())
      if not placed then pt:close(); return nil, err end
      layout.program(trap, placed)
      pt.placement = placed
      if opts.enable then
         local io, mem = false, false
         for i, _ in pairs(placed) do
            if trap:bars()[i].io then io = true else mem = true end
         end
         local cmd = trap:cfg_read(4, 2)
         trap:cfg_write(4, 2, cmd | (mem and 2 or 0) | (io and 1 or 0))
      end
   end
   return pt
end

--- The virtual PCI function over a device (vfio.vmm.passthrough.new): trap core, quirks and BAR layout.
-- @type Passthrough

---
-- Entry points for a VM layer or a spec; all return what the trap core returns.
function Passthrough:cfg_read(off, size) return self.trap:cfg_read(off, size) end
--- The trap core's `trap:cfg_write`.
function Passthrough:cfg_write(off, size, v) return self.trap:cfg_write(off, size, v) end
--- The trap core's `trap:bar_read`.
function Passthrough:bar_read(bar, off, size) return self.trap:bar_read(bar, off, size) end
--- The trap core's `trap:bar_write`.
function Passthrough:bar_write(bar, off, size, v) return self.trap:bar_write(bar, off, size, v) end
--- The trap core's `trap:mmio_read`.
function Passthrough:mmio_read(addr, size) return self.trap:mmio_read(addr, size) end
--- The trap core's `trap:mmio_write`.
function Passthrough:mmio_write(addr, size, v) return self.trap:mmio_write(addr, size, v) end
--- The trap core's `trap:io_read`.
function Passthrough:io_read(port, size) return self.trap:io_read(port, size) end
--- The trap core's `trap:io_write`.
function Passthrough:io_write(port, size, v) return self.trap:io_write(port, size, v) end
--- The trap core's `trap:events`.
function Passthrough:events() return self.trap:events() end
--- The trap core's `trap:on_event`.
function Passthrough:on_event(fn) return self.trap:on_event(fn) end
--- The trap core's `trap:bars`.
function Passthrough:bars() return self.trap:bars() end
--- The trap core's `trap:caps`.
function Passthrough:caps() return self.trap:caps() end

---
-- Closing unmaps the BARs the backend mapped: a mapping keeps the device file, and
-- with it the VFIO group, open (the group could not be opened again until the GC ran).
function Passthrough:close()
   if self.trap then self.trap:close() end
   if self.own_backend and self.backend then self.backend:close() end
   self.trap, self.backend = nil, nil
end
Passthrough.__close = Passthrough.close

function Passthrough:__tostring()
   return ("vfio.passthrough(%s)"):format(self.trap and self.trap:info().name or "closed")
end

setmetatable(passthrough, { __call = function(_, dev, opts) return passthrough.new(dev, opts) end })
return passthrough
