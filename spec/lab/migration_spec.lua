-- The VFIO migration uAPI on the real kernel. mtty (Linux 6.7 and later) migrates: its
-- state is its UART registers and receive FIFOs. A device is stopped and saved, a second
-- mtty resumes from that state and holds the first one's pending bytes and registers;
-- PRE_COPY hands out the header before the device stops. A vfio-pci device without a
-- migration driver says it has none. On a kernel without mtty the mtty specs are pending.
local vfio = require "vfio"
local mdev = require "vfio.mdev"
local migration = vfio.migration
local stat = require("posix.sys.stat").stat

local mtty = require "support.mtty"
local PARENT = mtty.PARENT
local ENOTTY, EINVAL = 25, 22
local MTTY_MAGIC = string.pack("<I8", 0x7e9d09898c3e2c4e) -- mtty's stream header

local RX, TX, FCR, LCR, LSR, SCR = 0, 0, 2, 3, 5, 7

local function uart_setup(bar, scratch, pending)
   bar:write8(FCR, 0x07)
   bar:write8(LCR, 0x03)
   bar:write8(SCR, scratch)
   for i = 1, #pending do bar:write8(TX, pending:byte(i)) end
end

local function drain(bar)
   local out = {}
   while bar:read8(LSR) & 0x01 ~= 0 do out[#out + 1] = string.char(bar:read8(RX)) end
   return table.concat(out)
end

local reason, cleanup, created = mtty.reason, mtty.cleanup, mtty.created

-- A function making open mtty mdevs of `typ`, closed and removed after the spec.
local function mttys(typ)
   return function()
      local uuid = created(assert(mdev.create("mtty", typ)))
      local d = assert(vfio.open(uuid))
      mtty.undo(function() d:close() end)
      return d
   end
end

describe("migration of a device without a migration driver", function()
   it("says the device does not support migration", function()
      local ok, lab = pcall(require, "support.lab")
      local edu = ok and pcall(lab.devices) and lab.device("edu")
      if not edu then pending("no edu in this lab run") return end
      local dev <close> = assert(vfio.open(edu.bdf))
      local r, err, errno = dev:migration()
      assert.is_nil(r)
      assert.are.equal(("VFIO_DEVICE_FEATURE_MIGRATION %s: Inappropriate ioctl for device (the "
         .. "device does not support migration)"):format(edu.bdf), err)
      assert.are.equal(ENOTTY, errno)
      local _
      r, _, errno = dev:mig_state()
      assert.is_nil(r)
      assert.are.equal(ENOTTY, errno)
      r, err = migration.save(dev)
      assert.is_nil(r)
      assert.matches("does not support migration", err)
   end)
end)

describe("migration on mtty", function()
   if not stat(PARENT) then
      it("needs the mtty parent", function() pending(reason()) end)
      return
   end
   after_each(cleanup)

   it("reports its features, its state and its data size", function()
      local new = mttys("mtty-1")
      local a = new()
      local caps = a:migration()
      if not caps then pending("this kernel's mtty has no migration (Linux 6.7 added it)") return end
      assert.is_true(caps.stop_copy)
      assert.is_true(caps.p2p)
      assert.are.equal("running", a:mig_state())
      local n = assert(a:mig_data_size())
      assert.is_true(n > #MTTY_MAGIC)
      local b = mttys("mtty-2")()
      assert.is_true(assert(b:mig_data_size()) > n) -- a second port's state
   end)

   it("steps through the states and reads the state from a stop_copy data file", function()
      local a = mttys("mtty-1")()
      if not a:migration() then pending("no migration in this kernel's mtty") return end
      uart_setup(a:region(0), 0x42, "xy")
      assert.is_true(a:set_mig_state("stop"))  -- a combination arc: the kernel walks it
      assert.are.equal("stop", a:mig_state())
      local f = assert(a:set_mig_state("stop_copy"))
      assert.matches("^vfio.migfile %(stop_copy of ", tostring(f))
      assert.are.equal("stop_copy", f:state())
      assert.is_number(f:fileno())
      local head = assert(f:read(8))
      assert.are.equal(MTTY_MAGIC, head)
      local rest = assert(f:read())
      assert.are.equal(a:mig_data_size(), #head + #rest)
      assert.are.equal("", f:read())             -- the end of the stream
      f:close()
      f:close()
      assert.is_true(f:closed())
      assert.has_error(function() f:read(1) end)
      local r, err, errno = a:set_mig_state("pre_copy")
      assert.is_nil(r)
      assert.matches("%(to pre_copy%): Invalid argument", err)
      assert.are.equal(EINVAL, errno)
      assert.are.equal("stop_copy", a:mig_state())
      assert.is_true(migration.set(a, "running"))
      assert.are.equal("running", a:mig_state())
      assert.are.equal("xy", drain(a:region(0)))  -- saving consumed nothing
   end)

   it("keeps its device alive while a data file is open", function()
      local uuid = created(assert(mdev.create("mtty", "mtty-1")))
      local f, size
      do
         local a <close> = assert(vfio.open(uuid))
         if not a:migration() then pending("no migration in this kernel's mtty") return end
         assert.is_true(migration.set(a, "running"))
      end
      do -- the only reference to the device is the data file's
         local a = assert(vfio.open(uuid))
         f = assert(migration.set(a, "stop_copy"))
         size = a:mig_data_size()
      end
      collectgarbage()
      collectgarbage()
      assert.are.equal(size, #assert(f:read()))
      f:close()
      f = nil -- luacheck: ignore
   end)

   it("resumes a second mtty from the first one's state", function()
      local new = mttys("mtty-2")
      local a, b = new(), new()
      if not a:migration() then pending("no migration in this kernel's mtty") return end
      uart_setup(a:region(0), 0x5a, "pending!")
      uart_setup(a:region(1), 0xa5, "two")
      local blob = assert(migration.save(a))
      assert.are.equal("stop", a:mig_state())
      assert.are.equal(MTTY_MAGIC, blob:sub(1, 8))
      assert.are.equal(a:mig_data_size(), #blob)
      assert.are.equal(0x00, b:region(0):read8(SCR))
      assert.is_true(migration.load(b, blob))
      assert.are.equal("running", b:mig_state())
      assert.are.equal(0x5a, b:region(0):read8(SCR))
      assert.are.equal(0x03, b:region(0):read8(LCR))
      assert.are.equal(0xa5, b:region(1):read8(SCR))
      assert.are.equal("pending!", drain(b:region(0)))
      assert.are.equal("two", drain(b:region(1)))
      -- the first one still has its own, once running again
      assert.is_true(migration.set(a, "running"))
      assert.are.equal("pending!", drain(a:region(0)))
   end)

   it("refuses a state that is not a saved one, and a reset ends resuming", function()
      local new = mttys("mtty-1")
      local a, b = new(), new()
      if not a:migration() then pending("no migration in this kernel's mtty") return end
      local blob = assert(migration.save(a))
      -- too short: resuming -> stop checks the length and fails
      local ok, err, errno = migration.load(b, blob:sub(1, 10))
      assert.is_nil(ok)
      assert.matches("resuming %-> stop failed: .*Invalid argument", err)
      assert.are.equal(EINVAL, errno)
      assert.are.equal("resuming", b:mig_state())
      assert(b:reset())
      assert.are.equal("running", b:mig_state())
      -- a wrong header: the write itself is refused
      ok, err = migration.load(b, ("\0"):rep(#blob))
      assert.is_nil(ok)
      assert.matches("^load .*: write resuming data fd of ", err)
      assert(b:reset())
      assert.are.equal("running", b:mig_state())
      -- and the real thing still loads
      assert.is_true(migration.load(b, blob))
   end)

   it("hands out the header during PRE_COPY, the rest in STOP_COPY", function()
      local new = mttys("mtty-1")
      local a, b = new(), new()
      local caps = a:migration()
      if not (caps and caps.pre_copy) then pending("this mtty offers no PRE_COPY") return end
      uart_setup(a:region(0), 0x77, "live")
      local f = assert(a:set_mig_state("pre_copy"))   -- running -> pre_copy: a direct arc
      assert.are.equal("pre_copy", f:state())
      local info = assert(f:precopy_info())
      assert.are.equal(0, info.dirty_bytes)
      assert.is_true(info.initial_bytes >= #MTTY_MAGIC)
      local initial = assert(f:read(info.initial_bytes))
      assert.are.equal(info.initial_bytes, #initial)
      assert.are.equal(MTTY_MAGIC, initial:sub(1, 8))
      assert.are.equal(0, assert(f:precopy_info()).initial_bytes)
      assert.are.equal("", f:read())                  -- nothing more until the device stops
      -- the device runs on in pre_copy
      a:region(0):write8(SCR, 0x78)
      local r = assert(a:set_mig_state("stop_copy"))
      if r ~= true then f:close(); f = r end          -- a driver may open a new fd here
      local rest = assert(f:read())
      local _, _, errno = f:precopy_info()
      assert.are.equal(EINVAL, errno)                 -- only in the PRE_COPY states
      f:close()
      assert.are.equal(a:mig_data_size(), #initial + #rest)
      assert.is_true(migration.set(a, "stop"))
      assert.is_true(migration.load(b, initial .. rest))
      assert.are.equal(0x78, b:region(0):read8(SCR))  -- the state at the stop
      assert.are.equal("live", drain(b:region(0)))
      -- the helper does the same
      assert.is_true(migration.set(a, "running"))
      local blob, saved = migration.save(a, { precopy = true })
      assert.is_string(blob)
      assert.are.equal(#initial, saved.precopy_bytes)
      assert.are.equal(initial .. rest, blob)
   end)
end)
