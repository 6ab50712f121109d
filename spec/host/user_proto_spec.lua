-- The vfio-user protocol layer (csrc/user) without Lua, through tests/user_host: every
-- message kind round-trips over a socketpair with its fds, and every hostile case (bad
-- framing, sizes and fds past the limits, a peer gone mid-message, fields that lie about
-- the payload, fds of the wrong kind, bad version JSON) is refused with its errno with no
-- fd left behind.
describe("the vfio-user protocol layer (tests/user_host)", function()
   it("round-trips every message kind and refuses every hostile one without leaking an fd", function()
      local prog = (os.getenv("LUAVFIO_BUILD") or "build") .. "/tests/user_host"
      local p = assert(io.popen(prog .. " 2>&1"))
      local out = p:read("a")
      local ok, how, code = p:close()
      assert.is_true(ok, ("user_host ended by %s %s: %s"):format(how, code, out))
      assert.matches("^ok: %d+ checks: every message kind round%-trips", out)
   end)
end)
