-- e2e — runs drawers through a policy's hooks the way the host does, answered by the fake
-- llama-server's own model (tests/fake/model.lua), without sockets.
--   local e2e = require "e2e"
--   local r = e2e.run(P, drawer, { n_ctx = 2048, fault = "" })
--   r.chunks, r.requests, r.triples (accepted), r.drops ({triple, reason}), r.errors
local shim = require "shim"
local cjson = shim.cjson
local M = {}

local model
function M.model()
    if not model then model = dofile(shim.root .. "tests/fake/model.lua") end
    return model
end

-- One request table (from the request hook) → the fake's response body.
-- unconstrained: a model that ignores the schema's maxItems (to test the policy's own cap).
function M.answer(req, n_ctx, fault, unconstrained)
    local fm = M.model()
    local kind = req.path == "/completion" and "completion" or "chat"
    local b = req.body
    if unconstrained and type(b) == "table" then
        local function strip(sc)
            if type(sc) ~= "table" then return end
            sc.maxItems = nil
            if type(sc.properties) == "table" and type(sc.properties.triples) == "table" then sc.properties.triples.maxItems = nil end
        end
        strip(b.json_schema)
        if type(b.response_format) == "table" and type(b.response_format.json_schema) == "table" then
            strip(b.response_format.json_schema.schema)
        end
    end
    local body = type(b) == "string" and b or cjson.encode(b)
    local status, r = fm.prepare(kind, body, n_ctx, "fake")
    if status ~= 200 then return status, r end
    fm.produce(r, fault or "", n_ctx)
    return 200, fm.respond(r, { cached = 0, prompt_ms = 1, predicted_ms = 1, slot = 0, seq = 1 })
end

local function call(f, ...)
    local ok, a, b = pcall(f, ...)
    if not ok then return nil, a end
    return true, a, b
end

function M.run(P, drawer, opts)
    opts = opts or {}
    local n_ctx = opts.n_ctx or 2048
    local ctx = { n_ctx = n_ctx, shrink = opts.shrink or 0, attempt = 1, model = "fake", endpoint = "http://x" }
    local out = { chunks = {}, requests = {}, bodies = {}, triples = {}, drops = {}, errors = {}, statuses = {} }
    local ok, chunks = call(P.split, drawer, ctx)
    if not ok then out.errors[#out.errors + 1] = "split: " .. tostring(chunks); return out end
    out.chunks = chunks
    for i, chunk in ipairs(chunks) do
        local ok2, req = call(P.request, chunk, drawer, ctx)
        if not ok2 then out.errors[#out.errors + 1] = "request: " .. tostring(req) else
            out.requests[i] = req
            local status, body = M.answer(req, n_ctx, opts.fault, opts.unconstrained)
            out.statuses[i] = status
            out.bodies[i] = body
            if status ~= 200 then out.errors[#out.errors + 1] = "http " .. status .. ": " .. body else
                local ok3, raw = call(P.parse, body, chunk, drawer)
                if not ok3 then out.errors[#out.errors + 1] = "parse: " .. tostring(raw) else
                    for _, tr in ipairs(raw) do
                        local ok4, acc, why = call(P.accept, tr, drawer)
                        if not ok4 then out.errors[#out.errors + 1] = "accept: " .. tostring(acc)
                        elseif acc then out.triples[#out.triples + 1] = acc
                        else out.drops[#out.drops + 1] = { triple = tr, reason = why } end
                    end
                end
            end
        end
    end
    return out
end

return M
