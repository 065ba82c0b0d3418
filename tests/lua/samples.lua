-- samples/drawers.jsonl: well-formed, varied, and every drawer runs through both policies with the
-- fake model without errors, yielding facts.
local root = arg[0]:match("^(.*)tests/lua/[^/]*$") or "./"
package.path = root .. "tests/lua/lib/?.lua;" .. package.path
local shim = require "shim"
local t = require "tap"
local e2e = require "e2e"
local cjson = shim.cjson

local drawers, ids, ok_json = {}, {}, true
for line in io.lines(shim.root .. "samples/drawers.jsonl") do
    local okd, d = pcall(cjson.decode, line)
    if not okd or type(d) ~= "table" or type(d.id) ~= "string" or type(d.document) ~= "string" then ok_json = false
    else drawers[#drawers + 1] = d; ids[d.id] = (ids[d.id] or 0) + 1 end
end
t.ok(ok_json, "every line is a drawer object")
t.ok(#drawers >= 100, #drawers .. " drawers")
local dup = false
for _, n in pairs(ids) do if n > 1 then dup = true end end
t.ok(not dup, "ids unique")
local long, hostile = 0, 0
for _, d in ipairs(drawers) do
    if #d.document >= 5 * 1024 then long = long + 1 end
    if d.wing == "hostile" then hostile = hostile + 1 end
end
t.ok(long >= 3, long .. " long drawers")
t.ok(hostile >= 10, hostile .. " hostile drawers")

for _, path in ipairs({ "prompts/default.lua", "prompts/code.lua" }) do
    local P = shim.policy(path)
    local errors, facts, drops, empty = 0, 0, 0, 0
    for _, d in ipairs(drawers) do
        local r = e2e.run(P, d, { n_ctx = 1024 })
        if #r.errors > 0 then errors = errors + 1; t.diag(d.id .. ": " .. r.errors[1]) end
        facts = facts + #r.triples; drops = drops + #r.drops
        if #r.triples == 0 then empty = empty + 1 end
    end
    t.is(errors, 0, path .. ": no drawer fails")
    t.ok(facts > 300, path .. ": " .. facts .. " facts accepted, " .. drops .. " dropped with reasons, " .. empty .. " drawers without facts")
end

t.done()
