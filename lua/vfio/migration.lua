---
-- VFIO device migration (the v2 protocol) on top of vfio.core's calls: the state machine
-- as data (the states, the direct arcs, the shortest walk between two states), a walk that
-- takes one direct arc per request so a failure names the arc that failed, and save/load
-- of a device's whole state through its data fd.
--
-- Works on any object with the device calls migration(), mig_state() and
-- set_mig_state(state): a vfio.pci_device from vfio.open or a vfio.core device.
-- @module vfio.migration
local M = {}

local EINVAL, EPROTO = 22, 71

-- What save() asks one read for in pre_copy: the driver's initial_bytes is an estimate of
-- any size (a u64, negative here past 2^63), and migfile:read takes at most 1 GiB a call.
local PRECOPY_READ = 1 << 20

-- The states one can ask for, and the VFIO_MIGRATION_* features each needs ("error" is
-- where a failed arc may leave a device; only a reset leaves it).
M.STATES = { "running", "stop", "stop_copy", "resuming", "running_p2p", "pre_copy",
   "pre_copy_p2p" }
M.NEEDS = {
   running = {}, stop = {}, stop_copy = {}, resuming = {},
   running_p2p = { "p2p" }, pre_copy = { "pre_copy" }, pre_copy_p2p = { "p2p", "pre_copy" },
}

-- The direct arcs: the transitions a driver implements itself, the only ones the kernel
-- hands it. Any other request is a combination the kernel walks as the shortest path over
-- these (and so does M.path). Order matters where two paths are equally short: the first
-- listed is the kernel's choice.
M.ARCS = {
   running = { "running_p2p", "pre_copy" },
   running_p2p = { "running", "stop", "pre_copy_p2p" },
   stop = { "running_p2p", "stop_copy", "resuming" },
   stop_copy = { "stop" },
   resuming = { "stop" },
   pre_copy = { "running", "pre_copy_p2p" },
   pre_copy_p2p = { "running_p2p", "pre_copy", "stop_copy" },
}

-- The arcs that open a data fd (the new state's session: saving or resuming). From
-- pre_copy_p2p (or pre_copy without P2P), stop_copy carries on the pre-copy session: the
-- kernel may hand out a new fd or none, and the data keeps coming on the first.
M.OPENS = {
   ["stop>stop_copy"] = true, ["stop>resuming"] = true, ["running>pre_copy"] = true,
   ["running_p2p>pre_copy_p2p"] = true,
}

-- Requests the kernel refuses although a path exists: a saving session that reached
-- stop_copy cannot go back to pre-copy in one request.
M.BLOCKED = { stop_copy = { pre_copy = true, pre_copy_p2p = true } }

local function supported(state, caps)
   local needs = M.NEEDS[state]
   if not needs then return false end
   for _, f in ipairs(needs) do
      if not caps[f] then return false end
   end
   return true
end

local function check_state(s, n, fn)
   if type(s) ~= "string" or not M.NEEDS[s] then
      error(("bad argument #%d to '%s' (migration state expected: %s; got %s)"):format(n, fn,
         table.concat(M.STATES, ", "), type(s) == "string" and ("'" .. s .. "'") or type(s)), 3)
   end
end

---
-- M.path(from, to [, caps]) -> the states to pass through, `to` last ({} when from == to),
-- or nil, why, EINVAL when the machine has no such walk for this device.
function M.path(from, to, caps)
   check_state(from, 1, "path")
   check_state(to, 2, "path")
   caps = caps or {}
   for _, s in ipairs { from, to } do
      if not supported(s, caps) then
         return nil, ("the device does not support %s (it needs %s)"):format(s,
            table.concat(M.NEEDS[s], " and ")), EINVAL
      end
   end
   if from == to then return {} end
   if M.BLOCKED[from] and M.BLOCKED[from][to] then
      return nil, ("%s -> %s is refused by the kernel: a saving session in %s can only end "
         .. "(go to stop)"):format(from, to, from), EINVAL
   end
   -- The shortest walk over all the states (the kernel's own choice between equally short
   -- ones), then the states this device lacks are left out, as the kernel steps over them.
   local prev, queue, head = { [from] = false }, { from }, 1
   while head <= #queue do
      local s = queue[head]
      head = head + 1
      for _, n in ipairs(M.ARCS[s]) do
         if prev[n] == nil then
            prev[n] = s
            if n == to then
               local path, x = {}, to
               while x ~= from do
                  if supported(x, caps) then table.insert(path, 1, x) end
                  x = prev[x]
               end
               return path
            end
            queue[#queue + 1] = n
         end
      end
   end
   return nil, ("no path from %s to %s"):format(from, to), EINVAL
end

---
-- M.arcs(caps) -> {state = {next...}}: the direct arcs of a device with these features
-- ({p2p=, pre_copy=}, as dev:migration() reports them): the requests the kernel hands its
-- driver as one step. Without P2P, for instance, running -> stop is one.
function M.arcs(caps)
   caps = caps or {}
   local out = {}
   for _, a in ipairs(M.STATES) do
      if supported(a, caps) then
         local list = {}
         for _, b in ipairs(M.STATES) do
            local p = b ~= a and M.path(a, b, caps)
            if p and #p == 1 then list[#list + 1] = b end
         end
         out[a] = list
      end
   end
   return out
end

local function name_of(dev)
   if type(dev) == "table" then return dev.name or dev.bdf or tostring(dev) end
   return dev.name and dev:name() or tostring(dev)
end

local function caps_of(dev)
   local caps, err, errno = dev:migration()
   if not caps then return nil, err, errno end
   return caps
end

---
-- M.set(dev, to) -> what the last arc gives (a vfio.migfile when it opens a data fd, else
-- true) | nil, message, errno. Walks M.path one direct arc per request; a data fd opened
-- on the way (none is on a shortest path) is closed. On failure the message names the
-- arc, and the device is wherever the kernel left it (dev:mig_state() says).
function M.set(dev, to)
   check_state(to, 2, "set")
   local caps, err, errno = caps_of(dev)
   if not caps then return nil, err, errno end
   local from
   from, err, errno = dev:mig_state()
   if not from then return nil, err, errno end
   if from == "error" then
      return nil, ("migrate %s to %s: the device is in the error state: reset it (dev:reset())")
         :format(name_of(dev), to), EINVAL
   end
   local path
   path, err, errno = M.path(from, to, caps)
   if not path then return nil, ("migrate %s: %s"):format(name_of(dev), err), errno end
   local got = true
   local at = from
   for i, s in ipairs(path) do
      got, err, errno = dev:set_mig_state(s)
      if not got then
         return nil, ("migrate %s from %s to %s: %s -> %s failed: %s"):format(name_of(dev),
            from, to, at, s, err), errno
      end
      if i < #path and got ~= true then got:close(); got = true end
      at = s
   end
   return got
end

local function read_all(f, into)
   while true do
      local s, err, errno = f:read()
      if not s then return nil, err, errno end
      if s == "" then return true end
      into[#into + 1] = s
   end
end

---
-- M.save(dev [, {precopy = true}]) -> the device's state as a string | nil, message, errno.
-- Walks to stop_copy (running -> stop -> stop_copy), reads the data fd to its end and
-- leaves the device in stop. With precopy (and a device that offers PRE_COPY, from
-- running), the initial data is read first in pre_copy, as a live migration would, while
-- the device runs on; the second value is then {precopy_bytes = n}.
function M.save(dev, opts)
   opts = opts or {}
   local caps, err, errno = caps_of(dev)
   if not caps then return nil, err, errno end
   local chunks, pre = {}, nil
   local f
   if opts.precopy and caps.pre_copy and dev:mig_state() == "running" then
      f, err, errno = M.set(dev, "pre_copy")
      if not f then return nil, err, errno end
      if f == true then
         return nil, ("save %s: pre_copy opened no data fd"):format(name_of(dev)), EPROTO
      end
      pre = 0
      while true do
         local info
         info, err, errno = f:precopy_info()
         if not info then f:close(); return nil, err, errno end
         local want = info.initial_bytes
         if want == 0 then break end
         if want < 0 or want > PRECOPY_READ then want = PRECOPY_READ end
         local s
         s, err, errno = f:read(want)
         if not s then f:close(); return nil, err, errno end
         if s == "" then break end
         chunks[#chunks + 1] = s
         pre = pre + #s
      end
   end
   local g
   g, err, errno = M.set(dev, "stop_copy")
   if not g then
      if f then f:close() end
      return nil, err, errno
   end
   if g ~= true then
      if f then f:close() end
      f = g
   end
   if not f then
      return nil, ("save %s: stop_copy opened no data fd"):format(name_of(dev)), EPROTO
   end
   local ok
   ok, err, errno = read_all(f, chunks)
   f:close()
   if not ok then return nil, ("save %s: %s"):format(name_of(dev), err), errno end
   ok, err, errno = M.set(dev, "stop")
   if not ok then return nil, err, errno end
   return table.concat(chunks), pre and { precopy_bytes = pre } or nil
end

---
-- M.load(dev, blob [, {state = "running"}]) -> true | nil, message, errno. Walks to
-- resuming (through stop), writes the blob, and goes to stop, where the driver checks and
-- takes the state (an invalid blob fails here), then to opts.state (running by default).
-- After a failure in resuming only a reset (dev:reset()) aborts the session.
function M.load(dev, blob, opts)
   if type(blob) ~= "string" then
      error(("bad argument #2 to 'load' (string expected, got %s)"):format(type(blob)), 2)
   end
   opts = opts or {}
   local final = opts.state or "running"
   check_state(final, 3, "load")
   local f, err, errno = M.set(dev, "resuming")
   if not f then return nil, err, errno end
   if f == true then
      return nil, ("load %s: resuming opened no data fd"):format(name_of(dev)), EPROTO
   end
   local ok
   ok, err, errno = f:write(blob)
   if not ok then
      f:close()
      return nil, ("load %s: %s"):format(name_of(dev), err), errno
   end
   ok, err, errno = M.set(dev, "stop")
   f:close()
   if not ok then return nil, err, errno end
   if final ~= "stop" then
      ok, err, errno = M.set(dev, final)
      if not ok then return nil, err, errno end
      if ok ~= true then ok:close() end
   end
   return true
end

return M
