-- Test plugin that fails while loading.
local x = nil
return x.field
