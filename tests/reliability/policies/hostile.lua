-- hostile.lua — appended to prompts/default.lua by hostile_policies.pl: the default policy, except for
-- drawers whose text carries a POLICY-<kind> marker; then a hook raises, loops forever, returns
-- something enormous or of the wrong type. Those drawers must fail with a message, the rest must come
-- out exactly as under prompts/default.lua (the hooks below fall through to the default ones).
name = "hostile"
version = "1"

local function kind(drawer) return drawer and drawer.document and drawer.document:match("POLICY%-([%w_]+)") end
local default_split, default_request, default_parse, default_accept = split, request, parse, accept

function split(drawer, ctx)
    local k = kind(drawer)
    if k == "split_raise" then error("hostile policy: split raised on purpose") end
    if k == "split_loop" then while true do end end
    if k == "split_huge" then local t = {} for i = 1, 1000000 do t[i] = "chunk " .. i end return t end
    if k == "split_type" then return 42 end
    if k == "split_mem" then local t = {} for i = 1, 1e8 do t[i] = { i, i, i } end return t end
    return default_split(drawer, ctx)
end

function request(chunk, drawer, ctx)
    local k = kind(drawer)
    if k == "request_raise" then error({ weird = "error object" }) end
    if k == "request_loop" then local x = 0 while true do x = x + 1 end end
    if k == "request_huge" then return { path = "/completion", body = string.rep("x", 200 * 1024 * 1024) } end
    if k == "request_type" then return "not a table" end
    return default_request(chunk, drawer, ctx)
end

function parse(body, chunk, drawer)
    local k = kind(drawer)
    if k == "parse_raise" then error(setmetatable({}, { __tostring = function() while true do end end })) end
    if k == "parse_huge" then
        local t = {} for i = 1, 200000 do t[i] = { subject = "S" .. i, predicate = "uses", object = "O" .. i } end return t
    end
    if k == "parse_type" then return "a string, not a list" end
    return default_parse(body, chunk, drawer)
end

function accept(triple, drawer)
    local k = kind(drawer)
    if k == "accept_raise" then error("hostile policy: accept raised on purpose") end
    if k == "accept_loop" then while true do end end
    if k == "accept_type" then return { subject = {}, predicate = 12, object = function() end } end
    if k == "accept_huge" then return { subject = string.rep("S", 10 * 1024 * 1024), predicate = "uses", object = "x" } end
    return default_accept(triple, drawer)
end
