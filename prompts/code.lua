-- code — a policy for source code and design notes, making different choices than `default`:
-- chat completions (system + user messages), a code-oriented vocabulary that the JSON schema
-- enforces as an enum, unknown predicates dropped (not `other`), a stricter confidence threshold,
-- and a smaller output cap. Use it with `kgx-run --policy prompts/code.lua`.
name = "code"
version = "1"

local llama  = require "llama"
local parser = require "parse"
local splitter = require "split"
local vocab  = require "vocab"
local entity = require "entity"

-- Knobs --------------------------------------------------------------------------------------
local N_PREDICT      = 384
local TEMPERATURE    = 0.0
local MIN_CONFIDENCE = 0.75   -- stricter than MEMPALACE_KG_MIN_CONFIDENCE's default
local MAX_TRIPLES    = (kgx.config.max_triples or 0) > 0 and kgx.config.max_triples or 10

local VOCAB = vocab.custom({
    imports     = { "import", "imported", "includes_module", "requires_module" },
    calls       = { "call", "invokes", "invoke", "called" },
    implements  = { "implement", "realizes" },
    extends     = { "inherits_from", "subclass_of", "subclasses", "derives_from" },
    depends_on  = { "requires", "require", "relies_on", "needs" },
    returns     = { "return", "yields" },
    defines     = { "declares", "contains", "has", "provides" },
    uses        = { "use", "utilizes", "reads", "writes" },
    raises      = { "throws", "raise", "throw" },
    tests       = { "tests_for", "covers" },
    configures  = { "configure", "sets" },
    part_of     = { "belongs_to", "is_part_of", "member_of" },
    is_a        = { "is", "is_an", "instance_of", "type_of" },
    creates     = { "create", "created", "instantiates", "builds" },
    owns        = { "maintains", "maintained_by_owner" },
    works_on    = { "working_on", "maintainer_of" },
}, { replace = true, strict = true })

local PROMPT = ([[
You read source code, code reviews and design notes and list the code relations they state.
Rules:
- Only relations explicitly stated or visible in the text; no guesses.
- Subject and object are identifiers or component names: modules, files, functions, classes, services, people.
- Never use pronouns as subject or object. Skip remarks about the conversation.
- Predicate: exactly one of %s.
- At most %d relations. Confidence: integer 0 to 100.
Answer with JSON only: {"triples":[{"subject":"<name>","predicate":"<predicate>","object":"<name>","confidence":<0-100>}]}
If there are none, answer {"triples":[]}.]]):format(table.concat(VOCAB.names, ", "), MAX_TRIPLES)

local SCHEMA = llama.schema({ max_triples = MAX_TRIPLES, vocabulary = VOCAB.names })

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
        overlap = 0,   -- code: no repeated lines across chunks
    }))
end

function request(chunk, drawer, ctx)
    ctx = ctx or {}
    return llama.chat({
        instructions = PROMPT, text = chunk, schema = SCHEMA, schema_name = "code_relations",
        n_predict = N_PREDICT, n_ctx = ctx.n_ctx, temperature = TEMPERATURE, max_triples = MAX_TRIPLES, model = ctx.model,
    })
end

function parse(body, chunk, drawer)
    local triples, err = parser.parse(body)
    if not triples then error("unparseable answer: " .. err, 0) end
    return entity.cap(triples, MAX_TRIPLES), err   -- err is the verdict here: "whole"
end

function accept(triple, drawer)
    return entity.accept(triple, drawer, { vocab = VOCAB, min_confidence = MIN_CONFIDENCE })
end
