-- Test plugin: module state shows whether the require cache was reset.
local M = { n = 0 }
function M.bump() M.n = M.n + 1; return M.n end
return M
