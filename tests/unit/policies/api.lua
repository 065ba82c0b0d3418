-- The kgx table, exercised from Lua: split(drawer) runs the case named by the document and returns
-- its observations as a list of strings for the C test to compare.
name = "api"
version = "7"

local cases = {}

function cases.json_roundtrip()
    local v = { a = 1.5, b = { 1, 2, 3 }, s = "q\"uo\\te \226\130\172", n = kgx.json.null, t = true }
    local s = kgx.json.encode(v)
    local w, err = kgx.json.decode(s)
    assert(w, err)
    return { tostring(w.a), tostring(#w.b), w.s, tostring(w.n == kgx.json.null), tostring(w.t),
             kgx.json.encode({ 1, 2, 3 }), kgx.json.encode("x"), kgx.json.encode(0.1) }
end

function cases.json_bad()
    local v, err = kgx.json.decode("{bad")
    return { tostring(v), type(err) }
end

function cases.json_deep()
    local v, err = kgx.json.decode(string.rep("[", 100000))
    local v2, err2 = kgx.json.decode(string.rep("[", 500) .. string.rep("]", 500))
    return { tostring(v), type(err), type(v2) }
end

function cases.json_encode_raises()
    local ok, err = pcall(kgx.json.encode, { f = print })
    return { tostring(ok), type(err) }
end

function cases.json_sparse()
    return { kgx.json.encode({ [1] = "a", [1000] = "b" }) }
end

function cases.tokens()
    return { tostring(kgx.tokens("")), tostring(kgx.tokens("a")), tostring(kgx.tokens("abc")),
             tostring(kgx.tokens("abcd")), tostring(kgx.tokens(string.rep("x", 3000))) }
end

function cases.utf8()
    local samples = {
        "plain ascii", "caf\195\169", "\226\130\172 euro", "\240\159\152\128 emoji", "",
        "nul\0byte", "\192\175 overlong", "\224\128\175 overlong3", "\237\160\128 surrogate",
        "\244\144\128\128 too big", "\128 lone continuation", "\195 truncated", "\255",
        "\239\191\191 U+FFFF", "\244\143\191\191 max",
    }
    local out = {}
    for i, s in ipairs(samples) do out[i] = kgx.utf8_valid(s) and "1" or "0" end
    return { table.concat(out) }
end

function cases.config()
    local c = kgx.config
    return { c.model, tostring(c.n_ctx), tostring(c.min_confidence), tostring(c.max_triples),
             c.policy_dir, c.plugins_dir }
end

function cases.log()
    kgx.log("info", "hello from the policy")
    print("printed", 1, nil, true)
    local ok, err = pcall(kgx.log, "loud", "x")
    return { tostring(ok), err }
end

function cases.drawer(drawer)
    return { tostring(drawer.id), tostring(drawer.wing), tostring(drawer.room),
             type(drawer.metadata), drawer.metadata and tostring(drawer.metadata.k) or "-" }
end

function split(drawer, ctx)
    return cases[drawer.document](drawer)
end

function request(chunk) return { path = "/x", body = chunk } end
function parse() return {} end
