-- luacheck (Debian 12's lua-check), run from the top of the tree as `luacheck .`; the
-- host spec spec/host/luacheck_spec.lua keeps it clean.
std = "lua54"
-- Commands without a .lua suffix are Lua too.
include_files = { "**/*.lua", "bin/*", "tools/*" }
exclude_files = { "build/**", "build-*/**", ".cache/**", "lua_modules/**", ".luarocks/**",
                  "luarocks/**" }
files["spec"] = { std = "+busted" }
