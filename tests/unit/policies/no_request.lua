function parse(body) return {} end
