-- split — cut a drawer's text into chunks that fit the model's per-slot context.
--
--   split.split(text, opts) -> chunks, meta
--        chunks: list of strings; meta[i] = { overlap = bytes of chunk i repeated from chunk i-1 }.
--        Without the overlap prefixes the chunks concatenate to exactly `text`: nothing is dropped
--        or truncated. A text within budget is one chunk, unchanged; a text of only whitespace is
--        no chunk at all (nothing to ask).
--   split.budget(opts) -> tokens, bytes       the text budget of one chunk
--
-- opts (all optional):
--   n_ctx        per-slot context in tokens (else kgx.config.n_ctx, else M.default_n_ctx = 2048)
--   shrink       count of context-size errors for this drawer: the context is taken as n_ctx·0.7^shrink
--   instructions the fixed prompt text (its tokens are subtracted), or instruction_tokens
--   n_predict    the output reserve in tokens (subtracted)
--   margin       safety margin in tokens (default 16 + 5 % of the context)
--   overlap      max bytes of the previous chunk's last sentence prepended to the next (default:
--                min(400, 15 % of the chunk budget)); 0 disables it
--   min_tokens   floor for the text budget (default 32) when the rest leaves nothing
--   max_tokens   a ceiling for the text budget (ctx.max_tokens: the host re-splits one chunk whose
--                answer was cut at n_predict into pieces of at most this many tokens); sentences are
--                then never cut (a sentence longer than that is a piece of its own)
--   bytes_per_token  3: kgx.tokens counts ceil(bytes/3), so budget·3 bytes fit the budget
--
-- Cuts: at paragraph boundaries (blank lines) first, then sentence ends (. ! ? followed by
-- whitespace, and newlines); a sentence longer than the budget is cut at whitespace, and at bytes
-- as a last resort — never inside a UTF-8 sequence. Linear time: each byte is looked at a bounded
-- number of times (pattern searches move forward only).

local M = {}

M.default_n_ctx = 2048

local find, sub, byte, floor, max, min = string.find, string.sub, string.byte, math.floor, math.max, math.min

local function tokens(s)
    if kgx and kgx.tokens then return kgx.tokens(s) end
    return math.ceil(#s / 3)
end

function M.budget(opts)
    opts = opts or {}
    local n_ctx = tonumber(opts.n_ctx) or 0
    if n_ctx <= 0 then n_ctx = kgx and kgx.config and tonumber(kgx.config.n_ctx) or 0 end
    if n_ctx <= 0 then n_ctx = M.default_n_ctx end
    local shrink = tonumber(opts.shrink) or 0
    local ctx = floor(n_ctx * 0.7 ^ max(shrink, 0) + 1e-6)
    local instr = tonumber(opts.instruction_tokens) or (opts.instructions and tokens(opts.instructions)) or 0
    local reserve = tonumber(opts.n_predict) or 0
    local margin = tonumber(opts.margin) or (16 + floor(ctx * 0.05))
    local t = ctx - instr - reserve - margin
    t = max(t, tonumber(opts.min_tokens) or 32)
    -- the host asks for smaller pieces of one chunk whose answer was cut at n_predict
    local cap = tonumber(opts.max_tokens)
    if cap and cap > 0 then t = min(t, max(floor(cap), 8)) end
    local bpt = tonumber(opts.bytes_per_token) or 3
    return t, t * bpt
end

-- Sentence ends inside [i, j]: calls f(a, b) for each sentence [a, b] (trailing whitespace included).
local function sentences(s, i, j, f)
    local start, pos = i, i
    while pos <= j do
        local p = find(s, "[%.!?\n]", pos)
        if not p or p > j then break end
        local e
        if byte(s, p) == 10 then
            e = p
        else
            local c = byte(s, p + 1)
            if p == j or (c and (c == 32 or (c >= 9 and c <= 13))) then e = p end
        end
        if e then
            local ws = find(s, "[^ \t\r\n\f\v]", e + 1) -- swallow trailing whitespace
            local stop = (ws and ws - 1 or #s)
            if stop > j then stop = j end
            f(start, stop)
            start = stop + 1
            pos = stop + 1
        else
            pos = p + 1
        end
    end
    if start <= j then f(start, j) end
end

-- Paragraphs of s: [a, b] pieces ending after a run of blank lines.
local function paragraphs(s, f)
    local start, n = 1, #s
    while start <= n do
        local a, b = find(s, "\n[ \t\r\f\v]*\n", start)
        if not a then break end
        local ws = find(s, "[^ \t\r\n\f\v]", b + 1)
        local stop = ws and ws - 1 or n
        f(start, stop)
        start = stop + 1
    end
    if start <= n then f(start, n) end
end

-- Is byte position p the start of a UTF-8 character (or past the end)?
local function boundary(s, p)
    local c = byte(s, p)
    return not c or c < 128 or c >= 192
end

function M.split(text, opts)
    opts = opts or {}
    if type(text) ~= "string" then error("split: text must be a string", 2) end
    if not find(text, "%S") then return {}, {} end
    local _, budget = M.budget(opts)
    if #text <= budget then return { text }, { { overlap = 0 } } end

    -- no overlap by default when re-splitting one chunk (max_tokens): halves, not thirds
    local ov_max = tonumber(opts.overlap) or (opts.max_tokens and 0) or min(400, floor(budget * 0.15))
    local limit = budget - ov_max               -- bytes of new text per chunk
    if limit < 16 then limit = budget; ov_max = 0 end

    local pieces = {}                           -- {a, b}: a partition of text, in order
    local cur = 1                               -- first byte not yet in a piece
    local cur_end = 0                           -- current piece is [cur, cur_end] (empty if < cur)
    local function emit()
        if cur_end >= cur then pieces[#pieces + 1] = { cur, cur_end }; cur = cur_end + 1 end
    end
    local function long_sentence(a, b)          -- a sentence longer than the limit
        local pos = a
        while b - pos + 1 > limit do
            local e = pos + limit - 1
            local cut
            local lo = pos + floor(limit / 2)
            for k = e, lo, -1 do                -- whitespace in the second half of the window
                local c = byte(text, k)
                if c == 32 or (c >= 9 and c <= 13) then cut = k; break end
            end
            if not cut then
                cut = e
                while cut > pos and not boundary(text, cut + 1) do cut = cut - 1 end
                if cut == pos and not boundary(text, cut + 1) then cut = e end -- not UTF-8 anyway
            end
            pieces[#pieces + 1] = { pos, cut }
            pos = cut + 1
        end
        cur = pos; cur_end = b
    end
    -- re-splitting one chunk for a smaller answer (max_tokens): a sentence stays whole — half a
    -- sentence states a different fact, or none
    local whole = opts.max_tokens ~= nil or opts.whole_sentences
    local function unit(a, b, finer)
        if b - cur + 1 <= limit then cur_end = b; return end
        emit()
        if b - a + 1 <= limit then cur_end = b; return end
        if finer then finer(a, b) elseif whole then cur_end = b else long_sentence(a, b) end
    end
    paragraphs(text, function(a, b)
        unit(a, b, function(pa, pb)
            sentences(text, pa, pb, function(sa, sb) unit(sa, sb, nil) end)
        end)
    end)
    cur_end = #text
    emit()

    local chunks, meta = {}, {}
    for k, p in ipairs(pieces) do
        local body = sub(text, p[1], p[2])
        local prefix = ""
        if k > 1 and ov_max > 0 then prefix = M.tail(text, pieces[k - 1][1], pieces[k - 1][2], ov_max) end
        chunks[k] = prefix .. body
        meta[k] = { overlap = #prefix }
    end
    return chunks, meta
end

-- The last sentence of text[a..b] if it is at most maxb bytes (else ""), ending in a newline.
function M.tail(text, a, b, maxb)
    local e = b
    while e >= a do                             -- skip trailing whitespace
        local c = byte(text, e)
        if c == 32 or (c >= 9 and c <= 13) then e = e - 1 else break end
    end
    if e < a then return "" end
    local lo = max(a, e - maxb + 1)
    local start
    local last = nil
    sentences(text, lo, e, function(sa) last = sa end)
    start = last
    if start == lo and lo > a then
        -- the window starts mid-sentence unless a sentence ends right before it
        local c = byte(text, lo - 1)
        local ok = c == 10 or ((c == 32 or (c >= 9 and c <= 13)) and find(sub(text, max(a, lo - 2), lo - 1), "[%.!?\n]%s$"))
        if not ok then return "" end
    end
    if not start or not boundary(text, start) then return "" end
    local s = sub(text, start, e)
    s = s:gsub("^%s+", "")
    if s == "" then return "" end
    return s .. "\n"
end

return M
