-- Interrupt wiring for a VM: MSI/MSI-X vectors become GSI routes with irqfds, INTx lines
-- become resampling irqfds on irqchip GSIs. The irqfd's eventfd is what the VFIO side
-- hands to VFIO_DEVICE_SET_IRQS, so device interrupts reach the guest without an exit;
-- for INTx the resample eventfd is VFIO's unmask eventfd.
local M = {}
local Router = {}
Router.__index = Router
local Vector = {}
Vector.__index = Vector

M.IRQCHIP_GSIS = 24 -- GSI 0-23 are the PIC/IOAPIC pins of the in-kernel irqchip

-- M.new(vm, {first_gsi = 24, last_gsi = 1023}) -> router. The VM needs an irqchip.
function M.new(vm, opts)
   opts = opts or {}
   local first, last = opts.first_gsi or M.IRQCHIP_GSIS, opts.last_gsi or 1023
   if first < M.IRQCHIP_GSIS or last < first then
      error(("GSIs for MSI must lie in [%d, ...]"):format(M.IRQCHIP_GSIS), 2)
   end
   return setmetatable({ vm = vm, first = first, last = last, used = {}, live = {} }, Router)
end

function Router:alloc()
   for gsi = self.first, self.last do
      if not self.used[gsi] then
         self.used[gsi] = true
         return gsi
      end
   end
   return nil, ("no free GSI in [%d, %d]"):format(self.first, self.last)
end

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

-- router:vectors() -> the live vectors and lines, by GSI.
function Router:vectors()
   local list = {}
   for v in pairs(self.live) do list[#list + 1] = v end
   table.sort(list, function(a, b) return a.gsi < b.gsi end)
   return list
end

function Router:close()
   for v in pairs(self.live) do v:close() end
end
Router.__close = Router.close

return M
