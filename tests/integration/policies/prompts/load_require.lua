-- a policy requiring a plugin that does not exist (policy_dryrun.t: load error naming file and line)
name = "load_require"
version = "1"
local nope = require "no_such_plugin"
function request(chunk, drawer, ctx) return { path = "/completion", body = { prompt = chunk } } end
function parse(body) return {} end
