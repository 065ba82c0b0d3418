-- Vocabulary: every canonical name, every synonym, camelCase, quotes, negation, unknowns, digits, code.
local root = arg[0]:match("^(.*)tests/lua/[^/]*$") or "./"
package.path = root .. "tests/lua/lib/?.lua;" .. package.path
require "shim"
local t = require "tap"
local vocab = require "vocab"

t.is(#vocab.CANONICAL, 39, "39 canonical names")
t.is(#vocab.default.names, 39, "default vocabulary has the 39 names")
for _, n in ipairs(vocab.CANONICAL) do
    local c, raw = vocab.map(n)
    t.ok(c == n and raw == nil, "canonical " .. n .. " maps to itself, no raw")
end
-- every synonym from the reference
local ref = {
    is = "is_a", was = "is_a", is_a_kind_of = "is_a", belongs_to = "part_of", requires = "depends_on",
    relies_on = "depends_on", authored_by = "created_by", written_by = "created_by", includes = "contains",
    has = "contains", working_on = "works_on", works_with = "works_on", refers_to = "references",
    utilizes = "uses",
}
for k, v in pairs(ref) do
    local c, raw = vocab.map(k)
    t.is(c, v, "synonym " .. k .. " -> " .. v)
    t.is(raw, k, "synonym " .. k .. " keeps raw")
end
for k, v in pairs(vocab.SYNONYMS) do
    t.is(vocab.map(k), v, "table synonym " .. k)
end

local cases = {
    { "worksOn", "works_on", nil },
    { "dependsOn", "depends_on", nil },
    { "isPartOf", "part_of", "isPartOf" },
    { "HTTPUses", "other", "HTTPUses" },
    { '"uses"', "uses", nil },
    { "'depends on'", "depends_on", nil },
    { "`calls`", "calls", nil },
    { "\226\128\156owns\226\128\157", "owns", nil },
    { "Works On", "works_on", nil },
    { "works-on", "works_on", nil },
    { "  works   on  ", "works_on", nil },
    { "works__on", "works_on", nil },
    { "USES", "uses", nil },
    { "uses", "uses", nil },
    { "depend on", "depends_on", "depend on" },
    { "use", "uses", "use" },
    { "not_uses", "not_uses", nil },
    { "does not use", "not_uses", "does not use" },
    { "doesn't use", "not_uses", "doesn't use" },
    { "doesnt_depend_on", "not_depends_on", "doesnt_depend_on" },
    { "does_not_require", "not_depends_on", "does_not_require" },
    { "is not part of", "not_part_of", "is not part of" },
    { "notOwns", "not_owns", nil },
    { "likes", "other", "likes" },
    { "is friends with", "other", "is friends with" },
    { "not_likes", "other", "not_likes" },
    { "使用", nil, "empty predicate" },
}
for _, c in ipairs(cases) do
    local got, raw = vocab.map(c[1])
    t.is(got, c[2], "map " .. c[1])
    t.is(raw, c[3], "raw of " .. c[1])
end

-- digits and code tokens: dropped with a reason (documented decision)
for _, p in ipairs({ "step2", "has_v2_api", "uses3" }) do
    local c, why = vocab.map(p)
    t.ok(c == nil and why:find("digits"), p .. " dropped: " .. tostring(why))
end
for _, p in ipairs({ "appendchild", "fetchone", "getElementById", "foo.bar", "call()", "a->b", "x::y", "=" }) do
    local c, why = vocab.map(p)
    t.ok(c == nil and why and (why:find("code") or why:find("empty")), p .. " dropped: " .. tostring(why))
end
local lax = vocab.new({ digits = "other", code = "other" })
t.is(lax.map("step2"), "other", "digits = other")
t.is(lax.map("fetchone"), "other", "code = other")

-- wrong types
local c, why = vocab.map(42)
t.ok(c == nil and why:find("not a string"), "number predicate rejected")
c, why = vocab.map(nil)
t.ok(c == nil and why:find("not a string"), "nil predicate rejected")
c, why = vocab.map("")
t.ok(c == nil and why:find("empty"), "empty predicate rejected")
c, why = vocab.map(string.rep("x", 300))
t.ok(c == nil and why:find("256"), "long predicate rejected")

-- custom vocabularies
local V = vocab.custom({ likes = { "enjoys", "loves" }, mentors = true })
t.is(V.map("likes"), "likes", "custom name")
t.is(V.map("enjoys"), "likes", "custom synonym")
t.is(V.map("mentors"), "mentors", "custom name without synonyms")
t.is(V.map("uses"), "uses", "custom keeps the defaults")
t.is(#V.names, 41, "custom adds names")
t.is(vocab.map("likes"), "other", "default vocabulary unchanged")
local R = vocab.custom({ imports = { "import" }, calls = true }, { replace = true, strict = true })
t.is(#R.names, 2, "replace: only the given names")
t.is(R.map("import"), "imports", "replace: synonym")
c, why = R.map("uses")
t.ok(c == nil and why:find("not in the vocabulary"), "strict: unknown dropped with reason")
t.is(R.map("does not call"), "not_calls", "negation in a custom vocabulary")
local S = vocab.new({ names = { "a_b" }, synonyms = { ab = "a_b", zz = "nope" } })
t.is(S.map("ab"), "a_b", "synonym into given names")
t.is(S.map("zz"), "other", "synonym to an unknown name ignored")

-- linear time on hostile predicates
local t0 = os.clock()
for _ = 1, 1000 do vocab.map(string.rep("aB-", 80)) end
t.ok(os.clock() - t0 < 1, "1000 long predicates fast")

t.done()
