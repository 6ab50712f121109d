-- The REPL's help(x): the API reference's text, as `make doc` writes it from the doc
-- comments (build/doc/api.lua, by tools/ldoc_index.lua), looked up by name or by value.
-- Found at $LUAVFIO_APIDOC, then build/doc/api.lua of the checkout this file is in,
-- then vfio/poke/api.lua on package.path (an installed copy); M.path, when set, instead.
local M = {}

local index, tried

local function candidates()
   if M.path then return { M.path } end -- set by specs (and tools): the one place to look
   local list = {}
   local env = os.getenv("LUAVFIO_APIDOC")
   if env and env ~= "" then list[#list + 1] = env end
   local src = debug.getinfo(1, "S").source
   local top = src:match("^@(.-)lua/vfio/poke/[^/]*$") -- "" when run from the checkout's top
   if top then list[#list + 1] = top .. "build/doc/api.lua" end
   local installed = package.searchpath("vfio.poke.api", package.path)
   if installed then list[#list + 1] = installed end
   return list
end

-- The index, or nil and where it was looked for.
function M.load()
   if index then return index end
   tried = candidates()
   for _, path in ipairs(tried) do
      local ok, t = pcall(dofile, path)
      if ok and type(t) == "table" then index = t return t end
   end
   return nil, tried
end

local function item_text(mod, name, it)
   local out = { ("%s %s%s"):format(mod, name, it.args ~= "" and it.args or "") }
   if it.summary ~= "" then out[#out + 1] = "  " .. it.summary:gsub("\n", "\n  ") end
   if it.description ~= "" then out[#out + 1] = "  " .. it.description:gsub("\n", "\n  ") end
   for _, p in ipairs(it.params) do
      if p[2] ~= "" then out[#out + 1] = ("  %s: %s"):format(p[1], p[2]) end
   end
   for _, r in ipairs(it.returns) do
      if r ~= "" then out[#out + 1] = "  returns " .. r:gsub("\n", "\n  ") end
   end
   return table.concat(out, "\n")
end

local function module_text(mod, m)
   local out = { mod .. ": " .. m.summary:match("[^\n]*") }
   local names = {}
   for name in pairs(m.items) do names[#names + 1] = name end
   table.sort(names)
   for _, name in ipairs(names) do
      out[#out + 1] = ("  %-28s %s"):format(name, m.items[name].summary:match("[^\n]*"))
   end
   return table.concat(out, "\n")
end

-- Module and item name of a value: a loaded module, a function of one (or of one of its
-- classes), a vfio.core object (its class), a method of a registered class.
local function by_value(v, idx)
   for name, mod in pairs(package.loaded) do
      if mod == v and idx[name] then return name end
   end
   local mt = (type(v) == "userdata" or type(v) == "table") and getmetatable(v)
   if type(mt) == "table" and type(mt.__name) == "string" and mt.__name:match("^vfio%.")
      and idx["vfio.core"] and idx["vfio.core"].items[mt.__name:match("^vfio%.(.+)$") .. ":close"] then
      return "vfio.core", mt.__name:match("^vfio%.(.+)$") .. ":"
   end
   if type(mt) == "table" and type(mt.__index) == "table" then
      -- a Lua class: the documented class with the most of its methods
      local count, best, bestn = {}, nil, 0
      for mname, m in pairs(idx) do
         for iname in pairs(m.items) do
            local cls, meth = iname:match("^([%w_]+)[:.]([%w_]+)$")
            if cls and type(mt.__index[meth]) == "function" then
               local key = mname .. " " .. cls
               count[key] = (count[key] or 0) + 1
               if count[key] > bestn then best, bestn = key, count[key] end
            end
         end
      end
      if best then
         local mname, cls = best:match("^(%S+) (%S+)$")
         return mname, cls .. ":"
      end
   end
   if type(v) ~= "function" then return nil end
   for name, mod in pairs(package.loaded) do
      if idx[name] and type(mod) == "table" then
         for k, f in pairs(mod) do if f == v then return name, k end end
      end
   end
   for k, cmt in pairs(debug.getregistry()) do
      if type(k) == "string" and k:match("^vfio%.") and type(cmt) == "table" and type(cmt.__index) == "table" then
         for m, f in pairs(cmt.__index) do
            if f == v then return "vfio.core", k:match("^vfio%.(.+)$") .. ":" .. m end
         end
      end
   end
   return nil
end

-- The help text for x (a name such as "vfio.open", "mdev.create", "region:read32",
-- "vfio.core", or a module, function or object), or nil and why.
function M.text(x)
   local idx, where = M.load()
   if not idx then
      return nil, "the API reference text is missing (looked in " .. table.concat(where, ", ")
         .. "): run `make doc` in the checkout, or point LUAVFIO_APIDOC at its build/doc/api.lua"
   end
   local mod, name
   if type(x) == "string" then
      if idx[x] then mod = x
      elseif idx["vfio." .. x] then mod = "vfio." .. x
      else
         local m, n = x:match("^(.-)[.:]?([%w_]+:?[%w_]*)$")
         for _, cand in ipairs { m, "vfio." .. (m or ""), m and m:match("^vfio%.(.*)") } do
            if cand and idx[cand] and idx[cand].items[n] then mod, name = cand, n break end
         end
         if not mod then -- a method or function by its own name, in any module
            local hits = {}
            for mn, mv in pairs(idx) do
               for iname in pairs(mv.items) do
                  if iname == x or iname:match("[.:]([%w_]+)$") == x then
                     hits[#hits + 1] = { mn, iname }
                  end
               end
            end
            table.sort(hits, function(a, b) return a[1] .. a[2] < b[1] .. b[2] end)
            if #hits == 0 then return nil, "no API entry for " .. x end
            local out = {}
            for _, h in ipairs(hits) do out[#out + 1] = item_text(h[1], h[2], idx[h[1]].items[h[2]]) end
            return table.concat(out, "\n\n")
         end
      end
   else
      mod, name = by_value(x, idx)
      if not mod then return nil, "no API entry for this " .. type(x) end
   end
   if name and name:sub(-1) == ":" then -- an object: its class's methods
      local out = { mod .. " " .. name:sub(1, -2) }
      local names = {}
      for iname in pairs(idx[mod].items) do
         if iname:sub(1, #name) == name then names[#names + 1] = iname end
      end
      table.sort(names)
      for _, n in ipairs(names) do
         out[#out + 1] = ("  %-28s %s"):format(n, idx[mod].items[n].summary:match("[^\n]*"))
      end
      return table.concat(out, "\n")
   end
   if name then return item_text(mod, name, idx[mod].items[name]) end
   return module_text(mod, idx[mod])
end

return M
