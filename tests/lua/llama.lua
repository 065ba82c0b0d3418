-- Request builders: caps, cache_prompt, TEXT: last, byte-identical prefix, small schema.
local root = arg[0]:match("^(.*)tests/lua/[^/]*$") or "./"
package.path = root .. "tests/lua/lib/?.lua;" .. package.path
local shim = require "shim"
local t = require "tap"
local llama = require "llama"
local cjson = shim.cjson

local I = "Extract facts.\nJSON only."
t.is(llama.n_predict(nil, nil), 512, "default n_predict 512")
t.is(llama.n_predict(4096, 0), 512, "capped at 512")
t.is(llama.n_predict(512, 1024), 307, "capped at 30% of the slot")
t.is(llama.n_predict(512, 100), 64, "never below 64")
t.is(llama.n_predict(100, 4096), 100, "configured value below the caps kept")

local r = llama.completion({ instructions = I, text = "Alice works on Apollo.", n_predict = 9999 })
t.is(r.path, "/completion", "completion path")
t.is(r.body.n_predict, 512, "n_predict always set and capped")
t.is(r.body.cache_prompt, true, "cache_prompt")
t.ok(r.body.temperature <= 0.2, "low temperature")
t.is(r.body.prompt, I .. "\nTEXT:\nAlice works on Apollo.", "instructions first, TEXT: line, text last")
t.is(r.body.json_schema.type, "object", "schema is an object")
local items = r.body.json_schema.properties.triples
t.ok(items.maxItems <= 50, "maxItems small")
t.is(items.items.properties.confidence.type, "integer", "confidence integer")
t.is(items.items.properties.confidence.maximum, 100, "confidence 0..100")
t.ok(#cjson.encode(r.body.json_schema) < 1024, "schema is small")
t.ok(not cjson.encode(r.body.json_schema):find("maxLength"), "no maxLength")
local r2 = llama.completion({ instructions = I, text = "Totally different drawer." })
local function prefix(p) return p:sub(1, p:find("\nTEXT:\n", 1, true) + 6) end
t.is(prefix(r.body.prompt), prefix(r2.body.prompt), "byte-identical prefix")
t.is(llama.completion({ instructions = I, text = "x", schema = false }).body.json_schema, nil, "schema = false")
-- the compact format: a list of fixed [subject, predicate, object, confidence] tuples
local a = llama.schema({ format = "array", vocabulary = { "a", "b" }, max_triples = 7 })
t.is(a.type, "array", "array format: a bare list")
t.is(a.maxItems, 7, "array format: maxItems = max_triples")
t.is(a.items.type, "array", "array format: items are arrays")
t.is(#a.items.prefixItems, 4, "array format: four positions")
t.is_deeply(a.items.prefixItems[2].enum, { "a", "b" }, "array format: predicate from the vocabulary")
t.is(a.items.prefixItems[4].type, "integer", "array format: confidence an integer")
t.is(a.items.minItems, 4, "array format: exactly four")
t.ok(not pcall(llama.schema, { format = "yaml" }), "unknown format raises")
local e = llama.schema({ vocabulary = { "a", "b" }, max_triples = 1000 })
t.is_deeply(e.properties.triples.items.properties.predicate.enum, { "a", "b" }, "vocabulary enum")
t.is(e.properties.triples.maxItems, 50, "maxItems capped at 50")
t.is(llama.completion({ instructions = I, text = { text = "table chunk" } }).body.prompt, I .. "\nTEXT:\ntable chunk", "table chunk")

local c = llama.chat({ instructions = I, text = "Bob uses Redis.", n_predict = 100, model = "m" })
t.is(c.path, "/v1/chat/completions", "chat path")
t.is(c.body.max_tokens, 100, "max_tokens set")
t.is(c.body.cache_prompt, true, "chat cache_prompt")
t.is(c.body.messages[1].role, "system", "system message first")
t.is(c.body.messages[1].content, I, "system = instructions")
t.is(c.body.messages[2].content, "TEXT:\nBob uses Redis.", "user = TEXT: + chunk")
t.is(c.body.response_format.type, "json_schema", "response_format json_schema")
t.is(c.body.response_format.json_schema.schema.type, "object", "chat schema")
t.ok(type(c.body.response_format.json_schema.name) == "string", "schema has a name")
t.is(c.body.model, "m", "model")
t.is(llama.chat({ instructions = I, text = "x" }).body.max_tokens, 512, "chat max_tokens always set")

for _, bad in ipairs({ "TEXT:\nx", "a\nTEXT:\nb", "a\nTEXT:", "" }) do
    t.ok(not pcall(llama.completion, { instructions = bad, text = "x" }), "instructions with a TEXT: line rejected: " .. bad:gsub("\n", "\\n"))
end
t.ok(not pcall(llama.completion, { instructions = I, text = 42 }), "non-string text rejected")
-- a small output cap lowers the list's maxItems in both formats (the tuple list is the schema itself)
do
    local o = { instructions = I, text = "x", n_predict = 64, n_ctx = 512, max_triples = 10 }
    local _, items = llama.sized(o)
    t.ok(items < 10, "a 64-token cap fits fewer than 10 facts")
    o.schema = llama.schema({ format = "array", max_triples = 10 })
    t.is(llama.chat(o).body.response_format.json_schema.schema.maxItems, items, "array format: maxItems lowered")
    t.is(o.schema.maxItems, 10, "array format: the policy's schema left alone")
    o.schema = llama.schema({ max_triples = 10 })
    t.is(llama.chat(o).body.response_format.json_schema.schema.properties.triples.maxItems, items,
         "object format: maxItems lowered")
end
t.ok(llama.overhead_tokens(I, "chat") > llama.overhead_tokens(I, "completion"), "chat overhead larger")

-- the budget is reported to the host (kgx-run --status shows it); tiny under a quarter of the slot
shim.budgets = {}
t.is(llama.budget_warning(313, 256, 512), true, "512-token slot, 313 + 256: tiny")
t.is(llama.budget_warning(313, 512, 4096), false, "4096-token slot: not tiny")
t.is(llama.budget_warning(313, 256, 0), false, "unknown context: nothing reported")
t.is(#shim.budgets, 2, "two reports reach the host")
t.is(table.concat(shim.budgets[1], ","), "512,313,256", "with the numbers: n_ctx, instructions, output cap")

t.done()
