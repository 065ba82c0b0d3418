-- parse — tolerant triple parser for llama-server answers.
--
--   parse.parse(body) -> list of raw triples, "whole" | nil, reason
--   parse.content(body) -> the model's text (or an already decoded value) | nil, reason
--   parse.triples(text_or_value) -> list | nil, reason
--   parse.normalise(item) -> { subject=, predicate=, object=, confidence=, _drop=? }
--
-- `body` is the HTTP response body: a /completion envelope ({"content": …}), a chat envelope
-- ({"choices":[{"message":{"content": …}}]}) or — for stored answers and tests — the model's text
-- itself. The model's text may be a bare JSON array, an object holding the list under `triples`,
-- `facts`, `result`, `results` or `data`, a single triple object, ```json fenced, wrapped in prose,
-- padded with whitespace, or a list of [s, p, o(, conf)] arrays.
--
-- Whole or nothing: a list is returned only when it parses to its end (its closing bracket is
-- there), and then with the verdict "whole". A list that breaks off — whatever wraps it — gives
-- nil, "incomplete JSON: …", never the run of complete objects before the break: those look like
-- an answer while the rest of the facts are simply gone. The host combines this verdict with how
-- the server ended the answer (docs/policy.md, "whole answers"): a cut at n_predict, a full
-- context or a broken connection is never a partial success. tests/lua/parse_prefix.lua proves it
-- over every prefix of every accepted shape.
--
-- nil, reason means "not a whole answer": an error envelope, empty content, no JSON, or JSON that
-- breaks off. The host must retry such a chunk — never "0 facts". A valid empty list is {}, "whole".
--
-- Every function is linear in the size of its input and never raises on any input: wrong types are
-- passed on (accept rejects them with a reason) or marked with `_drop = reason`.
--
-- Knobs: M.default_confidence (0.7), M.list_keys (object keys searched for the list, in order),
-- M.max_candidates (balanced regions tried to decode when the text is not JSON as a whole).

local M = {}

M.default_confidence = 0.7
M.list_keys = { "triples", "facts", "result", "results", "data" }
M.max_candidates = 64

local byte, sub, find = string.byte, string.sub, string.find
local type, tostring, tonumber, next = type, tostring, tonumber, next

local function decode(s)
    local ok, v, err = pcall(kgx.json.decode, s)
    if not ok then return nil, tostring(v) end
    if v == nil then return nil, err or "bad JSON" end
    return v
end

local function is_null(v)
    return v == nil or (kgx.json.null ~= nil and v == kgx.json.null)
end

-- A decoded JSON array (cjson: consecutive integer keys from 1; an empty table counts as one).
local function is_list(t)
    return type(t) == "table" and (t[1] ~= nil or next(t) == nil)
end

local trim = require("text").trim
M.trim = trim

-- The model's content from a response body. Returns a string (text to parse) or a decoded table.
function M.content(body)
    if type(body) == "table" then return body end
    if type(body) ~= "string" then return nil, "answer is not a string (" .. type(body) .. ")" end
    local text = trim(body)
    if text == "" then return nil, "empty answer" end
    local first = byte(text, 1)
    if first ~= 123 and first ~= 91 then return text end -- not '{' / '[': the model's text itself
    local v = decode(text)
    if type(v) ~= "table" then return text end      -- let the tolerant scan deal with it
    if is_list(v) then return v end                 -- a bare array: the content itself
    local e = v.error
    if not is_null(e) then
        local msg = type(e) == "table" and (e.message or e.type or e.code) or e
        if is_null(msg) then msg = "?" end
        local code = type(e) == "table" and e.code
        return nil, "llm error" .. (type(code) == "number" and (" " .. code) or "") .. ": " .. tostring(msg)
    end
    local content
    if v.content ~= nil then                        -- /completion
        content = v.content
    elseif type(v.choices) == "table" then          -- /v1/chat/completions
        local c = v.choices[1]
        if type(c) ~= "table" then return nil, "chat answer without choices" end
        local msg = c.message
        if type(msg) == "table" then content = msg.content else content = c.text end
        if is_null(content) then return nil, "chat answer without message content" end
    else
        return v                                    -- no envelope: the model's JSON object itself
    end
    if is_null(content) then return nil, "answer without content" end
    if type(content) ~= "string" then
        if type(content) == "table" then return content end
        return nil, "content is not a string (" .. type(content) .. ")"
    end
    return content
end

-- Balanced-region scan: one pass from the first '[' or '{' with a stack of open brackets,
-- string-aware inside brackets (quotes in the prose outside are ignored), backslash escapes.
-- Returns the top-level balanced regions as {i, j} pairs in text order, at most `limit`: a
-- region closed later that encloses earlier ones replaces them, so `[ {…}, {…}, {…` (an answer
-- cut short) yields the complete objects, and `[{…}]` yields the array. Second result: the
-- position of the outermost opener still open at the end (nil when everything closed) — a region
-- after it lies inside JSON that breaks off. A mismatched closer empties the stack. Every region
-- is pushed and popped at most once: linear time.
local function regions(s, limit, from)
    local done = {}            -- matched regions, non-nested, in text order
    local closer, opened = {}, {}
    local depth, pos = 0, from or 1
    while true do
        local p
        if depth == 0 then p = find(s, "[%[{]", pos) else p = find(s, '[%[%]{}"]', pos) end
        if not p then break end
        local c = byte(s, p)
        if c == 34 then        -- a string: skip to its closing quote
            local q = p + 1
            while true do
                local r = find(s, '["\\]', q)
                if not r then q = nil; break end
                if byte(s, r) == 92 then q = r + 2 else q = r; break end
            end
            if not q then pos = #s + 1; break end
            pos = q + 1
        elseif c == 91 or c == 123 then
            depth = depth + 1
            closer[depth] = c == 91 and 93 or 125
            opened[depth] = p
            pos = p + 1
        elseif c == closer[depth] then
            local o = opened[depth]
            closer[depth] = nil; opened[depth] = nil
            depth = depth - 1
            while #done > 0 and done[#done][1] > o do done[#done] = nil end
            done[#done + 1] = { o, p }
            pos = p + 1
        else                   -- mismatched closer: what is open can no longer balance
            closer, opened, depth = {}, {}, 0
            pos = p + 1
        end
    end
    local open = depth > 0 and opened[1] or nil
    if #done > limit then
        local out = {}
        for i = 1, limit do out[i] = done[i] end
        return out, open
    end
    return done, open
end
M._regions = regions

local function looks_like_triple(t)
    if type(t) ~= "table" then return false end
    if t.subject ~= nil or t.predicate ~= nil or t.object ~= nil or t.relation ~= nil then return true end
    return false
end

local function confidence(v)
    if is_null(v) then return M.default_confidence end
    if type(v) == "string" then
        v = tonumber((v:gsub("%%%s*$", ""))) or v
    end
    if type(v) ~= "number" or v ~= v then return M.default_confidence end
    if v > 1 then v = v / 100 end
    if v > 1 then v = 1 end
    if v < 0 then v = 0 end
    return v
end
M.confidence = confidence

local function field(t, ...)
    for i = 1, select("#", ...) do
        local v = t[select(i, ...)]
        if not is_null(v) then return v end
    end
    return nil
end

-- One raw item of the model's list → { subject, predicate, object, confidence[, _drop] }.
function M.normalise(item)
    if type(item) ~= "table" then
        local shown = type(item) == "string" and item or (is_null(item) and "null" or tostring(item))
        if #shown > 60 then shown = sub(shown, 1, 60) .. "…" end
        return { _drop = "not a triple: " .. (type(item) == "userdata" and "null" or type(item)) ..
                 " " .. shown }
    end
    if item[1] ~= nil then -- [s, p, o] or [s, p, o, conf]
        if item[3] == nil then return { subject = item[1], predicate = item[2], _drop = "array triple with fewer than 3 items" } end
        return { subject = item[1], predicate = item[2], object = item[3], confidence = confidence(item[4]) }
    end
    local t = {
        subject = field(item, "subject", "s", "head", "source", "from"),
        predicate = field(item, "predicate", "relation", "relation_type", "relationship", "p", "rel", "verb"),
        object = field(item, "object", "o", "tail", "target", "to"),
        confidence = confidence(field(item, "confidence", "conf", "score", "certainty")),
    }
    local vf = item.valid_from
    if type(vf) == "string" then t.valid_from = vf end
    return t
end

-- The list of items inside a decoded value, or nil, reason.
local function list_of(v)
    if is_list(v) then return v end
    if type(v) ~= "table" then return nil, "answer JSON is a " .. (is_null(v) and "null" or type(v)) .. ", not a list" end
    for _, k in ipairs(M.list_keys) do
        if is_list(v[k]) then return v[k] end
    end
    if looks_like_triple(v) then return { v } end
    return nil, "answer JSON object holds no triple list"
end

local function strip_fence(s)
    -- ```json … ``` (or ``` … ```): take what is inside the first fence
    local a, b = find(s, "```", 1, true)
    if not a then return s end
    local nl = find(s, "\n", b + 1, true)
    local start = nl and nl + 1 or b + 1
    local c = find(s, "```", start, true)
    return sub(s, start, (c or #s + 1) - 1)
end

-- A decoded list that is one [s, p, o(, conf)] triple rather than a list of triples.
local function scalar_list(x)
    return is_list(x) and x[1] ~= nil and type(x[1]) ~= "table"
end

-- The first usable JSON in prose: top-level balanced regions tried in order. A region that is a
-- list of triples, or an object holding one, is the answer — even inside a stray opener of the
-- prose. A region that is a single triple (an object, or a [s, p, o] array) is the answer only when
-- nothing before it is left open: inside an unclosed list it is one element of an answer that
-- broke off, and taking it would be the partial success this parser must never give. When the
-- scan is misled (a stray quote or bracket in the prose swallows the rest), it restarts after the
-- first opener, at most M.max_restarts times: linear time overall.
M.max_restarts = 8
local function scan(text)
    local why = "no JSON in answer"
    local from = 1
    for _ = 0, M.max_restarts do
        local rs, open = regions(text, M.max_candidates, from)
        for k, r in ipairs(rs) do
            local x = decode(sub(text, r[1], r[2]))
            if type(x) == "table" then
                local single = scalar_list(x) or (not is_list(x) and looks_like_triple(x))
                if single and open and open < r[1] then
                    return nil, "incomplete JSON: the answer's list breaks off after its complete items"
                end
                if single and not is_list(x) then
                    -- one triple object is an answer; several side by side are not one list
                    local nxt = rs[k + 1] and decode(sub(text, rs[k + 1][1], rs[k + 1][2]))
                    if looks_like_triple(nxt) then
                        return nil, "several separate triple objects, not one list: not a whole answer"
                    end
                    return { x }
                end
                if not scalar_list(x) or #x >= 3 then
                    local l = list_of(x)
                    if l then return l end
                    why = "answer JSON object holds no triple list"
                end
            end
        end
        if open and #rs == 0 then why = "incomplete JSON: the answer stops before its end" end
        local first = find(text, "[%[{]", from)
        if not first then break end
        from = first + 1
    end
    return nil, why
end

-- Triples from the model's content (a string, or an already decoded table).
function M.triples(content, depth)
    depth = depth or 0
    local v = content
    if type(content) == "string" then
        local text = trim(content)
        if text == "" then return nil, "empty content" end
        text = trim(strip_fence(text))
        if text == "" then return nil, "empty content" end
        v = nil
        local c1 = byte(text, 1)
        if c1 == 91 or c1 == 123 or c1 == 34 then v = decode(text) end
        if v == nil and (c1 == 91 or c1 == 123) then
            -- JSON that starts but never closes: the answer broke off (n_predict, a full context,
            -- a broken transfer). Its complete-looking objects are not the whole answer.
            local rs = regions(text, 1, 1)
            if not rs[1] or rs[1][1] ~= 1 then return nil, "incomplete JSON: the answer stops before its end" end
        end
        if v == nil then
            local got, why = scan(text)
            if not got then return nil, why end
            v = got
        end
    end
    if type(v) == "string" and depth < 1 then return M.triples(v, depth + 1) end -- double-encoded
    local list, err = list_of(v)
    if not list then return nil, err end
    local out = {}
    for i = 1, #list do out[i] = M.normalise(list[i]) end
    return out
end

-- The verdict "whole" goes beside the list: the host counts a chunk only on a whole answer that
-- the server also ended itself (docs/policy.md).
function M.parse(body)
    local c, err = M.content(body)
    if c == nil then return nil, err end
    local list, err2 = M.triples(c)
    if not list then return nil, err2 end
    return list, "whole"
end

return M
