-- Minimal policy: only the required hooks; split and accept use the defaults.
function request(chunk, drawer, ctx)
    return { path = "/completion", body = { prompt = "Extract: " .. chunk, n_predict = 64 } }
end

function parse(body, chunk, drawer)
    local v, err = kgx.json.decode(body)
    if v == nil then return nil, err end
    return v
end
