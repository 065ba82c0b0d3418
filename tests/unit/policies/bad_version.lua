version = { 1 }
function request() return { path = "/x", body = "" } end
function parse() return {} end
