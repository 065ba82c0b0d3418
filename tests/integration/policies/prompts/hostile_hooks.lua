-- hostile_hooks — the default policy's behaviour, except on drawers carrying a marker word, where
-- a hook misbehaves (policy_hooks.t: a bad policy fails the drawer, not the daemon).
-- Lines tagged "-- @MARK" are where the error must be reported; the test looks them up.
name = "hostile_hooks"
version = "1"

local llama    = require "llama"
local parser   = require "parse"
local splitter = require "split"
local entity   = require "entity"

local PROMPT = [[
Extract facts from the text after TEXT: as knowledge-graph triples.
JSON only: {"triples":[{"subject":"<name>","predicate":"<predicate>","object":"<name>","confidence":<0-100>}]}]]
local SCHEMA = llama.schema({ max_triples = 10 })

local function has(drawer, word) return drawer.document:find(word, 1, true) ~= nil end

function split(drawer, ctx)
    ctx = ctx or {}
    if has(drawer, "LOOP") then
        while true do end                                        -- @LOOP
    end
    if has(drawer, "DEEP") then
        local function f(n) return f(n + 1) + 1 end              -- @DEEP
        return f(1)
    end
    return (splitter.split(drawer.document, {
        n_ctx = ctx.n_ctx, shrink = ctx.shrink,
        instruction_tokens = llama.overhead_tokens(PROMPT, "completion"),
        n_predict = llama.n_predict(512, ctx.n_ctx),
    }))
end

function request(chunk, drawer, ctx)
    ctx = ctx or {}
    if has(drawer, "HUGE") then
        return { path = "/completion", body = string.rep("x", 100 * 1024 * 1024) }   -- @HUGE
    end
    if has(drawer, "ESCAPE1") then
        os.execute("touch /tmp/kgx-policy-escaped")              -- @ESCAPE1
    end
    if has(drawer, "ESCAPE2") then
        local fh = io.open("/tmp/kgx-policy-escaped", "w")        -- @ESCAPE2
    end
    if has(drawer, "ESCAPE3") then
        local os2 = require("os")                                -- @ESCAPE3
    end
    if has(drawer, "ESCAPE4") then
        local l = loadstring or load
        l("return 1")()                                          -- @ESCAPE4
    end
    return llama.completion({ instructions = PROMPT, text = chunk, schema = SCHEMA, n_predict = 512,
                              n_ctx = ctx.n_ctx, temperature = 0.1 })
end

function parse(body, chunk, drawer)
    if has(drawer, "BOOM") then
        error("BOOM in parse for " .. drawer.id)                 -- @BOOM
    end
    if has(drawer, "WRONG") then
        return 42                                                -- @WRONG
    end
    local triples, err = parser.parse(body)
    if not triples then error("unparseable answer: " .. err, 0) end
    return entity.cap(triples, 10)
end

function accept(triple, drawer)
    if has(drawer, "ACCFAIL") then
        local t = nil
        return t.subject                                         -- @ACCFAIL
    end
    return entity.accept(triple, drawer, {})
end
