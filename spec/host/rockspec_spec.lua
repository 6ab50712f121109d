-- The rock: it builds and installs offline, the installed tree loads and runs the
-- commands a user runs, and the versioned rockspec is the scm one at the library's version.
-- `make dist` makes a source archive and a packed rock that install offline, and
-- `luarocks test` runs specs offline. The specs that build the rock are tagged #rock:
-- `luarocks test` (which one of them runs) leaves them out.
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

-- LuaRocks with no server at all: whatever it would download makes the install fail.
local LUAROCKS = "luarocks --lua-version=5.4 --only-server=/var/empty"
local VERSION = require("vfio.version").number

describe("rockspecs/luavfio-scm-1.rockspec #noasan #rock", function()
   local tree, build, cwd

   lazy_setup(function()
      tree, build = tmpdir(), tmpdir()
      cwd = io.popen("pwd"):read("l")
      -- The plain command a user runs, offline: LuaRocks counts only the rocks it
      -- installed, and lab/setup (make check runs it first) declares Debian's lua-posix
      -- provided in LuaRocks' system config. Nothing is downloaded.
      -- Build out of a copy so the rock's CMake tree does not touch build/.
      local out, code = sh(("cp -r . %s/src && cd %s/src && rm -rf build build-* build.luarocks && "
         .. "%s --tree=%s make rockspecs/luavfio-scm-1.rockspec")
         :format(build, build, LUAROCKS, tree))
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

   it("installs the vfio-passthrough command and the guest it boots by default", function()
      -- Run from / so nothing of the source tree can be found.
      local out, code = sh(("cd / && %s/bin/vfio-passthrough --plan --device %s/spec/fixtures/edu.lua")
         :format(tree, cwd))
      assert.are.equal(0, code, out)
      assert.matches("1234:11e8 class 00ff00 %-> guest 00:04%.0", out)
      -- Without --guest the installed guest image is used: the run gets past the guest
      -- check to /dev/kvm (missing: 125) or the device (not openable here: 125).
      out, code = sh(("cd / && LUAVFIO_NO_KVM=1 %s/bin/vfio-passthrough --device 0000:00:1f.7"):format(tree))
      assert.is_nil(out:find("guest ", 1, true), out)
      assert.are.equal(125, code, out)
      assert.matches("this machine has no KVM", out)
   end)

   it("installs vfio-poke and vfio-user-serve", function()
      local out, code = sh(("cd / && %s/bin/vfio-poke --help"):format(tree))
      assert.are.equal(0, code, out)
      assert.matches("^usage: vfio%-poke", out)
      out, code = sh(("cd / && %s/bin/vfio-user-serve --help"):format(tree))
      assert.are.equal(0, code, out)
      assert.matches("^usage: vfio%-user%-serve", out)
   end)
end)

describe("make dist #noasan #rock", function()
   local tree, cwd

   lazy_setup(function()
      tree = tmpdir()
      cwd = io.popen("pwd"):read("l")
      local out, code = sh("make dist")
      assert(code == 0, out)
   end)

   lazy_teardown(function()
      os.execute(("rm -rf %s"):format(tree))
   end)

   it("makes the archive, the release rockspec, the packed rock and the scm rockspec", function()
      local out, code = sh(("tar -tzf dist/luavfio-%s.tar.gz"):format(VERSION))
      assert.are.equal(0, code, out)
      for _, f in ipairs { "CMakeLists.txt", "csrc/lua/core.c", "lua/vfio/version.lua", "bin/vfio-passthrough",
                           "examples/edu_regs.lua", "CHANGELOG.md", "LICENSE" } do
         assert.matches("\nluavfio%-" .. VERSION:gsub("%p", "%%%0") .. "/" .. f:gsub("%p", "%%%0") .. "\n", "\n" .. out)
      end
      out, code = sh(("unzip -l dist/luavfio-%s-1.src.rock"):format(VERSION))
      assert.are.equal(0, code, out)
      assert.matches(" luavfio%-" .. VERSION:gsub("%p", "%%%0") .. "%-1%.rockspec\n", out)
      assert.matches(" luavfio%-" .. VERSION:gsub("%p", "%%%0") .. "%.tar%.gz\n", out)
      local env = {}
      assert(loadfile("dist/luavfio-scm-1.rockspec", "t", env))()
      assert.are.equal("git+file://" .. cwd, env.source.url)
      env = {}
      assert(loadfile(("dist/luavfio-%s-1.rockspec"):format(VERSION), "t", env))()
      assert.are.equal(("file://%s/dist/luavfio-%s.tar.gz"):format(cwd, VERSION), env.source.url)
   end)

   it("the packed rock installs offline from anywhere, with commands at the rockspec's version", function()
      local out, code = sh(("cd / && %s --tree=%s install %s/dist/luavfio-%s-1.src.rock")
         :format(LUAROCKS, tree, cwd, VERSION))
      assert.are.equal(0, code, out)
      for _, cmd in ipairs { "vfio-passthrough", "vfio-poke", "vfio-user-serve" } do
         out, code = sh(("cd / && %s/bin/%s --version"):format(tree, cmd))
         assert.are.equal(0, code, out)
         assert.are.equal(("%s (luavfio %s)\n"):format(cmd, VERSION), out)
      end
      out, code = sh(("cd / && lua5.4 -e 'package.path=\"%s/share/lua/5.4/?.lua;%s/share/lua/5.4/?/init.lua\"" ..
         " package.cpath=\"%s/lib/lua/5.4/?.so\" print(require(\"vfio\")._VERSION, require(\"vfio.core\")._VERSION," ..
         " require(\"vfio.examples\").dir())'"):format(tree, tree, tree))
      assert.are.equal(0, code, out)
      local examples = ("%s/lib/luarocks/rocks-5.4/luavfio/%s-1/doc/examples"):format(tree, VERSION)
      assert.are.equal(("luavfio %s\tluavfio %s\t%s\n"):format(VERSION, VERSION, examples), out)
      -- the examples are installed where the REPL's help says
      assert.is_truthy(io.open(examples .. "/edu_regs.lua"), examples)
      out = sh(("cd / && echo 'help()' | %s/bin/vfio-poke"):format(tree))
      assert.matches("see " .. examples:gsub("%p", "%%%0") .. "/edu_regs%.lua", out)
   end)

   it("luarocks test runs specs offline with Debian's busted, and fails when they fail", function()
      local out, code = sh(("%s test rockspecs/luavfio-scm-1.rockspec -- spec/host/hexdump_spec.lua"):format(LUAROCKS))
      assert.are.equal(0, code, out)
      assert.matches("\n%d+ successes / 0 failures / 0 errors / 0 pending", out)
      local failing = os.tmpname() .. "_spec.lua"
      local f = assert(io.open(failing, "w"))
      f:write('describe("a spec", function() it("fails", function() assert.is_true(false) end) end)\n')
      f:close()
      out, code = sh(("%s test rockspecs/luavfio-scm-1.rockspec -- %s"):format(LUAROCKS, failing))
      os.remove(failing)
      assert.are_not.equal(0, code, out)
      assert.matches("1 failure", out)
   end)
end)

describe("the rockspecs", function()
   local function load_rockspec(path)
      local env = {}
      assert(loadfile(path, "t", env))()
      return env
   end

   it("declare the same rock, the versioned one at the version of vfio, vfio.core and the changelog", function()
      local scm = load_rockspec("rockspecs/luavfio-scm-1.rockspec")
      local rel = load_rockspec(("rockspecs/luavfio-%s-1.rockspec"):format(VERSION))
      assert.are.equal("scm-1", scm.version)
      assert.are.equal(VERSION .. "-1", rel.version)
      assert.are.equal("luavfio " .. VERSION, require("vfio.core")._VERSION)
      assert.are.equal("luavfio " .. VERSION, require("vfio")._VERSION)
      assert.are.equal("luavfio " .. VERSION, require("vfio.version")._VERSION)
      for _, k in ipairs { "rockspec_format", "package", "description", "dependencies", "test",
                           "build" } do
         assert.are.same(scm[k], rel[k], k)
      end
      -- the archive make dist makes, from the checkout's top
      assert.are.equal("dist/luavfio-" .. VERSION .. ".tar.gz", rel.source.url)
      assert.are.equal("luavfio-" .. VERSION, rel.source.dir)
      -- the scm source: the checkout, filled in by make dist
      assert.are.equal("git+file://LUAVFIO_CHECKOUT", scm.source.url)
      local f = assert(io.open("CHANGELOG.md"))
      local log = f:read("a")
      f:close()
      assert.matches("\n## " .. VERSION:gsub("%p", "%%%0") .. "\n", log)
      -- every versioned rockspec in rockspecs/ is the current version's
      local p = io.popen("ls rockspecs")
      for name in p:lines() do
         assert.is_true(name == "luavfio-scm-1.rockspec" or name == ("luavfio-%s-1.rockspec"):format(VERSION), name)
      end
      p:close()
   end)

   it("declare luaposix and argparse, Debian's busted as the test command, and the license of LICENSE", function()
      local scm = load_rockspec("rockspecs/luavfio-scm-1.rockspec")
      local names = {}
      for _, d in ipairs(scm.dependencies) do names[d:match("^%S+")] = true end
      assert.is_true(names.lua and names.luaposix and names.argparse)
      assert.are.equal("command", scm.test.type)
      assert.matches("lua5%.4 /usr/bin/busted .*%-%-run=host %-%-exclude%-tags=kvm,rock$", scm.test.command)
      local f = assert(io.open("LICENSE"))
      local first = f:read("l")
      f:close()
      assert.are.equal(scm.description.license .. " License", first)
   end)

   it("install the examples under the rock's doc/ and the commands by their new names", function()
      local scm = load_rockspec("rockspecs/luavfio-scm-1.rockspec")
      assert.are.equal("$(PREFIX)/doc", scm.build.variables.LUAVFIO_DOCDIR)
      local f = assert(io.open("CMakeLists.txt"))
      local cmake = f:read("a")
      f:close()
      assert.matches("install%(DIRECTORY %${CMAKE_SOURCE_DIR}/examples/ DESTINATION %${LUAVFIO_DOCDIR}/examples%)",
                     cmake)
      assert.matches("bin/vfio%-poke %${CMAKE_SOURCE_DIR}/bin/vfio%-passthrough", cmake)
   end)
end)
