// Reading a GGUF file's metadata through ggml's own gguf API (the same parser llama.cpp uses).
// Errors are thrown as std::invalid_argument naming the file and the problem; nothing aborts.
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <variant>
#include <vector>

namespace mcv {

using GgufValue = std::variant<bool, int64_t, double, std::string, std::vector<int64_t>, std::vector<double>,
                               std::vector<std::string>, std::vector<bool>>;

struct GgufTensorInfo {
    std::string name;
    std::string type;         // ggml type name, e.g. "f16", "q8_0"
    std::vector<int64_t> ne;  // ggml order: ne[0] is the contiguous dimension
    uint64_t offset = 0;      // from the start of the data section
    uint64_t nbytes = 0;
};

struct GgufInfo {
    uint32_t version = 0;
    uint64_t data_offset = 0;
    uint64_t file_size = 0;
    std::vector<std::pair<std::string, GgufValue>> kv;  // in file order
    std::vector<GgufTensorInfo> tensors;                // in file order
};

// true when s is well-formed UTF-8 (no overlong forms, no surrogates, nothing above U+10FFFF)
bool valid_utf8(const std::string & s);

// Parses header, key/values and tensor infos; checks every tensor lies inside the file and every string is
// UTF-8 text.
GgufInfo read_gguf_info(const std::string & path);

}  // namespace mcv
