-- text — small string helpers the other plugins share.
--
--   text.trim(s) -> s without leading/trailing ASCII whitespace; linear time (no backtracking
--                   pattern), so megabytes of padding cost nothing.
--   text.letters(s, limit) -> how many letters s holds outside markup, counting stops at limit.
--                   A letter is an ASCII letter or any non-ASCII code point outside the blocks of
--                   punctuation, symbols, spaces, combining marks, digits, emoji and private use
--                   listed below — so CJK, Cyrillic, Arabic, Devanagari… count. HTML/XML tags
--                   (`<div class="x">`, `</p>`, `<!-- … -->` openers) and entities (`&nbsp;`,
--                   `&#8212;`) are not text. Invalid UTF-8 bytes are not letters.
--   text.factless(chunk, min_letters) -> reason string when the chunk cannot state a fact (fewer
--                   than min_letters letters, default text.MIN_LETTERS), else nil. chunk is a string
--                   or a table with a `text` field.
--   text.skip(chunk, drawer) -> text.factless(chunk): the host's `skip` hook for a policy that
--                   defines none, so a chunk without text is completed with no LLM request.
local M = {}

local find, sub, byte = string.find, string.sub, string.byte

M.MIN_LETTERS = 3

function M.trim(s)
    local i = find(s, "%S")
    if not i then return "" end
    local j = #s
    while j > i do
        local c = byte(s, j)
        if c == 32 or (c >= 9 and c <= 13) then j = j - 1 else break end
    end
    return sub(s, i, j)
end

-- Non-ASCII code points that are not letters: { first, last } ranges, sorted.
local NOT_LETTER = {
    { 0x0080, 0x00A9 }, { 0x00AB, 0x00B4 }, { 0x00B6, 0x00B9 }, { 0x00BB, 0x00BF },  -- Latin-1 punct.
    { 0x00D7, 0x00D7 }, { 0x00F7, 0x00F7 },
    { 0x02B0, 0x036F },                          -- modifier letters, combining marks
    { 0x0660, 0x0669 }, { 0x06F0, 0x06F9 },      -- Arabic digits
    { 0x0964, 0x096F },                          -- Devanagari danda, digits
    { 0x2000, 0x2BFF },                          -- punctuation, currency, arrows, maths, boxes, dingbats
    { 0x2E00, 0x2E7F },                          -- supplemental punctuation
    { 0x3000, 0x3004 }, { 0x3008, 0x303F },      -- CJK symbols and punctuation (々〆〇 are letters)
    { 0xD800, 0xF8FF },                          -- surrogates, private use
    { 0xFE00, 0xFE6F },                          -- variation selectors, vertical/compat/small forms
    { 0xFEFF, 0xFEFF },                          -- BOM
    { 0xFF00, 0xFF20 }, { 0xFF3B, 0xFF40 }, { 0xFF5B, 0xFF65 },   -- fullwidth punctuation, digits
    { 0xFFE0, 0xFFFF },
    { 0x1D000, 0x1D24F },                        -- musical symbols
    { 0x1F000, 0x1FAFF },                        -- mahjong, cards, emoji, pictographs
    { 0xE0000, 0x10FFFF },                       -- tags, variation selectors, private use planes
}

local function is_letter(cp)
    local lo, hi = 1, #NOT_LETTER
    while lo <= hi do
        local mid = math.floor((lo + hi) / 2)
        local r = NOT_LETTER[mid]
        if cp < r[1] then hi = mid - 1
        elseif cp > r[2] then lo = mid + 1
        else return false end
    end
    return true
end

-- One linear pass; string.find jumps over runs of ASCII punctuation, digits and spaces in C.
function M.letters(s, limit)
    limit = limit or math.huge
    local n, i, len = 0, 1, #s
    while n < limit do
        i = find(s, "[%a<&\128-\255]", i)
        if not i then break end
        local c = byte(s, i)
        if c < 0x80 then
            if c == 60 then                                   -- '<': a tag is not text
                local _, e = find(s, "^</?[%a!?][^<>]*>", i)
                i = e and e + 1 or i + 1
            elseif c == 38 then                               -- '&': an entity is not text
                local _, e = find(s, "^&#?%w+;", i)
                i = e and e + 1 or i + 1
            else
                n = n + 1
                i = i + 1
            end
        else
            local k, cp
            if c >= 0xC2 and c <= 0xDF then k, cp = 1, c - 0xC0
            elseif c >= 0xE0 and c <= 0xEF then k, cp = 2, c - 0xE0
            elseif c >= 0xF0 and c <= 0xF4 then k, cp = 3, c - 0xF0
            else k = -1 end
            for j = 1, k do
                local d = byte(s, i + j)
                if not d or d < 0x80 or d > 0xBF then k = -1; break end
                cp = cp * 64 + (d - 0x80)
            end
            if k < 0 then
                i = i + 1                                     -- invalid byte: not a letter
            else
                if is_letter(cp) then n = n + 1 end
                i = i + k + 1
            end
        end
    end
    return n
end

function M.factless(chunk, min_letters)
    local s = type(chunk) == "table" and chunk.text or chunk
    if type(s) ~= "string" then return nil end
    min_letters = min_letters or M.MIN_LETTERS
    local n = M.letters(s, min_letters)
    if n < min_letters then
        return ("no text to ask about: %d letter%s (fewer than %d)"):format(n, n == 1 and "" or "s", min_letters)
    end
    return nil
end

function M.skip(chunk, drawer)
    return M.factless(chunk)
end

return M
