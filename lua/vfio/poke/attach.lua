---
-- `vfio-poke --attach PATH`: the REPL inside a running VMM. It connects to the VMM's
-- control socket (vfio-passthrough --control PATH, doc/control.md) and sends each Lua
-- chunk typed as an `eval` request; the VMM runs it on its own Lua thread between two
-- runs of the guest, where `board`, `vm`, `devices` (by id), `lspci(id or device)` (a
-- device's config space decoded like lspci -vvv, as the guest sees it) and `trace(n [, id])`
-- (the last trace lines, with --trace) are there, and sends back what it printed and
-- returned. A line starting with ":" is a protocol command instead: `:info`, `:pause`,
-- `:resume`, `:quit`, `:help`, `:device_add BDF`, `:device_del ID`. Events the VMM pushes
-- are printed as they come.
--
-- The socket is the VMM owner's alone (mode 0600, peers checked by their credentials):
-- eval is the owner running their own code in their own process.
-- @module vfio.poke.attach
local json = require "dkjson"
local socket = require "posix.sys.socket"
local unistd = require "posix.unistd"

local M = {}

--- A connection to a VMM's control socket (attach.connect).
-- @type Conn
local Conn = {}
Conn.__index = Conn

---
-- connect(path) -> connection, or nil, message.
function M.connect(path)
   local fd, err = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM, 0)
   if not fd then return nil, "socket: " .. tostring(err) end
   local ok, cerr = socket.connect(fd, { family = socket.AF_UNIX, path = path })
   if not ok then
      unistd.close(fd)
      return nil, ("cannot attach to %s: %s (is vfio-passthrough running with --control %s?)")
         :format(path, tostring(cerr), path)
   end
   return setmetatable({ fd = fd, buf = "", next_id = 0 }, Conn)
end

--- The next line the VMM sent, decoded (nil, message when it closed or sent garbage).
function Conn:read()
   while true do
      local nl = self.buf:find("\n", 1, true)
      if nl then
         local line = self.buf:sub(1, nl - 1)
         self.buf = self.buf:sub(nl + 1)
         local v, _, err = json.decode(line, 1, nil)
         if type(v) ~= "table" then return nil, "the VMM sent a line that is not JSON: " .. tostring(err) end
         return v
      end
      local data, err = socket.recv(self.fd, 65536)
      if not data then return nil, "read: " .. tostring(err) end
      if data == "" then return nil, "the VMM closed the connection" end
      self.buf = self.buf .. data
   end
end

---
-- request(t [, on_event]) -> the reply {id=, ok=, result= | error=}, or nil, message:
-- sends the request t (cmd and arguments; the id is set here) and reads up to its reply,
-- handing the events that come first to on_event(event).
function Conn:request(t, on_event)
   self.next_id = self.next_id + 1
   local req = { id = self.next_id }
   for k, v in pairs(t) do req[k] = v end
   local line = json.encode(req) .. "\n"
   local sent = 0
   while sent < #line do
      local n, err = unistd.write(self.fd, line:sub(sent + 1))
      if not n then return nil, "write: " .. tostring(err) end
      sent = sent + n
   end
   while true do
      local v, err = self:read()
      if not v then return nil, err end
      if v.event then
         if on_event then on_event(v) end
      elseif v.id == req.id or v.id == nil then
         return v
      end
   end
end

--- Close the connection. Idempotent.
function Conn:close()
   if self.fd then unistd.close(self.fd) self.fd = nil end
end

local function show(v)
   if type(v) ~= "table" then return tostring(v) end
   return json.encode(v, { indent = true })
end

---
-- command_line(text) -> the request a ":" line stands for, or nil, message.
function M.command_line(text)
   local cmd, arg = text:match("^:(%S+)%s*(.-)%s*$")
   if not cmd then return nil, "a command after ':' (:help lists them)" end
   if cmd == "device_add" or cmd == "device_del" then
      if arg == "" then return nil, (":%s needs a device"):format(cmd) end
      return { cmd = cmd, device = arg }
   end
   if arg ~= "" then return nil, (":%s takes no argument"):format(cmd) end
   return { cmd = cmd }
end

-- Whether src is an unfinished chunk (more lines to come), checked by compiling it here
-- without running it.
local function unfinished(src)
   local _, err = load("return " .. src, "=attach", "t", {})
   if not err then return false end
   _, err = load(src, "=attach", "t", {})
   return err ~= nil and err:match("<eof>$") ~= nil
end

---
-- repl(path, {input = fn(prompt) -> line, out = fn(text)}) -> true, or nil, message: the
-- attached REPL, until end of input or the VMM goes away.
function M.repl(path, opts)
   opts = opts or {}
   local out = opts.out or io.write
   local input = opts.input
   if not input then
      local ok, rl = pcall(require, "readline")
      if ok and os.execute("test -t 0") == true then
         input = rl.readline
      else
         input = function(prompt)
            if os.execute("test -t 0") == true then io.write(prompt) io.flush() end
            return io.read("l")
         end
      end
   end
   local conn, err = M.connect(path)
   if not conn then return nil, err end
   local function on_event(e)
      local name = e.event
      e.event = nil
      out(("event: %s %s\n"):format(tostring(name), json.encode(e)))
   end
   out(("attached to %s: Lua runs inside the VMM; :help for its commands, Ctrl-D detaches\n"):format(path))
   local pending
   while true do
      local line = input(pending and "....> " or "vmm> ")
      if line == nil then break end
      local req, why
      if not pending and line:match("^%s*:") then
         req, why = M.command_line(line:match("^%s*(.*)$"))
      else
         local src = pending and (pending .. "\n" .. line) or line
         if src:match("^%s*=") then src = "return " .. src:match("^%s*=(.*)") end
         if unfinished(src) then
            pending = src
         else
            pending = nil
            if src:match("%S") then req = { cmd = "eval", code = src } end
         end
      end
      if why then out("error: " .. why .. "\n") end
      if req then
         local r, rerr = conn:request(req, on_event)
         if not r then
            conn:close()
            return nil, rerr
         end
         if not r.ok then
            out("error: " .. tostring(r.error) .. "\n")
         elseif req.cmd == "eval" then
            for _, l in ipairs(r.result.output or {}) do out(l .. "\n") end
            for _, v in ipairs(r.result.values or {}) do out(v .. (v:sub(-1) == "\n" and "" or "\n")) end
         else
            out(show(r.result) .. "\n")
         end
         if req.cmd == "quit" and r.ok then break end
      end
   end
   conn:close()
   return true
end

return M
