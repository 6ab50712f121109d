-- The public API of luavfio at run time against what LDoc documented.
--
-- Used by spec/host/doc_coverage_spec.lua and by `make doc` (lua5.4 tools/doc_coverage.lua
-- build/doc/api.lua prints the coverage and the undocumented names). A module's public
-- API is what it returns: the functions in its table, the methods of the classes it
-- holds (a table of functions in a field, or a class table reached
-- through the upvalues of its functions: a `local Machine = {}` that `new` sets as a
-- metatable), and for vfio.core every function of the module table and every method of
-- each class registered from C (a registry metatable whose __name is "vfio.<type>").
-- Names are compared as LDoc gives them: `open`, `vcpu:run`, `container:map_dma`.
local M = {}

-- Modules left out of the check, and why.
M.skip = {
   ["vfio.vmm.cli"] = "the passthrough command's option parsing, being rewritten (issue 25 item 4)",
   ["vfio.poke"] = "the REPL (and vfio.poke.*): its commands are described by its own help()",
}

local function sorted_keys(t)
   local k = {}
   for name in pairs(t) do k[#k + 1] = name end
   table.sort(k)
   return k
end

-- Lua modules under root (lua/vfio), by name.
function M.modules(root)
   root = root or "lua"
   local list = {}
   local p = assert(io.popen("cd '" .. root .. "' && find vfio -name '*.lua' | LC_ALL=C sort"))
   for f in p:lines() do
      list[#list + 1] = f:gsub("%.lua$", ""):gsub("/init$", ""):gsub("/", ".")
   end
   p:close()
   return list
end

local function is_module_value(v)
   for _, m in pairs(package.loaded) do if m == v then return true end end
   return false
end

-- The methods table of a class: its __index table, or itself.
local function methods_table(t)
   local idx = rawget(t, "__index")
   return type(idx) == "table" and idx or t
end

-- The public methods of a class (no metamethods).
local function methods_of(t)
   local out = {}
   for k, v in pairs(methods_table(t)) do
      if type(k) == "string" and type(v) == "function" and not k:match("^__") then out[#out + 1] = k end
   end
   return out
end

local function looks_like_class(t)
   local idx = rawget(t, "__index")
   return idx == t or (type(idx) == "table" and next(methods_of(t)) ~= nil)
end

-- Record a class under its methods table, by the best name seen: a module field (1), a
-- variable holding the methods table itself (2), a metatable's variable without its
-- "MT" suffix (3).
local function note(found, t, name, rank)
   local mt = methods_table(t)
   if mt ~= t then rank, name = math.max(rank, 3), name:gsub("_?MT$", ""):gsub("_?mt$", "") end
   local cur = found[mt]
   if not cur or rank < cur.rank then found[mt] = { name = name, rank = rank } end
end

-- Class tables among the upvalues of fn (recursively through functions, to depth 2).
local function classes_in_upvalues(fn, found, seen, depth)
   if seen[fn] or depth > 2 then return end
   seen[fn] = true
   for i = 1, 255 do
      local name, v = debug.getupvalue(fn, i)
      if not name then break end
      if type(v) == "table" and not is_module_value(v) and looks_like_class(v) then
         note(found, v, name, 2)
      elseif type(v) == "function" then
         classes_in_upvalues(v, found, seen, depth + 1)
      end
   end
end

-- { [module] = { [name] = true } } for every module under root but M.skip's.
function M.public(root)
   local api = {}
   for _, mod in ipairs(M.modules(root)) do
      if not (M.skip[mod] or M.skip[mod:match("^vfio%.poke") and "vfio.poke"]) then
         local t = require(mod)
         local names = {}
         if type(t) == "table" then
            local classes, seen = {}, {}
            for k, v in pairs(t) do
               if type(k) == "string" then
                  if type(v) == "function" then
                     names[k] = true
                     classes_in_upvalues(v, classes, seen, 1)
                  elseif type(v) == "table" and not is_module_value(v) and next(methods_of(v)) ~= nil then
                     note(classes, v, k, 1) -- a class, or a table of functions, the module exports
                  end
               end
            end
            for ct, c in pairs(classes) do
               if ct ~= t then
                  for _, m in ipairs(methods_of(ct)) do names[c.name .. ":" .. m] = true end
               end
            end
         end
         api[mod] = names
      end
   end
   local core = require "vfio.core"
   local names = {}
   for k, v in pairs(core) do
      if type(v) == "function" then names[k] = true end
   end
   for k, mt in pairs(debug.getregistry()) do
      if type(k) == "string" and k:match("^vfio%.") and type(mt) == "table" and mt.__name == k
         and type(mt.__index) == "table" then
         local cls = k:match("^vfio%.(.+)$")
         for m, fn in pairs(mt.__index) do
            if type(fn) == "function" then names[cls .. ":" .. m] = true end
         end
      end
   end
   api["vfio.core"] = names
   return api
end

-- LDoc's names, normalised: `Class.method` and `Class:method` are the same entry.
local function norm(name) return (name:gsub("^M[.:]", ""):gsub("^([%w_]+)%.([%w_]+)$", "%1:%2")) end

-- { [module] = { [name] = true } } from an index written by tools/ldoc_index.lua.
function M.documented(index)
   if type(index) == "string" then index = dofile(index) end
   local doc = {}
   for mod, m in pairs(index) do
      local names = {}
      for name in pairs(m.items) do names[norm(name)] = true end
      doc[mod] = names
   end
   return doc
end

-- The public names with no doc entry, as sorted "module name" strings, and the counts.
function M.missing(public, documented)
   local miss, total = {}, 0
   for _, mod in ipairs(sorted_keys(public)) do
      local have = documented[mod] or {}
      for _, name in ipairs(sorted_keys(public[mod])) do
         total = total + 1
         if not have[norm(name)] then miss[#miss + 1] = mod .. " " .. name end
      end
   end
   return miss, total - #miss, total
end

if arg and arg[0] and arg[0]:match("doc_coverage%.lua$") then
   package.path = "lua/?.lua;lua/?/init.lua;" .. package.path
   package.cpath = "build/?.so;" .. package.cpath
   local miss, documented, total = M.missing(M.public("lua"), M.documented(arg[1] or "build/doc/api.lua"))
   for _, m in ipairs(miss) do print("undocumented: " .. m) end
   print(("documented %d of %d public functions and methods"):format(documented, total))
   os.exit(#miss == 0 and 0 or 1)
end

return M
