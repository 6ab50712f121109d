-- The rock: it builds and installs offline, the installed tree loads and runs the
-- commands a user runs, and the versioned rockspec is the scm one at the library's version.
local function sh(cmd)
   local p = assert(io.popen(cmd .. " 2>&1"))
   local out = p:read("a")
   local _, _, code = p:close()
   return out, code
end

local function tmpdir()
   local d = os.tmpname()
   os.remove(d)
   assert(os.execute("mkdir -p " .. d))
   return d
end

describe("rockspecs/luavfio-scm-1.rockspec #noasan", function()
   local tree, build, cwd

   lazy_setup(function()
      tree, build = tmpdir(), tmpdir()
      cwd = io.popen("pwd"):read("l")
      -- The plain command a user runs, offline: LuaRocks counts only the rocks it
      -- installed, and lab/setup (make check runs it first) declares Debian's lua-posix
      -- provided in LuaRocks' system config. Nothing is downloaded.
      -- Build out of a copy so the rock's CMake tree does not touch build/.
      local out, code = sh(("cp -r . %s/src && cd %s/src && rm -rf build build-* build.luarocks && "
         .. "luarocks --lua-version=5.4 --tree=%s make")
         :format(build, build, tree))
      assert(code == 0, out)
   end)

   lazy_teardown(function()
      os.execute(("rm -rf %s %s"):format(tree, build))
   end)

   it("installs a tree from which require 'vfio' loads the built vfio.core", function()
      local check = ("lua5.4 -e 'package.path=\"%s/share/lua/5.4/?.lua;%s/share/lua/5.4/?/init.lua\"" ..
         " package.cpath=\"%s/lib/lua/5.4/?.so\" local v = require \"vfio\" print(v._VERSION," ..
         " package.searchpath(\"vfio.core\", package.cpath))'"):format(tree, tree, tree)
      local out, code = sh(check)
      assert.are.equal(0, code, out)
      assert.matches("^luavfio [%d.]+\t" .. tree:gsub("%p", "%%%0") .. "/lib/lua/5.4/vfio/core.so", out)
   end)

   it("installs the passthrough command and the guest it boots by default", function()
      -- Run from / so nothing of the source tree can be found.
      local out, code = sh(("cd / && %s/bin/vfio-passthrough --plan --device %s/spec/fixtures/edu.lua")
         :format(tree, cwd))
      assert.are.equal(0, code, out)
      assert.matches("1234:11e8 class 00ff00 %-> guest 00:04%.0", out)
      -- Without --guest the installed guest image is used: the run gets past the guest
      -- check to /dev/kvm (missing: 125) or the device name (not an address: 64).
      out, code = sh(("cd / && %s/bin/vfio-passthrough --device no-such-device"):format(tree))
      assert.is_nil(out:find("guest ", 1, true), out)
      assert.is_true(code == 64 or code == 125, out)
   end)

   it("installs vfio-poke", function()
      local out, code = sh(("cd / && %s/bin/vfio-poke --help"):format(tree))
      assert.are.equal(0, code, out)
      assert.matches("^usage: vfio%-poke", out)
   end)
end)

describe("the rockspecs", function()
   local function load_rockspec(path)
      local env = {}
      assert(loadfile(path, "t", env))()
      return env
   end

   it("declare the same rock, the versioned one at vfio.core's version", function()
      local scm = load_rockspec("rockspecs/luavfio-scm-1.rockspec")
      local rel = load_rockspec("rockspecs/luavfio-0.1-1.rockspec")
      assert.are.equal("scm-1", scm.version)
      local v = require("vfio.core")._VERSION:match("^luavfio ([%d.]+)$")
      assert.are.equal(v .. "-1", rel.version)
      for _, k in ipairs { "rockspec_format", "package", "description", "dependencies", "test",
                           "build" } do
         assert.are.same(scm[k], rel[k], k)
      end
      assert.are.equal("luavfio-" .. v .. ".tar.gz", rel.source.url)
   end)

   it("declare luaposix, busted as the test runner, and the license of LICENSE", function()
      local scm = load_rockspec("rockspecs/luavfio-scm-1.rockspec")
      local names = {}
      for _, d in ipairs(scm.dependencies) do names[d:match("^%S+")] = true end
      assert.is_true(names.lua and names.luaposix)
      assert.are.same({ type = "busted" }, scm.test)
      local f = assert(io.open("LICENSE"))
      local first = f:read("l")
      f:close()
      assert.are.equal(scm.description.license .. " License", first)
   end)
end)
