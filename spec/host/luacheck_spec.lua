-- The Lua sources stay clean under luacheck (Debian 12's lua-check, .luacheckrc: std lua54,
-- busted in spec/): the library, the VMM, the REPL, the commands, specs, benchmarks,
-- examples and tools.
describe("luacheck #noasan", function()
   it("reports no warning over the tree", function()
      local p = assert(io.popen("command -v luacheck"))
      local found = p:read("a") ~= ""
      p:close()
      assert.is_true(found, "luacheck is missing: install Debian's lua-check (lab/setup does)")
      p = assert(io.popen("luacheck --no-color --formatter plain . 2>&1"))
      local out = p:read("a")
      local _, _, code = p:close()
      assert.are.equal(0, code, out)
      assert.are.equal("", out)
   end)
end)
