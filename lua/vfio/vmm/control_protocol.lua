---
-- The control socket's protocol, with no I/O: JSON lines (doc/control.md). A client
-- sends one request per line, a JSON object `{"id": ID, "cmd": NAME, ...arguments}`; the
-- VMM answers each with one line `{"id": ID, "ok": true, "result": ...}` or
-- `{"id": ID, "ok": false, "error": MESSAGE}`, in order, and pushes events between
-- them as `{"event": NAME, ...}` lines (no id). Every byte a peer sends is hostile:
--   - a line is at most MAX_LINE bytes; a longer one is discarded up to its newline and
--     answered with one error (the framer keeps no more than MAX_LINE bytes meanwhile);
--   - a line that is not JSON, not an object, deeper than JSON nests sanely (the decoder's
--     stack overflow is caught), or names an unknown command gets an error reply;
--   - arguments are checked against the command's table below (names and types, unknown
--     ones refused) before the command runs, so a command sees only what it declared;
--   - the id is echoed only when it is a string of at most MAX_ID bytes, an integer or
--     null.
-- The commands are data (COMMANDS): what each takes, and one line of what it does; the
-- server (vfio.vmm.control) dispatches on it and `help` lists it.
-- @module vfio.vmm.control_protocol
local json = require "dkjson"

local M = {}

--- The longest request line, in bytes, its newline excluded (an `eval` chunk included).
M.MAX_LINE = 64 * 1024
--- The longest string id echoed back.
M.MAX_ID = 256

-- Argument types: "string", "integer", "boolean"; a trailing "?" makes it optional.
--- The commands: name -> {args = {name = type}, doc = what it does}.
M.COMMANDS = {
   help = { args = {}, doc = "the commands, their arguments and what each does" },
   info = { args = {}, doc = "the machine: vCPUs, RAM and its backend, the run state, "
      .. "each device with its guest and host address, slot, BARs, interrupt mode and vectors" },
   device_add = { args = { device = "string", slot = "integer?" },
      doc = "hot-plug the host device `device` (a PCI address) into a free hot-plug slot "
         .. "(or `slot`, its number as the guest's /sys/bus/pci/slots names it); event device_added" },
   device_del = { args = { device = "string" },
      doc = "unplug the device `device` (its id from info, its host or its guest "
         .. "address); event device_removed" },
   pause = { args = {}, doc = "stop running the vCPUs (the guest's clock goes on); event paused" },
   resume = { args = {}, doc = "run the vCPUs again; event resumed" },
   quit = { args = {}, doc = "end the run; the VMM tears the VM down and exits 0" },
   eval = { args = { code = "string" },
      doc = "run a Lua chunk inside the VMM (the owner's own code: the socket is the "
         .. "owner's alone) and return what it printed and returned" },
}

--- The events the VMM pushes: name -> what it carries.
M.EVENTS = {
   device_added = "device (its id), guest (address), host (address)",
   device_removed = "device, guest, host",
   paused = "(nothing)",
   resumed = "(nothing)",
   guest_stopped = "result (poweroff, reboot, panic, timeout, quit...), status (the "
      .. "command's exit status)",
}

local function valid_id(id)
   local t = type(id)
   if t == "string" then return #id <= M.MAX_ID end
   if t == "number" then return math.type(id) == "integer" end
   return id == nil or id == json.null
end

local TYPES = { string = "string", integer = "integer", boolean = "boolean" }

local function check_arg(name, want, v)
   local optional = want:sub(-1) == "?"
   local base = optional and want:sub(1, -2) or want
   if v == nil or v == json.null then
      if optional then return true end
      return nil, ("argument %s is required (%s)"):format(name, base)
   end
   local ok
   if base == "integer" then
      ok = math.type(v) == "integer" or (math.type(v) == "float" and v == math.floor(v)
         and v >= math.mininteger and v <= math.maxinteger)
   else
      ok = type(v) == TYPES[base]
   end
   if not ok then return nil, ("argument %s must be a %s"):format(name, base) end
   return true
end

---
-- parse(line) -> request {id=, cmd=, args={}}, or nil, message, id: one request line
-- (without its newline) checked against COMMANDS. The id comes back with an error
-- whenever it could be read, so the reply can name it.
function M.parse(line)
   if type(line) ~= "string" then error("parse takes a string", 2) end
   if #line > M.MAX_LINE then return nil, ("line too long (more than %d bytes)"):format(M.MAX_LINE) end
   -- dkjson recurses per nesting level: a hostile [[[[... ends in a stack overflow,
   -- which is an error like any other bad JSON
   local ok, v, _, err = pcall(json.decode, line, 1, json.null)
   if not ok then return nil, "bad JSON: nested too deeply" end
   if err or v == nil then return nil, "bad JSON: " .. tostring(err) end
   if type(v) ~= "table" or (getmetatable(v) or {}).__jsontype ~= "object" then
      return nil, "a request is a JSON object {\"id\": ..., \"cmd\": ...}"
   end
   local id = v.id
   if not valid_id(id) then
      return nil, ("id must be an integer, null or a string of at most %d bytes"):format(M.MAX_ID)
   end
   if id == json.null then id = nil end
   local cmd = v.cmd
   if type(cmd) ~= "string" then return nil, "cmd is required: the command's name (help lists them)", id end
   local spec = M.COMMANDS[cmd]
   if not spec or type(spec) ~= "table" then
      return nil, ("unknown command %q (help lists them)"):format(#cmd > 64 and cmd:sub(1, 64) .. "..." or cmd), id
   end
   local args = {}
   for k, val in pairs(v) do
      if k ~= "id" and k ~= "cmd" then
         if type(k) ~= "string" or not spec.args[k] then
            local name = tostring(k)
            return nil, ("%s takes no argument %q"):format(cmd, #name > 64 and name:sub(1, 64) .. "..." or name), id
         end
         args[k] = val
      end
   end
   for name, want in pairs(spec.args) do
      local aok, why = check_arg(name, want, args[name])
      if not aok then return nil, ("%s: %s"):format(cmd, why), id end
      if args[name] == json.null then args[name] = nil end
      if math.type(args[name]) == "float" then args[name] = math.tointeger(args[name]) end
   end
   return { id = id, cmd = cmd, args = args }
end

-- Bytes that are not UTF-8 (a device's config bytes printed raw, a guest's console)
-- would make the line invalid JSON for a strict client: each such byte becomes \xNN
-- text. Valid UTF-8 passes as it is.
local function utf8_safe(s)
   if utf8.len(s) then return s end
   local out, i, n = {}, 1, #s
   while i <= n do
      local c = s:byte(i)
      local width = c < 0x80 and 1 or c >= 0xf0 and 4 or c >= 0xe0 and 3 or c >= 0xc0 and 2 or 1
      local piece = s:sub(i, i + width - 1)
      if #piece == width and utf8.len(piece) == 1 then
         out[#out + 1] = piece
         i = i + width
      else
         out[#out + 1] = ("\\x%02x"):format(c)
         i = i + 1
      end
   end
   return table.concat(out)
end

local function sanitize(v, depth)
   local t = type(v)
   if t == "string" then return utf8_safe(v) end
   if t == "number" then
      if v ~= v or v == math.huge or v == -math.huge then return tostring(v) end
      return v
   end
   if t == "boolean" or v == nil or v == json.null then return v end
   if t ~= "table" then return tostring(v) end
   if depth > 32 then return "(nested too deeply)" end
   local out = {}
   for k, x in pairs(v) do
      local key = type(k) == "string" and utf8_safe(k) or k
      if type(key) == "string" or math.type(key) == "integer" then
         out[key] = sanitize(x, depth + 1)
      end
   end
   return setmetatable(out, getmetatable(v) and getmetatable(v).__jsontype and getmetatable(v) or nil)
end

local KEYORDER = { "id", "ok", "event", "error", "result" }

---
-- encode(t) -> one JSON line (with its newline): a reply or an event; strings that are
-- not UTF-8 are escaped as \xNN text, numbers JSON cannot carry become strings.
function M.encode(t)
   return json.encode(sanitize(t, 0), { keyorder = KEYORDER }) .. "\n"
end

--- A success reply to request id.
function M.reply(id, result)
   return M.encode { id = id == nil and json.null or id, ok = true, result = result }
end

--- An error reply to request id (nil when the request's id could not be read).
function M.error_reply(id, message)
   return M.encode { id = id == nil and json.null or id, ok = false, error = tostring(message) }
end

--- An event line: {"event": name, fields...}.
function M.event(name, fields)
   local t = {}
   for k, v in pairs(fields or {}) do t[k] = v end
   t.event = name
   return M.encode(t)
end

--- A JSON array for a list (an empty list is [] rather than {}).
function M.array(list)
   return setmetatable(list or {}, { __jsontype = "array" })
end

--- A JSON object for a table (an empty one is {} rather than []).
function M.object(t)
   return setmetatable(t or {}, { __jsontype = "object" })
end

local Framer = {}
Framer.__index = Framer

---
-- framer() -> a framer: feed it the bytes a client sent, as they come (a line may be
-- split across reads, several may come in one), and it returns the complete lines.
function M.framer()
   return setmetatable({ buf = {}, len = 0, discarding = false }, Framer)
end

--- The request framer of one client (framer()).
-- @type Framer

---
-- framer:feed(bytes) -> list of items, each {line = text} or {error = message} (a line
-- past MAX_LINE: reported once, when its newline comes or when the limit is passed,
-- then skipped up to its newline). The framer keeps at most MAX_LINE bytes.
function Framer:feed(bytes)
   local items, pos = {}, 1
   while pos <= #bytes do
      local nl = bytes:find("\n", pos, true)
      local piece = bytes:sub(pos, nl and nl - 1 or #bytes)
      if self.discarding then
         if nl then self.discarding = false end
      elseif self.len + #piece > M.MAX_LINE then
         items[#items + 1] = { error = ("line too long (more than %d bytes): discarded up to "
            .. "its newline"):format(M.MAX_LINE) }
         self.buf, self.len = {}, 0
         self.discarding = not nl
      elseif nl then
         self.buf[#self.buf + 1] = piece
         local line = table.concat(self.buf)
         self.buf, self.len = {}, 0
         if line:sub(-1) == "\r" then line = line:sub(1, -2) end
         if line:match("%S") then items[#items + 1] = { line = line } end
      else
         self.buf[#self.buf + 1] = piece
         self.len = self.len + #piece
      end
      if not nl then break end
      pos = nl + 1
   end
   return items
end

--- Bytes of an unfinished line held (a client that disconnects leaves them: dropped).
function Framer:pending() return self.len end

return M
