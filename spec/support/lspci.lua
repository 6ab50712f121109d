-- Compare vfio.decode's result with `lspci -vvv` text of the same device, line by line for
-- everything lspci takes from config space: the name line, Subsystem, Control, Status,
-- Latency, Regions, Expansion ROM and every capability (header and body).
local M = {}

-- lspci -vvv text of one device -> { head=, lines = {...}, caps = { {header=, body={...}} } }
function M.parse(text)
   local t = { lines = {}, caps = {}, regions = {} }
   local cur
   for line in text:gmatch("[^\n]+") do
      if not t.head then
         t.head = line
      elseif line:match("^\tCapabilities: ") then
         cur = { header = line:sub(2), body = {} }
         t.caps[#t.caps + 1] = cur
      elseif line:match("^\t\t") and cur then
         cur.body[#cur.body + 1] = line:sub(3)
      else
         cur = nil
         local l = line:sub(2)
         t.lines[#t.lines + 1] = l
         if l:match("^Region %d") or l:match("^Expansion ROM") then t.regions[#t.regions + 1] = l end
      end
   end
   return t
end

local SIMPLE = { "^Subsystem: ", "^Control: ", "^Status: ", "^Latency: ", "^Bus: ",
   "^I/O behind bridge", "^Memory behind bridge", "^Prefetchable memory behind bridge",
   "^Secondary status: ", "^BridgeCtl: ", "^\tPriDiscTmr" }

-- Returns a list of differences (empty when the decode matches) and counts of what was compared.
function M.compare(info, lspci_text)
   local want = M.parse(lspci_text)
   local got = M.parse(info:text())
   local diffs, n = {}, { lines = 0, regions = 0, caps = 0, cap_lines = 0, partial = 0 }
   local function diff(what, w, g)
      diffs[#diffs + 1] = string.format("%s:\n  lspci: %s\n  ours:  %s", what, tostring(w), tostring(g))
   end
   if want.head ~= got.head then diff("name line", want.head, got.head) end
   local function find(list, pat)
      for _, l in ipairs(list) do if l:match(pat) then return l end end
   end
   for _, pat in ipairs(SIMPLE) do
      local w, g = find(want.lines, pat), find(got.lines, pat)
      if w or g then
         n.lines = n.lines + 1
         if w ~= g then diff(pat, w, g) end
      end
   end
   for i = 1, math.max(#want.regions, #got.regions) do
      n.regions = n.regions + 1
      if want.regions[i] ~= got.regions[i] then diff("region " .. i, want.regions[i], got.regions[i]) end
   end
   local ours = {}
   for _, c in ipairs(got.caps) do ours[c.header:match("^Capabilities: %[(%x+)")] = c end
   local partial = {}
   for _, c in ipairs(info.caps) do
      if c.partial then partial[string.format(c.ext and "%03x" or "%02x", c.offset)] = true end
   end
   if #want.caps ~= #got.caps then diff("capability count", #want.caps, #got.caps) end
   for _, w in ipairs(want.caps) do
      local off = w.header:match("^Capabilities: %[(%x+)")
      local g = ours[off]
      n.caps = n.caps + 1
      if not g then
         diff("capability at " .. off, w.header, nil)
      elseif w.header ~= g.header then
         diff("capability header at " .. off, w.header, g.header)
      elseif partial[off] then
         n.partial = n.partial + 1
      else
         for i = 1, math.max(#w.body, #g.body) do
            n.cap_lines = n.cap_lines + 1
            if w.body[i] ~= g.body[i] then
               diff(string.format("capability [%s] line %d", off, i), w.body[i], g.body[i])
            end
         end
      end
   end
   return diffs, n
end

-- Fixture helpers: spec/fixtures/config/NAME.{hex,lspci,resource}
M.fixtures = "spec/fixtures/config/"

local function slurp(path)
   local f = io.open(path, "rb")
   if not f then return nil end
   local s = f:read("a")
   f:close()
   return s
end
M.slurp = slurp

function M.fixture_names()
   local names = {}
   local p = io.popen("ls " .. M.fixtures .. " 2>/dev/null")
   for l in p:lines() do
      local n = l:match("^(.+)%.hex$")
      if n and slurp(M.fixtures .. n .. ".lspci") then names[#names + 1] = n end
   end
   p:close()
   table.sort(names)
   return names
end

function M.load_fixture(name)
   local decode = require "vfio.decode"
   local hex = assert(slurp(M.fixtures .. name .. ".hex"))
   local res = slurp(M.fixtures .. name .. ".resource")
   return {
      name = name,
      hex = hex,
      bytes = decode.parse_hex(hex),
      slot = hex:match("^(%S+)"),
      resources = res and decode.parse_resource(res),
      lspci = assert(slurp(M.fixtures .. name .. ".lspci")),
   }
end

return M
