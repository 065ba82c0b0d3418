-- tap — a tiny TAP emitter for the Lua tests (run under prove).
--   local t = require "tap"; t.ok(v, name); t.is(got, want, name); t.is_deeply(got, want, name);
--   t.like(str, pattern, name); t.diag(msg); t.done()  (exits 1 if anything failed)
local M = {}
local n, failed = 0, 0

local function out(s) io.write(s, "\n"); io.flush() end

function M.diag(msg)
    for line in (tostring(msg) .. "\n"):gmatch("(.-)\n") do out("# " .. line) end
end

function M.ok(v, name)
    n = n + 1
    if not v then failed = failed + 1 end
    out((v and "ok " or "not ok ") .. n .. " - " .. (tostring(name or ""):gsub("[%z\1-\31]", "?")))
    if not v then
        local lvl, info = 2, nil
        repeat info = debug.getinfo(lvl, "Sl"); lvl = lvl + 1 until not info or not info.short_src:find("tap%.lua$")
        info = info or { short_src = "?", currentline = 0 }
        M.diag("  failed at " .. info.short_src .. ":" .. info.currentline)
    end
    return v
end

local function show(v)
    if type(v) == "string" then
        if #v > 200 then v = v:sub(1, 200) .. "…" end
        return string.format("%q", v)
    end
    return tostring(v)
end

function M.is(got, want, name)
    local r = M.ok(got == want, name)
    if not r then M.diag("  got:  " .. show(got)); M.diag("  want: " .. show(want)) end
    return r
end

function M.like(got, pat, name)
    local r = M.ok(type(got) == "string" and got:find(pat) ~= nil, name)
    if not r then M.diag("  got:  " .. show(got)); M.diag("  want match: " .. pat) end
    return r
end

local function deep(a, b, path)
    if type(a) ~= type(b) then return false, path .. ": " .. show(a) .. " vs " .. show(b) end
    if type(a) ~= "table" then
        if a == b then return true end
        return false, path .. ": " .. show(a) .. " vs " .. show(b)
    end
    for k, v in pairs(a) do
        local ok, where = deep(v, b[k], path .. "." .. tostring(k))
        if not ok then return false, where end
    end
    for k, v in pairs(b) do
        if a[k] == nil then return false, path .. "." .. tostring(k) .. ": nil vs " .. show(v) end
    end
    return true
end

function M.is_deeply(got, want, name)
    local ok, where = deep(got, want, "")
    M.ok(ok, name)
    if not ok then M.diag("  differs at " .. where) end
    return ok
end

-- Runs f and returns seconds spent and f's results.
function M.timed(f, ...)
    local t0 = os.clock()
    local r = { f(...) }
    return os.clock() - t0, unpack(r)
end

function M.done()
    out("1.." .. n)
    if failed > 0 then M.diag(failed .. " of " .. n .. " failed") end
    os.exit(failed > 0 and 1 or 0)
end

return M
