function request()
    return { path = "/x", body = "" }
end

function parse(body
    return {}
end
