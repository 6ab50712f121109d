-- lab/run's contract, from the host: exit status, clear failures within the time limit.
-- These boot the lab (a few seconds each) and are not repeated under ASan.
local function run(cmd)
   local p = assert(io.popen(cmd .. " 2>&1"))
   local out = p:read("a")
   local _, _, code = p:close()
   return code, out
end

-- One word for /bin/sh, whatever it holds.
local function quote(word)
   return "'" .. word:gsub("'", "'\\''") .. "'"
end

describe("lab/run #noasan #labboot", function()
   it("rejects an unknown device model before booting", function()
      local code, out = run("lab/run --device no-such-model -- true")
      assert.are.equal(125, code)
      assert.matches("unknown QEMU device 'no%-such%-model'", out)
   end)

   it("rejects unknown options and a missing command", function()
      local code, out = run("lab/run --bogus -- true")
      assert.are.equal(125, code)
      assert.matches("unknown option '%-%-bogus'", out)
      code, out = run("lab/run")
      assert.are.equal(125, code)
      assert.matches("no COMMAND given", out)
   end)

   it("says which setup step is missing", function()
      local code, out = run("LUAVFIO_QEMU=/nonexistent/qemu lab/run -- true")
      assert.are.equal(125, code)
      assert.matches("/nonexistent/qemu not found: run lab/setup", out)
      local empty = os.tmpname()
      os.remove(empty)
      code, out = run("LUAVFIO_CACHE=" .. empty .. " lab/run -- true")
      assert.are.equal(125, code)
      assert.matches("no lab kernel in " .. empty:gsub("%p", "%%%0") .. "/lab/kernel: run lab/setup", out)
   end)

   it("says when the 6.12 kernel is not built, and what --no-iommu needs", function()
      local empty = os.tmpname()
      os.remove(empty)
      local code, out = run("LUAVFIO_CACHE=" .. empty .. " lab/run --kernel 6.12 -- true")
      assert.are.equal(125, code)
      assert.matches("the 6%.12 lab kernel is not built: run lab/setup", out)
      code, out = run("lab/run --kernel 5.4 -- true")
      assert.are.equal(125, code)
      assert.matches("unknown %-%-kernel '5%.4' %(default or 6%.12%)", out)
      code, out = run("lab/run --no-iommu -- true")
      assert.are.equal(125, code)
      assert.matches("%-%-no%-iommu needs %-%-kernel 6%.12", out)
   end)

   -- One boot answers the checks of an ordinary run (each boot costs about 10 s under
   -- TCG): exit status and output, every argument, the host's /tmp, the kernel it names,
   -- and the devices it adds and publishes.
   local WORDS = { "plain", "two words", "new\nline", "", "'single'", '"double"', "$HOME",
      "a;b", "*", "back\\slash", "tab\there", "-n", "\u{e9}t\u{e9}", "" }
   local shared
   local function ordinary_run()
      if shared then return shared end
      local path = os.tmpname()
      local f = assert(io.open(path, "w")); f:write("made on the host\n"); f:close()
      -- the guest prints each argument it got in hex, one per line: <hex>
      local script = [[
         for a in "$@"; do printf '<%s>\n' "$(printf %s "$a" | od -An -tx1 -v | tr -d ' \n')"; done
         echo from-the-guest; pwd
         echo "kernel=$LUAVFIO_LAB_KERNEL"; uname -r
         cat $LUAVFIO_LAB_DEVICES
         cat ]] .. path .. [[ && echo guest > ]] .. path .. [[.guest && cat ]] .. path .. [[.guest
         exit 7]]
      local cmd = { "lab/run --no-defaults --device ivshmem-plain,memdev=labmem",
         "--qemu '-object memory-backend-ram,id=labmem,size=64M' --port-device rtl8139",
         "-- bash -c", quote(script), "argv0" }
      for _, w in ipairs(WORDS) do cmd[#cmd + 1] = quote(w) end
      local code, out = run(table.concat(cmd, " "))
      shared = { code = code, out = out, guest_write_reached_host = io.open(path .. ".guest") ~= nil }
      os.remove(path)
      os.remove(path .. ".guest")
      return shared
   end

   it("returns COMMAND's exit status and streams its output", function()
      local r = ordinary_run()
      assert.are.equal(7, r.code, r.out)
      assert.matches("from%-the%-guest", r.out)
      local here = io.popen("pwd"):read("l")
      assert.matches(here, r.out, 1, true)
   end)

   it("passes every argument of COMMAND unchanged", function()
      local r = ordinary_run()
      local got = {}
      for hex in r.out:gmatch("<(%x*)>") do
         got[#got + 1] = hex:gsub("%x%x", function(h) return string.char(tonumber(h, 16)) end)
      end
      assert.are.same(WORDS, got)
   end)

   it("adds devices with --device, --port-device and raw --qemu arguments, and publishes them", function()
      local r = ordinary_run()
      assert.matches("0000:00:02%.0 1af4:1110 050000 %d+ ivshmem%-plain\n", r.out)
      -- rtl8139 sits behind its root port (slot 3), so on a secondary bus
      assert.matches("0000:0[1-9]:00%.0 10ec:8139 020000 %d+ rtl8139\n", r.out)
   end)

   it("shows the host's /tmp inside, and keeps the guest's writes there", function()
      local r = ordinary_run()
      assert.matches("made on the host\nguest\n", r.out)
      assert.is_false(r.guest_write_reached_host, "a guest write reached the host's /tmp")
   end)

   it("says which kernel and QEMU it boots, and tells COMMAND the kernel", function()
      local r = ordinary_run()
      local kver = r.out:match("lab: kernel (%S+) %(Debian [^)]+%), QEMU emulator version")
      assert.is_not_nil(kver, r.out)
      assert.matches("kernel=" .. kver:gsub("%p", "%%%0") .. "\n" .. kver:gsub("%p", "%%%0") .. "\n", r.out)
   end)

   it("reports a guest kernel panic with a non-zero exit", function()
      local code, out = run("lab/run --no-defaults --timeout 120 -- sh -c 'echo c > /proc/sysrq-trigger'")
      assert.are.equal(125, code)
      assert.matches("guest kernel panic: Kernel panic", out)
   end)

   it("stops a hung command at the timeout", function()
      local t0 = os.time()
      local code, out = run("lab/run --no-defaults --timeout 4 -- sleep 600")
      assert.are.equal(124, code)
      assert.matches("timed out after 4s", out)
      assert.is_true(os.time() - t0 < 30)
   end)

   it("fails the lab (125) within a minute when the guest stops making progress", function()
      -- Freeze the lab VM for real from its QEMU monitor once COMMAND runs: the vCPU
      -- stops, so the guest's heartbeat does.
      local sock = os.tmpname()
      os.remove(sock)
      local t0 = os.time()
      local p = assert(io.popen("lab/run --no-defaults --stall 15 --monitor " .. sock ..
         " -- sh -c 'echo guest-up; sleep 600' 2>&1; echo \"exit=$?\""))
      local out = {}
      for line in p:lines() do
         out[#out + 1] = line
         if line == "guest-up" then
            local m = assert(io.popen("{ echo stop; sleep 1; } | socat - UNIX-CONNECT:" .. sock))
            m:read("a"); m:close()
         end
      end
      p:close()
      local text = table.concat(out, "\n")
      assert.matches("exit=125", text)
      assert.matches("the lab guest stopped making progress: no heartbeat for %d+ s", text)
      assert.matches("RIP=%x+", text)           -- the vCPU state, from the monitor
      assert.matches("lab failure: the guest froze", text)
      assert.is_true(os.time() - t0 < 90, "took " .. (os.time() - t0) .. " s")
   end)
end)

describe("lab/setup's kernel cache", function()
   -- A per-user cache with two kernels, as lab/setup lays it out; nothing is downloaded.
   local cache
   before_each(function()
      cache = os.tmpname()
      os.remove(cache)
      for _, v in ipairs({ "6.1.0-1-amd64", "6.1.0-2-amd64" }) do
         local dir = cache .. "/lab/kernels/" .. v
         assert(os.execute(("mkdir -p %s && echo %s > %s/version && touch %s/.complete")
            :format(dir, v, dir, dir)))
      end
      assert(os.execute(("ln -s kernels/6.1.0-1-amd64 %s/lab/kernel && date -u +%%F > %s/good")
         :format(cache, cache .. "/lab/kernels/6.1.0-1-amd64")))
      -- and the 6.12 kernel, built by this configuration's recipe, so nothing is built
      local built = cache .. "/lab/kernels/6.12-fake"
      assert(os.execute(("mkdir -p %s && lab/kernel/build --recipe > %s/recipe && touch %s/.complete"
         .. " && echo 6.12.0-fake > %s/version && echo 6.12.0-1 > %s/package-version"
         .. " && echo 600 > %s/build-seconds && ln -s kernels/6.12-fake %s/lab/kernel-6.12")
         :format(built, built, built, built, built, built, cache)))
      -- and the vfio-user peer, unpacked (lab/vfio-user-client's ready test): lab/setup
      -- must not fetch QEMU 11.1 into a throwaway cache from a spec
      local qroot = cache .. "/qemu-vfio-user/root"
      local qemu = qroot .. "/usr/bin/qemu-system-x86_64"
      assert(os.execute(("mkdir -p %s/usr/bin && touch %s && chmod +x %s && echo 1:11.1.3 > %s/.complete")
         :format(qroot, qemu, qemu, qroot)))
   end)
   after_each(function() os.execute("rm -rf " .. cache) end)

   it("lists the cached kernels, the booted one and the good ones", function()
      local code, out = run("LUAVFIO_CACHE=" .. cache .. " lab/setup --kernels")
      assert.are.equal(0, code, out)
      assert.matches("%* 6%.1%.0%-1%-amd64  good since %d+%-%d+%-%d+\n  6%.1%.0%-2%-amd64\n", out)
   end)

   it("finds the 6.12 build of this configuration, and rebuilds for another", function()
      local code, out = run("LUAVFIO_CACHE=" .. cache .. " lab/kernel/build --status")
      assert.are.equal(0, code, out)
      assert.are.equal("ready: 6.12.0-fake (Debian linux-source 6.12.0-1, built in 600 s)\n", out)
      assert(os.execute("echo other > " .. cache .. "/lab/kernels/6.12-fake/recipe"))
      code, out = run("LUAVFIO_CACHE=" .. cache .. " lab/kernel/build --status")
      assert.are.equal(1, code, out)
      assert.matches("not built for this configuration", out)
   end)

   it("keeps the kernel a clone finds in the cache, and switches only when told", function()
      local code, out = run("LUAVFIO_CACHE=" .. cache .. " lab/setup")
      assert.are.equal(0, code, out)
      assert.are.equal("kernels/6.1.0-1-amd64", io.popen("readlink " .. cache .. "/lab/kernel"):read("l"))
      code, out = run("LUAVFIO_CACHE=" .. cache .. " lab/setup --use-kernel 6.1.0-2-amd64")
      assert.are.equal(0, code, out)
      assert.are.equal("kernels/6.1.0-2-amd64", io.popen("readlink " .. cache .. "/lab/kernel"):read("l"))
      code, out = run("LUAVFIO_CACHE=" .. cache .. " lab/setup --use-kernel 9.9")
      assert.are.equal(1, code)
      assert.matches("kernel 9%.9 is not in", out)
   end)
end)
