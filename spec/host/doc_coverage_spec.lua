-- Every public function and method of the library has a doc comment LDoc finds (issue 25
-- item 6). The public API is enumerated at run time (tools/doc_coverage.lua: each module
-- under lua/vfio/, its classes, vfio.core's functions and registered classes) and
-- compared with the names LDoc documents (ldoc --filter ldoc_index.filter, the data
-- file `make doc` writes as build/doc/api.lua). Needs Debian's lua-ldoc and lua-markdown.
local cov = dofile("tools/doc_coverage.lua")

local function sh(cmd)
   local p = io.popen(cmd .. " 2>&1")
   local out = p:read("a")
   local ok, _, rc = p:close()
   return ok, out, rc
end

local function have_ldoc() return (sh("command -v ldoc >/dev/null")) end

-- Run LDoc's filter in dir (a tree with config.ld, csrc/lua, lua/vfio, doc/, tools/) and
-- return the index it wrote.
local function ldoc_index(dir)
   local out = os.tmpname()
   local ok, text = sh(("cd '%s' && LUA_PATH='tools/?.lua;;' LDOC_INDEX_OUT='%s' ldoc -q --filter ldoc_index.filter .")
      :format(dir, out))
   assert(ok, "ldoc failed: " .. text)
   local index = dofile(out)
   os.remove(out)
   return index
end

describe("doc coverage", function()
   it("has lua-ldoc installed (lab/setup installs it)", function()
      assert.is_true(have_ldoc(), "ldoc not found: apt-get install lua-ldoc lua-markdown")
   end)

   it("documents every public function and method", function()
      if not have_ldoc() then pending("no ldoc") return end
      local miss, documented, total = cov.missing(cov.public("lua"), cov.documented(ldoc_index(".")))
      assert.are.equal(total, documented, ("%d of %d public functions have no doc comment:\n  %s")
         :format(#miss, total, table.concat(miss, "\n  ")))
   end)

   it("reports a public name LDoc does not document, and only that", function()
      local public = { ["vfio.x"] = { open = true, ["Dev:close"] = true }, ["vfio.core"] = { ["dmabuf:size"] = true } }
      local doc = cov.documented { ["vfio.x"] = { items = { open = {}, ["Dev.close"] = {} } },
                                   ["vfio.core"] = { items = {} } }
      local miss, documented, total = cov.missing(public, doc)
      assert.are.same({ "vfio.core dmabuf:size" }, miss)
      assert.are.equal(2, documented)
      assert.are.equal(3, total)
   end)

   it("fails when a doc comment is removed from a source", function()
      if not have_ldoc() then pending("no ldoc") return end
      local tmp = os.tmpname()
      os.remove(tmp)
      assert(sh(("mkdir -p '%s/csrc' '%s/lua' && cp -r config.ld doc tools '%s/'"):format(tmp, tmp, tmp)
         .. (" && cp -r csrc/lua '%s/csrc/' && cp -r lua/vfio '%s/lua/'"):format(tmp, tmp)))
      -- the doc comment of vfio.mdev.uuid is the `---` line that opens its comment block
      local path = tmp .. "/lua/vfio/mdev.lua"
      local f = assert(io.open(path)); local src = f:read("a"); f:close()
      local lines = {}
      for l in (src .. "\n"):gmatch("([^\n]*)\n") do lines[#lines + 1] = l end
      local at
      for i, l in ipairs(lines) do if l:match("^function M%.uuid%(") then at = i end end
      assert(at, "function M.uuid not found")
      local first = at
      while first > 1 and lines[first - 1]:match("^%-%-") do first = first - 1 end
      assert.matches("^%-%-%-", lines[first], nil, "vfio.mdev.uuid has no doc comment to remove")
      table.remove(lines, first) -- its `---` line: what is left is a plain comment
      f = assert(io.open(path, "w")); f:write(table.concat(lines, "\n")); f:close()
      local before = cov.documented(ldoc_index("."))
      local after = cov.documented(ldoc_index(tmp))
      sh("rm -rf '" .. tmp .. "'")
      assert.is_true(before["vfio.mdev"].uuid)
      assert.is_nil(after["vfio.mdev"].uuid)
      local miss = cov.missing({ ["vfio.mdev"] = { uuid = true } }, after)
      assert.are.same({ "vfio.mdev uuid" }, miss)
   end)

   it("gives the REPL's help the same text, and says when it is missing", function()
      if not have_ldoc() then pending("no ldoc") return end
      package.loaded["vfio.poke.apidoc"] = nil
      local apidoc = require "vfio.poke.apidoc"
      local out = os.tmpname()
      assert(sh(("LUA_PATH='tools/?.lua;;' LDOC_INDEX_OUT='%s' ldoc -q --filter ldoc_index.filter ."):format(out)))
      apidoc.path = out
      local text = assert(apidoc.text("vfio.mdev.create"))
      assert.matches("vfio.mdev create", text, 1, true)
      assert.matches("M.create(parent, type [, uuid]) -> uuid", text, 1, true)
      assert.matches("container:map_dma", assert(apidoc.text("map_dma")), 1, true)
      local buf <close> = require("vfio.core").dmabuf(4096)   -- an object: its class's methods
      assert.matches("dmabuf:read32", assert(apidoc.text(buf)), 1, true)
      assert.matches("Describe a region by hand", assert(apidoc.text(require("vfio.core").region)), 1, true)
      os.remove(out)
      package.loaded["vfio.poke.apidoc"] = nil
      apidoc = require "vfio.poke.apidoc"
      apidoc.path = out
      local none, why = apidoc.text("vfio.open")
      assert.is_nil(none)
      assert.matches("the API reference text is missing", why, 1, true)
      assert.matches("make doc", why, 1, true)
      package.loaded["vfio.poke.apidoc"] = nil
   end)
end)
