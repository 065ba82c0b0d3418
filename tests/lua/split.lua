-- Splitter: budgets, boundaries, coverage, overlap, shrink, UTF-8, 1 MB input.
local root = arg[0]:match("^(.*)tests/lua/[^/]*$") or "./"
package.path = root .. "tests/lua/lib/?.lua;" .. package.path
require "shim"
local t = require "tap"
local split = require "split"

local function covers(text, chunks, meta)
    local parts = {}
    for i, c in ipairs(chunks) do parts[i] = c:sub(meta[i].overlap + 1) end
    return table.concat(parts) == text
end
local function max_tokens(chunks)
    local m = 0
    for _, c in ipairs(chunks) do m = math.max(m, kgx.tokens(c)) end
    return m
end
-- every chunk boundary (without overlap) falls after a sentence end or whitespace
local function clean_cuts(chunks, meta)
    for i = 1, #chunks - 1 do
        local body = chunks[i]:sub(meta[i].overlap + 1)
        if not body:find("[%.!?\n]%s*$") then return false, body:sub(-40) end
    end
    return true
end

-- budget arithmetic
local tok, bytes = split.budget({ n_ctx = 1000, n_predict = 200, instruction_tokens = 100, margin = 0 })
t.is(tok, 700, "budget = ctx - instructions - n_predict - margin")
t.is(bytes, 2100, "bytes = tokens * 3")
t.is(split.budget({ n_ctx = 1000, shrink = 1, n_predict = 200, instruction_tokens = 100, margin = 0 }), 400, "shrink: ctx * 0.7")
t.is(split.budget({ n_ctx = 1000, shrink = 2, n_predict = 0, instruction_tokens = 0, margin = 0 }), 490, "shrink 2: ctx * 0.49")
t.is(split.budget({ n_ctx = 100, n_predict = 200 }), 32, "floor at min_tokens")
t.is(split.budget({ n_predict = 0, margin = 0 }), 2048, "default n_ctx 2048")
kgx.config.n_ctx = 4096
t.is(split.budget({ n_predict = 0, margin = 0 }), 4096, "kgx.config.n_ctx used")
kgx.config.n_ctx = 0
t.is(split.budget({ n_ctx = 1000, instructions = string.rep("x", 300), n_predict = 0, margin = 0 }), 900, "instruction text counted")

-- small text: one chunk, unchanged
local small = "Alice works on Apollo. Bob uses Postgres."
local c, m = split.split(small, { n_ctx = 2048 })
t.is_deeply(c, { small }, "within budget: one chunk unchanged")
t.is(m[1].overlap, 0, "no overlap for one chunk")
t.is(#split.split("", {}), 0, "empty text: no chunks")
t.is(#split.split(" \n\t ", {}), 0, "whitespace text: no chunks")

-- paragraphs and sentences
local paras = {}
for i = 1, 40 do
    paras[i] = ("Person%d works on Project%d. It is a long sentence number %d that talks about nothing much at all! Does it end? Yes."):format(i, i, i)
end
local text = table.concat(paras, "\n\n")
local opts = { n_ctx = 400, n_predict = 100, instruction_tokens = 50, margin = 10 }
local budget_tok = split.budget(opts)
c, m = split.split(text, opts)
t.ok(#c > 1, "long text split into " .. #c .. " chunks")
t.ok(covers(text, c, m), "chunks cover the text exactly")
t.ok(max_tokens(c) <= budget_tok, "every chunk within budget (" .. max_tokens(c) .. " <= " .. budget_tok .. ")")
local okc, where = clean_cuts(c, m)
t.ok(okc, "cuts at sentence ends " .. tostring(where))
local whole = true
for _, ch in ipairs(c) do
    for line in ch:gmatch("[^\n]+") do
        if line:find("^Person") and not line:find("Yes%.%s*$") and not line:find("[%.!?]$") then whole = false end
    end
end
t.ok(whole, "no sentence cut in the middle")
-- paragraph preference: a chunk of new text starts at a paragraph start when paragraphs fit
local para_starts = 0
for i = 2, #c do if c[i]:sub(m[i].overlap + 1):find("^Person") then para_starts = para_starts + 1 end end
t.is(para_starts, #c - 1, "cuts at paragraph boundaries when paragraphs fit")
-- overlap: the previous chunk's last sentence
t.ok(m[2].overlap > 0, "overlap present")
t.is(c[2]:sub(1, m[2].overlap), "Yes.\n", "overlap is the last sentence of the previous chunk")

-- one paragraph of many sentences (no blank lines)
local sents = {}
for i = 1, 300 do sents[i] = ("Service%d depends on Database%d."):format(i, i) end
text = table.concat(sents, " ")
c, m = split.split(text, opts)
t.ok(covers(text, c, m), "single paragraph covered")
t.ok(max_tokens(c) <= budget_tok, "single paragraph within budget")
t.ok(clean_cuts(c, m), "single paragraph cut at sentence ends")

-- a sentence longer than the budget: cut at whitespace
local long = string.rep("word ", 2000) .. "end."
c, m = split.split(long, opts)
t.ok(#c > 1 and covers(long, c, m), "long sentence covered")
t.ok(max_tokens(c) <= budget_tok, "long sentence within budget")
local ws = true
for i = 1, #c - 1 do if not c[i]:sub(m[i].overlap + 1):find("%s$") then ws = false end end
t.ok(ws, "long sentence cut at whitespace")

-- no whitespace at all: byte cuts, never inside a UTF-8 sequence
for _, unit in ipairs({ "x", "é", "東", "🚀", "aé東🚀" }) do
    local s = string.rep(unit, 3000)
    c, m = split.split(s, opts)
    local valid = true
    for _, ch in ipairs(c) do if not kgx.utf8_valid(ch) then valid = false end end
    t.ok(#c > 1 and covers(s, c, m), "no-space text covered (" .. unit .. ")")
    t.ok(valid, "every chunk valid UTF-8 (" .. unit .. ")")
    t.ok(max_tokens(c) <= budget_tok, "within budget (" .. unit .. ")")
end

-- CJK / RTL prose with sentence ends
text = string.rep("東京は日本の首都です。 Tokyo is a city. مرحبا بالعالم. ", 300)
c, m = split.split(text, opts)
t.ok(covers(text, c, m), "mixed scripts covered")
local valid = true
for _, ch in ipairs(c) do if not kgx.utf8_valid(ch) then valid = false end end
t.ok(valid, "mixed scripts: valid UTF-8 chunks")

-- shrink makes chunks smaller
text = table.concat(paras, "\n\n")
local c0 = split.split(text, { n_ctx = 2048, n_predict = 256, instruction_tokens = 200 })
local c1 = split.split(text, { n_ctx = 2048, n_predict = 256, instruction_tokens = 200, shrink = 1 })
local c2 = split.split(text, { n_ctx = 2048, n_predict = 256, instruction_tokens = 200, shrink = 2 })
t.ok(#c0 < #c1 and #c1 < #c2, ("shrink: more, smaller chunks (%d < %d < %d)"):format(#c0, #c1, #c2))
t.ok(max_tokens(c1) < max_tokens(c0) and max_tokens(c2) < max_tokens(c1), "shrink: smaller max chunk")

-- overlap disabled
c, m = split.split(text, { n_ctx = 400, n_predict = 100, instruction_tokens = 50, overlap = 0 })
t.is(table.concat(c), text, "overlap = 0: chunks concatenate to the text")

-- CRLF and blank lines with spaces
text = string.rep("Alice works on Apollo.\r\n \r\nBob uses Redis.\r\n", 200)
c, m = split.split(text, opts)
t.ok(covers(text, c, m) and max_tokens(c) <= budget_tok, "CRLF text covered within budget")

-- 1 MB input: fast, covered, within budget
local buf = {}
local n = 0
local i = 0
while n < 1024 * 1024 do
    i = i + 1
    local s
    if i % 7 == 0 then s = "\n\n" elseif i % 13 == 0 then s = string.rep("verylongtoken", 50) .. " "
    else s = ("Team%d uses Tool%d. "):format(i, i) end
    buf[#buf + 1] = s; n = n + #s
end
text = table.concat(buf)
local secs
secs, c, m = t.timed(split.split, text, { n_ctx = 1024, n_predict = 256, instruction_tokens = 200 })
t.ok(secs < 2, ("1 MB split in %.2fs into %d chunks"):format(secs, #c))
t.ok(covers(text, c, m), "1 MB covered")
t.ok(max_tokens(c) <= split.budget({ n_ctx = 1024, n_predict = 256, instruction_tokens = 200 }), "1 MB within budget")
local nl = string.rep("\n", 1024 * 1024) .. "Alice works on Apollo."
secs, c, m = t.timed(split.split, nl, opts)
t.ok(secs < 2 and covers(nl, c, m), ("1 MB of newlines (%.2fs)"):format(secs))
local sp = string.rep(" ", 1024 * 1024) .. "x"
secs, c, m = t.timed(split.split, sp, opts)
t.ok(secs < 2 and covers(sp, c, m), ("1 MB of spaces (%.2fs)"):format(secs))
local dots = string.rep(". ", 512 * 1024)
secs, c, m = t.timed(split.split, dots, opts)
t.ok(secs < 2 and covers(dots, c, m), ("1 MB of sentence ends (%.2fs)"):format(secs))

t.done()
