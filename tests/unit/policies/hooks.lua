-- Misbehaving hooks on demand: the drawer document (split), the chunk (request), the answer body
-- (parse) or the triple's subject (accept) names the misbehaviour.
name = "hooks"

local function spin() while true do end end

local probes = {
    os = function() return os.execute("true") end,
    io = function() return io.open("/etc/passwd") end,
    ffi = function() return require "ffi" end,
    load = function() return load("return 1") end,
    loadstring = function() return loadstring("return 1") end,
    dofile = function() return dofile("/etc/passwd") end,
    dump = function() return string.dump(spin) end,
    method_dump = function() return ("x"):dump() end,
    debug = function() return debug.getinfo(1) end,
    getfenv = function() return getfenv(1) end,
    package = function() return package.loaded end,
    jit = function() return jit.off() end,
    coroutine = function() return coroutine.create(spin) end,
    collectgarbage = function() return collectgarbage("count") end,
    newproxy = function() return newproxy(true) end,
    passwd = function() return require "../../etc/passwd" end,
    cjson = function() return require "cjson" end,
    missing = function() return require "nope" end,
    plugin_raises = function() return require "raises" end,
    plugin_loop = function() return require "loop" end,
    string_mt = function() return getmetatable("").__index end,
    globals = function()
        local names = {}
        local own = { name = true, split = true, request = true, parse = true, accept = true }
        for k in pairs(_G) do if not own[k] then names[#names + 1] = k end end
        table.sort(names)
        return table.concat(names, " ")
    end,
    G = function() return tostring(_G == getfenv) .. tostring(_G._G == _G) end,
}

function split(drawer, ctx)
    local d = drawer.document
    if d == "raise" then error("split failed on purpose") end
    if d == "loop" then spin() end
    if d == "pcall_loop" then while true do pcall(spin) end end
    if d == "xpcall_loop" then while true do xpcall(spin, function(e) return e end) end end
    if d == "number" then return 3 end
    if d == "not_list" then return { text = "x" } end
    if d == "bad_chunk" then return { "a", 5 } end
    if d == "many" then local t = {} for i = 1, 5000 do t[i] = "c" end return t end
    if d == "empty" then return {} end
    if d == "hog" then local t = {} for i = 1, 1e9 do t[i] = string.rep("x", 1000) .. i end end
    if d == "rep_huge" then return { string.rep("x", 1e9) } end if d == "rep_caught" then local ok, e = pcall(string.rep, "x", 200 * 1024 * 1024) return { tostring(ok) .. " " .. tostring(e) } end
    if d == "error_table" then error({ code = 1 }) end
    if probes[d] then return { tostring(probes[d]()) } end
    return { d }
end

function request(chunk, drawer, ctx)
    if chunk == "req_raise" then error("request failed on purpose") end
    if chunk == "nil" then return nil end
    if chunk == "no_path" then return { body = "" } end
    if chunk == "rel_path" then return { path = "completion", body = "" } end
    if chunk == "crlf_path" then return { path = "/x\r\nHost: evil", body = "" } end
    if chunk == "body_num" then return { path = "/x", body = 5 } end
    if chunk == "body_fn" then return { path = "/x", body = { f = print } } end
    if chunk == "huge" then return { path = "/x", body = string.rep("x", 100 * 1024 * 1024) } end
    if chunk == "timeout_bad" then return { path = "/x", body = "", timeout_ms = 1.5 } end
    if chunk == "sparse" then return { path = "/x", body = { [1] = 1, [100] = 2 } } end
    return { path = "/completion", body = "plain " .. chunk }
end

function parse(body, chunk, drawer)
    if body == "raise" then error("parse failed on purpose") end
    if body == "loop" then spin() end
    if body == "nil" then return nil, "no JSON in the answer" end
    if body == "bare_nil" then return nil end
    if body == "string" then return "x" end
    if body == "single" then return { subject = "a", predicate = "b", object = "c" } end
    if body == "many" then local t = {} for i = 1, 1001 do t[i] = {} end return t end
    if body == "chunk" then return { { subject = tostring(chunk), predicate = "p", object = "o" } } end
    return kgx.json.decode(body)
end

function accept(t, drawer)
    if t.subject == "raise" then error("accept failed on purpose") end
    if t.subject == "loop" then spin() end
    return t
end

-- (appended: keeps the line numbers above stable)
probes.recurse = function() local function f() return 1 + f() end return f() end
probes.method_rep = function() return ("x"):rep(1e9) end
probes.pcall_ok = function() local ok, e = pcall(error, "caught") return tostring(ok) .. " " .. e end

local parse0 = parse
function parse(body, chunk, drawer)
    if body == "bad_reason" then return nil, "bad \255 byte\nsecond line" end
    return parse0(body, chunk, drawer)
end

-- Tables whose __index never returns: the host must read results without metamethods.
local accept0, request0, split0 = accept, request, split
local trap = { __index = function() while true do end end }
function accept(t, drawer)
    if t.subject == "trap" then return setmetatable({}, trap) end
    return accept0(t, drawer)
end
function request(chunk, drawer, ctx)
    if chunk == "req_trap" then return setmetatable({}, trap) end
    return request0(chunk, drawer, ctx)
end
function split(drawer, ctx)
    if drawer.document == "trap" then return { setmetatable({}, trap) } end
    return split0(drawer, ctx)
end
