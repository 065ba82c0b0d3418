-- llm-work.lua — LLM work per drawer and per fact, measured on a real llama-server (run by
-- scripts/llm-work, from the tree's root: `luajit scripts/llm-work.lua URL [POLICY] [DRAWERS]`).
--
-- Two request shapes over the same drawers:
--   kgx     the policy (default prompts/default.lua) as the daemon runs it: split with the server's
--           per-slot context, skip, request per chunk; a 400 context error splits smaller (as kgx does).
--   python  the MemPalace Python worker's shape: one chat message (instructions + the LAST 6,000
--           characters of the drawer), response_format json_object, max_tokens 1024, up to 10 triples
--           without confidence.
-- Requests go one at a time, all of one shape before the other, each after one uncounted warm-up request. Prompt tokens evaluated and taken from the slot cache are the server's
-- own (timings.prompt_n, timings.cache_n). Output tokens per fact are NOT the tiny test model's
-- output (it states no facts): for each request, the answer a model following that format would give
-- for the facts the text sent states (the fake llama-server's grammar, tests/fake/GRAMMAR.md, over
-- the sample sentences of samples/gen.lua; at most the per-call cap) is rendered as compact JSON and
-- tokenized by the server's /tokenize. Formats rendered:
--   python   {"triples":[{"subject":…,"predicate":…,"object":…}]}
--   object   {"triples":[{"subject":…,"predicate":…,"object":…,"confidence":90}]}   (kgx's old default)
--   array    [["subject","predicate","object",90]]                                  (compact)
local root = "./"
package.path = root .. "tests/lua/lib/?.lua;" .. root .. "tests/fake/?.lua;" .. package.path
local shim = require "shim"
local cjson = require "cjson"
local model = require "model"        -- tests/fake/model.lua: the facts a text states

local URL, POLICY, DRAWERS = arg[1], arg[2] or "prompts/default.lua", arg[3] or "samples/drawers.jsonl"
assert(URL, "usage: llm-work.lua URL [POLICY] [DRAWERS]")
local TMP = os.tmpname()

local function http(method, path, body)
    local cmd
    if body then
        local f = assert(io.open(TMP, "wb")); f:write(body); f:close()
        cmd = ("curl -s -m 300 -X %s -H 'Content-Type: application/json' --data-binary @%s -w '\\n%%{http_code}' '%s%s'")
            :format(method, TMP, URL, path)
    else
        cmd = ("curl -s -m 60 -w '\\n%%{http_code}' '%s%s'"):format(URL, path)
    end
    local p = assert(io.popen(cmd))
    local out = p:read("*a"); p:close()
    local resp, code = out:match("^(.*)\n(%d+)$")
    return tonumber(code) or 0, resp or out
end

local function props()
    local code, b = http("GET", "/props")
    assert(code == 200, "GET /props: " .. code)
    local p = cjson.decode(b)
    return p.default_generation_settings and p.default_generation_settings.n_ctx or 0,
           p.total_slots or 0, p.build_info or "?"
end

local function ntokens(s)
    local code, b = http("POST", "/tokenize", cjson.encode({ content = s }))
    assert(code == 200, "/tokenize: " .. code .. " " .. b)
    return #cjson.decode(b).tokens
end

-- ------------------------------------------------------------------ rendering
local function q(s) return cjson.encode(s) end
local RENDER = {
    python = function(f)
        local t = {}
        for i, x in ipairs(f) do t[i] = ('{"subject":%s,"predicate":%s,"object":%s}'):format(q(x[1]), q(x[2]), q(x[3])) end
        return '{"triples":[' .. table.concat(t, ",") .. "]}"
    end,
    object = function(f)
        local t = {}
        for i, x in ipairs(f) do
            t[i] = ('{"subject":%s,"predicate":%s,"object":%s,"confidence":%d}'):format(q(x[1]), q(x[2]), q(x[3]), x[4])
        end
        return '{"triples":[' .. table.concat(t, ",") .. "]}"
    end,
    array = function(f)
        local t = {}
        for i, x in ipairs(f) do t[i] = ("[%s,%s,%s,%d]"):format(q(x[1]), q(x[2]), q(x[3]), x[4]) end
        return "[" .. table.concat(t, ",") .. "]"
    end,
}
local FORMATS = { "python", "object", "array" }

local function facts_of(text, cap)
    local f = model.triples(text)
    local kept = {}
    for i = 1, math.min(#f, cap) do kept[i] = f[i] end
    return kept, #f
end

-- ------------------------------------------------------------------ the two shapes
local PY_PROMPT = [[
Read the text after TEXT: and list the facts it states as knowledge-graph triples.
Return a JSON array of objects {"subject": "...", "predicate": "...", "object": "..."}, at most 10.
Only facts explicitly stated in the text. Skip meta-observations about the conversation.
TEXT:
]]
local function last_chars(s, n)
    if #s <= n then return s, false end
    local i = #s - n + 1
    while i <= #s and s:byte(i) >= 0x80 and s:byte(i) < 0xC0 do i = i + 1 end   -- a whole UTF-8 character
    return s:sub(i), true
end

local function new_acc()
    return { drawers = 0, requests = 0, errors = 0, prompt = 0, cached = 0, missed = 0, out_toy = 0,
             facts = 0, facts_stated = 0, out = { python = 0, object = 0, array = 0 }, cut = 0,
             unsent = 0 }   -- tokens of text the python shape never had evaluated (cut off or refused)
end

local function account(acc, body, code)
    acc.requests = acc.requests + 1
    if code ~= 200 then acc.errors = acc.errors + 1; return false end
    local r = cjson.decode(body)
    local t = r.timings or {}
    local pn, cn = t.prompt_n or 0, t.cache_n or 0
    acc.prompt, acc.cached, acc.missed = acc.prompt + pn + cn, acc.cached + cn, acc.missed + pn
    acc.out_toy = acc.out_toy + (t.predicted_n or 0)
    return true
end

local function render_into(acc, text, cap)
    local kept = facts_of(text, cap)
    acc.facts = acc.facts + #kept
    for _, fmt in ipairs(FORMATS) do acc.out[fmt] = acc.out[fmt] + ntokens(RENDER[fmt](kept)) end
end

local function run_python(acc, d)
    local text, cut = last_chars(d.document, 6000)
    if cut then
        acc.cut = acc.cut + 1
        acc.unsent = acc.unsent + ntokens(d.document:sub(1, #d.document - #text))
    end
    local body = cjson.encode({ messages = { { role = "user", content = PY_PROMPT .. text } },
        temperature = 0.1, max_tokens = 1024, response_format = { type = "json_object" } })
    local code, resp = http("POST", "/v1/chat/completions", body)
    if account(acc, resp, code) then render_into(acc, text, 10)
    else acc.unsent = acc.unsent + ntokens(PY_PROMPT .. text) end
end

local function chunk_text(c) return type(c) == "table" and c.text or c end

local function run_kgx(acc, P, d, n_ctx)
    local shrink = 0
    ::again::
    local ctx = { n_ctx = n_ctx, shrink = shrink, attempt = 1, model = "kgx" }
    local chunks = P.split and P.split(d, ctx) or { d.document }
    local skip = P.skip == nil and require("text").skip or P.skip
    for _, c in ipairs(chunks) do
        if not (skip and skip(c, d)) then
            local rq = P.request(c, d, ctx)
            local body = type(rq.body) == "table" and cjson.encode(rq.body) or rq.body
            local code, resp = http("POST", rq.path, body)
            if code == 400 and resp:find("exceed_context_size", 1, true) and shrink < 6 then
                acc.requests, acc.errors = acc.requests + 1, acc.errors + 1
                shrink = shrink + 1
                goto again       -- as kgx does: the whole drawer again, split smaller
            end
            if account(acc, resp, code) then render_into(acc, chunk_text(c), P.MAX_TRIPLES or 10) end
        end
    end
end

-- ------------------------------------------------------------------ main
local n_ctx, slots, build = props()
local P = shim.policy(POLICY, { n_ctx = n_ctx })
local kgx_acc, py_acc = new_acc(), new_acc()
local stated = 0
local drawers = {}
for line in io.lines(DRAWERS) do
    local d = cjson.decode(line)
    if d.metadata == cjson.null then d.metadata = nil end
    stated = stated + #model.triples(d.document)
    drawers[#drawers + 1] = d
end
-- each shape alone on the server, as it runs in production: interleaved, the two shapes' prompts take
-- turns in the slots' caches (the server hands a request the slot whose cached prompt is most alike)
-- Before each shape, one uncounted request warms the slot cache with its fixed prefix (a backfill
-- pays that once per slot for the whole run; here it would be charged to 120 drawers).
local WARM = { id = "warm-up", wing = "w", room = "r", document = "Warm-up text: the cache holds the fixed prefix now." }
run_kgx(new_acc(), P, WARM, n_ctx)
for _, d in ipairs(drawers) do
    kgx_acc.drawers = kgx_acc.drawers + 1
    run_kgx(kgx_acc, P, d, n_ctx)
end
run_python(new_acc(), WARM)
for _, d in ipairs(drawers) do
    py_acc.drawers = py_acc.drawers + 1
    run_python(py_acc, d)
end
os.remove(TMP)

local function per(a, b) return b > 0 and a / b or 0 end
print(("server %s, %d slots, n_ctx %d per slot; %d drawers stating %d facts; policy %s"):format(
    build, slots, n_ctx, kgx_acc.drawers, stated, POLICY))
print(("%-34s %14s %14s"):format("", "kgx (policy)", "python shape"))
local function row(label, a, b, f) print(("%-34s %14s %14s"):format(label, f(a), f(b))) end
local function num(x) return ("%.1f"):format(x) end
row("requests", kgx_acc, py_acc, function(a) return tostring(a.requests) end)
row("requests failed (4xx/5xx)", kgx_acc, py_acc, function(a) return tostring(a.errors) end)
row("drawers cut to their last 6,000 B", kgx_acc, py_acc, function(a) return tostring(a.cut) end)
row("prompt tokens / drawer", kgx_acc, py_acc, function(a) return num(per(a.prompt, a.drawers)) end)
row("  from the cache (cache_n)", kgx_acc, py_acc, function(a) return num(per(a.cached, a.drawers)) end)
row("  cache-missing (prompt_n)", kgx_acc, py_acc, function(a) return num(per(a.missed, a.drawers)) end)
row("  + text it never evaluated", kgx_acc, py_acc, function(a) return num(per(a.missed + a.unsent, a.drawers)) end)
row("facts kept (answers rendered)", kgx_acc, py_acc, function(a) return tostring(a.facts) end)
for _, fmt in ipairs(FORMATS) do
    row("output tokens / fact, " .. fmt, kgx_acc, py_acc, function(a) return num(per(a.out[fmt], a.facts)) end)
end
row("output tokens / drawer, python", kgx_acc, py_acc, function(a) return num(per(a.out.python, a.drawers)) end)
row("output tokens / drawer, array", kgx_acc, py_acc, function(a) return num(per(a.out.array, a.drawers)) end)
local ref = per(py_acc.out.python, py_acc.facts)
print(("ratios per fact vs the python format (%.1f): object %.2fx, array %.2fx fewer"):format(ref,
    per(ref, per(kgx_acc.out.object, kgx_acc.facts)), per(ref, per(kgx_acc.out.array, kgx_acc.facts))))
print(("cache-missing prompt tokens per drawer, kgx / python: %.2f as sent, %.2f with the text python cut or had refused counted in full"):format(
    per(kgx_acc.missed, py_acc.missed), per(kgx_acc.missed, py_acc.missed + py_acc.unsent)))
