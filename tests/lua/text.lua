-- text plugin: letters outside markup (any script), factless chunks, the default skip hook.
local root = arg[0]:match("^(.*)tests/lua/[^/]*$") or "./"
package.path = root .. "tests/lua/lib/?.lua;" .. package.path
require "shim"
local t = require "tap"
local text = require "text"

-- trim
t.is(text.trim("  a b \n"), "a b", "trim")
t.is(text.trim(" \t\n "), "", "trim blank")

-- letters: ASCII, other scripts, markup, entities, symbols
local cases = {
    { "", 0 }, { " \n\t\r ", 0 }, { "...!!!---???", 0 }, { "12345 2024-01-01 3.14", 0 },
    { "<div></div><br/><p class=\"x\"></p>", 0 }, { "<!-- comment -->", 0 },
    { "&nbsp;&#8212;&amp;&#x2014;", 0 }, { "```\n{}\n```", 0 }, { "| --- | --- |", 0 },
    { "🎉🎉🎉 ✔ → ≤ € ©", 0 }, { "。、「」！？", 0 }, { "（）：；", 0 }, { "\255\254\253\192", 0 },
    { "１２３", 0 }, { "٣٤٥", 0 },
    { "Bob", 3 }, { "<p>Bob</p>", 3 }, { "李雷用", 3 }, { "Привет", 6 }, { "مرحبا", 5 },
    { "नमस्ते", 6 },   -- vowel signs count too (an undercount would be the risk)
    { "東京タワー", 5 }, { "한국어", 3 }, { "Ωμέγα", 5 }, { "café", 4 },
    { "a < b", 2 }, { "x&y", 2 },
}
for _, c in ipairs(cases) do
    t.is(text.letters(c[1]), c[2], ("letters(%q) = %d"):format(c[1], c[2]))
end
t.is(text.letters(string.rep("abc ", 1000), 3), 3, "counting stops at the limit")

-- factless: fewer than MIN_LETTERS (3) letters; chunk tables with .text too
t.is(text.MIN_LETTERS, 3, "default minimum")
for _, s in ipairs({ "", "   ", "---", "<br/>", "&nbsp;", "42", "Al", "李雷", "🎉", { text = "..." } }) do
    t.ok(text.factless(s), "factless: " .. (type(s) == "table" and "{text=...}" or ("%q"):format(s)))
end
for _, s in ipairs({ "Bob", "Alice works on Apollo.", "李雷用", "東京", { text = "Bob uses Redis" } }) do
    if s ~= "東京" then t.is(text.factless(s), nil, "has text: " .. (type(s) == "table" and "{text=...}" or s)) end
end
t.ok(text.factless("東京"), "two CJK letters are below the minimum")
t.is(text.factless("東京", 2), nil, "a lower minimum keeps them")
t.like(text.factless("<b></b> 1"), "0 letters", "the reason says how many letters")
t.is(text.factless(nil), nil, "no string: not judged")
t.is(text.skip("...", { id = "d" }), text.factless("..."), "skip(chunk, drawer) = factless(chunk)")
t.is(text.skip("Bob uses Redis", { id = "d" }), nil, "skip keeps text")

-- linear time: a megabyte of punctuation and one of unclosed '<' are judged quickly
local t0 = os.clock()
t.ok(text.factless(string.rep("-=*# ", 200000)), "1 MB of punctuation")
t.ok(text.factless(string.rep("<", 1000000)), "1 MB of '<'")
t.ok(text.factless(string.rep("<a", 1) .. string.rep(" ", 1000000)), "an unclosed tag")
t.ok(os.clock() - t0 < 2, ("fast: %.2fs"):format(os.clock() - t0))

t.done()
