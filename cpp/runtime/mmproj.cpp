#include "runtime/mmproj.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <initializer_list>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "gguf.h"
#include "runtime/gguf_info.h"

namespace mcv {
namespace {

enum class Kind { vector, matrix, embedding };

std::string shape_str(const int64_t * ne, int n) {
    std::string s = "[";
    for (int i = 0; i < n; ++i) s += (i ? ", " : "") + std::to_string(ne[i]);
    return s + "]";
}

bool type_allowed(ggml_type t, Kind kind) {
    switch (kind) {
        case Kind::vector: return t == GGML_TYPE_F32;
        case Kind::embedding: return t == GGML_TYPE_F32 || t == GGML_TYPE_F16 || t == GGML_TYPE_BF16;
        case Kind::matrix: return t == GGML_TYPE_F32 || t == GGML_TYPE_F16 || t == GGML_TYPE_BF16 || block_quantized(t);
    }
    return false;
}

// Reads keys and tensors of one open GGUF file; every failure names the file.
class Reader {
public:
    Reader(const std::string & path) : path_(path) {
        std::error_code ec;
        file_size_ = std::filesystem::file_size(path, ec);
        if (ec) fail("cannot open (" + ec.message() + ")");
        ggml_context * meta = nullptr;
        gguf_init_params params{/*no_alloc =*/true, /*ctx =*/&meta};
        gguf_.reset(gguf_init_from_file(path.c_str(), params));
        meta_.reset(meta);
        if (!gguf_ || !meta_) fail("not a valid GGUF file (truncated or corrupt header)");
    }

    [[noreturn]] void fail(const std::string & what) const { throw std::invalid_argument(path_ + ": " + what); }

    bool has(const char * key) const { return gguf_find_key(gguf_.get(), key) >= 0; }

    int64_t key_id(const char * key, gguf_type want) const {
        const int64_t id = gguf_find_key(gguf_.get(), key);
        if (id < 0) fail(std::string("missing key '") + key + "'");
        const gguf_type t = gguf_get_kv_type(gguf_.get(), id);
        if (t != want) {
            fail(std::string("key '") + key + "' has type " + gguf_type_name(t) + ", expected " + gguf_type_name(want));
        }
        return id;
    }

    std::string str(const char * key) const {
        std::string s = gguf_get_val_str(gguf_.get(), key_id(key, GGUF_TYPE_STRING));
        if (!valid_utf8(s)) fail(std::string("the value of key '") + key + "' is not valid UTF-8 text");
        return s;
    }
    bool boolean(const char * key) const { return gguf_get_val_bool(gguf_.get(), key_id(key, GGUF_TYPE_BOOL)); }

    float f32(const char * key) const { return gguf_get_val_f32(gguf_.get(), key_id(key, GGUF_TYPE_FLOAT32)); }

    // any integer type, checked against [lo, hi]
    int64_t integer(const char * key, int64_t lo, int64_t hi) const {
        const int64_t id = gguf_find_key(gguf_.get(), key);
        if (id < 0) fail(std::string("missing key '") + key + "'");
        int64_t v = 0;
        switch (gguf_get_kv_type(gguf_.get(), id)) {
            case GGUF_TYPE_UINT8: v = gguf_get_val_u8(gguf_.get(), id); break;
            case GGUF_TYPE_INT8: v = gguf_get_val_i8(gguf_.get(), id); break;
            case GGUF_TYPE_UINT16: v = gguf_get_val_u16(gguf_.get(), id); break;
            case GGUF_TYPE_INT16: v = gguf_get_val_i16(gguf_.get(), id); break;
            case GGUF_TYPE_UINT32: v = gguf_get_val_u32(gguf_.get(), id); break;
            case GGUF_TYPE_INT32: v = gguf_get_val_i32(gguf_.get(), id); break;
            case GGUF_TYPE_UINT64: v = int64_t(std::min<uint64_t>(gguf_get_val_u64(gguf_.get(), id), INT64_MAX)); break;
            case GGUF_TYPE_INT64: v = gguf_get_val_i64(gguf_.get(), id); break;
            default: fail(std::string("key '") + key + "' is not an integer");
        }
        if (v < lo || v > hi) {
            fail(std::string("key '") + key + "' = " + std::to_string(v) + " is outside [" + std::to_string(lo) + ", " +
                 std::to_string(hi) + "]");
        }
        return v;
    }

    // A graph variant: the string key naming one of `options`, from `overrides`, else the file, else `defaults`
    // (absent everywhere: `fallback`).
    template <typename E>
    E choice(const char * key, E fallback, std::initializer_list<std::pair<const char *, E>> options,
             const KeyValues & defaults, const KeyValues & overrides) const {
        std::string value;
        if (auto it = overrides.find(key); it != overrides.end()) {
            value = it->second;
        } else if (has(key)) {
            value = str(key);
        } else if (auto d = defaults.find(key); d != defaults.end()) {
            value = d->second;
        } else {
            return fallback;
        }
        for (const auto & [name, e] : options) {
            if (value == name) return e;
        }
        fail(std::string("unknown ") + key + " '" + value + "'");
    }

    // A bool graph variant, from `overrides`, else the file, else `defaults` ("true" / "false"), else `fallback`.
    bool flag(const char * key, bool fallback, const KeyValues & defaults, const KeyValues & overrides) const {
        const auto text = [&](const std::string & v) {
            if (v != "true" && v != "false")
                fail(std::string("key '") + key + "' must be true or false, not '" + v + "'");
            return v == "true";
        };
        if (auto it = overrides.find(key); it != overrides.end()) return text(it->second);
        if (has(key)) return boolean(key);
        if (auto d = defaults.find(key); d != defaults.end()) return text(d->second);
        return fallback;
    }

    // An integer key from the file, else `defaults` (decimal text), else `fallback`; checked against [lo, hi].
    int64_t integer_or(const char * key, int64_t fallback, int64_t lo, int64_t hi, const KeyValues & defaults) const {
        if (has(key)) return integer(key, lo, hi);
        auto d = defaults.find(key);
        if (d == defaults.end()) return fallback;
        size_t used = 0;
        int64_t v = 0;
        try {
            v = std::stoll(d->second, &used);
        } catch (const std::exception &) {
            used = 0;
        }
        if (used == 0 || used != d->second.size()) {
            fail(std::string("the default of key '") + key + "' is '" + d->second + "', not an integer");
        }
        if (v < lo || v > hi) {
            fail(std::string("the default of key '") + key + "' = " + std::to_string(v) + " is outside [" +
                 std::to_string(lo) + ", " + std::to_string(hi) + "]");
        }
        return v;
    }

    // An array key of integers (any integer type)
    std::vector<int64_t> int_array(const char * key) const {
        const int64_t id = key_id(key, GGUF_TYPE_ARRAY);
        const gguf_type t = gguf_get_arr_type(gguf_.get(), id);
        const size_t n = gguf_get_arr_n(gguf_.get(), id);
        std::vector<int64_t> out(n);
        if (n == 0) return out;
        const void * d = gguf_get_arr_data(gguf_.get(), id);
        for (size_t i = 0; i < n; ++i) {
            switch (t) {
                case GGUF_TYPE_UINT8: out[i] = static_cast<const uint8_t *>(d)[i]; break;
                case GGUF_TYPE_INT8: out[i] = static_cast<const int8_t *>(d)[i]; break;
                case GGUF_TYPE_UINT16: out[i] = static_cast<const uint16_t *>(d)[i]; break;
                case GGUF_TYPE_INT16: out[i] = static_cast<const int16_t *>(d)[i]; break;
                case GGUF_TYPE_UINT32: out[i] = static_cast<const uint32_t *>(d)[i]; break;
                case GGUF_TYPE_INT32: out[i] = static_cast<const int32_t *>(d)[i]; break;
                case GGUF_TYPE_UINT64:
                    out[i] = int64_t(std::min<uint64_t>(static_cast<const uint64_t *>(d)[i], INT64_MAX));
                    break;
                case GGUF_TYPE_INT64: out[i] = static_cast<const int64_t *>(d)[i]; break;
                default: fail(std::string("key '") + key + "' must be an array of integers");
            }
        }
        return out;
    }

    std::array<float, 3> rgb(const char * key) const {
        const int64_t id = key_id(key, GGUF_TYPE_ARRAY);
        if (gguf_get_arr_type(gguf_.get(), id) != GGUF_TYPE_FLOAT32 || gguf_get_arr_n(gguf_.get(), id) != 3) {
            fail(std::string("key '") + key + "' must be an array of 3 float32");
        }
        const auto * d = static_cast<const float *>(gguf_get_arr_data(gguf_.get(), id));
        for (int i = 0; i < 3; ++i) {
            if (!std::isfinite(d[i])) fail(std::string("key '") + key + "' holds a non-finite value");
        }
        return {d[0], d[1], d[2]};
    }

    const ggml_tensor * find(const std::string & name) const { return ggml_get_tensor(meta_.get(), name.c_str()); }

    // The tensor `name` with exactly the dimensions `ne` and a type allowed for `kind`.
    const ggml_tensor * tensor(const std::string & name, std::initializer_list<int64_t> ne, Kind kind) const {
        const ggml_tensor * t = find(name);
        if (!t) fail("missing tensor '" + name + "'");
        check(t, ne, kind);
        return t;
    }

    void check(const ggml_tensor * t, std::initializer_list<int64_t> ne, Kind kind) const {
        int64_t want[GGML_MAX_DIMS] = {1, 1, 1, 1};
        int i = 0;
        for (int64_t v : ne) want[i++] = v;
        for (int d = 0; d < GGML_MAX_DIMS; ++d) {
            if (t->ne[d] != want[d]) {
                fail("tensor '" + std::string(t->name) + "' has shape " + shape_str(t->ne, ggml_n_dims(t)) +
                     ", expected " + shape_str(want, int(ne.size())));
            }
        }
        if (!type_allowed(t->type, kind)) {
            fail("tensor '" + std::string(t->name) + "' has type " + ggml_type_name(t->type) +
                 ", which is not supported here");
        }
    }

    size_t data_offset(const ggml_tensor * t) const {
        const int64_t id = gguf_find_tensor(gguf_.get(), t->name);
        return gguf_get_data_offset(gguf_.get()) + gguf_get_tensor_offset(gguf_.get(), id);
    }

    uint64_t file_size() const { return file_size_; }
    size_t data_section() const { return gguf_get_data_offset(gguf_.get()); }

private:
    std::string path_;
    uint64_t file_size_ = 0;
    gguf_context_ptr gguf_;
    ggml_context_ptr meta_;
};

}  // namespace

VisionModel load_mmproj(const std::string & path, ggml_backend_buffer_type_t buft, bool use_mmap,
                        const KeyValues & defaults, const KeyValues & overrides) {
    Reader r(path);
    VisionModel m;
    m.path = path;
    VisionHParams & hp = m.hp;

    if (r.str("general.architecture") != "clip") r.fail("general.architecture is not 'clip' (not an mmproj file)");
    if (!r.has("clip.has_vision_encoder") || !r.boolean("clip.has_vision_encoder")) r.fail("has no vision encoder");
    // which projectors are accepted is the caller's (the model families' registry); the tensors below must be a
    // SigLIP tower and a resampler, or a SigLIP tower and MiniCPM-V 4.6's mergers ("minicpmv4_6", llama.cpp's type)
    hp.merger = r.has("clip.projector_type") && r.str("clip.projector_type") == "minicpmv4_6" ? Merger::minicpmv4_6
                                                                                              : Merger::resampler;
    const bool v46 = hp.merger == Merger::minicpmv4_6;
    hp.minicpmv_version = r.has("clip.minicpmv_version") ? int(r.integer("clip.minicpmv_version", 0, INT32_MAX)) : 0;
    if (r.has("clip.use_gelu") && !r.boolean("clip.use_gelu")) r.fail("clip.use_gelu is false (SigLIP uses GELU)");
    // the graph's variants, explicit in our files; llama.cpp's lack them and get their family's defaults
    hp.pos_embedding = r.choice("minicpmv_edge.vision.position_embedding", PosEmbedding::buckets,
                                {{"buckets", PosEmbedding::buckets}, {"resampled_grid", PosEmbedding::resampled_grid}},
                                defaults, overrides);
    hp.gelu = r.choice("minicpmv_edge.vision.gelu", Gelu::tanh, {{"tanh", Gelu::tanh}, {"erf", Gelu::erf}}, defaults,
                       overrides);
    const std::initializer_list<std::pair<const char *, PosRule>> rules = {{"navit_2d", PosRule::navit_2d},
                                                                           {"flat_1d", PosRule::flat_1d},
                                                                           {"floor_2d", PosRule::floor_2d},
                                                                           {"nearest_2d", PosRule::nearest_2d}};
    // (4.6's original rule is transformers' get_vision_nearest_position_ids, whatever a family default forgets)
    const PosRule fallback_rule = v46 ? PosRule::nearest_2d : PosRule::navit_2d;
    const PosRule file_rule = r.choice("minicpmv_edge.vision.position_ids", fallback_rule, rules, defaults, {});
    hp.pos_rule = r.choice("minicpmv_edge.vision.position_ids", fallback_rule, rules, defaults, overrides);
    hp.padded_batch = r.flag("minicpmv_edge.vision.padded_batch", false, defaults, overrides);
    if (hp.padded_batch && (file_rule != PosRule::flat_1d || hp.pos_embedding != PosEmbedding::buckets)) {
        r.fail("minicpmv_edge.vision.padded_batch is true, but a padded vision batch goes with 1-D position ids only");
    }
    hp.padded_batch = hp.padded_batch && hp.pos_rule == PosRule::flat_1d;  // (another rule asked for: pieces alone)
    hp.square = r.choice("minicpmv_edge.vision.slicing", false, {{"slices", false}, {"square", true}}, defaults, {});
    hp.key_positions = r.choice("minicpmv_edge.resampler.key_positions", KeyPositions::sincos,
                                {{"sincos", KeyPositions::sincos}, {"stored", KeyPositions::stored}}, defaults, {});
    hp.temporal = r.flag("minicpmv_edge.resampler.temporal", false, defaults, {});
    hp.tower = r.choice("minicpmv_edge.vision.tower", Tower::siglip, {{"siglip", Tower::siglip}, {"eva", Tower::eva}},
                        defaults, {});
    hp.pixels_f16 = r.flag("minicpmv_edge.vision.pixels_f16", false, defaults, {});
    if (hp.tower == Tower::eva &&
        (v46 || hp.pos_embedding != PosEmbedding::resampled_grid || hp.padded_batch || hp.temporal)) {
        r.fail("minicpmv_edge.vision.tower is 'eva', which goes with a resampler, position_embedding "
               "'resampled_grid', no padded batch and no temporal resampler");
    }
    if (v46) {  // the resampler families' variants have no meaning here: refuse rather than ignore them
        if (hp.temporal) r.fail("minicpmv_edge.resampler.temporal does not apply to a minicpmv4_6 file (no resampler)");
        if (hp.pos_embedding != PosEmbedding::buckets)
            r.fail("minicpmv_edge.vision.position_embedding must be 'buckets' in a minicpmv4_6 file");
        if (hp.padded_batch) r.fail("minicpmv_edge.vision.padded_batch must be false in a minicpmv4_6 file");
        if (hp.square) r.fail("minicpmv_edge.vision.slicing must be 'slices' in a minicpmv4_6 file");
        if (hp.key_positions != KeyPositions::sincos)
            r.fail("minicpmv_edge.resampler.key_positions does not apply to a minicpmv4_6 file (no resampler)");
    }
    if (hp.temporal && (hp.key_positions != KeyPositions::sincos || hp.padded_batch)) {
        r.fail("minicpmv_edge.resampler.temporal needs sin-cos key positions and no padded batch");
    }
    if (hp.key_positions == KeyPositions::stored && (!hp.square || hp.padded_batch)) {
        r.fail("minicpmv_edge.resampler.key_positions is 'stored', which needs one square piece per image "
               "(minicpmv_edge.vision.slicing 'square', no padded batch)");
    }
    hp.image_size = int(r.integer("clip.vision.image_size", 14, 8192));
    hp.patch_size = int(r.integer("clip.vision.patch_size", 1, 64));
    hp.n_embd = int(r.integer("clip.vision.embedding_length", 1, 16384));
    hp.n_ff = int(r.integer("clip.vision.feed_forward_length", 1, 65536));
    hp.n_head = int(r.integer("clip.vision.attention.head_count", 1, 256));
    hp.n_layer = int(r.integer("clip.vision.block_count", 1, 256));
    hp.eps = r.f32("clip.vision.attention.layer_norm_epsilon");
    if (!(hp.eps >= 1e-12f && hp.eps <= 1e-2f)) {
        r.fail("clip.vision.attention.layer_norm_epsilon = " + std::to_string(hp.eps) + " is outside [1e-12, 1e-2]");
    }
    if (hp.n_embd % hp.n_head) r.fail("embedding_length is not a multiple of head_count");
    hp.mean = r.rgb("clip.vision.image_mean");
    hp.std = r.rgb("clip.vision.image_std");
    for (float s : hp.std) {
        if (!(s > 0.0f)) r.fail("clip.vision.image_std must be positive");
    }

    const int64_t D = hp.n_embd, F = hp.n_ff, P = hp.patch_size;
    const ggml_tensor * pos = r.find("v.position_embd.weight");
    if (!pos) r.fail("missing tensor 'v.position_embd.weight'");
    // the table's side: our key (4.6 files; llama.cpp's assume 70 and get it as the family default), else the
    // square table's own
    const int64_t grid = r.integer_or("minicpmv_edge.vision.position_grid", 0, 1, 4096, defaults);
    if (grid > 0) {
        if (grid * grid != pos->ne[1]) {
            r.fail("tensor 'v.position_embd.weight' has " + std::to_string(pos->ne[1]) +
                   " rows, but minicpmv_edge.vision.position_grid (or its family default) is " + std::to_string(grid) +
                   " (" + std::to_string(grid * grid) + " rows)");
        }
        hp.pos_side = int(grid);
    } else {
        hp.pos_side = int(std::lround(std::sqrt(double(pos->ne[1]))));
        if (int64_t(hp.pos_side) * hp.pos_side != pos->ne[1]) r.fail("v.position_embd.weight is not a square table");
    }

    // every tensor we use: (destination, file tensor), checked by name, shape and type
    std::vector<std::pair<ggml_tensor **, const ggml_tensor *>> use;
    auto take = [&](ggml_tensor ** dst, const std::string & name, std::initializer_list<int64_t> ne, Kind kind) {
        use.emplace_back(dst, r.tensor(name, ne, kind));
    };
    take(&m.patch_w, "v.patch_embd.weight", {P, P, 3, D}, Kind::embedding);
    take(&m.patch_b, "v.patch_embd.bias", {D}, Kind::vector);
    take(&m.pos_embd, "v.position_embd.weight", {D, pos->ne[1]}, Kind::embedding);
    take(&m.post_ln_w, "v.post_ln.weight", {D}, Kind::vector);
    take(&m.post_ln_b, "v.post_ln.bias", {D}, Kind::vector);
    if (hp.tower == Tower::eva) {
        take(&m.class_embd, "v.class_embd", {D}, Kind::vector);
        take(&m.class_pos, "v.class_position_embd", {D}, Kind::vector);
    }
    m.layers.resize(size_t(hp.n_layer));
    for (int il = 0; il < hp.n_layer; ++il) {
        VisionLayer & L = m.layers[size_t(il)];
        const std::string b = "v.blk." + std::to_string(il) + ".";
        take(&L.ln1_w, b + "ln1.weight", {D}, Kind::vector);
        take(&L.ln1_b, b + "ln1.bias", {D}, Kind::vector);
        take(&L.ln2_w, b + "ln2.weight", {D}, Kind::vector);
        take(&L.ln2_b, b + "ln2.bias", {D}, Kind::vector);
        take(&L.q_w, b + "attn_q.weight", {D, D}, Kind::matrix);
        take(&L.q_b, b + "attn_q.bias", {D}, Kind::vector);
        take(&L.k_w, b + "attn_k.weight", {D, D}, Kind::matrix);
        take(&L.k_b, b + "attn_k.bias", {D}, Kind::vector);
        take(&L.v_w, b + "attn_v.weight", {D, D}, Kind::matrix);
        take(&L.v_b, b + "attn_v.bias", {D}, Kind::vector);
        take(&L.o_w, b + "attn_out.weight", {D, D}, Kind::matrix);
        take(&L.o_b, b + "attn_out.bias", {D}, Kind::vector);
        // The expanding FC reads D values per row. llama.cpp's legacy converter names it ffn_down; detect by shape.
        const ggml_tensor * down = r.find(b + "ffn_down.weight");
        const bool legacy = down && down->ne[0] == D;
        if (legacy) m.legacy_ffn_names = true;
        const std::string fc1 = legacy ? "ffn_down" : "ffn_up", fc2 = legacy ? "ffn_up" : "ffn_down";
        take(&L.fc1_w, b + fc1 + ".weight", {D, F}, Kind::matrix);
        take(&L.fc1_b, b + fc1 + ".bias", {F}, Kind::vector);
        take(&L.fc2_w, b + fc2 + ".weight", {F, D}, Kind::matrix);
        take(&L.fc2_b, b + fc2 + ".bias", {D}, Kind::vector);
    }

    if (v46) {
        // llama.cpp's 4.6 keys (llama.cpp tools/mtmd/clip.cpp): the merge factor per side (4: the insert merger is
        // in the file; 2: a "4x" file without it), the insert layer in the window-attention layer list
        const int64_t scale = r.has("clip.vision.projector.scale_factor")
            ? r.integer("clip.vision.projector.scale_factor", 0, INT32_MAX)
            : int64_t(kDownsample16x);
        if (scale != kDownsample16x && scale != kDownsample4x) {
            r.fail("clip.vision.projector.scale_factor = " + std::to_string(scale) +
                   ": a minicpmv4_6 file has 4 (with the insert merger: 16x and 4x) or 2 (without it: 4x only)");
        }
        hp.has_insert_merger = scale == kDownsample16x;
        if (r.has("clip.vision.wa_layer_indexes")) {
            const std::vector<int64_t> ids = r.int_array("clip.vision.wa_layer_indexes");
            if (ids.size() != 1) {
                r.fail("clip.vision.wa_layer_indexes has " + std::to_string(ids.size()) +
                       " values; a minicpmv4_6 file has one, the insert merger's layer");
            }
            if (ids[0] < 0 || ids[0] >= hp.n_layer) {
                r.fail("clip.vision.wa_layer_indexes = [" + std::to_string(ids[0]) +
                       "]: the insert layer is outside the tower's layers 0 .. " + std::to_string(hp.n_layer - 1));
            }
            hp.insert_layer = int(ids[0]);
        } else if (hp.has_insert_merger) {
            r.fail("missing key 'clip.vision.wa_layer_indexes' (the insert merger's layer)");
        }
        // our default mode (the checkpoint's preprocessor_config.json); the family's default is not used here, since
        // a 4x-only file can only default to 4x
        hp.default_downsample =
            r.choice("minicpmv_edge.vision.downsample_mode", hp.has_insert_merger ? kDownsample16x : kDownsample4x,
                     {{"16x", kDownsample16x}, {"4x", kDownsample4x}}, {}, {});
        if (hp.default_downsample == kDownsample16x && !hp.has_insert_merger) {
            r.fail("minicpmv_edge.vision.downsample_mode is '16x', but the file has no insert merger "
                   "(clip.vision.projector.scale_factor 2: 4x only)");
        }

        const ggml_tensor * out = r.find("mm.down.weight");
        if (!out) r.fail("missing tensor 'mm.down.weight'");
        if (ggml_n_dims(out) != 2 || out->ne[0] != 4 * D || out->ne[1] > 65536) {
            r.fail("tensor 'mm.down.weight' has shape " + shape_str(out->ne, ggml_n_dims(out)) + ", expected [" +
                   std::to_string(4 * D) + ", E] (E: the language model's width)");
        }
        hp.n_out = int(out->ne[1]);
        if (r.has("clip.vision.projection_dim") && r.integer("clip.vision.projection_dim", 0, INT32_MAX) != hp.n_out) {
            r.fail("clip.vision.projection_dim does not match mm.down.weight (" + std::to_string(hp.n_out) + ")");
        }
        const int64_t E = hp.n_out;
        if (hp.has_insert_merger) {
            const std::string b = "v.vit_merger.";
            take(&m.wm_ln_w, b + "ln1.weight", {D}, Kind::vector);
            take(&m.wm_ln_b, b + "ln1.bias", {D}, Kind::vector);
            const char * attn[4] = {"attn_q", "attn_k", "attn_v", "attn_out"};
            ggml_tensor ** wm_w[4] = {&m.wm_q_w, &m.wm_k_w, &m.wm_v_w, &m.wm_o_w};
            ggml_tensor ** wm_b[4] = {&m.wm_q_b, &m.wm_k_b, &m.wm_v_b, &m.wm_o_b};
            for (int i = 0; i < 4; ++i) {
                take(wm_w[i], b + attn[i] + ".weight", {D, D}, Kind::matrix);
                take(wm_b[i], b + attn[i] + ".bias", {D}, Kind::vector);
            }
            take(&m.wm_ds_ln_w, b + "ds_ln.weight", {4 * D}, Kind::vector);
            take(&m.wm_ds_ln_b, b + "ds_ln.bias", {4 * D}, Kind::vector);
            take(&m.wm_ds_up_w, b + "ds_ffn_up.weight", {4 * D, 4 * F}, Kind::matrix);
            take(&m.wm_ds_up_b, b + "ds_ffn_up.bias", {4 * F}, Kind::vector);
            take(&m.wm_ds_down_w, b + "ds_ffn_down.weight", {4 * F, D}, Kind::matrix);
            take(&m.wm_ds_down_b, b + "ds_ffn_down.bias", {D}, Kind::vector);
        }
        take(&m.mg_ln_w, "mm.input_norm.weight", {4 * D}, Kind::vector);
        take(&m.mg_ln_b, "mm.input_norm.bias", {4 * D}, Kind::vector);
        take(&m.mg_up_w, "mm.up.weight", {4 * D, 4 * D}, Kind::matrix);
        take(&m.mg_up_b, "mm.up.bias", {4 * D}, Kind::vector);
        take(&m.mg_down_w, "mm.down.weight", {4 * D, E}, Kind::matrix);
        take(&m.mg_down_b, "mm.down.bias", {E}, Kind::vector);
    } else {
        const ggml_tensor * query = r.find("resampler.query");
        if (!query) r.fail("missing tensor 'resampler.query'");
        hp.n_out = int(query->ne[0]);
        hp.n_query = int(query->ne[1]);
        if (ggml_n_dims(query) != 2 || hp.n_out < 128 || hp.n_out % hp.resampler_heads() || hp.n_query <= 0 ||
            hp.n_query > 4096) {
            r.fail("tensor 'resampler.query' has shape " + shape_str(query->ne, ggml_n_dims(query)) +
                   ", expected [E, Q] with E at least 128 and a multiple of E // 128 (the resampler's heads)");
        }
        if (r.has("clip.minicpmv_query_num") && r.integer("clip.minicpmv_query_num", 0, INT32_MAX) != hp.n_query) {
            r.fail("clip.minicpmv_query_num does not match resampler.query");
        }
        const int64_t E = hp.n_out, Q = hp.n_query;
        take(&m.query, "resampler.query", {E, Q}, Kind::embedding);
        if (r.find("resampler.pos_embed_q")) take(&m.query_pos, "resampler.pos_embed_q", {E, Q}, Kind::embedding);
        if (hp.key_positions == KeyPositions::stored) {
            if (hp.image_size % hp.patch_size) r.fail("clip.vision.image_size is not a multiple of the patch size");
            const int64_t side = hp.image_size / hp.patch_size;
            take(&m.key_pos, "resampler.pos_embed_k", {E, side * side}, Kind::embedding);
        }
        take(&m.kv_w, "resampler.kv.weight", {D, E}, Kind::matrix);
        const char * attn[4] = {"q", "k", "v", "out"};
        ggml_tensor ** attn_w[4] = {&m.attn_q_w, &m.attn_k_w, &m.attn_v_w, &m.attn_o_w};
        ggml_tensor ** attn_b[4] = {&m.attn_q_b, &m.attn_k_b, &m.attn_v_b, &m.attn_o_b};
        for (int i = 0; i < 4; ++i) {
            take(attn_w[i], std::string("resampler.attn.") + attn[i] + ".weight", {E, E}, Kind::matrix);
            take(attn_b[i], std::string("resampler.attn.") + attn[i] + ".bias", {E}, Kind::vector);
        }
        take(&m.ln_q_w, "resampler.ln_q.weight", {E}, Kind::vector);
        take(&m.ln_q_b, "resampler.ln_q.bias", {E}, Kind::vector);
        take(&m.ln_kv_w, "resampler.ln_kv.weight", {E}, Kind::vector);
        take(&m.ln_kv_b, "resampler.ln_kv.bias", {E}, Kind::vector);
        take(&m.ln_post_w, "resampler.ln_post.weight", {E}, Kind::vector);
        take(&m.ln_post_b, "resampler.ln_post.bias", {E}, Kind::vector);
        take(&m.proj_w, "resampler.proj.weight", {E, E}, Kind::matrix);
    }

    // every byte must be inside the file before anything is read
    for (const auto & [dst, t] : use) {
        const uint64_t end = r.data_offset(t) + ggml_nbytes(t);
        if (end > r.file_size()) {
            r.fail("truncated: tensor '" + std::string(t->name) + "' ends at byte " + std::to_string(end) +
                   ", file has " + std::to_string(r.file_size()));
        }
    }

    ggml_init_params ip{ggml_tensor_overhead() * (use.size() + 1), nullptr, /*no_alloc =*/true};
    m.ctx.reset(ggml_init(ip));
    if (!m.ctx) throw std::runtime_error("ggml_init failed");
    for (auto & [dst, t] : use) {
        *dst = ggml_dup_tensor(m.ctx.get(), t);
        ggml_set_name(*dst, t->name);
    }

    // host memory: map the file and point every tensor into it, when every tensor is aligned for the CPU
    const size_t align = 32;  // ggml's CPU tensor alignment
    const size_t base = r.data_section();
    bool mappable = use_mmap && ggml_backend_buft_is_host(buft) && base % align == 0;
    for (const auto & [dst, t] : use) mappable = mappable && r.data_offset(t) % align == 0;
    if (mappable) m.mapping = MappedFile::open(path);
    if (m.mapping && m.mapping->size() < r.file_size()) m.mapping.reset();  // the file shrank since it was read
    if (m.mapping) {
        char * data = const_cast<char *>(m.mapping->data());
        m.weights.reset(ggml_backend_cpu_buffer_from_ptr(data + base, r.file_size() - base));
        for (auto & [dst, t] : use) {
            if (!m.weights ||
                ggml_backend_tensor_alloc(m.weights.get(), *dst, data + r.data_offset(t)) != GGML_STATUS_SUCCESS) {
                throw std::runtime_error(path + ": cannot map tensor '" + std::string(t->name) + "'");
            }
        }
    }
    if (!m.weights) {
        m.weights.reset(ggml_backend_alloc_ctx_tensors_from_buft(m.ctx.get(), buft));
        if (!m.weights) {
            throw std::runtime_error(path + ": cannot allocate the weights on " + ggml_backend_buft_name(buft));
        }
    }
    ggml_backend_buffer_set_usage(m.weights.get(), GGML_BACKEND_BUFFER_USAGE_WEIGHTS);

    std::ifstream f;
    if (!m.mapping) {
        f.open(path, std::ios::binary);
        if (!f) r.fail("cannot open for reading");
    }
    const bool host = ggml_backend_buffer_is_host(m.weights.get());
    std::vector<char> staging;
    for (auto & [dst, t] : use) {
        const size_t n = ggml_nbytes(*dst);
        const char * src = nullptr;
        if (m.mapping) {
            src = m.mapping->data() + r.data_offset(t);  // the tensor's own memory
        } else {
            f.seekg(std::streamoff(r.data_offset(t)));
            char * target = nullptr;
            if (host) {
                target = static_cast<char *>((*dst)->data);
            } else {
                staging.resize(n);
                target = staging.data();
            }
            if (!f.read(target, std::streamsize(n))) r.fail("read error in tensor '" + std::string(t->name) + "'");
            if (!host) ggml_backend_tensor_set(*dst, staging.data(), 0, n);
            src = target;
        }
        if (*dst == m.pos_embd && hp.pos_embedding == PosEmbedding::resampled_grid) {
            // resized per piece on the host: keep an f32 copy of the table
            m.pos_table.resize(size_t(ggml_nelements(t)));
            const auto * traits = ggml_get_type_traits(t->type);
            if (t->type == GGML_TYPE_F32) {
                std::memcpy(m.pos_table.data(), src, n);
            } else {
                traits->to_float(src, m.pos_table.data(), ggml_nelements(t));
            }
        }
    }
    return m;
}

}  // namespace mcv
