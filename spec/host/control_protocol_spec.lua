-- The control socket's protocol (vfio.vmm.control_protocol): framing, JSON decode,
-- argument checks and replies, with hostile input. Property tests run seeded random
-- cases, so a failure names a seed that repeats it.
local protocol = require "vfio.vmm.control_protocol"
local json = require "dkjson"

local function random_bytes(n)
   local t = {}
   for i = 1, n do t[i] = string.char(math.random(0, 255)) end
   return table.concat(t)
end

-- Feed `data` to a framer in random pieces; returns every item.
local function feed_split(framer, data)
   local items, pos = {}, 1
   while pos <= #data do
      local n = math.random(1, 64)
      for _, it in ipairs(framer:feed(data:sub(pos, pos + n - 1))) do items[#items + 1] = it end
      pos = pos + n
   end
   return items
end

describe("control protocol: framing", function()
   it("gives the same lines whatever the reads split them into (200 seeds)", function()
      for seed = 1, 200 do
         math.randomseed(seed)
         local lines = {}
         for i = 1, math.random(1, 20) do
            lines[i] = ('{"id":%d,"cmd":"info","pad":"%s"}'):format(i, ("x"):rep(math.random(0, 300)))
         end
         local data = table.concat(lines, "\n") .. "\n"
         local whole = protocol.framer():feed(data)
         local split = feed_split(protocol.framer(), data)
         assert.are.same(whole, split, "seed " .. seed)
         assert.are.equal(#lines, #whole, "seed " .. seed)
         for i, it in ipairs(whole) do assert.are.equal(lines[i], it.line) end
      end
   end)

   it("never raises, never holds more than MAX_LINE bytes, on random bytes (300 seeds)", function()
      for seed = 1, 300 do
         math.randomseed(seed)
         local f = protocol.framer()
         local data = random_bytes(math.random(0, 3 * protocol.MAX_LINE // 16))
         -- now and then a long run without a newline
         if seed % 10 == 0 then data = data .. ("a"):rep(protocol.MAX_LINE + 5) .. data end
         for _, it in ipairs(feed_split(f, data)) do
            assert.is_true((it.line ~= nil) ~= (it.error ~= nil), "seed " .. seed)
            if it.line then
               assert.is_true(#it.line <= protocol.MAX_LINE, "seed " .. seed)
               assert.is_nil(it.line:find("\n", 1, true))
               -- every complete line parses to a request or an error message, never raises
               local req, err = protocol.parse(it.line)
               assert.is_true(req ~= nil or type(err) == "string", "seed " .. seed)
            end
         end
         assert.is_true(f:pending() <= protocol.MAX_LINE, "seed " .. seed)
      end
   end)

   it("reports an overlong line once and goes on with the next line", function()
      local f = protocol.framer()
      local items = {}
      local long = ("y"):rep(protocol.MAX_LINE + 1)
      for i = 1, #long, 4096 do
         for _, it in ipairs(f:feed(long:sub(i, i + 4095))) do items[#items + 1] = it end
      end
      for _, it in ipairs(f:feed('more of it\n{"cmd":"info"}\n')) do items[#items + 1] = it end
      assert.are.equal(2, #items)
      assert.matches("line too long", items[1].error)
      assert.are.equal('{"cmd":"info"}', items[2].line)
      -- a line of exactly MAX_LINE bytes is a line
      local exact = protocol.framer():feed(("z"):rep(protocol.MAX_LINE) .. "\n")
      assert.are.equal(protocol.MAX_LINE, #exact[1].line)
      -- and one byte more is not, also when it comes in one read with its newline
      local over = protocol.framer():feed(("z"):rep(protocol.MAX_LINE + 1) .. "\nok\n")
      assert.matches("line too long", over[1].error)
      assert.are.equal("ok", over[2].line)
   end)

   it("skips blank lines and takes CRLF", function()
      local items = protocol.framer():feed('\n  \r\n{"cmd":"info"}\r\n')
      assert.are.same({ { line = '{"cmd":"info"}' } }, items)
   end)
end)

describe("control protocol: requests", function()
   it("parses a request and checks its arguments against the command table", function()
      local r = assert(protocol.parse('{"id":7,"cmd":"device_add","device":"00:03.0","slot":5}'))
      assert.are.same({ id = 7, cmd = "device_add", args = { device = "00:03.0", slot = 5 } }, r)
      assert.are.equal("integer", math.type(r.args.slot))
      r = assert(protocol.parse('{"cmd":"info"}'))
      assert.is_nil(r.id)
      r = assert(protocol.parse('{"id":"abc","cmd":"pause"}'))
      assert.are.equal("abc", r.id)
   end)

   it("answers bad JSON, non-objects, bad ids, unknown commands and arguments with messages", function()
      local cases = {
         { "{", "bad JSON" }, { "nonsense", "bad JSON" }, { "null", "JSON object" },
         { "[1,2]", "JSON object" }, { '"info"', "JSON object" }, { "42", "JSON object" },
         { '{"id":1}', "cmd is required" }, { '{"cmd":7}', "cmd is required" },
         { '{"cmd":"reboot"}', "unknown command \"reboot\"" },
         { '{"cmd":"__index"}', "unknown command" }, { '{"cmd":"info","x":1}', "takes no argument \"x\"" },
         { '{"cmd":"device_add"}', "argument device is required" },
         { '{"cmd":"device_add","device":3}', "argument device must be a string" },
         { '{"cmd":"device_add","device":"x","slot":1.5}', "argument slot must be a integer" },
         { '{"cmd":"device_add","device":"x","slot":"4"}', "argument slot must be a integer" },
         { '{"cmd":"eval","code":{}}', "argument code must be a string" },
         { '{"id":1.5,"cmd":"info"}', "id must be" }, { '{"id":[1],"cmd":"info"}', "id must be" },
         { '{"id":"' .. ("i"):rep(protocol.MAX_ID + 1) .. '","cmd":"info"}', "id must be" },
         { ("["):rep(60000), "bad JSON" }, { ("{\"a\":"):rep(12000), "bad JSON" },
         { ("{\"a\":"):rep(20000), "line too long" },
      }
      for _, c in ipairs(cases) do
         local r, err = protocol.parse(c[1])
         assert.is_nil(r, c[1]:sub(1, 60))
         assert.is_truthy(err:find(c[2], 1, true), ("%s -> %s"):format(c[1]:sub(1, 60), err))
      end
      -- the id comes back with the error when it was readable
      local _, _, id = protocol.parse('{"id":9,"cmd":"nope"}')
      assert.are.equal(9, id)
   end)

   it("never raises on random JSON-ish lines (500 seeds)", function()
      local atoms = { "{", "}", "[", "]", ",", ":", '"cmd"', '"id"', '"info"', '"eval"', '"code"',
                      '"device"', "1", "-1", "1e999", "null", "true", '"\\u0000"', '"\\ud800"', " " }
      for seed = 1, 500 do
         math.randomseed(seed)
         local t = {}
         for i = 1, math.random(1, 40) do t[i] = atoms[math.random(#atoms)] end
         local line = table.concat(t)
         local ok, req, err = pcall(protocol.parse, line)
         assert.is_true(ok, ("seed %d: %s raised %s"):format(seed, line, tostring(req)))
         assert.is_true(req ~= nil or type(err) == "string", "seed " .. seed)
         if req then assert.is_table(protocol.COMMANDS[req.cmd]) end
      end
   end)
end)

describe("control protocol: replies and events", function()
   it("encodes one line each that a strict decoder reads back", function()
      local r = protocol.reply(3, { a = 1, list = protocol.array {}, s = "é" })
      assert.are.equal("\n", r:sub(-1))
      assert.is_nil(r:sub(1, -2):find("\n", 1, true))
      local v = json.decode(r)
      assert.are.same({ id = 3, ok = true, result = { a = 1, list = {}, s = "é" } }, v)
      assert.matches('^{"id":3,"ok":true', r)
      v = json.decode(protocol.error_reply(nil, "nope"))
      assert.are.equal(json.null, json.decode(protocol.error_reply(nil, "nope"), 1, json.null).id)
      assert.are.equal("nope", v.error)
      assert.is_false(v.ok)
      v = json.decode(protocol.event("device_added", { device = "0000:00:03.0" }))
      assert.are.same({ event = "device_added", device = "0000:00:03.0" }, v)
   end)

   it("keeps random strings valid UTF-8 JSON, escaping what is not UTF-8 (300 seeds)", function()
      for seed = 1, 300 do
         math.randomseed(seed)
         local s = random_bytes(math.random(0, 200))
         local line = protocol.reply(seed, { text = s, [s] = 1, n = 0 / 0, big = math.huge })
         assert.is_truthy(utf8.len(line), "seed " .. seed)
         assert.is_nil(line:sub(1, -2):find("\n", 1, true), "seed " .. seed)
         local v = json.decode(line)
         assert.is_table(v, "seed " .. seed)
         assert.are.equal(seed, v.id)
         if utf8.len(s) then assert.are.equal(s, v.result.text, "seed " .. seed) end
      end
   end)
end)
