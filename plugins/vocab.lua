-- vocab — predicate normalisation and the canonical relation vocabulary.
--
--   vocab.normalise(raw) -> key | nil, reason     quotes stripped, camelCase → snake_case, lower case,
--                                                 runs of anything but [a-z0-9_] → "_", "_" collapsed
--   vocab.new(opts) -> V                          a vocabulary; opts:
--        names     list of canonical names        (default: the 39 of MemPalace's mapping pass)
--        synonyms  { key = canonical }            (default: MemPalace's folds plus base verb forms)
--        strict    unknown predicates are dropped with a reason instead of mapped to `other`
--        other     the name for unknown predicates ("other")
--        negations map not_X / does_not_X / doesnt_X / … to not_<canonical X> (default true)
--        digits    "drop" (default) | "other" | "keep": predicates containing digits
--        code      "drop" (default) | "other" | "keep": predicates that look like code tokens
--   V.map(raw) -> canonical, raw_relation_type_or_nil | nil, reason
--        raw_relation_type is the model's predicate (trimmed) when it differs from the canonical name.
--   V.names                                       the canonical list (for a schema enum)
--   V.add(name, {synonym, …})                     extend the vocabulary
--   vocab.custom(map, opts) -> V                  the default vocabulary extended with
--        map = { canonical = {synonyms…} | true }; opts.replace = true starts from an empty one
--   vocab.default                                 the default vocabulary (V)
--   vocab.map(raw)                                vocab.default.map(raw)
--
-- Digits and code tokens: MemPalace's mapping pass dropped them (tokens like `appendchild`,
-- `fetchone`, `step2`): they came from code text and made junk edges. We drop them too, with a
-- reason ("predicate looks like code", "predicate has digits"), so they show in the drop log.

local M = {}

M.CANONICAL = {
    "is_a", "part_of", "contains", "has_property", "depends_on", "uses", "created_by", "creates",
    "provides", "returns", "references", "located_at", "imports", "calls", "implements", "reads",
    "writes", "modifies", "deletes", "adds", "handles", "checks", "matches", "supports", "causes",
    "describes", "owns", "assigned_to", "derived_from", "related_to", "works_on", "runs", "completed",
    "failed", "shows", "sends", "receives", "configures", "mentions",
}

-- MemPalace's folds, then base verb forms (needed for "does not use" → not_uses).
M.SYNONYMS = {
    is = "is_a", was = "is_a", is_a_kind_of = "is_a", is_an = "is_a", are = "is_a", type_of = "is_a",
    belongs_to = "part_of", is_part_of = "part_of",
    requires = "depends_on", relies_on = "depends_on", require = "depends_on", rely_on = "depends_on",
    depend_on = "depends_on", depends_upon = "depends_on",
    authored_by = "created_by", written_by = "created_by",
    includes = "contains", has = "contains", include = "contains", contain = "contains", have = "contains",
    working_on = "works_on", works_with = "works_on", work_on = "works_on",
    refers_to = "references", refer_to = "references", reference = "references",
    utilizes = "uses", use = "uses", utilize = "uses", uses_the = "uses",
    created = "creates", create = "creates",
    own = "owns", owned = "owns",
    call = "calls", called = "calls",
    provide = "provides", returned = "returns", ["return"] = "returns",
    import = "imports", imported = "imports",
    implement = "implements", implemented = "implements",
    read = "reads", write = "writes", wrote = "writes", modify = "modifies", modified = "modifies",
    delete = "deletes", deleted = "deletes", add = "adds", added = "adds",
    handle = "handles", check = "checks", match = "matches", support = "supports",
    cause = "causes", caused = "causes", describe = "describes",
    located_in = "located_at", is_located_at = "located_at", lives_in = "located_at",
    is_assigned_to = "assigned_to", derives_from = "derived_from", is_derived_from = "derived_from",
    is_related_to = "related_to", relates_to = "related_to",
    run = "runs", ran = "runs", complete = "completed", completes = "completed",
    fail = "failed", fails = "failed", show = "shows", send = "sends", sent = "sends",
    receive = "receives", received = "receives", configure = "configures", configured = "configures",
    mention = "mentions", mentioned = "mentions",
}

-- Known code tokens (MemPalace saw these as predicates) and what code looks like.
M.CODE_TOKENS = {
    appendchild = true, fetchone = true, fetchall = true, fetchmany = true, getelementbyid = true,
    addeventlistener = true, queryselector = true, innerhtml = true, setattribute = true,
    getattribute = true, createelement = true, removechild = true, tostring = true, isinstance = true,
    setdefault = true, readlines = true, splitlines = true, startswith = true, endswith = true,
}

local NEGATION_PREFIXES = { "does_not_", "doesnt_", "do_not_", "dont_", "did_not_", "didnt_",
                            "is_not_", "isnt_", "not_", "never_" }

local QUOTES = { '"', "'", "`", "\226\128\156", "\226\128\157", "\226\128\152", "\226\128\153",
                 "\194\171", "\194\187" }

function M.normalise(raw)
    if type(raw) ~= "string" then return nil, "predicate is not a string (" .. type(raw) .. ")" end
    if #raw > 256 then return nil, "predicate longer than 256 bytes" end
    local s = raw
    for _, q in ipairs(QUOTES) do s = s:gsub(q, "", nil) end
    s = s:gsub("(%l)(%u)", "%1_%2"):gsub("(%d)(%u)", "%1_%2"):gsub("(%u)(%u%l)", "%1_%2")
    s = s:lower():gsub("[^%w_]+", "_"):gsub("__+", "_"):gsub("^_", ""):gsub("_$", "")
    if s == "" then return nil, "empty predicate" end
    return s
end

local function looks_like_code(raw, key)
    if raw:find("[%(%)%[%]{}<>=;/\\$#@|]") or raw:find("::", 1, true) or raw:find("->", 1, true)
        or raw:find("%w%.%w") then
        return true
    end
    return M.CODE_TOKENS[(key:gsub("_", ""))] == true
end

function M.new(opts)
    opts = opts or {}
    local V = { names = {}, other = opts.other or "other" }
    local canon, syn = {}, {}
    local digits, code = opts.digits or "drop", opts.code or "drop"
    local negations = opts.negations ~= false

    function V.add(name, synonyms)
        local key = assert(M.normalise(name), "bad vocabulary name")
        if not canon[key] then canon[key] = true; V.names[#V.names + 1] = key end
        for _, s in ipairs(synonyms or {}) do
            local k = M.normalise(s)
            if k then syn[k] = key end
        end
        return V
    end

    for _, n in ipairs(opts.names or M.CANONICAL) do V.add(n) end
    for k, v in pairs(opts.synonyms or (opts.names and {} or M.SYNONYMS)) do
        if canon[v] then syn[k] = v end
    end

    local function lookup(key)
        if canon[key] then return key end
        local v = syn[key]
        if v then return v end
        -- third-person / base forms: "depend_on" ↔ "depends_on", "use" → "uses"
        local head, rest = key:match("^([^_]+)(.*)$")
        if head then
            local alt = head .. "s" .. rest
            if canon[alt] then return alt end
            if head:sub(-1) == "s" then
                alt = head:sub(1, -2) .. rest
                if canon[alt] then return alt end
            end
        end
        return nil
    end

    function V.lookup(raw)
        local key = M.normalise(raw)
        return key and lookup(key) or nil
    end

    function V.map(raw)
        local key, err = M.normalise(raw)
        if not key then return nil, err end
        local shown = raw:gsub("^%s+", ""):gsub("%s+$", "")
        local function result(c)
            if c == key or c == shown then return c, nil end
            return c, shown
        end
        if code ~= "keep" and looks_like_code(raw, key) then
            if code == "drop" then return nil, "predicate looks like code: " .. key end
            return result(V.other)
        end
        if digits ~= "keep" and key:find("%d") then
            if digits == "drop" then return nil, "predicate has digits: " .. key end
            return result(V.other)
        end
        local c = lookup(key)
        if c then return result(c) end
        if negations then
            for _, p in ipairs(NEGATION_PREFIXES) do
                if key:sub(1, #p) == p and #key > #p then
                    local base = lookup(key:sub(#p + 1))
                    if base then return result("not_" .. base) end
                    break
                end
            end
        end
        if opts.strict then return nil, "predicate '" .. key .. "' is not in the vocabulary" end
        return result(V.other)
    end

    return V
end

-- The default vocabulary extended (or replaced, opts.replace) by map = { name = {synonyms} | true }.
function M.custom(map, opts)
    opts = opts or {}
    local V
    if opts.replace then
        V = M.new({ names = {}, synonyms = {}, strict = opts.strict, other = opts.other,
                    digits = opts.digits, code = opts.code, negations = opts.negations })
    else
        V = M.new(opts)
    end
    -- deterministic order: sort the names
    local names = {}
    for k in pairs(map or {}) do names[#names + 1] = k end
    table.sort(names)
    for _, k in ipairs(names) do
        local v = map[k]
        V.add(k, type(v) == "table" and v or nil)
    end
    return V
end

M.default = M.new()
M.map = M.default.map

return M
