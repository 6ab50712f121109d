-- A client of a socket that speaks JSON lines: the VMM's control socket (doc/control.md)
-- and QEMU's QMP monitor alike. A request carries an `id`, its reply is the next message
-- with that id; messages with an `event` field are kept in order for whoever waits for
-- them, anything else (QMP's greeting) for line().
local json = require "dkjson"
local socket = require "posix.sys.socket"
local unistd = require "posix.unistd"
local ppoll = require "posix.poll"
local child = require "support.child"

local M = {}

---
-- M.connect(path, {seconds = 60, alive = fn}) -> client: connects to the UNIX socket at
-- path, trying again until it listens (a fresh socket each try) for `seconds`, or until
-- alive() says the process that makes it has gone; raises when it cannot.
function M.connect(path, opts)
   opts = opts or {}
   local give_up = child.now() + (opts.seconds or 60)
   local fd
   while true do
      local s = assert(socket.socket(socket.AF_UNIX, socket.SOCK_STREAM, 0))
      if socket.connect(s, { family = socket.AF_UNIX, path = path }) then fd = s break end
      unistd.close(s)
      if child.now() > give_up then error(("cannot connect to %s in %d s"):format(path, opts.seconds or 60), 2) end
      if opts.alive and not opts.alive() then error(("cannot connect to %s: its server has ended"):format(path), 2) end
      child.sleep(0.2)
   end
   local c = { fd = fd, buf = "", events = {}, others = {}, n = 0 }

   -- the next message, decoded, or nil after `seconds` or at EOF
   local function next_message(seconds)
      local deadline = child.now() + seconds
      while true do
         local nl = c.buf:find("\n", 1, true)
         if nl then
            local l = c.buf:sub(1, nl - 1):gsub("\r$", "")
            c.buf = c.buf:sub(nl + 1)
            local v, _, err = json.decode(l)
            assert(type(v) == "table", ("%s: not a JSON object (%s): %s"):format(path, tostring(err), l))
            return v
         end
         local left = deadline - child.now()
         if left <= 0 then return nil end
         if ppoll.rpoll(fd, math.max(1, math.floor(left * 1000))) == 1 then
            local data = socket.recv(fd, 65536)
            if not data or data == "" then return nil end
            c.buf = c.buf .. data
         end
      end
   end

   --- The next message that is neither an event nor a reply (QMP's greeting), or nil.
   function c.line(seconds)
      if #c.others > 0 then return table.remove(c.others, 1) end
      local deadline = child.now() + seconds
      while true do
         local v = next_message(math.max(0, deadline - child.now()))
         if not v then return nil end
         if v.event then c.events[#c.events + 1] = v else return v end
      end
   end

   --- Send t with the next id; its reply (raises when none comes in `seconds`, default 60).
   function c.request(t, seconds)
      c.n = c.n + 1
      t.id = c.n
      local s = json.encode(t) .. "\n"
      assert(unistd.write(fd, s) == #s, "short write to " .. path)
      local deadline = child.now() + (seconds or 60)
      while true do
         local v = next_message(math.max(0, deadline - child.now()))
         assert(v, ("%s: no reply to %s"):format(path, json.encode(t)))
         if v.event then
            c.events[#c.events + 1] = v
         elseif v.id == t.id then
            return v
         else
            c.others[#c.others + 1] = v
         end
      end
   end

   --- The first event (kept or to come within `seconds`) that `match` takes: an event name,
   -- or a function(event) -> true; nil when none comes.
   function c.event(match, seconds)
      local ok = type(match) == "function" and match or function(e) return e.event == match end
      for i, e in ipairs(c.events) do
         if ok(e) then return table.remove(c.events, i) end
      end
      local deadline = child.now() + seconds
      while child.now() < deadline do
         local v = next_message(deadline - child.now())
         if not v then return nil end
         if v.event and ok(v) then return v end
         if v.event then c.events[#c.events + 1] = v else c.others[#c.others + 1] = v end
      end
   end

   function c.close()
      if c.fd then unistd.close(c.fd) c.fd = nil end
   end
   return c
end

return M
