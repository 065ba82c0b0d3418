-- Entity cleanup and the per-triple filters: every rule and its reason, min_confidence, max_triples.
local root = arg[0]:match("^(.*)tests/lua/[^/]*$") or "./"
package.path = root .. "tests/lua/lib/?.lua;" .. package.path
require "shim"
local t = require "tap"
local entity = require "entity"
local vocab = require "vocab"

local clean_cases = {
    { "  Alice  ", "Alice" },
    { "Alice\t \n Smith", "Alice Smith" },
    { '"Alice"', "Alice" },
    { "'Alice'", "Alice" },
    { "\226\128\156Apollo\226\128\157", "Apollo" },
    { '" \'Apollo\' "', "Apollo" },
    { "O'Brien", "O'Brien" },
    { '"quoted" middle', '"quoted" middle' },
    { "東京", "東京" },
    { "مرحبا", "مرحبا" },
    { "🚀 Rocket", "🚀 Rocket" },
    { "'); MATCH (n) DETACH DELETE n; --", "'); MATCH (n) DETACH DELETE n; --" },
    { "$$ dollar $tag$", "$$ dollar $tag$" },
    { string.rep("é", 256), string.rep("é", 256) },
}
for _, c in ipairs(clean_cases) do
    local got, why = entity.clean(c[1], "subject")
    t.is(got, c[2], "clean " .. c[1] .. (why and (" (" .. why .. ")") or ""))
end

local reject = {
    { 42, "subject is not a string %(number%)" },
    { nil, "subject is not a string %(nil%)" },
    { {}, "subject is not a string %(table%)" },
    { "", "subject is empty" },
    { "   ", "subject is empty" },
    { '""', "subject is empty" },
    { "Al\0ice", "not valid UTF%-8 or contains NUL" },
    { "Al\255ice", "not valid UTF%-8" },
    { "\237\160\128", "not valid UTF%-8" },
    { string.rep("x", 257), "longer than 256 characters" },
    { string.rep("é", 257), "longer than 256 characters" },
    { string.rep("x", 10 * 1024 * 1024), "longer than 256 characters" },
}
for _, c in ipairs(reject) do
    local got, why = entity.clean(c[1], "subject")
    t.ok(got == nil, "reject " .. tostring(c[1]):sub(1, 20))
    t.like(why, c[2], "reason " .. tostring(why))
end
for w in ("it this that they the a an user agent system you i we me us them he she one none"):gmatch("%S+") do
    local got, why = entity.clean(w, "object")
    t.ok(got == nil and why == "object is a stopword: " .. w, "stopword " .. w)
    got, why = entity.clean(" " .. w:upper() .. " ", "object")
    t.ok(got == nil and why:find("stopword"), "stopword case-insensitive " .. w:upper())
end
t.is(entity.clean("The Beatles"), "The Beatles", "stopword only as the whole name")

-- accept
local function tr(s, p, o, c, extra)
    local x = { subject = s, predicate = p, object = o, confidence = c }
    for k, v in pairs(extra or {}) do x[k] = v end
    return x
end
local got, why = entity.accept(tr("  Alice ", "worksOn", '"Apollo"', 0.9), {})
t.is_deeply(got, { subject = "Alice", predicate = "works_on", object = "Apollo", confidence = 0.9 }, "accept normalises")
got = entity.accept(tr("Alice", "likes", "Jazz", 0.9), {})
t.is_deeply(got, { subject = "Alice", predicate = "other", object = "Jazz", confidence = 0.9, raw_relation_type = "likes" }, "unknown -> other, raw kept")
got = entity.accept(tr("Billing", "requires", "Postgres", 0.8), {})
t.is(got.predicate, "depends_on", "synonym mapped")
t.is(got.raw_relation_type, "requires", "synonym raw kept")

local rejects = {
    { tr("Alice", "uses", "alice", 0.9), "subject equals object: Alice" },
    { tr("Alice", "uses", " ALICE ", 0.9), "subject equals object" },
    { tr("it", "uses", "Apollo", 0.9), "subject is a stopword: it" },
    { tr("Alice", "uses", "them", 0.9), "object is a stopword: them" },
    { tr(1, "uses", "Apollo", 0.9), "subject is not a string" },
    { tr("Alice", 7, "Apollo", 0.9), "predicate is not a string" },
    { tr("Alice", "uses", { "x" }, 0.9), "object is not a string" },
    { tr("Alice", "step2", "Apollo", 0.9), "predicate has digits" },
    { tr("Alice", "fetchone", "Apollo", 0.9), "predicate looks like code" },
    { tr("Alice", "uses", "Apollo", 0.3), "^confidence 0.30 < 0.50$" },
    { tr("Alice", "uses", "Apollo", 0.499), "^confidence 0.4990 < 0.5000$" },
    { tr("Alice", "uses", "Apollo", 0.9, { _drop = "over max_triples 10" }), "^over max_triples 10$" },
    { { _drop = "not a triple: string x" }, "^not a triple" },
    { "Alice uses Apollo", "^not a triple %(string%)" },
}
for _, c in ipairs(rejects) do
    local g, w = entity.accept(c[1], {})
    t.ok(g == nil, "rejected: " .. tostring(w))
    t.like(w, c[2], "reason " .. c[2])
end
t.ok(entity.accept(tr("Alice", "uses", "Apollo", 0.5), {}), "confidence = threshold kept")
t.ok(entity.accept(tr("Alice", "uses", "Apollo", 50), {}), "percentage confidence converted")

-- thresholds from kgx.config and opts
kgx.config.min_confidence = 0.8
got, why = entity.accept(tr("Alice", "uses", "Apollo", 0.7), {})
t.is(why, "confidence 0.70 < 0.80", "kgx.config.min_confidence used")
kgx.config.min_confidence = 0.5
got = entity.accept(tr("Alice", "uses", "Apollo", 0.2), {}, { min_confidence = 0.1 })
t.ok(got, "opts.min_confidence wins")
got, why = entity.accept(tr("Alice", "likes", "Jazz", 0.9), {}, { vocab = vocab.new({ strict = true }) })
t.like(why, "not in the vocabulary", "strict vocabulary via opts")

-- max_triples per call
local list = {}
for i = 1, 15 do list[i] = tr("S" .. i, "uses", "O" .. i, 0.9) end
local capped = entity.cap(list, 10)
t.is(#capped, 15, "cap keeps every entry")
local kept, drops = 0, {}
for _, x in ipairs(capped) do
    local g, w = entity.accept(x, {})
    if g then kept = kept + 1 else drops[#drops + 1] = w end
end
t.is(kept, 10, "first 10 kept")
t.is(#drops, 5, "5 dropped")
t.is(drops[1], "over max_triples 10", "drop reason names the cap")
t.is(capped[11].subject, "S11", "dropped triples keep their names for the drop log")
t.is(#entity.cap(list, 20), 15, "under the cap: unchanged")
local huge = {}
for i = 1, 100000 do huge[i] = tr("S", "uses", "O", 0.9) end
local hc = entity.cap(huge, 10)
t.is(#hc, 10 + entity.max_listed_drops + 1, "huge list bounded")
t.like(hc[#hc]._drop, "over max_triples 10: 99890 more triples not listed", "summary drop")
local mixed = entity.cap({ tr("A", "uses", "B", 1), "junk", 3 }, 1)
t.like(mixed[2]._drop, "over max_triples 1", "non-table surplus gets a reason")

t.done()
