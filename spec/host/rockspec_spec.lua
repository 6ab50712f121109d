-- The rockspec builds and installs offline, and the installed tree loads.
describe("rockspecs/luavfio-scm-1.rockspec #noasan", function()
   it("builds with luarocks make into a tree from which require 'vfio' works", function()
      local tree = os.tmpname()
      os.remove(tree)
      local build = os.tmpname()
      os.remove(build)
      -- Build out of a copy so the rock's CMake tree does not touch build/.
      local cmd = ("cp -r . %s && cd %s && rm -rf build build-* && " ..
         "luarocks --lua-version=5.4 --tree=%s make rockspecs/luavfio-scm-1.rockspec 2>&1")
         :format(build, build, tree)
      local p = io.popen(cmd)
      local out = p:read("a")
      local ok = p:close()
      assert.is_true(ok, out)
      local check = ("lua5.4 -e 'package.path=\"%s/share/lua/5.4/?.lua;%s/share/lua/5.4/?/init.lua\"" ..
         " package.cpath=\"%s/lib/lua/5.4/?.so\" local v = require \"vfio\" print(v._VERSION," ..
         " package.searchpath(\"vfio.core\", package.cpath))' 2>&1"):format(tree, tree, tree)
      p = io.popen(check)
      out = p:read("a")
      ok = p:close()
      assert.is_true(ok, out)
      assert.matches("^luavfio [%d.]+\t" .. tree:gsub("%p", "%%%0") .. "/lib/lua/5.4/vfio/core.so", out)
      os.execute(("rm -rf %s %s"):format(tree, build))
   end)
end)
