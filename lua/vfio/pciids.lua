---
-- pci.ids lookup (vendor, device, subsystem and class names) from Debian's pciutils database.
-- The file is ~1.3 MB; it is read once on first use and only vendor and class starts are
-- indexed then. A vendor's device list is parsed the first time one of its devices is asked for.
-- @module vfio.pciids
local M = {}

local DEFAULT_PATH = "/usr/share/misc/pci.ids"

local db -- { text=, vendors = {[id]={name=, s=, e=, devices=nil|table}}, classes = {...} }

local function load(path)
   local f, err = io.open(path or DEFAULT_PATH, "rb")
   if not f then return nil, err end
   local text = f:read("a")
   f:close()
   local vendors, classes = {}, {}
   local last -- the previous top-level entry, to close its text span
   local pos = 1
   local n = #text
   while pos <= n do
      local eol = text:find("\n", pos, true) or n + 1
      local c = text:byte(pos)
      -- Only lines starting at column 0 are indexed here: vendors ("xxxx  Name") and
      -- classes ("C xx  Name"); tab-indented children are parsed on demand.
      if c ~= 9 and c ~= 35 and eol > pos then
         local line = text:sub(pos, eol - 1)
         local id, name = line:match("^(%x%x%x%x)  (.*)$")
         if last then last.e = pos - 1; last = nil end
         if id then
            last = { name = name, s = eol + 1 }
            vendors[tonumber(id, 16)] = last
         else
            local cid, cname = line:match("^C (%x%x)  (.*)$")
            if cid then
               last = { name = cname, s = eol + 1 }
               classes[tonumber(cid, 16)] = last
            end
         end
      end
      pos = eol + 1
   end
   if last then last.e = n end
   return { text = text, vendors = vendors, classes = classes, path = path or DEFAULT_PATH }
end

local function getdb()
   if db == nil then
      local d, err = load(M.path)
      db = d or false
      M.error = err
   end
   return db or nil
end

---
-- Use another pci.ids file (tests, or a newer copy); drops the cached index.
function M.use(path)
   M.path = path
   db = nil
end

local function children(entry)
   -- Children of a vendor: devices (one tab) with their subsystems (two tabs).
   -- Children of a class: subclasses (one tab) with their prog-ifs (two tabs).
   if entry.kids then return entry.kids end
   local kids = {}
   local cur
   local block = db.text:sub(entry.s, entry.e)
   for line in block:gmatch("[^\n]+") do
      local id, name = line:match("^\t(%x+)  (.*)$")
      if id then
         cur = { name = name, sub = {} }
         kids[tonumber(id, 16)] = cur
      elseif cur then
         local a, b, sname = line:match("^\t\t(%x%x%x%x) (%x%x%x%x)  (.*)$")
         if a then
            cur.sub[tonumber(a, 16) << 16 | tonumber(b, 16)] = sname
         else
            local p, pname = line:match("^\t\t(%x%x)  (.*)$")
            if p then cur.sub[tonumber(p, 16)] = pname end
         end
      end
   end
   entry.kids = kids
   return kids
end

--- The vendor name of id v from pci.ids, or nil.
function M.vendor(v)
   local d = getdb()
   local e = d and d.vendors[v]
   return e and e.name or nil
end

--- The name of device dev of vendor v from pci.ids, or nil.
function M.device(v, dev)
   local d = getdb()
   local e = d and d.vendors[v]
   if not e then return nil end
   local k = children(e)[dev]
   return k and k.name or nil
end

---
-- Name of a subsystem (sv:sd) of device v:dev, falling back like lspci: when the subsystem
-- ids equal the device ids, the device's own name.
function M.subsystem(v, dev, sv, sd)
   local d = getdb()
   local e = d and d.vendors[v]
   if not e then return nil end
   local k = children(e)[dev]
   local name = k and k.sub[sv << 16 | sd]
   if not name and v == sv and dev == sd then name = k and k.name end
   return name
end

---
-- Class name: class(0x02) -> "Network controller", class(0x02, 0x00) -> subclass name.
function M.class(c, s)
   local d = getdb()
   local e = d and d.classes[c]
   if not e then return nil end
   if s == nil then return e.name end
   local k = children(e)[s]
   return k and k.name or nil
end

--- The name of programming interface p of class c, subclass s, or nil.
function M.progif(c, s, p)
   local d = getdb()
   local e = d and d.classes[c]
   if not e then return nil end
   local k = children(e)[s]
   return k and k.sub[p] or nil
end

---
-- The strings lspci prints, built the way lspci builds them from the same database.
function M.device_label(v, dev)
   local vn, dn = M.vendor(v), M.device(v, dev)
   if vn and dn then return vn .. " " .. dn end
   if vn then return string.format("%s Device %04x", vn, dev) end
   return string.format("Device %04x:%04x", v, dev)
end

--- The subsystem string lspci prints: vendor and subsystem names, or
-- `"Vendor Device xxxx"`, or `"Device ssss:dddd"`.
function M.subsystem_label(v, dev, sv, sd)
   local vn, dn = M.vendor(sv), M.subsystem(v, dev, sv, sd)
   if vn and dn then return vn .. " " .. dn end
   if vn then return string.format("%s Device %04x", vn, sd) end
   return string.format("Device %04x:%04x", sv, sd)
end

---
-- class16 is (base << 8 | sub), as lspci's "Class %04x".
function M.class_label(class16)
   local c, s = class16 >> 8, class16 & 0xff
   local name = M.class(c, s)
   if name then return name end
   name = M.class(c)
   if name then return string.format("%s [%04x]", name, class16) end
   return string.format("Class %04x", class16)
end

return M
