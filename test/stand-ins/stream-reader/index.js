// Test-only empty stand-in: only vhd-lib's optional stream validator loads the real one.
