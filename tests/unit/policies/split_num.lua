split = 3
function request() return { path = "/x", body = "" } end
function parse() return {} end
