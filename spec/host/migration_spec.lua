-- Device migration without a kernel: vfio.core's constants, ABI sizes and argument
-- checks (on /dev/null, which answers every ioctl with ENOTTY), and vfio.migration's state
-- machine against an oracle of the kernel's own next-step table, walked on a fake device
-- that accepts only direct arcs. The real thing on mtty: spec/lab/migration_spec.lua.
local core = require "vfio.core"
local migration = require "vfio.migration"

local ENOTTY, EINVAL = 25, 22

describe("vfio.core migration", function()
   it("has the states, the feature flags and the ABI of Linux's v2 protocol", function()
      assert.are.same({ ERROR = 0, STOP = 1, RUNNING = 2, STOP_COPY = 3, RESUMING = 4,
         RUNNING_P2P = 5, PRE_COPY = 6, PRE_COPY_P2P = 7 }, core.MIG_STATE)
      assert.are.same({ STOP_COPY = 1, P2P = 2, PRE_COPY = 4 }, core.MIGRATION)
      assert.are.equal(1, core.FEATURE.MIGRATION)
      assert.are.equal(2, core.FEATURE.MIG_DEVICE_STATE)
      assert.are.equal(9, core.FEATURE.MIG_DATA_SIZE)
      assert.are.same({
         feature_migration = 8, mig_state = 8, mig_data_size = 8, precopy_info = 24,
         PRECOPY_INFO_IOCTL = 0x3b79, FEATURE_MIG_DATA_SIZE = 9,
      }, core.migration_abi())
   end)

   it("raises on states that are none, and on closed devices", function()
      local d <close> = assert(core.device_file("/dev/null"))
      for _, bad in ipairs { "bogus", "error", "RUNNING", 0, 8, -1, 2.5, {} } do
         assert.has_error(function() d:set_mig_state(bad) end, nil, tostring(bad))
      end
      assert.has_error(function() d:set_mig_state() end)
      d:close()
      assert.has_error(function() d:migration() end)
      assert.has_error(function() d:mig_state() end)
      assert.has_error(function() d:mig_data_size() end)
   end)

   it("returns the kernel's refusal naming the feature, the device and the state", function()
      local d <close> = assert(core.device_file("/dev/null", "fake0"))
      local r, err, errno = d:migration()
      assert.is_nil(r)
      assert.are.equal("VFIO_DEVICE_FEATURE_MIGRATION fake0: Inappropriate ioctl for device "
         .. "(the device does not support migration)", err)
      assert.are.equal(ENOTTY, errno)
      r, err, errno = d:mig_state()
      assert.is_nil(r)
      assert.matches("^VFIO_DEVICE_FEATURE_MIG_DEVICE_STATE fake0 %(get%): ", err)
      assert.are.equal(ENOTTY, errno)
      r, err = d:set_mig_state("stop_copy")
      assert.is_nil(r)
      assert.matches("^VFIO_DEVICE_FEATURE_MIG_DEVICE_STATE fake0 %(to stop_copy%): ", err)
      r, err = d:set_mig_state(core.MIG_STATE.RESUMING)
      assert.is_nil(r)
      assert.matches("%(to resuming%)", err)
      r, err = d:mig_data_size()
      assert.is_nil(r)
      assert.matches("^VFIO_DEVICE_FEATURE_MIG_DATA_SIZE fake0: ", err)
   end)

   it("registers vfio.migfile", function()
      local mt = debug.getregistry()["vfio.migfile"]
      assert.is_table(mt)
      for _, m in ipairs { "read", "write", "precopy_info", "state", "fileno", "closed",
         "close" } do
         assert.is_function(mt.__index[m], m)
      end
   end)
end)

-- The kernel's next step from each state towards each target (its vfio_mig_get_next_state
-- table, written out by hand here as the oracle), and its rule for states a device lacks:
-- keep stepping from the unsupported state towards the target.
local NEXT = {
   stop = { running = "running_p2p", pre_copy = "running_p2p", pre_copy_p2p = "running_p2p",
      stop_copy = "stop_copy", resuming = "resuming", running_p2p = "running_p2p" },
   running = { stop = "running_p2p", pre_copy = "pre_copy", pre_copy_p2p = "running_p2p",
      stop_copy = "running_p2p", resuming = "running_p2p", running_p2p = "running_p2p" },
   pre_copy = { stop = "running", running = "running", pre_copy_p2p = "pre_copy_p2p",
      stop_copy = "pre_copy_p2p", resuming = "running", running_p2p = "running" },
   pre_copy_p2p = { stop = "running_p2p", running = "running_p2p", pre_copy = "pre_copy",
      stop_copy = "stop_copy", resuming = "running_p2p", running_p2p = "running_p2p" },
   stop_copy = { stop = "stop", running = "stop", pre_copy = "error", pre_copy_p2p = "error",
      resuming = "stop", running_p2p = "stop" },
   resuming = { stop = "stop", running = "stop", pre_copy = "stop", pre_copy_p2p = "stop",
      stop_copy = "stop", running_p2p = "stop" },
   running_p2p = { stop = "stop", running = "running", pre_copy = "running",
      pre_copy_p2p = "pre_copy_p2p", stop_copy = "stop", resuming = "stop" },
}
local function has(s, caps)
   if s == "running_p2p" then return caps.p2p end
   if s == "pre_copy" then return caps.pre_copy end
   if s == "pre_copy_p2p" then return caps.p2p and caps.pre_copy end
   return true
end
local function oracle_next(cur, new, caps)
   if not has(cur, caps) or not has(new, caps) then return nil end
   if cur == new then return cur end
   local n = NEXT[cur][new]
   while n ~= "error" and not has(n, caps) do n = NEXT[n][new] end
   return n ~= "error" and n or nil
end
local function oracle_path(cur, new, caps)
   local path = {}
   while cur ~= new do
      cur = oracle_next(cur, new, caps)
      if not cur then return nil end
      path[#path + 1] = cur
   end
   return path
end

local CAPS = {
   { name = "stop_copy only", caps = { stop_copy = true } },
   { name = "p2p", caps = { stop_copy = true, p2p = true } },
   { name = "pre_copy", caps = { stop_copy = true, pre_copy = true } },
   { name = "p2p and pre_copy", caps = { stop_copy = true, p2p = true, pre_copy = true } },
}

describe("vfio.migration's state machine", function()
   for _, c in ipairs(CAPS) do
      it("walks the kernel's path between every two states (" .. c.name .. ")", function()
         for _, from in ipairs(migration.STATES) do
            for _, to in ipairs(migration.STATES) do
               local want = oracle_path(from, to, c.caps)
               local got, err, errno = migration.path(from, to, c.caps)
               local what = from .. " -> " .. to
               if want and has(from, c.caps) then
                  assert.are.same(want, got, what .. ": " .. tostring(err))
               else
                  assert.is_nil(got, what)
                  assert.is_string(err)
                  assert.are.equal(EINVAL, errno)
               end
            end
         end
      end)

      it("has as direct arcs exactly the kernel's single steps (" .. c.name .. ")", function()
         local arcs = migration.arcs(c.caps)
         for _, from in ipairs(migration.STATES) do
            local want = {}
            if has(from, c.caps) then
               for _, to in ipairs(migration.STATES) do
                  if to ~= from and oracle_next(from, to, c.caps) == to then want[to] = true end
               end
            end
            local got = {}
            for _, to in ipairs(arcs[from] or {}) do got[to] = true end
            assert.are.same(want, got, from)
         end
      end)
   end

   it("says why a walk does not exist", function()
      local all = CAPS[4].caps
      local p, err = migration.path("stop_copy", "pre_copy", all)
      assert.is_nil(p)
      assert.matches("stop_copy %-> pre_copy is refused by the kernel", err)
      p, err = migration.path("running", "pre_copy", CAPS[1].caps)
      assert.is_nil(p)
      assert.are.equal("the device does not support pre_copy (it needs pre_copy)", err)
      assert.are.same({}, migration.path("stop", "stop", all))
      assert.has_error(function() migration.path("stop", "paused", all) end)
      assert.has_error(function() migration.path(nil, "stop", all) end)
      assert.has_error(function() migration.path("error", "stop", all) end)
   end)
end)

-- A device that moves only along single kernel steps, with data fds: the saving one
-- hands its state out a few bytes at a time; the resuming one collects what is written
-- and takes it on resuming -> stop, refusing anything that is not a saved state.
local function fake_device(caps, state)
   local dev = { name = "fake", state = "running", log = {}, data = state or "" }
   local function file(kind)
      local f = { kind = kind, pos = 0, buf = "", closed_ = false }
      function f.read(self, n)
         local ready = self.kind == "pre_copy" and dev.pre_ready or #dev.data
         local k = math.min(n or 3, 3, ready - self.pos)
         local s = dev.data:sub(self.pos + 1, self.pos + k)
         self.pos = self.pos + #s
         return s
      end
      function f.write(self, s) self.buf = self.buf .. s; return #s end
      function f.precopy_info(self)
         return { initial_bytes = dev.pre_ready - self.pos, dirty_bytes = 0, flags = 0 }
      end
      function f.close(self) self.closed_ = true end
      return f
   end
   function dev.migration() return caps end
   function dev.mig_state(self) return self.state end
   function dev.set_mig_state(self, s)
      if oracle_next(self.state, s, caps) ~= s then
         return nil, ("fake: %s -> %s is no single step"):format(self.state, s), EINVAL
      end
      local arc = self.state .. ">" .. s
      self.log[#self.log + 1] = arc
      local from = self.state
      self.state = s
      if from == "resuming" then
         if self.resuming.buf:sub(1, 5) ~= "SAVED" then
            self.state = "error"
            return nil, "fake: invalid state", EINVAL
         end
         self.data = self.resuming.buf
      end
      if arc == "stop>stop_copy" then self.saving = file("stop_copy"); return self.saving end
      if arc == "running>pre_copy" then
         self.pre_ready = 5 -- the header is ready before the device stops
         self.saving = file("pre_copy")
         return self.saving
      end
      if s == "stop_copy" then self.saving.kind = "stop_copy"; return true end
      if arc == "stop>resuming" then self.resuming = file("resuming"); return self.resuming end
      return true
   end
   return dev
end

describe("vfio.migration.set, save and load", function()
   it("walks one direct arc per request and returns the last arc's data file", function()
      local dev = fake_device(CAPS[4].caps)
      local f = assert(migration.set(dev, "stop_copy"))
      assert.are.same({ "running>running_p2p", "running_p2p>stop", "stop>stop_copy" }, dev.log)
      assert.are.equal(dev.saving, f)
      assert.is_true(migration.set(dev, "stop_copy"))
      local ok, err, errno = migration.set(dev, "pre_copy")
      assert.is_nil(ok)
      assert.matches("^migrate fake: stop_copy %-> pre_copy is refused", err)
      assert.are.equal(EINVAL, errno)
   end)

   it("names the arc that failed", function()
      local dev = fake_device(CAPS[1].caps)
      dev.set_mig_state = function(self, s)
         if s == "stop_copy" then return nil, "boom", 5 end
         self.state = s
         return true
      end
      local ok, err, errno = migration.set(dev, "stop_copy")
      assert.is_nil(ok)
      assert.are.equal("migrate fake from running to stop_copy: stop -> stop_copy failed: boom",
         err)
      assert.are.equal(5, errno)
      assert.are.equal("stop", dev.state)
      dev.state = "error"
      ok, err = migration.set(dev, "running")
      assert.is_nil(ok)
      assert.matches("in the error state: reset it", err)
   end)

   it("saves a device's state to the end of its stream and leaves it stopped", function()
      local dev = fake_device(CAPS[1].caps, "SAVED-state-of-some-length")
      local blob = assert(migration.save(dev))
      assert.are.equal("SAVED-state-of-some-length", blob)
      assert.are.same({ "running>stop", "stop>stop_copy", "stop_copy>stop" }, dev.log)
      assert.is_true(dev.saving.closed_)
   end)

   it("saves through pre_copy first when asked and offered", function()
      local dev = fake_device(CAPS[4].caps, "SAVED-state-of-some-length")
      local blob, info = migration.save(dev, { precopy = true })
      assert.are.equal("SAVED-state-of-some-length", blob)
      assert.are.same({ precopy_bytes = 5 }, info)
      assert.are.same({ "running>pre_copy", "pre_copy>pre_copy_p2p", "pre_copy_p2p>stop_copy",
         "stop_copy>stop" }, dev.log)
      -- no PRE_COPY: the plain walk
      dev = fake_device(CAPS[2].caps, "SAVED")
      blob, info = migration.save(dev, { precopy = true })
      assert.are.equal("SAVED", blob)
      assert.is_nil(info)
   end)

   it("loads a state through resuming and runs the device again", function()
      local dev = fake_device(CAPS[2].caps)
      assert.is_true(migration.load(dev, "SAVED-elsewhere"))
      assert.are.equal("SAVED-elsewhere", dev.data)
      assert.are.equal("running", dev.state)
      assert.are.same({ "running>running_p2p", "running_p2p>stop", "stop>resuming",
         "resuming>stop", "stop>running_p2p", "running_p2p>running" }, dev.log)
      assert.is_true(dev.resuming.closed_)
      dev = fake_device(CAPS[1].caps)
      assert.is_true(migration.load(dev, "SAVED", { state = "stop" }))
      assert.are.equal("stop", dev.state)
   end)

   it("reports a state the device refuses, and raises on a blob that is no string", function()
      local dev = fake_device(CAPS[1].caps)
      local ok, err, errno = migration.load(dev, "garbage")
      assert.is_nil(ok)
      assert.are.equal("migrate fake from resuming to stop: resuming -> stop failed: fake: "
         .. "invalid state", err)
      assert.are.equal(EINVAL, errno)
      assert.has_error(function() migration.load(dev, nil) end)
      assert.has_error(function() migration.load(dev, "SAVED", { state = "paused" }) end)
      assert.has_error(function() migration.set(dev, "nowhere") end)
   end)
end)
