-- A policy using every hook, a plugin, ctx and kgx.config.
name = "good"
version = "1.2"

local counter = require "counter"
local helper = require "sub.helper"
local again = require "counter"
assert(counter == again, "require cache")
loads = counter.bump()

function split(drawer, ctx)
    local chunks = {}
    for part in drawer.document:gmatch("[^|]+") do
        chunks[#chunks + 1] = { text = part, n = #chunks + 1 }
    end
    return chunks
end

function request(chunk, drawer, ctx)
    return {
        path = "/v1/chat/completions",
        body = { model = ctx.model, n_ctx = ctx.n_ctx, cfg_n_ctx = kgx.config.n_ctx,
                 shrink = ctx.shrink, attempt = ctx.attempt, endpoint = ctx.endpoint,
                 text = helper.upper(chunk.text), n = chunk.n, wing = drawer.wing,
                 loads = loads, meta = drawer.metadata and drawer.metadata.k },
        timeout_ms = 5000,
    }
end

function parse(body, chunk, drawer)
    local v, err = kgx.json.decode(body)
    if not v then return nil, err end
    return v
end

function accept(t, drawer)
    if t.subject == "reject" then return nil, "subject is on the deny list" end
    if t.subject == "silent" then return nil end
    if t.subject == "number" then return 42 end
    if t.subject == "long" then return { subject = string.rep("a", 5000), predicate = "p", object = "o" } end
    return { subject = t.subject, predicate = (t.predicate or ""):lower(), object = t.object,
             confidence = t.confidence, raw_predicate = t.predicate }
end
