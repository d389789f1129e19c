#include "gguf_info.h"

#include <filesystem>
#include <stdexcept>

#include "ggml-cpp.h"
#include "ggml.h"
#include "gguf.h"

namespace mcv {
namespace {

template <typename T>
std::vector<T> read_array(const gguf_context * ctx, int64_t key) {
    const size_t n = gguf_get_arr_n(ctx, key);
    const auto * data = static_cast<const T *>(gguf_get_arr_data(ctx, key));
    return std::vector<T>(data, data + n);
}

template <typename Out, typename In>
std::vector<Out> widen(const std::vector<In> & v) {
    return std::vector<Out>(v.begin(), v.end());
}

GgufValue read_array_value(const gguf_context * ctx, int64_t key) {
    switch (gguf_get_arr_type(ctx, key)) {
        case GGUF_TYPE_UINT8:   return widen<int64_t>(read_array<uint8_t>(ctx, key));
        case GGUF_TYPE_INT8:    return widen<int64_t>(read_array<int8_t>(ctx, key));
        case GGUF_TYPE_UINT16:  return widen<int64_t>(read_array<uint16_t>(ctx, key));
        case GGUF_TYPE_INT16:   return widen<int64_t>(read_array<int16_t>(ctx, key));
        case GGUF_TYPE_UINT32:  return widen<int64_t>(read_array<uint32_t>(ctx, key));
        case GGUF_TYPE_INT32:   return widen<int64_t>(read_array<int32_t>(ctx, key));
        case GGUF_TYPE_UINT64:  return widen<int64_t>(read_array<uint64_t>(ctx, key));
        case GGUF_TYPE_INT64:   return read_array<int64_t>(ctx, key);
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
            for (size_t i = 0; i < n; ++i) out.emplace_back(gguf_get_arr_str(ctx, key, i));
            return out;
        }
        default:
            throw std::invalid_argument(std::string("unsupported array type for key ") + gguf_get_key(ctx, key));
    }
}

GgufValue read_value(const gguf_context * ctx, int64_t key) {
    switch (gguf_get_kv_type(ctx, key)) {
        case GGUF_TYPE_UINT8:   return int64_t(gguf_get_val_u8(ctx, key));
        case GGUF_TYPE_INT8:    return int64_t(gguf_get_val_i8(ctx, key));
        case GGUF_TYPE_UINT16:  return int64_t(gguf_get_val_u16(ctx, key));
        case GGUF_TYPE_INT16:   return int64_t(gguf_get_val_i16(ctx, key));
        case GGUF_TYPE_UINT32:  return int64_t(gguf_get_val_u32(ctx, key));
        case GGUF_TYPE_INT32:   return int64_t(gguf_get_val_i32(ctx, key));
        case GGUF_TYPE_UINT64:  return int64_t(gguf_get_val_u64(ctx, key));
        case GGUF_TYPE_INT64:   return gguf_get_val_i64(ctx, key);
        case GGUF_TYPE_FLOAT32: return double(gguf_get_val_f32(ctx, key));
        case GGUF_TYPE_FLOAT64: return gguf_get_val_f64(ctx, key);
        case GGUF_TYPE_BOOL:    return gguf_get_val_bool(ctx, key);
        case GGUF_TYPE_STRING:  return std::string(gguf_get_val_str(ctx, key));
        case GGUF_TYPE_ARRAY:   return read_array_value(ctx, key);
        default:
            throw std::invalid_argument(std::string("unsupported value type for key ") + gguf_get_key(ctx, key));
    }
}

}  // namespace

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
        info.kv.emplace_back(gguf_get_key(ctx.get(), i), read_value(ctx.get(), i));
    }
    const int64_t n_tensors = gguf_get_n_tensors(ctx.get());
    for (int64_t i = 0; i < n_tensors; ++i) {
        GgufTensorInfo t;
        t.name = gguf_get_tensor_name(ctx.get(), i);
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
