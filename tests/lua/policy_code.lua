-- prompts/code.lua end to end: a second policy with different choices (chat, enum vocabulary,
-- strict mapping, stricter threshold) runs through the same hooks.
local root = arg[0]:match("^(.*)tests/lua/[^/]*$") or "./"
package.path = root .. "tests/lua/lib/?.lua;" .. package.path
local shim = require "shim"
local t = require "tap"
local e2e = require "e2e"
local cjson = shim.cjson

local P = shim.policy("prompts/code.lua")
t.is(P.name, "code", "name")
t.is(P.version, "1", "version")
for _, h in ipairs({ "split", "request", "parse", "accept" }) do t.is(type(P[h]), "function", "hook " .. h) end

local ctx = { n_ctx = 4096, shrink = 0, attempt = 1, model = "phi-4-mini" }
local r1 = P.request("parser.c calls lexer_next.", { id = "a" }, ctx)
local r2 = P.request("Something else entirely.", { id = "b" }, ctx)
t.is(r1.path, "/v1/chat/completions", "chat endpoint")
t.ok(r1.body.max_tokens > 0 and r1.body.max_tokens <= 512, "max_tokens capped")
t.is(r1.body.cache_prompt, true, "cache_prompt")
t.is(r1.body.model, "phi-4-mini", "model from ctx")
t.is(r1.body.messages[1].content, r2.body.messages[1].content, "system message identical across drawers")
t.is(r1.body.messages[2].content, "TEXT:\nparser.c calls lexer_next.", "user message: TEXT: then the chunk")
local schema = r1.body.response_format.json_schema.schema
local enum = schema.properties.triples.items.properties.predicate.enum
t.ok(type(enum) == "table" and #enum >= 10, "predicate constrained by enum (" .. (enum and #enum or 0) .. ")")
local has = {}
for _, v in ipairs(enum or {}) do has[v] = true end
t.ok(has.imports and has.calls and has.implements and has.depends_on and has.returns, "code vocabulary in the enum")
t.ok(not has.other, "no catch-all in the enum")
t.ok(#cjson.encode(schema) < 2048, "schema small")

local doc = table.concat({
    "The parser calls the lexer.",
    "The billing module requires libpq.",
    "Alice works on the parser.",
    "Bob likes tabs.",
    "The cache uses Redis (70%).",
    "The HTTP server is part of core.",
}, "\n")
local r = e2e.run(P, { id = "c1", document = doc }, { n_ctx = 4096 })
t.is(#r.errors, 0, "no errors: " .. table.concat(r.errors, "; "))
local got = {}
for _, x in ipairs(r.triples) do got[#got + 1] = x.subject .. "|" .. x.predicate .. "|" .. x.object end
t.is_deeply(got, {
    "The parser|calls|the lexer",
    "The billing module|depends_on|libpq",
    "Alice|works_on|the parser",
    "The HTTP server|part_of|core",
}, "accepted triples")
local reasons = {}
for _, d in ipairs(r.drops) do reasons[#reasons + 1] = d.reason end
t.is_deeply(reasons, { "predicate 'likes' is not in the vocabulary", "confidence 0.70 < 0.75" }, "strict vocabulary and stricter threshold")

-- the default policy would have kept both: policies are swappable
local D = shim.policy("prompts/default.lua")
local rd = e2e.run(D, { id = "c1", document = doc }, { n_ctx = 4096 })
t.is(#rd.triples, 6, "default policy keeps 6 of the same answer")

-- faults
local rf = e2e.run(P, { id = "c1", document = doc }, { n_ctx = 4096, fault = "malformed" })
t.like(rf.errors[1] or "", "unparseable", "malformed answer fails the attempt")
rf = e2e.run(P, { id = "c1", document = doc }, { n_ctx = 4096, fault = "fence" })
t.is(#rf.triples, 4, "fenced answer parsed")

-- long code drawer, no overlap: chunks concatenate to the document
local lines = {}
for i = 1, 600 do lines[i] = ("module%d calls function%d.\nA comment line that states no relation at all, just prose about the weather and lunch, number %d."):format(i, i + 1, i) end
local ldoc = table.concat(lines, "\n")
local rl = e2e.run(P, { id = "c2", document = ldoc }, { n_ctx = 1024 })
t.is(#rl.errors, 0, "long code drawer: no errors")
t.is(table.concat(rl.chunks), ldoc, "no overlap: chunks concatenate to the document")
local capped = 0
for _, d in ipairs(rl.drops) do if d.reason:find("^over max_triples") then capped = capped + 1 end end
t.is(#rl.triples + capped, 600, "every call found: kept or dropped over max_triples with a reason")
t.ok(#rl.triples <= 10 * #rl.chunks, "at most max_triples kept per call")

t.done()
