---
-- Interrupt wiring for a VM: MSI/MSI-X vectors become GSI routes with irqfds, INTx lines
-- become resampling irqfds on irqchip GSIs (a router); and the device's interrupt mode
-- as the guest switches it (a mode, at the end). The irqfd's eventfd is what the VFIO side
-- hands to VFIO_DEVICE_SET_IRQS, so device interrupts reach the guest without an exit;
-- for INTx the resample eventfd is VFIO's unmask eventfd. Between them, the executor (a
-- wiring, at the end) carries a device's mode's actions out on the router and the device.
-- @module vfio.vmm.irq
local M = {}
local Router = {}
Router.__index = Router
local Vector = {}
Vector.__index = Vector

M.IRQCHIP_GSIS = 24 -- GSI 0-23 are the PIC/IOAPIC pins of the in-kernel irqchip

---
-- M.new(vm, {first_gsi = 24, last_gsi = 1023}) -> router. The VM needs an irqchip.
function M.new(vm, opts)
   opts = opts or {}
   local first, last = opts.first_gsi or M.IRQCHIP_GSIS, opts.last_gsi or 1023
   if first < M.IRQCHIP_GSIS or last < first then
      error(("GSIs for MSI must lie in [%d, ...]"):format(M.IRQCHIP_GSIS), 2)
   end
   return setmetatable({ vm = vm, first = first, last = last, used = {}, live = {} }, Router)
end

--- The GSI router of a VM (vfio.vmm.irq.new): MSI routes and INTx lines with irqfds.
-- @type Router

--- Take a free GSI of the router's MSI range.
-- @treturn int the GSI, or `nil, message` when none is free
function Router:alloc()
   for gsi = self.first, self.last do
      if not self.used[gsi] then
         self.used[gsi] = true
         return gsi
      end
   end
   return nil, ("no free GSI in [%d, %d]"):format(self.first, self.last)
end

---
-- router:msi(addr, data [, {fd = eventfd}]) -> vector {gsi=, irqfd=, addr=, data=}, or
-- nil, message, errno (nothing left behind on failure).
function Router:msi(addr, data, opts)
   local gsi, err = self:alloc()
   if not gsi then return nil, err end
   local ok, msg, errno = self.vm:set_msi_route(gsi, addr, data)
   if not ok then
      self.used[gsi] = nil
      return nil, msg, errno
   end
   local fd, fmsg, ferr = self.vm:irqfd(gsi, { fd = opts and opts.fd })
   if not fd then
      self.vm:remove_route(gsi)
      self.used[gsi] = nil
      return nil, fmsg, ferr
   end
   local v = setmetatable({ router = self, gsi = gsi, irqfd = fd, addr = addr, data = data, kind = "msi" }, Vector)
   self.live[v] = true
   return v
end

-- vector:update(addr, data): the guest reprogrammed the vector; the irqfd stays.
function Vector:update(addr, data)
   if self.kind ~= "msi" then error("update applies to MSI vectors", 2) end
   if addr == self.addr and data == self.data then return true end
   local ok, msg, errno = self.router.vm:set_msi_route(self.gsi, addr, data)
   if not ok then return nil, msg, errno end
   self.addr, self.data = addr, data
   return true
end

-- vector:mask(on): a masked vector must not reach the guest, and the message it would
-- have sent is delivered when it is unmasked, as PCI requires. Masking detaches the irqfd
-- from KVM; the device keeps signalling its eventfd, whose count is then the vector's
-- pending state (the trap's PBA reads it, trap:set_source). Unmasking takes that count,
-- attaches the irqfd again and, if anything was pending, sends one message.
function Vector:mask(on)
   if self.kind ~= "msi" then error("mask applies to MSI vectors", 2) end
   local fd = self.irqfd
   if on then return fd:detach() end
   if fd:attached() then return true end
   local n, err, errno = fd:take()
   if not n then return nil, err, errno end
   local ok
   ok, err, errno = fd:attach()
   if not ok then return nil, err, errno end
   if n > 0 then return fd:trigger(1) end
   return true
end

-- vector:masked() -> true while the vector is kept from the guest.
function Vector:masked() return not self.irqfd:attached() end

---
-- router:intx(gsi [, {fd = eventfd, resample = eventfd}]) -> line {gsi=, irqfd=}: a
-- level-triggered irqfd on an irqchip pin, deasserted when the guest EOIs (the resample
-- eventfd then fires).
function Router:intx(gsi, opts)
   if math.type(gsi) ~= "integer" or gsi < 0 or gsi >= M.IRQCHIP_GSIS then
      error(("INTx GSI must be an irqchip pin in [0, %d]"):format(M.IRQCHIP_GSIS - 1), 2)
   end
   opts = opts or {}
   local fd, msg, errno = self.vm:irqfd(gsi, { fd = opts.fd, resample = opts.resample or true })
   if not fd then return nil, msg, errno end
   local v = setmetatable({ router = self, gsi = gsi, irqfd = fd, kind = "intx" }, Vector)
   self.live[v] = true
   return v
end

-- vector:close(): irqfd deassigned, MSI route removed, GSI free again. Idempotent.
function Vector:close()
   if not self.irqfd then return end
   self.irqfd:close()
   self.irqfd = nil
   if self.kind == "msi" then
      self.router.vm:remove_route(self.gsi)
      self.router.used[self.gsi] = nil
   end
   self.router.live[self] = nil
end
Vector.__close = Vector.close

---
-- router:vectors() -> the live vectors and lines, by GSI.
function Router:vectors()
   local list = {}
   for v in pairs(self.live) do list[#list + 1] = v end
   table.sort(list, function(a, b) return a.gsi < b.gsi end)
   return list
end

--- Close every live vector's irqfd (also `__close`).
function Router:close()
   for v in pairs(self.live) do v:close() end
end
Router.__close = Router.close

---------------------------------------------------------------------------------------
-- The device's interrupt mode as the guest programs it: INTx, MSI or MSI-X, one at a
-- time as VFIO takes them. It holds no resources: mode:event(e) takes a trap event and
-- returns what the VM layer must do, in order, as actions:
--   {"off", kind}                 disable that VFIO index and drop its vectors
--   {"intx"}                      route INTx (its irqfd and resample eventfd)
--   {"vectors", kind, entries}    route entries {addr=, data=, masked=} as "msi"/"msix"
--                                 vectors (a masked one starts kept from the guest)
--   {"update", i, addr, data}     reprogram vector i (1-based) in place
--   {"mask", i, masked}           vector i is masked (by its own or the function mask)
--                                 or unmasked
--   {"reset"}                     a function level reset
-- The mode assumes they succeed; when "intx" or "vectors" fails the caller says so with
-- mode:failed() (the device is then left with none).

local Mode = {}
Mode.__index = Mode

--- Functions of the module.
-- @section functions

---
-- M.mode{intx = bool} -> mode ("none" until started); intx: the device has a usable
-- INTx pin.
function M.mode(opts)
   return setmetatable({ kind = "none", n = 0, intx = opts and opts.intx or false,
                         masked = {}, own_mask = {}, fmask = false }, Mode)
end

local function turn_off(self, out)
   if self.kind ~= "none" then out[#out + 1] = { "off", self.kind } end
   self.kind, self.n, self.masked, self.own_mask = "none", 0, {}, {}
end

local function to_intx(self, out)
   if self.intx then
      out[#out + 1] = { "intx" }
      self.kind = "intx"
   end
end

local function to_vectors(self, out, kind, entries, fmask)
   turn_off(self, out)
   self.fmask = fmask or false
   for i, e in ipairs(entries) do
      self.own_mask[i] = e.masked or false
      e.masked = self.fmask or self.own_mask[i]
      self.masked[i] = e.masked
   end
   out[#out + 1] = { "vectors", kind, entries }
   self.kind, self.n = kind, #entries
end

-- A vector's effective mask is its own or the function's; emit only the changes.
local function remask(self, out, i)
   local m = self.fmask or self.own_mask[i] or false
   if m ~= self.masked[i] then
      self.masked[i] = m
      out[#out + 1] = { "mask", i, m }
   end
end

--- The device's interrupt mode as the guest switches it (vfio.vmm.irq.mode).
-- @type Mode

---
-- mode:start() -> actions: INTx, what the device has before the guest enables MSI.
function Mode:start()
   local out = {}
   to_intx(self, out)
   return out
end

---
-- mode:event(e, msix_entry) -> actions. msix_entry(i) -> {addr=, data=, masked=} reads
-- entry i (0-based) of the guest's MSI-X table.
function Mode:event(e, msix_entry)
   local out, ty = {}, e.type
   if ty == "msi_enable" then
      if e.enabled then
         -- multiple-message MSI: vector i carries data with its low bits set to i
         local n = math.max(1, e.count or 1)
         local entries, mask = {}, e.mask or 0
         for i = 1, n do
            entries[i] = { addr = e.addr, data = (e.data & ~(n - 1)) | (i - 1),
                           masked = (mask >> (i - 1)) & 1 == 1 }
         end
         to_vectors(self, out, "msi", entries)
      elseif self.kind == "msi" then
         turn_off(self, out)
         to_intx(self, out)
      end
   elseif ty == "msi_route" and self.kind == "msi" then
      local n = self.n
      for i = 1, n do out[#out + 1] = { "update", i, e.addr, (e.data & ~(n - 1)) | (i - 1) } end
   elseif ty == "msix_enable" then
      if e.enabled then
         local entries = {}
         for i = 1, e.count or 0 do entries[i] = msix_entry(i - 1) end
         to_vectors(self, out, "msix", entries, e.fmask)
      elseif self.kind == "msix" then
         turn_off(self, out)
         to_intx(self, out)
      end
   elseif (ty == "msix_route" or ty == "msix_mask") and self.kind == "msix" then
      local i = (e.vector or 0) + 1
      if i <= self.n and e.addr then out[#out + 1] = { "update", i, e.addr, e.data or 0 } end
      if i <= self.n and ty == "msix_mask" then
         self.own_mask[i] = e.masked
         remask(self, out, i)
      end
   elseif ty == "msix_fmask" and self.kind == "msix" then
      self.fmask = e.masked
      for i = 1, self.n do remask(self, out, i) end
   elseif ty == "msi_mask" and self.kind == "msi" then
      local i = (e.vector or 0) + 1
      if i <= self.n then
         self.own_mask[i] = e.masked
         remask(self, out, i)
      end
   elseif ty == "flr" then
      out[#out + 1] = { "reset" }
   end
   return out
end

---
-- mode:off() -> actions: everything off (teardown).
function Mode:off()
   local out = {}
   turn_off(self, out)
   return out
end

---
-- mode:failed(): an "intx" or "vectors" action failed; the device has no interrupts.
function Mode:failed()
   self.kind, self.n = "none", 0
end

---------------------------------------------------------------------------------------
-- The executor: what a mode's actions do to one device and the VM. A wiring holds the
-- device's live interrupt resources (its INTx line, its MSI/MSI-X vectors, the trap's
-- pending sources for masked vectors) and the mode that decides; the device gives it
-- its VFIO side, its trap and its INTx GSI, and nothing else.

local INTX, MSI, MSIX = 0, 1, 2
local INDEX = { intx = INTX, msi = MSI, msix = MSIX }

local Wiring = {}
Wiring.__index = Wiring

--- More functions of the module.
-- @section functions

---
-- M.wiring(router, {device = vfio device (set_irqs, irq_info, reset), trap = the trap
-- core (set_source, cfg_read), intx_line = GSI, log = fn(fmt, ...)}) -> wiring. The mode
-- starts with INTx when the trap shows a pin, the line is given and VFIO has an INTx.
function M.wiring(router, o)
   local w = setmetatable({ router = router, device = o.device, trap = o.trap,
                            line = o.intx_line, log = o.log or function() end }, Wiring)
   local intx = false
   if o.intx_line and (o.trap:cfg_read(0x3d, 1) or 0) ~= 0 and o.device.set_irqs then
      local info = o.device:irq_info(INTX)
      intx = info ~= nil and (info.count or 0) >= 1
   end
   w.mode = M.mode { intx = intx }
   return w
end

--- A device's interrupts on the router (vfio.vmm.irq.wiring): the executor of its mode.
-- @type Wiring

-- Close vectors, after removing the trap's pending sources that name them.
local function drop_vectors(self, kind, vecs)
   for i in pairs(self.sources or {}) do self.trap:set_source(kind, i - 1, nil) end
   self.sources = nil
   for _, v in ipairs(vecs or {}) do v:close() end
end

local ACTIONS = {}

function ACTIONS.off(self, kind)
   self.device:set_irqs(INDEX[kind], "trigger", 0, 0)
   drop_vectors(self, kind, self.vectors)
   self.vectors = nil
   return true
end

function ACTIONS.intx(self)
   local line, err, errno = self.intx
   if not line then
      line, err, errno = self.router:intx(self.line)
      if not line then return nil, "INTx irqfd: " .. tostring(err), errno end
      self.intx = line
   end
   local ok
   ok, err, errno = self.device:set_irqs(INTX, "trigger", 0, 1, line.irqfd:fileno())
   if not ok then return nil, err, errno end
   ok, err, errno = self.device:set_irqs(INTX, "unmask", 0, 1, line.irqfd:resample_fileno())
   if not ok then
      self.device:set_irqs(INTX, "trigger", 0, 0)
      return nil, err, errno
   end
   return true
end

function ACTIONS.vectors(self, kind, entries)
   local vecs, fds = {}, {}
   for i, e in ipairs(entries) do
      local v, err, errno = self.router:msi(e.addr, e.data)
      if not v then
         drop_vectors(self, kind, vecs)
         return nil, err, errno
      end
      vecs[i], fds[i] = v, v.irqfd:fileno()
      if e.masked then
         local ok, merr, merrno = ACTIONS.mask(self, i, true, vecs, kind)
         if not ok then
            drop_vectors(self, kind, vecs)
            return nil, merr, merrno
         end
      end
   end
   local ok, err, errno = self.device:set_irqs(INDEX[kind], "trigger", 0, #fds, fds)
   if not ok then
      drop_vectors(self, kind, vecs)
      return nil, err, errno
   end
   self.vectors = vecs
   self.log("irq  %s on, %d vector(s), GSI %d..", kind, #vecs, vecs[1] and vecs[1].gsi or -1)
   return true
end

function ACTIONS.update(self, i, addr, data) return self.vectors[i]:update(addr, data) end

-- A masked vector is detached from the guest, and its eventfd becomes the trap's pending
-- source for it (the PBA, or MSI's pending bits, show what fired meanwhile).
function ACTIONS.mask(self, i, masked, vecs, kind)
   local v = (vecs or self.vectors)[i]
   local ok, err, errno = v:mask(masked)
   if not ok then return nil, err, errno end
   self.trap:set_source(kind or self.mode.kind, i - 1, masked and v.irqfd or nil)
   self.sources = self.sources or {}
   self.sources[i] = masked or nil
   self.log("irq  vector %d %s", i, masked and "masked" or "unmasked")
   return true
end

function ACTIONS.reset(self)
   if self.device.reset then self.device:reset() end
   return true
end

---
-- Carry out actions (a mode's) in order; the first failure ends them (a failed "intx" or
-- "vectors" leaves the device with no interrupts).
function Wiring:carry_out(actions)
   for _, a in ipairs(actions) do
      local ok, err, errno = ACTIONS[a[1]](self, table.unpack(a, 2))
      if not ok then
         if a[1] == "intx" or a[1] == "vectors" then self.mode:failed() end
         return nil, err, errno
      end
   end
   return true
end

--- The device's interrupts before the guest enables MSI: INTx, if it has it.
function Wiring:start() return self:carry_out(self.mode:start()) end

---
-- One trap event: what the mode decides, carried out. msix_entry(i) reads entry i
-- (0-based) of the guest's MSI-X table (vfio.vmm.irq's Mode:event).
function Wiring:event(e, msix_entry) return self:carry_out(self.mode:event(e, msix_entry)) end

---
-- Teardown: the device's interrupts off (when it has a VFIO side), its vectors and INTx
-- line closed, their GSIs free again. Idempotent; errors do not stop the rest.
function Wiring:close()
   if self.closed then return end
   self.closed = true
   if self.device.set_irqs then pcall(self.carry_out, self, self.mode:off()) end
   if self.intx then pcall(self.intx.close, self.intx) end
   self.intx = nil
end

return M
