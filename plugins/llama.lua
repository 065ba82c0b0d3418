-- llama — request builders for llama.cpp's llama-server.
--
--   llama.completion(opts) -> { path = "/completion", body = {…} }
--   llama.chat(opts)       -> { path = "/v1/chat/completions", body = {…} }
--   llama.schema(opts)     -> the JSON schema table: opts.format "object" (default here) gives
--                             {"triples":[{"subject","predicate","object","confidence"}]}; "array" gives
--                             [["subject","predicate","object",confidence]] — the same facts in about
--                             half the output tokens (no keys repeated per fact; BENCHMARKS.md B11)
--   llama.n_predict(cap, n_ctx) -> the output cap (before sizing it with max_triples)
--   llama.sized(opts) -> n_predict, max_triples: the output cap and the list size sized together, so
--                        that a full answer fits (see below)
--   llama.budget_warning(instruction_tokens, n_predict, n_ctx) -> tiny: reports what one request
--                        leaves for drawer text to the host (kgx.budget: shown by kgx-run --status);
--                        tiny when the instructions and the output cap leave under a quarter of the
--                        slot for text (then the host logs one warning with the numbers and the fix)
--   llama.prompt(instructions, text) -> instructions .. "\nTEXT:\n" .. text
--
-- opts:
--   instructions  fixed prompt text (required). It must be identical for every request so that
--                 llama-server's prompt cache reuses it; it must not contain a line "TEXT:".
--   text          the chunk (a string, or a table with .text)
--   n_predict     configured output cap in tokens (default 512); see n_predict() for the cap applied
--   n_ctx         per-slot context (default ctx/kgx.config); used to cap n_predict
--   temperature   default 0.1
--   schema        false: no constrained decoding; a table: this schema; nil: llama.schema(opts)
--   vocabulary    list of predicate names: the schema's predicate becomes an enum of them
--   max_triples   maxItems of the schema's list (default kgx.config.max_triples or 10, at most 50)
--   model         chat only: the model name (default kgx.config.model)
--   extra         table of extra body fields (merged last)
--
-- The drawer text always comes last, after a line "TEXT:", so the prefix before it is
-- byte-identical across drawers (prompt cache) and the fake llama-server finds the text.
-- n_predict / max_tokens is always set: min(configured, 512, 30 % of the per-slot context),
-- never below 64 — and sized with max_triples: a full answer of max_triples triples takes about
-- M.TOKENS_PER_TRIPLE tokens each (plus the list's wrapping). When 30 % of the slot is too little for
-- that, up to half of the slot is used; when even that (or the configured cap) is too little, the
-- schema's maxItems is lowered to what fits. An answer that cannot fit is cut at n_predict and never
-- a success, so the two must agree. cache_prompt is always true.

local M = {}

M.MAX_N_PREDICT = 512
M.MIN_N_PREDICT = 64
M.CTX_SHARE = 0.3

local floor, min, max = math.floor, math.min, math.max

local function config(k)
    return kgx and kgx.config and kgx.config[k]
end

function M.n_predict(cap, n_ctx)
    local n = tonumber(cap) or M.MAX_N_PREDICT
    n = min(n, M.MAX_N_PREDICT)
    n_ctx = tonumber(n_ctx) or 0
    if n_ctx <= 0 then n_ctx = tonumber(config("n_ctx")) or 0 end
    if n_ctx > 0 then n = min(n, floor(n_ctx * M.CTX_SHARE)) end
    return max(floor(n), M.MIN_N_PREDICT)
end

M.TOKENS_PER_TRIPLE = 32
M.WRAP_TOKENS = 16

local function max_items(opts)
    local n = tonumber(opts.max_triples) or tonumber(config("max_triples")) or 10
    if n <= 0 then n = 10 end
    return min(floor(n), 50)
end

function M.sized(opts)
    opts = opts or {}
    local want = max_items(opts)
    local need = want * M.TOKENS_PER_TRIPLE + M.WRAP_TOKENS
    local n = min(tonumber(opts.n_predict) or M.MAX_N_PREDICT, M.MAX_N_PREDICT)
    local n_ctx = tonumber(opts.n_ctx) or 0
    if n_ctx <= 0 then n_ctx = tonumber(config("n_ctx")) or 0 end
    if n_ctx > 0 then
        local share = floor(n_ctx * M.CTX_SHARE)
        if share < need then share = min(need, floor(n_ctx * 0.5)) end
        n = min(n, share)
    end
    n = max(floor(n), M.MIN_N_PREDICT)
    local fits = max(1, floor((n - M.WRAP_TOKENS) / M.TOKENS_PER_TRIPLE))
    return n, min(want, fits)
end

-- Reports the budget to the host (kgx.budget: it keeps the last report for `kgx-run --status` and
-- process.budget, and logs one warning per tiny budget, whichever hook thread reports it first);
-- returns whether it is tiny. Without kgx.budget (an older host) it logs here, once per n_ctx.
local warned = {}
function M.budget_warning(instruction_tokens, n_predict, n_ctx)
    n_ctx = floor(tonumber(n_ctx) or 0)
    if n_ctx <= 0 then return false end
    local instr, cap = floor(tonumber(instruction_tokens) or 0), floor(tonumber(n_predict) or 0)
    if kgx and kgx.budget then return kgx.budget(n_ctx, instr, cap) end
    local left = n_ctx - instr - cap
    if left >= n_ctx / 4 then return false end
    if not warned[n_ctx] and kgx and kgx.log then
        kgx.log("warn", string.format("tiny budget: slot context %d tokens, instructions ~%d + output cap %d " ..
            "leave %d tokens (%d %%) for drawer text: every drawer becomes many small requests. Give each slot " ..
            "more context (llama-server --ctx-size C -np N: each slot gets C/N tokens) or shorten the prompt",
            n_ctx, instr, cap, max(left, 0), floor(max(left, 0) * 100 / n_ctx)))
    end
    warned[n_ctx] = true
    return true
end

-- The schema with maxItems lowered to `items` (a copy; the original is left alone). Both formats:
-- the list is the schema itself ("array": tuples) or its `triples` property ("object").
local function with_max_items(schema, items)
    if type(schema) == "table" and schema.type == "array" then
        if not schema.maxItems or schema.maxItems <= items then return schema end
        local s = {}
        for k, v in pairs(schema) do s[k] = v end
        s.maxItems = items
        return s
    end
    local t = type(schema) == "table" and schema.properties and schema.properties.triples
    if type(t) ~= "table" or not t.maxItems or t.maxItems <= items then return schema end
    local list = {}
    for k, v in pairs(t) do list[k] = v end
    list.maxItems = items
    local props = {}
    for k, v in pairs(schema.properties) do props[k] = v end
    props.triples = list
    local s = {}
    for k, v in pairs(schema) do s[k] = v end
    s.properties = props
    return s
end

function M.schema(opts)
    opts = opts or {}
    local predicate = { type = "string" }
    if opts.vocabulary and #opts.vocabulary > 0 then
        local e = {}
        for i, v in ipairs(opts.vocabulary) do e[i] = v end
        predicate.enum = e
    end
    if opts.format == "array" then
        -- one fixed-length tuple per fact: [subject, predicate, object, confidence 0-100]
        return {
            type = "array",
            maxItems = max_items(opts),
            items = {
                type = "array",
                prefixItems = { { type = "string" }, predicate, { type = "string" },
                                { type = "integer", minimum = 0, maximum = 100 } },
                minItems = 4, maxItems = 4,
            },
        }
    elseif opts.format ~= nil and opts.format ~= "object" then
        error("llama.schema: opts.format must be \"object\" or \"array\"", 2)
    end
    return {
        type = "object",
        properties = {
            triples = {
                type = "array",
                maxItems = max_items(opts),
                items = {
                    type = "object",
                    properties = {
                        subject = { type = "string" },
                        predicate = predicate,
                        object = { type = "string" },
                        confidence = { type = "integer", minimum = 0, maximum = 100 },
                    },
                    required = { "subject", "predicate", "object", "confidence" },
                },
            },
        },
        required = { "triples" },
    }
end

local function check_instructions(s)
    if type(s) ~= "string" or s == "" then error("llama: opts.instructions must be a non-empty string", 3) end
    if s:find("^TEXT:\n") or s:find("\nTEXT:\n", 1, true) or s:find("\nTEXT:$") then
        error("llama: instructions must not contain a line 'TEXT:' (it marks where the drawer text starts)", 3)
    end
end

local function chunk_text(t)
    if type(t) == "table" then t = t.text end
    if type(t) ~= "string" then error("llama: opts.text must be a string", 3) end
    return t
end

function M.prompt(instructions, text)
    return instructions .. "\nTEXT:\n" .. text
end

local function schema_of(opts)
    if opts.schema == false then return nil end
    if type(opts.schema) == "table" then return opts.schema end
    return M.schema(opts)
end

local function merge(body, extra)
    if type(extra) == "table" then for k, v in pairs(extra) do body[k] = v end end
    return body
end

function M.completion(opts)
    check_instructions(opts.instructions)
    local text = chunk_text(opts.text)
    local n, items = M.sized(opts)
    local body = {
        prompt = M.prompt(opts.instructions, text),
        n_predict = n,
        temperature = tonumber(opts.temperature) or 0.1,
        cache_prompt = true,
        json_schema = with_max_items(schema_of(opts), items),
    }
    return { path = "/completion", body = merge(body, opts.extra), timeout_ms = opts.timeout_ms }
end

function M.chat(opts)
    check_instructions(opts.instructions)
    local text = chunk_text(opts.text)
    local n, items = M.sized(opts)
    local schema = with_max_items(schema_of(opts), items)
    local body = {
        model = opts.model or config("model") or "default",
        messages = {
            { role = "system", content = opts.instructions },
            { role = "user", content = "TEXT:\n" .. text },
        },
        max_tokens = n,
        temperature = tonumber(opts.temperature) or 0.1,
        cache_prompt = true,
    }
    if schema then
        body.response_format = { type = "json_schema",
                                 json_schema = { name = opts.schema_name or "triples", schema = schema } }
    end
    return { path = "/v1/chat/completions", body = merge(body, opts.extra), timeout_ms = opts.timeout_ms }
end

-- Prompt tokens a request spends besides the chunk (for the splitter's budget).
function M.overhead_tokens(instructions, kind)
    local t = (kgx and kgx.tokens) and kgx.tokens(instructions) or math.ceil(#instructions / 3)
    return t + (kind == "chat" and 32 or 8) -- "TEXT:" line, chat template tokens
end

return M
