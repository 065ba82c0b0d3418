-- shim — the host's `kgx` table and sandbox, rebuilt in Lua for tests outside the C host.
-- Usage at the top of a test (run from anywhere; paths are found from arg[0]):
--   local root = arg[0]:match("^(.*)tests/lua/[^/]*$") or "./"
--   package.path = root .. "tests/lua/lib/?.lua;" .. package.path
--   local shim = require "shim"      -- sets package.path for plugins/, the global kgx
--   local P = shim.policy("prompts/default.lua")  -- a sandboxed policy: P.split, P.request, …
local cjson = require "cjson"

local M = {}
M.root = (arg and arg[0] and arg[0]:match("^(.*)tests/lua/[^/]*$")) or "./"
if M.root == "" then M.root = "./" end
package.path = M.root .. "plugins/?.lua;" .. package.path

local function utf8_valid(s)
    local i, n = 1, #s
    local byte = string.byte
    if s:find("%z") then return false end
    while i <= n do
        local c = byte(s, i)
        if c < 0x80 then
            i = i + 1
        else
            local len, lo
            if c >= 0xC2 and c <= 0xDF then len, lo = 2, 0x80
            elseif c >= 0xE0 and c <= 0xEF then len, lo = 3, 0x800
            elseif c >= 0xF0 and c <= 0xF4 then len, lo = 4, 0x10000
            else return false end
            if i + len - 1 > n then return false end
            local cp = c % (2 ^ (7 - len))
            for k = 1, len - 1 do
                local d = byte(s, i + k)
                if d < 0x80 or d > 0xBF then return false end
                cp = cp * 64 + (d - 0x80)
            end
            if cp < lo or cp > 0x10FFFF or (cp >= 0xD800 and cp <= 0xDFFF) then return false end
            i = i + len
        end
    end
    return true
end

M.logs = {}
M.budgets = {}
function M.new_kgx(config)
    local cfg = { model = "phi-4-mini", n_ctx = 0, min_confidence = 0.5, max_triples = 10,
                  policy_dir = M.root .. "prompts", plugins_dir = M.root .. "plugins" }
    for k, v in pairs(config or {}) do cfg[k] = v end
    return {
        json = {
            encode = cjson.encode,
            decode = function(s)
                if type(s) ~= "string" then return nil, "decode: not a string" end
                local ok, v = pcall(cjson.decode, s)
                if ok then return v end
                return nil, tostring(v)
            end,
            null = cjson.null,
        },
        log = function(level, msg) M.logs[#M.logs + 1] = { level, msg } end,
        tokens = function(s) return math.ceil(#s / 3) end,
        config = cfg,
        utf8_valid = utf8_valid,
        -- the host keeps the last report (kgx-run --status) and says whether it is tiny
        budget = function(n_ctx, instr, cap)
            M.budgets[#M.budgets + 1] = { n_ctx, instr, cap }
            return (n_ctx - instr - cap) * 4 < n_ctx
        end,
    }
end

kgx = M.new_kgx()

local SAFE = { "assert", "error", "ipairs", "next", "pairs", "pcall", "select", "tonumber", "tostring",
               "type", "unpack", "xpcall", "rawequal", "rawget", "rawset", "setmetatable",
               "getmetatable", "print" }

local function copy(t)
    local c = {}
    for k, v in pairs(t) do c[k] = v end
    return c
end

-- A fresh sandbox environment like the host's: safe base library, string (no dump), table, math,
-- bit, kgx, and a require that resolves names only to plugins/NAME.lua (loaded as text).
function M.env(kgx_table)
    local env = {}
    for _, k in ipairs(SAFE) do env[k] = _G[k] end
    env.string = copy(string); env.string.dump = nil
    env.table = copy(table); env.math = copy(math); env.bit = copy(require "bit")
    env.kgx = kgx_table or kgx
    env._G = env
    local loaded = {}
    env.require = function(name)
        if type(name) ~= "string" or not name:match("^[%w_]+$") then error("require: bad module name " .. tostring(name), 2) end
        if loaded[name] then return loaded[name] end
        local path = M.root .. "plugins/" .. name .. ".lua"
        local f = assert(io.open(path, "rb"), "require: no plugin " .. name)
        local src = f:read("*a"); f:close()
        local fn = assert(loadstring(src, "@plugins/" .. name .. ".lua"))
        local menv = setmetatable({}, { __index = env, __newindex = function(_, k)
            error("plugin " .. name .. " sets global " .. tostring(k), 2) end })
        setfenv(fn, menv)
        local m = fn(name)
        loaded[name] = m == nil and true or m
        return loaded[name]
    end
    return env
end

-- Loads a policy file into a sandbox; returns its environment (hooks are env.split etc.).
function M.policy(path, config)
    local k = M.new_kgx(config)
    local env = M.env(k)
    local f = assert(io.open(M.root .. path, "rb"))
    local src = f:read("*a"); f:close()
    assert(not src:find("^\27"), "bytecode")
    local fn = assert(loadstring(src, "@" .. path))
    setfenv(fn, env)
    fn()
    return env
end

M.cjson = cjson
M.utf8_valid = utf8_valid
return M
