-- a policy with a syntax error on line 4 (policy_dryrun.t: must fail to load with rc 2)
name = "load_syntax"
version = "1"
function request(chunk, drawer, ctx) return { path = "/completion", body = { prompt = chunk } end
function parse(body) return {} end
