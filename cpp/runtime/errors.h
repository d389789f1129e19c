// Exceptions that cross into Python with a meaning of their own (bindings.cpp registers the translation).
#pragma once

#include <stdexcept>
#include <string>

namespace mcv {

// An allocation that failed (weights, compute buffers, scratch): becomes Python's MemoryError, with the message.
struct OutOfMemory : std::runtime_error {
    explicit OutOfMemory(const std::string & what) : std::runtime_error(what) {}
};

}  // namespace mcv
