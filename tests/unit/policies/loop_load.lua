function request() return { path = "/x", body = "" } end
function parse() return {} end
while true do end
