---
-- The methods every device object vfio.open returns has alike, written once: a kernel
-- device (vfio.open's `vfio.pci_device`, init.lua) and a vfio-user device
-- (`vfio.user_pci_device`, user_client.lua) both work through a `handle` with the same
-- calls (region_info, irq_info, set_irqs, reset, fileno, close) and keep the same fields
-- (`name`, `num_regions`, `_regions`, `config`, `info`), so their regions, interrupts,
-- reset and close are one code. What differs comes in as functions: how a region object
-- is made, what else close releases.
-- @module vfio.device_methods
local M = {}

--- The argument check of a device class's methods: a function check(self) that returns
-- self, or raises (at the level of the method's caller) when self is not an object of
-- the class or is closed.
-- @tparam table class the class (the objects' metatable)
-- @tparam string expected what the message says was expected ("vfio.pci_device")
-- @treturn function the check
function M.checker(class, expected)
   local wrong = ("bad argument #1 (%s expected)"):format(expected)
   return function(self)
      if getmetatable(self) ~= class then error(wrong, 3) end
      if self.closed then error(("device %s is closed"):format(self.name), 3) end
      return self
   end
end

--- Add the shared methods to a device class: region, regions, irq_info, set_irqs,
-- enable_irq, disable_irq, reset, fileno, close (with __close and __gc) and __tostring
-- (its `__name` and the device's name).
-- @tparam table class the class (its own __index)
-- @tparam table how `{check = checker(...), new_region = function(dev, i) -> region,
-- no_reset = text the reset's failure message gets when info.reset is false,
-- release = function(dev) run by close after the regions are closed}`
-- @treturn table class
function M.install(class, how)
   local check, new_region, no_reset, release = how.check, how.new_region, how.no_reset, how.release

   function class:region(i)
      check(self)
      if math.type(i) ~= "integer" or i < 0 or i >= self.num_regions then
         error(("bad argument #1 to 'region' (index in [0, %d) expected, got %s)"):format(
            self.num_regions, tostring(i)), 2)
      end
      local r = self._regions[i]
      if not r or r:closed() then -- the user may close (or <close>) a region we handed out
         r = new_region(self, i)
         self._regions[i] = r
      end
      return r
   end

   function class:regions()
      check(self)
      local list = {}
      for i = 0, self.num_regions - 1 do list[i + 1] = self:region(i) end
      return list
   end

   function class:irq_info(i)
      check(self)
      if math.type(i) ~= "integer" or i < 0 then
         error(("bad argument #1 to 'irq_info' (irq index expected, got %s)"):format(
            tostring(i)), 2)
      end
      return self.handle:irq_info(i)
   end

   function class:set_irqs(...) return check(self).handle:set_irqs(...) end

   function class:enable_irq(index, efds)
      check(self)
      if type(efds) ~= "table" then efds = { efds } end
      return self.handle:set_irqs(index, "trigger", 0, #efds, efds)
   end

   function class:disable_irq(index)
      return check(self).handle:set_irqs(index, "trigger", 0, 0)
   end

   function class:reset()
      check(self)
      local ok, err, errno = self.handle:reset()
      if not ok and not self.info.reset then err = err .. " (" .. no_reset .. ")" end
      return ok, err, errno
   end

   function class:fileno() return check(self).handle:fileno() end

   function class:close()
      if rawget(self, "closed") then return end
      self.closed = true
      for _, r in pairs(self._regions) do r:close() end
      self._regions = {}
      self.config = nil
      return release(self)
   end
   class.__close = class.close
   class.__gc = class.close

   function class:__tostring()
      return ("%s (%s%s)"):format(class.__name, self.name, self.closed and ", closed" or "")
   end
   return class
end

return M
