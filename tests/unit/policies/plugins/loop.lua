-- Test plugin that requires itself.
return require "loop"
