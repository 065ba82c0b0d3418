-- a policy that raises while loading (policy_dryrun.t: must fail to load with rc 2, naming line 7)
name = "load_raise"
version = "1"
function request(chunk, drawer, ctx) return { path = "/completion", body = { prompt = chunk } } end
function parse(body) return {} end
local limits = nil
local x = limits.max_triples
