// minicpmv_edge._core: thin pybind11 bindings; all logic lives in the other files of cpp/.
// std::invalid_argument becomes ValueError and std::runtime_error RuntimeError (pybind11's standard mapping);
// mcv::OutOfMemory (and std::bad_alloc) MemoryError.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstring>
#include <map>
#include <stdexcept>
#include <string>

#include "ggml.h"
#include "kernels/int8_gemm.h"
#include "preprocess/resize.h"
#include "preprocess/resize_torch.h"
#include "preprocess/slicing.h"
#include "runtime/attention_probe.h"
#include "runtime/backends.h"
#include "runtime/cpu_threads.h"
#include "runtime/encoder.h"
#include "runtime/errors.h"
#include "runtime/gguf_info.h"

namespace py = pybind11;

namespace {

using U8Array = py::array_t<uint8_t, py::array::c_style | py::array::forcecast>;
using F32Array = py::array_t<float, py::array::c_style | py::array::forcecast>;

// A view on an [H, W, 3] uint8 array (the array must outlive the view).
mcv::ImageView rgb_view(const U8Array & a) {
    if (a.ndim() != 3 || a.shape(2) != 3) {
        throw std::invalid_argument("expected an RGB image array of shape [height, width, 3], got ndim " +
                                    std::to_string(a.ndim()));
    }
    if (a.shape(0) <= 0 || a.shape(1) <= 0 || a.shape(0) > INT32_MAX / 4 || a.shape(1) > INT32_MAX / 4) {
        throw std::invalid_argument("image size must be positive, got " + std::to_string(a.shape(1)) + "x" +
                                    std::to_string(a.shape(0)));
    }
    return {a.data(), int(a.shape(1)), int(a.shape(0)), size_t(a.strides(0))};
}

// a numpy array of `shape` holding a copy of `v` (whose size must be the product of `shape`)
template <typename T> py::array_t<T> to_array(const std::vector<T> & v, std::vector<py::ssize_t> shape) {
    py::array_t<T> out(std::move(shape));
    std::memcpy(out.mutable_data(), v.data(), v.size() * sizeof(T));
    return out;
}

U8Array to_array(const mcv::ImageU8 & img) {
    return to_array(img.data, {py::ssize_t(img.height), py::ssize_t(img.width), py::ssize_t(3)});
}

py::tuple size_tuple(const mcv::Size & s) { return py::make_tuple(s.width, s.height); }

// "pil" | "torch": Pillow's bicubic or torch's uint8 one (MiniCPM-V 4.6's torchvision processor)
mcv::ResizeKind resize_kind(const std::string & s) {
    if (s == "pil") return mcv::ResizeKind::pil;
    if (s == "torch") return mcv::ResizeKind::torch;
    throw std::invalid_argument("the resize kind must be 'pil' or 'torch', got '" + s + "'");
}

mcv::NormalizeKind normalize_kind(const std::string & s) {
    if (s == "pil") return mcv::NormalizeKind::pil;
    if (s == "torch") return mcv::NormalizeKind::torch;
    throw std::invalid_argument("the normalisation kind must be 'pil' or 'torch', got '" + s + "'");
}

mcv::SliceParams slice_params(int max_slice_nums, int scale_resolution, int patch_size, bool square, int unit,
                              const std::string & resize) {
    return {max_slice_nums, scale_resolution, patch_size, square, unit, resize_kind(resize)};
}

}  // namespace

PYBIND11_MODULE(_core, m) {
    m.doc() = "minicpmv-edge native core, built on llama-cpp-python's ggml";
    if (mcv::load_backend_modules() == 0) {
        throw std::runtime_error("ggml has no backend: llama-cpp-python's ggml was built with loadable backends "
                                 "(GGML_BACKEND_DL) and none was found beside libggml-base");
    }
    py::register_exception_translator([](std::exception_ptr p) {
        try {
            if (p) std::rethrow_exception(p);
        } catch (const mcv::OutOfMemory & e) {
            PyErr_SetString(PyExc_MemoryError, e.what());
        } catch (const std::bad_alloc &) {
            PyErr_SetString(PyExc_MemoryError, "out of memory in minicpmv_edge's native code (std::bad_alloc)");
        }
    });

    py::class_<mcv::DeviceInfo>(m, "DeviceInfo")
        .def_readonly("name", &mcv::DeviceInfo::name)
        .def_readonly("description", &mcv::DeviceInfo::description)
        .def_readonly("kind", &mcv::DeviceInfo::kind)
        .def_readonly("memory_free", &mcv::DeviceInfo::memory_free)
        .def_readonly("memory_total", &mcv::DeviceInfo::memory_total)
        .def("__repr__", [](const mcv::DeviceInfo & d) {
            return "DeviceInfo(name='" + d.name + "', kind='" + d.kind + "', description='" + d.description + "')";
        });

    py::class_<mcv::GgufTensorInfo>(m, "GgufTensorInfo")
        .def_readonly("name", &mcv::GgufTensorInfo::name)
        .def_readonly("type", &mcv::GgufTensorInfo::type)
        .def_readonly("ne", &mcv::GgufTensorInfo::ne)
        .def_readonly("offset", &mcv::GgufTensorInfo::offset)
        .def_readonly("nbytes", &mcv::GgufTensorInfo::nbytes);

    py::class_<mcv::GgufInfo>(m, "GgufInfo")
        .def_readonly("version", &mcv::GgufInfo::version)
        .def_readonly("data_offset", &mcv::GgufInfo::data_offset)
        .def_readonly("file_size", &mcv::GgufInfo::file_size)
        .def_readonly("kv", &mcv::GgufInfo::kv)
        .def_readonly("tensors", &mcv::GgufInfo::tensors);

    py::class_<mcv::SlicePlan>(m, "SlicePlan")
        .def_readonly("sliced", &mcv::SlicePlan::sliced)
        .def_property_readonly("grid",
                               [](const mcv::SlicePlan & p) -> py::object {
                                   return p.sliced ? py::object(py::make_tuple(p.cols, p.rows))
                                                   : py::object(py::none());
                               })
        .def_property_readonly("overview", [](const mcv::SlicePlan & p) { return size_tuple(p.overview); })
        .def_property_readonly("refine", [](const mcv::SlicePlan & p) { return size_tuple(p.refine); })
        .def_property_readonly("cell", [](const mcv::SlicePlan & p) { return size_tuple(p.cell); })
        .def_property_readonly("pieces", [](const mcv::SlicePlan & p) {
            py::list out;
            for (const auto & s : p.pieces()) out.append(size_tuple(s));
            return out;
        });

    m.def(
        "plan_slices",
        [](int width, int height, int max_slice_nums, int scale_resolution, int patch_size, bool square, int unit,
           const std::string & resize) {
            return mcv::plan_slices(width, height,
                                    slice_params(max_slice_nums, scale_resolution, patch_size, square, unit, resize));
        },
        py::arg("width"), py::arg("height"), py::arg("max_slice_nums"), py::arg("scale_resolution"),
        py::arg("patch_size"), py::arg("square") = false, py::arg("unit") = 0, py::arg("resize") = "pil",
        "the slicing plan of a width x height image (sizes only; square: one scale_resolution square; unit: piece "
        "sides are multiples of it, 0: patch_size; resize: 'pil' or 'torch', recorded in the plan)");

    m.def(
        "resize_bicubic",
        [](const U8Array & img, int width, int height, int n_threads, const std::string & kind) {
            const mcv::ImageView v = rgb_view(img);
            const auto resize =
                resize_kind(kind) == mcv::ResizeKind::torch ? mcv::resize_bicubic_torch : mcv::resize_bicubic;
            mcv::ImageU8 out;
            {
                py::gil_scoped_release nogil;
                out = resize(v, width, height, n_threads);
            }
            return to_array(out);
        },
        py::arg("image"), py::arg("width"), py::arg("height"), py::arg("n_threads") = 1, py::arg("kind") = "pil",
        "bicubic resize of an [H, W, 3] uint8 image, bit-exact with Pillow (kind 'pil') or with torch's uint8 "
        "antialiased bicubic (kind 'torch')");

    m.def(
        "slice_pieces",
        [](const U8Array & img, int max_slice_nums, int scale_resolution, int patch_size, int n_threads,
           int64_t max_patches, bool square, int unit, const std::string & resize) {
            const mcv::ImageView v = rgb_view(img);
            const mcv::SliceParams params =
                slice_params(max_slice_nums, scale_resolution, patch_size, square, unit, resize);
            mcv::SlicePlan plan;
            std::vector<mcv::ImageU8> pieces;
            {
                py::gil_scoped_release nogil;
                plan = mcv::plan_slices(v.width, v.height, params);
                mcv::check_patch_limit(plan, v.width, v.height, patch_size,
                                       max_patches);  // before any pixel is resized
                try {
                    pieces = mcv::make_pieces(v, plan, n_threads);
                } catch (const std::bad_alloc &) {
                    throw mcv::OutOfMemory("cannot allocate the resized pieces of a " + std::to_string(v.width) + "x" +
                                           std::to_string(v.height) + " image");
                }
            }
            py::list arrays;
            for (const auto & p : pieces) arrays.append(to_array(p));
            return py::make_tuple(plan, arrays);
        },
        py::arg("image"), py::arg("max_slice_nums"), py::arg("scale_resolution"), py::arg("patch_size"),
        py::arg("n_threads") = 1, py::arg("max_patches") = 0, py::arg("square") = false, py::arg("unit") = 0,
        py::arg("resize") = "pil",
        "(plan, [uint8 pieces]) of an [H, W, 3] uint8 image: overview, then slices (ValueError for a piece of more "
        "than max_patches patches, 0: no limit; square: one scale_resolution square; unit: piece sides are "
        "multiples of it, 0: patch_size; resize: 'pil' (Pillow's bicubic) or 'torch' (torch's uint8 bicubic))");

    m.def(
        "normalize_chw",
        [](const U8Array & piece, std::array<float, 3> mean, std::array<float, 3> std, const std::string & kind) {
            const mcv::ImageView v = rgb_view(piece);
            const std::vector<float> out = mcv::normalize_chw(v, mean, std, normalize_kind(kind));
            return to_array(out, {py::ssize_t(3), py::ssize_t(v.height), py::ssize_t(v.width)});
        },
        py::arg("piece"), py::arg("mean"), py::arg("std"), py::arg("kind") = "pil",
        "float32 [3, H, W] normalised pixels (kind 'pil': (x / 255 - mean) / std, the rescale in float64; 'torch': "
        "(x - mean * 255) / (std * 255) in float32, as transformers' torchvision backend)");

    py::enum_<mcv::PosRule>(m, "PosRule")
        .value("navit_2d", mcv::PosRule::navit_2d)
        .value("flat_1d", mcv::PosRule::flat_1d)
        .value("floor_2d", mcv::PosRule::floor_2d)
        .value("nearest_2d", mcv::PosRule::nearest_2d);

    m.def(
        "position_ids",
        [](int h, int w, int side, mcv::PosRule rule) {
            const std::vector<int32_t> ids = mcv::position_ids(h, w, side, rule);
            return to_array(ids, {py::ssize_t(ids.size())});
        },
        py::arg("h"), py::arg("w"), py::arg("side"), py::arg("rule"), "rows of the position table for h x w patches");

    m.def(
        "sincos_2d",
        [](int dim, int h, int w) {
            if (dim <= 0 || dim % 4 || h <= 0 || w <= 0) throw std::invalid_argument("sincos_2d: bad sizes");
            const std::vector<float> v = mcv::sincos_2d(dim, h, w);
            return to_array(v, {py::ssize_t(h) * w, py::ssize_t(dim)});
        },
        py::arg("dim"), py::arg("h"), py::arg("w"), "the resampler's key position code, [h*w, dim]");

    py::class_<mcv::VisionEncoder>(m, "VisionEncoder")
        .def(py::init([](const std::string & path, int n_threads, const std::string & device,
                         const mcv::KeyValues & key_defaults, const mcv::KeyValues & key_overrides,
                         size_t max_batch_bytes, bool profile, bool blas, int64_t max_patches, bool use_mmap,
                         const std::string & int8, const std::string & attention) {
                 mcv::EncoderOptions opt;
                 opt.attention = attention;
                 opt.use_mmap = use_mmap;
                 opt.int8 = int8;
                 opt.profile = profile;
                 opt.blas = blas;
                 opt.n_threads = n_threads;
                 opt.device = device;
                 opt.key_defaults = key_defaults;
                 opt.key_overrides = key_overrides;
                 opt.max_batch_bytes = max_batch_bytes;
                 opt.max_patches = max_patches;
                 py::gil_scoped_release nogil;
                 return std::make_unique<mcv::VisionEncoder>(path, opt);
             }),
             py::arg("path"), py::arg("n_threads"), py::arg("device"), py::arg("key_defaults") = mcv::KeyValues{},
             py::arg("key_overrides") = mcv::KeyValues{}, py::arg("max_batch_bytes") = size_t(256) << 20,
             py::arg("profile") = false, py::arg("blas") = true, py::arg("max_patches") = 0, py::arg("use_mmap") = true,
             py::arg("int8") = "auto", py::arg("attention") = "auto")
        .def(
            "encode",
            [](mcv::VisionEncoder & enc,
               const std::vector<py::array_t<float, py::array::c_style | py::array::forcecast>> & arrays, int pad_to,
               int downsample) {
                std::vector<mcv::Piece> pieces;
                for (size_t i = 0; i < arrays.size(); ++i) {
                    const auto & a = arrays[i];
                    if (a.ndim() != 3 || a.shape(0) != 3 || a.shape(1) > INT32_MAX || a.shape(2) > INT32_MAX) {
                        throw std::invalid_argument("piece " + std::to_string(i) + ": expected float32 [3, H, W]");
                    }
                    pieces.push_back({a.data(), int(a.shape(2)), int(a.shape(1)), pad_to, downsample});
                }
                std::vector<float> out;
                {
                    py::gil_scoped_release nogil;
                    out = enc.encode(pieces);
                }
                const py::ssize_t width = enc.hparams().n_out;
                return to_array(out, {py::ssize_t(out.size()) / width, width});
            },
            py::arg("pieces"), py::arg("pad_to") = 0, py::arg("downsample") = 0,
            "float32 [rows, E] embeddings of float32 [3, H, W] pieces, each piece's rows in order; pad_to > 0: a "
            "padded batch of that length; downsample (MiniCPM-V 4.6): 4 = 16x, 2 = 4x, 0 = the file's default")
        .def(
            "encode_units",
            [](mcv::VisionEncoder & enc,
               const std::vector<py::array_t<float, py::array::c_style | py::array::forcecast>> & arrays,
               const std::vector<std::pair<std::vector<size_t>, std::vector<int>>> & units) {
                std::vector<mcv::Piece> pieces;
                for (size_t i = 0; i < arrays.size(); ++i) {
                    const auto & a = arrays[i];
                    if (a.ndim() != 3 || a.shape(0) != 3 || a.shape(1) > INT32_MAX || a.shape(2) > INT32_MAX) {
                        throw std::invalid_argument("piece " + std::to_string(i) + ": expected float32 [3, H, W]");
                    }
                    pieces.push_back({a.data(), int(a.shape(2)), int(a.shape(1)), 0, 0});
                }
                std::vector<mcv::PackedUnit> packed;
                for (const auto & [index, ids] : units) packed.push_back({index, ids});
                std::vector<float> out;
                {
                    py::gil_scoped_release nogil;
                    out = enc.encode_units(pieces, packed);
                }
                const py::ssize_t width = enc.hparams().n_out;
                return to_array(out, {py::ssize_t(out.size()) / width, width});
            },
            py::arg("pieces"), py::arg("units"),
            "float32 [units * Q, E]: MiniCPM-V 4.5's packed units, each (piece indices, temporal ids) attended as "
            "one key sequence (a file with hparams['temporal'])")
        .def(
            "tokens",
            [](const mcv::VisionEncoder & enc, int h_patches, int w_patches, int downsample) {
                return enc.tokens(h_patches, w_patches, downsample);
            },
            py::arg("h_patches"), py::arg("w_patches"), py::arg("downsample") = 0,
            "rows a piece of h x w patches gives (ValueError for a mode the file cannot run or a grid it cannot "
            "divide)")
        .def_property_readonly("hparams",
                               [](const mcv::VisionEncoder & enc) {
                                   const auto & h = enc.hparams();
                                   py::dict d;
                                   d["image_size"] = h.image_size;
                                   d["patch_size"] = h.patch_size;
                                   d["n_embd"] = h.n_embd;
                                   d["n_ff"] = h.n_ff;
                                   d["n_head"] = h.n_head;
                                   d["n_layer"] = h.n_layer;
                                   d["eps"] = h.eps;
                                   d["pos_side"] = h.pos_side;
                                   d["n_query"] = h.n_query;
                                   d["n_out"] = h.n_out;
                                   d["mean"] = h.mean;
                                   d["std"] = h.std;
                                   d["minicpmv_version"] = h.minicpmv_version;
                                   d["position_ids"] = h.pos_rule == mcv::PosRule::navit_2d ? "navit_2d"
                                       : h.pos_rule == mcv::PosRule::flat_1d                ? "flat_1d"
                                       : h.pos_rule == mcv::PosRule::nearest_2d             ? "nearest_2d"
                                                                                            : "floor_2d";
                                   const bool v46 = h.merger == mcv::Merger::minicpmv4_6;
                                   d["merger"] = v46 ? "minicpmv4_6" : "resampler";
                                   d["position_grid"] = h.pos_side;
                                   d["insert_layer"] = h.insert_layer;
                                   py::list modes;  // MiniCPM-V 4.6's modes this file runs (none: resampler)
                                   if (v46 && h.has_insert_merger) modes.append("16x");
                                   if (v46) modes.append("4x");
                                   d["downsample_modes"] = modes;
                                   py::object mode = py::none();
                                   if (v46) mode = py::str(h.default_downsample == mcv::kDownsample16x ? "16x" : "4x");
                                   d["default_downsample"] = mode;
                                   d["padded_batch"] = h.padded_batch;
                                   d["square"] = h.square;
                                   d["temporal"] = h.temporal;
                                   d["stored_key_positions"] = h.key_positions == mcv::KeyPositions::stored;
                                   d["resampler_heads"] = h.resampler_heads();
                                   return d;
                               })
        .def_property_readonly("device", &mcv::VisionEncoder::device_name)
        .def_property_readonly("weights_bytes", &mcv::VisionEncoder::weights_bytes)
        .def_property_readonly("compute_bytes", &mcv::VisionEncoder::compute_bytes)
        .def_property_readonly("graph_evaluations", &mcv::VisionEncoder::graph_evaluations)
        .def_property_readonly("legacy_ffn_names", &mcv::VisionEncoder::legacy_ffn_names)
        .def_property_readonly("uses_blas", &mcv::VisionEncoder::uses_blas)
        .def_property_readonly("weights_mapped", &mcv::VisionEncoder::weights_mapped)
        .def_property_readonly("uses_int8", &mcv::VisionEncoder::uses_int8)
        .def_property_readonly("int8_kernel", &mcv::VisionEncoder::int8_kernel)
        .def_property_readonly("attention_kernel", &mcv::VisionEncoder::attention_kernel)
        .def_property_readonly("packed_bytes", &mcv::VisionEncoder::packed_bytes)
        .def_property_readonly("matmul_summary", &mcv::VisionEncoder::matmul_summary)
        .def_property(
            "max_patches", &mcv::VisionEncoder::max_patches,
            [](mcv::VisionEncoder & enc, int64_t n) {
                py::gil_scoped_release nogil;
                enc.set_max_patches(n);
            },
            "largest piece accepted, in patches (0: no limit)")
        .def_property_readonly("scratch_bytes", &mcv::VisionEncoder::scratch_bytes,
                               "per-thread BLAS scratch memory held now")
        .def_property_readonly(
            "profile",
            [](const mcv::VisionEncoder & enc) {
                std::map<std::string, double> out;
                {
                    py::gil_scoped_release nogil;  // the lock may be held by an encode whose log lines need the GIL
                    out = enc.profile();
                }
                return out;
            },
            "ms per op:node when profiling");

    py::class_<mcv::CpuThreadPool>(m, "CpuThreadPool", "ggml CPU worker threads started once, for a llama.cpp context")
        .def(py::init<int>(), py::arg("n_threads"), py::call_guard<py::gil_scoped_release>())
        .def_property_readonly("n_threads", &mcv::CpuThreadPool::n_threads)
        .def_property_readonly(
            "address", [](const mcv::CpuThreadPool & p) { return reinterpret_cast<uintptr_t>(p.get()); },
            "the ggml_threadpool_t pointer (0 when the CPU backend has no threadpools)");

    m.def("list_devices", &mcv::list_devices, "ggml backend devices in this process");
    m.def("list_backends", &mcv::list_backends, "the backends in ggml's registry by name, e.g. ['CUDA', 'CPU']");
    m.def("cpu_features", &mcv::cpu_features, "the ggml CPU backend's features (name, value)");
    m.def(
        "ggml_matmul_gops",
        [](const std::string & type, int n_threads) {
            py::gil_scoped_release nogil;
            return mcv::ggml_matmul_gops(type, n_threads);
        },
        py::arg("type"), py::arg("n_threads"), "ggml's CPU matmul throughput for a weight type, GOP/s");
    m.def(
        "int8_dot_peak_gops",
        [](int n_threads, const std::string & kernel) {
            const mcv::Int8Isa isa = mcv::int8_isa_named(kernel);
            if (isa == mcv::Int8Isa::none) {
                throw std::invalid_argument("kernel must be 'vnni', 'avxvnni', 'avx2', 'i8mm' or 'neon', not '" +
                                            kernel + "'");
            }
            py::gil_scoped_release nogil;
            return mcv::int8_dot_peak_gops(n_threads, isa);
        },
        py::arg("n_threads"), py::arg("kernel") = "vnni",
        "peak of the int8 unit through a kernel's own instructions (vnni: VPDPBUSD, 512-bit; avxvnni: VPDPBUSD, "
        "256-bit; avx2: VPMADDUBSW + VPMADDWD; i8mm: SMMLA; neon: SDOT), GOP/s; 0 where this CPU cannot run that "
        "kernel");
    m.def(
        "attention",
        [](const F32Array & q, const F32Array & k, const F32Array & v, const std::string & kind, int n_threads,
           int repeat) {
            if (q.ndim() != 4 || k.ndim() != 4 || v.ndim() != 4) {
                throw std::invalid_argument("attention: q, k and v must be 4-D [batch, tokens, heads, head width]");
            }
            for (int d : {0, 2, 3}) {
                if (k.shape(d) != v.shape(d) || (d > 1 && q.shape(d) != k.shape(d))) {
                    throw std::invalid_argument("attention: q, k and v shapes do not match");
                }
            }
            if (k.shape(1) != v.shape(1) || (q.shape(0) != 1 && q.shape(0) != k.shape(0))) {
                throw std::invalid_argument("attention: k and v need the same tokens; q a batch of 1 or k's");
            }
            std::vector<float> qv(q.data(), q.data() + q.size()), kv(k.data(), k.data() + k.size()),
                vv(v.data(), v.data() + v.size());
            mcv::AttentionRun run;
            {
                py::gil_scoped_release nogil;
                run = mcv::run_attention(qv, kv, vv, k.shape(0), q.shape(0), q.shape(1), k.shape(1), k.shape(2),
                                         k.shape(3), kind, n_threads, repeat);
            }
            py::array_t<float> out({k.shape(0), q.shape(1), k.shape(2) * k.shape(3)});
            std::copy(run.out.begin(), run.out.end(), out.mutable_data());
            return py::make_tuple(out, run.seconds);
        },
        py::arg("q"), py::arg("k"), py::arg("v"), py::arg("kind") = "f32", py::arg("n_threads") = 1,
        py::arg("repeat") = 1,
        "(out [B, n_q, heads * width], best seconds) of softmax(q k^T / sqrt(width)) v run alone as the encoder's "
        "op: kind 'f32' (its f32 path), 'vnni' or 'avx2' (our fused int8 attention); q [B or 1, n_q, heads, "
        "width], "
        "k and v [B, n_kv, heads, width]");
    m.def("int8_gemm_available", &mcv::int8_gemm_available, "whether this CPU runs one of our int8 kernels");
    m.def(
        "int8_kernels",
        []() {
            std::vector<std::string> out;
            for (mcv::Int8Isa isa : {mcv::Int8Isa::vnni, mcv::Int8Isa::avxvnni, mcv::Int8Isa::avx2, mcv::Int8Isa::i8mm,
                                     mcv::Int8Isa::neon}) {
                if (mcv::int8_isa_available(isa)) out.emplace_back(mcv::int8_isa_name(isa));
            }
            return out;
        },
        "our int8 kernels this CPU runs, fastest first ('vnni', 'avxvnni', 'avx2'; 'i8mm', 'neon' on aarch64); "
        "int8='auto' takes the first");
    m.def("read_gguf_info", &mcv::read_gguf_info, py::arg("path"), py::call_guard<py::gil_scoped_release>(),
          "header, key/values and tensor infos of a GGUF file (ValueError if it is not valid)");
    m.def("ggml_commit", []() { return std::string(ggml_commit()); }, "the ggml build this module runs on");
}
