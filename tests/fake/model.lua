-- model.lua — the fake llama-server's "model" and its JSON (see GRAMMAR.md, README.md).
--
-- fake.c owns sockets, slots, timers and fault choice; it calls these functions:
--   prepare(kind, body, n_ctx, model)  -> status, table|error-body   (parse a request, derive the clean answer)
--   produce(req, fault, n_ctx)         -> predicted_n                (final content for this attempt)
--   respond(req, info)                 -> body                       (the 200 response once the slot is done)
--   tokenize(body)                     -> status, body
--   note_text(text) -> count ; note_path(path) ; note_fault(kind) ; stats(numbers, with_texts) ; reset()
-- Response bodies are built by hand (ordered keys, [] for empty arrays): cjson cannot mark an empty
-- array and does not keep key order; cjson.encode is used for strings and for the stats document.
local cjson = require "cjson"
local M = {}

local floor, ceil, fmt = math.floor, math.ceil, string.format

-- ---------------------------------------------------------------- tiny ordered JSON writer
local function raw(s) return { raw = s } end
local function enc(v)
  local t = type(v)
  if t == "string" then return cjson.encode(v)
  elseif t == "number" then
    if v == floor(v) and v > -1e15 and v < 1e15 then return fmt("%d", v) end
    return fmt("%.3f", v)
  elseif t == "boolean" then return v and "true" or "false"
  elseif t == "table" and v.raw then return v.raw
  elseif v == nil then return "null" end
  error("enc: unsupported " .. t)
end
-- obj("k1", v1, "k2", v2, ...) -> JSON object text in the given key order
local function obj(...)
  local n, parts = select("#", ...), {}
  for i = 1, n, 2 do
    local k, v = select(i, ...)
    parts[#parts + 1] = cjson.encode(k) .. ":" .. enc(v)
  end
  return raw("{" .. table.concat(parts, ",") .. "}")
end
local function arr(list)
  local parts = {}
  for i = 1, #list do parts[i] = enc(list[i]) end
  return raw("[" .. table.concat(parts, ",") .. "]")
end

function M.error_body(code, typ, msg, extra)
  -- extra: optional list {"k", v, ...} appended inside the error object
  local args = { "code", code, "message", msg, "type", typ }
  for _, x in ipairs(extra or {}) do args[#args + 1] = x end
  return obj("error", obj(unpack(args))).raw
end

-- ---------------------------------------------------------------- grammar
local function ntok(s) return ceil(#s / 4) end
M.ntok = ntok

local function trim(s) return (s:gsub("^%s+", ""):gsub("%s+$", "")) end

-- TEXT = everything after the first line that is exactly "TEXT:"; else the whole prompt
function M.text_of(prompt)
  if prompt:sub(1, 6) == "TEXT:\n" then return prompt:sub(7) end
  local i = prompt:find("\nTEXT:\n", 1, true)
  if i then return prompt:sub(i + 7) end
  return prompt
end

local VERBS = {
  { "works on", "works_on" }, { "uses", "uses" }, { "depends on", "depends_on" },
  { "is part of", "part_of" }, { "created", "creates" }, { "owns", "owns" }, { "calls", "calls" },
  { "requires", "requires" }, { "is a", "is_a" }, { "mentions", "mentions" }, { "likes", "likes" },
}

local function fact(sentence)
  local s, conf = sentence, 90
  local body, nn = s:match("^(.-) %((%d%d?%d?)%%%)$")
  if body and tonumber(nn) <= 100 then s, conf = body, tonumber(nn) end
  local best, bestlen, pred
  for _, v in ipairs(VERBS) do
    local p = s:find(" " .. v[1] .. " ", 1, true)
    if p and (not best or p < best or (p == best and #v[1] > bestlen)) then
      best, bestlen, pred = p, #v[1], v[2]
    end
  end
  if not best then return nil end
  local subj, objt = trim(s:sub(1, best - 1)), trim(s:sub(best + bestlen + 2))
  if subj == "" or objt == "" then return nil end
  return { subj, pred, objt, conf }
end

-- sentences end at . ! ? followed by whitespace or the end, and at newlines
function M.triples(text)
  local out, start, n = {}, 1, #text
  local function cut(last)
    local f = fact(trim(text:sub(start, last)))
    if f then out[#out + 1] = f end
  end
  for i = 1, n do
    local c = text:byte(i)
    if c == 10 then cut(i - 1); start = i + 1
    elseif c == 46 or c == 33 or c == 63 then -- . ! ?
      local nx = text:sub(i + 1, i + 1)
      if nx == "" or nx:match("%s") then cut(i - 1); start = i + 1 end
    end
  end
  if start <= n then cut(n) end
  return out
end

local function answer_json(triples, as_object, as_tuples)
  local items = {}
  for i, t in ipairs(triples) do
    if as_tuples then   -- [s, p, o, confidence] (a schema whose list items are arrays; issue 14)
      items[i] = arr({ t[1], t[2], t[3], t[4] })
    else
      items[i] = obj("subject", t[1], "predicate", t[2], "object", t[3], "confidence", t[4])
    end
  end
  local a = arr(items)
  if as_object then return obj("triples", a).raw end
  return a.raw
end

-- cut s to at most nbytes without splitting a UTF-8 sequence
local function utf8_cut(s, nbytes)
  if nbytes >= #s then return s end
  if nbytes <= 0 then return "" end
  local i = nbytes + 1
  while i > 1 do
    local b = s:byte(i)
    if b < 0x80 or b >= 0xC0 then break end -- i starts a character: cut before it
    i = i - 1
  end
  return s:sub(1, i - 1)
end

-- ---------------------------------------------------------------- requests
local function decode(body)
  local ok, v = pcall(cjson.decode, body)
  if not ok or type(v) ~= "table" then return nil end
  return v
end

local function bad(msg) return 400, M.error_body(400, "invalid_request_error", msg) end

local function schema_wants_object(schema)
  return type(schema) == "table" and schema.type == "object"
end
-- a list whose items are arrays: [s, p, o, confidence] tuples (issue 14)
local function schema_wants_tuples(schema)
  return type(schema) == "table" and schema.type == "array" and type(schema.items) == "table"
         and schema.items.type == "array"
end

-- Constrained decoding honours the list's maxItems: the model cannot emit more triples than that.
local function schema_max_items(schema)
  if type(schema) ~= "table" then return nil end
  local list = schema
  if schema.type == "object" and type(schema.properties) == "table" then list = schema.properties.triples end
  if type(list) == "table" and type(list.maxItems) == "number" and list.maxItems >= 0 then return floor(list.maxItems) end
  return nil
end

-- kind: "completion" | "chat"
function M.prepare(kind, body, n_ctx, model)
  local req = decode(body)
  if not req then return bad("Failed to parse the request body as JSON") end
  local r = { kind = kind, model = model, n_predict = -1, id_slot = -1, as_object = false }
  local rf = req.response_format
  if kind == "completion" then
    if type(req.prompt) ~= "string" then return bad('"prompt" must be a string') end
    r.prompt = req.prompt
    if type(req.n_predict) == "number" then r.n_predict = floor(req.n_predict) end
    if type(req.id_slot) == "number" then r.id_slot = floor(req.id_slot) end
    if type(req.json_schema) == "table" then
      r.as_object = schema_wants_object(req.json_schema)
      r.as_tuples = schema_wants_tuples(req.json_schema)
      r.max_items = schema_max_items(req.json_schema)
    end
  else
    if type(req.messages) ~= "table" or #req.messages == 0 then return bad('"messages" must be a non-empty array') end
    local parts = {}
    for i, m in ipairs(req.messages) do
      if type(m) ~= "table" then return bad("bad message") end
      local c = m.content
      if type(c) == "table" then -- OpenAI content parts: keep the text ones
        local t = {}
        for _, p in ipairs(c) do if type(p) == "table" and type(p.text) == "string" then t[#t + 1] = p.text end end
        c = table.concat(t, "\n")
      elseif type(c) ~= "string" then c = "" end
      parts[i] = c
    end
    r.prompt = table.concat(parts, "\n")
    local mt = req.max_tokens
    if type(mt) ~= "number" then mt = req.max_completion_tokens end
    if type(mt) ~= "number" then mt = req.n_predict end
    if type(mt) == "number" then r.n_predict = floor(mt) end
    if type(req.id_slot) == "number" then r.id_slot = floor(req.id_slot) end
  end
  -- response_format is honoured on both endpoints (llama-server accepts it on /completion too)
  if type(rf) == "table" and (kind == "chat" or type(req.json_schema) ~= "table") then
    if rf.type == "json_object" then r.as_object = true
    elseif rf.type == "json_schema" then
      local js = rf.json_schema
      local schema = type(js) == "table" and (js.schema or js) or rf.schema
      r.as_object = schema_wants_object(schema)
      r.as_tuples = schema_wants_tuples(schema)
      r.max_items = schema_max_items(schema)
    end
  end
  if type(req.stop) == "string" then r.stop = { req.stop }
  elseif type(req.stop) == "table" then r.stop = req.stop end
  r.cache_prompt = req.cache_prompt ~= false
  r.n_prompt = ntok(r.prompt)
  if r.n_prompt >= n_ctx then
    return 400, M.error_body(400, "exceed_context_size_error",
      fmt("the request exceeds the available context size (%d tokens), try increasing it", n_ctx),
      { "n_prompt_tokens", r.n_prompt, "n_ctx", n_ctx })
  end
  r.text = M.text_of(r.prompt)
  local triples = M.triples(r.text)
  if r.max_items and #triples > r.max_items then
    for i = #triples, r.max_items + 1, -1 do triples[i] = nil end
  end
  r.answer = answer_json(triples, r.as_object, r.as_tuples)
  return 200, r
end

-- Decide this attempt's content (fault = "" for a clean answer). Returns predicted tokens.
local MALFORMED = '{"triples": [{"subject": "A",,}'
function M.produce(r, fault, n_ctx)
  local room = n_ctx - r.n_prompt        -- what the slot's context has left for the answer
  local budget = room
  if r.n_predict >= 0 and r.n_predict < budget then budget = r.n_predict end
  local content, stop_type, word = r.answer, "eos", ""
  -- as llama-server: truncated only when the slot's context filled up, not at n_predict
  r.truncated = false
  if fault == "malformed" then content = MALFORMED
  elseif fault == "truncated" then content = utf8_cut(r.answer, floor(#r.answer / 2))
  elseif fault == "empty" then content = ""
  elseif fault == "fence" then content = "```json\n" .. r.answer .. "\n```"
  elseif fault == "prose" then content = "Here are the facts:\n" .. r.answer .. "\nHope this helps!"
  elseif fault == "prosecut" then content = "Here are the facts I found:\n" .. utf8_cut(r.answer, floor(#r.answer / 2))
  elseif fault == "limitcut" then content, stop_type = utf8_cut(r.answer, floor(#r.answer / 2)), "limit"
  elseif fault == "ctxcut" then   -- the answer ran into the end of the slot: it used all the room
    content, stop_type, r.truncated = utf8_cut(r.answer, floor(#r.answer / 2)), "limit", true
  elseif fault == "pad" then
    local want = budget * 4 - #content
    if want > 0 then content = content .. ("\n" .. (" "):rep(63)):rep(ceil(want / 64)):sub(1, want) end
    stop_type = "limit"
    r.truncated = budget == room
  end
  if r.stop and stop_type == "eos" then -- stop words: cut at the earliest one
    local first
    for _, w in ipairs(r.stop) do
      if type(w) == "string" and w ~= "" then
        local p = content:find(w, 1, true)
        if p and (not first or p < first) then first, word = p, w end
      end
    end
    if first then content, stop_type = content:sub(1, first - 1), "word" else word = "" end
  end
  local n = ntok(content)
  if fault == "ctxcut" then   -- it ran into the end of the slot: prompt + predicted = n_ctx, as llama-server
    n = room > 0 and room or 0
  elseif n > budget then
    content, n, stop_type = utf8_cut(content, budget * 4), budget, "limit"
    r.truncated = budget == room
  end
  r.content, r.predicted_n, r.stop_type, r.stopping_word = content, n, stop_type, word
  return n
end

-- info: cached, prompt_ms, predicted_ms, slot, seq
function M.respond(r, info)
  local prompt_n = r.n_prompt - info.cached
  local pms, gms = info.prompt_ms, info.predicted_ms
  local function per(ms, n) return n > 0 and ms / n or 0 end
  local function rate(ms, n) return ms > 0 and 1000 * n / ms or 0 end
  local timings = obj("cache_n", info.cached, "prompt_n", prompt_n, "prompt_ms", pms,
    "prompt_per_token_ms", per(pms, prompt_n), "prompt_per_second", rate(pms, prompt_n),
    "predicted_n", r.predicted_n, "predicted_ms", gms,
    "predicted_per_token_ms", per(gms, r.predicted_n), "predicted_per_second", rate(gms, r.predicted_n))
  local limited = r.stop_type == "limit"
  -- tokens_cached: what the slot holds afterwards (as llama-server); the reuse is timings.cache_n
  local held = r.n_prompt + r.predicted_n - 1
  if r.kind == "completion" then
    return obj("index", 0, "content", r.content, "tokens", arr({}), "id_slot", info.slot, "stop", true,
      "model", r.model, "tokens_predicted", r.predicted_n, "tokens_evaluated", r.n_prompt,
      "has_new_line", r.content:find("\n", 1, true) ~= nil, "truncated", r.truncated == true,
      "stop_type", r.stop_type, "stopping_word", r.stopping_word, "tokens_cached", held > 0 and held or 0,
      "timings", timings).raw
  end
  local msg = obj("role", "assistant", "content", r.content)
  return obj("choices", arr({ obj("finish_reason", limited and "length" or "stop", "index", 0, "message", msg) }),
    "created", os.time(), "model", r.model, "system_fingerprint", "fake-llama", "object", "chat.completion",
    "usage", obj("completion_tokens", r.predicted_n, "prompt_tokens", r.n_prompt,
      "total_tokens", r.n_prompt + r.predicted_n, "prompt_tokens_details", obj("cached_tokens", info.cached)),
    "id", fmt("chatcmpl-fake%d", info.seq), "timings", timings).raw
end

function M.tokenize(body)
  local req = decode(body)
  if not req then return bad("Failed to parse the request body as JSON") end
  local s = req.content
  if type(s) ~= "string" then return bad('"content" must be a string') end
  local ids = {}
  for i = 1, #s, 4 do -- deterministic ids: a small hash of each 4-byte piece
    local h = 7
    for j = i, math.min(i + 3, #s) do h = (h * 31 + s:byte(j)) % 32000 end
    ids[#ids + 1] = h
  end
  return 200, obj("tokens", arr(ids)).raw
end

-- POST /fake/config {"faults": ["KIND:SHARE[:FIRST_N]", ...], "latency_ms": F, ...}
function M.config(body)
  local c = decode(body)
  if not c then return bad("Failed to parse the request body as JSON") end
  if c.faults ~= nil then
    if type(c.faults) ~= "table" then return bad('"faults" must be an array of strings') end
    for _, f in ipairs(c.faults) do if type(f) ~= "string" then return bad('"faults" must be an array of strings') end end
  end
  for _, k in ipairs({ "latency_ms", "prompt_us_per_token", "gen_us_per_token", "loading_ms" }) do
    if c[k] ~= nil and type(c[k]) ~= "number" then return bad('"' .. k .. '" must be a number') end
  end
  return 200, c
end

-- ---------------------------------------------------------------- counters kept on the Lua side
local by_text, by_path, faults = {}, {}, {}
function M.note_text(t) local n = (by_text[t] or 0) + 1; by_text[t] = n; return n end
function M.note_path(p) by_path[p] = (by_path[p] or 0) + 1 end
function M.note_fault(k) faults[k] = (faults[k] or 0) + 1 end
function M.reset() by_text, by_path, faults = {}, {}, {} end

-- nums: table of C-side counters (slots = list of {id, requests, busy_ms})
function M.stats(nums, with_texts)
  local distinct, maxn, over = 0, 0, 0
  for _, n in pairs(by_text) do
    distinct = distinct + 1
    if n > maxn then maxn = n end
    if n > 1 then over = over + 1 end
  end
  nums.texts_distinct, nums.max_requests_per_text, nums.texts_over_once = distinct, maxn, over
  -- an empty Lua table encodes as {}: right for these maps
  nums.by_path, nums.faults = by_path, faults
  if with_texts then nums.by_text = by_text end
  return cjson.encode(nums)
end

return M
