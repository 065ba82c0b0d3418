-- Parser: every answer shape local models send, envelopes, and hostile answers.
local root = arg[0]:match("^(.*)tests/lua/[^/]*$") or "./"
package.path = root .. "tests/lua/lib/?.lua;" .. package.path
local shim = require "shim"
local t = require "tap"
local parse = require "parse"
local cjson = shim.cjson

local T1 = { subject = "Alice", predicate = "works_on", object = "Apollo", confidence = 0.9 }
local T2 = { subject = "Billing", predicate = "depends_on", object = "Postgres", confidence = 0.7 }

local function completion(content, extra)
    local e = { content = content, stop_type = "eos", tokens_predicted = 10 }
    for k, v in pairs(extra or {}) do e[k] = v end
    return cjson.encode(e)
end
local function chat(content)
    return cjson.encode({ choices = { { index = 0, message = { role = "assistant", content = content },
                                        finish_reason = "stop" } }, usage = { prompt_tokens = 5 } })
end

local arr = '[{"subject":"Alice","predicate":"works_on","object":"Apollo","confidence":90},' ..
            '{"subject":"Billing","predicate":"depends_on","object":"Postgres"}]'

-- content shapes → expected list
local shapes = {
    { "bare array", arr, { T1, T2 } },
    { "object triples", '{"triples":' .. arr .. '}', { T1, T2 } },
    { "object facts", '{"facts":' .. arr .. '}', { T1, T2 } },
    { "object result", '{"result":' .. arr .. '}', { T1, T2 } },
    { "object results", '{"results":' .. arr .. '}', { T1, T2 } },
    { "object data", '{"data":' .. arr .. '}', { T1, T2 } },
    { "first list key wins", '{"note":"x","facts":"no","data":' .. arr .. '}', { T1, T2 } },
    { "single triple object", '{"subject":"Alice","predicate":"works_on","object":"Apollo","confidence":0.9}', { T1 } },
    { "json fence", "```json\n" .. arr .. "\n```", { T1, T2 } },
    { "bare fence", "```\n" .. arr .. "\n```\n", { T1, T2 } },
    { "prose around", "Sure! Here are the facts:\n" .. arr .. "\nLet me know if you need more.", { T1, T2 } },
    { "prose with brackets first", "Facts [see below] {none}: " .. arr, { T1, T2 } },
    { "prose with quotes", 'He said "hi [" then: ' .. arr, { T1, T2 } },
    { "trailing padding", arr .. string.rep(" \n\t", 2000), { T1, T2 } },
    { "leading padding", string.rep("\n", 500) .. arr, { T1, T2 } },
    { "nested arrays", '[["Alice","works_on","Apollo",90],["Billing","depends_on","Postgres"]]', { T1, T2 } },
    { "array with 0-1 conf", '[["Alice","works_on","Apollo",0.9]]', { T1 } },
    { "alt keys", '[{"head":"Alice","relation":"works_on","tail":"Apollo","score":0.9}]', { T1 } },
    { "string confidence", '[{"subject":"Alice","predicate":"works_on","object":"Apollo","confidence":"90%"}]', { T1 } },
    { "non-numeric confidence", '[{"subject":"Billing","predicate":"depends_on","object":"Postgres","confidence":"high"}]', { T2 } },
    { "null confidence", '[{"subject":"Billing","predicate":"depends_on","object":"Postgres","confidence":null}]', { T2 } },
    { "empty list", "[]", {} },
    { "empty triples", '{"triples":[]}', {} },
    { "double-encoded", cjson.encode(arr), { T1, T2 } },
}

-- JSON that breaks off is incomplete whatever the server said about it: never a partial success.
local broken = '{"triples":[{"subject":"Alice","predicate":"works_on","object":"Apollo","confidence":90},{"subject":"Billing","predicate":"depends_on","object":"Postgres"},{"subject":"Ca'
for _, env in ipairs({ { "completion", completion }, { "chat", chat }, { "raw", function(s) return s end } }) do
    local list, err = parse.parse(env[2](broken))
    t.ok(list == nil and tostring(err):find("incomplete", 1, true), "broken-off JSON is incomplete (" .. env[1] .. "): " .. tostring(err))
    list, err = parse.parse(env[2]("Here are the facts I found:\n" .. broken:sub(12)))
    t.ok(list == nil and tostring(err):find("incomplete", 1, true), "broken-off list after prose is incomplete (" .. env[1] .. "): " .. tostring(err))
end
local kept, why = parse.parse(completion(broken, { stop_type = "limit" }))
t.ok(kept == nil and why:find("incomplete", 1, true), "the same text cut at n_predict is incomplete too: nothing kept")
local _, verdict = parse.parse(completion(arr))
t.is(verdict, "whole", "a list that parses to its end comes with the verdict whole")
_, verdict = parse.parse(completion("[]"))
t.is(verdict, "whole", "an empty list is whole")
local sep, sep_why = parse.parse('{"subject":"A","predicate":"uses","object":"B"} and {"subject":"C","predicate":"uses","object":"D"}')
t.ok(sep == nil and sep_why:find("several", 1, true), "separate triple objects side by side are not one whole list")

for _, c in ipairs(shapes) do
    for _, env in ipairs({ { "completion", completion }, { "chat", chat }, { "raw", function(s) return s end } }) do
        local list, err = parse.parse(env[2](c[2]))
        if not t.is_deeply(list, c[3], c[1] .. " (" .. env[1] .. ")") then t.diag(tostring(err)) end
    end
end

-- an answer cut at n_predict keeps nothing: the host splits the chunk and asks again
local cut, cut_why = parse.parse(completion('[{"subject":"Alice","predicate":"works_on","object":"Apollo","confidence":90},{"subj', { stop_type = "limit", truncated = true }))
t.ok(cut == nil and cut_why:find("incomplete", 1, true), "cut answer: not a partial success")

-- confidence normalisation
t.is(parse.confidence(0.4), 0.4, "conf 0..1 kept")
t.is(parse.confidence(40), 0.4, "conf > 1 is a percentage")
t.is(parse.confidence(1000), 1, "conf clamped to 1")
t.is(parse.confidence(-3), 0, "conf clamped to 0")
t.is(parse.confidence(nil), 0.7, "absent conf 0.7")
t.is(parse.confidence({}), 0.7, "table conf 0.7")
t.is(parse.confidence(0 / 0), 0.7, "NaN conf 0.7")

-- wrong types are passed on, or marked with a reason — never an error
local l = parse.parse('[{"subject":1,"predicate":"uses","object":{"a":1}}, "Alice works on Apollo", 42, null, ["a","b"], true]')
t.is(#l, 6, "wrong-typed items all passed on")
t.is(l[1].subject, 1, "number subject passed as is")
t.is(type(l[1].object), "table", "table object passed as is")
t.like(l[2]._drop, "^not a triple: string", "string item dropped with reason")
t.like(l[3]._drop, "^not a triple: number", "number item dropped with reason")
t.like(l[4]._drop, "^not a triple: null", "null item dropped with reason")
t.like(l[5]._drop, "fewer than 3", "short array dropped with reason")
t.like(l[6]._drop, "^not a triple: boolean", "boolean item dropped with reason")

-- unparseable answers: nil, reason
local bad = {
    { "error envelope", '{"error":{"code":400,"message":"the request exceeds the available context size","type":"exceed_context_size_error"}}', "llm error 400" },
    { "error string", '{"error":"boom"}', "llm error" },
    { "empty body", "", "empty" },
    { "whitespace body", "   \n ", "empty" },
    { "empty completion content", completion(""), "empty content" },
    { "whitespace content", completion(string.rep(" ", 10000)), "empty content" },
    { "null content", '{"content":null}', "content" },
    { "chat null content", '{"choices":[{"message":{"content":null}}]}', "content" },
    { "chat no choices", '{"choices":[]}', "choices" },
    { "prose only", completion("I could not find any facts in this text."), "no JSON" },
    { "object without list", completion('{"note":"nothing"}'), "no triple list" },
    { "number", completion("42"), "no JSON" },
    { "not a string", 42, "not a string" },
    { "unterminated", completion('[{"subject": "A'), "incomplete JSON" },
    { "non-utf8 garbage", "\255\254\253 not json \128", "no JSON" },
}
for _, c in ipairs(bad) do
    local v, err = parse.parse(c[2])
    t.ok(v == nil, c[1] .. " is unparseable")
    t.like(err, c[3], c[1] .. " reason: " .. tostring(err))
end

-- non-UTF-8 inside valid JSON strings is passed on (accept rejects it)
local nu = parse.parse('[{"subject":"Al\255ice","predicate":"uses","object":"X"}]')
t.is(nu and nu[1].subject, "Al\255ice", "non-UTF-8 name passed on for accept")

-- hostile sizes: fast, no error
local function fast(name, body, limit)
    local secs, ok, v, err = t.timed(pcall, parse.parse, body)
    t.ok(ok, name .. " does not raise")
    t.ok(secs < (limit or 1.0), string.format("%s is fast (%.3fs)", name, secs))
    return v, err
end
fast('"[" .. "{"x5000', "[" .. ("{"):rep(5000))
fast('"[" .. "{"x5000 in content', completion("[" .. ("{"):rep(5000)))
fast("10,000-deep nesting", ("["):rep(10000) .. ("]"):rep(10000))
fast("10,000-deep nesting in prose", "x " .. ("["):rep(10000) .. ("]"):rep(10000))
fast("10,000-deep objects", ('{"a":'):rep(10000) .. "1" .. ("}"):rep(10000))
fast("unbalanced quotes", '[' .. ('"'):rep(100000))
fast("backslashes", '["' .. ('\\'):rep(100001))
fast("alternating brackets", ("[{"):rep(200000) .. ("}]"):rep(3))
fast("mismatched closers", ("[}"):rep(200000))
local big = {}
for i = 1, 40000 do big[i] = { subject = "S" .. i, predicate = "uses", object = "O" .. i, confidence = 80 } end
local bigjson = cjson.encode(big)
local v = fast("huge valid list (" .. #bigjson .. " bytes)", completion(bigjson), 3)
t.is(v and #v, 40000, "huge list fully parsed")
local pad = string.rep(" ", 10 * 1024 * 1024)
v = fast("10 MB of padding after JSON", completion(arr .. pad), 3)
t.is(v and #v, 2, "padding ignored")
v = fast("10 MB raw padding", arr .. pad, 3)
t.is(v and #v, 2, "raw padding ignored")
local prose = string.rep("lorem ipsum [dolor] {sit} amet, ", 330000)
fast("10 MB prose with brackets", prose .. arr, 5)
fast("10 MB of garbage", string.rep("\255{[\"", 2600000), 5)

-- regions: linear scan facts
local r = parse._regions('a [1] b {"x":"]"} c [', 10)
t.is(#r, 2, "two balanced regions")
t.is_deeply(r[2], { 9, 17 }, "string-aware region")

t.done()
