-- entity — entity-name cleanup and the per-triple filters.
--
--   entity.clean(name, role) -> cleaned | nil, reason
--        must be a string, valid UTF-8 without NUL (kgx.utf8_valid); trimmed, whitespace runs → one
--        space, wrapping quotes stripped; not empty; ≤ max_chars characters; not a stopword.
--   entity.cap(list, n) -> list
--        the per-LLM-call cap: keeps the first n triples, marks the rest `_drop = "over max_triples n"`.
--        A huge list is cut to n + M.max_listed_drops entries, the last one summarising the rest.
--   entity.accept(triple, drawer, opts) -> { subject, predicate, object, confidence,
--                                            raw_relation_type } | nil, reason
--        opts.vocab (a vocab.new() object; default vocab.default), opts.min_confidence
--        (default kgx.config.min_confidence, else 0.5), opts.stopwords (set), opts.max_chars.
--        A triple carrying `_drop` (from parse or cap) is rejected with that reason.
--
-- Knobs: M.STOPWORDS (MemPalace's list), M.max_chars (256), M.max_listed_drops (100).

local M = {}

M.max_chars = 256
M.max_listed_drops = 100

M.STOPWORDS = {}
for w in ("it this that they the a an user agent system you i we me us them he she one none"):gmatch("%S+") do
    M.STOPWORDS[w] = true
end

local find, sub, format = string.find, string.sub, string.format

local function utf8_valid(s)
    if kgx and kgx.utf8_valid then return kgx.utf8_valid(s) end
    return not find(s, "%z")
end

-- UTF-8 character count (bytes that are not continuation bytes).
local function nchars(s)
    local _, cont = s:gsub("[\128-\191]", "")
    return #s - cont
end
M.nchars = nchars

local WRAP = {
    { '"', '"' }, { "'", "'" }, { "`", "`" }, { "\226\128\156", "\226\128\157" },
    { "\226\128\152", "\226\128\153" }, { "\194\171", "\194\187" },
}

local trim = require("text").trim

local function unwrap(s)
    for _ = 1, 4 do
        local changed = false
        for _, w in ipairs(WRAP) do
            local a, b = w[1], w[2]
            if #s >= #a + #b and sub(s, 1, #a) == a and sub(s, -#b) == b then
                s = trim(sub(s, #a + 1, #s - #b)); changed = true
            end
        end
        if not changed then break end
    end
    return s
end

function M.clean(name, role, opts)
    role = role or "name"
    opts = opts or {}
    if type(name) ~= "string" then
        return nil, role .. " is not a string (" .. (type(name) == "userdata" and "null" or type(name)) .. ")"
    end
    if not utf8_valid(name) then return nil, role .. " is not valid UTF-8 or contains NUL" end
    local max = opts.max_chars or M.max_chars
    if #name > 4 * max + 1024 then return nil, role .. " longer than " .. max .. " characters" end
    local s = trim(name):gsub("%s+", " ")
    s = unwrap(s)
    if s == "" then return nil, role .. " is empty" end
    if nchars(s) > max then return nil, role .. " longer than " .. max .. " characters" end
    local stop = opts.stopwords or M.STOPWORDS
    if stop[s:lower()] then return nil, role .. " is a stopword: " .. s end
    return s
end

function M.cap(list, n)
    if type(list) ~= "table" then return list end
    n = tonumber(n) or 10
    local total = #list
    if total <= n then return list end
    local reason = "over max_triples " .. n
    local out = {}
    local last = math.min(total, n + M.max_listed_drops)
    for i = 1, last do
        local t = list[i]
        if i > n then
            if type(t) ~= "table" then t = {} end
            if not t._drop then t._drop = reason end
        end
        out[i] = t
    end
    if total > last then
        out[last + 1] = { _drop = format("%s: %d more triples not listed", reason, total - last) }
    end
    return out
end

local function default_min_confidence()
    local c = kgx and kgx.config and tonumber(kgx.config.min_confidence)
    if c then return c end
    return 0.5
end

function M.accept(t, drawer, opts)
    opts = opts or {}
    if type(t) ~= "table" then return nil, "not a triple (" .. type(t) .. ")" end
    if t._drop then return nil, tostring(t._drop) end
    local s, err = M.clean(t.subject, "subject", opts)
    if not s then return nil, err end
    local o
    o, err = M.clean(t.object, "object", opts)
    if not o then return nil, err end
    if s:lower() == o:lower() then return nil, "subject equals object: " .. s end
    local V = opts.vocab or require("vocab").default
    local p, raw = V.map(t.predicate)
    if not p then return nil, raw end
    local c = tonumber(t.confidence) or 0.7
    if c ~= c then c = 0.7 end
    if c > 1 then c = c / 100 end
    if c > 1 then c = 1 elseif c < 0 then c = 0 end
    local min = tonumber(opts.min_confidence) or default_min_confidence()
    if c < min then
        local a, b = format("%.2f", c), format("%.2f", min)
        if a == b then a, b = format("%.4f", c), format("%.4f", min) end
        return nil, "confidence " .. a .. " < " .. b
    end
    return { subject = s, predicate = p, object = o, confidence = c, raw_relation_type = raw }
end

return M
