#include "runtime/gguf_info.h"

#include <filesystem>
#include <stdexcept>

#include "ggml-cpp.h"
#include "ggml.h"
#include "gguf.h"

namespace mcv {
namespace {

// a string from the file, checked to be text: every error names the file and where the bytes are
std::string text(const std::string & path, const char * raw, const std::string & where) {
    std::string s(raw);
    if (!valid_utf8(s)) throw std::invalid_argument(path + ": " + where + " is not valid UTF-8 text");
    return s;
}

template <typename T> std::vector<T> read_array(const gguf_context * ctx, int64_t key) {
    const size_t n = gguf_get_arr_n(ctx, key);
    const auto * data = static_cast<const T *>(gguf_get_arr_data(ctx, key));
    return std::vector<T>(data, data + n);
}

template <typename Out, typename In> std::vector<Out> widen(const std::vector<In> & v) {
    return std::vector<Out>(v.begin(), v.end());
}

GgufValue read_array_value(const std::string & path, const gguf_context * ctx, int64_t key) {
    switch (gguf_get_arr_type(ctx, key)) {
        case GGUF_TYPE_UINT8: return widen<int64_t>(read_array<uint8_t>(ctx, key));
        case GGUF_TYPE_INT8: return widen<int64_t>(read_array<int8_t>(ctx, key));
        case GGUF_TYPE_UINT16: return widen<int64_t>(read_array<uint16_t>(ctx, key));
        case GGUF_TYPE_INT16: return widen<int64_t>(read_array<int16_t>(ctx, key));
        case GGUF_TYPE_UINT32: return widen<int64_t>(read_array<uint32_t>(ctx, key));
        case GGUF_TYPE_INT32: return widen<int64_t>(read_array<int32_t>(ctx, key));
        case GGUF_TYPE_UINT64: return widen<int64_t>(read_array<uint64_t>(ctx, key));
        case GGUF_TYPE_INT64: return read_array<int64_t>(ctx, key);
        case GGUF_TYPE_FLOAT32: return widen<double>(read_array<float>(ctx, key));
        case GGUF_TYPE_FLOAT64: return read_array<double>(ctx, key);
        case GGUF_TYPE_BOOL: {
            const auto raw = read_array<int8_t>(ctx, key);
            std::vector<bool> out;
            out.reserve(raw.size());
            for (int8_t b : raw) out.push_back(b != 0);
            return out;
        }
        case GGUF_TYPE_STRING: {
            const size_t n = gguf_get_arr_n(ctx, key);
            std::vector<std::string> out;
            out.reserve(n);
            for (size_t i = 0; i < n; ++i) {
                out.push_back(text(path, gguf_get_arr_str(ctx, key, i),
                                   "item " + std::to_string(i) + " of key '" + gguf_get_key(ctx, key) + "'"));
            }
            return out;
        }
        default: throw std::invalid_argument(path + ": unsupported array type for key " + gguf_get_key(ctx, key));
    }
}

GgufValue read_value(const std::string & path, const gguf_context * ctx, int64_t key) {
    switch (gguf_get_kv_type(ctx, key)) {
        case GGUF_TYPE_UINT8: return int64_t(gguf_get_val_u8(ctx, key));
        case GGUF_TYPE_INT8: return int64_t(gguf_get_val_i8(ctx, key));
        case GGUF_TYPE_UINT16: return int64_t(gguf_get_val_u16(ctx, key));
        case GGUF_TYPE_INT16: return int64_t(gguf_get_val_i16(ctx, key));
        case GGUF_TYPE_UINT32: return int64_t(gguf_get_val_u32(ctx, key));
        case GGUF_TYPE_INT32: return int64_t(gguf_get_val_i32(ctx, key));
        case GGUF_TYPE_UINT64: return int64_t(gguf_get_val_u64(ctx, key));
        case GGUF_TYPE_INT64: return gguf_get_val_i64(ctx, key);
        case GGUF_TYPE_FLOAT32: return double(gguf_get_val_f32(ctx, key));
        case GGUF_TYPE_FLOAT64: return gguf_get_val_f64(ctx, key);
        case GGUF_TYPE_BOOL: return gguf_get_val_bool(ctx, key);
        case GGUF_TYPE_STRING:
            return text(path, gguf_get_val_str(ctx, key),
                        std::string("the value of key '") + gguf_get_key(ctx, key) + "'");
        case GGUF_TYPE_ARRAY: return read_array_value(path, ctx, key);
        default: throw std::invalid_argument(path + ": unsupported value type for key " + gguf_get_key(ctx, key));
    }
}

}  // namespace

bool valid_utf8(const std::string & s) {
    const auto * p = reinterpret_cast<const unsigned char *>(s.data());
    const size_t n = s.size();
    for (size_t i = 0; i < n;) {
        const unsigned c = p[i];
        size_t len = 0;
        unsigned lo = 0x80, hi = 0xBF;  // allowed range of the second byte
        if (c < 0x80) {
            ++i;
            continue;
        } else if (c >= 0xC2 && c <= 0xDF) {
            len = 2;
        } else if (c >= 0xE0 && c <= 0xEF) {
            len = 3;
            if (c == 0xE0) lo = 0xA0;
            if (c == 0xED) hi = 0x9F;
        } else if (c >= 0xF0 && c <= 0xF4) {
            len = 4;
            if (c == 0xF0) lo = 0x90;
            if (c == 0xF4) hi = 0x8F;
        } else {
            return false;
        }
        if (i + len > n || p[i + 1] < lo || p[i + 1] > hi) return false;
        for (size_t k = 2; k < len; ++k) {
            if (p[i + k] < 0x80 || p[i + k] > 0xBF) return false;
        }
        i += len;
    }
    return true;
}

GgufInfo read_gguf_info(const std::string & path) {
    std::error_code ec;
    const auto size = std::filesystem::file_size(path, ec);
    if (ec) {
        throw std::invalid_argument(path + ": cannot open (" + ec.message() + ")");
    }
    ggml_context * meta = nullptr;  // receives one no-alloc tensor per entry, for the shapes
    gguf_init_params params{/*no_alloc =*/true, /*ctx =*/&meta};
    gguf_context_ptr ctx(gguf_init_from_file(path.c_str(), params));
    ggml_context_ptr meta_owner(meta);
    if (!ctx || !meta) {
        throw std::invalid_argument(path + ": not a valid GGUF file (truncated or corrupt header)");
    }
    GgufInfo info;
    info.version = gguf_get_version(ctx.get());
    info.data_offset = gguf_get_data_offset(ctx.get());
    info.file_size = size;
    const int64_t n_kv = gguf_get_n_kv(ctx.get());
    for (int64_t i = 0; i < n_kv; ++i) {
        const std::string key = text(path, gguf_get_key(ctx.get(), i), "key " + std::to_string(i));
        info.kv.emplace_back(key, read_value(path, ctx.get(), i));
    }
    const int64_t n_tensors = gguf_get_n_tensors(ctx.get());
    for (int64_t i = 0; i < n_tensors; ++i) {
        GgufTensorInfo t;
        t.name = text(path, gguf_get_tensor_name(ctx.get(), i), "the name of tensor " + std::to_string(i));
        const ggml_type type = gguf_get_tensor_type(ctx.get(), i);
        t.type = ggml_type_name(type);
        t.offset = gguf_get_tensor_offset(ctx.get(), i);
        t.nbytes = gguf_get_tensor_size(ctx.get(), i);
        if (info.data_offset + t.offset + t.nbytes > size) {
            throw std::invalid_argument(path + ": truncated: tensor '" + t.name + "' ends at byte " +
                                        std::to_string(info.data_offset + t.offset + t.nbytes) + ", file has " +
                                        std::to_string(size));
        }
        const ggml_tensor * tensor = ggml_get_tensor(meta, t.name.c_str());
        for (int d = 0; d < ggml_n_dims(tensor); ++d) t.ne.push_back(tensor->ne[d]);
        info.tensors.push_back(std::move(t));
    }
    return info;
}

}  // namespace mcv
