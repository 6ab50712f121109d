-- Every object type vfio.core defines follows the project's Lua C API rules: one metatable
-- named vfio.<type> with __name, __index, __tostring, __gc and __close; only luaopen_*
-- is exported from the module.
local core = require "vfio.core"

describe("vfio.core object types", function()
   local classes = {}
   for k, v in pairs(debug.getregistry()) do
      if type(k) == "string" and k:match("^vfio%.") and type(v) == "table" and v.__name == k then
         classes[#classes + 1] = k
      end
   end
   table.sort(classes)

   it("are registered", function()
      assert.is_true(#classes >= 8, "found only: " .. table.concat(classes, ", "))
      assert.is_table(core)
      local have = {}
      for _, k in ipairs(classes) do have[k] = true end
      for _, k in ipairs { "vfio.container", "vfio.group", "vfio.device", "vfio.iommufd",
                           "vfio.ioas" } do
         assert.is_true(have[k], k .. " is not registered")
      end
      -- the data fd of a migration state change (csrc/lua/l_migration.c)
      assert.is_table(debug.getregistry()["vfio.migfile"])
   end)

   for _, name in ipairs(classes) do
      it(name .. " has __name, __index, __tostring, __gc and __close", function()
         local mt = debug.getregistry()[name]
         assert.are.equal(name, mt.__name)
         -- vfio.region gives each region a metatable of its own (methods copied in, one
         -- lookup per call) whose __gc comes from the class's gc_: a __gc on the class
         -- would make every per-region table finalizable as well.
         local gc = name == "vfio.region" and "gc_" or "__gc"
         for _, field in ipairs { "__index", "__tostring", gc, "__close" } do
            assert.is_truthy(mt[field], name .. " lacks " .. field)
         end
      end)
   end

   it("export only luaopen_* from the shared object", function()
      local p = io.popen("nm -D --defined-only " .. (os.getenv("LUAVFIO_BUILD") or "build") .. "/vfio/core.so")
      local exported = {}
      for line in p:lines() do
         local sym = line:match("^%x+ [TDB] (%S+)$")
         if sym and not sym:match("^_") then exported[#exported + 1] = sym end
      end
      p:close()
      assert.are.same({ "luaopen_vfio_core" }, exported)
   end)
end)
