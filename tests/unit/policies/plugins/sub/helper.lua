-- Test plugin in a subdirectory (require "sub.helper"); requires another plugin.
local counter = require "counter"
local M = {}
function M.upper(s) return s:upper() end
M.counter = counter
return M
