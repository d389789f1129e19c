"""Independent references the tests compare against: transformers / torch (the original model's math, from
the original files, docs/sources.md) and llama.cpp's own libmtmd through llama-cpp-python. Test-only code."""
