function request() return { path = "/x", body = "" } end
function parse() return {} end
local cfg = nil
local n = cfg.threshold
