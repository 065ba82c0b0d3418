-- text — small string helpers the other plugins share.
--
--   text.trim(s) -> s without leading/trailing ASCII whitespace; linear time (no backtracking
--                   pattern), so megabytes of padding cost nothing.
local M = {}

local find, sub, byte = string.find, string.sub, string.byte

function M.trim(s)
    local i = find(s, "%S")
    if not i then return "" end
    local j = #s
    while j > i do
        local c = byte(s, j)
        if c == 32 or (c >= 9 and c <= 13) then j = j - 1 else break end
    end
    return sub(s, i, j)
end

return M
