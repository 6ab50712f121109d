-- Runs lab/oracle (QEMU's own vfio-pci, nested under KVM in the lab) and parses what its
-- guest saw of each passed-through device: config bytes and the kernel's BAR resources.
local oracle = {}

-- Parse lab/oracle's output into { [host_bdf] = { guest_bdf=, config=string, resources={...} } }.
function oracle.parse(text)
   local out, cur = {}, nil
   for line in text:gmatch("[^\n]+") do
      local word, rest = line:match("^(%S+)%s*(.*)$")
      if word == "device" then
         local host, guest = rest:match("^(%S+) (%S+)$")
         cur = { guest_bdf = guest, resources = {} }
         out[host] = cur
      elseif word == "config" and cur then
         cur.config = rest:gsub("(%x%x)%s*", function(h) return string.char(tonumber(h, 16)) end)
      elseif word == "resource" and cur then
         local s, e, f = rest:match("^(%S+) (%S+) (%S+)$")
         cur.resources[#cur.resources + 1] = { start = tonumber(s), stop = tonumber(e), flags = tonumber(f) }
      end
   end
   return out
end

-- Run the oracle for the given host BDFs; returns the parsed table or raises with its output.
function oracle.run(bdfs, opts)
   local cmd = "lab/oracle " .. ((opts and opts.port) and "--port " or "") .. table.concat(bdfs, " ") .. " 2>&1"
   local p = assert(io.popen(cmd))
   local text = p:read("a")
   local ok = p:close()
   if not ok then error("lab/oracle failed:\n" .. text, 2) end
   return oracle.parse(text)
end

return oracle
