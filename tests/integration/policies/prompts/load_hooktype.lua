-- a policy whose hook global has the wrong type (policy_dryrun.t: load error naming the hook)
name = "load_hooktype"
version = "1"
request = 42
function parse(body) return {} end
