-- hostile.lua — the default policy, except for drawers whose text carries a POLICY-<kind> marker:
-- then a hook raises, loops forever, returns something enormous or of the wrong type.
-- Used by tests/reliability/hostile_policies.pl: those drawers must fail with a message, the rest
-- must come out exactly as under prompts/default.lua.
name = "hostile"
version = "1"

local llama  = require "llama"
local parser = require "parse"
local splitter = require "split"
local vocab  = require "vocab"
local entity = require "entity"

local N_PREDICT, TEMPERATURE, VOCAB = 512, 0.1, vocab.default
local MAX_TRIPLES = (kgx.config.max_triples or 0) > 0 and kgx.config.max_triples or 10
local PROMPT = ([[
Extract facts from the text after TEXT: as knowledge-graph triples.
- Only facts explicitly stated in the text; no outside knowledge.
- Skip meta-observations about the conversation (greetings, who asked what).
- Subject and object: short names of people, projects, services, tools, places; never pronouns.
- Predicate: one of %s; "other" if none fits.
- Confidence: integer 0-100, how clearly the text states the fact.
- At most %d facts. JSON only, this shape:
{"triples":[{"subject":"<name>","predicate":"<predicate>","object":"<name>","confidence":<0-100>}]}
No facts: {"triples":[]}]]):format(table.concat(VOCAB.names, ","), MAX_TRIPLES)
local SCHEMA = llama.schema({ max_triples = MAX_TRIPLES })

local function kind(drawer) return drawer and drawer.document and drawer.document:match("POLICY%-([%w_]+)") end

function split(drawer, ctx)
    local k = kind(drawer)
    if k == "split_raise" then error("hostile policy: split raised on purpose") end
    if k == "split_loop" then while true do end end
    if k == "split_huge" then local t = {} for i = 1, 1000000 do t[i] = "chunk " .. i end return t end
    if k == "split_type" then return 42 end
    if k == "split_mem" then local t = {} for i = 1, 1e8 do t[i] = { i, i, i } end return t end
    ctx = ctx or {}
    return (splitter.split(drawer.document, {
        n_ctx = ctx.n_ctx, shrink = ctx.shrink,
        instruction_tokens = llama.overhead_tokens(PROMPT, "completion"),
        n_predict = llama.n_predict(N_PREDICT, ctx.n_ctx),
    }))
end

function request(chunk, drawer, ctx)
    local k = kind(drawer)
    if k == "request_raise" then error({ weird = "error object" }) end
    if k == "request_loop" then local x = 0 while true do x = x + 1 end end
    if k == "request_huge" then return { path = "/completion", body = string.rep("x", 200 * 1024 * 1024) } end
    if k == "request_type" then return "not a table" end
    ctx = ctx or {}
    return llama.completion({
        instructions = PROMPT, text = chunk, schema = SCHEMA,
        n_predict = N_PREDICT, n_ctx = ctx.n_ctx, temperature = TEMPERATURE,
    })
end

function parse(body, chunk, drawer)
    local k = kind(drawer)
    if k == "parse_raise" then error(setmetatable({}, { __tostring = function() while true do end end })) end
    if k == "parse_huge" then
        local t = {} for i = 1, 200000 do t[i] = { subject = "S" .. i, predicate = "uses", object = "O" .. i } end return t
    end
    if k == "parse_type" then return "a string, not a list" end
    local triples, err = parser.parse(body)
    if not triples then error("unparseable answer: " .. err, 0) end
    return entity.cap(triples, MAX_TRIPLES)
end

function accept(triple, drawer)
    local k = kind(drawer)
    if k == "accept_raise" then error("hostile policy: accept raised on purpose") end
    if k == "accept_loop" then while true do end end
    if k == "accept_type" then return { subject = {}, predicate = 12, object = function() end } end
    if k == "accept_huge" then return { subject = string.rep("S", 10 * 1024 * 1024), predicate = "uses", object = "x" } end
    return entity.accept(triple, drawer, { vocab = VOCAB })
end
