-- default — the extraction policy kgx runs unless told otherwise.
--
-- One chat completion per chunk: the server applies the model's chat template (an instruct model
-- expects it), the instructions are the system message — byte-identical, so each slot reuses them
-- from its prompt cache — and the text is the user message. The model answers
-- [[subject, predicate, object, confidence], …] under a JSON schema (FORMAT = "object" asks for
-- {"triples":[{…}]} instead: ~2× the output tokens per fact, BENCHMARKS.md B11); the predicate is
-- mapped onto the 39-name vocabulary (unknown ones become `other`, the raw kept).
-- Edit the prompt, the knobs or the vocabulary below; `kill -HUP` the daemon to reload, or try it
-- first with `kgx-run --dry-run samples/drawers.jsonl --policy prompts/default.lua`.
name = "default"
version = "1"

local llama  = require "llama"
local parser = require "parse"
local splitter = require "split"
local vocab  = require "vocab"
local entity = require "entity"

-- Knobs --------------------------------------------------------------------------------------
local N_PREDICT   = 512      -- output cap in tokens (also capped at 30 % of the per-slot context)
local TEMPERATURE = 0.1
local VOCAB       = vocab.default   -- or vocab.custom({ likes = { "enjoys" } })
local MAX_TRIPLES = (kgx.config.max_triples or 0) > 0 and kgx.config.max_triples or 10
local FORMAT      = "array"  -- "array": [s, p, o, confidence] tuples; "object": {"triples":[{…}]}

-- The prompt. Fixed text only: the drawer's text is appended after a line "TEXT:".
local PROMPT = ([[
Extract facts from the text after TEXT: as knowledge-graph triples.
- Only facts explicitly stated in the text; no outside knowledge.
- Skip meta-observations about the conversation (greetings, who asked what).
- Subject and object: short names of people, projects, services, tools, places; never pronouns.
- Predicate: one of %s; "other" if none fits.
- Confidence: integer 0-100, how clearly the text states the fact.
- At most %d facts. JSON only, this shape:
%s]]):format(table.concat(VOCAB.names, ","), MAX_TRIPLES, FORMAT == "array"
    and '[["<subject>","<predicate>","<object>",<confidence 0-100>]]\nNo facts: []'
    or '{"triples":[{"subject":"<name>","predicate":"<predicate>","object":"<name>","confidence":<0-100>}]}\nNo facts: {"triples":[]}')

local SCHEMA = llama.schema({ max_triples = MAX_TRIPLES, format = FORMAT })

-- Hooks --------------------------------------------------------------------------------------
function split(drawer, ctx)
    ctx = ctx or {}
    -- the output cap and the list size are sized together (a full answer fits); a tiny budget is said once
    local n_predict = llama.sized({ n_predict = N_PREDICT, n_ctx = ctx.n_ctx, max_triples = MAX_TRIPLES })
    local instruction_tokens = llama.overhead_tokens(PROMPT, "chat")
    llama.budget_warning(instruction_tokens, n_predict, ctx.n_ctx)
    return (splitter.split(drawer.document, {
        n_ctx = ctx.n_ctx, shrink = ctx.shrink, max_tokens = ctx.max_tokens,
        instruction_tokens = instruction_tokens,
        n_predict = n_predict,
    }))
end

function request(chunk, drawer, ctx)
    ctx = ctx or {}
    return llama.chat({
        instructions = PROMPT, text = chunk, schema = SCHEMA, model = ctx.model,
        n_predict = N_PREDICT, n_ctx = ctx.n_ctx, temperature = TEMPERATURE, max_triples = MAX_TRIPLES,
    })
end

-- An unparseable answer raises: the host fails this attempt and retries the drawer later.
function parse(body, chunk, drawer)
    local triples, err = parser.parse(body)
    if not triples then error("unparseable answer: " .. err, 0) end
    return entity.cap(triples, MAX_TRIPLES), err   -- err is the verdict here: "whole"
end

function accept(triple, drawer)
    return entity.accept(triple, drawer, { vocab = VOCAB })
end
