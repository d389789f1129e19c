#include "runtime/attention_probe.h"

#include <algorithm>
#include <chrono>
#include <memory>
#include <stdexcept>

#include "ggml-alloc.h"
#include "ggml-backend.h"
#include "ggml-cpp.h"
#include "graphs/graph_common.h"
#include "kernels/int8_attention.h"
#include "runtime/backends.h"

namespace mcv {

AttentionRun run_attention(const std::vector<float> & q, const std::vector<float> & k, const std::vector<float> & v,
                           int64_t batch, int64_t q_batch, int64_t n_q, int64_t n_kv, int64_t n_head, int64_t d_head,
                           const std::string & kind, int n_threads, int repeat) {
    if (batch < 1 || (q_batch != 1 && q_batch != batch) || n_q < 1 || n_kv < 1 || n_head < 1 || d_head < 1 ||
        n_threads < 1) {
        throw std::invalid_argument("run_attention: positive sizes, q_batch 1 or batch, n_threads >= 1");
    }
    const size_t dim = size_t(n_head * d_head);
    if (q.size() != size_t(q_batch * n_q) * dim || k.size() != size_t(batch * n_kv) * dim || v.size() != k.size()) {
        throw std::invalid_argument("run_attention: array sizes do not match the shape");
    }
    MatmulHook mm;
    std::unique_ptr<BlasScratch> scratch;
    if (kind == "vnni" || kind == "avxvnni" || kind == "avx2") {
        mm.attention = int8_isa_named(kind);
        if (!int8_attention_supports(mm.attention, d_head, n_kv)) {
            throw std::invalid_argument("run_attention: the " + kind + " int8 attention cannot run here (CPU, " +
                                        std::to_string(d_head) + "-wide heads over " + std::to_string(n_kv) + " keys)");
        }
    } else if (kind == "f32") {
        if (blas_available()) {
            scratch = std::make_unique<BlasScratch>(n_threads);
            mm.blas = scratch.get();
        }
    } else {
        throw std::invalid_argument("run_attention: kind must be 'f32', 'vnni', 'avxvnni' or 'avx2', not '" + kind +
                                    "'");
    }

    ggml_backend_ptr cpu = cpu_backend(n_threads);
    ggml_init_params ip{ggml_tensor_overhead() * 32 + ggml_graph_overhead(), nullptr, /*no_alloc =*/true};
    ggml_context_ptr ctx(ggml_init(ip));
    ggml_tensor * tq = ggml_new_tensor_4d(ctx.get(), GGML_TYPE_F32, d_head, n_head, n_q, q_batch);
    ggml_tensor * tk = ggml_new_tensor_4d(ctx.get(), GGML_TYPE_F32, d_head, n_head, n_kv, batch);
    ggml_tensor * tv = ggml_new_tensor_4d(ctx.get(), GGML_TYPE_F32, d_head, n_head, n_kv, batch);
    ggml_tensor * qq = tq;
    if (q_batch != batch && !mm.blas && mm.attention == Int8Isa::none) {  // ggml's flash attention: no broadcast
        qq = ggml_repeat_4d(ctx.get(), tq, d_head, n_head, n_q, batch);
    }
    ggml_tensor * out = attend(ctx.get(), qq, tk, tv, GGML_TYPE_F32, -1, mm);
    ggml_cgraph * g = ggml_new_graph(ctx.get());
    ggml_build_forward_expand(g, out);
    ggml_backend_buffer_ptr buf(ggml_backend_alloc_ctx_tensors(ctx.get(), cpu.get()));
    if (!buf) throw std::bad_alloc();
    if (scratch) scratch->prepare();
    ggml_backend_tensor_set(tq, q.data(), 0, ggml_nbytes(tq));
    ggml_backend_tensor_set(tk, k.data(), 0, ggml_nbytes(tk));
    ggml_backend_tensor_set(tv, v.data(), 0, ggml_nbytes(tv));
    AttentionRun run;
    run.seconds = 1e30;
    for (int r = 0; r < std::max(repeat, 1); ++r) {
        const auto t0 = std::chrono::steady_clock::now();
        if (ggml_backend_graph_compute(cpu.get(), g) != GGML_STATUS_SUCCESS) {
            throw std::runtime_error("run_attention: the compute failed");
        }
        if (scratch && scratch->take_failure()) throw std::bad_alloc();
        run.seconds =
            std::min(run.seconds, std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
    }
    run.out.resize(size_t(ggml_nelements(out)));
    ggml_backend_tensor_get(out, run.out.data(), 0, ggml_nbytes(out));
    return run;
}

}  // namespace mcv
