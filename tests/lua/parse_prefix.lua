-- Whole or nothing: for every prefix of every answer shape the parser accepts, parse either fails
-- (nil, or a verdict other than "whole") or gives exactly the full answer's triples — never a strict
-- subset. An answer cut anywhere (n_predict, a full context, a broken transfer) must not look like a
-- smaller answer.
--
-- The answers come from one named generator, `answers(seed)`, over fixed seeds: random triples
-- (names with quotes, brackets, backslashes, commas and non-ASCII), in every shape — bare list,
-- object under each list key, a single triple object, [s, p, o(, conf)] arrays (also exactly as the
-- default policy's compact format has a model write them), ```json fences,
-- prose before and after (with stray brackets that balance), pretty-printed or compact — and every
-- prefix is parsed as raw content and inside a /completion and a chat envelope.
local root = arg[0]:match("^(.*)tests/lua/[^/]*$") or "./"
package.path = root .. "tests/lua/lib/?.lua;" .. package.path
local shim = require "shim"
local t = require "tap"
local parse = require "parse"
local cjson = shim.cjson

local SEEDS = 120

-- a small deterministic PRNG (LCG), so that the cases do not depend on LuaJIT's math.random
local function rng(seed)
    local s = seed * 7919 + 17
    return function(n)
        s = (s * 1103515245 + 12345) % 2147483648
        return s % n + 1
    end
end

local NAMES = { "Alice", "Bob", "Carol", 'the "quoted" one', "a [bracketed] thing", "brace {x}",
                "back\\slash", "comma, and more", "Zoë", "日本", "Apollo", "PostgreSQL 16", "x" }
local PREDS = { "works_on", "depends_on", "uses", "created", "likes_cheese", "part of", "is_a" }
local PROSE_BEFORE = { "Here are the facts I found:\n", "Sure! ", "Facts [see below] {none}: ",
                       "The text states the following (see [1]):\n\n", "" }
local PROSE_AFTER = { "\nLet me know if you need more.", "\n\nNote: some facts may be {uncertain}.", "", " [end]" }
local KEYS = { "triples", "facts", "result", "results", "data" }

local function enc(v) return cjson.encode(v) end

-- pretty or compact list of already-encoded items
local function list(items, pretty)
    if pretty then return "[\n  " .. table.concat(items, ",\n  ") .. "\n]" end
    return "[" .. table.concat(items, ",") .. "]"
end

-- answers(seed) -> shape name, content text, expected triples (as parse.normalise gives them)
local function answers(seed)
    local r = rng(seed)
    local n = r(4)                       -- 1..4 triples
    local triples, want = {}, {}
    for i = 1, n do
        local s, p, o, c = NAMES[r(#NAMES)], PREDS[r(#PREDS)], NAMES[r(#NAMES)], r(101) - 1
        triples[i] = { s, p, o, c }
        want[i] = parse.normalise({ subject = s, predicate = p, object = o, confidence = c })
    end
    local pretty = r(2) == 1
    local shape = r(7)
    if shape == 4 and r(3) ~= 1 then shape = 8 end   -- the compact tuples of the default policy
    local name, text
    if shape == 1 then
        name = "bare list"
        local items = {}
        for i, x in ipairs(triples) do items[i] = enc({ subject = x[1], predicate = x[2], object = x[3], confidence = x[4] }) end
        text = list(items, pretty)
    elseif shape == 2 then
        local key = KEYS[r(#KEYS)]
        name = "object under " .. key
        local items = {}
        for i, x in ipairs(triples) do items[i] = enc({ subject = x[1], predicate = x[2], object = x[3], confidence = x[4] }) end
        text = '{"' .. key .. '":' .. list(items, pretty) .. (r(2) == 1 and ',"note":"done"' or "") .. "}"
    elseif shape == 3 then
        name = "single triple object"
        local x = triples[1]
        text = enc({ subject = x[1], predicate = x[2], object = x[3], confidence = x[4] })
        want = { want[1] }
    elseif shape == 8 then
        -- what a model writes under llama.schema{format = "array"} (the default policy's format):
        -- tuples separated as the real server's grammar lets it (", ", ",\n", ","), bare or fenced
        name = "compact tuples"
        local seps = { ", ", ",\n", "," }
        local items = {}
        for i, x in ipairs(triples) do items[i] = enc({ x[1], x[2], x[3], x[4] }) end
        text = "[" .. table.concat(items, seps[r(#seps)]) .. "]"
        if r(3) == 1 then name = name .. " fenced"; text = "```json\n" .. text .. "\n```" end
    elseif shape == 4 then
        name = "nested arrays"
        local items = {}
        for i, x in ipairs(triples) do items[i] = enc({ x[1], x[2], x[3], x[4] }) end
        text = list(items, pretty)
        if r(2) == 1 then name = name .. " under triples"; text = '{"triples":' .. text .. "}" end
    else
        -- shapes 5-7: the list in a fence and/or prose
        local items = {}
        for i, x in ipairs(triples) do items[i] = enc({ subject = x[1], predicate = x[2], object = x[3], confidence = x[4] }) end
        local body = list(items, pretty)
        if r(2) == 1 then body = '{"triples":' .. body .. "}" end
        if shape == 5 then
            name = "fenced"
            text = "```json\n" .. body .. "\n```"
        elseif shape == 6 then
            name = "prose before and after"
            text = PROSE_BEFORE[r(#PROSE_BEFORE)] .. body .. PROSE_AFTER[r(#PROSE_AFTER)]
        else
            name = "prose and fence"
            text = PROSE_BEFORE[r(#PROSE_BEFORE)] .. "```json\n" .. body .. "\n```" .. PROSE_AFTER[r(#PROSE_AFTER)]
        end
    end
    return name, text, want
end

local function completion(content) return enc({ content = content, stop_type = "eos" }) end
local function chat(content)
    return enc({ choices = { { index = 0, message = { role = "assistant", content = content }, finish_reason = "stop" } } })
end
local ENVS = { { "raw", function(s) return s end }, { "completion", completion }, { "chat", chat } }

local function same(a, b)
    if #a ~= #b then return false end
    for i = 1, #a do
        for _, k in ipairs({ "subject", "predicate", "object", "confidence", "_drop" }) do
            if a[i][k] ~= b[i][k] then return false end
        end
    end
    return true
end

local shapes_seen, prefixes, bad = {}, 0, 0
for seed = 1, SEEDS do
    local name, text, want = answers(seed)
    shapes_seen[name:match("^(%S+ %S+)") or name] = true
    -- the full answer parses to exactly its triples, whole
    for _, env in ipairs(ENVS) do
        local got, verdict = parse.parse(env[2](text))
        if not (got and verdict == "whole" and same(got, want)) then
            bad = bad + 1
            t.ok(false, string.format("seed %d %s (%s): the full answer parses whole: %s", seed, name, env[1], tostring(verdict)))
        end
    end
    -- every prefix: nothing, or everything
    for len = 0, #text - 1 do
        local pre = text:sub(1, len)
        for _, env in ipairs(ENVS) do
            prefixes = prefixes + 1
            local got, verdict = parse.parse(env[2](pre))
            if got and verdict == "whole" and not same(got, want) then
                bad = bad + 1
                if bad <= 10 then
                    t.ok(false, string.format("seed %d %s (%s): prefix of %d/%d bytes gave %d of %d triples: %q",
                                              seed, name, env[1], len, #text, #got, #want, pre))
                end
            end
        end
    end
end
t.is(bad, 0, string.format("%d answers, %d prefixes: every prefix fails or gives exactly the full triples", SEEDS, prefixes))
local names = {}
for k in pairs(shapes_seen) do names[#names + 1] = k end
table.sort(names)
t.ok(#names >= 7, "every shape generated: " .. table.concat(names, ", "))

-- the parser must be able to fail this test: the old tolerance (complete objects of a list that
-- breaks off) would give a strict subset here
local cut = '[{"subject":"A","predicate":"uses","object":"B","confidence":90},{"subject":"C","predicate":"uses","obj'
t.ok(parse.parse(cut) == nil, "the canonical cut answer gives nothing")
t.ok(parse.parse('[["A","uses","B",90], ["C","uses"') == nil, "a cut list of tuples gives nothing")
t.ok(parse.parse('[["A","uses","B",90], ["C","uses","D",8') == nil, "a list of tuples cut inside a number gives nothing")
local whole, v = parse.parse('[["A","uses","B",90], ["C","uses","D",80]]')
t.ok(whole and #whole == 2 and v == "whole" and whole[2].confidence == 0.8, "whole tuples: both, confidence 0-100 read as 0-1")
t.done()
