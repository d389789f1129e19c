#include "runtime/encoder.h"

#include <algorithm>
#include <array>
#include <map>
#include <stdexcept>
#include <string>
#include <vector>

#include "kernels/blas_ops.h"
#include "kernels/int8_attention.h"
#include "runtime/backends.h"
#include "runtime/errors.h"

namespace mcv {
namespace {

constexpr size_t kGraphNodes = 8192;

std::string mode_name(int downsample) {
    return downsample == kDownsample16x ? "16x" : downsample == kDownsample4x ? "4x" : std::to_string(downsample);
}

ggml_backend_dev_t pick_device(const std::string & name) {
    if (name == "cpu") return ggml_backend_dev_by_type(GGML_BACKEND_DEVICE_TYPE_CPU);
    if (name == "auto") {
        if (auto * d = ggml_backend_dev_by_type(GGML_BACKEND_DEVICE_TYPE_GPU)) return d;
        if (auto * d = ggml_backend_dev_by_type(GGML_BACKEND_DEVICE_TYPE_IGPU)) return d;
        return ggml_backend_dev_by_type(GGML_BACKEND_DEVICE_TYPE_CPU);
    }
    if (auto * d = ggml_backend_dev_by_name(name.c_str())) return d;
    std::string known;
    for (size_t i = 0; i < ggml_backend_dev_count(); ++i) {
        known += (i ? ", " : "") + std::string(ggml_backend_dev_name(ggml_backend_dev_get(i)));
    }
    throw std::invalid_argument("unknown device '" + name + "' (available: cpu, auto, " + known + ")");
}

}  // namespace

VisionEncoder::VisionEncoder(const std::string & path, const EncoderOptions & opt) : opt_(opt) {
    if (opt_.n_threads < 1) throw std::invalid_argument("n_threads must be at least 1");
    ggml_backend_dev_t dev = pick_device(opt_.device);
    if (!dev) throw std::runtime_error("no ggml CPU device in this process");
    pool_ = std::make_unique<CpuThreadPool>(opt_.n_threads);
    backend_.reset(ggml_backend_dev_init(dev, nullptr));
    if (!backend_) throw std::runtime_error(std::string("cannot start ggml device ") + ggml_backend_dev_name(dev));
    set_backend_threads(backend_.get(), opt_.n_threads);
    backends_.push_back(backend_.get());
    if (ggml_backend_dev_type(dev) != GGML_BACKEND_DEVICE_TYPE_CPU) {
        cpu_.reset(ggml_backend_dev_init(ggml_backend_dev_by_type(GGML_BACKEND_DEVICE_TYPE_CPU), nullptr));
        if (!cpu_) throw std::runtime_error("cannot start the ggml CPU device");
        set_backend_threads(cpu_.get(), opt_.n_threads);
        backends_.push_back(cpu_.get());
    }
    pool_->attach(cpu_ ? cpu_.get() : backend_.get());

    model_ = load_mmproj(path, ggml_backend_dev_buffer_type(dev), opt_.use_mmap, opt_.key_defaults, opt_.key_overrides);
    const bool on_cpu = ggml_backend_dev_type(dev) == GGML_BACKEND_DEVICE_TYPE_CPU;
    if (opt_.blas && blas_available() && on_cpu) {
        scratch_ = std::make_unique<BlasScratch>(opt_.n_threads);
        mm_.blas = scratch_.get();
    }
    const std::string & int8 = opt_.int8;
    const Int8Isa named = int8_isa_named(int8);
    if (int8 != "auto" && int8 != "on" && named == Int8Isa::none && int8 != "ggml" && int8 != "off") {
        throw std::invalid_argument(
            "int8 must be 'auto', 'on', 'vnni', 'avxvnni', 'avx2', 'i8mm', 'neon', 'ggml' or 'off', not '" + int8 +
            "'");
    }
    if (named != Int8Isa::none) {  // one of our kernels by name: refused where the CPU cannot run it
        isa_ = named;
        if (!int8_isa_available(isa_)) {
            throw std::invalid_argument("int8='" + int8 + "': this CPU or build cannot run our " + int8 +
                                        " kernel (available: " + int8_isa_name(int8_best_isa()) + ")");
        }
    } else if (int8 == "auto" || int8 == "on") {
        isa_ = int8_best_isa();
    }
    if (!on_cpu) isa_ = Int8Isa::none;
    const bool own = isa_ != Int8Isa::none;
    mm_.int8 = on_cpu && (own || int8 == "on" || int8 == "ggml" || (int8 == "auto" && cpu_has_int8_dot()));
    if (own) pack_int8_weights();
    const std::string & attn = opt_.attention;
    if (attn != "auto" && attn != "int8" && attn != "f32") {
        throw std::invalid_argument("attention must be 'auto', 'int8' or 'f32', not '" + attn + "'");
    }
    const bool own_attention = own && int8_attention_available(isa_);  // (ours runs on the x86 kernels)
    if (attn == "int8" && !own_attention) {
        throw std::invalid_argument(std::string("attention='int8': none of our int8 kernels runs attention here (") +
                                    (on_cpu ? "int8='" + int8 + "', our kernel here: " + int8_isa_name(isa_) +
                                             "; the attention runs on the vnni, avxvnni and avx2 ones"
                                            : std::string("the encoder is not on the CPU")) +
                                    ")");
    }
    // auto: for self-attention of 256 tokens or more (the resampler's 64 queries are as fast in f32: packing the
    // keys and values costs what ~100 query rows' products do); "int8": wherever ours takes the shape
    if (attn == "int8") {
        mm_.attention = isa_;
    } else if (attn == "auto" && packed_.size() && own_attention) {
        mm_.attention = isa_;
        mm_.attention_min_queries = 256;
    }

    meta_.resize(ggml_tensor_overhead() * kGraphNodes + ggml_graph_overhead_custom(kGraphNodes, false));
    sched_.reset(ggml_backend_sched_new(backends_.data(), nullptr, int(backends_.size()), kGraphNodes, false, true));
    if (!sched_) throw std::runtime_error("cannot create the ggml scheduler");
    if (opt_.profile) ggml_backend_sched_set_eval_callback(sched_.get(), &VisionEncoder::on_node, this);

    // worst case of an ordinary piece: a square of the slicing resolution plus the rounding margin (a square-only
    // file's pieces are that square exactly; 4.6's have sides in whole 4-patch blocks, and both of its modes are
    // reserved, the buffers growing to the larger)
    const VisionHParams & hp = model_.hp;
    std::vector<std::array<int, 2>> reserve;  // (side, downsample)
    if (hp.merger == Merger::minicpmv4_6) {
        const int side = (hp.image_size / hp.patch_size + 3) / 4 * 4 + 4;
        reserve.push_back({side, kDownsample4x});
        if (hp.has_insert_merger) reserve.push_back({side, kDownsample16x});
    } else {
        reserve.push_back({hp.image_size / hp.patch_size + (hp.square ? 0 : 2), 0});
    }
    for (const auto & [side, mode] : reserve) {
        const EncoderGraph g = build_graph(side, side, 1, side, side, mode);
        if (!ggml_backend_sched_reserve(sched_.get(), g.graph)) {
            throw OutOfMemory(path + ": cannot allocate the vision encoder's compute buffers");
        }
    }
}

int VisionEncoder::resolve_downsample(int downsample) const {
    const VisionHParams & hp = model_.hp;
    if (hp.merger == Merger::resampler) {
        if (downsample != 0) {
            throw std::invalid_argument(model_.path + ": downsample mode " + mode_name(downsample) +
                                        " asked of a resampler file (each piece gives its " +
                                        std::to_string(hp.n_query) + " query rows; the modes are MiniCPM-V 4.6's)");
        }
        return 0;
    }
    if (downsample == 0) return hp.default_downsample;
    if (downsample != kDownsample16x && downsample != kDownsample4x) {
        throw std::invalid_argument("unknown downsample mode " + std::to_string(downsample) + " (" +
                                    std::to_string(kDownsample16x) + ": 16x, " + std::to_string(kDownsample4x) +
                                    ": 4x, 0: the file's default)");
    }
    if (downsample == kDownsample16x && !hp.has_insert_merger) {
        throw std::invalid_argument(model_.path +
                                    ": 16x mode needs the insert merger (v.vit_merger.*), which this file does not "
                                    "have (clip.vision.projector.scale_factor 2: a 4x-only file)");
    }
    return downsample;
}

int64_t VisionEncoder::tokens(int h_patches, int w_patches, int downsample) const {
    const VisionHParams & hp = model_.hp;
    if (h_patches <= 0 || w_patches <= 0) {
        throw std::invalid_argument("a piece of " + std::to_string(w_patches) + "x" + std::to_string(h_patches) +
                                    " patches: sides must be positive");
    }
    const int mode = resolve_downsample(downsample);
    if (hp.merger == Merger::resampler) return hp.n_query;
    if (h_patches % mode || w_patches % mode) {
        throw std::invalid_argument("a piece of " + std::to_string(w_patches) + "x" + std::to_string(h_patches) +
                                    " patches: in " + mode_name(mode) + " mode its sides must be multiples of " +
                                    std::to_string(mode) + " patches (" + std::to_string(mode * hp.patch_size) +
                                    " pixels)");
    }
    return Minicpmv46Graph::tokens(h_patches, w_patches, mode);
}

// The matrices of a block-quantized file, repacked for our int8 kernel. Those the file keeps in f16 / bf16 / f32
// because their rows are not whole 32-blocks (SigLIP's fc2, 4304 wide: ggml cannot store it as q8_0) are
// quantized to q8_0's blocks here, zero-padded, so the whole product chain runs on int8; an f16 file has no
// block-quantized matrix and is left alone. The graphs then use the packed copies and never read the originals.
void VisionEncoder::pack_int8_weights() {
    if (!quantized_file()) return;
    std::vector<const ggml_tensor *> chosen;
    for (const ggml_tensor * t : matrices()) {
        if (block_quantized(t->type) || t->ne[0] % PackedWeight::kBlock != 0) chosen.push_back(t);
    }
    // the originals are not read again: their file pages are let go as each is packed, so that the file and its
    // repacked copy are never both in memory (OmniLMM's q8_0 tower: 4.4 GB each)
    const MappedFile * mapping = model_.mapping.get();
    try {
        packed_.add(chosen, opt_.n_threads, isa_, [mapping](const ggml_tensor * t) {
            if (mapping) mapping->release(t->data, ggml_nbytes(t));
        });
    } catch (const std::bad_alloc &) {
        throw OutOfMemory(model_.path + ": cannot allocate the int8 kernel's repacked weights");
    }
    mm_.packed = &packed_;
}

EncoderGraph VisionEncoder::build_graph(int ph, int pw, int n_batch, int rh, int rw, int downsample, int n_frames) {
    EncoderGraph g;
    ggml_init_params ip{meta_.size(), meta_.data(), /*no_alloc =*/true};
    g.ctx.reset(ggml_init(ip));
    if (!g.ctx) throw std::runtime_error("ggml_init failed");
    ggml_context * ctx = g.ctx.get();
    if (model_.hp.merger == Merger::minicpmv4_6) {
        g.v46 = std::make_unique<Minicpmv46Graph>(ctx, model_, ph, pw, n_batch, downsample, mm_);
        g.out = g.v46->build();
        ggml_set_name(g.out, "embeddings");
        ggml_set_output(g.out);
        g.graph = ggml_new_graph_custom(g.ctx.get(), kGraphNodes, false);
        ggml_build_forward_expand(g.graph, g.out);
        return g;
    }
    g.resampler = std::make_unique<ResamplerGraph>(ctx, model_, rh, rw, n_frames > 0 ? n_batch / n_frames : n_batch,
                                                   mm_, n_frames);
    ggml_tensor * x = nullptr;  // [D, ph * pw, B]
    if (model_.hp.tower == Tower::eva) {
        g.eva = std::make_unique<EvaGraph>(ctx, model_, ph, pw, n_batch, mm_);
        x = g.eva->build();
    } else {
        g.siglip = std::make_unique<SiglipGraph>(ctx, model_, ph, pw, n_batch, mm_);
        x = g.siglip->build();
    }
    if (int64_t(rh) * rw != int64_t(ph) * pw) {  // padded: the resampler reads each piece's own patches (the first)
        x = ggml_cont(ctx, ggml_view_3d(ctx, x, x->ne[0], int64_t(rh) * rw, x->ne[2], x->nb[1], x->nb[2], 0));
    }
    if (n_frames > 0) {  // packed units: each unit's frame-pieces one after another as one key sequence
        if (!ggml_is_contiguous(x)) x = ggml_cont(ctx, x);
        x = ggml_reshape_3d(ctx, x, x->ne[0], x->ne[1] * n_frames, n_batch / n_frames);
    }
    g.out = g.resampler->build(x);
    ggml_set_name(g.out, "embeddings");
    ggml_set_output(g.out);
    g.graph = ggml_new_graph_custom(g.ctx.get(), kGraphNodes, false);
    ggml_build_forward_expand(g.graph, g.out);
    return g;
}

int64_t VisionEncoder::check_piece(const Piece & p, size_t i) const {
    const VisionHParams & hp = model_.hp;
    const std::string what =
        "piece " + std::to_string(i) + " is " + std::to_string(p.width) + "x" + std::to_string(p.height);
    if (!p.chw || p.width <= 0 || p.height <= 0 || p.width % hp.patch_size || p.height % hp.patch_size) {
        throw std::invalid_argument(what + "; sides must be positive multiples of " + std::to_string(hp.patch_size));
    }
    if (hp.square && (p.width != hp.image_size || p.height != hp.image_size)) {
        throw std::invalid_argument(what + "; this model's pieces are " + std::to_string(hp.image_size) + "x" +
                                    std::to_string(hp.image_size));
    }
    const int64_t patches = int64_t(p.width / hp.patch_size) * int64_t(p.height / hp.patch_size);
    if (opt_.max_patches > 0 && patches > opt_.max_patches) {
        throw std::invalid_argument(what + " = " + std::to_string(patches) + " patches, more than max_patches " +
                                    std::to_string(opt_.max_patches));
    }
    return patches;
}

std::vector<float> VisionEncoder::encode_units(const std::vector<Piece> & pieces,
                                               const std::vector<PackedUnit> & units) {
    const std::lock_guard<std::mutex> lock(mu_);
    const VisionHParams & hp = model_.hp;
    if (!hp.temporal || hp.merger != Merger::resampler) {
        throw std::invalid_argument(model_.path +
                                    ": packed frames need the temporal resampler (minicpmv_edge.resampler.temporal, "
                                    "MiniCPM-V 4.5), which this file does not have");
    }
    for (size_t i = 0; i < pieces.size(); ++i) {
        check_piece(pieces[i], i);
        if (pieces[i].pad_to != 0 || pieces[i].downsample != 0) {
            throw std::invalid_argument("piece " + std::to_string(i) + ": packed frames take no pad_to or downsample");
        }
    }
    // units of one frame grid and one frame count share a graph; batches are capped by the tower's attention scores
    std::map<std::array<int, 3>, std::vector<size_t>> groups;
    for (size_t u = 0; u < units.size(); ++u) {
        const PackedUnit & unit = units[u];
        const std::string what = "packed unit " + std::to_string(u);
        if (unit.pieces.empty() || unit.pieces.size() != unit.temporal_ids.size()) {
            throw std::invalid_argument(what + ": needs one temporal id per frame-piece and at least one of them (" +
                                        std::to_string(unit.pieces.size()) + " pieces, " +
                                        std::to_string(unit.temporal_ids.size()) + " ids)");
        }
        int rh = 0, rw = 0;
        for (size_t f = 0; f < unit.pieces.size(); ++f) {
            const size_t i = unit.pieces[f];
            if (i >= pieces.size()) {
                throw std::invalid_argument(what + ": piece index " + std::to_string(i) + " out of range (" +
                                            std::to_string(pieces.size()) + " pieces)");
            }
            if (unit.temporal_ids[f] < -1) {
                throw std::invalid_argument(what + ": temporal id " + std::to_string(unit.temporal_ids[f]) +
                                            " (ids are -1 or more)");
            }
            const int h = pieces[i].height / hp.patch_size, w = pieces[i].width / hp.patch_size;
            if (f == 0) {
                rh = h, rw = w;
            } else if (h != rh || w != rw) {
                throw std::invalid_argument(what + ": its frame-pieces must share one patch grid (" +
                                            std::to_string(rw) + "x" + std::to_string(rh) + " and " +
                                            std::to_string(w) + "x" + std::to_string(h) + " patches)");
            }
        }
        groups[{rh, rw, int(unit.pieces.size())}].push_back(u);
    }
    std::vector<float> out;
    try {
        out.resize(units.size() * size_t(hp.n_query) * size_t(hp.n_out));
    } catch (const std::bad_alloc &) {
        throw OutOfMemory("cannot allocate the embeddings of " + std::to_string(units.size()) + " packed units");
    }
    for (const auto & [grid, index] : groups) {
        const auto [rh, rw, n_frames] = grid;
        const size_t n = size_t(rh) * size_t(rw);
        const size_t scores = n * n * size_t(hp.n_head) * sizeof(float);
        const size_t max_frames = std::max<size_t>(1, opt_.max_batch_bytes / std::max<size_t>(scores, 1));
        const size_t max_u = std::max<size_t>(1, max_frames / size_t(n_frames));
        for (size_t start = 0; start < index.size(); start += max_u) {
            const std::vector<size_t> batch(index.begin() + long(start),
                                            index.begin() + long(std::min(index.size(), start + max_u)));
            run_units(pieces, units, batch, rh, rw, n_frames, out.data());
        }
    }
    return out;
}

void VisionEncoder::allocate(const EncoderGraph & g, const std::string & what) {
    ggml_backend_sched_reset(sched_.get());
    if (!ggml_backend_sched_alloc_graph(sched_.get(), g.graph)) {
        throw OutOfMemory("cannot allocate the vision encoder's compute buffers for " + what);
    }
    if (scratch_) {
        try {
            scratch_->prepare();
        } catch (const std::bad_alloc &) {
            throw OutOfMemory("cannot allocate the BLAS scratch memory (or leave room for OpenBLAS's per-thread "
                              "buffers) for " +
                              what);
        }
    }
    last_node_ = std::chrono::steady_clock::now();
}

void VisionEncoder::run_units(const std::vector<Piece> & pieces, const std::vector<PackedUnit> & units,
                              const std::vector<size_t> & index, int rh, int rw, int n_frames, float * out) {
    const std::string what = std::to_string(index.size()) + " packed unit(s) of " + std::to_string(n_frames) +
        " frame-pieces of " + std::to_string(rw) + "x" + std::to_string(rh) + " patches";
    const EncoderGraph g = build_graph(rh, rw, int(index.size()) * n_frames, rh, rw, 0, n_frames);
    allocate(g, what);
    std::vector<const float *> pixels;
    std::vector<int> ids;
    for (size_t u : index) {
        for (size_t f = 0; f < units[u].pieces.size(); ++f) {
            pixels.push_back(pieces[units[u].pieces[f]].chw);
            ids.push_back(units[u].temporal_ids[f]);
        }
    }
    g.siglip->set_inputs(pixels, model_.hp.pos_rule, rh, rw);
    g.resampler->set_inputs(ids);
    const ggml_status status = ggml_backend_sched_graph_compute(sched_.get(), g.graph);
    if (scratch_ && scratch_->take_failure()) {
        throw std::runtime_error("the vision graph ran a BLAS op without its scratch memory (" + what + ")");
    }
    if (status == GGML_STATUS_ALLOC_FAILED) throw OutOfMemory("the vision graph ran out of memory (" + what + ")");
    if (status != GGML_STATUS_SUCCESS) throw std::runtime_error("the vision graph failed to compute (" + what + ")");
    ++n_evals_;
    const size_t per_unit = size_t(g.out->ne[0]) * size_t(g.out->ne[1]);  // E x Q
    for (size_t b = 0; b < index.size(); ++b) {
        ggml_backend_tensor_get(g.out, out + index[b] * per_unit, b * per_unit * sizeof(float),
                                per_unit * sizeof(float));
    }
}

std::vector<float> VisionEncoder::encode(const std::vector<Piece> & pieces) {
    const std::lock_guard<std::mutex> lock(mu_);
    const VisionHParams & hp = model_.hp;
    std::vector<int> modes(pieces.size());
    std::vector<size_t> offset(pieces.size());  // each piece's first row
    size_t rows = 0;
    for (size_t i = 0; i < pieces.size(); ++i) {
        const Piece & p = pieces[i];
        const int64_t patches = check_piece(p, i);
        if (p.pad_to != 0) {
            if (p.pad_to < patches || (opt_.max_patches > 0 && p.pad_to > opt_.max_patches)) {
                throw std::invalid_argument("piece " + std::to_string(i) + ": pad_to " + std::to_string(p.pad_to) +
                                            " must be between its " + std::to_string(patches) +
                                            " patches and max_patches " + std::to_string(opt_.max_patches));
            }
            if (hp.merger != Merger::resampler || model_.hp.pos_rule != PosRule::flat_1d ||
                model_.hp.pos_embedding != PosEmbedding::buckets) {
                throw std::invalid_argument("padded pieces need the 1-D position rule (a padded-batch file)");
            }
        }
        modes[i] = resolve_downsample(p.downsample);
        int64_t n = 0;
        try {
            n = tokens(p.height / hp.patch_size, p.width / hp.patch_size, modes[i]);
        } catch (const std::invalid_argument & e) {
            throw std::invalid_argument("piece " + std::to_string(i) + " (" + std::to_string(p.width) + "x" +
                                        std::to_string(p.height) + " pixels): " + e.what());
        }
        offset[i] = rows;
        rows += size_t(n);
    }
    std::vector<float> out;
    try {
        out.resize(rows * size_t(hp.n_out));
    } catch (const std::bad_alloc &) {
        throw OutOfMemory("cannot allocate the embeddings of " + std::to_string(pieces.size()) + " pieces");
    }

    // pieces of one tower grid, one own grid and one mode share a graph (a padded piece's tower grid is
    // 1 x pad_to); batches are capped by the size of their attention scores
    std::map<std::array<int, 5>, std::vector<size_t>> groups;
    for (size_t i = 0; i < pieces.size(); ++i) {
        const int rh = pieces[i].height / hp.patch_size, rw = pieces[i].width / hp.patch_size;
        const int pad = pieces[i].pad_to;
        groups[pad ? std::array<int, 5>{1, pad, rh, rw, modes[i]} : std::array<int, 5>{rh, rw, rh, rw, modes[i]}]
            .push_back(i);
    }
    for (const auto & [grid, index] : groups) {
        const auto [ph, pw, rh, rw, mode] = grid;
        const size_t n = size_t(ph) * size_t(pw);
        const size_t scores = n * n * size_t(hp.n_head) * sizeof(float);
        const size_t max_b = std::max<size_t>(1, opt_.max_batch_bytes / std::max<size_t>(scores, 1));
        for (size_t start = 0; start < index.size(); start += max_b) {
            const std::vector<size_t> batch(index.begin() + long(start),
                                            index.begin() + long(std::min(index.size(), start + max_b)));
            run_batch(pieces, batch, offset, ph, pw, rh, rw, mode, out.data());
        }
    }
    return out;
}

void VisionEncoder::run_batch(const std::vector<Piece> & pieces, const std::vector<size_t> & index,
                              const std::vector<size_t> & offset, int ph, int pw, int rh, int rw, int downsample,
                              float * out) {
    const std::string what = std::to_string(index.size()) + " piece(s) of " + std::to_string(rw) + "x" +
        std::to_string(rh) + " patches" +
        (rh * rw != ph * pw ? " padded to " + std::to_string(ph * pw) : std::string()) +
        (downsample ? " in " + mode_name(downsample) + " mode" : std::string());
    const EncoderGraph g = build_graph(ph, pw, int(index.size()), rh, rw, downsample);
    allocate(g, what);
    std::vector<const float *> pixels;
    for (size_t i : index) pixels.push_back(pieces[i].chw);
    if (g.v46) {
        g.v46->set_inputs(pixels, model_.hp.pos_rule);
    } else {
        if (g.eva) {
            g.eva->set_inputs(pixels);
        } else {
            g.siglip->set_inputs(pixels, model_.hp.pos_rule, rh, rw);
        }
        g.resampler->set_inputs();
    }
    const ggml_status status = ggml_backend_sched_graph_compute(sched_.get(), g.graph);
    if (scratch_ && scratch_->take_failure()) {
        throw std::runtime_error("the vision graph ran a BLAS op without its scratch memory (" + what + ")");
    }
    if (status == GGML_STATUS_ALLOC_FAILED) throw OutOfMemory("the vision graph ran out of memory (" + what + ")");
    if (status != GGML_STATUS_SUCCESS) throw std::runtime_error("the vision graph failed to compute (" + what + ")");
    ++n_evals_;
    const size_t per_piece = size_t(g.out->ne[0]) * size_t(g.out->ne[1]);  // E x rows
    for (size_t b = 0; b < index.size(); ++b) {  // straight into the caller's rows (pieces keep their order)
        ggml_backend_tensor_get(g.out, out + offset[index[b]] * size_t(g.out->ne[0]), b * per_piece * sizeof(float),
                                per_piece * sizeof(float));
    }
}

void VisionEncoder::set_max_patches(int64_t n) {
    if (n < 0) throw std::invalid_argument("max_patches must not be negative");
    const std::lock_guard<std::mutex> lock(mu_);
    opt_.max_patches = n;
}

std::map<std::string, double> VisionEncoder::profile() const {
    const std::lock_guard<std::mutex> lock(mu_);
    return profile_ms_;
}

bool VisionEncoder::on_node(ggml_tensor * t, bool ask, void * self) {
    if (ask) return true;  // observe every node: each is computed, then reported here
    auto * enc = static_cast<VisionEncoder *>(self);
    const auto now = std::chrono::steady_clock::now();
    std::string name;  // layer numbers folded: "x v.blk.#.attn_q.weight", "attn-#"
    for (const char * c = t->name; *c; ++c) {
        if (*c >= '0' && *c <= '9') {
            if (name.empty() || name.back() != '#') name += '#';
        } else {
            name += *c;
        }
    }
    enc->profile_ms_[std::string(ggml_op_desc(t)) + ":" + name] +=
        std::chrono::duration<double, std::milli>(now - enc->last_node_).count();
    enc->last_node_ = now;
    return true;
}

std::string VisionEncoder::device_name() const {
    ggml_backend_dev_t dev = ggml_backend_get_device(backend_.get());
    return dev ? ggml_backend_dev_name(dev) : "unknown";
}

size_t VisionEncoder::weights_bytes() const { return ggml_backend_buffer_get_size(model_.weights.get()); }

size_t VisionEncoder::compute_bytes() const {
    size_t total = 0;
    for (ggml_backend_t b : backends_) total += ggml_backend_sched_get_buffer_size(sched_.get(), b);
    return total;
}

std::string VisionEncoder::matmul_summary() const {
    std::map<std::pair<std::string, std::string>, int> groups;  // (weight type, how) -> matrices
    for (const ggml_tensor * t : matrices()) {
        std::string how;
        if (const PackedWeight * p = packed_.find(t)) {
            how = std::string("int8 dot products on our ") + int8_isa_words(p->isa()) + " kernel (" +
                (p->exact() ? "the file's blocks" : "quantized to q8_0 blocks at load") +
                ", repacked at load; activations quantized per block)";
        } else if (mm_.int8 && block_quantized(t->type)) {
            how = "ggml int8 dot products (activations quantized per block)";
        } else if (mm_.blas) {
            how = t->type == GGML_TYPE_F32 ? "OpenBLAS sgemm" : "OpenBLAS sgemm on weights dequantized per row block";
        } else {
            how = "ggml mul_mat on " + device_name();
        }
        ++groups[{ggml_type_name(t->type), how}];
    }
    std::string out;
    for (const auto & [key, n] : groups) {
        out += (out.empty() ? "" : "; ") + key.first + " (" + std::to_string(n) + " matrices): " + key.second;
    }
    out += std::string("; attention: ") +
        (mm_.attention != Int8Isa::none
             ? std::string("our fused int8 attention on the ") + int8_isa_words(mm_.attention) + " kernel (" +
                 (mm_.blas ? "OpenBLAS" : "ggml flash attention") + " below 32 keys" +
                 (mm_.attention_min_queries > 1 ? " or " + std::to_string(mm_.attention_min_queries) + " queries"
                                                : "") +
                 ")"
             : mm_.blas ? "OpenBLAS"
                        : "ggml flash attention");
    out += std::string("; weights: ") + (model_.mapped() ? "memory-mapped" : "in a buffer");
    return out;  // (the CPU's features: cpu_features(), which minicpmv-edge info prints beside this)
}

bool VisionEncoder::quantized_file() const {
    const std::vector<const ggml_tensor *> all = matrices();
    return std::any_of(all.begin(), all.end(), [](const ggml_tensor * t) { return block_quantized(t->type); });
}

std::vector<const ggml_tensor *> VisionEncoder::matrices() const {
    std::vector<const ggml_tensor *> all;
    for (const VisionLayer & L : model_.layers) all.insert(all.end(), {L.q_w, L.k_w, L.v_w, L.o_w, L.fc1_w, L.fc2_w});
    const VisionModel & m = model_;
    all.insert(all.end(), {m.kv_w, m.attn_q_w, m.attn_k_w, m.attn_v_w, m.attn_o_w, m.proj_w});  // resampler
    all.insert(all.end(),
               {m.wm_q_w, m.wm_k_w, m.wm_v_w, m.wm_o_w, m.wm_ds_up_w, m.wm_ds_down_w, m.mg_up_w,
                m.mg_down_w});  // 4.6's insert merger and final merger
    all.erase(std::remove(all.begin(), all.end(), nullptr), all.end());
    return all;
}

}  // namespace mcv
